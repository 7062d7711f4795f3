/*
 * codegen/cpu/attention_decode.c - the decode layout of the attention core (attention_core.h):
 * the few queries that read one kv head (a decoding step's row, every query head of its GQA
 * group) against a long run of keys, W keys per vector, each key and value read from memory
 * once for all of them.
 *
 * A unit's keys go by tiles of up to KC_ATT_DEC_TILE keys, two passes per tile:
 *   - keys: for each block of W keys (loaded once; for the second and later queries they come
 *     from L1), each query's dot products are accumulated key by key over D in W-wide chunks
 *     (part[jj]; a row's chunks in address order, which the hardware prefetcher follows) and the
 *     W partial vectors summed across lanes together by a transpose-add tree, leaving score jj
 *     in lane jj; masked scores are -inf. The scores go to the query's row of the tile buffer and
 *     into a running vector maximum (no reduction per block);
 *   - softmax: per query, once per tile: the new maximum m, the correction exp(m_old - m) of the
 *     sum and the accumulator, p = exp(s - m) in place of the scores;
 *   - values: for each block of W keys, each query's accumulator (in registers, two sets of FMA
 *     chains) takes p[jj] * v[jj] key by key, the rows again in address order (from L1 after the
 *     first query); heads over UNROLL_CHUNKS vectors go chunk by chunk instead.
 * So the serial work of the online softmax happens once per tile, not per W keys, and the key
 * and value passes are plain streams the out-of-order core can run ahead on. Within a range the
 * rows PF_KEYS ahead are prefetched into L2: a block of 16 rows of 64 floats is a page, and the
 * hardware prefetcher stops at page ends (measured on GPT-2's shape: 10 -> 14 GB/s from DRAM).
 *
 * Workspace (floats, for QMAX = kc_att_dec_rows * group queries): q [QMAX][NQ * W],
 * acc [QMAX][NV * W], scores [QMAX][TILE + W], running max [QMAX][W], m [QMAX], l [QMAX];
 * NQ = ceil(D / W), NV = ceil(Dv / W). Lanes past D (Dv) stay 0 and chunks past them are read
 * with masked loads, so nothing past a key's row is addressed. The scores row has W floats of
 * slack: a range's last block stores all W lanes (-inf past its end) and the next range, later,
 * overwrites what is its own; the softmax and value passes read only positions inside ranges.
 *
 * A partial (kc_att_dec_save) is, per query, [m, l, 0 ... (W floats)][acc NV * W].
 */
#include "attention_core.h"

#include "vmath.h"

#include <math.h>

/* Heads up to UNROLL_CHUNKS vectors long are read key by key with the chunks in registers. */
#define UNROLL_CHUNKS 8
/* Rows are prefetched this many keys ahead (the next block: one that starts a new page, where
 * the hardware prefetcher stops). */
#define PF_KEYS 16

int64_t kc_att_dec_rows(const kc_att *A) {
  /* rows whose queries leave lanes of the slot layout idle (S * group < W), at most 4 */
  int64_t r = ((int64_t)A->W - 1) / (A->group > 0 ? A->group : 1);
  return r < 1 ? 1 : r > 4 ? 4 : r;
}

static int64_t qmax(const kc_att *A) { return kc_att_dec_rows(A) * A->group; }
static int64_t nqv(const kc_att *A) { return (A->D + A->W - 1) / A->W; }
static int64_t nvv(const kc_att *A) { return (A->Dv + A->W - 1) / A->W; }
static int64_t qstride(const kc_att *A) { return nqv(A) * A->W; }
static int64_t astride(const kc_att *A) { return nvv(A) * A->W; }
static int64_t sstride(const kc_att *A) { return KC_ATT_DEC_TILE + A->W; }

int64_t kc_att_dec_ws_floats(const kc_att *A) {
  return qmax(A) * (qstride(A) + astride(A) + sstride(A) + A->W + 2);
}

/* Area `k` (0 q, 1 acc, 2 scores, 3 running max, 4 m, 5 l) of query qi (i64). */
static LLVMValueRef area(kc_att *A, int k, LLVMValueRef qi) {
  int64_t q = qmax(A), st[6] = {qstride(A), astride(A), sstride(A), A->W, 1, 1}, base = 0;
  for (int i = 0; i < k; i++)
    base += q * st[i];
  LLVMValueRef o =
      kc_ir_add(A->ir, kc_att_i64(A, base), kc_ir_mul(A->ir, qi, kc_att_i64(A, st[k])));
  return kc_ir_gepf(A->ir, A->ws, o);
}

void kc_att_prefetch(kc_att *A, LLVMValueRef p) {
  kc_ir *ir = A->ir;
  LLVMTypeRef t = ir->t_ptr;
  /* locality 1 (prefetcht2): into L2, where it takes no L1 miss buffer from the demand loads
   * of the block being computed (measured: prefetcht0 gained nothing, this a third) */
  LLVMValueRef args[4] = {p, kc_ir_i32(ir, 0), kc_ir_i32(ir, 1), kc_ir_i32(ir, 1)};
  kc_ir_intrinsic(ir, "llvm.prefetch", &t, 1, args, 4);
}

