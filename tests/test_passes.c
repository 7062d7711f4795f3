/*
 * tests/test_passes.c - the passes and the rewrite matcher (argv[1]: the kernc binary, argv[2]:
 * tests/, argv[3] if given: only the tests matching that glob, or all but them after a '-').
 *
 *   - every tests/kir/passes/NAME.kir (lit style) runs through what `kernc opt` does, in-process
 *     (parse, verify, passes, print; the program itself is run by t_explain_cli and the golden
 *     files): its first line is `# RUN: ARGS` (--passes=LIST, --fold-limit=N), then comes the
 *     input graph, then a line `# CHECK:` and the exact expected output. The output must match
 *     byte for byte, read back (parse + verify) to the same text, and be a fixpoint: the same
 *     passes change it no more;
 *   - and on numbers: the input graph (no passes) and what its passes make run in-process on the
 *     same inputs, random and edge values (masks of 0/1/2/-1, fully padded rows, huge and
 *     negative values), and agree within a tolerance per dtype; a file that cannot run says why
 *     in a `# NORUN:` line and is listed (see run_numeric);
 *   - the default pipeline runs on every tests/kir/golden file and the result verifies;
 *   - the matcher in C: commutative operands in both orders with backtracking, capture
 *     consistency, the interior-use and graph-output rules, predicates, malformed patterns, and
 *     the reasons --explain-fusion prints; the driver: type-checked replacements, ping-pong
 *     detection;
 *   - fold computes what the reference computes (data of a folded weight) and kc_compile runs
 *     the default pipeline unless told otherwise; fold without an evaluator leaves the graph as
 *     it is; all constants go to the evaluator in one evaluation, and one that refuses a node
 *     gets a few more (halving), not one per node, while the rest still folds;
 *   - a run-time error inside a fused op names the ONNX node (loc) the fusion kept.
 * Commands go through /bin/sh (popen); paths are single-quoted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "passes/match.h"
#include "passes/passes.h"
#include "runtime/runtime.h"
#include "tests/harness.h"

#include <math.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct env {
  const char *kernc, *tests;
  char tmp[64];
} env;

/* ---- lit-style pass tests ---------------------------------------------------------------------
 */

typedef struct lit {
  char args[1024];
  char *input, *expect; /* malloc'd */
} lit;

/* Split a pass test file; false with a reason in why. */
static bool lit_split(const char *text, lit *t, char *why, size_t size) {
  if (strncmp(text, "# RUN:", 6) != 0) {
    snprintf(why, size, "first line is not '# RUN: ARGS'");
    return false;
  }
  const char *nl = strchr(text, '\n');
  if (!nl) {
    snprintf(why, size, "nothing after the RUN line");
    return false;
  }
  snprintf(t->args, sizeof t->args, "%.*s", (int)(nl - text - 6), text + 6);
  const char *check = strstr(nl, "\n# CHECK:\n");
  if (!check) {
    snprintf(why, size, "no '# CHECK:' line");
    return false;
  }
  t->input = strndup(nl + 1, (size_t)(check - nl));
  t->expect = strdup(check + strlen("\n# CHECK:\n"));
  return true;
}

static bool run_args(const char *args, char *passes, size_t size, int64_t *limit, char *why,
                     size_t wsize);

/* What `kernc opt` prints for text with these passes, in-process (parse, verify, the passes
 * with the CPU evaluator for fold, print); NULL with the error in why. */
static char *opt_text(kc_context *ctx, const char *text, const char *file, const char *passes,
                      int64_t limit, char *why, size_t size) {
  kc_graph *g = NULL;
  kc_pipeline p;
  kc_pass_options o = {.fold_limit = limit, .eval = kc_fold_evaluator(), .no_print_on_fail = true};
  kc_status s = kc_graph_parse(ctx, text, file, &g);
  if (s == KC_OK) s = kc_graph_verify(g);
  if (s == KC_OK) s = kc_pipeline_parse(ctx, passes, &p);
  if (s == KC_OK) s = kc_pipeline_run(&p, g, &o);
  char *out = s == KC_OK ? kc_graph_print_str(g) : NULL;
  if (!out) snprintf(why, size, "%s: %s", kc_status_str(s), kc_last_error(ctx));
  kc_graph_free(g);
  return out;
}

static void t_lit_files(void **state) {
  const env *e = *state;
  int n;
  char **files = th_kir_files(e->tests, "passes", "", &n);
  if (n < 20) fail_msg("only %d tests/kir/passes/*.kir files (20 or more expected)", n);
  kc_context *ctx = kc_context_new();
  int failed = 0;
  for (int i = 0; i < n; i++) {
    char *text = th_read_file(files[i], NULL), why[512], passes[512];
    int64_t limit;
    lit t = {0};
    if (!text || !lit_split(text, &t, why, sizeof why) ||
        !run_args(t.args, passes, sizeof passes, &limit, why, sizeof why)) {
      print_error("%s: %s\n", files[i], text ? why : "unreadable");
      failed++;
      free(t.input);
      free(t.expect);
      free(text);
      continue;
    }
    char *out = opt_text(ctx, t.input, files[i], passes, limit, why, sizeof why);
    if (!out || strcmp(out, t.expect) != 0) {
      print_error("%s: kernc opt%s: %s at line %d\ngot:\n%s\nwant:\n%s\n", files[i], t.args,
                  out ? "output differs from CHECK" : why,
                  out ? th_first_diff_line(out, t.expect) : 0, out ? out : "", t.expect);
      failed++;
    } else {
      /* the output reads back to itself and verifies, and is a fixpoint of the same passes */
      char *again = opt_text(ctx, out, files[i], "", 0, why, sizeof why);
      if (!again || strcmp(again, out) != 0) {
        print_error("%s: the output does not read back: %s\n", files[i],
                    again ? "printed differently" : why);
        failed++;
      }
      free(again);
      again = opt_text(ctx, out, files[i], passes, limit, why, sizeof why);
      if (!again || strcmp(again, out) != 0) {
        print_error("%s: running the passes again changes the output (line %d): %s\n%s", files[i],
                    again ? th_first_diff_line(again, out) : 0, again ? "" : why,
                    again ? again : "");
        failed++;
      }
      free(again);
    }
    free(out);
    free(t.input);
    free(t.expect);
    free(text);
  }
  kc_context_free(ctx);
  th_free_list(files, n);
  if (failed) fail_msg("%d of %d pass test files failed", failed, n);
}

/* ---- pass tests on numbers ------------------------------------------------------------------ */

/*
 * Each pass test's input graph (no passes) and the graph its passes make run on the same inputs
 * and must agree. Optional lines before the graph say how:
 *   # NORUN: REASON         the graphs cannot run (counted and listed, never silently skipped);
 *   # DIMS: S=4 T=6         symbol values (default: B=2, any other 3);
 *   # INPUTS: NAME=v,v,...  the values NAME's elements are drawn from in both rounds, or
 *             NAME=[v,v,...] its elements in order (a shape input), else by dtype (below);
 *   # NOPADROW: NAME,... WHY no row of these inputs is all 0 (its first element is 1): where a
 *                           fused op knowingly differs from the graph on a row whose keys are all
 *                           masked (listed too, with the reason).
 * Rounds: random (floats in [-2, 2), ints and bools 0/1), then edges: element e of a tensor whose
 * last axis has L elements lies in row e / L; row 0 is all the first value of the set (0: a fully
 * padded row of a mask), the rest drawn from the set (ints 0, 1, 2, -1, bools 0, 1, floats 0, 1,
 * -1, 2, -2.5, 60, -60, 1e4, -1e4). Weights a .kir names without data get
 * random data (the same in both graphs: the passes run on a clone sharing it).
 */
typedef struct numcfg {
  char norun[256];
  char nopadrow[256];
  char dims[256];
  char inputs[1024];
} numcfg;

/* The text after `# KEY:` on a line of the comments, into buf (empty when absent). */
static void header_line(const char *text, const char *key, char *buf, size_t size) {
  buf[0] = 0;
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    size_t n = strlen(key);
    if (strncmp(p, key, n) != 0) continue;
    p += n;
    while (*p == ' ')
      p++;
    size_t len = strcspn(p, "\n");
    snprintf(buf, size, "%.*s", (int)len, p);
    return;
  }
}

static bool dim_lookup(void *user, const char *name, int64_t *v) {
  const char *dims = user;
  size_t n = strlen(name);
  for (const char *p = dims; (p = strstr(p, name)); p += n)
    if ((p == dims || p[-1] == ' ') && p[n] == '=') {
      *v = strtoll(p + n + 1, NULL, 10);
      return true;
    }
  *v = strcmp(name, "B") == 0 ? 2 : 3;
  return true;
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) / 9007199254740992.0; }

