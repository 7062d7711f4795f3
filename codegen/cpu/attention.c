/*
 * codegen/cpu/attention.c - kc_lower_attention: kernc's fused attention op (ir/ops.def):
 * q [B,S,heads*D] or [B,heads,S,D]; k/v [B,S_kv,kv_heads*D(v)] or [B,kv_heads,S_kv,D(v)]; GQA
 * (query head h reads kv head h / (heads / kv_heads)); mask none / causal / padding ([B, T],
 * nonzero = keep) / additive (broadcast to [B, heads, S, T]); past K/V [B, kv_heads, P, D] before
 * the new keys; present K/V outputs; rotary (cos/sin [max_pos, R/2]) applied to q and the new
 * keys at positions P + index.
 * Causal is aligned at the bottom right (include/kernc.h): with T = P + S_kv keys in all, key j
 * (0..T-1, past keys first) is visible to query i iff j <= i + (T - S), so the last query sees
 * every key whatever S_kv is, and with S_kv = S this is the usual j <= i + P. A query row with
 * no visible key (only when T < S) gives 0.
 * Ahead of the op table, the kernel also honours a `softcap` attribute (scores become
 * softcap * tanh(scores / softcap) before masking, as ONNX Attention) and mask=causal together
 * with a mask input (causal plus additive, ONNX's is_causal with attn_mask).
 *
 * Work unit: (batch, kv head, block of W query slots), W = the host's f32 lanes, where the
 * slots of a kv head are its (query row, query head of the group) pairs, row-major: the query
 * heads sharing a kv head share its key blocks, and a decoding step (one row) still fills
 * `group` lanes. Units are handed out dynamically (grain 1) since causal blocks differ in cost.
 * Per unit, FlashAttention style, never materializing S x T:
 *   - the unit's queries, scaled (and rotated), are staged transposed in the workspace as
 *     QT[d][lane], so one vector holds dimension d of all W slots;
 *   - keys stream in blocks of W: scores s[jj] (one vector over the rows per key jj) are
 *     sum_d QT[d] * k[jj][d] with k broadcast; masks set -inf; an online softmax keeps the
 *     running max m and sum l per row and rescales the accumulator accT[dv][lane] (workspace)
 *     once per block before adding p[jj] * v[jj][dv];
 *   - the output is accT / l; a row whose keys are all masked has l = 0 and gives 0 (ONNX's
 *     reference would give nan there; 0 is what fused kernels and the issue ask for).
 * Full key blocks and the one partial block are separate code, so full blocks address keys
 * with constant offsets when the layout is static; the partial block clamps its key index
 * (in bounds) and masks the extra keys out. Causal units stop at their last visible key.
 * Present K/V are written by the first slot block of each (batch, kv head); every unit reads
 * keys from past_k/k (never from present), so no unit waits on another.
 * Arithmetic is f32 whatever the input type (f16/bf16/f64 convert on load and store).
 */
#include "rowvec.h"
#include "vmath.h"

#include <math.h>
#include <string.h>

enum { Q, K, V, MASK, PAST_K, PAST_V, COS, SIN };
/* What the mask input is (causal is a flag of its own: it may come with an additive input). */
enum { M_NONE, M_PADDING, M_ADDITIVE };

/* Independent accumulator chains of the P @ V update. */
#define PV_CHAINS 4

typedef struct att {
  kc_cpu_emit *e;
  kc_ir *ir;
  kc_dtype t, mt; /* q/k/v dtype; mask dtype */
  unsigned W;
  int rank, mask;
  bool causal, rotary, interleaved, past, pres_k, pres_v;
  double softcap; /* > 0: scores become softcap * tanh(scores / softcap) before the masks */
  int64_t heads, kvh, group, D, Dv;
  double scale;
  LLVMValueRef q, k, v, m, pk, pv, cosp, sinp, y, prk, prv; /* buffers */
  LLVMValueRef S, Skv, P, T, off, maxpos, half, cw;         /* off = T - S: causal alignment */
  LLVMValueRef qs[3], ks[3], vs[3], ys[3];                  /* strides of batch, sequence, head */
  LLVMValueRef ms[4];                     /* additive mask strides over [B, heads, S, T] */
  LLVMValueRef b, hk, s0, nrows, rowmask; /* unit: batch, kv head, first slot, valid lanes */
  LLVMValueRef qposv, moffv;   /* per lane: last visible key position (i32), mask offset */
  LLVMValueRef qT, accT, linv; /* workspace */
} att;

/* A block of keys in one source (past or new). */
typedef struct keyrange {
  LLVMValueRef kbase, kstride, vbase, vstride; /* element offsets into the source buffers */
  LLVMValueRef ksrc, vsrc;                     /* the buffers */
  LLVMValueRef pos0;                           /* absolute position of key 0 */
  LLVMValueRef end;                            /* keys [0, end) are considered */
  bool rotate;
} keyrange;

