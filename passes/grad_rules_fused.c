/*
 * passes/grad_rules_fused.c - gradient rules (ir/ops.def GRAD column) of the normalizations
 * (ONNX LayerNormalization / RMSNormalization and kernc's fused layer_norm / rms_norm), rotary,
 * and fused elementwise regions.
 *
 * The norms read their statistics from the forward kernel: the rule appends a copy of the forward
 * node with the statistics results (layer norms: mean, rstd; rms_norm: rstd), which the cse pass
 * merges into the forward node, so the kernel computes y and the statistics once (without cse
 * the copy recomputes them: still correct). With xhat = (x - mean) * rstd (rms: x * rstd) and
 * dxhat the adjoint of xhat in y = xhat * scale + bias (scale's and bias' adjoints come from the
 * primitive rules over that product, kc_grad_local),
 *   layer norm: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
 *   rms norm:   dx = rstd * (dxhat - xhat * mean(dxhat * xhat))
 * (means over the normalized axes), in the statistics' dtype. Two cases still recompute the
 * statistics from x in primitives and differentiate that composition: when the loss reads
 * layer_normalization's mean / inv_std_dev (their adjoints flow through the statistics), and
 * when the saved statistics are less precise than the compute type (ONNX's f32 statistics of
 * an f64 x), as does rms_normalization, which has no statistics result.
 * Fused regions are differentiated as compositions too: the body is inlined and the engine runs
 * over it, so the fusion passes later see plain primitives. Rotary is linear in x
 * with an orthogonal rotation per pair: its adjoint is the same rotary with the sine negated.
 * The cos/sin caches get no gradient (an error if a parameter reaches them).
 */
#include "passes/grad.h"

#include <stdlib.h>
#include <string.h>

#define G (c->g)
#define X (c->n.in[0])

/* LayerNorm over axes [axis, rank): (x - mean) * rstd * scale + bias; also returns mean and
 * rstd (keepdims shapes, as ONNX's optional results). */
static kc_val lnorm(kc_graph *g, kc_val x, kc_val scale, kc_val bias, int axis, double eps,
                    kc_val *mean, kc_val *rstd) {
  int r = kc_value_of(g, x)->rank;
  int64_t axes[KC_MAX_RANK];
  int n = 0;
  for (int i = axis; i < r; i++)
    axes[n++] = i;
  *mean = kc_reduce_mean(g, x, n, axes, 1);
  kc_val xc = kc_sub(g, x, *mean);
  kc_val var = kc_reduce_mean(g, kc_mul(g, xc, xc), n, axes, 1);
  *rstd = kc_reciprocal(g, kc_sqrt(g, kc_add(g, var, kc_gu_like(g, x, eps))));
  kc_val y = kc_mul(g, kc_mul(g, xc, *rstd), scale);
  return bias.id ? kc_add(g, y, bias) : y;
}

static kc_val rnorm(kc_graph *g, kc_val x, kc_val scale, int axis, double eps) {
  int r = kc_value_of(g, x)->rank;
  int64_t axes[KC_MAX_RANK];
  int n = 0;
  for (int i = axis; i < r; i++)
    axes[n++] = i;
  kc_val ms = kc_reduce_mean(g, kc_mul(g, x, x), n, axes, 1);
  kc_val rr = kc_reciprocal(g, kc_sqrt(g, kc_add(g, ms, kc_gu_like(g, x, eps))));
  return kc_mul(g, kc_mul(g, x, rr), scale);
}

/*
 * The backward from the forward kernel's statistics (see the header). stat: the dtype the
 * statistics results get.
 */
