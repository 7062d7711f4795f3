/*
 * tests/test_bad_input.c - what kernc says to each class of bad input, and the table of it in
 * docs/bad-input.md. Run as: test_bad_input KERNC_PROGRAM TESTS_DIR.
 *
 * Each case feeds one bad input (a tiny file or graph: nothing big is compiled) through the C API
 * or the kernc program and checks the status and a part of the message it must hold. The full
 * messages, with the tests folder shown as $TESTS and the scratch folder as $TMP, make the
 * markdown table of docs/bad-input.md: the test fails when the file differs from what it
 * generates, so the table cannot drift from what kernc says. After a deliberate change:
 *
 *   KC_WRITE_BAD_INPUT_TABLE=docs/bad-input.md build/tests/test_bad_input build/kernc tests
 *
 * (from the source root) writes the table instead of comparing it.
 */
/* realpath, mkfifo */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runtime/kv_cache.h"
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct env {
  const char *kernc;
  char tests[4096], tests_real[4096]; /* as given and resolved: both become $TESTS */
  char tmp[256];
  kc_context *ctx;
  kc_graph *g; /* the run-time cases' graph and module */
  kc_module *m;
} env;

/* What one case got: a status name (KC_ERR_...) or an exit code, and the message. */
typedef struct result {
  char status[32];
  char msg[KC_ERRBUF_SIZE];
} result;

typedef struct bad_case {
  const char *cls;   /* the class of bad input */
  const char *input; /* this case's input, in words */
  const char *via;   /* the entry point */
  void (*run)(env *e, result *r);
  const char *want_status;
  const char *want; /* a part the message must hold */
} bad_case;

static const char *status_name(kc_status s) {
  static const char *const names[] = {"KC_OK",          "KC_ERR_PARSE",   "KC_ERR_SHAPE",
                                      "KC_ERR_TYPE",    "KC_ERR_VERIFY",  "KC_ERR_UNSUPPORTED",
                                      "KC_ERR_IO",      "KC_ERR_NOMEM",   "KC_ERR_INVALID_ARG",
                                      "KC_ERR_RUNTIME", "KC_ERR_INTERNAL"};
  return (unsigned)s < sizeof names / sizeof *names ? names[s] : "?";
}

static void api(env *e, result *r, kc_status s) {
  snprintf(r->status, sizeof r->status, "%s", status_name(s));
  snprintf(r->msg, sizeof r->msg, "%s", s == KC_OK ? "" : kc_last_error(e->ctx));
}

static char *in_dir(const char *dir, const char *name, char *buf, size_t size) {
  if ((size_t)snprintf(buf, size, "%s/%s", dir, name) >= size) fail_msg("path too long");
  return buf;
}

/* ---- ONNX files ---- */

static void onnx_load(env *e, result *r, const char *path) {
  kc_graph *g = NULL;
  api(e, r, kc_onnx_load(e->ctx, path, &g));
  kc_graph_free(g);
}

static void load_model(env *e, result *r, const char *name) {
  char p[4096];
  if ((size_t)snprintf(p, sizeof p, "%s/onnx/%s", e->tests, name) >= sizeof p) fail_msg("long");
  onnx_load(e, r, p);
}

static void c_not_protobuf(env *e, result *r) {
  char p[4096];
  const char text[] = "this is not an ONNX model\n";
  th_write_file(in_dir(e->tmp, "text.onnx", p, sizeof p), text, sizeof text - 1);
  onnx_load(e, r, p);
}

static void c_truncated(env *e, result *r) {
  char p[4096];
  size_t n;
  char *b = th_read_file(in_dir(e->tests, "onnx/constants.onnx", p, sizeof p), &n);
  assert_non_null(b);
  th_write_file(in_dir(e->tmp, "truncated.onnx", p, sizeof p), b, n / 2);
  free(b);
  onnx_load(e, r, p);
}

static void c_empty(env *e, result *r) {
  char p[4096];
  th_write_file(in_dir(e->tmp, "empty.onnx", p, sizeof p), "", 0);
  onnx_load(e, r, p);
}

static void c_missing(env *e, result *r) {
  char p[4096];
  onnx_load(e, r, in_dir(e->tmp, "missing.onnx", p, sizeof p));
}

