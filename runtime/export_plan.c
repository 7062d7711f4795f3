/*
 * runtime/export_plan.c - the tables of a compiled model (codegen/aot.h) from a module the JIT
 * runtime's own analysis has prepared: the storage of each value comes from kc_rt_analyze
 * (roots, views, outputs, liveness) and the arena order from its `order`, so a .so plans memory
 * exactly as kc_run does, with the same first-fit core.
 *
 * Shapes: each value's rank dims get consecutive "slots"; the object's dims function evaluates
 * every slot from the symbols the inputs bind. Symbols are the lone-symbol dims of the inputs, in
 * input order; a slot that needs any other symbol (a fresh "unkN" from a data-dependent size, or
 * a name no input dim binds) makes the graph unfit for AOT, and the error names its node.
 * After the values' slots come requirements (kc_slice_requirements): what an inferred size
 * assumed that only the run's sizes can confirm, each a slot that must not be negative, with a
 * text naming its node for the run's error.
 */
#include "runtime/export.h"

#include <stdlib.h>
#include <string.h>

static char *keep_name(kc_export_plan *p, const char *s) {
  char *c = malloc(strlen(s) + 1);
  if (!c) return NULL;
  strcpy(c, s);
  p->names[p->nnames++] = c;
  return c;
}

static int64_t sym_index(const kc_export_plan *p, const char *name) {
  for (int64_t i = 0; i < p->model.nsyms; i++)
    if (strcmp(p->syms[i], name) == 0) return i;
  return -1;
}

/* The first symbol of d (a dim of g) that no input binds, or NULL. */
static const char *unbound_symbol(const kc_export_plan *p, const kc_graph *g, kc_dim d) {
  int64_t c;
  if (kc_dim_const(g, d, &c)) return NULL;
  const kc_dexpr *e = &g->dexprs[KC_DIM_EXPR(d)];
  if (e->kind == KC_DX_SYM) return sym_index(p, e->name) < 0 ? e->name : NULL;
  const char *s = unbound_symbol(p, g, e->a);
  return s ? s : unbound_symbol(p, g, e->b);
}

