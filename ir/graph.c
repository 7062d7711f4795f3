/*
 * ir/graph.c - graph construction and mutation: values, nodes, tensors, body graphs, use
 * replacement and compaction, and the driver that runs shape functions.
 *
 * Growable arrays double on demand; ids index them, so a kc_val survives reallocation.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Grow *arr (of elem bytes) to hold need entries; false when out of memory. */
static bool grow(void **arr, uint32_t *cap, uint32_t need, size_t elem) {
  if (need <= *cap) return true;
  uint32_t ncap = *cap ? *cap * 2 : 16;
  while (ncap < need)
    ncap *= 2;
  void *p = realloc(*arr, (size_t)ncap * elem);
  if (!p) return false;
  memset((char *)p + (size_t)*cap * elem, 0, (size_t)(ncap - *cap) * elem);
  *arr = p;
  *cap = ncap;
  return true;
}
#define GROW(arr, cap, need) grow((void **)&(arr), &(cap), (need), sizeof *(arr))

kc_graph *kc_graph_new(kc_context *ctx, const char *name) {
  kc_graph *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  g->ctx = ctx;
  g->name = kc_arena_strdup(&g->arena, name ? name : "main");
  if (!GROW(g->vals, g->capvals, 1)) {
    kc_graph_free(g);
    return NULL;
  }
  g->nvals = 1; /* id 0 = none */
  g->vals[0].rank = -1;
  return g;
}

void kc_graph_free(kc_graph *g) {
  if (!g) return;
  for (uint32_t i = 0; i < g->nbodies; i++)
    kc_graph_free(g->bodies[i]);
  free(g->bodies);
  free(g->vals);
  free(g->nodes);
  free(g->inputs);
  free(g->outputs);
  free(g->tensors);
  free(g->dexprs);
  kc_arena_free(&g->arena);
  free(g);
}

kc_context *kc_graph_context(const kc_graph *g) { return g->ctx; }
kc_status kc_graph_status(const kc_graph *g) { return g->sticky; }

void kc_graph_fail(kc_graph *g, kc_status s) {
  if (g->sticky == KC_OK) g->sticky = s;
}

kc_graph *kc_graph_new_body(kc_graph *g, const char *name) {
  if (!GROW(g->bodies, g->capbodies, g->nbodies + 1)) return NULL;
  kc_graph *b = kc_graph_new(g->ctx, name);
  if (b) g->bodies[g->nbodies++] = b;
  return b;
}

kc_val kc_graph_new_value(kc_graph *g) {
  if (!GROW(g->vals, g->capvals, g->nvals + 1)) {
    kc_graph_fail(g, KC_ERR_NOMEM);
    return (kc_val){0};
  }
  kc_value *v = &g->vals[g->nvals];
  memset(v, 0, sizeof *v);
  v->rank = -1;
  return (kc_val){g->nvals++};
}

kc_val kc_graph_add_input(kc_graph *g, const char *name, kc_dtype t, int rank, const kc_dim *dims) {
  if (rank < 0 || rank > KC_MAX_RANK) {
    kc_graph_fail(g, kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "input '%s': rank %d out of range",
                               name ? name : "", rank));
    return (kc_val){0};
  }
  kc_val v = kc_graph_new_value(g);
  if (!v.id || !GROW(g->inputs, g->capinputs, g->ninputs + 1)) return (kc_val){0};
  kc_value *val = kc_value_of(g, v);
  val->dtype = t;
  val->rank = rank;
  for (int i = 0; i < rank; i++)
    val->dims[i] = dims[i];
  val->name = kc_arena_strdup(&g->arena, name);
  g->inputs[g->ninputs++] = v;
  return v;
}

