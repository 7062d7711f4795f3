/*
 * frontend/onnx_ops.c - THE table from ONNX op types to IR ops, and the import functions of the
 * ops whose older opsets differ from the IR op (which follows the latest opset).
 *
 * Invariants:
 *   - This is the only place that looks at ONNX op names. A row without an import function
 *     maps inputs, outputs and attributes one to one (attributes by the IR op's schema).
 *   - Import functions rewrite older forms into the latest one: attributes that later became
 *     inputs (axes, split, starts/ends, min/max) become constant inputs; opset < 13 softmax
 *     becomes flatten -> softmax(axis=-1) -> reshape.
 *   - Opsets 24..27 changed the ops below only in the dtypes they accept (checked against the
 *     onnx 1.22 schemas), except Cast-24 round_mode (float8e8m0 only, a dtype kernc lacks),
 *     Range-27 stash_type (accumulation precision) and Attention-24 nonpad_kv_seqlen (refused
 *     when given), so rows accept every opset up to KC_ONNX_OPSET_MAX.
 */
#include "onnx_internal.h"

#include <string.h>

/* Number of entries of a name list up to the last non-empty one. */
static uint32_t trimmed(char **names, size_t n) {
  while (n > 0 && (!names[n - 1] || !names[n - 1][0]))
    n--;
  return (uint32_t)n;
}

/* Check np's input/output counts against IR op op (after rewrites added inputs). */
static kc_status check_arity(onnx_imp *im, const Onnx__NodeProto *np, kc_op op, uint32_t nin,
                             uint32_t nout) {
  const kc_op_info *info = &kc_ops[op];
  char buf[64];
  if ((int)nin < info->min_in || (info->max_in >= 0 && (int)nin > info->max_in))
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "has %u input%s; %s takes %s", nin,
                     nin == 1 ? "" : "s", np->op_type,
                     kc_arity_text(info->min_in, info->max_in, buf, sizeof buf));
  if (nout < 1 || (int)nout < info->min_out || (info->max_out >= 0 && (int)nout > info->max_out))
    return kc_errorf(
        im->ctx, KC_ERR_VERIFY, "has %u output%s; %s gives %s", nout, nout == 1 ? "" : "s",
        np->op_type,
        kc_arity_text(info->min_out > 1 ? info->min_out : 1, info->max_out, buf, sizeof buf));
  return KC_OK;
}

/*
 * The one-to-one mapping: op(in...) with np's attributes minus skip. extra (nextra values)
 * become the inputs from position at (attributes rewritten into inputs). The node is made and
 * its attributes set; the caller may add more before finish() infers it.
 */
typedef struct emit_spec {
  kc_op op;
  const char *const *skip;
  uint32_t at, nextra;
  const kc_val *extra;
} emit_spec;

static kc_status emit_node(onnx_imp *im, const Onnx__NodeProto *np, const emit_spec *sp,
                           uint32_t *node) {
  uint32_t nin = trimmed(np->input, np->n_input), nout = trimmed(np->output, np->n_output);
  if (sp->nextra) {
    /* the rewritten attributes take the places of inputs the old form did not have */
    if (nin > sp->at)
      return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes %u input%s at opset %lld", sp->at,
                       sp->at == 1 ? "" : "s", (long long)im->opset);
    nin = sp->at + sp->nextra;
  }
  kc_status s = check_arity(im, np, sp->op, nin, nout);
  if (s != KC_OK) return s;
  kc_val in[16];
  if (nin > 16) return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "has %u inputs (at most 16)", nin);
  for (uint32_t i = 0; i < nin; i++) {
    in[i] =
        i >= sp->at && i < sp->at + sp->nextra ? sp->extra[i - sp->at] : kc_onnx_input(im, np, i);
    if (!in[i].id && (int)i < kc_ops[sp->op].min_in)
      return kc_errorf(im->ctx, KC_ERR_VERIFY, "required input %u is missing", i);
  }
  kc_val outs[16];
  if (nout > 16) return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "has %u outputs (at most 16)", nout);
  uint32_t ni = kc_onnx_add(im, sp->op, nin, in, nout, outs);
  if (ni == UINT32_MAX) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  s = kc_onnx_copy_attrs(im, np, ni, sp->skip);
  if (s != KC_OK) return s;
  *node = ni;
  return KC_OK;
}

