/*
 * tools/check/check_tol.c - the per-folder tolerance file of `kernc check` (kernc-check.tol):
 * whitespace-separated words rtol=X, atol=Y, relative=Z; '#' starts a comment to the end of the
 * line. Words not given keep the defaults (KC_CHECK_RTOL, KC_CHECK_ATOL, relative off), so
 * "relative=1e-4" alone switches a folder to the whole-output bound.
 * Invariant: a value must be a finite number >= 0; anything else is refused naming file:line.
 */
#include "tools/check/check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Parse "KEY=NUMBER" into tol; false when the key is unknown or the number bad. */
static bool set_word(kc_check_tol *tol, const char *w) {
  static const char *const keys[] = {"rtol", "atol", "relative"};
  double *dst[] = {&tol->rtol, &tol->atol, &tol->relative};
  const char *eq = strchr(w, '=');
  if (!eq) return false;
  for (int k = 0; k < 3; k++) {
    if (strlen(keys[k]) != (size_t)(eq - w) || strncmp(w, keys[k], (size_t)(eq - w)) != 0) continue;
    char *end;
    double v = strtod(eq + 1, &end);
    if (end == eq + 1 || *end || !isfinite(v) || v < 0) return false;
    *dst[k] = v;
    return true;
  }
  return false;
}

bool kc_check_tol_read(const char *path, kc_check_tol *tol, char *msg, size_t size) {
  *tol = (kc_check_tol){KC_CHECK_RTOL, KC_CHECK_ATOL, 0};
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(msg, size, "%s: cannot read", path);
    return false;
  }
  char line[1024];
  bool ok = true;
  for (int ln = 1; ok && fgets(line, sizeof line, f); ln++) {
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *save = NULL;
    for (char *w = strtok_r(line, " \t\r\n", &save); ok && w; w = strtok_r(NULL, " \t\r\n", &save))
      if (!(ok = set_word(tol, w)))
        snprintf(msg, size, "%s:%d: '%s' is not rtol=X, atol=X or relative=X with a number X >= 0",
                 path, ln, w);
  }
  fclose(f);
  return ok;
}

int kc_check_tol_of_dir(const char *dir, kc_check_tol *tol, char *msg, size_t size) {
  char path[4200];
  struct stat st;
  snprintf(path, sizeof path, "%s/kernc-check.tol", dir);
  if (stat(path, &st) != 0) {
    *tol = (kc_check_tol){KC_CHECK_RTOL, KC_CHECK_ATOL, 0};
    return 0;
  }
  return kc_check_tol_read(path, tol, msg, size) ? 1 : -1;
}
