/*
 * ir/shape_fused.c - shape functions of kernc's fused ops: layer_norm / rms_norm, rotary,
 * attention and fused regions.
 *
 * attention follows the layout of its ops.def row: q [B,S,heads*D] (or [B,heads,S,D]), k/v
 * [B,S_kv,kv_heads*D] (or [B,kv_heads,S_kv,D]), past K/V [B,kv_heads,P,D]; y has q's layout
 * with v's head size, present K/V are [B,kv_heads,P+S_kv,D], lse f32 [B,heads,S];
 * attention_grad's dq, dk, dv take q's, k's and v's types. A fused node's outputs take the
 * types of its body's outputs; an untyped body is typed from the node's inputs first.
 */
#include "shape.h"

#include <string.h>

kc_status shape_norm(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  for (uint32_t i = 1; s == KC_OK && i < n->nin; i++)
    s = kc_shp_same_dtype(g, n, 0, i);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  if (x->rank == 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "input 0 is a scalar");
  int axis;
  s = kc_shp_axis(g, n, "axis", kc_node_int(n, "axis", -1), x->rank, &axis);
  for (uint32_t i = 1; s == KC_OK && i < n->nin; i++)
    s = kc_shp_bcast_to(g, n, i, x->rank - axis, x->dims + axis);
  if (s != KC_OK) return s;
  kc_shp_set_like(g, n, 0, n->in[0]);
  /* statistics: layer_norm's mean and rstd, rms_norm's rstd; one per row, in the compute type */
  kc_dim stat[KC_MAX_RANK];
  for (int i = 0; i < x->rank; i++)
    stat[i] = i < axis ? x->dims[i] : 1;
  kc_dtype st = x->dtype == KC_F64 ? KC_F64 : KC_F32;
  for (uint32_t j = 1; j < n->nout; j++)
    kc_shp_set(g, n, j, st, x->rank, stat);
  return KC_OK;
}

/* dims a and b of inputs must agree (what: for the message). */
static kc_status agree(kc_graph *g, const kc_node *n, kc_dim a, kc_dim b, const char *what) {
  if (kc_shp_dims_match(g, a, b)) return KC_OK;
  char sa[64], sb[64];
  return kc_node_errorf(g, n, KC_ERR_SHAPE, "%s: %s vs %s", what, kc_dim_str(g, a, sa, sizeof sa),
                        kc_dim_str(g, b, sb, sizeof sb));
}

/* total / parts, which must divide when both are integers. */
static kc_status split_dim(kc_graph *g, const kc_node *n, kc_dim total, int64_t parts,
                           const char *what, kc_dim *out) {
  if (kc_dim_div_exact(g, total, parts, out)) return KC_OK;
  if (!KC_DIM_IS_SYM(total)) {
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "%s: %lld is not a multiple of %lld", what,
                          (long long)total, (long long)parts);
  }
  *out = kc_dim_div(g, total, parts);
  kc_shp_assume(g, KC_ASSUME_EQ, kc_dim_mod(g, total, parts), 0);
  return KC_OK;
}

kc_status shape_rotary(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 0, 1);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 0, 2);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 0, 3, 4);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 3, KC_I64);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 3, 2, 2);
  bool pos = kc_shp_in(g, n, 3) != NULL;
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 1, pos ? 2 : 3, pos ? 2 : 3);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 2, pos ? 2 : 3, pos ? 2 : 3);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]), *c = kc_value_of(g, n->in[1]);
  const kc_value *sn = kc_value_of(g, n->in[2]);
  for (int i = 0; i < c->rank; i++)
    if ((s = agree(g, n, c->dims[i], sn->dims[i], "cos and sin caches differ")) != KC_OK) return s;
  int64_t heads = kc_node_int(n, "num_heads", 0);
  kc_dim head = x->dims[x->rank - 1];
  if (x->rank == 3) {
    if (heads <= 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "a 3-D input needs num_heads");
    if ((s = split_dim(g, n, x->dims[2], heads, "hidden size over num_heads", &head)) != KC_OK)
      return s;
  }
  int64_t rdim = kc_node_int(n, "rotary_embedding_dim", 0), hd;
  kc_dim half = c->dims[c->rank - 1];
  if (!KC_DIM_IS_SYM(head) && !KC_DIM_IS_SYM(half) && 2 * half > head)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "cache width %lld is over half the head size %lld",
                          (long long)half, (long long)head);
  if (KC_DIM_IS_SYM(head) || KC_DIM_IS_SYM(half))
    kc_shp_assume(g, KC_ASSUME_LE, kc_dim_add(g, half, half), head);
  if (rdim > 0 && kc_dim_const(g, head, &hd) && rdim > hd)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "rotary_embedding_dim %lld over head size %lld",
                          (long long)rdim, (long long)hd);
  kc_shp_set_like(g, n, 0, n->in[0]);
  return KC_OK;
}

