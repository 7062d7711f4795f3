/*
 * codegen/cpu/scalar_compare.c - the math of the comparison and logic elementwise ops: equal
 * less greater and not where (kc_scalar_<op>, see emit.h).
 *
 * Comparisons yield i1 (bool's compute type). Float comparisons are ordered, so any nan
 * compares false, as IEEE and numpy; integer ones use the dtype's signedness, so unsigned
 * values above the signed range order correctly. where(cond, a, b) selects lane-wise.
 * Invariants as every kc_scalar_*: no loops, no memory access; NULL (nothing emitted) when the
 * dtype does not fit.
 */
#include "vmath.h"

/* a[0] <pred> a[1] for the float / signed / unsigned flavour of one comparison. */
static LLVMValueRef compare(kc_ir *ir, kc_dtype in, LLVMValueRef *a, LLVMRealPredicate fp,
                            LLVMIntPredicate sp, LLVMIntPredicate up) {
  if (kc_dtype_is_float(in)) return LLVMBuildFCmp(ir->b, fp, a[0], a[1], "");
  if (!kc_dtype_is_int(in) && in != KC_BOOL) return NULL;
  return LLVMBuildICmp(ir->b, kc_vm_unsigned(in) ? up : sp, a[0], a[1], "");
}

LLVMValueRef kc_scalar_equal(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                             LLVMValueRef *a) {
  return compare(ir, in, a, LLVMRealOEQ, LLVMIntEQ, LLVMIntEQ);
}

LLVMValueRef kc_scalar_less(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  return compare(ir, in, a, LLVMRealOLT, LLVMIntSLT, LLVMIntULT);
}

LLVMValueRef kc_scalar_greater(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                               LLVMValueRef *a) {
  return compare(ir, in, a, LLVMRealOGT, LLVMIntSGT, LLVMIntUGT);
}

LLVMValueRef kc_scalar_and(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return in == KC_BOOL ? LLVMBuildAnd(ir->b, a[0], a[1], "") : NULL;
}

LLVMValueRef kc_scalar_not(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return in == KC_BOOL ? LLVMBuildNot(ir->b, a[0], "") : NULL;
}

LLVMValueRef kc_scalar_where(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                             LLVMValueRef *a) {
  return in == KC_BOOL ? LLVMBuildSelect(ir->b, a[0], a[1], a[2], "") : NULL;
}
