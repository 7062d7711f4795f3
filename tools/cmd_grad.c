/*
 * tools/cmd_grad.c - `kernc grad MODEL --loss=LOSS [-i NAME=FILE.npy ...] -o DIR`: one forward
 * and backward pass. The loss is built with the builder onto the loaded graph, kc_grad appends
 * the backward, the pass pipeline runs on forward + backward together (so --print-after-all,
 * --print-changed and --dump-dir show it), the result is compiled with no further passes and run
 * once; DIR/loss.npy and DIR/NAME.grad.npy (every float initializer NAME, or those --params
 * selects) are written.
 *
 * LOSS: `xent:OUTPUT:LABELS` - mean softmax cross-entropy over every position, classes on
 * OUTPUT's last axis, labels -100 ignored (PyTorch's F.cross_entropy on logits reshaped to
 * [-1, C]); LABELS is a new int64 graph input of OUTPUT's shape without the class axis. Built as
 * log_softmax, the label's log-probability picked by a one-hot compare (an ignored label matches
 * no class), a sum, divided by the count of labels not ignored: no softmax tensor besides
 * log_softmax's own result. `mse:OUTPUT:TARGET` - mean((OUTPUT - TARGET)^2), TARGET a new input
 * of OUTPUT's dtype and shape. `sum:OUTPUT` - the sum of OUTPUT.
 *
 * Parameters are the graph's named float weights (ONNX initializers), never its inputs; their
 * names go to kc_grad escaped, so a name with glob characters selects only itself.
 */
#include "ir/internal.h"
#include "runtime/runtime.h"
#include "tools/cli.h"
#include "tools/commands.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LOSS_NAME "kernc.loss" /* the loss output kc_grad differentiates */
#define IGNORE_INDEX (-100)

typedef enum loss_kind { LOSS_XENT, LOSS_MSE, LOSS_SUM } loss_kind;

typedef struct loss_spec {
  loss_kind kind;
  char output[256], extra[256]; /* extra: LABELS or TARGET */
} loss_spec;

typedef cli_inputs grad_args;

/* "xent:OUT:LABELS" / "mse:OUT:TARGET" / "sum:OUT" into *l; a usage error (2) when malformed. */
static int parse_loss(const cli_cmd *cmd, const char *s, loss_spec *l) {
  const char *c1 = strchr(s, ':');
  const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
  size_t klen = c1 ? (size_t)(c1 - s) : 0;
  bool two = false;
  if (klen == 4 && strncmp(s, "xent", 4) == 0) {
    l->kind = LOSS_XENT;
    two = true;
  } else if (klen == 3 && strncmp(s, "mse", 3) == 0) {
    l->kind = LOSS_MSE;
    two = true;
  } else if (klen == 3 && strncmp(s, "sum", 3) == 0) {
    l->kind = LOSS_SUM;
  } else {
    return cli_usage_error(cmd,
                           "--loss: unknown loss '%s' (xent:OUTPUT:LABELS, mse:OUTPUT:TARGET "
                           "or sum:OUTPUT)",
                           s);
  }
  const char *out = c1 + 1, *out_end = c2 ? c2 : out + strlen(out);
  const char *extra = c2 ? c2 + 1 : "";
  if (out_end == out || (two && (!c2 || !*extra || strchr(extra, ':'))) || (!two && c2))
    return cli_usage_error(cmd, "--loss: '%s' should be %s", s,
                           l->kind == LOSS_XENT  ? "xent:OUTPUT:LABELS"
                           : l->kind == LOSS_MSE ? "mse:OUTPUT:TARGET"
                                                 : "sum:OUTPUT");
  if ((size_t)(out_end - out) >= sizeof l->output || strlen(extra) >= sizeof l->extra)
    return cli_usage_error(cmd, "--loss: name too long in '%s'", s);
  snprintf(l->output, sizeof l->output, "%.*s", (int)(out_end - out), out);
  snprintf(l->extra, sizeof l->extra, "%s", extra);
  return -1;
}

/* A scalar constant of dtype t. */
static kc_val scalar(kc_graph *g, double v, kc_dtype t) {
  kc_val c = kc_const_f32(g, (float)v);
  return t == KC_F32 ? c : kc_cast(g, c, t);
}

