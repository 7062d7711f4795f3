/*
 * tests/test_session.c - decoding with a KV cache (kc_session: the decode step kernc derives from
 * a plain causal model, runtime/kv_cache.c) against PyTorch's logits of the whole sequence
 * (argv[1]: the kernc binary, argv[2]: tests/).
 *
 * For the test models exported from PyTorch (tests/models/gpt2_tiny, llama_tiny: GQA + RoPE,
 * opset23_tiny: an attention_mask input, opset 23 ops), data set 1 holds two rows of 12 token ids
 * and PyTorch's logits [2, 12, vocab] of the full forward (opset23_tiny: with an attention mask
 * whose row 1 pads its last 4 tokens; the session has no padding, so row 1 is checked only at the
 * positions the mask keeps, where causal attention saw the same keys). Two sequences are prefilled
 * with different prefixes (5 and 9 tokens) in one step, then decoded one token at a time, together
 * while both have tokens left and alone after: the logits of every position, prefill and decode,
 * must equal PyTorch's at that position (the tolerance `kernc check` uses). Both cache layouts:
 * contiguous (one buffer per sequence) and paged (blocks of 4 tokens, so every sequence spans
 * several, shuffled, blocks). Also: a fork decodes like its source, a write into a shared block
 * leaves the source's logits unchanged, and a step the cache cannot hold is an error that changes
 * nothing. Masks: a causal attention whose additive mask is built from the attention_mask input is
 * derived (the session feeds ones, and such a mask is then the same number everywhere); one whose
 * mask varies without it (ALiBi- style slopes per head) is refused, naming the node.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "frontend/frontend.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *tests;

#include "tests/session_ref.h"

/* A fork after 6 tokens decodes like its source; a token the fork alone takes leaves the
 * source's next logits unchanged (its shared block was copied before the write). */
static void fork_and_write(const ref *r, const kc_session_options *o, const char *what) {
  kc_session *s;
  if (kc_session_new(r->ctx, r->g, o, &s) != KC_OK) fail_msg("%s", kc_last_error(r->ctx));
  int32_t a, f;
  float *l = malloc((size_t)r->vocab * sizeof *l), *lf = malloc((size_t)r->vocab * sizeof *lf);
  assert_int_equal(kc_session_seq_new(s, &a), KC_OK);
  kc_decode_entry pre = {a, 6, ids_of(r, 0), l, 0};
  if (kc_session_decode(s, &pre, 1) != KC_OK) fail_msg("prefill: %s", kc_last_error(r->ctx));
  assert_int_equal(kc_session_seq_fork(s, a, &f), KC_OK);
  int64_t other = (ids_of(r, 0)[6] + 1) % r->vocab;
  kc_decode_entry wf = {f, 1, &other, lf, 0}; /* the fork writes position 6 first */
  if (kc_session_decode(s, &wf, 1) != KC_OK) fail_msg("fork: %s", kc_last_error(r->ctx));
  kc_decode_entry wa = {a, 1, ids_of(r, 0) + 6, l, 0};
  if (kc_session_decode(s, &wa, 1) != KC_OK) fail_msg("source: %s", kc_last_error(r->ctx));
  expect_logits(r, l, 0, 6, 1, what);
  free(l);
  free(lf);
  kc_session_free(s);
}

static void t_models(void **state) {
  (void)state;
  const char *models[] = {"gpt2_tiny", "llama_tiny", "opset23_tiny"};
  for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
    ref r = {0};
    load(&r, models[i], models[i]);
    char what[128];
    kc_session_options contiguous = {.max_len = 16, .max_seqs = 2, .threads = 2};
    kc_session_options paged = {.paged = 1, .block_size = 4, .max_tokens = 64, .threads = 2};
    snprintf(what, sizeof what, "%s, contiguous cache", models[i]);
    decode_both(&r, &contiguous, what);
    snprintf(what, sizeof what, "%s, paged cache", models[i]);
    decode_both(&r, &paged, what);
    fork_and_write(&r, &paged, what);
    unload(&r);
  }
}

