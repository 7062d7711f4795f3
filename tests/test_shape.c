/*
 * tests/test_shape.c - symbolic dims (ir/dim.c) and shape inference (ir/shape_*.c).
 *
 * Checks: dims are canonical (equal expressions are the same kc_dim, whatever order they were
 * built in) and print/parse round trip; numpy broadcasting with symbols; reshape's 0 and -1 on
 * symbolic shapes; a head split [B,S,384] -> [B,12,S,32] through reshape/transpose/matmul; the
 * exporters' Shape->Gather->Unsqueeze->Concat->Reshape chain resolving through known values;
 * shape arithmetic through every dtype (Cast to float and back exact, float Range counts,
 * truncating Div, min/max and comparisons only where the sign is provable: kc_dim_lower), the
 * requirements inferred sizes rest on (slice bounds, exact float values, reshape counts) and
 * their texts; cumsum; the other ops' shapes; and errors returning the right status with the
 * node named.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "tests/harness.h"

#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------- */

static kc_context *ctx; /* made in main, shared by every test */

static const char *dstr(kc_graph *g, kc_dim d) {
  static char buf[256];
  return kc_dim_str(g, d, buf, sizeof buf);
}

/* Known values of v as "[B,S,12,32]", or "unknown". */
static const char *known_str(kc_graph *g, kc_val v) {
  static char buf[512];
  char d[128];
  uint32_t n;
  const kc_dim *k = kc_value_known(g, v, &n);
  if (!k) return "unknown";
  strcpy(buf, "[");
  for (uint32_t i = 0; i < n; i++) {
    if (i) strcat(buf, ",");
    strcat(buf, kc_dim_str(g, k[i], d, sizeof d));
  }
  strcat(buf, "]");
  return buf;
}

static kc_dim parse_dim(kc_graph *g, const char *s) {
  kc_dim d;
  const char *p = s;
  assert_true(kc_dim_parse(g, &p, &d));
  assert_int_equal(*p, 0);
  return d;
}

static kc_val input(kc_graph *g, const char *name, kc_dtype t, const char *dims) {
  kc_dim d[KC_MAX_RANK];
  int r = 0;
  const char *p = dims;
  while (*p) {
    assert_true(kc_dim_parse(g, &p, &d[r++]));
    if (*p == ',') p++;
  }
  return kc_input(g, name, t, r, d);
}

static kc_val i64s(kc_graph *g, int n, const int64_t *v) { return kc_const_i64s(g, n, v); }

/* ---- dims ---------------------------------------------------------------------------------- */

static void t_dim_canonical(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_dim S = kc_sym(g, "S"), B = kc_sym(g, "B");
  assert_true(S < 0 && B < 0);
  assert_int_equal(kc_sym(g, "S"), S);
  assert_int_equal(kc_dim_mul(g, 3, 4), 12);
  assert_int_equal(kc_dim_add(g, 3, 4), 7);
  assert_int_equal(kc_dim_mul(g, S, 1), S);
  assert_int_equal(kc_dim_mul(g, 1, S), S);
  assert_int_equal(kc_dim_mul(g, S, 0), 0);
  assert_int_equal(kc_dim_add(g, S, 0), S);
  assert_int_equal(kc_dim_sub(g, S, S), 0);
  /* commutative and associative */
  kc_dim bs = kc_dim_mul(g, B, S);
  assert_int_equal(kc_dim_mul(g, S, B), bs);
  assert_int_equal(kc_dim_mul(g, bs, 12), kc_dim_mul(g, B, kc_dim_mul(g, S, 12)));
  assert_int_equal(kc_dim_mul(g, kc_dim_mul(g, 3, S), kc_dim_mul(g, B, 4)), kc_dim_mul(g, 12, bs));
  assert_int_equal(kc_dim_add(g, kc_dim_add(g, S, 1), B), kc_dim_add(g, B, kc_dim_add(g, 1, S)));
  assert_int_equal(kc_dim_add(g, S, S), kc_dim_mul(g, 2, S));
  assert_int_equal(kc_dim_sub(g, kc_dim_add(g, S, B), B), S);
  /* distributes: B*(S+1) = B*S + B */
  assert_int_equal(kc_dim_mul(g, B, kc_dim_add(g, S, 1)), kc_dim_add(g, bs, B));
  /* exact division and remainders */
  assert_int_equal(kc_dim_div(g, kc_dim_mul(g, 12, S), 12), S);
  assert_int_equal(kc_dim_div(g, kc_dim_mul(g, 384, bs), 384), bs);
  assert_int_equal(kc_dim_div(g, bs, S), B);
  assert_int_equal(kc_dim_div(g, kc_dim_mul(g, 384, bs), kc_dim_mul(g, 384, B)), S);
  assert_int_equal(kc_dim_div(g, S, S), 1);
  assert_int_equal(kc_dim_div(g, 7, 2), 3);
  assert_int_equal(kc_dim_mod(g, 7, 2), 1);
  assert_int_equal(kc_dim_mod(g, kc_dim_mul(g, 8, S), 4), 0);
  assert_int_equal(kc_dim_mod(g, kc_dim_add(g, kc_dim_mul(g, 8, S), 5), 4), 1);
  assert_int_equal(kc_dim_div(g, kc_dim_add(g, kc_dim_mul(g, 12, S), B), 12),
                   kc_dim_add(g, S, kc_dim_div(g, B, 12)));
  kc_dim q;
  assert_true(kc_dim_div_exact(g, kc_dim_mul(g, 12, S), 4, &q));
  assert_int_equal(q, kc_dim_mul(g, 3, S));
  assert_false(kc_dim_div_exact(g, S, 4, &q));
  assert_false(kc_dim_div_exact(g, 7, 2, &q));
  /* negative integers are expressions of their own */
  int64_t v;
  kc_dim m1 = kc_dim_int(g, -1);
  assert_true(KC_DIM_IS_SYM(m1));
  assert_true(kc_dim_const(g, m1, &v));
  assert_int_equal(v, -1);
  assert_int_equal(kc_dim_sub(g, 2, 3), m1);
  assert_int_equal(kc_dim_add(g, m1, 1), 0);
  assert_false(kc_dim_const(g, S, &v));
  kc_graph_free(g);
}

