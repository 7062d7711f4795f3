/*
 * tests/gather_cases.h - Gather with indices out of range is an error naming the node, never a
 * clamp (issue 11); shared by tests/test_cpu_movement.c (the JIT), tests/test_aot.c (compiled
 * libraries, CPU and CUDA) and tests/test_cuda.c (the CUDA JIT).
 *
 * The graph: y = gather(table, indices, axis 0), table a weight f32[64, 3] with table[r][c] =
 * 10 r + c, the node named 'emb' (its loc). The indices are
 *   - a graph input "ids" i64[N] (N a symbol, so one compiled model runs every length),
 *   - or computed from it: ids - 1 with the input holding the indices plus one,
 *   - or a constant i64[n] (a graph per length).
 * Lengths 1, 64, 65 and 10^6 (with at most 64 values the JIT's shape inference knows them, past
 * that only the kernel sees them). In-range indices cover [-64, 64) (negatives count from the
 * end); the bad case puts one index outside it, and the error (at compile or at run time) must
 * name 'emb', say "out of range" and give the index.
 * Header-only (static functions): include it after <cmocka.h>, kernc.h and ir/internal.h.
 */
#ifndef KERNC_TESTS_GATHER_CASES_H
#define KERNC_TESTS_GATHER_CASES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { GC_ROWS = 64, GC_COLS = 3 };
enum { GC_INPUT, GC_COMPUTED, GC_CONSTANT };

static const int64_t gc_lengths[] = {1, 64, 65, 1000000};

static const float *gc_table(void) {
  static float t[GC_ROWS * GC_COLS];
  for (int r = 0; r < GC_ROWS; r++)
    for (int c = 0; c < GC_COLS; c++)
      t[r * GC_COLS + c] = (float)(10 * r + c);
  return t;
}

/* n indices in [-64, 64), or with bad != 0 one of them (at position n - 1, or 765432 of 10^6)
 * replaced by bad. */
static int64_t *gc_ids(int64_t n, int64_t bad, int64_t *bad_pos) {
  int64_t *ids = malloc((size_t)n * sizeof *ids);
  for (int64_t j = 0; j < n; j++)
    ids[j] = (j * 37 + 11) % (2 * GC_ROWS) - GC_ROWS;
  *bad_pos = n > 765432 ? 765432 : n - 1;
  if (bad) ids[*bad_pos] = bad;
  return ids;
}

/* The graph of kind GC_* (ids: the constant's values). */
static kc_graph *gc_graph(kc_context *ctx, int kind, int64_t n, const int64_t *ids) {
  kc_graph *g = kc_graph_new(ctx, "gather");
  kc_val table =
      kc_weight(g, "table", KC_F32, 2, (int64_t[]){GC_ROWS, GC_COLS}, (const void *)gc_table());
  kc_val idx;
  if (kind == GC_CONSTANT) {
    idx = kc_constant(g, KC_I64, 1, &n, ids);
  } else {
    idx = kc_input(g, "ids", KC_I64, 1, (kc_dim[]){kc_sym(g, "N")});
    if (kind == GC_COMPUTED) idx = kc_sub(g, idx, kc_const_i64(g, 1));
  }
  kc_val y = kc_gather(g, table, idx, 0);
  if (y.id) g->nodes[kc_value_of(g, y)->def - 1].loc = kc_arena_strdup(&g->arena, "emb");
  kc_output(g, y, "y");
  return g;
}

/* The "ids" input for kind (NULL data for a constant): the indices, plus one when computed. */
static int64_t *gc_input(int kind, const int64_t *ids, int64_t n) {
  if (kind == GC_CONSTANT) return NULL;
  int64_t *in = malloc((size_t)n * sizeof *in);
  for (int64_t j = 0; j < n; j++)
    in[j] = ids[j] + (kind == GC_COMPUTED);
  return in;
}

