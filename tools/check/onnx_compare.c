/*
 * tools/check/onnx_compare.c - compare a computed output with the expected tensor of an ONNX
 * backend test, with the backend's own rule: |got - want| <= atol + rtol * |want| for floats
 * (rtol 1e-3, atol 1e-7 by default; NaN equals NaN, infinities equal when of the same sign),
 * exact equality for integers and bool (bool as zero / nonzero).
 *
 * f16, bf16 and f64 are compared after conversion to double with the same rule. Expected data
 * stored as u16 for a bf16 output (older test generators) is read as bf16 bits.
 * The relative mode (kc_check_tol.relative > 0, for whole models whose outputs differ from the
 * reference by accumulated rounding) bounds each float output as a whole instead:
 * max|got - want| <= relative * max|want| over its finite elements.
 * Invariant: the message of a mismatch names the output, the largest absolute and relative
 * errors, the first mismatching index and the worst one with both values, and the bound used.
 */
#include "tools/check/check.h"

#include <math.h>
#include <string.h>

/* Element i as a double (exact for every float type and for integers up to 2^53). */
static double elem(kc_dtype t, const void *p, size_t i) {
  switch (t) {
  case KC_F32: return ((const float *)p)[i];
  case KC_F64: return ((const double *)p)[i];
  case KC_F16: return kc_f16_to_f32(((const uint16_t *)p)[i]);
  case KC_BF16: return kc_bf16_to_f32(((const uint16_t *)p)[i]);
  case KC_I64: return (double)((const int64_t *)p)[i];
  case KC_I32: return ((const int32_t *)p)[i];
  case KC_I16: return ((const int16_t *)p)[i];
  case KC_I8: return ((const int8_t *)p)[i];
  case KC_U64: return (double)((const uint64_t *)p)[i];
  case KC_U32: return ((const uint32_t *)p)[i];
  case KC_U16: return ((const uint16_t *)p)[i];
  case KC_U8: return ((const uint8_t *)p)[i];
  case KC_BOOL: return ((const uint8_t *)p)[i] != 0;
  default: return 0;
  }
}

/* Integers and bool compare exactly (bool by truth); bytes for integers avoid double rounding. */
static bool int_equal(kc_dtype t, const void *a, const void *b, size_t i) {
  if (t == KC_BOOL) return (((const uint8_t *)a)[i] != 0) == (((const uint8_t *)b)[i] != 0);
  size_t s = kc_dtype_size(t);
  return memcmp((const char *)a + i * s, (const char *)b + i * s, s) == 0;
}

static bool close_enough(double got, double want, double rtol, double atol) {
  if (isnan(got) || isnan(want)) return isnan(got) && isnan(want);
  if (isinf(got) || isinf(want)) return got == want;
  return fabs(got - want) <= atol + rtol * fabs(want);
}

/* "[1,0,2]": flat index i of a row-major tensor of shape dims. */
static void fmt_index(char *buf, size_t size, int rank, const int64_t *dims, size_t i) {
  int64_t idx[KC_MAX_RANK];
  for (int d = rank - 1; d >= 0; d--) {
    idx[d] = dims[d] ? (int64_t)(i % (size_t)dims[d]) : 0;
    i = dims[d] ? i / (size_t)dims[d] : 0;
  }
  size_t l = (size_t)snprintf(buf, size, "[");
  for (int d = 0; d < rank && l < size; d++)
    l += (size_t)snprintf(buf + l, size - l, "%s%lld", d ? "," : "", (long long)idx[d]);
  if (l < size) snprintf(buf + l, size - l, "]");
}

static void fmt_shape(char *buf, size_t size, kc_dtype t, int rank, const int64_t *dims) {
  size_t l = (size_t)snprintf(buf, size, "%s[", kc_dtype_name(t));
  for (int d = 0; d < rank && l < size; d++)
    l += (size_t)snprintf(buf + l, size - l, "%s%lld", d ? "," : "", (long long)dims[d]);
  if (l < size) snprintf(buf + l, size - l, "]");
}

/* Element i for a message: floats with the digits an f32 needs; integers whole and exact (a
 * double would print 2^53 + 1 as 2^53, the same as the value it differs from). */
static void fmt_elem(char *buf, size_t size, kc_dtype t, const void *p, size_t i) {
  if (t == KC_I64)
    snprintf(buf, size, "%lld", (long long)((const int64_t *)p)[i]);
  else if (t == KC_U64)
    snprintf(buf, size, "%llu", (unsigned long long)((const uint64_t *)p)[i]);
  else
    snprintf(buf, size, kc_dtype_is_float(t) ? "%.9g" : "%.17g", elem(t, p, i));
}

