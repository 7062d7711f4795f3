/*
 * runtime/profile.c - opt-in per-kernel timing of a module (kc_module_set_profile,
 * kc_module_profile). runtime/exec.c adds the time around each kernel's pool run to m->prof
 * while m->profile is set; this file owns the counters and reports them.
 *
 * Invariants: m->prof has one entry per node of m->g once profiling has been turned on, and
 * stays allocated (turning profiling off keeps the counters readable); the counters only count
 * launches, so nodes without a kernel never appear in a report.
 */
#include "runtime/internal.h"

#include <stdlib.h>
#include <string.h>

/* Nodes that launch a kernel: the ones kc_rt_execute (or the CUDA executor) times. */
static bool has_kernel(const kc_module *m, uint32_t i) {
  return !m->kernels[i].no_kernel && (m->kernels[i].fn || m->cuda);
}

kc_status kc_module_set_profile(kc_module *m, int on) {
  if (!m) return KC_ERR_INVALID_ARG;
  if (!on) {
    m->profile = false;
    return KC_OK;
  }
  if (!m->prof) {
    m->prof = calloc(m->g->nnodes + 1, sizeof *m->prof);
    if (!m->prof)
      return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory profiling graph @%s", m->g->name);
  } else {
    memset(m->prof, 0, (m->g->nnodes + 1) * sizeof *m->prof);
  }
  m->profile = true;
  return KC_OK;
}

uint32_t kc_module_profile(const kc_module *m, kc_node_profile *out, uint32_t cap) {
  if (!m) return 0;
  uint32_t count = 0;
  for (uint32_t i = 0; i < m->g->nnodes; i++) {
    if (!has_kernel(m, i)) continue;
    if (out && count < cap) {
      const kc_node *n = &m->g->nodes[i];
      out[count] = (kc_node_profile){
          .node = i,
          .value = n->nout ? n->out[0].id : 0,
          .op = kc_ops[n->op].name,
          .loc = n->loc,
          .calls = m->prof ? m->prof[i].calls : 0,
          .ns = m->prof ? m->prof[i].ns : 0,
          .min_ns = m->prof ? m->prof[i].min_ns : 0,
      };
    }
    count++;
  }
  return count;
}
