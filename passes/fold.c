/*
 * passes/fold.c - constant folding: a node whose inputs are all constants (constant nodes, or
 * weights with data) and whose results are small is evaluated at compile time and replaced by
 * a constant (up to KC_FOLD_INLINE_MAX elements) or a new named weight (larger).
 *
 * The pass computes nothing itself: the foldable part of the graph is copied into a graph of its
 * own (no inputs, the wanted values as outputs) and handed to the evaluator the compiler driver
 * put on the pass context (passes.h; kc_compile's runs it through the CPU JIT, so a folded value
 * is computed by the very kernels that would have computed it at run time). Without an
 * evaluator nothing is folded.
 * All foldable nodes go in one evaluation. When it fails (an op the evaluator cannot do, an
 * error on the constant data), the longest prefix that evaluates is found by halving: over the
 * foldable nodes in program order, a prefix of length n that failed is retried at n/2, a prefix
 * that evaluates is materialized and the search goes on after it, and a single node that fails
 * is left to run time with every node that reads it. That is about 2 log2(n) evaluations per
 * failing node, and never more than KC_FOLD_MAX_EVALS in one run (the rest is left unfolded).
 * Invariants: random ops (KC_OPF_RANDOM) are never folded; nothing larger than the limit
 * (pc->opts->fold_limit, default KC_FOLD_LIMIT elements) is computed, results or intermediates;
 * new sources sit right before the node that defined the value they replace and carry its loc
 * (kc_rewrite_loc's rule, that node being the root); a prefix of the foldable nodes reads only
 * constants and results of its own nodes (nodes are in program order, earlier prefixes are
 * materialized, a node given up takes its readers with it), so each evaluation stands alone.
 */
#include "passes/internal.h"
#include "passes/match.h"

#include <stdlib.h>
#include <string.h>

typedef struct folder {
  kc_graph *g;
  const kc_evaluator *ev;
  int64_t limit;
  uint8_t *state; /* per value: 0 unknown, 1 constant with data, 2 computed from constants */
  uint32_t *list; /* the foldable nodes not yet folded nor given up, in program order */
  uint32_t nlist;
  bool *in_try;       /* per node: in the evaluation being made */
  bool *read_out;     /* per value (< nvals): read outside that evaluation, or a graph output */
  bool *dropped;      /* per value (< nvals): a result of a node given up */
  kc_val *targets;    /* the values the evaluation replaces */
  uint32_t *anchor;   /* per target: the node defining it */
  uint32_t nvals;     /* g->nvals before folding: later values are results of new sources */
  uint32_t first_new; /* g->nnodes before folding: later nodes are new sources */
  uint32_t *place;    /* per new node: its anchor */
  uint32_t nplace;
  int evals;
} folder;

static int tensor_index(const kc_graph *g, const char *name) {
  for (uint32_t i = 0; name && i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return (int)i;
  return -1;
}

/* The tensor a source node reads, when it has data; -1 otherwise. */
static int source_tensor(const kc_graph *g, const kc_node *n) {
  int ti = -1;
  if (n->op == KC_OP_WEIGHT) {
    ti = tensor_index(g, kc_node_string(n, "name", NULL));
  } else if (n->op == KC_OP_CONSTANT) {
    const kc_attr *a = kc_node_attr(n, "value");
    if (a && a->kind == KC_ATTR_TENSOR && a->u.tensor < g->ntensors) ti = (int)a->u.tensor;
  }
  return ti >= 0 && (g->tensors[ti].data || !g->tensors[ti].nbytes) ? ti : -1;
}

/* Can node n be evaluated now: all inputs constant, results typed, static and small? */
static bool foldable(const folder *f, const kc_node *n) {
  const kc_graph *g = f->g;
  if (n->op == KC_OP_NOP || kc_ops[n->op].cls == KC_CLASS_SOURCE) return false;
  if (kc_ops[n->op].flags & KC_OPF_RANDOM) return false;
  bool any = false;
  for (uint32_t j = 0; j < n->nin; j++) {
    if (!n->in[j].id) continue;
    if (n->in[j].id >= g->nvals || !f->state[n->in[j].id]) return false;
    any = true;
  }
  bool out = false;
  for (uint32_t j = 0; j < n->nout; j++) {
    if (!n->out[j].id) continue;
    int64_t numel = kc_value_numel(g, n->out[j]);
    if (numel < 0 || numel > f->limit) return false;
    out = true;
  }
  return any && out;
}

/* Mark constants (1) and what can be computed from them (2); list the foldable nodes. */
static void analyze(folder *f) {
  kc_graph *g = f->g;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (kc_ops[n->op].cls == KC_CLASS_SOURCE && n->op != KC_OP_NOP && n->nout == 1 &&
        n->out[0].id && source_tensor(g, n) >= 0)
      f->state[n->out[0].id] = 1;
    else if (foldable(f, n)) {
      f->list[f->nlist++] = i;
      for (uint32_t j = 0; j < n->nout; j++)
        if (n->out[j].id) f->state[n->out[j].id] = 2;
    }
  }
}

