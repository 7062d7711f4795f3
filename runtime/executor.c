/*
 * runtime/executor.c - the target-independent part of the one executor (runtime/executor.h):
 * workspaces per calling thread, input checks, the dims function, sizes, the arena plan with the
 * shared first-fit core, staged runs for sizes that depend on data, profiling, and the output
 * descriptors. The target's kc_exec_device gives storage and launches the steps.
 *
 * Invariants:
 *   - Nothing runs before every input has been checked and every size a stage needs is known;
 *     each error names the input, symbol, value or node it is about.
 *   - A stage ends before the first node of the next late symbol (kc_plan_late): its slots, sizes
 *     and arena offsets are those of values defined before that node, and they do not change
 *     when later stages are planned (first-fit in arena_order is a prefix computation), so a
 *     later stage only grows the arena, keeping what earlier stages wrote.
 *   - Per-run scratch lives in the calling thread's workspace, sized at its creation; a run
 *     allocates only when the arena or an output must grow, so repeated runs of the same shapes
 *     allocate nothing.
 */
#include "runtime/executor.h"

#include "ir/internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- instance and workspaces ----------------------------------------------------------------- */

kc_status kc_exec_new(const kc_plan *d, const kc_exec_device *dev, kc_context *ctx, int threads,
                      kc_exec **out) {
  *out = NULL;
  kc_exec *x = calloc(1, sizeof *x);
  if (!x)
    return ctx ? kc_errorf(ctx, KC_ERR_NOMEM, "out of memory creating model %s", d->name)
               : KC_ERR_NOMEM;
  x->d = d;
  x->dev_ops = dev;
  x->ctx = ctx;
  if (!x->ctx) {
    x->ctx = kc_context_new();
    x->own_ctx = true;
  }
  if (!x->ctx || pthread_mutex_init(&x->lock, NULL) != 0) {
    if (x->own_ctx) kc_context_free(x->ctx);
    free(x);
    return ctx ? kc_errorf(ctx, KC_ERR_NOMEM, "out of memory creating model %s", d->name)
               : KC_ERR_NOMEM;
  }
  kc_status s = kc_pool_new(x->ctx, threads, &x->pool);
  if (s != KC_OK) {
    kc_exec_free(x);
    return s;
  }
  *out = x;
  return KC_OK;
}

static void ws_free(kc_exec *x, kc_exec_ws *w) {
  if (x->dev_ops && x->dev_ops->ws_close) x->dev_ops->ws_close(x, w);
  for (int64_t k = 0; w->out_buf && k < x->d->noutputs; k++)
    free(w->out_buf[k]);
  free(w->out_buf);
  free(w->out_cap);
  free(w->arena);
  free(w->live);
  free(w->vbuf);
  free(w->nbytes);
  free(w->off);
  free(w->step_dims);
  free(w->slots);
  free(w->bound_by);
  free(w->syms);
  free((void *)w->in);
  free(w);
}

void kc_exec_free(kc_exec *x) {
  if (!x) return;
  while (x->wss) {
    kc_exec_ws *w = x->wss;
    x->wss = w->next;
    ws_free(x, w);
  }
  if (x->dev_ops && x->dev_ops->close) x->dev_ops->close(x);
  kc_pool_free(x->pool);
  pthread_mutex_destroy(&x->lock);
  free(x->prof);
  if (x->own_ctx) kc_context_free(x->ctx);
  free(x);
}

static kc_exec_ws *ws_new(kc_exec *x) {
  const kc_plan *d = x->d;
  kc_exec_ws *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  size_t nv = (size_t)d->nvalues + 1, no = (size_t)d->noutputs + 1, ns = (size_t)d->nsyms + 1;
  w->in = calloc((size_t)d->ninputs + 1, sizeof(kc_tensor_desc *));
  w->syms = calloc(ns, sizeof *w->syms);
  w->bound_by = calloc(ns, sizeof *w->bound_by);
  w->slots = calloc((size_t)d->nslots + 1, sizeof *w->slots);
  w->step_dims = calloc((size_t)d->nstep_dims + 1, sizeof *w->step_dims);
  w->nbytes = calloc(nv, sizeof *w->nbytes);
  w->off = calloc(nv, sizeof *w->off);
  w->vbuf = calloc(nv, sizeof *w->vbuf);
  w->live = calloc((size_t)d->narena + 1, sizeof *w->live);
  w->out_buf = calloc(no, sizeof *w->out_buf);
  w->out_cap = calloc(no, sizeof *w->out_cap);
  bool ok = w->in && w->syms && w->bound_by && w->slots && w->step_dims && w->nbytes && w->off &&
            w->vbuf && w->live && w->out_buf && w->out_cap;
  if (ok && x->dev_ops->ws_open) ok = x->dev_ops->ws_open(x, w) == KC_OK;
  if (!ok) {
    ws_free(x, w);
    return NULL;
  }
  w->owner = pthread_self();
  return w;
}

