/*
 * runtime/module.c - kc_compile and the module's lifetime: copy the graph, run the target's
 * passes, verify, compile every kernel for the target, decide each value's storage once (roots,
 * liveness, outputs; see runtime/internal.h), build the plan, JIT its dims function, and hand it
 * to the one executor on the target's device half. kc_run is the executor's run.
 *
 * Invariants: the module owns its graph, the kc_cpu (every JIT'd kernel and the dims function),
 * the plan and the executor instance; kc_module_free releases all of them, whatever state
 * compile stopped in.
 */
#include "runtime/internal.h"

#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

static const kc_tensor *tensor_named(const kc_graph *g, const char *name) {
  for (uint32_t i = 0; name && i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
  return NULL;
}

/* The data of a source node (weight by name, constant by its `value` tensor); NULL if none. */
static const void *source_data(const kc_graph *g, const kc_node *n) {
  if (n->op == KC_OP_WEIGHT) {
    const kc_tensor *t = tensor_named(g, kc_node_string(n, "name", NULL));
    return t ? t->data : NULL;
  }
  const kc_attr *a = kc_node_attr(n, "value");
  if (!a || a->kind != KC_ATTR_TENSOR || a->u.tensor >= g->ntensors) return NULL;
  return g->tensors[a->u.tensor].data;
}

/* An aligned, never-read address for the data of empty weights. */
static const void *empty_data(void) {
  static const _Alignas(KC_RT_ALIGN) unsigned char none[KC_RT_ALIGN];
  return none;
}

/* Roots: views alias input 0, sources bind data, graph inputs are the caller's. */
static kc_status find_roots(kc_module *m) {
  kc_graph *g = m->g;
  for (uint32_t v = 0; v < g->nvals; v++)
    m->rv[v] = (kc_rt_val){.root = v, .kind = KC_RT_COMPUTED, .output = -1};
  for (uint32_t i = 0; i < g->ninputs; i++) {
    kc_rt_val *r = &m->rv[g->inputs[i].id];
    r->kind = KC_RT_INPUT;
    r->input = i;
  }
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nout; j++)
      if (n->out[j].id) m->rv[n->out[j].id].first = i;
    if (!m->kernels[i].no_kernel || n->op == KC_OP_NOP) {
      if (n->op != KC_OP_NOP && (kc_ops[n->op].flags & KC_OPF_INPLACE) && n->out[0].id) {
        /* the kernel updates input 0's storage: the result is a view of it */
        kc_rt_val *src = &m->rv[n->in[0].id], *dst = &m->rv[n->out[0].id];
        *dst = (kc_rt_val){src->root, src->kind, src->input, src->data, i, i, -1};
      }
      continue;
    }
    if (kc_ops[n->op].cls == KC_CLASS_SOURCE) {
      const void *data = source_data(g, n);
      if (!data && kc_value_numel(g, n->out[0]) != 0)
        return kc_node_errorf(g, n, KC_ERR_INVALID_ARG, "weight '%s' has no data bound to it",
                              kc_node_string(n, "name", "?"));
      m->rv[n->out[0].id].kind = KC_RT_SOURCE;
      m->rv[n->out[0].id].data = data ? data : empty_data();
      continue;
    }
    /* any other node without a kernel passes its input 0 through: a view */
    for (uint32_t j = 1; j < n->nout; j++)
      if (n->out[j].id)
        return kc_node_errorf(g, n, KC_ERR_INTERNAL,
                              "no kernel, yet result %u is more than a view of input 0", j);
    if (!n->nin || !n->in[0].id)
      return kc_node_errorf(g, n, KC_ERR_INTERNAL, "no kernel and no input to view");
    kc_rt_val *src = &m->rv[n->in[0].id], *dst = &m->rv[n->out[0].id];
    dst->root = src->root;
    dst->kind = src->kind;
    dst->input = src->input;
    dst->data = src->data;
  }
  return KC_OK;
}

