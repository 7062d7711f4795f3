/*
 * tests/test_sample.c - token selection (runtime/sample.c) against Hugging Face transformers
 * 4.46.3 (argv[2]: tests/, whose sample/ holds the references tests/models/make_sample_refs.py
 * wrote with transformers itself).
 *
 * - Candidate sets after the processors and warpers equal transformers' (ids exactly,
 *   probabilities within 1e-6), greedy picks too, ties included (sample/warpers.txt).
 * - Beam searches replay the scripted model of sample/beams.txt (the logits transformers'
 *   generate() was given for each prefix) and must end with generate()'s sequences and scores.
 * - A draw depends on (seed, step) only: the same tokens alone, interleaved with other
 *   sequences, and from other threads.
 * - Sampled frequencies pass a chi-square test against transformers' probabilities (fixed seed,
 *   so deterministic; p-value threshold 1e-4, the p-value from the regularized incomplete gamma
 *   function written here), and a distorted distribution fails it.
 * - On a 50257-token row, the candidate sets equal a plain sort-based implementation of the
 *   warpers written in this file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runtime/sample.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *tests_dir;

/* ---- reading the reference files ------------------------------------------------------- */

typedef struct reader {
  char *buf, *p;
} reader;

static void rd_open(reader *r, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/sample/%s", tests_dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  r->buf = malloc((size_t)n + 1);
  assert_non_null(r->buf);
  assert_int_equal(fread(r->buf, 1, (size_t)n, f), (size_t)n);
  r->buf[n] = 0;
  fclose(f);
  r->p = r->buf;
}

/* The next whitespace-separated word (NULL at the end); '#' starts a comment to end of line. */
static const char *rd_word(reader *r) {
  for (;;) {
    while (*r->p == ' ' || *r->p == '\n' || *r->p == '\t' || *r->p == '\r')
      r->p++;
    if (*r->p != '#') break;
    while (*r->p && *r->p != '\n')
      r->p++;
  }
  if (!*r->p) return NULL;
  char *w = r->p;
  while (*r->p && *r->p != ' ' && *r->p != '\n' && *r->p != '\t' && *r->p != '\r')
    r->p++;
  if (*r->p) *r->p++ = 0;
  return w;
}

static void rd_expect(reader *r, const char *what) {
  const char *w = rd_word(r);
  if (!w || strcmp(w, what)) fail_msg("expected '%s', found '%s'", what, w ? w : "(end)");
}
static long rd_long(reader *r) { return strtol(rd_word(r), NULL, 10); }
static double rd_double(reader *r) { return strtod(rd_word(r), NULL); }
static float rd_float(reader *r) { return strtof(rd_word(r), NULL); }
static long rd_key_long(reader *r, const char *k) { return rd_expect(r, k), rd_long(r); }
static double rd_key_double(reader *r, const char *k) { return rd_expect(r, k), rd_double(r); }

/* ---- warper cases ------------------------------------------------------------------------- */

typedef struct wcase {
  char name[64];
  kc_sample_params p;
  int64_t vocab, nseen, ncand;
  int32_t *seen, *cand, token;
  float *logits;
  double *prob;
} wcase;

#define MAX_WCASES 64
static wcase wcases[MAX_WCASES];
static int nwcases;

static void load_warpers(void) {
  reader r;
  rd_open(&r, "warpers.txt");
  const char *w;
  while ((w = rd_word(&r))) {
    assert_string_equal(w, "case");
    assert_true(nwcases < MAX_WCASES);
    wcase *c = &wcases[nwcases++];
    snprintf(c->name, sizeof c->name, "%s", rd_word(&r));
    c->vocab = rd_key_long(&r, "vocab");
    c->p = kc_sample_params_default();
    c->p.temperature = rd_key_double(&r, "temperature");
    c->p.top_k = (int32_t)rd_key_long(&r, "top_k");
    c->p.top_p = rd_key_double(&r, "top_p");
    c->p.min_p = rd_key_double(&r, "min_p");
    c->p.repetition_penalty = rd_key_double(&r, "rep");
    c->p.min_tokens_to_keep = (int32_t)rd_key_long(&r, "min_keep");
    c->nseen = rd_key_long(&r, "seen");
    c->seen = malloc((size_t)c->nseen * sizeof *c->seen);
    for (int64_t i = 0; i < c->nseen; i++)
      c->seen[i] = (int32_t)rd_long(&r);
    rd_expect(&r, "logits");
    c->logits = malloc((size_t)c->vocab * sizeof *c->logits);
    for (int64_t i = 0; i < c->vocab; i++)
      c->logits[i] = rd_float(&r);
    w = rd_word(&r);
    if (!strcmp(w, "token")) {
      c->token = (int32_t)rd_long(&r);
      c->ncand = -1;
      continue;
    }
    assert_string_equal(w, "cand");
    c->ncand = rd_long(&r);
    c->cand = malloc((size_t)c->ncand * sizeof *c->cand);
    c->prob = malloc((size_t)c->ncand * sizeof *c->prob);
    for (int64_t i = 0; i < c->ncand; i++) {
      c->cand[i] = (int32_t)rd_long(&r);
      c->prob[i] = rd_double(&r);
    }
  }
  free(r.buf);
}

