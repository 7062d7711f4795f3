/*
 * frontend/onnx_save.c - kc_onnx_save_weights: write a graph's weights back into the ONNX model
 * it was loaded from (trained or LoRA-merged weights), as a new model file.
 *
 * The source model is unpacked, every initializer that names a weight of g gets g's bytes as
 * raw_data (typed fields and external references cleared), every other initializer keeps its
 * values (external ones are read and inlined, so dst does not depend on src's folder), and the
 * model is packed to dst. Nodes, inputs, outputs, opsets and metadata are src's: the graph's
 * structure is not written, so a weight of g that src lacks cannot be expressed and is refused
 * (unmerged LoRA adapters are named as such: kc_lora_merge them first). A weight whose dtype or
 * dims differ from the initializer's is refused too.
 *
 * Size: protobuf messages are limited to 2 GiB. When the initializers' bytes pass
 * KC_ONNX_INLINE_MAX, every initializer goes to one external file "<dst's file name>.data" next
 * to dst (offsets aligned to 64 bytes, `location` relative to dst's folder, as onnx's
 * save_model(..., save_as_external_data=True) writes) and dst holds the graph only.
 *
 * Invariants: the message lives in a scratch arena (protobuf-c's allocator), so pointing its
 * raw_data at g's bytes never frees or copies them; src is never written; on failure dst may be
 * missing or partial but src is untouched.
 */
#define _XOPEN_SOURCE 700
#include "frontend.h"
#include "onnx_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void *arena_alloc(void *arena, size_t size) { return kc_arena_alloc(arena, size); }
static void arena_free(void *arena, void *p) {
  (void)arena;
  (void)p;
}

/* Read the whole file; a FIFO, device or folder is refused before anything could block on it. */
static kc_status read_all(kc_context *ctx, const char *path, uint8_t **buf, size_t *len) {
  struct stat st;
  int fd = kc_open_regular(ctx, path, &st);
  if (fd < 0) return KC_ERR_IO;
  size_t n = (size_t)st.st_size;
  *buf = malloc(n + 1);
  if (!*buf) {
    close(fd);
    return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", path);
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, *buf + got, n - got);
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got != n) {
    free(*buf);
    return kc_errorf(ctx, KC_ERR_IO, "%s: short read", path);
  }
  *len = got;
  return KC_OK;
}

/* The folder of path ("." when none), malloc'd. */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return strdup(".");
  if (slash == path) return strdup("/");
  char *d = strndup(path, (size_t)(slash - path));
  return d;
}

/* The weight of g called name: its tensor, or NULL. */
static const kc_tensor *graph_weight(const kc_graph *g, const char *name) {
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op != KC_OP_WEIGHT || strcmp(kc_node_string(n, "name", ""), name) != 0) continue;
    for (uint32_t t = 0; t < g->ntensors; t++)
      if (g->tensors[t].name && strcmp(g->tensors[t].name, name) == 0) return &g->tensors[t];
  }
  return NULL;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Every weight of g that src has no initializer for: one error naming them all. */
static kc_status check_extra(kc_context *ctx, const kc_graph *g, const Onnx__GraphProto *gp,
                             const char *src) {
  uint32_t nlora = 0, nother = 0;
  char lora[2048] = "", other[2048] = "";
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op != KC_OP_WEIGHT) continue;
    const char *name = kc_node_string(n, "name", "");
    bool found = false;
    for (size_t k = 0; k < gp->n_initializer && !found; k++)
      found = strcmp(gp->initializer[k]->name, name) == 0;
    if (found) continue;
    bool is_lora = ends_with(name, ".lora_A") || ends_with(name, ".lora_B");
    char *list = is_lora ? lora : other;
    size_t used = strlen(list);
    if (used + strlen(name) + 8 < sizeof lora)
      snprintf(list + used, sizeof lora - used, "%s'%s'", used ? ", " : "", name);
    else if (!strstr(list, "..."))
      snprintf(list + used, sizeof lora - used, ", ...");
    *(is_lora ? &nlora : &nother) += 1;
  }
  if (nlora)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                     "kc_onnx_save_weights: %u unmerged LoRA adapter weights (%s) cannot be "
                     "written into %s's graph; merge them first (kc_lora_merge) or save them "
                     "separately",
                     nlora, lora, src);
  if (nother)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                     "kc_onnx_save_weights: %u weights of the graph are not initializers of %s "
                     "(%s); the graph's structure is not written, so they cannot be",
                     nother, src, other);
  return KC_OK;
}

