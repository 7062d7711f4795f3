/*
 * frontend/onnx_tensor.c - ONNX TensorProto to kernc tensor data: dtype mapping, raw_data and
 * the typed fields, and external data read relative to the model's folder.
 *
 * Invariants:
 *   - Every size is checked before it is used: dims are non-negative and their product does
 *     not overflow, the bytes present equal the bytes the dims ask for, an external range lies
 *     inside its file. A malformed tensor is an error, never an out-of-bounds read.
 *   - Bytes already in the right layout (raw_data, float_data for f32, int64_data...) are
 *     borrowed from the message, which lives as long as the arena it was unpacked into; only
 *     narrowed typed fields and external data are written to the arena.
 *   - External data never leaves the model's folder: absolute locations, `..` components and
 *     symlinks resolving outside are refused. It is a regular file: a FIFO, device or folder is
 *     refused before anything could block on it (opened O_NONBLOCK, then fstat).
 */
/* realpath is XSI */
#define _XOPEN_SOURCE 700
#include "onnx_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ONNX TensorProto.DataType numbers (onnx.proto), including those newer than Debian's copy. */
static const struct {
  const char *name;
  kc_dtype dt;
} onnx_types[] = {
    [0] = {"undefined", KC_DT_NONE},
    [1] = {"float", KC_F32},
    [2] = {"uint8", KC_U8},
    [3] = {"int8", KC_I8},
    [4] = {"uint16", KC_U16},
    [5] = {"int16", KC_I16},
    [6] = {"int32", KC_I32},
    [7] = {"int64", KC_I64},
    [8] = {"string", KC_DT_NONE},
    [9] = {"bool", KC_BOOL},
    [10] = {"float16", KC_F16},
    [11] = {"double", KC_F64},
    [12] = {"uint32", KC_U32},
    [13] = {"uint64", KC_U64},
    [14] = {"complex64", KC_DT_NONE},
    [15] = {"complex128", KC_DT_NONE},
    [16] = {"bfloat16", KC_BF16},
    [17] = {"float8e4m3fn", KC_DT_NONE},
    [18] = {"float8e4m3fnuz", KC_DT_NONE},
    [19] = {"float8e5m2", KC_DT_NONE},
    [20] = {"float8e5m2fnuz", KC_DT_NONE},
    [21] = {"uint4", KC_DT_NONE},
    [22] = {"int4", KC_DT_NONE},
    [23] = {"float4e2m1", KC_DT_NONE},
    [24] = {"float8e8m0", KC_DT_NONE},
    [25] = {"uint2", KC_DT_NONE},
    [26] = {"int2", KC_DT_NONE},
};
#define N_ONNX_TYPES ((int64_t)(sizeof onnx_types / sizeof *onnx_types))

kc_dtype kc_onnx_dtype(int64_t t) { return t >= 0 && t < N_ONNX_TYPES ? onnx_types[t].dt : 0; }

const char *kc_onnx_dtype_name(int64_t t) {
  return t >= 0 && t < N_ONNX_TYPES ? onnx_types[t].name : "unknown";
}

/* A zero-element tensor still gets a non-NULL data pointer ("bound, empty"). */
static const unsigned char empty_data[8];

/* Strict decimal parse of an external-data offset/length. */
static bool parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s) return false;
  uint64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    if (v > (UINT64_MAX - 9) / 10) return false;
    v = v * 10 + (uint64_t)(*s - '0');
  }
  *out = v;
  return true;
}

/* True when a relative path has a ".." component. */
static bool has_dotdot(const char *p) {
  while (*p) {
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 2 && p[0] == '.' && p[1] == '.') return true;
    if (!e) break;
    p = e + 1;
  }
  return false;
}

