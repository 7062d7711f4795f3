/*
 * bench/matmul_bench.c - kernc's generated f32 matmul beside OpenBLAS's cblas_sgemm, in one
 * process, on the same data: GFLOP/s (median of --runs after warm-up), the ratio, the max
 * relative error against OpenBLAS, the largest difference as a fraction of its per-element
 * bound, and peak RSS. Exits 1 when any element of kernc's product differs from OpenBLAS's by
 * more than the bound (a wrong result is no benchmark).
 *
 *   matmul_bench [--size N | --mnk M,N,K[,t] ...] [--runs R] [--rounds B] [--threads 1,2]
 *                [--split a|m|n] [--mr X --nv X --kc X --mc X --nc X --unroll X]
 *                [--small X] [--hot] [--dump DIR]
 *
 * Shapes: --size and --mnk may be repeated; ",t" after K gives B transposed (stored [N, K], as
 * x @ W^T). Without any, the standard rows: 1024^3, the transformer FFN shapes 128x3072x768
 * and 128x768x3072, and GPT-2's tied LM head 128x50257x768 with B^T.
 * --split: how threads share C: a (auto, kc_matmul_args_split), m (row tiles), n (columns).
 * Each row prints the median GFLOP/s of both and their ratio, and the ratio of the fastest
 * runs (least disturbed on a busy machine).
 * --small X: the core's small-M threshold (kc_matmul_cfg.small_m; -1: always pack B), to
 * compare the two paths at the same shape.
 *
 * Decode-shaped rows (M <= 16, as a decode step's matmuls, whose weights come from memory):
 * each run reads a different copy of B, cycling through enough copies (>= 256 MiB) that B is
 * never in the last-level cache, and the row adds the GB/s of B read by kernc and by OpenBLAS
 * beside the machine's read bandwidth measured in the same process right before (a summing
 * stream over 512 MiB on the same thread pool, as bench/stream_read.c), and kernc's fraction.
 * --hot: one copy of B, read again by every run (cache-resident when it fits: the kernel's
 * speed apart from memory).
 *
 * OpenBLAS picks its kernels when the library loads, from OPENBLAS_CORETYPE; on these
 * machines only SkylakeX gives its real speed. So when the variable is unset the benchmark
 * sets it and re-executes itself; run it with OPENBLAS_CORETYPE=... to choose another (the
 * machines' environment sets Haswell: bench/run.sh unsets it). The first line names the core
 * OpenBLAS actually loaded and its build (openblas_get_corename, openblas_get_config).
 *
 * The error bound: in floating point with unit roundoff u = 2^-24, any order of summing a
 * K-term dot product, with or without FMA, is within gamma_K = K u / (1 - K u) times
 * sum_k |a_ik| |b_kj| of the exact value (Higham, Accuracy and Stability of Numerical
 * Algorithms, 2nd ed., section 3.1 and 3.5). kernc and OpenBLAS are each within it, so they
 * differ by at most 2 gamma_K (|A||B|)_ij. |A||B| is computed by cblas_sgemm on |A| and |B|:
 * its terms are nonnegative, so the computed value is within gamma_K of the exact one, and the
 * bound used is 2 gamma_K / (1 - gamma_K) times it. It is a worst case (typical errors are ~
 * sqrt(K) u): it catches wrong results (a lost or doubled term, a wrong tile), not rounding.
 *
 * Timing: kernc and OpenBLAS run in alternating blocks (--rounds of each, with warm-up), so
 * both see the same machine state over time. Not run by run: OpenBLAS's idle workers spin for
 * a while after each call and would steal a core from kernc's next run (and kernc's pool
 * spins briefly too), so a pause separates the blocks.
 */
#include "codegen/codegen.h"
#include "runtime/runtime.h"

#include <cblas.h>

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

void openblas_set_num_threads(int);
char *openblas_get_config(void);
char *openblas_get_corename(void);

typedef struct mm_task {
  kc_matmul_fn fn;
  const float *a, *b;
  float *c, *ws;
  int64_t ws_stride; /* floats per thread slice */
  const int64_t *args;
} mm_task;

