/*
 * runtime/plan_core.c - first-fit arena placement by liveness, growing aligned buffers, and the
 * memory the machine has left for them (see runtime/plan_core.h). Graph-free: it is part of
 * libkernc and of the runtime archive that compiled models link (kernc_rt).
 *
 * Why the memory check: Linux overcommits, so malloc of more than the machine has left often
 * succeeds and the process is OOM-killed when the pages are touched. Comparing a big allocation
 * with MemAvailable (and the cgroup's limit) first turns that into an error naming both sizes.
 */
#include "runtime/plan_core.h"

#include <stdio.h>
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

/* The number after key ("MemAvailable:") in /proc/meminfo's text, in bytes; false if none. */
static bool meminfo_field(const char *text, const char *key, uint64_t *out) {
  const char *p = strstr(text, key);
  if (!p) return false;
  unsigned long long v;
  if (sscanf(p + strlen(key), " %llu", &v) != 1) return false;
  *out = (uint64_t)v * 1024; /* /proc/meminfo counts kB */
  return true;
}

/* The first number in file path ("max" and unreadable files: false). */
static bool file_u64(const char *path, uint64_t *out) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  unsigned long long v;
  bool ok = fscanf(f, "%llu", &v) == 1;
  fclose(f);
  if (ok) *out = (uint64_t)v;
  return ok;
}

uint64_t kc_plan_mem_available(uint64_t limit) {
  uint64_t avail = UINT64_MAX, a, b;
  FILE *f = fopen("/proc/meminfo", "r");
  if (f) {
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    if (meminfo_field(text, "MemAvailable:", &a)) {
      avail = a;
      if (meminfo_field(text, "SwapFree:", &b)) avail += b; /* swapped, not killed */
    }
  }
  /* cgroup v2, then v1: the container's limit less what it uses */
  if ((file_u64("/sys/fs/cgroup/memory.max", &a) &&
       file_u64("/sys/fs/cgroup/memory.current", &b)) ||
      (file_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes", &a) &&
       file_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes", &b))) {
    uint64_t left = a > b ? a - b : 0;
    if (left < avail) avail = left;
  }
  if (limit && limit < avail) avail = limit;
  return avail;
}

const char *kc_plan_fmt_bytes(char *buf, size_t size, uint64_t bytes) {
  if (bytes < ((uint64_t)1 << 20))
    snprintf(buf, size, "%llu bytes", (unsigned long long)bytes);
  else
    snprintf(buf, size, "%llu bytes (%.1f %s)", (unsigned long long)bytes,
             bytes >= ((uint64_t)1 << 30) ? bytes / 1073741824.0 : bytes / 1048576.0,
             bytes >= ((uint64_t)1 << 30) ? "GiB" : "MiB");
  return buf;
}