/* The calling thread's workspace, made at its first run. */
static kc_exec_ws *ws_of_thread(kc_exec *x) {
  pthread_mutex_lock(&x->lock);
  kc_exec_ws *w = x->wss;
  while (w && !pthread_equal(w->owner, pthread_self()))
    w = w->next;
  if (!w && (w = ws_new(x))) {
    w->next = x->wss;
    x->wss = w;
  }
  pthread_mutex_unlock(&x->lock);
  return w;
}

/* ---- inputs ---------------------------------------------------------------------------------- */

/* "[2,3]" of a caller's tensor. */
static const char *fmt_dims(const kc_tensor_desc *t, char *buf, size_t size) {
  size_t l = (size_t)snprintf(buf, size, "[");
  for (int i = 0; i < t->rank && i < KC_MAX_RANK && l < size; i++)
    l += (size_t)snprintf(buf + l, size - l, "%s%lld", i ? "," : "", (long long)t->dims[i]);
  if (l < size) snprintf(buf + l, size - l, "]");
  return buf;
}

/* Pair each input of the plan with the caller's descriptor: by name when it has one, else by
 * position. */
static kc_status match_inputs(kc_exec *x, kc_exec_ws *w, const kc_tensor_desc *in, uint32_t nin) {
  const kc_plan *d = x->d;
  const kc_tensor_desc **of = (const kc_tensor_desc **)w->in;
  if (nin && !in) return kc_errorf(x->ctx, KC_ERR_INVALID_ARG, "%s: inputs is NULL", d->name);
  if (nin > d->ninputs)
    return kc_errorf(x->ctx, KC_ERR_INVALID_ARG, "model %s takes %lld input(s), got %u", d->name,
                     (long long)d->ninputs, nin);
  memset(of, 0, (size_t)d->ninputs * sizeof *of);
  for (uint32_t i = 0; i < nin; i++) {
    int64_t k = i;
    if (in[i].name) {
      for (k = 0; k < d->ninputs; k++)
        if (strcmp(d->inputs[k].name, in[i].name) == 0) break;
      if (k == d->ninputs)
        return kc_errorf(x->ctx, KC_ERR_INVALID_ARG, "model %s has no input named '%s'", d->name,
                         in[i].name);
    }
    if (of[k])
      return kc_errorf(x->ctx, KC_ERR_INVALID_ARG, "input '%s' is given twice", d->inputs[k].name);
    of[k] = &in[i];
  }
  for (int64_t k = 0; k < d->ninputs; k++)
    if (!of[k])
      return kc_errorf(x->ctx, KC_ERR_INVALID_ARG, "input '%s' is missing (model %s takes %lld)",
                       d->inputs[k].name, d->name, (long long)d->ninputs);
  return KC_OK;
}

