/*
 * ir/shape_quant.c - shape functions of the quantization ops (ONNX QuantizeLinear,
 * DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearMatMul; kernc's fused int8
 * matmul, matmul_q8), and kc_quant_mode, the one place that decides how a scale (and zero
 * point) maps onto x's elements.
 *
 * Quantized integers are int8, uint8, int16 and uint16 (int32 too as DequantizeLinear's input);
 * float8 and int4/int2 types do not exist in kernc, so the frontend refuses them by dtype.
 * A scale is per tensor (one element), per axis (1-D, x's dim `axis` long) or blocked (x's
 * rank, x's dims except dim `axis`, which is ceil(x's / block_size)); a zero point has its
 * scale's shape. The matmuls take 2-D or batched operands (batch dims broadcast); their zero
 * points and scales are per tensor, per row of a ([M]) or per column of b ([N]).
 */
#include "shape.h"

static bool is_qint(kc_dtype t) { return t == KC_I8 || t == KC_U8 || t == KC_I16 || t == KC_U16; }

static bool is_q8(kc_dtype t) { return t == KC_I8 || t == KC_U8; }

kc_quant_mode kc_quant_mode_of(const kc_graph *g, const kc_node *n, int *axis) {
  const kc_value *x = kc_value_of(g, n->in[0]);
  int64_t a = kc_node_int(n, "axis", 1);
  *axis = (int)(a < 0 ? a + x->rank : a);
  if (kc_value_numel(g, n->in[1]) == 1) return KC_QUANT_TENSOR;
  return kc_node_int(n, "block_size", 0) > 0 ? KC_QUANT_BLOCKED : KC_QUANT_AXIS;
}

/* The scale (input 1) and zero point (input 2, if any) against x (input 0). */
static kc_status check_params(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_need_float(g, n, 1);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]), *sc = kc_value_of(g, n->in[1]);
  const kc_value *zp = kc_shp_in(g, n, 2);
  if (zp) {
    if (zp->rank != sc->rank)
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "the zero point has rank %d, the scale %d",
                            zp->rank, sc->rank);
    for (int k = 0; k < sc->rank; k++)
      if (!kc_shp_dims_match(g, zp->dims[k], sc->dims[k]))
        return kc_node_errorf(g, n, KC_ERR_SHAPE,
                              "the zero point's dim %d differs from the scale's", k);
  }
  int64_t block = kc_node_int(n, "block_size", 0);
  if (block < 0) return kc_node_errorf(g, n, KC_ERR_SHAPE, "block_size %lld < 0", (long long)block);
  int axis;
  kc_quant_mode m = kc_quant_mode_of(g, n, &axis);
  if (m == KC_QUANT_TENSOR) return KC_OK;
  if (x->rank == 0)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "a scalar input needs a one-element scale");
  if ((s = kc_shp_axis(g, n, "axis", kc_node_int(n, "axis", 1), x->rank, &axis)) != KC_OK) return s;
  if (m == KC_QUANT_AXIS) {
    if (sc->rank != 1)
      return kc_node_errorf(g, n, KC_ERR_SHAPE,
                            "a per-axis scale must be 1-D (rank %d; blocked needs block_size)",
                            sc->rank);
    if (!kc_shp_dims_match(g, sc->dims[0], x->dims[axis]))
      return kc_node_errorf(g, n, KC_ERR_SHAPE, "the scale's length differs from dim %d of input 0",
                            axis);
    return KC_OK;
  }
  if (sc->rank != x->rank)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "a blocked scale has rank %d, input 0 %d", sc->rank,
                          x->rank);
  for (int k = 0; k < x->rank; k++) {
    int64_t xv, sv;
    if (k != axis) {
      if (!kc_shp_dims_match(g, sc->dims[k], x->dims[k]))
        return kc_node_errorf(g, n, KC_ERR_SHAPE,
                              "the blocked scale's dim %d differs from input 0's", k);
    } else if (kc_dim_const(g, x->dims[k], &xv) && kc_dim_const(g, sc->dims[k], &sv) &&
               sv != (xv + block - 1) / block) {
      return kc_node_errorf(g, n, KC_ERR_SHAPE,
                            "the blocked scale's dim %d is %lld, expected ceil(%lld / %lld)", k,
                            (long long)sv, (long long)xv, (long long)block);
    }
  }
  return KC_OK;
}

