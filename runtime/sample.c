/*
 * runtime/sample.c - greedy, sampling and beam search bookkeeping over rows of logits, as
 * transformers 4.46.3 (the semantics, their sources and the tie rules are in sample.h).
 *
 * Sampling keeps the candidate set as two parallel arrays (ids ascending, f32 scores) and
 * filters them in place, so every warper's result stays in id order and the draw walks it in
 * that order. Orders by score use a monotone u32 key of the f32 (-0 counts as +0, as torch's
 * comparisons do): top-k finds the k-th largest key by a radix select (four byte passes, no
 * sort), top-p sorts (key, position) pairs with a stable LSD radix sort, which gives torch's
 * stable ascending order (ties by ascending id). Both are linear in the candidates.
 *
 * Beam search keeps the live beams' tokens in two buffers (the step writes the reordered copy
 * into the other one) and the finished hypotheses in num_beams + 1 slots listed in insertion
 * order, because BeamHypotheses' tie rules depend on that order.
 *
 * Invariants: graph-free, libc and libm only (it is in the runtime archive of compiled models);
 * no global state; kc_sample, kc_sample_candidates and kc_beam_step allocate nothing.
 */
#include "runtime/sample.h"

#include "ir/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters ------------------------------------------------------------------------- */

kc_sample_params kc_sample_params_default(void) {
  kc_sample_params p = {0};
  p.temperature = 1.0;
  p.top_p = 1.0;
  p.repetition_penalty = 1.0;
  p.min_tokens_to_keep = 1;
  return p;
}

kc_status kc_sample_params_check(kc_context *ctx, const kc_sample_params *p) {
  if (!p) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "sampling: no parameters");
  if (!(p->temperature >= 0))
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "sampling: temperature %g must be > 0 (or 0 for greedy)", p->temperature);
  if (p->top_k < 0)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "sampling: top_k %d must be >= 0 (0: off)",
                     (int)p->top_k);
  if (!(p->top_p >= 0 && p->top_p <= 1))
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "sampling: top_p %g must be in [0, 1] (1: off)",
                     p->top_p);
  if (!(p->min_p >= 0 && p->min_p <= 1))
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "sampling: min_p %g must be in [0, 1] (0: off)",
                     p->min_p);
  if (!(p->repetition_penalty > 0))
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "sampling: repetition_penalty %g must be > 0 (1: off)", p->repetition_penalty);
  if (p->min_tokens_to_keep < 0)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "sampling: min_tokens_to_keep %d must be >= 0",
                     (int)p->min_tokens_to_keep);
  return KC_OK;
}

/* ---- the counter-based generator ------------------------------------------------------- */

/* splitmix64's finalizer: a bijection of 64-bit words with good avalanche. */
static uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* For one seed, distinct steps give distinct words (each stage is a bijection of step). */
double kc_sample_uniform(uint64_t seed, uint64_t step) {
  uint64_t x = mix64(mix64(seed) ^ mix64(step));
  return (double)(x >> 11) * 0x1.0p-53;
}

/* ---- scratch --------------------------------------------------------------------------- */

struct kc_sample_scratch {
  int64_t vocab;
  int32_t *ids;      /* candidate ids, ascending */
  float *vals;       /* their scores */
  uint32_t *keys;    /* order keys of vals (top-k, top-p, min-p) */
  uint32_t *k2, *k3; /* radix sort buffers: keys and positions */
  int32_t *p1, *p2;
  double *probs; /* the final probabilities, or the weights of a softmax */
};

void kc_sample_scratch_free(kc_sample_scratch *s) {
  if (!s) return;
  free(s->ids);
  free(s->vals);
  free(s->keys);
  free(s->k2);
  free(s->k3);
  free(s->p1);
  free(s->p2);
  free(s->probs);
  free(s);
}

