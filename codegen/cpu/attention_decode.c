/*
 * codegen/cpu/attention_decode.c - the decode layout of the attention core (attention_core.h):
 * one query vector against key ranges, W keys per vector.
 *
 * A unit with a single query (a decoding step) would fill one lane of W in the slot layout. Here
 * the lanes hold keys instead: for each block of W keys, key jj's dot product with the query is
 * accumulated over D in W-wide chunks (part[jj], one FMA per chunk, the query staged in the
 * workspace), and the W partial vectors are summed across lanes together by a transpose-add
 * tree (W - 1 adds and 2 (W - 1) shuffles for W keys, instead of W horizontal sums), leaving
 * score jj in lane jj. The online softmax then runs on one vector of scores (max and sum are
 * scalars), and the accumulator acc[Dv] (workspace, whole vectors) takes p[jj] * v[jj] with two
 * independent FMA chains per chunk.
 *
 * Workspace (floats): q [NQ * W], acc [NV * W], p [W], NQ = ceil(D / W), NV = ceil(Dv / W); the
 * lanes past D (Dv) stay 0, and key and value chunks past D are read with masked loads, so
 * nothing past a key's row is addressed.
 */
#include "attention_core.h"

#include "vmath.h"

#include <math.h>

static int64_t nq(const kc_att *A) { return (A->D + A->W - 1) / A->W; }
static int64_t nv(const kc_att *A) { return (A->Dv + A->W - 1) / A->W; }
static LLVMValueRef qp(kc_att *A) { return A->ws; }
static LLVMValueRef accp(kc_att *A) {
  return kc_ir_gepf(A->ir, A->ws, kc_att_i64(A, nq(A) * A->W));
}
static LLVMValueRef pp(kc_att *A) {
  return kc_ir_gepf(A->ir, A->ws, kc_att_i64(A, (nq(A) + nv(A)) * A->W));
}

static LLVMTypeRef vf(kc_att *A) { return kc_emit_vec_type(A->ir->t_f32, A->W); }

static LLVMValueRef fconst(kc_att *A, double v, unsigned lanes) {
  return kc_rv_fconst(kc_emit_vec_type(A->ir->t_f32, lanes), v);
}

/* W elements of buffer p (dtype A->t) at idx as an f32 vector; mask (NULL: all) reads only
 * those lanes (0 elsewhere). */
static LLVMValueRef ldv(kc_att *A, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef mask) {
  LLVMValueRef v = kc_rv_load(A->e, A->t, p, idx, A->W, mask, NULL);
  return kc_emit_convert(A->ir, v, A->t, KC_F32);
}

/* ws vector k (of the q, acc or p area at base). */
static LLVMValueRef wsvec(kc_att *A, LLVMValueRef base, LLVMValueRef k) {
  return kc_ir_gepf(A->ir, base, kc_ir_mul(A->ir, k, kc_att_i64(A, A->W)));
}

/* Offset of row i, head h of a tensor with strides st (batch, sequence, head). */
static LLVMValueRef row_of(kc_att *A, const LLVMValueRef *st, LLVMValueRef b, LLVMValueRef i,
                           LLVMValueRef h) {
  kc_ir *ir = A->ir;
  LLVMValueRef o = kc_ir_add(ir, kc_ir_mul(ir, b, st[0]), kc_ir_mul(ir, i, st[1]));
  return kc_ir_add(ir, o, kc_ir_mul(ir, h, st[2]));
}

/* Zero n whole vectors of the workspace at base. */
static void zero(kc_att *A, LLVMValueRef base, int64_t n) {
  kc_ir *ir = A->ir;
  kc_loop z;
  LLVMValueRef k =
      kc_loop_begin(ir, &z, kc_att_i64(A, 0), kc_att_i64(A, n), kc_att_i64(A, 1), 0, NULL);
  kc_ir_store(ir, fconst(A, 0, A->W), wsvec(A, base, k), 4);
  kc_loop_end(ir, &z, NULL);
}

