/*
 * codegen/cpu/scalar_math.c - the math of the transcendental elementwise ops: exp log erf tanh
 * sigmoid sin cos gelu, tan and the inverse / hyperbolic trig ops (through libm), and the
 * rounding ops ceil floor round and sign (kc_scalar_<op>, see emit.h), on top of vmath.c.
 *
 * Float dtypes only (f16/bf16 arrive as f32), sign takes integers too; NULL for anything else,
 * with nothing emitted.
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

/* The inverse and hyperbolic trig functions and tan, through libm (kc_vmath_libm). */
#define LIBM_OP(op)                                                                                \
  LLVMValueRef kc_scalar_##op(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,              \
                              LLVMValueRef *a) {                                                   \
    return kc_dtype_is_float(in) ? kc_vmath_libm(ir, #op, a[0]) : NULL;                            \
  }
LIBM_OP(tan)
LIBM_OP(asin)
LIBM_OP(acos)
LIBM_OP(atan)
LIBM_OP(sinh)
LIBM_OP(cosh)
LIBM_OP(asinh)
LIBM_OP(acosh)
LIBM_OP(atanh)

/* Rounding: round is to nearest, ties to even (ONNX Round, numpy's round). */
LLVMValueRef kc_scalar_ceil(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  return kc_dtype_is_float(in) ? kc_vm_call1(ir, "llvm.ceil", a[0]) : NULL;
}

LLVMValueRef kc_scalar_floor(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                             LLVMValueRef *a) {
  return kc_dtype_is_float(in) ? kc_vm_call1(ir, "llvm.floor", a[0]) : NULL;
}

LLVMValueRef kc_scalar_round(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                             LLVMValueRef *a) {
  return kc_dtype_is_float(in) ? kc_vm_call1(ir, "llvm.roundeven", a[0]) : NULL;
}

/* sign: -1, 0 or 1; a float nan stays nan (numpy's sign), unsigned values are 0 or 1. */
LLVMValueRef kc_scalar_sign(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  LLVMTypeRef t = LLVMTypeOf(a[0]);
  LLVMBuilderRef b = ir->b;
  if (kc_dtype_is_float(in)) {
    LLVMValueRef z = kc_vm_fconst(t, 0.0);
    LLVMValueRef r = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, a[0], z, ""),
                                     kc_vm_fconst(t, 1.0), a[0], "");
    return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, a[0], z, ""), kc_vm_fconst(t, -1.0), r,
                           "");
  }
  if (!kc_dtype_is_int(in)) return NULL;
  LLVMValueRef z = kc_vm_iconst(t, 0);
  LLVMValueRef r =
      LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntNE, a[0], z, ""), kc_vm_iconst(t, 1), z, "");
  if (kc_vm_unsigned(in)) return r;
  return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, a[0], z, ""), kc_vm_iconst(t, -1), r, "");
}