static void t_dim_print_parse(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_dim S = kc_sym(g, "S"), B = kc_sym(g, "B");
  assert_string_equal(dstr(g, 768), "768");
  assert_string_equal(dstr(g, S), "S");
  assert_string_equal(dstr(g, kc_dim_mul(g, S, B)), "B*S");
  assert_string_equal(dstr(g, kc_dim_mul(g, 12, kc_dim_mul(g, S, B))), "12*B*S");
  assert_string_equal(dstr(g, kc_dim_add(g, S, kc_dim_int(g, -1))), "S-1");
  assert_string_equal(dstr(g, kc_dim_sub(g, B, S)), "B-S");
  assert_string_equal(dstr(g, kc_dim_sub(g, 0, S)), "-S");
  assert_string_equal(dstr(g, kc_dim_int(g, -5)), "-5");
  assert_string_equal(dstr(g, kc_dim_div(g, kc_dim_add(g, S, 1), 2)), "(S+1)/2");
  assert_string_equal(dstr(g, kc_dim_mul(g, B, kc_dim_div(g, S, 2))), "B*(S/2)");
  /* parse(print(d)) == d, and print(parse(text)) == text for canonical text */
  static const char *const texts[] = {
      "S",        "B*S",     "12*B*S", "S-1",     "B-S",        "-S",     "-5",
      "P+S",      "B+B*S",   "S%4",    "(S+1)/2", "B*(S/2)",    "S/2*B",  "2*B-3*S+1",
      "-1*(S/2)", "(B+1)%S", "B*S/T",  "S/(B*T)", "-B*(T/2)+S", "S*unk0", "S/-2",
  };
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    kc_dim d = parse_dim(g, texts[i]);
    char buf[128];
    kc_dim_str(g, d, buf, sizeof buf);
    assert_int_equal(parse_dim(g, buf), d);
    if (strcmp(texts[i], "S/2*B") != 0) assert_string_equal(buf, texts[i]);
  }
  /* precedence and spaces */
  assert_int_equal(parse_dim(g, "B * S + 1"), kc_dim_add(g, kc_dim_mul(g, B, S), 1));
  assert_int_equal(parse_dim(g, "2*(S+1)"), kc_dim_add(g, kc_dim_mul(g, 2, S), 2));
  assert_int_equal(parse_dim(g, "S-2-1"), kc_dim_sub(g, S, 3));
  assert_int_equal(parse_dim(g, "12*S/12"), S);
  /* parsing stops where the expression cannot go on */
  const char *p = "B*S,768]";
  kc_dim d;
  assert_true(kc_dim_parse(g, &p, &d));
  assert_string_equal(p, ",768]");
  assert_int_equal(d, kc_dim_mul(g, B, S));
  p = "S-1]";
  assert_true(kc_dim_parse(g, &p, &d));
  assert_string_equal(p, "]");
  p = "S->";
  assert_true(kc_dim_parse(g, &p, &d));
  assert_string_equal(p, "->");
  p = ",";
  assert_false(kc_dim_parse(g, &p, &d));
  p = "(S";
  assert_false(kc_dim_parse(g, &p, &d));
  kc_graph_free(g);
}

/* Symbols made in the opposite order print the same expression the same way. */
static void t_dim_order_independent(void **st) {
  (void)st;
  kc_graph *g1 = kc_graph_new(ctx, "a"), *g2 = kc_graph_new(ctx, "b");
  kc_dim s1 = kc_sym(g1, "S"), b1 = kc_sym(g1, "B");
  kc_dim b2 = kc_sym(g2, "B"), s2 = kc_sym(g2, "S");
  char x[64], y[64];
  kc_dim e1 = kc_dim_add(g1, kc_dim_mul(g1, s1, b1), kc_dim_sub(g1, s1, 1));
  kc_dim e2 = kc_dim_add(g2, kc_dim_sub(g2, s2, 1), kc_dim_mul(g2, b2, s2));
  assert_string_equal(kc_dim_str(g1, e1, x, sizeof x), kc_dim_str(g2, e2, y, sizeof y));
  assert_string_equal(x, "B*S+S-1");
  /* import rebuilds the expression in the other graph */
  assert_int_equal(kc_dim_import(g2, g1, e1), e2);
  assert_int_equal(kc_dim_import(g2, g1, 5), 5);
  kc_graph_free(g1);
  kc_graph_free(g2);
}

static bool lookup(void *user, const char *name, int64_t *v) {
  (void)user;
  if (strcmp(name, "B") == 0)
    *v = 2;
  else if (strcmp(name, "S") == 0)
    *v = 7;
  else
    return false;
  return true;
}

static void t_dim_eval_fresh(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  int64_t v;
  assert_true(kc_dim_eval(g, parse_dim(g, "12*B*S"), lookup, NULL, &v));
  assert_int_equal(v, 168);
  assert_true(kc_dim_eval(g, parse_dim(g, "S-1"), lookup, NULL, &v));
  assert_int_equal(v, 6);
  assert_true(kc_dim_eval(g, parse_dim(g, "(S+2)/2"), lookup, NULL, &v));
  assert_int_equal(v, 4);
  assert_true(kc_dim_eval(g, parse_dim(g, "S%B"), lookup, NULL, &v));
  assert_int_equal(v, 1);
  assert_false(kc_dim_eval(g, parse_dim(g, "T*S"), lookup, NULL, &v));
  /* fresh symbols skip names already in use */
  kc_sym(g, "unk1");
  assert_string_equal(dstr(g, kc_dim_fresh(g)), "unk0");
  assert_string_equal(dstr(g, kc_dim_fresh(g)), "unk2");
  kc_graph_free(g);
}

/* ---- broadcasting --------------------------------------------------------------------------- */

