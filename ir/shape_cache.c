/*
 * ir/shape_cache.c - shape functions of the KV-cache ops of decoding (ir/ops.def): kv_store and
 * attention_cache, over the cache pool f32[NBLK, L, 2, KVH, BS, D] (runtime/kv_cache.h), the
 * block table i32[B, MAXB] and the per-row lengths past, lens i64[B].
 *
 * What the sizes assume that only a run can confirm (the batch of q/k/v equals the table's rows,
 * widths over heads divide) is reported through kc_shp_assume / the checks here, so the plan
 * checks it per run; which cache slots a run touches depends on data (past, lens, the table) and
 * is the kernels' to bound-check.
 */
#include "shape.h"

enum { CACHE, KS, VS, TABLE, PAST, LENS, KS_COS, KS_SIN };        /* kv_store */
enum { Q, AC_CACHE, AC_TABLE, AC_PAST, AC_LENS, MASK, COS, SIN }; /* attention_cache */

/* The checks both ops make on the cache, table, past and lens (inputs c, t, p, l); the cache's
 * dims into *cd, the batch b from the table. */
static kc_status cache_operands(kc_graph *g, kc_node *n, uint32_t c, uint32_t t, uint32_t p,
                                uint32_t l, const kc_value **cd, kc_dim *b) {
  kc_status s = kc_shp_need_float(g, n, c);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, c, 6, 6);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, t, KC_I32);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, t, 2, 2);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, p, KC_I64);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, p, 1, 1);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, l, KC_I64);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, l, 1, 1);
  if (s != KC_OK) return s;
  const kc_value *cache = kc_value_of(g, n->in[c]), *table = kc_value_of(g, n->in[t]);
  *cd = cache;
  *b = table->dims[0];
  if (!kc_shp_dims_match(g, cache->dims[2], 2))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "cache dim 2 must be 2 (K and V)");
  int64_t layer = kc_node_int(n, "layer", -1), nl;
  if (layer < 0 || (kc_dim_const(g, cache->dims[1], &nl) && layer >= nl))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "layer %lld is not a layer of the cache",
                          (long long)layer);
  /* the kernels address layer `layer` of a block: with L known only at run time, the plan
   * checks it there (else the last layer's offsets would reach into the next block) */
  if (!kc_dim_const(g, cache->dims[1], &nl))
    kc_shp_assume(g, KC_ASSUME_LE, layer + 1, cache->dims[1]);
  if (!kc_shp_dims_match(g, kc_value_of(g, n->in[p])->dims[0], *b) ||
      !kc_shp_dims_match(g, kc_value_of(g, n->in[l])->dims[0], *b))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "past and lens must have one entry per table row");
  return KC_OK;
}

/* Rotary caches cos/sin (both or neither): [max_pos, R/2], R/2 within D/2. */
static kc_status rotary_caches(kc_graph *g, kc_node *n, uint32_t ci, uint32_t si, uint32_t x,
                               kc_dim d) {
  const kc_value *c = kc_shp_in(g, n, ci), *sn = kc_shp_in(g, n, si);
  if (!c != !sn) return kc_node_errorf(g, n, KC_ERR_SHAPE, "cos and sin go together");
  if (!c) return KC_OK;
  kc_status s = kc_shp_same_dtype(g, n, x, ci);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, x, si);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, ci, 2, 2);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, si, 2, 2);
  if (s != KC_OK) return s;
  for (int i = 0; i < 2; i++)
    if (!kc_shp_dims_match(g, c->dims[i], sn->dims[i]))
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "cos and sin caches differ");
  kc_dim half = c->dims[1];
  int64_t hv, dv;
  if (kc_dim_const(g, half, &hv) && kc_dim_const(g, d, &dv) && 2 * hv > dv)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "cache width %lld is over half the head size %lld",
                          (long long)hv, (long long)dv);
  kc_shp_assume(g, KC_ASSUME_LE, kc_dim_add(g, half, half), d);
  return KC_OK;
}

/* Width w of a rank-3 operand over `heads` heads: the head size (assumed to divide). */
static kc_status per_head(kc_graph *g, kc_node *n, kc_dim w, int64_t heads, kc_dim *d) {
  if (kc_dim_div_exact(g, w, heads, d)) return KC_OK;
  int64_t wv;
  if (kc_dim_const(g, w, &wv))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "width %lld is not a multiple of %lld heads",
                          (long long)wv, (long long)heads);
  *d = kc_dim_div(g, w, heads);
  kc_shp_assume(g, KC_ASSUME_EQ, kc_dim_mod(g, w, heads), 0);
  return KC_OK;
}

