/*
 * passes/fuse_attention.c - fuse-attention: scaled dot-product attention as exporters write it
 * becomes one `attention` op (ir/ops.def), the FlashAttention-style kernel that never
 * materializes the [S, T] scores.
 *
 * One rule, run by the matcher to a fixpoint, finds matmul(softmax(scores), v) with the softmax
 * over the last axis and used once (or matmul(where(is_nan(p), 0, p), v) of such a softmax p: the
 * dynamo exporter's guard, which gives what the kernel gives a fully masked row); the scores must
 * then be one of the forms below (declarative patterns too, matched at the scores' producer,
 * longest first). From there the rewrite looks through, without consuming (a view or repeat that
 * something else reads stays for it):
 *   - head splits: q = transpose(reshape(x [B,S,H*D], [B,S,H,D]), [0,2,1,3]) reads x, and
 *     kT = transpose(reshape(k), [0,2,3,1]) (or a transpose(0,1,3,2) of a split k) reads k;
 *   - a scalar constant multiplying q or k (the scale folded into them) joins the scale;
 *   - GQA/MQA repeats of the kv heads (reshape(expand(reshape(x, [B,Hkv,1,T,D]))), Hugging
 *     Face's repeat_kv, or expand(x [B,1,T,D])) set kv_heads;
 *   - the rotate-half rotary on q and k (passes/fuse_rotary.c) becomes the attention's cos/sin;
 *   - the mask (passes/fuse_attention_mask.c): causal (mask=causal, no tensor), padding
 *     (mask=padding on a [B, T] keep mask proven 0/1: an int64 attention_mask is not), anything
 *     else added (mask=additive); a where condition that is neither causal nor padding does not
 *     fuse, nor does a where whose finite fill an added mask not proven <= 0 could undo.
 * With q, k and v all split from [B, S, H*D] tensors the op takes those, and its result replaces
 * the head merge (transpose(0,2,1,3) + reshape to [B,S,H*D]) that follows, or is split back to
 * [B, H, S, D]; otherwise it takes the 4-D tensors ([B, H, S, D], which the op also accepts).
 * Two more rules improve attention ops made elsewhere (the ONNX Attention importer): an
 * additive mask the analysis names becomes causal / padding (or causal plus the padding part
 * alone), and rotary ops on q and k at positions 0, 1, ... become the op's cos/sin. CSE runs
 * after a change, so layers sharing cos/sin share the caches built from them.
 * Near misses are reported by the driver under --explain-fusion, with the reason.
 * Invariants: the result computes what the graph computes, up to a row whose keys are all masked
 * (0 here; see fuse_attention_mask.c) and large negatives standing for -inf; nodes are added only
 * once the rewrite is decided (all analysis first), so no node pointer goes stale.
 */
#include "passes/fuse_attention.h"

#include <math.h>
#include <string.h>

/* ---- graph reading, shared with the other fuse-attention files ------------------------------ */

const kc_node *kc_fa_def(const kc_graph *g, kc_val v) {
  if (!v.id || v.id >= g->nvals || !g->vals[v.id].def) return NULL;
  return &g->nodes[g->vals[v.id].def - 1];
}

const kc_tensor *kc_fa_data(const kc_graph *g, kc_val v) {
  const kc_tensor *t = kc_const_tensor(g, v);
  const kc_node *n = kc_fa_def(g, v);
  if (t || !n || n->op != KC_OP_WEIGHT) return t;
  const char *name = kc_node_string(n, "name", NULL);
  for (uint32_t i = 0; name && i < g->ntensors; i++) {
    const kc_tensor *w = &g->tensors[i];
    if (w->name && strcmp(w->name, name) == 0) return w->data || !w->nbytes ? w : NULL;
  }
  return NULL;
}

bool kc_fa_scalar(const kc_graph *g, kc_val v, double *x) {
  const kc_tensor *t = kc_fa_data(g, v);
  if (!t || kc_tensor_numel(t) != 1) return false;
  *x = kc_tensor_get(t, 0);
  return true;
}

bool kc_fa_int1(const kc_graph *g, kc_val v, int64_t *x) {
  const kc_tensor *t = kc_fa_data(g, v);
  double d;
  if (!t || !kc_dtype_is_int(t->dtype) || !kc_fa_scalar(g, v, &d)) return false;
  *x = (int64_t)d;
  return true;
}

int64_t kc_fa_dim(const kc_graph *g, kc_val v, int axis) {
  const kc_value *x = kc_value_of(g, v);
  if (axis < 0) axis += x->rank;
  if (axis < 0 || axis >= x->rank) return -1;
  int64_t c;
  if (!KC_DIM_IS_SYM(x->dims[axis])) return x->dims[axis];
  return kc_dim_const(g, x->dims[axis], &c) ? c : -1;
}

bool kc_fa_same_dim(const kc_graph *g, kc_val a, int ia, kc_val b, int ib) {
  const kc_value *x = kc_value_of(g, a), *y = kc_value_of(g, b);
  if (ia < 0) ia += x->rank;
  if (ib < 0) ib += y->rank;
  return ia >= 0 && ia < x->rank && ib >= 0 && ib < y->rank &&
         kc_dim_same(g, x->dims[ia], y->dims[ib]);
}