/* Build the loss onto g as output LOSS_NAME; exit code 1 (said) on failure, else -1. */
static int build_loss(kc_context *ctx, kc_graph *g, const loss_spec *l) {
  uint32_t nout = kc_graph_num_outputs(g), o = 0;
  while (o < nout && strcmp(kc_graph_output_name(g, o), l->output) != 0)
    o++;
  if (o == nout) {
    fprintf(stderr, "kernc: --loss: the model has no output '%s'; its outputs are:", l->output);
    for (uint32_t k = 0; k < nout; k++)
      fprintf(stderr, " '%s'", kc_graph_output_name(g, k));
    fprintf(stderr, "\n");
    return 1;
  }
  for (uint32_t i = 0; l->kind != LOSS_SUM && i < kc_graph_num_inputs(g); i++)
    if (strcmp(kc_graph_input_name(g, i), l->extra) == 0) {
      fprintf(stderr, "kernc: --loss: the model already has an input named '%s'\n", l->extra);
      return 1;
    }
  kc_val x = kc_graph_output(g, o), loss;
  kc_dtype t = kc_val_dtype(g, x);
  int r = kc_val_rank(g, x);
  if (!kc_dtype_is_float(t) || r < 0 || (l->kind == LOSS_XENT && r < 1)) {
    fprintf(stderr, "kernc: --loss: output '%s' is %s of rank %d; %s\n", l->output,
            kc_dtype_name(t), r,
            l->kind == LOSS_XENT ? "cross-entropy needs float logits with a class axis"
                                 : "the loss needs a float tensor of known rank");
    return 1;
  }
  kc_dim dims[KC_MAX_RANK];
  kc_val_dims(g, x, dims);
  if (l->kind == LOSS_XENT) {
    kc_val labels = kc_input(g, l->extra, KC_I64, r - 1, dims);
    kc_val lsm = kc_log_softmax(g, x, r - 1);
    kc_val ncls = kc_gather(g, kc_shape(g, x), kc_const_i64(g, r - 1), 0);
    kc_val cls = kc_range(g, kc_const_i64(g, 0), ncls, kc_const_i64(g, 1));
    int64_t last = r - 1;
    kc_val hit = kc_equal(g, kc_unsqueeze(g, labels, 1, &last), cls); /* -100 hits no class */
    kc_val total = kc_reduce_sum(g, kc_where(g, hit, lsm, scalar(g, 0, t)), 0, NULL, 0);
    kc_val valid = kc_not(g, kc_equal(g, labels, kc_const_i64(g, IGNORE_INDEX)));
    kc_val count = kc_reduce_sum(g, kc_cast(g, valid, t), 0, NULL, 0);
    loss = kc_neg(g, kc_div(g, total, count));
  } else if (l->kind == LOSS_MSE) {
    kc_val target = kc_input(g, l->extra, t, r, dims);
    kc_val d = kc_sub(g, x, target);
    loss = kc_reduce_mean(g, kc_mul(g, d, d), 0, NULL, 0);
  } else {
    loss = kc_reduce_sum(g, x, 0, NULL, 0);
  }
  kc_output(g, loss, LOSS_NAME);
  kc_status s = kc_graph_status(g);
  return s == KC_OK ? -1 : cli_fail(ctx, s, NULL);
}

/* fnmatch pattern matching exactly s (glob characters escaped), into the arena of g. */
static const char *escape_glob(kc_graph *g, const char *s) {
  size_t n = strlen(s);
  char *p = kc_arena_alloc(&g->arena, 2 * n + 1), *q = p;
  if (!p) return NULL;
  for (; *s; s++) {
    if (strchr("*?[]\\", *s)) *q++ = '\\';
    *q++ = *s;
  }
  *q = 0;
  return p;
}

/*
 * The parameters: every named float weight, or those matching one of the comma-separated globs
 * in sel; *pats gets each one's escaped name (malloc'd array). Exit code 1 (said) on failure.
 */
