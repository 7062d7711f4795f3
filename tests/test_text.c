/*
 * tests/test_text.c - the text form of the IR (ir/print.c, ir/parse.c).
 *
 * Checks: every .kir file in tests/kir/golden is exactly what the printer prints for it, and
 * prints the same again after a second parse; together the golden files use every op of
 * ops.def; floats keep their bits through constants and attributes; tricky strings and absent
 * results round-trip; every tests/kir/invalid/parse-*.kir fails with KC_ERR_PARSE, a
 * file:line:col prefix and the text of its first line `# expect: TEXT`.
 * argv[2] is the tests/ folder (tests/CMakeLists.txt passes it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "tests/harness.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *tests_dir = ".";

/* Print the first differing line of two texts, so a failing golden file is easy to fix. */
static void show_diff(const char *path, const char *want, const char *got) {
  int line = 1;
  const char *a = want, *b = got;
  while (*a && *a == *b) {
    if (*a == '\n') line++;
    a++, b++;
  }
  while (a > want && a[-1] != '\n')
    a--, b--;
  fprintf(stderr, "%s:%d: printed text differs\n  file:    %.*s\n  printed: %.*s\n", path, line,
          (int)strcspn(a, "\n"), a, (int)strcspn(b, "\n"), b);
}

static void mark_ops(const kc_graph *g, bool *seen, bool *kinds) {
  for (uint32_t i = 0; i < g->nnodes; i++) {
    seen[g->nodes[i].op] = true;
    for (uint32_t j = 0; j < g->nodes[i].nattr; j++)
      kinds[g->nodes[i].attrs[j].kind] = true;
    if (g->nodes[i].body) mark_ops(g->nodes[i].body, seen, kinds);
  }
}

static void t_golden(void **st) {
  (void)st;
  int n;
  char **files = th_kir_files(tests_dir, "golden", "", &n);
  assert_true(n >= 22);
  bool seen[KC_OP_COUNT] = {0}, kinds[KC_ATTR_TENSOR + 1] = {0};
  kc_context *ctx = kc_context_new();
  int failures = 0;
  for (int i = 0; i < n; i++) {
    char *want = th_read_file(files[i], NULL);
    assert_non_null(want);
    kc_graph *g = NULL, *g2 = NULL;
    if (kc_graph_parse(ctx, want, files[i], &g) != KC_OK) {
      fprintf(stderr, "%s\n", kc_last_error(ctx));
      failures++;
      free(want);
      continue;
    }
    mark_ops(g, seen, kinds);
    char *got = kc_graph_print_str(g);
    assert_non_null(got);
    if (strcmp(want, got) != 0) {
      show_diff(files[i], want, got);
      failures++;
    }
    assert_int_equal(kc_graph_parse(ctx, got, "printed", &g2), KC_OK);
    char *again = kc_graph_print_str(g2);
    assert_string_equal(got, again);
    free(again);
    free(got);
    free(want);
    kc_graph_free(g2);
    kc_graph_free(g);
  }
  for (int op = 1; op < KC_OP_COUNT; op++)
    if (!seen[op]) fprintf(stderr, "no golden file uses op '%s'\n", kc_ops[op].name), failures++;
  /* floats lists have no op in ops.def yet; t_floats covers them */
  kc_attr_kind need[] = {KC_ATTR_INT,  KC_ATTR_FLOAT, KC_ATTR_STRING,
                         KC_ATTR_INTS, KC_ATTR_DTYPE, KC_ATTR_TENSOR};
  for (size_t k = 0; k < sizeof need / sizeof *need; k++)
    if (!kinds[need[k]])
      fprintf(stderr, "no golden file has attribute kind %d\n", need[k]), failures++;
  assert_int_equal(failures, 0);
  kc_context_free(ctx);
  th_free_list(files, n);
}

