/*
 * frontend/onnx_vision.c - ONNX Conv, ConvInteger, QLinearConv, ConvTranspose, MaxPool,
 * AveragePool, GlobalAveragePool, GlobalMaxPool, BatchNormalization (inference) and
 * InstanceNormalization as builder compositions at import: every piece (gather, where, matmul,
 * reduce, elementwise) already has a CPU and a CUDA kernel, so these ops need no kernel family
 * of their own.
 *
 * Sliding windows are an im2col by gather: x [N, C, D1..Dn] is viewed as [N, C, D1*..*Dn] and
 * gathered along its last axis with an i64 table [K, P] (K = the kernel's taps, P = the output
 * positions) computed here from the attributes, giving patches [N, C, K, P]; when a tap falls
 * in the padding, x gets one more column [N, C, IN + 1] holding the op's pad value (0 for conv
 * and average, x's zero point for the integer convs, the dtype's lowest for max), which such
 * taps read: the padding costs a copy of x, not a pass over the K times larger patches.
 *   Conv:          W [M, C/G, k..] -> [G, M/G, C/G*K]; patches -> [N, G, C/G*K, P]; one
 *                  batched matmul (the packed matmul core) gives [N, G, M/G, P] -> [N, M, O..].
 *                  Windows that tile the input (stride = kernel, no padding, dilation 1, one
 *                  group: a ViT's patch embedding) take no table: the patches are a reshape
 *                  and a transpose of x, multiplied as gemm(patches, W) {transB} (patch_conv).
 *   ConvInteger / QLinearConv: the same im2col (taps in the padding read x's zero point) with
 *                  matmul_integer / qlinear_matmul for the matmul; w's per-channel scale and
 *                  zero point are per-row operands (one group only). QLinearConv's int32 bias
 *                  goes between matmul_integer and a quantize_linear of the rescaled sums.
 *   ConvTranspose: the same with the transposed window (output o reads input i where
 *                  i * s = o + pad - k * d) and W [C, M/G, k..] regrouped to [G, M/G, C/G*K].
 *   MaxPool / AveragePool: reduce_max / reduce_sum over K; the average divides by a per-position
 *                  count table [P] (count_include_pad counts taps inside the padded extent).
 *                  MaxPool's Indices: the first tap equal to the maximum, mapped through the
 *                  table to a flat index into x (row- or column-major by storage_order).
 * Invariants: spatial dims (and the channel dims the weight fixes) must be known at import,
 * since the tables are built here; N may be symbolic. Output sizes, auto_pad and ceil_mode
 * follow onnx.reference (including its ceil_mode rule that a window starting in the right
 * padding is dropped, and the extra padding it splits before and after). Tables of more than
 * 64 elements are weights (printed by reference), the rest constants.
 * Not done: training-mode BatchNormalization (KC_ERR_UNSUPPORTED).
 */
#include "onnx_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAXSP 3 /* 1-D to 3-D windows */

/* One sliding window over n spatial dims; pb is the begin padding actually applied. */
typedef struct win {
  int n;
  int64_t in[MAXSP], k[MAXSP], s[MAXSP], d[MAXSP], pb[MAXSP], pe[MAXSP], out[MAXSP];
  int64_t hi[MAXSP]; /* taps at coordinates >= hi lie past the padded extent (averages) */
  int64_t K, P, IN;  /* products of k, out, in */
} win;

/* ints attribute name into v (count n), or def in every entry when absent. */
static kc_status ints_attr(onnx_imp *im, const Onnx__NodeProto *np, const char *name, int n,
                           int64_t def, int64_t *v) {
  const Onnx__AttributeProto *a = kc_onnx_attr(np, name);
  for (int i = 0; i < n; i++)
    v[i] = def;
  if (!a) return KC_OK;
  if ((int)a->n_ints != n)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "attribute '%s' has %zu values, expected %d", name,
                     a->n_ints, n);
  memcpy(v, a->ints, (size_t)n * sizeof *v);
  return KC_OK;
}

/* auto_pad: 0 NOTSET, 1 VALID, 2 SAME_UPPER, 3 SAME_LOWER; -1 unknown. */
static int auto_pad(const Onnx__NodeProto *np) {
  const Onnx__AttributeProto *a = kc_onnx_attr(np, "auto_pad");
  if (!a || !a->s.len) return 0;
  static const char *const names[] = {"NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"};
  for (int i = 0; i < 4; i++)
    if (a->s.len == strlen(names[i]) && memcmp(a->s.data, names[i], a->s.len) == 0) return i;
  return -1;
}

/* A static dim of v, or -1. */
static int64_t static_dim(onnx_imp *im, kc_val v, int i) {
  int64_t d;
  return kc_dim_const(im->g, kc_value_of(im->g, v)->dims[i], &d) ? d : -1;
}

/*
 * The spatial part of the window of x (rank n + 2): in, kernel (from `kernel_shape`, else
 * kshape), strides, dilations; pads and out follow auto_pad / pads / ceil_mode (forward
 * windows; ConvTranspose fixes its own pads and out afterwards).
 */
