/*
 * codegen/cpu/ewplan.h - private to codegen/cpu/: the one loop machinery of elementwise
 * kernels (elementwise.c), shared by the single-op family (kc_lower_elementwise) and fused
 * regions (kc_lower_fused, fused.c).
 *
 * The machinery plans the walk over the node's output shape from its inputs' broadcasting
 * (see elementwise.c), loads every input at each step, scalars or explicit vectors with a
 * masked tail, asks an evaluator for the values of the node's outputs, and stores them. Only
 * the evaluator knows what the node computes, so the two families differ in nothing else.
 *
 * Contract of kc_ew_lower's node (the caller checks it first, with a message naming the node):
 *   - every present input broadcasts to output 0's shape (rank at most its rank, each dim 1,
 *     the output's, or symbolic and settled at run time);
 *   - every output has output 0's shape (dtypes may differ).
 */
#ifndef KERNC_CODEGEN_CPU_EWPLAN_H
#define KERNC_CODEGEN_CPU_EWPLAN_H

#include "codegen/cpu/emit.h"

/* Most inputs, and most outputs, of one node the machinery takes (variadic min/max). */
#define KC_EW_MAX_OPS 64

/*
 * Computes a node's outputs for one step. args[i] is input i in its compute type (NULL when
 * absent), all of one width: `lanes` elements (a vector when lanes > 1, else a scalar); writes
 * outs[k] for every output k in the output's compute type, of the same width. Returns false
 * when it cannot (a dtype an op has no code for); the caller's user data says which and why,
 * and the half-built kernel is then thrown away.
 */
typedef bool (*kc_ew_eval_fn)(void *user, kc_ir *ir, unsigned lanes, LLVMValueRef *args,
                              LLVMValueRef *outs);

typedef struct kc_ew_eval {
  kc_ew_eval_fn fn;
  void *user;
  /* Bytes of the widest compute type the evaluator holds besides inputs and outputs (a fused
   * body's intermediates), so the vector width fits it too; 0 when none. */
  unsigned inner_bytes;
} kc_ew_eval;

/*
 * Emit e's kernel and units function with ev as the math. KC_ERR_UNSUPPORTED (no message)
 * when ev fails; the caller names the cause.
 */
kc_status kc_ew_lower(kc_cpu_emit *e, const kc_ew_eval *ev);

/* The tensor of v when v is a `constant` node of g with one element and data, else NULL. */
const kc_tensor *kc_ew_const_tensor(const kc_graph *g, kc_val v);
/* That element as a compute-typed LLVM constant (a scalar), or NULL when there is none. */
LLVMValueRef kc_ew_const_scalar(kc_ir *ir, const kc_graph *g, kc_val v);

/* Bytes of a dtype's compute type (bool's i1 counts 1; f16/bf16 compute as f32: 4). */
unsigned kc_ew_compute_bytes(kc_dtype t);

#endif /* KERNC_CODEGEN_CPU_EWPLAN_H */
