/*
 * codegen/cpu/kv_cache.c - kc_lower_kv_store and kc_lower_attention_cache: the KV-cache ops of
 * decoding (ir/ops.def; the layout of runtime/kv_cache.h: a pool cache [NBLK, L, 2, KVH, BS, D],
 * token t of batch row b in block table[b, t / BS] slot t % BS, so layer `layer`, K (kv 0) or V
 * (kv 1), kv head h of that token start at element
 * ((((blk * L + layer) * 2 + kv) * KVH + h) * BS + slot) * D).
 *
 * kv_store: a unit per (row b, token s); tokens s >= lens[b] (padding) write nothing. Token s goes
 * to position past[b] + s, its key rotated there first when cos/sin are given (as the fused
 * attention rotates new keys; the position is clamped into the caches' rows, as there).
 *
 * attention_cache: the attention core (attention_core.h) over the row's cache blocks: one key
 * range per block (or the part of a block a tile or chunk covers). Query row i of batch row b
 * sees keys j <= past[b] + min(i, lens[b] - 1): causal for i < lens[b], and a padding row sees
 * the row's last written key and nothing later. lens is clamped into [0, S].
 *   - prefill (S > kc_att_dec_rows): the slot layout, units (b, kv head, W query slots), as the
 *     fused attention;
 *   - decoding (S <= kc_att_dec_rows: one row, or a few where the slot layout would leave lanes
 *     idle): the decode layout, units (b, kv head, key chunk), each reading its keys and values
 *     once for every query of the kv head's group (GQA) and rows.
 *   With S symbolic both are emitted and the kernel (and its units function) picks by S.
 *   The additive mask's last dim covers the keys [0, T_mask); a key at or past T_mask (when
 *   T_mask > 1) is masked out rather than read.
 *
 * Split keys (flash-decoding, S = 1): a step with few (row, kv head) pairs would leave threads
 * idle on a long cache, so each row's keys are cut into chunks the units share out. The chunk
 * count C comes from the dims alone (the units function has nothing else): enough for
 * SPLIT_TARGET units, at most SPLIT_MAX_CHUNKS and what the table can hold in chunks of
 * SPLIT_MIN_KEYS, and within the shared scratch's slots. A row with n keys then aims at
 * want = min(max(n / SPLIT_MIN_KEYS, 1), C) chunks and takes nch = ceil(n / Lc) chunks of
 * Lc = roundup(ceil(n / want), W) keys (the last shorter; units past the row's chunks do
 * nothing): a function of n and C, never of the thread count, so y does not depend on it. With one
 * chunk the unit writes y. With several, each unit saves its partial (running max, sum,
 * unnormalized output per query) to its slot of the launch's shared scratch (emit.h), then adds 1
 * to the (row, kv head) counter there with an acq_rel atomic: the unit that sees nch - 1 has every
 * other partial visible and merges them in chunk order (attention_decode.c), so the arithmetic is
 * the same whichever unit is last. The executor zeroes the counters before each launch
 * (shared_zero); the kernel ABI's units have no barrier, and this needs none. Shared scratch
 * layout: i32 counters [slots] padded to 64 bytes, then partials
 * [slots][kc_att_dec_partial_floats], slot (b * kvh + hk) * C + chunk. Cache blocks of a paged
 * layout (a head's half of a block up to PREFETCH_BYTES) are prefetched one block ahead, as the
 * hardware prefetcher stops at the end of a page.
 *
 * Index checks (codegen/cpu/emit.h's contract, check_in = the table, bound = the cache's NBLK):
 *   - a table entry outside [0, NBLK) that a unit needs reports its flat position b * MAXB + k;
 *   - a position whose block index is past the table (t / BS >= MAXB), or negative (past[b] < 0
 *     in kv_store), or any position when the blocks are empty (BS = 0), reports the row's last
 *     entry b * MAXB + MAXB - 1 (position 0 when MAXB is 0, an empty table that the runtime
 *     reads as zero bytes): the message then names the row and the table's last entry, which is
 *     the entry the row would have needed to go past.
 * Nothing is addressed with an index that failed its check; the kernel returns at once (a unit
 * of split keys then never counts itself, so nobody merges that row: the run fails anyway).
 */
#include "attention_core.h"

#include <math.h>

/* kv_store inputs */
enum { CACHE, KS, VS, TABLE, PAST, LENS, KS_COS, KS_SIN };
/* attention_cache inputs */
enum { Q, AC_CACHE, AC_TABLE, AC_PAST, AC_LENS, MASK, COS, SIN };

static bool present(const kc_node *n, uint32_t i) { return n->nin > i && n->in[i].id; }

/* The cache geometry and the per-row operands, as kernel values. */
typedef struct cache {
  LLVMValueRef data, table, past, lens; /* buffers */
  LLVMValueRef nblk, L, BS, maxb, layer;
  LLVMValueRef empty; /* i1: the cache's BS is 0 */
  int64_t kvh, D;
} cache;

