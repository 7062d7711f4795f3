/*
 * ir/shape_index.c - shape functions of ops that pick or join elements along an axis: gather,
 * concat, split and slice.
 *
 * These are the ops exporters use on Shape outputs (gather one dim, slice a range, concat the
 * pieces into a new shape), so each also computes known contents when its inputs have them.
 * Slice with symbolic dims or bounds assumes the starts/ends it is given lie inside the dim
 * (clamping needs the size; kc_slice_requirements lists what was assumed); "to the end"
 * sentinels (|v| >= 2^31, as exporters write INT64_MAX) and symbolic bounds provably past the
 * end clamp.
 */
#include "shape.h"

#include <string.h>

#define BIG ((int64_t)1 << 31) /* slice bounds at least this large mean "past the end" */

kc_status shape_gather(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_int(g, n, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]), *idx = kc_value_of(g, n->in[1]);
  if (x->rank == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "gather from a scalar");
  int axis;
  if ((s = kc_shp_axis(g, n, "axis", kc_node_int(n, "axis", 0), x->rank, &axis)) != KC_OK) return s;
  int r = x->rank - 1 + idx->rank;
  if (r > KC_MAX_RANK)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "result rank %d over %d", r, KC_MAX_RANK);
  kc_dim dims[KC_MAX_RANK];
  int j = 0;
  for (int i = 0; i < axis; i++)
    dims[j++] = x->dims[i];
  for (int i = 0; i < idx->rank; i++)
    dims[j++] = idx->dims[i];
  for (int i = axis + 1; i < x->rank; i++)
    dims[j++] = x->dims[i];
  /* constant indices must fall inside an integer-sized axis */
  int64_t iv[KC_KNOWN_MAX];
  uint32_t ni = 0;
  bool known_idx = kc_shp_known_ints(g, n->in[1], iv, KC_KNOWN_MAX, &ni);
  kc_dim len = x->dims[axis];
  for (uint32_t i = 0; known_idx && i < ni && !KC_DIM_IS_SYM(len); i++)
    if (iv[i] < -len || iv[i] >= len)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "index %lld out of range for axis of size %lld",
                            (long long)iv[i], (long long)len);
  kc_shp_set(g, n, 0, x->dtype, r, dims);
  uint32_t nk;
  const kc_dim *k = kc_value_known(g, n->in[0], &nk);
  if (!k || !known_idx || x->rank != 1 || KC_DIM_IS_SYM(len) || nk != (uint32_t)len) return KC_OK;
  kc_dim out[KC_KNOWN_MAX];
  for (uint32_t i = 0; i < ni; i++)
    out[i] = k[iv[i] < 0 ? iv[i] + len : iv[i]];
  kc_shp_set_known(g, n, 0, ni, out);
  return KC_OK;
}

kc_status shape_concat(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  const kc_value *x0 = kc_value_of(g, n->in[0]);
  if (x0->rank == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "concat of scalars");
  if (!kc_node_attr(n, "axis"))
    return kc_node_errorf(g, n, KC_ERR_VERIFY, "attribute 'axis' is missing");
  int axis;
  if ((s = kc_shp_axis(g, n, "axis", kc_node_int(n, "axis", 0), x0->rank, &axis)) != KC_OK)
    return s;
  kc_dim dims[KC_MAX_RANK];
  memcpy(dims, x0->dims, sizeof dims);
  dims[axis] = 0;
  kc_dim known[KC_KNOWN_MAX];
  uint32_t nknown = 0;
  bool all_known = x0->rank == 1;
  for (uint32_t i = 0; i < n->nin; i++) {
    const kc_value *x = kc_shp_in(g, n, i);
    if (!x) return kc_node_errorf(g, n, KC_ERR_VERIFY, "input %u is absent", i);
    if ((s = kc_shp_same_dtype(g, n, 0, i)) != KC_OK) return s;
    if (x->rank != x0->rank)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "input %u (%%%u) has rank %d, input 0 has %d", i,
                            n->in[i].id, x->rank, x0->rank);
    for (int d = 0; d < x->rank; d++) {
      if (d == axis || kc_shp_dims_match(g, x->dims[d], dims[d])) continue;
      char sa[256], sb[256];
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "input %u (%%%u) %s does not fit input 0 %s", i,
                            n->in[i].id, kc_shp_fmt(g, x->rank, x->dims, sa, sizeof sa),
                            kc_shp_fmt(g, x0->rank, x0->dims, sb, sizeof sb));
    }
    dims[axis] = kc_dim_add(g, dims[axis], x->dims[axis]);
    uint32_t nk;
    const kc_dim *k = all_known ? kc_value_known(g, n->in[i], &nk) : NULL;
    if (!k || nknown + nk > KC_KNOWN_MAX) {
      all_known = false;
      continue;
    }
    memcpy(known + nknown, k, nk * sizeof *k);
    nknown += nk;
  }
  kc_shp_set(g, n, 0, x0->dtype, x0->rank, dims);
  if (all_known) kc_shp_set_known(g, n, 0, nknown, known);
  return KC_OK;
}

