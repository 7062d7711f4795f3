/*
 * runtime/train.c - training steps on the CPU target (kc_trainer_* of kernc.h).
 *
 * kc_trainer_new copies the model, turns every weight a parameter glob selects into a graph
 * input of the same name (kc_graph_weights_to_inputs; its value copied into a trainer-owned
 * buffer), appends the backward
 * graph (kc_grad) and compiles forward + backward as one module, so one memory plan covers the
 * whole step. Each step passes the live parameter buffers as inputs (the executor reads inputs in
 * place, never copies them) and adds the "NAME.grad" outputs into the gradient sums; apply runs
 * runtime/optim.c on the trainer's arrays (on the module's thread pool) and runtime/safetensors.c
 * saves and loads them. Only construction touches a graph; the step itself is graph-free.
 *
 * Invariants: params[i] and optim[i] describe the same arrays; nacc counts the micro-batches in
 * the gradient sums (0: the sums hold nothing and the next accumulate overwrites them); a failed
 * load or write-back changes nothing.
 */
#include "runtime/internal.h"
#include "runtime/optim.h"
#include "runtime/safetensors.h"

#include <fnmatch.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct tparam {
  char *name;
  int rank;
  int64_t dims[KC_MAX_RANK];
  uint32_t grad_out; /* index of NAME.grad among the module's outputs */
} tparam;

struct kc_trainer {
  kc_context *ctx;
  kc_train_options o;
  kc_module *m;
  uint32_t np;
  tparam *params;
  kc_optim_param *optim;
  kc_optim_set set; /* optim's units, for the module's thread pool */
  uint32_t loss_out, nout;
  kc_tensor_desc *outs;
  kc_tensor_desc *ins; /* the caller's inputs then the parameters */
  uint32_t cap_ins;
  int64_t nacc, steps;
  bool momentum_init;
  double norm;
};

void kc_train_defaults(kc_train_options *o) {
  memset(o, 0, sizeof *o);
  o->optimizer = KC_OPTIM_ADAMW;
  o->beta1 = 0.9;
  o->beta2 = 0.999;
  o->eps = 1e-8;
  o->weight_decay = 0.01;
}

void kc_trainer_free(kc_trainer *t) {
  if (!t) return;
  kc_module_free(t->m);
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
  free(t);
}

/* fnmatch pattern matching exactly s (glob characters escaped), malloc'd. */
static char *escape_glob(const char *s) {
  char *p = malloc(2 * strlen(s) + 1), *q = p;
  if (!p) return NULL;
  for (; *s; s++) {
    if (strchr("*?[]\\", *s)) *q++ = '\\';
    *q++ = *s;
  }
  *q = 0;
  return p;
}

/* Turn the weights of g matching a glob into inputs (kc_graph_weights_to_inputs); record them in
 * t with their initial values. */
static kc_status take_params(kc_trainer *t, kc_graph *g, int nglob, const char *const *globs) {
  for (int k = 0; k < nglob; k++) { /* a glob matching nothing is the caller's mistake */
    bool hit = false;
    for (uint32_t ni = 0; !hit && ni < g->nnodes; ni++) {
      const kc_node *nd = &g->nodes[ni];
      const char *name = nd->op == KC_OP_WEIGHT ? kc_node_string(nd, "name", NULL) : NULL;
      hit = name && kc_dtype_is_float(kc_value_of(g, nd->out[0])->dtype) &&
            fnmatch(globs[k], name, 0) == 0;
    }
    if (!hit)
      return kc_errorf(t->ctx, KC_ERR_INVALID_ARG,
                       "trainer: parameter pattern '%s' matches no float weight of the model",
                       globs[k]);
  }
  uint32_t first = g->ninputs, n = 0;
  kc_status s = kc_graph_weights_to_inputs(g, nglob, globs, &n);
  if (s != KC_OK) return s;
  t->params = calloc((size_t)n + 1, sizeof *t->params);
  t->optim = calloc((size_t)n + 1, sizeof *t->optim);
  if (!t->params || !t->optim) return kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
  for (uint32_t i = first; i < first + n; i++) {
    const char *name = kc_graph_input_name(g, i);
    kc_tensor *w = (kc_tensor *)kc_graph_weight_data(g, name);
    if (!w || w->dtype != KC_F32)
      return kc_errorf(t->ctx, KC_ERR_UNSUPPORTED,
                       "trainer: parameter '%s' is %s; training "
                       "updates f32 parameters only",
                       name, kc_dtype_name(w ? w->dtype : KC_DT_NONE));
    if (!w->data)
      return kc_errorf(t->ctx, KC_ERR_INVALID_ARG, "trainer: weight '%s' has no data", name);
    tparam *p = &t->params[t->np];
    kc_optim_param *q = &t->optim[t->np];
    int64_t cnt = 1;
    for (int d = 0; d < w->rank; d++)
      cnt *= w->dims[d];
    t->np++;
    p->name = strdup(name);
    p->rank = w->rank;
    memcpy(p->dims, w->dims, sizeof p->dims);
    q->n = cnt;
    size_t nb = (size_t)(cnt ? cnt : 1) * sizeof(float);
    q->p = malloc(nb);
    q->grad = malloc(nb);
    if (t->o.optimizer == KC_OPTIM_ADAMW) {
      q->s1 = calloc(1, nb);
      q->s2 = calloc(1, nb);
    } else if (t->o.momentum != 0) {
      q->s1 = calloc(1, nb);
    }
    bool state_ok = t->o.optimizer == KC_OPTIM_ADAMW ? q->s1 && q->s2 : t->o.momentum == 0 || q->s1;
    if (!p->name || !q->p || !q->grad || !state_ok)
      return kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory for '%s'", name);
    memcpy(q->p, w->data, (size_t)cnt * sizeof(float));
    /* the clone borrows the model's data: forget it here, so kc_compile does not copy a weight
     * that is now an input */
    w->data = NULL;
  }
  return KC_OK;
}