kc_status kc_sample_scratch_new(kc_context *ctx, int64_t vocab, kc_sample_scratch **out) {
  *out = NULL;
  if (vocab < 1 || vocab > INT32_MAX)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "sampling: vocabulary size %lld out of range",
                     (long long)vocab);
  kc_sample_scratch *s = calloc(1, sizeof *s);
  if (!s) return kc_errorf(ctx, KC_ERR_NOMEM, "sampling: out of memory for the scratch");
  size_t n = (size_t)vocab;
  s->vocab = vocab;
  s->ids = malloc(n * sizeof *s->ids);
  s->vals = malloc(n * sizeof *s->vals);
  s->keys = malloc(n * sizeof *s->keys);
  s->k2 = malloc(n * sizeof *s->k2);
  s->k3 = malloc(n * sizeof *s->k3);
  s->p1 = malloc(n * sizeof *s->p1);
  s->p2 = malloc(n * sizeof *s->p2);
  s->probs = malloc(n * sizeof *s->probs);
  if (!s->ids || !s->vals || !s->keys || !s->k2 || !s->k3 || !s->p1 || !s->p2 || !s->probs) {
    kc_sample_scratch_free(s);
    return kc_errorf(ctx, KC_ERR_NOMEM, "sampling: out of memory for a scratch of %lld tokens",
                     (long long)vocab);
  }
  *out = s;
  return KC_OK;
}

/* ---- orders ------------------------------------------------------------------------------ */

/* A u32 in the order of the floats (no NaN here); -0 and +0 compare equal, as in torch. */
static uint32_t fkey(float f) {
  if (f == 0) f = 0;
  uint32_t u;
  memcpy(&u, &f, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The k-th largest (1-based, k <= n) of keys[n]: one byte per pass, most significant first. */
static uint32_t kth_largest(const uint32_t *keys, int64_t n, int64_t k) {
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    int64_t hist[256] = {0};
    for (int64_t i = 0; i < n; i++)
      if ((keys[i] & mask) == prefix) hist[(keys[i] >> shift) & 255]++;
    int b = 255;
    while (hist[b] < k)
      k -= hist[b--];
    prefix |= (uint32_t)b << shift;
    mask |= 255u << shift;
  }
  return prefix;
}

/* Positions [0, n) into s->p1 in ascending (key, position) order: stable LSD radix sort. */
static void sort_positions(kc_sample_scratch *s, int64_t n) {
  uint32_t *ka = s->keys, *kb = s->k2;
  int32_t *pa = s->p1, *pb = s->p2;
  /* keys are about to be permuted: sort a copy, s->keys stays in candidate order */
  memcpy(kb, ka, (size_t)n * sizeof *ka);
  ka = kb;
  kb = s->k3;
  for (int64_t i = 0; i < n; i++)
    pa[i] = (int32_t)i;
  for (int shift = 0; shift < 32; shift += 8) {
    int64_t cnt[256] = {0};
    for (int64_t i = 0; i < n; i++)
      cnt[(ka[i] >> shift) & 255]++;
    if (cnt[(ka[0] >> shift) & 255] == n) continue; /* one byte value: the pass changes nothing */
    int64_t sum = 0;
    for (int b = 0; b < 256; b++) {
      int64_t c = cnt[b];
      cnt[b] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; i++) {
      int64_t d = cnt[(ka[i] >> shift) & 255]++;
      kb[d] = ka[i];
      pb[d] = pa[i];
    }
    uint32_t *kt = ka;
    ka = kb;
    kb = kt;
    int32_t *pt = pa;
    pa = pb;
    pb = pt;
  }
  if (pa != s->p1) memcpy(s->p1, pa, (size_t)n * sizeof *pa);
}

/* ---- the processors and warpers --------------------------------------------------------- */

/* Keep the candidates whose (key, id) is at least (k0, i0): those above a cut in (score, id)
 * order, kept in id order. Returns their count. */
static int64_t keep_from(kc_sample_scratch *s, int64_t n, uint32_t k0, int32_t i0) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t k = s->keys[i];
    int32_t id = s->ids[i];
    if (k > k0 || (k == k0 && id >= i0)) {
      s->ids[m] = id;
      s->vals[m] = s->vals[i];
      s->keys[m] = k;
      m++;
    }
  }
  return m;
}

/* Softmax weights of the candidates into s->probs, f32 as torch's softmax (v - max rounded to
 * f32, expf), summed in double; returns the sum. */
