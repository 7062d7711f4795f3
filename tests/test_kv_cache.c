/*
 * tests/test_kv_cache.c - the KV-cache memory (runtime/kv_cache.c): fork shares blocks,
 * copy-on-write copies only the shared block that will be written (whole block, every layer) and
 * leaves the source's data alone, shared blocks before the length stay shared, free and reuse of
 * blocks and ids, truncate, the full-cache error (exact message, nothing changed), the contiguous
 * layout (one block per sequence written in place), block tables and past lengths of a batch,
 * bytes per token, 10,000 decode steps of beam-search churn against a reference model with no
 * heap growth, bad arguments.
 *
 * Expected values are worked out by hand here: block ids follow from the documented hand-out
 * order (0, 1, 2, ... from a fresh cache; a freed block is the next handed out), row addresses
 * from the spec's layout formula [NBLK][L][2][KVH][BS][D] over kc_kv_pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runtime/kv_cache.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct env {
  kc_context *ctx;
} env;

static int setup(void **st) {
  env *e = calloc(1, sizeof *e);
  if (!e) return -1;
  e->ctx = kc_context_new();
  *st = e;
  return e->ctx ? 0 : -1;
}

static int teardown(void **st) {
  env *e = *st;
  kc_context_free(e->ctx);
  free(e);
  return 0;
}

/* f32 caches of 2 layers, 2 kv heads, head_dim 3: 48 bytes per token. */
static const kc_kv_shape small = {2, 2, 3, 4};

static kc_kv_cache *make(env *e, const kc_kv_shape *s, int64_t bs, int64_t nblocks) {
  kc_kv_cache *c = NULL;
  assert_int_equal(kc_kv_new(e->ctx, s, bs, nblocks, &c), KC_OK);
  assert_non_null(c);
  return c;
}

static int32_t seq_new(kc_kv_cache *c) {
  int32_t s = -1;
  assert_int_equal(kc_kv_seq_new(c, &s), KC_OK);
  return s;
}

static int32_t fork_seq(kc_kv_cache *c, int32_t src) {
  int32_t s = -1;
  assert_int_equal(kc_kv_seq_fork(c, src, &s), KC_OK);
  return s;
}

/* One sequence's table (maxb entries) and past. */
static int64_t table_of(const kc_kv_cache *c, int32_t seq, int32_t *t, int64_t maxb) {
  int64_t past = -7;
  kc_kv_tables(c, &seq, 1, t, maxb, &past);
  return past;
}

/* The value a test writes at element d of the row (layer, kv, head) of a token tagged `tag`. */
static float val(int64_t tag, int64_t l, int kv, int64_t h, int64_t d) {
  return (float)(tag * 1000 + l * 100 + kv * 50 + h * 10 + d);
}

static void write_tok(kc_kv_cache *c, const kc_kv_shape *s, int32_t seq, int64_t pos, int64_t tag) {
  for (int64_t l = 0; l < s->layers; l++)
    for (int kv = 0; kv < 2; kv++)
      for (int64_t h = 0; h < s->kv_heads; h++) {
        float *r = kc_kv_row(c, seq, l, kv, h, pos);
        assert_non_null(r);
        for (int64_t d = 0; d < s->head_dim; d++)
          r[d] = val(tag, l, kv, h, d);
      }
}

static bool tok_is(kc_kv_cache *c, const kc_kv_shape *s, int32_t seq, int64_t pos, int64_t tag) {
  for (int64_t l = 0; l < s->layers; l++)
    for (int kv = 0; kv < 2; kv++)
      for (int64_t h = 0; h < s->kv_heads; h++) {
        const float *r = kc_kv_row(c, seq, l, kv, h, pos);
        if (!r) return false;
        for (int64_t d = 0; d < s->head_dim; d++)
          if (r[d] != val(tag, l, kv, h, d)) return false;
      }
  return true;
}

/* Append n tokens to seq and write them with tags tag0, tag0 + 1, ... */
static void append_tokens(kc_kv_cache *c, const kc_kv_shape *s, int32_t seq, int64_t n,
                          int64_t tag0) {
  int64_t len = kc_kv_seq_len(c, seq);
  assert_int_equal(kc_kv_seq_append(c, seq, n), KC_OK);
  assert_int_equal(kc_kv_seq_len(c, seq), len + n);
  for (int64_t i = 0; i < n; i++)
    write_tok(c, s, seq, len + i, tag0 + i);
}

