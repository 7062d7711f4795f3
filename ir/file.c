/*
 * ir/file.c - opening the files a user names (.kir graphs, .npy inputs, safetensors
 * checkpoints) for reading, so that a FIFO, a device or a folder is refused with one clear
 * message instead of blocking the process or failing later with a misleading one.
 *
 * Invariant: the descriptor is opened with O_NONBLOCK (so opening a FIFO with no writer
 * returns at once), checked to be a regular file, and only then switched back to blocking
 * reads and wrapped in a FILE.
 */
#include "ir/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

FILE *kc_fopen_regular(kc_context *ctx, const char *path) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    kc_errorf(ctx, KC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  int flags = fcntl(fd, F_GETFL);
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || flags < 0 ||
      fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    close(fd);
    kc_errorf(ctx, KC_ERR_IO, "%s: not a regular file", path);
    return NULL;
  }
  FILE *f = fdopen(fd, "rb");
  if (!f) {
    kc_errorf(ctx, KC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    close(fd);
  }
  return f;
}
