/*
 * tests/test_models.c - the small transformer models of tests/models end to end through
 * `kernc check` (argv[1]: the kernc binary, argv[2]: tests/).
 *
 * Each folder tests/models/NAME holding a model.onnx (bert_tiny, gpt2_tiny, llama_tiny exported
 * from PyTorch by tests/models/make_models.py; rope_arange_tiny and hf_positions_tiny, whose sizes
 * follow from shape arithmetic, by tests/models/make_shape_models.py; opset23_tiny built by
 * tests/models/make_opset23.py; bert_tiny_qdyn, bert_tiny_qop and bert_tiny_qdq, bert_tiny
 * quantized by ONNX Runtime's tools with ORT's outputs as references, by
 * tests/models/make_quant_models.py; vit_tiny, a Dinov2-style encoder, by
 * tests/models/make_vit_model.py; bert_dynamo_tiny, bert_tiny in the op patterns of PyTorch 2's
 * dynamo exporter, by tests/models/make_dynamo_models.py; conv_tiny, the Conv forms (patch,
 * grouped, depthwise, 1-D), and qconv_tiny, QLinearConv (bias, per-channel scales) and grouped
 * ConvInteger, with ONNX Runtime's outputs, by tests/models/make_conv_models.py)
 * must PASS, not SKIP, both with the default pipeline and with `--passes=` (nothing fused), so
 * fused and unfused graphs are held to the same reference outputs. One negative test copies a model
 * with one reference value moved by 1% and expects FAIL, so a check that stopped comparing values
 * shows. Each model also goes through the default pipeline (`kernc dump`) under valgrind's
 * memcheck, which sees reads of uninitialized memory that ASan does not (a fusion once decided on
 * one); not in sanitizer builds, where valgrind cannot run the ASan binary. Commands go through
 * /bin/sh (popen); paths are single-quoted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/harness.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_MODELS 64

static const char *kernc, *tests;
static char tmp[64]; /* scratch folder, removed at the end */

typedef struct model {
  char name[256], dir[4096];
} model;

/* `kernc check FLAGS DIR` must exit 0 and print "PASS NAME". */
static void expect_pass(const model *m, const char *flags) {
  char cmd[8400], want[300], *out;
  snprintf(cmd, sizeof cmd, "'%s' check %s '%s' 2>&1", kernc, flags, m->dir);
  int rc = th_exec(cmd, &out, NULL);
  snprintf(want, sizeof want, "PASS %s", m->name);
  int ok = rc == 0 && strstr(out, want) != NULL;
  if (!ok) print_error("$ %s\n%s(exit %d)\n", cmd, out, rc);
  free(out);
  assert_true(ok);
}

static void test_default_pipeline(void **state) { expect_pass(*state, ""); }

static void test_no_fusion(void **state) { expect_pass(*state, "--passes="); }

#if !TH_SANITIZED
/* The default pipeline under memcheck: no error, no uninitialized read deciding a branch. */
static void test_valgrind_passes(void **state) {
  const model *m = *state;
  char cmd[8400], *err = NULL;
  /* -O0 for folding's JIT evaluator: memcheck watches the passes, not LLVM's optimizer */
  snprintf(cmd, sizeof cmd,
           "KERNC_OPT_LEVEL=0 valgrind -q --error-exitcode=99 '%s' dump '%s/model.onnx' >/dev/null",
           kernc, m->dir);
  int rc = th_exec(cmd, NULL, &err);
  if (rc != 0) print_error("$ %s\n%s(exit %d)\n", cmd, err ? err : "", rc);
  free(err);
  assert_int_equal(rc, 0);
}
#endif

/* Occurrences of needle in hay. */
static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

/*
 * What the default pipeline must make of each exported model (2 layers each): one attention per
 * layer with the right mask kind, every norm and every GELU fused, no softmax left. `have` lists
 * "text=count" pairs counted in `kernc dump`'s IR; `gone` lists ops that must not remain.
 */
typedef struct fusion_expect {
  const char *model;
  const char *have[6];
  const char *gone[6];
} fusion_expect;

