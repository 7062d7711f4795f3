/*
 * passes/derive_decode.c - derive-decode: the decode step of a causal decoder, derived from the
 * plain model (no past_key_values inputs needed). Runs after fusion. The result is one graph for
 * prefill (S new tokens) and decode (S = 1) of B sequences at once, each with its own cache:
 *
 *   - new graph inputs after the model's (token ids first, then any attention mask): kc_kv_cache
 * f32[kc_nblk, L, 2, KVH, kc_bs, D] (the pool of runtime/kv_cache.h), kc_block_table i32[B,
 * kc_maxb], kc_past_len i64[B] (tokens already cached per row), kc_new_len i64[B] (new tokens valid
 * per row; rows padded to S);
 *   - every attention (all must be causal self-attention, without a mask input or past; q, k, v
 *     [B, S, heads * D] or [B, heads, S, D]) becomes kv_store + attention_cache of layer l, l in
 *     program order; the kv_stores form a chain through the layers (each takes the previous
 *     one's result as its cache: ir/ops.def);
 *   - positions start at each row's past length: a Range(0, S) over the sequence whose uses are
 *     position indices of Gathers (learned position embeddings) gives those Gathers
 *     past[b] + i instead ([B, S] indices); one whose uses all end in attentions' cos/sin tables
 *     (RoPE computed in the graph) is lengthened to the table's whole span, MAXB * BS rows, since
 *     attention_cache reads the rows of positions past[b] + i; a position_ids input [B, S] is
 *     replaced by past[b] + i computed in the graph (and removed from the inputs);
 *   - an attention mask input ([B, S] integers or bool, named like a mask) is kept, and the session
 *     feeds it all ones: a sequence has no padding, its cache holds exactly its tokens; an
 *     attention's additive mask that is then provably the same number everywhere (built from
 *     the mask inputs and equal-valued constants by elementwise and movement ops:
 *     uniform_when_ones) leaves the softmax unchanged and is dropped; any other mask (ALiBi,
 *     a bias that varies) is refused;
 *   - a model exported with past inputs (past_key_values.N.key / .value and present.N.* outputs,
 *     as optimum and ONNX Runtime GenAI export decoders) is mapped onto the same cache first
 *     (passes/derive_decode_past.c): each attention's Concat(past, new) keys and values become
 *     the new ones, the presents and past inputs go, Range(P, P + S) positions are treated as
 *     Range(0, S), and an attention mask over the P + S keys, whose masks are dropped as above,
 *     goes too; the derived step's inputs are then those of a plain model's;
 *   - anything else that mixes sequence positions (a Range over S used otherwise, a non-causal
 *     attention, a reduction, softmax or cumsum along the sequence axis, a matmul contracting it)
 *     makes the pass refuse, naming the node: the step would not compute what the model does;
 *     so does any input it cannot map (naming the input).
 *
 * The sequence axis is tracked per value as the axis whose dim is S (the token ids' dim 1);
 * ops that keep it in place are per-position.
 *
 * Invariants: the graph stays in program order (new nodes are placed before the nodes they
 * replace, kc_graph_place); the model's own inputs keep their order (those mapped onto the cache
 * are removed); the pass is not in any default pipeline (the session compiles the decode graph
 * with it).
 */
#include "passes/derive_decode.h"
#include "passes/fuse_attention.h"
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

typedef struct dd {
  kc_graph *g;
  kc_val ids;
  kc_dim B, S;
  uint32_t *uses; /* per value */
  int64_t kvh, D;
  kc_dtype dt;
  uint32_t nattn;
  uint32_t first; /* g->nnodes before the pass appended anything */
  uint32_t *anchor;
  uint32_t nanchor, capanchor;
  kc_dd_past past; /* past inputs, position_ids, masks over past + new (derive_decode_past.c) */
} dd;

static kc_status refuse(dd *d, const kc_node *n, const char *why) {
  if (!n) return kc_errorf(d->g->ctx, KC_ERR_UNSUPPORTED, "derive-decode: %s", why);
  return kc_node_errorf(d->g, n, KC_ERR_UNSUPPORTED, "derive-decode: %s", why);
}

