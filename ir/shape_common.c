/*
 * ir/shape_common.c - helpers shared by the shape functions (see ir/shape.h): arity, output
 * typing, axis normalization, broadcasting, dtype checks and reading known contents.
 *
 * Broadcasting with symbolic dims follows numpy: 1 broadcasts; equal dims match; two different
 * integers are an error; otherwise the dims may still be equal at run time, so the result takes
 * an integer over a symbol (the only size that can be right) and else the first operand, and the
 * operand not taken must broadcast to it: an assumption (kc_shp_assume) the run checks.
 */
#include "shape.h"

#include <math.h>
#include <string.h>

kc_status kc_shp_arity(kc_graph *g, const kc_node *n) {
  const kc_op_info *op = &kc_ops[n->op];
  if (n->nin < (uint32_t)op->min_in || (op->max_in >= 0 && n->nin > (uint32_t)op->max_in))
    return kc_node_errorf(g, n, KC_ERR_VERIFY, "%u inputs, expected %d..%d", n->nin, op->min_in,
                          op->max_in);
  if (n->nout < (uint32_t)op->min_out || (op->max_out >= 0 && n->nout > (uint32_t)op->max_out))
    return kc_node_errorf(g, n, KC_ERR_VERIFY, "%u outputs, expected %d..%d", n->nout, op->min_out,
                          op->max_out);
  for (int i = 0; i < op->min_in; i++)
    if (!n->in[i].id) return kc_node_errorf(g, n, KC_ERR_VERIFY, "required input %d is absent", i);
  return KC_OK;
}

const kc_value *kc_shp_in(const kc_graph *g, const kc_node *n, uint32_t i) {
  return i < n->nin && n->in[i].id ? kc_value_of(g, n->in[i]) : NULL;
}

void kc_shp_set(kc_graph *g, const kc_node *n, uint32_t i, kc_dtype t, int rank,
                const kc_dim *dims) {
  if (i >= n->nout || !n->out[i].id) return;
  KC_ASSERT(rank >= 0 && rank <= KC_MAX_RANK);
  kc_value *v = kc_value_of(g, n->out[i]);
  v->dtype = t;
  v->rank = rank;
  for (int d = 0; d < rank; d++)
    v->dims[d] = dims[d];
  v->known = NULL;
  v->nknown = 0;
}

void kc_shp_set_like(kc_graph *g, const kc_node *n, uint32_t i, kc_val v) {
  const kc_value *src = kc_value_of(g, v);
  kc_dim dims[KC_MAX_RANK];
  memcpy(dims, src->dims, sizeof dims);
  kc_shp_set(g, n, i, src->dtype, src->rank, dims);
}

void kc_shp_set_known(kc_graph *g, const kc_node *n, uint32_t i, uint32_t cnt, const kc_dim *v) {
  if (i >= n->nout || !n->out[i].id || cnt > KC_KNOWN_MAX) return;
  kc_dim *k = kc_arena_memdup(&g->arena, v, (cnt ? cnt : 1) * sizeof *v);
  if (!k) return; /* known values are an optimization: losing them is not an error */
  kc_value *val = kc_value_of(g, n->out[i]);
  val->known = k;
  val->nknown = cnt;
}

kc_status kc_shp_axis(kc_graph *g, const kc_node *n, const char *what, int64_t axis, int rank,
                      int *out) {
  int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "%s %lld out of range for rank %d", what,
                          (long long)axis, rank);
  *out = (int)a;
  return KC_OK;
}

void kc_shp_assume(kc_graph *g, int kind, kc_dim a, kc_dim b) {
  if (a == b || (kind == KC_ASSUME_BCAST && a == 1)) return;
  if (g->assume && g->infer_node) g->assume(g->assume_user, g->infer_node, kind, a, b);
}

bool kc_shp_dims_match(kc_graph *g, kc_dim a, kc_dim b) {
  if (a == b) return true;
  if (!KC_DIM_IS_SYM(a) && !KC_DIM_IS_SYM(b)) return false;
  kc_shp_assume(g, KC_ASSUME_EQ, a, b);
  return true;
}