static void t_bytes_per_token(void **st) {
  env *e = *st;
  /* GPT-2 small: 12 layers x K,V x 12 heads x 64 x f32 = 73,728 bytes per token */
  kc_kv_shape gpt2 = {12, 12, 64, 4};
  kc_kv_cache *c = make(e, &gpt2, 16, 2);
  assert_int_equal(kc_kv_bytes_per_token(c), 12 * 2 * 12 * 64 * 4);
  assert_int_equal(kc_kv_block_size(c), 16);
  assert_int_equal(kc_kv_nblocks(c), 2);
  assert_int_equal(kc_kv_free_blocks(c), 2);
  assert_int_equal(kc_kv_max_seqs(c), 2 * 2 + 64);
  assert_int_equal((uintptr_t)kc_kv_pool(c) % 64, 0);
  kc_kv_free(c);
  /* GQA: only the KV heads are stored (4 of a model's 32 query heads), f16 */
  kc_kv_shape gqa = {22, 4, 64, 2};
  c = make(e, &gqa, 16, 1);
  assert_int_equal(kc_kv_bytes_per_token(c), 22 * 2 * 4 * 64 * 2);
  kc_kv_free(c);
}

static void t_fork_cow(void **st) {
  env *e = *st;
  kc_kv_cache *c = make(e, &small, 4, 8);
  int32_t a = seq_new(c), t[4];
  assert_int_equal(a, 0);
  append_tokens(c, &small, a, 6, 100); /* blocks 0 (positions 0-3), 1 (4-5 of 4-7) */
  assert_int_equal(kc_kv_free_blocks(c), 6);
  int32_t b = fork_seq(c, a);
  assert_int_equal(b, 1);
  assert_int_equal(kc_kv_seq_len(c, b), 6);
  assert_int_equal(kc_kv_free_blocks(c), 6); /* fork copies nothing */
  table_of(c, b, t, 4);
  assert_int_equal(t[0], 0);
  assert_int_equal(t[1], 1);
  assert_int_equal(t[2], -1);
  for (int64_t p = 0; p < 6; p++)
    assert_ptr_equal(kc_kv_row(c, a, 1, 1, 1, p), kc_kv_row(c, b, 1, 1, 1, p));

  /* b writes position 6, in shared block 1: b gets a copy (block 2), block 0 stays shared */
  assert_int_equal(kc_kv_seq_append(c, b, 1), KC_OK);
  assert_int_equal(kc_kv_free_blocks(c), 5);
  assert_int_equal(table_of(c, b, t, 4), 6);
  assert_int_equal(t[0], 0);
  assert_int_equal(t[1], 2);
  assert_int_equal(table_of(c, a, t, 4), 0); /* a: appended once, from 0 */
  assert_int_equal(t[0], 0);
  assert_int_equal(t[1], 1);
  /* the copy is the whole block, every layer: b sees a's tokens 4 and 5 */
  for (int64_t p = 0; p < 6; p++)
    assert_true(tok_is(c, &small, b, p, 100 + p));
  assert_ptr_equal(kc_kv_row(c, a, 0, 0, 0, 3), kc_kv_row(c, b, 0, 0, 0, 3));
  assert_ptr_not_equal(kc_kv_row(c, a, 0, 0, 0, 4), kc_kv_row(c, b, 0, 0, 0, 4));
  /* writes into b's own block leave a alone */
  write_tok(c, &small, b, 6, 900);
  write_tok(c, &small, b, 4, 901);
  write_tok(c, &small, b, 5, 902);
  for (int64_t p = 0; p < 6; p++)
    assert_true(tok_is(c, &small, a, p, 100 + p));
  assert_null(kc_kv_row(c, a, 0, 0, 0, 6));
  assert_true(tok_is(c, &small, b, 4, 901));

  /* a's block 1 is its own again: appending into it copies nothing */
  append_tokens(c, &small, a, 2, 106); /* positions 6, 7 */
  assert_int_equal(kc_kv_free_blocks(c), 5);
  table_of(c, a, t, 4);
  assert_int_equal(t[1], 1);

  /* a fork at a block boundary: every block is before the length, none is copied */
  int32_t f = fork_seq(c, a);
  assert_int_equal(f, 2);
  append_tokens(c, &small, f, 3, 200); /* positions 8-10 in a fresh block 3 */
  assert_int_equal(kc_kv_free_blocks(c), 4);
  table_of(c, f, t, 4);
  assert_int_equal(t[0], 0);
  assert_int_equal(t[1], 1);
  assert_int_equal(t[2], 3);
  for (int64_t p = 0; p < 8; p++)
    assert_true(tok_is(c, &small, f, p, 100 + p));
  /* a grows past the boundary too: its own fresh block, block 1 still shared with f */
  append_tokens(c, &small, a, 1, 108);
  assert_int_equal(kc_kv_free_blocks(c), 3);
  table_of(c, a, t, 4);
  assert_int_equal(t[1], 1);
  assert_int_equal(t[2], 4);
  assert_true(tok_is(c, &small, f, 8, 200));
  assert_true(tok_is(c, &small, a, 8, 108));
  /* a fork of a fork: three holders of blocks 0 and 1 */
  int32_t g = fork_seq(c, f);
  kc_kv_seq_free(c, a);
  kc_kv_seq_free(c, f);
  assert_int_equal(kc_kv_free_blocks(c), 4); /* block 4 (a's last) came back; g holds 0, 1, 3 */
  for (int64_t p = 0; p < 8; p++)
    assert_true(tok_is(c, &small, g, p, 100 + p));
  kc_kv_seq_free(c, g);
  kc_kv_seq_free(c, b);
  assert_int_equal(kc_kv_free_blocks(c), 8);
  kc_kv_free(c);
}

