/*
 * runtime/index_error.c - the error of a kernel that met an index out of range (the index check
 * of codegen/cpu/emit.h and codegen/cuda/cuda.h), worded once for every runtime: the JIT's and
 * the runtime archive inside compiled models (kernc_rt), so it takes plain data only.
 *
 * Invariants: reads the one index the kernel reported (a device runtime copies it to the host
 * first); no graph, no LLVM, no allocation.
 */
#include "runtime/runtime.h"

#include "ir/internal.h"

#include <string.h>

kc_status kc_rt_index_error(kc_context *ctx, const char *what, kc_dtype it, const void *index,
                            int64_t pos, int64_t axis, int64_t bound) {
  int64_t v = 0;
  if (it == KC_I64) {
    memcpy(&v, index, 8);
  } else if (it == KC_I32) {
    int32_t w;
    memcpy(&w, index, 4);
    v = w;
  } else {
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "%s: the index at position %lld of its indices is out of range for axis %lld "
                     "of size %lld",
                     what ? what : "a node", (long long)pos, (long long)axis, (long long)bound);
  }
  return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                   "%s: index %lld at position %lld of its indices is out of range for axis %lld "
                   "of size %lld",
                   what ? what : "a node", (long long)v, (long long)pos, (long long)axis,
                   (long long)bound);
}
