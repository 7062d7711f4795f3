/*
 * codegen/cpu/attention.c - kc_lower_attention: kernc's fused attention op (ir/ops.def):
 * q [B,S,heads*D] or [B,heads,S,D]; k/v [B,S_kv,kv_heads*D(v)] or [B,kv_heads,S_kv,D(v)]; GQA
 * (query head h reads kv head h / (heads / kv_heads)); mask none / causal / padding ([B, T],
 * nonzero = keep) / additive (broadcast to [B, heads, S, T]); past K/V [B, kv_heads, P, D] before
 * the new keys; present K/V outputs; rotary (cos/sin [max_pos, R/2]) applied to q and the new
 * keys at positions P + index; lse (result 3, when asked) f32 [B, heads, S], each row's
 * log-sum-exp, from the online softmax's max and sum (the backward's statistic).
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
 * The online softmax over the keys is the attention core's slot layout (attention_core.h): this
 * file only says which keys a unit sees, as two ranges, the past K/V then the new keys (rotated
 * as they are read); causal units stop at their last visible key.
 * Present K/V are written by the first slot block of each (batch, kv head); every unit reads
 * keys from past_k/k (never from present), so no unit waits on another.
 * Arithmetic is f32 whatever the input type (f16/bf16/f64 convert on load and store).
 */
#include "attention_core.h"

#include <math.h>
#include <string.h>

enum { Q, K, V, MASK, PAST_K, PAST_V, COS, SIN };

/* The fused op's operands beyond the core's. */
typedef struct fused {
  kc_att A;
  bool past, pres_k, pres_v;
  LLVMValueRef k, v, pk, pv, prk, prv; /* buffers */
  LLVMValueRef Skv, P, T, off;         /* off = T - S: causal alignment */
  LLVMValueRef ks[3], vs[3];           /* strides of batch, sequence, head */
} fused;

/* ---- present K/V ---------------------------------------------------------------------------- */

/* present[b, hk, :, :] = past[b, hk] then the new rows (rotated keys when rotate). */
static void copy_present(fused *F, LLVMValueRef dst, LLVMValueRef past, LLVMValueRef src,
                         const LLVMValueRef *ss, int64_t dh, bool rotate) {
  kc_att *A = &F->A;
  kc_ir *ir = A->ir;
  LLVMValueRef one = kc_att_i64(A, 1), zero = kc_att_i64(A, 0), dhv = kc_att_i64(A, dh);
  LLVMValueRef bh = kc_ir_add(ir, kc_ir_mul(ir, A->b, kc_att_i64(A, A->kvh)), A->hk);
  LLVMValueRef dst0 = kc_ir_mul(ir, kc_ir_mul(ir, bh, F->T), dhv);
  if (F->past) {
    LLVMValueRef src0 = kc_ir_mul(ir, kc_ir_mul(ir, bh, F->P), dhv);
    LLVMValueRef n = kc_ir_mul(ir, F->P, dhv);
    kc_loop l;
    LLVMValueRef i = kc_loop_begin(ir, &l, zero, n, one, 0, NULL);
    LLVMValueRef x = kc_emit_load(A->e, A->t, past, kc_ir_add(ir, src0, i), 1);
    kc_emit_store(A->e, A->t, dst, kc_ir_add(ir, dst0, i), x, 1);
    kc_loop_end(ir, &l, NULL);
  }
  LLVMValueRef base = kc_ir_add(ir, kc_ir_mul(ir, A->b, ss[0]), kc_ir_mul(ir, A->hk, ss[2]));
  kc_loop lj;
  LLVMValueRef j = kc_loop_begin(ir, &lj, zero, F->Skv, one, 0, NULL);
  LLVMValueRef row = kc_ir_add(ir, base, kc_ir_mul(ir, j, ss[1]));
  LLVMValueRef drow = kc_ir_add(ir, dst0, kc_ir_mul(ir, kc_ir_add(ir, F->P, j), dhv));
  kc_loop ld_;
  LLVMValueRef d = kc_loop_begin(ir, &ld_, zero, dhv, one, 0, NULL);
  if (rotate) {
    kc_att_pair r = kc_att_pair_of(A, d);
    kc_att_st(A, A->t, dst, kc_ir_add(ir, drow, d),
              kc_att_rotated(A, src, row, d, &r, kc_ir_add(ir, F->P, j)));
  } else {
    LLVMValueRef x = kc_emit_load(A->e, A->t, src, kc_ir_add(ir, row, d), 1);
    kc_emit_store(A->e, A->t, dst, kc_ir_add(ir, drow, d), x, 1);
  }
  kc_loop_end(ir, &ld_, NULL);
  kc_loop_end(ir, &lj, NULL);
}

