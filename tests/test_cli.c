/*
 * tests/test_cli.c - the kernc program end to end (argv[1]: the kernc binary, argv[2]: tests/),
 * and the pass manager's API with passes made up here.
 *
 *   - every .kir file of tests/kir/golden comes back byte-identical from `kernc opt F --passes=`;
 *   - every .kir file of tests/kir/invalid makes `kernc opt F` fail, printing its `# expect:` text
 * and naming the line (file.kir:L:C) or the node;
 *   - `kernc dump --format=dot` of the golden files is accepted by `dot -Tsvg`;
 *   - usage conventions: --help and --version exit 0, bad usage exits 2 with a hint;
 *   - instrumentation flags (--print-after-all, --dump-dir...) run on the idle pipeline;
 *   - kc_pipeline_run's instrumentation with passes defined in this file.
 * Commands go through /bin/sh (popen/system); paths are single-quoted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "passes/passes.h"
#include "tests/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct env {
  const char *kernc, *tests;
  char tmp[64]; /* a scratch folder, removed at the end */
} env;

/* ---- usage conventions ---------------------------------------------------------------------- */

static void expect_run(const env *e, const char *args, int want_rc, const char *want_out,
                       const char *want_err) {
  char cmd[16384];
  snprintf(cmd, sizeof cmd, "'%s' %s", e->kernc, args);
  char *out, *err;
  int rc = th_exec(cmd, &out, &err);
  if (rc != want_rc || (want_out && !strstr(out, want_out)) || (want_err && !strstr(err, want_err)))
    fail_msg("kernc %s: exit %d (want %d)\nstdout: %s\nstderr: %s\nwanted stdout \"%s\", "
             "stderr \"%s\"",
             args, rc, want_rc, out, err, want_out ? want_out : "", want_err ? want_err : "");
  free(out);
  free(err);
}

static void t_usage(void **state) {
  const env *e = *state;
  expect_run(e, "--help", 0, "usage: kernc", NULL);
  expect_run(e, "--help", 0, "opt", NULL);
  expect_run(e, "--version", 0, "kernc ", NULL);
  expect_run(e, "opt --help", 0, "usage: kernc opt", NULL);
  expect_run(e, "opt --help", 0, "--print-after-all", NULL);
  expect_run(e, "dump --help", 0, "--format=text|dot|svg", NULL);
  expect_run(e, "help dump", 0, "usage: kernc dump", NULL);
  expect_run(e, "opt --list-passes", 0, "default", NULL);
  expect_run(e, "", 2, NULL, "missing command");
  expect_run(e, "frobnicate", 2, NULL, "unknown command 'frobnicate'");
  expect_run(e, "--bogus", 2, NULL, "Try 'kernc --help'");
  expect_run(e, "opt --bogus", 2, NULL, "unknown option '--bogus'");
  expect_run(e, "opt --bogus", 2, NULL, "Try 'kernc opt --help'");
  expect_run(e, "opt", 2, NULL, "missing FILE.kir");
  expect_run(e, "opt a.kir b.kir", 2, NULL, "unexpected argument 'b.kir'");
  expect_run(e, "opt --print-after-all=yes x.kir", 2, NULL, "takes no value");
  expect_run(e, "opt x.kir --dump-dir", 2, NULL, "needs a value");
  expect_run(e, "dump --format=png x.kir", 2, NULL, "unknown format 'png'");
  expect_run(e, "dump", 2, NULL, "missing FILE");
  expect_run(e, "opt /nonexistent/x.kir", 1, NULL, "kernc: ");
}

/* `kernc compile --name=NAME`: a name the generated header cannot carry is a usage error before
 * the model is read (the file need not exist); `int` once wrote `typedef struct int int_t;`. */
static void t_compile_name(void **state) {
  const env *e = *state;
  expect_run(e, "compile none.onnx -o libx.so --name=int", 2, NULL,
             "--name: model name 'int' is a C or C++ keyword");
  expect_run(e, "compile none.onnx -o libx.so --name=class", 2, NULL, "C or C++ keyword");
  expect_run(e, "compile none.onnx -o libx.so --name=int64", 2, NULL,
             "would make the header define NAME_t");
  expect_run(e, "compile none.onnx -o libx.so --name=pthread", 2, NULL, "NAME_create");
  expect_run(e, "compile none.onnx -o libx.so --name=NULL", 2, NULL, "standard headers define");
  expect_run(e, "compile none.onnx -o libx.so --name=INT8_MAX", 2, NULL, "NAME_t or NAME_create");
  expect_run(e, "compile none.onnx -o libx.so --name=_model", 2, NULL, "starts with _");
  expect_run(e, "compile none.onnx -o libx.so --name=KC_model", 2, NULL, "kernc's own prefixes");
  expect_run(e, "compile none.onnx -o libx.so --name=a-b", 2, NULL, "is not a C identifier");
  expect_run(e, "compile none.onnx -o libx.so --name=9lives", 2, NULL, "is not a C identifier");
  /* a fine name gets as far as reading the (missing) model */
  expect_run(e, "compile none.onnx -o libx.so --name=my_model", 1, NULL, "none.onnx");
}

