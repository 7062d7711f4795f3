/*
 * codegen/cuda/topk.c - kc_cuda_lower_topk: the k best elements of each line along the axis
 * (largest or smallest), best first, with their int64 indices, as the CPU kernel
 * (codegen/cpu/topk.c): one thread per line keeps a binary heap of the k best seen so far in
 * its output line (the worst at the root), then heap-sorts it; O(L log k) per line, no scratch
 * whatever k is. One total order ranks elements: the better value (nan above every number, as
 * numpy's sort), then the lower index; integers compare with their signedness.
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_topk(kc_cuda_emit *e) {
  const kc_value *x = kc_cu_val(e, false, 0);
  kc_dtype t = x->dtype;
  int R = x->rank, axis = (int)kc_node_int(e->n, "axis", -1);
  axis = axis < 0 ? axis + R : axis;
  bool largest = kc_node_int(e->n, "largest", 1) != 0, fl = kc_dtype_is_float(t);
  const char *ct = kc_cu_ctype(t);
  kc_cu_launch_threads(e, 128);
  kc_cu_units_dims_except(e, false, 0, 0, R, axis);
  kc_cu_begin(e, 128);
  kc_cu_printf(e->t, "  const i64 L = %s, K = %s, inner = %s;\n", kc_cu_dim(e, false, 0, axis),
               kc_cu_dim(e, true, 0, axis), kc_cu_numel(e, false, 0, axis + 1, R));
  /* better(a, b): a ranks before b */
  const char *rel = largest ? ">" : "<";
  if (fl)
    kc_cu_printf(e->t,
                 "  auto better = [](%s av, i64 ai, %s bv, i64 bi) -> bool {\n"
                 "    const bool an = av != av, bn = bv != bv;\n"
                 "    if (an || bn) return an && bn ? ai < bi : %s;\n"
                 "    return av %s bv || (av == bv && ai < bi);\n"
                 "  };\n",
                 ct, ct, largest ? "an" : "bn", rel);
  else
    kc_cu_printf(e->t,
                 "  auto better = [](%s av, i64 ai, %s bv, i64 bi) -> bool {\n"
                 "    return av %s bv || (av == bv && ai < bi);\n"
                 "  };\n",
                 ct, ct, rel);
  kc_cu_puts(e->t, "  KC_THREADS(u) {\n"
                   "    const i64 ib = (u / inner) * L * inner + u % inner;\n"
                   "    const i64 ob = (u / inner) * K * inner + u % inner;\n");
  /* sift (v, vi) down from slot p of a heap of n slots */
  kc_cu_printf(e->t,
               "    auto sift = [&](i64 p, i64 n, %s v, i64 vi) {\n"
               "      for (;;) {\n"
               "        i64 w = 2 * p + 1;\n"
               "        if (w >= n) break;\n"
               "        %s wv = %s;\n"
               "        i64 wi = out1[ob + w * inner];\n"
               "        if (w + 1 < n) {\n"
               "          const %s v2 = %s;\n"
               "          const i64 i2 = out1[ob + (w + 1) * inner];\n"
               "          if (better(wv, wi, v2, i2)) w = w + 1, wv = v2, wi = i2;\n"
               "        }\n"
               "        if (!better(v, vi, wv, wi)) break;\n",
               ct, ct, kc_cu_load(e, t, "out0", "ob + w * inner"), ct,
               kc_cu_load(e, t, "out0", "ob + (w + 1) * inner"));
  kc_cu_store(e, 8, t, "out0", "ob + p * inner", "wv");
  kc_cu_puts(e->t, "        out1[ob + p * inner] = wi;\n"
                   "        p = w;\n"
                   "      }\n");
  kc_cu_store(e, 6, t, "out0", "ob + p * inner", "v");
  kc_cu_puts(e->t, "      out1[ob + p * inner] = vi;\n"
                   "    };\n");
  /* 1. the first K elements, heapified */
  kc_cu_puts(e->t, "    for (i64 j = 0; j < K; j++) {\n");
  kc_cu_store(e, 6, t, "out0", "ob + j * inner", kc_cu_load(e, t, "in0", "ib + j * inner"));
  kc_cu_puts(e->t, "      out1[ob + j * inner] = j;\n"
                   "    }\n");
  kc_cu_printf(e->t,
               "    for (i64 p = K / 2 - 1; p >= 0; p--)\n"
               "      sift(p, K, %s, out1[ob + p * inner]);\n",
               kc_cu_load(e, t, "out0", "ob + p * inner"));
  /* 2. the rest against the root */
  kc_cu_printf(e->t,
               "    for (i64 j = K; j < L; j++) {\n"
               "      const %s v = %s;\n"
               "      if (better(v, j, %s, out1[ob])) sift(0, K, v, j);\n"
               "    }\n",
               ct, kc_cu_load(e, t, "in0", "ib + j * inner"), kc_cu_load(e, t, "out0", "ob"));
  /* 3. heap sort: the worst left goes to the end */
  kc_cu_printf(e->t,
               "    for (i64 last = K - 1; last > 0; last--) {\n"
               "      const %s lv = %s, rv = %s;\n"
               "      const i64 li = out1[ob + last * inner], ri = out1[ob];\n",
               ct, kc_cu_load(e, t, "out0", "ob + last * inner"), kc_cu_load(e, t, "out0", "ob"));
  kc_cu_store(e, 6, t, "out0", "ob + last * inner", "rv");
  kc_cu_puts(e->t, "      out1[ob + last * inner] = ri;\n"
                   "      sift(0, last, lv, li);\n"
                   "    }\n"
                   "  }\n");
  kc_cu_end(e);
  return KC_OK;
}
