/*
 * codegen/cpu/matmul.c - the f32 matmul emitter: a blocked, packed GEMM in the style of
 * Goto/BLIS, generated as LLVM IR for the host's vector width.
 *
 * Structure of the generated module (all but the entry point internal):
 *   entry(a, b, c, ws, args, begin, end)  decodes work units into (batch, row tile, columns);
 *                    a product of at most small_m rows (a decode step's) goes to small()
 *                    (matmul_small.c: B streamed as stored, no packing), others to block()
 *   block(...)       jc (NC columns) -> pc (KC deep) -> ic (MC rows, L2) -> pack A ->
 *                    jr (NR; on the first ic block, pack this B panel) -> ir (MR) -> ukernel
 *                    [-> epilogue hook on the tile, after the last K slice]
 *   pack_a, pack_b   matmul_pack.c
 *   ukernel          MR x NR register tile: MR*NV vector accumulators live across the k loop;
 *                    per k, NV vector loads of packed B, MR broadcasts of packed A, MR*NV
 *                    llvm.fmuladd; then C = acc (first K slice) or C += acc, masked at edges.
 *
 * B panels are packed lazily, each right before the first row block uses it, instead of a
 * whole KC x NC block (6 MiB) up front: the micro-kernel's first pass over a panel then reads
 * it from L2, not back from L3. (Measured: within noise of packing the block first, single
 * thread, at 128 x {768, 3072, 50257} and 1024^3; later passes hit L2 either way.)
 *
 * Epilogue hook (KC_MM_EMIT_EP_HOOK, for graph lowering): args[KC_MM_NARGS] is a function
 * ep(ctx, c, ldc, row, col, mr, nr) and args[KC_MM_NARGS + 1] its ctx; after the last K slice
 * of each tile the core calls it on the tile it just stored (still in L1), with the tile's
 * row in the core's row space (batch * M + i) and its column. NULL: no call.
 *
 * Invariants:
 *   - Sizes and strides are runtime values (one kernel serves every batch size); only the
 *     blocking (MR, NV, KC, MC, NC) is baked in.
 *   - ws holds the packed A block at ws[0] and the packed B block after it; both start on
 *     64-byte boundaries, and (for 16 lanes) so does every NR-wide B row, so B loads are
 *     aligned.
 *   - Blocks are balanced (K = 1030 with KC 384 is cut 344+344+342, not 384+384+262) so no tiny
 *     last slice pays a full store pass.
 *   - Packed panels are zero-padded, so the micro-kernel always computes full tiles and only
 *     the stores are masked.
 *   - Each element of C sums its K slices in the same order whatever the split, so any split
 *     gives bitwise the same C.
 */
#include "matmul.h"

#include <stdio.h>
#include <string.h>

static int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* Names stay unique when many kernels share a module. */
LLVMValueRef mm_helper(mm_gen *g, const char *suffix, LLVMTypeRef *params, unsigned n) {
  char full[256];
  snprintf(full, sizeof full, "%s_%s", g->name, suffix);
  return kc_ir_func(g->ir, full, g->ir->t_void, params, n, true);
}

/* Floats of the packed A block, rounded so the B block after it starts 64-byte aligned. */
static int64_t ap_floats(const kc_matmul_cfg *c) {
  return round_up(round_up(c->mc, c->mr) * c->kc, 16);
}

/*
 * Products of at most this many rows stream B unpacked (matmul_small.c). Measured on the Zen 4
 * host, one thread, B cold, 3072 x 768: 8 rows ran at 49-66 GFLOP/s there against 20-24 packed,
 * 12 rows at 45-56 against 30-38 (and no better on two threads), 16 rows fell behind the packed
 * core (12 against 37: 16 accumulators and 16 broadcasts per k), hence the cap of 12.
 */
enum { SMALL_M_DEFAULT = 8 };

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
  if (c->small_m == 0) c->small_m = h->vec_regs >= 32 ? SMALL_M_DEFAULT : SMALL_M_DEFAULT / 2;
  if (c->small_m > MM_SMALL_MAX) c->small_m = MM_SMALL_MAX;
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

