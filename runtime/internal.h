/*
 * runtime/internal.h - private to runtime/: the compiled module (kc_module of kernc.h), the
 * host-side plan it is run by, and the table of targets.
 *
 * A module is a compiled graph plus the plan of codegen/plan.h (runtime/plan_build.c) run by the
 * one executor (runtime/executor.c) on the target's device half: kc_compile builds the plan in
 * memory with its kernels JIT'd, kc_export writes the same plan into a .so.
 *
 * Storage (decided once at compile time, per value, through its root; kc_rt_analyze):
 *   - a value's root is itself, or for the result of a no_kernel node (views) the root of its
 *     input 0: a view aliases its input's storage;
 *   - INPUT roots are the caller's buffers (never written), SOURCE roots the tensor data of a
 *     weight or constant, COMPUTED roots are written by kernels;
 *   - a COMPUTED root that a graph output refers to (first come) lives in that output's buffer;
 *     any other output is copied into its own buffer after the run;
 *   - every other COMPUTED root gets an offset in the arena, by liveness [first, last] in node
 *     order (uses through views included), first fit, planned per run from its sizes.
 */
#ifndef KERNC_RUNTIME_INTERNAL_H
#define KERNC_RUNTIME_INTERNAL_H

#include "codegen/codegen.h"
#include "codegen/plan.h"
#include "ir/internal.h"
#include "runtime/executor.h"
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

/* A weight's data and its place in a .so's weights file. */
typedef struct kc_rt_weight {
  const void *data;
  size_t bytes;
  int64_t off; /* in the weights file, a multiple of KC_RT_ALIGN */
} kc_rt_weight;

/* The plan of codegen/plan.h with its arrays owned, plus what only the compiler needs. */
typedef struct kc_rt_plan {
  kc_plan model; /* JIT: complete once eval_dims is set; export: the object supplies fn/units,
                    weights and eval_dims */
  kc_plan_value *values;
  kc_plan_step *steps;
  kc_plan_io *inputs, *outputs;
  kc_plan_idim *idims;
  const char **syms;
  kc_plan_late *late;
  int64_t *buf_values, *dim_slots, *arena_order;
  kc_dim *slot_dims; /* per slot: the dim of the compiled graph it evaluates */
  kc_plan_req *reqs;
  char **req_text; /* per requirement: its text */
  kc_rt_weight *weights;
  int64_t nweights;
  const void **value_data; /* per value: a weight's data */
  char **names; /* strings made here (input names for unnamed inputs, dim texts, step names) */
  int64_t nnames;
} kc_rt_plan;

typedef struct kc_target kc_target;

struct kc_module {
  kc_context *ctx;
  const kc_target *target;
  kc_graph *g;            /* compiled graph, after passes */
  kc_cpu *cpu;            /* the host target: JIT'd kernels and dims function */
  kc_cpu_kernel *kernels; /* per node of g */
  void *tdata;            /* the target's own compile state (CUDA: device, program) */

  kc_rt_val *rv;   /* per value (kc_rt_analyze) */
  uint32_t *order; /* COMPUTED roots held in the arena, by first */
  uint32_t norder;
  bool *out_copy; /* per output: copied from its root after the run */

  kc_rt_plan plan; /* what the executor runs */
  kc_exec *x;      /* the executor instance (kc_compile only) */

  /* Sizes that depend on data (plan.model.nlate > 0; runtime/settle.c): a copy of g whose
   * node inference settles them, per run, under sg_lock. */
  kc_graph *sg;
  kc_arena_pos sg_mark;
  uint32_t sg_ndexprs, sg_nfresh;
  pthread_mutex_t sg_lock;
  bool sg_lock_made;
};

/*
 * A target (QBE's Target, ggml's backends): the one place that knows what a target name means.
 * kc_compile and kc_export look the name up here and call the row's functions; nothing else
 * compares target names.
 */
struct kc_target {
  const char *name;
  const char *pipeline; /* default pass pipeline (passes/manager.c) */
  bool takes_archs;     /* kc_export_options.cuda_archs applies */
  /* Before any work: can the target run here (CUDA: open the device into m->tdata)? */
  kc_status (*probe)(kc_module *m);
  /* kc_compile: kernels of every node of m->g (m->kernels), JIT'd or loaded. */
  kc_status (*compile)(kc_module *m);
  /* kc_compile: the executor instance m->x over m->plan.model (complete) on `threads`. */
  kc_status (*open)(kc_module *m, int threads);
  /* Free m->tdata. */
  void (*close)(kc_module *m);
  /* kc_export: lower m->g for an object (m->kernels' static facts), *obj its module, *state the
   * target's export state (CUDA: NVRTC images). */
  kc_status (*export_lower)(kc_module *m, const kc_export_options *opts, kc_cpu_obj **obj,
                            void **state);
  /* kc_export: what the object pulls in beyond the weights (CUDA: the device blob into dir). */
  kc_status (*export_write)(void *state, const kc_rt_plan *p, kc_cpu_obj *obj, const char *dir);
  /* kc_export: what the kernels were built for, for the header ("znver5", "CUDA sm_80, ..."). */
  void (*export_describe)(const kc_module *m, void *state, char *buf, size_t size);
  void (*export_free)(void *state);
};

/* target.c: the row named name (NULL: "cpu"), or KC_ERR_UNSUPPORTED listing the known ones. */
kc_status kc_target_find(kc_context *ctx, const char *name, const kc_target **out);

/* module.c: a module for target t over a copy of g (share_data: g's weights are not copied),
 * the target probed first when `probe` (kc_compile; an export needs no device), then the passes
 * named by `passes` run (NULL: the target's default pipeline; "": none) and the graph verified.
 * *out is set even on failure (kc_module_free it). */
kc_status kc_rt_module_new(kc_context *ctx, const kc_graph *g, const kc_target *t, bool share_data,
                           const char *passes, bool probe, kc_module **out);
/* module.c: kc_compile's work on a module made by kc_rt_module_new: the target's kernels, the
 * storage analysis, the plan (with its JIT'd dims function) and the executor instance on
 * `threads` (0: the context's option). */
kc_status kc_rt_module_compile(kc_module *m, int threads);
/* module.c: the static analysis of storage (roots, liveness, output claims). */
kc_status kc_rt_analyze(kc_module *m);

/* plan_build.c: the plan of m (passes run, lowered, kc_rt_analyze done) named name; with late,
 * sizes that depend on data become late symbols (JIT), else they are KC_ERR_UNSUPPORTED naming
 * the node (export). */
kc_status kc_rt_plan_build(kc_module *m, const char *name, bool late, kc_rt_plan *p);
void kc_rt_plan_free(kc_rt_plan *p);

/* session_compile.c: derive the decode step of m's graph (passes run, not yet lowered) in place
 * (passes/derive_decode.c), verify it and size m->kernels for it. */
kc_status kc_rt_derive_decode(kc_module *m);
/* session_compile.c: the vocabulary and cache shape of decode graph g into d (d->plan NULL). */
kc_status kc_rt_decode_info(kc_context *ctx, const kc_graph *g, kc_plan_decode *d);

/* settle.c: let m->x settle m's late symbols at run time (the executor's settle hook). */
kc_status kc_rt_settle_init(kc_module *m);
void kc_rt_settle_free(kc_module *m);

#endif /* KERNC_RUNTIME_INTERNAL_H */
