/*
 * codegen/cpu/matmul.c - the f32 matmul emitter: a blocked, packed GEMM in the style of
 * Goto/BLIS, generated as LLVM IR for the host's vector width.
 *
 * Structure of the generated module (all but the entry point internal):
 *   entry(a, b, c, ws, args, begin, end)  decodes work units into (batch, row tile, columns)
 *   block(...)       jc (NC columns) -> pc (KC deep) -> pack B -> ic (MC rows, L2) ->
 *                    pack A -> jr (NR) -> ir (MR) -> ukernel
 *   pack_b           KC x NC slice of B into NR-wide row panels, zero-padded past N
 *   pack_a           MC x KC slice of A into MR-tall column panels, zero-padded past M
 *   ukernel          MR x NR register tile: MR*NV vector accumulators live across the k loop;
 *                    per k, NV vector loads of packed B, MR broadcasts of packed A, MR*NV
 *                    llvm.fmuladd; then C = acc (first K slice) or C += acc, masked at edges.
 *
 * Invariants:
 *   - Sizes and strides are runtime values (one kernel serves every batch size); only the
 *     blocking (MR, NV, KC, MC, NC) is baked in.
 *   - ws holds the packed A block at ws[0] and the packed B block after it; both start on
 *     64-byte boundaries, and (for 16 lanes) so does every NR-wide B row, so B loads are
 *     aligned.
 *   - Blocks are balanced (K = 1030 with KC 384 is cut 344+344+342, not 384+384+262) so no tiny
 * last slice pays a full store pass.
 *   - Packed panels are zero-padded, so the micro-kernel always computes full tiles and only
 *     the stores are masked.
 */
#include "cpu.h"

#include <stdio.h>
#include <string.h>

typedef struct mm_gen {
  kc_ir *ir;
  const char *name; /* the entry point; helpers are name_ukernel, name_pack_a, ... */
  int W, MR, NV, NR, KC, MC, NC, U;
  unsigned balign; /* alignment of packed B vectors: NR*4 bytes apart from a 64-byte base */
  LLVMTypeRef vt;
  LLVMValueRef ukernel, pack_a, pack_b, block;
} mm_gen;

static int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* Start internal helper NAME_suffix (names stay unique when many kernels share a module). */
static LLVMValueRef helper(mm_gen *g, const char *suffix, LLVMTypeRef *params, unsigned n) {
  char full[256];
  snprintf(full, sizeof full, "%s_%s", g->name, suffix);
  return kc_ir_func(g->ir, full, g->ir->t_void, params, n, true);
}

/* Floats of the packed A block, rounded so the B block after it starts 64-byte aligned. */
static int64_t ap_floats(const kc_matmul_cfg *c) {
  return round_up(round_up(c->mc, c->mr) * c->kc, 16);
}

/*
 * Defaults, measured on Sapphire Rapids (48 KiB L1d, 2 MiB L2, 32 zmm registers) at 1024^3:
 * 6x64 beat 14x32, 12x32, 8x48, 9x48 and 5x80 by 3-5%: fewer broadcasts per FMA, and 24
 * accumulators + 4 B vectors + 1 broadcast fit the 32 registers. KC from 192 to 512 and MC
 * from 120 to 336 were within noise; larger A blocks (MC x KC near L2/2) lost ~5%, since
 * the A block shares L2 with the streamed B panels.
 */
void kc_matmul_cfg_resolve(const kc_cpu *cpu, kc_matmul_cfg *c) {
  const kc_cpu_info *h = kc_cpu_host(cpu);
  if (c->nv <= 0) c->nv = h->vec_regs >= 32 ? 4 : 2;
  /* Accumulators plus NV B vectors plus a broadcast register must fit in the register file. */
  if (c->mr <= 0) c->mr = (h->vec_regs - c->nv - 2) / c->nv;
  if (c->mr > 16) c->mr = 16;
  if (c->mr < 1) c->mr = 1;
  /* KC: 384 for a 48 KiB L1 (a KC-deep pair of vectors fills it); 256 for 32 KiB. */
  if (c->kc <= 0) c->kc = (int)(h->l1d_bytes / 128) / 16 * 16;
  if (c->kc < 64) c->kc = 64;
  if (c->kc > 512) c->kc = 512;
  /* MC: the MC x KC block of A takes about an eighth of L2. */
  if (c->mc <= 0) c->mc = (int)(h->l2_bytes / 8 / (c->kc * 4)) / c->mr * c->mr;
  if (c->mc < c->mr) c->mc = c->mr;
  c->mc = (int)round_up(c->mc, c->mr);
  /* NC only bounds the workspace: B panels are streamed from L2/L3 either way. */
  if (c->nc <= 0) c->nc = 4096;
  c->nc = (int)round_up(c->nc, c->nv * h->f32_lanes);
  if (c->unroll <= 0) c->unroll = 4;
}

