/*
 * codegen/cpu/attention_core.h - private to the CPU code generator: the one attention core that
 * kernc's fused attention (attention.c) and the KV-cache attention (kv_cache.c) share. An
 * emitter describes its operands in a kc_att (what q, y, the mask and rotary are), decides per
 * work unit which keys a query sees, and hands the core the keys as ranges (kc_att_keys):
 * contiguous runs of keys with a base and a stride in some buffer, whatever holds them (the
 * fused op's past K/V and new keys; one block of the paged cache per range). The core turns
 * ranges into the online softmax; it never knows where the keys came from.
 *
 * Two layouts of the work (both FlashAttention-style online softmax, never materializing the
 * scores):
 *   - slots (kc_att_unit_*, kc_att_stream): a unit is (batch, kv head, block of W query slots),
 *     slot r = (query row r / group, query head hk * group + r % group); a vector holds one
 *     score per slot, keys are broadcast (see attention.c for the full story). Good when a unit
 *     has many query rows or heads per kv head (prefill, MQA).
 *   - decode (kc_att_dec_*, attention_decode.c): the few queries of one kv head (a decoding
 *     row's query heads of a GQA group, or a few rows of them) against a long run of keys, W keys
 *     per vector: each key's dot product is accumulated over D in vector chunks and W of them are
 *     reduced together by a transpose-add tree, each key and value read once for every query;
 *     the unit's state can be saved as a partial and partials merged (split keys).
 *
 * Invariants:
 *   - Arithmetic is f32 whatever the operand dtype (kc_att_ld / kc_att_st convert).
 *   - A range's keys [0, end) are read at kbase + j * kstride (and the values likewise); a
 *     partial block of keys clamps its key index to end - 1 and masks the extra lanes, so no
 *     key outside [0, end) is ever addressed.
 *   - A row that sees no key (softmax sum 0) gives 0.
 *   - The workspace layouts are the core's: the emitter sizes ws with kc_att_ws_bytes.
 */
#ifndef KERNC_CODEGEN_CPU_ATTENTION_CORE_H
#define KERNC_CODEGEN_CPU_ATTENTION_CORE_H

#include "rowvec.h"

/* What the mask input is (causal is a flag of its own: it may come with an additive input). */
enum { KC_ATT_M_NONE, KC_ATT_M_PADDING, KC_ATT_M_ADDITIVE };

typedef struct kc_att {
  kc_cpu_emit *e;
  kc_ir *ir;
  kc_dtype t, mt; /* q/k/v dtype; mask dtype */
  unsigned W;     /* f32 lanes */
  int rank;       /* of q and y: 3 [B,S,H*D] or 4 [B,H,S,D] */
  int mask;       /* KC_ATT_M_* */
  bool causal, rotary, interleaved;
  double softcap; /* > 0: scores become softcap * tanh(scores / softcap) before the masks */
  double scale;
  int64_t heads, kvh, group, D, Dv;

  /* Kernel-wide values the emitter sets after kc_emit_kernel_begin. */
  LLVMValueRef q, m, cosp, sinp, y; /* buffers (m, cosp, sinp may be NULL) */
  LLVMValueRef lse;    /* f32 [B, heads, S]: the rows' log-sum-exp, written when not NULL */
  LLVMValueRef S;      /* query rows */
  LLVMValueRef mT;     /* padding mask: its row length */
  LLVMValueRef mlimit; /* additive mask: key positions >= mlimit are masked out (NULL: none) */
  LLVMValueRef maxpos, half, cw; /* rotary: cache rows, half the rotary width, cache width */
  LLVMValueRef qs[3], ys[3];     /* strides of batch, sequence, head */
  LLVMValueRef ms[4];            /* additive mask strides over [B, heads, S, T] */
  bool m_keys_only; /* additive mask of shape [B, 1, 1, T] (or [1, T], [T]...): one value per key
                       for every lane, loaded once and splat instead of gathered */
  LLVMValueRef ws;  /* the workspace */

  /* Per unit (kc_att_unit_begin sets b..moffv; the emitter sets P and qposv). */
  LLVMValueRef b, hk, s0, nrows, rowmask; /* batch, kv head, first slot, valid lanes */
  LLVMValueRef iv, hv;                    /* per lane: query row, query head (i64) */
  LLVMValueRef P;                         /* position of query row 0 (rotary) */
  LLVMValueRef qposv; /* causal: per lane, the last key position it sees (i32) */
  LLVMValueRef moffv; /* additive mask: per lane, its head and row offset */
} kc_att;

