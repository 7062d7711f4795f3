/*
 * codegen/cpu/matmul_pack.c - the packing routines of the f32 matmul core (see matmul.c):
 * A blocks into MR-tall column panels, B panels into NR-wide row panels, both zero-padded,
 * for whatever strides the operands have.
 *
 *   pack_a(ap, a, rsa, csa, mc, kc)  ap[ip*kc + k*MR + i] = A[ip + i][k], 0 past mc
 *   pack_b(bp, b, rsb, csb, kc, nr)  bp[k*NR + j] = B[k][j], 0 past nr (one panel)
 *
 * Both pick their path at run time from the strides. An operand whose rows are contiguous
 * along k (row-major A, transposed B as in x @ W^T with W stored [N, K]) is read row by row,
 * W rows at a time, and transposed W x W in registers: the reads are contiguous, where
 * gathers would touch W cache lines per vector. Row-major B (csb 1) is a copy of NV vectors
 * per k; column-major A (rsa 1) a copy of MR floats per k; anything else goes element by
 * element (A) or by gathers (B).
 *
 * A and B may be f16 / bf16 (an f16 core): every read goes through mm_src_*, which widens to
 * f32, so the panels and the micro-kernel are the same as for f32.
 *
 * Invariants: nothing is read outside the operand (edges use masked loads, whose masked-off
 * lanes do not fault) and every float of a panel is written, zeros past the edges, so the
 * micro-kernel can compute full tiles; B stores are aligned to g->balign.
 */
#include "matmul.h"

LLVMValueRef mm_src_gep(mm_gen *g, LLVMValueRef p, LLVMValueRef idx) {
  return LLVMBuildGEP2(g->ir->b, g->st, p, &idx, 1, "");
}

static LLVMValueRef widen(mm_gen *g, LLVMValueRef v) {
  if (g->st == g->ir->t_f32) return v;
  LLVMTypeRef t = LLVMTypeOf(v);
  LLVMTypeRef f = LLVMGetTypeKind(t) == LLVMVectorTypeKind
                      ? LLVMVectorType(g->ir->t_f32, LLVMGetVectorSize(t))
                      : g->ir->t_f32;
  return LLVMBuildFPExt(g->ir->b, v, f, "");
}

LLVMValueRef mm_src_load(mm_gen *g, LLVMValueRef p, LLVMValueRef mask) {
  LLVMTypeRef vt = LLVMVectorType(g->st, (unsigned)g->W);
  LLVMValueRef v = mask ? kc_ir_masked_load(g->ir, vt, p, g->esz, mask, LLVMConstNull(vt))
                        : kc_ir_load(g->ir, vt, p, g->esz);
  return widen(g, v);
}

LLVMValueRef mm_src_load1(mm_gen *g, LLVMValueRef p) {
  return widen(g, kc_ir_load(g->ir, g->st, p, g->esz));
}

LLVMValueRef mm_src_gather(mm_gen *g, LLVMValueRef ptrs, LLVMValueRef mask) {
  LLVMTypeRef vt = LLVMVectorType(g->st, (unsigned)g->W);
  return widen(g, kc_ir_masked_gather(g->ir, vt, ptrs, g->esz, mask, LLVMConstNull(vt)));
}

/* In-register transpose of W rows of W lanes: swap off-diagonal blocks of size W/2 .. 1. */
static void transpose(mm_gen *g, LLVMValueRef *r) {
  kc_ir *ir = g->ir;
  int w = g->W;
  for (int bs = w / 2; bs >= 1; bs /= 2) {
    LLVMValueRef lo[64], hi[64];
    for (int j = 0; j < w; j++) {
      lo[j] = kc_ir_i32(ir, (j & bs) ? w + j - bs : j);
      hi[j] = kc_ir_i32(ir, (j & bs) ? w + j : j + bs);
    }
    LLVMValueRef mlo = LLVMConstVector(lo, (unsigned)w), mhi = LLVMConstVector(hi, (unsigned)w);
    for (int i = 0; i < w; i++) {
      if (i & bs) continue;
      LLVMValueRef a = r[i], b = r[i + bs];
      r[i] = LLVMBuildShuffleVector(ir->b, a, b, mlo, "");
      r[i + bs] = LLVMBuildShuffleVector(ir->b, a, b, mhi, "");
    }
  }
}

