/*
 * runtime/plan_build.c - the plan of codegen/plan.h from a module that is lowered and analyzed:
 * the storage of each value comes from kc_rt_analyze (roots, views, outputs, liveness) and the
 * arena order from its `order`, so every run plans memory the same way, JIT or .so.
 *
 * Shapes: each value's rank dims get consecutive "slots", numbered in node order (graph inputs,
 * then every node's results, each node's requirements right after them); the dims function
 * evaluates every slot from the symbols. Symbols are the lone-symbol dims of the inputs, in input
 * order, then (JIT plans only) the late symbols: fresh symbols of shape inference ("unkN", sizes
 * that depend on data), each bound at run time when the first node with that symbol as a whole
 * result dim is reached. A slot needing a symbol no input binds, in an export, makes the graph
 * unfit for AOT, and the error names its node.
 * Requirements: what an inferred size assumed that only the run's sizes can confirm, each
 * checked by the executor before the node's stage runs, with a text naming the node for the
 * run's error: the nodes' own (ir/shape_require.c: slice bounds, exact ranges, reshape counts;
 * a slot that must not be negative) and what shape inference took for granted (kc_shp_assume:
 * symbolic dims equal, broadcasting, within one another; two slots compared).
 *
 * Invariants: arrays are malloc'd and freed by kc_rt_plan_free; strings point into the compiled
 * graph (which outlives the plan) or into p->names / p->req_text.
 */
#include "runtime/internal.h"

#include <stdlib.h>
#include <string.h>

static char *keep_name(kc_rt_plan *p, const char *s) {
  char *c = malloc(strlen(s) + 1);
  if (!c) return NULL;
  strcpy(c, s);
  p->names[p->nnames++] = c;
  return c;
}

static int64_t sym_index(const kc_rt_plan *p, const char *name) {
  for (int64_t i = 0; i < p->model.nsyms; i++)
    if (strcmp(p->syms[i], name) == 0) return i;
  return -1;
}

/* The first symbol of d (a dim of g) the plan does not have yet, or NULL. */
static const char *unbound_symbol(const kc_rt_plan *p, const kc_graph *g, kc_dim d) {
  int64_t c;
  if (kc_dim_const(g, d, &c)) return NULL;
  const kc_dexpr *e = &g->dexprs[KC_DIM_EXPR(d)];
  if (e->kind == KC_DX_SYM) return sym_index(p, e->name) < 0 ? e->name : NULL;
  const char *s = unbound_symbol(p, g, e->a);
  return s ? s : unbound_symbol(p, g, e->b);
}

/* Symbols bound by input dims, and how each input dim is checked. */
static kc_status input_dims(kc_rt_plan *p, const kc_graph *g) {
  for (uint32_t k = 0; k < g->ninputs; k++) {
    const kc_value *v = kc_value_of(g, g->inputs[k]);
    for (int i = 0; i < v->rank; i++) {
      kc_plan_idim *id = &p->idims[k * KC_MAX_RANK + i];
      kc_dim d = v->dims[i];
      char buf[256];
      id->text = keep_name(p, kc_dim_str(g, d, buf, sizeof buf));
      if (!id->text) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory planning @%s", g->name);
      if (!KC_DIM_IS_SYM(d)) {
        id->kind = KC_PLAN_DIM_STATIC;
        id->value = d;
        continue;
      }
      const kc_dexpr *e = &g->dexprs[KC_DIM_EXPR(d)];
      if (e->kind != KC_DX_SYM) {
        id->kind = KC_PLAN_DIM_EXPR;
        continue;
      }
      id->kind = KC_PLAN_DIM_SYM;
      id->value = sym_index(p, e->name);
      if (id->value < 0) {
        id->value = p->model.nsyms;
        p->syms[p->model.nsyms++] = e->name;
      }
    }
  }
  return KC_OK;
}