/* ---- golden and invalid files -------------------------------------------------------------- */

static void t_golden_roundtrip(void **state) {
  const env *e = *state;
  int n;
  char **files = th_kir_files(e->tests, "golden", "", &n);
  if (n == 0) fail_msg("no tests/kir/golden/*.kir files");
  for (int i = 0; i < n; i++) {
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "'%s' opt '%s' --passes=", e->kernc, files[i]);
    int rc = th_exec(cmd, &out, &err);
    char *want = th_read_file(files[i], NULL);
    if (rc != 0 || !want || strcmp(out, want) != 0)
      fail_msg("%s: kernc opt exit %d, output differs from the file\nstderr: %s\nstdout:\n%s",
               files[i], rc, err, out);
    free(want);
    free(out);
    free(err);
  }
  th_free_list(files, n);
}

static void t_invalid_files(void **state) {
  const env *e = *state;
  int n;
  char **files = th_kir_files(e->tests, "invalid", "", &n);
  if (n == 0) fail_msg("no tests/kir/invalid/*.kir files");
  for (int i = 0; i < n; i++) {
    char cmd[8192], want[512], *err;
    if (!th_read_expect(files[i], want, sizeof want))
      fail_msg("%s: first line is not '# expect: ...'", files[i]);
    snprintf(cmd, sizeof cmd, "'%s' opt '%s'", e->kernc, files[i]);
    int rc = th_exec(cmd, NULL, &err);
    /* a parse error shows file.kir:LINE:COL, a verifier error the node */
    bool named = strstr(err, ".kir:") || strstr(err, "node ");
    if (rc != 1 || !strstr(err, want) || !named || strncmp(err, "kernc: ", 7) != 0)
      fail_msg("%s: exit %d, stderr \"%s\"; wanted exit 1 and \"%s\" naming a line or node",
               files[i], rc, err, want);
    free(err);
  }
  th_free_list(files, n);
}

static void t_dot(void **state) {
  const env *e = *state;
  if (system("command -v dot >/dev/null 2>&1") != 0) skip();
  int n;
  char **files = th_kir_files(e->tests, "golden", "", &n);
  if (n == 0) fail_msg("no tests/kir/golden/*.kir files");
  for (int i = 0; i < n; i++) {
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "'%s' dump --format=dot --passes= '%s' -o '%s/g.dot'", e->kernc,
             files[i], e->tmp);
    int rc = th_exec(cmd, NULL, &err);
    if (rc != 0) fail_msg("%s: kernc dump --format=dot exit %d: %s", files[i], rc, err);
    free(err);
    snprintf(cmd, sizeof cmd, "dot -Tsvg '%s/g.dot'", e->tmp);
    rc = th_exec(cmd, &out, &err);
    if (rc != 0 || !strstr(out, "<svg")) fail_msg("%s: dot -Tsvg exit %d: %s", files[i], rc, err);
    free(out);
    free(err);
  }
  th_free_list(files, n);
}

/* ---- instrumentation through the program ------------------------------------------------------
 */

static void t_instrumentation_flags(void **state) {
  const env *e = *state;
  int n;
  char **files = th_kir_files(e->tests, "golden", "", &n);
  if (n == 0) fail_msg("no tests/kir/golden/*.kir files");
  const char *f = files[0];
  char args[8192];
  snprintf(args, sizeof args,
           "opt '%s' --print-after-all --print-before-all --print-changed "
           "--verify-each",
           f);
  expect_run(e, args, 0, "graph @", NULL);
  snprintf(args, sizeof args, "opt '%s' --passes=default --dump-dir='%s/dd'", f, e->tmp);
  expect_run(e, args, 0, "graph @", NULL);
  /* the input dump reads back as the same graph */
  snprintf(args, sizeof args, "opt '%s/dd/00_input.kir' --passes=", e->tmp);
  char cmd[8192], *out, *err;
  char full[16384];
  snprintf(full, sizeof full, "'%s' %s", e->kernc, args);
  int rc = th_exec(full, &out, &err);
  char *want = th_read_file(f, NULL);
  if (rc != 0 || strcmp(out, want) != 0) fail_msg("dump-dir input: exit %d, %s", rc, err);
  free(want);
  free(out);
  free(err);
  snprintf(args, sizeof args, "opt '%s' --passes=nosuchpass", f);
  expect_run(e, args, 1, NULL, "unknown pass 'nosuchpass'");
  snprintf(args, sizeof args, "opt '%s' --print-after=nosuchpass", f);
  expect_run(e, args, 1, NULL, "print-after: unknown pass 'nosuchpass'");
  snprintf(args, sizeof args, "opt '%s' --passes= -o '%s/out.kir'", f, e->tmp);
  expect_run(e, args, 0, NULL, NULL);
  snprintf(cmd, sizeof cmd, "%s/out.kir", e->tmp);
  char *got = th_read_file(cmd, NULL), *orig = th_read_file(f, NULL);
  assert_non_null(got);
  assert_string_equal(got, orig);
  free(got);
  free(orig);
  snprintf(args, sizeof args, "opt - --passes= < '%s'", f);
  expect_run(e, args, 0, "graph @", NULL);
  snprintf(args, sizeof args, "dump '%s' --print-after-all", f);
  expect_run(e, args, 0, "graph @", NULL);
  th_free_list(files, n);
}

