/*
 * tests/test_aot.c - ahead-of-time compilation (kc_export, `kernc compile`): a model becomes a
 * shared library and a header, and programs that know nothing of kernc run it.
 *
 * Covered: an MLP with weights and a symbolic batch compiled to a .so, a C driver built with cc
 * against the generated header running it at two batch sizes in one process, its outputs equal
 * to the JIT's (kc_compile/kc_run) and to values computed here; an output that is a copy of an
 * input; input errors (static dim, dtype, name) reported through NAME_error; dims that are
 * expressions of symbols (checked on inputs, computed for outputs); `ldd` showing no
 * libkernc and no libLLVM; only the five entry points exported; graphs whose sizes depend on
 * computed data refused by node; a missing folder and a missing C compiler reported; the
 * `kernc compile` program (argv[1]); and ONNX backend node tests (found through python3's onnx,
 * else Debian's libonnx-testdata; a failure when neither is there) compiled to .so, dlopen'ed,
 * run on every data set and compared with output_N.pb: every listed one must be in the suite
 * and pass (the list is of tests that do; some need the onnx wheel's suite); and
 * every model of tests/models (symbolic batch and sequence: the tiny BERT, GPT-2 and Llama, and
 * the decoders whose sizes follow from shape arithmetic) the same way.
 * KERNC_AOT_ALL=1 runs every node test of the suite instead of the list (refusals are counted).
 *
 * The header's size macros: the MLP driver sizes and describes its tensors with them and checks
 * them against the outputs; for every node test and model above, a program built against the
 * generated header prints every macro for the first data set's symbol values, and they must
 * equal the dtypes and dims of the inputs and of the outputs the run returned; symbol and tensor
 * names that are no C identifiers get usable macros or none. Gather's index check in a library
 * (tests/gather_cases.h: 1, 64, 65 and 10^6 indices from an input, computed or constant, right
 * values, one out of range an error naming the node, CPU and --target=cuda), and the example
 * GPT-2 compiled and run on 65 tokens (it has 64 positions) failing, naming its position
 * Gather, as `kernc run` does. The CPU check: the
 * runtime's cpuid detection agrees with LLVM's on every feature LLVM reports for this machine;
 * the library records exactly the features LLVM compiled it for; and a copy of a library whose
 * record names a feature this CPU lacks refuses to create, naming it through NAME_error(NULL).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "codegen/aot.h" /* the AOT runtime's CPU check, linked here through libkernc */
#include "tools/check/check.h"
#include "ir/internal.h"
#include "kernc.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/gather_cases.h"

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

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
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

static bool check_header(const aot_env *e, const kc_graph *g, const char *sym,
                         const kc_tensor_desc *in, const kc_tensor_desc *out, char *msg,
                         size_t size);

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
    /* the header's size macros, fixed ones at compile time */
    "_Static_assert(mlp_INPUT_x_DTYPE == KC_MODEL_F32 && mlp_INPUT_x_ELEM_SIZE == 4, \"x\");\n"
    "_Static_assert(mlp_INPUT_x_RANK == 2 && mlp_INPUT_x_DIM_1 == %d, \"x dims\");\n"
    "_Static_assert(mlp_OUTPUT_y_DIM_1 == %d && mlp_OUTPUT_hidden_DIM_1 == %d, \"y, hidden\");\n"
    "_Static_assert(mlp_NUM_SYMS == 1 && mlp_SYM_batch == 0, \"symbols\");\n"
    "_Static_assert(KC_MODEL_FLOORDIV(-7, 2) == -4 && KC_MODEL_FLOORMOD(-7, 2) == 1, \"floor\");\n"
    "_Static_assert(KC_MODEL_FLOORDIV(7, -2) == -4 && KC_MODEL_FLOORMOD(7, -2) == -1, \"floor\");\n"
    "_Static_assert(KC_MODEL_FLOORDIV(6, 3) == 2 && KC_MODEL_FLOORMOD(6, 3) == 0, \"floor\");\n"
    "static float xval(long i) { return (float)((i * 37) %% 101 - 50) / 25.0f; }\n"
    "int main(int argc, char **argv) {\n"
    "  if (argc != 4) return 3;\n"
    "  FILE *f = fopen(argv[3], \"wb\");\n"
    "  mlp_t *m = mlp_create(2);\n"
    "  if (!m) fprintf(stderr, \"%%s\\n\", mlp_error(NULL));\n"
    "  if (!f || !m) return 4;\n"
    "  for (int run = 1; run <= 2; run++) {\n"
    "    long b = atol(argv[run]);\n"
    "    float *x = malloc((size_t)mlp_INPUT_x_BYTES(b) + 1);\n"
    "    for (long i = 0; i < mlp_INPUT_x_NUMEL(b); i++) x[i] = xval(i);\n"
    "    mlp_tensor in[mlp_NUM_INPUTS] = {\n"
    "        {\"x\", mlp_INPUT_x_DTYPE, mlp_INPUT_x_RANK, mlp_INPUT_x_DIMS(b), x}};\n"
    "    mlp_tensor out[mlp_NUM_OUTPUTS];\n"
    "    if (mlp_run(m, in, out) != 0) { fprintf(stderr, \"%%s\\n\", mlp_error(m)); return 1; }\n"
    "    const int64_t want[mlp_NUM_OUTPUTS][2] = {\n"
    "        [mlp_OUTPUT_y] = mlp_OUTPUT_y_DIMS(b), [mlp_OUTPUT_hidden] = "
    "mlp_OUTPUT_hidden_DIMS(b),\n"
    "        [mlp_OUTPUT_x_copy] = mlp_OUTPUT_x_copy_DIMS(b)};\n"
    "    const int64_t bytes[mlp_NUM_OUTPUTS] = {mlp_OUTPUT_y_BYTES(b), "
    "mlp_OUTPUT_hidden_BYTES(b),\n"
    "                                            mlp_OUTPUT_x_copy_BYTES(b)};\n"
    "    for (int k = 0; k < mlp_NUM_OUTPUTS; k++) {\n"
    "      long n = 1;\n"
    "      for (int d = 0; d < out[k].rank; d++) n *= (long)out[k].dims[d];\n"
    "      if (out[k].rank != 2 || memcmp(out[k].dims, want[k], sizeof want[k]) != 0 ||\n"
    "          (int64_t)(n * sizeof(float)) != bytes[k]) return 5;\n"
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
  assert_non_null(strstr(h, "#define mlp_OUTPUT_y_DIM_0(batch) ((int64_t)(batch))"));
  assert_non_null(strstr(h, "#define mlp_OUTPUT_y_DIM_1 8\n"));
  free(h);

  /* a program that knows only the header and the library */
  snprintf(path, sizeof path, "%s/drv.c", e->dir);
  FILE *f = fopen(path, "w");
  fprintf(f, driver_src, IN, OUT, HID, IN - 1);
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

