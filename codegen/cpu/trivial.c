/*
 * codegen/cpu/trivial.c - the families with (next to) nothing to compute:
 *   kc_lower_view:    reshape-like ops (identity, reshape, flatten, squeeze, unsqueeze); the
 *                     runtime aliases the output to the input, no kernel.
 *   kc_lower_source:  weights and constants; the runtime binds their data, no kernel.
 *   kc_lower_dropout: y = x and mask = true at inference. With a training_mode input that is
 *                     true at run time and a ratio > 0, elements are dropped by a counter-based
 *                     hash of (seed attribute, element index) and the kept ones scaled by
 *                     1 / (1 - ratio); the same seed gives the same mask on every run (the
 *                     kernel keeps no state).
 *
 * Invariants: view and source emit nothing (no NAME, no NAME_units); dropout's units are chunks
 * of DROP_CHUNK elements of the flat index, and a chunk writes only its own elements.
 */
#include "vmath.h"

#define DROP_CHUNK 16384

kc_status kc_lower_view(kc_cpu_emit *e) {
  e->no_kernel = true;
  return KC_OK;
}

kc_status kc_lower_source(kc_cpu_emit *e) {
  e->no_kernel = true;
  return KC_OK;
}

static LLVMValueRef drop_units(kc_cpu_emit *e, LLVMValueRef dims) {
  int rank = e->g->vals[e->n->in[0].id].rank;
  return kc_ir_cdiv(e->ir, kc_emit_numel(e, dims, false, 0, 0, rank), kc_ir_i64(e->ir, DROP_CHUNK));
}

/* bytes = count elements of size sz, as i64. */
static LLVMValueRef nbytes(kc_ir *ir, LLVMValueRef count, size_t sz) {
  return kc_ir_mul(ir, count, kc_ir_i64(ir, (int64_t)sz));
}

/* A uniform number in [0, 1) from (seed, i): the splitmix64 finalizer, top 24 bits. */
static LLVMValueRef uniform(kc_ir *ir, LLVMValueRef i, uint64_t seed) {
  LLVMBuilderRef b = ir->b;
  LLVMValueRef z =
      LLVMBuildAdd(b, LLVMBuildMul(b, i, LLVMConstInt(ir->t_i64, 0x9e3779b97f4a7c15ull, 0), ""),
                   LLVMConstInt(ir->t_i64, seed, 0), "");
  static const unsigned long long mul[2] = {0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull};
  static const unsigned shift[3] = {30, 27, 31};
  for (int k = 0; k < 3; k++) {
    z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, LLVMConstInt(ir->t_i64, shift[k], 0), ""), "");
    if (k < 2) z = LLVMBuildMul(b, z, LLVMConstInt(ir->t_i64, mul[k], 0), "");
  }
  LLVMValueRef top = LLVMBuildLShr(b, z, LLVMConstInt(ir->t_i64, 40, 0), "");
  return LLVMBuildFMul(b, LLVMBuildUIToFP(b, top, ir->t_f32, ""),
                       LLVMConstReal(ir->t_f32, 1.0 / 16777216.0), "");
}

/* The training branch: y = keep ? x * scale : 0, mask = keep, over [lo, hi). */
static void emit_train(kc_cpu_emit *e, LLVMValueRef lo, LLVMValueRef hi, LLVMValueRef ratio,
                       LLVMValueRef x, LLVMValueRef y, LLVMValueRef mask) {
  kc_ir *ir = e->ir;
  kc_dtype t = e->g->vals[e->n->in[0].id].dtype;
  uint64_t seed = (uint64_t)kc_node_int(e->n, "seed", 0);
  LLVMTypeRef ct = kc_emit_compute_type(ir, t);
  LLVMValueRef r32 = kc_emit_convert(ir, ratio, t, KC_F32);
  LLVMValueRef scale = LLVMBuildFDiv(ir->b, LLVMConstReal(ct, 1.0),
                                     LLVMBuildFSub(ir->b, LLVMConstReal(ct, 1.0), ratio, ""), "");
  kc_loop l;
  LLVMValueRef i = kc_loop_begin(ir, &l, lo, hi, kc_ir_i64(ir, 1), 0, NULL);
  LLVMValueRef keep = LLVMBuildFCmp(ir->b, LLVMRealOGE, uniform(ir, i, seed), r32, "");
  LLVMValueRef v = LLVMBuildFMul(ir->b, kc_emit_load(e, t, x, i, 1), scale, "");
  kc_emit_store(e, t, y, i, LLVMBuildSelect(ir->b, keep, v, LLVMConstNull(ct), ""), 1);
  if (mask) kc_emit_store(e, KC_BOOL, mask, i, keep, 1);
  kc_loop_end(ir, &l, NULL);
}

