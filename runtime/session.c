/*
 * runtime/session.c - decoding sessions (kc_session of kernc.h), graph-free: the plan of a
 * causal decoder's decode step (passes/derive_decode.c: the graph reads and writes a KV cache,
 * positions start at each sequence's past length) run by the one executor, a KV cache
 * (runtime/kv_cache.c, paged or contiguous) holding the sequences, and steps that run several
 * sequences of different lengths at once. The same code serves kc_session_new (the step JIT'd,
 * runtime/session_compile.c) and the NAME_session_* entry points of a compiled model
 * (runtime/session_aot.c): this file is in the runtime archive kernc_rt.
 *
 * A step (kc_session_decode) for entries e_0..e_{n-1} (sequence, new tokens):
 *   1. each sequence grows by its tokens in the cache (kc_kv_seq_append: blocks taken, shared
 *      ones copied before they are written); a full cache undoes the appends already made and
 *      fails the step, naming the sequence;
 *   2. the decode plan runs on B = n rows padded to S = the most new tokens (padding ids 0,
 *      never stored: kc_new_len says how many are real), the block tables, the past lengths;
 *      a model's attention mask inputs get all ones (a sequence has no padding: the cache holds
 *      exactly its tokens, and derive-decode dropped the masks made from these inputs alone);
 *   3. each entry gets the logits of its last new token (or of every new token).
 *
 * Invariants: one thread at a time uses a session (the cache is not locked); the per-step
 * buffers only grow, so steps of the same sizes allocate nothing; the plan's inputs are the
 * model's token ids, its attention masks (at most KC_SESSION_MASKS, [B, S] integers or bool),
 * then kc_kv_cache, kc_block_table, kc_past_len, kc_new_len (passed by position), and its
 * output 0 the logits [B, S, vocab] (kc_session_open checks all of it).
 */
#include "runtime/session.h"

#include "ir/internal.h"
#include "runtime/kv_cache.h"

#include <stdlib.h>
#include <string.h>

enum { KC_SESSION_MASKS = 2 };

struct kc_session {
  kc_context *ctx;
  kc_plan_decode d;
  kc_exec *x; /* runs d.plan */
  void (*release)(void *owner);
  void *owner;
  kc_kv_cache *kv;
  kc_dtype ids_dtype;
  int nmask; /* attention mask inputs after the ids */
  kc_dtype mask_dtype[KC_SESSION_MASKS];
  int64_t pool_dims[6];
  /* per-step buffers, grown to the largest step */
  int64_t cap_b, cap_bs, cap_bt;
  int32_t *seqs, *table;
  int64_t *past, *lens, *before;
  void *ids;
  void *mask[KC_SESSION_MASKS]; /* all ones, cap_bs elements */
};

/* ---- creation ----------------------------------------------------------------------------- */

static bool mask_dtype_ok(kc_dtype t) {
  return t == KC_I64 || t == KC_I32 || t == KC_BOOL || t == KC_U8 || t == KC_I8;
}

/* n ones of dtype t (one of mask_dtype_ok's) at p. */
static void fill_ones(void *p, kc_dtype t, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    switch (t) {
    case KC_I64: ((int64_t *)p)[i] = 1; break;
    case KC_I32: ((int32_t *)p)[i] = 1; break;
    default: ((uint8_t *)p)[i] = 1; break;
    }
}

