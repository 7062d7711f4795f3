/*
 * frontend/onnx_internal.h - what the ONNX importer's files share: the import state, the op
 * table row, TensorProto decoding and the helpers that emit IR nodes for one ONNX node.
 *
 * Invariants:
 *   - The unpacked ModelProto lives in the graph's arena (protobuf-c is given an allocator over
 *     it), so strings and tensor bytes in it stay valid as long as the graph and are borrowed,
 *     not copied, by weights.
 *   - Every message from an import function is the inner part; the loader prefixes it with the
 *     file, the ONNX node and its op, so import functions never repeat those.
 *   - Only onnx_ops.c switches on ONNX op names, through its one table.
 */
#ifndef KERNC_FRONTEND_ONNX_INTERNAL_H
#define KERNC_FRONTEND_ONNX_INTERNAL_H

#include "ir/internal.h"
#include "onnx.pb-c.h"

/*
 * Default-domain opsets kernc reads: from 7 (multidirectional broadcasting everywhere) to the
 * newest whose op versions kernc knows (27, onnx 1.22; see onnx_ops.c for 24..27).
 */
#define KC_ONNX_OPSET_MIN 7
#define KC_ONNX_OPSET_MAX 27
/* IR versions whose protobuf layout kernc reads (12 and 13 only added fields and dtypes). */
#define KC_ONNX_IR_MIN 3
#define KC_ONNX_IR_MAX 13

/* Name -> value map for ONNX value names (open addressing; keys are borrowed). */
typedef struct onnx_names {
  const char **keys;
  kc_val *vals;
  uint32_t cap, n;
} onnx_names;

typedef struct onnx_imp {
  kc_context *ctx;
  kc_graph *g;
  const char *path; /* the model file, for messages */
  const char *dir;  /* the model's folder (realpath), for external data */
  int64_t opset;    /* default-domain opset */
  onnx_names names;
  /* the ONNX node being imported, for loc and messages */
  const Onnx__NodeProto *node;
} onnx_imp;

struct onnx_op;
typedef kc_status (*onnx_import_fn)(onnx_imp *im, const Onnx__NodeProto *np,
                                    const struct onnx_op *row);

/* One row of the ONNX op table (onnx_ops.c). */
typedef struct onnx_op {
  const char *type;      /* ONNX op_type in the default domain */
  kc_op op;              /* the IR op */
  int since;             /* first opset kernc imports it at */
  int newer;             /* opset where the form import rewrites ended (axes became an input) */
  onnx_import_fn import; /* NULL: inputs, outputs and attributes map one to one */
} onnx_op;

/* The table row for op_type at the default domain, or NULL. */
const onnx_op *kc_onnx_op_find(const char *op_type);
/* Import one node with its row (generic or per-op function). */
kc_status kc_onnx_import_node(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);

/* ---- names ---- */
bool kc_onnx_names_put(onnx_names *m, const char *key, kc_val v);
kc_val kc_onnx_names_get(const onnx_names *m, const char *key);
void kc_onnx_names_free(onnx_names *m);

/* ---- tensors (onnx_tensor.c) ---- */

/* The kernc dtype of an ONNX TensorProto.DataType, or KC_DT_NONE. */
kc_dtype kc_onnx_dtype(int64_t onnx_type);
/* Text name of an ONNX data type ("float8e4m3fn"), for messages. */
const char *kc_onnx_dtype_name(int64_t onnx_type);

/* A decoded TensorProto: data points into the arena or the message (which lives there). */
typedef struct onnx_tensor {
  kc_dtype dtype;
  int rank;
  int64_t dims[KC_MAX_RANK];
  const void *data; /* never NULL, even for 0 elements */
  size_t nbytes;
} onnx_tensor;

/*
 * Decode tp; what names it in messages ("initializer 'w'"). dir is the model's folder for
 * external data (NULL: external data refused). Allocates from arena only where the bytes
 * must be converted or read from a file.
 */
kc_status kc_onnx_tensor_decode(kc_context *ctx, kc_arena *arena, const Onnx__TensorProto *tp,
                                const char *dir, const char *what, onnx_tensor *out);

/* ---- emitting IR for the current node (onnx_emit.c) ---- */

/* Value of input i of np (kc_val{0} when absent or empty). */
kc_val kc_onnx_input(onnx_imp *im, const Onnx__NodeProto *np, size_t i);
/* Add a node for the current ONNX node; outs (nout entries) are fresh values when NULL. */
uint32_t kc_onnx_add(onnx_imp *im, kc_op op, uint32_t nin, const kc_val *in, uint32_t nout,
                     kc_val *outs);