/* Element i of data (dtype t) = x, rounded as the dtype does. */
static void put(kc_dtype t, void *data, size_t i, double x) {
  switch (t) {
  case KC_F32: ((float *)data)[i] = (float)x; break;
  case KC_F64: ((double *)data)[i] = x; break;
  case KC_F16: ((uint16_t *)data)[i] = kc_f32_to_f16((float)x); break;
  case KC_BF16: ((uint16_t *)data)[i] = kc_f32_to_bf16((float)x); break;
  case KC_I64: ((int64_t *)data)[i] = (int64_t)x; break;
  case KC_I32: ((int32_t *)data)[i] = (int32_t)x; break;
  case KC_I16: ((int16_t *)data)[i] = (int16_t)x; break;
  case KC_I8: ((int8_t *)data)[i] = (int8_t)x; break;
  case KC_U64: ((uint64_t *)data)[i] = (uint64_t)(x < 0 ? 0 : x); break;
  case KC_U32: ((uint32_t *)data)[i] = (uint32_t)(x < 0 ? 0 : x); break;
  case KC_U16: ((uint16_t *)data)[i] = (uint16_t)(x < 0 ? 0 : x); break;
  case KC_U8: ((uint8_t *)data)[i] = (uint8_t)(x < 0 ? 0 : x); break;
  case KC_BOOL: ((uint8_t *)data)[i] = x != 0; break;
  default: break;
  }
}

static double get(kc_dtype t, const void *data, size_t i) {
  kc_tensor x = {.dtype = t, .rank = 1, .dims = {(int64_t)i + 1}, .data = data};
  x.nbytes = (i + 1) * kc_dtype_size(t);
  return kc_tensor_get(&x, i);
}

/* The edge set of input `name` (dtype t): from `# INPUTS:` or the default; count in *n. */
static int value_set(const numcfg *c, const char *name, kc_dtype t, double *set, int cap,
                     bool *given, bool *seq) {
  static const double ints[] = {0, 1, 2, -1};
  static const double floats[] = {0, 1, -1, 2, -2.5, 60, -60, 1e4, -1e4};
  int n = 0;
  size_t len = name ? strlen(name) : 0;
  *given = true;
  *seq = false;
  for (const char *p = c->inputs; name && (p = strstr(p, name)); p += len) {
    if ((p != c->inputs && p[-1] != ' ') || p[len] != '=') continue;
    *seq = p[len + 1] == '[';
    for (p += len + 1 + *seq; n < cap;) {
      char *end;
      double x = strtod(p, &end);
      if (end == p) break;
      set[n++] = x;
      p = end;
      if (*p != ',') break;
      p++;
    }
    if (n) return n;
  }
  *given = false;
  if (t == KC_BOOL) {
    set[0] = 0, set[1] = 1;
    return 2;
  }
  const double *d = kc_dtype_is_float(t) ? floats : ints;
  n = kc_dtype_is_float(t) ? KC_LEN(floats) : KC_LEN(ints);
  memcpy(set, d, (size_t)n * sizeof *d);
  return n;
}

/* Fill n elements of data (dtype t, last axis of length last) for round r. */
static void fill(const numcfg *c, const char *name, kc_dtype t, void *data, size_t n, int64_t last,
                 int r, uint64_t *s) {
  double set[32];
  bool given, seq;
  int ns = value_set(c, name, t, set, 32, &given, &seq);
  bool keep1 = false; /* name is in the comma separated list that starts the NOPADROW line */
  size_t len = name ? strlen(name) : 0, names = strcspn(c->nopadrow, " ");
  for (const char *p = c->nopadrow; len && p < c->nopadrow + names; p += strcspn(p, ",") + 1)
    keep1 |= strncmp(p, name, len) == 0 && (p[len] == ',' || p[len] == ' ' || !p[len]);
  for (size_t i = 0; i < n; i++) {
    double x;
    if (seq)
      x = set[i % (size_t)ns];
    else if (keep1 && last > 0 && (int64_t)i % last == 0)
      x = 1;
    else if (r == 0 && !given)
      x = kc_dtype_is_float(t) ? rng_unit(s) * 4 - 2 : (double)(rng_next(s) & 1);
    else if (r == 0)
      x = set[rng_next(s) % (uint64_t)ns];
    else
      x = last > 0 && (int64_t)i < last ? set[0] : set[rng_next(s) % (uint64_t)ns];
    put(t, data, i, x);
  }
}

/* Give every weight of g without data random data (floats in [-1, 1), ints 0/1). */
static bool bind_weights(kc_graph *g, uint64_t seed) {
  for (uint32_t i = 0; i < g->ntensors; i++) {
    kc_tensor *t = &g->tensors[i];
    if (t->data || !t->nbytes) continue;
    void *d = kc_arena_alloc(&g->arena, t->nbytes);
    if (!d) return false;
    size_t n = t->nbytes / kc_dtype_size(t->dtype);
    for (size_t k = 0; k < n; k++)
      put(t->dtype, d, k,
          kc_dtype_is_float(t->dtype) ? rng_unit(&seed) * 2 - 1 : (double)(rng_next(&seed) & 1));
    t->data = d;
  }
  return true;
}

/* Tolerance of an element of dtype t against a reference of largest magnitude scale. */
static double tolerance(kc_dtype t, double ref, double scale) {
  double r = t == KC_F64 ? 1e-10 : t == KC_F32 ? 1e-4 : 2e-2;
  return r * (fabs(ref) + scale);
}

/* Outputs a (the passes') and b (the reference) agree; the first difference in why. */
static bool same_outputs(const kc_tensor_desc *a, const kc_tensor_desc *b, uint32_t n, char *why,
                         size_t size) {
  for (uint32_t k = 0; k < n; k++) {
    if (a[k].dtype != b[k].dtype || a[k].rank != b[k].rank) {
      snprintf(why, size, "output %u: %s rank %d, want %s rank %d", k, kc_dtype_name(a[k].dtype),
               a[k].rank, kc_dtype_name(b[k].dtype), b[k].rank);
      return false;
    }
    for (int i = 0; i < a[k].rank; i++)
      if (a[k].dims[i] != b[k].dims[i]) {
        snprintf(why, size, "output %u: dim %d is %lld, want %lld", k, i, (long long)a[k].dims[i],
                 (long long)b[k].dims[i]);
        return false;
      }
    size_t n = (size_t)th_numel(b[k].rank, b[k].dims);
    double scale = 0;
    for (size_t i = 0; i < n; i++) {
      double y = get(b[k].dtype, b[k].data, i);
      if (isfinite(y) && fabs(y) > scale) scale = fabs(y);
    }
    for (size_t i = 0; i < n; i++) {
      double x = get(a[k].dtype, a[k].data, i), y = get(b[k].dtype, b[k].data, i);
      bool ok = kc_dtype_is_float(b[k].dtype) ? (isnan(x) && isnan(y)) || x == y ||
                                                    (isfinite(x) && isfinite(y) &&
                                                     fabs(x - y) <= tolerance(b[k].dtype, y, scale))
                                              : x == y;
      if (!ok) {
        snprintf(why, size, "output %u element %zu: %.9g, want %.9g (largest |want| %.3g)", k, i, x,
                 y, scale);
        return false;
      }
    }
  }
  return true;
}

/* Copies of n output descriptors' data (a module's outputs live only until its next run). */
static kc_tensor_desc *copy_outputs(const kc_tensor_desc *o, uint32_t n) {
  kc_tensor_desc *c = calloc(n ? n : 1, sizeof *c);
  for (uint32_t k = 0; c && k < n; k++) {
    c[k] = o[k];
    size_t bytes = th_nbytes(&o[k]);
    c[k].data = malloc(bytes ? bytes : 1);
    if (c[k].data) memcpy(c[k].data, o[k].data, bytes);
  }
  return c;
}

static void free_outputs(kc_tensor_desc *o, uint32_t n) {
  for (uint32_t k = 0; o && k < n; k++)
    free(o[k].data);
  free(o);
}

/* The pass list and fold limit of a RUN line; false (reason in why) for flags it cannot map. */
static bool run_args(const char *args, char *passes, size_t size, int64_t *limit, char *why,
                     size_t wsize) {
  passes[0] = 0;
  *limit = 0;
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", args);
  for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
    if (strncmp(tok, "--passes=", 9) == 0)
      snprintf(passes, size, "%s", tok + 9);
    else if (strncmp(tok, "--fold-limit=", 13) == 0)
      *limit = strtoll(tok + 13, NULL, 10);
    else if (strcmp(tok, "--explain-fusion") != 0 && strcmp(tok, "--verify-each") != 0) {
      snprintf(why, wsize, "RUN flag %s has no in-process equivalent here", tok);
      return false;
    }
  }
  return true;
}

/*
 * Run one pass test on numbers: 1 when it ran and agreed, 2 when the passes left the graph as
 * it was (nothing to compare), 0 when it disagreed or could not run (reason printed), -1 for
 * NORUN.
 */
