/*
 * frontend/onnx_attention.c - ONNX Attention (opset 23) onto kernc's attention op.
 *
 * kernc's attention takes q [B, S, heads*D] and k/v [B, S_kv, kv_heads*D] with one mask kind
 * (none / causal / padding / additive), optional past K/V [B, kv_heads, P, D] and present
 * outputs of the same layout as ONNX's. So:
 *   - 4-D inputs [B, H, S, D] become [B, S, H*D] by transpose(0,2,1,3) + reshape([0,0,-1]),
 *     and the output goes back by reshape([0,0,H,-1]) + transpose(0,2,1,3);
 *   - is_causal: ONNX (onnx/reference/ops/op_attention.py, _apply_causal) keeps key j for
 *     query i iff j <= i + P, P the past_key length: a lower triangle over the new keys that
 *     starts at the top left. kernc's mask=causal aligns at the bottom right (j <= i + T - S,
 *     T = P + S_kv). The two are the same when S_kv = S, so is_causal becomes mask=causal when
 *     the query and key lengths are the same dim; otherwise ONNX's rule is built as an additive
 *     [S, T] bias, where(range(P, P + S)[:, None] < range(T), -inf, 0), added to attn_mask if
 *     there is one;
 *   - a float attn_mask -> additive; a bool attn_mask (true = attend) -> additive through
 *     where(mask, 0, -inf), which is how ONNX defines it; with is_causal too the op adds it to
 *     its causal mask (mask=causal with an input);
 *   - whatever else ONNX can say (qk_matmul_output, nonpad_kv_seqlen) is unsupported, with
 *     the reason.
 */
#include "onnx_internal.h"

#include <math.h>
#include <string.h>

/* An int attribute of np, or def. */
static int64_t attr_int(const Onnx__NodeProto *np, const char *name, int64_t def) {
  const Onnx__AttributeProto *a = kc_onnx_attr(np, name);
  return a ? a->i : def;
}

/* x [B, H, S, D] -> [B, S, H*D]. */
static kc_val heads_in(onnx_imp *im, kc_val x, kc_status *st) {
  static const int64_t perm[4] = {0, 2, 1, 3}, shape[3] = {0, 0, -1};
  uint32_t ni = kc_onnx_add(im, KC_OP_TRANSPOSE, 1, &x, 1, NULL);
  if (ni == UINT32_MAX) return *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory"), (kc_val){0};
  kc_node_set_ints(im->g, ni, "perm", 4, perm);
  if ((*st = kc_onnx_infer(im, ni)) != KC_OK) return (kc_val){0};
  kc_val in[2] = {im->g->nodes[ni].out[0], kc_onnx_const_i64s(im, 3, shape, st)};
  if (*st != KC_OK) return (kc_val){0};
  return kc_onnx_emit1(im, KC_OP_RESHAPE, 2, in, st);
}

/* y [B, S, H*D] -> [B, H, S, D]. */
static kc_val heads_out(onnx_imp *im, kc_val y, int64_t heads, kc_status *st) {
  static const int64_t perm[4] = {0, 2, 1, 3};
  const int64_t shape[4] = {0, 0, heads, -1};
  kc_val in[2] = {y, kc_onnx_const_i64s(im, 4, shape, st)};
  if (*st != KC_OK) return (kc_val){0};
  kc_val r = kc_onnx_emit1(im, KC_OP_RESHAPE, 2, in, st);
  if (*st != KC_OK) return (kc_val){0};
  uint32_t ni = kc_onnx_add(im, KC_OP_TRANSPOSE, 1, &r, 1, NULL);
  if (ni == UINT32_MAX) return *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory"), (kc_val){0};
  kc_node_set_ints(im->g, ni, "perm", 4, perm);
  if ((*st = kc_onnx_infer(im, ni)) != KC_OK) return (kc_val){0};
  return im->g->nodes[ni].out[0];
}

/* Dim a of x as an i64 scalar, computed from x's shape. */
static kc_val dim_scalar(onnx_imp *im, kc_val x, int64_t a, kc_status *st) {
  kc_val sh = kc_onnx_emit1(im, KC_OP_SHAPE, 1, &x, st);
  kc_val in[2] = {sh, {0}};
  if (*st == KC_OK) in[1] = kc_onnx_const_scalar(im, KC_I64, (double)a, st);
  return *st == KC_OK ? kc_onnx_emit1(im, KC_OP_GATHER, 2, in, st) : (kc_val){0};
}