static kc_status window(onnx_imp *im, const Onnx__NodeProto *np, kc_val x, const int64_t *kshape,
                        bool ceil_ok, bool fwd, win *w) {
  const kc_value *xv = kc_value_of(im->g, x);
  memset(w, 0, sizeof *w);
  w->n = xv->rank - 2;
  if (w->n < 1 || w->n > MAXSP)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "input of rank %d (1-D to 3-D windows only)",
                     xv->rank);
  int n = w->n;
  for (int i = 0; i < n; i++)
    if ((w->in[i] = static_dim(im, x, 2 + i)) < 0)
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "spatial dim %d is not known at import", i);
  kc_status s;
  const Onnx__AttributeProto *ka = kc_onnx_attr(np, "kernel_shape");
  if (ka || !kshape) {
    if (!ka) return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs 'kernel_shape'");
    if ((s = ints_attr(im, np, "kernel_shape", n, 1, w->k)) != KC_OK) return s;
  } else {
    memcpy(w->k, kshape, (size_t)n * sizeof *w->k);
  }
  int64_t pads[2 * MAXSP];
  if ((s = ints_attr(im, np, "strides", n, 1, w->s)) != KC_OK ||
      (s = ints_attr(im, np, "dilations", n, 1, w->d)) != KC_OK ||
      (s = ints_attr(im, np, "pads", 2 * n, 0, pads)) != KC_OK)
    return s;
  int ap = auto_pad(np);
  if (ap < 0) return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "unknown auto_pad");
  for (int i = 0; i < n; i++)
    if (w->k[i] < 1 || w->s[i] < 1 || w->d[i] < 1)
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "kernel, strides and dilations must be positive");
  if (!fwd) return KC_OK;
  bool ceil = ceil_ok && kc_onnx_attr_int(np, "ceil_mode", 0) != 0;
  w->K = w->P = w->IN = 1;
  for (int i = 0; i < n; i++) {
    int64_t ek = (w->k[i] - 1) * w->d[i] + 1, in = w->in[i];
    if (ap >= 2) {
      w->out[i] = (in + w->s[i] - 1) / w->s[i];
      int64_t total = (w->out[i] - 1) * w->s[i] + ek - in;
      if (total < 0) total = 0;
      w->pb[i] = ap == 2 ? total / 2 : total - total / 2;
      w->pe[i] = total - w->pb[i];
    } else if (ap == 1) {
      w->out[i] = in >= ek ? (in - ek) / w->s[i] + 1 : 0;
    } else {
      w->pb[i] = pads[i];
      w->pe[i] = pads[n + i];
      int64_t span = in + w->pb[i] + w->pe[i] - ek;
      if (span < 0) {
        w->out[i] = 0;
      } else if (ceil) {
        w->out[i] = (span + w->s[i] - 1) / w->s[i] + 1;
        if ((w->out[i] - 1) * w->s[i] >= in + w->pb[i]) w->out[i]--;
      } else {
        w->out[i] = span / w->s[i] + 1;
      }
    }
    /* the padded extent; ceil_mode's windows past it take extra padding, half before
       (onnx.reference's rule), which shifts the windows */
    w->hi[i] = in + w->pe[i];
    int64_t extra = (w->out[i] - 1) * w->s[i] + ek - (in + w->pb[i] + w->pe[i]);
    if (extra > 0) {
      w->hi[i] = in + w->pe[i] - extra / 2;
      w->pb[i] += extra / 2;
    }
    if (w->out[i] < 1)
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "spatial dim %d gives no output positions", i);
    w->K *= w->k[i];
    w->P *= w->out[i];
    w->IN *= in;
  }
  return KC_OK;
}

/* A table as a constant (small) or a weight named after np's first output and what. */
static kc_val table(onnx_imp *im, const Onnx__NodeProto *np, const char *what, kc_dtype t, int rank,
                    const int64_t *dims, void *data, kc_status *st) {
  int64_t numel = 1;
  for (int i = 0; i < rank; i++)
    numel *= dims[i];
  if (numel <= 64) return kc_onnx_const(im, t, rank, dims, data, st);
  const char *out = np->n_output && np->output[0] ? np->output[0] : "";
  size_t len = strlen(out) + strlen(what) + 2;
  char *name = kc_arena_alloc(&im->g->arena, len);
  if (!name) {
    *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    return (kc_val){0};
  }
  snprintf(name, len, "%s.%s", out, what);
  onnx_tensor tt = {
      .dtype = t, .rank = rank, .data = data, .nbytes = (size_t)numel * kc_dtype_size(t)};
  memcpy(tt.dims, dims, (size_t)rank * sizeof *dims);
  return kc_onnx_weight(im, name, &tt, st);
}

/*
 * patches [N, C, K, P] of x over window w, taps in the padding set to pad (a scalar of x's
 * dtype). transposed: ConvTranspose's window (output o reads input c / s where c = o + pb - k
 * d, when s divides c). counts (P entries, may be NULL) receives each position's tap count,
 * inside the padded extent (incl) or inside the input. table_out (may be NULL) receives the
 * gather's [K, P] table of row-major spatial indices (arena memory).
 */