/* Same dtype and dims; else false with a message naming both. */
static bool same_shape(const char *name, kc_dtype wt, const kc_tensor_desc *got,
                       const kc_tensor *want, char *msg, size_t size) {
  bool same = wt == got->dtype && want->rank == got->rank;
  for (int d = 0; same && d < got->rank; d++)
    same = got->dims[d] == want->dims[d];
  if (!same) {
    char a[256], b[256];
    fmt_shape(a, sizeof a, want->dtype, want->rank, want->dims);
    fmt_shape(b, sizeof b, got->dtype, got->rank, got->dims);
    snprintf(msg, size, "output '%s': expected %s, computed %s", name, a, b);
  }
  return same;
}

/* "at [1,2]: computed 5.5, expected 5" for element i. */
static void fmt_at(char *buf, size_t size, kc_dtype t, const kc_tensor_desc *got, const void *want,
                   size_t i) {
  char idx[128], gv[64], wv[64];
  fmt_index(idx, sizeof idx, got->rank, got->dims, i);
  fmt_elem(gv, sizeof gv, t, got->data, i);
  fmt_elem(wv, sizeof wv, t, want, i);
  snprintf(buf, size, "at %s: computed %s, expected %s", idx, gv, wv);
}

/* Per output: max|got - want| over the finite pairs <= relative * max|want|; a NaN or infinity
 * must be matched by the same one. Integers and bool stay exact (elementwise). */
static bool compare_relative(const char *name, kc_dtype wt, const kc_tensor_desc *got,
                             const kc_tensor *want, double relative, size_t n, char *msg,
                             size_t size) {
  double max_want = 0, max_err = 0;
  size_t worst = 0, bad_special = 0, first_special = 0;
  for (size_t i = 0; i < n; i++) {
    double g = elem(wt, got->data, i), w = elem(wt, want->data, i);
    if (!isfinite(g) || !isfinite(w)) {
      if (!close_enough(g, w, 0, 0) && bad_special++ == 0) first_special = i;
      continue;
    }
    if (fabs(w) > max_want) max_want = fabs(w);
    if (fabs(g - w) > max_err) max_err = fabs(g - w), worst = i;
  }
  double bound = relative * max_want;
  if (!bad_special && max_err <= bound) return true;
  char at[320];
  if (bad_special) {
    fmt_at(at, sizeof at, wt, got, want->data, first_special);
    snprintf(msg, size, "output '%s': %zu non-finite values differ; first %s", name, bad_special,
             at);
    return false;
  }
  fmt_at(at, sizeof at, wt, got, want->data, worst);
  snprintf(
      msg, size,
      "output '%s': max abs err %.3g > bound %.3g (relative %g * max|expected| %.6g); worst %s",
      name, max_err, bound, relative, max_want, at);
  return false;
}

bool kc_check_compare_tol(const char *name, const kc_tensor_desc *got, const kc_tensor *want,
                          const kc_check_tol *tol, char *msg, size_t size) {
  kc_dtype wt = want->dtype == KC_U16 && got->dtype == KC_BF16 ? KC_BF16 : want->dtype;
  if (!same_shape(name, wt, got, want, msg, size)) return false;
  size_t n = 1;
  for (int d = 0; d < got->rank; d++)
    n *= (size_t)got->dims[d];
  bool is_float = kc_dtype_is_float(wt);
  if (is_float && tol->relative > 0)
    return compare_relative(name, wt, got, want, tol->relative, n, msg, size);
  double rtol = tol->rtol, atol = tol->atol;
  size_t bad = 0, first = 0, worst = 0;
  double max_abs = 0, max_rel = 0, max_excess = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    double g = elem(wt, got->data, i), w = elem(wt, want->data, i);
    bool ok = is_float ? close_enough(g, w, rtol, atol) : int_equal(wt, got->data, want->data, i);
    if (!ok && bad++ == 0) first = i;
    double err = fabs(g - w);
    if (isnan(err)) err = ok ? 0 : INFINITY;
    if (err > max_abs) max_abs = err;
    if (w != 0 && err / fabs(w) > max_rel) max_rel = err / fabs(w);
    double excess = ok ? -INFINITY : err - (atol + rtol * fabs(w));
    if (!ok && (bad == 1 || excess > max_excess)) max_excess = excess, worst = i;
  }
  if (!bad) return true;
  char first_at[320], worst_at[320], bound[128] = "exact";
  fmt_at(first_at, sizeof first_at, wt, got, want->data, first);
  fmt_at(worst_at, sizeof worst_at, wt, got, want->data, worst);
  if (is_float)
    snprintf(bound, sizeof bound, "|got-want| <= %g + %g*|want| = %.3g", atol, rtol,
             atol + rtol * fabs(elem(wt, want->data, worst)));
  snprintf(msg, size,
           "output '%s': %zu of %zu values differ (max abs err %.3g, max rel err %.3g); first %s; "
           "worst %s (bound %s)",
           name, bad, n, max_abs, max_rel, first_at, worst_at, bound);
  return false;
}

bool kc_check_compare(const char *name, const kc_tensor_desc *got, const kc_tensor *want,
                      double rtol, double atol, char *msg, size_t size) {
  kc_check_tol tol = {.rtol = rtol, .atol = atol, .relative = 0};
  return kc_check_compare_tol(name, got, want, &tol, msg, size);
}
