/*
 * ir/graph_params.c - kc_graph_weights_to_inputs: turn the named weights a training step (or a
 * gradient check) varies into graph inputs of the same names, so their values are given per run
 * instead of being compiled into the module.
 *
 * Invariants: every use of a converted weight reads the new input instead; the weight nodes are
 * dropped (compacted), their tensors stay in g->tensors, so the caller can still read the
 * initial values by name (kc_graph_weight_data); the new inputs come after the existing ones,
 * in the order the weights were defined; ids of other values are unchanged.
 */
#include "internal.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

const kc_tensor *kc_graph_weight_data(const kc_graph *g, const char *name) {
  for (uint32_t i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
  return NULL;
}

static bool matches(const char *name, int npat, const char *const *pat) {
  for (int k = 0; k < npat; k++)
    if (fnmatch(pat[k], name, 0) == 0) return true;
  return false;
}

kc_status kc_graph_weights_to_inputs(kc_graph *g, int npat, const char *const *pat,
                                     uint32_t *nconverted) {
  uint32_t n = 0, nn = g->nnodes;
  for (uint32_t ni = 0; ni < nn; ni++) {
    kc_node *w = &g->nodes[ni];
    if (w->op != KC_OP_WEIGHT) continue;
    const char *name = kc_node_string(w, "name", NULL);
    kc_val old = w->out[0];
    const kc_value *v = kc_value_of(g, old);
    if (!name || !kc_dtype_is_float(v->dtype) || !matches(name, npat, pat)) continue;
    kc_dim dims[KC_MAX_RANK];
    memcpy(dims, v->dims, sizeof dims);
    kc_val in = kc_graph_add_input(g, name, v->dtype, v->rank, dims);
    if (!in.id) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory making '%s' an input", name);
    kc_graph_replace_uses(g, old, in);
    g->nodes[ni].op = KC_OP_NOP;
    n++;
  }
  kc_graph_compact(g);
  if (nconverted) *nconverted = n;
  return KC_OK;
}
