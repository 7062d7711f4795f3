/*
 * tests/test_matmul_small.c - the matmul core's small-M path (codegen/cpu/matmul_small.c):
 * products of at most small_m rows stream B as stored instead of packing it.
 *
 * References are computed here: a double-precision naive loop for every case, and, on hosts
 * with FMA, the exact float sequence the path promises (row-major B: one fmaf chain over
 * k = 0, 1, ...; B^T: one chain per lane over k = lane mod W, then a tree of halves), which
 * also shows the path was taken (the packed core sums K in slices of KC and differs).
 *
 * Core level (kc_cpu_matmul): M = 1 .. small_m + 1 (the last one packs), odd N across vector
 * and strip widths and below one vector, N = 50257, odd K, transposed B with a padded pitch,
 * transposed A, batches with B batched or broadcast; 1 and 2 threads and unit by unit give the
 * same bits. Graph level (kc_compile): matmul_ep with bias, relu / gelu / gelu_tanh and
 * residual, gemm with B^T, batched and folded products, f16 and bf16 (the core widens them), at
 * decode row counts bound at run time, modules for 1 and 2 threads giving the same bits.
 * Core-level outputs start as NaN.
 */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "codegen/codegen.h"
#include "kernc.h"
#include "runtime/runtime.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct fixture {
  kc_context *ctx;
  kc_cpu *cpu;
  kc_pool *pool;
  kc_matmul_kernel def;    /* host defaults: the small path up to def.cfg.small_m rows */
  kc_matmul_kernel packed; /* small_m = -1: always packs */
  int lanes;
  bool fma;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->ctx = kc_context_new();
  if (kc_cpu_new(f->ctx, &f->cpu) != KC_OK) return -1;
  if (kc_cpu_matmul(f->cpu, "test_small_def", NULL, &f->def) != KC_OK) return -1;
  kc_matmul_cfg p = {.small_m = -1};
  if (kc_cpu_matmul(f->cpu, "test_small_packed", &p, &f->packed) != KC_OK) return -1;
  if (kc_pool_new(f->ctx, 2, &f->pool) != KC_OK) return -1;
  f->lanes = kc_cpu_host(f->cpu)->f32_lanes;
  f->fma = kc_cpu_host(f->cpu)->has_fma != 0;
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

/* ---- core level ------------------------------------------------------------------------------ */

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

static void fill_nan(float *p, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    p[i] = NAN;
}

static float aat(const float *a, const int64_t *x, int64_t bi, int64_t i, int64_t k) {
  return a[bi * x[KC_MM_BSA] + i * x[KC_MM_RSA] + k * x[KC_MM_CSA]];
}
static float bat(const float *b, const int64_t *x, int64_t bi, int64_t k, int64_t j) {
  return b[bi * x[KC_MM_BSB] + k * x[KC_MM_RSB] + j * x[KC_MM_CSB]];
}

/* C against the double reference; tolerance scales with sum |a b| of each element. */
static void check(const float *a, const float *b, const float *c, const int64_t *x,
                  const char *what) {
  for (int64_t bi = 0; bi < x[KC_MM_BATCH]; bi++)
    for (int64_t i = 0; i < x[KC_MM_M]; i++)
      for (int64_t j = 0; j < x[KC_MM_N]; j++) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < x[KC_MM_K]; k++) {
          double p = (double)aat(a, x, bi, i, k) * bat(b, x, bi, k, j);
          ref += p;
          mag += fabs(p);
        }
        double got = c[bi * x[KC_MM_BSC] + i * x[KC_MM_LDC] + j];
        if (!(fabs(got - ref) <= 1e-5 * mag + 1e-30))
          fail_msg("%s: C[%lld][%lld][%lld] = %g, reference %g (M=%lld N=%lld K=%lld)", what,
                   (long long)bi, (long long)i, (long long)j, got, ref, (long long)x[KC_MM_M],
                   (long long)x[KC_MM_N], (long long)x[KC_MM_K]);
      }
}

