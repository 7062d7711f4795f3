/*
 * codegen/cuda/concat_split.c - kc_cuda_lower_concat and kc_cuda_lower_split, one emitter for
 * both: a "whole" tensor viewed as [pre, total, post] along `axis` and n "parts"
 * [pre, len_k, post], total = sum len_k. A thread per element of the whole: its position t
 * along the axis picks the part (a chain of comparisons against the parts' lengths, which
 * come from their concrete dims, so run-time split sizes work), then concat copies part ->
 * whole and split whole -> part. Absent split outputs are skipped.
 */
#include "codegen/cuda/emit.h"

static kc_status lower(kc_cuda_emit *e, bool concat) {
  const kc_node *n = e->n;
  bool whole_out = concat;
  const kc_value *w = kc_cu_val(e, whole_out, 0);
  int R = w->rank, axis = (int)kc_node_int(n, "axis", 0);
  if (axis < 0) axis += R;
  if (axis < 0 || axis >= R) return kc_cu_fail(e, KC_ERR_SHAPE, "axis %d of rank %d", axis, R);
  uint32_t nparts = concat ? n->nin : n->nout;
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, whole_out, 0, 0, R, 1);
  kc_cu_begin(e, 256);
  kc_cu_printf(e->t, "  const i64 post = %s, total = %s;\n",
               kc_cu_numel(e, whole_out, 0, axis + 1, R), kc_cu_dim(e, whole_out, 0, axis));
  kc_cu_puts(e->t, "  KC_THREADS(idx) {\n"
                   "    const i64 q = idx % post, p = idx / post / total;\n"
                   "    i64 t = idx / post % total;\n");
  for (uint32_t k = 0; k < nparts; k++) {
    if (!kc_cu_present(e, !concat, k)) continue;
    const char *len = kc_cu_dim(e, !concat, k, axis);
    const char *part = kc_cu_fmt(e, "%s%u[(p * %s + t) * post + q]", concat ? "in" : "out", k, len);
    kc_cu_printf(e->t, "    if (t < %s) { %s = %s; continue; }\n    t -= %s;\n", len,
                 concat ? "out0[idx]" : part, concat ? part : "in0[idx]", len);
  }
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}

kc_status kc_cuda_lower_concat(kc_cuda_emit *e) { return lower(e, true); }
kc_status kc_cuda_lower_split(kc_cuda_emit *e) { return lower(e, false); }