static double softmax_weights(kc_sample_scratch *s, int64_t n) {
  float mx = s->vals[0];
  for (int64_t i = 1; i < n; i++)
    if (s->vals[i] > mx) mx = s->vals[i];
  double sum = 0;
  for (int64_t i = 0; i < n; i++) {
    s->probs[i] = expf(s->vals[i] - mx);
    sum += s->probs[i];
  }
  return sum;
}

/* TopPLogitsWarper: ascending sort, f32 probabilities, cumulative sum in double rounded to f32
 * at each position (torch's CPU cumsum), drop positions with cumsum <= 1 - top_p, never the
 * last min_keep. */
static int64_t top_p_filter(kc_sample_scratch *s, int64_t n, double top_p, int64_t min_keep) {
  sort_positions(s, n);
  double sum = softmax_weights(s, n);
  float thr = (float)(1.0 - top_p);
  int64_t r = 0;
  double cum = 0;
  while (r < n) {
    cum += (double)(float)(s->probs[s->p1[r]] / sum);
    if (!((float)cum <= thr)) break;
    r++;
  }
  if (r > n - min_keep) r = n - min_keep;
  if (r <= 0) return n;
  int32_t pos = s->p1[r];
  return keep_from(s, n, s->keys[pos], s->ids[pos]);
}

/* MinPLogitsWarper: drop f32 probabilities < (f32)(top * (f32)min_p), except the first
 * min_keep in descending order (score, then ascending id: torch's stable argsort). */
static int64_t min_p_filter(kc_sample_scratch *s, int64_t n, double min_p, int64_t min_keep) {
  /* the min_keep-th entry (km, im) of the descending order: entries up to it are kept */
  uint32_t km = UINT32_MAX;
  int32_t im = -1;
  int64_t mk = min_keep < n ? min_keep : n;
  if (mk > 1) {
    km = kth_largest(s->keys, n, mk);
    int64_t above = 0;
    for (int64_t i = 0; i < n; i++)
      above += s->keys[i] > km;
    for (int64_t i = 0, c = 0; i < n && im < 0; i++)
      if (s->keys[i] == km && ++c == mk - above) im = s->ids[i];
  }
  double sum = softmax_weights(s, n);
  float top = 0;
  for (int64_t i = 0; i < n; i++) {
    float pr = (float)(s->probs[i] / sum);
    if (pr > top) top = pr;
  }
  float scaled = top * (float)min_p;
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t k = s->keys[i];
    int32_t id = s->ids[i];
    int first = k > km || (k == km && id <= im);
    if (first || !((float)(s->probs[i] / sum) < scaled)) {
      s->ids[m] = id;
      s->vals[m] = s->vals[i];
      s->keys[m] = k;
      m++;
    }
  }
  return m;
}

/* ---- candidates ------------------------------------------------------------------------- */

static kc_status check_row(kc_context *ctx, const kc_sample_params *p, int64_t vocab,
                           const int32_t *seen, int64_t nseen, const kc_sample_scratch *s) {
  kc_status st = kc_sample_params_check(ctx, p);
  if (st) return st;
  if (!s || vocab < 1 || vocab > s->vocab)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "sampling: a row of %lld logits does not fit a scratch for %lld",
                     (long long)vocab, (long long)(s ? s->vocab : 0));
  for (int64_t i = 0; i < nseen; i++)
    if (seen[i] < 0 || seen[i] >= vocab)
      return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                       "sampling: token %d at position %lld of the seen tokens is outside the "
                       "vocabulary of %lld",
                       (int)seen[i], (long long)i, (long long)vocab);
  return KC_OK;
}

/* RepetitionPenaltyLogitsProcessor: gather the originals, penalize, scatter (so a repeated id
 * is penalized once). f32 arithmetic with the penalty rounded to f32, as torch. */
static float penalized(float x, float r) { return x < 0 ? x * r : x / r; }

static void penalize(float *v, const float *logits, const int32_t *seen, int64_t nseen, float r) {
  for (int64_t i = 0; i < nseen; i++)
    v[seen[i]] = penalized(logits[seen[i]], r);
}

