/*
 * ir/builder.c - the C builder API of kernc.h: sources (inputs, weights, constants) and one
 * function per op of ir/ops.def.
 *
 * Every call adds one node, sets its attributes (names as in ops.def), and types it with the
 * op's shape function. A failure records the graph's sticky error and returns kc_val{0}; the
 * failed node becomes a NOP, so the graph stays well formed. A kc_val{0} given for a required
 * input is taken as an earlier failure and returns kc_val{0} without a new message (or reports
 * one if no earlier failure explains it). Attributes that mirror a parameter are always set,
 * except where kernc.h gives 0 the meaning "absent" (kv_heads, scale, num_heads) and gelu's
 * approximate, which is set only for the tanh form. A value whose element count or byte size
 * overflows int64 (kc_type_overflows: an input or weight declared so, or a result a shape
 * function computed) is such a failure too, named by the call that made it.
 */
#include "internal.h"
#include "shape.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A float parameter as the double attribute it means: the shortest decimal that reads back to
 * the same float, so eps=1e-5f is stored (and printed) as 1e-05, not 9.99999974737875e-06.
 */
static double as_double(float v) {
  char buf[64];
  kc_fmt_float(buf, sizeof buf, v);
  return strtod(buf, NULL);
}

/* Record a builder failure (the message is already in the context). */
static kc_val fail(kc_graph *g, kc_status s) {
  kc_graph_fail(g, s);
  return (kc_val){0};
}

/* Check input ids; false (with the sticky error set) when a required one is missing. */
static bool inputs_ok(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in, uint32_t nreq) {
  for (uint32_t i = 0; i < nin; i++) {
    if (in[i].id >= g->nvals) {
      fail(g,
           kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "%s: input %u (%%%u) is not a value of graph @%s",
                     kc_ops[op].name, i, in[i].id, g->name));
      return false;
    }
    if (i < nreq && !in[i].id) {
      if (g->sticky == KC_OK)
        fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "%s: required input %u is none",
                          kc_ops[op].name, i));
      return false;
    }
  }
  return true;
}

/*
 * Add node op; trailing absent optional inputs are dropped. Returns the node index, or
 * UINT32_MAX (sticky error set) on failure. outs (nout entries) may be NULL when nout is 1.
 */
static uint32_t begin(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in, uint32_t nreq,
                      uint32_t nout, kc_val *outs) {
  if (!inputs_ok(g, op, nin, in, nreq)) return UINT32_MAX;
  while (nin > nreq && !in[nin - 1].id)
    nin--;
  kc_val one;
  uint32_t ni = kc_graph_add_node(g, op, nin, in, nout, outs ? outs : &one);
  if (ni == UINT32_MAX) fail(g, KC_ERR_NOMEM);
  return ni;
}

/* A result of node n too large to exist: the error naming the node, else KC_OK. */
static kc_status sizes_ok(kc_graph *g, const kc_node *n) {
  for (uint32_t j = 0; j < n->nout; j++) {
    const kc_value *v = n->out[j].id ? kc_value_of(g, n->out[j]) : NULL;
    if (!v || v->rank < 0 || !kc_type_overflows(g, v->dtype, v->rank, v->dims)) continue;
    char dims[512];
    return kc_node_errorf(
        g, n, KC_ERR_SHAPE, "result %%%u is %s%s: its element count or byte size overflows int64",
        n->out[j].id, kc_dtype_name(v->dtype), kc_shp_fmt(g, v->rank, v->dims, dims, sizeof dims));
  }
  return KC_OK;
}

/* Type node ni; its first output, or kc_val{0} after turning the node into a NOP. */
static kc_val finish(kc_graph *g, uint32_t ni) {
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_status s = kc_node_infer(g, ni);
  if (s == KC_OK) s = sizes_ok(g, &g->nodes[ni]);
  if (s != KC_OK) {
    g->nodes[ni].op = KC_OP_NOP;
    return fail(g, s);
  }
  return g->nodes[ni].out[0];
}

