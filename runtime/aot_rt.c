/*
 * runtime/aot_rt.c - the runtime inside a model compiled ahead of time: it runs the tables of
 * codegen/aot.h (checks the inputs, evaluates every dim, plans the arena with the shared
 * first-fit core, launches the kernels on the thread pool, describes the outputs).
 *
 * Part of the runtime archive kernc_rt that `kernc compile` links into each model's .so, so it
 * sees no graph, no LLVM and no protobuf: only the tables, the pool and the planner core. Errors
 * go to the instance's kc_context, as everywhere in kernc. The CUDA target's runtime
 * (runtime/aot_cuda_rt.c) shares the instance, the input checks and the plan of a run through
 * runtime/aot_internal.h and takes over the run and free through its hooks.
 *
 * CPU check: NAME_create passes the target the object records ("kernc-target triple=...
 * cpu=... features=+a,+b,..."), and no code of the model runs until this CPU is known to have
 * every feature in it. x86-64 features are decided with cpuid and xgetbv exactly as LLVM's host
 * detection decides them (llvm/lib/TargetParser/Host.cpp, getHostCPUFeatures, LLVM 19): the
 * recorded list came from that detection on the compiling machine, so the same rule on this
 * machine says what it lacks. A feature the table does not know is not checked (tests compare
 * the table with LLVM on the test machine); on other architectures nothing is checked.
 *
 * Invariants:
 *   - Nothing runs before every input has been checked and every size computed; each error names
 *     the input, symbol or value it is about.
 *   - Per-run scratch is sized at create; a run allocates only when the arena or an output must
 *     grow, so repeated runs of the same shapes allocate nothing.
 *   - The arena plan of a run is exactly the JIT's for the same graph and shapes: same order,
 *     same live ranges, same planner (runtime/plan_core.c).
 *   - A step whose kernel checks indices (check_in >= 0) and returned nonzero from a range stops
 *     the run after it, reporting the smallest code (as runtime/exec.c does).
 */
#include "codegen/aot.h"
#include "ir/internal.h"
#include "runtime/aot_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(kc_aot_value) == KC_AOT_VALUE_WORDS * 8, "kc_aot_value layout");
_Static_assert(sizeof(kc_aot_step) == KC_AOT_STEP_WORDS * 8, "kc_aot_step layout");
_Static_assert(sizeof(kc_aot_io) == KC_AOT_IO_WORDS * 8, "kc_aot_io layout");
_Static_assert(sizeof(kc_aot_idim) == KC_AOT_IDIM_WORDS * 8, "kc_aot_idim layout");
_Static_assert(sizeof(kc_aot_model) == KC_AOT_MODEL_WORDS * 8, "kc_aot_model layout");

#define ROUND_UP(x) (((x) + KC_RT_ALIGN - 1) / KC_RT_ALIGN * KC_RT_ALIGN)

static int64_t most_buffers(const kc_aot_model *d) {
  int64_t most = 1;
  for (int64_t i = 0; i < d->nsteps; i++)
    if (d->steps[i].nbufs > most) most = d->steps[i].nbufs;
  return most;
}

