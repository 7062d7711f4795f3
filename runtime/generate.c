/*
 * runtime/generate.c - text generation over a decoding session (kc_generate, kc_generate_batch of
 * kernc.h): greedy, sampling and beam search, with the token selection of runtime/sample.c
 * (transformers 4.46.3's semantics, pinned there) and the KV cache reordered by forking
 * sequences (runtime/kv_cache.c shares blocks; nothing copies a whole cache).
 *
 * Greedy and sampling: every prompt is a sequence of its own; the prompts are prefilled in one
 * step, then each step decodes one token of every sequence still going, together. A sequence's
 * tokens depend only on its prompt and its seed (seed + its index), never on the rest of the
 * batch. A sequence stops at an EOS id (kept in its output), after a stop sequence (kept), or
 * after max_new tokens.
 * Beam search: num_beams sequences; at each step kc_beam_step picks the next beams and the old
 * beam each continues, and the session forks those (the old ones are freed after), then decodes
 * the new beams' tokens in one step.
 *
 * Graph-free (it sees a session through kernc.h's functions only): part of the runtime archive
 * kernc_rt, so a compiled model's NAME_generate / NAME_generate_beams run this very code.
 *
 * Invariants: every sequence made here is freed before returning, whatever happened; the
 * callback sees each token once, in order per sequence (beam search: the final tokens).
 */
#include "ir/internal.h"
#include "runtime/sample.h"
#include "runtime/session.h"

#include <stdlib.h>
#include <string.h>

typedef struct gen_seq {
  int32_t seq;   /* session sequence, -1 when done */
  int64_t n;     /* tokens generated */
  int32_t *seen; /* prompt then generated, for the repetition penalty */
  int64_t nseen;
  float *logits; /* the next token's row */
} gen_seq;

static bool is_eos(const kc_generate_options *o, int64_t t) {
  for (int32_t i = 0; i < o->neos; i++)
    if (o->eos[i] == t) return true;
  return false;
}

/* Do the last tokens of out[0..n) end with one of the stop sequences? */
static bool at_stop(const kc_generate_options *o, const int64_t *out, int64_t n) {
  const int64_t *st = o->stop;
  for (int32_t i = 0; i < o->nstop; st += o->stop_len[i++]) {
    int64_t k = o->stop_len[i];
    if (k > 0 && k <= n && memcmp(out + n - k, st, (size_t)k * sizeof *st) == 0) return true;
  }
  return false;
}

static kc_status check_options(kc_session *s, const kc_generate_options *o, int64_t vocab) {
  kc_context *ctx = kc_session_context(s);
  if (o->max_new <= 0)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "generate: max_new must be positive");
  for (int32_t i = 0; i < o->neos; i++)
    if (o->eos[i] < 0 || o->eos[i] >= vocab)
      return kc_errorf(ctx, KC_ERR_INVALID_ARG, "generate: EOS id %lld is not in the vocabulary",
                       (long long)o->eos[i]);
  if (o->nstop && (!o->stop || !o->stop_len))
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "generate: stop sequences without their tokens");
  return KC_OK;
}

static kc_sample_params sample_params(const kc_generate_options *o, uint64_t seed) {
  kc_sample_params p = kc_sample_params_default();
  p.temperature = o->temperature;
  p.top_k = o->top_k;
  p.top_p = o->top_p > 0 ? o->top_p : 1;
  p.min_p = o->min_p;
  p.repetition_penalty = o->repetition_penalty > 0 ? o->repetition_penalty : 1;
  p.seed = seed;
  return p;
}

void kc_generate_defaults(kc_generate_options *o) {
  memset(o, 0, sizeof *o);
  o->max_new = 32;
  o->top_p = 1;
  o->repetition_penalty = 1;
  o->length_penalty = 1;
}

/* ---- greedy and sampling ----------------------------------------------------------------------
 */

static void free_seqs(kc_session *s, gen_seq *g, int32_t n) {
  for (int32_t i = 0; g && i < n; i++) {
    if (g[i].seq >= 0) kc_session_seq_free(s, g[i].seq);
    free(g[i].seen);
    free(g[i].logits);
  }
  free(g);
}