/* A node with no attributes. */
static kc_val simple(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in, uint32_t nreq) {
  return finish(g, begin(g, op, nin, in, nreq, 1, NULL));
}

static kc_val unary(kc_graph *g, kc_op op, kc_val x) { return simple(g, op, 1, &x, 1); }

static kc_val binary(kc_graph *g, kc_op op, kc_val a, kc_val b) {
  kc_val in[2] = {a, b};
  return simple(g, op, 2, in, 2);
}

/* ---- sources ------------------------------------------------------------------------------- */

/* The sticky error for a tensor type too large to exist (what: "input 'x'", "weight" ...). */
static kc_status too_big(kc_graph *g, const char *what, kc_dtype t, int rank, const kc_dim *dims) {
  char buf[512];
  return kc_errorf(g->ctx, KC_ERR_SHAPE, "%s: %s%s: its element count or byte size overflows int64",
                   what, kc_dtype_name(t), kc_shp_fmt(g, rank, dims, buf, sizeof buf));
}

/* Validate a tensor type given by the caller. */
static bool tensor_type_ok(kc_graph *g, const char *what, kc_dtype t, int rank,
                           const int64_t *dims) {
  kc_status s = KC_OK;
  if (t <= KC_DT_NONE || t >= KC_DT_COUNT)
    s = kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "%s: invalid dtype %d", what, (int)t);
  else if (rank < 0 || rank > KC_MAX_RANK || (rank > 0 && !dims))
    s = kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "%s: rank %d out of range", what, rank);
  for (int i = 0; s == KC_OK && i < rank; i++)
    if (dims[i] < 0)
      s = kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "%s: dim %d is %lld", what, i, (long long)dims[i]);
  if (s == KC_OK && kc_type_overflows(g, t, rank, dims)) s = too_big(g, what, t, rank, dims);
  if (s != KC_OK) fail(g, s);
  return s == KC_OK;
}

kc_val kc_input(kc_graph *g, const char *name, kc_dtype t, int rank, const kc_dim *dims) {
  kc_status s = KC_OK;
  if (t <= KC_DT_NONE || t >= KC_DT_COUNT)
    s = kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "input '%s': invalid dtype %d", name ? name : "",
                  (int)t);
  else if (rank < 0 || rank > KC_MAX_RANK || (rank > 0 && !dims))
    s = kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "input '%s': rank %d out of range", name ? name : "",
                  rank);
  for (int i = 0; s == KC_OK && i < rank; i++)
    if (KC_DIM_IS_SYM(dims[i]) && KC_DIM_EXPR(dims[i]) >= g->ndexprs)
      s = kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "input '%s': dim %d is not a dim of this graph",
                    name ? name : "", i);
  if (s == KC_OK && kc_type_overflows(g, t, rank, dims)) {
    char what[300];
    snprintf(what, sizeof what, "input '%s'", name ? name : "");
    s = too_big(g, what, t, rank, dims);
  }
  if (s != KC_OK) return fail(g, s);
  return kc_graph_add_input(g, name, t, rank, dims);
}

kc_val kc_weight(kc_graph *g, const char *name, kc_dtype t, int rank, const int64_t *dims,
                 const void *data) {
  if (!name || !*name)
    return fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "weight: a weight needs a name"));
  if (!tensor_type_ok(g, "weight", t, rank, dims)) return (kc_val){0};
  for (uint32_t i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0)
      return fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "weight '%s' defined twice", name));
  if (kc_graph_add_tensor(g, name, t, rank, dims, data, true) == UINT32_MAX) return (kc_val){0};
  uint32_t ni = begin(g, KC_OP_WEIGHT, 0, NULL, 0, 1, NULL);
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_node_set_string(g, ni, "name", name);
  kc_value *v = kc_value_of(g, g->nodes[ni].out[0]);
  v->dtype = t;
  v->rank = rank;
  for (int i = 0; i < rank; i++)
    v->dims[i] = dims[i];
  return finish(g, ni);
}

