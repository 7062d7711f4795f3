/*
 * runtime/aot_cuda_rt.c - the runtime inside a model compiled ahead of time for CUDA (`kernc
 * compile --target=cuda`): the CPU AOT runtime's instance and plan (runtime/aot_internal.h),
 * with the steps launched on a CUDA device from the images the library embeds
 * (codegen/aot_cuda.h).
 *
 * Part of the runtime archive, so it needs only the driver, opened with dlopen at create
 * (codegen/cuda/driver.c) and the kernel ABI's host side (codegen/cuda/launch.c): no NVRTC, no
 * LLVM, and the library links no libcuda. Memory follows runtime/cuda_exec.c: one device arena
 * with the host plan's layout (a value lives at the same offset as in the CPU run), device
 * buffers of their own for inputs and outputs, the weights uploaded once at create.
 *
 * Invariants:
 *   - Nothing touches the device before kc_aot_prepare has checked every input and computed
 *     every size; a run returns after the device finished (cuCtxSynchronize), so a kernel's
 *     failure is that run's error, and the outputs are host copies, as the CPU target returns.
 *   - Device buffers only grow; repeated runs of the same shapes allocate nothing.
 *   - A failed create leaves nothing behind and says why in kc_aot_error(NULL).
 *   - Steps whose kernels check indices (codegen/cuda/cuda.h) get an error word each, zeroed
 *     before the launches and read after them: the first step with one set fails the run with
 *     runtime/index_error.c's message, as the CPU runtime does.
 */
#include "codegen/aot_cuda.h"
#include "ir/internal.h"
#include "runtime/aot_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dev {
  kc_cuda_dev *dev;
  kc_cuda_mod *mod;
  const kc_aot_cuda_step *steps;
  void **fn; /* per step */
  kc_dptr weights, arena, empty;
  size_t arena_cap;
  kc_dptr *in_buf, *out_buf; /* per input, per output */
  size_t *in_cap, *out_cap;
  kc_dptr *vbuf;   /* per value: its device address in this run */
  uint64_t *bufs;  /* one step's buffers */
  uint64_t *words; /* one step's packed arguments */
  kc_dptr err;     /* per step: the error words of a kernel that checks indices; 0: none does */
  uint64_t *errh;  /* host copy of err */
} dev;

/* The device part of m: memory first, then the module, then the context it all lives in. */
static void dev_free(kc_aot_inst *m) {
  dev *c = m->dev;
  if (!c) return;
  if (c->dev) {
    for (int64_t k = 0; c->in_buf && k < m->d->ninputs; k++)
      kc_cuda_free(c->dev, c->in_buf[k]);
    for (int64_t k = 0; c->out_buf && k < m->d->noutputs; k++)
      kc_cuda_free(c->dev, c->out_buf[k]);
    kc_cuda_free(c->dev, c->weights);
    kc_cuda_free(c->dev, c->arena);
    kc_cuda_free(c->dev, c->empty);
    kc_cuda_free(c->dev, c->err);
  }
  kc_cuda_mod_unload(c->mod);
  kc_cuda_dev_close(c->dev);
  free(c->fn);
  free(c->in_buf);
  free(c->out_buf);
  free(c->in_cap);
  free(c->out_cap);
  free(c->vbuf);
  free(c->bufs);
  free(c->words);
  free(c->errh);
  free(c);
  m->dev = NULL;
}

/* ---- create --------------------------------------------------------------------------------- */

static const char *image_kind(const kc_aot_cuda_image *im) { return im->ptx ? "compute" : "sm"; }

/* The image for compute capability cc: its exact cubin, else the newest PTX not above it. */
static const kc_aot_cuda_image *pick_image(const kc_aot_cuda_head *h, int cc) {
  const kc_aot_cuda_image *ims = (const void *)(h + 1), *best = NULL;
  for (int64_t i = 0; i < h->nimages; i++)
    if (!ims[i].ptx && ims[i].arch == cc) return &ims[i];
  for (int64_t i = 0; i < h->nimages; i++)
    if (ims[i].ptx && ims[i].arch <= cc && (!best || ims[i].arch > best->arch)) best = &ims[i];
  return best;
}

/* "sm_80, sm_90, compute_80" of the blob into buf. */
static void list_images(const kc_aot_cuda_head *h, char *buf, size_t size) {
  const kc_aot_cuda_image *ims = (const void *)(h + 1);
  size_t l = 0;
  buf[0] = 0;
  for (int64_t i = 0; i < h->nimages && l < size; i++)
    l += (size_t)snprintf(buf + l, size - l, "%s%s_%lld", i ? ", " : "", image_kind(&ims[i]),
                          (long long)ims[i].arch);
}

static kc_status check_blob(kc_aot_inst *m, const kc_aot_cuda_head *h) {
  if (!h || memcmp(h->magic, KC_AOT_CUDA_MAGIC, sizeof h->magic) != 0 ||
      h->head_bytes != (int64_t)sizeof *h || h->image_bytes != (int64_t)sizeof(kc_aot_cuda_image) ||
      h->step_bytes != (int64_t)sizeof(kc_aot_cuda_step) || h->nsteps != m->d->nsteps)
    return kc_errorf(m->ctx, KC_ERR_INTERNAL,
                     "model %s: its CUDA kernels are not in the layout of this runtime",
                     m->d->name);
  return KC_OK;
}

