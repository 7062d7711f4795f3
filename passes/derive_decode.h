/*
 * passes/derive_decode.h - what derive-decode's two files share: passes/derive_decode.c (the
 * pass) and passes/derive_decode_past.c (models exported with past inputs, mapped onto the
 * pass's cache).
 */
#ifndef KERNC_PASSES_DERIVE_DECODE_H
#define KERNC_PASSES_DERIVE_DECODE_H

#include "passes/internal.h"

/* The inputs a model brings besides its token ids and [B, S] attention masks. */
typedef struct kc_dd_past {
  kc_dim P;       /* the past's length, a symbol; 0 when the model has no past inputs */
  kc_val posids;  /* the position_ids input [B, S], {0} if none */
  uint32_t *drop; /* indices of the inputs the derived step no longer reads (past, position_ids,
                     masks over past + new tokens), increasing */
  uint32_t ndrop;
} kc_dd_past;

/*
 * Claims the inputs of g other than the token ids (input 0, [B, S]) and [B, S] masks: past
 * inputs (past_key_values.N.key / .value, past.N.key / .value, past_key.N / past_value.N, each
 * [B, kv_heads, P, head_dim]) with their present outputs (present.N.key / .value, or
 * present_key.N / present_value.N, each Concat(past, new) along axis 2), a position_ids input
 * [B, S] and an attention mask over the P + S keys. Each attention reading Concat(past, new)
 * keys and values is rewritten to read the new ones alone (its past is the cache's now), and
 * the present outputs are removed. Refuses (KC_ERR_UNSUPPORTED) naming the input, output or
 * node it cannot map; leaves g unchanged when it refuses.
 */
kc_status kc_dd_past_map(kc_graph *g, kc_dim B, kc_dim S, kc_dd_past *p);
/* Is input k one that kc_dd_past_map claimed? */
bool kc_dd_past_claims(const kc_dd_past *p, uint32_t k);
/*
 * Once the step is derived and dead nodes removed: the claimed inputs must be read by nothing
 * and no value sized by P (else a refusal naming the node); they are removed from g's inputs.
 */
kc_status kc_dd_past_finish(kc_graph *g, const kc_dd_past *p);
void kc_dd_past_free(kc_dd_past *p);

#endif /* KERNC_PASSES_DERIVE_DECODE_H */