kc_val kc_constant(kc_graph *g, kc_dtype t, int rank, const int64_t *dims, const void *data) {
  if (!tensor_type_ok(g, "constant", t, rank, dims)) return (kc_val){0};
  if (!data) return fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "constant: data is NULL"));
  uint32_t ti = kc_graph_add_tensor(g, NULL, t, rank, dims, data, true);
  if (ti == UINT32_MAX) return (kc_val){0};
  uint32_t ni = begin(g, KC_OP_CONSTANT, 0, NULL, 0, 1, NULL);
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_node_set_tensor(g, ni, "value", ti);
  return finish(g, ni);
}

kc_val kc_const_f32(kc_graph *g, float v) { return kc_constant(g, KC_F32, 0, NULL, &v); }
kc_val kc_const_i64(kc_graph *g, int64_t v) { return kc_constant(g, KC_I64, 0, NULL, &v); }

kc_val kc_const_i64s(kc_graph *g, int n, const int64_t *v) {
  int64_t dims[1] = {n};
  if (n < 0 || (n > 0 && !v))
    return fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "constant: %d values", n));
  static const int64_t none = 0;
  return kc_constant(g, KC_I64, 1, dims, n ? (const void *)v : &none);
}

/* ---- elementwise ----------------------------------------------------------------------------- */

kc_val kc_add(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_ADD, a, b); }
kc_val kc_sub(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_SUB, a, b); }
kc_val kc_mul(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_MUL, a, b); }
kc_val kc_div(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_DIV, a, b); }
kc_val kc_pow(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_POW, a, b); }
kc_val kc_min(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_MIN, a, b); }
kc_val kc_max(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_MAX, a, b); }
kc_val kc_equal(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_EQUAL, a, b); }
kc_val kc_less(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_LESS, a, b); }
kc_val kc_greater(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_GREATER, a, b); }
kc_val kc_and(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_AND, a, b); }
kc_val kc_sqrt(kc_graph *g, kc_val x) { return unary(g, KC_OP_SQRT, x); }
kc_val kc_reciprocal(kc_graph *g, kc_val x) { return unary(g, KC_OP_RECIPROCAL, x); }
kc_val kc_neg(kc_graph *g, kc_val x) { return unary(g, KC_OP_NEG, x); }
kc_val kc_abs(kc_graph *g, kc_val x) { return unary(g, KC_OP_ABS, x); }
kc_val kc_exp(kc_graph *g, kc_val x) { return unary(g, KC_OP_EXP, x); }
kc_val kc_log(kc_graph *g, kc_val x) { return unary(g, KC_OP_LOG, x); }
kc_val kc_erf(kc_graph *g, kc_val x) { return unary(g, KC_OP_ERF, x); }
kc_val kc_tanh(kc_graph *g, kc_val x) { return unary(g, KC_OP_TANH, x); }
kc_val kc_sigmoid(kc_graph *g, kc_val x) { return unary(g, KC_OP_SIGMOID, x); }
kc_val kc_relu(kc_graph *g, kc_val x) { return unary(g, KC_OP_RELU, x); }
kc_val kc_sin(kc_graph *g, kc_val x) { return unary(g, KC_OP_SIN, x); }
kc_val kc_cos(kc_graph *g, kc_val x) { return unary(g, KC_OP_COS, x); }
kc_val kc_not(kc_graph *g, kc_val x) { return unary(g, KC_OP_NOT, x); }
kc_val kc_identity(kc_graph *g, kc_val x) { return unary(g, KC_OP_IDENTITY, x); }

kc_val kc_gelu(kc_graph *g, kc_val x, int tanh_approx) {
  uint32_t ni = begin(g, KC_OP_GELU, 1, &x, 1, 1, NULL);
  if (ni != UINT32_MAX && tanh_approx) kc_node_set_string(g, ni, "approximate", "tanh");
  return finish(g, ni);
}

kc_val kc_clip(kc_graph *g, kc_val x, kc_val lo, kc_val hi) {
  kc_val in[3] = {x, lo, hi};
  return simple(g, KC_OP_CLIP, 3, in, 1);
}

