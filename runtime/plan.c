/*
 * runtime/plan.c - the memory plan of one run: every value's byte size from the shape graph,
 * arena offsets for intermediates by liveness with first-fit reuse, module-owned output
 * buffers, and the buffer pointer of every value (views and sources resolved through roots).
 *
 * The plan is made in node order, in stages: kc_rt_plan_upto(end) places what nodes before
 * `end` define, so a run whose later sizes depend on computed data plans (and runs) the nodes
 * before that point first. The live blocks carry over between stages, so the offsets are the
 * ones one stage over the whole graph would give; an arena that must grow keeps what earlier
 * stages wrote.
 *
 * Placement itself is the graph-free core in runtime/plan_core.c, shared with the AOT runtime.
 *
 * Invariants:
 *   - Two arena blocks overlap only when their live ranges [first, last] do not (plan_core.h).
 *   - Offsets and sizes are multiples of KC_RT_ALIGN (64): every buffer is aligned for AVX-512.
 *   - The arena and output buffers only grow, and only when a run needs more than they hold;
 *     m->peak is the largest arena a run has needed.
 */
#include "runtime/internal.h"

#include <stdlib.h>
#include <string.h>

#define ROUND_UP(x) (((x) + KC_RT_ALIGN - 1) / KC_RT_ALIGN * KC_RT_ALIGN)

/* Byte size of value v of sg (its dims are integers once its node is concrete). */
static kc_status size_of(kc_module *m, uint32_t v) {
  const kc_value *val = &m->sg->vals[v];
  size_t n = kc_dtype_size(val->dtype);
  for (int d = 0; d < val->rank; d++) {
    size_t dim = (size_t)val->dims[d];
    if (dim && n > SIZE_MAX / dim)
      return kc_errorf(m->ctx, KC_ERR_NOMEM, "value %%%u is too large to allocate", v);
    n *= dim;
  }
  m->nbytes[v] = val->rank < 0 ? 0 : n;
  return KC_OK;
}

/* Arena offset of root v, placed by the shared first-fit core (runtime/plan_core.c). */
static void place(kc_module *m, uint32_t v) {
  size_t off =
      kc_plan_place(m->live, &m->nlive, &m->total, m->rv[v].first, m->rv[v].last, m->nbytes[v]);
  if (off != SIZE_MAX) m->off[v] = off; /* zero-size: stays unplaced, points at m->empty */
}

static void *root_buf(kc_module *m, uint32_t v) {
  const kc_rt_val *r = &m->rv[v];
  if (r->kind == KC_RT_INPUT) return m->in_of[r->input]->data ? m->in_of[r->input]->data : m->empty;
  if (r->kind == KC_RT_SOURCE) return (void *)r->data;
  if (r->output >= 0) return m->out_buf[r->output];
  return m->off[v] != SIZE_MAX ? m->arena + m->off[v] : m->empty;
}

kc_status kc_rt_plan_reset(kc_module *m) {
  const kc_graph *g = m->g;
  for (uint32_t v = 0; v < g->nvals; v++)
    m->off[v] = SIZE_MAX;
  m->nlive = 0;
  m->total = 0;
  m->next_order = 0;
  m->planned = 0;
  kc_status s = KC_OK;
  for (uint32_t k = 0; k < g->ninputs && s == KC_OK; k++) {
    m->vbuf[g->inputs[k].id] = root_buf(m, g->inputs[k].id);
    s = size_of(m, g->inputs[k].id);
  }
  return s;
}

kc_status kc_rt_plan_upto(kc_module *m, uint32_t end) {
  const kc_graph *g = m->g;
  kc_status s = KC_OK;
  for (uint32_t i = m->planned; i < end && s == KC_OK; i++)
    for (uint32_t j = 0; j < g->nodes[i].nout && s == KC_OK; j++)
      if (g->nodes[i].out[j].id) s = size_of(m, g->nodes[i].out[j].id);
  if (s != KC_OK) return s;
  for (uint32_t i = m->planned; i < end; i++) /* a view reads exactly its root's bytes */
    for (uint32_t j = 0; j < g->nodes[i].nout; j++) {
      uint32_t v = g->nodes[i].out[j].id, r = m->rv[v].root;
      if (v && r != v && m->nbytes[v] != m->nbytes[r])
        return kc_node_errorf(m->sg, &g->nodes[i], KC_ERR_SHAPE,
                              "result %%%u has %zu bytes but views %%%u of %zu bytes", v,
                              m->nbytes[v], r, m->nbytes[r]);
    }
  size_t before = m->total; /* bytes of the arena earlier stages may have written */
  for (; m->next_order < m->norder && m->rv[m->order[m->next_order]].first < end; m->next_order++)
    place(m, m->order[m->next_order]);
  if (m->total > m->arena_cap && !kc_plan_grow(&m->arena, &m->arena_cap, m->total, before))
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory: the arena of @%s needs %zu bytes",
                     g->name, m->total);
  if (m->total > m->peak) m->peak = m->total;
  for (uint32_t i = m->planned; i < end; i++)
    for (uint32_t j = 0; j < g->nodes[i].nout; j++) {
      uint32_t v = g->nodes[i].out[j].id;
      int32_t k = v ? m->rv[v].output : -1;
      if (k >= 0 && m->rv[v].root == v &&
          !kc_plan_grow((unsigned char **)&m->out_buf[k], &m->out_cap[k], ROUND_UP(m->nbytes[v]),
                        0))
        return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory: output '%s' needs %zu bytes",
                         kc_graph_output_name(g, (uint32_t)k), m->nbytes[v]);
    }
  m->planned = end;
  /* every value defined so far: the arena may have moved; views after their roots */
  for (uint32_t i = 0; i < end; i++)
    for (uint32_t j = 0; j < g->nodes[i].nout; j++) {
      uint32_t v = g->nodes[i].out[j].id;
      if (v) m->vbuf[v] = m->rv[v].root == v ? root_buf(m, v) : m->vbuf[m->rv[v].root];
    }
  return KC_OK;
}

kc_status kc_rt_plan_outputs(kc_module *m) {
  const kc_graph *g = m->g;
  for (uint32_t k = 0; k < g->noutputs; k++) {
    uint32_t v = g->outputs[k].v.id;
    if (m->out_copy[k] &&
        !kc_plan_grow((unsigned char **)&m->out_buf[k], &m->out_cap[k], ROUND_UP(m->nbytes[v]), 0))
      return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory: output '%s' needs %zu bytes",
                       kc_graph_output_name(g, k), m->nbytes[v]);
  }
  return KC_OK;
}
