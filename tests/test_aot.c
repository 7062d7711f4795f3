/*
 * tests/test_aot.c - ahead-of-time compilation (kc_export, `kernc compile`): a model becomes a
 * shared library and a header, and programs that know nothing of kernc run it.
 *
 * Covered: an MLP with weights and a symbolic batch compiled to a .so, a C driver built with cc
 * against the generated header running it at two batch sizes in one process, its outputs equal
 * to the JIT's (kc_compile/kc_run) and to values computed here; an output that is a copy of an
 * input; input errors (static dim, dtype, name) reported through NAME_error; dims that are
 * expressions of symbols (checked on inputs, computed for outputs); `ldd` showing no
 * libkernc and no libLLVM; only the four entry points exported; graphs whose sizes depend on
 * computed data refused by node; a missing folder and a missing C compiler reported; the
 * `kernc compile` program (argv[1]); and ONNX backend node tests (found through python3's onnx
 * or Debian's libonnx-testdata, skipped when neither is there) compiled to .so, dlopen'ed, run
 * on every data set and compared with output_N.pb: at least 30 must pass, none may fail; and
 * the tiny BERT, GPT-2 and Llama models of tests/models (symbolic batch and sequence) the same way.
 * KERNC_AOT_ALL=1 runs every node test of the suite instead of the list (refusals are counted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "frontend/frontend.h"
#include "kernc.h"

#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct aot_env {
  const char *kernc; /* the program, argv[1] */
  const char *tests; /* the tests folder, argv[2] */
  char dir[64];      /* scratch folder */
} aot_env;

/* Run a shell command made from fmt; its exit status. */
__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...) {
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return st == -1 ? -1 : WEXITSTATUS(st);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  size_t got = fread(buf, 1, (size_t)n, f);
  buf[got] = 0;
  fclose(f);
  return buf;
}

static const char *cc(void) {
  const char *c = getenv("CC");
  return c && *c ? c : "cc";
}

/* ---- a compiled model, loaded with dlopen --------------------------------------------------- */

typedef struct model {
  void *so;
  void *(*create)(int);
  int (*run)(void *, const kc_tensor_desc *, kc_tensor_desc *);
  void (*free)(void *);
  const char *(*error)(const void *);
} model;

static bool model_open(model *m, const char *path, const char *name) {
  memset(m, 0, sizeof *m);
  m->so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!m->so) {
    print_error("dlopen %s: %s\n", path, dlerror());
    return false;
  }
  char sym[256];
  snprintf(sym, sizeof sym, "%s_create", name);
  *(void **)&m->create = dlsym(m->so, sym);
  snprintf(sym, sizeof sym, "%s_run", name);
  *(void **)&m->run = dlsym(m->so, sym);
  snprintf(sym, sizeof sym, "%s_free", name);
  *(void **)&m->free = dlsym(m->so, sym);
  snprintf(sym, sizeof sym, "%s_error", name);
  *(void **)&m->error = dlsym(m->so, sym);
  return m->create && m->run && m->free && m->error;
}

static void model_close(model *m) {
  if (m->so) dlclose(m->so);
  m->so = NULL;
}

/* ---- the MLP ----------------------------------------------------------------------------------
 */

enum { IN = 16, HID = 32, OUT = 8 };

/* Values the driver computes the same way: integers scaled, exact in f32. */
static float xval(long i) { return (float)((i * 37) % 101 - 50) / 25.0f; }
static float wval(long i, int salt) { return (float)((i * 13 + salt) % 29 - 14) / 64.0f; }

