/*
 * frontend/tensor_pb.c - read one serialized TensorProto (.pb file, as in the ONNX backend
 * test data sets) into a kc_tensor that owns its memory.
 *
 * Invariant: the message is unpacked into the result's own arena and the tensor's data borrows
 * from it, so freeing the arena frees everything; bad files give a message, never a crash.
 */
#include "frontend/frontend.h"
#include "onnx_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void *arena_alloc(void *arena, size_t size) { return kc_arena_alloc(arena, size); }
static void arena_free(void *arena, void *p) {
  (void)arena;
  (void)p;
}

/* Whole file into a malloc'd buffer. */
static kc_status slurp(kc_context *ctx, const char *path, unsigned char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return kc_errorf(ctx, KC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  unsigned char *b = malloc(cap);
  while (b) {
    n += fread(b + n, 1, cap - n, f);
    if (n < cap) break;
    unsigned char *nb = realloc(b, cap *= 2);
    if (!nb) free(b);
    b = nb;
  }
  bool err = ferror(f);
  fclose(f);
  if (!b) return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", path);
  if (err) {
    free(b);
    return kc_errorf(ctx, KC_ERR_IO, "%s: read error", path);
  }
  *buf = b;
  *len = n;
  return KC_OK;
}

kc_status kc_tensor_pb_read(kc_context *ctx, const char *path, kc_pb_tensor *out) {
  memset(out, 0, sizeof *out);
  unsigned char *buf = NULL;
  size_t len = 0;
  kc_status s = slurp(ctx, path, &buf, &len);
  if (s != KC_OK) return s;
  ProtobufCAllocator alloc = {arena_alloc, arena_free, &out->arena};
  Onnx__TensorProto *tp = onnx__tensor_proto__unpack(&alloc, len, buf);
  free(buf);
  if (!tp) {
    kc_arena_free(&out->arena);
    return kc_errorf(ctx, KC_ERR_PARSE, "%s: not a valid TensorProto (truncated or corrupt)", path);
  }
  onnx_tensor t;
  s = kc_onnx_tensor_decode(ctx, &out->arena, tp, NULL, path, &t);
  if (s != KC_OK) {
    kc_arena_free(&out->arena);
    return s;
  }
  out->t.name = tp->name;
  out->t.dtype = t.dtype;
  out->t.rank = t.rank;
  memcpy(out->t.dims, t.dims, sizeof t.dims);
  out->t.data = t.data;
  out->t.nbytes = t.nbytes;
  return KC_OK;
}

void kc_pb_tensor_free(kc_pb_tensor *t) {
  if (!t) return;
  kc_arena_free(&t->arena);
  memset(t, 0, sizeof *t);
}