/* Dims that are expressions: an input's S+1 checked against the data, an output's 2*S+1, and
 * the floor division of a slice by step 2 (in the header's macros too). */
static void t_dim_exprs(void **st) {
  aot_env *e = *st;
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "cat");
  kc_dim S = kc_sym(g, "S");
  kc_val xs[2] = {kc_input(g, "x", KC_F32, 1, &S),
                  kc_input(g, "y", KC_F32, 1, (kc_dim[]){kc_dim_add(g, S, 1)})};
  kc_output(g, kc_concat(g, 2, xs, 0), "z");
  kc_val one = kc_const_i64s(g, 1, (int64_t[]){1}),
         big = kc_const_i64s(g, 1, (int64_t[]){INT64_MAX});
  kc_val zero = kc_const_i64s(g, 1, (int64_t[]){0}), two = kc_const_i64s(g, 1, (int64_t[]){2});
  kc_output(g, kc_slice(g, xs[0], one, big, zero, two), "odd"); /* x[1::2]: (S-1+1)/2 */
  char so[256];
  snprintf(so, sizeof so, "%s/libcat.so", e->dir);
  kc_status s = kc_export(ctx, g, NULL, so, NULL);
  if (s != KC_OK) print_error("%s\n", kc_last_error(ctx));
  assert_int_equal(s, KC_OK);
  model m;
  assert_true(model_open(&m, so, "cat"));
  void *inst = m.create(0);
  float x[4] = {1, 2, 3, 0}, y[5] = {4, 5, 6, 7, 8};
  kc_tensor_desc in[2] = {{NULL, KC_F32, 1, {3}, x}, {NULL, KC_F32, 1, {4}, y}}, out[2];
  assert_int_equal(m.run(inst, in, out), KC_OK);
  assert_int_equal(out[0].dims[0], 7);
  assert_memory_equal(out[0].data, ((float[]){1, 2, 3, 4, 5, 6, 7}), 7 * sizeof(float));
  assert_int_equal(out[1].dims[0], 1);
  /* the header's macros compute S+1, 2*S+1 and the slice's size from S */
  char msg[2048] = "", path[300];
  if (!check_header(e, g, "cat", in, out, msg, sizeof msg)) fail_msg("%s", msg);
  snprintf(path, sizeof path, "%s/cat.h", e->dir);
  char *h = slurp(path);
  assert_non_null(strstr(h, "KC_MODEL_FLOORDIV(") && strstr(h, "#define cat_OUTPUT_odd_DIM_0(S)"));
  free(h);
  in[1].dims[0] = 5;
  assert_int_equal(m.run(inst, in, out), KC_ERR_SHAPE);
  assert_non_null(strstr(m.error(inst), "input 'y' is [5], but dim 0 must be S+1 = 4"));
  in[0].dims[0] = 4; /* S = 4 now: y fits, and the output grows */
  assert_int_equal(m.run(inst, in, out), KC_OK);
  assert_int_equal(out[0].dims[0], 9);
  assert_int_equal(out[1].dims[0], 2);
  if (!check_header(e, g, "cat", in, out, msg, sizeof msg)) fail_msg("%s", msg);
  m.free(inst);
  model_close(&m);
  /* x[1:1000:2]'s size (999+1)/2 = 500 holds only while S >= 1000, which ONNX would clamp to
   * S/2: a smaller S is refused, naming the slice, not run with a wrong size */
  kc_val end = kc_const_i64s(g, 1, (int64_t[]){1000});
  kc_output(g, kc_slice(g, xs[0], one, end, zero, two), "odd1000");
  snprintf(so, sizeof so, "%s/libcat2.so", e->dir);
  assert_int_equal(kc_export(ctx, g, NULL, so, NULL), KC_OK);
  model m2;
  assert_true(model_open(&m2, so, "cat2"));
  void *inst2 = m2.create(0);
  kc_tensor_desc out3[3];
  assert_int_equal(m2.run(inst2, in, out3), KC_ERR_SHAPE);
  print_message("S = 4: %s\n", m2.error(inst2));
  assert_non_null(strstr(m2.error(inst2), "(slice) was compiled assuming its bounds on "
                                          "axis 0 lie within its size S"));
  float big_x[1000] = {0}, big_y[1001] = {0};
  big_x[999] = 42;
  kc_tensor_desc big_in[2] = {{NULL, KC_F32, 1, {1000}, big_x}, {NULL, KC_F32, 1, {1001}, big_y}};
  assert_int_equal(m2.run(inst2, big_in, out3), KC_OK);
  assert_int_equal(out3[2].dims[0], 500);
  assert_true(((float *)out3[2].data)[499] == 42);
  m2.free(inst2);
  model_close(&m2);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* Names that are not C identifiers: symbols get usable macro parameters (kc_symK where two
 * would be the same, or a name is no identifier), tensors whose C names clash get no macros. */
static void t_header_names(void **st) {
  aot_env *e = *st;
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "w");
  kc_val xs[3] = {kc_input(g, "p", KC_F32, 1, (kc_dim[]){kc_sym(g, "a-b")}),
                  kc_input(g, "q", KC_F32, 1, (kc_dim[]){kc_sym(g, "a_b")}),
                  kc_input(g, "r", KC_F32, 1, (kc_dim[]){kc_sym(g, "2x")})};
  kc_output(g, kc_concat(g, 3, xs, 0), "y");
  kc_output(g, kc_relu(g, xs[0]), "in.put");
  kc_output(g, kc_relu(g, xs[1]), "in-put");
  char so[256], path[256];
  snprintf(so, sizeof so, "%s/libw.so", e->dir);
  kc_status s = kc_export(ctx, g, NULL, so, NULL);
  if (s != KC_OK) print_error("%s\n", kc_last_error(ctx));
  assert_int_equal(s, KC_OK);
  snprintf(path, sizeof path, "%s/w.c", e->dir);
  FILE *f = fopen(path, "w");
  fprintf(f,
          "#include \"w.h\"\n"
          "_Static_assert(w_NUM_SYMS == 3 && w_SYM_a_b == 0 && w_SYM_kc_sym1 == 1, \"a_b\");\n"
          "_Static_assert(w_SYM_kc_sym2 == 2 && w_OUTPUT_y == 0, \"2x\");\n"
          "#if defined(w_OUTPUT_in_put) || defined(w_OUTPUT_in_put_RANK)\n#error clash\n#endif\n"
          "int main(void) {\n"
          "  int64_t d[] = w_OUTPUT_y_DIMS(1, 2, 3);\n"
          "  return w_OUTPUT_y_DIM_0(1, 2, 3) == 6 && d[0] == 6 && w_INPUT_r_DIM_0(1, 2, 3) == 3 "
          "&& w_OUTPUT_y_BYTES(1, 2, 3) == 24 ? 0 : 1;\n}\n");
  fclose(f);
  assert_int_equal(sh("%s -std=c11 -Wall -Wextra -Werror -I'%s' -o '%s/w' '%s/w.c' && '%s/w'", cc(),
                      e->dir, e->dir, e->dir, e->dir),
                   0);
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
  assert_non_null(strstr(kc_last_error(ctx), "depends on tensor data"));
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