/* torch.argmax: the first maximum; a NaN counts as the maximum (the first NaN wins). */
static int32_t argmax(const float *v, int64_t n) {
  int64_t best = 0;
  float m = v[0];
  int nan = 0;
  for (int64_t i = 1; i < n; i++) {
    float x = v[i];
    nan |= x != x;
    if (x > m) {
      m = x;
      best = i;
    }
  }
  if (nan || m != m)
    for (int64_t i = 0; i < n; i++)
      if (isnan(v[i])) return (int32_t)i;
  return (int32_t)best;
}

/* Fill s->ids/vals with the processed, warped candidates in id order; *n their count. Greedy
 * leaves the one argmax. On return s->probs holds the final probabilities. */
static kc_status candidates(kc_context *ctx, const kc_sample_params *p, const float *logits,
                            int64_t vocab, const int32_t *seen, int64_t nseen, kc_sample_scratch *s,
                            int64_t *nout) {
  kc_status st = check_row(ctx, p, vocab, seen, nseen, s);
  if (st) return st;
  float *v = s->vals;
  if (p->temperature == 0) {
    const float *row = logits;
    if (p->repetition_penalty != 1.0) {
      memcpy(v, logits, (size_t)vocab * sizeof *v);
      penalize(v, logits, seen, nseen, (float)p->repetition_penalty);
      row = v;
    }
    s->ids[0] = argmax(row, vocab);
    s->probs[0] = 1.0;
    *nout = 1;
    return KC_OK;
  }
  memcpy(v, logits, (size_t)vocab * sizeof *v);
  if (p->repetition_penalty != 1.0) penalize(v, logits, seen, nseen, (float)p->repetition_penalty);
  float t = (float)p->temperature;
  int64_t n = 0;
  for (int64_t i = 0; i < vocab; i++) {
    float x = v[i];
    if (p->temperature != 1.0) x = x / t;
    if (isnan(x) || x == INFINITY)
      return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                       "sampling: the logit of token %lld is %s%s, which has no probability",
                       (long long)i, isnan(v[i]) ? "NaN" : "+inf",
                       isnan(v[i]) || v[i] == INFINITY ? "" : " after the temperature");
    /* -inf has probability 0 under every warper: never a candidate */
    s->ids[n] = (int32_t)i;
    v[n] = x;
    n += x != -INFINITY;
  }
  if (n == 0)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "sampling: every logit of the row is -inf, there is nothing to sample");
  if (p->top_k > 0 || p->top_p < 1.0 || p->min_p > 0)
    for (int64_t i = 0; i < n; i++)
      s->keys[i] = fkey(v[i]);
  int64_t min_keep = p->min_tokens_to_keep > 1 ? p->min_tokens_to_keep : 1;
  if (p->top_k > 0) {
    int64_t k = p->top_k > min_keep ? p->top_k : min_keep;
    if (k < n) n = keep_from(s, n, kth_largest(s->keys, n, k), 0);
  }
  if (p->top_p < 1.0) n = top_p_filter(s, n, p->top_p, min_keep);
  if (p->min_p > 0) n = min_p_filter(s, n, p->min_p, min_keep);
  double sum = softmax_weights(s, n);
  for (int64_t i = 0; i < n; i++)
    s->probs[i] /= sum;
  *nout = n;
  return KC_OK;
}

kc_status kc_sample_candidates(kc_context *ctx, const kc_sample_params *p, const float *logits,
                               int64_t vocab, const int32_t *seen, int64_t nseen,
                               kc_sample_scratch *s, int64_t *n, const int32_t **ids,
                               const double **probs) {
  *n = 0;
  kc_status st = candidates(ctx, p, logits, vocab, seen, nseen, s, n);
  if (st) return st;
  *ids = s->ids;
  *probs = s->probs;
  return KC_OK;
}

