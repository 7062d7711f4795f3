/*
 * codegen/cuda/driver.c - the CUDA driver API, opened at run time: dlopen("libcuda.so.1") and
 * the entry points kernc uses, resolved into a table owned by the kc_cuda_dev (no globals, no
 * link-time dependency), so kernc builds and runs where no GPU or driver is and the CUDA target
 * then reports why it is unavailable. kc_dl_resolve, the table filler, serves NVRTC too.
 *
 * The device's primary context is retained on open and made current before every call, so a
 * module compiled on one thread may run on another. Versioned entry points (_v2) are the ones
 * the driver's own header maps the plain names to.
 * Invariants: every failing driver call becomes a kc_status with the driver's error name;
 * kc_cuda_dev_close releases the context and the library after the caller freed its memory and
 * modules.
 */
#include "codegen/cuda/cuda.h"
#include "ir/internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int cu_result; /* CUresult: 0 = CUDA_SUCCESS */
typedef int cu_device;
typedef void *cu_context, *cu_module, *cu_function, *cu_stream;
typedef unsigned long long cu_ptr;

enum { ATTR_CC_MAJOR = 75, ATTR_CC_MINOR = 76 }; /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_* */
enum { CU_ERROR_NO_DEVICE = 100 };

typedef struct cu_api {
  cu_result (*Init)(unsigned);
  cu_result (*DeviceGetCount)(int *);
  cu_result (*DeviceGet)(cu_device *, int);
  cu_result (*DeviceGetAttribute)(int *, int, cu_device);
  cu_result (*DeviceGetName)(char *, int, cu_device);
  cu_result (*PrimaryCtxRetain)(cu_context *, cu_device);
  cu_result (*PrimaryCtxRelease)(cu_device);
  cu_result (*CtxSetCurrent)(cu_context);
  cu_result (*CtxSynchronize)(void);
  cu_result (*MemAlloc)(cu_ptr *, size_t);
  cu_result (*MemFree)(cu_ptr);
  cu_result (*MemcpyHtoD)(cu_ptr, const void *, size_t);
  cu_result (*MemcpyDtoH)(void *, cu_ptr, size_t);
  cu_result (*MemcpyDtoD)(cu_ptr, cu_ptr, size_t);
  cu_result (*ModuleLoadData)(cu_module *, const void *);
  cu_result (*ModuleUnload)(cu_module);
  cu_result (*ModuleGetFunction)(cu_function *, cu_module, const char *);
  cu_result (*LaunchKernel)(cu_function, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                            unsigned, cu_stream, void **, void **);
  cu_result (*GetErrorName)(cu_result, const char **);
} cu_api;

struct kc_cuda_dev {
  kc_context *ctx;
  void *lib;
  cu_api api;
  cu_device dev;
  cu_context pctx;
  int cc;
  char name[256];
};

struct kc_cuda_mod {
  kc_cuda_dev *d;
  cu_module mod;
};

static const char *err_name(const kc_cuda_dev *d, cu_result r) {
  const char *s = NULL;
  if (d->api.GetErrorName && d->api.GetErrorName(r, &s) == 0 && s) return s;
  return "unknown CUDA error";
}

static kc_status check(kc_cuda_dev *d, cu_result r, const char *what) {
  if (r == 0) return KC_OK;
  return kc_errorf(d->ctx, KC_ERR_RUNTIME, "CUDA: %s failed: %s (%d)", what, err_name(d, r), r);
}

static kc_status unavailable(kc_context *ctx, const char *fmt, const char *detail) {
  char why[512];
  snprintf(why, sizeof why, fmt, detail);
  return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "CUDA target unavailable: %s", why);
}

const char *kc_dl_resolve(void *lib, const kc_dl_sym *syms, size_t n, void *table) {
  for (size_t i = 0; i < n; i++) {
    void *p = dlsym(lib, syms[i].name);
    if (!p) return syms[i].name;
    /* dlsym hands out code addresses as data; store them in the function pointer's slot */
    memcpy((char *)table + syms[i].off, &p, sizeof p);
  }
  return NULL;
}