void kc_matmul_args_rowmajor(int64_t *a, int64_t m, int64_t n, int64_t k) {
  memset(a, 0, KC_MM_NARGS * sizeof *a);
  a[KC_MM_M] = m;
  a[KC_MM_N] = n;
  a[KC_MM_K] = k;
  a[KC_MM_RSA] = k;
  a[KC_MM_CSA] = 1;
  a[KC_MM_RSB] = n;
  a[KC_MM_CSB] = 1;
  a[KC_MM_LDC] = n;
  a[KC_MM_BATCH] = 1;
  a[KC_MM_MTILE] = m;
}

void kc_matmul_args_split(const kc_matmul_kernel *k, int64_t *a, int threads) {
  int64_t m = a[KC_MM_M], mr = k->cfg.mr;
  a[KC_MM_MTILE] = m;
  if (threads <= 1 || m <= 0) return;
  int64_t rows = ((m + threads - 1) / threads + mr - 1) / mr * mr;
  /* Below a few register tiles per thread, B packing is no longer amortized over rows. */
  if (rows >= 4 * mr) a[KC_MM_MTILE] = rows;
}

/* Must agree with the decoding emitted in emit_entry. */
int64_t kc_matmul_units(const kc_matmul_kernel *k, const int64_t *a) {
  int64_t m = a[KC_MM_M], n = a[KC_MM_N], batch = a[KC_MM_BATCH];
  if (m <= 0 || n <= 0 || batch <= 0) return 0;
  int64_t mtile = a[KC_MM_MTILE] > 0 ? a[KC_MM_MTILE] : m;
  return batch * ((m + mtile - 1) / mtile) * ((n + k->unit_n - 1) / k->unit_n);
}

/* ---- micro-kernel ---------------------------------------------------------------------------- */

/* One k step: acc[i][v] += A[i][k] * B[k][v*W..]; packed A holds A[i][k] at ap[k*MR + i]. */
static void ukernel_step(mm_gen *g, LLVMValueRef ap, LLVMValueRef bp, LLVMValueRef k,
                         LLVMValueRef *acc) {
  kc_ir *ir = g->ir;
  LLVMValueRef bv[8];
  LLVMValueRef brow = kc_ir_gepf(ir, bp, kc_ir_mul(ir, k, kc_ir_i64(ir, g->NR)));
  for (int v = 0; v < g->NV; v++)
    bv[v] = kc_ir_load(ir, g->vt, kc_ir_gepf(ir, brow, kc_ir_i64(ir, v * g->W)), g->balign);
  LLVMValueRef acol = kc_ir_gepf(ir, ap, kc_ir_mul(ir, k, kc_ir_i64(ir, g->MR)));
  for (int i = 0; i < g->MR; i++) {
    LLVMValueRef a = kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, acol, kc_ir_i64(ir, i)), 4);
    LLVMValueRef s = kc_ir_splat(ir, a, (unsigned)g->W);
    for (int v = 0; v < g->NV; v++)
      acc[i * g->NV + v] = kc_ir_fmuladd(ir, s, bv[v], acc[i * g->NV + v]);
  }
}

/* Write one row of the tile: C[row][v*W..] (+)= acc; masks NULL for a full row. */
static void store_row(mm_gen *g, LLVMValueRef crow, LLVMValueRef *acc, LLVMValueRef *masks,
                      bool accumulate) {
  kc_ir *ir = g->ir;
  for (int v = 0; v < g->NV; v++) {
    LLVMValueRef p = kc_ir_gepf(ir, crow, kc_ir_i64(ir, v * g->W));
    LLVMValueRef x = acc[v];
    if (masks) {
      if (accumulate)
        x = LLVMBuildFAdd(ir->b, x, kc_ir_masked_load(ir, g->vt, p, 4, masks[v], kc_ir_zero(g->vt)),
                          "");
      kc_ir_masked_store(ir, x, p, 4, masks[v]);
    } else {
      if (accumulate) x = LLVMBuildFAdd(ir->b, x, kc_ir_load(ir, g->vt, p, 4), "");
      kc_ir_store(ir, x, p, 4);
    }
  }
}

/* All rows: full tile when masks is NULL, else rows < mr with column masks. */
static void store_tile(mm_gen *g, LLVMValueRef c, LLVMValueRef ldc, LLVMValueRef mr,
                       LLVMValueRef *acc, LLVMValueRef *masks, bool accumulate) {
  kc_ir *ir = g->ir;
  for (int i = 0; i < g->MR; i++) {
    kc_if row;
    if (masks) kc_if_begin(ir, &row, kc_ir_lt(ir, kc_ir_i64(ir, i), mr));
    LLVMValueRef crow = kc_ir_gepf(ir, c, kc_ir_mul(ir, kc_ir_i64(ir, i), ldc));
    store_row(g, crow, acc + i * g->NV, masks, accumulate);
    if (masks) kc_if_end(ir, &row);
  }
}