void kc_att_dec_begin(kc_att *A, kc_att_dec *d, LLVMValueRef b, LLVMValueRef h, LLVMValueRef i,
                      LLVMValueRef pos) {
  kc_ir *ir = A->ir;
  d->b = b, d->h = h, d->i = i;
  zero(A, qp(A), nq(A));
  zero(A, accp(A), nv(A));
  LLVMValueRef row = row_of(A, A->qs, b, i, h);
  kc_loop l;
  LLVMValueRef k =
      kc_loop_begin(ir, &l, kc_att_i64(A, 0), kc_att_i64(A, A->D), kc_att_i64(A, 1), 0, NULL);
  kc_att_pair r = {0};
  if (A->rotary) r = kc_att_pair_of(A, k);
  LLVMValueRef x = kc_att_rotated(A, A->q, row, k, &r, pos);
  x = LLVMBuildFMul(ir->b, x, LLVMConstReal(ir->t_f32, A->scale), "");
  kc_ir_store(ir, x, kc_ir_gepf(ir, qp(A), k), 4);
  kc_loop_end(ir, &l, NULL);
  d->carry[0] = LLVMConstReal(ir->t_f32, -INFINITY);
  d->carry[1] = LLVMConstReal(ir->t_f32, 0);
}

/*
 * Lane jj of the result = the sum of the lanes of v[jj], for W vectors of W lanes. Each level
 * pairs vectors a, b whose keys occupy segments of seg lanes: the low halves of every segment
 * of a and b, side by side, plus the high halves, halve the segments and double the keys per
 * vector. key[] tracks which key each segment holds; one shuffle at the end puts key jj in lane
 * jj.
 */
static LLVMValueRef transpose_sum(kc_att *A, LLVMValueRef *v) {
  kc_ir *ir = A->ir;
  unsigned W = A->W, n = W, seg = W;
  unsigned key[64][64]; /* key[vector][segment] */
  for (unsigned i = 0; i < W; i++)
    key[i][0] = i;
  while (seg > 1) {
    unsigned h = seg / 2, nseg = W / seg;
    LLVMValueRef lo[64], hi[64];
    for (unsigned t = 0; t < nseg; t++)
      for (unsigned x = 0; x < h; x++) {
        lo[t * seg + x] = kc_ir_i32(ir, (int32_t)(t * seg + x));
        lo[t * seg + h + x] = kc_ir_i32(ir, (int32_t)(W + t * seg + x));
        hi[t * seg + x] = kc_ir_i32(ir, (int32_t)(t * seg + h + x));
        hi[t * seg + h + x] = kc_ir_i32(ir, (int32_t)(W + t * seg + h + x));
      }
    LLVMValueRef ml = LLVMConstVector(lo, W), mh = LLVMConstVector(hi, W);
    for (unsigned i = 0; i < n / 2; i++) {
      LLVMValueRef a = v[2 * i], b = v[2 * i + 1];
      LLVMValueRef s = LLVMBuildFAdd(ir->b, LLVMBuildShuffleVector(ir->b, a, b, ml, ""),
                                     LLVMBuildShuffleVector(ir->b, a, b, mh, ""), "");
      unsigned nk[64];
      for (unsigned t = 0; t < nseg; t++)
        nk[2 * t] = key[2 * i][t], nk[2 * t + 1] = key[2 * i + 1][t];
      v[i] = s;
      for (unsigned t = 0; t < 2 * nseg; t++)
        key[i][t] = nk[t];
    }
    n /= 2, seg = h;
  }
  LLVMValueRef perm[64];
  for (unsigned lane = 0; lane < W; lane++)
    perm[key[0][lane]] = kc_ir_i32(ir, (int32_t)lane);
  return LLVMBuildShuffleVector(ir->b, v[0], LLVMGetUndef(LLVMTypeOf(v[0])),
                                LLVMConstVector(perm, W), "");
}

typedef struct dblk {
  kc_att *A;
  kc_att_dec *d;
  const kc_att_keys *kr;
} dblk;

/* part[jj] += q chunk c * key jj chunk c, chunk c at element off (mask: the partial chunk). */
static void dot_chunk(kc_att *A, const kc_att_keys *kr, LLVMValueRef *rows, LLVMValueRef c,
                      LLVMValueRef mask, LLVMValueRef *part) {
  kc_ir *ir = A->ir;
  LLVMValueRef off = kc_ir_mul(ir, c, kc_att_i64(A, A->W));
  LLVMValueRef qv = kc_ir_load(ir, vf(A), wsvec(A, qp(A), c), 4);
  for (unsigned jj = 0; jj < A->W; jj++)
    part[jj] =
        kc_ir_fmuladd(ir, qv, ldv(A, kr->ksrc, kc_ir_add(ir, rows[jj], off), mask), part[jj]);
}