/* ---- patterns ------------------------------------------------------------------------------- */

enum { Q, KT, V, SC, SCALE, MASK, COND, FILL, FILLI, K, ZERO };

static bool softmax_last(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  int r = kc_value_of(g, n->in[0])->rank;
  int64_t axis = kc_node_int(n, "axis", -1);
  if (axis == -1 || axis == r - 1) return true;
  snprintf(why, size, "softmax over axis %lld, not the last", (long long)axis);
  return false;
}

/* matmul(softmax(scores), v)  ->  attention(q, k, v, mask?, _, _, cos?, sin?) {heads, kv_heads,
 * scale, mask}, scores one of the forms below */
static const kc_pat attn[] = {
    P_OP(MATMUL, P_SUB(1), P_CAP(V)),
    P_OPIF(SOFTMAX, softmax_last, P_CAP(SC)),
};

/* matmul(where(is_nan(p), 0, p), v) with p = softmax(scores): the dynamo exporter's guard for
 * rows whose keys are all masked (-inf everywhere gives nan), which the fused kernel already
 * gives 0 (it differs only where the scores themselves hold a nan) */
static const kc_pat attn_guarded[] = {
    P_OP(MATMUL, P_SUB(1), P_CAP(V)),
    P_OP(WHERE, P_SUB(2), P_CAP(ZERO), P_SUB(3)),
    P_OP(IS_NAN, P_SUB(3)),
    P_OPIF(SOFTMAX, softmax_last, P_CAP(SC)),
};

/* Rows of the score forms; the q @ kT row is always last. */
/* clang-format off */
#define QK_ROW          P_OP(MATMUL, P_CAP(Q), P_CAP(KT))
#define SCALE_ROW(r)    P_OP(MUL, P_SUB(r), P_CONST_SCALAR(SCALE))
#define ADD_ROW(r)      P_OP(ADD, P_SUB(r), P_CAP(MASK))
#define KEEP_ROW(r)     P_OP(WHERE, P_CAP(COND), P_SUB(r), P_CONST_SCALAR(FILL))
#define DROP_ROW(r)     P_OP(WHERE, P_CAP(COND), P_CONST_SCALAR(FILLI), P_SUB(r))
/* clang-format on */

/* q @ kT * s */
static const kc_pat s_scaled[] = {SCALE_ROW(1), QK_ROW};
/* q @ kT  (the scale folded into q or k, or none) */
static const kc_pat s_plain[] = {QK_ROW};
/* q @ kT * s + m */
static const kc_pat s_scaled_add[] = {ADD_ROW(1), SCALE_ROW(2), QK_ROW};
/* q @ kT + m */
static const kc_pat s_add[] = {ADD_ROW(1), QK_ROW};
/* where(c, q @ kT * s, -big): c keeps */
static const kc_pat s_scaled_keep[] = {KEEP_ROW(1), SCALE_ROW(2), QK_ROW};
/* where(c, q @ kT, -big) */
static const kc_pat s_keep[] = {KEEP_ROW(1), QK_ROW};
/* where(c, -big, q @ kT * s): c masks */
static const kc_pat s_scaled_drop[] = {DROP_ROW(1), SCALE_ROW(2), QK_ROW};
/* where(c, -big, q @ kT) */
static const kc_pat s_drop[] = {DROP_ROW(1), QK_ROW};
/* where(c, q @ kT * s, -big) + m */
static const kc_pat s_scaled_keep_add[] = {ADD_ROW(1), KEEP_ROW(2), SCALE_ROW(3), QK_ROW};
/* where(c, -big, q @ kT * s) + m */
static const kc_pat s_scaled_drop_add[] = {ADD_ROW(1), DROP_ROW(2), SCALE_ROW(3), QK_ROW};
/* where(c, q @ kT * s + m, -big) */
static const kc_pat s_scaled_add_keep[] = {KEEP_ROW(1), ADD_ROW(2), SCALE_ROW(3), QK_ROW};
/* where(c, -big, q @ kT * s + m) */
static const kc_pat s_scaled_add_drop[] = {DROP_ROW(1), ADD_ROW(2), SCALE_ROW(3), QK_ROW};

typedef struct form {
  const char *name;
  const kc_pat *pat;
  int nrows;
} form;