static void cache_open(kc_cpu_emit *e, cache *c, uint32_t ci, uint32_t ti, uint32_t pi, uint32_t li,
                       bool out) {
  kc_ir *ir = e->ir;
  c->data = out ? kc_emit_out_ptr(e, 0) : kc_emit_in_ptr(e, ci);
  c->table = kc_emit_in_ptr(e, ti);
  c->past = kc_emit_in_ptr(e, pi);
  c->lens = kc_emit_in_ptr(e, li);
  c->nblk = kc_emit_dim(e, e->p_dims, false, ci, 0);
  c->L = kc_emit_dim(e, e->p_dims, false, ci, 1);
  /* an empty block (BS 0) holds no token: every position is outside the table (and the
   * divisions by BS see 1) */
  LLVMValueRef bs = kc_emit_dim(e, e->p_dims, false, ci, 4);
  c->empty = LLVMBuildICmp(ir->b, LLVMIntSLE, bs, kc_ir_i64(ir, 0), "");
  c->BS = LLVMBuildSelect(ir->b, c->empty, kc_ir_i64(ir, 1), bs, "");
  c->maxb = kc_emit_dim(e, e->p_dims, false, ti, 1);
  c->layer = kc_ir_i64(ir, kc_node_int(e->n, "layer", 0));
  /* the table is what the kernel checks; its bound is the cache's block count */
  e->check_in = (int)ti;
  e->check_dim = e->in_dims[ci] + 0;
}

/* past[b] and lens[b] clamped into [0, S] (i64). */
static void row_lengths(kc_cpu_emit *e, cache *c, LLVMValueRef b, LLVMValueRef S, LLVMValueRef *P,
                        LLVMValueRef *len) {
  kc_ir *ir = e->ir;
  *P = kc_emit_load(e, KC_I64, c->past, b, 1);
  LLVMValueRef l = kc_emit_load(e, KC_I64, c->lens, b, 1);
  *len = kc_ir_max(ir, kc_ir_min(ir, l, S), kc_ir_i64(ir, 0));
}

/* Leave the kernel with 1 + pos when bad holds (the index check contract). */
static void fail_if(kc_cpu_emit *e, LLVMValueRef bad, LLVMValueRef pos) {
  kc_ir *ir = e->ir;
  LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "bad_index");
  LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "index_ok");
  LLVMBuildCondBr(ir->b, bad, fail, ok);
  LLVMPositionBuilderAtEnd(ir->b, fail);
  LLVMBuildRet(ir->b, kc_ir_add(ir, pos, kc_ir_i64(ir, 1)));
  LLVMPositionBuilderAtEnd(ir->b, ok);
}

/* Fail unless blocks [0, nb) of row b are in the table (nb <= MAXB and blocks hold tokens):
 * the row's last entry. */
static void check_row_blocks(kc_cpu_emit *e, cache *c, LLVMValueRef b, LLVMValueRef nb) {
  kc_ir *ir = e->ir;
  LLVMValueRef last = kc_ir_max(ir, kc_ir_sub(ir, c->maxb, kc_ir_i64(ir, 1)), kc_ir_i64(ir, 0));
  LLVMValueRef need = LLVMBuildICmp(ir->b, LLVMIntSGT, nb, kc_ir_i64(ir, 0), "");
  LLVMValueRef bad = LLVMBuildOr(ir->b, LLVMBuildICmp(ir->b, LLVMIntSGT, nb, c->maxb, ""),
                                 LLVMBuildAnd(ir->b, need, c->empty, ""), "");
  fail_if(e, bad, kc_ir_add(ir, kc_ir_mul(ir, b, c->maxb), last));
}

/* Element offset of (layer, kv, kv head hk, slot 0) of table entry k of row b (k < MAXB), after
 * checking the entry is a block of the pool. */
static LLVMValueRef block_base(kc_cpu_emit *e, cache *c, LLVMValueRef b, LLVMValueRef k,
                               LLVMValueRef hk, int kv) {
  kc_ir *ir = e->ir;
  LLVMValueRef pos = kc_ir_add(ir, kc_ir_mul(ir, b, c->maxb), k);
  LLVMValueRef blk = kc_emit_convert(ir, kc_emit_load(e, KC_I32, c->table, pos, 1), KC_I32, KC_I64);
  fail_if(e, LLVMBuildICmp(ir->b, LLVMIntUGE, blk, c->nblk, ""), pos);
  LLVMValueRef o = kc_ir_add(ir, kc_ir_mul(ir, blk, c->L), c->layer);
  o = kc_ir_add(ir, kc_ir_mul(ir, o, kc_ir_i64(ir, 2)), kc_ir_i64(ir, kv));
  o = kc_ir_add(ir, kc_ir_mul(ir, o, kc_ir_i64(ir, c->kvh)), hk);
  return kc_ir_mul(ir, kc_ir_mul(ir, o, c->BS), kc_ir_i64(ir, c->D));
}