/* ukernel(kc, ap, bp, c, ldc, mr, nr, first): one MR x NR tile of C. */
static void emit_ukernel(mm_gen *g) {
  kc_ir *ir = g->ir;
  LLVMTypeRef ps[8] = {ir->t_i64, ir->t_ptr, ir->t_ptr, ir->t_ptr,
                       ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i1};
  LLVMValueRef fn = g->ukernel = helper(g, "ukernel", ps, 8);
  for (unsigned i = 1; i <= 3; i++)
    kc_ir_param_attr(ir, fn, i, "noalias");
  LLVMValueRef kc = LLVMGetParam(fn, 0), ap = LLVMGetParam(fn, 1), bp = LLVMGetParam(fn, 2);
  LLVMValueRef c = LLVMGetParam(fn, 3), ldc = LLVMGetParam(fn, 4);
  LLVMValueRef mr = LLVMGetParam(fn, 5), nr = LLVMGetParam(fn, 6), first = LLVMGetParam(fn, 7);
  int nacc = g->MR * g->NV;
  LLVMValueRef acc[KC_LOOP_MAX_CARRY];

  /* The C tile is touched only after the k loop; start its lines on their way now. */
  for (int i = 0; i < g->MR; i++) {
    LLVMValueRef crow = kc_ir_gepf(ir, c, kc_ir_mul(ir, kc_ir_i64(ir, i), ldc));
    for (int off = 0; off < g->NR; off += 16)
      kc_ir_prefetch(ir, kc_ir_gepf(ir, crow, kc_ir_i64(ir, off)), 1);
  }

  for (int i = 0; i < nacc; i++)
    acc[i] = kc_ir_zero(g->vt);
  LLVMValueRef kmain = LLVMBuildAnd(ir->b, kc, kc_ir_i64(ir, -(int64_t)g->U), "");
  kc_loop l;
  LLVMValueRef k =
      kc_loop_begin(ir, &l, kc_ir_i64(ir, 0), kmain, kc_ir_i64(ir, g->U), (unsigned)nacc, acc);
  memcpy(acc, l.carry, nacc * sizeof *acc);
  for (int u = 0; u < g->U; u++)
    ukernel_step(g, ap, bp, kc_ir_add(ir, k, kc_ir_i64(ir, u)), acc);
  kc_loop_end(ir, &l, acc);
  memcpy(acc, l.carry, nacc * sizeof *acc);

  kc_loop r;
  k = kc_loop_begin(ir, &r, kmain, kc, kc_ir_i64(ir, 1), (unsigned)nacc, acc);
  memcpy(acc, r.carry, nacc * sizeof *acc);
  ukernel_step(g, ap, bp, k, acc);
  kc_loop_end(ir, &r, acc);
  memcpy(acc, r.carry, nacc * sizeof *acc);

  LLVMValueRef full =
      LLVMBuildAnd(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, mr, kc_ir_i64(ir, g->MR), ""),
                   LLVMBuildICmp(ir->b, LLVMIntEQ, nr, kc_ir_i64(ir, g->NR), ""), "");
  kc_if f, ff, ef;
  kc_if_begin(ir, &f, full);
  kc_if_begin(ir, &ff, first);
  store_tile(g, c, ldc, mr, acc, NULL, false);
  kc_if_else(ir, &ff);
  store_tile(g, c, ldc, mr, acc, NULL, true);
  kc_if_end(ir, &ff);
  kc_if_else(ir, &f);
  LLVMValueRef masks[8];
  for (int v = 0; v < g->NV; v++)
    masks[v] = kc_ir_lane_mask(ir, (unsigned)g->W, v * g->W, nr);
  kc_if_begin(ir, &ef, first);
  store_tile(g, c, ldc, mr, acc, masks, false);
  kc_if_else(ir, &ef);
  store_tile(g, c, ldc, mr, acc, masks, true);
  kc_if_end(ir, &ef);
  kc_if_end(ir, &f);
  LLVMBuildRetVoid(ir->b);
}

/* ---- packing ------------------------------------------------------------------------------- */

/* One NR-wide row of a B panel: columns jp.. of B row `row` (an element offset) to dst.
 * rem: columns left from jp, for the last, partial panel (masked, zero-filled); NULL: full. */
