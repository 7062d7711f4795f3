/*
 * runtime/dump_api.c - kc_graph_dump: the IR of a graph after a pass pipeline, as a string, for
 * bindings (the Python package's kernc.dump) that have no FILE* and no access to passes/passes.h.
 *
 * It runs the pipeline kc_compile would run (the target's default one unless passes says
 * otherwise, fold computing constants with the CPU JIT as kc_compile's does) on a copy of the
 * graph, so the caller's graph is never changed. The `kernc dump` program has its own path
 * (tools/cmd_dump.c, with every --print-* flag); this is its --print-after-all and --format subset.
 */
#include "runtime/internal.h"
#include "runtime/runtime.h"

#include "passes/passes.h"

#include <stdlib.h>

/* The pipeline's result (and, after_all, the IR after every pass ahead of it) written to f. */
static kc_status dump_to(kc_context *ctx, kc_graph *g, const char *target, const char *passes,
                         int after_all, int dot, FILE *f) {
  const kc_target *t;
  kc_pipeline p;
  kc_status s = kc_target_find(ctx, target, &t);
  if (s == KC_OK)
    s = passes ? kc_pipeline_parse(ctx, passes, &p) : kc_pipeline_for_target(ctx, t->pipeline, &p);
  if (s == KC_OK) s = kc_graph_verify(g);
  if (s != KC_OK) return s;
  kc_pass_options po = {
      .print_after_all = after_all != 0,
      .no_print_on_fail = true,
      .out = f,
      .eval = kc_fold_evaluator(),
  };
  s = kc_pipeline_run(&p, g, &po);
  if (s == KC_OK) s = dot ? kc_graph_dot(g, f) : kc_graph_print(g, f);
  return s;
}

kc_status kc_graph_dump(const kc_graph *g, const char *target, const char *passes, int after_all,
                        int dot, char **out) {
  if (!g || !out) return KC_ERR_INVALID_ARG; /* no context to put a message on */
  *out = NULL;
  kc_context *ctx = kc_graph_context(g);
  kc_clear_error(ctx);
  if (kc_graph_status(g) != KC_OK)
    return kc_errorf(ctx, kc_graph_status(g), "graph @%s has a failed builder call (%s)", g->name,
                     kc_status_str(kc_graph_status(g)));
  kc_graph *copy = kc_graph_clone(g, true);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = copy ? open_memstream(&buf, &len) : NULL;
  if (!f) {
    kc_graph_free(copy);
    return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory dumping @%s", g->name);
  }
  kc_status s = dump_to(ctx, copy, target, passes, after_all, dot, f);
  if (fclose(f) != 0 && s == KC_OK)
    s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory dumping @%s", g->name);
  kc_graph_free(copy);
  if (s != KC_OK) {
    free(buf);
    return s;
  }
  *out = buf;
  return KC_OK;
}