/* ---- kv_store ------------------------------------------------------------------------------- */

/* B * S: a unit per (row, token). */
static LLVMValueRef store_units(kc_cpu_emit *e, LLVMValueRef dims) {
  int rank = kc_value_of(e->g, e->n->in[KS])->rank;
  return kc_ir_mul(e->ir, kc_emit_dim(e, dims, false, KS, 0),
                   kc_emit_dim(e, dims, false, KS, rank == 3 ? 1 : 2));
}

kc_status kc_lower_kv_store(kc_cpu_emit *e) {
  const kc_node *n = e->n;
  kc_graph *g = (kc_graph *)e->g;
  const kc_value *cv = kc_value_of(g, n->in[CACHE]), *kv = kc_value_of(g, n->in[KS]);
  if (KC_DIM_IS_SYM(cv->dims[5]) || KC_DIM_IS_SYM(cv->dims[3]))
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                          "the cache's kv heads and head size must be static");
  kc_att A = {.e = e, .ir = e->ir, .t = cv->dtype, .D = cv->dims[5], .Dv = cv->dims[5]};
  A.kvh = cv->dims[3];
  A.rotary = present(n, KS_COS) && present(n, KS_SIN);
  A.interleaved = kc_node_int(n, "rotary_interleaved", 0) != 0;
  int rank = kv->rank;
  kc_ir *ir = e->ir;
  e->grain = 0;

  kc_emit_kernel_begin(e);
  cache c = {.kvh = A.kvh, .D = A.D};
  cache_open(e, &c, CACHE, TABLE, PAST, LENS, true);
  LLVMValueRef k = kc_emit_in_ptr(e, KS), v = kc_emit_in_ptr(e, VS);
  if (A.rotary) kc_att_rotary_caches(&A, KS_COS, KS_SIN);
  LLVMValueRef S = kc_emit_dim(e, e->p_dims, false, KS, rank == 3 ? 1 : 2), st[3];
  kc_att_strides(&A, rank, S, A.kvh, A.D, st);
  LLVMValueRef zero = kc_ir_i64(ir, 0), one = kc_ir_i64(ir, 1), Dv = kc_ir_i64(ir, A.D);
  kc_loop lu;
  LLVMValueRef u = kc_loop_begin(ir, &lu, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef b = LLVMBuildSDiv(ir->b, u, S, ""), s = LLVMBuildSRem(ir->b, u, S, "");
  LLVMValueRef P, len;
  row_lengths(e, &c, b, S, &P, &len);
  kc_if live;
  kc_if_begin(ir, &live, kc_ir_lt(ir, s, len));
  LLVMValueRef pos = kc_ir_add(ir, P, s);
  LLVMValueRef kb = LLVMBuildSDiv(ir->b, pos, c.BS, ""), slot = LLVMBuildSRem(ir->b, pos, c.BS, "");
  /* a negative position is outside the table as much as one past its end */
  LLVMValueRef out = LLVMBuildOr(ir->b, kc_ir_lt(ir, pos, zero),
                                 LLVMBuildICmp(ir->b, LLVMIntSGE, kb, c.maxb, ""), "");
  out = LLVMBuildOr(ir->b, out, c.empty, "");
  LLVMValueRef last = kc_ir_max(ir, kc_ir_sub(ir, c.maxb, one), zero);
  fail_if(e, out, kc_ir_add(ir, kc_ir_mul(ir, b, c.maxb), last));
  LLVMValueRef kbase = block_base(e, &c, b, kb, zero, 0);
  /* K and V halves of the block: the kv-head stride is BS * D, V follows K by KVH of them */
  LLVMValueRef hstride = kc_ir_mul(ir, c.BS, Dv);
  LLVMValueRef vofs = kc_ir_mul(ir, hstride, kc_ir_i64(ir, A.kvh));
  kc_loop lh;
  LLVMValueRef h = kc_loop_begin(ir, &lh, zero, kc_ir_i64(ir, A.kvh), one, 0, NULL);
  LLVMValueRef dst =
      kc_ir_add(ir, kc_ir_add(ir, kbase, kc_ir_mul(ir, h, hstride)), kc_ir_mul(ir, slot, Dv));
  LLVMValueRef row = kc_ir_add(ir, kc_ir_add(ir, kc_ir_mul(ir, b, st[0]), kc_ir_mul(ir, s, st[1])),
                               kc_ir_mul(ir, h, st[2]));
  kc_loop ld;
  LLVMValueRef d = kc_loop_begin(ir, &ld, zero, Dv, one, 0, NULL);
  if (A.rotary) {
    kc_att_pair r = kc_att_pair_of(&A, d);
    kc_att_st(&A, A.t, c.data, kc_ir_add(ir, dst, d), kc_att_rotated(&A, k, row, d, &r, pos));
  } else {
    /* copies keep their bits */
    kc_emit_store(e, A.t, c.data, kc_ir_add(ir, dst, d),
                  kc_emit_load(e, A.t, k, kc_ir_add(ir, row, d), 1), 1);
  }
  kc_emit_store(e, A.t, c.data, kc_ir_add(ir, kc_ir_add(ir, dst, vofs), d),
                kc_emit_load(e, A.t, v, kc_ir_add(ir, row, d), 1), 1);
  kc_loop_end(ir, &ld, NULL);
  kc_loop_end(ir, &lh, NULL);
  kc_if_end(ir, &live);
  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  kc_emit_units_custom(e, store_units);
  return KC_OK;
}

