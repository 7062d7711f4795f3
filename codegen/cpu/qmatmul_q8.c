/*
 * codegen/cpu/qmatmul_q8.c - kc_lower_matmul_q8, the fused int8 matmul (semantics and the
 * layout of its weights in ir/ops.def): integer products, the activation zero point through the
 * weights' column sums, and the dequantization (scale, bias) in one kernel.
 *
 * a's batch dims fold into its rows (R = all of a's rows, the weights are one matrix), so the
 * output is [R, N] row-major.
 *
 * Fast path, where the target has AVX-512 VNNI: vpdpbusd multiplies 4 unsigned bytes of a by 4
 * signed bytes of w and adds the 4 products into an i32 lane, which is what the weights' layout
 * [ceil(K/4), N, 4] is for: 16 columns of one group of 4 rows are 64 contiguous bytes, one
 * zmm. A work unit is (a panel of 64 columns, a block of RB rows), panel-major, so the units of
 * one thread share the panel's weights in cache; in it, register tiles of MR rows x 64 columns
 * (MR * 4 accumulators, 4 weight vectors and a broadcast: 29 of the 32 registers), then rows
 * one at a time. The 4 bytes of a row at a group are one i32 load broadcast to the 16 lanes;
 * the last group of a K that is not a multiple of 4 is a masked load (the bytes past K are 0,
 * and so are the weights there), so a is never read past its rows. int8 a becomes uint8 by
 * flipping its sign bits (a + 128), and the zero point is raised by 128 to match:
 * sum (a + 128 - (azp + 128)) * w = sum (a - azp) * w.
 * Plain path (no VNNI): a row per unit, the same sums by scalar loops; both end in the same
 * epilogue, so they give the same bits.
 *
 * Assumption: the i32 sums wrap (as MatMulInteger's in ONNX Runtime); the terms are exact mod
 * 2^32, so the two paths and the unfused graph agree even then. With |a - azp| <= 255 and
 * |w| <= 128, no sum wraps while K <= 65793.
 *
 * Epilogue order (bitwise the unfused Cast, Mul, Add): f32(acc) rounded, times scale rounded,
 * plus bias rounded; separate fmul and fadd, which LLVM does not contract without fast-math.
 */
#include "codegen/cpu/emit.h"

enum { IA, IW, IWS, IS, IAZ, IBIAS }; /* inputs */
enum { LANES = 16, NV = 4, NR = LANES * NV, MR = 6, RB = 48 };

typedef struct q8 {
  kc_cpu_emit *e;
  kc_ir *ir;
  kc_dtype at;          /* a's dtype */
  bool flip;            /* fast path on int8 a: read a + 128 */
  bool scale_vec, bias; /* scale per column; a bias input */
  LLVMValueRef R, K, N; /* rows of a (batch dims included), depth, columns (i64) */
  LLVMValueRef pa, pw, pws, ps, pb, py;
  LLVMValueRef azp; /* i32 zero point of a (+128 when flip) */
} q8;

static bool present(const kc_cpu_emit *e, uint32_t i) {
  return i < e->n->nin && kc_val_ok(e->n->in[i]);
}

static int rank_a(const kc_cpu_emit *e) { return kc_value_of(e->g, e->n->in[IA])->rank; }

static bool fast(const kc_cpu_emit *e) { return kc_cpu_host(e->cpu)->has_vnni != 0; }

static LLVMValueRef rows(kc_cpu_emit *e, LLVMValueRef dims) {
  return kc_emit_numel(e, dims, false, IA, 0, rank_a(e) - 1);
}

static LLVMValueRef units_plain(kc_cpu_emit *e, LLVMValueRef dims) { return rows(e, dims); }

static LLVMValueRef units_fast(kc_cpu_emit *e, LLVMValueRef dims) {
  kc_ir *ir = e->ir;
  LLVMValueRef n = kc_emit_dim(e, dims, false, IW, 1);
  return kc_ir_mul(ir, kc_ir_cdiv(ir, n, kc_ir_i64(ir, NR)),
                   kc_ir_cdiv(ir, rows(e, dims), kc_ir_i64(ir, RB)));
}

static LLVMValueRef gep(kc_ir *ir, kc_dtype t, LLVMValueRef p, LLVMValueRef idx) {
  return LLVMBuildGEP2(ir->b, kc_emit_storage_type(ir, t), p, &idx, 1, "");
}

