/*
 * runtime/train_core.c - accumulate, apply, parameter access and safetensors checkpoints of a
 * trainer over a step callback (runtime/train_core.h): the logic kc_trainer_* (runtime/train.c)
 * and NAME_train_* (runtime/train_aot.c) share. Graph-free: part of the runtime archive.
 */
#include "runtime/train_core.h"
#include "ir/internal.h"
#include "runtime/plan_core.h"
#include "runtime/safetensors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kc_status kc_train_core_init(kc_train_core *t, uint32_t cap) {
  t->params = calloc((size_t)cap + 1, sizeof *t->params);
  t->optim = calloc((size_t)cap + 1, sizeof *t->optim);
  if (!t->params || !t->optim) return kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
  return KC_OK;
}

kc_status kc_train_core_add(kc_train_core *t, const char *name, int rank, const int64_t *dims,
                            const float *init) {
  kc_train_param *p = &t->params[t->np];
  kc_optim_param *q = &t->optim[t->np];
  int64_t n = 1;
  for (int d = 0; d < rank; d++)
    n *= dims[d];
  p->name = strdup(name);
  p->rank = rank;
  memset(p->dims, 0, sizeof p->dims);
  memcpy(p->dims, dims, (size_t)rank * sizeof *dims);
  q->n = n;
  size_t nb = (size_t)(n ? n : 1) * sizeof(float);
  /* value, gradient sum and optimizer state, compared with what the machine has left before
   * they are allocated (calloc'd state is only touched at the first step: an OOM kill then) */
  uint64_t need = (uint64_t)nb * (t->o.optimizer == KC_OPTIM_ADAMW ? 4
                                  : t->o.momentum != 0             ? 3
                                                                   : 2);
  uint64_t limit = t->ctx->opts.memory_limit;
  if (need >= ((uint64_t)16 << 20) || (limit && need > limit)) {
    uint64_t avail = kc_plan_mem_available(limit);
    if (need > avail) {
      char nbuf[64], abuf[64];
      t->np++; /* p->name is freed with the rest */
      return kc_errorf(t->ctx, KC_ERR_NOMEM,
                       "trainer: parameter '%s' with its gradient and optimizer state needs %s, "
                       "more than the %s available (%s)",
                       name, kc_plan_fmt_bytes(nbuf, sizeof nbuf, need),
                       kc_plan_fmt_bytes(abuf, sizeof abuf, avail),
                       limit && avail == limit ? "kc_options.memory_limit"
                                               : "MemAvailable + SwapFree, cgroup memory.max");
    }
  }
  q->p = malloc(nb);
  q->grad = malloc(nb);
  if (t->o.optimizer == KC_OPTIM_ADAMW) {
    q->s1 = calloc(1, nb);
    q->s2 = calloc(1, nb);
  } else if (t->o.momentum != 0) {
    q->s1 = calloc(1, nb);
  }
  t->np++;
  bool state_ok = t->o.optimizer == KC_OPTIM_ADAMW ? q->s1 && q->s2 : t->o.momentum == 0 || q->s1;
  if (!p->name || !q->p || !q->grad || !state_ok)
    return kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory for '%s'", name);
  memcpy(q->p, init, (size_t)n * sizeof(float));
  return KC_OK;
}

kc_status kc_train_core_outputs(kc_train_core *t, uint32_t nout) {
  t->nout = nout;
  t->outs = calloc(nout + 1, sizeof *t->outs);
  if (!t->outs || !kc_optim_set_init(&t->set, t->optim, t->np))
    return kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
  return KC_OK;
}

void kc_train_core_release(kc_train_core *t) {
  kc_optim_set_free(&t->set);
  for (uint32_t i = 0; i < t->np; i++) {
    free(t->params[i].name);
    free(t->optim[i].p);
    free(t->optim[i].grad);
    free(t->optim[i].s1);
    free(t->optim[i].s2);
  }
  free(t->params);
  free(t->optim);
  free(t->outs);
  free(t->ins);
  t->params = NULL;
  t->optim = NULL;
  t->outs = t->ins = NULL;
  t->np = 0;
}