/* The plan takes what a step passes and returns logits: its inputs and output 0. */
static kc_status check_plan(kc_context *ctx, const kc_plan_decode *d) {
  static const char *const names[4] = {"kc_kv_cache", "kc_block_table", "kc_past_len",
                                       "kc_new_len"};
  static const kc_dtype dtypes[4] = {KC_F32, KC_I32, KC_I64, KC_I64};
  static const int ranks[4] = {6, 2, 1, 1};
  const kc_plan *p = d->plan;
  if (!p || p->ninputs < 5 || p->ninputs > 5 + KC_SESSION_MASKS || p->noutputs < 1)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                     "session: the decode step must take the token ids, at most %d attention "
                     "masks and the 4 cache inputs, and return logits",
                     KC_SESSION_MASKS);
  int nmask = p->ninputs - 5;
  const kc_plan_value *ids = &p->values[p->inputs[0].value];
  if ((ids->dtype != KC_I64 && ids->dtype != KC_I32) || ids->rank != 2)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "session: input '%s' must be token ids [B, S]",
                     p->inputs[0].name);
  for (int i = 0; i < nmask; i++) {
    const kc_plan_value *m = &p->values[p->inputs[1 + i].value];
    if (m->rank != 2 || !mask_dtype_ok((kc_dtype)m->dtype))
      return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                       "session: input '%s' must be an attention mask [B, S] of integers or bool",
                       p->inputs[1 + i].name);
  }
  for (int i = 0; i < 4; i++) {
    const kc_plan_io *io = &p->inputs[1 + nmask + i];
    const kc_plan_value *v = &p->values[io->value];
    if (strcmp(io->name, names[i]) != 0 || v->dtype != dtypes[i] || v->rank != ranks[i])
      return kc_errorf(ctx, KC_ERR_INTERNAL, "session: decode step input %d is '%s', not %s",
                       1 + nmask + i, io->name, names[i]);
  }
  const kc_plan_value *logits = &p->values[p->outputs[0].value];
  if (logits->dtype != KC_F32 || logits->rank != 3 || d->vocab <= 0)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                     "session: the model's output 0 must be f32 logits [B, S, vocab]");
  if (d->layers <= 0 || d->kv_heads <= 0 || d->head_dim <= 0 || d->dtype_size != 4)
    return kc_errorf(ctx, KC_ERR_INTERNAL, "session: the cache's shape is not known");
  return KC_OK;
}

static kc_status make_cache(kc_session *s, const kc_session_options *o) {
  kc_kv_shape shape = {.layers = s->d.layers,
                       .kv_heads = s->d.kv_heads,
                       .head_dim = s->d.head_dim,
                       .dtype_size = s->d.dtype_size};
  int64_t bs, nblocks;
  if (o->paged) {
    bs = o->block_size > 0 ? o->block_size : 16;
    int64_t tokens = o->max_tokens > 0 ? o->max_tokens : 4096;
    nblocks = tokens / bs + (tokens % bs != 0);
  } else {
    bs = o->max_len > 0 ? o->max_len : 1024;
    nblocks = o->max_seqs > 0 ? o->max_seqs : 1;
  }
  return kc_kv_new(s->ctx, &shape, bs, nblocks, &s->kv);
}

kc_status kc_session_open(kc_context *ctx, const kc_plan_decode *d, kc_exec *x,
                          void (*release)(void *owner), void *owner, const kc_session_options *o,
                          kc_session **out) {
  *out = NULL;
  kc_session_options none = {0};
  if (!o) o = &none;
  kc_status st = check_plan(ctx, d);
  if (st != KC_OK) return st;
  kc_session *s = calloc(1, sizeof *s);
  if (!s) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory creating a session");
  s->ctx = ctx;
  s->d = *d;
  s->x = x;
  s->ids_dtype = (kc_dtype)d->plan->values[d->plan->inputs[0].value].dtype;
  s->nmask = d->plan->ninputs - 5;
  for (int i = 0; i < s->nmask; i++)
    s->mask_dtype[i] = (kc_dtype)d->plan->values[d->plan->inputs[1 + i].value].dtype;
  if ((st = make_cache(s, o)) != KC_OK) {
    free(s);
    return st;
  }
  s->release = release;
  s->owner = owner;
  s->pool_dims[0] = kc_kv_nblocks(s->kv);
  s->pool_dims[1] = d->layers;
  s->pool_dims[2] = 2;
  s->pool_dims[3] = d->kv_heads;
  s->pool_dims[4] = kc_kv_block_size(s->kv);
  s->pool_dims[5] = d->head_dim;
  *out = s;
  return KC_OK;
}

void kc_session_free(kc_session *s) {
  if (!s) return;
  kc_kv_free(s->kv);
  if (s->release) s->release(s->owner);
  free(s->seqs);
  free(s->table);
  free(s->past);
  free(s->lens);
  free(s->before);
  free(s->ids);
  for (int i = 0; i < KC_SESSION_MASKS; i++)
    free(s->mask[i]);
  free(s);
}