/* ---- index checks ------------------------------------------------------------------------- */

/* One compiled gather model run on n indices (bad: one out of range); failures printed. */
static int gather_case(model *m, void *inst, int kind, const int64_t *ids, int64_t n, int64_t bad,
                       const char *what) {
  int64_t *in = gc_input(kind, ids, n);
  kc_tensor_desc din = {.name = "ids", .dtype = KC_I64, .rank = 1, .dims = {n}, .data = in}, y;
  int rc = m->run(inst, kind == GC_CONSTANT ? NULL : &din, &y);
  char msg[1024] = "";
  bool ok = bad ? rc != 0 && gc_check_error(m->error(inst), bad, true, msg, sizeof msg)
                : rc == 0 && gc_check_y(&y, ids, n, msg, sizeof msg);
  if (!ok && !msg[0]) snprintf(msg, sizeof msg, "%s", rc ? m->error(inst) : "ran without an error");
  if (!ok)
    print_error("FAIL gather library %s, %lld indices, bad %lld: %s\n", what, (long long)n,
                (long long)bad, msg);
  free(in);
  return !ok;
}

/* The gather cases through libraries for target ("cpu" or "cuda"); quick: fewer constant ones
 * (each is a library of its own). Returns the failures. */
static int gather_libs(const aot_env *e, const char *target, bool quick) {
  static const int64_t bads[] = {0, 64, 70, -65};
  kc_context *ctx = kc_context_new();
  int fails = 0, index = 0;
  for (int kind = 0; kind < 3; kind++) {
    size_t nl = kind == GC_CONSTANT ? sizeof gc_lengths / sizeof *gc_lengths : 1;
    for (size_t l = 0; l < nl; l++)
      for (size_t b = 0; b < (kind == GC_CONSTANT ? sizeof bads / sizeof *bads : 1); b++) {
        int64_t n = gc_lengths[l], bad = kind == GC_CONSTANT ? bads[b] : 0, pos;
        if (quick && kind == GC_CONSTANT && (b > 2 || (n < 64 && b))) continue;
        int64_t *ids = gc_ids(n, bad, &pos);
        kc_graph *g = gc_graph(ctx, kind, n, ids);
        char so[300], sym[32], what[64];
        snprintf(sym, sizeof sym, "gat%d", index++);
        snprintf(so, sizeof so, "%s/lib%s.so", e->dir, sym);
        snprintf(what, sizeof what, "%s kind %d", target, kind);
        kc_export_options o = {.name = sym, .target = target};
        kc_status s = kc_graph_status(g);
        bool built = s == KC_OK;
        if (s == KC_OK) s = kc_export(ctx, g, &o, so, NULL);
        model m = {0};
        if (s != KC_OK) { /* refused when made or compiled: only a bad constant may be */
          char msg[1024] = "";
          if (!bad || !gc_check_error(kc_last_error(ctx), bad, built, msg, sizeof msg)) {
            print_error("FAIL gather library %s, %lld indices, bad %lld: %s %s\n", what,
                        (long long)n, (long long)bad, kc_last_error(ctx), msg);
            fails++;
          }
        } else if (!model_open(&m, so, sym)) {
          fails++;
        } else {
          void *inst = m.create(0);
          if (!inst) {
            print_error("FAIL gather library %s: create: %s\n", what, m.error(NULL));
            fails++;
          } else if (kind == GC_CONSTANT) {
            fails += gather_case(&m, inst, kind, ids, n, bad, what);
          } else {
            for (size_t k = 0; k < sizeof gc_lengths / sizeof *gc_lengths; k++)
              for (size_t j = 0; j < sizeof bads / sizeof *bads; j++) {
                int64_t *v = gc_ids(gc_lengths[k], bads[j], &pos);
                fails += gather_case(&m, inst, kind, v, gc_lengths[k], bads[j], what);
                free(v);
              }
          }
          if (inst) m.free(inst);
          model_close(&m);
        }
        kc_graph_free(g);
        free(ids);
      }
  }
  kc_context_free(ctx);
  return fails;
}

/* A .npy of ids i64[1, n] (token ids j % 100) at path. */
static void write_ids_npy(const char *path, int n) {
  char head[128];
  int len = snprintf(head, sizeof head,
                     "{'descr': '<i8', 'fortran_order': False, 'shape': (1, %d), }", n);
  while ((len + 11) % 64)
    head[len++] = ' ';
  head[len - 1] = '\n';
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)len, 0};
  fwrite(pre, 1, 10, f);
  fwrite(head, 1, (size_t)len, f);
  for (int64_t j = 0; j < n; j++) {
    int64_t v = j % 100;
    fwrite(&v, sizeof v, 1, f);
  }
  fclose(f);
}

static void t_gather(void **st) {
  aot_env *e = *st;
  assert_int_equal(gather_libs(e, "cpu", false), 0);
  /* the example GPT-2 has 64 positions: 65 tokens are an error in the library and in kernc run */
  kc_context *ctx = kc_context_new();
  char path[1200], so[300];
  snprintf(path, sizeof path, "%s/../examples/gpt2_tiny.onnx", e->tests);
  kc_graph *g = NULL;
  assert_int_equal(kc_onnx_load(ctx, path, &g), KC_OK);
  snprintf(so, sizeof so, "%s/libgpt65.so", e->dir);
  assert_int_equal(kc_export(ctx, g, &(kc_export_options){.name = "gpt65"}, so, NULL), KC_OK);
  model m;
  assert_true(model_open(&m, so, "gpt65"));
  void *inst = m.create(0);
  assert_non_null(inst);
  int64_t ids[65] = {0};
  kc_tensor_desc in = {
      .name = "input_ids", .dtype = KC_I64, .rank = 2, .dims = {1, 64}, .data = ids};
  kc_tensor_desc out[1];
  assert_int_equal(m.run(inst, &in, out), 0);
  in.dims[1] = 65;
  assert_int_equal(m.run(inst, &in, out), KC_ERR_INVALID_ARG);
  print_message("65 tokens: %s\n", m.error(inst));
  assert_non_null(strstr(m.error(inst), "node '/wpe/Gather' (gather, %"));
  assert_non_null(strstr(m.error(inst), "index 64 at position 64 of its indices is out of range "
                                        "for axis 0 of size 64"));
  m.free(inst);
  model_close(&m);
  kc_graph_free(g);
  kc_context_free(ctx);
  char npy[300], err[300];
  snprintf(npy, sizeof npy, "%s/ids65.npy", e->dir);
  snprintf(err, sizeof err, "%s/run65.txt", e->dir);
  write_ids_npy(npy, 65);
  assert_int_equal(
      sh("'%s' run '%s' --input input_ids='%s' > /dev/null 2> '%s'", e->kernc, path, npy, err), 1);
  char *text = slurp(err);
  print_message("kernc run, 65 tokens: %s", text);
  assert_non_null(strstr(text, "node '/wpe/Gather' (gather, %"));
  assert_non_null(strstr(text, "index 64 at position 64 of its indices is out of range"));
  free(text);
  write_ids_npy(npy, 64);
  assert_int_equal(sh("'%s' run '%s' --input input_ids='%s' > /dev/null", e->kernc, path, npy), 0);
}