/* Infer node ni and bind np's outputs to its outputs. */
static kc_status finish(onnx_imp *im, const Onnx__NodeProto *np, uint32_t ni) {
  kc_status s = kc_onnx_infer(im, ni);
  return s != KC_OK ? s : kc_onnx_bind_all(im, np, ni);
}

static kc_status import_generic(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  emit_spec sp = {.op = row->op};
  uint32_t ni;
  kc_status s = emit_node(im, np, &sp, &ni);
  return s != KC_OK ? s : finish(im, np, ni);
}

/* An ints attribute as a 1-D i64 constant; *v = {0} when the attribute is absent. */
static kc_status ints_input(onnx_imp *im, const Onnx__NodeProto *np, const char *name, kc_val *v) {
  *v = (kc_val){0};
  const Onnx__AttributeProto *a = kc_onnx_attr(np, name);
  if (!a) return KC_OK;
  if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS)
    return kc_errorf(im->ctx, KC_ERR_PARSE, "attribute '%s' should be a list of ints", name);
  kc_status s;
  *v = kc_onnx_const_i64s(im, (uint32_t)a->n_ints, a->ints, &s);
  return s;
}

/*
 * Squeeze/Unsqueeze/ReduceSum before 13, ReduceMean/Max/Min/Prod before 18: `axes` was an
 * attribute; it is the second input now. An absent axes attribute stays an absent input.
 */
static kc_status import_axes(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  if (im->opset >= row->newer) return import_generic(im, np, row);
  if (trimmed(np->input, np->n_input) != 1)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes one input at opset %lld", (long long)im->opset);
  kc_val axes;
  kc_status s = ints_input(im, np, "axes", &axes);
  if (s != KC_OK) return s;
  static const char *const skip[] = {"axes", NULL};
  emit_spec sp = {.op = row->op, .skip = skip, .at = 1, .nextra = axes.id ? 1 : 0, .extra = &axes};
  uint32_t ni;
  s = emit_node(im, np, &sp, &ni);
  return s != KC_OK ? s : finish(im, np, ni);
}

/* TopK before 10: k was an attribute; it is the second input (a one-element i64 tensor) now. */
static kc_status import_topk(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  if (im->opset >= row->newer) return import_generic(im, np, row);
  const Onnx__AttributeProto *a = kc_onnx_attr(np, "k");
  if (!a || trimmed(np->input, np->n_input) != 1)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes one input and 'k' at opset %lld",
                     (long long)im->opset);
  kc_status s;
  kc_val k = kc_onnx_const_i64s(im, 1, &a->i, &s);
  if (s != KC_OK) return s;
  static const char *const skip[] = {"k", NULL};
  emit_spec sp = {.op = row->op, .skip = skip, .at = 1, .nextra = 1, .extra = &k};
  uint32_t ni;
  s = emit_node(im, np, &sp, &ni);
  return s != KC_OK ? s : finish(im, np, ni);
}

/* Slice before 10: starts, ends and axes were attributes. */
static kc_status import_slice(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  if (im->opset >= row->newer) return import_generic(im, np, row);
  kc_val extra[3];
  kc_status s;
  static const char *const names[] = {"starts", "ends", "axes"};
  for (int i = 0; i < 3; i++)
    if ((s = ints_input(im, np, names[i], &extra[i])) != KC_OK) return s;
  if (!extra[0].id || !extra[1].id)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs 'starts' and 'ends' at opset %lld",
                     (long long)im->opset);
  static const char *const skip[] = {"starts", "ends", "axes", NULL};
  emit_spec sp = {
      .op = row->op, .skip = skip, .at = 1, .nextra = extra[2].id ? 3 : 2, .extra = extra};
  uint32_t ni;
  s = emit_node(im, np, &sp, &ni);
  return s != KC_OK ? s : finish(im, np, ni);
}

/*
 * Split: `split` sizes were an attribute before 13; before 18 no sizes meant equal parts, one
 * per output, which the IR spells num_outputs.
 */