static int select_params(kc_graph *g, const char *sel, const char ***pats, int *npats) {
  const char **ps = calloc((size_t)g->nnodes + 1, sizeof *ps);
  char *globs = sel ? strdup(sel) : NULL;
  int n = 0, rc = -1;
  if (!ps || (sel && !globs)) rc = (fprintf(stderr, "kernc: out of memory\n"), 1);
  const char *pat[64];
  int np = 0;
  for (char *tok = globs ? strtok(globs, ",") : NULL; rc < 0 && tok; tok = strtok(NULL, ",")) {
    if (np == 64)
      rc = (fprintf(stderr, "kernc: --params: more than 64 patterns\n"), 1);
    else
      pat[np++] = tok;
  }
  bool hit[64] = {0};
  for (uint32_t ni = 0; rc < 0 && ni < g->nnodes; ni++) {
    const kc_node *nd = &g->nodes[ni];
    if (nd->op != KC_OP_WEIGHT || !kc_dtype_is_float(kc_value_of(g, nd->out[0])->dtype)) continue;
    const char *name = kc_node_string(nd, "name", NULL);
    if (!name || !*name) continue;
    bool match = !sel;
    for (int k = 0; k < np; k++)
      if (fnmatch(pat[k], name, 0) == 0) match = hit[k] = true;
    if (!match) continue;
    if (!(ps[n++] = escape_glob(g, name))) rc = (fprintf(stderr, "kernc: out of memory\n"), 1);
  }
  for (int k = 0; rc < 0 && k < np; k++)
    if (!hit[k]) {
      fprintf(stderr, "kernc: --params: no float initializer of the model matches '%s'\n", pat[k]);
      rc = 1;
    }
  if (rc < 0 && n == 0)
    rc = (fprintf(stderr, "kernc: the model has no float initializers to differentiate\n"), 1);
  free(globs);
  if (rc >= 0) {
    free(ps);
    return rc;
  }
  *pats = ps;
  *npats = n;
  return -1;
}

/* For xent: LABELS must have OUTPUT's static dims without the class axis, and hold classes in
 * [0, C) or -100. in: the labels descriptor. Exit code 1 (said) or -1. */
static int check_labels(const kc_graph *g, const loss_spec *l, const kc_tensor_desc *in) {
  uint32_t nout = kc_graph_num_outputs(g), o = 0;
  while (o < nout && strcmp(kc_graph_output_name(g, o), l->output) != 0)
    o++;
  kc_val x = kc_graph_output(g, o);
  int r = kc_val_rank(g, x);
  kc_dim dims[KC_MAX_RANK];
  kc_val_dims(g, x, dims);
  bool ok = in->dtype == KC_I64 && in->rank == r - 1;
  for (int d = 0; ok && d < r - 1; d++)
    ok = dims[d] < 0 || dims[d] == in->dims[d];
  if (!ok) {
    fprintf(stderr, "kernc: --loss: labels '%s' are %s[", l->extra, kc_dtype_name(in->dtype));
    for (int d = 0; d < in->rank; d++)
      fprintf(stderr, "%s%lld", d ? "," : "", (long long)in->dims[d]);
    fprintf(stderr, "]; output '%s' needs int64 of its shape without the class axis: [", l->output);
    for (int d = 0; d < r - 1; d++) {
      char b[64];
      fprintf(stderr, "%s%s", d ? "," : "", kc_dim_str(g, dims[d], b, sizeof b));
    }
    fprintf(stderr, "]\n");
    return 1;
  }
  if (dims[r - 1] < 0) return -1;
  int64_t ncls = dims[r - 1], n = 1;
  for (int d = 0; d < in->rank; d++)
    n *= in->dims[d];
  const int64_t *lab = in->data;
  for (int64_t k = 0; k < n; k++)
    if (lab[k] != IGNORE_INDEX && (lab[k] < 0 || lab[k] >= ncls)) {
      fprintf(stderr,
              "kernc: --loss: label %lld at flat position %lld of '%s' is outside [0, %lld) "
              "and not the ignore index %d\n",
              (long long)lab[k], (long long)k, l->extra, (long long)ncls, IGNORE_INDEX);
      return 1;
    }
  return -1;
}

