/*
 * ir/file.c - opening the files a user names (.onnx models, .kir graphs, .npy inputs,
 * safetensors checkpoints) for reading, so that a FIFO, a device or a folder is refused with one
 * clear message instead of blocking the process or failing later with a misleading one.
 *
 * Invariant: the descriptor is opened with O_NONBLOCK (opening a FIFO with no writer returns at
 * once) and checked to be a regular file before anything reads it; reads of a regular file
 * ignore the flag.
 */
#include "ir/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int kc_open_regular(kc_context *ctx, const char *path, struct stat *st) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    kc_errorf(ctx, KC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
    close(fd);
    kc_errorf(ctx, KC_ERR_IO, "%s: not a regular file", path);
    return -1;
  }
  return fd;
}

FILE *kc_fopen_regular(kc_context *ctx, const char *path) {
  struct stat st;
  int fd = kc_open_regular(ctx, path, &st);
  if (fd < 0) return NULL;
  FILE *f = fdopen(fd, "rb");
  if (!f) {
    kc_errorf(ctx, KC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    close(fd);
  }
  return f;
}

kc_status kc_read_regular(kc_context *ctx, const char *path, unsigned char **buf, size_t *len) {
  *buf = NULL;
  *len = 0;
  FILE *f = kc_fopen_regular(ctx, path);
  if (!f) return KC_ERR_IO; /* the message is set */
  unsigned char *b = NULL;
  size_t n = 0, cap = 0, got = 1;
  while (got) {
    if (n == cap) {
      unsigned char *nb = realloc(b, cap = cap ? cap * 2 : 1 << 16);
      if (!nb) {
        free(b);
        fclose(f);
        return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", path);
      }
      b = nb;
    }
    n += got = fread(b + n, 1, cap - n, f);
  }
  bool err = ferror(f);
  fclose(f);
  if (err) {
    free(b);
    return kc_errorf(ctx, KC_ERR_IO, "%s: read error", path);
  }
  *buf = b;
  *len = n;
  return KC_OK;
}