static kc_val patches(onnx_imp *im, const Onnx__NodeProto *np, kc_val x, const win *w,
                      bool transposed, kc_val pad, float *counts, bool incl,
                      const int64_t **table_out, kc_status *st) {
  kc_graph *g = im->g;
  if (w->K > (INT64_C(1) << 28) / w->P) { /* 2 GiB of indices: not a table to build here */
    *st = kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "window table of %lld x %lld entries",
                    (long long)w->K, (long long)w->P);
    return (kc_val){0};
  }
  size_t cells = (size_t)(w->K * w->P);
  int64_t *idx = kc_arena_alloc(&g->arena, cells * sizeof *idx);
  if (!idx) {
    *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    return (kc_val){0};
  }
  if (counts) memset(counts, 0, (size_t)w->P * sizeof *counts);
  bool masked = false;
  int n = w->n;
  for (int64_t kk = 0; kk < w->K; kk++) {
    int64_t kc[MAXSP], r = kk;
    for (int i = n - 1; i >= 0; i--) {
      kc[i] = r % w->k[i];
      r /= w->k[i];
    }
    for (int64_t p = 0; p < w->P; p++) {
      int64_t o[MAXSP], q = p, flat = 0;
      for (int i = n - 1; i >= 0; i--) {
        o[i] = q % w->out[i];
        q /= w->out[i];
      }
      bool valid = true, inside = true;
      for (int i = 0; i < n; i++) {
        int64_t c;
        if (transposed) {
          c = o[i] + w->pb[i] - kc[i] * w->d[i];
          if (c < 0 || c % w->s[i] != 0) {
            valid = false;
            continue;
          }
          c /= w->s[i];
        } else {
          c = o[i] * w->s[i] - w->pb[i] + kc[i] * w->d[i];
          if (c >= w->hi[i]) inside = false;
        }
        if (c < 0 || c >= w->in[i])
          valid = false;
        else
          flat = flat * w->in[i] + c;
        if (!valid) flat = 0;
      }
      if (!valid) flat = w->IN; /* the pad column appended to x below */
      size_t cell = (size_t)(kk * w->P + p);
      idx[cell] = flat;
      masked |= !valid;
      if (counts && (incl ? inside : valid)) counts[p] += 1;
    }
  }
  if (table_out) *table_out = idx;
  int64_t dims[2] = {w->K, w->P}, flat3[3] = {0, 0, -1}, zero = 0, two = 2, one = 1;
  kc_val iv = table(im, np, "im2col", KC_I64, 2, dims, idx, st);
  if (*st != KC_OK) return (kc_val){0};
  kc_val xf = kc_reshape(g, x, kc_const_i64s(g, 3, flat3));
  if (masked) { /* x [N, C, IN] -> [N, C, IN + 1] with pad in the last column, which the taps
                   in the padding read: no mask pass over the patches */
    kc_val nc1[2] = {kc_slice(g, kc_shape(g, x), kc_const_i64s(g, 1, &zero),
                              kc_const_i64s(g, 1, &two), (kc_val){0}, (kc_val){0}),
                     kc_const_i64s(g, 1, &one)};
    kc_val parts[2] = {xf, kc_expand(g, pad, kc_concat(g, 2, nc1, 0))};
    xf = kc_concat(g, 2, parts, 2);
  }
  return kc_gather(g, xf, iv, 2);
}

/* y [N, C', P] or with more leading dims -> [N, c, out...] */
static kc_val unflatten(kc_graph *g, kc_val y, int64_t c, const win *w) {
  int64_t shape[2 + MAXSP] = {0, c};
  for (int i = 0; i < w->n; i++)
    shape[2 + i] = w->out[i];
  return kc_reshape(g, y, kc_const_i64s(g, 2 + w->n, shape));
}

/* [C] -> [C, 1, .., 1] for x of rank r, so that it broadcasts over channels. */
static kc_val per_channel(kc_graph *g, kc_val v, int r) {
  int64_t axes[KC_MAX_RANK];
  for (int i = 0; i < r - 2; i++)
    axes[i] = i + 1;
  return r > 2 ? kc_unsqueeze(g, v, r - 2, axes) : v;
}

/*
 * How a conv multiplies: op KC_OP_MATMUL (float), KC_OP_MATMUL_INTEGER (ConvInteger: int32
 * result) or KC_OP_QLINEAR_MATMUL (QLinearConv); the quantization operands as ONNX names them
 * ({0} when absent or not used by op).
 */
typedef struct conv_q {
  kc_op op;
  kc_val x_scale, x_zp, w_scale, w_zp, y_scale, y_zp;
} conv_q;

/* wg @ p with q's product; wg's rows are the output channels, so w's per-channel scale and zero
 * point ([M]) are per-row operands and x's per-tensor ones per-column. */
