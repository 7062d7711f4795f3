/*
 * tests/fuzz/fuzz_kir.c - libFuzzer target: bytes -> the text IR reader (ir/lex.c, ir/parse.c,
 * ir/parse_literal.c, ir/dim.c), and for graphs that parse and verify, the printer's round trip.
 *
 * Invariants checked (a violation is __builtin_trap(), i.e. a finding):
 *   - any text parses into a graph or is refused with a message;
 *   - a graph that parses and verifies prints text that parses again, verifies again, and prints
 *     the same text byte for byte (ir/print.c's invariant print(parse(print(g))) == print(g)).
 */
#include "kernc.h"
#include "tests/fuzz/fuzz_util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Report what went wrong before trapping, so a crash input explains itself. */
static void finding(const char *what, const char *msg, const char *text) {
  fprintf(stderr, "fuzz_kir: %s: %s\n--- printed text ---\n%s\n", what, msg ? msg : "",
          text ? text : "");
  __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *src = malloc(size + 1);
  kc_context *ctx = kc_context_new();
  if (!src || !ctx) {
    free(src);
    kc_context_free(ctx);
    return 0;
  }
  memcpy(src, data, size);
  src[size] = 0; /* the reader takes NUL-terminated text; an embedded NUL ends it early */
  kc_graph *g = NULL;
  if (big_dense(src)) goto done;
  kc_status s = kc_graph_parse(ctx, src, "fuzz.kir", &g);
  if (s != KC_OK) {
    if (g) finding("failed parse returned a graph", kc_last_error(ctx), NULL);
    if (!kc_last_error(ctx)[0]) finding("parse failed without a message", "", NULL);
    goto done;
  }
  if (kc_graph_verify(g) != KC_OK) goto done;
  fuzz_round_trip(ctx, g, finding);
done:
  kc_graph_free(g);
  kc_context_free(ctx);
  free(src);
  return 0;
}