/* Attention inputs by position. */
enum { Q, K, V, MASK, PAST_K, PAST_V, COS, SIN };

static kc_status attn_mask(kc_graph *g, kc_node *n, kc_dim b, int64_t heads, kc_dim sq,
                           kc_dim total) {
  const char *mask = kc_node_string(n, "mask", "none");
  bool has = kc_shp_in(g, n, MASK) != NULL;
  if (strcmp(mask, "causal") == 0 && has) mask = "additive";
  if (strcmp(mask, "none") == 0 || strcmp(mask, "causal") == 0) {
    if (has)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "mask=%s takes no mask input (%%%u)", mask,
                            n->in[MASK].id);
    return KC_OK;
  }
  bool padding = strcmp(mask, "padding") == 0;
  if (!padding && strcmp(mask, "additive") != 0)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                          "mask=\"%s\", expected none, causal, padding or additive", mask);
  if (!has) return kc_node_errorf(g, n, KC_ERR_SHAPE, "mask=%s needs a mask input", mask);
  const kc_value *m = kc_value_of(g, n->in[MASK]);
  kc_status s;
  if (padding) {
    if (m->dtype != KC_BOOL && !kc_dtype_is_int(m->dtype))
      return kc_node_errorf(g, n, KC_ERR_TYPE, "padding mask is %s, expected bool or an integer",
                            kc_dtype_name(m->dtype));
    if ((s = kc_shp_need_rank(g, n, MASK, 2, 2)) != KC_OK) return s;
    if ((s = agree(g, n, m->dims[0], b, "padding mask batch")) != KC_OK) return s;
    return agree(g, n, m->dims[1], total, "padding mask length");
  }
  if ((s = kc_shp_need_float(g, n, MASK)) != KC_OK) return s;
  kc_dim full[4] = {b, heads, sq, total};
  return kc_shp_bcast_to(g, n, MASK, 4, full);
}

