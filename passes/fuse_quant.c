/*
 * passes/fuse_quant.c - the fuse-quant pass: ONNX Runtime's dynamically quantized matmul
 * (quantize_dynamic: DynamicQuantizeLinear on the activations, MatMulInteger by int8 weights,
 * Cast to float, Mul by the product of the two scales, Add of the bias) and its static
 * QOperator form (QLinearMatMul) become matmul_q8 (ir/ops.def), whose CPU kernel uses the int8
 * dot-product instructions.
 *
 * The dynamic and QOperator rewrites keep the graph's numbers bit for bit: the integer sums are
 * exact (mod 2^32, as MatMulInteger's), the weight zero point is subtracted here at compile time (w
 * - wzp must fit int8, else the pattern stays unfused), the activation zero point goes through the
 * weights' column sums (sum (a - azp) w = sum a w - azp sum w), and matmul_q8's float steps are the
 * unfused ones in their order: f32(acc) * scale, then + bias. The dynamic_quantize_linear node
 * stays (its global min/max must be known before any row is quantized); its u8 result, scale
 * and zero point feed the fused node, and the scale product stays the graph's own mul.
 * Two rules, run to a fixpoint, grow the node as fuse-epilogue grows matmul_ep:
 *   - mul(cast(matmul_integer(a, w, azp?, wzp?)) {to=f32}, s)  ->  matmul_q8(a, w4, wsum, s, azp?)
 *     with w constant, 2-D; azp one element; s f32, one element or [N];
 *   - add(matmul_q8(.., no bias), b) with b f32 [N]  ->  matmul_q8(.., b).
 * w4 and wsum are new named weights (the original's name + ".q8" / ".q8sum"): w - wzp in the
 * [ceil(K/4), N, 4] layout (zero past K) and its column sums.
 *
 * QLinearMatMul (quantize_static's QOperator form) with constant int8 weights and f32 scales
 * becomes matmul_q8 by the multiplier as * ws / ys followed by quantize_linear by 1 and y's zero
 * point, which is the qlinear kernel's requantization step for step (from_qlinear says why).
 * The QDQ form (matmul of two dequantize_linear) becomes matmul_q8 too, equal up to float
 * rounding only (from_qdq says why); the pass runs before fold for it.
 */
#include "passes/internal.h"
#include "passes/match.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Capture slots. */
enum { A, W, S, BIAS, AS, AZP, WS, WZP, YS, YZP };

static bool to_f32(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  if (kc_value_of(g, n->out[0])->dtype == KC_F32) return true;
  snprintf(why, size, "the cast is not to f32");
  return false;
}

/* A new weight named base + suffix (a number appended while taken) holding a copy of data. */
static kc_val new_weight(kc_rewriter *rw, const char *base, const char *suffix, kc_dtype t,
                         int rank, const int64_t *dims, const void *data) {
  kc_graph *g = kc_rw_graph(rw);
  char name[512];
  bool taken = true;
  for (int k = 0; taken; k++) {
    if (k)
      snprintf(name, sizeof name, "%s%s.%d", base, suffix, k);
    else
      snprintf(name, sizeof name, "%s%s", base, suffix);
    taken = false;
    for (uint32_t i = 0; i < g->ntensors && !taken; i++)
      taken = g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0;
  }
  if (kc_graph_add_tensor(g, name, t, rank, dims, data, true) == UINT32_MAX) return (kc_val){0};
  kc_val out;
  uint32_t ni = kc_rw_node(rw, KC_OP_WEIGHT, 0, NULL, 1, &out);
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_node_set_string(g, ni, "name", name);
  return kc_rw_infer(rw, ni) == KC_OK ? out : (kc_val){0};
}

/* The weights w - wzp of a matmul_integer as int8 [ceil(K/4), N, 4] and their column sums;
 * false with the reason when w or wzp is not constant or w - wzp leaves int8. */
typedef struct packed {
  int8_t *w4;
  int32_t *sum;
  int64_t k, n;
} packed;

