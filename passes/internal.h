/*
 * passes/internal.h - helpers shared by the passes (not by anyone else): dead-node removal,
 * placing appended nodes in program order, comparing types across a rewrite, and the one rule
 * for which ONNX node name (loc) a node made by a rewrite carries.
 *
 * Invariants: every helper leaves vals[].def consistent with g->nodes; none prints.
 */
#ifndef KERNC_PASSES_INTERNAL_H
#define KERNC_PASSES_INTERNAL_H

#include "ir/internal.h"

/* Delete every node none of whose results is read or a graph output, cascading, then compact.
 * *removed (may be NULL) gets the number of nodes deleted. */
kc_status kc_dce_run(kc_graph *g, uint32_t *removed);

/*
 * Move the nodes [first, g->nnodes) (appended by a pass) so that node first+k sits right before
 * the node now at index anchor[k] < first, keeping their relative order; anchor must be
 * nondecreasing. Node indices change; value ids and defs stay right.
 */
kc_status kc_graph_place(kc_graph *g, uint32_t first, const uint32_t *anchor);

/* Are dims a and b equal (hash-consed ==, or the same text for expressions kept raw)? */
bool kc_dim_same(const kc_graph *g, kc_dim a, kc_dim b);
/* Does dim d mention a symbol made at or after expression index fresh (a size inference could
 * not name, which any recorded dim may replace)? */
bool kc_dim_is_new(const kc_graph *g, kc_dim d, uint32_t fresh);
/*
 * May value b (just inferred, symbols from expression index fresh on are new) stand for a
 * (recorded)? Same dtype and rank, each dim the same or new in b. With adopt, b's new dims are
 * overwritten by a's, so b keeps the recorded, better-named sizes.
 */
bool kc_type_fits(kc_graph *g, kc_val a, kc_val b, uint32_t fresh, bool adopt);
/* "f32[B,768]" into buf. */
const char *kc_type_str(const kc_graph *g, kc_val v, char *buf, size_t size);

/*
 * The loc a node made by a rewrite takes, so run-time errors and dumps still name an ONNX node:
 * that of `root`, the node whose result the rewrite replaces (the new node's result stands for
 * it), or when root has none, that of the first of nodes[0..n) (the match, nearest the root
 * first) with one; NULL if none.
 * (fuse-elementwise names a region "fused:a+b+..." by all its members instead: a region joins
 * several independent ONNX computations and may replace several of their results.)
 */
const char *kc_rewrite_loc(const kc_graph *g, uint32_t root, const uint32_t *nodes, uint32_t n);
/* The tensor with data behind a constant or a (bound) weight, else NULL. */
const kc_tensor *kc_source_tensor(const kc_graph *g, kc_val v);
/* Nodes [first, g->nnodes) without a loc of their own take loc (arena string of g, or NULL). */
void kc_rewrite_set_loc(kc_graph *g, uint32_t first, const char *loc);
/* Node ni as --explain-fusion names it: its op, and the ONNX node name when it has one
 * ("matmul, loc(\"/attn/MatMul\")"), into buf; returns buf. */
const char *kc_explain_node(const kc_graph *g, uint32_t ni, char *buf, size_t size);

#endif /* KERNC_PASSES_INTERNAL_H */
