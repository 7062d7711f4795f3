/*
 * codegen/cuda/attention_grad.c - kc_cuda_lower_attention_grad: the backward of kernc's fused
 * attention (ir/ops.def ATTENTION_GRAD), attention_grad(q, k, v, mask?, y, dy, lse) -> dq, dk,
 * dv, with the math, layouts, masks, GQA and softcap of the CPU kernel
 * (codegen/cpu/attention_grad.c): p_ij = exp(s_ij - lse_i) recomputed from q, k and lse (never
 * an S x T matrix), D_i = rowsum(dy_i * y_i), ds = p * (dy_i . v_j - D_i) (times 1 - tanh^2
 * under softcap), dq = scale ds k, dk = scale ds^T q, dv = p^T dy.
 *
 * A block of KC_CU_ATT_BLOCK threads per unit; units (B, heads, 2, S), grid-stride:
 *   - half 0, (b, h, i): dq of query row i; per tile of BLOCK keys each thread computes ds of
 *     one key into shared memory, then thread t adds the tile's ds_j k_j[d] for its dims d = t +
 *     BLOCK c, keys in order;
 *   - half 1, (b, h, x) with h the first head of its group: dk / dv of kv head h / group for the
 *     keys j = x, x + S, ... < T; per tile of BLOCK rows (the group's heads, then rows) each
 *     thread computes p and ds of one row, then thread t adds them times dy / q for its dims.
 * Every output element is summed by one thread in a fixed order: results do not depend on the
 * grid. Arithmetic is f32; the head sizes must be static.
 */
#include "codegen/cuda/emit.h"

#include <math.h>
#include <string.h>

enum { Q, K, V, MASK, Y, DY, LSE };

