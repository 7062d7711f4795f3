/*
 * examples/mlp.c - build a small two-layer MLP with kernc's C builder API and print its IR.
 * The batch dimension is symbolic ("batch"), bound only when the model runs.
 */
#include "kernc.h"

#include <stdio.h>
#include <stdlib.h>

/* Deterministic small weights, so the printed example never changes. */
static float *ramp(int n, float scale) {
  float *w = malloc((size_t)n * sizeof *w);
  for (int i = 0; i < n && w; i++)
    w[i] = scale * (float)((i * 7) % 13 - 6);
  return w;
}

int main(void) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "mlp");
  float *w1 = ramp(16 * 32, 0.01f), *b1 = ramp(32, 0.1f), *w2 = ramp(32 * 10, 0.01f),
        *b2 = ramp(10, 0.1f);

  kc_dim in_dims[2] = {kc_sym(g, "batch"), 16};
  kc_val x = kc_input(g, "x", KC_F32, 2, in_dims);
  kc_val h = kc_relu(
      g, kc_add(g, kc_matmul(g, x, kc_weight(g, "fc1.w", KC_F32, 2, (int64_t[]){16, 32}, w1)),
                kc_weight(g, "fc1.b", KC_F32, 1, (int64_t[]){32}, b1)));
  kc_val logits =
      kc_add(g, kc_matmul(g, h, kc_weight(g, "fc2.w", KC_F32, 2, (int64_t[]){32, 10}, w2)),
             kc_weight(g, "fc2.b", KC_F32, 1, (int64_t[]){10}, b2));
  kc_output(g, kc_softmax(g, logits, -1), "probs");

  int rc = 0;
  if (kc_graph_status(g) != KC_OK || kc_graph_verify(g) != KC_OK) {
    fprintf(stderr, "mlp: %s\n", kc_last_error(ctx));
    rc = 1;
  } else {
    kc_graph_print(g, stdout);
  }
  free(w1), free(b1), free(w2), free(b2);
  kc_graph_free(g);
  kc_context_free(ctx);
  return rc;
}
