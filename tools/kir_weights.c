/*
 * tools/kir_weights.c - the safetensors file of a .kir's weights (see kir_weights.h).
 *
 * Invariants: the name recorded is relative to the .kir's folder (also when the paths given
 * were absolute), so the pair can move together; a name the text could not carry (a
 * control character) is refused. Loading copies the data into the graph's arena, so the
 * graph owns it as it owns an ONNX model's initializers, and checks dtype and shape first.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "tools/kir_weights.h"
#include "ir/internal.h"
#include "runtime/safetensors.h"
#include "tools/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* The folder part of path ("." when it has none), into buf. */
static void folder_of(const char *path, char *buf, size_t size) {
  const char *slash = path ? strrchr(path, '/') : NULL;
  if (!path || strcmp(path, "-") == 0 || !slash)
    snprintf(buf, size, ".");
  else if (slash == path)
    snprintf(buf, size, "/");
  else
    snprintf(buf, size, "%.*s", (int)(slash - path), path);
}

/* target (an existing file) relative to the existing folder dir, into buf. */
static bool relative_to(const char *target, const char *dir, char *buf, size_t size) {
  char t[PATH_MAX], d[PATH_MAX];
  if (!realpath(target, t) || !realpath(dir, d)) return false;
  size_t common = 0; /* the longest folder prefix of d that t lies under: t[common] == '/' */
  for (size_t k = 0;; k++) {
    if ((d[k] == '/' || d[k] == 0) && strncmp(t, d, k) == 0 && t[k] == '/') common = k;
    if (!d[k]) break;
  }
  size_t len = 0;
  buf[0] = 0;
  if (strcmp(d, "/") != 0) /* one ../ per folder of d below the common part */
    for (const char *p = d + common; *p; p++)
      if (*p == '/' && len + 4 < size) len += (size_t)snprintf(buf + len, size - len, "../");
  return (size_t)snprintf(buf + len, size - len, "%s", t + common + 1) < size - len;
}

int kir_weights_save(kc_context *ctx, kc_graph *g, const char *path, const char *kir_path) {
  kc_st_tensor *ts = calloc(g->ntensors + 1, sizeof *ts);
  if (!ts) return fprintf(stderr, "kernc: out of memory\n"), 1;
  uint32_t n = 0;
  for (uint32_t i = 0; i < g->ntensors; i++) {
    const kc_tensor *t = &g->tensors[i];
    if (t->name && t->data) ts[n++] = (kc_st_tensor){t->name, t->dtype, t->rank, t->dims, t->data};
  }
  kc_status s = kc_st_write(ctx, path, ts, n, NULL, 0);
  free(ts);
  if (s != KC_OK) return cli_fail(ctx, s, NULL);
  char dir[PATH_MAX], rel[PATH_MAX];
  folder_of(kir_path, dir, sizeof dir);
  if (!relative_to(path, dir, rel, sizeof rel)) {
    fprintf(stderr, "kernc: cannot name %s relative to %s: %s\n", path, dir, strerror(errno));
    return 1;
  }
  for (const char *p = rel; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) {
      fprintf(stderr, "kernc: --weights: the path '%s' has a control character\n", path);
      return 1;
    }
  g->weights_file = kc_arena_strdup(&g->arena, rel);
  return g->weights_file ? 0 : (fprintf(stderr, "kernc: out of memory\n"), 1);
}

/* The weights file g names, as a path from the current folder, into buf. */
static void weights_path(const kc_graph *g, const char *kir_path, char *buf, size_t size) {
  char dir[PATH_MAX];
  folder_of(kir_path, dir, sizeof dir);
  if (g->weights_file[0] == '/')
    snprintf(buf, size, "%s", g->weights_file);
  else
    snprintf(buf, size, "%s/%s", dir, g->weights_file);
}

int kir_weights_rebase(kc_graph *g, const char *in_path, const char *out_path) {
  if (!g->weights_file || !out_path || strcmp(out_path, "-") == 0) return 0;
  char path[2 * PATH_MAX], dir[PATH_MAX], rel[PATH_MAX];
  weights_path(g, in_path, path, sizeof path);
  folder_of(out_path, dir, sizeof dir);
  if (!relative_to(path, dir, rel, sizeof rel)) {
    fprintf(stderr, "kernc: cannot name %s relative to %s: %s\n", path, dir, strerror(errno));
    return 1;
  }
  g->weights_file = kc_arena_strdup(&g->arena, rel);
  return g->weights_file ? 0 : (fprintf(stderr, "kernc: out of memory\n"), 1);
}

kc_status kir_weights_load(kc_context *ctx, kc_graph *g, const char *kir_path) {
  if (!g->weights_file) return KC_OK;
  char path[2 * PATH_MAX];
  weights_path(g, kir_path, path, sizeof path);
  kc_st_file f;
  kc_status s = kc_st_read(ctx, path, &f);
  if (s != KC_OK) return s;
  for (uint32_t i = 0; i < g->ntensors && s == KC_OK; i++) {
    kc_tensor *t = &g->tensors[i];
    if (!t->name || t->data) continue;
    const kc_st_entry *e = kc_st_find(&f, t->name);
    bool same = e && e->dtype == t->dtype && e->rank == t->rank;
    for (int d = 0; same && d < t->rank; d++)
      same = e->dims[d] == t->dims[d];
    if (!e) {
      s = kc_errorf(ctx, KC_ERR_INVALID_ARG, "%s: no tensor '%s' (a weight of %s)", path, t->name,
                    kir_path);
    } else if (!same) {
      s = kc_errorf(ctx, KC_ERR_INVALID_ARG,
                    "%s: tensor '%s' is %s of rank %d, the weight in %s is %s of rank %d", path,
                    t->name, kc_dtype_name(e->dtype), e->rank, kir_path, kc_dtype_name(t->dtype),
                    t->rank);
    } else {
      void *data = kc_arena_alloc(&g->arena, e->nbytes ? e->nbytes : 1);
      if (!data) {
        s = kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", path);
        break;
      }
      memcpy(data, e->data, e->nbytes);
      t->data = data;
      t->nbytes = e->nbytes;
    }
  }
  kc_st_free(&f);
  return s;
}
