/*
 * tests/test_runtime.c - compile and run (runtime/): builder graphs JIT'd through kc_compile and
 * run with kc_run, every number checked against values computed here.
 *
 * Covered: kernels chained through the arena (intermediates reused, outputs in their own
 * buffers), one module run with different symbolic batch sizes, sizes that follow from the
 * contents of small inputs (range), sizes that follow from computed data (staged runs), a size
 * no data settles refused by name, outputs that are inputs or views (copied), every input error
 * (count, name, missing, dtype, rank, static dim, a symbol bound to two values) naming the input, 1
 * vs 2 threads giving identical bytes, peak bytes not growing over repeated runs, elementwise
 * math, views and weights. `kernc run` (argv[1], the program) with .npy files in and out, printed
 * outputs, and missing inputs listed. Everything is freed: the suite runs under ASan with leak
 * detection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernc.h"
#include "runtime/runtime.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/plan_core.h"

typedef struct env {
  kc_context *ctx;
  kc_graph *g;
  kc_module *m;
} env;

static int setup(void **st) {
  env *e = calloc(1, sizeof *e);
  e->ctx = kc_context_new();
  e->g = kc_graph_new(e->ctx, "t");
  *st = e;
  return 0;
}

static int teardown(void **st) {
  env *e = *st;
  kc_module_free(e->m);
  kc_graph_free(e->g);
  kc_context_free(e->ctx);
  free(e);
  return 0;
}

/* Compile e->g with `threads`; every op has an emitter, so any failure fails the test. */
static void compile(env *e, int threads) { e->m = th_compile(e->ctx, e->g, threads); }

/* kc_run must fail with status s and a message holding each of the given words. */
static void run_fails(env *e, const kc_tensor_desc *in, uint32_t nin, kc_status s, const char *w1,
                      const char *w2) {
  kc_tensor_desc out[4];
  kc_status got = kc_run(e->m, in, nin, out, kc_graph_num_outputs(e->g));
  const char *msg = kc_last_error(e->ctx);
  if (got != s || !strstr(msg, w1) || (w2 && !strstr(msg, w2)))
    print_error("status %d, message: %s\n", got, msg);
  assert_int_equal(got, s);
  assert_non_null(strstr(msg, w1));
  if (w2) assert_non_null(strstr(msg, w2));
}

static float *iota(size_t n, float scale) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  for (size_t i = 0; i < n; i++)
    p[i] = (float)i * scale - 3.0f;
  return p;
}

/* ---- kernels through the arena ------------------------------------------------------------ */

/* x[B,3] -> t1 = x^T -> t2 = t1^T (= x) -> t3 = t2^T; outputs t3 and t2. */
static void build_chain(env *e) {
  kc_val x = kc_input(e->g, "x", KC_F32, 2, (kc_dim[]){kc_sym(e->g, "B"), 3});
  kc_val t1 = kc_transpose(e->g, x, 0, NULL);
  kc_val t2 = kc_transpose(e->g, t1, 0, NULL);
  kc_output(e->g, kc_transpose(e->g, t2, 0, NULL), "t3");
  kc_output(e->g, t2, "t2");
}

static void check_chain(env *e, int64_t b) {
  float *x = iota((size_t)b * 3, 0.5f);
  kc_tensor_desc in = th_desc("x", KC_F32, 2, (int64_t[]){b, 3}, x), out[2];
  assert_int_equal(kc_run(e->m, &in, 1, out, 2), KC_OK);
  assert_string_equal(out[0].name, "t3");
  assert_true(out[0].rank == 2 && out[0].dims[0] == 3 && out[0].dims[1] == b);
  assert_true(out[1].rank == 2 && out[1].dims[0] == b && out[1].dims[1] == 3);
  const float *t3 = out[0].data, *t2 = out[1].data;
  for (int64_t i = 0; i < b; i++)
    for (int j = 0; j < 3; j++) {
      assert_true(t2[i * 3 + j] == x[i * 3 + j]);
      assert_true(t3[j * b + i] == x[i * 3 + j]);
    }
  assert_ptr_not_equal(out[0].data, x);
  free(x);
}

static void t_chain_and_batches(void **st) {
  env *e = *st;
  build_chain(e);
  compile(e, 2);
  check_chain(e, 4);
  size_t peak4 = kc_module_peak_bytes(e->m);
  assert_true(peak4 >= 4 * 3 * sizeof(float)); /* t1 lives in the arena */
  check_chain(e, 1000);
  check_chain(e, 1);
  check_chain(e, 0);
  size_t peak = kc_module_peak_bytes(e->m);
  assert_true(peak >= 1000 * 3 * sizeof(float));
  for (int i = 0; i < 5; i++)
    check_chain(e, 4);
  assert_int_equal(kc_module_peak_bytes(e->m), peak);
}

/*
 * 1 thread, 2 threads and one per core give the same bytes: transposes, and (when their
 * families exist) a row softmax, a matmul with a weight and a sum over rows.
 */
