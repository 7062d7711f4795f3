/*
 * codegen/cpu/emit_common.c - helpers every CPU emitter family shares: the kernel ABI
 * prologue, units functions, dims (baked when static), buffer pointers, typed loads and stores
 * with the storage/compute conversions (bool i8<->i1, f16/bf16 <-> f32), dtype conversion.
 */
#include "emit.h"

#include <stdio.h>
#include <string.h>

LLVMTypeRef kc_emit_storage_type(kc_ir *ir, kc_dtype t) {
  switch (t) {
  case KC_F32: return ir->t_f32;
  case KC_F64: return LLVMDoubleTypeInContext(ir->ctx);
  case KC_F16: return LLVMHalfTypeInContext(ir->ctx);
  case KC_BF16: return LLVMBFloatTypeInContext(ir->ctx);
  case KC_I64:
  case KC_U64: return ir->t_i64;
  case KC_I32:
  case KC_U32: return ir->t_i32;
  case KC_I16:
  case KC_U16: return LLVMInt16TypeInContext(ir->ctx);
  case KC_I8:
  case KC_U8:
  case KC_BOOL: return LLVMInt8TypeInContext(ir->ctx);
  default: KC_ASSERT(!"dtype without a storage type"); return NULL;
  }
}

LLVMTypeRef kc_emit_compute_type(kc_ir *ir, kc_dtype t) {
  if (t == KC_BOOL) return ir->t_i1;
  if (t == KC_F16 || t == KC_BF16) return ir->t_f32;
  return kc_emit_storage_type(ir, t);
}

LLVMTypeRef kc_emit_vec_type(LLVMTypeRef scalar, unsigned lanes) {
  return lanes > 1 ? LLVMVectorType(scalar, lanes) : scalar;
}

void kc_emit_kernel_begin(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  LLVMTypeRef params[5] = {ir->t_ptr, ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64};
  LLVMValueRef fn = kc_ir_func(ir, e->name, ir->t_i64, params, 5, false);
  for (unsigned i = 0; i < 3; i++)
    kc_ir_param_attr(ir, fn, i, "nocapture");
  kc_ir_param_attr(ir, fn, 0, "readonly");
  kc_ir_param_attr(ir, fn, 1, "readonly");
  e->p_bufs = LLVMGetParam(fn, 0);
  e->p_dims = LLVMGetParam(fn, 1);
  e->p_ws = LLVMGetParam(fn, 2);
  e->p_begin = LLVMGetParam(fn, 3);
  e->p_end = LLVMGetParam(fn, 4);
}

void kc_emit_kernel_end(kc_cpu_emit *e) { LLVMBuildRet(e->ir->b, kc_ir_i64(e->ir, 0)); }

LLVMValueRef kc_emit_checked_index(kc_cpu_emit *e, LLVMValueRef idx, LLVMValueRef len,
                                   LLVMValueRef pos, uint32_t in, uint32_t bound_in, int axis) {
  kc_ir *ir = e->ir;
  LLVMBuilderRef b = ir->b;
  e->check_in = (int)in;
  e->check_dim = e->in_dims[bound_in] + axis;
  LLVMValueRef neg = kc_ir_lt(ir, idx, kc_ir_i64(ir, 0));
  LLVMValueRef k = LLVMBuildSelect(b, neg, LLVMBuildAdd(b, idx, len, ""), idx, "");
  /* one unsigned compare: k < 0 wraps above any len */
  LLVMValueRef bad = LLVMBuildICmp(b, LLVMIntUGE, k, len, "");
  LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "bad_index");
  LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "index_ok");
  LLVMBuildCondBr(b, bad, fail, ok);
  LLVMPositionBuilderAtEnd(b, fail);
  LLVMBuildRet(b, LLVMBuildAdd(b, pos, kc_ir_i64(ir, 1), ""));
  LLVMPositionBuilderAtEnd(b, ok);
  return k;
}

/* Start NAME_units(dims) -> i64; returns its dims parameter. */
static LLVMValueRef units_begin(kc_cpu_emit *e) {
  char name[256];
  snprintf(name, sizeof name, "%s_units", e->name);
  LLVMTypeRef param = e->ir->t_ptr;
  LLVMValueRef fn = kc_ir_func(e->ir, name, e->ir->t_i64, &param, 1, false);
  return LLVMGetParam(fn, 0);
}

void kc_emit_units_outer(kc_cpu_emit *e, uint32_t out, int from, int to) {
  LLVMValueRef dims = units_begin(e);
  LLVMBuildRet(e->ir->b, kc_emit_numel(e, dims, true, out, from, to));
}

void kc_emit_units_custom(kc_cpu_emit *e,
                          LLVMValueRef (*build)(kc_cpu_emit *e, LLVMValueRef dims)) {
  LLVMValueRef dims = units_begin(e);
  LLVMBuildRet(e->ir->b, build(e, dims));
}

LLVMValueRef kc_emit_dim(kc_cpu_emit *e, LLVMValueRef dims, bool out, uint32_t i, int axis) {
  kc_val v = out ? e->n->out[i] : e->n->in[i];
  const kc_value *val = &e->g->vals[v.id];
  KC_ASSERT(axis >= 0 && axis < val->rank);
  if (!KC_DIM_IS_SYM(val->dims[axis])) return kc_ir_i64(e->ir, val->dims[axis]);
  uint32_t off = (out ? e->out_dims[i] : e->in_dims[i]) + (uint32_t)axis;
  return kc_ir_load(e->ir, e->ir->t_i64, kc_ir_gepi64(e->ir, dims, kc_ir_i64(e->ir, off)), 8);
}

