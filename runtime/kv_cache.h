/*
 * runtime/kv_cache.h - the KV-cache memory of decoding (issue 12): one pool of fixed-size blocks
 * that the decode graph reads and writes as its `kc_kv_cache` input, block tables per sequence,
 * reference counts, copy-on-write. Graph-free and LLVM-free: it is part of libkernc and of the
 * runtime archive linked into compiled models (kernc_rt).
 *
 * Layout (ISSUE12_SPEC.md section 1): the pool is f32[NBLK, L, 2, KVH, BS, D] (row-major, any
 * dtype of dtype_size bytes): a block holds BS token slots of every layer, ordered
 * [layer][0 = K, 1 = V][kv_head][slot][head_dim]. Position t of a sequence lives in block
 * table[t / BS], slot t % BS. Paged: BS = 16 by default. Contiguous: the same cache with
 * BS = max_len, so that a sequence of up to max_len tokens is one block written in place.
 *
 * Semantics:
 *   - A sequence of length len holds exactly ceil(len / BS) blocks. kc_kv_seq_append(seq, n)
 *     makes the blocks covering [0, len + n) exist and the ones that will be written,
 *     [len, len + n), be owned by seq alone: a shared partially filled last block is copied first
 *     (whole block, all layers); blocks entirely before len stay shared, since nobody writes
 *     them. Then len += n.
 *   - Fork shares every block of the source (no copy); the first write of either sequence into
 *     the shared last block copies it. For a contiguous cache this is the spec's "fork copies
 *     the block", deferred to the first write, and skipped when the source is freed first (as a
 *     beam-search reorder does: fork the kept beams, free the old ones).
 *   - A request the free blocks cannot satisfy is KC_ERR_RUNTIME ("KV cache full: sequence 3
 *     needs 5 more blocks of 16 tokens, 2 are free") and changes nothing. Nothing in the pool is
 *     ever overwritten that another sequence still reads.
 *   - Nothing stops a sequence of a contiguous cache from growing past BS when a block is free:
 *     it then has two blocks; the table width MAXB the caller passes to kc_kv_tables (and the
 *     kernels' index check) bounds what a step accepts.
 *   - Sequence ids are small integers >= 0, the lowest free one first, reused after free.
 *     At most kc_kv_max_seqs(c) = 2 * nblocks + 64 exist at once (forks share blocks, so there
 *     can be more sequences than blocks; twice covers a beam-search reorder, which holds old and
 *     new beams at once).
 *   - Blocks handed out are not cleared: slots past a sequence's length hold stale but finite
 *     data (the pool starts zeroed); kernels read only positions [0, len).
 *
 * Memory: every allocation happens in kc_kv_new (the pool, 64-byte aligned, and the per-block
 * and per-sequence bookkeeping: O(nblocks) words, no per-sequence table of nblocks entries: a
 * sequence's table is the chain of its blocks' predecessors, see kv_cache.c). Append, fork,
 * free, truncate and tables never allocate; an error message goes to the context (whose
 * per-thread error buffer is made at a thread's first error).
 *
 * Thread safety: one cache is used by one thread at a time (the session serializes its calls);
 * kernels of a run may read and write the pool concurrently with nothing else.
 */
#ifndef KERNC_RUNTIME_KV_CACHE_H
#define KERNC_RUNTIME_KV_CACHE_H

#include "kernc.h"

#include <stdint.h>

typedef struct kc_kv_shape {
  int64_t layers, kv_heads, head_dim, dtype_size;
} kc_kv_shape;

typedef struct kc_kv_cache kc_kv_cache;

/* A cache of nblocks blocks of block_size token slots (contiguous: block_size = max_len), every
 * block free. Errors (KC_ERR_INVALID_ARG for sizes < 1, sizes whose products overflow, nblocks
 * over 2^29; KC_ERR_NOMEM) go to ctx, which must outlive the cache. */
kc_status kc_kv_new(kc_context *ctx, const kc_kv_shape *s, int64_t block_size, int64_t nblocks,
                    kc_kv_cache **out);
/* Free the cache and its pool. NULL is fine. */
void kc_kv_free(kc_kv_cache *c);

/* A new empty sequence (length 0, no blocks); KC_ERR_RUNTIME when every sequence id is in use. */
kc_status kc_kv_seq_new(kc_kv_cache *c, int32_t *seq);
/* A new sequence with src's length and blocks, all shared (no copy, no block taken). */
kc_status kc_kv_seq_fork(kc_kv_cache *c, int32_t src, int32_t *dst);
/* Release seq's blocks (a block returns to the free list when no sequence holds it) and its id.
 * An id that is not a live sequence is ignored. */
void kc_kv_seq_free(kc_kv_cache *c, int32_t seq);
/* seq's length in tokens; -1 when seq is not a live sequence. */
int64_t kc_kv_seq_len(const kc_kv_cache *c, int32_t seq);
/* Blocks for positions [0, len + n) owned by seq alone where [len, len + n) will be written
 * (copy-on-write), else KC_ERR_RUNTIME "KV cache full ..." with nothing changed; the length
 * grows to len + n. n < 0 or an unknown seq: KC_ERR_INVALID_ARG. */
kc_status kc_kv_seq_append(kc_kv_cache *c, int32_t seq, int64_t n);
/* Shrink seq to len tokens (0 <= len <= its length), releasing the blocks past it; the data of
 * positions < len is kept. For beam search and stop sequences. */
kc_status kc_kv_seq_truncate(kc_kv_cache *c, int32_t seq, int64_t len);

/* Block tables of seqs[0..b) into table[b][maxb] (unused entries -1; blocks past maxb are not
 * written), their lengths before this step into past: past[i] is seqs[i]'s length before its
 * latest kc_kv_seq_append, or its length when none came since it was made or truncated (a fork
 * copies its source's). So a step is: append n_i to each sequence, then call this. A row whose
 * id is not a live sequence gets -1 entries and past 0. past may be NULL. */
void kc_kv_tables(const kc_kv_cache *c, const int32_t *seqs, int64_t b, int32_t *table,
                  int64_t maxb, int64_t *past);
/* The pool: the [NBLK, L, 2, KVH, BS, D] tensor of dtype_size elements, 64-byte aligned. */
void *kc_kv_pool(kc_kv_cache *c);
/* L * 2 * KVH * D * dtype_size. */
int64_t kc_kv_bytes_per_token(const kc_kv_cache *c);
int64_t kc_kv_block_size(const kc_kv_cache *c);
int64_t kc_kv_nblocks(const kc_kv_cache *c);
/* Blocks no sequence holds. */
int64_t kc_kv_free_blocks(const kc_kv_cache *c);
/* The most sequences that can exist at once (2 * nblocks + 64). */
int64_t kc_kv_max_seqs(const kc_kv_cache *c);
/* The head_dim elements of K (kv = 0) or V (kv = 1) of head `head`, layer `layer`, position pos
 * of seq (pos < its length); NULL when any is out of range. For tests and hosts: write only
 * positions [past, len) of the latest append, which seq owns alone. O(blocks of seq). */
void *kc_kv_row(kc_kv_cache *c, int32_t seq, int64_t layer, int kv, int64_t head, int64_t pos);

#endif
