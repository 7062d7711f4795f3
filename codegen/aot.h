/*
 * codegen/aot.h - the contract between a model compiled ahead of time and the runtime linked into
 * the same shared library: the tables the object holds (written by codegen/cpu/aot_object.c from
 * what runtime/export.c plans) and the entry points of the AOT runtime (runtime/aot_rt.c) that
 * the object's NAME_create / NAME_run / NAME_free / NAME_error call.
 *
 * Graph-free and LLVM-free: the runtime archive (kernc_rt) that every compiled model links
 * includes only this, runtime/runtime.h and runtime/plan_core.h.
 *
 * Layout rule: every table struct holds only int64_t and pointers (8 bytes each, no padding), in
 * the order the emitter writes them as an LLVM struct of i64/ptr fields; KC_AOT_*_WORDS give the
 * count, and the emitter checks them against sizeof, so a field added here and not there fails
 * to build rather than mis-reading tables.
 *
 * What a run does with the tables (runtime/aot_rt.c):
 *   1. check every input's name, dtype and rank; each dim is checked or binds a symbol (idims);
 *   2. eval_dims(syms, slots) computes every dim of every value (the "slots": a value's rank
 *      dims are consecutive, from kc_aot_value.dims) and the requirements after them (slots
 *      that must not be negative); expression dims of inputs are then compared with the data;
 *   3. byte sizes from the slots; ARENA values get offsets by the shared first-fit planner in
 *      arena_order (their order of definition), live over nodes [first, last];
 *   4. every step launches its kernel over [0, units(dims)) on the thread pool, with bufs =
 *      the buffers of buf_values[bufs..bufs+nbufs) (-1: absent, NULL) and dims gathered from
 *      dim_slots[dims..dims+ndims): the kernel ABI of codegen/cpu/emit.h; a step that checks
 *      indices (check_in >= 0) whose kernel returned nonzero stops the run with an error naming
 *      `what`, the index and its bound (runtime/index_error.c);
 *   5. outputs flagged copy are copied into their own buffer; all are described to the caller.
 */
#ifndef KERNC_CODEGEN_AOT_H
#define KERNC_CODEGEN_AOT_H

#include "kernc.h"

#include <stdint.h>

/* Where a value's bytes live. */
enum {
  KC_AOT_NONE = 0, /* not used by the compiled graph (no storage) */
  KC_AOT_INPUT,    /* the caller's input ref (never written) */
  KC_AOT_WEIGHT,   /* the weights, at byte offset ref */
  KC_AOT_ARENA,    /* the arena, planned per run */
  KC_AOT_OUTPUT,   /* the model-owned buffer of output ref */
  KC_AOT_VIEW,     /* the storage of value ref (a root: never a view itself) */
};

/* How an input dim is checked: an integer, a symbol it binds (or must equal), an expression. */
enum { KC_AOT_DIM_STATIC = 0, KC_AOT_DIM_SYM, KC_AOT_DIM_EXPR };

typedef int64_t (*kc_aot_kernel_fn)(void *const *bufs, const int64_t *dims, void *ws, int64_t begin,
                                    int64_t end);
typedef int64_t (*kc_aot_units_fn)(const int64_t *dims);
/* Every slot from the symbol values; -1, or the first slot that is negative, overflowed or
 * divided by zero. */
typedef int64_t (*kc_aot_dims_fn)(const int64_t *syms, int64_t *slots);

typedef struct kc_aot_value {
  int64_t storage; /* KC_AOT_* */
  int64_t dtype;   /* kc_dtype */
  int64_t rank;
  int64_t dims;        /* first of its rank slots */
  int64_t ref;         /* see the storage kinds */
  int64_t first, last; /* ARENA: live over nodes [first, last] */
} kc_aot_value;
#define KC_AOT_VALUE_WORDS 7