/*
 * Evaluate targets[0..nt) from the nodes marked in keep: a copy of g with only those nodes and
 * the sources they read, no inputs, the targets as outputs, handed to the evaluator. On success
 * outs hold the results, their data malloc'd (the caller frees it).
 */
static kc_status evaluate(kc_graph *g, const kc_evaluator *ev, const bool *keep_in, uint32_t nkeep,
                          const kc_val *targets, uint32_t nt, kc_tensor_desc *outs) {
  kc_graph *sub = kc_graph_clone(g, true);
  bool *used_tensor = calloc(g->ntensors + 1, sizeof *used_tensor);
  bool *used_src = calloc(g->nnodes + 1, sizeof *used_src);
  bool *keep = calloc(g->nnodes + 1, sizeof *keep);
  kc_node *order = malloc((g->nnodes + 1) * sizeof *order);
  kc_status s = KC_ERR_NOMEM;
  if (!sub || !used_tensor || !used_src || !keep || !order) goto done;
  memcpy(keep, keep_in, (nkeep < g->nnodes ? nkeep : g->nnodes) * sizeof *keep);
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (!keep[i]) continue;
    for (uint32_t j = 0; j < n->nin; j++) {
      uint32_t def = n->in[j].id ? g->vals[n->in[j].id].def : 0;
      if (def && !keep[def - 1]) used_src[def - 1] = true;
    }
    for (uint32_t a = 0; a < n->nattr; a++)
      if (n->attrs[a].kind == KC_ATTR_TENSOR && n->attrs[a].u.tensor < g->ntensors)
        used_tensor[n->attrs[a].u.tensor] = true;
  }
  for (uint32_t i = 0; i < g->nnodes; i++) {
    if (keep[i]) continue;
    if (!used_src[i]) {
      sub->nodes[i].op = KC_OP_NOP;
      continue;
    }
    int ti = source_tensor(g, &g->nodes[i]);
    if (ti >= 0) used_tensor[ti] = true;
  }
  /* an evaluator may copy tensor data (kc_compile does): only what the kept nodes read */
  for (uint32_t t = 0; t < sub->ntensors; t++)
    if (!used_tensor[t]) {
      sub->tensors[t].data = NULL;
      sub->tensors[t].nbytes = 0;
      sub->tensors[t].rank = 0;
    }
  /* sources first: this pass's new sources sit at the end of g until it finishes */
  uint32_t w = 0;
  for (int pass = 0; pass < 2; pass++)
    for (uint32_t i = 0; i < sub->nnodes; i++)
      if (sub->nodes[i].op != KC_OP_NOP &&
          (kc_ops[sub->nodes[i].op].cls == KC_CLASS_SOURCE) == !pass)
        order[w++] = sub->nodes[i];
  memcpy(sub->nodes, order, w * sizeof *order);
  sub->nnodes = w;
  for (uint32_t i = 0; i < w; i++)
    for (uint32_t j = 0; j < sub->nodes[i].nout; j++)
      if (sub->nodes[i].out[j].id) sub->vals[sub->nodes[i].out[j].id].def = i + 1;
  for (uint32_t v = 1; v < sub->nvals; v++) /* results of dropped nodes: defined by nothing */
    if (sub->vals[v].def) {
      const kc_node *d = sub->vals[v].def <= w ? &sub->nodes[sub->vals[v].def - 1] : NULL;
      bool defines = false;
      for (uint32_t j = 0; d && j < d->nout; j++)
        defines = defines || d->out[j].id == v;
      if (!defines) sub->vals[v].def = 0;
    }
  sub->ninputs = 0;
  sub->noutputs = 0;
  for (uint32_t k = 0; k < nt; k++)
    kc_output(sub, targets[k], NULL);
  if (kc_graph_status(sub) != KC_OK) goto done;
  s = ev->eval(ev->user, sub, outs);