/* Nodes appended since d->first are placed before node `at` (kc_graph_place); record it. */
static kc_status anchor_new(dd *d, uint32_t at) {
  kc_graph *g = d->g;
  uint32_t want = g->nnodes - d->first;
  if (want > d->capanchor) {
    uint32_t cap = 2 * want + 16;
    uint32_t *a = realloc(d->anchor, cap * sizeof *a);
    if (!a) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in derive-decode");
    d->anchor = a;
    d->capanchor = cap;
  }
  if (d->nanchor && at < d->anchor[d->nanchor - 1])
    return kc_errorf(g->ctx, KC_ERR_INTERNAL, "derive-decode: nodes placed out of order");
  while (d->nanchor < want)
    d->anchor[d->nanchor++] = at;
  return kc_graph_status(g);
}

/* ---- the token ids and the attentions ----------------------------------------------------- */

/* Is graph input k a padding mask over the tokens (integer or bool [B, S], named so)? */
static bool is_mask_input(const dd *d, uint32_t k) {
  const kc_graph *g = d->g;
  const kc_value *v = kc_value_of(g, g->inputs[k]);
  const char *name = kc_graph_input_name(g, k);
  return strstr(name, "mask") && v->rank == 2 && v->dtype != KC_F32 && v->dtype != KC_F16 &&
         v->dtype != KC_BF16 && v->dtype != KC_F64 && kc_dim_same(g, v->dims[0], d->B) &&
         kc_dim_same(g, v->dims[1], d->S);
}

static kc_status find_ids(dd *d) {
  kc_graph *g = d->g;
  if (g->ninputs < 1) return refuse(d, NULL, "the model takes no token ids");
  d->ids = g->inputs[0];
  const kc_value *v = kc_value_of(g, d->ids);
  if ((v->dtype != KC_I64 && v->dtype != KC_I32) || v->rank != 2 || !KC_DIM_IS_SYM(v->dims[1]))
    return refuse(d, NULL,
                  "the model's first input must be token ids, integers [B, S] with a "
                  "symbolic S");
  d->B = v->dims[0];
  d->S = v->dims[1];
  kc_status s = kc_dd_past_map(g, d->B, d->S, &d->past);
  for (uint32_t k = 1; k < g->ninputs && s == KC_OK; k++) {
    if (is_mask_input(d, k) || kc_dd_past_claims(&d->past, k)) continue;
    char msg[320];
    snprintf(msg, sizeof msg,
             "input '%s': a decoder's inputs must be its token ids, attention masks, "
             "position_ids [B, S] and past_key_values.N.key / .value",
             kc_graph_input_name(g, k));
    s = refuse(d, NULL, msg);
  }
  return s;
}

/* Is v a mask input (over the new tokens, or over past + new of a past model)? */
static bool mask_input(const dd *d, kc_val v) {
  const kc_graph *g = d->g;
  for (uint32_t k = 1; k < g->ninputs; k++)
    if (g->inputs[k].id == v.id)
      return is_mask_input(d, k) ||
             (kc_dd_past_claims(&d->past, k) && strstr(kc_graph_input_name(g, k), "mask"));
  return false;
}

/* A constant or weight whose elements are all equal. */
static bool uniform_data(const kc_graph *g, kc_val v) {
  const kc_tensor *t = kc_fa_data(g, v);
  if (!t) return false;
  size_t n = kc_tensor_numel(t);
  for (size_t i = 1; i < n; i++)
    if (kc_tensor_get(t, i) != kc_tensor_get(t, 0)) return false;
  return true;
}

/*
 * Is v the same number at every element when the mask inputs are all ones (as the session feeds
 * them: a sequence has no padding, its cache holds exactly its tokens; a mask over past + new
 * tokens is what a runtime feeding the past gives an unpadded sequence, all ones)? Then an
 * additive attention mask made of it shifts every score of a row alike and the softmax ignores
 * it: dropping it is exact. Proven structurally: mask inputs and constants with equal elements,
 * through elementwise, broadcasting, reduction and movement ops (whose size, axes and index
 * operands only say where elements go). Anything else (a Range, Trilu, CumSum, a constant
 * that varies, such as ALiBi's slopes) is not uniform, and the attention is refused.
 */
