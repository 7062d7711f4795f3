/*
 * tests/cuda_emu/fake_nvrtc.c - the NVRTC entry points kernc uses, built as libnvrtc.so.13 for
 * tests only (see fake_cuda.c): "compiling" a program runs the host C++ compiler on kernc's CUDA
 * C with the emulation's headers (tests/cuda_emu/include, passed by kernc as its -I option when
 * KERNC_CUDA_INCLUDE points there), into a shared object; the "cubin" or "PTX" handed back is
 * that object's path, which fake_cuda.c's cuModuleLoadData opens.
 *
 * Each __global__ kernel gets a host entry NAME__emu(const void *args) that unpacks the argument
 * block as the real launch would. Objects are cached by a hash of the source in $KC_EMU_CACHE
 * (default /tmp/kc_cuda_emu_UID), written under a temporary name and renamed, so parallel tests
 * share the cache safely. The compiler is $KC_EMU_CXX (default c++).
 */
#define _GNU_SOURCE
#include "include/kc_emu_abi.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef int nvrtcResult;
enum { NVRTC_SUCCESS = 0, NVRTC_ERROR_OUT_OF_MEMORY = 1, NVRTC_ERROR_COMPILATION = 6 };

typedef struct program {
  char *src;
  char *log;   /* compiler output on failure, else "" */
  char *image; /* the compiled object's path */
} program;
typedef program *nvrtcProgram;

static const char *KERNEL_HEAD = "extern \"C\" __global__ void __launch_bounds__(";

const char *nvrtcGetErrorString(nvrtcResult r) {
  return r == NVRTC_SUCCESS ? "NVRTC_SUCCESS"
         : r == NVRTC_ERROR_COMPILATION
             ? "NVRTC_ERROR_COMPILATION (host emulation: the C++ compiler failed)"
             : "NVRTC_ERROR (host emulation)";
}
nvrtcResult nvrtcVersion(int *major, int *minor) { return *major = 13, *minor = 0, NVRTC_SUCCESS; }
nvrtcResult nvrtcGetNumSupportedArchs(int *n) { return *n = 2, NVRTC_SUCCESS; }
nvrtcResult nvrtcGetSupportedArchs(int *archs) {
  return archs[0] = 80, archs[1] = 90, NVRTC_SUCCESS;
}

nvrtcResult nvrtcCreateProgram(nvrtcProgram *out, const char *src, const char *name, int nheaders,
                               const char *const *headers, const char *const *include_names) {
  (void)name, (void)nheaders, (void)headers, (void)include_names;
  program *p = calloc(1, sizeof *p);
  if (!p || !(p->src = strdup(src)) || !(p->log = strdup(""))) {
    if (p) free(p->src);
    free(p);
    return NVRTC_ERROR_OUT_OF_MEMORY;
  }
  *out = p;
  return NVRTC_SUCCESS;
}

nvrtcResult nvrtcDestroyProgram(nvrtcProgram *p) {
  if (*p) free((*p)->src), free((*p)->log), free((*p)->image), free(*p);
  *p = NULL;
  return NVRTC_SUCCESS;
}

/* The source plus one host entry per kernel; NULL when out of memory. */
static char *with_entries(const char *src) {
  size_t cap = strlen(src) + 4096, len = strlen(src);
  char *s = malloc(cap);
  if (!s) return NULL;
  memcpy(s, src, len + 1);
  for (const char *k = strstr(src, KERNEL_HEAD); k; k = strstr(k + 1, KERNEL_HEAD)) {
    char name[256];
    unsigned nbufs, ndims;
    if (sscanf(k + strlen(KERNEL_HEAD), "%*d) %255[A-Za-z0-9_](const kc_args<%u, %u> a)", name,
               &nbufs, &ndims) != 3)
      continue;
    char entry[768];
    int n = snprintf(entry, sizeof entry,
                     "extern \"C\" void %s" KC_EMU_ENTRY_SUFFIX "(const void *w) "
                     "{ %s(*(const kc_args<%u, %u> *)w); }\n",
                     name, name, nbufs, ndims);
    if (len + (size_t)n + 1 > cap) {
      char *t = realloc(s, cap = 2 * cap + (size_t)n);
      if (!t) return free(s), NULL;
      s = t;
    }
    memcpy(s + len, entry, (size_t)n + 1);
    len += (size_t)n;
  }
  return s;
}

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return strdup("");
  char *buf = malloc(65536);
  size_t n = buf ? fread(buf, 1, 65535, f) : 0;
  fclose(f);
  if (buf) buf[n] = 0;
  return buf;
}