static void t_broadcast(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "B,S,384"), b = input(g, "b", KC_F32, "384");
  assert_string_equal(th_type_str(g, kc_add(g, x, b)), "f32[B,S,384]");
  assert_string_equal(th_type_str(g, kc_add(g, b, x)), "f32[B,S,384]");
  kc_val m = input(g, "m", KC_F32, "B,1,S,S"), h = input(g, "h", KC_F32, "1,12,1,S");
  assert_string_equal(th_type_str(g, kc_mul(g, m, h)), "f32[B,12,S,S]");
  /* a symbol against an integer takes the integer; two symbols take the first */
  kc_val s = input(g, "s", KC_F32, "S"), t = input(g, "t", KC_F32, "T");
  kc_val five = input(g, "five", KC_F32, "5");
  assert_string_equal(th_type_str(g, kc_sub(g, s, five)), "f32[5]");
  assert_string_equal(th_type_str(g, kc_sub(g, five, s)), "f32[5]");
  assert_string_equal(th_type_str(g, kc_sub(g, s, t)), "f32[S]");
  /* comparisons give bool, where broadcasts three ways */
  kc_val c = kc_less(g, s, t);
  assert_string_equal(th_type_str(g, c), "bool[S]");
  assert_string_equal(th_type_str(g, kc_where(g, c, m, kc_const_f32(g, 0))), "f32[B,1,S,S]");
  assert_int_equal(kc_graph_status(g), KC_OK);
  /* two different integers */
  kc_val four = input(g, "four", KC_F32, "4");
  assert_int_equal(kc_add(g, five, four).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  assert_non_null(strstr(kc_last_error(ctx), "cannot broadcast [5] with [4]"));
  kc_graph_free(g);
}

static void t_dtype_errors(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "4"), i = input(g, "i", KC_I64, "4");
  assert_int_equal(kc_add(g, x, i).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_TYPE);
  assert_non_null(strstr(kc_last_error(ctx), "(add)"));
  kc_graph_free(g);
  g = kc_graph_new(ctx, "g");
  i = input(g, "i", KC_I64, "4");
  assert_int_equal(kc_sqrt(g, i).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_TYPE);
  assert_string_equal(th_type_str(g, kc_cast(g, i, KC_F16)), "f16[4]");
  kc_graph_free(g);
}

/* ---- reshape, transpose, matmul ----------------------------------------------------------- */

static void t_reshape(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "B,S,384");
  assert_string_equal(th_type_str(g, kc_reshape(g, x, i64s(g, 4, (int64_t[]){0, 0, 12, 32}))),
                      "f32[B,S,12,32]");
  assert_string_equal(th_type_str(g, kc_reshape(g, x, i64s(g, 2, (int64_t[]){-1, 384}))),
                      "f32[B*S,384]");
  assert_string_equal(th_type_str(g, kc_reshape(g, x, i64s(g, 3, (int64_t[]){0, -1, 32}))),
                      "f32[B,12*S,32]");
  assert_string_equal(th_type_str(g, kc_reshape(g, x, i64s(g, 1, (int64_t[]){-1}))),
                      "f32[384*B*S]");
  kc_val y = kc_reshape(g, x, i64s(g, 2, (int64_t[]){-1, 384}));
  assert_string_equal(th_type_str(g, kc_reshape(g, y, i64s(g, 3, (int64_t[]){0, 12, 32}))),
                      "f32[B*S,12,32]");
  assert_string_equal(th_type_str(g, kc_flatten(g, x, 2)), "f32[B*S,384]");
  assert_string_equal(th_type_str(g, kc_flatten(g, x, 0)), "f32[1,384*B*S]");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_graph_free(g);

  g = kc_graph_new(ctx, "g");
  kc_val z = input(g, "z", KC_F32, "2,3,4");
  assert_string_equal(th_type_str(g, kc_reshape(g, z, i64s(g, 2, (int64_t[]){-1, 6}))), "f32[4,6]");
  assert_int_equal(kc_reshape(g, z, i64s(g, 2, (int64_t[]){-1, 5})).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  kc_graph_free(g);
  g = kc_graph_new(ctx, "g");
  z = input(g, "z", KC_F32, "2,3,4");
  assert_int_equal(kc_reshape(g, z, i64s(g, 2, (int64_t[]){-1, -1})).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  kc_graph_free(g);
  /* an unknown shape of known length gives fresh dims of that rank */
  g = kc_graph_new(ctx, "g");
  z = input(g, "z", KC_F32, "2,3,4");
  kc_val shp = input(g, "shape", KC_I64, "2");
  assert_string_equal(th_type_str(g, kc_reshape(g, z, shp)), "f32[unk0,unk1]");
  kc_val shp2 = input(g, "shape2", KC_I64, "N");
  assert_int_equal(kc_reshape(g, z, shp2).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(kc_last_error(ctx), "input 1"));
  kc_graph_free(g);
}

/* [B,S,384] -> heads [B,12,S,32] -> scores [B,12,S,S] -> context -> [B,S,384] */
static void t_head_split(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "B,S,384");
  kc_val h = kc_reshape(g, x, i64s(g, 4, (int64_t[]){0, 0, 12, 32}));
  kc_val q = kc_transpose(g, h, 4, (int64_t[]){0, 2, 1, 3});
  assert_string_equal(th_type_str(g, q), "f32[B,12,S,32]");
  kc_val kt = kc_transpose(g, h, 4, (int64_t[]){0, 2, 3, 1});
  assert_string_equal(th_type_str(g, kt), "f32[B,12,32,S]");
  kc_val scores = kc_matmul(g, q, kt);
  assert_string_equal(th_type_str(g, scores), "f32[B,12,S,S]");
  kc_val p = kc_softmax(g, scores, -1);
  kc_val ctxv = kc_matmul(g, p, q);
  assert_string_equal(th_type_str(g, ctxv), "f32[B,12,S,32]");
  kc_val back = kc_transpose(g, ctxv, 4, (int64_t[]){0, 2, 1, 3});
  assert_string_equal(th_type_str(g, kc_reshape(g, back, i64s(g, 3, (int64_t[]){0, 0, -1}))),
                      "f32[B,S,384]");
  assert_string_equal(th_type_str(g, kc_transpose(g, x, 0, NULL)), "f32[384,S,B]");
  /* matmul with 1-D operands and batch broadcast */
  kc_val w = input(g, "w", KC_F32, "384,10"), v = input(g, "v", KC_F32, "384");
  assert_string_equal(th_type_str(g, kc_matmul(g, x, w)), "f32[B,S,10]");
  assert_string_equal(th_type_str(g, kc_matmul(g, x, v)), "f32[B,S]");
  assert_string_equal(th_type_str(g, kc_matmul(g, v, w)), "f32[10]");
  kc_val a3 = input(g, "a3", KC_F32, "1,S,K"), b3 = input(g, "b3", KC_F32, "B,K,7");
  assert_string_equal(th_type_str(g, kc_matmul(g, a3, b3)), "f32[B,S,7]");
  kc_val ga = input(g, "ga", KC_F32, "M,384");
  assert_string_equal(th_type_str(g, kc_gemm(g, ga, w, input(g, "c", KC_F32, "10"), 1, 1, 0, 0)),
                      "f32[M,10]");
  kc_val wt = input(g, "wt", KC_F32, "10,384");
  assert_string_equal(th_type_str(g, kc_gemm(g, ga, wt, (kc_val){0}, 1, 1, 0, 1)), "f32[M,10]");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_graph_free(g);
}

