/*
 * tests/test_onnx.c - the ONNX frontend: kc_onnx_load on broken models (each must fail with a
 * status and a message naming the file and, where there is one, the node and op), on models
 * that use external data, typed tensor fields, Constant nodes and older opsets, and
 * `kernc check` on a three-test suite. Run as: test_onnx KERNC_PROGRAM TESTS_DIR.
 *
 * The models come from tests/onnx/make_models.py (committed); truncated, random, empty and
 * symlinked cases are made here in a temporary folder, removed at the end.
 */
/* realpath is XSI */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/harness.h"
#include "tools/check/check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct env {
  const char *kernc; /* the kernc program */
  char models[1024]; /* tests/onnx */
  char tmp[256];     /* scratch folder */
  kc_context *ctx;
} env;

static char *path_in(const char *dir, const char *name, char *buf, size_t size) {
  snprintf(buf, size, "%s/%s", dir, name);
  return buf;
}

/* Load models/name, expecting status want; returns the message (in ctx). */
static const char *load_fails(env *e, const char *dir, const char *name, kc_status want) {
  char path[4096];
  kc_graph *g = (kc_graph *)1;
  kc_status s = kc_onnx_load(e->ctx, path_in(dir, name, path, sizeof path), &g);
  if (s != want) fprintf(stderr, "%s: got %s: %s\n", name, kc_status_str(s), kc_last_error(e->ctx));
  assert_int_equal(s, want);
  assert_null(g);
  const char *msg = kc_last_error(e->ctx);
  assert_non_null(strstr(msg, name)); /* every message names the file */
  return msg;
}

static void has(const char *msg, const char *part) {
  if (!strstr(msg, part)) fprintf(stderr, "'%s' not in: %s\n", part, msg);
  assert_non_null(strstr(msg, part));
}

static kc_graph *load_ok(env *e, const char *dir, const char *name) {
  char path[4096];
  kc_graph *g = NULL;
  kc_status s = kc_onnx_load(e->ctx, path_in(dir, name, path, sizeof path), &g);
  if (s != KC_OK) fprintf(stderr, "%s: %s\n", name, kc_last_error(e->ctx));
  assert_int_equal(s, KC_OK);
  assert_non_null(g);
  assert_int_equal(kc_graph_verify(g), KC_OK);
  return g;
}

/* ---- broken files ---- */

static void t_empty(void **st) {
  env *e = *st;
  char p[4096];
  th_write_file(path_in(e->tmp, "empty.onnx", p, sizeof p), "", 0);
  has(load_fails(e, e->tmp, "empty.onnx", KC_ERR_PARSE), "empty");
}

static void t_truncated(void **st) {
  env *e = *st;
  char p[4096];
  size_t n;
  char *b = th_read_file(path_in(e->models, "old_opsets.onnx", p, sizeof p), &n);
  assert_non_null(b);
  /* every cut point must fail cleanly, never crash */
  for (size_t cut = 1; cut < n; cut += 7) {
    th_write_file(path_in(e->tmp, "truncated.onnx", p, sizeof p), b, cut);
    kc_graph *g = NULL;
    kc_status s = kc_onnx_load(e->ctx, p, &g);
    if (s == KC_OK) kc_graph_free(g); /* a cut at a field boundary can still be a model */
  }
  th_write_file(p, b, n / 2);
  has(load_fails(e, e->tmp, "truncated.onnx", KC_ERR_PARSE), "truncated or corrupt");
  free(b);
}

static void t_random(void **st) {
  env *e = *st;
  char p[4096];
  unsigned char buf[4096];
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (int round = 0; round < 50; round++) {
    for (size_t i = 0; i < sizeof buf; i++) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      buf[i] = (unsigned char)(x >> 56);
    }
    th_write_file(path_in(e->tmp, "random.onnx", p, sizeof p), buf, sizeof buf);
    kc_graph *g = (kc_graph *)1;
    kc_status s = kc_onnx_load(e->ctx, p, &g);
    assert_int_not_equal(s, KC_OK);
    assert_null(g);
    has(kc_last_error(e->ctx), "random.onnx");
  }
}

static void t_missing_file(void **st) {
  env *e = *st;
  has(load_fails(e, e->tmp, "no_such_model.onnx", KC_ERR_IO), "cannot open");
}

/* ---- broken graphs ---- */

static void t_cycle(void **st) {
  env *e = *st;
  const char *m = load_fails(e, e->models, "cycle.onnx", KC_ERR_VERIFY);
  has(m, "cycle");
  has(m, "Add");
}

