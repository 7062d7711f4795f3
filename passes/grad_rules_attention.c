/*
 * passes/grad_rules_attention.c - the gradient rule of kernc's fused attention (ir/ops.def
 * ATTENTION row): a FlashAttention-2-style backward, the attention_grad op, which recomputes the
 * probabilities from q, k and the rows' log-sum-exp instead of storing them.
 *
 * The rule appends a second copy of the forward node (same op, inputs and attributes) asking
 * for result 3, lse, and feeds it to attention_grad with the forward's y. CSE merges the copy
 * into the forward node (which then computes y and lse once); without CSE the graph is still
 * correct, the forward is recomputed.
 *
 * Refused with an error naming the node: past K/V and cos/sin inputs (the decode and
 * rotary-fused forms; training graphs have neither), a parameter reaching the mask (it gets no
 * gradient), and a loss that reads present K/V or lse (only y is differentiated). softcap is
 * differentiated by the kernels (ds times 1 - tanh^2).
 */
#include "passes/grad.h"

#define G (c->g)

enum { Q, K, V, MASK, PAST_K, PAST_V, COS, SIN };

static bool has(const kc_node *n, uint32_t i) { return i < n->nin && n->in[i].id; }

kc_status kc_grad_attention(kc_grad_call *c) {
  const kc_node *n = &c->n, *orig = &G->nodes[c->node];
  if (has(n, PAST_K) || has(n, PAST_V))
    return kc_node_errorf(G, orig, KC_ERR_UNSUPPORTED,
                          "autodiff: attention with past K/V (a decoding form) has no gradient");
  if (has(n, COS) || has(n, SIN))
    return kc_node_errorf(G, orig, KC_ERR_UNSUPPORTED,
                          "autodiff: attention with fused rotary (cos/sin inputs) has no "
                          "gradient; differentiate the graph before rotary is fused into it");
  if (has(n, MASK) && c->want[MASK])
    return kc_node_errorf(G, orig, KC_ERR_UNSUPPORTED,
                          "autodiff: attention's mask gets no gradient (a parameter reaches it)");
  for (uint32_t j = 1; j < n->nout; j++)
    if (c->dout[j].id)
      return kc_node_errorf(G, orig, KC_ERR_UNSUPPORTED,
                            "autodiff: the loss reads attention's result %u (%s); only y has a "
                            "gradient",
                            j, j == 3 ? "lse" : "present K/V");
  if (!c->dout[0].id || !(c->want[Q] || c->want[K] || c->want[V])) return KC_OK;
  /* the forward again, with lse: y, (no present K/V), lse */
  kc_val fin[4] = {n->in[Q], n->in[K], n->in[V], has(n, MASK) ? n->in[MASK] : (kc_val){0}};
  kc_val fout[4] = {kc_graph_new_value(G), {0}, {0}, kc_graph_new_value(G)};
  if (G->sticky != KC_OK) return G->sticky;
  uint32_t fi =
      kc_graph_add_node_with_outputs(G, KC_OP_ATTENTION, has(n, MASK) ? 4 : 3, fin, 4, fout);
  if (fi == UINT32_MAX) return G->sticky != KC_OK ? G->sticky : KC_ERR_NOMEM;
  /* same attributes (a copy: setters on one node must not change the other) and loc */
  if (n->nattr) {
    kc_attr *a = kc_arena_memdup(&G->arena, n->attrs, n->nattr * sizeof *a);
    if (!a) return kc_errorf(G->ctx, KC_ERR_NOMEM, "out of memory in autodiff");
    G->nodes[fi].attrs = a;
    G->nodes[fi].nattr = n->nattr;
  }
  G->nodes[fi].loc = n->loc;
  if (!kc_gu_finish(G, fi).id) return G->sticky != KC_OK ? G->sticky : KC_ERR_INTERNAL;
  kc_val gin[7] = {n->in[Q], n->in[K], n->in[V], fin[MASK], n->out[0], c->dout[0], fout[3]};
  kc_val gout[3];
  uint32_t gi = kc_gu_node(G, KC_OP_ATTENTION_GRAD, 7, gin, 3, gout, NULL);
  if (gi == UINT32_MAX) return G->sticky;
  /* attention_grad's schema is the forward's without rotary_interleaved */
  static const char *const ints[] = {"heads", "kv_heads"}, *const floats[] = {"scale", "softcap"};
  for (int a = 0; a < 2; a++) {
    /* through the typed getters: text may give a float attribute as an integer ("softcap=2") */
    if (kc_node_attr(n, ints[a])) kc_node_set_int(G, gi, ints[a], kc_node_int(n, ints[a], 0));
    if (kc_node_attr(n, floats[a]))
      kc_node_set_float(G, gi, floats[a], kc_node_float(n, floats[a], 0));
  }
  kc_node_set_string(G, gi, "mask", kc_node_string(n, "mask", "none"));
  if (!kc_gu_finish(G, gi).id) return G->sticky != KC_OK ? G->sticky : KC_ERR_INTERNAL;
  for (uint32_t i = 0; i < 3; i++)
    if (c->want[i]) c->din[i] = gout[i];
  return KC_OK;
}
