/*
 * tests/attention_ref.h - causal attention with past keys, shared by tests/test_attention.c (CPU)
 * and tests/test_cuda.c (the CUDA target): a plain C reference of kernc's attention op with
 * mask=causal, and a runner that builds the op as a graph, compiles it for a target and runs it.
 * Also the KV-cache ops (kv_store, attention_cache) against the same kind of reference, for
 * tests/test_kv_attention.c and tests/test_cuda.c (the kvr_ section below).
 * Also rotary position ids (the other index a kernel reads as data): checked, never clamped.
 *
 * The rule (include/kernc.h, KC_MASK_CAUSAL): with P past keys and S_kv new ones, T = P + S_kv
 * keys in all (past first), key j is visible to query i iff j <= i + (T - S); a query with no
 * visible key gives 0 (the op's documented choice). Layouts: q [B, S, H*D], k/v [B, S_kv,
 * KVH*D], past K/V [B, KVH, P, D]; query head h reads kv head h / (H / KVH).
 * Header-only (static inline functions, each test using what it needs) because the tests are
 * separate programs; include it after kernc.h and ir/internal.h (the ops are built with
 * kc_graph_add_node).
 */
#ifndef KERNC_TESTS_ATTENTION_REF_H
#define KERNC_TESTS_ATTENTION_REF_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ar_case {
  int64_t B, S, Skv, P, H, KVH, D;
} ar_case;

/* Deterministic values in [-1, 1) (a 32-bit LCG), so a failure repeats. */
static inline float *ar_values(int64_t n, uint32_t seed) {
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  uint32_t s = seed * 2654435761u + 12345u;
  for (int64_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  return p;
}

/* y [B, S, H*D] of the rule above, in double; pk/pv NULL when P = 0. */
static inline double *ar_reference(const ar_case *c, const float *q, const float *k, const float *v,
                                   const float *pk, const float *pv) {
  int64_t T = c->P + c->Skv, off = T - c->S, D = c->D;
  double *y = calloc((size_t)(c->B * c->S * c->H * D), sizeof *y);
  double *w = malloc((size_t)(T > 0 ? T : 1) * sizeof *w);
  double scale = 1 / sqrt((double)D);
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t h = 0; h < c->H; h++)
      for (int64_t i = 0; i < c->S; i++) {
        int64_t hk = h / (c->H / c->KVH);
        const float *qr = q + ((b * c->S + i) * c->H + h) * D;
        double m = -INFINITY;
        for (int64_t j = 0; j < T; j++) {
          const float *kr = j < c->P ? pk + ((b * c->KVH + hk) * c->P + j) * D
                                     : k + ((b * c->Skv + (j - c->P)) * c->KVH + hk) * D;
          double s = 0;
          for (int64_t d = 0; d < D; d++)
            s += (double)qr[d] * kr[d];
          w[j] = j <= i + off ? s * scale : -INFINITY;
          m = fmax(m, w[j]);
        }
        if (m == -INFINITY) continue; /* no visible key: 0 */
        double sum = 0;
        for (int64_t j = 0; j < T; j++)
          sum += w[j] = exp(w[j] - m);
        double *yr = y + ((b * c->S + i) * c->H + h) * D;
        for (int64_t j = 0; j < T; j++) {
          const float *vr = j < c->P ? pv + ((b * c->KVH + hk) * c->P + j) * D
                                     : v + ((b * c->Skv + (j - c->P)) * c->KVH + hk) * D;
          for (int64_t d = 0; d < D; d++)
            yr[d] += w[j] / sum * vr[d];
        }
      }
  free(w);
  return y;
}

static inline kc_tensor_desc ar_desc(const char *name, int rank, const int64_t *dims,
                                     const float *data) {
  kc_tensor_desc d = {.name = name, .dtype = KC_F32, .rank = rank, .data = (void *)data};
  memcpy(d.dims, dims, (size_t)rank * sizeof *dims);
  return d;
}

/*
 * attention(q, k, v[, past_k, past_v]) {heads, kv_heads, mask=causal} compiled for target with
 * its default pipeline and run; y (B*S*H*D floats) copied into out. Failures go to msg.
 */
static inline kc_status ar_run(kc_context *ctx, const char *target, const ar_case *c,
                               const float *q, const float *k, const float *v, const float *pk,
                               const float *pv, float *out, char *msg, size_t size) {
  kc_graph *g = kc_graph_new(ctx, "causal");
  int64_t qd[3] = {c->B, c->S, c->H * c->D}, kd[3] = {c->B, c->Skv, c->KVH * c->D};
  int64_t pd[4] = {c->B, c->KVH, c->P, c->D};
  kc_dim dq[3] = {qd[0], qd[1], qd[2]}, dk[3] = {kd[0], kd[1], kd[2]};
  kc_dim dp[4] = {pd[0], pd[1], pd[2], pd[3]};
  kc_val in[6] = {kc_input(g, "q", KC_F32, 3, dq), kc_input(g, "k", KC_F32, 3, dk),
                  kc_input(g, "v", KC_F32, 3, dk)};
  if (c->P) {
    in[4] = kc_input(g, "past_k", KC_F32, 4, dp);
    in[5] = kc_input(g, "past_v", KC_F32, 4, dp);
  }
  kc_val y;
  uint32_t ni = kc_graph_add_node(g, KC_OP_ATTENTION, c->P ? 6 : 3, in, 1, &y);
  kc_node_set_int(g, ni, "heads", c->H);
  kc_node_set_int(g, ni, "kv_heads", c->KVH);
  kc_node_set_string(g, ni, "mask", "causal");
  kc_status s = kc_node_infer(g, ni);
  kc_output(g, y, "y");
  if (s == KC_OK) s = kc_graph_status(g);
  kc_module *m = NULL;
  kc_compile_options o = {.target = target};
  if (s == KC_OK) s = kc_compile(ctx, g, &o, &m);
  kc_tensor_desc ins[5] = {ar_desc("q", 3, qd, q), ar_desc("k", 3, kd, k), ar_desc("v", 3, kd, v),
                           ar_desc("past_k", 4, pd, pk), ar_desc("past_v", 4, pd, pv)},
                 res;
  if (s == KC_OK) s = kc_run(m, ins, c->P ? 5 : 3, &res, 1);
  if (s == KC_OK) memcpy(out, res.data, (size_t)(c->B * c->S * c->H * c->D) * sizeof *out);
  if (s != KC_OK) snprintf(msg, size, "%s", kc_last_error(ctx));
  kc_module_free(m);
  kc_graph_free(g);
  return s;
}

