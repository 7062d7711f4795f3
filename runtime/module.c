/*
 * runtime/module.c - kc_compile and the module's lifetime: copy the graph, run the requested
 * passes, check that every weight has data, lower it for the CPU, decide each value's storage
 * once (roots, liveness, outputs; see runtime/internal.h), and size the per-run scratch.
 *
 * Invariants: the module owns its graph copies, the kc_cpu (every JIT'd kernel), the pool
 * and all buffers; kc_module_free releases all of them, whatever state compile stopped in.
 */
#include "runtime/internal.h"

#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

#define ROUND_UP(x) (((x) + KC_RT_ALIGN - 1) / KC_RT_ALIGN * KC_RT_ALIGN)

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
    if (!m->kernels[i].no_kernel || n->op == KC_OP_NOP) continue;
    if (kc_ops[n->op].cls == KC_CLASS_SOURCE) {
      const void *data = source_data(g, n);
      if (!data && kc_value_numel(g, n->out[0]) != 0)
        return kc_node_errorf(g, n, KC_ERR_INVALID_ARG, "weight '%s' has no data bound to it",
                              kc_node_string(n, "name", "?"));
      m->rv[n->out[0].id].kind = KC_RT_SOURCE;
      m->rv[n->out[0].id].data = data ? data : m->empty;
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
  m->nbytes = calloc(nv, sizeof *m->nbytes);
  m->off = calloc(nv, sizeof *m->off);
  m->vbuf = calloc(nv, sizeof *m->vbuf);
  m->live = calloc(nv, sizeof *m->live);
  m->out_copy = calloc(no ? no : 1, sizeof *m->out_copy);
  m->out_buf = calloc(no ? no : 1, sizeof *m->out_buf);
  m->out_cap = calloc(no ? no : 1, sizeof *m->out_cap);
  m->bind = calloc((size_t)g->ninputs * KC_MAX_RANK + 1, sizeof *m->bind);
  m->in_of = calloc(g->ninputs + 1, sizeof *m->in_of);
  m->cost = calloc(g->nnodes + 1, sizeof *m->cost);
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    uint32_t nd = 0;
    for (uint32_t j = 0; j < n->nin + n->nout; j++) {
      kc_val v = j < n->nin ? n->in[j] : n->out[j - n->nin];
      if (v.id && g->vals[v.id].rank > 0) nd += (uint32_t)g->vals[v.id].rank;
    }
    if (nd > m->max_dims) m->max_dims = nd;
    if (n->nin + n->nout > m->max_bufs) m->max_bufs = n->nin + n->nout;
  }
  m->bufs = calloc(m->max_bufs + 1, sizeof *m->bufs);
  m->dims = calloc(m->max_dims + 1, sizeof *m->dims);
  if (!m->rv || !m->order || !m->nbytes || !m->off || !m->vbuf || !m->live || !m->out_copy ||
      !m->out_buf || !m->out_cap || !m->bind || !m->in_of || !m->bufs || !m->dims || !m->cost)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory planning graph @%s", g->name);
  kc_status s = find_roots(m);
  if (s != KC_OK) return s;
  liveness(m);
  return KC_OK;
}

kc_status kc_rt_workspace(kc_module *m) {
  int64_t most = 0;
  for (uint32_t i = 0; i < m->g->nnodes; i++)
    if (!m->kernels[i].no_kernel && m->kernels[i].ws_bytes > most) most = m->kernels[i].ws_bytes;
  int threads = kc_pool_threads(m->pool);
  size_t stride = ROUND_UP((size_t)most);
  if (stride == m->ws_stride && threads <= m->ws_threads) return KC_OK;
  free(m->ws);
  m->ws = NULL;
  m->ws_stride = stride;
  m->ws_threads = 0;
  if (!stride) return KC_OK;
  m->ws = aligned_alloc(KC_RT_ALIGN, stride * (size_t)threads);
  if (!m->ws)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory for %d kernel workspaces of %zu bytes",
                     threads, stride);
  m->ws_threads = threads;
  return KC_OK;
}

/* The passes named by `passes`; NULL: the target's default pipeline; "": none. */
kc_status kc_rt_passes(kc_module *m, const char *passes) {
  kc_pipeline p;
  kc_status s = passes ? kc_pipeline_parse(m->ctx, passes, &p)
                       : kc_pipeline_for_target(m->ctx, m->cuda ? "cuda" : "cpu", &p);
  if (s != KC_OK) return s;
  if (p.n == 0) return KC_OK;
  /* a library does not print; fold computes constants with the CPU JIT */
  kc_pass_options po = {.no_print_on_fail = true, .eval = kc_fold_evaluator()};
  s = kc_pipeline_run(&p, m->g, &po);
  if (s == KC_OK) kc_graph_compact(m->g);
  return s;
}