kc_status shape_attention(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, Q);
  const int others[] = {K, V, PAST_K, PAST_V, COS, SIN};
  for (size_t i = 0; s == KC_OK && i < sizeof others / sizeof *others; i++)
    s = kc_shp_same_dtype(g, n, Q, (uint32_t)others[i]);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, Q, 3, 4);
  if (s != KC_OK) return s;
  const kc_value *q = kc_value_of(g, n->in[Q]), *k = kc_value_of(g, n->in[K]);
  const kc_value *v = kc_value_of(g, n->in[V]);
  int rank = q->rank;
  if ((s = kc_shp_need_rank(g, n, K, rank, rank)) != KC_OK) return s;
  if ((s = kc_shp_need_rank(g, n, V, rank, rank)) != KC_OK) return s;
  if (!kc_node_attr(n, "heads"))
    return kc_node_errorf(g, n, KC_ERR_VERIFY, "attribute 'heads' is missing");
  int64_t heads = kc_node_int(n, "heads", 0), kvh = kc_node_int(n, "kv_heads", heads);
  if (heads <= 0 || kvh <= 0 || heads % kvh != 0)
    return kc_node_errorf(g, n, KC_ERR_SHAPE,
                          "heads=%lld, kv_heads=%lld: need kv_heads to divide heads",
                          (long long)heads, (long long)kvh);
  kc_dim b = q->dims[0], sq, skv, d, dk, dv;
  if (rank == 3) {
    sq = q->dims[1];
    skv = k->dims[1];
    if ((s = split_dim(g, n, q->dims[2], heads, "q width over heads", &d)) != KC_OK) return s;
    if ((s = split_dim(g, n, k->dims[2], kvh, "k width over kv_heads", &dk)) != KC_OK) return s;
    if ((s = split_dim(g, n, v->dims[2], kvh, "v width over kv_heads", &dv)) != KC_OK) return s;
  } else {
    if ((s = agree(g, n, q->dims[1], heads, "q heads")) != KC_OK) return s;
    if ((s = agree(g, n, k->dims[1], kvh, "k heads")) != KC_OK) return s;
    if ((s = agree(g, n, v->dims[1], kvh, "v heads")) != KC_OK) return s;
    sq = q->dims[2];
    skv = k->dims[2];
    d = q->dims[3];
    dk = k->dims[3];
    dv = v->dims[3];
  }
  if ((s = agree(g, n, k->dims[0], b, "k batch")) != KC_OK) return s;
  if ((s = agree(g, n, v->dims[0], b, "v batch")) != KC_OK) return s;
  if ((s = agree(g, n, dk, d, "k head size")) != KC_OK) return s;
  if ((s = agree(g, n, v->dims[rank == 3 ? 1 : 2], skv, "v length")) != KC_OK) return s;
  /* past K/V: both or neither, [B, kv_heads, P, D] */
  const kc_value *pk = kc_shp_in(g, n, PAST_K), *pv = kc_shp_in(g, n, PAST_V);
  kc_dim past = 0;
  if (!pk != !pv) return kc_node_errorf(g, n, KC_ERR_SHAPE, "past_k and past_v go together");
  if (pk) {
    if ((s = kc_shp_need_rank(g, n, PAST_K, 4, 4)) != KC_OK) return s;
    if ((s = kc_shp_need_rank(g, n, PAST_V, 4, 4)) != KC_OK) return s;
    kc_dim want_k[4] = {b, kvh, pk->dims[2], d}, want_v[4] = {b, kvh, pk->dims[2], dv};
    for (int i = 0; i < 4; i++) {
      if ((s = agree(g, n, pk->dims[i], want_k[i], "past_k")) != KC_OK) return s;
      if ((s = agree(g, n, pv->dims[i], want_v[i], "past_v")) != KC_OK) return s;
    }
    past = pk->dims[2];
  }
  kc_dim total = kc_dim_add(g, past, skv);
  if ((s = attn_mask(g, n, b, heads, sq, total)) != KC_OK) return s;
  /* rotary caches: both or neither, [max_pos, R/2] */
  if (!kc_shp_in(g, n, COS) != !kc_shp_in(g, n, SIN))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "cos and sin go together");
  if ((s = kc_shp_need_rank(g, n, COS, 2, 2)) != KC_OK) return s;
  if ((s = kc_shp_need_rank(g, n, SIN, 2, 2)) != KC_OK) return s;
  kc_dtype t = q->dtype;
  kc_dim y[4];
  if (rank == 3) {
    y[0] = b, y[1] = sq, y[2] = kc_dim_mul(g, heads, dv);
  } else {
    y[0] = b, y[1] = heads, y[2] = sq, y[3] = dv;
  }
  kc_dim pres_k[4] = {b, kvh, total, d}, pres_v[4] = {b, kvh, total, dv};
  kc_shp_set(g, n, 0, t, rank, y);
  kc_shp_set(g, n, 1, t, 4, pres_k);
  kc_shp_set(g, n, 2, t, 4, pres_v);
  kc_dim lse[3] = {b, heads, sq};
  kc_shp_set(g, n, 3, KC_F32, 3, lse);
  return KC_OK;
}

/* attention_grad inputs beyond the forward's q, k, v, mask. */
enum { G_Y = 4, G_DY, G_LSE };