static void free_warpers(void) {
  for (int i = 0; i < nwcases; i++) {
    free(wcases[i].seen);
    free(wcases[i].logits);
    free(wcases[i].cand);
    free(wcases[i].prob);
  }
}

static const wcase *find_wcase(const char *name) {
  for (int i = 0; i < nwcases; i++)
    if (!strcmp(wcases[i].name, name)) return &wcases[i];
  fail_msg("no case %s in sample/warpers.txt", name);
  return NULL;
}

static void test_candidates_match_transformers(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_sample_scratch *s;
  assert_int_equal(kc_sample_scratch_new(ctx, 4096, &s), KC_OK);
  int ncand = 0, ngreedy = 0;
  for (int i = 0; i < nwcases; i++) {
    const wcase *c = &wcases[i];
    int64_t n;
    const int32_t *ids;
    const double *probs;
    kc_status st = kc_sample_candidates(ctx, &c->p, c->logits, c->vocab, c->seen, c->nseen, s, &n,
                                        &ids, &probs);
    if (st) fail_msg("%s: %s", c->name, kc_last_error(ctx));
    if (c->ncand < 0) {
      int32_t tok;
      assert_int_equal(kc_sample(ctx, &c->p, c->logits, c->vocab, c->seen, c->nseen, 7, s, &tok),
                       KC_OK);
      if (tok != c->token || n != 1 || ids[0] != c->token)
        fail_msg("%s: greedy token %d, transformers %d", c->name, (int)tok, (int)c->token);
      ngreedy++;
      continue;
    }
    if (n != c->ncand)
      fail_msg("%s: %lld candidates, transformers %lld", c->name, (long long)n,
               (long long)c->ncand);
    for (int64_t j = 0; j < n; j++) {
      if (ids[j] != c->cand[j])
        fail_msg("%s: candidate %lld is %d, transformers %d", c->name, (long long)j, (int)ids[j],
                 (int)c->cand[j]);
      if (fabs(probs[j] - c->prob[j]) > 1e-6)
        fail_msg("%s: p(%d) = %.9g, transformers %.9g", c->name, (int)ids[j], probs[j], c->prob[j]);
    }
    ncand++;
  }
  /* the file holds what the script writes: guard against a truncated one */
  assert_true(ncand >= 28 && ngreedy >= 4);
  kc_sample_scratch_free(s);
  kc_context_free(ctx);
}

/* A draw is always one of the candidates, and over steps it reaches each with weight. */
static void test_draws_are_candidates(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_sample_scratch *s;
  assert_int_equal(kc_sample_scratch_new(ctx, 4096, &s), KC_OK);
  for (int i = 0; i < nwcases; i++) {
    const wcase *c = &wcases[i];
    if (c->ncand < 0) continue;
    for (uint64_t step = 0; step < 200; step++) {
      int32_t tok;
      assert_int_equal(kc_sample(ctx, &c->p, c->logits, c->vocab, c->seen, c->nseen, step, s, &tok),
                       KC_OK);
      int found = 0;
      for (int64_t j = 0; j < c->ncand; j++)
        found |= c->cand[j] == tok;
      if (!found)
        fail_msg("%s: step %llu drew %d, not a candidate", c->name, (unsigned long long)step,
                 (int)tok);
    }
  }
  kc_sample_scratch_free(s);
  kc_context_free(ctx);
}