static void c_model_fifo(env *e, result *r) {
  char p[4096];
  in_dir(e->tmp, "fifo.onnx", p, sizeof p);
  unlink(p);
  assert_int_equal(mkfifo(p, 0600), 0);
  alarm(10); /* a hang is a failure */
  onnx_load(e, r, p);
  alarm(0);
  unlink(p);
}

static void c_unsupported(env *e, result *r) { load_model(e, r, "unsupported_ops.onnx"); }
static void c_undefined(env *e, result *r) { load_model(e, r, "undefined_input.onnx"); }
static void c_cycle(env *e, result *r) { load_model(e, r, "cycle.onnx"); }
static void c_size_mismatch(env *e, result *r) { load_model(e, r, "size_mismatch.onnx"); }
static void c_dup_attr(env *e, result *r) { load_model(e, r, "dup_attr.onnx"); }
static void c_attr_type(env *e, result *r) { load_model(e, r, "attr_type_mismatch.onnx"); }
static void c_dup_opset(env *e, result *r) { load_model(e, r, "dup_opset.onnx"); }
static void c_ext_missing(env *e, result *r) { load_model(e, r, "missing_external.onnx"); }
static void c_ext_escape(env *e, result *r) { load_model(e, r, "escape_dotdot.onnx"); }
static void c_ext_absolute(env *e, result *r) { load_model(e, r, "escape_absolute.onnx"); }

static void c_ext_fifo(env *e, result *r) {
  char src[4096], dst[4096], link[4096];
  size_t n;
  char *b = th_read_file(in_dir(e->tests, "onnx/symlink_external.onnx", src, sizeof src), &n);
  assert_non_null(b);
  th_write_file(in_dir(e->tmp, "fifo_external.onnx", dst, sizeof dst), b, n);
  free(b);
  in_dir(e->tmp, "link.bin", link, sizeof link); /* the location the model names */
  unlink(link);
  assert_int_equal(mkfifo(link, 0600), 0);
  alarm(10);
  onnx_load(e, r, dst);
  alarm(0);
  unlink(link);
}

/* ---- text IR and .npy ---- */

static void parse(env *e, result *r, const char *text) {
  kc_graph *g = NULL;
  api(e, r, kc_graph_parse(e->ctx, text, "bad.kir", &g));
  kc_graph_free(g);
}

static void c_kir_syntax(env *e, result *r) {
  parse(e, r, "# kir 1\ngraph @g(%1: f32[2]) {\n  %2 = relu(%1 : f32[2]\n  return %2\n}\n");
}

static void c_kir_op(env *e, result *r) {
  parse(e, r, "# kir 1\ngraph @g(%1: f32[2]) {\n  %2 = frobnicate(%1) : f32[2]\n  return %2\n}\n");
}

static void npy(env *e, result *r, const void *buf, size_t len) {
  kc_tensor_desc t = {0};
  api(e, r, kc_npy_read_mem(e->ctx, buf, len, "x.npy", &t));
  kc_npy_free(&t);
}

static void c_npy_magic(env *e, result *r) { npy(e, r, "PK\003\004 not numpy", 16); }

static void c_npy_truncated(env *e, result *r) {
  static const char hdr[] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, "
                            "'shape': (4,), }";
  char buf[256];
  memset(buf, ' ', sizeof buf);
  memcpy(buf, hdr, sizeof hdr - 1);
  buf[10 + 0x76 - 1] = '\n';
  npy(e, r, buf, 10 + 0x76 + 8); /* 8 of the 16 data bytes */
}

/* a FIFO named as a file to read: refused at once, never waited on */
static void fifo_case(env *e, result *r, const char *name, kc_status (*read)(env *, const char *)) {
  char p[4096];
  in_dir(e->tmp, name, p, sizeof p);
  unlink(p);
  assert_int_equal(mkfifo(p, 0600), 0);
  alarm(10); /* a hang is a failure */
  api(e, r, read(e, p));
  alarm(0);
  unlink(p);
}

static kc_status read_npy(env *e, const char *path) {
  kc_tensor_desc t = {0};
  kc_status s = kc_npy_read(e->ctx, path, &t);
  kc_npy_free(&t);
  return s;
}

static kc_status read_st(env *e, const char *path) {
  kc_st_file f;
  kc_status s = kc_st_read(e->ctx, path, &f);
  if (s == KC_OK) kc_st_free(&f);
  return s;
}

