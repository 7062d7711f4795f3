/*
 * tests/fuzz/fuzz_npy.c - libFuzzer target: bytes -> the .npy reader (runtime/npy.c,
 * kc_npy_read_mem).
 *
 * Invariant checked: any byte string is either read into a descriptor whose dims and data agree
 * (every element readable) or refused with a message; no crash, leak or sanitizer report.
 */
#include "kernc.h"
#include "ir/internal.h"
#include "runtime/runtime.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kc_context *ctx = kc_context_new();
  if (!ctx) return 0;
  kc_tensor_desc t;
  memset(&t, 0, sizeof t);
  if (kc_npy_read_mem(ctx, data, size, "fuzz.npy", &t) == KC_OK) {
    if (t.rank < 0 || t.rank > KC_MAX_RANK) __builtin_trap();
    size_t n = kc_dtype_size(t.dtype);
    for (int i = 0; i < t.rank; i++) {
      if (t.dims[i] < 0) __builtin_trap();
      n *= (size_t)t.dims[i];
    }
    /* touch the first and last byte: ASan reports a buffer shorter than its dims */
    volatile unsigned char sink = 0;
    if (n && t.data) sink = ((unsigned char *)t.data)[0] ^ ((unsigned char *)t.data)[n - 1];
    (void)sink;
    kc_npy_free(&t);
  } else if (!kc_last_error(ctx)[0]) {
    __builtin_trap(); /* a refusal must say why */
  }
  kc_context_free(ctx);
  return 0;
}
