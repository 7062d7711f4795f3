/*
 * codegen/cpu/scalar_cast.c - kc_scalar_cast: ONNX Cast between any two of f32 f16 bf16 f64
 * i64 i32 i16 i8 u64 u32 u16 u8 bool, on compute types (bool i1, f16/bf16 as f32).
 *
 *   float -> int: truncates toward zero. Out-of-range values are undefined in ONNX; here they
 *     saturate into i64 (nan -> 0) and then wrap to the target width, as numpy's astype does on
 *     x86 for the common case (-1.0 -> u8 is 255), and never produce poison.
 *   -> bool: x != 0 (nan is true); bool -> number: 0 or 1.
 *   -> f16/bf16: rounded here to the target format (once, from the source type) and widened
 *     back to the f32 compute type, so a fused region sees exactly the values a store would
 *     keep; the store's own rounding is then exact.
 *   Everything else is kc_emit_convert.
 * Invariants as every kc_scalar_*: no loops, no memory access.
 */
#include "vmath.h"

static unsigned lanes(LLVMValueRef v) {
  LLVMTypeRef t = LLVMTypeOf(v);
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMGetVectorSize(t) : 1;
}

static LLVMValueRef float_to_int(kc_ir *ir, LLVMValueRef v, kc_dtype to) {
  unsigned n = lanes(v);
  LLVMTypeRef i64 = kc_emit_vec_type(ir->t_i64, n);
  LLVMTypeRef types[2] = {i64, LLVMTypeOf(v)};
  const char *fn = to == KC_U64 ? "llvm.fptoui.sat" : "llvm.fptosi.sat";
  LLVMValueRef r = kc_ir_intrinsic(ir, fn, types, 2, &v, 1);
  LLVMTypeRef ct = kc_emit_vec_type(kc_emit_compute_type(ir, to), n);
  return ct == i64 ? r : LLVMBuildTrunc(ir->b, r, ct, "");
}

/*
 * f64 -> f32 rounded to odd: truncated toward zero, with the last bit set when inexact. A
 * further rounding to a format of at most 22 bits (bf16) is then the correct rounding of the
 * f64 value, which f32's own round-to-nearest followed by a second rounding is not. (x86 has
 * no f64 -> bf16 instruction, and LLVM lowers it to a libcall the JIT does not have.)
 */
static LLVMValueRef f64_to_f32_odd(kc_ir *ir, LLVMValueRef d) {
  LLVMBuilderRef b = ir->b;
  unsigned n = lanes(d);
  LLVMTypeRef ft = kc_emit_vec_type(ir->t_f32, n), it = kc_emit_vec_type(ir->t_i32, n);
  LLVMValueRef f = kc_ir_fptrunc(b, d, ft, "");
  LLVMValueRef back = LLVMBuildFPExt(b, f, LLVMTypeOf(d), "");
  LLVMValueRef inexact = LLVMBuildFCmp(b, LLVMRealONE, back, d, "");
  LLVMValueRef away = LLVMBuildFCmp(b, LLVMRealOGT, kc_vm_call1(ir, "llvm.fabs", back),
                                    kc_vm_call1(ir, "llvm.fabs", d), "");
  LLVMValueRef bits = LLVMBuildBitCast(b, f, it, "");
  bits = LLVMBuildSelect(b, away, LLVMBuildSub(b, bits, kc_vm_iconst(it, 1), ""), bits, "");
  bits = LLVMBuildSelect(b, inexact, LLVMBuildOr(b, bits, kc_vm_iconst(it, 1), ""), bits, "");
  return LLVMBuildBitCast(b, bits, ft, "");
}

/* Round v (any number) to f16/bf16 and widen back to f32. */
static LLVMValueRef to_half(kc_ir *ir, LLVMValueRef v, kc_dtype from, kc_dtype to) {
  unsigned n = lanes(v);
  LLVMTypeRef ht = kc_emit_vec_type(kc_emit_storage_type(ir, to), n);
  LLVMTypeRef ft = kc_emit_vec_type(ir->t_f32, n);
  /* integers via f64, exact for every integer up to 2^53, so the one rounding is the last */
  if (!kc_dtype_is_float(from)) v = kc_emit_convert(ir, v, from, KC_F64);
  if (to == KC_BF16 && (from == KC_F64 || !kc_dtype_is_float(from))) v = f64_to_f32_odd(ir, v);
  LLVMValueRef h = kc_ir_fptrunc(ir->b, v, ht, "");
  return LLVMBuildFPExt(ir->b, h, ft, "");
}

LLVMValueRef kc_scalar_cast(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  LLVMValueRef v = a[0];
  if (in == out) return v;
  if (in <= KC_DT_NONE || in >= KC_DT_COUNT || out <= KC_DT_NONE || out >= KC_DT_COUNT) return NULL;
  if (out == KC_F16 || out == KC_BF16) return to_half(ir, v, in, out);
  if (kc_dtype_is_float(in) && kc_dtype_is_int(out)) return float_to_int(ir, v, out);
  return kc_emit_convert(ir, v, in, out);
}
