/*
 * runtime/export_cuda.c - the CUDA side of kc_export (target "cuda"): the program the CUDA JIT
 * would build (runtime/target_cuda.c's kc_rt_cuda_emit: one CUDA C program with every kernel),
 * compiled by NVRTC now for a list of archs, and the device blob (codegen/aot_cuda.h) that the
 * object embeds: the images and, per step of the plan, its kernel's name and launch description.
 *
 * Archs: "80,90" means cubins for sm_80 and sm_90; "compute_80" asks for PTX, which the driver
 * compiles for GPUs no cubin matches. Without a compute_ entry, PTX for the lowest arch is added,
 * so newer GPUs still run the library. The default is "80,90" (+ compute_80).
 *
 * Invariants: images are owned by the kc_nvrtc until kc_export_cuda_free; a blob step is written
 * only for a plan step whose node has a kernel with the same buffer and dims counts (the kernel
 * ABI of codegen/cuda/cuda.h), anything else is an internal error, never a wrong launch.
 */
#include "runtime/export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KERNC_HAVE_CUDA

#include "codegen/aot_cuda.h"

#define MAX_IMAGES 32
#define DEFAULT_ARCHS "80,90"

struct kc_export_cuda {
  kc_context *ctx;
  const kc_graph *g;
  kc_nvrtc *nv;
  kc_cuda_kernel_info *info; /* per node */
  kc_cuda_image img[MAX_IMAGES];
  int nimg;
};

void kc_export_cuda_free(kc_export_cuda *c) {
  if (!c) return;
  kc_nvrtc_free(c->nv);
  free(c->info);
  free(c);
}

/* Is (arch, ptx) in the list already? */
static bool listed(const kc_cuda_image *img, int n, int arch, bool ptx) {
  for (int i = 0; i < n; i++)
    if (img[i].arch == arch && img[i].ptx == ptx) return true;
  return false;
}

/* The images archs asks for into c->img (arch and kind only), ascending, cubins first. */
static kc_status parse_archs(kc_export_cuda *c, const char *archs) {
  bool any_ptx = false;
  int lowest = 0;
  for (const char *p = archs; *p;) {
    size_t len = strcspn(p, ",");
    char item[32];
    if (len == 0 || len >= sizeof item) goto bad;
    memcpy(item, p, len);
    item[len] = 0;
    bool ptx = strncmp(item, "compute_", 8) == 0;
    const char *num = ptx ? item + 8 : strncmp(item, "sm_", 3) == 0 ? item + 3 : item;
    char *end;
    long arch = strtol(num, &end, 10);
    if (*end || end == num || arch < 10 || arch > 1000) goto bad;
    bool exact;
    if (kc_nvrtc_arch_for(c->nv, (int)arch, &exact) == 0 || !exact)
      return kc_errorf(c->ctx, KC_ERR_UNSUPPORTED, "--cuda-arch: NVRTC cannot build for %s_%ld",
                       ptx ? "compute" : "sm", arch);
    if (!listed(c->img, c->nimg, (int)arch, ptx)) {
      if (c->nimg == MAX_IMAGES)
        return kc_errorf(c->ctx, KC_ERR_INVALID_ARG, "--cuda-arch: more than %d images",
                         MAX_IMAGES);
      c->img[c->nimg++] = (kc_cuda_image){.arch = (int)arch, .ptx = ptx};
    }
    any_ptx |= ptx;
    if (!lowest || arch < lowest) lowest = (int)arch;
    p += len + (p[len] == ',');
    continue;
  bad:
    return kc_errorf(c->ctx, KC_ERR_INVALID_ARG,
                     "--cuda-arch: '%s' is not a list like 80,86,90 (sm_NN: a cubin, "
                     "compute_NN: PTX)",
                     archs);
  }
  if (!c->nimg) return kc_errorf(c->ctx, KC_ERR_INVALID_ARG, "--cuda-arch: no arch given");
  if (!any_ptx) c->img[c->nimg++] = (kc_cuda_image){.arch = lowest, .ptx = true};
  for (int i = 1; i < c->nimg; i++) /* insertion sort: (arch, cubin before PTX) */
    for (int j = i; j > 0; j--) {
      kc_cuda_image *a = &c->img[j - 1], *b = &c->img[j];
      if (a->arch < b->arch || (a->arch == b->arch && !a->ptx)) break;
      kc_cuda_image t = *a;
      *a = *b;
      *b = t;
    }
  return KC_OK;
}