static LLVMTypeRef vf(kc_att *A) { return kc_emit_vec_type(A->ir->t_f32, A->W); }

static LLVMValueRef fconst(kc_att *A, double v, unsigned lanes) {
  return kc_rv_fconst(kc_emit_vec_type(A->ir->t_f32, lanes), v);
}

static LLVMValueRef f32c(kc_att *A, double v) { return LLVMConstReal(A->ir->t_f32, v); }

/* W elements of buffer p (dtype A->t) at idx as an f32 vector; mask (NULL: all) reads only
 * those lanes (0 elsewhere). */
static LLVMValueRef ldv(kc_att *A, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef mask) {
  LLVMValueRef v = kc_rv_load(A->e, A->t, p, idx, A->W, mask, NULL);
  return kc_emit_convert(A->ir, v, A->t, KC_F32);
}

/* Vector k (i64) of the f32 area at base. */
static LLVMValueRef vec(kc_att *A, LLVMValueRef base, LLVMValueRef k) {
  return kc_ir_gepf(A->ir, base, kc_ir_mul(A->ir, k, kc_att_i64(A, A->W)));
}

static LLVMValueRef ldw(kc_att *A, LLVMValueRef p) { return kc_ir_load(A->ir, vf(A), p, 4); }

/* Fast maximum (vmaxps): scores are never NaN unless the inputs are. */
static LLVMValueRef vmax(kc_att *A, LLVMValueRef a, LLVMValueRef b) {
  LLVMBuilderRef bl = A->ir->b;
  return LLVMBuildSelect(bl, LLVMBuildFCmp(bl, LLVMRealOGT, a, b, ""), a, b, "");
}

/* Offset of row i, head h of a tensor with strides st (batch, sequence, head). */
static LLVMValueRef row_of(kc_att *A, const LLVMValueRef *st, LLVMValueRef b, LLVMValueRef i,
                           LLVMValueRef h) {
  kc_ir *ir = A->ir;
  LLVMValueRef o = kc_ir_add(ir, kc_ir_mul(ir, b, st[0]), kc_ir_mul(ir, i, st[1]));
  return kc_ir_add(ir, o, kc_ir_mul(ir, h, st[2]));
}

/* Row i and head h of query qi. */
static void query_of(kc_att *A, kc_att_dec *d, LLVMValueRef qi, LLVMValueRef *i, LLVMValueRef *h) {
  kc_ir *ir = A->ir;
  LLVMValueRef g = kc_att_i64(A, A->group);
  *i = LLVMBuildUDiv(ir->b, qi, g, "");
  *h = kc_ir_add(ir, kc_ir_mul(ir, d->hk, g), LLVMBuildURem(ir->b, qi, g, ""));
}

/* Keys row i sees: [0, P + min(i, len - 1) + 1), at least none. */
static LLVMValueRef row_limit(kc_att *A, kc_att_dec *d, LLVMValueRef i) {
  kc_ir *ir = A->ir;
  LLVMValueRef last =
      kc_ir_add(ir, d->P, kc_ir_min(ir, i, kc_ir_sub(ir, d->len, kc_att_i64(A, 1))));
  return kc_ir_max(ir, kc_ir_add(ir, last, kc_att_i64(A, 1)), kc_att_i64(A, 0));
}

/* for (qi = 0; qi < d->nq; qi++) { ... }: begin returns qi. */
static LLVMValueRef queries_begin(kc_att *A, kc_att_dec *d, kc_loop *l) {
  return kc_loop_begin(A->ir, l, kc_att_i64(A, 0), d->nq, kc_att_i64(A, 1), 0, NULL);
}

/* Zero n whole vectors at base. */
static void zero(kc_att *A, LLVMValueRef base, int64_t n, double v) {
  kc_ir *ir = A->ir;
  kc_loop z;
  LLVMValueRef k =
      kc_loop_begin(ir, &z, kc_att_i64(A, 0), kc_att_i64(A, n), kc_att_i64(A, 1), 0, NULL);
  kc_ir_store(ir, fconst(A, v, A->W), vec(A, base, k), 4);
  kc_loop_end(ir, &z, NULL);
}