/* got against want within atol + rtol * |want|; the first difference into msg. */
static inline bool ar_close(const float *got, const double *want, int64_t n, double rtol,
                            double atol, char *msg, size_t size) {
  for (int64_t i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]))) {
      snprintf(msg, size, "element %lld is %.9g, expected %.9g", (long long)i, got[i], want[i]);
      return false;
    }
  return true;
}

/* One case with random inputs against the reference; false with msg on a mismatch. */
static inline bool ar_check(kc_context *ctx, const char *target, const ar_case *c, char *msg,
                            size_t size) {
  int64_t nq = c->B * c->S * c->H * c->D, nk = c->B * c->Skv * c->KVH * c->D;
  int64_t np = c->B * c->KVH * c->P * c->D;
  float *q = ar_values(nq, 1), *k = ar_values(nk, 2), *v = ar_values(nk, 3);
  float *pk = ar_values(np, 4), *pv = ar_values(np, 5), *y = malloc((size_t)nq * sizeof *y);
  double *want = ar_reference(c, q, k, v, pk, pv);
  bool ok = ar_run(ctx, target, c, q, k, v, pk, pv, y, msg, size) == KC_OK &&
            ar_close(y, want, nq, 1e-4, 1e-5, msg, size);
  free(q), free(k), free(v), free(pk), free(pv), free(y), free(want);
  return ok;
}

/*
 * A decoding step equals the full recomputation: causal attention over S tokens, against the
 * last n queries (a) with all S keys as new keys (no past; S_kv = S > n) and (b) with the first
 * S - n keys and values as a hand-built past cache [B, KVH, P, D] and the last n as new ones.
 * Both must give the full run's last n rows (within float rounding), and the full run the
 * reference. c gives B, H, KVH, D and the full length S (its Skv and P are ignored).
 */
static inline bool ar_decode(kc_context *ctx, const char *target, const ar_case *c, int64_t n,
                             char *msg, size_t size) {
  ar_case full = *c;
  full.Skv = full.S, full.P = 0;
  int64_t S = full.S, B = c->B, H = c->H, KVH = c->KVH, D = c->D, P = S - n;
  int64_t nq = B * S * H * D, nk = B * S * KVH * D;
  float *q = ar_values(nq, 11), *k = ar_values(nk, 12), *v = ar_values(nk, 13);
  float *yf = malloc((size_t)nq * sizeof *yf);
  double *want = ar_reference(&full, q, k, v, NULL, NULL);
  bool ok = ar_run(ctx, target, &full, q, k, v, NULL, NULL, yf, msg, size) == KC_OK &&
            ar_close(yf, want, nq, 1e-4, 1e-5, msg, size);
  /* the last n queries, the last n new keys and values, the cache of the first P */
  int64_t nql = B * n * H * D, nkl = B * n * KVH * D, npc = B * KVH * P * D;
  float *ql = malloc((size_t)nql * sizeof *ql), *kl = malloc((size_t)nkl * sizeof *kl);
  float *vl = malloc((size_t)nkl * sizeof *vl), *pk = malloc((size_t)(npc + 1) * sizeof *pk);
  float *pv = malloc((size_t)(npc + 1) * sizeof *pv), *ya = malloc((size_t)nql * sizeof *ya);
  float *yb = malloc((size_t)nql * sizeof *yb);
  double *tail = malloc((size_t)nql * sizeof *tail);
  for (int64_t b = 0; b < B; b++) {
    memcpy(ql + b * n * H * D, q + (b * S + P) * H * D, (size_t)(n * H * D) * sizeof *q);
    memcpy(kl + b * n * KVH * D, k + (b * S + P) * KVH * D, (size_t)(n * KVH * D) * sizeof *k);
    memcpy(vl + b * n * KVH * D, v + (b * S + P) * KVH * D, (size_t)(n * KVH * D) * sizeof *v);
    for (int64_t i = 0; i < n * H * D; i++)
      tail[b * n * H * D + i] = yf[(b * S + P) * H * D + i];
    for (int64_t h = 0; h < KVH; h++)
      for (int64_t j = 0; j < P; j++)
        for (int64_t d = 0; d < D; d++) {
          pk[((b * KVH + h) * P + j) * D + d] = k[((b * S + j) * KVH + h) * D + d];
          pv[((b * KVH + h) * P + j) * D + d] = v[((b * S + j) * KVH + h) * D + d];
        }
  }
  ar_case a = full, cb = full;
  a.S = n;                     /* (a): n queries against S new keys */
  cb.S = cb.Skv = n, cb.P = P; /* (b): n queries and keys after P cached */
  char sub[512] = "";
  if (ok && !(ar_run(ctx, target, &a, ql, k, v, NULL, NULL, ya, sub, sizeof sub) == KC_OK &&
              ar_close(ya, tail, nql, 1e-5, 1e-6, sub, sizeof sub))) {
    snprintf(msg, size, "last %lld queries against all %lld keys: %s", (long long)n, (long long)S,
             sub);
    ok = false;
  }
  if (ok && !(ar_run(ctx, target, &cb, ql, kl, vl, pk, pv, yb, sub, sizeof sub) == KC_OK &&
              ar_close(yb, tail, nql, 1e-5, 1e-6, sub, sizeof sub))) {
    snprintf(msg, size, "last %lld queries after a cache of %lld: %s", (long long)n, (long long)P,
             sub);
    ok = false;
  }
  free(q), free(k), free(v), free(yf), free(want), free(ql), free(kl), free(vl), free(pk), free(pv);
  free(ya), free(yb), free(tail);
  return ok;
}