/* ---- attention_cache ------------------------------------------------------------------------ */

/*
 * Split keys (see the top): a decoding step with fewer than SPLIT_TARGET (row, kv head) units
 * cuts each row's keys into up to C chunks of at least SPLIT_MIN_KEYS keys; at most SPLIT_SLOTS
 * partials (B * kv heads * C) fit the shared scratch, whose slot count shrinks so that the
 * partials stay within SPLIT_BYTES.
 */
#define SPLIT_TARGET 32
#define SPLIT_MAX_CHUNKS 16
#define SPLIT_MIN_KEYS 256
#define SPLIT_SLOTS 64
#define SPLIT_BYTES (256 * 1024)
/* A block's keys (or values) of one head up to this size are prefetched a block ahead. */
#define PREFETCH_BYTES (16 * 1024)

/* Heads and the layouts' limits, from the node (the units function needs them). */
typedef struct heads {
  int64_t heads, kvh, group;
  int64_t dec_rows;  /* S <= dec_rows takes the decode layout */
  int64_t slots;     /* partials the shared scratch holds */
  int64_t part;      /* floats of one partial (S = 1) */
  int64_t cnt_bytes; /* the counters at the scratch's start */
} heads;

static heads heads_of(kc_cpu_emit *e) {
  heads h = {0};
  h.heads = kc_node_int(e->n, "heads", 0);
  h.kvh = kc_node_int(e->n, "kv_heads", h.heads);
  h.group = h.kvh > 0 ? h.heads / h.kvh : 0;
  const kc_value *cv = kc_value_of(e->g, e->n->in[AC_CACHE]);
  kc_att A = {.W = (unsigned)kc_cpu_host(e->cpu)->f32_lanes, .group = h.group};
  if (A.W > 64) A.W = 64;
  A.D = A.Dv = KC_DIM_IS_SYM(cv->dims[5]) ? 1 : cv->dims[5];
  h.dec_rows = kc_att_dec_rows(&A);
  h.part = kc_att_dec_partial_floats(&A, 1);
  int64_t fit = SPLIT_BYTES / (h.part * 4 > 0 ? h.part * 4 : 1);
  h.slots = fit < 2 ? 2 : fit > SPLIT_SLOTS ? SPLIT_SLOTS : fit;
  h.cnt_bytes = (h.slots * 4 + 63) / 64 * 64;
  return h;
}

/* Key chunks per (row, kv head) of a decoding step (S = 1), from the dims alone (see the top):
 * 1 when B * kvh units are enough or would not leave room for two chunks each. */
static LLVMValueRef chunks(kc_cpu_emit *e, LLVMValueRef dims, const heads *h) {
  kc_ir *ir = e->ir;
  LLVMValueRef one = kc_ir_i64(ir, 1);
  LLVMValueRef bk = kc_ir_mul(ir, kc_emit_dim(e, dims, false, Q, 0), kc_ir_i64(ir, h->kvh));
  bk = kc_ir_max(ir, bk, one);
  LLVMValueRef bs = kc_ir_max(ir, kc_emit_dim(e, dims, false, AC_CACHE, 4), one);
  LLVMValueRef tcap = kc_ir_mul(ir, kc_emit_dim(e, dims, false, AC_TABLE, 1), bs);
  LLVMValueRef c = kc_ir_cdiv(ir, kc_ir_i64(ir, SPLIT_TARGET), bk);
  c = kc_ir_min(ir, c, kc_ir_i64(ir, SPLIT_MAX_CHUNKS));
  c = kc_ir_min(ir, c, LLVMBuildSDiv(ir->b, kc_ir_i64(ir, h->slots), bk, ""));
  c = kc_ir_min(ir, c, LLVMBuildSDiv(ir->b, tcap, kc_ir_i64(ir, SPLIT_MIN_KEYS), ""));
  return kc_ir_max(ir, c, one);
}

