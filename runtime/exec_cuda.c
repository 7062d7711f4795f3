/*
 * runtime/exec_cuda.c - the CUDA target of the executor (kc_exec_cuda): the same plan, sizes
 * and arena layout as the CPU's, with the values on a CUDA device and every step launched there.
 * kc_compile's CUDA modules (kernels compiled by NVRTC in-process: runtime/target_cuda.c) and
 * the libraries of `kernc compile --target=cuda` (kernels from the embedded images:
 * runtime/aot_cuda_rt.c) both attach their device, module and kernels with kc_exec_cuda_attach.
 *
 * Memory follows the host plan rather than a second planner: the device arena has the host
 * arena's layout, so a value lives at the same offset on both sides; graph inputs and outputs get
 * device buffers of their own, weights are uploaded once (the whole weights blob at attach, or a
 * JIT plan's weights one by one at first use). The host arena is a mirror that only holds what
 * the host must read: the small inputs of a node whose sizes wait for computed data (fetch).
 *
 * Kernels that check indices (codegen/cuda/cuda.h) get two error words per step, zeroed when a
 * run begins and read after each wait for the device: the first step with one set fails the run
 * (runtime/index_error.c), before anything reads its results.
 *
 * Invariants: part of the runtime archive, so it needs only the driver (codegen/cuda/driver.c,
 * dlopen'd) and the launch helpers (codegen/cuda/launch.c): no NVRTC, no LLVM. Runs hold the
 * device from begin to end (one at a time; the device buffers are the instance's), so a
 * concurrent run waits. Device buffers only grow; a run returns after cuCtxSynchronize, so a
 * kernel's failure is that run's error and the outputs are host copies.
 */
#include "runtime/executor.h"

#include "codegen/cuda/cuda.h"
#include "ir/internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct cuda_x {
  kc_cuda_dev *dev;
  kc_cuda_mod *mod;
  kc_cuda_kernel_info *info; /* per step */
  void **fn;                 /* per step */
  pthread_mutex_t lock;      /* held by the run on the device */
  bool lock_made;
  kc_dptr blob, empty; /* the weights blob (a .so), an address for empty tensors */
  kc_dptr *weight;     /* per value: a JIT plan's uploaded weight, 0 until its first use */
  kc_dptr arena;
  size_t arena_cap;
  kc_dptr *in_buf, *out_buf; /* per input, per output */
  size_t *in_cap, *out_cap;
  kc_dptr *vbuf;   /* per value: its device address in this run */
  uint64_t *bufs;  /* one step's buffers */
  uint64_t *words; /* one step's packed arguments */
  bool uploaded;   /* this run's inputs are on the device */
  kc_dptr err;     /* per step: the two error words of a kernel that checks indices (0: none) */
  uint64_t *errh;  /* host copy of err */
} cuda_x;

static void close_dev(kc_exec *x) {
  cuda_x *c = x->dev;
  if (!c) return;
  const kc_plan *d = x->d;
  if (c->dev) {
    for (int64_t k = 0; c->in_buf && k < d->ninputs; k++)
      kc_cuda_free(c->dev, c->in_buf[k]);
    for (int64_t k = 0; c->out_buf && k < d->noutputs; k++)
      kc_cuda_free(c->dev, c->out_buf[k]);
    for (int64_t v = 0; c->weight && v < d->nvalues; v++)
      kc_cuda_free(c->dev, c->weight[v]);
    kc_cuda_free(c->dev, c->blob);
    kc_cuda_free(c->dev, c->arena);
    kc_cuda_free(c->dev, c->empty);
    kc_cuda_free(c->dev, c->err);
  }
  kc_cuda_mod_unload(c->mod);
  kc_cuda_dev_close(c->dev);
  if (c->lock_made) pthread_mutex_destroy(&c->lock);
  free(c->info);
  free(c->fn);
  free(c->weight);
  free(c->in_buf);
  free(c->out_buf);
  free(c->in_cap);
  free(c->out_cap);
  free(c->vbuf);
  free(c->bufs);
  free(c->words);
  free(c->errh);
  free(c);
  x->dev = NULL;
}

/* Bytes of the error words: two per step. */
static size_t err_bytes(const kc_plan *d) { return 2 * ((size_t)d->nsteps + 1) * sizeof(uint64_t); }

static kc_status begin(kc_exec *x, kc_exec_ws *w) {
  cuda_x *c = x->dev;
  pthread_mutex_lock(&c->lock);
  c->uploaded = false;
  if (!c->err) return KC_OK;
  memset(c->errh, 0, err_bytes(x->d));
  return kc_cuda_htod(c->dev, c->err, c->errh, err_bytes(x->d));
}

static void end(kc_exec *x, kc_exec_ws *w) {
  cuda_x *c = x->dev;
  pthread_mutex_unlock(&c->lock);
}

