/*
 * codegen/cpu/attention_core.c - the slot layout of the attention core (attention_core.h):
 * rotary, staging, the blocked online softmax over key ranges, and the output.
 *
 * Per unit (batch, kv head, block of W query slots), never materializing S x T:
 *   - the unit's queries, scaled (and rotated), are staged transposed in the workspace as
 *     QT[d][lane], so one vector holds dimension d of all W slots;
 *   - keys stream in blocks of W: scores s[jj] (one vector over the slots per key jj) are
 *     sum_d QT[d] * k[jj][d] with k broadcast; masks set -inf; an online softmax keeps the
 *     running max m and sum l per slot and rescales the accumulator accT[dv][lane] (workspace)
 *     once per block before adding p[jj] * v[jj][dv];
 *   - the output is accT / l; a slot whose keys are all masked has l = 0 and gives 0.
 * Full key blocks and the one partial block of a range are separate code (kc_rv_for), so full
 * blocks address keys with constant offsets when the layout is static; the partial block clamps
 * its key index (in bounds) and masks the extra keys out.
 */
#include "attention_core.h"

#include "vmath.h"

#include <math.h>
#include <string.h>

/* Independent accumulator chains of the P @ V update. */
#define PV_CHAINS 4

static bool present(const kc_node *n, uint32_t i) { return n->nin > i && n->in[i].id; }

kc_status kc_att_configure(kc_cpu_emit *e, kc_att *A, uint32_t mask_in) {
  const kc_node *n = e->n;
  kc_graph *g = (kc_graph *)e->g;
  const kc_value *q = kc_value_of(g, n->in[0]), *k = kc_value_of(g, n->in[1]),
                 *v = kc_value_of(g, n->in[2]);
  A->t = q->dtype;
  A->rank = q->rank;
  A->heads = kc_node_int(n, "heads", 0);
  A->kvh = kc_node_int(n, "kv_heads", A->heads);
  if (A->heads <= 0 || A->kvh <= 0 || A->heads % A->kvh != 0)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "heads %lld, kv_heads %lld", (long long)A->heads,
                          (long long)A->kvh);
  A->group = A->heads / A->kvh;
  int r = A->rank - 1;
  if (KC_DIM_IS_SYM(q->dims[r]) || KC_DIM_IS_SYM(k->dims[r]) || KC_DIM_IS_SYM(v->dims[r]))
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "the head sizes must be static");
  A->D = A->rank == 3 ? q->dims[r] / A->heads : q->dims[r];
  A->Dv = A->rank == 3 ? v->dims[r] / A->kvh : v->dims[r];
  int64_t Dk = A->rank == 3 ? k->dims[r] / A->kvh : k->dims[r];
  if (A->D <= 0 || A->Dv <= 0 || Dk != A->D)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "head sizes D %lld, D_k %lld, D_v %lld",
                          (long long)A->D, (long long)Dk, (long long)A->Dv);
  /* through the typed getter: text may give a float attribute as an integer ("softcap=2") */
  A->scale = kc_node_float(n, "scale", 1.0 / sqrt((double)A->D));
  A->softcap = kc_node_float(n, "softcap", 0);
  const char *mask = kc_node_string(n, "mask", "none");
  A->causal = strcmp(mask, "causal") == 0;
  A->mask = strcmp(mask, "padding") == 0    ? KC_ATT_M_PADDING
            : strcmp(mask, "additive") == 0 ? KC_ATT_M_ADDITIVE
                                            : KC_ATT_M_NONE;
  if (A->mask == KC_ATT_M_NONE && !A->causal && strcmp(mask, "none") != 0)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "mask kind '%s'", mask);
  /* causal with a mask input adds it (ONNX is_causal with attn_mask) */
  if (A->causal && present(n, mask_in)) A->mask = KC_ATT_M_ADDITIVE;
  if ((A->mask != KC_ATT_M_NONE) != present(n, mask_in))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "mask=%s and the mask input disagree", mask);
  if (present(n, mask_in)) A->mt = kc_value_of(g, n->in[mask_in])->dtype;
  A->W = (unsigned)kc_cpu_host(e->cpu)->f32_lanes;
  if (A->W > 64) A->W = 64;
  return KC_OK;
}

