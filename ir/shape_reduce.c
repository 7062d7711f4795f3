/*
 * ir/shape_reduce.c - shape functions of reductions and row-wise ops: reduce_mean/sum/max/min/prod,
 * softmax/log_softmax, cumsum, and ONNX LayerNormalization / RMSNormalization.
 *
 * Reduce axes are the optional i64 second input (ONNX opset 18). When its contents are unknown
 * the output still has a known rank if keepdims is set or the axes tensor has a known length;
 * the dims it may have reduced become fresh symbols.
 */
#include "shape.h"

#include <string.h>

/* Output rank and dims of a reduction whose axes are unknown but counted (naxes, -1: not). */
static kc_status reduce_unknown(kc_graph *g, kc_node *n, const kc_value *x, bool keep) {
  int64_t naxes = kc_shp_len(g, n, 1);
  kc_dim dims[KC_MAX_RANK];
  if (keep) {
    /* each dim either stays or becomes 1: only the integer 1s are sure */
    for (int i = 0; i < x->rank; i++)
      dims[i] = x->dims[i] == 1 ? 1 : kc_dim_fresh(g);
    kc_shp_set(g, n, 0, x->dtype, x->rank, dims);
    return KC_OK;
  }
  if (naxes < 0) return kc_shp_rank_unknown(g, n, 1, "reduction axes");
  if (naxes > x->rank)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "%lld axes for rank %d", (long long)naxes, x->rank);
  kc_shp_fresh(g, x->rank - (int)naxes, dims);
  kc_shp_set(g, n, 0, x->dtype, x->rank - (int)naxes, dims);
  return KC_OK;
}

kc_status shape_reduce(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK && n->op != KC_OP_REDUCE_MAX && n->op != KC_OP_REDUCE_MIN)
    s = kc_shp_need_numeric(g, n, 0);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 1, KC_I64);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 1, 1, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  bool keep = kc_node_int(n, "keepdims", 1) != 0;
  bool noop = kc_node_int(n, "noop_with_empty_axes", 0) != 0;
  bool reduce[KC_MAX_RANK] = {0};
  if (kc_shp_in(g, n, 1)) {
    int64_t axes[KC_KNOWN_MAX];
    uint32_t na = 0;
    /* an empty axes tensor has known contents even when nothing recorded them */
    if (!kc_shp_known_ints(g, n->in[1], axes, KC_KNOWN_MAX, &na) && kc_shp_len(g, n, 1) != 0)
      return reduce_unknown(g, n, x, keep);
    for (uint32_t i = 0; i < na; i++) {
      int a;
      if ((s = kc_shp_axis(g, n, "axis", axes[i], x->rank, &a)) != KC_OK) return s;
      if (reduce[a])
        return kc_node_errorf(g, n, KC_ERR_SHAPE, "axis %lld repeated", (long long)axes[i]);
      reduce[a] = true;
    }
    if (na == 0 && !noop)
      for (int i = 0; i < x->rank; i++)
        reduce[i] = true;
  } else if (!noop) {
    for (int i = 0; i < x->rank; i++)
      reduce[i] = true;
  }
  kc_dim dims[KC_MAX_RANK];
  int r = 0;
  for (int i = 0; i < x->rank; i++) {
    if (!reduce[i])
      dims[r++] = x->dims[i];
    else if (keep)
      dims[r++] = 1;
  }
  kc_shp_set(g, n, 0, x->dtype, r, dims);
  return KC_OK;
}

kc_status shape_axis_op(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  const kc_value *x = kc_value_of(g, n->in[0]);
  int axis;
  if (s == KC_OK)
    s = kc_shp_axis(g, n, "axis", kc_node_int(n, "axis", -1), x->rank ? x->rank : 1, &axis);
  if (s != KC_OK) return s;
  kc_shp_set_like(g, n, 0, n->in[0]);
  return KC_OK;
}

bool kc_cumsum_axis(const kc_graph *g, const kc_node *n, int *axis) {
  int64_t a;
  uint32_t cnt;
  int r = kc_value_of(g, n->in[0])->rank;
  if (!kc_shp_known_ints(g, n->in[1], &a, 1, &cnt) || cnt != 1 || a < -r || a >= r) return false;
  *axis = (int)(a < 0 ? a + r : a);
  return true;
}

kc_status shape_cumsum(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_numeric(g, n, 0);
  if (s == KC_OK) s = kc_shp_need_int(g, n, 1);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 1, 0, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]), *ax = kc_value_of(g, n->in[1]);
  if (x->rank == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "input 0 is a scalar");
  if (ax->rank == 1 && ax->dims[0] != 1)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "the axis (%%%u) must hold one element", n->in[1].id);
  int64_t a;
  uint32_t cnt;
  int axis;
  if (kc_shp_known_ints(g, n->in[1], &a, 1, &cnt) &&
      (s = kc_shp_axis(g, n, "axis", a, x->rank, &axis)) != KC_OK)
    return s;
  kc_shp_set_like(g, n, 0, n->in[0]);
  return KC_OK;
}

/* Shared by both ONNX normalizations: x float, scale (and bias) of x's dtype broadcasting to
 * the normalized dims x[axis:]. Writes the axis. */
static kc_status check_norm(kc_graph *g, kc_node *n, int *axis) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  for (uint32_t i = 1; s == KC_OK && i < n->nin; i++)
    s = kc_shp_same_dtype(g, n, 0, i);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  if (x->rank == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "input 0 is a scalar");
  s = kc_shp_axis(g, n, "axis", kc_node_int(n, "axis", -1), x->rank, axis);
  for (uint32_t i = 1; s == KC_OK && i < n->nin; i++)
    s = kc_shp_bcast_to(g, n, i, x->rank - *axis, x->dims + *axis);
  return s;
}

kc_status shape_layer_normalization(kc_graph *g, kc_node *n) {
  int axis;
  kc_status s = check_norm(g, n, &axis);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  kc_dim stat[KC_MAX_RANK];
  for (int i = 0; i < x->rank; i++)
    stat[i] = i < axis ? x->dims[i] : 1;
  /* stash_type 1 (float) is the only one ONNX defines; mean and inv_std_dev are f32 */
  kc_dim xd[KC_MAX_RANK];
  memcpy(xd, x->dims, sizeof xd);
  int rank = x->rank;
  kc_dtype t = x->dtype;
  kc_shp_set(g, n, 0, t, rank, xd);
  kc_shp_set(g, n, 1, KC_F32, rank, stat);
  kc_shp_set(g, n, 2, KC_F32, rank, stat);
  return KC_OK;
}

kc_status shape_rms_normalization(kc_graph *g, kc_node *n) {
  int axis;
  kc_status s = check_norm(g, n, &axis);
  if (s != KC_OK) return s;
  kc_shp_set_like(g, n, 0, n->in[0]);
  return KC_OK;
}
