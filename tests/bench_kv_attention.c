/*
 * tests/bench_kv_attention.c - a timing harness (not a test: CTest does not run it) for the
 * decode case of attention_cache (ir/ops.def): one query row per sequence over a long cache,
 * reporting milliseconds per layer and GB/s of K/V read.
 *
 * Graph: L attention_cache nodes (one per layer of the cache, so the K/V a run reads exceeds the
 * last-level cache the way a model's layers do), each y_l = attention_cache(q, cache, table, past,
 * lens) {heads, kv_heads, layer l}; B sequences with T cached keys each (past = T - S, S new
 * tokens, by default 1: the last row reads T keys). Contiguous (BS = T, one block per sequence)
 * or paged (blocks of 16 in a shuffled order). The bytes counted are the K and V rows read:
 * B * KVH * T * D * 2 * 4 per layer. GB/s: from the median wall time, the fastest run's, and
 * (one thread) the median of the thread's CPU time, which leaves out time the thread was not
 * scheduled (this machine is shared).
 *
 * Build by hand beside a build of the library (bench code stays out of the CMake lists):
 *   cc -O2 -std=c11 -Iinclude -I. tests/bench_kv_attention.c -Lbuild -lkernc -lm \
 *      -Wl,-rpath,$PWD/build -o build/bench_kv_attention
 *   build/bench_kv_attention [-s H,KVH,D] [-b B] [-l 0|1] [-t 1|2] [T ...]
 *   (defaults: shapes 12,12,64 and 32,8,128; B 1 and 4; both layouts; threads 1 and 2; T 128
 *   512 1024 4096)
 */
#define _POSIX_C_SOURCE 200809L
#include "kernc.h"

#include "ir/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct shape {
  int64_t H, KVH, D;
} shape;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time of the calling thread: with one thread (the kernels run on the caller), time the
 * thread was descheduled by other work on the machine does not count. */
