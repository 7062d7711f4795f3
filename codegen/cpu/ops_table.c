/*
 * codegen/cpu/ops_table.c - the CPU column of ir/ops.def as a table indexed by kc_op, and
 * kc_scalar_none, the scalar entry of ops whose family needs no per-op math.
 */
#include "emit.h"

const kc_cpu_op kc_cpu_ops[KC_OP_COUNT] = {
#define OP(id, ...) [KC_OP_##id] = {
#define CPU(family, scalar)                                                                        \
  kc_lower_##family, kc_scalar_##scalar                                                            \
  }                                                                                                \
  ,
#include "ir/ops.def"
#undef CPU
#undef OP
};

LLVMValueRef kc_scalar_none(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *args) {
  return NULL;
}