kc_val kc_where(kc_graph *g, kc_val cond, kc_val a, kc_val b) {
  kc_val in[3] = {cond, a, b};
  return simple(g, KC_OP_WHERE, 3, in, 3);
}

kc_val kc_dropout(kc_graph *g, kc_val x) { return unary(g, KC_OP_DROPOUT, x); }

kc_val kc_cast(kc_graph *g, kc_val x, kc_dtype to) {
  uint32_t ni = begin(g, KC_OP_CAST, 1, &x, 1, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_dtype(g, ni, "to", to);
  return finish(g, ni);
}

/* ---- reductions and normalizations ------------------------------------------------------------
 */

static kc_val axis_op(kc_graph *g, kc_op op, kc_val x, int64_t axis) {
  uint32_t ni = begin(g, op, 1, &x, 1, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_int(g, ni, "axis", axis);
  return finish(g, ni);
}

kc_val kc_softmax(kc_graph *g, kc_val x, int64_t axis) {
  return axis_op(g, KC_OP_SOFTMAX, x, axis);
}
kc_val kc_log_softmax(kc_graph *g, kc_val x, int64_t axis) {
  return axis_op(g, KC_OP_LOG_SOFTMAX, x, axis);
}
kc_val kc_flatten(kc_graph *g, kc_val x, int64_t axis) {
  return axis_op(g, KC_OP_FLATTEN, x, axis);
}

/* A 1-D i64 constant for an axes list, or kc_val{0} when there are none. */
static kc_val axes_const(kc_graph *g, int naxes, const int64_t *axes) {
  if (naxes <= 0) return (kc_val){0};
  return kc_const_i64s(g, naxes, axes);
}

static kc_val reduce(kc_graph *g, kc_op op, kc_val x, int naxes, const int64_t *axes,
                     int keepdims) {
  if (!inputs_ok(g, op, 1, &x, 1)) return (kc_val){0};
  kc_val in[2] = {x, axes_const(g, naxes, axes)};
  if (naxes > 0 && !in[1].id) return (kc_val){0};
  uint32_t ni = begin(g, op, 2, in, 1, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_int(g, ni, "keepdims", keepdims != 0);
  return finish(g, ni);
}

kc_val kc_reduce_mean(kc_graph *g, kc_val x, int naxes, const int64_t *axes, int keepdims) {
  return reduce(g, KC_OP_REDUCE_MEAN, x, naxes, axes, keepdims);
}
kc_val kc_reduce_sum(kc_graph *g, kc_val x, int naxes, const int64_t *axes, int keepdims) {
  return reduce(g, KC_OP_REDUCE_SUM, x, naxes, axes, keepdims);
}
kc_val kc_reduce_max(kc_graph *g, kc_val x, int naxes, const int64_t *axes, int keepdims) {
  return reduce(g, KC_OP_REDUCE_MAX, x, naxes, axes, keepdims);
}

kc_val kc_layer_normalization(kc_graph *g, kc_val x, kc_val scale, kc_val bias, int64_t axis,
                              float eps) {
  kc_val in[3] = {x, scale, bias};
  uint32_t ni = begin(g, KC_OP_LAYER_NORMALIZATION, 3, in, 2, 1, NULL);
  if (ni != UINT32_MAX) {
    kc_node_set_int(g, ni, "axis", axis);
    kc_node_set_float(g, ni, "epsilon", as_double(eps));
  }
  return finish(g, ni);
}

kc_val kc_rms_normalization(kc_graph *g, kc_val x, kc_val scale, int64_t axis, float eps) {
  kc_val in[2] = {x, scale};
  uint32_t ni = begin(g, KC_OP_RMS_NORMALIZATION, 2, in, 2, 1, NULL);
  if (ni != UINT32_MAX) {
    kc_node_set_int(g, ni, "axis", axis);
    kc_node_set_float(g, ni, "epsilon", as_double(eps));
  }
  return finish(g, ni);
}

kc_val kc_layer_norm(kc_graph *g, kc_val x, kc_val gamma, kc_val beta, float eps) {
  kc_val in[3] = {x, gamma, beta};
  uint32_t ni = begin(g, KC_OP_LAYER_NORM, 3, in, 2, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_float(g, ni, "eps", as_double(eps));
  return finish(g, ni);
}

kc_val kc_rms_norm(kc_graph *g, kc_val x, kc_val gamma, float eps) {
  kc_val in[2] = {x, gamma};
  uint32_t ni = begin(g, KC_OP_RMS_NORM, 2, in, 2, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_float(g, ni, "eps", as_double(eps));
  return finish(g, ni);
}

/* ---- contractions -----------------------------------------------------------------------------
 */

kc_val kc_matmul(kc_graph *g, kc_val a, kc_val b) { return binary(g, KC_OP_MATMUL, a, b); }

kc_val kc_gemm(kc_graph *g, kc_val a, kc_val b, kc_val c, float alpha, float beta, int trans_a,
               int trans_b) {
  kc_val in[3] = {a, b, c};
  uint32_t ni = begin(g, KC_OP_GEMM, 3, in, 2, 1, NULL);
  if (ni != UINT32_MAX) {
    kc_node_set_float(g, ni, "alpha", as_double(alpha));
    kc_node_set_float(g, ni, "beta", as_double(beta));
    kc_node_set_int(g, ni, "transA", trans_a != 0);
    kc_node_set_int(g, ni, "transB", trans_b != 0);
  }
  return finish(g, ni);
}

kc_val kc_matmul_ep(kc_graph *g, kc_val a, kc_val b, kc_val bias, kc_val residual, kc_act act) {
  static const char *const names[] = {"none", "relu", "gelu", "gelu_tanh"};
  if ((unsigned)act >= sizeof names / sizeof *names)
    return fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "matmul_ep: invalid act %d", (int)act));
  kc_val in[4] = {a, b, bias, residual};
  uint32_t ni = begin(g, KC_OP_MATMUL_EP, 4, in, 2, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_string(g, ni, "act", names[act]);
  return finish(g, ni);
}

/* ---- data movement ----------------------------------------------------------------------------
 */

kc_val kc_reshape(kc_graph *g, kc_val x, kc_val shape) {
  return binary(g, KC_OP_RESHAPE, x, shape);
}

kc_val kc_transpose(kc_graph *g, kc_val x, int n, const int64_t *perm) {
  uint32_t ni = begin(g, KC_OP_TRANSPOSE, 1, &x, 1, 1, NULL);
  if (ni != UINT32_MAX && perm && n >= 0) kc_node_set_ints(g, ni, "perm", (uint32_t)n, perm);
  return finish(g, ni);
}

kc_val kc_gather(kc_graph *g, kc_val data, kc_val indices, int64_t axis) {
  kc_val in[2] = {data, indices};
  uint32_t ni = begin(g, KC_OP_GATHER, 2, in, 2, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_int(g, ni, "axis", axis);
  return finish(g, ni);
}

kc_val kc_scatter_add(kc_graph *g, kc_val data, kc_val indices, kc_val updates, int64_t axis) {
  kc_val in[3] = {data, indices, updates};
  uint32_t ni = begin(g, KC_OP_SCATTER_ADD, 3, in, 3, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_int(g, ni, "axis", axis);
  return finish(g, ni);
}

kc_val kc_concat(kc_graph *g, int n, const kc_val *xs, int64_t axis) {
  if (n <= 0 || !xs) return fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "concat: %d inputs", n));
  uint32_t ni = begin(g, KC_OP_CONCAT, (uint32_t)n, xs, (uint32_t)n, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_int(g, ni, "axis", axis);
  return finish(g, ni);
}

kc_status kc_split(kc_graph *g, kc_val x, int64_t axis, int n, const int64_t *sizes, kc_val *outs) {
  if (n <= 0 || !outs) {
    fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "split: %d outputs", n));
    return KC_ERR_INVALID_ARG;
  }
  for (int i = 0; i < n; i++)
    outs[i] = (kc_val){0};
  if (!inputs_ok(g, KC_OP_SPLIT, 1, &x, 1)) return g->sticky;
  kc_val in[2] = {x, {0}};
  if (sizes && !(in[1] = kc_const_i64s(g, n, sizes)).id) return g->sticky;
  uint32_t ni = begin(g, KC_OP_SPLIT, 2, in, 1, (uint32_t)n, outs);
  if (ni == UINT32_MAX) return g->sticky;
  kc_node_set_int(g, ni, "axis", axis);
  if (!sizes) kc_node_set_int(g, ni, "num_outputs", n);
  if (!finish(g, ni).id) {
    for (int i = 0; i < n; i++)
      outs[i] = (kc_val){0};
    return g->sticky;
  }
  return KC_OK;
}

kc_val kc_slice(kc_graph *g, kc_val x, kc_val starts, kc_val ends, kc_val axes, kc_val steps) {
  kc_val in[5] = {x, starts, ends, axes, steps};
  return simple(g, KC_OP_SLICE, 5, in, 3);
}

kc_val kc_squeeze(kc_graph *g, kc_val x, int naxes, const int64_t *axes) {
  if (!inputs_ok(g, KC_OP_SQUEEZE, 1, &x, 1)) return (kc_val){0};
  kc_val in[2] = {x, axes_const(g, naxes, axes)};
  if (naxes > 0 && !in[1].id) return (kc_val){0};
  return simple(g, KC_OP_SQUEEZE, 2, in, 1);
}

kc_val kc_unsqueeze(kc_graph *g, kc_val x, int naxes, const int64_t *axes) {
  if (!inputs_ok(g, KC_OP_UNSQUEEZE, 1, &x, 1)) return (kc_val){0};
  kc_val in[2] = {x, kc_const_i64s(g, naxes, axes)};
  return simple(g, KC_OP_UNSQUEEZE, 2, in, 2);
}

kc_val kc_expand(kc_graph *g, kc_val x, kc_val shape) { return binary(g, KC_OP_EXPAND, x, shape); }

kc_val kc_trilu(kc_graph *g, kc_val x, kc_val k, int upper) {
  kc_val in[2] = {x, k};
  uint32_t ni = begin(g, KC_OP_TRILU, 2, in, 1, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_int(g, ni, "upper", upper != 0);
  return finish(g, ni);
}

/* ---- shape computations -----------------------------------------------------------------------
 */

kc_val kc_shape(kc_graph *g, kc_val x) { return unary(g, KC_OP_SHAPE, x); }

kc_val kc_constant_of_shape(kc_graph *g, kc_val shape, kc_val value) {
  uint32_t tensor = UINT32_MAX;
  if (value.id) {
    const kc_value *v = value.id < g->nvals ? kc_value_of(g, value) : NULL;
    const kc_node *d = v && v->def ? &g->nodes[v->def - 1] : NULL;
    const kc_attr *a = d && d->op == KC_OP_CONSTANT ? kc_node_attr(d, "value") : NULL;
    if (!a || a->kind != KC_ATTR_TENSOR)
      return fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG,
                               "constant_of_shape: value %%%u is not a constant", value.id));
    tensor = a->u.tensor;
  }
  uint32_t ni = begin(g, KC_OP_CONSTANT_OF_SHAPE, 1, &shape, 1, 1, NULL);
  if (ni != UINT32_MAX && tensor != UINT32_MAX) kc_node_set_tensor(g, ni, "value", tensor);
  return finish(g, ni);
}

kc_val kc_range(kc_graph *g, kc_val start, kc_val limit, kc_val delta) {
  kc_val in[3] = {start, limit, delta};
  return simple(g, KC_OP_RANGE, 3, in, 3);
}

/* ---- fused ops --------------------------------------------------------------------------------
 */

kc_val kc_rotary(kc_graph *g, kc_val x, kc_val cos_cache, kc_val sin_cache, kc_val position_ids,
                 int64_t heads, int interleaved) {
  kc_val in[4] = {x, cos_cache, sin_cache, position_ids};
  uint32_t ni = begin(g, KC_OP_ROTARY, 4, in, 3, 1, NULL);
  if (ni != UINT32_MAX) {
    kc_node_set_int(g, ni, "interleaved", interleaved != 0);
    if (heads) kc_node_set_int(g, ni, "num_heads", heads);
  }
  return finish(g, ni);
}

kc_val kc_kv_store(kc_graph *g, kc_val cache, kc_val k, kc_val v, kc_val table, kc_val past,
                   kc_val lens, int64_t layer, int64_t kv_heads) {
  kc_val in[6] = {cache, k, v, table, past, lens};
  uint32_t ni = begin(g, KC_OP_KV_STORE, 6, in, 6, 1, NULL);
  if (ni != UINT32_MAX) {
    kc_node_set_int(g, ni, "layer", layer);
    kc_node_set_int(g, ni, "kv_heads", kv_heads);
  }
  return finish(g, ni);
}

kc_val kc_attention_cache(kc_graph *g, kc_val q, kc_val cache, kc_val table, kc_val past,
                          kc_val lens, kc_val mask, int64_t layer, const kc_attention_desc *desc) {
  if (!desc) return fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "attention_cache: desc is NULL"));
  kc_val in[6] = {q, cache, table, past, lens, mask};
  uint32_t ni = begin(g, KC_OP_ATTENTION_CACHE, 6, in, 5, 1, NULL);
  if (ni != UINT32_MAX) {
    kc_node_set_int(g, ni, "heads", desc->heads);
    if (desc->kv_heads) kc_node_set_int(g, ni, "kv_heads", desc->kv_heads);
    if (desc->scale != 0) kc_node_set_float(g, ni, "scale", as_double(desc->scale));
    kc_node_set_int(g, ni, "layer", layer);
  }
  return finish(g, ni);
}