static void t_threads_identical(void **st) {
  env *e = *st;
  enum { K = 64, N = 48 };
  kc_val x = kc_input(e->g, "x", KC_F32, 2, (kc_dim[]){kc_sym(e->g, "B"), K});
  float *w = iota(K * N, 0.001f);
  kc_val s = kc_softmax(e->g, kc_transpose(e->g, kc_transpose(e->g, x, 0, NULL), 0, NULL), -1);
  kc_val y = kc_matmul(e->g, s, kc_weight(e->g, "w", KC_F32, 2, (int64_t[]){K, N}, w));
  kc_output(e->g, y, "y");
  kc_output(e->g, kc_reduce_sum(e->g, y, 1, (int64_t[]){1}, 0), "sum");
  free(w);
  compile(e, 1);
  const int64_t b = 777;
  float *xs = iota(b * K, 0.0125f);
  kc_tensor_desc in = th_desc("x", KC_F32, 2, (int64_t[]){b, K}, xs), out[2];
  assert_int_equal(kc_run(e->m, &in, 1, out, 2), KC_OK);
  float *one = malloc(b * N * sizeof *one), *sum = malloc(b * sizeof *sum);
  memcpy(one, out[0].data, b * N * sizeof *one);
  memcpy(sum, out[1].data, b * sizeof *sum);
  for (int threads = 2; threads >= 0; threads -= 2) {
    assert_int_equal(kc_module_set_threads(e->m, threads), KC_OK);
    assert_int_equal(kc_run(e->m, &in, 1, out, 2), KC_OK);
    assert_memory_equal(one, out[0].data, b * N * sizeof *one);
    assert_memory_equal(sum, out[1].data, b * sizeof *sum);
  }
  /* and the numbers are right: row 5 against a double-precision reference */
  double p[K], z = 0, mx = -1e30;
  for (int k = 0; k < K; k++)
    mx = fmax(mx, xs[5 * K + k]);
  for (int k = 0; k < K; k++)
    z += p[k] = exp(xs[5 * K + k] - mx);
  float *wr = iota(K * N, 0.001f);
  double total = 0;
  for (int j = 0; j < N; j++) {
    double acc = 0;
    for (int k = 0; k < K; k++)
      acc += p[k] / z * wr[k * N + j];
    assert_true(fabs(one[5 * N + j] - acc) <= 1e-5 + 1e-4 * fabs(acc));
    total += acc;
  }
  assert_true(fabs(sum[5] - total) <= 1e-4 + 1e-4 * fabs(total));
  free(wr);
  free(one);
  free(sum);
  free(xs);
}

/* ---- storage corner cases ------------------------------------------------------------------ */

/* An output that is a graph input, twice, plus one that is a kernel result. */
static void t_output_is_input(void **st) {
  env *e = *st;
  kc_val x = kc_input(e->g, "x", KC_I32, 1, (kc_dim[]){kc_sym(e->g, "N")});
  kc_output(e->g, x, "a");
  kc_output(e->g, x, "b");
  kc_output(e->g, kc_transpose(e->g, x, 0, NULL), "c");
  compile(e, 0);
  int32_t xs[5] = {1, -2, 3, -4, 5};
  kc_tensor_desc in = th_desc(NULL, KC_I32, 1, (int64_t[]){5}, xs), out[3];
  assert_int_equal(kc_run(e->m, &in, 1, out, 3), KC_OK);
  for (int k = 0; k < 3; k++) {
    assert_ptr_not_equal(out[k].data, xs); /* module-owned copies: the caller's data is theirs */
    assert_memory_equal(out[k].data, xs, sizeof xs);
  }
  assert_ptr_not_equal(out[0].data, out[1].data);
  /* every output is asked for: fewer (0 included) or more is an error saying both counts */
  assert_int_equal(kc_run(e->m, &in, 1, out, 1), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(e->ctx), "has 3 output(s), nout is 1"));
  assert_int_equal(kc_run(e->m, &in, 1, NULL, 0), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(e->ctx), "nout is 0"));
  kc_tensor_desc many[4];
  assert_int_equal(kc_run(e->m, &in, 1, many, 4), KC_ERR_INVALID_ARG);
  /* a success after a failure leaves no message behind */
  assert_int_equal(kc_run(e->m, &in, 1, out, 3), KC_OK);
  assert_string_equal(kc_last_error(e->ctx), "");
  assert_int_equal(kc_graph_num_outputs(kc_module_graph(e->m)), 3);
}

/* range(0, n, 1) from a scalar input: the size follows from the input's contents. */
static void t_size_from_input_contents(void **st) {
  env *e = *st;
  kc_val n = kc_input(e->g, "n", KC_I64, 0, NULL);
  kc_val z = kc_input(e->g, "zero", KC_I64, 0, NULL);
  kc_val one = kc_input(e->g, "one", KC_I64, 0, NULL);
  kc_output(e->g, kc_range(e->g, z, n, one), "r");
  compile(e, 0);
  for (int64_t len = 0; len < 70; len += 23) {
    int64_t zero = 0, step = 1;
    kc_tensor_desc in[3] = {th_desc("one", KC_I64, 0, NULL, &step),
                            th_desc("n", KC_I64, 0, NULL, &len),
                            th_desc("zero", KC_I64, 0, NULL, &zero)},
                   out;
    assert_int_equal(kc_run(e->m, in, 3, &out, 1), KC_OK);
    assert_true(out.rank == 1 && out.dims[0] == len);
    for (int64_t i = 0; i < len; i++)
      assert_int_equal(((const int64_t *)out.data)[i], i);
  }
}

/*
 * A float range over integer values gets its length from the inputs; over fractional ones it
 * cannot (sizes are integers of the shape graph): refused, naming the node.
 */