/* After compiling: where the loss and each NAME.grad are among the module's outputs. */
static kc_status find_outputs(kc_trainer *t, const char *loss) {
  const kc_graph *g = kc_module_graph(t->m);
  t->nout = kc_graph_num_outputs(g);
  t->outs = calloc(t->nout + 1, sizeof *t->outs);
  if (!t->outs) return kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
  t->loss_out = UINT32_MAX;
  for (uint32_t k = 0; k < t->nout; k++)
    if (strcmp(kc_graph_output_name(g, k), loss) == 0) t->loss_out = k;
  if (t->loss_out == UINT32_MAX)
    return kc_errorf(t->ctx, KC_ERR_INTERNAL, "trainer: the loss output '%s' is gone", loss);
  kc_dtype lt = kc_val_dtype(g, kc_graph_output(g, t->loss_out));
  if (lt != KC_F32 && lt != KC_F64)
    return kc_errorf(t->ctx, KC_ERR_UNSUPPORTED,
                     "trainer: the loss '%s' is %s; f32 or f64 "
                     "needed",
                     loss, kc_dtype_name(lt));
  for (uint32_t i = 0; i < t->np; i++) {
    size_t len = strlen(t->params[i].name);
    t->params[i].grad_out = UINT32_MAX;
    for (uint32_t k = 0; k < t->nout; k++) {
      const char *on = kc_graph_output_name(g, k);
      if (strncmp(on, t->params[i].name, len) == 0 && strcmp(on + len, ".grad") == 0)
        t->params[i].grad_out = k;
    }
    if (t->params[i].grad_out == UINT32_MAX)
      return kc_errorf(t->ctx, KC_ERR_INTERNAL, "trainer: no gradient output for '%s'",
                       t->params[i].name);
  }
  return KC_OK;
}

kc_status kc_trainer_new(kc_context *ctx, const kc_graph *model, const char *loss, int nparams,
                         const char *const *params, const kc_train_options *o, kc_trainer **out) {
  *out = NULL;
  if (!model || !loss || nparams <= 0 || !params)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "trainer: needs a model, a loss output name and parameter patterns");
  kc_train_options def;
  if (!o) {
    kc_train_defaults(&def);
    o = &def;
  }
  if (o->optimizer != KC_OPTIM_ADAMW && o->optimizer != KC_OPTIM_SGD)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "trainer: unknown optimizer %d", (int)o->optimizer);
  kc_trainer *t = calloc(1, sizeof *t);
  if (!t) return kc_errorf(ctx, KC_ERR_NOMEM, "trainer: out of memory");
  t->ctx = ctx;
  t->o = *o;
  t->o.marked = NULL;
  kc_graph *g = kc_graph_clone(model, true);
  kc_status s = g ? KC_OK : kc_errorf(ctx, KC_ERR_NOMEM, "trainer: out of memory");
  if (s == KC_OK) s = take_params(t, g, nparams, params);
  char **esc = s == KC_OK ? calloc(t->np, sizeof *esc) : NULL;
  if (s == KC_OK && !esc) s = kc_errorf(ctx, KC_ERR_NOMEM, "trainer: out of memory");
  for (uint32_t i = 0; s == KC_OK && i < t->np; i++)
    if (!(esc[i] = escape_glob(t->params[i].name)))
      s = kc_errorf(ctx, KC_ERR_NOMEM, "trainer: out of memory");
  kc_grad_options go = {.checkpoint = o->checkpoint, .nmarked = o->nmarked, .marked = o->marked};
  if (s == KC_OK) s = kc_grad_ex(g, loss, (int)t->np, (const char *const *)esc, &go);
  for (uint32_t i = 0; esc && i < t->np; i++)
    free(esc[i]);
  free(esc);
  kc_compile_options co = {.target = o->target, .threads = o->threads};
  if (s == KC_OK) s = kc_compile(ctx, g, &co, &t->m);
  kc_graph_free(g);
  if (s == KC_OK) s = find_outputs(t, loss);
  if (s == KC_OK && !kc_optim_set_init(&t->set, t->optim, t->np))
    s = kc_errorf(ctx, KC_ERR_NOMEM, "trainer: out of memory");
  if (s != KC_OK) {
    kc_trainer_free(t);
    return s;
  }
  *out = t;
  return KC_OK;
}

