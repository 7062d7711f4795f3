/*
 * codegen/cuda/quant.c - kc_cuda_lower_quant (quantize_linear, dequantize_linear,
 * dynamic_quantize_linear) and kc_cuda_lower_qmatmul (matmul_integer, qlinear_matmul): plain
 * kernels doing the math of the CPU ones (codegen/cpu/quant.c, codegen/cpu/qmatmul.c).
 *
 * Quantize/dequantize: a thread per element, f32 math, rintf (round half to even in the default
 * mode) and fmaxf/fminf clamps (NaN becomes the low end, as the CPU's maxnum). The scale index
 * follows kc_quant_mode_of. dynamic_quantize_linear: one thread (the scale needs the min and
 * max of the whole tensor first). Matmuls: a thread per output element, i32 accumulation.
 */
#include "codegen/cuda/emit.h"

static void qrange(kc_dtype t, double *lo, double *hi) {
  switch (t) {
  case KC_I8: *lo = -128, *hi = 127; break;
  case KC_I16: *lo = -32768, *hi = 32767; break;
  case KC_U16: *lo = 0, *hi = 65535; break;
  default: *lo = 0, *hi = 255; break;
  }
}

static kc_status lower_dynamic(kc_cuda_emit *e) {
  const kc_value *x = kc_cu_val(e, false, 0);
  kc_cu_launch_threads(e, 32);
  kc_cu_begin(e, 32);
  kc_cu_printf(e->t,
               "  KC_THREADS(u) {\n"
               "    const i64 n = %s;\n"
               "    float mn = 0.f, mx = 0.f;\n"
               "    for (i64 i = 0; i < n; i++) {\n"
               "      const float v = (float)(%s);\n"
               "      mn = fminf(mn, v);\n"
               "      mx = fmaxf(mx, v);\n"
               "    }\n"
               "    const float s = (mn == mx ? 1.f : mx - mn) / 255.f;\n"
               "    const float z = rintf(fminf(fmaxf(0.f - mn / s, 0.f), 255.f));\n",
               kc_cu_numel(e, false, 0, 0, x->rank), kc_cu_load(e, x->dtype, "in0", "i"));
  if (kc_cu_present(e, true, 1)) kc_cu_store(e, 4, x->dtype, "out1", "0", "s");
  if (kc_cu_present(e, true, 2)) kc_cu_store(e, 4, KC_U8, "out2", "0", "z");
  kc_cu_printf(e->t,
               "    for (i64 i = 0; i < n; i++) {\n"
               "      const float v = (float)(%s);\n"
               "      const float q = fminf(fmaxf(rintf(v / s) + z, 0.f), 255.f);\n",
               kc_cu_load(e, x->dtype, "in0", "i"));
  kc_cu_store(e, 6, KC_U8, "out0", "i", "q");
  kc_cu_puts(e->t, "    }\n  }\n");
  kc_cu_end(e);
  return KC_OK;
}

kc_status kc_cuda_lower_quant(kc_cuda_emit *e) {
  if (e->n->op == KC_OP_DYNAMIC_QUANTIZE_LINEAR) return lower_dynamic(e);
  bool deq = e->n->op == KC_OP_DEQUANTIZE_LINEAR;
  const kc_value *x = kc_cu_val(e, false, 0), *y = kc_cu_val(e, true, 0);
  kc_dtype st = kc_cu_val(e, false, 1)->dtype;
  bool has_zp = kc_cu_present(e, false, 2);
  int axis, R = x->rank;
  kc_quant_mode mode = kc_quant_mode_of(e->g, e->n, &axis);
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, false, 0, 0, R, 1);
  kc_cu_begin(e, 256);
  if (mode == KC_QUANT_TENSOR) {
    kc_cu_puts(e->t, "  KC_THREADS(u) {\n    const i64 si = 0;\n");
  } else {
    kc_cu_printf(e->t, "  const i64 L = %s, inner = %s;\n  KC_THREADS(u) {\n",
                 kc_cu_dim(e, false, 0, axis), kc_cu_numel(e, false, 0, axis + 1, R));
    if (mode == KC_QUANT_AXIS)
      kc_cu_puts(e->t, "    const i64 si = u / inner % L;\n");
    else
      kc_cu_printf(e->t,
                   "    const i64 l = u / inner %% L, o = u / inner / L;\n"
                   "    const i64 si = (o * %s + l / %lldLL) * inner + u %% inner;\n",
                   kc_cu_dim(e, false, 1, axis), (long long)kc_node_int(e->n, "block_size", 1));
  }
  kc_cu_printf(e->t,
               "    const float s = (float)(%s);\n"
               "    const float z = %s;\n"
               "    const float xv = (float)(%s);\n",
               kc_cu_load(e, st, "in1", "si"),
               has_zp ? kc_cu_fmt(e, "(float)(%s)",
                                  kc_cu_load(e, kc_cu_val(e, false, 2)->dtype, "in2", "si"))
                      : "0.f",
               kc_cu_load(e, x->dtype, "in0", "u"));
  if (deq) {
    kc_cu_store(e, 4, y->dtype, "out0", "u", "(xv - z) * s");
  } else {
    double lo, hi;
    qrange(y->dtype, &lo, &hi);
    kc_cu_printf(e->t, "    const float q = fminf(fmaxf(rintf(xv / s) + z, %.1ff), %.1ff);\n", lo,
                 hi);
    kc_cu_store(e, 4, y->dtype, "out0", "u", "q");
  }
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}

