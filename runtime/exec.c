/*
 * runtime/exec.c - kc_run: bind the inputs (runtime/bind.c), plan memory (runtime/plan.c), run
 * every kernel in node order on the thread pool, copy the outputs that are views of inputs,
 * weights or another output, and describe the outputs. A graph whose sizes depend on computed
 * data runs in stages: the nodes before the first such node, then (its sizes settled from the
 * computed contents) on from it.
 *
 * Invariants:
 *   - A kernel sees the ABI of codegen/cpu/emit.h: bufs = inputs then outputs (absent: NULL),
 *     dims = their concrete dims back to back, a private 64-byte aligned workspace per thread,
 *     and ranges of [0, units(dims)) split by the pool with the kernel's grain.
 *   - Nodes run one after another; all parallelism is inside a node, so results do not depend
 *     on the thread count beyond what a kernel's own reduction order does.
 *   - Small kernels run on the calling thread alone: a spinning worker starts a range ~0.5 us
 *     after it is handed out (a sleeping one ~50 us), the caller then waits for it, and the
 *     worker's share of the results lands in another core's cache for the next kernel to fetch.
 *     The first SAMPLES launches of a node with given dims are timed (the whole kernel when
 *     serial, the caller's own ranges when split) and keep the fastest time per unit; a kernel
 *     then expected to take less than SERIAL_NS runs serially. New dims (a hash of the dims
 *     array) start the samples over, as the cost per unit may differ. Which thread runs which
 *     units never changes results (kernels' units are independent).
 *   - Profiling (runtime/profile.c) times each kernel's launch, workers joined, with the
 *     monotonic clock; when it is off a launch costs one extra branch and, once a node's cost
 *     samples are taken, no clock read.
 *   - A kernel that checks indices (kc_cpu_kernel.check_in) returns 1 + the position of a bad
 *     one; the smallest code any range returned is kept (so the report does not depend on the
 *     split), and the run stops after that node with runtime/index_error.c's message.
 */
#include "runtime/internal.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

/* Below this many nanoseconds of work on one thread, a kernel is not split. */
#define SERIAL_NS 5000.0
/* Launches timed per node and dims before its decision is fixed. */
#define SAMPLES 4

typedef struct launch {
  kc_kernel_fn fn;
  void *const *bufs;
  const int64_t *dims;
  unsigned char *ws;
  size_t ws_stride;
  _Atomic int64_t bad; /* the smallest nonzero result of a range, 0: none */
} launch;