static void t_size_from_float_inputs(void **st) {
  env *e = *st;
  kc_val a = kc_input(e->g, "a", KC_F32, 0, NULL);
  kc_val b = kc_input(e->g, "b", KC_F32, 0, NULL);
  kc_val c = kc_input(e->g, "c", KC_F32, 0, NULL);
  kc_output(e->g, kc_range(e->g, a, b, c), "r");
  compile(e, 0);
  float v[3] = {-2, 10, 3};
  kc_tensor_desc in[3] = {th_desc("a", KC_F32, 0, NULL, &v[0]),
                          th_desc("b", KC_F32, 0, NULL, &v[1]),
                          th_desc("c", KC_F32, 0, NULL, &v[2])},
                 out;
  assert_int_equal(kc_run(e->m, in, 3, &out, 1), KC_OK);
  assert_true(out.rank == 1 && out.dims[0] == 4);
  assert_true(((const float *)out.data)[3] == 7.0f);
  v[1] = 2.5f;
  v[2] = 0.5f;
  run_fails(e, in, 3, KC_ERR_UNSUPPORTED, "range", "depends on data");
}

/*
 * range(0, cast(n), 1): the length is computed data, so the run goes in stages (cast first).
 * t1 is placed in the arena before the stage boundary and read after it, while the second
 * stage grows the arena: its contents must survive.
 */
static void t_size_from_computed_data(void **st) {
  env *e = *st;
  kc_val x = kc_input(e->g, "x", KC_F32, 2, (kc_dim[]){kc_sym(e->g, "B"), 3});
  kc_val n = kc_input(e->g, "n", KC_I64, 0, NULL);
  kc_val t1 = kc_transpose(e->g, x, 0, NULL);
  kc_val c = kc_cast(e->g, n, KC_F32);
  kc_output(e->g, kc_range(e->g, kc_const_f32(e->g, 0), c, kc_const_f32(e->g, 1)), "r");
  kc_val u = kc_transpose(e->g, x, 0, NULL);
  kc_output(e->g, kc_transpose(e->g, t1, 0, NULL), "y");
  kc_output(e->g, kc_transpose(e->g, u, 0, NULL), "w");
  compile(e, 0);
  for (int64_t len = 5; len < 300; len += 100) {
    float *xs = iota(len * 3, 1.0f);
    kc_tensor_desc in[2] = {th_desc("x", KC_F32, 2, (int64_t[]){len, 3}, xs),
                            th_desc("n", KC_I64, 0, NULL, &len)},
                   out[3];
    assert_int_equal(kc_run(e->m, in, 2, out, 3), KC_OK);
    assert_true(out[0].rank == 1 && out[0].dims[0] == len);
    for (int64_t i = 0; i < len; i++)
      assert_true(((const float *)out[0].data)[i] == (float)i);
    assert_memory_equal(out[1].data, xs, (size_t)len * 3 * sizeof(float));
    assert_memory_equal(out[2].data, xs, (size_t)len * 3 * sizeof(float));
    free(xs);
  }
}

/* An output that views a value defined a stage earlier: tile as reshape -> expand (its shape an
 * input, known at the start) -> reshape by a shape computed in the graph (known only after the
 * mul runs, a later stage). The expand's kernel must write into the output's buffer, which once
 * was sized only at the view's stage (the output read garbage). */
static void t_output_view_of_earlier_stage(void **st) {
  env *e = *st;
  kc_val x = kc_input(e->g, "x", KC_F32, 2, (kc_dim[]){2, 2});
  kc_val s = kc_input(e->g, "s", KC_I64, 1, (kc_dim[]){4});
  kc_val r = kc_input(e->g, "r", KC_I64, 1, (kc_dim[]){2});
  kc_val x4 = kc_reshape(e->g, x, kc_const_i64s(e->g, 4, (int64_t[]){1, 2, 1, 2}));
  kc_val big = kc_expand(e->g, x4, s);
  kc_output(e->g, kc_reshape(e->g, big, kc_mul(e->g, r, kc_const_i64(e->g, 2))), "z");
  compile(e, 0);
  float xs[4] = {0, 1, 2, 3};
  int64_t sv[4] = {2, 2, 2, 2}, rv[2] = {2, 2};
  kc_tensor_desc in[3] = {th_desc("x", KC_F32, 2, (int64_t[]){2, 2}, xs),
                          th_desc("s", KC_I64, 1, (int64_t[]){4}, sv),
                          th_desc("r", KC_I64, 1, (int64_t[]){2}, rv)},
                 out[1];
  assert_int_equal(kc_run(e->m, in, 3, out, 1), KC_OK);
  assert_true(out[0].rank == 2 && out[0].dims[0] == 4 && out[0].dims[1] == 4);
  const float *z = out[0].data;
  for (int i = 0; i < 4; i++) /* numpy.tile(x, (2, 2)) */
    for (int j = 0; j < 4; j++)
      assert_true(z[i * 4 + j] == xs[(i % 2) * 2 + j % 2]);
}

/* ---- input errors ------------------------------------------------------------------------- */