static int run_numeric(kc_context *ctx, const char *file, const lit *t, int index) {
  numcfg c;
  header_line(t->input, "# NORUN:", c.norun, sizeof c.norun);
  header_line(t->input, "# NOPADROW:", c.nopadrow, sizeof c.nopadrow);
  header_line(t->input, "# DIMS:", c.dims, sizeof c.dims);
  header_line(t->input, "# INPUTS:", c.inputs, sizeof c.inputs);
  if (c.norun[0]) return -1;
  char passes[512], why[512];
  int64_t limit;
  if (!run_args(t->args, passes, sizeof passes, &limit, why, sizeof why)) {
    print_error("%s: numbers: %s (say so in a '# NORUN:' line)\n", file, why);
    return 0;
  }
  int ok = 0;
  kc_graph *g = NULL, *h = NULL;
  kc_module *m[2] = {NULL, NULL};
  kc_tensor_desc in[16] = {{0}};
  kc_tensor_desc *want = NULL;
  uint32_t nout = 0;
  kc_status s = kc_graph_parse(ctx, t->input, file, &g);
  if (s != KC_OK) goto done;
  uint64_t seed = 0x1234567ULL + (uint64_t)index * 7919;
  if (!bind_weights(g, seed)) goto done;
  h = kc_graph_clone(g, true);
  kc_pipeline p;
  kc_pass_options o = {.fold_limit = limit, .eval = kc_fold_evaluator(), .no_print_on_fail = true};
  if (!h || (s = kc_pipeline_parse(ctx, passes, &p)) != KC_OK || (s = kc_pipeline_run(&p, h, &o)))
    goto done;
  char *before = kc_graph_print_str(g), *after = kc_graph_print_str(h);
  bool same = before && after && strcmp(before, after) == 0;
  free(before);
  free(after);
  if (same) { /* the passes changed nothing: the same graph computes the same numbers */
    ok = 2;
    goto done_quiet;
  }
  kc_compile_options co = {.target = "cpu", .passes = "", .threads = 1};
  if ((s = kc_compile(ctx, g, &co, &m[0])) != KC_OK || (s = kc_compile(ctx, h, &co, &m[1])))
    goto done;
  if ((int)g->ninputs > KC_LEN(in)) {
    snprintf(why, sizeof why, "%u inputs (the test binds up to %d)", g->ninputs, KC_LEN(in));
    goto why;
  }
  nout = g->noutputs;
  for (uint32_t i = 0; i < g->ninputs; i++) {
    const kc_value *v = kc_value_of(g, g->inputs[i]);
    in[i] = (kc_tensor_desc){.dtype = v->dtype, .rank = v->rank};
    for (int d = 0; d < v->rank; d++)
      if (!kc_dim_eval(g, v->dims[d], dim_lookup, c.dims, &in[i].dims[d])) {
        snprintf(why, sizeof why, "input %u: dim %d has no value", i, d);
        goto why;
      }
    in[i].data = calloc(1, th_nbytes(&in[i]) + 1);
  }
  for (int r = 0; r < 2; r++) {
    for (uint32_t i = 0; i < g->ninputs; i++) {
      size_t n = (size_t)th_numel(in[i].rank, in[i].dims);
      fill(&c, kc_graph_input_name(g, i), in[i].dtype, in[i].data, n,
           in[i].rank ? in[i].dims[in[i].rank - 1] : 0, r, &seed);
    }
    kc_tensor_desc out[16];
    if ((int)nout > KC_LEN(out)) {
      snprintf(why, sizeof why, "%u outputs (the test reads up to %d)", nout, KC_LEN(out));
      goto why;
    }
    if ((s = kc_run(m[0], in, g->ninputs, out, nout)) != KC_OK) goto done;
    want = copy_outputs(out, nout);
    if ((s = kc_run(m[1], in, g->ninputs, out, nout)) != KC_OK) goto done;
    if (!same_outputs(out, want, nout, why, sizeof why)) {
      print_error("%s: numbers, %s round: the passes' graph differs from the input graph: %s\n",
                  file, r ? "edge" : "random", why);
      goto done_quiet;
    }
    free_outputs(want, nout);
    want = NULL;
  }
  ok = 1;
  goto done_quiet;
why:
  print_error("%s: numbers: %s\n", file, why);
  goto done_quiet;
done:
  print_error("%s: numbers: %s: %s\n", file, kc_status_str(s), kc_last_error(ctx));
done_quiet:
  free_outputs(want, nout);
  for (int i = 0; i < KC_LEN(in); i++)
    free(in[i].data);
  kc_module_free(m[0]);
  kc_module_free(m[1]);
  kc_graph_free(h);
  kc_graph_free(g);
  return ok;
}

static void t_lit_numbers(void **state) {
  const env *e = *state;
  int n, ran = 0, same = 0, failed = 0, norun = 0, nopad = 0;
  clock_t cpu = clock();
  char **files = th_kir_files(e->tests, "passes", "", &n);
  kc_context *ctx = kc_context_new();
  char list[4096] = "";
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    char *text = th_read_file(files[i], NULL), why[256];
    lit t = {0};
    if (!text || !lit_split(text, &t, why, sizeof why)) {
      free(text);
      continue; /* t_lit_files reports it */
    }
    int r = run_numeric(ctx, files[i], &t, i);
    char reason[256], pad[256];
    header_line(t.input, "# NORUN:", reason, sizeof reason);
    header_line(t.input, "# NOPADROW:", pad, sizeof pad);
    const char *base = strrchr(files[i], '/');
    if (r < 0 || pad[0]) {
      len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0, "  %s: %s%s\n",
                              base ? base + 1 : files[i],
                              r < 0 ? "NORUN: " : "NOPADROW: ", r < 0 ? reason : pad);
      if (len >= sizeof list) len = sizeof list - 1;
    }
    norun += r < 0;
    nopad += pad[0] != 0;
    ran += r == 1;
    same += r == 2;
    failed += r == 0;
    free(t.input);
    free(t.expect);
    free(text);
  }
  kc_context_free(ctx);
  th_free_list(files, n);
  print_message("pass tests on numbers: %d ran and agreed (%d with NOPADROW), %d left unchanged "
                "by their passes, %d failed, %d NORUN (%.1f s CPU)\n",
                ran, nopad, same, failed, norun, (double)(clock() - cpu) / CLOCKS_PER_SEC);
  for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) /* cmocka cuts long ones */
    print_message("%s\n", line);
  if (failed)
    fail_msg("%d of %d pass tests compute other numbers than their input graph", failed, n);
}

/* The default pipeline accepts every golden file, and what it makes verifies and reads back. */
static void t_default_pipeline_on_golden(void **state) {
  const env *e = *state;
  int n;
  char **files = th_kir_files(e->tests, "golden", "", &n);
  if (n == 0) fail_msg("no tests/kir/golden/*.kir files");
  kc_context *ctx = kc_context_new();
  for (int i = 0; i < n; i++) {
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "'%s' opt '%s' --verify-each", e->kernc, files[i]);
    int rc = th_exec(cmd, &out, &err);
    if (rc != 0) fail_msg("%s: default pipeline: exit %d: %s", files[i], rc, err);
    kc_graph *g = NULL;
    kc_status s = kc_graph_parse(ctx, out, files[i], &g);
    if (s == KC_OK) s = kc_graph_verify(g);
    if (s != KC_OK) fail_msg("%s: output does not verify: %s", files[i], kc_last_error(ctx));
    kc_graph_free(g);
    free(out);
    free(err);
  }
  kc_context_free(ctx);
  th_free_list(files, n);
}

/* ---- the matcher ---------------------------------------------------------------------------- */

/* Parse text; it must verify. */
static kc_graph *parse(kc_context *ctx, const char *text) {
  kc_graph *g = th_parse(ctx, text);
  if (kc_graph_verify(g) != KC_OK) fail_msg("verify: %s", kc_last_error(ctx));
  return g;
}

/* Index of the node defining %id. */
static uint32_t node_of(const kc_graph *g, uint32_t id) {
  assert_true(id < g->nvals && g->vals[id].def > 0);
  return g->vals[id].def - 1;
}

/* Match pat at the node defining %root; why gets the reason on failure. */
static bool try_match(kc_graph *g, const kc_pat *pat, int nrows, uint32_t root, kc_match *m,
                      char *why, size_t size) {
  char bad[256];
  if (!kc_pat_check(pat, nrows, bad, sizeof bad)) fail_msg("malformed test pattern: %s", bad);
  kc_uses u;
  assert_int_equal(kc_uses_compute(g, &u), KC_OK);
  bool ok = kc_pat_match(g, &u, pat, nrows, node_of(g, root), m, why, size);
  kc_uses_free(&u);
  return ok;
}

enum { Q, K, V, MASK, SCALE, A, B };