/* The device arena at total bytes, keeping the first keep (written by earlier stages). */
static kc_status grow_arena(kc_exec *x, cuda_x *c, size_t total, size_t keep) {
  if (c->arena && c->arena_cap >= total) return KC_OK;
  kc_dptr nb;
  kc_status s = kc_cuda_alloc(c->dev, total ? total : KC_RT_ALIGN, &nb);
  if (s == KC_OK && c->arena && keep) s = kc_cuda_dtod(c->dev, nb, c->arena, keep);
  if (s != KC_OK) return s;
  kc_cuda_free(c->dev, c->arena);
  c->arena = nb;
  c->arena_cap = total;
  return KC_OK;
}

/* A JIT plan's weight v on the device (uploaded at its first use). */
static kc_status weight_of(kc_exec *x, cuda_x *c, kc_exec_ws *w, int64_t v, kc_dptr *out) {
  if (!c->weight[v]) {
    kc_status s = kc_cuda_alloc(c->dev, w->nbytes[v], &c->weight[v]);
    if (s == KC_OK) s = kc_cuda_htod(c->dev, c->weight[v], x->d->value_data[v], w->nbytes[v]);
    if (s != KC_OK) return s;
  }
  *out = c->weight[v];
  return KC_OK;
}

static kc_status place(kc_exec *x, kc_exec_ws *w, size_t total, size_t keep, int64_t node_end) {
  const kc_plan *d = x->d;
  cuda_x *c = x->dev;
  kc_status s = kc_exec_host_place(x, w, total, keep, node_end); /* the mirror */
  if (s == KC_OK && total) s = grow_arena(x, c, total, keep);
  for (int64_t k = 0; k < d->ninputs && s == KC_OK && !c->uploaded; k++) {
    size_t n = w->nbytes[d->inputs[k].value];
    if (!n) continue;
    s = kc_cuda_reserve(c->dev, &c->in_buf[k], &c->in_cap[k], n);
    if (s == KC_OK) s = kc_cuda_htod(c->dev, c->in_buf[k], w->in[k]->data, n);
  }
  c->uploaded = s == KC_OK;
  /* an output's device buffer is its root's storage, reserved when the root is defined (see
   * executor.c's place) */
  for (int64_t v = 0; v < d->nvalues && s == KC_OK; v++) {
    const kc_plan_value *val = &d->values[v];
    if (val->storage == KC_PLAN_OUTPUT && val->first < node_end && w->nbytes[v])
      s = kc_cuda_reserve(c->dev, &c->out_buf[val->ref], &c->out_cap[val->ref], w->nbytes[v]);
  }
  for (int64_t v = 0; v < d->nvalues && s == KC_OK; v++) {
    const kc_plan_value *val = &d->values[v];
    if (val->first >= node_end) continue;
    kc_dptr p = 0;
    switch (val->storage) {
    case KC_PLAN_INPUT: p = c->in_buf[val->ref]; break;
    case KC_PLAN_WEIGHT:
      if (!w->nbytes[v]) break;
      if (d->value_data)
        s = weight_of(x, c, w, v, &p);
      else
        p = c->blob + (kc_dptr)val->ref;
      break;
    case KC_PLAN_ARENA: p = w->off[v] != SIZE_MAX ? c->arena + w->off[v] : 0; break;
    case KC_PLAN_OUTPUT: p = c->out_buf[val->ref]; break;
    default: continue; /* views after every root is set */
    }
    c->vbuf[v] = p && w->nbytes[v] ? p : c->empty;
  }
  for (int64_t v = 0; v < d->nvalues; v++)
    if (d->values[v].storage == KC_PLAN_VIEW && d->values[v].first < node_end)
      c->vbuf[v] = c->vbuf[d->values[v].ref];
  return s;
}

static kc_status launch(kc_exec *x, kc_exec_ws *w, int64_t i) {
  const kc_plan *d = x->d;
  cuda_x *c = x->dev;
  const kc_plan_step *st = &d->steps[i];
  for (int64_t j = 0; j < st->nbufs; j++) {
    int64_t v = d->buf_values[st->bufs + j];
    c->bufs[j] = v >= 0 ? c->vbuf[v] : 0;
  }
  if (c->info[i].check_in >= 0) c->bufs[st->nbufs] = c->err + 2 * (kc_dptr)i * sizeof *c->errh;
  kc_status s =
      kc_cuda_run_kernel(c->dev, c->fn[i], &c->info[i], c->bufs, w->step_dims + st->dims, c->words);
  if (s != KC_OK) kc_error_append(x->ctx, "launching %s of model %s", st->name, d->name);
  return s;
}

/* Wait for the device; then the first step whose kernel met an index out of range fails the
 * run (its error words hold the position and the index itself, codegen/cuda/cuda.h: by now the
 * indices' memory may have been reused). */
static kc_status sync_dev(kc_exec *x, kc_exec_ws *w) {
  cuda_x *c = x->dev;
  kc_status s = kc_cuda_sync(c->dev);
  if (s != KC_OK || !c->err) return s;
  if ((s = kc_cuda_dtoh(c->dev, c->errh, c->err, err_bytes(x->d))) != KC_OK) return s;
  for (int64_t i = 0; i < x->d->nsteps; i++) {
    if (c->info[i].check_in < 0 || !c->errh[2 * i]) continue;
    int64_t index;
    memcpy(&index, &c->errh[2 * i + 1], sizeof index);
    return kc_exec_index_error(x, w, i, (int64_t)c->errh[2 * i] - 1, KC_I64, &index);
  }
  return KC_OK;
}

