/*
 * tests/test_session_past.c - decoding models exported "with past" (past_key_values.N.key /
 * .value inputs, present.N.* outputs, the layout optimum and ONNX Runtime GenAI use): kernc maps
 * the past onto the cache it derives (passes/derive_decode_past.c), and a session on such a model
 * must decode exactly as on the plain model (argv[1]: the kernc binary, argv[2]: tests/).
 *
 * tests/models/gpt2_past_tiny and llama_past_tiny (tests/models/make_past_models.py) have the
 * weights of gpt2_tiny and llama_tiny (the script checks it, and that PyTorch's past path
 * reproduces the plain model's logits); llama_past_tiny also takes attention_mask [B, P + S] and
 * position_ids [B, S]. The references are the plain models' test_data_set_1: two rows of 12 token
 * ids and PyTorch's logits of the full forward. Two sequences are prefilled with 5 and 9 tokens in
 * one step, then decoded a token at a time, together while both have tokens left: every position's
 * logits must equal PyTorch's (kernc check's tolerance), with a contiguous and a paged cache
 * (blocks of 4 tokens). `kernc generate` on the past models prints the tokens it prints on the
 * plain ones.
 *
 * Refused, with a message naming the input or output: a past laid out [B, P, heads, head_dim]
 * (gpt2_past_tiny/past_bshd.onnx), a present output that is not Concat(past, new) (the loaded
 * graph's present.0.key pointed at the new keys alone), a past without its present output, and a
 * past input of an unknown spelling.
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

static const char *kernc, *tests;

#include "tests/session_ref.h"

static void t_models(void **state) {
  (void)state;
  const char *models[][2] = {{"gpt2_past_tiny", "gpt2_tiny"}, {"llama_past_tiny", "llama_tiny"}};
  for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
    ref r = {0};
    load(&r, models[i][0], models[i][1]);
    char what[128];
    kc_session_options contiguous = {.max_len = 16, .max_seqs = 2, .threads = 2};
    kc_session_options paged = {.paged = 1, .block_size = 4, .max_tokens = 64, .threads = 2};
    snprintf(what, sizeof what, "%s, contiguous cache", models[i][0]);
    decode_both(&r, &contiguous, what);
    snprintf(what, sizeof what, "%s, paged cache", models[i][0]);
    decode_both(&r, &paged, what);
    unload(&r);
  }
}

/* The first line `kernc generate MODEL --prompt "1 2 3" --max-new 8` prints (the tokens). */
static char *generate(const char *model) {
  char cmd[8400], *out = NULL, *err = NULL;
  snprintf(cmd, sizeof cmd, "'%s' generate '%s/models/%s/model.onnx' --prompt '1 2 3' --max-new 8",
           kernc, tests, model);
  int rc = th_exec(cmd, &out, &err);
  if (rc != 0) fail_msg("$ %s\n%s%s(exit %d)", cmd, out, err, rc);
  free(err);
  char *nl = strchr(out, '\n');
  if (nl) *nl = 0;
  return out;
}

static void t_generate(void **state) {
  (void)state;
  const char *models[][2] = {{"gpt2_past_tiny", "gpt2_tiny"}, {"llama_past_tiny", "llama_tiny"}};
  for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
    char *past = generate(models[i][0]), *plain = generate(models[i][1]);
    int n = 0;
    for (const char *c = plain; *c; c++)
      n += *c == ' ';
    assert_int_equal(n, 7); /* 8 tokens */
    if (strcmp(past, plain) != 0)
      fail_msg("%s generates '%s', %s '%s'", models[i][0], past, models[i][1], plain);
    free(past);
    free(plain);
  }
}

/* ---- refusals ------------------------------------------------------------------------------ */

/* kc_session_new on g fails with KC_ERR_UNSUPPORTED and a message holding want and want2. */
static void expect_refused(kc_context *ctx, const kc_graph *g, const char *want,
                           const char *want2) {
  kc_session *s = NULL;
  kc_session_options o = {.max_len = 16, .max_seqs = 1};
  kc_status st = kc_session_new(ctx, g, &o, &s);
  if (st == KC_OK) {
    kc_session_free(s);
    fail_msg("a session was made; expected a refusal naming '%s'", want);
  }
  const char *msg = kc_last_error(ctx);
  if (st != KC_ERR_UNSUPPORTED || !strstr(msg, want) || (want2 && !strstr(msg, want2)))
    fail_msg("status %d, message '%s'; expected KC_ERR_UNSUPPORTED naming '%s'%s%s", st, msg, want,
             want2 ? " and " : "", want2 ? want2 : "");
  assert_non_null(strstr(msg, "derive-decode"));
  print_message("refused: %s\n", msg);
}

static uint32_t output_named(const kc_graph *g, const char *name) {
  for (uint32_t o = 0; o < g->noutputs; o++)
    if (g->outputs[o].name && strcmp(g->outputs[o].name, name) == 0) return o;
  fail_msg("no output '%s'", name);
  return 0;
}

static void t_refused(void **state) {
  (void)state;
  char path[4096];
  kc_context *ctx = kc_context_new();
  kc_graph *g;

  /* the past [B, P, heads, head_dim] */
  snprintf(path, sizeof path, "%s/models/gpt2_past_tiny/past_bshd.onnx", tests);
  if (kc_onnx_load(ctx, path, &g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  expect_refused(ctx, g, "input 'past_key_values.0.key'", "[B, kv_heads, P, head_dim]");
  kc_graph_free(g);

  snprintf(path, sizeof path, "%s/models/gpt2_past_tiny/model.onnx", tests);
  /* present.0.key is the new keys alone, not Concat(past, new) */
  if (kc_onnx_load(ctx, path, &g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  uint32_t o = output_named(g, "present.0.key");
  const kc_value *pv = kc_value_of(g, g->outputs[o].v);
  assert_true(pv->def > 0);
  const kc_node *cat = &g->nodes[pv->def - 1];
  assert_int_equal(cat->op, KC_OP_CONCAT);
  g->outputs[o].v = cat->in[1];
  expect_refused(ctx, g, "'present.0.key'", "'past_key_values.0.key'");
  kc_graph_free(g);

  /* no present for past_key_values.1.value */
  if (kc_onnx_load(ctx, path, &g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  o = output_named(g, "present.1.value");
  g->outputs[o] = g->outputs[--g->noutputs];
  expect_refused(ctx, g, "input 'past_key_values.1.value'", "present.1.value");
  kc_graph_free(g);

  /* a past input of an unknown spelling */
  if (kc_onnx_load(ctx, path, &g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  kc_value_of(g, g->inputs[1])->name = "past_keys.0";
  expect_refused(ctx, g, "input 'past_keys.0'", NULL);
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC TESTS_DIR\n", argv[0]);
    return 2;
  }
  kernc = argv[1];
  tests = argv[2];
  const struct CMUnitTest t[] = {
      cmocka_unit_test(t_models),
      cmocka_unit_test(t_generate),
      cmocka_unit_test(t_refused),
  };
  return cmocka_run_group_tests(t, NULL, NULL);
}
