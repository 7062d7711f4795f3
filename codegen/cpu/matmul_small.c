/*
 * codegen/cpu/matmul_small.c - the small-M path of the f32 matmul core (matmul.c): products of
 * at most MS rows (a decode step has one row per sequence) read B once, as it is stored,
 * instead of packing it. Packing B for one row reads B, writes the panel and reads it again:
 * three passes over the largest operand where the product is bound by reading it once.
 *
 *   small(a, b, c, m, n, k, rsa, csa, rsb, csb, ldc, ep, ctx, row0, col0)
 *                 switch on m to the kernel of its row group (1, 2, 3, 4, 6, 8, 12 rows: the
 *                 smallest that holds m; rows past m repeat row m - 1), then the epilogue hook
 *                 on the block's NR-wide tiles (C is in L1/L2 by then)
 *   small_rR      row-major B (csb 1): k blocks of KB rows; within one, strips of S vectors
 *                 sweep the columns, each keeping an R x S register tile over the KB rows
 *                 (from 0 in the first k block, else from C) and storing it back. So KB rows of
 *                 B are read side by side, each a long ascending run of the thread's columns:
 *                 KB sequential streams that the hardware prefetchers follow, where one strip
 *                 over the whole K (a column of 64-byte pieces, a row pitch apart, as the loop
 *                 nest of lower_matmul_gen.c reads B) left the loads latency-bound at about
 *                 half the read bandwidth (measured, see below).
 *   small_tR      transposed B (rsb 1, csb K: x @ W^T with W stored [N, K]) with A's rows
 *                 contiguous: J columns at a time, each a dot product of contiguous rows,
 *                 vectorized along k, then one horizontal sum per element.
 *
 * Threads: the entry hands each call a run of NR-wide column panels of one product (the pool
 * gives each thread one contiguous range of units), so threads split the columns, vector
 * aligned, and no two threads read the same part of B.
 *
 * Measured with a C prototype of these loops on the 2-core AMD EPYC (Zen 4) host, M = 1,
 * K = 768, B well past the L3: strips of 1-2 vectors over k blocks of 8-16 rows streamed B at
 * the machine's read bandwidth (20-22 GB/s, one thread), wider strips (4-8 vectors) or strips
 * over the whole K at 9-15 GB/s, blocks of 32 rows at 8-12 (too many streams at once). One
 * kernel per row count, each with its k loop unrolled, cost 0.8 s of LLVM time per module;
 * row groups, one masked body and no unroll brought that to about 0.2 s at the same speed.
 * NP bounds the columns one k block sweeps so the R x NP slice of C stays in L2 for the next.
 *
 * Invariants:
 *   - Each element of C sums its k in one fixed order (row-major: k = 0, 1, ... in one fused
 *     multiply-add chain; transposed: lane partials k = l mod W in order, then a fixed tree),
 *     which depends on K and the layout only, never on the column range a call gets, so any
 *     split over threads gives bitwise the same C.
 *   - Nothing outside A, B and C is touched: edge vectors use masked loads and stores.
 *   - Only the caller's conditions (mm_small_ok) are assumed: m in [1, MS], k >= 1.
 */
#include "matmul.h"

#include <stdio.h>
#include <string.h>

enum {
  SM_A,
  SM_B,
  SM_C,
  SM_M,
  SM_N,
  SM_K,
  SM_RSA,
  SM_CSA,
  SM_RSB,
  SM_CSB,
  SM_LDC,
  SM_EP,
  SM_CTX,
  SM_ROW0,
  SM_COL0,
  SM_NPARAMS
};

/* Rows of B a k block reads side by side (row-major B): 8 and 16 were as fast, see the top. */
enum { SM_KB = 8 };
/* Floats of C (R x NP) a k block sweeps before the next block: a quarter of a 1 MiB L2. */
enum { SM_C_FLOATS = 65536 };

