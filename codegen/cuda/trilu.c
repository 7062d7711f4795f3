/*
 * codegen/cuda/trilu.c - kc_cuda_lower_trilu: keep the upper (j - i >= k) or lower (j - i <= k)
 * triangle of the last two dims [N, M], zeroing the rest; leading dims are a batch. A thread
 * per element. k (an i64 scalar input, 0 when absent) is clamped to +-2^40 first so j - i
 * against it cannot overflow; zero is S{} (all-zero bits, +0.0 or false) in every dtype.
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_trilu(kc_cuda_emit *e) {
  const kc_value *x = kc_cu_val(e, false, 0);
  int R = x->rank;
  if (R < 2) return kc_cu_fail(e, KC_ERR_SHAPE, "input of rank %d", R);
  bool upper = kc_node_int(e->n, "upper", 1) != 0;
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, R, 1);
  kc_cu_begin(e, 256);
  kc_cu_printf(e->t, "  const i64 cols = %s, rows = %s;\n", kc_cu_dim(e, false, 0, R - 1),
               kc_cu_dim(e, false, 0, R - 2));
  kc_cu_printf(e->t, "  i64 k = %s;\n", kc_cu_present(e, false, 1) ? "(i64)in1[0]" : "0");
  kc_cu_puts(
      e->t,
      "  k = k > ((i64)1 << 40) ? ((i64)1 << 40) : k < -((i64)1 << 40) ? -((i64)1 << 40) : k;\n"
      "  KC_THREADS(idx) {\n"
      "    const i64 j = idx % cols, i = idx / cols % rows;\n");
  kc_cu_printf(e->t, "    out0[idx] = j - i %s k ? in0[idx] : %s{};\n  }\n",
               upper ? ">=" : "<=", kc_cu_stype(x->dtype));
  kc_cu_end(e);
  return KC_OK;
}