static void test_greedy_ties(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_sample_scratch *s;
  assert_int_equal(kc_sample_scratch_new(ctx, 16, &s), KC_OK);
  kc_sample_params p = kc_sample_params_default();
  p.temperature = 0;
  int32_t tok;
  float a[8] = {1, 3, 2, 3, 3, -1, 0, 3};
  assert_int_equal(kc_sample(ctx, &p, a, 8, NULL, 0, 0, s, &tok), KC_OK);
  assert_int_equal(tok, 1); /* the first of the tied maxima, as torch.argmax */
  float b[4] = {-0.0f, 0.0f, -1, -INFINITY};
  assert_int_equal(kc_sample(ctx, &p, b, 4, NULL, 0, 0, s, &tok), KC_OK);
  assert_int_equal(tok, 0); /* -0 == +0 */
  /* the penalty divides 3 by 2: tokens 3, 4 and 7 stay at 3, so 3 wins */
  p.repetition_penalty = 2;
  int32_t seen[2] = {1, 1};
  assert_int_equal(kc_sample(ctx, &p, a, 8, seen, 2, 0, s, &tok), KC_OK);
  assert_int_equal(tok, 3);
  /* the seed and step do not matter to greedy */
  p.seed = 99;
  assert_int_equal(kc_sample(ctx, &p, a, 8, seen, 2, 12345, s, &tok), KC_OK);
  assert_int_equal(tok, 3);
  kc_sample_scratch_free(s);
  kc_context_free(ctx);
}

/* ---- seeds ------------------------------------------------------------------------------ */

/* The logits a test sequence sees at a step: a fixed pseudo-random row (xorshift). */
static void seq_logits(uint64_t seq, uint64_t step, float *out, int64_t vocab) {
  uint64_t x = (seq + 1) * 0x9e3779b97f4a7c15ull ^ (step + 1) * 0xd1b54a32d192ed03ull;
  for (int64_t i = 0; i < vocab; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = (float)((double)(x >> 11) * 0x1.0p-53 * 6.0 - 3.0);
  }
}

enum { SEQ_VOCAB = 97, SEQ_STEPS = 300 };

typedef struct seq_run {
  uint64_t seq, seed;
  int32_t tokens[SEQ_STEPS];
} seq_run;

/* Generate SEQ_STEPS tokens of one sequence (repetition penalty over its own tokens). */
static void run_seq(kc_context *ctx, kc_sample_scratch *s, seq_run *r, uint64_t from, uint64_t to) {
  kc_sample_params p = kc_sample_params_default();
  p.seed = r->seed;
  p.temperature = 0.9;
  p.top_k = 30;
  p.top_p = 0.95;
  p.repetition_penalty = 1.1;
  float logits[SEQ_VOCAB];
  for (uint64_t t = from; t < to; t++) {
    seq_logits(r->seq, t, logits, SEQ_VOCAB);
    assert_int_equal(
        kc_sample(ctx, &p, logits, SEQ_VOCAB, r->tokens, (int64_t)t, t, s, &r->tokens[t]), KC_OK);
  }
}

static void *thread_seq(void *arg) {
  seq_run *r = arg;
  kc_context *ctx = kc_context_new();
  kc_sample_scratch *s;
  if (kc_sample_scratch_new(ctx, SEQ_VOCAB, &s)) return NULL;
  run_seq(ctx, s, r, 0, SEQ_STEPS);
  kc_sample_scratch_free(s);
  kc_context_free(ctx);
  return r;
}

