/*
 * runtime/kv_cache.c - the KV-cache memory of decoding (runtime/kv_cache.h): a pool of blocks,
 * a free list, reference counts, block tables, copy-on-write.
 *
 * A sequence's block table is not stored as an array: it is the chain tail -> prev[tail] -> ...
 * -> -1 of its blocks, last first (a persistent list). This holds because sequences only ever
 * share prefixes: fork shares the whole chain, and a sequence only changes its chain at the end
 * (append replaces a shared last block by a copy and adds fresh blocks after it; truncate drops
 * blocks from the end), so two sequences holding the same block hold the same blocks before it.
 * Memory is then O(nblocks + sequences) where tables of ceil(pool tokens / BS) entries per
 * sequence would be O(nblocks * sequences).
 *
 * Invariants:
 *   - refs[b] = the sequences whose tail is b + the blocks whose prev is b; a block is on the
 *     free list iff refs[b] == 0. Hence a sequence's last block is held by it alone iff its
 *     refs is 1, and every block of a chain is shared iff some block after it in the chain is.
 *   - A live sequence of length len has exactly ceil(len / bs) blocks in its chain.
 *   - No id below seq_hint is free.
 *   - Append, fork, free, truncate and tables allocate nothing and, when they fail, change
 *     nothing (every check comes before the first change).
 */
#include "runtime/kv_cache.h"

#include "ir/internal.h"
#include "runtime/plan_core.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* nblocks at most 2^29, so block ids and the 2 * nblocks + 64 sequence ids fit an int32. */
#define KV_MAX_BLOCKS ((int64_t)1 << 29)
#define KV_ALIGN 64

struct kc_kv_cache {
  kc_context *ctx;
  kc_kv_shape s;
  int64_t bs, nblocks, bytes_per_token, block_bytes, max_seqs;
  unsigned char *raw, *pool; /* pool: raw aligned up to KV_ALIGN */
  /* per block */
  int32_t *refs, *prev;
  int32_t *free_list; /* a stack: the top is free_list[nfree - 1] */
  int64_t nfree;
  /* per sequence id */
  int32_t *tail;       /* last block, -1 when empty */
  int64_t *len, *base; /* base: the length before the latest append (kc_kv_tables' past) */
  unsigned char *live;
  int32_t seq_hint;
};

static int64_t ceil_div(int64_t a, int64_t b) { return a > 0 ? (a - 1) / b + 1 : 0; }

static bool seq_ok(const kc_kv_cache *c, int32_t seq) {
  return c && seq >= 0 && seq < c->max_seqs && c->live[seq];
}

static unsigned char *block_data(const kc_kv_cache *c, int32_t b) {
  return c->pool + (size_t)b * (size_t)c->block_bytes;
}

static int32_t take_block(kc_kv_cache *c) {
  KC_ASSERT(c->nfree > 0);
  int32_t b = c->free_list[--c->nfree];
  KC_ASSERT(c->refs[b] == 0);
  return b;
}

/* Drop one reference to b; a block nobody holds returns to the free list and drops its own
 * reference to its predecessor. */
static void release(kc_kv_cache *c, int32_t b) {
  while (b >= 0) {
    KC_ASSERT(c->refs[b] > 0);
    if (--c->refs[b] > 0) return;
    int32_t p = c->prev[b];
    c->prev[b] = -1;
    c->free_list[c->nfree++] = b;
    b = p;
  }
}

/* The block at index k (< the chain's length nblk) of the chain ending at tail. */
static int32_t chain_at(const kc_kv_cache *c, int32_t tail, int64_t nblk, int64_t k) {
  int32_t b = tail;
  for (int64_t i = nblk - 1; i > k; i--)
    b = c->prev[b];
  return b;
}

void kc_kv_free(kc_kv_cache *c) {
  if (!c) return;
  free(c->raw);
  free(c->refs);
  free(c->prev);
  free(c->free_list);
  free(c->tail);
  free(c->len);
  free(c->base);
  free(c->live);
  free(c);
}