/* ---- the pass manager API ------------------------------------------------------------------ */

static kc_status p_nothing(kc_graph *g, kc_pass_ctx *pc) { return KC_OK; }
static kc_status p_rename(kc_graph *g, kc_pass_ctx *pc) {
  g->name = kc_arena_strdup(&g->arena, "renamed");
  pc->changed = true;
  return KC_OK;
}
static kc_status p_break(kc_graph *g, kc_pass_ctx *pc) {
  g->outputs[0].v = kc_graph_new_value(g); /* never defined: the verifier must notice */
  return KC_OK;
}
static kc_status p_fail(kc_graph *g, kc_pass_ctx *pc) {
  return kc_errorf(g->ctx, KC_ERR_UNSUPPORTED, "cannot do %s", pc->name);
}

static const kc_pass pass_nothing = {"nothing", p_nothing, "changes nothing"};
static const kc_pass pass_rename = {"rename", p_rename, "renames the graph"};
static const kc_pass pass_break = {"break", p_break, "breaks the graph"};
static const kc_pass pass_fail = {"fail", p_fail, "fails"};

static const char *small_kir = "graph @g(%1: f32[2,3]) {\n"
                               "  %2 = relu(%1) : f32[2,3]\n"
                               "  return %2\n"
                               "}\n";

static kc_graph *small_graph(kc_context *ctx) {
  kc_graph *g = NULL;
  kc_status s = kc_graph_parse(ctx, small_kir, "small.kir", &g);
  if (s != KC_OK) fail_msg("parse: %s", kc_last_error(ctx));
  return g;
}

/* Run p on a fresh small graph; printed IR in *text (malloc'd). */
static kc_status run_pipeline(kc_context *ctx, const kc_pipeline *p, kc_pass_options *o,
                              char **text) {
  kc_graph *g = small_graph(ctx);
  size_t len;
  o->out = open_memstream(text, &len);
  kc_status s = kc_pipeline_run(p, g, o);
  fclose(o->out);
  kc_graph_free(g);
  return s;
}

static void t_pipeline_parse(void **state) {
  kc_context *ctx = kc_context_new();
  kc_pipeline p;
  assert_int_equal(kc_pipeline_parse(ctx, "", &p), KC_OK);
  assert_int_equal(p.n, 0);
  assert_int_equal(kc_pipeline_parse(ctx, " default , ", &p), KC_OK);
  assert_int_equal(kc_pipeline_named(ctx, "default", &p), KC_OK);
  assert_int_equal(kc_pipeline_parse(ctx, "default,bogus", &p), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "unknown pass 'bogus'"));
  assert_non_null(strstr(kc_last_error(ctx), "pipelines: default"));
  assert_int_equal(kc_pipeline_named(ctx, "nope", &p), KC_ERR_INVALID_ARG);
  assert_null(kc_pass_lookup("bogus"));
  assert_null(kc_pass_at(kc_pass_count()));
  for (int i = 0; i < kc_pass_count(); i++) {
    const kc_pass *ps = kc_pass_at(i);
    assert_ptr_equal(kc_pass_lookup(ps->name), ps);
    assert_int_equal(kc_pipeline_parse(ctx, ps->name, &p), KC_OK);
    assert_int_equal(p.n, 1);
  }
  kc_context_free(ctx);
}