static const fusion_expect fusions[] = {
    /* its int64 attention_mask is not proven 0/1: the mask stays additive */
    {"bert_tiny",
     {"= attention(=2", "mask=additive=2", "= layer_norm(=5", "act=gelu}=2"},
     {"= softmax(", "= reduce_mean(", "= erf(", "= layer_normalization(", "= gelu("}},
    {"gpt2_tiny",
     {"= attention(=2", "mask=causal=2", "= layer_norm(=5", "act=gelu_tanh}=2"},
     {"= softmax(", "= reduce_mean(", "= tanh(", "= pow(", "= where("}},
    {"llama_tiny",
     {"= attention(=2", "mask=causal=2", "kv_heads=2=2", "= rms_norm(=5"},
     {"= softmax(", "= reduce_mean(", "= sqrt(", "= reciprocal("}},
    {"opset23_tiny",
     {"= attention(=2", "= rms_norm(=5"},
     {"= softmax(", "= rms_normalization(", "= rotary("}},
    /* full(-inf).triu(1) added to the scores is a causal mask; repeat_kv by expand is GQA */
    {"rope_arange_tiny",
     {"= attention(=2", "mask=causal=2", "kv_heads=2=2", "= rms_norm(=5"},
     {"= softmax(", "= reduce_mean(", "= sqrt(", "= trilu(", "= constant_of_shape("}},
    /* ONNX Runtime's int8 versions (make_quant_models.py): the float attention between the
     * quantized projections still fuses; the dynamically quantized matmuls become matmul_q8
     * with their dequantization and bias, the QLinearMatMuls matmul_q8 with their
     * requantization (quantize_linear by 1), the QDQ form's matmuls of two dequantize_linear
     * matmul_q8 by the product of the scales */
    {"bert_tiny_qdyn",
     {"= attention(=2", "= layer_norm(=5", "= matmul_q8(=13"},
     {"= softmax(", "= erf(", "= matmul_integer("}},
    {"bert_tiny_qop",
     {"= attention(=2", "= layer_norm(=5", "= matmul_q8(=12"},
     {"= softmax(", "= erf(", "= qlinear_matmul("}},
    {"bert_tiny_qdq",
     {"= attention(=2", "= layer_norm(=5", "= matmul_q8(=12"},
     {"= softmax(", "= erf(", "= matmul("}},
    /* the dynamo exporter's forms (make_dynamo_models.py): the padding mask from Range /
     * GatherND / GreaterOrEqual / And on a bool cast, filled with -inf by where, and each
     * softmax guarded by where(is_nan(p), 0, p), fold into mask=padding */
    {"bert_dynamo_tiny",
     {"= attention(=2", "mask=padding=2", "= layer_norm(=5"},
     {"= softmax(", "= is_nan(", "= greater_equal(", "= erf("}},
    /* Conv patches, bicubic position embeddings (make_vit_model.py); q, k, v merged; layer
     * scale and its residual in the epilogue of the projection before it (no mul, no fused
     * region left: the one add is the position embeddings') */
    {"vit_tiny",
     {"= attention(=2", "= layer_norm(=5", "= split(=2", "= matmul_ep(=9", "= add(=1"},
     {"= softmax(", "= erf(", "= layer_normalization(", "= mul(", "= fused("}},
    /* masked_fill of an expanded tril(ones) * padding mask is not matched as attention yet */
    {"hf_positions_tiny", {"= rms_norm(=5", "= cumsum(=1"}, {"= reduce_mean(", "= sqrt("}},
};

static void test_fusions(void **state) {
  const fusion_expect *f = *state;
  char cmd[8400], *out;
  snprintf(cmd, sizeof cmd, "'%s' dump '%s/models/%s/model.onnx' 2>&1", kernc, tests, f->model);
  assert_int_equal(th_exec(cmd, &out, NULL), 0);
  int bad = 0;
  for (int i = 0; i < 6 && f->have[i]; i++) {
    char text[64];
    const char *eq = strrchr(f->have[i], '=');
    snprintf(text, sizeof text, "%.*s", (int)(eq - f->have[i]), f->have[i]);
    int want = atoi(eq + 1), got = count(out, text);
    if (got != want) print_error("%s: '%s' %d times, expected %d\n", f->model, text, got, want);
    bad += got != want;
  }
  for (int i = 0; i < 6 && f->gone[i]; i++) {
    int got = count(out, f->gone[i]);
    if (got) print_error("%s: '%s' still there %d times\n", f->model, f->gone[i], got);
    bad += got != 0;
  }
  if (bad) print_error("$ %s\n%s\n", cmd, out);
  free(out);
  assert_int_equal(bad, 0);
}

