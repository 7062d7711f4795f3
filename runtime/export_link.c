/*
 * runtime/export_link.c - the file side of kc_export: the weights file the object pulls in, the
 * runtime archive (kernc_rt, built by CMake from kernc's own runtime sources), and the C
 * compiler that links object and archive into the model's shared library.
 *
 * Invariants:
 *   - The library depends on libc, libm and libpthread only (and the dynamic loader, for the
 *     runtime's thread-local create error): the archive is linked whole into it with its symbols
 *     kept local (--exclude-libs), so two models, or a model and libkernc, load side by side.
 *   - A failing compiler's command line and output end up in the error message, whole.
 *   - The archive is looked for beside the binary this code is in (libkernc.so, or a program
 *     linked with libkernc.a) as an install lays it out (LIBDIR/kernc/libkernc_rt.a) before the
 *     build tree's, so an installed kernc needs nothing outside its prefix.
 */
#define _GNU_SOURCE /* dladdr: the file this code was loaded from */
#include "runtime/export.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KERNC_RT_ARCHIVE
#define KERNC_RT_ARCHIVE ""
#endif
#ifndef KERNC_INSTALL_BIN_TO_LIB
#define KERNC_INSTALL_BIN_TO_LIB "../lib"
#endif

#define CMD_MAX 16384

kc_status kc_export_write_weights(kc_context *ctx, const kc_rt_weight *w, int64_t n, int64_t bytes,
                                  const char *path) {
  FILE *f = fopen(path, "wb");
  if (!f) return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  static const unsigned char zeros[KC_RT_ALIGN];
  int64_t at = 0;
  bool ok = true;
  for (int64_t i = 0; i < n && ok; i++) {
    for (; at < w[i].off && ok; at++) /* padding to the weight's aligned offset */
      ok = fwrite(zeros, 1, 1, f) == 1;
    if (ok && w[i].bytes) ok = fwrite(w[i].data, 1, w[i].bytes, f) == w[i].bytes;
    at += (int64_t)w[i].bytes;
  }
  for (; at < bytes && ok; at++)
    ok = fwrite(zeros, 1, 1, f) == 1;
  if (fclose(f) != 0) ok = false;
  return ok ? KC_OK : kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
}

static bool readable(const char *path) { return path && *path && access(path, R_OK) == 0; }

kc_status kc_export_find_runtime(kc_context *ctx, const char *given, char *buf, size_t size) {
  if (given) { /* asked for by name: that one or an error */
    if (!readable(given))
      return kc_errorf(ctx, KC_ERR_IO, "kernc's runtime archive %s cannot be read", given);
    snprintf(buf, size, "%s", given);
    return KC_OK;
  }
  /* installed: this code is in LIBDIR/libkernc.so (dladdr names it) or in BINDIR/kernc, a
   * program linked with libkernc.a (dladdr gives argv[0] there: /proc/self/exe is the file) */
  char dirs[2][4096] = {"", ""};
  Dl_info info;
  if (dladdr((void *)kc_export_find_runtime, &info) && info.dli_fname)
    snprintf(dirs[0], sizeof dirs[0], "%s", info.dli_fname);
  ssize_t n = readlink("/proc/self/exe", dirs[1], sizeof dirs[1] - 1);
  dirs[1][n > 0 ? n : 0] = 0;
  for (int d = 0; d < 2; d++) {
    char *slash = strrchr(dirs[d], '/');
    if (!slash) continue;
    *slash = 0;
    const char *tries[] = {"%s/kernc/libkernc_rt.a",
                           "%s/" KERNC_INSTALL_BIN_TO_LIB "/kernc/libkernc_rt.a"};
    for (size_t i = 0; i < sizeof tries / sizeof *tries; i++) {
      char path[8192], *real;
      snprintf(path, sizeof path, tries[i], dirs[d]);
      if (readable(path) && (real = realpath(path, NULL))) { /* without the bin/../ */
        snprintf(buf, size, "%s", real);
        free(real);
        return KC_OK;
      }
    }
  }
  if (readable(KERNC_RT_ARCHIVE)) { /* a build tree's */
    snprintf(buf, size, "%s", KERNC_RT_ARCHIVE);
    return KC_OK;
  }
  return kc_errorf(ctx, KC_ERR_IO,
                   "kernc's runtime archive libkernc_rt.a was not found (not in kernc/ beside "
                   "libkernc, nor at '%s'); give its path in $KERNC_RT",
                   KERNC_RT_ARCHIVE);
}

