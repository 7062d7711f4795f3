/*
 * codegen/cuda/emit_common.c - helpers every CUDA emitter family uses: C type names, dims as C
 * expressions, kernel signature, loads and stores with the storage/compute conversions, literals,
 * launch descriptions and broadcast index arithmetic (see emit.h).
 *
 * Invariants: strings returned here live in the emitter's ring (e->ring) and stay valid for
 * KC_CU_RING further helper calls; a string that does not fit sets e->ring_overflow instead of
 * being silently cut.
 */
#include "codegen/cuda/emit.h"

#include <stdarg.h>
#include <string.h>

const char *kc_cu_stype(kc_dtype t) {
  switch (t) { /* one-token names (prelude.c), so S{} and (S)x parse for every dtype */
  case KC_F32: return "float";
  case KC_F16: return "kc_f16";
  case KC_BF16: return "kc_bf16";
  case KC_F64: return "double";
  case KC_I64: return "kc_i64";
  case KC_I32: return "int";
  case KC_I16: return "kc_i16";
  case KC_I8: return "kc_i8";
  case KC_U64: return "kc_u64";
  case KC_U32: return "kc_u32";
  case KC_U16: return "kc_u16";
  case KC_U8: return "kc_u8";
  case KC_BOOL: return "kc_bool";
  default: return "void";
  }
}

const char *kc_cu_ctype(kc_dtype t) {
  if (t == KC_F16 || t == KC_BF16) return "float";
  if (t == KC_BOOL) return "bool";
  return kc_cu_stype(t);
}

const char *kc_cu_fmt(kc_cuda_emit *e, const char *fmt, ...) {
  char *buf = e->ring[e->ring_next++ % KC_CU_RING];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, KC_CU_RING_LEN, fmt, ap);
  va_end(ap);
  if (n < 0 || n >= KC_CU_RING_LEN) e->ring_overflow = true;
  return buf;
}

const kc_value *kc_cu_val(const kc_cuda_emit *e, bool out, uint32_t i) {
  kc_val v = out ? e->n->out[i] : e->n->in[i];
  return kc_value_of(e->g, v);
}

bool kc_cu_present(const kc_cuda_emit *e, bool out, uint32_t i) {
  const kc_node *n = e->n;
  return out ? i < n->nout && n->out[i].id : i < n->nin && n->in[i].id;
}

const char *kc_cu_dim(kc_cuda_emit *e, bool out, uint32_t i, int axis) {
  kc_dim d = kc_cu_val(e, out, i)->dims[axis];
  if (!KC_DIM_IS_SYM(d)) return kc_cu_fmt(e, "%lldLL", (long long)d);
  return kc_cu_fmt(e, "a.d[%u]", (out ? e->out_dims[i] : e->in_dims[i]) + (uint32_t)axis);
}

const char *kc_cu_numel(kc_cuda_emit *e, bool out, uint32_t i, int from, int to) {
  const kc_value *v = kc_cu_val(e, out, i);
  char buf[KC_CU_RING_LEN];
  long long c = 1;
  size_t len = 0;
  buf[0] = 0;
  for (int a = from; a < to; a++) {
    if (!KC_DIM_IS_SYM(v->dims[a])) {
      c *= v->dims[a];
      continue;
    }
    const char *d = kc_cu_dim(e, out, i, a);
    int n = snprintf(buf + len, sizeof buf - len, "%s", d);
    if (n < 0 || (size_t)n + 1 >= sizeof buf - len)
      e->ring_overflow = true;
    else
      len += (size_t)n, buf[len++] = '*', buf[len] = 0;
  }
  return kc_cu_fmt(e, "(%s%lldLL)", buf, c);
}

kc_status kc_cu_fail(kc_cuda_emit *e, kc_status s, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return kc_node_errorf((kc_graph *)e->g, e->n, s, "CUDA: %s", msg);
}