/*
 * How threads share one product (MTILE): row tiles, where each thread packs all of B and its
 * rows of A, or column panels, where each packs its columns of B and all of A (again per NC
 * columns). The choice minimizes one thread's multiply-adds plus SPLIT_PACK_COST per packed
 * element, both divided by K, which every term shares:
 *   rows: rt * nw + P (nw + rt * ceil(n / NC))        rt = its rows, nw = n rounded to NR
 *   cols: mw * ct + P (ct + mw * ceil(ct / NC))       ct = its columns, mw = m rounded to MR
 * So a 128-row product splits by columns (each thread packs half of B, not all of it), a
 * 1024-row one by rows or columns alike. kc_matmul_args_split and kc_matmul_emit_mtile are the
 * same model, in C and in IR.
 * P: a packed element is a load and a store, often of B from L3 or memory, where a core does
 * 32 multiply-adds a cycle.
 */
enum { SPLIT_PACK_COST = 16 };

static int64_t cdiv64(int64_t a, int64_t b) { return (a + b - 1) / b; }

void kc_matmul_args_split(const kc_matmul_kernel *k, int64_t *a, int threads) {
  int64_t m = a[KC_MM_M], n = a[KC_MM_N], t = threads, mr = k->cfg.mr, nr = k->unit_n;
  int64_t nc = k->cfg.nc, p = SPLIT_PACK_COST;
  a[KC_MM_MTILE] = m;
  if (t <= 1 || m <= 0 || n <= 0 || m <= k->cfg.small_m) return;
  int64_t rt = round_up(cdiv64(m, t), mr), nw = round_up(n, nr);
  int64_t ct = cdiv64(cdiv64(n, nr), t) * nr, mw = round_up(m, mr);
  int64_t rows = rt * nw + p * (nw + rt * cdiv64(n, nc));
  int64_t cols = mw * ct + p * (ct + mw * cdiv64(ct, nc));
  if (rows < cols) a[KC_MM_MTILE] = rt;
}

