/*
 * runtime/cuda_exec.c - the CUDA side of a module (target "cuda"): open the device, compile
 * every kernel of the graph in one NVRTC program for its SM (a cubin; PTX for the driver to
 * JIT when NVRTC does not know the SM), and run nodes on the device.
 *
 * Memory follows the host plan (runtime/plan.c) rather than a second planner: the device
 * arena has the host arena's layout, so a value lives at the same offset on both sides; graph
 * inputs, outputs and weights get device buffers of their own. The host arena is then a mirror
 * that only holds what the host must read: the small inputs of a node whose sizes wait for
 * computed data (staged runs) and the results copied out at the end.
 *
 * Invariants: device buffers only grow; weights are uploaded once, at their first use; a stage
 * returns after cuCtxSynchronize, so kernel failures surface as the run's status. With
 * profiling on (kc_module_set_profile) every launch is waited for, so a node's time is its
 * kernel's. Without the toolkit (no KERNC_HAVE_CUDA) the target only reports itself
 * unavailable. Kernels that check indices (codegen/cuda/cuda.h) get an error word each, zeroed
 * before a stage and read after it; the first node in order with one set fails the run
 * (runtime/index_error.c) before anything reads its results.
 */
#include "runtime/internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef KERNC_HAVE_CUDA

#include "codegen/cuda/cuda.h"

typedef struct kc_rt_cuda kc_rt_cuda;

struct kc_rt_cuda {
  kc_cuda_dev *dev;
  kc_nvrtc *nv;
  kc_cuda_mod *mod;
  kc_cuda_kernel_info *info; /* per node */
  void **fn;                 /* per node */
  kc_dptr arena, empty;
  size_t arena_cap;
  kc_dptr *in_buf, *out_buf, *src_buf; /* per graph input, graph output, value */
  size_t *in_cap, *out_cap;
  uint64_t *bufs, *words;
  int64_t *dims;
  kc_dptr err;    /* per node: the two error words of a kernel that checks indices */
  uint64_t *errh; /* host copy of err */
};

kc_status kc_rt_cuda_open(kc_module *m) {
  kc_rt_cuda *c = calloc(1, sizeof *c);
  if (!c) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory");
  kc_status s = kc_cuda_dev_open(m->ctx, 0, &c->dev);
  if (s != KC_OK) {
    free(c);
    return s;
  }
  m->cuda = c;
  return KC_OK;
}

void kc_rt_cuda_free(kc_module *m) {
  kc_rt_cuda *c = m->cuda;
  if (!c) return;
  if (c->in_buf)
    for (uint32_t i = 0; i < m->g->ninputs; i++)
      kc_cuda_free(c->dev, c->in_buf[i]);
  if (c->out_buf)
    for (uint32_t i = 0; i < m->g->noutputs; i++)
      kc_cuda_free(c->dev, c->out_buf[i]);
  if (c->src_buf)
    for (uint32_t v = 0; v < m->g->nvals; v++)
      kc_cuda_free(c->dev, c->src_buf[v]);
  kc_cuda_free(c->dev, c->arena);
  kc_cuda_free(c->dev, c->empty);
  kc_cuda_free(c->dev, c->err);
  kc_cuda_mod_unload(c->mod);
  kc_cuda_dev_close(c->dev);
  kc_nvrtc_free(c->nv);
  free(c->info);
  free(c->fn);
  free(c->in_buf);
  free(c->out_buf);
  free(c->src_buf);
  free(c->in_cap);
  free(c->out_cap);
  free(c->bufs);
  free(c->words);
  free(c->dims);
  free(c->errh);
  free(c);
  m->cuda = NULL;
}

/* Shared with kc_export (runtime/export_cuda.c), so the JIT and the AOT library run the same
 * program. */
kc_status kc_rt_cuda_emit(kc_module *m, kc_cuda_prog *prog, kc_cuda_kernel_info *info,
                          const char **src) {
  const kc_graph *g = m->g;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    char name[96];
    kc_cuda_kernel_name(name, sizeof name, i, kc_ops[g->nodes[i].op].name);
    kc_status s = kc_cuda_prog_add(prog, g, i, name, &info[i]);
    if (s != KC_OK) return s;
    m->kernels[i].no_kernel = info[i].no_kernel;
    m->kernels[i].check_in = info[i].check_in;
    m->kernels[i].check_dim = info[i].check_dim;
  }
  *src = kc_cuda_prog_source(prog);
  return *src ? KC_OK : kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory");
}

