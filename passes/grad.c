/*
 * passes/grad.c - reverse-mode autodiff: kc_grad (kernc.h) appends the backward graph of a scalar
 * loss to a forward graph, running the GRAD column of ir/ops.def (passes/grad.h) over the nodes
 * in reverse program order, and kc_grad_local, the same engine over the nodes a composite rule
 * appended.
 *
 * How: a value "depends" on the parameters when a parameter reaches it through ops whose rule is
 * not `none`; a node is on the path when it reads such a value and one of its results reaches
 * the loss. Only those nodes are differentiated, and a rule is only asked for the adjoints of
 * inputs that depend on a parameter, so frozen branches build nothing. Adjoints of a value read
 * several times are summed in reverse program order of the readers, a fixed order. A `todo`
 * rule on the path is an error listing every such node at once (as import lists unsupported
 * ops). The adjoint of parameter P becomes the graph output "P.grad" (zeros when the loss does
 * not depend on it).
 *
 * Invariants: the forward graph is unchanged (nodes are only appended, in program order; after
 * a failure everything appended is dropped again); each rule's adjoints are checked to have
 * their input's dtype and rank; no global state.
 */
#include "passes/grad.h"
#include "passes/grad_checkpoint.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

const kc_grad_entry kc_grad_table[KC_OP_COUNT] = {
#define OP(id, ...) [KC_OP_##id] =
#define GRAD(rule, saves) {#rule, kc_grad_##rule, saves},
#include "ir/ops.def"
#undef OP
#undef GRAD
};

kc_status kc_grad_none(kc_grad_call *c) {
  (void)c;
  return KC_OK;
}

kc_status kc_grad_todo(kc_grad_call *c) {
  return kc_node_errorf(c->g, &c->g->nodes[c->node], KC_ERR_UNSUPPORTED,
                        "autodiff: no gradient rule for this op yet");
}

/* Adjoints per value id, grown as the graph grows. */
typedef struct adjmap {
  kc_val *a;
  uint32_t cap;
} adjmap;

static bool adj_fit(adjmap *m, uint32_t n) {
  if (n <= m->cap) return true;
  kc_val *a = realloc(m->a, n * sizeof *a);
  if (!a) return false;
  memset(a + m->cap, 0, (n - m->cap) * sizeof *a);
  m->a = a;
  m->cap = n;
  return true;
}

static bool differentiable(const kc_graph *g, kc_val v) {
  return v.id && kc_dtype_is_float(kc_value_of(g, v)->dtype);
}

/* Run the rule of node ni; checks what it built. With a checkpoint plan the rule's copy of the
 * node reads the recomputed clones of the forward values (passes/grad_checkpoint.h). */
static kc_status run_rule(kc_graph *g, uint32_t ni, const kc_val *dout, const bool *want,
                          kc_val *din, kc_ckpt *ck) {
  kc_grad_call c = {g, ni, g->nodes[ni], dout, want, din};
  if (ck) {
    kc_status cs = kc_ckpt_node(g, ck, ni, &c.n);
    if (cs != KC_OK) return cs;
  }
  for (uint32_t i = 0; i < c.n.nin; i++)
    din[i] = (kc_val){0};
  kc_status s = kc_grad_table[c.n.op].fn(&c);
  if (s == KC_OK && g->sticky != KC_OK) {
    s = g->sticky;
    char what[256];
    kc_error_append(g->ctx, "while building the gradient of %s",
                    kc_node_what(&g->nodes[ni], what, sizeof what));
  }
  for (uint32_t i = 0; s == KC_OK && i < c.n.nin; i++) {
    if (!want[i]) din[i] = (kc_val){0};
    if (!din[i].id) continue;
    const kc_value *x = kc_value_of(g, c.n.in[i]), *d = kc_value_of(g, din[i]);
    if (x->dtype != d->dtype || x->rank != d->rank)
      s = kc_node_errorf(g, &g->nodes[ni], KC_ERR_INTERNAL,
                         "autodiff: the adjoint of input %u is %s rank %d, the input %s rank %d", i,
                         kc_dtype_name(d->dtype), d->rank, kc_dtype_name(x->dtype), x->rank);
  }
  return s;
}

/*
 * Reverse pass over nodes [lo, hi): dep[v] (v < ndep) marks values depending on a parameter.
 * Adjoints flow through m.
 */