/* lanes elements of dtype t at p[idx] (masked when mask is given; off lanes read 0). */
static LLVMValueRef vload(q8 *q, kc_dtype t, LLVMValueRef p, LLVMValueRef idx, unsigned lanes,
                          LLVMValueRef mask) {
  if (!mask) return kc_emit_load(q->e, t, p, idx, lanes);
  LLVMTypeRef vt = kc_emit_vec_type(kc_emit_storage_type(q->ir, t), lanes);
  return kc_ir_masked_load(q->ir, vt, gep(q->ir, t, p, idx), 4, mask, LLVMConstNull(vt));
}

static void setup(q8 *q, kc_cpu_emit *e, bool flip) {
  kc_ir *ir = e->ir;
  q->e = e;
  q->ir = ir;
  q->at = kc_value_of(e->g, e->n->in[IA])->dtype;
  q->flip = flip && q->at == KC_I8;
  q->scale_vec = kc_value_numel(e->g, e->n->in[IS]) != 1;
  q->bias = present(e, IBIAS);
  q->R = rows(e, e->p_dims);
  q->K = kc_emit_dim(e, e->p_dims, false, IA, rank_a(e) - 1);
  q->N = kc_emit_dim(e, e->p_dims, false, IW, 1);
  q->pa = kc_emit_in_ptr(e, IA);
  q->pw = kc_emit_in_ptr(e, IW);
  q->pws = kc_emit_in_ptr(e, IWS);
  q->ps = kc_emit_in_ptr(e, IS);
  q->pb = q->bias ? kc_emit_in_ptr(e, IBIAS) : NULL;
  q->py = kc_emit_out_ptr(e, 0);
  LLVMValueRef z = kc_ir_i32(ir, 0);
  if (present(e, IAZ))
    z = kc_emit_convert(ir, kc_emit_load(e, q->at, kc_emit_in_ptr(e, IAZ), kc_ir_i64(ir, 0), 1),
                        q->at, KC_I32);
  q->azp = q->flip ? LLVMBuildAdd(ir->b, z, kc_ir_i32(ir, 128), "") : z;
}

/* What the epilogue reads per column (lanes columns from col; mask NULL: all exist). */
typedef struct cols {
  LLVMValueRef zw, scale, bias; /* azp * wsum (i32), scale, bias (f32) */
} cols;

static cols cols_load(q8 *q, LLVMValueRef col, unsigned lanes, LLVMValueRef mask) {
  kc_ir *ir = q->ir;
  cols c;
  LLVMValueRef ws = vload(q, KC_I32, q->pws, col, lanes, mask);
  LLVMValueRef z = lanes > 1 ? kc_ir_splat(ir, q->azp, lanes) : q->azp;
  c.zw = LLVMBuildMul(ir->b, z, ws, "");
  if (q->scale_vec) {
    c.scale = vload(q, KC_F32, q->ps, col, lanes, mask);
  } else {
    c.scale = kc_emit_load(q->e, KC_F32, q->ps, kc_ir_i64(ir, 0), 1);
    if (lanes > 1) c.scale = kc_ir_splat(ir, c.scale, lanes);
  }
  c.bias = q->bias ? vload(q, KC_F32, q->pb, col, lanes, mask) : NULL;
  return c;
}

/* y[row, col..] = f32(acc - azp * wsum) * scale + bias. */
static void epilogue(q8 *q, const cols *c, LLVMValueRef acc, LLVMValueRef row, LLVMValueRef col,
                     unsigned lanes, LLVMValueRef mask) {
  kc_ir *ir = q->ir;
  LLVMValueRef v = LLVMBuildSub(ir->b, acc, c->zw, "");
  v = LLVMBuildSIToFP(ir->b, v, kc_emit_vec_type(ir->t_f32, lanes), "");
  v = LLVMBuildFMul(ir->b, v, c->scale, "");
  if (c->bias) v = LLVMBuildFAdd(ir->b, v, c->bias, "");
  LLVMValueRef idx = kc_ir_add(ir, kc_ir_mul(ir, row, q->N), col);
  if (mask)
    kc_ir_masked_store(ir, v, gep(ir, KC_F32, q->py, idx), 4, mask);
  else
    kc_emit_store(q->e, KC_F32, q->py, idx, v, lanes);
}

/* ---- plain path ------------------------------------------------------------------------------ */

