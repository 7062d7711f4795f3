/*
 * codegen/cpu/emit_util.c - IR-building helpers shared by the CPU emitters: types, constants,
 * address arithmetic, vector intrinsics (llvm.fmuladd, masked load/store/gather), counted
 * loops with carried values, and if/else.
 *
 * Invariants: integer helpers work on i64 and assume the signed, non-overflowing index ranges
 * of tensors (so nsw is sound); loops compare signed. Helpers never move the builder except
 * the control-flow ones, which document where they leave it.
 */
#include "cpu.h"

#include <stdint.h>
#include <string.h>

void kc_ir_init(kc_ir *ir, LLVMModuleRef mod) {
  memset(ir, 0, sizeof *ir);
  ir->mod = mod;
  ir->ctx = LLVMGetModuleContext(mod);
  ir->b = LLVMCreateBuilderInContext(ir->ctx);
  ir->t_void = LLVMVoidTypeInContext(ir->ctx);
  ir->t_i1 = LLVMInt1TypeInContext(ir->ctx);
  ir->t_i32 = LLVMInt32TypeInContext(ir->ctx);
  ir->t_i64 = LLVMInt64TypeInContext(ir->ctx);
  ir->t_f32 = LLVMFloatTypeInContext(ir->ctx);
  ir->t_ptr = LLVMPointerTypeInContext(ir->ctx, 0);
}

void kc_ir_dispose(kc_ir *ir) {
  if (ir->b) LLVMDisposeBuilder(ir->b);
  ir->b = NULL;
}

LLVMValueRef kc_ir_func(kc_ir *ir, const char *name, LLVMTypeRef ret, LLVMTypeRef *params,
                        unsigned nparams, bool internal) {
  LLVMTypeRef ft = LLVMFunctionType(ret, params, nparams, 0);
  LLVMValueRef fn = LLVMAddFunction(ir->mod, name, ft);
  if (internal) LLVMSetLinkage(fn, LLVMInternalLinkage);
  /* Kernels are leaf-heavy and hot; unwind tables would only cost size. */
  LLVMAddAttributeAtIndex(
      fn, LLVMAttributeFunctionIndex,
      LLVMCreateEnumAttribute(ir->ctx, LLVMGetEnumAttributeKindForName("nounwind", 8), 0));
  ir->fn = fn;
  LLVMPositionBuilderAtEnd(ir->b, LLVMAppendBasicBlockInContext(ir->ctx, fn, "entry"));
  return fn;
}

void kc_ir_param_attr(kc_ir *ir, LLVMValueRef fn, unsigned i, const char *attr) {
  unsigned kind = LLVMGetEnumAttributeKindForName(attr, strlen(attr));
  KC_ASSERT(kind != 0);
  LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(ir->ctx, kind, 0));
}

void kc_ir_fn_attr(kc_ir *ir, LLVMValueRef fn, const char *key, const char *val) {
  LLVMAddAttributeAtIndex(
      fn, LLVMAttributeFunctionIndex,
      LLVMCreateStringAttribute(ir->ctx, key, (unsigned)strlen(key), val, (unsigned)strlen(val)));
}

LLVMValueRef kc_ir_i64(kc_ir *ir, int64_t v) {
  return LLVMConstInt(ir->t_i64, (unsigned long long)v, 1);
}

LLVMValueRef kc_ir_i32(kc_ir *ir, int32_t v) {
  return LLVMConstInt(ir->t_i32, (unsigned long long)(int64_t)v, 1);
}

LLVMTypeRef kc_ir_vf32(kc_ir *ir, unsigned lanes) { return LLVMVectorType(ir->t_f32, lanes); }

LLVMValueRef kc_ir_zero(LLVMTypeRef t) { return LLVMConstNull(t); }

LLVMValueRef kc_ir_gepf(kc_ir *ir, LLVMValueRef p, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(ir->b, ir->t_f32, p, &idx, 1, "");
}

LLVMValueRef kc_ir_gepi64(kc_ir *ir, LLVMValueRef p, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(ir->b, ir->t_i64, p, &idx, 1, "");
}

LLVMValueRef kc_ir_load(kc_ir *ir, LLVMTypeRef t, LLVMValueRef p, unsigned align) {
  LLVMValueRef v = LLVMBuildLoad2(ir->b, t, p, "");
  LLVMSetAlignment(v, align);
  return v;
}