kc_status kc_sample(kc_context *ctx, const kc_sample_params *p, const float *logits, int64_t vocab,
                    const int32_t *seen, int64_t nseen, uint64_t step, kc_sample_scratch *s,
                    int32_t *token) {
  int64_t n = 0;
  *token = -1;
  kc_status st = candidates(ctx, p, logits, vocab, seen, nseen, s, &n);
  if (st) return st;
  /* inverse CDF in id order; the last candidate with weight catches rounding at the top */
  double u = kc_sample_uniform(p->seed, step), cum = 0;
  int64_t pick = -1;
  for (int64_t i = 0; i < n; i++) {
    if (s->probs[i] <= 0) continue;
    pick = i;
    cum += s->probs[i];
    if (u < cum) break;
  }
  *token = s->ids[pick < 0 ? 0 : pick];
  return KC_OK;
}

/* ---- beam search -------------------------------------------------------------------------- */

typedef struct hyp {
  double score;
  int64_t len; /* generated tokens stored (the EOS appended when eos) */
  int eos;     /* finished by an EOS */
} hyp;

struct kc_beam {
  int32_t nb, nret, neos;
  double lp, rep;
  kc_early_stopping es;
  int64_t vocab, max_new, nprompt;
  int32_t *eos, *prompt;
  int64_t t;           /* tokens generated per live beam */
  float *scores;       /* running score of each live beam (f32, as torch) */
  int32_t *tok, *tok2; /* live beams' tokens [nb][max_new], and the buffer of the next step */
  float *lsm;          /* one row of log-probs */
  float *gathered;     /* the repetition penalty's gathered values [nprompt + max_new] */
  int64_t ncand;       /* candidates per step, max(2, 1 + neos) * nb */
  float *cscore;       /* the best candidates so far, descending */
  int64_t *cflat;      /* their beam * vocab + token */
  float *nscore;       /* scores of the next live beams */
  /* finished hypotheses: nb + 1 slots; order[0..nhyp) lists slots in insertion order */
  hyp *hyps;
  int32_t *htok; /* [nb + 1][max_new + 1] */
  int32_t *order, nhyp;
  double worst;
  int done;
  int32_t *result; /* slots of the results, best first */
};

void kc_beam_free(kc_beam *b) {
  if (!b) return;
  free(b->eos);
  free(b->prompt);
  free(b->scores);
  free(b->tok);
  free(b->tok2);
  free(b->lsm);
  free(b->gathered);
  free(b->cscore);
  free(b->cflat);
  free(b->nscore);
  free(b->hyps);
  free(b->htok);
  free(b->order);
  free(b->result);
  free(b);
}

