/*
 * ir/shape_movement.c - shape functions of ops that reshape or reorder without choosing
 * elements: reshape, flatten, squeeze, unsqueeze, transpose, expand, trilu.
 *
 * Shapes and axes are i64 inputs read through known values. Reshape infers its -1 entry
 * symbolically (the input's element count over the other entries), so [B,S,384] -> [-1,384]
 * gives B*S. Symbols are taken to be sizes other than 1 when the question is "is this dim 1"
 * (squeeze with no axes), as a run-time 1 would make the graph's shapes ambiguous anyway.
 * Reshape-like ops pass known contents through, as the element order does not change.
 * Reshape and expand refuse a result whose element count (or byte size) overflows int64: such a
 * product is no constant ir/dim.c can hold, so the count checks would otherwise not see it.
 */
#include "shape.h"

#include <string.h>

/* Known contents of input 0 carried to output 0 unchanged (views and expand of one value). */
static void pass_known(kc_graph *g, const kc_node *n) {
  uint32_t cnt;
  const kc_dim *k = kc_value_known(g, n->in[0], &cnt);
  if (k) kc_shp_set_known(g, n, 0, cnt, k);
}

/* The i64 1-D input i: checks dtype and rank. */
static kc_status need_i64_vector(kc_graph *g, const kc_node *n, uint32_t i) {
  kc_status s = kc_shp_need_dtype(g, n, i, KC_I64);
  return s == KC_OK ? kc_shp_need_rank(g, n, i, 1, 1) : s;
}

/* Output of rank `rank` whose dims are all unknown (contents of the shape input unknown). */
static kc_status set_unknown(kc_graph *g, kc_node *n, kc_dtype t, int64_t rank) {
  if (rank > KC_MAX_RANK)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "result rank %lld over %d", (long long)rank,
                          KC_MAX_RANK);
  kc_dim dims[KC_MAX_RANK];
  kc_shp_fresh(g, (int)rank, dims);
  kc_shp_set(g, n, 0, t, (int)rank, dims);
  return KC_OK;
}

kc_status shape_reshape(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = need_i64_vector(g, n, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  uint32_t cnt;
  const kc_dim *shape = kc_value_known(g, n->in[1], &cnt);
  if (!shape) {
    int64_t len = kc_shp_len(g, n, 1);
    if (len < 0) return kc_shp_rank_unknown(g, n, 1, "the shape");
    return set_unknown(g, n, x->dtype, len);
  }
  if (cnt > KC_MAX_RANK)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "result rank %u over %d", cnt, KC_MAX_RANK);
  bool allowzero = kc_node_int(n, "allowzero", 0) != 0;
  kc_dim out[KC_MAX_RANK];
  int infer = -1;
  for (uint32_t i = 0; i < cnt; i++) {
    int64_t v;
    out[i] = shape[i];
    if (!kc_dim_const(g, shape[i], &v)) continue;
    if (v == -1) {
      if (infer >= 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "more than one -1 in the shape");
      infer = (int)i;
      out[i] = 1;
    } else if (v < -1) {
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "shape entry %u is %lld", i, (long long)v);
    } else if (v == 0 && !allowzero) {
      if ((int)i >= x->rank)
        return kc_node_errorf(g, n, KC_ERR_SHAPE, "shape entry %u copies a dim of a rank %d input",
                              i, x->rank);
      out[i] = x->dims[i];
    }
  }
  if (kc_type_overflows(g, x->dtype, (int)cnt, out)) goto overflow;
  kc_dim total = kc_shp_prod(g, x->rank, x->dims), rest = kc_shp_prod(g, (int)cnt, out);
  int64_t vt, vr;
  bool ct = kc_dim_const(g, total, &vt), cr = kc_dim_const(g, rest, &vr);
  if (infer >= 0) {
    if (cr && vr == 0)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "-1 next to a 0 entry cannot be inferred");
    if (!kc_dim_div_exact(g, total, rest, &out[infer])) {
      if (ct && cr) goto mismatch;
      out[infer] = kc_dim_div(g, total, rest); /* symbolic: trusted to divide at run time */
    }
  } else if (ct && cr && vt != vr) {
    goto mismatch;
  }
  if (kc_type_overflows(g, x->dtype, (int)cnt, out)) goto overflow;
  kc_dtype t = x->dtype;
  kc_shp_assume(g, KC_ASSUME_EQ, total, kc_shp_prod(g, (int)cnt, out)); /* a -1 divided exactly */
  kc_shp_set(g, n, 0, t, (int)cnt, out);
  pass_known(g, n);
  return KC_OK;