/* The small path's float sequence (see the top), element by element, bit for bit. */
static void check_exact(const fixture *f, const float *a, const float *b, const float *c,
                        const int64_t *x, bool trans) {
  int w = f->lanes;
  for (int64_t bi = 0; bi < x[KC_MM_BATCH]; bi++)
    for (int64_t i = 0; i < x[KC_MM_M]; i++)
      for (int64_t j = 0; j < x[KC_MM_N]; j++) {
        float want;
        if (!trans) {
          want = 0.0f;
          for (int64_t k = 0; k < x[KC_MM_K]; k++)
            want = fmaf(aat(a, x, bi, i, k), bat(b, x, bi, k, j), want);
        } else {
          float part[64] = {0};
          for (int64_t k = 0; k < x[KC_MM_K]; k++)
            part[k % w] = fmaf(aat(a, x, bi, i, k), bat(b, x, bi, k, j), part[k % w]);
          for (int h = w / 2; h >= 1; h /= 2)
            for (int l = 0; l < h; l++)
              part[l] = part[l] + part[l + h];
          want = part[0];
        }
        float got = c[bi * x[KC_MM_BSC] + i * x[KC_MM_LDC] + j];
        if (memcmp(&got, &want, sizeof got))
          fail_msg("C[%lld][%lld][%lld] = %.9g, the small path's sequence gives %.9g "
                   "(M=%lld N=%lld K=%lld%s)",
                   (long long)bi, (long long)i, (long long)j, got, want, (long long)x[KC_MM_M],
                   (long long)x[KC_MM_N], (long long)x[KC_MM_K], trans ? " B^T" : "");
      }
}

/* C's elements (batch, rows, N columns at pitch LDC). */
static int64_t c_floats(const int64_t *x) {
  return (x[KC_MM_BATCH] - 1) * x[KC_MM_BSC] + (x[KC_MM_M] - 1) * x[KC_MM_LDC] + x[KC_MM_N];
}

/*
 * One product shape through the default kernel (1 thread, 2 threads, unit by unit: the same
 * bits), against the reference, and exact where the small path runs; through the packing
 * kernel against the reference.
 */
static void core_case(fixture *f, const float *a, const float *b, const int64_t *x, bool trans) {
  int64_t nc = c_floats(x);
  float *c1 = malloc((size_t)nc * sizeof *c1), *c2 = malloc((size_t)nc * sizeof *c2);
  fill_nan(c1, nc);
  run(f, &f->def, a, b, c1, x, 1, 0);
  check(a, b, c1, x, "1 thread");
  bool small = x[KC_MM_M] <= f->def.cfg.small_m && x[KC_MM_K] > 0 &&
               (x[KC_MM_CSB] == 1 || (x[KC_MM_RSB] == 1 && x[KC_MM_CSA] == 1));
  if (small && f->fma) check_exact(f, a, b, c1, x, x[KC_MM_CSB] != 1);
  fill_nan(c2, nc);
  run(f, &f->def, a, b, c2, x, 2, 0);
  assert_memory_equal(c1, c2, (size_t)nc * sizeof *c1);
  fill_nan(c2, nc);
  run(f, &f->def, a, b, c2, x, 2, 1);
  assert_memory_equal(c1, c2, (size_t)nc * sizeof *c1);
  fill_nan(c2, nc);
  run(f, &f->packed, a, b, c2, x, 2, 0);
  check(a, b, c2, x, "packed");
  free(c1);
  free(c2);
}

/* Row-major A [M, K] @ B [K, N] (tb: B^T stored [N, K] at pitch K + 3). */
static void plain(fixture *f, int64_t m, int64_t n, int64_t k, bool tb) {
  unsigned seed = (unsigned)(m * 7919 + n * 31 + k * 3 + tb);
  float *a = rand_floats(m * k, &seed);
  float *b = rand_floats(tb ? n * (k + 3) : k * n, &seed);
  int64_t x[KC_MM_NARGS];
  kc_matmul_args_rowmajor(x, m, n, k);
  if (tb) x[KC_MM_RSB] = 1, x[KC_MM_CSB] = k + 3;
  kc_matmul_args_split(&f->def, x, 2);
  core_case(f, a, b, x, tb);
  free(a);
  free(b);
}

