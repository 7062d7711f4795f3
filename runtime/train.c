/*
 * runtime/train.c - training steps on the CPU target (kc_trainer_* of kernc.h).
 *
 * kc_trainer_new copies the model, turns every weight a parameter glob selects into a graph
 * input of the same name (kc_graph_weights_to_inputs; its value copied into a trainer-owned
 * buffer), appends the backward graph (kc_grad) and compiles forward + backward as one module, so
 * one memory plan covers the whole step. Each step passes the live parameter buffers as inputs (the
 * executor reads inputs in place, never copies them) and adds the "NAME.grad" outputs into the
 * gradient sums; accumulate, apply (on the module's thread pool), parameter access, save and load
 * are the graph-free core's (runtime/train_core.c). Only construction touches a graph; the step
 * itself is graph-free.
 *
 * Invariants: the core's (runtime/train_core.h); the step graph is built in one place
 * (kc_rt_train_graph), so the JIT trainer and an exported step differentiate the same graph; a
 * failed write-back changes nothing.
 */
#include "runtime/internal.h"
#include "runtime/train_core.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

struct kc_trainer {
  kc_train_core c;
  kc_module *m;
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
  kc_train_core_release(&t->c);
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
static kc_status take_params(kc_train_core *t, kc_graph *g, int nglob, const char *const *globs) {
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
  if (s == KC_OK) s = kc_train_core_init(t, n);
  for (uint32_t i = first; s == KC_OK && i < first + n; i++) {
    const char *name = kc_graph_input_name(g, i);
    kc_tensor *w = (kc_tensor *)kc_graph_weight_data(g, name);
    if (!w || w->dtype != KC_F32)
      return kc_errorf(t->ctx, KC_ERR_UNSUPPORTED,
                       "trainer: parameter '%s' is %s; training updates f32 parameters only", name,
                       kc_dtype_name(w ? w->dtype : KC_DT_NONE));
    if (!w->data)
      return kc_errorf(t->ctx, KC_ERR_INVALID_ARG, "trainer: weight '%s' has no data", name);
    s = kc_train_core_add(t, name, w->rank, w->dims, w->data);
    /* the clone borrows the model's data: forget it here, so kc_compile does not copy a weight
     * that is now an input */
    w->data = NULL;
  }
  if (s == KC_OK && t->np == 0)
    s = kc_errorf(t->ctx, KC_ERR_INVALID_ARG, "trainer: no parameters to train");
  return s;
}

kc_status kc_rt_train_outputs(kc_train_core *t, const kc_graph *g, const char *loss) {
  kc_status s0 = kc_train_core_outputs(t, kc_graph_num_outputs(g));
  if (s0 != KC_OK) return s0;
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

kc_status kc_rt_train_graph(kc_train_core *t, const kc_graph *model, const char *loss, int nparams,
                            const char *const *params, kc_graph **out) {
  *out = NULL;
  kc_context *ctx = t->ctx;
  if (!model || !loss || nparams <= 0 || !params)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "trainer: needs a model, a loss output name and parameter patterns");
  if (t->o.optimizer != KC_OPTIM_ADAMW && t->o.optimizer != KC_OPTIM_SGD)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "trainer: unknown optimizer %d", (int)t->o.optimizer);
  kc_graph *g = kc_graph_clone(model, true);
  kc_status s = g ? KC_OK : kc_errorf(ctx, KC_ERR_NOMEM, "trainer: out of memory");
  if (s == KC_OK) s = take_params(t, g, nparams, params);
  char **esc = s == KC_OK ? calloc(t->np, sizeof *esc) : NULL;
  if (s == KC_OK && !esc) s = kc_errorf(ctx, KC_ERR_NOMEM, "trainer: out of memory");
  for (uint32_t i = 0; s == KC_OK && i < t->np; i++)
    if (!(esc[i] = escape_glob(t->params[i].name)))
      s = kc_errorf(ctx, KC_ERR_NOMEM, "trainer: out of memory");
  kc_grad_options go = {
      .checkpoint = t->o.checkpoint, .nmarked = t->o.nmarked, .marked = t->o.marked};
  if (s == KC_OK) s = kc_grad_ex(g, loss, (int)t->np, (const char *const *)esc, &go);
  for (uint32_t i = 0; esc && i < t->np; i++)
    free(esc[i]);
  free(esc);
  if (s != KC_OK) {
    kc_graph_free(g);
    return s;
  }
  *out = g;
  return KC_OK;
}

