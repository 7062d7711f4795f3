/*
 * tests/test_attention_grad.c - the attention backward (ir/ops.def attention_grad, the CPU and
 * CUDA kernels codegen/{cpu,cuda}/attention_grad.c) and attention's lse result, against PyTorch
 * autograd (tests/models/attention_grad_ref.py writes grad_ref/attention/CASE/NAME.npy: inputs,
 * y, lse, dq, dk, dv, and case.txt with the attributes).
 *
 * Per case (causal GQA; causal MQA with S > T, a scale and a softcap; padding in the
 * [B, heads, S, D] layout with D_v != D; additive with -inf entries and a fully masked row):
 *   - direct: a graph attention (with lse) -> attention_grad; y, lse, dq, dk, dv on the CPU
 *     within 1e-4 of the largest reference value (f32 kernels, f64 references), and bitwise the
 *     same with 1 and 2 threads;
 *   - through kc_grad: loss = sum(attention(q, k, v) * dy), the gradients of q, k, v (the rule,
 *     its forward copy and the pipeline) on the CPU;
 *   - the direct graph on the CUDA target: skipped without a GPU; the CTest entry
 *     test_attention_grad_cuda_emulated runs it on tests/cuda_emu's emulated driver.
 * And what the rule refuses (past K/V, fused rotary, a loss reading lse): errors naming the node.
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

static const char *g_tests_dir = "tests";

static const char *const g_cases[] = {"causal_gqa", "causal_softcap", "padding", "additive"};
#define NCASES (sizeof g_cases / sizeof *g_cases)

typedef struct tcase {
  const char *name;
  int rank;
  int64_t B, S, T, H, KV, D, Dv;
  char mask[16];
  double scale, softcap;
  kc_tensor_desc q, k, v, m, dy, y, lse, dq, dk, dv; /* from the .npy files */
} tcase;

static kc_tensor_desc load(kc_context *ctx, const tcase *c, const char *what, bool need) {
  char path[512];
  snprintf(path, sizeof path, "%s/models/grad_ref/attention/%s/%s.npy", g_tests_dir, c->name, what);
  kc_tensor_desc t = {0};
  if (!need) {
    FILE *f = fopen(path, "rb");
    if (!f) return t;
    fclose(f);
  }
  if (kc_npy_read(ctx, path, &t) != KC_OK) fail_msg("%s: %s", path, kc_last_error(ctx));
  t.name = what;
  return t;
}

static void load_case(kc_context *ctx, tcase *c, const char *name) {
  memset(c, 0, sizeof *c);
  c->name = name;
  char path[512];
  snprintf(path, sizeof path, "%s/models/grad_ref/attention/%s/case.txt", g_tests_dir, name);
  char *txt = th_read_file(path, NULL);
  if (!txt) fail_msg("cannot read %s", path);
  long long v[8];
  if (sscanf(txt, "%lld %lld %lld %lld %lld %lld %lld %lld %15s %lf %lf", &v[0], &v[1], &v[2],
             &v[3], &v[4], &v[5], &v[6], &v[7], c->mask, &c->scale, &c->softcap) != 11)
    fail_msg("%s: bad case line", path);
  free(txt);
  c->rank = (int)v[0];
  c->B = v[1], c->S = v[2], c->T = v[3], c->H = v[4], c->KV = v[5], c->D = v[6], c->Dv = v[7];
  c->q = load(ctx, c, "q", true);
  c->k = load(ctx, c, "k", true);
  c->v = load(ctx, c, "v", true);
  c->m = load(ctx, c, "mask", false);
  c->dy = load(ctx, c, "dy", true);
  c->y = load(ctx, c, "y", true);
  c->lse = load(ctx, c, "lse", true);
  c->dq = load(ctx, c, "dq", true);
  c->dk = load(ctx, c, "dk", true);
  c->dv = load(ctx, c, "dv", true);
}

static void free_case(tcase *c) {
  kc_tensor_desc *all[] = {&c->q, &c->k,   &c->v,  &c->m,  &c->dy,
                           &c->y, &c->lse, &c->dq, &c->dk, &c->dv};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++)
    if (all[i]->data) kc_npy_free(all[i]);
}

