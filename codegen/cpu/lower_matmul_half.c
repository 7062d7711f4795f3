/*
 * codegen/cpu/lower_matmul_half.c - f16 / bf16 matmul, gemm and matmul_ep on the packed core
 * of matmul.c, emitted once per module and element type as kc_matmul_core_f16 / _bf16: its
 * packers widen A and B to f32, and the micro-kernel is the f32 one (so products accumulate in
 * f32 and round once, as the loop nest of lower_matmul_gen.c does, at ~10x its speed).
 *
 * The core writes f32 C, accumulating over K slices, so it cannot write a half output in
 * place. Work unit = one block of at most RC rows x CC columns of one product: the core
 * computes it into a per-thread f32 scratch tile (RC x CC, L2-sized), then one pass over the
 * scratch applies the epilogue and rounds into the output. A unit packs its own A rows and B
 * columns, so units are independent; the repacking this costs (A once per CC columns, B once
 * per RC rows) is a few percent of the unit's multiply-adds.
 *
 * Batch dims are all looped here with per-dim strides (0 where an operand broadcasts), so any
 * broadcasting works.
 *
 * Invariants: units = products * ceil(M / RC) * ceil(N / CC), from the same dims in NAME_units
 * and NAME; the scratch follows the core's workspace, both 64-byte aligned.
 */
#include "codegen/cpu/lower_matmul.h"

typedef struct half_core {
  kc_matmul_kernel k;
  LLVMValueRef fn;
  int64_t rc, cc; /* unit block: rows, columns */
} half_core;

/* units: products * row blocks * column blocks. */
static LLVMValueRef units_value(kc_cpu_emit *e, const mm_plan *p, const half_core *h,
                                LLVMValueRef dims, LLVMValueRef *mch, LLVMValueRef *nch) {
  kc_ir *ir = e->ir;
  LLVMValueRef m, n, k;
  mm_mnk(e, p, dims, &m, &n, &k);
  *mch = kc_ir_cdiv(ir, m, kc_ir_i64(ir, h->rc));
  *nch = kc_ir_cdiv(ir, n, kc_ir_i64(ir, h->cc));
  LLVMValueRef prods = kc_emit_numel(e, dims, true, 0, 0, p->nb);
  return kc_ir_mul(ir, prods, kc_ir_mul(ir, *mch, *nch));
}

/* The scratch's rows [0, rows) x columns [0, cols), through the epilogue, into output rows
 * rbase.. at column c0. */
static void store_block(kc_cpu_emit *e, const mm_plan *p, const mm_ep_rt *rt, const half_core *h,
                        LLVMValueRef scratch, LLVMValueRef out, LLVMValueRef n, LLVMValueRef rbase,
                        LLVMValueRef c0, LLVMValueRef rows, LLVMValueRef cols) {
  kc_ir *ir = e->ir;
  unsigned w = (unsigned)kc_cpu_host(e->cpu)->f32_lanes;
  kc_loop li, lj;
  LLVMValueRef i = kc_loop_begin(ir, &li, kc_ir_i64(ir, 0), rows, kc_ir_i64(ir, 1), 0, NULL);
  LLVMValueRef r = kc_ir_add(ir, rbase, i), offs[MM_EP_NX];
  if (p->ep) mm_ep_row(e, p, rt, r, offs);
  LLVMValueRef srow = kc_ir_gepf(ir, scratch, kc_ir_mul(ir, i, kc_ir_i64(ir, h->cc)));
  LLVMValueRef orow = kc_ir_add(ir, kc_ir_mul(ir, r, n), c0);
  LLVMValueRef j = kc_loop_begin(ir, &lj, kc_ir_i64(ir, 0), cols, kc_ir_i64(ir, w), 0, NULL);
  /* masked throughout: one body, and only the last vector of a row is partial */
  LLVMValueRef mask = kc_ir_lane_mask(ir, w, 0, kc_ir_sub(ir, cols, j));
  LLVMValueRef x = mm_load(e, KC_F32, srow, j, w, mask);
  if (p->ep) x = mm_ep_apply(e, p, rt, offs, kc_ir_add(ir, c0, j), w, mask, x);
  mm_store(e, p->dt, out, kc_ir_add(ir, orow, j), x, w, mask);
  kc_loop_end(ir, &lj, NULL);
  kc_loop_end(ir, &li, NULL);
}