static void test_seed_reproducible(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_sample_scratch *s;
  assert_int_equal(kc_sample_scratch_new(ctx, SEQ_VOCAB, &s), KC_OK);
  enum { NSEQ = 4 };
  static seq_run alone[NSEQ], batch[NSEQ], threaded[NSEQ];
  for (int i = 0; i < NSEQ; i++) {
    alone[i] = (seq_run){.seq = (uint64_t)i, .seed = 1000 + (uint64_t)i};
    batch[i] = alone[i];
    threaded[i] = alone[i];
    run_seq(ctx, s, &alone[i], 0, SEQ_STEPS);
  }
  /* a batch: every sequence one step at a time, in a changing order, one shared scratch */
  for (uint64_t t = 0; t < SEQ_STEPS; t++)
    for (int j = 0; j < NSEQ; j++)
      run_seq(ctx, s, &batch[(j + (int)t) % NSEQ], t, t + 1);
  pthread_t th[NSEQ];
  for (int i = 0; i < NSEQ; i++)
    assert_int_equal(pthread_create(&th[i], NULL, thread_seq, &threaded[i]), 0);
  for (int i = 0; i < NSEQ; i++) {
    void *ret;
    assert_int_equal(pthread_join(th[i], &ret), 0);
    assert_non_null(ret);
  }
  for (int i = 0; i < NSEQ; i++) {
    assert_memory_equal(alone[i].tokens, batch[i].tokens, sizeof alone[i].tokens);
    assert_memory_equal(alone[i].tokens, threaded[i].tokens, sizeof alone[i].tokens);
  }
  /* another seed gives another sequence */
  seq_run other = {.seq = 0, .seed = 77};
  run_seq(ctx, s, &other, 0, SEQ_STEPS);
  int differ = 0;
  for (int t = 0; t < SEQ_STEPS; t++)
    differ += other.tokens[t] != alone[0].tokens[t];
  assert_true(differ > SEQ_STEPS / 4);
  /* and the uniform numbers look uniform: mean and a few distinct values */
  double m = 0;
  for (uint64_t t = 0; t < 100000; t++)
    m += kc_sample_uniform(5, t);
  assert_true(fabs(m / 100000 - 0.5) < 0.005);
  assert_true(kc_sample_uniform(5, 0) != kc_sample_uniform(6, 0));
  kc_sample_scratch_free(s);
  kc_context_free(ctx);
}

/* ---- chi-square ------------------------------------------------------------------------- */

/* Regularized upper incomplete gamma Q(a, x) (series below a + 1, Lentz continued fraction
 * above; Numerical Recipes' gser/gcf). */
static double gamma_q(double a, double x) {
  if (x <= 0) return 1;
  double lg = lgamma(a);
  if (x < a + 1) {
    double ap = a, sum = 1 / a, del = sum;
    for (int n = 0; n < 10000; n++) {
      ap += 1;
      del *= x / ap;
      sum += del;
      if (fabs(del) < fabs(sum) * 1e-15) break;
    }
    return 1 - sum * exp(-x + a * log(x) - lg);
  }
  double b = x + 1 - a, c = 1 / 1e-300, d = 1 / b, h = d;
  for (int i = 1; i < 10000; i++) {
    double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (fabs(d) < 1e-300) d = 1e-300;
    c = b + an / c;
    if (fabs(c) < 1e-300) c = 1e-300;
    d = 1 / d;
    double del = d * c;
    h *= del;
    if (fabs(del - 1) < 1e-15) break;
  }
  return exp(-x + a * log(x) - lg) * h;
}

/* The p-value of drawing `counts` from probabilities prob[k] (bins with an expected count
 * under 5 merged into one). */
static double chi_square_p(const long *counts, const double *prob, int64_t k, long n) {
  double stat = 0, small_e = 0, small_o = 0;
  int64_t bins = 0;
  for (int64_t i = 0; i < k; i++) {
    double e = prob[i] * (double)n;
    if (e < 5) {
      small_e += e;
      small_o += (double)counts[i];
      continue;
    }
    stat += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
    bins++;
  }
  if (small_e > 0) {
    stat += (small_o - small_e) * (small_o - small_e) / small_e;
    bins++;
  }
  return gamma_q((double)(bins - 1) / 2, stat / 2);
}