static bool softmax_last(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  int64_t axis = kc_node_int(n, "axis", -1);
  int rank = kc_value_of(g, n->in[0])->rank;
  if (axis == -1 || axis == rank - 1) return true;
  snprintf(why, size, "softmax axis is %lld, not last", (long long)axis);
  return false;
}

/* softmax(matmul(q, transpose(k)) * scale + mask) @ v  ->  attention(q, k, v, mask) */
static const kc_pat attn[] = {
    P_OP(MATMUL, P_SUB(1), P_CAP(V)), P_OPIF(SOFTMAX, softmax_last, P_SUB(2)),
    P_OP(ADD, P_SUB(3), P_CAP(MASK)), P_OP(MUL, P_SUB(4), P_CONST_SCALAR(SCALE)),
    P_OP(MATMUL, P_CAP(Q), P_SUB(5)), P_OP(TRANSPOSE, P_CAP(K)),
};

/* The same attention block with the commutative operands in the other order: mask + x and
 * scale * x; softmax's axis as given. */
static char *attn_graph(bool swapped, const char *axis, bool mul_shared, bool add_output) {
  static char buf[4096];
  snprintf(buf, sizeof buf,
           "graph @attn(%%1: f32[2,8,4] \"q\", %%2: f32[2,8,4] \"k\", %%3: f32[2,8,4] \"v\", "
           "%%4: f32[2,8,8] \"mask\") {\n"
           "  %%5 = transpose(%%2) {perm=[0, 2, 1]} : f32[2,4,8]\n"
           "  %%6 = matmul(%%1, %%5) : f32[2,8,8]\n"
           "  %%7 = constant dense<0.5> : f32[]\n"
           "  %%8 = mul(%s) : f32[2,8,8]\n"
           "  %%9 = add(%s) : f32[2,8,8]\n"
           "  %%10 = softmax(%%9) {axis=%s} : f32[2,8,8]\n"
           "  %%11 = matmul(%%10, %%3) : f32[2,8,4]\n"
           "%s"
           "  return %%11%s%s\n"
           "}\n",
           swapped ? "%7, %6" : "%6, %7", swapped ? "%4, %8" : "%8, %4", axis,
           mul_shared ? "  %12 = neg(%8) : f32[2,8,8]\n" : "", mul_shared ? ", %12" : "",
           add_output ? ", %9" : "");
  return buf;
}

static void t_match_attention(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  for (int swapped = 0; swapped < 2; swapped++) {
    kc_graph *g = parse(ctx, attn_graph(swapped, "-1", false, false));
    kc_match m;
    char why[256];
    if (!try_match(g, attn, KC_LEN(attn), 11, &m, why, sizeof why))
      fail_msg("order %d: no match: %s", swapped, why);
    assert_int_equal(m.cap[Q].id, 1);
    assert_int_equal(m.cap[K].id, 2);
    assert_int_equal(m.cap[V].id, 3);
    assert_int_equal(m.cap[MASK].id, 4);
    assert_int_equal(m.cap[SCALE].id, 7);
    assert_int_equal(m.node[0], node_of(g, 11));
    assert_int_equal(m.node[3], node_of(g, 8));
    assert_int_equal(m.node[5], node_of(g, 5));
    kc_graph_free(g);
  }
  kc_context_free(ctx);
}

static void expect_no_match(kc_context *ctx, const char *text, const kc_pat *pat, int nrows,
                            uint32_t root, const char *want) {
  kc_graph *g = parse(ctx, text);
  kc_match m;
  char why[256];
  if (try_match(g, pat, nrows, root, &m, why, sizeof why)) fail_msg("matched; wanted: %s", want);
  if (!strstr(why, want)) fail_msg("reason \"%s\", wanted \"%s\"", why, want);
  kc_graph_free(g);
}

static void t_match_rules(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  /* an interior node with a second use, or that is a graph output, is not matched */
  expect_no_match(ctx, attn_graph(false, "-1", true, false), attn, KC_LEN(attn), 11,
                  "row 3: interior %8 (mul) has 2 uses");
  expect_no_match(ctx, attn_graph(true, "-1", false, true), attn, KC_LEN(attn), 11,
                  "row 2: interior %9 (add) is a graph output");
  /* a row's predicate reports its own reason */
  expect_no_match(ctx, attn_graph(false, "1", false, false), attn, KC_LEN(attn), 11,
                  "row 1: %10 (softmax): softmax axis is 1, not last");
  /* the furthest failure is kept: here the scale is not a constant */
  expect_no_match(ctx,
                  "graph @g(%1: f32[2,8,4], %2: f32[2,8,4], %3: f32[2,8,4], %4: f32[2,8,8], "
                  "%5: f32[]) {\n"
                  "  %6 = transpose(%2) {perm=[0, 2, 1]} : f32[2,4,8]\n"
                  "  %7 = matmul(%1, %6) : f32[2,8,8]\n"
                  "  %8 = mul(%7, %5) : f32[2,8,8]\n"
                  "  %9 = add(%8, %4) : f32[2,8,8]\n"
                  "  %10 = softmax(%9) : f32[2,8,8]\n"
                  "  %11 = matmul(%10, %3) : f32[2,8,4]\n"
                  "  return %11\n}\n",
                  attn, KC_LEN(attn), 11, "%5 (graph input) is not a constant");
  kc_context_free(ctx);
}

/* add(mul(x, y), x): the capture X must be the same value in both rows */
static const kc_pat fma_like[] = {
    P_OP(ADD, P_SUB(1), P_CAP(A)),
    P_OP(MUL, P_CAP(A), P_CAP(B)),
};

static void t_match_captures(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  /* add(%2, mul(%1, %2)): both commutative orders must be undone and retried to bind A = %2 */
  kc_graph *g = parse(ctx, "graph @g(%1: f32[4], %2: f32[4]) {\n"
                           "  %3 = mul(%1, %2) : f32[4]\n"
                           "  %4 = add(%2, %3) : f32[4]\n"
                           "  return %4\n}\n");
  kc_match m;
  char why[256];
  if (!try_match(g, fma_like, KC_LEN(fma_like), 4, &m, why, sizeof why)) fail_msg("%s", why);
  assert_int_equal(m.cap[A].id, 2);
  assert_int_equal(m.cap[B].id, 1);
  kc_graph_free(g);
  /* add(%5, mul(%1, %2)) with %5 neither of them: the capture cannot agree */
  expect_no_match(ctx,
                  "graph @g(%1: f32[4], %2: f32[4], %5: f32[4]) {\n"
                  "  %3 = mul(%1, %2) : f32[4]\n"
                  "  %4 = add(%5, %3) : f32[4]\n"
                  "  return %4\n}\n",
                  fma_like, KC_LEN(fma_like), 4, "captured before as slot");
  /* not commutative: sub(mul(x, y), x) matches only in the written order */
  static const kc_pat sub_pat[] = {
      P_OP(SUB, P_SUB(1), P_CAP(A)),
      P_OP(MUL, P_CAP(A), P_CAP(B)),
  };
  expect_no_match(ctx,
                  "graph @g(%1: f32[4], %2: f32[4]) {\n"
                  "  %3 = mul(%1, %2) : f32[4]\n"
                  "  %4 = sub(%1, %3) : f32[4]\n"
                  "  return %4\n}\n",
                  sub_pat, KC_LEN(sub_pat), 4, "row 0 operand 0: %1 is graph input, not mul");
  /* alternatives, absent operands and P_REST */
  static const kc_pat alt[] = {
      P_OP2(DIV, MUL, P_CAP(A), P_CONST_EQ(B, 2.0)),
  };
  g = parse(ctx, "graph @g(%1: f32[4]) {\n"
                 "  %2 = constant dense<2.0> : f32[]\n"
                 "  %3 = div(%1, %2) : f32[4]\n"
                 "  %4 = mul(%2, %3) : f32[4]\n"
                 "  return %4\n}\n");
  assert_true(try_match(g, alt, KC_LEN(alt), 4, &m, why, sizeof why));
  assert_int_equal(m.cap[A].id, 3);
  assert_true(try_match(g, alt, KC_LEN(alt), 3, &m, why, sizeof why));
  kc_graph_free(g);
  static const kc_pat clip_none[] = {
      P_OP(CLIP, P_CAP(A), P_ABSENT, P_CONST(B)),
  };
  expect_no_match(ctx,
                  "graph @g(%1: f32[4]) {\n"
                  "  %2 = constant dense<0.0> : f32[]\n"
                  "  %3 = clip(%1, %2, %2) : f32[4]\n"
                  "  return %3\n}\n",
                  clip_none, KC_LEN(clip_none), 3, "the pattern wants it absent");
  static const kc_pat relu_only[] = {
      P_OP(CONCAT, P_CAP(A)),
  };
  expect_no_match(ctx,
                  "graph @g(%1: f32[4]) {\n"
                  "  %2 = concat(%1, %1) {axis=0} : f32[8]\n"
                  "  return %2\n}\n",
                  relu_only, KC_LEN(relu_only), 2, "has operand 1, the pattern takes 1");
  kc_context_free(ctx);
}

