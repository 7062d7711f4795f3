/*
 * tests/cuda_emu/fake_cuda.c - a host emulation of the part of the CUDA driver API kernc uses,
 * built as libcuda.so.1 for tests only: with it first on LD_LIBRARY_PATH (and fake_nvrtc.c's
 * libnvrtc), the CUDA target runs on a machine without a GPU, through the same runtime code
 * (runtime/cuda_exec.c, codegen/cuda/driver.c) as on a device.
 *
 * What it emulates:
 *   - "device" memory is host memory, filled with a garbage pattern at allocation as a GPU's
 *     would be, so a kernel that reads what nobody wrote shows it;
 *   - a "module image" is the path of a shared object that fake_nvrtc.c compiled from the CUDA
 *     C; a kernel launch runs the blocks one after the other, and a block's threads as
 *     coroutines: __syncthreads is a barrier of the block, a warp shuffle one of the warp. On
 *     x86-64 a coroutine switch is six register pushes and a stack swap (switch_stack below);
 *     ucontext's swapcontext, the fallback elsewhere, makes two system calls per switch, which
 *     made the emulated test suite spend most of its time in the kernel;
 *     __shared__ arrays are statics, right because blocks never overlap in time.
 * What it does not: concurrency between blocks (so races between blocks and missing atomics are
 * not found), timing, memory limits, streams. A deadlock (threads waiting at different barriers)
 * fails the launch with CUDA_ERROR_LAUNCH_FAILED and a message on stderr.
 * Invariants: one launch at a time (kernc synchronizes), the API is not thread-safe.
 */
#define _GNU_SOURCE
#include "include/kc_emu_abi.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

typedef int cu_result;
typedef unsigned long long cu_ptr;
enum {
  CU_OK = 0,
  CU_ERR_OUT_OF_MEMORY = 2,
  CU_ERR_INVALID_IMAGE = 200,
  CU_ERR_NOT_FOUND = 500,
  CU_ERR_LAUNCH_FAILED = 719
};
enum { ATTR_CC_MAJOR = 75, ATTR_CC_MINOR = 76 };
enum { STACK_BYTES = 256 * 1024, MAX_BLOCK = 1024 };

typedef enum { READY, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE } thread_state;

#if defined(__x86_64__)
/* A coroutine's saved state is its stack pointer: switch_stack(&from, to) pushes the
 * callee-saved registers, MXCSR and the x87 control word (what the SysV ABI says a call
 * preserves), stores the stack pointer in *from, loads to and pops the same from there. */
typedef void *coroutine;
void kc_emu_switch_stack(coroutine *from, coroutine to);
__asm__(".text\n"
        ".globl kc_emu_switch_stack\n"
        ".hidden kc_emu_switch_stack\n"
        ".type kc_emu_switch_stack, @function\n"
        "kc_emu_switch_stack:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size kc_emu_switch_stack, . - kc_emu_switch_stack\n");
#define switch_stack kc_emu_switch_stack
#else
typedef ucontext_t coroutine;
static void switch_stack(coroutine *from, coroutine *to) { swapcontext(from, to); }
#endif

typedef struct emu_thread {
  kc_emu_thread builtins;
  coroutine ctx;
  thread_state state;
} emu_thread;

/* The emulated block: process-wide because a kernel's built-ins reach it through kc_emu_api's
 * plain function pointers; one launch runs at a time. */
static struct {
  emu_thread thread[MAX_BLOCK];
  kc_emu_warp warp[MAX_BLOCK / 32];
  char *stack[MAX_BLOCK];
  coroutine scheduler;
  unsigned running;
  void (*entry)(const void *);
  const void *args;
} blk;

static kc_emu_thread *current(void) { return &blk.thread[blk.running].builtins; }

#if defined(__x86_64__)
#define SWITCH(from, to) switch_stack(&(from), (to))
#else
#define SWITCH(from, to) switch_stack(&(from), &(to))
#endif

static void wait_as(thread_state s) {
  emu_thread *t = &blk.thread[blk.running];
  t->state = s;
  SWITCH(t->ctx, blk.scheduler);
}

