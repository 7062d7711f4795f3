/*
 * codegen/cuda/elementwise.c - the loop machinery of elementwise kernels (kc_cu_elementwise)
 * and kc_cuda_lower_elementwise, the kernel of every op whose CUDA column says `elementwise`
 * (unary math, cast, clip, the broadcasting binary ops, variadic min/max, comparisons, logic,
 * where). fused.c runs regions on the same machinery with their body as the math.
 *
 * A thread per output element (grid-stride over numel). Each input is classified at compile
 * time: SAME (its dims are the output's, the same kc_dims) reads at the flat index, SCALAR (a
 * static single element) reads element 0, anything else is GENERAL: its offset comes from the
 * output coordinates times its broadcast strides (0 along axes it lacks or has as 1, decided at
 * run time for symbolic dims). Only kernels with a GENERAL input pay for the index division.
 *
 * Invariants: every output has output 0's dims (one index serves them all); loads never leave
 * an input's extent, since broadcast axes have stride 0; the math sees compute types only.
 */
#include "codegen/cuda/emit.h"

#include <stdio.h>
#include <string.h>

#define EW_BLOCK 256

enum { K_SAME, K_SCALAR, K_GENERAL };

static int classify(const kc_value *v, const kc_value *o) {
  bool one = true;
  for (int a = 0; a < v->rank; a++)
    one = one && v->dims[a] == 1;
  if (one) return K_SCALAR;
  if (v->rank != o->rank) return K_GENERAL;
  for (int a = 0; a < v->rank; a++)
    if (v->dims[a] != o->dims[a]) return K_GENERAL;
  return K_SAME;
}

static bool same_dims(const kc_value *a, const kc_value *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dims[i] != b->dims[i]) return false;
  return true;
}

kc_status kc_cu_elementwise(kc_cuda_emit *e, kc_cu_body_fn body, void *user) {
  const kc_node *n = e->n;
  const kc_value *o = kc_cu_val(e, true, 0);
  for (uint32_t k = 1; k < n->nout; k++)
    if (n->out[k].id && !same_dims(kc_cu_val(e, true, k), o))
      return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "outputs of different shapes");
  int R = o->rank;
  int kind[64];
  if (n->nin > 64) return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "%u inputs", n->nin);
  kc_cu_launch_threads(e, EW_BLOCK);
  kc_cu_units_dims(e, true, 0, 0, R, 1);
  kc_cu_begin(e, EW_BLOCK);
  const char *snames[64], *offs[64];
  char sbuf[64][16], obuf[64][16];
  bool need[KC_MAX_RANK] = {false};
  int ngen = 0;
  for (uint32_t i = 0; i < n->nin; i++) {
    if (!n->in[i].id) continue;
    kind[i] = classify(kc_cu_val(e, false, i), o);
    if (kind[i] != K_GENERAL) continue;
    snprintf(sbuf[ngen], sizeof sbuf[ngen], "s%u", i);
    snprintf(obuf[ngen], sizeof obuf[ngen], "o%u", i);
    snames[ngen] = sbuf[ngen];
    offs[ngen] = obuf[ngen];
    kc_cu_bcast_strides(e, i, R, o->dims, snames[ngen]);
    const kc_value *v = kc_cu_val(e, false, i);
    for (int k = R - v->rank; k < R; k++) /* stride 0 for sure where the input has a 1 */
      need[k] = need[k] || v->dims[k - (R - v->rank)] != 1;
    ngen++;
  }
  kc_cu_puts(e->t, "  KC_THREADS(idx) {\n");
  if (ngen) {
    kc_cu_puts(e->t, "    i64");
    for (int j = 0; j < ngen; j++)
      kc_cu_printf(e->t, "%s %s = 0", j ? "," : "", offs[j]);
    kc_cu_puts(e->t, ";\n");
    kc_cu_decompose(e, 4, "idx", true, 0, 0, R, ngen, snames, offs, need);
  }
  for (uint32_t i = 0; i < n->nin; i++) {
    if (!n->in[i].id) continue;
    kc_dtype t = kc_cu_val(e, false, i)->dtype;
    const char *idx = kind[i] == K_SAME     ? "idx"
                      : kind[i] == K_SCALAR ? "0"
                                            : kc_cu_fmt(e, "o%u", i);
    kc_cu_printf(e->t, "    const %s x%u = %s;\n", kc_cu_ctype(t), i,
                 kc_cu_load(e, t, kc_cu_fmt(e, "in%u", i), idx));
  }
  kc_status s = body(e, user);
  if (s != KC_OK) return s;
  for (uint32_t k = 0; k < n->nout; k++)
    if (n->out[k].id)
      kc_cu_store(e, 4, kc_cu_val(e, true, k)->dtype, kc_cu_fmt(e, "out%u", k), "idx",
                  kc_cu_fmt(e, "y%u", k));
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}

/* One op: y0 = its snippet over x0.. */
static kc_status one_op(kc_cuda_emit *e, void *user) {
  const kc_node *n = e->n;
  const char *args[64];
  char names[64][16];
  for (uint32_t i = 0; i < n->nin; i++) {
    snprintf(names[i], sizeof names[i], "x%u", i);
    args[i] = n->in[i].id ? names[i] : NULL;
  }
  kc_dtype in = kc_cu_val(e, false, 0)->dtype, out = kc_cu_val(e, true, 0)->dtype;
  char expr[4096];
  kc_status s = kc_cu_scalar(n, in, out, args, n->nin, expr, sizeof expr);
  if (s != KC_OK)
    return kc_cu_fail(e, s, "no CUDA math for %s on %s -> %s", kc_ops[n->op].name,
                      kc_dtype_name(in), kc_dtype_name(out));
  kc_cu_printf(e->t, "    const %s y0 = %s;\n", kc_cu_ctype(out), expr);
  return KC_OK;
}

kc_status kc_cuda_lower_elementwise(kc_cuda_emit *e) {
  if (e->n->nout != 1 || e->n->nin < 1 || !e->n->in[0].id)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "not an elementwise op");
  return kc_cu_elementwise(e, one_op, NULL);
}