static void t_free_reuse(void **st) {
  env *e = *st;
  kc_kv_cache *c = make(e, &small, 4, 4);
  int32_t a = seq_new(c), b = seq_new(c), x = seq_new(c), t[4];
  assert_int_equal(a, 0);
  assert_int_equal(b, 1);
  assert_int_equal(x, 2);
  append_tokens(c, &small, a, 5, 10); /* blocks 0, 1 */
  append_tokens(c, &small, b, 4, 20); /* block 2 */
  kc_kv_seq_free(c, a);
  assert_int_equal(kc_kv_seq_len(c, a), -1);
  assert_int_equal(kc_kv_free_blocks(c), 3);
  /* the lowest free id, and freed blocks first (last freed, first handed out) */
  int32_t d = seq_new(c);
  assert_int_equal(d, 0);
  assert_int_equal(kc_kv_seq_len(c, d), 0);
  assert_int_equal(table_of(c, d, t, 4), 0);
  assert_int_equal(t[0], -1);
  append_tokens(c, &small, d, 8, 30);
  table_of(c, d, t, 4);
  assert_int_equal(t[0], 0);
  assert_int_equal(t[1], 1);
  assert_int_equal(kc_kv_free_blocks(c), 1);
  assert_true(tok_is(c, &small, b, 3, 23));

  /* freeing the source of a fork keeps the fork's data; the fork then owns the block and its
   * next write copies nothing */
  int32_t f = fork_seq(c, b);
  assert_int_equal(f, 3);
  kc_kv_seq_free(c, b);
  assert_int_equal(kc_kv_free_blocks(c), 1);
  for (int64_t p = 0; p < 4; p++)
    assert_true(tok_is(c, &small, f, p, 20 + p));
  assert_int_equal(kc_kv_seq_truncate(c, f, 2), KC_OK);
  append_tokens(c, &small, f, 1, 40);
  assert_int_equal(kc_kv_free_blocks(c), 1);
  table_of(c, f, t, 4);
  assert_int_equal(t[0], 2);
  /* ids and blocks cycle without leaking */
  for (int i = 0; i < 100; i++) {
    int32_t s = seq_new(c);
    assert_int_equal(s, 1);
    append_tokens(c, &small, s, 4, i);
    assert_int_equal(kc_kv_free_blocks(c), 0);
    kc_kv_seq_free(c, s);
    assert_int_equal(kc_kv_free_blocks(c), 1);
  }
  kc_kv_seq_free(c, d);
  kc_kv_seq_free(c, f);
  kc_kv_seq_free(c, x);
  assert_int_equal(kc_kv_free_blocks(c), 4);
  kc_kv_seq_free(c, x); /* twice: ignored */
  assert_int_equal(kc_kv_free_blocks(c), 4);
  kc_kv_free(c);
}