static kc_status import_split(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  kc_val sizes = {0};
  kc_status s;
  bool old = im->opset < 13;
  if (old && (s = ints_input(im, np, "split", &sizes)) != KC_OK) return s;
  static const char *const skip[] = {"split", NULL};
  emit_spec sp = {.op = row->op,
                  .skip = old ? skip : NULL,
                  .at = 1,
                  .nextra = sizes.id ? 1 : 0,
                  .extra = &sizes};
  if (old && trimmed(np->input, np->n_input) > 1)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes one input at opset %lld", (long long)im->opset);
  uint32_t ni;
  if ((s = emit_node(im, np, &sp, &ni)) != KC_OK) return s;
  kc_node *n = &im->g->nodes[ni];
  if (im->opset < row->newer && !(n->nin > 1 && n->in[1].id))
    kc_node_set_int(im->g, ni, "num_outputs", n->nout);
  return finish(im, np, ni);
}

/* Clip before 11: min/max were float attributes; they become scalars of x's dtype. */
static kc_status import_clip(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  if (im->opset >= row->newer) return import_generic(im, np, row);
  kc_val x = kc_onnx_input(im, np, 0);
  if (!x.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "required input 0 is missing");
  kc_dtype t = kc_value_of(im->g, x)->dtype;
  kc_val b[2] = {{0}, {0}};
  static const char *const names[] = {"min", "max"};
  for (int i = 0; i < 2; i++) {
    const Onnx__AttributeProto *a = kc_onnx_attr(np, names[i]);
    if (!a) continue;
    kc_status s;
    b[i] = kc_onnx_const_scalar(im, t, a->f, &s);
    if (s != KC_OK) return s;
  }
  static const char *const skip[] = {"min", "max", NULL};
  emit_spec sp = {.op = row->op,
                  .skip = skip,
                  .at = 1,
                  .nextra = b[1].id   ? 2
                            : b[0].id ? 1
                                      : 0,
                  .extra = b};
  uint32_t ni;
  kc_status s = emit_node(im, np, &sp, &ni);
  return s != KC_OK ? s : finish(im, np, ni);
}

/*
 * Softmax/LogSoftmax before 13: the input is coerced to 2-D at `axis` (default 1) and
 * normalized over the flattened tail: flatten(x, axis) -> softmax(axis=-1) -> reshape to
 * shape(x). When axis is already the last one this is plain softmax(axis=-1).
 */
static kc_status import_softmax(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  if (im->opset >= row->newer) return import_generic(im, np, row);
  kc_val x = kc_onnx_input(im, np, 0);
  if (!x.id || trimmed(np->input, np->n_input) != 1)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes exactly one input");
  int rank = kc_value_of(im->g, x)->rank;
  const Onnx__AttributeProto *a = kc_onnx_attr(np, "axis");
  int64_t axis = a ? a->i : 1;
  if (axis < -rank || axis > rank - (rank > 0))
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "axis %lld is out of range for rank %d",
                     (long long)axis, rank);
  if (axis < 0) axis += rank;
  kc_status s;
  kc_val y;
  if (axis >= rank - 1) {
    y = kc_onnx_emit1(im, row->op, 1, &x, &s);
  } else {
    uint32_t ni = kc_onnx_add(im, KC_OP_FLATTEN, 1, &x, 1, NULL);
    if (ni == UINT32_MAX) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    kc_node_set_int(im->g, ni, "axis", axis);
    if ((s = kc_onnx_infer(im, ni)) != KC_OK) return s;
    kc_val flat = im->g->nodes[ni].out[0];
    kc_val sm = kc_onnx_emit1(im, row->op, 1, &flat, &s);
    if (s != KC_OK) return s;
    kc_val shape = kc_onnx_emit1(im, KC_OP_SHAPE, 1, &x, &s);
    if (s != KC_OK) return s;
    kc_val rin[2] = {sm, shape};
    y = kc_onnx_emit1(im, KC_OP_RESHAPE, 2, rin, &s);
  }
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/*
 * Dropout: before 12 the ratio was an attribute (irrelevant at inference); before 10 the mask
 * had x's dtype, so the IR's bool mask is cast back.
 */
