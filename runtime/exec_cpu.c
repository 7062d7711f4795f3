/*
 * runtime/exec_cpu.c - the CPU target of the executor (kc_exec_cpu): values live in the host
 * arena, the caller's inputs, the weights and the workspace's output buffers; every step runs
 * its kernel on the instance's thread pool, or on the calling thread alone when it is small.
 * kc_compile's CPU modules (kernels JIT'd) and kc_export's CPU libraries (kernels in the object)
 * both run here.
 *
 * Invariants:
 *   - A kernel sees the ABI of codegen/cpu/emit.h: bufs = inputs then outputs (absent: NULL),
 *     dims = their concrete dims back to back, a private 64-byte aligned workspace per thread,
 *     and ranges of [0, units(dims)) split by the pool with the kernel's grain.
 *   - Steps run one after another; all parallelism is inside a step, so results do not depend on
 *     the thread count beyond what a kernel's own reduction order does.
 *   - A step with shared scratch (shared_bytes) gets the workspace's one shared buffer (sized for
 *     the largest step at ws_open) after its outputs, its first shared_zero bytes zeroed before
 *     the launch; steps run one at a time, so they never see each other's use of it.
 *   - The pool serves one run at a time: a run claims it at begin (try, never wait) and, when
 *     another run holds it, runs every kernel on its own thread. Kernel units are independent, so
 *     which thread runs which units never changes results.
 *   - Small kernels run on the calling thread alone: a spinning worker starts a range ~0.5 us
 *     after it is handed out (a sleeping one ~50 us), the caller then waits for it, and the
 *     worker's share of the results lands in another core's cache for the next kernel to fetch.
 *     The first SAMPLES launches of a step with given dims are timed (the whole kernel when
 *     serial, the caller's own ranges when split) and keep the fastest time per unit; a kernel
 *     then expected to take less than SERIAL_NS runs serially. New dims (a hash of the step's
 *     dims) start the samples over, as the cost per unit may differ. The samples live in the
 *     workspace (per calling thread), so concurrent runs never share them.
 */
#include "runtime/executor.h"

#include "ir/internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUND_UP(x) (((x) + KC_RT_ALIGN - 1) / KC_RT_ALIGN * KC_RT_ALIGN)

/* Below this many nanoseconds of work on one thread, a kernel is not split. */
#define SERIAL_NS 5000.0
/* Launches timed per step and dims before its decision is fixed. */
#define SAMPLES 4

/* Serial cost samples of one step (see the top). */
typedef struct cost {
  uint64_t key;
  float ns_per_unit;
  uint32_t samples;
} cost;

typedef struct cpu_ws {
  unsigned char *ws; /* kernel workspaces, stride bytes per thread */
  size_t stride;
  int threads; /* workspaces allocated */
  bool pool;   /* this run holds the pool */
  cost *cost;  /* per step */
  void **bufs; /* one step's buffers, then its shared scratch */
  /* the steps' shared scratch (see the top) */
  void *shared;
} cpu_ws;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static kc_status ws_open(kc_exec *x, kc_exec_ws *w) {
  const kc_plan *d = x->d;
  int64_t most = 1, shared = 0;
  for (int64_t i = 0; i < d->nsteps; i++) {
    if (d->steps[i].nbufs > most) most = d->steps[i].nbufs;
    if (d->steps[i].shared_bytes > shared) shared = d->steps[i].shared_bytes;
  }
  cpu_ws *c = calloc(1, sizeof *c);
  w->dev = c;
  if (!c) return KC_ERR_NOMEM;
  c->cost = calloc((size_t)d->nsteps + 1, sizeof *c->cost);
  c->bufs = calloc((size_t)most + 1, sizeof *c->bufs);
  if (shared > 0) c->shared = aligned_alloc(KC_RT_ALIGN, ROUND_UP((size_t)shared));
  if (!c->cost || !c->bufs || (shared > 0 && !c->shared))
    return KC_ERR_NOMEM; /* ws_close frees what was made */
  c->stride = ROUND_UP((size_t)d->max_ws);
  return KC_OK;
}

static void ws_close(kc_exec *x, kc_exec_ws *w) {
  cpu_ws *c = w->dev;
  if (!c) return;
  free(c->ws);
  free(c->cost);
  free(c->bufs);
  free(c->shared);
  free(c);
  w->dev = NULL;
}

/* Kernel workspaces for `threads` threads. */
static kc_status reserve_ws(kc_exec *x, cpu_ws *c, int threads) {
  if (!c->stride || threads <= c->threads) return KC_OK;
  unsigned char *p = aligned_alloc(KC_RT_ALIGN, c->stride * (size_t)threads);
  if (!p)
    return kc_errorf(x->ctx, KC_ERR_NOMEM, "out of memory for %d kernel workspaces of %zu bytes",
                     threads, c->stride);
  free(c->ws);
  c->ws = p;
  c->threads = threads;
  return KC_OK;
}

static kc_status begin(kc_exec *x, kc_exec_ws *w) {
  cpu_ws *c = w->dev;
  c->pool = kc_pool_try_claim(x->pool);
  kc_status s = reserve_ws(x, c, c->pool ? kc_pool_threads(x->pool) : 1);
  if (s != KC_OK && c->pool) {
    kc_pool_unclaim(x->pool);
    c->pool = false;
  }
  return s;
}

