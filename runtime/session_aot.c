/*
 * runtime/session_aot.c - what the session entry points of a model compiled ahead of time call
 * (codegen/aot.h): NAME_session_new makes an instance of the decode step's plan that the object
 * holds (of the CPU variant NAME_create would pick, after the same CPU check) and a session over it
 * (runtime/session.c); the other entry points (NAME_decode, NAME_generate, NAME_seq_*...) call
 * kernc.h's kc_session_* and kc_generate_* directly, from this archive.
 *
 * Part of the runtime archive kernc_rt: no graph, no LLVM. Each session has its own context for
 * its errors (the instance's: one message per thread); a failed NAME_session_new leaves its
 * message where NAME_error(NULL) reads it (per thread).
 */
#include "codegen/aot.h"
#include "ir/internal.h"
#include "runtime/session.h"

static void release_exec(void *x) { kc_exec_free(x); }

kc_session *kc_aot_session_new(const kc_plan_decode *d, const char *target, int threads, int paged,
                               int64_t size, int64_t count) {
  kc_exec *x = kc_aot_create_checked(d->plan, target, threads);
  if (!x) return NULL; /* the check said why */
  kc_session_options o = {.threads = threads, .paged = paged != 0};
  if (paged) {
    o.block_size = size;
    o.max_tokens = count;
  } else {
    o.max_len = size;
    o.max_seqs = count > INT32_MAX ? INT32_MAX : (int32_t)count;
  }
  kc_session *s = NULL;
  if (kc_session_open(x->ctx, d, x, release_exec, x, &o, &s) != KC_OK) {
    kc_aot_create_failed(kc_last_error(x->ctx));
    kc_exec_free(x);
    return NULL;
  }
  return s;
}

kc_session *kc_aot_session_best(const kc_aot_targets *t, int threads, int paged, int64_t size,
                                int64_t count) {
  int64_t i = kc_aot_pick(t);
  if (i < 0) i = 0; /* its check fails, saying what this CPU lacks */
  return kc_aot_session_new(t->v[i]->decode, t->v[i]->target, threads, paged, size, count);
}

const char *kc_aot_session_error(const kc_session *s) {
  if (s) return kc_last_error(kc_session_context(s));
  const char *why = kc_aot_create_error();
  return why[0] ? why : "no session";
}
