/*
 * passes/fuse_rotary.c - the rotate-half rotary embedding as Llama/GPT-NeoX exporters write it,
 * for fuse-attention, which hands cos/sin to the attention op (its kernel rotates q and the new
 * keys at positions 0, 1, ... of the sequence, reading caches [max_pos, D/2]):
 *
 *   y = x * cos + concat(-x[..., D/2:], x[..., :D/2]) * sin,   x [B, H, S, D], cos/sin [1.., S, D]
 *
 * The kernel computes y[d] = x[d] c[d] - x[d + D/2] s[d] and y[d + D/2] = x[d + D/2] c[d] +
 * x[d] s[d] for d < D/2, so cos and sin must hold the same D/2 values twice along their last
 * axis (they do when computed as cos(concat(f, f)), Hugging Face's emb = cat(freqs, freqs)):
 * that is checked, on the graph or on constant data. Row s of the caches is the cos/sin of
 * sequence position s, which is the position the kernel uses for query s and key s (there is no
 * past), so the positions the graph computed them from need not be known.
 * Invariants: only kc_fa_rot_cache adds nodes (through the rewriter); the cos/sin of a match
 * have 1 in every axis but the last two.
 */
#include "passes/fuse_attention.h"

#include <stdlib.h>

enum { RX, RCOS, RSIN };

/* concat(a, b) along the last axis */
static bool concat_last(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  int r = kc_value_of(g, n->out[0])->rank;
  int64_t axis = kc_node_int(n, "axis", 0);
  if (axis == -1 || axis == r - 1) return true;
  snprintf(why, size, "concat over axis %lld, not the last", (long long)axis);
  return false;
}

/* slice(x, start, end, axes, steps) taking x[..., D/2:] (upper) or x[..., :D/2] along the last axis
 */
static bool slice_half(const kc_graph *g, const kc_node *n, bool upper, char *why, size_t size) {
  int r = kc_value_of(g, n->in[0])->rank;
  int64_t d = kc_fa_dim(g, n->in[0], -1), out = kc_fa_dim(g, n->out[0], -1);
  int64_t start, axis = 0, step = 1;
  if (r < 1 || d < 2 || d % 2 || out != d / 2 || !kc_fa_int1(g, n->in[1], &start) ||
      (n->nin > 3 && n->in[3].id && !kc_fa_int1(g, n->in[3], &axis)) ||
      (n->nin > 4 && n->in[4].id && !kc_fa_int1(g, n->in[4], &step))) {
    snprintf(why, size, "not a constant slice of half the last axis");
    return false;
  }
  if (axis < 0) axis += r;
  if (start < 0) start += d;
  if (axis == r - 1 && step == 1 && start == (upper ? d / 2 : 0)) return true;
  snprintf(why, size, "not x[..., %s]", upper ? "D/2:" : ":D/2");
  return false;
}

static bool slice_upper(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  return slice_half(g, n, true, why, size);
}

static bool slice_lower(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  return slice_half(g, n, false, why, size);
}

/* x * cos + concat(-x[..., D/2:], x[..., :D/2]) * sin  ->  (x, cos, sin) for the attention op */
static const kc_pat rot_half[] = {
    P_OP(ADD, P_SUB(1), P_SUB(2)),
    P_OP(MUL, P_CAP(RX), P_CAP(RCOS)),
    P_OP(MUL, P_SUB(3), P_CAP(RSIN)),
    P_OPIF(CONCAT, concat_last, P_SUB(4), P_SUB(5)),
    P_OP(NEG, P_SUB(6)),
    P_OPIF(SLICE, slice_lower, P_CAP(RX), P_REST),
    P_OPIF(SLICE, slice_upper, P_CAP(RX), P_REST),
};

/*
 * c (last axis d) holds the same d/2 values twice: constant data, concat(f, f), or cos/sin/neg
 * of such, through views that keep the last two axes. With rw, *out gets a value holding one
 * half (same elements in the same order, any leading shape).
 */