static void t_truncate(void **st) {
  env *e = *st;
  kc_kv_cache *c = make(e, &small, 4, 8);
  int32_t a = seq_new(c), t[4];
  append_tokens(c, &small, a, 10, 0); /* blocks 0, 1, 2 */
  assert_int_equal(kc_kv_free_blocks(c), 5);
  assert_int_equal(kc_kv_seq_truncate(c, a, 9), KC_OK); /* same blocks */
  assert_int_equal(kc_kv_free_blocks(c), 5);
  assert_int_equal(kc_kv_seq_truncate(c, a, 8), KC_OK); /* block 2 goes */
  assert_int_equal(kc_kv_free_blocks(c), 6);
  assert_int_equal(table_of(c, a, t, 4), 8);
  assert_int_equal(t[2], -1);
  assert_null(kc_kv_row(c, a, 0, 0, 0, 8));
  for (int64_t p = 0; p < 8; p++)
    assert_true(tok_is(c, &small, a, p, p));
  /* truncating a sequence that shares its blocks: only what nobody else holds is freed */
  int32_t b = fork_seq(c, a);
  assert_int_equal(kc_kv_seq_truncate(c, b, 3), KC_OK);
  assert_int_equal(kc_kv_free_blocks(c), 6);
  /* b rewrites position 3 (a stop sequence dropped, new token): block 0 is shared, b copies it */
  append_tokens(c, &small, b, 1, 50);
  assert_int_equal(kc_kv_free_blocks(c), 5);
  assert_true(tok_is(c, &small, a, 3, 3));
  assert_true(tok_is(c, &small, b, 3, 50));
  assert_true(tok_is(c, &small, b, 2, 2));
  assert_int_equal(kc_kv_seq_truncate(c, a, 0), KC_OK);
  assert_int_equal(kc_kv_free_blocks(c), 7);
  assert_int_equal(table_of(c, a, t, 4), 0);
  assert_int_equal(t[0], -1);
  /* growing is not truncating */
  assert_int_equal(kc_kv_seq_truncate(c, b, 5), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(e->ctx), "sequence 1 has 4 tokens, cannot truncate to 5"));
  assert_int_equal(kc_kv_seq_truncate(c, b, -1), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_kv_seq_len(c, b), 4);
  kc_kv_free(c);
}

static void t_full(void **st) {
  env *e = *st;
  kc_kv_cache *c = make(e, &small, 4, 4);
  int32_t a = seq_new(c), b = seq_new(c), t[4];
  append_tokens(c, &small, a, 10, 0); /* blocks 0, 1, 2 (positions 8, 9 of block 2) */
  assert_int_equal(kc_kv_seq_append(c, b, 8), KC_ERR_RUNTIME);
  assert_string_equal(kc_last_error(e->ctx),
                      "KV cache full: sequence 1 needs 2 more blocks of 4 tokens, 1 are free");
  assert_int_equal(kc_kv_seq_len(c, b), 0);
  assert_int_equal(kc_kv_free_blocks(c), 1);
  assert_int_equal(table_of(c, b, t, 4), 0);
  assert_int_equal(t[0], -1);
  /* a: 2 slots left in block 2, then 3 more blocks for 10 more tokens */
  assert_int_equal(kc_kv_seq_append(c, a, 12), KC_ERR_RUNTIME);
  assert_string_equal(kc_last_error(e->ctx),
                      "KV cache full: sequence 0 needs 3 more blocks of 4 tokens, 1 are free");
  assert_int_equal(kc_kv_seq_len(c, a), 10);
  /* a count whose len + n overflows is a full cache, not a wrap */
  assert_int_equal(kc_kv_seq_append(c, a, INT64_MAX), KC_ERR_RUNTIME);
  assert_non_null(strstr(kc_last_error(e->ctx), "KV cache full: sequence 0 needs"));
  assert_int_equal(kc_kv_seq_len(c, a), 10);
  assert_int_equal(table_of(c, a, t, 4), 0);
  assert_int_equal(t[2], 2);
  assert_int_equal(t[3], -1);
  /* the copy-on-write block counts too: f shares a's partial block 2 */
  int32_t f = fork_seq(c, a);
  append_tokens(c, &small, b, 4, 70); /* the last free block */
  assert_int_equal(kc_kv_free_blocks(c), 0);
  assert_int_equal(kc_kv_seq_append(c, f, 1), KC_ERR_RUNTIME);
  assert_string_equal(kc_last_error(e->ctx),
                      "KV cache full: sequence 2 needs 1 more blocks of 4 tokens, 0 are free");
  assert_int_equal(kc_kv_seq_len(c, f), 10);
  table_of(c, f, t, 4);
  assert_int_equal(t[2], 2);
  /* a has no room to write without overwriting what f reads */
  assert_int_equal(kc_kv_seq_append(c, a, 1), KC_ERR_RUNTIME);
  for (int64_t p = 0; p < 10; p++)
    assert_true(tok_is(c, &small, f, p, p));
  /* a step of no tokens needs nothing */
  assert_int_equal(kc_kv_seq_append(c, a, 0), KC_OK);
  /* once b is gone, f copies block 2 and a keeps it */
  kc_kv_seq_free(c, b);
  append_tokens(c, &small, f, 1, 80);
  table_of(c, f, t, 4);
  assert_int_equal(t[2], 3);
  assert_int_equal(kc_kv_free_blocks(c), 0);
  assert_true(tok_is(c, &small, f, 9, 9));
  assert_true(tok_is(c, &small, f, 10, 80));
  assert_null(kc_kv_row(c, a, 0, 0, 0, 10));
  kc_kv_free(c);
}