/* Driver, image, functions, weights and per-run scratch of m, whose device part c is. */
static kc_status open_device(kc_aot_inst *m, dev *c, const kc_aot_cuda_head *h) {
  const kc_aot_model *d = m->d;
  const unsigned char *base = (const unsigned char *)h;
  kc_status s = check_blob(m, h);
  if (s == KC_OK) s = kc_cuda_dev_open(m->ctx, 0, &c->dev);
  if (s != KC_OK) return s;
  int cc = kc_cuda_dev_cc(c->dev);
  const kc_aot_cuda_image *im = pick_image(h, cc);
  if (!im) {
    char have[512];
    list_images(h, have, sizeof have);
    return kc_errorf(m->ctx, KC_ERR_UNSUPPORTED,
                     "CUDA target unavailable: model %s has kernels for %s, none of which runs on "
                     "%s (sm_%d); compile it with --cuda-arch=%d",
                     d->name, have, kc_cuda_dev_name(c->dev), cc, cc);
  }
  kc_cuda_image img = {base + im->off, (size_t)im->size, im->ptx != 0, (int)im->arch};
  s = kc_cuda_mod_load(c->dev, &img, &c->mod);
  if (s != KC_OK) {
    kc_error_append(m->ctx, "loading the %s_%lld image of model %s", image_kind(im),
                    (long long)im->arch, d->name);
    return s;
  }
  int64_t most = 1;
  c->steps = (const kc_aot_cuda_step *)(base + sizeof *h + (size_t)h->nimages * sizeof *im);
  c->fn = calloc((size_t)d->nsteps + 1, sizeof *c->fn);
  for (int64_t i = 0; i < d->nsteps && c->fn && s == KC_OK; i++) {
    s = kc_cuda_mod_function(c->mod, (const char *)base + c->steps[i].name, &c->fn[i]);
    int64_t w = (int64_t)kc_cuda_arg_words(&c->steps[i].info);
    if (w > most) most = w;
  }
  if (s != KC_OK) return s;
  c->in_buf = calloc((size_t)d->ninputs + 1, sizeof *c->in_buf);
  c->in_cap = calloc((size_t)d->ninputs + 1, sizeof *c->in_cap);
  c->out_buf = calloc((size_t)d->noutputs + 1, sizeof *c->out_buf);
  c->out_cap = calloc((size_t)d->noutputs + 1, sizeof *c->out_cap);
  c->vbuf = calloc((size_t)d->nvalues + 1, sizeof *c->vbuf);
  c->bufs = calloc((size_t)most + 1, sizeof *c->bufs);
  c->words = calloc((size_t)most + 1, sizeof *c->words);
  if (!c->fn || !c->in_buf || !c->in_cap || !c->out_buf || !c->out_cap || !c->vbuf || !c->bufs ||
      !c->words)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory creating model %s", d->name);
  s = kc_cuda_alloc(c->dev, KC_RT_ALIGN, &c->empty);
  bool checks = false;
  for (int64_t i = 0; i < d->nsteps; i++)
    checks = checks || c->steps[i].info.check_in >= 0;
  if (s == KC_OK && checks) {
    c->errh = calloc(2 * ((size_t)d->nsteps + 1), sizeof *c->errh);
    if (!c->errh)
      return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory creating model %s", d->name);
    s = kc_cuda_alloc(c->dev, 2 * ((size_t)d->nsteps + 1) * sizeof *c->errh, &c->err);
  }
  if (s == KC_OK && d->weights_bytes > 0) { /* once: every run reads them in place */
    s = kc_cuda_alloc(c->dev, (size_t)d->weights_bytes, &c->weights);
    if (s == KC_OK) s = kc_cuda_htod(c->dev, c->weights, d->weights, (size_t)d->weights_bytes);
  }
  return s;
}

static int cuda_run(kc_aot_inst *m, const kc_tensor_desc *inputs, kc_tensor_desc *outputs);

kc_aot_inst *kc_aot_cuda_create(const kc_aot_model *d, const void *blob, int threads) {
  (void)threads; /* the device runs the kernels; the host only checks, plans and copies */
  kc_aot_create_failed(NULL);
  kc_aot_inst *m = kc_aot_create(d, 1);
  dev *c = m ? calloc(1, sizeof *c) : NULL;
  if (!c) {
    kc_aot_free(m);
    kc_aot_create_failed("out of memory creating the model");
    return NULL;
  }
  m->dev = c;
  m->dev_run = cuda_run;
  m->dev_free = dev_free;
  kc_status s = open_device(m, c, blob);
  if (s != KC_OK) {
    kc_aot_create_failed(kc_last_error(m->ctx));
    kc_aot_free(m);
    return NULL;
  }
  return m;
}

/* ---- run ------------------------------------------------------------------------------------ */

