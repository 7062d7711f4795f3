/*
 * runtime/optim.h - the optimizer step of training, graph-free (runtime/optim.c): gradient
 * accumulation, the global norm and clipping, AdamW and SGD updates, over plain f32 arrays, so
 * that the JIT trainer (runtime/train.c) and a compiled train step can share it.
 *
 * The work is cut into fixed units (KC_OPTIM_UNIT elements of one parameter) that a thread pool
 * may run in any order on any thread. Invariants: results depend only on the inputs, never on
 * the thread count (the norm is summed in double per unit, then over the units in order); the
 * semantics are PyTorch's (torch.optim.AdamW, torch.optim.SGD, torch.nn.utils.clip_grad_norm_)
 * as stated at each function.
 */
#ifndef KERNC_RUNTIME_OPTIM_H
#define KERNC_RUNTIME_OPTIM_H

#include "kernc.h"
#include "runtime/runtime.h"

#include <stdbool.h>
#include <stdint.h>

#define KC_OPTIM_UNIT 16384

/* One parameter's arrays: its values, its gradient (sum), and optimizer state (AdamW: s1 =
 * exp_avg, s2 = exp_avg_sq; SGD: s1 = momentum buffer, s2 unused; NULL when absent). */
typedef struct kc_optim_param {
  float *p, *grad, *s1, *s2;
  int64_t n;
} kc_optim_param;

/* The parameters and their units; pool: a pool the caller has claimed for the next calls, or
 * NULL (serial). */
typedef struct kc_optim_set {
  kc_optim_param *ps;
  uint32_t np;
  int64_t nunits;
  uint32_t *unit_param;
  int64_t *unit_off;
  double *partial; /* per unit: its sum of squares */
  kc_pool *pool;
} kc_optim_set;

/* Cut ps[0..np) into units; false when out of memory. */
bool kc_optim_set_init(kc_optim_set *s, kc_optim_param *ps, uint32_t np);
void kc_optim_set_free(kc_optim_set *s);

/* acc = g (first) or acc += g. */
void kc_optim_accumulate(float *acc, const float *g, int64_t n, bool first);
/* Multiply every gradient by scale (skipped when 1), then return their global L2 norm. */
double kc_optim_scale_norm(kc_optim_set *s, double scale);
/* clip_grad_norm_: coefficient max / (norm + 1e-6), applied when below 1. */
void kc_optim_clip(kc_optim_set *s, double norm, double max);
/*
 * One update of every parameter with learning rate lr at 1-based step `step` (AdamW: bias
 * correction 1 - beta^step). SGD with momentum: the buffers are set to the gradient when
 * momentum_init is false (torch's first step), else buf = m*buf + g.
 */
void kc_optim_update(kc_optim_set *s, const kc_train_options *o, double lr, int64_t step,
                     bool momentum_init);

#endif /* KERNC_RUNTIME_OPTIM_H */