/* The shape graph and the point its per-run state rolls back to. */
static kc_status make_shape_graph(kc_module *m) {
  m->sg = kc_graph_clone(m->g, true); /* m->g outlives it: freed after it */
  if (!m->sg) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory copying graph @%s", m->g->name);
  m->sg_mark = kc_arena_mark(&m->sg->arena);
  m->sg_ndexprs = m->sg->ndexprs;
  m->sg_nfresh = m->sg->nfresh;
  return KC_OK;
}

static kc_status compile(kc_module *m, const kc_compile_options *opts) {
  kc_status s = kc_rt_passes(m, opts ? opts->passes : NULL);
  if (s == KC_OK) s = kc_graph_verify(m->g);
  if (s != KC_OK) return s;
  m->kernels = calloc(m->g->nnodes + 1, sizeof *m->kernels);
  if (!m->kernels)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory compiling @%s", m->g->name);
  if (m->cuda) {
    if ((s = kc_rt_cuda_compile(m)) != KC_OK) return s;
  } else {
    if ((s = kc_cpu_new(m->ctx, &m->cpu)) != KC_OK) return s;
    if ((s = kc_cpu_compile_graph(m->cpu, m->g, m->kernels)) != KC_OK) return s;
  }
  if ((s = kc_rt_analyze(m)) != KC_OK) return s;
  if ((s = make_shape_graph(m)) != KC_OK) return s;
  int threads = opts && opts->threads ? opts->threads : m->ctx->opts.threads;
  if ((s = kc_pool_new(m->ctx, threads, &m->pool)) != KC_OK) return s;
  return kc_rt_workspace(m);
}

kc_status kc_compile(kc_context *ctx, const kc_graph *g, const kc_compile_options *opts,
                     kc_module **out) {
  if (!out) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_compile: out is NULL");
  *out = NULL;
  if (!g) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_compile: no graph");
  const char *target = opts && opts->target ? opts->target : "cpu";
  bool cuda = strcmp(target, "cuda") == 0;
  if (!cuda && strcmp(target, "cpu") != 0)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "kc_compile: unknown target '%s' (known: cpu, cuda)",
                     target);
  if (kc_graph_status(g) != KC_OK)
    return kc_errorf(ctx, kc_graph_status(g),
                     "graph @%s has a failed builder call (%s); see the first error reported",
                     g->name, kc_status_str(kc_graph_status(g)));
  kc_module *m = calloc(1, sizeof *m);
  if (!m) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory compiling @%s", g->name);
  m->ctx = ctx;
  /* the data is copied too: the caller may free g while the module lives */
  m->g = kc_graph_clone(g, false);
  kc_status s = m->g ? KC_OK : kc_errorf(ctx, KC_ERR_NOMEM, "out of memory copying @%s", g->name);
  if (s == KC_OK && cuda) s = kc_rt_cuda_open(m); /* no device: fail before any work */
  if (s == KC_OK) s = compile(m, opts);
  if (s != KC_OK) {
    kc_module_free(m);
    return s;
  }
  *out = m;
  return KC_OK;
}

void kc_module_free(kc_module *m) {
  if (!m) return;
  kc_pool_free(m->pool);
  kc_rt_cuda_free(m);
  kc_cpu_free(m->cpu);
  if (m->out_buf)
    for (uint32_t k = 0; k < m->g->noutputs; k++)
      free(m->out_buf[k]);
  free(m->out_buf);
  free(m->out_cap);
  free(m->arena);
  free(m->ws);
  free(m->kernels);
  free(m->rv);
  free(m->order);
  free(m->out_copy);
  free(m->nbytes);
  free(m->off);
  free(m->vbuf);
  free(m->live);
  free(m->bind);
  free(m->in_of);
  free(m->bufs);
  free(m->dims);
  free(m->prof);
  free(m->cost);
  kc_graph_free(m->sg); /* before g: it shares g's tensor data */
  kc_graph_free(m->g);
  free(m);
}

const kc_graph *kc_module_graph(const kc_module *m) { return m ? m->g : NULL; }

kc_status kc_module_set_threads(kc_module *m, int threads) {
  if (!m) return KC_ERR_INVALID_ARG;
  kc_status s = kc_pool_set_threads(m->pool, threads);
  return s == KC_OK ? kc_rt_workspace(m) : s;
}

size_t kc_module_peak_bytes(const kc_module *m) { return m ? m->peak : 0; }
