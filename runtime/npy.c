/*
 * runtime/npy.c - NumPy .npy files (format 1.0, 2.0 and 3.0) to and from kc_tensor_desc, for
 * `kernc run` and tests.
 *
 * Read: the magic, the version, a little-endian header length (2 bytes in 1.0, 4 after), then a
 * Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } and the raw
 * C-order data. Only little-endian (or byte-order-free) plain numeric and bool dtypes are
 * taken; Fortran order, big-endian, structured and object arrays are refused with a message
 * that says which. Write: version 1.0 (a header of rank <= 8 always fits its 2-byte length),
 * padded with spaces so the data starts at a multiple of 64 bytes, as numpy itself does.
 * Invariants: a read descriptor owns its malloc'd data (kc_npy_free); no input, however
 * malformed, makes these functions crash or read out of bounds.
 */
#include "runtime/runtime.h"

#include "ir/internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char MAGIC[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

typedef struct npy_type {
  char kind; /* numpy kind letter */
  int size;
  kc_dtype dtype;
} npy_type;

static const npy_type TYPES[] = {
    {'f', 4, KC_F32}, {'f', 8, KC_F64}, {'f', 2, KC_F16}, {'i', 8, KC_I64},
    {'i', 4, KC_I32}, {'i', 2, KC_I16}, {'i', 1, KC_I8},  {'u', 8, KC_U64},
    {'u', 4, KC_U32}, {'u', 2, KC_U16}, {'u', 1, KC_U8},  {'b', 1, KC_BOOL},
};
#define NTYPES (sizeof TYPES / sizeof *TYPES)

/* The text after key 'name' and its colon in the header dict, or NULL. */
static const char *dict_value(const char *h, const char *name) {
  size_t n = strlen(name);
  for (const char *p = h; (p = strpbrk(p, "'\"")); p++) {
    if (strncmp(p + 1, name, n) == 0 && p[n + 1] == p[0]) {
      const char *q = p + n + 2;
      while (isspace((unsigned char)*q))
        q++;
      if (*q != ':') return NULL;
      q++;
      while (isspace((unsigned char)*q))
        q++;
      return q;
    }
  }
  return NULL;
}

static kc_status bad(kc_context *ctx, const char *what, const char *fmt, const char *detail) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, detail);
  return kc_errorf(ctx, KC_ERR_PARSE, "%s: not a .npy file kernc can read: %s", what, msg);
}

static kc_status parse_descr(kc_context *ctx, const char *what, const char *h, kc_dtype *out) {
  const char *v = dict_value(h, "descr");
  if (!v) return bad(ctx, what, "%sthe header has no 'descr'", "");
  if (*v != '\'' && *v != '"')
    return bad(ctx, what, "%sstructured or non-string 'descr' (only plain dtypes are read)", "");
  char q = *v++, d[32];
  size_t n = 0;
  while (v[n] && v[n] != q && n < sizeof d - 1) {
    d[n] = v[n];
    n++;
  }
  d[n] = 0;
  if (v[n] != q) return bad(ctx, what, "%sunterminated 'descr'", "");
  char order = d[0], kind = d[1];
  int size = atoi(d + 2);
  if (n < 3 || !strchr("<>|=", order) || !isdigit((unsigned char)d[2]))
    return bad(ctx, what, "dtype '%s' is not a plain numeric dtype", d);
  if (kind == 'O') return bad(ctx, what, "dtype '%s' is an object array", d);
  if (order == '>' && size > 1)
    return bad(ctx, what, "dtype '%s' is big-endian (only little-endian is read)", d);
  for (size_t i = 0; i < NTYPES; i++)
    if (TYPES[i].kind == kind && TYPES[i].size == size) {
      *out = TYPES[i].dtype;
      return KC_OK;
    }
  return bad(ctx, what, "dtype '%s' is not one kernc has", d);
}

static kc_status parse_shape(kc_context *ctx, const char *what, const char *h, kc_tensor_desc *t) {
  const char *v = dict_value(h, "shape");
  if (!v || *v != '(') return bad(ctx, what, "%sthe header has no 'shape' tuple", "");
  v++;
  t->rank = 0;
  for (;;) {
    while (isspace((unsigned char)*v))
      v++;
    if (*v == ')') return KC_OK;
    if (!isdigit((unsigned char)*v)) return bad(ctx, what, "%s'shape' is not a tuple of sizes", "");
    if (t->rank == KC_MAX_RANK) return bad(ctx, what, "%smore than 8 dimensions", "");
    errno = 0;
    char *end;
    long long d = strtoll(v, &end, 10);
    if (errno || d < 0) return bad(ctx, what, "%sa dimension is out of range", "");
    t->dims[t->rank++] = d;
    v = end;
    while (isspace((unsigned char)*v))
      v++;
    if (*v == 'L') v++; /* Python 2 longs */
    if (*v == ',')
      v++;
    else if (*v != ')')
      return bad(ctx, what, "%s'shape' is not a tuple of sizes", "");
  }
}