/* Contiguous: block size = max_len, one block per sequence, written in place. */
static void t_contiguous(void **st) {
  env *e = *st;
  const int64_t max_len = 32, nseq = 3;
  kc_kv_cache *c = make(e, &small, max_len, nseq);
  const int64_t L = small.layers, H = small.kv_heads, D = small.head_dim;
  float *pool = kc_kv_pool(c);
  int32_t s[3], t[2];
  for (int i = 0; i < 3; i++)
    s[i] = seq_new(c);
  /* prefill then decode, one token at a time: each sequence stays in its one block */
  for (int i = 0; i < 3; i++)
    append_tokens(c, &small, s[i], 5 + i, 100 * i);
  for (int step = 0; step < 20; step++)
    for (int i = 0; i < 3; i++) {
      append_tokens(c, &small, s[i], 1, 100 * i + 5 + i + step);
      table_of(c, s[i], t, 2);
      assert_int_equal(t[0], i);
      assert_int_equal(t[1], -1);
    }
  assert_int_equal(kc_kv_free_blocks(c), 0);
  /* the layout: row (l, kv, h) of position p of the sequence in block b starts at element
   * ((((b * L + l) * 2 + kv) * H + h) * max_len + p) * D of the pool */
  for (int i = 0; i < 3; i++)
    for (int64_t p = 0; p < kc_kv_seq_len(c, s[i]); p++)
      for (int64_t l = 0; l < L; l++)
        for (int kv = 0; kv < 2; kv++)
          for (int64_t h = 0; h < H; h++) {
            const float *r = pool + ((((i * L + l) * 2 + kv) * H + h) * max_len + p) * D;
            assert_ptr_equal(r, kc_kv_row(c, s[i], l, kv, h, p));
            for (int64_t d = 0; d < D; d++)
              assert_true(r[d] == val(100 * i + p, l, kv, h, d));
          }
  /* a fork with the source kept: the first write copies the one block (there is nothing
   * smaller); with none free that is the full-cache error */
  int32_t f = fork_seq(c, s[0]);
  assert_int_equal(kc_kv_seq_append(c, f, 1), KC_ERR_RUNTIME);
  assert_string_equal(kc_last_error(e->ctx),
                      "KV cache full: sequence 3 needs 1 more blocks of 32 tokens, 0 are free");
  kc_kv_seq_free(c, s[2]);
  append_tokens(c, &small, f, 1, 555);
  table_of(c, f, t, 2);
  assert_int_equal(t[0], 2);
  for (int64_t p = 0; p < 25; p++)
    assert_true(tok_is(c, &small, f, p, p));
  assert_true(tok_is(c, &small, f, 25, 555));
  assert_null(kc_kv_row(c, s[0], 0, 0, 0, 25));
  /* a fork whose source is freed before it writes (a beam reorder) copies nothing */
  int32_t g = fork_seq(c, s[1]);
  kc_kv_seq_free(c, s[1]);
  append_tokens(c, &small, g, 1, 777);
  table_of(c, g, t, 2);
  assert_int_equal(t[0], 1);
  assert_int_equal(kc_kv_free_blocks(c), 0);
  for (int64_t p = 0; p < 26; p++)
    assert_true(tok_is(c, &small, g, p, 100 + p));
  kc_kv_free(c);
}