static void t_input_errors(void **st) {
  env *e = *st;
  kc_dim s = kc_sym(e->g, "S");
  kc_val x = kc_input(e->g, "x", KC_F32, 2, (kc_dim[]){s, 4});
  kc_val y = kc_input(e->g, "y", KC_F32, 2, (kc_dim[]){s, 2});
  kc_output(e->g, kc_transpose(e->g, x, 0, NULL), "xt");
  kc_output(e->g, kc_transpose(e->g, y, 0, NULL), "yt");
  compile(e, 0);
  float buf[7 * 4] = {0};
  kc_tensor_desc ok[2] = {th_desc("x", KC_F32, 2, (int64_t[]){5, 4}, buf),
                          th_desc("y", KC_F32, 2, (int64_t[]){5, 2}, buf)},
                 bad[3];
  kc_tensor_desc out[2];
  assert_int_equal(kc_run(e->m, ok, 2, out, 2), KC_OK);
  /* missing */
  run_fails(e, ok, 1, KC_ERR_INVALID_ARG, "'y'", "missing");
  /* wrong dtype */
  memcpy(bad, ok, sizeof ok);
  bad[1].dtype = KC_F64;
  run_fails(e, bad, 2, KC_ERR_TYPE, "'y'", "f64");
  /* wrong rank */
  memcpy(bad, ok, sizeof ok);
  bad[0].rank = 3;
  bad[0].dims[2] = 1;
  run_fails(e, bad, 2, KC_ERR_SHAPE, "'x'", "rank 3");
  /* static dim */
  memcpy(bad, ok, sizeof ok);
  bad[0].dims[1] = 3;
  run_fails(e, bad, 2, KC_ERR_SHAPE, "'x'", "dim 1 must be 4");
  /* one symbol, two values */
  memcpy(bad, ok, sizeof ok);
  bad[1].dims[0] = 7;
  run_fails(e, bad, 2, KC_ERR_SHAPE, "'S'", "input 'x'");
  assert_non_null(strstr(kc_last_error(e->ctx), "'y'"));
  /* unknown name, given twice, too many */
  memcpy(bad, ok, sizeof ok);
  bad[1].name = "z";
  run_fails(e, bad, 2, KC_ERR_INVALID_ARG, "'z'", NULL);
  bad[1].name = "x";
  run_fails(e, bad, 2, KC_ERR_INVALID_ARG, "'x'", "twice");
  memcpy(bad, ok, sizeof ok);
  bad[2] = ok[0];
  run_fails(e, bad, 3, KC_ERR_INVALID_ARG, "takes 2", NULL);
  /* no data */
  memcpy(bad, ok, sizeof ok);
  bad[0].data = NULL;
  run_fails(e, bad, 2, KC_ERR_INVALID_ARG, "'x'", "no data");
  /* by position, and still fine after all that */
  bad[0] = ok[0];
  bad[0].name = bad[1].name = NULL;
  assert_int_equal(kc_run(e->m, bad, 2, out, 2), KC_OK);
  assert_true(out[0].dims[0] == 4 && out[0].dims[1] == 5);
}

static void t_compile_errors(void **st) {
  env *e = *st;
  kc_val x = kc_input(e->g, "x", KC_F32, 1, (kc_dim[]){3});
  kc_output(e->g, kc_transpose(e->g, x, 0, NULL), "y");
  kc_compile_options o = {.target = "gpu9000"};
  assert_int_equal(kc_compile(e->ctx, e->g, &o, &e->m), KC_ERR_UNSUPPORTED);
  assert_null(e->m);
  assert_non_null(strstr(kc_last_error(e->ctx), "gpu9000"));
  o = (kc_compile_options){.passes = "no-such-pass"};
  assert_int_not_equal(kc_compile(e->ctx, e->g, &o, &e->m), KC_OK);
  assert_null(e->m);
  /* a weight without data (as a .kir file declares them) */
  kc_graph *g = NULL;
  assert_int_equal(kc_graph_parse(e->ctx,
                                  "graph @w(%1: f32[3] \"x\") {\n"
                                  "  %2 = weight \"w.bias\" : f32[3]\n"
                                  "  %3 = transpose(%2) : f32[3]\n"
                                  "  return %3\n"
                                  "}\n",
                                  "w.kir", &g),
                   KC_OK);
  kc_status s = kc_compile(e->ctx, g, NULL, &e->m);
  if (!(s == KC_ERR_UNSUPPORTED && strstr(kc_last_error(e->ctx), "no CPU emitter"))) {
    assert_int_equal(s, KC_ERR_INVALID_ARG);
    assert_non_null(strstr(kc_last_error(e->ctx), "w.bias"));
  }
  assert_null(e->m);
  kc_graph_free(g);
}

/* ---- with the elementwise, view and source families --------------------------------------- */

/* relu(x + w) with a weight broadcast over the rows; x is freed before the run. */
static void t_add_relu_weight(void **st) {
  env *e = *st;
  float w[4] = {0.5f, -1.0f, 2.0f, -0.25f};
  kc_val x = kc_input(e->g, "x", KC_F32, 2, (kc_dim[]){kc_sym(e->g, "B"), 4});
  kc_val wv = kc_weight(e->g, "w", KC_F32, 1, (int64_t[]){4}, w);
  kc_output(e->g, kc_relu(e->g, kc_add(e->g, x, wv)), "y");
  compile(e, 2);
  kc_graph_free(e->g); /* the module holds its own copy, weights included */
  e->g = kc_graph_new(e->ctx, "unused");
  for (int64_t b = 1; b <= 301; b += 100) {
    float *xs = iota((size_t)b * 4, 0.01f);
    kc_tensor_desc in = th_desc("x", KC_F32, 2, (int64_t[]){b, 4}, xs), out;
    assert_int_equal(kc_run(e->m, &in, 1, &out, 1), KC_OK);
    for (int64_t i = 0; i < b * 4; i++) {
      float want = xs[i] + w[i % 4];
      assert_true(((const float *)out.data)[i] == (want > 0 ? want : 0));
    }
    free(xs);
  }
}

/* The text of g as kc_graph_print writes it (malloc'd). */
static char *printed(const kc_graph *g) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  assert_int_equal(kc_graph_print(g, f), KC_OK);
  fclose(f);
  return buf;
}

/* kc_graph_dump (the Python package's dump): no passes, the default pipeline, after every pass,
 * dot; a bad pass list is an error with no text; the caller's graph is never changed. */
