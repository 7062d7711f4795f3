/*
 * codegen/cuda/scatter_add.c - kc_cuda_lower_scatter_add: gather's adjoint (ir/ops.def
 * scatter_add), as the CPU kernel (codegen/cpu/scatter_add.c). With data viewed as [pre, len,
 * post] and the indices flattened to n entries: out = data, then out[p, idx[j], q] +=
 * upd[p, j, q] for j = 0, 1, ... in order.
 *
 * A thread per (p, q) line: it copies its len elements, then adds the updates in index order
 * in the compute type, so every element's sum has one fixed order and no two threads write the
 * same element (no atomics, the same results on every run). Indices (i32 or i64) below zero
 * count from the end; one outside [-len, len) is reported through the error word and skipped.
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_scatter_add(kc_cuda_emit *e) {
  const kc_value *x = kc_cu_val(e, false, 0), *ix = kc_cu_val(e, false, 1);
  kc_dtype t = x->dtype;
  int r = x->rank, axis = (int)kc_node_int(e->n, "axis", 0);
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r) return kc_cu_fail(e, KC_ERR_SHAPE, "axis %d of rank %d", axis, r);
  if (ix->dtype != KC_I64 && ix->dtype != KC_I32)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "indices of %s", kc_dtype_name(ix->dtype));
  if (!kc_dtype_is_float(t))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "scatter_add of %s", kc_dtype_name(t));
  const char *ct = kc_cu_ctype(t);
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims_except(e, false, 0, 0, r, axis);
  kc_cu_check_indices(e, 1, 0, axis);
  kc_cu_begin(e, 256);
  kc_cu_printf(e->t, "  const i64 len = %s, post = %s, nidx = %s;\n", kc_cu_dim(e, false, 0, axis),
               kc_cu_numel(e, false, 0, axis + 1, r), kc_cu_numel(e, false, 1, 0, ix->rank));
  kc_cu_puts(e->t, "  KC_THREADS(u) {\n"
                   "    const i64 p = u / post, q = u % post;\n"
                   "    for (i64 k = 0; k < len; k++) {\n"
                   "      const i64 i = (p * len + k) * post + q;\n");
  kc_cu_printf(e->t, "      const %s v = %s;\n", ct, kc_cu_load(e, t, "in0", "i"));
  kc_cu_store(e, 6, t, "out0", "i", "v");
  kc_cu_puts(e->t, "    }\n"
                   "    for (i64 j = 0; j < nidx; j++) {\n"
                   "      i64 k = (i64)in1[j];\n");
  kc_cu_checked_index(e, 6, "k", "len", "j");
  kc_cu_puts(e->t, "      const i64 o = (p * len + k) * post + q;\n"
                   "      const i64 s = (p * nidx + j) * post + q;\n");
  kc_cu_printf(e->t, "      const %s a = %s;\n", ct, kc_cu_load(e, t, "out0", "o"));
  kc_cu_printf(e->t, "      const %s b = %s;\n", ct, kc_cu_load(e, t, "in2", "s"));
  kc_cu_store(e, 6, t, "out0", "o", "kc_add(a, b)");
  kc_cu_puts(e->t, "    }\n  }\n");
  kc_cu_end(e);
  return KC_OK;
}