static LLVMValueRef i64c(att *A, int64_t v) { return kc_ir_i64(A->ir, v); }

/* Element idx of a buffer of the op's dtype, as f32 (and back). */
static LLVMValueRef ld(att *A, kc_dtype t, LLVMValueRef p, LLVMValueRef idx) {
  return kc_emit_convert(A->ir, kc_emit_load(A->e, t, p, idx, 1), t, KC_F32);
}

static void st(att *A, kc_dtype t, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v) {
  kc_emit_store(A->e, t, p, idx, kc_emit_convert(A->ir, v, KC_F32, t), 1);
}

static LLVMValueRef fconst(att *A, double v, unsigned lanes) {
  return kc_rv_fconst(kc_emit_vec_type(A->ir->t_f32, lanes), v);
}

/* ---- rotary --------------------------------------------------------------------------------- */

/* Where element d of a head vector pairs up: partner index, cache index, sign, rotated? */
typedef struct rotpair {
  LLVMValueRef partner, ci, neg, in;
} rotpair;

static rotpair pair_of(att *A, LLVMValueRef d) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  rotpair r;
  r.in = kc_ir_lt(ir, d, kc_ir_add(ir, A->half, A->half));
  if (A->interleaved) {
    LLVMValueRef odd = LLVMBuildTrunc(b, LLVMBuildAnd(b, d, i64c(A, 1), ""), ir->t_i1, "");
    r.ci = LLVMBuildAShr(b, d, i64c(A, 1), "");
    r.partner =
        LLVMBuildSelect(b, odd, kc_ir_sub(ir, d, i64c(A, 1)), kc_ir_add(ir, d, i64c(A, 1)), "");
    r.neg = LLVMBuildNot(b, odd, "");
  } else {
    LLVMValueRef hi = LLVMBuildNot(b, kc_ir_lt(ir, d, A->half), "");
    r.ci = LLVMBuildSelect(b, hi, kc_ir_sub(ir, d, A->half), d, "");
    r.partner = LLVMBuildSelect(b, hi, r.ci, kc_ir_add(ir, d, A->half), "");
    r.neg = LLVMBuildNot(b, hi, "");
  }
  /* outside the rotary width: read nothing out of range */
  r.ci = LLVMBuildSelect(b, r.in, r.ci, i64c(A, 0), "");
  r.partner = LLVMBuildSelect(b, r.in, r.partner, d, "");
  return r;
}

/* Element d of the head vector at row (buffer p, dtype t) rotated to position pos, as f32. */
static LLVMValueRef rotated(att *A, LLVMValueRef p, LLVMValueRef row, LLVMValueRef d,
                            const rotpair *r, LLVMValueRef pos) {
  kc_ir *ir = A->ir;
  LLVMValueRef x = ld(A, A->t, p, kc_ir_add(ir, row, d));
  if (!A->rotary) return x;
  pos = kc_ir_max(ir, kc_ir_min(ir, pos, kc_ir_sub(ir, A->maxpos, i64c(A, 1))), i64c(A, 0));
  LLVMValueRef ci = kc_ir_add(ir, kc_ir_mul(ir, pos, A->cw), r->ci);
  LLVMValueRef c = ld(A, A->t, A->cosp, ci), s = ld(A, A->t, A->sinp, ci);
  LLVMValueRef xp = ld(A, A->t, p, kc_ir_add(ir, row, r->partner));
  LLVMValueRef ps = LLVMBuildFMul(ir->b, xp, s, "");
  ps = LLVMBuildSelect(ir->b, r->neg, LLVMBuildFNeg(ir->b, ps, ""), ps, "");
  LLVMValueRef y = kc_ir_fmuladd(ir, x, c, ps);
  return LLVMBuildSelect(ir->b, r->in, y, x, "");
}

/* ---- present K/V ---------------------------------------------------------------------------- */

