/*
 * tools/npz.c - NumPy .npz archives (see npz.h): the zip central directory is read from the end
 * record, each entry's data found through its local header, stored entries (method 0) taken as
 * they are and deflated ones (method 8, np.savez_compressed) inflated with zlib, then parsed
 * as .npy by kc_npy_read_mem. ZIP64 sizes and offsets (numpy writes entries with
 * force_zip64) are read from the 0x0001 extra field.
 * Invariants: every offset and length is checked against the buffer before it is read, so a
 * truncated or corrupt archive is an error naming the file, never a crash; the inflated size
 * must equal the size the directory records.
 */
#include "tools/npz.h"
#include "ir/internal.h"
#include "runtime/runtime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint32_t rd16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const unsigned char *p) { return rd16(p) | rd16(p + 2) << 16; }
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static kc_status corrupt(kc_context *ctx, const char *what, const char *why) {
  return kc_errorf(ctx, KC_ERR_IO, "%s: not a readable .npz archive: %s", what, why);
}

/* One central directory entry, sizes and offset widened by its ZIP64 extra field. */
typedef struct zentry {
  uint32_t method, name_len;
  uint64_t csize, usize, offset;
  const unsigned char *name;
} zentry;

/* The ZIP64 extra field replaces, in order, the fields that are 0xffffffff. */
static bool zip64_fields(zentry *e, const unsigned char *x, size_t len) {
  while (len >= 4) {
    uint32_t id = rd16(x), sz = rd16(x + 2);
    if (sz > len - 4) return false;
    if (id == 1) {
      const unsigned char *q = x + 4, *end = q + sz;
      uint64_t *f[] = {&e->usize, &e->csize, &e->offset};
      for (int k = 0; k < 3; k++) {
        if (*f[k] != 0xffffffffu) continue;
        if (end - q < 8) return false;
        *f[k] = rd64(q);
        q += 8;
      }
      return true;
    }
    x += 4 + sz;
    len -= 4 + sz;
  }
  return true;
}

/* The entry's data, inflated when deflated, into a malloc'd buffer of e->usize bytes. */
static kc_status entry_data(kc_context *ctx, const unsigned char *buf, size_t len, const zentry *e,
                            const char *what, unsigned char **out) {
  *out = NULL;
  if (e->offset > len || len - e->offset < 30 || rd32(buf + e->offset) != 0x04034b50)
    return corrupt(ctx, what, "an entry's local header is missing (truncated?)");
  uint64_t start = e->offset + 30 + rd16(buf + e->offset + 26) + rd16(buf + e->offset + 28);
  if (start > len || e->csize > len - start)
    return corrupt(ctx, what, "an entry's data runs past the end of the file (truncated?)");
  if (e->method != 0 && e->method != 8)
    return corrupt(ctx, what, "an entry is compressed with a method other than deflate");
  if (e->method == 0 && e->csize != e->usize)
    return corrupt(ctx, what, "a stored entry's sizes disagree");
  /* deflate expands at most ~1032:1: a larger recorded size is a lie, not a reason to
   * allocate it; zlib counts in 32 bits */
  if (e->usize > UINT32_MAX || e->csize > UINT32_MAX ||
      (e->method == 8 && e->usize > e->csize * 1032 + 64))
    return corrupt(ctx, what, "an entry's recorded size is implausible");
  unsigned char *data = malloc(e->usize ? (size_t)e->usize : 1);
  if (!data) return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
  if (e->method == 0) {
    memcpy(data, buf + start, (size_t)e->usize);
    *out = data;
    return KC_OK;
  }
  z_stream zs = {0};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) {
    free(data);
    return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory (zlib)", what);
  }
  zs.next_in = (unsigned char *)(buf + start);
  zs.avail_in = (uInt)e->csize;
  zs.next_out = data;
  zs.avail_out = (uInt)e->usize;
  bool ok = inflate(&zs, Z_FINISH) == Z_STREAM_END && zs.total_out == e->usize;
  inflateEnd(&zs);
  if (!ok) {
    free(data);
    return corrupt(ctx, what, "an entry does not inflate to its recorded size (corrupt data)");
  }
  *out = data;
  return KC_OK;
}

void cli_npz_free(cli_npz *z) {
  for (size_t i = 0; i < z->n; i++) {
    free(z->names[i]);
    kc_npy_free(&z->t[i]);
  }
  free(z->names);
  free(z->t);
  memset(z, 0, sizeof *z);
}

