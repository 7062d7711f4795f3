/*
 * frontend/onnx_resize.c - ONNX Resize (opset 11+) as a builder composition at import: the
 * interpolation is separable, so each resized axis is one to four gathers along that axis of
 * clamped neighbour indices, weighted by per-position coefficients (onnx.reference's
 * _interpolate_1d_along_axis, vectorized). Every piece has a CPU and a CUDA kernel already.
 *
 * The indices and coefficients are computed in the graph from the scales or sizes input, so
 * these may be run-time tensors (the node tests pass them as graph inputs): for each axis,
 *   out   = sizes[i], or trunc(scales[i] * L) (L the input dim, known at import);
 *   o     = range(0, out) as f64;  x = the source coordinate of o per
 *           coordinate_transformation_mode;  xi = floor(x);  ratio = x - xi, or 1 when x is an
 *           integer (the reference's convention, which its neighbour choice relies on);
 *   taps  = n neighbours starting at xi - n/2 (+1 unless x is an integer), clamped into
 *           [0, L) (edge padding); nearest picks one of 2 by nearest_mode, linear weights 2 by
 *           (1 - ratio, ratio), cubic 4 by Keys' kernel with cubic_coeff_a (exclude_outside
 *           zeroes taps outside [0, L) and renormalizes).
 * The result's size along an axis is range's length: a size that depends on data, which the
 * runtime settles when the range runs. Coordinates are f64 (the reference computes in f64, and
 * a floor near an integer must agree); linear and cubic interpolate in f64 and cast back;
 * nearest only gathers, so any dtype works. Axes are resized even when their scale is 1 (the
 * taps then reproduce the input exactly), unless scales or sizes are known at import (constants,
 * or sizes whose contents shape inference knows) and keep an axis's size: then it is skipped,
 * and a Resize that keeps every size is its input.
 * Not done: antialias (refused as unsupported); keep_aspect_ratio_policy rounds
 * round-half-up as the reference does.
 */
#include "onnx_internal.h"

#include <string.h>

static kc_val F(kc_graph *g, double v) { return kc_constant(g, KC_F64, 0, NULL, &v); }

static kc_val I(kc_graph *g, int64_t v) { return kc_const_i64(g, v); }

/* floor of an f64 tensor (casts truncate toward zero) */
static kc_val floor64(kc_graph *g, kc_val x) {
  kc_val t = kc_cast(g, kc_cast(g, x, KC_I64), KC_F64);
  return kc_where(g, kc_less(g, x, t), kc_sub(g, t, F(g, 1)), t);
}

static kc_val or2(kc_graph *g, kc_val a, kc_val b) {
  return kc_not(g, kc_and(g, kc_not(g, a), kc_not(g, b)));
}

/* A string attribute compared with s (def when absent). */
static bool str_is(const Onnx__NodeProto *np, const char *name, const char *def, const char *s) {
  const Onnx__AttributeProto *a = kc_onnx_attr(np, name);
  if (!a) return strcmp(def, s) == 0;
  return a->s.len == strlen(s) && memcmp(a->s.data, s, a->s.len) == 0;
}

static bool str_in(const Onnx__NodeProto *np, const char *name, const char *const *ok) {
  const Onnx__AttributeProto *a = kc_onnx_attr(np, name);
  if (!a) return true;
  for (; *ok; ok++)
    if (a->s.len == strlen(*ok) && memcmp(a->s.data, *ok, a->s.len) == 0) return true;
  return false;
}

enum { NEAREST, LINEAR, CUBIC };

typedef struct rz {
  const Onnx__NodeProto *np;
  int mode, r;
  double a;     /* cubic_coeff_a */
  bool exclude; /* exclude_outside */
  kc_val extrap;
} rz;

/* [n] -> [n, 1, .., 1] so that it broadcasts along axis ai of a rank-r tensor. */
static kc_val along(kc_graph *g, kc_val v, int ai, int r) {
  int64_t axes[KC_MAX_RANK];
  int k = 0;
  for (int i = ai + 1; i < r; i++, k++)
    axes[k] = k + 1;
  return k ? kc_unsqueeze(g, v, k, axes) : v;
}