/* Point tp at nbytes of data as raw_data, dropping its typed fields and external reference. */
static void set_raw(Onnx__TensorProto *tp, const void *data, size_t nbytes) {
  tp->n_float_data = tp->n_int32_data = tp->n_string_data = tp->n_int64_data = 0;
  tp->n_double_data = tp->n_uint64_data = 0;
  tp->n_external_data = 0;
  tp->has_data_location = 0;
  tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
  tp->has_raw_data = 1;
  tp->raw_data.data = (uint8_t *)(uintptr_t)data; /* only read by pack */
  tp->raw_data.len = nbytes;
}

static Onnx__StringStringEntryProto *entry(kc_arena *a, const char *key, const char *value) {
  Onnx__StringStringEntryProto *e = kc_arena_alloc(a, sizeof *e);
  if (!e) return NULL;
  onnx__string_string_entry_proto__init(e);
  e->key = kc_arena_strdup(a, key);
  e->value = kc_arena_strdup(a, value);
  return e->key && e->value ? e : NULL;
}

/* Move every initializer's bytes to the file data_path (named loc in the model). */
static kc_status write_external(kc_context *ctx, kc_arena *a, Onnx__GraphProto *gp,
                                const char *data_path, const char *loc) {
  FILE *f = fopen(data_path, "wb");
  if (!f) return kc_errorf(ctx, KC_ERR_IO, "%s: cannot create: %s", data_path, strerror(errno));
  uint64_t off = 0;
  static const uint8_t pad[64];
  kc_status s = KC_OK;
  for (size_t i = 0; i < gp->n_initializer && s == KC_OK; i++) {
    Onnx__TensorProto *tp = gp->initializer[i];
    size_t len = tp->raw_data.len, fill = (size_t)((64 - off % 64) % 64);
    if (fwrite(pad, 1, fill, f) != fill || fwrite(tp->raw_data.data, 1, len, f) != len) {
      s = kc_errorf(ctx, KC_ERR_IO, "%s: write failed: %s", data_path, strerror(errno));
      break;
    }
    off += fill;
    char offs[32], lens[32];
    snprintf(offs, sizeof offs, "%llu", (unsigned long long)off);
    snprintf(lens, sizeof lens, "%llu", (unsigned long long)len);
    Onnx__StringStringEntryProto **es = kc_arena_alloc(a, 3 * sizeof *es);
    if (!es || !(es[0] = entry(a, "location", loc)) || !(es[1] = entry(a, "offset", offs)) ||
        !(es[2] = entry(a, "length", lens))) {
      s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory writing %s", data_path);
      break;
    }
    off += len;
    tp->has_raw_data = 0;
    tp->raw_data.len = 0;
    tp->raw_data.data = NULL;
    tp->external_data = es;
    tp->n_external_data = 3;
    tp->has_data_location = 1;
    tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  }
  if (fclose(f) != 0 && s == KC_OK)
    s = kc_errorf(ctx, KC_ERR_IO, "%s: write failed: %s", data_path, strerror(errno));
  return s;
}