/* The host mirror of value v: a copy of its device bytes (the caller synced). */
static kc_status fetch(kc_exec *x, kc_exec_ws *w, int64_t v, const void **data) {
  cuda_x *c = x->dev;
  int64_t st = x->d->values[v].storage, r = st == KC_PLAN_VIEW ? x->d->values[v].ref : v;
  int64_t rst = x->d->values[r].storage;
  *data = w->vbuf[v];
  if ((rst != KC_PLAN_ARENA && rst != KC_PLAN_OUTPUT) || !w->nbytes[v]) return KC_OK;
  return kc_cuda_dtoh(c->dev, w->vbuf[v], c->vbuf[v], w->nbytes[v]);
}

static kc_status finish(kc_exec *x, kc_exec_ws *w) {
  const kc_plan *d = x->d;
  cuda_x *c = x->dev;
  kc_status s = sync_dev(x, w);
  for (int64_t k = 0; k < d->noutputs && s == KC_OK; k++) {
    int64_t v = d->outputs[k].value;
    if (w->nbytes[v]) s = kc_cuda_dtoh(c->dev, w->out_buf[k], c->vbuf[v], w->nbytes[v]);
  }
  return s;
}

const kc_exec_device kc_exec_cuda = {
    .name = "cuda",
    .close = close_dev,
    .begin = begin,
    .end = end,
    .place = place,
    .launch = launch,
    .sync = sync_dev,
    .fetch = fetch,
    .finish = finish,
};

kc_status kc_exec_cuda_attach(kc_exec *x, kc_cuda_dev *dev, kc_cuda_mod *mod,
                              const kc_cuda_kernel_info *info, void *const *fn) {
  const kc_plan *d = x->d;
  cuda_x *c = calloc(1, sizeof *c);
  if (!c) {
    kc_cuda_mod_unload(mod);
    kc_cuda_dev_close(dev);
    return kc_errorf(x->ctx, KC_ERR_NOMEM, "out of memory creating model %s", d->name);
  }
  x->dev = c;
  c->dev = dev;
  c->mod = mod;
  c->lock_made = pthread_mutex_init(&c->lock, NULL) == 0;
  size_t most = 1;
  for (int64_t i = 0; i < d->nsteps; i++) {
    size_t words = kc_cuda_arg_words(&info[i]);
    if (words > most) most = words;
  }
  size_t ns = (size_t)d->nsteps + 1, nv = (size_t)d->nvalues + 1;
  c->info = calloc(ns, sizeof *c->info);
  c->fn = calloc(ns, sizeof *c->fn);
  c->weight = calloc(nv, sizeof *c->weight);
  c->in_buf = calloc((size_t)d->ninputs + 1, sizeof *c->in_buf);
  c->in_cap = calloc((size_t)d->ninputs + 1, sizeof *c->in_cap);
  c->out_buf = calloc((size_t)d->noutputs + 1, sizeof *c->out_buf);
  c->out_cap = calloc((size_t)d->noutputs + 1, sizeof *c->out_cap);
  c->vbuf = calloc(nv, sizeof *c->vbuf);
  c->bufs = calloc(most, sizeof *c->bufs);
  c->words = calloc(most, sizeof *c->words);
  if (!c->lock_made || !c->info || !c->fn || !c->weight || !c->in_buf || !c->in_cap ||
      !c->out_buf || !c->out_cap || !c->vbuf || !c->bufs || !c->words)
    return kc_errorf(x->ctx, KC_ERR_NOMEM, "out of memory creating model %s", d->name);
  if (d->nsteps) {
    memcpy(c->info, info, (size_t)d->nsteps * sizeof *c->info);
    memcpy(c->fn, fn, (size_t)d->nsteps * sizeof *c->fn);
  }
  kc_status s = kc_cuda_alloc(c->dev, KC_RT_ALIGN, &c->empty);
  bool checks = false;
  for (int64_t i = 0; i < d->nsteps; i++)
    checks = checks || c->info[i].check_in >= 0;
  if (s == KC_OK && checks) {
    if (!(c->errh = calloc(1, err_bytes(d))))
      return kc_errorf(x->ctx, KC_ERR_NOMEM, "out of memory creating model %s", d->name);
    s = kc_cuda_alloc(c->dev, err_bytes(d), &c->err);
  }
  if (s == KC_OK && !d->value_data && d->weights_bytes > 0) { /* once: runs read them in place */
    s = kc_cuda_alloc(c->dev, (size_t)d->weights_bytes, &c->blob);
    if (s == KC_OK) s = kc_cuda_htod(c->dev, c->blob, d->weights, (size_t)d->weights_bytes);
  }
  return s;
}