static void pack_b_row(mm_gen *g, LLVMValueRef dst, LLVMValueRef b, LLVMValueRef row,
                       LLVMValueRef jp, LLVMValueRef csb, LLVMValueRef rem, bool contiguous) {
  kc_ir *ir = g->ir;
  LLVMValueRef zero = kc_ir_zero(g->vt);
  for (int v = 0; v < g->NV; v++) {
    LLVMValueRef col = kc_ir_add(ir, jp, kc_ir_i64(ir, v * g->W)), x;
    LLVMValueRef mask = rem ? kc_ir_lane_mask(ir, (unsigned)g->W, v * g->W, rem) : NULL;
    if (contiguous) {
      LLVMValueRef p = kc_ir_gepf(ir, b, kc_ir_add(ir, row, col));
      x = mask ? kc_ir_masked_load(ir, g->vt, p, 4, mask, zero) : kc_ir_load(ir, g->vt, p, 4);
    } else {
      if (!mask) mask = LLVMConstAllOnes(LLVMVectorType(ir->t_i1, (unsigned)g->W));
      LLVMValueRef idx =
          kc_ir_iota(ir, (unsigned)g->W, kc_ir_add(ir, row, kc_ir_mul(ir, col, csb)), csb);
      x = kc_ir_masked_gather(ir, g->vt, kc_ir_gepf(ir, b, idx), 4, mask, zero);
    }
    kc_ir_store(ir, x, kc_ir_gepf(ir, dst, kc_ir_i64(ir, v * g->W)), g->balign);
  }
}

/*
 * pack_b(bp, b, rsb, csb, kc, nc): bp[jp*kc + k*NR + j] = B[k][jp + j], 0 past nc.
 * k is the outer loop so B is read along its rows: with k inner, every access would be a
 * row stride apart and defeat the hardware prefetcher. Full panels load without masks.
 */
