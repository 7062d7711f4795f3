/*
 * tools/cmd_gradcheck.c - `kernc gradcheck MODEL [--loss LOSS] [-i NAME=FILE.npy ...]`: check
 * kernc's gradients of a model against finite differences (tools/gradcheck.c says how). The loss
 * is tools/cli_loss.h's (default `sum:` of the first output); inputs not given are drawn (ids in
 * [0, 16) and, for xent, labels in [0, classes); floats normal), with symbolic dims set to 2 (or
 * --dim NAME=N). Exit status: 0 when every parameter passed, 1 when one failed or nothing ran.
 */
#include "ir/internal.h"
#include "runtime/runtime.h"
#include "tools/cli.h"
#include "tools/cli_loss.h"
#include "tools/commands.h"
#include "tools/gradcheck.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: the drawn inputs are the same every run */
static uint64_t next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double uniform(uint64_t *s) { return (double)(next(s) >> 11) * 0x1p-53; }

/* Draw input i (dims from the graph, symbols = sym_value) unless given. */
static int draw_input(kc_context *ctx, const kc_graph *g, uint32_t i, int64_t sym_value,
                      int64_t classes, uint64_t *seed, kc_tensor_desc *d) {
  kc_val v = kc_graph_input(g, i);
  kc_dim dims[KC_MAX_RANK];
  kc_val_dims(g, v, dims);
  d->name = kc_graph_input_name(g, i);
  d->dtype = kc_val_dtype(g, v);
  d->rank = kc_val_rank(g, v);
  size_t n = 1;
  for (int k = 0; k < d->rank; k++) {
    d->dims[k] = dims[k] >= 0 ? dims[k] : sym_value;
    n *= (size_t)d->dims[k];
  }
  size_t es = kc_dtype_size(d->dtype);
  void *p = malloc(n * es + 1);
  if (!p) return (fprintf(stderr, "kernc: out of memory\n"), 1);
  for (size_t k = 0; k < n; k++) {
    switch (d->dtype) {
    case KC_F32: ((float *)p)[k] = (float)(2 * uniform(seed) - 1); break;
    case KC_F64: ((double *)p)[k] = 2 * uniform(seed) - 1; break;
    case KC_I64: ((int64_t *)p)[k] = (int64_t)(next(seed) % (uint64_t)classes); break;
    case KC_I32: ((int32_t *)p)[k] = (int32_t)(next(seed) % (uint64_t)classes); break;
    case KC_BOOL: ((uint8_t *)p)[k] = 1; break;
    default:
      free(p);
      (void)ctx;
      fprintf(stderr, "kernc: input '%s' (%s) must be given with -i\n", d->name,
              kc_dtype_name(d->dtype));
      return 1;
    }
  }
  d->data = p;
  return -1;
}

/* The classes of an xent loss: the last dim of OUTPUT (static), else 16. */
static int64_t classes_of(const kc_graph *g, const cli_loss *l) {
  for (uint32_t o = 0; o < kc_graph_num_outputs(g); o++)
    if (strcmp(kc_graph_output_name(g, o), l->output) == 0) {
      kc_val v = kc_graph_output(g, o);
      int r = kc_val_rank(g, v);
      kc_dim dims[KC_MAX_RANK];
      kc_val_dims(g, v, dims);
      if (r > 0 && dims[r - 1] > 0) return dims[r - 1];
    }
  return 16;
}

