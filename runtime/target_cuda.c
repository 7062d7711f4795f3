/*
 * runtime/target_cuda.c - the "cuda" row of the target table (runtime/target.c): open device 0
 * before any work (KC_ERR_UNSUPPORTED "CUDA target unavailable: ..." without a driver, a device
 * or the toolkit), compile every kernel of the graph in one NVRTC program for its SM (a cubin;
 * PTX for the driver to JIT when NVRTC does not know the SM), and hand device, module and
 * kernels to the executor's CUDA half (runtime/exec_cuda.c). kc_export's CUDA side is
 * runtime/export_cuda.c, which compiles the same program (kc_rt_cuda_emit).
 *
 * Invariants: m->tdata owns the device and the module until the executor takes them
 * (kc_exec_cuda_attach); without the toolkit (no KERNC_HAVE_CUDA) the row only reports itself
 * unavailable.
 */
#include "runtime/export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KERNC_HAVE_CUDA

#include "codegen/cuda/cuda.h"

typedef struct cuda_jit {
  kc_cuda_dev *dev;
  kc_cuda_mod *mod;
  kc_cuda_kernel_info *info; /* per node */
  void **fn;                 /* per node */
} cuda_jit;

static void close_cuda(kc_module *m) {
  cuda_jit *c = m->tdata;
  if (!c) return;
  kc_cuda_mod_unload(c->mod);
  kc_cuda_dev_close(c->dev);
  free(c->info);
  free(c->fn);
  free(c);
  m->tdata = NULL;
}

static kc_status probe(kc_module *m) {
  cuda_jit *c = calloc(1, sizeof *c);
  if (!c) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory");
  m->tdata = c;
  return kc_cuda_dev_open(m->ctx, 0, &c->dev);
}

/* Shared with kc_export (runtime/export_cuda.c), so the JIT and the AOT library run the same
 * program. */
kc_status kc_rt_cuda_emit(kc_module *m, kc_cuda_prog *prog, kc_cuda_kernel_info *info,
                          const char **src) {
  const kc_graph *g = m->g;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    char name[96];
    kc_cuda_kernel_name(name, sizeof name, i, kc_ops[g->nodes[i].op].name);
    kc_status s = kc_cuda_prog_add(prog, g, i, name, &info[i]);
    if (s != KC_OK) return s;
    m->kernels[i].no_kernel = info[i].no_kernel;
    m->kernels[i].check_in = info[i].check_in;
    m->kernels[i].check_dim = info[i].check_dim;
  }
  *src = kc_cuda_prog_source(prog);
  return *src ? KC_OK : kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory");
}

static kc_status load_all(kc_module *m, kc_nvrtc *nv, const char *src) {
  cuda_jit *c = m->tdata;
  bool exact;
  int cc = kc_cuda_dev_cc(c->dev), arch = kc_nvrtc_arch_for(nv, cc, &exact);
  if (!arch)
    return kc_errorf(m->ctx, KC_ERR_UNSUPPORTED,
                     "CUDA target unavailable: NVRTC cannot build for %s (sm_%d)",
                     kc_cuda_dev_name(c->dev), cc);
  kc_cuda_image img;
  kc_status s = kc_nvrtc_compile(nv, src, m->g->name ? m->g->name : "model", arch, !exact, &img);
  if (s == KC_OK) s = kc_cuda_mod_load(c->dev, &img, &c->mod);
  for (uint32_t i = 0; i < m->g->nnodes && s == KC_OK; i++) {
    if (c->info[i].no_kernel) continue;
    char name[96];
    kc_cuda_kernel_name(name, sizeof name, i, kc_ops[m->g->nodes[i].op].name);
    s = kc_cuda_mod_function(c->mod, name, &c->fn[i]);
  }
  return s;
}

