/*
 * runtime/fold_eval.c - the evaluator the compiler driver puts on the pass options for fold
 * (passes/passes.h kc_evaluator): the constant graph fold hands over is compiled for the CPU with
 * no passes (they would fold again), run once on one thread, and its outputs copied out.
 *
 * The CPU computes the constants of every target: a CUDA compile folds with the same CPU kernels.
 * Constants are exact values of the ops (the same emitters' math, in f32/f64/integers), so the
 * folded result is what the CPU target would compute at run time; the GPU may round its own
 * kernels' last bits differently, which it does for any two kernels anyway.
 * Invariants: no state (the evaluator object is const, its user pointer unused); each call
 * compiles a module of its own and frees it before returning, so only the copies outlive it.
 */
#include "ir/internal.h"
#include "passes/passes.h"
#include "runtime/runtime.h"

#include <stdlib.h>
#include <string.h>

static kc_status eval_cpu(void *user, const kc_graph *g, kc_tensor_desc *out) {
  kc_context *ctx = kc_graph_context(g);
  uint32_t n = kc_graph_num_outputs(g);
  kc_tensor_desc *res = calloc(n + 1, sizeof *res);
  if (!res) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory evaluating constants");
  kc_compile_options co = {.target = "cpu", .passes = "", .threads = 1};
  kc_module *m = NULL;
  kc_status s = kc_compile(ctx, g, &co, &m);
  if (s == KC_OK) s = kc_run(m, NULL, 0, res, n);
  uint32_t done = 0; /* outputs copied */
  for (; s == KC_OK && done < n; done++) {
    size_t bytes = kc_dtype_size(res[done].dtype);
    for (int d = 0; d < res[done].rank; d++)
      bytes *= (size_t)res[done].dims[d];
    out[done] = res[done];
    out[done].data = malloc(bytes ? bytes : 1);
    if (!out[done].data) {
      s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory copying a folded constant");
      break;
    }
    if (bytes) memcpy(out[done].data, res[done].data, bytes);
  }
  if (s != KC_OK)
    for (uint32_t k = 0; k < done; k++) {
      free(out[k].data);
      out[k].data = NULL;
    }
  kc_module_free(m);
  free(res);
  return s;
}

const kc_evaluator *kc_fold_evaluator(void) {
  static const kc_evaluator cpu = {eval_cpu, NULL};
  return &cpu;
}
