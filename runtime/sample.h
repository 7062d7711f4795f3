/*
 * runtime/sample.h - token selection for generation, graph-free: greedy, sampling and beam search
 * bookkeeping over rows of logits (f32, vocabulary V). runtime/sample.c is in libkernc and in the
 * runtime archive of compiled models (libc and libm only).
 *
 * Semantics follow Hugging Face transformers 4.46.3 (generation/logits_process.py,
 * generation/beam_search.py, GenerationMixin._get_logits_processor, _sample and _beam_search),
 * pinned: tests/models/make_sample_refs.py runs that version to write tests/sample/.
 *
 * Sampling, in generate()'s order: RepetitionPenaltyLogitsProcessor (over `seen`, the prompt and
 * the tokens generated so far, each id penalized once: score < 0 ? score * r : score / r), then,
 * only when sampling, the warpers TemperatureLogitsWarper (score / T), TopKLogitsWarper (keep
 * scores >= the k-th largest: ties at the threshold are all kept), TopPLogitsWarper (sort
 * ascending, softmax, cumulative sum; drop positions whose cumulative probability is <= 1 - top_p,
 * never the last min_tokens_to_keep), MinPLogitsWarper (drop probabilities < min_p * the top
 * probability, never the first min_tokens_to_keep in descending order), then a draw from the
 * softmax of what is left. Greedy (temperature 0, generate's do_sample=False) applies the
 * repetition penalty and takes the argmax, the lowest id on ties, a NaN counting as the largest
 * (torch.argmax). Arithmetic as torch does it in f32: penalty and temperature divide/multiply by
 * the parameter rounded to f32; top-p's cumulative sum accumulates in double and rounds each
 * partial sum to f32 (torch's CPU cumsum); 1 - top_p and min_p * top are rounded to f32 before
 * comparing. Softmax weights are expf(x - max) in f32 summed in double (torch's vectorized f32
 * softmax may differ in the last bit, so a cut that falls within an ulp may differ).
 *
 * Where torch leaves the order of tied scores unspecified (torch.sort, torch.argsort and
 * torch.topk are not stable in torch 1.13 beyond 16 elements), kernc uses the order torch's
 * stable sort gives: top-p ranks ties by ascending id in its ascending sort (so among tokens tied
 * at the cut the higher ids are kept), min-p's descending order puts lower ids first, and beam
 * search's top-k over beams x vocabulary puts the lower flat index (beam * V + token) first.
 *
 * Not followed on purpose: generate() defaults top_k to 50 when it is not given; here every
 * filter is off unless asked for (top_k 0, top_p 1, min_p 0, repetition_penalty 1). The random
 * stream is kernc's own (torch.multinomial's is not reproduced): a draw is a pure function of
 * (seed, step), a counter-based generator, so a sequence's tokens depend neither on what else is
 * in the batch nor on the thread count. Beam sampling (do_sample with num_beams > 1), typical-p,
 * epsilon/eta cutoffs and the other processors are not implemented.
 *
 * Invariants: no global state; kc_sample and kc_beam_step allocate nothing (scratch and beam
 * state are allocated once by their _new functions); inputs are never written.
 */
#ifndef KERNC_RUNTIME_SAMPLE_H
#define KERNC_RUNTIME_SAMPLE_H

#include "kernc.h"

#include <stdint.h>

/* ---- sampling ------------------------------------------------------------------------------ */

typedef struct kc_sample_params {
  double temperature;         /* 0: greedy (argmax); > 0: sample (1: no temperature warper) */
  int32_t top_k;              /* 0: off; > 0: TopKLogitsWarper(top_k) */
  double top_p;               /* 1: off; in [0, 1) TopPLogitsWarper(top_p) */
  double min_p;               /* 0: off; in (0, 1] MinPLogitsWarper(min_p) */
  double repetition_penalty;  /* 1: off; > 0 (greedy too) */
  int32_t min_tokens_to_keep; /* of the warpers; 0 means 1, as generate() with one beam */
  uint64_t seed;              /* the sequence's seed */
} kc_sample_params;

/* Parameters as transformers' generate(do_sample=True, ...) with no filter: temperature 1,
 * top_k 0, top_p 1, min_p 0, repetition_penalty 1, min_tokens_to_keep 1, seed 0. */
kc_sample_params kc_sample_params_default(void);
/* KC_OK, or KC_ERR_INVALID_ARG naming the parameter out of its range (those transformers
 * refuses: temperature < 0, top_k < 0, top_p or min_p outside [0, 1], penalty <= 0). */
kc_status kc_sample_params_check(kc_context *ctx, const kc_sample_params *p);

/* Work memory for rows of up to `vocab` logits: one per thread sampling at once. */
typedef struct kc_sample_scratch kc_sample_scratch;
kc_status kc_sample_scratch_new(kc_context *ctx, int64_t vocab, kc_sample_scratch **out);
void kc_sample_scratch_free(kc_sample_scratch *s); /* NULL is fine */

/*
 * The token for this step of a sequence into *token: logits[vocab] its row, seen[nseen] the ids
 * the repetition penalty covers (prompt and generated tokens; repeats are fine), step the
 * sequence's step counter (the draw is a function of (p->seed, step) only). KC_ERR_INVALID_ARG
 * for bad parameters, a seen id outside [0, vocab), a vocab over the scratch's, a NaN or +inf
 * logit when sampling, or a row with no finite logit.
 */