/* A constant of integer (vector) type t with every element v. */
static LLVMValueRef splat_int(LLVMTypeRef t, unsigned long long v) {
  if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return LLVMConstInt(t, v, 0);
  unsigned n = LLVMGetVectorSize(t);
  LLVMValueRef e = LLVMConstInt(LLVMGetElementType(t), v, 0), es[64];
  for (unsigned i = 0; i < n && i < 64; i++)
    es[i] = e;
  return LLVMConstVector(es, n);
}

LLVMValueRef kc_ir_fptrunc(LLVMBuilderRef b, LLVMValueRef v, LLVMTypeRef to, const char *name) {
  bool vec = LLVMGetTypeKind(to) == LLVMVectorTypeKind;
  LLVMTypeRef et = vec ? LLVMGetElementType(to) : to;
  if (LLVMGetTypeKind(et) != LLVMBFloatTypeKind) return LLVMBuildFPTrunc(b, v, to, name);
  LLVMContextRef c = LLVMGetTypeContext(to);
  unsigned n = vec ? LLVMGetVectorSize(to) : 1;
  LLVMTypeRef f32 = LLVMFloatTypeInContext(c), i32 = LLVMInt32TypeInContext(c);
  LLVMTypeRef ft = vec ? LLVMVectorType(f32, n) : f32, it = vec ? LLVMVectorType(i32, n) : i32;
  LLVMTypeRef ht = vec ? LLVMVectorType(LLVMInt16TypeInContext(c), n) : LLVMInt16TypeInContext(c);
  if (LLVMTypeOf(v) != ft) v = LLVMBuildFPTrunc(b, v, ft, ""); /* f64: callers round to odd first */
  /* round to nearest even on the bits; a NaN keeps its sign and top payload, made quiet */
  LLVMValueRef bits = LLVMBuildBitCast(b, v, it, "");
  LLVMValueRef hi = LLVMBuildLShr(b, bits, splat_int(it, 16), "");
  LLVMValueRef odd = LLVMBuildAnd(b, hi, splat_int(it, 1), "");
  LLVMValueRef up = LLVMBuildAdd(b, LLVMBuildAdd(b, bits, splat_int(it, 0x7fff), ""), odd, "");
  LLVMValueRef rounded = LLVMBuildLShr(b, up, splat_int(it, 16), "");
  LLVMValueRef nan = LLVMBuildOr(b, hi, splat_int(it, 0x40), "");
  LLVMValueRef isnan = LLVMBuildFCmp(b, LLVMRealUNO, v, v, "");
  LLVMValueRef r = LLVMBuildTrunc(b, LLVMBuildSelect(b, isnan, nan, rounded, ""), ht, "");
  return LLVMBuildBitCast(b, r, to, name);
}

void kc_ir_store(kc_ir *ir, LLVMValueRef v, LLVMValueRef p, unsigned align) {
  LLVMValueRef s = LLVMBuildStore(ir->b, v, p);
  LLVMSetAlignment(s, align);
}

LLVMValueRef kc_ir_add(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildNSWAdd(ir->b, a, b, "");
}

LLVMValueRef kc_ir_sub(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildNSWSub(ir->b, a, b, "");
}

LLVMValueRef kc_ir_mul(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildNSWMul(ir->b, a, b, "");
}

LLVMValueRef kc_ir_lt(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(ir->b, LLVMIntSLT, a, b, "");
}

LLVMValueRef kc_ir_min(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(ir->b, kc_ir_lt(ir, a, b), a, b, "");
}

LLVMValueRef kc_ir_max(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(ir->b, kc_ir_lt(ir, a, b), b, a, "");
}

LLVMValueRef kc_ir_cdiv(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef t = kc_ir_sub(ir, kc_ir_add(ir, a, b), kc_ir_i64(ir, 1));
  return LLVMBuildSDiv(ir->b, t, b, "");
}

LLVMValueRef kc_ir_roundup(kc_ir *ir, LLVMValueRef a, int64_t multiple) {
  LLVMValueRef m = kc_ir_i64(ir, multiple);
  return kc_ir_mul(ir, kc_ir_cdiv(ir, a, m), m);
}

LLVMValueRef kc_ir_splat(kc_ir *ir, LLVMValueRef scalar, unsigned lanes) {
  LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(scalar), lanes);
  LLVMValueRef v = LLVMBuildInsertElement(ir->b, LLVMGetPoison(vt), scalar, kc_ir_i32(ir, 0), "");
  LLVMValueRef zeros = LLVMConstNull(LLVMVectorType(ir->t_i32, lanes));
  return LLVMBuildShuffleVector(ir->b, v, LLVMGetPoison(vt), zeros, "");
}

