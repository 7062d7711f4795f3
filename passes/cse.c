/*
 * passes/cse.c - common subexpression elimination: two nodes with the same op, the same
 * operands and the same attributes compute the same results, so the later one is dropped and
 * its readers use the earlier one's results.
 *
 * One walk in program order with a hash table of the nodes kept so far; operands are rewritten
 * through the replacement table before a node is hashed, so chains of duplicates collapse in the
 * same walk. Constants count as equal when their data is (anonymous) or their name is (named);
 * weights when their name is.
 * Commutative ops (KC_OPF_COMMUTATIVE) match with their first two operands in either order.
 * Optional results: an op with a bounded result count (max_out >= 0 in ir/ops.def) computes its
 * leading results the same whichever later ones are asked for (layer_norm's mean/rstd,
 * attention's lse), so two such nodes that differ only in which results they have are one
 * computation: the earlier node takes over the results it lacks (its out[] grows; the taken
 * value ids stay), and the later node's other results are replaced by the earlier's. This is how
 * a grad rule that needs a fused op's statistics asks for them: it appends a copy of the forward
 * node with the statistics results, and this pass folds the copy into the forward node.
 * Variadic results (split: the count is the number of pieces) must match in number.
 * Invariants: random ops (KC_OPF_RANDOM: training dropout) and ops with a body are never merged;
 * the kept node is always the earlier one, so program order stays valid; it keeps its own loc,
 * or takes the dropped node's when it has none (kc_rewrite_loc's rule).
 */
#include "passes/internal.h"
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h;
}

/* add(a, b) and add(b, a) are one computation. */
static bool commutes(const kc_node *n) {
  return (kc_ops[n->op].flags & KC_OPF_COMMUTATIVE) && n->nin >= 2;
}

/* Operands only: attributes may be spelled out or left to their defaults, so equal nodes can
 * differ in their stored attributes; same_node decides. */
static uint64_t hash_node(const kc_node *n) {
  uint64_t h = mix(n->op, n->nin); /* not nout: optional results may differ (takes_over) */
  bool swap = commutes(n) && n->in[1].id < n->in[0].id; /* hash the operands in one order */
  for (uint32_t j = 0; j < n->nin; j++)
    h = mix(h, n->in[swap && j < 2 ? 1 - j : j].id);
  return h;
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
  case KC_ATTR_STRING: return a->u.s == b->u.s || (a->u.s && b->u.s && strcmp(a->u.s, b->u.s) == 0);
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

/* Every attribute of a is b's too, or b leaves it at a default a spells out (softmax axis=-1). */
static bool attrs_within(const kc_graph *g, const kc_node *a, const kc_node *b) {
  for (uint32_t i = 0; i < a->nattr; i++) {
    const kc_attr *x = &a->attrs[i], *y = kc_node_attr(b, x->name);
    if (y) {
      if (!same_attr(g, x, y)) return false;
      continue;
    }
    char kind;
    const char *def;
    bool required;
    if (!kc_op_attr_schema(a->op, x->name, &kind, &def, &required) || !def) return false;
    bool same = (x->kind == KC_ATTR_INT && x->u.i == kc_node_int(b, x->name, x->u.i + 1)) ||
                (x->kind == KC_ATTR_FLOAT && x->u.f == kc_node_float(b, x->name, x->u.f + 1)) ||
                (x->kind == KC_ATTR_STRING && x->u.s &&
                 strcmp(x->u.s, kc_node_string(b, x->name, "")) == 0 && *x->u.s);
    if (!same) return false;
  }
  return true;
}

static bool same_type(const kc_graph *g, kc_val a, kc_val b) {
  if (!a.id || !b.id) return a.id == b.id;
  const kc_value *x = kc_value_of(g, a), *y = kc_value_of(g, b);
  if (x->dtype != y->dtype || x->rank != y->rank) return false;
  for (int i = 0; i < x->rank; i++)
    if (x->dims[i] != y->dims[i]) return false;
  return true;
}

/* Results may be present in one node and absent in the other (see the header). */
static bool optional_results(const kc_node *n) { return kc_ops[n->op].max_out >= 0; }

static bool same_node(const kc_graph *g, const kc_node *a, const kc_node *b) {
  if (a->op != b->op || a->nin != b->nin) return false;
  bool optional = optional_results(a);
  if (a->nout != b->nout && !optional) return false;
  bool swapped = commutes(a) && a->in[0].id == b->in[1].id && a->in[1].id == b->in[0].id;
  for (uint32_t j = 0; j < a->nin; j++)
    if (a->in[j].id != b->in[swapped && j < 2 ? 1 - j : j].id) return false;
  /* results present in both are typed alike (weights print their type); without optional
   * results they must also be there or absent alike */
  uint32_t nout = a->nout < b->nout ? a->nout : b->nout;
  for (uint32_t j = 0; j < nout; j++) {
    if (optional && (!a->out[j].id || !b->out[j].id)) continue;
    if (!same_type(g, a->out[j], b->out[j])) return false;
  }
  return attrs_within(g, a, b) && attrs_within(g, b, a);
}

/*
 * Merge n into the earlier k: a result of n that k has too is replaced by k's (repl); one k lacks
 * moves to k, keeping its value id. False when out of memory (k's out[] has to grow).
 */
static bool merge_into(kc_graph *g, uint32_t ki, kc_node *n, kc_val *repl) {
  kc_node *k = &g->nodes[ki];
  if (n->nout > k->nout) {
    kc_val *out = kc_arena_alloc(&g->arena, n->nout * sizeof *out);
    if (!out) return false;
    memcpy(out, k->out, k->nout * sizeof *out);
    memset(out + k->nout, 0, (n->nout - k->nout) * sizeof *out);
    k->out = out;
    k->nout = n->nout;
  }
  for (uint32_t j = 0; j < n->nout; j++) {
    if (!n->out[j].id) continue;
    if (k->out[j].id) {
      repl[n->out[j].id] = k->out[j];
    } else { /* k takes the result over: same id, now defined by k */
      k->out[j] = n->out[j];
      g->vals[n->out[j].id].def = ki + 1;
      g->vals[n->out[j].id].def_out = j;
      n->out[j] = (kc_val){0};
    }
  }
  return true;
}

static bool mergeable(const kc_node *n) {
  return n->op != KC_OP_NOP && n->nout > 0 && !n->body &&
         !(kc_ops[n->op].flags & (KC_OPF_RANDOM | KC_OPF_BODY));
}

/* Checkpointing's recomputed clones (loc "recompute:...", passes/grad_checkpoint.h) must not
 * fold back into the forward nodes they recompute, or nothing is saved; two clones may merge. */
static bool recompute(const kc_node *n) { return n->loc && strncmp(n->loc, "recompute:", 10) == 0; }

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
    uint32_t slot = (uint32_t)hash_node(n) & (cap - 1);
    for (; table[slot]; slot = (slot + 1) & (cap - 1)) {
      kc_node *k = &g->nodes[table[slot] - 1];
      if (!same_node(g, k, n) || (recompute(n) && !recompute(k))) continue;
      if (!merge_into(g, table[slot] - 1, n, repl)) {
        free(table);
        free(repl);
        return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in cse");
      }
      k->loc = kc_rewrite_loc(g, table[slot] - 1, &i, 1);
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