kc_status mm_lower_half(kc_cpu_emit *e, const mm_plan *p) {
  kc_ir *ir = e->ir;
  bool bf = p->dt == KC_BF16;
  const char *core = bf ? "kc_matmul_core_bf16" : "kc_matmul_core_f16";
  half_core h = {.fn = LLVMGetNamedFunction(ir->mod, core)};
  if (h.fn) {
    kc_matmul_describe(e->cpu, NULL, &h.k);
  } else {
    unsigned flags = KC_MM_EMIT_INTERNAL | (bf ? KC_MM_EMIT_BF16 : KC_MM_EMIT_F16);
    kc_status s = kc_matmul_emit(e->cpu, ir, core, NULL, flags, &h.k, &h.fn);
    if (s != KC_OK) return s;
  }
  h.rc = h.k.cfg.mc;     /* one row block of the core: A is packed once per unit */
  h.cc = 4 * h.k.unit_n; /* 4 panels: 168 x 256 floats of scratch, in L2 */

  LLVMValueRef mch, nch;
  LLVMValueRef udims = mm_units_begin(e);
  LLVMBuildRet(ir->b, units_value(e, p, &h, udims, &mch, &nch));

  kc_emit_kernel_begin(e);
  LLVMValueRef dims = e->p_dims, m, n, k, rsa, csa, rsb, csb;
  mm_mnk(e, p, dims, &m, &n, &k);
  mm_strides(e, p, m, n, k, &rsa, &csa, &rsb, &csb);
  units_value(e, p, &h, dims, &mch, &nch);
  LLVMValueRef sa[KC_MAX_RANK], sb[KC_MAX_RANK], odim[KC_MAX_RANK];
  for (int d = 0; d < p->nb; d++) {
    sa[d] = mm_batch_stride(e, p, dims, 0, d);
    sb[d] = mm_batch_stride(e, p, dims, 1, d);
    odim[d] = kc_emit_dim(e, dims, true, 0, d);
  }
  LLVMValueRef a = kc_emit_in_ptr(e, 0), b = kc_emit_in_ptr(e, 1), out = kc_emit_out_ptr(e, 0);
  mm_ep_rt rt;
  if (p->ep) mm_ep_init(e, p, dims, &rt);
  LLVMValueRef scratch = kc_ir_gepf(ir, e->p_ws, kc_ir_i64(ir, h.k.ws_floats));
  LLVMValueRef args = LLVMBuildAlloca(ir->b, LLVMArrayType(ir->t_i64, KC_MM_NARGS), "args");
  LLVMValueRef zero = kc_ir_i64(ir, 0), one = kc_ir_i64(ir, 1);
  LLVMValueRef fixed[KC_MM_NARGS] = {
      [KC_MM_K] = k,       [KC_MM_RSA] = rsa,  [KC_MM_CSA] = csa,
      [KC_MM_RSB] = rsb,   [KC_MM_CSB] = csb,  [KC_MM_LDC] = kc_ir_i64(ir, h.cc),
      [KC_MM_BATCH] = one, [KC_MM_BSA] = zero, [KC_MM_BSB] = zero,
      [KC_MM_BSC] = zero};
  for (int i = 0; i < KC_MM_NARGS; i++)
    if (fixed[i]) kc_ir_store(ir, fixed[i], kc_ir_gepi64(ir, args, kc_ir_i64(ir, i)), 8);
  LLVMTypeRef st = kc_emit_storage_type(ir, p->dt);

  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef per = kc_ir_mul(ir, mch, nch);
  LLVMValueRef prod = LLVMBuildSDiv(ir->b, u, per, ""), rem = LLVMBuildSRem(ir->b, u, per, "");
  LLVMValueRef r0 = kc_ir_mul(ir, LLVMBuildSDiv(ir->b, rem, nch, ""), kc_ir_i64(ir, h.rc));
  LLVMValueRef c0 = kc_ir_mul(ir, LLVMBuildSRem(ir->b, rem, nch, ""), kc_ir_i64(ir, h.cc));
  LLVMValueRef rows = kc_ir_min(ir, kc_ir_i64(ir, h.rc), kc_ir_sub(ir, m, r0));
  LLVMValueRef cols = kc_ir_min(ir, kc_ir_i64(ir, h.cc), kc_ir_sub(ir, n, c0));
  LLVMValueRef aoff = kc_ir_mul(ir, r0, rsa), boff = kc_ir_mul(ir, c0, csb), rest = prod;
  for (int d = p->nb - 1; d >= 0; d--) {
    LLVMValueRef idx = d ? LLVMBuildSRem(ir->b, rest, odim[d], "") : rest;
    if (d) rest = LLVMBuildSDiv(ir->b, rest, odim[d], "");
    aoff = kc_ir_add(ir, aoff, kc_ir_mul(ir, idx, sa[d]));
    boff = kc_ir_add(ir, boff, kc_ir_mul(ir, idx, sb[d]));
  }
  kc_ir_store(ir, rows, kc_ir_gepi64(ir, args, kc_ir_i64(ir, KC_MM_M)), 8);
  kc_ir_store(ir, cols, kc_ir_gepi64(ir, args, kc_ir_i64(ir, KC_MM_N)), 8);
  kc_ir_store(ir, rows, kc_ir_gepi64(ir, args, kc_ir_i64(ir, KC_MM_MTILE)), 8);
  LLVMValueRef ca[7] = {LLVMBuildGEP2(ir->b, st, a, &aoff, 1, ""),
                        LLVMBuildGEP2(ir->b, st, b, &boff, 1, ""),
                        scratch,
                        e->p_ws,
                        args,
                        zero,
                        kc_ir_cdiv(ir, cols, kc_ir_i64(ir, h.k.unit_n))};
  LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(h.fn), h.fn, ca, 7, "");
  store_block(e, p, &rt, &h, scratch, out, n, kc_ir_add(ir, kc_ir_mul(ir, prod, m), r0), c0, rows,
              cols);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);

  e->ws_bytes = (h.k.ws_floats + h.rc * h.cc) * (int64_t)sizeof(float);
  e->grain = 0;
  return KC_OK;
}
