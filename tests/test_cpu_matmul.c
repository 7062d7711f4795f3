/*
 * tests/test_cpu_matmul.c - the JIT'd f32 matmul against a naive double-precision reference
 * computed here (not by kernc), and the thread pool that runs it.
 *
 * Covers odd sizes below, at and across every blocking boundary (a second kernel with tiny
 * blocks makes every loop of the generated code iterate with small sizes), K = 0, transposed
 * operands through strides (B^T by the transposing packer), batches with a broadcast operand,
 * row-tile and column splits and the policy choosing between them,
 * 1 vs 2 threads (bitwise equal: each element sums in the same order), and dynamic chunks.
 * C starts as NaN so every element must be written.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS for the guard pages */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "codegen/codegen.h"
#include "runtime/runtime.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct fixture {
  kc_context *ctx;
  kc_cpu *cpu;
  kc_pool *pool;
  kc_matmul_kernel def;  /* host blocking */
  kc_matmul_kernel tiny; /* blocks of a few tiles, so small sizes cross every boundary */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->ctx = kc_context_new();
  if (kc_cpu_new(f->ctx, &f->cpu) != KC_OK) return -1;
  if (kc_cpu_matmul(f->cpu, "test_mm_default", NULL, &f->def) != KC_OK) return -1;
  kc_matmul_cfg tiny = {.mr = 5, .nv = 1, .kc = 7, .mc = 10, .nc = 0, .unroll = 4};
  tiny.nc = 2 * kc_cpu_host(f->cpu)->f32_lanes;
  if (kc_cpu_matmul(f->cpu, "test_mm_tiny", &tiny, &f->tiny) != KC_OK) return -1;
  if (kc_pool_new(f->ctx, 2, &f->pool) != KC_OK) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  kc_pool_free(f->pool);
  kc_cpu_free(f->cpu);
  kc_context_free(f->ctx);
  free(f);
  return 0;
}

typedef struct task {
  const kc_matmul_kernel *k;
  const float *a, *b;
  float *c, *ws;
  int64_t ws_stride;
  const int64_t *args;
} task;

static void run_slice(void *arg, int64_t begin, int64_t end, int thread) {
  task *t = arg;
  t->k->fn(t->a, t->b, t->c, t->ws + t->ws_stride * thread, t->args, begin, end);
}

/* Run the kernel over all units with `threads` threads (grain as kc_pool_run). */
static void run(fixture *f, const kc_matmul_kernel *k, const float *a, const float *b, float *c,
                const int64_t *args, int threads, int64_t grain) {
  assert_int_equal(kc_pool_set_threads(f->pool, threads), KC_OK);
  int64_t stride = (k->ws_floats + 15) / 16 * 16;
  float *ws = aligned_alloc(64, (size_t)(stride * threads) * sizeof(float));
  assert_non_null(ws);
  task t = {k, a, b, c, ws, stride, args};
  kc_pool_run(f->pool, run_slice, &t, kc_matmul_units(k, args), grain);
  free(ws);
}

static float *rand_floats(int64_t n, unsigned *seed) {
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  for (int64_t i = 0; i < n; i++)
    p[i] = (float)rand_r(seed) / (float)RAND_MAX * 2.0f - 1.0f;
  return p;
}

static float *nan_floats(int64_t n) {
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  for (int64_t i = 0; i < n; i++)
    p[i] = NAN;
  return p;
}

/* Compare C with a double reference; tolerance scales with sum |a||b| of each element. */
static void check(const float *a, const float *b, const float *c, const int64_t *x) {
  for (int64_t bi = 0; bi < x[KC_MM_BATCH]; bi++)
    for (int64_t i = 0; i < x[KC_MM_M]; i++)
      for (int64_t j = 0; j < x[KC_MM_N]; j++) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < x[KC_MM_K]; k++) {
          double av = a[bi * x[KC_MM_BSA] + i * x[KC_MM_RSA] + k * x[KC_MM_CSA]];
          double bv = b[bi * x[KC_MM_BSB] + k * x[KC_MM_RSB] + j * x[KC_MM_CSB]];
          ref += av * bv;
          mag += fabs(av * bv);
        }
        double got = c[bi * x[KC_MM_BSC] + i * x[KC_MM_LDC] + j];
        if (!(fabs(got - ref) <= 1e-5 * mag + 1e-30)) {
          fail_msg("C[%lld][%lld][%lld] = %g, reference %g (M=%lld N=%lld K=%lld)", (long long)bi,
                   (long long)i, (long long)j, got, ref, (long long)x[KC_MM_M],
                   (long long)x[KC_MM_N], (long long)x[KC_MM_K]);
        }
      }
}