/* "f32[2,37,64]" of a descriptor (bool for the padding mask). */
static const char *type_of(const kc_tensor_desc *t, char *buf, size_t size) {
  int n = snprintf(buf, size, "%s[", t->dtype == KC_BOOL ? "bool" : "f32");
  for (int i = 0; i < t->rank; i++)
    n += snprintf(buf + n, size - (size_t)n, "%s%lld", i ? "," : "", (long long)t->dims[i]);
  snprintf(buf + n, size - (size_t)n, "]");
  return buf;
}

/* The attributes both ops take: heads, kv_heads, scale?, mask, softcap?. */
static void attrs_of(const tcase *c, char *buf, size_t size) {
  int n = snprintf(buf, size, "heads=%lld, kv_heads=%lld", (long long)c->H, (long long)c->KV);
  if (c->scale != 0) n += snprintf(buf + n, size - (size_t)n, ", scale=%.9g", c->scale);
  n += snprintf(buf + n, size - (size_t)n, ", mask=%s", c->mask);
  if (c->softcap != 0) snprintf(buf + n, size - (size_t)n, ", softcap=%.9g", c->softcap);
}

/* The graph inputs: q, k, v, [mask,] dy. */
static void inputs_of(const tcase *c, char *buf, size_t size) {
  char tq[64], tk[64], tv[64], tm[64], td[64];
  int n = snprintf(buf, size, "%%1: %s \"q\", %%2: %s \"k\", %%3: %s \"v\", %%5: %s \"dy\"",
                   type_of(&c->q, tq, sizeof tq), type_of(&c->k, tk, sizeof tk),
                   type_of(&c->v, tv, sizeof tv), type_of(&c->dy, td, sizeof td));
  if (c->m.data) snprintf(buf + n, size - (size_t)n, ", %%4: %s \"mask\"", type_of(&c->m, tm, 64));
}

/* attention with lse, then attention_grad: outputs y, lse, dq, dk, dv. */
static kc_graph *direct_graph(kc_context *ctx, const tcase *c) {
  char text[4096], ins[512], at[256], ty[64], tq[64], tk[64], tv[64];
  inputs_of(c, ins, sizeof ins);
  attrs_of(c, at, sizeof at);
  const char *mk = c->m.data ? ", %4" : "";
  snprintf(text, sizeof text,
           "graph @attention_grad_%s(%s) {\n"
           "  %%6, _, _, %%7 = attention(%%1, %%2, %%3%s) {%s} : %s, _, _, f32[%lld,%lld,%lld]\n"
           "  %%8, %%9, %%10 = attention_grad(%%1, %%2, %%3, %s, %%6, %%5, %%7) {%s} : %s, %s, %s\n"
           "  return %%6 \"y\", %%7 \"lse\", %%8 \"dq\", %%9 \"dk\", %%10 \"dv\"\n"
           "}\n",
           c->name, ins, mk, at, type_of(&c->y, ty, sizeof ty), (long long)c->B, (long long)c->H,
           (long long)c->S, c->m.data ? "%4" : "_", at, type_of(&c->q, tq, sizeof tq),
           type_of(&c->k, tk, sizeof tk), type_of(&c->v, tv, sizeof tv));
  kc_graph *g = NULL;
  if (kc_graph_parse(ctx, text, c->name, &g) != KC_OK)
    fail_msg("%s: %s\n%s", c->name, kc_last_error(ctx), text);
  return g;
}

/* loss = sum(attention(q, k, v[, mask]) * dy), differentiated for q, k, v by kc_grad. */
static kc_graph *grad_graph(kc_context *ctx, const tcase *c) {
  char text[4096], ins[512], at[256], ty[64];
  inputs_of(c, ins, sizeof ins);
  attrs_of(c, at, sizeof at);
  type_of(&c->y, ty, sizeof ty);
  snprintf(text, sizeof text,
           "graph @attention_loss_%s(%s) {\n"
           "  %%6 = attention(%%1, %%2, %%3%s) {%s} : %s\n"
           "  %%7 = mul(%%6, %%5) : %s\n"
           "  %%8 = reduce_sum(%%7) {keepdims=0} : f32[]\n"
           "  return %%8 \"loss\"\n"
           "}\n",
           c->name, ins, c->m.data ? ", %4" : "", at, ty, ty);
  kc_graph *g = NULL;
  if (kc_graph_parse(ctx, text, c->name, &g) != KC_OK)
    fail_msg("%s: %s\n%s", c->name, kc_last_error(ctx), text);
  const char *params[] = {"q", "k", "v"};
  if (kc_grad(g, "loss", 3, params) != KC_OK)
    fail_msg("kc_grad(%s): %s", c->name, kc_last_error(ctx));
  return g;
}

