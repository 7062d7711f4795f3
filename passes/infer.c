/*
 * passes/infer.c - shape propagation: re-run every node's shape function in program order, so
 * types and known contents (shapes, axes) reflect the graph as it is now, after rewrites.
 *
 * Where inference can only name a size with a new symbol (a data-dependent size) and the graph
 * already records a size there, the recorded one is kept: it is at least as informative, and
 * keeping it makes the pass idempotent (running it twice prints the same IR).
 * Invariants: sources keep their printed type (their shape function checks it); a node whose
 * shape function fails stops the pass with that error, the graph's types unchanged past it.
 */
#include "passes/internal.h"
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

static kc_status infer_node(kc_graph *g, uint32_t ni, kc_value *rec, bool *changed) {
  kc_node *n = &g->nodes[ni];
  bool source = kc_ops[n->op].cls == KC_CLASS_SOURCE;
  for (uint32_t j = 0; j < n->nout; j++) {
    if (!n->out[j].id) continue;
    kc_value *v = kc_value_of(g, n->out[j]);
    rec[j] = *v;
    if (source) continue;
    v->dtype = KC_DT_NONE;
    v->rank = -1;
    v->known = NULL;
    v->nknown = 0;
  }
  uint32_t fresh = g->ndexprs;
  kc_status s = kc_node_infer(g, ni);
  n = &g->nodes[ni];
  for (uint32_t j = 0; j < n->nout; j++) {
    if (!n->out[j].id) continue;
    kc_value *v = kc_value_of(g, n->out[j]);
    if (s != KC_OK) {
      *v = rec[j];
      continue;
    }
    const kc_value *r = &rec[j];
    bool same = r->dtype == v->dtype && r->rank == v->rank;
    for (int d = 0; same && d < r->rank; d++) {
      if (kc_dim_same(g, r->dims[d], v->dims[d])) continue;
      if (kc_dim_is_new(g, v->dims[d], fresh) && r->rank >= 0)
        v->dims[d] = r->dims[d]; /* keep the recorded name of a size inference cannot name */
      else
        same = false;
    }
    if (!same) *changed = true;
  }
  return s;
}

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  uint32_t most = 1;
  for (uint32_t i = 0; i < g->nnodes; i++)
    if (g->nodes[i].nout > most) most = g->nodes[i].nout;
  kc_value *rec = malloc(most * sizeof *rec);
  if (!rec) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in infer");
  kc_status s = KC_OK;
  bool changed = false;
  for (uint32_t i = 0; i < g->nnodes && s == KC_OK; i++)
    if (g->nodes[i].op != KC_OP_NOP) s = infer_node(g, i, rec, &changed);
  free(rec);
  if (changed) pc->changed = true;
  return s;
}

const kc_pass kc_pass_infer = {"infer", run, "re-run shape inference over the graph"};
