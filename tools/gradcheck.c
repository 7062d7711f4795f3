/*
 * tools/gradcheck.c - the checking half of `kernc gradcheck` (tools/cmd_gradcheck.c parses the
 * flags and builds the loss): kernc's gradients of a model against central finite differences,
 * as torch.autograd.gradcheck does, on a float64 copy of the model (kc_graph_promote), where
 * rounding does not drown the differences; then the float32 gradients the model really trains
 * with against the float64 ones.
 *
 * For every parameter (a float weight the patterns select; it becomes a graph input so its
 * values are given per run): the gradient graph (kc_grad) is compiled once in f64 and once in
 * f32, the forward alone once in f64. Checked elements: the `samples` / 2 largest |gradient|
 * and as many drawn by a fixed generator (the same elements every run). Each difference is
 * (L(x + h) - L(x - h)) / 2h with h = eps * max(1, |x|); an element passes when
 * |fd - grad| <= atol + rtol * |fd| (PyTorch's defaults: eps 1e-6, atol 1e-5, rtol 1e-3). The f32
 * gradient passes when max |g32 - g64| <= f32_tol * max |g64| over the whole tensor.
 *
 * References come from the finite differences, never from the rules being checked.
 */
#include "tools/gradcheck.h"

#include "ir/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct gc_model {
  kc_graph *g;    /* the converted clone (params are inputs) */
  kc_module *m;   /* its module */
  uint32_t nout;  /* outputs of g */
  uint32_t first; /* index of the first param input */
  kc_tensor_desc *out;
} gc_model;

static void model_free(gc_model *x) {
  kc_module_free(x->m);
  kc_graph_free(x->g);
  free(x->out);
  memset(x, 0, sizeof *x);
}

/* Clone g, promote it to f64 when f64, make the params inputs, add the gradient graph when
 * grad, compile. */
static kc_status model_make(kc_context *ctx, const kc_graph *g, const gradcheck_opts *o, bool f64,
                            bool grad, gc_model *x) {
  memset(x, 0, sizeof *x);
  x->g = kc_graph_clone(g, true);
  if (!x->g) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory copying the model");
  x->first = x->g->ninputs;
  kc_status s = f64 ? kc_graph_promote(x->g, KC_F32, KC_F64) : KC_OK;
  if (s == KC_OK) s = kc_graph_weights_to_inputs(x->g, o->npats, o->pats, NULL);
  if (s == KC_OK && grad) s = kc_grad(x->g, o->loss, o->npats, o->pats);
  kc_compile_options co = {.threads = o->threads};
  if (s == KC_OK) s = kc_compile(ctx, x->g, &co, &x->m);
  x->nout = x->g->noutputs;
  x->out = calloc(x->nout + 1, sizeof *x->out);
  if (s == KC_OK && !x->out) s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
  return s;
}

static int out_index(const gc_model *x, const char *name) {
  for (uint32_t k = 0; k < x->nout; k++)
    if (strcmp(kc_graph_output_name(x->g, k), name) == 0) return (int)k;
  return -1;
}

static double as_double(const kc_tensor_desc *t, size_t i) {
  return t->dtype == KC_F64 ? ((const double *)t->data)[i] : ((const float *)t->data)[i];
}

static size_t numel(const kc_tensor_desc *t) {
  size_t n = 1;
  for (int d = 0; d < t->rank; d++)
    n *= (size_t)t->dims[d];
  return n;
}

/* The run's inputs: the user's (f32 ones converted for f64 models) and the params' values. */
typedef struct gc_inputs {
  kc_tensor_desc *d; /* user inputs first, then params */
  uint32_t n, nuser;
  void **own; /* buffers to free */
} gc_inputs;

static kc_status inputs_make(kc_context *ctx, const gc_model *x, const kc_tensor_desc *user,
                             uint32_t nuser, bool f64, gc_inputs *in) {
  in->n = x->g->ninputs;
  in->nuser = nuser;
  in->d = calloc(in->n + 1, sizeof *in->d);
  in->own = calloc(in->n + 1, sizeof *in->own);
  if (!in->d || !in->own) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
  for (uint32_t i = 0; i < in->n; i++) {
    const kc_tensor_desc *src = NULL;
    kc_tensor_desc w = {0};
    if (i < nuser) {
      src = &user[i];
    } else {
      const char *name = kc_graph_input_name(x->g, i);
      const kc_tensor *t = kc_graph_weight_data(x->g, name);
      if (!t || !t->data)
        return kc_errorf(ctx, KC_ERR_INVALID_ARG, "weight '%s' has no data", name);
      w = (kc_tensor_desc){
          .name = name, .dtype = t->dtype, .rank = t->rank, .data = (void *)t->data};
      memcpy(w.dims, t->dims, sizeof w.dims);
      src = &w;
    }
    in->d[i] = *src;
    bool conv = f64 && src->dtype == KC_F32;
    size_t n = numel(src), es = conv ? 8 : kc_dtype_size(src->dtype);
    void *p = malloc(n * es + 1);
    if (!p) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
    if (conv)
      for (size_t k = 0; k < n; k++)
        ((double *)p)[k] = ((const float *)src->data)[k];
    else
      memcpy(p, src->data, n * es);
    in->own[i] = p;
    in->d[i].data = p;
    if (conv) in->d[i].dtype = KC_F64;
  }
  return KC_OK;
}

static void inputs_free(gc_inputs *in) {
  for (uint32_t i = 0; in->own && i < in->n; i++)
    free(in->own[i]);
  free(in->own);
  free(in->d);
  memset(in, 0, sizeof *in);
}