/* Every row count up to one past the threshold, N across vector and strip edges, odd K. */
static void t_rows_and_edges(void **state) {
  fixture *f = *state;
  int64_t ns[] = {1, 5, 15, 16, 17, 33, 47, 64, 65, 100, 129};
  int64_t ks[] = {1, 3, 17, 131};
  for (int64_t m = 1; m <= f->def.cfg.small_m + 1; m++)
    for (unsigned ni = 0; ni < sizeof ns / sizeof *ns; ni++)
      for (unsigned ki = 0; ki < sizeof ks / sizeof *ks; ki++)
        for (int tb = 0; tb < 2; tb++)
          plain(f, m, ns[ni], ks[ki], tb);
}

/* K across several k blocks and a ragged last one, past the packed core's KC. */
static void t_deep(void **state) {
  fixture *f = *state;
  int64_t kc = f->def.cfg.kc;
  for (int tb = 0; tb < 2; tb++) {
    plain(f, 1, 77, kc + 13, tb);
    plain(f, 3, 200, 2 * kc + 5, tb);
    plain(f, f->def.cfg.small_m, 33, 3 * kc + 1, tb);
  }
}

/* GPT-2's LM head width (odd, many panels), one and a few rows. */
static void t_wide(void **state) {
  fixture *f = *state;
  for (int tb = 0; tb < 2; tb++) {
    plain(f, 1, 50257, 9, tb);
    plain(f, 3, 50257, 5, tb);
  }
}

/* A^T through strides: row-major B streams (A read element by element); B^T needs A's rows
 * contiguous and packs instead. Also a row pitch of C wider than N. */
static void t_strides(void **state) {
  fixture *f = *state;
  for (int64_t m = 1; m <= 4; m++) {
    int64_t n = 37, k = 23;
    unsigned seed = 17;
    float *at = rand_floats(k * (m + 2), &seed); /* A^T: k rows of m (+2 pad) */
    float *b = rand_floats(n * (k + 1), &seed);
    int64_t x[KC_MM_NARGS];
    kc_matmul_args_rowmajor(x, m, n, k);
    x[KC_MM_RSA] = 1, x[KC_MM_CSA] = m + 2;
    x[KC_MM_LDC] = n + 5;
    core_case(f, at, b, x, false);
    x[KC_MM_RSB] = 1, x[KC_MM_CSB] = k + 1; /* B^T with A^T: packed */
    core_case(f, at, b, x, true);
    free(at);
    free(b);
  }
}