/* ---- sequences ---------------------------------------------------------------------------- */

kc_status kc_session_seq_new(kc_session *s, int32_t *seq) {
  if (s) kc_clear_error(s->ctx);
  return s ? kc_kv_seq_new(s->kv, seq) : KC_ERR_INVALID_ARG;
}

kc_status kc_session_seq_fork(kc_session *s, int32_t src, int32_t *dst) {
  if (s) kc_clear_error(s->ctx);
  return s ? kc_kv_seq_fork(s->kv, src, dst) : KC_ERR_INVALID_ARG;
}

void kc_session_seq_free(kc_session *s, int32_t seq) {
  if (s) kc_kv_seq_free(s->kv, seq);
}

int64_t kc_session_seq_len(const kc_session *s, int32_t seq) {
  return s ? kc_kv_seq_len(s->kv, seq) : -1;
}

kc_status kc_session_seq_truncate(kc_session *s, int32_t seq, int64_t len) {
  if (s) kc_clear_error(s->ctx);
  return s ? kc_kv_seq_truncate(s->kv, seq, len) : KC_ERR_INVALID_ARG;
}

int64_t kc_session_vocab(const kc_session *s) { return s ? s->d.vocab : 0; }

kc_context *kc_session_context(const kc_session *s) { return s->ctx; }

void *kc_session_owner(const kc_session *s, void (*release)(void *owner)) {
  return s && s->release == release ? s->owner : NULL;
}

int64_t kc_session_cache_bytes_per_token(const kc_session *s) {
  return s ? kc_kv_bytes_per_token(s->kv) : 0;
}

/* ---- a step ------------------------------------------------------------------------------- */

/* The per-step buffers for b rows of s tokens and tables of bt entries. */
static kc_status reserve(kc_session *s, int64_t b, int64_t bs, int64_t bt) {
  if (b > s->cap_b) {
    int32_t *seqs = realloc(s->seqs, (size_t)b * sizeof *seqs);
    int64_t *past = seqs ? realloc(s->past, (size_t)b * sizeof *past) : NULL;
    int64_t *lens = past ? realloc(s->lens, (size_t)b * sizeof *lens) : NULL;
    int64_t *before = lens ? realloc(s->before, (size_t)b * sizeof *before) : NULL;
    if (seqs) s->seqs = seqs;
    if (past) s->past = past;
    if (lens) s->lens = lens;
    if (before) s->before = before;
    if (!before) return kc_errorf(s->ctx, KC_ERR_NOMEM, "out of memory for a decode step");
    s->cap_b = b;
  }
  if (bs > s->cap_bs) {
    void *ids = realloc(s->ids, (size_t)bs * kc_dtype_size(s->ids_dtype));
    if (!ids) return kc_errorf(s->ctx, KC_ERR_NOMEM, "out of memory for a decode step");
    s->ids = ids;
    for (int i = 0; i < s->nmask; i++) {
      void *m = realloc(s->mask[i], (size_t)bs * kc_dtype_size(s->mask_dtype[i]));
      if (!m) return kc_errorf(s->ctx, KC_ERR_NOMEM, "out of memory for a decode step");
      s->mask[i] = m;
      fill_ones(m, s->mask_dtype[i], bs);
    }
    s->cap_bs = bs;
  }
  if (bt > s->cap_bt) {
    int32_t *table = realloc(s->table, (size_t)bt * sizeof *table);
    if (!table) return kc_errorf(s->ctx, KC_ERR_NOMEM, "out of memory for a decode step");
    s->table = table;
    s->cap_bt = bt;
  }
  return KC_OK;
}

/* Undo the appends of entries [0, k). */
static void undo(kc_session *s, const kc_decode_entry *e, int32_t k) {
  for (int32_t i = 0; i < k; i++)
    kc_kv_seq_truncate(s->kv, e[i].seq, s->before[i]);
}