kc_status kc_trainer_accumulate(kc_trainer *t, const kc_tensor_desc *in, uint32_t nin,
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
  kc_status s = kc_run(t->m, t->ins, nin + t->np, t->outs, t->nout);
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

kc_status kc_trainer_apply(kc_trainer *t, double lr, int64_t step) {
  if (t->nacc == 0)
    return kc_errorf(t->ctx, KC_ERR_INVALID_ARG,
                     "trainer: apply without a micro-batch accumulated since the last apply");
  if (step < 1)
    return kc_errorf(t->ctx, KC_ERR_INVALID_ARG,
                     "trainer: step %lld is not "
                     "1-based",
                     (long long)step);
  /* the module's pool when no run holds it (results are the same either way) */
  kc_pool *pool = t->m->x ? t->m->x->pool : NULL;
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

kc_status kc_trainer_step(kc_trainer *t, const kc_tensor_desc *in, uint32_t nin, double lr,
                          int64_t step, double *loss) {
  kc_status s = kc_trainer_accumulate(t, in, nin, loss);
  return s == KC_OK ? kc_trainer_apply(t, lr, step) : s;
}

uint32_t kc_trainer_num_params(const kc_trainer *t) { return t->np; }

kc_status kc_trainer_param(kc_trainer *t, uint32_t i, kc_tensor_desc *out) {
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

double kc_trainer_grad_norm(const kc_trainer *t) { return t->norm; }
int64_t kc_trainer_steps(const kc_trainer *t) { return t->steps; }
kc_module *kc_trainer_module(const kc_trainer *t) { return t->m; }

/* ---- checkpoints ------------------------------------------------------------------------- */

static const char *optim_name(kc_optimizer k) { return k == KC_OPTIM_ADAMW ? "adamw" : "sgd"; }

/* The state tensors of a parameter: suffixes and arrays (AdamW: 2, SGD with momentum: 1). */
static int state_of(const kc_trainer *t, uint32_t i, const char **sfx, float **arr) {
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

kc_status kc_trainer_save(kc_trainer *t, const char *path) {
  uint32_t cap = 3 * t->np, n = 0;
  kc_st_tensor *ts = calloc(cap, sizeof *ts);
  char **names = calloc(cap, sizeof *names);
  kc_status s = ts && names ? KC_OK : kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
  for (uint32_t i = 0; s == KC_OK && i < t->np; i++) {
    const tparam *p = &t->params[i];
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
static kc_status check_entry(kc_trainer *t, const char *path, const kc_st_entry *e,
                             const tparam *p) {
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

kc_status kc_trainer_load(kc_trainer *t, const char *path) {
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
    const tparam *p = &t->params[i];
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

kc_status kc_trainer_write_weights(const kc_trainer *t, kc_graph *g) {
  kc_tensor **w = calloc(t->np + 1, sizeof *w);
  if (!w) return kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
  kc_status s = KC_OK;
  for (uint32_t i = 0; s == KC_OK && i < t->np; i++) {
    const tparam *p = &t->params[i];
    w[i] = (kc_tensor *)kc_graph_weight_data(g, p->name);
    bool ok = w[i] && w[i]->dtype == KC_F32 && w[i]->rank == p->rank;
    for (int d = 0; ok && d < p->rank; d++)
      ok = w[i]->dims[d] == p->dims[d];
    if (!ok)
      s = kc_errorf(t->ctx, KC_ERR_INVALID_ARG,
                    "write weights: the graph has no f32 weight '%s' "
                    "of the parameter's shape",
                    p->name);
  }
  for (uint32_t i = 0; s == KC_OK && i < t->np; i++) {
    /* new arena data rather than writing through: the old data may be borrowed */
    void *d = kc_arena_memdup(&g->arena, t->optim[i].p, (size_t)t->optim[i].n * sizeof(float));
    if (!d && t->optim[i].n) {
      s = kc_errorf(t->ctx, KC_ERR_NOMEM, "write weights: out of memory");
      break;
    }
    w[i]->data = d;
  }
  free(w);
  return s;
}