static bool half_of(const kc_graph *g, kc_rewriter *rw, kc_val c, int64_t d, int depth,
                    kc_val *out) {
  const kc_value *x = kc_value_of(g, c);
  if (depth > 16 || x->rank < 1 || kc_fa_dim(g, c, -1) != d) return false;
  const kc_tensor *t = kc_fa_data(g, c);
  if (t) {
    size_t n = kc_tensor_numel(t), h = (size_t)d / 2, rows = n / (size_t)d;
    for (size_t i = 0; i < n; i++)
      if (i % (size_t)d < h && kc_tensor_get(t, i) != kc_tensor_get(t, i + h)) return false;
    if (!rw) return true;
    void *buf = malloc(rows * h * kc_dtype_size(t->dtype) + 1);
    if (!buf) return false;
    for (size_t i = 0; i < rows * h; i++)
      kc_tensor_put(t->dtype, buf, i, kc_tensor_get(t, (i / h) * (size_t)d + i % h));
    int64_t dims[2] = {(int64_t)rows, (int64_t)h};
    *out = kc_rw_const(rw, t->dtype, 2, dims, buf);
    free(buf);
    return out->id != 0;
  }
  const kc_node *n = kc_fa_def(g, c);
  if (!n) return false;
  kc_val in = n->nin ? n->in[0] : (kc_val){0};
  switch (n->op) {
  case KC_OP_IDENTITY:
  case KC_OP_RESHAPE:
  case KC_OP_UNSQUEEZE:
  case KC_OP_SQUEEZE:
  case KC_OP_EXPAND: {
    const kc_value *a = kc_value_of(g, in);
    if (a->rank < 2 || !kc_fa_same_dim(g, in, -2, c, -2)) return false;
    for (int i = 0; i < a->rank - 2; i++)
      if (a->dims[i] != 1) return false;
    return half_of(g, rw, in, d, depth + 1, out);
  }
  case KC_OP_CONCAT:
    if (n->nin != 2 || n->in[1].id != in.id || kc_fa_dim(g, in, -1) != d / 2) return false;
    if (!concat_last(g, n, NULL, 0)) return false;
    if (rw) *out = in;
    return true;
  case KC_OP_COS:
  case KC_OP_SIN:
  case KC_OP_NEG: {
    kc_op op = n->op; /* n dies with the next node added */
    kc_val h;
    if (!half_of(g, rw, in, d, depth + 1, &h)) return false;
    if (rw) *out = kc_rw_op(rw, op, 1, &h);
    return !rw || out->id;
  }
  default: return false;
  }
}

bool kc_fa_rotate_half(const kc_graph *g, const kc_uses *u, kc_val y, kc_fa_rot *out, char *why,
                       size_t size) {
  const kc_node *n = kc_fa_def(g, y);
  kc_match m;
  if (!n || !kc_pat_match(g, u, rot_half, KC_LEN(rot_half), g->vals[y.id].def - 1, &m, why, size))
    return false;
  kc_val x = m.cap[RX];
  int64_t d = kc_fa_dim(g, x, -1);
  if (kc_value_of(g, x)->rank != 4 || d < 2 || d % 2) {
    if (why) snprintf(why, size, "rotary input %%%u is not [B, H, S, D] with D even", x.id);
    return false;
  }
  kc_val cs[2] = {m.cap[RCOS], m.cap[RSIN]};
  for (int k = 0; k < 2; k++) {
    const kc_value *c = kc_value_of(g, cs[k]);
    bool ok = c->rank >= 2 && kc_fa_same_dim(g, cs[k], -2, x, 2) && kc_fa_dim(g, cs[k], -1) == d;
    for (int i = 0; ok && i < c->rank - 2; i++)
      ok = c->dims[i] == 1;
    if (!ok || !half_of(g, NULL, cs[k], d, 0, NULL)) {
      if (why)
        snprintf(why, size, "rotary %s %%%u is not [1.., S, D] with equal halves",
                 k ? "sin" : "cos", cs[k].id);
      return false;
    }
  }
  *out = (kc_fa_rot){x, cs[0], cs[1]};
  return true;
}

kc_val kc_fa_rot_cache(kc_rewriter *rw, kc_val c) {
  kc_graph *g = kc_rw_graph(rw);
  int64_t d = kc_fa_dim(g, c, -1);
  kc_val h;
  if (!half_of(g, rw, c, d, 0, &h)) return (kc_val){0};
  if (kc_value_of(g, h)->rank == 2) return h; /* constant data comes as [S, D/2] already */
  int64_t shape[2] = {-1, d / 2};
  kc_val in[2] = {h, kc_rw_const_i64s(rw, 2, shape)};
  if (!in[1].id) return in[1];
  return kc_rw_op(rw, KC_OP_RESHAPE, 2, in);
}
