/*
 * codegen/cpu/rowvec.c - vector helpers of the row-wise emitter families (see rowvec.h).
 *
 * Invariants: masked loads and stores use llvm.masked.* so masked-off lanes never touch
 * memory (a row's tail may end at the end of a buffer); the strip-mined loop runs its masked
 * tail at most once.
 */
#include "rowvec.h"
#include "vmath.h"

unsigned kc_rv_lanes(const kc_cpu_emit *e, kc_dtype t) {
  unsigned f32 = (unsigned)kc_cpu_host(e->cpu)->f32_lanes;
  size_t size = t == KC_F16 || t == KC_BF16 || t == KC_BOOL ? 4 : kc_dtype_size(t);
  /* narrow integers still get the f32 width: wider vectors of them buy little here */
  unsigned lanes = size >= 8 ? f32 / 2 : f32;
  return lanes < 2 ? 2 : lanes;
}

LLVMValueRef kc_rv_fconst(LLVMTypeRef t, double v) {
  if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return LLVMConstReal(t, v);
  unsigned n = LLVMGetVectorSize(t);
  LLVMValueRef c = LLVMConstReal(LLVMGetElementType(t), v);
  LLVMValueRef elts[64];
  KC_ASSERT(n <= 64);
  for (unsigned i = 0; i < n; i++)
    elts[i] = c;
  return LLVMConstVector(elts, n);
}

LLVMValueRef kc_rv_load(kc_cpu_emit *e, kc_dtype t, LLVMValueRef ptr, LLVMValueRef idx,
                        unsigned lanes, LLVMValueRef mask, LLVMValueRef fill) {
  if (!mask) return kc_emit_load(e, t, ptr, idx, lanes);
  kc_ir *ir = e->ir;
  LLVMTypeRef st = kc_emit_vec_type(kc_emit_storage_type(ir, t), lanes);
  LLVMValueRef addr = LLVMBuildGEP2(ir->b, kc_emit_storage_type(ir, t), ptr, &idx, 1, "mp");
  LLVMValueRef v =
      kc_ir_masked_load(ir, st, addr, (unsigned)kc_dtype_size(t), mask, LLVMConstNull(st));
  LLVMTypeRef ct = kc_emit_vec_type(kc_emit_compute_type(ir, t), lanes);
  if (t == KC_BOOL) v = LLVMBuildICmp(ir->b, LLVMIntNE, v, LLVMConstNull(st), "b");
  if (t == KC_F16 || t == KC_BF16) v = LLVMBuildFPExt(ir->b, v, ct, "x");
  return fill ? LLVMBuildSelect(ir->b, mask, v, fill, "fill") : v;
}

void kc_rv_store(kc_cpu_emit *e, kc_dtype t, LLVMValueRef ptr, LLVMValueRef idx, LLVMValueRef v,
                 unsigned lanes, LLVMValueRef mask) {
  if (!mask) {
    kc_emit_store(e, t, ptr, idx, v, lanes);
    return;
  }
  kc_ir *ir = e->ir;
  LLVMTypeRef st = kc_emit_vec_type(kc_emit_storage_type(ir, t), lanes);
  if (t == KC_BOOL) v = LLVMBuildZExt(ir->b, v, st, "b8");
  if (t == KC_F16 || t == KC_BF16) v = kc_ir_fptrunc(ir->b, v, st, "h");
  LLVMValueRef addr = LLVMBuildGEP2(ir->b, kc_emit_storage_type(ir, t), ptr, &idx, 1, "mp");
  kc_ir_masked_store(ir, v, addr, (unsigned)kc_dtype_size(t), mask);
}

void kc_rv_for(kc_cpu_emit *e, LLVMValueRef start, LLVMValueRef end, unsigned lanes,
               unsigned ncarry, LLVMValueRef *carry, kc_rv_body body, void *user) {
  kc_ir *ir = e->ir;
  LLVMValueRef step = kc_ir_i64(ir, lanes);
  /* full vectors end at start + floor((end - start) / lanes) * lanes (none when end <= start) */
  LLVMValueRef len = kc_ir_max(ir, kc_ir_sub(ir, end, start), kc_ir_i64(ir, 0));
  LLVMValueRef full =
      kc_ir_add(ir, start, kc_ir_mul(ir, LLVMBuildSDiv(ir->b, len, step, ""), step));
  kc_loop l;
  LLVMValueRef i = kc_loop_begin(ir, &l, start, full, step, ncarry, carry);
  LLVMValueRef cur[KC_LOOP_MAX_CARRY];
  for (unsigned c = 0; c < ncarry; c++)
    cur[c] = l.carry[c];
  body(user, i, NULL, cur);
  kc_loop_end(ir, &l, cur);
  /* the tail: a loop that runs at most once keeps the carried values in SSA form */
  kc_loop t;
  LLVMValueRef j = kc_loop_begin(ir, &t, full, end, step, ncarry, l.carry);
  for (unsigned c = 0; c < ncarry; c++)
    cur[c] = t.carry[c];
  LLVMValueRef mask = kc_ir_lane_mask(ir, lanes, 0, kc_ir_sub(ir, end, j));
  body(user, j, mask, cur);
  kc_loop_end(ir, &t, cur);
  for (unsigned c = 0; c < ncarry; c++)
    carry[c] = t.carry[c];
}