static kc_status norm_grad_saved(kc_grad_call *c, bool rms, int axis, kc_dtype stat) {
  int r = kc_value_of(G, X)->rank;
  kc_dtype t = kc_value_of(G, X)->dtype;
  int64_t axes[KC_MAX_RANK];
  int na = 0;
  for (int i = axis; i < r; i++)
    axes[na++] = i;
  /* the copy of the forward node with its statistics: cse merges it into the forward node */
  kc_val st[3] = {0};
  uint32_t ni = kc_gu_node(G, c->n.op, c->n.nin, c->n.in, rms ? 2 : 3, st, &c->n);
  if (ni == UINT32_MAX || !kc_gu_finish(G, ni).id) return G->sticky;
  kc_val mean = rms ? (kc_val){0} : st[1], rstd = rms ? st[1] : st[2];
  kc_val xs = t == stat ? X : kc_cast(G, X, stat);
  kc_val xhat = kc_mul(G, rms ? xs : kc_sub(G, xs, mean), rstd);
  kc_val xh = t == stat ? xhat : kc_cast(G, xhat, t);
  if (G->sticky != KC_OK) return G->sticky;
  /* y = xhat * scale + bias: the adjoints of xhat, scale and bias by the primitive rules */
  uint32_t first = G->nnodes;
  kc_val bias = !rms && c->n.nin > 2 ? c->n.in[2] : (kc_val){0};
  kc_val y = kc_mul(G, xh, c->n.in[1]);
  if (bias.id) y = kc_add(G, y, bias);
  if (G->sticky != KC_OK) return G->sticky;
  kc_val ins[3] = {xh, c->n.in[1], bias}, din[3] = {0};
  bool want[3] = {c->want[0], c->want[1], bias.id && c->want[2]};
  kc_status s = kc_grad_local(G, first, 1, &y, c->dout, bias.id ? 3 : 2, ins, want, din);
  if (s != KC_OK) return s;
  c->din[1] = din[1];
  if (bias.id) c->din[2] = din[2];
  if (!c->want[0] || !din[0].id) return KC_OK;
  kc_val dxh = t == stat ? din[0] : kc_cast(G, din[0], stat);
  kc_val proj = kc_mul(G, xhat, kc_reduce_mean(G, kc_mul(G, dxh, xhat), na, axes, 1));
  kc_val inner = kc_sub(G, dxh, proj);
  if (!rms) inner = kc_sub(G, inner, kc_reduce_mean(G, dxh, na, axes, 1));
  kc_val dx = kc_mul(G, rstd, inner);
  c->din[0] = t == stat ? dx : kc_cast(G, dx, t);
  return G->sticky;
}

static kc_status norm_grad(kc_grad_call *c, bool rms, const char *eps_name) {
  int r = kc_value_of(G, X)->rank;
  int axis = kc_gu_axis(kc_node_int(&c->n, "axis", -1), r);
  /* the forward's statistics, when it has them and they are as precise as the compute type */
  kc_dtype t = kc_value_of(G, X)->dtype, ct = t == KC_F64 ? KC_F64 : KC_F32;
  kc_dtype stat = c->n.op == KC_OP_LAYER_NORMALIZATION ? KC_F32 : ct;
  bool stat_seeds = false;
  for (uint32_t j = 1; j < c->n.nout; j++)
    stat_seeds = stat_seeds || (c->n.out[j].id && c->dout[j].id);
  if (c->n.op != KC_OP_RMS_NORMALIZATION && !stat_seeds && stat == ct)
    return norm_grad_saved(c, rms, axis, stat);
  double eps = kc_node_float(&c->n, eps_name, 1e-5);
  kc_val bias = !rms && c->n.nin > 2 ? c->n.in[2] : (kc_val){0};
  uint32_t first = G->nnodes;
  kc_val outs[3] = {0}, seeds[3] = {0};
  if (rms) {
    outs[0] = rnorm(G, X, c->n.in[1], axis, eps);
  } else {
    outs[0] = lnorm(G, X, c->n.in[1], bias, axis, eps, &outs[1], &outs[2]);
  }
  if (G->sticky != KC_OK) return G->sticky;
  uint32_t no = rms ? 1 : 3;
  /* ONNX's mean and inv_std_dev are in the stash type (f32) whatever x's dtype is */
  for (uint32_t j = 1; j < no && j < c->n.nout; j++)
    if (c->n.out[j].id && c->dout[j].id &&
        kc_value_of(G, c->n.out[j])->dtype != kc_value_of(G, outs[j])->dtype)
      outs[j] = kc_cast(G, outs[j], kc_value_of(G, c->n.out[j])->dtype);
  if (G->sticky != KC_OK) return G->sticky;
  for (uint32_t j = 0; j < no && j < c->n.nout; j++)
    seeds[j] = c->dout[j];
  return kc_grad_local(G, first, no, outs, seeds, c->n.nin, c->n.in, c->want, c->din);
}

kc_status kc_grad_layer_normalization(kc_grad_call *c) { return norm_grad(c, false, "epsilon"); }
kc_status kc_grad_rms_normalization(kc_grad_call *c) { return norm_grad(c, true, "epsilon"); }
kc_status kc_grad_layer_norm(kc_grad_call *c) { return norm_grad(c, false, "eps"); }
kc_status kc_grad_rms_norm(kc_grad_call *c) { return norm_grad(c, true, "eps"); }