/*
 * Rotary position ids index the cos/sin caches as ONNX's reference does (numpy: [-max_pos,
 * max_pos) valid, negative ones from the end); one outside that is an error naming the node
 * (loc 'rope'), never a clamp. x [2, 3, 2*8] (2 heads of 8), caches [10, 4]; positions with
 * -1 and -10 in range, then 10 and -11 out of range. false with msg on a failure.
 */
static inline bool ar_rotary_positions(kc_context *ctx, const char *target, char *msg,
                                       size_t size) {
  enum { B = 2, S = 3, H = 2, D = 8, C = 4, MAXPOS = 10 };
  kc_graph *g = kc_graph_new(ctx, "rope");
  kc_val x = kc_input(g, "x", KC_F32, 3, (kc_dim[]){B, S, H * D});
  kc_val cs = kc_input(g, "cos", KC_F32, 2, (kc_dim[]){MAXPOS, C});
  kc_val sn = kc_input(g, "sin", KC_F32, 2, (kc_dim[]){MAXPOS, C});
  kc_val pos = kc_input(g, "pos", KC_I64, 2, (kc_dim[]){B, S});
  kc_val y = kc_rotary(g, x, cs, sn, pos, H, 0);
  if (y.id) g->nodes[kc_value_of(g, y)->def - 1].loc = kc_arena_strdup(&g->arena, "rope");
  kc_output(g, y, "y");
  kc_module *m = NULL;
  kc_compile_options o = {.target = target};
  kc_status s = kc_graph_status(g);
  if (s == KC_OK) s = kc_compile(ctx, g, &o, &m);
  float *xv = ar_values(B * S * H * D, 21), *cv = ar_values(MAXPOS * C, 22);
  float *sv = ar_values(MAXPOS * C, 23);
  int64_t p[B * S] = {0, 3, -1, 9, -10, 5};
  kc_tensor_desc in[4] = {ar_desc("x", 3, (int64_t[]){B, S, H * D}, xv),
                          ar_desc("cos", 2, (int64_t[]){MAXPOS, C}, cv),
                          ar_desc("sin", 2, (int64_t[]){MAXPOS, C}, sv),
                          {.name = "pos", .dtype = KC_I64, .rank = 2, .dims = {B, S}, .data = p}},
                 out;
  bool ok = s == KC_OK;
  if (ok && (s = kc_run(m, in, 4, &out, 1)) != KC_OK) ok = false;
  for (int64_t r = 0; ok && r < B * S * H; r++) { /* row r: batch-position r / H, head r % H */
    int64_t q = p[r / H] < 0 ? p[r / H] + MAXPOS : p[r / H];
    const float *xr = xv + r * D, *yr = (const float *)out.data + r * D;
    for (int i = 0; i < C && ok; i++) {
      double c = cv[q * C + i], sv_ = sv[q * C + i];
      double w1 = xr[i] * c - xr[i + C] * sv_, w2 = xr[i] * sv_ + xr[i + C] * c;
      if (fabs(yr[i] - w1) > 1e-5 || fabs(yr[i + C] - w2) > 1e-5) {
        snprintf(msg, size, "row %lld pair %d: %g %g, expected %g %g", (long long)r, i, yr[i],
                 yr[i + C], w1, w2);
        ok = false;
      }
    }
  }
  if (!ok && !msg[0]) snprintf(msg, size, "%s", kc_last_error(ctx));
  static const int64_t bad[2] = {10, -11};
  for (int k = 0; k < 2 && ok; k++) {
    p[4] = bad[k];
    char want[128];
    snprintf(want, sizeof want,
             "index %lld at position 4 of its indices is out of range for "
             "axis 0 of size 10",
             (long long)bad[k]);
    s = kc_run(m, in, 4, &out, 1);
    if (s == KC_OK || !strstr(kc_last_error(ctx), "node 'rope' (rotary") ||
        !strstr(kc_last_error(ctx), want)) {
      snprintf(msg, size, "position %lld: %s (want \"%s\")", (long long)bad[k],
               s == KC_OK ? "ran without an error" : kc_last_error(ctx), want);
      ok = false;
    }
  }
  free(xv), free(cv), free(sv);
  kc_module_free(m);
  kc_graph_free(g);
  return ok;
}

/* ---- the KV cache: kv_store then attention_cache (ir/ops.def) -------------------------------- */

/*
 * A batch step over a hand-built cache: rows b with past[b] cached tokens and lens[b] new ones
 * (rows padded to S). The cache is f32[NBLK, L = 2, 2, KVH, BS, D] written at layer 1 (layer 0
 * holds other data): contiguous (bs = 0: one block of max_len per row, BS = the longest row) or
 * paged (bs > 0: blocks of bs tokens handed out in a shuffled order, one spare table column of
 * -1 per row and spare blocks in the pool). Every slot of layer 1 that holds no token is NaN, so
 * a kernel that reads an unwritten slot shows it. The expected values come from the plain C
 * reference below over the concatenated keys (the test's own rotary), never from kernc.
 */
typedef struct kvr_case {
  int64_t B, S, H, KVH, D;
  int64_t bs;     /* 0: contiguous */
  int rot;        /* rotary: 0 none, 1 rotate halves, 2 interleaved */
  bool mask;      /* an additive mask [B, 1, S, max past + S] */
  bool rank4;     /* q, k, v, y as [B, heads, S, D] */
  bool sym;       /* B, S, NBLK, MAXB, the layers L and BS symbolic in the graph */
  double softcap; /* > 0: the attention's softcap */
  int64_t past[4], lens[4];
} kvr_case;