static void run_range(void *arg, int64_t begin, int64_t end, int thread) {
  launch *l = arg;
  void *ws = l->ws ? l->ws + l->ws_stride * (size_t)thread : NULL;
  int64_t r = l->fn(l->bufs, l->dims, ws, begin, end);
  if (!r) return;
  int64_t cur = atomic_load_explicit(&l->bad, memory_order_relaxed);
  while ((cur == 0 || r < cur) &&
         !atomic_compare_exchange_weak_explicit(&l->bad, &cur, r, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
}

/* Node i's kernel met index `pos` of its input check_in out of range: the run's error. */
static kc_status index_error(kc_module *m, uint32_t i, int64_t pos) {
  const kc_node *n = &m->g->nodes[i];
  const kc_cpu_kernel *k = &m->kernels[i];
  int64_t off = 0, axis = 0;
  for (uint32_t j = 0; j < n->nin + n->nout; j++) { /* which operand's dims hold check_dim */
    kc_val v = j < n->nin ? n->in[j] : n->out[j - n->nin];
    int r = v.id ? kc_value_of(m->sg, v)->rank : 0;
    if (k->check_dim < off + r) {
      axis = k->check_dim - off;
      break;
    }
    off += r;
  }
  char what[512];
  kc_dtype it = kc_value_of(m->sg, n->in[k->check_in])->dtype;
  const char *index = (const char *)m->bufs[k->check_in] + pos * (int64_t)kc_dtype_size(it);
  return kc_rt_index_error(m->ctx, kc_node_what(n, what, sizeof what), it, index, pos, axis,
                           m->dims[k->check_dim]);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Append value v's concrete dims to m->dims at *nd. */
static void put_dims(kc_module *m, kc_val v, uint32_t *nd) {
  if (!v.id) return;
  const kc_value *val = kc_value_of(m->sg, v);
  for (int d = 0; d < val->rank; d++)
    m->dims[(*nd)++] = val->dims[d];
}

static uint64_t dims_key(const int64_t *dims, uint32_t nd) {
  uint64_t h = UINT64_C(0xcbf29ce484222325) ^ nd; /* FNV-1a over the dims */
  for (uint32_t d = 0; d < nd; d++)
    h = (h ^ (uint64_t)dims[d]) * UINT64_C(0x100000001b3);
  return h;
}

static void add_sample(kc_rt_cost *c, uint64_t ns, int64_t units) {
  float per = (float)ns / (float)units;
  if (!c->samples || per < c->ns_per_unit) c->ns_per_unit = per;
  c->samples++;
}

/* Run node i's kernel over [0, units): on this thread alone or split by the pool (see top). */
static void launch_node(kc_module *m, uint32_t i, launch *l, int64_t units, uint32_t nd) {
  int64_t grain = m->kernels[i].grain;
  if (units <= 0) return;
  if (units == 1 || kc_pool_threads(m->pool) <= 1) {
    run_range(l, 0, units, 0);
    return;
  }
  kc_rt_cost *c = &m->cost[i];
  uint64_t key = dims_key(m->dims, nd);
  if (c->key != key) *c = (kc_rt_cost){.key = key};
  bool sample = c->samples < SAMPLES;
  if (c->samples && (double)units * c->ns_per_unit < SERIAL_NS) {
    uint64_t t0 = sample ? now_ns() : 0;
    run_range(l, 0, units, 0);
    if (sample) add_sample(c, now_ns() - t0, units);
  } else if (sample) {
    uint64_t ns;
    int64_t self = kc_pool_run_timed(m->pool, run_range, l, units, grain, &ns);
    if (self > 0) add_sample(c, ns, self);
  } else {
    kc_pool_run(m->pool, run_range, l, units, grain);
  }
}

kc_status kc_rt_execute(kc_module *m, uint32_t from, uint32_t to) {
  const kc_graph *g = m->g;
  for (uint32_t i = from; i < to; i++) {
    const kc_cpu_kernel *k = &m->kernels[i];
    if (k->no_kernel || !k->fn) continue;
    const kc_node *n = &g->nodes[i];
    uint32_t nd = 0;
    for (uint32_t j = 0; j < n->nin; j++) {
      m->bufs[j] = n->in[j].id ? m->vbuf[n->in[j].id] : NULL;
      put_dims(m, n->in[j], &nd);
    }
    for (uint32_t j = 0; j < n->nout; j++) {
      m->bufs[n->nin + j] = n->out[j].id ? m->vbuf[n->out[j].id] : NULL;
      put_dims(m, n->out[j], &nd);
    }
    launch l = {k->fn, m->bufs, m->dims, m->ws, m->ws_stride, 0};
    int64_t units = k->units(m->dims);
    uint64_t t0 = m->profile ? now_ns() : 0;
    launch_node(m, i, &l, units, nd);
    if (m->profile) {
      uint64_t dt = now_ns() - t0;
      kc_rt_prof *p = &m->prof[i];
      if (!p->calls || dt < p->min_ns) p->min_ns = dt;
      p->ns += dt;
      p->calls++;
    }
    int64_t bad = atomic_load_explicit(&l.bad, memory_order_relaxed);
    if (bad) return index_error(m, i, bad - 1);
  }
  return KC_OK;
}

/* Outputs that do not own their root's storage get a copy in their own buffer. */
static void copy_outputs(kc_module *m) {
  const kc_graph *g = m->g;
  for (uint32_t k = 0; k < g->noutputs; k++) {
    uint32_t v = g->outputs[k].v.id;
    if (m->out_copy[k] && m->nbytes[v]) memcpy(m->out_buf[k], m->vbuf[v], m->nbytes[v]);
  }
}

static void describe_outputs(kc_module *m, kc_tensor_desc *out, uint32_t nout) {
  const kc_graph *g = m->g;
  for (uint32_t k = 0; k < nout; k++) {
    const kc_value *v = kc_value_of(m->sg, g->outputs[k].v);
    const char *name = kc_graph_output_name(g, k);
    memset(&out[k], 0, sizeof out[k]);
    out[k].name = *name ? name : NULL;
    out[k].dtype = v->dtype;
    out[k].rank = v->rank;
    for (int d = 0; d < v->rank; d++)
      out[k].dims[d] = v->dims[d];
    out[k].data = m->out_buf[k];
  }
}

kc_status kc_run(kc_module *m, const kc_tensor_desc *inputs, uint32_t nin, kc_tensor_desc *outputs,
                 uint32_t nout) {
  if (!m) return KC_ERR_INVALID_ARG;
  if (nout > m->g->noutputs)
    return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "graph @%s has %u output(s), %u asked for",
                     m->g->name, m->g->noutputs, nout);
  if (nout && !outputs) return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "kc_run: outputs is NULL");
  kc_status s = kc_rt_bind(m, inputs, nin);
  if (s == KC_OK) s = kc_rt_workspace(m); /* the pool may have changed size */
  if (s == KC_OK) s = kc_rt_plan_reset(m);
  /* stages: plan and run up to the first node whose sizes wait for computed data, settle it */
  uint32_t start = 0, stop = 0;
  while (s == KC_OK) {
    s = kc_rt_concrete(m, start, &stop);
    if (s == KC_OK) s = kc_rt_plan_upto(m, stop);
    if (s != KC_OK) break;
    if (m->cuda && (s = kc_rt_cuda_execute(m, start, stop)) != KC_OK) break;
    if (!m->cuda && (s = kc_rt_execute(m, start, stop)) != KC_OK) break;
    if (stop == m->g->nnodes) break;
    s = kc_rt_settle(m, stop);
    start = stop;
  }
  if (s == KC_OK) s = kc_rt_plan_outputs(m);
  if (s != KC_OK) return s;
  copy_outputs(m);
  describe_outputs(m, outputs, nout);
  return KC_OK;
}