#define FORM(p)                                                                                    \
  { #p, p, KC_LEN(p) }

static const form forms[] = {
    FORM(s_scaled_keep_add),
    FORM(s_scaled_drop_add),
    FORM(s_scaled_add_keep),
    FORM(s_scaled_add_drop),
    FORM(s_scaled_add),
    FORM(s_scaled_keep),
    FORM(s_scaled_drop),
    FORM(s_add),
    FORM(s_keep),
    FORM(s_drop),
    FORM(s_scaled),
    FORM(s_plain),
};

/* ---- q, k and v ------------------------------------------------------------------------------ */

static const int64_t P0213[4] = {0, 2, 1, 3}, P0132[4] = {0, 1, 3, 2}, P0231[4] = {0, 2, 3, 1};

typedef enum side_kind { SIDE_Q, SIDE_K, SIDE_V } side_kind;

/* Where one of q, k, v comes from. */
typedef struct side {
  kc_val v4;     /* [B, H, S, D] after looking through scale, rotary, repeats; 0: see split */
  kc_val split;  /* [B, S, H, D] that v4 (or kT) transposes */
  kc_val x3;     /* [B, S, H*D] that split reshapes; 0 when there is none */
  kc_val raw_kt; /* k only: kT itself when it is no transpose */
  int64_t heads; /* H of v4 (or split) */
  double scale;  /* constant factors found on the way */
  kc_fa_rot rot; /* rotate-half rotary found (rot.x set) */
} side;

/* One rewrite: the graph and use counts for the sub-pattern matches. */
typedef struct fa {
  kc_rewriter *rw;
  kc_graph *g;
  kc_uses u;
} fa;

static bool perm_is(const kc_node *n, const int64_t *p) {
  const kc_attr *a = kc_node_attr(n, "perm");
  if (!a || a->kind != KC_ATTR_INTS || a->u.ints.n != 4) return false;
  for (int i = 0; i < 4; i++)
    if (a->u.ints.v[i] != p[i]) return false;
  return true;
}

/* v = transpose(x) {perm}: x, else {0} */
static kc_val through_transpose(const kc_graph *g, kc_val v, const int64_t *perm) {
  const kc_node *n = kc_fa_def(g, v);
  return n && n->op == KC_OP_TRANSPOSE && perm_is(n, perm) ? n->in[0] : (kc_val){0};
}

/* r [B, S, H, D] = reshape(x [B, S, H*D]): x, else {0} */
static kc_val split_source(const kc_graph *g, kc_val r) {
  const kc_node *n = kc_fa_def(g, r);
  if (!n || n->op != KC_OP_RESHAPE) return (kc_val){0};
  kc_val x = n->in[0];
  int64_t h = kc_fa_dim(g, r, 2), d = kc_fa_dim(g, r, 3), w = kc_fa_dim(g, x, 2);
  bool ok = kc_value_of(g, x)->rank == 3 && kc_value_of(g, r)->rank == 4 &&
            kc_fa_same_dim(g, x, 0, r, 0) && kc_fa_same_dim(g, x, 1, r, 1) && h > 0 && d > 0 &&
            w == h * d;
  return ok ? x : (kc_val){0};
}

/* v = x * c, c a float constant of one element: v becomes x, *scale takes c */
static bool peel_scale(const kc_graph *g, kc_val *v, double *scale) {
  const kc_node *n = kc_fa_def(g, *v);
  if (!n || n->op != KC_OP_MUL) return false;
  for (int k = 0; k < 2; k++) {
    const kc_tensor *t = kc_fa_data(g, n->in[k]);
    double c;
    if (!t || !kc_dtype_is_float(t->dtype) || !kc_fa_scalar(g, n->in[k], &c)) continue;
    *scale *= c;
    *v = n->in[1 - k];
    return true;
  }
  return false;
}

/*
 * Repeated kv heads: v [B, Hkv*n, T, D] = reshape(expand(reshape(x, [B, Hkv, 1, T, D]),
 * [B, Hkv, n, T, D])) (repeat_kv), or expand(x [B, 1, T, D]) (MQA): v becomes x.
 */
static bool peel_repeat(const kc_graph *g, kc_val *v) {
  const kc_node *n = kc_fa_def(g, *v);
  kc_val y = *v;
  if (!n || kc_value_of(g, y)->rank != 4) return false;
  if (n->op == KC_OP_EXPAND) {
    kc_val x = n->in[0];
    if (kc_value_of(g, x)->rank != 4 || kc_fa_dim(g, x, 1) != 1) return false;
    for (int i = 0; i < 4; i++)
      if (i != 1 && !kc_fa_same_dim(g, x, i, y, i)) return false;
    *v = x;
    return true;
  }
  if (n->op != KC_OP_RESHAPE) return false;
  kc_val e = n->in[0];
  const kc_node *ne = kc_fa_def(g, e);
  if (!ne || ne->op != KC_OP_EXPAND || kc_value_of(g, e)->rank != 5) return false;
  kc_val u = ne->in[0];
  int64_t hkv = kc_fa_dim(g, e, 1), rep = kc_fa_dim(g, e, 2), h = kc_fa_dim(g, y, 1);
  if (kc_value_of(g, u)->rank != 5 || kc_fa_dim(g, u, 2) != 1 || hkv <= 0 || rep <= 0 ||
      h != hkv * rep || !kc_fa_same_dim(g, y, 0, e, 0) || !kc_fa_same_dim(g, y, 2, e, 3) ||
      !kc_fa_same_dim(g, y, 3, e, 4))
    return false;
  for (int i = 0; i < 5; i++)
    if (i != 2 && !kc_fa_same_dim(g, u, i, e, i)) return false;
  const kc_node *nu = kc_fa_def(g, u);
  if (!nu || (nu->op != KC_OP_RESHAPE && nu->op != KC_OP_UNSQUEEZE)) return false;
  kc_val x = nu->in[0];
  static const int at[4] = {0, 1, 3, 4};
  if (kc_value_of(g, x)->rank != 4) return false;
  for (int i = 0; i < 4; i++)
    if (!kc_fa_same_dim(g, x, i, u, at[i])) return false;
  *v = x;
  return true;
}

/* Look through what feeds a 4-D q, k or v (see the file comment). */
static void peel(fa *F, kc_val v, side_kind kind, bool rot, side *s) {
  const kc_graph *g = F->g;
  bool rep = false;
  s->scale = 1;
  for (int i = 0; i < 8; i++) {
    if (kind != SIDE_V && peel_scale(g, &v, &s->scale)) continue;
    if (kind != SIDE_V && rot && !s->rot.x.id && kc_fa_rotate_half(g, &F->u, v, &s->rot, NULL, 0)) {
      v = s->rot.x;
      continue;
    }
    if (kind != SIDE_Q && !rep && peel_repeat(g, &v)) {
      rep = true;
      continue;
    }
    break;
  }
  s->v4 = v;
  s->heads = kc_fa_dim(g, v, 1);
  s->split = through_transpose(g, v, P0213);
  s->x3 = s->split.id ? split_source(g, s->split) : (kc_val){0};
}

/* k from kT [B, H, D, T]. */
static void resolve_k(fa *F, kc_val kt, bool rot, side *s) {
  const kc_graph *g = F->g;
  double sc = 1;
  for (int i = 0; i < 4 && peel_scale(g, &kt, &sc); i++)
    ;
  kc_val a = through_transpose(g, kt, P0132);
  *s = (side){.scale = sc};
  if (a.id) {
    peel(F, a, SIDE_K, rot, s);
    s->scale *= sc;
  } else if ((a = through_transpose(g, kt, P0231)).id) {
    s->split = a;
    s->x3 = split_source(g, a);
    s->heads = kc_fa_dim(g, a, 2);
  } else {
    s->raw_kt = kt;
    s->heads = kc_fa_dim(g, kt, 1);
  }
}

/* ---- the rewrite ---------------------------------------------------------------------------- */

/* The node reading v (v has exactly one use), or UINT32_MAX. */
static uint32_t sole_reader(const kc_graph *g, kc_val v) {
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP) continue;
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id == v.id) return i;
  }
  return UINT32_MAX;
}

