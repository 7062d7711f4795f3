/*
 * tests/test_cli_opts.c - the kernc program's options of issue 16, end to end (argv[1]: the
 * kernc binary, argv[2]: tests/), on data tests/cli_opts_data.py writes with onnx.helper and
 * numpy (expected values from numpy or by hand, never from kernc):
 *
 *   - check: --rtol/--atol, --relative, kernc-check.tol files (and flags overriding them), test
 *     names relative to the DIR given, the worst element and the bound in a failure;
 *   - run: .npz inputs written by np.savez and np.savez_compressed, a truncated and a corrupt
 *     archive refused naming the file, --print-all;
 *   - the verifier's errors on text IR at file:line:col with the line and a caret;
 *   - --explain-fusion on stderr under dump and opt, with the printed IR's ids and ONNX names;
 *   - dump --format=svg and --dump-dir in the dump's format;
 *   - dump --weights: the .kir names its safetensors file, a hand edit of the text runs, and
 *     opt -o into another folder names the file from there.
 * Commands go through /bin/sh; paths are single-quoted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct env {
  const char *kernc, *tests;
  char tmp[64]; /* scratch folder with the data, removed at the end */
} env;

/* Run `kernc ARGS` (formatted); its exit code, stdout and stderr (caller frees). */
static int kernc(const env *e, char **out, char **err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int kernc(const env *e, char **out, char **err, const char *fmt, ...) {
  char args[8192], cmd[8500];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "'%s' %s", e->kernc, args);
  return th_exec(cmd, out, err);
}

/* s contains want, else fail showing both texts. */
static void has(const char *what, const char *s, const char *want) {
  if (!strstr(s, want)) fail_msg("%s lacks \"%s\":\n%s", what, want, s);
}

static void lacks(const char *what, const char *s, const char *bad) {
  if (strstr(s, bad)) fail_msg("%s has \"%s\":\n%s", what, bad, s);
}

static void write_text(const env *e, const char *name, const char *text) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", e->tmp, name);
  th_write_file(path, text, strlen(text));
}

/* ---- kernc check ----------------------------------------------------------------------------- */

static void t_check_tolerances(void **state) {
  const env *e = *state;
  char *out, *err;
  /* default bound 1e-7 + 1e-3*|want|: the 1%-off test fails, named relative to data/ */
  assert_int_equal(kernc(e, &out, &err, "check '%s/data'", e->tmp), 1);
  has("check", out, "PASS node/test_add\n");
  has("check", out, "FAIL node/test_add_off: output 'c': 6 of 6 values differ");
  /* (a+b)*1.01 is off most at the largest |want|, 6.5*1.01 = 6.565 at [1,2] */
  has("check", out, "worst at [1,2]: computed 6.5, expected 6.56500006");
  has("check", out, "(bound |got-want| <= 1e-07 + 0.001*|want| = 0.00657)");
  /* 1e-3 computed against 2e-3 expected: elementwise that is 50% off */
  has("check", out, "FAIL model/test_whole");
  has("check", out, "1 passed, 2 failed, 0 skipped");
  free(out), free(err);

  assert_int_equal(kernc(e, &out, &err, "check '%s/data/node' --rtol=2e-2 --atol=0", e->tmp), 0);
  has("check --rtol", out, "PASS test_add_off");
  free(out), free(err);
  /* relative: max err 1e-3 <= 1e-5 * 1000; the 1%-off Add is 0.065 > 1e-5 * 6.565 */
  assert_int_equal(kernc(e, &out, &err, "check '%s/data' --relative=1e-5", e->tmp), 1);
  has("check --relative", out, "PASS model/test_whole");
  has("check --relative", out, "FAIL node/test_add_off: output 'c': max abs err 0.065 > bound");
  has("check --relative", out, "worst at [1,2]");
  free(out), free(err);
  assert_int_equal(kernc(e, &out, &err, "check '%s/data' --relative=1e-5 --rtol=1", e->tmp), 2);
  free(out), free(err);
  assert_int_equal(kernc(e, &out, &err, "check '%s/data' --rtol=x", e->tmp), 2);
  has("stderr", err, "--rtol needs a number");
  free(out), free(err);

  /* tolerance files: the nearest one up to the DIR given; flags replace them */
  write_text(e, "data/node/test_add_off/kernc-check.tol", "# made with a 1% error\nrtol=2e-2\n");
  write_text(e, "data/model/kernc-check.tol", "relative=1e-5  # whole models\n");
  assert_int_equal(kernc(e, &out, &err, "check '%s/data'", e->tmp), 0);
  has("check with .tol", out, "3 passed, 0 failed, 0 skipped");
  free(out), free(err);
  assert_int_equal(kernc(e, &out, &err, "check --suite '%s/data/node'", e->tmp), 0);
  has("check --suite with .tol", out, "PASS test_add_off\n");
  free(out), free(err);
  assert_int_equal(kernc(e, &out, &err, "check '%s/data' --rtol=1e-3", e->tmp), 1);
  has("check --rtol over .tol", out, "2 failed");
  free(out), free(err);
  write_text(e, "data/model/kernc-check.tol", "\nrelative=much\n");
  assert_int_equal(kernc(e, &out, &err, "check '%s/data/model'", e->tmp), 1);
  has("check, bad .tol", out, "kernc-check.tol:2: 'relative=much' is not");
  free(out), free(err);
  write_text(e, "data/model/kernc-check.tol", "relative=1e-5\n");

  assert_int_equal(kernc(e, &out, &err, "check --help"), 0);
  has("check --help", out, "--relative=TOL");
  has("check --help", out, "kernc-check.tol");
  free(out), free(err);
}

