/*
 * tools/gradcheck.h - `kernc gradcheck`'s check (tools/gradcheck.c): a model's gradients against
 * central finite differences in float64, and its float32 gradients against the float64 ones.
 */
#ifndef KERNC_TOOLS_GRADCHECK_H
#define KERNC_TOOLS_GRADCHECK_H

#include "kernc.h"

#include <stdint.h>
#include <stdio.h>

typedef struct gradcheck_opts {
  const char *loss; /* the scalar output checked */
  int npats;        /* parameter globs (kc_grad's), the weights checked */
  const char *const *pats;
  int samples;            /* elements checked per parameter */
  uint64_t seed;          /* for the drawn elements */
  double eps, atol, rtol; /* finite differences (PyTorch gradcheck's defaults 1e-6/1e-5/1e-3) */
  double f32_tol;         /* max |g32 - g64| over max |g64| */
  int threads;
} gradcheck_opts;

/* Check g (which has the output o->loss) on the given inputs (graph input order, user[i] for
 * input i); prints a row per parameter to f. Returns the number of parameters that failed, or
 * -(kc_status) when something could not run (the message is in the context). */
int gradcheck_run(kc_context *ctx, const kc_graph *g, const kc_tensor_desc *user, uint32_t nuser,
                  const gradcheck_opts *o, FILE *f);

#endif /* KERNC_TOOLS_GRADCHECK_H */