/* Resolve every entry point; the name of the first missing one, or NULL. */
static const char *resolve(kc_cuda_dev *d) {
  static const kc_dl_sym syms[] = {
#define SYM(field, name) {name, offsetof(cu_api, field)}
      SYM(Init, "cuInit"),
      SYM(DeviceGetCount, "cuDeviceGetCount"),
      SYM(DeviceGet, "cuDeviceGet"),
      SYM(DeviceGetAttribute, "cuDeviceGetAttribute"),
      SYM(DeviceGetName, "cuDeviceGetName"),
      SYM(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
      SYM(PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
      SYM(CtxSetCurrent, "cuCtxSetCurrent"),
      SYM(CtxSynchronize, "cuCtxSynchronize"),
      SYM(MemAlloc, "cuMemAlloc_v2"),
      SYM(MemFree, "cuMemFree_v2"),
      SYM(MemcpyHtoD, "cuMemcpyHtoD_v2"),
      SYM(MemcpyDtoH, "cuMemcpyDtoH_v2"),
      SYM(MemcpyDtoD, "cuMemcpyDtoD_v2"),
      SYM(ModuleLoadData, "cuModuleLoadData"),
      SYM(ModuleUnload, "cuModuleUnload"),
      SYM(ModuleGetFunction, "cuModuleGetFunction"),
      SYM(LaunchKernel, "cuLaunchKernel"),
      SYM(GetErrorName, "cuGetErrorName"),
#undef SYM
  };
  return kc_dl_resolve(d->lib, syms, sizeof syms / sizeof *syms, &d->api);
}

static kc_status open_device(kc_cuda_dev *d, int ordinal) {
  cu_api *a = &d->api;
  cu_result r = a->Init(0);
  if (r == CU_ERROR_NO_DEVICE)
    return unavailable(d->ctx, "%s", "no CUDA device (cuInit: CUDA_ERROR_NO_DEVICE)");
  if (r != 0) {
    char why[128];
    snprintf(why, sizeof why, "cuInit failed: %s (%d)", err_name(d, r), r);
    return unavailable(d->ctx, "%s", why);
  }
  int count = 0;
  if (a->DeviceGetCount(&count) != 0 || count <= ordinal) {
    char why[128];
    snprintf(why, sizeof why, "device %d asked for, %d present", ordinal, count);
    return unavailable(d->ctx, "%s", why);
  }
  int major = 0, minor = 0;
  kc_status s = check(d, a->DeviceGet(&d->dev, ordinal), "cuDeviceGet");
  if (s == KC_OK)
    s = check(d, a->DeviceGetAttribute(&major, ATTR_CC_MAJOR, d->dev), "cuDeviceGetAttribute");
  if (s == KC_OK)
    s = check(d, a->DeviceGetAttribute(&minor, ATTR_CC_MINOR, d->dev), "cuDeviceGetAttribute");
  if (s == KC_OK)
    s = check(d, a->DeviceGetName(d->name, (int)sizeof d->name, d->dev), "cuDeviceGetName");
  if (s == KC_OK) s = check(d, a->PrimaryCtxRetain(&d->pctx, d->dev), "cuDevicePrimaryCtxRetain");
  if (s == KC_OK) s = check(d, a->CtxSetCurrent(d->pctx), "cuCtxSetCurrent");
  d->cc = major * 10 + minor;
  return s;
}

kc_status kc_cuda_dev_open(kc_context *ctx, int ordinal, kc_cuda_dev **out) {
  *out = NULL;
  kc_cuda_dev *d = calloc(1, sizeof *d);
  if (!d) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
  d->ctx = ctx;
  kc_status s;
  d->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!d->lib) {
    const char *why = dlerror();
    s = unavailable(ctx, "cannot load the CUDA driver (%s)", why ? why : "libcuda.so.1 not found");
  } else {
    const char *missing = resolve(d);
    s = missing ? unavailable(ctx, "the CUDA driver lacks %s", missing) : open_device(d, ordinal);
  }
  if (s != KC_OK) {
    kc_cuda_dev_close(d);
    return s;
  }
  *out = d;
  return KC_OK;
}

void kc_cuda_dev_close(kc_cuda_dev *d) {
  if (!d) return;
  if (d->pctx && d->api.PrimaryCtxRelease) d->api.PrimaryCtxRelease(d->dev);
  if (d->lib) dlclose(d->lib);
  free(d);
}

int kc_cuda_dev_cc(const kc_cuda_dev *d) { return d->cc; }
const char *kc_cuda_dev_name(const kc_cuda_dev *d) { return d->name; }

/* The context current on this thread, then the call. */
static kc_status bind(kc_cuda_dev *d) {
  return check(d, d->api.CtxSetCurrent(d->pctx), "cuCtxSetCurrent");
}

kc_status kc_cuda_alloc(kc_cuda_dev *d, size_t size, kc_dptr *out) {
  cu_ptr p = 0;
  kc_status s = bind(d);
  if (s == KC_OK && d->api.MemAlloc(&p, size ? size : 1) != 0)
    s = kc_errorf(d->ctx, KC_ERR_NOMEM, "CUDA: out of device memory (%zu bytes)", size);
  *out = s == KC_OK ? (kc_dptr)p : 0;
  return s;
}

void kc_cuda_free(kc_cuda_dev *d, kc_dptr p) {
  if (p && bind(d) == KC_OK) d->api.MemFree((cu_ptr)p);
}

kc_status kc_cuda_reserve(kc_cuda_dev *d, kc_dptr *buf, size_t *cap, size_t size) {
  if (*buf && *cap >= size) return KC_OK;
  kc_cuda_free(d, *buf);
  *buf = 0;
  *cap = 0;
  kc_status s = kc_cuda_alloc(d, size, buf);
  if (s == KC_OK) *cap = size;
  return s;
}

kc_status kc_cuda_htod(kc_cuda_dev *d, kc_dptr dst, const void *src, size_t size) {
  kc_status s = bind(d);
  return s != KC_OK || !size ? s : check(d, d->api.MemcpyHtoD(dst, src, size), "cuMemcpyHtoD");
}

kc_status kc_cuda_dtoh(kc_cuda_dev *d, void *dst, kc_dptr src, size_t size) {
  kc_status s = bind(d);
  return s != KC_OK || !size ? s : check(d, d->api.MemcpyDtoH(dst, src, size), "cuMemcpyDtoH");
}

kc_status kc_cuda_dtod(kc_cuda_dev *d, kc_dptr dst, kc_dptr src, size_t size) {
  kc_status s = bind(d);
  return s != KC_OK || !size ? s : check(d, d->api.MemcpyDtoD(dst, src, size), "cuMemcpyDtoD");
}

kc_status kc_cuda_mod_load(kc_cuda_dev *d, const kc_cuda_image *img, kc_cuda_mod **out) {
  *out = NULL;
  kc_cuda_mod *m = calloc(1, sizeof *m);
  if (!m) return kc_errorf(d->ctx, KC_ERR_NOMEM, "out of memory");
  m->d = d;
  kc_status s = bind(d);
  if (s == KC_OK) s = check(d, d->api.ModuleLoadData(&m->mod, img->data), "cuModuleLoadData");
  if (s != KC_OK) {
    free(m);
    return s;
  }
  *out = m;
  return KC_OK;
}

void kc_cuda_mod_unload(kc_cuda_mod *m) {
  if (!m) return;
  if (m->mod && bind(m->d) == KC_OK) m->d->api.ModuleUnload(m->mod);
  free(m);
}

kc_status kc_cuda_mod_function(kc_cuda_mod *m, const char *name, void **fn) {
  cu_function f = NULL;
  kc_status s = check(m->d, m->d->api.ModuleGetFunction(&f, m->mod, name), "cuModuleGetFunction");
  if (s != KC_OK) kc_error_append(m->d->ctx, "kernel %s", name);
  *fn = f;
  return s;
}

kc_status kc_cuda_launch_kernel(kc_cuda_dev *d, void *fn, uint32_t grid, uint32_t block,
                                const uint64_t *words) {
  void *params[1] = {(void *)words};
  kc_status s = bind(d);
  if (s == KC_OK)
    s = check(d, d->api.LaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, NULL, params, NULL),
              "cuLaunchKernel");
  return s;
}

kc_status kc_cuda_sync(kc_cuda_dev *d) {
  kc_status s = bind(d);
  return s == KC_OK ? check(d, d->api.CtxSynchronize(), "cuCtxSynchronize") : s;
}