void kc_att_dec_begin(kc_att *A, kc_att_dec *d, LLVMValueRef b, LLVMValueRef hk, LLVMValueRef P,
                      LLVMValueRef len) {
  kc_ir *ir = A->ir;
  d->b = b, d->hk = hk, d->P = P, d->len = len;
  d->nq = kc_ir_mul(ir, kc_ir_min(ir, A->S, kc_att_i64(A, kc_att_dec_rows(A))),
                    kc_att_i64(A, A->group));
  kc_loop lq;
  LLVMValueRef qi = queries_begin(A, d, &lq);
  zero(A, area(A, 0, qi), nqv(A), 0);
  zero(A, area(A, 1, qi), nvv(A), 0);
  zero(A, area(A, 3, qi), 1, -INFINITY);
  kc_ir_store(ir, f32c(A, -INFINITY), area(A, 4, qi), 4);
  kc_ir_store(ir, f32c(A, 0), area(A, 5, qi), 4);
  LLVMValueRef i, h;
  query_of(A, d, qi, &i, &h);
  LLVMValueRef row = row_of(A, A->qs, b, i, h), pos = kc_ir_add(ir, P, i), qp = area(A, 0, qi);
  kc_loop l;
  LLVMValueRef k =
      kc_loop_begin(ir, &l, kc_att_i64(A, 0), kc_att_i64(A, A->D), kc_att_i64(A, 1), 0, NULL);
  kc_att_pair r = {0};
  if (A->rotary) r = kc_att_pair_of(A, k);
  LLVMValueRef x = kc_att_rotated(A, A->q, row, k, &r, pos);
  kc_ir_store(ir, LLVMBuildFMul(ir->b, x, f32c(A, A->scale), ""), kc_ir_gepf(ir, qp, k), 4);
  kc_loop_end(ir, &l, NULL);
  kc_loop_end(ir, &lq, NULL);
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

/* What a pass over one range needs. */
typedef struct pass {
  kc_att *A;
  kc_att_dec *d;
  const kc_att_keys *kr;
} pass;

/*
 * The W rows (keys or values) of the block at j0: a full block with a constant stride is one
 * pointer and constant offsets (loads then address [p0 + imm]: 16 rows of offsets kept live over
 * the queries would not fit the registers); a partial block repeats its last row.
 */
typedef struct rows {
  LLVMValueRef src, p0; /* p0: &src[row 0] when the rows are p0 + jj * cs */
  int64_t cs;
  LLVMValueRef idx[64]; /* else row jj's element offset in src */
} rows;

static void block_rows(kc_att *A, const kc_att_keys *kr, LLVMValueRef j0, LLVMValueRef tail,
                       LLVMValueRef src, LLVMValueRef base, LLVMValueRef stride, rows *r) {
  kc_ir *ir = A->ir;
  r->src = src;
  r->p0 = NULL;
  if (!tail && LLVMIsAConstantInt(stride)) {
    LLVMValueRef i0 = kc_ir_add(ir, base, kc_ir_mul(ir, j0, stride));
    r->p0 = LLVMBuildGEP2(ir->b, kc_emit_storage_type(ir, A->t), src, &i0, 1, "");
    r->cs = LLVMConstIntGetSExtValue(stride);
    return;
  }
  for (unsigned jj = 0; jj < A->W; jj++) {
    LLVMValueRef j = kc_ir_add(ir, j0, kc_att_i64(A, jj));
    if (tail) j = kc_ir_min(ir, j, kc_ir_sub(ir, kr->end, kc_att_i64(A, 1)));
    r->idx[jj] = kc_ir_add(ir, base, kc_ir_mul(ir, j, stride));
  }
}

/* W elements of row jj from element off (i64) as f32 (mask: NULL, or the lanes to read). */
static LLVMValueRef row_ld(kc_att *A, const rows *r, unsigned jj, LLVMValueRef off,
                           LLVMValueRef mask) {
  kc_ir *ir = A->ir;
  if (r->p0) return ldv(A, r->p0, kc_ir_add(ir, kc_att_i64(A, (int64_t)jj * r->cs), off), mask);
  return ldv(A, r->src, kc_ir_add(ir, r->idx[jj], off), mask);
}

/* part[jj] += q chunk c * key jj chunk c (mask: the partial chunk). */
static void dot_chunk(kc_att *A, LLVMValueRef qp, const rows *rw, LLVMValueRef c, LLVMValueRef mask,
                      LLVMValueRef *part) {
  kc_ir *ir = A->ir;
  LLVMValueRef off = kc_ir_mul(ir, c, kc_att_i64(A, A->W));
  LLVMValueRef qv = ldw(A, vec(A, qp, c));
  for (unsigned jj = 0; jj < A->W; jj++)
    part[jj] = kc_ir_fmuladd(ir, qv, row_ld(A, rw, jj, off, mask), part[jj]);
}

/* The scores of query qp against the W keys at rows (lane jj: key jj). */
static LLVMValueRef scores(kc_att *A, LLVMValueRef qp, const rows *rw) {
  kc_ir *ir = A->ir;
  unsigned W = A->W;
  LLVMValueRef part[64], zero = kc_att_i64(A, 0), one = kc_att_i64(A, 1);
  int64_t full = A->D / W;
  if (nqv(A) <= UNROLL_CHUNKS) {
    /* key by key, each row's chunks in address order: the hardware prefetcher streams them */
    LLVMValueRef qv[UNROLL_CHUNKS], mask[UNROLL_CHUNKS];
    for (int64_t c = 0; c < nqv(A); c++) {
      qv[c] = ldw(A, vec(A, qp, kc_att_i64(A, c)));
      mask[c] = c < full ? NULL : kc_ir_lane_mask(ir, W, 0, kc_att_i64(A, A->D % W));
    }
    for (unsigned jj = 0; jj < W; jj++) {
      part[jj] = NULL;
      for (int64_t c = 0; c < nqv(A); c++) {
        LLVMValueRef k = row_ld(A, rw, jj, kc_att_i64(A, c * W), mask[c]);
        part[jj] =
            part[jj] ? kc_ir_fmuladd(ir, qv[c], k, part[jj]) : LLVMBuildFMul(ir->b, qv[c], k, "");
      }
    }
    return transpose_sum(A, part);
  }
  for (unsigned jj = 0; jj < W; jj++)
    part[jj] = fconst(A, 0, W);
  if (full > 0) {
    kc_loop lc;
    LLVMValueRef c = kc_loop_begin(ir, &lc, zero, kc_att_i64(A, full), one, W, part);
    LLVMValueRef cur[64];
    for (unsigned jj = 0; jj < W; jj++)
      cur[jj] = lc.carry[jj];
    dot_chunk(A, qp, rw, c, NULL, cur);
    kc_loop_end(ir, &lc, cur);
    for (unsigned jj = 0; jj < W; jj++)
      part[jj] = lc.carry[jj];
  }
  if (A->D % W)
    dot_chunk(A, qp, rw, kc_att_i64(A, full), kc_ir_lane_mask(ir, W, 0, kc_att_i64(A, A->D % W)),
              part);
  return transpose_sum(A, part);
}

/* Prefetch the rows (len elements at base + j * stride of src) of the W keys PF_KEYS after the
 * block at j0 when the range holds them (a short range, a paged cache's block, has its next
 * block prefetched by the emitter instead). */
static void prefetch_ahead(kc_att *A, const kc_att_keys *kr, LLVMValueRef src, LLVMValueRef base,
                           LLVMValueRef stride, LLVMValueRef j0, int64_t len) {
  kc_ir *ir = A->ir;
  LLVMTypeRef st = kc_emit_storage_type(ir, A->t);
  int64_t bytes = len * (int64_t)kc_dtype_size(A->t);
  kc_if in;
  kc_if_begin(ir, &in,
              LLVMBuildICmp(ir->b, LLVMIntSLE,
                            kc_ir_add(ir, j0, kc_att_i64(A, PF_KEYS + (int64_t)A->W)), kr->end,
                            ""));
  for (unsigned jj = 0; jj < A->W; jj++) {
    LLVMValueRef j = kc_ir_add(ir, j0, kc_att_i64(A, PF_KEYS + (int64_t)jj));
    LLVMValueRef idx = kc_ir_add(ir, base, kc_ir_mul(ir, j, stride));
    LLVMValueRef row = LLVMBuildGEP2(ir->b, st, src, &idx, 1, "");
    for (int64_t o = 0; o < bytes; o += 64) {
      LLVMValueRef off = kc_att_i64(A, o);
      kc_att_prefetch(A, LLVMBuildGEP2(ir->b, LLVMInt8TypeInContext(ir->ctx), row, &off, 1, ""));
    }
  }
  kc_if_end(ir, &in);
}

/* The key pass over one block of W keys from j0 (tail: the lanes of the partial last block). */
static void key_block(void *user, LLVMValueRef j0, LLVMValueRef tail, LLVMValueRef *carry) {
  (void)carry;
  pass *ps = user;
  kc_att *A = ps->A;
  kc_att_dec *d = ps->d;
  const kc_att_keys *kr = ps->kr;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  unsigned W = A->W;
  rows rw;
  block_rows(A, kr, j0, tail, kr->ksrc, kr->kbase, kr->kstride, &rw);
  if (!tail) prefetch_ahead(A, kr, kr->ksrc, kr->kbase, kr->kstride, j0, A->D);
  LLVMValueRef kpos0 = kc_ir_add(ir, kr->pos0, j0), rel = kc_ir_sub(ir, kpos0, d->t0);
  LLVMValueRef kpos = kc_ir_iota(ir, W, kpos0, NULL), ninf = fconst(A, -INFINITY, W);
  kc_loop lq;
  LLVMValueRef qi = queries_begin(A, d, &lq);
  LLVMValueRef s = scores(A, area(A, 0, qi), &rw);
  if (A->softcap > 0)
    s = LLVMBuildFMul(b, kc_vmath_tanh(ir, LLVMBuildFMul(b, s, fconst(A, 1 / A->softcap, W), "")),
                      fconst(A, A->softcap, W), "");
  LLVMValueRef i, h;
  query_of(A, d, qi, &i, &h);
  /* causal per row (a decoding row's keys all pass), and the partial block's lanes */
  LLVMValueRef keep =
      LLVMBuildICmp(b, LLVMIntSLT, kpos, kc_ir_splat(ir, row_limit(A, d, i), W), "");
  if (tail) keep = LLVMBuildAnd(b, keep, tail, "");
  if (A->mask == KC_ATT_M_ADDITIVE) {
    LLVMValueRef base =
        kc_ir_add(ir, kc_ir_mul(ir, d->b, A->ms[0]),
                  kc_ir_add(ir, kc_ir_mul(ir, h, A->ms[1]), kc_ir_mul(ir, i, A->ms[2])));
    LLVMValueRef idx = LLVMBuildAdd(b, kc_ir_splat(ir, base, W),
                                    LLVMBuildMul(b, kpos, kc_ir_splat(ir, A->ms[3], W), ""), "");
    if (A->mlimit)
      keep = LLVMBuildAnd(
          b, keep, LLVMBuildICmp(b, LLVMIntSLT, kpos, kc_ir_splat(ir, A->mlimit, W), ""), "");
    LLVMTypeRef st = kc_emit_storage_type(ir, A->mt);
    LLVMValueRef ptrs = LLVMBuildGEP2(b, st, A->m, &idx, 1, "");
    LLVMTypeRef vt = LLVMVectorType(st, W);
    LLVMValueRef mv =
        kc_ir_masked_gather(ir, vt, ptrs, (unsigned)kc_dtype_size(A->mt), keep, LLVMConstNull(vt));
    if (A->mt == KC_F64)
      mv = kc_ir_fptrunc(b, mv, vf(A), "");
    else if (A->mt != KC_F32)
      mv = LLVMBuildFPExt(b, mv, vf(A), "");
    s = LLVMBuildFAdd(b, s, mv, "");
  }
  s = LLVMBuildSelect(b, keep, s, ninf, "");
  kc_ir_store(ir, s, kc_ir_gepf(ir, area(A, 2, qi), rel), 4);
  LLVMValueRef mxp = area(A, 3, qi);
  kc_ir_store(ir, vmax(A, ldw(A, mxp), s), mxp, 4);
  kc_loop_end(ir, &lq, NULL);
}

/* p[jj] of query row pp as a splat: from memory, or from pvec (a partial block's, 0 past it). */
static LLVMValueRef p_of(kc_att *A, LLVMValueRef pp, LLVMValueRef pvec, unsigned jj) {
  kc_ir *ir = A->ir;
  if (!pvec)
    return kc_ir_splat(ir, kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, pp, kc_att_i64(A, jj)), 4),
                       A->W);
  LLVMValueRef sm[64];
  for (unsigned x = 0; x < A->W; x++)
    sm[x] = kc_ir_i32(ir, (int32_t)jj);
  return LLVMBuildShuffleVector(ir->b, pvec, LLVMGetUndef(vf(A)), LLVMConstVector(sm, A->W), "");
}

