/*
 * runtime/threadpool.c - a small persistent pthread pool (see runtime.h for the contract).
 *
 * A run is cut into parts (one per thread, or chunks of `grain` units) that any thread may
 * claim: the caller publishes the job by storing a new generation into `ticket`, then claims
 * and runs parts itself like every worker, and at the end waits only for parts that a worker
 * has claimed and not yet finished. A worker that is asleep, or not scheduled because the
 * cores are busy with other work, therefore never delays a run: the caller does its parts.
 *
 * Handoff: workers spin on `ticket` for about SPIN_NS after their last part, so a run that
 * follows within that time costs the caller a few atomic operations and no system call; after
 * that they sleep on a condition variable, and the caller takes the mutex to wake them only
 * when some are asleep (`sleepers`). The caller likewise spins for a while before it sleeps
 * waiting for the last claimed part. Spinning is bounded in time so that idle workers give
 * the cores back to other work (another engine in the same process, other processes).
 *
 * Invariants:
 *   - ticket = generation << PART_BITS | next part to claim; a part is claimed by moving
 *     `next` with a compare-and-swap on the whole ticket, so a claim names its job and a
 *     thread that saw an older job can never take a part of a newer one.
 *   - Publishing first closes the ticket (the new generation with next = PART_MASK, past any
 *     part), then writes the job, then opens it (next = 0). A claim checks next < nparts and
 *     then swaps the ticket it read, with seq_cst operations: a thread that read a newer job's
 *     nparts against an older job's ticket finds the ticket changed and fails, so no part
 *     outside a job is ever claimed.
 *   - The job fields (fn, arg, n, grain, nparts) are written by the caller only while the
 *     ticket is closed and no part is running, and fn, arg, n and grain are read by a worker
 *     only after a successful claim: the job cannot end before that part is done.
 *   - done counts the finished parts of the current job; the caller returns only when it
 *     equals nparts, so fn and arg outlive every use.
 *   - Workers with index >= threads take no part (the thread number stays < kc_pool_threads)
 *     and sleep until the thread count grows again or the pool stops.
 *   - Worker records are allocated one by one and never move (threads hold pointers to them).
 *   - At most KC_MAX_THREADS threads; a grow that cannot start every thread ends the ones it
 *     started and leaves the pool as it was (no half-grown pool keeps threads the OS refused
 *     to others, such as the C compiler kc_export starts).
 *   - Sleep/wake handshakes are Dekker-style on seq_cst atomics (sleepers vs ticket,
 *     caller_waiting vs done), each sleeper checking its condition under the mutex, so no
 *     wake-up is lost.
 */
#include "runtime.h"
#include "ir/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PART_BITS 24
#define PART_MASK ((UINT64_C(1) << PART_BITS) - 1)
/* At most this many parts per run (grain grows instead): `next` stays below PART_MASK, the
 * mark of a closed ticket. */
#define MAX_PARTS (INT64_C(1) << 20)
#define SPIN_NS 100000     /* worker: spin this long after its last part, then sleep */
#define WAIT_SPIN_NS 50000 /* caller: spin this long for claimed parts, then sleep */
#define CLOCK_EVERY 64     /* spin iterations between clock reads */

typedef struct worker {
  struct kc_pool *pool;
  int index;         /* thread number, 1.. (0 is the caller) */
  uint64_t gen_seen; /* last generation this worker looked at */
  pthread_t tid;
  atomic_bool quit; /* set (under mu) to end this one inactive worker: a failed grow */
} worker;

struct kc_pool {
  kc_context *ctx;
  pthread_mutex_t owner; /* held by the one caller of kc_pool_run (kc_pool_claim) */
  pthread_mutex_t mu;
  pthread_cond_t wake, done_cv;
  worker **workers;
  int nworkers;       /* started */
  atomic_int threads; /* used by a run, caller included */
  uint64_t gen;       /* caller's: generation of the last job published */

  /* the current job (see the invariants) */
  kc_task_fn fn;
  void *arg;
  int64_t n, grain; /* grain 0: nparts near-equal contiguous parts */
  _Atomic int64_t nparts;