static void run_slice(void *arg, int64_t begin, int64_t end, int thread) {
  mm_task *t = arg;
  t->fn(t->a, t->b, t->c, t->ws + t->ws_stride * thread, t->args, begin, end);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static float *alloc_floats(size_t n) {
  size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  float *p = aligned_alloc(64, bytes ? bytes : 64);
  if (!p) {
    fprintf(stderr, "matmul_bench: out of memory\n");
    exit(1);
  }
  return p;
}

typedef struct shape {
  int64_t m, n, k;
  bool tb; /* B stored transposed, [N, K] */
} shape;

enum { MAX_SHAPES = 16 };
/* Rows up to this are decode-shaped: B cycled through copies, GB/s printed. */
enum { DECODE_ROWS = 16 };
static const size_t COLD_BYTES = (size_t)256 << 20;   /* copies of B add up to this */
static const size_t STREAM_BYTES = (size_t)512 << 20; /* the read-bandwidth buffer */

typedef struct opts {
  shape shapes[MAX_SHAPES];
  int nshapes;
  int runs, rounds;
  int threads[8], nthreads;
  char split;
  bool hot;
  kc_matmul_cfg cfg;
  const char *dump;
} opts;

static const shape standard[] = {
    {1024, 1024, 1024, false},
    {128, 3072, 768, false},
    {128, 768, 3072, false},
    {128, 50257, 768, true},
};

static int parse_args(int argc, char **argv, opts *o) {
  *o = (opts){.runs = 15, .rounds = 3, .threads = {1, 2}, .nthreads = 2, .split = 'a'};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--hot")) { /* the one flag without a value */
      o->hot = true;
      continue;
    }
    if (!v) goto bad;
    i++;
    if (!strcmp(a, "--size") || !strcmp(a, "--mnk")) {
      if (o->nshapes == MAX_SHAPES) goto bad;
      shape *s = &o->shapes[o->nshapes++];
      long long m, n, k;
      char t = 0;
      if (!strcmp(a, "--size")) {
        m = n = k = atoll(v);
      } else {
        int got = sscanf(v, "%lld,%lld,%lld,%c", &m, &n, &k, &t);
        if (got < 3 || (got == 4 && t != 't')) goto bad;
      }
      *s = (shape){m, n, k, t == 't'};
    } else if (!strcmp(a, "--runs"))
      o->runs = atoi(v);
    else if (!strcmp(a, "--rounds"))
      o->rounds = atoi(v);
    else if (!strcmp(a, "--threads")) {
      o->nthreads = 0;
      for (char *s = (char *)v; *s && o->nthreads < 8;) {
        o->threads[o->nthreads++] = (int)strtol(s, &s, 10);
        if (*s == ',')
          s++;
        else if (*s)
          goto bad;
      }
    } else if (!strcmp(a, "--split"))
      o->split = v[0];
    else if (!strcmp(a, "--mr"))
      o->cfg.mr = atoi(v);
    else if (!strcmp(a, "--nv"))
      o->cfg.nv = atoi(v);
    else if (!strcmp(a, "--kc"))
      o->cfg.kc = atoi(v);
    else if (!strcmp(a, "--mc"))
      o->cfg.mc = atoi(v);
    else if (!strcmp(a, "--nc"))
      o->cfg.nc = atoi(v);
    else if (!strcmp(a, "--unroll"))
      o->cfg.unroll = atoi(v);
    else if (!strcmp(a, "--small"))
      o->cfg.small_m = atoi(v);
    else if (!strcmp(a, "--dump"))
      o->dump = v;
    else
      goto bad;
  }
  if (!o->nshapes) {
    o->nshapes = (int)(sizeof standard / sizeof *standard);
    memcpy(o->shapes, standard, sizeof standard);
  }
  if (o->rounds < 1) o->rounds = 1;
  if (o->runs < o->rounds) o->runs = o->rounds;
  o->runs = (o->runs + o->rounds - 1) / o->rounds * o->rounds;
  return 0;
bad:
  fprintf(stderr, "usage: matmul_bench [--size N | --mnk M,N,K[,t] ...] [--runs R] [--rounds B]\n"
                  "       [--threads 1,2] [--split a|m|n] [--mr X --nv X --kc X --mc X --nc X\n"
                  "       --unroll X] [--small X] [--hot] [--dump DIR]\n");
  return 1;
}

