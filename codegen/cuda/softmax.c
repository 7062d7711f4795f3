/*
 * codegen/cuda/softmax.c - kc_cuda_lower_softmax: softmax and log_softmax over one axis.
 *
 * The input is viewed as [outer, L, inner] around the axis; a block per row (outer, inner
 * position), its threads striding over the L elements (stride inner), with block reductions
 * for the maximum and the sum of exp(x - max). softmax writes exp(x - max) / sum, log_softmax
 * x - max - log(sum). Arithmetic in f32 (f64 for f64). A row of all -inf gives nan, as ONNX's
 * reference does (-inf - -inf), and the CPU kernel.
 * Invariants: the block size is a multiple of 32 (the block reduction's rule), chosen from L
 * when it is static so short rows do not leave most threads idle.
 */
#include "codegen/cuda/emit.h"

/* Threads per block for rows of L (<= 0: unknown). */
int kc_cu_row_block(int64_t L) {
  if (L <= 0 || L > 128) return 256;
  return L > 64 ? 128 : L > 32 ? 64 : 32;
}

kc_status kc_cuda_lower_softmax(kc_cuda_emit *e) {
  const kc_value *x = kc_cu_val(e, false, 0);
  kc_dtype t = x->dtype;
  if (!kc_dtype_is_float(t))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "%s of %s", kc_ops[e->n->op].name, kc_dtype_name(t));
  int R = x->rank, axis = (int)kc_node_int(e->n, "axis", -1);
  if (axis < 0) axis += R;
  if (R == 0) axis = 0;
  if (axis < 0 || (R > 0 && axis >= R))
    return kc_cu_fail(e, KC_ERR_SHAPE, "axis %d of a rank %d input", axis, R);
  const char *ct = t == KC_F64 ? "double" : "float";
  int64_t Ls = R == 0 ? 1 : KC_DIM_IS_SYM(x->dims[axis]) ? 0 : x->dims[axis];
  int block = kc_cu_row_block(Ls);
  kc_cu_launch_blocks(e, block);
  kc_cu_units_dims_except(e, false, 0, 0, R, axis);
  kc_cu_begin(e, block);
  kc_cu_printf(e->t, "  const i64 L = %s, inner = %s;\n", R ? kc_cu_dim(e, false, 0, axis) : "1LL",
               kc_cu_numel(e, false, 0, axis + 1, R));
  kc_cu_printf(e->t,
               "  KC_BLOCKS(u) {\n"
               "    const i64 base = (u / inner) * L * inner + u %% inner;\n"
               "    %s m = -(%s)KC_INF, s = 0;\n"
               "    for (i64 j = threadIdx.x; j < L; j += blockDim.x)\n"
               "      m = kc_max(m, (%s)%s);\n"
               "    m = kc_block_reduce(m, kc_op_max());\n"
               "    for (i64 j = threadIdx.x; j < L; j += blockDim.x)\n"
               "      s += kc_exp((%s)%s - m);\n"
               "    s = kc_block_reduce(s, kc_op_sum());\n",
               ct, ct, ct, kc_cu_load(e, t, "in0", "base + j * inner"), ct,
               kc_cu_load(e, t, "in0", "base + j * inner"));
  bool log_form = e->n->op == KC_OP_LOG_SOFTMAX;
  kc_cu_printf(e->t, "    const %s ls = kc_log(s), is = (%s)1 / s;\n", ct, ct);
  kc_cu_printf(e->t,
               "    for (i64 j = threadIdx.x; j < L; j += blockDim.x) {\n"
               "      const %s d = (%s)%s - m;\n",
               ct, ct, kc_cu_load(e, t, "in0", "base + j * inner"));
  kc_cu_store(e, 6, kc_cu_val(e, true, 0)->dtype, "out0", "base + j * inner",
              log_form ? "d - ls" : "kc_exp(d) * is");
  kc_cu_puts(e->t, "    }\n  }\n");
  kc_cu_end(e);
  return KC_OK;
}
