/*
 * tests/test_kv_attention.c - the KV-cache ops of decoding on the CPU (ir/ops.def kv_store and
 * attention_cache; the CUDA target runs the same cases in tests/test_cuda.c).
 *
 * kv_store then attention_cache over a hand-built cache (tests/attention_ref.h: contiguous, one
 * block of max_len per row, and paged, blocks of 4 tokens in a shuffled table; every unwritten
 * slot of the layer NaN) equal a plain C reference attention over the concatenated keys, and the
 * cache holds exactly the new tokens afterwards (written in place):
 *   - prefill (S = 7) and decode (S = 1), several rows with different past and new lengths in
 *     one batch (a row may have no new token: its output is only checked finite);
 *   - MHA, GQA (heads 8, kv heads 2; and 4 / 2, which decodes in the decode layout) and MQA;
 *     with and without rotary (halves and interleaved), an additive mask, a softcap, q/k/v as
 *     [B, S, H*D] and [B, H, S, D];
 *   - head size 64 and odd ones (9, 20), cached contexts 1, 16, 17, 300 and 1024 (past the
 *     kernels' W-key blocks: full blocks, tails and several cache blocks);
 *   - generation through one symbolic step: a prefill then decoding steps, the cache fed back,
 *     each step equal to the reference over all positions;
 *   - a bad table entry, or a row needing a block past its table, is an error naming the node
 *     (kv_store, or attention_cache when only past blocks are bad), never an access out of the
 *     cache (the ASan build runs this test too); so are blocks of no token (BS = 0).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"

#include "attention_ref.h"

static void check(const kvr_case *c) {
  kc_context *ctx = kc_context_new();
  char msg[1024] = "";
  if (!kvr_check(ctx, "cpu", c, msg, sizeof msg))
    fail_msg("B %lld S %lld H %lld/%lld D %lld bs %lld rot %d mask %d rank4 %d sym %d softcap %g "
             "past %lld,%lld,%lld lens %lld,%lld,%lld: %s",
             (long long)c->B, (long long)c->S, (long long)c->H, (long long)c->KVH, (long long)c->D,
             (long long)c->bs, c->rot, c->mask, c->rank4, c->sym, c->softcap, (long long)c->past[0],
             (long long)c->past[1], (long long)c->past[2], (long long)c->lens[0],
             (long long)c->lens[1], (long long)c->lens[2], msg);
  kc_context_free(ctx);
}

/* Every head layout x {contiguous, paged} x {plain, rotary} for one batch shape. */
static void sweep(int64_t S, const int64_t *past, const int64_t *lens, int64_t B, int64_t D) {
  static const int64_t hs[4][2] = {{4, 4}, {8, 2}, {4, 2}, {8, 1}};
  for (int h = 0; h < 4; h++)
    for (int paged = 0; paged < 2; paged++)
      for (int rot = 0; rot < 2; rot++) {
        kvr_case c = {.B = B,
                      .S = S,
                      .H = hs[h][0],
                      .KVH = hs[h][1],
                      .D = D,
                      .bs = paged ? 4 : 0,
                      .rot = rot};
        memcpy(c.past, past, (size_t)B * sizeof *past);
        memcpy(c.lens, lens, (size_t)B * sizeof *lens);
        check(&c);
      }
}

static void t_prefill(void **st) {
  (void)st;
  /* a fresh prompt, one after 16 and 17 cached tokens, a row with no new token */
  sweep(7, (int64_t[]){0, 16, 17}, (int64_t[]){7, 3, 0}, 3, 64);
  sweep(7, (int64_t[]){5, 0}, (int64_t[]){7, 4}, 2, 20);
  sweep(7, (int64_t[]){300, 1}, (int64_t[]){6, 7}, 2, 9);
}

static void t_decode(void **st) {
  (void)st;
  sweep(1, (int64_t[]){1, 16, 17}, (int64_t[]){1, 1, 1}, 3, 64);
  sweep(1, (int64_t[]){300, 1024, 0}, (int64_t[]){1, 1, 0}, 3, 64);
  sweep(1, (int64_t[]){17, 33}, (int64_t[]){1, 1}, 2, 9);
  sweep(1, (int64_t[]){1024}, (int64_t[]){1}, 1, 20);
}