/* x: f32[B,16] -> relu(x @ w1 + b1) -> @ w2 + b2 = y; outputs y, hidden, and x itself. */
static kc_graph *build_mlp(kc_context *ctx, float *w1, float *b1, float *w2, float *b2) {
  kc_graph *g = kc_graph_new(ctx, "mlp");
  for (long i = 0; i < IN * HID; i++)
    w1[i] = wval(i, 1);
  for (long i = 0; i < HID; i++)
    b1[i] = wval(i, 2);
  for (long i = 0; i < HID * OUT; i++)
    w2[i] = wval(i, 3);
  for (long i = 0; i < OUT; i++)
    b2[i] = wval(i, 4);
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){kc_sym(g, "batch"), IN});
  kc_val W1 = kc_weight(g, "w1", KC_F32, 2, (int64_t[]){IN, HID}, w1);
  kc_val B1 = kc_weight(g, "b1", KC_F32, 1, (int64_t[]){HID}, b1);
  kc_val W2 = kc_weight(g, "w2", KC_F32, 2, (int64_t[]){HID, OUT}, w2);
  kc_val B2 = kc_weight(g, "b2", KC_F32, 1, (int64_t[]){OUT}, b2);
  kc_val h = kc_relu(g, kc_add(g, kc_matmul(g, x, W1), B1));
  kc_output(g, kc_add(g, kc_matmul(g, h, W2), B2), "y");
  kc_output(g, h, "hidden");
  kc_output(g, kc_identity(g, x), "x_copy");
  return g;
}

/* y and hidden of batch b, in double. */
static void mlp_reference(long b, const float *w1, const float *b1, const float *w2,
                          const float *b2, double *y, double *hid) {
  for (long r = 0; r < b; r++) {
    for (int j = 0; j < HID; j++) {
      double s = b1[j];
      for (int k = 0; k < IN; k++)
        s += (double)xval(r * IN + k) * w1[k * HID + j];
      hid[r * HID + j] = s > 0 ? s : 0;
    }
    for (int j = 0; j < OUT; j++) {
      double s = b2[j];
      for (int k = 0; k < HID; k++)
        s += hid[r * HID + k] * w2[k * OUT + j];
      y[r * OUT + j] = s;
    }
  }
}

static const char *driver_src =
    "#include \"mlp.h\"\n"
    "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
    "static float xval(long i) { return (float)((i * 37) %% 101 - 50) / 25.0f; }\n"
    "int main(int argc, char **argv) {\n"
    "  if (argc != 4) return 3;\n"
    "  FILE *f = fopen(argv[3], \"wb\");\n"
    "  mlp_t *m = mlp_create(2);\n"
    "  if (!f || !m) return 4;\n"
    "  for (int run = 1; run <= 2; run++) {\n"
    "    long b = atol(argv[run]);\n"
    "    float *x = malloc((size_t)(b ? b : 1) * %d * sizeof *x);\n"
    "    for (long i = 0; i < b * %d; i++) x[i] = xval(i);\n"
    "    mlp_tensor in[mlp_NUM_INPUTS] = {{\"x\", KC_MODEL_F32, 2, {b, %d}, x}};\n"
    "    mlp_tensor out[mlp_NUM_OUTPUTS];\n"
    "    if (mlp_run(m, in, out) != 0) { fprintf(stderr, \"%%s\\n\", mlp_error(m)); return 1; }\n"
    "    for (int k = 0; k < mlp_NUM_OUTPUTS; k++) {\n"
    "      long n = 1;\n"
    "      for (int d = 0; d < out[k].rank; d++) n *= (long)out[k].dims[d];\n"
    "      fwrite(&out[k].rank, sizeof(int), 1, f);\n"
    "      fwrite(out[k].dims, sizeof(int64_t), (size_t)out[k].rank, f);\n"
    "      fwrite(out[k].data, sizeof(float), (size_t)n, f);\n"
    "    }\n"
    "    in[0].dims[1] = %d;\n" /* a static dim wrong: an error, reported by name */
    "    if (mlp_run(m, in, out) == 0) return 2;\n"
    "    printf(\"%%s\\n\", mlp_error(m));\n"
    "    free(x);\n"
    "  }\n"
    "  mlp_free(m);\n"
    "  return fclose(f) != 0;\n"
    "}\n";

/* Next output of the driver's file: rank, dims, then the floats (malloc'd). */
static float *read_output(FILE *f, int *rank, int64_t *dims, long *n) {
  assert_int_equal(fread(rank, sizeof(int), 1, f), 1);
  assert_in_range(*rank, 0, KC_MAX_RANK);
  assert_int_equal(fread(dims, sizeof(int64_t), (size_t)*rank, f), (size_t)*rank);
  *n = 1;
  for (int d = 0; d < *rank; d++)
    *n *= (long)dims[d];
  float *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
  assert_int_equal(fread(v, sizeof(float), (size_t)*n, f), (size_t)*n);
  return v;
}