kc_status kc_beam_new(kc_context *ctx, const kc_beam_params *p, int64_t vocab,
                      const int32_t *prompt, int64_t nprompt, kc_beam **out) {
  *out = NULL;
  if (!p) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "beam search: no parameters");
  int32_t nret = p->num_return ? p->num_return : 1;
  if (p->num_beams < 2)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "beam search: num_beams %d must be > 1 (one beam is greedy search)",
                     (int)p->num_beams);
  if (nret < 1 || nret > p->num_beams)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "beam search: num_return %d must be in [1, num_beams = %d]", (int)nret,
                     (int)p->num_beams);
  if (p->max_new_tokens < 1)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "beam search: max_new_tokens %lld must be > 0",
                     (long long)p->max_new_tokens);
  if (vocab < 1 || vocab > INT32_MAX)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "beam search: vocabulary size %lld out of range",
                     (long long)vocab);
  if (p->early_stopping != KC_EARLY_STOP_FALSE && p->early_stopping != KC_EARLY_STOP_TRUE &&
      p->early_stopping != KC_EARLY_STOP_NEVER)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "beam search: early_stopping %d is not one of "
                     "false (0), true (1), never (2)",
                     (int)p->early_stopping);
  if (!(p->repetition_penalty > 0))
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "beam search: repetition_penalty %g must be > 0 (1: off)",
                     p->repetition_penalty);
  if (p->neos < 0 || (p->neos > 0 && !p->eos) || nprompt < 0 || (nprompt > 0 && !prompt))
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "beam search: bad EOS or prompt arrays");
  for (int32_t i = 0; i < p->neos; i++)
    if (p->eos[i] < 0 || p->eos[i] >= vocab)
      return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                       "beam search: EOS id %d is outside the vocabulary of %lld", (int)p->eos[i],
                       (long long)vocab);
  for (int64_t i = 0; i < nprompt; i++)
    if (prompt[i] < 0 || prompt[i] >= vocab)
      return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                       "beam search: prompt token %d at position %lld is outside the vocabulary "
                       "of %lld",
                       (int)prompt[i], (long long)i, (long long)vocab);
  kc_beam *b = calloc(1, sizeof *b);
  if (!b) return kc_errorf(ctx, KC_ERR_NOMEM, "beam search: out of memory");
  int64_t nb = p->num_beams, mx = p->max_new_tokens;
  b->nb = p->num_beams;
  b->nret = nret;
  b->neos = p->neos;
  b->lp = p->length_penalty;
  b->rep = p->repetition_penalty;
  b->es = p->early_stopping;
  b->vocab = vocab;
  b->max_new = mx;
  b->nprompt = nprompt;
  b->ncand = (p->neos + 1 > 2 ? p->neos + 1 : 2) * nb;
  b->eos = malloc(((size_t)p->neos + 1) * sizeof *b->eos);
  b->prompt = malloc(((size_t)nprompt + 1) * sizeof *b->prompt);
  b->scores = malloc((size_t)nb * sizeof *b->scores);
  b->tok = malloc((size_t)(nb * mx) * sizeof *b->tok);
  b->tok2 = malloc((size_t)(nb * mx) * sizeof *b->tok2);
  b->lsm = malloc((size_t)vocab * sizeof *b->lsm);
  b->gathered = malloc((size_t)(nprompt + mx) * sizeof *b->gathered);
  b->cscore = malloc((size_t)b->ncand * sizeof *b->cscore);
  b->cflat = malloc((size_t)b->ncand * sizeof *b->cflat);
  b->nscore = malloc((size_t)nb * sizeof *b->nscore);
  b->hyps = malloc((size_t)(nb + 1) * sizeof *b->hyps);
  b->htok = malloc((size_t)((nb + 1) * (mx + 1)) * sizeof *b->htok);
  b->order = malloc((size_t)(nb + 1) * sizeof *b->order);
  b->result = malloc((size_t)nret * sizeof *b->result);
  if (!b->eos || !b->prompt || !b->scores || !b->tok || !b->tok2 || !b->lsm || !b->gathered ||
      !b->cscore || !b->cflat || !b->nscore || !b->hyps || !b->htok || !b->order || !b->result) {
    kc_beam_free(b);
    return kc_errorf(ctx, KC_ERR_NOMEM, "beam search: out of memory for %lld beams of %lld tokens",
                     (long long)nb, (long long)mx);
  }
  if (p->neos) memcpy(b->eos, p->eos, (size_t)p->neos * sizeof *b->eos);
  if (nprompt) memcpy(b->prompt, prompt, (size_t)nprompt * sizeof *b->prompt);
  /* _beam_search: beam 0 starts at 0, the others at -1e9, so the first step (all beams hold the
   * prompt) draws its candidates from beam 0 only */
  for (int64_t i = 0; i < nb; i++)
    b->scores[i] = i ? -1e9f : 0.0f;
  b->worst = 1e9; /* BeamHypotheses.worst_score's start */
  *out = b;
  return KC_OK;
}

int64_t kc_beam_len(const kc_beam *b) { return b->t; }
const int32_t *kc_beam_tokens(const kc_beam *b, int32_t beam) { return b->tok + beam * b->max_new; }
int kc_beam_done(const kc_beam *b) { return b->done; }

static int is_eos(const kc_beam *b, int32_t tok) {
  for (int32_t i = 0; i < b->neos; i++)
    if (b->eos[i] == tok) return 1;
  return 0;
}

/* BeamHypotheses.add: tokens[len] (generated, without the EOS), sum of log-probs, generated_len
 * (the EOS counted). Python's list semantics: append, and past num_beams delete the smallest
 * (score, position), the worst score becoming the next smallest. */
