/*
 * runtime/optim.c - optimizer, clipping and accumulation loops of training (runtime/optim.h).
 *
 * Plain loops over f32 arrays that the C compiler vectorizes; the arithmetic follows PyTorch's
 * single-tensor (non-foreach) implementations in f32 with the per-step scalars computed in
 * double, so a twin written with torch.optim follows the same trajectory. Every loop is
 * elementwise, so running units on several threads changes no bit; the one reduction (the norm)
 * keeps a sum per unit and adds them in unit order.
 */
#include "runtime/optim.h"

#include <math.h>
#include <stdlib.h>

bool kc_optim_set_init(kc_optim_set *s, kc_optim_param *ps, uint32_t np) {
  *s = (kc_optim_set){.ps = ps, .np = np};
  for (uint32_t k = 0; k < np; k++)
    s->nunits += (ps[k].n + KC_OPTIM_UNIT - 1) / KC_OPTIM_UNIT;
  size_t n = (size_t)s->nunits + 1;
  s->unit_param = malloc(n * sizeof *s->unit_param);
  s->unit_off = malloc(n * sizeof *s->unit_off);
  s->partial = malloc(n * sizeof *s->partial);
  if (!s->unit_param || !s->unit_off || !s->partial) {
    kc_optim_set_free(s);
    return false;
  }
  int64_t u = 0;
  for (uint32_t k = 0; k < np; k++)
    for (int64_t off = 0; off < ps[k].n; off += KC_OPTIM_UNIT, u++) {
      s->unit_param[u] = k;
      s->unit_off[u] = off;
    }
  return true;
}

void kc_optim_set_free(kc_optim_set *s) {
  free(s->unit_param);
  free(s->unit_off);
  free(s->partial);
  s->unit_param = NULL;
  s->unit_off = NULL;
  s->partial = NULL;
}

void kc_optim_accumulate(float *acc, const float *g, int64_t n, bool first) {
  if (first)
    for (int64_t i = 0; i < n; i++)
      acc[i] = g[i];
  else
    for (int64_t i = 0; i < n; i++)
      acc[i] += g[i];
}

enum { OP_SCALE_NORM, OP_CLIP, OP_UPDATE };

typedef struct task {
  kc_optim_set *s;
  int op;
  float scale; /* OP_SCALE_NORM: the factor (1: none); OP_CLIP: the coefficient */
  const kc_train_options *o;
  double lr;
  int64_t step;
  bool momentum_init;
} task;

/* torch.optim.AdamW: p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
 * p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). */
static void adamw(const task *t, kc_optim_param *q, int64_t lo, int64_t hi) {
  const kc_train_options *o = t->o;
  float decay = (float)(1 - t->lr * o->weight_decay), b1 = (float)o->beta1, b2 = (float)o->beta2;
  float c1 = (float)(1 - o->beta1), c2 = (float)(1 - o->beta2), eps = (float)o->eps;
  float step_size = (float)(t->lr / (1 - pow(o->beta1, (double)t->step)));
  float bc2_sqrt = (float)sqrt(1 - pow(o->beta2, (double)t->step));
  float *p = q->p, *m = q->s1, *v = q->s2;
  const float *g = q->grad;
  for (int64_t i = lo; i < hi; i++) {
    p[i] *= decay;
    m[i] = m[i] * b1 + g[i] * c1;
    v[i] = v[i] * b2 + g[i] * g[i] * c2;
    float denom = sqrtf(v[i]) / bc2_sqrt + eps;
    p[i] += -step_size * (m[i] / denom);
  }
}

/* torch.optim.SGD (dampening 0, not nesterov): g += wd*p; buf = g first, else m*buf + g;
 * p -= lr*buf. */
static void sgd(const task *t, kc_optim_param *q, int64_t lo, int64_t hi) {
  const kc_train_options *o = t->o;
  float wd = (float)o->weight_decay, mom = (float)o->momentum, mlr = (float)-t->lr;
  float *p = q->p, *buf = q->s1;
  const float *g = q->grad;
  for (int64_t i = lo; i < hi; i++) {
    float d = o->weight_decay != 0 ? g[i] + wd * p[i] : g[i];
    if (buf) {
      buf[i] = t->momentum_init ? buf[i] * mom + d : d;
      d = buf[i];
    }
    p[i] += mlr * d;
  }
}

static void run_units(void *arg, int64_t begin, int64_t end, int thread) {
  (void)thread;
  const task *t = arg;
  kc_optim_set *s = t->s;
  for (int64_t u = begin; u < end; u++) {
    kc_optim_param *q = &s->ps[s->unit_param[u]];
    int64_t lo = s->unit_off[u], hi = lo + KC_OPTIM_UNIT < q->n ? lo + KC_OPTIM_UNIT : q->n;
    float *g = q->grad;
    if (t->op == OP_SCALE_NORM) {
      if (t->scale != 1)
        for (int64_t i = lo; i < hi; i++)
          g[i] *= t->scale;
      double sum = 0;
      for (int64_t i = lo; i < hi; i++)
        sum += (double)g[i] * g[i];
      s->partial[u] = sum;
    } else if (t->op == OP_CLIP) {
      for (int64_t i = lo; i < hi; i++)
        g[i] *= t->scale;
    } else if (t->o->optimizer == KC_OPTIM_ADAMW) {
      adamw(t, q, lo, hi);
    } else {
      sgd(t, q, lo, hi);
    }
  }
}

static void run(kc_optim_set *s, task *t) {
  if (s->pool && kc_pool_threads(s->pool) > 1 && s->nunits > 1)
    kc_pool_run(s->pool, run_units, t, s->nunits, 1);
  else
    run_units(t, 0, s->nunits, 0);
}

double kc_optim_scale_norm(kc_optim_set *s, double scale) {
  task t = {.s = s, .op = OP_SCALE_NORM, .scale = (float)scale};
  run(s, &t);
  double total = 0;
  for (int64_t u = 0; u < s->nunits; u++)
    total += s->partial[u];
  return sqrt(total);
}

void kc_optim_clip(kc_optim_set *s, double norm, double max) {
  double coef = max / (norm + 1e-6);
  if (coef >= 1) return; /* torch clamps the coefficient at 1: multiplying by 1 changes nothing */
  task t = {.s = s, .op = OP_CLIP, .scale = (float)coef};
  run(s, &t);
}

void kc_optim_update(kc_optim_set *s, const kc_train_options *o, double lr, int64_t step,
                     bool momentum_init) {
  task t = {
      .s = s, .op = OP_UPDATE, .o = o, .lr = lr, .step = step, .momentum_init = momentum_init};
  run(s, &t);
}