LLVMValueRef kc_att_ld(kc_att *A, kc_dtype t, LLVMValueRef p, LLVMValueRef idx) {
  return kc_emit_convert(A->ir, kc_emit_load(A->e, t, p, idx, 1), t, KC_F32);
}

void kc_att_st(kc_att *A, kc_dtype t, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v) {
  kc_emit_store(A->e, t, p, idx, kc_emit_convert(A->ir, v, KC_F32, t), 1);
}

static LLVMValueRef fconst(kc_att *A, double v, unsigned lanes) {
  return kc_rv_fconst(kc_emit_vec_type(A->ir->t_f32, lanes), v);
}

/* ---- rotary --------------------------------------------------------------------------------- */

kc_att_pair kc_att_pair_of(kc_att *A, LLVMValueRef d) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  kc_att_pair r;
  r.in = kc_ir_lt(ir, d, kc_ir_add(ir, A->half, A->half));
  if (A->interleaved) {
    LLVMValueRef odd = LLVMBuildTrunc(b, LLVMBuildAnd(b, d, kc_att_i64(A, 1), ""), ir->t_i1, "");
    r.ci = LLVMBuildAShr(b, d, kc_att_i64(A, 1), "");
    r.partner = LLVMBuildSelect(b, odd, kc_ir_sub(ir, d, kc_att_i64(A, 1)),
                                kc_ir_add(ir, d, kc_att_i64(A, 1)), "");
    r.neg = LLVMBuildNot(b, odd, "");
  } else {
    LLVMValueRef hi = LLVMBuildNot(b, kc_ir_lt(ir, d, A->half), "");
    r.ci = LLVMBuildSelect(b, hi, kc_ir_sub(ir, d, A->half), d, "");
    r.partner = LLVMBuildSelect(b, hi, r.ci, kc_ir_add(ir, d, A->half), "");
    r.neg = LLVMBuildNot(b, hi, "");
  }
  /* outside the rotary width: read nothing out of range */
  r.ci = LLVMBuildSelect(b, r.in, r.ci, kc_att_i64(A, 0), "");
  r.partner = LLVMBuildSelect(b, r.in, r.partner, d, "");
  return r;
}

LLVMValueRef kc_att_rotated(kc_att *A, LLVMValueRef p, LLVMValueRef row, LLVMValueRef d,
                            const kc_att_pair *r, LLVMValueRef pos) {
  kc_ir *ir = A->ir;
  LLVMValueRef x = kc_att_ld(A, A->t, p, kc_ir_add(ir, row, d));
  if (!A->rotary) return x;
  pos = kc_ir_max(ir, kc_ir_min(ir, pos, kc_ir_sub(ir, A->maxpos, kc_att_i64(A, 1))),
                  kc_att_i64(A, 0));
  LLVMValueRef ci = kc_ir_add(ir, kc_ir_mul(ir, pos, A->cw), r->ci);
  LLVMValueRef c = kc_att_ld(A, A->t, A->cosp, ci), s = kc_att_ld(A, A->t, A->sinp, ci);
  LLVMValueRef xp = kc_att_ld(A, A->t, p, kc_ir_add(ir, row, r->partner));
  LLVMValueRef ps = LLVMBuildFMul(ir->b, xp, s, "");
  ps = LLVMBuildSelect(ir->b, r->neg, LLVMBuildFNeg(ir->b, ps, ""), ps, "");
  LLVMValueRef y = kc_ir_fmuladd(ir, x, c, ps);
  return LLVMBuildSelect(ir->b, r->in, y, x, "");
}