/* Plain row-major C = A @ B with both kernels, 1 and 2 threads, row and column splits. */
static void plain(fixture *f, int64_t m, int64_t n, int64_t k) {
  unsigned seed = (unsigned)(m * 131 + n * 17 + k);
  float *a = rand_floats(m * k, &seed), *b = rand_floats(k * n, &seed);
  float *c1 = nan_floats(m * n), *c2 = nan_floats(m * n);
  const kc_matmul_kernel *ks[2] = {&f->def, &f->tiny};
  for (int ki = 0; ki < 2; ki++) {
    int64_t x[KC_MM_NARGS];
    kc_matmul_args_rowmajor(x, m, n, k);
    run(f, ks[ki], a, b, c1, x, 1, 0);
    check(a, b, c1, x);
    run(f, ks[ki], a, b, c2, x, 2, 0); /* column split */
    assert_memory_equal(c1, c2, (size_t)(m * n) * sizeof *c1);
    for (int64_t i = 0; i < m * n; i++)
      c2[i] = NAN;
    x[KC_MM_MTILE] = (m + 1) / 2; /* row split */
    run(f, ks[ki], a, b, c2, x, 2, 0);
    assert_memory_equal(c1, c2, (size_t)(m * n) * sizeof *c1);
    for (int64_t i = 0; i < m * n; i++)
      c2[i] = NAN;
    x[KC_MM_MTILE] = 3; /* many small units, handed out dynamically */
    run(f, ks[ki], a, b, c2, x, 2, 1);
    assert_memory_equal(c1, c2, (size_t)(m * n) * sizeof *c1);
    for (int64_t i = 0; i < m * n; i++)
      c1[i] = c2[i] = NAN;
  }
  free(a);
  free(b);
  free(c1);
  free(c2);
}

static void t_tiny_sizes(void **state) {
  fixture *f = *state;
  plain(f, 1, 1, 1);
  plain(f, 3, 5, 7);
  plain(f, 2, 1, 3);
  plain(f, 1, 40, 2);
}

static void t_odd_sizes(void **state) {
  fixture *f = *state;
  plain(f, 17, 33, 65);
  plain(f, 128, 96, 200);
  plain(f, 31, 47, 129);
  plain(f, 13, 17, 16);
}

static void t_block_boundaries(void **state) {
  fixture *f = *state;
  const kc_matmul_cfg *c = &f->def.cfg;
  int64_t nr = f->def.unit_n;
  /* exactly one tile, one more than a tile, and across KC / MC / NC of the host kernel */
  plain(f, c->mr, nr, c->kc);
  plain(f, c->mr + 1, nr + 1, c->kc + 1);
  plain(f, c->mc + 3, 2 * nr - 1, 2 * c->kc + 5);
  plain(f, 7, c->nc + nr + 5, 9);
}

static void t_k_zero(void **state) {
  fixture *f = *state;
  int64_t x[KC_MM_NARGS];
  float a[1], b[1];
  float *c = nan_floats(6 * 40);
  kc_matmul_args_rowmajor(x, 6, 40, 0);
  run(f, &f->def, a, b, c, x, 2, 0);
  for (int i = 0; i < 6 * 40; i++)
    assert_true(c[i] == 0.0f);
  free(c);
}

static void t_empty(void **state) {
  fixture *f = *state;
  int64_t x[KC_MM_NARGS];
  kc_matmul_args_rowmajor(x, 0, 5, 3);
  assert_int_equal(kc_matmul_units(&f->def, x), 0);
  kc_matmul_args_rowmajor(x, 5, 0, 3);
  assert_int_equal(kc_matmul_units(&f->def, x), 0);
}

/* A^T and B^T given through strides, with row pitches wider than the matrices. */
static void t_transposed(void **state) {
  fixture *f = *state;
  int64_t m = 19, n = 37, k = 23;
  unsigned seed = 7;
  float *at = rand_floats(k * (m + 3), &seed); /* A^T: k rows of m (+3 pad) */
  float *bt = rand_floats(n * (k + 2), &seed); /* B^T: n rows of k (+2 pad) */
  float *c = nan_floats(m * (n + 4));
  const kc_matmul_kernel *ks[2] = {&f->def, &f->tiny};
  for (int ki = 0; ki < 2; ki++) {
    int64_t x[KC_MM_NARGS];
    kc_matmul_args_rowmajor(x, m, n, k);
    x[KC_MM_RSA] = 1, x[KC_MM_CSA] = m + 3;
    x[KC_MM_RSB] = 1, x[KC_MM_CSB] = k + 2;
    x[KC_MM_LDC] = n + 4;
    run(f, ks[ki], at, bt, c, x, 2, 0);
    check(at, bt, c, x);
    /* A^T with B plain (row-major, stride n) */
    float *b = rand_floats(k * n, &seed);
    x[KC_MM_RSB] = n, x[KC_MM_CSB] = 1;
    run(f, ks[ki], at, b, c, x, 1, 0);
    check(at, b, c, x);
    /* A with neither stride 1 (every other column of a wider matrix) */
    float *a2 = rand_floats(m * (2 * k + 1), &seed);
    x[KC_MM_RSA] = 2 * k + 1, x[KC_MM_CSA] = 2;
    run(f, ks[ki], a2, b, c, x, 2, 0);
    check(a2, b, c, x);
    free(a2);
    free(b);
  }
  free(at);
  free(bt);
  free(c);
}