/* Value v's storage from the runtime's analysis; weights get their place in the weights file. */
static kc_status storage(kc_rt_plan *p, const kc_module *m, uint32_t v, int64_t *woff) {
  const kc_graph *g = m->g;
  const kc_rt_val *r = &m->rv[v];
  kc_plan_value *a = &p->values[v];
  a->first = g->vals[v].def ? (int64_t)g->vals[v].def - 1 : -1;
  if (r->root != v) {
    a->storage = KC_PLAN_VIEW;
    a->ref = r->root;
  } else if (r->kind == KC_RT_INPUT) {
    a->storage = KC_PLAN_INPUT;
    a->ref = r->input;
  } else if (r->kind == KC_RT_SOURCE) {
    int64_t numel = kc_value_numel(g, (kc_val){v});
    if (numel < 0)
      return kc_errorf(m->ctx, KC_ERR_UNSUPPORTED, "weight %%%u of @%s has no static size", v,
                       g->name);
    size_t bytes = (size_t)numel * kc_dtype_size(g->vals[v].dtype);
    int64_t w = 0;
    while (w < p->nweights && p->weights[w].data != r->data) /* shared data, stored once */
      w++;
    if (w == p->nweights) {
      p->weights[w] = (kc_rt_weight){r->data, bytes, *woff};
      p->nweights++;
      *woff += (int64_t)((bytes + KC_RT_ALIGN - 1) / KC_RT_ALIGN * KC_RT_ALIGN);
    }
    a->storage = KC_PLAN_WEIGHT;
    a->ref = p->weights[w].off;
    p->value_data[v] = r->data;
  } else if (r->output >= 0) {
    a->storage = KC_PLAN_OUTPUT;
    a->ref = r->output;
  } else {
    a->storage = KC_PLAN_ARENA;
    a->last = r->last;
  }
  return KC_OK;
}

/* A symbol of value v's dim i no input binds: a late symbol of a JIT plan, else an error. */
static kc_status unbound(kc_rt_plan *p, const kc_module *m, uint32_t v, int i, const char *sym,
                         bool late) {
  const kc_graph *g = m->g;
  const kc_value *val = &g->vals[v];
  kc_dim d = val->dims[i];
  bool fresh = strncmp(sym, "unk", 3) == 0;
  bool alone = KC_DIM_IS_SYM(d) && g->dexprs[KC_DIM_EXPR(d)].kind == KC_DX_SYM;
  if (late && fresh && alone && val->def) { /* bound when its node is reached */
    kc_plan_late *l = &p->late[p->model.nlate++];
    *l = (kc_plan_late){.sym = p->model.nsyms, .node = val->def - 1, .slot = -1};
    p->syms[p->model.nsyms++] = sym;
    return KC_OK;
  }
  char buf[256];
  kc_dim_str(g, d, buf, sizeof buf);
  const char *why =
      fresh ? "which depends on tensor data (or on a clamp of sizes kernc has no expression for)"
            : "whose symbol is not the size of any input dim";
  if (!val->def)
    return kc_errorf(m->ctx, KC_ERR_UNSUPPORTED,
                     "input %%%u dim %d is %s, %s; kernc compile needs every size to follow from "
                     "the input shapes",
                     v, i, buf, why);
  if (late)
    return kc_node_errorf(m->g, &g->nodes[val->def - 1], KC_ERR_UNSUPPORTED,
                          "result %%%u has size %s, which depends on data in a way kernc cannot "
                          "settle at run time",
                          v, buf);
  return kc_node_errorf(m->g, &g->nodes[val->def - 1], KC_ERR_UNSUPPORTED,
                        "result %%%u has size %s, %s; kernc compile needs every size to follow "
                        "from the input shapes (kc_compile and kernc run handle it)",
                        v, buf, why);
}

/* Slots of value v (storage set), its unbound symbols made late or refused. */
static kc_status value_slots(kc_rt_plan *p, const kc_module *m, uint32_t v, bool late) {
  const kc_graph *g = m->g;
  kc_plan_value *a = &p->values[v];
  const kc_value *val = &g->vals[v];
  if (a->storage == KC_PLAN_NONE) return KC_OK;
  a->dtype = val->dtype;
  a->rank = val->rank;
  a->dims = p->model.nslots;
  for (int i = 0; i < val->rank; i++) {
    const char *sym;
    while ((sym = unbound_symbol(p, g, val->dims[i]))) {
      int64_t before = p->model.nsyms;
      kc_status s = unbound(p, m, v, i, sym, late);
      if (s != KC_OK) return s;
      if (p->model.nsyms == before) break;
    }
    p->slot_dims[p->model.nslots++] = val->dims[i];
  }
  return KC_OK;
}

/* ---- what shape inference assumed ----------------------------------------------------------- */