kc_status shape_attention_grad(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  if (n->nin != 7 || !n->in[G_Y].id || !n->in[G_DY].id || !n->in[G_LSE].id)
    return kc_node_errorf(g, n, KC_ERR_VERIFY, "expected inputs q, k, v, mask?, y, dy, lse");
  const uint32_t same[] = {K, V, G_Y, G_DY};
  s = kc_shp_need_float(g, n, Q);
  for (size_t i = 0; s == KC_OK && i < sizeof same / sizeof *same; i++)
    s = kc_shp_same_dtype(g, n, Q, same[i]);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, Q, 3, 4);
  if (s != KC_OK) return s;
  const kc_value *q = kc_value_of(g, n->in[Q]), *k = kc_value_of(g, n->in[K]);
  const kc_value *v = kc_value_of(g, n->in[V]), *y = kc_value_of(g, n->in[G_Y]);
  const kc_value *dy = kc_value_of(g, n->in[G_DY]), *lse = kc_value_of(g, n->in[G_LSE]);
  int rank = q->rank;
  const uint32_t ranked[] = {K, V, G_Y, G_DY};
  for (size_t i = 0; i < sizeof ranked / sizeof *ranked; i++)
    if ((s = kc_shp_need_rank(g, n, ranked[i], rank, rank)) != KC_OK) return s;
  int64_t heads = kc_node_int(n, "heads", 0), kvh = kc_node_int(n, "kv_heads", heads);
  if (heads <= 0 || kvh <= 0 || heads % kvh != 0)
    return kc_node_errorf(g, n, KC_ERR_SHAPE,
                          "heads=%lld, kv_heads=%lld: need kv_heads to divide heads",
                          (long long)heads, (long long)kvh);
  kc_dim b = q->dims[0], sq = q->dims[rank == 3 ? 1 : 2], skv = k->dims[rank == 3 ? 1 : 2];
  for (int i = 0; i < rank; i++) {
    if ((s = agree(g, n, y->dims[i], dy->dims[i], "y and dy")) != KC_OK) return s;
    if (i != rank - 1 && (s = agree(g, n, y->dims[i], q->dims[i], "y and q")) != KC_OK) return s;
  }
  if ((s = agree(g, n, v->dims[rank == 3 ? 1 : 2], skv, "v length")) != KC_OK) return s;
  if (lse->dtype != KC_F32 || lse->rank != 3)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "lse must be f32 [B, heads, S]");
  kc_dim want[3] = {b, heads, sq};
  for (int i = 0; i < 3; i++)
    if ((s = agree(g, n, lse->dims[i], want[i], "lse")) != KC_OK) return s;
  if ((s = attn_mask(g, n, b, heads, sq, skv)) != KC_OK) return s;
  kc_shp_set_like(g, n, 0, n->in[Q]);
  kc_shp_set_like(g, n, 1, n->in[K]);
  kc_shp_set_like(g, n, 2, n->in[V]);
  return KC_OK;
}

kc_status shape_fused(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  kc_graph *body = n->body;
  if (!body) return kc_node_errorf(g, n, KC_ERR_VERIFY, "fused node without a body");
  if (body->ninputs != n->nin || body->noutputs != n->nout)
    return kc_node_errorf(g, n, KC_ERR_VERIFY,
                          "body takes %u inputs and gives %u outputs, node has %u and %u",
                          body->ninputs, body->noutputs, n->nin, n->nout);
  bool typed = true;
  for (uint32_t i = 0; i < body->noutputs; i++)
    typed = typed && kc_value_of(body, body->outputs[i].v)->rank >= 0;
  if (!typed) {
    /* a body built without types: its inputs are the node's inputs */
    for (uint32_t i = 0; i < body->ninputs; i++) {
      kc_value *bi = kc_value_of(body, body->inputs[i]);
      const kc_value *x = kc_shp_in(g, n, i);
      if (bi->rank >= 0 || !x) continue;
      bi->dtype = x->dtype;
      bi->rank = x->rank;
      for (int d = 0; d < x->rank; d++)
        bi->dims[d] = kc_dim_import(body, g, x->dims[d]);
    }
    if ((s = kc_graph_infer(body)) != KC_OK) {
      kc_error_append(g->ctx, "in the body of fused node %%%u", n->out[0].id);
      return s;
    }
  }
  for (uint32_t i = 0; i < n->nout; i++) {
    const kc_value *o = kc_value_of(body, body->outputs[i].v);
    if (o->rank < 0)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "body output %u (%%%u) has no type", i,
                            body->outputs[i].v.id);
    kc_dim dims[KC_MAX_RANK];
    for (int d = 0; d < o->rank; d++)
      dims[d] = kc_dim_import(g, body, o->dims[d]);
    kc_shp_set(g, n, i, o->dtype, o->rank, dims);
  }
  /* a region is elementwise over its one output shape: every input broadcasts to it (what the
   * body's own broadcasts assumed, in this graph's dims) */
  const kc_value *o0 = n->nout && n->out[0].id ? kc_value_of(g, n->out[0]) : NULL;
  for (uint32_t i = 0; o0 && i < n->nin && s == KC_OK; i++)
    s = kc_shp_bcast_to(g, n, i, o0->rank, o0->dims);
  return s;
}
