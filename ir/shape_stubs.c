/* TEMPORARY stubs so the tree links while ir/shape*.c is written; delete when replaced. */
#include "internal.h"
kc_status shape_attention(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_axis_op(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_bcast(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_cast(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_clip(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_compare(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_concat(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_constant_of_shape(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_dropout(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_expand(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_flatten(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_fused(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_gather(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_gemm(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_layer_normalization(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_logical(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_matmul(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_matmul_ep(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_norm(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_pow(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_range(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_reduce(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_reshape(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_rms_normalization(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_rotary(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_shape(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_slice(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_source(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_split(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_squeeze(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_transpose(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_trilu(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_unary(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_unsqueeze(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
kc_status shape_where(kc_graph *g, kc_node *n) {
  return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "no shape function yet");
}