/* B^T (stored [N, K], pitch K + 3) over several panels, K slices and a partial last panel:
 * the transposing packer, with 1 and 2 threads and both splits giving the same bits. */
static void t_transposed_large(void **state) {
  fixture *f = *state;
  int64_t m = 50, n = 3 * f->def.unit_n + 8, k = 2 * f->def.cfg.kc + 37;
  unsigned seed = 11;
  float *a = rand_floats(m * k, &seed), *bt = rand_floats(n * (k + 3), &seed);
  float *c1 = nan_floats(m * n), *c2 = nan_floats(m * n);
  const kc_matmul_kernel *ks[2] = {&f->def, &f->tiny};
  for (int ki = 0; ki < 2; ki++) {
    int64_t x[KC_MM_NARGS];
    kc_matmul_args_rowmajor(x, m, n, k);
    x[KC_MM_RSB] = 1, x[KC_MM_CSB] = k + 3;
    run(f, ks[ki], a, bt, c1, x, 1, 0);
    check(a, bt, c1, x);
    run(f, ks[ki], a, bt, c2, x, 2, 0);
    assert_memory_equal(c1, c2, (size_t)(m * n) * sizeof *c1);
    x[KC_MM_MTILE] = 24;
    run(f, ks[ki], a, bt, c2, x, 2, 0);
    assert_memory_equal(c1, c2, (size_t)(m * n) * sizeof *c1);
  }
  free(a);
  free(bt);
  free(c1);
  free(c2);
}

/* The split policy: a few hundred rows go by columns (each thread packs half of B, not all of
 * it); many rows of a narrow product go by rows. */
static void t_split_policy(void **state) {
  fixture *f = *state;
  int64_t x[KC_MM_NARGS];
  kc_matmul_args_rowmajor(x, 128, 3072, 768);
  kc_matmul_args_split(&f->def, x, 2);
  assert_int_equal(x[KC_MM_MTILE], 128);
  kc_matmul_args_rowmajor(x, 128, 50257, 768);
  kc_matmul_args_split(&f->def, x, 2);
  assert_int_equal(x[KC_MM_MTILE], 128);
  kc_matmul_args_rowmajor(x, 4096, 64, 64);
  kc_matmul_args_split(&f->def, x, 2);
  assert_true(x[KC_MM_MTILE] < 4096 && x[KC_MM_MTILE] >= 2048);
  kc_matmul_args_split(&f->def, x, 1);
  assert_int_equal(x[KC_MM_MTILE], 4096);
}

/* [batch, M, K] @ [K, N] with B broadcast (batch stride 0), and a fully batched form. */
static void t_batched(void **state) {
  fixture *f = *state;
  int64_t batch = 3, m = 9, n = 21, k = 14;
  unsigned seed = 99;
  float *a = rand_floats(batch * m * k, &seed), *b = rand_floats(batch * k * n, &seed);
  float *c = nan_floats(batch * m * n), *c2 = nan_floats(batch * m * n);
  const kc_matmul_kernel *ks[2] = {&f->def, &f->tiny};
  for (int ki = 0; ki < 2; ki++) {
    for (int bcast = 0; bcast < 2; bcast++) {
      int64_t x[KC_MM_NARGS];
      kc_matmul_args_rowmajor(x, m, n, k);
      x[KC_MM_BATCH] = batch;
      x[KC_MM_BSA] = m * k;
      x[KC_MM_BSB] = bcast ? 0 : k * n;
      x[KC_MM_BSC] = m * n;
      run(f, ks[ki], a, b, c, x, 1, 0);
      check(a, b, c, x);
      x[KC_MM_MTILE] = 4;
      run(f, ks[ki], a, b, c2, x, 2, 0);
      assert_memory_equal(c, c2, (size_t)(batch * m * n) * sizeof *c);
    }
  }
  free(a);
  free(b);
  free(c);
  free(c2);
}

