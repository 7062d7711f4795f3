/*
 * ir/context.c - kc_context: options, the error buffer, the log callback, status names.
 *
 * The error buffer holds the message of the most recent failure; kc_errorf replaces it,
 * kc_error_append adds lines (tool logs such as LLVM's or NVRTC's).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

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
  return ctx;
}

void kc_context_free(kc_context *ctx) { free(ctx); }

kc_options *kc_context_options(kc_context *ctx) { return &ctx->opts; }

void kc_context_set_log(kc_context *ctx, kc_log_fn fn, void *user) {
  ctx->log_fn = fn;
  ctx->log_user = user;
}

const char *kc_last_error(const kc_context *ctx) { return ctx ? ctx->err : "no context"; }

void kc_clear_error(kc_context *ctx) { ctx->err[0] = 0; }

kc_status kc_errorf(kc_context *ctx, kc_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
  va_end(ap);
  kc_logf(ctx, KC_LOG_DEBUG, "error: %s", ctx->err);
  return s;
}

void kc_error_append(kc_context *ctx, const char *fmt, ...) {
  size_t len = strlen(ctx->err);
  if (len + 2 >= sizeof ctx->err) return;
  if (len) ctx->err[len++] = '\n';
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err + len, sizeof ctx->err - len, fmt, ap);
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