kc_status shape_split(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 1, KC_I64);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 1, 1, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  if (x->rank == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "split of a scalar");
  int axis;
  if ((s = kc_shp_axis(g, n, "axis", kc_node_int(n, "axis", 0), x->rank, &axis)) != KC_OK) return s;
  const kc_attr *na = kc_node_attr(n, "num_outputs");
  if (na && na->kind == KC_ATTR_INT && na->u.i != (int64_t)n->nout)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "num_outputs=%lld but %u outputs", (long long)na->u.i,
                          n->nout);
  kc_dim dims[KC_MAX_RANK], len = x->dims[axis];
  memcpy(dims, x->dims, sizeof dims);
  kc_dtype t = x->dtype;
  int rank = x->rank;
  if (kc_shp_in(g, n, 1)) {
    int64_t sizes[KC_KNOWN_MAX];
    uint32_t ns;
    if (!kc_shp_known_ints(g, n->in[1], sizes, KC_KNOWN_MAX, &ns)) {
      for (uint32_t i = 0; i < n->nout; i++) {
        dims[axis] = kc_dim_fresh(g);
        kc_shp_set(g, n, i, t, rank, dims);
      }
      return KC_OK;
    }
    if (ns != n->nout)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "%u split sizes for %u outputs", ns, n->nout);
    int64_t sum = 0;
    for (uint32_t i = 0; i < ns; i++) {
      if (sizes[i] < 0)
        return kc_node_errorf(g, n, KC_ERR_SHAPE, "split size %lld", (long long)sizes[i]);
      sum += sizes[i];
    }
    if (!KC_DIM_IS_SYM(len) && sum != len)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "split sizes add up to %lld, the axis is %lld",
                            (long long)sum, (long long)len);
    kc_shp_assume(g, KC_ASSUME_EQ, len, sum);
    for (uint32_t i = 0; i < ns; i++) {
      dims[axis] = sizes[i];
      kc_shp_set(g, n, i, t, rank, dims);
    }
    return KC_OK;
  }
  /* equal parts: ceil(len / n) each, the last one takes what is left (ONNX opset 18) */
  kc_dim part, last;
  kc_dim cnt = (kc_dim)n->nout;
  if (kc_dim_div_exact(g, len, cnt, &part)) {
    last = part;
  } else {
    part = kc_dim_div(g, kc_dim_add(g, len, cnt - 1), cnt);
    last = kc_dim_sub(g, len, kc_dim_mul(g, part, cnt - 1));
    int64_t v;
    if (kc_dim_const(g, last, &v) && v < 0)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "cannot split %lld into %u parts", (long long)len,
                            n->nout);
  }
  for (uint32_t i = 0; i < n->nout; i++) {
    dims[axis] = i + 1 == n->nout ? last : part;
    kc_shp_set(g, n, i, t, rank, dims);
  }
  return KC_OK;
}

/* ---- slice ---------------------------------------------------------------------------------- */

/* Integer slice bounds on a dim of size d, clamped as ONNX says; returns the element count. */
static int64_t slice_int(int64_t d, int64_t start, int64_t end, int64_t step, int64_t *first) {
  if (start < 0) start += d;
  if (end < 0) end += d;
  if (step > 0) {
    start = start < 0 ? 0 : start > d ? d : start;
    end = end < 0 ? 0 : end > d ? d : end;
  } else {
    start = start < 0 ? 0 : start > d - 1 ? d - 1 : start;
    end = end < -1 ? -1 : end > d - 1 ? d - 1 : end;
  }
  *first = start;
  int64_t span = step > 0 ? end - start : start - end, st = step > 0 ? step : -step;
  return span <= 0 ? 0 : (span + st - 1) / st;
}