/* s in single quotes for /bin/sh, appended to cmd; false when it does not fit. */
static bool append_quoted(char *cmd, size_t size, const char *s) {
  size_t l = strlen(cmd);
  if (l + 3 >= size) return false;
  cmd[l++] = ' ';
  cmd[l++] = '\'';
  for (; *s; s++) {
    const char *piece = *s == '\'' ? "'\\''" : NULL;
    size_t pl = piece ? 4 : 1;
    if (l + pl + 2 >= size) return false;
    if (piece)
      memcpy(cmd + l, piece, pl);
    else
      cmd[l] = *s;
    l += pl;
  }
  cmd[l++] = '\'';
  cmd[l] = 0;
  return true;
}

/* An executable called name in a folder of $PATH. */
static bool on_path(const char *name) {
  const char *path = getenv("PATH");
  char file[4096];
  while (path && *path) {
    size_t len = strcspn(path, ":");
    if (len && len + strlen(name) + 2 <= sizeof file) {
      memcpy(file, path, len);
      file[len] = '/';
      strcpy(file + len + 1, name);
      if (access(file, X_OK) == 0) return true;
    }
    path += len + (path[len] == ':');
  }
  return false;
}

/* The command line linking the library into cmd (CMD_MAX bytes); false when it does not fit. */
static bool link_command(char *cmd, const char *cc, bool lld, const char *const *objs, int nobjs,
                         const char *extra_c, const char *runtime, const char *so_path) {
  /* $CC may carry its own flags ("ccache gcc"), so it goes to the shell as it is */
  snprintf(cmd, CMD_MAX, "%s%s -shared%s -o", cc, lld ? " -fuse-ld=lld" : "",
           extra_c ? " -fPIC -O2" : "");
  bool fits = strlen(cc) + 64 < CMD_MAX && append_quoted(cmd, CMD_MAX, so_path);
  for (int i = 0; i < nobjs && fits; i++)
    fits = append_quoted(cmd, CMD_MAX, objs[i]);
  fits = fits && (!extra_c || append_quoted(cmd, CMD_MAX, extra_c)) &&
         append_quoted(cmd, CMD_MAX, runtime);
  size_t l = strlen(cmd);
  const char *tail = " -Wl,--exclude-libs,ALL -Wl,-z,noexecstack -lm -lpthread";
  if (!fits || l + strlen(tail) + 1 > CMD_MAX) return false;
  strcpy(cmd + l, tail);
  return true;
}

/* Run cmd through the shell; its exit code (-1: it did not run or died), output into out. */
static int run(const char *cmd, char *out, size_t size) {
  char *full = malloc(strlen(cmd) + 8);
  if (!full) return -1;
  strcpy(full, cmd);
  strcat(full, " 2>&1");
  FILE *pipe = popen(full, "r");
  free(full);
  if (!pipe) return -1;
  size_t n = fread(out, 1, size - 1, pipe);
  out[n] = 0;
  while (fgetc(pipe) != EOF) /* drain what did not fit, so the compiler is not blocked */
    ;
  int st = pclose(pipe);
  return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

kc_status kc_export_link(kc_context *ctx, const char *cc, const char *const *objs, int nobjs,
                         const char *extra_c, const char *runtime, const char *so_path) {
  /* With the default compiler, lld when it is there: it links a 500 MB weights section in a
   * fraction of GNU ld's time; a compiler that cannot use it falls back to its own linker. */
  bool lld = !cc && on_path("ld.lld");
  if (!cc) cc = "cc";
  char *cmd = malloc(CMD_MAX), out[4096];
  if (!cmd) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory linking %s", so_path);
  int code = -1;
  for (int attempt = lld ? 0 : 1; attempt < 2 && code != 0; attempt++) {
    if (!link_command(cmd, cc, attempt == 0, objs, nobjs, extra_c, runtime, so_path)) {
      free(cmd);
      return kc_errorf(ctx, KC_ERR_INVALID_ARG, "paths too long to link %s", so_path);
    }
    code = run(cmd, out, sizeof out);
  }
  kc_status s = KC_OK;
  if (code == 127)
    s = kc_errorf(ctx, KC_ERR_IO,
                  "the C compiler '%s' was not found, so %s cannot be linked (set $CC)", cc,
                  so_path);
  else if (code != 0)
    s = kc_errorf(ctx, KC_ERR_IO, "the C compiler failed linking %s (exit %d): %s", so_path, code,
                  cmd);
  if (code != 0 && code != 127 && *out) kc_error_append(ctx, "%s", out);
  free(cmd);
  return s;
}
