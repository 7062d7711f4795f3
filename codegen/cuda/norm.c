/*
 * codegen/cuda/norm.c - kc_cuda_lower_norm: ONNX LayerNormalization (with its optional Mean
 * and InvStdDev outputs) and RMSNormalization, and kernc's fused layer_norm / rms_norm.
 *
 * A row is x[i, axis:] flattened (N elements); a block per row. Statistics in f32 (f64 for f64,
 * ONNX's stash_type=1), by block reductions: layer norm takes the mean first and then the sum
 * of squared deviations (two passes over the row, without the cancellation of
 * sum(x*x) - sum(x)^2), rms norm the mean of x*x. The apply pass writes
 * (x - mean) * inv_std * scale + bias. scale and bias broadcast to x[axis:] numpy-style: read
 * at the row index when they have x[axis:]'s dims, element 0 when they are one element, else
 * through broadcast strides over the row's coordinates.
 * Invariants: the statistics results (one per row: ONNX's Mean and InvStdDev, layer_norm's mean
 * and rstd, rms_norm's rstd) are written by thread 0 of the row's block when present.
 */
#include "codegen/cuda/emit.h"

#include <stdio.h>

/* Index expression of operand i (scale / bias) for row element j, emitting strides first. */
static const char *operand_index(kc_cuda_emit *e, uint32_t i, int axis, int R, const char *name,
                                 bool *general) {
  const kc_value *x = kc_cu_val(e, false, 0), *v = kc_cu_val(e, false, i);
  bool one = true, same = true;
  int Rt = R - axis, lead = v->rank - Rt;
  for (int a = 0; a < v->rank; a++) {
    one = one && v->dims[a] == 1;
    if (a < lead)
      same = same && v->dims[a] == 1;
    else
      same = same && a - lead >= 0 && v->dims[a] == x->dims[axis + a - lead];
  }
  *general = false;
  if (one) return "0";
  if (same && v->rank >= Rt) return "j";
  *general = true;
  kc_cu_bcast_strides(e, i, Rt, x->dims + axis, name);
  return kc_cu_fmt(e, "o%s", name);
}

kc_status kc_cuda_lower_norm(kc_cuda_emit *e) {
  const kc_node *n = e->n;
  const kc_value *x = kc_cu_val(e, false, 0);
  kc_dtype t = x->dtype;
  bool rms = n->op == KC_OP_RMS_NORM || n->op == KC_OP_RMS_NORMALIZATION;
  bool onnx = n->op == KC_OP_LAYER_NORMALIZATION || n->op == KC_OP_RMS_NORMALIZATION;
  if (!kc_dtype_is_float(t))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "%s of %s", kc_ops[n->op].name, kc_dtype_name(t));
  int R = x->rank, axis = (int)kc_node_int(n, "axis", -1);
  if (axis < 0) axis += R;
  if (axis < 0 || axis >= R) return kc_cu_fail(e, KC_ERR_SHAPE, "axis %d of rank %d", axis, R);
  double eps = kc_node_float(n, onnx ? "epsilon" : "eps", 1e-5);
  const char *ct = t == KC_F64 ? "double" : "float";
  int64_t Ns = 1;
  for (int a = axis; a < R && Ns > 0; a++)
    Ns = KC_DIM_IS_SYM(x->dims[a]) ? 0 : Ns * x->dims[a];
  int block = kc_cu_row_block(Ns);
  kc_cu_launch_blocks(e, block);
  kc_cu_units_dims(e, false, 0, 0, axis, 1);
  kc_cu_begin(e, block);
  kc_cu_printf(e->t, "  const i64 N = %s;\n  const %s eps = (%s)%.17g;\n",
               kc_cu_numel(e, false, 0, axis, R), ct, ct, eps);
  bool has_bias = !rms && kc_cu_present(e, false, 2), gs = false, gb = false;
  char si[KC_CU_RING_LEN], bi[KC_CU_RING_LEN] = "";
  snprintf(si, sizeof si, "%s", operand_index(e, 1, axis, R, "sc", &gs));
  if (has_bias) snprintf(bi, sizeof bi, "%s", operand_index(e, 2, axis, R, "bi", &gb));
  const char *xj = kc_cu_load(e, t, "in0", "base + j");
  kc_cu_printf(e->t, "  KC_BLOCKS(u) {\n    const i64 base = u * N;\n    %s s = 0;\n", ct);
  if (!rms) {
    kc_cu_printf(e->t, "    for (i64 j = threadIdx.x; j < N; j += blockDim.x) s += (%s)%s;\n", ct,
                 xj);
    kc_cu_printf(e->t, "    const %s mean = kc_block_reduce(s, kc_op_sum()) / (%s)N;\n", ct, ct);
    kc_cu_printf(e->t,
                 "    s = 0;\n    for (i64 j = threadIdx.x; j < N; j += blockDim.x) {\n"
                 "      const %s d = (%s)%s - mean;\n      s += d * d;\n    }\n",
                 ct, ct, xj);
  } else {
    kc_cu_printf(e->t, "    const %s mean = 0;\n", ct);
    kc_cu_printf(e->t,
                 "    for (i64 j = threadIdx.x; j < N; j += blockDim.x) {\n"
                 "      const %s d = (%s)%s;\n      s += d * d;\n    }\n",
                 ct, ct, xj);
  }
  kc_cu_printf(e->t,
               "    const %s inv = (%s)1 / kc_sqrt(kc_block_reduce(s, kc_op_sum()) / (%s)N + "
               "eps);\n",
               ct, ct, ct);
  kc_cu_puts(e->t, "    for (i64 j = threadIdx.x; j < N; j += blockDim.x) {\n");
  if (gs || gb) {
    const char *sn[2], *on[2];
    bool need[KC_MAX_RANK] = {false};
    int k = 0;
    if (gs) sn[k] = "sc", on[k++] = "osc";
    if (gb) sn[k] = "bi", on[k++] = "obi";
    for (int a = 0; a < R - axis; a++)
      need[a] = true;
    kc_cu_printf(e->t, "      i64 %s = 0%s%s;\n", on[0], k > 1 ? ", " : "", k > 1 ? "obi = 0" : "");
    kc_cu_decompose(e, 6, "j", false, 0, axis, R - axis, k, sn, on, need);
  }
  const char *y =
      kc_cu_fmt(e, "((%s)%s - mean) * inv * (%s)%s%s", ct, kc_cu_load(e, t, "in0", "base + j"), ct,
                kc_cu_load(e, t, "in1", si),
                has_bias ? kc_cu_fmt(e, " + (%s)%s", ct, kc_cu_load(e, t, "in2", bi)) : "");
  kc_cu_store(e, 6, kc_cu_val(e, true, 0)->dtype, "out0", "base + j", y);
  kc_cu_puts(e->t, "    }\n");
  if (kc_cu_present(e, true, 1) || kc_cu_present(e, true, 2)) {
    kc_cu_puts(e->t, "    if (threadIdx.x == 0) {\n");
    if (kc_cu_present(e, true, 1)) /* rms_norm's result 1 is its 1/rms */
      kc_cu_store(e, 6, kc_cu_val(e, true, 1)->dtype, "out1", "u", rms ? "inv" : "mean");
    if (kc_cu_present(e, true, 2))
      kc_cu_store(e, 6, kc_cu_val(e, true, 2)->dtype, "out2", "u", "inv");
    kc_cu_puts(e->t, "    }\n");
  }
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}
