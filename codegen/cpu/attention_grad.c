/*
 * codegen/cpu/attention_grad.c - kc_lower_attention_grad: the backward of kernc's fused
 * attention (ir/ops.def ATTENTION_GRAD): attention_grad(q, k, v, mask?, y, dy, lse) -> dq, dk,
 * dv, FlashAttention-2 style: the probabilities are recomputed from q, k and the rows'
 * log-sum-exp, p_ij = exp(s_ij - lse_i), never stored (no S x T matrix anywhere), and
 * D_i = rowsum(dy_i * y_i) replaces the softmax's Jacobian: ds = p * (dy_i . v_j - D_i).
 * Layouts, GQA, masks (none / causal bottom-right aligned / padding / additive, causal with a
 * mask input adds it) and softcap are the forward's (attention.c); no past K/V, no rotary.
 *
 * Work units, two kinds in one launch, each owning what it writes:
 *   - query units (batch b, head h, row i), [0, B*heads*S): dq_i = scale * sum_j ds_ij k_j over
 *     the keys row i sees, in key order;
 *   - key units (batch b, kv head hk, key j), after them: dk_j = scale * sum ds_ij q_i and
 *     dv_j = sum p_ij dy_i over the query heads of hk's group, then their rows, in that order.
 * No unit reads another's results and each sums in a fixed order, so the results are bitwise the
 * same whatever the thread count or split. Each unit accumulates in f32 in its workspace and
 * stores once (f16 / bf16 / f64 convert on load and store, as the forward).
 * The cost is the recomputation (scores twice, once per kind); the loops over the head size
 * (dot products, accumulations) run W f32 lanes at a time for f32 operands, element by element
 * for other dtypes and the tail of a head size that is no multiple of W.
 */
#include "attention_core.h"

#include "vmath.h"

#include <math.h>
#include <string.h>

enum { Q, K, V, MASK, Y, DY, LSE };

typedef struct bw {
  kc_att A; /* the core's description: t, mt, mask, causal, softcap, scale, heads, ... */
  LLVMValueRef k, v, yy, dy, lse, dq, dk, dv; /* buffers */
  LLVMValueRef T, off, nq;                    /* keys, causal offset T - S, query units */
  LLVMValueRef ks[3], vs[3];
} bw;

static LLVMValueRef f32c(kc_ir *ir, double v) { return LLVMConstReal(ir->t_f32, v); }

/* Head vectors go W f32 lanes at a time, unrolled (head sizes are static and small); the rest
 * of a head, and other dtypes, element by element. */
#define MAX_UNROLL 16

static unsigned vec_chunks(const kc_att *A, int64_t n) {
  if (A->t != KC_F32 || A->W < 2 || n / A->W > MAX_UNROLL) return 0;
  return (unsigned)(n / A->W);
}

/* sum_d a[ia + d] * b[ib + d] over d < n, as f32 (a and b of dtype t); a fixed order. */
static LLVMValueRef dot(kc_att *A, LLVMValueRef a, LLVMValueRef ia, LLVMValueRef b, LLVMValueRef ib,
                        int64_t n) {
  kc_ir *ir = A->ir;
  unsigned nv = vec_chunks(A, n);
  LLVMValueRef init = f32c(ir, 0);
  if (nv) {
    LLVMValueRef acc = NULL;
    for (unsigned c = 0; c < nv; c++) {
      LLVMValueRef off = kc_att_i64(A, (int64_t)c * A->W);
      LLVMValueRef x = kc_emit_load(A->e, KC_F32, a, kc_ir_add(ir, ia, off), A->W);
      LLVMValueRef y = kc_emit_load(A->e, KC_F32, b, kc_ir_add(ir, ib, off), A->W);
      acc = acc ? kc_ir_fmuladd(ir, x, y, acc) : LLVMBuildFMul(ir->b, x, y, "");
    }
    init = kc_rv_hsum(ir, acc);
  }
  int64_t d0 = (int64_t)nv * A->W;
  if (d0 == n) return init;
  kc_loop l;
  LLVMValueRef d =
      kc_loop_begin(ir, &l, kc_att_i64(A, d0), kc_att_i64(A, n), kc_att_i64(A, 1), 1, &init);
  LLVMValueRef x = kc_att_ld(A, A->t, a, kc_ir_add(ir, ia, d));
  LLVMValueRef y = kc_att_ld(A, A->t, b, kc_ir_add(ir, ib, d));
  LLVMValueRef next = kc_ir_fmuladd(ir, x, y, l.carry[0]);
  kc_loop_end(ir, &l, &next);
  return l.carry[0];
}