static void test_chi_square(void **state) {
  (void)state;
  /* the p-value function against known values: chi2 with 10 df at 23.209 is p = 0.01, with 1 df
   * at 15.137 is p = 1e-4 (tables) */
  assert_true(fabs(gamma_q(5, 23.209 / 2) - 0.01) < 1e-4);
  assert_true(fabs(gamma_q(0.5, 15.137 / 2) - 1e-4) < 1e-6);
  kc_context *ctx = kc_context_new();
  kc_sample_scratch *s;
  assert_int_equal(kc_sample_scratch_new(ctx, 4096, &s), KC_OK);
  const char *names[] = {"chi", "topp_0.9", "all", "minp_0.05"};
  for (size_t ci = 0; ci < sizeof names / sizeof *names; ci++) {
    const wcase *c = find_wcase(names[ci]);
    kc_sample_params p = c->p;
    p.seed = 20261 + ci;
    enum { N = 100000 };
    long *counts = calloc((size_t)c->vocab, sizeof *counts);
    long *per_cand = calloc((size_t)c->ncand, sizeof *per_cand);
    for (uint64_t t = 0; t < N; t++) {
      int32_t tok;
      assert_int_equal(kc_sample(ctx, &p, c->logits, c->vocab, c->seen, c->nseen, t, s, &tok),
                       KC_OK);
      counts[tok]++;
    }
    for (int64_t j = 0; j < c->ncand; j++)
      per_cand[j] = counts[c->cand[j]];
    double pv = chi_square_p(per_cand, c->prob, c->ncand, N);
    if (pv < 1e-4) fail_msg("%s: sampled frequencies fit with p = %g", c->name, pv);
    /* a distribution moved a little (5% of the mass from the top candidate to the second) is
     * rejected: the test has power at this N */
    if (c->ncand >= 2) {
      double *q = malloc((size_t)c->ncand * sizeof *q);
      memcpy(q, c->prob, (size_t)c->ncand * sizeof *q);
      int64_t top = 0, second = -1;
      for (int64_t j = 1; j < c->ncand; j++)
        if (q[j] > q[top]) top = j;
      for (int64_t j = 0; j < c->ncand; j++)
        if (j != top && (second < 0 || q[j] > q[second])) second = j;
      q[top] -= 0.05;
      q[second] += 0.05;
      double pw = chi_square_p(per_cand, q, c->ncand, N);
      if (pw >= 1e-4) fail_msg("%s: a distorted distribution fits with p = %g", c->name, pw);
      free(q);
    }
    free(counts);
    free(per_cand);
  }
  kc_sample_scratch_free(s);
  kc_context_free(ctx);
}

/* ---- a large vocabulary against a plain implementation -------------------------------- */

typedef struct ent {
  float v;
  int32_t id;
} ent;

static int by_value_asc_id_asc(const void *a, const void *b) {
  const ent *x = a, *y = b;
  if (x->v != y->v) return x->v < y->v ? -1 : 1;
  return (x->id > y->id) - (x->id < y->id);
}

static int by_id(const void *a, const void *b) {
  const ent *x = a, *y = b;
  return (x->id > y->id) - (x->id < y->id);
}

/* The warpers as logits_process.py writes them, over a sorted array (min_tokens_to_keep 1). */
static int64_t plain_warpers(const float *logits, int64_t V, const kc_sample_params *p, ent *e) {
  int64_t n = 0;
  for (int64_t i = 0; i < V; i++)
    e[n++] = (ent){logits[i] / (float)p->temperature, (int32_t)i};
  qsort(e, (size_t)n, sizeof *e, by_value_asc_id_asc);
  if (p->top_k > 0 && p->top_k < n) { /* keep >= the k-th largest */
    float kth = e[n - p->top_k].v;
    int64_t lo = 0;
    while (e[lo].v < kth)
      lo++;
    memmove(e, e + lo, (size_t)(n - lo) * sizeof *e);
    n -= lo;
  }
  double mx = e[n - 1].v, sum = 0;
  for (int64_t i = 0; i < n; i++)
    sum += exp(e[i].v - mx);
  if (p->top_p < 1) {
    double cum = 0;
    int64_t r = 0;
    while (r < n - 1) {
      cum += (float)(exp(e[r].v - mx) / sum);
      if (!((float)cum <= (float)(1 - p->top_p))) break;
      r++;
    }
    memmove(e, e + r, (size_t)(n - r) * sizeof *e);
    n -= r;
    sum = 0;
    for (int64_t i = 0; i < n; i++)
      sum += exp(e[i].v - mx);
  }
  if (p->min_p > 0) {
    float top = (float)(1 / sum); /* the largest is at the end, exp(0) = 1 */
    float scaled = top * (float)p->min_p;
    int64_t lo = 0;
    while ((float)(exp(e[lo].v - mx) / sum) < scaled)
      lo++;
    memmove(e, e + lo, (size_t)(n - lo) * sizeof *e);
    n -= lo;
  }
  qsort(e, (size_t)n, sizeof *e, by_id);
  return n;
}