enum { KVR_L = 2, KVR_LAYER = 1 };

typedef struct kvr_prob {
  kvr_case c;
  int64_t BS, NBLK, MAXB, maxpos, half, Tm, Tmax;
  float *cache, *want, *q, *k, *v, *cs, *sn, *mask;
  float *kh, *vh; /* every row's raw keys and values [B][Tmax][KVH][D] */
  int32_t *table;
} kvr_prob;

static inline int64_t kvr_off(const kvr_prob *p, int64_t blk, int kv, int64_t h, int64_t slot) {
  return ((((blk * KVR_L + KVR_LAYER) * 2 + kv) * p->c.KVH + h) * p->BS + slot) * p->c.D;
}

/* x (D floats) rotated to position pos (the caches' row), into out (doubles). */
static inline void kvr_rotate(const kvr_prob *p, const float *x, int64_t pos, double *out) {
  int64_t D = p->c.D, hf = p->half;
  for (int64_t d = 0; d < D; d++)
    out[d] = x[d];
  if (!p->c.rot) return;
  for (int64_t i = 0; i < hf; i++) {
    int64_t a = p->c.rot == 2 ? 2 * i : i, b = p->c.rot == 2 ? 2 * i + 1 : i + hf;
    double c = p->cs[pos * hf + i], s = p->sn[pos * hf + i];
    out[a] = x[a] * c - x[b] * s;
    out[b] = x[a] * s + x[b] * c;
  }
}

/* Position t of row b: its block (table entry) and slot. */
static inline int64_t kvr_slot(const kvr_prob *p, int64_t b, int64_t t, int64_t *slot) {
  *slot = t % p->BS;
  return p->table[b * p->MAXB + t / p->BS];
}

static inline void kvr_free(kvr_prob *p) {
  free(p->cache), free(p->want), free(p->q), free(p->k), free(p->v), free(p->cs), free(p->sn);
  free(p->mask), free(p->kh), free(p->vh), free(p->table);
}

/* Lay out the cache and the step's inputs; want = the cache after the step. */
static inline void kvr_build(kvr_prob *p, const kvr_case *c, uint32_t seed) {
  memset(p, 0, sizeof *p);
  p->c = *c;
  int64_t B = c->B, S = c->S, H = c->H, KVH = c->KVH, D = c->D, maxp = 0;
  for (int64_t b = 0; b < B; b++) {
    int64_t t = c->past[b] + c->lens[b];
    p->Tmax = t > p->Tmax ? t : p->Tmax;
    maxp = c->past[b] > maxp ? c->past[b] : maxp;
  }
  uint32_t r = seed * 2654435761u + 7u;
  if (c->bs) {
    p->BS = c->bs;
    for (int64_t b = 0; b < B; b++) {
      int64_t nb = (c->past[b] + c->lens[b] + p->BS - 1) / p->BS;
      p->MAXB = nb > p->MAXB ? nb : p->MAXB;
      p->NBLK += nb;
    }
    p->MAXB += 1; /* a spare column of -1 */
    p->NBLK += 3; /* spare blocks */
  } else {
    p->BS = p->Tmax > 0 ? p->Tmax : 1;
    p->MAXB = 1;
    p->NBLK = B + 1;
  }
  /* a shuffled order of the pool's blocks, handed out row by row */
  int64_t *order = malloc((size_t)p->NBLK * sizeof *order), next = 0;
  for (int64_t i = 0; i < p->NBLK; i++)
    order[i] = i;
  for (int64_t i = p->NBLK - 1; i > 0; i--) {
    r = r * 1664525u + 1013904223u;
    int64_t j = (int64_t)(r >> 8) % (i + 1), t = order[i];
    order[i] = order[j], order[j] = t;
  }
  p->table = malloc((size_t)(B * p->MAXB) * sizeof *p->table);
  for (int64_t b = 0; b < B; b++) {
    int64_t nb = (c->past[b] + c->lens[b] + p->BS - 1) / p->BS;
    for (int64_t k = 0; k < p->MAXB; k++)
      p->table[b * p->MAXB + k] = k < nb || (!c->bs && k == 0) ? (int32_t)order[next++] : -1;
  }
  free(order);
  /* rotary caches: real angles, half = D / 2 */
  p->half = D / 2;
  p->maxpos = p->Tmax + 2;
  p->cs = malloc((size_t)(p->maxpos * (p->half ? p->half : 1)) * sizeof *p->cs);
  p->sn = malloc((size_t)(p->maxpos * (p->half ? p->half : 1)) * sizeof *p->sn);
  for (int64_t t = 0; t < p->maxpos; t++)
    for (int64_t i = 0; i < p->half; i++) {
      double a = (double)t * pow(10000.0, -2.0 * (double)i / (double)D);
      p->cs[t * p->half + i] = (float)cos(a);
      p->sn[t * p->half + i] = (float)sin(a);
    }
  /* the cache: other data everywhere, NaN in every slot of the layer, then the past tokens */
  int64_t ncache = p->NBLK * KVR_L * 2 * KVH * p->BS * D;
  p->cache = ar_values(ncache, seed + 1);
  for (int64_t blk = 0; blk < p->NBLK; blk++)
    for (int kv = 0; kv < 2; kv++)
      for (int64_t h = 0; h < KVH; h++)
        for (int64_t i = 0; i < p->BS * D; i++)
          p->cache[kvr_off(p, blk, kv, h, 0) + i] = NAN;
  int64_t nh = B * (p->Tmax ? p->Tmax : 1) * KVH * D;
  p->kh = ar_values(nh, seed + 2);
  p->vh = ar_values(nh, seed + 3);
  p->want = malloc((size_t)ncache * sizeof *p->want);
  double *rot = malloc((size_t)D * sizeof *rot);
  for (int pass = 0; pass < 2; pass++) {
    float *dst = pass ? p->want : p->cache;
    if (pass) memcpy(p->want, p->cache, (size_t)ncache * sizeof *p->want);
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < c->past[b] + (pass ? c->lens[b] : 0); t++)
        for (int64_t h = 0; h < KVH; h++) {
          int64_t slot, blk = kvr_slot(p, b, t, &slot);
          const float *kx = p->kh + ((b * p->Tmax + t) * KVH + h) * D;
          const float *vx = p->vh + ((b * p->Tmax + t) * KVH + h) * D;
          kvr_rotate(p, kx, t, rot);
          for (int64_t d = 0; d < D; d++) {
            dst[kvr_off(p, blk, 0, h, slot) + d] = (float)rot[d];
            dst[kvr_off(p, blk, 1, h, slot) + d] = vx[d];
          }
        }
  }
  free(rot);
  /* new keys and values [B, S, KVH, D] (or [B, KVH, S, D]): the row's next tokens, junk in the
   * padding */
  p->k = malloc((size_t)(B * S * KVH * D) * sizeof *p->k);
  p->v = malloc((size_t)(B * S * KVH * D) * sizeof *p->v);
  for (int64_t b = 0; b < B; b++)
    for (int64_t s = 0; s < S; s++)
      for (int64_t h = 0; h < KVH; h++)
        for (int64_t d = 0; d < D; d++) {
          int64_t o = c->rank4 ? ((b * KVH + h) * S + s) * D + d : ((b * S + s) * KVH + h) * D + d;
          int64_t hi = ((b * p->Tmax + c->past[b] + s) * KVH + h) * D + d;
          bool live = s < c->lens[b];
          p->k[o] = live ? p->kh[hi] : 77.0f;
          p->v[o] = live ? p->vh[hi] : -55.0f;
        }
  p->q = ar_values(B * S * H * D, seed + 4);
  p->Tm = maxp + S;
  p->mask = ar_values(B * S * p->Tm, seed + 5);
  for (int64_t i = 0; i < B * S * p->Tm; i++)
    if (i % 7 == 3) p->mask[i] = -INFINITY;
}