LLVMValueRef kc_ir_iota(kc_ir *ir, unsigned lanes, LLVMValueRef base, LLVMValueRef stride) {
  LLVMValueRef c[64];
  KC_ASSERT(lanes <= 64);
  for (unsigned i = 0; i < lanes; i++)
    c[i] = kc_ir_i64(ir, i);
  LLVMValueRef idx = LLVMConstVector(c, lanes);
  if (stride) idx = LLVMBuildNSWMul(ir->b, idx, kc_ir_splat(ir, stride, lanes), "");
  return LLVMBuildNSWAdd(ir->b, idx, kc_ir_splat(ir, base, lanes), "");
}

LLVMValueRef kc_ir_lane_mask(kc_ir *ir, unsigned lanes, int64_t offset, LLVMValueRef limit) {
  /* Clamped to [offset, offset + lanes], the limit fits i32, and an i32 compare is one
   * instruction where an i64 one over 16 lanes is two plus a mask merge. */
  LLVMValueRef lim = kc_ir_min(ir, limit, kc_ir_i64(ir, offset + (int64_t)lanes));
  lim = kc_ir_max(ir, lim, kc_ir_i64(ir, offset));
  lim = LLVMBuildTrunc(ir->b, lim, ir->t_i32, "");
  LLVMValueRef c[64];
  KC_ASSERT(lanes <= 64 && offset + lanes < INT32_MAX);
  for (unsigned i = 0; i < lanes; i++)
    c[i] = kc_ir_i32(ir, (int32_t)(offset + i));
  LLVMValueRef idx = LLVMConstVector(c, lanes);
  return LLVMBuildICmp(ir->b, LLVMIntSLT, idx, kc_ir_splat(ir, lim, lanes), "");
}

LLVMValueRef kc_ir_intrinsic(kc_ir *ir, const char *name, LLVMTypeRef *types, unsigned ntypes,
                             LLVMValueRef *args, unsigned nargs) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  KC_ASSERT(id != 0);
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(ir->mod, id, types, ntypes);
  LLVMTypeRef ft = LLVMIntrinsicGetType(ir->ctx, id, types, ntypes);
  return LLVMBuildCall2(ir->b, ft, fn, args, nargs, "");
}

LLVMValueRef kc_ir_fmuladd(kc_ir *ir, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef args[3] = {a, b, c};
  return kc_ir_intrinsic(ir, "llvm.fmuladd", &t, 1, args, 3);
}

/* The integer vector type a masked load / store / gather of vt moves when vt holds 16-bit floats
 * (vt itself otherwise): LLVM legalizes the select of a masked bfloat (or, without F16C, half)
 * vector op through fptrunc, a libcall (__truncsfbf2) where the CPU lacks AVX512_BF16, which
 * the JIT's process and libgcc 12 do not have. Bits move the same either way. */
static LLVMTypeRef masked_bits_type(kc_ir *ir, LLVMTypeRef vt) {
  LLVMTypeKind k = LLVMGetTypeKind(LLVMGetElementType(vt));
  if (k != LLVMBFloatTypeKind && k != LLVMHalfTypeKind) return vt;
  return LLVMVectorType(LLVMInt16TypeInContext(ir->ctx), LLVMGetVectorSize(vt));
}

LLVMValueRef kc_ir_masked_load(kc_ir *ir, LLVMTypeRef vt, LLVMValueRef p, unsigned align,
                               LLVMValueRef mask, LLVMValueRef passthru) {
  LLVMTypeRef bt = masked_bits_type(ir, vt);
  LLVMTypeRef types[2] = {bt, ir->t_ptr};
  LLVMValueRef args[4] = {p, kc_ir_i32(ir, (int32_t)align), mask,
                          bt == vt ? passthru : LLVMBuildBitCast(ir->b, passthru, bt, "")};
  LLVMValueRef v = kc_ir_intrinsic(ir, "llvm.masked.load", types, 2, args, 4);
  return bt == vt ? v : LLVMBuildBitCast(ir->b, v, vt, "");
}

void kc_ir_masked_store(kc_ir *ir, LLVMValueRef v, LLVMValueRef p, unsigned align,
                        LLVMValueRef mask) {
  LLVMTypeRef bt = masked_bits_type(ir, LLVMTypeOf(v));
  if (bt != LLVMTypeOf(v)) v = LLVMBuildBitCast(ir->b, v, bt, "");
  LLVMTypeRef types[2] = {bt, ir->t_ptr};
  LLVMValueRef args[4] = {v, p, kc_ir_i32(ir, (int32_t)align), mask};
  kc_ir_intrinsic(ir, "llvm.masked.store", types, 2, args, 4);
}