/* acc[d] += c * x[ix + d] for d < n (acc: f32 workspace, 64-byte aligned). */
static void axpy(kc_att *A, LLVMValueRef acc, LLVMValueRef c, LLVMValueRef x, LLVMValueRef ix,
                 int64_t n) {
  kc_ir *ir = A->ir;
  unsigned nv = vec_chunks(A, n);
  if (nv) {
    LLVMTypeRef vt = kc_ir_vf32(ir, A->W);
    LLVMValueRef cv = kc_ir_splat(ir, c, A->W);
    for (unsigned k = 0; k < nv; k++) {
      LLVMValueRef off = kc_att_i64(A, (int64_t)k * A->W);
      LLVMValueRef p = kc_ir_gepf(ir, acc, off);
      LLVMValueRef xv = kc_emit_load(A->e, KC_F32, x, kc_ir_add(ir, ix, off), A->W);
      kc_ir_store(ir, kc_ir_fmuladd(ir, cv, xv, kc_ir_load(ir, vt, p, 4)), p, 4);
    }
  }
  int64_t d0 = (int64_t)nv * A->W;
  if (d0 == n) return;
  kc_loop l;
  LLVMValueRef d =
      kc_loop_begin(ir, &l, kc_att_i64(A, d0), kc_att_i64(A, n), kc_att_i64(A, 1), 0, NULL);
  LLVMValueRef p = kc_ir_gepf(ir, acc, d);
  LLVMValueRef xv = kc_att_ld(A, A->t, x, kc_ir_add(ir, ix, d));
  kc_ir_store(ir, kc_ir_fmuladd(ir, c, xv, kc_ir_load(ir, ir->t_f32, p, 4)), p, 4);
  kc_loop_end(ir, &l, NULL);
}

static void zero(kc_att *A, LLVMValueRef acc, int64_t n) {
  kc_ir *ir = A->ir;
  kc_loop l;
  LLVMValueRef d =
      kc_loop_begin(ir, &l, kc_att_i64(A, 0), kc_att_i64(A, n), kc_att_i64(A, 1), 0, NULL);
  kc_ir_store(ir, f32c(ir, 0), kc_ir_gepf(ir, acc, d), 4);
  kc_loop_end(ir, &l, NULL);
}

/* out[io + d] = c * acc[d] for d < n, in the output's dtype. */
static void store_scaled(kc_att *A, LLVMValueRef out, LLVMValueRef io, LLVMValueRef acc, double c,
                         int64_t n) {
  kc_ir *ir = A->ir;
  kc_loop l;
  LLVMValueRef d =
      kc_loop_begin(ir, &l, kc_att_i64(A, 0), kc_att_i64(A, n), kc_att_i64(A, 1), 0, NULL);
  LLVMValueRef x = kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, acc, d), 4);
  if (c != 1) x = LLVMBuildFMul(ir->b, x, f32c(ir, c), "");
  kc_att_st(A, A->t, out, kc_ir_add(ir, io, d), x);
  kc_loop_end(ir, &l, NULL);
}

/* Offset of row i, head h in a tensor with strides st (batch, sequence, head). */
static LLVMValueRef row_of(kc_att *A, const LLVMValueRef *st, LLVMValueRef b, LLVMValueRef i,
                           LLVMValueRef h) {
  kc_ir *ir = A->ir;
  LLVMValueRef o = kc_ir_add(ir, kc_ir_mul(ir, b, st[0]), kc_ir_mul(ir, i, st[1]));
  return kc_ir_add(ir, o, kc_ir_mul(ir, h, st[2]));
}

