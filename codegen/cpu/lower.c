/*
 * codegen/cpu/lower.c - graph lowering: every node of a graph becomes one kernel of the ABI in
 * codegen/cpu/emit.h, all of them in one LLVM module (kc_cpu_lower_module), which is then either
 * optimized and JIT'd once (kc_cpu_compile_graph) or written as an object with the tables of a
 * compiled model (codegen/cpu/aot_object.c): both paths build the very same kernels.
 *
 * Invariants:
 *   - Kernel symbols are "k<node index>_<op name>" (units: "..._units"), so one kc_cpu lowers
 *     one graph; a second graph on the same kc_cpu would redefine them (the runtime creates a
 *     kc_cpu per compiled module).
 *   - The dims offsets handed to an emitter follow codegen.h: inputs then outputs, each present
 *     value's rank entries back to back; an absent optional input contributes none.
 *   - On failure nothing is added to the JIT and the error is the emitter's (it names the node);
 *     kernels[] is left zeroed.
 */
#include "emit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 96

void kc_cpu_kernel_name(char *buf, size_t size, uint32_t index, kc_op op) {
  snprintf(buf, size, "k%u_%s", index, kc_ops[op].name);
}

void kc_kernel_symbol(char *buf, size_t size, const kc_graph *g, uint32_t index) {
  kc_cpu_kernel_name(buf, size, index, g->nodes[index].op);
}

/* Every present operand of n typed: emitters rely on ranks and dtypes. */
static kc_status check_typed(const kc_graph *g, const kc_node *n) {
  for (uint32_t i = 0; i < n->nin + n->nout; i++) {
    kc_val v = i < n->nin ? n->in[i] : n->out[i - n->nin];
    if (!v.id) continue;
    const kc_value *val = kc_value_of(g, v);
    if (val->rank < 0 || val->dtype == KC_DT_NONE)
      return kc_node_errorf((kc_graph *)g, n, KC_ERR_SHAPE, "%%%u has no type; cannot lower it",
                            v.id);
  }
  return KC_OK;
}

/* Offsets of each operand's dims in the kernel's dims array (layout of codegen.h). */
static void dims_layout(const kc_graph *g, const kc_node *n, uint32_t *in_dims,
                        uint32_t *out_dims) {
  uint32_t off = 0;
  for (uint32_t i = 0; i < n->nin; i++) {
    in_dims[i] = off;
    if (n->in[i].id) off += (uint32_t)kc_value_of(g, n->in[i])->rank;
  }
  for (uint32_t i = 0; i < n->nout; i++) {
    out_dims[i] = off;
    if (n->out[i].id) off += (uint32_t)kc_value_of(g, n->out[i])->rank;
  }
}

/* Emit node ni into ir's module; fills the static facts of kernels[ni]. */
static kc_status emit_node(kc_cpu *cpu, kc_ir *ir, const kc_graph *g, uint32_t ni,
                           kc_cpu_kernel *k) {
  const kc_node *n = &g->nodes[ni];
  k->no_kernel = 1;
  k->check_in = -1;
  k->check_dim = -1;
  if (n->op == KC_OP_NOP) return KC_OK;
  kc_status s = check_typed(g, n);
  if (s != KC_OK) return s;
  uint32_t *offs = malloc((size_t)(n->nin + n->nout + 1) * sizeof *offs);
  if (!offs) return kc_errorf(cpu->ctx, KC_ERR_NOMEM, "out of memory lowering the graph");
  char name[NAME_MAX_LEN];
  kc_cpu_kernel_name(name, sizeof name, ni, n->op);
  kc_cpu_emit e = {
      .cpu = cpu, .ir = ir, .g = g, .n = n, .name = name, .check_in = -1, .check_dim = -1};
  e.in_dims = offs;
  e.out_dims = offs + n->nin;
  dims_layout(g, n, offs, offs + n->nin);
  s = kc_cpu_ops[n->op].emit(&e);
  free(offs);
  if (s != KC_OK) return s;
  k->no_kernel = e.no_kernel;
  k->grain = e.grain;
  k->ws_bytes = e.ws_bytes;
  k->shared_bytes = e.shared_bytes;
  k->shared_zero = e.shared_zero;
  k->check_in = e.check_in;
  k->check_dim = e.check_dim;
  if (e.no_kernel) return KC_OK;
  /* an emitter that forgot a function would otherwise surface as an opaque lookup failure */
  char units[NAME_MAX_LEN + 8];
  snprintf(units, sizeof units, "%s_units", name);
  if (!LLVMGetNamedFunction(ir->mod, name) || !LLVMGetNamedFunction(ir->mod, units))
    return kc_node_errorf((kc_graph *)g, n, KC_ERR_INTERNAL,
                          "the %s emitter did not define %s and %s", kc_ops[n->op].name, name,
                          units);
  return KC_OK;
}

/* Resolve the JIT'd addresses of every node that has a kernel. */
static kc_status lookup_all(kc_cpu *cpu, const kc_graph *g, kc_cpu_kernel *kernels) {
  for (uint32_t i = 0; i < g->nnodes; i++) {
    if (kernels[i].no_kernel) continue;
    char name[NAME_MAX_LEN], units[NAME_MAX_LEN + 8];
    kc_cpu_kernel_name(name, sizeof name, i, g->nodes[i].op);
    snprintf(units, sizeof units, "%s_units", name);
    void *fn, *un;
    kc_status s = kc_cpu_lookup(cpu, name, &fn);
    if (s == KC_OK) s = kc_cpu_lookup(cpu, units, &un);
    if (s != KC_OK) return s;
    /* object pointers to function pointers: the JIT hands out addresses as data */
    memcpy(&kernels[i].fn, &fn, sizeof fn);
    memcpy(&kernels[i].units, &un, sizeof un);
  }
  return KC_OK;
}

kc_status kc_cpu_lower_module(kc_cpu *cpu, const kc_graph *g, kc_cpu_kernel *kernels,
                              LLVMModuleRef *out) {
  *out = NULL;
  memset(kernels, 0, (size_t)g->nnodes * sizeof *kernels);
  char modname[128];
  snprintf(modname, sizeof modname, "graph_%s", g->name ? g->name : "main");
  LLVMModuleRef mod = kc_cpu_module_new(cpu, modname);
  kc_ir ir;
  kc_ir_init(&ir, mod);
  kc_status s = KC_OK;
  for (uint32_t i = 0; i < g->nnodes && s == KC_OK; i++)
    s = emit_node(cpu, &ir, g, i, &kernels[i]);
  kc_ir_dispose(&ir);
  if (s != KC_OK) {
    LLVMDisposeModule(mod);
    memset(kernels, 0, (size_t)g->nnodes * sizeof *kernels);
    return s;
  }
  *out = mod;
  return KC_OK;
}

kc_status kc_cpu_compile_graph(kc_cpu *cpu, const kc_graph *g, kc_cpu_kernel *kernels) {
  LLVMModuleRef mod;
  kc_status s = kc_cpu_lower_module(cpu, g, kernels, &mod);
  if (s != KC_OK) return s;
  bool any = false;
  for (uint32_t i = 0; i < g->nnodes; i++)
    any = any || !kernels[i].no_kernel;
  if (!any) { /* nothing to JIT: views and sources only */
    LLVMDisposeModule(mod);
    return KC_OK;
  }
  s = kc_cpu_module_add(cpu, mod, 0); /* consumes mod */
  if (s == KC_OK) s = lookup_all(cpu, g, kernels);
  if (s != KC_OK) memset(kernels, 0, (size_t)g->nnodes * sizeof *kernels);
  return s;
}