/* DIR/NAME.npy, with characters a file name cannot hold replaced (as `kernc run` does). */
static int write_npy(kc_context *ctx, const char *dir, const char *name, const kc_tensor_desc *t) {
  char path[4096];
  int len = snprintf(path, sizeof path, "%s/%s.npy", dir, name);
  if (len < 0 || (size_t)len >= sizeof path) {
    fprintf(stderr, "kernc: output path too long for '%s'\n", name);
    return 1;
  }
  for (char *p = path + strlen(dir) + 1; *p; p++)
    if (*p == '/' || *p == '\\' || *p == ':') *p = '_';
  kc_status s = kc_npy_write(ctx, path, t);
  return s == KC_OK ? -1 : cli_fail(ctx, s, NULL);
}

/* Read the inputs, compile, run, write loss.npy and the gradients. */
static int run_step(kc_context *ctx, const kc_graph *g, const grad_args *a, const loss_spec *l,
                    int threads, const char *dir) {
  uint32_t nin = kc_graph_num_inputs(g), nout = kc_graph_num_outputs(g);
  kc_tensor_desc *in = calloc(nin + 1, sizeof *in), *out = calloc(nout + 1, sizeof *out);
  kc_module *m = NULL;
  int rc = in && out ? cli_read_inputs(ctx, g, a->ninput, a->input, in)
                     : (fprintf(stderr, "kernc: out of memory\n"), 1);
  bool missing = false;
  for (uint32_t i = 0; rc < 0 && i < nin; i++)
    if (!in[i].name) {
      fprintf(stderr, "%s '%s'",
              missing ? "," : "kernc: missing input(s):", kc_graph_input_name(g, i));
      missing = true;
    }
  if (missing) rc = (fprintf(stderr, " (give each as -i NAME=FILE.npy)\n"), 1);
  for (uint32_t i = 0; rc < 0 && l->kind == LOSS_XENT && i < nin; i++)
    if (strcmp(in[i].name, l->extra) == 0) rc = check_labels(g, l, &in[i]);
  kc_compile_options co = {.passes = "", .threads = threads}; /* the pipeline ran already */
  kc_status s = KC_OK;
  if (rc < 0 && (s = kc_compile(ctx, g, &co, &m)) != KC_OK) rc = cli_fail(ctx, s, NULL);
  if (rc < 0 && (s = kc_run(m, in, nin, out, nout)) != KC_OK) rc = cli_fail(ctx, s, NULL);
  if (rc < 0 && mkdir(dir, 0777) != 0) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
      rc = (fprintf(stderr, "kernc: cannot create output folder '%s'\n", dir), 1);
  }
  int ngrad = 0;
  for (uint32_t k = 0; rc < 0 && k < nout; k++) {
    const char *name = kc_graph_output_name(g, k);
    size_t len = strlen(name);
    if (strcmp(name, LOSS_NAME) == 0) {
      rc = write_npy(ctx, dir, "loss", &out[k]);
      if (rc < 0)
        printf("loss %.9g\n",
               out[k].dtype == KC_F64 ? *(const double *)out[k].data : *(const float *)out[k].data);
    } else if (len > 5 && strcmp(name + len - 5, ".grad") == 0) {
      rc = write_npy(ctx, dir, name, &out[k]);
      ngrad++;
    }
  }
  if (rc < 0) printf("wrote %s/loss.npy and %d gradients %s/NAME.grad.npy\n", dir, ngrad, dir);
  kc_module_free(m);
  for (uint32_t i = 0; in && i < nin; i++)
    kc_npy_free(&in[i]);
  free(in);
  free(out);
  return rc < 0 ? 0 : rc;
}