/* present[b, hk, :, :] = past[b, hk] then the new rows (rotated keys when rotate). */
static void copy_present(att *A, LLVMValueRef dst, LLVMValueRef past, LLVMValueRef src,
                         const LLVMValueRef *ss, int64_t dh, bool rotate) {
  kc_ir *ir = A->ir;
  LLVMValueRef one = i64c(A, 1), zero = i64c(A, 0), dhv = i64c(A, dh);
  LLVMValueRef bh = kc_ir_add(ir, kc_ir_mul(ir, A->b, i64c(A, A->kvh)), A->hk);
  LLVMValueRef dst0 = kc_ir_mul(ir, kc_ir_mul(ir, bh, A->T), dhv);
  if (A->past) {
    LLVMValueRef src0 = kc_ir_mul(ir, kc_ir_mul(ir, bh, A->P), dhv);
    LLVMValueRef n = kc_ir_mul(ir, A->P, dhv);
    kc_loop l;
    LLVMValueRef i = kc_loop_begin(ir, &l, zero, n, one, 0, NULL);
    LLVMValueRef x = kc_emit_load(A->e, A->t, past, kc_ir_add(ir, src0, i), 1);
    kc_emit_store(A->e, A->t, dst, kc_ir_add(ir, dst0, i), x, 1);
    kc_loop_end(ir, &l, NULL);
  }
  LLVMValueRef base = kc_ir_add(ir, kc_ir_mul(ir, A->b, ss[0]), kc_ir_mul(ir, A->hk, ss[2]));
  kc_loop lj;
  LLVMValueRef j = kc_loop_begin(ir, &lj, zero, A->Skv, one, 0, NULL);
  LLVMValueRef row = kc_ir_add(ir, base, kc_ir_mul(ir, j, ss[1]));
  LLVMValueRef drow = kc_ir_add(ir, dst0, kc_ir_mul(ir, kc_ir_add(ir, A->P, j), dhv));
  kc_loop ld_;
  LLVMValueRef d = kc_loop_begin(ir, &ld_, zero, dhv, one, 0, NULL);
  if (rotate) {
    rotpair r = pair_of(A, d);
    st(A, A->t, dst, kc_ir_add(ir, drow, d), rotated(A, src, row, d, &r, kc_ir_add(ir, A->P, j)));
  } else {
    LLVMValueRef x = kc_emit_load(A->e, A->t, src, kc_ir_add(ir, row, d), 1);
    kc_emit_store(A->e, A->t, dst, kc_ir_add(ir, drow, d), x, 1);
  }
  kc_loop_end(ir, &ld_, NULL);
  kc_loop_end(ir, &lj, NULL);
}

/* ---- one unit ------------------------------------------------------------------------------- */

/* Query row i and head h of lane `lane` (slot s0 + lane = i * group + head in group). */
static void slot_of(att *A, LLVMValueRef lane, LLVMValueRef *i, LLVMValueRef *h) {
  kc_ir *ir = A->ir;
  LLVMValueRef r = kc_ir_add(ir, A->s0, lane), g = i64c(A, A->group);
  *i = LLVMBuildUDiv(ir->b, r, g, "");
  *h = kc_ir_add(ir, kc_ir_mul(ir, A->hk, g), LLVMBuildURem(ir->b, r, g, ""));
}

/* Offset of row i, head h in a tensor with strides st (batch, sequence, head). */
static LLVMValueRef row_of(att *A, const LLVMValueRef *st, LLVMValueRef i, LLVMValueRef h) {
  kc_ir *ir = A->ir;
  LLVMValueRef o = kc_ir_add(ir, kc_ir_mul(ir, A->b, st[0]), kc_ir_mul(ir, i, st[1]));
  return kc_ir_add(ir, o, kc_ir_mul(ir, h, st[2]));
}

/* QT[d][lane] = scale * q[row, head of the lane][d] (rotated), zero for lanes past the last. */
static void stage_queries(att *A) {
  kc_ir *ir = A->ir;
  LLVMValueRef one = i64c(A, 1), zero = i64c(A, 0), W = i64c(A, A->W);
  kc_loop z;
  LLVMValueRef d = kc_loop_begin(ir, &z, zero, i64c(A, A->D), one, 0, NULL);
  kc_ir_store(ir, fconst(A, 0, A->W), kc_ir_gepf(ir, A->qT, kc_ir_mul(ir, d, W)), 4);
  kc_loop_end(ir, &z, NULL);
  kc_loop li;
  LLVMValueRef lane = kc_loop_begin(ir, &li, zero, A->nrows, one, 0, NULL);
  LLVMValueRef i, h;
  slot_of(A, lane, &i, &h);
  LLVMValueRef row = row_of(A, A->qs, i, h);
  kc_loop ld_;
  d = kc_loop_begin(ir, &ld_, zero, i64c(A, A->D), one, 0, NULL);
  rotpair r = {0};
  if (A->rotary) r = pair_of(A, d);
  LLVMValueRef x = rotated(A, A->q, row, d, &r, kc_ir_add(ir, A->P, i));
  x = LLVMBuildFMul(ir->b, x, LLVMConstReal(ir->t_f32, A->scale), "");
  kc_ir_store(ir, x, kc_ir_gepf(ir, A->qT, kc_ir_add(ir, kc_ir_mul(ir, d, W), lane)), 4);
  kc_loop_end(ir, &ld_, NULL);
  kc_loop_end(ir, &li, NULL);
}

typedef struct blk {
  att *A;
  const keyrange *kr;
} blk;

/* Fast maximum (vmaxps): scores are never nan unless the inputs are. */
static LLVMValueRef vmax(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(ir->b, LLVMBuildFCmp(ir->b, LLVMRealOGT, a, b, ""), a, b, "");
}

static LLVMValueRef fadd(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFAdd(ir->b, a, b, "");
}