static kc_status load_all(kc_module *m, const char *src) {
  kc_rt_cuda *c = m->cuda;
  bool exact;
  int cc = kc_cuda_dev_cc(c->dev), arch = kc_nvrtc_arch_for(c->nv, cc, &exact);
  if (!arch)
    return kc_errorf(m->ctx, KC_ERR_UNSUPPORTED,
                     "CUDA target unavailable: NVRTC cannot build for %s (sm_%d)",
                     kc_cuda_dev_name(c->dev), cc);
  kc_cuda_image img;
  kc_status s = kc_nvrtc_compile(c->nv, src, m->g->name ? m->g->name : "model", arch, !exact, &img);
  if (s == KC_OK) s = kc_cuda_mod_load(c->dev, &img, &c->mod);
  for (uint32_t i = 0; i < m->g->nnodes && s == KC_OK; i++) {
    if (c->info[i].no_kernel) continue;
    char name[96];
    kc_cuda_kernel_name(name, sizeof name, i, kc_ops[m->g->nodes[i].op].name);
    s = kc_cuda_mod_function(c->mod, name, &c->fn[i]);
  }
  return s;
}

kc_status kc_rt_cuda_compile(kc_module *m) {
  kc_rt_cuda *c = m->cuda;
  const kc_graph *g = m->g;
  size_t nn = g->nnodes + 1, most = 1;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    size_t k = g->nodes[i].nin + g->nodes[i].nout;
    if (k > most) most = k;
  }
  c->info = calloc(nn, sizeof *c->info);
  c->fn = calloc(nn, sizeof *c->fn);
  c->in_buf = calloc(g->ninputs + 1, sizeof *c->in_buf);
  c->in_cap = calloc(g->ninputs + 1, sizeof *c->in_cap);
  c->out_buf = calloc(g->noutputs + 1, sizeof *c->out_buf);
  c->out_cap = calloc(g->noutputs + 1, sizeof *c->out_cap);
  c->src_buf = calloc(g->nvals + 1, sizeof *c->src_buf);
  c->bufs = calloc(most + 1, sizeof *c->bufs);
  c->dims = calloc((size_t)g->nvals * KC_MAX_RANK + 1, sizeof *c->dims);
  c->words = calloc(most + (size_t)g->nvals * KC_MAX_RANK + 2, sizeof *c->words);
  if (!c->info || !c->fn || !c->in_buf || !c->in_cap || !c->out_buf || !c->out_cap || !c->src_buf ||
      !c->bufs || !c->dims || !c->words)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory compiling @%s for CUDA", g->name);
  kc_cuda_prog *prog = NULL;
  const char *src = NULL;
  kc_status s = kc_cuda_prog_new(m->ctx, &prog);
  if (s == KC_OK) s = kc_rt_cuda_emit(m, prog, c->info, &src);
  if (s == KC_OK) s = kc_nvrtc_new(m->ctx, &c->nv);
  const char *dir = getenv("KERNC_CUDA_CACHE");
  if (s == KC_OK && dir && *dir) s = kc_nvrtc_set_cache_dir(c->nv, dir);
  if (s == KC_OK) s = load_all(m, src);
  kc_cuda_prog_free(prog);
  if (s == KC_OK) s = kc_cuda_alloc(c->dev, KC_RT_ALIGN, &c->empty);
  bool checks = false;
  for (uint32_t i = 0; i < g->nnodes; i++)
    checks = checks || (!c->info[i].no_kernel && c->info[i].check_in >= 0);
  if (s == KC_OK && checks) {
    c->errh = calloc(2 * nn, sizeof *c->errh);
    if (!c->errh) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory compiling @%s", g->name);
    s = kc_cuda_alloc(c->dev, 2 * nn * sizeof *c->errh, &c->err);
  }
  return s;
}

/* The arena at m->total bytes, keeping what earlier stages wrote. */
static kc_status grow_arena(kc_module *m) {
  kc_rt_cuda *c = m->cuda;
  if (c->arena && c->arena_cap >= m->total) return KC_OK;
  kc_dptr nb;
  kc_status s = kc_cuda_alloc(c->dev, m->total, &nb);
  if (s == KC_OK && c->arena) s = kc_cuda_dtod(c->dev, nb, c->arena, c->arena_cap);
  if (s != KC_OK) return s;
  kc_cuda_free(c->dev, c->arena);
  c->arena = nb;
  c->arena_cap = m->total;
  return KC_OK;
}