done:
  if (s == KC_ERR_NOMEM && !kc_last_error(g->ctx)[0]) kc_errorf(g->ctx, s, "out of memory in fold");
  free(used_tensor);
  free(used_src);
  free(keep);
  free(order);
  kc_graph_free(sub);
  return s;
}

/* A name no tensor of g has: "fold.<id>", then "fold.<id>.1"... */
static void fresh_name(const kc_graph *g, uint32_t id, char *buf, size_t size) {
  snprintf(buf, size, "fold.%u", id);
  for (int k = 1; tensor_index(g, buf) >= 0; k++)
    snprintf(buf, size, "fold.%u.%d", id, k);
}

/* Replace value v (defined by node anchor) by a source holding the run's result r. */
static kc_status materialize(folder *f, kc_val v, uint32_t anchor, const kc_tensor_desc *r) {
  kc_graph *g = f->g;
  const kc_value *val = kc_value_of(g, v);
  int64_t dims[KC_MAX_RANK], numel = 1;
  if (r->dtype != val->dtype || r->rank != val->rank)
    return kc_errorf(g->ctx, KC_ERR_INTERNAL, "fold: %%%u came back as %s rank %d", v.id,
                     kc_dtype_name(r->dtype), r->rank);
  for (int i = 0; i < r->rank; i++) {
    if (r->dims[i] != val->dims[i])
      return kc_errorf(g->ctx, KC_ERR_INTERNAL, "fold: %%%u came back with another shape", v.id);
    dims[i] = r->dims[i];
    numel *= dims[i];
  }
  char name[64];
  bool inline_const = numel <= KC_FOLD_INLINE_MAX;
  if (!inline_const) fresh_name(g, v.id, name, sizeof name);
  uint32_t ti =
      kc_graph_add_tensor(g, inline_const ? NULL : name, r->dtype, r->rank, dims, r->data, true);
  kc_val out;
  uint32_t ni =
      ti == UINT32_MAX
          ? ti
          : kc_graph_add_node(g, inline_const ? KC_OP_CONSTANT : KC_OP_WEIGHT, 0, NULL, 1, &out);
  if (ni == UINT32_MAX || g->sticky != KC_OK)
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fold");
  g->nodes[ni].loc = kc_rewrite_loc(g, anchor, NULL, 0);
  if (inline_const)
    kc_node_set_tensor(g, ni, "value", ti);
  else
    kc_node_set_string(g, ni, "name", name);
  kc_value *o = kc_value_of(g, out); /* a weight's type is recorded, not inferred */
  val = kc_value_of(g, v);
  o->dtype = val->dtype;
  o->rank = val->rank;
  memcpy(o->dims, val->dims, sizeof o->dims);
  kc_status s = kc_node_infer(g, ni);
  if (s != KC_OK) return s;
  kc_graph_replace_uses(g, v, out);
  f->place[f->nplace++] = anchor;
  return KC_OK;
}

/*
 * Evaluate the prefix list[start, start+n) and replace its results that anything else reads
 * (other nodes, the graph's outputs) by sources. *ok false: the evaluation failed, nothing
 * changed and the error is cleared. A status other than KC_OK is an error to stop on.
 */
static kc_status try_prefix(folder *f, uint32_t start, uint32_t n, bool *ok) {
  kc_graph *g = f->g;
  *ok = false;
  for (uint32_t k = 0; k < n; k++)
    f->in_try[f->list[start + k]] = true;
  /* only values from before the pass can be targets (new ones are the sources made here) */
  memset(f->read_out, 0, f->nvals * sizeof *f->read_out);
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *nd = &g->nodes[i];
    if (nd->op == KC_OP_NOP || (i < f->first_new && f->in_try[i])) continue;
    for (uint32_t j = 0; j < nd->nin; j++)
      if (nd->in[j].id < f->nvals) f->read_out[nd->in[j].id] = true;
  }
  for (uint32_t k = 0; k < g->noutputs; k++)
    if (g->outputs[k].v.id < f->nvals) f->read_out[g->outputs[k].v.id] = true;
  uint32_t nt = 0;
  for (uint32_t k = 0; k < n; k++) {
    const kc_node *nd = &g->nodes[f->list[start + k]];
    for (uint32_t j = 0; j < nd->nout; j++)
      if (nd->out[j].id && nd->out[j].id < f->nvals && f->read_out[nd->out[j].id]) {
        f->anchor[nt] = f->list[start + k];
        f->targets[nt++] = nd->out[j];
      }
  }
  kc_status s = KC_OK;
  kc_tensor_desc *outs = nt ? calloc(nt, sizeof *outs) : NULL;
  if (nt && !outs) {
    s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fold");
  } else if (nt) { /* nothing read outside: nothing to replace (dce drops the nodes) */
    f->evals++;
    kc_status e = evaluate(g, f->ev, f->in_try, f->first_new, f->targets, nt, outs);
    if (e == KC_OK) {
      for (uint32_t k = 0; k < nt && s == KC_OK; k++)
        s = materialize(f, f->targets[k], f->anchor[k], &outs[k]);
      for (uint32_t k = 0; k < nt; k++)
        free(outs[k].data);
    } else if (e == KC_ERR_NOMEM) {
      s = e;
    } else {
      kc_clear_error(g->ctx); /* not foldable after all: it runs at run time */
    }
    *ok = e == KC_OK;
  } else {
    *ok = true;
  }
  free(outs);
  for (uint32_t k = 0; k < n; k++)
    f->in_try[f->list[start + k]] = false;
  return s;
}