/* Row counts that get a kernel; m rows run on the smallest at least m (and MS gets its own). */
static const int sm_groups[] = {1, 2, 3, 4, 6, 8, 12};

/* One kernel for R rows (m <= R at run time) being emitted. */
typedef struct sm {
  mm_gen *g;
  int R, S; /* rows; vectors per strip (row-major) or columns per group (transposed) */
  LLVMValueRef b, n, k, rsb, csa, csb;
  LLVMValueRef arow[16], crow[16]; /* A[i][0], C[i][0]; rows past m repeat row m - 1 */
} sm;

/* Row-major: vectors per strip. One or two: more columns per strip means fewer rows of B in
 * flight for the same registers, and the streams, not the FMAs, set the speed. */
static int rm_vectors(int r) { return r <= 2 ? 2 : 1; }

/* Transposed: columns per group, as many as the registers hold (R x J accumulators, R vectors
 * of A, J of B, a few spare), at most 8. */
static int tr_columns(const mm_gen *g, int r) {
  int j = 8;
  while (j > 1 && r * j + r + j > g->VR - 4)
    j--;
  return j;
}

/*
 * Start kernel small_{kind}R(a, b, c, m, n, k, rsa, csa, rsb, csb, ldc) for up to R rows.
 * Rows i >= m read and write row m - 1: they compute its values again, in the same order, and
 * store the same bits, so one kernel serves every m <= R without a branch per row.
 */
static LLVMValueRef sm_begin(mm_gen *g, sm *r, const char *kind, int rows, int s) {
  kc_ir *ir = g->ir;
  char suffix[32];
  snprintf(suffix, sizeof suffix, "small_%s%d", kind, rows);
  LLVMTypeRef ps[11] = {ir->t_ptr, ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64, ir->t_i64,
                        ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64};
  LLVMValueRef fn = mm_helper(g, suffix, ps, 11);
  /* kept out of the dispatcher: inlined there, all kernels went through one register
   * allocation, which cost more compile time than the whole packed core */
  LLVMAddAttributeAtIndex(
      fn, LLVMAttributeFunctionIndex,
      LLVMCreateEnumAttribute(ir->ctx, LLVMGetEnumAttributeKindForName("noinline", 8), 0));
  for (unsigned i = 0; i < 3; i++)
    kc_ir_param_attr(ir, fn, i, "noalias");
  LLVMValueRef a = LLVMGetParam(fn, 0), c = LLVMGetParam(fn, 2), m = LLVMGetParam(fn, 3);
  LLVMValueRef rsa = LLVMGetParam(fn, 6), ldc = LLVMGetParam(fn, 10);
  *r = (sm){.g = g,
            .R = rows,
            .S = s,
            .b = LLVMGetParam(fn, 1),
            .n = LLVMGetParam(fn, 4),
            .k = LLVMGetParam(fn, 5),
            .csa = LLVMGetParam(fn, 7),
            .rsb = LLVMGetParam(fn, 8),
            .csb = LLVMGetParam(fn, 9)};
  LLVMValueRef last = kc_ir_sub(ir, m, kc_ir_i64(ir, 1));
  for (int i = 0; i < rows; i++) {
    LLVMValueRef row = i ? kc_ir_min(ir, kc_ir_i64(ir, i), last) : kc_ir_i64(ir, 0);
    r->arow[i] = mm_src_gep(g, a, kc_ir_mul(ir, row, rsa));
    r->crow[i] = kc_ir_gepf(ir, c, kc_ir_mul(ir, row, ldc));
  }
  return fn;
}

/* ---- row-major B ---------------------------------------------------------------------------- */