kc_status kc_generate_batch(kc_session *s, int32_t count, const int64_t *const *prompts,
                            const int64_t *nprompt, const kc_generate_options *o,
                            int64_t *const *outs, int64_t *nout) {
  if (!s || !o || count <= 0 || !prompts || !nprompt || !outs || !nout) return KC_ERR_INVALID_ARG;
  kc_context *ctx = kc_session_context(s);
  kc_clear_error(ctx);
  int64_t vocab = kc_session_vocab(s);
  kc_status st = check_options(s, o, vocab);
  if (st != KC_OK) return st;
  if (o->num_beams > 1)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "generate: beam search takes one prompt");
  gen_seq *g = calloc((size_t)count, sizeof *g);
  kc_decode_entry *e = calloc((size_t)count, sizeof *e);
  int64_t *tok = calloc((size_t)count, sizeof *tok);
  kc_sample_scratch *scratch = NULL;
  if (!g || !e || !tok) st = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory generating");
  for (int32_t i = 0; i < count && st == KC_OK; i++) {
    g[i].seq = -1;
    nout[i] = 0;
    if (nprompt[i] <= 0) {
      st = kc_errorf(ctx, KC_ERR_INVALID_ARG, "generate: prompt %d is empty", i);
      break;
    }
    g[i].seen = malloc((size_t)(nprompt[i] + o->max_new) * sizeof *g[i].seen);
    g[i].logits = malloc((size_t)vocab * sizeof *g[i].logits);
    if (!g[i].seen || !g[i].logits) {
      st = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory generating");
      break;
    }
    for (int64_t j = 0; j < nprompt[i]; j++) {
      if (prompts[i][j] < 0 || prompts[i][j] >= vocab) {
        st = kc_errorf(ctx, KC_ERR_INVALID_ARG,
                       "generate: prompt %d token %lld is %lld, not in "
                       "the vocabulary of %lld",
                       i, (long long)j, (long long)prompts[i][j], (long long)vocab);
        break;
      }
      g[i].seen[g[i].nseen++] = (int32_t)prompts[i][j];
    }
    if (st == KC_OK) st = kc_session_seq_new(s, &g[i].seq);
    e[i] = (kc_decode_entry){g[i].seq, (int32_t)nprompt[i], prompts[i], g[i].logits, 0};
  }
  if (st == KC_OK) st = kc_sample_scratch_new(ctx, vocab, &scratch);
  if (st == KC_OK) st = kc_session_decode(s, e, count); /* every prompt at once */
  for (int64_t step = 0; st == KC_OK; step++) {
    int32_t n = 0;
    for (int32_t i = 0; i < count && st == KC_OK; i++) {
      if (g[i].seq < 0) continue;
      int32_t t;
      kc_sample_params p = sample_params(o, o->seed + (uint64_t)i);
      st = kc_sample(ctx, &p, g[i].logits, vocab, g[i].seen, g[i].nseen, (uint64_t)step, scratch,
                     &t);
      if (st != KC_OK) break;
      outs[i][nout[i]++] = t;
      g[i].seen[g[i].nseen++] = t;
      if (o->on_token) o->on_token(o->user, i, t);
      if (is_eos(o, t) || nout[i] >= o->max_new || at_stop(o, outs[i], nout[i])) {
        kc_session_seq_free(s, g[i].seq);
        g[i].seq = -1;
        continue;
      }
      tok[i] = t;
      e[n++] = (kc_decode_entry){g[i].seq, 1, &tok[i], g[i].logits, 0};
    }
    if (st != KC_OK || n == 0) break;
    st = kc_session_decode(s, e, n);
  }
  kc_sample_scratch_free(scratch);
  free_seqs(s, g, count);
  free(e);
  free(tok);
  return st;
}

/* ---- beam search -------------------------------------------------------------------------------
 */

typedef struct beams {
  int32_t nb;
  int32_t *seq, *next_seq; /* per beam: its session sequence, -1: none */
  int32_t *tok, *parent;
  int64_t *tok64;
  float *logits; /* nb rows */
  kc_decode_entry *e;
} beams;

static void beams_free(kc_session *s, beams *b) {
  for (int32_t i = 0; b->seq && i < b->nb; i++)
    if (b->seq[i] >= 0) kc_session_seq_free(s, b->seq[i]);
  free(b->seq);
  free(b->next_seq);
  free(b->tok);
  free(b->parent);
  free(b->tok64);
  free(b->logits);
  free(b->e);
}

/* The new beams: beam i continues old beam parents[i] (forked), the old ones are freed. */
static kc_status reorder(kc_session *s, beams *b) {
  kc_status st = KC_OK;
  for (int32_t i = 0; i < b->nb; i++)
    b->next_seq[i] = -1;
  for (int32_t i = 0; i < b->nb && st == KC_OK; i++)
    st = kc_session_seq_fork(s, b->seq[b->parent[i]], &b->next_seq[i]);
  for (int32_t i = 0; i < b->nb; i++) { /* each old sequence once (at first all are the prompt) */
    bool seen = false;
    for (int32_t j = 0; j < i && !seen; j++)
      seen = b->seq[j] == b->seq[i];
    if (b->seq[i] >= 0 && !seen) kc_session_seq_free(s, b->seq[i]);
  }
  memcpy(b->seq, b->next_seq, (size_t)b->nb * sizeof *b->seq);
  return st;
}