/* acc chunk c of every query += sum_jj p[jj] * v[jj] chunk c (mask: the partial chunk). */
static void value_chunk(pass *ps, const rows *rw, LLVMValueRef rel, LLVMValueRef tail,
                        LLVMValueRef c, LLVMValueRef mask) {
  kc_att *A = ps->A;
  kc_att_dec *d = ps->d;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  unsigned W = A->W;
  LLVMValueRef off = kc_ir_mul(ir, c, kc_att_i64(A, W)), vv[64];
  for (unsigned jj = 0; jj < W; jj++)
    vv[jj] = row_ld(A, rw, jj, off, mask);
  kc_loop lq;
  LLVMValueRef qi = queries_begin(A, d, &lq);
  LLVMValueRef pp = kc_ir_gepf(ir, area(A, 2, qi), rel), ap = vec(A, area(A, 1, qi), c);
  /* a partial block's p past its keys is 0 (those positions are another range's, or none) */
  LLVMValueRef pvec = tail ? kc_ir_masked_load(ir, vf(A), pp, 4, tail, fconst(A, 0, W)) : NULL;
  enum { CHAINS = 4 };
  LLVMValueRef ch[CHAINS] = {ldw(A, ap), NULL, NULL, NULL};
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef pj = p_of(A, pp, pvec, jj);
    unsigned k = jj % CHAINS;
    ch[k] = ch[k] ? kc_ir_fmuladd(ir, pj, vv[jj], ch[k]) : LLVMBuildFMul(b, pj, vv[jj], "");
  }
  LLVMValueRef sum = ch[0];
  for (unsigned k = 1; k < CHAINS && ch[k]; k++)
    sum = LLVMBuildFAdd(b, sum, ch[k], "");
  kc_ir_store(ir, sum, ap, 4);
  kc_loop_end(ir, &lq, NULL);
}