void kc_att_rotary_caches(kc_att *A, uint32_t cos_in, uint32_t sin_in) {
  kc_cpu_emit *e = A->e;
  A->cosp = kc_emit_in_ptr(e, cos_in);
  A->sinp = kc_emit_in_ptr(e, sin_in);
  A->maxpos = kc_emit_dim(e, e->p_dims, false, cos_in, 0);
  A->cw = kc_emit_dim(e, e->p_dims, false, cos_in, 1);
  A->half = kc_ir_min(A->ir, A->cw, kc_att_i64(A, A->D / 2));
}

/* ---- set-up --------------------------------------------------------------------------------- */

void kc_att_strides(kc_att *A, int rank, LLVMValueRef s, int64_t h, int64_t dh, LLVMValueRef *out) {
  kc_ir *ir = A->ir;
  LLVMValueRef hd = kc_att_i64(A, h * dh);
  out[0] = kc_ir_mul(ir, s, hd);
  if (rank == 3) {
    out[1] = hd;
    out[2] = kc_att_i64(A, dh);
  } else {
    out[1] = kc_att_i64(A, dh);
    out[2] = kc_ir_mul(ir, s, kc_att_i64(A, dh));
  }
}

void kc_att_mask_strides(kc_att *A, uint32_t in) {
  kc_ir *ir = A->ir;
  int mr = kc_value_of(A->e->g, A->e->n->in[in])->rank;
  LLVMValueRef s = kc_att_i64(A, 1), one = kc_att_i64(A, 1);
  const kc_value *mv = kc_value_of(A->e->g, A->e->n->in[in]);
  A->m_keys_only = true; /* the head and query axes are absent or statically 1 */
  for (int a = 1; a <= 2; a++)
    if (a - (4 - mr) >= 0 && mv->dims[a - (4 - mr)] != 1) A->m_keys_only = false;
  for (int a = 3; a >= 0; a--) {
    int ma = a - (4 - mr);
    if (ma < 0) {
      A->ms[a] = kc_att_i64(A, 0);
      continue;
    }
    LLVMValueRef d = kc_emit_dim(A->e, A->e->p_dims, false, in, ma);
    A->ms[a] = LLVMBuildSelect(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, d, one, ""), kc_att_i64(A, 0),
                               s, "");
    s = kc_ir_mul(ir, s, d);
  }
}

int64_t kc_att_ws_bytes(const kc_att *A, bool slots, bool decode) {
  int64_t W = A->W, f = 0;
  /* slots: QT [D][W], accT [Dv][W], 1/l [W], lse [W]; decode: attention_decode.c's */
  if (slots) f = (A->D + A->Dv + 2) * W;
  if (decode && kc_att_dec_ws_floats(A) > f) f = kc_att_dec_ws_floats(A);
  return (f * 4 + 63) / 64 * 64;
}

/* ---- the slot layout ------------------------------------------------------------------------ */

LLVMValueRef kc_att_slot_units(kc_cpu_emit *e, LLVMValueRef dims, uint32_t q_in, int rank,
                               int64_t heads, int64_t kvh) {
  LLVMValueRef s = kc_emit_dim(e, dims, false, q_in, rank == 3 ? 1 : 2);
  LLVMValueRef slots = kc_ir_mul(e->ir, s, kc_ir_i64(e->ir, heads / kvh));
  LLVMValueRef w = kc_ir_i64(e->ir, kc_cpu_host(e->cpu)->f32_lanes);
  LLVMValueRef bh = kc_ir_mul(e->ir, kc_emit_dim(e, dims, false, q_in, 0), kc_ir_i64(e->ir, kvh));
  return kc_ir_mul(e->ir, bh, kc_ir_cdiv(e->ir, slots, w));
}

/* Query row i and head h of lane `lane` (slot s0 + lane = i * group + head in group). */
static void slot_of(kc_att *A, LLVMValueRef lane, LLVMValueRef *i, LLVMValueRef *h) {
  kc_ir *ir = A->ir;
  LLVMValueRef r = kc_ir_add(ir, A->s0, lane), g = kc_att_i64(A, A->group);
  *i = LLVMBuildUDiv(ir->b, r, g, "");
  *h = kc_ir_add(ir, kc_ir_mul(ir, A->hk, g), LLVMBuildURem(ir->b, r, g, ""));
}