static LLVMValueRef ac_units(kc_cpu_emit *e, LLVMValueRef dims) {
  kc_ir *ir = e->ir;
  heads h = heads_of(e);
  int rank = kc_value_of(e->g, e->n->in[Q])->rank;
  LLVMValueRef slots = kc_att_slot_units(e, dims, Q, rank, h.heads, h.kvh);
  LLVMValueRef S = kc_emit_dim(e, dims, false, Q, rank == 3 ? 1 : 2);
  LLVMValueRef one = kc_ir_i64(ir, 1);
  LLVMValueRef c = LLVMBuildSelect(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, S, one, ""),
                                   chunks(e, dims, &h), one, "");
  LLVMValueRef dec =
      kc_ir_mul(ir, kc_ir_mul(ir, kc_emit_dim(e, dims, false, Q, 0), kc_ir_i64(ir, h.kvh)), c);
  return LLVMBuildSelect(ir->b, LLVMBuildICmp(ir->b, LLVMIntSLE, S, kc_ir_i64(ir, h.dec_rows), ""),
                         dec, slots, "");
}

static kc_status ac_configure(kc_cpu_emit *e, kc_att *A, heads *h) {
  const kc_node *n = e->n;
  kc_graph *g = (kc_graph *)e->g;
  const kc_value *q = kc_value_of(g, n->in[Q]), *cv = kc_value_of(g, n->in[AC_CACHE]);
  *h = heads_of(e);
  A->t = q->dtype;
  A->rank = q->rank;
  A->heads = h->heads;
  A->kvh = h->kvh;
  if (A->heads <= 0 || A->kvh <= 0 || A->heads % A->kvh != 0)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "heads %lld, kv_heads %lld", (long long)A->heads,
                          (long long)A->kvh);
  A->group = h->group;
  if (KC_DIM_IS_SYM(cv->dims[5]) || KC_DIM_IS_SYM(cv->dims[3]))
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                          "the cache's kv heads and head size must be static");
  if (cv->dims[3] != A->kvh || cv->dtype != A->t)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "the cache does not match q and kv_heads");
  A->D = A->Dv = cv->dims[5];
  if (A->D <= 0) return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "empty heads");
  const kc_attr *sc = kc_node_attr(n, "scale");
  A->scale = sc ? sc->u.f : 1.0 / sqrt((double)A->D);
  A->softcap = kc_node_float(n, "softcap", 0);
  A->causal = true;
  A->mask = present(n, MASK) ? KC_ATT_M_ADDITIVE : KC_ATT_M_NONE;
  if (present(n, MASK)) A->mt = kc_value_of(g, n->in[MASK])->dtype;
  A->rotary = present(n, COS) && present(n, SIN);
  A->interleaved = kc_node_int(n, "rotary_interleaved", 0) != 0;
  A->W = (unsigned)kc_cpu_host(e->cpu)->f32_lanes;
  if (A->W > 64) A->W = 64;
  return KC_OK;
}

/* A range of keys of batch row b, kv head hk: those of table entry k at positions [k * BS + s,
 * k * BS + s + n), after the entry's check. */
static kc_att_keys block_keys(kc_att *A, cache *c, LLVMValueRef b, LLVMValueRef hk, LLVMValueRef k,
                              LLVMValueRef s, LLVMValueRef n) {
  kc_ir *ir = A->ir;
  LLVMValueRef Dv = kc_att_i64(A, A->D);
  LLVMValueRef kbase = kc_ir_add(ir, block_base(A->e, c, b, k, hk, 0), kc_ir_mul(ir, s, Dv));
  return (kc_att_keys){
      .kbase = kbase,
      .kstride = Dv,
      .vbase = kc_ir_add(ir, kbase, kc_ir_mul(ir, kc_ir_mul(ir, c->BS, Dv), kc_att_i64(A, c->kvh))),
      .vstride = Dv,
      .ksrc = c->data,
      .vsrc = c->data,
      .pos0 = kc_ir_add(ir, kc_ir_mul(ir, k, c->BS), s),
      .end = n,
  };
}

/* What to do with each key range of a row (carry: the online softmax state). */
typedef void (*range_fn)(kc_att *A, const kc_att_keys *kr, LLVMValueRef *carry, void *user);

/*
 * Keys [0, n) of batch row b, kv head hk, as one range per cache block (each after its table
 * entry's check; the table must hold every block the keys need).
 */
static void cache_keys(kc_att *A, cache *c, LLVMValueRef b, LLVMValueRef hk, LLVMValueRef n,
                       LLVMValueRef *carry, range_fn fn, void *user) {
  kc_ir *ir = A->ir;
  LLVMValueRef nb = kc_ir_cdiv(ir, n, c->BS);
  check_row_blocks(A->e, c, b, nb);
  kc_loop lk;
  LLVMValueRef k = kc_loop_begin(ir, &lk, kc_att_i64(A, 0), nb, kc_att_i64(A, 1), 2, carry);
  LLVMValueRef cur[2] = {lk.carry[0], lk.carry[1]};
  LLVMValueRef pos0 = kc_ir_mul(ir, k, c->BS);
  kc_att_keys kr =
      block_keys(A, c, b, hk, k, kc_att_i64(A, 0), kc_ir_min(ir, c->BS, kc_ir_sub(ir, n, pos0)));
  fn(A, &kr, cur, user);
  kc_loop_end(ir, &lk, cur);
  carry[0] = lk.carry[0];
  carry[1] = lk.carry[1];
}