/* The value pass over a block, key by key with each query's accumulator in registers (two
 * sets, even and odd keys, for independent FMA chains): the rows are read in address order. */
static void value_block_rows(pass *ps, const rows *rw, LLVMValueRef rel, LLVMValueRef tail) {
  kc_att *A = ps->A;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  unsigned W = A->W;
  int64_t nc = nvv(A), full = A->Dv / W;
  LLVMValueRef mask[UNROLL_CHUNKS];
  for (int64_t c = 0; c < nc; c++)
    mask[c] = c < full ? NULL : kc_ir_lane_mask(ir, W, 0, kc_att_i64(A, A->Dv % W));
  kc_loop lq;
  LLVMValueRef qi = queries_begin(A, ps->d, &lq);
  LLVMValueRef pp = kc_ir_gepf(ir, area(A, 2, qi), rel), acc = area(A, 1, qi);
  LLVMValueRef pvec = tail ? kc_ir_masked_load(ir, vf(A), pp, 4, tail, fconst(A, 0, W)) : NULL;
  LLVMValueRef a[2][UNROLL_CHUNKS];
  for (int64_t c = 0; c < nc; c++)
    a[0][c] = ldw(A, vec(A, acc, kc_att_i64(A, c))), a[1][c] = NULL;
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef pj = p_of(A, pp, pvec, jj);
    for (int64_t c = 0; c < nc; c++) {
      LLVMValueRef v = row_ld(A, rw, jj, kc_att_i64(A, c * W), mask[c]);
      LLVMValueRef *ac = &a[jj & 1][c];
      *ac = *ac ? kc_ir_fmuladd(ir, pj, v, *ac) : LLVMBuildFMul(b, pj, v, "");
    }
  }
  for (int64_t c = 0; c < nc; c++) {
    LLVMValueRef sum = a[1][c] ? LLVMBuildFAdd(b, a[0][c], a[1][c], "") : a[0][c];
    kc_ir_store(ir, sum, vec(A, acc, kc_att_i64(A, c)), 4);
  }
  kc_loop_end(ir, &lq, NULL);
}