/* Input k's dtype, rank and the dims that are integers or lone symbols (binding those). */
static kc_status check_input(kc_exec *x, kc_exec_ws *w, int64_t k) {
  const kc_plan *d = x->d;
  const kc_tensor_desc *t = w->in[k];
  const kc_plan_io *io = &d->inputs[k];
  const kc_plan_value *v = &d->values[io->value];
  char tb[256];
  if ((int64_t)t->dtype != v->dtype)
    return kc_errorf(x->ctx, KC_ERR_TYPE, "input '%s' is %s, the model takes %s", io->name,
                     kc_dtype_name(t->dtype), kc_dtype_name((kc_dtype)v->dtype));
  if (t->rank != v->rank)
    return kc_errorf(x->ctx, KC_ERR_SHAPE, "input '%s' has rank %d %s, the model takes rank %lld",
                     io->name, t->rank,
                     t->rank >= 0 && t->rank <= KC_MAX_RANK ? fmt_dims(t, tb, sizeof tb) : "",
                     (long long)v->rank);
  int64_t numel = 1;
  for (int i = 0; i < t->rank; i++) {
    const kc_plan_idim *id = &d->idims[k * KC_MAX_RANK + i];
    int64_t have = t->dims[i];
    if (have < 0)
      return kc_errorf(x->ctx, KC_ERR_SHAPE, "input '%s' dim %d is negative (%lld)", io->name, i,
                       (long long)have);
    if (have && numel > INT64_MAX / have)
      return kc_errorf(x->ctx, KC_ERR_SHAPE, "input '%s' %s has more elements than int64 counts",
                       io->name, fmt_dims(t, tb, sizeof tb));
    numel *= have;
    if (id->kind == KC_PLAN_DIM_STATIC && have != id->value)
      return kc_errorf(x->ctx, KC_ERR_SHAPE, "input '%s' is %s, but dim %d must be %lld", io->name,
                       fmt_dims(t, tb, sizeof tb), i, (long long)id->value);
    if (id->kind != KC_PLAN_DIM_SYM) continue;
    if (w->bound_by[id->value] < 0) {
      w->syms[id->value] = have;
      w->bound_by[id->value] = k;
    } else if (w->syms[id->value] != have) {
      return kc_errorf(x->ctx, KC_ERR_SHAPE,
                       "input '%s' dim %d: symbol '%s' is %lld here but %lld in input '%s'",
                       io->name, i, d->syms[id->value], (long long)have,
                       (long long)w->syms[id->value], d->inputs[w->bound_by[id->value]].name);
    }
  }
  if (!t->data && numel > 0)
    return kc_errorf(x->ctx, KC_ERR_INVALID_ARG, "input '%s' %s has no data", io->name,
                     fmt_dims(t, tb, sizeof tb));
  return KC_OK;
}

/* Expression dims of the inputs (S+1) against the data, once their slots are computed. */
static kc_status check_exprs(kc_exec *x, kc_exec_ws *w) {
  const kc_plan *d = x->d;
  for (int64_t k = 0; k < d->ninputs; k++) {
    const kc_plan_value *v = &d->values[d->inputs[k].value];
    for (int i = 0; i < v->rank; i++) {
      const kc_plan_idim *id = &d->idims[k * KC_MAX_RANK + i];
      int64_t want = w->slots[v->dims + i];
      if (id->kind != KC_PLAN_DIM_EXPR || want == w->in[k]->dims[i]) continue;
      char tb[256];
      return kc_errorf(x->ctx, KC_ERR_SHAPE, "input '%s' is %s, but dim %d must be %s = %lld",
                       d->inputs[k].name, fmt_dims(w->in[k], tb, sizeof tb), i, id->text,
                       (long long)want);
    }
  }
  return KC_OK;
}

static kc_status check_inputs(kc_exec *x, kc_exec_ws *w, const kc_tensor_desc *in, uint32_t nin) {
  kc_status s = match_inputs(x, w, in, nin);
  for (int64_t i = 0; i < x->d->nsyms; i++) {
    w->bound_by[i] = -1;
    w->syms[i] = 0; /* late symbols: a placeholder until bound */
  }
  for (int64_t k = 0; k < x->d->ninputs && s == KC_OK; k++)
    s = check_input(x, w, k);
  return s;
}

/* ---- sizes and the arena -----------------------------------------------------------------------
 */

/* Below this a buffer is not compared with the machine's memory (reading it costs file reads). */
#define MEM_CHECK_MIN ((size_t)16 << 20)

/* kc_plan_grow, after comparing size with what the machine has left (see plan_core.c) or with
 * kc_options.memory_limit: over it is an error naming both sizes, not an OOM kill later. */