static void test_large_vocab(void **state) {
  (void)state;
  enum { V = 50257 };
  kc_context *ctx = kc_context_new();
  kc_sample_scratch *s;
  assert_int_equal(kc_sample_scratch_new(ctx, V, &s), KC_OK);
  float *logits = malloc(V * sizeof *logits);
  ent *e = malloc(V * sizeof *e);
  const kc_sample_params base = kc_sample_params_default();
  struct {
    double t, top_p, min_p;
    int32_t k;
  } cfg[] = {{1.0, 0.9, 0, 0},    {0.7, 0.95, 0, 0},  {1.0, 1.0, 0.05, 0}, {1.2, 0.8, 0.01, 0},
             {1.0, 1.0, 0, 1000}, {0.8, 0.9, 0, 500}, {1.0, 0.5, 0.1, 50}, {1.0, 0.999, 0, 0}};
  for (size_t ci = 0; ci < sizeof cfg / sizeof *cfg; ci++) {
    seq_logits(1000 + ci, 0, logits, V);
    for (int64_t i = 0; i < V; i++)
      logits[i] *= 2.5f; /* a range as real LM logits */
    if (ci % 2)          /* coarse values: many ties */
      for (int64_t i = 0; i < V; i++)
        logits[i] = roundf(logits[i] * 4) / 4;
    kc_sample_params p = base;
    p.temperature = cfg[ci].t;
    p.top_p = cfg[ci].top_p;
    p.min_p = cfg[ci].min_p;
    p.top_k = cfg[ci].k;
    int64_t n;
    const int32_t *ids;
    const double *probs;
    assert_int_equal(kc_sample_candidates(ctx, &p, logits, V, NULL, 0, s, &n, &ids, &probs), KC_OK);
    int64_t m = plain_warpers(logits, V, &p, e);
    if (n != m)
      fail_msg("config %zu: %lld candidates, the plain warpers %lld", ci, (long long)n,
               (long long)m);
    for (int64_t i = 0; i < n; i++)
      if (ids[i] != e[i].id) fail_msg("config %zu: candidate %lld differs", ci, (long long)i);
    double total = 0;
    for (int64_t i = 0; i < n; i++)
      total += probs[i];
    assert_true(fabs(total - 1) < 1e-9);
  }
  free(logits);
  free(e);
  kc_sample_scratch_free(s);
  kc_context_free(ctx);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_errors(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_sample_scratch *s;
  assert_int_equal(kc_sample_scratch_new(ctx, 8, &s), KC_OK);
  float x[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  int32_t tok;
  kc_sample_params p = kc_sample_params_default();
  struct {
    kc_sample_params p;
    const char *word;
  } bad[] = {
      {p, "temperature"}, {p, "top_k"}, {p, "top_p"}, {p, "min_p"}, {p, "repetition_penalty"},
  };
  bad[0].p.temperature = -1;
  bad[1].p.top_k = -3;
  bad[2].p.top_p = 1.5;
  bad[3].p.min_p = -0.1;
  bad[4].p.repetition_penalty = 0;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(kc_sample(ctx, &bad[i].p, x, 8, NULL, 0, 0, s, &tok), KC_ERR_INVALID_ARG);
    assert_non_null(strstr(kc_last_error(ctx), bad[i].word));
  }
  int32_t seen[2] = {1, 8};
  assert_int_equal(kc_sample(ctx, &p, x, 8, seen, 2, 0, s, &tok), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "token 8"));
  assert_int_equal(kc_sample(ctx, &p, x, 9, NULL, 0, 0, s, &tok), KC_ERR_INVALID_ARG);
  float y[4] = {0, NAN, 1, 2};
  assert_int_equal(kc_sample(ctx, &p, y, 4, NULL, 0, 0, s, &tok), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "NaN"));
  float z[3] = {-INFINITY, -INFINITY, -INFINITY};
  assert_int_equal(kc_sample(ctx, &p, z, 3, NULL, 0, 0, s, &tok), KC_ERR_INVALID_ARG);
  /* greedy needs no probabilities: +inf is fine there, as torch.argmax */
  float w[3] = {0, INFINITY, 1};
  p.temperature = 0;
  assert_int_equal(kc_sample(ctx, &p, w, 3, NULL, 0, 0, s, &tok), KC_OK);
  assert_int_equal(tok, 1);
  kc_sample_scratch_free(s);

  kc_beam *b;
  kc_beam_params bp = {
      .num_beams = 1, .length_penalty = 1, .max_new_tokens = 4, .repetition_penalty = 1};
  assert_int_equal(kc_beam_new(ctx, &bp, 8, NULL, 0, &b), KC_ERR_INVALID_ARG);
  bp.num_beams = 2;
  bp.num_return = 3;
  assert_int_equal(kc_beam_new(ctx, &bp, 8, NULL, 0, &b), KC_ERR_INVALID_ARG);
  bp.num_return = 1;
  int32_t eos = 9;
  bp.eos = &eos;
  bp.neos = 1;
  assert_int_equal(kc_beam_new(ctx, &bp, 8, NULL, 0, &b), KC_ERR_INVALID_ARG);
  bp.neos = 0;
  /* two beams over a 3-token vocabulary: 6 tokens, 4 candidates a step, max 1 token */
  bp.max_new_tokens = 1;
  assert_int_equal(kc_beam_new(ctx, &bp, 3, NULL, 0, &b), KC_OK);
  float l3[3] = {0, 1, 2};
  int32_t next[2], par[2];
  int done;
  assert_int_equal(kc_beam_step(ctx, b, l3, 0, next, par, &done), KC_OK);
  assert_true(done);
  assert_int_equal(kc_beam_step(ctx, b, l3, 0, next, par, &done), KC_ERR_INVALID_ARG);
  const int32_t *toks;
  int64_t len;
  double score;
  assert_int_equal(kc_beam_result(ctx, b, 1, &toks, &len, &score), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_beam_result(ctx, b, 0, &toks, &len, &score), KC_OK);
  assert_int_equal(len, 1);
  assert_int_equal(toks[0], 2);
  kc_beam_free(b);
  kc_context_free(ctx);
}