/* clang-format off */
/* The kernel body after the parameters (constants and pointers) are declared. */
static const char body[] =
    "  constexpr int BL = KC_BLOCK, DL = (D + BL - 1) / BL, DVL = (DV + BL - 1) / BL;\n"
    "  __shared__ float s_p[BL], s_ds[BL];\n"
    "  const int t = threadIdx.x;\n"
    "  /* p and ds of query row i (head h) against key j of kv head hk; false: not visible */\n"
    "  auto terms = [&](i64 b, i64 h, i64 i, i64 j, float &pp, float &dd) -> bool {\n"
    "    const i64 hk = h / GROUP;\n"
    "    const float L = in6[(b * HEADS + h) * S + i];\n"
    "    if (!(L > -KC_INF)) return false;\n"
    "    if (CAUSAL && j > i + off) return false;\n"
    "    if (MASKK == 1 && kc_f(in3[b * T + j]) == 0) return false;\n"
    "    const i64 qr = b * qs0 + i * qs1 + h * qs2, kr = b * ks0 + j * ks1 + hk * ks2;\n"
    "    const i64 yr = b * ys0 + i * ys1 + h * ys2, vr = b * vs0 + j * vs1 + hk * vs2;\n"
    "    float s = 0, dp = 0, Di = 0;\n"
    "    for (int d = 0; d < D; d++) s += (float)kc_f(in0[qr + d]) * (float)kc_f(in1[kr + d]);\n"
    "    s *= SCALE;\n"
    "    float th = 0;\n"
    "    if (SOFTCAP > 0) th = tanhf(s / SOFTCAP), s = SOFTCAP * th;\n"
    "    if (MASKK == 2) s += (float)kc_f(in3[b * ms0 + h * ms1 + i * ms2 + j * ms3]);\n"
    "    for (int d = 0; d < DV; d++) {\n"
    "      const float g = (float)kc_f(in5[yr + d]);\n"
    "      dp += g * (float)kc_f(in2[vr + d]);\n"
    "      Di += g * (float)kc_f(in4[yr + d]);\n"
    "    }\n"
    "    pp = expf(s - L);\n"
    "    dd = pp * (dp - Di);\n"
    "    if (SOFTCAP > 0) dd *= 1.0f - th * th;\n"
    "    return true;\n"
    "  };\n"
    "  const i64 half = (i64)HEADS * S;\n"
    "  KC_BLOCKS(u) {\n"
    "    const i64 b = u / (2 * half), r = u % (2 * half), kind = r / half;\n"
    "    const i64 h = r % half / S, x = r % S;\n"
    "    if (kind == 0) {\n"
    "      const i64 i = x, hk = h / GROUP;\n"
    "      float acc[DL];\n"
    "      for (int c = 0; c < DL; c++) acc[c] = 0;\n"
    "      const i64 jend = CAUSAL ? kc_max((i64)0, kc_min(T, i + off + 1)) : T;\n"
    "      for (i64 j0 = 0; j0 < jend; j0 += BL) {\n"
    "        float pp = 0, dd = 0;\n"
    "        if (j0 + t >= jend || !terms(b, h, i, j0 + t, pp, dd)) dd = 0;\n"
    "        s_ds[t] = dd;\n"
    "        __syncthreads();\n"
    "        const int n = (int)kc_min((i64)BL, jend - j0);\n"
    "        for (int jj = 0; jj < n; jj++) {\n"
    "          const i64 kr = b * ks0 + (j0 + jj) * ks1 + hk * ks2;\n"
    "          for (int c = 0; c < DL; c++)\n"
    "            if (t + BL * c < D) acc[c] += s_ds[jj] * (float)kc_f(in1[kr + t + BL * c]);\n"
    "        }\n"
    "        __syncthreads();\n"
    "      }\n"
    "      const i64 qr = b * qs0 + i * qs1 + h * qs2;\n"
    "      for (int c = 0; c < DL; c++)\n"
    "        if (t + BL * c < D) out0[qr + t + BL * c] = kc_st<TY>::to(acc[c] * SCALE);\n"
    "    } else if (h % GROUP == 0) {\n"
    "      const i64 hk = h / GROUP, nr = (i64)GROUP * S;\n"
    "      for (i64 j = x; j < T; j += S) {\n"
    "        float ak[DL], av[DVL];\n"
    "        for (int c = 0; c < DL; c++) ak[c] = 0;\n"
    "        for (int c = 0; c < DVL; c++) av[c] = 0;\n"
    "        for (i64 r0 = 0; r0 < nr; r0 += BL) {\n"
    "          float pp = 0, dd = 0;\n"
    "          const i64 rr = r0 + t;\n"
    "          if (rr >= nr || !terms(b, hk * GROUP + rr / S, rr % S, j, pp, dd)) pp = 0, dd = 0;\n"
    "          s_p[t] = pp, s_ds[t] = dd;\n"
    "          __syncthreads();\n"
    "          const int n = (int)kc_min((i64)BL, nr - r0);\n"
    "          for (int k2 = 0; k2 < n; k2++) {\n"
    "            const i64 hh = hk * GROUP + (r0 + k2) / S, i = (r0 + k2) % S;\n"
    "            const i64 qr = b * qs0 + i * qs1 + hh * qs2, yr = b * ys0 + i * ys1 + hh * ys2;\n"
    "            for (int c = 0; c < DL; c++)\n"
    "              if (t + BL * c < D) ak[c] += s_ds[k2] * (float)kc_f(in0[qr + t + BL * c]);\n"
    "            for (int c = 0; c < DVL; c++)\n"
    "              if (t + BL * c < DV) av[c] += s_p[k2] * (float)kc_f(in5[yr + t + BL * c]);\n"
    "          }\n"
    "          __syncthreads();\n"
    "        }\n"
    "        const i64 kr = b * ks0 + j * ks1 + hk * ks2, vr = b * vs0 + j * vs1 + hk * vs2;\n"
    "        for (int c = 0; c < DL; c++)\n"
    "          if (t + BL * c < D) out1[kr + t + BL * c] = kc_st<TY>::to(ak[c] * SCALE);\n"
    "        for (int c = 0; c < DVL; c++)\n"
    "          if (t + BL * c < DV) out2[vr + t + BL * c] = kc_st<TY>::to(av[c]);\n"
    "      }\n"
    "    }\n"
    "  }\n";
