/*
 * codegen/cpu/scalar_pow.c - kc_scalar_pow: ONNX Pow, whose base and exponent may have
 * different dtypes (the result has the base's).
 *
 *   float base: llvm.pow in the base's type (libm: exact), an integer exponent converted.
 *   integer base, float exponent: computed in f64 and truncated toward zero (saturating, so no
 *     poison), which is exact wherever the result fits a double.
 *   integer base and exponent: exact, by square-and-multiply over the exponent's low 6 bits in
 *     the base's width (wrapping, as integer overflow does in ONNX Runtime). Exponents >= 64 and
 *     negative ones are decided by the base alone: 1 stays 1, -1 alternates, and otherwise
 *     x^e >= 64 overflowed (0 for even x, the only value that keeps) and x^-e truncates to 0.
 *
 * The exponent arrives in its own compute type; kc_scalar_fn passes no dtype for it, so an
 * integer exponent is read as signed unless it has the base's type (then the base's
 * signedness applies). Invariants as every kc_scalar_*: no loops, no memory access.
 */
#include "vmath.h"

static unsigned lanes(LLVMTypeRef t) {
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMGetVectorSize(t) : 1;
}

/* Integer x of type xt (signedness u) to float type ft. */
static LLVMValueRef int_to_float(kc_ir *ir, LLVMValueRef x, bool u, LLVMTypeRef ft) {
  return u ? LLVMBuildUIToFP(ir->b, x, ft, "") : LLVMBuildSIToFP(ir->b, x, ft, "");
}

static LLVMValueRef float_base(kc_ir *ir, LLVMValueRef x, LLVMValueRef y, bool y_unsigned) {
  LLVMTypeRef t = LLVMTypeOf(x);
  if (!kc_vm_is_float(y))
    y = int_to_float(ir, y, y_unsigned, t);
  else if (LLVMTypeOf(y) != t)
    y = LLVMBuildFPCast(ir->b, y, t, "");
  return kc_vm_call2(ir, "llvm.pow", x, y);
}

static LLVMValueRef int_base_float_exp(kc_ir *ir, LLVMValueRef x, bool u, LLVMValueRef y) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMTypeRef dt = kc_emit_vec_type(LLVMDoubleTypeInContext(ir->ctx), lanes(t));
  LLVMValueRef p =
      kc_vm_call2(ir, "llvm.pow", int_to_float(ir, x, u, dt), LLVMBuildFPCast(ir->b, y, dt, ""));
  LLVMTypeRef i64 = kc_emit_vec_type(ir->t_i64, lanes(t));
  LLVMTypeRef types[2] = {i64, dt};
  LLVMValueRef r = kc_ir_intrinsic(ir, u ? "llvm.fptoui.sat" : "llvm.fptosi.sat", types, 2, &p, 1);
  return LLVMBuildTrunc(ir->b, r, t, "");
}

static LLVMValueRef int_base_int_exp(kc_ir *ir, LLVMValueRef x, bool xu, LLVMValueRef y, bool yu) {
  LLVMBuilderRef b = ir->b;
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMTypeRef i64 = kc_emit_vec_type(ir->t_i64, lanes(t));
  LLVMValueRef e = LLVMBuildIntCast2(b, y, i64, !yu, "");
  LLVMValueRef one = kc_vm_iconst(t, 1), zero = kc_vm_iconst(t, 0);
  LLVMValueRef r = one, sq = x;
  for (int k = 0; k < 6; k++) {
    LLVMValueRef bit =
        LLVMBuildICmp(b, LLVMIntNE, LLVMBuildAnd(b, e, kc_vm_iconst(i64, (int64_t)1 << k), ""),
                      kc_vm_iconst(i64, 0), "");
    r = LLVMBuildSelect(b, bit, LLVMBuildMul(b, r, sq, ""), r, "");
    if (k < 5) sq = LLVMBuildMul(b, sq, sq, "");
  }
  /* e < 0 or e >= 64 (one unsigned compare): decided by the base alone */
  LLVMValueRef far = LLVMBuildICmp(b, LLVMIntUGE, e, kc_vm_iconst(i64, 64), "");
  LLVMValueRef odd = LLVMBuildTrunc(b, e, kc_emit_vec_type(ir->t_i1, lanes(t)), "");
  LLVMValueRef is_one = LLVMBuildICmp(b, LLVMIntEQ, x, one, "");
  LLVMValueRef f = zero;
  if (!xu) {
    LLVMValueRef is_m1 = LLVMBuildICmp(b, LLVMIntEQ, x, kc_vm_iconst(t, -1), "");
    f = LLVMBuildSelect(b, is_m1, LLVMBuildSelect(b, odd, x, one, ""), zero, "");
  }
  f = LLVMBuildSelect(b, is_one, one, f, "");
  return LLVMBuildSelect(b, far, f, r, "");
}

LLVMValueRef kc_scalar_pow(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  LLVMValueRef x = a[0], y = a[1];
  bool same = LLVMTypeOf(x) == LLVMTypeOf(y);
  bool yu = same && kc_vm_unsigned(in);
  if (kc_dtype_is_float(in)) return float_base(ir, x, y, yu);
  if (!kc_dtype_is_int(in)) return NULL;
  bool xu = kc_vm_unsigned(in);
  if (kc_vm_is_float(y)) return int_base_float_exp(ir, x, xu, y);
  return int_base_int_exp(ir, x, xu, y, yu);
}