static kc_status grow(kc_exec *x, unsigned char **buf, size_t *cap, size_t size, size_t keep,
                      const char *what, const char *name) {
  if (size <= *cap && *buf) return KC_OK;
  uint64_t limit = x->ctx->opts.memory_limit;
  uint64_t avail =
      size >= MEM_CHECK_MIN || (limit && size > limit) ? kc_plan_mem_available(limit) : UINT64_MAX;
  if (size > avail) {
    char need[64], have[64];
    return kc_errorf(x->ctx, KC_ERR_NOMEM, "%s '%s' needs %s, more than the %s available (%s)",
                     what, name, kc_plan_fmt_bytes(need, sizeof need, size),
                     kc_plan_fmt_bytes(have, sizeof have, avail),
                     limit && avail == limit ? "kc_options.memory_limit"
                                             : "MemAvailable + SwapFree, cgroup memory.max");
  }
  if (!kc_plan_grow(buf, cap, size, keep))
    return kc_errorf(x->ctx, KC_ERR_NOMEM, "out of memory: %s '%s' needs %zu bytes", what, name,
                     size);
  return KC_OK;
}

/* The first node of stage `late` (INT64_MAX for the last stage) and its first slot. */
static int64_t stage_node(const kc_plan *d, int64_t li) {
  return li < d->nlate ? d->late[li].node : INT64_MAX;
}

/* Requirement r broken by this run's slots: the error, else KC_OK. */
static kc_status check_req(kc_exec *x, kc_exec_ws *w, const kc_plan_req *r) {
  int64_t a = w->slots[r->slot], b = w->slots[r->slot2];
  bool ok;
  switch (r->kind) {
  case KC_PLAN_REQ_NONNEG: ok = a >= 0; break;
  case KC_PLAN_REQ_EQ: ok = a == b; break;
  case KC_PLAN_REQ_BCAST: ok = a == b || a == 1; break;
  default: ok = a <= b; break;
  }
  if (ok) return KC_OK;
  if (r->kind == KC_PLAN_REQ_NONNEG)
    return kc_errorf(x->ctx, KC_ERR_SHAPE, "%s, which these input shapes break", r->text);
  char sides[320];
  int l = snprintf(sides, sizeof sides, "%s is %lld", r->a, (long long)a);
  if (l > 0 && (size_t)l < sizeof sides)
    snprintf(sides + l, sizeof sides - (size_t)l, ", %s is %lld", r->b, (long long)b);
  return kc_errorf(x->ctx, KC_ERR_SHAPE, "%s, which these input shapes break (%s)", r->text, sides);
}

/* Every slot from the symbols; a bad slot or a broken requirement below slot_end (what this
 * stage needs) is an error. */
static kc_status eval_slots(kc_exec *x, kc_exec_ws *w, int64_t slot_end) {
  const kc_plan *d = x->d;
  int64_t bad = d->eval_dims(w->syms, w->slots);
  for (int64_t r = 0; r < d->nreqs && d->reqs[r].slot < slot_end; r++) {
    if (d->reqs[r].slot == bad || d->reqs[r].slot2 == bad) /* negative or not computable */
      return kc_errorf(x->ctx, KC_ERR_SHAPE, "%s, which these input shapes break", d->reqs[r].text);
    if (bad < 0 || d->reqs[r].slot < bad) {
      kc_status s = check_req(x, w, &d->reqs[r]);
      if (s != KC_OK) return s;
    }
  }
  if (bad < 0 || bad >= slot_end) return KC_OK;
  for (int64_t v = 0; v < d->nvalues; v++) {
    const kc_plan_value *val = &d->values[v];
    if (val->storage != KC_PLAN_NONE && bad >= val->dims && bad < val->dims + val->rank)
      return kc_errorf(x->ctx, KC_ERR_SHAPE,
                       "dim %lld of value %%%lld is negative or not computable for these input "
                       "shapes",
                       (long long)(bad - val->dims), (long long)v);
  }
  return kc_errorf(x->ctx, KC_ERR_SHAPE, "a size is not computable for these input shapes");
}

