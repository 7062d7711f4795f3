/*
 * tools/bench_decode.h - `kernc bench --decode` (tools/bench_decode.c), called by tools/cmd_bench.c
 * once its flags are parsed.
 */
#ifndef KERNC_TOOLS_BENCH_DECODE_H
#define KERNC_TOOLS_BENCH_DECODE_H

#include "kernc.h"

#include <stdbool.h>
#include <stdint.h>

#define BENCH_MAX_CONTEXTS 16

typedef struct bench_decode_opts {
  const char *path;
  int threads; /* 0: one per core */
  bool paged;
  int64_t prefill;
  int64_t contexts[BENCH_MAX_CONTEXTS];
  int ncontexts;
  int warmup, iters;
} bench_decode_opts;

/* Time the prefill and the decode steps of causal decoder g (see the file comment); exit code. */
int bench_decode(kc_context *ctx, const kc_graph *g, const bench_decode_opts *o);

#endif
