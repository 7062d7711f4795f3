/*
 * codegen/cuda/rotary.c - kc_cuda_lower_rotary: ONNX RotaryEmbedding, a thread per element of x.
 *
 * x is [B, H, S, D] or [B, S, H*D] (num_heads given); a row is one head vector of D elements.
 * The caches are [max_pos, C] indexed by position_ids [B, S] (as numpy indexes: [-max_pos,
 * max_pos) valid; another id is reported through the error word of codegen/cuda/cuda.h's index
 * check, never read through), else [B, S, C]. Half the rotary width
 * is rotary_embedding_dim / 2 when set, else C, at most D / 2. Element d < 2*half pairs with
 * d +- half (or its neighbour when interleaved):
 *   y1 = x1 cos - x2 sin,  y2 = x1 sin + x2 cos;
 * the rest of the row is copied. Arithmetic in the compute type (f32 for f16/bf16).
 */
#include "codegen/cuda/emit.h"

kc_status kc_cuda_lower_rotary(kc_cuda_emit *e) {
  const kc_node *n = e->n;
  const kc_value *x = kc_cu_val(e, false, 0);
  kc_dtype t = x->dtype;
  int R = x->rank;
  int64_t heads = kc_node_int(n, "num_heads", 0), rdim = kc_node_int(n, "rotary_embedding_dim", 0);
  bool inter = kc_node_int(n, "interleaved", 0) != 0, pos = kc_cu_present(e, false, 3);
  if ((R != 3 && R != 4) || (R == 3 && heads <= 0) || !kc_dtype_is_float(t))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "x of rank %d, type %s, num_heads %lld", R,
                      kc_dtype_name(t), (long long)heads);
  if (rdim < 0 || rdim % 2)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "rotary_embedding_dim %lld is not even",
                      (long long)rdim);
  const char *ct = kc_cu_ctype(t);
  int cr = kc_cu_val(e, false, 1)->rank;
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, false, 0, 0, R, 1);
  if (pos) kc_cu_check_indices(e, 3, 1, 0);
  kc_cu_begin(e, 256);
  if (R == 4)
    kc_cu_printf(e->t, "  const i64 H = %s, S = %s, D = %s;\n", kc_cu_dim(e, false, 0, 1),
                 kc_cu_dim(e, false, 0, 2), kc_cu_dim(e, false, 0, 3));
  else
    kc_cu_printf(e->t, "  const i64 H = %lldLL, S = %s, D = %s / H;\n", (long long)heads,
                 kc_cu_dim(e, false, 0, 1), kc_cu_dim(e, false, 0, 2));
  kc_cu_printf(e->t, "  const i64 width = %s, maxpos = %s;\n", kc_cu_dim(e, false, 1, cr - 1),
               kc_cu_dim(e, false, 1, 0));
  kc_cu_printf(e->t, "  const i64 half = kc_min(%s, D / 2);\n",
               rdim > 0 ? kc_cu_fmt(e, "%lldLL", (long long)(rdim / 2)) : "width");
  kc_cu_printf(e->t,
               "  KC_THREADS(idx) {\n"
               "    const i64 d = idx %% D, row = idx / D;\n"
               "    const i64 s = %s, b = row / (H * S);\n"
               "    %s y;\n"
               "    if (d < 2 * half) {\n",
               R == 4 ? "row % S" : "row / H % S", ct);
  if (pos) {
    kc_cu_puts(e->t, "      i64 p = (i64)in3[b * S + s];\n");
    kc_cu_checked_index(e, 6, "p", "maxpos", "b * S + s");
    kc_cu_puts(e->t, "      const i64 crow = p * width;\n");
  } else
    kc_cu_puts(e->t, "      const i64 crow = (b * S + s) * width;\n");
  if (inter)
    kc_cu_puts(e->t, "      const i64 c = crow + d / 2, i0 = idx - (d & 1);\n"
                     "      const bool second = d & 1;\n");
  else
    kc_cu_puts(
        e->t,
        "      const bool second = d >= half;\n"
        "      const i64 c = crow + (second ? d - half : d), i0 = second ? idx - half : idx;\n");
  kc_cu_printf(e->t, "      const %s x1 = %s, x2 = %s;\n", ct, kc_cu_load(e, t, "in0", "i0"),
               kc_cu_load(e, t, "in0", inter ? "i0 + 1" : "i0 + half"));
  kc_cu_printf(e->t, "      const %s cs = %s, sn = %s;\n", ct, kc_cu_load(e, t, "in1", "c"),
               kc_cu_load(e, t, "in2", "c"));
  kc_cu_printf(e->t,
               "      y = second ? x1 * sn + x2 * cs : x1 * cs - x2 * sn;\n"
               "    } else {\n      y = %s;\n    }\n",
               kc_cu_load(e, t, "in0", "idx"));
  kc_cu_store(e, 4, t, "out0", "idx", "y");
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}