/* Run the C++ compiler on cpp into so_tmp, its output into log; 0 when it succeeded. */
static int run_compiler(const char *include, const char *cpp, const char *so_tmp, const char *log) {
  const char *cxx = getenv("KC_EMU_CXX");
  char inc[4200];
  snprintf(inc, sizeof inc, "-I%s", include);
  char *argv[] = {(char *)(cxx && *cxx ? cxx : "c++"),
                  "-std=c++17",
                  "-O0", /* 40% less compile time than -O1; the kernels run on tiny tensors */
                  "-w",
                  "-shared",
                  "-fPIC",
                  inc,
                  (char *)cpp,
                  "-o",
                  (char *)so_tmp,
                  NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  int status = 0;
  if (rc != 0 || waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

nvrtcResult nvrtcCompileProgram(nvrtcProgram p, int nopts, const char *const *opts) {
  const char *include = ".";
  for (int i = 0; i < nopts; i++)
    if (strncmp(opts[i], "-I", 2) == 0) include = opts[i] + 2;
  char *src = with_entries(p->src);
  if (!src) return NVRTC_ERROR_OUT_OF_MEMORY;
  /* FNV-1a over the source, the include folder and the emulation header's text (a changed
   * header must not reuse objects compiled with the old one) */
  char hdr_path[4200];
  snprintf(hdr_path, sizeof hdr_path, "%s/kc_emu_device.h", include);
  char *hdr = read_all(hdr_path);
  uint64_t h = 1469598103934665603ULL;
  for (const char *part[] = {src, include, hdr ? hdr : ""}, **q = part; q < part + 3; q++)
    for (const char *c = *q; *c; c++)
      h = (h ^ (unsigned char)*c) * 1099511628211ULL;
  free(hdr);
  char dir[2048], base[2300], so[2400], cpp[2400], tmp[2400], log[2400];
  const char *env = getenv("KC_EMU_CACHE");
  if (env && *env)
    snprintf(dir, sizeof dir, "%s", env);
  else
    snprintf(dir, sizeof dir, "/tmp/kc_cuda_emu_%u", (unsigned)getuid());
  mkdir(dir, 0755);
  snprintf(base, sizeof base, "%s/%016llx", dir, (unsigned long long)h);
  snprintf(so, sizeof so, "%s.so", base);
  snprintf(cpp, sizeof cpp, "%s.%d.cpp", base, (int)getpid());
  snprintf(tmp, sizeof tmp, "%s.%d.so", base, (int)getpid());
  snprintf(log, sizeof log, "%s.%d.log", base, (int)getpid());
  struct stat st;
  nvrtcResult r = NVRTC_SUCCESS;
  if (stat(so, &st) != 0) {
    FILE *f = fopen(cpp, "w");
    bool written = f && fputs(src, f) >= 0;
    if (f && fclose(f) != 0) written = false;
    if (!written || run_compiler(include, cpp, tmp, log) != 0 || rename(tmp, so) != 0) {
      free(p->log);
      char *out = read_all(log);
      size_t n = strlen(cpp) + (out ? strlen(out) : 0) + 64;
      if ((p->log = malloc(n)))
        snprintf(p->log, n, "host emulation: c++ failed on %s:\n%s", cpp, out ? out : "");
      free(out);
      r = NVRTC_ERROR_COMPILATION;
    } else {
      remove(cpp);
    }
    remove(log);
    remove(tmp);
  }
  free(src);
  if (r == NVRTC_SUCCESS && !(p->image = strdup(so))) r = NVRTC_ERROR_OUT_OF_MEMORY;
  return r;
}

nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram p, size_t *n) {
  return *n = (p->log ? strlen(p->log) : 0) + 1, NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetProgramLog(nvrtcProgram p, char *buf) {
  strcpy(buf, p->log ? p->log : "");
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetCUBINSize(nvrtcProgram p, size_t *n) {
  return *n = strlen(p->image) + 1, NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetCUBIN(nvrtcProgram p, char *buf) {
  return strcpy(buf, p->image), NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetPTXSize(nvrtcProgram p, size_t *n) { return nvrtcGetCUBINSize(p, n); }
nvrtcResult nvrtcGetPTX(nvrtcProgram p, char *buf) { return nvrtcGetCUBIN(p, buf); }
