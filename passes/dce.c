/*
 * passes/dce.c - dead code elimination: delete every node none of whose results is read by a
 * live node or returned by the graph.
 *
 * One backward walk suffices: nodes are in program order, so by the time a node is reached
 * every reader of its results (all later) has been decided.
 * Invariants: graph inputs are never removed (they are the caller's signature); a node with
 * several results stays while any one is used.
 */
#include "passes/internal.h"
#include "passes/passes.h"

#include <stdlib.h>

kc_status kc_dce_run(kc_graph *g, uint32_t *removed) {
  uint32_t *uses = kc_graph_use_counts(g);
  if (!uses) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in dce");
  uint32_t dead = 0;
  for (uint32_t i = g->nnodes; i-- > 0;) {
    kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP) continue;
    bool live = false;
    for (uint32_t j = 0; j < n->nout && !live; j++)
      live = n->out[j].id && uses[n->out[j].id];
    if (live) continue;
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id && uses[n->in[j].id]) uses[n->in[j].id]--;
    n->op = KC_OP_NOP;
    dead++;
  }
  free(uses);
  kc_graph_compact(g);
  if (removed) *removed = dead;
  return KC_OK;
}

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  uint32_t removed = 0;
  kc_status s = kc_dce_run(g, &removed);
  if (removed) pc->changed = true;
  return s;
}

const kc_pass kc_pass_dce = {"dce", run, "delete nodes whose results nothing reads"};
