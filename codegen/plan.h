/*
 * codegen/plan.h - the plan of a compiled model: what the one executor (runtime/executor.c)
 * runs, whichever way the model was compiled. kc_compile builds it in memory (runtime/module.c,
 * kernels JIT'd); kc_export writes the same tables as constant data into the model's object
 * (codegen/cpu/aot_object.c), where the runtime archive linked beside it runs them. Both plans
 * come from one builder (runtime/plan_build.c), so a JIT run and a .so run of a graph check the
 * same inputs, compute the same sizes and lay out the same arena.
 *
 * Graph-free and LLVM-free: the runtime archive (kernc_rt) that every compiled model links
 * includes only this, codegen/aot.h, runtime/executor.h and runtime/plan_core.h.
 *
 * Layout rule: every table struct holds only int64_t and pointers (8 bytes each, no padding), in
 * the order the object writer emits them as an LLVM struct of i64/ptr fields; KC_PLAN_*_WORDS
 * give the count, and the writer checks them against sizeof, so a field added here and not there
 * fails to build rather than mis-reading tables.
 *
 * What a run does with the tables (runtime/executor.c):
 *   1. check every input's name, dtype and rank; each dim is checked or binds a symbol (idims);
 *   2. eval_dims(syms, slots) computes every dim of every value (the "slots": a value's rank
 *      dims are consecutive from kc_plan_value.dims) and the requirements' sides (kc_plan_req),
 *      which are then checked; expression dims of inputs are compared with the data;
 *   3. byte sizes from the slots; ARENA values get offsets by the shared first-fit planner in
 *      arena_order (their order of definition), live over nodes [first, last];
 *   4. every step launches its kernel over [0, units(dims)), with bufs = the buffers of
 *      buf_values[bufs..bufs+nbufs) (-1: absent, NULL) and dims gathered from
 *      dim_slots[dims..dims+ndims): the kernel ABI of codegen/cpu/emit.h (a step with shared
 *      scratch gets it after them, its first shared_zero bytes zeroed); a step that checks
 *      indices (check_in >= 0) and met one out of range stops the run with an error naming
 *      `what`, the index and its bound (runtime/index_error.c);
 *   5. outputs flagged copy are copied into their own buffer; all are described to the caller.
 *
 * Sizes that depend on tensor data (JIT plans only; kc_export refuses them): such a size is a
 * "late" symbol, appended to syms after the input-bound ones, that a run binds once the node
 * defining it is about to run (kc_plan_late). The run then goes in stages: steps before that
 * node, the symbol bound by the executor's settle hook from the data computed so far, the dims
 * evaluated again, the rest planned and run. Slots are numbered in node order (graph inputs
 * first, then each node's results and requirements), so "every slot below late.slot" is exactly
 * what the steps before the late node need.
 */
#ifndef KERNC_CODEGEN_PLAN_H
#define KERNC_CODEGEN_PLAN_H

#include "kernc.h"

#include <stdint.h>

/* Where a value's bytes live. */
enum {
  KC_PLAN_NONE = 0, /* not used by the compiled graph (no storage) */
  KC_PLAN_INPUT,    /* the caller's input ref (never written) */
  KC_PLAN_WEIGHT,   /* a weight: value_data[v] when the plan has that table, else the weights
                       blob at byte offset ref */
  KC_PLAN_ARENA,    /* the arena, planned per run */
  KC_PLAN_OUTPUT,   /* the run-owned buffer of output ref */
  KC_PLAN_VIEW,     /* the storage of value ref (a root: never a view itself) */
};

/* How an input dim is checked: an integer, a symbol it binds (or must equal), an expression. */
enum { KC_PLAN_DIM_STATIC = 0, KC_PLAN_DIM_SYM, KC_PLAN_DIM_EXPR };

/* The kernel ABI of codegen/cpu/emit.h: 0, or for a step that checks indices (check_in >= 0),
 * 1 + the flat position in buffer check_in of an index outside [-size, size), size =
 * dims[check_dim], that it met in [begin, end). */
typedef int64_t (*kc_plan_kernel_fn)(void *const *bufs, const int64_t *dims, void *ws,
                                     int64_t begin, int64_t end);
typedef int64_t (*kc_plan_units_fn)(const int64_t *dims);
/* Every slot from the symbol values; -1, or the first slot that is negative, overflowed or
 * divided by zero. */
typedef int64_t (*kc_plan_dims_fn)(const int64_t *syms, int64_t *slots);

typedef struct kc_plan_value {
  int64_t storage; /* KC_PLAN_* */
  int64_t dtype;   /* kc_dtype */
  int64_t rank;
  int64_t dims;  /* first of its rank slots */
  int64_t ref;   /* see the storage kinds */
  int64_t first; /* the node defining it (-1: a graph input) */
  int64_t last;  /* ARENA: live over nodes [first, last] */
} kc_plan_value;
#define KC_PLAN_VALUE_WORDS 7