static kc_val product(onnx_imp *im, const conv_q *q, kc_op op, kc_val wg, kc_val p) {
  kc_status st = KC_OK;
  kc_val y = {0};
  if (op == KC_OP_MATMUL) return kc_matmul(im->g, wg, p);
  if (op == KC_OP_MATMUL_INTEGER) {
    kc_val in[4] = {wg, p, q->w_zp, q->x_zp};
    y = kc_onnx_emit1(im, op, 4, in, &st);
  } else {
    kc_val in[8] = {wg, q->w_scale, q->w_zp, p, q->x_scale, q->x_zp, q->y_scale, q->y_zp};
    y = kc_onnx_emit1(im, op, 8, in, &st);
  }
  if (st != KC_OK) kc_graph_fail(im->g, st);
  return y;
}

/*
 * group-major weight wg [G, M/G, Cg*K] (or [M, Cg*K] when G == 1) times patches -> [N, M, O..],
 * plus bias [M]. QLinearConv with a bias (int32, added to the integer sums before they are
 * scaled) multiplies with matmul_integer, adds it, then requantizes:
 * quantize_linear((sum + B) * x_scale * w_scale, y_scale, y_zero_point).
 */
static kc_val conv_matmul(onnx_imp *im, const conv_q *q, kc_val wg, kc_val pt, kc_val bias,
                          int64_t G, int64_t M, int64_t Cg, const win *w) {
  kc_graph *g = im->g;
  bool requant = q->op == KC_OP_QLINEAR_MATMUL && bias.id;
  kc_op op = requant ? KC_OP_MATMUL_INTEGER : q->op;
  kc_val y;
  if (G == 1) {
    int64_t ps[3] = {0, Cg * w->K, w->P};
    y = product(im, q, op, wg, kc_reshape(g, pt, kc_const_i64s(g, 3, ps)));
  } else {
    int64_t ps[4] = {0, G, Cg * w->K, w->P}, ys[3] = {0, M, w->P};
    y = product(im, q, op, wg, kc_reshape(g, pt, kc_const_i64s(g, 4, ps)));
    y = kc_reshape(g, y, kc_const_i64s(g, 3, ys));
  }
  int64_t one = 1, col[2] = {-1, 1};
  if (bias.id) y = kc_add(g, y, kc_unsqueeze(g, bias, 1, &one));
  if (requant) {
    kc_val ws = kc_reshape(g, q->w_scale, kc_const_i64s(g, 2, col)), st;
    kc_val v =
        kc_mul(g, kc_cast(g, y, kc_value_of(g, q->x_scale)->dtype), kc_mul(g, q->x_scale, ws));
    kc_status s = KC_OK;
    kc_val in[3] = {v, q->y_scale, q->y_zp};
    st = kc_onnx_emit1(im, KC_OP_QUANTIZE_LINEAR, q->y_zp.id ? 3 : 2, in, &s);
    if (s != KC_OK) kc_graph_fail(g, s);
    y = st;
  }
  return unflatten(g, y, M, w);
}

/* What Conv and ConvTranspose share: X, W (static dims), B, the group and the window. */
typedef struct conv {
  kc_val x, wt, b;
  int64_t w0, w1; /* W's dims 0 and 1: M and C/G (Conv), C and M/G (ConvTranspose) */
  int64_t G;
  win w; /* transposed: strides, dilations and kernel only */
} conv;

/* iw, ib: the input indices of W and B (ib < 0: none); X is input 0. */
static kc_status conv_head(onnx_imp *im, const Onnx__NodeProto *np, bool transposed, int iw, int ib,
                           conv *c) {
  c->x = kc_onnx_input(im, np, 0);
  c->wt = kc_onnx_input(im, np, (size_t)iw);
  c->b = ib >= 0 ? kc_onnx_input(im, np, (size_t)ib) : (kc_val){0};
  if (!c->x.id || !c->wt.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs X and W");
  int r = kc_value_of(im->g, c->x)->rank;
  if (kc_value_of(im->g, c->wt)->rank != r)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "W must have X's rank %d", r);
  int64_t ks[MAXSP] = {0};
  for (int i = 0; i < r; i++) {
    int64_t d = static_dim(im, c->wt, i);
    if (d < 0)
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "W's dim %d is not known at import", i);
    if (i >= 2 && i - 2 < MAXSP) ks[i - 2] = d;
  }
  c->w0 = static_dim(im, c->wt, 0);
  c->w1 = static_dim(im, c->wt, 1);
  c->G = kc_onnx_attr_int(np, "group", 1);
  kc_status s = window(im, np, c->x, ks, false, !transposed, &c->w);
  if (s != KC_OK) return s;
  for (int i = 0; i < c->w.n; i++)
    if (c->w.k[i] != ks[i])
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "kernel_shape does not match W");
  if (c->G < 1 || c->w0 % c->G != 0)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "group %lld does not divide %s = %lld", (long long)c->G,
                     transposed ? "C" : "M", (long long)c->w0);
  return KC_OK;
}

