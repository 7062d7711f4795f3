/*
 * tools/cmd_run.c - `kernc run MODEL --input NAME=FILE.npy ...`: load a model (.onnx or text
 * IR), compile it for the CPU (JIT; --target=cuda: the GPU through NVRTC), run it once on .npy
 * inputs (or .npz archives: each array binds the input of its name, tools/npz.c), and write each
 * output as DIR/NAME.npy (--output-dir) or print its name, dtype, shape and first 8 values (all
 * with --print-all).
 *
 * --input may repeat, which the shared flag parser does not do: those arguments are taken out
 * of argv here before the rest goes through cli_parse (they still appear in --help).
 * A bf16 input may come as a u16 array (numpy has no bfloat16); the bits are taken as they are.
 */
#include "ir/internal.h"
#include "runtime/runtime.h"
#include "tools/cli.h"
#include "tools/commands.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SHOW_VALUES 8

typedef cli_inputs run_args;

/* Read every --input into in[] (graph order); exit code on failure, -1 when all are there. */
static int read_inputs(kc_context *ctx, const kc_graph *g, const run_args *a, kc_tensor_desc *in) {
  uint32_t n = kc_graph_num_inputs(g);
  int rc = cli_read_inputs(ctx, g, a->ninput, a->input, in);
  if (rc >= 0) return rc;
  bool missing = false;
  for (uint32_t i = 0; i < n; i++)
    if (!in[i].name) {
      fprintf(stderr, "%s '%s'",
              missing ? "," : "kernc: missing input(s):", kc_graph_input_name(g, i));
      missing = true;
    }
  if (missing) fprintf(stderr, " (give each as --input NAME=FILE.npy)\n");
  return missing ? 1 : -1;
}

static void print_value(const kc_tensor_desc *t, size_t i) {
  const void *p = t->data;
  switch (t->dtype) {
  case KC_F32: printf("%.9g", ((const float *)p)[i]); break;
  case KC_F64: printf("%.17g", ((const double *)p)[i]); break;
  case KC_F16: printf("%.5g", (double)kc_f16_to_f32(((const uint16_t *)p)[i])); break;
  case KC_BF16: printf("%.4g", (double)kc_bf16_to_f32(((const uint16_t *)p)[i])); break;
  case KC_I64: printf("%lld", (long long)((const int64_t *)p)[i]); break;
  case KC_I32: printf("%d", ((const int32_t *)p)[i]); break;
  case KC_I16: printf("%d", ((const int16_t *)p)[i]); break;
  case KC_I8: printf("%d", ((const int8_t *)p)[i]); break;
  case KC_U64: printf("%llu", (unsigned long long)((const uint64_t *)p)[i]); break;
  case KC_U32: printf("%u", ((const uint32_t *)p)[i]); break;
  case KC_U16: printf("%u", ((const uint16_t *)p)[i]); break;
  case KC_U8: printf("%u", ((const uint8_t *)p)[i]); break;
  case KC_BOOL: printf("%s", ((const uint8_t *)p)[i] ? "true" : "false"); break;
  default: printf("?"); break;
  }
}

/* name: DTYPE[SHAPE] = values: the first SHOW_VALUES, or all of them when all is set. */
static void print_output(const kc_tensor_desc *t, const char *name, bool all) {
  size_t n = 1;
  printf("%s: %s[", name, kc_dtype_name(t->dtype));
  for (int d = 0; d < t->rank; d++) {
    printf("%s%lld", d ? "," : "", (long long)t->dims[d]);
    n *= (size_t)t->dims[d];
  }
  printf("] =");
  size_t shown = all || n < SHOW_VALUES ? n : SHOW_VALUES;
  for (size_t i = 0; i < shown; i++) {
    putchar(' ');
    print_value(t, i);
  }
  printf("%s\n", shown < n ? " ..." : "");
}

/* DIR/NAME.npy, with characters a file name cannot hold replaced. */
static int write_output(kc_context *ctx, const char *dir, const char *name,
                        const kc_tensor_desc *t) {
  char path[4096];
  int len = snprintf(path, sizeof path, "%s/%s.npy", dir, name);
  if (len < 0 || (size_t)len >= sizeof path) {
    fprintf(stderr, "kernc: output path too long for '%s'\n", name);
    return 1;
  }
  for (char *p = path + strlen(dir) + 1; *p; p++)
    if (*p == '/' || *p == '\\' || *p == ':') *p = '_';
  kc_status s = kc_npy_write(ctx, path, t);
  if (s != KC_OK) return cli_fail(ctx, s, NULL);
  printf("%s\n", path);
  return 0;
}