/* acc[i*S + s] += A[i][kk] * B[kk][j + s*W ..] (lanes off masks[s] read nothing). */
static void rm_step(sm *r, LLVMValueRef j, LLVMValueRef kk, LLVMValueRef *masks,
                    LLVMValueRef *acc) {
  mm_gen *g = r->g;
  kc_ir *ir = g->ir;
  LLVMValueRef bv[8];
  LLVMValueRef brow = mm_src_gep(g, r->b, kc_ir_add(ir, kc_ir_mul(ir, kk, r->rsb), j));
  for (int s = 0; s < r->S; s++)
    bv[s] = mm_src_load(g, mm_src_gep(g, brow, kc_ir_i64(ir, s * g->W)), masks[s]);
  LLVMValueRef acol = kc_ir_mul(ir, kk, r->csa);
  for (int i = 0; i < r->R; i++) {
    LLVMValueRef a = mm_src_load1(g, mm_src_gep(g, r->arow[i], acol));
    LLVMValueRef av = kc_ir_splat(ir, a, (unsigned)g->W);
    for (int s = 0; s < r->S; s++)
      acc[i * r->S + s] = kc_ir_fmuladd(ir, av, bv[s], acc[i * r->S + s]);
  }
}

/* Load (store NULL) or store the R x S tile of C at columns j.. (masks NULL: all lanes). */
static void rm_c(sm *r, LLVMValueRef j, LLVMValueRef *masks, LLVMValueRef *acc, bool store) {
  mm_gen *g = r->g;
  kc_ir *ir = g->ir;
  LLVMValueRef zero = kc_ir_zero(g->vt);
  for (int i = 0; i < r->R; i++)
    for (int s = 0; s < r->S; s++) {
      LLVMValueRef p = kc_ir_gepf(ir, r->crow[i], kc_ir_add(ir, j, kc_ir_i64(ir, s * g->W)));
      LLVMValueRef *x = &acc[i * r->S + s];
      if (store && masks)
        kc_ir_masked_store(ir, *x, p, 4, masks[s]);
      else if (store)
        kc_ir_store(ir, *x, p, 4);
      else
        *x = masks ? kc_ir_masked_load(ir, g->vt, p, 4, masks[s], zero)
                   : kc_ir_load(ir, g->vt, p, 4);
    }
}

/*
 * The R x S tile at columns j.. over B rows [k0, k0 + kb): from 0 (first) or C, back to C.
 * One body for full and edge strips (B read through lane masks, which cost what plain loads
 * do with AVX-512); only C's accesses, outside the k loop, have a plain and a masked form.
 * The k loop is not unrolled: the loads, not the loop overhead, set the pace, and unrolled
 * bodies per row count cost more compile time than the packed core.
 */
static void rm_strip(sm *r, LLVMValueRef j, LLVMValueRef k0, LLVMValueRef kb, LLVMValueRef first,
                     LLVMValueRef full, LLVMValueRef *masks) {
  mm_gen *g = r->g;
  kc_ir *ir = g->ir;
  int nacc = r->R * r->S;
  LLVMValueRef acc[KC_LOOP_MAX_CARRY], cin[KC_LOOP_MAX_CARRY], zero = kc_ir_zero(g->vt);
  /* C holds garbage before the first block; the select drops it */
  LLVMValueRef ld[2][KC_LOOP_MAX_CARRY];
  LLVMBasicBlockRef from[2];
  kc_if f;
  kc_if_begin(ir, &f, full);
  rm_c(r, j, NULL, ld[0], false);
  from[0] = LLVMGetInsertBlock(ir->b);
  kc_if_else(ir, &f);
  rm_c(r, j, masks, ld[1], false);
  from[1] = LLVMGetInsertBlock(ir->b);
  kc_if_end(ir, &f);
  for (int i = 0; i < nacc; i++) { /* the phis first: they lead the block */
    cin[i] = LLVMBuildPhi(ir->b, g->vt, "");
    LLVMValueRef v[2] = {ld[0][i], ld[1][i]};
    LLVMAddIncoming(cin[i], v, from, 2);
  }
  for (int i = 0; i < nacc; i++)
    acc[i] = LLVMBuildSelect(ir->b, first, zero, cin[i], "");
  kc_loop l;
  LLVMValueRef kk =
      kc_loop_begin(ir, &l, k0, kc_ir_add(ir, k0, kb), kc_ir_i64(ir, 1), (unsigned)nacc, acc);
  memcpy(acc, l.carry, (size_t)nacc * sizeof *acc);
  rm_step(r, j, kk, masks, acc);
  kc_loop_end(ir, &l, acc);
  memcpy(acc, l.carry, (size_t)nacc * sizeof *acc);
  kc_if_begin(ir, &f, full);
  rm_c(r, j, NULL, acc, true);
  kc_if_else(ir, &f);
  rm_c(r, j, masks, acc, true);
  kc_if_end(ir, &f);
}