LLVMValueRef kc_emit_numel(kc_cpu_emit *e, LLVMValueRef dims, bool out, uint32_t i, int from,
                           int to) {
  LLVMValueRef p = kc_ir_i64(e->ir, 1);
  for (int a = from; a < to; a++)
    p = kc_ir_mul(e->ir, p, kc_emit_dim(e, dims, out, i, a));
  return p;
}

static LLVMValueRef buf_ptr(kc_cpu_emit *e, uint32_t slot) {
  kc_ir *ir = e->ir;
  LLVMValueRef addr =
      LLVMBuildGEP2(ir->b, ir->t_ptr, e->p_bufs, (LLVMValueRef[]){kc_ir_i64(ir, slot)}, 1, "bufp");
  return kc_ir_load(ir, ir->t_ptr, addr, 8);
}

LLVMValueRef kc_emit_in_ptr(kc_cpu_emit *e, uint32_t i) { return buf_ptr(e, i); }
LLVMValueRef kc_emit_out_ptr(kc_cpu_emit *e, uint32_t i) { return buf_ptr(e, e->n->nin + i); }
LLVMValueRef kc_emit_shared_ptr(kc_cpu_emit *e) { return buf_ptr(e, e->n->nin + e->n->nout); }

LLVMValueRef kc_emit_load(kc_cpu_emit *e, kc_dtype t, LLVMValueRef ptr, LLVMValueRef idx,
                          unsigned lanes) {
  kc_ir *ir = e->ir;
  LLVMTypeRef st = kc_emit_storage_type(ir, t);
  LLVMValueRef addr = LLVMBuildGEP2(ir->b, st, ptr, &idx, 1, "ep");
  LLVMValueRef v = kc_ir_load(ir, kc_emit_vec_type(st, lanes), addr, (unsigned)kc_dtype_size(t));
  LLVMTypeRef ct = kc_emit_vec_type(kc_emit_compute_type(ir, t), lanes);
  if (t == KC_BOOL) return LLVMBuildICmp(ir->b, LLVMIntNE, v, LLVMConstNull(LLVMTypeOf(v)), "b");
  if (t == KC_F16 || t == KC_BF16) return LLVMBuildFPExt(ir->b, v, ct, "x");
  return v;
}

void kc_emit_store(kc_cpu_emit *e, kc_dtype t, LLVMValueRef ptr, LLVMValueRef idx, LLVMValueRef v,
                   unsigned lanes) {
  kc_ir *ir = e->ir;
  LLVMTypeRef st = kc_emit_storage_type(ir, t);
  LLVMTypeRef vt = kc_emit_vec_type(st, lanes);
  if (t == KC_BOOL) v = LLVMBuildZExt(ir->b, v, vt, "b8");
  if (t == KC_F16 || t == KC_BF16) v = kc_ir_fptrunc(ir->b, v, vt, "h");
  LLVMValueRef addr = LLVMBuildGEP2(ir->b, st, ptr, &idx, 1, "ep");
  kc_ir_store(ir, v, addr, (unsigned)kc_dtype_size(t));
}

static bool is_unsigned(kc_dtype t) {
  return t == KC_U8 || t == KC_U16 || t == KC_U32 || t == KC_U64 || t == KC_BOOL;
}

LLVMValueRef kc_emit_convert(kc_ir *ir, LLVMValueRef v, kc_dtype from, kc_dtype to) {
  LLVMTypeRef vt = LLVMTypeOf(v);
  unsigned lanes = LLVMGetTypeKind(vt) == LLVMVectorTypeKind ? LLVMGetVectorSize(vt) : 1;
  LLVMTypeRef ct = kc_emit_vec_type(kc_emit_compute_type(ir, to), lanes);
  if (kc_emit_compute_type(ir, from) == kc_emit_compute_type(ir, to)) return v;
  bool ff = kc_dtype_is_float(from), ft = kc_dtype_is_float(to);
  if (to == KC_BOOL)
    return ff ? LLVMBuildFCmp(ir->b, LLVMRealUNE, v, LLVMConstNull(vt), "tob")
              : LLVMBuildICmp(ir->b, LLVMIntNE, v, LLVMConstNull(vt), "tob");
  if (ff && ft) /* only f32 <-> f64 remain: f16/bf16 compute as f32 */
    return to == KC_F64 ? LLVMBuildFPExt(ir->b, v, ct, "cv") : kc_ir_fptrunc(ir->b, v, ct, "cv");
  if (ff)
    return is_unsigned(to) ? LLVMBuildFPToUI(ir->b, v, ct, "cv")
                           : LLVMBuildFPToSI(ir->b, v, ct, "cv");
  if (ft)
    return is_unsigned(from) ? LLVMBuildUIToFP(ir->b, v, ct, "cv")
                             : LLVMBuildSIToFP(ir->b, v, ct, "cv");
  /* int -> int: widen by the source's signedness, or truncate */
  return LLVMBuildIntCast2(ir->b, v, ct, !is_unsigned(from), "cv");
}

LLVMValueRef kc_emit_const(kc_ir *ir, kc_dtype t, double v, unsigned lanes) {
  LLVMTypeRef ct = kc_emit_compute_type(ir, t);
  LLVMValueRef c;
  if (kc_dtype_is_float(t))
    c = LLVMConstReal(ct, v);
  else if (t == KC_BOOL)
    c = LLVMConstInt(ct, v != 0, 0);
  else
    c = LLVMConstInt(ct, (unsigned long long)(long long)v, 1);
  return lanes > 1 ? kc_ir_splat(ir, c, lanes) : c;
}