/*
 * The pair (query row i of head h, key j) of batch b: *keep (i1) says whether i sees j and the
 * row saw any key (lse finite); then *p = exp(s - lse) and *ds = p * (dy_i . v_j - Di) (times
 * 1 - tanh^2 under softcap). Scores as the forward: scale * q . k, softcap, then masks.
 */
typedef struct pair {
  LLVMValueRef b, h, i, j, qrow, yrow, krow, vrow, L, Di;
} pair;

static void pair_terms(bw *W, const pair *pr, LLVMValueRef *keep, LLVMValueRef *p,
                       LLVMValueRef *ds) {
  kc_att *A = &W->A;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  LLVMValueRef s =
      LLVMBuildFMul(b, dot(A, A->q, pr->qrow, W->k, pr->krow, A->D), f32c(ir, A->scale), "");
  LLVMValueRef th = NULL;
  if (A->softcap > 0) {
    th = kc_vmath_tanh(ir, LLVMBuildFMul(b, s, f32c(ir, 1 / A->softcap), ""));
    s = LLVMBuildFMul(b, th, f32c(ir, A->softcap), "");
  }
  LLVMValueRef ok = LLVMBuildFCmp(b, LLVMRealOGT, pr->L, f32c(ir, -INFINITY), "");
  if (A->causal)
    ok = LLVMBuildAnd(b, ok, LLVMBuildICmp(b, LLVMIntSLE, pr->j, kc_ir_add(ir, pr->i, W->off), ""),
                      "");
  if (A->mask == KC_ATT_M_PADDING) {
    LLVMValueRef mv =
        kc_emit_load(A->e, A->mt, A->m, kc_ir_add(ir, kc_ir_mul(ir, pr->b, W->T), pr->j), 1);
    LLVMValueRef nz =
        A->mt == KC_BOOL ? mv : LLVMBuildICmp(b, LLVMIntNE, mv, LLVMConstNull(LLVMTypeOf(mv)), "");
    ok = LLVMBuildAnd(b, ok, nz, "");
  } else if (A->mask == KC_ATT_M_ADDITIVE) {
    LLVMValueRef at = kc_ir_add(ir, kc_ir_mul(ir, pr->b, A->ms[0]), kc_ir_mul(ir, pr->h, A->ms[1]));
    at = kc_ir_add(ir, at, kc_ir_mul(ir, pr->i, A->ms[2]));
    at = kc_ir_add(ir, at, kc_ir_mul(ir, pr->j, A->ms[3]));
    s = LLVMBuildFAdd(b, s, kc_att_ld(A, A->mt, A->m, at), "");
  }
  *keep = ok;
  *p = kc_rv_exp(ir, LLVMBuildFSub(b, s, pr->L, ""));
  LLVMValueRef dp = dot(A, W->dy, pr->yrow, W->v, pr->vrow, A->Dv);
  LLVMValueRef d = LLVMBuildFMul(b, *p, LLVMBuildFSub(b, dp, pr->Di, ""), "");
  if (th)
    d = LLVMBuildFMul(b, d, LLVMBuildFSub(b, f32c(ir, 1), LLVMBuildFMul(b, th, th, ""), ""), "");
  *ds = d;
}

static LLVMValueRef lse_at(bw *W, LLVMValueRef b, LLVMValueRef h, LLVMValueRef i) {
  kc_att *A = &W->A;
  kc_ir *ir = A->ir;
  LLVMValueRef at =
      kc_ir_mul(ir, kc_ir_add(ir, kc_ir_mul(ir, b, kc_att_i64(A, A->heads)), h), A->S);
  return kc_ir_load(ir, ir->t_f32, kc_ir_gepf(ir, W->lse, kc_ir_add(ir, at, i)), 4);
}