/* How many leading inputs of node n carry elements to its result (the rest are sizes, axes
 * or indices, which only say where elements go), for an op that keeps a tensor whose elements
 * are all equal so; -1: an op that may not (Range, Trilu, CumSum, matmul, ...). */
static int uniform_inputs(const kc_node *n) {
  switch (n->op) {
  case KC_OP_RESHAPE:
  case KC_OP_FLATTEN:
  case KC_OP_SQUEEZE:
  case KC_OP_UNSQUEEZE:
  case KC_OP_TRANSPOSE:
  case KC_OP_EXPAND:
  case KC_OP_SLICE:
  case KC_OP_GATHER: /* every index picks the same value */
  case KC_OP_DROPOUT: return 1;
  case KC_OP_CONSTANT_OF_SHAPE: return 0; /* one value everywhere */
  default: break;
  }
  kc_op_class c = kc_ops[n->op].cls;
  return c == KC_CLASS_ELEMWISE || c == KC_CLASS_BROADCAST || c == KC_CLASS_REDUCE ? (int)n->nin
                                                                                   : -1;
}

/* Does a fused region's body keep uniform inputs uniform (its ops all do, its constants are)? */
static bool body_keeps_uniform(const kc_graph *b) {
  for (uint32_t i = 0; i < b->nnodes; i++) {
    const kc_node *n = &b->nodes[i];
    if (n->op == KC_OP_NOP) continue;
    if (kc_ops[n->op].cls == KC_CLASS_SOURCE) {
      if (!uniform_data(b, n->out[0])) return false;
    } else if (uniform_inputs(n) < 0) {
      return false;
    }
  }
  return true;
}

static bool uniform_when_ones(const dd *d, kc_val v, int depth) {
  const kc_graph *g = d->g;
  if (depth > 64) return false;
  const kc_value *x = kc_value_of(g, v);
  if (!x->def) return mask_input(d, v);
  const kc_node *n = &g->nodes[x->def - 1];
  int data = uniform_inputs(n);
  if (n->op == KC_OP_WEIGHT || n->op == KC_OP_CONSTANT) return uniform_data(g, v);
  if (n->op == KC_OP_FUSED) data = n->body && body_keeps_uniform(n->body) ? (int)n->nin : -1;
  if (data < 0) return false;
  for (int j = 0; j < data; j++)
    if (n->in[j].id && !uniform_when_ones(d, n->in[j], depth + 1)) return false;
  return true;
}

enum { Q, K, V, MASK, PAST_K, PAST_V, COS, SIN };

/* Every attention: causal, no mask input, no past, no present outputs; same KV heads, head
 * size and dtype in all layers (one cache). */
static kc_status check_attentions(dd *d) {
  kc_graph *g = d->g;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op != KC_OP_ATTENTION) continue;
    if (strcmp(kc_node_string(n, "mask", "none"), "causal") != 0)
      return refuse(d, n, "a non-causal attention mixes every position with every other");
    /* a mask made from the attention mask inputs, uniform when they are all ones: dropped */
    if (n->nin > MASK && n->in[MASK].id && !uniform_when_ones(d, n->in[MASK], 0))
      return refuse(d, n,
                    "its additive mask is not provably the same for every key of an unpadded "
                    "sequence (only masks built from the attention mask inputs are dropped)");
    bool extra = false;
    for (uint32_t j = PAST_K; j <= PAST_V && j < n->nin; j++)
      extra = extra || n->in[j].id;
    for (uint32_t j = 1; j < n->nout; j++)
      extra = extra || n->out[j].id;
    if (extra) return refuse(d, n, "an attention with past or present K/V operands");
    const kc_value *q = kc_value_of(g, n->in[Q]), *k = kc_value_of(g, n->in[K]);
    if ((q->rank != 3 && q->rank != 4) || k->rank != q->rank)
      return refuse(d, n, "attention operands must be [B, S, heads * D] or [B, heads, S, D]");
    if (!kc_dim_same(g, k->dims[k->rank == 3 ? 1 : 2], d->S))
      return refuse(d, n, "an attention over other keys than the tokens' own (self-attention)");
    int64_t heads = kc_node_int(n, "heads", 0), kvh = kc_node_int(n, "kv_heads", heads);
    int64_t w = -1, h4, d4;
    if (k->rank == 4 && kc_dim_const(g, k->dims[1], &h4) && kc_dim_const(g, k->dims[3], &d4))
      w = h4 == kvh ? d4 * kvh : -1;
    if (k->rank == 3 && !kc_dim_const(g, k->dims[2], &w)) w = -1;
    if (w <= 0 || kvh <= 0 || w % kvh != 0)
      return refuse(d, n,
                    "the keys must be [B, S, kv_heads * D] or [B, kv_heads, S, D] with known "
                    "kv_heads and D");
    if (d->nattn && (kvh != d->kvh || w / kvh != d->D || k->dtype != d->dt))
      return refuse(d, n, "every layer must have the same KV heads, head size and dtype");
    d->kvh = kvh;
    d->D = w / kvh;
    d->dt = k->dtype;
    d->nattn++;
  }
  return d->nattn ? KC_OK : refuse(d, NULL, "the model has no causal attention to cache");
}

