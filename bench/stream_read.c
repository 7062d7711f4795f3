/*
 * bench/stream_read.c - the machine's memory read bandwidth, for the decode benchmark's bound
 * (bench/decode_bench.py: a decoded token reads every weight once, so weight bytes / bandwidth is
 * the fastest a token can be). Sums a buffer much larger than the last-level cache (default
 * 1 GiB) with T threads, each reading its own contiguous slice (which it wrote first, so its pages
 * are its own), all starting together at a barrier; one rep's time is from the barrier to the
 * last thread's end. Prints, per thread count, the median, min and max GB/s (1e9 bytes/s) of
 * --reps reps, and a line "STREAM threads=T median_gbs=X ..." for scripts.
 *
 *   stream_read [--mib 1024] [--threads 1,2] [--reps 9]
 *
 * Invariants: the sum uses 4 independent 8-float accumulators (GCC vector extensions, so the
 * compiler issues wide loads without -march flags or intrinsics) and is stored to a volatile
 * sink, so the reads cannot be optimized away; a read-only stream (no writes during timing).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef float v8f __attribute__((vector_size(32)));

typedef struct worker {
  pthread_t th;
  pthread_barrier_t *start, *done;
  const v8f *p;
  size_t n; /* vectors in this slice */
  int reps;
  float sum;
} worker;

static volatile float sink;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static float sum_slice(const v8f *p, size_t n) {
  v8f a = {0}, b = {0}, c = {0}, d = {0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  for (; i < n; i++)
    a += p[i];
  v8f s = a + b + c + d;
  float r = 0;
  for (int k = 0; k < 8; k++)
    r += s[k];
  return r;
}

static void *run_worker(void *arg) {
  worker *w = arg;
  for (int r = 0; r < w->reps; r++) {
    pthread_barrier_wait(w->start);
    w->sum += sum_slice(w->p, w->n);
    pthread_barrier_wait(w->done);
  }
  return NULL;
}

/* First touch of each slice by the thread that will read it. */
static void *fill_worker(void *arg) {
  worker *w = arg;
  memset((void *)w->p, 0, w->n * sizeof(v8f));
  float *f = (float *)(void *)w->p;
  for (size_t i = 0; i < w->n * 8; i += 1024)
    f[i] = 1.0f;
  return NULL;
}

static int measure(v8f *buf, size_t nvec, int threads, int reps) {
  worker *w = calloc((size_t)threads, sizeof *w);
  double *t = calloc((size_t)reps, sizeof *t);
  if (!w || !t) {
    fprintf(stderr, "stream_read: out of memory\n");
    free(w);
    free(t);
    return 1;
  }
  pthread_barrier_t start, done;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&done, NULL, (unsigned)threads + 1);
  size_t per = nvec / (size_t)threads;
  for (int i = 0; i < threads; i++) {
    w[i] = (worker){
        .start = &start, .done = &done, .p = buf + (size_t)i * per, .n = per, .reps = reps + 1};
    pthread_create(&w[i].th, NULL, fill_worker, &w[i]);
  }
  for (int i = 0; i < threads; i++)
    pthread_join(w[i].th, NULL);
  for (int i = 0; i < threads; i++)
    pthread_create(&w[i].th, NULL, run_worker, &w[i]);
  for (int r = 0; r <= reps; r++) { /* rep 0 is a warm-up */
    double t0 = now_s();
    pthread_barrier_wait(&start);
    pthread_barrier_wait(&done);
    if (r > 0) t[r - 1] = now_s() - t0;
  }
  float s = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(w[i].th, NULL);
    s += w[i].sum;
  }
  sink = s;
  pthread_barrier_destroy(&start);
  pthread_barrier_destroy(&done);
  qsort(t, (size_t)reps, sizeof *t, cmp_double);
  double bytes = (double)per * (double)threads * sizeof(v8f);
  double med = bytes / t[reps / 2] / 1e9, lo = bytes / t[reps - 1] / 1e9, hi = bytes / t[0] / 1e9;
  printf("%d thread%s: median %.1f GB/s (min %.1f, max %.1f) over %d reads of %.0f MiB\n", threads,
         threads > 1 ? "s" : "", med, lo, hi, reps, bytes / 1048576.0);
  printf("STREAM threads=%d median_gbs=%.3f min_gbs=%.3f max_gbs=%.3f bytes=%.0f reps=%d\n",
         threads, med, lo, hi, bytes, reps);
  free(w);
  free(t);
  return 0;
}

int main(int argc, char **argv) {
  long mib = 1024;
  int reps = 9;
  const char *threads = "1,2";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc)
      mib = strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = (int)strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = argv[++i];
    else {
      fprintf(stderr, "usage: stream_read [--mib 1024] [--threads 1,2] [--reps 9]\n");
      return 2;
    }
  }
  if (mib < 1 || reps < 1) {
    fprintf(stderr, "stream_read: --mib and --reps must be positive\n");
    return 2;
  }
  size_t nvec = (size_t)mib * 1048576u / sizeof(v8f);
  v8f *buf = aligned_alloc(64, nvec * sizeof(v8f));
  if (!buf) {
    fprintf(stderr, "stream_read: cannot allocate %ld MiB\n", mib);
    return 1;
  }
  int rc = 0;
  for (const char *p = threads; *p && rc == 0;) {
    char *end;
    long t = strtol(p, &end, 10);
    if (end == p || t < 1 || t > 256) {
      fprintf(stderr, "stream_read: bad --threads '%s'\n", threads);
      rc = 2;
      break;
    }
    rc = measure(buf, nvec, (int)t, reps);
    p = *end == ',' ? end + 1 : end;
  }
  free(buf);
  return rc;
}
