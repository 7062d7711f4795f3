/*
 * tests/cuda_emu/include/kc_emu_device.h - CUDA's device-side names for kernels compiled as
 * host C++ by the emulation (see ../fake_nvrtc.c): qualifiers, the built-in variables and
 * barriers (through kc_emu_api, bound by fake_cuda.c at module load), warp shuffles, the
 * conversion intrinsics kernc's device library uses, and __half / __nv_bfloat16 as 16-bit
 * storage types converted through the host's _Float16 and by bit rounding (nearest even).
 * Only what kernc's generated CUDA C needs; not a general CUDA emulation.
 */
#pragma once
#include "kc_emu_abi.h"

/* the C headers, not libstdc++'s wrappers: a tenth of a second less per compile */
#define _GLIBCXX_INCLUDE_NEXT_C_HEADERS
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#undef _GLIBCXX_INCLUDE_NEXT_C_HEADERS

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static /* blocks run one at a time, so one copy per kernel is the block's */

static const kc_emu_api *kc_emu;
extern "C" void kc_emu_bind(const kc_emu_api *api) { kc_emu = api; }

#define threadIdx (kc_emu->cur()->tid)
#define blockIdx (kc_emu->cur()->bid)
#define blockDim (kc_emu->cur()->bdim)
#define gridDim (kc_emu->cur()->gdim)
inline void __syncthreads() { kc_emu->sync_block(); }

/* every lane publishes its value, the warp meets, each reads its source lane, the warp meets
 * again so no lane overwrites a slot another has not read yet */
template <class T> T kc_emu_shfl(T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 64 bits");
  kc_emu_thread *t = kc_emu->cur();
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof v);
  t->warp->slot[t->lane] = bits;
  kc_emu->sync_warp();
  bits = t->warp->slot[src_lane & 31];
  kc_emu->sync_warp();
  T r;
  memcpy(&r, &bits, sizeof r);
  return r;
}
template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  return (void)mask, kc_emu_shfl(v, kc_emu->cur()->lane ^ lane_mask);
}
template <class T> T __shfl_sync(unsigned mask, T v, int src_lane) {
  return (void)mask, kc_emu_shfl(v, src_lane);
}

/* threads are coroutines switched only at barriers and shuffles, so a plain read-modify-write is
 * atomic here */
inline unsigned long long atomicCAS(unsigned long long *p, unsigned long long cmp,
                                    unsigned long long val) {
  unsigned long long old = *p;
  if (old == cmp) *p = val;
  return old;
}

/* products and sums rounded on their own (kernels use them where NVRTC would contract) */
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}

inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, 4);
  return f;
}
inline double __longlong_as_double(long long i) {
  double f;
  memcpy(&f, &i, 8);
  return f;
}

/* float -> integer, rounding toward zero and saturating (NaN -> 0), as the PTX cvt.rzi.sat */
template <class F> long long kc_emu_sat_ll(F x) {
  if (x != x) return 0;
  if (x >= (F)9.2233720368547758e18) return INT64_MAX;
  if (x <= (F)-9.2233720368547758e18) return INT64_MIN;
  return (long long)x;
}
template <class F> unsigned long long kc_emu_sat_ull(F x) {
  if (x != x || x <= (F)0) return 0;
  if (x >= (F)1.8446744073709552e19) return UINT64_MAX;
  return (unsigned long long)x;
}
inline long long __float2ll_rz(float x) { return kc_emu_sat_ll(x); }
inline long long __double2ll_rz(double x) { return kc_emu_sat_ll(x); }
inline unsigned long long __float2ull_rz(float x) { return kc_emu_sat_ull(x); }
inline unsigned long long __double2ull_rz(double x) { return kc_emu_sat_ull(x); }

struct __half {
  unsigned short x;
};
inline float __half2float(__half h) {
  _Float16 f;
  memcpy(&f, &h.x, 2);
  return (float)f;
}
inline __half __float2half_rn(float v) {
  _Float16 f = (_Float16)v;
  __half h;
  memcpy(&h.x, &f, 2);
  return h;
}
inline __half __double2half(double v) {
  _Float16 f = (_Float16)v;
  __half h;
  memcpy(&h.x, &f, 2);
  return h;
}
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }

struct __nv_bfloat16 {
  unsigned short x;
};
inline float __bfloat162float(__nv_bfloat16 h) {
  uint32_t b = (uint32_t)h.x << 16;
  float f;
  memcpy(&f, &b, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t b;
  memcpy(&b, &v, 4);
  if (v != v) return __nv_bfloat16{(unsigned short)((b >> 16) | 0x40)}; /* quiet NaN */
  b += 0x7fff + ((b >> 16) & 1);
  return __nv_bfloat16{(unsigned short)(b >> 16)};
}
/* double -> bf16 in one rounding: round to float with the sticky bit kept in the last place */
inline __nv_bfloat16 __double2bfloat16(double d) {
  float f = (float)d;
  if (d == d && (double)f != d) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if (fabs((double)f) > fabs(d)) b -= 1;
    b |= 1;
    memcpy(&f, &b, 4);
  }
  return __float2bfloat16_rn(f);
}
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
