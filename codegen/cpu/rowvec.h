/*
 * codegen/cpu/rowvec.h - vector helpers shared by the row-wise emitter families (reduce,
 * softmax, norm, attention): the host vector width per compute type, typed (and masked) vector
 * loads and stores, a strip-mined loop (full vectors, then one masked tail), horizontal
 * reductions, and the transcendental functions the families call.
 *
 * Invariants:
 *   - A masked load never touches memory in masked-off lanes and returns `fill` there, so a
 *     reduction can use its identity as fill and run over the tail unchanged.
 *   - Values are compute-typed as in emit.h (f16/bf16 -> f32, bool -> i1); loads and stores
 *     convert, nothing else does.
 *   - exp/log go through kc_rv_exp/kc_rv_log only, so switching them to vector math (vmath.h)
 *     is one edit.
 */
#ifndef KERNC_CODEGEN_CPU_ROWVEC_H
#define KERNC_CODEGEN_CPU_ROWVEC_H

#include "emit.h"

/* Lanes of one host vector of the compute type of t (f32 lanes scaled by element size). */
unsigned kc_rv_lanes(const kc_cpu_emit *e, kc_dtype t);

/*
 * Load lanes elements of dtype t at ptr[idx] as a compute-typed vector. mask (<lanes x i1>) may
 * be NULL (all lanes); masked-off lanes hold fill (a compute-typed vector; NULL: zero).
 */
LLVMValueRef kc_rv_load(kc_cpu_emit *e, kc_dtype t, LLVMValueRef ptr, LLVMValueRef idx,
                        unsigned lanes, LLVMValueRef mask, LLVMValueRef fill);
/* Store a compute-typed vector to ptr[idx] as dtype t; only lanes in mask (NULL: all). */
void kc_rv_store(kc_cpu_emit *e, kc_dtype t, LLVMValueRef ptr, LLVMValueRef idx, LLVMValueRef v,
                 unsigned lanes, LLVMValueRef mask);

/*
 * Strip-mined loop: body(user, i, mask, carry) for i = start, start + lanes, ... < end. Full
 * vectors get mask NULL; the last partial one (if any) gets a lane mask. carry[ncarry] are
 * loop-carried values: body reads the current ones from carry and writes the next ones back;
 * on return carry holds the values after the loop.
 */
typedef void (*kc_rv_body)(void *user, LLVMValueRef i, LLVMValueRef mask, LLVMValueRef *carry);
void kc_rv_for(kc_cpu_emit *e, LLVMValueRef start, LLVMValueRef end, unsigned lanes,
               unsigned ncarry, LLVMValueRef *carry, kc_rv_body body, void *user);

/*
 * The same with `unroll` copies of the carried values: full vectors run unroll at a time, copy u
 * of the body getting carry + u * ncarry, so a reduction has unroll independent dependency
 * chains; leftover full vectors and the tail use copy 0. carry holds unroll * ncarry values (all
 * initialised by the caller), and the caller combines the copies afterwards.
 */
void kc_rv_for_unrolled(kc_cpu_emit *e, LLVMValueRef start, LLVMValueRef end, unsigned lanes,
                        unsigned unroll, unsigned ncarry, LLVMValueRef *carry, kc_rv_body body,
                        void *user);

/* Horizontal sum of a float or integer vector (reassociated: a tree, not a chain). */
LLVMValueRef kc_rv_hsum(kc_ir *ir, LLVMValueRef v);
/* Horizontal maximum of a float vector, NaN-propagating (ONNX max semantics). */
LLVMValueRef kc_rv_hmax(kc_ir *ir, LLVMValueRef v);
/* Elementwise maximum of float values, NaN-propagating. */
LLVMValueRef kc_rv_fmax(kc_ir *ir, LLVMValueRef a, LLVMValueRef b);
/* Elementwise exp / log / sqrt of float scalars or vectors. */
LLVMValueRef kc_rv_exp(kc_ir *ir, LLVMValueRef v);
LLVMValueRef kc_rv_log(kc_ir *ir, LLVMValueRef v);
LLVMValueRef kc_rv_sqrt(kc_ir *ir, LLVMValueRef v);
/* Float constant of the (scalar or vector) float type t. */
LLVMValueRef kc_rv_fconst(LLVMTypeRef t, double v);

#endif /* KERNC_CODEGEN_CPU_ROWVEC_H */