/* op over v[0..n) as a balanced tree (a chain would serialize on the op's latency). */
static LLVMValueRef tree(kc_ir *ir, const LLVMValueRef *v, unsigned n,
                         LLVMValueRef (*op)(kc_ir *, LLVMValueRef, LLVMValueRef)) {
  if (n == 1) return v[0];
  unsigned h = n / 2;
  return op(ir, tree(ir, v, h, op), tree(ir, v + h, n - h, op));
}

/* Additive mask values of key position kpos for the unit's rows (0 past the last row). */
static LLVMValueRef additive(att *A, LLVMValueRef kpos) {
  kc_ir *ir = A->ir;
  LLVMValueRef base = kc_ir_add(ir, kc_ir_mul(ir, A->b, A->ms[0]), kc_ir_mul(ir, kpos, A->ms[3]));
  LLVMValueRef idx = LLVMBuildAdd(ir->b, A->moffv, kc_ir_splat(ir, base, A->W), "");
  LLVMTypeRef st = kc_emit_storage_type(ir, A->mt);
  LLVMValueRef ptrs = LLVMBuildGEP2(ir->b, st, A->m, &idx, 1, "");
  LLVMTypeRef vt = LLVMVectorType(st, A->W);
  LLVMValueRef v = kc_ir_masked_gather(ir, vt, ptrs, (unsigned)kc_dtype_size(A->mt), A->rowmask,
                                       LLVMConstNull(vt));
  LLVMTypeRef ft = kc_emit_vec_type(ir->t_f32, A->W);
  if (A->mt == KC_F64) return LLVMBuildFPTrunc(ir->b, v, ft, "");
  if (A->mt != KC_F32) return LLVMBuildFPExt(ir->b, v, ft, "");
  return v;
}