/* A bigger product where the two threads really overlap. */
static void t_large_threads(void **state) {
  fixture *f = *state;
  plain(f, 300, 257, 310);
}

/* n floats ending exactly at an inaccessible page, so any read or write past them faults. */
typedef struct guarded {
  void *base;
  size_t len;
  float *p;
} guarded;

static guarded guard_alloc(int64_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = (size_t)n * sizeof(float);
  size_t data = (bytes + page - 1) / page * page;
  guarded g = {NULL, data + page, NULL};
  g.base = mmap(NULL, g.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(g.base != MAP_FAILED);
  assert_int_equal(mprotect((char *)g.base + data, page, PROT_NONE), 0);
  g.p = (float *)((char *)g.base + data - bytes);
  return g;
}

static void guard_free(guarded *g) { munmap(g->base, g->len); }

/* Generated code must stay inside A, B, C and its workspace at every edge. */
static void t_no_overrun(void **state) {
  fixture *f = *state;
  int64_t sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {19, 67, 33}, {6, 64, 16}, {50, 130, 390}};
  const kc_matmul_kernel *ks[2] = {&f->def, &f->tiny};
  for (unsigned si = 0; si < sizeof sizes / sizeof *sizes; si++) {
    int64_t m = sizes[si][0], n = sizes[si][1], k = sizes[si][2];
    unsigned seed = 5;
    guarded a = guard_alloc(m * k), b = guard_alloc(k * n), c = guard_alloc(m * n);
    for (int64_t i = 0; i < m * k; i++)
      a.p[i] = (float)rand_r(&seed) / (float)RAND_MAX;
    for (int64_t i = 0; i < k * n; i++)
      b.p[i] = (float)rand_r(&seed) / (float)RAND_MAX;
    for (int ki = 0; ki < 2; ki++) {
      /* the workspace must be 64-byte aligned, so it ends within 60 bytes of the guard */
      guarded ws = guard_alloc(ks[ki]->ws_floats + 15);
      float *wsp = (float *)((uintptr_t)ws.p / 64 * 64);
      int64_t x[KC_MM_NARGS];
      kc_matmul_args_rowmajor(x, m, n, k);
      ks[ki]->fn(a.p, b.p, c.p, wsp, x, 0, kc_matmul_units(ks[ki], x));
      check(a.p, b.p, c.p, x);
      /* transposed B: the transposing packer */
      x[KC_MM_RSB] = 1, x[KC_MM_CSB] = k;
      ks[ki]->fn(a.p, b.p, c.p, wsp, x, 0, kc_matmul_units(ks[ki], x));
      check(a.p, b.p, c.p, x);
      guard_free(&ws);
    }
    guard_free(&a);
    guard_free(&b);
    guard_free(&c);
  }
}

/* ---- thread pool ----------------------------------------------------------------------------- */

typedef struct cover {
  int *hits;
  int bad_thread;
  int nthreads;
} cover;

static void mark(void *arg, int64_t begin, int64_t end, int thread) {
  cover *c = arg;
  if (thread < 0 || thread >= c->nthreads) c->bad_thread = 1;
  for (int64_t i = begin; i < end; i++)
    __atomic_fetch_add(&c->hits[i], 1, __ATOMIC_RELAXED);
}

static void t_pool_covers_range(void **state) {
  fixture *f = *state;
  int ns[] = {0, 1, 2, 3, 17, 1000};
  for (int threads = 1; threads <= 3; threads++) {
    assert_int_equal(kc_pool_set_threads(f->pool, threads), KC_OK);
    assert_int_equal(kc_pool_threads(f->pool), threads);
    for (unsigned ni = 0; ni < sizeof ns / sizeof *ns; ni++)
      for (int64_t grain = 0; grain <= 7; grain += 7) {
        int n = ns[ni];
        cover c = {calloc((size_t)n + 1, sizeof(int)), 0, threads};
        for (int rep = 0; rep < 3; rep++)
          kc_pool_run(f->pool, mark, &c, n, grain);
        for (int i = 0; i < n; i++)
          assert_int_equal(c.hits[i], 3);
        assert_false(c.bad_thread);
        free(c.hits);
      }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_tiny_sizes),
      cmocka_unit_test(t_odd_sizes),
      cmocka_unit_test(t_block_boundaries),
      cmocka_unit_test(t_k_zero),
      cmocka_unit_test(t_empty),
      cmocka_unit_test(t_transposed),
      cmocka_unit_test(t_transposed_large),
      cmocka_unit_test(t_split_policy),
      cmocka_unit_test(t_batched),
      cmocka_unit_test(t_large_threads),
      cmocka_unit_test(t_no_overrun),
      cmocka_unit_test(t_pool_covers_range),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