/* acc chunk c = acc * corr + sum_jj p[jj] * v[jj] chunk c (mask: the partial chunk). */
static void pv_chunk(kc_att *A, LLVMValueRef *rows, const kc_att_keys *kr, LLVMValueRef c,
                     LLVMValueRef mask, LLVMValueRef corr) {
  kc_ir *ir = A->ir;
  LLVMValueRef off = kc_ir_mul(ir, c, kc_att_i64(A, A->W)), ap = wsvec(A, accp(A), c);
  LLVMValueRef ch[2] = {
      LLVMBuildFMul(ir->b, kc_ir_load(ir, vf(A), ap, 4), kc_ir_splat(ir, corr, A->W), ""), NULL};
  for (unsigned jj = 0; jj < A->W; jj++) {
    LLVMValueRef p = kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, pp(A), kc_att_i64(A, jj)), 4);
    LLVMValueRef pv = kc_ir_splat(ir, p, A->W);
    LLVMValueRef vv = ldv(A, kr->vsrc, kc_ir_add(ir, rows[jj], off), mask);
    ch[jj & 1] =
        ch[jj & 1] ? kc_ir_fmuladd(ir, pv, vv, ch[jj & 1]) : LLVMBuildFMul(ir->b, pv, vv, "");
  }
  kc_ir_store(ir, ch[1] ? LLVMBuildFAdd(ir->b, ch[0], ch[1], "") : ch[0], ap, 4);
}

/* One block of W keys from j0 (tail: the lanes of the partial last block). */
static void dec_block(void *user, LLVMValueRef j0, LLVMValueRef tail, LLVMValueRef *carry) {
  dblk *bk = user;
  kc_att *A = bk->A;
  kc_att_dec *d = bk->d;
  const kc_att_keys *kr = bk->kr;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  unsigned W = A->W;
  LLVMValueRef one = kc_att_i64(A, 1), zero = kc_att_i64(A, 0);
  LLVMValueRef krow[64], vrow[64];
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef j = kc_ir_add(ir, j0, kc_att_i64(A, jj));
    if (tail) j = kc_ir_min(ir, j, kc_ir_sub(ir, kr->end, one));
    krow[jj] = kc_ir_add(ir, kr->kbase, kc_ir_mul(ir, j, kr->kstride));
    vrow[jj] = kc_ir_add(ir, kr->vbase, kc_ir_mul(ir, j, kr->vstride));
  }
  /* scores */
  LLVMValueRef part[64];
  for (unsigned jj = 0; jj < W; jj++)
    part[jj] = fconst(A, 0, W);
  int64_t full = A->D / W;
  if (full > 0) {
    kc_loop lc;
    LLVMValueRef c = kc_loop_begin(ir, &lc, zero, kc_att_i64(A, full), one, W, part);
    LLVMValueRef cur[64];
    for (unsigned jj = 0; jj < W; jj++)
      cur[jj] = lc.carry[jj];
    dot_chunk(A, kr, krow, c, NULL, cur);
    kc_loop_end(ir, &lc, cur);
    for (unsigned jj = 0; jj < W; jj++)
      part[jj] = lc.carry[jj];
  }
  if (A->D % W)
    dot_chunk(A, kr, krow, kc_att_i64(A, full), kc_ir_lane_mask(ir, W, 0, kc_att_i64(A, A->D % W)),
              part);
  LLVMValueRef s = transpose_sum(A, part);
  if (A->softcap > 0)
    s = LLVMBuildFMul(b, kc_vmath_tanh(ir, LLVMBuildFMul(b, s, fconst(A, 1 / A->softcap, W), "")),
                      fconst(A, A->softcap, W), "");
  LLVMValueRef ninf = fconst(A, -INFINITY, W);
  if (A->mask == KC_ATT_M_ADDITIVE) {
    LLVMValueRef kpos = kc_ir_iota(ir, W, kc_ir_add(ir, kr->pos0, j0), NULL);
    LLVMValueRef base =
        kc_ir_add(ir, kc_ir_mul(ir, d->b, A->ms[0]),
                  kc_ir_add(ir, kc_ir_mul(ir, d->h, A->ms[1]), kc_ir_mul(ir, d->i, A->ms[2])));
    LLVMValueRef idx = LLVMBuildAdd(b, kc_ir_splat(ir, base, W),
                                    LLVMBuildMul(b, kpos, kc_ir_splat(ir, A->ms[3], W), ""), "");
    LLVMValueRef in = tail ? tail : kc_ir_lane_mask(ir, W, 0, kc_att_i64(A, W));
    if (A->mlimit)
      in = LLVMBuildAnd(b, in,
                        LLVMBuildICmp(b, LLVMIntSLT, kpos, kc_ir_splat(ir, A->mlimit, W), ""), "");
    LLVMTypeRef st = kc_emit_storage_type(ir, A->mt);
    LLVMValueRef ptrs = LLVMBuildGEP2(b, st, A->m, &idx, 1, "");
    LLVMTypeRef vt = LLVMVectorType(st, W);
    LLVMValueRef mv =
        kc_ir_masked_gather(ir, vt, ptrs, (unsigned)kc_dtype_size(A->mt), in, LLVMConstNull(vt));
    if (A->mt == KC_F64)
      mv = LLVMBuildFPTrunc(b, mv, vf(A), "");
    else if (A->mt != KC_F32)
      mv = LLVMBuildFPExt(b, mv, vf(A), "");
    s = LLVMBuildSelect(b, in, LLVMBuildFAdd(b, s, mv, ""), ninf, "");
  } else if (tail) {
    s = LLVMBuildSelect(b, tail, s, ninf, "");
  }
  /* online softmax over one vector; nothing visible yet keeps m = -inf and uses 0 as the
   * reference, so exp never sees -inf - -inf */
  LLVMTypeRef vt = vf(A);
  LLVMValueRef mb = kc_ir_intrinsic(ir, "llvm.vector.reduce.fmax", &vt, 1, &s, 1);
  LLVMValueRef m = carry[0], l = carry[1];
  LLVMValueRef mnew = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, mb, m, ""), mb, m, "");
  LLVMValueRef none = LLVMBuildFCmp(b, LLVMRealOEQ, mnew, LLVMConstReal(ir->t_f32, -INFINITY), "");
  LLVMValueRef muse = LLVMBuildSelect(b, none, LLVMConstReal(ir->t_f32, 0), mnew, "");
  LLVMValueRef corr = kc_rv_exp(ir, LLVMBuildFSub(b, m, muse, ""));
  LLVMValueRef p = kc_rv_exp(ir, LLVMBuildFSub(b, s, kc_ir_splat(ir, muse, W), ""));
  carry[0] = mnew;
  carry[1] = kc_ir_fmuladd(ir, l, corr, kc_rv_hsum(ir, p));
  kc_ir_store(ir, p, pp(A), 4);
  int64_t vfull = A->Dv / W;
  if (vfull > 0) {
    kc_loop lc;
    LLVMValueRef c = kc_loop_begin(ir, &lc, zero, kc_att_i64(A, vfull), one, 0, NULL);
    pv_chunk(A, vrow, kr, c, NULL, corr);
    kc_loop_end(ir, &lc, NULL);
  }
  if (A->Dv % W)
    pv_chunk(A, vrow, kr, kc_att_i64(A, vfull), kc_ir_lane_mask(ir, W, 0, kc_att_i64(A, A->Dv % W)),
             corr);
}

