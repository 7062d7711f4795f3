/*
 * tools/cmd_grad.c - `kernc grad MODEL --loss=LOSS [-i NAME=FILE.npy ...] -o DIR`: one forward
 * and backward pass. The loss is built with the builder onto the loaded graph, kc_grad appends
 * the backward, the pass pipeline runs on forward + backward together (so --print-after-all,
 * --print-changed and --dump-dir show it), the result is compiled with no further passes and run
 * once; DIR/loss.npy and DIR/NAME.grad.npy (every float initializer NAME, or those --params
 * selects) are written.
 *
 * LOSS is tools/cli_loss.h's (shared with `kernc train`).
 *
 * Parameters are the graph's named float weights (ONNX initializers), never its inputs; their
 * names go to kc_grad escaped, so a name with glob characters selects only itself.
 */
#include "ir/internal.h"
#include "runtime/runtime.h"
#include "tools/cli.h"
#include "tools/cli_loss.h"
#include "tools/commands.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef cli_inputs grad_args;

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
static int run_step(kc_context *ctx, const kc_graph *g, const grad_args *a, const cli_loss *l,
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
  for (uint32_t i = 0; rc < 0 && l->kind == CLI_LOSS_XENT && i < nin; i++)
    if (strcmp(in[i].name, l->extra) == 0) rc = cli_loss_check_labels(g, l, &in[i]);
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
    if (strcmp(name, CLI_LOSS_NAME) == 0) {
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
  cli_loss l = {0};
  if (rc < 0 && !loss) rc = cli_usage_error(&cmd, "missing --loss=LOSS");
  if (rc < 0 && !dir) rc = cli_usage_error(&cmd, "missing -o DIR");
  if (rc < 0) rc = cli_loss_parse(&cmd, loss, &l);
  long nthreads = 0;
  if (rc < 0 && threads) {
    char *end;
    nthreads = strtol(threads, &end, 10);
    if (*end || end == threads || nthreads < 1 || nthreads > KC_MAX_THREADS)
      rc = cli_usage_error(&cmd, "--threads needs a number from 1 to %d, got '%s'", KC_MAX_THREADS,
                           threads);
  }
  kc_context *ctx = rc < 0 ? cli_context_new() : NULL;
  kc_graph *g = NULL;
  if (rc < 0 && !ctx) rc = (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_status s;
  if (rc < 0 && (s = cli_load(ctx, pos[0], true, &g)) != KC_OK) rc = cli_fail(ctx, s, pos[0]);
  if (rc < 0) rc = cli_loss_build(ctx, g, &l);
  const char **pats = NULL;
  int npats = 0;
  if (rc < 0) rc = select_params(g, params, &pats, &npats);
  if (rc < 0 && (s = kc_grad(g, CLI_LOSS_NAME, npats, pats)) != KC_OK)
    rc = cli_fail(ctx, s, pos[0]);
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
