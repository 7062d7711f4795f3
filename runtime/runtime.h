/*
 * runtime/runtime.h - kernc-internal API of the runtime: the thread pool (memory plan,
 * executor and KV-cache join it later).
 *
 * The pool is an object (no global state): a kc_context or a compiled model owns one. It runs
 * fn(arg, begin, end, thread) over a range [0, n) split across its threads; generated kernels
 * take exactly such a range, so the pool never knows what a kernel does.
 *
 * Invariants:
 *   - One caller at a time: kc_pool_run and kc_pool_set_threads are not reentrant and must not
 *     race each other; callers that may run concurrently claim the pool first (kc_pool_claim,
 *     or kc_pool_try_claim and run serially when it fails). The calling thread takes part in the
 *     work as thread 0.
 *   - thread is in [0, kc_pool_threads) and is unique among the calls running at once, so it
 *     can index per-thread scratch (kernel workspaces).
 *   - kc_pool_run returns only after every call of fn has returned.
 *   - Any thread may run any range: fn must compute the same results however [0, n) is cut
 *     and whichever thread runs a piece (the calling thread runs all of them when the workers
 *     are busy elsewhere).
 */
#ifndef KERNC_RUNTIME_H
#define KERNC_RUNTIME_H

#include "kernc.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct kc_pool kc_pool;

/* One piece of work: the units [begin, end) of a range, on thread `thread`. */
typedef void (*kc_task_fn)(void *arg, int64_t begin, int64_t end, int thread);

/* A pool using `threads` threads including the caller (<= 0: one per online CPU). */
kc_status kc_pool_new(kc_context *ctx, int threads, kc_pool **out);
/* Stop and join the workers. NULL is fine. */
void kc_pool_free(kc_pool *p);
/* Make this thread the pool's one caller: wait for it, or (try) only take it when free. */
void kc_pool_claim(kc_pool *p);
bool kc_pool_try_claim(kc_pool *p);
void kc_pool_unclaim(kc_pool *p);
/* Threads a run uses, the caller included. */
int kc_pool_threads(const kc_pool *p);
/* Change the thread count (<= 0: one per online CPU); workers are started as needed. */
kc_status kc_pool_set_threads(kc_pool *p, int threads);
/*
 * Run fn over [0, n). grain <= 0: split into min(threads, n) contiguous near-equal ranges (for
 * kernels whose ranges share packed data, e.g. matmul). grain > 0: ranges of grain units (more
 * when there would be over 2^20 of them). Threads, the caller first, take ranges from a shared
 * counter until none is left; the caller then waits only for ranges that workers took.
 */
void kc_pool_run(kc_pool *p, kc_task_fn fn, void *arg, int64_t n, int64_t grain);
/* kc_pool_run that returns the units the calling thread ran itself and, when self_ns is not
 * NULL, the nanoseconds it spent running them (a serial cost sample; runtime/exec_cpu.c). */
int64_t kc_pool_run_timed(kc_pool *p, kc_task_fn fn, void *arg, int64_t n, int64_t grain,
                          uint64_t *self_ns);

/*
 * The error of a kernel that found the index at flat position pos of its indices (*index, of
 * dtype it: i32 or i64; a host copy) outside [-bound, bound) for axis `axis` of its data
 * (runtime/index_error.c, shared by the JIT and the runtime of compiled models):
 * KC_ERR_INVALID_ARG, "WHAT: index 70 at position 65 of its indices is out of range for axis 0
 * of size 64", what naming the node ("node 'x' (gather, %5)").
 */
kc_status kc_rt_index_error(kc_context *ctx, const char *what, kc_dtype it, const void *index,
                            int64_t pos, int64_t axis, int64_t bound);

/* ---- NumPy .npy files (runtime/npy.c) ------------------------------------------------------ */

/* Read a .npy file (format 1.0-3.0, little-endian, C order); out->data is malloc'd. */
kc_status kc_npy_read(kc_context *ctx, const char *path, kc_tensor_desc *out);
/* The same from memory; `what` names the source in messages. */
kc_status kc_npy_read_mem(kc_context *ctx, const void *buf, size_t len, const char *what,
                          kc_tensor_desc *out);
/* Write t as a .npy file (bf16 as its u16 bits: numpy has no bfloat16). */
kc_status kc_npy_write(kc_context *ctx, const char *path, const kc_tensor_desc *t);
/* Free the data of a descriptor kc_npy_read filled. */
void kc_npy_free(kc_tensor_desc *t);

/* ---- constants for the passes (runtime/fold_eval.c) ---------------------------------------- */

struct kc_evaluator;
/* The evaluator a compiler driver puts on kc_pass_options.eval (passes/passes.h) so fold can
 * compute constants: the CPU JIT, whatever the target. Static and stateless. */
const struct kc_evaluator *kc_fold_evaluator(void);

#endif /* KERNC_RUNTIME_H */
