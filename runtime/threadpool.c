/*
 * runtime/threadpool.c - a small persistent pthread pool (see runtime.h for the contract).
 *
 * A run is published under the mutex and announced by bumping `gen`; workers wait for a new
 * generation, do their part, and count `pending` down; the caller does part 0 and then waits
 * for pending == 0. Both sides spin briefly before sleeping on their condition variable,
 * because kernels of a model follow each other within microseconds and a futex wake-up costs
 * more than many small kernels.
 *
 * Invariants:
 *   - Job fields (fn, arg, n, grain, parts) are written only under mu and before gen changes,
 *     and read by a worker only after it has seen the new gen under mu.
 *   - pending counts the workers that take part in the current run and have not finished;
 *     the run returns only at 0, so fn and arg outlive every use.
 *   - Worker records are allocated one by one and never move (threads hold pointers to them).
 */
#include "runtime.h"
#include "ir/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN_ITERS 2000

typedef struct worker {
  struct kc_pool *pool;
  int index;         /* thread number, 1.. (0 is the caller) */
  uint64_t gen_seen; /* last generation this worker handled */
  pthread_t tid;
} worker;

struct kc_pool {
  kc_context *ctx;
  pthread_mutex_t mu;
  pthread_cond_t wake, done;
  worker **workers;
  int nworkers; /* started */
  int threads;  /* used by a run, caller included */

  _Atomic uint64_t gen;
  kc_task_fn fn;
  void *arg;
  int64_t n, grain;
  int parts;
  atomic_int_fast64_t next; /* dynamic schedule: first unit not yet taken */
  atomic_int pending;
  bool stop;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static void do_part(kc_pool *p, int idx) {
  if (p->grain <= 0) {
    int64_t b = p->n * idx / p->parts, e = p->n * (idx + 1) / p->parts;
    if (b < e) p->fn(p->arg, b, e, idx);
    return;
  }
  for (;;) {
    int64_t b = atomic_fetch_add(&p->next, p->grain);
    if (b >= p->n) break;
    int64_t e = b + p->grain < p->n ? b + p->grain : p->n;
    p->fn(p->arg, b, e, idx);
  }
}

static void *worker_main(void *vw) {
  worker *w = vw;
  kc_pool *p = w->pool;
  for (;;) {
    for (int i = 0; i < SPIN_ITERS && atomic_load(&p->gen) == w->gen_seen; i++)
      cpu_relax();
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->gen) == w->gen_seen && !p->stop)
      pthread_cond_wait(&p->wake, &p->mu);
    if (p->stop) {
      pthread_mutex_unlock(&p->mu);
      break;
    }
    w->gen_seen = atomic_load(&p->gen);
    bool part = w->index < p->parts;
    pthread_mutex_unlock(&p->mu);
    if (!part) continue;
    do_part(p, w->index);
    if (atomic_fetch_sub(&p->pending, 1) == 1) {
      /* Taking the lock orders this signal after the caller's check of pending. */
      pthread_mutex_lock(&p->mu);
      pthread_cond_signal(&p->done);
      pthread_mutex_unlock(&p->mu);
    }
  }
  return NULL;
}

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

kc_status kc_pool_new(kc_context *ctx, int threads, kc_pool **out) {
  *out = NULL;
  kc_pool *p = calloc(1, sizeof *p);
  if (!p) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory creating the thread pool");
  p->ctx = ctx;
  p->threads = 1;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->done, NULL);
  atomic_init(&p->gen, 0);
  atomic_init(&p->next, 0);
  atomic_init(&p->pending, 0);
  kc_status s = kc_pool_set_threads(p, threads);
  if (s != KC_OK) {
    kc_pool_free(p);
    return s;
  }
  *out = p;
  return KC_OK;
}

void kc_pool_free(kc_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stop = true;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->nworkers; i++) {
    pthread_join(p->workers[i]->tid, NULL);
    free(p->workers[i]);
  }
  free(p->workers);
  pthread_cond_destroy(&p->wake);
  pthread_cond_destroy(&p->done);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

int kc_pool_threads(const kc_pool *p) { return p->threads; }

kc_status kc_pool_set_threads(kc_pool *p, int threads) {
  if (threads <= 0) threads = online_cpus();
  if (threads - 1 > p->nworkers) {
    worker **ws = realloc(p->workers, (size_t)(threads - 1) * sizeof *ws);
    if (!ws) return kc_errorf(p->ctx, KC_ERR_NOMEM, "out of memory growing the thread pool");
    p->workers = ws;
    while (p->nworkers < threads - 1) {
      worker *w = calloc(1, sizeof *w);
      if (!w) return kc_errorf(p->ctx, KC_ERR_NOMEM, "out of memory growing the thread pool");
      w->pool = p;
      w->index = p->nworkers + 1;
      /* Set before the thread starts, so a run posted right away is not missed. */
      w->gen_seen = atomic_load(&p->gen);
      if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
        free(w);
        return kc_errorf(p->ctx, KC_ERR_RUNTIME, "cannot start a worker thread");
      }
      p->workers[p->nworkers++] = w;
    }
  }
  p->threads = threads;
  return KC_OK;
}

void kc_pool_run(kc_pool *p, kc_task_fn fn, void *arg, int64_t n, int64_t grain) {
  if (n <= 0) return;
  int64_t chunks = grain > 0 ? (n + grain - 1) / grain : n;
  int parts = chunks < p->threads ? (int)chunks : p->threads;
  if (parts <= 1) {
    fn(arg, 0, n, 0);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->arg = arg;
  p->n = n;
  p->grain = grain;
  p->parts = parts;
  atomic_store(&p->next, 0);
  atomic_store(&p->pending, parts - 1);
  atomic_fetch_add(&p->gen, 1);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);

  do_part(p, 0);

  for (int i = 0; i < SPIN_ITERS && atomic_load(&p->pending) > 0; i++)
    cpu_relax();
  if (atomic_load(&p->pending) > 0) {
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->pending) > 0)
      pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
  }
}
