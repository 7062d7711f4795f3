/*
 * tests/session_ref.h - what test_session.c and test_session_past.c share: a test model with
 * PyTorch's references (tests/models/NAME/test_data_set_1: two rows of 12 token ids, the logits
 * [2, 12, vocab] of the full forward, and an attention mask when the model takes one), and the
 * two-sequence decode that checks a session against them. Included by one test file each (static
 * functions); the includer defines `tests` (the tests/ folder) before including it.
 */
#ifndef KC_TESTS_SESSION_REF_H
#define KC_TESTS_SESSION_REF_H

typedef struct ref {
  kc_context *ctx;
  kc_graph *g;
  kc_pb_tensor ids, logits; /* [2, 12], [2, 12, vocab] */
  int64_t vocab;
  int valid[2]; /* positions of each row the reference's attention mask keeps (a prefix) */
} ref;

/* Load the model in tests/models/MODEL and the references of tests/models/PLAIN (the same
 * model without past inputs, or MODEL itself). */
static void load(ref *r, const char *model, const char *plain) {
  char path[4096];
  r->ctx = kc_context_new();
  snprintf(path, sizeof path, "%s/models/%s/model.onnx", tests, model);
  if (kc_onnx_load(r->ctx, path, &r->g) != KC_OK) fail_msg("%s", kc_last_error(r->ctx));
  snprintf(path, sizeof path, "%s/models/%s/test_data_set_1/input_0.pb", tests, plain);
  if (kc_tensor_pb_read(r->ctx, path, &r->ids) != KC_OK) fail_msg("%s", kc_last_error(r->ctx));
  snprintf(path, sizeof path, "%s/models/%s/test_data_set_1/output_0.pb", tests, plain);
  if (kc_tensor_pb_read(r->ctx, path, &r->logits) != KC_OK) fail_msg("%s", kc_last_error(r->ctx));
  assert_int_equal(r->ids.t.rank, 2);
  assert_int_equal(r->ids.t.dims[0], 2);
  assert_int_equal(r->ids.t.dims[1], 12);
  r->vocab = r->logits.t.dims[2];
  r->valid[0] = r->valid[1] = 12;
  snprintf(path, sizeof path, "%s/models/%s/test_data_set_1/input_1.pb", tests, plain);
  FILE *f = fopen(path, "rb");
  if (!f) return; /* no attention mask */
  fclose(f);
  kc_pb_tensor mask;
  if (kc_tensor_pb_read(r->ctx, path, &mask) != KC_OK) fail_msg("%s", kc_last_error(r->ctx));
  assert_int_equal(mask.t.dtype, KC_I64);
  for (int row = 0; row < 2; row++) {
    const int64_t *m = (const int64_t *)mask.t.data + row * 12;
    int n = 0;
    while (n < 12 && m[n])
      n++;
    for (int j = n; j < 12; j++)
      assert_int_equal(m[j], 0); /* right padding only */
    r->valid[row] = n;
  }
  kc_pb_tensor_free(&mask);
}

static void unload(ref *r) {
  kc_pb_tensor_free(&r->ids);
  kc_pb_tensor_free(&r->logits);
  kc_graph_free(r->g);
  kc_context_free(r->ctx);
}

static const int64_t *ids_of(const ref *r, int row) {
  return (const int64_t *)r->ids.t.data + row * 12;
}

/* got (n rows of vocab) against PyTorch's logits of row `row`, positions [pos, pos + n). */
static void expect_logits(const ref *r, const float *got, int row, int pos, int n,
                          const char *what) {
  const float *want = (const float *)r->logits.t.data + ((size_t)row * 12 + pos) * r->vocab;
  if (pos + n > r->valid[row]) n = pos < r->valid[row] ? r->valid[row] - pos : 0;
  for (int64_t i = 0; i < n * r->vocab; i++) {
    float w = want[i], g = got[i];
    if (!(fabsf(g - w) <= 1e-4f + 1e-3f * fabsf(w)))
      fail_msg("%s: row %d position %lld token %lld: %.7g, PyTorch %.7g", what, row,
               (long long)(pos + i / r->vocab), (long long)(i % r->vocab), g, w);
  }
}

/* Two sequences: prefill 5 and 9 tokens in one step, then one token per step per sequence. */
static void decode_both(const ref *r, const kc_session_options *o, const char *what) {
  kc_session *s;
  if (kc_session_new(r->ctx, r->g, o, &s) != KC_OK) fail_msg("%s", kc_last_error(r->ctx));
  assert_int_equal(kc_session_vocab(s), r->vocab);
  int32_t a, b;
  assert_int_equal(kc_session_seq_new(s, &a), KC_OK);
  assert_int_equal(kc_session_seq_new(s, &b), KC_OK);
  float *la = malloc((size_t)12 * r->vocab * sizeof *la);
  float *lb = malloc((size_t)12 * r->vocab * sizeof *lb);
  kc_decode_entry pre[2] = {{a, 5, ids_of(r, 0), la, 1}, {b, 9, ids_of(r, 1), lb, 1}};
  if (kc_session_decode(s, pre, 2) != KC_OK) fail_msg("prefill: %s", kc_last_error(r->ctx));
  expect_logits(r, la, 0, 0, 5, what);
  expect_logits(r, lb, 1, 0, 9, what);
  for (int pos_a = 5, pos_b = 9; pos_a < 12;) {
    kc_decode_entry e[2];
    int n = 0;
    e[n++] = (kc_decode_entry){a, 1, ids_of(r, 0) + pos_a, la, 0};
    if (pos_b < 12) e[n++] = (kc_decode_entry){b, 1, ids_of(r, 1) + pos_b, lb, 0};
    if (kc_session_decode(s, e, n) != KC_OK) fail_msg("decode: %s", kc_last_error(r->ctx));
    expect_logits(r, la, 0, pos_a++, 1, what);
    if (n == 2) expect_logits(r, lb, 1, pos_b++, 1, what);
  }
  assert_int_equal(kc_session_seq_len(s, a), 12);
  assert_int_equal(kc_session_seq_len(s, b), 12);
  free(la);
  free(lb);
  kc_session_free(s);
}

#endif