/* (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps): the centered x is one node read three
 * times, so its row is shared */
static const kc_pat lnorm[] = {
    P_OP(DIV, P_SUB(1), P_SUB(3)),
    P_OP(SUB, P_CAP(A), P_SUB(2)),
    P_OP(REDUCE_MEAN, P_CAP(A), P_CONST_INTS(K)),
    P_OP(SQRT, P_SUB(4)),
    P_OP(ADD, P_SUB(5), P_CONST_SCALAR(B)),
    P_OP(REDUCE_MEAN, P_SUB(6), P_CONST_INTS(V)),
    P_OP(MUL, P_SUB(1), P_SUB(1)),
};

static const char *lnorm_graph(const char *extra, const char *ret) {
  static char buf[2048];
  snprintf(buf, sizeof buf,
           "graph @ln(%%1: f32[2,8] \"x\") {\n"
           "  %%2 = constant dense<-1> : i64[1]\n"
           "  %%3 = reduce_mean(%%1, %%2) : f32[2,1]\n"
           "  %%4 = sub(%%1, %%3) : f32[2,8]\n"
           "  %%5 = mul(%%4, %%4) : f32[2,8]\n"
           "  %%6 = reduce_mean(%%5, %%2) : f32[2,1]\n"
           "  %%7 = constant dense<1e-05> : f32[]\n"
           "  %%8 = add(%%7, %%6) : f32[2,1]\n"
           "  %%9 = sqrt(%%8) : f32[2,1]\n"
           "  %%10 = div(%%4, %%9) : f32[2,8]\n"
           "%s"
           "  return %%10%s\n}\n",
           extra, ret);
  return buf;
}

static void t_match_shared_rows(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = parse(ctx, lnorm_graph("", ""));
  kc_match m;
  char why[256];
  if (!try_match(g, lnorm, KC_LEN(lnorm), 10, &m, why, sizeof why)) fail_msg("%s", why);
  assert_int_equal(m.cap[A].id, 1);
  assert_int_equal(m.cap[B].id, 7);
  assert_int_equal(m.node[1], node_of(g, 4));
  assert_int_equal(m.node[6], node_of(g, 5));
  kc_graph_free(g);
  /* a fourth reader of the centered x is outside the pattern */
  expect_no_match(ctx, lnorm_graph("  %11 = neg(%4) : f32[2,8]\n", ", %11"), lnorm, KC_LEN(lnorm),
                  10, "row 1: interior %4 (sub) has 4 uses");
  /* a reader instead of one of the pattern's own: the count is right, the readers are not */
  expect_no_match(ctx,
                  "graph @ln(%1: f32[2,8] \"x\") {\n"
                  "  %2 = constant dense<-1> : i64[1]\n"
                  "  %3 = reduce_mean(%1, %2) : f32[2,1]\n"
                  "  %4 = sub(%1, %3) : f32[2,8]\n"
                  "  %5 = mul(%4, %1) : f32[2,8]\n"
                  "  %6 = reduce_mean(%5, %2) : f32[2,1]\n"
                  "  %7 = constant dense<1e-05> : f32[]\n"
                  "  %8 = add(%7, %6) : f32[2,1]\n"
                  "  %9 = sqrt(%8) : f32[2,1]\n"
                  "  %10 = div(%4, %9) : f32[2,8]\n"
                  "  %11 = neg(%4) : f32[2,8]\n"
                  "  return %10, %11\n}\n",
                  lnorm, KC_LEN(lnorm), 10, "matched by row 1 before");
  kc_context_free(ctx);
}

static void t_pattern_check(void **state) {
  (void)state;
  char why[256];
  static const kc_pat unreached[] = {
      P_OP(RELU, P_CAP(A)),
      P_OP(EXP, P_CAP(A)),
  };
  assert_false(kc_pat_check(unreached, KC_LEN(unreached), why, sizeof why));
  assert_non_null(strstr(why, "row 1 is not reached from row 0"));
  static const kc_pat backwards[] = {
      P_OP(RELU, P_SUB(0)),
  };
  assert_false(kc_pat_check(backwards, KC_LEN(backwards), why, sizeof why));
  static const kc_pat twice[] = {
      /* a shared row: one node read twice */
      P_OP(ADD, P_SUB(1), P_SUB(1)),
      P_OP(EXP, P_CAP(A)),
  };
  assert_true(kc_pat_check(twice, KC_LEN(twice), why, sizeof why));
  assert_true(kc_pat_check(attn, KC_LEN(attn), why, sizeof why));
}

/* ---- the driver ------------------------------------------------------------------------------ */

/* exp(log(x)) -> x, for the driver tests */
static const kc_pat exp_log[] = {
    P_OP(EXP, P_SUB(1)),
    P_OP(LOG, P_CAP(A)),
};

static kc_status to_a(kc_rewriter *rw, const kc_match *m) {
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), m->cap[A]);
  return KC_OK;
}

/* A wrong rewrite: relu(x) -> reduce_sum(x), whose type differs. */
static const kc_pat relu_pat[] = {
    P_OP(RELU, P_CAP(A)),
};

static kc_status wrong_type(kc_rewriter *rw, const kc_match *m) {
  kc_val out;
  uint32_t ni = kc_rw_node(rw, KC_OP_REDUCE_SUM, 1, &m->cap[A], 1, &out);
  kc_node_set_int(kc_rw_graph(rw), ni, "keepdims", 0);
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), out);
  return KC_OK;
}

/* A rule that always fires: neg(x) -> a new neg(x), so no sweep is ever the last. */
static const kc_pat neg_pat[] = {
    P_OP(NEG, P_CAP(A)),
};

static kc_status renew_neg(kc_rewriter *rw, const kc_match *m) {
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), kc_rw_op(rw, KC_OP_NEG, 1, &m->cap[A]));
  return KC_OK;
}

static kc_status run_rules(kc_graph *g, const kc_rule *rules, int n, char **log) {
  size_t len = 0;
  FILE *f = open_memstream(log, &len);
  kc_pass_options o = {.explain_fusion = true, .out = f};
  kc_pass_ctx pc = {g->ctx, "test-rules", 1, 1, false, &o, f};
  kc_status s = kc_rules_run(g, &pc, rules, n, true);
  fclose(f);
  return s;
}

