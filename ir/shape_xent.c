/*
 * ir/shape_xent.c - shape functions of the fused softmax cross-entropy ops (ir/ops.def
 * SOFTMAX_XENT, SOFTMAX_XENT_GRAD).
 *
 * logits are [..., C] (rank >= 1, a float type), labels i64 with logits' leading dims; the loss
 * has logits' dtype and the labels' dims, lse the same dims in the compute type (f32, f64 for
 * f64 logits), so f16 logits keep an exact statistic for the backward.
 */
#include "shape.h"

/* logits (input 0) and labels (input 1) agree; *lse: the statistics' dtype. */
static kc_status check_pair(kc_graph *g, kc_node *n, kc_dtype *lse) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 0, 1, KC_MAX_RANK);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 1, KC_I64);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]), *l = kc_value_of(g, n->in[1]);
  if (l->rank != x->rank - 1)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "labels of rank %d for logits of rank %d", l->rank,
                          x->rank);
  for (int i = 0; i < l->rank; i++)
    if (!kc_shp_dims_match(g, x->dims[i], l->dims[i]))
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "labels dim %d differs from the logits'", i);
  *lse = x->dtype == KC_F64 ? KC_F64 : KC_F32;
  return KC_OK;
}

kc_status shape_softmax_xent(kc_graph *g, kc_node *n) {
  kc_dtype st;
  kc_status s = check_pair(g, n, &st);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  kc_dim d[KC_MAX_RANK];
  for (int i = 0; i < x->rank - 1; i++)
    d[i] = x->dims[i];
  kc_dtype t = x->dtype;
  kc_shp_set(g, n, 0, t, x->rank - 1, d);
  kc_shp_set(g, n, 1, st, x->rank - 1, d);
  return KC_OK;
}

kc_status shape_softmax_xent_grad(kc_graph *g, kc_node *n) {
  kc_dtype st;
  kc_status s = check_pair(g, n, &st);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 2, st);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 0, 3);
  if (s != KC_OK) return s;
  const kc_value *l = kc_value_of(g, n->in[1]);
  for (uint32_t i = 2; i < 4; i++) {
    const kc_value *v = kc_value_of(g, n->in[i]);
    bool ok = v->rank == l->rank;
    for (int k = 0; ok && k < l->rank; k++)
      ok = kc_shp_dims_match(g, v->dims[k], l->dims[k]);
    if (!ok)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "input %u does not have the labels' dims", i);
  }
  kc_shp_set_like(g, n, 0, n->in[0]);
  return KC_OK;
}
