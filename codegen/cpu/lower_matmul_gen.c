/*
 * codegen/cpu/lower_matmul_gen.c - the matmul family's loop-nest kernel: f64 and integers, dot
 * products (N = 1) of every dtype, and f16/bf16 products of 1-2 rows (larger f16/bf16 products
 * take the packed core, lower_matmul_half.c; f32 ones of a few rows the core's small-M path):
 * one loop nest for all of them, typed by the node's dtype.
 *
 * Work unit = (output row, block of CB columns), CB = U vectors of a 64-byte register each.
 * A unit keeps its U accumulators in registers across the whole K loop: per k one element of
 * A is broadcast and U vectors of the B row are loaded (contiguous; gathered for gemm's B^T),
 * then the epilogue runs on the accumulators and they are stored once. The last block of a
 * row is masked. f16/bf16 accumulate in f32 (their compute type) and round once at the store;
 * integers accumulate in their own type with wrap-around, as numpy does.
 *
 * With N = 1 (matrix times vector; any dtype, f32 included) a unit is one output element
 * instead: a dot product vectorized along K, where both operands are contiguous.
 *
 * Batch dims are all handled by per-dim strides (0 where an operand broadcasts), so any
 * broadcasting works; the per-unit index arithmetic is a few divisions, small next to K.
 *
 * Invariants: units = rows * ceil(N / CB), computed by NAME_units and NAME from the same dims;
 * units are independent (no workspace), so any split of them is valid.
 */
#include "codegen/cpu/lower_matmul.h"

#define MM_GEN_U 4

typedef struct gen {
  unsigned lanes;
  LLVMTypeRef vt;       /* compute vector */
  LLVMValueRef a, b, c; /* buffers */
  LLVMValueRef arow;    /* offset of A[i][0] */
  LLVMValueRef bbase;   /* offset of B[0][0] of this row's product */
  LLVMValueRef crow;    /* offset of C[row][0] */
  LLVMValueRef k, csa, rsb, csb, j0;
  mm_ep_rt rt;
  LLVMValueRef offs[MM_EP_NX];
} gen;

static LLVMValueRef units_value(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef dims, unsigned cb) {
  kc_ir *ir = e->ir;
  LLVMValueRef m, n, k;
  mm_mnk(e, p, dims, &m, &n, &k);
  LLVMValueRef rows = kc_ir_mul(ir, kc_emit_numel(e, dims, true, 0, 0, p->nb), m);
  return kc_ir_mul(ir, rows, kc_ir_cdiv(ir, n, kc_ir_i64(ir, cb)));
}

/* One block of columns; masks NULL: all CB columns exist. */
static void block(kc_cpu_emit *e, const mm_plan *p, gen *g, LLVMValueRef *masks) {
  kc_ir *ir = e->ir;
  bool fp = kc_dtype_is_float(p->dt), unit_b = !p->tb;
  LLVMValueRef acc[MM_GEN_U];
  for (int u = 0; u < MM_GEN_U; u++)
    acc[u] = LLVMConstNull(g->vt);
  kc_loop l;
  LLVMValueRef k = kc_loop_begin(ir, &l, kc_ir_i64(ir, 0), g->k, kc_ir_i64(ir, 1), MM_GEN_U, acc);
  LLVMValueRef av =
      kc_emit_load(e, p->dt, g->a, kc_ir_add(ir, g->arow, kc_ir_mul(ir, k, g->csa)), 1);
  LLVMValueRef s = kc_ir_splat(ir, av, g->lanes);
  LLVMValueRef brow = kc_ir_add(ir, g->bbase, kc_ir_mul(ir, k, g->rsb));
  for (int u = 0; u < MM_GEN_U; u++) {
    LLVMValueRef col = kc_ir_add(ir, g->j0, kc_ir_i64(ir, (int64_t)u * g->lanes)), bv;
    if (unit_b) {
      bv = mm_load(e, p->dt, g->b, kc_ir_add(ir, brow, col), g->lanes, masks ? masks[u] : NULL);
    } else { /* B^T: column j of B is row j of the stored matrix */
      LLVMTypeRef st = kc_emit_storage_type(ir, p->dt), svt = LLVMVectorType(st, g->lanes);
      LLVMValueRef idx =
          kc_ir_iota(ir, g->lanes, kc_ir_add(ir, brow, kc_ir_mul(ir, col, g->csb)), g->csb);
      LLVMValueRef ptrs = LLVMBuildGEP2(ir->b, st, g->b, &idx, 1, "");
      LLVMValueRef m = masks ? masks[u] : LLVMConstAllOnes(LLVMVectorType(ir->t_i1, g->lanes));
      bv =
          kc_ir_masked_gather(ir, svt, ptrs, (unsigned)kc_dtype_size(p->dt), m, LLVMConstNull(svt));
      if (p->dt == KC_F16 || p->dt == KC_BF16) bv = LLVMBuildFPExt(ir->b, bv, g->vt, "");
    }
    acc[u] = fp ? kc_ir_fmuladd(ir, s, bv, l.carry[u])
                : LLVMBuildAdd(ir->b, LLVMBuildMul(ir->b, s, bv, ""), l.carry[u], "");
  }
  kc_loop_end(ir, &l, acc);
  for (int u = 0; u < MM_GEN_U; u++) {
    LLVMValueRef col = kc_ir_add(ir, g->j0, kc_ir_i64(ir, (int64_t)u * g->lanes));
    LLVMValueRef mask = masks ? masks[u] : NULL, v = l.carry[u];
    if (p->ep) v = mm_ep_apply(e, p, &g->rt, g->offs, col, g->lanes, mask, v);
    mm_store(e, p->dt, g->c, kc_ir_add(ir, g->crow, col), v, g->lanes, mask);
  }
}