kc_aot_inst *kc_aot_create(const kc_aot_model *d, int threads) {
  kc_aot_inst *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->d = d;
  m->ctx = kc_context_new();
  size_t nv = (size_t)d->nvalues + 1, no = (size_t)d->noutputs + 1, ns = (size_t)d->nsyms + 1;
  m->syms = calloc(ns, sizeof *m->syms);
  m->bound_by = calloc(ns, sizeof *m->bound_by);
  m->slots = calloc((size_t)d->nslots + 1, sizeof *m->slots);
  m->step_dims = calloc((size_t)d->nstep_dims + 1, sizeof *m->step_dims);
  m->nbytes = calloc(nv, sizeof *m->nbytes);
  m->off = calloc(nv, sizeof *m->off);
  m->vbuf = calloc(nv, sizeof *m->vbuf);
  m->bufs = calloc((size_t)most_buffers(d), sizeof *m->bufs);
  m->live = calloc((size_t)d->narena + 1, sizeof *m->live);
  m->out_buf = calloc(no, sizeof *m->out_buf);
  m->out_cap = calloc(no, sizeof *m->out_cap);
  bool ok = m->ctx && m->syms && m->bound_by && m->slots && m->step_dims && m->nbytes && m->off &&
            m->vbuf && m->bufs && m->live && m->out_buf && m->out_cap;
  if (ok) ok = kc_pool_new(m->ctx, threads, &m->pool) == KC_OK;
  if (ok && d->max_ws > 0) {
    m->ws_stride = ROUND_UP((size_t)d->max_ws);
    m->ws = aligned_alloc(KC_RT_ALIGN, m->ws_stride * (size_t)kc_pool_threads(m->pool));
    ok = m->ws != NULL;
  }
  if (!ok) {
    kc_aot_free(m);
    return NULL;
  }
  return m;
}

void kc_aot_free(kc_aot_inst *m) {
  if (!m) return;
  if (m->dev_free) m->dev_free(m);
  kc_pool_free(m->pool);
  for (int64_t k = 0; m->out_buf && k < m->d->noutputs; k++)
    free(m->out_buf[k]);
  free(m->out_buf);
  free(m->out_cap);
  free(m->arena);
  free(m->ws);
  free(m->live);
  free(m->bufs);
  free(m->vbuf);
  free(m->nbytes);
  free(m->off);
  free(m->step_dims);
  free(m->slots);
  free(m->bound_by);
  free(m->syms);
  kc_context_free(m->ctx);
  free(m);
}

const char *kc_aot_error(const kc_aot_inst *m) {
  if (m) return kc_last_error(m->ctx);
  const char *why = kc_aot_create_error();
  return why[0] ? why : "no model";
}

/* "[2,3]" of a caller's tensor. */
static const char *fmt_dims(const kc_tensor_desc *t, char *buf, size_t size) {
  size_t l = (size_t)snprintf(buf, size, "[");
  for (int i = 0; i < t->rank && i < KC_MAX_RANK && l < size; i++)
    l += (size_t)snprintf(buf + l, size - l, "%s%lld", i ? "," : "", (long long)t->dims[i]);
  if (l < size) snprintf(buf + l, size - l, "]");
  return buf;
}

/* Input k's name, dtype, rank and the dims that are integers or lone symbols (binding those). */
static kc_status check_input(kc_aot_inst *m, int64_t k, const kc_tensor_desc *t) {
  const kc_aot_model *d = m->d;
  const kc_aot_io *io = &d->inputs[k];
  const kc_aot_value *v = &d->values[io->value];
  char tb[256];
  if (t->name && strcmp(t->name, io->name) != 0)
    return kc_errorf(m->ctx, KC_ERR_INVALID_ARG,
                     "input %lld is named '%s', but input %lld of model %s is '%s'", (long long)k,
                     t->name, (long long)k, d->name, io->name);
  if ((int64_t)t->dtype != v->dtype)
    return kc_errorf(m->ctx, KC_ERR_TYPE, "input '%s' is %s, the model takes %s", io->name,
                     kc_dtype_name(t->dtype), kc_dtype_name((kc_dtype)v->dtype));
  if (t->rank != v->rank)
    return kc_errorf(m->ctx, KC_ERR_SHAPE, "input '%s' has rank %d, the model takes rank %lld",
                     io->name, t->rank, (long long)v->rank);
  int64_t numel = 1;
  for (int i = 0; i < t->rank; i++) {
    const kc_aot_idim *id = &d->idims[k * KC_MAX_RANK + i];
    int64_t have = t->dims[i];
    if (have < 0)
      return kc_errorf(m->ctx, KC_ERR_SHAPE, "input '%s' dim %d is negative (%lld)", io->name, i,
                       (long long)have);
    numel *= have;
    if (id->kind == KC_AOT_DIM_STATIC && have != id->value)
      return kc_errorf(m->ctx, KC_ERR_SHAPE, "input '%s' is %s, but dim %d must be %lld", io->name,
                       fmt_dims(t, tb, sizeof tb), i, (long long)id->value);
    if (id->kind != KC_AOT_DIM_SYM) continue;
    if (m->bound_by[id->value] < 0) {
      m->syms[id->value] = have;
      m->bound_by[id->value] = k;
    } else if (m->syms[id->value] != have) {
      return kc_errorf(m->ctx, KC_ERR_SHAPE,
                       "input '%s' dim %d: symbol '%s' is %lld here but %lld in input '%s'",
                       io->name, i, d->syms[id->value], (long long)have,
                       (long long)m->syms[id->value], d->inputs[m->bound_by[id->value]].name);
    }
  }
  if (!t->data && numel > 0)
    return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "input '%s' %s has no data", io->name,
                     fmt_dims(t, tb, sizeof tb));
  return KC_OK;
}