void kc_att_dec_keys(kc_att *A, kc_att_dec *d, const kc_att_keys *kr) {
  dblk bk = {A, d, kr};
  kc_rv_for(A->e, kc_att_i64(A, 0), kr->end, A->W, 2, d->carry, dec_block, &bk);
}

void kc_att_dec_end(kc_att *A, kc_att_dec *d) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  LLVMValueRef l = d->carry[1];
  LLVMValueRef empty = LLVMBuildFCmp(b, LLVMRealOEQ, l, LLVMConstReal(ir->t_f32, 0), "");
  LLVMValueRef inv = LLVMBuildSelect(b, empty, LLVMConstReal(ir->t_f32, 0),
                                     LLVMBuildFDiv(b, LLVMConstReal(ir->t_f32, 1), l, ""), "");
  LLVMValueRef iv = kc_ir_splat(ir, inv, A->W), row = row_of(A, A->ys, d->b, d->i, d->h);
  for (int64_t c = 0; c < nv(A); c++) {
    LLVMValueRef ck = kc_att_i64(A, c);
    LLVMValueRef y = LLVMBuildFMul(b, kc_ir_load(ir, vf(A), wsvec(A, accp(A), ck), 4), iv, "");
    LLVMValueRef mask = (c + 1) * A->W > A->Dv
                            ? kc_ir_lane_mask(ir, A->W, 0, kc_att_i64(A, A->Dv - c * A->W))
                            : NULL;
    kc_rv_store(A->e, A->t, A->y, kc_ir_add(ir, row, kc_att_i64(A, c * A->W)),
                kc_emit_convert(ir, y, KC_F32, A->t), A->W, mask);
  }
}