static kc_status loss_of(gc_model *x, const gc_inputs *in, const char *loss, double *l) {
  kc_status s = kc_run(x->m, in->d, in->n, x->out, x->nout);
  if (s != KC_OK) return s;
  int k = out_index(x, loss);
  *l = k < 0 ? NAN : as_double(&x->out[k], 0);
  return KC_OK;
}

/* A fixed generator (splitmix64) for the drawn elements. */
static uint64_t mix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Indices to check: the k/2 largest |g| and draws; n elements in all; writes *count. */
static void pick(const double *g, size_t n, int samples, uint64_t seed, size_t *idx, int *count) {
  int c = 0, big = samples / 2;
  for (int b = 0; b < big && (size_t)c < n; b++) {
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
      bool taken = false;
      for (int k = 0; k < c && !taken; k++)
        taken = idx[k] == i;
      if (!taken && (best == SIZE_MAX || fabs(g[i]) > fabs(g[best]))) best = i;
    }
    idx[c++] = best;
  }
  uint64_t s = seed;
  for (int tries = 0; c < samples && (size_t)c < n && tries < 8 * samples; tries++) {
    size_t i = (size_t)(mix(&s) % n);
    bool taken = false;
    for (int k = 0; k < c && !taken; k++)
      taken = idx[k] == i;
    if (!taken) idx[c++] = i;
  }
  *count = c;
}

int gradcheck_run(kc_context *ctx, const kc_graph *g, const kc_tensor_desc *user, uint32_t nuser,
                  const gradcheck_opts *o, FILE *f) {
  gc_model m64, f64, m32;
  gc_inputs in64 = {0}, in32 = {0};
  kc_status s = model_make(ctx, g, o, true, true, &m64);
  if (s == KC_OK) s = model_make(ctx, g, o, true, false, &f64);
  if (s == KC_OK) s = model_make(ctx, g, o, false, true, &m32);
  if (s == KC_OK) s = inputs_make(ctx, &f64, user, nuser, true, &in64);
  if (s == KC_OK) s = inputs_make(ctx, &m32, user, nuser, false, &in32);
  double l64 = 0, l32 = 0, lf = 0;
  if (s == KC_OK) s = loss_of(&m64, &in64, o->loss, &l64);
  if (s == KC_OK) s = loss_of(&f64, &in64, o->loss, &lf);
  if (s == KC_OK) s = loss_of(&m32, &in32, o->loss, &l32);
  int failed = 0, checked = 0;
  if (s == KC_OK) {
    fprintf(f, "loss: f64 %.12g (forward alone %.12g), f32 %.9g\n", l64, lf, l32);
    fprintf(f, "%-40s %8s %7s %12s %12s %12s  %s\n", "parameter", "elements", "checked",
            "max |fd-g|", "worst ratio", "f32 rel err", "result");
  }
  size_t *idx = calloc((size_t)o->samples + 1, sizeof *idx);
  if (s == KC_OK && !idx) s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
  for (uint32_t p = in64.nuser; s == KC_OK && p < in64.n; p++) {
    const char *name = in64.d[p].name;
    char gname[1024];
    snprintf(gname, sizeof gname, "%s.grad", name);
    int k64 = out_index(&m64, gname), k32 = out_index(&m32, gname);
    if (k64 < 0 || k32 < 0) {
      s = kc_errorf(ctx, KC_ERR_INTERNAL, "gradcheck: no gradient output for '%s'", name);
      break;
    }
    size_t n = numel(&in64.d[p]);
    double *g64 = malloc(n * sizeof *g64);
    if (!g64) {
      s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
      break;
    }
    /* outputs live until the next run of their module: copy the f64 gradient, compare f32 now */
    double gmax = 0, dmax = 0;
    for (size_t i = 0; i < n; i++) {
      g64[i] = as_double(&m64.out[k64], i);
      gmax = fmax(gmax, fabs(g64[i]));
      dmax = fmax(dmax, fabs(as_double(&m32.out[k32], i) - g64[i]));
    }
    double f32_rel = gmax > 0 ? dmax / gmax : dmax;
    int cnt = 0;
    pick(g64, n, o->samples, o->seed + p, idx, &cnt);
    double worst_err = 0, worst_ratio = 0;
    double *x = in64.d[p].data;
    for (int c = 0; c < cnt && s == KC_OK; c++) {
      size_t i = idx[c];
      double x0 = x[i], h = o->eps * fmax(1.0, fabs(x0)), lp = 0, lm = 0;
      x[i] = x0 + h;
      s = loss_of(&f64, &in64, o->loss, &lp);
      x[i] = x0 - h;
      if (s == KC_OK) s = loss_of(&f64, &in64, o->loss, &lm);
      x[i] = x0;
      double fd = (lp - lm) / (2 * h), err = fabs(fd - g64[i]);
      double ratio = err / (o->atol + o->rtol * fabs(fd));
      worst_err = fmax(worst_err, err);
      worst_ratio = fmax(worst_ratio, ratio);
    }
    free(g64);
    if (s != KC_OK) break;
    bool ok = worst_ratio <= 1 && f32_rel <= o->f32_tol;
    failed += !ok;
    checked++;
    fprintf(f, "%-40s %8zu %7d %12.3g %12.3g %12.3g  %s\n", name, n, cnt, worst_err, worst_ratio,
            f32_rel, ok ? "ok" : "FAIL");
  }
  free(idx);
  inputs_free(&in64);
  inputs_free(&in32);
  model_free(&m64);
  model_free(&f64);
  model_free(&m32);
  if (s != KC_OK) return -(int)s;
  fprintf(f,
          "%d of %d parameters passed (finite differences: eps %g, atol %g, rtol %g; f32 "
          "against f64: %g of the largest gradient)\n",
          checked - failed, checked, o->eps, o->atol, o->rtol, o->f32_tol);
  return failed;
}