static void hyp_add(kc_beam *b, const int32_t *tokens, int64_t len, double sum, int64_t gen_len,
                    int eos) {
  double score = sum / pow((double)gen_len, b->lp);
  if (!(b->nhyp < b->nb || score > b->worst)) return;
  int32_t slot = 0; /* a slot no hypothesis uses: nb + 1 slots hold at most nb + 1 */
  for (int used = 1; used; slot += used) {
    used = 0;
    for (int32_t j = 0; j < b->nhyp; j++)
      used |= b->order[j] == slot;
  }
  int32_t *dst = b->htok + (int64_t)slot * (b->max_new + 1);
  if (len) memcpy(dst, tokens, (size_t)len * sizeof *dst);
  if (eos) dst[len++] = b->eos[0]; /* finalize() appends eos_token_id[0] */
  b->hyps[slot] = (hyp){score, len, eos};
  b->order[b->nhyp++] = slot;
  if (b->nhyp > b->nb) {
    int32_t lo = 0, next = -1;
    for (int32_t j = 1; j < b->nhyp; j++)
      if (b->hyps[b->order[j]].score < b->hyps[b->order[lo]].score) lo = j;
    memmove(b->order + lo, b->order + lo + 1, (size_t)(b->nhyp - lo - 1) * sizeof *b->order);
    b->nhyp--;
    for (int32_t j = 0; j < b->nhyp; j++)
      if (next < 0 || b->hyps[b->order[j]].score < b->hyps[b->order[next]].score) next = j;
    b->worst = b->hyps[b->order[next]].score;
  } else {
    b->worst = score < b->worst ? score : b->worst;
  }
}

/* BeamHypotheses.is_done after a step that generated gen_len tokens; best is the best
 * candidate's running score. */
static int hyps_done(const kc_beam *b, double best, int64_t gen_len) {
  if (b->nhyp < b->nb) return 0;
  if (b->es == KC_EARLY_STOP_TRUE) return 1;
  double len = (double)gen_len;
  if (b->es == KC_EARLY_STOP_NEVER && b->lp > 0) len = (double)b->max_new;
  return b->worst >= best / pow(len, b->lp);
}

/* finalize(): unless done, the live beams join the hypotheses; then the best nret, taken as
 * sorted(key=score).pop() takes them (highest first; among equals the later in the list). */
static void beam_finalize(kc_beam *b, int was_done) {
  if (!was_done)
    for (int32_t i = 0; i < b->nb; i++)
      hyp_add(b, b->tok + i * b->max_new, b->t, (double)b->scores[i], b->t, 0);
  for (int32_t r = 0; r < b->nret; r++) {
    int32_t best = -1;
    for (int32_t j = 0; j < b->nhyp; j++) {
      int taken = 0;
      for (int32_t q = 0; q < r; q++)
        taken |= b->result[q] == b->order[j];
      if (taken) continue;
      if (best < 0 || b->hyps[b->order[j]].score >= b->hyps[b->order[best]].score) best = j;
    }
    b->result[r] = b->order[best];
  }
  b->done = 1;
}

/* Insert (score, flat) into the descending candidate list of *n (at most b->ncand) entries;
 * candidates arrive in ascending flat order, so an equal score goes after those present (the
 * lower flat index first). */
static void cand_push(kc_beam *b, int64_t *n, float score, int64_t flat) {
  int64_t m = *n;
  if (m == b->ncand) {
    if (!(score > b->cscore[m - 1])) return;
    m--;
  } else {
    (*n)++;
  }
  while (m > 0 && score > b->cscore[m - 1]) {
    b->cscore[m] = b->cscore[m - 1];
    b->cflat[m] = b->cflat[m - 1];
    m--;
  }
  b->cscore[m] = score;
  b->cflat[m] = flat;
}