/* The value pass over one block of W keys from j0. */
static void value_block(void *user, LLVMValueRef j0, LLVMValueRef tail, LLVMValueRef *carry) {
  (void)carry;
  pass *ps = user;
  kc_att *A = ps->A;
  kc_ir *ir = A->ir;
  const kc_att_keys *kr = ps->kr;
  rows rw;
  block_rows(A, kr, j0, tail, kr->vsrc, kr->vbase, kr->vstride, &rw);
  if (!tail) prefetch_ahead(A, kr, kr->vsrc, kr->vbase, kr->vstride, j0, A->Dv);
  LLVMValueRef rel = kc_ir_sub(ir, kc_ir_add(ir, kr->pos0, j0), ps->d->t0);
  if (nvv(A) <= UNROLL_CHUNKS) {
    value_block_rows(ps, &rw, rel, tail);
    return;
  }
  int64_t full = A->Dv / A->W;
  if (full > 0) {
    kc_loop lc;
    LLVMValueRef c =
        kc_loop_begin(ir, &lc, kc_att_i64(A, 0), kc_att_i64(A, full), kc_att_i64(A, 1), 0, NULL);
    value_chunk(ps, &rw, rel, tail, c, NULL);
    kc_loop_end(ir, &lc, NULL);
  }
  if (A->Dv % A->W)
    value_chunk(ps, &rw, rel, tail, kc_att_i64(A, full),
                kc_ir_lane_mask(ir, A->W, 0, kc_att_i64(A, A->Dv % A->W)));
}

static void key_range(kc_att *A, const kc_att_keys *kr, void *fnuser) {
  pass ps = {A, fnuser, kr};
  kc_rv_for(A->e, kc_att_i64(A, 0), kr->end, A->W, 0, NULL, key_block, &ps);
}

static void value_range(kc_att *A, const kc_att_keys *kr, void *fnuser) {
  pass ps = {A, fnuser, kr};
  kc_rv_for(A->e, kc_att_i64(A, 0), kr->end, A->W, 0, NULL, value_block, &ps);
}

typedef struct expsum {
  kc_att *A;
  LLVMValueRef sc, muse; /* the query's scores row; the reference maximum (splat) */
} expsum;

/* p = exp(s - m) in place, summed (carry[0]); lanes past the tile are 0. */
static void exp_block(void *user, LLVMValueRef j, LLVMValueRef tail, LLVMValueRef *carry) {
  expsum *x = user;
  kc_att *A = x->A;
  kc_ir *ir = A->ir;
  LLVMValueRef p = kc_ir_gepf(ir, x->sc, j);
  LLVMValueRef v = kc_rv_exp(ir, LLVMBuildFSub(ir->b, ldw(A, p), x->muse, ""));
  if (tail) v = LLVMBuildSelect(ir->b, tail, v, fconst(A, 0, A->W), "");
  kc_ir_store(ir, v, p, 4);
  carry[0] = LLVMBuildFAdd(ir->b, carry[0], v, "");
}

