/*
 * codegen/aot.h - the entry points of a model compiled ahead of time: the object kc_export
 * writes (codegen/cpu/aot_object.c) holds the plan of codegen/plan.h as constant data and
 * defines NAME_create / NAME_run / NAME_free / NAME_error / NAME_target (a CPU library may hold
 * its kernels for several CPUs: kc_aot_targets below), which call the functions below in
 * the runtime archive linked beside it (runtime/aot_entry.c over the one executor,
 * runtime/executor.c, that kc_compile's modules use too). A causal decoder's object also holds
 * its decode step (kc_plan_decode) and the session entry points NAME_session_new / _free /
 * _error, NAME_seq_*, NAME_decode, NAME_generate*, which call kc_aot_session_new /
 * kc_aot_session_error below and kernc.h's kc_session_* / kc_generate_* (runtime/session.c,
 * runtime/generate.c: the code kc_session_new's sessions run too).
 *
 * Graph-free and LLVM-free: part of what the runtime archive (kernc_rt) includes.
 */
#ifndef KERNC_CODEGEN_AOT_H
#define KERNC_CODEGEN_AOT_H

#include "codegen/plan.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct kc_exec kc_exec;

/* An instance of plan d running on `threads` threads (<= 0: one per core); NULL: no memory. */
kc_exec *kc_aot_create(const kc_plan *d, int threads);
/* Run on d->ninputs inputs (in order; a non-NULL name must match); fills d->noutputs outputs,
 * whose data belongs to the calling thread's workspace of the instance until that thread's next
 * run (any number of threads may run one instance at once). 0, or a kc_status with
 * kc_aot_error set for this thread. */
int kc_aot_run(kc_exec *m, const kc_tensor_desc *inputs, kc_tensor_desc *outputs);
/* The message of this thread's last failure ("" when none); for m NULL, why the last create on
 * this thread failed ("no model" when none did). */
const char *kc_aot_error(const kc_exec *m);
void kc_aot_free(kc_exec *m);

/* ---- decoding sessions (runtime/session_aot.c) ------------------------------------------------
 */

/* A session (runtime/session.c) over decode step d, on `threads` threads, after the CPU check
 * against `target` (as kc_aot_create_checked); paged: blocks of `size` tokens (0: 16), `count`
 * tokens in all (0: 4096); contiguous: `size` tokens per sequence (0: 1024), `count` sequences
 * (0: 1). NULL on failure, kc_aot_session_error(NULL) then says why. NAME_session_new. */
kc_session *kc_aot_session_new(const kc_plan_decode *d, const char *target, int threads, int paged,
                               int64_t size, int64_t count);
/* The message of this thread's last failure of s ("" when none); for s NULL, why the last
 * kc_aot_session_new of this thread failed. NAME_session_error. */
const char *kc_aot_session_error(const kc_session *s);

/* ---- training steps (runtime/train_aot.c) ---------------------------------------------------
 * A library compiled with --train (kc_export_train) holds the plan of the training step's graph
 * (kc_rt_train_graph: the caller's inputs, then the parameters; outputs the loss, NAME.grad per
 * parameter and the model's) as its NAME_create/_run plan, the initial parameter values, and a
 * kc_plan_train that a small C file written by kc_export_train (runtime/export_train.c) defines
 * field for field and compiles into the library, with the entry points NAME_train_* calling the
 * functions below. The options have the layout of the header's NAME_train_options. */

typedef struct kc_aot_train_options {
  int32_t optimizer; /* kc_optimizer */
  int32_t pad;
  double beta1, beta2, eps, weight_decay, momentum, clip_norm;
} kc_aot_train_options;

typedef struct kc_plan_train {
  const char *name;             /* the model's C prefix */
  void *(*create)(int threads); /* NAME_create / _run / _free / _error */
  int (*run)(void *x, const kc_tensor_desc *in, kc_tensor_desc *out);
  void (*free)(void *x);
  const char *(*error)(const void *x);
  int64_t ninputs;  /* the caller's inputs: the plan's first ninputs */
  int64_t noutputs; /* the plan's outputs */
  int64_t loss_out; /* index of the loss among them */
  int64_t nparams;  /* the plan's inputs after the caller's, in order */
  const char *const *param_names;
  const int64_t *param_rank;
  const int64_t *param_dims;     /* nparams * KC_MAX_RANK */
  const int64_t *param_grad_out; /* index of NAME.grad among the outputs */
  const int64_t *param_offset;   /* byte offset of the initial f32 values in init */
  const unsigned char *init;
  kc_aot_train_options options; /* the compile-time options */
} kc_plan_train;

typedef struct kc_aot_train kc_aot_train;
/* A trainer over d's plan on `threads` threads with options o (NULL: d's); NULL on failure,
 * kc_aot_train_error(NULL) then says why. NAME_train_new. */