/* Where and how pack_t writes: row k of the transposed block goes to dst + k * stride. */
typedef struct tdst {
  LLVMValueRef p;
  int stride; /* floats between consecutive k */
  int rows;   /* source rows (= lanes stored per k), at most W */
  unsigned align;
} tdst;

/*
 * W columns k0.. of d->rows source rows (row r at src + r*rs, contiguous along k): one load
 * per row (rows off rowmask and lanes off kmask read as 0), a transpose, and one store of
 * d->rows lanes per k. Only the first `kleft` k are stored when kleft is given (the k tail).
 */
static void pack_t(mm_gen *g, const tdst *d, LLVMValueRef src, LLVMValueRef rs, LLVMValueRef k0,
                   LLVMValueRef *rowmask, LLVMValueRef kmask, LLVMValueRef kleft) {
  kc_ir *ir = g->ir;
  LLVMValueRef r[64];
  for (int j = 0; j < g->W; j++) {
    if (j >= d->rows) {
      r[j] = kc_ir_zero(g->vt);
      continue;
    }
    LLVMValueRef m = kmask ? LLVMBuildAnd(ir->b, rowmask[j], kmask, "") : rowmask[j];
    LLVMValueRef p = mm_src_gep(g, src, kc_ir_add(ir, kc_ir_mul(ir, kc_ir_i64(ir, j), rs), k0));
    r[j] = mm_src_load(g, p, m);
  }
  transpose(g, r);
  LLVMValueRef smask =
      d->rows < g->W ? kc_ir_lane_mask(ir, (unsigned)g->W, 0, kc_ir_i64(ir, d->rows)) : NULL;
  for (int kk = 0; kk < g->W; kk++) {
    kc_if in;
    if (kleft) kc_if_begin(ir, &in, kc_ir_lt(ir, kc_ir_i64(ir, kk), kleft));
    LLVMValueRef o = kc_ir_mul(ir, kc_ir_add(ir, k0, kc_ir_i64(ir, kk)), kc_ir_i64(ir, d->stride));
    LLVMValueRef p = kc_ir_gepf(ir, d->p, o);
    if (smask)
      kc_ir_masked_store(ir, r[kk], p, 4, smask);
    else
      kc_ir_store(ir, r[kk], p, d->align);
    if (kleft) kc_if_end(ir, &in);
  }
}

/* All kc columns of d->rows source rows: full W-wide column blocks, then a masked tail. */
static void pack_t_rows(mm_gen *g, const tdst *d, LLVMValueRef src, LLVMValueRef rs,
                        LLVMValueRef kc, LLVMValueRef *rowmask) {
  kc_ir *ir = g->ir;
  kc_loop lk;
  LLVMValueRef kfull = LLVMBuildAnd(ir->b, kc, kc_ir_i64(ir, -(int64_t)g->W), "");
  LLVMValueRef k0 = kc_loop_begin(ir, &lk, kc_ir_i64(ir, 0), kfull, kc_ir_i64(ir, g->W), 0, NULL);
  pack_t(g, d, src, rs, k0, rowmask, NULL, NULL);
  kc_loop_end(ir, &lk, NULL);
  kc_if tail;
  kc_if_begin(ir, &tail, kc_ir_lt(ir, kfull, kc));
  LLVMValueRef kleft = kc_ir_sub(ir, kc, kfull);
  pack_t(g, d, src, rs, kfull, rowmask, kc_ir_lane_mask(ir, (unsigned)g->W, 0, kleft), kleft);
  kc_if_end(ir, &tail);
}