static void t_graph_dump(void **st) {
  env *e = *st;
  float w[4] = {0.5f, -1.0f, 2.0f, -0.25f};
  kc_val x = kc_input(e->g, "x", KC_F32, 2, (kc_dim[]){kc_sym(e->g, "B"), 4});
  kc_val wv = kc_weight(e->g, "w", KC_F32, 1, (int64_t[]){4}, w);
  kc_output(e->g, kc_relu(e->g, kc_add(e->g, x, wv)), "y");
  char *before = printed(e->g), *text = NULL;
  assert_int_equal(kc_graph_dump(e->g, NULL, "", 0, 0, &text), KC_OK);
  assert_non_null(strstr(text, "add("));
  assert_non_null(strstr(text, "relu("));
  free(text);
  assert_int_equal(kc_graph_dump(e->g, NULL, NULL, 0, 0, &text), KC_OK);
  assert_non_null(strstr(text, "= fused(")); /* the default pipeline fuses add and relu */
  free(text);
  assert_int_equal(kc_graph_dump(e->g, NULL, "cse,dce", 1, 0, &text), KC_OK);
  assert_non_null(strstr(text, "after=cse"));
  assert_non_null(strstr(text, "after=dce"));
  free(text);
  assert_int_equal(kc_graph_dump(e->g, NULL, "", 0, 1, &text), KC_OK);
  assert_non_null(strstr(text, "digraph"));
  free(text);
  text = (char *)"unchanged";
  assert_int_not_equal(kc_graph_dump(e->g, NULL, "no-such-pass", 0, 0, &text), KC_OK);
  assert_null(text);
  assert_non_null(strstr(kc_last_error(e->ctx), "no-such-pass"));
  char *after = printed(e->g);
  assert_string_equal(before, after);
  free(before);
  free(after);
}

/* reshape to a constant shape: a view that needs no kernel; its output is copied. */
static void t_views(void **st) {
  env *e = *st;
  kc_val x = kc_input(e->g, "x", KC_F32, 2, (kc_dim[]){2, 6});
  kc_val r = kc_reshape(e->g, x, kc_const_i64s(e->g, 3, (int64_t[]){3, 2, 2}));
  kc_val t =
      kc_transpose(e->g, kc_reshape(e->g, r, kc_const_i64s(e->g, 2, (int64_t[]){4, 3})), 0, NULL);
  kc_output(e->g, r, "r");
  kc_output(e->g, kc_flatten(e->g, t, 1), "t");
  compile(e, 0);
  float xs[12];
  for (int i = 0; i < 12; i++)
    xs[i] = (float)i;
  kc_tensor_desc in = th_desc("x", KC_F32, 2, (int64_t[]){2, 6}, xs), out[2];
  assert_int_equal(kc_run(e->m, &in, 1, out, 2), KC_OK);
  assert_true(out[0].rank == 3 && out[0].dims[0] == 3);
  assert_memory_equal(out[0].data, xs, sizeof xs);
  assert_ptr_not_equal(out[0].data, xs);
  assert_true(out[1].rank == 2 && out[1].dims[0] == 3 && out[1].dims[1] == 4);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 4; j++)
      assert_true(((const float *)out[1].data)[i * 4 + j] == xs[j * 3 + i]);
}

/* Reshape to a shape given as an input: its contents settle the output's dims. */
static void t_reshape_by_input(void **st) {
  env *e = *st;
  kc_val x = kc_input(e->g, "x", KC_F32, 1, (kc_dim[]){kc_sym(e->g, "N")});
  kc_val shape = kc_input(e->g, "shape", KC_I64, 1, (kc_dim[]){2});
  kc_output(e->g, kc_transpose(e->g, kc_reshape(e->g, x, shape), 0, NULL), "y");
  compile(e, 0);
  float xs[12];
  for (int i = 0; i < 12; i++)
    xs[i] = (float)i;
  int64_t sh[2] = {-1, 4};
  kc_tensor_desc in[2] = {th_desc("x", KC_F32, 1, (int64_t[]){12}, xs),
                          th_desc("shape", KC_I64, 1, (int64_t[]){2}, sh)},
                 out;
  assert_int_equal(kc_run(e->m, in, 2, &out, 1), KC_OK);
  assert_true(out.rank == 2 && out.dims[0] == 4 && out.dims[1] == 3);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++)
      assert_true(((const float *)out.data)[i * 3 + j] == xs[j * 4 + i]);
  sh[0] = 5; /* 5*4 != 12: the shape function says so, naming the node */
  kc_tensor_desc o2;
  assert_int_not_equal(kc_run(e->m, in, 2, &o2, 1), KC_OK);
  assert_non_null(strstr(kc_last_error(e->ctx), "reshape"));
}

/*
 * What shape inference could not prove is checked per run: x[S] + y[T] was compiled assuming T
 * broadcasts to S (T == S or T == 1), and matmul(a[M,K], b[L,N]) assuming K == L. Inputs that
 * keep the assumptions run and give numpy's results; inputs that break them are errors naming
 * the node, never a result of the compiled size.
 */