/*
 * A Conv whose windows tile the input (stride = kernel, no padding, dilation 1, one group), as
 * a ViT's patch embedding: the im2col is a view, x [N, C, o1 k1, ..] -> [N, C, o1, k1, ..] ->
 * [N, o1, .., C, k1, ..] -> patches [N*P, C*K] (one transpose, no index table), and the product
 * is gemm(patches, W [M, C*K], B) {transB}: activations times the weight, the packed core's
 * fast orientation (W @ patches, the general path's, measured 1.3x slower at 1 thread and 2.4x
 * at 2 for ViT-S's 196 x 384 x 768), with W read transposed in place (fuse-epilogue makes a
 * transposed copy at compile time when W is a weight). The result [N, P, M] is transposed to
 * [N, M, o..], which cancels against the flatten + transpose a ViT applies next. {0} when the
 * form does not apply.
 */
static kc_val patch_conv(onnx_imp *im, const conv *c, int64_t C) {
  kc_graph *g = im->g;
  const win *w = &c->w;
  if (c->G != 1 || C < 0) return (kc_val){0};
  bool crop = false;
  for (int i = 0; i < w->n; i++) {
    if (w->s[i] != w->k[i] || w->d[i] != 1 || w->pb[i] || w->pe[i]) return (kc_val){0};
    crop |= w->out[i] * w->k[i] != w->in[i];
  }
  int n = w->n, r6 = 2 + 2 * n;
  int64_t M = c->w0, CK = C * w->K, split[KC_MAX_RANK] = {0, C}, perm[KC_MAX_RANK] = {0};
  for (int i = 0; i < n; i++) {
    split[2 + 2 * i] = w->out[i];
    split[3 + 2 * i] = w->k[i];
    perm[1 + i] = 2 + 2 * i;
    perm[1 + n + 1 + i] = 3 + 2 * i;
  }
  perm[1 + n] = 1;
  kc_val x = c->x;
  if (crop) {
    int64_t zero[MAXSP] = {0}, ends[MAXSP], axes[MAXSP];
    for (int i = 0; i < n; i++) {
      ends[i] = w->out[i] * w->k[i];
      axes[i] = 2 + i;
    }
    x = kc_slice(g, x, kc_const_i64s(g, n, zero), kc_const_i64s(g, n, ends),
                 kc_const_i64s(g, n, axes), (kc_val){0});
  }
  int64_t rows[2] = {-1, CK}, wshape[2] = {M, CK}, tokens[3] = {-1, w->P, M}, back[3] = {0, 2, 1};
  x = kc_transpose(g, kc_reshape(g, x, kc_const_i64s(g, r6, split)), r6, perm);
  kc_val y = kc_gemm(g, kc_reshape(g, x, kc_const_i64s(g, 2, rows)),
                     kc_reshape(g, c->wt, kc_const_i64s(g, 2, wshape)), c->b, 1, 1, 0, 1);
  y = kc_reshape(g, y, kc_const_i64s(g, 3, tokens));
  return unflatten(g, kc_transpose(g, y, 3, back), M, w);
}

/* Conv, ConvInteger and QLinearConv (q says which). */
static kc_status import_conv(onnx_imp *im, const Onnx__NodeProto *np, conv_q *q) {
  kc_graph *g = im->g;
  uint32_t first = g->nnodes;
  bool qlinear = q->op == KC_OP_QLINEAR_MATMUL, integer = q->op == KC_OP_MATMUL_INTEGER;
  conv c;
  kc_status s = conv_head(im, np, false, qlinear ? 3 : 1, qlinear ? 8 : integer ? -1 : 2, &c);
  if (s != KC_OK) return s;
  int64_t M = c.w0, Cg = c.w1, G = c.G, C = static_dim(im, c.x, 1);
  if (C >= 0 && C != Cg * G)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "X has %lld channels, W and group say %lld",
                     (long long)C, (long long)(Cg * G));
  kc_val y = q->op == KC_OP_MATMUL ? patch_conv(im, &c, C) : (kc_val){0};
  if (y.id) return kc_onnx_finish(im, np, first, y);
  if (G > 1 && ((q->w_zp.id && kc_value_numel(g, q->w_zp) != 1) ||
                (q->w_scale.id && kc_value_numel(g, q->w_scale) != 1)))
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "per-channel weight quantization with group %lld",
                     (long long)G);
  /* taps in the padding read x's zero point: they add nothing once it is subtracted */
  kc_val pad = q->x_zp;
  if (!pad.id) pad = kc_onnx_const_scalar(im, kc_value_of(g, c.x)->dtype, 0, &s);
  if (s != KC_OK) return s;
  kc_val pt = patches(im, np, c.x, &c.w, false, pad, NULL, false, NULL, &s);
  if (s != KC_OK) return s;
  int64_t ws3[3] = {G, M / G, Cg * c.w.K};
  kc_val wg = kc_reshape(g, c.wt, kc_const_i64s(g, G == 1 ? 2 : 3, G == 1 ? ws3 + 1 : ws3));
  return kc_onnx_finish(im, np, first, conv_matmul(im, q, wg, pt, c.b, G, M, Cg, &c.w));
}