void kc_cu_begin(kc_cuda_emit *e, int block) {
  const kc_node *n = e->n;
  uint32_t nb = n->nin + n->nout;
  kc_cu_printf(e->t,
               "extern \"C\" __global__ void __launch_bounds__(%d) %s(const kc_args<%u, %u> a) {\n",
               block, e->name, (nb ? nb : 1) + (e->check_in >= 0), e->ndims ? e->ndims : 1);
  if (e->check_in >= 0)
    kc_cu_printf(e->t, "  unsigned long long *kc_err = (unsigned long long *)a.b[%u];\n",
                 nb ? nb : 1);
  for (uint32_t i = 0; i < n->nin; i++) {
    if (!n->in[i].id) continue;
    const char *s = kc_cu_stype(kc_cu_val(e, false, i)->dtype);
    kc_cu_printf(e->t, "  const %s *__restrict__ in%u = (const %s *)a.b[%u];\n", s, i, s, i);
  }
  for (uint32_t i = 0; i < n->nout; i++) {
    if (!n->out[i].id) continue;
    const char *s = kc_cu_stype(kc_cu_val(e, true, i)->dtype);
    kc_cu_printf(e->t, "  %s *out%u = (%s *)a.b[%u];\n", s, i, s, n->nin + i);
  }
}

void kc_cu_end(kc_cuda_emit *e) { kc_cu_puts(e->t, "}\n"); }

void kc_cu_check_indices(kc_cuda_emit *e, uint32_t in, uint32_t bound_in, int axis) {
  e->check_in = (int)in;
  e->check_dim = e->in_dims[bound_in] + axis;
}

void kc_cu_checked_index(kc_cuda_emit *e, int indent, const char *var, const char *len,
                         const char *pos) {
  kc_cu_printf(e->t,
               "%*s{\n"
               "%*s  const i64 kc_index = %s;\n"
               "%*s  if (%s < 0) %s += %s;\n"
               "%*s  if ((unsigned long long)%s >= (unsigned long long)(%s)) {\n"
               "%*s    if (atomicCAS(kc_err, 0ull, (unsigned long long)(%s) + 1ull) == 0ull)\n"
               "%*s      kc_err[1] = (unsigned long long)kc_index;\n"
               "%*s    continue;\n"
               "%*s  }\n"
               "%*s}\n",
               indent, "", indent, "", var, indent, "", var, var, len, indent, "", var, len, indent,
               "", pos, indent, "", indent, "", indent, "", indent, "");
}

const char *kc_cu_load(kc_cuda_emit *e, kc_dtype t, const char *ptr, const char *idx) {
  switch (t) {
  case KC_F16: return kc_cu_fmt(e, "__half2float(%s[%s])", ptr, idx);
  case KC_BF16: return kc_cu_fmt(e, "__bfloat162float(%s[%s])", ptr, idx);
  case KC_BOOL: return kc_cu_fmt(e, "(%s[%s] != 0)", ptr, idx);
  default: return kc_cu_fmt(e, "%s[%s]", ptr, idx);
  }
}

void kc_cu_store(kc_cuda_emit *e, int indent, kc_dtype t, const char *ptr, const char *idx,
                 const char *v) {
  const char *conv;
  switch (t) {
  case KC_F16: conv = kc_cu_fmt(e, "__float2half_rn((float)(%s))", v); break;
  case KC_BF16: conv = kc_cu_fmt(e, "__float2bfloat16_rn((float)(%s))", v); break;
  case KC_BOOL: conv = kc_cu_fmt(e, "(kc_bool)((%s) ? 1 : 0)", v); break;
  default: conv = kc_cu_fmt(e, "(%s)(%s)", kc_cu_stype(t), v); break;
  }
  kc_cu_printf(e->t, "%*s%s[%s] = %s;\n", indent, "", ptr, idx, conv);
}

const char *kc_cu_literal(kc_cuda_emit *e, kc_dtype t, const void *data) {
  uint64_t bits = 0;
  size_t size = kc_dtype_size(t);
  memcpy(&bits, data, size <= sizeof bits ? size : sizeof bits); /* little-endian host */
  unsigned long long b = (unsigned long long)bits;
  switch (t) {
  case KC_F32: return kc_cu_fmt(e, "__int_as_float(0x%08llx)", b);
  case KC_F64: return kc_cu_fmt(e, "__longlong_as_double(0x%016llxLL)", b);
  case KC_F16: return kc_cu_fmt(e, "__half2float(__ushort_as_half((kc_u16)0x%04llx))", b);
  case KC_BF16: return kc_cu_fmt(e, "__bfloat162float(__ushort_as_bfloat16((kc_u16)0x%04llx))", b);
  case KC_BOOL: return b & 0xff ? "true" : "false";
  default: return kc_cu_fmt(e, "((%s)0x%llxULL)", kc_cu_stype(t), b);
  }
}

static void launch(kc_cuda_emit *e, int block, int per_block) {
  e->launch = (kc_cuda_launch){.block = block, .per_block = per_block, .mul = 1};
}

