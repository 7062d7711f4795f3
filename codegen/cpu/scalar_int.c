/*
 * codegen/cpu/scalar_int.c - the math of mod and of the bitwise elementwise ops: mod
 * bitwise_and bitwise_or bitwise_xor bitwise_not bit_shift (kc_scalar_<op>, see emit.h).
 *
 * mod {fmod=0} is Python's remainder (the result takes the divisor's sign), {fmod=1} C's fmod
 * (the dividend's); floats through frem (C's fmod), then shifted into the divisor's sign for
 * fmod=0. Integer x mod 0 gives 0 and INT_MIN mod -1 gives 0, never a trap (ONNX leaves x mod 0
 * undefined; a kernel must not kill the process). bit_shift by the width or more gives 0, as
 * the bits shifted out (LLVM's shifts are poison there).
 * Invariants as every kc_scalar_*: no loops, no memory access; NULL (nothing emitted) when the
 * dtype does not fit.
 */
#include "vmath.h"

#include <string.h>

LLVMValueRef kc_scalar_mod(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  LLVMBuilderRef b = ir->b;
  LLVMTypeRef t = LLVMTypeOf(a[0]);
  bool c_fmod = kc_node_int(n, "fmod", 0) != 0;
  if (kc_dtype_is_float(in)) {
    LLVMValueRef r = LLVMBuildFRem(b, a[0], a[1], "");
    if (c_fmod) return r;
    /* a nonzero remainder whose sign differs from the divisor's moves by one divisor */
    LLVMValueRef zero = kc_vm_fconst(t, 0.0);
    LLVMValueRef rneg = LLVMBuildFCmp(b, LLVMRealOLT, r, zero, "");
    LLVMValueRef bneg = LLVMBuildFCmp(b, LLVMRealOLT, a[1], zero, "");
    LLVMValueRef fix = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealONE, r, zero, ""),
                                    LLVMBuildXor(b, rneg, bneg, ""), "");
    return LLVMBuildSelect(b, fix, LLVMBuildFAdd(b, r, a[1], ""), r, "");
  }
  if (!kc_dtype_is_int(in)) return NULL;
  LLVMValueRef zero = kc_vm_iconst(t, 0);
  LLVMValueRef bz = LLVMBuildICmp(b, LLVMIntEQ, a[1], zero, "");
  if (kc_vm_unsigned(in)) { /* both conventions agree on unsigned values */
    LLVMValueRef d = LLVMBuildSelect(b, bz, kc_vm_iconst(t, 1), a[1], "");
    return LLVMBuildSelect(b, bz, zero, LLVMBuildURem(b, a[0], d, ""), "");
  }
  /* 0 and -1 are the divisors that trap (INT_MIN srem -1); x mod -1 is 0 either way */
  LLVMValueRef bm1 = LLVMBuildICmp(b, LLVMIntEQ, a[1], kc_vm_iconst(t, -1), "");
  LLVMValueRef bad = LLVMBuildOr(b, bz, bm1, "");
  LLVMValueRef d = LLVMBuildSelect(b, bad, kc_vm_iconst(t, 1), a[1], "");
  LLVMValueRef r = LLVMBuildSRem(b, a[0], d, "");
  if (!c_fmod) {
    LLVMValueRef fix =
        LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntNE, r, zero, ""),
                     LLVMBuildICmp(b, LLVMIntSLT, LLVMBuildXor(b, r, d, ""), zero, ""), "");
    r = LLVMBuildSelect(b, fix, LLVMBuildAdd(b, r, d, ""), r, "");
  }
  return LLVMBuildSelect(b, bad, zero, r, "");
}

LLVMValueRef kc_scalar_bitwise_and(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                   LLVMValueRef *a) {
  return kc_dtype_is_int(in) ? LLVMBuildAnd(ir->b, a[0], a[1], "") : NULL;
}

LLVMValueRef kc_scalar_bitwise_or(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                  LLVMValueRef *a) {
  return kc_dtype_is_int(in) ? LLVMBuildOr(ir->b, a[0], a[1], "") : NULL;
}

LLVMValueRef kc_scalar_bitwise_xor(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                   LLVMValueRef *a) {
  return kc_dtype_is_int(in) ? LLVMBuildXor(ir->b, a[0], a[1], "") : NULL;
}

LLVMValueRef kc_scalar_bitwise_not(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                   LLVMValueRef *a) {
  return kc_dtype_is_int(in) ? LLVMBuildNot(ir->b, a[0], "") : NULL;
}

/* x << n or x >> n (logical for unsigned, arithmetic for signed dtypes); n >= width gives 0
 * (a signed right shift of a negative x by so much gives 0 too: ONNX defines unsigned only). */
LLVMValueRef kc_scalar_bit_shift(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                 LLVMValueRef *a) {
  if (!kc_dtype_is_int(in)) return NULL;
  LLVMBuilderRef b = ir->b;
  LLVMTypeRef t = LLVMTypeOf(a[0]);
  int64_t width = (int64_t)kc_dtype_size(in) * 8;
  LLVMValueRef big = LLVMBuildICmp(b, kc_vm_unsigned(in) ? LLVMIntUGE : LLVMIntSGE, a[1],
                                   kc_vm_iconst(t, width), "");
  if (!kc_vm_unsigned(in))
    big = LLVMBuildOr(b, big, LLVMBuildICmp(b, LLVMIntSLT, a[1], kc_vm_iconst(t, 0), ""), "");
  LLVMValueRef sh = LLVMBuildSelect(b, big, kc_vm_iconst(t, 0), a[1], "");
  bool left = strcmp(kc_node_string(n, "direction", ""), "LEFT") == 0;
  LLVMValueRef r = left                 ? LLVMBuildShl(b, a[0], sh, "")
                   : kc_vm_unsigned(in) ? LLVMBuildLShr(b, a[0], sh, "")
                                        : LLVMBuildAShr(b, a[0], sh, "");
  return LLVMBuildSelect(b, big, kc_vm_iconst(t, 0), r, "");
}
