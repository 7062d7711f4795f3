/*
 * runtime/aot_entry.c - what the entry points of a model compiled ahead of time call
 * (codegen/aot.h): NAME_create / NAME_run / NAME_free / NAME_error over the one executor
 * (runtime/executor.c) on the CPU target, with the plan the object holds.
 *
 * Part of the runtime archive kernc_rt that `kernc compile` links into each model's .so, so it
 * sees no graph, no LLVM and no protobuf. Each instance has its own kc_context for its errors
 * (one message per thread: NAME_error gives the calling thread's).
 */
#include "codegen/aot.h"
#include "ir/internal.h"
#include "runtime/executor.h"

kc_exec *kc_aot_create(const kc_plan *d, int threads) {
  kc_exec *x;
  return kc_exec_new(d, &kc_exec_cpu, NULL, threads, &x) == KC_OK ? x : NULL;
}

int kc_aot_run(kc_exec *x, const kc_tensor_desc *inputs, kc_tensor_desc *outputs) {
  if (!x) return KC_ERR_INVALID_ARG;
  kc_clear_error(x->ctx);
  if ((x->d->ninputs && !inputs) || (x->d->noutputs && !outputs))
    return kc_errorf(x->ctx, KC_ERR_INVALID_ARG, "%s_run: inputs or outputs is NULL", x->d->name);
  return kc_exec_run(x, inputs, (uint32_t)x->d->ninputs, outputs, (uint32_t)x->d->noutputs);
}

const char *kc_aot_error(const kc_exec *x) {
  if (x) return kc_last_error(x->ctx);
  const char *why = kc_aot_create_error();
  return why[0] ? why : "no model";
}

void kc_aot_free(kc_exec *x) { kc_exec_free(x); }

/* The f32 -> bf16 libcall of kernels for CPUs without AVX512-BF16 (codegen/aot.h); hidden, and
 * local to the library like the whole archive. */
#if defined(__x86_64__)
__attribute__((visibility("hidden"))) float __truncsfbf2(float x);
float __truncsfbf2(float x) { return kc_truncsfbf2(x); }
#endif