kc_status kc_onnx_import_conv(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  conv_q q = {.op = KC_OP_MATMUL};
  return import_conv(im, np, &q);
}

/* ConvInteger(x, w, x_zero_point?, w_zero_point?) -> int32 */
kc_status kc_onnx_import_conv_integer(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  conv_q q = {.op = KC_OP_MATMUL_INTEGER,
              .x_zp = kc_onnx_input(im, np, 2),
              .w_zp = kc_onnx_input(im, np, 3)};
  return import_conv(im, np, &q);
}

/* QLinearConv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B?) */
kc_status kc_onnx_import_qlinear_conv(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  conv_q q = {.op = KC_OP_QLINEAR_MATMUL};
  kc_val *in[6] = {NULL, &q.x_scale, &q.x_zp, NULL, &q.w_scale, &q.w_zp};
  for (size_t i = 0; i < 6; i++)
    if (in[i] && !(*in[i] = kc_onnx_input(im, np, i)).id)
      return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs input %zu", i);
  if (!(q.y_scale = kc_onnx_input(im, np, 6)).id || !(q.y_zp = kc_onnx_input(im, np, 7)).id)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs y_scale and y_zero_point");
  return import_conv(im, np, &q);
}

kc_status kc_onnx_import_conv_transpose(onnx_imp *im, const Onnx__NodeProto *np,
                                        const onnx_op *row) {
  (void)row;
  kc_graph *g = im->g;
  uint32_t first = g->nnodes;
  conv c;
  kc_status s = conv_head(im, np, true, 1, 2, &c);
  if (s != KC_OK) return s;
  int64_t C = c.w0, Mg = c.w1, G = c.G;
  win w = c.w; /* strides, dilations, kernel; pads and out are the transposed ones below */
  int n = w.n;
  int64_t op[MAXSP], pads[2 * MAXSP], oshape[MAXSP];
  if ((s = ints_attr(im, np, "output_padding", n, 0, op)) != KC_OK ||
      (s = ints_attr(im, np, "pads", 2 * n, 0, pads)) != KC_OK)
    return s;
  const Onnx__AttributeProto *osa = kc_onnx_attr(np, "output_shape");
  if (osa && (int)osa->n_ints != n && (int)osa->n_ints != n + 2)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "output_shape has %zu values", osa->n_ints);
  int ap = auto_pad(np);
  bool same = ap >= 2 && !kc_onnx_attr(np, "pads");
  w.K = w.P = w.IN = 1;
  for (int i = 0; i < n; i++) {
    int64_t ek = (w.k[i] - 1) * w.d[i] + 1, full = w.s[i] * (w.in[i] - 1) + op[i] + ek;
    if (osa) oshape[i] = osa->ints[osa->n_ints - (size_t)n + (size_t)i];
    if (same) {
      int64_t out = osa ? oshape[i] : w.in[i] * w.s[i], total = full - out;
      w.pb[i] = ap == 2 ? total / 2 : total - total / 2;
      w.pe[i] = total - w.pb[i];
      w.out[i] = out;
    } else {
      w.pb[i] = ap == 1 ? 0 : pads[i];
      w.pe[i] = ap == 1 ? 0 : pads[n + i];
      w.out[i] = osa ? oshape[i] : full - w.pb[i] - w.pe[i];
    }
    if (w.out[i] < 1)
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "spatial dim %d gives no output positions", i);
    w.K *= w.k[i];
    w.P *= w.out[i];
    w.IN *= w.in[i];
  }
  kc_val zero = kc_onnx_const_scalar(im, kc_value_of(g, c.x)->dtype, 0, &s);
  if (s != KC_OK) return s;
  kc_val pt = patches(im, np, c.x, &w, true, zero, NULL, false, NULL, &s);
  if (s != KC_OK) return s;
  /* W [C, Mg, k..] = [G, Cg, Mg, K] -> [G, Mg, Cg, K] -> [G, Mg, Cg*K] */
  conv_q flt = {.op = KC_OP_MATMUL};
  int64_t Cg = C / G, w4[4] = {G, Cg, Mg, w.K}, perm[4] = {0, 2, 1, 3}, w3[3] = {G, Mg, Cg * w.K};
  kc_val wg = kc_transpose(g, kc_reshape(g, c.wt, kc_const_i64s(g, 4, w4)), 4, perm);
  wg = kc_reshape(g, wg, kc_const_i64s(g, G == 1 ? 2 : 3, G == 1 ? w3 + 1 : w3));
  return kc_onnx_finish(im, np, first, conv_matmul(im, &flt, wg, pt, c.b, G, Mg * G, Cg, &w));
}

/* The lowest value of dtype t (max pooling's padding). */
static double lowest(kc_dtype t) {
  switch (t) {
  case KC_I8: return -128;
  case KC_I16: return -32768;
  case KC_I32: return -2147483648.0;
  case KC_I64: return -9223372036854775808.0;
  case KC_U8:
  case KC_U16:
  case KC_U32:
  case KC_U64: return 0;
  default: return -INFINITY;
  }
}