/* A batch of sequences of different lengths: tables, past before the step, the layout. */
static void t_tables_batch(void **st) {
  env *e = *st;
  const int64_t bs = 4, L = small.layers, H = small.kv_heads, D = small.head_dim;
  kc_kv_cache *c = make(e, &small, bs, 16);
  float *pool = kc_kv_pool(c);
  int32_t s[4];
  for (int i = 0; i < 3; i++)
    s[i] = seq_new(c);
  s[3] = 9;                               /* not a sequence */
  append_tokens(c, &small, s[0], 5, 0);   /* blocks 0, 1 */
  append_tokens(c, &small, s[1], 17, 10); /* blocks 2-6 */
  /* s[2] stays empty until the step */
  /* one step: 1 new token for s0 and s1, a prompt of 3 for s2 */
  assert_int_equal(kc_kv_seq_append(c, s[0], 1), KC_OK);
  assert_int_equal(kc_kv_seq_append(c, s[1], 1), KC_OK);
  assert_int_equal(kc_kv_seq_append(c, s[2], 3), KC_OK);
  int32_t t[4][6];
  int64_t past[4];
  memset(t, 0x55, sizeof t);
  kc_kv_tables(c, s, 4, &t[0][0], 6, past);
  const int32_t want[4][6] = {{0, 1, -1, -1, -1, -1},
                              {2, 3, 4, 5, 6, -1},
                              {7, -1, -1, -1, -1, -1},
                              {-1, -1, -1, -1, -1, -1}};
  const int64_t want_past[4] = {5, 17, 0, 0};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(past[i], want_past[i]);
    for (int k = 0; k < 6; k++)
      assert_int_equal(t[i][k], want[i][k]);
  }
  /* every position's row is where the table and the layout formula put it */
  for (int i = 0; i < 3; i++)
    for (int64_t p = 0; p < kc_kv_seq_len(c, s[i]); p++)
      for (int64_t l = 0; l < L; l++)
        for (int kv = 0; kv < 2; kv++)
          for (int64_t h = 0; h < H; h++) {
            int64_t b = t[i][p / bs];
            const float *r = pool + ((((b * L + l) * 2 + kv) * H + h) * bs + p % bs) * D;
            assert_ptr_equal(r, kc_kv_row(c, s[i], l, kv, h, p));
          }
  /* a narrower table: the entries that fit */
  int32_t n2[3][2];
  kc_kv_tables(c, s, 3, &n2[0][0], 2, NULL);
  assert_int_equal(n2[1][0], 2);
  assert_int_equal(n2[1][1], 3);
  assert_int_equal(n2[2][1], -1);
  /* after a truncate, past is the new length */
  assert_int_equal(kc_kv_seq_truncate(c, s[1], 9), KC_OK);
  kc_kv_tables(c, s, 3, &t[0][0], 6, past);
  assert_int_equal(past[1], 9);
  assert_int_equal(t[1][2], 4);
  assert_int_equal(t[1][3], -1);
  kc_kv_free(c);
}