/* The source coordinate of each output position o (f64 [out]); *ext: positions to extrapolate. */
static kc_val coord(kc_graph *g, const rz *z, kc_val o, kc_val scale, kc_val out, int64_t L,
                    kc_val r0, kc_val r1, kc_val *ext) {
  const Onnx__NodeProto *np = z->np;
  const char *k = "coordinate_transformation_mode", *def = "half_pixel";
  kc_val ow = kc_mul(g, scale, F(g, (double)L)), owi = kc_cast(g, out, KC_F64);
  kc_val one = F(g, 1), lm1 = F(g, (double)(L - 1)), ow1 = kc_equal(g, ow, one);
  kc_val hp = kc_sub(g, kc_div(g, kc_add(g, o, F(g, 0.5)), scale), F(g, 0.5));
  *ext = (kc_val){0};
  if (str_is(np, k, def, "half_pixel")) return hp;
  if (str_is(np, k, def, "half_pixel_symmetric")) {
    kc_val adj = kc_div(g, owi, ow);
    return kc_add(g, kc_mul(g, F(g, (double)L / 2), kc_sub(g, one, adj)), hp);
  }
  if (str_is(np, k, def, "pytorch_half_pixel")) return kc_where(g, ow1, F(g, -0.5), hp);
  if (str_is(np, k, def, "align_corners"))
    return kc_where(g, ow1, F(g, 0), kc_div(g, kc_mul(g, o, lm1), kc_sub(g, ow, one)));
  if (str_is(np, k, def, "asymmetric")) return kc_div(g, o, scale);
  if (str_is(np, k, def, "tf_half_pixel_for_nn")) return kc_div(g, kc_add(g, o, F(g, 0.5)), scale);
  /* tf_crop_and_resize (the caller checked the mode's name) */
  kc_val d = kc_sub(g, r1, r0);
  kc_val x = kc_where(g, ow1, kc_div(g, kc_mul(g, d, lm1), F(g, 2)),
                      kc_div(g, kc_mul(g, kc_mul(g, o, d), lm1), kc_sub(g, ow, one)));
  x = kc_add(g, x, kc_mul(g, r0, lm1));
  *ext = or2(g, kc_less(g, x, F(g, 0)), kc_greater(g, x, lm1));
  return x;
}

