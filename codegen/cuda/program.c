/*
 * codegen/cuda/program.c - CUDA programs: the kernel of one node (kc_cuda_emit_node: operand
 * checks, the dims layout, the family's emitter from the CUDA column), and the program that
 * holds kernels of any number of graphs behind the device library sections they use.
 *
 * The runtime puts every kernel of a model into one program (one NVRTC compile); the tests put
 * the distinct kernels of many models into a few programs, which is why a program is not tied
 * to a graph and kernels are added as text.
 * Invariants: kernel names are the caller's and must be unique within a program; the source is
 * rebuilt on demand, so adding after kc_cuda_prog_source invalidates the string it returned.
 */
#include "codegen/cuda/emit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const kc_cuda_emit_fn kc_cuda_ops[KC_OP_COUNT] = {
#define OP(id, ...) [KC_OP_##id] =
#define CUDA(family) kc_cuda_lower_##family,
#include "ir/ops.def"
#undef CUDA
#undef OP
};

struct kc_cuda_prog {
  kc_context *ctx;
  kc_cu_text kernels;
  kc_cu_text src;
  unsigned sections;
  uint32_t count;
};

void kc_cuda_kernel_name(char *buf, size_t size, uint32_t ni, const char *op) {
  snprintf(buf, size, "k%u_%s", ni, op);
}

/* Every present operand typed: emitters rely on ranks and dtypes. */
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

kc_status kc_cuda_emit_node(kc_context *ctx, const kc_graph *g, uint32_t ni, const char *name,
                            char **text, unsigned *sections, kc_cuda_kernel_info *info) {
  const kc_node *n = &g->nodes[ni];
  *text = NULL;
  *sections = 0;
  memset(info, 0, sizeof *info);
  info->no_kernel = true;
  info->check_in = -1;
  info->check_dim = -1;
  if (n->op == KC_OP_NOP) return KC_OK;
  kc_status s = check_typed(g, n);
  if (s != KC_OK) return s;
  uint32_t *offs = malloc((size_t)(n->nin + n->nout + 1) * sizeof *offs);
  kc_cuda_emit *e = calloc(1, sizeof *e);
  kc_cu_text t = {0};
  if (!offs || !e) {
    free(offs);
    free(e);
    return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory emitting CUDA C");
  }
  uint32_t nd = 0;
  for (uint32_t i = 0; i < n->nin + n->nout; i++) {
    kc_val v = i < n->nin ? n->in[i] : n->out[i - n->nin];
    offs[i] = nd;
    if (v.id) nd += (uint32_t)kc_value_of(g, v)->rank;
  }
  *e = (kc_cuda_emit){.ctx = ctx,
                      .g = g,
                      .n = n,
                      .name = name,
                      .in_dims = offs,
                      .out_dims = offs + n->nin,
                      .ndims = nd,
                      .t = &t,
                      .check_in = -1,
                      .check_dim = -1};
  s = kc_cuda_ops[n->op](e);
  if (s == KC_OK && t.oom) s = kc_errorf(ctx, KC_ERR_NOMEM, "out of memory emitting CUDA C");
  if (s == KC_OK && e->ring_overflow)
    s = kc_node_errorf((kc_graph *)g, n, KC_ERR_INTERNAL, "CUDA: an index expression is too long");
  if (s == KC_OK && !e->no_kernel && !t.p)
    s = kc_node_errorf((kc_graph *)g, n, KC_ERR_INTERNAL, "CUDA: the emitter wrote no kernel");
  if (s == KC_OK) {
    info->no_kernel = e->no_kernel;
    info->nbufs = (n->nin + n->nout ? n->nin + n->nout : 1) + (e->check_in >= 0);
    info->check_in = e->check_in;
    info->check_dim = e->check_dim;
    info->ndims = nd ? nd : 1;
    info->launch = e->launch;
    *sections = e->sections;
    if (!e->no_kernel) *text = t.p, t.p = NULL;
  }
  kc_cu_text_free(&t);
  free(offs);
  free(e);
  return s;
}

kc_status kc_cuda_prog_new(kc_context *ctx, kc_cuda_prog **out) {
  *out = calloc(1, sizeof **out);
  if (!*out) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
  (*out)->ctx = ctx;
  return KC_OK;
}

void kc_cuda_prog_free(kc_cuda_prog *p) {
  if (!p) return;
  kc_cu_text_free(&p->kernels);
  kc_cu_text_free(&p->src);
  free(p);
}

kc_status kc_cuda_prog_add_text(kc_cuda_prog *p, const char *text, unsigned sections) {
  kc_cu_puts(&p->kernels, text);
  kc_cu_puts(&p->kernels, "\n");
  p->sections |= sections;
  p->count++;
  return p->kernels.oom ? kc_errorf(p->ctx, KC_ERR_NOMEM, "out of memory") : KC_OK;
}

kc_status kc_cuda_prog_add(kc_cuda_prog *p, const kc_graph *g, uint32_t ni, const char *name,
                           kc_cuda_kernel_info *info) {
  char *text;
  unsigned sections;
  kc_status s = kc_cuda_emit_node(p->ctx, g, ni, name, &text, &sections, info);
  if (s == KC_OK && text) s = kc_cuda_prog_add_text(p, text, sections);
  free(text);
  return s;
}

const char *kc_cuda_prog_source(kc_cuda_prog *p) {
  const char *sec[KC_CU_NSECTIONS] = {kc_cu_sec_matmul, kc_cu_sec_attention, kc_cu_sec_kv_cache};
  p->src.len = 0;
  if (p->src.p) p->src.p[0] = 0;
  kc_cu_puts(&p->src, kc_cu_prelude);
  for (int i = 0; i < KC_CU_NSECTIONS; i++)
    if (p->sections & (1u << i)) kc_cu_puts(&p->src, sec[i]);
  kc_cu_puts(&p->src, p->kernels.p ? p->kernels.p : "");
  return p->src.oom ? NULL : p->src.p;
}

uint32_t kc_cuda_prog_count(const kc_cuda_prog *p) { return p->count; }