int cmd_grad(int argc, char **argv) {
  const char *loss = NULL, *dir = NULL, *params = NULL, *emit_ir = NULL, *threads = NULL;
  const char *unused = NULL; /* --input is taken out of argv before parsing (it repeats) */
  cli_pass_flags pf = {0};
  cli_cmd cmd = {
      .name = "kernc grad",
      .args = "MODEL",
      .about =
          "Run one forward and backward pass of MODEL (.onnx or .kir) on the CPU: build LOSS on\n"
          "an output, append its gradient graph (kc_grad), run the pass pipeline on forward +\n"
          "backward, and write DIR/loss.npy and DIR/NAME.grad.npy for every float initializer\n"
          "NAME (or those --params selects). LOSS is one of\n"
          "  xent:OUTPUT:LABELS  mean softmax cross-entropy, classes on OUTPUT's last axis,\n"
          "                      label -100 ignored; LABELS: a new int64 input, OUTPUT's shape\n"
          "                      without the class axis, given with -i LABELS=FILE.npy\n"
          "  mse:OUTPUT:TARGET   mean squared error; TARGET: a new input shaped like OUTPUT\n"
          "  sum:OUTPUT          the sum of OUTPUT's elements",
      .min_pos = 1,
      .max_pos = 1,
  };
  cli_add(&cmd, (cli_opt){"loss", 0, "LOSS", "the loss (required; see above)", NULL, &loss});
  cli_add(&cmd, (cli_opt){"input", 'i', "NAME=FILE.npy",
                          "an input as a .npy file (repeat for each input)", NULL, &unused});
  cli_add(&cmd,
          (cli_opt){"output-dir", 'o', "DIR", "write loss.npy and NAME.grad.npy here", NULL, &dir});
  cli_add(&cmd, (cli_opt){"params", 0, "GLOB,...",
                          "differentiate only initializers matching a glob (default: all float)",
                          NULL, &params});
  cli_add(&cmd, (cli_opt){"emit-ir", 0, "FILE", "write the gradient graph as text IR (- : stdout)",
                          NULL, &emit_ir});
  cli_add(&cmd, (cli_opt){"threads", 0, "N", "threads to run on (default: one per core)", NULL,
                          &threads});
  cli_add_pass_opts(&cmd, &pf);
  grad_args a = {0};
  a.input = calloc((size_t)argc + 1, sizeof *a.input);
  a.rest = calloc((size_t)argc + 1, sizeof *a.rest);
  const char *pos[1];
  int npos, rc = a.input && a.rest ? cli_take_inputs(&cmd, argc, argv, &a) : 1;
  if (rc < 0) rc = cli_parse(&cmd, a.nrest, a.rest, pos, &npos);
  if (rc < 0 && pf.list_passes) {
    cli_list_passes(stdout);
    rc = 0;
  }
  loss_spec l = {0};
  if (rc < 0 && !loss) rc = cli_usage_error(&cmd, "missing --loss=LOSS");
  if (rc < 0 && !dir) rc = cli_usage_error(&cmd, "missing -o DIR");
  if (rc < 0) rc = parse_loss(&cmd, loss, &l);
  long nthreads = 0;
  if (rc < 0 && threads) {
    char *end;
    nthreads = strtol(threads, &end, 10);
    if (*end || end == threads || nthreads < 1 || nthreads > 4096)
      rc = cli_usage_error(&cmd, "--threads needs a positive number, got '%s'", threads);
  }
  kc_context *ctx = rc < 0 ? cli_context_new() : NULL;
  kc_graph *g = NULL;
  if (rc < 0 && !ctx) rc = (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_status s;
  if (rc < 0 && (s = cli_load(ctx, pos[0], true, &g)) != KC_OK) rc = cli_fail(ctx, s, pos[0]);
  if (rc < 0) rc = build_loss(ctx, g, &l);
  const char **pats = NULL;
  int npats = 0;
  if (rc < 0) rc = select_params(g, params, &pats, &npats);
  if (rc < 0 && (s = kc_grad(g, LOSS_NAME, npats, pats)) != KC_OK) rc = cli_fail(ctx, s, pos[0]);
  if (rc < 0 && emit_ir) {
    FILE *f = cli_open_out(emit_ir);
    rc = f ? -1 : 1;
    if (f && (s = kc_graph_print(g, f)) != KC_OK) rc = cli_fail(ctx, s, NULL);
    if (f && cli_close_out(f, emit_ir) != 0) rc = 1;
  }
  if (rc < 0) {
    /* the target's pipeline, here, so the dump flags show forward + backward */
    cli_pass_flags run = pf;
    if (!run.passes) run.passes = "cpu";
    int prc = cli_run_passes(ctx, g, &run, stdout);
    if (prc != 0) rc = prc;
  }
  if (rc < 0) rc = run_step(ctx, g, &a, &l, (int)nthreads, dir);
  free(pats);
  kc_graph_free(g);
  kc_context_free(ctx);
  free(a.input);
  free(a.rest);
  return rc;
}