typedef struct kc_plan_step {
  kc_plan_kernel_fn fn;   /* NULL on a device target: the device's kernel of this step runs */
  kc_plan_units_fn units; /* NULL likewise */
  const char *name;       /* kernel symbol ("k3_matmul"), for messages */
  int64_t node;           /* node index in the compiled graph */
  int64_t grain;          /* thread pool grain (0: one range per thread) */
  int64_t ws_bytes;       /* per-thread workspace */
  int64_t shared_bytes;   /* scratch common to all units of one launch (0: none), bufs[nbufs] */
  int64_t shared_zero;    /* its first shared_zero bytes are zero when the launch starts */
  int64_t nbufs, bufs, ndims, dims;
  int64_t check_in;  /* buffer holding the indices the kernel checks; -1: none */
  int64_t check_dim; /* entry of the step's dims bounding them */
  const char *what;  /* the node for messages: "node 'loc' (gather, %12)" */
} kc_plan_step;
#define KC_PLAN_STEP_WORDS 15

typedef struct kc_plan_io {
  const char *name;
  int64_t value; /* its value */
  int64_t copy;  /* outputs: copied from the value's storage after the run */
} kc_plan_io;
#define KC_PLAN_IO_WORDS 3

typedef struct kc_plan_idim {
  int64_t kind;     /* KC_PLAN_DIM_* */
  int64_t value;    /* STATIC: the size; SYM: symbol index */
  const char *text; /* the dim as the model writes it ("768", "B", "S+1") */
} kc_plan_idim;
#define KC_PLAN_IDIM_WORDS 3

/* What a compiled size assumed that only a run's sizes can confirm (runtime/plan_build.c): a
 * slice's constant bound within a symbolic dim, which ONNX would clamp (NONNEG: slot >= 0); two
 * symbolic dims inference took to be equal (EQ: slot == slot2), one broadcasting to another
 * (BCAST: slot == slot2 or slot == 1), one within another (LE: slot <= slot2). */
enum { KC_PLAN_REQ_NONNEG, KC_PLAN_REQ_EQ, KC_PLAN_REQ_BCAST, KC_PLAN_REQ_LE };
typedef struct kc_plan_req {
  int64_t kind, slot, slot2;
  const char *text;  /* which node assumed what */
  const char *a, *b; /* the dims of slot and slot2 as text ("T", "S*2") */
} kc_plan_req;
#define KC_PLAN_REQ_WORDS 6

/* A size that depends on data: symbol sym, bound when node `node` (the first step at or after
 * it: `step`) is reached; slots below `slot` do not depend on it. */
typedef struct kc_plan_late {
  int64_t sym, node, step, slot;
} kc_plan_late;
#define KC_PLAN_LATE_WORDS 4

typedef struct kc_plan {
  const char *name; /* the model's name (the symbol prefix of a .so) */
  int64_t nvalues, nsteps, ninputs, noutputs, nsyms, nslots, narena, nstep_dims;
  const kc_plan_value *values;
  const kc_plan_step *steps;
  const kc_plan_io *inputs, *outputs;
  const kc_plan_idim *idims;  /* per input, KC_MAX_RANK entries */
  const char *const *syms;    /* symbol names: input-bound ones, then the late ones */
  const int64_t *buf_values;  /* per step: value of each buffer, -1 when absent */
  const int64_t *dim_slots;   /* per step: slot of each dims entry */
  const int64_t *arena_order; /* ARENA values by first */
  const unsigned char *weights;
  int64_t weights_bytes;
  kc_plan_dims_fn eval_dims;
  int64_t max_ws; /* largest ws_bytes of a step */
  int64_t nreqs;
  const kc_plan_req *reqs; /* by slot */
  int64_t nlate;
  const kc_plan_late *late;      /* by node; always empty in a .so */
  const void *const *value_data; /* per value: a WEIGHT's data (JIT); NULL in a .so */
} kc_plan;
#define KC_PLAN_WORDS 27

/*
 * The decode step of a causal decoder (passes/derive_decode.c) as a plan, with the facts a
 * decoding session (runtime/session.c) needs and the plan does not say in so many words. The
 * plan's inputs are the token ids [B, S] (i64 or i32), then kc_kv_cache f32[NBLK, L, 2, KVH, BS,
 * D], kc_block_table i32[B, MAXB], kc_past_len i64[B], kc_new_len i64[B]; its output 0 the logits
 * f32[B, S, vocab]. kc_session_new fills it from the decode graph; kc_export writes it into the
 * object beside the model's plan (NAME_session_new hands it to the runtime archive).
 */
typedef struct kc_plan_decode {
  const kc_plan *plan;
  int64_t vocab;
  int64_t layers, kv_heads, head_dim; /* the cache: L, KVH, D */
  int64_t dtype_size;                 /* bytes of a cache element */
} kc_plan_decode;
#define KC_PLAN_DECODE_WORDS 6

#endif /* KERNC_CODEGEN_PLAN_H */
