/*
 * passes/fold.c - constant folding: a node whose inputs are all constants (constant nodes, or
 * weights with data) and whose results are small is evaluated at compile time and replaced by
 * a constant (up to KC_FOLD_INLINE_MAX elements) or a new named weight (larger).
 *
 * There is no interpreter: the foldable part of the graph is copied into a graph of its own and
 * compiled and run through the CPU JIT (kc_compile + kc_run), so a folded value is computed by
 * the very kernels that would have computed it at run time. All foldable nodes go in one graph
 * (one compile); when that fails (an op the CPU target does not lower yet) each node is tried
 * alone, in program order, and the ones that fail stay as they are.
 * Invariants: random ops (KC_OPF_RANDOM) are never folded; nothing larger than the limit
 * (pc->opts->fold_limit, default KC_FOLD_LIMIT elements) is computed, results or intermediates;
 * new sources sit right before the node that defined the value they replace and carry its loc
 * (kc_rewrite_loc's rule, that node being the root); the inner compile runs no passes (it would
 * fold again).
 */
#include "passes/internal.h"
#include "passes/match.h"

#include <stdlib.h>
#include <string.h>

#define MAX_SINGLE 256 /* per-node compiles after a failed batch, at most */

typedef struct folder {
  kc_graph *g;
  int64_t limit;
  uint8_t *state;   /* per value: 0 unknown, 1 constant with data, 2 computed from constants */
  bool *keep;       /* per node: evaluate it */
  kc_val *targets;  /* foldable values something else reads */
  uint32_t *anchor; /* per target: the node defining it */
  uint32_t ntargets;
  uint32_t first_new; /* g->nnodes before folding: later nodes are new sources */
  uint32_t *place;    /* per new node: its anchor */
  uint32_t nplace;
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

/* Mark constants (1) and what can be computed from them (2); collect the values to replace. */
static kc_status analyze(folder *f) {
  kc_graph *g = f->g;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (kc_ops[n->op].cls == KC_CLASS_SOURCE && n->op != KC_OP_NOP && n->nout == 1 &&
        n->out[0].id && source_tensor(g, n) >= 0)
      f->state[n->out[0].id] = 1;
    else if (foldable(f, n)) {
      f->keep[i] = true;
      for (uint32_t j = 0; j < n->nout; j++)
        if (n->out[j].id) f->state[n->out[j].id] = 2;
    }
  }
  /* a computed value is replaced when something not folded reads it, or the graph returns it */
  bool *wanted = calloc(g->nvals, sizeof *wanted);
  if (!wanted) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fold");
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP || f->keep[i]) continue;
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id && f->state[n->in[j].id] == 2) wanted[n->in[j].id] = true;
  }
  for (uint32_t k = 0; k < g->noutputs; k++)
    if (f->state[g->outputs[k].v.id] == 2) wanted[g->outputs[k].v.id] = true;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (!f->keep[i]) continue;
    for (uint32_t j = 0; j < n->nout; j++)
      if (n->out[j].id && wanted[n->out[j].id]) {
        wanted[n->out[j].id] = false; /* once */
        f->anchor[f->ntargets] = i;
        f->targets[f->ntargets++] = n->out[j];
      }
  }
  free(wanted);
  return KC_OK;
}

/*
 * Evaluate targets[0..nt) from the nodes marked in keep: a copy of g with only those nodes and
 * the sources they read, no inputs, the targets as outputs; compiled without passes and run.
 * On success *mod holds the results in outs (freed by the caller).
 */