/* ---- the CPU check ------------------------------------------------------------------------ */

/* The entries of LLVM's feature list for this machine starting with sign ('+' or '-'), names
 * only, comma-separated. */
static char *host_features(char sign) {
  char *all = LLVMGetHostCPUFeatures();
  char *out = calloc(strlen(all) + 2, 1);
  for (const char *p = all; *p;) {
    size_t len = strcspn(p, ",");
    if (len > 1 && p[0] == sign) {
      if (*out) strcat(out, ",");
      strncat(out, p + 1, len - 1);
    }
    p += len + (p[len] == ',');
  }
  LLVMDisposeMessage(all);
  return out;
}

/* The name list as a sorted "+a,+b" list, as the object records it. */
static char *plus_sorted(const char *names) {
  char *copy = strdup(names), *words[512];
  size_t n = 0;
  for (char *w = strtok(copy, ","); w && n < 512; w = strtok(NULL, ","))
    words[n++] = w;
  qsort(words, n, sizeof *words, cmp_str);
  char *out = calloc(strlen(names) + n + 2, 1);
  for (size_t i = 0; i < n; i++) {
    if (i) strcat(out, ",");
    strcat(out, "+");
    strcat(out, words[i]);
  }
  free(copy);
  return out;
}

typedef struct thread_arg {
  model *m;
  const char **out;
} thread_arg;

static void *error_of_null(void *arg) {
  thread_arg *a = arg;
  *a->out = a->m->error(NULL);
  return NULL;
}