/* Sum of the lanes of v, pairwise (a tree, not a chain, so it stays short). */
static LLVMValueRef hsum(kc_ir *ir, bool fp, LLVMValueRef v, unsigned lanes) {
  for (unsigned w = lanes / 2; w >= 1; w /= 2) {
    LLVMValueRef lo[64], hi[64];
    for (unsigned i = 0; i < w; i++) {
      lo[i] = kc_ir_i32(ir, (int32_t)i);
      hi[i] = kc_ir_i32(ir, (int32_t)(w + i));
    }
    LLVMValueRef poison = LLVMGetPoison(LLVMTypeOf(v));
    LLVMValueRef a = LLVMBuildShuffleVector(ir->b, v, poison, LLVMConstVector(lo, w), "");
    LLVMValueRef b = LLVMBuildShuffleVector(ir->b, v, poison, LLVMConstVector(hi, w), "");
    v = fp ? LLVMBuildFAdd(ir->b, a, b, "") : LLVMBuildAdd(ir->b, a, b, "");
  }
  return LLVMBuildExtractElement(ir->b, v, kc_ir_i32(ir, 0), "");
}

/* One output element (N = 1): A's row and B's column are both contiguous along K, so the
 * product is U vector accumulators over K, a masked tail, and one horizontal sum. */
static void dot(kc_cpu_emit *e, const mm_plan *p, gen *g) {
  kc_ir *ir = e->ir;
  bool fp = kc_dtype_is_float(p->dt);
  LLVMValueRef acc[MM_GEN_U], step = kc_ir_i64(ir, (int64_t)g->lanes * MM_GEN_U);
  for (int u = 0; u < MM_GEN_U; u++)
    acc[u] = LLVMConstNull(g->vt);
  LLVMValueRef kfull = kc_ir_sub(ir, g->k, LLVMBuildSRem(ir->b, g->k, step, ""));
  kc_loop l, t;
  LLVMValueRef k = kc_loop_begin(ir, &l, kc_ir_i64(ir, 0), kfull, step, MM_GEN_U, acc);
  for (int u = 0; u < MM_GEN_U; u++) {
    LLVMValueRef ku = kc_ir_add(ir, k, kc_ir_i64(ir, (int64_t)u * g->lanes));
    LLVMValueRef av = mm_load(e, p->dt, g->a, kc_ir_add(ir, g->arow, ku), g->lanes, NULL);
    LLVMValueRef bv = mm_load(e, p->dt, g->b, kc_ir_add(ir, g->bbase, ku), g->lanes, NULL);
    acc[u] = fp ? kc_ir_fmuladd(ir, av, bv, l.carry[u])
                : LLVMBuildAdd(ir->b, LLVMBuildMul(ir->b, av, bv, ""), l.carry[u], "");
  }
  kc_loop_end(ir, &l, acc);
  LLVMValueRef sum = l.carry[0];
  for (int u = 1; u < MM_GEN_U; u++)
    sum = fp ? LLVMBuildFAdd(ir->b, sum, l.carry[u], "") : LLVMBuildAdd(ir->b, sum, l.carry[u], "");
  k = kc_loop_begin(ir, &t, kfull, g->k, kc_ir_i64(ir, g->lanes), 1, &sum);
  LLVMValueRef mask = kc_ir_lane_mask(ir, g->lanes, 0, kc_ir_sub(ir, g->k, k));
  LLVMValueRef av = mm_load(e, p->dt, g->a, kc_ir_add(ir, g->arow, k), g->lanes, mask);
  LLVMValueRef bv = mm_load(e, p->dt, g->b, kc_ir_add(ir, g->bbase, k), g->lanes, mask);
  sum = fp ? kc_ir_fmuladd(ir, av, bv, t.carry[0])
           : LLVMBuildAdd(ir->b, LLVMBuildMul(ir->b, av, bv, ""), t.carry[0], "");
  kc_loop_end(ir, &t, &sum);
  LLVMValueRef v = hsum(ir, fp, t.carry[0], g->lanes);
  if (p->ep) v = mm_ep_apply(e, p, &g->rt, g->offs, kc_ir_i64(ir, 0), 1, NULL, v);
  mm_store(e, p->dt, g->c, g->crow, v, 1, NULL);
}