static void slot_range(kc_att *A, const kc_att_keys *kr, LLVMValueRef *carry, void *user) {
  (void)user;
  kc_att_stream(A, kr, carry);
}

/* Keys a row sees up to: n = past + min(row, len - 1) + 1, at least 0. */
static LLVMValueRef keys_upto(kc_att *A, LLVMValueRef P, LLVMValueRef row, LLVMValueRef len) {
  kc_ir *ir = A->ir;
  LLVMValueRef last = kc_ir_add(ir, P, kc_ir_min(ir, row, kc_ir_sub(ir, len, kc_att_i64(A, 1))));
  return kc_ir_max(ir, kc_ir_add(ir, last, kc_att_i64(A, 1)), kc_att_i64(A, 0));
}

/* Unit u of the slot layout. */
static void slot_unit(kc_att *A, cache *c, LLVMValueRef u) {
  kc_ir *ir = A->ir;
  LLVMBuilderRef b = ir->b;
  kc_att_unit_begin(A, u);
  LLVMValueRef P, len;
  row_lengths(A->e, c, A->b, A->S, &P, &len);
  A->P = P;
  /* per lane: the last key it sees, past + min(i, len - 1) */
  LLVMValueRef lm1 = kc_ir_splat(ir, kc_ir_sub(ir, len, kc_att_i64(A, 1)), A->W);
  LLVMValueRef rowv =
      LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, A->iv, lm1, ""), A->iv, lm1, "");
  A->qposv = LLVMBuildTrunc(b, LLVMBuildAdd(b, rowv, kc_ir_splat(ir, P, A->W), ""),
                            kc_emit_vec_type(ir->t_i32, A->W), "");
  LLVMValueRef carry[2];
  kc_att_unit_start(A, carry);
  cache_keys(A, c, A->b, A->hk, keys_upto(A, P, kc_att_unit_last_row(A), len), carry, slot_range,
             NULL);
  kc_att_unit_end(A, carry);
}

/* The decode layout's view of the cache: a tile's keys of row b, kv head hk (of the unit's keys
 * before hi). */
typedef struct dec_cache {
  cache *c;
  LLVMValueRef b, hk, hi;
} dec_cache;

/*
 * Prefetch the keys (kv 0) or values (kv 1) of table entry k of row b, kv head hk, when the
 * unit reads them (k * BS < hi) and a block's half is small (a paged cache: blocks elsewhere in
 * the pool, which the hardware prefetcher, stopping at page ends, does not fetch ahead). The
 * entry is clamped into the pool: its check comes when the block is read.
 */
static void prefetch_block(kc_att *A, dec_cache *dc, LLVMValueRef k, int kv) {
  cache *c = dc->c;
  kc_ir *ir = A->ir;
  LLVMBuilderRef bl = ir->b;
  int64_t esize = (int64_t)kc_dtype_size(A->t);
  LLVMValueRef bytes = kc_ir_mul(ir, c->BS, kc_att_i64(A, A->D * esize));
  LLVMValueRef want = LLVMBuildAnd(bl, kc_ir_lt(ir, kc_ir_mul(ir, k, c->BS), dc->hi),
                                   kc_ir_lt(ir, bytes, kc_att_i64(A, PREFETCH_BYTES + 1)), "");
  want = LLVMBuildAnd(bl, want, kc_ir_lt(ir, k, c->maxb), "");
  kc_if on;
  kc_if_begin(ir, &on, want);
  LLVMValueRef pos = kc_ir_add(ir, kc_ir_mul(ir, dc->b, c->maxb), k);
  LLVMValueRef blk =
      kc_emit_convert(ir, kc_emit_load(A->e, KC_I32, c->table, pos, 1), KC_I32, KC_I64);
  blk =
      kc_ir_min(ir, kc_ir_max(ir, blk, kc_att_i64(A, 0)), kc_ir_sub(ir, c->nblk, kc_att_i64(A, 1)));
  LLVMValueRef o = kc_ir_add(ir, kc_ir_mul(ir, blk, c->L), c->layer);
  o = kc_ir_add(ir, kc_ir_mul(ir, o, kc_att_i64(A, 2)), kc_att_i64(A, kv));
  o = kc_ir_add(ir, kc_ir_mul(ir, o, kc_att_i64(A, c->kvh)), dc->hk);
  o = kc_ir_mul(ir, kc_ir_mul(ir, o, c->BS), kc_att_i64(A, c->D));
  LLVMValueRef base = LLVMBuildGEP2(bl, kc_emit_storage_type(ir, A->t), c->data, &o, 1, "");
  kc_loop lp;
  LLVMValueRef off = kc_loop_begin(ir, &lp, kc_att_i64(A, 0), bytes, kc_att_i64(A, 64), 0, NULL);
  kc_att_prefetch(A, LLVMBuildGEP2(bl, LLVMInt8TypeInContext(ir->ctx), base, &off, 1, ""));
  kc_loop_end(ir, &lp, NULL);
  kc_if_end(ir, &on);
}