static kc_val transpose(kc_rewriter *rw, kc_val x, const int64_t *perm) {
  kc_val y;
  uint32_t ni = kc_rw_node(rw, KC_OP_TRANSPOSE, 1, &x, 1, &y);
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_node_set_ints(kc_rw_graph(rw), ni, "perm", 4, perm);
  return kc_rw_infer(rw, ni) == KC_OK ? y : (kc_val){0};
}

/*
 * The attention's mask: where-mask w and added mask a (%am) together. where(c, s, fill) + a
 * drops the keys c masks only while fill + a stays a large negative: an added mask that may be
 * positive (an integer pad's 2 gives (1 - 2) * -fill = +fill) brings them back, so the where
 * must stay; a finite fill only (-inf + a stays -inf).
 */
static bool combine_masks(fa *F, const kc_fa_mask *w, const kc_fa_mask *a, kc_val am, double fill,
                          kc_fa_mask *out) {
  *out = (kc_fa_mask){w->causal || a->causal, KC_FA_IN_NONE, {0}, {0}, false};
  if ((w->causal || w->kind != KC_FA_IN_NONE) && am.id && !a->nonpos && isfinite(fill))
    return kc_rw_decline(F->rw,
                         "added mask %%%u may be positive where the where-mask's fill (%g) "
                         "would meet it",
                         am.id, fill),
           false;
  if (w->kind != KC_FA_IN_NONE && a->kind != KC_FA_IN_NONE)
    return kc_rw_decline(F->rw, "two mask tensors (a where condition and an added mask)"), false;
  const kc_fa_mask *m = w->kind != KC_FA_IN_NONE ? w : a;
  out->kind = m->kind;
  out->input = m->input;
  if (out->causal && out->kind == KC_FA_IN_PADDING) { /* the kernel adds a mask to causal */
    if (!m->additive.id)
      return kc_rw_decline(F->rw, "a causal mask with a padding where condition"), false;
    out->kind = KC_FA_IN_ADDITIVE;
    out->input = m->additive;
  }
  return true;
}