/* y [B, S, H, D] (or [B, H, S, D]) of the valid rows (padding rows stay 0), in double. */
static inline double *kvr_reference(const kvr_prob *p) {
  const kvr_case *c = &p->c;
  int64_t S = c->S, H = c->H, KVH = c->KVH, D = c->D;
  double *y = calloc((size_t)(c->B * S * H * D), sizeof *y);
  double *qr = malloc((size_t)D * sizeof *qr), *kr = malloc((size_t)D * sizeof *kr);
  double *w = malloc((size_t)(p->Tmax + 1) * sizeof *w), scale = 1 / sqrt((double)D);
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t i = 0; i < c->lens[b]; i++)
      for (int64_t h = 0; h < H; h++) {
        int64_t hk = h / (H / KVH), n = c->past[b] + i + 1;
        int64_t qo = c->rank4 ? ((b * H + h) * S + i) * D : ((b * S + i) * H + h) * D;
        float qf[512];
        memcpy(qf, p->q + qo, (size_t)D * sizeof *qf);
        kvr_rotate(p, qf, c->past[b] + i, qr);
        double m = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
          kvr_rotate(p, p->kh + ((b * p->Tmax + j) * KVH + hk) * D, j, kr);
          double s = 0;
          for (int64_t d = 0; d < D; d++)
            s += qr[d] * kr[d];
          s *= scale;
          if (c->softcap > 0) s = c->softcap * tanh(s / c->softcap);
          if (c->mask) s += p->mask[(b * S + i) * p->Tm + j];
          w[j] = s;
          m = fmax(m, s);
        }
        if (m == -INFINITY) continue;
        double sum = 0;
        for (int64_t j = 0; j < n; j++)
          sum += w[j] = exp(w[j] - m);
        for (int64_t j = 0; j < n; j++)
          for (int64_t d = 0; d < D; d++)
            y[qo + d] += w[j] / sum * p->vh[((b * p->Tmax + j) * KVH + hk) * D + d];
      }
  free(qr), free(kr), free(w);
  return y;
}

/* Names of the nodes, for the errors they report. */
#define KVR_STORE "kvs"
#define KVR_ATT "attc"

/*
 * The step's graph: cache' = kv_store(cache, k, v, table, past, lens[, cos, sin]) {layer 1},
 * y = attention_cache(q, cache', table, past, lens[, mask, cos, sin]); outputs y and cache'.
 * store = false: attention_cache alone over the input cache (output y only).
 */