/* ---- beam search -------------------------------------------------------------------------- */

typedef struct brow {
  int64_t len;
  int32_t *prefix;
  float *logits;
} brow;

static const brow *find_row(const brow *rows, int64_t nrows, const int32_t *prompt, int64_t nprompt,
                            const int32_t *gen, int64_t ngen) {
  for (int64_t i = 0; i < nrows; i++) {
    if (rows[i].len != nprompt + ngen) continue;
    if (memcmp(rows[i].prefix, prompt, (size_t)nprompt * sizeof *prompt)) continue;
    if (ngen && memcmp(rows[i].prefix + nprompt, gen, (size_t)ngen * sizeof *gen)) continue;
    return &rows[i];
  }
  return NULL;
}

static void test_beams_match_transformers(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  reader r;
  rd_open(&r, "beams.txt");
  const char *w;
  int ncases = 0;
  while ((w = rd_word(&r))) {
    assert_string_equal(w, "case");
    char name[64];
    snprintf(name, sizeof name, "%s", rd_word(&r));
    int64_t V = rd_key_long(&r, "vocab");
    kc_beam_params bp = {0};
    bp.num_beams = (int32_t)rd_key_long(&r, "beams");
    bp.length_penalty = rd_key_double(&r, "length_penalty");
    rd_expect(&r, "early_stopping");
    w = rd_word(&r);
    bp.early_stopping = !strcmp(w, "true")    ? KC_EARLY_STOP_TRUE
                        : !strcmp(w, "never") ? KC_EARLY_STOP_NEVER
                                              : KC_EARLY_STOP_FALSE;
    bp.max_new_tokens = rd_key_long(&r, "max_new");
    bp.num_return = (int32_t)rd_key_long(&r, "num_return");
    bp.repetition_penalty = rd_key_double(&r, "rep");
    int32_t pad = (int32_t)rd_key_long(&r, "pad");
    int32_t eos[8], prompt[64];
    bp.neos = (int32_t)rd_key_long(&r, "eos");
    for (int i = 0; i < bp.neos; i++)
      eos[i] = (int32_t)rd_long(&r);
    bp.eos = eos;
    int64_t nprompt = rd_key_long(&r, "prompt");
    for (int64_t i = 0; i < nprompt; i++)
      prompt[i] = (int32_t)rd_long(&r);
    int64_t nrows = rd_key_long(&r, "rows");
    brow *rows = calloc((size_t)nrows, sizeof *rows);
    for (int64_t i = 0; i < nrows; i++) {
      rd_expect(&r, "row");
      rows[i].len = rd_long(&r);
      rows[i].prefix = malloc((size_t)rows[i].len * sizeof *rows[i].prefix);
      rows[i].logits = malloc((size_t)V * sizeof *rows[i].logits);
      for (int64_t j = 0; j < rows[i].len; j++)
        rows[i].prefix[j] = (int32_t)rd_long(&r);
      for (int64_t j = 0; j < V; j++)
        rows[i].logits[j] = rd_float(&r);
    }

    kc_beam *b;
    if (kc_beam_new(ctx, &bp, V, prompt, nprompt, &b)) fail_msg("%s", kc_last_error(ctx));
    int nb = bp.num_beams;
    float *logits = malloc((size_t)(nb * V) * sizeof *logits);
    int32_t *next = malloc((size_t)nb * sizeof *next), *par = malloc((size_t)nb * sizeof *par);
    int32_t *before = malloc((size_t)(nb * bp.max_new_tokens) * sizeof *before);
    int done = 0;
    for (int64_t step = 0; !done; step++) {
      int64_t t = kc_beam_len(b);
      assert_int_equal(t, step);
      for (int i = 0; i < nb; i++) {
        const brow *row = find_row(rows, nrows, prompt, nprompt, kc_beam_tokens(b, i), t);
        if (!row)
          fail_msg("%s: step %lld: beam %d holds a prefix transformers never ran", name,
                   (long long)step, i);
        memcpy(logits + i * V, row->logits, (size_t)V * sizeof *logits);
        memcpy(before + i * t, kc_beam_tokens(b, i), (size_t)t * sizeof *before);
      }
      /* the first step: every beam holds the prompt, one row serves all (stride 0) */
      kc_status st = kc_beam_step(ctx, b, logits, step ? V : 0, next, par, &done);
      if (st) fail_msg("%s: %s", name, kc_last_error(ctx));
      /* each new beam continues its parent */
      for (int i = 0; i < nb; i++) {
        assert_true(par[i] >= 0 && par[i] < nb);
        if (step == 0) assert_int_equal(par[i], 0);
        if (done) continue;
        const int32_t *now = kc_beam_tokens(b, i);
        assert_memory_equal(now, before + par[i] * t, (size_t)t * sizeof *now);
        assert_int_equal(now[t], next[i]);
        for (int e = 0; e < bp.neos; e++)
          assert_int_not_equal(next[i], eos[e]);
      }
      assert_true(step < bp.max_new_tokens);
    }
    assert_true(kc_beam_done(b));
    rd_expect(&r, "result");
    long nres = rd_long(&r);
    assert_int_equal(nres, bp.num_return);
    for (int i = 0; i < nres; i++) {
      rd_expect(&r, "seq");
      long n = rd_long(&r);
      const int32_t *toks;
      int64_t len;
      double score;
      assert_int_equal(kc_beam_result(ctx, b, i, &toks, &len, &score), KC_OK);
      if (len > n)
        fail_msg("%s: result %d has %lld tokens, transformers %ld", name, i, (long long)len, n);
      for (long j = 0; j < n; j++) {
        int32_t want = (int32_t)rd_long(&r);
        int32_t got = j < len ? toks[j] : pad;
        if (want != got)
          fail_msg("%s: result %d token %ld is %d, transformers %d", name, i, j, (int)got,
                   (int)want);
      }
      double want = rd_key_double(&r, "score");
      if (fabs(score - want) > 2e-6 * fmax(1, fabs(want)))
        fail_msg("%s: result %d scores %.9g, transformers %.9g", name, i, score, want);
    }
    kc_beam_free(b);
    free(logits);
    free(next);
    free(par);
    free(before);
    for (int64_t i = 0; i < nrows; i++) {
      free(rows[i].prefix);
      free(rows[i].logits);
    }
    free(rows);
    ncases++;
  }
  assert_true(ncases >= 11);
  free(r.buf);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC TESTS_DIR\n", argv[0]);
    return 2;
  }
  tests_dir = argv[2];
  load_warpers();
  const struct CMUnitTest t[] = {
      cmocka_unit_test(test_candidates_match_transformers),
      cmocka_unit_test(test_draws_are_candidates),
      cmocka_unit_test(test_greedy_ties),
      cmocka_unit_test(test_seed_reproducible),
      cmocka_unit_test(test_chi_square),
      cmocka_unit_test(test_large_vocab),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_beams_match_transformers),
  };
  int rc = cmocka_run_group_tests(t, NULL, NULL);
  free_warpers();
  return rc;
}