/* Append a node whose outputs are given; every output value gets def/def_out. */
uint32_t kc_graph_add_node_with_outputs(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in,
                                        uint32_t nout, const kc_val *outs) {
  if (!GROW(g->nodes, g->capnodes, g->nnodes + 1)) {
    kc_graph_fail(g, KC_ERR_NOMEM);
    return UINT32_MAX;
  }
  uint32_t ni = g->nnodes++;
  kc_node *n = &g->nodes[ni];
  memset(n, 0, sizeof *n);
  n->op = op;
  n->nin = nin;
  n->nout = nout;
  n->in = kc_arena_alloc(&g->arena, (nin ? nin : 1) * sizeof(kc_val));
  n->out = kc_arena_alloc(&g->arena, (nout ? nout : 1) * sizeof(kc_val));
  if (nin) memcpy(n->in, in, nin * sizeof(kc_val));
  for (uint32_t i = 0; i < nout; i++) {
    n->out[i] = outs[i];
    if (outs[i].id) {
      g->vals[outs[i].id].def = ni + 1;
      g->vals[outs[i].id].def_out = i;
    }
  }
  return ni;
}

uint32_t kc_graph_add_node(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in, uint32_t nout,
                           kc_val *outs) {
  kc_val tmp[64];
  kc_val *o = outs ? outs : tmp;
  if (nout > 64 && !outs) return UINT32_MAX;
  for (uint32_t i = 0; i < nout; i++)
    o[i] = kc_graph_new_value(g);
  return kc_graph_add_node_with_outputs(g, op, nin, in, nout, o);
}

uint32_t kc_graph_add_tensor(kc_graph *g, const char *name, kc_dtype t, int rank,
                             const int64_t *dims, const void *data, bool copy) {
  if (!GROW(g->tensors, g->captensors, g->ntensors + 1)) {
    kc_graph_fail(g, KC_ERR_NOMEM);
    return UINT32_MAX;
  }
  kc_tensor *tn = &g->tensors[g->ntensors];
  memset(tn, 0, sizeof *tn);
  tn->name = kc_arena_strdup(&g->arena, name);
  tn->dtype = t;
  tn->rank = rank;
  size_t numel = 1;
  for (int i = 0; i < rank; i++) {
    tn->dims[i] = dims[i];
    numel *= (size_t)dims[i];
  }
  tn->nbytes = numel * kc_dtype_size(t);
  if (data && copy) {
    tn->data = kc_arena_memdup(&g->arena, data, tn->nbytes);
    if (!tn->data && tn->nbytes) {
      kc_graph_fail(g, KC_ERR_NOMEM);
      return UINT32_MAX;
    }
  } else {
    tn->data = data;
  }
  return g->ntensors++;
}

uint32_t kc_graph_num_inputs(const kc_graph *g) { return g->ninputs; }
uint32_t kc_graph_num_outputs(const kc_graph *g) { return g->noutputs; }
kc_val kc_graph_input(const kc_graph *g, uint32_t i) {
  return i < g->ninputs ? g->inputs[i] : (kc_val){0};
}
kc_val kc_graph_output(const kc_graph *g, uint32_t i) {
  return i < g->noutputs ? g->outputs[i].v : (kc_val){0};
}
const char *kc_graph_input_name(const kc_graph *g, uint32_t i) {
  const char *s = i < g->ninputs ? g->vals[g->inputs[i].id].name : NULL;
  return s ? s : "";
}
const char *kc_graph_output_name(const kc_graph *g, uint32_t i) {
  const char *s = i < g->noutputs ? g->outputs[i].name : NULL;
  return s ? s : "";
}

kc_dtype kc_val_dtype(const kc_graph *g, kc_val v) {
  return v.id < g->nvals ? g->vals[v.id].dtype : KC_DT_NONE;
}
int kc_val_rank(const kc_graph *g, kc_val v) { return v.id < g->nvals ? g->vals[v.id].rank : -1; }
void kc_val_dims(const kc_graph *g, kc_val v, kc_dim *dims) {
  if (v.id >= g->nvals) return;
  for (int i = 0; i < g->vals[v.id].rank; i++)
    dims[i] = g->vals[v.id].dims[i];
}