static kc_status run_module(void *m, const kc_tensor_desc *in, uint32_t nin, kc_tensor_desc *out,
                            uint32_t nout) {
  return kc_run(m, in, nin, out, nout);
}

/* The module's pool, for the optimizer's units when no run holds it. */
static kc_pool *module_pool(void *m) {
  kc_module *mod = m;
  return mod->x ? mod->x->pool : NULL;
}

kc_status kc_trainer_new(kc_context *ctx, const kc_graph *model, const char *loss, int nparams,
                         const char *const *params, const kc_train_options *o, kc_trainer **out) {
  kc_clear_error(ctx);
  *out = NULL;
  kc_train_options def;
  if (!o) {
    kc_train_defaults(&def);
    o = &def;
  }
  kc_trainer *t = calloc(1, sizeof *t);
  if (!t) return kc_errorf(ctx, KC_ERR_NOMEM, "trainer: out of memory");
  t->c.ctx = ctx;
  t->c.o = *o;
  t->c.run = run_module;
  t->c.pool = module_pool;
  kc_graph *g = NULL;
  kc_status s = kc_rt_train_graph(&t->c, model, loss, nparams, params, &g);
  kc_compile_options co = {.target = o->target, .threads = o->threads};
  if (s == KC_OK) s = kc_compile(ctx, g, &co, &t->m);
  kc_graph_free(g);
  t->c.o.marked = NULL; /* the caller's: kc_grad_ex has read them */
  t->c.run_arg = t->m;
  if (s == KC_OK) s = kc_rt_train_outputs(&t->c, kc_module_graph(t->m), loss);
  if (s != KC_OK) {
    kc_trainer_free(t);
    return s;
  }
  *out = t;
  return KC_OK;
}

kc_status kc_trainer_accumulate(kc_trainer *t, const kc_tensor_desc *in, uint32_t nin,
                                double *loss) {
  kc_clear_error(t->c.ctx);
  return kc_train_core_accumulate(&t->c, in, nin, loss);
}

kc_status kc_trainer_apply(kc_trainer *t, double lr, int64_t step) {
  kc_clear_error(t->c.ctx);
  return kc_train_core_apply(&t->c, lr, step);
}

kc_status kc_trainer_step(kc_trainer *t, const kc_tensor_desc *in, uint32_t nin, double lr,
                          int64_t step, double *loss) {
  kc_status s = kc_trainer_accumulate(t, in, nin, loss);
  return s == KC_OK ? kc_trainer_apply(t, lr, step) : s;
}

uint32_t kc_trainer_num_params(const kc_trainer *t) { return t->c.np; }

kc_status kc_trainer_param(kc_trainer *t, uint32_t i, kc_tensor_desc *out) {
  kc_clear_error(t->c.ctx);
  return kc_train_core_param(&t->c, i, out);
}

double kc_trainer_grad_norm(const kc_trainer *t) { return t->c.norm; }
int64_t kc_trainer_steps(const kc_trainer *t) { return t->c.steps; }
kc_module *kc_trainer_module(const kc_trainer *t) { return t->m; }
kc_status kc_trainer_save(kc_trainer *t, const char *path) {
  kc_clear_error(t->c.ctx);
  return kc_train_core_save(&t->c, path);
}
kc_status kc_trainer_load(kc_trainer *t, const char *path) {
  kc_clear_error(t->c.ctx);
  return kc_train_core_load(&t->c, path);
}

kc_status kc_trainer_write_weights(const kc_trainer *tr, kc_graph *g) {
  const kc_train_core *t = &tr->c;
  kc_clear_error(t->ctx);
  kc_tensor **w = calloc(t->np + 1, sizeof *w);
  if (!w) return kc_errorf(t->ctx, KC_ERR_NOMEM, "trainer: out of memory");
  kc_status s = KC_OK;
  for (uint32_t i = 0; s == KC_OK && i < t->np; i++) {
    const kc_train_param *p = &t->params[i];
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
