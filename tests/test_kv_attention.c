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
 *     cache (the ASan build runs this test too); so are blocks of no token (BS = 0);
 *   - split keys (flash-decoding: a decoding row's keys cut into chunks of at least 256, the
 *     partial softmax sums merged by the last unit): long caches past the chunk threshold,
 *     lengths not a multiple of a chunk and exactly at chunk boundaries, 1 token cached, rows of
 *     different lengths in one call, GQA groups and MQA, contiguous and paged (blocks of 16 and
 *     4), a chunk and a whole row masked out, few-row decoding (S = 2, 3); each against the double
 *     reference over all keys, and y bitwise the same over repeated runs with 2 threads (a
 *     different unit may merge each time) and with 1 thread.
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

/* ---- split keys ------------------------------------------------------------------------------ */

/* What a case changes in the problem before it runs: the additive mask (its row b, query row i). */
typedef enum { MASK_AS_BUILT, MASK_FIRST_CHUNK, MASK_WHOLE_ROW } mask_edit;

/* y of one run of m on p (a copy into out). */
static bool run_y(kc_context *ctx, kc_module *m, const kvr_prob *p, float *out, size_t n, char *msg,
                  size_t size) {
  int64_t past[4], lens[4];
  memcpy(past, p->c.past, sizeof past), memcpy(lens, p->c.lens, sizeof lens);
  kc_tensor_desc res[2];
  /* kv_store rewrites the new tokens in place with the same values: runs repeat exactly */
  if (kvr_run(m, p, p->cache, past, lens, res, 2) != KC_OK) {
    snprintf(msg, size, "%s", kc_last_error(ctx));
    return false;
  }
  memcpy(out, res[0].data, n * sizeof *out);
  return true;
}

/*
 * One split-keys case: y's valid rows against kvr_reference (double, softmax over all keys),
 * padding rows finite, and y bitwise equal over three runs on 2 threads and one on 1 thread.
 */
static void check_split(const kvr_case *c, mask_edit edit) {
  kc_context *ctx = kc_context_new();
  kvr_prob p;
  kvr_build(&p, c, (uint32_t)(c->B * 7 + c->past[0] * 3 + c->lens[0] + c->D));
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t i = 0; i < c->S; i++)
      for (int64_t j = 0; j < p.Tm && edit != MASK_AS_BUILT; j++)
        if (edit == MASK_WHOLE_ROW ? b == 0 : j < 300)
          p.mask[(b * c->S + i) * p.Tm + j] = -INFINITY;
  kc_module *m = NULL;
  char msg[1024] = "";
  size_t n = (size_t)(c->B * c->S * c->H * c->D);
  float *y[4];
  for (int r = 0; r < 4; r++)
    y[r] = malloc(n * sizeof *y[r]);
  bool ok = kvr_compile(ctx, "cpu", &p, true, &m) == KC_OK;
  if (!ok) snprintf(msg, sizeof msg, "compile: %s", kc_last_error(ctx));
  for (int r = 0; ok && r < 4; r++) {
    if (r == 3 && kc_module_set_threads(m, 1) != KC_OK) {
      snprintf(msg, sizeof msg, "threads: %s", kc_last_error(ctx));
      ok = false;
    }
    ok = ok && run_y(ctx, m, &p, y[r], n, msg, sizeof msg);
    if (ok && r && memcmp(y[0], y[r], n * sizeof *y[r]) != 0) {
      snprintf(msg, sizeof msg, "run %d (%s) differs from the first run (2 threads)", r,
               r == 3 ? "1 thread" : "2 threads");
      ok = false;
    }
  }
  double *want = ok ? kvr_reference(&p) : NULL;
  for (int64_t b = 0; ok && b < c->B; b++)
    for (int64_t i = 0; ok && i < c->S; i++)
      for (int64_t h = 0; ok && h < c->H; h++)
        for (int64_t d = 0; ok && d < c->D; d++) {
          int64_t o = ((b * c->S + i) * c->H + h) * c->D + d;
          bool live = i < c->lens[b];
          if (live ? !(fabs(y[0][o] - want[o]) <= 1e-5 + 1e-4 * fabs(want[o]))
                   : !isfinite(y[0][o])) {
            snprintf(msg, sizeof msg, "y[b %lld, row %lld, head %lld, %lld] is %.9g, expected %.9g",
                     (long long)b, (long long)i, (long long)h, (long long)d, y[0][o],
                     live ? want[o] : 0.0);
            ok = false;
          }
        }
  if (!ok)
    fail_msg("B %lld S %lld H %lld/%lld D %lld bs %lld rot %d mask %d/%d softcap %g past "
             "%lld,%lld,%lld,%lld lens %lld,%lld,%lld,%lld: %s",
             (long long)c->B, (long long)c->S, (long long)c->H, (long long)c->KVH, (long long)c->D,
             (long long)c->bs, c->rot, c->mask, (int)edit, c->softcap, (long long)c->past[0],
             (long long)c->past[1], (long long)c->past[2], (long long)c->past[3],
             (long long)c->lens[0], (long long)c->lens[1], (long long)c->lens[2],
             (long long)c->lens[3], msg);
  free(want);
  for (int r = 0; r < 4; r++)
    free(y[r]);
  kc_module_free(m);
  kvr_free(&p);
  kc_context_free(ctx);
}

