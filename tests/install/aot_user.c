/*
 * tests/install/aot_user.c - a program using a model compiled by an installed `kernc compile`
 * (run.sh: mlp.onnx -> libmlp.so + mlp.h): it links only libmlp.so, runs it and compares with
 * ONNX Runtime's outputs. Usage: aot_user DIR (x.bin, want.bin as for consumer.c). Exit 0 when
 * every value matches.
 */
#include "mlp.h"

#include <math.h>
#include <stdio.h>

static int read_floats(const char *dir, const char *name, float *out, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  size_t got = f ? fread(out, sizeof *out, n, f) : 0;
  if (f) fclose(f);
  return got == n ? 0 : -1;
}

int main(int argc, char **argv) {
  float x[12], want[15];
  if (argc != 2 || read_floats(argv[1], "x.bin", x, 12) ||
      read_floats(argv[1], "want.bin", want, 15)) {
    fprintf(stderr, "aot_user: cannot read the test data\n");
    return 1;
  }
  mlp_t *m = mlp_create(1);
  if (!m) {
    fprintf(stderr, "aot_user: %s\n", mlp_error(NULL));
    return 1;
  }
  mlp_tensor in[mlp_NUM_INPUTS] = {
      {.name = "x", .dtype = KC_MODEL_F32, .rank = 2, .dims = mlp_INPUT_x_DIMS(3), .data = x}};
  mlp_tensor out[mlp_NUM_OUTPUTS];
  int bad = 0;
  if (mlp_run(m, in, out) != 0) {
    fprintf(stderr, "aot_user: %s\n", mlp_error(m));
    bad = 1;
  } else {
    for (int i = 0; i < 15; i++) {
      float got = ((const float *)out[0].data)[i];
      if (!(fabsf(got - want[i]) <= 1e-5f + 1e-5f * fabsf(want[i]))) {
        fprintf(stderr, "aot_user: y[%d] = %g, ONNX Runtime %g\n", i, got, want[i]);
        bad = 1;
      }
    }
  }
  mlp_free(m);
  if (!bad) printf("aot_user: libmlp.so matches ONNX Runtime (15 values)\n");
  return bad;
}