/* ---- known values --------------------------------------------------------------------------- */

static void t_shape_chain(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "B,S,384");
  kc_val sh = kc_shape(g, x);
  assert_string_equal(th_type_str(g, sh), "i64[3]");
  assert_string_equal(known_str(g, sh), "[B,S,384]");
  kc_val b = kc_gather(g, sh, kc_const_i64(g, 0), 0);
  kc_val s = kc_gather(g, sh, kc_const_i64(g, 1), 0);
  assert_string_equal(th_type_str(g, b), "i64[]");
  assert_string_equal(known_str(g, s), "[S]");
  kc_val ub = kc_unsqueeze(g, b, 1, (int64_t[]){0}), us = kc_unsqueeze(g, s, 1, (int64_t[]){0});
  assert_string_equal(th_type_str(g, ub), "i64[1]");
  kc_val parts[4] = {ub, us, i64s(g, 1, (int64_t[]){12}), i64s(g, 1, (int64_t[]){32})};
  kc_val cat = kc_concat(g, 4, parts, 0);
  assert_string_equal(known_str(g, cat), "[B,S,12,32]");
  assert_string_equal(th_type_str(g, kc_reshape(g, x, cat)), "f32[B,S,12,32]");
  /* arithmetic on shape values: [B*S, 384] and [B, S-1] */
  kc_val bs = kc_unsqueeze(g, kc_mul(g, b, s), 1, (int64_t[]){0});
  kc_val cat2 = kc_concat(g, 2, (kc_val[]){bs, i64s(g, 1, (int64_t[]){384})}, 0);
  assert_string_equal(th_type_str(g, kc_reshape(g, x, cat2)), "f32[B*S,384]");
  kc_val s1 = kc_sub(g, s, kc_const_i64(g, 1));
  assert_string_equal(known_str(g, s1), "[S-1]");
  /* slices of the shape, cast, squeeze, range, constant_of_shape, expand */
  kc_val tail = kc_slice(g, sh, i64s(g, 1, (int64_t[]){1}), i64s(g, 1, (int64_t[]){INT64_MAX}),
                         (kc_val){0}, (kc_val){0});
  assert_string_equal(known_str(g, tail), "[S,384]");
  kc_val head = kc_slice(g, sh, i64s(g, 1, (int64_t[]){0}), i64s(g, 1, (int64_t[]){-1}),
                         (kc_val){0}, (kc_val){0});
  assert_string_equal(known_str(g, head), "[B,S]");
  assert_string_equal(known_str(g, kc_cast(g, head, KC_I32)), "[B,S]");
  assert_string_equal(known_str(g, kc_squeeze(g, ub, 0, NULL)), "[B]");
  kc_val r = kc_range(g, kc_const_i64(g, 0), s, kc_const_i64(g, 1));
  assert_string_equal(th_type_str(g, r), "i64[S]");
  kc_val r3 = kc_range(g, kc_const_i64(g, 2), kc_const_i64(g, 11), kc_const_i64(g, 3));
  assert_string_equal(known_str(g, r3), "[2,5,8]");
  kc_val fr = kc_range(g, kc_const_f32(g, 0), kc_const_f32(g, 1), kc_const_f32(g, 0.25f));
  assert_string_equal(th_type_str(g, fr), "f32[4]");
  kc_val zeros = kc_constant_of_shape(g, head, (kc_val){0});
  assert_string_equal(th_type_str(g, zeros), "f32[B,S]");
  kc_val ones = kc_constant_of_shape(g, i64s(g, 1, (int64_t[]){3}), kc_const_i64(g, 1));
  assert_string_equal(th_type_str(g, ones), "i64[3]");
  assert_string_equal(known_str(g, ones), "[1,1,1]");
  kc_val bias = input(g, "bias", KC_F32, "1,1,384");
  assert_string_equal(th_type_str(g, kc_expand(g, bias, sh)), "f32[B,S,384]");
  /* exporters' where(equal(shape, -1), 1, shape) */
  kc_val want = i64s(g, 3, (int64_t[]){-1, 1, 384});
  kc_val sel = kc_where(g, kc_equal(g, want, kc_const_i64(g, -1)), ones, want);
  assert_string_equal(known_str(g, sel), "[1,1,384]");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_graph_free(g);
}

/* A scalar constant of dtype t holding bits (f16 needs its bit pattern). */
static kc_val scalar(kc_graph *g, kc_dtype t, const void *bits) {
  return kc_constant(g, t, 0, NULL, bits);
}

/* S of x: f32[B,S,64] as a known i64 scalar. */
static kc_val seq_of(kc_graph *g, kc_val x) {
  return kc_gather(g, kc_shape(g, x), kc_const_i64(g, 1), 0);
}

