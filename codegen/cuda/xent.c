/*
 * codegen/cuda/xent.c - kc_cuda_lower_xent: the fused softmax cross-entropy (softmax_xent) and
 * its backward (softmax_xent_grad), ir/ops.def.
 *
 * A block per row logits[u, :] (C elements), its threads striding over the row, with block
 * reductions for the maximum and the sum of exp(x - max) (as softmax.c). Arithmetic in f32 (f64
 * for f64). The label is read first by every thread of the block: one outside [0, C) that is
 * not ignore_index is reported through the index-check ABI of codegen/cuda/cuda.h (position =
 * the row) and the whole block skips the row, so no memory is addressed through it and the
 * block reductions stay uniform.
 *   - softmax_xent: lse = max + log(sum); thread 0 writes loss = lse - x[label] (0 on an
 *     ignored row) and lse when the node has that result.
 *   - softmax_xent_grad: dx = (exp(x - lse) - [j == label]) * dloss, zeros on an ignored row;
 *     one pass, the softmax is never stored.
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_xent(kc_cuda_emit *e) {
  const kc_node *n = e->n;
  const kc_value *x = kc_cu_val(e, false, 0);
  kc_dtype t = x->dtype;
  if (!kc_dtype_is_float(t) || x->rank < 1)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "%s of %s", kc_ops[n->op].name, kc_dtype_name(t));
  bool grad = n->op == KC_OP_SOFTMAX_XENT_GRAD;
  int R = x->rank;
  long long ignore = (long long)kc_node_int(n, "ignore_index", -100);
  const char *ct = t == KC_F64 ? "double" : "float";
  int64_t Cs = KC_DIM_IS_SYM(x->dims[R - 1]) ? 0 : x->dims[R - 1];
  int block = kc_cu_row_block(Cs);
  kc_cu_launch_blocks(e, block);
  kc_cu_units_dims(e, false, 0, 0, R - 1, 1);
  kc_cu_check_indices(e, 1, 0, R - 1);
  kc_cu_begin(e, block);
  kc_cu_printf(e->t, "  const i64 C = %s;\n", kc_cu_dim(e, false, 0, R - 1));
  const char *xj = kc_cu_load(e, t, "in0", "base + j");
  kc_cu_printf(e->t,
               "  KC_BLOCKS(u) {\n"
               "    const i64 base = u * C, label = in1[u];\n"
               "    const bool ignored = label == %lldLL;\n"
               "    if (!ignored && (unsigned long long)label >= (unsigned long long)C) {\n"
               "      if (threadIdx.x == 0 && atomicCAS(kc_err, 0ull, (unsigned long long)u + "
               "1ull) == 0ull)\n"
               "        kc_err[1] = (unsigned long long)label;\n"
               "      continue;\n"
               "    }\n",
               ignore);
  if (!grad) {
    kc_cu_printf(e->t,
                 "    %s m = -(%s)KC_INF, s = 0;\n"
                 "    for (i64 j = threadIdx.x; j < C; j += blockDim.x) m = kc_max(m, (%s)%s);\n"
                 "    m = kc_block_reduce(m, kc_op_max());\n"
                 "    for (i64 j = threadIdx.x; j < C; j += blockDim.x) s += kc_exp((%s)%s - m);\n"
                 "    s = kc_block_reduce(s, kc_op_sum());\n"
                 "    const %s lse = m + kc_log(s);\n"
                 "    if (threadIdx.x == 0) {\n",
                 ct, ct, ct, xj, ct, xj, ct);
    const char *loss = kc_cu_fmt(e, "ignored ? (%s)0 : lse - (%s)%s", ct, ct,
                                 kc_cu_load(e, t, "in0", "base + (ignored ? 0 : label)"));
    kc_cu_store(e, 6, kc_cu_val(e, true, 0)->dtype, "out0", "u", loss);
    if (kc_cu_present(e, true, 1))
      kc_cu_store(e, 6, kc_cu_val(e, true, 1)->dtype, "out1", "u", "lse");
    kc_cu_puts(e->t, "    }\n");
  } else {
    kc_cu_printf(e->t,
                 "    const %s lse = (%s)%s, d = ignored ? (%s)0 : (%s)%s;\n"
                 "    for (i64 j = threadIdx.x; j < C; j += blockDim.x) {\n",
                 ct, ct, kc_cu_load(e, kc_cu_val(e, false, 2)->dtype, "in2", "u"), ct, ct,
                 kc_cu_load(e, t, "in3", "u"));
    kc_cu_store(
        e, 6, kc_cu_val(e, true, 0)->dtype, "out0", "base + j",
        kc_cu_fmt(e, "ignored ? (%s)0 : (kc_exp((%s)%s - lse) - (j == label ? (%s)1 : (%s)0)) * d",
                  ct, ct, xj, ct, ct));
    kc_cu_puts(e->t, "    }\n");
  }
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}