static bool pack(const kc_graph *g, kc_val wv, kc_val zv, packed *p, const char **why) {
  const kc_tensor *w = kc_source_tensor(g, wv);
  memset(p, 0, sizeof *p);
  if (!w || w->rank != 2) {
    *why = "the weights are not a constant matrix";
    return false;
  }
  const kc_tensor *z = zv.id ? kc_source_tensor(g, zv) : NULL;
  if (zv.id && !z) {
    *why = "the weights' zero point is not a constant";
    return false;
  }
  p->k = w->dims[0];
  p->n = w->dims[1];
  size_t nz = z ? kc_tensor_numel(z) : 0, groups = (size_t)(p->k + 3) / 4, n = (size_t)p->n;
  p->w4 = calloc(groups * n * 4 + 1, 1);
  p->sum = calloc(n + 1, sizeof *p->sum);
  if (!p->w4 || !p->sum) {
    *why = "out of memory";
    return false;
  }
  for (size_t k = 0; k < (size_t)p->k; k++)
    for (size_t j = 0; j < n; j++) {
      double v = kc_tensor_get(w, k * n + j) - (z ? kc_tensor_get(z, nz == 1 ? 0 : j) : 0);
      if (v < -128 || v > 127) {
        *why = "w - zero point leaves int8";
        return false;
      }
      p->w4[(k / 4) * n * 4 + j * 4 + k % 4] = (int8_t)v;
      p->sum[j] += (int32_t)v;
    }
  return true;
}

/* ---- mul(cast(matmul_integer)) -------------------------------------------------------------- */

/* mul(cast(matmul_integer(a, w, azp?, wzp?)) {to=f32}, s)  ->  matmul_q8(a, w4, wsum, s, azp?) */
static const kc_pat dyn[] = {
    P_OP(MUL, P_SUB(1), P_CAP(S)),
    P_OPIF(CAST, to_f32, P_SUB(2)),
    P_OP(MATMUL_INTEGER, P_CAP(A), P_CAP(W), P_ANY, P_ANY),
};

static kc_status from_dyn(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  const kc_node *mi = &g->nodes[m->node[2]];
  const kc_value *a = kc_value_of(g, m->cap[A]), *s = kc_value_of(g, m->cap[S]);
  kc_val azp = mi->nin > 2 ? mi->in[2] : (kc_val){0};
  if (a->rank < 2) return kc_rw_decline(rw, "a has rank %d", a->rank);
  if (azp.id && kc_value_numel(g, azp) != 1)
    return kc_rw_decline(rw, "a's zero point is not one value");
  if (s->dtype != KC_F32) return kc_rw_decline(rw, "the scale is %s", kc_dtype_name(s->dtype));
  const kc_value *wv = kc_value_of(g, m->cap[W]);
  bool per_col = s->rank == 1 && wv->rank == 2 && kc_dim_same(g, s->dims[0], wv->dims[1]);
  if (kc_value_numel(g, m->cap[S]) != 1 && !per_col)
    return kc_rw_decline(rw, "the scale is not one value or one per column");
  packed p;
  const char *why = "";
  kc_val out = {0};
  if (pack(g, mi->in[1], mi->nin > 3 ? mi->in[3] : (kc_val){0}, &p, &why)) {
    const kc_tensor *w = kc_source_tensor(g, m->cap[W]);
    char base[400];
    snprintf(base, sizeof base, "%s", w->name ? w->name : "const");
    int64_t d4[3] = {(p.k + 3) / 4, p.n, 4}, dn = p.n;
    kc_val in[5] = {m->cap[A], new_weight(rw, base, ".q8", KC_I8, 3, d4, p.w4),
                    new_weight(rw, base, ".q8sum", KC_I32, 1, &dn, p.sum), m->cap[S], azp};
    if (in[1].id && in[2].id) out = kc_rw_op(rw, KC_OP_MATMUL_Q8, azp.id ? 5 : 4, in);
  }
  free(p.w4);
  free(p.sum);
  if (!p.w4 && !p.sum && !*why) why = "out of memory";
  if (*why) return kc_rw_decline(rw, "%s", why);
  if (out.id) kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), out);
  return KC_OK;
}

/* ---- bias ----------------------------------------------------------------------------------- */

/* add(matmul_q8(a, w4, wsum, s, azp?), b) with b f32 [N]  ->  matmul_q8(a, w4, wsum, s, azp?, b) */
static const kc_pat bias[] = {
    P_OP(ADD, P_SUB(1), P_CAP(BIAS)),
    P_OP(MATMUL_Q8, P_CAP(A), P_ANY, P_ANY, P_ANY, P_ANY),
};

static kc_status take_bias(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  const kc_node *q = &g->nodes[m->node[1]];
  const kc_value *b = kc_value_of(g, m->cap[BIAS]), *w = kc_value_of(g, q->in[1]);
  if (b->dtype != KC_F32 || b->rank != 1 || !kc_dim_same(g, b->dims[0], w->dims[1]))
    return kc_rw_decline(rw, "the addend is not an f32 bias [N]");
  kc_val in[6] = {q->in[0],    q->in[1], q->in[2], q->in[3], q->nin > 4 ? q->in[4] : (kc_val){0},
                  m->cap[BIAS]};
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), kc_rw_op(rw, KC_OP_MATMUL_Q8, 6, in));
  return KC_OK;
}