static kc_status reverse(kc_graph *g, uint32_t lo, uint32_t hi, const bool *dep, uint32_t ndep,
                         adjmap *m, kc_ckpt *ck) {
  kc_val dout[KC_GRAD_MAX_IO], din[KC_GRAD_MAX_IO];
  bool want[KC_GRAD_MAX_IO];
  for (uint32_t ni = hi; ni-- > lo;) {
    const kc_node *n = &g->nodes[ni];
    if (n->op == KC_OP_NOP || kc_grad_table[n->op].fn == kc_grad_none) continue;
    if (n->nin > KC_GRAD_MAX_IO || n->nout > KC_GRAD_MAX_IO)
      return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "autodiff: more than %d inputs or results",
                            KC_GRAD_MAX_IO);
    bool any = false;
    for (uint32_t j = 0; j < n->nout; j++) {
      dout[j] = n->out[j].id && n->out[j].id < m->cap ? m->a[n->out[j].id] : (kc_val){0};
      any = any || dout[j].id;
    }
    if (!any) continue;
    any = false;
    for (uint32_t i = 0; i < n->nin; i++) {
      kc_val v = n->in[i];
      want[i] = v.id && v.id < ndep && dep[v.id] && differentiable(g, v);
      any = any || want[i];
    }
    if (!any) continue;
    kc_status s = run_rule(g, ni, dout, want, din, ck);
    if (s != KC_OK) return s;
    if (!adj_fit(m, g->nvals)) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in autodiff");
    /* kc_gu_accum adds nodes, which may move g->nodes: node ni is read afresh each time */
    for (uint32_t i = 0; i < g->nodes[ni].nin; i++) {
      if (!want[i] || !din[i].id) continue;
      kc_val v = g->nodes[ni].in[i];
      m->a[v.id] = kc_gu_accum(g, m->a[v.id], din[i]);
      if (g->sticky != KC_OK) return g->sticky;
    }
  }
  return KC_OK;
}

/* Mark values depending on dep's seeds through nodes [lo, hi) (rules `none` stop it). */
static void propagate(const kc_graph *g, uint32_t lo, uint32_t hi, bool *dep) {
  for (uint32_t ni = lo; ni < hi; ni++) {
    const kc_node *n = &g->nodes[ni];
    if (n->op == KC_OP_NOP || kc_grad_table[n->op].fn == kc_grad_none) continue;
    bool any = false;
    for (uint32_t i = 0; i < n->nin && !any; i++)
      any = n->in[i].id && dep[n->in[i].id];
    if (!any) continue;
    for (uint32_t j = 0; j < n->nout; j++)
      if (differentiable(g, n->out[j])) dep[n->out[j].id] = true;
  }
}

kc_status kc_grad_local(kc_graph *g, uint32_t first, uint32_t nouts, const kc_val *outs,
                        const kc_val *seeds, uint32_t nins, const kc_val *ins, const bool *want,
                        kc_val *din) {
  if (g->sticky != KC_OK) return g->sticky;
  uint32_t hi = g->nnodes, nv = g->nvals;
  bool *dep = calloc(nv, sizeof *dep);
  adjmap m = {0};
  kc_status s = KC_OK;
  if (!dep || !adj_fit(&m, nv)) s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in autodiff");
  for (uint32_t i = 0; s == KC_OK && i < nins; i++)
    if (want[i] && ins[i].id) dep[ins[i].id] = true;
  if (s == KC_OK) propagate(g, first, hi, dep);
  for (uint32_t k = 0; s == KC_OK && k < nouts; k++)
    if (outs[k].id && seeds[k].id) m.a[outs[k].id] = kc_gu_accum(g, m.a[outs[k].id], seeds[k]);
  if (s == KC_OK) s = reverse(g, first, hi, dep, nv, &m, NULL);
  for (uint32_t i = 0; i < nins; i++) {
    din[i] = (kc_val){0};
    if (s != KC_OK || !want[i] || !ins[i].id) continue;
    bool dup = false; /* the same value read twice: its whole adjoint goes to the first */
    for (uint32_t k = 0; k < i; k++)
      dup = dup || (ins[k].id == ins[i].id && want[k]);
    if (!dup) din[i] = m.a[ins[i].id];
  }
  free(dep);
  free(m.a);
  return s;
}

/* ---- kc_grad ---------------------------------------------------------------------------- */