static void t_driver(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  const char *text = "graph @g(%1: f32[4] \"x\") {\n"
                     "  %2 = log(%1) : f32[4]\n"
                     "  %3 = exp(%2) : f32[4]\n"
                     "  %4 = log(%3) : f32[4]\n"
                     "  %5 = exp(%4) : f32[4]\n"
                     "  %6 = log(%1) : f32[4]\n"
                     "  %7 = exp(%6) : f32[4]\n"
                     "  %8 = relu(%6) : f32[4]\n"
                     "  return %5, %7, %8\n}\n";
  kc_graph *g = parse(ctx, text);
  static const kc_rule rules[] = {KC_RULE("exp-log", exp_log, to_a)};
  char *log = NULL;
  assert_int_equal(run_rules(g, rules, KC_LEN(rules), &log), KC_OK);
  char *out = kc_graph_print_str(g);
  /* %5 collapses twice (the second match sees the first's result); %7 stays: %6 has 2 uses */
  assert_string_equal(out, "# kir 1\n"
                           "graph @g(%1: f32[4] \"x\") {\n"
                           "  %6 = log(%1) : f32[4]\n"
                           "  %7 = exp(%6) : f32[4]\n"
                           "  %8 = relu(%6) : f32[4]\n"
                           "  return %1, %7, %8\n}\n");
  assert_non_null(strstr(log, "test-rules: exp-log at %3 (exp): rewritten"));
  assert_non_null(strstr(log, "test-rules: exp-log at %7 (exp): row 1: interior %6 (log) has 2"));
  assert_int_equal(kc_graph_verify(g), KC_OK);
  free(out);
  free(log);
  kc_graph_free(g);

  /* a replacement of another type is refused, with the reason */
  g = parse(ctx, "graph @g(%1: f32[4]) {\n  %2 = relu(%1) : f32[4]\n  return %2\n}\n");
  static const kc_rule bad[] = {KC_RULE("wrong", relu_pat, wrong_type)};
  assert_int_equal(run_rules(g, bad, KC_LEN(bad), &log), KC_OK);
  assert_non_null(strstr(log, "replacement %3 is f32[] but %2 is f32[4]"));
  out = kc_graph_print_str(g);
  assert_non_null(strstr(out, "%2 = relu(%1)"));
  assert_null(strstr(out, "reduce_sum"));
  assert_int_equal(kc_graph_verify(g), KC_OK);
  free(out);
  free(log);
  kc_graph_free(g);

  /* rules that never settle are an error, not a hang */
  g = parse(ctx, "graph @g(%1: f32[4]) {\n  %2 = neg(%1) : f32[4]\n  return %2\n}\n");
  static const kc_rule loop[] = {KC_RULE("renew", neg_pat, renew_neg)};
  assert_int_equal(run_rules(g, loop, KC_LEN(loop), &log), KC_ERR_INTERNAL);
  assert_non_null(strstr(kc_last_error(ctx), "still rewrite"));
  free(log);
  kc_graph_free(g);

  /* a malformed pattern is reported before anything runs */
  static const kc_pat bad_pat[] = {P_OP(RELU, P_SUB(0))};
  static const kc_rule bad_rule[] = {KC_RULE("bad", bad_pat, to_a)};
  g = parse(ctx, "graph @g(%1: f32[4]) {\n  %2 = relu(%1) : f32[4]\n  return %2\n}\n");
  assert_int_equal(run_rules(g, bad_rule, KC_LEN(bad_rule), &log), KC_ERR_INTERNAL);
  free(log);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* --explain-fusion through the program: the reasons go to stderr, the IR to stdout. */
static void t_explain_cli(void **state) {
  const env *e = *state;
  char path[256], cmd[8192], *out, *err;
  snprintf(path, sizeof path, "%s/explain.kir", e->tmp);
  const char *text = "graph @g(%1: f32[4] \"x\", %2: f32[4] \"y\") {\n"
                     "  %3 = div(%1, %2) : f32[4]\n"
                     "  return %3\n}\n";
  th_write_file(path, text, strlen(text));
  snprintf(cmd, sizeof cmd, "'%s' opt '%s' --passes=canonicalize --explain-fusion", e->kernc, path);
  assert_int_equal(th_exec(cmd, &out, &err), 0);
  assert_non_null(strstr(out, "div(%1, %2)"));
  assert_null(strstr(out, "explain"));
  free(out);
  free(err);
  snprintf(cmd, sizeof cmd, "'%s' opt '%s' --fold-limit=x", e->kernc, path);
  assert_int_equal(th_exec(cmd, &out, &err), 2);
  assert_non_null(strstr(err, "--fold-limit"));
  free(out);
  free(err);
}

/* ---- fold and kc_compile -------------------------------------------------------------------- */

static void t_fold_data(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  /* an upper-triangular 16x16 mask: over 64 elements, so a named weight with the right data */
  kc_graph *g = parse(ctx, "graph @g(%1: f32[16,16] \"x\") {\n"
                           "  %2 = constant dense<[16, 16]> : i64[2]\n"
                           "  %3 = constant_of_shape(%2) {value=dense<3.0> : f32[1]} : f32[16,16]\n"
                           "  %4 = trilu(%3) : f32[16,16]\n"
                           "  %5 = add(%1, %4) : f32[16,16]\n"
                           "  return %5\n}\n");
  kc_pipeline p;
  kc_pass_options o = {.eval = kc_fold_evaluator()};
  assert_int_equal(kc_pipeline_parse(ctx, "fold", &p), KC_OK);
  assert_int_equal(kc_pipeline_run(&p, g, &o), KC_OK);
  const kc_node *w = &g->nodes[node_of(g, g->nodes[g->nnodes - 1].in[1].id)];
  assert_int_equal(w->op, KC_OP_WEIGHT);
  const char *name = kc_node_string(w, "name", "");
  const kc_tensor *t = NULL;
  for (uint32_t i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) t = &g->tensors[i];
  assert_non_null(t);
  assert_non_null(t->data);
  const float *d = t->data;
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++)
      assert_true(d[r * 16 + c] == (c >= r ? 3.0f : 0.0f));
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* An evaluator for fold: counts its calls, refuses graphs holding op `refuse`, else the CPU's. */
typedef struct test_eval {
  int calls;
  kc_op refuse; /* KC_OP_COUNT: none */
} test_eval;

static kc_status eval_refusing(void *user, const kc_graph *g, kc_tensor_desc *out) {
  test_eval *t = user;
  t->calls++;
  for (uint32_t i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op == t->refuse)
      return kc_node_errorf((kc_graph *)g, &g->nodes[i], KC_ERR_UNSUPPORTED, "refused (test)");
  const kc_evaluator *cpu = kc_fold_evaluator();
  return cpu->eval(cpu->user, g, out);
}

/* The data of the constant (or weight) defining %id, as f32. */
static const float *const_data(const kc_graph *g, uint32_t id) {
  const kc_node *n = &g->nodes[node_of(g, id)];
  const kc_tensor *t = NULL;
  if (n->op == KC_OP_CONSTANT) {
    const kc_attr *a = kc_node_attr(n, "value");
    assert_non_null(a);
    t = &g->tensors[a->u.tensor];
  } else {
    assert_int_equal(n->op, KC_OP_WEIGHT);
    for (uint32_t i = 0; i < g->ntensors; i++)
      if (g->tensors[i].name && strcmp(g->tensors[i].name, kc_node_string(n, "name", "")) == 0)
        t = &g->tensors[i];
  }
  assert_non_null(t);
  assert_non_null(t->data);
  return t->data;
}

/*
 * %a_0 = c = [1, 2]; %a_{i+1} = add(%a_i, c) for i < 30, so a_i = (i+1) c; b = neg(a_15) and
 * mul(b, c) after the 15th add (with_neg); the graph returns x + a_30 (and x + mul(b, c)).
 */
static kc_graph *chain_graph(kc_context *ctx, bool with_neg) {
  char text[8192];
  size_t len = (size_t)snprintf(text, sizeof text,
                                "graph @g(%%1: f32[2] \"x\") {\n"
                                "  %%2 = constant dense<[1.0, 2.0]> : f32[2]\n");
  uint32_t prev = 2, id = 3, mul = 0;
  for (int i = 0; i < 30; i++) {
    len += (size_t)snprintf(text + len, sizeof text - len, "  %%%u = add(%%%u, %%2) : f32[2]\n", id,
                            prev);
    prev = id++;
    if (with_neg && i == 14) {
      len += (size_t)snprintf(text + len, sizeof text - len,
                              "  %%%u = neg(%%%u) : f32[2]\n  %%%u = mul(%%%u, %%2) : f32[2]\n", id,
                              prev, id + 1, id);
      mul = id + 1;
      id += 2;
    }
  }
  len += (size_t)snprintf(text + len, sizeof text - len, "  %%%u = add(%%1, %%%u) : f32[2]\n", id,
                          prev);
  if (with_neg)
    snprintf(text + len, sizeof text - len,
             "  %%%u = add(%%1, %%%u) : f32[2]\n  return %%%u \"y\", %%%u \"z\"\n}\n", id + 1, mul,
             id, id + 1);
  else
    snprintf(text + len, sizeof text - len, "  return %%%u \"y\"\n}\n", id);
  return parse(ctx, text);
}

/* No evaluator: fold changes nothing. All constants: one evaluation. A refused node: a few
 * more (halving), not one per node; it and its reader stay, everything else folds. */
static void t_fold_evaluator(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_pipeline p;
  assert_int_equal(kc_pipeline_parse(ctx, "fold", &p), KC_OK);

  kc_graph *g = chain_graph(ctx, false);
  char *before = kc_graph_print_str(g);
  assert_int_equal(kc_pipeline_run(&p, g, NULL), KC_OK);
  char *after = kc_graph_print_str(g);
  assert_string_equal(before, after);
  free(before);
  free(after);

  test_eval te = {.refuse = KC_OP_COUNT};
  kc_evaluator ev = {eval_refusing, &te};
  kc_pass_options o = {.eval = &ev};
  assert_int_equal(kc_pipeline_run(&p, g, &o), KC_OK);
  assert_int_equal(te.calls, 1);
  assert_int_equal(g->nnodes, 2); /* the folded constant, x + it */
  const kc_node *y = &g->nodes[node_of(g, g->outputs[0].v.id)];
  const float *d = const_data(g, y->in[1].id);
  assert_true(d[0] == 31.0f && d[1] == 62.0f);
  kc_graph_free(g);

  /* 32 foldable nodes, neg the 16th: all 32 (fails), 16 (fails), then 8, 4, 2, 1 (the prefix
   * before neg), neg and its reader given up, the 15 after them: 7 evaluations, where one per
   * node after the failed batch would be 33 */
  g = chain_graph(ctx, true);
  te = (test_eval){.refuse = KC_OP_NEG};
  assert_int_equal(kc_pipeline_run(&p, g, &o), KC_OK);
  assert_true(te.calls >= 2 && te.calls <= 12);
  print_message("fold with a refused node: %d evaluations\n", te.calls);
  y = &g->nodes[node_of(g, g->outputs[0].v.id)];
  d = const_data(g, y->in[1].id);
  assert_true(d[0] == 31.0f && d[1] == 62.0f);
  const kc_node *z = &g->nodes[node_of(g, g->outputs[1].v.id)];
  const kc_node *mul = &g->nodes[node_of(g, z->in[1].id)];
  assert_int_equal(mul->op, KC_OP_MUL);
  const kc_node *neg = &g->nodes[node_of(g, mul->in[0].id)];
  assert_int_equal(neg->op, KC_OP_NEG);
  d = const_data(g, neg->in[0].id); /* a_15 = 16 c */
  assert_true(d[0] == 16.0f && d[1] == 32.0f);
  assert_int_equal(kc_graph_verify(g), KC_OK);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/*
 * fuse-quant keeps the bits: ONNX Runtime's dynamically quantized matmul (per-column scales,
 * a bias, K = 37 not a multiple of 4, N = 70 past one 64-column panel, weights over all of
 * int8) run unfused and as matmul_q8 give the same f32 outputs, compared byte for byte.
 */
/*
 * fuse-quant on graph text (input x f32[2,7,37], one output) must leave no `gone` op and give
 * the same bytes as the unfused graph on three input rounds (an outlier; all >= 0), or with
 * tol > 0 an f32 output within tol * max |y| of it. Weights get seeded values: i8 in
 * [-128, 127], u8 in [0, 255], f32 scales named "ws" small and positive.
 */
static void fuse_quant_check(const char *text, const char *gone, double tol) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = th_parse(ctx, text);
  uint64_t seed = 99;
  for (uint32_t i = 0; i < g->ntensors; i++) {
    kc_tensor *t = &g->tensors[i];
    if (t->data || !t->nbytes) continue;
    void *d = kc_arena_alloc(&g->arena, t->nbytes);
    assert_non_null(d);
    size_t n = t->nbytes / kc_dtype_size(t->dtype);
    for (size_t k = 0; k < n; k++)
      put(t->dtype, d, k,
          t->dtype == KC_I8            ? (double)((int)(rng_next(&seed) % 256) - 128)
          : t->dtype == KC_U8          ? (double)(rng_next(&seed) % 256)
          : strcmp(t->name, "ws") == 0 ? rng_unit(&seed) * 0.01 + 1e-4
                                       : rng_unit(&seed) * 2 - 1);
    t->data = d;
  }
  kc_graph *h = kc_graph_clone(g, true);
  kc_pipeline p;
  kc_pass_options o = {.no_print_on_fail = true};
  assert_int_equal(kc_pipeline_parse(ctx, "fuse-quant", &p), KC_OK);
  assert_int_equal(kc_pipeline_run(&p, h, &o), KC_OK);
  char *after = kc_graph_print_str(h);
  assert_non_null(strstr(after, "matmul_q8("));
  assert_null(strstr(after, gone));
  free(after);
  kc_compile_options co = {.target = "cpu", .passes = "", .threads = 2};
  kc_module *m[2];
  assert_int_equal(kc_compile(ctx, g, &co, &m[0]), KC_OK);
  assert_int_equal(kc_compile(ctx, h, &co, &m[1]), KC_OK);
  float x[2 * 7 * 37];
  static unsigned char y[2][2 * 7 * 70 * 4];
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < KC_LEN(x); i++)
      x[i] = (float)(rng_unit(&seed) * 6 - 2);
    if (round == 1) x[5] = 1e4f; /* one outlier: most values quantize to the zero point */
    if (round == 2)
      for (size_t i = 0; i < KC_LEN(x); i++)
        x[i] = fabsf(x[i]); /* min 0: zero point 0 */
    int64_t d[3] = {2, 7, 37};
    size_t nb[2];
    for (int k = 0; k < 2; k++) {
      kc_tensor_desc in = th_desc("x", KC_F32, 3, d, x), out;
      th_run(ctx, m[k], &in, 1, &out, 1);
      nb[k] = th_nbytes(&out);
      assert_true(nb[k] <= sizeof y[k]);
      memcpy(y[k], out.data, nb[k]);
    }
    assert_int_equal(nb[0], nb[1]);
    if (tol == 0) {
      assert_memory_equal(y[0], y[1], nb[0]);
      continue;
    }
    const float *u = (const float *)y[0], *v = (const float *)y[1];
    double big = 0, worst = 0;
    for (size_t i = 0; i < nb[0] / sizeof *u; i++) {
      big = fmax(big, fabs(u[i]));
      worst = fmax(worst, fabs((double)u[i] - v[i]));
    }
    assert_true(big > 0);
    if (worst > tol * big) print_error("max |diff| %g, max |y| %g\n", worst, big);
    assert_true(worst <= tol * big);
  }
  kc_module_free(m[0]);
  kc_module_free(m[1]);
  kc_graph_free(h);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* ORT's dynamic quantization: dynamic_quantize_linear, matmul_integer, cast, mul, add bias. */