static void emit_pack_b(mm_gen *g) {
  kc_ir *ir = g->ir;
  LLVMTypeRef ps[6] = {ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64};
  LLVMValueRef fn = g->pack_b = helper(g, "pack_b", ps, 6);
  kc_ir_param_attr(ir, fn, 0, "noalias");
  kc_ir_param_attr(ir, fn, 1, "noalias");
  LLVMValueRef bp = LLVMGetParam(fn, 0), b = LLVMGetParam(fn, 1), rsb = LLVMGetParam(fn, 2);
  LLVMValueRef csb = LLVMGetParam(fn, 3), kc = LLVMGetParam(fn, 4), nc = LLVMGetParam(fn, 5);
  LLVMValueRef nrc = kc_ir_i64(ir, g->NR);
  LLVMValueRef jfull = kc_ir_mul(ir, LLVMBuildSDiv(ir->b, nc, nrc, ""), nrc);

  kc_if unit;
  kc_if_begin(ir, &unit, LLVMBuildICmp(ir->b, LLVMIntEQ, csb, kc_ir_i64(ir, 1), ""));
  for (int pass = 0; pass < 2; pass++) {
    bool contiguous = pass == 0;
    if (!contiguous) kc_if_else(ir, &unit);
    kc_loop lj, lk;
    kc_if tail;
    LLVMValueRef k = kc_loop_begin(ir, &lk, kc_ir_i64(ir, 0), kc, kc_ir_i64(ir, 1), 0, NULL);
    LLVMValueRef row = kc_ir_mul(ir, k, rsb);
    LLVMValueRef dstk = kc_ir_gepf(ir, bp, kc_ir_mul(ir, k, nrc));
    LLVMValueRef jp = kc_loop_begin(ir, &lj, kc_ir_i64(ir, 0), jfull, nrc, 0, NULL);
    pack_b_row(g, kc_ir_gepf(ir, dstk, kc_ir_mul(ir, jp, kc)), b, row, jp, csb, NULL, contiguous);
    kc_loop_end(ir, &lj, NULL);
    kc_if_begin(ir, &tail, kc_ir_lt(ir, jfull, nc));
    pack_b_row(g, kc_ir_gepf(ir, dstk, kc_ir_mul(ir, jfull, kc)), b, row, jfull, csb,
               kc_ir_sub(ir, nc, jfull), contiguous);
    kc_if_end(ir, &tail);
    kc_loop_end(ir, &lk, NULL);
  }
  kc_if_end(ir, &unit);
  LLVMBuildRetVoid(ir->b);
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

/*
 * W columns k0.. of one panel with row-major A: W row loads (rows past `rows` and lanes off
 * kmask read as 0), a transpose, and one MR-lane store per k. Only the first `kleft` k are
 * stored when kleft is given (the tail of kc).
 */
static void pack_a_cols(mm_gen *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef rsa,
                        LLVMValueRef k0, LLVMValueRef *rowmask, LLVMValueRef kmask,
                        LLVMValueRef kleft) {
  kc_ir *ir = g->ir;
  LLVMValueRef r[64];
  for (int j = 0; j < g->W; j++) {
    if (j >= g->MR) {
      r[j] = kc_ir_zero(g->vt);
      continue;
    }
    LLVMValueRef m = kmask ? LLVMBuildAnd(ir->b, rowmask[j], kmask, "") : rowmask[j];
    LLVMValueRef p = kc_ir_gepf(ir, src, kc_ir_add(ir, kc_ir_mul(ir, kc_ir_i64(ir, j), rsa), k0));
    r[j] = kc_ir_masked_load(ir, g->vt, p, 4, m, kc_ir_zero(g->vt));
  }
  transpose(g, r);
  LLVMValueRef smask = kc_ir_lane_mask(ir, (unsigned)g->W, 0, kc_ir_i64(ir, g->MR));
  for (int kk = 0; kk < g->W; kk++) {
    kc_if in;
    if (kleft) kc_if_begin(ir, &in, kc_ir_lt(ir, kc_ir_i64(ir, kk), kleft));
    LLVMValueRef d = kc_ir_mul(ir, kc_ir_add(ir, k0, kc_ir_i64(ir, kk)), kc_ir_i64(ir, g->MR));
    kc_ir_masked_store(ir, r[kk], kc_ir_gepf(ir, dst, d), 4, smask);
    if (kleft) kc_if_end(ir, &in);
  }
}

/*
 * pack_a(ap, a, rsa, csa, mc, kc): ap[ip*kc + k*MR + i] = A[ip + i][k], 0 past mc, so each
 * k of a panel is MR contiguous floats the micro-kernel broadcasts from. Row-major A (csa 1)
 * is transposed W x W in registers; column-major A (rsa 1) is a copy of MR floats per k;
 * anything else goes element by element.
 */
static void emit_pack_a(mm_gen *g) {
  kc_ir *ir = g->ir;
  LLVMTypeRef ps[6] = {ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64};
  LLVMValueRef fn = g->pack_a = helper(g, "pack_a", ps, 6);
  kc_ir_param_attr(ir, fn, 0, "noalias");
  kc_ir_param_attr(ir, fn, 1, "noalias");
  LLVMValueRef ap = LLVMGetParam(fn, 0), a = LLVMGetParam(fn, 1), rsa = LLVMGetParam(fn, 2);
  LLVMValueRef csa = LLVMGetParam(fn, 3), mc = LLVMGetParam(fn, 4), kc = LLVMGetParam(fn, 5);
  LLVMValueRef mrc = kc_ir_i64(ir, g->MR), one = kc_ir_i64(ir, 1), zero = kc_ir_zero(g->vt);
  bool vec = g->MR <= g->W;

  kc_loop li, lk;
  LLVMValueRef ip = kc_loop_begin(ir, &li, kc_ir_i64(ir, 0), mc, mrc, 0, NULL);
  LLVMValueRef rows = kc_ir_min(ir, mrc, kc_ir_sub(ir, mc, ip));
  LLVMValueRef dst = kc_ir_gepf(ir, ap, kc_ir_mul(ir, ip, kc));
  LLVMValueRef src = kc_ir_gepf(ir, a, kc_ir_mul(ir, ip, rsa));
  kc_if rowmajor, colmajor;
  if (vec) {
    kc_if_begin(ir, &rowmajor, LLVMBuildICmp(ir->b, LLVMIntEQ, csa, one, ""));
    LLVMValueRef rowmask[64];
    for (int j = 0; j < g->MR; j++)
      rowmask[j] = kc_ir_splat(ir, kc_ir_lt(ir, kc_ir_i64(ir, j), rows), (unsigned)g->W);
    LLVMValueRef kfull = LLVMBuildAnd(ir->b, kc, kc_ir_i64(ir, -(int64_t)g->W), "");
    LLVMValueRef k0 = kc_loop_begin(ir, &lk, kc_ir_i64(ir, 0), kfull, kc_ir_i64(ir, g->W), 0, NULL);
    pack_a_cols(g, dst, src, rsa, k0, rowmask, NULL, NULL);
    kc_loop_end(ir, &lk, NULL);
    kc_if tail;
    kc_if_begin(ir, &tail, kc_ir_lt(ir, kfull, kc));
    LLVMValueRef kleft = kc_ir_sub(ir, kc, kfull);
    pack_a_cols(g, dst, src, rsa, kfull, rowmask, kc_ir_lane_mask(ir, (unsigned)g->W, 0, kleft),
                kleft);
    kc_if_end(ir, &tail);
    kc_if_else(ir, &rowmajor);

    kc_if_begin(ir, &colmajor, LLVMBuildICmp(ir->b, LLVMIntEQ, rsa, one, ""));
    LLVMValueRef lmask = kc_ir_lane_mask(ir, (unsigned)g->W, 0, rows);
    LLVMValueRef smask = kc_ir_lane_mask(ir, (unsigned)g->W, 0, mrc);
    LLVMValueRef k = kc_loop_begin(ir, &lk, kc_ir_i64(ir, 0), kc, one, 0, NULL);
    LLVMValueRef x =
        kc_ir_masked_load(ir, g->vt, kc_ir_gepf(ir, src, kc_ir_mul(ir, k, csa)), 4, lmask, zero);
    kc_ir_masked_store(ir, x, kc_ir_gepf(ir, dst, kc_ir_mul(ir, k, mrc)), 4, smask);
    kc_loop_end(ir, &lk, NULL);
    kc_if_else(ir, &colmajor);
  }
  for (int i = 0; i < g->MR; i++) {
    kc_if have;
    kc_if_begin(ir, &have, kc_ir_lt(ir, kc_ir_i64(ir, i), rows));
    LLVMValueRef srow = kc_ir_gepf(ir, src, kc_ir_mul(ir, kc_ir_i64(ir, i), rsa));
    LLVMValueRef k = kc_loop_begin(ir, &lk, kc_ir_i64(ir, 0), kc, one, 0, NULL);
    LLVMValueRef x = kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, srow, kc_ir_mul(ir, k, csa)), 4);
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

/* ---- blocking ------------------------------------------------------------------------------ */

/* Split n into cdiv(n, max) near-equal blocks, each rounded up to a multiple of mult. */
static LLVMValueRef balanced(kc_ir *ir, LLVMValueRef n, int64_t max, int64_t mult) {
  LLVMValueRef nb = kc_ir_max(ir, kc_ir_cdiv(ir, n, kc_ir_i64(ir, max)), kc_ir_i64(ir, 1));
  return kc_ir_roundup(ir, kc_ir_cdiv(ir, n, nb), mult);
}

/* block(a, b, c, ap, bp, m, n, k, rsa, csa, rsb, csb, ldc): one C[m x n] = A @ B. */
static void emit_block(mm_gen *g) {
  kc_ir *ir = g->ir;
  LLVMTypeRef ps[13] = {ir->t_ptr, ir->t_ptr, ir->t_ptr, ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64,
                        ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64};
  LLVMValueRef fn = g->block = helper(g, "block", ps, 13);
  LLVMValueRef p[13];
  for (unsigned i = 0; i < 13; i++)
    p[i] = LLVMGetParam(fn, i);
  LLVMValueRef a = p[0], b = p[1], c = p[2], ap = p[3], bp = p[4], m = p[5], n = p[6], k = p[7];
  LLVMValueRef rsa = p[8], csa = p[9], rsb = p[10], csb = p[11], ldc = p[12];
  LLVMValueRef one = kc_ir_i64(ir, 1);

  LLVMValueRef ncb = balanced(ir, n, g->NC, g->NR);
  LLVMValueRef kcb = balanced(ir, k, g->KC, 1);
  LLVMValueRef mcb = balanced(ir, m, g->MC, g->MR);
  /* K = 0 still makes one pass so C is zeroed. */
  LLVMValueRef nk = kc_ir_max(ir, kc_ir_cdiv(ir, k, kc_ir_max(ir, kcb, one)), one);

  kc_loop ljc, lpc, lic, ljr, lir;
  LLVMValueRef jc = kc_loop_begin(ir, &ljc, kc_ir_i64(ir, 0), n, ncb, 0, NULL);
  LLVMValueRef nc = kc_ir_min(ir, ncb, kc_ir_sub(ir, n, jc));
  LLVMValueRef pi = kc_loop_begin(ir, &lpc, kc_ir_i64(ir, 0), nk, one, 0, NULL);
  LLVMValueRef pc = kc_ir_mul(ir, pi, kcb);
  LLVMValueRef kc = kc_ir_min(ir, kcb, kc_ir_sub(ir, k, pc));
  LLVMValueRef first = LLVMBuildICmp(ir->b, LLVMIntEQ, pi, kc_ir_i64(ir, 0), "");
  LLVMValueRef bsrc =
      kc_ir_gepf(ir, b, kc_ir_add(ir, kc_ir_mul(ir, pc, rsb), kc_ir_mul(ir, jc, csb)));
  LLVMValueRef args_b[6] = {bp, bsrc, rsb, csb, kc, nc};
  LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(g->pack_b), g->pack_b, args_b, 6, "");

  LLVMValueRef ic = kc_loop_begin(ir, &lic, kc_ir_i64(ir, 0), m, mcb, 0, NULL);
  LLVMValueRef mc = kc_ir_min(ir, mcb, kc_ir_sub(ir, m, ic));
  LLVMValueRef asrc =
      kc_ir_gepf(ir, a, kc_ir_add(ir, kc_ir_mul(ir, ic, rsa), kc_ir_mul(ir, pc, csa)));
  LLVMValueRef args_a[6] = {ap, asrc, rsa, csa, mc, kc};
  LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(g->pack_a), g->pack_a, args_a, 6, "");

  LLVMValueRef cblk = kc_ir_gepf(ir, c, kc_ir_add(ir, kc_ir_mul(ir, ic, ldc), jc));
  LLVMValueRef jr = kc_loop_begin(ir, &ljr, kc_ir_i64(ir, 0), nc, kc_ir_i64(ir, g->NR), 0, NULL);
  LLVMValueRef nr = kc_ir_min(ir, kc_ir_i64(ir, g->NR), kc_ir_sub(ir, nc, jr));
  LLVMValueRef bpan = kc_ir_gepf(ir, bp, kc_ir_mul(ir, jr, kc));
  LLVMValueRef ir_ = kc_loop_begin(ir, &lir, kc_ir_i64(ir, 0), mc, kc_ir_i64(ir, g->MR), 0, NULL);
  LLVMValueRef mr = kc_ir_min(ir, kc_ir_i64(ir, g->MR), kc_ir_sub(ir, mc, ir_));
  LLVMValueRef apan = kc_ir_gepf(ir, ap, kc_ir_mul(ir, ir_, kc));
  LLVMValueRef ctile = kc_ir_gepf(ir, cblk, kc_ir_add(ir, kc_ir_mul(ir, ir_, ldc), jr));
  LLVMValueRef args_u[8] = {kc, apan, bpan, ctile, ldc, mr, nr, first};
  LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(g->ukernel), g->ukernel, args_u, 8, "");
  kc_loop_end(ir, &lir, NULL);
  kc_loop_end(ir, &ljr, NULL);
  kc_loop_end(ir, &lic, NULL);
  kc_loop_end(ir, &lpc, NULL);
  kc_loop_end(ir, &ljc, NULL);
  LLVMBuildRetVoid(ir->b);
}

