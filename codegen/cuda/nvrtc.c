/*
 * codegen/cuda/nvrtc.c - CUDA C to cubin or PTX through NVRTC, with a cache.
 *
 * A request is (source, arch, cubin or PTX). Its key is two independent 64-bit hashes of the
 * source plus its length, the arch and the kind; the in-memory cache keeps every image this
 * object compiled, and an optional folder keeps them as files named by the key and NVRTC's
 * version, so a second process compiling the same model skips NVRTC (the runtime uses
 * $KERNC_CUDA_CACHE as that folder when it is set). The device library includes cuda_fp16.h and
 * cuda_bf16.h from the toolkit's include folder (KERNC_CUDA_INCLUDE_DIR at build time, or
 * $KERNC_CUDA_INCLUDE), since NVRTC does not ship them built in.
 *
 * NVRTC is opened with dlopen when a kc_nvrtc is made, as the driver is (driver.c): libkernc has
 * no link-time dependency on the toolkit, loads where it is missing, and the CUDA target then
 * says it is unavailable. nvrtc.h is read only for its types. The library is found by its soname
 * (libnvrtc.so.<major of the toolkit kernc was built with>, so LD_LIBRARY_PATH can point at
 * another copy), then at the build's toolkit path. It stays mapped once opened (RTLD_NODELETE):
 * NVRTC's C++ runtime allocates process-wide state at load that an unload would orphan
 * (LeakSanitizer reports its 71 KiB exception pool), and the next kc_nvrtc_new finds it loaded.
 *
 * Invariants: images are owned here and live until kc_nvrtc_free; a failed compile leaves the
 * cache unchanged and puts NVRTC's log into the error buffer.
 */
#include "codegen/cuda/cuda.h"
#include "ir/internal.h"

#include <dlfcn.h>
#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef KERNC_NVRTC_SONAME
#define KERNC_NVRTC_SONAME "libnvrtc.so"
#endif
#ifndef KERNC_NVRTC_PATH
#define KERNC_NVRTC_PATH KERNC_NVRTC_SONAME
#endif
#ifndef KERNC_CUDA_INCLUDE_DIR
#define KERNC_CUDA_INCLUDE_DIR "/usr/local/cuda/include"
#endif

typedef struct entry {
  uint64_t h1, h2;
  size_t srclen;
  int arch;
  bool ptx;
  void *data;
  size_t size;
} entry;

/* The NVRTC entry points kernc calls, resolved from the opened library. */
typedef struct nvrtc_api {
  const char *(*GetErrorString)(nvrtcResult);
  nvrtcResult (*Version)(int *, int *);
  nvrtcResult (*GetNumSupportedArchs)(int *);
  nvrtcResult (*GetSupportedArchs)(int *);
  nvrtcResult (*CreateProgram)(nvrtcProgram *, const char *, const char *, int, const char *const *,
                               const char *const *);
  nvrtcResult (*DestroyProgram)(nvrtcProgram *);
  nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char *const *);
  nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t *);
  nvrtcResult (*GetProgramLog)(nvrtcProgram, char *);
  nvrtcResult (*GetPTXSize)(nvrtcProgram, size_t *);
  nvrtcResult (*GetPTX)(nvrtcProgram, char *);
  nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t *);
  nvrtcResult (*GetCUBIN)(nvrtcProgram, char *);
} nvrtc_api;

struct kc_nvrtc {
  kc_context *ctx;
  void *lib;
  nvrtc_api api;
  entry *e;
  size_t n, cap;
  char *dir;
  int *archs; /* NVRTC's supported archs, ascending */
  int narchs;
  int version; /* major * 100 + minor: part of a cached file's name */
  uint64_t hits, compiles;
};

