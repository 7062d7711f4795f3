/*
 * codegen/cpu/scalar_compare.c - the math of the comparison and logic elementwise ops: equal
 * less greater less_equal greater_equal, and or xor not, where, is_nan is_inf (kc_scalar_<op>,
 * see emit.h).
 *
 * Comparisons yield i1 (bool's compute type). Float comparisons are ordered, so any nan
 * compares false, as IEEE and numpy; integer ones use the dtype's signedness, so unsigned
 * values above the signed range order correctly. where(cond, a, b) selects lane-wise.
 * Invariants as every kc_scalar_*: no loops, no memory access; NULL (nothing emitted) when the
 * dtype does not fit.
 */
#include "vmath.h"

#include <math.h>

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

LLVMValueRef kc_scalar_less_equal(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                  LLVMValueRef *a) {
  return compare(ir, in, a, LLVMRealOLE, LLVMIntSLE, LLVMIntULE);
}

LLVMValueRef kc_scalar_greater_equal(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                     LLVMValueRef *a) {
  return compare(ir, in, a, LLVMRealOGE, LLVMIntSGE, LLVMIntUGE);
}

LLVMValueRef kc_scalar_or(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out, LLVMValueRef *a) {
  return in == KC_BOOL ? LLVMBuildOr(ir->b, a[0], a[1], "") : NULL;
}

LLVMValueRef kc_scalar_xor(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return in == KC_BOOL ? LLVMBuildXor(ir->b, a[0], a[1], "") : NULL;
}

/* x != x: only nan is unordered with itself. */
LLVMValueRef kc_scalar_is_nan(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                              LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  return LLVMBuildFCmp(ir->b, LLVMRealUNO, a[0], a[0], "");
}

/* x == +inf when detect_positive, x == -inf when detect_negative (both by default). */
LLVMValueRef kc_scalar_is_inf(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                              LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  LLVMTypeRef t = LLVMTypeOf(a[0]);
  LLVMValueRef pos = LLVMBuildFCmp(ir->b, LLVMRealOEQ, a[0], kc_vm_fconst(t, INFINITY), "");
  LLVMValueRef neg = LLVMBuildFCmp(ir->b, LLVMRealOEQ, a[0], kc_vm_fconst(t, -INFINITY), "");
  bool p = kc_node_int(n, "detect_positive", 1) != 0, q = kc_node_int(n, "detect_negative", 1) != 0;
  if (p && q) return LLVMBuildOr(ir->b, pos, neg, "");
  return p ? pos : q ? neg : LLVMConstNull(LLVMTypeOf(pos));
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