/* ---- mixing of positions -------------------------------------------------------------------- */

/* The axis of v whose dim is S, or -1. */
static int seq_axis(const dd *d, kc_val v) {
  const kc_value *x = kc_value_of(d->g, v);
  for (int a = 0; a < x->rank; a++)
    if (kc_dim_same(d->g, x->dims[a], d->S)) return a;
  return -1;
}

/* Does node n combine values at different positions along the sequence axis? */
static bool mixes(const dd *d, const kc_node *n) {
  const kc_graph *g = d->g;
  if (!n->nin || !n->in[0].id) return false;
  int sa = seq_axis(d, n->in[0]);
  int rank = kc_value_of(g, n->in[0])->rank;
  switch (n->op) {
  case KC_OP_REDUCE_MEAN:
  case KC_OP_REDUCE_SUM:
  case KC_OP_REDUCE_MAX: {
    if (sa < 0) return false;
    uint32_t na;
    const kc_dim *ax = n->nin > 1 && n->in[1].id ? kc_value_known(g, n->in[1], &na) : NULL;
    if (n->nin > 1 && n->in[1].id && !ax) return true; /* axes unknown: assume the worst */
    if (!ax) return true;                              /* all axes */
    for (uint32_t i = 0; i < na; i++) {
      int64_t a;
      if (!kc_dim_const(g, ax[i], &a)) return true;
      if ((a < 0 ? a + rank : a) == sa) return true;
    }
    return false;
  }
  case KC_OP_SOFTMAX:
  case KC_OP_LOG_SOFTMAX:
  case KC_OP_CUMSUM: {
    if (sa < 0) return false;
    int64_t a = kc_node_int(n, "axis", -1);
    if (n->op == KC_OP_CUMSUM) {
      uint32_t na;
      const kc_dim *ax = kc_value_known(g, n->in[1], &na);
      if (!ax || na != 1 || !kc_dim_const(g, ax[0], &a)) return true;
    }
    return (a < 0 ? a + rank : a) == sa;
  }
  case KC_OP_MATMUL:
  case KC_OP_MATMUL_EP: {
    /* A's last dim and B's second-to-last are contracted */
    if (sa >= 0 && sa == rank - 1) return true;
    if (n->nin > 1 && n->in[1].id) {
      int sb = seq_axis(d, n->in[1]), rb = kc_value_of(g, n->in[1])->rank;
      if (sb >= 0 && sb == rb - 2) return true;
    }
    return false;
  }
  case KC_OP_GATHER:
  case KC_OP_CONCAT:
  case KC_OP_SPLIT: {
    if (sa < 0) return false;
    int64_t a = kc_node_int(n, "axis", 0);
    return (a < 0 ? a + rank : a) == sa;
  }
  case KC_OP_SLICE: {
    if (sa < 0) return false;
    uint32_t na;
    const kc_dim *ax = n->nin > 3 && n->in[3].id ? kc_value_known(g, n->in[3], &na) : NULL;
    if (n->nin > 3 && n->in[3].id && !ax) return true; /* axes unknown: assume the worst */
    if (!ax) {                                         /* no axes: the first len(starts) axes */
      int64_t k;
      return !kc_dim_const(g, kc_value_of(g, n->in[1])->dims[0], &k) || sa < k;
    }
    for (uint32_t i = 0; i < na; i++) {
      int64_t a;
      if (!kc_dim_const(g, ax[i], &a) || (a < 0 ? a + rank : a) == sa) return true;
    }
    return false;
  }
  default: return false;
  }
}