kc_status kc_session_decode(kc_session *s, const kc_decode_entry *e, int32_t n) {
  if (!s) return KC_ERR_INVALID_ARG;
  kc_clear_error(s->ctx);
  if (n <= 0 || !e) return kc_errorf(s->ctx, KC_ERR_INVALID_ARG, "kc_session_decode: no entries");
  int64_t S = 0;
  for (int32_t i = 0; i < n; i++) {
    if (e[i].ntokens <= 0 || !e[i].tokens)
      return kc_errorf(s->ctx, KC_ERR_INVALID_ARG, "decode entry %d: no tokens", i);
    if (kc_kv_seq_len(s->kv, e[i].seq) < 0)
      return kc_errorf(s->ctx, KC_ERR_INVALID_ARG, "decode entry %d: sequence %d does not exist", i,
                       e[i].seq);
    for (int32_t j = 0; j < i; j++)
      if (e[j].seq == e[i].seq)
        return kc_errorf(s->ctx, KC_ERR_INVALID_ARG, "sequence %d is in the step twice", e[i].seq);
    if (e[i].ntokens > S) S = e[i].ntokens;
  }
  kc_status st = reserve(s, n, (int64_t)n * S, 0);
  if (st != KC_OK) return st;
  for (int32_t i = 0; i < n; i++) {
    s->before[i] = kc_kv_seq_len(s->kv, e[i].seq);
    st = kc_kv_seq_append(s->kv, e[i].seq, e[i].ntokens);
    if (st != KC_OK) {
      undo(s, e, i);
      return st;
    }
  }
  int64_t bs = kc_kv_block_size(s->kv), maxb = 1;
  for (int32_t i = 0; i < n; i++) {
    int64_t need = (s->before[i] + e[i].ntokens + bs - 1) / bs;
    if (need > maxb) maxb = need;
    s->seqs[i] = e[i].seq;
    s->lens[i] = e[i].ntokens;
  }
  if ((st = reserve(s, n, (int64_t)n * S, (int64_t)n * maxb)) != KC_OK) {
    undo(s, e, n);
    return st;
  }
  kc_kv_tables(s->kv, s->seqs, n, s->table, maxb, s->past);
  for (int32_t i = 0; i < n; i++)
    for (int64_t j = 0; j < S; j++) {
      int64_t tok = j < e[i].ntokens ? e[i].tokens[j] : 0;
      if (s->ids_dtype == KC_I64)
        ((int64_t *)s->ids)[i * S + j] = tok;
      else
        ((int32_t *)s->ids)[i * S + j] = (int32_t)tok;
    }
  /* by position: the plan's inputs are in this order (check_plan) */
  kc_tensor_desc in[5 + KC_SESSION_MASKS] = {
      {.dtype = s->ids_dtype, .rank = 2, .dims = {n, S}, .data = s->ids}};
  for (int i = 0; i < s->nmask; i++)
    in[1 + i] =
        (kc_tensor_desc){.dtype = s->mask_dtype[i], .rank = 2, .dims = {n, S}, .data = s->mask[i]};
  kc_tensor_desc *c = in + 1 + s->nmask;
  c[0] = (kc_tensor_desc){.dtype = KC_F32, .rank = 6, .data = kc_kv_pool(s->kv)};
  c[1] = (kc_tensor_desc){.dtype = KC_I32, .rank = 2, .dims = {n, maxb}, .data = s->table};
  c[2] = (kc_tensor_desc){.dtype = KC_I64, .rank = 1, .dims = {n}, .data = s->past};
  c[3] = (kc_tensor_desc){.dtype = KC_I64, .rank = 1, .dims = {n}, .data = s->lens};
  memcpy(c[0].dims, s->pool_dims, sizeof s->pool_dims);
  kc_tensor_desc out;
  st = kc_exec_run(s->x, in, 5 + s->nmask, &out, 1);
  if (st != KC_OK) {
    undo(s, e, n);
    return st;
  }
  const float *logits = out.data;
  for (int32_t i = 0; i < n; i++) {
    if (!e[i].logits) continue;
    int64_t first = e[i].all ? 0 : e[i].ntokens - 1;
    size_t rows = (size_t)(e[i].ntokens - first);
    memcpy(e[i].logits, logits + ((size_t)i * S + first) * s->d.vocab,
           rows * (size_t)s->d.vocab * sizeof *logits);
  }
  return KC_OK;
}