/* Long decoding rows, every layout: rows of 1024 and 512 keys (4 and 2 chunks of 256: exactly at
 * the boundaries), 1 key (no split), 1000 (three chunks of 336, 336 and 328), then 777 (272, 272
 * and 233) and 257 (one chunk). */
static void t_split_lengths(void **st) {
  (void)st;
  static const int64_t hs[4][2] = {{8, 2}, {8, 1}, {4, 4}, {6, 3}};
  static const int64_t bss[3] = {0, 16, 4};
  for (int h = 0; h < 4; h++)
    for (int l = 0; l < 3; l++) {
      kvr_case c = {.B = 4, .S = 1, .H = hs[h][0], .KVH = hs[h][1], .D = 64, .bs = bss[l]};
      int64_t past[4] = {1023, 0, 511, 999}, lens[4] = {1, 1, 1, 1};
      memcpy(c.past, past, sizeof past), memcpy(c.lens, lens, sizeof lens);
      check_split(&c, MASK_AS_BUILT);
      c.past[0] = 776, c.past[3] = 256;
      check_split(&c, MASK_AS_BUILT);
    }
}

/* MQA and small groups over 3000 keys (a dozen chunks), head sizes 128, 20 and 9; a row with no
 * new token; rotary, softcap, the additive mask; few-row decoding (S = 2, 3: no split, the decode
 * layout). */
static void t_split_variants(void **st) {
  (void)st;
  /* clang-format off */
  static const kvr_case cases[] = {
      {.B = 2, .S = 1, .H = 8, .KVH = 1, .D = 128, .bs = 16, .past = {2999, 1500}, .lens = {1, 1}},
      {.B = 1, .S = 1, .H = 2, .KVH = 1, .D = 20, .past = {2999}, .lens = {1}},
      {.B = 3, .S = 1, .H = 4, .KVH = 2, .D = 9, .bs = 16, .rot = 1, .past = {2000, 700, 33}, .lens = {1, 0, 1}},
      {.B = 2, .S = 1, .H = 8, .KVH = 2, .D = 64, .rot = 2, .mask = true, .past = {1300, 600}, .lens = {1, 1}},
      {.B = 2, .S = 1, .H = 4, .KVH = 1, .D = 64, .bs = 16, .softcap = 2, .past = {1100, 2047}, .lens = {1, 1}},
      {.B = 2, .S = 3, .H = 4, .KVH = 4, .D = 64, .bs = 16, .rot = 1, .past = {900, 40}, .lens = {3, 2}},
      {.B = 2, .S = 2, .H = 8, .KVH = 4, .D = 20, .mask = true, .past = {700, 0}, .lens = {2, 1}},
      {.B = 2, .S = 3, .H = 4, .KVH = 2, .D = 64, .bs = 4, .softcap = 1, .past = {530, 17}, .lens = {1, 3}},
  };
  /* clang-format on */
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    check_split(&cases[i], MASK_AS_BUILT);
}

/* A chunk whose keys are all masked out (its partial has no maximum), and a row with every key
 * masked (y 0). */
static void t_split_masked(void **st) {
  (void)st;
  kvr_case c = {.B = 2, .S = 1, .H = 8, .KVH = 2, .D = 64, .bs = 16, .mask = true};
  c.past[0] = 1023, c.past[1] = 700, c.lens[0] = c.lens[1] = 1;
  check_split(&c, MASK_FIRST_CHUNK);
  check_split(&c, MASK_WHOLE_ROW);
  c.bs = 0;
  check_split(&c, MASK_FIRST_CHUNK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_prefill),        cmocka_unit_test(t_decode),
      cmocka_unit_test(t_variants),       cmocka_unit_test(t_generate),
      cmocka_unit_test(t_errors),         cmocka_unit_test(t_split_lengths),
      cmocka_unit_test(t_split_variants), cmocka_unit_test(t_split_masked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