static void t_assumed_sizes(void **st) {
  env *e = *st;
  kc_val x = kc_input(e->g, "x", KC_F32, 1, (kc_dim[]){kc_sym(e->g, "S")});
  kc_val y = kc_input(e->g, "y", KC_F32, 1, (kc_dim[]){kc_sym(e->g, "T")});
  kc_val a = kc_input(e->g, "a", KC_F32, 2, (kc_dim[]){2, kc_sym(e->g, "K")});
  kc_val b = kc_input(e->g, "b", KC_F32, 2, (kc_dim[]){kc_sym(e->g, "L"), 2});
  kc_output(e->g, kc_add(e->g, x, y), "sum");
  kc_output(e->g, kc_matmul(e->g, a, b), "prod");
  compile(e, 0);
  float xs[4] = {1, 2, 3, 4}, ys[4] = {10, 20, 30, 40}, as[6] = {1, 2, 3, 4, 5, 6};
  float bs[6] = {1, 0, 0, 1, 1, 1};
  kc_tensor_desc in[4] = {th_desc("x", KC_F32, 1, (int64_t[]){4}, xs),
                          th_desc("y", KC_F32, 1, (int64_t[]){4}, ys),
                          th_desc("a", KC_F32, 2, (int64_t[]){2, 3}, as),
                          th_desc("b", KC_F32, 2, (int64_t[]){3, 2}, bs)},
                 out[2];
  th_run(e->ctx, e->m, in, 4, out, 2);
  for (int i = 0; i < 4; i++)
    assert_true(((const float *)out[0].data)[i] == xs[i] + ys[i]);
  const float want[4] = {1 + 3, 2 + 3, 4 + 6, 5 + 6}; /* [[1,2,3],[4,5,6]] @ [[1,0],[0,1],[1,1]] */
  for (int i = 0; i < 4; i++)
    assert_true(((const float *)out[1].data)[i] == want[i]);
  in[1].dims[0] = 1; /* T = 1 broadcasts */
  th_run(e->ctx, e->m, in, 4, out, 2);
  for (int i = 0; i < 4; i++)
    assert_true(((const float *)out[0].data)[i] == xs[i] + ys[0]);
  in[1].dims[0] = 3; /* T = 3 against S = 4 */
  run_fails(e, in, 4, KC_ERR_SHAPE, "(add) was compiled assuming T to be S or 1", "T is 3, S is 4");
  in[1].dims[0] = 4;
  in[3].dims[0] = 2; /* L = 2 against K = 3 */
  run_fails(e, in, 4, KC_ERR_SHAPE, "(matmul) was compiled assuming K == L", "K is 3, L is 2");
}

/* ---- kernc run --------------------------------------------------------------------------- */

typedef struct cli_env {
  const char *kernc;
  char dir[64];
} cli_env;

static void t_cli_run(void **st) {
  cli_env *c = *st;
  kc_context *ctx = kc_context_new();
  char path[256];
  snprintf(path, sizeof path, "%s/m.kir", c->dir);
  const char *m_kir = "graph @m(%1: f32[B,3] \"x\") {\n"
                      "  %2 = transpose(%1) : f32[3,B]\n"
                      "  return %2 \"y\", %1 \"same\"\n"
                      "}\n";
  th_write_file(path, m_kir, strlen(m_kir));
  float xs[6] = {1, 2, 3, 4, 5, 6};
  kc_tensor_desc x = th_desc(NULL, KC_F32, 2, (int64_t[]){2, 3}, xs), y;
  snprintf(path, sizeof path, "%s/x.npy", c->dir);
  assert_int_equal(kc_npy_write(ctx, path, &x), KC_OK);
  const char *d = c->dir;
  assert_int_equal(
      th_sh("'%s' run '%s/m.kir' --input x='%s/x.npy' -o '%s/out' --threads 2 >/dev/null", c->kernc,
            d, d, d),
      0);
  snprintf(path, sizeof path, "%s/out/y.npy", c->dir);
  assert_int_equal(kc_npy_read(ctx, path, &y), KC_OK);
  assert_true(y.dtype == KC_F32 && y.rank == 2 && y.dims[0] == 3 && y.dims[1] == 2);
  assert_memory_equal(y.data, ((float[]){1, 4, 2, 5, 3, 6}), 6 * sizeof(float));
  kc_npy_free(&y);
  /* printed: name, dtype, shape, values */
  assert_int_equal(th_sh("'%s' run '%s/m.kir' -i '%s/x.npy' > '%s/o.txt'", c->kernc, d, d, d), 0);
  snprintf(path, sizeof path, "%s/o.txt", c->dir);
  char *text = th_read_file(path, NULL);
  assert_non_null(text);
  assert_string_equal(text, "y: f32[3,2] = 1 4 2 5 3 6\nsame: f32[2,3] = 1 2 3 4 5 6\n");
  free(text);
  /* missing inputs are listed; bad usage exits 2 */
  assert_int_equal(th_sh("'%s' run '%s/m.kir' 2> '%s/e.txt'", c->kernc, d, d), 1);
  snprintf(path, sizeof path, "%s/e.txt", c->dir);
  text = th_read_file(path, NULL);
  assert_non_null(text);
  assert_non_null(strstr(text, "missing input(s): 'x'"));
  free(text);
  assert_int_equal(th_sh("'%s' run '%s/m.kir' --threads 0 2>/dev/null", c->kernc, d), 2);
  assert_int_equal(th_sh("'%s' run 2>/dev/null", c->kernc), 2);
  assert_int_equal(th_sh("rm -rf '%s/out' '%s'/*.npy '%s'/*.txt '%s/m.kir'", d, d, d, d), 0);
  kc_context_free(ctx);
}

/* ---- the thread pool ------------------------------------------------------------------------ */

typedef struct cover {
  int *hits;
  int nthreads, bad;
} cover;

static void mark(void *arg, int64_t begin, int64_t end, int thread) {
  cover *c = arg;
  if (thread < 0 || thread >= c->nthreads) __atomic_store_n(&c->bad, 1, __ATOMIC_RELAXED);
  for (int64_t i = begin; i < end; i++)
    __atomic_fetch_add(&c->hits[i], 1, __ATOMIC_RELAXED);
}