static const kc_dl_sym nvrtc_syms[] = {
#define SYM(field)                                                                                 \
  { "nvrtc" #field, offsetof(nvrtc_api, field) }
    SYM(GetErrorString),
    SYM(Version),
    SYM(GetNumSupportedArchs),
    SYM(GetSupportedArchs),
    SYM(CreateProgram),
    SYM(DestroyProgram),
    SYM(CompileProgram),
    SYM(GetProgramLogSize),
    SYM(GetProgramLog),
    SYM(GetPTXSize),
    SYM(GetPTX),
    SYM(GetCUBINSize),
    SYM(GetCUBIN),
#undef SYM
};

/* dlopen NVRTC: by soname, then at the build's toolkit path; the reason when neither loads. */
static kc_status open_nvrtc(kc_nvrtc *nv) {
  const char *tries[] = {KERNC_NVRTC_SONAME, KERNC_NVRTC_PATH};
  char why[1024] = "";
  for (size_t i = 0; i < sizeof tries / sizeof *tries && !nv->lib; i++) {
    nv->lib = dlopen(tries[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    const char *e = nv->lib ? NULL : dlerror();
    if (e && !*why) snprintf(why, sizeof why, "%s", e);
  }
  if (!nv->lib)
    return kc_errorf(nv->ctx, KC_ERR_UNSUPPORTED,
                     "CUDA target unavailable: cannot load NVRTC (%s); install the CUDA toolkit "
                     "or put its lib64 folder on LD_LIBRARY_PATH",
                     why);
  const char *missing =
      kc_dl_resolve(nv->lib, nvrtc_syms, sizeof nvrtc_syms / sizeof *nvrtc_syms, &nv->api);
  if (missing)
    return kc_errorf(nv->ctx, KC_ERR_UNSUPPORTED, "CUDA target unavailable: NVRTC lacks %s",
                     missing);
  return KC_OK;
}

kc_status kc_nvrtc_new(kc_context *ctx, kc_nvrtc **out) {
  *out = NULL;
  kc_nvrtc *nv = calloc(1, sizeof *nv);
  if (!nv) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory");
  nv->ctx = ctx;
  kc_status s = open_nvrtc(nv);
  if (s != KC_OK) {
    kc_nvrtc_free(nv);
    return s;
  }
  const nvrtc_api *a = &nv->api;
  int n = 0, major = 0, minor = 0;
  if (a->Version(&major, &minor) == NVRTC_SUCCESS) nv->version = major * 100 + minor;
  if (a->GetNumSupportedArchs(&n) == NVRTC_SUCCESS && n > 0) {
    nv->archs = calloc((size_t)n, sizeof *nv->archs);
    if (nv->archs && a->GetSupportedArchs(nv->archs) == NVRTC_SUCCESS) nv->narchs = n;
  }
  *out = nv;
  return KC_OK;
}

void kc_nvrtc_free(kc_nvrtc *nv) {
  if (!nv) return;
  for (size_t i = 0; i < nv->n; i++)
    free(nv->e[i].data);
  free(nv->e);
  free(nv->dir);
  free(nv->archs);
  if (nv->lib) dlclose(nv->lib);
  free(nv);
}

kc_status kc_nvrtc_set_cache_dir(kc_nvrtc *nv, const char *dir) {
  free(nv->dir);
  nv->dir = dir ? strdup(dir) : NULL;
  return dir && !nv->dir ? kc_errorf(nv->ctx, KC_ERR_NOMEM, "out of memory") : KC_OK;
}

int kc_nvrtc_arch_for(kc_nvrtc *nv, int cc, bool *exact) {
  int best = 0;
  for (int i = 0; i < nv->narchs; i++)
    if (nv->archs[i] <= cc && nv->archs[i] > best) best = nv->archs[i];
  *exact = best == cc;
  return best;
}

void kc_nvrtc_stats(const kc_nvrtc *nv, uint64_t *hits, uint64_t *compiles) {
  *hits = nv->hits;
  *compiles = nv->compiles;
}

static void hash(const char *s, uint64_t *h1, uint64_t *h2, size_t *len) {
  uint64_t a = 0xcbf29ce484222325ULL, b = 5381;
  size_t n = 0;
  for (; s[n]; n++) {
    a = (a ^ (unsigned char)s[n]) * 0x100000001b3ULL;
    b = b * 33 + (unsigned char)s[n];
  }
  *h1 = a;
  *h2 = b;
  *len = n;
}

static void file_name(const kc_nvrtc *nv, const entry *k, char *buf, size_t size) {
  snprintf(buf, size, "%s/%016llx%016llx-%zx-nvrtc%d-%s_%d.%s", nv->dir, (unsigned long long)k->h1,
           (unsigned long long)k->h2, k->srclen, nv->version, k->ptx ? "compute" : "sm", k->arch,
           k->ptx ? "ptx" : "cubin");
}

static entry *find(kc_nvrtc *nv, const entry *k) {
  for (size_t i = 0; i < nv->n; i++) {
    entry *e = &nv->e[i];
    if (e->h1 == k->h1 && e->h2 == k->h2 && e->srclen == k->srclen && e->arch == k->arch &&
        e->ptx == k->ptx)
      return e;
  }
  return NULL;
}

/* Add k with data (taken over); NULL when out of memory (data freed). */
static entry *add(kc_nvrtc *nv, const entry *k, void *data, size_t size) {
  if (nv->n == nv->cap) {
    size_t cap = nv->cap ? nv->cap * 2 : 16;
    entry *e = realloc(nv->e, cap * sizeof *e);
    if (!e) {
      free(data);
      return NULL;
    }
    nv->e = e;
    nv->cap = cap;
  }
  entry *e = &nv->e[nv->n++];
  *e = *k;
  e->data = data;
  e->size = size;
  return e;
}

/* The image of k from the cache folder, or NULL. */
static void *read_file(const kc_nvrtc *nv, const entry *k, size_t *size) {
  char path[4096];
  file_name(nv, k, path, sizeof path);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  void *data = NULL;
  long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  if (len > 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)len + 1))) {
    if (fread(data, 1, (size_t)len, f) != (size_t)len) {
      free(data);
      data = NULL;
    } else {
      ((char *)data)[len] = 0;
      *size = (size_t)len;
    }
  }
  fclose(f);
  return data;
}