static kc_status compile(kc_module *m) {
  cuda_jit *c = m->tdata;
  const kc_graph *g = m->g;
  c->info = calloc(g->nnodes + 1, sizeof *c->info);
  c->fn = calloc(g->nnodes + 1, sizeof *c->fn);
  if (!c->info || !c->fn)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory compiling @%s for CUDA", g->name);
  kc_cuda_prog *prog = NULL;
  kc_nvrtc *nv = NULL;
  const char *src = NULL;
  kc_status s = kc_cuda_prog_new(m->ctx, &prog);
  if (s == KC_OK) s = kc_rt_cuda_emit(m, prog, c->info, &src);
  if (s == KC_OK) s = kc_nvrtc_new(m->ctx, &nv);
  const char *dir = m->ctx->opts.cuda_cache_dir;
  if (s == KC_OK && dir && *dir) s = kc_nvrtc_set_cache_dir(nv, dir);
  if (s == KC_OK) s = load_all(m, nv, src);
  kc_cuda_prog_free(prog);
  kc_nvrtc_free(nv);
  return s;
}

static kc_status open_exec(kc_module *m, int threads) {
  cuda_jit *c = m->tdata;
  const kc_plan *d = &m->plan.model;
  (void)threads; /* the device runs the kernels; the host only checks, plans and copies */
  kc_status s = kc_exec_new(d, &kc_exec_cuda, m->ctx, 1, &m->x);
  if (s != KC_OK) return s;
  kc_cuda_kernel_info *info = calloc((size_t)d->nsteps + 1, sizeof *info);
  void **fn = calloc((size_t)d->nsteps + 1, sizeof *fn);
  if (!info || !fn) {
    free(info);
    free(fn);
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory compiling @%s for CUDA", m->g->name);
  }
  for (int64_t i = 0; i < d->nsteps; i++) {
    info[i] = c->info[d->steps[i].node];
    fn[i] = c->fn[d->steps[i].node];
  }
  s = kc_exec_cuda_attach(m->x, c->dev, c->mod, info, fn); /* owns them from here */
  c->dev = NULL;
  c->mod = NULL;
  free(info);
  free(fn);
  return s;
}

static kc_status export_lower(kc_module *m, const kc_export_options *opts, kc_cpu_obj **obj,
                              void **state) {
  kc_status s = kc_cpu_new(m->ctx, &m->cpu);
  if (s == KC_OK)
    s = kc_export_cuda_lower(m, opts ? opts->cuda_archs : NULL, (kc_export_cuda **)state);
  /* the object holds only the host side; the kernels are in the device blob */
  return s == KC_OK ? kc_cpu_obj_new(m->cpu, m->g, obj) : s;
}

static kc_status export_write(void *state, const kc_rt_plan *p, kc_cpu_obj *obj, const char *dir) {
  char blob[4200];
  snprintf(blob, sizeof blob, "%s/cuda.bin", dir);
  kc_status s = kc_export_cuda_write(state, p, blob);
  return s == KC_OK ? kc_cpu_obj_set_cuda(obj, blob) : s;
}

static void export_describe(const kc_module *m, void *state, char *buf, size_t size) {
  int l = snprintf(buf, size, "CUDA ");
  if (l > 0 && (size_t)l < size) kc_export_cuda_describe(state, buf + l, size - (size_t)l);
}

static void export_free(void *state) { kc_export_cuda_free(state); }

#else /* !KERNC_HAVE_CUDA */

static kc_status probe(kc_module *m) {
  return kc_errorf(m->ctx, KC_ERR_UNSUPPORTED,
                   "CUDA target unavailable: kernc was built without the CUDA toolkit (NVRTC)");
}

static void close_cuda(kc_module *m) { (void)m; }
static kc_status compile(kc_module *m) { return probe(m); }
static kc_status open_exec(kc_module *m, int threads) { return probe(m); }
static kc_status export_lower(kc_module *m, const kc_export_options *opts, kc_cpu_obj **obj,
                              void **state) {
  return probe(m);
}
static kc_status export_write(void *state, const kc_rt_plan *p, kc_cpu_obj *obj, const char *dir) {
  return KC_ERR_INTERNAL;
}
static void export_describe(const kc_module *m, void *state, char *buf, size_t size) {
  snprintf(buf, size, "-");
}
static void export_free(void *state) { (void)state; }

#endif

const kc_target kc_target_cuda = {
    .name = "cuda",
    .pipeline = "cuda",
    .takes_archs = true,
    .probe = probe,
    .compile = compile,
    .open = open_exec,
    .close = close_cuda,
    .export_lower = export_lower,
    .export_write = export_write,
    .export_describe = export_describe,
    .export_free = export_free,
};