/* Expression dims of the inputs (S+1) against the data, once every symbol is bound. */
static kc_status check_exprs(kc_aot_inst *m, const kc_tensor_desc *in) {
  const kc_aot_model *d = m->d;
  for (int64_t k = 0; k < d->ninputs; k++) {
    const kc_aot_value *v = &d->values[d->inputs[k].value];
    for (int i = 0; i < v->rank; i++) {
      const kc_aot_idim *id = &d->idims[k * KC_MAX_RANK + i];
      int64_t want = m->slots[v->dims + i];
      if (id->kind != KC_AOT_DIM_EXPR || want == in[k].dims[i]) continue;
      char tb[256];
      return kc_errorf(m->ctx, KC_ERR_SHAPE, "input '%s' is %s, but dim %d must be %s = %lld",
                       d->inputs[k].name, fmt_dims(&in[k], tb, sizeof tb), i, id->text,
                       (long long)want);
    }
  }
  return KC_OK;
}

/* Bind the symbols and compute every slot. */
static kc_status shapes(kc_aot_inst *m, const kc_tensor_desc *in) {
  const kc_aot_model *d = m->d;
  for (int64_t s = 0; s < d->nsyms; s++)
    m->bound_by[s] = -1;
  kc_status st = KC_OK;
  for (int64_t k = 0; k < d->ninputs && st == KC_OK; k++)
    st = check_input(m, k, &in[k]);
  if (st != KC_OK) return st;
  int64_t bad = d->eval_dims(m->syms, m->slots);
  if (bad >= d->first_req && bad < d->nslots)
    return kc_errorf(m->ctx, KC_ERR_SHAPE,
                     "%s, which these input shapes break (kc_compile and kernc run, which "
                     "infer sizes per run, take them)",
                     d->req_text[bad - d->first_req]);
  if (bad >= 0) {
    for (int64_t v = 0; v < d->nvalues; v++) {
      const kc_aot_value *val = &d->values[v];
      if (val->storage != KC_AOT_NONE && bad >= val->dims && bad < val->dims + val->rank)
        return kc_errorf(m->ctx, KC_ERR_SHAPE,
                         "dim %lld of value %%%lld is negative or not computable for these "
                         "input shapes",
                         (long long)(bad - val->dims), (long long)v);
    }
    return kc_errorf(m->ctx, KC_ERR_SHAPE, "a size is not computable for these input shapes");
  }
  return check_exprs(m, in);
}