kc_status kc_export_cuda_lower(kc_module *m, const char *archs, kc_export_cuda **out) {
  *out = NULL;
  kc_export_cuda *c = calloc(1, sizeof *c);
  if (!c) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory compiling @%s", m->g->name);
  c->ctx = m->ctx;
  c->g = m->g;
  c->info = calloc(m->g->nnodes + 1, sizeof *c->info);
  kc_cuda_prog *prog = NULL;
  const char *src = NULL;
  kc_status s = c->info
                    ? kc_nvrtc_new(m->ctx, &c->nv)
                    : kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory compiling @%s", m->g->name);
  if (s == KC_OK) s = parse_archs(c, archs && *archs ? archs : DEFAULT_ARCHS);
  if (s == KC_OK) s = kc_cuda_prog_new(m->ctx, &prog);
  if (s == KC_OK) s = kc_rt_cuda_emit(m, prog, c->info, &src);
  const char *dir = m->ctx->opts.cuda_cache_dir; /* as the JIT: a second export skips NVRTC */
  if (s == KC_OK && dir && *dir) s = kc_nvrtc_set_cache_dir(c->nv, dir);
  for (int i = 0; i < c->nimg && s == KC_OK; i++)
    s = kc_nvrtc_compile(c->nv, src, m->g->name ? m->g->name : "model", c->img[i].arch,
                         c->img[i].ptx, &c->img[i]);
  kc_cuda_prog_free(prog);
  if (s != KC_OK) {
    kc_export_cuda_free(c);
    return s;
  }
  *out = c;
  return KC_OK;
}

void kc_export_cuda_describe(const kc_export_cuda *c, char *buf, size_t size) {
  size_t l = 0;
  buf[0] = 0;
  for (int i = 0; i < c->nimg && l < size; i++)
    l += (size_t)snprintf(buf + l, size - l, "%s%s_%d", i ? ", " : "",
                          c->img[i].ptx ? "compute" : "sm", c->img[i].arch);
}

#define ALIGN_UP(x) (((x) + KC_RT_ALIGN - 1) / KC_RT_ALIGN * KC_RT_ALIGN)

/* Step i's kernel must take exactly the plan's buffers and dims (cuda.h's NB and ND; NB counts
 * the error word's pointer of a kernel that checks indices). */
static kc_status check_step(const kc_export_cuda *c, const kc_plan_step *st, const char *name) {
  const kc_cuda_kernel_info *k = &c->info[st->node];
  int64_t nb = (st->nbufs ? st->nbufs : 1) + (k->check_in >= 0), nd = st->ndims ? st->ndims : 1;
  if (!k->no_kernel && k->nbufs == nb && k->ndims == nd) return KC_OK;
  return kc_node_errorf((kc_graph *)c->g, &c->g->nodes[st->node], KC_ERR_INTERNAL,
                        "AOT CUDA: the kernel of step %s takes %u buffers and %u dims, the plan "
                        "gives %lld and %lld",
                        name, k->nbufs, k->ndims, (long long)nb, (long long)nd);
}