/* [batch, M, K] @ [batch or 1, K, N]. */
static void t_batched(void **state) {
  fixture *f = *state;
  int64_t batch = 3, n = 45, k = 19;
  for (int64_t m = 1; m <= 3; m++)
    for (int bcast = 0; bcast < 2; bcast++)
      for (int tb = 0; tb < 2; tb++) {
        unsigned seed = (unsigned)(m + 10 * bcast + 100 * tb);
        float *a = rand_floats(batch * m * k, &seed), *b = rand_floats(batch * k * n, &seed);
        int64_t x[KC_MM_NARGS];
        kc_matmul_args_rowmajor(x, m, n, k);
        if (tb) x[KC_MM_RSB] = 1, x[KC_MM_CSB] = k;
        x[KC_MM_BATCH] = batch;
        x[KC_MM_BSA] = m * k;
        x[KC_MM_BSB] = bcast ? 0 : k * n;
        x[KC_MM_BSC] = m * n;
        core_case(f, a, b, x, tb);
        free(a);
        free(b);
      }
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

/* Edge vectors and strips stay inside A, B and C (the JIT'd code is not under ASan). */
static void t_no_overrun(void **state) {
  fixture *f = *state;
  int64_t ns[] = {1, 17, 33, 65}, ks[] = {1, 5, 19};
  for (int64_t m = 1; m <= f->def.cfg.small_m; m++)
    for (unsigned ni = 0; ni < 4; ni++)
      for (unsigned ki = 0; ki < 3; ki++)
        for (int tb = 0; tb < 2; tb++) {
          int64_t n = ns[ni], k = ks[ki];
          unsigned seed = (unsigned)(m * 3 + n + k);
          guarded a = guard_alloc(m * k), b = guard_alloc(k * n), c = guard_alloc(m * n);
          for (int64_t i = 0; i < m * k; i++)
            a.p[i] = (float)rand_r(&seed) / (float)RAND_MAX;
          for (int64_t i = 0; i < k * n; i++)
            b.p[i] = (float)rand_r(&seed) / (float)RAND_MAX;
          int64_t x[KC_MM_NARGS];
          kc_matmul_args_rowmajor(x, m, n, k);
          if (tb) x[KC_MM_RSB] = 1, x[KC_MM_CSB] = k;
          f->def.fn(a.p, b.p, c.p, NULL, x, 0, kc_matmul_units(&f->def, x));
          check(a.p, b.p, c.p, x, "guarded");
          guard_free(&a);
          guard_free(&b);
          guard_free(&c);
        }
}

/* K = 0 still zeroes C (the packed path does it). */
static void t_k_zero(void **state) {
  fixture *f = *state;
  int64_t x[KC_MM_NARGS];
  float a[1] = {0}, b[1] = {0}, c[3 * 20];
  fill_nan(c, 3 * 20);
  kc_matmul_args_rowmajor(x, 3, 20, 0);
  run(f, &f->def, a, b, c, x, 2, 0);
  for (int i = 0; i < 3 * 20; i++)
    assert_true(c[i] == 0.0f);
}

/* The split keeps one row tile: columns go to threads, B is read once. */
static void t_split(void **state) {
  fixture *f = *state;
  int64_t x[KC_MM_NARGS];
  for (int64_t m = 1; m <= f->def.cfg.small_m; m++) {
    kc_matmul_args_rowmajor(x, m, 4096, 64);
    kc_matmul_args_split(&f->def, x, 2);
    assert_int_equal(x[KC_MM_MTILE], m);
  }
}

/* ---- graph level ----------------------------------------------------------------------------- */

enum { G_EP, G_GEMM_TB, G_BATCHED, G_FOLDED };

typedef struct gcase {
  int kind;
  kc_act act;
  bool bias, res;
  int64_t n, k;
  kc_dtype dt; /* KC_DT_NONE: f32 */
} gcase;

static kc_dtype gdt(const gcase *c) { return c->dt ? c->dt : KC_F32; }

/* bf16 is the top half of an f32 (round to nearest even). */
static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* v rounded to dtype t in place (the reference sees the kernel's inputs); a copy in t. */
static void *typed(kc_dtype t, float *v, int64_t n) {
  size_t sz = t == KC_F32 ? 4 : 2;
  void *p = malloc((size_t)(n > 0 ? n : 1) * sz);
  for (int64_t i = 0; i < n; i++) {
    if (t == KC_F16) v[i] = (float)(_Float16)v[i], ((_Float16 *)p)[i] = (_Float16)v[i];
    if (t == KC_BF16) v[i] = from_bf16(to_bf16(v[i])), ((uint16_t *)p)[i] = to_bf16(v[i]);
    if (t == KC_F32) ((float *)p)[i] = v[i];
  }
  return p;
}

static double get(kc_dtype t, const void *p, int64_t i) {
  if (t == KC_F16) return ((const _Float16 *)p)[i];
  if (t == KC_BF16) return from_bf16(((const uint16_t *)p)[i]);
  return ((const float *)p)[i];
}

static double gelu_ref(double x, bool tanh_form) {
  if (tanh_form) return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  return 0.5 * x * (1 + erf(x / sqrt(2.0)));
}

/* The graph of a case with the row count symbolic ("s"); batch 3 for G_BATCHED, 2 folded. */
static kc_graph *g_build(kc_context *ctx, const gcase *c) {
  kc_graph *g = kc_graph_new(ctx, "small");
  kc_dim s = kc_sym(g, "s");
  kc_dtype dt = gdt(c);
  kc_val out;
  if (c->kind == G_EP) {
    kc_val a = kc_input(g, "a", dt, 2, (kc_dim[]){s, c->k});
    kc_val w = kc_input(g, "w", dt, 2, (kc_dim[]){c->k, c->n});
    kc_val bias = c->bias ? kc_input(g, "bias", dt, 1, (kc_dim[]){c->n}) : (kc_val){0};
    kc_val res = c->res ? kc_input(g, "res", dt, 2, (kc_dim[]){s, c->n}) : (kc_val){0};
    out = kc_matmul_ep(g, a, w, bias, res, c->act);
  } else if (c->kind == G_GEMM_TB) {
    kc_val a = kc_input(g, "a", dt, 2, (kc_dim[]){s, c->k});
    kc_val w = kc_input(g, "w", dt, 2, (kc_dim[]){c->n, c->k});
    kc_val bias = kc_input(g, "bias", dt, 1, (kc_dim[]){c->n});
    out = kc_gemm(g, a, w, bias, 1.0f, 1.0f, 0, 1);
  } else if (c->kind == G_BATCHED) {
    kc_val a = kc_input(g, "a", dt, 3, (kc_dim[]){3, s, c->k});
    kc_val w = kc_input(g, "w", dt, 3, (kc_dim[]){3, c->k, c->n});
    out = kc_matmul(g, a, w);
  } else {
    kc_val a = kc_input(g, "a", dt, 3, (kc_dim[]){2, s, c->k});
    kc_val w = kc_input(g, "w", dt, 2, (kc_dim[]){c->k, c->n});
    out = kc_matmul(g, a, w);
  }
  kc_output(g, out, "out");
  return g;
}

/* One graph case at `rows` rows on modules for 1 and 2 threads: the same bits, the reference. */
static void g_case(kc_context *ctx, kc_module *const *mods, const gcase *c, int64_t rows) {
  int64_t nb = c->kind == G_BATCHED ? 3 : c->kind == G_FOLDED ? 2 : 1;
  int64_t m = rows, n = c->n, k = c->k, bw = c->kind == G_BATCHED ? 3 : 1;
  unsigned seed = (unsigned)(rows * 101 + c->kind * 7 + (int)c->act + n);
  float *a = rand_floats(nb * m * k, &seed), *w = rand_floats(bw * k * n, &seed);
  float *bias = rand_floats(n, &seed), *res = rand_floats(m * n, &seed);
  kc_dtype dt = gdt(c);
  void *ta = typed(dt, a, nb * m * k), *tw = typed(dt, w, bw * k * n);
  void *tbias = typed(dt, bias, n), *tres = typed(dt, res, m * n);
  kc_tensor_desc in[4];
  int nin = 0;
  if (c->kind == G_EP || c->kind == G_GEMM_TB)
    in[nin++] = (kc_tensor_desc){"a", dt, 2, {m, k}, ta};
  else
    in[nin++] = (kc_tensor_desc){"a", dt, 3, {nb, m, k}, ta};
  if (c->kind == G_GEMM_TB)
    in[nin++] = (kc_tensor_desc){"w", dt, 2, {n, k}, tw};
  else if (c->kind == G_BATCHED)
    in[nin++] = (kc_tensor_desc){"w", dt, 3, {3, k, n}, tw};
  else
    in[nin++] = (kc_tensor_desc){"w", dt, 2, {k, n}, tw};
  if (c->kind == G_GEMM_TB || (c->kind == G_EP && c->bias))
    in[nin++] = (kc_tensor_desc){"bias", dt, 1, {n}, tbias};
  if (c->kind == G_EP && c->res) in[nin++] = (kc_tensor_desc){"res", dt, 2, {m, n}, tres};

  int64_t total = nb * m * n;
  size_t osz = (size_t)total * (dt == KC_F32 ? 4 : 2);
  void *outs[2];
  for (int t = 0; t < 2; t++) {
    kc_tensor_desc out = {0};
    if (kc_run(mods[t], in, (uint32_t)nin, &out, 1) != KC_OK)
      fail_msg("run: %s", kc_last_error(ctx));
    assert_int_equal(out.dtype, dt);
    outs[t] = malloc(osz);
    memcpy(outs[t], out.data, osz);
  }
  assert_memory_equal(outs[0], outs[1], osz);

  bool gelu = c->act == KC_ACT_GELU || c->act == KC_ACT_GELU_TANH;
  /* f16 / bf16 accumulate in f32 and round once: half an ulp of the result */
  double tol = dt == KC_F16 ? 1e-3 : dt == KC_BF16 ? 8e-3 : gelu ? 2e-5 : 2e-6;
  for (int64_t bi = 0; bi < nb; bi++)
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double s = 0, mag = 0;
        for (int64_t kk = 0; kk < k; kk++) {
          double av = a[(bi * m + i) * k + kk];
          double bv = c->kind == G_GEMM_TB   ? w[j * k + kk]
                      : c->kind == G_BATCHED ? w[(bi * k + kk) * n + j]
                                             : w[kk * n + j];
          s += av * bv;
          mag += fabs(av * bv);
        }
        if (c->kind == G_GEMM_TB || (c->kind == G_EP && c->bias)) s += bias[j], mag += 1;
        if (c->kind == G_EP) {
          if (c->act == KC_ACT_RELU) s = s < 0 ? 0 : s;
          if (gelu) s = gelu_ref(s, c->act == KC_ACT_GELU_TANH);
          if (c->res) s += res[i * n + j], mag += 1;
        }
        double got = get(dt, outs[0], (bi * m + i) * n + j);
        if (!(fabs(got - s) <= tol * (mag + 1)))
          fail_msg("case %d act %d rows %lld: out[%lld][%lld][%lld] = %.9g, reference %.9g",
                   c->kind, (int)c->act, (long long)rows, (long long)bi, (long long)i, (long long)j,
                   got, s);
      }
  free(outs[0]);
  free(outs[1]);
  free(a), free(w), free(bias), free(res);
  free(ta), free(tw), free(tbias), free(tres);
}

/* A case compiled once for 1 and 2 threads (the row count is symbolic), run at several. */
static void g_rows(fixture *f, const gcase *c) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = g_build(ctx, c);
  if (kc_graph_status(g) != KC_OK) fail_msg("building: %s", kc_last_error(ctx));
  kc_module *mods[2];
  for (int t = 0; t < 2; t++) {
    kc_compile_options o = {.threads = t + 1};
    if (kc_compile(ctx, g, &o, &mods[t]) != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
    assert_int_equal(kc_module_set_threads(mods[t], t + 1), KC_OK);
  }
  int64_t ms = f->def.cfg.small_m;
  int64_t rows[] = {1, 2, 3, ms, ms + 1};
  for (unsigned i = 0; i < sizeof rows / sizeof *rows; i++)
    g_case(ctx, mods, c, rows[i]);
  kc_module_free(mods[0]);
  kc_module_free(mods[1]);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* matmul_ep: bias, every activation, residual, each alone and together. */
static void t_graph_epilogues(void **state) {
  fixture *f = *state;
  kc_act acts[] = {KC_ACT_NONE, KC_ACT_RELU, KC_ACT_GELU, KC_ACT_GELU_TANH};
  for (unsigned i = 0; i < 4; i++)
    g_rows(f, &(gcase){G_EP, acts[i], true, true, 77, 33, KC_F32});
  g_rows(f, &(gcase){G_EP, KC_ACT_NONE, true, false, 130, 17, KC_F32});
  g_rows(f, &(gcase){G_EP, KC_ACT_NONE, false, true, 9, 65, KC_F32});
  g_rows(f, &(gcase){G_EP, KC_ACT_GELU_TANH, true, false, 300, 31, KC_F32});
}

/* gemm B^T (+ bias through C), a batched and a folded product. */
static void t_graph_layouts(void **state) {
  fixture *f = *state;
  g_rows(f, &(gcase){G_GEMM_TB, KC_ACT_NONE, true, false, 61, 37, KC_F32});
  g_rows(f, &(gcase){G_BATCHED, KC_ACT_NONE, false, false, 29, 21, KC_F32});
  g_rows(f, &(gcase){G_FOLDED, KC_ACT_NONE, false, false, 70, 13, KC_F32});
}

/* f16 and bf16 products run on the same core, which widens A and B as it reads them. */
static void t_graph_half(void **state) {
  fixture *f = *state;
  kc_dtype ts[] = {KC_F16, KC_BF16};
  for (int i = 0; i < 2; i++) {
    g_rows(f, &(gcase){G_EP, KC_ACT_RELU, true, true, 77, 33, ts[i]});
    g_rows(f, &(gcase){G_GEMM_TB, KC_ACT_NONE, true, false, 61, 37, ts[i]});
    g_rows(f, &(gcase){G_BATCHED, KC_ACT_NONE, false, false, 29, 21, ts[i]});
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_rows_and_edges),
      cmocka_unit_test(t_deep),
      cmocka_unit_test(t_wide),
      cmocka_unit_test(t_strides),
      cmocka_unit_test(t_batched),
      cmocka_unit_test(t_k_zero),
      cmocka_unit_test(t_no_overrun),
      cmocka_unit_test(t_split),
      cmocka_unit_test(t_graph_epilogues),
      cmocka_unit_test(t_graph_layouts),
      cmocka_unit_test(t_graph_half),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