/* Query unit u: dq of (b, h, i). */
static void query_unit(bw *W, LLVMValueRef u) {
  kc_att *A = &W->A;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  LLVMValueRef hs = kc_ir_mul(ir, kc_att_i64(A, A->heads), A->S);
  pair pr = {0};
  pr.b = LLVMBuildSDiv(b, u, hs, "");
  LLVMValueRef r = LLVMBuildSRem(b, u, hs, "");
  pr.h = LLVMBuildSDiv(b, r, A->S, "");
  pr.i = LLVMBuildSRem(b, r, A->S, "");
  LLVMValueRef hk = LLVMBuildSDiv(b, pr.h, kc_att_i64(A, A->group), "");
  pr.qrow = row_of(A, A->qs, pr.b, pr.i, pr.h);
  pr.yrow = row_of(A, A->ys, pr.b, pr.i, pr.h);
  pr.L = lse_at(W, pr.b, pr.h, pr.i);
  LLVMValueRef acc = A->ws;
  zero(A, acc, A->D);
  kc_if any;
  kc_if_begin(ir, &any, LLVMBuildFCmp(b, LLVMRealOGT, pr.L, f32c(ir, -INFINITY), ""));
  pr.Di = dot(A, W->dy, pr.yrow, W->yy, pr.yrow, A->Dv);
  /* causal: keys after i + off are invisible */
  LLVMValueRef jend = W->T;
  if (A->causal)
    jend = kc_ir_min(ir, jend,
                     kc_ir_max(ir, kc_ir_add(ir, kc_ir_add(ir, pr.i, W->off), kc_att_i64(A, 1)),
                               kc_att_i64(A, 0)));
  kc_loop lj;
  pr.j = kc_loop_begin(ir, &lj, kc_att_i64(A, 0), jend, kc_att_i64(A, 1), 0, NULL);
  pr.krow = row_of(A, W->ks, pr.b, pr.j, hk);
  pr.vrow = row_of(A, W->vs, pr.b, pr.j, hk);
  LLVMValueRef keep, p, ds;
  pair_terms(W, &pr, &keep, &p, &ds);
  kc_if c;
  kc_if_begin(ir, &c, keep);
  axpy(A, acc, ds, W->k, pr.krow, A->D);
  kc_if_end(ir, &c);
  kc_loop_end(ir, &lj, NULL);
  kc_if_end(ir, &any);
  store_scaled(A, W->dq, pr.qrow, acc, A->scale, A->D);
}

/* Key unit u: dk and dv of (b, hk, j). */
static void key_unit(bw *W, LLVMValueRef u) {
  kc_att *A = &W->A;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  LLVMValueRef ht = kc_ir_mul(ir, kc_att_i64(A, A->kvh), W->T);
  pair pr = {0};
  pr.b = LLVMBuildSDiv(b, u, ht, "");
  LLVMValueRef r = LLVMBuildSRem(b, u, ht, "");
  LLVMValueRef hk = LLVMBuildSDiv(b, r, W->T, "");
  pr.j = LLVMBuildSRem(b, r, W->T, "");
  pr.krow = row_of(A, W->ks, pr.b, pr.j, hk);
  pr.vrow = row_of(A, W->vs, pr.b, pr.j, hk);
  LLVMValueRef dk = A->ws, dv = kc_ir_gepf(ir, A->ws, kc_att_i64(A, A->D));
  zero(A, dk, A->D);
  zero(A, dv, A->Dv);
  /* causal: rows before j - off do not see key j */
  LLVMValueRef i0 =
      A->causal ? kc_ir_max(ir, kc_ir_sub(ir, pr.j, W->off), kc_att_i64(A, 0)) : kc_att_i64(A, 0);
  kc_loop lg;
  LLVMValueRef gi =
      kc_loop_begin(ir, &lg, kc_att_i64(A, 0), kc_att_i64(A, A->group), kc_att_i64(A, 1), 0, NULL);
  pr.h = kc_ir_add(ir, kc_ir_mul(ir, hk, kc_att_i64(A, A->group)), gi);
  kc_loop li;
  pr.i = kc_loop_begin(ir, &li, i0, A->S, kc_att_i64(A, 1), 0, NULL);
  pr.L = lse_at(W, pr.b, pr.h, pr.i);
  pr.qrow = row_of(A, A->qs, pr.b, pr.i, pr.h);
  pr.yrow = row_of(A, A->ys, pr.b, pr.i, pr.h);
  pr.Di = dot(A, W->dy, pr.yrow, W->yy, pr.yrow, A->Dv);
  LLVMValueRef keep, p, ds;
  pair_terms(W, &pr, &keep, &p, &ds);
  kc_if c;
  kc_if_begin(ir, &c, keep);
  axpy(A, dv, p, W->dy, pr.yrow, A->Dv);
  axpy(A, dk, ds, A->q, pr.qrow, A->D);
  kc_if_end(ir, &c);
  kc_loop_end(ir, &li, NULL);
  kc_loop_end(ir, &lg, NULL);
  store_scaled(A, W->dk, pr.krow, dk, A->scale, A->D);
  store_scaled(A, W->dv, pr.vrow, dv, 1, A->Dv);
}

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  const kc_node *n = e->n;
  int rank = kc_value_of(e->g, n->in[Q])->rank, sd = rank == 3 ? 1 : 2;
  int64_t heads = kc_node_int(n, "heads", 1), kvh = kc_node_int(n, "kv_heads", heads);
  kc_ir *ir = e->ir;
  LLVMValueRef B = kc_emit_dim(e, dims, false, Q, 0);
  LLVMValueRef nq =
      kc_ir_mul(ir, kc_ir_mul(ir, B, kc_ir_i64(ir, heads)), kc_emit_dim(e, dims, false, Q, sd));
  LLVMValueRef nk =
      kc_ir_mul(ir, kc_ir_mul(ir, B, kc_ir_i64(ir, kvh)), kc_emit_dim(e, dims, false, K, sd));
  return kc_ir_add(ir, nq, nk);
}