kc_status kc_generate_beams(kc_session *s, const int64_t *prompt, int64_t nprompt,
                            const kc_generate_options *o, int64_t *out, int64_t *nout,
                            double *score) {
  if (!s || !o || !prompt || !out || !nout) return KC_ERR_INVALID_ARG;
  kc_context *ctx = kc_session_context(s);
  kc_clear_error(ctx);
  int64_t vocab = kc_session_vocab(s);
  kc_status st = check_options(s, o, vocab);
  if (st != KC_OK) return st;
  if (o->num_beams < 2 || nprompt <= 0)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "generate: beam search needs num_beams >= 2 and a "
                     "prompt");
  beams b = {.nb = o->num_beams};
  int32_t *p32 = malloc((size_t)nprompt * sizeof *p32), *eos = NULL;
  kc_beam *search = NULL;
  b.seq = malloc((size_t)b.nb * sizeof *b.seq);
  b.next_seq = malloc((size_t)b.nb * sizeof *b.next_seq);
  b.tok = malloc((size_t)b.nb * sizeof *b.tok);
  b.parent = malloc((size_t)b.nb * sizeof *b.parent);
  b.tok64 = malloc((size_t)b.nb * sizeof *b.tok64);
  b.logits = malloc((size_t)b.nb * (size_t)vocab * sizeof *b.logits);
  b.e = malloc((size_t)b.nb * sizeof *b.e);
  if (o->neos) eos = malloc((size_t)o->neos * sizeof *eos);
  if (!p32 || !b.seq || !b.next_seq || !b.tok || !b.parent || !b.tok64 || !b.logits || !b.e ||
      (o->neos && !eos))
    st = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory generating");
  for (int32_t i = 0; b.seq && i < b.nb; i++)
    b.seq[i] = -1;
  for (int64_t j = 0; j < nprompt && st == KC_OK; j++)
    p32[j] = (int32_t)prompt[j];
  for (int32_t i = 0; i < o->neos && st == KC_OK; i++)
    eos[i] = (int32_t)o->eos[i];
  kc_beam_params bp = {.num_beams = b.nb,
                       .length_penalty = o->length_penalty,
                       .early_stopping = (kc_early_stopping)o->early_stopping,
                       .num_return = 1,
                       .max_new_tokens = o->max_new,
                       .eos = eos,
                       .neos = o->neos,
                       .repetition_penalty = o->repetition_penalty > 0 ? o->repetition_penalty : 1};
  if (st == KC_OK) st = kc_beam_new(ctx, &bp, vocab, p32, nprompt, &search);
  /* the prompt once; every beam starts as it */
  int32_t first = -1;
  if (st == KC_OK) st = kc_session_seq_new(s, &first);
  kc_decode_entry pre = {first, (int32_t)nprompt, prompt, b.logits, 0};
  if (st == KC_OK) st = kc_session_decode(s, &pre, 1);
  for (int32_t i = 0; i < b.nb && st == KC_OK; i++)
    b.seq[i] = first; /* reorder frees it once */
  int done = 0;
  bool forked = false; /* the prompt's sequence was replaced by the beams' forks */
  int64_t stride = 0;  /* the first step: one row for every beam */
  while (st == KC_OK) {
    st = kc_beam_step(ctx, search, b.logits, stride, b.tok, b.parent, &done);
    if (st != KC_OK || done) break;
    st = reorder(s, &b); /* frees the old sequences even when a fork fails */
    forked = true;
    if (st != KC_OK) break;
    for (int32_t i = 0; i < b.nb; i++) {
      b.tok64[i] = b.tok[i];
      b.e[i] = (kc_decode_entry){b.seq[i], 1, &b.tok64[i], b.logits + (size_t)i * vocab, 0};
    }
    st = kc_session_decode(s, b.e, b.nb);
    stride = vocab;
  }
  if (st == KC_OK) {
    const int32_t *t;
    int64_t len;
    double sc;
    st = kc_beam_result(ctx, search, 0, &t, &len, &sc);
    for (int64_t j = 0; st == KC_OK && j < len; j++) {
      out[j] = t[j];
      if (o->on_token) o->on_token(o->user, 0, t[j]);
    }
    if (st == KC_OK) *nout = len;
    if (st == KC_OK && score) *score = sc;
  }
  /* Before the first reorder every beam is the prompt's sequence: free it once. (Comparing ids
   * cannot tell: the cache reuses freed ids, so a later beam 0 may have the prompt's id.) */
  if (!forked) {
    for (int32_t i = 0; b.seq && i < b.nb; i++)
      b.seq[i] = -1;
    if (first >= 0) kc_session_seq_free(s, first);
  }
  beams_free(s, &b);
  kc_beam_free(search);
  free(p32);
  free(eos);
  return st;
}