kc_status shape_quantize_linear(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  if (s == KC_OK) s = check_params(g, n);
  if (s != KC_OK) return s;
  /* precision (opset 23) is the dtype of x / scale: kernc divides in f32 */
  const kc_attr *pr = kc_node_attr(n, "precision");
  if (pr && pr->u.t != KC_F32)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "precision %s (kernc divides in f32)",
                          kc_dtype_name(pr->u.t));
  const kc_value *zp = kc_shp_in(g, n, 2);
  const kc_attr *od = kc_node_attr(n, "output_dtype");
  kc_dtype t = zp ? zp->dtype : od ? od->u.t : KC_U8;
  if (zp && od && od->u.t != zp->dtype)
    return kc_node_errorf(g, n, KC_ERR_TYPE, "output_dtype %s differs from the zero point's %s",
                          kc_dtype_name(od->u.t), kc_dtype_name(zp->dtype));
  if (!is_qint(t))
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                          "quantizes to %s; kernc quantizes to int8, uint8, int16, uint16",
                          kc_dtype_name(t));
  const kc_value *x = kc_value_of(g, n->in[0]);
  kc_shp_set(g, n, 0, t, x->rank, x->dims);
  return KC_OK;
}

kc_status shape_dequantize_linear(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  if (!is_qint(x->dtype) && x->dtype != KC_I32)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                          "dequantizes %s; kernc dequantizes int8, uint8, int16, uint16, int32",
                          kc_dtype_name(x->dtype));
  if (kc_shp_in(g, n, 2) && (s = kc_shp_same_dtype(g, n, 0, 2)) != KC_OK) return s;
  if ((s = check_params(g, n)) != KC_OK) return s;
  const kc_attr *od = kc_node_attr(n, "output_dtype");
  kc_dtype t = od ? od->u.t : kc_value_of(g, n->in[1])->dtype;
  if (!kc_dtype_is_float(t))
    return kc_node_errorf(g, n, KC_ERR_TYPE, "output_dtype %s is not a float type",
                          kc_dtype_name(t));
  kc_shp_set(g, n, 0, t, x->rank, x->dims);
  return KC_OK;
}

kc_status shape_dynamic_quantize_linear(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  kc_shp_set(g, n, 0, KC_U8, x->rank, x->dims);
  kc_shp_set(g, n, 1, x->dtype, 0, NULL);
  kc_shp_set(g, n, 2, KC_U8, 0, NULL);
  return KC_OK;
}

/* A matmul operand's scale or zero point (input i): one element, or 1-D of length len. */
static kc_status check_vec(kc_graph *g, kc_node *n, uint32_t i, kc_dim len, const char *what) {
  const kc_value *v = kc_shp_in(g, n, i);
  if (!v || kc_value_numel(g, n->in[i]) == 1) return KC_OK;
  if (v->rank != 1 || !kc_shp_dims_match(g, v->dims[0], len))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "input %u must have one element or be 1-D [%s]", i,
                          what);
  return KC_OK;
}

/* a (input ia) @ b (input ib), both int8/uint8 of rank >= 2, batch dims broadcast. */
static kc_status qmatmul_dims(kc_graph *g, kc_node *n, uint32_t ia, uint32_t ib, int *rank,
                              kc_dim *dims) {
  const kc_value *a = kc_value_of(g, n->in[ia]), *b = kc_value_of(g, n->in[ib]);
  if (!is_q8(a->dtype) || !is_q8(b->dtype))
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "operands %s and %s; kernc takes int8/uint8",
                          kc_dtype_name(a->dtype), kc_dtype_name(b->dtype));
  if (a->rank < 2 || b->rank < 2)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "1-D operands are not supported (ranks %d, %d)",
                          a->rank, b->rank);
  if (!kc_shp_dims_match(g, a->dims[a->rank - 1], b->dims[b->rank - 2]))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "inner dims differ");
  kc_status s = kc_shp_bcast(g, n, a->rank - 2, a->dims, b->rank - 2, b->dims, rank, dims);
  if (s != KC_OK) return s;
  dims[(*rank)++] = a->dims[a->rank - 2];
  dims[(*rank)++] = b->dims[b->rank - 1];
  return KC_OK;
}