kc_status kc_grad_rotary(kc_grad_call *c) {
  if (c->want[1] || c->want[2])
    return kc_node_errorf(G, &G->nodes[c->node], KC_ERR_UNSUPPORTED,
                          "autodiff: rotary's cos/sin caches get no gradient");
  kc_val in[4] = {c->dout[0], c->n.in[1], kc_neg(G, c->n.in[2]),
                  c->n.nin > 3 ? c->n.in[3] : (kc_val){0}};
  c->din[0] = kc_gu_finish(G, kc_gu_node(G, KC_OP_ROTARY, c->n.nin, in, 1, NULL, &c->n));
  return KC_OK;
}

/* Copy body node bn's attributes onto node ni of g (deep: the body has its own arena). */
static void copy_attrs(kc_graph *g, uint32_t ni, const kc_node *bn) {
  for (uint32_t a = 0; a < bn->nattr; a++) {
    const kc_attr *at = &bn->attrs[a];
    switch (at->kind) {
    case KC_ATTR_INT: kc_node_set_int(g, ni, at->name, at->u.i); break;
    case KC_ATTR_FLOAT: kc_node_set_float(g, ni, at->name, at->u.f); break;
    case KC_ATTR_STRING: kc_node_set_string(g, ni, at->name, at->u.s); break;
    case KC_ATTR_INTS: kc_node_set_ints(g, ni, at->name, at->u.ints.n, at->u.ints.v); break;
    case KC_ATTR_FLOATS: kc_node_set_floats(g, ni, at->name, at->u.floats.n, at->u.floats.v); break;
    case KC_ATTR_DTYPE: kc_node_set_dtype(g, ni, at->name, at->u.t); break;
    case KC_ATTR_TENSOR: kc_graph_fail(g, KC_ERR_UNSUPPORTED); break;
    }
  }
}

/* A fused region: its body is inlined (recomputed) and differentiated. */
kc_status kc_grad_fused(kc_grad_call *c) {
  const kc_graph *body = c->n.body;
  if (!body || body->ninputs != c->n.nin || body->noutputs != c->n.nout)
    return kc_node_errorf(G, &G->nodes[c->node], KC_ERR_INTERNAL,
                          "autodiff: fused node without a matching body");
  kc_val *map = calloc(body->nvals, sizeof *map);
  if (!map) return kc_errorf(G->ctx, KC_ERR_NOMEM, "out of memory in autodiff");
  for (uint32_t i = 0; i < body->ninputs; i++)
    map[body->inputs[i].id] = c->n.in[i];
  uint32_t first = G->nnodes;
  for (uint32_t bi = 0; bi < body->nnodes && G->sticky == KC_OK; bi++) {
    const kc_node *bn = &body->nodes[bi];
    if (bn->op == KC_OP_NOP) continue;
    if (bn->op == KC_OP_CONSTANT) {
      const kc_attr *va = kc_node_attr(bn, "value");
      const kc_tensor *t = va ? &body->tensors[va->u.tensor] : NULL;
      if (!t || !t->data) {
        kc_graph_fail(G, KC_ERR_UNSUPPORTED);
        break;
      }
      map[bn->out[0].id] = kc_constant(G, t->dtype, t->rank, t->dims, t->data);
      continue;
    }
    kc_val in[KC_GRAD_MAX_IO], out[KC_GRAD_MAX_IO];
    if (bn->nin > KC_GRAD_MAX_IO || bn->nout > KC_GRAD_MAX_IO) {
      kc_graph_fail(G, KC_ERR_UNSUPPORTED);
      break;
    }
    for (uint32_t i = 0; i < bn->nin; i++)
      in[i] = bn->in[i].id ? map[bn->in[i].id] : (kc_val){0};
    uint32_t ni = kc_gu_node(G, bn->op, bn->nin, in, bn->nout, out, NULL);
    if (ni == UINT32_MAX) break;
    copy_attrs(G, ni, bn);
    if (!kc_gu_finish(G, ni).id) break;
    for (uint32_t j = 0; j < bn->nout; j++)
      map[bn->out[j].id] = out[j];
  }
  kc_val outs[KC_GRAD_MAX_IO];
  for (uint32_t j = 0; j < body->noutputs && G->sticky == KC_OK; j++)
    outs[j] = map[body->outputs[j].v.id];
  free(map);
  if (G->sticky != KC_OK)
    return kc_node_errorf(G, &G->nodes[c->node], G->sticky,
                          "autodiff: could not inline the fused region's body");
  return kc_grad_local(G, first, c->n.nout, outs, c->dout, c->n.nin, c->n.in, c->want, c->din);
}