kc_status kc_sample(kc_context *ctx, const kc_sample_params *p, const float *logits, int64_t vocab,
                    const int32_t *seen, int64_t nseen, uint64_t step, kc_sample_scratch *s,
                    int32_t *token);

/*
 * For tests and inspection: the candidate set after the processors and warpers, *n ids in
 * ascending order (*ids) with their probabilities (*probs, the softmax over the set, computed in
 * double), both in the scratch until its next use. Greedy gives the argmax with probability 1.
 * Errors as kc_sample.
 */
kc_status kc_sample_candidates(kc_context *ctx, const kc_sample_params *p, const float *logits,
                               int64_t vocab, const int32_t *seen, int64_t nseen,
                               kc_sample_scratch *s, int64_t *n, const int32_t **ids,
                               const double **probs);

/* The uniform number in [0, 1) (53 bits) a draw of (seed, step) uses: a splitmix64-style hash
 * of the pair, no state. */
double kc_sample_uniform(uint64_t seed, uint64_t step);

/* ---- beam search --------------------------------------------------------------------------- */
/*
 * transformers 4.46.3's _beam_search with BeamSearchScorer for one prompt (batch_size 1,
 * num_beam_groups 1, do_sample False). Each step: log_softmax of every live beam's logits, the
 * repetition penalty over that beam's prompt + tokens (on the log-probs, as transformers applies
 * its processors there), plus the beam's running score (all f32 as torch); the best
 * max(2, 1 + neos) * num_beams of beams x vocabulary; going through them in order, an EOS
 * candidate ranked below num_beams is skipped, one ranked within becomes a finished hypothesis
 * (tokens without the EOS, score = sum of log-probs / generated_len^length_penalty in double,
 * generated_len counting the EOS), any other fills the next live beam until num_beams are full.
 * The finished hypotheses are kept as BeamHypotheses keeps them (the best num_beams, worst_score
 * as it updates it). Done when early_stopping is true and num_beams are finished; false: when
 * also the worst kept score >= best candidate sum / generated_len^length_penalty; "never": the
 * same with max_new_tokens as the length when length_penalty > 0. Generation also stops at
 * max_new_tokens; then, unless done, the live beams join the hypotheses (their length:
 * max_new_tokens). Results are the best num_return, best first (ties: the later added first, as
 * Python's stable sort then pop() gives), each followed by eos[0] when an EOS ended it (as
 * finalize() writes sequences; eos[0] even when another EOS id ended it).
 * At the first step every beam holds the prompt; only beam 0 counts (the others start at -1e9).
 */
typedef enum kc_early_stopping {
  KC_EARLY_STOP_FALSE = 0, /* transformers' default: the heuristic above */
  KC_EARLY_STOP_TRUE = 1,
  KC_EARLY_STOP_NEVER = 2,
} kc_early_stopping;

typedef struct kc_beam_params {
  int32_t num_beams;     /* > 1 */
  double length_penalty; /* transformers' default 1.0 */
  kc_early_stopping early_stopping;
  int32_t num_return;     /* num_return_sequences, 1..num_beams (0 means 1) */
  int64_t max_new_tokens; /* > 0 */
  const int32_t *eos;     /* EOS ids (copied); neos may be 0 */
  int32_t neos;
  double repetition_penalty; /* 1: off */
} kc_beam_params;

typedef struct kc_beam kc_beam;

/* A search over a vocabulary of `vocab` tokens after prompt[nprompt] (copied; the repetition
 * penalty covers it). Allocates everything the search needs. */
kc_status kc_beam_new(kc_context *ctx, const kc_beam_params *p, int64_t vocab,
                      const int32_t *prompt, int64_t nprompt, kc_beam **out);
void kc_beam_free(kc_beam *b); /* NULL is fine */

/*
 * One step. Row b of the logits (b < num_beams) is at logits + b * row_stride; row_stride 0
 * gives every beam the same row (the first step, where all beams hold the prompt). Writes, for
 * each new live beam i, next_tokens[i] and parents[i], the old beam it continues: the caller
 * reorders its caches by forking parents[i] into beam i. *done is set when generation is over
 * (finished hypotheses are good enough, or max_new_tokens reached); the results are then
 * ready, and the tokens of this step need no model run. KC_ERR_INVALID_ARG after done, for a
 * NaN logit, or when beams x vocab holds fewer tokens than the step picks.
 */
kc_status kc_beam_step(kc_context *ctx, kc_beam *b, const float *logits, int64_t row_stride,
                       int32_t *next_tokens, int32_t *parents, int *done);

/* Tokens generated so far per live beam, and a live beam's tokens (valid until the next step). */
int64_t kc_beam_len(const kc_beam *b);
const int32_t *kc_beam_tokens(const kc_beam *b, int32_t beam);
/* Whether the search is over (kc_beam_step said done). */
int kc_beam_done(const kc_beam *b);
/* Result i (< num_return, best first) once done: its generated tokens (EOS appended as above),
 * their count and its score. KC_ERR_INVALID_ARG before done or for i out of range. */
kc_status kc_beam_result(kc_context *ctx, const kc_beam *b, int32_t i, const int32_t **tokens,
                         int64_t *len, double *score);

#endif