/* Offset of row i, head h in a tensor with strides st (batch, sequence, head). */
static LLVMValueRef row_of(kc_att *A, const LLVMValueRef *st, LLVMValueRef b, LLVMValueRef i,
                           LLVMValueRef h) {
  kc_ir *ir = A->ir;
  LLVMValueRef o = kc_ir_add(ir, kc_ir_mul(ir, b, st[0]), kc_ir_mul(ir, i, st[1]));
  return kc_ir_add(ir, o, kc_ir_mul(ir, h, st[2]));
}

void kc_att_unit_begin(kc_att *A, LLVMValueRef u) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  LLVMValueRef Wv = kc_att_i64(A, A->W), g = kc_att_i64(A, A->group);
  LLVMValueRef nslots = kc_ir_mul(ir, A->S, g);
  LLVMValueRef nblk = kc_ir_cdiv(ir, nslots, Wv);
  LLVMValueRef bh = LLVMBuildSDiv(b, u, nblk, "");
  LLVMValueRef blk = LLVMBuildSRem(b, u, nblk, "");
  A->b = LLVMBuildSDiv(b, bh, kc_att_i64(A, A->kvh), "");
  A->hk = LLVMBuildSRem(b, bh, kc_att_i64(A, A->kvh), "");
  A->s0 = kc_ir_mul(ir, blk, Wv);
  A->nrows = kc_ir_min(ir, Wv, kc_ir_sub(ir, nslots, A->s0));
  A->rowmask = kc_ir_lane_mask(ir, A->W, 0, A->nrows);
  LLVMValueRef slot = kc_ir_iota(ir, A->W, A->s0, NULL), gv = kc_ir_splat(ir, g, A->W);
  A->iv = LLVMBuildUDiv(b, slot, gv, "");
  A->hv = LLVMBuildAdd(b, kc_ir_splat(ir, kc_ir_mul(ir, A->hk, g), A->W),
                       LLVMBuildURem(b, slot, gv, ""), "");
  if (A->mask == KC_ATT_M_ADDITIVE)
    A->moffv = LLVMBuildAdd(b, LLVMBuildMul(b, A->hv, kc_ir_splat(ir, A->ms[1], A->W), ""),
                            LLVMBuildMul(b, A->iv, kc_ir_splat(ir, A->ms[2], A->W), ""), "");
}

LLVMValueRef kc_att_unit_last_row(kc_att *A) {
  kc_ir *ir = A->ir;
  LLVMValueRef last = kc_ir_sub(ir, kc_ir_add(ir, A->s0, A->nrows), kc_att_i64(A, 1));
  return LLVMBuildUDiv(ir->b, last, kc_att_i64(A, A->group), "");
}

/* QT[d][lane] = scale * q[row, head of the lane][d] (rotated), zero for lanes past the last. */
static void stage_queries(kc_att *A) {
  kc_ir *ir = A->ir;
  LLVMValueRef one = kc_att_i64(A, 1), zero = kc_att_i64(A, 0), W = kc_att_i64(A, A->W);
  LLVMValueRef qT = A->ws;
  kc_loop z;
  LLVMValueRef d = kc_loop_begin(ir, &z, zero, kc_att_i64(A, A->D), one, 0, NULL);
  kc_ir_store(ir, fconst(A, 0, A->W), kc_ir_gepf(ir, qT, kc_ir_mul(ir, d, W)), 4);
  kc_loop_end(ir, &z, NULL);
  kc_loop li;
  LLVMValueRef lane = kc_loop_begin(ir, &li, zero, A->nrows, one, 0, NULL);
  LLVMValueRef i, h;
  slot_of(A, lane, &i, &h);
  LLVMValueRef row = row_of(A, A->qs, A->b, i, h);
  kc_loop ld_;
  d = kc_loop_begin(ir, &ld_, zero, kc_att_i64(A, A->D), one, 0, NULL);
  kc_att_pair r = {0};
  if (A->rotary) r = kc_att_pair_of(A, d);
  LLVMValueRef x = kc_att_rotated(A, A->q, row, d, &r, kc_ir_add(ir, A->P, i));
  x = LLVMBuildFMul(ir->b, x, LLVMConstReal(ir->t_f32, A->scale), "");
  kc_ir_store(ir, x, kc_ir_gepf(ir, qT, kc_ir_add(ir, kc_ir_mul(ir, d, W), lane)), 4);
  kc_loop_end(ir, &ld_, NULL);
  kc_loop_end(ir, &li, NULL);
}