/* Give up list[start] and every later listed node that reads its results, directly or not. */
static void drop(folder *f, uint32_t start) {
  kc_graph *g = f->g;
  uint32_t w = start;
  for (uint32_t k = start; k < f->nlist; k++) {
    const kc_node *nd = &g->nodes[f->list[k]];
    bool reads = k == start;
    for (uint32_t j = 0; j < nd->nin && !reads; j++)
      reads = nd->in[j].id && nd->in[j].id < f->nvals && f->dropped[nd->in[j].id];
    if (!reads) {
      f->list[w++] = f->list[k];
      continue;
    }
    for (uint32_t j = 0; j < nd->nout; j++)
      if (nd->out[j].id) f->dropped[nd->out[j].id] = true;
  }
  f->nlist = w;
}

/* Everything at once; after a failure, halve towards the first node that fails and go on. */
static kc_status fold_all(folder *f) {
  uint32_t start = 0, fail_len = 0; /* fail_len: a prefix from start known to fail (0: none) */
  kc_status s = KC_OK;
  while (s == KC_OK && start < f->nlist) {
    if (fail_len == 1) { /* list[start] fails alone */
      drop(f, start);
      fail_len = 0;
      continue;
    }
    if (f->evals >= KC_FOLD_MAX_EVALS) break;
    uint32_t n = fail_len ? fail_len / 2 : f->nlist - start;
    bool ok;
    s = try_prefix(f, start, n, &ok);
    if (ok) {
      start += n;
      fail_len = fail_len ? fail_len - n : 0;
    } else {
      fail_len = n;
    }
  }
  return s;
}

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  const kc_evaluator *ev = pc->opts ? pc->opts->eval : NULL;
  if (!ev || !ev->eval) return KC_OK; /* nothing to evaluate with: every node runs at run time */
  folder f = {.g = g, .ev = ev, .nvals = g->nvals, .first_new = g->nnodes};
  f.limit = pc->opts && pc->opts->fold_limit > 0 ? pc->opts->fold_limit : KC_FOLD_LIMIT;
  f.state = calloc(g->nvals + 1, 1);
  f.list = calloc(g->nnodes + 1, sizeof *f.list);
  f.in_try = calloc(g->nnodes + 1, sizeof *f.in_try);
  f.read_out = calloc(g->nvals + 1, sizeof *f.read_out);
  f.dropped = calloc(g->nvals + 1, sizeof *f.dropped);
  f.targets = calloc(g->nvals + 1, sizeof *f.targets);
  f.anchor = calloc(g->nvals + 1, sizeof *f.anchor);
  f.place = calloc(g->nvals + 1, sizeof *f.place);
  kc_status s = KC_OK;
  if (!f.state || !f.list || !f.in_try || !f.read_out || !f.dropped || !f.targets || !f.anchor ||
      !f.place)
    s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fold");
  if (s == KC_OK) analyze(&f);
  if (s == KC_OK && f.nlist) {
    s = fold_all(&f);
    if (f.nplace) {
      pc->changed = true;
      kc_status p = kc_graph_place(g, f.first_new, f.place);
      if (s == KC_OK) s = p;
      if (s == KC_OK) s = kc_dce_run(g, NULL);
    }
  }
  free(f.state);
  free(f.list);
  free(f.in_try);
  free(f.read_out);
  free(f.dropped);
  free(f.targets);
  free(f.anchor);
  free(f.place);
  return s;
}

const kc_pass kc_pass_fold = {"fold", run,
                              "evaluate small results of constant inputs (with the driver's "
                              "evaluator: the CPU JIT)"};