static kc_status rewrite(fa *F, const kc_match *m) {
  kc_rewriter *rw = F->rw;
  kc_graph *g = F->g;
  kc_val sc = m->cap[SC];
  char why[512] = "", first[512] = "";
  if (kc_rw_uses(rw, sc) != 1 || kc_rw_is_output(rw, sc))
    return kc_rw_decline(rw, "scores %%%u are also read elsewhere", sc.id);
  const kc_node *sn = kc_fa_def(g, sc);
  if (!sn) return kc_rw_decline(rw, "scores %%%u are a graph input", sc.id);
  kc_match sm;
  const form *f = NULL;
  for (int i = 0; i < KC_LEN(forms) && !f; i++) {
    if (kc_pat_match(g, &F->u, forms[i].pat, forms[i].nrows, g->vals[sc.id].def - 1, &sm, why,
                     sizeof why))
      f = &forms[i];
    else if (!first[0] && kc_pat_root_op(forms[i].pat, sn->op))
      snprintf(first, sizeof first, "%s: %s", forms[i].name, why);
  }
  if (!f)
    return kc_rw_decline(rw, "scores %%%u (%s) are no q @ kT form (%s)", sc.id, kc_ops[sn->op].name,
                         first[0] ? first : "no form starts with that op");
  kc_val qk = g->nodes[sm.node[f->nrows - 1]].out[0];
  const kc_value *qv = kc_value_of(g, qk);
  if (qv->rank != 4) return kc_rw_decline(rw, "scores %%%u are not [B, heads, S, T]", qk.id);
  /* the attention kernels compute in f32 (f16/bf16 widen); f64 stays in exact primitives */
  if (qv->dtype == KC_F64)
    return kc_rw_decline(rw, "scores %%%u are f64 (the attention kernels compute in f32)", qk.id);
  for (int i = 0; i < 4; i++)
    if (!kc_fa_same_dim(g, qk, i, sc, i))
      return kc_rw_decline(rw, "the mask broadcasts scores %%%u to a larger shape", qk.id);
  int64_t heads = kc_fa_dim(g, qk, 1);
  if (heads <= 0) return kc_rw_decline(rw, "the number of heads of %%%u is not static", qk.id);
  kc_fa_scores ss = {qv->dtype, qv->dims[0], qv->dims[2], qv->dims[3],
                     kc_dim_sub(g, qv->dims[3], qv->dims[2])};

  /* scale and masks */
  double scale = 1, fill = -INFINITY;
  const kc_tensor *st = sm.cap[SCALE].id ? kc_fa_data(g, sm.cap[SCALE]) : NULL;
  if (st && !kc_dtype_is_float(st->dtype))
    return kc_rw_decline(rw, "scale %%%u is not a float", sm.cap[SCALE].id);
  if (st) scale = kc_tensor_get(st, 0);
  kc_fa_mask wm = {0}, am = {0}, mask;
  if (sm.cap[COND].id) {
    bool keep = sm.cap[FILL].id != 0;
    kc_val fv = keep ? sm.cap[FILL] : sm.cap[FILLI];
    if (!kc_fa_scalar(g, fv, &fill) || !(fill <= KC_FA_NEG_BIG))
      return kc_rw_decline(rw, "where fills %%%u, not a large negative constant", fv.id);
    if (!kc_fa_mask_where(g, sm.cap[COND], keep, &ss, &wm, why, sizeof why))
      return kc_rw_decline(rw, "%s", why);
  }
  if (sm.cap[MASK].id && !kc_fa_mask_added(g, sm.cap[MASK], &ss, &am, why, sizeof why))
    return kc_rw_decline(rw, "%s", why);
  if (!combine_masks(F, &wm, &am, sm.cap[MASK], fill, &mask)) return KC_OK;

  /* q, k, v; rotary only when q and k share it */
  side q = {0}, k = {0}, v = {0};
  peel(F, sm.cap[Q], SIDE_Q, true, &q);
  resolve_k(F, sm.cap[KT], true, &k);
  peel(F, m->cap[V], SIDE_V, false, &v);
  bool rot =
      q.rot.x.id && k.rot.x.id && q.rot.cos.id == k.rot.cos.id && q.rot.sin.id == k.rot.sin.id;
  if (!rot && (q.rot.x.id || k.rot.x.id)) {
    q = (side){0};
    peel(F, sm.cap[Q], SIDE_Q, false, &q);
    resolve_k(F, sm.cap[KT], false, &k);
  }
  int64_t kvh = k.heads;
  if (q.heads != heads || kvh <= 0 || v.heads != kvh || heads % kvh)
    return kc_rw_decline(rw, "heads: q %lld, k %lld, v %lld (kv heads must divide q heads)",
                         (long long)q.heads, (long long)kvh, (long long)v.heads);
  scale *= q.scale * k.scale;
  bool flat = q.x3.id && k.x3.id && v.x3.id; /* [B, S, H*D] operands */

  /* the op */
  kc_val in[8] = {{0}};
  uint32_t nin = 3;
  if (flat) {
    in[0] = q.x3, in[1] = k.x3, in[2] = v.x3;
  } else {
    in[0] = q.v4, in[2] = v.v4;
    in[1] = k.v4.id      ? k.v4
            : k.split.id ? transpose(rw, k.split, P0213)
                         : transpose(rw, k.raw_kt, P0132);
    if (!in[1].id) return KC_OK; /* the driver reports the error */
  }
  if (mask.kind != KC_FA_IN_NONE) in[3] = mask.input, nin = 4;
  if (rot) {
    in[6] = kc_fa_rot_cache(rw, q.rot.cos);
    in[7] = kc_fa_rot_cache(rw, q.rot.sin);
    if (!in[6].id || !in[7].id) return kc_rw_decline(rw, "could not build the rotary caches");
    nin = 8;
  }
  kc_val y;
  uint32_t ni = kc_rw_node(rw, KC_OP_ATTENTION, nin, in, 1, &y);
  if (ni == UINT32_MAX) return KC_OK;
  kc_node_set_int(g, ni, "heads", heads);
  if (kvh != heads) kc_node_set_int(g, ni, "kv_heads", kvh);
  kc_node_set_float(g, ni, "scale", scale);
  const char *kind = mask.causal                      ? "causal"
                     : mask.kind == KC_FA_IN_PADDING  ? "padding"
                     : mask.kind == KC_FA_IN_ADDITIVE ? "additive"
                                                      : NULL;
  if (kind) kc_node_set_string(g, ni, "mask", kind);
  if (kc_rw_infer(rw, ni) != KC_OK) return KC_OK;

  /* the result: 4-D as the matmul's, or [B, S, H*Dv] in place of the head merge after it */
  kc_val out = kc_rw_out(rw, m, 0, 0);
  if (!flat) {
    kc_rw_replace(rw, out, y);
    return KC_OK;
  }
  uint32_t t =
      kc_rw_uses(rw, out) == 1 && !kc_rw_is_output(rw, out) ? sole_reader(g, out) : UINT32_MAX;
  if (t != UINT32_MAX && g->nodes[t].op == KC_OP_TRANSPOSE && perm_is(&g->nodes[t], P0213)) {
    kc_val tv = g->nodes[t].out[0];
    uint32_t r =
        kc_rw_uses(rw, tv) == 1 && !kc_rw_is_output(rw, tv) ? sole_reader(g, tv) : UINT32_MAX;
    if (r != UINT32_MAX && g->nodes[r].op == KC_OP_RESHAPE &&
        kc_value_of(g, g->nodes[r].out[0])->rank == 3 &&
        kc_fa_same_dim(g, g->nodes[r].out[0], 0, y, 0) &&
        kc_fa_same_dim(g, g->nodes[r].out[0], 1, y, 1) &&
        kc_fa_same_dim(g, g->nodes[r].out[0], 2, y, 2)) {
      kc_rw_replace(rw, g->nodes[r].out[0], y);
      return KC_OK;
    }
  }
  int64_t dv = kc_fa_dim(g, out, 3);
  int64_t shape[4] = {0, 0, heads, dv > 0 ? dv : -1};
  kc_val rin[2] = {y, kc_rw_const_i64s(rw, 4, shape)};
  kc_val r = rin[1].id ? kc_rw_op(rw, KC_OP_RESHAPE, 2, rin) : rin[1];
  kc_val y4 = r.id ? transpose(rw, r, P0213) : r;
  if (y4.id) kc_rw_replace(rw, out, y4);
  return KC_OK;
}