static kc_status lower_plain(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  kc_emit_units_custom(e, units_plain);
  kc_emit_kernel_begin(e);
  q8 q;
  setup(&q, e, false);
  LLVMValueRef one = kc_ir_i64(ir, 1), zero = kc_ir_i64(ir, 0);
  LLVMValueRef n4 = kc_ir_mul(ir, q.N, kc_ir_i64(ir, 4));
  kc_loop lr, ln, lk;
  LLVMValueRef r = kc_loop_begin(ir, &lr, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef rowa = kc_ir_mul(ir, r, q.K);
  LLVMValueRef n = kc_loop_begin(ir, &ln, zero, q.N, one, 0, NULL);
  LLVMValueRef acc0 = kc_ir_i32(ir, 0);
  LLVMValueRef k = kc_loop_begin(ir, &lk, zero, q.K, one, 1, &acc0);
  LLVMValueRef av =
      kc_emit_convert(ir, kc_emit_load(e, q.at, q.pa, kc_ir_add(ir, rowa, k), 1), q.at, KC_I32);
  LLVMValueRef wi = kc_ir_add(ir, kc_ir_mul(ir, LLVMBuildLShr(ir->b, k, kc_ir_i64(ir, 2), ""), n4),
                              kc_ir_add(ir, kc_ir_mul(ir, n, kc_ir_i64(ir, 4)),
                                        LLVMBuildAnd(ir->b, k, kc_ir_i64(ir, 3), "")));
  LLVMValueRef wv = kc_emit_convert(ir, kc_emit_load(e, KC_I8, q.pw, wi, 1), KC_I8, KC_I32);
  LLVMValueRef acc = LLVMBuildAdd(ir->b, lk.carry[0], LLVMBuildMul(ir->b, av, wv, ""), "");
  kc_loop_end(ir, &lk, &acc);
  cols c = cols_load(&q, n, 1, NULL);
  epilogue(&q, &c, lk.carry[0], r, n, 1, NULL);
  kc_loop_end(ir, &ln, NULL);
  kc_loop_end(ir, &lr, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}

/* ---- VNNI path ------------------------------------------------------------------------------- */

/* The unit's column panel: masks and the weights' byte offset of its first column. */
typedef struct panel {
  LLVMValueRef c0, mask[NV];
  cols c[NV];
} panel;

/* Accumulators of an mr-row tile over groups [g0, g1); tail: the group ends past K. */
static void groups(q8 *q, const panel *p, LLVMValueRef r, int mr, LLVMValueRef g0, LLVMValueRef g1,
                   bool tail, LLVMValueRef *acc) {
  kc_ir *ir = q->ir;
  LLVMTypeRef vi = LLVMVectorType(ir->t_i32, LANES);
  LLVMTypeRef i8x4 = LLVMVectorType(LLVMInt8TypeInContext(ir->ctx), 4);
  kc_loop l;
  LLVMValueRef g = kc_loop_begin(ir, &l, g0, g1, kc_ir_i64(ir, 1), (unsigned)(mr * NV), acc);
  LLVMValueRef boff = kc_ir_mul(ir, kc_ir_add(ir, kc_ir_mul(ir, g, q->N), p->c0), kc_ir_i64(ir, 4));
  LLVMValueRef b[NV];
  for (int j = 0; j < NV; j++)
    b[j] =
        kc_ir_masked_load(ir, vi, gep(ir, KC_I8, q->pw, kc_ir_add(ir, boff, kc_ir_i64(ir, 64 * j))),
                          4, p->mask[j], LLVMConstNull(vi));
  LLVMValueRef k4 = kc_ir_mul(ir, g, kc_ir_i64(ir, 4)), next[MR * NV];
  LLVMValueRef kmask =
      tail ? kc_ir_lane_mask(ir, 4, 0, kc_ir_sub(ir, q->K, k4)) : NULL; /* bytes before K */
  for (int i = 0; i < mr; i++) {
    LLVMValueRef pa =
        gep(ir, KC_I8, q->pa,
            kc_ir_add(ir, kc_ir_mul(ir, kc_ir_add(ir, r, kc_ir_i64(ir, i)), q->K), k4));
    LLVMValueRef a4 =
        tail ? LLVMBuildBitCast(ir->b,
                                kc_ir_masked_load(ir, i8x4, pa, 1, kmask, LLVMConstNull(i8x4)),
                                ir->t_i32, "")
             : kc_ir_load(ir, ir->t_i32, pa, 1);
    if (q->flip) a4 = LLVMBuildXor(ir->b, a4, kc_ir_i32(ir, (int32_t)0x80808080u), "");
    LLVMValueRef bc = kc_ir_splat(ir, a4, LANES);
    for (int j = 0; j < NV; j++) {
      LLVMValueRef args[3] = {l.carry[i * NV + j], bc, b[j]};
      next[i * NV + j] = kc_ir_intrinsic(ir, "llvm.x86.avx512.vpdpbusd.512", NULL, 0, args, 3);
    }
  }
  kc_loop_end(ir, &l, next);
  for (int i = 0; i < mr * NV; i++)
    acc[i] = l.carry[i];
}

/* Rows [r, r + mr) of the panel. */
static void tile(q8 *q, const panel *p, LLVMValueRef r, int mr) {
  kc_ir *ir = q->ir;
  LLVMValueRef acc[MR * NV];
  for (int i = 0; i < mr * NV; i++)
    acc[i] = LLVMConstNull(LLVMVectorType(ir->t_i32, LANES));
  LLVMValueRef full = LLVMBuildLShr(ir->b, q->K, kc_ir_i64(ir, 2), "");
  LLVMValueRef all =
      LLVMBuildLShr(ir->b, kc_ir_add(ir, q->K, kc_ir_i64(ir, 3)), kc_ir_i64(ir, 2), "");
  groups(q, p, r, mr, kc_ir_i64(ir, 0), full, false, acc);
  groups(q, p, r, mr, full, all, true, acc);
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < NV; j++)
      epilogue(q, &p->c[j], acc[i * NV + j], kc_ir_add(ir, r, kc_ir_i64(ir, i)),
               kc_ir_add(ir, p->c0, kc_ir_i64(ir, LANES * j)), LANES, p->mask[j]);
}

static kc_status lower_fast(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  kc_emit_units_custom(e, units_fast);
  kc_emit_kernel_begin(e);
  q8 q;
  setup(&q, e, true);
  LLVMValueRef one = kc_ir_i64(ir, 1), zero = kc_ir_i64(ir, 0);
  LLVMValueRef nrb = kc_ir_cdiv(ir, q.R, kc_ir_i64(ir, RB));
  kc_loop lu, lt, lr;
  LLVMValueRef u = kc_loop_begin(ir, &lu, e->p_begin, e->p_end, one, 0, NULL);
  panel p;
  p.c0 = kc_ir_mul(ir, LLVMBuildUDiv(ir->b, u, nrb, ""), kc_ir_i64(ir, NR));
  LLVMValueRef r0 = kc_ir_mul(ir, LLVMBuildURem(ir->b, u, nrb, ""), kc_ir_i64(ir, RB));
  LLVMValueRef r1 = kc_ir_min(ir, kc_ir_add(ir, r0, kc_ir_i64(ir, RB)), q.R);
  LLVMValueRef left = kc_ir_sub(ir, q.N, p.c0);
  for (int j = 0; j < NV; j++) {
    p.mask[j] = kc_ir_lane_mask(ir, LANES, LANES * j, left);
    p.c[j] = cols_load(&q, kc_ir_add(ir, p.c0, kc_ir_i64(ir, LANES * j)), LANES, p.mask[j]);
  }
  LLVMValueRef ntiles = LLVMBuildUDiv(ir->b, kc_ir_sub(ir, r1, r0), kc_ir_i64(ir, MR), "");
  LLVMValueRef t = kc_loop_begin(ir, &lt, zero, ntiles, one, 0, NULL);
  tile(&q, &p, kc_ir_add(ir, r0, kc_ir_mul(ir, t, kc_ir_i64(ir, MR))), MR);
  kc_loop_end(ir, &lt, NULL);
  LLVMValueRef r = kc_loop_begin(
      ir, &lr, kc_ir_add(ir, r0, kc_ir_mul(ir, ntiles, kc_ir_i64(ir, MR))), r1, one, 0, NULL);
  tile(&q, &p, r, 1);
  kc_loop_end(ir, &lr, NULL);
  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  e->grain = 0; /* contiguous ranges: a thread's units share column panels */
  return KC_OK;
}

kc_status kc_lower_matmul_q8(kc_cpu_emit *e) { return fast(e) ? lower_fast(e) : lower_plain(e); }