/* Byte sizes of the values defined before node_end; views must match their roots. */
static kc_status sizes(kc_exec *x, kc_exec_ws *w, int64_t node_end) {
  const kc_plan *d = x->d;
  for (int64_t v = 0; v < d->nvalues; v++) {
    const kc_plan_value *val = &d->values[v];
    if (val->storage == KC_PLAN_NONE || val->first >= node_end) continue;
    size_t n = kc_dtype_size((kc_dtype)val->dtype);
    for (int i = 0; i < val->rank; i++) {
      size_t dim = (size_t)w->slots[val->dims + i];
      if (dim && n > SIZE_MAX / dim)
        return kc_errorf(x->ctx, KC_ERR_NOMEM, "value %%%lld is too large to allocate",
                         (long long)v);
      n *= dim;
    }
    w->nbytes[v] = n;
  }
  for (int64_t v = 0; v < d->nvalues; v++) {
    const kc_plan_value *val = &d->values[v];
    if (val->storage == KC_PLAN_VIEW && val->first < node_end &&
        w->nbytes[v] != w->nbytes[val->ref])
      return kc_errorf(x->ctx, KC_ERR_SHAPE,
                       "value %%%lld has %zu bytes but views %%%lld of %zu bytes", (long long)v,
                       w->nbytes[v], (long long)val->ref, w->nbytes[val->ref]);
  }
  return KC_OK;
}

/* Arena offsets of the values defined before node_end (*total bytes in all) and the host
 * buffers of the outputs they define. */
static kc_status place(kc_exec *x, kc_exec_ws *w, int64_t node_end, size_t *total) {
  const kc_plan *d = x->d;
  uint32_t nlive = 0;
  *total = 0;
  for (int64_t v = 0; v < d->nvalues; v++)
    w->off[v] = SIZE_MAX;
  for (int64_t i = 0; i < d->narena && d->values[d->arena_order[i]].first < node_end; i++) {
    int64_t v = d->arena_order[i];
    w->off[v] = kc_plan_place(w->live, &nlive, total, (uint32_t)d->values[v].first,
                              (uint32_t)d->values[v].last, w->nbytes[v]);
  }
  size_t peak = atomic_load_explicit(&x->peak, memory_order_relaxed);
  while (*total > peak && !atomic_compare_exchange_weak_explicit(
                              &x->peak, &peak, *total, memory_order_relaxed, memory_order_relaxed))
    ;
  /* an output's buffer is its root's storage: sized when the root is defined, which may be a
   * stage before the output itself (a reshape view whose shape is computed later), so the
   * root's kernel writes into it (copies: sized at the end) */
  for (int64_t v = 0; v < d->nvalues; v++) {
    const kc_plan_value *val = &d->values[v];
    if (val->storage != KC_PLAN_OUTPUT || val->first >= node_end) continue;
    int64_t k = val->ref;
    kc_status s =
        grow(x, &w->out_buf[k], &w->out_cap[k], w->nbytes[v], 0, "output", d->outputs[k].name);
    if (s != KC_OK) return s;
  }
  return KC_OK;
}

/* The buffers of outputs that are copies of another value (an input, a weight, another output's
 * value, an arena value), sized once every value is. */
static kc_status copy_buffers(kc_exec *x, kc_exec_ws *w) {
  const kc_plan *d = x->d;
  for (int64_t k = 0; k < d->noutputs; k++) {
    const kc_plan_io *io = &d->outputs[k];
    if (!io->copy) continue;
    kc_status s =
        grow(x, &w->out_buf[k], &w->out_cap[k], w->nbytes[io->value], 0, "output", io->name);
    if (s != KC_OK) return s;
  }
  return KC_OK;
}

kc_status kc_exec_host_place(kc_exec *x, kc_exec_ws *w, size_t total, size_t keep,
                             int64_t node_end) {
  const kc_plan *d = x->d;
  if (total > w->arena_cap) {
    kc_status s = grow(x, &w->arena, &w->arena_cap, total, keep, "the arena of model", d->name);
    if (s != KC_OK) return s;
  }
  for (int64_t v = 0; v < d->nvalues; v++) {
    const kc_plan_value *val = &d->values[v];
    if (val->first >= node_end) continue;
    void *p = NULL;
    switch (val->storage) {
    case KC_PLAN_INPUT: p = w->in[val->ref]->data; break;
    case KC_PLAN_WEIGHT:
      p = d->value_data ? (void *)d->value_data[v] : (void *)(d->weights + val->ref);
      break;
    case KC_PLAN_ARENA: p = w->off[v] != SIZE_MAX ? w->arena + w->off[v] : NULL; break;
    case KC_PLAN_OUTPUT: p = w->out_buf[val->ref]; break;
    default: continue; /* views after every root is set */
    }
    w->vbuf[v] = p && w->nbytes[v] ? p : w->empty;
  }
  for (int64_t v = 0; v < d->nvalues; v++)
    if (d->values[v].storage == KC_PLAN_VIEW && d->values[v].first < node_end)
      w->vbuf[v] = w->vbuf[d->values[v].ref];
  return KC_OK;
}