static kc_status read_kir(env *e, const char *path) {
  kc_graph *g = NULL;
  kc_status s = kc_graph_parse_file(e->ctx, path, &g);
  kc_graph_free(g);
  return s;
}

static void c_npy_fifo(env *e, result *r) { fifo_case(e, r, "fifo.npy", read_npy); }
static void c_kir_fifo(env *e, result *r) { fifo_case(e, r, "fifo.kir", read_kir); }
static void c_st_fifo(env *e, result *r) { fifo_case(e, r, "fifo.safetensors", read_st); }

/* ---- graphs built in C ---- */

static void c_range_inf(env *e, result *r) {
  kc_graph *g = kc_graph_new(e->ctx, "g");
  kc_range(g, kc_const_f32(g, 0), kc_const_f32(g, INFINITY), kc_const_f32(g, 1));
  api(e, r, kc_graph_status(g));
  kc_graph_free(g);
}

static void c_range_min(env *e, result *r) {
  kc_graph *g = kc_graph_new(e->ctx, "g");
  kc_range(g, kc_const_i64(g, INT64_MIN), kc_const_i64(g, 5), kc_const_i64(g, 1));
  api(e, r, kc_graph_status(g));
  kc_graph_free(g);
}

static void c_name(env *e, result *r) { api(e, r, kc_export_check_name(e->ctx, "int")); }
static void c_name_type(env *e, result *r) { api(e, r, kc_export_check_name(e->ctx, "int64")); }

static void c_export_name(env *e, result *r) {
  char so[4096];
  kc_export_options o = {.name = "struct"};
  api(e, r, kc_export(e->ctx, e->g, &o, in_dir(e->tmp, "libm.so", so, sizeof so), NULL));
}

/* ---- running: y = sum(softmax(gather(x, i))) with x f32[N, 3], i i64[K]: a scalar output, the
 * [K, 3] intermediates in the arena ---- */

static float xs[3000];
static int64_t good_idx[2] = {0, 1};

static void run_with(env *e, result *r, kc_tensor_desc *in, uint32_t nin, uint32_t nout) {
  kc_tensor_desc out[2];
  api(e, r, kc_run(e->m, in, nin, out, nout));
}

static void c_run_missing(env *e, result *r) {
  kc_tensor_desc in[1] = {th_desc("x", KC_F32, 2, (int64_t[]){2, 3}, xs)};
  run_with(e, r, in, 1, 1);
}

static void c_run_dtype(env *e, result *r) {
  kc_tensor_desc in[2] = {th_desc("x", KC_I32, 2, (int64_t[]){2, 3}, xs),
                          th_desc("i", KC_I64, 1, (int64_t[]){2}, good_idx)};
  run_with(e, r, in, 2, 1);
}

static void c_run_shape(env *e, result *r) {
  kc_tensor_desc in[2] = {th_desc("x", KC_F32, 2, (int64_t[]){2, 4}, xs),
                          th_desc("i", KC_I64, 1, (int64_t[]){2}, good_idx)};
  run_with(e, r, in, 2, 1);
}

static void c_run_index(env *e, result *r) {
  int64_t idx[2] = {0, 7};
  kc_tensor_desc in[2] = {th_desc("x", KC_F32, 2, (int64_t[]){2, 3}, xs),
                          th_desc("i", KC_I64, 1, (int64_t[]){2}, idx)};
  run_with(e, r, in, 2, 1);
}

static void c_run_nout(env *e, result *r) {
  kc_tensor_desc in[2] = {th_desc("x", KC_F32, 2, (int64_t[]){2, 3}, xs),
                          th_desc("i", KC_I64, 1, (int64_t[]){2}, good_idx)};
  run_with(e, r, in, 2, 0);
}

static void c_run_arena(env *e, result *r) {
  kc_tensor_desc in[2] = {th_desc("x", KC_F32, 2, (int64_t[]){1000, 3}, xs),
                          th_desc("i", KC_I64, 1, (int64_t[]){2}, good_idx)};
  kc_context_options(e->ctx)->memory_limit = 4096;
  int64_t many[1000];
  for (int k = 0; k < 1000; k++)
    many[k] = k;
  in[1] = th_desc("i", KC_I64, 1, (int64_t[]){1000}, many);
  run_with(e, r, in, 2, 1);
  kc_context_options(e->ctx)->memory_limit = 0;
}