/* The kernel (kc_matmul_fn): walk work units [begin, end), one block call per run of panels. */
static LLVMValueRef emit_entry(mm_gen *g, bool internal) {
  kc_ir *ir = g->ir;
  LLVMTypeRef ps[7] = {ir->t_ptr, ir->t_ptr, ir->t_ptr, ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64};
  LLVMValueRef fn = kc_ir_func(ir, g->name, ir->t_void, ps, 7, internal);
  LLVMValueRef a = LLVMGetParam(fn, 0), b = LLVMGetParam(fn, 1), c = LLVMGetParam(fn, 2);
  LLVMValueRef ws = LLVMGetParam(fn, 3), args = LLVMGetParam(fn, 4);
  LLVMValueRef begin = LLVMGetParam(fn, 5), end = LLVMGetParam(fn, 6);
  LLVMValueRef v[KC_MM_NARGS];
  for (int i = 0; i < KC_MM_NARGS; i++)
    v[i] = kc_ir_load(ir, ir->t_i64, kc_ir_gepi64(ir, args, kc_ir_i64(ir, i)), 8);
  LLVMValueRef m = v[KC_MM_M], n = v[KC_MM_N], one = kc_ir_i64(ir, 1);
  LLVMValueRef mtile = LLVMBuildSelect(ir->b, kc_ir_lt(ir, kc_ir_i64(ir, 0), v[KC_MM_MTILE]),
                                       v[KC_MM_MTILE], kc_ir_max(ir, m, one), "");
  LLVMValueRef nn = kc_ir_cdiv(ir, n, kc_ir_i64(ir, g->NR));
  LLVMValueRef per_b = kc_ir_mul(ir, kc_ir_cdiv(ir, m, mtile), nn);
  kc_matmul_cfg cfg = {.mr = g->MR, .kc = g->KC, .mc = g->MC};
  LLVMValueRef ap = ws, bp = kc_ir_gepf(ir, ws, kc_ir_i64(ir, ap_floats(&cfg)));

  kc_loop lu;
  LLVMValueRef u = kc_loop_begin(ir, &lu, begin, end, NULL, 0, NULL);
  LLVMValueRef bi = LLVMBuildSDiv(ir->b, u, per_b, "");
  LLVMValueRef r = LLVMBuildSRem(ir->b, u, per_b, "");
  LLVMValueRef mi = LLVMBuildSDiv(ir->b, r, nn, "");
  LLVMValueRef nj = LLVMBuildSRem(ir->b, r, nn, "");
  LLVMValueRef run = kc_ir_min(ir, kc_ir_sub(ir, nn, nj), kc_ir_sub(ir, end, u));
  LLVMValueRef m0 = kc_ir_mul(ir, mi, mtile);
  LLVMValueRef m1 = kc_ir_min(ir, m, kc_ir_add(ir, m0, mtile));
  LLVMValueRef n0 = kc_ir_mul(ir, nj, kc_ir_i64(ir, g->NR));
  LLVMValueRef n1 = kc_ir_min(ir, n, kc_ir_mul(ir, kc_ir_add(ir, nj, run), kc_ir_i64(ir, g->NR)));
  LLVMValueRef aoff =
      kc_ir_add(ir, kc_ir_mul(ir, bi, v[KC_MM_BSA]), kc_ir_mul(ir, m0, v[KC_MM_RSA]));
  LLVMValueRef boff =
      kc_ir_add(ir, kc_ir_mul(ir, bi, v[KC_MM_BSB]), kc_ir_mul(ir, n0, v[KC_MM_CSB]));
  LLVMValueRef coff = kc_ir_add(ir, kc_ir_mul(ir, bi, v[KC_MM_BSC]),
                                kc_ir_add(ir, kc_ir_mul(ir, m0, v[KC_MM_LDC]), n0));
  LLVMValueRef bargs[13] = {kc_ir_gepf(ir, a, aoff),
                            kc_ir_gepf(ir, b, boff),
                            kc_ir_gepf(ir, c, coff),
                            ap,
                            bp,
                            kc_ir_sub(ir, m1, m0),
                            kc_ir_sub(ir, n1, n0),
                            v[KC_MM_K],
                            v[KC_MM_RSA],
                            v[KC_MM_CSA],
                            v[KC_MM_RSB],
                            v[KC_MM_CSB],
                            v[KC_MM_LDC]};
  LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(g->block), g->block, bargs, 13, "");
  kc_loop_end_next(ir, &lu, kc_ir_add(ir, u, run), NULL);
  LLVMBuildRetVoid(ir->b);
  return fn;
}