static inline kc_status kvr_compile(kc_context *ctx, const char *target, const kvr_prob *p,
                                    bool store, kc_module **m) {
  const kvr_case *c = &p->c;
  kc_graph *g = kc_graph_new(ctx, "kv_step");
  kc_dim B = c->sym ? kc_sym(g, "B") : c->B, S = c->sym ? kc_sym(g, "S") : c->S;
  kc_dim N = c->sym ? kc_sym(g, "N") : p->NBLK, M = c->sym ? kc_sym(g, "M") : p->MAXB;
  kc_dim qd[4] = {B, S, c->H * c->D}, kd[4] = {B, S, c->KVH * c->D};
  if (c->rank4) {
    qd[1] = c->H, qd[2] = S, qd[3] = c->D;
    kd[1] = c->KVH, kd[2] = S, kd[3] = c->D;
  }
  int qr = c->rank4 ? 4 : 3;
  kc_dim cd[6] = {N,      c->sym ? kc_sym(g, "L") : KVR_L,  2,
                  c->KVH, c->sym ? kc_sym(g, "BS") : p->BS, c->D};
  kc_dim td[2] = {B, M}, bd[1] = {B};
  kc_dim rd[2] = {p->maxpos, p->half}, md[4] = {B, 1, S, c->sym ? kc_sym(g, "T") : p->Tm};
  kc_val q = kc_input(g, "q", KC_F32, qr, qd), k = kc_input(g, "k", KC_F32, qr, kd);
  kc_val v = kc_input(g, "v", KC_F32, qr, kd), cache = kc_input(g, "cache", KC_F32, 6, cd);
  kc_val table = kc_input(g, "table", KC_I32, 2, td), past = kc_input(g, "past", KC_I64, 1, bd);
  kc_val lens = kc_input(g, "lens", KC_I64, 1, bd), cs = {0}, sn = {0}, mask = {0};
  if (c->rot) cs = kc_input(g, "cos", KC_F32, 2, rd), sn = kc_input(g, "sin", KC_F32, 2, rd);
  if (c->mask) mask = kc_input(g, "mask", KC_F32, 4, md);
  kc_status s = KC_OK;
  kc_val c2 = cache;
  if (store) {
    kc_val in[8] = {cache, k, v, table, past, lens, cs, sn};
    uint32_t ni = kc_graph_add_node(g, KC_OP_KV_STORE, c->rot ? 8 : 6, in, 1, &c2);
    kc_node_set_int(g, ni, "layer", KVR_LAYER);
    kc_node_set_int(g, ni, "kv_heads", c->KVH);
    if (c->rot == 2) kc_node_set_int(g, ni, "rotary_interleaved", 1);
    g->nodes[ni].loc = kc_arena_strdup(&g->arena, KVR_STORE);
    s = kc_node_infer(g, ni);
  }
  kc_val in[8] = {q, c2, table, past, lens, mask, cs, sn}, y;
  uint32_t ni = kc_graph_add_node(g, KC_OP_ATTENTION_CACHE,
                                  c->rot    ? 8
                                  : c->mask ? 6
                                            : 5,
                                  in, 1, &y);
  kc_node_set_int(g, ni, "heads", c->H);
  kc_node_set_int(g, ni, "kv_heads", c->KVH);
  kc_node_set_int(g, ni, "layer", KVR_LAYER);
  if (c->rot == 2) kc_node_set_int(g, ni, "rotary_interleaved", 1);
  if (c->softcap > 0) kc_node_set_float(g, ni, "softcap", c->softcap);
  g->nodes[ni].loc = kc_arena_strdup(&g->arena, KVR_ATT);
  if (s == KC_OK) s = kc_node_infer(g, ni);
  kc_output(g, y, "y");
  if (store) kc_output(g, c2, "cache_out");
  if (s == KC_OK) s = kc_graph_status(g);
  kc_compile_options o = {.target = target, .threads = 2};
  if (s == KC_OK) s = kc_compile(ctx, g, &o, m);
  kc_graph_free(g);
  return s;
}

/* Run the step on p's inputs (cache: the cache to pass); outputs into out[2]. */
static inline kc_status kvr_run(kc_module *m, const kvr_prob *p, float *cache, int64_t *past,
                                int64_t *lens, kc_tensor_desc *out, uint32_t nout) {
  const kvr_case *c = &p->c;
  int64_t qd[4] = {c->B, c->S, c->H * c->D}, kd[4] = {c->B, c->S, c->KVH * c->D};
  if (c->rank4) {
    qd[1] = c->H, qd[2] = c->S, qd[3] = c->D;
    kd[1] = c->KVH, kd[2] = c->S, kd[3] = c->D;
  }
  int qr = c->rank4 ? 4 : 3;
  int64_t cd[6] = {p->NBLK, KVR_L, 2, c->KVH, p->BS, c->D}, td[2] = {c->B, p->MAXB};
  int64_t bd[1] = {c->B}, rd[2] = {p->maxpos, p->half}, md[4] = {c->B, 1, c->S, p->Tm};
  kc_tensor_desc in[10] = {
      ar_desc("q", qr, qd, p->q),
      ar_desc("k", qr, kd, p->k),
      ar_desc("v", qr, kd, p->v),
      ar_desc("cache", 6, cd, cache),
      {.name = "table", .dtype = KC_I32, .rank = 2, .dims = {td[0], td[1]}, .data = p->table},
      {.name = "past", .dtype = KC_I64, .rank = 1, .dims = {bd[0]}, .data = past},
      {.name = "lens", .dtype = KC_I64, .rank = 1, .dims = {bd[0]}, .data = lens},
  };
  uint32_t n = 7;
  if (c->rot) in[n++] = ar_desc("cos", 2, rd, p->cs), in[n++] = ar_desc("sin", 2, rd, p->sn);
  if (c->mask) in[n++] = ar_desc("mask", 4, md, p->mask);
  return kc_run(m, in, n, out, nout);
}

/*
 * One case against the reference: y's valid rows, finite padding rows, the cache written by
 * kv_store (exactly where nothing rotates; NaN left where no token is), and on the CPU the
 * input cache itself updated in place. false with msg on a failure.
 */