/* clang-format on */

/* `const i64 NAME0 = ..., NAME1, NAME2`: batch, sequence, head strides of a [B,S,H*dh] (rank 3)
 * or [B,H,S,dh] tensor with S rows. */
static void strides(kc_cuda_emit *e, int rank, const char *name, const char *S, int64_t H,
                    int64_t dh) {
  if (rank == 3)
    kc_cu_printf(e->t, "  const i64 %s0 = %s * %lldLL, %s1 = %lldLL, %s2 = %lldLL;\n", name, S,
                 (long long)(H * dh), name, (long long)(H * dh), name, (long long)dh);
  else
    kc_cu_printf(e->t, "  const i64 %s0 = %s * %lldLL, %s1 = %lldLL, %s2 = %s * %lldLL;\n", name, S,
                 (long long)(H * dh), name, (long long)dh, name, S, (long long)dh);
}

kc_status kc_cuda_lower_attention_grad(kc_cuda_emit *e) {
  const kc_node *n = e->n;
  kc_cu_att_cfg c;
  kc_status cs = kc_cu_att_configure(e, MASK, &c);
  if (cs != KC_OK) return cs;
  int rank = c.rank;
  int64_t heads = c.heads, kvh = c.kvh, D = c.D, Dv = c.Dv;
  kc_dtype t = c.t;
  bool causal = c.causal;
  int mk = c.mk;
  double scale = kc_node_float(n, "scale", 1.0 / sqrt((double)D));
  int sdim = rank == 3 ? 1 : 2;

  kc_cu_launch_blocks(e, KC_CU_ATT_BLOCK);
  kc_cu_units_dims(e, false, Q, 0, 1, 1);
  kc_cu_units_const(e, 2 * heads);
  kc_cu_units_dims(e, false, Q, sdim, sdim + 1, 1);
  kc_cu_begin(e, KC_CU_ATT_BLOCK);
  char S[64], T[64];
  snprintf(S, sizeof S, "%s", kc_cu_dim(e, false, Q, sdim));
  snprintf(T, sizeof T, "%s", kc_cu_dim(e, false, K, sdim));
  kc_cu_printf(e->t,
               "  using TY = %s;\n"
               "  constexpr int KC_BLOCK = %d, D = %lld, DV = %lld, HEADS = %lld, GROUP = %lld;\n"
               "  constexpr int MASKK = %d;\n  constexpr bool CAUSAL = %s;\n"
               "  const float SCALE = (float)%.17g, SOFTCAP = (float)%.17g;\n"
               "  const i64 S = %s, T = %s, off = T - S;\n",
               kc_cu_stype(t), KC_CU_ATT_BLOCK, (long long)D, (long long)Dv, (long long)heads,
               (long long)(heads / kvh), mk, causal ? "true" : "false", scale,
               kc_node_float(n, "softcap", 0), S, T);
  strides(e, rank, "qs", "S", heads, D);
  strides(e, rank, "ks", "T", kvh, D);
  strides(e, rank, "vs", "T", kvh, Dv);
  strides(e, rank, "ys", "S", heads, Dv);
  if (mk == 2) {
    /* the additive mask's strides over [B, heads, S, T] (0 along broadcast axes) */
    kc_cu_puts(e->t, "  kc_att_p p = {};\n");
    kc_cu_att_mask_strides(e, MASK);
    kc_cu_puts(e->t, "  const i64 ms0 = p.ms0, ms1 = p.ms1, ms2 = p.ms2, ms3 = p.ms3;\n");
    e->sections |= KC_CU_SEC_ATTENTION;
  } else if (mk == 1) {
    kc_cu_puts(e->t, "  const i64 ms0 = 0, ms1 = 0, ms2 = 0, ms3 = 0;\n");
  } else {
    kc_cu_printf(e->t,
                 "  const %s *in3 = nullptr;\n  const i64 ms0 = 0, ms1 = 0, ms2 = 0, ms3 = 0;\n",
                 "float");
  }
  kc_cu_puts(e->t, body);
  kc_cu_end(e);
  return KC_OK;
}
