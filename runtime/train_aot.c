/*
 * runtime/train_aot.c - what the training entry points of a model compiled with --train call
 * (codegen/aot.h): NAME_train_new makes an instance of the step's plan through the library's own
 * NAME_create (so the CPU check runs first), a trainer core (runtime/train_core.c) with the
 * parameters' initial values the library embeds, and runs every micro-batch through NAME_run;
 * accumulate, apply, parameter access, save and load are the core's, as for kc_trainer.
 *
 * Part of the runtime archive kernc_rt: no graph, no LLVM. Each trainer has its own context for
 * its errors; a failed NAME_train_new leaves its message where NAME_train_error(NULL) reads it
 * (per thread, as NAME_error(NULL)).
 *
 * Invariants: the core's step callback gets the caller's d->ninputs inputs then the parameters,
 * exactly the plan's inputs in order (kc_export_train checked that order); outputs are copied
 * out of the instance's workspace by the core before the next run.
 */
#include "codegen/aot.h"
#include "ir/internal.h"
#include "runtime/executor.h"
#include "runtime/train_core.h"

#include <stdlib.h>
#include <string.h>

/* the C file of runtime/export_train.c declares the struct with these 22 words */
_Static_assert(sizeof(kc_plan_train) == 22 * 8, "kc_plan_train layout");
_Static_assert(sizeof(kc_aot_train_options) == 7 * 8, "kc_aot_train_options layout");

struct kc_aot_train {
  const kc_plan_train *d;
  kc_context *ctx;
  void *x; /* the plan's instance (NAME_create) */
  kc_train_core c;
};

static kc_status run_plan(void *arg, const kc_tensor_desc *in, uint32_t nin, kc_tensor_desc *out,
                          uint32_t nout) {
  kc_aot_train *t = arg;
  if ((int64_t)nin != t->d->ninputs + t->d->nparams || (int64_t)nout != t->d->noutputs)
    return kc_errorf(t->ctx, KC_ERR_INTERNAL, "%s_train: %u inputs and %u outputs for the step",
                     t->d->name, nin, nout);
  int rc = t->d->run(t->x, in, out);
  if (rc == 0) return KC_OK;
  return kc_errorf(t->ctx, (kc_status)rc, "%s", t->d->error(t->x));
}

/* The instance's pool (NAME_create's handle is the executor's kc_exec), for the optimizer. */
static kc_pool *plan_pool(void *arg) {
  kc_aot_train *t = arg;
  return t->x ? ((kc_exec *)t->x)->pool : NULL;
}

void kc_aot_train_free(kc_aot_train *t) {
  if (!t) return;
  kc_train_core_release(&t->c);
  if (t->x) t->d->free(t->x);
  kc_context_free(t->ctx);
  free(t);
}

static void options_of(const kc_aot_train_options *a, kc_train_options *o) {
  memset(o, 0, sizeof *o); /* the CPU target, no checkpointing */
  o->optimizer = (kc_optimizer)a->optimizer;
  o->beta1 = a->beta1;
  o->beta2 = a->beta2;
  o->eps = a->eps;
  o->weight_decay = a->weight_decay;
  o->momentum = a->momentum;
  o->clip_norm = a->clip_norm;
}