/* One block of W keys starting at j0 (mask != NULL: the partial last block). */
static void key_block(void *user, LLVMValueRef j0, LLVMValueRef tail, LLVMValueRef *carry) {
  blk *bk = user;
  att *A = bk->A;
  const keyrange *kr = bk->kr;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  unsigned W = A->W;
  LLVMValueRef one = i64c(A, 1), zero = i64c(A, 0);
  LLVMValueRef jc[64], ok[64];
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef j = kc_ir_add(ir, j0, i64c(A, jj));
    jc[jj] = tail ? kc_ir_min(ir, j, kc_ir_sub(ir, kr->end, one)) : j;
    ok[jj] = tail ? kc_ir_lt(ir, j, kr->end) : NULL;
  }
  /* scores: s[jj] = sum_d QT[d] * k[jj][d] */
  LLVMValueRef s[64];
  for (unsigned jj = 0; jj < W; jj++)
    s[jj] = fconst(A, 0, W);
  kc_loop ld_;
  LLVMValueRef d = kc_loop_begin(ir, &ld_, zero, i64c(A, A->D), one, W, s);
  LLVMValueRef qv = kc_ir_load(ir, kc_emit_vec_type(ir->t_f32, W),
                               kc_ir_gepf(ir, A->qT, kc_ir_mul(ir, d, i64c(A, W))), 4);
  rotpair r = {0};
  if (kr->rotate) r = pair_of(A, d);
  LLVMValueRef next[64];
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef row = kc_ir_add(ir, kr->kbase, kc_ir_mul(ir, jc[jj], kr->kstride));
    LLVMValueRef kv = kr->rotate ? rotated(A, kr->ksrc, row, d, &r, kc_ir_add(ir, kr->pos0, jc[jj]))
                                 : ld(A, A->t, kr->ksrc, kc_ir_add(ir, row, d));
    next[jj] = kc_ir_fmuladd(ir, qv, kc_ir_splat(ir, kv, W), ld_.carry[jj]);
  }
  kc_loop_end(ir, &ld_, next);
  /* softcap, then masks */
  LLVMValueRef ninf = fconst(A, -INFINITY, W), mb;
  if (A->softcap > 0) {
    LLVMValueRef c = fconst(A, A->softcap, W), rc = fconst(A, 1 / A->softcap, W);
    for (unsigned jj = 0; jj < W; jj++)
      ld_.carry[jj] =
          LLVMBuildFMul(b, kc_vmath_tanh(ir, LLVMBuildFMul(b, ld_.carry[jj], rc, "")), c, "");
  }
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef sj = ld_.carry[jj];
    LLVMValueRef kpos = kc_ir_add(ir, kr->pos0, jc[jj]);
    LLVMValueRef keep = ok[jj] ? kc_ir_splat(ir, ok[jj], W) : NULL;
    if (A->causal) {
      LLVMValueRef kp = kc_ir_splat(ir, LLVMBuildTrunc(b, kpos, ir->t_i32, ""), W);
      LLVMValueRef vis = LLVMBuildICmp(b, LLVMIntSGE, A->qposv, kp, "");
      keep = keep ? LLVMBuildAnd(b, keep, vis, "") : vis;
    }
    if (A->mask == M_PADDING) {
      LLVMValueRef mv =
          kc_emit_load(A->e, A->mt, A->m, kc_ir_add(ir, kc_ir_mul(ir, A->b, A->T), kpos), 1);
      LLVMValueRef nz = A->mt == KC_BOOL
                            ? mv
                            : LLVMBuildICmp(b, LLVMIntNE, mv, LLVMConstNull(LLVMTypeOf(mv)), "");
      LLVMValueRef v = kc_ir_splat(ir, nz, W);
      keep = keep ? LLVMBuildAnd(b, keep, v, "") : v;
    } else if (A->mask == M_ADDITIVE) {
      sj = LLVMBuildFAdd(b, sj, additive(A, kpos), "");
    }
    if (keep) sj = LLVMBuildSelect(b, keep, sj, ninf, "");
    s[jj] = sj;
  }
  mb = tree(ir, s, W, vmax);
  /* online softmax: rescale by exp(m - m_new); a row with nothing visible yet keeps m = -inf
   * and uses 0 as its reference so exp never sees -inf - -inf */
  LLVMValueRef m = carry[0], l = carry[1];
  LLVMValueRef mnew = vmax(ir, m, mb);
  LLVMValueRef none = LLVMBuildFCmp(b, LLVMRealOEQ, mnew, ninf, "");
  LLVMValueRef muse = LLVMBuildSelect(b, none, fconst(A, 0, W), mnew, "");
  LLVMValueRef corr = kc_rv_exp(ir, LLVMBuildFSub(b, m, muse, ""));
  LLVMValueRef p[64];
  for (unsigned jj = 0; jj < W; jj++)
    p[jj] = kc_rv_exp(ir, LLVMBuildFSub(b, s[jj], muse, ""));
  LLVMValueRef psum = tree(ir, p, W, fadd);
  carry[0] = mnew;
  carry[1] = kc_ir_fmuladd(ir, l, corr, psum);
  /* accT[dv] = accT[dv] * corr + sum_jj p[jj] * v[jj][dv] */
  kc_loop lv;
  LLVMValueRef dv = kc_loop_begin(ir, &lv, zero, i64c(A, A->Dv), one, 0, NULL);
  LLVMValueRef ap = kc_ir_gepf(ir, A->accT, kc_ir_mul(ir, dv, i64c(A, W)));
  /* PV_CHAINS independent fma chains: one chain of W dependent fmas would run at the fma
   * latency, not its throughput */
  LLVMValueRef part[PV_CHAINS];
  part[0] = LLVMBuildFMul(b, kc_ir_load(ir, LLVMTypeOf(corr), ap, 4), corr, "");
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef row = kc_ir_add(ir, kr->vbase, kc_ir_mul(ir, jc[jj], kr->vstride));
    LLVMValueRef vv = kc_ir_splat(ir, ld(A, A->t, kr->vsrc, kc_ir_add(ir, row, dv)), W);
    unsigned c = jj % PV_CHAINS;
    part[c] =
        c == jj ? (c == 0 ? kc_ir_fmuladd(ir, p[jj], vv, part[0]) : LLVMBuildFMul(b, p[jj], vv, ""))
                : kc_ir_fmuladd(ir, p[jj], vv, part[c]);
  }
  kc_ir_store(ir, tree(ir, part, W < PV_CHAINS ? W : PV_CHAINS, fadd), ap, 4);
  kc_loop_end(ir, &lv, NULL);
}

/* Keys [0, n) of a range whose key 0 is at position pos0: all n, or with lastkey (causal) only
 * those at or before it (none when it is before pos0). */
static LLVMValueRef causal_end(att *A, LLVMValueRef n, LLVMValueRef pos0, LLVMValueRef lastkey) {
  if (!lastkey) return n;
  kc_ir *ir = A->ir;
  LLVMValueRef e = kc_ir_add(ir, kc_ir_sub(ir, lastkey, pos0), i64c(A, 1));
  return kc_ir_min(ir, n, kc_ir_max(ir, e, i64c(A, 0)));
}

/* Stream the keys of one range through the online softmax (carry: m, l). */
static void stream(att *A, const keyrange *kr, LLVMValueRef *carry) {
  blk bk = {A, kr};
  kc_rv_for(A->e, i64c(A, 0), kr->end, A->W, 2, carry, key_block, &bk);
}

/*
 * Unit u: batch b, kv head hk and a block of W query slots; slot r is query row r / group of
 * query head hk * group + r % group, so the heads sharing a kv head share its key blocks (and a
 * decoding step with one query row still fills group lanes).
 */
