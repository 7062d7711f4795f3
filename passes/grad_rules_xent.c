/*
 * passes/grad_rules_xent.c - the gradient rule (ir/ops.def GRAD column) of the fused softmax
 * cross-entropy, softmax_xent.
 *
 * The backward reads the forward's log-sum-exp: the rule appends a copy of the forward node with
 * its lse result, which the cse pass merges into the forward node (so the forward kernel writes
 * lse once; without cse the copy recomputes it), and then softmax_xent_grad, which recomputes the
 * softmax from lse row by row: dlogits = (softmax - onehot(label)) * dloss, 0 on ignored rows.
 * An adjoint of lse itself (a loss that reads it) adds softmax * dlse. The labels get no
 * gradient (integers).
 */
#include "passes/grad.h"

kc_status kc_grad_softmax_xent(kc_grad_call *c) {
  kc_graph *g = c->g;
  if (!c->want[0]) return KC_OK;
  kc_val logits = c->n.in[0];
  kc_val st[2] = {{0}};
  uint32_t ni = kc_gu_node(g, KC_OP_SOFTMAX_XENT, 2, c->n.in, 2, st, &c->n);
  if (ni == UINT32_MAX || !kc_gu_finish(g, ni).id) return g->sticky;
  kc_val dx = {0};
  if (c->dout[0].id) {
    kc_val in[4] = {logits, c->n.in[1], st[1], c->dout[0]};
    dx = kc_gu_finish(g, kc_gu_node(g, KC_OP_SOFTMAX_XENT_GRAD, 4, in, 1, NULL, &c->n));
  }
  if (c->n.nout > 1 && c->n.out[1].id && c->dout[1].id) {
    kc_dtype t = kc_value_of(g, logits)->dtype;
    kc_val dl = c->dout[1];
    if (kc_value_of(g, dl)->dtype != t) dl = kc_cast(g, dl, t);
    int64_t last = -1;
    kc_val p = kc_softmax(g, logits, -1);
    dx = kc_gu_accum(g, dx, kc_mul(g, p, kc_unsqueeze(g, dl, 1, &last)));
  }
  c->din[0] = dx;
  return g->sticky;
}