kc_status kc_train_core_accumulate(kc_train_core *t, const kc_tensor_desc *in, uint32_t nin,
                                   double *loss) {
  if (nin + t->np > t->cap_ins) {
    kc_tensor_desc *p = realloc(t->ins, (nin + t->np) * sizeof *p);
    if (!p) return kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
    t->ins = p;
    t->cap_ins = nin + t->np;
  }
  if (nin) memcpy(t->ins, in, nin * sizeof *in);
  for (uint32_t i = 0; i < t->np; i++) {
    kc_tensor_desc *d = &t->ins[nin + i];
    memset(d, 0, sizeof *d);
    d->name = t->params[i].name;
    d->dtype = KC_F32;
    d->rank = t->params[i].rank;
    memcpy(d->dims, t->params[i].dims, sizeof d->dims);
    d->data = t->optim[i].p;
  }
  kc_status s = t->run(t->run_arg, t->ins, nin + t->np, t->outs, t->nout);
  if (s != KC_OK) return s;
  for (uint32_t i = 0; i < t->np; i++) {
    const kc_tensor_desc *gd = &t->outs[t->params[i].grad_out];
    if (gd->dtype != KC_F32)
      return kc_errorf(t->ctx, KC_ERR_INTERNAL, "trainer: gradient of '%s' is %s",
                       t->params[i].name, kc_dtype_name(gd->dtype));
  }
  for (uint32_t i = 0; i < t->np; i++)
    kc_optim_accumulate(t->optim[i].grad, t->outs[t->params[i].grad_out].data, t->optim[i].n,
                        t->nacc == 0);
  t->nacc++;
  const kc_tensor_desc *l = &t->outs[t->loss_out];
  if (loss) *loss = l->dtype == KC_F64 ? *(const double *)l->data : *(const float *)l->data;
  return KC_OK;
}

kc_status kc_train_core_apply(kc_train_core *t, double lr, int64_t step) {
  if (t->nacc == 0)
    return kc_errorf(t->ctx, KC_ERR_INVALID_ARG,
                     "trainer: apply without a micro-batch accumulated since the last apply");
  if (step < 1)
    return kc_errorf(t->ctx, KC_ERR_INVALID_ARG,
                     "trainer: step %lld is not "
                     "1-based",
                     (long long)step);
  /* the step's pool when no run holds it (results are the same either way) */
  kc_pool *pool = t->pool ? t->pool(t->run_arg) : NULL;
  t->set.pool = pool && kc_pool_try_claim(pool) ? pool : NULL;
  t->norm = kc_optim_scale_norm(&t->set, 1.0 / (double)t->nacc);
  if (t->o.clip_norm > 0) kc_optim_clip(&t->set, t->norm, t->o.clip_norm);
  kc_optim_update(&t->set, &t->o, lr, step, t->momentum_init);
  if (t->set.pool) kc_pool_unclaim(t->set.pool);
  t->set.pool = NULL;
  t->momentum_init = true;
  t->nacc = 0;
  t->steps = step;
  return KC_OK;
}

kc_status kc_train_core_param(kc_train_core *t, uint32_t i, kc_tensor_desc *out) {
  if (i >= t->np)
    return kc_errorf(t->ctx, KC_ERR_INVALID_ARG, "trainer: parameter %u of %u", i, t->np);
  memset(out, 0, sizeof *out);
  out->name = t->params[i].name;
  out->dtype = KC_F32;
  out->rank = t->params[i].rank;
  memcpy(out->dims, t->params[i].dims, sizeof out->dims);
  out->data = t->optim[i].p;
  return KC_OK;
}

/* ---- checkpoints ------------------------------------------------------------------------- */

static const char *optim_name(kc_optimizer k) { return k == KC_OPTIM_ADAMW ? "adamw" : "sgd"; }

/* The state tensors of a parameter: suffixes and arrays (AdamW: 2, SGD with momentum: 1). */
static int state_of(const kc_train_core *t, uint32_t i, const char **sfx, float **arr) {
  const kc_optim_param *q = &t->optim[i];
  if (t->o.optimizer == KC_OPTIM_ADAMW) {
    sfx[0] = ".exp_avg", arr[0] = q->s1;
    sfx[1] = ".exp_avg_sq", arr[1] = q->s2;
    return 2;
  }
  if (q->s1 && t->momentum_init) {
    sfx[0] = ".momentum_buffer", arr[0] = q->s1;
    return 1;
  }
  return 0;
}

kc_status kc_train_core_save(kc_train_core *t, const char *path) {
  uint32_t cap = 3 * t->np, n = 0;
  kc_st_tensor *ts = calloc(cap, sizeof *ts);
  char **names = calloc(cap, sizeof *names);
  kc_status s = ts && names ? KC_OK : kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
  for (uint32_t i = 0; s == KC_OK && i < t->np; i++) {
    const kc_train_param *p = &t->params[i];
    ts[n++] = (kc_st_tensor){p->name, KC_F32, p->rank, p->dims, t->optim[i].p};
    const char *sfx[2];
    float *arr[2];
    int ns = state_of(t, i, sfx, arr);
    for (int k = 0; k < ns; k++) {
      size_t len = strlen(p->name) + strlen(sfx[k]) + 1;
      if (!(names[n] = malloc(len))) {
        s = kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
        break;
      }
      snprintf(names[n], len, "%s%s", p->name, sfx[k]);
      ts[n] = (kc_st_tensor){names[n], KC_F32, p->rank, p->dims, arr[k]};
      n++;
    }
  }
  char step[32];
  snprintf(step, sizeof step, "%" PRId64, t->steps);
  const char *meta[] = {"format", "kernc-train", "optimizer", optim_name(t->o.optimizer),
                        "step",   step};
  if (s == KC_OK) s = kc_st_write(t->ctx, path, ts, n, meta, 3);
  for (uint32_t k = 0; names && k < cap; k++)
    free(names[k]);
  free(names);
  free(ts);
  return s;
}