  _Alignas(64) _Atomic uint64_t ticket;
  _Alignas(64) _Atomic int64_t done;
  _Alignas(64) atomic_int sleepers; /* workers blocked on `wake` waiting for a job */
  atomic_int caller_waiting;        /* the caller is blocked on done_cv */
  atomic_bool stop;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A bounded spin: spin_on(&s, ns) relaxes once and says whether `ns` have not passed yet. */
typedef struct spin {
  unsigned i;
  uint64_t t0;
} spin;

static bool spin_on(spin *s, uint64_t ns) {
  if (++s->i % CLOCK_EVERY == 0) {
    uint64_t t = now_ns();
    if (!s->t0)
      s->t0 = t;
    else if (t - s->t0 > ns)
      return false;
  }
  cpu_relax();
  return true;
}

static inline uint64_t gen_of(uint64_t ticket) { return ticket >> PART_BITS; }

/* Claim and run parts of job `gen` as thread `thread` until none is left; returns the units. */
static int64_t help(kc_pool *p, uint64_t gen, int thread) {
  int64_t units = 0;
  uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
  for (;;) {
    if (gen_of(t) != gen) break;
    int64_t part = (int64_t)(t & PART_MASK);
    int64_t nparts = atomic_load(&p->nparts); /* seq_cst, as the CAS: see the top */
    if (part >= nparts) break;
    if (!atomic_compare_exchange_weak(&p->ticket, &t, t + 1)) continue;
    /* part is ours: the job's fields stay put until it is counted done */
    int64_t b, e;
    if (p->grain > 0) {
      b = part * p->grain;
      e = b + p->grain < p->n ? b + p->grain : p->n;
    } else {
      b = p->n * part / nparts;
      e = p->n * (part + 1) / nparts;
    }
    if (b < e) p->fn(p->arg, b, e, thread);
    units += e - b;
    /* the last part wakes a sleeping caller; nothing of p's job may be read after this add */
    if (atomic_fetch_add(&p->done, 1) + 1 == nparts && atomic_load(&p->caller_waiting)) {
      pthread_mutex_lock(&p->mu);
      pthread_cond_signal(&p->done_cv);
      pthread_mutex_unlock(&p->mu);
    }
    t = atomic_load_explicit(&p->ticket, memory_order_acquire);
  }
  return units;
}

/* A job this worker has not looked at is open (seq_cst: pairs with the caller's store of
 * ticket and load of sleepers, see the top), or the pool stops. */
static bool new_job(kc_pool *p, worker *w) {
  uint64_t t = atomic_load(&p->ticket);
  return (gen_of(t) != w->gen_seen && (t & PART_MASK) != PART_MASK) || atomic_load(&p->stop);
}

static bool active(kc_pool *p, worker *w) {
  return w->index < atomic_load_explicit(&p->threads, memory_order_relaxed);
}

static void *worker_main(void *vw) {
  worker *w = vw;
  kc_pool *p = w->pool;
  for (;;) {
    if (!active(p, w)) { /* not used at this thread count: sleep until that changes */
      pthread_mutex_lock(&p->mu);
      while (!active(p, w) && !atomic_load(&p->stop) && !atomic_load(&w->quit))
        pthread_cond_wait(&p->wake, &p->mu);
      pthread_mutex_unlock(&p->mu);
      if (atomic_load(&w->quit)) break;
    }
    spin sp = {0};
    while (!new_job(p, w) && spin_on(&sp, SPIN_NS))
      ;
    if (!new_job(p, w)) {
      pthread_mutex_lock(&p->mu);
      atomic_fetch_add(&p->sleepers, 1);
      while (!new_job(p, w) && active(p, w))
        pthread_cond_wait(&p->wake, &p->mu);
      atomic_fetch_sub(&p->sleepers, 1);
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load(&p->stop)) break;
    uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
    if ((t & PART_MASK) == PART_MASK) continue; /* the next job is being written */
    w->gen_seen = gen_of(t);
    if (active(p, w)) help(p, w->gen_seen, w->index);
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
  pthread_mutex_init(&p->owner, NULL);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->done_cv, NULL);
  atomic_init(&p->threads, 1);
  atomic_init(&p->nparts, 0);
  atomic_init(&p->ticket, 0);
  atomic_init(&p->done, 0);
  atomic_init(&p->sleepers, 0);
  atomic_init(&p->caller_waiting, 0);
  atomic_init(&p->stop, false);
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
  atomic_store(&p->stop, true);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->nworkers; i++) {
    pthread_join(p->workers[i]->tid, NULL);
    free(p->workers[i]);
  }
  free(p->workers);
  pthread_cond_destroy(&p->wake);
  pthread_cond_destroy(&p->done_cv);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->owner);
  free(p);
}

bool kc_pool_try_claim(kc_pool *p) { return pthread_mutex_trylock(&p->owner) == 0; }
void kc_pool_claim(kc_pool *p) { pthread_mutex_lock(&p->owner); }
void kc_pool_unclaim(kc_pool *p) { pthread_mutex_unlock(&p->owner); }

int kc_pool_threads(const kc_pool *p) {
  return atomic_load_explicit(&((kc_pool *)p)->threads, memory_order_relaxed);
}

/* End the workers from index `keep` on, which no run uses (threads <= keep): a grow that failed
 * part-way gives back what it started. */