/* Byte sizes of every value with storage; views must match their roots. */
static kc_status sizes(kc_aot_inst *m) {
  const kc_aot_model *d = m->d;
  for (int64_t v = 0; v < d->nvalues; v++) {
    const kc_aot_value *val = &d->values[v];
    if (val->storage == KC_AOT_NONE) continue;
    size_t n = kc_dtype_size((kc_dtype)val->dtype);
    for (int i = 0; i < val->rank; i++) {
      size_t dim = (size_t)m->slots[val->dims + i];
      if (dim && n > SIZE_MAX / dim)
        return kc_errorf(m->ctx, KC_ERR_NOMEM, "value %%%lld is too large to allocate",
                         (long long)v);
      n *= dim;
    }
    m->nbytes[v] = n;
  }
  for (int64_t v = 0; v < d->nvalues; v++) {
    const kc_aot_value *val = &d->values[v];
    if (val->storage == KC_AOT_VIEW && m->nbytes[v] != m->nbytes[val->ref])
      return kc_errorf(m->ctx, KC_ERR_SHAPE,
                       "value %%%lld has %zu bytes but views %%%lld of %zu bytes", (long long)v,
                       m->nbytes[v], (long long)val->ref, m->nbytes[val->ref]);
  }
  return KC_OK;
}

/* Arena offsets (*total bytes), the host output buffers, every step's dims. */
static kc_status place(kc_aot_inst *m, size_t *total) {
  const kc_aot_model *d = m->d;
  uint32_t nlive = 0;
  *total = 0;
  for (int64_t i = 0; i < d->narena; i++) {
    int64_t v = d->arena_order[i];
    m->off[v] = kc_plan_place(m->live, &nlive, total, (uint32_t)d->values[v].first,
                              (uint32_t)d->values[v].last, m->nbytes[v]);
  }
  if (*total > m->peak) m->peak = *total;
  for (int64_t k = 0; k < d->noutputs; k++) {
    size_t n = m->nbytes[d->outputs[k].value];
    if (!kc_plan_grow(&m->out_buf[k], &m->out_cap[k], n, 0))
      return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory: output '%s' needs %zu bytes",
                       d->outputs[k].name, n);
  }
  for (int64_t i = 0; i < d->nstep_dims; i++)
    m->step_dims[i] = m->slots[d->dim_slots[i]];
  return KC_OK;
}

/* The host arena of total bytes and the buffer of every value. */
static kc_status plan(kc_aot_inst *m, const kc_tensor_desc *in, size_t total) {
  const kc_aot_model *d = m->d;
  if (total > m->arena_cap && !kc_plan_grow(&m->arena, &m->arena_cap, total, 0))
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory: the arena of %s needs %zu bytes",
                     d->name, total);
  for (int64_t v = 0; v < d->nvalues; v++) {
    const kc_aot_value *val = &d->values[v];
    void *p = m->empty;
    switch (val->storage) {
    case KC_AOT_INPUT: p = in[val->ref].data; break;
    case KC_AOT_WEIGHT: p = (void *)(d->weights + val->ref); break;
    case KC_AOT_ARENA: p = m->off[v] != SIZE_MAX ? m->arena + m->off[v] : NULL; break;
    case KC_AOT_OUTPUT: p = m->out_buf[val->ref]; break;
    default: continue; /* views after every root is set */
    }
    m->vbuf[v] = p && m->nbytes[v] ? p : m->empty;
  }
  for (int64_t v = 0; v < d->nvalues; v++)
    if (d->values[v].storage == KC_AOT_VIEW) m->vbuf[v] = m->vbuf[d->values[v].ref];
  return KC_OK;
}

typedef struct launch {
  kc_aot_kernel_fn fn;
  void *const *bufs;
  const int64_t *dims;
  unsigned char *ws;
  size_t ws_stride;
  _Atomic int64_t bad; /* the smallest nonzero result of a range, 0: none */
} launch;