static void c_threads(env *e, result *r) { api(e, r, kc_module_set_threads(e->m, 100000)); }

/* ---- the KV cache ---- */

static void c_cache_full(env *e, result *r) {
  kc_kv_shape sh = {.layers = 1, .kv_heads = 1, .head_dim = 4, .dtype_size = 4};
  kc_kv_cache *c = NULL;
  assert_int_equal(kc_kv_new(e->ctx, &sh, 4, 2, &c), KC_OK);
  int32_t seq;
  assert_int_equal(kc_kv_seq_new(c, &seq), KC_OK);
  assert_int_equal(kc_kv_seq_append(c, seq, 6), KC_OK);
  api(e, r, kc_kv_seq_append(c, seq, 3));
  kc_kv_free(c);
}

static void c_cache_memory(env *e, result *r) {
  kc_kv_shape sh = {.layers = 2, .kv_heads = 2, .head_dim = 64, .dtype_size = 4};
  kc_kv_cache *c = NULL;
  kc_context_options(e->ctx)->memory_limit = 1 << 20;
  api(e, r, kc_kv_new(e->ctx, &sh, 16, 256, &c));
  kc_context_options(e->ctx)->memory_limit = 0;
  kc_kv_free(c);
}

/* ---- training ---- */

static void c_trainer_memory(env *e, result *r) {
  kc_graph *g = kc_graph_new(e->ctx, "lin");
  float w0[64] = {0};
  kc_val x = kc_input(g, "x", KC_F32, 1, (kc_dim[]){64});
  kc_val w = kc_weight(g, "w", KC_F32, 1, (int64_t[]){64}, w0);
  kc_output(g, kc_reduce_sum(g, kc_mul(g, x, w), 0, NULL, 0), "loss");
  const char *params[] = {"w"};
  kc_trainer *t = NULL;
  kc_context_options(e->ctx)->memory_limit = 512;
  api(e, r, kc_trainer_new(e->ctx, g, "loss", 1, params, NULL, &t));
  kc_context_options(e->ctx)->memory_limit = 0;
  kc_trainer_free(t);
  kc_graph_free(g);
}

/* ---- the kernc program ---- */

/* Run `kernc ARGS` (env_prefix before it), the status "exit N", the message its stderr (or,
 * when that is empty, its stdout). */
static void cli(env *e, result *r, const char *env_prefix, const char *args) {
  char cmd[16384];
  snprintf(cmd, sizeof cmd, "%s'%s' %s", env_prefix, e->kernc, args);
  char *out = NULL, *err = NULL;
  int rc = th_exec(cmd, &out, &err);
  snprintf(r->status, sizeof r->status, "exit %d", rc);
  const char *m = err && *err ? err : out ? out : "";
  snprintf(r->msg, sizeof r->msg, "%s", m);
  size_t n = strlen(r->msg);
  while (n && r->msg[n - 1] == '\n')
    r->msg[--n] = 0;
  free(out);
  free(err);
}

static void x_name(env *e, result *r) { cli(e, r, "", "compile model.onnx -o libm.so --name=int"); }

static void x_check(env *e, result *r) {
  char args[8192];
  snprintf(args, sizeof args, "check --quiet '%s/onnx/check_suite/test_skip'", e->tests);
  cli(e, r, "", args);
}

static void x_npy(env *e, result *r) {
  char p[4096], args[16384];
  th_write_file(in_dir(e->tmp, "bad.npy", p, sizeof p), "not numpy", 9);
  snprintf(args, sizeof args, "run '%s/onnx/check_suite/test_pass/model.onnx' --input x='%s'",
           e->tests, p);
  cli(e, r, "", args);
}

static void x_threads(env *e, result *r) {
  char args[8192];
  snprintf(args, sizeof args, "run '%s/onnx/check_suite/test_pass/model.onnx' --threads=5000",
           e->tests);
  cli(e, r, "", args);
}

