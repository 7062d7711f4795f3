/*
 * codegen/cuda/trivial.c - the families with (next to) nothing to compute:
 *   kc_cuda_lower_view:    reshape-like ops; the runtime aliases the output to the input.
 *   kc_cuda_lower_source:  weights and constants; the runtime binds (uploads) their data.
 *   kc_cuda_lower_dropout: y = x and mask = true at inference. With a training_mode input that
 *                          is true at run time and a ratio > 0, elements are dropped by the
 *                          counter-based hash of (seed attribute, element index) and the kept
 *                          ones scaled by 1 / (1 - ratio), the same on every run.
 * Invariants: view and source write no kernel; dropout is a thread per element.
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_view(kc_cuda_emit *e) {
  e->no_kernel = true;
  return KC_OK;
}

kc_status kc_cuda_lower_source(kc_cuda_emit *e) {
  e->no_kernel = true;
  return KC_OK;
}

kc_status kc_cuda_lower_dropout(kc_cuda_emit *e) {
  kc_dtype t = kc_cu_val(e, false, 0)->dtype;
  if (!kc_dtype_is_float(t))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "dropout of %s", kc_dtype_name(t));
  const char *ct = kc_cu_ctype(t);
  int R = kc_cu_val(e, true, 0)->rank;
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, R, 1);
  kc_cu_begin(e, 256);
  bool has_ratio = kc_cu_present(e, false, 1), has_train = kc_cu_present(e, false, 2);
  kc_cu_printf(e->t, "  const float ratio = %s;\n",
               has_ratio ? kc_cu_fmt(e, "(float)%s",
                                     kc_cu_load(e, kc_cu_val(e, false, 1)->dtype, "in1", "0"))
                         : "0.5f");
  kc_cu_printf(e->t, "  const bool train = %s && ratio > 0.0f;\n",
               has_train ? kc_cu_load(e, kc_cu_val(e, false, 2)->dtype, "in2", "0") : "false");
  kc_cu_printf(e->t, "  const float scale = ratio < 1.0f ? 1.0f / (1.0f - ratio) : 0.0f;\n");
  kc_cu_printf(e->t, "  const u64 seed = %lluULL;\n",
               (unsigned long long)kc_node_int(e->n, "seed", 0));
  kc_cu_puts(e->t, "  KC_THREADS(idx) {\n");
  kc_cu_printf(e->t, "    const %s x = %s;\n", ct, kc_cu_load(e, t, "in0", "idx"));
  kc_cu_puts(e->t, "    const bool keep = !train || kc_uniform(seed, (u64)idx) >= ratio;\n");
  kc_cu_store(e, 4, t, "out0", "idx",
              kc_cu_fmt(e, "keep ? (train ? (%s)(x * scale) : x) : (%s)0", ct, ct));
  if (kc_cu_present(e, true, 1))
    kc_cu_store(e, 4, kc_cu_val(e, true, 1)->dtype, "out1", "idx", "keep");
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}