/* Resize y along axis ai (input dim L) to out (i64 scalar) positions with scale (f64 scalar). */
static kc_val resize_axis(kc_graph *g, const rz *z, kc_val y, int ai, int64_t L, kc_val scale,
                          kc_val out, kc_val r0, kc_val r1) {
  kc_val o = kc_cast(g, kc_range(g, I(g, 0), out, I(g, 1)), KC_F64), ext;
  kc_val x = coord(g, z, o, scale, out, L, r0, r1, &ext);
  kc_val xi = floor64(g, x), isint = kc_equal(g, x, xi);
  kc_val one = F(g, 1), ratio = kc_where(g, isint, one, kc_sub(g, x, xi));
  kc_val base = kc_cast(g, xi, KC_I64), lo = I(g, 0), hi = I(g, L - 1);
  int n = z->mode == CUBIC ? 4 : 2;
  /* the first tap: n/2 before xi when x is an integer, else n/2 - 1 */
  kc_val start = kc_where(g, isint, kc_sub(g, base, I(g, n / 2)), kc_sub(g, base, I(g, n / 2 - 1)));
  kc_val res;
  if (z->mode == NEAREST) {
    const Onnx__NodeProto *np = z->np;
    const char *k = "nearest_mode", *def = "round_prefer_floor";
    kc_val pick1;
    if (str_is(np, k, def, "round_prefer_ceil"))
      pick1 = kc_not(g, kc_less(g, ratio, F(g, 0.5)));
    else if (str_is(np, k, def, "floor"))
      pick1 = isint;
    else if (str_is(np, k, def, "ceil"))
      pick1 = kc_not(g, kc_less(g, ratio, F(g, 0))); /* always */
    else
      pick1 = kc_greater(g, ratio, F(g, 0.5));
    kc_val idx = kc_where(g, pick1, kc_add(g, start, I(g, 1)), start);
    res = kc_gather(g, y, kc_min(g, kc_max(g, idx, lo), hi), ai);
  } else {
    kc_val c[4], idx[4], t = ratio, u = kc_sub(g, one, ratio);
    if (n == 2) {
      c[0] = u;
      c[1] = t;
    } else {
      double A = z->a;
      /* Keys: f(s) = ((A s - 5A) s + 8A) s - 4A for 1 <= s < 2, ((A+2) s - (A+3)) s^2 + 1 below */
      kc_val t1 = kc_add(g, t, one), u1 = kc_add(g, u, one);
      c[0] = kc_sub(g,
                    kc_mul(g,
                           kc_add(g, kc_mul(g, kc_sub(g, kc_mul(g, F(g, A), t1), F(g, 5 * A)), t1),
                                  F(g, 8 * A)),
                           t1),
                    F(g, 4 * A));
      c[1] = kc_add(
          g, kc_mul(g, kc_mul(g, kc_sub(g, kc_mul(g, F(g, A + 2), t), F(g, A + 3)), t), t), one);
      c[2] = kc_add(
          g, kc_mul(g, kc_mul(g, kc_sub(g, kc_mul(g, F(g, A + 2), u), F(g, A + 3)), u), u), one);
      c[3] = kc_sub(g,
                    kc_mul(g,
                           kc_add(g, kc_mul(g, kc_sub(g, kc_mul(g, F(g, A), u1), F(g, 5 * A)), u1),
                                  F(g, 8 * A)),
                           u1),
                    F(g, 4 * A));
    }
    for (int k = 0; k < n; k++)
      idx[k] = kc_add(g, start, I(g, k));
    if (z->exclude) {
      kc_val sum = {0};
      for (int k = 0; k < n; k++) {
        kc_val out_k = or2(g, kc_less(g, idx[k], lo), kc_greater(g, idx[k], hi));
        c[k] = kc_where(g, out_k, F(g, 0), c[k]);
        sum = sum.id ? kc_add(g, sum, c[k]) : c[k];
      }
      sum = kc_where(g, kc_equal(g, sum, F(g, 0)), one, sum);
      for (int k = 0; k < n; k++)
        c[k] = kc_div(g, c[k], sum);
    }
    res = (kc_val){0};
    for (int k = 0; k < n; k++) {
      kc_val tap = kc_gather(g, y, kc_min(g, kc_max(g, idx[k], lo), hi), ai);
      tap = kc_mul(g, tap, along(g, c[k], ai, z->r));
      res = res.id ? kc_add(g, res, tap) : tap;
    }
  }
  if (ext.id) res = kc_where(g, along(g, ext, ai, z->r), z->extrap, res);
  return res;
}

/*
 * The n values of v when it is a weight or constant whose data the graph holds (scales or sizes
 * written as initializers); false otherwise. Such sizes are settled here, at import: computed
 * in the graph they would be a data-dependent size that folding makes static only afterwards.
 */
static bool const_values(const kc_graph *g, kc_val v, int n, double *out) {
  const kc_value *vv = kc_value_of(g, v);
  if (!vv->def) return false;
  const kc_node *d = &g->nodes[vv->def - 1];
  const kc_tensor *t = NULL;
  if (d->op == KC_OP_WEIGHT) {
    const kc_attr *a = kc_node_attr(d, "name");
    if (a && a->kind == KC_ATTR_STRING) t = kc_graph_weight_data(g, a->u.s);
  } else if (d->op == KC_OP_CONSTANT) {
    const kc_attr *a = kc_node_attr(d, "value");
    if (a && a->kind == KC_ATTR_TENSOR && a->u.tensor < g->ntensors) t = &g->tensors[a->u.tensor];
  }
  if (!t) {
    /* integer contents shape inference knows (sizes computed from static dims, as exporters
     * write F.interpolate(size=(h // p, w // p))) */
    uint32_t nk;
    const kc_dim *k = kc_value_known(g, v, &nk);
    if (!k || nk != (uint32_t)n || !kc_dtype_is_int(vv->dtype)) return false;
    for (int i = 0; i < n; i++) {
      int64_t c;
      if (!kc_dim_const(g, k[i], &c)) return false;
      out[i] = (double)c;
    }
    return true;
  }
  if (!t->data || t->nbytes != (size_t)n * kc_dtype_size(t->dtype)) return false;
  for (int i = 0; i < n; i++)
    switch (t->dtype) {
    case KC_F32: out[i] = ((const float *)t->data)[i]; break;
    case KC_F64: out[i] = ((const double *)t->data)[i]; break;
    case KC_I64: out[i] = (double)((const int64_t *)t->data)[i]; break;
    case KC_I32: out[i] = ((const int32_t *)t->data)[i]; break;
    default: return false;
    }
  return true;
}

