/*
 * tests/test_aot_train.c - training steps compiled ahead of time (`kernc compile --train`,
 * kc_export_train: runtime/export_train.c, runtime/train_aot.c over runtime/train_core.c) against
 * the JIT trainer (kc_trainer_*) on the same data and options (argv[1]: the kernc binary,
 * argv[2]: tests/).
 *
 * tests/models/gpt2_tiny compiled with --train --loss xent:logits:labels (AdamW, the defaults);
 * a program built with plain cc against the generated header alone (no kernc include path)
 * trains on tests/models/train_ref's batch (ids and labels, 4 x 8) through NAME_train_*:
 *   - 5 AdamW steps of lr 1e-3: every loss equals kc_trainer_step's on a JIT trainer of the same
 *     graph (the loss built as tools/cli_loss.c builds xent, so both differentiate the same
 *     graph) within 1e-5 relative; NAME_train_num_params and the parameters' names and element
 *     counts equal the JIT trainer's, their values after 5 steps within 1e-5 + 1e-4 * |x|; the
 *     header's NAME_TRAIN_NUM_INPUTS / NAME_TRAIN_NUM_PARAMS are the model's 2 and the JIT's count;
 *   - options given at run time (NAME_train_new's, not the compile-time AdamW): SGD with
 *     momentum 0.9, weight decay 0.01 and clipping at norm 0.5, 3 steps: the JIT's losses
 *     within 1e-5 relative;
 *   - checkpoints both ways: the program's NAME_train_save after 5 steps is read by
 *     kc_trainer_load, and the JIT's kc_trainer_save by NAME_train_load; step 6 from either
 *     gives the JIT's own step 6 loss within 1e-5 relative;
 *   - the library: `ldd` shows only libc, libm, libpthread and the loader; `nm -D` only the
 *     entry points (NAME_create/_run/_free/_error and NAME_train_*);
 *   - the command line: --train without --loss, and --loss without --train, are usage errors
 *     (exit 2) naming the missing flag.
 * The expected values come from the JIT trainer, whose losses tests/test_train.c checks against
 * torch.optim.AdamW; this test checks that the exported step is the same step.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runtime/runtime.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 5
#define LR 1e-3

static const char *kernc_bin, *tests_dir;
static char dir[64];

/* gpt2_tiny with output "kernc.loss": tools/cli_loss.c's xent:logits:labels, node for node. */
static kc_graph *model(kc_context *ctx) {
  char p[1024];
  snprintf(p, sizeof p, "%s/models/gpt2_tiny/model.onnx", tests_dir);
  kc_graph *g;
  if (kc_onnx_load(ctx, p, &g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  kc_val x = kc_graph_output(g, 0);
  int r = kc_val_rank(g, x);
  kc_dim dims[KC_MAX_RANK];
  kc_val_dims(g, x, dims);
  kc_val labels = kc_input(g, "labels", KC_I64, r - 1, dims);
  kc_output(g, kc_cross_entropy(g, x, labels, -100), "kernc.loss");
  assert_int_equal(kc_graph_status(g), KC_OK);
  return g;
}

typedef struct batch {
  kc_tensor_desc ids, labels;
} batch;

static void load_batch(kc_context *ctx, batch *b) {
  char p[1024];
  snprintf(p, sizeof p, "%s/models/train_ref/ids.npy", tests_dir);
  if (kc_npy_read(ctx, p, &b->ids) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  snprintf(p, sizeof p, "%s/models/train_ref/labels.npy", tests_dir);
  if (kc_npy_read(ctx, p, &b->labels) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  b->ids.name = "input_ids";
  b->labels.name = "labels";
}

static kc_trainer *jit_trainer(kc_context *ctx, bool sgd) {
  kc_graph *g = model(ctx);
  kc_train_options o;
  kc_train_defaults(&o);
  o.threads = 2;
  if (sgd) {
    o.optimizer = KC_OPTIM_SGD;
    o.momentum = 0.9;
    o.weight_decay = 0.01;
    o.clip_norm = 0.5;
  }
  const char *all = "*";
  kc_trainer *t = NULL;
  kc_status s = kc_trainer_new(ctx, g, "kernc.loss", 1, &all, &o, &t);
  kc_graph_free(g);
  if (s != KC_OK) fail_msg("kc_trainer_new: %s", kc_last_error(ctx));
  return t;
}

static double jit_step(kc_context *ctx, kc_trainer *t, const batch *b, double lr, int64_t k) {
  kc_tensor_desc in[2] = {b->ids, b->labels};
  double loss;
  if (kc_trainer_step(t, in, 2, lr, k, &loss) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  return loss;
}

static void near_rel(double got, double want, double tol, const char *what) {
  if (!(fabs(got - want) <= tol * fabs(want)))
    fail_msg("%s: %.17g, the JIT's %.17g (relative %.3g)", what, got, want,
             fabs(got - want) / fabs(want));
}

/* The program: `main train B S` runs STEPS steps and saves DIR/aot.safetensors, printing each
 * loss, the parameter count, then per parameter name, numel and its values' sum of squares (in
 * double) with the first value; `main resume FILE B S` loads FILE and prints step 6's loss;
 * `main sgd - B S` runs 3 steps (lr 1e-2) with options given at run time: SGD, momentum 0.9,
 * weight decay 0.01, clipping at norm 0.5. */
static const char *program =
    "#include \"g.h\"\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
    "static int64_t *read_bin(const char *dir, const char *name, size_t n) {\n"
    "  char p[512]; snprintf(p, sizeof p, \"%s/%s\", dir, name);\n"
    "  FILE *f = fopen(p, \"rb\"); int64_t *d = malloc(n * 8);\n"
    "  if (!f || !d || fread(d, 8, n, f) != n) { fprintf(stderr, \"read %s\\n\", p); exit(3); }\n"
    "  fclose(f); return d;\n}\n"
    "int main(int argc, char **argv) {\n"
    "  if (argc != 6) return 2;\n"
    "  const char *dir = argv[1], *mode = argv[2], *file = argv[3];\n"
    "  int64_t B = atoll(argv[4]), S = atoll(argv[5]);\n"
    "  int64_t *ids = read_bin(dir, \"ids.bin\", (size_t)(B * S));\n"
    "  int64_t *labels = read_bin(dir, \"labels.bin\", (size_t)(B * S));\n"
    "  g_tensor in[g_TRAIN_NUM_INPUTS] = {\n"
    "      {\"input_ids\", KC_MODEL_I64, 2, {B, S}, ids}, {\"labels\", KC_MODEL_I64, 2, {B, S}, "
    "labels}};\n"
    "  g_train_options o = g_TRAIN_OPTIONS;\n"
    "  int sgd = strcmp(mode, \"sgd\") == 0;\n"
    "  if (sgd) { o.optimizer = g_TRAIN_SGD; o.momentum = 0.9; o.weight_decay = 0.01;\n"
    "             o.clip_norm = 0.5; }\n"
    "  g_train_t *t = g_train_new(2, &o);\n"
    "  if (!t) { fprintf(stderr, \"new: %s\\n\", g_train_error(NULL)); return 1; }\n"
    "  double loss;\n"
    "  if (sgd) {\n"
    "    for (int64_t k = 1; k <= 3; k++) {\n"
    "      if (g_train_step(t, in, 1e-2, k, &loss) != 0) {\n"
    "        fprintf(stderr, \"step: %s\\n\", g_train_error(t)); return 1; }\n"
    "      printf(\"%.17g\\n\", loss);\n"
    "    }\n"
    "  } else if (strcmp(mode, \"train\") == 0) {\n"
    "    for (int64_t k = 1; k <= 5; k++) {\n"
    "      if (g_train_step(t, in, 1e-3, k, &loss) != 0) {\n"
    "        fprintf(stderr, \"step: %s\\n\", g_train_error(t)); return 1; }\n"
    "      printf(\"%.17g\\n\", loss);\n"
    "    }\n"
    "    printf(\"%lld %d\\n\", (long long)g_train_num_params(t), g_TRAIN_NUM_PARAMS);\n"
    "    for (int64_t i = 0; i < g_train_num_params(t); i++) {\n"
    "      const char *name; float *data; int64_t n;\n"
    "      if (g_train_param(t, i, &name, &data, &n) != 0) return 1;\n"
    "      double ss = 0; for (int64_t j = 0; j < n; j++) ss += (double)data[j] * data[j];\n"
    "      printf(\"%s %lld %.17g %.9g\\n\", name, (long long)n, ss, (double)data[0]);\n"
    "    }\n"
    "    if (g_train_param(t, g_train_num_params(t), NULL, NULL, NULL) == 0) return 1;\n"
    "    if (g_train_save(t, file) != 0) { fprintf(stderr, \"save: %s\\n\", g_train_error(t)); "
    "return 1; }\n"
    "  } else {\n"
    "    if (g_train_load(t, file) != 0) { fprintf(stderr, \"load: %s\\n\", g_train_error(t)); "
    "return 1; }\n"
    "    if (g_train_accumulate(t, in, &loss) != 0 || g_train_apply(t, 1e-3, 6) != 0) {\n"
    "      fprintf(stderr, \"step: %s\\n\", g_train_error(t)); return 1; }\n"
    "    printf(\"%.17g\\n\", loss);\n"
    "  }\n"
    "  g_train_free(t); free(ids); free(labels);\n  return 0;\n}\n";

static const char *cc(void) {
  const char *c = getenv("CC");
  return c && *c ? c : "cc";
}

static void write_bin(const char *name, const kc_tensor_desc *t) {
  char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  th_write_file(p, t->data, th_nbytes(t));
}

/* Run the program with mode and file; its stdout (malloc'd). */
static char *run_program(const char *mode, const char *file, const batch *b) {
  char cmd[2048], *out = NULL, *err = NULL;
  snprintf(cmd, sizeof cmd, "'%s/main' '%s' %s '%s' %lld %lld", dir, dir, mode, file,
           (long long)b->ids.dims[0], (long long)b->ids.dims[1]);
  if (th_exec(cmd, &out, &err) != 0) fail_msg("%s: %s%s", cmd, out, err);
  free(err);
  return out;
}

/* ldd of so names only libc, libm, libpthread and the loader. */
static void only_libc(const char *so) {
  char cmd[512], *out = NULL;
  snprintf(cmd, sizeof cmd, "ldd '%s'", so);
  assert_int_equal(th_exec(cmd, &out, NULL), 0);
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    while (*line == ' ' || *line == '\t')
      line++;
    bool ok = strncmp(line, "linux-vdso", 10) == 0 || strncmp(line, "libc.so", 7) == 0 ||
              strncmp(line, "libm.so", 7) == 0 || strncmp(line, "libpthread.so", 13) == 0 ||
              strstr(line, "ld-linux") != NULL;
    if (!ok) fail_msg("%s depends on more than libc: %s", so, line);
  }
  free(out);
}

/* nm -D of so defines exactly the entry points of a training library named g. */
static void only_entry_points(const char *so) {
  static const char *const want[] = {"g_create",      "g_error",       "g_free",
                                     "g_run",         "g_target",      "g_train_accumulate",
                                     "g_train_apply", "g_train_error", "g_train_free",
                                     "g_train_load",  "g_train_new",   "g_train_num_params",
                                     "g_train_param", "g_train_save",  "g_train_step"};
  char cmd[512], *out = NULL;
  snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s' | awk '{print $3}' | sort", so);
  assert_int_equal(th_exec(cmd, &out, NULL), 0);
  char expect[1024] = "";
  for (size_t i = 0; i < sizeof want / sizeof *want; i++)
    snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "%s\n", want[i]);
  assert_string_equal(out, expect);
  free(out);
}

static void t_train(void **state) {
  (void)state;
  char so[256], cmd[4096], *out = NULL;
  snprintf(so, sizeof so, "%s/libg.so", dir);
  snprintf(cmd, sizeof cmd,
           "'%s' compile '%s/models/gpt2_tiny/model.onnx' --train --loss xent:logits:labels "
           "-o '%s' 2>&1",
           kernc_bin, tests_dir, so);
  if (th_exec(cmd, &out, NULL) != 0) fail_msg("%s\n%s", cmd, out);
  free(out);
  only_libc(so);
  only_entry_points(so);
  /* the program: plain cc, the header's folder and the library */
  char src[256];
  snprintf(src, sizeof src, "%s/main.c", dir);
  th_write_file(src, program, strlen(program));
  snprintf(cmd, sizeof cmd,
           "%s -std=c11 -Wall -Wextra -Werror -o '%s/main' '%s' -I'%s' '%s' -Wl,-rpath,'%s' 2>&1",
           cc(), dir, src, dir, so, dir);
  if (th_exec(cmd, &out, NULL) != 0) fail_msg("%s\n%s", cmd, out);
  free(out);

  kc_context *ctx = kc_context_new();
  batch b;
  load_batch(ctx, &b);
  write_bin("ids.bin", &b.ids);
  write_bin("labels.bin", &b.labels);
  kc_trainer *t = jit_trainer(ctx, false);
  double want[STEPS + 1];
  for (int k = 1; k <= STEPS; k++)
    want[k - 1] = jit_step(ctx, t, &b, LR, k);
  char jit5[256], aot5[256];
  snprintf(jit5, sizeof jit5, "%s/jit.safetensors", dir);
  snprintf(aot5, sizeof aot5, "%s/aot.safetensors", dir);
  if (kc_trainer_save(t, jit5) != KC_OK) fail_msg("%s", kc_last_error(ctx));

  /* the library's 5 steps and parameters */
  out = run_program("train", aot5, &b);
  char *line = strtok(out, "\n");
  bool bitwise = true;
  for (int k = 0; k < STEPS; k++, line = strtok(NULL, "\n")) {
    assert_non_null(line);
    double got = strtod(line, NULL);
    char what[64];
    snprintf(what, sizeof what, "loss of step %d", k + 1);
    near_rel(got, want[k], 1e-5, what);
    bitwise &= got == want[k];
  }
  print_message("5 AdamW steps: the library's losses equal the JIT's %s (last %.9g)\n",
                bitwise ? "bitwise" : "within 1e-5", want[STEPS - 1]);
  assert_non_null(line);
  long long np = 0;
  int hdr_np = 0;
  assert_int_equal(sscanf(line, "%lld %d", &np, &hdr_np), 2);
  assert_int_equal(np, kc_trainer_num_params(t));
  assert_int_equal(hdr_np, kc_trainer_num_params(t));
  for (uint32_t i = 0; i < kc_trainer_num_params(t); i++) {
    line = strtok(NULL, "\n");
    assert_non_null(line);
    char name[256];
    long long n;
    double ss, first;
    assert_int_equal(sscanf(line, "%255s %lld %lf %lf", name, &n, &ss, &first), 4);
    kc_tensor_desc p;
    assert_int_equal(kc_trainer_param(t, i, &p), KC_OK);
    assert_string_equal(name, p.name);
    assert_int_equal(n, th_numel(p.rank, p.dims));
    const float *d = p.data;
    double jss = 0;
    for (long long j = 0; j < n; j++)
      jss += (double)d[j] * d[j];
    if (!(fabs(ss - jss) <= 1e-5 + 1e-4 * jss) || !(fabs(first - d[0]) <= 1e-5 + 1e-4 * fabs(d[0])))
      fail_msg("parameter %s: sum of squares %.9g first %.9g, the JIT's %.9g %.9g", name, ss, first,
               jss, (double)d[0]);
  }
  free(out);

  /* step 6: the JIT's own, from the library's checkpoint, and the library's from the JIT's */
  want[STEPS] = jit_step(ctx, t, &b, LR, STEPS + 1);
  kc_trainer *t2 = jit_trainer(ctx, false);
  if (kc_trainer_load(t2, aot5) != KC_OK) fail_msg("load %s: %s", aot5, kc_last_error(ctx));
  assert_int_equal(kc_trainer_steps(t2), STEPS);
  near_rel(jit_step(ctx, t2, &b, LR, STEPS + 1), want[STEPS], 1e-5,
           "JIT step 6 from the library's checkpoint");
  out = run_program("resume", jit5, &b);
  near_rel(strtod(out, NULL), want[STEPS], 1e-5, "the library's step 6 from the JIT's checkpoint");
  free(out);
  kc_trainer_free(t2);
  kc_trainer_free(t);

  /* options at run time: SGD with momentum, weight decay and clipping, 3 steps */
  t = jit_trainer(ctx, true);
  out = run_program("sgd", "-", &b);
  line = strtok(out, "\n");
  for (int k = 1; k <= 3; k++, line = strtok(NULL, "\n")) {
    assert_non_null(line);
    char what[64];
    snprintf(what, sizeof what, "SGD loss of step %d", k);
    near_rel(strtod(line, NULL), jit_step(ctx, t, &b, 1e-2, k), 1e-5, what);
  }
  free(out);
  kc_trainer_free(t);
  kc_npy_free(&b.ids);
  kc_npy_free(&b.labels);
  kc_context_free(ctx);
}

static void t_usage(void **state) {
  (void)state;
  char cmd[2048], *err = NULL;
  snprintf(cmd, sizeof cmd, "'%s' compile '%s/models/gpt2_tiny/model.onnx' --train -o '%s/x.so'",
           kernc_bin, tests_dir, dir);
  assert_int_equal(th_exec(cmd, NULL, &err), 2);
  if (!strstr(err, "--loss")) fail_msg("%s", err);
  free(err);
  snprintf(cmd, sizeof cmd,
           "'%s' compile '%s/models/gpt2_tiny/model.onnx' --loss xent:logits:labels -o '%s/x.so'",
           kernc_bin, tests_dir, dir);
  assert_int_equal(th_exec(cmd, NULL, &err), 2);
  if (!strstr(err, "--train")) fail_msg("%s", err);
  free(err);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC TESTS_DIR\n", argv[0]);
    return 2;
  }
  kernc_bin = argv[1];
  tests_dir = argv[2];
  if (!th_mkdtemp(dir, sizeof dir, "aot_train")) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_usage),
      cmocka_unit_test(t_train),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  th_rmtree(dir);
  return failed;
}
