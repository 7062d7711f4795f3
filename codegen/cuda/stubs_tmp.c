#include "codegen/cuda/emit.h"
kc_status kc_cuda_lower_reduce(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_softmax(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_norm(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_matmul(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_transpose(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_gather(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_concat(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_split(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_slice(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_expand(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_trilu(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_shape(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_constant_of_shape(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_range(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_rotary(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
kc_status kc_cuda_lower_attention(kc_cuda_emit *e) { return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not yet"); }
const char kc_cu_sec_matmul[] = "";
const char kc_cu_sec_attention[] = "";
