/*
 * tests/test_cpu_qmatmul_q8.c - the fused int8 matmul's CPU kernel (matmul_q8, ir/ops.def;
 * codegen/cpu/qmatmul_q8.c), both paths (AVX-512 VNNI where the host has it, and the plain
 * loops, forced by clearing the host's VNNI flag), swept over sizes against a reference
 * computed here: exact integer sums (int64, no size here comes near i32 wrap), then the float
 * steps one at a time (volatile, so the compiler cannot contract them into a multiply-add).
 *
 * Sizes cross every edge of the fast path: K = 1..3 (only the masked last group of 4), K not a
 * multiple of 4, N around the 16-lane vectors and 64-column panels, M around the 6-row tiles
 * and 48-row blocks, a batch dim folded into the rows. Values include the extremes (a 0 and
 * 255 or -128 and 127, w -128 and 127, zero points at both ends). Every kernel runs whole and in
 * ranges (th_run_last), so any split of its units is checked too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct qcase {
  int64_t b, m, k, n;
  bool i8;   /* a is int8 (else uint8) */
  bool full; /* scale per column, a zero point and a bias (else one scale, nothing else) */
  int azp;   /* a's zero point when full */
} qcase;

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
  rng_state = rng_state * 1664525u + 1013904223u;
  return rng_state >> 8;
}

/* A value of [lo, hi], the ends one time in eight each. */
static int pick(int lo, int hi) {
  uint32_t r = rnd() % 8;
  if (r == 0) return lo;
  if (r == 1) return hi;
  return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}

static void run_case(th_cpu *f, const qcase *c, bool fast) {
  int64_t rows = c->b * c->m, G = (c->k + 3) / 4;
  int alo = c->i8 ? -128 : 0, ahi = c->i8 ? 127 : 255;
  void *a = malloc((size_t)(rows * c->k) + 1);
  int8_t *w = malloc((size_t)(c->k * c->n)), *w4 = calloc((size_t)(G * c->n * 4), 1);
  int32_t *ws = calloc((size_t)c->n, 4);
  float *s = malloc((size_t)c->n * 4), *bias = malloc((size_t)c->n * 4);
  float *y = malloc((size_t)(rows * c->n) * 4), *want = malloc((size_t)(rows * c->n) * 4);
  int32_t zp32 = c->full ? c->azp : 0;
  uint8_t zp = (uint8_t)zp32;
  for (int64_t i = 0; i < rows * c->k; i++) {
    int v = pick(alo, ahi);
    if (c->i8)
      ((int8_t *)a)[i] = (int8_t)v;
    else
      ((uint8_t *)a)[i] = (uint8_t)v;
  }
  for (int64_t k = 0; k < c->k; k++)
    for (int64_t j = 0; j < c->n; j++) {
      int8_t v = (int8_t)pick(-128, 127);
      w[k * c->n + j] = v;
      w4[(k / 4) * c->n * 4 + j * 4 + k % 4] = v;
      ws[j] += v;
    }
  for (int64_t j = 0; j < c->n; j++) {
    s[j] = (float)(1 + rnd() % 1000) * 1.37e-5f;
    bias[j] = ((float)(rnd() % 2001) - 1000.0f) * 0.013f;
  }
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < c->n; j++) {
      int64_t acc = 0;
      for (int64_t k = 0; k < c->k; k++) {
        int av = c->i8 ? ((int8_t *)a)[r * c->k + k] : ((uint8_t *)a)[r * c->k + k];
        acc += (int64_t)(av - zp32) * w[k * c->n + j];
      }
      volatile float v = (float)(int32_t)acc;
      v = v * (c->full ? s[j] : s[0]);
      if (c->full) v = v + bias[j];
      want[r * c->n + j] = v;
    }
  const char *at = c->i8 ? "i8" : "u8";
  char text[1024];
  if (c->full)
    snprintf(
        text, sizeof text,
        "# kir 1\ngraph @q(%%1: %s[%lld,%lld,%lld] \"a\", %%2: i8[%lld,%lld,4] \"w\", "
        "%%3: i32[%lld] \"ws\", %%4: f32[%lld] \"s\", %%5: %s[] \"z\", %%6: f32[%lld] \"b\") {\n"
        "  %%7 = matmul_q8(%%1, %%2, %%3, %%4, %%5, %%6) : f32[%lld,%lld,%lld]\n"
        "  return %%7 \"y\"\n}\n",
        at, (long long)c->b, (long long)c->m, (long long)c->k, (long long)G, (long long)c->n,
        (long long)c->n, (long long)c->n, at, (long long)c->n, (long long)c->b, (long long)c->m,
        (long long)c->n);
  else
    snprintf(text, sizeof text,
             "# kir 1\ngraph @q(%%1: %s[%lld,%lld,%lld] \"a\", %%2: i8[%lld,%lld,4] \"w\", "
             "%%3: i32[%lld] \"ws\", %%4: f32[] \"s\") {\n"
             "  %%5 = matmul_q8(%%1, %%2, %%3, %%4) : f32[%lld,%lld,%lld]\n"
             "  return %%5 \"y\"\n}\n",
             at, (long long)c->b, (long long)c->m, (long long)c->k, (long long)G, (long long)c->n,
             (long long)c->n, (long long)c->b, (long long)c->m, (long long)c->n);
  kc_graph *g = th_parse(f->ctx, text);
  int had = f->cpu->info.has_vnni;
  f->cpu->info.has_vnni = fast ? had : 0;
  void *full_bufs[7] = {a, w4, ws, s, &zp, bias, y};
  void *min_bufs[5] = {a, w4, ws, s, y};
  th_run_last(f, g, NULL, NULL, 0, c->full ? full_bufs : min_bufs);
  f->cpu->info.has_vnni = had;
  for (int64_t i = 0; i < rows * c->n; i++)
    if (memcmp(&y[i], &want[i], 4) != 0)
      fail_msg("%s path, b %lld m %lld k %lld n %lld %s%s: y[%lld] = %.9g, want %.9g",
               fast ? "fast" : "plain", (long long)c->b, (long long)c->m, (long long)c->k,
               (long long)c->n, at, c->full ? " full" : "", (long long)i, y[i], want[i]);
  kc_graph_free(g);
  free(a);
  free(w);
  free(w4);
  free(ws);
  free(s);
  free(bias);
  free(y);
  free(want);
}

static const qcase cases[] = {
    {1, 1, 1, 1, false, false, 0},      {1, 1, 2, 3, true, true, -128},
    {1, 2, 3, 17, false, true, 255},    {1, 5, 4, 16, true, false, 0},
    {1, 6, 5, 64, false, true, 0},      {1, 7, 8, 65, true, true, 127},
    {2, 13, 37, 130, false, true, 128}, {1, 48, 67, 129, true, true, -3},
    {1, 49, 64, 200, false, true, 17},  {3, 33, 255, 70, true, true, 5},
    {1, 97, 131, 33, false, false, 0},  {1, 128, 96, 256, false, true, 200},
};

static void t_sweep(void **st, bool fast) {
  th_cpu *f = *st;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    run_case(f, &cases[i], fast);
}

static void t_plain(void **st) { t_sweep(st, false); }

static void t_fast(void **st) {
  th_cpu *f = *st;
  if (!f->cpu->info.has_vnni) skip();
  t_sweep(st, true);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_plain),
      cmocka_unit_test(t_fast),
  };
  return cmocka_run_group_tests(tests, th_cpu_setup, th_cpu_teardown);
}
