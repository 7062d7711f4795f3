/*
 * runtime/aot_cuda_rt.c - the entry of a model compiled ahead of time for CUDA (`kernc compile
 * --target=cuda`): the CPU target's plan in the same tables, run by the one executor on its CUDA
 * device half (runtime/exec_cuda.c), with the kernels taken from the images the library embeds
 * (codegen/aot_cuda.h).
 *
 * Part of the runtime archive, so it needs only the driver, opened with dlopen at create
 * (codegen/cuda/driver.c): no NVRTC, no LLVM, and the library links no libcuda.
 *
 * Invariants: a failed create leaves nothing behind and says why in kc_aot_error(NULL); the
 * blob is checked against this runtime's layout before anything in it is read.
 */
#include "codegen/aot.h"
#include "codegen/aot_cuda.h"
#include "ir/internal.h"
#include "runtime/executor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *image_kind(const kc_aot_cuda_image *im) { return im->ptx ? "compute" : "sm"; }

/* The image for compute capability cc: its exact cubin, else the newest PTX not above it. */
static const kc_aot_cuda_image *pick_image(const kc_aot_cuda_head *h, int cc) {
  const kc_aot_cuda_image *ims = (const void *)(h + 1), *best = NULL;
  for (int64_t i = 0; i < h->nimages; i++)
    if (!ims[i].ptx && ims[i].arch == cc) return &ims[i];
  for (int64_t i = 0; i < h->nimages; i++)
    if (ims[i].ptx && ims[i].arch <= cc && (!best || ims[i].arch > best->arch)) best = &ims[i];
  return best;
}

/* "sm_80, sm_90, compute_80" of the blob into buf. */
static void list_images(const kc_aot_cuda_head *h, char *buf, size_t size) {
  const kc_aot_cuda_image *ims = (const void *)(h + 1);
  size_t l = 0;
  buf[0] = 0;
  for (int64_t i = 0; i < h->nimages && l < size; i++)
    l += (size_t)snprintf(buf + l, size - l, "%s%s_%lld", i ? ", " : "", image_kind(&ims[i]),
                          (long long)ims[i].arch);
}

static kc_status check_blob(kc_exec *m, const kc_aot_cuda_head *h) {
  if (!h || memcmp(h->magic, KC_AOT_CUDA_MAGIC, sizeof h->magic) != 0 ||
      h->head_bytes != (int64_t)sizeof *h || h->image_bytes != (int64_t)sizeof(kc_aot_cuda_image) ||
      h->step_bytes != (int64_t)sizeof(kc_aot_cuda_step) || h->nsteps != m->d->nsteps)
    return kc_errorf(m->ctx, KC_ERR_INTERNAL,
                     "model %s: its CUDA kernels are not in the layout of this runtime",
                     m->d->name);
  return KC_OK;
}

/* The device, the image for it, and every step's kernel: x's CUDA half. */
static kc_status open_device(kc_exec *x, const kc_aot_cuda_head *h) {
  const kc_plan *d = x->d;
  const unsigned char *base = (const unsigned char *)h;
  kc_cuda_dev *dev = NULL;
  kc_cuda_mod *mod = NULL;
  kc_status s = check_blob(x, h);
  if (s == KC_OK) s = kc_cuda_dev_open(x->ctx, 0, &dev);
  if (s != KC_OK) return s;
  int cc = kc_cuda_dev_cc(dev);
  const kc_aot_cuda_image *im = pick_image(h, cc);
  if (!im) {
    char have[512];
    list_images(h, have, sizeof have);
    s = kc_errorf(x->ctx, KC_ERR_UNSUPPORTED,
                  "CUDA target unavailable: model %s has kernels for %s, none of which runs on "
                  "%s (sm_%d); compile it with --cuda-arch=%d",
                  d->name, have, kc_cuda_dev_name(dev), cc, cc);
    kc_cuda_dev_close(dev);
    return s;
  }
  kc_cuda_image img = {base + im->off, (size_t)im->size, im->ptx != 0, (int)im->arch};
  if ((s = kc_cuda_mod_load(dev, &img, &mod)) != KC_OK) {
    kc_error_append(x->ctx, "loading the %s_%lld image of model %s", image_kind(im),
                    (long long)im->arch, d->name);
    kc_cuda_dev_close(dev);
    return s;
  }
  const kc_aot_cuda_step *steps =
      (const kc_aot_cuda_step *)(base + sizeof *h + (size_t)h->nimages * sizeof *im);
  kc_cuda_kernel_info *info = calloc((size_t)d->nsteps + 1, sizeof *info);
  void **fn = calloc((size_t)d->nsteps + 1, sizeof *fn);
  if (!info || !fn) s = kc_errorf(x->ctx, KC_ERR_NOMEM, "out of memory creating model %s", d->name);
  for (int64_t i = 0; i < d->nsteps && s == KC_OK; i++) {
    info[i] = steps[i].info;
    s = kc_cuda_mod_function(mod, (const char *)base + steps[i].name, &fn[i]);
  }
  if (s == KC_OK) {
    s = kc_exec_cuda_attach(x, dev, mod, info, fn); /* owns dev and mod from here */
  } else {
    kc_cuda_mod_unload(mod);
    kc_cuda_dev_close(dev);
  }
  free(info);
  free(fn);
  return s;
}

kc_exec *kc_aot_cuda_create(const kc_plan *d, const void *blob, int threads) {
  (void)threads; /* the device runs the kernels; the host only checks, plans and copies */
  kc_aot_create_failed(NULL);
  kc_exec *x;
  if (kc_exec_new(d, &kc_exec_cuda, NULL, 1, &x) != KC_OK) {
    kc_aot_create_failed("out of memory creating the model");
    return NULL;
  }
  if (open_device(x, blob) != KC_OK) {
    kc_aot_create_failed(kc_last_error(x->ctx));
    kc_exec_free(x);
    return NULL;
  }
  return x;
}
