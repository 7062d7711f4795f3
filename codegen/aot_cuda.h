/*
 * codegen/aot_cuda.h - the CUDA side of a model compiled ahead of time (`kernc compile
 * --target=cuda`): the device blob the exporter writes (runtime/export_cuda.c), which the object
 * pulls in with .incbin as NAME_cuda, and the entry of the CUDA AOT runtime
 * (runtime/aot_cuda_rt.c) that NAME_create calls instead of kc_aot_create.
 *
 * Everything else is codegen/aot.h's: the same kc_plan tables (values, steps, io, dims
 * function, weights), checked and planned by the same code, so a C user switches target by
 * recompiling only. The steps' fn/units are NULL: step i launches the kernel blob step i names.
 *
 * Blob layout (offsets from the blob's start; the blob is 64-byte aligned):
 *   kc_aot_cuda_head
 *   kc_aot_cuda_image[nimages]   cubins and PTX, ascending arch, cubins before PTX of an arch
 *   kc_aot_cuda_step[nsteps]     one per kc_plan step, in the same order
 *   bytes                        kernel names (NUL-terminated), then the images, each at a
 *                                64-byte aligned offset and followed by a NUL (PTX is text)
 *
 * Invariants: the blob is written and read by the same build of kernc (kc_cuda_kernel_info is
 * copied as bytes), which the header's layout words check before anything is read; graph-free
 * and LLVM-free, like codegen/aot.h: the runtime archive includes it.
 */
#ifndef KERNC_CODEGEN_AOT_CUDA_H
#define KERNC_CODEGEN_AOT_CUDA_H

#include "codegen/aot.h"
#include "codegen/cuda/cuda.h"

#include <stdint.h>

#define KC_AOT_CUDA_MAGIC "kcCUDA1" /* 8 bytes with its NUL */

typedef struct kc_aot_cuda_head {
  char magic[8];
  int64_t head_bytes, image_bytes, step_bytes; /* sizeof of the three structs, for the check */
  int64_t nimages, nsteps;
  int64_t size; /* of the whole blob */
} kc_aot_cuda_head;

typedef struct kc_aot_cuda_image {
  int64_t arch; /* 80: sm_80 (cubin) or compute_80 (PTX) */
  int64_t ptx;  /* 1: PTX text the driver compiles for the device; 0: a cubin */
  int64_t off, size;
} kc_aot_cuda_image;

typedef struct kc_aot_cuda_step {
  int64_t name; /* offset of the kernel's name ("k3_matmul") */
  kc_cuda_kernel_info info;
} kc_aot_cuda_step;

/*
 * An instance of model d whose steps run on CUDA device 0 with the kernels of blob: opens the
 * driver (dlopen libcuda.so.1), loads the image for the device (the cubin of its exact compute
 * capability, else the newest PTX not above it), uploads the weights. NULL on failure, with
 * kc_aot_error(NULL) saying why ("CUDA target unavailable: ..." without a driver or device).
 * The instance runs and frees through kc_aot_run / kc_aot_free / kc_aot_error.
 */
kc_exec *kc_aot_cuda_create(const kc_plan *d, const void *blob, int threads);

#endif /* KERNC_CODEGEN_AOT_CUDA_H */