static kc_status import_dropout(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  if (im->opset >= row->newer) return import_generic(im, np, row);
  static const char *const skip[] = {"ratio", NULL};
  emit_spec sp = {.op = row->op, .skip = skip};
  uint32_t ni;
  kc_status s = emit_node(im, np, &sp, &ni);
  if (s == KC_OK) s = kc_onnx_infer(im, ni);
  if (s != KC_OK) return s;
  kc_val y = im->g->nodes[ni].out[0];
  if ((s = kc_onnx_bind(im, np, 0, y)) != KC_OK || im->g->nodes[ni].nout < 2) return s;
  kc_val mask = im->g->nodes[ni].out[1];
  kc_dtype t = kc_value_of(im->g, y)->dtype;
  if (im->opset < 10 && kc_value_of(im->g, mask)->dtype != t) {
    uint32_t ci = kc_onnx_add(im, KC_OP_CAST, 1, &mask, 1, NULL);
    if (ci == UINT32_MAX) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    kc_node_set_dtype(im->g, ci, "to", t);
    if ((s = kc_onnx_infer(im, ci)) != KC_OK) return s;
    mask = im->g->nodes[ci].out[0];
  }
  return kc_onnx_bind(im, np, 1, mask);
}

/* Cast: round_mode (24) only concerns float8e8m0, a dtype kernc does not have. */
static kc_status import_cast(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  static const char *const skip[] = {"round_mode", NULL};
  emit_spec sp = {.op = row->op, .skip = skip};
  uint32_t ni;
  kc_status s = emit_node(im, np, &sp, &ni);
  return s != KC_OK ? s : finish(im, np, ni);
}

/* Range: stash_type (27) is the accumulation precision, not part of the result's type. */
static kc_status import_range(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  static const char *const skip[] = {"stash_type", NULL};
  emit_spec sp = {.op = row->op, .skip = skip};
  uint32_t ni;
  kc_status s = emit_node(im, np, &sp, &ni);
  return s != KC_OK ? s : finish(im, np, ni);
}

/* Constant: small tensors become IR constants, the rest named weights (printed by name). */
#define KC_ONNX_CONST_MAX 64
static kc_status import_constant(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  if (np->n_input != 0 || trimmed(np->output, np->n_output) != 1 || np->n_attribute != 1 ||
      !np->attribute[0] || !np->attribute[0]->name)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs no inputs, one output and one attribute");
  const Onnx__AttributeProto *a = np->attribute[0];
  const char *an = a->name;
  onnx_tensor t = {0};
  kc_status s = KC_OK;
  if (strcmp(an, "value") == 0) {
    if (!a->t) return kc_errorf(im->ctx, KC_ERR_PARSE, "attribute 'value' holds no tensor");
    s = kc_onnx_tensor_decode(im->ctx, &im->g->arena, a->t, im->dir, "attribute 'value'", &t);
  } else if (strcmp(an, "value_float") == 0 || strcmp(an, "value_int") == 0) {
    bool f = an[6] == 'f';
    t.dtype = f ? KC_F32 : KC_I64;
    void *p = kc_arena_alloc(&im->g->arena, 8);
    if (!p) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    if (f)
      *(float *)p = a->f;
    else
      *(int64_t *)p = a->i;
    t.data = p;
  } else if (strcmp(an, "value_floats") == 0 || strcmp(an, "value_ints") == 0) {
    bool f = an[6] == 'f';
    t.dtype = f ? KC_F32 : KC_I64;
    t.rank = 1;
    t.dims[0] = f ? (int64_t)a->n_floats : (int64_t)a->n_ints;
    t.data = f ? (const void *)a->floats : (const void *)a->ints;
    if (!t.data) t.data = kc_arena_alloc(&im->g->arena, 8); /* empty list */
    if (!t.data) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  } else {
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "attribute '%s' is not supported", an);
  }
  if (s != KC_OK) return s;
  int64_t numel = 1;
  for (int i = 0; i < t.rank; i++)
    numel *= t.dims[i];
  kc_val v;
  if (numel <= KC_ONNX_CONST_MAX)
    v = kc_onnx_const(im, t.dtype, t.rank, t.dims, t.data, &s);
  else
    v = kc_onnx_weight(im, np->output[0], &t, &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, v);
}