/* Positions [t0, t1) as one range per cache block they touch (kc_att_tile_fn), each block's
 * successor prefetched while it is read. */
static void dec_tile(kc_att *A, void *user, LLVMValueRef t0, LLVMValueRef t1, int kv,
                     kc_att_range_fn fn, void *fnuser) {
  dec_cache *dc = user;
  cache *c = dc->c;
  kc_ir *ir = A->ir;
  LLVMValueRef zero = kc_att_i64(A, 0);
  kc_loop lk;
  LLVMValueRef k = kc_loop_begin(ir, &lk, LLVMBuildSDiv(ir->b, t0, c->BS, ""),
                                 kc_ir_cdiv(ir, t1, c->BS), kc_att_i64(A, 1), 0, NULL);
  prefetch_block(A, dc, kc_ir_add(ir, k, kc_att_i64(A, 1)), kv);
  LLVMValueRef start = kc_ir_mul(ir, k, c->BS);
  LLVMValueRef s = kc_ir_max(ir, kc_ir_sub(ir, t0, start), zero);
  LLVMValueRef end = kc_ir_min(ir, kc_ir_sub(ir, t1, start), c->BS);
  kc_att_keys kr = block_keys(A, c, dc->b, dc->hk, k, s, kc_ir_sub(ir, end, s));
  fn(A, &kr, fnuser);
  kc_loop_end(ir, &lk, NULL);
}

/*
 * Unit u of the decode layout: batch row b, kv head hk, key chunk ch of C (u = (b * kvh + hk) *
 * C + ch), the group's query heads for the rows [0, S). The row's n keys go in nch chunks of Lc
 * keys (a multiple of W) with nch <= C from n alone (see the top); a unit past nch has nothing
 * to do. One chunk writes y; several save partials to the shared scratch, count themselves in
 * the row's counter, and the last to arrive merges them.
 */
static void decode_unit(kc_att *A, cache *c, const heads *h, LLVMValueRef C, LLVMValueRef u) {
  kc_ir *ir = A->ir;
  kc_cpu_emit *e = A->e;
  LLVMBuilderRef bl = ir->b;
  LLVMValueRef one = kc_att_i64(A, 1);
  LLVMValueRef bh = LLVMBuildSDiv(bl, u, C, ""), ch = LLVMBuildSRem(bl, u, C, "");
  LLVMValueRef kvh = kc_att_i64(A, A->kvh);
  LLVMValueRef b = LLVMBuildSDiv(bl, bh, kvh, ""), hk = LLVMBuildSRem(bl, bh, kvh, "");
  LLVMValueRef P, len;
  row_lengths(e, c, b, A->S, &P, &len);
  LLVMValueRef n =
      keys_upto(A, P, kc_ir_sub(ir, kc_ir_min(ir, A->S, kc_att_i64(A, h->dec_rows)), one), len);
  LLVMValueRef want =
      kc_ir_min(ir, kc_ir_max(ir, LLVMBuildSDiv(bl, n, kc_att_i64(A, SPLIT_MIN_KEYS), ""), one), C);
  LLVMValueRef Lc =
      kc_ir_max(ir, kc_ir_roundup(ir, kc_ir_cdiv(ir, n, want), A->W), kc_att_i64(A, A->W));
  LLVMValueRef nch = kc_ir_max(ir, kc_ir_cdiv(ir, n, Lc), one);
  kc_if live;
  kc_if_begin(ir, &live, kc_ir_lt(ir, ch, nch));
  LLVMValueRef lo = kc_ir_mul(ir, ch, Lc), hi = kc_ir_min(ir, kc_ir_add(ir, lo, Lc), n);
  check_row_blocks(e, c, b, kc_ir_cdiv(ir, hi, c->BS));
  kc_att_dec d;
  kc_att_dec_begin(A, &d, b, hk, P, len);
  /* tiles of whole cache blocks when blocks are short (at least one block) */
  LLVMValueRef T = kc_att_i64(A, KC_ATT_DEC_TILE);
  LLVMValueRef tile = LLVMBuildSelect(
      bl, kc_ir_lt(ir, c->BS, T),
      kc_ir_max(ir, kc_ir_mul(ir, LLVMBuildSDiv(bl, T, c->BS, ""), c->BS), c->BS), T, "");
  dec_cache dc = {c, b, hk, hi};
  kc_att_dec_keys(A, &d, lo, hi, tile, dec_tile, &dc);
  kc_if split;
  kc_if_begin(ir, &split, LLVMBuildICmp(bl, LLVMIntSGT, nch, one, ""));
  {
    LLVMValueRef shared = kc_emit_shared_ptr(e);
    LLVMValueRef parts = kc_ir_gepf(ir, shared, kc_att_i64(A, h->cnt_bytes / 4));
    parts = kc_ir_gepf(ir, parts, kc_ir_mul(ir, kc_ir_mul(ir, bh, C), kc_att_i64(A, h->part)));
    kc_att_dec_save(A, &d, kc_ir_gepf(ir, parts, kc_ir_mul(ir, ch, kc_att_i64(A, h->part))));
    /* acq_rel: this unit's partial is visible to the one that sees the last count, and that
     * one sees every partial */
    LLVMValueRef cnt = LLVMBuildGEP2(bl, ir->t_i32, shared, &bh, 1, "");
    LLVMValueRef old = LLVMBuildAtomicRMW(bl, LLVMAtomicRMWBinOpAdd, cnt, kc_ir_i32(ir, 1),
                                          LLVMAtomicOrderingAcquireRelease, false);
    LLVMValueRef last = LLVMBuildICmp(bl, LLVMIntEQ, LLVMBuildSExt(bl, old, ir->t_i64, ""),
                                      kc_ir_sub(ir, nch, one), "");
    kc_if merge;
    kc_if_begin(ir, &merge, last);
    kc_att_dec_merge(A, &d, parts, nch);
    kc_if_end(ir, &merge);
  }
  kc_if_else(ir, &split);
  kc_att_dec_end(A, &d);
  kc_if_end(ir, &split);
  kc_if_end(ir, &live);
}

