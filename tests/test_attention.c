/*
 * tests/test_attention.c - causal attention honours the past length (issue 11), on the CPU.
 *
 * mask=causal is aligned at the bottom right (include/kernc.h): key j of T = P + S_kv is visible
 * to query i iff j <= i + T - S. Covered, against a plain C reference (tests/attention_ref.h):
 *   - the issue's graph as text IR through kc_compile/kc_run: one query, two keys, y = [2, 2];
 *   - more keys than queries without a past, a past with S_kv != S, fewer keys than queries
 *     (rows with no visible key give 0), several heads and GQA / MQA, at sizes past the kernel's
 *     16-lane key and query-slot blocks (full blocks and tails) and small ones;
 *   - a decoding step with a hand-built cache equals the full recomputation: causal attention over
 *     S tokens against the last n queries with all keys new, and with the first S - n as past
 *     K/V, for n = 1, 3 and 20.
 * Also rotary position ids out of the caches: an error naming the node, never a clamp.
 * The CUDA target runs the same cases in tests/test_cuda.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include "attention_ref.h"

static const char issue_graph[] =
    "# kir 1\n"
    "graph @a(%1: f32[1,1,2] \"q\") {\n"
    "  %2 = constant dense<[0.0, 0.0, 0.0, 0.0]> : f32[1,2,2]\n"
    "  %3 = constant dense<[1.0, 1.0, 3.0, 3.0]> : f32[1,2,2]\n"
    "  %4 = attention(%1, %2, %3) {heads=1, mask=causal} : f32[1,1,2]\n"
    "  return %4 \"y\"\n"
    "}\n";

/* The one query comes after one past key: it sees both keys (equal scores), y = mean(v) = 2. */
static void t_issue_graph(void **st) {
  (void)st;
  static const char *const pipelines[] = {NULL, ""};
  for (size_t p = 0; p < 2; p++) {
    kc_context *ctx = kc_context_new();
    kc_graph *g = th_parse(ctx, issue_graph);
    kc_module *m = NULL;
    kc_compile_options o = {.passes = pipelines[p]};
    kc_status s = kc_compile(ctx, g, &o, &m);
    if (s != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
    float q[2] = {0.5f, -0.25f};
    int64_t qd[3] = {1, 1, 2};
    kc_tensor_desc in = th_desc("q", KC_F32, 3, qd, q), out;
    th_run(ctx, m, &in, 1, &out, 1);
    const float *y = out.data;
    assert_int_equal(out.rank, 3);
    assert_true(fabsf(y[0] - 2.0f) < 1e-6f && fabsf(y[1] - 2.0f) < 1e-6f);
    kc_module_free(m);
    kc_graph_free(g);
    kc_context_free(ctx);
  }
}

static void check(const ar_case *c) {
  kc_context *ctx = kc_context_new();
  char msg[1024] = "";
  if (!ar_check(ctx, "cpu", c, msg, sizeof msg))
    fail_msg("B %lld S %lld S_kv %lld P %lld H %lld/%lld D %lld: %s", (long long)c->B,
             (long long)c->S, (long long)c->Skv, (long long)c->P, (long long)c->H,
             (long long)c->KVH, (long long)c->D, msg);
  kc_context_free(ctx);
}

static void t_causal_cases(void **st) {
  (void)st;
  static const ar_case cases[] = {
      /* more keys than queries, no past: the queries are the last S positions */
      {1, 1, 2, 0, 1, 1, 2},
      {2, 3, 7, 0, 2, 2, 8},
      {2, 19, 53, 0, 4, 2, 16},
      {1, 40, 70, 0, 8, 8, 32},
      /* a past and a different number of new keys */
      {2, 5, 9, 11, 4, 2, 16},
      {1, 17, 33, 20, 6, 3, 8},
      {2, 4, 6, 12, 3, 3, 8},
      /* fewer keys than queries: the first S - T rows see no key and give 0 */
      {2, 5, 3, 0, 2, 2, 8},
      {1, 37, 20, 0, 4, 1, 16},
      {2, 30, 2, 5, 4, 2, 8},
      /* square: the usual lower triangle, with and without a past */
      {2, 33, 33, 0, 4, 2, 16},
      {1, 21, 21, 9, 2, 1, 64},
      /* MQA decoding: one query, a long cache */
      {2, 1, 1, 70, 8, 1, 32},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    check(&cases[i]);
}

static void t_decode_equals_full(void **st) {
  (void)st;
  static const ar_case shapes[] = {
      {2, 77, 0, 0, 8, 2, 32}, /* GQA, 4 query heads per kv head */
      {1, 50, 0, 0, 4, 4, 16}, /* plain multi-head */
      {2, 35, 0, 0, 6, 1, 8},  /* MQA */
  };
  static const int64_t steps[] = {1, 3, 20};
  kc_context *ctx = kc_context_new();
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
    for (size_t n = 0; n < sizeof steps / sizeof *steps; n++) {
      char msg[1024] = "";
      if (!ar_decode(ctx, "cpu", &shapes[i], steps[n], msg, sizeof msg))
        fail_msg("S %lld H %lld/%lld D %lld, step of %lld: %s", (long long)shapes[i].S,
                 (long long)shapes[i].H, (long long)shapes[i].KVH, (long long)shapes[i].D,
                 (long long)steps[n], msg);
    }
  kc_context_free(ctx);
}

static void t_rotary_positions(void **st) {
  (void)st;
  kc_context *ctx = kc_context_new();
  char msg[1024] = "";
  if (!ar_rotary_positions(ctx, "cpu", msg, sizeof msg)) fail_msg("%s", msg);
  kc_context_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_issue_graph),
      cmocka_unit_test(t_causal_cases),
      cmocka_unit_test(t_decode_equals_full),
      cmocka_unit_test(t_rotary_positions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