/* ---- positions ------------------------------------------------------------------------------ */

/* Is node n range(0, S, 1), or range(P, P + S, 1) with P the length of the past inputs? */
static bool is_position_range(dd *d, const kc_node *n) {
  if (n->op != KC_OP_RANGE) return false;
  uint32_t c0, c1, c2;
  const kc_dim *a = kc_value_known(d->g, n->in[0], &c0), *b = kc_value_known(d->g, n->in[1], &c1);
  const kc_dim *c = kc_value_known(d->g, n->in[2], &c2);
  if (!a || !b || !c || c0 != 1 || c1 != 1 || c2 != 1 || c[0] != 1) return false;
  if (a[0] == 0) return kc_dim_same(d->g, b[0], d->S);
  return d->past.P && kc_dim_same(d->g, a[0], d->past.P) &&
         kc_dim_same(d->g, b[0], kc_dim_add(d->g, d->past.P, d->S));
}

/* Ops a position index passes through unchanged in value. */
static bool index_transparent(kc_op op) {
  return op == KC_OP_RESHAPE || op == KC_OP_UNSQUEEZE || op == KC_OP_SQUEEZE ||
         op == KC_OP_EXPAND || op == KC_OP_CAST || op == KC_OP_IDENTITY || op == KC_OP_FLATTEN;
}

typedef struct reach {
  bool *in;       /* per node: reached from the range */
  bool only_idx;  /* every use ends as a Gather's indices (through transparent ops) */
  bool only_rope; /* every use ends in attentions' cos/sin inputs */
  const kc_node *bad;
} reach;

/* Walk the uses of value v (reached through node chain), classifying where they end. */
static void walk(dd *d, kc_val v, reach *r, bool transparent_path, int depth) {
  kc_graph *g = d->g;
  if (depth > 256) {
    r->only_idx = r->only_rope = false;
    return;
  }
  for (uint32_t k = 0; k < g->noutputs; k++)
    if (g->outputs[k].v.id == v.id) r->only_idx = r->only_rope = false;
  for (uint32_t i = 0; i < d->first; i++) { /* the model's nodes (r->in has as many) */
    kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nin; j++) {
      if (n->in[j].id != v.id) continue;
      if (n->op == KC_OP_ATTENTION && (j == COS || j == SIN)) {
        r->only_idx = false;
        continue;
      }
      if (n->op == KC_OP_GATHER && j == 1 && transparent_path) {
        r->only_rope = false;
        r->in[i] = true;
        continue;
      }
      if (n->op == KC_OP_ATTENTION || n->op == KC_OP_GATHER) {
        r->only_idx = r->only_rope = false;
        if (!r->bad) r->bad = n;
        continue;
      }
      bool t = transparent_path && index_transparent(n->op);
      if (!t) r->only_idx = false;
      if (r->in[i]) continue;
      r->in[i] = true;
      for (uint32_t o = 0; o < n->nout; o++)
        if (n->out[o].id) walk(d, n->out[o], r, t, depth + 1);
    }
  }
}

/* kc_past_len[:, None] + range(0, S)[None, :], as indices of dtype it: [B, S]. */
static kc_val row_positions(dd *d, kc_val range, kc_val past, kc_dtype it) {
  kc_graph *g = d->g;
  int64_t a0 = 0, a1 = 1;
  kc_val pos = kc_add(g, kc_unsqueeze(g, past, 1, &a1), kc_unsqueeze(g, range, 1, &a0));
  return it == KC_I64 ? pos : kc_cast(g, pos, it);
}

/* range(0, MAXB * BS): every position a table row of the cache can hold, of range's dtype. */
static kc_val table_span(dd *d, kc_val table, kc_val cache, kc_dtype t) {
  kc_graph *g = d->g;
  int64_t one = 1, four = 4, zero = 0;
  kc_val i1 = kc_constant(g, KC_I64, 0, NULL, &one), i4 = kc_constant(g, KC_I64, 0, NULL, &four);
  kc_val maxb = kc_gather(g, kc_shape(g, table), i1, 0);
  kc_val bs = kc_gather(g, kc_shape(g, cache), i4, 0);
  kc_val n = kc_mul(g, maxb, bs);
  kc_val z = kc_constant(g, KC_I64, 0, NULL, &zero);
  kc_val r = kc_range(g, z, n, i1);
  return t == KC_I64 ? r : kc_cast(g, r, t);
}