static void x_memory(env *e, result *r) {
  char p[4096], args[16384];
  kc_tensor_desc t = th_desc(NULL, KC_F32, 2, (int64_t[]){1000, 3}, xs);
  assert_int_equal(kc_npy_write(e->ctx, in_dir(e->tmp, "big.npy", p, sizeof p), &t), KC_OK);
  snprintf(args, sizeof args,
           "run '%s/onnx/check_suite/test_pass/model.onnx' --input x='%s' -o '%s/y.npy'", e->tests,
           p, e->tmp);
  cli(e, r, "KERNC_MEMORY_LIMIT=1000 ", args);
}

static const bad_case cases[] = {
    {"malformed .onnx", "text, not a protobuf", "kc_onnx_load", c_not_protobuf, "KC_ERR_PARSE",
     "not a valid ONNX model"},
    {"malformed .onnx", "truncated to half its bytes", "kc_onnx_load", c_truncated, "KC_ERR_PARSE",
     "truncated or corrupt"},
    {"malformed .onnx", "empty file", "kc_onnx_load", c_empty, "KC_ERR_PARSE", "empty file"},
    {"missing file", "no such .onnx", "kc_onnx_load", c_missing, "KC_ERR_IO", "cannot open"},
    {"not a regular file", "the model path is a FIFO", "kc_onnx_load", c_model_fifo, "KC_ERR_IO",
     "not a regular file"},
    {"unknown op", "Unique, Det, com.microsoft.FusedMatMul", "kc_onnx_load", c_unsupported,
     "KC_ERR_UNSUPPORTED", "unsupported ops"},
    {"broken graph", "a node reads an undefined value", "kc_onnx_load", c_undefined,
     "KC_ERR_VERIFY", "ghost"},
    {"broken graph", "a cycle", "kc_onnx_load", c_cycle, "KC_ERR_VERIFY", "cycle"},
    {"shape mismatch", "an initializer with fewer bytes than its dims", "kc_onnx_load",
     c_size_mismatch, "KC_ERR_PARSE", "w"},
    {"bad attribute", "the same attribute twice", "kc_onnx_load", c_dup_attr, "KC_ERR_PARSE",
     "is given twice"},
    {"bad attribute", "declared INT, carries a string", "kc_onnx_load", c_attr_type, "KC_ERR_PARSE",
     "declared INT but carries a STRING"},
    {"bad opset import", "the default domain imported twice", "kc_onnx_load", c_dup_opset,
     "KC_ERR_PARSE", "twice"},
    {"external data", "the file is missing", "kc_onnx_load", c_ext_missing, "KC_ERR_IO",
     "missing.bin"},
    {"external data", "location with ..", "kc_onnx_load", c_ext_escape, "KC_ERR_INVALID_ARG",
     "leaves the model's folder"},
    {"external data", "absolute location", "kc_onnx_load", c_ext_absolute, "KC_ERR_INVALID_ARG",
     "is absolute"},
    {"external data", "the location is a FIFO", "kc_onnx_load", c_ext_fifo, "KC_ERR_IO",
     "not a regular file"},
    {"bad .kir", "a missing parenthesis", "kc_graph_parse", c_kir_syntax, "KC_ERR_PARSE",
     "bad.kir:3:"},
    {"bad .kir", "an unknown op", "kc_graph_parse", c_kir_op, "KC_ERR_PARSE", "frobnicate"},
    {"bad .npy", "not a .npy file", "kc_npy_read_mem", c_npy_magic, "KC_ERR_PARSE", "x.npy"},
    {"bad .npy", "data shorter than its shape", "kc_npy_read_mem", c_npy_truncated, "KC_ERR_PARSE",
     "x.npy"},
    {"bad .npy", "not a .npy file", "kernc run --input", x_npy, "exit 1", "bad.npy"},
    {"not a regular file", "a .kir graph that is a FIFO", "kc_graph_parse_file", c_kir_fifo,
     "KC_ERR_IO", "not a regular file"},
    {"not a regular file", "a .npy input that is a FIFO", "kc_npy_read", c_npy_fifo, "KC_ERR_IO",
     "not a regular file"},
    {"not a regular file", "a checkpoint that is a FIFO", "kc_st_read (kc_trainer_load)", c_st_fifo,
     "KC_ERR_IO", "not a regular file"},
    {"bad range", "range(0, inf, 1)", "builder (kc_graph_status)", c_range_inf, "KC_ERR_SHAPE",
     "limit is inf"},
    {"bad range", "range(INT64_MIN, 5, 1)", "builder (kc_graph_status)", c_range_min,
     "KC_ERR_SHAPE", "does not fit in int64"},
    {"bad name", "model name `int`", "kc_export_check_name", c_name, "KC_ERR_INVALID_ARG",
     "keyword"},
    {"bad name", "model name `int64` (int64_t)", "kc_export_check_name", c_name_type,
     "KC_ERR_INVALID_ARG", "NAME_t"},
    {"bad name", "model name `struct`", "kc_export", c_export_name, "KC_ERR_INVALID_ARG",
     "keyword"},
    {"bad name", "--name=int", "kernc compile", x_name, "exit 2", "keyword"},
    {"run: missing input", "input i not given", "kc_run", c_run_missing, "KC_ERR_INVALID_ARG",
     "'i'"},
    {"run: wrong dtype", "x as i32", "kc_run", c_run_dtype, "KC_ERR_TYPE", "'x'"},
    {"run: shape mismatch", "x [2, 4] for [N, 3]", "kc_run", c_run_shape, "KC_ERR_SHAPE", "'x'"},
    {"run: index out of range", "gather index 7 of 2 rows", "kc_run", c_run_index,
     "KC_ERR_INVALID_ARG", "out of range"},
    {"run: output count", "nout 0", "kc_run", c_run_nout, "KC_ERR_INVALID_ARG", "nout is 0"},
    {"thread count", "100000 threads", "kc_module_set_threads", c_threads, "KC_ERR_INVALID_ARG",
     "KC_MAX_THREADS"},
    {"thread count", "--threads=5000", "kernc run", x_threads, "exit 2", "from 1 to 1024"},
    {"oversized arena", "memory_limit 4096, [1000, 3] intermediates", "kc_run", c_run_arena,
     "KC_ERR_NOMEM", "the arena of model 'gathered' needs"},
    {"oversized arena", "KERNC_MEMORY_LIMIT=1000, output [1000, 3]", "kernc run", x_memory,
     "exit 1", "more than the 1000 bytes"},
    {"full cache", "9 tokens in a cache of 8", "kc_kv_seq_append (kc_session_decode)", c_cache_full,
     "KC_ERR_RUNTIME", "KV cache full"},
    {"oversized cache", "memory_limit 1 MiB, cache of 8 MiB", "kc_kv_new (kc_session_new)",
     c_cache_memory, "KC_ERR_NOMEM", "KV cache of 8388608 bytes"},
    {"oversized trainer state", "memory_limit 512, AdamW over 64 floats", "kc_trainer_new",
     c_trainer_memory, "KC_ERR_NOMEM", "parameter 'w' with its gradient"},
    {"unsupported model, named", "`kernc check DIR` on a model with Unique", "kernc check", x_check,
     "exit 1", "FAIL test_skip: unsupported ops"},
};
#define NCASES (sizeof cases / sizeof *cases)