/* A constant node of a 1-D tensor with n elements of dt. */
static kc_val add_constant(kc_graph *g, kc_dtype dt, int64_t n, const void *data) {
  kc_val v;
  uint32_t ni = kc_graph_add_node(g, KC_OP_CONSTANT, 0, NULL, 1, &v);
  kc_node_set_tensor(g, ni, "value", kc_graph_add_tensor(g, NULL, dt, 1, &n, data, true));
  kc_value *val = kc_value_of(g, v);
  val->dtype = dt;
  val->rank = 1;
  val->dims[0] = n;
  kc_output(g, v, NULL);
  return v;
}

/* Same bits, except that any NaN equals any NaN (payloads are not kept). */
static void assert_same_floats(kc_dtype dt, const void *a, const void *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (dt == KC_F32) {
      float x = ((const float *)a)[i], y = ((const float *)b)[i];
      if (isnan(x))
        assert_true(isnan(y));
      else
        assert_memory_equal(&x, &y, sizeof x);
    } else {
      double x = ((const double *)a)[i], y = ((const double *)b)[i];
      if (isnan(x))
        assert_true(isnan(y));
      else
        assert_memory_equal(&x, &y, sizeof x);
    }
  }
}

static void t_floats(void **st) {
  (void)st;
  static const float f32s[] = {1e-05f,        0.1f,     1.0f / 3,  -0.0f, 1e-45f,
                               3.4028235e38f, INFINITY, -INFINITY, NAN,   16777216.0f};
  static const double f64s[] = {
      1e-05,    0.1,       1.0 / 3, -0.0,  4.9e-324,    1.7976931348623157e308,
      INFINITY, -INFINITY, NAN,     1e-45, 3.4028235e38};
  static const uint16_t f16s[] = {0x0001, 0x7bff, 0x3555, 0x8000, 0x7c00, 0xfc00, 0x03ff};
  static const uint16_t bf16s[] = {0x0001, 0x7f7f, 0x3eab, 0x8000, 0x7f80, 0x3dcd};
  const size_t nf32 = sizeof f32s / sizeof *f32s, nf64 = sizeof f64s / sizeof *f64s;
  const size_t nf16 = sizeof f16s / 2, nbf16 = sizeof bf16s / 2;
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "floats");
  kc_dim d2 = 2;
  kc_val x = kc_graph_add_input(g, "x", KC_F32, 1, &d2);
  add_constant(g, KC_F32, (int64_t)nf32, f32s);
  add_constant(g, KC_F64, (int64_t)nf64, f64s);
  add_constant(g, KC_F16, (int64_t)nf16, f16s);
  add_constant(g, KC_BF16, (int64_t)nbf16, bf16s);
  kc_val y;
  uint32_t ni = kc_graph_add_node(g, KC_OP_IDENTITY, 1, &x, 1, &y);
  for (size_t i = 0; i < nf64; i++) {
    char name[16];
    snprintf(name, sizeof name, "f%zu", i);
    kc_node_set_float(g, ni, name, f64s[i]);
  }
  kc_node_set_floats(g, ni, "list", (uint32_t)nf64, f64s);
  kc_node_set_floats(g, ni, "empty", 0, NULL);
  kc_value_of(g, y)->dtype = KC_F32;
  kc_value_of(g, y)->rank = 1;
  kc_value_of(g, y)->dims[0] = 2;
  kc_output(g, y, "y");
  assert_int_equal(kc_graph_status(g), KC_OK);

  char *text = kc_graph_print_str(g);
  assert_non_null(text);
  assert_non_null(strstr(text, "dense<[1e-05, 0.1, 0.33333334, -0.0, 1e-45, 3.4028235e+38, inf, "
                               "-inf, nan, 16777216.0]>"));
  assert_non_null(strstr(text, "f0=1e-05, f1=0.1, f2=0.3333333333333333, f3=-0.0"));
  kc_graph *p = NULL;
  assert_int_equal(kc_graph_parse(ctx, text, "floats", &p), KC_OK);
  assert_int_equal(p->ntensors, 4);
  assert_same_floats(KC_F32, g->tensors[0].data, p->tensors[0].data, nf32);
  assert_same_floats(KC_F64, g->tensors[1].data, p->tensors[1].data, nf64);
  assert_memory_equal(g->tensors[2].data, p->tensors[2].data, sizeof f16s);
  assert_memory_equal(g->tensors[3].data, p->tensors[3].data, sizeof bf16s);
  const kc_node *pn = &p->nodes[4];
  assert_int_equal(pn->op, KC_OP_IDENTITY);
  for (size_t i = 0; i < nf64; i++) {
    assert_int_equal(pn->attrs[i].kind, KC_ATTR_FLOAT);
    assert_same_floats(KC_F64, &f64s[i], &pn->attrs[i].u.f, 1);
  }
  const kc_attr *list = kc_node_attr(pn, "list"), *empty = kc_node_attr(pn, "empty");
  assert_int_equal(list->kind, KC_ATTR_FLOATS);
  assert_same_floats(KC_F64, f64s, list->u.floats.v, nf64);
  assert_int_equal(empty->kind, KC_ATTR_INTS); /* the documented rule: [] reads as ints */
  char *again = kc_graph_print_str(p);
  assert_string_equal(text, again);
  free(again);
  free(text);
  kc_graph_free(p);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* Strings that must be quoted, names that are not identifiers, absent results, headers. */