static kc_status evaluate(kc_graph *g, const bool *keep_in, uint32_t nkeep, const kc_val *targets,
                          uint32_t nt, kc_tensor_desc *outs, kc_module **mod) {
  *mod = NULL;
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
  /* the inner compile copies tensor data: only what the kept nodes read */
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
  kc_compile_options co = {.target = "cpu", .passes = "", .threads = 1};
  if ((s = kc_compile(g->ctx, sub, &co, mod)) != KC_OK) goto done;
  s = kc_run(*mod, NULL, 0, outs, nt);
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

/* Everything in one compile. false when it failed (the error is cleared). */
static bool fold_all(folder *f, kc_status *st) {
  kc_graph *g = f->g;
  kc_tensor_desc *outs = calloc(f->ntargets, sizeof *outs);
  kc_module *m = NULL;
  if (!outs) {
    *st = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fold");
    return false;
  }
  kc_status s = evaluate(g, f->keep, f->first_new, f->targets, f->ntargets, outs, &m);
  if (s == KC_OK)
    for (uint32_t k = 0; k < f->ntargets && s == KC_OK; k++)
      s = materialize(f, f->targets[k], f->anchor[k], &outs[k]);
  bool ok = s == KC_OK;
  if (s == KC_ERR_NOMEM || (s != KC_OK && g->nnodes > f->first_new))
    *st = s;
  else if (!ok)
    kc_clear_error(g->ctx);
  kc_module_free(m);
  free(outs);
  return ok;
}

/* Is v defined by a source with data (or a source made by this pass)? */
static bool is_const(const kc_graph *g, kc_val v) {
  uint32_t def = v.id ? g->vals[v.id].def : 0;
  if (!def) return false;
  const kc_node *n = &g->nodes[def - 1];
  return kc_ops[n->op].cls == KC_CLASS_SOURCE && source_tensor(g, n) >= 0;
}

/* After a failed batch: one node at a time, in program order; failures stay unfolded. */
static kc_status fold_each(folder *f) {
  kc_graph *g = f->g;
  uint32_t n0 = f->first_new, tries = 0;
  bool *keep = calloc(n0 + 1, sizeof *keep);
  if (!keep) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fold");
  kc_status s = KC_OK;
  for (uint32_t i = 0; i < n0 && s == KC_OK && tries < MAX_SINGLE; i++) {
    const kc_node *n = &g->nodes[i];
    if (!f->keep[i]) continue;
    bool ready = true;
    for (uint32_t j = 0; j < n->nin && ready; j++)
      ready = !n->in[j].id || is_const(g, n->in[j]);
    if (!ready) continue;
    kc_val outs_v[16];
    uint32_t nt = 0;
    for (uint32_t j = 0; j < n->nout && nt < 16; j++)
      if (n->out[j].id) outs_v[nt++] = n->out[j];
    kc_tensor_desc res[16];
    memset(res, 0, sizeof res);
    kc_module *m = NULL;
    keep[i] = true;
    tries++;
    kc_status e = evaluate(g, keep, n0, outs_v, nt, res, &m);
    keep[i] = false;
    if (e == KC_OK) {
      for (uint32_t k = 0; k < nt && s == KC_OK; k++)
        s = materialize(f, outs_v[k], i, &res[k]);
    } else if (e == KC_ERR_NOMEM) {
      s = e;
    } else {
      kc_clear_error(g->ctx); /* not foldable after all: it runs at run time */
    }
    kc_module_free(m);
  }
  free(keep);
  return s;
}

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  folder f = {.g = g, .first_new = g->nnodes};
  f.limit = pc->opts && pc->opts->fold_limit > 0 ? pc->opts->fold_limit : KC_FOLD_LIMIT;
  f.state = calloc(g->nvals + 1, 1);
  f.keep = calloc(g->nnodes + 1, sizeof *f.keep);
  f.targets = calloc(g->nvals + 1, sizeof *f.targets);
  f.anchor = calloc(g->nvals + 1, sizeof *f.anchor);
  f.place = calloc(g->nvals + 1, sizeof *f.place);
  kc_status s = f.state && f.keep && f.targets && f.anchor && f.place
                    ? analyze(&f)
                    : kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fold");
  if (s == KC_OK && f.ntargets) {
    if (!fold_all(&f, &s) && s == KC_OK) s = fold_each(&f);
    if (f.nplace) {
      pc->changed = true;
      kc_status p = kc_graph_place(g, f.first_new, f.place);
      if (s == KC_OK) s = p;
      if (s == KC_OK) s = kc_dce_run(g, NULL);
    }
  }
  free(f.state);
  free(f.keep);
  free(f.targets);
  free(f.anchor);
  free(f.place);
  return s;
}

const kc_pass kc_pass_fold = {"fold", run,
                              "evaluate small results of constant inputs with the CPU JIT"};