static LLVMValueRef emit_rowmajor(mm_gen *g, int rows) {
  kc_ir *ir = g->ir;
  sm r;
  LLVMValueRef fn = sm_begin(g, &r, "r", rows, rm_vectors(rows));
  int64_t step = (int64_t)r.S * g->W;
  int64_t np = SM_C_FLOATS / rows / step * step;
  if (np < step) np = step;
  LLVMValueRef zero = kc_ir_i64(ir, 0), kbc = kc_ir_i64(ir, SM_KB);
  kc_loop lp, lk, lj;
  LLVMValueRef p0 = kc_loop_begin(ir, &lp, zero, r.n, kc_ir_i64(ir, np), 0, NULL);
  LLVMValueRef p1 = kc_ir_min(ir, r.n, kc_ir_add(ir, p0, kc_ir_i64(ir, np)));
  LLVMValueRef k0 = kc_loop_begin(ir, &lk, zero, r.k, kbc, 0, NULL);
  LLVMValueRef kb = kc_ir_min(ir, kbc, kc_ir_sub(ir, r.k, k0));
  LLVMValueRef first = LLVMBuildICmp(ir->b, LLVMIntEQ, k0, zero, "");
  LLVMValueRef j = kc_loop_begin(ir, &lj, p0, p1, kc_ir_i64(ir, step), 0, NULL);
  LLVMValueRef left = kc_ir_sub(ir, p1, j), masks[8];
  for (int s = 0; s < r.S; s++)
    masks[s] = kc_ir_lane_mask(ir, (unsigned)g->W, (int64_t)s * g->W, left);
  rm_strip(&r, j, k0, kb, first, kc_ir_lt(ir, kc_ir_i64(ir, step - 1), left), masks);
  kc_loop_end(ir, &lj, NULL);
  kc_loop_end(ir, &lk, NULL);
  kc_loop_end(ir, &lp, NULL);
  LLVMBuildRetVoid(ir->b);
  return fn;
}

/* ---- transposed B --------------------------------------------------------------------------- */

/* Sum of the lanes of v as a fixed tree of halves. */
static LLVMValueRef hsum(kc_ir *ir, LLVMValueRef v, unsigned lanes) {
  for (unsigned w = lanes / 2; w >= 1; w /= 2) {
    LLVMValueRef lo[64], hi[64];
    for (unsigned i = 0; i < w; i++) {
      lo[i] = kc_ir_i32(ir, (int32_t)i);
      hi[i] = kc_ir_i32(ir, (int32_t)(w + i));
    }
    LLVMValueRef poison = LLVMGetPoison(LLVMTypeOf(v));
    LLVMValueRef x = LLVMBuildShuffleVector(ir->b, v, poison, LLVMConstVector(lo, w), "");
    LLVMValueRef y = LLVMBuildShuffleVector(ir->b, v, poison, LLVMConstVector(hi, w), "");
    v = LLVMBuildFAdd(ir->b, x, y, "");
  }
  return LLVMBuildExtractElement(ir->b, v, kc_ir_i32(ir, 0), "");
}

/*
 * Columns j .. j + J, each clamped to n - 1 (a group past the edge computes the last column
 * again and stores the same bits), as R x J dot products along k: one masked body for full
 * and edge vectors of k, then one horizontal sum per element.
 */
