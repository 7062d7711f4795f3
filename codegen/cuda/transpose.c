/*
 * codegen/cuda/transpose.c - kc_cuda_lower_transpose: out[i_0..i_r-1] = x[i at perm], perm
 * defaulting to the reversed axes. A thread per output element: its coordinates, decomposed
 * over the output dims, times the input stride of the axis each output axis reads.
 * Not yet: a shared-memory tiled path for swaps of the last axis (coalesced on both sides).
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_transpose(kc_cuda_emit *e) {
  const kc_value *x = kc_cu_val(e, false, 0);
  int R = x->rank;
  int64_t perm[KC_MAX_RANK];
  const kc_attr *pa = kc_node_attr(e->n, "perm");
  for (int k = 0; k < R; k++)
    perm[k] = pa ? (k < (int)pa->u.ints.n ? pa->u.ints.v[k] : k) : R - 1 - k;
  for (int k = 0; k < R; k++) {
    if (perm[k] < 0) perm[k] += R;
    if (perm[k] < 0 || perm[k] >= R) return kc_cu_fail(e, KC_ERR_SHAPE, "bad perm");
  }
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, R, 1);
  kc_cu_begin(e, 256);
  for (int k = 0; k < R; k++)
    kc_cu_printf(e->t, "  const i64 p_%d = %s;\n", k,
                 kc_cu_numel(e, false, 0, (int)perm[k] + 1, R));
  const char *sn[1] = {"p"}, *on[1] = {"off"};
  kc_cu_puts(e->t, "  KC_THREADS(idx) {\n    i64 off = 0;\n");
  kc_cu_decompose(e, 4, "idx", true, 0, 0, R, 1, sn, on, NULL);
  kc_cu_puts(e->t, "    out0[idx] = in0[off];\n  }\n");
  kc_cu_end(e);
  return KC_OK;
}