static void t_undefined_input(void **st) {
  env *e = *st;
  const char *m = load_fails(e, e->models, "undefined_input.onnx", KC_ERR_VERIFY);
  has(m, "'ghost'");
  has(m, "'add_ghost'");
  has(m, "Add");
}

static void t_size_mismatch(void **st) {
  env *e = *st;
  const char *m = load_fails(e, e->models, "size_mismatch.onnx", KC_ERR_PARSE);
  has(m, "initializer 'w'");
  has(m, "20 bytes");
  m = load_fails(e, e->models, "typed_size_mismatch.onnx", KC_ERR_PARSE);
  has(m, "5 f32 elements");
}

static void t_bad_dtype(void **st) {
  env *e = *st;
  has(load_fails(e, e->models, "bad_dtype.onnx", KC_ERR_UNSUPPORTED), "float8e4m3fn");
  const char *m = load_fails(e, e->models, "string_input.onnx", KC_ERR_UNSUPPORTED);
  has(m, "string");
  has(m, "'x'");
}

static void t_too_few_inputs(void **st) {
  env *e = *st;
  const char *m = load_fails(e, e->models, "too_few_inputs.onnx", KC_ERR_VERIFY);
  has(m, "'lonely_add'");
  has(m, "Add");
  has(m, "has 1 input");
}

static void t_unsupported_ops(void **st) {
  env *e = *st;
  const char *m = load_fails(e, e->models, "unsupported_ops.onnx", KC_ERR_UNSUPPORTED);
  /* every op, once, with its opset, domain when not default, and its first node */
  has(m, "unsupported ops Unique(opset 17), Det(opset 17), com.microsoft.FusedMatMul(opset 1)");
  has(m, "'uniq1'");
  has(m, "'det'");
  has(m, "'fmm'");
  assert_null(strstr(m, "uniq2"));
}

static void t_sequence(void **st) {
  env *e = *st;
  has(load_fails(e, e->models, "sequence_io.onnx", KC_ERR_UNSUPPORTED), "sequence");
}

/* Duplicate attributes, an attribute whose declared type does not match the field it carries,
 * and a domain imported twice: each refused, naming the node, attribute or domain (they were
 * accepted silently, the first or an unset field read). */
static void t_bad_attributes(void **st) {
  env *e = *st;
  has(load_fails(e, e->models, "dup_attr.onnx", KC_ERR_PARSE),
      "node 'sm' (Softmax): attribute 'axis' is given twice");
  has(load_fails(e, e->models, "attr_type_mismatch.onnx", KC_ERR_PARSE),
      "node 'sm' (Softmax): attribute 'axis' is declared INT but carries a STRING");
  has(load_fails(e, e->models, "dup_opset.onnx", KC_ERR_PARSE),
      "opset_import lists domain 'ai.onnx' twice (versions 17 and 13)");
  /* a later success leaves no old message behind (kc_last_error is the last call's) */
  char path[4096];
  kc_graph *g = NULL;
  assert_int_equal(
      kc_onnx_load(e->ctx, path_in(e->models, "constants.onnx", path, sizeof path), &g), KC_OK);
  assert_string_equal(kc_last_error(e->ctx), "");
  kc_graph_free(g);
  assert_int_equal(
      kc_graph_parse(e->ctx, "# kir 1\ngraph @g(%1: f32[2]) {\n  return %1\n}\n", "x.kir", &g),
      KC_OK);
  kc_graph_free(g);
  kc_graph *bad = NULL;
  assert_int_not_equal(kc_graph_parse(e->ctx, "nonsense", "y.kir", &bad), KC_OK);
  assert_int_not_equal(kc_last_error(e->ctx)[0], 0);
  assert_int_equal(
      kc_graph_parse(e->ctx, "# kir 1\ngraph @g(%1: f32[2]) {\n  return %1\n}\n", "x.kir", &g),
      KC_OK);
  assert_string_equal(kc_last_error(e->ctx), "");
  kc_graph_free(g);
}

/* ---- external data ---- */

static void t_external_ok(void **st) {
  env *e = *st;
  kc_graph *g = load_ok(e, e->models, "external.onnx");
  const kc_tensor *w = NULL;
  for (uint32_t i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, "w") == 0) w = &g->tensors[i];
  assert_non_null(w);
  assert_int_equal(w->dtype, KC_F32);
  assert_int_equal(w->rank, 2);
  assert_int_equal(w->dims[0], 3);
  assert_int_equal(w->dims[1], 4);
  assert_int_equal(w->nbytes, 48);
  const float *d = w->data;
  for (int i = 0; i < 12; i++)
    assert_true(d[i] == (float)i * 0.5f); /* the 16 padding bytes were skipped */
  kc_graph_free(g);
}

