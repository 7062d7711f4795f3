/*
 * codegen/cuda/gather.c - kc_cuda_lower_gather: out[p, j..., q] = x[p, idx[j...], q] along
 * `axis`, with x viewed as [pre, len, post] and the indices flattened to n entries. A thread
 * per output element.
 *
 * Indices (i32 or i64) below zero count from the end. An index outside [-len, len) is an error
 * in ONNX: the thread reports it through the error word (codegen/cuda/cuda.h's index check)
 * and reads nothing through it; the runtime fails the run naming the node.
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_gather(kc_cuda_emit *e) {
  const kc_value *x = kc_cu_val(e, false, 0), *ix = kc_cu_val(e, false, 1);
  int r = x->rank, axis = (int)kc_node_int(e->n, "axis", 0);
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r) return kc_cu_fail(e, KC_ERR_SHAPE, "axis %d of rank %d", axis, r);
  if (ix->dtype != KC_I64 && ix->dtype != KC_I32)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "indices of %s", kc_dtype_name(ix->dtype));
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, kc_cu_val(e, true, 0)->rank, 1);
  kc_cu_check_indices(e, 1, 0, axis);
  kc_cu_begin(e, 256);
  kc_cu_printf(e->t, "  const i64 post = %s, len = %s, nidx = %s;\n",
               kc_cu_numel(e, false, 0, axis + 1, r), kc_cu_dim(e, false, 0, axis),
               kc_cu_numel(e, false, 1, 0, ix->rank));
  kc_cu_puts(e->t, "  KC_THREADS(idx) {\n"
                   "    const i64 q = idx % post, t = idx / post, j = t % nidx, p = t / nidx;\n"
                   "    i64 k = (i64)in1[j];\n");
  kc_cu_checked_index(e, 4, "k", "len", "j");
  kc_cu_puts(e->t, "    out0[idx] = in0[(p * len + k) * post + q];\n"
                   "  }\n");
  kc_cu_end(e);
  return KC_OK;
}
