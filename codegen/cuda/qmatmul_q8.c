/*
 * codegen/cuda/qmatmul_q8.c - kc_cuda_lower_matmul_q8, the fused int8 matmul (semantics and the
 * weights' [ceil(K/4), N, 4] layout in ir/ops.def): a thread per output element, i32 sums that
 * wrap (through unsigned), then the CPU's epilogue (codegen/cpu/qmatmul_q8.c) with __fmul_rn /
 * __fadd_rn, so NVRTC's default contraction into a fused multiply-add cannot change the bits.
 * a's batch dims fold into its rows.
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_matmul_q8(kc_cuda_emit *e) {
  const kc_value *a = kc_cu_val(e, false, 0), *y = kc_cu_val(e, true, 0);
  bool azp = kc_cu_present(e, false, 4), bias = kc_cu_present(e, false, 5);
  bool svec = kc_value_numel(e->g, e->n->in[3]) != 1;
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, y->rank, 1);
  kc_cu_begin(e, 256);
  kc_cu_printf(e->t,
               "  const i64 N = %s, K = %s;\n"
               "  const int azp = %s;\n"
               "  KC_THREADS(u) {\n"
               "    const i64 n = u %% N, rowa = u / N * K;\n"
               "    unsigned acc = 0;\n"
               "    for (i64 k = 0; k < K; k++)\n"
               "      acc += (unsigned)((int)(%s) * (int)(%s));\n"
               "    acc -= (unsigned)azp * (unsigned)(%s);\n"
               "    float v = __fmul_rn((float)(int)acc, %s);\n",
               kc_cu_dim(e, false, 1, 1), kc_cu_dim(e, false, 0, a->rank - 1),
               azp ? kc_cu_fmt(e, "(int)(%s)", kc_cu_load(e, a->dtype, "in4", "0")) : "0",
               kc_cu_load(e, a->dtype, "in0", "rowa + k"),
               kc_cu_load(e, KC_I8, "in1", "(k >> 2) * N * 4 + n * 4 + (k & 3)"),
               kc_cu_load(e, KC_I32, "in2", "n"), kc_cu_load(e, KC_F32, "in3", svec ? "n" : "0"));
  if (bias) kc_cu_printf(e->t, "    v = __fadd_rn(v, %s);\n", kc_cu_load(e, KC_F32, "in5", "n"));
  kc_cu_store(e, 4, KC_F32, "out0", "u", "v");
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}