static LLVMValueRef acc_of(kc_att *A) {
  return kc_ir_gepf(A->ir, A->ws, kc_att_i64(A, A->D * A->W));
}

void kc_att_unit_start(kc_att *A, LLVMValueRef *carry) {
  kc_ir *ir = A->ir;
  stage_queries(A);
  kc_loop z;
  LLVMValueRef dv =
      kc_loop_begin(ir, &z, kc_att_i64(A, 0), kc_att_i64(A, A->Dv), kc_att_i64(A, 1), 0, NULL);
  kc_ir_store(ir, fconst(A, 0, A->W),
              kc_ir_gepf(ir, acc_of(A), kc_ir_mul(ir, dv, kc_att_i64(A, A->W))), 4);
  kc_loop_end(ir, &z, NULL);
  carry[0] = fconst(A, -INFINITY, A->W);
  carry[1] = fconst(A, 0, A->W);
}

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

/* Additive mask values of key position kpos for the unit's slots (0 past the last slot; keys
 * at or past A->mlimit get -inf). */
static LLVMValueRef additive(kc_att *A, LLVMValueRef kpos) {
  kc_ir *ir = A->ir;
  if (A->m_keys_only) { /* one value for all lanes: a scalar load (key clamped when limited) */
    LLVMValueRef in = A->mlimit ? kc_ir_lt(ir, kpos, A->mlimit) : NULL;
    LLVMValueRef k = in ? LLVMBuildSelect(ir->b, in, kpos, kc_att_i64(A, 0), "") : kpos;
    LLVMValueRef at = kc_ir_add(ir, kc_ir_mul(ir, A->b, A->ms[0]), kc_ir_mul(ir, k, A->ms[3]));
    LLVMValueRef v = kc_emit_load(A->e, A->mt, A->m, at, 1);
    if (A->mt == KC_F64) v = kc_ir_fptrunc(ir->b, v, ir->t_f32, "");
    if (in) v = LLVMBuildSelect(ir->b, in, v, LLVMConstReal(ir->t_f32, -INFINITY), "");
    return kc_ir_splat(ir, v, A->W);
  }
  LLVMValueRef base = kc_ir_add(ir, kc_ir_mul(ir, A->b, A->ms[0]), kc_ir_mul(ir, kpos, A->ms[3]));
  LLVMValueRef idx = LLVMBuildAdd(ir->b, A->moffv, kc_ir_splat(ir, base, A->W), "");
  LLVMTypeRef st = kc_emit_storage_type(ir, A->mt);
  LLVMValueRef ptrs = LLVMBuildGEP2(ir->b, st, A->m, &idx, 1, "");
  LLVMTypeRef vt = LLVMVectorType(st, A->W);
  LLVMValueRef in = NULL, mask = A->rowmask;
  if (A->mlimit) {
    in = kc_ir_splat(ir, kc_ir_lt(ir, kpos, A->mlimit), A->W);
    mask = LLVMBuildAnd(ir->b, mask, in, "");
  }
  LLVMValueRef v =
      kc_ir_masked_gather(ir, vt, ptrs, (unsigned)kc_dtype_size(A->mt), mask, LLVMConstNull(vt));
  LLVMTypeRef ft = kc_emit_vec_type(ir->t_f32, A->W);
  if (A->mt == KC_F64)
    v = kc_ir_fptrunc(ir->b, v, ft, "");
  else if (A->mt != KC_F32)
    v = LLVMBuildFPExt(ir->b, v, ft, "");
  if (in) v = LLVMBuildSelect(ir->b, in, v, fconst(A, -INFINITY, A->W), "");
  return v;
}

