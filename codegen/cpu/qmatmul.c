/*
 * codegen/cpu/qmatmul.c - kc_lower_qmatmul: matmul_integer and qlinear_matmul (semantics in
 * ir/ops.def, shapes in ir/shape_quant.c), a plain kernel with i32 accumulation.
 *
 * a [..., M, K] @ b [..., K, N], batch dims broadcast (a dim of 1, or a missing one, repeats).
 * A work unit is one output row (batch index, m): for each n, acc = sum_k (a - azp) * (b - bzp)
 * in i32 (wrapping, as ONNX Runtime's). Zero points and scales are per tensor (one element) or
 * indexed by m (a's) / n (b's). qlinear_matmul then requantizes as ONNX Runtime does: the
 * multiplier as * bs / ys in the scales' dtype (f16/bf16 rounded after each step), then
 * rint(acc * multiplier) (half to even) in f32 (f64 for f64 scales), plus yzp, clamped to the
 * output type's range. (onnx.reference computes acc * multiplier + yzp in f64; the two differ
 * only on near-ties, which the node tests do not have and an ORT-quantized BERT does: its
 * references are ORT's.)
 */
#include "codegen/cpu/index.h"

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  int r = kc_value_of(e->g, e->n->out[0])->rank;
  return kc_emit_numel(e, dims, true, 0, 0, r - 1);
}

static LLVMValueRef fcall(kc_ir *ir, const char *name, LLVMValueRef a, LLVMValueRef b) {
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef args[2] = {a, b};
  return kc_ir_intrinsic(ir, name, &t, 1, args, b ? 2 : 1);
}

/* A compute value of a float dtype t rounded to t's precision (f16/bf16 compute in f32). */
static LLVMValueRef round_to(kc_ir *ir, LLVMValueRef v, kc_dtype t) {
  if (t != KC_F16 && t != KC_BF16) return v;
  LLVMValueRef h = kc_ir_fptrunc(ir->b, v, kc_emit_storage_type(ir, t), "");
  return LLVMBuildFPExt(ir->b, h, LLVMTypeOf(v), "");
}

/* Element of input i (an i8/u8 operand, zero point or scale) at index idx, or at 0 when the
 * input has one element; an absent input is NULL. */
static LLVMValueRef at(kc_cpu_emit *e, uint32_t i, LLVMValueRef idx) {
  if (i >= e->n->nin || !kc_val_ok(e->n->in[i])) return NULL;
  kc_dtype t = kc_value_of(e->g, e->n->in[i])->dtype;
  if (kc_value_numel(e->g, e->n->in[i]) == 1) idx = kc_ir_i64(e->ir, 0);
  return kc_emit_load(e, t, kc_emit_in_ptr(e, i), idx, 1);
}

/* An i8/u8 compute value of input i's dtype as i32. */
static LLVMValueRef i32_of(kc_cpu_emit *e, uint32_t i, LLVMValueRef v) {
  return kc_emit_convert(e->ir, v, kc_value_of(e->g, e->n->in[i])->dtype, KC_I32);
}

