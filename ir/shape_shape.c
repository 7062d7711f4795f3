/*
 * ir/shape_shape.c - shape functions of sources and shape computations: weight, constant,
 * shape, constant_of_shape, range.
 *
 * These are where known contents start: a small constant or weight with data whose elements
 * are integers (ONNX initializers often hold axes, indices and shapes; float ones the 0.0 and
 * 1.0 of a float Range) knows its data, shape knows its input's dims (symbols included), range
 * and constant_of_shape know what they generate.
 * A weight's type is printed in the text form and set by the builder, so it is kept, not
 * inferred; the tensor of the same name is a fallback and must agree when both exist.
 */
#include "shape.h"

#include <math.h>
#include <string.h>

/* Element i of t's data as an int64, when it holds an integer value (any dtype). */
static bool element_int(const kc_tensor *t, size_t i, int64_t *out) {
  const void *p = (const char *)t->data + i * kc_dtype_size(t->dtype);
  double x;
  switch (t->dtype) {
  case KC_I64: *out = *(const int64_t *)p; return true;
  case KC_I32: *out = *(const int32_t *)p; return true;
  case KC_I16: *out = *(const int16_t *)p; return true;
  case KC_I8: *out = *(const int8_t *)p; return true;
  case KC_U32: *out = *(const uint32_t *)p; return true;
  case KC_U16: *out = *(const uint16_t *)p; return true;
  case KC_U8: *out = *(const uint8_t *)p; return true;
  case KC_BOOL: *out = *(const uint8_t *)p != 0; return true;
  case KC_U64:
    if (*(const uint64_t *)p > INT64_MAX) return false;
    *out = (int64_t) * (const uint64_t *)p;
    return true;
  case KC_F32: x = *(const float *)p; break;
  case KC_F64: x = *(const double *)p; break;
  case KC_F16: x = kc_f16_to_f32(*(const uint16_t *)p); break;
  case KC_BF16: x = kc_bf16_to_f32(*(const uint16_t *)p); break;
  default: return false;
  }
  if (!(x == floor(x) && fabs(x) < 9007199254740992.0)) return false; /* NaN fails too */
  *out = (int64_t)x;
  return true;
}

/* Known contents of a small tensor's data, when every element is an integer value. */
static void tensor_known(kc_graph *g, const kc_node *n, const kc_tensor *t) {
  if (!kc_shp_tracked(t->dtype) || !t->data) return;
  size_t numel = t->nbytes / kc_dtype_size(t->dtype);
  if (numel > KC_KNOWN_MAX) return;
  kc_dim k[KC_KNOWN_MAX];
  for (size_t i = 0; i < numel; i++) {
    int64_t v;
    if (!element_int(t, i, &v)) return;
    k[i] = kc_dim_int(g, v);
  }
  kc_shp_set_known(g, n, 0, (uint32_t)numel, k);
}