void kc_matmul_describe(const kc_cpu *cpu, const kc_matmul_cfg *cfg, kc_matmul_kernel *out) {
  kc_matmul_cfg c = {0};
  if (cfg) c = *cfg;
  kc_matmul_cfg_resolve(cpu, &c);
  while (c.unroll & (c.unroll - 1)) /* as kc_matmul_emit: a power of two */
    c.unroll &= c.unroll - 1;
  memset(out, 0, sizeof *out);
  out->cfg = c;
  out->unit_n = (int64_t)c.nv * kc_cpu_host(cpu)->f32_lanes;
  out->ws_floats = round_up(ap_floats(&c) + round_up(c.nc, out->unit_n) * c.kc, 16);
}

kc_status kc_matmul_emit(kc_cpu *cpu, kc_ir *ir, const char *name, const kc_matmul_cfg *cfg,
                         bool internal, kc_matmul_kernel *out, LLVMValueRef *fn) {
  memset(out, 0, sizeof *out);
  kc_matmul_cfg c = {0};
  if (cfg) c = *cfg;
  kc_matmul_cfg_resolve(cpu, &c);
  if (c.nv > 8 || c.mr * c.nv > KC_LOOP_MAX_CARRY)
    return kc_errorf(cpu->ctx, KC_ERR_INVALID_ARG, "matmul: register tile %dx%d vectors is too big",
                     c.mr, c.nv);
  mm_gen g = {.ir = ir,
              .name = name,
              .W = kc_cpu_host(cpu)->f32_lanes,
              .MR = c.mr,
              .NV = c.nv,
              .KC = c.kc,
              .MC = c.mc,
              .NC = c.nc,
              .U = c.unroll};
  g.NR = g.NV * g.W;
  g.balign = 64;
  while ((g.NR * 4) % g.balign || (g.W * 4) % g.balign)
    g.balign /= 2;
  /* The k loop is unrolled by masking kc with -U, so U must be a power of two. */
  while (g.U & (g.U - 1))
    g.U &= g.U - 1;
  c.unroll = g.U;

  g.vt = kc_ir_vf32(ir, (unsigned)g.W);
  emit_ukernel(&g);
  emit_pack_a(&g);
  emit_pack_b(&g);
  emit_block(&g);
  *fn = emit_entry(&g, internal);
  kc_matmul_describe(cpu, cfg, out);
  return KC_OK;
}

kc_status kc_cpu_matmul(kc_cpu *cpu, const char *name, const kc_matmul_cfg *cfg,
                        kc_matmul_kernel *out) {
  LLVMModuleRef mod = kc_cpu_module_new(cpu, name);
  kc_ir ir;
  LLVMValueRef fn;
  kc_ir_init(&ir, mod);
  kc_status s = kc_matmul_emit(cpu, &ir, name, cfg, false, out, &fn);
  kc_ir_dispose(&ir);
  if (s != KC_OK) {
    LLVMDisposeModule(mod);
    return s;
  }
  if ((s = kc_cpu_module_add(cpu, mod, KC_CPU_MOD_HANDVEC)) != KC_OK) return s;
  void *addr;
  if ((s = kc_cpu_lookup(cpu, name, &addr)) != KC_OK) return s;
  out->fn = (kc_matmul_fn)(uintptr_t)addr;
  return KC_OK;
}