static void sync_block(void) { wait_as(AT_BLOCK_BARRIER); }
static void sync_warp(void) { wait_as(AT_WARP_BARRIER); }

static const kc_emu_api api = {current, sync_block, sync_warp};

/* A thread's first frame: it runs the kernel, then hands control back for good. */
static void thread_main(void) {
  blk.entry(blk.args);
  blk.thread[blk.running].state = DONE;
  SWITCH(blk.thread[blk.running].ctx, blk.scheduler);
}

/* Make thread t's coroutine start thread_main on its stack. */
static void start_thread(unsigned t) {
#if defined(__x86_64__)
  /* the frame switch_stack pops: the control words (MXCSR's default, 0x1f80, and the x87
   * control word's, 0x037f), six registers, then thread_main as the return address, entered
   * with the stack aligned as after a call (a zero return address of its own above it) */
  uint64_t *top = (uint64_t *)(blk.stack[t] + STACK_BYTES);
  uint64_t *sp = top - 2 - 7;
  memset(sp, 0, 9 * sizeof *sp);
  sp[0] = 0x1f80 | (uint64_t)0x037f << 32;
  void (*entry)(void) = thread_main;
  memcpy(&sp[7], &entry, sizeof entry);
  blk.thread[t].ctx = sp;
#else
  emu_thread *e = &blk.thread[t];
  getcontext(&e->ctx);
  e->ctx.uc_stack.ss_sp = blk.stack[t];
  e->ctx.uc_stack.ss_size = STACK_BYTES;
  e->ctx.uc_link = NULL;
  makecontext(&e->ctx, thread_main, 0);
#endif
}

/* Release the threads waiting at a barrier every live member of its group has reached
 * (threads that returned count as arrived, as on the hardware). */
static bool release(unsigned first, unsigned end, thread_state barrier) {
  unsigned live = 0, waiting = 0;
  for (unsigned t = first; t < end; t++) {
    live += blk.thread[t].state != DONE;
    waiting += blk.thread[t].state == barrier;
  }
  if (!waiting || waiting != live) return false;
  for (unsigned t = first; t < end; t++)
    if (blk.thread[t].state == barrier) blk.thread[t].state = READY;
  return true;
}

static int run_block(unsigned bx, unsigned grid, unsigned block) {
  for (unsigned t = 0; t < block; t++) {
    if (!blk.stack[t] && !(blk.stack[t] = malloc(STACK_BYTES))) return -1;
    emu_thread *e = &blk.thread[t];
    e->builtins = (kc_emu_thread){.tid = {t, 0, 0},
                                  .bid = {bx, 0, 0},
                                  .bdim = {block, 1, 1},
                                  .gdim = {grid, 1, 1},
                                  .lane = (int)(t & 31),
                                  .warp = &blk.warp[t / 32]};
    e->state = READY;
    start_thread(t);
  }
  for (;;) {
    bool progress = false;
    for (unsigned t = 0; t < block; t++)
      if (blk.thread[t].state == READY) {
        blk.running = t;
        SWITCH(blk.scheduler, blk.thread[t].ctx);
        progress = true;
      }
    unsigned done = 0;
    for (unsigned t = 0; t < block; t++)
      done += blk.thread[t].state == DONE;
    if (done == block) return 0;
    progress |= release(0, block, AT_BLOCK_BARRIER);
    for (unsigned w = 0; w < block; w += 32)
      progress |= release(w, w + 32 < block ? w + 32 : block, AT_WARP_BARRIER);
    if (!progress) {
      fprintf(stderr,
              "fake cuda: deadlock in block %u: %u of %u threads returned, the rest wait "
              "at different barriers\n",
              bx, done, block);
      return -1;
    }
  }
}