typedef struct assumption {
  uint32_t node;
  int kind;
  kc_dim a, b;
} assumption;

typedef struct node_req {
  uint32_t node;
  kc_requirement r;
} node_req;

/* What the plan must check per run: the assumptions of shape inference and the nodes'
 * requirements, each in node order. */
typedef struct assumptions {
  const kc_graph *g;
  assumption *v;
  uint32_t n, cap;
  node_req *req;
  uint32_t nreq, capreq;
  bool oom;
} assumptions;

static void on_assume(void *user, const kc_node *n, int kind, kc_dim a, kc_dim b) {
  assumptions *c = user;
  uint32_t node = (uint32_t)(n - c->g->nodes);
  for (uint32_t i = 0; i < c->n; i++) /* a shape function may state a fact twice */
    if (c->v[i].node == node && c->v[i].kind == kind && c->v[i].a == a && c->v[i].b == b) return;
  if (c->n == c->cap) {
    uint32_t cap = c->cap ? 2 * c->cap : 64;
    assumption *v = realloc(c->v, cap * sizeof *v);
    if (!v) {
      c->oom = true;
      return;
    }
    c->v = v;
    c->cap = cap;
  }
  c->v[c->n++] = (assumption){node, kind, a, b};
}

/*
 * Every node inferred again, alone, from its compiled input types, with the graph's assumption
 * sink on: what each shape function relied on without proof (ir/shape.h kc_shp_assume), in node
 * order. The results' types are put back as compiled (a data-dependent size would otherwise get
 * a new fresh symbol), so the graph is unchanged but for unused dim expressions.
 */
static kc_status collect_assumptions(kc_module *m, assumptions *c) {
  kc_graph *g = m->g;
  kc_value saved[16];
  g->assume = on_assume;
  g->assume_user = c;
  kc_status s = KC_OK;
  for (uint32_t i = 0; i < g->nnodes && s == KC_OK && !c->oom; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP || kc_ops[n->op].cls == KC_CLASS_SOURCE) continue;
    uint32_t keep = n->nout < 16 ? n->nout : 16;
    for (uint32_t j = 0; j < keep; j++)
      saved[j] = g->vals[n->out[j].id];
    s = kc_node_infer(g, i);
    for (uint32_t j = 0; j < keep; j++)
      g->vals[n->out[j].id] = saved[j];
    kc_requirement req[KC_REQ_MAX];
    uint32_t k = s == KC_OK ? kc_node_requirements(g, n, req, KC_REQ_MAX) : 0;
    if (c->nreq + k > c->capreq) {
      uint32_t cap = 2 * (c->nreq + k) + 16;
      node_req *v = realloc(c->req, cap * sizeof *v);
      if (!v) {
        c->oom = true;
        break;
      }
      c->req = v;
      c->capreq = cap;
    }
    for (uint32_t j = 0; j < k; j++)
      c->req[c->nreq++] = (node_req){i, req[j]};
  }
  g->assume = NULL;
  g->assume_user = NULL;
  if (c->oom) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning @%s", g->name);
  return s;
}

/* A requirement of kind on slots for dims a (and b), with its text. */
static kc_status add_req(kc_rt_plan *p, kc_module *m, int kind, kc_dim a, kc_dim b,
                         const char *text) {
  char da[128], db[128];
  kc_dim_str(m->g, a, da, sizeof da);
  kc_dim_str(m->g, b, db, sizeof db);
  size_t lt = strlen(text) + 1, la = strlen(da) + 1, lb = strlen(db) + 1;
  char *copy = malloc(lt + la + lb); /* the text, then the dims' texts */
  if (!copy) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning @%s", m->g->name);
  memcpy(copy, text, lt);
  memcpy(copy + lt, da, la);
  memcpy(copy + lt + la, db, lb);
  p->req_text[p->model.nreqs] = copy;
  kc_plan_req *r = &p->reqs[p->model.nreqs++];
  *r = (kc_plan_req){kind, p->model.nslots, p->model.nslots, copy, copy + lt, copy + lt + la};
  p->slot_dims[p->model.nslots++] = a;
  if (kind != KC_PLAN_REQ_NONNEG) {
    r->slot2 = p->model.nslots;
    p->slot_dims[p->model.nslots++] = b;
  }
  return KC_OK;
}

/* The assumptions of node i as requirements (those on sizes the run cannot compute are left to
 * the node's own settling, runtime/settle.c). */