kc_status kc_lower_attention_cache(kc_cpu_emit *e) {
  kc_att A = {.e = e, .ir = e->ir};
  heads h;
  kc_status s = ac_configure(e, &A, &h);
  if (s != KC_OK) return s;
  kc_ir *ir = e->ir;
  e->grain = 1;
  e->ws_bytes = kc_att_ws_bytes(&A, true, true);
  /* counters (i32 per row and kv head), then the partials; only a step of one row can split */
  kc_dim sd = kc_value_of(e->g, e->n->in[Q])->dims[A.rank == 3 ? 1 : 2];
  if (KC_DIM_IS_SYM(sd) || sd == 1) {
    e->shared_bytes = h.cnt_bytes + h.slots * h.part * 4;
    e->shared_zero = h.cnt_bytes;
  }

  kc_emit_kernel_begin(e);
  cache c = {.kvh = A.kvh, .D = A.D};
  cache_open(e, &c, AC_CACHE, AC_TABLE, AC_PAST, AC_LENS, false);
  A.q = kc_emit_in_ptr(e, Q);
  A.y = kc_emit_out_ptr(e, 0);
  A.S = kc_emit_dim(e, e->p_dims, false, Q, A.rank == 3 ? 1 : 2);
  if (A.rotary) kc_att_rotary_caches(&A, COS, SIN);
  kc_att_strides(&A, A.rank, A.S, A.heads, A.D, A.qs);
  kc_att_strides(&A, A.rank, A.S, A.heads, A.Dv, A.ys);
  if (A.mask == KC_ATT_M_ADDITIVE) {
    A.m = kc_emit_in_ptr(e, MASK);
    kc_att_mask_strides(&A, MASK);
    int mr = kc_value_of(e->g, e->n->in[MASK])->rank;
    LLVMValueRef tm = kc_emit_dim(e, e->p_dims, false, MASK, mr - 1);
    /* a mask of one key column broadcasts over every key */
    A.mlimit = LLVMBuildSelect(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, tm, kc_att_i64(&A, 1), ""),
                               kc_att_i64(&A, INT64_MAX), tm, "");
  }
  A.ws = e->p_ws;
  LLVMValueRef one = kc_att_i64(&A, 1);
  kc_if dec;
  kc_if_begin(ir, &dec, LLVMBuildICmp(ir->b, LLVMIntSLE, A.S, kc_att_i64(&A, h.dec_rows), ""));
  {
    LLVMValueRef C = LLVMBuildSelect(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, A.S, one, ""),
                                     chunks(e, e->p_dims, &h), one, "");
    kc_loop l;
    LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, one, 0, NULL);
    decode_unit(&A, &c, &h, C, u);
    kc_loop_end(ir, &l, NULL);
  }
  kc_if_else(ir, &dec);
  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, one, 0, NULL);
  slot_unit(&A, &c, u);
  kc_loop_end(ir, &l, NULL);
  kc_if_end(ir, &dec);
  kc_emit_kernel_end(e);
  kc_emit_units_custom(e, ac_units);
  return KC_OK;
}