/* Symbols bound by input dims, and how each input dim is checked. */
static kc_status input_dims(kc_export_plan *p, const kc_graph *g) {
  for (uint32_t k = 0; k < g->ninputs; k++) {
    const kc_value *v = kc_value_of(g, g->inputs[k]);
    for (int i = 0; i < v->rank; i++) {
      kc_aot_idim *id = &p->idims[k * KC_MAX_RANK + i];
      kc_dim d = v->dims[i];
      char buf[256];
      id->text = keep_name(p, kc_dim_str(g, d, buf, sizeof buf));
      if (!id->text) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory planning @%s", g->name);
      if (!KC_DIM_IS_SYM(d)) {
        id->kind = KC_AOT_DIM_STATIC;
        id->value = d;
        continue;
      }
      const kc_dexpr *e = &g->dexprs[KC_DIM_EXPR(d)];
      if (e->kind != KC_DX_SYM) {
        id->kind = KC_AOT_DIM_EXPR;
        continue;
      }
      id->kind = KC_AOT_DIM_SYM;
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
static kc_status storage(kc_export_plan *p, const kc_module *m, uint32_t v, int64_t *woff) {
  const kc_graph *g = m->g;
  const kc_rt_val *r = &m->rv[v];
  kc_aot_value *a = &p->values[v];
  if (r->root != v) {
    a->storage = KC_AOT_VIEW;
    a->ref = r->root;
  } else if (r->kind == KC_RT_INPUT) {
    a->storage = KC_AOT_INPUT;
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
      p->weights[w] = (kc_export_weight){r->data, bytes, *woff};
      p->nweights++;
      *woff += (int64_t)((bytes + KC_RT_ALIGN - 1) / KC_RT_ALIGN * KC_RT_ALIGN);
    }
    a->storage = KC_AOT_WEIGHT;
    a->ref = p->weights[w].off;
  } else if (r->output >= 0) {
    a->storage = KC_AOT_OUTPUT;
    a->ref = r->output;
  } else {
    a->storage = KC_AOT_ARENA;
    a->first = r->first;
    a->last = r->last;
  }
  return KC_OK;
}

/* Storage and slots of every value the graph uses; unfit sizes are refused by node. */
static kc_status values(kc_export_plan *p, const kc_module *m) {
  const kc_graph *g = m->g;
  int64_t woff = 0;
  kc_status s = KC_OK;
  for (uint32_t k = 0; k < g->ninputs && s == KC_OK; k++)
    s = storage(p, m, g->inputs[k].id, &woff);
  for (uint32_t i = 0; i < g->nnodes && s == KC_OK; i++)
    for (uint32_t j = 0; j < g->nodes[i].nout && s == KC_OK; j++)
      if (g->nodes[i].op != KC_OP_NOP && g->nodes[i].out[j].id)
        s = storage(p, m, g->nodes[i].out[j].id, &woff);
  if (s != KC_OK) return s;
  p->model.weights_bytes = woff;
  for (uint32_t v = 1; v < g->nvals; v++) {
    kc_aot_value *a = &p->values[v];
    const kc_value *val = &g->vals[v];
    if (a->storage == KC_AOT_NONE) continue;
    a->dtype = val->dtype;
    a->rank = val->rank;
    a->dims = p->model.nslots;
    for (int i = 0; i < val->rank; i++) {
      const char *sym = unbound_symbol(p, g, val->dims[i]);
      if (sym) {
        char buf[256];
        kc_dim_str(g, val->dims[i], buf, sizeof buf);
        const char *why = strncmp(sym, "unk", 3) == 0
                              ? "which depends on computed data"
                              : "whose symbol is not the size of any input dim";
        if (!val->def)
          return kc_errorf(m->ctx, KC_ERR_UNSUPPORTED,
                           "input %%%u dim %d is %s, %s; kernc compile needs every size to follow "
                           "from the input shapes",
                           v, i, buf, why);
        return kc_node_errorf(m->g, &g->nodes[val->def - 1], KC_ERR_UNSUPPORTED,
                              "result %%%u has size %s, %s; kernc compile needs every size to "
                              "follow from the input shapes (kc_compile and kernc run handle it)",
                              v, buf, why);
      }
      p->slot_dims[p->model.nslots++] = val->dims[i];
    }
  }
  return KC_OK;
}

/* A step per node with a kernel: its buffers and the slots of its dims (codegen.h layout), and
 * for a kernel that checks indices the check and the node's name for the run's error. */
static kc_status steps(kc_export_plan *p, const kc_module *m) {
  const kc_graph *g = m->g;
  int64_t nb = 0, nd = 0;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP || m->kernels[i].no_kernel) continue;
    kc_aot_step *s = &p->steps[p->model.nsteps++];
    *s = (kc_aot_step){.node = i,
                       .grain = m->kernels[i].grain,
                       .ws_bytes = m->kernels[i].ws_bytes,
                       .bufs = nb,
                       .dims = nd,
                       .check_in = m->kernels[i].check_in,
                       .check_dim = m->kernels[i].check_dim};
    char what[512];
    if (s->check_in >= 0 && !(s->what = keep_name(p, kc_node_what(n, what, sizeof what))))
      return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning @%s", g->name);
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
  return KC_OK;
}

/* Inputs and outputs by position; unnamed ones get "input_K" / "output_K". */
static kc_status io(kc_export_plan *p, const kc_module *m) {
  const kc_graph *g = m->g;
  char buf[32];
  for (uint32_t k = 0; k < g->ninputs; k++) {
    const char *name = kc_graph_input_name(g, k);
    if (!*name) snprintf(buf, sizeof buf, "input_%u", k);
    p->inputs[k] = (kc_aot_io){*name ? name : keep_name(p, buf), g->inputs[k].id, 0};
  }
  for (uint32_t k = 0; k < g->noutputs; k++) {
    const char *name = kc_graph_output_name(g, k);
    if (!*name) snprintf(buf, sizeof buf, "output_%u", k);
    p->outputs[k] =
        (kc_aot_io){*name ? name : keep_name(p, buf), g->outputs[k].v.id, m->out_copy[k]};
  }
  for (uint32_t k = 0; k < g->ninputs + g->noutputs; k++)
    if (!(k < g->ninputs ? p->inputs[k].name : p->outputs[k - g->ninputs].name))
      return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning @%s", g->name);
  p->model.ninputs = g->ninputs;
  p->model.noutputs = g->noutputs;
  return KC_OK;
}

/* Requirement slots and texts of every slice (see the file comment). */
static kc_status requirements(kc_export_plan *p, kc_module *m) {
  kc_graph *g = m->g;
  p->model.first_req = p->model.nslots;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op != KC_OP_SLICE) continue;
    kc_dim req[2 * KC_MAX_RANK];
    int axis[2 * KC_MAX_RANK];
    uint32_t k = kc_slice_requirements(g, n, req, axis, 2 * KC_MAX_RANK);
    for (uint32_t j = 0; j < k; j++) {
      char dim[128], text[768], *copy;
      kc_dim_str(g, kc_value_of(g, n->in[0])->dims[axis[j]], dim, sizeof dim);
      char who[300];
      if (n->loc)
        snprintf(who, sizeof who, "node '%s' (slice, %%%u)", n->loc, n->out[0].id);
      else
        snprintf(who, sizeof who, "node %%%u (slice)", n->out[0].id);
      snprintf(text, sizeof text,
               "%s was compiled assuming its constant bounds on axis %d lie within its size %s "
               "(ONNX clamps bounds past the end)",
               who, axis[j], dim);
      int64_t r = p->model.nslots - p->model.first_req;
      if (!(copy = malloc(strlen(text) + 1)))
        return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning @%s", g->name);
      p->req_text[r] = strcpy(copy, text);
      p->nreq = r + 1;
      p->slot_dims[p->model.nslots++] = req[j];
    }
  }
  p->model.req_text = (const char *const *)p->req_text;
  return KC_OK;
}