/*
 * MaxPool's Indices [N, C, P]: the first tap holding the window's maximum (the largest K - k
 * among the taps equal to it), as a flat index into x: (n C + c) * IN plus the tap's spatial
 * index, row-major, or column-major (first spatial dim fastest) with storage_order 1.
 */
static kc_val argmax_indices(onnx_imp *im, const Onnx__NodeProto *np, kc_val x, const win *w,
                             kc_val pt, const int64_t *cells, kc_status *st) {
  kc_graph *g = im->g;
  int64_t K = w->K, P = w->P, KP = K * P, two = 2;
  bool colmajor = kc_onnx_attr_int(np, "storage_order", 0) != 0;
  int64_t *sp = kc_arena_alloc(&g->arena, (size_t)KP * sizeof *sp);
  int64_t *rank = kc_arena_alloc(&g->arena, (size_t)K * sizeof *rank);
  int64_t *pos = kc_arena_alloc(&g->arena, (size_t)P * sizeof *pos);
  if (!sp || !rank || !pos) {
    *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    return (kc_val){0};
  }
  for (int64_t c = 0; c < KP; c++) {
    int64_t f = cells[c] == w->IN ? 0 : cells[c], co[MAXSP], o = 0; /* a tap in the padding */
    for (int i = w->n - 1; i >= 0; i--) {
      co[i] = f % w->in[i];
      f /= w->in[i];
    }
    for (int i = w->n - 1; i >= 0; i--)
      o = o * w->in[i] + co[i];
    sp[c] = colmajor ? o : cells[c] == w->IN ? 0 : cells[c];
  }
  for (int64_t k = 0; k < K; k++)
    rank[k] = K - k;
  for (int64_t p = 0; p < P; p++)
    pos[p] = p;
  int64_t kdims[2] = {K, 1};
  kc_val spv = table(im, np, "argmax_index", KC_I64, 1, &KP, sp, st);
  kc_val rv = *st == KC_OK ? table(im, np, "argmax_rank", KC_I64, 2, kdims, rank, st) : spv;
  kc_val pv = *st == KC_OK ? table(im, np, "argmax_pos", KC_I64, 1, &P, pos, st) : spv;
  if (*st != KC_OK) return (kc_val){0};
  kc_val mx = kc_reduce_max(g, pt, 1, &two, 1);
  kc_val best = kc_where(g, kc_equal(g, pt, mx), rv, kc_const_i64(g, 0));
  best = kc_reduce_max(g, best, 1, &two, 0); /* K - k of the first maximum, [N, C, P] */
  kc_val cell = kc_add(g, kc_mul(g, kc_sub(g, kc_const_i64(g, K), best), kc_const_i64(g, P)), pv);
  kc_val ix = kc_gather(g, spv, cell, 0);
  /* (n C + c) * IN, shaped [N, C, 1] from x's own dims */
  int64_t z = 0, two1 = 2, one = 1;
  kc_val shp = kc_shape(g, x);
  kc_val nc =
      kc_mul(g, kc_gather(g, shp, kc_const_i64(g, 0), 0), kc_gather(g, shp, kc_const_i64(g, 1), 0));
  kc_val off =
      kc_mul(g, kc_range(g, kc_const_i64(g, 0), nc, kc_const_i64(g, 1)), kc_const_i64(g, w->IN));
  kc_val nc1[2] = {kc_slice(g, shp, kc_const_i64s(g, 1, &z), kc_const_i64s(g, 1, &two1),
                            (kc_val){0}, (kc_val){0}),
                   kc_const_i64s(g, 1, &one)};
  off = kc_reshape(g, off, kc_concat(g, 2, nc1, 0));
  return kc_add(g, ix, off);
}