void kc_output(kc_graph *g, kc_val v, const char *name) {
  if (!v.id) {
    kc_graph_fail(g, KC_ERR_INVALID_ARG);
    return;
  }
  if (!GROW(g->outputs, g->capoutputs, g->noutputs + 1)) {
    kc_graph_fail(g, KC_ERR_NOMEM);
    return;
  }
  g->outputs[g->noutputs].v = v;
  g->outputs[g->noutputs].name = kc_arena_strdup(&g->arena, name);
  g->noutputs++;
}

const kc_dim *kc_value_known(const kc_graph *g, kc_val v, uint32_t *n) {
  if (!v.id || v.id >= g->nvals || !g->vals[v.id].known) return NULL;
  *n = g->vals[v.id].nknown;
  return g->vals[v.id].known;
}

int64_t kc_value_numel(const kc_graph *g, kc_val v) {
  const kc_value *val = &g->vals[v.id];
  if (val->rank < 0) return -1;
  int64_t n = 1;
  for (int i = 0; i < val->rank; i++) {
    if (KC_DIM_IS_SYM(val->dims[i])) return -1;
    n *= val->dims[i];
  }
  return n;
}

kc_status kc_node_errorf(kc_graph *g, const kc_node *n, kc_status s, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  char what[512];
  return kc_errorf(g->ctx, s, "%s: %s", kc_node_what(n, what, sizeof what), msg);
}

const char *kc_node_what(const kc_node *n, char *buf, size_t size) {
  uint32_t out = n->nout ? n->out[0].id : 0;
  if (n->loc)
    snprintf(buf, size, "node '%s' (%s, %%%u)", n->loc, kc_ops[n->op].name, out);
  else
    snprintf(buf, size, "node %%%u (%s)", out, kc_ops[n->op].name);
  return buf;
}

kc_status kc_node_infer(kc_graph *g, uint32_t ni) {
  kc_node *n = &g->nodes[ni];
  if (n->op == KC_OP_NOP) return KC_OK;
  for (uint32_t i = 0; i < n->nin; i++)
    if (n->in[i].id && g->vals[n->in[i].id].rank < 0)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "input %u (%%%u) has no type", i, n->in[i].id);
  const kc_node *outer = g->infer_node;
  g->infer_node = n;
  kc_status s = kc_ops[n->op].shape(g, n);
  g->infer_node = outer;
  return s;
}

kc_status kc_graph_infer(kc_graph *g) {
  for (uint32_t i = 0; i < g->nnodes; i++) {
    kc_status s = kc_node_infer(g, i);
    if (s != KC_OK) return s;
  }
  return KC_OK;
}

void kc_graph_replace_uses(kc_graph *g, kc_val old, kc_val new_v) {
  for (uint32_t i = 0; i < g->nnodes; i++) {
    kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id == old.id) n->in[j] = new_v;
  }
  for (uint32_t i = 0; i < g->noutputs; i++)
    if (g->outputs[i].v.id == old.id) g->outputs[i].v = new_v;
}

void kc_graph_compact(kc_graph *g) {
  uint32_t w = 0;
  for (uint32_t r = 0; r < g->nnodes; r++) {
    if (g->nodes[r].op == KC_OP_NOP) {
      /* results of a dropped node are defined by nothing now */
      for (uint32_t j = 0; j < g->nodes[r].nout; j++) {
        kc_value *v = g->nodes[r].out[j].id ? &g->vals[g->nodes[r].out[j].id] : NULL;
        if (v && v->def == r + 1) v->def = 0;
      }
      continue;
    }
    if (w != r) g->nodes[w] = g->nodes[r];
    for (uint32_t j = 0; j < g->nodes[w].nout; j++)
      if (g->nodes[w].out[j].id) g->vals[g->nodes[w].out[j].id].def = w + 1;
    w++;
  }
  g->nnodes = w;
}

uint32_t *kc_graph_use_counts(const kc_graph *g) {
  uint32_t *uses = calloc(g->nvals, sizeof *uses);
  if (!uses) return NULL;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP) continue;
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id < g->nvals) uses[n->in[j].id]++;
  }
  for (uint32_t i = 0; i < g->noutputs; i++)
    if (g->outputs[i].v.id < g->nvals) uses[g->outputs[i].v.id]++;
  return uses;
}