kc_status kc_beam_step(kc_context *ctx, kc_beam *b, const float *logits, int64_t row_stride,
                       int32_t *next_tokens, int32_t *parents, int *done) {
  *done = b->done;
  if (b->done)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "beam search: a step after the search was done");
  int64_t V = b->vocab, nb = b->nb;
  if (nb * V < b->ncand)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "beam search: %lld beams over %lld tokens hold fewer than the %lld "
                     "candidates a step takes",
                     (long long)nb, (long long)V, (long long)b->ncand);
  int64_t nc = 0;
  for (int64_t bi = 0; bi < nb; bi++) {
    const float *row = logits + bi * row_stride;
    /* log_softmax (in double, rounded to f32) */
    float mx = -INFINITY;
    for (int64_t v = 0; v < V; v++) {
      if (isnan(row[v]))
        return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                         "beam search: the logit of token %lld of beam %lld is NaN", (long long)v,
                         (long long)bi);
      if (row[v] > mx) mx = row[v];
    }
    if (mx == -INFINITY || mx == INFINITY)
      return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                       "beam search: the logits of beam %lld have no finite maximum",
                       (long long)bi);
    double sum = 0;
    for (int64_t v = 0; v < V; v++)
      sum += exp((double)row[v] - (double)mx);
    double shift = (double)mx + log(sum);
    for (int64_t v = 0; v < V; v++)
      b->lsm[v] = (float)((double)row[v] - shift);
    if (b->rep != 1.0) {
      /* RepetitionPenaltyLogitsProcessor over this beam's prompt + tokens: gather, scatter */
      float r = (float)b->rep;
      const int32_t *mine = b->tok + bi * b->max_new;
      int64_t ns = b->nprompt + b->t;
      for (int64_t i = 0; i < ns; i++) {
        int32_t id = i < b->nprompt ? b->prompt[i] : mine[i - b->nprompt];
        b->gathered[i] = penalized(b->lsm[id], r);
      }
      for (int64_t i = 0; i < ns; i++) {
        int32_t id = i < b->nprompt ? b->prompt[i] : mine[i - b->nprompt];
        b->lsm[id] = b->gathered[i];
      }
    }
    float base = b->scores[bi];
    for (int64_t v = 0; v < V; v++)
      cand_push(b, &nc, b->lsm[v] + base, bi * V + v);
  }
  /* BeamSearchScorer.process */
  int64_t gen_len = b->t + 1, filled = 0;
  for (int64_t rank = 0; rank < nc && filled < nb; rank++) {
    int64_t bi = b->cflat[rank] / V;
    int32_t tok = (int32_t)(b->cflat[rank] % V);
    if (is_eos(b, tok)) {
      if (rank >= nb) continue;
      hyp_add(b, b->tok + bi * b->max_new, b->t, (double)b->cscore[rank], gen_len, 1);
    } else {
      b->nscore[filled] = b->cscore[rank];
      next_tokens[filled] = tok;
      parents[filled] = (int32_t)bi;
      filled++;
    }
  }
  if (filled < nb)
    return kc_errorf(ctx, KC_ERR_INTERNAL, "beam search: only %lld of %lld beams could be filled",
                     (long long)filled, (long long)nb);
  int fin = hyps_done(b, (double)b->cscore[0], gen_len);
  /* reorder the live beams' tokens by parent, append the new ones */
  for (int64_t i = 0; i < nb; i++) {
    int32_t *dst = b->tok2 + i * b->max_new;
    if (b->t) memcpy(dst, b->tok + parents[i] * b->max_new, (size_t)b->t * sizeof *dst);
    dst[b->t] = next_tokens[i];
    b->scores[i] = b->nscore[i];
  }
  int32_t *swap = b->tok;
  b->tok = b->tok2;
  b->tok2 = swap;
  b->t++;
  if (fin || b->t == b->max_new) beam_finalize(b, fin);
  *done = b->done;
  return KC_OK;
}

kc_status kc_beam_result(kc_context *ctx, const kc_beam *b, int32_t i, const int32_t **tokens,
                         int64_t *len, double *score) {
  if (!b->done)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "beam search: no result before the search is done");
  if (i < 0 || i >= b->nret)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "beam search: result %d of %d", (int)i, (int)b->nret);
  int32_t slot = b->result[i];
  *tokens = b->htok + (int64_t)slot * (b->max_new + 1);
  *len = b->hyps[slot].len;
  *score = b->hyps[slot].score;
  return KC_OK;
}