static double min_of(const double *v, int n) {
  double m = v[0];
  for (int i = 1; i < n; i++)
    m = v[i] < m ? v[i] : m;
  return m;
}

/* ---- the machine's read bandwidth, as bench/stream_read.c, on the bench's pool ---- */

typedef float v8f __attribute__((vector_size(32)));

typedef struct stream_task {
  const v8f *p;
  volatile float sink[64];
} stream_task;

enum { STREAM_UNIT = 4096 / sizeof(v8f) }; /* vectors per work unit: a page */

static void stream_slice(void *arg, int64_t begin, int64_t end, int thread) {
  stream_task *t = arg;
  const v8f *p = t->p + begin * STREAM_UNIT;
  size_t n = (size_t)(end - begin) * STREAM_UNIT;
  v8f a = {0}, b = {0}, c = {0}, d = {0};
  for (size_t i = 0; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  v8f s = a + b + c + d;
  t->sink[thread & 63] = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

/* Median GB/s (1e9 bytes/s) of reps reads of buf (STREAM_BYTES) on the pool's threads. */
static double stream_gbs(kc_pool *pool, const float *buf, int reps) {
  stream_task t = {.p = (const v8f *)buf};
  int64_t units = (int64_t)(STREAM_BYTES / 4096);
  double v[32];
  if (reps > 32) reps = 32;
  kc_pool_run(pool, stream_slice, &t, units, 0); /* warm-up */
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    kc_pool_run(pool, stream_slice, &t, units, 0);
    v[r] = (double)STREAM_BYTES / (now() - t0) * 1e-9;
  }
  return median(v, reps);
}

/* One shape at every thread count: a table row each. */
static int bench_shape(const opts *o, const shape *s, kc_context *ctx, kc_pool *pool,
                       const kc_matmul_kernel *kern, const float *stream_buf) {
  int64_t M = s->m, N = s->n, K = s->k;
  float *A = alloc_floats((size_t)(M * K)), *B = alloc_floats((size_t)(K * N));
  float *C = alloc_floats((size_t)(M * N)), *R = alloc_floats((size_t)(M * N));
  unsigned seed = 12345;
  for (int64_t i = 0; i < M * K; i++)
    A[i] = (float)((double)rand_r(&seed) / RAND_MAX * 2 - 1);
  for (int64_t i = 0; i < K * N; i++)
    B[i] = (float)((double)rand_r(&seed) / RAND_MAX * 2 - 1);
  /* decode-shaped: copies of B, cycled so each run reads B from memory */
  bool cold = M <= DECODE_ROWS;
  size_t bbytes = (size_t)(K * N) * sizeof(float);
  int ncopy = cold ? (int)((COLD_BYTES + bbytes - 1) / (bbytes ? bbytes : 1)) : 1;
  if (ncopy < 2 && cold) ncopy = 2;
  if (o->hot) ncopy = 1;
  float **Bs = malloc(sizeof *Bs * (size_t)ncopy);
  Bs[0] = B;
  for (int i = 1; i < ncopy; i++) {
    Bs[i] = alloc_floats((size_t)(K * N));
    memcpy(Bs[i], B, bbytes);
  }
  /* S = |A||B|, the scale of the per-element error bound (see the top of the file) */
  float *S = alloc_floats((size_t)(M * N));
  {
    float *Aa = alloc_floats((size_t)(M * K)), *Ba = alloc_floats((size_t)(K * N));
    for (int64_t i = 0; i < M * K; i++)
      Aa[i] = fabsf(A[i]);
    for (int64_t i = 0; i < K * N; i++)
      Ba[i] = fabsf(B[i]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                (int)K, 1.0f, Aa, (int)K, Ba, s->tb ? (int)K : (int)N, 0.0f, S, (int)N);
    free(Aa);
    free(Ba);
  }
  double gamma_k = (double)K * (FLT_EPSILON / 2) / (1 - (double)K * (FLT_EPSILON / 2));
  double bound_scale = 2 * gamma_k / (1 - gamma_k);
  int failed = 0;
  double flops = 2.0 * (double)M * (double)N * (double)K;
  double *tk = malloc(sizeof(double) * (size_t)o->runs);
  double *tb = malloc(sizeof(double) * (size_t)o->runs);
  char name[64];
  snprintf(name, sizeof name, "%lldx%lldx%lld%s", (long long)M, (long long)N, (long long)K,
           s->tb ? " B^T" : "");

  for (int ti = 0; ti < o->nthreads; ti++) {
    int t = o->threads[ti];
    if (kc_pool_set_threads(pool, t) != KC_OK) {
      fprintf(stderr, "matmul_bench: %s\n", kc_last_error(ctx));
      return 1;
    }
    t = kc_pool_threads(pool);
    openblas_set_num_threads(t);
    int64_t args[KC_MM_NARGS];
    kc_matmul_args_rowmajor(args, M, N, K);
    if (s->tb) args[KC_MM_RSB] = 1, args[KC_MM_CSB] = K;
    if (o->split == 'a') kc_matmul_args_split(kern, args, t);
    if (o->split == 'm' && t > 1)
      args[KC_MM_MTILE] = ((M + t - 1) / t + kern->cfg.mr - 1) / kern->cfg.mr * kern->cfg.mr;
    float *ws = alloc_floats((size_t)(kern->ws_floats * t));
    mm_task task = {kern->fn, A, B, C, ws, kern->ws_floats, args};
    int64_t units = kc_matmul_units(kern, args);
    int per = o->runs / o->rounds;
    const struct timespec pause = {0, 250 * 1000 * 1000};
    double bw = cold ? stream_gbs(pool, stream_buf, 5) : 0;
    int ci = 0;

    for (int round = 0; round < o->rounds; round++) {
      for (int r = -2; r < per; r++) {
        task.b = Bs[ci++ % ncopy];
        double t0 = now();
        kc_pool_run(pool, run_slice, &task, units, 0);
        if (r >= 0) tk[round * per + r] = now() - t0;
      }
      nanosleep(&pause, NULL);
      for (int r = -2; r < per; r++) {
        const float *bb = Bs[ci++ % ncopy];
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                    (int)K, 1.0f, A, (int)K, bb, s->tb ? (int)K : (int)N, 0.0f, R, (int)N);
        if (r >= 0) tb[round * per + r] = now() - t0;
      }
      nanosleep(&pause, NULL);
    }
    double maxdiff = 0, maxref = 0, worst = 0; /* worst: largest difference / its bound */
    int64_t nbad = 0, first = -1;
    for (int64_t i = 0; i < M * N; i++) {
      double d = fabs((double)C[i] - (double)R[i]), lim = bound_scale * (double)S[i];
      if (d > maxdiff || isnan(d)) maxdiff = isnan(d) ? INFINITY : d;
      if (fabs((double)R[i]) > maxref) maxref = fabs((double)R[i]);
      double f = isnan(d) ? INFINITY : d == 0 ? 0 : lim > 0 ? d / lim : INFINITY;
      if (f > worst) worst = f;
      if (!(d <= lim) && nbad++ == 0) first = i;
    }
    double bk = min_of(tk, o->runs), bb = min_of(tb, o->runs);
    double gk = flops / median(tk, o->runs) * 1e-9, gb = flops / median(tb, o->runs) * 1e-9;
    const char *split = args[KC_MM_MTILE] < M ? "rows" : t > 1 ? "cols" : "-";
    printf("%-22s %7d %6s %14.1f %17.1f %8.3f %8.3f %12.2e %9.2e", name, t, split, gk, gb, gk / gb,
           bb / bk, maxref > 0 ? maxdiff / maxref : maxdiff, worst);
    if (cold) {
      double mk = median(tk, o->runs), mb = median(tb, o->runs);
      printf(" %10.1f %10.1f %10.1f %8.2f", (double)bbytes / mk * 1e-9, (double)bbytes / mb * 1e-9,
             bw, (double)bbytes / mk * 1e-9 / bw);
    }
    printf("\n");
    fflush(stdout);
    if (nbad) {
      fprintf(stderr,
              "matmul_bench: %s, %d threads: %lld of %lld elements differ from OpenBLAS by more "
              "than 2 gamma_K (|A||B|)_ij; first [%lld,%lld]: kernc %.9g, OpenBLAS %.9g, bound "
              "%.3g\n",
              name, t, (long long)nbad, (long long)(M * N), (long long)(first / N),
              (long long)(first % N), (double)C[first], (double)R[first],
              bound_scale * (double)S[first]);
      failed = 1;
    }
    free(ws);
  }
  free(tk);
  free(tb);
  free(A);
  for (int i = 1; i < ncopy; i++)
    free(Bs[i]);
  free(Bs);
  free(B);
  free(C);
  free(R);
  free(S);
  return failed;
}