static const kc_tensor *tensor_named(const kc_graph *g, const char *name) {
  for (uint32_t i = 0; name && i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
  return NULL;
}

/* The tensor of attribute `value`, NULL when absent; KC_ERR_VERIFY when it is malformed. */
static kc_status value_tensor(kc_graph *g, const kc_node *n, const kc_tensor **out) {
  const kc_attr *a = kc_node_attr(n, "value");
  *out = NULL;
  if (!a) return KC_OK;
  if (a->kind != KC_ATTR_TENSOR || a->u.tensor >= g->ntensors)
    return kc_node_errorf(g, n, KC_ERR_VERIFY, "attribute 'value' is not a tensor");
  *out = &g->tensors[a->u.tensor];
  return KC_OK;
}

kc_status shape_source(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  kc_value *o = kc_value_of(g, n->out[0]);
  if (n->op == KC_OP_CONSTANT) {
    const kc_tensor *t;
    if ((s = value_tensor(g, n, &t)) != KC_OK) return s;
    if (!t) return kc_node_errorf(g, n, KC_ERR_VERIFY, "attribute 'value' is missing");
    kc_shp_set(g, n, 0, t->dtype, t->rank, t->dims);
    tensor_known(g, n, t);
    return KC_OK;
  }
  const char *name = kc_node_string(n, "name", NULL);
  const kc_tensor *t = tensor_named(g, name);
  if (o->rank < 0 || o->dtype == KC_DT_NONE) {
    if (!t) return kc_node_errorf(g, n, KC_ERR_TYPE, "weight '%s' has no type", name ? name : "");
    kc_shp_set(g, n, 0, t->dtype, t->rank, t->dims);
    tensor_known(g, n, t);
    return KC_OK;
  }
  if (!t) return KC_OK; /* a weight bound later (e.g. from a .kir file) */
  bool same = t->dtype == o->dtype && t->rank == o->rank;
  for (int i = 0; same && i < t->rank; i++)
    same = t->dims[i] == o->dims[i];
  /* small integer initializers (Unsqueeze axes, Gather indices, Reshape shapes) feed shapes */
  if (same) return tensor_known(g, n, t), KC_OK;
  char sa[256], sb[256];
  return kc_node_errorf(g, n, KC_ERR_SHAPE, "weight '%s' is %s%s but its data is %s%s", name,
                        kc_dtype_name(o->dtype), kc_shp_fmt(g, o->rank, o->dims, sa, sizeof sa),
                        kc_dtype_name(t->dtype), kc_shp_fmt(g, t->rank, t->dims, sb, sizeof sb));
}

kc_status shape_shape(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  int64_t r = x->rank, start = kc_node_int(n, "start", 0), end = kc_node_int(n, "end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = start < 0 ? 0 : start > r ? r : start;
  end = end < 0 ? 0 : end > r ? r : end;
  if (end < start) end = start;
  kc_dim len = end - start, k[KC_MAX_RANK];
  memcpy(k, x->dims + start, (size_t)len * sizeof *k);
  kc_shp_set(g, n, 0, KC_I64, 1, &len);
  kc_shp_set_known(g, n, 0, (uint32_t)len, k);
  return KC_OK;
}

kc_status shape_constant_of_shape(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 0, KC_I64);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 0, 1, 1);
  const kc_tensor *t = NULL;
  if (s == KC_OK) s = value_tensor(g, n, &t);
  if (s != KC_OK) return s;
  if (t && t->nbytes != kc_dtype_size(t->dtype))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "attribute 'value' must hold one element");
  kc_dtype dt = t ? t->dtype : KC_F32;
  uint32_t cnt;
  const kc_dim *shape = kc_value_known(g, n->in[0], &cnt);
  kc_dim dims[KC_MAX_RANK];
  if (!shape) {
    int64_t len = kc_shp_len(g, n, 0);
    if (len < 0) return kc_shp_rank_unknown(g, n, 0, "the shape");
    if (len > KC_MAX_RANK)
      return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "result rank %lld over %d", (long long)len,
                            KC_MAX_RANK);
    kc_shp_fresh(g, (int)len, dims);
    kc_shp_set(g, n, 0, dt, (int)len, dims);
    return KC_OK;
  }
  if (cnt > KC_MAX_RANK)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "result rank %u over %d", cnt, KC_MAX_RANK);
  for (uint32_t i = 0; i < cnt; i++) {
    int64_t v;
    if (kc_dim_const(g, shape[i], &v) && v < 0)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "shape entry %u is %lld", i, (long long)v);
    dims[i] = shape[i];
  }
  kc_shp_set(g, n, 0, dt, (int)cnt, dims);
  int64_t numel, fill = 0;
  if (kc_shp_tracked(dt) && kc_dim_const(g, kc_shp_prod(g, (int)cnt, dims), &numel) &&
      numel <= KC_KNOWN_MAX && (!t || (t->data && element_int(t, 0, &fill)))) {
    kc_dim k[KC_KNOWN_MAX];
    for (int64_t i = 0; i < numel; i++)
      k[i] = kc_dim_int(g, fill);
    kc_shp_set_known(g, n, 0, (uint32_t)numel, k);
  }
  return KC_OK;
}

/*
 * Element count of range(start, limit, delta): max(ceil((limit - start) / delta), 0) from known
 * values (integers, or integer-valued floats: the exact formula), else from constant scalars. A
 * symbolic count whose sign is not provable (max(., 0) has no dim form) is left unknown.
 */
