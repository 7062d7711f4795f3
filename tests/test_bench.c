/*
 * tests/test_bench.c - per-kernel profiling in the runtime (kc_module_set_profile,
 * kc_module_profile) and `kernc bench` end to end (argv[1]: the kernc binary, argv[2]: tests/).
 *
 * Covered: a profile lists exactly the nodes that launch a kernel (no views, no sources) in
 * node order with op, loc and %N, every count equals the runs made while profiling was on,
 * turning it off freezes the counters and on again clears them, a module never profiled reports
 * zeros; `kernc bench` on a text IR with weights (filled at random), a gather-index input and
 * symbolic dims prints the header, the latency line, peak bytes and the kernel table, --dim and
 * --input bind dims, --top folds the rest into "other", and bad usage exits 2.
 * Timings themselves are never compared: the CI machine is shared.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernc.h"
#include "runtime/runtime.h"
#include "tests/harness.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the profile API ------------------------------------------------------------------------ */

static const char *profile_kir = "graph @p(%1: f32[2,8] \"a\", %2: f32[8,4] \"b\") {\n"
                                 "  %3 = matmul(%1, %2) : f32[2,4] loc(\"mm\")\n"
                                 "  %4 = relu(%3) : f32[2,4]\n"
                                 "  %5 = constant dense<[8]> : i64[1]\n"
                                 "  %6 = reshape(%4, %5) : f32[8]\n"
                                 "  %7 = neg(%6) : f32[8] loc(\"negate\")\n"
                                 "  return %7 \"y\"\n"
                                 "}\n";

/* Compile text with threads; any failure fails the test. */
static kc_module *compile_text(kc_context *ctx, const char *text, int threads, kc_graph **g) {
  *g = th_parse(ctx, text);
  return th_compile(ctx, *g, threads);
}

static void run_n(kc_module *m, int n) {
  float a[16], b[32];
  for (int i = 0; i < 16; i++)
    a[i] = (float)i / 8 - 1;
  for (int i = 0; i < 32; i++)
    b[i] = (float)(i % 5) / 4 - 0.5f;
  kc_tensor_desc in[2] = {{"a", KC_F32, 2, {2, 8}, a}, {"b", KC_F32, 2, {8, 4}, b}}, out[1];
  for (int i = 0; i < n; i++)
    assert_int_equal(kc_run(m, in, 2, out, 1), KC_OK);
}

/* Every entry of the profile has been called `calls` times. */
static void expect_calls(const kc_module *m, uint64_t calls, bool timed) {
  kc_node_profile p[8];
  uint32_t n = kc_module_profile(m, p, 8);
  assert_int_equal(n, 3);
  for (uint32_t i = 0; i < n; i++) {
    assert_int_equal(p[i].calls, calls);
    if (!timed) assert_int_equal(p[i].ns, 0);
    if (!timed) assert_int_equal(p[i].min_ns, 0);
  }
}