/* y [n, 3] against the table rows the indices pick; false with msg on a mismatch. */
static bool gc_check_y(const kc_tensor_desc *y, const int64_t *ids, int64_t n, char *msg,
                       size_t size) {
  if (y->dtype != KC_F32 || y->rank != 2 || y->dims[0] != n || y->dims[1] != GC_COLS) {
    snprintf(msg, size, "y has dtype %d rank %d dims %lld x %lld", y->dtype, y->rank,
             (long long)y->dims[0], (long long)y->dims[1]);
    return false;
  }
  const float *got = y->data, *t = gc_table();
  for (int64_t j = 0; j < n; j++) {
    int64_t r = ids[j] < 0 ? ids[j] + GC_ROWS : ids[j];
    for (int c = 0; c < GC_COLS; c++)
      if (got[j * GC_COLS + c] != t[r * GC_COLS + c]) {
        snprintf(msg, size, "y[%lld][%d] is %g, expected %g (index %lld)", (long long)j, c,
                 got[j * GC_COLS + c], t[r * GC_COLS + c], (long long)ids[j]);
        return false;
      }
  }
  return true;
}

/* The error of a bad case names the node (by its loc 'emb', unless the builder refused it
 * before it had one) and the index; false with msg when it does not. */
static bool gc_check_error(const char *err, int64_t bad, bool built, char *msg, size_t size) {
  char want[64];
  snprintf(want, sizeof want, "index %lld ", (long long)bad);
  const char *node = built ? "node 'emb' (gather" : "(gather";
  if (strstr(err, node) && strstr(err, "out of range") && strstr(err, want)) return true;
  snprintf(msg, size, "error \"%s\" does not name %s, the index (%s) or the range", err, node,
           want);
  return false;
}

/*
 * Every kind and length through kc_compile (target) and kc_run: in range, then one index of 64,
 * 70 and -65 out of range, which must fail (compile or run) naming the node. Returns the
 * number of failures, each printed.
 */
__attribute__((unused)) static int gc_jit_all(kc_context *ctx, const char *target) {
  int fails = 0;
  static const int64_t bads[] = {0, 64, 70, -65};
  for (int kind = 0; kind < 3; kind++)
    for (size_t l = 0; l < sizeof gc_lengths / sizeof *gc_lengths; l++)
      for (size_t b = 0; b < sizeof bads / sizeof *bads; b++) {
        int64_t n = gc_lengths[l], bad = bads[b], pos;
        if (n == 1000000 && b > 1 && kind != GC_INPUT) continue; /* one bad value is enough */
        int64_t *ids = gc_ids(n, bad, &pos), *in = gc_input(kind, ids, n);
        kc_graph *g = gc_graph(ctx, kind, n, ids);
        kc_module *m = NULL;
        kc_compile_options o = {.target = target};
        kc_status s = kc_graph_status(g);
        bool built = s == KC_OK; /* a constant <= 64 indices is checked as the node is made */
        if (s == KC_OK) s = kc_compile(ctx, g, &o, &m);
        kc_tensor_desc din = {.name = "ids", .dtype = KC_I64, .rank = 1, .dims = {n}, .data = in};
        kc_tensor_desc y;
        if (s == KC_OK) s = kc_run(m, &din, kind == GC_CONSTANT ? 0 : 1, &y, 1);
        char msg[1024] = "";
        bool ok =
            bad ? s != KC_OK && gc_check_error(kc_last_error(ctx), bad, built, msg, sizeof msg)
                : s == KC_OK && gc_check_y(&y, ids, n, msg, sizeof msg);
        if (!ok && !msg[0])
          snprintf(msg, sizeof msg, "%s", s == KC_OK ? "ran without an error" : kc_last_error(ctx));
        if (!ok) {
          print_error("FAIL gather %s kind %d, %lld indices, bad %lld: %s\n", target, kind,
                      (long long)n, (long long)bad, msg);
          fails++;
        }
        kc_module_free(m);
        kc_graph_free(g);
        free(ids);
        free(in);
      }
  return fails;
}

#endif /* KERNC_TESTS_GATHER_CASES_H */