/* Run shape inference on node ni. */
kc_status kc_onnx_infer(onnx_imp *im, uint32_t ni);
/* Add, infer and return the single output of op(in...) with no attributes; {0} on error. */
kc_val kc_onnx_emit1(onnx_imp *im, kc_op op, uint32_t nin, const kc_val *in, kc_status *st);
/* A small constant tensor (copied into the graph); {0} on error. */
kc_val kc_onnx_const(onnx_imp *im, kc_dtype t, int rank, const int64_t *dims, const void *data,
                     kc_status *st);
kc_val kc_onnx_const_i64s(onnx_imp *im, uint32_t n, const int64_t *v, kc_status *st);
/* A scalar constant of dtype t holding v (float and int dtypes). */
kc_val kc_onnx_const_scalar(onnx_imp *im, kc_dtype t, double v, kc_status *st);
/* A weight node for tensor t named name (data borrowed); {0} on error. */
kc_val kc_onnx_weight(onnx_imp *im, const char *name, const onnx_tensor *t, kc_status *st);
/* Give output i of ONNX node np the value v (empty output names are ignored). */
kc_status kc_onnx_bind(onnx_imp *im, const Onnx__NodeProto *np, size_t i, kc_val v);
/* Bind every output of np to the outputs of IR node ni, in order. */
kc_status kc_onnx_bind_all(onnx_imp *im, const Onnx__NodeProto *np, uint32_t ni);
/*
 * Copy np's attributes onto IR node ni, converting kinds by the IR op's schema; attributes
 * named in skip (NULL-terminated) are left out. Unknown attributes are unsupported.
 */
kc_status kc_onnx_copy_attrs(onnx_imp *im, const Onnx__NodeProto *np, uint32_t ni,
                             const char *const *skip);
/* The attribute called name on np, or NULL. */
const Onnx__AttributeProto *kc_onnx_attr(const Onnx__NodeProto *np, const char *name);
/* Integer / float attribute name of np, or def when absent. */
int64_t kc_onnx_attr_int(const Onnx__NodeProto *np, const char *name, int64_t def);
float kc_onnx_attr_float(const Onnx__NodeProto *np, const char *name, float def);
/*
 * The end of an import composition: the nodes made from index first on answer to np's name in
 * messages (those without a loc of their own), then np's output 0 is bound to y. Returns the
 * graph's sticky status first, so a failed builder call anywhere in the composition shows.
 */
kc_status kc_onnx_finish(onnx_imp *im, const Onnx__NodeProto *np, uint32_t first, kc_val y);
/* Decode the tensor held by attribute a into a new anonymous entry of g->tensors. */
kc_status kc_onnx_attr_tensor(onnx_imp *im, const Onnx__AttributeProto *a, uint32_t *tensor);

/* Per-op import functions shared with the table (onnx_attention.c). */
kc_status kc_onnx_import_attention(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
/* SoftmaxCrossEntropyLoss / NegativeLogLikelihoodLoss as builder compositions (onnx_loss.c). */
kc_status kc_onnx_import_sce_loss(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_nll_loss(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
/* CastLike, Size, Sum/Mean (row op ADD or DIV) and Swish as rewrites (onnx_elementwise.c). */
kc_status kc_onnx_import_cast_like(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_size(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_sum_mean(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_swish(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);

/* Convolution, pooling and normalization as builder compositions (onnx_vision.c). */
kc_status kc_onnx_import_conv(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_conv_integer(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_qlinear_conv(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_conv_transpose(onnx_imp *im, const Onnx__NodeProto *np,
                                        const onnx_op *row);
kc_status kc_onnx_import_max_pool(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_average_pool(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
/* GlobalMaxPool (row op reduce_max) / GlobalAveragePool (reduce_mean) */
kc_status kc_onnx_import_global_pool(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_batch_norm(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_instance_norm(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
/* Resize (opset 11+) as gathers and weights per axis (onnx_resize.c). */
kc_status kc_onnx_import_resize(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);

/* Reductions and index ops composed of IR ops at import (onnx_reduce_index.c). */
kc_status kc_onnx_import_reduce_l1(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_reduce_l2(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_reduce_sum_square(onnx_imp *im, const Onnx__NodeProto *np,
                                           const onnx_op *row);
kc_status kc_onnx_import_reduce_log_sum(onnx_imp *im, const Onnx__NodeProto *np,
                                        const onnx_op *row);
kc_status kc_onnx_import_reduce_log_sum_exp(onnx_imp *im, const Onnx__NodeProto *np,
                                            const onnx_op *row);
kc_status kc_onnx_import_arg(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_hardmax(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_lp_norm(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_gather_elements(onnx_imp *im, const Onnx__NodeProto *np,
                                         const onnx_op *row);
kc_status kc_onnx_import_space_depth(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_eye_like(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_tile(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_one_hot(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_pad(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_einsum(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_gather_nd(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_scatter_nd(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row);
kc_status kc_onnx_import_scatter_elements(onnx_imp *im, const Onnx__NodeProto *np,
                                          const onnx_op *row);

#endif /* KERNC_FRONTEND_ONNX_INTERNAL_H */