static kc_status range_count(kc_graph *g, kc_node *n, kc_dim *count) {
  const kc_dim *k[3];
  uint32_t nk;
  bool known = true;
  for (int i = 0; i < 3; i++) {
    k[i] = kc_value_known(g, n->in[i], &nk);
    known = known && k[i] && nk == 1;
  }
  static const char *const names[3] = {"start", "limit", "delta"};
  int64_t delta, c[3];
  if (known && kc_dim_const(g, k[2][0], &delta) && delta != INT64_MIN) {
    if (delta == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "delta is 0");
    /* limit - start must be an int64 (the element count is computed from it); a symbolic side
     * against INT64_MIN would be negated, which no int64 holds */
    bool c0 = kc_dim_const(g, k[0][0], &c[0]), c1 = kc_dim_const(g, k[1][0], &c[1]);
    int64_t span_v;
    if (c0 && c1 && __builtin_sub_overflow(c[1], c[0], &span_v))
      return kc_node_errorf(g, n, KC_ERR_SHAPE,
                            "limit %lld - start %lld does not fit in int64: the element count "
                            "cannot be computed",
                            (long long)c[1], (long long)c[0]);
    for (int i = 0; i < 2; i++)
      if ((i ? c1 : c0) && !(c0 && c1) && c[i] == INT64_MIN)
        return kc_node_errorf(g, n, KC_ERR_SHAPE,
                              "%s is %lld (INT64_MIN) and the other bound is computed: the "
                              "element count cannot be computed in int64",
                              names[i], (long long)c[i]);
    int64_t st = delta > 0 ? delta : -delta, v, lo;
    if (c0 && c1) { /* in int64, without the symbolic algebra's negation of INT64_MIN */
      if (delta < 0 && span_v == INT64_MIN)
        return kc_node_errorf(g, n, KC_ERR_SHAPE,
                              "start %lld - limit %lld does not fit in int64: the element count "
                              "cannot be computed",
                              (long long)c[0], (long long)c[1]);
      int64_t span = delta > 0 ? span_v : -span_v;
      *count = kc_dim_int(g, span <= 0 ? 0 : span / st + (span % st != 0));
      return KC_OK;
    }
    kc_dim span = delta > 0 ? kc_dim_sub(g, k[1][0], k[0][0]) : kc_dim_sub(g, k[0][0], k[1][0]);
    *count = st == 1 ? span : kc_dim_div(g, kc_dim_add(g, span, st - 1), st);
    if (kc_dim_const(g, *count, &v)) {
      if (v < 0) *count = 0;
    } else if (!kc_dim_lower(g, span, &lo) || lo < 0) {
      *count = kc_dim_fresh(g);
    }
    return KC_OK;
  }
  double s, l, d;
  if (kc_shp_scalar(g, n->in[0], &s) && kc_shp_scalar(g, n->in[1], &l) &&
      kc_shp_scalar(g, n->in[2], &d)) {
    double v[3] = {s, l, d};
    for (int i = 0; i < 3; i++) /* an infinite or NaN bound gives no element count */
      if (!isfinite(v[i]))
        return kc_node_errorf(g, n, KC_ERR_SHAPE, "%s is %s", names[i],
                              isnan(v[i]) ? "nan"
                              : v[i] > 0  ? "inf"
                                          : "-inf");
    if (d == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "delta is 0");
    double cnt = ceil((l - s) / d);
    if (!(cnt < 0x1p62)) /* also catches an overflow of l - s to inf */
      return kc_node_errorf(g, n, KC_ERR_SHAPE,
                            "(limit %g - start %g) / delta %g = %g elements: too many", l, s, d,
                            cnt);
    *count = cnt > 0 ? (kc_dim)cnt : 0;
    return KC_OK;
  }
  *count = kc_dim_fresh(g);
  return KC_OK;
}

/* The compute type of a range kernel over t (f16/bf16 compute in f32, codegen's rule). */
static kc_dtype compute_type(kc_dtype t) { return t == KC_F16 || t == KC_BF16 ? KC_F32 : t; }

kc_status shape_range(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_numeric(g, n, 0);
  for (uint32_t i = 0; s == KC_OK && i < 3; i++) {
    const kc_value *v = kc_value_of(g, n->in[i]);
    s = kc_shp_same_dtype(g, n, 0, i);
    if (s == KC_OK && !(v->rank == 0 || (v->rank == 1 && v->dims[0] == 1)))
      s = kc_node_errorf(g, n, KC_ERR_SHAPE, "input %u (%%%u) must be a scalar", i, n->in[i].id);
  }
  kc_dim count;
  if (s == KC_OK) s = range_count(g, n, &count);
  if (s != KC_OK) return s;
  kc_dtype t = kc_value_of(g, n->in[0])->dtype;
  kc_shp_set(g, n, 0, t, 1, &count);
  /* known contents: start + i*delta as the kernel computes it (product, sum, then the store) */
  uint32_t n0, n2;
  const kc_dim *k0 = kc_value_known(g, n->in[0], &n0), *k2 = kc_value_known(g, n->in[2], &n2);
  int64_t delta;
  if (!kc_shp_tracked(t) || !k0 || !k2 || n0 != 1 || n2 != 1 || KC_DIM_IS_SYM(count) ||
      count > KC_KNOWN_MAX || !kc_dim_const(g, k2[0], &delta))
    return KC_OK;
  kc_dim k[KC_KNOWN_MAX];
  kc_dtype ct = compute_type(t);
  for (int64_t i = 0; i < count; i++) {
    kc_dim step;
    if (__builtin_mul_overflow(i, delta, &step) || !kc_shp_fit(g, ct, kc_dim_int(g, step), &step) ||
        !kc_shp_fit(g, ct, kc_dim_add(g, k0[0], step), &k[i]) || !kc_shp_fit(g, t, k[i], &k[i]))
      return KC_OK;
  }
  kc_shp_set_known(g, n, 0, (uint32_t)count, k);
  return KC_OK;
}