static void t_cpu_check(void **st) {
  aot_env *e = *st;
#if !defined(__x86_64__)
  skip(); /* the runtime checks x86-64 features only */
#else
  /* the runtime decides every feature LLVM detects on this machine as LLVM does */
  char *have = host_features('+'), *lack = host_features('-'), *plus = plus_sorted(have);
  char lacks[4096], unknown[4096];
  assert_int_equal(kc_aot_cpu_lacks(plus, lacks, sizeof lacks, unknown, sizeof unknown), 0);
  assert_string_equal(lacks, "");
  assert_string_equal(unknown, "");
  char *copy = strdup(lack), *missing = NULL;
  int nlack = 0;
  for (char *w = strtok(copy, ","); w; w = strtok(NULL, ",")) {
    char one[128];
    snprintf(one, sizeof one, "+%s", w);
    int got = kc_aot_cpu_lacks(one, lacks, sizeof lacks, unknown, sizeof unknown);
    /* LLVM 19 reads cpuid leaf 0x24 without setting the subleaf (ECX), so it can miss
     * avx10.1-512 that subleaf 0 reports; the runtime reads subleaf 0, as Intel specifies */
    if (got == 0 && !*unknown && strcmp(w, "avx10.1-512") == 0) {
      unsigned a, b, c, d;
      __cpuid_count(0x24, 0, a, b, c, d);
      assert_true((b >> 18) & 1);
      continue;
    }
    if (got != 1 || strcmp(lacks, w) != 0)
      fail_msg("LLVM says this CPU lacks %s; the runtime says lacking '%s', unknown '%s'", w, lacks,
               unknown);
    if (!missing) missing = strdup(w);
    nlack++;
  }
  print_message("CPU check: the runtime agrees with LLVM's detection; LLVM says this CPU lacks "
                "%d features (%s)\n",
                nlack, lack);
  assert_non_null(missing); /* every x86 CPU lacks some feature LLVM knows */
  assert_int_equal(
      kc_aot_cpu_lacks("+sse2,-sse2,+no-such,,+", lacks, sizeof lacks, unknown, sizeof unknown), 0);
  assert_string_equal(unknown, "no-such");

  /* the library records exactly the features LLVM compiled it for */
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "cpu");
  kc_output(g, kc_relu(g, kc_input(g, "x", KC_F32, 1, (kc_dim[]){4})), "y");
  char so[256], lacking_so[256];
  snprintf(so, sizeof so, "%s/libcpu.so", e->dir);
  snprintf(lacking_so, sizeof lacking_so, "%s/libcpu_lacking.so", e->dir);
  assert_int_equal(kc_export(ctx, g, NULL, so, NULL), KC_OK);
  FILE *f = fopen(so, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *bytes = malloc((size_t)n + 1);
  assert_int_equal(fread(bytes, 1, (size_t)n, f), (size_t)n);
  bytes[n] = 0;
  fclose(f);
  char *rec = NULL;
  for (long i = 0; i + 20 <= n && !rec; i++)
    if (memcmp(bytes + i, "kernc-target triple=", 20) == 0) rec = bytes + i;
  assert_non_null(rec);
  print_message("recorded: %.200s...\n", rec ? rec : "");
  char *list = strstr(rec, " features=");
  assert_non_null(list);
  list += 10;
  assert_string_equal(list, plus);

  /* a copy whose record names a feature this CPU lacks: create refuses and says why. The first
   * entries are overwritten with "+missing" and commas (empty entries are skipped). */
  size_t want = strlen(missing) + 1, at = 0;
  while (list[at] && (at < want || list[at] != ','))
    at++;
  assert_true(at >= want);
  memset(list, ',', at);
  list[0] = '+';
  memcpy(list + 1, missing, strlen(missing));
  f = fopen(lacking_so, "wb");
  assert_int_equal(fwrite(bytes, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  free(bytes);

  model m;
  assert_true(model_open(&m, so, "cpu"));
  void *inst = m.create(1);
  assert_non_null(inst);
  m.free(inst);
  assert_string_equal(m.error(NULL), "no model");
  model_close(&m);
  assert_true(model_open(&m, lacking_so, "cpu"));
  assert_null(m.create(1));
  const char *err = m.error(NULL);
  print_message("create refused: %s\n", err);
  char expect[256];
  snprintf(expect, sizeof expect, "this CPU lacks %s ", missing);
  assert_non_null(strstr(err, "libcpu_lacking.so was compiled for x86_64 CPU '"));
  assert_non_null(strstr(err, expect));
  /* the message is this thread's: another thread has not failed */
  pthread_t th;
  const char *other = NULL;
  assert_int_equal(pthread_create(&th, NULL, error_of_null, &(thread_arg){&m, &other}), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_string_equal(other, "no model");
  model_close(&m);

  free(have);
  free(lack);
  free(plus);
  free(copy);
  free(missing);
  kc_graph_free(g);
  kc_context_free(ctx);
#endif
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

/* ---- the header's size macros against a run ---------------------------------------------- */

/* One tensor of a header: the prefix of its macros, input or output, and its index. */
typedef struct hdr_tensor {
  char prefix[300];
  bool input, fn; /* fn: its size macros take the symbols */
  long index;
} hdr_tensor;

/* The value of `#define name VALUE` in header h, as a long; false when there is no such line. */
static bool hdr_value(const char *h, const char *name, long *v) {
  char key[400];
  snprintf(key, sizeof key, "\n#define %s ", name);
  const char *p = strstr(h, key);
  if (!p) return false;
  *v = strtol(p + strlen(key), NULL, 10);
  return true;
}

/*
 * The size macros of header `sym`.h in e->dir against the tensors of a run: a program built
 * against the header prints every macro of every tensor, called with the symbol values that
 * in's dims bind (by the names g's inputs give them), and each must match in/out.
 */
static bool check_header(const aot_env *e, const kc_graph *g, const char *sym,
                         const kc_tensor_desc *in, const kc_tensor_desc *out, char *msg,
                         size_t size) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s.h", e->dir, sym);
  char *h = slurp(path);
  if (!h) {
    snprintf(msg, size, "no header %s", path);
    return false;
  }
  /* the symbol values: lone-symbol dims of the inputs; arguments in the header's SYM order */
  long nsyms = 0;
  snprintf(path, sizeof path, "%s_NUM_SYMS", sym);
  hdr_value(h, path, &nsyms);
  char args[1024] = "";
  bool ok = true;
  for (long k = 0; k < nsyms && ok; k++) {
    bool found = false;
    for (uint32_t i = 0; i < kc_graph_num_inputs(g) && !found; i++) {
      const kc_value *v = kc_value_of(g, kc_graph_input(g, i));
      for (int d = 0; d < v->rank && !found; d++) {
        if (!KC_DIM_IS_SYM(v->dims[d])) continue;
        const kc_dexpr *x = &g->dexprs[KC_DIM_EXPR(v->dims[d])];
        if (x->kind != KC_DX_SYM) continue;
        char name[300], id[200];
        size_t j = 0;
        for (const char *c = x->name; *c && j + 1 < sizeof id; c++)
          id[j++] = isalnum((unsigned char)*c) || *c == '_' ? *c : '_';
        id[j] = 0;
        snprintf(name, sizeof name, "%s_SYM_%s", sym, id);
        long idx;
        if (hdr_value(h, name, &idx) && idx == k) {
          size_t l = strlen(args);
          snprintf(args + l, sizeof args - l, "%s(int64_t)%lld", k ? ", " : "",
                   (long long)in[i].dims[d]);
          found = true;
        }
      }
    }
    if (!found) {
      snprintf(msg, size, "header: symbol %ld is bound by no input dim", k);
      ok = false;
    }
  }
  /* the tensors: every NAME_{INPUT,OUTPUT}_x with an x_RANK */
  hdr_tensor *t = calloc(kc_graph_num_inputs(g) + kc_graph_num_outputs(g) + 1, sizeof *t);
  size_t nt = 0;
  for (const char *p = h; ok && (p = strstr(p, "\n#define ")); p++) {
    const char *name = p + 9, *end = name + strcspn(name, " (\n");
    size_t len = (size_t)(end - name);
    if (len < 6 || strncmp(end - 5, "_RANK", 5) != 0 || *end != ' ') continue;
    hdr_tensor *x = &t[nt];
    snprintf(x->prefix, sizeof x->prefix, "%.*s", (int)(len - 5), name);
    char in_pre[64], out_pre[64], key[400];
    snprintf(in_pre, sizeof in_pre, "%s_INPUT_", sym);
    snprintf(out_pre, sizeof out_pre, "%s_OUTPUT_", sym);
    x->input = strncmp(x->prefix, in_pre, strlen(in_pre)) == 0;
    if (!x->input && strncmp(x->prefix, out_pre, strlen(out_pre)) != 0) continue;
    snprintf(key, sizeof key, "\n#define %s_NUMEL(", x->prefix);
    x->fn = strstr(h, key) != NULL;
    ok =
        hdr_value(h, x->prefix, &x->index) && nt < kc_graph_num_inputs(g) + kc_graph_num_outputs(g);
    if (!ok) snprintf(msg, size, "header: no index macro %s", x->prefix);
    nt++;
  }
  if (ok && nt != kc_graph_num_inputs(g) + kc_graph_num_outputs(g)) {
    snprintf(msg, size, "header: size macros for %zu tensors, the model has %u", nt,
             kc_graph_num_inputs(g) + kc_graph_num_outputs(g));
    ok = false;
  }
  /* a program printing them all */
  FILE *f = NULL;
  if (ok) {
    snprintf(path, sizeof path, "%s/%s_sizes.c", e->dir, sym);
    f = fopen(path, "w");
    ok = f != NULL;
  }
  if (ok) {
    fprintf(f, "#include \"%s.h\"\n#include <stdio.h>\nint main(void) {\n", sym);
    for (size_t i = 0; i < nt; i++) {
      const hdr_tensor *x = &t[i];
      const kc_tensor_desc *d = x->input ? &in[x->index] : &out[x->index];
      char a[1100];
      snprintf(a, sizeof a, "(%s)", args);
      const char *A = x->fn ? a : "";
      fprintf(f, "  { int64_t dims[] = %s_DIMS%s;\n", x->prefix, A);
      fprintf(f,
              "    printf(\"%%d %%d %%d %%lld %%lld\", (int)%s_DTYPE, %s_ELEM_SIZE, %s_RANK, "
              "(long long)%s_NUMEL%s, (long long)%s_BYTES%s);\n",
              x->prefix, x->prefix, x->prefix, x->prefix, A, x->prefix, A);
      for (int k = 0; k < d->rank; k++) {
        char key[400];
        snprintf(key, sizeof key, "\n#define %s_DIM_%d(", x->prefix, k);
        fprintf(f, "    printf(\" %%lld %%lld\", (long long)%s_DIM_%d%s, (long long)dims[%d]);\n",
                x->prefix, k, strstr(h, key) ? a : "", k);
      }
      fprintf(f, "    (void)dims; printf(\"\\n\"); }\n");
    }
    fprintf(f, "  return 0;\n}\n");
    fclose(f);
    ok = sh("%s -std=c11 -Wall -Wextra -Werror -I'%s' -o '%s/%s_sizes' '%s/%s_sizes.c' "
            "> '%s/%s_sizes.txt' 2>&1 && '%s/%s_sizes' > '%s/%s_sizes.txt'",
            cc(), e->dir, e->dir, sym, e->dir, sym, e->dir, sym, e->dir, sym, e->dir, sym) == 0;
    snprintf(path, sizeof path, "%s/%s_sizes.txt", e->dir, sym);
    char *got = slurp(path);
    if (!ok) snprintf(msg, size, "header macros do not build: %.1500s", got ? got : "");
    /* each line against its tensor */
    const char *line = got;
    for (size_t i = 0; ok && i < nt && line && *line; i++) {
      const hdr_tensor *x = &t[i];
      const kc_tensor_desc *d = x->input ? &in[x->index] : &out[x->index];
      char *p;
      long dtype = strtol(line, &p, 10), esize = strtol(p, &p, 10), rank = strtol(p, &p, 10);
      long long numel = strtoll(p, &p, 10), bytes = strtoll(p, &p, 10), want = 1;
      ok = dtype == (long)d->dtype && esize == (long)kc_dtype_size(d->dtype) && rank == d->rank;
      for (int k = 0; k < d->rank && ok; k++) {
        long long dim = strtoll(p, &p, 10), init = strtoll(p, &p, 10);
        ok = dim == d->dims[k] && init == d->dims[k];
        want *= d->dims[k];
      }
      ok = ok && numel == want && bytes == want * (long long)esize;
      if (!ok)
        snprintf(msg, size, "header macros of %s: '%.*s', the run has %s rank %d", x->prefix,
                 (int)strcspn(line, "\n"), line, kc_dtype_name(d->dtype), d->rank);
      line = strchr(line, '\n');
      line = line ? line + 1 : NULL;
    }
    free(got);
    sh("rm -f '%s/%s_sizes' '%s/%s_sizes.c' '%s/%s_sizes.txt'", e->dir, sym, e->dir, sym, e->dir,
       sym);
  }
  free(t);
  free(h);
  return ok;
}

/* Every data set of an open model; false with msg at the first mismatch. */
static bool run_sets(const aot_env *e, kc_context *ctx, const kc_graph *g, model *m,
                     const char *sym, const char *dir, bool *broken, char *msg, size_t size) {
  uint32_t nin = kc_graph_num_inputs(g), nout = kc_graph_num_outputs(g);
  /* the folder's kernc-check.tol, as `kernc check` reads it (bert_tiny_qop has one) */
  kc_check_tol tol;
  if (kc_check_tol_of_dir(dir, &tol, msg, size) < 0) return false;
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
      ok = kc_check_compare_tol(out[k].name, &out[k], &ot[k].t, &tol, msg, size);
    if (ok && set == 0) ok = check_header(e, g, sym, in, out, msg, size);
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
    else if (run_sets(e, ctx, g, &m, sym, dir, &broken, msg, size))
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
      if (!names) print_message("MISSING %s: not in the suite\n", name);
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
  assert_int_equal(fail, 0);
  if (!all) assert_int_equal(pass, (int)count); /* none refused or missing */
}

#define MAX_MODELS 64

/* Every tests/models/NAME folder with a model.onnx, sorted by name (as tests/test_models.c
 * finds them): the count, names in names[] (freed by the caller). */
static size_t find_models(const aot_env *e, char **names) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/models", e->tests);
  DIR *dp = opendir(dir);
  size_t n = 0;
  struct dirent *de;
  while (dp && (de = readdir(dp)) && n < MAX_MODELS) {
    char path[1400];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s/model.onnx", dir, de->d_name);
    if (de->d_name[0] != '.' && stat(path, &sb) == 0) names[n++] = strdup(de->d_name);
  }
  if (dp) closedir(dp);
  qsort(names, n, sizeof *names, cmp_str);
  return n;
}

/*
 * The small models of tests/models (symbolic batch and sequence; all of them, so a new model is
 * compiled too: the transformers of make_models.py and make_opset23.py, and those whose sizes
 * come from shape arithmetic, make_shape_models.py) through AOT, fused (the default pipeline)
 * and unfused (no passes): both against the same references.
 */
static void t_models(void **st) {
  aot_env *e = *st;
  char *models[MAX_MODELS];
  size_t nm = find_models(e, models);
  assert_true(nm >= 6);
  static const char *const pipelines[] = {NULL, ""};
  char suite[1024];
  snprintf(suite, sizeof suite, "%s/models", e->tests);
  int fail = 0, index = 1000;
  for (size_t p = 0; p < 2; p++)
    for (size_t i = 0; i < nm; i++) {
      char msg[2048] = "";
      nt_result r = node_test(e, suite, models[i], index++, pipelines[p], msg, sizeof msg);
      if (r != NT_PASS)
        print_error("%s %s (%s): %s\n", r == NT_FAIL ? "FAIL" : "REFUSED", models[i],
                    pipelines[p] ? "unfused" : "fused", msg);
      fail += r != NT_PASS;
    }
  for (size_t i = 0; i < nm; i++)
    free(models[i]);
  assert_int_equal(fail, 0);
}

/* ---- --target=cuda ----------------------------------------------------------------------------
 *
 * The CUDA target's libraries (runtime/aot_cuda_rt.c). Where a CUDA driver opens (the host
 * emulation of tests/cuda_emu, which the ctest test_aot_cuda_emulated runs this file under with
 * --cuda-only and its environment, or a GPU), the test models (fused and unfused) and node tests
 * of several op families run through the library against the reference outputs. Everywhere, a
 * library built with --target=cuda links no libcuda or libnvrtc, and without a driver
 * NAME_create fails with "CUDA target unavailable: ..." (in process and in a child program).
 * Each test says which parts ran.
 */

/* A CUDA driver (real or the emulation on LD_LIBRARY_PATH) opens in this process. */
static bool cuda_driver(void) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h) dlclose(h);
  return h != NULL;
}