static void emit_unit(att *A, LLVMValueRef u) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  LLVMValueRef one = i64c(A, 1), zero = i64c(A, 0), Wv = i64c(A, A->W), g = i64c(A, A->group);
  LLVMValueRef nslots = kc_ir_mul(ir, A->S, g);
  LLVMValueRef nblk = kc_ir_cdiv(ir, nslots, Wv);
  LLVMValueRef bh = LLVMBuildSDiv(b, u, nblk, "");
  LLVMValueRef blk = LLVMBuildSRem(b, u, nblk, "");
  A->b = LLVMBuildSDiv(b, bh, i64c(A, A->kvh), "");
  A->hk = LLVMBuildSRem(b, bh, i64c(A, A->kvh), "");
  A->s0 = kc_ir_mul(ir, blk, Wv);
  A->nrows = kc_ir_min(ir, Wv, kc_ir_sub(ir, nslots, A->s0));
  A->rowmask = kc_ir_lane_mask(ir, A->W, 0, A->nrows);
  /* per lane: row i + T - S (the last key it sees when causal), the additive mask's offset */
  LLVMValueRef slot = kc_ir_iota(ir, A->W, A->s0, NULL), gv = kc_ir_splat(ir, g, A->W);
  LLVMValueRef iv = LLVMBuildUDiv(b, slot, gv, "");
  LLVMValueRef hv = LLVMBuildAdd(b, kc_ir_splat(ir, kc_ir_mul(ir, A->hk, g), A->W),
                                 LLVMBuildURem(b, slot, gv, ""), "");
  A->qposv = LLVMBuildTrunc(b, LLVMBuildAdd(b, iv, kc_ir_splat(ir, A->off, A->W), ""),
                            kc_emit_vec_type(ir->t_i32, A->W), "");
  if (A->mask == M_ADDITIVE)
    A->moffv = LLVMBuildAdd(b, LLVMBuildMul(b, hv, kc_ir_splat(ir, A->ms[1], A->W), ""),
                            LLVMBuildMul(b, iv, kc_ir_splat(ir, A->ms[2], A->W), ""), "");

  if (A->pres_k || A->pres_v) {
    kc_if c;
    kc_if_begin(ir, &c, LLVMBuildICmp(b, LLVMIntEQ, blk, zero, ""));
    if (A->pres_k) copy_present(A, A->prk, A->pk, A->k, A->ks, A->D, A->rotary);
    if (A->pres_v) copy_present(A, A->prv, A->pv, A->v, A->vs, A->Dv, false);
    kc_if_end(ir, &c);
  }

  stage_queries(A);
  kc_loop z;
  LLVMValueRef dv = kc_loop_begin(ir, &z, zero, i64c(A, A->Dv), one, 0, NULL);
  kc_ir_store(ir, fconst(A, 0, A->W), kc_ir_gepf(ir, A->accT, kc_ir_mul(ir, dv, Wv)), 4);
  kc_loop_end(ir, &z, NULL);

  LLVMValueRef carry[2] = {fconst(A, -INFINITY, A->W), fconst(A, 0, A->W)};
  LLVMValueRef bkv = kc_ir_add(ir, kc_ir_mul(ir, A->b, i64c(A, A->kvh)), A->hk);
  /* causal: no lane of the unit sees a key past its last row's last visible key, last + T - S
   * (absolute position); a range starting at pos0 stops there (at 0 when it sees none) */
  LLVMValueRef lastkey = NULL;
  if (A->causal) {
    LLVMValueRef last = LLVMBuildUDiv(b, kc_ir_sub(ir, kc_ir_add(ir, A->s0, A->nrows), one), g, "");
    lastkey = kc_ir_add(ir, last, A->off);
  }
  if (A->past) {
    keyrange past = {
        .kbase = kc_ir_mul(ir, kc_ir_mul(ir, bkv, A->P), i64c(A, A->D)),
        .kstride = i64c(A, A->D),
        .vbase = kc_ir_mul(ir, kc_ir_mul(ir, bkv, A->P), i64c(A, A->Dv)),
        .vstride = i64c(A, A->Dv),
        .ksrc = A->pk,
        .vsrc = A->pv,
        .pos0 = zero,
        .end = causal_end(A, A->P, zero, lastkey),
        .rotate = false,
    };
    stream(A, &past, carry);
  }
  LLVMValueRef end = causal_end(A, A->Skv, A->P, lastkey);
  keyrange cur = {
      .kbase = kc_ir_add(ir, kc_ir_mul(ir, A->b, A->ks[0]), kc_ir_mul(ir, A->hk, A->ks[2])),
      .kstride = A->ks[1],
      .vbase = kc_ir_add(ir, kc_ir_mul(ir, A->b, A->vs[0]), kc_ir_mul(ir, A->hk, A->vs[2])),
      .vstride = A->vs[1],
      .ksrc = A->k,
      .vsrc = A->v,
      .pos0 = A->P,
      .end = end,
      .rotate = A->rotary,
  };
  stream(A, &cur, carry);

  /* y = accT / l, 0 where nothing was visible */
  LLVMValueRef l = carry[1];
  LLVMValueRef empty = LLVMBuildFCmp(b, LLVMRealOEQ, l, fconst(A, 0, A->W), "");
  LLVMValueRef inv = LLVMBuildFDiv(b, fconst(A, 1, A->W), l, "");
  kc_ir_store(ir, LLVMBuildSelect(b, empty, fconst(A, 0, A->W), inv, ""), A->linv, 4);
  kc_loop li;
  LLVMValueRef lane = kc_loop_begin(ir, &li, zero, A->nrows, one, 0, NULL);
  LLVMValueRef i, h;
  slot_of(A, lane, &i, &h);
  LLVMValueRef row = row_of(A, A->ys, i, h);
  LLVMValueRef il = kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, A->linv, lane), 4);
  kc_loop lo;
  dv = kc_loop_begin(ir, &lo, zero, i64c(A, A->Dv), one, 0, NULL);
  LLVMValueRef a = kc_ir_load(
      ir, ir->t_f32, kc_ir_gepf(ir, A->accT, kc_ir_add(ir, kc_ir_mul(ir, dv, Wv), lane)), 4);
  st(A, A->t, A->y, kc_ir_add(ir, row, dv), LLVMBuildFMul(b, a, il, ""));
  kc_loop_end(ir, &lo, NULL);
  kc_loop_end(ir, &li, NULL);
}