LLVMValueRef kc_ir_masked_gather(kc_ir *ir, LLVMTypeRef vt, LLVMValueRef ptrs, unsigned align,
                                 LLVMValueRef mask, LLVMValueRef passthru) {
  LLVMTypeRef bt = masked_bits_type(ir, vt);
  LLVMTypeRef types[2] = {bt, LLVMTypeOf(ptrs)};
  LLVMValueRef args[4] = {ptrs, kc_ir_i32(ir, (int32_t)align), mask,
                          bt == vt ? passthru : LLVMBuildBitCast(ir->b, passthru, bt, "")};
  LLVMValueRef v = kc_ir_intrinsic(ir, "llvm.masked.gather", types, 2, args, 4);
  return bt == vt ? v : LLVMBuildBitCast(ir->b, v, vt, "");
}

void kc_ir_prefetch(kc_ir *ir, LLVMValueRef p, int rw) {
  LLVMTypeRef t = ir->t_ptr;
  /* locality 3 (keep in all levels), data cache */
  LLVMValueRef args[4] = {p, kc_ir_i32(ir, rw), kc_ir_i32(ir, 3), kc_ir_i32(ir, 1)};
  kc_ir_intrinsic(ir, "llvm.prefetch", &t, 1, args, 4);
}

/* ---- loops --------------------------------------------------------------------------------- */

LLVMValueRef kc_loop_begin(kc_ir *ir, kc_loop *l, LLVMValueRef start, LLVMValueRef end,
                           LLVMValueRef step, unsigned ncarry, const LLVMValueRef *init) {
  KC_ASSERT(ncarry <= KC_LOOP_MAX_CARRY);
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(ir->b);
  l->head = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "loop");
  l->body = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "done");
  l->step = step;
  l->ncarry = ncarry;
  LLVMBuildBr(ir->b, l->head);

  LLVMPositionBuilderAtEnd(ir->b, l->head);
  l->iv = LLVMBuildPhi(ir->b, ir->t_i64, "i");
  LLVMAddIncoming(l->iv, &start, &pre, 1);
  for (unsigned i = 0; i < ncarry; i++) {
    l->carry[i] = LLVMBuildPhi(ir->b, LLVMTypeOf(init[i]), "");
    LLVMValueRef v = init[i];
    LLVMAddIncoming(l->carry[i], &v, &pre, 1);
  }
  LLVMBuildCondBr(ir->b, kc_ir_lt(ir, l->iv, end), l->body, l->exit);
  LLVMPositionBuilderAtEnd(ir->b, l->body);
  return l->iv;
}

void kc_loop_end_next(kc_ir *ir, kc_loop *l, LLVMValueRef next_iv, const LLVMValueRef *next) {
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(ir->b);
  LLVMBuildBr(ir->b, l->head);
  LLVMAddIncoming(l->iv, &next_iv, &cur, 1);
  for (unsigned i = 0; i < l->ncarry; i++) {
    LLVMValueRef v = next[i];
    LLVMAddIncoming(l->carry[i], &v, &cur, 1);
  }
  LLVMPositionBuilderAtEnd(ir->b, l->exit);
}

void kc_loop_end(kc_ir *ir, kc_loop *l, const LLVMValueRef *next) {
  KC_ASSERT(l->step != NULL);
  kc_loop_end_next(ir, l, kc_ir_add(ir, l->iv, l->step), next);
}

/* ---- if / else ------------------------------------------------------------------------------ */

void kc_if_begin(kc_ir *ir, kc_if *c, LLVMValueRef cond) {
  c->then = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "then");
  c->els = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "else");
  c->merge = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "endif");
  c->in_else = false;
  LLVMBuildCondBr(ir->b, cond, c->then, c->els);
  LLVMPositionBuilderAtEnd(ir->b, c->then);
}

void kc_if_else(kc_ir *ir, kc_if *c) {
  LLVMBuildBr(ir->b, c->merge);
  LLVMPositionBuilderAtEnd(ir->b, c->els);
  c->in_else = true;
}

void kc_if_end(kc_ir *ir, kc_if *c) {
  LLVMBuildBr(ir->b, c->merge);
  if (!c->in_else) {
    LLVMPositionBuilderAtEnd(ir->b, c->els);
    LLVMBuildBr(ir->b, c->merge);
  }
  LLVMPositionBuilderAtEnd(ir->b, c->merge);
}