/* A run of keys [0, end) in one buffer (see the invariants). */
typedef struct kc_att_keys {
  LLVMValueRef kbase, kstride, vbase, vstride; /* element offsets into the source buffers */
  LLVMValueRef ksrc, vsrc;                     /* the buffers */
  LLVMValueRef pos0;                           /* absolute position of key 0 */
  LLVMValueRef end;
  bool rotate; /* rotate the keys (rotary) at their positions as they are read */
} kc_att_keys;

static inline LLVMValueRef kc_att_i64(kc_att *A, int64_t v) { return kc_ir_i64(A->ir, v); }

/* Element idx of a buffer of dtype t as f32, and back. */
/* The static facts of attention node e->n (inputs q, k, v at 0..2, the mask at input `mask_in`)
 * that the forward and backward emitters share: heads and groups, head sizes (static, k's equal
 * to q's), scale, softcap, mask kind against the mask input, the vector width; an error names
 * the node. */
kc_status kc_att_configure(kc_cpu_emit *e, kc_att *A, uint32_t mask_in);
LLVMValueRef kc_att_ld(kc_att *A, kc_dtype t, LLVMValueRef p, LLVMValueRef idx);
void kc_att_st(kc_att *A, kc_dtype t, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v);

/* Where element d of a head vector pairs up under rotary: partner, cache index, sign, rotated? */
typedef struct kc_att_pair {
  LLVMValueRef partner, ci, neg, in;
} kc_att_pair;
kc_att_pair kc_att_pair_of(kc_att *A, LLVMValueRef d);
/* Element d of the head vector at row (buffer p of A->t) rotated to position pos (clamped into
 * the caches' rows: never read out of them), as f32; unrotated when !A->rotary. */
LLVMValueRef kc_att_rotated(kc_att *A, LLVMValueRef p, LLVMValueRef row, LLVMValueRef d,
                            const kc_att_pair *r, LLVMValueRef pos);

/* Batch, sequence and head strides of a [B,S,h*dh] (rank 3) or [B,h,S,dh] tensor. */
void kc_att_strides(kc_att *A, int rank, LLVMValueRef s, int64_t h, int64_t dh, LLVMValueRef *out);
/* A->ms: the additive mask (input `in`) broadcast to [B, heads, S, T], 0 along broadcast dims. */
void kc_att_mask_strides(kc_att *A, uint32_t in);
/* Set the rotary caches from inputs cos_in / sin_in (A->rotary must be set). */
void kc_att_rotary_caches(kc_att *A, uint32_t cos_in, uint32_t sin_in);

/* Workspace bytes for the slot layout, the decode layout, or both (a multiple of 64). */
int64_t kc_att_ws_bytes(const kc_att *A, bool slots, bool decode);

/* ---- the slot layout -------------------------------------------------------------------- */

/* Units of the slot layout: B * kvh * ceil(S * group / W), from q (input q_in) of that rank. */
LLVMValueRef kc_att_slot_units(kc_cpu_emit *e, LLVMValueRef dims, uint32_t q_in, int rank,
                               int64_t heads, int64_t kvh);
/* Unit u: sets b, hk, s0, nrows, rowmask, iv, hv (and moffv for an additive mask). */
void kc_att_unit_begin(kc_att *A, LLVMValueRef u);
/* Last query row of the unit (i64). */
LLVMValueRef kc_att_unit_last_row(kc_att *A);
/* Stage the unit's queries (scaled, rotated at P + row) and zero the accumulator; returns the
 * online softmax state (2 values: max, sum) in carry. */