static void tr_group(sm *t, LLVMValueRef j) {
  mm_gen *g = t->g;
  kc_ir *ir = g->ir;
  int J = t->S, nacc = t->R * J;
  LLVMValueRef acc[KC_LOOP_MAX_CARRY], brow[8], col[8];
  LLVMValueRef last = kc_ir_sub(ir, t->n, kc_ir_i64(ir, 1));
  for (int i = 0; i < nacc; i++)
    acc[i] = kc_ir_zero(g->vt);
  for (int jj = 0; jj < J; jj++) {
    col[jj] = kc_ir_min(ir, kc_ir_add(ir, j, kc_ir_i64(ir, jj)), last);
    brow[jj] = mm_src_gep(g, t->b, kc_ir_mul(ir, col[jj], t->csb));
  }
  kc_loop l;
  LLVMValueRef kk =
      kc_loop_begin(ir, &l, kc_ir_i64(ir, 0), t->k, kc_ir_i64(ir, g->W), (unsigned)nacc, acc);
  memcpy(acc, l.carry, (size_t)nacc * sizeof *acc);
  LLVMValueRef mask = kc_ir_lane_mask(ir, (unsigned)g->W, 0, kc_ir_sub(ir, t->k, kk));
  LLVMValueRef av[16], bv[8];
  for (int i = 0; i < t->R; i++)
    av[i] = mm_src_load(g, mm_src_gep(g, t->arow[i], kk), mask);
  for (int jj = 0; jj < J; jj++)
    bv[jj] = mm_src_load(g, mm_src_gep(g, brow[jj], kk), mask);
  for (int i = 0; i < t->R; i++)
    for (int jj = 0; jj < J; jj++)
      acc[i * J + jj] = kc_ir_fmuladd(ir, av[i], bv[jj], acc[i * J + jj]);
  kc_loop_end(ir, &l, acc);
  memcpy(acc, l.carry, (size_t)nacc * sizeof *acc);
  for (int i = 0; i < t->R; i++)
    for (int jj = 0; jj < J; jj++)
      kc_ir_store(ir, hsum(ir, acc[i * J + jj], (unsigned)g->W),
                  kc_ir_gepf(ir, t->crow[i], col[jj]), 4);
}

static LLVMValueRef emit_transposed(mm_gen *g, int rows) {
  kc_ir *ir = g->ir;
  sm t;
  LLVMValueRef fn = sm_begin(g, &t, "t", rows, tr_columns(g, rows));
  kc_loop lj;
  LLVMValueRef j = kc_loop_begin(ir, &lj, kc_ir_i64(ir, 0), t.n, kc_ir_i64(ir, t.S), 0, NULL);
  tr_group(&t, j);
  kc_loop_end(ir, &lj, NULL);
  LLVMBuildRetVoid(ir->b);
  return fn;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

LLVMValueRef mm_small_ok(mm_gen *g, LLVMValueRef m, LLVMValueRef k, LLVMValueRef csa,
                         LLVMValueRef rsb, LLVMValueRef csb) {
  kc_ir *ir = g->ir;
  if (g->MS <= 0) return LLVMConstInt(ir->t_i1, 0, 0);
  LLVMValueRef one = kc_ir_i64(ir, 1);
  LLVMValueRef ok = LLVMBuildAnd(ir->b, kc_ir_lt(ir, kc_ir_i64(ir, 0), m),
                                 kc_ir_lt(ir, m, kc_ir_i64(ir, g->MS + 1)), "");
  ok = LLVMBuildAnd(ir->b, ok, kc_ir_lt(ir, kc_ir_i64(ir, 0), k), "");
  LLVMValueRef rowmajor = LLVMBuildICmp(ir->b, LLVMIntEQ, csb, one, "");
  LLVMValueRef trans = LLVMBuildAnd(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, rsb, one, ""),
                                    LLVMBuildICmp(ir->b, LLVMIntEQ, csa, one, ""), "");
  return LLVMBuildAnd(ir->b, ok, LLVMBuildOr(ir->b, rowmajor, trans, ""), "");
}