/* The end of central directory record: entry count, directory offset and size (ZIP64 aware). */
static kc_status find_dir(kc_context *ctx, const unsigned char *buf, size_t len, const char *what,
                          uint64_t *count, uint64_t *off, uint64_t *size) {
  size_t eocd = SIZE_MAX;
  for (size_t back = 22; back <= len && back <= 22 + 65535 && eocd == SIZE_MAX; back++)
    if (rd32(buf + len - back) == 0x06054b50) eocd = len - back;
  if (eocd == SIZE_MAX)
    return corrupt(ctx, what, "no end-of-directory record (truncated, or not a zip file)");
  *count = rd16(buf + eocd + 10);
  *size = rd32(buf + eocd + 12);
  *off = rd32(buf + eocd + 16);
  if ((*count == 0xffff || *off == 0xffffffffu || *size == 0xffffffffu) && eocd >= 20 &&
      rd32(buf + eocd - 20) == 0x07064b50) {
    uint64_t z64 = rd64(buf + eocd - 20 + 8);
    if (z64 > len || len - z64 < 56 || rd32(buf + z64) != 0x06064b50)
      return corrupt(ctx, what, "a broken ZIP64 end-of-directory record");
    *count = rd64(buf + z64 + 32);
    *size = rd64(buf + z64 + 40);
    *off = rd64(buf + z64 + 48);
  }
  if (*off > len || *size > len - *off)
    return corrupt(ctx, what, "the central directory lies outside the file (truncated?)");
  return KC_OK;
}

/* Parse the central directory entry at buf[*p], advancing *p. */
static bool read_entry(const unsigned char *buf, uint64_t end, uint64_t *p, zentry *e) {
  if (end - *p < 46 || rd32(buf + *p) != 0x02014b50) return false;
  const unsigned char *c = buf + *p;
  uint32_t nl = rd16(c + 28), xl = rd16(c + 30), cl = rd16(c + 32);
  if (end - *p - 46 < (uint64_t)nl + xl + cl) return false;
  *e = (zentry){rd16(c + 10), nl, rd32(c + 20), rd32(c + 24), rd32(c + 42), c + 46};
  if (!zip64_fields(e, c + 46 + nl, xl)) return false;
  *p += 46 + (uint64_t)nl + xl + cl;
  return true;
}

kc_status cli_npz_read_mem(kc_context *ctx, const unsigned char *buf, size_t len, const char *what,
                           cli_npz *z) {
  memset(z, 0, sizeof *z);
  uint64_t count = 0, off = 0, size = 0;
  kc_status s = find_dir(ctx, buf, len, what, &count, &off, &size);
  if (s != KC_OK) return s;
  if (count > size / 46) return corrupt(ctx, what, "more entries than the directory holds");
  z->names = calloc(count + 1, sizeof *z->names);
  z->t = calloc(count + 1, sizeof *z->t);
  if (!z->names || !z->t) {
    cli_npz_free(z);
    return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
  }
  uint64_t p = off, end = off + size;
  for (uint64_t i = 0; i < count && s == KC_OK; i++) {
    zentry e;
    if (!read_entry(buf, end, &p, &e)) {
      s = corrupt(ctx, what, "a broken central directory entry");
      break;
    }
    if (e.name_len < 5 || memcmp(e.name + e.name_len - 4, ".npy", 4) != 0) continue;
    char *name = malloc(e.name_len - 3), entry[512];
    if (!name) {
      s = kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
      break;
    }
    memcpy(name, e.name, e.name_len - 4);
    name[e.name_len - 4] = 0;
    z->names[z->n] = name;
    unsigned char *data;
    snprintf(entry, sizeof entry, "%s (entry '%s.npy')", what, name);
    s = entry_data(ctx, buf, len, &e, entry, &data);
    if (s == KC_OK) s = kc_npy_read_mem(ctx, data, (size_t)e.usize, entry, &z->t[z->n]);
    free(data);
    z->n++; /* freed with the rest, read or not */
  }
  if (s != KC_OK) cli_npz_free(z);
  return s;
}

kc_status cli_npz_read(kc_context *ctx, const char *path, cli_npz *z) {
  memset(z, 0, sizeof *z);
  unsigned char *buf;
  size_t len;
  kc_status s = kc_read_regular(ctx, path, &buf, &len);
  if (s == KC_OK) s = cli_npz_read_mem(ctx, buf, len, path, z);
  free(buf);
  return s;
}