/*
 * dir/model.onnx exported with --target=cuda (archs: kc_export_options.cuda_archs) as
 * libcuda<index>.so (symbol cuda<index>), then: when runs, every data set of dir against its
 * outputs; else NAME_create must fail saying the target is unavailable (no driver, or no image
 * for the device). NT_REFUSED: kernc was built without the CUDA toolkit.
 */
static nt_result cuda_test(const aot_env *e, const char *dir, int index, const char *passes,
                           const char *archs, bool runs, char *msg, size_t size) {
  kc_context *ctx = kc_context_new();
  char file[1500], so[256], sym[32], header[300];
  snprintf(file, sizeof file, "%s/model.onnx", dir);
  snprintf(so, sizeof so, "%s/libcuda%d.so", e->dir, index);
  snprintf(sym, sizeof sym, "cuda%d", index);
  kc_graph *g = NULL;
  nt_result r = NT_FAIL;
  kc_status s = kc_onnx_load(ctx, file, &g);
  if (s == KC_OK)
    s = kc_export(
        ctx, g,
        &(kc_export_options){.name = sym, .passes = passes, .target = "cuda", .cuda_archs = archs},
        so, NULL);
  model m = {0};
  bool broken = false;
  if (s != KC_OK) {
    snprintf(msg, size, "%s", kc_last_error(ctx));
    if (strstr(msg, "built without the CUDA toolkit")) r = NT_REFUSED;
  } else if (!model_open(&m, so, sym)) {
    snprintf(msg, size, "cannot load %s", so);
  } else if (runs) {
    if (run_sets(e, ctx, g, &m, sym, dir, &broken, msg, size)) r = NT_PASS;
  } else {
    void *inst = m.create(0);
    const char *why = m.error(NULL);
    if (!inst && strstr(why, "CUDA target unavailable: "))
      r = NT_PASS;
    else
      snprintf(msg, size, "create should fail, yet gave %p, error '%s'", inst, why);
    if (inst) m.free(inst);
  }
  model_close(&m);
  snprintf(header, sizeof header, "%s/%s.h", e->dir, sym);
  unlink(so);
  unlink(header);
  kc_graph_free(g);
  kc_context_free(ctx);
  return r;
}