static void drop_workers(kc_pool *p, int keep) {
  pthread_mutex_lock(&p->mu);
  for (int i = keep; i < p->nworkers; i++)
    atomic_store(&p->workers[i]->quit, true);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = keep; i < p->nworkers; i++) {
    pthread_join(p->workers[i]->tid, NULL);
    free(p->workers[i]);
  }
  p->nworkers = keep;
}

kc_status kc_pool_set_threads(kc_pool *p, int threads) {
  if (threads > KC_MAX_THREADS)
    return kc_errorf(p->ctx, KC_ERR_INVALID_ARG,
                     "threads: %d is more than kernc allows (KC_MAX_THREADS, %d)", threads,
                     KC_MAX_THREADS);
  if (threads <= 0) threads = online_cpus();
  if (threads > KC_MAX_THREADS) threads = KC_MAX_THREADS;
  if (threads - 1 > p->nworkers) {
    worker **ws = realloc(p->workers, (size_t)(threads - 1) * sizeof *ws);
    if (!ws) return kc_errorf(p->ctx, KC_ERR_NOMEM, "out of memory growing the thread pool");
    p->workers = ws;
    /* the new workers' index is >= the current thread count: inactive until the store below */
    int before = p->nworkers;
    while (p->nworkers < threads - 1) {
      worker *w = calloc(1, sizeof *w);
      kc_status s = KC_OK;
      if (!w) {
        s = kc_errorf(p->ctx, KC_ERR_NOMEM, "out of memory growing the thread pool to %d threads",
                      threads);
      } else {
        w->pool = p;
        w->index = p->nworkers + 1;
        atomic_init(&w->quit, false);
        /* Set before the thread starts, so a run posted right away is not missed. */
        w->gen_seen = p->gen;
        int err = pthread_create(&w->tid, NULL, worker_main, w);
        if (err != 0) {
          free(w);
          s = kc_errorf(p->ctx, KC_ERR_RUNTIME,
                        "cannot start thread %d of the %d asked for: %s (the %d running are kept)",
                        p->nworkers + 2, threads, strerror(err), kc_pool_threads(p));
        }
      }
      if (s != KC_OK) {
        drop_workers(p, before);
        return s;
      }
      p->workers[p->nworkers++] = w;
    }
  }
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->threads, threads);
  pthread_cond_broadcast(&p->wake); /* parked workers re-check whether they are used */
  pthread_mutex_unlock(&p->mu);
  return KC_OK;
}

int64_t kc_pool_run_timed(kc_pool *p, kc_task_fn fn, void *arg, int64_t n, int64_t grain,
                          uint64_t *self_ns) {
  if (self_ns) *self_ns = 0;
  if (n <= 0) return 0;
  int threads = kc_pool_threads(p);
  int64_t nparts;
  if (grain > 0) {
    if ((n + grain - 1) / grain > MAX_PARTS) grain = (n + MAX_PARTS - 1) / MAX_PARTS;
    nparts = (n + grain - 1) / grain;
  } else {
    nparts = n < threads ? n : threads;
  }
  if (threads <= 1 || nparts <= 1) {
    uint64_t t0 = self_ns ? now_ns() : 0;
    fn(arg, 0, n, 0);
    if (self_ns) *self_ns = now_ns() - t0;
    return n;
  }
  /* close the ticket, write the job, open it (see the top) */
  uint64_t gen = ++p->gen;
  atomic_store(&p->ticket, gen << PART_BITS | PART_MASK);
  p->fn = fn;
  p->arg = arg;
  p->n = n;
  p->grain = grain;
  atomic_store(&p->nparts, nparts);
  atomic_store_explicit(&p->done, 0, memory_order_relaxed);
  atomic_store(&p->ticket, gen << PART_BITS); /* seq_cst: publishes the job, then ... */
  if (atomic_load(&p->sleepers) > 0) {        /* ... sees every worker that went to sleep */
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
  }

  uint64_t t0 = self_ns ? now_ns() : 0;
  int64_t units = help(p, gen, 0);
  if (self_ns) *self_ns = now_ns() - t0;

  spin sp = {0};
  while (atomic_load_explicit(&p->done, memory_order_acquire) != nparts &&
         spin_on(&sp, WAIT_SPIN_NS))
    ;
  if (atomic_load_explicit(&p->done, memory_order_acquire) != nparts) {
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_waiting, 1);
    while (atomic_load(&p->done) != nparts)
      pthread_cond_wait(&p->done_cv, &p->mu);
    atomic_store(&p->caller_waiting, 0);
    pthread_mutex_unlock(&p->mu);
  }
  return units;
}

void kc_pool_run(kc_pool *p, kc_task_fn fn, void *arg, int64_t n, int64_t grain) {
  kc_pool_run_timed(p, fn, arg, n, grain, NULL);
}
