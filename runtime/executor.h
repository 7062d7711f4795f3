/*
 * runtime/executor.h - the one executor: it runs a plan (codegen/plan.h) for kc_compile's
 * modules and for the models kc_export compiles, so every run-time behaviour (input checks,
 * sizes, requirement checks, the arena plan, staged runs, profiling, the thread rules) exists
 * once. runtime/executor.c is the target-independent part; a target is a kc_exec_device, a
 * table of functions that give values their storage and launch steps: the CPU
 * (runtime/exec_cpu.c: the thread pool, serial small kernels) and CUDA (runtime/exec_cuda.c).
 *
 * Graph-free and LLVM-free: this is what the runtime archive linked into every compiled model
 * runs. What only the JIT can do (binding sizes that depend on tensor data, with the graph's
 * shape functions) comes in through the settle hook.
 *
 * Threads: any number of threads may run one instance at once (ONNX Runtime's promise for
 * Session::Run). Each calling thread gets its own workspace (kc_exec_ws: slots, sizes, arena,
 * output buffers, kernel scratch), made at its first run and kept until the instance is freed,
 * so the outputs a run returns stay valid until the same thread's next run. The thread pool
 * serves one run at a time: a run that finds it busy runs its kernels on its own thread. A device
 * target serializes runs on the device (its begin/end hold the device). Errors go to the
 * context's per-thread message (ir/context.c), so each thread reads its own.
 */
#ifndef KERNC_RUNTIME_EXECUTOR_H
#define KERNC_RUNTIME_EXECUTOR_H

#include "codegen/plan.h"
#include "runtime/plan_core.h"
#include "runtime/runtime.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef struct kc_exec kc_exec;
typedef struct kc_exec_ws kc_exec_ws;

/*
 * A target's half of the executor. Every function gets the instance and, but for close, the
 * calling thread's workspace; begin is called once per run before any other per-run call, end
 * after the last, whatever happened in between.
 */
typedef struct kc_exec_device {
  const char *name;
  void (*close)(kc_exec *x);                       /* frees x->dev */
  kc_status (*ws_open)(kc_exec *x, kc_exec_ws *w); /* w->dev */
  void (*ws_close)(kc_exec *x, kc_exec_ws *w);     /* frees w->dev */
  kc_status (*begin)(kc_exec *x, kc_exec_ws *w);   /* claim what a run needs */
  void (*end)(kc_exec *x, kc_exec_ws *w);          /* give it back */
  /* Storage for the values defined before node `node_end` (graph inputs included): the arena
   * has `total` bytes of which earlier stages wrote the first `keep`; w->off/nbytes are set. */
  kc_status (*place)(kc_exec *x, kc_exec_ws *w, size_t total, size_t keep, int64_t node_end);
  kc_status (*launch)(kc_exec *x, kc_exec_ws *w, int64_t step);
  kc_status (*sync)(kc_exec *x, kc_exec_ws *w); /* wait for launched steps */
  /* Host-readable contents of value v, computed by the steps run so far. */
  kc_status (*fetch)(kc_exec *x, kc_exec_ws *w, int64_t v, const void **data);
  /* Every output into w->out_buf (host memory). */
  kc_status (*finish)(kc_exec *x, kc_exec_ws *w);
} kc_exec_device;

/* The targets. */
extern const kc_exec_device kc_exec_cpu;
extern const kc_exec_device kc_exec_cuda;

/*
 * Give x (made with kc_exec_cuda) its device: dev and mod (owned from now on, also on failure),
 * and per step of the plan the launch description info[i] and function fn[i] (both copied).
 * Uploads a .so's weights blob.
 */
struct kc_cuda_dev;
struct kc_cuda_mod;
struct kc_cuda_kernel_info;
kc_status kc_exec_cuda_attach(kc_exec *x, struct kc_cuda_dev *dev, struct kc_cuda_mod *mod,
                              const struct kc_cuda_kernel_info *info, void *const *fn);