/* ---- kernc run: .npz and --print-all ----------------------------------------------------------
 */

static const char *RUN_KIR = "graph @g(%1: f32[3,4] \"x\", %2: i64[2] \"y\") {\n"
                             "  %3 = add(%1, %1) : f32[3,4]\n"
                             "  return %3 \"z\", %2 \"w\"\n}\n";

static void t_run_npz(void **state) {
  const env *e = *state;
  char *out, *err;
  write_text(e, "run.kir", RUN_KIR);
  /* x = arange(12): z = 2x; y = [1, 2] */
  const char *archives[] = {"s.npz", "c.npz"};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(
        kernc(e, &out, &err, "run '%s/run.kir' -i '%s/%s'", e->tmp, e->tmp, archives[i]), 0);
    has(archives[i], out, "z: f32[3,4] = 0 2 4 6 8 10 12 14 ...\n");
    has(archives[i], out, "w: i64[2] = 1 2\n");
    free(out), free(err);
  }
  assert_int_equal(
      kernc(e, &out, &err, "run '%s/run.kir' -i '%s/s.npz' --print-all", e->tmp, e->tmp), 0);
  has("--print-all", out, "z: f32[3,4] = 0 2 4 6 8 10 12 14 16 18 20 22\n");
  free(out), free(err);
  /* NAME=FILE.npz takes that array of the archive */
  assert_int_equal(
      kernc(e, &out, &err, "run '%s/run.kir' -i x=%s/c.npz -i y=%s/s.npz", e->tmp, e->tmp, e->tmp),
      0);
  has("x=c.npz", out, "w: i64[2] = 1 2");
  free(out), free(err);
  assert_int_equal(kernc(e, &out, &err, "run '%s/run.kir' -i '%s/t.npz'", e->tmp, e->tmp), 1);
  has("truncated", err, "t.npz: not a readable .npz archive");
  free(out), free(err);
  assert_int_equal(kernc(e, &out, &err, "run '%s/run.kir' -i '%s/bad.npz'", e->tmp, e->tmp), 1);
  has("corrupt", err, "bad.npz (entry 'x.npy'): not a readable .npz archive");
  free(out), free(err);
  assert_int_equal(kernc(e, &out, &err, "run --help"), 0);
  has("run --help", out, "--print-all");
  has("run --help", out, ".npz");
  free(out), free(err);
}

/* ---- the verifier on text IR ------------------------------------------------------------------
 */