static void t_external_escapes(void **st) {
  env *e = *st;
  has(load_fails(e, e->models, "escape_dotdot.onnx", KC_ERR_INVALID_ARG), "leaves");
  has(load_fails(e, e->models, "escape_dotdot2.onnx", KC_ERR_INVALID_ARG), "leaves");
  has(load_fails(e, e->models, "escape_absolute.onnx", KC_ERR_INVALID_ARG), "absolute");
  has(load_fails(e, e->models, "missing_external.onnx", KC_ERR_IO), "missing.bin");
}

static void t_external_symlink(void **st) {
  env *e = *st;
  char src[4096], dst[4096], target[4096], link[4096];
  size_t n;
  char *b = th_read_file(path_in(e->models, "symlink_external.onnx", src, sizeof src), &n);
  assert_non_null(b);
  th_write_file(path_in(e->tmp, "symlink_external.onnx", dst, sizeof dst), b, n);
  free(b);
  /* a link to a file outside the model's folder is refused */
  char *real = realpath(path_in(e->models, "weights.bin", target, sizeof target), NULL);
  assert_non_null(real);
  path_in(e->tmp, "link.bin", link, sizeof link);
  unlink(link);
  assert_int_equal(symlink(real, link), 0);
  free(real);
  has(load_fails(e, e->tmp, "symlink_external.onnx", KC_ERR_INVALID_ARG), "outside");
  /* a link to a file inside it is fine */
  b = th_read_file(target, &n);
  assert_non_null(b);
  th_write_file(path_in(e->tmp, "inside.bin", src, sizeof src), b, n);
  free(b);
  unlink(link);
  assert_int_equal(symlink("inside.bin", link), 0);
  kc_graph_free(load_ok(e, e->tmp, "symlink_external.onnx"));
}

/* External data (or the model itself) that is a FIFO, a folder or a device is refused at once:
 * opening a FIFO for reading would wait for a writer forever (alarm turns a hang into a
 * failure). */
static void t_external_not_regular(void **st) {
  env *e = *st;
  char src[4096], dst[4096], link[4096];
  size_t n;
  char *b = th_read_file(path_in(e->models, "symlink_external.onnx", src, sizeof src), &n);
  assert_non_null(b);
  th_write_file(path_in(e->tmp, "symlink_external.onnx", dst, sizeof dst), b, n);
  free(b);
  path_in(e->tmp, "link.bin", link, sizeof link);
  unlink(link);
  assert_int_equal(mkfifo(link, 0600), 0);
  alarm(10);
  has(load_fails(e, e->tmp, "symlink_external.onnx", KC_ERR_IO), "not a regular file");
  unlink(link);
  assert_int_equal(mkdir(link, 0700), 0);
  has(load_fails(e, e->tmp, "symlink_external.onnx", KC_ERR_IO), "not a regular file");
  rmdir(link);
  assert_int_equal(symlink("/dev/zero", link), 0); /* a device outside: refused as outside */
  load_fails(e, e->tmp, "symlink_external.onnx", KC_ERR_INVALID_ARG);
  unlink(link);
  /* the model path itself a FIFO */
  path_in(e->tmp, "fifo.onnx", dst, sizeof dst);
  unlink(dst);
  assert_int_equal(mkfifo(dst, 0600), 0);
  has(load_fails(e, e->tmp, "fifo.onnx", KC_ERR_IO), "not a regular file");
  unlink(dst);
  alarm(0);
}

/* ---- good models ---- */

