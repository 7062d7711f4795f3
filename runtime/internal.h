/*
 * runtime/internal.h - private to runtime/: the compiled module (kc_module of kernc.h), its
 * static memory facts, and the steps of a run (bind inputs, plan memory, execute).
 *
 * A module holds two copies of the graph: `g`, the compiled one (its integer dims are baked
 * into the kernels), and `sg`, the shape graph, where every run re-infers concrete shapes
 * with the IR's own shape functions (one source of truth for shapes). sg's per-run state
 * (types, known values, new dim expressions, fresh-symbol counter) is rolled back at the start
 * of each run, so repeated runs do not grow memory.
 *
 * Storage (decided once at compile time, per value, through its root):
 *   - a value's root is itself, or for the result of a no_kernel node (views) the root of its
 *     input 0: a view aliases its input's storage;
 *   - INPUT roots are the caller's buffers (never written), SOURCE roots the tensor data of a
 *     weight or constant, COMPUTED roots are written by kernels;
 *   - a COMPUTED root that a graph output refers to (first come) lives in that output's
 *     module-owned buffer; any other output is copied into its own buffer after the run;
 *   - every other COMPUTED root gets an offset in the arena, by liveness [first, last] in node
 *     order (uses through views included), first fit, planned per run from concrete sizes (in
 *     stages when later sizes depend on data computed by earlier nodes; see runtime/plan.c).
 * Invariants: per-run scratch is sized at compile time; a run allocates only when a buffer
 * (arena, an output) must grow, so repeated runs of the same shapes allocate nothing there.
 */
#ifndef KERNC_RUNTIME_INTERNAL_H
#define KERNC_RUNTIME_INTERNAL_H

#include "codegen/codegen.h"
#include "ir/internal.h"
#include "runtime/plan_core.h"
#include "runtime/runtime.h"

enum { KC_RT_COMPUTED, KC_RT_INPUT, KC_RT_SOURCE };

/* Static storage facts of one value. */
typedef struct kc_rt_val {
  uint32_t root;    /* value whose storage this one is */
  uint8_t kind;     /* KC_RT_* of the root */
  uint32_t input;   /* INPUT roots: graph input index */
  const void *data; /* SOURCE roots: tensor data */
  uint32_t first;   /* COMPUTED roots: index of the defining node */
  uint32_t last;    /* COMPUTED roots: last node reading it (through views too) */
  int32_t output;   /* COMPUTED roots: graph output whose buffer holds it, else -1 */
} kc_rt_val;

/* Per-node kernel timing, summed over runs while profiling is on (runtime/profile.c). */
typedef struct kc_rt_prof {
  uint64_t ns, calls, min_ns;
} kc_rt_prof;

/*
 * Per-node cost of running its kernel on one thread, measured (runtime/exec.c): the fastest
 * nanoseconds per unit seen in `samples` launches with the dims hashed in `key`. A kernel
 * expected to take less than KC_RT_SERIAL_NS runs on the calling thread alone.
 */
typedef struct kc_rt_cost {
  uint64_t key;
  float ns_per_unit;
  uint32_t samples;
} kc_rt_cost;

/* A symbol bound by the inputs of a run. */
typedef struct kc_rt_binding {
  const char *name;
  int64_t value;
  uint32_t input; /* the input that bound it, for messages */
} kc_rt_binding;

struct kc_module {
  kc_context *ctx;
  kc_graph *g;  /* compiled graph, after passes */
  kc_graph *sg; /* shape graph: clone of g, re-inferred per run */
  kc_arena_pos sg_mark;
  uint32_t sg_ndexprs, sg_nfresh;

  kc_cpu *cpu;
  struct kc_rt_cuda *cuda; /* target "cuda" (runtime/cuda_exec.c); NULL for the CPU */
  kc_cpu_kernel *kernels;  /* per node of g */
  kc_pool *pool;

  kc_rt_val *rv;   /* per value */
  uint32_t *order; /* COMPUTED roots held in the arena, by first */
  uint32_t norder;
  bool *out_copy;    /* per output: copied from its root after the run */
  uint32_t max_bufs; /* most inputs+outputs of a node */
  uint32_t max_dims; /* most dims entries of a node */

