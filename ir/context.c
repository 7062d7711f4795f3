/*
 * ir/context.c - kc_context: options, the error buffer, the log callback, status names.
 *
 * The error buffer holds the message of the most recent failure; kc_errorf replaces it,
 * kc_error_append adds lines (tool logs such as LLVM's or NVRTC's). There is one buffer per
 * thread that reported an error through the context (a slot made at its first error and kept
 * until kc_context_free), because one module may be run from many threads at once and each must
 * read the message of its own failure: kc_last_error returns the calling thread's.
 *
 * Invariants: only err_lock's holder walks or extends the slot list; a slot's text is written
 * and read only by its own thread, so messages need no lock once the slot is found.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct kc_err_slot {
  kc_err_slot *next;
  pthread_t owner;
  char msg[KC_ERRBUF_SIZE];
};

const char *kc_status_str(kc_status s) {
  switch (s) {
  case KC_OK: return "ok";
  case KC_ERR_PARSE: return "parse error";
  case KC_ERR_SHAPE: return "shape error";
  case KC_ERR_TYPE: return "type error";
  case KC_ERR_VERIFY: return "verification failed";
  case KC_ERR_UNSUPPORTED: return "unsupported";
  case KC_ERR_IO: return "i/o error";
  case KC_ERR_NOMEM: return "out of memory";
  case KC_ERR_INVALID_ARG: return "invalid argument";
  case KC_ERR_RUNTIME: return "runtime error";
  case KC_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

kc_context *kc_context_new(void) {
  kc_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return NULL;
  ctx->opts.threads = 0;
  ctx->opts.verify_each = 0;
  ctx->opts.log_level = KC_LOG_WARN;
  const char *opt = getenv("KERNC_OPT_LEVEL");      /* kc_options.opt_level */
  if (opt && *opt >= '0' && *opt <= '3' && !opt[1]) /* "0" is -O0, kc_options' -1 */
    ctx->opts.opt_level = *opt == '0' ? -1 : *opt - '0';
  if (pthread_mutex_init(&ctx->err_lock, NULL) != 0) {
    free(ctx);
    return NULL;
  }
  return ctx;
}

void kc_context_free(kc_context *ctx) {
  if (!ctx) return;
  while (ctx->errs) {
    kc_err_slot *e = ctx->errs;
    ctx->errs = e->next;
    free(e);
  }
  pthread_mutex_destroy(&ctx->err_lock);
  free(ctx);
}

/* The calling thread's slot; made when `make` (NULL when that fails or when not made). */
static kc_err_slot *slot_of_thread(const kc_context *cctx, bool make) {
  kc_context *ctx = (kc_context *)cctx; /* the list is the context's mutable part */
  pthread_mutex_lock(&ctx->err_lock);
  kc_err_slot *e = ctx->errs;
  while (e && !pthread_equal(e->owner, pthread_self()))
    e = e->next;
  if (!e && make && (e = malloc(sizeof *e))) {
    e->owner = pthread_self();
    e->msg[0] = 0;
    e->next = ctx->errs;
    ctx->errs = e;
  }
  pthread_mutex_unlock(&ctx->err_lock);
  return e;
}

kc_options *kc_context_options(kc_context *ctx) { return &ctx->opts; }

void kc_context_set_log(kc_context *ctx, kc_log_fn fn, void *user) {
  ctx->log_fn = fn;
  ctx->log_user = user;
}

const char *kc_last_error(const kc_context *ctx) {
  if (!ctx) return "no context";
  kc_err_slot *e = slot_of_thread(ctx, false);
  return e ? e->msg : "";
}

void kc_clear_error(kc_context *ctx) {
  kc_err_slot *e = ctx ? slot_of_thread(ctx, false) : NULL;
  if (e) e->msg[0] = 0;
}

kc_status kc_errorf(kc_context *ctx, kc_status s, const char *fmt, ...) {
  kc_err_slot *e = slot_of_thread(ctx, true);
  if (!e) return s;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  kc_logf(ctx, KC_LOG_DEBUG, "error: %s", e->msg);
  return s;
}

void kc_error_append(kc_context *ctx, const char *fmt, ...) {
  kc_err_slot *e = slot_of_thread(ctx, true);
  if (!e) return;
  size_t len = strlen(e->msg);
  if (len + 2 >= sizeof e->msg) return;
  if (len) e->msg[len++] = '\n';
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg + len, sizeof e->msg - len, fmt, ap);
  va_end(ap);
}

void kc_logf(kc_context *ctx, int level, const char *fmt, ...) {
  if (!ctx->log_fn || level > ctx->opts.log_level) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  ctx->log_fn(ctx->log_user, level, buf);
}

void kc_assert_fail(const char *file, int line, const char *expr) {
  fprintf(stderr, "kernc: internal invariant failed at %s:%d: %s\n", file, line, expr);
  abort();
}