kc_status kc_lower_dropout(kc_cpu_emit *e) {
  const kc_node *n = e->n;
  kc_ir *ir = e->ir;
  kc_dtype t = e->g->vals[n->in[0].id].dtype;
  if (!kc_dtype_is_float(t))
    return kc_node_errorf((kc_graph *)e->g, n, KC_ERR_UNSUPPORTED, "dropout of %s",
                          kc_dtype_name(t));
  bool has_ratio = n->nin > 1 && n->in[1].id, has_train = n->nin > 2 && n->in[2].id;
  bool has_mask = n->nout > 1 && n->out[1].id;
  kc_emit_units_custom(e, drop_units);
  e->grain = 1;
  e->ws_bytes = 0;
  kc_emit_kernel_begin(e);
  int rank = e->g->vals[n->in[0].id].rank;
  LLVMValueRef total = kc_emit_numel(e, e->p_dims, false, 0, 0, rank);
  LLVMValueRef chunk = kc_ir_i64(ir, DROP_CHUNK);
  LLVMValueRef lo = kc_ir_mul(ir, e->p_begin, chunk);
  LLVMValueRef hi = kc_ir_min(ir, kc_ir_mul(ir, e->p_end, chunk), total);
  LLVMValueRef x = kc_emit_in_ptr(e, 0), y = kc_emit_out_ptr(e, 0);
  LLVMValueRef mask = has_mask ? kc_emit_out_ptr(e, 1) : NULL;

  kc_if train = {0};
  if (has_train) {
    LLVMValueRef on = kc_emit_load(e, KC_BOOL, kc_emit_in_ptr(e, 2), kc_ir_i64(ir, 0), 1);
    LLVMTypeRef ct = kc_emit_compute_type(ir, t);
    LLVMValueRef ratio = LLVMConstReal(ct, 0.5);
    if (has_ratio) {
      kc_dtype rt = e->g->vals[n->in[1].id].dtype;
      ratio = kc_emit_convert(ir, kc_emit_load(e, rt, kc_emit_in_ptr(e, 1), kc_ir_i64(ir, 0), 1),
                              rt, t);
    }
    LLVMValueRef pos = LLVMBuildFCmp(ir->b, LLVMRealOGT, ratio, LLVMConstReal(ct, 0.0), "");
    kc_if_begin(ir, &train, LLVMBuildAnd(ir->b, on, pos, ""));
    emit_train(e, lo, hi, ratio, x, y, mask);
    kc_if_else(ir, &train);
  }
  /* inference: a copy (memmove: the runtime may run it in place) and an all-true mask */
  LLVMValueRef count = kc_ir_sub(ir, hi, lo);
  kc_if any;
  kc_if_begin(ir, &any, kc_ir_lt(ir, lo, hi));
  LLVMTypeRef st = kc_emit_storage_type(ir, t);
  LLVMValueRef dst = LLVMBuildGEP2(ir->b, st, y, &lo, 1, "");
  LLVMValueRef src = LLVMBuildGEP2(ir->b, st, x, &lo, 1, "");
  LLVMTypeRef mt[3] = {ir->t_ptr, ir->t_ptr, ir->t_i64};
  LLVMValueRef margs[4] = {dst, src, nbytes(ir, count, kc_dtype_size(t)),
                           LLVMConstInt(ir->t_i1, 0, 0)};
  kc_ir_intrinsic(ir, "llvm.memmove", mt, 3, margs, 4);
  if (mask) {
    LLVMValueRef mdst = LLVMBuildGEP2(ir->b, LLVMInt8TypeInContext(ir->ctx), mask, &lo, 1, "");
    LLVMTypeRef st2[2] = {ir->t_ptr, ir->t_i64};
    LLVMValueRef sargs[4] = {mdst, LLVMConstInt(LLVMInt8TypeInContext(ir->ctx), 1, 0), count,
                             LLVMConstInt(ir->t_i1, 0, 0)};
    kc_ir_intrinsic(ir, "llvm.memset", st2, 2, sargs, 4);
  }
  kc_if_end(ir, &any);
  if (has_train) kc_if_end(ir, &train);
  kc_emit_kernel_end(e);
  return KC_OK;
}
