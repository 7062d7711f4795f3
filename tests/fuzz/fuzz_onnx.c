/*
 * tests/fuzz/fuzz_onnx.c - libFuzzer target: bytes -> the ONNX importer (kc_onnx_load), and for
 * models that import, the text IR round trip of the graph they became.
 *
 * kc_onnx_load reads a path, so each input is written to model.onnx in a private, otherwise
 * empty temporary folder made once per process: external data a model names resolves inside
 * that folder and finds nothing but the model itself (no data from elsewhere is ever read).
 * Invariants checked (a violation is __builtin_trap(), i.e. a finding):
 *   - any bytes import into a graph or are refused with a message (and no graph);
 *   - an imported graph that verifies prints text that parses back, verifies, and prints the
 *     same (so symbol names made from dim_param, value and tensor names survive the text form).
 */
#include "kernc.h"
#include "tests/fuzz/fuzz_util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void finding(const char *what, const char *msg, const char *text) {
  fprintf(stderr, "fuzz_onnx: %s: %s\n--- printed text ---\n%s\n", what, msg ? msg : "",
          text ? text : "");
  __builtin_trap();
}

/* The model's path in this process's folder (made on first use; a fuzzer process is one
 * thread, so the static is set once and then only read). */
static const char *model_path(void) {
  static char path[256];
  if (path[0]) return path;
  char dir[] = "/tmp/kc_fuzz_onnx_XXXXXX";
  if (!mkdtemp(dir)) return NULL;
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = model_path();
  if (!path) return 0;
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  bool written = fwrite(data, 1, size, f) == size;
  if (fclose(f) != 0 || !written) return 0;
  kc_context *ctx = kc_context_new();
  if (!ctx) return 0;
  kc_graph *g = NULL;
  kc_status s = kc_onnx_load(ctx, path, &g);
  if (s != KC_OK) {
    if (g) finding("failed import returned a graph", kc_last_error(ctx), NULL);
    if (!kc_last_error(ctx)[0]) finding("import failed without a message", "", NULL);
    goto done;
  }
  /* kc_onnx_load promises a typed graph, not a verified one (a model without outputs imports;
   * kc_compile and the CLI verify and say so): only a refusal without a message is a finding */
  if (kc_graph_verify(g) != KC_OK) {
    if (!kc_last_error(ctx)[0])
      finding("imported graph fails to verify without a message", "", NULL);
    goto done;
  }
  fuzz_round_trip(ctx, g, finding);
done:
  kc_graph_free(g);
  kc_context_free(ctx);
  return 0;
}