/* Gather's index check through CUDA libraries (with a driver only). */
static void t_cuda_gather(void **st) {
  aot_env *e = *st;
  if (!cuda_driver()) {
    print_message("CUDA gather: skipped (no CUDA driver; test_aot_cuda_emulated runs it)\n");
    skip();
    return;
  }
  assert_int_equal(gather_libs(e, "cuda", true), 0);
}

/* The test models through the CUDA library, fused and unfused (with a driver only). */
static void t_cuda_models(void **st) {
  aot_env *e = *st;
  if (!cuda_driver()) {
    print_message("CUDA models: skipped (no CUDA driver; test_aot_cuda_emulated runs them)\n");
    skip();
    return;
  }
  char *models[MAX_MODELS];
  size_t nm = find_models(e, models);
  assert_true(nm >= 6);
  int fail = 0, pass = 0, index = 2000;
  for (int p = 0; p < 2; p++)
    for (size_t i = 0; i < nm; i++) {
      char dir[1200], msg[2048] = "";
      snprintf(dir, sizeof dir, "%s/models/%s", e->tests, models[i]);
      nt_result r = cuda_test(e, dir, index++, p ? "" : NULL, NULL, true, msg, sizeof msg);
      if (r != NT_PASS)
        print_error("FAIL %s (%s, cuda): %s\n", models[i], p ? "unfused" : "fused", msg);
      fail += r != NT_PASS;
      pass += r == NT_PASS;
    }
  for (size_t i = 0; i < nm; i++)
    free(models[i]);
  print_message("CUDA models (emulated or GPU): %d passed, %d failed\n", pass, fail);
  assert_int_equal(fail, 0);
}

/* Node tests of different op families through the CUDA library (with a driver only). */
static void t_cuda_nodes(void **st) {
  aot_env *e = *st;
  static const char *const names[] = {
      "test_add_bcast",
      "test_relu",
      "test_cast_FLOAT_to_FLOAT16",
      "test_where_example",
      "test_softmax_axis_1",
      "test_reduce_mean_default_axes_keepdims_example",
      "test_matmul_4d",
      "test_gemm_all_attributes",
      "test_layer_normalization_4d_axis1",
      "test_attention_4d_gqa_causal",
      "test_rotary_embedding",
      "test_transpose_all_permutations_3",
      "test_concat_3d_axis_1",
      "test_gather_negative_indices",
      "test_tril",
  };
  char suite[1024];
  if (!cuda_driver()) {
    print_message("CUDA node tests: skipped (no CUDA driver; test_aot_cuda_emulated runs them)\n");
    skip();
    return;
  }
  if (!node_dir(suite, sizeof suite)) fail_msg("no ONNX node tests (scripts/setup.sh)");
  int pass = 0, fail = 0, missing = 0;
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char dir[1200], path[1300], msg[2048] = "";
    struct stat sb;
    snprintf(dir, sizeof dir, "%s/%s", suite, names[i]);
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    if (stat(path, &sb) != 0) {
      missing++;
      continue;
    }
    nt_result r = cuda_test(e, dir, 3000 + (int)i, NULL, NULL, true, msg, sizeof msg);
    if (r != NT_PASS) print_error("FAIL %s (cuda): %s\n", names[i], msg);
    fail += r != NT_PASS;
    pass += r == NT_PASS;
  }
  print_message("CUDA node tests: %d passed, %d failed, %d not in the suite\n", pass, fail,
                missing);
  assert_int_equal(fail, 0);
  assert_int_equal(pass, (int)(sizeof names / sizeof *names)); /* all there, all pass */
}

/*
 * Without a driver: bert_tiny's CUDA library links no CUDA library, its NAME_create fails in
 * process (when this process has no driver) and in a child program built against its header
 * that runs without LD_LIBRARY_PATH (unless the system itself has a libcuda.so.1).
 */