/* ---- set-up --------------------------------------------------------------------------------- */

/* Batch, sequence and head strides of x ([B,S,H*dh] or [B,H,S,dh]) with seq length s. */
static void strides(att *A, LLVMValueRef s, int64_t h, int64_t dh, LLVMValueRef *out) {
  kc_ir *ir = A->ir;
  LLVMValueRef hd = i64c(A, h * dh);
  if (A->rank == 3) {
    out[0] = kc_ir_mul(ir, s, hd);
    out[1] = hd;
    out[2] = i64c(A, dh);
  } else {
    out[0] = kc_ir_mul(ir, s, hd);
    out[1] = i64c(A, dh);
    out[2] = kc_ir_mul(ir, s, i64c(A, dh));
  }
}

/* Strides of the additive mask broadcast to [B, heads, S, T] (0 along broadcast dims). */
static void mask_strides(att *A) {
  kc_ir *ir = A->ir;
  int mr = kc_value_of(A->e->g, A->e->n->in[MASK])->rank;
  LLVMValueRef s = i64c(A, 1), one = i64c(A, 1);
  for (int a = 3; a >= 0; a--) {
    int ma = a - (4 - mr);
    if (ma < 0) {
      A->ms[a] = i64c(A, 0);
      continue;
    }
    LLVMValueRef d = kc_emit_dim(A->e, A->e->p_dims, false, MASK, ma);
    A->ms[a] =
        LLVMBuildSelect(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, d, one, ""), i64c(A, 0), s, "");
    s = kc_ir_mul(ir, s, d);
  }
}

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  const kc_value *q = kc_value_of(e->g, e->n->in[Q]);
  int64_t heads = kc_node_int(e->n, "heads", 1), kvh = kc_node_int(e->n, "kv_heads", heads);
  LLVMValueRef s = kc_emit_dim(e, dims, false, Q, q->rank == 3 ? 1 : 2);
  LLVMValueRef slots = kc_ir_mul(e->ir, s, kc_ir_i64(e->ir, heads / kvh));
  LLVMValueRef w = kc_ir_i64(e->ir, kc_cpu_host(e->cpu)->f32_lanes);
  LLVMValueRef bh = kc_ir_mul(e->ir, kc_emit_dim(e, dims, false, Q, 0), kc_ir_i64(e->ir, kvh));
  return kc_ir_mul(e->ir, bh, kc_ir_cdiv(e->ir, slots, w));
}

static bool present(const kc_node *n, uint32_t i) { return n->nin > i && n->in[i].id; }