int main(int argc, char **argv) {
  if (!getenv("OPENBLAS_CORETYPE")) {
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    execv("/proc/self/exe", argv);
    perror("matmul_bench: re-exec with OPENBLAS_CORETYPE=SkylakeX failed; continuing");
  }
  opts o;
  if (parse_args(argc, argv, &o)) return 2;

  kc_context *ctx = kc_context_new();
  kc_cpu *cpu = NULL;
  kc_pool *pool = NULL;
  kc_matmul_kernel kern;
  if (!ctx || kc_cpu_new(ctx, &cpu) != KC_OK || (o.dump && kc_cpu_set_dump_dir(cpu, o.dump)) ||
      kc_cpu_matmul(cpu, "kc_matmul_bench", &o.cfg, &kern) != KC_OK ||
      kc_pool_new(ctx, 1, &pool) != KC_OK) {
    fprintf(stderr, "matmul_bench: %s\n", ctx ? kc_last_error(ctx) : "out of memory");
    return 1;
  }
  const kc_cpu_info *h = kc_cpu_host(cpu);
  printf("matmul f32, median of %d runs | host %s, %d f32 lanes | kernc tile %dx%d, kc=%d mc=%d "
         "nc=%d unroll=%d\n",
         o.runs, h->name, h->f32_lanes, kern.cfg.mr, (int)kern.unit_n, kern.cfg.kc, kern.cfg.mc,
         kern.cfg.nc, kern.cfg.unroll);
  /* what OpenBLAS loaded, not what was asked for: the core decides its speed */
  const char *l2 = getenv("OPENBLAS_L2_SIZE");
  printf("OpenBLAS kernels: core %s (OPENBLAS_CORETYPE=%s, OPENBLAS_L2_SIZE=%s) | build: %s\n",
         openblas_get_corename(), getenv("OPENBLAS_CORETYPE"), l2 ? l2 : "unset",
         openblas_get_config());
  printf("small-M path up to %d rows; rows up to %d: B cold, GB/s of B read (kernc, OpenBLAS), "
         "read bandwidth (same threads, just before), kernc / read\n",
         kern.cfg.small_m, DECODE_ROWS);
  printf("max rel err: max |kernc - OpenBLAS| / max |OpenBLAS|; err/bound: the largest "
         "|kernc - OpenBLAS| / (2 gamma_K (|A||B|)_ij), above 1 fails\n");
  printf("%-22s %7s %6s %14s %17s %8s %8s %12s %9s %10s %10s %10s %8s\n", "shape (MxNxK)",
         "threads", "split", "kernc GFLOP/s", "OpenBLAS GFLOP/s", "ratio", "best", "max rel err",
         "err/bound", "kc GB/s", "blas GB/s", "read GB/s", "kc/read");
  float *stream_buf = NULL;
  for (int si = 0; si < o.nshapes; si++)
    if (o.shapes[si].m <= DECODE_ROWS && !stream_buf) {
      stream_buf = alloc_floats(STREAM_BYTES / sizeof(float));
      for (size_t i = 0; i < STREAM_BYTES / sizeof(float); i++)
        stream_buf[i] = (float)(i & 7);
    }
  int status = 0;
  for (int si = 0; si < o.nshapes && !status; si++)
    status = bench_shape(&o, &o.shapes[si], ctx, pool, &kern, stream_buf);
  free(stream_buf);

  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("peak RSS: %.1f MiB\n", ru.ru_maxrss / 1024.0);
  kc_pool_free(pool);
  kc_cpu_free(cpu);
  kc_context_free(ctx);
  return status;
}