typedef struct blk {
  kc_att *A;
  const kc_att_keys *kr;
} blk;

/* One block of W keys starting at j0 (tail != NULL: the partial last block). */
static void key_block(void *user, LLVMValueRef j0, LLVMValueRef tail, LLVMValueRef *carry) {
  blk *bk = user;
  kc_att *A = bk->A;
  const kc_att_keys *kr = bk->kr;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  unsigned W = A->W;
  LLVMValueRef one = kc_att_i64(A, 1), zero = kc_att_i64(A, 0);
  LLVMValueRef jc[64], ok[64];
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef j = kc_ir_add(ir, j0, kc_att_i64(A, jj));
    jc[jj] = tail ? kc_ir_min(ir, j, kc_ir_sub(ir, kr->end, one)) : j;
    ok[jj] = tail ? kc_ir_lt(ir, j, kr->end) : NULL;
  }
  /* scores: s[jj] = sum_d QT[d] * k[jj][d] */
  LLVMValueRef s[64];
  for (unsigned jj = 0; jj < W; jj++)
    s[jj] = fconst(A, 0, W);
  kc_loop ld_;
  LLVMValueRef d = kc_loop_begin(ir, &ld_, zero, kc_att_i64(A, A->D), one, W, s);
  LLVMValueRef qv = kc_ir_load(ir, kc_emit_vec_type(ir->t_f32, W),
                               kc_ir_gepf(ir, A->ws, kc_ir_mul(ir, d, kc_att_i64(A, W))), 4);
  kc_att_pair r = {0};
  if (kr->rotate) r = kc_att_pair_of(A, d);
  LLVMValueRef next[64];
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef row = kc_ir_add(ir, kr->kbase, kc_ir_mul(ir, jc[jj], kr->kstride));
    LLVMValueRef kv = kr->rotate
                          ? kc_att_rotated(A, kr->ksrc, row, d, &r, kc_ir_add(ir, kr->pos0, jc[jj]))
                          : kc_att_ld(A, A->t, kr->ksrc, kc_ir_add(ir, row, d));
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
    if (A->mask == KC_ATT_M_PADDING) {
      LLVMValueRef mv =
          kc_emit_load(A->e, A->mt, A->m, kc_ir_add(ir, kc_ir_mul(ir, A->b, A->mT), kpos), 1);
      LLVMValueRef nz = A->mt == KC_BOOL
                            ? mv
                            : LLVMBuildICmp(b, LLVMIntNE, mv, LLVMConstNull(LLVMTypeOf(mv)), "");
      LLVMValueRef v = kc_ir_splat(ir, nz, W);
      keep = keep ? LLVMBuildAnd(b, keep, v, "") : v;
    } else if (A->mask == KC_ATT_M_ADDITIVE) {
      sj = LLVMBuildFAdd(b, sj, additive(A, kpos), "");
    }
    if (keep) sj = LLVMBuildSelect(b, keep, sj, ninf, "");
    s[jj] = sj;
  }
  mb = tree(ir, s, W, vmax);
  /* online softmax: rescale by exp(m - m_new); a slot with nothing visible yet keeps m = -inf
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
  LLVMValueRef dv = kc_loop_begin(ir, &lv, zero, kc_att_i64(A, A->Dv), one, 0, NULL);
  LLVMValueRef ap = kc_ir_gepf(ir, acc_of(A), kc_ir_mul(ir, dv, kc_att_i64(A, W)));
  /* PV_CHAINS independent fma chains: one chain of W dependent fmas would run at the fma
   * latency, not its throughput */
  LLVMValueRef part[PV_CHAINS];
  part[0] = LLVMBuildFMul(b, kc_ir_load(ir, LLVMTypeOf(corr), ap, 4), corr, "");
  for (unsigned jj = 0; jj < W; jj++) {
    LLVMValueRef row = kc_ir_add(ir, kr->vbase, kc_ir_mul(ir, jc[jj], kr->vstride));
    LLVMValueRef vv = kc_ir_splat(ir, kc_att_ld(A, A->t, kr->vsrc, kc_ir_add(ir, row, dv)), W);
    unsigned c = jj % PV_CHAINS;
    part[c] =
        c == jj ? (c == 0 ? kc_ir_fmuladd(ir, p[jj], vv, part[0]) : LLVMBuildFMul(b, p[jj], vv, ""))
                : kc_ir_fmuladd(ir, p[jj], vv, part[c]);
  }
  kc_ir_store(ir, tree(ir, part, W < PV_CHAINS ? W : PV_CHAINS, fadd), ap, 4);
  kc_loop_end(ir, &lv, NULL);
}

