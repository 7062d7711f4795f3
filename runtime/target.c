/*
 * runtime/target.c - the table of targets (runtime/internal.h kc_target) and its "cpu" row: the
 * one place that knows what a target name means. kc_compile, kc_export and the kernc program go
 * through kc_target_find; no other code compares target names.
 *
 * cpu: kernels JIT'd for the host CPU (or lowered into an object for kc_export), run by the
 * executor's CPU half (runtime/exec_cpu.c). cuda: runtime/target_cuda.c.
 */
#include "runtime/export.h"

#include <stdio.h>
#include <string.h>

static kc_status cpu_compile(kc_module *m) {
  kc_status s = kc_cpu_new(m->ctx, &m->cpu);
  return s == KC_OK ? kc_cpu_compile_graph(m->cpu, m->g, m->kernels) : s;
}

static kc_status cpu_open(kc_module *m, int threads) {
  return kc_exec_new(&m->plan.model, &kc_exec_cpu, m->ctx, threads, &m->x);
}

static kc_status cpu_export_lower(kc_module *m, const kc_export_options *opts, kc_cpu_obj **obj,
                                  void **state) {
  kc_status s = kc_cpu_new_for(m->ctx, opts ? opts->cpu : NULL, &m->cpu);
  return s == KC_OK ? kc_cpu_obj_lower(m->cpu, m->g, m->kernels, obj) : s;
}

static void cpu_export_describe(const kc_module *m, void *state, char *buf, size_t size) {
  snprintf(buf, size, "%s", kc_cpu_host(m->cpu)->name);
}

static const kc_target kc_target_cpu = {
    .name = "cpu",
    .pipeline = "cpu",
    .compile = cpu_compile,
    .open = cpu_open,
    .export_lower = cpu_export_lower,
    .export_describe = cpu_export_describe,
};

extern const kc_target kc_target_cuda;

static const kc_target *const targets[] = {&kc_target_cpu, &kc_target_cuda};

kc_status kc_target_find(kc_context *ctx, const char *name, const kc_target **out) {
  size_t n = sizeof targets / sizeof *targets;
  *out = targets[0];
  if (!name) return KC_OK;
  for (size_t i = 0; i < n; i++)
    if (strcmp(targets[i]->name, name) == 0) {
      *out = targets[i];
      return KC_OK;
    }
  char known[256];
  size_t l = 0;
  known[0] = 0;
  for (size_t i = 0; i < n && l < sizeof known; i++)
    l += (size_t)snprintf(known + l, sizeof known - l, "%s%s", i ? ", " : "", targets[i]->name);
  return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "unknown target '%s' (known: %s)", name, known);
}

kc_status kc_target_check(kc_context *ctx, const char *name) {
  kc_clear_error(ctx);
  const kc_target *t;
  return kc_target_find(ctx, name, &t);
}