kc_status mm_lower_generic(kc_cpu_emit *e, const mm_plan *p) {
  kc_ir *ir = e->ir;
  gen g = {0};
  LLVMTypeRef ct = kc_emit_compute_type(ir, p->dt);
  size_t csize = p->dt == KC_F16 || p->dt == KC_BF16 ? 4 : kc_dtype_size(p->dt);
  g.lanes = (unsigned)(64 / csize);
  g.vt = LLVMVectorType(ct, g.lanes);
  unsigned cb = p->dot ? 1 : g.lanes * MM_GEN_U;
  e->grain = 0;
  e->ws_bytes = 0;

  LLVMValueRef udims = mm_units_begin(e);
  LLVMBuildRet(ir->b, units_value(e, p, udims, cb));

  kc_emit_kernel_begin(e);
  LLVMValueRef dims = e->p_dims, m, n, k, rsa, sa[KC_MAX_RANK], sb[KC_MAX_RANK], odim[KC_MAX_RANK];
  mm_mnk(e, p, dims, &m, &n, &k);
  mm_strides(e, p, m, n, k, &rsa, &g.csa, &g.rsb, &g.csb);
  g.k = k;
  for (int d = 0; d < p->nb; d++) {
    sa[d] = mm_batch_stride(e, p, dims, 0, d);
    sb[d] = mm_batch_stride(e, p, dims, 1, d);
    odim[d] = kc_emit_dim(e, dims, true, 0, d);
  }
  g.a = kc_emit_in_ptr(e, 0);
  g.b = kc_emit_in_ptr(e, 1);
  g.c = kc_emit_out_ptr(e, 0);
  if (p->ep) mm_ep_init(e, p, dims, &g.rt);
  LLVMValueRef cbc = kc_ir_i64(ir, cb), ncb = kc_ir_cdiv(ir, n, cbc);

  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, kc_ir_i64(ir, 1), 0, NULL);
  LLVMValueRef row = LLVMBuildSDiv(ir->b, u, ncb, "");
  g.j0 = kc_ir_mul(ir, LLVMBuildSRem(ir->b, u, ncb, ""), cbc);
  LLVMValueRef rest = LLVMBuildSDiv(ir->b, row, m, ""), aoff = kc_ir_i64(ir, 0), boff = aoff;
  for (int d = p->nb - 1; d >= 0; d--) {
    LLVMValueRef idx = d ? LLVMBuildSRem(ir->b, rest, odim[d], "") : rest;
    if (d) rest = LLVMBuildSDiv(ir->b, rest, odim[d], "");
    aoff = kc_ir_add(ir, aoff, kc_ir_mul(ir, idx, sa[d]));
    boff = kc_ir_add(ir, boff, kc_ir_mul(ir, idx, sb[d]));
  }
  g.arow = kc_ir_add(ir, aoff, kc_ir_mul(ir, LLVMBuildSRem(ir->b, row, m, ""), rsa));
  g.bbase = boff;
  g.crow = kc_ir_mul(ir, row, n);
  if (p->ep) mm_ep_row(e, p, &g.rt, row, g.offs);
  if (p->dot) {
    dot(e, p, &g);
    kc_loop_end(ir, &l, NULL);
    kc_emit_kernel_end(e);
    return KC_OK;
  }
  LLVMValueRef cols = kc_ir_sub(ir, n, g.j0);
  kc_if full;
  kc_if_begin(ir, &full, kc_ir_lt(ir, kc_ir_i64(ir, cb - 1), cols));
  block(e, p, &g, NULL);
  kc_if_else(ir, &full);
  LLVMValueRef masks[MM_GEN_U];
  for (int i = 0; i < MM_GEN_U; i++)
    masks[i] = kc_ir_lane_mask(ir, g.lanes, (int64_t)i * g.lanes, cols);
  block(e, p, &g, masks);
  kc_if_end(ir, &full);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}
