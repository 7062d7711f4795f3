/*
 * runtime/plan_core.c - first-fit arena placement by liveness and growing aligned buffers (see
 * runtime/plan_core.h). Graph-free: it is part of libkernc and of the runtime archive that
 * compiled models link (kernc_rt).
 */
#include "runtime/plan_core.h"

#include <stdlib.h>
#include <string.h>

#define ROUND_UP(x) (((x) + KC_RT_ALIGN - 1) / KC_RT_ALIGN * KC_RT_ALIGN)

/* Lowest offset where size bytes fit between the live blocks (sorted by offset). */
static size_t first_fit(const kc_rt_block *live, uint32_t n, size_t size, uint32_t *at) {
  size_t cur = 0;
  uint32_t i = 0;
  for (; i < n; i++) {
    if (live[i].off >= cur + size) break;
    if (live[i].off + live[i].size > cur) cur = live[i].off + live[i].size;
  }
  *at = i;
  return cur;
}

size_t kc_plan_place(kc_rt_block *live, uint32_t *nlive, size_t *total, uint32_t first,
                     uint32_t last, size_t bytes) {
  uint32_t w = 0;
  for (uint32_t i = 0; i < *nlive; i++) /* drop blocks dead before this node */
    if (live[i].last >= first) live[w++] = live[i];
  *nlive = w;
  size_t size = ROUND_UP(bytes);
  if (!size) return SIZE_MAX;
  uint32_t at;
  size_t off = first_fit(live, *nlive, size, &at);
  memmove(&live[at + 1], &live[at], (*nlive - at) * sizeof *live);
  live[at] = (kc_rt_block){off, size, last};
  (*nlive)++;
  if (off + size > *total) *total = off + size;
  return off;
}

bool kc_plan_grow(unsigned char **buf, size_t *cap, size_t size, size_t keep) {
  if (size <= *cap && *buf) return true;
  unsigned char *nb = aligned_alloc(KC_RT_ALIGN, size ? ROUND_UP(size) : KC_RT_ALIGN);
  if (!nb) return false;
  if (keep && *buf) memcpy(nb, *buf, keep);
  free(*buf);
  *buf = nb;
  *cap = size ? ROUND_UP(size) : KC_RT_ALIGN;
  return true;
}