kc_aot_train *kc_aot_train_new(const kc_plan_train *d, int threads, const kc_aot_train_options *o);
void kc_aot_train_free(kc_aot_train *t);
/* kc_trainer_accumulate / _apply / _step with the caller's d->ninputs inputs (0 or a kc_status,
 * kc_aot_train_error then says why). */
int kc_aot_train_accumulate(kc_aot_train *t, const kc_tensor_desc *in, double *loss);
int kc_aot_train_apply(kc_aot_train *t, double lr, int64_t step);
int kc_aot_train_step(kc_aot_train *t, const kc_tensor_desc *in, double lr, int64_t step,
                      double *loss);
int64_t kc_aot_train_num_params(const kc_aot_train *t);
/* Parameter i: name, live values (writable), element count. */
int kc_aot_train_param(kc_aot_train *t, int64_t i, const char **name, float **data, int64_t *numel);
int kc_aot_train_save(kc_aot_train *t, const char *path);
int kc_aot_train_load(kc_aot_train *t, const char *path);
const char *kc_aot_train_error(const kc_aot_train *t);

/* ---- the CPU check (runtime/aot_cpu_check.c) ------------------------------------------------ */

/*
 * The CPU variants of a library on the CPU target (kc_export_options.cpu): n >= 1 plans of the
 * same model (same inputs, outputs and weights symbol), v[i]'s compiled for the CPU its target
 * string records ("kernc-target triple=... cpu=... features=+a,+b"), most portable first; its
 * decode step (NULL: none, for every variant alike) and LLVM's name of its CPU. NAME_create,
 * NAME_session_new and NAME_target use the last variant this CPU has every feature of. Written
 * as constant data by codegen/cpu/aot_object.c, field by field (variant 0's object holds the
 * table, each other object its kc_aot_variant).
 */
typedef struct kc_aot_variant {
  const kc_plan *plan;
  const kc_plan_decode *decode;
  const char *target;
  const char *cpu;
} kc_aot_variant;
#define KC_AOT_VARIANT_WORDS 4

typedef struct kc_aot_targets {
  int64_t n;
  const kc_aot_variant *const *v;
} kc_aot_targets;
#define KC_AOT_TARGETS_WORDS 2

/* The index of the last variant of t this CPU can run; -1 when none. */
int64_t kc_aot_pick(const kc_aot_targets *t);
/* kc_aot_create_checked with the variant kc_aot_pick chooses (none: the first, whose check then
 * fails saying what this CPU lacks). NAME_create. */
kc_exec *kc_aot_create_best(const kc_aot_targets *t, int threads);
/* LLVM's name of the CPU of the variant kc_aot_pick chooses ("x86-64-v4"); NULL when this CPU
 * can run none. NAME_target. */
const char *kc_aot_target(const kc_aot_targets *t);
/* kc_aot_session_new over the decode step of the variant kc_aot_pick chooses (as
 * kc_aot_create_best). NAME_session_new. */
kc_session *kc_aot_session_best(const kc_aot_targets *t, int threads, int paged, int64_t size,
                                int64_t count);

/* kc_aot_create after checking this CPU against `target` (the object's recorded string); NULL
 * when a feature is missing or memory is out, kc_aot_error(NULL) then says why. */
kc_exec *kc_aot_create_checked(const kc_plan *d, const char *target, int threads);
/* Of LLVM's feature list `features` ("+avx2,+fma,..."; "-" entries ignored), the features this
 * CPU lacks into lacks and those this runtime cannot test into unknown (comma-separated names,
 * "" when none; either buffer may be NULL). Returns how many are lacking. */
int kc_aot_cpu_lacks(const char *features, char *lacks, size_t lsize, char *unknown, size_t usize);
/* Remember msg as why the last create on this thread failed (NULL: none). */
void kc_aot_create_failed(const char *msg);
/* Why the last create on this thread failed ("" when none did). */
const char *kc_aot_create_error(void);

/* ---- builtins the kernels may call ------------------------------------------------------------
 * LLVM lowers a float -> bfloat conversion to a call of __truncsfbf2 on CPUs without AVX512-BF16
 * (every x86-64-vN level, znver3...). compiler-rt has it, libgcc only since GCC 13, so kernc
 * brings its own: the runtime archive defines __truncsfbf2 (runtime/aot_entry.c), the JIT maps
 * the name to it (codegen/cpu/jit.c). The bfloat result comes back in the low 16 bits of xmm0,
 * as a float's would: this returns the float whose bits those are. Rounding as compiler-rt's:
 * to nearest even; NaNs stay (quiet) NaNs. */
static inline float kc_truncsfbf2(float x) {
  uint32_t u, h;
  float r;
  memcpy(&u, &x, sizeof u);
  h = (u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  memcpy(&r, &h, sizeof r);
  return r;
}

#endif /* KERNC_CODEGEN_AOT_H */
