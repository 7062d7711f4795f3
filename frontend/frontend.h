/*
 * frontend/frontend.h - the frontend's library functions beyond kc_onnx_load (which is in
 * kernc.h): reading one TensorProto .pb file, used by `kernc check` (tools/check/check.h) and
 * the tests. Nothing here exposes protobuf types.
 * The frontend depends on ir/ only: checking a test folder runs models, so it lives downstream
 * in tools/check/, not here.
 */
#ifndef KERNC_FRONTEND_H
#define KERNC_FRONTEND_H

#include "ir/internal.h"

/* A tensor read from a .pb file; it owns its memory (free with kc_pb_tensor_free). */
typedef struct kc_pb_tensor {
  kc_tensor t; /* name (may be NULL), dtype, rank, dims, data */
  kc_arena arena;
} kc_pb_tensor;

/* Read one serialized TensorProto (raw_data or typed fields; external data refused). */
kc_status kc_tensor_pb_read(kc_context *ctx, const char *path, kc_pb_tensor *out);
void kc_pb_tensor_free(kc_pb_tensor *t);

/* kc_onnx_save_weights (kernc.h) writes the weights to an external file "<dst>.data" when they
 * total more than this many bytes (a protobuf message must stay below 2 GiB). */
#define KC_ONNX_INLINE_MAX ((uint64_t)2000000000)
/* The same with another threshold (tests write small external files with 0). */
kc_status kc_onnx_save_weights_ex(kc_context *ctx, const char *src_onnx, const kc_graph *g,
                                  const char *dst_onnx, uint64_t inline_max);

#endif /* KERNC_FRONTEND_H */
