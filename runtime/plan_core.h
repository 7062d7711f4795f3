/*
 * runtime/plan_core.h - the graph-free core of the memory planner: first-fit placement of arena
 * blocks by liveness, and aligned buffers that only grow. The executor (runtime/executor.c)
 * plans every run through it.
 *
 * Invariants:
 *   - Offsets and sizes are multiples of KC_RT_ALIGN (64): every buffer is aligned for AVX-512.
 *   - Blocks are placed in order of their first node; a live block whose last use is before the
 *     new block's first node is dropped first, so two blocks overlap only when their live ranges
 *     [first, last] do not, and a kernel never writes over its own inputs.
 *   - live[] stays sorted by offset and holds at most one entry per placed block.
 */
#ifndef KERNC_RUNTIME_PLAN_CORE_H
#define KERNC_RUNTIME_PLAN_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KC_RT_ALIGN 64

/* One arena block live until node `last`. */
typedef struct kc_rt_block {
  size_t off, size;
  uint32_t last;
} kc_rt_block;

/*
 * Place a block of `bytes` bytes live over nodes [first, last], first fit among the blocks of
 * live[0..*nlive) still live at `first`; *total grows to the arena's end. Returns its offset, or
 * SIZE_MAX for zero bytes (nothing placed; dead blocks are still dropped). live[] must have room
 * for one more entry than blocks placed so far.
 */
size_t kc_plan_place(kc_rt_block *live, uint32_t *nlive, size_t *total, uint32_t first,
                     uint32_t last, size_t bytes);
/* Make *buf (KC_RT_ALIGN aligned, from this function) hold at least size bytes, keeping its
 * first `keep` bytes; false when out of memory (then *buf is unchanged). */
bool kc_plan_grow(unsigned char **buf, size_t *cap, size_t size, size_t keep);
/* Bytes one allocation may still take: MemAvailable + SwapFree of /proc/meminfo, lowered to
 * the cgroup's memory.max - memory.current (v1: limit_in_bytes - usage_in_bytes) and to limit
 * when limit > 0 (kc_options.memory_limit); UINT64_MAX when none of them can be read. */
uint64_t kc_plan_mem_available(uint64_t limit);
/* "12000 bytes", "8388608 bytes (8.0 MiB)", "... (1.5 GiB)" into buf; returns buf. */
const char *kc_plan_fmt_bytes(char *buf, size_t size, uint64_t bytes);

#endif /* KERNC_RUNTIME_PLAN_CORE_H */