/* range(0, S) (i64) from the token ids' shape. */
static kc_val seq_range(dd *d) {
  kc_graph *g = d->g;
  int64_t zero = 0, one = 1;
  kc_val i0 = kc_constant(g, KC_I64, 0, NULL, &zero), i1 = kc_constant(g, KC_I64, 0, NULL, &one);
  return kc_range(g, i0, kc_gather(g, kc_shape(g, d->ids), i1, 0), i1);
}

/* A position_ids input becomes past[b] + i, computed before everything else. */
static kc_status position_ids(dd *d, kc_val past) {
  kc_graph *g = d->g;
  if (!d->past.posids.id) return KC_OK;
  kc_val pos = row_positions(d, seq_range(d), past, kc_value_of(g, d->past.posids)->dtype);
  kc_status st = anchor_new(d, 0);
  if (st == KC_OK) kc_graph_replace_uses(g, d->past.posids, pos);
  return st;
}

/* Every Range(0, S) (or Range(P, P + S)): per-row positions for Gathers, the whole span for
 * cos/sin tables. */
static kc_status positions(dd *d, kc_val cache, kc_val table, kc_val past) {
  kc_graph *g = d->g;
  kc_status s = position_ids(d, past);
  bool *in = s == KC_OK ? calloc(d->first + 1, sizeof *in) : NULL;
  if (s != KC_OK) return s;
  if (!in) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in derive-decode");
  uint32_t n0 = d->first; /* the model's nodes, not the position_ids' */
  for (uint32_t i = 0; i < n0 && s == KC_OK; i++) {
    kc_node *n = &g->nodes[i];
    if (!is_position_range(d, n)) continue;
    memset(in, 0, (n0 + 1) * sizeof *in);
    reach r = {in, true, true, NULL};
    walk(d, n->out[0], &r, true, 0);
    kc_val range = n->out[0], from0 = {0};
    kc_dtype rt = kc_value_of(g, range)->dtype;
    uint32_t na;
    const kc_dim *a0 = kc_value_known(g, n->in[0], &na);
    if (r.only_idx) { /* learned position embeddings: Gather(table, positions) */
      for (uint32_t k = 0; k < n0 && s == KC_OK; k++) {
        kc_node *gn = &g->nodes[k];
        if (!in[k] || gn->op != KC_OP_GATHER) continue;
        if (!from0.id) /* 0, 1, ..., S - 1 (range(P, P + S) reads the past's shape) */
          from0 = a0 && a0[0] == 0 ? range : seq_range(d);
        kc_val pos = row_positions(d, from0, past, kc_value_of(g, gn->in[1])->dtype);
        if ((s = anchor_new(d, k)) != KC_OK) break;
        gn->in[1] = pos;
      }
    } else if (r.only_rope) { /* rotary tables: every row the cache can address */
      kc_val span = table_span(d, table, cache, rt);
      if ((s = anchor_new(d, i)) != KC_OK) break;
      kc_graph_replace_uses(g, range, span);
    } else {
      s = refuse(d, r.bad ? r.bad : n,
                 "a range over the sequence is used as something other than position indices of "
                 "a gather or rotary tables of attentions");
    }
  }
  free(in);
  return s;
}

/* ---- the rewrite ---------------------------------------------------------------------------- */