static void t_verify_position(void **state) {
  const env *e = *state;
  char *out, *err;
  write_text(e, "bad.kir",
             "# kir 1\n"
             "graph @g(%1: f32[3,4] \"x\") {\n"
             "  %2 = relu(%1) : f32[3,4]\n"
             "  %3 = add(%2, %1) : f32[3,5]\n"
             "  return %3\n}\n");
  assert_int_equal(kernc(e, &out, &err, "opt '%s/bad.kir'", e->tmp), 1);
  has("verify", err, "bad.kir:4:3: error: node %3 (add): result %3: printed f32[3,5]");
  has("verify", err, "\n  %3 = add(%2, %1) : f32[3,5]\n  ^");
  free(out), free(err);
  /* in a body graph: the body's own line */
  write_text(e, "badbody.kir",
             "graph @g(%1: f32[4] \"x\") {\n"
             "  %2 = fused(%1) : f32[4] graph @fused0(%1: f32[4]) {\n"
             "    %2 = relu(%1) : f32[5]\n"
             "    return %2\n"
             "  }\n"
             "  return %2\n}\n");
  assert_int_equal(kernc(e, &out, &err, "opt '%s/badbody.kir'", e->tmp), 1);
  has("verify body", err, "badbody.kir:3:5: error: node %2 (relu)");
  free(out), free(err);
}

/* ---- --explain-fusion -------------------------------------------------------------------------
 */

static void t_explain(void **state) {
  const env *e = *state;
  char *out, *err, *kir, *ir;
  assert_int_equal(kernc(e, &out, &err, "dump '%s/lin.onnx' --explain-fusion", e->tmp), 0);
  has("dump stderr", err, "(mul, loc(\"mul0\")): ");
  lacks("dump stdout", out, "loc(\"mul0\")): ");
  free(out), free(err);
  assert_int_equal(
      kernc(e, &kir, &err, "dump '%s/lin.onnx' --passes= -o '%s/lin.kir'", e->tmp, e->tmp), 0);
  free(kir), free(err);
  assert_int_equal(kernc(e, &out, &err, "opt '%s/lin.kir' --explain-fusion", e->tmp), 0);
  has("opt stderr", err, "loc(\"mul0\")");
  lacks("opt stdout", out, "loc(\"mul0\")): ");
  /* the id named is the one the printed IR gives the mul */
  const char *at = strstr(err, " (mul, loc(\"mul0\"))");
  assert_non_null(at);
  while (at > err && at[-1] != '%')
    at--;
  unsigned id = (unsigned)strtoul(at, NULL, 10);
  char want[64];
  snprintf(want, sizeof want, "%%%u = mul(", id);
  assert_int_equal(kernc(e, &ir, NULL, "opt '%s/lin.kir' --passes=", e->tmp), 0);
  has("printed IR", ir, want);
  free(ir), free(out), free(err);
}

/* ---- dump --format=svg, --dump-dir ------------------------------------------------------------
 */

static void t_dump_formats(void **state) {
  const env *e = *state;
  char *out, *err, path[256];
  assert_int_equal(kernc(e, &out, &err,
                         "dump '%s/lin.onnx' --format=dot --dump-dir '%s/dd' "
                         "--passes=canonicalize,fuse-elementwise",
                         e->tmp, e->tmp),
                   0);
  has("dot", out, "digraph");
  free(out), free(err);
  const char *dots[] = {"00_input.dot", "01_canonicalize.dot", "02_fuse-elementwise.dot"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/dd/%s", e->tmp, dots[i]);
    char *t = th_read_file(path, NULL);
    if (!t) fail_msg("--dump-dir --format=dot wrote no %s", path);
    has(path, t, "digraph");
    free(t);
  }
  if (th_sh("command -v dot >/dev/null") != 0) skip(); /* scripts/setup.sh installs graphviz */
  assert_int_equal(kernc(e, &out, &err,
                         "dump '%s/lin.onnx' --format=svg --dump-dir '%s/ds' "
                         "--passes=canonicalize",
                         e->tmp, e->tmp),
                   0);
  if (strncmp(out, "<?xml", 5) != 0 && strncmp(out, "<svg", 4) != 0)
    fail_msg("--format=svg wrote:\n%.300s", out);
  has("svg", out, "</svg>");
  free(out), free(err);
  snprintf(path, sizeof path, "%s/ds/01_canonicalize.svg", e->tmp);
  char *t = th_read_file(path, NULL);
  if (!t) fail_msg("--dump-dir --format=svg wrote no %s", path);
  has(path, t, "</svg>");
  free(t);
}

/* ---- dump --weights ---------------------------------------------------------------------------
 */

