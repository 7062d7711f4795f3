/*
 * tests/test_grad_cli.c - `kernc grad` end to end (argv[1]: the kernc binary, argv[2]: tests/).
 *
 *   - gpt2_tiny and llama_tiny with xent:logits:labels (two labels -100), bert_tiny with
 *     mse:last_hidden_state:target, llama_tiny with sum:logits and --params: loss.npy and every
 *     NAME.grad.npy against PyTorch autograd (tests/models/grad_ref_losses.py, f64 gradients
 *     rounded to f32). Initializers map to PyTorch parameters through grad_ref/<model>/map.txt
 *     (transposed MatMul weights, GPT-2's tied embedding: summed per parameter, as test_grad.c
 *     does). Tolerance: loss within 1e-5 relative; a gradient within 2e-5 * max |reference| + 1e-7
 *     (kernc runs in f32, PyTorch in f64);
 *   - ONNX SoftmaxCrossEntropyLoss / NegativeLogLikelihoodLoss nodes (frontend/onnx_loss.c):
 *     loss and gradient against PyTorch, same tolerances;
 *   - --params writes only the matching gradients; --emit-ir writes the backward graph;
 *     --print-changed and --dump-dir show the pipeline on forward + backward;
 *   - errors: unknown output, malformed loss, labels of the wrong shape / dtype / range, a
 *     --params glob matching nothing, a model whose rotary caches would be parameters
 *     (opset23_tiny): exit 1 (2 for bad usage) with a message naming the culprit.
 *   - `kernc gradcheck` on gpt2_tiny (xent, drawn ids and labels): every checked parameter of
 *     layer 0 (upstream of both attentions) agrees with central finite differences on the f64
 *     copy and the f32 gradients with the f64 ones (exit 0); an unknown output is exit 1.
 * Commands go through /bin/sh (th_exec); paths are single-quoted.
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
#include <sys/stat.h>

typedef struct env {
  const char *kernc, *tests;
  char tmp[64]; /* a scratch folder, removed at the end */
} env;

/* Run `kernc ARGS`; fail unless the exit code is want_rc and stderr holds want_err. */
static void expect_run(const env *e, const char *args, int want_rc, const char *want_err) {
  char cmd[16384];
  snprintf(cmd, sizeof cmd, "'%s' %s", e->kernc, args);
  char *out, *err;
  int rc = th_exec(cmd, &out, &err);
  if (rc != want_rc || (want_err && !strstr(err, want_err)))
    fail_msg("kernc %s: exit %d (want %d)\nstdout: %s\nstderr: %s\nwanted stderr \"%s\"", args, rc,
             want_rc, out, err, want_err ? want_err : "");
  free(out);
  free(err);
}