/* An optional input that is absent, or a 1-D tensor of static length 0 (opset 11's "none"). */
static kc_val present(onnx_imp *im, const Onnx__NodeProto *np, size_t i) {
  kc_val v = i < np->n_input ? kc_onnx_input(im, np, i) : (kc_val){0};
  int64_t d;
  if (v.id) {
    const kc_value *vv = kc_value_of(im->g, v);
    if (vv->rank == 1 && kc_dim_const(im->g, vv->dims[0], &d) && d == 0) return (kc_val){0};
  }
  return v;
}

kc_status kc_onnx_import_resize(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_graph *g = im->g;
  uint32_t first = g->nnodes;
  kc_val x = kc_onnx_input(im, np, 0), roi = present(im, np, 1);
  kc_val scales = present(im, np, 2), sizes = present(im, np, 3);
  if (!x.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs X");
  if (!scales.id == !sizes.id)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs exactly one of scales and sizes");
  const Onnx__AttributeProto *aa = kc_onnx_attr(np, "antialias");
  if (aa && aa->i) return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "antialias is not supported");
  static const char *const modes[] = {"nearest", "linear", "cubic", NULL};
  static const char *const ctms[] = {
      "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
      "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize", NULL};
  static const char *const nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil",
                                    NULL};
  static const char *const kars[] = {"stretch", "not_larger", "not_smaller", NULL};
  if (!str_in(np, "mode", modes) || !str_in(np, "coordinate_transformation_mode", ctms) ||
      !str_in(np, "nearest_mode", nms) || !str_in(np, "keep_aspect_ratio_policy", kars))
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "an attribute value is not supported");
  const kc_value *xv = kc_value_of(g, x);
  rz z = {.np = np, .r = xv->rank};
  z.mode = str_is(np, "mode", "nearest", "linear")  ? LINEAR
           : str_is(np, "mode", "nearest", "cubic") ? CUBIC
                                                    : NEAREST;
  const Onnx__AttributeProto *a = kc_onnx_attr(np, "cubic_coeff_a");
  z.a = a ? a->f : -0.75;
  a = kc_onnx_attr(np, "exclude_outside");
  z.exclude = a && a->i;
  bool crop = str_is(np, "coordinate_transformation_mode", "half_pixel", "tf_crop_and_resize");
  if (crop && !roi.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "tf_crop_and_resize needs roi");
  int r = z.r;
  int64_t L[KC_MAX_RANK], axes[KC_MAX_RANK];
  for (int i = 0; i < r; i++)
    if (!kc_dim_const(g, xv->dims[i], &L[i]))
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "X's dim %d is not known at import", i);
  const Onnx__AttributeProto *ax = kc_onnx_attr(np, "axes");
  int na = ax ? (int)ax->n_ints : r;
  if (na > r) return kc_errorf(im->ctx, KC_ERR_SHAPE, "more axes than X's rank %d", r);
  for (int i = 0; i < na; i++) {
    axes[i] = ax ? ax->ints[i] : i;
    if (axes[i] < -r || axes[i] >= r)
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "axis %lld out of range", (long long)axes[i]);
    if (axes[i] < 0) axes[i] += r;
  }
  kc_status s;
  kc_dtype t = xv->dtype;
  a = kc_onnx_attr(np, "extrapolation_value");
  z.extrap = kc_onnx_const_scalar(im, z.mode == NEAREST ? t : KC_F64, a ? a->f : 0, &s);
  if (s != KC_OK) return s;
  /* per listed axis: scale (f64 scalar) and out (i64 scalar) */
  kc_val scale[KC_MAX_RANK], out[KC_MAX_RANK];
  kc_val keep = {0};
  bool kar = !str_is(np, "keep_aspect_ratio_policy", "stretch", "stretch");
  bool larger = str_is(np, "keep_aspect_ratio_policy", "stretch", "not_smaller");
  double cv[KC_MAX_RANK];
  bool same[KC_MAX_RANK] = {
      false}; /* known to keep its size and scale 1: no work, as the reference */
  bool known = const_values(g, sizes.id ? sizes : scales, na, cv);
  if (known) {
    /* known at import: the reference's arithmetic, in f64 */
    double sc[KC_MAX_RANK], k = 0;
    for (int i = 0; i < na; i++) {
      double l = (double)L[axes[i]];
      sc[i] = sizes.id ? cv[i] / l : cv[i];
      if (kar && (i == 0 || (larger ? sc[i] > k : sc[i] < k))) k = sc[i];
    }
    for (int i = 0; i < na; i++) {
      double l = (double)L[axes[i]], si = kar ? k : sc[i];
      int64_t o = sizes.id && !kar ? (int64_t)cv[i] : (int64_t)(si * l + (kar ? 0.5 : 0));
      if (o < 0) return kc_errorf(im->ctx, KC_ERR_SHAPE, "output size %lld", (long long)o);
      scale[i] = F(g, si);
      out[i] = I(g, o);
      same[i] = !crop && si == 1 && o == L[axes[i]];
    }
  }
  for (int i = 0; i < na && !known; i++) {
    kc_val e = kc_gather(g, sizes.id ? sizes : scales, I(g, i), 0);
    if (sizes.id) {
      out[i] = kc_cast(g, e, KC_I64);
      scale[i] = kc_div(g, kc_cast(g, e, KC_F64), F(g, (double)L[axes[i]]));
      if (kar)
        keep = !keep.id ? scale[i] : larger ? kc_max(g, keep, scale[i]) : kc_min(g, keep, scale[i]);
    } else {
      scale[i] = kc_cast(g, e, KC_F64);
      out[i] = kc_cast(g, kc_mul(g, scale[i], F(g, (double)L[axes[i]])), KC_I64);
    }
  }
  if (kar && !known)
    for (int i = 0; i < na; i++) {
      scale[i] = keep;
      out[i] = kc_cast(g, kc_add(g, kc_mul(g, keep, F(g, (double)L[axes[i]])), F(g, 0.5)), KC_I64);
    }
  bool all_same = known;
  for (int i = 0; i < na; i++)
    all_same = all_same && same[i];
  if (all_same) return kc_onnx_finish(im, np, first, x); /* no f64 round trip either */
  kc_val y = z.mode == NEAREST || t == KC_F64 ? x : kc_cast(g, x, KC_F64);
  if (z.mode != NEAREST && !kc_dtype_is_float(t))
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "%s interpolation of %s",
                     z.mode == LINEAR ? "linear" : "cubic", kc_dtype_name(t));
  kc_val rf = crop ? kc_cast(g, roi, KC_F64) : (kc_val){0};
  for (int i = 0; i < na; i++) {
    kc_val r0 = {0}, r1 = {0};
    if (same[i]) continue;
    if (crop) {
      r0 = kc_gather(g, rf, I(g, ax ? i : axes[i]), 0);
      r1 = kc_gather(g, rf, I(g, (ax ? na : r) + (ax ? i : axes[i])), 0);
    }
    y = resize_axis(g, &z, y, (int)axes[i], L[axes[i]], scale[i], out[i], r0, r1);
  }
  if (z.mode != NEAREST && t != KC_F64) y = kc_cast(g, y, t);
  return kc_onnx_finish(im, np, first, y);
}