static void t_strings_and_forms(void **st) {
  (void)st;
  kc_context *ctx = kc_context_new();
  const char *text =
      "# kir 1  after=dce (2/5)\n"
      "graph @\"g 1\"(%1: f32[2] \"in\\\"put\") {\n"
      "  %2 = identity(%1) {a=\"f32\", b=\"\", c=\"two words\", d=\"_\", e=\"x\\\\y\\t\\x7f\", "
      "f=tanh, g=i64, h=\"nan\", \"odd name\"=1} : f32[2]\n"
      "  %3, _, %5 = layer_normalization(%1, %1) : f32[2], _, f32[1]\n"
      "  %6 = weight \"w\" : f32[2]\n"
      "  %7 = weight \"w\" : f32[2]\n"
      "  %8 = cast(%1) : f32[*]\n"
      "  %9 = cast(%1) : ?\n"
      "  %10 = constant dense<?> : f32[3]\n"
      "  %11 = constant() {value=dense<[1, 2]> : i64[2]} : i64[3]\n"
      "  return\n"
      "}\n";
  kc_graph *g = NULL;
  assert_int_equal(kc_graph_parse(ctx, text, "forms", &g), KC_OK);
  const kc_node *n = &g->nodes[0];
  assert_string_equal(kc_node_attr(n, "a")->u.s, "f32");
  assert_int_equal(kc_node_attr(n, "g")->kind, KC_ATTR_DTYPE);
  assert_int_equal(kc_node_attr(n, "f")->kind, KC_ATTR_STRING);
  assert_string_equal(kc_node_attr(n, "e")->u.s, "x\\y\t\x7f");
  assert_int_equal(g->ntensors, 3); /* both weights share tensor "w" */
  assert_null(g->tensors[0].data);
  assert_int_equal(g->nodes[1].out[1].id, 0);
  char *out = kc_graph_print_str(g);
  /* the header is not kept; a constant whose tensor disagrees with its type stays generic */
  const char *want =
      "# kir 1\n"
      "graph @\"g 1\"(%1: f32[2] \"in\\\"put\") {\n"
      "  %2 = identity(%1) {a=\"f32\", b=\"\", c=\"two words\", d=\"_\", e=\"x\\\\y\\t\\x7f\", "
      "f=tanh, g=i64, h=\"nan\", \"odd name\"=1} : f32[2]\n"
      "  %3, _, %5 = layer_normalization(%1, %1) : f32[2], _, f32[1]\n"
      "  %6 = weight \"w\" : f32[2]\n"
      "  %7 = weight \"w\" : f32[2]\n"
      "  %8 = cast(%1) : f32[*]\n"
      "  %9 = cast(%1) : ?\n"
      "  %10 = constant dense<?> : f32[3]\n"
      "  %11 = constant() {value=dense<[1, 2]> : i64[2]} : i64[3]\n"
      "  return\n"
      "}\n";
  assert_string_equal(out, want);
  free(out);

  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_int_equal(kc_graph_print_header(g, f, "after=fuse (6/11)"), KC_OK);
  fclose(f);
  assert_true(strncmp(buf, "# kir 1  after=fuse (6/11)\ngraph", 32) == 0);
  kc_graph *h = NULL;
  assert_int_equal(kc_graph_parse(ctx, buf, "header", &h), KC_OK);
  kc_graph_free(h);
  free(buf);
  kc_graph_free(g);

  assert_int_equal(kc_graph_parse(ctx, "# kir 2\ngraph @g() {\n  return\n}\n", "v2", &g),
                   KC_ERR_PARSE);
  assert_non_null(strstr(kc_last_error(ctx), "v2:1:7: error: unsupported kir version 2"));
  assert_int_equal(kc_graph_parse_file(ctx, "/nonexistent/x.kir", &g), KC_ERR_IO);

  /* an identifier too long for the reader's buffers is written quoted, as string and name */
  char longid[201], src[1024];
  memset(longid, 'a', 200);
  longid[200] = 0;
  snprintf(src, sizeof src,
           "graph @g(%%1: f32[2]) {\n  %%2 = gelu(%%1) {\"%s\"=\"%s\"} : f32[2]\n"
           "  return %%2\n}\n",
           longid, longid);
  assert_int_equal(kc_graph_parse(ctx, src, "long", &g), KC_OK);
  out = kc_graph_print_str(g);
  assert_string_equal(out + strlen("# kir 1\n"), src);
  free(out);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* text parses, verifies, prints; the print parses, verifies and prints the same; returns the
 * first print (free it). */
static char *round_trip(kc_context *ctx, const char *text) {
  kc_graph *g = NULL, *g2 = NULL;
  if (kc_graph_parse(ctx, text, "dims.kir", &g) != KC_OK || kc_graph_verify(g) != KC_OK)
    fail_msg("does not parse and verify: %s", kc_last_error(ctx));
  char *t1 = kc_graph_print_str(g);
  assert_non_null(t1);
  if (kc_graph_parse(ctx, t1, "printed.kir", &g2) != KC_OK || kc_graph_verify(g2) != KC_OK)
    fail_msg("printed text does not parse back: %s\n%s", kc_last_error(ctx), t1);
  char *t2 = kc_graph_print_str(g2);
  assert_non_null(t2);
  if (strcmp(t1, t2) != 0) fail_msg("printed twice, differently:\n%s\n%s", t1, t2);
  free(t2);
  kc_graph_free(g2);
  kc_graph_free(g);
  return t1;
}

/* A graph whose input and result have type f32[DIM]. */
static char *dim_graph(const char *dim) {
  size_t n = 3 * strlen(dim) + 200;
  char *s = malloc(n);
  snprintf(s, n,
           "# kir 1\ngraph @g(%%1: f32[%s]) {\n  %%2 = relu(%%1) : f32[%s]\n  return %%2\n}\n", dim,
           dim);
  return s;
}

/* Dims that once printed text which did not parse back, or parsed back as another graph:
 * longer than the 1024-byte buffer the printer used (cut short, ending in '*'); products and
 * sums past the canonical form's limits (raw nodes, printed flat and re-associated);
 * INT64_MIN as a constant term (printed, but not readable). */
static void t_dim_round_trip(void **st) {
  (void)st;
  kc_context *ctx = kc_context_new();
  char dim[4096] = "", *text, *out;
  /* 30 long symbols: about 1700 bytes */
  for (int i = 0; i < 30; i++)
    snprintf(dim + strlen(dim), sizeof dim - strlen(dim), "%sSymbol%02d_%s", i ? "*" : "", i,
             "padding_padding_padding_padding_padding_padding");
  text = dim_graph(dim);
  out = round_trip(ctx, text);
  assert_non_null(strstr(out, "Symbol00_")); /* no symbol lost to truncation */
  assert_non_null(strstr(out, "Symbol29_"));
  free(out);
  free(text);
  const char *dims[] = {
      "S00*S01*S02*S03*S04*S05*S06*S07*S08*S09*S10*S11", /* 12 atoms: a raw product */
      "A00+A01+A02+A03+A04+A05+A06+A07+A08+A09+A10+A11+A12+A13+A14+A15+A16+A17+A18+A19+A20+A21"
      "+A22+A23+A24+A25+A26+A27+A28+A29+A30+A31+A32+A33+A34", /* 35 terms: a raw sum */
      "S+(-9223372036854775808)+9223372036854775807",         /* S-1: the constants fold */
      "S-9223372036854775807-1", /* INT64_MIN as the constant term, printed S+(-9223372036854775808)
                                  */
      "(B+1)*(S00*S01*S02*S03*S04*S05*S06*S07*S08)",
      "S-4*B%3", /* S - ((4*B)%3): the 4 is no negative literal here */
      /* 40 terms: a raw difference, printed A+(-B) */
      "(A00+A01+A02+A03+A04+A05+A06+A07+A08+A09+A10+A11+A12+A13+A14+A15+A16+A17+A18+A19)"
      "-(B00+B01+B02+B03+B04+B05+B06+B07+B08+B09+B10+B11+B12+B13+B14+B15+B16+B17+B18+B19)",
  };
  for (size_t i = 0; i < sizeof dims / sizeof *dims; i++) {
    text = dim_graph(dims[i]);
    free(round_trip(ctx, text));
    free(text);
  }
  kc_context_free(ctx);
}

/* "PATH:LINE:COL: error: " at the start of msg. */
static bool has_location(const char *msg, const char *path) {
  size_t len = strlen(path);
  if (strncmp(msg, path, len) != 0 || msg[len] != ':') return false;
  const char *p = msg + len + 1;
  for (int part = 0; part < 2; part++) {
    if (!isdigit((unsigned char)*p)) return false;
    while (isdigit((unsigned char)*p))
      p++;
    if (*p++ != ':') return false;
  }
  return strncmp(p, " error: ", 8) == 0;
}

static void t_invalid(void **st) {
  (void)st;
  int n;
  char **files = th_kir_files(tests_dir, "invalid", "parse-", &n);
  assert_true(n >= 7);
  kc_context *ctx = kc_context_new();
  int failures = 0;
  for (int i = 0; i < n; i++) {
    char expect[256];
    if (!th_read_expect(files[i], expect, sizeof expect))
      fail_msg("%s: first line is not '# expect: ...'", files[i]);
    kc_graph *g = NULL;
    kc_status s = kc_graph_parse_file(ctx, files[i], &g);
    const char *msg = kc_last_error(ctx);
    if (s != KC_ERR_PARSE || !strstr(msg, expect) || !has_location(msg, files[i]) ||
        !strchr(msg, '^') || g) {
      fprintf(stderr, "%s: want a parse error with '%s', got %s:\n%s\n", files[i], expect,
              kc_status_str(s), msg);
      failures++;
    }
    kc_graph_free(g);
  }
  assert_int_equal(failures, 0);
  kc_context_free(ctx);
  th_free_list(files, n);
}

int main(int argc, char **argv) {
  if (argc > 2) tests_dir = argv[2];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_golden),
      cmocka_unit_test(t_floats),
      cmocka_unit_test(t_strings_and_forms),
      cmocka_unit_test(t_invalid),
      cmocka_unit_test(t_dim_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
