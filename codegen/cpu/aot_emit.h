/*
 * codegen/cpu/aot_emit.h - private to the AOT object writer (codegen/cpu/aot_object.c): the dims
 * function (codegen/cpu/aot_dims.c), which turns the symbols bound by a run's inputs into every
 * dim of every value, so a compiled model needs no graph to know its shapes.
 */
#ifndef KERNC_CODEGEN_CPU_AOT_EMIT_H
#define KERNC_CODEGEN_CPU_AOT_EMIT_H

#include "codegen/cpu/cpu.h"

/*
 * Define `int64_t name(const int64_t *syms, int64_t *slots)` (internal) in ir's module: slot i =
 * slot_dims[i] of g evaluated with symbol syms[k] named names[k] (floor division, as ir/dim.c);
 * returns -1, or the first slot that is negative, overflows or divides by zero. A symbol not in
 * names is KC_ERR_INTERNAL (the exporter refuses such graphs first). *fn gets the function.
 */
kc_status kc_aot_emit_dims(kc_ir *ir, const kc_graph *g, const char *name, const kc_dim *slot_dims,
                           int64_t nslots, const char *const *names, int64_t nsyms,
                           LLVMValueRef *fn);

#endif /* KERNC_CODEGEN_CPU_AOT_EMIT_H */