kc_status kc_lower_qmatmul(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  bool ql = e->n->op == KC_OP_QLINEAR_MATMUL;
  uint32_t ia = 0, ib = ql ? 3 : 1, iaz = 2, ibz = ql ? 5 : 3;
  const kc_value *a = kc_value_of(e->g, e->n->in[ia]), *b = kc_value_of(e->g, e->n->in[ib]);
  const kc_value *y = kc_value_of(e->g, e->n->out[0]);
  int ry = y->rank, ra = a->rank, rb = b->rank, nb = ry - 2;
  kc_emit_units_custom(e, units);
  kc_emit_kernel_begin(e);
  LLVMValueRef zero = kc_ir_i64(ir, 0), one = kc_ir_i64(ir, 1);
  LLVMValueRef M = kc_emit_dim(e, e->p_dims, true, 0, ry - 2);
  LLVMValueRef N = kc_emit_dim(e, e->p_dims, true, 0, ry - 1);
  LLVMValueRef K = kc_emit_dim(e, e->p_dims, false, ia, ra - 1);
  LLVMValueRef pa = kc_emit_in_ptr(e, ia), pb = kc_emit_in_ptr(e, ib), py = kc_emit_out_ptr(e, 0);
  kc_loop lu;
  LLVMValueRef u = kc_loop_begin(ir, &lu, e->p_begin, e->p_end, one, 0, NULL);
  /* units exist only when M > 0 */
  LLVMValueRef m = LLVMBuildURem(ir->b, u, M, ""), bi = LLVMBuildUDiv(ir->b, u, M, "");
  /* batch offsets of a and b (in matrices), the last batch dim first */
  LLVMValueRef offa = zero, offb = zero, sa = one, sb = one;
  for (int k = nb - 1; k >= 0; k--) {
    LLVMValueRef d = kc_emit_dim(e, e->p_dims, true, 0, k);
    LLVMValueRef ik = LLVMBuildURem(ir->b, bi, d, "");
    bi = LLVMBuildUDiv(ir->b, bi, d, "");
    int ka = k - (nb - (ra - 2)), kb = k - (nb - (rb - 2));
    if (ka >= 0) {
      LLVMValueRef da = kc_emit_dim(e, e->p_dims, false, ia, ka);
      LLVMValueRef bc = LLVMBuildICmp(ir->b, LLVMIntEQ, da, one, "");
      offa = kc_ir_add(ir, offa, kc_ir_mul(ir, LLVMBuildSelect(ir->b, bc, zero, ik, ""), sa));
      sa = kc_ir_mul(ir, sa, da);
    }
    if (kb >= 0) {
      LLVMValueRef db = kc_emit_dim(e, e->p_dims, false, ib, kb);
      LLVMValueRef bc = LLVMBuildICmp(ir->b, LLVMIntEQ, db, one, "");
      offb = kc_ir_add(ir, offb, kc_ir_mul(ir, LLVMBuildSelect(ir->b, bc, zero, ik, ""), sb));
      sb = kc_ir_mul(ir, sb, db);
    }
  }
  LLVMValueRef rowa = kc_ir_mul(ir, kc_ir_add(ir, kc_ir_mul(ir, offa, M), m), K);
  LLVMValueRef matb = kc_ir_mul(ir, offb, kc_ir_mul(ir, K, N));
  LLVMValueRef rowy = kc_ir_mul(ir, u, N);
  LLVMValueRef azp = at(e, iaz, m);
  azp = azp ? i32_of(e, iaz, azp) : kc_ir_i32(ir, 0);
  kc_dtype st = ql ? kc_value_of(e->g, e->n->in[1])->dtype : KC_F32;
  LLVMValueRef as = ql ? at(e, 1, m) : NULL;
  kc_loop ln;
  LLVMValueRef n = kc_loop_begin(ir, &ln, zero, N, one, 0, NULL);
  LLVMValueRef bzp = at(e, ibz, n);
  bzp = bzp ? i32_of(e, ibz, bzp) : kc_ir_i32(ir, 0);
  LLVMValueRef acc0 = kc_ir_i32(ir, 0);
  kc_loop lk;
  LLVMValueRef k = kc_loop_begin(ir, &lk, zero, K, one, 1, &acc0);
  LLVMValueRef av = i32_of(e, ia, kc_emit_load(e, a->dtype, pa, kc_ir_add(ir, rowa, k), 1));
  LLVMValueRef bv = i32_of(
      e, ib,
      kc_emit_load(e, b->dtype, pb, kc_ir_add(ir, matb, kc_ir_add(ir, kc_ir_mul(ir, k, N), n)), 1));
  LLVMValueRef prod =
      LLVMBuildMul(ir->b, LLVMBuildSub(ir->b, av, azp, ""), LLVMBuildSub(ir->b, bv, bzp, ""), "");
  LLVMValueRef acc = LLVMBuildAdd(ir->b, lk.carry[0], prod, "");
  kc_loop_end(ir, &lk, &acc);
  acc = lk.carry[0];
  LLVMValueRef yi = kc_ir_add(ir, rowy, n);
  if (!ql) {
    kc_emit_store(e, KC_I32, py, yi, acc, 1);
  } else {
    LLVMValueRef mult = round_to(ir, LLVMBuildFMul(ir->b, as, at(e, 4, n), ""), st);
    mult = round_to(ir, LLVMBuildFDiv(ir->b, mult, at(e, 6, zero), ""), st);
    kc_dtype yt = y->dtype;
    kc_dtype ct = st == KC_F64 ? KC_F64 : KC_F32; /* ONNX Runtime's requantization: f32 */
    LLVMValueRef d = LLVMBuildFMul(ir->b, kc_emit_convert(ir, acc, KC_I32, ct),
                                   kc_emit_convert(ir, mult, st, ct), "");
    d = fcall(ir, "llvm.roundeven", d, NULL);
    d = LLVMBuildFAdd(ir->b, d, kc_emit_convert(ir, at(e, 7, zero), yt, ct), "");
    d = fcall(ir, "llvm.maxnum", d, kc_emit_const(ir, ct, yt == KC_I8 ? -128 : 0, 1));
    d = fcall(ir, "llvm.minnum", d, kc_emit_const(ir, ct, yt == KC_I8 ? 127 : 255, 1));
    kc_emit_store(e, yt, py, yi, kc_emit_convert(ir, d, ct, yt), 1);
  }
  kc_loop_end(ir, &ln, NULL);
  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}