static kc_tensor_desc read_npy(kc_context *ctx, const char *path) {
  kc_tensor_desc t = {0};
  if (kc_npy_read(ctx, path, &t) != KC_OK) fail_msg("%s: %s", path, kc_last_error(ctx));
  return t;
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* The file kernc writes for initializer iname's gradient (':' '/' '\' become '_'). */
static void grad_path(char *buf, size_t size, const char *dir, const char *iname) {
  int n = snprintf(buf, size, "%s/", dir);
  snprintf(buf + n, size - (size_t)n, "%s.grad.npy", iname);
  for (char *p = buf + n; *p; p++)
    if (*p == ':' || *p == '/' || *p == '\\') *p = '_';
}

/*
 * Run `kernc grad` on tests/models/MODEL with LOSS, the inputs of grad_ref/REF (each
 * NAME.npy given as -i NAME=...), and EXTRA args; compare loss.npy and, for every parameter of
 * grad_ref/MODEL/map.txt whose reference grad_ref/REF/PARAM.npy exists, the sum of its
 * initializers' gradients. Returns how many parameters were compared.
 */
static int check_case(const env *e, const char *model, const char *ref, const char *loss,
                      const char *const *inputs, int ninputs, const char *extra) {
  kc_context *ctx = kc_context_new();
  char refdir[1024], outdir[1024], args[8192], path[2048];
  snprintf(refdir, sizeof refdir, "%s/models/grad_ref/%s", e->tests, ref);
  snprintf(outdir, sizeof outdir, "%s/%s", e->tmp, ref);
  int n = snprintf(args, sizeof args, "grad '%s/models/%s/model.onnx' --loss=%s -o '%s' %s",
                   e->tests, model, loss, outdir, extra);
  for (int k = 0; k < ninputs; k++)
    n += snprintf(args + n, sizeof args - (size_t)n, " -i %s='%s/%s.npy'", inputs[k], refdir,
                  inputs[k]);
  expect_run(e, args, 0, NULL);

  snprintf(path, sizeof path, "%s/loss.npy", refdir);
  kc_tensor_desc rl = read_npy(ctx, path);
  snprintf(path, sizeof path, "%s/loss.npy", outdir);
  kc_tensor_desc kl = read_npy(ctx, path);
  assert_int_equal(kl.dtype, KC_F32);
  assert_int_equal(th_numel(kl.rank, kl.dims), 1);
  double want = *(const double *)rl.data, got = *(const float *)kl.data;
  print_message("%s: loss %.8g, PyTorch %.8g\n", ref, got, want);
  if (!(fabs(got - want) <= 1e-5 * fabs(want))) fail_msg("%s: loss %g, want %g", ref, got, want);
  kc_npy_free(&rl);
  kc_npy_free(&kl);

  snprintf(path, sizeof path, "%s/models/grad_ref/%s/map.txt", e->tests, model);
  char *map = th_read_file(path, NULL);
  if (!map) fail_msg("cannot read %s", path);
  int params = 0;
  double ratio = 0;
  for (char *line = map; *line; line = strchr(line, '\n') + 1) {
    char iname[256], pname[256];
    int t;
    if (sscanf(line, "%255s %255s %d", iname, pname, &t) != 3) break;
    bool first = true; /* the first line naming pname compares it */
    for (char *l2 = map; l2 < line; l2 = strchr(l2, '\n') + 1) {
      char a[256], b[256];
      int tt;
      if (sscanf(l2, "%255s %255s %d", a, b, &tt) == 3 && strcmp(b, pname) == 0) first = false;
    }
    snprintf(path, sizeof path, "%s/%s.npy", refdir, pname);
    if (!first || !exists(path)) continue;
    kc_tensor_desc r = read_npy(ctx, path);
    assert_int_equal(r.dtype, KC_F32);
    size_t cnt = (size_t)th_numel(r.rank, r.dims);
    double *sum = calloc(cnt, sizeof *sum);
    for (char *l2 = map; *l2; l2 = strchr(l2, '\n') + 1) {
      char a[256], b[256];
      int tt;
      if (sscanf(l2, "%255s %255s %d", a, b, &tt) != 3 || strcmp(b, pname) != 0) continue;
      grad_path(path, sizeof path, outdir, a);
      kc_tensor_desc d = read_npy(ctx, path);
      assert_int_equal(d.dtype, KC_F32);
      assert_int_equal((size_t)th_numel(d.rank, d.dims), cnt);
      int64_t rows = d.rank == 2 ? d.dims[0] : 1, cols = (int64_t)cnt / rows;
      const float *g = d.data;
      for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
          sum[tt ? j * rows + i : i * cols + j] += g[i * cols + j];
      kc_npy_free(&d);
    }
    const float *ref_g = r.data;
    double mx = 0, worst = 0;
    for (size_t k = 0; k < cnt; k++) {
      mx = fmax(mx, fabs(ref_g[k]));
      worst = fmax(worst, fabs(sum[k] - ref_g[k]));
    }
    if (!(worst <= 2e-5 * mx + 1e-7))
      fail_msg("%s: gradient of %s differs from PyTorch by %g (max |ref| %g)", ref, pname, worst,
               mx);
    if (mx > 1e-3) ratio = fmax(ratio, worst / mx);
    params++;
    free(sum);
    kc_npy_free(&r);
  }
  print_message("%s: %d parameter gradients equal PyTorch's (worst max|diff|/max|ref| %.2g)\n", ref,
                params, ratio);
  free(map);
  kc_context_free(ctx);
  return params;
}

static void t_gpt2_xent(void **state) {
  const char *in[] = {"input_ids", "labels"};
  assert_true(check_case(*state, "gpt2_tiny", "gpt2_tiny_xent", "xent:logits:labels", in, 2,
                         "--threads 2") > 10);
}

static void t_llama_xent(void **state) {
  const char *in[] = {"input_ids", "labels"};
  assert_true(check_case(*state, "llama_tiny", "llama_tiny_xent", "xent:logits:labels", in, 2,
                         "--threads 2") > 10);
}

static void t_bert_mse(void **state) {
  const char *in[] = {"input_ids", "token_type_ids", "attention_mask", "target"};
  assert_true(check_case(*state, "bert_tiny", "bert_tiny_mse", "mse:last_hidden_state:target", in,
                         4, "--threads 2") > 10);
}

/* sum:logits with --params: only the three selected gradients are written, and they are right */
static void t_llama_sum_params(void **state) {
  const env *e = *state;
  const char *in[] = {"input_ids"};
  assert_int_equal(check_case(e, "llama_tiny", "llama_tiny_sum", "sum:logits", in, 1,
                              "--params='layers.1.*norm*,norm.weight'"),
                   3);
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/llama_tiny_sum", e->tmp);
  char **files;
  int n = th_list_files(dir, "", ".grad.npy", &files);
  th_free_list(files, n);
  assert_int_equal(n, 3);
}

/*
 * ONNX's SoftmaxCrossEntropyLoss (class axis 1 of [N, C, D], class weights, ignore_index -1,
 * mean) and NegativeLogLikelihoodLoss (after LogSoftmax, weights, ignore_index 2, sum), imported
 * as compositions: the loss and the gradient of the one initializer W against PyTorch's
 * F.cross_entropy / F.nll_loss (grad_ref_losses.py's onnx_losses()).
 */
static void t_onnx_loss_ops(void **state) {
  const env *e = *state;
  kc_context *ctx = kc_context_new();
  static const char *const models[] = {"sce", "nll"};
  for (int k = 0; k < 2; k++) {
    const char *m = models[k];
    char r[1024], args[8192], path[2048];
    snprintf(r, sizeof r, "%s/models/grad_ref/onnx_losses", e->tests);
    snprintf(args, sizeof args,
             "grad '%s/%s.onnx' --loss=sum:loss -i X='%s/%s_X.npy' -i labels='%s/%s_labels.npy' "
             "-o '%s/onnx_%s'",
             r, m, r, m, r, m, e->tmp, m);
    expect_run(e, args, 0, NULL);
    snprintf(path, sizeof path, "%s/%s_loss.npy", r, m);
    kc_tensor_desc rl = read_npy(ctx, path);
    snprintf(path, sizeof path, "%s/onnx_%s/loss.npy", e->tmp, m);
    kc_tensor_desc kl = read_npy(ctx, path);
    double want = *(const double *)rl.data, got = *(const float *)kl.data;
    print_message("%s: loss %.8g, PyTorch %.8g\n", m, got, want);
    if (!(fabs(got - want) <= 1e-5 * fabs(want))) fail_msg("%s: loss %g, want %g", m, got, want);
    snprintf(path, sizeof path, "%s/%s_W.npy", r, m);
    kc_tensor_desc rw = read_npy(ctx, path);
    snprintf(path, sizeof path, "%s/onnx_%s/W.grad.npy", e->tmp, m);
    kc_tensor_desc kw = read_npy(ctx, path);
    assert_int_equal(th_numel(rw.rank, rw.dims), th_numel(kw.rank, kw.dims));
    assert_int_equal(kw.dtype, KC_F32);
    const float *a = rw.data, *b = kw.data;
    double mx = 0, worst = 0;
    for (int64_t i = 0; i < th_numel(rw.rank, rw.dims); i++) {
      mx = fmax(mx, fabs(a[i]));
      worst = fmax(worst, fabs(a[i] - b[i]));
    }
    if (!(mx > 0.1 && worst <= 2e-5 * mx + 1e-7))
      fail_msg("%s: W.grad differs from PyTorch by %g (max |ref| %g)", m, worst, mx);
    kc_npy_free(&rl);
    kc_npy_free(&kl);
    kc_npy_free(&rw);
    kc_npy_free(&kw);
  }
  kc_context_free(ctx);
}

/* --emit-ir, --print-changed and --dump-dir see the backward graph */
static void t_ir_flags(void **state) {
  const env *e = *state;
  char cmd[8192], ir[1024], dump[1024];
  snprintf(ir, sizeof ir, "%s/grad.kir", e->tmp);
  snprintf(dump, sizeof dump, "%s/dump", e->tmp);
  const char *r = "models/grad_ref/gpt2_tiny_xent";
  snprintf(cmd, sizeof cmd,
           "'%s' grad '%s/models/gpt2_tiny/model.onnx' --loss=xent:logits:labels -i "
           "input_ids='%s/%s/input_ids.npy' -i labels='%s/%s/labels.npy' -o '%s/irflags' "
           "--emit-ir '%s' --print-changed --dump-dir '%s'",
           e->kernc, e->tests, e->tests, r, e->tests, r, e->tmp, ir, dump);
  char *out, *err;
  int rc = th_exec(cmd, &out, &err);
  if (rc != 0) fail_msg("%s: exit %d\n%s", cmd, rc, err);
  /* the printed pipeline works on the gradient outputs */
  assert_non_null(strstr(out, "\"wte.weight.grad\""));
  assert_non_null(strstr(out, "scatter_add")); /* the embedding's backward */
  free(out);
  free(err);
  char *text = th_read_file(ir, NULL);
  assert_non_null(text);
  assert_non_null(strstr(text, "softmax_xent")); /* the fused loss, not a kept softmax */
  assert_non_null(strstr(text, "\"kernc.loss\""));
  assert_non_null(strstr(text, "\"h.0.ln_1.weight.grad\""));
  free(text);
  char **files;
  int n = th_list_files(dump, "", ".kir", &files);
  th_free_list(files, n);
  assert_true(n > 2);
}

static void t_gradcheck(void **state) {
  const env *e = *state;
  char cmd[4096], *out, *err;
  snprintf(cmd, sizeof cmd,
           "'%s' gradcheck '%s/models/gpt2_tiny/model.onnx' --loss xent:logits:labels --dim 5 "
           "--samples 4 --params 'h.0.*,wte.weight'",
           e->kernc, e->tests);
  int rc = th_exec(cmd, &out, &err);
  if (rc != 0 || !strstr(out, "13 of 13 parameters passed"))
    fail_msg("%s: exit %d\n%s\n%s", cmd, rc, out, err);
  free(out);
  free(err);
  char args[2048];
  snprintf(args, sizeof args, "gradcheck '%s/models/gpt2_tiny/model.onnx' --loss sum:nope",
           e->tests);
  expect_run(e, args, 1, "nope");
}

static void t_errors(void **state) {
  const env *e = *state;
  char m[1024], a[4096], r[1024];
  snprintf(m, sizeof m, "grad '%s/models/gpt2_tiny/model.onnx' -o '%s/err'", e->tests, e->tmp);
  snprintf(r, sizeof r, "%s/models/grad_ref/gpt2_tiny_xent", e->tests);
  /* bad usage: exit 2 */
  snprintf(a, sizeof a, "%s", m);
  expect_run(e, a, 2, "missing --loss");
  snprintf(a, sizeof a, "%s --loss=hinge:logits", m);
  expect_run(e, a, 2, "unknown loss 'hinge:logits'");
  snprintf(a, sizeof a, "%s --loss=xent:logits", m);
  expect_run(e, a, 2, "should be xent:OUTPUT:LABELS");
  snprintf(a, sizeof a, "%s --loss=sum:logits:x", m);
  expect_run(e, a, 2, "should be sum:OUTPUT");
  snprintf(a, sizeof a, "%s --loss=sum:logits --threads=0", m);
  expect_run(e, a, 2, "--threads");
  /* failures: exit 1, naming the culprit */
  snprintf(a, sizeof a, "%s --loss=xent:nope:labels", m);
  expect_run(e, a, 1, "no output 'nope'");
  snprintf(a, sizeof a, "%s --loss=xent:logits:input_ids", m);
  expect_run(e, a, 1, "already has an input named 'input_ids'");
  snprintf(a, sizeof a, "%s --loss=sum:logits --params='zzz*'", m);
  expect_run(e, a, 1, "matches 'zzz*'");
  snprintf(a, sizeof a, "%s --loss=xent:logits:labels -i input_ids='%s/input_ids.npy'", m, r);
  expect_run(e, a, 1, "missing input(s): 'labels'");
  /* labels of the wrong rank, dtype, length and range */
  kc_context *ctx = kc_context_new();
  int64_t lab[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float flab[7] = {0};
  struct {
    const char *file;
    kc_tensor_desc t;
    const char *want;
  } bad[] = {
      {"l3.npy", th_desc(NULL, KC_I64, 3, (int64_t[]){1, 1, 7}, lab), "labels 'labels' are"},
      {"lf.npy", th_desc(NULL, KC_F32, 2, (int64_t[]){1, 7}, flab), "labels 'labels' are f32"},
      {"l6.npy", th_desc(NULL, KC_I64, 2, (int64_t[]){1, 6}, lab), "input 'labels' dim 1"},
      {"l8.npy", th_desc(NULL, KC_I64, 2, (int64_t[]){1, 8}, lab), "input 'labels' dim 1"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", e->tmp, bad[k].file);
    assert_int_equal(kc_npy_write(ctx, p, &bad[k].t), KC_OK);
    snprintf(a, sizeof a,
             "%s --loss=xent:logits:labels -i input_ids='%s/input_ids.npy' -i labels='%s'", m, r,
             p);
    expect_run(e, a, 1, bad[k].want);
  }
  lab[3] = 100; /* class 100 of 100 */
  char p[1024];
  snprintf(p, sizeof p, "%s/lrange.npy", e->tmp);
  kc_tensor_desc t = th_desc(NULL, KC_I64, 2, (int64_t[]){1, 7}, lab);
  assert_int_equal(kc_npy_write(ctx, p, &t), KC_OK);
  snprintf(a, sizeof a,
           "%s --loss=xent:logits:labels -i input_ids='%s/input_ids.npy' -i labels='%s'", m, r, p);
  expect_run(e, a, 1, "label 100 at flat position 3");
  kc_context_free(ctx);
  /* opset23_tiny: every float initializer is a parameter by default, its rotary cos/sin caches
   * too, and they get no gradient: an error naming the rotary node (its attention has a rule) */
  snprintf(a, sizeof a,
           "grad '%s/models/opset23_tiny/model.onnx' --loss=xent:logits:labels -o '%s/err'",
           e->tests, e->tmp);
  expect_run(e, a, 1, "cos/sin caches get no gradient");
  expect_run(e, a, 1, "(rotary, ");
  snprintf(p, sizeof p, "%s/err/loss.npy", e->tmp);
  assert_false(exists(p)); /* no failed run wrote a loss */
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC_BINARY TESTS_DIR\n", argv[0]);
    return 2;
  }
  env e = {argv[1], argv[2], ""};
  if (!th_mkdtemp(e.tmp, sizeof e.tmp, "gradcli")) {
    perror("mkdtemp");
    return 1;
  }
  const struct CMUnitTest t[] = {
      cmocka_unit_test_prestate(t_gpt2_xent, &e),
      cmocka_unit_test_prestate(t_llama_xent, &e),
      cmocka_unit_test_prestate(t_bert_mse, &e),
      cmocka_unit_test_prestate(t_llama_sum_params, &e),
      cmocka_unit_test_prestate(t_onnx_loss_ops, &e),
      cmocka_unit_test_prestate(t_ir_flags, &e),
      cmocka_unit_test_prestate(t_gradcheck, &e),
      cmocka_unit_test_prestate(t_errors, &e),
  };
  int rc = cmocka_run_group_tests(t, NULL, NULL);
  if (!th_rmtree(e.tmp)) fprintf(stderr, "could not remove %s\n", e.tmp);
  return rc;
}