static kc_status fuse(kc_rewriter *rw, const kc_match *m) {
  fa F = {rw, kc_rw_graph(rw), {0}};
  kc_status s = kc_uses_compute(F.g, &F.u);
  if (s == KC_OK) s = rewrite(&F, m);
  kc_uses_free(&F.u);
  return s;
}

/* The guard's fill must be 0 (a constant or a weight with data). */
static kc_status fuse_guarded(kc_rewriter *rw, const kc_match *m) {
  double z;
  if (!kc_fa_scalar(kc_rw_graph(rw), m->cap[ZERO], &z) || z != 0)
    return kc_rw_decline(rw, "the nan guard's fill %%%u is not the constant 0", m->cap[ZERO].id);
  return fuse(rw, m);
}

/* ---- attention ops made elsewhere (the ONNX Attention import, or a fusion above) ------------ */

enum { A_Q, A_K, A_V, A_MASK, A_PAST_K, A_PAST_V, A_COS, A_SIN };

static bool in_present(const kc_node *n, uint32_t i) { return n->nin > i && n->in[i].id; }

static bool no_past(const kc_node *n, char *why, size_t size) {
  if (!in_present(n, A_PAST_K) && !in_present(n, A_PAST_V)) return true;
  snprintf(why, size, "it has past K/V (positions start after them)");
  return false;
}

static bool additive_mask(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  (void)g;
  if (strcmp(kc_node_string(n, "mask", "none"), "additive") == 0) return no_past(n, why, size);
  snprintf(why, size, "mask is %s, not additive", kc_node_string(n, "mask", "none"));
  return false;
}

static bool unrotated(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  (void)g;
  if (!in_present(n, A_COS)) return no_past(n, why, size);
  snprintf(why, size, "it has its cos/sin already");
  return false;
}

/* The scores of attention node n: dtype, batch, query and key lengths. */
static kc_fa_scores op_scores(kc_graph *g, const kc_node *n) {
  const kc_value *q = kc_value_of(g, n->in[A_Q]), *k = kc_value_of(g, n->in[A_K]);
  int sa = q->rank == 3 ? 1 : 2;
  kc_dim s = q->dims[sa], t = k->dims[sa];
  return (kc_fa_scores){q->dtype, q->dims[0], s, t, kc_dim_sub(g, t, s)};
}