/* Replace every occurrence of from with to in s (size bytes of room). */
static void replace_all(char *s, size_t size, const char *from, const char *to) {
  size_t fl = strlen(from), tl = strlen(to);
  if (!fl) return;
  for (char *p = strstr(s, from); p; p = strstr(p + tl, from)) {
    size_t rest = strlen(p + fl);
    if ((size_t)(p - s) + tl + rest + 1 > size) return;
    memmove(p + tl, p + fl, rest + 1);
    memcpy(p, to, tl);
  }
}

/* A message as a table cell: each line a code span, lines joined by <br>, | escaped. */
static void cell(FILE *f, const char *msg) {
  fputc('`', f);
  for (const char *p = msg; *p; p++) {
    if (*p == '\n')
      fputs("`<br>`", f);
    else if (*p == '|')
      fputs("\\|", f);
    else if (*p == '`')
      fputc('\'', f);
    else
      fputc(*p, f);
  }
  fputc('`', f);
}

static void t_bad_inputs(void **state) {
  env *e = *state;
  char *table = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&table, &len);
  assert_non_null(f);
  fputs("# What kernc says to bad input\n\n"
        "Generated by `tests/test_bad_input.c`, which feeds each input below to kernc and checks "
        "the answer; the test fails when this file differs from what it generates, so do not "
        "edit it by hand. After changing a message, regenerate it from the source root:\n\n"
        "    KC_WRITE_BAD_INPUT_TABLE=docs/bad-input.md build/tests/test_bad_input build/kernc "
        "tests\n\n"
        "`$TESTS` is the `tests/` folder, `$TMP` a scratch folder. Through the C API the message "
        "is `kc_last_error(ctx)`; the `kernc` program prints `kernc: ` and the message on stderr "
        "(its exit codes: 1 failure, 2 bad usage).\n\n"
        "| class | bad input | through | result | message |\n"
        "|---|---|---|---|---|\n",
        f);
  int bad = 0;
  for (size_t i = 0; i < NCASES; i++) {
    const bad_case *c = &cases[i];
    result r = {{0}, {0}};
    kc_clear_error(e->ctx);
    c->run(e, &r);
    replace_all(r.msg, sizeof r.msg, e->tmp, "$TMP");
    replace_all(r.msg, sizeof r.msg, e->tests_real, "$TESTS");
    replace_all(r.msg, sizeof r.msg, e->tests, "$TESTS");
    if (strcmp(r.status, c->want_status) != 0 || !strstr(r.msg, c->want)) {
      print_error("case %zu (%s: %s): got %s \"%s\"; want %s and \"%s\"\n", i, c->cls, c->input,
                  r.status, r.msg, c->want_status, c->want);
      bad++;
    }
    fprintf(f, "| %s | %s | `%s` | %s | ", c->cls, c->input, c->via, r.status);
    cell(f, r.msg);
    fputs(" |\n", f);
  }
  fclose(f);
  char path[8192];
  const char *write_to = getenv("KC_WRITE_BAD_INPUT_TABLE");
  if (write_to && *write_to) {
    th_write_file(write_to, table, len);
    print_message("wrote %s\n", write_to);
  } else {
    snprintf(path, sizeof path, "%s/../docs/bad-input.md", e->tests);
    size_t n;
    char *doc = th_read_file(path, &n);
    if (!doc || strcmp(doc, table) != 0) {
      print_error("%s differs from what kernc says now (first different line: %d); "
                  "regenerate it with KC_WRITE_BAD_INPUT_TABLE (see tests/test_bad_input.c)\n",
                  path, doc ? th_first_diff_line(doc, table) : 0);
      bad++;
    }
    free(doc);
  }
  free(table);
  assert_int_equal(bad, 0);
}