kc_status kc_shp_bcast(kc_graph *g, const kc_node *n, int ra, const kc_dim *da, int rb,
                       const kc_dim *db, int *rank, kc_dim *dims) {
  int r = ra > rb ? ra : rb;
  kc_dim out[KC_MAX_RANK];
  for (int i = 0; i < r; i++) {
    kc_dim a = i < r - ra ? 1 : da[i - (r - ra)];
    kc_dim b = i < r - rb ? 1 : db[i - (r - rb)];
    if (a == b || b == 1) {
      out[i] = a;
    } else if (a == 1) {
      out[i] = b;
    } else if (!KC_DIM_IS_SYM(a) && !KC_DIM_IS_SYM(b)) {
      char sa[256], sb[256];
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "cannot broadcast %s with %s",
                            kc_shp_fmt(g, ra, da, sa, sizeof sa),
                            kc_shp_fmt(g, rb, db, sb, sizeof sb));
    } else {
      out[i] = KC_DIM_IS_SYM(a) && !KC_DIM_IS_SYM(b) ? b : a;
      kc_shp_assume(g, KC_ASSUME_BCAST, out[i] == a ? b : a, out[i]);
    }
  }
  *rank = r;
  memcpy(dims, out, (size_t)r * sizeof *dims);
  return KC_OK;
}

kc_status kc_shp_bcast_to(kc_graph *g, const kc_node *n, uint32_t i, int rank, const kc_dim *dims) {
  const kc_value *v = kc_shp_in(g, n, i);
  if (!v) return KC_OK;
  bool ok = v->rank <= rank;
  for (int d = 0; ok && d < v->rank; d++) {
    kc_dim a = v->dims[v->rank - 1 - d], b = dims[rank - 1 - d];
    ok = a == 1 || a == b || KC_DIM_IS_SYM(a) || KC_DIM_IS_SYM(b);
    if (ok) kc_shp_assume(g, KC_ASSUME_BCAST, a, b);
  }
  if (ok) return KC_OK;
  char sa[256], sb[256];
  return kc_node_errorf(g, n, KC_ERR_SHAPE, "input %u (%%%u) of shape %s does not broadcast to %s",
                        i, n->in[i].id, kc_shp_fmt(g, v->rank, v->dims, sa, sizeof sa),
                        kc_shp_fmt(g, rank, dims, sb, sizeof sb));
}

static kc_status need(kc_graph *g, const kc_node *n, uint32_t i, bool ok, const char *what) {
  if (ok) return KC_OK;
  return kc_node_errorf(g, n, KC_ERR_TYPE, "input %u (%%%u) is %s, expected %s", i, n->in[i].id,
                        kc_dtype_name(kc_value_of(g, n->in[i])->dtype), what);
}

kc_status kc_shp_need_float(kc_graph *g, const kc_node *n, uint32_t i) {
  const kc_value *v = kc_shp_in(g, n, i);
  return v ? need(g, n, i, kc_dtype_is_float(v->dtype), "a float type") : KC_OK;
}

kc_status kc_shp_need_numeric(kc_graph *g, const kc_node *n, uint32_t i) {
  const kc_value *v = kc_shp_in(g, n, i);
  return v ? need(g, n, i, kc_dtype_is_float(v->dtype) || kc_dtype_is_int(v->dtype),
                  "a numeric type")
           : KC_OK;
}

kc_status kc_shp_need_int(kc_graph *g, const kc_node *n, uint32_t i) {
  const kc_value *v = kc_shp_in(g, n, i);
  return v ? need(g, n, i, v->dtype == KC_I64 || v->dtype == KC_I32, "i64 or i32") : KC_OK;
}

kc_status kc_shp_need_dtype(kc_graph *g, const kc_node *n, uint32_t i, kc_dtype t) {
  const kc_value *v = kc_shp_in(g, n, i);
  return v ? need(g, n, i, v->dtype == t, kc_dtype_name(t)) : KC_OK;
}