/* Last use of each COMPUTED root, through views; graph outputs claim their roots' storage. */
static void liveness(kc_module *m) {
  kc_graph *g = m->g;
  for (uint32_t v = 0; v < g->nvals; v++)
    m->rv[v].last = m->rv[v].first;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nin; j++) {
      kc_rt_val *r = &m->rv[m->rv[n->in[j].id].root];
      if (n->in[j].id && r->last < i) r->last = i;
    }
  }
  for (uint32_t k = 0; k < g->noutputs; k++) {
    kc_rt_val *r = &m->rv[m->rv[g->outputs[k].v.id].root];
    bool claim = r->kind == KC_RT_COMPUTED && r->output < 0;
    if (claim) r->output = (int32_t)k;
    m->out_copy[k] = !claim;
  }
  /* arena-held roots in order of definition (nodes are topological, outputs in order) */
  m->norder = 0;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nout; j++) {
      uint32_t v = n->out[j].id;
      const kc_rt_val *r = &m->rv[v];
      if (v && r->root == v && r->kind == KC_RT_COMPUTED && r->output < 0)
        m->order[m->norder++] = v;
    }
  }
}

kc_status kc_rt_analyze(kc_module *m) {
  kc_graph *g = m->g;
  uint32_t nv = g->nvals, no = g->noutputs;
  m->rv = calloc(nv, sizeof *m->rv);
  m->order = calloc(nv, sizeof *m->order);
  m->out_copy = calloc(no ? no : 1, sizeof *m->out_copy);
  if (!m->rv || !m->order || !m->out_copy)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning graph @%s", g->name);
  kc_status s = find_roots(m);
  if (s != KC_OK) return s;
  liveness(m);
  return KC_OK;
}

/* The passes named by `passes`; NULL: the target's default pipeline; "": none. */
static kc_status run_passes(kc_module *m, const char *passes) {
  kc_pipeline p;
  kc_status s = passes ? kc_pipeline_parse(m->ctx, passes, &p)
                       : kc_pipeline_for_target(m->ctx, m->target->pipeline, &p);
  if (s != KC_OK) return s;
  if (p.n == 0) return KC_OK;
  /* a library does not print; fold computes constants with the CPU JIT */
  kc_pass_options po = {.no_print_on_fail = true, .eval = kc_fold_evaluator()};
  s = kc_pipeline_run(&p, m->g, &po);
  if (s == KC_OK) kc_graph_compact(m->g);
  return s;
}

kc_status kc_rt_module_new(kc_context *ctx, const kc_graph *g, const kc_target *t, bool share_data,
                           const char *passes, bool probe, kc_module **out) {
  *out = NULL;
  if (kc_graph_status(g) != KC_OK)
    return kc_errorf(ctx, kc_graph_status(g),
                     "graph @%s has a failed builder call (%s); see the first error reported",
                     g->name, kc_status_str(kc_graph_status(g)));
  kc_module *m = calloc(1, sizeof *m);
  if (!m) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory compiling @%s", g->name);
  m->ctx = ctx;
  m->target = t;
  *out = m;
  m->g = kc_graph_clone(g, share_data);
  if (!m->g) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory copying @%s", g->name);
  kc_status s = probe && t->probe ? t->probe(m) : KC_OK; /* no device: fail before any work */
  if (s == KC_OK) s = run_passes(m, passes);
  if (s == KC_OK) s = kc_graph_verify(m->g);
  if (s != KC_OK) return s;
  m->kernels = calloc(m->g->nnodes + 1, sizeof *m->kernels);
  if (!m->kernels) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory compiling @%s", g->name);
  return KC_OK;
}

kc_status kc_rt_module_compile(kc_module *m, int threads) {
  kc_status s = m->target->compile(m);
  if (s == KC_OK) s = kc_rt_analyze(m);
  if (s == KC_OK) s = kc_rt_plan_build(m, m->g->name ? m->g->name : "model", true, &m->plan);
  if (s != KC_OK) return s;
  kc_rt_plan *p = &m->plan;
  if (!m->cpu && (s = kc_cpu_new(m->ctx, &m->cpu)) != KC_OK) return s;
  s = kc_cpu_jit_dims(m->cpu, m->g, p->slot_dims, p->model.nslots, p->syms, p->model.nsyms,
                      &p->model.eval_dims);
  if (!threads) threads = m->ctx->opts.threads;
  if (s == KC_OK) s = m->target->open(m, threads);
  if (s == KC_OK && p->model.nlate) s = kc_rt_settle_init(m);
  return s;
}

