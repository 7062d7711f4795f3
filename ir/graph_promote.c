/*
 * ir/graph_promote.c - kc_graph_promote: retype every value, weight, constant and cast target
 * of one float dtype to another (f32 -> f64 for `kernc gradcheck`, which checks gradients by
 * finite differences where rounding does not drown them, as PyTorch's gradcheck asks for
 * float64).
 *
 * Invariants: ids, nodes and dims are unchanged; tensor data of the old dtype is converted
 * into the graph's arena (shared data of a kc_graph_clone(.., true) is never written); fused
 * bodies are promoted the same way; the graph is re-inferred at the end, so an op that does not
 * take the new dtype is reported by its shape function naming the node.
 */
#include "internal.h"

#include <string.h>

static double load(kc_dtype t, const void *p, size_t i) {
  return t == KC_F64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static void store(kc_dtype t, void *p, size_t i, double v) {
  if (t == KC_F64)
    ((double *)p)[i] = v;
  else
    ((float *)p)[i] = (float)v;
}

static kc_status promote(kc_graph *g, kc_dtype from, kc_dtype to) {
  for (uint32_t id = 1; id < g->nvals; id++)
    if (g->vals[id].dtype == from) g->vals[id].dtype = to;
  for (uint32_t i = 0; i < g->ntensors; i++) {
    kc_tensor *t = &g->tensors[i];
    if (t->dtype != from) continue;
    size_t n = t->nbytes / kc_dtype_size(from);
    void *d = NULL;
    if (t->data) {
      d = kc_arena_alloc(&g->arena, n ? n * kc_dtype_size(to) : 1);
      if (!d) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory converting weights");
      for (size_t k = 0; k < n; k++)
        store(to, d, k, load(from, t->data, k));
    }
    t->data = d;
    t->dtype = to;
    t->nbytes = n * kc_dtype_size(to);
  }
  for (uint32_t ni = 0; ni < g->nnodes; ni++) {
    kc_node *n = &g->nodes[ni];
    for (uint32_t a = 0; a < n->nattr; a++)
      if (n->attrs[a].kind == KC_ATTR_DTYPE && n->attrs[a].u.t == from) n->attrs[a].u.t = to;
  }
  for (uint32_t b = 0; b < g->nbodies; b++) {
    kc_status s = promote(g->bodies[b], from, to);
    if (s != KC_OK) return s;
  }
  return KC_OK;
}

kc_status kc_graph_promote(kc_graph *g, kc_dtype from, kc_dtype to) {
  bool ok = (from == KC_F32 || from == KC_F64) && (to == KC_F32 || to == KC_F64);
  if (!ok)
    return kc_errorf(g->ctx, KC_ERR_UNSUPPORTED, "promote: only between f32 and f64, not %s to %s",
                     kc_dtype_name(from), kc_dtype_name(to));
  kc_status s = promote(g, from, to);
  return s == KC_OK ? kc_graph_infer(g) : s;
}