/* The device arena of total bytes, the inputs uploaded, the device address of every value. */
static kc_status place_on_device(kc_aot_inst *m, dev *c, const kc_tensor_desc *in, size_t total) {
  const kc_aot_model *d = m->d;
  kc_status s = total ? kc_cuda_reserve(c->dev, &c->arena, &c->arena_cap, total) : KC_OK;
  for (int64_t k = 0; k < d->ninputs && s == KC_OK; k++) {
    size_t n = m->nbytes[d->inputs[k].value];
    if (!n) continue;
    s = kc_cuda_reserve(c->dev, &c->in_buf[k], &c->in_cap[k], n);
    if (s == KC_OK) s = kc_cuda_htod(c->dev, c->in_buf[k], in[k].data, n);
  }
  for (int64_t k = 0; k < d->noutputs && s == KC_OK; k++) {
    int64_t v = d->outputs[k].value;
    if (!d->outputs[k].copy && m->nbytes[v])
      s = kc_cuda_reserve(c->dev, &c->out_buf[k], &c->out_cap[k], m->nbytes[v]);
  }
  if (s != KC_OK) return s;
  for (int64_t v = 0; v < d->nvalues; v++) {
    const kc_aot_value *val = &d->values[v];
    kc_dptr p = 0;
    switch (val->storage) {
    case KC_AOT_INPUT: p = c->in_buf[val->ref]; break;
    case KC_AOT_WEIGHT: p = c->weights + (kc_dptr)val->ref; break;
    case KC_AOT_ARENA: p = m->off[v] != SIZE_MAX ? c->arena + m->off[v] : 0; break;
    case KC_AOT_OUTPUT: p = c->out_buf[val->ref]; break;
    default: continue; /* views after every root is set */
    }
    c->vbuf[v] = p && m->nbytes[v] ? p : c->empty;
  }
  for (int64_t v = 0; v < d->nvalues; v++)
    if (d->values[v].storage == KC_AOT_VIEW) c->vbuf[v] = c->vbuf[d->values[v].ref];
  return KC_OK;
}

/* After the launches: the first step whose kernel met an index out of range fails the run. */
static kc_status check_indices(kc_aot_inst *m, dev *c) {
  const kc_aot_model *d = m->d;
  size_t words = 2 * ((size_t)d->nsteps + 1);
  kc_status s = kc_cuda_dtoh(c->dev, c->errh, c->err, words * sizeof *c->errh);
  for (int64_t i = 0; i < d->nsteps && s == KC_OK; i++) {
    if (c->steps[i].info.check_in < 0 || !c->errh[2 * i]) continue;
    int64_t index; /* the kernel kept it (codegen/cuda/cuda.h): its memory may be reused now */
    memcpy(&index, &c->errh[2 * i + 1], sizeof index);
    return kc_aot_index_error(m, &d->steps[i], (int64_t)c->errh[2 * i] - 1, KC_I64, &index);
  }
  return s;
}

static kc_status launch_all(kc_aot_inst *m, dev *c) {
  const kc_aot_model *d = m->d;
  kc_status s = KC_OK;
  if (c->err) {
    memset(c->errh, 0, 2 * ((size_t)d->nsteps + 1) * sizeof *c->errh);
    s = kc_cuda_htod(c->dev, c->err, c->errh, 2 * ((size_t)d->nsteps + 1) * sizeof *c->errh);
  }
  for (int64_t i = 0; i < d->nsteps && s == KC_OK; i++) {
    const kc_aot_step *st = &d->steps[i];
    for (int64_t j = 0; j < st->nbufs; j++) {
      int64_t v = d->buf_values[st->bufs + j];
      c->bufs[j] = v >= 0 ? c->vbuf[v] : 0;
    }
    if (c->steps[i].info.check_in >= 0)
      c->bufs[st->nbufs] = c->err + 2 * (kc_dptr)i * sizeof *c->errh;
    s = kc_cuda_run_kernel(c->dev, c->fn[i], &c->steps[i].info, c->bufs, m->step_dims + st->dims,
                           c->words);
    if (s != KC_OK) kc_error_append(m->ctx, "launching %s of model %s", st->name, d->name);
  }
  if (s == KC_OK) s = kc_cuda_sync(c->dev);
  return s == KC_OK && c->err ? check_indices(m, c) : s;
}

static int cuda_run(kc_aot_inst *m, const kc_tensor_desc *inputs, kc_tensor_desc *outputs) {
  dev *c = m->dev;
  size_t total;
  kc_status s = kc_aot_prepare(m, inputs, &total);
  if (s == KC_OK) s = place_on_device(m, c, inputs, total);
  if (s == KC_OK) s = launch_all(m, c);
  for (int64_t k = 0; k < m->d->noutputs && s == KC_OK; k++) {
    int64_t v = m->d->outputs[k].value;
    s = kc_cuda_dtoh(c->dev, m->out_buf[k], c->vbuf[v], m->nbytes[v]);
  }
  if (s != KC_OK) return s;
  kc_aot_describe(m, outputs);
  return KC_OK;
}