void mm_emit_pack_a(mm_gen *g) {
  kc_ir *ir = g->ir;
  LLVMTypeRef ps[6] = {ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64};
  LLVMValueRef fn = g->pack_a = mm_helper(g, "pack_a", ps, 6);
  kc_ir_param_attr(ir, fn, 0, "noalias");
  kc_ir_param_attr(ir, fn, 1, "noalias");
  LLVMValueRef ap = LLVMGetParam(fn, 0), a = LLVMGetParam(fn, 1), rsa = LLVMGetParam(fn, 2);
  LLVMValueRef csa = LLVMGetParam(fn, 3), mc = LLVMGetParam(fn, 4), kc = LLVMGetParam(fn, 5);
  LLVMValueRef mrc = kc_ir_i64(ir, g->MR), one = kc_ir_i64(ir, 1);
  bool vec = g->MR <= g->W;

  kc_loop li, lk;
  LLVMValueRef ip = kc_loop_begin(ir, &li, kc_ir_i64(ir, 0), mc, mrc, 0, NULL);
  LLVMValueRef rows = kc_ir_min(ir, mrc, kc_ir_sub(ir, mc, ip));
  LLVMValueRef dst = kc_ir_gepf(ir, ap, kc_ir_mul(ir, ip, kc));
  LLVMValueRef src = mm_src_gep(g, a, kc_ir_mul(ir, ip, rsa));
  kc_if rowmajor, colmajor;
  if (vec) {
    kc_if_begin(ir, &rowmajor, LLVMBuildICmp(ir->b, LLVMIntEQ, csa, one, ""));
    LLVMValueRef rowmask[64];
    for (int j = 0; j < g->MR; j++)
      rowmask[j] = kc_ir_splat(ir, kc_ir_lt(ir, kc_ir_i64(ir, j), rows), (unsigned)g->W);
    tdst d = {.p = dst, .stride = g->MR, .rows = g->MR, .align = 4};
    pack_t_rows(g, &d, src, rsa, kc, rowmask);
    kc_if_else(ir, &rowmajor);

    kc_if_begin(ir, &colmajor, LLVMBuildICmp(ir->b, LLVMIntEQ, rsa, one, ""));
    LLVMValueRef lmask = kc_ir_lane_mask(ir, (unsigned)g->W, 0, rows);
    LLVMValueRef smask = kc_ir_lane_mask(ir, (unsigned)g->W, 0, mrc);
    LLVMValueRef k = kc_loop_begin(ir, &lk, kc_ir_i64(ir, 0), kc, one, 0, NULL);
    LLVMValueRef x = mm_src_load(g, mm_src_gep(g, src, kc_ir_mul(ir, k, csa)), lmask);
    kc_ir_masked_store(ir, x, kc_ir_gepf(ir, dst, kc_ir_mul(ir, k, mrc)), 4, smask);
    kc_loop_end(ir, &lk, NULL);
    kc_if_else(ir, &colmajor);
  }
  for (int i = 0; i < g->MR; i++) {
    kc_if have;
    kc_if_begin(ir, &have, kc_ir_lt(ir, kc_ir_i64(ir, i), rows));
    LLVMValueRef srow = mm_src_gep(g, src, kc_ir_mul(ir, kc_ir_i64(ir, i), rsa));
    LLVMValueRef k = kc_loop_begin(ir, &lk, kc_ir_i64(ir, 0), kc, one, 0, NULL);
    LLVMValueRef x = mm_src_load1(g, mm_src_gep(g, srow, kc_ir_mul(ir, k, csa)));
    LLVMValueRef d = kc_ir_add(ir, kc_ir_mul(ir, k, mrc), kc_ir_i64(ir, i));
    kc_ir_store(ir, x, kc_ir_gepf(ir, dst, d), 4);
    kc_loop_end(ir, &lk, NULL);
    kc_if_else(ir, &have);
    /* Rows past mc are computed and never stored; zeros keep denormal garbage out of FMAs. */
    k = kc_loop_begin(ir, &lk, kc_ir_i64(ir, 0), kc, one, 0, NULL);
    d = kc_ir_add(ir, kc_ir_mul(ir, k, mrc), kc_ir_i64(ir, i));
    kc_ir_store(ir, LLVMConstReal(ir->t_f32, 0.0), kc_ir_gepf(ir, dst, d), 4);
    kc_loop_end(ir, &lk, NULL);
    kc_if_end(ir, &have);
  }
  if (vec) {
    kc_if_end(ir, &colmajor);
    kc_if_end(ir, &rowmajor);
  }
  kc_loop_end(ir, &li, NULL);
  LLVMBuildRetVoid(ir->b);
}

/* Row k of a B panel (element offset `row` of B) to dst: NV vectors, masked past nr when
 * masked; by gathers along csb when not contiguous. */
static void pack_b_row(mm_gen *g, LLVMValueRef dst, LLVMValueRef b, LLVMValueRef row,
                       LLVMValueRef csb, LLVMValueRef nr, bool masked, bool contiguous) {
  kc_ir *ir = g->ir;
  for (int v = 0; v < g->NV; v++) {
    LLVMValueRef col = kc_ir_i64(ir, v * g->W), x;
    LLVMValueRef mask = masked ? kc_ir_lane_mask(ir, (unsigned)g->W, v * g->W, nr) : NULL;
    if (contiguous) {
      x = mm_src_load(g, mm_src_gep(g, b, kc_ir_add(ir, row, col)), mask);
    } else {
      if (!mask) mask = LLVMConstAllOnes(LLVMVectorType(ir->t_i1, (unsigned)g->W));
      LLVMValueRef idx =
          kc_ir_iota(ir, (unsigned)g->W, kc_ir_add(ir, row, kc_ir_mul(ir, col, csb)), csb);
      x = mm_src_gather(g, mm_src_gep(g, b, idx), mask);
    }
    kc_ir_store(ir, x, kc_ir_gepf(ir, dst, col), g->balign);
  }
}