kc_aot_train *kc_aot_train_new(const kc_plan_train *d, int threads, const kc_aot_train_options *o) {
  kc_aot_train *t = calloc(1, sizeof *t);
  kc_context *ctx = kc_context_new();
  if (!t || !ctx) {
    free(t);
    kc_context_free(ctx);
    kc_aot_create_failed("out of memory");
    return NULL;
  }
  t->d = d;
  t->ctx = ctx;
  t->c.ctx = ctx;
  options_of(o ? o : &d->options, &t->c.o);
  t->c.run = run_plan;
  t->c.run_arg = t;
  t->c.pool = plan_pool;
  kc_status s = KC_OK;
  if (t->c.o.optimizer != KC_OPTIM_ADAMW && t->c.o.optimizer != KC_OPTIM_SGD)
    s = kc_errorf(ctx, KC_ERR_INVALID_ARG, "%s_train_new: unknown optimizer %d", d->name,
                  (int)t->c.o.optimizer);
  if (s == KC_OK && !(t->x = d->create(threads))) {
    /* NAME_create left why where kc_aot_create_error (NAME_train_error(NULL)) reads it */
    kc_aot_train_free(t);
    return NULL;
  }
  if (s == KC_OK) s = kc_train_core_init(&t->c, (uint32_t)d->nparams);
  for (int64_t i = 0; s == KC_OK && i < d->nparams; i++)
    s = kc_train_core_add(&t->c, d->param_names[i], (int)d->param_rank[i],
                          &d->param_dims[i * KC_MAX_RANK],
                          (const float *)(const void *)(d->init + d->param_offset[i]));
  if (s == KC_OK) s = kc_train_core_outputs(&t->c, (uint32_t)d->noutputs);
  for (int64_t i = 0; s == KC_OK && i < d->nparams; i++)
    t->c.params[i].grad_out = (uint32_t)d->param_grad_out[i];
  t->c.loss_out = (uint32_t)d->loss_out;
  if (s != KC_OK) {
    kc_aot_create_failed(kc_last_error(ctx));
    kc_aot_train_free(t);
    return NULL;
  }
  return t;
}

int kc_aot_train_accumulate(kc_aot_train *t, const kc_tensor_desc *in, double *loss) {
  if (!t) return KC_ERR_INVALID_ARG;
  kc_clear_error(t->ctx);
  if (t->d->ninputs && !in)
    return kc_errorf(t->ctx, KC_ERR_INVALID_ARG, "%s_train: inputs is NULL", t->d->name);
  return kc_train_core_accumulate(&t->c, in, (uint32_t)t->d->ninputs, loss);
}

int kc_aot_train_apply(kc_aot_train *t, double lr, int64_t step) {
  if (!t) return KC_ERR_INVALID_ARG;
  kc_clear_error(t->ctx);
  return kc_train_core_apply(&t->c, lr, step);
}

int kc_aot_train_step(kc_aot_train *t, const kc_tensor_desc *in, double lr, int64_t step,
                      double *loss) {
  int rc = kc_aot_train_accumulate(t, in, loss);
  return rc == 0 ? kc_aot_train_apply(t, lr, step) : rc;
}

int64_t kc_aot_train_num_params(const kc_aot_train *t) { return t ? t->c.np : 0; }

int kc_aot_train_param(kc_aot_train *t, int64_t i, const char **name, float **data,
                       int64_t *numel) {
  if (!t) return KC_ERR_INVALID_ARG;
  kc_clear_error(t->ctx);
  kc_tensor_desc p;
  kc_status s = i < 0 || i > UINT32_MAX
                    ? kc_errorf(t->ctx, KC_ERR_INVALID_ARG, "%s_train_param: parameter %lld of %u",
                                t->d->name, (long long)i, t->c.np)
                    : kc_train_core_param(&t->c, (uint32_t)i, &p);
  if (s != KC_OK) return s;
  if (name) *name = p.name;
  if (data) *data = p.data;
  if (numel) *numel = t->c.optim[i].n;
  return 0;
}

int kc_aot_train_save(kc_aot_train *t, const char *path) {
  if (!t) return KC_ERR_INVALID_ARG;
  kc_clear_error(t->ctx);
  return kc_train_core_save(&t->c, path);
}

int kc_aot_train_load(kc_aot_train *t, const char *path) {
  if (!t) return KC_ERR_INVALID_ARG;
  kc_clear_error(t->ctx);
  return kc_train_core_load(&t->c, path);
}

const char *kc_aot_train_error(const kc_aot_train *t) {
  if (t) return kc_last_error(t->ctx);
  const char *why = kc_aot_create_error();
  return why[0] ? why : "no trainer";
}