static void t_cuda_unavailable(void **st) {
  aot_env *e = *st;
  char dir[1200], msg[2048] = "";
  snprintf(dir, sizeof dir, "%s/models/bert_tiny", e->tests);
  bool driver = cuda_driver();
  if (!driver) {
    nt_result r = cuda_test(e, dir, 4000, NULL, "compute_80", false, msg, sizeof msg);
    if (r == NT_REFUSED) { /* no toolkit: the export itself must say so */
      print_message("CUDA: kernc has no CUDA toolkit; export refused: %s\n", msg);
      return;
    }
    if (r != NT_PASS) fail_msg("in-process create without a driver: %s", msg);
    print_message("CUDA unavailable (in process): ok\n");
  }
  /* the library and a program linked against it, from the CLI */
  int rc = sh("'%s' compile --target=cuda '%s/model.onnx' -o '%s/libcbert.so' > '%s/c.txt' 2>&1",
              e->kernc, dir, e->dir, e->dir);
  if (rc != 0) {
    char path[200];
    snprintf(path, sizeof path, "%s/c.txt", e->dir);
    char *out = slurp(path);
    bool no_toolkit = out && strstr(out, "built without the CUDA toolkit");
    if (!no_toolkit) fail_msg("kernc compile --target=cuda failed: %s", out ? out : "");
    free(out);
    return;
  }
  assert_int_equal(sh("ldd '%s/libcbert.so' > '%s/ldd.txt' 2>&1", e->dir, e->dir), 0);
  assert_int_not_equal(sh("grep -Eq 'libcuda|libnvrtc|libkernc|libLLVM' '%s/ldd.txt'", e->dir), 0);
  assert_int_equal(sh("grep -q 'libc.so' '%s/ldd.txt'", e->dir), 0);
  print_message("CUDA library: ldd shows no libcuda, libnvrtc, libkernc or LLVM\n");
  char src[300];
  snprintf(src, sizeof src, "%s/cdrv.c", e->dir);
  FILE *f = fopen(src, "w");
  assert_non_null(f);
  fprintf(f, "#include \"cbert.h\"\n#include <stdio.h>\n"
             "int main(void) {\n  cbert_t *m = cbert_create(0);\n"
             "  if (!m) { fprintf(stderr, \"%%s\\n\", cbert_error(NULL)); return 3; }\n"
             "  cbert_free(m);\n  return 0;\n}\n");
  fclose(f);
  assert_int_equal(sh("%s -std=c11 -Wall -Werror -I'%s' -o '%s/cdrv' '%s' -L'%s' -lcbert "
                      "-Wl,-rpath,'%s'",
                      cc(), e->dir, e->dir, src, e->dir, e->dir),
                   0);
  if (sh("env -u LD_LIBRARY_PATH /sbin/ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '") == 0) {
    print_message("CUDA unavailable (child): not run, this system has a libcuda.so.1\n");
  } else {
    rc = sh("env -u LD_LIBRARY_PATH '%s/cdrv' 2> '%s/cdrv.txt'", e->dir, e->dir);
    assert_int_equal(rc, 3);
    assert_int_equal(sh("grep -q 'CUDA target unavailable: ' '%s/cdrv.txt'", e->dir), 0);
    print_message("CUDA unavailable (child without LD_LIBRARY_PATH): ok\n");
  }
  if (driver) { /* the same program with the driver this process has */
    assert_int_equal(sh("'%s/cdrv'", e->dir), 0);
    print_message("CUDA library created by a C program with the driver: ok\n");
  }
}

/* --cuda-arch and --target mistakes are refused before any work. */
static void t_cuda_cli(void **st) {
  aot_env *e = *st;
  char model[1200];
  snprintf(model, sizeof model, "%s/models/gpt2_tiny/model.onnx", e->tests);
  const char *out = e->dir;
  assert_int_not_equal(
      sh("'%s' compile --cuda-arch=80 '%s' -o '%s/libx.so' 2>/dev/null", e->kernc, model, out), 0);
  assert_int_not_equal(
      sh("'%s' compile --target=tpu '%s' -o '%s/libx.so' 2>/dev/null", e->kernc, model, out), 0);
  int rc = sh("'%s' compile --target=cuda --cuda-arch=8x '%s' -o '%s/libx.so' 2> '%s/e.txt'",
              e->kernc, model, out, out);
  assert_int_not_equal(rc, 0);
  assert_int_equal(sh("grep -Eq 'cuda-arch|CUDA target unavailable' '%s/e.txt'", out), 0);
  print_message("CUDA CLI: --target and --cuda-arch mistakes refused\n");
  if (!cuda_driver()) return;
  /* explicit archs and PTX, through the CLI, run by the library's consumer (run_sets) */
  rc = sh("'%s' compile --target=cuda --cuda-arch=sm_80,compute_80 '%s' -o '%s/libx.so'", e->kernc,
          model, out);
  assert_int_equal(rc, 0);
  print_message("CUDA CLI: --cuda-arch=sm_80,compute_80 compiles\n");
  /* the image choice on the (emulated) sm_80: PTX only runs; no image for it is refused */
  char dir[1200], msg[2048] = "";
  snprintf(dir, sizeof dir, "%s/models/gpt2_tiny", e->tests);
  nt_result r = cuda_test(e, dir, 5000, NULL, "compute_80", true, msg, sizeof msg);
  if (r != NT_PASS) fail_msg("gpt2_tiny with PTX only: %s", msg);
  r = cuda_test(e, dir, 5001, NULL, "90", false, msg, sizeof msg);
  if (r != NT_PASS) fail_msg("gpt2_tiny without an image for the device: %s", msg);
  print_message("CUDA image choice: PTX-only library runs, sm_90-only library refused\n");
}

int main(int argc, char **argv) {
  aot_env e = {.kernc = argc > 1 ? argv[1] : NULL, .tests = argc > 2 ? argv[2] : NULL};
  snprintf(e.dir, sizeof e.dir, "/tmp/kc_aot_XXXXXX");
  if (!mkdtemp(e.dir)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_prestate(t_mlp_driver, &e),   cmocka_unit_test_prestate(t_dim_exprs, &e),
      cmocka_unit_test_prestate(t_header_names, &e), cmocka_unit_test_prestate(t_errors, &e),
      cmocka_unit_test_prestate(t_cpu_check, &e),    cmocka_unit_test_prestate(t_onnx_nodes, &e),
  };
  const struct CMUnitTest gather[] = {cmocka_unit_test_prestate(t_gather, &e)};
  const struct CMUnitTest cli[] = {cmocka_unit_test_prestate(t_cli, &e),
                                   cmocka_unit_test_prestate(t_models, &e)};
  const struct CMUnitTest cuda[] = {
      cmocka_unit_test_prestate(t_cuda_unavailable, &e), cmocka_unit_test_prestate(t_cuda_cli, &e),
      cmocka_unit_test_prestate(t_cuda_models, &e), cmocka_unit_test_prestate(t_cuda_nodes, &e),
      cmocka_unit_test_prestate(t_cuda_gather, &e)};
  /* --cuda-only: the CUDA group alone (test_aot_cuda_emulated, under the host emulation) */
  bool cuda_only = argc > 3 && strcmp(argv[3], "--cuda-only") == 0;
  int failed = cuda_only ? 0 : cmocka_run_group_tests_name("aot", tests, NULL, NULL);
  if (e.kernc && e.tests && !cuda_only)
    failed += cmocka_run_group_tests_name("kernc compile, models", cli, NULL, NULL);
  if (e.kernc && e.tests && !cuda_only)
    failed += cmocka_run_group_tests_name("index checks", gather, NULL, NULL);
  if (e.kernc && e.tests)
    failed += cmocka_run_group_tests_name("kernc compile --target=cuda", cuda, NULL, NULL);
  sh("rm -rf '%s'", e.dir);
  return failed;
}
