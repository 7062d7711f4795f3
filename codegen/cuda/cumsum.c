/*
 * codegen/cuda/cumsum.c - kc_cuda_lower_cumsum: running sums (cumsum) or products (cumprod)
 * along one axis, inclusive or exclusive, forwards or reversed, as the CPU kernel
 * (codegen/cpu/cumsum.c).
 *
 * x is viewed as [outer, L, inner] around the axis. A thread per line (outer index, inner index)
 * sums it in order in the compute type: integers wrap, f16/bf16 sum in f32 and round each stored
 * element. An axis known only at run time (read from its tensor, normalized and clamped into
 * [0, rank)) gives one thread that runs every line, as the launch is sized from dims alone.
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_cumsum(kc_cuda_emit *e) {
  const kc_value *x = kc_cu_val(e, false, 0);
  kc_dtype t = x->dtype;
  int R = x->rank, axis;
  bool known = kc_cumsum_axis(e->g, e->n, &axis);
  bool excl = kc_node_int(e->n, "exclusive", 0) != 0, rev = kc_node_int(e->n, "reverse", 0) != 0;
  const char *ct = kc_cu_ctype(t);
  bool prod = e->n->op == KC_OP_CUMPROD;
  const char *comb = prod ? "kc_mul" : "kc_add";
  kc_cu_launch_threads(e, known ? 256 : 32);
  if (known) kc_cu_units_dims_except(e, false, 0, 0, R, axis);
  kc_cu_begin(e, known ? 256 : 32);
  if (known) {
    kc_cu_printf(e->t, "  const i64 L = %s, inner = %s;\n", kc_cu_dim(e, false, 0, axis),
                 kc_cu_numel(e, false, 0, axis + 1, R));
    kc_cu_puts(e->t, "  KC_THREADS(u) {\n");
  } else {
    kc_cu_printf(e->t,
                 "  i64 ax = (i64)in1[0];\n"
                 "  ax = ax < 0 ? ax + %d : ax;\n"
                 "  ax = ax < 0 ? 0 : ax > %d ? %d : ax;\n"
                 "  i64 L = 1, inner = 1;\n",
                 R, R - 1, R - 1);
    for (int k = 0; k < R; k++)
      kc_cu_printf(e->t, "  if (ax == %d) L = %s;\n  if (ax < %d) inner *= %s;\n", k,
                   kc_cu_dim(e, false, 0, k), k, kc_cu_dim(e, false, 0, k));
    kc_cu_printf(e->t,
                 "  const i64 lines = L == 0 ? 0 : %s / L;\n"
                 "  KC_THREADS(u0) for (i64 u = 0; u < lines; u++) {\n",
                 kc_cu_numel(e, false, 0, 0, R));
  }
  kc_cu_printf(e->t,
               "    const i64 base = (u / inner) * L * inner + u %% inner;\n"
               "    %s acc = (%s)%d;\n"
               "    for (i64 j = 0; j < L; j++) {\n"
               "      const i64 i = base + (%s) * inner;\n"
               "      const %s v = %s;\n",
               ct, ct, prod ? 1 : 0, rev ? "L - 1 - j" : "j", ct, kc_cu_load(e, t, "in0", "i"));
  if (excl) {
    kc_cu_store(e, 6, t, "out0", "i", "acc");
    kc_cu_printf(e->t, "      acc = %s(acc, v);\n", comb);
  } else {
    kc_cu_printf(e->t, "      acc = %s(acc, v);\n", comb);
    kc_cu_store(e, 6, t, "out0", "i", "acc");
  }
  kc_cu_puts(e->t, "    }\n  }\n");
  kc_cu_end(e);
  return KC_OK;
}
