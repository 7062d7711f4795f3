/*
 * tests/test_onnx_save.c - kc_onnx_save_weights (frontend/onnx_save.c): weights written back into
 * an ONNX model. argv[2]: the tests/ folder.
 *
 * gpt2_tiny with changed weights is written, loaded again with kc_onnx_load (the bytes must be
 * the changed ones, the outputs those of the changed graph bit for bit) and run by ONNX Runtime
 * (python3 on PATH; the test skips that part where onnxruntime is missing), whose logits must
 * match kernc's within 1e-4. The same with the weights in an external file, with LoRA merged,
 * and the refusals: unmerged adapters named, a weight whose dims changed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "frontend/frontend.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *g_tests = "tests";
static char g_tmp[64];

static kc_tensor *tensor_named(kc_graph *g, const char *name) {
  for (uint32_t i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
  return NULL;
}

static kc_graph *load(kc_context *ctx, const char *path) {
  kc_graph *g = NULL;
  if (kc_onnx_load(ctx, path, &g) != KC_OK) fail_msg("%s: %s", path, kc_last_error(ctx));
  return g;
}

static void model_path(char *buf, size_t n) {
  snprintf(buf, n, "%s/models/gpt2_tiny/model.onnx", g_tests);
}

enum { B = 2, S = 6, V = 100 };
static int64_t g_ids[B * S];

/* Logits of g on g_ids (malloc'd, B*S*V floats). */
static float *logits(kc_context *ctx, const kc_graph *g) {
  for (int i = 0; i < B * S; i++)
    g_ids[i] = (i * 31 + 7) % V;
  kc_tensor_desc in = th_desc("input_ids", KC_I64, 2, (int64_t[]){B, S}, g_ids), out = {0};
  kc_module *m = NULL;
  if (kc_compile(ctx, g, NULL, &m) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  th_run(ctx, m, &in, 1, &out, 1);
  assert_int_equal(th_numel(out.rank, out.dims), B * S * V);
  float *y = malloc(sizeof(float) * B * S * V);
  assert_non_null(y);
  memcpy(y, out.data, sizeof(float) * B * S * V);
  kc_module_free(m);
  return y;
}

/* ONNX Runtime's logits for the model at path, or NULL when onnxruntime is not there. */
static float *ort_logits(const char *path) {
  if (th_sh("python3 -c 'import onnxruntime, numpy' >/dev/null 2>&1") != 0) return NULL;
  char ids[200], out[200];
  snprintf(ids, sizeof ids, "%s/ids.bin", g_tmp);
  snprintf(out, sizeof out, "%s/ort.bin", g_tmp);
  th_write_file(ids, g_ids, sizeof g_ids);
  int rc = th_sh("python3 -c \"import numpy as np, onnxruntime as ort, sys; "
                 "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']); "
                 "x = np.fromfile(sys.argv[2], dtype=np.int64).reshape(%d, %d); "
                 "y = s.run(None, {s.get_inputs()[0].name: x})[0]; "
                 "y.astype(np.float32).tofile(sys.argv[3])\" '%s' '%s' '%s'",
                 B, S, path, ids, out);
  assert_int_equal(rc, 0);
  size_t len = 0;
  float *y = (float *)th_read_file(out, &len);
  assert_non_null(y);
  assert_int_equal(len, sizeof(float) * B * S * V);
  return y;
}

static void expect_close(const float *a, const float *b, double tol, const char *what) {
  for (int i = 0; i < B * S * V; i++)
    if (fabs(a[i] - b[i]) > tol * (1 + fabs(b[i])))
      fail_msg("%s: %.9g vs %.9g at %d", what, a[i], b[i], i);
}

/* Replace weight name's data by a changed copy (kept in *keep, freed by the caller). */
static void change_weight(kc_graph *g, const char *name, float **keep) {
  kc_tensor *t = tensor_named(g, name);
  assert_non_null(t);
  size_t n = t->nbytes / sizeof(float);
  float *d = malloc(t->nbytes);
  assert_non_null(d);
  for (size_t i = 0; i < n; i++)
    d[i] = ((const float *)t->data)[i] * 1.5f + 0.01f * (float)(i % 7);
  t->data = d;
  *keep = d;
}

static void written_matches(kc_context *ctx, const kc_graph *g, const char *dst,
                            const char *const *names, int nnames) {
  kc_graph *back = load(ctx, dst);
  for (int k = 0; k < nnames; k++) {
    kc_tensor *a = tensor_named((kc_graph *)g, names[k]), *b = tensor_named(back, names[k]);
    assert_non_null(b);
    assert_int_equal(a->nbytes, b->nbytes);
    assert_memory_equal(a->data, b->data, a->nbytes);
  }
  float *y = logits(ctx, g), *yb = logits(ctx, back);
  assert_memory_equal(y, yb, sizeof(float) * B * S * V);
  float *yo = ort_logits(dst);
  if (yo)
    expect_close(yo, y, 1e-4, "onnxruntime vs kernc");
  else
    print_message("onnxruntime not available: the ORT comparison was not run\n");
  free(yo);
  free(y);
  free(yb);
  kc_graph_free(back);
}

static void save_case(uint64_t inline_max) {
  kc_context *ctx = kc_context_new();
  char src[4096], dst[200];
  model_path(src, sizeof src);
  snprintf(dst, sizeof dst, "%s/changed_%llu.onnx", g_tmp, (unsigned long long)inline_max);
  kc_graph *g = load(ctx, src), *orig = load(ctx, src);
  float *k1, *k2;
  change_weight(g, "h.0.attn.c_attn.weight", &k1);
  change_weight(g, "ln_f.bias", &k2);
  float *y0 = logits(ctx, orig), *y1 = logits(ctx, g);
  double diff = 0;
  for (int i = 0; i < B * S * V; i++)
    diff = fmax(diff, fabs(y0[i] - y1[i]));
  assert_true(diff > 1e-3); /* the change is visible */
  if (kc_onnx_save_weights_ex(ctx, src, g, dst, inline_max) != KC_OK)
    fail_msg("save: %s", kc_last_error(ctx));
  char data[260];
  snprintf(data, sizeof data, "%s.data", dst);
  struct stat st;
  assert_int_equal(stat(data, &st) == 0, inline_max == 0); /* external only when asked */
  const char *names[] = {"h.0.attn.c_attn.weight", "ln_f.bias", "wte.weight"};
  written_matches(ctx, g, dst, names, 3);
  free(y0);
  free(y1);
  free(k1);
  free(k2);
  kc_graph_free(g);
  kc_graph_free(orig);
  kc_context_free(ctx);
}

static void test_inline(void **state) {
  (void)state;
  save_case(KC_ONNX_INLINE_MAX);
}

static void test_external(void **state) {
  (void)state;
  save_case(0);
}

static void test_lora(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  char src[4096], dst[200];
  model_path(src, sizeof src);
  snprintf(dst, sizeof dst, "%s/lora.onnx", g_tmp);
  kc_graph *g = load(ctx, src);
  assert_int_equal(kc_lora(g, "h.*.c_fc.weight", 4, 8.0, 5), KC_OK);
  assert_int_equal(kc_onnx_save_weights(ctx, src, g, dst), KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(kc_last_error(ctx), "h.0.c_fc.weight.lora_A"));
  assert_non_null(strstr(kc_last_error(ctx), "kc_lora_merge"));
  struct stat st;
  assert_int_not_equal(stat(dst, &st), 0); /* nothing written */
  float *keep[4];
  int nk = 0;
  for (uint32_t i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strstr(g->tensors[i].name, ".lora_B")) {
      size_t n = g->tensors[i].nbytes / sizeof(float);
      float *d = keep[nk++] = malloc(g->tensors[i].nbytes);
      for (size_t k = 0; k < n; k++)
        d[k] = 0.05f * (float)((int)(k % 11) - 5);
      g->tensors[i].data = d;
    }
  assert_int_equal(nk, 2);
  float *yl = logits(ctx, g);
  assert_int_equal(kc_lora_merge(g), KC_OK);
  assert_int_equal(kc_onnx_save_weights(ctx, src, g, dst), KC_OK);
  const char *names[] = {"h.0.c_fc.weight", "h.1.c_fc.weight"};
  written_matches(ctx, g, dst, names, 2);
  kc_graph *back = load(ctx, dst);
  float *yb = logits(ctx, back);
  expect_close(yb, yl, 1e-4, "written merged model vs unmerged adapters");
  free(yb);
  free(yl);
  for (int k = 0; k < nk; k++)
    free(keep[k]);
  kc_graph_free(back);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void test_refusals(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  char src[4096], dst[200];
  model_path(src, sizeof src);
  snprintf(dst, sizeof dst, "%s/bad.onnx", g_tmp);
  kc_graph *g = load(ctx, src);
  kc_tensor *t = tensor_named(g, "ln_f.bias");
  t->dims[0] = 32; /* pretend the graph's weight has other dims */
  assert_int_equal(kc_onnx_save_weights(ctx, src, g, dst), KC_ERR_SHAPE);
  assert_non_null(strstr(kc_last_error(ctx), "ln_f.bias"));
  t->dims[0] = 64;
  kc_weight(g, "extra", KC_F32, 1, (int64_t[]){1}, (float[]){1});
  assert_int_equal(kc_onnx_save_weights(ctx, src, g, dst), KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(kc_last_error(ctx), "'extra'"));
  assert_int_equal(kc_onnx_save_weights(ctx, "/nonexistent/x.onnx", g, dst), KC_ERR_IO);
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc > 2) g_tests = argv[2];
  if (!th_mkdtemp(g_tmp, sizeof g_tmp, "onnx_save")) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_inline),
      cmocka_unit_test(test_external),
      cmocka_unit_test(test_lora),
      cmocka_unit_test(test_refusals),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  th_rmtree(g_tmp);
  return rc;
}