static void run_range(void *arg, int64_t begin, int64_t end, int thread) {
  launch *l = arg;
  void *ws = l->ws ? l->ws + l->ws_stride * (size_t)thread : NULL;
  int64_t r = l->fn(l->bufs, l->dims, ws, begin, end);
  if (!r) return;
  int64_t cur = atomic_load_explicit(&l->bad, memory_order_relaxed);
  while ((cur == 0 || r < cur) &&
         !atomic_compare_exchange_weak_explicit(&l->bad, &cur, r, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
}

kc_status kc_aot_index_error(kc_aot_inst *m, const kc_aot_step *s, int64_t pos, kc_dtype it,
                             const void *index) {
  const kc_aot_model *d = m->d;
  int64_t off = 0, axis = 0;
  for (int64_t j = 0; j < s->nbufs; j++) { /* which buffer's dims hold check_dim */
    int64_t v = d->buf_values[s->bufs + j], r = v >= 0 ? d->values[v].rank : 0;
    if (s->check_dim < off + r) {
      axis = s->check_dim - off;
      break;
    }
    off += r;
  }
  return kc_rt_index_error(m->ctx, s->what, it, index, pos, axis,
                           m->step_dims[s->dims + s->check_dim]);
}

static kc_status execute(kc_aot_inst *m) {
  const kc_aot_model *d = m->d;
  for (int64_t i = 0; i < d->nsteps; i++) {
    const kc_aot_step *s = &d->steps[i];
    for (int64_t j = 0; j < s->nbufs; j++) {
      int64_t v = d->buf_values[s->bufs + j];
      m->bufs[j] = v >= 0 ? m->vbuf[v] : NULL;
    }
    const int64_t *dims = m->step_dims + s->dims;
    launch l = {s->fn, m->bufs, dims, m->ws, m->ws_stride, 0};
    kc_pool_run(m->pool, run_range, &l, s->units(dims), s->grain);
    int64_t bad = atomic_load_explicit(&l.bad, memory_order_relaxed);
    if (bad) {
      kc_dtype it = (kc_dtype)d->values[d->buf_values[s->bufs + s->check_in]].dtype;
      const char *index =
          (const char *)m->bufs[s->check_in] + (bad - 1) * (int64_t)kc_dtype_size(it);
      return kc_aot_index_error(m, s, bad - 1, it, index);
    }
  }
  return KC_OK;
}

/* Outputs whose value lives elsewhere (an input, a weight, the arena) into their own buffer. */
static void copy_outputs(kc_aot_inst *m) {
  const kc_aot_model *d = m->d;
  for (int64_t k = 0; k < d->noutputs; k++) {
    const kc_aot_io *io = &d->outputs[k];
    if (io->copy && m->nbytes[io->value])
      memcpy(m->out_buf[k], m->vbuf[io->value], m->nbytes[io->value]);
  }
}

void kc_aot_describe(kc_aot_inst *m, kc_tensor_desc *out) {
  const kc_aot_model *d = m->d;
  for (int64_t k = 0; k < d->noutputs; k++) {
    const kc_aot_io *io = &d->outputs[k];
    const kc_aot_value *v = &d->values[io->value];
    memset(&out[k], 0, sizeof out[k]);
    out[k].name = io->name;
    out[k].dtype = (kc_dtype)v->dtype;
    out[k].rank = (int)v->rank;
    for (int i = 0; i < v->rank; i++)
      out[k].dims[i] = m->slots[v->dims + i];
    out[k].data = m->out_buf[k];
  }
}

kc_status kc_aot_prepare(kc_aot_inst *m, const kc_tensor_desc *inputs, size_t *total) {
  kc_status s = shapes(m, inputs);
  if (s == KC_OK) s = sizes(m);
  if (s == KC_OK) s = place(m, total);
  return s;
}

int kc_aot_run(kc_aot_inst *m, const kc_tensor_desc *inputs, kc_tensor_desc *outputs) {
  if (!m) return KC_ERR_INVALID_ARG;
  kc_clear_error(m->ctx);
  if ((m->d->ninputs && !inputs) || (m->d->noutputs && !outputs))
    return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "%s_run: inputs or outputs is NULL", m->d->name);
  if (m->dev_run) return m->dev_run(m, inputs, outputs);
  size_t total;
  kc_status s = kc_aot_prepare(m, inputs, &total);
  if (s == KC_OK) s = plan(m, inputs, total);
  if (s == KC_OK) s = execute(m);
  if (s != KC_OK) return s;
  copy_outputs(m);
  kc_aot_describe(m, outputs);
  return KC_OK;
}