/* Masks, softcap, interleaved rotary, rank-4 operands, symbolic dims. */
static void t_variants(void **st) {
  (void)st;
  /* clang-format off */
  static const kvr_case cases[] = {
      {.B = 2, .S = 7, .H = 8, .KVH = 2, .D = 64, .bs = 4, .mask = true, .past = {3, 20}, .lens = {7, 5}},
      {.B = 2, .S = 1, .H = 4, .KVH = 4, .D = 64, .bs = 4, .mask = true, .past = {40, 17}, .lens = {1, 1}},
      {.B = 2, .S = 1, .H = 8, .KVH = 1, .D = 20, .mask = true, .past = {40, 17}, .lens = {1, 1}},
      {.B = 2, .S = 7, .H = 4, .KVH = 2, .D = 64, .bs = 4, .rot = 2, .past = {9, 0}, .lens = {2, 7}},
      {.B = 2, .S = 1, .H = 4, .KVH = 2, .D = 20, .bs = 4, .rot = 2, .past = {9, 30}, .lens = {1, 1}},
      {.B = 2, .S = 7, .H = 4, .KVH = 2, .D = 64, .softcap = 5, .past = {9, 0}, .lens = {2, 7}},
      {.B = 2, .S = 1, .H = 4, .KVH = 4, .D = 64, .bs = 4, .softcap = 0.5, .past = {9, 30}, .lens = {1, 1}},
      {.B = 2, .S = 7, .H = 8, .KVH = 2, .D = 20, .bs = 4, .rot = 1, .rank4 = true, .past = {9, 2}, .lens = {3, 7}},
      {.B = 2, .S = 1, .H = 4, .KVH = 4, .D = 9, .bs = 4, .rot = 1, .rank4 = true, .past = {9, 2}, .lens = {1, 1}},
      {.B = 3, .S = 7, .H = 8, .KVH = 2, .D = 64, .bs = 4, .rot = 1, .mask = true, .sym = true, .past = {0, 16, 17}, .lens = {7, 3, 0}},
      {.B = 3, .S = 1, .H = 4, .KVH = 4, .D = 64, .bs = 16, .rot = 1, .sym = true, .past = {300, 1, 18}, .lens = {1, 1, 1}},
  };
  /* clang-format on */
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    check(&cases[i]);
}

static void t_generate(void **st) {
  (void)st;
  /* clang-format off */
  static const kvr_case cases[] = {
      {.B = 3, .S = 6, .H = 4, .KVH = 4, .D = 64, .bs = 4, .rot = 1, .lens = {6, 2, 5}},
      {.B = 2, .S = 5, .H = 8, .KVH = 2, .D = 20, .bs = 0, .rot = 2, .mask = true, .lens = {5, 3}},
      {.B = 2, .S = 4, .H = 8, .KVH = 1, .D = 9, .bs = 16, .lens = {4, 1}},
  };
  /* clang-format on */
  kc_context *ctx = kc_context_new();
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char msg[1024] = "";
    if (!kvr_generate(ctx, "cpu", &cases[i], 20, msg, sizeof msg))
      fail_msg("generation case %zu: %s", i, msg);
  }
  kc_context_free(ctx);
}

static void t_errors(void **st) {
  (void)st;
  kc_context *ctx = kc_context_new();
  for (int64_t S = 1; S <= 2; S++) {
    char msg[1024] = "";
    if (!kvr_errors(ctx, "cpu", S, msg, sizeof msg)) fail_msg("S %lld: %s", (long long)S, msg);
  }
  char msg[1024] = "";
  if (!kvr_empty_blocks(ctx, "cpu", msg, sizeof msg)) fail_msg("%s", msg);
  kc_context_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_prefill),  cmocka_unit_test(t_decode), cmocka_unit_test(t_variants),
      cmocka_unit_test(t_generate), cmocka_unit_test(t_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