kc_status kc_exec_index_error(kc_exec *x, kc_exec_ws *w, int64_t i, int64_t pos, kc_dtype it,
                              const void *index) {
  const kc_plan *d = x->d;
  const kc_plan_step *st = &d->steps[i];
  int64_t off = 0, axis = 0;
  for (int64_t j = 0; j < st->nbufs; j++) { /* which buffer's dims hold check_dim */
    int64_t v = d->buf_values[st->bufs + j], r = v >= 0 ? d->values[v].rank : 0;
    if (st->check_dim < off + r) {
      axis = st->check_dim - off;
      break;
    }
    off += r;
  }
  return kc_rt_index_error(x->ctx, st->what, it, index, pos, axis,
                           w->step_dims[st->dims + st->check_dim]);
}

void kc_exec_value(const kc_exec *x, const kc_exec_ws *w, int64_t v, kc_dtype *dtype, int *rank,
                   int64_t *dims) {
  const kc_plan_value *val = &x->d->values[v];
  if (dtype) *dtype = (kc_dtype)val->dtype;
  if (rank) *rank = (int)val->rank;
  for (int i = 0; dims && i < val->rank; i++)
    dims[i] = w->slots[val->dims + i];
}

/* ---- a run -------------------------------------------------------------------------------------
 */

static kc_status launch(kc_exec *x, kc_exec_ws *w, int64_t i) {
  const kc_exec_device *dev = x->dev_ops;
  if (!atomic_load_explicit(&x->profile, memory_order_relaxed) || !x->prof)
    return dev->launch(x, w, i);
  uint64_t t0 = now_ns();
  kc_status s = dev->launch(x, w, i);
  if (s == KC_OK) s = dev->sync(x, w); /* a device's launch returns before the kernel ends */
  uint64_t dt = now_ns() - t0;
  kc_exec_prof *p = &x->prof[i];
  atomic_fetch_add_explicit(&p->ns, dt, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->calls, 1, memory_order_relaxed);
  uint64_t lo = atomic_load_explicit(&p->min_ns, memory_order_relaxed); /* 0: none yet */
  while ((!lo || dt < lo) &&
         !atomic_compare_exchange_weak_explicit(&p->min_ns, &lo, dt ? dt : 1, memory_order_relaxed,
                                                memory_order_relaxed))
    ;
  return s;
}

/* Plan and run the stage of steps up to the next late symbol li (or to the end). *step: the
 * first step of the stage, then of the next; *written: arena bytes earlier stages wrote. */
static kc_status stage(kc_exec *x, kc_exec_ws *w, int64_t li, int64_t *step, size_t *written) {
  const kc_plan *d = x->d;
  int64_t node_end = stage_node(d, li);
  int64_t slot_end = li < d->nlate ? d->late[li].slot : d->nslots;
  int64_t step_end = li < d->nlate ? d->late[li].step : d->nsteps;
  size_t total;
  kc_status s = eval_slots(x, w, slot_end);
  if (s == KC_OK && *step == 0) s = check_exprs(x, w);
  if (s == KC_OK) s = sizes(x, w, node_end);
  if (s == KC_OK) s = place(x, w, node_end, &total);
  if (s == KC_OK) s = x->dev_ops->place(x, w, total, *written, node_end);
  if (s != KC_OK) return s;
  *written = total;
  for (int64_t i = *step; i < step_end; i++) {
    const kc_plan_step *st = &d->steps[i];
    for (int64_t j = 0; j < st->ndims; j++)
      w->step_dims[st->dims + j] = w->slots[d->dim_slots[st->dims + j]];
  }
  for (; *step < step_end && s == KC_OK; (*step)++)
    s = launch(x, w, *step);
  return s;
}