/* Heap bytes in use (glibc's arena and mmapped chunks). */
static size_t heap_used(void) {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

enum { K = 4, MAXLEN = 48 };

/* 10,000 decode steps of a beam search over K beams: append one token to each, reorder by
 * forking the chosen sources and freeing the old beams, sometimes truncate (a stop sequence) or
 * restart. Each step checks every beam's data against a reference history and that the blocks
 * the live tables hold are exactly the ones not free; the heap never grows. */
static void t_churn(void **st) {
  env *e = *st;
  const int64_t bs = 4, nblocks = K * (MAXLEN / 4) + 4;
  kc_kv_cache *c = make(e, &small, bs, nblocks);
  void *pool = kc_kv_pool(c);
  int32_t beam[K], nb[K];
  int64_t hist[K][MAXLEN], nh[K][MAXLEN], len[K];
  int32_t tab[K][MAXLEN / 4 + 1];
  unsigned char held[K * (MAXLEN / 4) + 4];
  uint64_t rng = 0x9e3779b97f4a7c15u;
#define NEXT() (rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17, rng)
  for (int i = 0; i < K; i++) {
    beam[i] = seq_new(c);
    len[i] = 0;
  }
  int64_t tag = 0, copies = 0, frees_ok = 0;
  size_t before = heap_used();
  for (int step = 0; step < 10000; step++) {
    /* the step: one token for every beam */
    for (int i = 0; i < K; i++) {
      int64_t free0 = kc_kv_free_blocks(c);
      assert_int_equal(kc_kv_seq_append(c, beam[i], 1), KC_OK);
      if (len[i] % bs != 0 && kc_kv_free_blocks(c) == free0 - 1) copies++;
      hist[i][len[i]] = ++tag;
      write_tok(c, &small, beam[i], len[i], tag);
      len[i]++;
    }
    /* reorder: new beam i continues source src; forks first, then the old beams go */
    for (int i = 0; i < K; i++) {
      int src = (int)(NEXT() % K);
      nb[i] = fork_seq(c, beam[src]);
      memcpy(nh[i], hist[src], sizeof hist[src]);
      assert_int_equal(kc_kv_seq_len(c, nb[i]), len[src]);
    }
    int64_t l0 = len[0];
    for (int i = 0; i < K; i++)
      kc_kv_seq_free(c, beam[i]);
    for (int i = 0; i < K; i++) {
      beam[i] = nb[i];
      memcpy(hist[i], nh[i], sizeof nh[i]);
      len[i] = kc_kv_seq_len(c, beam[i]);
      assert_int_equal(len[i], l0); /* beams advance together */
    }
    /* a stop sequence: drop a few tokens; at MAXLEN, start over from a short prefix */
    uint64_t r = NEXT() % 16;
    for (int i = 0; i < K; i++) {
      int64_t cut = len[i] >= MAXLEN ? (int64_t)(r % 9) : r == 0 ? len[i] / 2 : len[i];
      if (cut == len[i]) continue;
      assert_int_equal(kc_kv_seq_truncate(c, beam[i], cut), KC_OK);
      len[i] = cut;
    }
    if (step % 997 == 996) { /* a fresh batch now and then */
      for (int i = 0; i < K; i++)
        kc_kv_seq_free(c, beam[i]);
      assert_int_equal(kc_kv_free_blocks(c), nblocks);
      for (int i = 0; i < K; i++) {
        beam[i] = seq_new(c);
        assert_int_equal(beam[i], i);
        len[i] = 0;
      }
      frees_ok++;
    }
    /* the data of every beam, and the blocks held = the blocks not free */
    kc_kv_tables(c, beam, K, &tab[0][0], MAXLEN / 4 + 1, NULL);
    memset(held, 0, sizeof held);
    int64_t nheld = 0;
    for (int i = 0; i < K; i++) {
      for (int64_t p = 0; p < len[i]; p++)
        if (!tok_is(c, &small, beam[i], p, hist[i][p]))
          fail_msg("step %d: beam %d position %lld is wrong", step, i, (long long)p);
      for (int k = 0; k <= MAXLEN / 4; k++) {
        int32_t b = tab[i][k];
        if (b < 0) continue;
        assert_true(b < nblocks);
        if (!held[b]) nheld++;
        held[b] = 1;
      }
    }
    assert_int_equal(nheld, nblocks - kc_kv_free_blocks(c));
    assert_ptr_equal(kc_kv_pool(c), pool);
    if (heap_used() != before)
      fail_msg("step %d: heap in use went from %zu to %zu bytes", step, before, heap_used());
  }
#undef NEXT
  assert_true(copies > 1000); /* copy-on-write was exercised */
  assert_int_equal(frees_ok, 10);
  for (int i = 0; i < K; i++)
    kc_kv_seq_free(c, beam[i]);
  assert_int_equal(kc_kv_free_blocks(c), nblocks);
  kc_kv_free(c);
}

static void t_bad_args(void **st) {
  env *e = *st;
  kc_kv_cache *c = NULL;
  kc_kv_shape zero = {2, 0, 3, 4};
  assert_int_equal(kc_kv_new(e->ctx, &zero, 4, 4, &c), KC_ERR_INVALID_ARG);
  assert_null(c);
  assert_non_null(strstr(kc_last_error(e->ctx), "kv_heads 0"));
  assert_int_equal(kc_kv_new(e->ctx, &small, 0, 4, &c), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_kv_new(e->ctx, &small, 4, -1, &c), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_kv_new(e->ctx, NULL, 4, 4, &c), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_kv_new(NULL, &small, 4, 4, &c), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_kv_new(e->ctx, &small, 4, ((int64_t)1 << 29) + 1, &c), KC_ERR_INVALID_ARG);
  /* sizes whose product overflows 64 bits are refused, not wrapped */
  kc_kv_shape huge = {1 << 20, 1 << 20, 1 << 20, 4};
  assert_int_equal(kc_kv_new(e->ctx, &huge, 16, 1, &c), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(e->ctx), "overflows"));
  assert_int_equal(kc_kv_new(e->ctx, &small, INT64_MAX / 2, 1 << 20, &c), KC_ERR_INVALID_ARG);
  assert_null(c);

  c = make(e, &small, 4, 2);
  int32_t a = seq_new(c), out = -5;
  append_tokens(c, &small, a, 3, 0);
  assert_int_equal(kc_kv_seq_append(c, a, -1), KC_ERR_INVALID_ARG);
  assert_string_equal(kc_last_error(e->ctx),
                      "kc_kv_seq_append: sequence 0: -1 new tokens (must be >= 0)");
  assert_int_equal(kc_kv_seq_len(c, a), 3);
  const int32_t bad[] = {-1, 1, 68, 1 << 30};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(kc_kv_seq_append(c, bad[i], 1), KC_ERR_INVALID_ARG);
    assert_non_null(strstr(kc_last_error(e->ctx), "is not a live sequence"));
    assert_int_equal(kc_kv_seq_fork(c, bad[i], &out), KC_ERR_INVALID_ARG);
    assert_int_equal(out, -5);
    assert_int_equal(kc_kv_seq_truncate(c, bad[i], 0), KC_ERR_INVALID_ARG);
    assert_int_equal(kc_kv_seq_len(c, bad[i]), -1);
    assert_null(kc_kv_row(c, bad[i], 0, 0, 0, 0));
    kc_kv_seq_free(c, bad[i]); /* ignored */
  }
  assert_int_equal(kc_kv_free_blocks(c), 1);
  assert_int_equal(kc_kv_seq_fork(c, a, NULL), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_kv_seq_new(c, NULL), KC_ERR_INVALID_ARG);
  /* rows out of range */
  assert_non_null(kc_kv_row(c, a, 1, 1, 1, 2));
  assert_null(kc_kv_row(c, a, 2, 0, 0, 0));
  assert_null(kc_kv_row(c, a, -1, 0, 0, 0));
  assert_null(kc_kv_row(c, a, 0, 2, 0, 0));
  assert_null(kc_kv_row(c, a, 0, -1, 0, 0));
  assert_null(kc_kv_row(c, a, 0, 0, 2, 0));
  assert_null(kc_kv_row(c, a, 0, 0, 0, 3));
  assert_null(kc_kv_row(c, a, 0, 0, 0, -1));
  /* every sequence id in use: 2 * 2 + 64 of them (forks share blocks, so there can be more
   * sequences than blocks) */
  assert_int_equal(kc_kv_max_seqs(c), 68);
  int32_t ids[68];
  ids[0] = a;
  for (int i = 1; i < 68; i++) {
    ids[i] = fork_seq(c, a);
    assert_int_equal(ids[i], i);
  }
  assert_int_equal(kc_kv_seq_fork(c, a, &out), KC_ERR_RUNTIME);
  assert_non_null(strstr(kc_last_error(e->ctx), "all 68 sequence ids"));
  assert_int_equal(kc_kv_seq_new(c, &out), KC_ERR_RUNTIME);
  assert_int_equal(kc_kv_free_blocks(c), 1);
  kc_kv_seq_free(c, ids[40]);
  assert_int_equal(seq_new(c), 40);
  for (int i = 0; i < 68; i++)
    kc_kv_seq_free(c, ids[i]);
  assert_int_equal(kc_kv_free_blocks(c), 2);
  /* NULL caches */
  kc_kv_free(NULL);
  assert_int_equal(kc_kv_seq_len(NULL, 0), -1);
  assert_null(kc_kv_pool(NULL));
  kc_kv_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_bytes_per_token),
      cmocka_unit_test(t_fork_cow),
      cmocka_unit_test(t_free_reuse),
      cmocka_unit_test(t_truncate),
      cmocka_unit_test(t_full),
      cmocka_unit_test(t_contiguous),
      cmocka_unit_test(t_tables_batch),
      cmocka_unit_test(t_churn),
      cmocka_unit_test(t_bad_args),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