static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static float *values(int64_t n, uint32_t seed) {
  float *p = malloc((size_t)n * sizeof *p);
  uint32_t s = seed * 2654435761u + 1u;
  for (int64_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  return p;
}

/* Median seconds per run of L layers (*best: the fastest run; on this shared machine the median
 * includes time the thread was not scheduled); -1 on an error (printed). */
static double bench(kc_context *ctx, shape sh, int64_t B, int64_t S, int64_t T, int64_t L,
                    int paged, int threads, double *best, double *cpu) {
  int64_t BS = paged ? paged : T, MAXB = (T + BS - 1) / BS, NBLK = B * MAXB;
  kc_graph *g = kc_graph_new(ctx, "bench");
  kc_val q = kc_input(g, "q", KC_F32, 3, (kc_dim[]){B, S, sh.H * sh.D});
  kc_val cache = kc_input(g, "cache", KC_F32, 6, (kc_dim[]){NBLK, L, 2, sh.KVH, BS, sh.D});
  kc_val table = kc_input(g, "table", KC_I32, 2, (kc_dim[]){B, MAXB});
  kc_val past = kc_input(g, "past", KC_I64, 1, (kc_dim[]){B});
  kc_val lens = kc_input(g, "lens", KC_I64, 1, (kc_dim[]){B});
  kc_status s = KC_OK;
  for (int64_t l = 0; l < L && s == KC_OK; l++) {
    kc_val in[5] = {q, cache, table, past, lens}, y;
    uint32_t ni = kc_graph_add_node(g, KC_OP_ATTENTION_CACHE, 5, in, 1, &y);
    kc_node_set_int(g, ni, "heads", sh.H);
    kc_node_set_int(g, ni, "kv_heads", sh.KVH);
    kc_node_set_int(g, ni, "layer", l);
    s = kc_node_infer(g, ni);
    char name[32];
    snprintf(name, sizeof name, "y%lld", (long long)l);
    kc_output(g, y, name);
  }
  if (s == KC_OK) s = kc_graph_status(g);
  kc_module *m = NULL;
  kc_compile_options o = {.target = "cpu", .threads = threads};
  if (s == KC_OK) s = kc_compile(ctx, g, &o, &m);
  kc_graph_free(g);
  if (s != KC_OK) {
    fprintf(stderr, "%s\n", kc_last_error(ctx));
    return -1;
  }
  int64_t ncache = NBLK * L * 2 * sh.KVH * BS * sh.D;
  float *qv = values(B * S * sh.H * sh.D, 1), *cv = values(ncache, 2);
  int32_t *tab = malloc((size_t)(B * MAXB) * sizeof *tab);
  uint32_t r = 7;
  for (int64_t i = 0; i < B * MAXB; i++)
    tab[i] = (int32_t)i;
  for (int64_t i = B * MAXB - 1; i > 0; i--) { /* a shuffled block order */
    r = r * 1664525u + 1013904223u;
    int64_t j = (int64_t)(r >> 8) % (i + 1);
    int32_t t = tab[i];
    tab[i] = tab[j], tab[j] = t;
  }
  int64_t *pv = malloc((size_t)B * sizeof *pv), *lv = malloc((size_t)B * sizeof *lv);
  for (int64_t b = 0; b < B; b++)
    pv[b] = T - S, lv[b] = S;
  kc_tensor_desc in[5] = {
      {.name = "q", .dtype = KC_F32, .rank = 3, .dims = {B, S, sh.H * sh.D}, .data = qv},
      {.name = "cache",
       .dtype = KC_F32,
       .rank = 6,
       .dims = {NBLK, L, 2, sh.KVH, BS, sh.D},
       .data = cv},
      {.name = "table", .dtype = KC_I32, .rank = 2, .dims = {B, MAXB}, .data = tab},
      {.name = "past", .dtype = KC_I64, .rank = 1, .dims = {B}, .data = pv},
      {.name = "lens", .dtype = KC_I64, .rank = 1, .dims = {B}, .data = lv},
  };
  kc_tensor_desc *out = malloc((size_t)L * sizeof *out);
  enum { MIN_RUNS = 21, MAX_RUNS = 201 };
  double t[MAX_RUNS], ct[MAX_RUNS], med = -1;
  for (int i = 0; i < 5 && s == KC_OK; i++)
    s = kc_run(m, in, 5, out, (uint32_t)L);
  /* at least MIN_RUNS runs and about 0.4 s */
  double t0 = now_s();
  int n = 0;
  while (s == KC_OK && n < MAX_RUNS && (n < MIN_RUNS || now_s() - t0 < 0.4)) {
    double a = now_s(), ca = cpu_s();
    s = kc_run(m, in, 5, out, (uint32_t)L);
    ct[n] = cpu_s() - ca;
    t[n++] = now_s() - a;
  }
  if (s != KC_OK)
    fprintf(stderr, "%s\n", kc_last_error(ctx));
  else {
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    qsort(ct, (size_t)n, sizeof *ct, cmp_d);
    med = t[n / 2];
    *best = t[0];
    *cpu = ct[n / 2];
  }
  free(qv), free(cv), free(tab), free(pv), free(lv), free(out);
  kc_module_free(m);
  return med;
}

/* Flags: -s H,KVH,D (a shape; repeatable), -b B (batch; repeatable), -l 0|1 (contiguous or
 * paged only), -p BS (paged block size, 16), -t 1|2 (threads only), -L N (N layers: 1 reads
 * from the last-level cache), -q S (S query rows per sequence, the last S of the T keys new);
 * the rest are cache lengths T. */
int main(int argc, char **argv) {
  int64_t Ts[16] = {128, 512, 1024, 4096}, Bs[8] = {1, 4};
  shape shapes[8] = {{12, 12, 64}, {32, 8, 128}};
  int nT = 0, nB = 0, nS = 0, layout = -1, threads = -1, layers = 0, bs = 16, rows = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-s") && i + 1 < argc && nS < 8) {
      long long h, k, d;
      if (sscanf(argv[++i], "%lld,%lld,%lld", &h, &k, &d) == 3) shapes[nS++] = (shape){h, k, d};
    } else if (!strcmp(argv[i], "-b") && i + 1 < argc && nB < 8) {
      Bs[nB++] = atoll(argv[++i]);
    } else if (!strcmp(argv[i], "-l") && i + 1 < argc) {
      layout = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "-q") && i + 1 < argc) {
      rows = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "-p") && i + 1 < argc) {
      bs = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "-L") && i + 1 < argc) {
      layers = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
      threads = atoi(argv[++i]);
    } else if (nT < 16) {
      Ts[nT++] = atoll(argv[i]);
    }
  }
  if (!nT) nT = 4;
  if (!nB) nB = 2;
  if (!nS) nS = 2;
  kc_context *ctx = kc_context_new();
  printf("%-10s %2s %-6s %5s %3s %9s %8s %8s %8s\n", "heads", "B", "layout", "T", "thr", "ms/layer",
         "GB/s", "best", "cpu");
  for (int si = 0; si < nS; si++)
    for (int bi = 0; bi < nB; bi++)
      for (int paged = 0; paged < 2; paged++)
        for (int ti = 0; ti < nT; ti++)
          for (int thr = 1; thr <= 2; thr++) {
            if ((layout >= 0 && paged != layout) || (threads > 0 && thr != threads)) continue;
            shape sh = shapes[si];
            int64_t B = Bs[bi], T = Ts[ti];
            double bytes = (double)(B * sh.KVH * T * sh.D * 2 * 4);
            /* enough layers that a run reads well past the 32 MB last-level cache */
            int64_t L = (int64_t)(64e6 / bytes) + 1;
            if (L > 24) L = 24;
            if (layers > 0) L = layers;
            double fast = 0, cpu = 0;
            double sec = bench(ctx, sh, B, rows, T, L, paged ? bs : 0, thr, &fast, &cpu);
            if (sec < 0) return 1;
            char hs[24];
            snprintf(hs, sizeof hs, "%lldx%lld/%lld", (long long)sh.H, (long long)sh.D,
                     (long long)sh.KVH);
            double gb = bytes * (double)L / 1e9;
            printf("%-10s %2lld %-6s %5lld %3d %9.4f %8.2f %8.2f ", hs, (long long)B,
                   paged ? "paged" : "contig", (long long)T, thr, sec / (double)L * 1e3, gb / sec,
                   gb / fast);
            if (thr == 1)
              printf("%8.2f\n", gb / cpu);
            else
              printf("%8s\n", "-");
            fflush(stdout);
          }
  kc_context_free(ctx);
  return 0;
}