/* Compile for target (NULL: the CPU) with the default pipeline; false when the target is not
 * available here (the message printed). */
static bool compile(kc_context *ctx, const kc_graph *g, const char *target, int threads,
                    kc_module **m) {
  kc_compile_options o = {.target = target, .threads = threads};
  kc_status s = kc_compile(ctx, g, &o, m);
  if (s == KC_ERR_UNSUPPORTED && target) {
    print_message("%s: %s\n", target, kc_last_error(ctx));
    return false;
  }
  if (s != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
  return true;
}

static uint32_t run(kc_context *ctx, kc_module *m, const tcase *c, kc_tensor_desc *out) {
  kc_tensor_desc in[5] = {c->q, c->k, c->v, c->dy, c->m};
  uint32_t nin = c->m.data ? 5 : 4;
  uint32_t nout = kc_graph_num_outputs(kc_module_graph(m));
  th_run(ctx, m, in, nin, out, nout);
  return nout;
}

/* |got - ref| <= tol * max |ref| + 1e-6 elementwise; -inf (lse of a row without keys) exactly. */
static void compare(const char *what, const char *label, const kc_tensor_desc *got,
                    const kc_tensor_desc *ref, double tol) {
  int64_t n = th_numel(ref->rank, ref->dims);
  assert_int_equal(got->dtype, KC_F32);
  assert_int_equal(th_numel(got->rank, got->dims), n);
  const float *a = got->data, *r = ref->data;
  double mx = 0, worst = 0;
  for (int64_t i = 0; i < n; i++)
    if (isfinite(r[i])) mx = fmax(mx, fabs(r[i]));
  for (int64_t i = 0; i < n; i++) {
    if (isinf(r[i])) {
      if (a[i] != r[i])
        fail_msg("%s %s[%lld] = %g, PyTorch %g", what, label, (long long)i, a[i], r[i]);
      continue;
    }
    double e = fabs((double)a[i] - r[i]);
    if (!(e <= tol * mx + 1e-6))
      fail_msg("%s %s[%lld] = %.9g, PyTorch %.9g (max |ref| %g)", what, label, (long long)i, a[i],
               r[i], mx);
    worst = fmax(worst, e);
  }
  print_message("%-28s %-8s max |ref| %.3g, max |kernc - torch| %.3g\n", what, label, mx, worst);
}

static void check_direct(const tcase *c, kc_tensor_desc *out, const char *what, double tol) {
  const kc_tensor_desc *ref[5] = {&c->y, &c->lse, &c->dq, &c->dk, &c->dv};
  static const char *const names[5] = {"y", "lse", "dq", "dk", "dv"};
  for (int i = 0; i < 5; i++)
    compare(what, names[i], &out[i], ref[i], tol);
}

static void test_cpu(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  for (size_t k = 0; k < NCASES; k++) {
    tcase c;
    load_case(ctx, &c, g_cases[k]);
    char what[64];
    snprintf(what, sizeof what, "cpu %s", c.name);
    kc_graph *g = direct_graph(ctx, &c);
    kc_module *m1 = NULL, *m2 = NULL;
    compile(ctx, g, NULL, 1, &m1);
    compile(ctx, g, NULL, 2, &m2);
    kc_tensor_desc o1[5], o2[5];
    assert_int_equal(run(ctx, m1, &c, o1), 5);
    check_direct(&c, o1, what, 1e-4);
    assert_int_equal(run(ctx, m2, &c, o2), 5);
    for (int i = 0; i < 5; i++)
      if (memcmp(o1[i].data, o2[i].data, th_nbytes(&o1[i])) != 0)
        fail_msg("%s: output %d differs between 1 and 2 threads", c.name, i);
    kc_module_free(m1);
    kc_module_free(m2);
    kc_graph_free(g);

    /* through the rule */
    g = grad_graph(ctx, &c);
    kc_module *m = NULL;
    compile(ctx, g, NULL, 2, &m);
    kc_tensor_desc o[4];
    assert_int_equal(run(ctx, m, &c, o), 4);
    snprintf(what, sizeof what, "cpu kc_grad %s", c.name);
    static const char *const gnames[3] = {"q.grad", "k.grad", "v.grad"};
    const kc_tensor_desc *gref[3] = {&c.dq, &c.dk, &c.dv};
    for (int i = 0; i < 3; i++) {
      uint32_t j = 0;
      while (j < 4 && strcmp(kc_graph_output_name(kc_module_graph(m), j), gnames[i]) != 0)
        j++;
      if (j == 4) fail_msg("%s: no output %s", c.name, gnames[i]);
      compare(what, gnames[i], &o[j], gref[i], 1e-4);
    }
    kc_module_free(m);
    kc_graph_free(g);
    free_case(&c);
  }
  kc_context_free(ctx);
}

static void test_cuda(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  bool ran = false;
  for (size_t k = 0; k < NCASES; k++) {
    tcase c;
    load_case(ctx, &c, g_cases[k]);
    kc_graph *g = direct_graph(ctx, &c);
    kc_module *m = NULL;
    if (!compile(ctx, g, "cuda", 0, &m)) {
      kc_graph_free(g);
      free_case(&c);
      break;
    }
    char what[64];
    snprintf(what, sizeof what, "cuda %s", c.name);
    kc_tensor_desc o[5];
    assert_int_equal(run(ctx, m, &c, o), 5);
    check_direct(&c, o, what, 1e-4);
    ran = true;
    kc_module_free(m);
    kc_graph_free(g);
    free_case(&c);
  }
  kc_context_free(ctx);
  if (!ran) skip();
}

/* The forms the rule refuses, each with an error naming the node: past K/V (decoding) and fused
 * rotary (cos/sin inputs); a parameter reaching the mask is test_grad.c's. */
static void test_refused(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  static const char *const forms[2][2] = {
      {"%4: f32[1,2,3,8] \"pk\", %5: f32[1,2,3,8] \"pv\"", "_, %4, %5"},
      {"%4: f32[16,4] \"cs\", %5: f32[16,4] \"sn\"", "_, _, _, %4, %5"},
  };
  static const char *const want[2] = {"past K/V", "fused rotary"};
  for (int f = 0; f < 2; f++) {
    char text[1024];
    snprintf(text, sizeof text,
             "graph @refused(%%1: f32[1,4,16] \"q\", %%2: f32[1,4,16] \"k\", %%3: f32[1,4,16] "
             "\"v\", %s) {\n"
             "  %%6 = attention(%%1, %%2, %%3, %s) {heads=2, mask=causal} : f32[1,4,16] "
             "loc(\"blk.attn\")\n"
             "  %%7 = reduce_sum(%%6) {keepdims=0} : f32[]\n"
             "  return %%7 \"loss\"\n"
             "}\n",
             forms[f][0], forms[f][1]);
    kc_graph *g = NULL;
    if (kc_graph_parse(ctx, text, "refused", &g) != KC_OK)
      fail_msg("%s\n%s", kc_last_error(ctx), text);
    const char *p = "q";
    assert_int_equal(kc_grad(g, "loss", 1, &p), KC_ERR_UNSUPPORTED);
    const char *msg = kc_last_error(ctx);
    if (!strstr(msg, want[f]) || !strstr(msg, "blk.attn"))
      fail_msg("form %d: unexpected error: %s", f, msg);
    print_message("refused: %s\n", msg);
    kc_graph_free(g);
  }
  /* a loss reading lse: only y is differentiated */
  static const char lse_loss[] =
      "graph @lse_loss(%1: f32[1,4,16] \"q\", %2: f32[1,4,16] \"k\", %3: f32[1,4,16] \"v\") {\n"
      "  %4, _, _, %5 = attention(%1, %2, %3) {heads=2, mask=causal} : f32[1,4,16], _, _, "
      "f32[1,2,4] loc(\"blk.attn\")\n"
      "  %6 = reduce_sum(%5) {keepdims=0} : f32[]\n"
      "  return %6 \"loss\"\n"
      "}\n";
  kc_graph *g = NULL;
  if (kc_graph_parse(ctx, lse_loss, "lse_loss", &g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  const char *p = "q";
  assert_int_equal(kc_grad(g, "loss", 1, &p), KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(kc_last_error(ctx), "result 3 (lse)"));
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc > 2) g_tests_dir = argv[2];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cpu),
      cmocka_unit_test(test_cuda),
      cmocka_unit_test(test_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
