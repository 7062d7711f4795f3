/*
 * codegen/cuda/launch.c - the host side of the kernel ABI (codegen/cuda/cuda.h): work units
 * from a launch description and concrete dims, the grid, the packed argument block, and the one
 * launch both CUDA runtimes use (the executor's CUDA half, runtime/exec_cuda.c, for JIT and AOT,
 * which is why this file and driver.c must need neither NVRTC nor the graph).
 *
 * Invariants: the packed block has exactly the layout of kc_args<NB, ND> (NB pointers, ND
 * int64 dims, the int64 units, all 8 bytes), so the kernel reads it as its one parameter.
 */
#include "codegen/cuda/cuda.h"

#include <string.h>

/* More blocks than this fill any GPU; kernels loop over the rest. */
#define GRID_CAP (1u << 20)

int64_t kc_cuda_units(const kc_cuda_launch *l, const int64_t *dims) {
  int64_t u = l->mul;
  for (int i = 0; i < l->nf; i++) {
    int64_t d = dims[l->f[i].dim], div = l->f[i].div ? l->f[i].div : 1;
    u *= (d + div - 1) / div;
  }
  return u;
}

uint32_t kc_cuda_grid(const kc_cuda_launch *l, int64_t units) {
  int64_t per = l->per_block > 0 ? l->per_block : 1;
  int64_t g = (units + per - 1) / per;
  return g < 1 ? 1 : g > GRID_CAP ? GRID_CAP : (uint32_t)g;
}

size_t kc_cuda_arg_words(const kc_cuda_kernel_info *k) { return (size_t)k->nbufs + k->ndims + 1; }

void kc_cuda_pack(const kc_cuda_kernel_info *k, const uint64_t *bufs, const int64_t *dims,
                  int64_t units, uint64_t *words) {
  memset(words, 0, kc_cuda_arg_words(k) * sizeof *words);
  memcpy(words, bufs, k->nbufs * sizeof *words);
  memcpy(words + k->nbufs, dims, k->ndims * sizeof *words);
  memcpy(words + k->nbufs + k->ndims, &units, sizeof units);
}

kc_status kc_cuda_run_kernel(kc_cuda_dev *d, void *fn, const kc_cuda_kernel_info *k,
                             const uint64_t *bufs, const int64_t *dims, uint64_t *words) {
  int64_t units = kc_cuda_units(&k->launch, dims);
  if (units <= 0) return KC_OK; /* an empty result: nothing to launch */
  kc_cuda_pack(k, bufs, dims, units, words);
  return kc_cuda_launch_kernel(d, fn, kc_cuda_grid(&k->launch, units), (uint32_t)k->launch.block,
                               words);
}
