/*
 * codegen/cpu/vmath.h - private to the CPU code generator: vector-friendly math built from LLVM
 * IR (vmath.c), and the small typed-constant helpers the kc_scalar_* functions share.
 *
 * Every function here takes and returns values of one LLVM type, a scalar or a vector, and
 * emits only lane-wise straight-line code (no loops, no memory access), so the same call serves
 * the elementwise loops, masked tails and, later, fused regions.
 *
 * f32 (and f16/bf16, which compute as f32): exp/log/tanh/erf/erfc/sigmoid are polynomial
 * approximations with range reduction that vectorize (about 1-2 ulp, see vmath.c), with the
 * IEEE special values: exp(-inf) = 0, exp(inf) = inf, log(0) = -inf, log(x < 0) = nan,
 * tanh(+-inf) = +-1, nan in gives nan out. f64: libm through LLVM intrinsics or calls, for
 * exactness. sin/cos: llvm.sin/llvm.cos (libm) for every type.
 */
#ifndef KERNC_CODEGEN_CPU_VMATH_H
#define KERNC_CODEGEN_CPU_VMATH_H

#include "codegen/cpu/emit.h"

LLVMValueRef kc_vmath_exp(kc_ir *ir, LLVMValueRef x);
LLVMValueRef kc_vmath_log(kc_ir *ir, LLVMValueRef x);
LLVMValueRef kc_vmath_tanh(kc_ir *ir, LLVMValueRef x);
LLVMValueRef kc_vmath_erf(kc_ir *ir, LLVMValueRef x);
/* 1 - erf(x) without the cancellation (GELU's tail for x << 0). */
LLVMValueRef kc_vmath_erfc(kc_ir *ir, LLVMValueRef x);
LLVMValueRef kc_vmath_sigmoid(kc_ir *ir, LLVMValueRef x);
/* GELU, x/2 (1 + erf(x/sqrt2)), a few ulp everywhere for f32 (via erfc with a two-part
 * argument), and its tanh approximation x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
LLVMValueRef kc_vmath_gelu(kc_ir *ir, LLVMValueRef x);
LLVMValueRef kc_vmath_gelu_tanh(kc_ir *ir, LLVMValueRef x);
LLVMValueRef kc_vmath_sin(kc_ir *ir, LLVMValueRef x);
LLVMValueRef kc_vmath_cos(kc_ir *ir, LLVMValueRef x);
/* name(x) through libm's double function name (f32 widened and rounded back once), lane by
 * lane: exact to the last bit of f32, slow; for the rarely used trig and hyperbolic ops. */
LLVMValueRef kc_vmath_libm(kc_ir *ir, const char *name, LLVMValueRef x);

/* ---- helpers shared by the scalar_*.c files ------------------------------------------------ */

/* True when v's element type is floating point. */
bool kc_vm_is_float(LLVMValueRef v);
/* A floating-point constant of type t (splat when t is a vector). */
LLVMValueRef kc_vm_fconst(LLVMTypeRef t, double v);
/* An integer constant of type t from its bits (splat when t is a vector). */
LLVMValueRef kc_vm_iconst(LLVMTypeRef t, int64_t v);
/* Call a one-operand intrinsic overloaded on x's type ("llvm.fabs", "llvm.sqrt"...). */
LLVMValueRef kc_vm_call1(kc_ir *ir, const char *intrinsic, LLVMValueRef x);
/* The same with two operands of x's type ("llvm.minimum", "llvm.copysign"...). */
LLVMValueRef kc_vm_call2(kc_ir *ir, const char *intrinsic, LLVMValueRef x, LLVMValueRef y);
/* Unsigned integer dtypes (bool counts: it is 0/1). */
bool kc_vm_unsigned(kc_dtype t);

#endif /* KERNC_CODEGEN_CPU_VMATH_H */