kc_status kc_npy_read_mem(kc_context *ctx, const void *buf, size_t len, const char *what,
                          kc_tensor_desc *out) {
  memset(out, 0, sizeof *out);
  const unsigned char *p = buf;
  if (len < 10 || memcmp(p, MAGIC, sizeof MAGIC) != 0)
    return bad(ctx, what, "%sno \\x93NUMPY magic", "");
  int major = p[6];
  if (major < 1 || major > 3) {
    char v[16];
    snprintf(v, sizeof v, "%d.%d", major, p[7]);
    return bad(ctx, what, "format version %s (1.0, 2.0 and 3.0 are read)", v);
  }
  size_t hl, start;
  if (major == 1) {
    hl = (size_t)p[8] | (size_t)p[9] << 8;
    start = 10;
  } else {
    if (len < 12) return bad(ctx, what, "%struncated header", "");
    hl = (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
    start = 12;
  }
  if (hl > len - start) return bad(ctx, what, "%struncated header", "");
  char *h = malloc(hl + 1);
  if (!h) return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
  memcpy(h, p + start, hl);
  h[hl] = 0;
  kc_status s = memchr(h, 0, hl) ? bad(ctx, what, "%sNUL byte in the header", "") : KC_OK;
  const char *fo = s == KC_OK ? dict_value(h, "fortran_order") : NULL;
  if (s == KC_OK && !fo) s = bad(ctx, what, "%sthe header has no 'fortran_order'", "");
  if (s == KC_OK && strncmp(fo, "True", 4) == 0)
    s = bad(ctx, what, "%sFortran-order array (save it with np.ascontiguousarray)", "");
  else if (s == KC_OK && strncmp(fo, "False", 5) != 0)
    s = bad(ctx, what, "%s'fortran_order' is neither True nor False", "");
  if (s == KC_OK) s = parse_descr(ctx, what, h, &out->dtype);
  if (s == KC_OK) s = parse_shape(ctx, what, h, out);
  free(h);
  if (s != KC_OK) return s;
  size_t bytes = kc_dtype_size(out->dtype);
  for (int i = 0; i < out->rank; i++) {
    if (out->dims[i] && bytes > SIZE_MAX / (size_t)out->dims[i])
      return bad(ctx, what, "%sthe array is too large", "");
    bytes *= (size_t)out->dims[i];
  }
  size_t have = len - start - hl;
  if (have != bytes) {
    char d[96];
    snprintf(d, sizeof d, "%zu bytes of data where the header says %zu", have, bytes);
    return bad(ctx, what, "%s", d);
  }
  out->data = malloc(bytes ? bytes : 1);
  if (!out->data) return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
  memcpy(out->data, p + start + hl, bytes);
  return KC_OK;
}

kc_status kc_npy_read(kc_context *ctx, const char *path, kc_tensor_desc *out) {
  memset(out, 0, sizeof *out);
  unsigned char *buf;
  size_t len;
  kc_status s = kc_read_regular(ctx, path, &buf, &len);
  if (s == KC_OK) s = kc_npy_read_mem(ctx, buf, len, path, out);
  free(buf);
  return s;
}

void kc_npy_free(kc_tensor_desc *t) {
  if (!t) return;
  free(t->data);
  t->data = NULL;
}

static const char *descr_of(kc_dtype t) {
  switch (t) {
  case KC_F32: return "<f4";
  case KC_F64: return "<f8";
  case KC_F16: return "<f2";
  case KC_BF16: return "<u2"; /* numpy has no bfloat16: the bits, as the ONNX test data does */
  case KC_I64: return "<i8";
  case KC_I32: return "<i4";
  case KC_I16: return "<i2";
  case KC_I8: return "|i1";
  case KC_U64: return "<u8";
  case KC_U32: return "<u4";
  case KC_U16: return "<u2";
  case KC_U8: return "|u1";
  case KC_BOOL: return "|b1";
  default: return NULL;
  }
}

kc_status kc_npy_write(kc_context *ctx, const char *path, const kc_tensor_desc *t) {
  const char *descr = descr_of(t->dtype);
  if (!descr || t->rank < 0 || t->rank > KC_MAX_RANK)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "%s: cannot write a %s tensor of rank %d as .npy",
                     path, kc_dtype_name(t->dtype), t->rank);
  char h[512];
  size_t l =
      (size_t)snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  size_t bytes = kc_dtype_size(t->dtype);
  for (int i = 0; i < t->rank; i++) {
    l += (size_t)snprintf(h + l, sizeof h - l, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
    bytes *= (size_t)t->dims[i];
  }
  /* numpy writes a 1-tuple as (3,) */
  l += (size_t)snprintf(h + l, sizeof h - l, "%s), }", t->rank == 1 ? "," : "");
  /* magic(6) + version(2) + length(2) + header + '\n' padded to 64 */
  size_t total = (10 + l + 1 + 63) / 64 * 64;
  while (10 + l + 1 < total)
    h[l++] = ' ';
  h[l++] = '\n';
  FILE *f = fopen(path, "wb");
  if (!f) return kc_errorf(ctx, KC_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
  unsigned char pre[10];
  memcpy(pre, MAGIC, 6);
  pre[6] = 1;
  pre[7] = 0;
  pre[8] = (unsigned char)(l & 0xff);
  pre[9] = (unsigned char)(l >> 8);
  bool ok = fwrite(pre, 1, 10, f) == 10 && fwrite(h, 1, l, f) == l &&
            (!bytes || fwrite(t->data, 1, bytes, f) == bytes);
  ok = fclose(f) == 0 && ok;
  return ok ? KC_OK : kc_errorf(ctx, KC_ERR_IO, "%s: write failed: %s", path, strerror(errno));
}