kc_status kc_compile(kc_context *ctx, const kc_graph *g, const kc_compile_options *opts,
                     kc_module **out) {
  kc_clear_error(ctx);
  if (!out) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_compile: out is NULL");
  *out = NULL;
  if (!g) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_compile: no graph");
  const kc_target *t;
  kc_status s = kc_target_find(ctx, opts ? opts->target : NULL, &t);
  kc_module *m = NULL;
  /* the data is copied too: the caller may free g while the module lives */
  if (s == KC_OK) s = kc_rt_module_new(ctx, g, t, false, opts ? opts->passes : NULL, true, &m);
  if (s == KC_OK) s = kc_rt_module_compile(m, opts ? opts->threads : 0);
  if (s != KC_OK) {
    kc_module_free(m);
    return s;
  }
  *out = m;
  return KC_OK;
}

void kc_module_free(kc_module *m) {
  if (!m) return;
  kc_exec_free(m->x); /* before the kernels and data it runs */
  if (m->target && m->target->close) m->target->close(m);
  kc_rt_settle_free(m);
  kc_rt_plan_free(&m->plan);
  kc_cpu_free(m->cpu);
  free(m->kernels);
  free(m->rv);
  free(m->order);
  free(m->out_copy);
  kc_graph_free(m->g);
  free(m);
}

kc_status kc_run(kc_module *m, const kc_tensor_desc *inputs, uint32_t nin, kc_tensor_desc *outputs,
                 uint32_t nout) {
  if (!m) return KC_ERR_INVALID_ARG;
  kc_clear_error(m->ctx);
  /* a caller that asks for fewer outputs than the model has (0 included) has the wrong model
   * or the wrong count: refuse rather than run and return nothing */
  if (nout != m->g->noutputs)
    return kc_errorf(m->ctx, KC_ERR_INVALID_ARG,
                     "kc_run: model @%s has %u output(s), nout is %u (ask for every output)",
                     m->g->name ? m->g->name : "model", m->g->noutputs, nout);
  return kc_exec_run(m->x, inputs, nin, outputs, nout);
}

const kc_graph *kc_module_graph(const kc_module *m) { return m ? m->g : NULL; }

kc_status kc_module_set_threads(kc_module *m, int threads) {
  if (!m) return KC_ERR_INVALID_ARG;
  kc_clear_error(m->ctx);
  return kc_exec_set_threads(m->x, threads);
}

size_t kc_module_peak_bytes(const kc_module *m) { return m ? kc_exec_peak(m->x) : 0; }

kc_status kc_module_set_profile(kc_module *m, int on) {
  if (!m) return KC_ERR_INVALID_ARG;
  kc_clear_error(m->ctx);
  return kc_exec_set_profile(m->x, on != 0);
}

uint32_t kc_module_profile(const kc_module *m, kc_node_profile *out, uint32_t cap) {
  if (!m) return 0;
  const kc_plan *d = &m->plan.model;
  const kc_exec_prof *prof = m->x->prof;
  uint32_t count = 0;
  for (int64_t i = 0; i < d->nsteps; i++, count++) {
    if (!out || count >= cap) continue;
    const kc_node *n = &m->g->nodes[d->steps[i].node];
    out[count] = (kc_node_profile){
        .node = (uint32_t)d->steps[i].node,
        .value = n->nout ? n->out[0].id : 0,
        .op = kc_ops[n->op].name,
        .loc = n->loc,
        .calls = prof ? atomic_load(&prof[i].calls) : 0,
        .ns = prof ? atomic_load(&prof[i].ns) : 0,
        .min_ns = prof ? atomic_load(&prof[i].min_ns) : 0,
    };
  }
  return count;
}
