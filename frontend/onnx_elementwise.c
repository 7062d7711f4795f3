/*
 * frontend/onnx_elementwise.c - import functions of the elementwise ONNX ops that are rewrites
 * of IR ops rather than one-to-one rows: CastLike (a cast to the second input's dtype), Size
 * (the element count, a constant when the shape is static), Sum/Mean (chains of add) and Swish
 * (x * sigmoid(alpha x)).
 *
 * Invariants: as every import function (onnx_ops.c): messages are the inner part, the loader
 * names the file, node and op; nothing here looks at ONNX op names (the table does).
 */
#include "onnx_internal.h"

/* Number of non-empty names of np's inputs up to the last one. */
static uint32_t ninputs(const Onnx__NodeProto *np) {
  size_t n = np->n_input;
  while (n > 0 && (!np->input[n - 1] || !np->input[n - 1][0]))
    n--;
  return (uint32_t)n;
}

/* CastLike(x, like) {saturate} = Cast(x) {to = dtype of like, saturate}. */
kc_status kc_onnx_import_cast_like(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  kc_val x = kc_onnx_input(im, np, 0), like = kc_onnx_input(im, np, 1);
  if (ninputs(np) != 2 || !x.id || !like.id)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes exactly two inputs");
  uint32_t ni = kc_onnx_add(im, row->op, 1, &x, 1, NULL);
  if (ni == UINT32_MAX) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  static const char *const skip[] = {"round_mode", NULL};
  kc_status s = kc_onnx_copy_attrs(im, np, ni, skip);
  if (s != KC_OK) return s;
  kc_node_set_dtype(im->g, ni, "to", kc_value_of(im->g, like)->dtype);
  if ((s = kc_onnx_infer(im, ni)) != KC_OK) return s;
  return kc_onnx_bind_all(im, np, ni);
}

/*
 * Size(x): the number of elements of x as an i64 scalar. kernc's dims are known when the model
 * is imported or are symbols; only the first kind folds to a constant here (a symbolic size
 * would need a product of Shape's elements, which no IR op computes yet).
 */
kc_status kc_onnx_import_size(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_val x = kc_onnx_input(im, np, 0);
  if (ninputs(np) != 1 || !x.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes one input");
  const kc_value *v = kc_value_of(im->g, x);
  int64_t numel = 1;
  for (int i = 0; i < v->rank; i++) {
    int64_t d;
    if (!kc_dim_const(im->g, v->dims[i], &d))
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                       "the size of an input with symbolic dims is not supported");
    numel *= d;
  }
  kc_status s;
  kc_val c = kc_onnx_const(im, KC_I64, 0, NULL, &numel, &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, c);
}

/*
 * Sum(x...) and Mean(x...): variadic with numpy broadcasting, as a chain of adds (in input
 * order, as ONNX Runtime sums), Mean then divided by the count. One input is an identity.
 */
kc_status kc_onnx_import_sum_mean(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  uint32_t nin = ninputs(np);
  if (nin < 1) return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes at least one input");
  kc_status s = KC_OK;
  kc_val acc = kc_onnx_input(im, np, 0);
  if (!acc.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "required input 0 is missing");
  if (nin == 1) acc = kc_onnx_emit1(im, KC_OP_IDENTITY, 1, &acc, &s);
  for (uint32_t i = 1; i < nin && s == KC_OK; i++) {
    kc_val in[2] = {acc, kc_onnx_input(im, np, i)};
    if (!in[1].id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "input %u is missing", i);
    acc = kc_onnx_emit1(im, KC_OP_ADD, 2, in, &s);
  }
  if (s == KC_OK && row->op == KC_OP_DIV && nin > 1) {
    kc_val in[2] = {acc, kc_onnx_const_scalar(im, kc_value_of(im->g, acc)->dtype, nin, &s)};
    if (s == KC_OK) acc = kc_onnx_emit1(im, KC_OP_DIV, 2, in, &s);
  }
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, acc);
}

/* Swish(x) {alpha = 1} = x * sigmoid(alpha * x); fusion makes the three nodes one kernel. */
kc_status kc_onnx_import_swish(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_val x = kc_onnx_input(im, np, 0);
  if (ninputs(np) != 1 || !x.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes one input");
  const Onnx__AttributeProto *a = kc_onnx_attr(np, "alpha");
  if (np->n_attribute > (a ? 1u : 0u))
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "has attributes other than 'alpha'");
  kc_status s;
  kc_val ax = x;
  if (a && a->f != 1.0f) {
    kc_val in[2] = {x, kc_onnx_const_scalar(im, kc_value_of(im->g, x)->dtype, a->f, &s)};
    if (s != KC_OK) return s;
    ax = kc_onnx_emit1(im, KC_OP_MUL, 2, in, &s);
    if (s != KC_OK) return s;
  }
  kc_val in[2] = {x, kc_onnx_emit1(im, KC_OP_SIGMOID, 1, &ax, &s)};
  if (s != KC_OK) return s;
  kc_val y = kc_onnx_emit1(im, KC_OP_MUL, 2, in, &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}
