/*
 * passes/cse.c - common subexpression elimination: two nodes with the same op, the same
 * operands and the same attributes compute the same results, so the later one is dropped and
 * its readers use the earlier one's results.
 *
 * One walk in program order with a hash table of the nodes kept so far; operands are rewritten
 * through the replacement table before a node is hashed, so chains of duplicates collapse in the
 * same walk. Constants count as equal when their data is (anonymous) or their name is (named);
 * weights when their name is.
 * Invariants: random ops (KC_OPF_RANDOM: training dropout) and ops with a body are never merged;
 * the kept node is always the earlier one, so program order stays valid.
 */
#include "passes/passes.h"
#include "ir/internal.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h;
}

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

static uint64_t hash_tensor(const kc_graph *g, uint32_t ti, uint64_t h) {
  if (ti >= g->ntensors) return h;
  const kc_tensor *t = &g->tensors[ti];
  if (t->name) return hash_bytes(h, t->name, strlen(t->name));
  h = mix(h, (uint64_t)t->dtype * 131 + t->nbytes);
  return t->data ? hash_bytes(h, t->data, t->nbytes < 256 ? t->nbytes : 256) : h;
}

/* Attributes are hashed order-independently (sum), since their stored order may differ. */
static uint64_t hash_node(const kc_graph *g, const kc_node *n) {
  uint64_t h = mix(mix(n->op, n->nin), n->nout);
  for (uint32_t j = 0; j < n->nin; j++)
    h = mix(h, n->in[j].id);
  uint64_t attrs = 0;
  for (uint32_t a = 0; a < n->nattr; a++) {
    const kc_attr *at = &n->attrs[a];
    uint64_t x = hash_bytes(mix(0, at->kind), at->name, strlen(at->name));
    switch (at->kind) {
    case KC_ATTR_INT: x = mix(x, (uint64_t)at->u.i); break;
    case KC_ATTR_FLOAT: x = hash_bytes(x, &at->u.f, sizeof at->u.f); break;
    case KC_ATTR_STRING: x = at->u.s ? hash_bytes(x, at->u.s, strlen(at->u.s)) : x; break;
    case KC_ATTR_INTS: x = hash_bytes(x, at->u.ints.v, at->u.ints.n * sizeof(int64_t)); break;
    case KC_ATTR_FLOATS: x = hash_bytes(x, at->u.floats.v, at->u.floats.n * sizeof(double)); break;
    case KC_ATTR_DTYPE: x = mix(x, at->u.t); break;
    case KC_ATTR_TENSOR: x = hash_tensor(g, at->u.tensor, x); break;
    }
    attrs += x;
  }
  return mix(h, attrs);
}

static bool same_tensor(const kc_graph *g, uint32_t a, uint32_t b) {
  if (a == b) return true;
  if (a >= g->ntensors || b >= g->ntensors) return false;
  const kc_tensor *x = &g->tensors[a], *y = &g->tensors[b];
  if (x->name || y->name) return x->name && y->name && strcmp(x->name, y->name) == 0;
  if (x->dtype != y->dtype || x->rank != y->rank || x->nbytes != y->nbytes) return false;
  for (int i = 0; i < x->rank; i++)
    if (x->dims[i] != y->dims[i]) return false;
  return x->data && y->data && memcmp(x->data, y->data, x->nbytes) == 0;
}

static bool same_attr(const kc_graph *g, const kc_attr *a, const kc_attr *b) {
  if (a->kind != b->kind) return false;
  switch (a->kind) {
  case KC_ATTR_INT: return a->u.i == b->u.i;
  case KC_ATTR_FLOAT: return memcmp(&a->u.f, &b->u.f, sizeof a->u.f) == 0; /* bits: -0.0, nan */
  case KC_ATTR_STRING:
    return a->u.s == b->u.s || (a->u.s && b->u.s && strcmp(a->u.s, b->u.s) == 0);
  case KC_ATTR_INTS:
    return a->u.ints.n == b->u.ints.n &&
           (!a->u.ints.n || memcmp(a->u.ints.v, b->u.ints.v, a->u.ints.n * sizeof(int64_t)) == 0);
  case KC_ATTR_FLOATS:
    return a->u.floats.n == b->u.floats.n &&
           (!a->u.floats.n ||
            memcmp(a->u.floats.v, b->u.floats.v, a->u.floats.n * sizeof(double)) == 0);
  case KC_ATTR_DTYPE: return a->u.t == b->u.t;
  case KC_ATTR_TENSOR: return same_tensor(g, a->u.tensor, b->u.tensor);
  }
  return false;
}

static bool same_type(const kc_graph *g, kc_val a, kc_val b) {
  if (!a.id || !b.id) return a.id == b.id;
  const kc_value *x = kc_value_of(g, a), *y = kc_value_of(g, b);
  if (x->dtype != y->dtype || x->rank != y->rank) return false;
  for (int i = 0; i < x->rank; i++)
    if (x->dims[i] != y->dims[i]) return false;
  return true;
}

static bool same_node(const kc_graph *g, const kc_node *a, const kc_node *b) {
  if (a->op != b->op || a->nin != b->nin || a->nout != b->nout || a->nattr != b->nattr)
    return false;
  for (uint32_t j = 0; j < a->nin; j++)
    if (a->in[j].id != b->in[j].id) return false;
  /* results must all be there or absent alike, and typed alike (weights print their type) */
  for (uint32_t j = 0; j < a->nout; j++)
    if (!same_type(g, a->out[j], b->out[j])) return false;
  for (uint32_t i = 0; i < a->nattr; i++) {
    const kc_attr *y = kc_node_attr(b, a->attrs[i].name);
    if (!y || !same_attr(g, &a->attrs[i], y)) return false;
  }
  return true;
}

static bool mergeable(const kc_node *n) {
  return n->op != KC_OP_NOP && n->nout > 0 && !n->body &&
         !(kc_ops[n->op].flags & (KC_OPF_RANDOM | KC_OPF_BODY));
}

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  uint32_t cap = 16;
  while (cap < 2 * g->nnodes)
    cap *= 2;
  uint32_t *table = malloc(cap * sizeof *table); /* node index + 1, 0: empty */
  kc_val *repl = calloc(g->nvals, sizeof *repl);
  if (!table || !repl) {
    free(table);
    free(repl);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in cse");
  }
  memset(table, 0, cap * sizeof *table);
  uint32_t merged = 0;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id && repl[n->in[j].id].id) n->in[j] = repl[n->in[j].id];
    if (!mergeable(n)) continue;
    uint32_t slot = (uint32_t)hash_node(g, n) & (cap - 1);
    for (; table[slot]; slot = (slot + 1) & (cap - 1)) {
      const kc_node *k = &g->nodes[table[slot] - 1];
      if (!same_node(g, k, n)) continue;
      for (uint32_t j = 0; j < n->nout; j++)
        if (n->out[j].id) repl[n->out[j].id] = k->out[j];
      n->op = KC_OP_NOP; /* every reader is later and reads k's results from now on */
      merged++;
      break;
    }
    if (n->op != KC_OP_NOP) table[slot] = i + 1;
  }
  for (uint32_t i = 0; i < g->noutputs; i++)
    if (repl[g->outputs[i].v.id].id) g->outputs[i].v = repl[g->outputs[i].v.id];
  free(table);
  free(repl);
  if (merged) {
    kc_graph_compact(g);
    pc->changed = true;
  }
  return KC_OK;
}

const kc_pass kc_pass_cse = {"cse", run,
                             "merge nodes with the same op, operands and attributes (not random)"};