/* Many small jobs of random sizes and grains, thread counts changing and workers left to fall
 * asleep now and then: every unit runs exactly once, thread ids stay in range, and the caller's
 * own share is within the job. (A job once opened before it was fully written let a worker run a
 * unit twice; this is the shape of the stress that found it.) */
static void t_pool_stress(void **state) {
  (void)state;
  kc_pool *p = NULL;
  assert_int_equal(kc_pool_new(NULL, 3, &p), KC_OK);
  srand(1);
  int hits[300];
  for (int it = 0; it < 20000; it++) {
    if (it % 1000 == 0) assert_int_equal(kc_pool_set_threads(p, 1 + (it / 700) % 6), KC_OK);
    if (it % 3000 == 1500) nanosleep(&(struct timespec){0, 300000}, NULL); /* workers sleep */
    int n = rand() % 300, grain = rand() % 3 == 0 ? 0 : 1 + rand() % 20;
    memset(hits, 0, sizeof hits);
    cover c = {hits, kc_pool_threads(p), 0};
    uint64_t ns;
    int64_t self = kc_pool_run_timed(p, mark, &c, n, grain, &ns);
    for (int i = 0; i < n; i++)
      if (hits[i] != 1) fail_msg("job %d: unit %d of %d ran %d times", it, i, n, hits[i]);
    assert_false(c.bad);
    assert_true(self >= 0 && self <= n);
  }
  kc_pool_free(p);
}

/* ---- bad bounds, thread counts and memory (issue 14, findings 7, 8, 12) ---------------------- */

/* An inf or NaN range bound (data at run time, or a constant) is named as such; an INT64_MIN
 * start whose span overflows says so (it once printed "(--9223372036854775808+...)"). */
static void t_range_bad_bounds(void **st) {
  env *e = *st;
  kc_val a = kc_input(e->g, "a", KC_F32, 0, NULL);
  kc_val b = kc_input(e->g, "b", KC_F32, 0, NULL);
  kc_val c = kc_input(e->g, "c", KC_F32, 0, NULL);
  kc_output(e->g, kc_range(e->g, a, b, c), "r");
  compile(e, 0);
  float v[3] = {0, INFINITY, 1};
  kc_tensor_desc in[3] = {th_desc("a", KC_F32, 0, NULL, &v[0]),
                          th_desc("b", KC_F32, 0, NULL, &v[1]),
                          th_desc("c", KC_F32, 0, NULL, &v[2])};
  run_fails(e, in, 3, KC_ERR_SHAPE, "range", "limit is inf");
  v[1] = 4;
  v[2] = NAN;
  run_fails(e, in, 3, KC_ERR_SHAPE, "range", "delta is nan");
  v[0] = -INFINITY;
  v[2] = 1;
  run_fails(e, in, 3, KC_ERR_SHAPE, "range", "start is -inf");

  kc_graph *g = kc_graph_new(e->ctx, "consts");
  kc_range(g, kc_const_f32(g, 0), kc_const_f32(g, INFINITY), kc_const_f32(g, 1));
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  assert_non_null(strstr(kc_last_error(e->ctx), "limit is inf"));
  kc_graph_free(g);
  g = kc_graph_new(e->ctx, "consts");
  kc_range(g, kc_const_i64(g, INT64_MIN), kc_const_i64(g, 5), kc_const_i64(g, 1));
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  const char *msg = kc_last_error(e->ctx);
  if (!strstr(msg, "limit 5 - start -9223372036854775808 does not fit in int64"))
    fail_msg("message: %s", msg);
  assert_null(strstr(msg, "--"));
  kc_graph_free(g);
  /* INT64_MIN itself is fine where the span fits */
  g = kc_graph_new(e->ctx, "consts");
  kc_val r =
      kc_range(g, kc_const_i64(g, INT64_MIN), kc_const_i64(g, INT64_MIN + 3), kc_const_i64(g, 1));
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_dim d;
  kc_val_dims(g, r, &d);
  assert_int_equal(d, 3);
  kc_graph_free(g);
}

/* Threads of this process (/proc/self/status). */
static int process_threads(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  int n = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "Threads: %d", &n) == 1) break;
  if (f) fclose(f);
  return n;
}

/* More than KC_MAX_THREADS is refused before any thread starts, and the module keeps working. */
static void t_thread_cap(void **st) {
  env *e = *st;
  kc_val x = kc_input(e->g, "x", KC_F32, 1, (kc_dim[]){4});
  kc_output(e->g, kc_relu(e->g, x), "y");
  compile(e, 2);
  int before = process_threads();
  assert_int_equal(kc_module_set_threads(e->m, 100000), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(e->ctx), "100000 is more than kernc allows"));
  assert_int_equal(kc_module_set_threads(e->m, KC_MAX_THREADS + 1), KC_ERR_INVALID_ARG);
  assert_int_equal(process_threads(), before);
  assert_int_equal(kc_module_set_threads(e->m, 3), KC_OK);
  assert_string_equal(kc_last_error(e->ctx), ""); /* the success cleared the message */
  float xs[4] = {-1, 2, -3, 4};
  kc_tensor_desc in = th_desc("x", KC_F32, 1, (int64_t[]){4}, xs), out;
  assert_int_equal(kc_run(e->m, &in, 1, &out, 1), KC_OK);
  assert_true(((const float *)out.data)[1] == 2.0f && ((const float *)out.data)[2] == 0.0f);
  kc_context_options(e->ctx)->threads = 5000; /* the context's default goes through the cap too */
  kc_module *m2 = NULL;
  assert_int_equal(kc_compile(e->ctx, e->g, NULL, &m2), KC_ERR_INVALID_ARG);
  assert_null(m2);
  kc_context_options(e->ctx)->threads = 0;
}