/* One batch of the driver's file against the JIT and the reference. */
static void check_batch(FILE *f, kc_module *jit, long b, const float *w1, const float *b1,
                        const float *w2, const float *b2) {
  float *x = malloc((size_t)(b ? b : 1) * IN * sizeof *x);
  for (long i = 0; i < b * IN; i++)
    x[i] = xval(i);
  kc_tensor_desc in = {"x", KC_F32, 2, {b, IN}, x}, out[3];
  assert_int_equal(kc_run(jit, &in, 1, out, 3), KC_OK);
  double *y = malloc((size_t)(b ? b : 1) * OUT * sizeof *y);
  double *hid = malloc((size_t)(b ? b : 1) * HID * sizeof *hid);
  mlp_reference(b, w1, b1, w2, b2, y, hid);
  const double *ref[3] = {y, hid, NULL};
  const int64_t cols[3] = {OUT, HID, IN};
  for (int k = 0; k < 3; k++) {
    int rank;
    int64_t dims[KC_MAX_RANK];
    long n;
    float *v = read_output(f, &rank, dims, &n);
    assert_int_equal(rank, 2);
    assert_int_equal(dims[0], b);
    assert_int_equal(dims[1], cols[k]);
    /* the same kernels: the same bits as the JIT's */
    assert_memory_equal(v, out[k].data, (size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) {
      double want = ref[k] ? ref[k][i] : x[i];
      if (fabs(v[i] - want) > 1e-4 * (1 + fabs(want)))
        fail_msg("output %d [%ld] is %g, want %g", k, i, v[i], want);
    }
    free(v);
  }
  free(x);
  free(y);
  free(hid);
}

static void t_mlp_driver(void **st) {
  aot_env *e = *st;
  kc_context *ctx = kc_context_new();
  float w1[IN * HID], b1[HID], w2[HID * OUT], b2[OUT];
  kc_graph *g = build_mlp(ctx, w1, b1, w2, b2);
  char so[256], path[256];
  snprintf(so, sizeof so, "%s/libmlp.so", e->dir);
  kc_export_options o = {.source = "test_aot"};
  kc_status s = kc_export(ctx, g, &o, so, NULL);
  if (s != KC_OK) print_error("%s\n", kc_last_error(ctx));
  assert_int_equal(s, KC_OK);

  /* the header lists the interface */
  snprintf(path, sizeof path, "%s/mlp.h", e->dir);
  char *h = slurp(path);
  assert_non_null(h);
  assert_non_null(strstr(h, "f32[batch,16]"));
  assert_non_null(strstr(h, "f32[batch,8]"));
  assert_non_null(strstr(h, "mlp_t *mlp_create(int threads);"));
  assert_non_null(strstr(h, "#define mlp_OUTPUT_hidden 1"));
  free(h);

  /* a program that knows only the header and the library */
  snprintf(path, sizeof path, "%s/drv.c", e->dir);
  FILE *f = fopen(path, "w");
  fprintf(f, driver_src, IN, IN, IN, IN - 1);
  fclose(f);
  assert_int_equal(sh("%s -std=c11 -Wall -Wextra -Werror -o '%s/drv' '%s/drv.c' -I'%s' -L'%s' "
                      "-lmlp -Wl,-rpath,'%s'",
                      cc(), e->dir, e->dir, e->dir, e->dir, e->dir),
                   0);
  assert_int_equal(sh("'%s/drv' 3 33 '%s/out.bin' > '%s/msg.txt'", e->dir, e->dir, e->dir), 0);
  snprintf(path, sizeof path, "%s/msg.txt", e->dir);
  char *msg = slurp(path);
  assert_non_null(strstr(msg, "input 'x'"));
  assert_non_null(strstr(msg, "dim 1 must be 16"));
  free(msg);

  kc_module *jit = NULL;
  kc_compile_options co = {.target = "cpu", .threads = 2};
  assert_int_equal(kc_compile(ctx, g, &co, &jit), KC_OK);
  snprintf(path, sizeof path, "%s/out.bin", e->dir);
  f = fopen(path, "rb");
  assert_non_null(f);
  check_batch(f, jit, 3, w1, b1, w2, b2);
  check_batch(f, jit, 33, w1, b1, w2, b2);
  fclose(f);
  kc_module_free(jit);

  /* no libkernc, no LLVM: libc and its like only */
  char cmd[512];
  snprintf(cmd, sizeof cmd, "ldd '%s' 2>&1", so);
  FILE *p = popen(cmd, "r");
  char deps[4096] = "";
  size_t n = fread(deps, 1, sizeof deps - 1, p);
  deps[n] = 0;
  assert_int_equal(pclose(p), 0);
  print_message("ldd %s:\n%s", so, deps);
  assert_null(strstr(deps, "kernc"));
  assert_null(strstr(deps, "LLVM"));
  assert_non_null(strstr(deps, "libc.so"));

  /* only the entry points are exported: kernels and the runtime stay inside */
  model m;
  assert_true(model_open(&m, so, "mlp"));
  assert_null(dlsym(m.so, "kc_aot_run"));
  assert_null(dlsym(m.so, "kc_pool_run"));
  assert_null(dlsym(m.so, "k0_matmul"));
  assert_null(dlsym(m.so, "mlp_weights"));
  void *inst = m.create(1);
  assert_non_null(inst);
  float x[2 * IN] = {0};
  kc_tensor_desc in = {"x", KC_F32, 2, {2, IN}, x}, out[3];
  in.dtype = KC_I64;
  assert_int_equal(m.run(inst, &in, out), KC_ERR_TYPE);
  assert_non_null(strstr(m.error(inst), "input 'x' is i64"));
  in.dtype = KC_F32;
  in.name = "y";
  assert_int_equal(m.run(inst, &in, out), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(m.error(inst), "named 'y'"));
  in.name = NULL;
  in.dims[0] = 0; /* an empty batch */
  assert_int_equal(m.run(inst, &in, out), KC_OK);
  assert_string_equal(m.error(inst), "");
  assert_true(out[0].rank == 2 && out[0].dims[0] == 0 && out[0].dims[1] == OUT);
  m.free(inst);
  model_close(&m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* Dims that are expressions: an input's S+1 checked against the data, an output's 2*S+1. */
static void t_dim_exprs(void **st) {
  aot_env *e = *st;
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "cat");
  kc_dim S = kc_sym(g, "S");
  kc_val xs[2] = {kc_input(g, "x", KC_F32, 1, &S),
                  kc_input(g, "y", KC_F32, 1, (kc_dim[]){kc_dim_add(g, S, 1)})};
  kc_output(g, kc_concat(g, 2, xs, 0), "z");
  char so[256];
  snprintf(so, sizeof so, "%s/libcat.so", e->dir);
  kc_status s = kc_export(ctx, g, NULL, so, NULL);
  if (s != KC_OK) print_error("%s\n", kc_last_error(ctx));
  assert_int_equal(s, KC_OK);
  model m;
  assert_true(model_open(&m, so, "cat"));
  void *inst = m.create(0);
  float x[4] = {1, 2, 3, 0}, y[5] = {4, 5, 6, 7, 8};
  kc_tensor_desc in[2] = {{NULL, KC_F32, 1, {3}, x}, {NULL, KC_F32, 1, {4}, y}}, out[1];
  assert_int_equal(m.run(inst, in, out), KC_OK);
  assert_int_equal(out[0].dims[0], 7);
  assert_memory_equal(out[0].data, ((float[]){1, 2, 3, 4, 5, 6, 7}), 7 * sizeof(float));
  in[1].dims[0] = 5;
  assert_int_equal(m.run(inst, in, out), KC_ERR_SHAPE);
  assert_non_null(strstr(m.error(inst), "input 'y' is [5], but dim 0 must be S+1 = 4"));
  in[0].dims[0] = 4; /* S = 4 now: y fits, and the output grows */
  assert_int_equal(m.run(inst, in, out), KC_OK);
  assert_int_equal(out[0].dims[0], 9);
  m.free(inst);
  model_close(&m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* ---- refusals and errors -------------------------------------------------------------------- */

static void t_errors(void **st) {
  aot_env *e = *st;
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "dd");
  /* x reshaped to a shape read from an input: the size depends on data */
  kc_val x = kc_input(g, "x", KC_F32, 1, (kc_dim[]){6});
  kc_val shape = kc_input(g, "shape", KC_I64, 1, (kc_dim[]){2});
  kc_output(g, kc_relu(g, kc_reshape(g, x, shape)), "y");
  char so[256];
  snprintf(so, sizeof so, "%s/libdd.so", e->dir);
  assert_int_equal(kc_export(ctx, g, NULL, so, NULL), KC_ERR_UNSUPPORTED);
  print_message("refused: %s\n", kc_last_error(ctx));
  assert_non_null(strstr(kc_last_error(ctx), "(reshape)"));
  assert_non_null(strstr(kc_last_error(ctx), "computed data"));
  assert_int_equal(access(so, F_OK), -1);
  kc_graph_free(g);

  g = kc_graph_new(ctx, "ok");
  kc_output(g, kc_relu(g, kc_input(g, "x", KC_F32, 1, (kc_dim[]){4})), "y");
  assert_int_equal(kc_export(ctx, g, NULL, "/nonexistent-kc/libok.so", NULL), KC_ERR_IO);
  assert_non_null(strstr(kc_last_error(ctx), "'/nonexistent-kc' does not exist"));
  kc_export_options o = {.cc = "/nonexistent-kc/cc"};
  snprintf(so, sizeof so, "%s/libok.so", e->dir);
  assert_int_equal(kc_export(ctx, g, &o, so, NULL), KC_ERR_IO);
  assert_non_null(strstr(kc_last_error(ctx), "was not found"));
  o = (kc_export_options){.cc = "false"};
  assert_int_equal(kc_export(ctx, g, &o, so, NULL), KC_ERR_IO);
  assert_non_null(strstr(kc_last_error(ctx), "failed linking"));
  o = (kc_export_options){.name = "9lives"};
  assert_int_equal(kc_export(ctx, g, &o, so, NULL), KC_ERR_INVALID_ARG);
  assert_int_equal(access(so, F_OK), -1);
  /* nothing left behind */
  assert_int_equal(sh("ls -A '%s' | grep -q kernc-", e->dir), 1);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void t_cli(void **st) {
  aot_env *e = *st;
  const char *d = e->dir;
  assert_int_equal(
      sh("'%s' compile '%s/kir/golden/softmax.kir' -o '%s/libsm.so'", e->kernc, e->tests, d), 0);
  char path[256];
  snprintf(path, sizeof path, "%s/sm.h", d);
  char *h = slurp(path);
  assert_non_null(h);
  assert_non_null(strstr(h, "scores"));
  assert_non_null(strstr(h, "f32[B,12,S,S]"));
  free(h);
  assert_int_equal(sh("'%s' compile '%s/kir/golden/softmax.kir' --name soft --header '%s/s.h' "
                      "-o '%s/libsm2.so'",
                      e->kernc, e->tests, d, d),
                   0);
  assert_int_equal(sh("grep -q 'soft_run' '%s/s.h'", d), 0);
  assert_int_equal(sh("'%s' compile '%s/kir/golden/softmax.kir' 2>/dev/null", e->kernc, e->tests),
                   2);
  assert_int_equal(sh("'%s' compile '%s/kir/golden/softmax.kir' -o /nonexistent-kc/libx.so "
                      "2> '%s/e.txt'",
                      e->kernc, e->tests, d),
                   1);
  snprintf(path, sizeof path, "%s/e.txt", d);
  char *err = slurp(path);
  assert_non_null(strstr(err, "does not exist"));
  free(err);
}

/* ---- ONNX backend node tests through the AOT path --------------------------------------------
 */

/* Static shapes, across op families; each passes through the JIT (kernc check). */
static const char *const node_tests[] = {
    "test_abs",
    "test_add",
    "test_add_bcast",
    "test_add_uint8",
    "test_sub_bcast",
    "test_mul_bcast",
    "test_div_bcast",
    "test_div_int32_trunc",
    "test_pow_bcast_array",
    "test_pow_types_int64_int64",
    "test_relu",
    "test_sigmoid",
    "test_tanh",
    "test_exp",
    "test_log",
    "test_sqrt",
    "test_neg",
    "test_reciprocal",
    "test_erf",
    "test_sin",
    "test_cos",
    "test_gelu_tanh_1",
    "test_clip",
    "test_clip_default_int8_min",
    "test_where_example",
    "test_equal",
    "test_less",
    "test_greater_bcast",
    "test_and_bcast3v1d",
    "test_max_example",
    "test_min_int16",
    "test_cast_FLOAT_to_DOUBLE",
    "test_cast_FLOAT_to_FLOAT16",
    "test_cast_BFLOAT16_to_FLOAT",
    "test_identity",
    "test_constant",
    "test_reduce_mean_default_axes_keepdims_example",
    "test_reduce_sum_default_axes_keepdims_random",
    "test_reduce_max_default_axes_keepdim_example",
    "test_softmax_axis_1",
    "test_softmax_large_number",
    "test_logsoftmax_axis_0",
    "test_matmul_2d",
    "test_matmul_4d",
    "test_matmul_bcast",
    "test_gemm_all_attributes",
    "test_gemm_transposeB",
    "test_layer_normalization_3d_axis_negative_1_epsilon",
    "test_layer_normalization_4d_axis1",
    "test_rms_normalization_2d_axis1",
    "test_group_normalization_example_expanded",
    "test_mvn_expanded",
    "test_attention_4d_gqa_causal",
    "test_attention_3d_with_past_and_present",
    "test_attention_4d_fp16",
    "test_rotary_embedding",
    "test_transpose_all_permutations_3",
    "test_concat_3d_axis_1",
    "test_split_equal_parts_1d_opset18",
    "test_gather_0",
    "test_gather_negative_indices",
    "test_flatten_axis1",
    "test_tril",
    "test_triu_neg",
    "test_shape_start_1",
};

/* The node test folder of the onnx wheel (python3) or Debian's, into buf; false when neither. */
static bool node_dir(char *buf, size_t size) {
  FILE *p = popen("python3 -c 'import onnx, os; print(os.path.join(os.path.dirname("
                  "onnx.__file__), \"backend\", \"test\", \"data\", \"node\"))' 2>/dev/null",
                  "r");
  if (p) {
    char line[1024] = "";
    bool got = fgets(line, sizeof line, p) != NULL;
    pclose(p);
    line[strcspn(line, "\n")] = 0;
    struct stat st;
    if (got && stat(line, &st) == 0 && S_ISDIR(st.st_mode)) {
      snprintf(buf, size, "%s", line);
      return true;
    }
  }
  snprintf(buf, size, "/usr/share/libonnx-testdata/data/node");
  struct stat st;
  return stat(buf, &st) == 0 && S_ISDIR(st.st_mode);
}

typedef enum { NT_PASS, NT_FAIL, NT_REFUSED } nt_result;

/* Inputs of a data set as the model takes them (bf16 stored as u16 by older generators);
 * *broken when they contradict the model's declared inputs (a broken test, as kernc check says). */
static bool read_set(kc_context *ctx, const kc_graph *g, const char *set, const char *prefix,
                     uint32_t n, kc_pb_tensor *t, kc_tensor_desc *d, bool *broken, char *msg,
                     size_t size) {
  for (uint32_t i = 0; i < n; i++) {
    char path[1800];
    snprintf(path, sizeof path, "%s/%s_%u.pb", set, prefix, i);
    if (kc_tensor_pb_read(ctx, path, &t[i]) != KC_OK) {
      snprintf(msg, size, "%s", kc_last_error(ctx));
      return false;
    }
    kc_dtype want = prefix[0] == 'i' ? kc_val_dtype(g, kc_graph_input(g, i)) : t[i].t.dtype;
    d[i] = (kc_tensor_desc){NULL, t[i].t.dtype, t[i].t.rank, {0}, (void *)t[i].t.data};
    if (want == KC_BF16 && d[i].dtype == KC_U16) d[i].dtype = KC_BF16;
    memcpy(d[i].dims, t[i].t.dims, sizeof d[i].dims);
    if (prefix[0] == 'i' &&
        (d[i].dtype != want || d[i].rank != kc_val_rank(g, kc_graph_input(g, i)))) {
      snprintf(msg, size, "test data does not fit the model's declared input %u", i);
      *broken = true;
      return false;
    }
  }
  return true;
}

/* Every data set of an open model; false with msg at the first mismatch. */
static bool run_sets(kc_context *ctx, const kc_graph *g, model *m, const char *dir, bool *broken,
                     char *msg, size_t size) {
  uint32_t nin = kc_graph_num_inputs(g), nout = kc_graph_num_outputs(g);
  void *inst = m->create(1);
  bool ok = inst != NULL;
  for (int set = 0; ok; set++) {
    char sdir[1600];
    struct stat st;
    snprintf(sdir, sizeof sdir, "%s/test_data_set_%d", dir, set);
    if (stat(sdir, &st) != 0) break;
    kc_pb_tensor *it = calloc(nin + 1, sizeof *it), *ot = calloc(nout + 1, sizeof *ot);
    kc_tensor_desc *in = calloc(nin + 1, sizeof *in), *want = calloc(nout + 1, sizeof *want);
    kc_tensor_desc *out = calloc(nout + 1, sizeof *out);
    ok = read_set(ctx, g, sdir, "input", nin, it, in, broken, msg, size) &&
         read_set(ctx, g, sdir, "output", nout, ot, want, broken, msg, size);
    if (ok && m->run(inst, in, out) != 0) {
      snprintf(msg, size, "run: %s", m->error(inst));
      ok = false;
    }
    for (uint32_t k = 0; ok && k < nout; k++)
      ok =
          kc_check_compare(out[k].name, &out[k], &ot[k].t, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, size);
    for (uint32_t i = 0; i < nin; i++)
      kc_pb_tensor_free(&it[i]);
    for (uint32_t i = 0; i < nout; i++)
      kc_pb_tensor_free(&ot[i]);
    free(it);
    free(ot);
    free(in);
    free(want);
    free(out);
  }
  if (inst) m->free(inst);
  return ok;
}

/* passes: the pass list of kc_export (NULL: the default pipeline, "": nothing fused). */
static nt_result node_test(const aot_env *e, const char *suite, const char *name, int index,
                           const char *passes, char *msg, size_t size) {
  kc_context *ctx = kc_context_new();
  char dir[1400], file[1500], so[256], sym[32];
  snprintf(dir, sizeof dir, "%s/%s", suite, name);
  snprintf(file, sizeof file, "%s/model.onnx", dir);
  snprintf(so, sizeof so, "%s/libnode%d.so", e->dir, index);
  snprintf(sym, sizeof sym, "node%d", index);
  kc_graph *g = NULL;
  nt_result r = NT_FAIL;
  kc_status s = kc_onnx_load(ctx, file, &g);
  const char *random = NULL; /* an op drawing random numbers: values may not match (kernc check) */
  for (uint32_t i = 0; s == KC_OK && i < g->nnodes; i++)
    if (kc_ops[g->nodes[i].op].flags & KC_OPF_RANDOM) random = kc_ops[g->nodes[i].op].name;
  if (s == KC_OK)
    s = kc_export(ctx, g, &(kc_export_options){.name = sym, .passes = passes}, so, NULL);
  if (s != KC_OK) {
    snprintf(msg, size, "%s", kc_last_error(ctx));
    r = s == KC_ERR_UNSUPPORTED ? NT_REFUSED : NT_FAIL;
  } else {
    model m;
    bool broken = false;
    if (!model_open(&m, so, sym))
      snprintf(msg, size, "cannot load %s", so);
    else if (run_sets(ctx, g, &m, dir, &broken, msg, size))
      r = NT_PASS;
    else if (random || broken)
      r = NT_REFUSED;
    model_close(&m);
  }
  char header[300];
  snprintf(header, sizeof header, "%s/%s.h", e->dir, sym);
  unlink(so);
  unlink(header);
  kc_graph_free(g);
  kc_context_free(ctx);
  return r;
}

/* The tests kernc check excludes for known-wrong expected data (tests/onnx/excluded-*.txt). */
static char *load_excluded(const aot_env *e) {
  char path[1024];
  snprintf(path, sizeof path, "%s/onnx/excluded-libonnx-testdata.txt", e->tests ? e->tests : ".");
  return slurp(path);
}

/* name is the first word of a line of the exclusion list. */
static bool is_excluded(const char *list, const char *name) {
  size_t len = strlen(name);
  for (const char *p = list; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (strncmp(p, name, len) == 0 && (p[len] == ' ' || p[len] == '\n' || !p[len])) return true;
  return false;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void t_onnx_nodes(void **st) {
  aot_env *e = *st;
  char suite[1024];
  if (!node_dir(suite, sizeof suite)) {
    fail_msg("no ONNX node tests (onnx wheel or libonnx-testdata): scripts/setup.sh installs them");
  }
  const char *all = getenv("KERNC_AOT_ALL");
  char **names = NULL, *excluded = NULL;
  size_t n = 0;
  if (all && *all == '1') { /* every folder of the suite */
    DIR *dp = opendir(suite);
    assert_non_null(dp);
    for (struct dirent *de; (de = readdir(dp));)
      if (strncmp(de->d_name, "test_", 5) == 0) {
        names = realloc(names, (n + 1) * sizeof *names);
        names[n++] = strdup(de->d_name);
      }
    closedir(dp);
    qsort(names, n, sizeof *names, cmp_str);
    excluded = load_excluded(e);
  }
  int pass = 0, fail = 0, refused = 0, missing = 0;
  size_t count = names ? n : sizeof node_tests / sizeof *node_tests;
  for (size_t i = 0; i < count; i++) {
    const char *name = names ? names[i] : node_tests[i];
    char path[1100], msg[2048] = "";
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s/model.onnx", suite, name);
    if (stat(path, &sb) != 0) {
      missing++;
      continue;
    }
    if (is_excluded(excluded, name)) {
      refused++;
      continue;
    }
    nt_result r = node_test(e, suite, name, (int)i, NULL, msg, sizeof msg);
    if (r == NT_PASS) pass++;
    if (r == NT_PASS && names) print_message("PASS %s\n", name);
    if (r == NT_FAIL) {
      fail++;
      print_message("FAIL %s: %s\n", name, msg);
    }
    if (r == NT_REFUSED) {
      refused++;
      if (!names) print_message("REFUSED %s: %s\n", name, msg);
    }
  }
  print_message("AOT node tests (%s): %d passed, %d failed, %d refused, %d not in the suite\n",
                suite, pass, fail, refused, missing);
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
  free(excluded);
  if (!all) assert_true(pass >= 30);
  assert_int_equal(fail, 0);
}

/*
 * The tiny transformer models of tests/models (symbolic batch and sequence) through AOT, fused
 * (the default pipeline) and unfused (no passes): both against the same references.
 */
static void t_models(void **st) {
  aot_env *e = *st;
  static const char *const models[] = {"bert_tiny", "gpt2_tiny", "llama_tiny", "opset23_tiny"};
  static const char *const pipelines[] = {NULL, ""};
  char suite[1024];
  snprintf(suite, sizeof suite, "%s/models", e->tests);
  int fail = 0, index = 1000;
  for (size_t p = 0; p < 2; p++)
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
      char msg[2048] = "";
      nt_result r = node_test(e, suite, models[i], index++, pipelines[p], msg, sizeof msg);
      if (r != NT_PASS)
        print_error("%s %s (%s): %s\n", r == NT_FAIL ? "FAIL" : "REFUSED", models[i],
                    pipelines[p] ? "unfused" : "fused", msg);
      fail += r != NT_PASS;
    }
  assert_int_equal(fail, 0);
}

int main(int argc, char **argv) {
  aot_env e = {.kernc = argc > 1 ? argv[1] : NULL, .tests = argc > 2 ? argv[2] : NULL};
  snprintf(e.dir, sizeof e.dir, "/tmp/kc_aot_XXXXXX");
  if (!mkdtemp(e.dir)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_prestate(t_mlp_driver, &e),
      cmocka_unit_test_prestate(t_dim_exprs, &e),
      cmocka_unit_test_prestate(t_errors, &e),
      cmocka_unit_test_prestate(t_onnx_nodes, &e),
  };
  const struct CMUnitTest cli[] = {cmocka_unit_test_prestate(t_cli, &e),
                                   cmocka_unit_test_prestate(t_models, &e)};
  int failed = cmocka_run_group_tests_name("aot", tests, NULL, NULL);
  if (e.kernc && e.tests)
    failed += cmocka_run_group_tests_name("kernc compile, models", cli, NULL, NULL);
  sh("rm -rf '%s'", e.dir);
  return failed;
}