/* The kc rows of a panel through pack_b_row. */
static void pack_b_rows(mm_gen *g, LLVMValueRef bp, LLVMValueRef b, LLVMValueRef rsb,
                        LLVMValueRef csb, LLVMValueRef kc, LLVMValueRef nr, bool masked,
                        bool contiguous) {
  kc_ir *ir = g->ir;
  kc_loop lk;
  LLVMValueRef k = kc_loop_begin(ir, &lk, kc_ir_i64(ir, 0), kc, kc_ir_i64(ir, 1), 0, NULL);
  LLVMValueRef dst = kc_ir_gepf(ir, bp, kc_ir_mul(ir, k, kc_ir_i64(ir, g->NR)));
  pack_b_row(g, dst, b, kc_ir_mul(ir, k, rsb), csb, nr, masked, contiguous);
  kc_loop_end(ir, &lk, NULL);
}

/*
 * pack_b(bp, b, rsb, csb, kc, nr). The core packs each panel right before its first use, so
 * the packed panel is still in L2 when the micro-kernel streams it (see matmul.c).
 * Transposed B (rsb 1): each W-column group of the panel is W rows of the stored matrix,
 * read along k and transposed in registers.
 */
void mm_emit_pack_b(mm_gen *g) {
  kc_ir *ir = g->ir;
  LLVMTypeRef ps[6] = {ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64};
  LLVMValueRef fn = g->pack_b = mm_helper(g, "pack_b", ps, 6);
  kc_ir_param_attr(ir, fn, 0, "noalias");
  kc_ir_param_attr(ir, fn, 1, "noalias");
  LLVMValueRef bp = LLVMGetParam(fn, 0), b = LLVMGetParam(fn, 1), rsb = LLVMGetParam(fn, 2);
  LLVMValueRef csb = LLVMGetParam(fn, 3), kc = LLVMGetParam(fn, 4), nr = LLVMGetParam(fn, 5);
  LLVMValueRef one = kc_ir_i64(ir, 1);

  kc_if unit, full, trans;
  kc_if_begin(ir, &unit, LLVMBuildICmp(ir->b, LLVMIntEQ, csb, one, ""));
  kc_if_begin(ir, &full, LLVMBuildICmp(ir->b, LLVMIntEQ, nr, kc_ir_i64(ir, g->NR), ""));
  pack_b_rows(g, bp, b, rsb, csb, kc, nr, false, true);
  kc_if_else(ir, &full);
  pack_b_rows(g, bp, b, rsb, csb, kc, nr, true, true);
  kc_if_end(ir, &full);
  kc_if_else(ir, &unit);

  kc_if_begin(ir, &trans, LLVMBuildICmp(ir->b, LLVMIntEQ, rsb, one, ""));
  kc_loop lg;
  LLVMValueRef j0 =
      kc_loop_begin(ir, &lg, kc_ir_i64(ir, 0), kc_ir_i64(ir, g->NR), kc_ir_i64(ir, g->W), 0, NULL);
  LLVMValueRef rowmask[64];
  for (int j = 0; j < g->W; j++)
    rowmask[j] =
        kc_ir_splat(ir, kc_ir_lt(ir, kc_ir_add(ir, j0, kc_ir_i64(ir, j)), nr), (unsigned)g->W);
  tdst d = {.p = kc_ir_gepf(ir, bp, j0), .stride = g->NR, .rows = g->W, .align = g->balign};
  pack_t_rows(g, &d, mm_src_gep(g, b, kc_ir_mul(ir, j0, csb)), csb, kc, rowmask);
  kc_loop_end(ir, &lg, NULL);
  kc_if_else(ir, &trans);
  pack_b_rows(g, bp, b, rsb, csb, kc, nr, true, false);
  kc_if_end(ir, &trans);
  kc_if_end(ir, &unit);
  LLVMBuildRetVoid(ir->b);
}
