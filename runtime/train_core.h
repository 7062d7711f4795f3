/*
 * runtime/train_core.h - the graph-free part of a trainer (runtime/train_core.c), shared by the
 * JIT trainer (kc_trainer_*, runtime/train.c, whose step runs through kc_run) and the training
 * step of a model compiled ahead of time (NAME_train_*, runtime/train_aot.c, whose step runs
 * through the plan the .so holds), as runtime/session.c serves kc_session and NAME_session_*.
 *
 * The core owns the parameters' arrays (values, gradient sums, optimizer state: runtime/optim.c)
 * and does accumulate / apply / parameter access / safetensors save and load; running forward +
 * backward is a callback. Graph-free and LLVM-free: part of the runtime archive kernc_rt.
 *
 * Invariants: params[i] and optim[i] describe the same arrays; nacc counts the micro-batches in
 * the gradient sums (0: the sums hold nothing and the next accumulate overwrites them); the step
 * callback gets the caller's inputs, then every parameter under its name in parameter order, and
 * fills nout outputs, among them the loss (loss_out) and each parameter's gradient (grad_out);
 * a failed load changes nothing.
 */
#ifndef KERNC_RUNTIME_TRAIN_CORE_H
#define KERNC_RUNTIME_TRAIN_CORE_H

#include "kernc.h"
#include "runtime/optim.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct kc_train_param {
  char *name;
  int rank;
  int64_t dims[KC_MAX_RANK];
  uint32_t grad_out; /* index of NAME.grad among the step's outputs */
} kc_train_param;

/* Forward + backward of one micro-batch: nin inputs into nout outputs (kc_run's contract). */
typedef kc_status (*kc_train_run_fn)(void *arg, const kc_tensor_desc *in, uint32_t nin,
                                     kc_tensor_desc *out, uint32_t nout);

typedef struct kc_train_core {
  kc_context *ctx; /* errors go here (not owned) */
  kc_train_options o;
  kc_train_run_fn run;
  void *run_arg;
  kc_pool *(*pool)(void *run_arg); /* the step's thread pool for the optimizer (NULL: serial) */
  uint32_t np;
  kc_train_param *params;
  kc_optim_param *optim;
  kc_optim_set set; /* optim's units (kc_train_core_outputs makes them) */
  uint32_t loss_out, nout;
  kc_tensor_desc *outs;
  kc_tensor_desc *ins; /* the caller's inputs then the parameters */
  uint32_t cap_ins;
  int64_t nacc, steps;
  bool momentum_init;
  double norm;
} kc_train_core;

/* Room for up to cap parameters (o and ctx set first); KC_OK or KC_ERR_NOMEM (said). */
kc_status kc_train_core_init(kc_train_core *c, uint32_t cap);
/* Append a parameter: a copy of name, its dims, arrays for values (a copy of init, f32), the
 * gradient sum and the optimizer's state. */
kc_status kc_train_core_add(kc_train_core *c, const char *name, int rank, const int64_t *dims,
                            const float *init);
/* Room for the step's nout outputs, and the optimizer's units; after the last parameter. */
kc_status kc_train_core_outputs(kc_train_core *c, uint32_t nout);
/* Free what the core owns (not the struct, not ctx). */
void kc_train_core_release(kc_train_core *c);

/* kc_trainer_accumulate / _apply / _param / _save / _load (kernc.h) on the core. */
kc_status kc_train_core_accumulate(kc_train_core *c, const kc_tensor_desc *in, uint32_t nin,
                                   double *loss);
kc_status kc_train_core_apply(kc_train_core *c, double lr, int64_t step);
kc_status kc_train_core_param(kc_train_core *c, uint32_t i, kc_tensor_desc *out);
kc_status kc_train_core_save(kc_train_core *c, const char *path);
kc_status kc_train_core_load(kc_train_core *c, const char *path);

/* ---- the graph side (runtime/train.c; libkernc only, not the runtime archive) ---------------- */

/* The step graph of a trainer: a copy of model whose f32 weights matching one of the globs are
 * inputs of the same name (appended after the model's inputs, in node order; each one added to
 * c, which has ctx and o set, with the weight's value), with kc_grad's NAME.grad outputs of
 * `loss`. kc_trainer_new compiles it, kc_export_train exports it. */
kc_status kc_rt_train_graph(kc_train_core *c, const kc_graph *model, const char *loss, int nparams,
                            const char *const *params, kc_graph **out);
/* After the step graph g was compiled (its outputs final): c's loss_out, nout and each
 * parameter's grad_out. */
kc_status kc_rt_train_outputs(kc_train_core *c, const kc_graph *g, const char *loss);

#endif /* KERNC_RUNTIME_TRAIN_CORE_H */