/* The table. newer: the opset where the rewritten older form ends (0: none). */
static const onnx_op table[] = {
    {"Abs", KC_OP_ABS, 7, 0, NULL},
    {"Acos", KC_OP_ACOS, 7, 0, NULL},
    {"Acosh", KC_OP_ACOSH, 9, 0, NULL},
    {"Add", KC_OP_ADD, 7, 0, NULL},
    {"And", KC_OP_AND, 7, 0, NULL},
    {"ArgMax", KC_OP_REDUCE_MAX, 7, 0, kc_onnx_import_arg}, /* onnx_reduce_index.c */
    {"ArgMin", KC_OP_REDUCE_MIN, 7, 0, kc_onnx_import_arg},
    {"Asin", KC_OP_ASIN, 7, 0, NULL},
    {"Asinh", KC_OP_ASINH, 9, 0, NULL},
    {"Atan", KC_OP_ATAN, 7, 0, NULL},
    {"Atanh", KC_OP_ATANH, 9, 0, NULL},
    {"Attention", KC_OP_ATTENTION, 23, 0, kc_onnx_import_attention},
    {"AveragePool", KC_OP_NOP, 7, 0, kc_onnx_import_average_pool}, /* onnx_vision.c */
    {"BatchNormalization", KC_OP_NOP, 7, 0, kc_onnx_import_batch_norm},
    {"BitShift", KC_OP_BIT_SHIFT, 11, 0, NULL},
    {"BitwiseAnd", KC_OP_BITWISE_AND, 18, 0, NULL},
    {"BitwiseNot", KC_OP_BITWISE_NOT, 18, 0, NULL},
    {"BitwiseOr", KC_OP_BITWISE_OR, 18, 0, NULL},
    {"BitwiseXor", KC_OP_BITWISE_XOR, 18, 0, NULL},
    {"Cast", KC_OP_CAST, 7, 0, import_cast},
    {"CastLike", KC_OP_CAST, 15, 0, kc_onnx_import_cast_like},
    {"Ceil", KC_OP_CEIL, 7, 0, NULL},
    {"Celu", KC_OP_CELU, 12, 0, NULL},
    {"Clip", KC_OP_CLIP, 7, 11, import_clip},
    {"Concat", KC_OP_CONCAT, 7, 0, NULL},
    {"Constant", KC_OP_CONSTANT, 7, 0, import_constant},
    {"ConstantOfShape", KC_OP_CONSTANT_OF_SHAPE, 9, 0, NULL},
    {"Conv", KC_OP_NOP, 7, 0, kc_onnx_import_conv},
    {"ConvTranspose", KC_OP_NOP, 7, 0, kc_onnx_import_conv_transpose},
    {"ConvInteger", KC_OP_NOP, 10, 0, kc_onnx_import_conv_integer},
    {"Cos", KC_OP_COS, 7, 0, NULL},
    {"Cosh", KC_OP_COSH, 9, 0, NULL},
    {"CumProd", KC_OP_CUMPROD, 26, 0, NULL},
    {"CumSum", KC_OP_CUMSUM, 11, 0, NULL},
    {"DepthToSpace", KC_OP_RESHAPE, 7, 0, kc_onnx_import_space_depth},
    {"DequantizeLinear", KC_OP_DEQUANTIZE_LINEAR, 10, 0, NULL},
    {"Div", KC_OP_DIV, 7, 0, NULL},
    {"Dropout", KC_OP_DROPOUT, 7, 12, import_dropout},
    {"DynamicQuantizeLinear", KC_OP_DYNAMIC_QUANTIZE_LINEAR, 11, 0, NULL},
    {"Einsum", KC_OP_MUL, 12, 0, kc_onnx_import_einsum},
    {"Elu", KC_OP_ELU, 7, 0, NULL},
    {"Equal", KC_OP_EQUAL, 7, 0, NULL},
    {"Erf", KC_OP_ERF, 9, 0, NULL},
    {"Exp", KC_OP_EXP, 7, 0, NULL},
    {"Expand", KC_OP_EXPAND, 8, 0, NULL},
    {"EyeLike", KC_OP_CAST, 9, 0, kc_onnx_import_eye_like},
    {"Flatten", KC_OP_FLATTEN, 7, 0, NULL},
    {"Floor", KC_OP_FLOOR, 7, 0, NULL},
    {"Gather", KC_OP_GATHER, 7, 0, NULL},
    {"GatherElements", KC_OP_GATHER, 11, 0, kc_onnx_import_gather_elements},
    {"GatherND", KC_OP_GATHER, 11, 0, kc_onnx_import_gather_nd},
    {"Gelu", KC_OP_GELU, 20, 0, NULL},
    {"Gemm", KC_OP_GEMM, 7, 0, NULL},
    {"GlobalAveragePool", KC_OP_REDUCE_MEAN, 7, 0, kc_onnx_import_global_pool},
    {"GlobalMaxPool", KC_OP_REDUCE_MAX, 7, 0, kc_onnx_import_global_pool},
    {"Greater", KC_OP_GREATER, 7, 0, NULL},
    {"GreaterOrEqual", KC_OP_GREATER_EQUAL, 12, 0, NULL},
    {"HardSigmoid", KC_OP_HARD_SIGMOID, 7, 0, NULL},
    {"HardSwish", KC_OP_HARD_SWISH, 14, 0, NULL},
    {"Hardmax", KC_OP_REDUCE_MAX, 7, 13, kc_onnx_import_hardmax},
    {"Identity", KC_OP_IDENTITY, 7, 0, NULL},
    {"InstanceNormalization", KC_OP_NOP, 7, 0, kc_onnx_import_instance_norm},
    {"IsInf", KC_OP_IS_INF, 10, 0, NULL},
    {"IsNaN", KC_OP_IS_NAN, 9, 0, NULL},
    {"LayerNormalization", KC_OP_LAYER_NORMALIZATION, 17, 0, NULL},
    {"LeakyRelu", KC_OP_LEAKY_RELU, 7, 0, NULL},
    {"Less", KC_OP_LESS, 7, 0, NULL},
    {"LessOrEqual", KC_OP_LESS_EQUAL, 12, 0, NULL},
    {"Log", KC_OP_LOG, 7, 0, NULL},
    {"LogSoftmax", KC_OP_LOG_SOFTMAX, 7, 13, import_softmax},
    {"LpNormalization", KC_OP_DIV, 7, 0, kc_onnx_import_lp_norm},
    {"MatMul", KC_OP_MATMUL, 7, 0, NULL},
    {"MatMulInteger", KC_OP_MATMUL_INTEGER, 10, 0, NULL},
    {"Max", KC_OP_MAX, 7, 0, NULL},
    {"MaxPool", KC_OP_NOP, 7, 0, kc_onnx_import_max_pool},
    {"Mean", KC_OP_DIV, 7, 0, kc_onnx_import_sum_mean},
    {"Min", KC_OP_MIN, 7, 0, NULL},
    {"Mish", KC_OP_MISH, 18, 0, NULL},
    {"Mod", KC_OP_MOD, 10, 0, NULL},
    {"Mul", KC_OP_MUL, 7, 0, NULL},
    {"Neg", KC_OP_NEG, 7, 0, NULL},
    {"NegativeLogLikelihoodLoss", KC_OP_NOP, 12, 0, kc_onnx_import_nll_loss}, /* onnx_loss.c */
    {"Not", KC_OP_NOT, 7, 0, NULL},
    {"OneHot", KC_OP_WHERE, 9, 0, kc_onnx_import_one_hot},
    {"Or", KC_OP_OR, 7, 0, NULL},
    {"PRelu", KC_OP_PRELU, 7, 0, NULL},
    {"Pad", KC_OP_GATHER, 7, 11, kc_onnx_import_pad},
    {"Pow", KC_OP_POW, 7, 0, NULL},
    {"QLinearConv", KC_OP_NOP, 10, 0, kc_onnx_import_qlinear_conv},
    {"QLinearMatMul", KC_OP_QLINEAR_MATMUL, 10, 0, NULL},
    {"QuantizeLinear", KC_OP_QUANTIZE_LINEAR, 10, 0, NULL},
    {"RMSNormalization", KC_OP_RMS_NORMALIZATION, 23, 0, NULL},
    {"Range", KC_OP_RANGE, 11, 0, import_range},
    {"Reciprocal", KC_OP_RECIPROCAL, 7, 0, NULL},
    {"ReduceL1", KC_OP_REDUCE_SUM, 7, 18, kc_onnx_import_reduce_l1},
    {"ReduceL2", KC_OP_REDUCE_SUM, 7, 18, kc_onnx_import_reduce_l2},
    {"ReduceLogSum", KC_OP_REDUCE_SUM, 7, 18, kc_onnx_import_reduce_log_sum},
    {"ReduceLogSumExp", KC_OP_REDUCE_SUM, 7, 18, kc_onnx_import_reduce_log_sum_exp},
    {"ReduceMax", KC_OP_REDUCE_MAX, 7, 18, import_axes},
    {"ReduceMean", KC_OP_REDUCE_MEAN, 7, 18, import_axes},
    {"ReduceMin", KC_OP_REDUCE_MIN, 7, 18, import_axes},
    {"ReduceProd", KC_OP_REDUCE_PROD, 7, 18, import_axes},
    {"ReduceSum", KC_OP_REDUCE_SUM, 7, 13, import_axes},
    {"ReduceSumSquare", KC_OP_REDUCE_SUM, 7, 18, kc_onnx_import_reduce_sum_square},
    {"Relu", KC_OP_RELU, 7, 0, NULL},
    {"Reshape", KC_OP_RESHAPE, 7, 0, NULL},
    {"Resize", KC_OP_NOP, 11, 0, kc_onnx_import_resize}, /* onnx_resize.c */
    {"RotaryEmbedding", KC_OP_ROTARY, 23, 0, NULL},
    {"Round", KC_OP_ROUND, 11, 0, NULL},
    {"Scatter", KC_OP_SCATTER_ADD, 9, 0, kc_onnx_import_scatter_elements},
    {"ScatterElements", KC_OP_SCATTER_ADD, 11, 0, kc_onnx_import_scatter_elements},
    {"ScatterND", KC_OP_SCATTER_ADD, 11, 0, kc_onnx_import_scatter_nd},
    {"Selu", KC_OP_SELU, 7, 0, NULL},
    {"Shape", KC_OP_SHAPE, 7, 0, NULL},
    {"Shrink", KC_OP_SHRINK, 9, 0, NULL},
    {"Sigmoid", KC_OP_SIGMOID, 7, 0, NULL},
    {"Sign", KC_OP_SIGN, 9, 0, NULL},
    {"Sin", KC_OP_SIN, 7, 0, NULL},
    {"Sinh", KC_OP_SINH, 9, 0, NULL},
    {"Size", KC_OP_NOP, 7, 0, kc_onnx_import_size},
    {"Slice", KC_OP_SLICE, 7, 10, import_slice},
    {"Softmax", KC_OP_SOFTMAX, 7, 13, import_softmax},
    {"SoftmaxCrossEntropyLoss", KC_OP_NOP, 12, 0, kc_onnx_import_sce_loss}, /* onnx_loss.c */
    {"Softplus", KC_OP_SOFTPLUS, 7, 0, NULL},
    {"Softsign", KC_OP_SOFTSIGN, 7, 0, NULL},
    {"SpaceToDepth", KC_OP_TRANSPOSE, 7, 0, kc_onnx_import_space_depth},
    {"Split", KC_OP_SPLIT, 7, 18, import_split},
    {"Sqrt", KC_OP_SQRT, 7, 0, NULL},
    {"Squeeze", KC_OP_SQUEEZE, 7, 13, import_axes},
    {"Sub", KC_OP_SUB, 7, 0, NULL},
    {"Sum", KC_OP_ADD, 7, 0, kc_onnx_import_sum_mean},
    {"Swish", KC_OP_NOP, 24, 0, kc_onnx_import_swish},
    {"Tan", KC_OP_TAN, 7, 0, NULL},
    {"Tanh", KC_OP_TANH, 7, 0, NULL},
    {"ThresholdedRelu", KC_OP_THRESHOLDED_RELU, 10, 0, NULL},
    {"Tile", KC_OP_NOP, 6, 0, kc_onnx_import_tile}, /* onnx_reduce_index.c */
    {"TopK", KC_OP_TOPK, 1, 10, import_topk},
    {"Transpose", KC_OP_TRANSPOSE, 7, 0, NULL},
    {"Trilu", KC_OP_TRILU, 14, 0, NULL},
    {"Unsqueeze", KC_OP_UNSQUEEZE, 7, 13, import_axes},
    {"Where", KC_OP_WHERE, 9, 0, NULL},
    {"Xor", KC_OP_XOR, 7, 0, NULL},
};

const onnx_op *kc_onnx_op_find(const char *op_type) {
  if (!op_type) return NULL;
  for (size_t i = 0; i < sizeof table / sizeof *table; i++)
    if (strcmp(table[i].type, op_type) == 0) return &table[i];
  return NULL;
}

kc_status kc_onnx_import_node(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  /* a named input whose producer gave no value (an output the IR op does not have) */
  for (size_t i = 0; i < np->n_input; i++)
    if (np->input[i] && np->input[i][0] && !kc_onnx_input(im, np, i).id)
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "input '%s' has no value in kernc's graph",
                       np->input[i]);
  return row->import ? row->import(im, np, row) : import_generic(im, np, row);
}