static void t_fuse_quant_exact(void **state) {
  (void)state;
  fuse_quant_check("# kir 1\n"
                   "graph @q(%1: f32[2,7,37] \"x\") {\n"
                   "  %2, %3, %4 = dynamic_quantize_linear(%1) : u8[2,7,37], f32[], u8[]\n"
                   "  %5 = weight \"w\" : i8[37,70]\n"
                   "  %6 = weight \"ws\" : f32[70]\n"
                   "  %7 = mul(%3, %6) : f32[70]\n"
                   "  %8 = matmul_integer(%2, %5, %4) : i32[2,7,70]\n"
                   "  %9 = cast(%8) {to=f32} : f32[2,7,70]\n"
                   "  %10 = mul(%9, %7) : f32[2,7,70]\n"
                   "  %11 = weight \"b\" : f32[70]\n"
                   "  %12 = add(%11, %10) : f32[2,7,70]\n"
                   "  return %12 \"y\"\n"
                   "}\n",
                   "matmul_integer(", 0);
}

/* quantize_static's QOperator form: quantize_linear, then qlinear_matmul with a per-column
 * weight scale and zero point (u8 out), requantized as the qlinear kernel does. */
static void t_fuse_qlinear_exact(void **state) {
  (void)state;
  fuse_quant_check("# kir 1\n"
                   "graph @q(%1: f32[2,7,37] \"x\") {\n"
                   "  %2 = constant dense<0.031> : f32[]\n"
                   "  %3 = constant dense<117> : u8[]\n"
                   "  %4 = quantize_linear(%1, %2, %3) : u8[2,7,37]\n"
                   "  %5 = weight \"w\" : i8[37,70]\n"
                   "  %6 = weight \"ws\" : f32[70]\n"
                   "  %7 = constant dense<0> : i8[70]\n"
                   "  %8 = constant dense<0.07> : f32[]\n"
                   "  %9 = constant dense<131> : u8[]\n"
                   "  %10 = qlinear_matmul(%4, %2, %3, %5, %6, %7, %8, %9) : u8[2,7,70]\n"
                   "  return %10 \"y\"\n"
                   "}\n",
                   "qlinear_matmul(", 0);
}

/* quantize_static's QDQ form: quantize_linear then dequantize_linear on x, a per-column
 * dequantize_linear of int8 weights, matmul: equal up to float rounding (the graph rounds each
 * product and partial sum, matmul_q8 the exact integer sum once). */
static void t_fuse_qdq_close(void **state) {
  (void)state;
  fuse_quant_check("# kir 1\n"
                   "graph @q(%1: f32[2,7,37] \"x\") {\n"
                   "  %2 = constant dense<0.031> : f32[]\n"
                   "  %3 = constant dense<-3> : i8[]\n"
                   "  %4 = quantize_linear(%1, %2, %3) : i8[2,7,37]\n"
                   "  %5 = dequantize_linear(%4, %2, %3) : f32[2,7,37]\n"
                   "  %6 = weight \"w\" : i8[37,70]\n"
                   "  %7 = weight \"ws\" : f32[70]\n"
                   "  %8 = constant dense<0> : i8[70]\n"
                   "  %9 = dequantize_linear(%6, %7, %8) : f32[37,70]\n"
                   "  %10 = matmul(%5, %9) : f32[2,7,70]\n"
                   "  return %10 \"y\"\n"
                   "}\n",
                   "matmul(%", 1e-5);
}

