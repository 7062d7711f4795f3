/*
 * runtime/safetensors.h - safetensors files (runtime/safetensors.c): 8-byte little-endian header
 * length, a JSON header {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 * ..., "__metadata__": {string: string}}, then the data (offsets relative to its start).
 *
 * Invariants: the reader accepts only what it has checked: the header is a JSON object of
 * exactly that form (no duplicate names), every tensor's byte range lies inside the data, matches
 * its dtype and shape, and overlaps no other; anything else is an error naming the file and what
 * is wrong, never a crash. Graph-free and LLVM-free.
 */
#ifndef KERNC_RUNTIME_SAFETENSORS_H
#define KERNC_RUNTIME_SAFETENSORS_H

#include "kernc.h"

#include <stddef.h>
#include <stdint.h>

/* A tensor to write. */
typedef struct kc_st_tensor {
  const char *name;
  kc_dtype dtype;
  int rank;
  const int64_t *dims;
  const void *data;
} kc_st_tensor;

/* Write n tensors (in this order, data back to back) and nmeta metadata pairs meta[2k] (key),
 * meta[2k+1] (value) to path. */
kc_status kc_st_write(kc_context *ctx, const char *path, const kc_st_tensor *ts, uint32_t n,
                      const char *const *meta, uint32_t nmeta);

/* A tensor read: its data points into the file's buffer. */
typedef struct kc_st_entry {
  char *name;
  kc_dtype dtype;
  int rank;
  int64_t dims[KC_MAX_RANK];
  const void *data;
  size_t nbytes;
} kc_st_entry;

typedef struct kc_st_file {
  unsigned char *buf; /* the whole file */
  kc_st_entry *e;
  uint32_t n;
  char **meta; /* key, value, key, value ... */
  uint32_t nmeta;
} kc_st_file;

/* Read and check path (what appears in messages is the path). */
kc_status kc_st_read(kc_context *ctx, const char *path, kc_st_file *out);
/* The same from memory (copied); what names the source in messages. */
kc_status kc_st_parse(kc_context *ctx, const void *buf, size_t len, const char *what,
                      kc_st_file *out);
void kc_st_free(kc_st_file *f);
/* The entry named name, or NULL; the metadata value of key, or NULL. */
const kc_st_entry *kc_st_find(const kc_st_file *f, const char *name);
const char *kc_st_meta(const kc_st_file *f, const char *key);

#endif /* KERNC_RUNTIME_SAFETENSORS_H */
