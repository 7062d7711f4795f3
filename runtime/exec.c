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
 *   - Profiling (runtime/profile.c) times each kernel's pool run, workers joined, with the
 *     monotonic clock; when it is off a launch costs one extra branch and no clock read.
 */
#include "runtime/internal.h"

#include <string.h>
#include <time.h>

typedef struct launch {
  kc_kernel_fn fn;
  void *const *bufs;
  const int64_t *dims;
  unsigned char *ws;
  size_t ws_stride;
} launch;

static void run_range(void *arg, int64_t begin, int64_t end, int thread) {
  const launch *l = arg;
  void *ws = l->ws ? l->ws + l->ws_stride * (size_t)thread : NULL;
  l->fn(l->bufs, l->dims, ws, begin, end);
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

void kc_rt_execute(kc_module *m, uint32_t from, uint32_t to) {
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
    launch l = {k->fn, m->bufs, m->dims, m->ws, m->ws_stride};
    int64_t units = k->units(m->dims);
    if (!m->profile) {
      kc_pool_run(m->pool, run_range, &l, units, k->grain);
      continue;
    }
    uint64_t t0 = now_ns();
    kc_pool_run(m->pool, run_range, &l, units, k->grain);
    uint64_t dt = now_ns() - t0;
    kc_rt_prof *p = &m->prof[i];
    if (!p->calls || dt < p->min_ns) p->min_ns = dt;
    p->ns += dt;
    p->calls++;
  }
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
    if (!m->cuda) kc_rt_execute(m, start, stop);
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