/* The softmax of a tile of tl keys for every query (see the top). */
static void tile_softmax(kc_att *A, kc_att_dec *d, LLVMValueRef tl) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  kc_loop lq;
  LLVMValueRef qi = queries_begin(A, d, &lq);
  LLVMTypeRef vt = vf(A);
  LLVMValueRef mxp = area(A, 3, qi), mx = ldw(A, mxp);
  LLVMValueRef mt = kc_ir_intrinsic(ir, "llvm.vector.reduce.fmax", &vt, 1, &mx, 1);
  LLVMSetFastMathFlags(mt, LLVMFastMathNoNaNs); /* a shuffle tree, not a NaN-aware chain */
  LLVMValueRef mp = area(A, 4, qi), lp = area(A, 5, qi);
  LLVMValueRef m = kc_ir_load(ir, ir->t_f32, mp, 4);
  LLVMValueRef mnew = vmax(A, mt, m);
  /* nothing visible yet keeps m = -inf and uses 0 as the reference, so exp never sees
   * -inf - -inf */
  LLVMValueRef none = LLVMBuildFCmp(b, LLVMRealOEQ, mnew, f32c(A, -INFINITY), "");
  LLVMValueRef muse = LLVMBuildSelect(b, none, f32c(A, 0), mnew, "");
  LLVMValueRef corr = kc_rv_exp(ir, LLVMBuildFSub(b, m, muse, ""));
  expsum x = {A, area(A, 2, qi), kc_ir_splat(ir, muse, A->W)};
  LLVMValueRef sum = fconst(A, 0, A->W);
  kc_rv_for(A->e, kc_att_i64(A, 0), tl, A->W, 1, &sum, exp_block, &x);
  LLVMValueRef l = kc_ir_load(ir, ir->t_f32, lp, 4);
  kc_ir_store(ir, kc_ir_fmuladd(ir, l, corr, kc_rv_hsum(ir, sum)), lp, 4);
  kc_ir_store(ir, mnew, mp, 4);
  kc_ir_store(ir, fconst(A, -INFINITY, A->W), mxp, 4);
  LLVMValueRef cv = kc_ir_splat(ir, corr, A->W), acc = area(A, 1, qi);
  kc_loop la;
  LLVMValueRef k =
      kc_loop_begin(ir, &la, kc_att_i64(A, 0), kc_att_i64(A, nvv(A)), kc_att_i64(A, 1), 0, NULL);
  LLVMValueRef ap = vec(A, acc, k);
  kc_ir_store(ir, LLVMBuildFMul(b, ldw(A, ap), cv, ""), ap, 4);
  kc_loop_end(ir, &la, NULL);
  kc_loop_end(ir, &lq, NULL);
}

void kc_att_dec_keys(kc_att *A, kc_att_dec *d, LLVMValueRef lo, LLVMValueRef hi, LLVMValueRef tile,
                     kc_att_tile_fn ranges, void *user) {
  kc_ir *ir = A->ir;
  kc_loop lt;
  LLVMValueRef t0 = kc_loop_begin(ir, &lt, lo, hi, tile, 0, NULL);
  LLVMValueRef t1 = kc_ir_min(ir, kc_ir_add(ir, t0, tile), hi);
  d->t0 = t0;
  ranges(A, user, t0, t1, 0, key_range, d);
  tile_softmax(A, d, kc_ir_sub(ir, t1, t0));
  ranges(A, user, t0, t1, 1, value_range, d);
  kc_loop_end(ir, &lt, NULL);
}

void kc_att_dec_end(kc_att *A, kc_att_dec *d) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  kc_loop lq;
  LLVMValueRef qi = queries_begin(A, d, &lq);
  LLVMValueRef l = kc_ir_load(ir, ir->t_f32, area(A, 5, qi), 4);
  LLVMValueRef empty = LLVMBuildFCmp(b, LLVMRealOEQ, l, f32c(A, 0), "");
  LLVMValueRef inv = LLVMBuildSelect(b, empty, f32c(A, 0), LLVMBuildFDiv(b, f32c(A, 1), l, ""), "");
  LLVMValueRef iv = kc_ir_splat(ir, inv, A->W), i, h;
  query_of(A, d, qi, &i, &h);
  LLVMValueRef row = row_of(A, A->ys, d->b, i, h), acc = area(A, 1, qi);
  for (int64_t c = 0; c < nvv(A); c++) {
    LLVMValueRef y = LLVMBuildFMul(b, ldw(A, vec(A, acc, kc_att_i64(A, c))), iv, "");
    LLVMValueRef mask = (c + 1) * A->W > A->Dv
                            ? kc_ir_lane_mask(ir, A->W, 0, kc_att_i64(A, A->Dv - c * A->W))
                            : NULL;
    kc_rv_store(A->e, A->t, A->y, kc_ir_add(ir, row, kc_att_i64(A, c * A->W)),
                kc_emit_convert(ir, y, KC_F32, A->t), A->W, mask);
  }
  kc_loop_end(ir, &lq, NULL);
}