kc_status kc_kv_new(kc_context *ctx, const kc_kv_shape *s, int64_t block_size, int64_t nblocks,
                    kc_kv_cache **out) {
  if (out) *out = NULL;
  if (!ctx) return KC_ERR_INVALID_ARG;
  if (!s || !out) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_kv_new: NULL shape or result");
  if (s->layers < 1 || s->kv_heads < 1 || s->head_dim < 1 || s->dtype_size < 1 || block_size < 1 ||
      nblocks < 1)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "kc_kv_new: layers %lld, kv_heads %lld, head_dim %lld, dtype size %lld, "
                     "block size %lld and blocks %lld must all be at least 1",
                     (long long)s->layers, (long long)s->kv_heads, (long long)s->head_dim,
                     (long long)s->dtype_size, (long long)block_size, (long long)nblocks);
  if (nblocks > KV_MAX_BLOCKS)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_kv_new: %lld blocks, at most %lld",
                     (long long)nblocks, (long long)KV_MAX_BLOCKS);
  int64_t bpt, block_bytes, pool_bytes;
  if (__builtin_mul_overflow(s->layers, 2, &bpt) ||
      __builtin_mul_overflow(bpt, s->kv_heads, &bpt) ||
      __builtin_mul_overflow(bpt, s->head_dim, &bpt) ||
      __builtin_mul_overflow(bpt, s->dtype_size, &bpt) ||
      __builtin_mul_overflow(bpt, block_size, &block_bytes) ||
      __builtin_mul_overflow(block_bytes, nblocks, &pool_bytes) ||
      pool_bytes > INT64_MAX - KV_ALIGN || (uint64_t)pool_bytes > (uint64_t)SIZE_MAX - KV_ALIGN)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                     "kc_kv_new: a pool of %lld blocks of %lld tokens of %lld layers x 2 x %lld "
                     "kv heads x %lld x %lld bytes overflows 64-bit sizes",
                     (long long)nblocks, (long long)block_size, (long long)s->layers,
                     (long long)s->kv_heads, (long long)s->head_dim, (long long)s->dtype_size);

  /* calloc of a pool larger than the machine has left succeeds (overcommit) and the process is
   * killed when decoding touches it: refuse it now, naming both sizes */
  uint64_t avail = kc_plan_mem_available(ctx->opts.memory_limit);
  if ((uint64_t)pool_bytes > avail) {
    char need[64], have[64];
    return kc_errorf(ctx, KC_ERR_NOMEM,
                     "kc_kv_new: a KV cache of %s is more than the %s available (%s)",
                     kc_plan_fmt_bytes(need, sizeof need, (uint64_t)pool_bytes),
                     kc_plan_fmt_bytes(have, sizeof have, avail),
                     ctx->opts.memory_limit && avail == ctx->opts.memory_limit
                         ? "kc_options.memory_limit"
                         : "MemAvailable + SwapFree, cgroup memory.max");
  }
  kc_kv_cache *c = calloc(1, sizeof *c);
  if (!c) return kc_errorf(ctx, KC_ERR_NOMEM, "kc_kv_new: out of memory");
  c->ctx = ctx;
  c->s = *s;
  c->bs = block_size;
  c->nblocks = nblocks;
  c->bytes_per_token = bpt;
  c->block_bytes = block_bytes;
  c->max_seqs = 2 * nblocks + 64;
  size_t nb = (size_t)nblocks, ns = (size_t)c->max_seqs;
  /* calloc: large pools come as fresh zero pages, touched only when a block is first used */
  c->raw = calloc(1, (size_t)pool_bytes + KV_ALIGN);
  c->refs = calloc(nb, sizeof *c->refs);
  c->prev = malloc(nb * sizeof *c->prev);
  c->free_list = malloc(nb * sizeof *c->free_list);
  c->tail = malloc(ns * sizeof *c->tail);
  c->len = calloc(ns, sizeof *c->len);
  c->base = calloc(ns, sizeof *c->base);
  c->live = calloc(ns, 1);
  if (!c->raw || !c->refs || !c->prev || !c->free_list || !c->tail || !c->len || !c->base ||
      !c->live) {
    kc_kv_free(c);
    return kc_errorf(ctx, KC_ERR_NOMEM, "kc_kv_new: out of memory for a KV cache of %lld bytes",
                     (long long)pool_bytes);
  }
  c->pool = c->raw + (KV_ALIGN - (uintptr_t)c->raw % KV_ALIGN) % KV_ALIGN;
  /* pushed in reverse, so blocks are handed out 0, 1, 2, ... (predictable tables in tests) */
  for (int64_t i = 0; i < nblocks; i++) {
    c->prev[i] = -1;
    c->free_list[i] = (int32_t)(nblocks - 1 - i);
  }
  c->nfree = nblocks;
  for (int64_t i = 0; i < c->max_seqs; i++)
    c->tail[i] = -1;
  *out = c;
  return KC_OK;
}