/* Copy bert_tiny with its last reference value of set 1 scaled by 1.01: check must FAIL. */
static void test_wrong_reference_fails(void **state) {
  (void)state;
  char cmd[8400], path[4200], want[64], *out;
  assert_int_equal(th_sh("cp -r '%s/models/bert_tiny' '%s/'", tests, tmp), 0);
  /* onnx writes raw_data, the highest field number, last: the file ends with the floats */
  snprintf(path, sizeof path, "%s/bert_tiny/test_data_set_1/output_0.pb", tmp);
  FILE *f = fopen(path, "r+b");
  assert_non_null(f);
  float v;
  assert_int_equal(fseek(f, -4, SEEK_END), 0);
  assert_int_equal(fread(&v, 4, 1, f), 1);
  v = v * 1.01f + 1e-6f;
  assert_int_equal(fseek(f, -4, SEEK_END), 0);
  assert_int_equal(fwrite(&v, 4, 1, f), 1);
  fclose(f);
  snprintf(cmd, sizeof cmd, "'%s' check '%s/bert_tiny' 2>&1", kernc, tmp);
  int rc = th_exec(cmd, &out, NULL);
  snprintf(want, sizeof want, "FAIL bert_tiny");
  int ok = rc == 1 && strstr(out, want) != NULL;
  if (!ok) print_error("$ %s\n%s(exit %d)\n", cmd, out, rc);
  free(out);
  assert_true(ok);
}

static int cmp_model(const void *a, const void *b) {
  return strcmp(((const model *)a)->name, ((const model *)b)->name);
}

/* Every tests/models/NAME folder with a model.onnx, sorted by name. */
static int find_models(model *ms) {
  char dir[4000];
  snprintf(dir, sizeof dir, "%.3900s/models", tests);
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < MAX_MODELS) {
    char onnx[8400];
    struct stat st;
    if (e->d_name[0] == '.') continue;
    snprintf(onnx, sizeof onnx, "%s/%s/model.onnx", dir, e->d_name);
    if (stat(onnx, &st) != 0) continue;
    snprintf(ms[n].name, sizeof ms[n].name, "%s", e->d_name);
    snprintf(ms[n].dir, sizeof ms[n].dir, "%.3800s/%.255s", dir, e->d_name);
    n++;
  }
  closedir(d);
  qsort(ms, (size_t)n, sizeof *ms, cmp_model);
  return n;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC TESTS_DIR\n", argv[0]);
    return 2;
  }
  kernc = argv[1];
  tests = argv[2];
  static model ms[MAX_MODELS];
  int n = find_models(ms);
  if (n < 4) {
    fprintf(stderr, "test_models: expected at least 4 models under %s/models, found %d\n", tests,
            n);
    return 1;
  }
  if (!th_mkdtemp(tmp, sizeof tmp, "models")) return perror("mkdtemp"), 1;

  static struct CMUnitTest t[3 * MAX_MODELS + 8];
  static char names[3 * MAX_MODELS][300];
  int nt = 0;
  for (int i = 0; i < n; i++) {
    snprintf(names[nt], sizeof names[nt], "%.255s (default pipeline)", ms[i].name);
    t[nt] = (struct CMUnitTest){names[nt], test_default_pipeline, NULL, NULL, &ms[i]};
    nt++;
    snprintf(names[nt], sizeof names[nt], "%.255s (--passes=)", ms[i].name);
    t[nt] = (struct CMUnitTest){names[nt], test_no_fusion, NULL, NULL, &ms[i]};
    nt++;
#if !TH_SANITIZED
    snprintf(names[nt], sizeof names[nt], "%.255s (passes under valgrind)", ms[i].name);
    t[nt] = (struct CMUnitTest){names[nt], test_valgrind_passes, NULL, NULL, &ms[i]};
    nt++;
#endif
  }
  t[nt++] = (struct CMUnitTest){"a wrong reference value fails", test_wrong_reference_fails, NULL,
                                NULL, NULL};
  static char fnames[sizeof fusions / sizeof *fusions][300];
  for (size_t i = 0; i < sizeof fusions / sizeof *fusions; i++) {
    snprintf(fnames[i], sizeof fnames[i], "%s fused by the default pipeline", fusions[i].model);
    t[nt++] = (struct CMUnitTest){fnames[i], test_fusions, NULL, NULL, (void *)&fusions[i]};
  }
  int rc = _cmocka_run_group_tests("models", t, (size_t)nt, NULL, NULL);
  if (!th_rmtree(tmp)) fprintf(stderr, "test_models: could not remove %s\n", tmp);
  return rc;
}