/* Are a and b the same size whatever the inputs (the same integer or the same expression)? */
static bool same_dim(const kc_graph *g, kc_dim a, kc_dim b) {
  if (a == b) return true;
  if (!KC_DIM_IS_SYM(a) || !KC_DIM_IS_SYM(b)) return false;
  char x[256], y[256];
  return strcmp(kc_dim_str(g, a, x, sizeof x), kc_dim_str(g, b, y, sizeof y)) == 0;
}

/*
 * ONNX's causal rule for q [B, S, .] and k [B, S_kv, .] after past_k (P keys, or none) as an
 * additive [S, T] bias of dtype t: -inf where key j > query i + P, else 0.
 */
static kc_val onnx_causal_bias(onnx_imp *im, kc_val q, kc_val k, kc_val past_k, kc_dtype t,
                               kc_status *st) {
  kc_val s = dim_scalar(im, q, 1, st), skv = {0}, p = {0}, zero = {0}, one = {0};
  if (*st == KC_OK) skv = dim_scalar(im, k, 1, st);
  if (*st == KC_OK)
    p = past_k.id ? dim_scalar(im, past_k, 2, st) : kc_onnx_const_scalar(im, KC_I64, 0, st);
  if (*st == KC_OK) zero = kc_onnx_const_scalar(im, KC_I64, 0, st);
  if (*st == KC_OK) one = kc_onnx_const_scalar(im, KC_I64, 1, st);
  if (*st != KC_OK) return (kc_val){0};
  kc_val a[3] = {p, skv, {0}};
  kc_val total = kc_onnx_emit1(im, KC_OP_ADD, 2, a, st);
  if (*st != KC_OK) return (kc_val){0};
  kc_val kr[3] = {zero, total, one};
  kc_val keys = kc_onnx_emit1(im, KC_OP_RANGE, 3, kr, st); /* [T] */
  a[1] = s;
  kc_val qend = *st == KC_OK ? kc_onnx_emit1(im, KC_OP_ADD, 2, a, st) : (kc_val){0};
  if (*st != KC_OK) return (kc_val){0};
  kc_val qr[3] = {p, qend, one};
  kc_val rows = kc_onnx_emit1(im, KC_OP_RANGE, 3, qr, st); /* [S]: i + P */
  static const int64_t axis1[1] = {1};
  kc_val u[2] = {rows, {0}};
  if (*st == KC_OK) u[1] = kc_onnx_const_i64s(im, 1, axis1, st);
  kc_val col = *st == KC_OK ? kc_onnx_emit1(im, KC_OP_UNSQUEEZE, 2, u, st) : (kc_val){0};
  kc_val lt[2] = {col, keys};
  kc_val hidden = *st == KC_OK ? kc_onnx_emit1(im, KC_OP_LESS, 2, lt, st) : (kc_val){0};
  kc_val w[3] = {hidden, {0}, {0}};
  if (*st == KC_OK) w[1] = kc_onnx_const_scalar(im, t, -INFINITY, st);
  if (*st == KC_OK) w[2] = kc_onnx_const_scalar(im, t, 0.0, st);
  return *st == KC_OK ? kc_onnx_emit1(im, KC_OP_WHERE, 3, w, st) : (kc_val){0};
}

/* A static dim of v, or -1. */
static int64_t static_dim(onnx_imp *im, kc_val v, int axis) {
  const kc_value *val = kc_value_of(im->g, v);
  if (axis < 0) axis += val->rank;
  if (axis < 0 || axis >= val->rank || KC_DIM_IS_SYM(val->dims[axis])) return -1;
  return val->dims[axis];
}

