/*
 * ir/dtype.c - dtype names and sizes, f16/bf16 conversions, and float formatting that
 * round-trips (shortest text that strtod/strtof read back to the same bits).
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
  const char *name;
  size_t size;
} dtypes[KC_DT_COUNT] = {
    [KC_DT_NONE] = {"none", 0}, [KC_F32] = {"f32", 4},   [KC_F16] = {"f16", 2},
    [KC_BF16] = {"bf16", 2},    [KC_F64] = {"f64", 8},   [KC_I64] = {"i64", 8},
    [KC_I32] = {"i32", 4},      [KC_I16] = {"i16", 2},   [KC_I8] = {"i8", 1},
    [KC_U64] = {"u64", 8},      [KC_U32] = {"u32", 4},   [KC_U16] = {"u16", 2},
    [KC_U8] = {"u8", 1},        [KC_BOOL] = {"bool", 1},
};

const char *kc_dtype_name(kc_dtype t) { return (unsigned)t < KC_DT_COUNT ? dtypes[t].name : "?"; }

size_t kc_dtype_size(kc_dtype t) { return (unsigned)t < KC_DT_COUNT ? dtypes[t].size : 0; }

kc_dtype kc_dtype_parse(const char *s) {
  for (int t = 1; t < KC_DT_COUNT; t++)
    if (strcmp(s, dtypes[t].name) == 0) return (kc_dtype)t;
  return KC_DT_NONE;
}

bool kc_dtype_is_float(kc_dtype t) {
  return t == KC_F32 || t == KC_F16 || t == KC_BF16 || t == KC_F64;
}

bool kc_dtype_is_int(kc_dtype t) {
  return t == KC_I64 || t == KC_I32 || t == KC_I16 || t == KC_I8 || t == KC_U64 || t == KC_U32 ||
         t == KC_U16 || t == KC_U8;
}

float kc_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: normalize */
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        exp--;
      }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t kc_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
  uint32_t man = x & 0x7fffff;
  if (((x >> 23) & 0xff) == 0xff)
    return (uint16_t)(sign | 0x7c00 | (man ? 0x200 | (man >> 13) : 0));
  if (exp >= 31) return (uint16_t)(sign | 0x7c00);
  if (exp <= 0) { /* subnormal or zero, round to nearest even */
    if (exp < -10) return (uint16_t)sign;
    man |= 0x800000;
    uint32_t shift = (uint32_t)(14 - exp);
    uint32_t half = 1u << (shift - 1), rem = man & ((1u << shift) - 1), r = man >> shift;
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = (uint32_t)(exp << 10) | (man >> 13), rem = man & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++; /* may carry into exponent: correct */
  return (uint16_t)(sign | r);
}

float kc_bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t kc_f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

/* Shared tail: make sure the text reads as a float, not an int ("1" -> "1.0"). */
static void mark_float(char *buf, size_t size) {
  if (strpbrk(buf, ".eEn")) return; /* has a point, exponent, nan or inf */
  size_t len = strlen(buf);
  if (len + 3 <= size) memcpy(buf + len, ".0", 3);
}

void kc_fmt_double(char *buf, size_t size, double v) {
  if (isnan(v)) {
    snprintf(buf, size, "nan");
    return;
  }
  if (isinf(v)) {
    snprintf(buf, size, v < 0 ? "-inf" : "inf");
    return;
  }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, size, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  mark_float(buf, size);
}

void kc_fmt_float(char *buf, size_t size, float v) {
  if (isnan(v)) {
    snprintf(buf, size, "nan");
    return;
  }
  if (isinf(v)) {
    snprintf(buf, size, v < 0 ? "-inf" : "inf");
    return;
  }
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, size, "%.*g", prec, (double)v);
    if (strtof(buf, NULL) == v) break;
  }
  mark_float(buf, size);
}