/* ---- qlinear_matmul ------------------------------------------------------------------------- */

/*
 * qlinear_matmul(a, as, azp, w, ws, wzp, ys, yzp)  ->  quantize_linear(matmul_q8(a, w4, wsum, m,
 * azp), 1, yzp) with m = as * ws / ys: the requantization as the qlinear kernel does it
 * (codegen/cpu/qmatmul.c, ONNX Runtime's): the multiplier in f32, (as * ws) then / ys, then
 * roundeven(f32(acc) * m) + yzp clamped to yzp's type, which is what quantize_linear by a
 * scale of 1 computes from matmul_q8's f32(acc) * m (x / 1 is x). The scales must be f32
 * constants (as, ys one element, ws one or one per column), azp one element, w 2-D constant.
 */
static const kc_pat qlinear[] = {
    P_OP(QLINEAR_MATMUL, P_CAP(A), P_CAP(AS), P_CAP(AZP), P_CAP(W), P_CAP(WS), P_CAP(WZP),
         P_CAP(YS), P_CAP(YZP)),
};

/* The f32 constant v's elements (at most max) into out; their count, or 0 when v is no such
 * constant. */
static size_t f32_consts(const kc_graph *g, kc_val v, float *out, size_t max) {
  const kc_tensor *t = kc_source_tensor(g, v);
  size_t n = t ? kc_tensor_numel(t) : 0;
  if (!t || t->dtype != KC_F32 || n == 0 || n > max) return 0;
  for (size_t i = 0; i < n; i++)
    out[i] = (float)kc_tensor_get(t, i);
  return n;
}

/*
 * matmul_q8(a, w4, wsum, scale, azp?) from the packed weights p of the constant wv and the
 * compile-time f32 scales sc[0..nsc) (one, or one per column: a new weight named after wv's
 * with `suffix`); {0} when a node could not be made.
 */
static kc_val q8_node(kc_rewriter *rw, kc_val a, kc_val wv, const packed *p, const float *sc,
                      size_t nsc, const char *suffix, kc_val azp) {
  const kc_tensor *wt = kc_source_tensor(kc_rw_graph(rw), wv);
  char base[400];
  snprintf(base, sizeof base, "%s", wt && wt->name ? wt->name : "const");
  int64_t d4[3] = {(p->k + 3) / 4, p->n, 4}, dn = p->n, dm = (int64_t)nsc;
  kc_val in[5] = {a, new_weight(rw, base, ".q8", KC_I8, 3, d4, p->w4),
                  new_weight(rw, base, ".q8sum", KC_I32, 1, &dn, p->sum),
                  nsc == 1 ? kc_rw_const(rw, KC_F32, 0, NULL, sc)
                           : new_weight(rw, base, suffix, KC_F32, 1, &dm, sc),
                  azp};
  return in[1].id && in[2].id && in[3].id ? kc_rw_op(rw, KC_OP_MATMUL_Q8, azp.id ? 5 : 4, in)
                                          : (kc_val){0};
}

static kc_status from_qlinear(kc_rewriter *rw, const kc_match *m) {
  kc_graph *g = kc_rw_graph(rw);
  const kc_value *a = kc_value_of(g, m->cap[A]), *w = kc_value_of(g, m->cap[W]);
  if (a->rank < 2 || w->rank != 2 || w->dims[1] < 0)
    return kc_rw_decline(rw, "a is not [..., M, K] or w not a [K, N] constant");
  if (kc_value_numel(g, m->cap[AZP]) != 1) return kc_rw_decline(rw, "a's zero point is per row");
  size_t n = (size_t)w->dims[1];
  float as, ys, *ws = calloc(n + 1, sizeof *ws), *mult = calloc(n + 1, sizeof *mult);
  size_t nws = ws ? f32_consts(g, m->cap[WS], ws, n) : 0;
  kc_val out = {0};
  const char *why = "";
  packed p = {0};
  if (!ws || !mult) {
    why = "out of memory";
  } else if (f32_consts(g, m->cap[AS], &as, 1) != 1 || f32_consts(g, m->cap[YS], &ys, 1) != 1 ||
             (nws != 1 && nws != n)) {
    why = "the scales are not f32 constants (a's and y's one value, w's one or one per column)";
  } else if (pack(g, m->cap[W], m->cap[WZP], &p, &why)) {
    for (size_t j = 0; j < nws; j++) {
      volatile float t = as * ws[j]; /* rounded to f32 before the division, as the kernel does */
      mult[j] = t / ys;
    }
    kc_val q8 = q8_node(rw, m->cap[A], m->cap[W], &p, mult, nws, ".q8mult", m->cap[AZP]);
    static const float one = 1.0f;
    kc_val qin[3] = {q8, kc_rw_const(rw, KC_F32, 0, NULL, &one), m->cap[YZP]};
    out = q8.id && qin[1].id ? kc_rw_op(rw, KC_OP_QUANTIZE_LINEAR, 3, qin) : (kc_val){0};
  }
  free(ws);
  free(mult);
  free(p.w4);
  free(p.sum);
  if (*why) return kc_rw_decline(rw, "%s", why);
  if (out.id) kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), out);
  return KC_OK;
}

