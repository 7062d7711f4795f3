/*
 * runtime/aot_internal.h - private to the AOT runtimes of the runtime archive: the instance of a
 * compiled model and the parts of a run both targets share. runtime/aot_rt.c owns them (input
 * checks, the dims function, sizes, the arena plan, output descriptors) and runs CPU kernels;
 * runtime/aot_cuda_rt.c runs the same plan on a CUDA device through the instance's device hooks.
 *
 * Invariants:
 *   - One plan for both targets: kc_aot_prepare gives every value's size and arena offset
 *     exactly as the CPU run uses them, so a device arena laid out by off[] is the CPU's arena.
 *   - dev_run / dev_free are NULL for the CPU; when set, kc_aot_run and kc_aot_free hand the
 *     instance to them (the object's entry points are the same for both targets).
 */
#ifndef KERNC_RUNTIME_AOT_INTERNAL_H
#define KERNC_RUNTIME_AOT_INTERNAL_H

#include "codegen/aot.h"
#include "runtime/plan_core.h"
#include "runtime/runtime.h"

#include <stddef.h>
#include <stdint.h>

struct kc_aot_inst {
  const kc_aot_model *d;
  kc_context *ctx;
  kc_pool *pool;
  int64_t *syms;
  int64_t *bound_by; /* per symbol: input that bound it in this run, -1: not yet */
  int64_t *slots;
  int64_t *step_dims; /* every step's dims, gathered */
  size_t *nbytes;     /* per value */
  size_t *off;        /* per value: arena offset, SIZE_MAX when not placed */
  void **vbuf;        /* per value */
  void **bufs;        /* one step's buffers */
  kc_rt_block *live;
  unsigned char *arena;
  size_t arena_cap, peak;
  unsigned char **out_buf; /* per output */
  size_t *out_cap;
  unsigned char *ws; /* per-thread workspaces, ws_stride bytes each */
  size_t ws_stride;
  /* a device target (runtime/aot_cuda_rt.c); all NULL for the CPU */
  void *dev;
  int (*dev_run)(kc_aot_inst *m, const kc_tensor_desc *inputs, kc_tensor_desc *outputs);
  void (*dev_free)(kc_aot_inst *m); /* frees m->dev; called first by kc_aot_free */
  _Alignas(KC_RT_ALIGN) unsigned char empty[KC_RT_ALIGN]; /* storage of zero-size tensors */
};

/*
 * The target-independent start of a run: check the inputs, compute every dim and byte size,
 * place the arena values (off[]; *total bytes), grow the host output buffers and gather every
 * step's dims. Nothing else is touched, so a failure leaves the instance reusable.
 */
kc_status kc_aot_prepare(kc_aot_inst *m, const kc_tensor_desc *inputs, size_t *total);
/* Describe the outputs (data: the host output buffers) after a run. */
void kc_aot_describe(kc_aot_inst *m, kc_tensor_desc *outputs);
/* Step s's kernel met the index at position pos (*index, of dtype it: a host copy of it) out of
 * range: the run's error (runtime/index_error.c), naming s->what. */
kc_status kc_aot_index_error(kc_aot_inst *m, const kc_aot_step *s, int64_t pos, kc_dtype it,
                             const void *index);
/* Remember msg as why the last create on this thread failed (kc_aot_error(NULL)). */
void kc_aot_create_failed(const char *msg);

#endif /* KERNC_RUNTIME_AOT_INTERNAL_H */
