/*
 * codegen/cuda/text.c - the growing strings the CUDA emitters write their kernels into.
 *
 * Invariants: p is NUL-terminated whenever it is non-NULL; after an allocation failure the
 * text stops growing and oom stays set, so emitters never check each write and the program
 * builder reports one KC_ERR_NOMEM.
 */
#include "codegen/cuda/emit.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(kc_cu_text *t, size_t more) {
  if (t->oom) return false;
  if (t->len + more + 1 <= t->cap) return true;
  size_t cap = t->cap ? t->cap : 1024;
  while (cap < t->len + more + 1)
    cap *= 2;
  char *p = realloc(t->p, cap);
  if (!p) {
    t->oom = true;
    return false;
  }
  t->p = p;
  t->cap = cap;
  return true;
}

void kc_cu_puts(kc_cu_text *t, const char *s) {
  size_t n = strlen(s);
  if (!reserve(t, n)) return;
  memcpy(t->p + t->len, s, n + 1);
  t->len += n;
}

void kc_cu_printf(kc_cu_text *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || !reserve(t, (size_t)n)) {
    t->oom = true;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(t->p + t->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

void kc_cu_text_free(kc_cu_text *t) {
  free(t->p);
  memset(t, 0, sizeof *t);
}