/* ---- QDQ ------------------------------------------------------------------------------------ */

/*
 * matmul(dequantize_linear(q, sx, zx?), dequantize_linear(wq, sw, zw?))  ->  matmul_q8(q, w4,
 * wsum, sx * sw, zx?): quantize_static's QDQ form, as ONNX Runtime runs it (its own QDQ fusion
 * gives the integer product too). q int8/uint8 with one f32 scale and one zero point; wq a 2-D
 * constant with f32 scale and zero point per tensor or per column (axis 1). Not bit-identical:
 * the graph's f32 matmul of dequantized values rounds every product and partial sum (in an
 * order the matmul kernel chooses), matmul_q8 sums exactly and rounds once, f32(acc) * (sx *
 * sw). Runs before fold, which would turn the weights' dequantization into f32 weights. The
 * dequantize nodes stay for their other readers, if any.
 */
static const kc_pat qdq[] = {
    P_OP(MATMUL, P_CAP(A), P_CAP(W)),
};

/* v = dequantize_linear(x, s, z?): its node, or NULL. */
static const kc_node *dequantized(const kc_graph *g, kc_val v) {
  uint32_t d = g->vals[v.id].def;
  const kc_node *n = d ? &g->nodes[d - 1] : NULL;
  return n && n->op == KC_OP_DEQUANTIZE_LINEAR ? n : NULL;
}

static kc_status from_qdq(kc_rewriter *rw, const kc_match *m) {
  kc_graph *g = kc_rw_graph(rw);
  const kc_node *da = dequantized(g, m->cap[A]), *dw = dequantized(g, m->cap[W]);
  if (!da || !dw) return kc_rw_decline(rw, "the operands are not both dequantize_linear");
  kc_val q = da->in[0], azp = da->nin > 2 ? da->in[2] : (kc_val){0};
  kc_val wzp = dw->nin > 2 ? dw->in[2] : (kc_val){0};
  const kc_value *qv = kc_value_of(g, q), *wv = kc_value_of(g, dw->in[0]);
  if (qv->rank < 2 || (qv->dtype != KC_U8 && qv->dtype != KC_I8) || wv->rank != 2 ||
      wv->dims[1] < 0 || (azp.id && kc_value_numel(g, azp) != 1))
    return kc_rw_decline(rw,
                         "not int8 activations [..., M, K] (one zero point) by a [K, N] matrix");
  int64_t axis = kc_node_int(dw, "axis", 1);
  size_t n = (size_t)wv->dims[1];
  float sx, *sw = calloc(n + 1, sizeof *sw);
  size_t nsw = sw ? f32_consts(g, dw->in[1], sw, n) : 0;
  kc_val out = {0};
  const char *why = "";
  packed p = {0};
  if (!sw) {
    why = "out of memory";
  } else if (f32_consts(g, da->in[1], &sx, 1) != 1 ||
             (nsw != 1 && !(nsw == n && (axis == 1 || axis == -1)))) {
    why = "the scales are not f32 constants (the activations' one, the weights' one or per column)";
  } else if (pack(g, dw->in[0], wzp, &p, &why)) {
    for (size_t j = 0; j < nsw; j++)
      sw[j] = sx * sw[j];
    out = q8_node(rw, q, dw->in[0], &p, sw, nsw, ".q8scale", azp);
  }
  free(sw);
  free(p.w4);
  free(p.sum);
  if (*why) return kc_rw_decline(rw, "%s", why);
  if (out.id) kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), out);
  return KC_OK;
}

static const kc_rule rules[] = {
    KC_RULE("quant-dynamic-matmul", dyn, from_dyn),
    KC_RULE("quant-qlinear-matmul", qlinear, from_qlinear),
    KC_RULE("quant-qdq-matmul", qdq, from_qdq),
    KC_RULE("quant-bias", bias, take_bias),
};

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  return kc_rules_run(g, pc, rules, KC_LEN(rules), true);
}

const kc_pass kc_pass_fuse_quant = {
    "fuse-quant", run,
    "matmul_q8: int8 matmuls by constant weights (ORT's dynamic quantization, qlinear_matmul, "
    "QDQ) become one int8 kernel"};
