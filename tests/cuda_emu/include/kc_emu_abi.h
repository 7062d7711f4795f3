/*
 * tests/cuda_emu/include/kc_emu_abi.h - what the host emulation of the CUDA driver
 * (fake_cuda.c) and the kernels it runs (compiled by fake_nvrtc.c) share: the per-thread
 * built-in variables and the barrier calls. Plain C, included from C and from C++.
 */
#ifndef KC_EMU_ABI_H
#define KC_EMU_ABI_H
#include <stdint.h>

typedef struct kc_emu_dim3 {
  unsigned x, y, z;
} kc_emu_dim3;

/* one warp's exchange slots for shuffles: a lane writes its value, all lanes meet, all read */
typedef struct kc_emu_warp {
  uint64_t slot[32];
} kc_emu_warp;

typedef struct kc_emu_thread {
  kc_emu_dim3 tid, bid, bdim, gdim; /* threadIdx, blockIdx, blockDim, gridDim */
  int lane;
  kc_emu_warp *warp;
} kc_emu_thread;

typedef struct kc_emu_api {
  kc_emu_thread *(*cur)(void); /* the running thread */
  void (*sync_block)(void);    /* __syncthreads */
  void (*sync_warp)(void);     /* all live lanes of the warp meet */
} kc_emu_api;

/* A compiled program exports kc_emu_bind (called once at load) and, per __global__ NAME, an
 * entry NAME__emu(const void *argument_block). */
#define KC_EMU_ENTRY_SUFFIX "__emu"

#endif
