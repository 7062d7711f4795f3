/*
 * tests/fuzz/fuzz_util.h - what the text IR fuzz targets (fuzz_kir, fuzz_passes) share.
 */
#ifndef KERNC_FUZZ_UTIL_H
#define KERNC_FUZZ_UTIL_H

#include <stdbool.h>
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

#endif /* KERNC_FUZZ_UTIL_H */