/* The name a parameter candidate v answers to: a graph input's or a weight's; NULL if none. */
static const char *param_name(const kc_graph *g, kc_val v) {
  const kc_value *x = kc_value_of(g, v);
  if (!x->def) {
    for (uint32_t i = 0; i < g->ninputs; i++)
      if (g->inputs[i].id == v.id) return kc_graph_input_name(g, i);
    return NULL;
  }
  const kc_node *n = &g->nodes[x->def - 1];
  return n->op == KC_OP_WEIGHT ? kc_node_string(n, "name", NULL) : NULL;
}

/* Every float graph input and weight whose name matches a pattern, in order, without repeats. */
static kc_status select_params(kc_graph *g, int npat, const char *const *pat, kc_val **out,
                               uint32_t *nout) {
  kc_val *ps = malloc((size_t)(g->nvals + 1) * sizeof *ps);
  bool *hit = calloc((size_t)npat + 1, sizeof *hit);
  if (!ps || !hit) {
    free(ps);
    free(hit);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in autodiff");
  }
  uint32_t n = 0;
  for (uint32_t id = 1; id < g->nvals; id++) {
    kc_val v = {id};
    const kc_value *x = kc_value_of(g, v);
    if (x->def && g->nodes[x->def - 1].op == KC_OP_NOP) continue;
    const char *name = param_name(g, v);
    if (!name || !*name) continue;
    if (!kc_dtype_is_float(x->dtype)) continue; /* token ids, masks: never parameters */
    bool match = false;
    for (int k = 0; k < npat; k++)
      if (fnmatch(pat[k], name, 0) == 0) {
        hit[k] = true;
        match = true;
      }
    if (!match) continue;
    ps[n++] = v;
  }
  for (int k = 0; k < npat; k++)
    if (!hit[k]) {
      free(ps);
      free(hit);
      return kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_grad: no graph input or weight matches '%s'",
                       pat[k]);
    }
  free(hit);
  *out = ps;
  *nout = n;
  return KC_OK;
}

/* Values that reach value `loss` through nodes [0, hi). */
static void reach_back(const kc_graph *g, uint32_t hi, kc_val loss, bool *reach) {
  reach[loss.id] = true;
  for (uint32_t ni = hi; ni-- > 0;) {
    const kc_node *n = &g->nodes[ni];
    if (n->op == KC_OP_NOP) continue;
    bool any = false;
    for (uint32_t j = 0; j < n->nout && !any; j++)
      any = n->out[j].id && reach[n->out[j].id];
    if (!any) continue;
    for (uint32_t i = 0; i < n->nin; i++)
      if (n->in[i].id) reach[n->in[i].id] = true;
  }
}

/* One error listing every node on the path whose rule is `todo`; KC_OK when there is none. */
static kc_status check_rules(kc_graph *g, uint32_t hi, const bool *dep, const bool *reach) {
  uint32_t count = 0;
  for (uint32_t ni = 0; ni < hi; ni++) {
    const kc_node *n = &g->nodes[ni];
    if (n->op == KC_OP_NOP || kc_grad_table[n->op].fn != kc_grad_todo) continue;
    bool in = false, out = false;
    for (uint32_t i = 0; i < n->nin; i++)
      in = in || (n->in[i].id && dep[n->in[i].id]);
    for (uint32_t j = 0; j < n->nout; j++)
      out = out || (n->out[j].id && reach[n->out[j].id]);
    if (!in || !out) continue;
    char what[256];
    kc_node_what(n, what, sizeof what);
    if (count++ == 0)
      kc_errorf(g->ctx, KC_ERR_UNSUPPORTED,
                "kc_grad: ops without a gradient rule between the parameters and the loss:");
    kc_error_append(g->ctx, "  %s", what);
  }
  return count ? KC_ERR_UNSUPPORTED : KC_OK;
}

static kc_status find_loss(kc_graph *g, const char *loss, kc_val *out) {
  for (uint32_t i = 0; i < g->noutputs; i++) {
    const char *name = g->outputs[i].name;
    if (!name || strcmp(name, loss) != 0) continue;
    kc_val v = g->outputs[i].v;
    const kc_value *x = kc_value_of(g, v);
    bool one = x->rank >= 0;
    for (int d = 0; d < x->rank; d++)
      one = one && x->dims[d] == 1;
    if (!kc_dtype_is_float(x->dtype) || !one)
      return kc_errorf(g->ctx, KC_ERR_INVALID_ARG,
                       "kc_grad: loss '%s' must be a float tensor of one element", loss);
    *out = v;
    return KC_OK;
  }
  return kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_grad: the graph has no output named '%s'", loss);
}