/* ---- split keys ----------------------------------------------------------------------------- */

static int64_t pstride(const kc_att *A) { return A->W + astride(A); }

int64_t kc_att_dec_partial_floats(const kc_att *A, int64_t rows) {
  return rows * A->group * pstride(A);
}

/* Query qi's record in the partial at part. */
static LLVMValueRef precord(kc_att *A, LLVMValueRef part, LLVMValueRef qi) {
  return kc_ir_gepf(A->ir, part, kc_ir_mul(A->ir, qi, kc_att_i64(A, pstride(A))));
}

void kc_att_dec_save(kc_att *A, kc_att_dec *d, LLVMValueRef part) {
  kc_ir *ir = A->ir;
  kc_loop lq;
  LLVMValueRef qi = queries_begin(A, d, &lq);
  LLVMValueRef r = precord(A, part, qi);
  kc_ir_store(ir, kc_ir_load(ir, ir->t_f32, area(A, 4, qi), 4), r, 4);
  kc_ir_store(ir, kc_ir_load(ir, ir->t_f32, area(A, 5, qi), 4), kc_ir_gepf(ir, r, kc_att_i64(A, 1)),
              4);
  LLVMValueRef dst = kc_ir_gepf(ir, r, kc_att_i64(A, A->W)), acc = area(A, 1, qi);
  kc_loop lv;
  LLVMValueRef k =
      kc_loop_begin(ir, &lv, kc_att_i64(A, 0), kc_att_i64(A, nvv(A)), kc_att_i64(A, 1), 0, NULL);
  kc_ir_store(ir, ldw(A, vec(A, acc, k)), vec(A, dst, k), 4);
  kc_loop_end(ir, &lv, NULL);
  kc_loop_end(ir, &lq, NULL);
}

void kc_att_dec_merge(kc_att *A, kc_att_dec *d, LLVMValueRef parts, LLVMValueRef n) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  LLVMValueRef z = kc_att_i64(A, 0), one = kc_att_i64(A, 1);
  LLVMValueRef pf = kc_att_i64(A, kc_att_dec_partial_floats(A, 1));
  kc_loop lq;
  LLVMValueRef qi = queries_begin(A, d, &lq);
  /* the largest maximum of the partials */
  LLVMValueRef init = f32c(A, -INFINITY);
  kc_loop lm;
  LLVMValueRef c = kc_loop_begin(ir, &lm, z, n, one, 1, &init);
  LLVMValueRef r = precord(A, kc_ir_gepf(ir, parts, kc_ir_mul(ir, c, pf)), qi);
  LLVMValueRef next = vmax(A, kc_ir_load(ir, ir->t_f32, r, 4), lm.carry[0]);
  kc_loop_end(ir, &lm, &next);
  LLVMValueRef m = lm.carry[0];
  LLVMValueRef none = LLVMBuildFCmp(b, LLVMRealOEQ, m, f32c(A, -INFINITY), "");
  LLVMValueRef muse = LLVMBuildSelect(b, none, f32c(A, 0), m, "");
  /* acc = sum_c exp(m_c - m) acc_c, l likewise, in chunk order */
  LLVMValueRef acc = area(A, 1, qi);
  zero(A, acc, nvv(A), 0);
  LLVMValueRef linit = f32c(A, 0);
  kc_loop ls;
  c = kc_loop_begin(ir, &ls, z, n, one, 1, &linit);
  r = precord(A, kc_ir_gepf(ir, parts, kc_ir_mul(ir, c, pf)), qi);
  LLVMValueRef w = kc_rv_exp(ir, LLVMBuildFSub(b, kc_ir_load(ir, ir->t_f32, r, 4), muse, ""));
  LLVMValueRef lc = kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, r, one), 4);
  LLVMValueRef lnext = kc_ir_fmuladd(ir, lc, w, ls.carry[0]);
  LLVMValueRef src = kc_ir_gepf(ir, r, kc_att_i64(A, A->W)), wv = kc_ir_splat(ir, w, A->W);
  kc_loop lv;
  LLVMValueRef k = kc_loop_begin(ir, &lv, z, kc_att_i64(A, nvv(A)), one, 0, NULL);
  LLVMValueRef ap = vec(A, acc, k);
  kc_ir_store(ir, kc_ir_fmuladd(ir, ldw(A, vec(A, src, k)), wv, ldw(A, ap)), ap, 4);
  kc_loop_end(ir, &lv, NULL);
  kc_loop_end(ir, &ls, &lnext);
  kc_ir_store(ir, ls.carry[0], area(A, 5, qi), 4);
  kc_loop_end(ir, &lq, NULL);
  kc_att_dec_end(A, d);
}
