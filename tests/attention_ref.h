/*
 * tests/attention_ref.h - causal attention with past keys, shared by tests/test_attention.c (CPU)
 * and tests/test_cuda.c (the CUDA target): a plain C reference of kernc's attention op with
 * mask=causal, and a runner that builds the op as a graph, compiles it for a target and runs it.
 * Also rotary position ids (the other index a kernel reads as data): checked, never clamped.
 *
 * The rule (include/kernc.h, KC_MASK_CAUSAL): with P past keys and S_kv new ones, T = P + S_kv
 * keys in all (past first), key j is visible to query i iff j <= i + (T - S); a query with no
 * visible key gives 0 (the op's documented choice). Layouts: q [B, S, H*D], k/v [B, S_kv,
 * KVH*D], past K/V [B, KVH, P, D]; query head h reads kv head h / (H / KVH).
 * Header-only (static functions) because the two tests are separate programs; include it after
 * kernc.h and ir/internal.h (the op is built with kc_graph_add_node).
 */
#ifndef KERNC_TESTS_ATTENTION_REF_H
#define KERNC_TESTS_ATTENTION_REF_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ar_case {
  int64_t B, S, Skv, P, H, KVH, D;
} ar_case;

/* Deterministic values in [-1, 1) (a 32-bit LCG), so a failure repeats. */
static float *ar_values(int64_t n, uint32_t seed) {
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  uint32_t s = seed * 2654435761u + 12345u;
  for (int64_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  return p;
}

/* y [B, S, H*D] of the rule above, in double; pk/pv NULL when P = 0. */
static double *ar_reference(const ar_case *c, const float *q, const float *k, const float *v,
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

static kc_tensor_desc ar_desc(const char *name, int rank, const int64_t *dims, const float *data) {
  kc_tensor_desc d = {.name = name, .dtype = KC_F32, .rank = rank, .data = (void *)data};
  memcpy(d.dims, dims, (size_t)rank * sizeof *dims);
  return d;
}

/*
 * attention(q, k, v[, past_k, past_v]) {heads, kv_heads, mask=causal} compiled for target with
 * its default pipeline and run; y (B*S*H*D floats) copied into out. Failures go to msg.
 */
static kc_status ar_run(kc_context *ctx, const char *target, const ar_case *c, const float *q,
                        const float *k, const float *v, const float *pk, const float *pv,
                        float *out, char *msg, size_t size) {
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
static bool ar_close(const float *got, const double *want, int64_t n, double rtol, double atol,
                     char *msg, size_t size) {
  for (int64_t i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]))) {
      snprintf(msg, size, "element %lld is %.9g, expected %.9g", (long long)i, got[i], want[i]);
      return false;
    }
  return true;
}

/* One case with random inputs against the reference; false with msg on a mismatch. */
static bool ar_check(kc_context *ctx, const char *target, const ar_case *c, char *msg,
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
static bool ar_decode(kc_context *ctx, const char *target, const ar_case *c, int64_t n, char *msg,
                      size_t size) {
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
static bool ar_rotary_positions(kc_context *ctx, const char *target, char *msg, size_t size) {
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

#endif /* KERNC_TESTS_ATTENTION_REF_H */