kc_status kc_onnx_import_attention(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  kc_context *ctx = im->ctx;
  kc_val q = kc_onnx_input(im, np, 0), k = kc_onnx_input(im, np, 1), v = kc_onnx_input(im, np, 2);
  kc_val mask = kc_onnx_input(im, np, 3), past_k = kc_onnx_input(im, np, 4),
         past_v = kc_onnx_input(im, np, 5);
  if (!q.id || !k.id || !v.id) return kc_errorf(ctx, KC_ERR_VERIFY, "needs Q, K and V");
  if (kc_onnx_input(im, np, 6).id)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "nonpad_kv_seqlen is not supported");
  if (!past_k.id != !past_v.id)
    return kc_errorf(ctx, KC_ERR_VERIFY, "past_key and past_value must be given together");
  for (size_t i = 3; i < np->n_output; i++)
    if (np->output[i] && np->output[i][0])
      return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "the qk_matmul_output output is not supported");
  const Onnx__AttributeProto *softcap = kc_onnx_attr(np, "softcap");
  int causal = (int)attr_int(np, "is_causal", 0);

  int rank = kc_value_of(im->g, q)->rank;
  if (rank != 3 && rank != 4)
    return kc_errorf(ctx, KC_ERR_SHAPE, "Q has rank %d; Attention takes 3 or 4", rank);
  if (kc_value_of(im->g, k)->rank != rank || kc_value_of(im->g, v)->rank != rank)
    return kc_errorf(ctx, KC_ERR_SHAPE, "Q, K and V must have the same rank");
  int64_t heads, kv_heads;
  kc_status s = KC_OK;
  if (rank == 4) {
    heads = static_dim(im, q, 1);
    kv_heads = static_dim(im, k, 1);
    if (heads <= 0 || kv_heads <= 0)
      return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                       "the head counts (dim 1 of Q and K) must be static");
  } else {
    heads = attr_int(np, "q_num_heads", 0);
    kv_heads = attr_int(np, "kv_num_heads", 0);
    if (heads <= 0 || kv_heads <= 0)
      return kc_errorf(ctx, KC_ERR_VERIFY, "3-D inputs need q_num_heads and kv_num_heads");
  }
  if (rank == 4) {
    q = heads_in(im, q, &s);
    if (s == KC_OK) k = heads_in(im, k, &s);
    if (s == KC_OK) v = heads_in(im, v, &s);
    if (s != KC_OK) return s;
  }

  const char *mask_kind = causal ? "causal" : "none";
  kc_dtype t = kc_value_of(im->g, q)->dtype;
  if (mask.id) {
    mask_kind = causal ? "causal" : "additive";
    if (kc_value_of(im->g, mask)->dtype == KC_BOOL) {
      kc_val w[3] = {mask, kc_onnx_const_scalar(im, t, 0.0, &s), {0}};
      if (s == KC_OK) w[2] = kc_onnx_const_scalar(im, t, -INFINITY, &s);
      if (s == KC_OK) mask = kc_onnx_emit1(im, KC_OP_WHERE, 3, w, &s);
      if (s != KC_OK) return s;
    }
  }
  if (causal && !same_dim(im->g, kc_value_of(im->g, q)->dims[1], kc_value_of(im->g, k)->dims[1])) {
    /* the alignments differ: ONNX's rule as a tensor (see the top of the file) */
    kc_val bias = onnx_causal_bias(im, q, k, past_k, t, &s);
    if (s == KC_OK && mask.id) {
      kc_val a[2] = {mask, bias};
      bias = kc_onnx_emit1(im, KC_OP_ADD, 2, a, &s);
    }
    if (s != KC_OK) return s;
    mask = bias;
    mask_kind = "additive";
  }
  kc_val in[6] = {q, k, v, mask, past_k, past_v};
  uint32_t nin = past_k.id ? 6 : mask.id ? 4 : 3;
  bool present = (np->n_output > 1 && np->output[1] && np->output[1][0]) ||
                 (np->n_output > 2 && np->output[2] && np->output[2][0]);
  kc_val outs[3];
  uint32_t ni = kc_onnx_add(im, row->op, nin, in, present ? 3 : 1, outs);
  if (ni == UINT32_MAX) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
  kc_node_set_int(im->g, ni, "heads", heads);
  kc_node_set_int(im->g, ni, "kv_heads", kv_heads);
  kc_node_set_string(im->g, ni, "mask", mask_kind);
  const Onnx__AttributeProto *scale = kc_onnx_attr(np, "scale");
  if (scale) kc_node_set_float(im->g, ni, "scale", scale->f);
  if (softcap && softcap->f != 0) kc_node_set_float(im->g, ni, "softcap", softcap->f);
  if ((s = kc_onnx_infer(im, ni)) != KC_OK) return s;
  kc_val y = outs[0];
  if (rank == 4 && (y = heads_out(im, y, heads, &s), s != KC_OK)) return s;
  if ((s = kc_onnx_bind(im, np, 0, y)) != KC_OK) return s;
  if (present) {
    if ((s = kc_onnx_bind(im, np, 1, outs[1])) != KC_OK) return s;
    if ((s = kc_onnx_bind(im, np, 2, outs[2])) != KC_OK) return s;
  }
  return KC_OK;
}