void kc_cu_launch_threads(kc_cuda_emit *e, int block) { launch(e, block, block); }
void kc_cu_launch_warps(kc_cuda_emit *e, int block) { launch(e, block, block / 32); }
void kc_cu_launch_blocks(kc_cuda_emit *e, int block) { launch(e, block, 1); }
void kc_cu_units_const(kc_cuda_emit *e, int64_t c) { e->launch.mul *= c; }

void kc_cu_units_dims(kc_cuda_emit *e, bool out, uint32_t i, int from, int to, uint32_t div) {
  const kc_value *v = kc_cu_val(e, out, i);
  for (int a = from; a < to; a++) {
    kc_dim d = v->dims[a];
    if (!KC_DIM_IS_SYM(d)) {
      e->launch.mul *= (d + div - 1) / div;
      continue;
    }
    KC_ASSERT(e->launch.nf < KC_CUDA_MAX_FACTORS);
    uint32_t k = e->launch.nf++;
    e->launch.f[k].dim = (out ? e->out_dims[i] : e->in_dims[i]) + (uint32_t)a;
    e->launch.f[k].div = div;
  }
}

void kc_cu_units_dims_except(kc_cuda_emit *e, bool out, uint32_t i, int from, int to, int skip) {
  for (int a = from; a < to; a++)
    if (a != skip) kc_cu_units_dims(e, out, i, a, a + 1, 1);
}

void kc_cu_bcast_strides(kc_cuda_emit *e, uint32_t i, int R, const kc_dim *odims,
                         const char *name) {
  const kc_value *v = kc_cu_val(e, false, i);
  for (int k = 0; k < R; k++) {
    int ai = k - (R - v->rank);
    const char *s = "0LL";
    if (ai >= 0 && v->dims[ai] != 1) {
      const char *stride = kc_cu_numel(e, false, i, ai + 1, v->rank);
      if (v->dims[ai] == odims[k])
        s = stride;
      else
        s = kc_cu_fmt(e, "(%s == 1LL ? 0LL : %s)", kc_cu_dim(e, false, i, ai), stride);
    }
    kc_cu_printf(e->t, "  const i64 %s_%d = %s;\n", name, k, s);
  }
}

void kc_cu_decompose(kc_cuda_emit *e, int indent, const char *idx, bool out, uint32_t v, int first,
                     int R, int nops, const char *const *snames, const char *const *offs,
                     const bool *need) {
  const kc_value *val = kc_cu_val(e, out, v);
  const kc_dim *dims = val->dims + first;
  int lo = R;
  for (int k = 0; k < R && lo == R; k++)
    if (dims[k] != 1 && (!need || need[k])) lo = k;
  kc_cu_printf(e->t, "%*s{\n%*s  i64 r_ = %s;\n", indent, "", indent, "", idx);
  for (int k = R - 1; k >= lo; k--) {
    if (dims[k] == 1) continue;
    const char *d = kc_cu_dim(e, out, v, first + k);
    if (need && !need[k]) {
      kc_cu_printf(e->t, "%*s  r_ /= %s;\n", indent, "", d);
      continue;
    }
    if (k > 0)
      kc_cu_printf(e->t, "%*s  { const i64 c_ = r_ %% %s;%s", indent, "", d,
                   k > lo ? kc_cu_fmt(e, " r_ /= %s;", d) : "");
    else
      kc_cu_printf(e->t, "%*s  { const i64 c_ = r_;", indent, "");
    for (int j = 0; j < nops; j++)
      kc_cu_printf(e->t, " %s += c_ * %s_%d;", offs[j], snames[j], k);
    kc_cu_puts(e->t, " }\n");
  }
  kc_cu_printf(e->t, "%*s}\n", indent, "");
}

int kc_cu_known_ints(kc_cuda_emit *e, uint32_t i, int64_t *out, int max) {
  uint32_t n = 0;
  const kc_dim *k = kc_value_known(e->g, e->n->in[i], &n);
  if (!k || n > (uint32_t)max) return -1;
  for (uint32_t j = 0; j < n; j++)
    if (!kc_dim_const(e->g, k[j], &out[j])) return -1;
  return (int)n;
}

const char *kc_cu_acc_type(kc_dtype t) {
  switch (t) {
  case KC_F64: return "double";
  case KC_I64: return "long long";
  case KC_U64: return "unsigned long long";
  case KC_I32:
  case KC_I16:
  case KC_I8:
  case KC_BOOL: return "int";
  case KC_U32:
  case KC_U16:
  case KC_U8: return "unsigned int";
  default: return "float";
  }
}