kc_val kc_attention(kc_graph *g, kc_val q, kc_val k, kc_val v, kc_val mask,
                    const kc_attention_desc *desc) {
  static const char *const masks[] = {"none", "causal", "padding", "additive"};
  if (!desc || (unsigned)desc->mask >= sizeof masks / sizeof *masks)
    return fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "attention: %s",
                             desc ? "invalid mask kind" : "desc is NULL"));
  kc_val in[4] = {q, k, v, mask};
  uint32_t ni = begin(g, KC_OP_ATTENTION, 4, in, 3, 1, NULL);
  if (ni != UINT32_MAX) {
    kc_node_set_int(g, ni, "heads", desc->heads);
    if (desc->kv_heads) kc_node_set_int(g, ni, "kv_heads", desc->kv_heads);
    if (desc->scale != 0) kc_node_set_float(g, ni, "scale", as_double(desc->scale));
    kc_node_set_string(g, ni, "mask", masks[desc->mask]);
  }
  return finish(g, ni);
}

/* ---- losses ------------------------------------------------------------------------------------
 */

kc_val kc_cross_entropy(kc_graph *g, kc_val logits, kc_val labels, int64_t ignore_index) {
  kc_val in[2] = {logits, labels};
  uint32_t ni = begin(g, KC_OP_SOFTMAX_XENT, 2, in, 2, 1, NULL);
  if (ni != UINT32_MAX) kc_node_set_int(g, ni, "ignore_index", ignore_index);
  kc_val loss = finish(g, ni);
  if (!loss.id) return loss;
  /* the mean over the positions not ignored, summed in f32 (f64) so counts past f16's integers
   * stay exact; 0 / 0 = nan when every position is ignored, as PyTorch */
  kc_dtype t = kc_value_of(g, loss)->dtype, ct = t == KC_F64 ? KC_F64 : KC_F32;
  kc_val ign = kc_constant(g, KC_I64, 0, NULL, &ignore_index);
  kc_val keep = kc_cast(g, kc_not(g, kc_equal(g, labels, ign)), ct);
  kc_val total = kc_reduce_sum(g, t == ct ? loss : kc_cast(g, loss, ct), 0, NULL, 0);
  kc_val mean = kc_div(g, total, kc_reduce_sum(g, keep, 0, NULL, 0));
  return t == ct ? mean : kc_cast(g, mean, t);
}