static void end(kc_exec *x, kc_exec_ws *w) {
  cpu_ws *c = w->dev;
  if (c->pool) kc_pool_unclaim(x->pool);
  c->pool = false;
}

typedef struct launch_arg {
  kc_plan_kernel_fn fn;
  void *const *bufs;
  const int64_t *dims;
  unsigned char *ws;
  size_t stride;
  _Atomic int64_t bad; /* the smallest nonzero result of a range, 0: none */
} launch_arg;

static void run_range(void *arg, int64_t begin, int64_t end, int thread) {
  launch_arg *l = arg;
  void *ws = l->ws ? l->ws + l->stride * (size_t)thread : NULL;
  int64_t r = l->fn(l->bufs, l->dims, ws, begin, end);
  if (!r) return;
  int64_t cur = atomic_load_explicit(&l->bad, memory_order_relaxed);
  while ((cur == 0 || r < cur) && !atomic_compare_exchange_weak_explicit(
                                      &l->bad, &cur, r, memory_order_relaxed, memory_order_relaxed))
    ;
}

static uint64_t dims_key(const int64_t *dims, int64_t nd) {
  uint64_t h = UINT64_C(0xcbf29ce484222325) ^ (uint64_t)nd; /* FNV-1a over the dims */
  for (int64_t i = 0; i < nd; i++)
    h = (h ^ (uint64_t)dims[i]) * UINT64_C(0x100000001b3);
  return h;
}

static void add_sample(cost *c, uint64_t ns, int64_t units) {
  float per = (float)ns / (float)units;
  if (!c->samples || per < c->ns_per_unit) c->ns_per_unit = per;
  c->samples++;
}

/* Step i's units on this thread alone or split by the pool (see the top). */
static void run_units(kc_exec *x, cpu_ws *c, int64_t i, launch_arg *l, int64_t units) {
  const kc_plan_step *st = &x->d->steps[i];
  const int64_t *dims = l->dims;
  if (units == 1 || !c->pool || kc_pool_threads(x->pool) <= 1) {
    run_range(l, 0, units, 0);
    return;
  }
  cost *k = &c->cost[i];
  uint64_t key = dims_key(dims, st->ndims);
  if (k->key != key) *k = (cost){.key = key};
  bool sample = k->samples < SAMPLES;
  if (k->samples && (double)units * k->ns_per_unit < SERIAL_NS) {
    uint64_t t0 = sample ? now_ns() : 0;
    run_range(l, 0, units, 0);
    if (sample) add_sample(k, now_ns() - t0, units);
  } else if (sample) {
    uint64_t ns;
    int64_t self = kc_pool_run_timed(x->pool, run_range, l, units, st->grain, &ns);
    if (self > 0) add_sample(k, ns, self);
  } else {
    kc_pool_run(x->pool, run_range, l, units, st->grain);
  }
}

/* Step i's kernel over [0, units), and the error of an index it found out of range: the
 * smallest code any range returned, so the report does not depend on how the work was split. */
static kc_status launch(kc_exec *x, kc_exec_ws *w, int64_t i) {
  const kc_plan *d = x->d;
  const kc_plan_step *st = &d->steps[i];
  cpu_ws *c = w->dev;
  void **bufs = c->bufs;
  for (int64_t j = 0; j < st->nbufs; j++) {
    int64_t v = d->buf_values[st->bufs + j];
    bufs[j] = v >= 0 ? w->vbuf[v] : NULL;
  }
  const int64_t *dims = w->step_dims + st->dims;
  launch_arg l = {st->fn, bufs, dims, c->ws, c->stride, 0};
  int64_t units = st->units(dims);
  if (units <= 0) return KC_OK;
  bufs[st->nbufs] = st->shared_bytes > 0 ? c->shared : NULL;
  if (st->shared_zero > 0) memset(c->shared, 0, (size_t)st->shared_zero);
  run_units(x, c, i, &l, units);
  int64_t bad = atomic_load_explicit(&l.bad, memory_order_relaxed);
  if (!bad) return KC_OK;
  kc_dtype it = (kc_dtype)d->values[d->buf_values[st->bufs + st->check_in]].dtype;
  const char *index = (const char *)bufs[st->check_in] + (bad - 1) * (int64_t)kc_dtype_size(it);
  return kc_exec_index_error(x, w, i, bad - 1, it, index);
}

static kc_status sync_none(kc_exec *x, kc_exec_ws *w) { return KC_OK; }

static kc_status fetch(kc_exec *x, kc_exec_ws *w, int64_t v, const void **data) {
  *data = w->vbuf[v];
  return KC_OK;
}

/* Outputs whose value lives elsewhere (an input, a weight, the arena) into their own buffer. */
static kc_status finish(kc_exec *x, kc_exec_ws *w) {
  const kc_plan *d = x->d;
  for (int64_t k = 0; k < d->noutputs; k++) {
    const kc_plan_io *io = &d->outputs[k];
    if (io->copy && w->nbytes[io->value])
      memcpy(w->out_buf[k], w->vbuf[io->value], w->nbytes[io->value]);
  }
  return KC_OK;
}

const kc_exec_device kc_exec_cpu = {
    .name = "cpu",
    .ws_open = ws_open,
    .ws_close = ws_close,
    .begin = begin,
    .end = end,
    .place = kc_exec_host_place,
    .launch = launch,
    .sync = sync_none,
    .fetch = fetch,
    .finish = finish,
};