/*
 * A copy of the matched attention op with inputs in[0..nin), attribute `mask` set to mask (NULL:
 * as it was) and rotary_interleaved to interleaved (< 0: as it was); its results replace the
 * op's.
 */
static kc_status rebuild(kc_rewriter *rw, const kc_match *m, const kc_val *in, uint32_t nin,
                         const char *mask, int64_t interleaved) {
  kc_graph *g = kc_rw_graph(rw);
  const kc_node *n = &g->nodes[m->node[0]];
  kc_attr attrs[16];
  kc_val outs[4] = {{0}}, olds[4] = {{0}};
  uint32_t nattr = n->nattr < 16 ? n->nattr : 16, nout = n->nout < 4 ? n->nout : 4;
  memcpy(attrs, n->attrs, nattr * sizeof *attrs);
  /* the same results, lse (result 3, autodiff's) included; absent ones stay absent */
  for (uint32_t j = 0; j < nout; j++) {
    olds[j] = n->out[j];
    if (j == 0 || olds[j].id) outs[j] = kc_graph_new_value(g);
  }
  uint32_t ni = kc_graph_add_node_with_outputs(g, KC_OP_ATTENTION, nin, in, nout, outs);
  if (ni == UINT32_MAX || g->sticky != KC_OK) return KC_OK;
  for (uint32_t i = 0; i < nattr; i++) {
    const kc_attr *a = &attrs[i];
    if ((mask && !strcmp(a->name, "mask")) ||
        (interleaved >= 0 && !strcmp(a->name, "rotary_interleaved")))
      continue;
    switch (a->kind) {
    case KC_ATTR_INT: kc_node_set_int(g, ni, a->name, a->u.i); break;
    case KC_ATTR_FLOAT: kc_node_set_float(g, ni, a->name, a->u.f); break;
    case KC_ATTR_STRING: kc_node_set_string(g, ni, a->name, a->u.s); break;
    case KC_ATTR_INTS: kc_node_set_ints(g, ni, a->name, a->u.ints.n, a->u.ints.v); break;
    case KC_ATTR_FLOATS: kc_node_set_floats(g, ni, a->name, a->u.floats.n, a->u.floats.v); break;
    case KC_ATTR_DTYPE: kc_node_set_dtype(g, ni, a->name, a->u.t); break;
    case KC_ATTR_TENSOR: kc_node_set_tensor(g, ni, a->name, a->u.tensor); break;
    }
  }
  if (mask) kc_node_set_string(g, ni, "mask", mask);
  if (interleaved > 0) kc_node_set_int(g, ni, "rotary_interleaved", interleaved);
  if (kc_rw_infer(rw, ni) != KC_OK) return KC_OK;
  for (uint32_t j = 0; j < nout; j++)
    if (olds[j].id) kc_rw_replace(rw, olds[j], outs[j]);
  return KC_OK;
}

/* attention(q, k, v, m) {mask=additive} with m causal, padding, where(and(causal, padding),
 * 0, -big) or where(padded, -big, causal)  ->  mask=causal (no input), mask=padding (the [B, T]
 * mask), or mask=causal with where(padding, 0, -big) [B, 1, 1, T] or where(padded, -big, 0) */
static const kc_pat op_mask[] = {
    P_OPIF(ATTENTION, additive_mask, P_CAP(Q), P_CAP(K), P_CAP(V), P_CAP(MASK), P_REST),
};

static kc_status refine_mask(kc_rewriter *rw, const kc_match *m) {
  kc_graph *g = kc_rw_graph(rw);
  const kc_node *n = &g->nodes[m->node[0]];
  kc_fa_scores sc = op_scores(g, n);
  kc_val in[8] = {{0}}, w[3];
  uint32_t nin = n->nin < 8 ? n->nin : 8;
  char why[256];
  kc_fa_mask mk;
  memcpy(in, n->in, nin * sizeof *in);
  if (kc_fa_mask_causal_and(g, m->cap[MASK], &sc, w)) {
    static const uint64_t zero = 0; /* 0 in every float dtype */
    if (!w[2].id) w[2] = kc_rw_const(rw, sc.dtype, 0, NULL, &zero);
    in[A_MASK] = w[2].id ? kc_rw_op(rw, KC_OP_WHERE, 3, w) : w[2];
    return in[A_MASK].id ? rebuild(rw, m, in, nin, "causal", -1) : KC_OK;
  }
  if (!kc_fa_mask_added(g, m->cap[MASK], &sc, &mk, why, sizeof why))
    return kc_rw_decline(rw, "%s", why);
  if (mk.kind == KC_FA_IN_ADDITIVE)
    return kc_rw_decline(rw, "mask %%%u is no causal or padding mask", m->cap[MASK].id);
  in[A_MASK] = mk.input;
  if (!mk.causal) return rebuild(rw, m, in, nin, "padding", -1);
  while (nin > A_MASK && !in[nin - 1].id)
    nin--;
  return rebuild(rw, m, in, nin, "causal", -1);
}