static void t_pipeline_instrumentation(void **state) {
  kc_context *ctx = kc_context_new();
  kc_pipeline p = {{&pass_nothing, &pass_rename, &pass_nothing}, 3};
  char *text;

  kc_pass_options o = {.print_after_all = true};
  assert_int_equal(run_pipeline(ctx, &p, &o, &text), KC_OK);
  assert_non_null(strstr(text, "# kir 1  after=nothing (1/3)\ngraph @g("));
  assert_non_null(strstr(text, "# kir 1  after=rename (2/3)\ngraph @renamed("));
  assert_non_null(strstr(text, "# kir 1  after=nothing (3/3)"));
  free(text);

  o = (kc_pass_options){.print_changed = true, .print_before = "rename"};
  assert_int_equal(run_pipeline(ctx, &p, &o, &text), KC_OK);
  assert_non_null(strstr(text, "before=rename (2/3)\ngraph @g("));
  assert_non_null(strstr(text, "after=rename (2/3)"));
  assert_null(strstr(text, "after=nothing"));
  free(text);

  o = (kc_pass_options){.print_after = "rename,nothing"};
  assert_int_equal(run_pipeline(ctx, &p, &o, &text), KC_OK);
  assert_non_null(strstr(text, "after=nothing (3/3)"));
  free(text);

  o = (kc_pass_options){.print_after = "missing"};
  assert_int_equal(run_pipeline(ctx, &p, &o, &text), KC_ERR_INVALID_ARG);
  free(text);
  kc_context_free(ctx);
}

static void t_pipeline_failures(void **state) {
  kc_context *ctx = kc_context_new();
  char *text;
  kc_pipeline p = {{&pass_nothing, &pass_fail, &pass_rename}, 3};
  kc_pass_options o = {0};
  assert_int_equal(run_pipeline(ctx, &p, &o, &text), KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(kc_last_error(ctx), "pass 'fail' (2/3) failed: cannot do fail"));
  assert_non_null(strstr(text, "after-failed=fail (2/3)\ngraph @g(")); /* IR on failure */
  free(text);

  o = (kc_pass_options){.no_print_on_fail = true};
  assert_int_equal(run_pipeline(ctx, &p, &o, &text), KC_ERR_UNSUPPORTED);
  assert_string_equal(text, "");
  free(text);

  kc_pipeline q = {{&pass_break, &pass_nothing}, 2};
  o = (kc_pass_options){.verify_each = true};
  assert_int_equal(run_pipeline(ctx, &q, &o, &text), KC_ERR_VERIFY);
  assert_non_null(strstr(kc_last_error(ctx), "verifier failed after pass 'break' (1/2)"));
  assert_non_null(strstr(kc_last_error(ctx), "is never defined"));
  free(text);
  kc_context_free(ctx);
}

static void t_pipeline_dump_dir(void **state) {
  const env *e = *state;
  kc_context *ctx = kc_context_new();
  char dir[256], path[512], *text;
  snprintf(dir, sizeof dir, "%s/passdump", e->tmp);
  kc_pipeline p = {{&pass_nothing, &pass_rename}, 2};
  kc_pass_options o = {.dump_dir = dir};
  assert_int_equal(run_pipeline(ctx, &p, &o, &text), KC_OK);
  free(text);
  const char *names[] = {"00_input.kir", "01_nothing.kir", "02_rename.kir"};
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    char *dumped = th_read_file(path, NULL);
    if (!dumped) fail_msg("%s was not written", path);
    kc_graph *g = NULL;
    if (kc_graph_parse(ctx, dumped, path, &g) != KC_OK)
      fail_msg("%s does not parse: %s", path, kc_last_error(ctx));
    assert_string_equal(g->name, i == 2 ? "renamed" : "g");
    kc_graph_free(g);
    free(dumped);
  }
  /* a dump-dir that is a file is an I/O error, not a crash */
  snprintf(path, sizeof path, "%s/00_input.kir", dir);
  o.dump_dir = path;
  assert_int_equal(run_pipeline(ctx, &p, &o, &text), KC_ERR_IO);
  free(text);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC_BINARY TESTS_DIR\n", argv[0]);
    return 2;
  }
  env e = {argv[1], argv[2], ""};
  if (!th_mkdtemp(e.tmp, sizeof e.tmp, "cli")) {
    perror("mkdtemp");
    return 1;
  }
  const struct CMUnitTest t[] = {
      cmocka_unit_test_prestate(t_usage, &e),
      cmocka_unit_test_prestate(t_compile_name, &e),
      cmocka_unit_test_prestate(t_golden_roundtrip, &e),
      cmocka_unit_test_prestate(t_invalid_files, &e),
      cmocka_unit_test_prestate(t_dot, &e),
      cmocka_unit_test_prestate(t_instrumentation_flags, &e),
      cmocka_unit_test_prestate(t_pipeline_parse, &e),
      cmocka_unit_test_prestate(t_pipeline_instrumentation, &e),
      cmocka_unit_test_prestate(t_pipeline_failures, &e),
      cmocka_unit_test_prestate(t_pipeline_dump_dir, &e),
  };
  int rc = cmocka_run_group_tests(t, NULL, NULL);
  if (!th_rmtree(e.tmp)) fprintf(stderr, "could not remove %s\n", e.tmp);
  return rc;
}
