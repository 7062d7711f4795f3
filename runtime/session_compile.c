/*
 * runtime/session_compile.c - kc_session_new: the part of decoding sessions that needs the graph
 * and LLVM (libkernc only). The model is compiled as kc_compile would (the target's passes), its
 * decode step derived (passes/derive_decode.c) and JIT-compiled into a module, and the session
 * core (runtime/session.c, graph-free) runs that module's plan. kc_export derives the same step
 * with kc_rt_derive_decode and describes it with kc_rt_decode_info, so a compiled library's
 * NAME_session_* run what a kc_session runs.
 */
#include "runtime/internal.h"

#include "passes/passes.h"
#include "runtime/session.h"

#include <stdlib.h>

kc_status kc_rt_derive_decode(kc_module *m) {
  kc_status st = kc_derive_decode(m->g);
  if (st == KC_OK) st = kc_graph_verify(m->g);
  if (st != KC_OK) return st;
  kc_graph_compact(m->g);
  free(m->kernels); /* sized for the graph before derive-decode */
  m->kernels = calloc(m->g->nnodes + 1, sizeof *m->kernels);
  return m->kernels ? KC_OK
                    : kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory deriving the decode step");
}

kc_status kc_rt_decode_info(kc_context *ctx, const kc_graph *g, kc_plan_decode *d) {
  const kc_value *pool = kc_value_of(g, g->inputs[g->ninputs - 4]);
  const kc_value *logits = g->noutputs ? kc_value_of(g, g->outputs[0].v) : NULL;
  *d = (kc_plan_decode){.dtype_size = (int64_t)kc_dtype_size(pool->dtype)};
  if (!logits || logits->rank != 3 || logits->dtype != KC_F32 ||
      !kc_dim_const(g, logits->dims[2], &d->vocab))
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                     "session: the model's output 0 must be f32 logits [B, S, vocab]");
  if (pool->rank != 6 || !kc_dim_const(g, pool->dims[1], &d->layers) ||
      !kc_dim_const(g, pool->dims[3], &d->kv_heads) ||
      !kc_dim_const(g, pool->dims[5], &d->head_dim))
    return kc_errorf(ctx, KC_ERR_INTERNAL, "session: the cache's dims are not static");
  return KC_OK;
}

/* The decode step of g: g's passes as kc_compile's target runs them, then derive-decode. */
static kc_status compile_step(kc_context *ctx, const kc_graph *g, const kc_session_options *o,
                              kc_module **out) {
  const kc_target *t;
  kc_status st = kc_target_find(ctx, o->target, &t);
  *out = NULL;
  if (st == KC_OK && t->takes_archs) /* a device target: runs copy inputs in and out */
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                     "sessions run on the CPU target only for now: on '%s' the KV cache would have "
                     "to stay in device memory between steps, which the executor cannot do yet",
                     t->name);
  if (st == KC_OK) st = kc_rt_module_new(ctx, g, t, false, NULL, true, out);
  if (st == KC_OK) st = kc_rt_derive_decode(*out);
  if (st == KC_OK) st = kc_rt_module_compile(*out, o->threads);
  return st;
}

static void release_module(void *m) { kc_module_free(m); }

kc_module *kc_session_module(const kc_session *s) { return kc_session_owner(s, release_module); }

kc_status kc_session_new(kc_context *ctx, const kc_graph *model, const kc_session_options *opts,
                         kc_session **out) {
  kc_clear_error(ctx);
  if (!out) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_session_new: out is NULL");
  *out = NULL;
  if (!model) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_session_new: no model");
  kc_session_options none = {0};
  const kc_session_options *o = opts ? opts : &none;
  kc_module *m = NULL;
  kc_plan_decode d;
  kc_status st = compile_step(ctx, model, o, &m);
  if (st == KC_OK) st = kc_rt_decode_info(ctx, m->g, &d);
  if (st == KC_OK) {
    d.plan = &m->plan.model;
    st = kc_session_open(ctx, &d, m->x, release_module, m, o, out);
  }
  if (st != KC_OK) kc_module_free(m);
  return st;
}