/*
 * v as the op reads it = rotary(x, ...): the rotary itself (3-D with num_heads = heads, or 4-D),
 * or reshape(transpose(rotary(transpose(reshape(x [B,S,H*D]))))) (a 4-D rotary between a head
 * split and merge). x, with *rot the rotary node's index; {0} when neither.
 */
static kc_val rotary_source(const kc_graph *g, kc_val v, int64_t heads, uint32_t *rot) {
  const kc_node *n = kc_fa_def(g, v);
  int r = kc_value_of(g, v)->rank;
  if (n && n->op == KC_OP_ROTARY) {
    if (r == 3 && kc_node_int(n, "num_heads", 0) != heads) return (kc_val){0};
    if (r == 4 && kc_fa_dim(g, v, 1) != heads) return (kc_val){0};
    *rot = g->vals[v.id].def - 1;
    return n->in[0];
  }
  if (!n || n->op != KC_OP_RESHAPE || r != 3) return (kc_val){0};
  kc_val r4 = through_transpose(g, n->in[0], P0213);
  const kc_node *rn = kc_fa_def(g, r4);
  if (!rn || rn->op != KC_OP_ROTARY || kc_value_of(g, r4)->rank != 4 ||
      kc_fa_dim(g, r4, 1) != heads)
    return (kc_val){0};
  kc_val split = through_transpose(g, rn->in[0], P0213);
  kc_val x = split.id ? split_source(g, split) : (kc_val){0};
  for (int i = 0; x.id && i < 3; i++)
    if (!kc_fa_same_dim(g, x, i, v, i)) return (kc_val){0};
  if (x.id) *rot = g->vals[r4.id].def - 1;
  return x;
}

/* attention(rotary(q, cos, sin, pos), rotary(k, cos, sin, pos), ...) with pos[b, s] = s and no
 * past  ->  attention(q, k, ..., _, _, cos, sin) {rotary_interleaved}: the kernel rotates at
 * positions 0, 1, ... itself */
static const kc_pat op_rot[] = {
    P_OPIF(ATTENTION, unrotated, P_CAP(Q), P_CAP(K), P_REST),
};

static kc_status fold_rotary(kc_rewriter *rw, const kc_match *m) {
  kc_graph *g = kc_rw_graph(rw);
  const kc_node *n = &g->nodes[m->node[0]];
  int64_t heads = kc_node_int(n, "heads", 0), kvh = kc_node_int(n, "kv_heads", heads);
  uint32_t rq = 0, rk = 0;
  kc_val xq = rotary_source(g, m->cap[Q], heads, &rq), xk = rotary_source(g, m->cap[K], kvh, &rk);
  if (!xq.id || !xk.id) return kc_rw_decline(rw, "q and k are not both rotated by rotary ops");
  const kc_node *a = &g->nodes[rq], *b = &g->nodes[rk];
  for (uint32_t i = 1; i < 4; i++)
    if (!in_present(a, i) || !in_present(b, i) || a->in[i].id != b->in[i].id)
      return kc_rw_decline(rw, "q and k rotaries differ in their caches or positions");
  int64_t il = kc_node_int(a, "interleaved", 0), rd = kc_node_int(a, "rotary_embedding_dim", 0);
  int64_t half = kc_fa_dim(g, a->in[1], 1);
  if (il != kc_node_int(b, "interleaved", 0) || rd != kc_node_int(b, "rotary_embedding_dim", 0) ||
      (rd && rd != 2 * half))
    return kc_rw_decline(rw, "q and k rotaries differ, or rotate another width than the cache");
  if (!kc_fa_is_positions(g, a->in[3]))
    return kc_rw_decline(rw, "rotary positions %%%u are not 0, 1, ..., S-1", a->in[3].id);
  kc_val in[8] = {{0}};
  memcpy(in, n->in, (n->nin < 8 ? n->nin : 8) * sizeof *in);
  in[A_Q] = xq, in[A_K] = xk, in[A_COS] = a->in[1], in[A_SIN] = a->in[2];
  return rebuild(rw, m, in, 8, NULL, il);
}

static const kc_rule rules[] = {
    KC_RULE("attention", attn, fuse),
    KC_RULE("attention-nan-guard", attn_guarded, fuse_guarded),
    KC_RULE("attention-mask", op_mask, refine_mask),
    KC_RULE("attention-rotary", op_rot, fold_rotary),
};

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  char why[256];
  for (int i = 0; i < KC_LEN(forms); i++)
    if (!kc_pat_check(forms[i].pat, forms[i].nrows, why, sizeof why))
      return kc_errorf(g->ctx, KC_ERR_INTERNAL, "fuse-attention: form %s: %s", forms[i].name, why);
  kc_status s = kc_rules_run(g, pc, rules, KC_LEN(rules), true);
  /* each fusion built its own rotary caches; layers sharing cos/sin share them again */
  if (s == KC_OK && pc->changed) s = kc_pass_cse.run(g, pc);
  return s;
}

const kc_pass kc_pass_fuse_attention = {
    "fuse-attention", run,
    "softmax(q @ kT * s + mask) @ v, head splits, GQA repeats and rotary -> attention"};