cu_result cuInit(unsigned flags) { return (void)flags, CU_OK; }
cu_result cuDeviceGetCount(int *n) { return *n = 1, CU_OK; }
cu_result cuDeviceGet(int *dev, int ordinal) { return (void)ordinal, *dev = 0, CU_OK; }
cu_result cuDeviceGetAttribute(int *v, int attr, int dev) {
  (void)dev;
  *v = attr == ATTR_CC_MAJOR ? 8 : 0; /* an sm_80 */
  return CU_OK;
}
cu_result cuDeviceGetName(char *buf, int len, int dev) {
  (void)dev;
  snprintf(buf, (size_t)len, "kernc host emulation (tests/cuda_emu, not a GPU)");
  return CU_OK;
}
cu_result cuDevicePrimaryCtxRetain(void **pctx, int dev) { return (void)dev, *pctx = &blk, CU_OK; }
cu_result cuDevicePrimaryCtxRelease_v2(int dev) { return (void)dev, CU_OK; }
cu_result cuCtxSetCurrent(void *pctx) { return (void)pctx, CU_OK; }
cu_result cuCtxSynchronize(void) { return CU_OK; }

cu_result cuMemAlloc_v2(cu_ptr *p, size_t n) {
  size_t size = (n + 255) / 256 * 256;
  void *m = aligned_alloc(256, size ? size : 256);
  if (!m) return CU_ERR_OUT_OF_MEMORY;
  memset(m, 0xcd, size);
  *p = (cu_ptr)(uintptr_t)m;
  return CU_OK;
}
cu_result cuMemFree_v2(cu_ptr p) { return free((void *)(uintptr_t)p), CU_OK; }
cu_result cuMemcpyHtoD_v2(cu_ptr dst, const void *src, size_t n) {
  return memcpy((void *)(uintptr_t)dst, src, n), CU_OK;
}
cu_result cuMemcpyDtoH_v2(void *dst, cu_ptr src, size_t n) {
  return memcpy(dst, (const void *)(uintptr_t)src, n), CU_OK;
}
cu_result cuMemcpyDtoD_v2(cu_ptr dst, cu_ptr src, size_t n) {
  return memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n), CU_OK;
}

cu_result cuModuleLoadData(void **mod, const void *image) {
  void *h = dlopen((const char *)image, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "fake cuda: %s\n", dlerror());
    return CU_ERR_INVALID_IMAGE;
  }
  void *bind = dlsym(h, "kc_emu_bind");
  if (!bind) {
    dlclose(h);
    return CU_ERR_INVALID_IMAGE;
  }
  void (*bind_fn)(const kc_emu_api *);
  memcpy(&bind_fn, &bind, sizeof bind);
  bind_fn(&api);
  *mod = h;
  return CU_OK;
}
cu_result cuModuleUnload(void *mod) { return dlclose(mod), CU_OK; }
cu_result cuModuleGetFunction(void **fn, void *mod, const char *name) {
  char sym[512];
  snprintf(sym, sizeof sym, "%s" KC_EMU_ENTRY_SUFFIX, name);
  *fn = dlsym(mod, sym);
  return *fn ? CU_OK : CU_ERR_NOT_FOUND;
}

cu_result cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                         unsigned bz, unsigned shared_bytes, void *stream, void **params,
                         void **extra) {
  (void)shared_bytes, (void)stream, (void)extra;
  if (gy != 1 || gz != 1 || by != 1 || bz != 1 || bx == 0 || bx > MAX_BLOCK) {
    fprintf(stderr, "fake cuda: launch shape %ux%ux%u / %ux%ux%u not emulated\n", gx, gy, gz, bx,
            by, bz);
    return CU_ERR_LAUNCH_FAILED;
  }
  memcpy(&blk.entry, &fn, sizeof fn);
  blk.args = params[0];
  for (unsigned b = 0; b < gx; b++)
    if (run_block(b, gx, bx) != 0) return CU_ERR_LAUNCH_FAILED;
  return CU_OK;
}

cu_result cuGetErrorName(cu_result r, const char **s) {
  *s = r == CU_ERR_LAUNCH_FAILED   ? "CUDA_ERROR_LAUNCH_FAILED"
       : r == CU_ERR_OUT_OF_MEMORY ? "CUDA_ERROR_OUT_OF_MEMORY"
       : r == CU_ERR_INVALID_IMAGE ? "CUDA_ERROR_INVALID_IMAGE"
       : r == CU_ERR_NOT_FOUND     ? "CUDA_ERROR_NOT_FOUND"
                                   : "CUDA_ERROR_UNKNOWN";
  return CU_OK;
}
