/*
 * codegen/cuda/slice_expand.c - kc_cuda_lower_slice and kc_cuda_lower_expand, both a thread per
 * output element reading one input element through per-axis strides: slice scales the input's
 * strides by the steps and starts at the clamped starts; expand gives broadcast axes (absent
 * or of size 1 in the input) stride 0.
 *
 * Slice's starts / axes / steps are tensors (i32 or i64) in device memory, read by every thread
 * once: negative axes and starts count from the end, starts clamp as ONNX says ([0, d] for
 * positive steps, [0, d-1] for negative ones). Ends are not read: the output's concrete dims
 * already count the elements along every axis (shape inference applied the same clamping).
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_slice(kc_cuda_emit *e) {
  const kc_value *x = kc_cu_val(e, false, 0);
  int R = x->rank;
  bool axes = kc_cu_present(e, false, 3), steps = kc_cu_present(e, false, 4);
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, R, 1);
  kc_cu_begin(e, 256);
  kc_cu_printf(e->t, "  i64 xd[%d], st[%d], sp[%d];\n", R ? R : 1, R ? R : 1, R ? R : 1);
  for (int k = 0; k < R; k++)
    kc_cu_printf(e->t, "  xd[%d] = %s; st[%d] = 0; sp[%d] = 1;\n", k, kc_cu_dim(e, false, 0, k), k,
                 k);
  kc_cu_printf(e->t,
               "  for (i64 j = 0; j < %s; j++) {\n"
               "    i64 ax = %s;\n"
               "    if (ax < 0) ax += %d;\n"
               "    if (ax < 0 || ax >= %d) continue;\n"
               "    const i64 step = %s, d = xd[ax];\n"
               "    i64 s = (i64)in1[j];\n"
               "    if (s < 0) s += d;\n"
               "    const i64 hi = step > 0 ? d : d - 1;\n"
               "    st[ax] = s < 0 ? 0 : s > hi ? hi : s;\n"
               "    sp[ax] = step;\n"
               "  }\n",
               kc_cu_dim(e, false, 1, 0), axes ? "(i64)in3[j]" : "j", R, R,
               steps ? "(i64)in4[j]" : "1");
  kc_cu_puts(e->t, "  i64 base = 0;\n");
  for (int k = 0; k < R; k++) {
    const char *s = kc_cu_numel(e, false, 0, k + 1, R);
    kc_cu_printf(e->t, "  base += st[%d] * %s;\n  const i64 es_%d = sp[%d] * %s;\n", k, s, k, k, s);
  }
  const char *sn[1] = {"es"}, *on[1] = {"off"};
  kc_cu_puts(e->t, "  KC_THREADS(idx) {\n    i64 off = base;\n");
  kc_cu_decompose(e, 4, "idx", true, 0, 0, R, 1, sn, on, NULL);
  kc_cu_puts(e->t, "    out0[idx] = in0[off];\n  }\n");
  kc_cu_end(e);
  return KC_OK;
}

kc_status kc_cuda_lower_expand(kc_cuda_emit *e) {
  const kc_value *o = kc_cu_val(e, true, 0);
  int R = o->rank;
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, R, 1);
  kc_cu_begin(e, 256);
  kc_cu_bcast_strides(e, 0, R, o->dims, "s");
  const char *sn[1] = {"s"}, *on[1] = {"off"};
  kc_cu_puts(e->t, "  KC_THREADS(idx) {\n    i64 off = 0;\n");
  kc_cu_decompose(e, 4, "idx", true, 0, 0, R, 1, sn, on, NULL);
  kc_cu_puts(e->t, "    out0[idx] = in0[off];\n  }\n");
  kc_cu_end(e);
  return KC_OK;
}