static kc_status add_outputs(kc_graph *g, const kc_val *ps, uint32_t np, const adjmap *m) {
  for (uint32_t k = 0; k < np; k++) {
    const char *name = param_name(g, ps[k]);
    size_t len = strlen(name) + 6;
    char *gname = kc_arena_alloc(&g->arena, len);
    if (!gname) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in autodiff");
    snprintf(gname, len, "%s.grad", name);
    for (uint32_t i = 0; i < g->noutputs; i++)
      if (g->outputs[i].name && strcmp(g->outputs[i].name, gname) == 0)
        return kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_grad: the graph already has output '%s'",
                         gname);
    kc_val d = ps[k].id < m->cap ? m->a[ps[k].id] : (kc_val){0};
    if (!d.id) d = kc_gu_zeros(g, ps[k]);
    /* a value already an output, or a source (the seed itself), gets a node of its own */
    bool taken = !kc_value_of(g, d)->def;
    for (uint32_t i = 0; i < g->noutputs && !taken; i++)
      taken = g->outputs[i].v.id == d.id;
    if (!taken) {
      const kc_node *dn = &g->nodes[kc_value_of(g, d)->def - 1];
      taken = kc_ops[dn->op].cls == KC_CLASS_SOURCE;
    }
    if (taken) d = kc_identity(g, d);
    if (g->sticky != KC_OK) return g->sticky;
    kc_output(g, d, gname);
  }
  return g->sticky;
}

/* After a failure: drop what kc_grad appended (nodes from hi on, outputs from nout0 on) and the
 * builder error it left, so g is the forward graph it was (the message stays in the context). */
static void rollback(kc_graph *g, uint32_t hi, uint32_t nout0) {
  for (uint32_t i = hi; i < g->nnodes; i++)
    g->nodes[i].op = KC_OP_NOP;
  kc_graph_compact(g);
  g->noutputs = nout0;
  g->sticky = KC_OK;
}

kc_status kc_grad(kc_graph *g, const char *loss, int nparams, const char *const *params) {
  return kc_grad_ex(g, loss, nparams, params, NULL);
}

kc_status kc_grad_ex(kc_graph *g, const char *loss, int nparams, const char *const *params,
                     const kc_grad_options *o) {
  if (g) kc_clear_error(g->ctx);
  if (!g || !loss || nparams < 0 || (nparams && !params))
    return g ? kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_grad: invalid arguments")
             : KC_ERR_INVALID_ARG;
  if (g->sticky != KC_OK)
    return kc_errorf(g->ctx, g->sticky, "kc_grad: the graph has a builder error (%s)",
                     kc_status_str(g->sticky));
  kc_val lv = {0};
  kc_status s = find_loss(g, loss, &lv);
  kc_val *ps = NULL;
  uint32_t np = 0;
  if (s == KC_OK) s = select_params(g, nparams, params, &ps, &np);
  if (s != KC_OK) return s;
  uint32_t nv = g->nvals, hi = g->nnodes, nout0 = g->noutputs;
  bool *dep = calloc(nv, sizeof *dep), *reach = calloc(nv, sizeof *reach);
  adjmap m = {0};
  kc_ckpt ck = {0};
  if (!dep || !reach || !adj_fit(&m, nv))
    s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in autodiff");
  if (s == KC_OK) s = kc_ckpt_plan(g, hi, o, &ck);
  if (s == KC_OK) {
    for (uint32_t k = 0; k < np; k++)
      dep[ps[k].id] = true;
    propagate(g, 0, hi, dep);
    reach_back(g, hi, lv, reach);
    s = check_rules(g, hi, dep, reach);
  }
  if (s == KC_OK && dep[lv.id]) {
    kc_val seed = kc_gu_like(g, lv, 1.0);
    if (kc_value_of(g, lv)->rank > 0) seed = kc_expand(g, seed, kc_shape(g, lv));
    s = g->sticky;
    if (s == KC_OK) {
      m.a[lv.id] = seed;
      s = reverse(g, 0, hi, dep, nv, &m, ck.seg ? &ck : NULL);
    }
  }
  if (s == KC_OK) s = add_outputs(g, ps, np, &m);
  if (s != KC_OK) rollback(g, hi, nout0);
  kc_ckpt_free(&ck);
  free(dep);
  free(reach);
  free(m.a);
  free(ps);
  return s;
}