/*
 * A pool whose growth the OS refuses part-way (an address-space limit leaves room for a few
 * thread stacks) returns an error and ends the threads that call started, keeping its size. In
 * a child process, since the limit cannot be lifted safely after; skipped under ASan, whose
 * shadow memory a limit on the address space breaks.
 */
static void t_pool_grow_fails(void **state) {
  (void)state;
#if TH_SANITIZED
  skip();
#endif
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(30); /* a child stuck on a lock a parent thread held at fork fails instead of hanging */
    kc_context *ctx = kc_context_new();
    kc_pool *p = NULL;
    if (!ctx || kc_pool_new(ctx, 2, &p) != KC_OK) _exit(10);
    int before = process_threads();
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1) _exit(11);
    fclose(f);
    rlim_t vm = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE);
    struct rlimit rl = {vm + (64u << 20), vm + (64u << 20)};
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(12);
    kc_status s = kc_pool_set_threads(p, 1000); /* 8 MB stacks: the OS stops it after a few */
    if (s != KC_ERR_RUNTIME) _exit(13);
    if (!strstr(kc_last_error(ctx), "cannot start thread")) _exit(14);
    if (kc_pool_threads(p) != 2) _exit(15);
    if (process_threads() != before) _exit(16); /* the started ones were ended */
    if (kc_pool_set_threads(p, 3) != KC_OK || kc_pool_threads(p) != 3) _exit(17);
    kc_pool_free(p);
    kc_context_free(ctx);
    _exit(0);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("child: %s %d", WIFEXITED(status) ? "exit" : "signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* A run whose arena (or output) is larger than the memory there is fails before allocating,
 * naming both sizes; kc_options.memory_limit stands in for a small machine. */
static void t_memory_limit(void **st) {
  env *e = *st;
  kc_val x = kc_input(e->g, "x", KC_F32, 1, (kc_dim[]){kc_sym(e->g, "N")});
  kc_output(e->g, kc_exp(e->g, kc_relu(e->g, kc_neg(e->g, x))), "y");
  compile(e, 1);
  float *xs = iota(20000, 1.0f);
  kc_tensor_desc in = th_desc("x", KC_F32, 1, (int64_t[]){20000}, xs), out;
  kc_context_options(e->ctx)->memory_limit = 50000;
  assert_int_equal(kc_run(e->m, &in, 1, &out, 1), KC_ERR_NOMEM);
  const char *msg = kc_last_error(e->ctx);
  if (!strstr(msg, "needs 80000 bytes") || !strstr(msg, "more than the 50000 bytes"))
    fail_msg("message: %s", msg);
  in.dims[0] = 100; /* small enough */
  assert_int_equal(kc_run(e->m, &in, 1, &out, 1), KC_OK);
  kc_context_options(e->ctx)->memory_limit = 0;
  in.dims[0] = 20000;
  assert_int_equal(kc_run(e->m, &in, 1, &out, 1), KC_OK);
  free(xs);
  /* the machine's own number is there and plausible (more than 1 MiB, read from /proc) */
  uint64_t avail = kc_plan_mem_available(0);
  assert_true(avail > (1u << 20));
  assert_true(kc_plan_mem_available(1234) == 1234);
}

int main(int argc, char **argv) {
  cli_env c = {.kernc = argc > 1 ? argv[1] : NULL};
  if (c.kernc && !th_mkdtemp(c.dir, sizeof c.dir, "run")) return 1;
  const struct CMUnitTest cli[] = {cmocka_unit_test_prestate(t_cli_run, &c)};
  int failed = c.kernc ? cmocka_run_group_tests_name("kernc run", cli, NULL, NULL) : 0;
  if (c.kernc) th_rmtree(c.dir);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_chain_and_batches, setup, teardown),
      cmocka_unit_test_setup_teardown(t_graph_dump, setup, teardown),
      cmocka_unit_test_setup_teardown(t_threads_identical, setup, teardown),
      cmocka_unit_test_setup_teardown(t_output_is_input, setup, teardown),
      cmocka_unit_test_setup_teardown(t_size_from_input_contents, setup, teardown),
      cmocka_unit_test_setup_teardown(t_size_from_float_inputs, setup, teardown),
      cmocka_unit_test_setup_teardown(t_size_from_computed_data, setup, teardown),
      cmocka_unit_test_setup_teardown(t_output_view_of_earlier_stage, setup, teardown),
      cmocka_unit_test_setup_teardown(t_input_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(t_compile_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(t_add_relu_weight, setup, teardown),
      cmocka_unit_test_setup_teardown(t_views, setup, teardown),
      cmocka_unit_test_setup_teardown(t_reshape_by_input, setup, teardown),
      cmocka_unit_test_setup_teardown(t_assumed_sizes, setup, teardown),
      cmocka_unit_test(t_pool_stress),
      cmocka_unit_test_setup_teardown(t_range_bad_bounds, setup, teardown),
      cmocka_unit_test_setup_teardown(t_thread_cap, setup, teardown),
      cmocka_unit_test(t_pool_grow_fails),
      cmocka_unit_test_setup_teardown(t_memory_limit, setup, teardown),
  };
  return failed + cmocka_run_group_tests(tests, NULL, NULL);
}