static int run_model(kc_context *ctx, const kc_graph *g, const run_args *a, int threads,
                     const char *out_dir, const char *passes, const char *target, bool all) {
  uint32_t nin = kc_graph_num_inputs(g), nout = kc_graph_num_outputs(g);
  kc_tensor_desc *in = calloc(nin + 1, sizeof *in), *out = calloc(nout + 1, sizeof *out);
  kc_module *m = NULL;
  int rc = in && out ? read_inputs(ctx, g, a, in) : (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_compile_options co = {.target = target, .passes = passes, .threads = threads};
  kc_status s = KC_OK;
  if (rc < 0 && (s = kc_compile(ctx, g, &co, &m)) != KC_OK) rc = cli_fail(ctx, s, NULL);
  if (rc < 0 && (s = kc_run(m, in, nin, out, nout)) != KC_OK) rc = cli_fail(ctx, s, NULL);
  if (rc < 0 && out_dir && mkdir(out_dir, 0777) != 0) {
    struct stat st;
    if (stat(out_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
      fprintf(stderr, "kernc: cannot create output folder '%s'\n", out_dir);
      rc = 1;
    }
  }
  for (uint32_t k = 0; rc < 0 && k < nout; k++) {
    char fallback[32];
    snprintf(fallback, sizeof fallback, "output_%u", k);
    const char *name = out[k].name ? out[k].name : fallback;
    if (out_dir)
      rc = write_output(ctx, out_dir, name, &out[k]) ? 1 : -1;
    else
      print_output(&out[k], name, all);
  }
  kc_module_free(m);
  for (uint32_t i = 0; in && i < nin; i++)
    kc_npy_free(&in[i]);
  free(in);
  free(out);
  return rc < 0 ? 0 : rc;
}

int cmd_run(int argc, char **argv) {
  const char *out_dir = NULL, *threads = NULL, *passes = NULL, *target = "cpu";
  const char *unused = NULL; /* --input is taken out of argv before parsing (it repeats) */
  bool print_all = false;
  cli_cmd cmd = {
      .name = "kernc run",
      .args = "MODEL",
      .about = "Compile MODEL (.onnx, or text IR .kir) for this CPU (or --target=cuda: the GPU),\n"
               "run it once on the given inputs and write or print its outputs. Without\n"
               "--output-dir each output is printed as NAME: DTYPE[SHAPE] = its first 8 values\n"
               "(all of them with --print-all).",
      .min_pos = 1,
      .max_pos = 1,
  };
  cli_add(&cmd, (cli_opt){"input", 'i', "NAME=FILE.npy",
                          "an input as a .npy file (repeat for each input); FILE.npz binds "
                          "each array to the input of its name",
                          NULL, &unused});
  cli_add(&cmd,
          (cli_opt){"output-dir", 'o', "DIR", "write each output as DIR/NAME.npy", NULL, &out_dir});
  cli_add(&cmd, (cli_opt){"print-all", 0, NULL, "print every value of each output, not the first 8",
                          &print_all, NULL});
  cli_add(&cmd, (cli_opt){"threads", 0, "N", "threads to run on (default: one per core)", NULL,
                          &threads});
  cli_add(&cmd, (cli_opt){"passes", 0, "LIST",
                          "passes to compile with (default: the target's pipeline; empty: none)",
                          NULL, &passes});
  cli_add(&cmd, (cli_opt){"target", 0, "cpu|cuda", "where to run (default: cpu)", NULL, &target});
  run_args a = {0};
  a.input = calloc((size_t)argc + 1, sizeof *a.input);
  a.rest = calloc((size_t)argc + 1, sizeof *a.rest);
  const char *pos[1];
  int npos, rc = a.input && a.rest ? cli_take_inputs(&cmd, argc, argv, &a) : 1;
  if (rc < 0) rc = cli_parse(&cmd, a.nrest, a.rest, pos, &npos);
  long nthreads = 0;
  if (rc < 0 && threads) {
    char *end;
    nthreads = strtol(threads, &end, 10);
    if (*end || end == threads || nthreads < 1 || nthreads > KC_MAX_THREADS)
      rc = cli_usage_error(&cmd, "--threads needs a number from 1 to %d, got '%s'", KC_MAX_THREADS,
                           threads);
  }
  if (rc < 0) rc = cli_check_target(&cmd, target);
  kc_context *ctx = rc < 0 ? cli_context_new() : NULL;
  kc_graph *g = NULL;
  if (rc < 0 && !ctx) rc = (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_status s;
  if (rc < 0 && (s = cli_load(ctx, pos[0], true, &g)) != KC_OK) rc = cli_fail(ctx, s, pos[0]);
  if (rc < 0) rc = run_model(ctx, g, &a, (int)nthreads, out_dir, passes, target, print_all);
  kc_graph_free(g);
  kc_context_free(ctx);
  free(a.input);
  free(a.rest);
  return rc;
}