static void t_dump_weights(void **state) {
  const env *e = *state;
  char *out, *err, path[256];
  /* the .kir in a folder below the weights: the name it records is relative to the .kir */
  assert_int_equal(th_sh("mkdir -p '%s/k'", e->tmp), 0);
  assert_int_equal(kernc(e, &out, &err,
                         "dump '%s/lin.onnx' --weights '%s/w.safetensors' -o "
                         "'%s/k/m.kir'",
                         e->tmp, e->tmp, e->tmp),
                   0);
  free(out), free(err);
  snprintf(path, sizeof path, "%s/k/m.kir", e->tmp);
  char *kir = th_read_file(path, NULL);
  assert_non_null(kir);
  has("m.kir", kir, "# kir 1 weights=\"../w.safetensors\"\n");
  has("m.kir", kir, "dense<2.0>");
  /* print(parse(print(g))) == print(g) with the weights line */
  assert_int_equal(kernc(e, &out, &err, "opt '%s' --passes=", path), 0);
  assert_string_equal(out, kir);
  free(out), free(err), free(kir);
  /* edit the constant by hand: y = x*W + 3, expected from numpy (lin_want3.txt) */
  assert_int_equal(th_sh("sed -i 's/dense<2.0>/dense<3.0>/' '%s'", path), 0);
  snprintf(path, sizeof path, "%s/lin_want3.txt", e->tmp);
  char *want = th_read_file(path, NULL);
  assert_non_null(want);
  assert_int_equal(
      kernc(e, &out, &err, "run '%s/k/m.kir' -i x='%s/lin_x.npy' --print-all", e->tmp, e->tmp), 0);
  assert_string_equal(out, want);
  free(out), free(err);
  /* opt -o elsewhere names the same file from there */
  assert_int_equal(
      kernc(e, &out, &err, "opt '%s/k/m.kir' --passes= -o '%s/m2.kir'", e->tmp, e->tmp), 0);
  free(out), free(err);
  snprintf(path, sizeof path, "%s/m2.kir", e->tmp);
  kir = th_read_file(path, NULL);
  assert_non_null(kir);
  has("m2.kir", kir, "# kir 1 weights=\"w.safetensors\"\n");
  free(kir);
  assert_int_equal(kernc(e, &out, &err, "run '%s' -i x='%s/lin_x.npy' --print-all", path, e->tmp),
                   0);
  assert_string_equal(out, want);
  free(out), free(err);
  /* from another folder: the path is the .kir's, not the current folder's */
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "cd / && '%s' run '%s/k/m.kir' -i x='%s/lin_x.npy' --print-all",
           e->kernc, e->tmp, e->tmp);
  assert_int_equal(th_exec(cmd, &out, &err), 0);
  assert_string_equal(out, want);
  free(out), free(err), free(want);
  assert_int_equal(th_sh("rm '%s/w.safetensors'", e->tmp), 0);
  assert_int_equal(kernc(e, &out, &err, "run '%s/k/m.kir' -i x='%s/lin_x.npy'", e->tmp, e->tmp), 1);
  has("missing weights", err, "w.safetensors");
  free(out), free(err);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC_BINARY TESTS_DIR\n", argv[0]);
    return 2;
  }
  env e = {argv[1], argv[2], ""};
  if (!th_mkdtemp(e.tmp, sizeof e.tmp, "cli_opts")) {
    perror("mkdtemp");
    return 1;
  }
  if (th_sh("python3 '%s/cli_opts_data.py' '%s'", e.tests, e.tmp) != 0) {
    fprintf(stderr, "tests/cli_opts_data.py failed (python3 with numpy and onnx needed)\n");
    th_rmtree(e.tmp);
    return 1;
  }
  const struct CMUnitTest t[] = {
      cmocka_unit_test_prestate(t_check_tolerances, &e),
      cmocka_unit_test_prestate(t_run_npz, &e),
      cmocka_unit_test_prestate(t_verify_position, &e),
      cmocka_unit_test_prestate(t_explain, &e),
      cmocka_unit_test_prestate(t_dump_formats, &e),
      cmocka_unit_test_prestate(t_dump_weights, &e),
  };
  int rc = cmocka_run_group_tests(t, NULL, NULL);
  if (!th_rmtree(e.tmp)) fprintf(stderr, "could not remove %s\n", e.tmp);
  return rc;
}