static void t_dim_lower(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  int64_t lo;
  assert_true(kc_dim_lower(g, parse_dim(g, "S"), &lo) && lo == 0);
  assert_true(kc_dim_lower(g, parse_dim(g, "S+1"), &lo) && lo == 1);
  assert_true(kc_dim_lower(g, parse_dim(g, "2*B*S+3"), &lo) && lo == 3);
  assert_true(kc_dim_lower(g, parse_dim(g, "(S+1)/2"), &lo) && lo == 0);
  assert_true(kc_dim_lower(g, parse_dim(g, "S%3"), &lo) && lo == 0);
  assert_true(kc_dim_lower(g, parse_dim(g, "-5"), &lo) && lo == -5);
  assert_true(kc_dim_lower(g, parse_dim(g, "S-1"), &lo) && lo == -1);
  assert_false(kc_dim_lower(g, parse_dim(g, "-S"), &lo));
  assert_false(kc_dim_lower(g, parse_dim(g, "(S-1)/2"), &lo));
  assert_false(kc_dim_lower(g, parse_dim(g, "S/T"), &lo)); /* T may be 0 */
  kc_graph_free(g);
}

/* Shape values through float casts, float ranges, division, min/max and comparisons. */
static void t_known_arith(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "B,S,64");
  kc_val s = seq_of(g, x);
  /* Cast to float and back stays S; a float range over it has S elements */
  kc_val sf = kc_cast(g, s, KC_F32);
  assert_string_equal(known_str(g, sf), "[S]");
  assert_string_equal(known_str(g, kc_cast(g, sf, KC_I64)), "[S]");
  assert_string_equal(known_str(g, kc_cast(g, kc_cast(g, s, KC_F64), KC_I32)), "[S]");
  kc_val r = kc_range(g, kc_const_f32(g, 0), sf, kc_const_f32(g, 1));
  assert_string_equal(th_type_str(g, r), "f32[S]");
  r = kc_range(g, kc_const_f32(g, 0), sf, kc_const_f32(g, 2));
  assert_string_equal(th_type_str(g, r), "f32[(S+1)/2]");
  r = kc_range(g, kc_sub(g, sf, kc_const_f32(g, 1)), kc_const_f32(g, -1), kc_const_f32(g, -1));
  assert_string_equal(th_type_str(g, r), "f32[S]");
  /* the start may pass the limit: max(5 - S, 0) has no dim form, so the size is unknown */
  r = kc_range(g, s, kc_const_i64(g, 5), kc_const_i64(g, 1));
  assert_non_null(strstr(th_type_str(g, r), "unk"));
  /* known contents of a short float range, and of constants: the values the kernels compute */
  kc_val fr = kc_range(g, kc_const_f32(g, 3), kc_const_f32(g, 7), kc_const_f32(g, 2));
  assert_string_equal(known_str(g, fr), "[3,5]");
  assert_string_equal(known_str(g, kc_cast(g, kc_const_i64(g, 16777217), KC_F32)), "[16777216]");
  assert_string_equal(known_str(g, kc_cast(g, kc_const_i64(g, 2147483648), KC_I32)),
                      "[-2147483648]");
  assert_string_equal(known_str(g, kc_cast(g, kc_const_i64(g, 2049), KC_F16)), "[2048]");
  assert_string_equal(known_str(g, kc_cast(g, kc_const_i64(g, 70000), KC_F16)), "unknown");
  assert_string_equal(known_str(g, kc_cast(g, kc_const_i64(g, 3), KC_BOOL)), "[1]");
  assert_string_equal(known_str(g, kc_cast(g, s, KC_BOOL)), "unknown"); /* S may be 0 */
  assert_string_equal(known_str(g, kc_cast(g, kc_add(g, s, kc_const_i64(g, 1)), KC_BOOL)), "[1]");
  assert_string_equal(known_str(g, kc_const_f32(g, 0.5f)), "unknown");
  /* f16 holds integers exactly only up to 2048: a symbolic f16 value is not known */
  kc_val sh = kc_cast(g, s, KC_F16);
  assert_string_equal(known_str(g, sh), "unknown");
  uint16_t h0 = 0, h1 = 0x3c00; /* 0.0, 1.0 */
  r = kc_range(g, scalar(g, KC_F16, &h0), sh, scalar(g, KC_F16, &h1));
  assert_non_null(strstr(th_type_str(g, r), "unk"));
  /* Div: integers truncate (floor only for a numerator >= 0), floats divide exactly */
  kc_val two = kc_const_i64(g, 2);
  assert_string_equal(known_str(g, kc_div(g, s, two)), "[S/2]");
  assert_string_equal(known_str(g, kc_div(g, kc_mul(g, s, two), two)), "[S]");
  assert_string_equal(known_str(g, kc_div(g, kc_sub(g, s, kc_const_i64(g, 1)), two)), "unknown");
  assert_string_equal(known_str(g, kc_div(g, kc_const_i64(g, -7), two)), "[-3]");
  assert_string_equal(known_str(g, kc_div(g, sf, kc_const_f32(g, 2))), "unknown"); /* S/2: x.5 */
  assert_string_equal(
      known_str(g, kc_div(g, kc_mul(g, sf, kc_const_f32(g, 4)), kc_const_f32(g, 2))), "[2*S]");
  assert_string_equal(known_str(g, kc_div(g, kc_const_f32(g, 7), kc_const_f32(g, 2))), "unknown");
  /* min/max with a provable order only */
  kc_val s1 = kc_add(g, s, kc_const_i64(g, 1));
  assert_string_equal(known_str(g, kc_min(g, s, s1)), "[S]");
  assert_string_equal(known_str(g, kc_max(g, s, s1)), "[S+1]");
  assert_string_equal(known_str(g, kc_max(g, s, kc_const_i64(g, 0))), "[S]");
  assert_string_equal(known_str(g, kc_min(g, s, kc_const_i64(g, 64))), "unknown");
  /* comparisons decided by the sign of the difference */
  assert_string_equal(known_str(g, kc_equal(g, s, kc_const_i64(g, -1))), "[0]");
  assert_string_equal(known_str(g, kc_equal(g, s1, kc_const_i64(g, 0))), "[0]");
  assert_string_equal(known_str(g, kc_equal(g, s, kc_const_i64(g, 1))), "unknown");
  assert_string_equal(known_str(g, kc_less(g, s, s1)), "[1]");
  assert_string_equal(known_str(g, kc_greater(g, s, s1)), "[0]");
  assert_string_equal(known_str(g, kc_less(g, s, kc_const_i64(g, 0))), "[0]");
  assert_string_equal(known_str(g, kc_less(g, s, kc_const_i64(g, 5))), "unknown");
  assert_string_equal(known_str(g, kc_equal(g, sf, kc_const_f32(g, -1))), "[0]");
  /* a float constant_of_shape of an integer value is known, a fraction is not */
  kc_val shp = i64s(g, 1, (int64_t[]){2});
  assert_string_equal(known_str(g, kc_constant_of_shape(g, shp, kc_const_f32(g, 1))), "[1,1]");
  assert_string_equal(known_str(g, kc_constant_of_shape(g, shp, kc_const_f32(g, 0.5f))), "unknown");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_graph_free(g);
}