kc_status shape_matmul_integer(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = qmatmul_dims(g, n, 0, 1, &rank, dims);
  if (s == KC_OK && kc_shp_in(g, n, 2)) s = kc_shp_same_dtype(g, n, 0, 2);
  if (s == KC_OK && kc_shp_in(g, n, 3)) s = kc_shp_same_dtype(g, n, 1, 3);
  if (s == KC_OK) s = check_vec(g, n, 2, dims[rank - 2], "M");
  if (s == KC_OK) s = check_vec(g, n, 3, dims[rank - 1], "N");
  if (s != KC_OK) return s;
  kc_shp_set(g, n, 0, KC_I32, rank, dims);
  return KC_OK;
}

/* qlinear_matmul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp) */
kc_status shape_qlinear_matmul(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = qmatmul_dims(g, n, 0, 3, &rank, dims);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 1);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 1, 4);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 1, 6);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 0, 2);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 3, 5);
  if (s == KC_OK) s = check_vec(g, n, 1, dims[rank - 2], "M");
  if (s == KC_OK) s = check_vec(g, n, 2, dims[rank - 2], "M");
  if (s == KC_OK) s = check_vec(g, n, 4, dims[rank - 1], "N");
  if (s == KC_OK) s = check_vec(g, n, 5, dims[rank - 1], "N");
  if (s != KC_OK) return s;
  const kc_value *yzp = kc_value_of(g, n->in[7]);
  if (kc_value_numel(g, n->in[6]) != 1 || kc_value_numel(g, n->in[7]) != 1)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "y_scale and y_zero_point must have one element");
  if (!is_q8(yzp->dtype))
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "output %s; kernc gives int8/uint8",
                          kc_dtype_name(yzp->dtype));
  kc_shp_set(g, n, 0, yzp->dtype, rank, dims);
  return KC_OK;
}

/* matmul_q8(a, w, wsum, scale, a_zp?, bias?) (ir/ops.def): a [..., M, K] int8/uint8, w int8
 * [ceil(K/4), N, 4], wsum i32 [N], scale f32 (one element or [N]), bias f32 [N] -> f32. */
kc_status shape_matmul_q8(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 1, KC_I8);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 1, 3, 3);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 2, KC_I32);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 2, 1, 1);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 3, KC_F32);
  if (s == KC_OK && kc_shp_in(g, n, 4)) s = kc_shp_same_dtype(g, n, 0, 4);
  if (s == KC_OK && kc_shp_in(g, n, 5)) s = kc_shp_need_dtype(g, n, 5, KC_F32);
  if (s != KC_OK) return s;
  const kc_value *a = kc_value_of(g, n->in[0]), *w = kc_value_of(g, n->in[1]);
  if (!is_q8(a->dtype) || a->rank < 2)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "a is %s of rank %d; int8/uint8, rank >= 2",
                          kc_dtype_name(a->dtype), a->rank);
  kc_dim k = a->dims[a->rank - 1], nn = w->dims[1];
  if (w->dims[2] != 4) return kc_node_errorf(g, n, KC_ERR_SHAPE, "w's last dim must be 4");
  if (!KC_DIM_IS_SYM(k) && !KC_DIM_IS_SYM(w->dims[0]) && w->dims[0] != (k + 3) / 4)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "w has %lld groups of 4 for K = %lld",
                          (long long)w->dims[0], (long long)k);
  if (!kc_shp_dims_match(g, kc_value_of(g, n->in[2])->dims[0], nn))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "wsum's length differs from N");
  if ((s = check_vec(g, n, 3, nn, "N")) != KC_OK) return s;
  if (kc_shp_in(g, n, 4) && kc_value_numel(g, n->in[4]) != 1)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "a_zp must have one element");
  const kc_value *bias = kc_shp_in(g, n, 5);
  if (bias && (bias->rank != 1 || !kc_shp_dims_match(g, bias->dims[0], nn)))
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "bias must be 1-D [N]");
  kc_dim dims[KC_MAX_RANK];
  for (int i = 0; i + 1 < a->rank; i++)
    dims[i] = a->dims[i];
  dims[a->rank - 1] = nn;
  kc_shp_set(g, n, 0, KC_F32, a->rank, dims);
  return KC_OK;
}
