/*
 * runtime/optim.c - optimizer, clipping and accumulation loops of training (runtime/optim.h).
 *
 * Plain loops over f32 arrays that the C compiler vectorizes; the arithmetic follows PyTorch's
 * single-tensor (non-foreach) implementations in f32 with the per-step scalars computed in
 * double, so a twin written with torch.optim follows the same trajectory. Serial on purpose: the
 * update is a few passes over the parameters, cheap beside the forward and backward kernels,
 * and results must not depend on the thread count.
 */
#include "runtime/optim.h"

#include <math.h>

void kc_optim_accumulate(float *acc, const float *g, int64_t n, bool first) {
  if (first)
    for (int64_t i = 0; i < n; i++)
      acc[i] = g[i];
  else
    for (int64_t i = 0; i < n; i++)
      acc[i] += g[i];
}

double kc_optim_scale_norm(kc_optim_param *ps, uint32_t np, double scale) {
  double total = 0;
  float s = (float)scale;
  for (uint32_t k = 0; k < np; k++) {
    float *g = ps[k].grad;
    if (scale != 1)
      for (int64_t i = 0; i < ps[k].n; i++)
        g[i] *= s;
    double sum = 0;
    for (int64_t i = 0; i < ps[k].n; i++)
      sum += (double)g[i] * g[i];
    total += sum;
  }
  return sqrt(total);
}

void kc_optim_clip(kc_optim_param *ps, uint32_t np, double norm, double max) {
  double coef = max / (norm + 1e-6);
  if (coef >= 1) return; /* torch clamps the coefficient at 1: multiplying by 1 changes nothing */
  float c = (float)coef;
  for (uint32_t k = 0; k < np; k++)
    for (int64_t i = 0; i < ps[k].n; i++)
      ps[k].grad[i] *= c;
}

/* torch.optim.AdamW: p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
 * p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). */
static void adamw(const kc_train_options *o, kc_optim_param *q, double lr, int64_t step) {
  float decay = (float)(1 - lr * o->weight_decay), b1 = (float)o->beta1, b2 = (float)o->beta2;
  float c1 = (float)(1 - o->beta1), c2 = (float)(1 - o->beta2), eps = (float)o->eps;
  float step_size = (float)(lr / (1 - pow(o->beta1, (double)step)));
  float bc2_sqrt = (float)sqrt(1 - pow(o->beta2, (double)step));
  float *p = q->p, *m = q->s1, *v = q->s2;
  const float *g = q->grad;
  for (int64_t i = 0; i < q->n; i++) {
    p[i] *= decay;
    m[i] = m[i] * b1 + g[i] * c1;
    v[i] = v[i] * b2 + g[i] * g[i] * c2;
    float denom = sqrtf(v[i]) / bc2_sqrt + eps;
    p[i] += -step_size * (m[i] / denom);
  }
}

/* torch.optim.SGD (dampening 0, not nesterov): g += wd*p; buf = g first, else m*buf + g;
 * p -= lr*buf. */
static void sgd(const kc_train_options *o, kc_optim_param *q, double lr, bool momentum_init) {
  float wd = (float)o->weight_decay, mom = (float)o->momentum, mlr = (float)-lr;
  float *p = q->p, *buf = q->s1;
  const float *g = q->grad;
  for (int64_t i = 0; i < q->n; i++) {
    float d = o->weight_decay != 0 ? g[i] + wd * p[i] : g[i];
    if (buf) {
      buf[i] = momentum_init ? buf[i] * mom + d : d;
      d = buf[i];
    }
    p[i] += mlr * d;
  }
}

void kc_optim_update(const kc_train_options *o, kc_optim_param *ps, uint32_t np, double lr,
                     int64_t step, bool momentum_init) {
  for (uint32_t k = 0; k < np; k++) {
    if (o->optimizer == KC_OPTIM_ADAMW)
      adamw(o, &ps[k], lr, step);
    else
      sgd(o, &ps[k], lr, momentum_init);
  }
}
