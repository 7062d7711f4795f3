/*
 * codegen/cuda/reduce.c - kc_cuda_lower_reduce: reduce_mean, reduce_sum, reduce_max, reduce_min
 * and reduce_prod over any set of axes, every numeric dtype (and bool for max and min). A warp per
 * output element: its lanes stride over the reduced elements, then a warp shuffle reduction.
 *
 * The reduced axes are constants in the code when the axes input is absent or known; otherwise
 * each thread reads the axes buffer once (negative axes count from the end; an empty list
 * reduces everything, or nothing with noop_with_empty_axes). Either way one code path: an
 * output element's kept coordinates are its flat index decomposed over the kept input axes (the
 * same product with or without keepdims), and a reduced element's offset the lane's counter
 * decomposed over the reduced axes.
 * Empty reductions give the identity: sum 0, prod 1, max the type's lowest (-inf), min the
 * type's highest (+inf), mean 0/0 (nan; 0 for integers). Sums and products accumulate in
 * kc_cu_acc_type (f32 for f16/bf16). Min and prod combine across the warp with an inline
 * shuffle loop (the prelude has functors for sum and max only).
 */
#include "codegen/cuda/emit.h"

#define RED_BLOCK 256

kc_status kc_cuda_lower_reduce(kc_cuda_emit *e) {
  const kc_node *n = e->n;
  kc_dtype t = kc_cu_val(e, false, 0)->dtype;
  int R = kc_cu_val(e, false, 0)->rank;
  bool is_max = n->op == KC_OP_REDUCE_MAX, is_mean = n->op == KC_OP_REDUCE_MEAN;
  bool is_min = n->op == KC_OP_REDUCE_MIN, is_prod = n->op == KC_OP_REDUCE_PROD;
  if (!kc_dtype_is_float(t) && !kc_dtype_is_int(t) && !((is_max || is_min) && t == KC_BOOL))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "%s of %s", kc_ops[n->op].name, kc_dtype_name(t));
  bool noop = kc_node_int(n, "noop_with_empty_axes", 0) != 0;
  bool has_axes = kc_cu_present(e, false, 1);
  int64_t axes[KC_MAX_RANK * 4];
  int nax = has_axes ? kc_cu_known_ints(e, 1, axes, KC_MAX_RANK * 4) : 0;
  const char *acc = kc_cu_acc_type(t);

  kc_cu_launch_warps(e, RED_BLOCK);
  kc_cu_units_dims(e, true, 0, 0, kc_cu_val(e, true, 0)->rank, 1);
  kc_cu_begin(e, RED_BLOCK);
  for (int k = 0; k < R; k++)
    kc_cu_printf(e->t, "  const i64 xd%d = %s, xs%d = %s;\n", k, kc_cu_dim(e, false, 0, k), k,
                 kc_cu_numel(e, false, 0, k + 1, R));
  if (nax >= 0) { /* static set */
    bool red[KC_MAX_RANK] = {false};
    for (int j = 0; j < nax; j++) {
      int64_t a = axes[j] < 0 ? axes[j] + R : axes[j];
      if (a >= 0 && a < R) red[a] = true;
    }
    for (int k = 0; k < R; k++)
      kc_cu_printf(e->t, "  const bool r%d = %s;\n", k,
                   nax == 0 ? (noop ? "false" : "true")
                   : red[k] ? "true"
                            : "false");
  } else {
    kc_cu_printf(e->t, "  const i64 na = %s;\n", kc_cu_dim(e, false, 1, 0));
    for (int k = 0; k < R; k++)
      kc_cu_printf(e->t, "  bool r%d = na == 0 && %s;\n", k, noop ? "false" : "true");
    kc_cu_printf(e->t,
                 "  for (i64 j = 0; j < na; j++) {\n"
                 "    i64 ax = (i64)in1[j];\n"
                 "    if (ax < 0) ax += %d;\n",
                 R);
    for (int k = 0; k < R; k++)
      kc_cu_printf(e->t, "    r%d = r%d || ax == %d;\n", k, k, k);
    kc_cu_puts(e->t, "  }\n");
  }
  kc_cu_puts(e->t, "  i64 nred = 1;\n");
  for (int k = 0; k < R; k++)
    kc_cu_printf(e->t, "  if (r%d) nred *= xd%d;\n", k, k);
  kc_cu_puts(e->t, "  KC_WARPS(u) {\n    i64 rem = u, base = 0;\n");
  for (int k = R - 1; k >= 0; k--)
    kc_cu_printf(e->t, "    if (!r%d) { base += (rem %% xd%d) * xs%d; rem /= xd%d; }\n", k, k, k,
                 k);
  const char *ct = kc_cu_ctype(t);
  /* the highest value: +inf for floats, else the complement of the lowest (true for bool) */
  const char *ident = is_max ? kc_cu_fmt(e, "(%s)kc_lowest<%s>()", acc, ct)
                      : is_min
                          ? (kc_dtype_is_float(t) ? kc_cu_fmt(e, "(%s)KC_INF", acc)
                             : t == KC_BOOL       ? kc_cu_fmt(e, "(%s)1", acc)
                                            : kc_cu_fmt(e, "(%s)(%s)~kc_lowest<%s>()", acc, ct, ct))
                      : is_prod ? kc_cu_fmt(e, "(%s)1", acc)
                                : kc_cu_fmt(e, "(%s)0", acc);
  const char *comb = is_max ? "kc_max" : is_min ? "kc_min" : is_prod ? "kc_mul" : "kc_add";
  kc_cu_printf(e->t, "    %s acc = %s;\n", acc, ident);
  kc_cu_puts(e->t, "    for (i64 r = KC_LANE; r < nred; r += 32) {\n"
                   "      i64 rr = r, off = base;\n");
  for (int k = R - 1; k >= 0; k--)
    kc_cu_printf(e->t, "      if (r%d) { off += (rr %% xd%d) * xs%d; rr /= xd%d; }\n", k, k, k, k);
  kc_cu_printf(e->t, "      acc = %s(acc, (%s)%s);\n", comb, acc, kc_cu_load(e, t, "in0", "off"));
  if (is_min || is_prod)
    kc_cu_printf(e->t,
                 "    }\n    for (int o = 16; o > 0; o >>= 1)\n"
                 "      acc = %s(acc, __shfl_xor_sync(0xffffffffu, acc, o));\n",
                 comb);
  else
    kc_cu_printf(e->t, "    }\n    acc = kc_warp_reduce(acc, %s());\n",
                 is_max ? "kc_op_max" : "kc_op_sum");
  const char *v = "acc";
  if (is_mean)
    v = kc_dtype_is_float(t) ? kc_cu_fmt(e, "acc / (%s)nred", acc)
                             : kc_cu_fmt(e, "(nred ? acc / (%s)nred : (%s)0)", acc, acc);
  kc_cu_puts(e->t, "    if (KC_LANE == 0) {\n");
  kc_cu_store(e, 6, kc_cu_val(e, true, 0)->dtype, "out0", "u", v);
  kc_cu_puts(e->t, "    }\n  }\n");
  kc_cu_end(e);
  return KC_OK;
}