static kc_status new_id(kc_kv_cache *c, const char *fn, int32_t *seq) {
  int32_t id = c->seq_hint;
  while (id < c->max_seqs && c->live[id])
    id++;
  if (id >= c->max_seqs)
    return kc_errorf(c->ctx, KC_ERR_RUNTIME, "%s: all %lld sequence ids of the KV cache are in use",
                     fn, (long long)c->max_seqs);
  c->seq_hint = id + 1;
  c->live[id] = 1;
  *seq = id;
  return KC_OK;
}

kc_status kc_kv_seq_new(kc_kv_cache *c, int32_t *seq) {
  if (!c) return KC_ERR_INVALID_ARG;
  if (!seq) return kc_errorf(c->ctx, KC_ERR_INVALID_ARG, "kc_kv_seq_new: NULL result");
  kc_status st = new_id(c, "kc_kv_seq_new", seq);
  if (st != KC_OK) return st;
  c->tail[*seq] = -1;
  c->len[*seq] = c->base[*seq] = 0;
  return KC_OK;
}

kc_status kc_kv_seq_fork(kc_kv_cache *c, int32_t src, int32_t *dst) {
  if (!c) return KC_ERR_INVALID_ARG;
  if (!dst) return kc_errorf(c->ctx, KC_ERR_INVALID_ARG, "kc_kv_seq_fork: NULL result");
  if (!seq_ok(c, src))
    return kc_errorf(c->ctx, KC_ERR_INVALID_ARG,
                     "kc_kv_seq_fork: %d is not a live sequence of the KV cache", (int)src);
  int32_t d = -1;
  kc_status st = new_id(c, "kc_kv_seq_fork", &d);
  if (st != KC_OK) return st;
  c->tail[d] = c->tail[src];
  if (c->tail[d] >= 0) c->refs[c->tail[d]]++;
  c->len[d] = c->len[src];
  c->base[d] = c->base[src];
  *dst = d;
  return KC_OK;
}

void kc_kv_seq_free(kc_kv_cache *c, int32_t seq) {
  if (!seq_ok(c, seq)) return;
  release(c, c->tail[seq]);
  c->tail[seq] = -1;
  c->len[seq] = c->base[seq] = 0;
  c->live[seq] = 0;
  if (seq < c->seq_hint) c->seq_hint = seq;
}

int64_t kc_kv_seq_len(const kc_kv_cache *c, int32_t seq) {
  return seq_ok(c, seq) ? c->len[seq] : -1;
}

kc_status kc_kv_seq_append(kc_kv_cache *c, int32_t seq, int64_t n) {
  if (!c) return KC_ERR_INVALID_ARG;
  if (!seq_ok(c, seq))
    return kc_errorf(c->ctx, KC_ERR_INVALID_ARG,
                     "kc_kv_seq_append: %d is not a live sequence of the KV cache", (int)seq);
  if (n < 0)
    return kc_errorf(c->ctx, KC_ERR_INVALID_ARG,
                     "kc_kv_seq_append: sequence %d: %lld new tokens (must be >= 0)", (int)seq,
                     (long long)n);
  int64_t len = c->len[seq], nblk = ceil_div(len, c->bs);
  int64_t room = nblk * c->bs - len; /* free slots of the last block */
  /* only the last block can be partly filled, so it is the one block before len to be written;
   * n == 0 writes nothing and copies nothing */
  int64_t cow = n > 0 && room > 0 && c->refs[c->tail[seq]] > 1;
  int64_t fresh = n > room ? ceil_div(n - room, c->bs) : 0; /* no len + n: it may overflow */
  int64_t need = cow + fresh;
  if (need > c->nfree)
    return kc_errorf(c->ctx, KC_ERR_RUNTIME,
                     "KV cache full: sequence %d needs %lld more blocks of %lld tokens, %lld are "
                     "free",
                     (int)seq, (long long)need, (long long)c->bs, (long long)c->nfree);
  if (cow) {
    int32_t t = c->tail[seq], b = take_block(c);
    memcpy(block_data(c, b), block_data(c, t), (size_t)c->block_bytes);
    c->prev[b] = c->prev[t];
    if (c->prev[b] >= 0) c->refs[c->prev[b]]++;
    c->refs[b] = 1;
    c->refs[t]--; /* was > 1: t stays held by the sequences it is shared with */
    c->tail[seq] = b;
  }
  for (int64_t i = 0; i < fresh; i++) {
    /* the sequence's reference moves from its old last block to b, which refers to it as prev:
     * the old block's count does not change */
    int32_t b = take_block(c);
    c->prev[b] = c->tail[seq];
    c->refs[b] = 1;
    c->tail[seq] = b;
  }
  c->base[seq] = len;
  c->len[seq] = len + n; /* <= nblocks * bs: the blocks exist */
  return KC_OK;
}