/*
 * A bound b on dim d where either is symbolic, as the size computation uses it, and what that
 * assumes. Constant bounds: negative ones count from the end, sentinels clamp. ONNX clamps every
 * bound into the dim, which a polynomial cannot say for a constant against a symbol
 * (min(S, 1000)) nor for a symbol against anything (min(S, 64)): the size takes such a bound as
 * lying inside d, and *req (up to 2 dims, each to be >= 0 at run time; *nreq of them) says what
 * that assumed, for a run that cannot re-infer shapes (AOT) to check. A symbolic bound provably
 * past the end clamps to it; one provably <= 0 (-S) counts from the end, assumed not to be 0; any
 * other is assumed not to be negative (which would count from the end).
 */
static kc_dim slice_bound(kc_graph *g, kc_dim d, kc_dim b, int64_t step, bool is_end, kc_dim *req,
                          int *nreq) {
  int64_t v, lo;
  *nreq = 0;
  if (kc_dim_const(g, b, &v)) {
    if (v >= BIG) return step > 0 ? d : kc_dim_sub(g, d, 1);
    if (v <= -BIG) return step > 0 ? 0 : kc_dim_int(g, -1);
    if (v == 0 || kc_dim_const(g, d, &lo)) return v < 0 ? kc_dim_add(g, d, kc_dim_int(g, v)) : b;
    if (v > 0) /* v <= d (d-1 backwards) */
      req[(*nreq)++] = kc_dim_sub(g, d, kc_dim_int(g, v + (step < 0)));
    else /* d+v >= 0 (>= -1 for the end going backwards) */
      req[(*nreq)++] = kc_dim_add(g, d, kc_dim_int(g, v + (step < 0 && is_end)));
    return v < 0 ? kc_dim_add(g, d, kc_dim_int(g, v)) : b;
  }
  kc_dim hi = step > 0 ? d : kc_dim_sub(g, d, 1), nb = kc_dim_mul(g, kc_dim_int(g, -1), b);
  if (kc_dim_lower(g, kc_dim_sub(g, b, hi), &lo) && lo >= 0) return hi;
  bool nonneg = kc_dim_lower(g, b, &lo) && lo >= 0;
  if (!nonneg && kc_dim_lower(g, nb, &lo) && lo >= 0) {
    /* -S (x[-S:]): from the end, as a negative constant; S = 0 would mean the start instead */
    req[(*nreq)++] = kc_dim_sub(g, nb, 1);
    req[(*nreq)++] = kc_dim_add(g, kc_dim_add(g, d, b), step < 0 && is_end);
    return kc_dim_add(g, d, b);
  }
  req[(*nreq)++] = b; /* taken as counting from the start */
  req[(*nreq)++] = kc_dim_sub(g, hi, b);
  return b;
}

/* Size of slice [start, end) by step on dim d (one of d, start, end symbolic). */
static kc_dim slice_sym(kc_graph *g, kc_dim d, kc_dim start, kc_dim end, int64_t step) {
  kc_dim req[2];
  int nreq;
  kc_dim s = slice_bound(g, d, start, step, false, req, &nreq);
  kc_dim e = slice_bound(g, d, end, step, true, req, &nreq);
  kc_dim span = step > 0 ? kc_dim_sub(g, e, s) : kc_dim_sub(g, s, e);
  int64_t st = step > 0 ? step : -step, v;
  kc_dim r = st == 1 ? span : kc_dim_div(g, kc_dim_add(g, span, st - 1), st);
  return kc_dim_const(g, r, &v) && v < 0 ? 0 : r;
}

uint32_t kc_slice_requirements(kc_graph *g, const kc_node *n, kc_dim *req, int *axis,
                               uint32_t max) {
  const kc_value *x = kc_value_of(g, n->in[0]);
  uint32_t ns, ne, na = 0, nst = 0, nreq = 0;
  const kc_dim *st = kc_value_known(g, n->in[1], &ns), *en = kc_value_known(g, n->in[2], &ne);
  int64_t axes[KC_KNOWN_MAX], steps[KC_KNOWN_MAX];
  bool has_axes = kc_shp_in(g, n, 3), has_steps = kc_shp_in(g, n, 4);
  if (!st || !en || ne != ns ||
      (has_axes && (!kc_shp_known_ints(g, n->in[3], axes, KC_KNOWN_MAX, &na) || na != ns)) ||
      (has_steps && (!kc_shp_known_ints(g, n->in[4], steps, KC_KNOWN_MAX, &nst) || nst != ns)))
    return 0;
  for (uint32_t i = 0; i < ns; i++) {
    int64_t a = has_axes ? axes[i] : (int64_t)i, vs, ve;
    if (a < 0) a += x->rank;
    if (a < 0 || a >= x->rank) continue;
    int64_t step = has_steps ? steps[i] : 1;
    kc_dim d = x->dims[a];
    if (!KC_DIM_IS_SYM(d) && kc_dim_const(g, st[i], &vs) && kc_dim_const(g, en[i], &ve))
      continue; /* all integers: clamped exactly */
    kc_dim m[4];
    int n0, n1;
    slice_bound(g, d, st[i], step, false, m, &n0);
    slice_bound(g, d, en[i], step, true, m + n0, &n1);
    for (int k = 0; k < n0 + n1; k++) {
      int64_t lo;
      if (kc_dim_lower(g, m[k], &lo) && lo >= 0) continue; /* holds for every size */
      if (nreq < max) {
        req[nreq] = m[k];
        axis[nreq++] = (int)a;
      }
    }
  }
  return nreq;
}