/* Best effort: a cache that cannot be written only costs time. */
static void write_file(const kc_nvrtc *nv, const entry *e) {
  char path[4096], tmp[4200];
  file_name(nv, e, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return;
  bool ok = fwrite(e->data, 1, e->size, f) == e->size;
  if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) remove(tmp);
}

static kc_status fail(kc_nvrtc *nv, nvrtcProgram p, nvrtcResult r, const char *name,
                      const entry *k) {
  kc_status s = kc_errorf(nv->ctx, r == NVRTC_ERROR_OUT_OF_MEMORY ? KC_ERR_NOMEM : KC_ERR_INTERNAL,
                          "NVRTC could not compile %s for %s_%d: %s", name,
                          k->ptx ? "compute" : "sm", k->arch, nv->api.GetErrorString(r));
  size_t len = 0;
  if (p && nv->api.GetProgramLogSize(p, &len) == NVRTC_SUCCESS && len > 1) {
    char *log = malloc(len);
    if (log && nv->api.GetProgramLog(p, log) == NVRTC_SUCCESS) kc_error_append(nv->ctx, "%s", log);
    free(log);
  }
  return s;
}

/* Run NVRTC for k; the image goes to *data / *size (malloc'd; PTX NUL-terminated). */
static kc_status run_nvrtc(kc_nvrtc *nv, const char *src, const char *name, const entry *k,
                           void **data, size_t *size) {
  char arch[64], inc[4096];
  snprintf(arch, sizeof arch, "--gpu-architecture=%s_%d", k->ptx ? "compute" : "sm", k->arch);
  const char *dir = getenv("KERNC_CUDA_INCLUDE");
  snprintf(inc, sizeof inc, "-I%s", dir && *dir ? dir : KERNC_CUDA_INCLUDE_DIR);
  /* -w: generated code declares strides it may not use; a log is for errors */
  const char *opts[] = {arch, inc, "--std=c++17", "-w"};
  const nvrtc_api *a = &nv->api;
  nvrtcProgram p = NULL;
  nvrtcResult r = a->CreateProgram(&p, src, name, 0, NULL, NULL);
  if (r == NVRTC_SUCCESS) r = a->CompileProgram(p, (int)(sizeof opts / sizeof *opts), opts);
  if (r == NVRTC_SUCCESS) r = k->ptx ? a->GetPTXSize(p, size) : a->GetCUBINSize(p, size);
  if (r == NVRTC_SUCCESS && !(*data = malloc(*size + 1))) r = NVRTC_ERROR_OUT_OF_MEMORY;
  if (r == NVRTC_SUCCESS) {
    r = k->ptx ? a->GetPTX(p, *data) : a->GetCUBIN(p, *data);
    ((char *)*data)[*size] = 0;
    if (r != NVRTC_SUCCESS) free(*data);
  }
  kc_status s = r == NVRTC_SUCCESS ? KC_OK : fail(nv, p, r, name, k);
  a->DestroyProgram(&p);
  return s;
}

kc_status kc_nvrtc_compile(kc_nvrtc *nv, const char *src, const char *name, int arch, bool ptx,
                           kc_cuda_image *out) {
  entry k = {.arch = arch, .ptx = ptx};
  hash(src, &k.h1, &k.h2, &k.srclen);
  entry *e = find(nv, &k);
  void *data = NULL;
  size_t size = 0;
  if (!e && nv->dir && (data = read_file(nv, &k, &size))) e = add(nv, &k, data, size);
  if (e) {
    nv->hits++;
  } else {
    kc_status s = run_nvrtc(nv, src, name, &k, &data, &size);
    if (s != KC_OK) return s;
    nv->compiles++;
    if (!(e = add(nv, &k, data, size))) return kc_errorf(nv->ctx, KC_ERR_NOMEM, "out of memory");
    if (nv->dir) write_file(nv, e);
  }
  *out = (kc_cuda_image){.data = e->data, .size = e->size, .ptx = ptx, .arch = arch};
  return KC_OK;
}