/* Device address of value v (its root's storage). */
static kc_status dev_of(kc_module *m, uint32_t v, kc_dptr *out) {
  kc_rt_cuda *c = m->cuda;
  uint32_t r = m->rv[v].root;
  const kc_rt_val *rv = &m->rv[r];
  *out = c->empty;
  if (!m->nbytes[r]) return KC_OK;
  if (rv->kind == KC_RT_INPUT) {
    *out = c->in_buf[rv->input];
  } else if (rv->kind == KC_RT_SOURCE) {
    if (!c->src_buf[r]) { /* first use: upload the weight once */
      kc_status s = kc_cuda_alloc(c->dev, m->nbytes[r], &c->src_buf[r]);
      if (s == KC_OK) s = kc_cuda_htod(c->dev, c->src_buf[r], rv->data, m->nbytes[r]);
      if (s != KC_OK) return s;
    }
    *out = c->src_buf[r];
  } else if (rv->output >= 0) {
    *out = c->out_buf[rv->output];
  } else if (m->off[r] != SIZE_MAX) {
    *out = c->arena + m->off[r];
  }
  return KC_OK;
}

static kc_status upload_inputs(kc_module *m) {
  kc_rt_cuda *c = m->cuda;
  kc_status s = KC_OK;
  for (uint32_t k = 0; k < m->g->ninputs && s == KC_OK; k++) {
    size_t size = m->nbytes[m->g->inputs[k].id];
    if (!size) continue;
    s = kc_cuda_reserve(c->dev, &c->in_buf[k], &c->in_cap[k], size);
    if (s == KC_OK) s = kc_cuda_htod(c->dev, c->in_buf[k], m->in_of[k]->data, size);
  }
  return s;
}

/* Output buffers of the roots nodes [from, to) define. */
static kc_status reserve_outputs(kc_module *m, uint32_t from, uint32_t to) {
  kc_rt_cuda *c = m->cuda;
  kc_status s = KC_OK;
  for (uint32_t i = from; i < to && s == KC_OK; i++)
    for (uint32_t j = 0; j < m->g->nodes[i].nout && s == KC_OK; j++) {
      uint32_t v = m->g->nodes[i].out[j].id;
      int32_t k = v ? m->rv[v].output : -1;
      if (k >= 0 && m->rv[v].root == v && m->nbytes[v])
        s = kc_cuda_reserve(c->dev, &c->out_buf[k], &c->out_cap[k], m->nbytes[v]);
    }
  return s;
}

/* Concrete dims of node n's operands, the kernel ABI's layout. */
static uint32_t node_dims(kc_module *m, const kc_node *n, int64_t *dims) {
  uint32_t nd = 0;
  for (uint32_t j = 0; j < n->nin + n->nout; j++) {
    kc_val v = j < n->nin ? n->in[j] : n->out[j - n->nin];
    if (!v.id) continue;
    const kc_value *val = kc_value_of(m->sg, v);
    for (int d = 0; d < val->rank; d++)
      dims[nd++] = val->dims[d];
  }
  return nd;
}

static kc_status launch(kc_module *m, uint32_t i) {
  kc_rt_cuda *c = m->cuda;
  const kc_node *n = &m->g->nodes[i];
  const kc_cuda_kernel_info *k = &c->info[i];
  kc_status s = KC_OK;
  for (uint32_t j = 0; j < n->nin + n->nout && s == KC_OK; j++) {
    kc_val v = j < n->nin ? n->in[j] : n->out[j - n->nin];
    c->bufs[j] = 0;
    if (v.id) s = dev_of(m, v.id, &c->bufs[j]);
  }
  if (s != KC_OK) return s;
  if (k->check_in >= 0) c->bufs[n->nin + n->nout] = c->err + 2 * i * sizeof *c->errh;
  node_dims(m, n, c->dims);
  return kc_cuda_run_kernel(c->dev, c->fn[i], k, c->bufs, c->dims, c->words);
}