kc_status shape_slice(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  for (uint32_t i = 1; s == KC_OK && i < n->nin; i++) {
    s = kc_shp_need_int(g, n, i);
    if (s == KC_OK) s = kc_shp_need_rank(g, n, i, 1, 1);
  }
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  kc_dim dims[KC_MAX_RANK];
  memcpy(dims, x->dims, sizeof dims);
  uint32_t ns, ne, na = 0, nst = 0;
  const kc_dim *st = kc_value_known(g, n->in[1], &ns), *en = kc_value_known(g, n->in[2], &ne);
  int64_t axes[KC_KNOWN_MAX], steps[KC_KNOWN_MAX];
  bool has_axes = kc_shp_in(g, n, 3), has_steps = kc_shp_in(g, n, 4);
  bool axes_ok = !has_axes || kc_shp_known_ints(g, n->in[3], axes, KC_KNOWN_MAX, &na);
  bool steps_ok = !has_steps || kc_shp_known_ints(g, n->in[4], steps, KC_KNOWN_MAX, &nst);
  if (!st || !en || !axes_ok || !steps_ok) {
    /* the sliced axes lose their sizes; when even the axes are unknown, every axis does */
    for (int i = 0; i < x->rank; i++)
      if (!axes_ok || !has_axes) dims[i] = kc_dim_fresh(g);
    for (uint32_t i = 0; axes_ok && has_axes && i < na; i++) {
      int a;
      if ((s = kc_shp_axis(g, n, "axis", axes[i], x->rank, &a)) != KC_OK) return s;
      dims[a] = kc_dim_fresh(g);
    }
    kc_shp_set(g, n, 0, x->dtype, x->rank, dims);
    return KC_OK;
  }
  if (ne != ns || (has_axes && na != ns) || (has_steps && nst != ns))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "starts, ends, axes and steps differ in length");
  bool seen[KC_MAX_RANK] = {0};
  int64_t first = 0; /* of axis 0, for known contents */
  int64_t stride0 = 1;
  for (uint32_t i = 0; i < ns; i++) {
    int a = (int)i;
    if (has_axes && (s = kc_shp_axis(g, n, "axis", axes[i], x->rank, &a)) != KC_OK) return s;
    if (!has_axes && a >= x->rank)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "%u starts for rank %d", ns, x->rank);
    if (seen[a]) return kc_node_errorf(g, n, KC_ERR_SHAPE, "axis %d repeated", a);
    seen[a] = true;
    int64_t step = has_steps ? steps[i] : 1, vs, ve;
    if (step == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "step 0 on axis %d", a);
    bool ints = kc_dim_const(g, st[i], &vs) && kc_dim_const(g, en[i], &ve);
    if (ints && !KC_DIM_IS_SYM(x->dims[a])) {
      int64_t f;
      dims[a] = slice_int(x->dims[a], vs, ve, step, &f);
      if (a == 0) {
        first = f;
        stride0 = step;
      }
    } else {
      dims[a] = slice_sym(g, x->dims[a], st[i], en[i], step);
      if (a == 0) first = -1;
    }
  }
  kc_shp_set(g, n, 0, x->dtype, x->rank, dims);
  /* known contents of a sliced 1-D value */
  uint32_t nk;
  const kc_dim *k = kc_value_known(g, n->in[0], &nk);
  if (k && x->rank == 1 && nk == (uint32_t)x->dims[0] && first >= 0 && !KC_DIM_IS_SYM(dims[0])) {
    kc_dim out[KC_KNOWN_MAX];
    for (int64_t i = 0; i < dims[0]; i++)
      out[i] = k[first + i * stride0];
    kc_shp_set_known(g, n, 0, (uint32_t)dims[0], out);
  }
  return KC_OK;
}