void kc_att_stream(kc_att *A, const kc_att_keys *kr, LLVMValueRef *carry) {
  blk bk = {A, kr};
  kc_rv_for(A->e, kc_att_i64(A, 0), kr->end, A->W, 2, carry, key_block, &bk);
}

void kc_att_unit_end(kc_att *A, const LLVMValueRef *carry) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  LLVMValueRef zero = kc_att_i64(A, 0), one = kc_att_i64(A, 1), Wv = kc_att_i64(A, A->W);
  LLVMValueRef linv = kc_ir_gepf(ir, A->ws, kc_att_i64(A, (A->D + A->Dv) * A->W));
  LLVMValueRef l = carry[1];
  LLVMValueRef empty = LLVMBuildFCmp(b, LLVMRealOEQ, l, fconst(A, 0, A->W), "");
  LLVMValueRef inv = LLVMBuildFDiv(b, fconst(A, 1, A->W), l, "");
  kc_ir_store(ir, LLVMBuildSelect(b, empty, fconst(A, 0, A->W), inv, ""), linv, 4);
  LLVMValueRef lsep = kc_ir_gepf(ir, linv, Wv);
  if (A->lse) {
    /* the max is finite wherever the sum is not 0 */
    LLVMValueRef v = LLVMBuildFAdd(b, carry[0], kc_rv_log(ir, l), "");
    kc_ir_store(ir, LLVMBuildSelect(b, empty, fconst(A, -INFINITY, A->W), v, ""), lsep, 4);
  }
  kc_loop li;
  LLVMValueRef lane = kc_loop_begin(ir, &li, zero, A->nrows, one, 0, NULL);
  LLVMValueRef i, h;
  slot_of(A, lane, &i, &h);
  LLVMValueRef row = row_of(A, A->ys, A->b, i, h);
  LLVMValueRef il = kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, linv, lane), 4);
  if (A->lse) {
    LLVMValueRef at = kc_ir_add(
        ir, kc_ir_mul(ir, kc_ir_add(ir, kc_ir_mul(ir, A->b, kc_att_i64(A, A->heads)), h), A->S), i);
    kc_ir_store(ir, kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, lsep, lane), 4),
                kc_ir_gepf(ir, A->lse, at), 4);
  }
  kc_loop lo;
  LLVMValueRef dv = kc_loop_begin(ir, &lo, zero, kc_att_i64(A, A->Dv), one, 0, NULL);
  LLVMValueRef a = kc_ir_load(
      ir, ir->t_f32, kc_ir_gepf(ir, acc_of(A), kc_ir_add(ir, kc_ir_mul(ir, dv, Wv), lane)), 4);
  kc_att_st(A, A->t, A->y, kc_ir_add(ir, row, dv), LLVMBuildFMul(b, a, il, ""));
  kc_loop_end(ir, &lo, NULL);
  kc_loop_end(ir, &li, NULL);
}