/* Every requirement of node ni, as "dim: text" lines. */
static const char *reqs_str(kc_graph *g, kc_val v) {
  static char buf[4096];
  const kc_node *n = &g->nodes[kc_value_of(g, v)->def - 1];
  kc_requirement req[KC_REQ_MAX];
  uint32_t k = kc_node_requirements(g, n, req, KC_REQ_MAX);
  buf[0] = 0;
  for (uint32_t i = 0; i < k; i++) {
    char d[128], t[1024];
    size_t len = strlen(buf);
    snprintf(buf + len, sizeof buf - len, "%s%s: %s", i ? "\n" : "",
             kc_dim_str(g, req[i].dim, d, sizeof d),
             kc_requirement_text(g, n, &req[i], t, sizeof t));
  }
  return buf;
}

static void t_requirements(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "B,S,6");
  kc_val s = seq_of(g, x);
  /* a table of 64 rows sliced to S rows: S must not pass 64, where ONNX would clamp */
  kc_val table = input(g, "table", KC_F32, "64,8");
  kc_val us = kc_unsqueeze(g, s, 1, (int64_t[]){0});
  kc_val rows = kc_slice(g, table, i64s(g, 1, (int64_t[]){0}), us, (kc_val){0}, (kc_val){0});
  assert_string_equal(th_type_str(g, rows), "f32[S,8]");
  assert_string_equal(reqs_str(g, rows),
                      "-S+64: node %9 (slice) was compiled assuming its bounds on axis 0 lie "
                      "within its size 64 (ONNX clamps bounds past the end)");
  /* table[-S:]: a start provably <= 0 counts from the end (S = 0 would not), so 64-S..64 */
  kc_val neg = kc_unsqueeze(g, kc_neg(g, s), 1, (int64_t[]){0});
  kc_val big = i64s(g, 1, (int64_t[]){INT64_MAX});
  kc_val tail = kc_slice(g, table, neg, big, (kc_val){0}, (kc_val){0});
  assert_string_equal(th_type_str(g, tail), "f32[S,8]");
  assert_non_null(strstr(reqs_str(g, tail), "S-1: node "));
  assert_non_null(strstr(reqs_str(g, tail), "\n-S+64: node "));
  kc_val mask = input(g, "mask", KC_I64, "B,P");
  kc_val last = kc_slice(g, mask, neg, big, i64s(g, 1, (int64_t[]){1}), (kc_val){0});
  assert_string_equal(th_type_str(g, last), "i64[B,S]");
  assert_non_null(strstr(reqs_str(g, last), "S-1: node "));
  assert_non_null(strstr(reqs_str(g, last), "\nP-S: node "));
  /* an end provably past the dim clamps, needing nothing */
  kc_val past = kc_unsqueeze(g, kc_add(g, s, kc_const_i64(g, 5)), 1, (int64_t[]){0});
  kc_val all =
      kc_slice(g, x, i64s(g, 1, (int64_t[]){1}), past, i64s(g, 1, (int64_t[]){1}), (kc_val){0});
  assert_string_equal(th_type_str(g, all), "f32[B,S-1,6]");
  /* the constant start 1 must be <= S, and nothing is needed for the end */
  assert_string_equal(reqs_str(g, all),
                      "S-1: node %24 (slice) was compiled assuming its bounds on axis 1 lie "
                      "within its size S (ONNX clamps bounds past the end)");
  /* a float carrying S: S <= 2^24, which f32 holds exactly; i64 needs nothing */
  kc_val sf = kc_cast(g, s, KC_F32);
  assert_string_equal(reqs_str(g, sf),
                      "-S+16777216: node %25 (cast) was compiled assuming its result %25 (f32) "
                      "holds the shape values it is computed from exactly (within [-16777216, "
                      "16777216])");
  assert_string_equal(reqs_str(g, kc_cast(g, sf, KC_I64)), "");
  /* a short range of S-based floats: only its largest element is checked */
  kc_val fr = kc_range(g, sf, kc_add(g, sf, kc_const_f32(g, 3)), kc_const_f32(g, 1));
  assert_string_equal(known_str(g, fr), "[S,S+1,S+2]");
  assert_non_null(strstr(reqs_str(g, fr), "-S+16777214: "));
  assert_null(strstr(reqs_str(g, fr), "\n"));
  /* reshape of [B,S,6] to [-1,4]: 6*B*S / 4 is not exact, the element counts must agree */
  kc_val rs = kc_reshape(g, x, i64s(g, 2, (int64_t[]){-1, 4}));
  const char *rq = reqs_str(g, rs);
  assert_non_null(strstr(rq, "(reshape) was compiled assuming its input's 6*B*S elements fill"));
  assert_non_null(strstr(rq, "\n"));
  kc_val ok = kc_reshape(g, x, i64s(g, 2, (int64_t[]){-1, 3}));
  assert_string_equal(th_type_str(g, ok), "f32[2*B*S,3]");
  assert_string_equal(reqs_str(g, ok), "");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_graph_free(g);
}