mismatch:;
  char sa[256], sb[256];
  return kc_node_errorf(g, n, KC_ERR_SHAPE, "cannot reshape %s into %s",
                        kc_shp_fmt(g, x->rank, x->dims, sa, sizeof sa),
                        kc_shp_fmt(g, (int)cnt, shape, sb, sizeof sb));
overflow:
  return kc_node_errorf(g, n, KC_ERR_SHAPE,
                        "cannot reshape %s into %s: its element count or byte size overflows int64",
                        kc_shp_fmt(g, x->rank, x->dims, sa, sizeof sa),
                        kc_shp_fmt(g, (int)cnt, shape, sb, sizeof sb));
}

kc_status shape_flatten(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  int64_t axis = kc_node_int(n, "axis", 1);
  if (axis < 0) axis += x->rank;
  if (axis < 0 || axis > x->rank)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "axis %lld out of range for rank %d",
                          (long long)kc_node_int(n, "axis", 1), x->rank);
  kc_dim dims[2] = {kc_shp_prod(g, (int)axis, x->dims),
                    kc_shp_prod(g, x->rank - (int)axis, x->dims + axis)};
  kc_shp_set(g, n, 0, x->dtype, 2, dims);
  return KC_OK;
}

kc_status shape_squeeze(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = need_i64_vector(g, n, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  bool drop[KC_MAX_RANK] = {0};
  if (kc_shp_in(g, n, 1)) {
    int64_t axes[KC_KNOWN_MAX];
    uint32_t na;
    if (!kc_shp_known_ints(g, n->in[1], axes, KC_KNOWN_MAX, &na)) {
      int64_t len = kc_shp_len(g, n, 1);
      if (len < 0) return kc_shp_rank_unknown(g, n, 1, "the axes");
      if (len > x->rank)
        return kc_node_errorf(g, n, KC_ERR_SHAPE, "%lld axes for rank %d", (long long)len, x->rank);
      return set_unknown(g, n, x->dtype, x->rank - len);
    }
    for (uint32_t i = 0; i < na; i++) {
      int a;
      if ((s = kc_shp_axis(g, n, "axis", axes[i], x->rank, &a)) != KC_OK) return s;
      if (!KC_DIM_IS_SYM(x->dims[a]) && x->dims[a] != 1)
        return kc_node_errorf(g, n, KC_ERR_SHAPE, "axis %lld has size %lld, not 1",
                              (long long)axes[i], (long long)x->dims[a]);
      kc_shp_assume(g, KC_ASSUME_EQ, x->dims[a], 1);
      drop[a] = true;
    }
  } else {
    for (int i = 0; i < x->rank; i++)
      drop[i] = x->dims[i] == 1;
  }
  kc_dim dims[KC_MAX_RANK];
  int r = 0;
  for (int i = 0; i < x->rank; i++)
    if (!drop[i]) dims[r++] = x->dims[i];
  kc_shp_set(g, n, 0, x->dtype, r, dims);
  pass_known(g, n);
  return KC_OK;
}

kc_status shape_unsqueeze(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = need_i64_vector(g, n, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  int64_t axes[KC_KNOWN_MAX];
  uint32_t na;
  if (!kc_shp_known_ints(g, n->in[1], axes, KC_KNOWN_MAX, &na)) {
    int64_t len = kc_shp_len(g, n, 1);
    if (len < 0) return kc_shp_rank_unknown(g, n, 1, "the axes");
    return set_unknown(g, n, x->dtype, x->rank + len);
  }
  int r = x->rank + (int)na;
  if (r > KC_MAX_RANK)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "result rank %d over %d", r, KC_MAX_RANK);
  bool unit[KC_MAX_RANK] = {0};
  for (uint32_t i = 0; i < na; i++) {
    int a;
    if ((s = kc_shp_axis(g, n, "axis", axes[i], r, &a)) != KC_OK) return s;
    if (unit[a])
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "axis %lld repeated", (long long)axes[i]);
    unit[a] = true;
  }
  kc_dim dims[KC_MAX_RANK];
  for (int i = 0, j = 0; i < r; i++)
    dims[i] = unit[i] ? 1 : x->dims[j++];
  kc_shp_set(g, n, 0, x->dtype, r, dims);
  pass_known(g, n);
  return KC_OK;
}

