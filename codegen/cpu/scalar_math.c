/*
 * codegen/cpu/scalar_math.c - the math of the transcendental elementwise ops: exp log erf tanh
 * sigmoid sin cos and gelu (kc_scalar_<op>, see emit.h), on top of vmath.c.
 *
 * Float dtypes only (f16/bf16 arrive as f32); NULL for anything else, with nothing emitted.
 * GELU: approximate="none" is kc_vmath_gelu, "tanh" kc_vmath_gelu_tanh (both keep their
 * precision in the x << 0 tail, see vmath.c).
 * Invariants as every kc_scalar_*: no loops, no memory access.
 */
#include "vmath.h"

#include <string.h>

typedef LLVMValueRef (*vm_fn)(kc_ir *ir, LLVMValueRef x);

static LLVMValueRef unary(kc_ir *ir, kc_dtype in, LLVMValueRef *a, vm_fn f) {
  return kc_dtype_is_float(in) ? f(ir, a[0]) : NULL;
}

LLVMValueRef kc_scalar_exp(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return unary(ir, in, a, kc_vmath_exp);
}

LLVMValueRef kc_scalar_log(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return unary(ir, in, a, kc_vmath_log);
}

LLVMValueRef kc_scalar_erf(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return unary(ir, in, a, kc_vmath_erf);
}

LLVMValueRef kc_scalar_tanh(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  return unary(ir, in, a, kc_vmath_tanh);
}

LLVMValueRef kc_scalar_sigmoid(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                               LLVMValueRef *a) {
  return unary(ir, in, a, kc_vmath_sigmoid);
}

LLVMValueRef kc_scalar_sin(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return unary(ir, in, a, kc_vmath_sin);
}

LLVMValueRef kc_scalar_cos(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return unary(ir, in, a, kc_vmath_cos);
}

LLVMValueRef kc_scalar_gelu(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  if (strcmp(kc_node_string(n, "approximate", "none"), "tanh") == 0)
    return kc_vmath_gelu_tanh(ir, a[0]);
  return kc_vmath_gelu(ir, a[0]);
}