static void t_profile_api(void **st) {
  (void)st;
  kc_context *ctx = kc_context_new();
  kc_graph *g = NULL;
  kc_module *m = compile_text(ctx, profile_kir, 2, &g);
  /* never turned on: the kernels are listed, with zero counts */
  run_n(m, 2);
  assert_int_equal(kc_module_profile(m, NULL, 0), 3);
  expect_calls(m, 0, false);

  assert_int_equal(kc_module_set_profile(m, 1), KC_OK);
  run_n(m, 5);
  kc_node_profile p[8];
  memset(p, 0xff, sizeof p);
  assert_int_equal(kc_module_profile(m, p, 8), 3);
  /* node order; the constant (a source) and the reshape (a view) launch nothing */
  const kc_graph *mg = kc_module_graph(m);
  assert_string_equal(p[0].op, "matmul");
  assert_string_equal(p[0].loc, "mm");
  assert_int_equal(p[0].value, 3);
  assert_string_equal(p[1].op, "relu");
  assert_null(p[1].loc);
  assert_int_equal(p[1].value, 4);
  assert_string_equal(p[2].op, "neg");
  assert_string_equal(p[2].loc, "negate");
  assert_int_equal(p[2].value, 7);
  assert_true(p[0].node < p[1].node && p[1].node < p[2].node);
  assert_int_equal(kc_val_rank(mg, (kc_val){p[2].value}), 1);
  uint64_t total = 0;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(p[i].calls, 5);
    assert_true(p[i].min_ns > 0 && p[i].min_ns * 5 <= p[i].ns);
    total += p[i].ns;
  }
  assert_true(total > 0);
  /* cap smaller than the count: only cap entries are written, the count is still returned */
  memset(p, 0, sizeof p);
  assert_int_equal(kc_module_profile(m, p, 1), 3);
  assert_string_equal(p[0].op, "matmul");
  assert_null(p[1].op);

  /* off: counters freeze and stay readable; on again: they restart from zero */
  assert_int_equal(kc_module_set_profile(m, 0), KC_OK);
  run_n(m, 3);
  expect_calls(m, 5, true);
  assert_int_equal(kc_module_set_profile(m, 1), KC_OK);
  expect_calls(m, 0, false);
  run_n(m, 1);
  expect_calls(m, 1, true);

  assert_int_equal(kc_module_set_profile(NULL, 1), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_module_profile(NULL, p, 8), 0);
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* ---- kernc bench ----------------------------------------------------------------------------- */

typedef struct cli_env {
  const char *kernc;
  char dir[64];
} cli_env;

/* Run `kernc bench ARGS` with stdout in *out and stderr in *err (malloc'd); exit code. */
static int bench(const cli_env *c, char **out, char **err, const char *fmt, ...) {
  char args[4096], cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "'%s' bench %s", c->kernc, args);
  return th_exec(cmd, out, err);
}

static void has(const char *text, const char *what) {
  if (!strstr(text, what)) fail_msg("expected \"%s\" in:\n%s", what, text);
}

static const char *chain_kir = "# kir 1\n"
                               "graph @chain(%1: f32[B,S,16] \"x\", %2: i64[B,S] \"ids\") {\n"
                               "  %3 = weight \"emb\" : f32[50,16]\n"
                               "  %4 = gather(%3, %2) : f32[B,S,16] loc(\"embed\")\n"
                               "  %5 = add(%1, %4) : f32[B,S,16]\n"
                               "  %6 = relu(%5) : f32[B,S,16] loc(\"act\")\n"
                               "  %7 = weight \"w\" : f32[16,8]\n"
                               "  %8 = matmul(%6, %7) : f32[B,S,8] loc(\"proj\")\n"
                               "  return %8 \"y\"\n"
                               "}\n";