/* Read nbytes of external data described by tp into the arena. */
static kc_status read_external(kc_context *ctx, kc_arena *arena, const Onnx__TensorProto *tp,
                               const char *dir, const char *what, size_t nbytes,
                               const void **data) {
  const char *loc = NULL;
  uint64_t off = 0, len = 0;
  bool has_len = false;
  for (size_t i = 0; i < tp->n_external_data; i++) {
    const Onnx__StringStringEntryProto *e = tp->external_data[i];
    if (!e || !e->key) continue;
    if (strcmp(e->key, "location") == 0) {
      loc = e->value;
    } else if (strcmp(e->key, "offset") == 0) {
      if (!parse_u64(e->value, &off))
        return kc_errorf(ctx, KC_ERR_PARSE, "%s: bad external data offset '%s'", what,
                         e->value ? e->value : "");
    } else if (strcmp(e->key, "length") == 0) {
      if (!parse_u64(e->value, &len))
        return kc_errorf(ctx, KC_ERR_PARSE, "%s: bad external data length '%s'", what,
                         e->value ? e->value : "");
      has_len = true;
    }
  }
  if (!dir)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "%s: external data is not allowed here", what);
  if (!loc || !*loc) return kc_errorf(ctx, KC_ERR_PARSE, "%s: external data has no location", what);
  if (loc[0] == '/')
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "%s: external data location '%s' is absolute; it must be relative to the "
                     "model's folder",
                     what, loc);
  if (has_dotdot(loc))
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "%s: external data location '%s' leaves the model's folder", what, loc);
  size_t dlen = strlen(dir);
  char *full = malloc(dlen + strlen(loc) + 2);
  if (!full) return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
  sprintf(full, "%s/%s", dir, loc);
  char *real = realpath(full, NULL);
  free(full);
  if (!real)
    return kc_errorf(ctx, KC_ERR_IO, "%s: external data file '%s' (in %s): %s", what, loc, dir,
                     strerror(errno));
  /* a symlink may still point elsewhere: the resolved file must be inside the folder */
  if (strncmp(real, dir, dlen) != 0 || (dlen > 1 && real[dlen] != '/')) {
    kc_status s = kc_errorf(ctx, KC_ERR_INVALID_ARG,
                            "%s: external data location '%s' resolves to '%s', outside the "
                            "model's folder %s",
                            what, loc, real, dir);
    free(real);
    return s;
  }
  /* O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer; only a regular file
   * passes the check below, and reads from it ignore the flag */
  int fd = open(real, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    kc_status s = kc_errorf(ctx, KC_ERR_IO, "%s: cannot read external data file '%s': %s", what,
                            loc, fd < 0 ? strerror(errno) : "not a regular file");
    if (fd >= 0) close(fd);
    free(real);
    return s;
  }
  free(real);
  uint64_t fsize = (uint64_t)st.st_size;
  if (!has_len) len = off <= fsize ? fsize - off : 0;
  if (off > fsize || len > fsize - off || len != nbytes) {
    close(fd);
    return kc_errorf(ctx, KC_ERR_PARSE,
                     "%s: external data '%s' range [%llu, +%llu) does not fit its file (%llu "
                     "bytes) or the %zu bytes its dims need",
                     what, loc, (unsigned long long)off, (unsigned long long)len,
                     (unsigned long long)fsize, nbytes);
  }
  unsigned char *buf = nbytes ? kc_arena_alloc(arena, nbytes) : NULL;
  if (nbytes && !buf) {
    close(fd);
    return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory for %zu bytes", what, nbytes);
  }
  size_t got = 0;
  while (got < nbytes) {
    ssize_t r = pread(fd, buf + got, nbytes - got, (off_t)(off + got));
    if (r <= 0) {
      close(fd);
      return kc_errorf(ctx, KC_ERR_IO, "%s: reading external data '%s' failed: %s", what, loc,
                       r < 0 ? strerror(errno) : "unexpected end of file");
    }
    got += (size_t)r;
  }
  close(fd);
  *data = nbytes ? (const void *)buf : (const void *)empty_data;
  return KC_OK;
}