void mm_emit_small(mm_gen *g) {
  kc_ir *ir = g->ir;
  int rows[16], nk = 0;
  KC_ASSERT(g->MS >= 1 && g->MS <= MM_SMALL_MAX);
  for (unsigned i = 0; i < sizeof sm_groups / sizeof *sm_groups && sm_groups[i] < g->MS; i++)
    rows[nk++] = sm_groups[i];
  rows[nk++] = g->MS;
  LLVMValueRef rm[16], tr[16];
  for (int i = 0; i < nk; i++) {
    rm[i] = emit_rowmajor(g, rows[i]);
    tr[i] = emit_transposed(g, rows[i]);
  }
  LLVMTypeRef ps[SM_NPARAMS];
  for (int i = 0; i < SM_NPARAMS; i++)
    ps[i] = i <= SM_C || i == SM_EP || i == SM_CTX ? ir->t_ptr : ir->t_i64;
  LLVMValueRef fn = g->small = mm_helper(g, "small", ps, SM_NPARAMS);
  LLVMValueRef p[SM_NPARAMS];
  for (unsigned i = 0; i < SM_NPARAMS; i++)
    p[i] = LLVMGetParam(fn, i);
  LLVMValueRef rowmajor = LLVMBuildICmp(ir->b, LLVMIntEQ, p[SM_CSB], kc_ir_i64(ir, 1), "");
  LLVMValueRef args[11] = {p[SM_A],   p[SM_B],   p[SM_C],   p[SM_M],   p[SM_N],  p[SM_K],
                           p[SM_RSA], p[SM_CSA], p[SM_RSB], p[SM_CSB], p[SM_LDC]};
  LLVMBasicBlockRef merge = LLVMAppendBasicBlockInContext(ir->ctx, fn, "sm.done");
  LLVMValueRef sw = LLVMBuildSwitch(ir->b, p[SM_M], merge, (unsigned)g->MS);
  for (int i = 0; i < nk; i++) {
    LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(ir->ctx, fn, "sm.rows");
    for (int m = i ? rows[i - 1] + 1 : 1; m <= rows[i]; m++)
      LLVMAddCase(sw, kc_ir_i64(ir, m), bb);
    LLVMPositionBuilderAtEnd(ir->b, bb);
    kc_if lay;
    kc_if_begin(ir, &lay, rowmajor);
    LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(rm[i]), rm[i], args, 11, "");
    kc_if_else(ir, &lay);
    LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(tr[i]), tr[i], args, 11, "");
    kc_if_end(ir, &lay);
    LLVMBuildBr(ir->b, merge);
  }
  LLVMPositionBuilderAtEnd(ir->b, merge);
  if (g->hook) {
    /* the epilogue on NR-wide tiles, as the packed path calls it */
    kc_if have;
    kc_if_begin(ir, &have, LLVMBuildIsNotNull(ir->b, p[SM_EP], ""));
    kc_loop l;
    LLVMValueRef nr = kc_ir_i64(ir, g->NR);
    LLVMValueRef jt = kc_loop_begin(ir, &l, kc_ir_i64(ir, 0), p[SM_N], nr, 0, NULL);
    LLVMValueRef e[7] = {p[SM_CTX],
                         kc_ir_gepf(ir, p[SM_C], jt),
                         p[SM_LDC],
                         p[SM_ROW0],
                         kc_ir_add(ir, p[SM_COL0], jt),
                         p[SM_M],
                         kc_ir_min(ir, nr, kc_ir_sub(ir, p[SM_N], jt))};
    LLVMBuildCall2(ir->b, mm_ep_type(ir), p[SM_EP], e, 7, "");
    kc_loop_end(ir, &l, NULL);
    kc_if_end(ir, &have);
  }
  LLVMBuildRetVoid(ir->b);
}