kc_status shape_kv_store(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  const kc_value *cache;
  kc_dim b;
  if (s == KC_OK) s = cache_operands(g, n, CACHE, TABLE, PAST, LENS, &cache, &b);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, CACHE, KS);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, CACHE, VS);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, KS, 3, 4);
  if (s != KC_OK) return s;
  const kc_value *k = kc_value_of(g, n->in[KS]), *v = kc_value_of(g, n->in[VS]);
  if ((s = kc_shp_need_rank(g, n, VS, k->rank, k->rank)) != KC_OK) return s;
  int64_t kvh = kc_node_int(n, "kv_heads", 0);
  if (kvh <= 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "kv_heads must be positive");
  if (!kc_shp_dims_match(g, cache->dims[3], kvh))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "the cache holds a different number of kv heads");
  kc_dim d = cache->dims[5], dk = 0, dv = 0;
  for (int i = 0; i < 2 && s == KC_OK; i++) {
    const kc_value *x = i ? v : k;
    kc_dim *dx = i ? &dv : &dk;
    if (x->rank == 3) {
      s = per_head(g, n, x->dims[2], kvh, dx);
    } else if (!kc_shp_dims_match(g, x->dims[1], kvh)) {
      s = kc_node_errorf(g, n, KC_ERR_SHAPE, "%s has other kv heads than kv_heads", i ? "v" : "k");
    } else {
      *dx = x->dims[3];
    }
  }
  if (s != KC_OK) return s;
  int sd = k->rank == 3 ? 1 : 2; /* the sequence dim */
  if (!kc_shp_dims_match(g, k->dims[0], b) || !kc_shp_dims_match(g, v->dims[0], b) ||
      !kc_shp_dims_match(g, v->dims[sd], k->dims[sd]) || !kc_shp_dims_match(g, dk, d) ||
      !kc_shp_dims_match(g, dv, d))
    return kc_node_errorf(g, n, KC_ERR_SHAPE,
                          "k and v must be [B, S, kv_heads * D] with the "
                          "table's B and the cache's D");
  if ((s = rotary_caches(g, n, KS_COS, KS_SIN, KS, d)) != KC_OK) return s;
  kc_shp_set_like(g, n, 0, n->in[CACHE]);
  return KC_OK;
}

kc_status shape_attention_cache(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  const kc_value *cache;
  kc_dim b;
  if (s == KC_OK) s = cache_operands(g, n, AC_CACHE, AC_TABLE, AC_PAST, AC_LENS, &cache, &b);
  if (s == KC_OK) s = kc_shp_need_float(g, n, Q);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, Q, AC_CACHE);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, Q, 3, 4);
  if (s != KC_OK) return s;
  const kc_value *q = kc_value_of(g, n->in[Q]);
  int64_t heads = kc_node_int(n, "heads", 0), kvh = kc_node_int(n, "kv_heads", heads);
  if (heads <= 0 || kvh <= 0 || heads % kvh != 0)
    return kc_node_errorf(g, n, KC_ERR_SHAPE,
                          "heads=%lld, kv_heads=%lld: need kv_heads to divide heads",
                          (long long)heads, (long long)kvh);
  if (!kc_shp_dims_match(g, cache->dims[3], kvh))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "the cache holds a different number of kv heads");
  kc_dim d = cache->dims[5], dq, sq;
  if (q->rank == 3) {
    sq = q->dims[1];
    if ((s = per_head(g, n, q->dims[2], heads, &dq)) != KC_OK) return s;
  } else {
    if (!kc_shp_dims_match(g, q->dims[1], heads))
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "q has other heads than `heads`");
    sq = q->dims[2];
    dq = q->dims[3];
  }
  if (!kc_shp_dims_match(g, q->dims[0], b) || !kc_shp_dims_match(g, dq, d))
    return kc_node_errorf(g, n, KC_ERR_SHAPE,
                          "q must have the table's batch and the cache's head size");
  const kc_value *m = kc_shp_in(g, n, MASK);
  if (m) {
    if ((s = kc_shp_need_float(g, n, MASK)) != KC_OK) return s;
    if (m->rank != 4)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "the mask must be [B|1, heads|1, S|1, T]");
    kc_dim want[3] = {b, heads, sq};
    for (int i = 0; i < 3; i++)
      if (m->dims[i] != 1) kc_shp_assume(g, KC_ASSUME_BCAST, m->dims[i], want[i]);
  }
  if ((s = rotary_caches(g, n, COS, SIN, Q, d)) != KC_OK) return s;
  kc_shp_set_like(g, n, 0, n->in[Q]);
  return KC_OK;
}
