/*
 * runtime/session.h - private to runtime/: the graph-free core of decoding sessions (kc_session of
 * kernc.h). A session runs the plan of a decode step (codegen/plan.h kc_plan_decode) on an
 * executor instance (runtime/executor.h) over a KV cache (runtime/kv_cache.h); it never sees a
 * graph, so runtime/session.c, runtime/generate.c, kv_cache.c and sample.c are in the runtime
 * archive kernc_rt as well as in libkernc. Where the plan comes from is the caller's business:
 * kc_session_new (runtime/session_compile.c) derives and JIT-compiles it from a graph, a compiled
 * model's NAME_session_new (runtime/session_aot.c) finds it in the library.
 */
#ifndef KERNC_RUNTIME_SESSION_H
#define KERNC_RUNTIME_SESSION_H

#include "codegen/plan.h"
#include "runtime/executor.h"

/*
 * A session over decode step d (copied; d->plan must outlive the session) run by x (an instance
 * of d->plan), its cache made from o (NULL: the defaults; o->target is not read). On success the
 * session owns `owner`, released with release(owner) after the cache at kc_session_free (the JIT:
 * the module holding x; a library: x itself); on failure nothing is taken and the error is in
 * ctx. ctx must outlive the session.
 */
kc_status kc_session_open(kc_context *ctx, const kc_plan_decode *d, kc_exec *x,
                          void (*release)(void *owner), void *owner, const kc_session_options *o,
                          kc_session **out);

/* The context a session reports errors to. */
kc_context *kc_session_context(const kc_session *s);
/* The owner kc_session_open was given, when its release function is `release`; else NULL. */
void *kc_session_owner(const kc_session *s, void (*release)(void *owner));

#endif /* KERNC_RUNTIME_SESSION_H */