typedef struct kc_aot_step {
  kc_aot_kernel_fn fn;
  kc_aot_units_fn units;
  const char *name; /* kernel symbol ("k3_matmul"), for messages */
  int64_t node;     /* node index in the compiled graph */
  int64_t grain;    /* thread pool grain (0: one range per thread) */
  int64_t ws_bytes; /* per-thread workspace */
  int64_t nbufs, bufs, ndims, dims;
  int64_t check_in;  /* buffer holding the indices the kernel checks; -1: none */
  int64_t check_dim; /* entry of the step's dims bounding them */
  const char *what;  /* the node for messages: "node 'loc' (gather, %12)" */
} kc_aot_step;
#define KC_AOT_STEP_WORDS 13

typedef struct kc_aot_io {
  const char *name;
  int64_t value; /* its value */
  int64_t copy;  /* outputs: copied from the value's storage after the run */
} kc_aot_io;
#define KC_AOT_IO_WORDS 3

typedef struct kc_aot_idim {
  int64_t kind;     /* KC_AOT_DIM_* */
  int64_t value;    /* STATIC: the size; SYM: symbol index */
  const char *text; /* the dim as the model writes it ("768", "B", "S+1") */
} kc_aot_idim;
#define KC_AOT_IDIM_WORDS 3

typedef struct kc_aot_model {
  const char *name; /* the model's symbol prefix */
  int64_t nvalues, nsteps, ninputs, noutputs, nsyms, nslots, narena, nstep_dims;
  const kc_aot_value *values;
  const kc_aot_step *steps;
  const kc_aot_io *inputs, *outputs;
  const kc_aot_idim *idims;  /* per input, KC_MAX_RANK entries */
  const char *const *syms;   /* symbol names */
  const int64_t *buf_values; /* per step: value of each buffer, -1 when absent */
  const int64_t *dim_slots;  /* per step: slot of each dims entry */
  const int64_t *arena_order;
  const unsigned char *weights;
  int64_t weights_bytes;
  kc_aot_dims_fn eval_dims;
  int64_t max_ws; /* largest ws_bytes of a step */
  /* Slots [first_req, nslots) are requirements, not dims: each must come out >= 0, and
   * req_text[i] says which node assumed what (a slice's constant bound within a symbolic dim,
   * which ONNX would clamp; see runtime/export_plan.c). */
  int64_t first_req;
  const char *const *req_text;
} kc_aot_model;
#define KC_AOT_MODEL_WORDS 24

/* ---- the AOT runtime (runtime/aot_rt.c), called by the object's entry points ---------------- */

typedef struct kc_aot_inst kc_aot_inst;

/* An instance of model d running on `threads` threads (<= 0: one per core); NULL: no memory. */
kc_aot_inst *kc_aot_create(const kc_aot_model *d, int threads);
/* Run on d->ninputs inputs (in order; a non-NULL name must match); fills d->noutputs outputs,
 * whose data the instance owns until the next run. 0, or a kc_status with kc_aot_error set. */
int kc_aot_run(kc_aot_inst *m, const kc_tensor_desc *inputs, kc_tensor_desc *outputs);
/* The message of the last failure ("" when none); for m NULL, why the last create on this
 * thread failed ("no model" when none did). */
const char *kc_aot_error(const kc_aot_inst *m);
void kc_aot_free(kc_aot_inst *m);

/* ---- the CPU check (runtime/aot_cpu_check.c) ------------------------------------------------ */

/* kc_aot_create after checking this CPU against `target` (the object's recorded string); NULL
 * when a feature is missing or memory is out, kc_aot_error(NULL) then says why. */
kc_aot_inst *kc_aot_create_checked(const kc_aot_model *d, const char *target, int threads);
/* Of LLVM's feature list `features` ("+avx2,+fma,..."; "-" entries ignored), the features this
 * CPU lacks into lacks and those this runtime cannot test into unknown (comma-separated names,
 * "" when none; either buffer may be NULL). Returns how many are lacking. */
int kc_aot_cpu_lacks(const char *features, char *lacks, size_t lsize, char *unknown, size_t usize);
/* Why the last create on this thread failed ("" when none did). */
const char *kc_aot_create_error(void);

#endif /* KERNC_CODEGEN_AOT_H */