int cmd_gradcheck(int argc, char **argv) {
  const char *loss = NULL, *params = NULL, *samples = NULL, *threads = NULL, *eps = NULL,
             *atol = NULL, *rtol = NULL, *f32tol = NULL, *dim = NULL, *unused = NULL;
  cli_cmd cmd = {
      .name = "kernc gradcheck",
      .args = "MODEL",
      .about = "Check the gradients kernc builds for MODEL (.onnx or .kir) against central finite\n"
               "differences on a float64 copy of the model (as torch.autograd.gradcheck), and the\n"
               "float32 gradients against the float64 ones. Per parameter, the largest-gradient\n"
               "elements and as many drawn ones are checked. LOSS as for `kernc grad`\n"
               "(xent:OUTPUT:LABELS, mse:OUTPUT:TARGET, sum:OUTPUT; default sum of the first\n"
               "output). Inputs not given with -i are drawn: symbolic dims = --dim (2), integer\n"
               "ids and labels in [0, classes), floats uniform in [-1, 1).\n"
               "Exit status 0 when every parameter passed.",
      .min_pos = 1,
      .max_pos = 1,
  };
  cli_add(&cmd, (cli_opt){"loss", 0, "LOSS", "the loss (default sum:FIRST_OUTPUT)", NULL, &loss});
  cli_add(&cmd, (cli_opt){"input", 'i', "NAME=FILE.npy", "an input (repeat); others are drawn",
                          NULL, &unused});
  cli_add(&cmd, (cli_opt){"params", 0, "GLOB,...", "check only initializers matching a glob", NULL,
                          &params});
  cli_add(&cmd, (cli_opt){"samples", 0, "K", "elements checked per parameter (default 6)", NULL,
                          &samples});
  cli_add(&cmd, (cli_opt){"eps", 0, "X", "finite-difference step (default 1e-6)", NULL, &eps});
  cli_add(&cmd, (cli_opt){"atol", 0, "X", "absolute tolerance (default 1e-5)", NULL, &atol});
  cli_add(&cmd, (cli_opt){"rtol", 0, "X", "relative tolerance (default 1e-3)", NULL, &rtol});
  cli_add(&cmd,
          (cli_opt){"f32-tol", 0, "X",
                    "f32 vs f64 gradients, relative to the largest (default 1e-3)", NULL, &f32tol});
  cli_add(&cmd, (cli_opt){"dim", 0, "N", "the size of symbolic dims of drawn inputs (default 2)",
                          NULL, &dim});
  cli_add(&cmd, (cli_opt){"threads", 0, "N", "threads to run on (default: one per core)", NULL,
                          &threads});
  cli_inputs a = {0};
  a.input = calloc((size_t)argc + 1, sizeof *a.input);
  a.rest = calloc((size_t)argc + 1, sizeof *a.rest);
  const char *pos[1];
  int npos, rc = a.input && a.rest ? cli_take_inputs(&cmd, argc, argv, &a) : 1;
  if (rc < 0) rc = cli_parse(&cmd, a.nrest, a.rest, pos, &npos);
  gradcheck_opts o = {.loss = CLI_LOSS_NAME,
                      .samples = 6,
                      .seed = 1,
                      .eps = 1e-6,
                      .atol = 1e-5,
                      .rtol = 1e-3,
                      .f32_tol = 1e-3};
  struct {
    const char *flag, *v;
    double *out;
  } reals[] = {{"eps", eps, &o.eps},
               {"atol", atol, &o.atol},
               {"rtol", rtol, &o.rtol},
               {"f32-tol", f32tol, &o.f32_tol}};
  for (size_t k = 0; rc < 0 && k < sizeof reals / sizeof *reals; k++) {
    if (!reals[k].v) continue;
    char *end;
    double x = strtod(reals[k].v, &end);
    if (!*reals[k].v || *end || !(x >= 0) || !isfinite(x))
      rc = cli_usage_error(&cmd, "--%s needs a number >= 0, got '%s'", reals[k].flag, reals[k].v);
    *reals[k].out = x;
  }
  long nsamples = 6, nthreads = 0, ndim = 2;
  struct {
    const char *flag, *v;
    long *out;
  } ints[] = {
      {"samples", samples, &nsamples}, {"threads", threads, &nthreads}, {"dim", dim, &ndim}};
  for (size_t k = 0; rc < 0 && k < sizeof ints / sizeof *ints; k++) {
    if (!ints[k].v) continue;
    char *end;
    long x = strtol(ints[k].v, &end, 10);
    if (!*ints[k].v || *end || x < 1 || x > 4096)
      rc = cli_usage_error(&cmd, "--%s needs a number in [1, 4096], got '%s'", ints[k].flag,
                           ints[k].v);
    *ints[k].out = x;
  }
  o.samples = (int)nsamples;
  o.threads = (int)nthreads;
  kc_context *ctx = rc < 0 ? cli_context_new() : NULL;
  if (rc < 0 && !ctx) rc = (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_graph *g = NULL;
  kc_status s;
  if (rc < 0 && (s = cli_load(ctx, pos[0], true, &g)) != KC_OK) rc = cli_fail(ctx, s, pos[0]);
  cli_loss l = {0};
  char first[300];
  if (rc < 0 && !loss) {
    if (kc_graph_num_outputs(g) == 0) rc = (fprintf(stderr, "kernc: the model has no output\n"), 1);
    snprintf(first, sizeof first, "sum:%s", rc < 0 ? kc_graph_output_name(g, 0) : "");
    loss = first;
  }
  if (rc < 0) rc = cli_loss_parse(&cmd, loss, &l);
  if (rc < 0) rc = cli_loss_build(ctx, g, &l);
  /* --params: a comma list of globs; default every float initializer */
  const char *pats[64] = {"*"};
  char *plist = params ? strdup(params) : NULL;
  o.npats = 1;
  if (rc < 0 && plist) {
    o.npats = 0;
    for (char *t = strtok(plist, ","); t && o.npats < 64; t = strtok(NULL, ","))
      pats[o.npats++] = t;
  }
  o.pats = pats;
  uint32_t nin = g ? kc_graph_num_inputs(g) : 0;
  kc_tensor_desc *in = calloc(nin + 1, sizeof *in);
  if (rc < 0 && !in) rc = (fprintf(stderr, "kernc: out of memory\n"), 1);
  if (rc < 0) rc = cli_read_inputs(ctx, g, a.ninput, a.input, in);
  uint64_t seed = 42;
  int64_t classes = l.kind == CLI_LOSS_XENT ? classes_of(g, &l) : 16;
  for (uint32_t i = 0; rc < 0 && i < nin; i++)
    if (!in[i].data) rc = draw_input(ctx, g, i, ndim, classes, &seed, &in[i]);
  if (rc < 0) {
    int failed = gradcheck_run(ctx, g, in, nin, &o, stdout);
    rc = failed < 0 ? cli_fail(ctx, (kc_status)-failed, pos[0]) : failed > 0;
  }
  for (uint32_t i = 0; in && i < nin; i++)
    free(in[i].data); /* .npy data and drawn data are both malloc'd */
  free(in);
  free(plist);
  kc_graph_free(g);
  kc_context_free(ctx);
  free(a.input);
  free(a.rest);
  return rc < 0 ? 0 : rc;
}