LLVMValueRef kc_matmul_emit_mtile(kc_ir *ir, const kc_matmul_kernel *k, LLVMValueRef m,
                                  LLVMValueRef n, LLVMValueRef t) {
  LLVMValueRef one = kc_ir_i64(ir, 1), nr = kc_ir_i64(ir, k->unit_n);
  LLVMValueRef nc = kc_ir_i64(ir, k->cfg.nc), p = kc_ir_i64(ir, SPLIT_PACK_COST);
  LLVMValueRef whole = kc_ir_max(ir, m, one);
  t = kc_ir_max(ir, t, one);
  LLVMValueRef rt = kc_ir_roundup(ir, kc_ir_cdiv(ir, m, t), k->cfg.mr);
  LLVMValueRef nw = kc_ir_roundup(ir, n, k->unit_n);
  LLVMValueRef ct = kc_ir_mul(ir, kc_ir_cdiv(ir, kc_ir_cdiv(ir, n, nr), t), nr);
  LLVMValueRef mw = kc_ir_roundup(ir, m, k->cfg.mr);
  LLVMValueRef rows =
      kc_ir_add(ir, kc_ir_mul(ir, rt, nw),
                kc_ir_mul(ir, p, kc_ir_add(ir, nw, kc_ir_mul(ir, rt, kc_ir_cdiv(ir, n, nc)))));
  LLVMValueRef cols =
      kc_ir_add(ir, kc_ir_mul(ir, mw, ct),
                kc_ir_mul(ir, p, kc_ir_add(ir, ct, kc_ir_mul(ir, mw, kc_ir_cdiv(ir, ct, nc)))));
  LLVMValueRef ok = LLVMBuildAnd(ir->b, kc_ir_lt(ir, one, t), kc_ir_lt(ir, rows, cols), "");
  ok = LLVMBuildAnd(ir->b, ok, kc_ir_lt(ir, kc_ir_i64(ir, 0), n), "");
  /* the small-M path splits by columns and wants the whole product in one row tile */
  if (k->cfg.small_m > 0)
    ok = LLVMBuildAnd(ir->b, ok, kc_ir_lt(ir, kc_ir_i64(ir, k->cfg.small_m), m), "");
  return LLVMBuildSelect(ir->b, ok, rt, whole, "");
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
  LLVMValueRef fn = g->ukernel = mm_helper(g, "ukernel", ps, 8);
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

/* ---- blocking ------------------------------------------------------------------------------ */

/* Split n into cdiv(n, max) near-equal blocks, each rounded up to a multiple of mult. */
static LLVMValueRef balanced(kc_ir *ir, LLVMValueRef n, int64_t max, int64_t mult) {
  LLVMValueRef nb = kc_ir_max(ir, kc_ir_cdiv(ir, n, kc_ir_i64(ir, max)), kc_ir_i64(ir, 1));
  return kc_ir_roundup(ir, kc_ir_cdiv(ir, n, nb), mult);
}

LLVMTypeRef mm_ep_type(kc_ir *ir) {
  LLVMTypeRef ps[7] = {ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64};
  return LLVMFunctionType(ir->t_void, ps, 7, 0);
}

enum {
  BLK_A,
  BLK_B,
  BLK_C,
  BLK_AP,
  BLK_BP,
  BLK_M,
  BLK_N,
  BLK_K,
  BLK_RSA,
  BLK_CSA,
  BLK_RSB,
  BLK_CSB,
  BLK_LDC,
  BLK_EP,
  BLK_CTX,
  BLK_ROW0,
  BLK_COL0,
  BLK_NPARAMS
};

/*
 * block(a, b, c, ap, bp, m, n, k, rsa, csa, rsb, csb, ldc, ep, ctx, row0, col0): one
 * C[m x n] = A @ B; row0 / col0 place the block in the core's row and column space for the
 * epilogue hook (ep NULL: none).
 */
static void emit_block(mm_gen *g) {
  kc_ir *ir = g->ir;
  LLVMTypeRef ps[BLK_NPARAMS];
  for (int i = 0; i < BLK_NPARAMS; i++)
    ps[i] = i <= BLK_BP || i == BLK_EP || i == BLK_CTX ? ir->t_ptr : ir->t_i64;
  LLVMValueRef fn = g->block = mm_helper(g, "block", ps, BLK_NPARAMS);
  LLVMValueRef p[BLK_NPARAMS];
  for (unsigned i = 0; i < BLK_NPARAMS; i++)
    p[i] = LLVMGetParam(fn, i);
  LLVMValueRef m = p[BLK_M], n = p[BLK_N], k = p[BLK_K], ldc = p[BLK_LDC];
  LLVMValueRef rsa = p[BLK_RSA], csa = p[BLK_CSA], rsb = p[BLK_RSB], csb = p[BLK_CSB];
  LLVMValueRef one = kc_ir_i64(ir, 1), zero = kc_ir_i64(ir, 0);

  LLVMValueRef ncb = balanced(ir, n, g->NC, g->NR);
  LLVMValueRef kcb = balanced(ir, k, g->KC, 1);
  LLVMValueRef mcb = balanced(ir, m, g->MC, g->MR);
  /* K = 0 still makes one pass so C is zeroed. */
  LLVMValueRef nk = kc_ir_max(ir, kc_ir_cdiv(ir, k, kc_ir_max(ir, kcb, one)), one);

  kc_loop ljc, lpc, lic, ljr, lir;
  LLVMValueRef jc = kc_loop_begin(ir, &ljc, zero, n, ncb, 0, NULL);
  LLVMValueRef nc = kc_ir_min(ir, ncb, kc_ir_sub(ir, n, jc));
  LLVMValueRef pi = kc_loop_begin(ir, &lpc, zero, nk, one, 0, NULL);
  LLVMValueRef pc = kc_ir_mul(ir, pi, kcb);
  LLVMValueRef kc = kc_ir_min(ir, kcb, kc_ir_sub(ir, k, pc));
  LLVMValueRef first = LLVMBuildICmp(ir->b, LLVMIntEQ, pi, zero, "");
  LLVMValueRef last = LLVMBuildICmp(ir->b, LLVMIntEQ, pi, kc_ir_sub(ir, nk, one), "");
  LLVMValueRef bsrc =
      mm_src_gep(g, p[BLK_B], kc_ir_add(ir, kc_ir_mul(ir, pc, rsb), kc_ir_mul(ir, jc, csb)));

  LLVMValueRef ic = kc_loop_begin(ir, &lic, zero, m, mcb, 0, NULL);
  LLVMValueRef mc = kc_ir_min(ir, mcb, kc_ir_sub(ir, m, ic));
  LLVMValueRef asrc =
      mm_src_gep(g, p[BLK_A], kc_ir_add(ir, kc_ir_mul(ir, ic, rsa), kc_ir_mul(ir, pc, csa)));
  LLVMValueRef args_a[6] = {p[BLK_AP], asrc, rsa, csa, mc, kc};
  LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(g->pack_a), g->pack_a, args_a, 6, "");

  LLVMValueRef cblk = kc_ir_gepf(ir, p[BLK_C], kc_ir_add(ir, kc_ir_mul(ir, ic, ldc), jc));
  LLVMValueRef jr = kc_loop_begin(ir, &ljr, zero, nc, kc_ir_i64(ir, g->NR), 0, NULL);
  LLVMValueRef nr = kc_ir_min(ir, kc_ir_i64(ir, g->NR), kc_ir_sub(ir, nc, jr));
  LLVMValueRef bpan = kc_ir_gepf(ir, p[BLK_BP], kc_ir_mul(ir, jr, kc));
  kc_if pack;
  kc_if_begin(ir, &pack, LLVMBuildICmp(ir->b, LLVMIntEQ, ic, zero, ""));
  LLVMValueRef args_b[6] = {bpan, mm_src_gep(g, bsrc, kc_ir_mul(ir, jr, csb)), rsb, csb, kc, nr};
  LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(g->pack_b), g->pack_b, args_b, 6, "");
  kc_if_end(ir, &pack);
  LLVMValueRef ir_ = kc_loop_begin(ir, &lir, zero, mc, kc_ir_i64(ir, g->MR), 0, NULL);
  LLVMValueRef mr = kc_ir_min(ir, kc_ir_i64(ir, g->MR), kc_ir_sub(ir, mc, ir_));
  LLVMValueRef apan = kc_ir_gepf(ir, p[BLK_AP], kc_ir_mul(ir, ir_, kc));
  LLVMValueRef ctile = kc_ir_gepf(ir, cblk, kc_ir_add(ir, kc_ir_mul(ir, ir_, ldc), jr));
  LLVMValueRef args_u[8] = {kc, apan, bpan, ctile, ldc, mr, nr, first};
  LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(g->ukernel), g->ukernel, args_u, 8, "");
  if (g->hook) {
    kc_if ep;
    LLVMValueRef have = LLVMBuildIsNotNull(ir->b, p[BLK_EP], "");
    kc_if_begin(ir, &ep, LLVMBuildAnd(ir->b, last, have, ""));
    LLVMValueRef row = kc_ir_add(ir, p[BLK_ROW0], kc_ir_add(ir, ic, ir_));
    LLVMValueRef col = kc_ir_add(ir, p[BLK_COL0], kc_ir_add(ir, jc, jr));
    LLVMValueRef args_e[7] = {p[BLK_CTX], ctile, ldc, row, col, mr, nr};
    LLVMBuildCall2(ir->b, mm_ep_type(ir), p[BLK_EP], args_e, 7, "");
    kc_if_end(ir, &ep);
  }
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
  LLVMValueRef ep = LLVMConstNull(ir->t_ptr), ctx = ep;
  if (g->hook) {
    ep = kc_ir_load(ir, ir->t_ptr, kc_ir_gepi64(ir, args, kc_ir_i64(ir, KC_MM_NARGS)), 8);
    ctx = kc_ir_load(ir, ir->t_ptr, kc_ir_gepi64(ir, args, kc_ir_i64(ir, KC_MM_NARGS + 1)), 8);
  }
  LLVMValueRef m = v[KC_MM_M], n = v[KC_MM_N], one = kc_ir_i64(ir, 1);
  LLVMValueRef mtile = LLVMBuildSelect(ir->b, kc_ir_lt(ir, kc_ir_i64(ir, 0), v[KC_MM_MTILE]),
                                       v[KC_MM_MTILE], kc_ir_max(ir, m, one), "");
  LLVMValueRef nn = kc_ir_cdiv(ir, n, kc_ir_i64(ir, g->NR));
  LLVMValueRef per_b = kc_ir_mul(ir, kc_ir_cdiv(ir, m, mtile), nn);
  kc_matmul_cfg cfg = {.mr = g->MR, .kc = g->KC, .mc = g->MC};
  LLVMValueRef ap = ws, bp = kc_ir_gepf(ir, ws, kc_ir_i64(ir, ap_floats(&cfg)));
  /* decided on the product's rows, not a row tile's, so every split takes the same path */
  LLVMValueRef small = mm_small_ok(g, m, v[KC_MM_K], v[KC_MM_CSA], v[KC_MM_RSB], v[KC_MM_CSB]);

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
  LLVMValueRef bargs[BLK_NPARAMS] = {
      [BLK_A] = mm_src_gep(g, a, aoff),
      [BLK_B] = mm_src_gep(g, b, boff),
      [BLK_C] = kc_ir_gepf(ir, c, coff),
      [BLK_AP] = ap,
      [BLK_BP] = bp,
      [BLK_M] = kc_ir_sub(ir, m1, m0),
      [BLK_N] = kc_ir_sub(ir, n1, n0),
      [BLK_K] = v[KC_MM_K],
      [BLK_RSA] = v[KC_MM_RSA],
      [BLK_CSA] = v[KC_MM_CSA],
      [BLK_RSB] = v[KC_MM_RSB],
      [BLK_CSB] = v[KC_MM_CSB],
      [BLK_LDC] = v[KC_MM_LDC],
      [BLK_EP] = ep,
      [BLK_CTX] = ctx,
      [BLK_ROW0] = kc_ir_add(ir, kc_ir_mul(ir, bi, m), m0),
      [BLK_COL0] = n0,
  };
  kc_if path;
  kc_if_begin(ir, &path, small);
  if (g->small) {
    LLVMValueRef sargs[BLK_NPARAMS - 2];
    int ns = 0;
    for (int i = 0; i < BLK_NPARAMS; i++)
      if (i != BLK_AP && i != BLK_BP) sargs[ns++] = bargs[i];
    LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(g->small), g->small, sargs, (unsigned)ns, "");
  }
  kc_if_else(ir, &path);
  LLVMBuildCall2(ir->b, LLVMGlobalGetValueType(g->block), g->block, bargs, BLK_NPARAMS, "");
  kc_if_end(ir, &path);
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
                         unsigned flags, kc_matmul_kernel *out, LLVMValueRef *fn) {
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
              .U = c.unroll,
              .VR = kc_cpu_host(cpu)->vec_regs,
              .MS = c.small_m > 0 ? c.small_m : 0,
              .hook = (flags & KC_MM_EMIT_EP_HOOK) != 0,
              .st = ir->t_f32,
              .esz = 4};
  if (flags & KC_MM_EMIT_F16) g.st = LLVMHalfTypeInContext(ir->ctx), g.esz = 2;
  if (flags & KC_MM_EMIT_BF16) g.st = LLVMBFloatTypeInContext(ir->ctx), g.esz = 2;
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
  mm_emit_pack_a(&g);
  mm_emit_pack_b(&g);
  emit_block(&g);
  if (g.MS > 0) mm_emit_small(&g);
  *fn = emit_entry(&g, (flags & KC_MM_EMIT_INTERNAL) != 0);
  kc_matmul_describe(cpu, cfg, out);
  return KC_OK;
}

kc_status kc_cpu_matmul(kc_cpu *cpu, const char *name, const kc_matmul_cfg *cfg,
                        kc_matmul_kernel *out) {
  LLVMModuleRef mod = kc_cpu_module_new(cpu, name);
  kc_ir ir;
  LLVMValueRef fn;
  kc_ir_init(&ir, mod);
  kc_status s = kc_matmul_emit(cpu, &ir, name, cfg, 0, out, &fn);
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