void kc_att_unit_start(kc_att *A, LLVMValueRef *carry);
/* Stream one range through the online softmax (carry: max, sum). */
void kc_att_stream(kc_att *A, const kc_att_keys *kr, LLVMValueRef *carry);
/* y = acc / sum for the unit's slots (0 where nothing was visible); with A->lse also
 * lse = max + log(sum) (-inf where nothing was visible). */
void kc_att_unit_end(kc_att *A, const LLVMValueRef *carry);

/* ---- the decode layout (attention_decode.c) ------------------------------------------------ */

/* Prefetch the line at p (a byte address) for reading, into L2. */
void kc_att_prefetch(kc_att *A, LLVMValueRef p);

/* Keys per tile of the decode layout: the scores of a tile wait in the workspace between the
 * pass over its keys and the pass over its values. */
#define KC_ATT_DEC_TILE 128

/* Query rows a decode unit takes at most (the emitter uses the slot layout above that). */
int64_t kc_att_dec_rows(const kc_att *A);
/* Workspace floats of the decode layout. */
int64_t kc_att_dec_ws_floats(const kc_att *A);

/*
 * One decode unit: the queries of batch b that read kv head hk, rows [0, S) of the group's query
 * heads, query qi = i * group + g (row i, head hk * group + g); row i sees the keys before
 * P + min(i, len - 1) + 1 (causal, a padding row as its last valid row).
 */
typedef struct kc_att_dec {
  LLVMValueRef b, hk, nq; /* i64: batch, kv head, queries S * group */
  LLVMValueRef P, len;    /* i64: the row's past and (clamped) new length */
  LLVMValueRef t0;        /* the tile being read: its first key position */
} kc_att_dec;

/* What reads a range of keys (the core's passes). */
typedef void (*kc_att_range_fn)(kc_att *A, const kc_att_keys *kr, void *fnuser);
/* The emitter's side: hand the keys at positions [t0, t1) to fn as ranges, in increasing order
 * of position, each key once; fn reads the keys (kv 0) or the values (kv 1) of the ranges. */
typedef void (*kc_att_tile_fn)(kc_att *A, void *user, LLVMValueRef t0, LLVMValueRef t1, int kv,
                               kc_att_range_fn fn, void *fnuser);

/* Stage the unit's queries (scaled, rotated at P + row), zero the state. */
void kc_att_dec_begin(kc_att *A, kc_att_dec *d, LLVMValueRef b, LLVMValueRef hk, LLVMValueRef P,
                      LLVMValueRef len);
/* The keys at positions [lo, hi) (a multiple of W apart from lo is best), in tiles of `tile`
 * keys (<= KC_ATT_DEC_TILE) that `ranges` hands over. */
void kc_att_dec_keys(kc_att *A, kc_att_dec *d, LLVMValueRef lo, LLVMValueRef hi, LLVMValueRef tile,
                     kc_att_tile_fn ranges, void *user);
/* y = acc / sum for every query (0 where nothing was visible). */
void kc_att_dec_end(kc_att *A, kc_att_dec *d);

/*
 * Split keys (flash-decoding): a unit that read a part of the keys saves its state (running max,
 * sum, unnormalized output per query) as a partial of kc_att_dec_partial_floats floats at part
 * (f32 pointer, 64-byte aligned); the unit that merges reads n partials from parts (consecutive,
 * in key order) and writes y. The merge rescales each partial by exp(m_c - max m) in that fixed
 * order, so y does not depend on which unit merges.
 */
int64_t kc_att_dec_partial_floats(const kc_att *A, int64_t rows);
void kc_att_dec_save(kc_att *A, kc_att_dec *d, LLVMValueRef part);
void kc_att_dec_merge(kc_att *A, kc_att_dec *d, LLVMValueRef parts, LLVMValueRef n);

#endif /* KERNC_CODEGEN_CPU_ATTENTION_CORE_H */