/* Static facts and the checks that need them. */
static kc_status configure(kc_cpu_emit *e, att *A) {
  const kc_node *n = e->n;
  kc_graph *g = (kc_graph *)e->g;
  const kc_value *q = kc_value_of(g, n->in[Q]), *k = kc_value_of(g, n->in[K]),
                 *v = kc_value_of(g, n->in[V]);
  A->t = q->dtype;
  A->rank = q->rank;
  A->heads = kc_node_int(n, "heads", 0);
  A->kvh = kc_node_int(n, "kv_heads", A->heads);
  if (A->heads <= 0 || A->kvh <= 0 || A->heads % A->kvh != 0)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "heads %lld, kv_heads %lld", (long long)A->heads,
                          (long long)A->kvh);
  A->group = A->heads / A->kvh;
  kc_dim d = A->rank == 3 ? q->dims[2] : q->dims[3], dv = A->rank == 3 ? v->dims[2] : v->dims[3];
  kc_dim dk = A->rank == 3 ? k->dims[2] : k->dims[3];
  if (KC_DIM_IS_SYM(d) || KC_DIM_IS_SYM(dv) || KC_DIM_IS_SYM(dk))
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "the head sizes must be static");
  A->D = A->rank == 3 ? d / A->heads : d;
  A->Dv = A->rank == 3 ? dv / A->kvh : dv;
  if (A->D <= 0 || A->Dv <= 0)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "empty heads (D %lld, Dv %lld)",
                          (long long)A->D, (long long)A->Dv);
  const kc_attr *sc = kc_node_attr(n, "scale");
  A->scale = sc ? sc->u.f : 1.0 / sqrt((double)A->D);
  /* softcap is not in the op's schema yet; the kernel honours it once it is */
  A->softcap = kc_node_float(n, "softcap", 0);
  const char *mask = kc_node_string(n, "mask", "none");
  A->causal = strcmp(mask, "causal") == 0;
  A->mask = strcmp(mask, "padding") == 0    ? M_PADDING
            : strcmp(mask, "additive") == 0 ? M_ADDITIVE
                                            : M_NONE;
  if (A->mask == M_NONE && !A->causal && strcmp(mask, "none") != 0)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "mask kind '%s'", mask);
  /* causal with a mask input adds it (ONNX is_causal with attn_mask), if the op allows it */
  if (A->causal && present(n, MASK)) A->mask = M_ADDITIVE;
  if ((A->mask != M_NONE) != present(n, MASK))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "mask=%s and the mask input disagree", mask);
  if (present(n, MASK)) A->mt = kc_value_of(g, n->in[MASK])->dtype;
  A->past = present(n, PAST_K) && present(n, PAST_V);
  A->rotary = present(n, COS) && present(n, SIN);
  A->interleaved = kc_node_int(n, "rotary_interleaved", 0) != 0;
  A->pres_k = n->nout > 1 && n->out[1].id;
  A->pres_v = n->nout > 2 && n->out[2].id;
  A->W = (unsigned)kc_cpu_host(e->cpu)->f32_lanes;
  if (A->W > 64) A->W = 64;
  return KC_OK;
}

kc_status kc_lower_attention(kc_cpu_emit *e) {
  att A = {.e = e, .ir = e->ir};
  kc_status s = configure(e, &A);
  if (s != KC_OK) return s;
  kc_ir *ir = e->ir;
  e->grain = 1;
  /* QT [D][W], accT [Dv][W], 1/l [W], in floats; a multiple of 64 bytes */
  e->ws_bytes = ((A.D + A.Dv + 1) * A.W * 4 + 63) / 64 * 64;

  kc_emit_kernel_begin(e);
  A.q = kc_emit_in_ptr(e, Q);
  A.k = kc_emit_in_ptr(e, K);
  A.v = kc_emit_in_ptr(e, V);
  A.y = kc_emit_out_ptr(e, 0);
  if (present(e->n, MASK)) A.m = kc_emit_in_ptr(e, MASK);
  if (A.past) A.pk = kc_emit_in_ptr(e, PAST_K), A.pv = kc_emit_in_ptr(e, PAST_V);
  if (A.pres_k) A.prk = kc_emit_out_ptr(e, 1);
  if (A.pres_v) A.prv = kc_emit_out_ptr(e, 2);
  int sdim = A.rank == 3 ? 1 : 2;
  A.S = kc_emit_dim(e, e->p_dims, false, Q, sdim);
  A.Skv = kc_emit_dim(e, e->p_dims, false, K, sdim);
  A.P = A.past ? kc_emit_dim(e, e->p_dims, false, PAST_K, 2) : i64c(&A, 0);
  A.T = kc_ir_add(ir, A.P, A.Skv);
  A.off = kc_ir_sub(ir, A.T, A.S);
  if (A.rotary) {
    A.cosp = kc_emit_in_ptr(e, COS);
    A.sinp = kc_emit_in_ptr(e, SIN);
    A.maxpos = kc_emit_dim(e, e->p_dims, false, COS, 0);
    A.cw = kc_emit_dim(e, e->p_dims, false, COS, 1);
    A.half = kc_ir_min(ir, A.cw, i64c(&A, A.D / 2));
  }
  strides(&A, A.S, A.heads, A.D, A.qs);
  strides(&A, A.Skv, A.kvh, A.D, A.ks);
  strides(&A, A.Skv, A.kvh, A.Dv, A.vs);
  strides(&A, A.S, A.heads, A.Dv, A.ys);
  if (A.mask == M_ADDITIVE) mask_strides(&A);
  A.qT = e->p_ws;
  A.accT = kc_ir_gepf(ir, e->p_ws, i64c(&A, A.D * A.W));
  A.linv = kc_ir_gepf(ir, e->p_ws, i64c(&A, (A.D + A.Dv) * A.W));
  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, i64c(&A, 1), 0, NULL);
  emit_unit(&A, u);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);
  kc_emit_units_custom(e, units);
  return KC_OK;
}