kc_status kc_kv_seq_truncate(kc_kv_cache *c, int32_t seq, int64_t len) {
  if (!c) return KC_ERR_INVALID_ARG;
  if (!seq_ok(c, seq))
    return kc_errorf(c->ctx, KC_ERR_INVALID_ARG,
                     "kc_kv_seq_truncate: %d is not a live sequence of the KV cache", (int)seq);
  if (len < 0 || len > c->len[seq])
    return kc_errorf(c->ctx, KC_ERR_INVALID_ARG,
                     "kc_kv_seq_truncate: sequence %d has %lld tokens, cannot truncate to %lld",
                     (int)seq, (long long)c->len[seq], (long long)len);
  int64_t nblk = ceil_div(c->len[seq], c->bs), keep = ceil_div(len, c->bs);
  if (keep < nblk) {
    int32_t old = c->tail[seq], nt = keep > 0 ? chain_at(c, old, nblk, keep - 1) : -1;
    /* hold the new last block before dropping the old chain, which releases down to it */
    if (nt >= 0) c->refs[nt]++;
    release(c, old);
    c->tail[seq] = nt;
  }
  c->len[seq] = c->base[seq] = len;
  return KC_OK;
}

void kc_kv_tables(const kc_kv_cache *c, const int32_t *seqs, int64_t b, int32_t *table,
                  int64_t maxb, int64_t *past) {
  if (!c || !seqs || b <= 0) return;
  if (maxb < 0) maxb = 0;
  for (int64_t i = 0; i < b; i++) {
    int32_t *row = table ? table + i * maxb : NULL;
    for (int64_t k = 0; row && k < maxb; k++)
      row[k] = -1;
    int32_t seq = seqs[i];
    if (!seq_ok(c, seq)) {
      if (past) past[i] = 0;
      continue;
    }
    int32_t blk = c->tail[seq];
    for (int64_t k = ceil_div(c->len[seq], c->bs) - 1; k >= 0; k--) {
      KC_ASSERT(blk >= 0);
      if (row && k < maxb) row[k] = blk;
      blk = c->prev[blk];
    }
    KC_ASSERT(blk == -1);
    if (past) past[i] = c->base[seq];
  }
}

void *kc_kv_pool(kc_kv_cache *c) { return c ? c->pool : NULL; }
int64_t kc_kv_bytes_per_token(const kc_kv_cache *c) { return c ? c->bytes_per_token : 0; }
int64_t kc_kv_block_size(const kc_kv_cache *c) { return c ? c->bs : 0; }
int64_t kc_kv_nblocks(const kc_kv_cache *c) { return c ? c->nblocks : 0; }
int64_t kc_kv_free_blocks(const kc_kv_cache *c) { return c ? c->nfree : 0; }
int64_t kc_kv_max_seqs(const kc_kv_cache *c) { return c ? c->max_seqs : 0; }

void *kc_kv_row(kc_kv_cache *c, int32_t seq, int64_t layer, int kv, int64_t head, int64_t pos) {
  if (!seq_ok(c, seq) || layer < 0 || layer >= c->s.layers || kv < 0 || kv > 1 || head < 0 ||
      head >= c->s.kv_heads || pos < 0 || pos >= c->len[seq])
    return NULL;
  int64_t nblk = ceil_div(c->len[seq], c->bs);
  int32_t blk = chain_at(c, c->tail[seq], nblk, pos / c->bs);
  /* [layer][kv][head][slot][d]: every index is below its bound, so no product overflows the
   * block size checked in kc_kv_new */
  int64_t row = ((layer * 2 + kv) * c->s.kv_heads + head) * c->bs + pos % c->bs;
  return block_data(c, blk) + (size_t)row * (size_t)(c->s.head_dim * c->s.dtype_size);
}
