/*
 * codegen/cpu/stubs.c - TEMPORARY: families and scalars not written yet, one line each; whoever
 * implements one deletes its line. This file goes away when it is empty.
 */
#include "emit.h"
#define FAMILY_STUB(f)                                                                             \
  kc_status kc_lower_##f(kc_cpu_emit *e) {                                                         \
    return kc_node_errorf((kc_graph *)e->g, e->n, KC_ERR_UNSUPPORTED,                              \
                          "no CPU emitter for this op yet");                                       \
  }
#define SCALAR_STUB(s)                                                                             \
  LLVMValueRef kc_scalar_##s(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,               \
                             LLVMValueRef *args) {                                                 \
    return NULL;                                                                                   \
  }
/* clang-format off */
FAMILY_STUB(fused)
/* clang-format on */