static void t_cumsum(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val in[2] = {input(g, "mask", KC_I64, "B,S"), kc_const_i64(g, -1)}, out;
  uint32_t ni = kc_graph_add_node(g, KC_OP_CUMSUM, 2, in, 1, &out);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  assert_string_equal(th_type_str(g, out), "i64[B,S]");
  int axis;
  assert_true(kc_cumsum_axis(g, &g->nodes[ni], &axis) && axis == 1);
  in[1] = kc_const_i64(g, 2);
  ni = kc_graph_add_node(g, KC_OP_CUMSUM, 2, in, 1, &out);
  assert_int_equal(kc_node_infer(g, ni), KC_ERR_SHAPE);
  assert_non_null(strstr(kc_last_error(ctx), "axis 2 out of range for rank 2"));
  in[1] = input(g, "axis", KC_I32, ""); /* known at run time only: still typed */
  ni = kc_graph_add_node(g, KC_OP_CUMSUM, 2, in, 1, &out);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  assert_false(kc_cumsum_axis(g, &g->nodes[ni], &axis));
  in[0] = input(g, "b", KC_BOOL, "S");
  ni = kc_graph_add_node(g, KC_OP_CUMSUM, 2, in, 1, &out);
  assert_int_equal(kc_node_infer(g, ni), KC_ERR_TYPE);
  kc_graph_free(g);
}

/* ---- the other ops ------------------------------------------------------------------------- */

static void t_movement(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "B,S,2304");
  kc_val parts[3];
  assert_int_equal(kc_split(g, x, -1, 3, NULL, parts), KC_OK);
  assert_string_equal(th_type_str(g, parts[2]), "f32[B,S,768]");
  assert_int_equal(kc_split(g, x, 2, 2, (int64_t[]){2048, 256}, parts), KC_OK);
  assert_string_equal(th_type_str(g, parts[1]), "f32[B,S,256]");
  kc_val y = input(g, "y", KC_F32, "10,S");
  assert_int_equal(kc_split(g, y, 0, 3, NULL, parts), KC_OK);
  assert_string_equal(th_type_str(g, parts[0]), "f32[4,S]");
  assert_string_equal(th_type_str(g, parts[2]), "f32[2,S]");
  assert_int_equal(kc_split(g, y, 1, 2, NULL, parts), KC_OK);
  assert_string_equal(th_type_str(g, parts[0]), "f32[10,(S+1)/2]");
  assert_string_equal(th_type_str(g, parts[1]), "f32[10,S-(S+1)/2]");
  /* slice: symbolic ranges and clamped integer ones */
  kc_val ids = input(g, "ids", KC_I64, "B,S");
  kc_val sl = kc_slice(g, ids, i64s(g, 1, (int64_t[]){1}), i64s(g, 1, (int64_t[]){INT64_MAX}),
                       i64s(g, 1, (int64_t[]){1}), (kc_val){0});
  assert_string_equal(th_type_str(g, sl), "i64[B,S-1]");
  kc_val z = input(g, "z", KC_F32, "10,20");
  kc_val sz = kc_slice(g, z, i64s(g, 2, (int64_t[]){-3, 0}), i64s(g, 2, (int64_t[]){100, 20}),
                       i64s(g, 2, (int64_t[]){0, 1}), i64s(g, 2, (int64_t[]){1, 3}));
  assert_string_equal(th_type_str(g, sz), "f32[3,7]");
  kc_val rev = kc_slice(g, z, i64s(g, 1, (int64_t[]){-1}), i64s(g, 1, (int64_t[]){INT64_MIN}),
                        i64s(g, 1, (int64_t[]){0}), i64s(g, 1, (int64_t[]){-1}));
  assert_string_equal(th_type_str(g, rev), "f32[10,20]");
  /* squeeze / unsqueeze */
  kc_val u = kc_unsqueeze(g, ids, 2, (int64_t[]){1, -1});
  assert_string_equal(th_type_str(g, u), "i64[B,1,S,1]");
  assert_string_equal(th_type_str(g, kc_squeeze(g, u, 0, NULL)), "i64[B,S]");
  assert_string_equal(th_type_str(g, kc_squeeze(g, u, 1, (int64_t[]){-1})), "i64[B,1,S]");
  /* gather of embeddings, concat, trilu */
  kc_val emb = input(g, "emb", KC_F32, "50257,768");
  assert_string_equal(th_type_str(g, kc_gather(g, emb, ids, 0)), "f32[B,S,768]");
  kc_val c = kc_concat(g, 2, (kc_val[]){x, x}, 1);
  assert_string_equal(th_type_str(g, c), "f32[B,2*S,2304]");
  kc_val sq = input(g, "sq", KC_F32, "S,S");
  assert_string_equal(th_type_str(g, kc_trilu(g, sq, kc_const_i64(g, 1), 1)), "f32[S,S]");
  /* reductions */
  assert_string_equal(th_type_str(g, kc_reduce_mean(g, x, 1, (int64_t[]){-1}, 1)), "f32[B,S,1]");
  assert_string_equal(th_type_str(g, kc_reduce_sum(g, x, 2, (int64_t[]){0, 2}, 0)), "f32[S]");
  assert_string_equal(th_type_str(g, kc_reduce_max(g, x, 0, NULL, 0)), "f32[]");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_graph_free(g);
}