static bool present(const kc_node *n, uint32_t i) { return n->nin > i && n->in[i].id; }

kc_status kc_lower_attention_grad(kc_cpu_emit *e) {
  bw W = {.A = {.e = e, .ir = e->ir}};
  kc_att *A = &W.A;
  kc_status s = kc_att_configure(e, A, MASK);
  if (s != KC_OK) return s;
  kc_ir *ir = e->ir;
  /* units differ in cost (causal rows, and query against key units): hand out small chunks */
  e->grain = 4;
  e->ws_bytes = ((A->D + A->Dv) * 4 + 63) / 64 * 64;

  kc_emit_kernel_begin(e);
  A->q = kc_emit_in_ptr(e, Q);
  W.k = kc_emit_in_ptr(e, K);
  W.v = kc_emit_in_ptr(e, V);
  if (present(e->n, MASK)) A->m = kc_emit_in_ptr(e, MASK);
  W.yy = kc_emit_in_ptr(e, Y);
  W.dy = kc_emit_in_ptr(e, DY);
  W.lse = kc_emit_in_ptr(e, LSE);
  W.dq = kc_emit_out_ptr(e, 0);
  W.dk = kc_emit_out_ptr(e, 1);
  W.dv = kc_emit_out_ptr(e, 2);
  int sdim = A->rank == 3 ? 1 : 2;
  A->S = kc_emit_dim(e, e->p_dims, false, Q, sdim);
  W.T = kc_emit_dim(e, e->p_dims, false, K, sdim);
  W.off = kc_ir_sub(ir, W.T, A->S);
  A->mT = W.T;
  kc_att_strides(A, A->rank, A->S, A->heads, A->D, A->qs);
  kc_att_strides(A, A->rank, W.T, A->kvh, A->D, W.ks);
  kc_att_strides(A, A->rank, W.T, A->kvh, A->Dv, W.vs);
  kc_att_strides(A, A->rank, A->S, A->heads, A->Dv, A->ys);
  if (A->mask == KC_ATT_M_ADDITIVE) kc_att_mask_strides(A, MASK);
  A->ws = e->p_ws;
  LLVMValueRef B = kc_emit_dim(e, e->p_dims, false, Q, 0);
  W.nq = kc_ir_mul(ir, kc_ir_mul(ir, B, kc_att_i64(A, A->heads)), A->S);
  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, kc_att_i64(A, 1), 0, NULL);
  kc_if c;
  kc_if_begin(ir, &c, kc_ir_lt(ir, u, W.nq));
  query_unit(&W, u);
  kc_if_else(ir, &c);
  key_unit(&W, kc_ir_sub(ir, u, W.nq));
  kc_if_end(ir, &c);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);
  kc_emit_units_custom(e, units);
  return KC_OK;
}