static kc_status assumed(kc_rt_plan *p, kc_module *m, const assumptions *c, uint32_t *next,
                         uint32_t i) {
  const kc_graph *g = m->g;
  static const int kind_of[] = {[KC_ASSUME_EQ] = KC_PLAN_REQ_EQ,
                                [KC_ASSUME_BCAST] = KC_PLAN_REQ_BCAST,
                                [KC_ASSUME_LE] = KC_PLAN_REQ_LE};
  static const char *const rel[] = {[KC_ASSUME_EQ] = "%s == %s",
                                    [KC_ASSUME_BCAST] = "%s to be %s or 1",
                                    [KC_ASSUME_LE] = "%s <= %s"};
  kc_status s = KC_OK;
  for (; *next < c->n && c->v[*next].node == i && s == KC_OK; (*next)++) {
    const assumption *a = &c->v[*next];
    if (unbound_symbol(p, g, a->a) || unbound_symbol(p, g, a->b)) continue;
    char da[128], db[128], what[300], text[768], wb[300];
    kc_dim_str(g, a->a, da, sizeof da);
    kc_dim_str(g, a->b, db, sizeof db);
    if (a->kind == KC_ASSUME_BCAST)
      snprintf(what, sizeof what, rel[a->kind], da, db);
    else
      snprintf(what, sizeof what, rel[a->kind], da, db);
    snprintf(text, sizeof text, "%s was compiled assuming %s",
             kc_node_what(&g->nodes[i], wb, sizeof wb), what);
    s = add_req(p, m, kind_of[a->kind], a->a, a->b, text);
  }
  return s;
}

/* The requirements of node i (ir/shape_require.c: slice bounds, exact ranges of sizes carried
 * in narrow or float dtypes, reshape counts), each a slot that must not be negative. */
static kc_status requirements(kc_rt_plan *p, kc_module *m, const assumptions *c, uint32_t *next,
                              uint32_t i) {
  kc_status s = KC_OK;
  for (; *next < c->nreq && c->req[*next].node == i && s == KC_OK; (*next)++) {
    const node_req *r = &c->req[*next];
    if (unbound_symbol(p, m->g, r->r.dim)) continue; /* on a data-dependent size: settled */
    char text[768];
    kc_requirement_text(m->g, &m->g->nodes[i], &r->r, text, sizeof text);
    s = add_req(p, m, KC_PLAN_REQ_NONNEG, r->r.dim, 0, text);
  }
  return s;
}

/* Storage and slots of every value the graph uses, in node order; unfit sizes refused by node. */
static kc_status values(kc_rt_plan *p, kc_module *m, bool late, const assumptions *c) {
  const kc_graph *g = m->g;
  int64_t woff = 0;
  uint32_t next = 0, next_req = 0;
  kc_status s = KC_OK;
  for (uint32_t k = 0; k < g->ninputs && s == KC_OK; k++)
    s = storage(p, m, g->inputs[k].id, &woff);
  for (uint32_t i = 0; i < g->nnodes && s == KC_OK; i++)
    for (uint32_t j = 0; j < g->nodes[i].nout && s == KC_OK; j++)
      if (g->nodes[i].op != KC_OP_NOP && g->nodes[i].out[j].id)
        s = storage(p, m, g->nodes[i].out[j].id, &woff);
  if (s != KC_OK) return s;
  p->model.weights_bytes = woff;
  for (uint32_t k = 0; k < g->ninputs && s == KC_OK; k++)
    s = value_slots(p, m, g->inputs[k].id, late);
  for (uint32_t i = 0; i < g->nnodes && s == KC_OK; i++) {
    const kc_node *n = &g->nodes[i];
    int64_t first_slot = p->model.nslots, nlate = p->model.nlate;
    for (uint32_t j = 0; j < n->nout && s == KC_OK; j++)
      if (n->op != KC_OP_NOP && n->out[j].id) s = value_slots(p, m, n->out[j].id, late);
    for (int64_t l = nlate; l < p->model.nlate; l++)
      p->late[l].slot = first_slot;
    if (s == KC_OK) s = requirements(p, m, c, &next_req, i);
    if (s == KC_OK) s = assumed(p, m, c, &next, i);
  }
  return s;
}