static kc_status rewrite_attentions(dd *d, kc_val cache, kc_val table, kc_val past, kc_val lens) {
  kc_graph *g = d->g;
  uint32_t n0 = g->nnodes, layer = 0;
  for (uint32_t i = 0; i < n0; i++) {
    if (g->nodes[i].op != KC_OP_ATTENTION) continue;
    const kc_node *n = &g->nodes[i];
    kc_val cos = n->nin > COS ? n->in[COS] : (kc_val){0};
    kc_val sin = n->nin > SIN ? n->in[SIN] : (kc_val){0};
    kc_val st_in[8] = {cache, n->in[K], n->in[V], table, past, lens, cos, sin};
    uint32_t st = kc_graph_add_node(g, KC_OP_KV_STORE, cos.id ? 8 : 6, st_in, 1, NULL);
    kc_node_set_int(g, st, "layer", layer);
    kc_node_set_int(g, st, "kv_heads", d->kvh);
    int64_t inter = kc_node_int(n, "rotary_interleaved", 0);
    if (inter) kc_node_set_int(g, st, "rotary_interleaved", inter);
    kc_val stored = g->nodes[st].out[0];
    n = &g->nodes[i]; /* the node array may have moved */
    kc_val at_in[8] = {n->in[Q], stored, table, past, lens, {0}, cos, sin};
    uint32_t at = kc_graph_add_node(g, KC_OP_ATTENTION_CACHE, cos.id ? 8 : 5, at_in, 1, NULL);
    n = &g->nodes[i];
    kc_node_set_int(g, at, "heads", kc_node_int(n, "heads", 0));
    kc_node_set_int(g, at, "kv_heads", d->kvh);
    if (kc_node_attr(n, "scale")) kc_node_set_float(g, at, "scale", kc_node_float(n, "scale", 0));
    if (kc_node_attr(n, "softcap"))
      kc_node_set_float(g, at, "softcap", kc_node_float(n, "softcap", 0));
    kc_node_set_int(g, at, "layer", layer);
    if (inter) kc_node_set_int(g, at, "rotary_interleaved", inter);
    g->nodes[st].loc = g->nodes[at].loc = n->loc;
    kc_status s = kc_node_infer(g, st);
    if (s == KC_OK) s = kc_node_infer(g, at);
    if (s == KC_OK) s = anchor_new(d, i);
    if (s != KC_OK) return s;
    kc_graph_replace_uses(g, g->nodes[i].out[0], g->nodes[at].out[0]);
    g->nodes[i].op = KC_OP_NOP;
    cache = stored;
    layer++;
  }
  return KC_OK;
}

kc_status kc_derive_decode(kc_graph *g) {
  dd d = {.g = g};
  kc_status s = find_ids(&d);
  if (s == KC_OK && d.past.P) s = kc_dce_run(g, NULL); /* the Concat(past, new) and presents */
  if (s == KC_OK) s = check_attentions(&d);
  for (uint32_t i = 0; i < g->nnodes && s == KC_OK; i++)
    if (g->nodes[i].op != KC_OP_NOP && mixes(&d, &g->nodes[i]))
      s = refuse(&d, &g->nodes[i], "it mixes positions along the sequence axis");
  if (s != KC_OK) {
    kc_dd_past_free(&d.past);
    return s;
  }
  kc_dim cd[6] = {kc_sym(g, "kc_nblk"), d.nattn, 2, d.kvh, kc_sym(g, "kc_bs"), d.D};
  kc_dim td[2] = {d.B, kc_sym(g, "kc_maxb")}, bd[1] = {d.B};
  kc_val cache = kc_graph_add_input(g, "kc_kv_cache", d.dt, 6, cd);
  kc_val table = kc_graph_add_input(g, "kc_block_table", KC_I32, 2, td);
  kc_val past = kc_graph_add_input(g, "kc_past_len", KC_I64, 1, bd);
  kc_val lens = kc_graph_add_input(g, "kc_new_len", KC_I64, 1, bd);
  d.first = g->nnodes;
  s = positions(&d, cache, table, past);
  if (s == KC_OK) s = rewrite_attentions(&d, cache, table, past, lens);
  if (s == KC_OK) s = kc_graph_place(g, d.first, d.anchor);
  free(d.anchor);
  if (s == KC_OK) s = kc_graph_infer(g);
  if (s == KC_OK) s = kc_dce_run(g, NULL);
  if (s == KC_OK) s = kc_dd_past_finish(g, &d.past);
  kc_dd_past_free(&d.past);
  return s;
}

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  kc_status s = kc_derive_decode(g);
  if (s == KC_OK) pc->changed = true;
  return s;
}

const kc_pass kc_pass_derive_decode = {
    "derive-decode", run,
    "the decode step of a causal decoder: attentions read and write a KV cache, positions start "
    "at each row's past length"};