/* The weight or constant tensor named name. */
static const kc_tensor *tensor(const kc_graph *g, const char *name) {
  for (uint32_t i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
  fail_msg("no tensor %s", name);
  return NULL;
}

static void t_typed_fields(void **st) {
  env *e = *st;
  kc_graph *g = load_ok(e, e->models, "typed_fields.onnx");
  const uint16_t *h = tensor(g, "h")->data;
  assert_true(kc_f16_to_f32(h[0]) == 1.5f && kc_f16_to_f32(h[1]) == -2.0f);
  const int8_t *i8 = tensor(g, "i8")->data;
  assert_true(i8[0] == -1 && i8[1] == 2 && i8[2] == 127);
  const int64_t *i64 = tensor(g, "i64")->data;
  assert_true(i64[0] == 7 && i64[1] == -9);
  assert_true(*(const double *)tensor(g, "f64")->data == 0.25);
  const uint32_t *u32 = tensor(g, "u32")->data;
  assert_true(u32[0] == 4000000000u && u32[1] == 1);
  const uint8_t *bl = tensor(g, "b")->data;
  assert_true(bl[0] == 1 && bl[1] == 0);
  assert_int_equal(tensor(g, "i8")->dtype, KC_I8);
  kc_graph_free(g);
}

static void t_constants(void **st) {
  env *e = *st;
  kc_graph *g = load_ok(e, e->models, "constants.onnx");
  int nconst = 0, nweight = 0;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    nconst += g->nodes[i].op == KC_OP_CONSTANT;
    nweight += g->nodes[i].op == KC_OP_WEIGHT;
  }
  assert_int_equal(nconst, 1);  /* value_ints [5, 20] */
  assert_int_equal(nweight, 1); /* the 100-element value */
  assert_true(((const float *)tensor(g, "big")->data)[99] == 99.0f);
  kc_val y = kc_graph_output(g, 0);
  kc_dim d[KC_MAX_RANK];
  kc_val_dims(g, y, d);
  assert_int_equal(kc_val_rank(g, y), 2);
  assert_true(d[0] == 5 && d[1] == 20);
  kc_graph_free(g);
}

static void t_old_opsets(void **st) {
  env *e = *st;
  kc_graph *g = load_ok(e, e->models, "old_opsets.onnx");
  kc_dim n = kc_sym(g, "N"), d[KC_MAX_RANK];
  assert_int_equal(kc_graph_num_outputs(g), 3);
  for (uint32_t i = 0; i < 3; i++) {
    kc_val v = kc_graph_output(g, i);
    assert_int_equal(kc_val_dtype(g, v), KC_F32); /* the opset-9 Dropout mask has x's dtype */
    assert_int_equal(kc_val_rank(g, v), 2);
    kc_val_dims(g, v, d);
    assert_true(d[0] == n && d[1] == 1);
  }
  /* opset-9 Softmax(axis=1) on rank 3 is flatten -> softmax -> reshape */
  bool flatten = false;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    if (g->nodes[i].op == KC_OP_FLATTEN) flatten = true;
    if (g->nodes[i].op == KC_OP_SOFTMAX) assert_int_equal(kc_node_int(&g->nodes[i], "axis", 0), -1);
  }
  assert_true(flatten);
  kc_graph_free(g);
}

/* ---- kernc check ---- */

static void t_check_library(void **st) {
  env *e = *st;
  char dir[4096], msg[1024];
  snprintf(dir, sizeof dir, "%s/check_suite/test_pass", e->models);
  assert_int_equal(kc_onnx_check_dir(e->ctx, dir, msg, sizeof msg), KC_CHECK_PASS);
  snprintf(dir, sizeof dir, "%s/check_suite/test_fail", e->models);
  assert_int_equal(kc_onnx_check_dir(e->ctx, dir, msg, sizeof msg), KC_CHECK_FAIL);
  has(msg, "expected f32[3,2], inferred f32[2,3]");
  snprintf(dir, sizeof dir, "%s/check_suite/test_skip", e->models);
  assert_int_equal(kc_onnx_check_dir(e->ctx, dir, msg, sizeof msg), KC_CHECK_SKIP);
  has(msg, "unsupported ops Unique(opset 17)");
  kc_pb_tensor t;
  snprintf(dir, sizeof dir, "%s/check_suite/test_fail/test_data_set_0/output_0.pb", e->models);
  assert_int_equal(kc_tensor_pb_read(e->ctx, dir, &t), KC_OK);
  assert_true(t.t.dtype == KC_F32 && t.t.rank == 2 && t.t.dims[0] == 3 && t.t.dims[1] == 2);
  assert_true(((const float *)t.t.data)[5] == 1.0f);
  kc_pb_tensor_free(&t);
}

