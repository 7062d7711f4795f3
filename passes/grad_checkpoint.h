/*
 * passes/grad_checkpoint.h - gradient checkpointing for kc_grad_ex (passes/grad.c): which
 * forward values are kept, and the recomputation of the rest (passes/grad_checkpoint.c).
 *
 * A plan cuts the forward nodes [0, hi) at the kept values k_1 < ... < k_m (program order of
 * their nodes): segment j holds the nodes after k_{j-1}'s node up to k_j's node, excluding it.
 * Nodes after k_m's node are not recomputed (the backward starts there, their values are live
 * anyway), nor are sources (weights, constants) and nodes with a body. When the reverse pass
 * first needs a rule of a node in segment j, the segment's nodes are cloned at the end of the
 * graph (reading the clones of their own segment's values, the originals of anything earlier),
 * and that rule, like every later one of the segment, reads the clones.
 *
 * Clones carry loc "recompute:<original loc>" (KC_RECOMPUTE_LOC_PREFIX); CSE must never merge such
 * a node into an earlier one, or the clones would fold back into the originals and nothing would
 * be saved (passes/cse.c checks it).
 *
 * Invariants: nodes are only appended; a random node (dropout in training mode) inside a segment
 * makes the plan fail (a recomputation would draw another mask).
 */
#ifndef KERNC_PASSES_GRAD_CHECKPOINT_H
#define KERNC_PASSES_GRAD_CHECKPOINT_H

#include "ir/internal.h"

#define KC_RECOMPUTE_LOC_PREFIX "recompute:"

typedef struct kc_ckpt {
  uint32_t hi;     /* forward nodes are [0, hi) */
  uint32_t nvals;  /* values that existed when planned */
  uint32_t *seg;   /* per forward node: its segment, or UINT32_MAX (not recomputed) */
  uint32_t nseg;   /* segments */
  bool *cloned;    /* per segment */
  kc_val *clone;   /* per value id < nvals: its clone (0: none yet) */
  uint32_t nkept;  /* kept values found (for reports) */
  uint32_t ncands; /* sqrt policy: block boundaries found */
} kc_ckpt;

/* Plan for policy o->checkpoint over forward nodes [0, hi) of g. KC_CKPT_NONE (or o NULL)
 * gives a plan with no segment. The sqrt policy with fewer than 2 boundaries, or a marked policy
 * matching nothing, is KC_ERR_INVALID_ARG. */
kc_status kc_ckpt_plan(kc_graph *g, uint32_t hi, const kc_grad_options *o, kc_ckpt *c);
void kc_ckpt_free(kc_ckpt *c);
/*
 * The node copy rule ni (< hi) gets: *copy is g->nodes[ni] with inputs and results of a
 * recomputed segment pointing at their clones (the segment is cloned first if it has not been).
 */
kc_status kc_ckpt_node(kc_graph *g, kc_ckpt *c, uint32_t ni, kc_node *copy);

#endif /* KERNC_PASSES_GRAD_CHECKPOINT_H */