kc_status kc_export_plan_build(kc_module *m, const char *name, kc_export_plan *p) {
  const kc_graph *g = m->g;
  memset(p, 0, sizeof *p);
  size_t nv = g->nvals + 1, nslots = 1, nbufs = 1;
  for (uint32_t v = 1; v < g->nvals; v++)
    nslots += g->vals[v].rank > 0 ? (size_t)g->vals[v].rank : 0;
  size_t nreq = 1;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    nbufs += g->nodes[i].nin + g->nodes[i].nout;
    nreq += g->nodes[i].op == KC_OP_SLICE ? 2 * KC_MAX_RANK : 0;
  }
  p->values = calloc(nv, sizeof *p->values);
  p->steps = calloc(g->nnodes + 1, sizeof *p->steps);
  p->inputs = calloc(g->ninputs + 1, sizeof *p->inputs);
  p->outputs = calloc(g->noutputs + 1, sizeof *p->outputs);
  p->idims = calloc((size_t)g->ninputs * KC_MAX_RANK + 1, sizeof *p->idims);
  p->syms = calloc((size_t)g->ninputs * KC_MAX_RANK + 1, sizeof *p->syms);
  p->buf_values = calloc(nbufs, sizeof *p->buf_values);
  p->dim_slots = calloc(nslots * 2 + nbufs * KC_MAX_RANK, sizeof *p->dim_slots);
  p->arena_order = calloc(m->norder + 1, sizeof *p->arena_order);
  p->slot_dims = calloc(nslots + nreq, sizeof *p->slot_dims);
  p->req_text = calloc(nreq, sizeof *p->req_text);
  p->weights = calloc(nv, sizeof *p->weights);
  p->names = calloc((size_t)g->ninputs * (KC_MAX_RANK + 1) + g->noutputs + g->nnodes + 1,
                    sizeof *p->names);
  if (!p->values || !p->steps || !p->inputs || !p->outputs || !p->idims || !p->syms ||
      !p->buf_values || !p->dim_slots || !p->arena_order || !p->slot_dims || !p->weights ||
      !p->names || !p->req_text)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning @%s", g->name);
  kc_status s = input_dims(p, g);
  if (s == KC_OK) s = values(p, m);
  if (s == KC_OK) s = requirements(p, m);
  if (s == KC_OK) s = io(p, m);
  if (s == KC_OK) s = steps(p, m);
  if (s != KC_OK) return s;
  for (uint32_t i = 0; i < m->norder; i++)
    p->arena_order[i] = m->order[i];
  kc_aot_model *d = &p->model;
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
  return KC_OK;
}

void kc_export_plan_free(kc_export_plan *p) {
  for (int64_t i = 0; p->names && i < p->nnames; i++)
    free(p->names[i]);
  free(p->names);
  free(p->values);
  free(p->steps);
  free(p->inputs);
  free(p->outputs);
  free(p->idims);
  free(p->syms);
  free(p->buf_values);
  free(p->dim_slots);
  free(p->arena_order);
  free(p->slot_dims);
  for (int64_t i = 0; p->req_text && i < p->nreq; i++)
    free(p->req_text[i]);
  free(p->req_text);
  free(p->weights);
  memset(p, 0, sizeof *p);
}
