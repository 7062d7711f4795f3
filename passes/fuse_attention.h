/*
 * passes/fuse_attention.h - private to the fuse-attention pass (passes/fuse_attention*.c,
 * passes/fuse_rotary.c): reading constants and producers, what a mask on the scores means, and
 * the rotate-half rotary form.
 *
 * The pass (fuse_attention.c) matches matmul(softmax(scores), v) with the shared matcher; the
 * helpers here only look at the graph (they never rewrite), except kc_fa_rot_cache, which builds
 * the attention's cos/sin caches through the rewriter of the match being rewritten.
 * Invariants: no helper keeps a kc_node pointer across a call that adds nodes; a "large
 * negative" is anything at or below KC_FA_NEG_BIG (-10000, BERT's), -inf included.
 */
#ifndef KERNC_PASSES_FUSE_ATTENTION_H
#define KERNC_PASSES_FUSE_ATTENTION_H

#include "passes/internal.h"
#include "passes/match.h"

/* A score plus this much (or less) gets a softmax weight of 0 for every practical score. */
#define KC_FA_NEG_BIG (-10000.0)

/* ---- graph reading (fuse_attention.c) ----------------------------------------------------- */

/* The node defining v, or NULL (a graph input). */
const kc_node *kc_fa_def(const kc_graph *g, kc_val v);
/* The data of v when a `constant` or a `weight` with bound data defines it, else NULL. */
const kc_tensor *kc_fa_data(const kc_graph *g, kc_val v);
/* v is a one-element constant; its value goes to *x. */
bool kc_fa_scalar(const kc_graph *g, kc_val v, double *x);
/* v is an integer constant of one element (a scalar or [1]); its value goes to *x. */
bool kc_fa_int1(const kc_graph *g, kc_val v, int64_t *x);
/* A static dim of v (axis < 0 counts from the end), or -1 when symbolic or out of range. */
int64_t kc_fa_dim(const kc_graph *g, kc_val v, int axis);
/* Same dim (axis < 0 from the end) of a and b? */
bool kc_fa_same_dim(const kc_graph *g, kc_val a, int ia, kc_val b, int ib);

/* ---- masks (fuse_attention_mask.c) --------------------------------------------------------- */

/* The scores a mask applies to, [B, heads, S, T]: their dtype and sizes. */
typedef struct kc_fa_scores {
  kc_dtype dtype;
  kc_dim b, s, t;
  kc_dim off; /* t - s: the diagonal of a causal mask aligned at the bottom right */
} kc_fa_scores;

/* What the fused attention gets as its mask input. */
typedef enum kc_fa_input {
  KC_FA_IN_NONE,
  KC_FA_IN_PADDING,  /* [B, T], nonzero = keep */
  KC_FA_IN_ADDITIVE, /* broadcast to [B, heads, S, T] */
} kc_fa_input;

typedef struct kc_fa_mask {
  bool causal;      /* key j is visible to query i iff j <= i + T - S */
  kc_fa_input kind; /* and the mask input, if any */
  kc_val input;
  kc_val additive; /* KC_FA_IN_PADDING from an added mask: that mask, to add it as it is */
  bool nonpos;     /* an added mask proven <= 0 everywhere (so it never undoes a where's fill) */
} kc_fa_mask;

/*
 * m is added to the scores: causal (no tensor), padding (the [B, T] keep mask it is built from)
 * or additive (m itself). False (reason in why) when m cannot be an additive mask.
 */
bool kc_fa_mask_added(const kc_graph *g, kc_val m, const kc_fa_scores *sc, kc_fa_mask *out,
                      char *why, size_t size);
/*
 * where(c, scores, fill) (keep: true keeps a score) or where(c, fill, scores), fill a large
 * negative: causal or padding; false (reason in why) for any other condition.
 */
bool kc_fa_mask_where(const kc_graph *g, kc_val c, bool keep, const kc_fa_scores *sc,
                      kc_fa_mask *out, char *why, size_t size);
/*
 * m = where(and(causal, pad), 0, fill) (either order), fill a large negative, pad a padding
 * condition [B, 1, 1, T]: the causal part needs no tensor, the rest is where(pad, 0, fill).
 * Or m = where(masked, fill, causal) with causal an additive causal mask (0 / large negative)
 * and masked a padding condition (true where the pad is 0; transformers' masked_fill of the
 * padding into the 4-d causal mask): the rest is where(masked, fill, 0). The operands of that
 * where go to w[3]; w[2].id == 0 stands for a scalar 0 of the scores' dtype, for the caller to
 * make.
 */
bool kc_fa_mask_causal_and(const kc_graph *g, kc_val m, const kc_fa_scores *sc, kc_val w[3]);
/* v [..., S] holds its index along the last axis (range(0, S, 1), viewed or broadcast)? */
bool kc_fa_is_positions(const kc_graph *g, kc_val v);

/* ---- rotary (fuse_rotary.c) ------------------------------------------------------------------ */

/* x * cos + rotate_half(x) * sin, x [B, H, S, D], cos/sin [..., S, D] with equal halves. */
typedef struct kc_fa_rot {
  kc_val x, cos, sin;
} kc_fa_rot;

/* Is y (through the matcher, with use counts u) the rotate-half rotary of some x? */
bool kc_fa_rotate_half(const kc_graph *g, const kc_uses *u, kc_val y, kc_fa_rot *out, char *why,
                       size_t size);
/* The [S, D/2] cache the attention kernel reads, built from cos or sin [1.., S, D] (equal
 * halves, checked by kc_fa_rotate_half); {0} when out of memory. */
kc_val kc_fa_rot_cache(kc_rewriter *rw, kc_val c);

#endif /* KERNC_PASSES_FUSE_ATTENTION_H */