kc_status kc_onnx_save_weights_ex(kc_context *ctx, const char *src_onnx, const kc_graph *g,
                                  const char *dst_onnx, uint64_t inline_max) {
  if (!ctx) return KC_ERR_INVALID_ARG;
  if (!src_onnx || !g || !dst_onnx)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_onnx_save_weights: invalid arguments");
  uint8_t *buf = NULL, *packed = NULL;
  size_t len = 0;
  kc_status s = read_all(ctx, src_onnx, &buf, &len);
  if (s != KC_OK) return s;
  kc_arena a = {0};
  ProtobufCAllocator alloc = {arena_alloc, arena_free, &a};
  Onnx__ModelProto *m = onnx__model_proto__unpack(&alloc, len, buf);
  free(buf);
  char *sdir = dir_of(src_onnx);
  Onnx__GraphProto *gp = m ? m->graph : NULL;
  if (!sdir)
    s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
  else if (!gp)
    s = kc_errorf(ctx, KC_ERR_PARSE, "%s: not an ONNX model (or it has no graph)", src_onnx);
  for (size_t i = 0; s == KC_OK && i < gp->n_initializer; i++)
    if (!gp->initializer[i] || !gp->initializer[i]->name)
      s = kc_errorf(ctx, KC_ERR_PARSE, "%s: initializer %zu has no name", src_onnx, i);
  if (s == KC_OK) s = check_extra(ctx, g, gp, src_onnx);
  uint64_t total = 0;
  for (size_t i = 0; s == KC_OK && i < gp->n_initializer; i++) {
    Onnx__TensorProto *tp = gp->initializer[i];
    char what[600];
    snprintf(what, sizeof what, "%s: initializer '%s'", src_onnx, tp->name);
    onnx_tensor ot;
    s = kc_onnx_tensor_decode(ctx, &a, tp, sdir, what, &ot);
    if (s != KC_OK) break;
    const kc_tensor *w = graph_weight(g, tp->name);
    const void *data = ot.data;
    if (w) {
      bool same = w->dtype == ot.dtype && w->rank == ot.rank && w->data;
      for (int d = 0; same && d < w->rank; d++)
        same = w->dims[d] == ot.dims[d];
      if (!same) {
        s = kc_errorf(ctx, KC_ERR_SHAPE,
                      "kc_onnx_save_weights: weight '%s' is %s rank %d in the graph%s, %s rank %d "
                      "in %s",
                      tp->name, kc_dtype_name(w->dtype), w->rank, w->data ? "" : " (no data)",
                      kc_dtype_name(ot.dtype), ot.rank, src_onnx);
        break;
      }
      data = w->data;
    }
    set_raw(tp, data, ot.nbytes);
    total += ot.nbytes;
  }
  if (s == KC_OK && total > inline_max) {
    const char *base = strrchr(dst_onnx, '/');
    base = base ? base + 1 : dst_onnx;
    size_t n = strlen(dst_onnx) + 6;
    char *data_path = malloc(n), *loc = malloc(strlen(base) + 6);
    if (!data_path || !loc)
      s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
    else {
      snprintf(data_path, n, "%s.data", dst_onnx);
      snprintf(loc, strlen(base) + 6, "%s.data", base);
      s = write_external(ctx, &a, gp, data_path, loc);
      if (s == KC_OK)
        kc_logf(ctx, KC_LOG_INFO, "kc_onnx_save_weights: %llu bytes of weights written to %s",
                (unsigned long long)total, data_path);
    }
    free(data_path);
    free(loc);
  }
  if (s == KC_OK) {
    size_t size = onnx__model_proto__get_packed_size(m);
    packed = malloc(size ? size : 1);
    FILE *f = packed ? fopen(dst_onnx, "wb") : NULL;
    if (!packed)
      s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
    else if (!f)
      s = kc_errorf(ctx, KC_ERR_IO, "%s: cannot create: %s", dst_onnx, strerror(errno));
    else {
      size_t w = onnx__model_proto__pack(m, packed);
      bool ok = w == size && fwrite(packed, 1, size, f) == size;
      if (fclose(f) != 0) ok = false;
      if (!ok) s = kc_errorf(ctx, KC_ERR_IO, "%s: write failed: %s", dst_onnx, strerror(errno));
    }
  }
  free(packed);
  free(sdir);
  kc_arena_free(&a);
  return s;
}

kc_status kc_onnx_save_weights(kc_context *ctx, const char *src_onnx, const kc_graph *g,
                               const char *dst_onnx) {
  kc_clear_error(ctx);
  return kc_onnx_save_weights_ex(ctx, src_onnx, g, dst_onnx, KC_ONNX_INLINE_MAX);
}