/* Narrow int32_data into the dtype's layout (f16/bf16 carry their bit patterns there). */
static void narrow_i32(kc_dtype t, const int32_t *src, size_t n, void *dst) {
  for (size_t i = 0; i < n; i++) {
    switch (kc_dtype_size(t)) {
    case 1: ((uint8_t *)dst)[i] = (uint8_t)(t == KC_BOOL ? src[i] != 0 : src[i]); break;
    case 2: ((uint16_t *)dst)[i] = (uint16_t)src[i]; break;
    default: ((int32_t *)dst)[i] = src[i]; break;
    }
  }
}

/* The typed field that holds elements of dtype t, converted if needed. */
static kc_status typed_data(kc_context *ctx, kc_arena *arena, const Onnx__TensorProto *tp,
                            kc_dtype t, size_t numel, size_t nbytes, const char *what,
                            const void **data) {
  size_t have = 0;
  const void *src = NULL;
  switch (t) {
  case KC_F32: have = tp->n_float_data, src = tp->float_data; break;
  case KC_F64: have = tp->n_double_data, src = tp->double_data; break;
  case KC_I64: have = tp->n_int64_data, src = tp->int64_data; break;
  case KC_U64:
  case KC_U32: have = tp->n_uint64_data, src = tp->uint64_data; break;
  default: have = tp->n_int32_data, src = tp->int32_data; break;
  }
  if (have != numel)
    return kc_errorf(ctx, KC_ERR_PARSE, "%s: has %zu %s elements but its dims need %zu", what, have,
                     kc_dtype_name(t), numel);
  if (numel == 0) {
    *data = empty_data;
    return KC_OK;
  }
  if (t == KC_F32 || t == KC_F64 || t == KC_I64 || t == KC_U64 || t == KC_I32) {
    *data = src; /* same layout: borrow */
    return KC_OK;
  }
  void *dst = kc_arena_alloc(arena, nbytes);
  if (!dst) return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
  if (t == KC_U32) {
    for (size_t i = 0; i < numel; i++)
      ((uint32_t *)dst)[i] = (uint32_t)tp->uint64_data[i];
  } else {
    narrow_i32(t, tp->int32_data, numel, dst);
  }
  *data = dst;
  return KC_OK;
}

kc_status kc_onnx_tensor_decode(kc_context *ctx, kc_arena *arena, const Onnx__TensorProto *tp,
                                const char *dir, const char *what, onnx_tensor *out) {
  memset(out, 0, sizeof *out);
  if (!tp->has_data_type || tp->data_type == 0)
    return kc_errorf(ctx, KC_ERR_PARSE, "%s: tensor has no data type", what);
  kc_dtype t = kc_onnx_dtype(tp->data_type);
  if (!t)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "%s: dtype %s (%d) is not supported by kernc", what,
                     kc_onnx_dtype_name(tp->data_type), (int)tp->data_type);
  if (tp->n_dims > KC_MAX_RANK)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "%s: rank %zu is above kernc's limit of %d", what,
                     tp->n_dims, KC_MAX_RANK);
  if (tp->segment)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "%s: segmented tensors are not supported", what);
  size_t numel = 1;
  for (size_t i = 0; i < tp->n_dims; i++) {
    int64_t d = tp->dims[i];
    if (d < 0 || (d > 0 && numel > (SIZE_MAX / 16) / (size_t)d))
      return kc_errorf(ctx, KC_ERR_PARSE, "%s: bad dim %lld at axis %zu", what, (long long)d, i);
    numel *= (size_t)d;
    out->dims[i] = d;
  }
  out->dtype = t;
  out->rank = (int)tp->n_dims;
  out->nbytes = numel * kc_dtype_size(t);
  if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    return read_external(ctx, arena, tp, dir, what, out->nbytes, &out->data);
  if (tp->has_raw_data) {
    if (tp->raw_data.len != out->nbytes)
      return kc_errorf(ctx, KC_ERR_PARSE, "%s: raw_data has %zu bytes but %s dims need %zu", what,
                       tp->raw_data.len, kc_dtype_name(t), out->nbytes);
    out->data = out->nbytes ? (const void *)tp->raw_data.data : (const void *)empty_data;
    return KC_OK;
  }
  return typed_data(ctx, arena, tp, t, numel, out->nbytes, what, &out->data);
}
