/*
 * tools/bench_decode.c - `kernc bench --decode MODEL`: a causal decoder through a decoding
 * session (kc_session, the KV cache kernc derives): the prefill of --prefill tokens, then decode
 * steps of one token at each --contexts length C (the last timed step attending over C keys), and
 * for each: median ms per token over --iters steps, tokens per second, and the cache's bytes
 * (per token, and at that context). The contiguous cache unless --paged.
 *
 * Each context is prefilled afresh (a new sequence of C - warmup - iters random ids), then --warmup
 * untimed steps and --iters timed steps, each decoding one random id; the context grows by one
 * per step, so a row's timed steps attend over C - iters + 1 .. C keys, and a model with P
 * positions (GPT-2: 1024) can be measured at C = P.
 */
#include "ir/internal.h"
#include "tools/bench_decode.h"
#include "tools/cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static uint64_t next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* Median ms of a prefill of n random ids into a fresh sequence (reps times). */
static int prefill_ms(kc_context *ctx, kc_session *s, int64_t n, int reps, uint64_t *rng,
                      int64_t *ids, float *logits, double *ms) {
  double t[16];
  int64_t vocab = kc_session_vocab(s);
  for (int r = 0; r < reps; r++) {
    int32_t seq;
    kc_status st = kc_session_seq_new(s, &seq);
    for (int64_t i = 0; i < n; i++)
      ids[i] = (int64_t)(next(rng) % (uint64_t)vocab);
    kc_decode_entry e = {seq, (int32_t)n, ids, logits, 0};
    double t0 = now_ms();
    if (st == KC_OK) st = kc_session_decode(s, &e, 1);
    t[r] = now_ms() - t0;
    kc_session_seq_free(s, seq);
    if (st != KC_OK) return cli_fail(ctx, st, NULL);
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_double);
  *ms = t[reps / 2];
  return -1;
}

int bench_decode(kc_context *ctx, const kc_graph *g, const bench_decode_opts *o) {
  int64_t most = o->prefill;
  for (int i = 0; i < o->ncontexts; i++)
    if (o->contexts[i] > most) most = o->contexts[i];
  kc_session_options so = {.threads = o->threads,
                           .paged = o->paged,
                           .max_tokens = most + 64,
                           .max_len = most + 1,
                           .max_seqs = 1};
  kc_session *s = NULL;
  double t0 = now_ms();
  kc_status st = kc_session_new(ctx, g, &so, &s);
  if (st != KC_OK) return cli_fail(ctx, st, o->path);
  double compile_ms = now_ms() - t0;
  int64_t vocab = kc_session_vocab(s), per_tok = kc_session_cache_bytes_per_token(s);
  int64_t *ids = malloc((size_t)most * sizeof *ids);
  float *logits = malloc((size_t)vocab * sizeof *logits);
  double *t = malloc((size_t)o->iters * sizeof *t);
  uint64_t rng = 42;
  int rc = ids && logits && t ? -1 : (fprintf(stderr, "kernc: out of memory\n"), 1);
  printf("model        %s\n", o->path);
  printf("session      compiled in %.0f ms; %s cache, %lld bytes per token; vocabulary %lld; "
         "threads %d\n",
         compile_ms, o->paged ? "paged (blocks of 16 tokens)" : "contiguous", (long long)per_tok,
         (long long)vocab, o->threads);
  double pre = 0;
  if (rc < 0) rc = prefill_ms(ctx, s, o->prefill, 5, &rng, ids, logits, &pre);
  if (rc < 0)
    printf("prefill      %lld tokens: %.2f ms (median of 5), %.0f tokens/s\n",
           (long long)o->prefill, pre, 1e3 * (double)o->prefill / pre);
  if (rc < 0) printf("\n%9s %12s %10s %14s\n", "context", "ms/token", "tokens/s", "cache bytes");
  for (int c = 0; c < o->ncontexts && rc < 0; c++) {
    int64_t ctxlen = o->contexts[c], pre_len = ctxlen - o->warmup - o->iters;
    if (pre_len < 1) {
      fprintf(stderr, "kernc: context %lld: must exceed --warmup + --iters (%d)\n",
              (long long)ctxlen, o->warmup + o->iters);
      rc = 2;
      break;
    }
    int32_t seq;
    st = kc_session_seq_new(s, &seq);
    for (int64_t i = 0; i < pre_len; i++)
      ids[i] = (int64_t)(next(&rng) % (uint64_t)vocab);
    kc_decode_entry e = {seq, (int32_t)pre_len, ids, logits, 0};
    if (st == KC_OK) st = kc_session_decode(s, &e, 1);
    for (int i = 0; i < o->warmup + o->iters && st == KC_OK; i++) {
      int64_t tok = (int64_t)(next(&rng) % (uint64_t)vocab);
      kc_decode_entry d = {seq, 1, &tok, logits, 0};
      double a = now_ms();
      st = kc_session_decode(s, &d, 1);
      if (i >= o->warmup) t[i - o->warmup] = now_ms() - a;
    }
    kc_session_seq_free(s, seq);
    if (st != KC_OK) {
      rc = cli_fail(ctx, st, o->path);
      break;
    }
    qsort(t, (size_t)o->iters, sizeof *t, cmp_double);
    double med = t[o->iters / 2];
    printf("%9lld %12.3f %10.1f %14lld\n", (long long)ctxlen, med, 1e3 / med,
           (long long)(per_tok * ctxlen));
  }
  free(ids);
  free(logits);
  free(t);
  kc_session_free(s);
  return rc < 0 ? 0 : rc;
}
