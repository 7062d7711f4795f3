/*
 * ir/shape_scatter.c - the shape function of scatter_add (ir/ops.def): the result is data's
 * type; updates must have data's dtype and gather(data, indices)'s shape, [pre, indices...,
 * post] around `axis`.
 */
#include "internal.h"
#include "shape.h"

kc_status shape_scatter_add(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  if (s == KC_OK) s = kc_shp_need_int(g, n, 1);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 0, 2);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]), *idx = kc_value_of(g, n->in[1]);
  const kc_value *u = kc_value_of(g, n->in[2]);
  if (x->rank == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "scatter_add into a scalar");
  int axis;
  if ((s = kc_shp_axis(g, n, "axis", kc_node_int(n, "axis", 0), x->rank, &axis)) != KC_OK) return s;
  int r = x->rank - 1 + idx->rank;
  if (u->rank != r)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "updates have rank %d, gather's result %d", u->rank,
                          r);
  kc_dim want[KC_MAX_RANK];
  int j = 0;
  for (int i = 0; i < axis; i++)
    want[j++] = x->dims[i];
  for (int i = 0; i < idx->rank; i++)
    want[j++] = idx->dims[i];
  for (int i = axis + 1; i < x->rank; i++)
    want[j++] = x->dims[i];
  for (int i = 0; i < r; i++)
    if (!kc_shp_dims_match(g, u->dims[i], want[i])) {
      char a[256], b[256];
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "updates are %s, gather's result is %s",
                            kc_shp_fmt(g, u->rank, u->dims, a, sizeof a),
                            kc_shp_fmt(g, r, want, b, sizeof b));
    }
  kc_shp_set_like(g, n, 0, n->in[0]);
  return KC_OK;
}