/* ---- one unit ------------------------------------------------------------------------------- */

/* Keys [0, n) of a range whose key 0 is at position pos0: all n, or with lastkey (causal) only
 * those at or before it (none when it is before pos0). */
static LLVMValueRef causal_end(kc_att *A, LLVMValueRef n, LLVMValueRef pos0, LLVMValueRef lastkey) {
  if (!lastkey) return n;
  kc_ir *ir = A->ir;
  LLVMValueRef e = kc_ir_add(ir, kc_ir_sub(ir, lastkey, pos0), kc_att_i64(A, 1));
  return kc_ir_min(ir, n, kc_ir_max(ir, e, kc_att_i64(A, 0)));
}

/*
 * Unit u: batch b, kv head hk and a block of W query slots (attention_core.h); the keys are two
 * ranges, the past K/V [B, kv_heads, P, D] and the new keys (rotated as they are read).
 */
static void emit_unit(fused *F, LLVMValueRef u) {
  kc_att *A = &F->A;
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  kc_att_unit_begin(A, u);
  /* per lane: row i + T - S, the last key it sees when causal */
  A->qposv = LLVMBuildTrunc(b, LLVMBuildAdd(b, A->iv, kc_ir_splat(ir, F->off, A->W), ""),
                            kc_emit_vec_type(ir->t_i32, A->W), "");
  if (F->pres_k || F->pres_v) {
    kc_if c;
    kc_if_begin(ir, &c, LLVMBuildICmp(b, LLVMIntEQ, A->s0, kc_att_i64(A, 0), ""));
    if (F->pres_k) copy_present(F, F->prk, F->pk, F->k, F->ks, A->D, A->rotary);
    if (F->pres_v) copy_present(F, F->prv, F->pv, F->v, F->vs, A->Dv, false);
    kc_if_end(ir, &c);
  }
  LLVMValueRef carry[2];
  kc_att_unit_start(A, carry);
  LLVMValueRef bkv = kc_ir_add(ir, kc_ir_mul(ir, A->b, kc_att_i64(A, A->kvh)), A->hk);
  /* causal: no lane of the unit sees a key past its last row's last visible key, last + T - S
   * (absolute position); a range starting at pos0 stops there (at 0 when it sees none) */
  LLVMValueRef lastkey = A->causal ? kc_ir_add(ir, kc_att_unit_last_row(A), F->off) : NULL;
  if (F->past) {
    kc_att_keys past = {
        .kbase = kc_ir_mul(ir, kc_ir_mul(ir, bkv, F->P), kc_att_i64(A, A->D)),
        .kstride = kc_att_i64(A, A->D),
        .vbase = kc_ir_mul(ir, kc_ir_mul(ir, bkv, F->P), kc_att_i64(A, A->Dv)),
        .vstride = kc_att_i64(A, A->Dv),
        .ksrc = F->pk,
        .vsrc = F->pv,
        .pos0 = kc_att_i64(A, 0),
        .end = causal_end(A, F->P, kc_att_i64(A, 0), lastkey),
    };
    kc_att_stream(A, &past, carry);
  }
  kc_att_keys cur = {
      .kbase = kc_ir_add(ir, kc_ir_mul(ir, A->b, F->ks[0]), kc_ir_mul(ir, A->hk, F->ks[2])),
      .kstride = F->ks[1],
      .vbase = kc_ir_add(ir, kc_ir_mul(ir, A->b, F->vs[0]), kc_ir_mul(ir, A->hk, F->vs[2])),
      .vstride = F->vs[1],
      .ksrc = F->k,
      .vsrc = F->v,
      .pos0 = F->P,
      .end = causal_end(A, F->Skv, F->P, lastkey),
      .rotate = A->rotary,
  };
  kc_att_stream(A, &cur, carry);
  kc_att_unit_end(A, carry);
}