static kc_status import_pool(onnx_imp *im, const Onnx__NodeProto *np, bool max) {
  kc_graph *g = im->g;
  uint32_t first = g->nnodes;
  kc_val x = kc_onnx_input(im, np, 0);
  if (!x.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs X");
  bool want = np->n_output > 1 && np->output[1] && np->output[1][0];
  if (want && !max) return kc_errorf(im->ctx, KC_ERR_VERIFY, "has one output");
  kc_dtype t = kc_value_of(g, x)->dtype;
  win w;
  kc_status s = window(im, np, x, NULL, true, true, &w);
  if (s != KC_OK) return s;
  kc_val pad = kc_onnx_const_scalar(im, t, max ? lowest(t) : 0, &s);
  if (s != KC_OK) return s;
  float *counts = max ? NULL : kc_arena_alloc(&g->arena, (size_t)w.P * sizeof *counts);
  if (!max && !counts) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  bool incl = kc_onnx_attr_int(np, "count_include_pad", 0) != 0;
  const int64_t *cells = NULL;
  kc_val pt = patches(im, np, x, &w, false, pad, counts, incl, &cells, &s);
  if (s != KC_OK) return s;
  int64_t two = 2;
  kc_val y;
  if (max) {
    y = kc_reduce_max(g, pt, 1, &two, 0);
    if (want) {
      kc_val ix = argmax_indices(im, np, x, &w, pt, cells, &s);
      if (s != KC_OK) return s;
      s = kc_onnx_bind(im, np, 1, unflatten(g, ix, 0, &w));
      if (s != KC_OK) return s;
    }
  } else {
    y = kc_reduce_sum(g, pt, 1, &two, 0);
    kc_val cnt = table(im, np, "pool_count", KC_F32, 1, &w.P, counts, &s);
    if (s != KC_OK) return s;
    if (t != KC_F32) cnt = kc_cast(g, cnt, t);
    y = kc_div(g, y, cnt);
  }
  return kc_onnx_finish(im, np, first, unflatten(g, y, 0, &w));
}

kc_status kc_onnx_import_max_pool(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  return import_pool(im, np, true);
}

kc_status kc_onnx_import_average_pool(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  return import_pool(im, np, false);
}

/* GlobalAveragePool / GlobalMaxPool: reduce over the spatial axes, kept as 1. */
kc_status kc_onnx_import_global_pool(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  kc_graph *g = im->g;
  uint32_t first = g->nnodes;
  kc_val x = kc_onnx_input(im, np, 0);
  if (!x.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs X");
  int r = kc_value_of(g, x)->rank;
  if (r < 3) return kc_errorf(im->ctx, KC_ERR_SHAPE, "X must have rank >= 3, got %d", r);
  int64_t axes[KC_MAX_RANK];
  for (int i = 2; i < r; i++)
    axes[i - 2] = i;
  kc_val y = row->op == KC_OP_REDUCE_MAX ? kc_reduce_max(g, x, r - 2, axes, 1)
                                         : kc_reduce_mean(g, x, r - 2, axes, 1);
  return kc_onnx_finish(im, np, first, y);
}

/* eps as a scalar of dtype t */
static kc_val eps_of(onnx_imp *im, const Onnx__NodeProto *np, kc_dtype t, kc_status *st) {
  return kc_onnx_const_scalar(im, t, kc_onnx_attr_float(np, "epsilon", 1e-5f), st);
}

/*
 * BatchNormalization, inference form: y = (x - mean) * (scale / sqrt(var + eps)) + B per
 * channel (axis 1). training_mode (14+) and the running-statistics outputs are refused.
 */
kc_status kc_onnx_import_batch_norm(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_graph *g = im->g;
  uint32_t first = g->nnodes;
  if (kc_onnx_attr_int(np, "training_mode", 0) != 0)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "training_mode is not supported");
  for (size_t i = 1; i < np->n_output; i++)
    if (np->output[i] && np->output[i][0])
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "the training outputs are not supported");
  kc_val in[5];
  for (size_t i = 0; i < 5; i++)
    if (!(in[i] = kc_onnx_input(im, np, i)).id)
      return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs X, scale, B, mean and var");
  const kc_value *xv = kc_value_of(g, in[0]);
  int r = xv->rank;
  if (r < 2) return kc_errorf(im->ctx, KC_ERR_SHAPE, "X must have rank >= 2, got %d", r);
  kc_status s;
  kc_val eps = eps_of(im, np, kc_value_of(g, in[4])->dtype, &s);
  if (s != KC_OK) return s;
  kc_val k = kc_div(g, in[1], kc_sqrt(g, kc_add(g, in[4], eps)));
  kc_val y = kc_mul(g, kc_sub(g, in[0], per_channel(g, in[3], r)), per_channel(g, k, r));
  return kc_onnx_finish(im, np, first, kc_add(g, y, per_channel(g, in[2], r)));
}

/* InstanceNormalization: per (n, c), normalize over the spatial axes; then scale and B. */
kc_status kc_onnx_import_instance_norm(onnx_imp *im, const Onnx__NodeProto *np,
                                       const onnx_op *row) {
  (void)row;
  kc_graph *g = im->g;
  uint32_t first = g->nnodes;
  kc_val x = kc_onnx_input(im, np, 0), sc = kc_onnx_input(im, np, 1), b = kc_onnx_input(im, np, 2);
  if (!x.id || !sc.id || !b.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs X, scale and B");
  int r = kc_value_of(g, x)->rank;
  if (r < 3) return kc_errorf(im->ctx, KC_ERR_SHAPE, "X must have rank >= 3, got %d", r);
  int64_t axes[KC_MAX_RANK];
  for (int i = 2; i < r; i++)
    axes[i - 2] = i;
  kc_status s;
  kc_val eps = eps_of(im, np, kc_value_of(g, x)->dtype, &s);
  if (s != KC_OK) return s;
  kc_val xc = kc_sub(g, x, kc_reduce_mean(g, x, r - 2, axes, 1));
  kc_val var = kc_reduce_mean(g, kc_mul(g, xc, xc), r - 2, axes, 1);
  kc_val y = kc_div(g, xc, kc_sqrt(g, kc_add(g, var, eps)));
  y = kc_add(g, kc_mul(g, y, per_channel(g, sc, r)), per_channel(g, b, r));
  return kc_onnx_finish(im, np, first, y);
}
