/*
 * ir/graph_clone.c - kc_graph_clone: a deep copy of a graph with the same value ids, node
 * order, dims (same dexpr indices, so every kc_dim means the same in both), tensors and bodies.
 *
 * Invariants:
 *   - Everything the clone points at lives in its own arena or arrays, except tensor data when
 *     share_data is set: then the source graph must outlive the clone (the runtime's per-run
 *     shape graph shares the compiled graph's weights this way).
 *   - Tensor attributes are indices into g->tensors; the table is copied in order, so they stay
 *     valid. A node's body is the body graph at the same index of g->bodies in the clone.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct cloner {
  const kc_graph *src;
  kc_graph *dst;
  bool share;
  bool ok;
} cloner;

/* Copy n elements of size elem from p into dst's arena (NULL stays NULL). */
static void *dup(cloner *c, const void *p, size_t n, size_t elem) {
  if (!p) return NULL;
  void *q = kc_arena_memdup(&c->dst->arena, p, (n ? n : 1) * elem);
  if (!q) c->ok = false;
  return q;
}

static const char *dupstr(cloner *c, const char *s) {
  if (!s) return NULL;
  const char *q = kc_arena_strdup(&c->dst->arena, s);
  if (!q) c->ok = false;
  return q;
}

/* malloc'd copy of a growable array (capacity kept, so later growth behaves the same). */
static void *dup_array(cloner *c, const void *p, uint32_t cap, size_t elem) {
  if (!cap) return NULL;
  void *q = calloc(cap, elem);
  if (!q) {
    c->ok = false;
    return NULL;
  }
  if (p) memcpy(q, p, (size_t)cap * elem);
  return q;
}

static void clone_attrs(cloner *c, kc_node *n) {
  if (!n->nattr) return;
  kc_attr *a = dup(c, n->attrs, n->nattr, sizeof *a);
  if (!a) return;
  for (uint32_t i = 0; i < n->nattr; i++) {
    a[i].name = dupstr(c, a[i].name);
    switch (a[i].kind) {
    case KC_ATTR_STRING: a[i].u.s = dupstr(c, a[i].u.s); break;
    case KC_ATTR_INTS: a[i].u.ints.v = dup(c, a[i].u.ints.v, a[i].u.ints.n, sizeof(int64_t)); break;
    case KC_ATTR_FLOATS:
      a[i].u.floats.v = dup(c, a[i].u.floats.v, a[i].u.floats.n, sizeof(double));
      break;
    default: break;
    }
  }
  n->attrs = a;
}

/* Index of body graph b in src->bodies, or UINT32_MAX. */
static uint32_t body_index(const kc_graph *src, const kc_graph *b) {
  for (uint32_t i = 0; i < src->nbodies; i++)
    if (src->bodies[i] == b) return i;
  return UINT32_MAX;
}

static void clone_nodes(cloner *c) {
  const kc_graph *g = c->src;
  kc_graph *d = c->dst;
  for (uint32_t i = 0; i < g->nnodes && c->ok; i++) {
    kc_node *n = &d->nodes[i];
    /* same sizes as kc_graph_add_node_with_outputs allocates */
    n->in = dup(c, g->nodes[i].in, n->nin, sizeof(kc_val));
    n->out = dup(c, g->nodes[i].out, n->nout, sizeof(kc_val));
    if (!n->in) n->in = kc_arena_alloc(&d->arena, sizeof(kc_val));
    if (!n->out) n->out = kc_arena_alloc(&d->arena, sizeof(kc_val));
    n->loc = dupstr(c, n->loc);
    clone_attrs(c, n);
    if (n->body) {
      uint32_t bi = body_index(g, n->body);
      n->body = bi < d->nbodies ? d->bodies[bi] : NULL;
      if (!n->body) c->ok = false; /* a body the graph does not own: not a graph kernc made */
    }
  }
}

static void clone_tables(cloner *c) {
  const kc_graph *g = c->src;
  kc_graph *d = c->dst;
  for (uint32_t i = 1; i < g->nvals && c->ok; i++) {
    kc_value *v = &d->vals[i];
    v->name = dupstr(c, v->name);
    v->known = dup(c, v->known, v->nknown, sizeof(kc_dim));
  }
  for (uint32_t i = 0; i < g->noutputs && c->ok; i++)
    d->outputs[i].name = dupstr(c, d->outputs[i].name);
  d->weights_file = dupstr(c, g->weights_file);
  for (uint32_t i = 0; i < g->ntensors && c->ok; i++) {
    kc_tensor *t = &d->tensors[i];
    t->name = dupstr(c, t->name);
    if (!c->share && t->data) t->data = dup(c, t->data, t->nbytes, 1);
  }
  for (uint32_t i = 0; i < g->ndexprs && c->ok; i++)
    if (d->dexprs[i].kind == KC_DX_SYM) d->dexprs[i].name = dupstr(c, d->dexprs[i].name);
}

kc_graph *kc_graph_clone(const kc_graph *g, bool share_data) {
  kc_graph *d = kc_graph_new(g->ctx, g->name);
  if (!d) return NULL;
  cloner c = {g, d, share_data, true};
  free(d->vals);
  d->vals = dup_array(&c, g->vals, g->capvals, sizeof *g->vals);
  d->capvals = d->vals ? g->capvals : 0;
  d->nvals = d->vals ? g->nvals : 0;
  d->nodes = dup_array(&c, g->nodes, g->capnodes, sizeof *g->nodes);
  d->capnodes = d->nodes ? g->capnodes : 0;
  d->nnodes = d->nodes ? g->nnodes : 0;
  d->inputs = dup_array(&c, g->inputs, g->capinputs, sizeof *g->inputs);
  d->capinputs = d->inputs ? g->capinputs : 0;
  d->ninputs = d->inputs ? g->ninputs : 0;
  d->outputs = dup_array(&c, g->outputs, g->capoutputs, sizeof *g->outputs);
  d->capoutputs = d->outputs ? g->capoutputs : 0;
  d->noutputs = d->outputs ? g->noutputs : 0;
  d->tensors = dup_array(&c, g->tensors, g->captensors, sizeof *g->tensors);
  d->captensors = d->tensors ? g->captensors : 0;
  d->ntensors = d->tensors ? g->ntensors : 0;
  d->dexprs = dup_array(&c, g->dexprs, g->capdexprs, sizeof *g->dexprs);
  d->capdexprs = d->dexprs ? g->capdexprs : 0;
  d->ndexprs = d->dexprs ? g->ndexprs : 0;
  d->nfresh = g->nfresh;
  d->sticky = g->sticky;
  if (c.ok && g->nbodies) {
    d->bodies = calloc(g->nbodies, sizeof *d->bodies);
    d->capbodies = d->bodies ? g->nbodies : 0;
    c.ok = d->bodies != NULL;
    for (uint32_t i = 0; i < g->nbodies && c.ok; i++) {
      d->bodies[i] = kc_graph_clone(g->bodies[i], share_data);
      c.ok = d->bodies[i] != NULL;
      d->nbodies += c.ok;
    }
  }
  if (c.ok) clone_tables(&c);
  if (c.ok) clone_nodes(&c);
  if (!c.ok) {
    kc_graph_free(d);
    return NULL;
  }
  return d;
}