kc_status kc_export_cuda_write(kc_export_cuda *c, const kc_rt_plan *p, const char *path) {
  const kc_plan *d = &p->model;
  kc_aot_cuda_head h = {.magic = KC_AOT_CUDA_MAGIC,
                        .head_bytes = sizeof h,
                        .image_bytes = sizeof(kc_aot_cuda_image),
                        .step_bytes = sizeof(kc_aot_cuda_step),
                        .nimages = c->nimg,
                        .nsteps = d->nsteps};
  kc_aot_cuda_image im[MAX_IMAGES];
  kc_aot_cuda_step *st = calloc((size_t)d->nsteps + 1, sizeof *st);
  char(*names)[96] = calloc((size_t)d->nsteps + 1, sizeof *names);
  if (!st || !names) {
    free(st);
    free(names);
    return kc_errorf(c->ctx, KC_ERR_NOMEM, "out of memory writing %s", path);
  }
  size_t at = sizeof h + (size_t)c->nimg * sizeof *im + (size_t)d->nsteps * sizeof *st;
  kc_status s = KC_OK;
  for (int64_t i = 0; i < d->nsteps && s == KC_OK; i++) {
    const kc_graph *g = c->g;
    uint32_t ni = (uint32_t)d->steps[i].node;
    kc_cuda_kernel_name(names[i], sizeof names[i], ni, kc_ops[g->nodes[ni].op].name);
    s = check_step(c, &d->steps[i], names[i]);
    st[i].name = (int64_t)at;
    st[i].info = c->info[ni];
    at += strlen(names[i]) + 1;
  }
  for (int i = 0; i < c->nimg; i++) {
    at = ALIGN_UP(at);
    im[i] =
        (kc_aot_cuda_image){c->img[i].arch, c->img[i].ptx, (int64_t)at, (int64_t)c->img[i].size};
    at += c->img[i].size + 1; /* + NUL: the driver reads PTX as a C string */
  }
  h.size = (int64_t)at;
  FILE *f = s == KC_OK ? fopen(path, "wb") : NULL;
  if (s == KC_OK && !f) s = kc_errorf(c->ctx, KC_ERR_IO, "cannot write %s", path);
  if (f) {
    static const unsigned char zeros[KC_RT_ALIGN];
    bool ok = fwrite(&h, sizeof h, 1, f) == 1 &&
              fwrite(im, sizeof *im, (size_t)c->nimg, f) == (size_t)c->nimg &&
              fwrite(st, sizeof *st, (size_t)d->nsteps, f) == (size_t)d->nsteps;
    for (int64_t i = 0; i < d->nsteps && ok; i++)
      ok = fwrite(names[i], strlen(names[i]) + 1, 1, f) == 1;
    for (int i = 0; i < c->nimg && ok; i++) {
      long pos = ftell(f);
      ok = pos >= 0 &&
           fwrite(zeros, 1, (size_t)im[i].off - (size_t)pos, f) == (size_t)im[i].off - (size_t)pos;
      ok = ok && fwrite(c->img[i].data, 1, c->img[i].size, f) == c->img[i].size &&
           fwrite(zeros, 1, 1, f) == 1;
    }
    if (fclose(f) != 0 || !ok) s = kc_errorf(c->ctx, KC_ERR_IO, "cannot write %s", path);
  }
  free(st);
  free(names);
  return s;
}

#else /* !KERNC_HAVE_CUDA */

struct kc_export_cuda {
  int unused;
};

void kc_export_cuda_free(kc_export_cuda *c) { (void)c; }

kc_status kc_export_cuda_lower(kc_module *m, const char *archs, kc_export_cuda **out) {
  (void)archs;
  *out = NULL;
  return kc_errorf(m->ctx, KC_ERR_UNSUPPORTED,
                   "CUDA target unavailable: kernc was built without the CUDA toolkit (NVRTC)");
}

void kc_export_cuda_describe(const kc_export_cuda *c, char *buf, size_t size) {
  (void)c;
  snprintf(buf, size, "-");
}

kc_status kc_export_cuda_write(kc_export_cuda *c, const kc_rt_plan *p, const char *path) {
  (void)c, (void)p, (void)path;
  return KC_ERR_INTERNAL;
}

#endif