kc_status kc_shp_same_dtype(kc_graph *g, const kc_node *n, uint32_t i, uint32_t j) {
  const kc_value *a = kc_shp_in(g, n, i), *b = kc_shp_in(g, n, j);
  if (!a || !b || a->dtype == b->dtype) return KC_OK;
  return kc_node_errorf(g, n, KC_ERR_TYPE, "input %u (%%%u) is %s but input %u (%%%u) is %s", i,
                        n->in[i].id, kc_dtype_name(a->dtype), j, n->in[j].id,
                        kc_dtype_name(b->dtype));
}

kc_status kc_shp_need_rank(kc_graph *g, const kc_node *n, uint32_t i, int lo, int hi) {
  const kc_value *v = kc_shp_in(g, n, i);
  if (!v || (v->rank >= lo && v->rank <= hi)) return KC_OK;
  if (lo == hi)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "input %u (%%%u) has rank %d, expected %d", i,
                          n->in[i].id, v->rank, lo);
  return kc_node_errorf(g, n, KC_ERR_SHAPE, "input %u (%%%u) has rank %d, expected %d..%d", i,
                        n->in[i].id, v->rank, lo, hi);
}

bool kc_shp_known_ints(const kc_graph *g, kc_val v, int64_t *out, uint32_t max, uint32_t *n) {
  uint32_t cnt;
  const kc_dim *k = kc_value_known(g, v, &cnt);
  if (!k || cnt > max) return false;
  for (uint32_t i = 0; i < cnt; i++)
    if (!kc_dim_const(g, k[i], &out[i])) return false;
  *n = cnt;
  return true;
}

/* Element 0 of a constant tensor's data as a double. */
static bool tensor_scalar(const kc_tensor *t, double *out) {
  if (!t->data || t->nbytes != kc_dtype_size(t->dtype)) return false;
  const void *p = t->data;
  switch (t->dtype) {
  case KC_F32: *out = *(const float *)p; return true;
  case KC_F64: *out = *(const double *)p; return true;
  case KC_F16: *out = kc_f16_to_f32(*(const uint16_t *)p); return true;
  case KC_BF16: *out = kc_bf16_to_f32(*(const uint16_t *)p); return true;
  case KC_I64: *out = (double)*(const int64_t *)p; return true;
  case KC_I32: *out = *(const int32_t *)p; return true;
  case KC_I16: *out = *(const int16_t *)p; return true;
  case KC_I8: *out = *(const int8_t *)p; return true;
  case KC_U64: *out = (double)*(const uint64_t *)p; return true;
  case KC_U32: *out = *(const uint32_t *)p; return true;
  case KC_U16: *out = *(const uint16_t *)p; return true;
  case KC_U8:
  case KC_BOOL: *out = *(const uint8_t *)p; return true;
  default: return false;
  }
}

bool kc_shp_scalar(const kc_graph *g, kc_val v, double *out) {
  int64_t k;
  uint32_t cnt;
  if (kc_shp_known_ints(g, v, &k, 1, &cnt) && cnt == 1) {
    *out = (double)k;
    return true;
  }
  const kc_value *val = kc_value_of(g, v);
  if (!val->def) return false;
  const kc_node *d = &g->nodes[val->def - 1];
  const kc_attr *a = d->op == KC_OP_CONSTANT ? kc_node_attr(d, "value") : NULL;
  if (!a || a->kind != KC_ATTR_TENSOR || a->u.tensor >= g->ntensors) return false;
  return tensor_scalar(&g->tensors[a->u.tensor], out);
}

int64_t kc_shp_len(const kc_graph *g, const kc_node *n, uint32_t i) {
  const kc_value *v = kc_shp_in(g, n, i);
  if (!v) return -1;
  if (v->rank == 0) return 1;
  return v->rank == 1 && !KC_DIM_IS_SYM(v->dims[0]) ? v->dims[0] : -1;
}

kc_dim kc_shp_prod(kc_graph *g, int rank, const kc_dim *dims) {
  kc_dim p = 1;
  for (int i = 0; i < rank; i++)
    p = kc_dim_mul(g, p, dims[i]);
  return p;
}

