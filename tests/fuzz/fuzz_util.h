/*
 * tests/fuzz/fuzz_util.h - what the fuzz targets share: skipping huge dense literals (fuzz_kir,
 * fuzz_passes) and the text round trip of a graph (fuzz_kir, fuzz_onnx).
 */
#ifndef KERNC_FUZZ_UTIL_H
#define KERNC_FUZZ_UTIL_H

#include "ir/internal.h"
#include "kernc.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Does the text hold a dense literal and a type whose integer dims multiply past 65536 (or an
 * integer past that anywhere)? Such an input may allocate a splat of up to the parser's 256 MiB
 * cap, which costs ~0.1 s and keeps the fuzzer's memory near its limit while finding nothing
 * new: skipped (the caps have their tests in tests/kir/invalid/). */
static inline bool big_dense(const char *s) {
  if (!strstr(s, "dense")) return false;
  double prod = 1;      /* of the integers since the last '[' */
  bool literal = false; /* inside dense<[...]>: elements, not dims */
  for (const char *p = s; *p; p++) {
    if (*p == '[' || *p == ']') {
      prod = 1;
      literal = *p == '[' && p > s && p[-1] == '<';
    }
    if (*p < '0' || *p > '9' || literal) continue;
    double v = 0;
    for (; p[1] >= '0' && p[1] <= '9'; p++)
      v = v * 10 + (*p - '0');
    v = v * 10 + (*p - '0');
    prod *= v > 0 ? v : 1;
    if (v > 65536 || prod > 65536) return true;
  }
  return false;
}

/* print -> parse -> verify -> print of a verified graph g: both prints must be equal, the text
 * must parse back and verify; a violation goes to finding (which traps). */
static inline void fuzz_round_trip(kc_context *ctx, const kc_graph *g,
                                   void (*finding)(const char *, const char *, const char *)) {
  char *t1 = kc_graph_print_str(g), *t2 = NULL;
  kc_graph *g2 = NULL;
  if (!t1) return; /* out of memory */
  if (kc_graph_parse(ctx, t1, "printed.kir", &g2) != KC_OK)
    finding("printed text does not parse back", kc_last_error(ctx), t1);
  if (kc_graph_verify(g2) != KC_OK)
    finding("printed text parses but does not verify", kc_last_error(ctx), t1);
  t2 = kc_graph_print_str(g2);
  if (t2 && strcmp(t1, t2) != 0) {
    fprintf(stderr, "--- printed again ---\n%s\n", t2);
    finding("second print differs from the first", "", t1);
  }
  free(t1);
  free(t2);
  kc_graph_free(g2);
}

#endif /* KERNC_FUZZ_UTIL_H */
