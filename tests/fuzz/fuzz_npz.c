/*
 * tests/fuzz/fuzz_npz.c - libFuzzer target: bytes -> the kernc program's .npz reader
 * (tools/npz.c, cli_npz_read_mem: zip directory, stored and deflated entries, each entry
 * through kc_npy_read_mem).
 *
 * Invariant checked: any byte string is either read into arrays whose dims and data agree
 * (every element readable) or refused with a message; no crash, leak or sanitizer report.
 */
#include "kernc.h"
#include "ir/internal.h"
#include "tools/npz.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kc_context *ctx = kc_context_new();
  if (!ctx) return 0;
  cli_npz z;
  if (cli_npz_read_mem(ctx, data, size, "fuzz.npz", &z) == KC_OK) {
    for (size_t k = 0; k < z.n; k++) {
      const kc_tensor_desc *t = &z.t[k];
      if (!z.names[k] || t->rank < 0 || t->rank > KC_MAX_RANK) __builtin_trap();
      size_t n = kc_dtype_size(t->dtype);
      for (int i = 0; i < t->rank; i++)
        n *= (size_t)t->dims[i];
      /* touch the first and last byte: ASan reports a buffer shorter than its dims */
      volatile unsigned char sink = 0;
      if (n && t->data) sink = ((unsigned char *)t->data)[0] ^ ((unsigned char *)t->data)[n - 1];
      (void)sink;
    }
    cli_npz_free(&z);
  } else if (!kc_last_error(ctx)[0]) {
    __builtin_trap(); /* a refusal must say why */
  }
  kc_context_free(ctx);
  return 0;
}