/* e is F32 of parameter p's shape, or an error naming it. */
static kc_status check_entry(kc_train_core *t, const char *path, const kc_st_entry *e,
                             const kc_train_param *p) {
  bool ok = e->dtype == KC_F32 && e->rank == p->rank;
  for (int d = 0; ok && d < p->rank; d++)
    ok = e->dims[d] == p->dims[d];
  if (ok) return KC_OK;
  char want[160] = "", got[160] = "";
  for (int d = 0; d < p->rank; d++)
    snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "",
             (long long)p->dims[d]);
  for (int d = 0; d < e->rank; d++)
    snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "",
             (long long)e->dims[d]);
  return kc_errorf(t->ctx, KC_ERR_INVALID_ARG,
                   "%s: tensor '%s' is %s[%s]; the trainer's is f32[%s]", path, e->name,
                   kc_dtype_name(e->dtype), got, want);
}

kc_status kc_train_core_load(kc_train_core *t, const char *path) {
  kc_st_file f;
  kc_status s = kc_st_read(t->ctx, path, &f);
  if (s != KC_OK) return s;
  const char *opt = kc_st_meta(&f, "optimizer"), *step = kc_st_meta(&f, "step");
  char *end = NULL;
  long long steps = step ? strtoll(step, &end, 10) : -1;
  if (!opt || strcmp(opt, optim_name(t->o.optimizer)) != 0)
    s = kc_errorf(t->ctx, KC_ERR_INVALID_ARG,
                  "%s: optimizer '%s' in __metadata__; this trainer "
                  "uses '%s'",
                  path, opt ? opt : "(none)", optim_name(t->o.optimizer));
  else if (!step || *end || end == step || steps < 0)
    s = kc_errorf(t->ctx, KC_ERR_INVALID_ARG, "%s: __metadata__ has no valid \"step\"", path);
  /* SGD's momentum buffers exist once a step ran (torch's momentum_buffer is None before) */
  bool mom = t->o.optimizer == KC_OPTIM_SGD && t->o.momentum != 0 && steps > 0;
  uint32_t want = 0;
  char name[4096];
  for (uint32_t i = 0; s == KC_OK && i < t->np; i++) {
    const kc_train_param *p = &t->params[i];
    const char *sfx[3] = {"", ".exp_avg", ".exp_avg_sq"};
    int ns = t->o.optimizer == KC_OPTIM_ADAMW ? 3 : 1;
    if (mom) sfx[1] = ".momentum_buffer", ns = 2;
    for (int k = 0; s == KC_OK && k < ns; k++) {
      snprintf(name, sizeof name, "%s%s", p->name, sfx[k]);
      const kc_st_entry *e = kc_st_find(&f, name);
      want++;
      if (!e)
        s = kc_errorf(t->ctx, KC_ERR_INVALID_ARG, "%s: no tensor '%s'", path, name);
      else
        s = check_entry(t, path, e, p);
    }
  }
  if (s == KC_OK && f.n != want) /* some tensor is none of the expected ones: name it */
    for (uint32_t k = 0; s == KC_OK && k < f.n; k++) {
      bool known = false;
      for (uint32_t i = 0; !known && i < t->np; i++) {
        size_t len = strlen(t->params[i].name);
        const char *rest = f.e[k].name + len;
        known = strncmp(f.e[k].name, t->params[i].name, len) == 0 &&
                (!*rest ||
                 (t->o.optimizer == KC_OPTIM_ADAMW &&
                  (!strcmp(rest, ".exp_avg") || !strcmp(rest, ".exp_avg_sq"))) ||
                 (mom && !strcmp(rest, ".momentum_buffer")));
      }
      if (!known)
        s = kc_errorf(t->ctx, KC_ERR_INVALID_ARG,
                      "%s: tensor '%s' is not a parameter or "
                      "optimizer state of this trainer",
                      path, f.e[k].name);
    }
  for (uint32_t i = 0; s == KC_OK && i < t->np; i++) {
    kc_optim_param *q = &t->optim[i];
    size_t nb = (size_t)q->n * sizeof(float);
    const char *sfx[3] = {"", ".exp_avg", ".exp_avg_sq"};
    float *arr[3] = {q->p, q->s1, q->s2};
    int ns = t->o.optimizer == KC_OPTIM_ADAMW ? 3 : mom ? 2 : 1;
    if (mom) sfx[1] = ".momentum_buffer";
    for (int k = 0; k < ns; k++) {
      snprintf(name, sizeof name, "%s%s", t->params[i].name, sfx[k]);
      memcpy(arr[k], kc_st_find(&f, name)->data, nb);
    }
    if (t->o.optimizer == KC_OPTIM_SGD && q->s1 && !mom) memset(q->s1, 0, nb);
  }
  if (s == KC_OK) {
    t->steps = steps;
    t->momentum_init = mom;
    t->nacc = 0;
  }
  kc_st_free(&f);
  return s;
}