static void t_fused(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "B,S,768");
  kc_val gam = input(g, "gamma", KC_F32, "768"), bet = input(g, "beta", KC_F32, "768");
  assert_string_equal(th_type_str(g, kc_layer_norm(g, x, gam, bet, 1e-5f)), "f32[B,S,768]");
  assert_string_equal(th_type_str(g, kc_rms_norm(g, x, gam, 1e-6f)), "f32[B,S,768]");
  assert_string_equal(th_type_str(g, kc_layer_normalization(g, x, gam, (kc_val){0}, -1, 1e-5f)),
                      "f32[B,S,768]");
  kc_attention_desc d = {.heads = 12, .mask = KC_MASK_CAUSAL};
  assert_string_equal(th_type_str(g, kc_attention(g, x, x, x, (kc_val){0}, &d)), "f32[B,S,768]");
  kc_val kv = input(g, "kv", KC_F32, "B,T,256");
  kc_attention_desc gqa = {.heads = 12, .kv_heads = 4, .mask = KC_MASK_PADDING};
  kc_val pad = input(g, "pad", KC_BOOL, "B,T");
  assert_string_equal(th_type_str(g, kc_attention(g, x, kv, kv, pad, &gqa)), "f32[B,S,768]");
  kc_val w = input(g, "w", KC_F32, "768,3072"), bias = input(g, "bias", KC_F32, "3072");
  assert_string_equal(th_type_str(g, kc_matmul_ep(g, x, w, bias, (kc_val){0}, KC_ACT_GELU)),
                      "f32[B,S,3072]");
  kc_val cosc = input(g, "cos", KC_F32, "2048,32"), sinc = input(g, "sin", KC_F32, "2048,32");
  kc_val pos = input(g, "pos", KC_I64, "B,S");
  assert_string_equal(th_type_str(g, kc_rotary(g, x, cosc, sinc, pos, 12, 0)), "f32[B,S,768]");
  assert_int_equal(kc_graph_status(g), KC_OK);
  /* attention with a past: present K/V grow by S_kv */
  kc_val pk = input(g, "past_k", KC_F32, "B,12,P,64"), pv = input(g, "past_v", KC_F32, "B,12,P,64");
  kc_val in[6] = {x, x, x, {0}, pk, pv}, outs[3];
  uint32_t ni = kc_graph_add_node(g, KC_OP_ATTENTION, 6, in, 3, outs);
  kc_node_set_int(g, ni, "heads", 12);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  assert_string_equal(th_type_str(g, outs[0]), "f32[B,S,768]");
  assert_string_equal(th_type_str(g, outs[1]), "f32[B,12,P+S,64]");
  /* a fused region: outputs typed from its body */
  kc_val a = input(g, "a", KC_F32, "B,S,768");
  kc_val fout;
  ni = kc_graph_add_node(g, KC_OP_FUSED, 2, (kc_val[]){x, a}, 1, &fout);
  kc_graph *body = kc_graph_new_body(g, "region");
  g->nodes[ni].body = body;
  kc_val b0 = kc_graph_add_input(body, "x", KC_F32, 0, NULL);
  kc_val b1 = kc_graph_add_input(body, "a", KC_F32, 0, NULL);
  body->vals[b0.id].rank = body->vals[b1.id].rank = -1; /* untyped: taken from the node */
  kc_val sum, r;
  kc_graph_add_node(body, KC_OP_ADD, 2, (kc_val[]){b0, b1}, 1, &sum);
  kc_graph_add_node(body, KC_OP_RELU, 1, &sum, 1, &r);
  kc_output(body, r, NULL);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  assert_string_equal(th_type_str(g, fout), "f32[B,S,768]");
  assert_string_equal(th_type_str(body, r), "f32[B,S,768]");
  kc_graph_free(g);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void t_errors(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "g");
  kc_val x = input(g, "x", KC_F32, "B,S,384"), w = input(g, "w", KC_F32, "256,10");
  kc_val bad = kc_matmul(g, x, w);
  assert_int_equal(bad.id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  const char *err = kc_last_error(ctx);
  assert_non_null(strstr(err, "(matmul)"));
  assert_non_null(strstr(err, "inner dims differ: [B,S,384] @ [256,10]"));
  /* a failed value short-circuits without a new message */
  char before[512];
  snprintf(before, sizeof before, "%s", err);
  assert_int_equal(kc_relu(g, bad).id, 0);
  assert_int_equal(kc_add(g, x, bad).id, 0);
  assert_string_equal(kc_last_error(ctx), before);
  kc_graph_free(g);

  /* a bad axis, on a node with an ONNX name */
  g = kc_graph_new(ctx, "g");
  x = input(g, "x", KC_F32, "B,S,384");
  kc_val out;
  uint32_t ni = kc_graph_add_node(g, KC_OP_SOFTMAX, 1, &x, 1, &out);
  kc_node_set_int(g, ni, "axis", 3);
  g->nodes[ni].loc = "Softmax_7";
  assert_int_equal(kc_node_infer(g, ni), KC_ERR_SHAPE);
  assert_non_null(strstr(kc_last_error(ctx), "Softmax_7"));
  assert_non_null(strstr(kc_last_error(ctx), "axis 3 out of range for rank 3"));
  kc_node_set_int(g, ni, "axis", -3);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  /* wrong arity is structural */
  ni = kc_graph_add_node(g, KC_OP_ADD, 1, &x, 1, &out);
  assert_int_equal(kc_node_infer(g, ni), KC_ERR_VERIFY);
  /* concat of mismatched dims, gather out of range, transpose of a non-permutation */
  kc_val y = input(g, "y", KC_F32, "B,7,384");
  kc_val z = input(g, "z", KC_F32, "B,5,384");
  assert_int_equal(kc_concat(g, 2, (kc_val[]){y, z}, 2).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  kc_graph_free(g);
  g = kc_graph_new(ctx, "g");
  z = input(g, "z", KC_F32, "5,4");
  assert_int_equal(kc_gather(g, z, kc_const_i64(g, 5), 0).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  kc_graph_free(g);
  g = kc_graph_new(ctx, "g");
  z = input(g, "z", KC_F32, "5,4");
  assert_int_equal(kc_transpose(g, z, 2, (int64_t[]){0, 0}).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  kc_graph_free(g);
  g = kc_graph_new(ctx, "g");
  z = input(g, "z", KC_F32, "5,4");
  kc_attention_desc d = {.heads = 3};
  assert_int_equal(kc_attention(g, z, z, z, (kc_val){0}, &d).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  kc_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_dim_canonical),
      cmocka_unit_test(t_dim_print_parse),
      cmocka_unit_test(t_dim_order_independent),
      cmocka_unit_test(t_dim_eval_fresh),
      cmocka_unit_test(t_broadcast),
      cmocka_unit_test(t_dtype_errors),
      cmocka_unit_test(t_reshape),
      cmocka_unit_test(t_head_split),
      cmocka_unit_test(t_shape_chain),
      cmocka_unit_test(t_dim_lower),
      cmocka_unit_test(t_known_arith),
      cmocka_unit_test(t_requirements),
      cmocka_unit_test(t_cumsum),
      cmocka_unit_test(t_movement),
      cmocka_unit_test(t_fused),
      cmocka_unit_test(t_errors),
  };
  ctx = kc_context_new();
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  kc_context_free(ctx);
  return rc;
}
