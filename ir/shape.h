/*
 * ir/shape.h - helpers shared by the shape functions (ir/shape_*.c); private to them.
 *
 * A shape function checks what it relies on, then types every present output (dtype, rank,
 * dims) and, for small integer tensors whose contents follow from known inputs, their known
 * values. Conventions kept by all of them:
 *   - kc_node_infer has already checked that every present input is typed (rank >= 0);
 *   - outputs with id 0 (absent optional outputs) are skipped;
 *   - kc_shp_set clears known values, so re-running inference never leaves stale contents;
 *   - a size that depends on an input whose contents are unknown becomes a fresh symbol; when
 *     even the rank is unknown the op is KC_ERR_UNSUPPORTED, naming the input.
 */
#ifndef KERNC_IR_SHAPE_H
#define KERNC_IR_SHAPE_H

#include "internal.h"

/* Largest tensor whose contents are tracked as known values. */
#define KC_KNOWN_MAX 64

/*
 * A fact about sizes the result relies on but inference cannot prove (two symbolic dims equal;
 * a dim broadcasting to another): reported to the graph's assumption sink, if any, for the node
 * being inferred (kind KC_ASSUME_EQ: a == b; KC_ASSUME_BCAST: a == b or a == 1; KC_ASSUME_LE:
 * a <= b). The compiled
 * model checks each at run time, so an input that breaks one is an error, not a wrong size.
 * Facts that hold trivially (a == b, or a == 1 for BCAST) are not reported.
 */
void kc_shp_assume(kc_graph *g, int kind, kc_dim a, kc_dim b);

/* Input/output counts against the op table, and required inputs present (KC_ERR_VERIFY). */
kc_status kc_shp_arity(kc_graph *g, const kc_node *n);
/* Input i of n, or NULL when absent (past nin or id 0). */
const kc_value *kc_shp_in(const kc_graph *g, const kc_node *n, uint32_t i);
/* Type output i of n (no-op when that output is absent); clears its known values. */
void kc_shp_set(kc_graph *g, const kc_node *n, uint32_t i, kc_dtype t, int rank,
                const kc_dim *dims);
/* Type output i like value v. */
void kc_shp_set_like(kc_graph *g, const kc_node *n, uint32_t i, kc_val v);
/* Attach known contents (cnt dims, copied into the arena) to output i. */
void kc_shp_set_known(kc_graph *g, const kc_node *n, uint32_t i, uint32_t cnt, const kc_dim *v);

/* Normalize axis (negative counts from the end) into [0, rank); KC_ERR_SHAPE naming what. */
kc_status kc_shp_axis(kc_graph *g, const kc_node *n, const char *what, int64_t axis, int rank,
                      int *out);
/*
 * Numpy broadcasting of two shapes into (rank, dims). 1 broadcasts; equal dims match; two
 * different integers are an error; a symbol against an integer takes the integer (the only
 * size that can be right), two different symbols take the first.
 */
kc_status kc_shp_bcast(kc_graph *g, const kc_node *n, int ra, const kc_dim *da, int rb,
                       const kc_dim *db, int *rank, kc_dim *dims);
/* Input i must broadcast one way to shape (rank, dims) (scale, bias, mask operands). */
kc_status kc_shp_bcast_to(kc_graph *g, const kc_node *n, uint32_t i, int rank, const kc_dim *dims);
/* Could dims a and b be equal? False only when both are integers and differ; when inference
 * cannot tell, their equality is assumed (kc_shp_assume). */
bool kc_shp_dims_match(kc_graph *g, kc_dim a, kc_dim b);

/* Dtype checks on input i; the message names the input and what was expected. */
kc_status kc_shp_need_float(kc_graph *g, const kc_node *n, uint32_t i);
kc_status kc_shp_need_numeric(kc_graph *g, const kc_node *n, uint32_t i);
kc_status kc_shp_need_int(kc_graph *g, const kc_node *n, uint32_t i);
kc_status kc_shp_need_dtype(kc_graph *g, const kc_node *n, uint32_t i, kc_dtype t);
/* Inputs i and j have the same dtype. */
kc_status kc_shp_same_dtype(kc_graph *g, const kc_node *n, uint32_t i, uint32_t j);
/* Input i has rank in [lo, hi]. */
kc_status kc_shp_need_rank(kc_graph *g, const kc_node *n, uint32_t i, int lo, int hi);

/* Known contents of v, all integer constants: true with up to max values in out, count in *n. */
bool kc_shp_known_ints(const kc_graph *g, kc_val v, int64_t *out, uint32_t max, uint32_t *n);
/* Scalar value of a known or constant single-element tensor, as a double. */
bool kc_shp_scalar(const kc_graph *g, kc_val v, double *out);
/* Length of 1-D (or rank 0: 1) integer-sized input i, or -1 when symbolic. */
int64_t kc_shp_len(const kc_graph *g, const kc_node *n, uint32_t i);
/* Product of dims. */
kc_dim kc_shp_prod(kc_graph *g, int rank, const kc_dim *dims);
/* Fill dims with fresh symbols. */
void kc_shp_fresh(kc_graph *g, int rank, kc_dim *dims);
/* "[B,S,384]" into buf. */
const char *kc_shp_fmt(const kc_graph *g, int rank, const kc_dim *dims, char *buf, size_t size);
/* Error: the contents of input i are needed to know the output rank (KC_ERR_UNSUPPORTED). */
kc_status kc_shp_rank_unknown(kc_graph *g, const kc_node *n, uint32_t i, const char *what);
/*
 * Known contents (see ir/internal.h, kc_value.known) exist for values of every integer type, bool
 * and every float type; a float's known element is exactly its value, an integer (shape
 * arithmetic cast to float and back: Range over float operands, RoPE positions), never float
 * math. True when t is one of those types.
 */
bool kc_shp_tracked(kc_dtype t);
/*
 * Exact result v of an integer computation, as the element a tensor of dtype t holds (what its
 * kernel computes: integers wrap, floats round to t, bool is v != 0): true with it in *out,
 * false when that is not an integer known value (a float beyond int64, infinity).
 * A symbolic v is kept as it is for i64, u64, i32, u32, f32 and f64 (the types that hold every
 * integer up to 2^24 exactly); kc_node_requirements lists the range each such value assumes.
 * Symbolic values of the narrower types (f16 holds integers exactly only up to 2048) are not
 * known, since a requirement there would refuse realistic sizes.
 */
bool kc_shp_fit(kc_graph *g, kc_dtype t, kc_dim v, kc_dim *out);
/* The range [lo, hi] of integers dtype t holds exactly (-2^24..2^24 for f32, i32's range...);
 * false for types whose symbolic known values are not kept (see kc_shp_fit). */
bool kc_shp_exact_range(kc_dtype t, int64_t *lo, int64_t *hi);

#endif /* KERNC_IR_SHAPE_H */