static inline bool kvr_check(kc_context *ctx, const char *target, const kvr_case *c, char *msg,
                             size_t size) {
  kvr_prob p;
  kvr_build(&p, c, (uint32_t)(c->B * 131 + c->S * 17 + c->D + c->past[0]));
  kc_module *m = NULL;
  kc_tensor_desc out[2];
  int64_t past[4], lens[4];
  memcpy(past, c->past, sizeof past), memcpy(lens, c->lens, sizeof lens);
  bool ok = kvr_compile(ctx, target, &p, true, &m) == KC_OK &&
            kvr_run(m, &p, p.cache, past, lens, out, 2) == KC_OK;
  if (!ok) snprintf(msg, size, "%s", kc_last_error(ctx));
  int64_t S = c->S, H = c->H, D = c->D;
  double *want = ok ? kvr_reference(&p) : NULL;
  const float *y = ok ? out[0].data : NULL;
  for (int64_t b = 0; ok && b < c->B; b++)
    for (int64_t i = 0; ok && i < S; i++)
      for (int64_t h = 0; ok && h < H; h++)
        for (int64_t d = 0; ok && d < D; d++) {
          int64_t o = c->rank4 ? ((b * H + h) * S + i) * D + d : ((b * S + i) * H + h) * D + d;
          bool live = i < c->lens[b];
          if (live ? !(fabs(y[o] - want[o]) <= 1e-5 + 1e-4 * fabs(want[o])) : !isfinite(y[o])) {
            snprintf(msg, size, "y[b %lld, row %lld, head %lld, %lld] is %.9g, expected %s%.9g",
                     (long long)b, (long long)i, (long long)h, (long long)d, y[o],
                     live ? "" : "a finite value, not ", live ? want[o] : y[o]);
            ok = false;
          }
        }
  int64_t ncache = p.NBLK * KVR_L * 2 * c->KVH * p.BS * c->D;
  const float *co = ok ? out[1].data : NULL;
  for (int64_t i = 0; ok && i < ncache; i++) {
    bool same = isnan(p.want[i]) ? isnan(co[i]) : fabs(co[i] - p.want[i]) <= (c->rot ? 1e-6 : 0);
    if (!same) {
      snprintf(msg, size, "cache element %lld is %.9g, expected %.9g", (long long)i, co[i],
               p.want[i]);
      ok = false;
    }
  }
  if (ok && !strcmp(target, "cpu") && memcmp(p.cache, co, (size_t)ncache * sizeof *co) != 0) {
    snprintf(msg, size, "the input cache was not updated in place");
    ok = false;
  }
  free(want);
  kc_module_free(m);
  kvr_free(&p);
  return ok;
}

/*
 * Generation through one compiled step (B, S, NBLK, MAXB symbolic): a prefill of the first
 * rows' tokens, then decoding steps of one token, the cache passed from step to step (the
 * kv_store result fed back). Every step's y against the reference of that step.
 */
static inline bool kvr_generate(kc_context *ctx, const char *target, const kvr_case *c0, int steps,
                                char *msg, size_t size) {
  /* the full problem: past 0, lens = the prompt plus the decoded tokens */
  kvr_case full = *c0;
  full.sym = true, full.rank4 = false;
  int64_t prompt[4];
  for (int64_t b = 0; b < c0->B; b++) {
    prompt[b] = c0->lens[b];
    full.past[b] = 0;
    full.lens[b] = c0->lens[b] + steps;
  }
  full.S = 0;
  for (int64_t b = 0; b < c0->B; b++)
    full.S = full.lens[b] > full.S ? full.lens[b] : full.S;
  kvr_prob all;
  kvr_build(&all, &full, 99);
  /* the reference over every position at once */
  double *want = kvr_reference(&all);
  kvr_prob step = all; /* shares the buffers of `all`: only q, k, v and the mask differ */
  step.c.S = c0->S;
  kc_module *m = NULL;
  bool ok = kvr_compile(ctx, target, &step, true, &m) == KC_OK;
  if (!ok) snprintf(msg, size, "compile: %s", kc_last_error(ctx));
  int64_t H = c0->H, KVH = c0->KVH, D = c0->D, S = c0->S;
  size_t ncache = (size_t)(all.NBLK * KVR_L * 2 * KVH * all.BS * D);
  float *cache = malloc(ncache * sizeof *cache);
  memcpy(cache, all.cache, ncache * sizeof *cache);
  float *q = malloc((size_t)(c0->B * S * H * D) * sizeof *q);
  float *k = malloc((size_t)(c0->B * S * KVH * D) * sizeof *k);
  float *v = malloc((size_t)(c0->B * S * KVH * D) * sizeof *v);
  float *mask = malloc((size_t)(c0->B * S * all.Tm) * sizeof *mask);
  step.q = q, step.k = k, step.v = v, step.mask = mask;
  for (int st = 0; ok && st <= steps; st++) {
    int64_t past[4], lens[4];
    step.c.S = st ? 1 : S;
    for (int64_t b = 0; b < c0->B; b++) {
      past[b] = st ? prompt[b] + st - 1 : 0;
      lens[b] = st ? 1 : prompt[b];
    }
    int64_t Sn = step.c.S;
    step.Tm = all.Tm; /* the mask spans every position: a wider T than the step needs */
    for (int64_t b = 0; b < c0->B; b++)
      for (int64_t i = 0; i < Sn; i++) {
        int64_t t = past[b] + i, tt = t < full.S ? t : full.S - 1;
        memcpy(q + ((b * Sn + i) * H) * D, all.q + ((b * full.S + tt) * H) * D,
               (size_t)(H * D) * sizeof *q);
        for (int64_t h = 0; h < KVH; h++)
          for (int64_t d = 0; d < D; d++) {
            int64_t hi = ((b * all.Tmax + (t < all.Tmax ? t : 0)) * KVH + h) * D + d;
            k[((b * Sn + i) * KVH + h) * D + d] = i < lens[b] ? all.kh[hi] : 77.0f;
            v[((b * Sn + i) * KVH + h) * D + d] = i < lens[b] ? all.vh[hi] : -55.0f;
          }
        memcpy(mask + (b * Sn + i) * all.Tm, all.mask + (b * full.S + tt) * all.Tm,
               (size_t)all.Tm * sizeof *mask);
      }
    kc_tensor_desc out[2];
    if (kvr_run(m, &step, cache, past, lens, out, 2) != KC_OK) {
      snprintf(msg, size, "step %d: %s", st, kc_last_error(ctx));
      ok = false;
      break;
    }
    memcpy(cache, out[1].data, ncache * sizeof *cache);
    const float *y = out[0].data;
    for (int64_t b = 0; ok && b < c0->B; b++)
      for (int64_t i = 0; ok && i < lens[b]; i++)
        for (int64_t e = 0; ok && e < H * D; e++) {
          double w = want[((b * full.S + past[b] + i) * H) * D + e];
          float got = y[(b * Sn + i) * H * D + e];
          if (!(fabs(got - w) <= 1e-5 + 1e-4 * fabs(w))) {
            snprintf(msg, size, "step %d, b %lld, row %lld, element %lld: %.9g, expected %.9g", st,
                     (long long)b, (long long)i, (long long)e, got, w);
            ok = false;
          }
        }
  }
  free(q), free(k), free(v), free(mask), free(cache), free(want);
  kc_module_free(m);
  kvr_free(&all);
  return ok;
}