/* "inK[IDX]" of input i as i32 (or the constant 0 when absent); index 0 when it has one element. */
static const char *int_at(kc_cuda_emit *e, uint32_t i, const char *idx) {
  if (!kc_cu_present(e, false, i)) return "0";
  if (kc_value_numel(e->g, e->n->in[i]) == 1) idx = "0";
  return kc_cu_fmt(e, "(int)(%s)",
                   kc_cu_load(e, kc_cu_val(e, false, i)->dtype, kc_cu_fmt(e, "in%u", i), idx));
}

/* A scale of input i as a float expression, at idx or 0. */
static const char *scale_at(kc_cuda_emit *e, uint32_t i, const char *idx) {
  kc_dtype t = kc_cu_val(e, false, i)->dtype;
  if (kc_value_numel(e->g, e->n->in[i]) == 1) idx = "0";
  return kc_cu_fmt(e, "(%s)(%s)", t == KC_F64 ? "double" : "float",
                   kc_cu_load(e, t, kc_cu_fmt(e, "in%u", i), idx));
}

kc_status kc_cuda_lower_qmatmul(kc_cuda_emit *e) {
  bool ql = e->n->op == KC_OP_QLINEAR_MATMUL;
  uint32_t ia = 0, ib = ql ? 3 : 1, iaz = 2, ibz = ql ? 5 : 3;
  const kc_value *a = kc_cu_val(e, false, ia), *b = kc_cu_val(e, false, ib);
  const kc_value *y = kc_cu_val(e, true, 0);
  int ry = y->rank, ra = a->rank, rb = b->rank, nb = ry - 2;
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, ry, 1);
  kc_cu_begin(e, 256);
  kc_cu_printf(e->t,
               "  const i64 M = %s, N = %s, K = %s;\n"
               "  KC_THREADS(u) {\n"
               "    const i64 n = u %% N, m = u / N %% M;\n"
               "    i64 bi = u / N / M, offa = 0, offb = 0, sa = 1, sb = 1;\n",
               kc_cu_dim(e, true, 0, ry - 2), kc_cu_dim(e, true, 0, ry - 1),
               kc_cu_dim(e, false, ia, ra - 1));
  for (int k = nb - 1; k >= 0; k--) {
    kc_cu_printf(e->t, "    { const i64 d = %s, ik = bi %% d; bi /= d;\n",
                 kc_cu_dim(e, true, 0, k));
    int ka = k - (nb - (ra - 2)), kb = k - (nb - (rb - 2));
    if (ka >= 0)
      kc_cu_printf(e->t,
                   "      { const i64 da = %s; offa += (da == 1 ? 0 : ik) * sa; sa *= da; }\n",
                   kc_cu_dim(e, false, ia, ka));
    if (kb >= 0)
      kc_cu_printf(e->t,
                   "      { const i64 db = %s; offb += (db == 1 ? 0 : ik) * sb; sb *= db; }\n",
                   kc_cu_dim(e, false, ib, kb));
    kc_cu_puts(e->t, "    }\n");
  }
  kc_cu_printf(e->t,
               "    const int azp = %s, bzp = %s;\n"
               "    const i64 rowa = (offa * M + m) * K, matb = offb * K * N;\n"
               "    int acc = 0;\n"
               "    for (i64 k = 0; k < K; k++)\n"
               "      acc = (int)((unsigned)acc + (unsigned)(((int)(%s) - azp) * ((int)(%s) - "
               "bzp)));\n",
               int_at(e, iaz, "m"), int_at(e, ibz, "n"), kc_cu_load(e, a->dtype, "in0", "rowa + k"),
               kc_cu_load(e, b->dtype, kc_cu_fmt(e, "in%u", ib), "matb + k * N + n"));
  if (!ql) {
    kc_cu_store(e, 4, KC_I32, "out0", "u", "acc");
  } else {
    kc_dtype st = kc_cu_val(e, false, 1)->dtype;
    const char *rnd = st == KC_F16 ? "kc_to_f16" : st == KC_BF16 ? "kc_to_bf16" : "";
    bool i8 = y->dtype == KC_I8;
    const char *ct = st == KC_F64 ? "double" : "float"; /* as the CPU's qmatmul.c */
    kc_cu_printf(e->t,
                 "    const %s mult = %s(%s(%s * %s) / %s);\n"
                 "    %s d = rint((%s)acc * (%s)mult) + (%s)%s;\n"
                 "    d = fmin(fmax(d, (%s)%s), (%s)%s);\n",
                 st == KC_F64 ? "double" : "float", rnd, rnd, scale_at(e, 1, "m"),
                 scale_at(e, 4, "n"), scale_at(e, 6, "0"), ct, ct, ct, ct, int_at(e, 7, "0"), ct,
                 i8 ? "-128" : "0", ct, i8 ? "127" : "255");
    kc_cu_store(e, 4, y->dtype, "out0", "u", "d");
  }
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}