void kc_rv_for_unrolled(kc_cpu_emit *e, LLVMValueRef start, LLVMValueRef end, unsigned lanes,
                        unsigned unroll, unsigned ncarry, LLVMValueRef *carry, kc_rv_body body,
                        void *user) {
  kc_ir *ir = e->ir;
  unsigned n = unroll * ncarry;
  KC_ASSERT(n <= KC_LOOP_MAX_CARRY);
  LLVMValueRef step = kc_ir_i64(ir, (int64_t)(lanes * unroll));
  LLVMValueRef len = kc_ir_max(ir, kc_ir_sub(ir, end, start), kc_ir_i64(ir, 0));
  LLVMValueRef full =
      kc_ir_add(ir, start, kc_ir_mul(ir, LLVMBuildSDiv(ir->b, len, step, ""), step));
  kc_loop l;
  LLVMValueRef i = kc_loop_begin(ir, &l, start, full, step, n, carry);
  LLVMValueRef cur[KC_LOOP_MAX_CARRY];
  for (unsigned c = 0; c < n; c++)
    cur[c] = l.carry[c];
  for (unsigned u = 0; u < unroll; u++)
    body(user, kc_ir_add(ir, i, kc_ir_i64(ir, (int64_t)(u * lanes))), NULL, cur + u * ncarry);
  kc_loop_end(ir, &l, cur);
  for (unsigned c = 0; c < n; c++)
    carry[c] = l.carry[c];
  /* the rest (fewer than unroll vectors) on copy 0 */
  kc_rv_for(e, full, end, lanes, ncarry, carry, body, user);
}

static bool is_float(LLVMValueRef v) {
  LLVMTypeRef t = LLVMTypeOf(v);
  if (LLVMGetTypeKind(t) == LLVMVectorTypeKind) t = LLVMGetElementType(t);
  LLVMTypeKind k = LLVMGetTypeKind(t);
  return k == LLVMFloatTypeKind || k == LLVMDoubleTypeKind;
}

/* Call a unary intrinsic overloaded on v's type. */
static LLVMValueRef unary(kc_ir *ir, const char *name, LLVMValueRef v) {
  LLVMTypeRef t = LLVMTypeOf(v);
  return kc_ir_intrinsic(ir, name, &t, 1, &v, 1);
}

LLVMValueRef kc_rv_hsum(kc_ir *ir, LLVMValueRef v) {
  LLVMTypeRef t = LLVMTypeOf(v);
  if (!is_float(v)) return unary(ir, "llvm.vector.reduce.add", v);
  LLVMValueRef args[2] = {kc_rv_fconst(LLVMGetElementType(t), -0.0), v};
  LLVMValueRef r = kc_ir_intrinsic(ir, "llvm.vector.reduce.fadd", &t, 1, args, 2);
  /* without reassoc the reduction is a serial chain in lane order */
  LLVMSetFastMathFlags(r, LLVMFastMathAllowReassoc);
  return r;
}

LLVMValueRef kc_rv_hmax(kc_ir *ir, LLVMValueRef v) {
  return unary(ir, "llvm.vector.reduce.fmaximum", v);
}

LLVMValueRef kc_rv_fmax(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef args[2] = {a, b};
  return kc_ir_intrinsic(ir, "llvm.maximum", &t, 1, args, 2);
}

/* vmath's polynomial forms vectorize; llvm.exp/log on vectors would become libm calls */
LLVMValueRef kc_rv_exp(kc_ir *ir, LLVMValueRef v) { return kc_vmath_exp(ir, v); }
LLVMValueRef kc_rv_log(kc_ir *ir, LLVMValueRef v) { return kc_vmath_log(ir, v); }
LLVMValueRef kc_rv_sqrt(kc_ir *ir, LLVMValueRef v) { return unary(ir, "llvm.sqrt", v); }