void kc_shp_fresh(kc_graph *g, int rank, kc_dim *dims) {
  for (int i = 0; i < rank; i++)
    dims[i] = kc_dim_fresh(g);
}

const char *kc_shp_fmt(const kc_graph *g, int rank, const kc_dim *dims, char *buf, size_t size) {
  size_t len = 0;
  if (size < 2) return buf;
  buf[len++] = '[';
  for (int i = 0; i < rank && len + 1 < size; i++) {
    if (i && len + 1 < size) buf[len++] = ',';
    kc_dim_str(g, dims[i], buf + len, size - len);
    len += strlen(buf + len);
  }
  if (len + 1 < size) buf[len++] = ']';
  buf[len] = 0;
  return buf;
}

kc_status kc_shp_rank_unknown(kc_graph *g, const kc_node *n, uint32_t i, const char *what) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                        "the output rank depends on the contents of input %u (%%%u, %s), "
                        "which are not known when compiling",
                        i, i < n->nin ? n->in[i].id : 0, what);
}

bool kc_shp_tracked(kc_dtype t) {
  return kc_dtype_is_int(t) || kc_dtype_is_float(t) || t == KC_BOOL;
}

bool kc_shp_exact_range(kc_dtype t, int64_t *lo, int64_t *hi) {
  switch (t) {
  case KC_I64: *lo = INT64_MIN, *hi = INT64_MAX; return true;
  case KC_U64: *lo = 0, *hi = INT64_MAX; return true; /* known values are int64 */
  case KC_I32: *lo = INT32_MIN, *hi = INT32_MAX; return true;
  case KC_U32: *lo = 0, *hi = UINT32_MAX; return true;
  case KC_F32: *lo = -(INT64_C(1) << 24), *hi = INT64_C(1) << 24; return true;
  case KC_F64: *lo = -(INT64_C(1) << 53), *hi = INT64_C(1) << 53; return true;
  default: return false;
  }
}

/* A double holding an integer value as an int64, when it is one and fits. */
static bool integral(double x, int64_t *out) {
  if (!(x == floor(x) && x >= -9223372036854775808.0 && x < 9223372036854775808.0)) return false;
  *out = (int64_t)x;
  return true;
}

bool kc_shp_fit(kc_graph *g, kc_dtype t, kc_dim v, kc_dim *out) {
  int64_t c, lo, hi;
  if (!kc_dim_const(g, v, &c)) {
    if (t == KC_BOOL) { /* v != 0, decided when v is provably positive */
      if (!kc_dim_lower(g, v, &lo) || lo < 1) return false;
      *out = 1;
      return true;
    }
    if (!kc_shp_exact_range(t, &lo, &hi)) return false;
    *out = v;
    return true;
  }
  int64_t r;
  switch (t) {
  case KC_I64: r = c; break;
  case KC_I32: r = (int32_t)(uint32_t)(uint64_t)c; break; /* two's complement wrap */
  case KC_I16: r = (int16_t)(uint16_t)(uint64_t)c; break;
  case KC_I8: r = (int8_t)(uint8_t)(uint64_t)c; break;
  case KC_U32: r = (uint32_t)(uint64_t)c; break;
  case KC_U16: r = (uint16_t)(uint64_t)c; break;
  case KC_U8: r = (uint8_t)(uint64_t)c; break;
  case KC_U64:
    if (c < 0) return false; /* beyond int64 */
    r = c;
    break;
  case KC_BOOL: r = c != 0; break;
  /* f16/bf16 kernels compute in f32 and round on store: the same two roundings here */
  case KC_F32:
    if (!integral((float)c, &r)) return false;
    break;
  case KC_F64:
    if (!integral((double)c, &r)) return false;
    break;
  case KC_F16:
    if (!integral(kc_f16_to_f32(kc_f32_to_f16((float)c)), &r)) return false;
    break;
  case KC_BF16:
    if (!integral(kc_bf16_to_f32(kc_f32_to_bf16((float)c)), &r)) return false;
    break;
  default: return false;
  }
  *out = kc_dim_int(g, r);
  return true;
}