/* kc_run fails and its message has want (and names node `node`). */
static inline bool kvr_fails(kc_context *ctx, kc_module *m, const kvr_prob *p, float *cache,
                             int64_t *past, int64_t *lens, const char *node, const char *want,
                             const char *what, char *msg, size_t size) {
  kc_tensor_desc out[2];
  kc_status s = kvr_run(m, p, cache, past, lens, out, 2);
  char who[64];
  snprintf(who, sizeof who, "node '%s' (%s", node,
           strcmp(node, KVR_STORE) ? "attention_cache" : "kv_store");
  if (s != KC_OK && strstr(kc_last_error(ctx), who) && strstr(kc_last_error(ctx), want))
    return true;
  snprintf(msg, size, "%s: %s (want \"%s\" from %s)", what,
           s == KC_OK ? "ran without an error" : kc_last_error(ctx), want, who);
  return false;
}

/*
 * Bad tables are errors naming the node, never reads or writes out of the cache: paged, BS 4,
 * table [2, 3]; row 0 has past 5, row 1 past 2, one or two new tokens each (S = 2 or 1).
 *   - row 1's entry for its new token outside [0, NBLK) (NBLK, then -1): kv_store, position 3;
 *   - row 1 at past 12, needing block 3 of a 3-column table: kv_store, the row's last entry 5;
 *   - row 0's block 0 (past tokens only) bad: kv_store passes, attention_cache reports position 0.
 */
static inline bool kvr_errors(kc_context *ctx, const char *target, int64_t S, char *msg,
                              size_t size) {
  kvr_case c = {.B = 2, .S = S, .H = 4, .KVH = 2, .D = 8, .bs = 4, .past = {5, 2}, .lens = {S, 1}};
  kvr_prob p;
  kvr_build(&p, &c, 5);
  kc_module *m = NULL;
  bool ok = kvr_compile(ctx, target, &p, true, &m) == KC_OK;
  if (!ok) snprintf(msg, size, "compile: %s", kc_last_error(ctx));
  int64_t past[2] = {5, 2}, lens[2] = {S, 1};
  kc_tensor_desc out[2];
  if (ok && kvr_run(m, &p, p.cache, past, lens, out, 2) != KC_OK) {
    snprintf(msg, size, "a good table: %s", kc_last_error(ctx));
    ok = false;
  }
  char want[160];
  int32_t saved = p.table[3];
  static const int32_t bad[2] = {0, -1};
  for (int i = 0; ok && i < 2; i++) {
    p.table[3] = i ? bad[1] : (int32_t)p.NBLK;
    snprintf(want, sizeof want,
             "index %d at position 3 of its indices is out of range for axis 0 of size %lld",
             (int)p.table[3], (long long)p.NBLK);
    ok = kvr_fails(ctx, m, &p, p.cache, past, lens, KVR_STORE, want, "a bad entry", msg, size);
  }
  p.table[3] = saved;
  past[1] = 12;
  snprintf(want, sizeof want,
           "index %d at position 5 of its indices is out of range for axis 0 of size %lld",
           (int)p.table[5], (long long)p.NBLK);
  if (ok)
    ok = kvr_fails(ctx, m, &p, p.cache, past, lens, KVR_STORE, want, "past the table", msg, size);
  past[1] = 2;
  saved = p.table[0];
  p.table[0] = 99;
  snprintf(want, sizeof want,
           "index 99 at position 0 of its indices is out of range for axis 0 of size %lld",
           (long long)p.NBLK);
  if (ok)
    ok = kvr_fails(ctx, m, &p, p.cache, past, lens, KVR_ATT, want, "a bad past block", msg, size);
  p.table[0] = saved;
  kc_module_free(m);
  kvr_free(&p);
  return ok;
}

/*
 * Blocks of no token (BS = 0, a symbolic BS): a new token, and any key a row sees, is outside
 * the table: an error naming kv_store (the row's last entry), never a division by zero; with no
 * new token and no past nothing is read and the run succeeds.
 */
static inline bool kvr_empty_blocks(kc_context *ctx, const char *target, char *msg, size_t size) {
  kvr_case c = {.B = 2, .S = 1, .H = 4, .KVH = 2, .D = 8, .bs = 4, .sym = true};
  c.past[0] = 1, c.past[1] = 2, c.lens[0] = c.lens[1] = 1;
  kvr_prob p;
  kvr_build(&p, &c, 6);
  kc_module *m = NULL;
  bool ok = kvr_compile(ctx, target, &p, true, &m) == KC_OK;
  if (!ok) snprintf(msg, size, "compile: %s", kc_last_error(ctx));
  p.BS = 0;
  int64_t past[2] = {1, 2}, lens[2] = {1, 0}; /* one bad row: a device reports any it meets */
  char want[160];
  snprintf(want, sizeof want,
           "index %d at position %lld of its indices is out of range for axis 0 of size %lld",
           (int)p.table[p.MAXB - 1], (long long)(p.MAXB - 1), (long long)p.NBLK);
  if (ok)
    ok = kvr_fails(ctx, m, &p, p.cache, past, lens, KVR_STORE, want, "empty blocks", msg, size);
  past[0] = past[1] = lens[0] = lens[1] = 0;
  kc_tensor_desc out[2];
  if (ok && kvr_run(m, &p, p.cache, past, lens, out, 2) != KC_OK) {
    snprintf(msg, size, "empty blocks, nothing to store or read: %s", kc_last_error(ctx));
    ok = false;
  }
  kc_module_free(m);
  kvr_free(&p);
  return ok;
}

#endif /* KERNC_TESTS_ATTENTION_REF_H */