/* A step the cache cannot hold fails naming the sequence and changes nothing. */
static void t_full_cache(void **state) {
  (void)state;
  ref r = {0};
  load(&r, "gpt2_tiny", "gpt2_tiny");
  kc_session_options o = {.paged = 1, .block_size = 4, .max_tokens = 12};
  kc_session *s;
  if (kc_session_new(r.ctx, r.g, &o, &s) != KC_OK) fail_msg("%s", kc_last_error(r.ctx));
  int32_t a, b;
  assert_int_equal(kc_session_seq_new(s, &a), KC_OK);
  assert_int_equal(kc_session_seq_new(s, &b), KC_OK);
  kc_decode_entry e[2] = {{a, 8, ids_of(&r, 0), NULL, 0}, {b, 5, ids_of(&r, 1), NULL, 0}};
  assert_int_equal(kc_session_decode(s, e, 2), KC_ERR_RUNTIME);
  assert_non_null(strstr(kc_last_error(r.ctx), "full"));
  assert_int_equal(kc_session_seq_len(s, a), 0);
  assert_int_equal(kc_session_seq_len(s, b), 0);
  e[1].ntokens = 4; /* 8 + 4 tokens fill the 3 blocks exactly */
  float *l = malloc((size_t)r.vocab * sizeof *l);
  e[0].logits = l;
  if (kc_session_decode(s, e, 2) != KC_OK) fail_msg("%s", kc_last_error(r.ctx));
  expect_logits(&r, l, 0, 7, 1, "after a refused step");
  free(l);
  kc_session_free(s);
  unload(&r);
}

/* ids -> embedding -> causal attention (2 heads of 4) with the additive mask `mask_of(m)`
 * (m: the attention_mask input as f32 [B, 1, 1, S]) -> logits over 8 tokens. */
static kc_graph *masked_decoder(kc_context *ctx, kc_val (*mask_of)(kc_graph *, kc_val)) {
  static float emb[8 * 8], head[8 * 8];
  for (int i = 0; i < 64; i++) {
    emb[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
    head[i] = (float)((i * 11) % 13) / 13.0f - 0.5f;
  }
  kc_graph *g = kc_graph_new(ctx, "masked");
  kc_dim bs[2] = {kc_sym(g, "B"), kc_sym(g, "S")};
  kc_val ids = kc_input(g, "input_ids", KC_I64, 2, bs);
  kc_val am = kc_input(g, "attention_mask", KC_I64, 2, bs);
  int64_t ed[2] = {8, 8};
  kc_val h = kc_gather(g, kc_weight(g, "emb", KC_F32, 2, ed, emb), ids, 0);
  int64_t ax[2] = {1, 2};
  kc_val m = kc_unsqueeze(g, kc_cast(g, am, KC_F32), 2, ax);
  kc_attention_desc a = {.heads = 2, .mask = KC_MASK_CAUSAL};
  kc_val y = kc_attention(g, h, h, h, mask_of(g, m), &a);
  kc_output(g, kc_matmul(g, y, kc_weight(g, "head", KC_F32, 2, ed, head)), "logits");
  if (kc_graph_status(g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  return g;
}

/* (1 - m) * -10000: 0 where m is 1 */
static kc_val padding_mask(kc_graph *g, kc_val m) {
  return kc_mul(g, kc_sub(g, kc_const_f32(g, 1), m), kc_const_f32(g, -10000));
}

/* m times a slope per head: varies across heads even when m is all ones */
static kc_val sloped_mask(kc_graph *g, kc_val m) {
  static const float slopes[2] = {-0.5f, -0.25f};
  int64_t d[4] = {1, 2, 1, 1};
  return kc_mul(g, m, kc_constant(g, KC_F32, 4, d, slopes));
}

static void t_masks(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_session_options o = {.max_len = 8, .max_seqs = 1, .threads = 1};
  kc_session *s = NULL;
  kc_graph *g = masked_decoder(ctx, padding_mask);
  if (kc_session_new(ctx, g, &o, &s) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  kc_session_free(s);
  kc_graph_free(g);
  g = masked_decoder(ctx, sloped_mask);
  kc_status st = kc_session_new(ctx, g, &o, &s);
  if (st == KC_OK) {
    kc_session_free(s);
    fail_msg("a session was made on an attention whose mask varies without padding");
  }
  const char *msg = kc_last_error(ctx);
  print_message("refused: %s\n", msg);
  assert_int_equal(st, KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(msg, "derive-decode"));
  assert_non_null(strstr(msg, "(attention)"));
  assert_non_null(strstr(msg, "additive mask"));
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC TESTS_DIR\n", argv[0]);
    return 2;
  }
  tests = argv[2];
  const struct CMUnitTest t[] = {
      cmocka_unit_test(t_models),
      cmocka_unit_test(t_full_cache),
      cmocka_unit_test(t_masks),
  };
  return cmocka_run_group_tests(t, NULL, NULL);
}