/* A step per node with a kernel: its buffers and the slots of its dims (codegen.h layout). */
static void steps(kc_rt_plan *p, const kc_module *m) {
  const kc_graph *g = m->g;
  int64_t nb = 0, nd = 0;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP || m->kernels[i].no_kernel) continue;
    kc_plan_step *s = &p->steps[p->model.nsteps++];
    *s = (kc_plan_step){.fn = m->kernels[i].fn,
                        .units = m->kernels[i].units,
                        .node = i,
                        .grain = m->kernels[i].grain,
                        .ws_bytes = m->kernels[i].ws_bytes,
                        .shared_bytes = m->kernels[i].shared_bytes,
                        .shared_zero = m->kernels[i].shared_zero,
                        .bufs = nb,
                        .dims = nd,
                        .check_in = m->kernels[i].check_in,
                        .check_dim = m->kernels[i].check_dim};
    for (uint32_t j = 0; j < n->nin + n->nout; j++) {
      kc_val v = j < n->nin ? n->in[j] : n->out[j - n->nin];
      p->buf_values[nb++] = v.id ? (int64_t)v.id : -1;
      for (int d = 0; v.id && d < p->values[v.id].rank; d++)
        p->dim_slots[nd++] = p->values[v.id].dims + d;
    }
    s->nbufs = nb - s->bufs;
    s->ndims = nd - s->dims;
    if (s->ws_bytes > p->model.max_ws) p->model.max_ws = s->ws_bytes;
  }
  p->model.nstep_dims = nd;
  for (int64_t l = 0; l < p->model.nlate; l++) { /* the first step at or after the late node */
    int64_t k = 0;
    while (k < p->model.nsteps && p->steps[k].node < p->late[l].node)
      k++;
    p->late[l].step = k;
  }
}

/* Kernel symbol names of the steps ("k3_matmul"), and for a kernel that checks indices its
 * node's name for the run's error, for messages. */
static kc_status step_names(kc_rt_plan *p, const kc_module *m) {
  for (int64_t i = 0; i < p->model.nsteps; i++) {
    kc_plan_step *st = &p->steps[i];
    char name[128], what[512];
    kc_kernel_symbol(name, sizeof name, m->g, (uint32_t)st->node);
    if (!(st->name = keep_name(p, name)) ||
        (st->check_in >= 0 &&
         !(st->what = keep_name(p, kc_node_what(&m->g->nodes[st->node], what, sizeof what)))))
      return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning @%s", m->g->name);
  }
  return KC_OK;
}

/* Inputs and outputs by position; unnamed ones get "input_K" / "output_K". */
static kc_status io(kc_rt_plan *p, const kc_module *m) {
  const kc_graph *g = m->g;
  char buf[32];
  for (uint32_t k = 0; k < g->ninputs; k++) {
    const char *name = kc_graph_input_name(g, k);
    if (!*name) snprintf(buf, sizeof buf, "input_%u", k);
    p->inputs[k] = (kc_plan_io){*name ? name : keep_name(p, buf), g->inputs[k].id, 0};
  }
  for (uint32_t k = 0; k < g->noutputs; k++) {
    const char *name = kc_graph_output_name(g, k);
    if (!*name) snprintf(buf, sizeof buf, "output_%u", k);
    p->outputs[k] =
        (kc_plan_io){*name ? name : keep_name(p, buf), g->outputs[k].v.id, m->out_copy[k]};
  }
  for (uint32_t k = 0; k < g->ninputs + g->noutputs; k++)
    if (!(k < g->ninputs ? p->inputs[k].name : p->outputs[k - g->ninputs].name))
      return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning @%s", g->name);
  p->model.ninputs = g->ninputs;
  p->model.noutputs = g->noutputs;
  return KC_OK;
}

static int cmp_late(const void *a, const void *b) {
  const kc_plan_late *x = a, *y = b;
  return x->node < y->node ? -1 : x->node > y->node;
}

static kc_status build(kc_module *m, const char *name, bool late, const assumptions *c,
                       kc_rt_plan *p);

kc_status kc_rt_plan_build(kc_module *m, const char *name, bool late, kc_rt_plan *p) {
  const kc_graph *g = m->g;
  memset(p, 0, sizeof *p);
  assumptions c = {.g = g};
  kc_status s = collect_assumptions(m, &c);
  if (s == KC_OK) s = build(m, name, late, &c, p);
  free(c.v);
  free(c.req);
  return s;
}

