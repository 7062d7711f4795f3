/*
 * ir/shape_topk.c - shape function of topk(x, k) {axis, largest, sorted}: values (x's dtype) and
 * int64 indices, both x's shape with the axis replaced by k.
 *
 * k is a one-element integer tensor. Known when compiling (a constant, or contents shape
 * inference tracked), it must lie in [0, dim]; known only at run time (a graph input, computed
 * from data) the size is a fresh symbol that the runtime binds when the node runs (runtime/
 * settle.c re-runs this function with k's contents, so the range check happens then).
 */
#include "shape.h"

kc_status shape_topk(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_numeric(g, n, 0);
  if (s == KC_OK) s = kc_shp_need_int(g, n, 1);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 1, 0, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]), *kv = kc_value_of(g, n->in[1]);
  if (x->rank == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "input 0 is a scalar");
  if (kv->rank == 1 && kv->dims[0] != 1)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "k (%%%u) must hold one element", n->in[1].id);
  int axis;
  if ((s = kc_shp_axis(g, n, "axis", kc_node_int(n, "axis", -1), x->rank, &axis)) != KC_OK)
    return s;
  kc_dim dims[KC_MAX_RANK], len = x->dims[axis];
  for (int i = 0; i < x->rank; i++)
    dims[i] = x->dims[i];
  int64_t k, l;
  uint32_t cnt;
  if (kc_shp_known_ints(g, n->in[1], &k, 1, &cnt) && cnt == 1) {
    if (k < 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "k is %lld", (long long)k);
    if (kc_dim_const(g, len, &l) && k > l)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "k %lld is over the size %lld of axis %d",
                            (long long)k, (long long)l, axis);
    dims[axis] = kc_dim_int(g, k);
  } else {
    dims[axis] = kc_dim_fresh(g);
  }
  if (!(kc_dim_const(g, dims[axis], &k) && kc_dim_const(g, len, &l)))
    kc_shp_assume(g, KC_ASSUME_LE, dims[axis], len); /* the run checks k <= the axis size */
  kc_shp_set(g, n, 0, x->dtype, x->rank, dims);
  kc_shp_set(g, n, 1, KC_I64, x->rank, dims);
  return KC_OK;
}