static void t_check_cli(void **st) {
  env *e = *st;
  char cmd[16384], *text;
  snprintf(cmd, sizeof cmd, "'%s' check --suite '%s/check_suite'", e->kernc, e->models);
  assert_int_equal(th_exec(cmd, &text, NULL), 1);
  has(text, "PASS test_pass\n");
  has(text, "FAIL test_fail: output 'y'");
  has(text, "SKIP test_skip: unsupported ops Unique(opset 17)");
  has(text, "\n1 passed, 1 failed, 1 skipped\n");
  free(text);
  snprintf(cmd, sizeof cmd,
           "'%s' check --quiet '%s/check_suite/test_pass' '%s/check_suite/test_skip'", e->kernc,
           e->models, e->models);
  /* folders named on the command line must run: an unsupported model there is a FAIL (under
   * --suite, above, it is a SKIP) */
  assert_int_equal(th_exec(cmd, &text, NULL), 1);
  assert_string_equal(text, "FAIL test_skip: unsupported ops Unique(opset 17) (first nodes: Unique "
                            "'uniq')\n1 passed, 1 failed, 0 skipped\n");
  free(text);
  snprintf(cmd, sizeof cmd, "'%s' check --quiet '%s/check_suite/test_pass'", e->kernc, e->models);
  assert_int_equal(th_exec(cmd, &text, NULL), 0);
  assert_string_equal(text, "1 passed, 0 failed, 0 skipped\n");
  free(text);
  assert_int_equal(th_sh("'%s' check 2>/dev/null", e->kernc), 2);
  assert_int_equal(th_sh("'%s' check --help >/dev/null", e->kernc), 0);
}

static int setup(void **st) {
  env *e = *st;
  e->ctx = kc_context_new();
  return e->ctx ? 0 : -1;
}

static int teardown(void **st) {
  env *e = *st;
  kc_context_free(e->ctx);
  e->ctx = NULL;
  return 0;
}

/* dim_params that are no text IR symbol become distinct symbols that are (dim_params.onnx,
 * tests/onnx/make_models.py): the printed graph parses back to the same graph. */
static void t_dim_params(void **st) {
  env *e = *st;
  kc_graph *g = load_ok(e, e->models, "dim_params.onnx");
  /* "batch size" "1x" | a"b bätch | B*S+1 N-1 | batch_size "batch size" | ? unk0 */
  static const char *const want[5][2] = {{"batch_size", "_1x"},
                                         {"a_b", "b__tch"},
                                         {"B_S_1", "N_1"},
                                         {"batch_size_2", "batch_size"},
                                         {"unk0", "unk0_2"}};
  assert_int_equal(g->ninputs, 5);
  for (int i = 0; i < 5; i++)
    for (int d = 0; d < 2; d++) {
      char buf[64];
      const char *got = kc_dim_str(g, kc_value_of(g, g->inputs[i])->dims[d], buf, sizeof buf);
      if (strcmp(got, want[i][d]) != 0)
        fail_msg("input %d dim %d: %s, want %s", i, d, got, want[i][d]);
    }
  char *t1 = kc_graph_print_str(g);
  kc_graph *g2 = NULL;
  if (kc_graph_parse(e->ctx, t1, "dim_params.kir", &g2) != KC_OK || kc_graph_verify(g2) != KC_OK)
    fail_msg("printed text does not parse back: %s\n%s", kc_last_error(e->ctx), t1);
  char *t2 = kc_graph_print_str(g2);
  if (strcmp(t1, t2) != 0) fail_msg("printed twice, differently:\n%s\n%s", t1, t2);
  free(t1);
  free(t2);
  kc_graph_free(g2);
  kc_graph_free(g);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_onnx KERNC_PROGRAM TESTS_DIR\n");
    return 2;
  }
  env e = {.kernc = argv[1]};
  snprintf(e.models, sizeof e.models, "%s/onnx", argv[2]);
  if (!th_mkdtemp(e.tmp, sizeof e.tmp, "test_onnx")) return perror("mkdtemp"), 1;
  void *state = &e;
#define T(f) cmocka_unit_test_prestate_setup_teardown(f, setup, teardown, state)
  const struct CMUnitTest tests[] = {
      T(t_empty),          T(t_truncated),        T(t_random),           T(t_missing_file),
      T(t_cycle),          T(t_undefined_input),  T(t_size_mismatch),    T(t_bad_dtype),
      T(t_too_few_inputs), T(t_unsupported_ops),  T(t_sequence),         T(t_bad_attributes),
      T(t_external_ok),    T(t_external_escapes), T(t_external_symlink), T(t_external_not_regular),
      T(t_typed_fields),   T(t_constants),        T(t_old_opsets),       T(t_check_library),
      T(t_check_cli),      T(t_dim_params),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (!th_rmtree(e.tmp)) fprintf(stderr, "could not remove %s\n", e.tmp);
  return rc;
}