static void describe(kc_exec *x, kc_exec_ws *w, kc_tensor_desc *out, uint32_t nout) {
  const kc_plan *d = x->d;
  for (uint32_t k = 0; k < nout; k++) {
    const kc_plan_io *io = &d->outputs[k];
    const kc_plan_value *v = &d->values[io->value];
    memset(&out[k], 0, sizeof out[k]);
    out[k].name = io->name;
    out[k].dtype = (kc_dtype)v->dtype;
    out[k].rank = (int)v->rank;
    for (int i = 0; i < v->rank; i++)
      out[k].dims[i] = w->slots[v->dims + i];
    out[k].data = w->out_buf[k];
  }
}

static kc_status run(kc_exec *x, kc_exec_ws *w, const kc_tensor_desc *in, uint32_t nin) {
  const kc_plan *d = x->d;
  kc_status s = check_inputs(x, w, in, nin);
  if (s != KC_OK) return s;
  if ((s = x->dev_ops->begin(x, w)) != KC_OK) return s;
  int64_t step = 0;
  size_t written = 0;
  for (int64_t li = 0; s == KC_OK; li++) {
    s = stage(x, w, li, &step, &written);
    if (s != KC_OK || li >= d->nlate) break;
    if (!x->settle) {
      s = kc_errorf(x->ctx, KC_ERR_INTERNAL, "model %s: a size depends on data, no settle hook",
                    d->name);
      break;
    }
    s = x->dev_ops->sync(x, w);
    if (s == KC_OK) s = x->settle(x->settle_user, x, w, li);
    while (s == KC_OK && li + 1 < d->nlate && d->late[li + 1].node == d->late[li].node)
      li++; /* bound together with li */
  }
  if (s == KC_OK) s = copy_buffers(x, w);
  if (s == KC_OK) s = x->dev_ops->finish(x, w);
  x->dev_ops->end(x, w);
  return s;
}

kc_status kc_exec_run(kc_exec *x, const kc_tensor_desc *inputs, uint32_t nin,
                      kc_tensor_desc *outputs, uint32_t nout) {
  if (!x) return KC_ERR_INVALID_ARG;
  kc_clear_error(x->ctx);
  const kc_plan *d = x->d;
  if (nout > d->noutputs)
    return kc_errorf(x->ctx, KC_ERR_INVALID_ARG, "model %s has %lld output(s), %u asked for",
                     d->name, (long long)d->noutputs, nout);
  if (nout && !outputs)
    return kc_errorf(x->ctx, KC_ERR_INVALID_ARG, "%s: outputs is NULL", d->name);
  kc_exec_ws *w = ws_of_thread(x);
  if (!w) return kc_errorf(x->ctx, KC_ERR_NOMEM, "out of memory for a run of model %s", d->name);
  kc_status s = run(x, w, inputs, nin);
  if (s == KC_OK) describe(x, w, outputs, nout);
  return s;
}

kc_status kc_exec_set_threads(kc_exec *x, int threads) {
  if (!x) return KC_ERR_INVALID_ARG;
  kc_pool_claim(x->pool);
  kc_status s = kc_pool_set_threads(x->pool, threads);
  kc_pool_unclaim(x->pool);
  return s;
}

kc_status kc_exec_set_profile(kc_exec *x, bool on) {
  if (!x) return KC_ERR_INVALID_ARG;
  if (!on) {
    atomic_store(&x->profile, false);
    return KC_OK;
  }
  pthread_mutex_lock(&x->lock);
  if (!x->prof) x->prof = calloc((size_t)x->d->nsteps + 1, sizeof *x->prof);
  for (int64_t i = 0; x->prof && i < x->d->nsteps; i++) {
    atomic_store(&x->prof[i].ns, 0);
    atomic_store(&x->prof[i].calls, 0);
    atomic_store(&x->prof[i].min_ns, 0);
  }
  bool ok = x->prof != NULL;
  pthread_mutex_unlock(&x->lock);
  if (!ok) return kc_errorf(x->ctx, KC_ERR_NOMEM, "out of memory profiling model %s", x->d->name);
  atomic_store(&x->profile, true);
  return KC_OK;
}

size_t kc_exec_peak(const kc_exec *x) {
  return x ? atomic_load_explicit(&((kc_exec *)x)->peak, memory_order_relaxed) : 0;
}