/* After a stage: the first of nodes [from, to) whose kernel met an index out of range fails it. */
static kc_status check_indices(kc_module *m, uint32_t from, uint32_t to) {
  kc_rt_cuda *c = m->cuda;
  size_t nn = m->g->nnodes + 1;
  kc_status s = kc_cuda_dtoh(c->dev, c->errh, c->err, 2 * nn * sizeof *c->errh);
  for (uint32_t i = from; i < to && s == KC_OK; i++) {
    const kc_cuda_kernel_info *k = &c->info[i];
    if (k->no_kernel || k->check_in < 0 || !c->errh[2 * i]) continue;
    const kc_node *n = &m->g->nodes[i];
    int64_t pos = (int64_t)c->errh[2 * i] - 1, off = 0, axis = 0, index;
    memcpy(&index, &c->errh[2 * i + 1], sizeof index); /* the kernel kept it: see cuda.h */
    for (uint32_t j = 0; j < n->nin + n->nout; j++) {  /* which operand's dims hold check_dim */
      kc_val v = j < n->nin ? n->in[j] : n->out[j - n->nin];
      int r = v.id ? kc_value_of(m->sg, v)->rank : 0;
      if (k->check_dim < off + r) {
        axis = k->check_dim - off;
        break;
      }
      off += r;
    }
    node_dims(m, n, c->dims);
    char what[512];
    return kc_rt_index_error(m->ctx, kc_node_what(n, what, sizeof what), KC_I64, &index, pos, axis,
                             c->dims[k->check_dim]);
  }
  return s;
}

/* Device -> host mirror of the COMPUTED root of v (the host reads it next). */
static kc_status fetch(kc_module *m, uint32_t v) {
  uint32_t r = m->rv[v].root;
  if (m->rv[r].kind != KC_RT_COMPUTED || !m->nbytes[r]) return KC_OK;
  kc_dptr p;
  kc_status s = dev_of(m, v, &p);
  return s == KC_OK ? kc_cuda_dtoh(m->cuda->dev, m->vbuf[v], p, m->nbytes[r]) : s;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Node i's kernel; with profiling on, waited for and timed (launch to completion). */
static kc_status run_node(kc_module *m, uint32_t i) {
  if (!m->profile || !m->prof) return launch(m, i);
  uint64_t t0 = now_ns();
  kc_status s = launch(m, i);
  if (s == KC_OK) s = kc_cuda_sync(m->cuda->dev);
  uint64_t dt = now_ns() - t0;
  kc_rt_prof *p = &m->prof[i];
  if (!p->calls || dt < p->min_ns) p->min_ns = dt;
  p->ns += dt;
  p->calls++;
  return s;
}

kc_status kc_rt_cuda_execute(kc_module *m, uint32_t from, uint32_t to) {
  kc_rt_cuda *c = m->cuda;
  const kc_graph *g = m->g;
  kc_status s = from == 0 ? upload_inputs(m) : KC_OK;
  if (s == KC_OK) s = grow_arena(m);
  if (s == KC_OK) s = reserve_outputs(m, from, to);
  if (s == KC_OK && c->err) {
    memset(c->errh, 0, 2 * (m->g->nnodes + 1) * sizeof *c->errh);
    s = kc_cuda_htod(c->dev, c->err, c->errh, 2 * (m->g->nnodes + 1) * sizeof *c->errh);
  }
  for (uint32_t i = from; i < to && s == KC_OK; i++)
    if (!c->info[i].no_kernel && c->fn[i]) s = run_node(m, i);
  if (s == KC_OK) s = kc_cuda_sync(c->dev);
  if (s == KC_OK && c->err) s = check_indices(m, from, to);
  if (s != KC_OK) return s;
  if (to < g->nnodes) /* the next stage settles node `to` from its inputs' contents */
    for (uint32_t j = 0; j < g->nodes[to].nin && s == KC_OK; j++)
      if (g->nodes[to].in[j].id) s = fetch(m, g->nodes[to].in[j].id);
  if (to == g->nnodes)
    for (uint32_t k = 0; k < g->noutputs && s == KC_OK; k++)
      s = fetch(m, g->outputs[k].v.id);
  return s;
}

#else /* !KERNC_HAVE_CUDA */

kc_status kc_rt_cuda_open(kc_module *m) {
  return kc_errorf(m->ctx, KC_ERR_UNSUPPORTED,
                   "CUDA target unavailable: kernc was built without the CUDA toolkit (NVRTC)");
}

void kc_rt_cuda_free(kc_module *m) { (void)m; }

kc_status kc_rt_cuda_compile(kc_module *m) { return kc_rt_cuda_open(m); }

kc_status kc_rt_cuda_execute(kc_module *m, uint32_t from, uint32_t to) {
  return kc_errorf(m->ctx, KC_ERR_INTERNAL, "CUDA execution without the CUDA target");
}

#endif