kc_status shape_transpose(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  const kc_attr *pa = kc_node_attr(n, "perm");
  int64_t perm[KC_MAX_RANK];
  if (pa) {
    if (pa->kind != KC_ATTR_INTS || pa->u.ints.n != (uint32_t)x->rank)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "perm must list %d axes", x->rank);
    memcpy(perm, pa->u.ints.v, (size_t)x->rank * sizeof *perm);
  } else {
    for (int i = 0; i < x->rank; i++)
      perm[i] = x->rank - 1 - i;
  }
  bool seen[KC_MAX_RANK] = {0};
  kc_dim dims[KC_MAX_RANK];
  for (int i = 0; i < x->rank; i++) {
    if (perm[i] < 0 || perm[i] >= x->rank || seen[perm[i]])
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "perm is not a permutation of 0..%d", x->rank - 1);
    seen[perm[i]] = true;
    dims[i] = x->dims[perm[i]];
  }
  kc_shp_set(g, n, 0, x->dtype, x->rank, dims);
  return KC_OK;
}

kc_status shape_expand(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = need_i64_vector(g, n, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  uint32_t cnt;
  const kc_dim *shape = kc_value_known(g, n->in[1], &cnt);
  kc_dim dims[KC_MAX_RANK];
  int rank;
  if (!shape) {
    int64_t len = kc_shp_len(g, n, 1);
    if (len < 0) return kc_shp_rank_unknown(g, n, 1, "the shape");
    rank = len > x->rank ? (int)len : x->rank;
    if (rank > KC_MAX_RANK)
      return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "result rank %d over %d", rank, KC_MAX_RANK);
    /* an input dim other than 1 survives any broadcast; the rest depend on the shape */
    for (int i = 0; i < rank; i++) {
      int j = i - (rank - x->rank);
      dims[i] =
          j >= 0 && x->dims[j] != 1 && !KC_DIM_IS_SYM(x->dims[j]) ? x->dims[j] : kc_dim_fresh(g);
    }
    kc_shp_set(g, n, 0, x->dtype, rank, dims);
    return KC_OK;
  }
  if (cnt > KC_MAX_RANK)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "result rank %u over %d", cnt, KC_MAX_RANK);
  for (uint32_t i = 0; i < cnt; i++) {
    int64_t v;
    if (kc_dim_const(g, shape[i], &v) && v < 0)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "shape entry %u is %lld", i, (long long)v);
  }
  if ((s = kc_shp_bcast(g, n, x->rank, x->dims, (int)cnt, shape, &rank, dims)) != KC_OK) return s;
  if (kc_type_overflows(g, x->dtype, rank, dims)) {
    char sa[256], sb[256];
    return kc_node_errorf(
        g, n, KC_ERR_SHAPE, "expanding %s to %s: its element count or byte size overflows int64",
        kc_shp_fmt(g, x->rank, x->dims, sa, sizeof sa), kc_shp_fmt(g, rank, dims, sb, sizeof sb));
  }
  kc_shp_set(g, n, 0, x->dtype, rank, dims);
  /* a known 1-D (or scalar) value repeated along a 1-D result */
  uint32_t nk;
  const kc_dim *k = kc_value_known(g, n->in[0], &nk);
  int64_t len;
  if (k && rank == 1 && kc_dim_const(g, dims[0], &len) && len <= KC_KNOWN_MAX &&
      (nk == 1 || nk == (uint32_t)len)) {
    kc_dim out[KC_KNOWN_MAX];
    for (int64_t i = 0; i < len; i++)
      out[i] = nk == 1 ? k[0] : k[i];
    kc_shp_set_known(g, n, 0, (uint32_t)len, out);
  }
  return KC_OK;
}

kc_status shape_trilu(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 1, KC_I64);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 1, 0, 0);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  if (x->rank < 2)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "input 0 has rank %d, expected 2 or more", x->rank);
  kc_shp_set_like(g, n, 0, n->in[0]);
  return KC_OK;
}