static int setup(void **state) {
  env *e = *state;
  e->ctx = kc_context_new();
  e->g = kc_graph_new(e->ctx, "gathered");
  kc_val x = kc_input(e->g, "x", KC_F32, 2, (kc_dim[]){kc_sym(e->g, "N"), 3});
  kc_val i = kc_input(e->g, "i", KC_I64, 1, (kc_dim[]){kc_sym(e->g, "K")});
  kc_val sm = kc_softmax(e->g, kc_gather(e->g, x, i, 0), -1);
  kc_output(e->g, kc_reduce_sum(e->g, sm, 0, NULL, 0), "y");
  e->m = th_compile(e->ctx, e->g, 1);
  return e->m ? 0 : -1;
}

static int teardown(void **state) {
  env *e = *state;
  kc_module_free(e->m);
  kc_graph_free(e->g);
  kc_context_free(e->ctx);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_bad_input KERNC_PROGRAM TESTS_DIR\n");
    return 2;
  }
  env e = {.kernc = argv[1]};
  snprintf(e.tests, sizeof e.tests, "%s", argv[2]);
  if (!realpath(argv[2], e.tests_real)) snprintf(e.tests_real, sizeof e.tests_real, "%s", argv[2]);
  if (!th_mkdtemp(e.tmp, sizeof e.tmp, "bad_input")) return perror("mkdtemp"), 1;
  char real_tmp[4096];
  if (realpath(e.tmp, real_tmp) && strlen(real_tmp) < sizeof e.tmp) strcpy(e.tmp, real_tmp);
  for (size_t k = 0; k < sizeof xs / sizeof *xs; k++)
    xs[k] = (float)k;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_prestate_setup_teardown(t_bad_inputs, setup, teardown, &e),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  if (!th_rmtree(e.tmp)) fprintf(stderr, "could not remove %s\n", e.tmp);
  return rc;
}
