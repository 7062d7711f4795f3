/*
 * codegen/cuda/shape_ops.c - kc_cuda_lower_shape, kc_cuda_lower_constant_of_shape and
 * kc_cuda_lower_range: ops that generate data from shapes or scalars. A thread per element.
 *
 *   shape              out[j] = dim start + j of the input (start, end clamped as the shape
 *                      function does): the kernel's dims argument, or literals when static.
 *   constant_of_shape  the `value` tensor's one element (f32 0 when absent), as its bits; the
 *                      shape input is not read, the output's concrete dims are that shape.
 *   range              out[j] = start + j * delta in the compute type, as ONNX defines it
 *                      (not by accumulation), so every element is independent.
 */
#include "codegen/cuda/emit.h"

#include <string.h>

kc_status kc_cuda_lower_shape(kc_cuda_emit *e) {
  int r = kc_cu_val(e, false, 0)->rank;
  int64_t start = kc_node_int(e->n, "start", 0), end = kc_node_int(e->n, "end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = start < 0 ? 0 : start > r ? r : start;
  end = end < start ? start : end > r ? r : end;
  kc_cu_launch_threads(e, 32);
  kc_cu_units_const(e, end - start);
  kc_cu_begin(e, 32);
  kc_cu_puts(e->t, "  KC_THREADS(idx) {\n    i64 v = 0;\n");
  for (int64_t j = start; j < end; j++)
    kc_cu_printf(e->t, "    if (idx == %lld) v = %s;\n", (long long)(j - start),
                 kc_cu_dim(e, false, 0, (int)j));
  kc_cu_store(e, 4, kc_cu_val(e, true, 0)->dtype, "out0", "idx", "v");
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}

kc_status kc_cuda_lower_constant_of_shape(kc_cuda_emit *e) {
  const kc_value *o = kc_cu_val(e, true, 0);
  const kc_attr *a = kc_node_attr(e->n, "value");
  uint64_t bits = 0;
  if (a && a->kind == KC_ATTR_TENSOR && a->u.tensor < e->g->ntensors) {
    const kc_tensor *t = &e->g->tensors[a->u.tensor];
    size_t sz = kc_dtype_size(o->dtype);
    if (!t->data || t->dtype != o->dtype || t->nbytes < sz || sz > sizeof bits)
      return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "value tensor does not fit %s",
                        kc_dtype_name(o->dtype));
    memcpy(&bits, t->data, sz); /* little-endian host, as the device */
  }
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, o->rank, 1);
  kc_cu_begin(e, 256);
  kc_cu_printf(e->t, "  const %s c = kc_from_bits<%s>(0x%llxULL);\n", kc_cu_stype(o->dtype),
               kc_cu_stype(o->dtype), (unsigned long long)bits);
  kc_cu_puts(e->t, "  KC_THREADS(idx) out0[idx] = c;\n");
  kc_cu_end(e);
  return KC_OK;
}

kc_status kc_cuda_lower_range(kc_cuda_emit *e) {
  const kc_value *o = kc_cu_val(e, true, 0);
  kc_dtype t = o->dtype;
  if (!kc_dtype_is_float(t) && !kc_dtype_is_int(t))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "range of %s", kc_dtype_name(t));
  const char *ct = kc_cu_ctype(t);
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, true, 0, 0, o->rank, 1);
  kc_cu_begin(e, 256);
  kc_cu_printf(e->t, "  const %s start = %s, delta = %s;\n", ct, kc_cu_load(e, t, "in0", "0"),
               kc_cu_load(e, t, "in2", "0"));
  kc_cu_printf(e->t,
               "  KC_THREADS(idx) {\n    const %s v = kc_add(start, kc_mul((%s)idx, delta));\n", ct,
               ct);
  kc_cu_store(e, 4, t, "out0", "idx", "v");
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}