static void t_cli_bench(void **st) {
  cli_env *c = *st;
  const char *d = c->dir;
  char path[256], *out, *err;
  snprintf(path, sizeof path, "%s/chain.kir", d);
  th_write_file(path, chain_kir, strlen(chain_kir));

  /* --passes= keeps every kernel of chain.kir, whatever the default pipeline fuses */
  int rc = bench(c, &out, &err, "'%s/chain.kir' --iters 3 --warmup 1 --passes=", d);
  if (rc != 0) fail_msg("exit %d: %s", rc, err);
  has(out, "weights      2 without data");
  has(out, "dims         B=1 (default), S=128 (default)");
  has(out, "x              f32[1,128,16]  random uniform in [-1, 1)");
  has(out, "ids            i64[1,128]  random integers in [0, 50) (gather indices)");
  has(out, "outputs      y f32[1,128,8]");
  has(out, "runs         1 warm-up");
  has(out, "3 timed");
  has(out, "latency      median ");
  has(out, " min ");
  has(out, " p90 ");
  has(out, "peak arena   ");
  has(out, "peak RSS     ");
  has(out, "kernels      4: ");
  has(out, "share       us/run     min us  op");
  has(out, "matmul               %8 f32[B,S,8]");
  has(out, "proj\n");
  has(out, "gather               %4 f32[B,S,16]");
  has(out, "relu                 %6 f32[B,S,16]");
  assert_null(strstr(out, "other ("));
  assert_null(strstr(out, "calls)")); /* every kernel ran once per timed run */
  free(out);
  free(err);

  /* --dim, --top and --threads; the rest of the kernels fold into "other" */
  assert_int_equal(
      bench(c, &out, &err, "'%s/chain.kir' --iters=2 --dim S=7 --top 1 --threads 1 --passes=", d),
      0);
  has(out, "S=7 (--dim)");
  has(out, "B=1 (default)");
  has(out, "f32[1,7,16]");
  has(out, "threads      1\n");
  has(out, "other (3 kernels)");
  free(out);
  free(err);

  /* a given input binds the symbols of its dims; the others follow them */
  kc_context *ctx = kc_context_new();
  float xs[2 * 5 * 16] = {0};
  kc_tensor_desc x = {NULL, KC_F32, 3, {2, 5, 16}, xs};
  snprintf(path, sizeof path, "%s/x.npy", d);
  assert_int_equal(kc_npy_write(ctx, path, &x), KC_OK);
  kc_context_free(ctx);
  assert_int_equal(bench(c, &out, &err, "'%s/chain.kir' --iters 1 --input x='%s/x.npy'", d, d), 0);
  has(out, "B=2 (x), S=5 (x)");
  has(out, "f32[2,5,16]  from file");
  has(out, "i64[2,5]  random integers");
  free(out);
  free(err);

  /* bad usage exits 2 with a hint; model-dependent mistakes exit 1 naming the problem */
  static const char *bad[] = {
      "",
      "'%s/chain.kir' --iters 0",
      "'%s/chain.kir' --iters x",
      "'%s/chain.kir' --warmup -1",
      "'%s/chain.kir' --threads 0",
      "'%s/chain.kir' --top",
      "'%s/chain.kir' --dim S",
      "'%s/chain.kir' --dim S=-3",
      "'%s/chain.kir' --dim S=2 --dim S=3",
      "'%s/chain.kir' --frobnicate",
      "'%s/chain.kir' '%s/chain.kir'",
      "'%s/chain.kir' --input",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    rc = bench(c, &out, &err, bad[i], d, d);
    if (rc != 2) fail_msg("'%s': exit %d, expected 2\n%s", bad[i], rc, err);
    has(err, "Try 'kernc bench --help'");
    free(out);
    free(err);
  }
  assert_int_equal(bench(c, &out, &err, "'%s/chain.kir' --dim Q=3", d), 1);
  has(err, "no input of the model has a dim named 'Q'");
  free(out);
  free(err);
  assert_int_equal(bench(c, &out, &err, "'%s/chain.kir' --input nope='%s/x.npy'", d, d), 1);
  has(err, "has no input 'nope'");
  free(out);
  free(err);
  assert_int_equal(bench(c, &out, &err, "'%s/missing.kir'", d), 1);
  free(out);
  free(err);
  assert_int_equal(bench(c, &out, &err, "--help"), 0);
  has(out, "usage: kernc bench");
  has(out, "--iters=N");
  free(out);
  free(err);

  assert_int_equal(th_sh("rm -f '%s'/*.kir '%s'/*.npy '%s'/*.txt", d, d, d), 0);
}

int main(int argc, char **argv) {
  cli_env c = {.kernc = argc > 1 ? argv[1] : NULL};
  if (c.kernc && !th_mkdtemp(c.dir, sizeof c.dir, "bench")) return 1;
  const struct CMUnitTest cli[] = {cmocka_unit_test_prestate(t_cli_bench, &c)};
  int failed = c.kernc ? cmocka_run_group_tests_name("kernc bench", cli, NULL, NULL) : 0;
  if (c.kernc) th_rmtree(c.dir);
  const struct CMUnitTest tests[] = {cmocka_unit_test(t_profile_api)};
  return failed + cmocka_run_group_tests_name("profile", tests, NULL, NULL);
}