/* kc_compile: NULL runs the default pipeline (the div becomes a mul), "" runs none. */
static void t_compile_pipeline(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = parse(ctx, "graph @g(%1: f32[4] \"x\") {\n"
                           "  %2 = constant dense<4.0> : f32[]\n"
                           "  %3 = div(%1, %2) : f32[4]\n"
                           "  %4 = identity(%3) : f32[4]\n"
                           "  return %4 \"y\"\n}\n");
  const char *lists[] = {NULL, "", "canonicalize"};
  const int nodes[] = {2, 3, 2}; /* constant and mul, or constant, div and identity */
  for (int k = 0; k < 3; k++) {
    kc_compile_options co = {.target = "cpu", .passes = lists[k], .threads = 1};
    kc_module *m = NULL;
    if (kc_compile(ctx, g, &co, &m) != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
    const kc_graph *mg = kc_module_graph(m);
    uint32_t live = 0;
    for (uint32_t i = 0; i < mg->nnodes; i++)
      live += mg->nodes[i].op != KC_OP_NOP;
    float x[4] = {1, 2, -4, 8};
    kc_tensor_desc in = {.name = "x", .dtype = KC_F32, .rank = 1, .dims = {4}, .data = x}, out;
    assert_int_equal(kc_run(m, &in, 1, &out, 1), KC_OK);
    const float *y = out.data;
    for (int i = 0; i < 4; i++)
      assert_true(y[i] == x[i] / 4.0f);
    if ((int)live != nodes[k])
      fail_msg("passes %s: %u nodes after compile, want %d", lists[k] ? lists[k] : "NULL", live,
               nodes[k]);
    kc_module_free(m);
  }
  kc_graph_free(g);
  kc_context_free(ctx);
}

/*
 * Attention whose additive mask has its own key length M: shapes agree at compile time, so the
 * mismatch (M != T) shows only when a run binds the sizes, inside the fused op; the error names
 * the ONNX node the op stands for (the head merge's Reshape), not only "%N (attention)".
 */
static void t_runtime_error_loc(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = parse(
      ctx, "graph @mha(%1: f32[B,S,64] \"q\", %2: f32[B,T,64] \"k\", %3: f32[B,T,64] \"v\", "
           "%4: f32[B,1,1,M] \"mask\") {\n"
           "  %5 = constant dense<[0, 0, 4, 16]> : i64[4] loc(\"/attn/Constant\")\n"
           "  %6 = reshape(%1, %5) : f32[B,S,4,16] loc(\"/attn/q/Reshape\")\n"
           "  %7 = transpose(%6) {perm=[0, 2, 1, 3]} : f32[B,4,S,16] loc(\"/attn/q/Transpose\")\n"
           "  %8 = reshape(%2, %5) : f32[B,T,4,16] loc(\"/attn/k/Reshape\")\n"
           "  %9 = transpose(%8) {perm=[0, 2, 3, 1]} : f32[B,4,16,T] loc(\"/attn/k/Transpose\")\n"
           "  %10 = reshape(%3, %5) : f32[B,T,4,16] loc(\"/attn/v/Reshape\")\n"
           "  %11 = transpose(%10) {perm=[0, 2, 1, 3]} : f32[B,4,T,16] loc(\"/attn/v/Transpose\")\n"
           "  %12 = matmul(%7, %9) : f32[B,4,S,T] loc(\"/attn/MatMul\")\n"
           "  %13 = constant dense<0.25> : f32[] loc(\"/attn/Constant_1\")\n"
           "  %14 = mul(%12, %13) : f32[B,4,S,T] loc(\"/attn/Mul\")\n"
           "  %15 = add(%14, %4) : f32[B,4,S,T] loc(\"/attn/Add\")\n"
           "  %16 = softmax(%15) {axis=-1} : f32[B,4,S,T] loc(\"/attn/Softmax\")\n"
           "  %17 = matmul(%16, %11) : f32[B,4,S,16] loc(\"/attn/MatMul_1\")\n"
           "  %18 = transpose(%17) {perm=[0, 2, 1, 3]} : f32[B,S,4,16] loc(\"/attn/Transpose\")\n"
           "  %19 = constant dense<[0, 0, 64]> : i64[3] loc(\"/attn/Constant_2\")\n"
           "  %20 = reshape(%18, %19) : f32[B,S,64] loc(\"/attn/Reshape\")\n"
           "  return %20 \"y\"\n}\n");
  kc_compile_options co = {.target = "cpu", .threads = 1}; /* the default pipeline */
  kc_module *m = NULL;
  if (kc_compile(ctx, g, &co, &m) != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
  const kc_graph *mg = kc_module_graph(m);
  const kc_node *attn = NULL;
  for (uint32_t i = 0; i < mg->nnodes; i++)
    if (mg->nodes[i].op == KC_OP_ATTENTION) attn = &mg->nodes[i];
  assert_non_null(attn); /* the error below must come from inside the fused op */
  assert_non_null(attn->loc);
  assert_string_equal(attn->loc, "/attn/Reshape");
  static float q[3 * 64], k[5 * 64], v[5 * 64], mask[5];
  kc_tensor_desc in[4] = {
      {.name = "q", .dtype = KC_F32, .rank = 3, .dims = {1, 3, 64}, .data = q},
      {.name = "k", .dtype = KC_F32, .rank = 3, .dims = {1, 5, 64}, .data = k},
      {.name = "v", .dtype = KC_F32, .rank = 3, .dims = {1, 5, 64}, .data = v},
      {.name = "mask", .dtype = KC_F32, .rank = 4, .dims = {1, 1, 1, 5}, .data = mask},
  };
  kc_tensor_desc out;
  if (kc_run(m, in, 4, &out, 1) != KC_OK) fail_msg("run: %s", kc_last_error(ctx));
  in[3].dims[3] = 4; /* M = 4, T = 5 */
  assert_int_equal(kc_run(m, in, 4, &out, 1), KC_ERR_SHAPE);
  const char *err = kc_last_error(ctx);
  if (!strstr(err, "node '/attn/Reshape' (attention, "))
    fail_msg("the run-time error does not name the ONNX node: %s", err);
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* Index of the pass named name in p, or -1. */
static int pass_index(const kc_pipeline *p, const char *name) {
  for (int i = 0; i < p->n; i++)
    if (strcmp(p->passes[i]->name, name) == 0) return i;
  return -1;
}

static void t_pipelines(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_pipeline p, d;
  assert_int_equal(kc_pipeline_for_target(ctx, "cpu", &p), KC_OK);
  assert_int_equal(kc_pipeline_named(ctx, "default", &d), KC_OK);
  assert_int_equal(p.n, d.n);
  /* shapes first, dead nodes last, canonical forms before folding and again after it */
  assert_string_equal(p.passes[0]->name, "infer");
  assert_string_equal(p.passes[p.n - 1]->name, "dce");
  int canon = pass_index(&p, "canonicalize"), fold = pass_index(&p, "fold");
  assert_true(canon > 0 && fold > canon && pass_index(&p, "cse") > fold);
  assert_true(p.passes[fold + 1] == &kc_pass_canonicalize);
  assert_int_equal(kc_pipeline_for_target(ctx, "nosuchtarget", &p), KC_OK);
  assert_int_equal(p.n, d.n);
  assert_int_equal(kc_pipeline_parse(ctx, "", &p), KC_OK);
  assert_int_equal(p.n, 0);
  for (int i = 0; i < kc_pass_count(); i++)
    assert_ptr_equal(kc_pass_lookup(kc_pass_at(i)->name), kc_pass_at(i));
  kc_context_free(ctx);
}

/* ---- main ------------------------------------------------------------------------------------ */

static env the_env;

static int setup(void **state) {
  if (!th_mkdtemp(the_env.tmp, sizeof the_env.tmp, "passes")) return -1;
  *state = &the_env;
  return 0;
}

static int teardown(void **state) {
  (void)state;
  return th_rmtree(the_env.tmp) ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC TESTS_DIR [[-]TEST_GLOB]\n", argv[0]);
    return 2;
  }
  the_env.kernc = argv[1];
  the_env.tests = argv[2];
  /* argv[3]: only the tests matching it (cmocka's glob), or with a leading '-' all but those, so
   * the numbers (t_lit_numbers, the slow part) can run as a ctest of their own */
  if (argc > 3 && argv[3][0] == '-')
    cmocka_set_skip_filter(argv[3] + 1);
  else if (argc > 3)
    cmocka_set_test_filter(argv[3]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_match_attention),    cmocka_unit_test(t_match_rules),
      cmocka_unit_test(t_match_captures),     cmocka_unit_test(t_match_shared_rows),
      cmocka_unit_test(t_pattern_check),      cmocka_unit_test(t_driver),
      cmocka_unit_test(t_pipelines),          cmocka_unit_test(t_fold_data),
      cmocka_unit_test(t_fold_evaluator),     cmocka_unit_test(t_compile_pipeline),
      cmocka_unit_test(t_explain_cli),        cmocka_unit_test(t_lit_files),
      cmocka_unit_test(t_lit_numbers),        cmocka_unit_test(t_default_pipeline_on_golden),
      cmocka_unit_test(t_runtime_error_loc),  cmocka_unit_test(t_fuse_quant_exact),
      cmocka_unit_test(t_fuse_qlinear_exact), cmocka_unit_test(t_fuse_qdq_close),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