static kc_status build(kc_module *m, const char *name, bool late, const assumptions *c,
                       kc_rt_plan *p) {
  const kc_graph *g = m->g;
  size_t nv = g->nvals + 1, nslots = 1, nbufs = 1, nreq = 1, nsyms = 1;
  for (uint32_t v = 1; v < g->nvals; v++) {
    nslots += g->vals[v].rank > 0 ? (size_t)g->vals[v].rank : 0;
    nsyms += g->vals[v].rank > 0 ? (size_t)g->vals[v].rank : 0;
  }
  for (uint32_t i = 0; i < g->nnodes; i++)
    nbufs += g->nodes[i].nin + g->nodes[i].nout;
  nreq += c->n + c->nreq;
  nslots += 2 * (size_t)c->n + c->nreq;
  p->values = calloc(nv, sizeof *p->values);
  p->steps = calloc(g->nnodes + 1, sizeof *p->steps);
  p->inputs = calloc(g->ninputs + 1, sizeof *p->inputs);
  p->outputs = calloc(g->noutputs + 1, sizeof *p->outputs);
  p->idims = calloc((size_t)g->ninputs * KC_MAX_RANK + 1, sizeof *p->idims);
  p->syms = calloc(nsyms, sizeof *p->syms);
  p->late = calloc(nsyms, sizeof *p->late);
  p->buf_values = calloc(nbufs, sizeof *p->buf_values);
  p->dim_slots = calloc(nslots * 2 + nbufs * KC_MAX_RANK, sizeof *p->dim_slots);
  p->arena_order = calloc(m->norder + 1, sizeof *p->arena_order);
  p->slot_dims = calloc(nslots + nreq, sizeof *p->slot_dims);
  p->reqs = calloc(nreq, sizeof *p->reqs);
  p->req_text = calloc(nreq, sizeof *p->req_text);
  p->weights = calloc(nv, sizeof *p->weights);
  p->value_data = calloc(nv, sizeof *p->value_data);
  p->names = calloc((size_t)g->ninputs * (KC_MAX_RANK + 1) + g->noutputs + 2 * g->nnodes + 1,
                    sizeof *p->names);
  if (!p->values || !p->steps || !p->inputs || !p->outputs || !p->idims || !p->syms || !p->late ||
      !p->buf_values || !p->dim_slots || !p->arena_order || !p->slot_dims || !p->weights ||
      !p->value_data || !p->names || !p->reqs || !p->req_text)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning @%s", g->name);
  kc_status s = input_dims(p, g);
  if (s == KC_OK) s = values(p, m, late, c);
  if (s == KC_OK) s = io(p, m);
  if (s != KC_OK) return s;
  steps(p, m);
  if ((s = step_names(p, m)) != KC_OK) return s;
  qsort(p->late, (size_t)p->model.nlate, sizeof *p->late, cmp_late);
  for (uint32_t i = 0; i < m->norder; i++)
    p->arena_order[i] = m->order[i];
  kc_plan *d = &p->model;
  d->name = name;
  d->nvalues = g->nvals;
  d->narena = m->norder;
  d->values = p->values;
  d->steps = p->steps;
  d->inputs = p->inputs;
  d->outputs = p->outputs;
  d->idims = p->idims;
  d->syms = p->syms;
  d->buf_values = p->buf_values;
  d->dim_slots = p->dim_slots;
  d->arena_order = p->arena_order;
  d->reqs = p->reqs;
  d->late = p->late;
  d->value_data = late ? p->value_data : NULL; /* a .so has its weights blob instead */
  return KC_OK;
}

void kc_rt_plan_free(kc_rt_plan *p) {
  for (int64_t i = 0; p->names && i < p->nnames; i++)
    free(p->names[i]);
  free(p->names);
  free(p->values);
  free(p->steps);
  free(p->inputs);
  free(p->outputs);
  free(p->idims);
  free(p->syms);
  free(p->late);
  free(p->buf_values);
  free(p->dim_slots);
  free(p->arena_order);
  free(p->slot_dims);
  for (int64_t i = 0; p->req_text && i < p->model.nreqs; i++)
    free(p->req_text[i]);
  free(p->req_text);
  free(p->reqs);
  free(p->weights);
  free((void *)p->value_data);
  memset(p, 0, sizeof *p);
}