/* ---- set-up --------------------------------------------------------------------------------- */

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  int64_t heads = kc_node_int(e->n, "heads", 1), kvh = kc_node_int(e->n, "kv_heads", heads);
  return kc_att_slot_units(e, dims, Q, kc_value_of(e->g, e->n->in[Q])->rank, heads, kvh);
}

static bool present(const kc_node *n, uint32_t i) { return n->nin > i && n->in[i].id; }

/* Static facts and the checks that need them: the core's, then the forward's own inputs and
 * results. */
static kc_status configure(kc_cpu_emit *e, fused *F) {
  kc_att *A = &F->A;
  const kc_node *n = e->n;
  kc_status s = kc_att_configure(e, A, MASK);
  if (s != KC_OK) return s;
  F->past = present(n, PAST_K) && present(n, PAST_V);
  A->rotary = present(n, COS) && present(n, SIN);
  A->interleaved = kc_node_int(n, "rotary_interleaved", 0) != 0;
  F->pres_k = n->nout > 1 && n->out[1].id;
  F->pres_v = n->nout > 2 && n->out[2].id;
  return KC_OK;
}

kc_status kc_lower_attention(kc_cpu_emit *e) {
  fused F = {.A = {.e = e, .ir = e->ir}};
  kc_att *A = &F.A;
  kc_status s = configure(e, &F);
  if (s != KC_OK) return s;
  kc_ir *ir = e->ir;
  e->grain = 1;
  e->ws_bytes = kc_att_ws_bytes(A, true, false);

  kc_emit_kernel_begin(e);
  A->q = kc_emit_in_ptr(e, Q);
  F.k = kc_emit_in_ptr(e, K);
  F.v = kc_emit_in_ptr(e, V);
  A->y = kc_emit_out_ptr(e, 0);
  if (present(e->n, MASK)) A->m = kc_emit_in_ptr(e, MASK);
  if (F.past) F.pk = kc_emit_in_ptr(e, PAST_K), F.pv = kc_emit_in_ptr(e, PAST_V);
  if (F.pres_k) F.prk = kc_emit_out_ptr(e, 1);
  if (F.pres_v) F.prv = kc_emit_out_ptr(e, 2);
  if (e->n->nout > 3 && e->n->out[3].id) A->lse = kc_emit_out_ptr(e, 3);
  int sdim = A->rank == 3 ? 1 : 2;
  A->S = kc_emit_dim(e, e->p_dims, false, Q, sdim);
  F.Skv = kc_emit_dim(e, e->p_dims, false, K, sdim);
  F.P = F.past ? kc_emit_dim(e, e->p_dims, false, PAST_K, 2) : kc_att_i64(A, 0);
  F.T = kc_ir_add(ir, F.P, F.Skv);
  F.off = kc_ir_sub(ir, F.T, A->S);
  A->P = F.P; /* query row i is at position P + i */
  A->mT = F.T;
  if (A->rotary) kc_att_rotary_caches(A, COS, SIN);
  kc_att_strides(A, A->rank, A->S, A->heads, A->D, A->qs);
  kc_att_strides(A, A->rank, F.Skv, A->kvh, A->D, F.ks);
  kc_att_strides(A, A->rank, F.Skv, A->kvh, A->Dv, F.vs);
  kc_att_strides(A, A->rank, A->S, A->heads, A->Dv, A->ys);
  if (A->mask == KC_ATT_M_ADDITIVE) kc_att_mask_strides(A, MASK);
  A->ws = e->p_ws;
  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, kc_att_i64(A, 1), 0, NULL);
  emit_unit(&F, u);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);
  kc_emit_units_custom(e, units);
  return KC_OK;
}