  /* per-run scratch, sized at compile time */
  size_t *nbytes; /* per value */
  size_t *off;    /* per value: arena offset, SIZE_MAX when not in the arena */
  void **vbuf;    /* per value */
  kc_rt_block *live;
  kc_rt_binding *bind;
  uint32_t nbind;
  const kc_tensor_desc **in_of; /* per graph input: the caller's descriptor */
  void **bufs;
  int64_t *dims;

  unsigned char *arena; /* intermediates */
  size_t arena_cap, peak;
  uint32_t nlive;      /* plan state of the run: live arena blocks, */
  size_t total;        /* arena bytes placed so far, */
  uint32_t next_order; /* next entry of order[] to place, */
  uint32_t planned;    /* nodes whose results are placed */
  void **out_buf;      /* per output, module-owned */
  size_t *out_cap;
  unsigned char *ws; /* per-thread kernel workspaces, ws_stride bytes each */
  size_t ws_stride;
  int ws_threads;
  kc_rt_cost *cost; /* per node: serial cost samples, deciding serial vs pool runs */
  bool profile;     /* time every kernel launch into prof[] */
  kc_rt_prof *prof; /* per node; NULL until profiling is first turned on */
  _Alignas(KC_RT_ALIGN) unsigned char empty[KC_RT_ALIGN]; /* storage of zero-size tensors */
};

/* module.c: run the passes named by `passes` on m->g (kc_compile_options.passes; shared by
 * kc_compile and kc_export so both compile the same graph). */
kc_status kc_rt_passes(kc_module *m, const char *passes);
/* module.c: the static analysis of storage (roots, liveness, output claims). */
kc_status kc_rt_analyze(kc_module *m);
/* Size the per-thread workspaces for the pool's thread count. */
kc_status kc_rt_workspace(kc_module *m);

/* bind.c: check the caller's inputs against g, then type sg with their concrete shapes. */
kc_status kc_rt_bind(kc_module *m, const kc_tensor_desc *inputs, uint32_t nin);

/* bind.c: make the results of nodes [from, ...) concrete; *stop is the first node that is not
 * (its sizes wait for computed data) or nnodes. Errors only for sizes that contradict g. */
kc_status kc_rt_concrete(kc_module *m, uint32_t from, uint32_t *stop);
/* bind.c: give node `stop`'s small inputs their computed contents and re-infer from it on;
 * KC_ERR_UNSUPPORTED naming the node when its sizes still depend on data. */
kc_status kc_rt_settle(kc_module *m, uint32_t stop);

/* plan.c: start a run's plan (graph inputs bound, nothing placed). */
kc_status kc_rt_plan_reset(kc_module *m);
/* plan.c: sizes, arena offsets and buffers of every value nodes [planned, end) define. */
kc_status kc_rt_plan_upto(kc_module *m, uint32_t end);
/* plan.c: buffers of the outputs that are copies (after the whole graph is planned). */
kc_status kc_rt_plan_outputs(kc_module *m);

/* cuda_exec.c, target "cuda": open device 0 (KC_ERR_UNSUPPORTED "CUDA target unavailable: ..."
 * without a driver, a device or the toolkit), compile and load the kernels of m->g (filling
 * m->kernels[].no_kernel), run nodes [from, to) on the device, free what m->cuda holds. */
kc_status kc_rt_cuda_open(kc_module *m);
kc_status kc_rt_cuda_compile(kc_module *m);
kc_status kc_rt_cuda_execute(kc_module *m, uint32_t from, uint32_t to);
void kc_rt_cuda_free(kc_module *m);
/* cuda_exec.c: every kernel of m->g into prog (info[i]: node i's launch; m->kernels[].no_kernel
 * filled), *src the program's text; also what kc_export --target=cuda compiles. */
struct kc_cuda_prog;
struct kc_cuda_kernel_info;
kc_status kc_rt_cuda_emit(kc_module *m, struct kc_cuda_prog *prog, struct kc_cuda_kernel_info *info,
                          const char **src);

/* exec.c: run the kernels of nodes [from, to) in order; a kernel's index error stops it (the
 * run's error names the node, runtime/index_error.c). */
kc_status kc_rt_execute(kc_module *m, uint32_t from, uint32_t to);

#endif /* KERNC_RUNTIME_INTERNAL_H */