/*
 * Bind plan->late[li].sym (and those of every later entry at the same node) into w->syms from
 * the run so far (kc_exec_value / kc_exec_fetch give dims and contents); KC_OK or an error in
 * x->ctx naming the node.
 */
typedef kc_status (*kc_exec_settle_fn)(void *user, kc_exec *x, kc_exec_ws *w, int64_t li);

/* Per-step kernel times while profiling is on (relaxed atomics: runs may be concurrent). */
typedef struct kc_exec_prof {
  _Atomic uint64_t ns, calls, min_ns;
} kc_exec_prof;

struct kc_exec {
  const kc_plan *d;
  kc_context *ctx;
  bool own_ctx;
  kc_pool *pool;
  const kc_exec_device *dev_ops;
  void *dev;
  kc_exec_settle_fn settle;
  void *settle_user;
  pthread_mutex_t lock; /* the workspace list */
  kc_exec_ws *wss;
  atomic_bool profile;
  kc_exec_prof *prof; /* per step, once profiling was turned on */
  _Atomic size_t peak;
};

/* One calling thread's state of runs of an instance. */
struct kc_exec_ws {
  kc_exec_ws *next;
  pthread_t owner;
  const kc_tensor_desc **in; /* per input of the plan: the caller's descriptor this run */
  int64_t *syms, *bound_by, *slots, *step_dims;
  size_t *nbytes; /* per value */
  size_t *off;    /* per value: arena offset, SIZE_MAX when not placed */
  void **vbuf;    /* per value: host address (CPU: where kernels read and write) */
  kc_rt_block *live;
  unsigned char *arena; /* host arena (a device target's host mirror for fetch) */
  size_t arena_cap;
  unsigned char **out_buf; /* per output, host */
  size_t *out_cap;
  void *dev;
  _Alignas(KC_RT_ALIGN) unsigned char empty[KC_RT_ALIGN]; /* storage of zero-size tensors */
};

/* An instance of plan d on target dev (dev->open-like setup is the caller's: x->dev is NULL
 * until it sets it). threads as kc_pool_new; ctx NULL: the instance makes its own. */
kc_status kc_exec_new(const kc_plan *d, const kc_exec_device *dev, kc_context *ctx, int threads,
                      kc_exec **out);
/* Free x (the device's close first). NULL is fine. */
void kc_exec_free(kc_exec *x);
/* Run x on d->ninputs inputs (by name when named, else by position) into d->noutputs output
 * descriptors (nout of them are written; nout <= d->noutputs). */
kc_status kc_exec_run(kc_exec *x, const kc_tensor_desc *inputs, uint32_t nin,
                      kc_tensor_desc *outputs, uint32_t nout);
/* Threads a run uses (<= 0: one per core); waits for a run that holds the pool. */
kc_status kc_exec_set_threads(kc_exec *x, int threads);
/* Profiling on (counters restart) or off. */
kc_status kc_exec_set_profile(kc_exec *x, bool on);
/* The largest arena a run of x has needed. */
size_t kc_exec_peak(const kc_exec *x);

/* The host side of a device's place: the host arena (total bytes, first keep kept) and the host
 * address of every value defined before node_end, in w->vbuf. The CPU's place itself. */
kc_status kc_exec_host_place(kc_exec *x, kc_exec_ws *w, size_t total, size_t keep,
                             int64_t node_end);

/* Step i's kernel met the index at flat position pos of its buffer check_in out of range:
 * the run's error (runtime/index_error.c), naming the step's node. *index is a host copy of the
 * index, of dtype it. */
kc_status kc_exec_index_error(kc_exec *x, kc_exec_ws *w, int64_t i, int64_t pos, kc_dtype it,
                              const void *index);

/* For settle hooks: value v's dtype, rank and dims in this run (NULL: not wanted). */
void kc_exec_value(const kc_exec *x, const kc_exec_ws *w, int64_t v, kc_dtype *dtype, int *rank,
                   int64_t *dims);

#endif /* KERNC_RUNTIME_EXECUTOR_H */
