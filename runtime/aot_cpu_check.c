/*
 * runtime/aot_cpu_check.c - the CPU check of a model compiled ahead of time: its object records
 * the LLVM target it was compiled for ("kernc-target triple=... cpu=... features=+a,+b,..."),
 * and NAME_create checks this CPU against it before any generated kernel can run, so a model
 * built for AVX-512 fails with a message naming the missing features instead of SIGILL.
 *
 * Part of the runtime archive kernc_rt (libc only: cpuid and xgetbv, no LLVM). x86-64 features
 * follow LLVM 19's host detection (lib/TargetParser/Host.cpp), including the OS register-state
 * checks for AVX, AVX-512 and AMX; features it does not know are not checked; on other
 * architectures nothing is checked.
 * A library may hold its kernels for several CPUs (kc_aot_targets): NAME_create takes the last
 * variant whose features this CPU has, with the same check.
 * Invariants: the message of a failed create is per thread (as dlerror's), since no instance
 * exists to hold it.
 */
#define _GNU_SOURCE /* dladdr: the library's own file name for messages */
#include "codegen/aot.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define KC_AOT_CHECK_X86 1
#endif

/* ---- the CPU check ------------------------------------------------------------------------ */

/* Why the last create on this thread failed; "" when it did not. */
static _Thread_local char create_error[2048];

const char *kc_aot_create_error(void) { return create_error; }

void kc_aot_create_failed(const char *msg) {
  snprintf(create_error, sizeof create_error, "%s", msg ? msg : "");
}

#ifdef KC_AOT_CHECK_X86
enum { R_EAX, R_EBX, R_ECX, R_EDX };
/* OS support a feature needs beyond its cpuid bit: the register state xgetbv must show saved. */
enum { SAVE_NONE, SAVE_AVX, SAVE_AVX512, SAVE_AMX };

typedef struct x86_feature {
  const char *name;   /* LLVM's */
  unsigned leaf, sub; /* cpuid */
  unsigned char reg, bit, save;
  const char *also; /* a feature it needs as well (LLVM: avx10.1-512 needs avx10.1-256) */
} x86_feature;

/* Host.cpp's rules, in its order. One difference: LLVM 19 reads leaf 0x24 without setting the
 * subleaf (whatever ECX holds), which can miss avx10.1-512; here it is subleaf 0, as specified. */
static const x86_feature x86_features[] = {
    {"cx8", 1, 0, R_EDX, 8, SAVE_NONE, NULL},
    {"cmov", 1, 0, R_EDX, 15, SAVE_NONE, NULL},
    {"mmx", 1, 0, R_EDX, 23, SAVE_NONE, NULL},
    {"fxsr", 1, 0, R_EDX, 24, SAVE_NONE, NULL},
    {"sse", 1, 0, R_EDX, 25, SAVE_NONE, NULL},
    {"sse2", 1, 0, R_EDX, 26, SAVE_NONE, NULL},
    {"sse3", 1, 0, R_ECX, 0, SAVE_NONE, NULL},
    {"pclmul", 1, 0, R_ECX, 1, SAVE_NONE, NULL},
    {"ssse3", 1, 0, R_ECX, 9, SAVE_NONE, NULL},
    {"cx16", 1, 0, R_ECX, 13, SAVE_NONE, NULL},
    {"sse4.1", 1, 0, R_ECX, 19, SAVE_NONE, NULL},
    {"sse4.2", 1, 0, R_ECX, 20, SAVE_NONE, NULL},
    {"crc32", 1, 0, R_ECX, 20, SAVE_NONE, NULL},
    {"movbe", 1, 0, R_ECX, 22, SAVE_NONE, NULL},
    {"popcnt", 1, 0, R_ECX, 23, SAVE_NONE, NULL},
    {"aes", 1, 0, R_ECX, 25, SAVE_NONE, NULL},
    {"rdrnd", 1, 0, R_ECX, 30, SAVE_NONE, NULL},
    {"avx", 1, 0, R_ECX, 28, SAVE_AVX, NULL},
    {"fma", 1, 0, R_ECX, 12, SAVE_AVX, NULL},
    {"xsave", 1, 0, R_ECX, 26, SAVE_AVX, NULL},
    {"f16c", 1, 0, R_ECX, 29, SAVE_AVX, NULL},
    {"sahf", 0x80000001, 0, R_ECX, 0, SAVE_NONE, NULL},
    {"lzcnt", 0x80000001, 0, R_ECX, 5, SAVE_NONE, NULL},
    {"sse4a", 0x80000001, 0, R_ECX, 6, SAVE_NONE, NULL},
    {"prfchw", 0x80000001, 0, R_ECX, 8, SAVE_NONE, NULL},
    {"xop", 0x80000001, 0, R_ECX, 11, SAVE_AVX, NULL},
    {"lwp", 0x80000001, 0, R_ECX, 15, SAVE_NONE, NULL},
    {"fma4", 0x80000001, 0, R_ECX, 16, SAVE_AVX, NULL},
    {"tbm", 0x80000001, 0, R_ECX, 21, SAVE_NONE, NULL},
    {"mwaitx", 0x80000001, 0, R_ECX, 29, SAVE_NONE, NULL},
    {"64bit", 0x80000001, 0, R_EDX, 29, SAVE_NONE, NULL},
    {"clzero", 0x80000008, 0, R_EBX, 0, SAVE_NONE, NULL},
    {"rdpru", 0x80000008, 0, R_EBX, 4, SAVE_NONE, NULL},
    {"wbnoinvd", 0x80000008, 0, R_EBX, 9, SAVE_NONE, NULL},
    {"fsgsbase", 7, 0, R_EBX, 0, SAVE_NONE, NULL},
    {"sgx", 7, 0, R_EBX, 2, SAVE_NONE, NULL},
    {"bmi", 7, 0, R_EBX, 3, SAVE_NONE, NULL},
    {"avx2", 7, 0, R_EBX, 5, SAVE_AVX, NULL},
    {"bmi2", 7, 0, R_EBX, 8, SAVE_NONE, NULL},
    {"invpcid", 7, 0, R_EBX, 10, SAVE_NONE, NULL},
    {"rtm", 7, 0, R_EBX, 11, SAVE_NONE, NULL},
    {"avx512f", 7, 0, R_EBX, 16, SAVE_AVX512, NULL},
    {"evex512", 7, 0, R_EBX, 16, SAVE_AVX512, NULL},
    {"avx512dq", 7, 0, R_EBX, 17, SAVE_AVX512, NULL},
    {"rdseed", 7, 0, R_EBX, 18, SAVE_NONE, NULL},
    {"adx", 7, 0, R_EBX, 19, SAVE_NONE, NULL},
    {"avx512ifma", 7, 0, R_EBX, 21, SAVE_AVX512, NULL},
    {"clflushopt", 7, 0, R_EBX, 23, SAVE_NONE, NULL},
    {"clwb", 7, 0, R_EBX, 24, SAVE_NONE, NULL},
    {"avx512pf", 7, 0, R_EBX, 26, SAVE_AVX512, NULL},
    {"avx512er", 7, 0, R_EBX, 27, SAVE_AVX512, NULL},
    {"avx512cd", 7, 0, R_EBX, 28, SAVE_AVX512, NULL},
    {"sha", 7, 0, R_EBX, 29, SAVE_NONE, NULL},
    {"avx512bw", 7, 0, R_EBX, 30, SAVE_AVX512, NULL},
    {"avx512vl", 7, 0, R_EBX, 31, SAVE_AVX512, NULL},
    {"prefetchwt1", 7, 0, R_ECX, 0, SAVE_NONE, NULL},
    {"avx512vbmi", 7, 0, R_ECX, 1, SAVE_AVX512, NULL},
    {"pku", 7, 0, R_ECX, 4, SAVE_NONE, NULL},
    {"waitpkg", 7, 0, R_ECX, 5, SAVE_NONE, NULL},
    {"avx512vbmi2", 7, 0, R_ECX, 6, SAVE_AVX512, NULL},
    {"shstk", 7, 0, R_ECX, 7, SAVE_NONE, NULL},
    {"gfni", 7, 0, R_ECX, 8, SAVE_NONE, NULL},
    {"vaes", 7, 0, R_ECX, 9, SAVE_AVX, NULL},
    {"vpclmulqdq", 7, 0, R_ECX, 10, SAVE_AVX, NULL},
    {"avx512vnni", 7, 0, R_ECX, 11, SAVE_AVX512, NULL},
    {"avx512bitalg", 7, 0, R_ECX, 12, SAVE_AVX512, NULL},
    {"avx512vpopcntdq", 7, 0, R_ECX, 14, SAVE_AVX512, NULL},
    {"rdpid", 7, 0, R_ECX, 22, SAVE_NONE, NULL},
    {"kl", 7, 0, R_ECX, 23, SAVE_NONE, NULL},
    {"cldemote", 7, 0, R_ECX, 25, SAVE_NONE, NULL},
    {"movdiri", 7, 0, R_ECX, 27, SAVE_NONE, NULL},
    {"movdir64b", 7, 0, R_ECX, 28, SAVE_NONE, NULL},
    {"enqcmd", 7, 0, R_ECX, 29, SAVE_NONE, NULL},
    {"uintr", 7, 0, R_EDX, 5, SAVE_NONE, NULL},
    {"avx512vp2intersect", 7, 0, R_EDX, 8, SAVE_AVX512, NULL},
    {"serialize", 7, 0, R_EDX, 14, SAVE_NONE, NULL},
    {"tsxldtrk", 7, 0, R_EDX, 16, SAVE_NONE, NULL},
    {"pconfig", 7, 0, R_EDX, 18, SAVE_NONE, NULL},
    {"amx-bf16", 7, 0, R_EDX, 22, SAVE_AMX, NULL},
    {"avx512fp16", 7, 0, R_EDX, 23, SAVE_AVX512, NULL},
    {"amx-tile", 7, 0, R_EDX, 24, SAVE_AMX, NULL},
    {"amx-int8", 7, 0, R_EDX, 25, SAVE_AMX, NULL},
    {"sha512", 7, 1, R_EAX, 0, SAVE_NONE, NULL},
    {"sm3", 7, 1, R_EAX, 1, SAVE_NONE, NULL},
    {"sm4", 7, 1, R_EAX, 2, SAVE_NONE, NULL},
    {"raoint", 7, 1, R_EAX, 3, SAVE_NONE, NULL},
    {"avxvnni", 7, 1, R_EAX, 4, SAVE_AVX, NULL},
    {"avx512bf16", 7, 1, R_EAX, 5, SAVE_AVX512, NULL},
    {"cmpccxadd", 7, 1, R_EAX, 7, SAVE_NONE, NULL},
    {"amx-fp16", 7, 1, R_EAX, 21, SAVE_AMX, NULL},
    {"hreset", 7, 1, R_EAX, 22, SAVE_NONE, NULL},
    {"avxifma", 7, 1, R_EAX, 23, SAVE_AVX, NULL},
    {"avxvnniint8", 7, 1, R_EDX, 4, SAVE_AVX, NULL},
    {"avxneconvert", 7, 1, R_EDX, 5, SAVE_AVX, NULL},
    {"amx-complex", 7, 1, R_EDX, 8, SAVE_AMX, NULL},
    {"avxvnniint16", 7, 1, R_EDX, 10, SAVE_AVX, NULL},
    {"prefetchi", 7, 1, R_EDX, 14, SAVE_NONE, NULL},
    {"usermsr", 7, 1, R_EDX, 15, SAVE_NONE, NULL},
    {"avx10.1-256", 7, 1, R_EDX, 19, SAVE_NONE, NULL},
    /* APX: one cpuid bit, several LLVM features */
    {"egpr", 7, 1, R_EDX, 21, SAVE_NONE, NULL},
    {"push2pop2", 7, 1, R_EDX, 21, SAVE_NONE, NULL},
    {"ppx", 7, 1, R_EDX, 21, SAVE_NONE, NULL},
    {"ndd", 7, 1, R_EDX, 21, SAVE_NONE, NULL},
    {"ccmp", 7, 1, R_EDX, 21, SAVE_NONE, NULL},
    {"nf", 7, 1, R_EDX, 21, SAVE_NONE, NULL},
    {"cf", 7, 1, R_EDX, 21, SAVE_NONE, NULL},
    {"zu", 7, 1, R_EDX, 21, SAVE_NONE, NULL},
    {"xsaveopt", 0xd, 1, R_EAX, 0, SAVE_AVX, NULL},
    {"xsavec", 0xd, 1, R_EAX, 1, SAVE_AVX, NULL},
    {"xsaves", 0xd, 1, R_EAX, 3, SAVE_AVX, NULL},
    {"ptwrite", 0x14, 0, R_EBX, 4, SAVE_NONE, NULL},
    {"widekl", 0x19, 0, R_EBX, 2, SAVE_NONE, NULL},
    {"avx10.1-512", 0x24, 0, R_EBX, 18, SAVE_NONE, "avx10.1-256"},
};

/* The cpuid leaves (leaf, subleaf) the table reads. */
static const unsigned x86_leaves[][2] = {{1, 0},    {7, 0},          {7, 1},
                                         {0xd, 1},  {0x14, 0},       {0x19, 0},
                                         {0x24, 0}, {0x80000001, 0}, {0x80000008, 0}};
#define X86_NLEAVES (sizeof x86_leaves / sizeof *x86_leaves)

/* This CPU: the registers of each leaf (zero when the CPU does not have it), what the OS saves. */
typedef struct x86_cpu {
  unsigned r[X86_NLEAVES][4];
  bool avx_save, avx512_save, amx_save;
} x86_cpu;

static void x86_detect(x86_cpu *c) {
  memset(c, 0, sizeof *c);
  unsigned max = __get_cpuid_max(0, NULL), max_ext = __get_cpuid_max(0x80000000, NULL), max7 = 0;
  unsigned a, b, cx, d;
  if (max >= 7) {
    __cpuid_count(7, 0, a, b, cx, d);
    max7 = a;
  }
  for (size_t i = 0; i < X86_NLEAVES; i++) {
    unsigned leaf = x86_leaves[i][0], sub = x86_leaves[i][1];
    bool valid = leaf >= 0x80000000 ? leaf <= max_ext : leaf <= max && (leaf != 7 || sub <= max7);
    if (!valid) continue;
    __cpuid_count(leaf, sub, c->r[i][R_EAX], c->r[i][R_EBX], c->r[i][R_ECX], c->r[i][R_EDX]);
  }
  unsigned ecx1 = c->r[0][R_ECX];
  if (!((ecx1 >> 27) & 1)) return; /* no OSXSAVE: xgetbv would fault */
  unsigned xcr0, xcr0_hi;
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(xcr0), "=d"(xcr0_hi) : "c"(0)); /* xgetbv */
  c->avx_save = ((ecx1 >> 28) & 1) && (xcr0 & 0x6) == 0x6;
  c->avx512_save = c->avx_save && (xcr0 & 0xe0) == 0xe0;
  c->amx_save = (xcr0 & (3u << 17)) == (3u << 17);
}

static const x86_feature *x86_find(const char *name, size_t len) {
  for (size_t i = 0; i < sizeof x86_features / sizeof *x86_features; i++)
    if (strlen(x86_features[i].name) == len && strncmp(x86_features[i].name, name, len) == 0)
      return &x86_features[i];
  return NULL;
}

static bool x86_has(const x86_cpu *c, const x86_feature *f) {
  size_t i = 0;
  while (x86_leaves[i][0] != f->leaf || x86_leaves[i][1] != f->sub)
    i++;
  bool ok = (c->r[i][f->reg] >> f->bit) & 1;
  if (f->save == SAVE_AVX) ok = ok && c->avx_save;
  if (f->save == SAVE_AVX512) ok = ok && c->avx512_save;
  if (f->save == SAVE_AMX) ok = ok && c->amx_save;
  if (f->also) ok = ok && x86_has(c, x86_find(f->also, strlen(f->also)));
  return ok;
}
#endif

/* name[0..len) appended to buf (size bytes), comma-separated; silently cut when full. */
static void add_name(char *buf, size_t size, const char *name, size_t len) {
  if (!buf || !size) return;
  size_t l = strlen(buf);
  snprintf(buf + l, size - l, "%s%.*s", l ? "," : "", (int)len, name);
}

int kc_aot_cpu_lacks(const char *features, char *lacks, size_t lsize, char *unknown, size_t usize) {
  if (lacks && lsize) lacks[0] = 0;
  if (unknown && usize) unknown[0] = 0;
  int n = 0;
#ifdef KC_AOT_CHECK_X86
  x86_cpu cpu;
  x86_detect(&cpu);
  for (const char *p = features; p && *p;) {
    size_t len = strcspn(p, ",");
    if (len > 1 && p[0] == '+') {
      const x86_feature *f = x86_find(p + 1, len - 1);
      if (!f)
        add_name(unknown, usize, p + 1, len - 1);
      else if (!x86_has(&cpu, f)) {
        add_name(lacks, lsize, p + 1, len - 1);
        n++;
      }
    }
    p += len + (p[len] == ',');
  }
#else
  (void)features;
#endif
  return n;
}

/* The file of the library this runtime is linked into, else "model NAME". */
static void library_name(const kc_plan *d, char *buf, size_t size) {
  Dl_info info;
  if (dladdr((const void *)d, &info) && info.dli_fname && *info.dli_fname) {
    const char *slash = strrchr(info.dli_fname, '/');
    snprintf(buf, size, "%s", slash ? slash + 1 : info.dli_fname);
  } else {
    snprintf(buf, size, "model %s", d->name);
  }
}

/* The value of "key=" in the target string (up to the next space) into buf. */
static void target_field(const char *target, const char *key, char *buf, size_t size) {
  const char *p = strstr(target, key);
  p = p ? p + strlen(key) : "?";
  snprintf(buf, size, "%.*s", (int)strcspn(p, " "), p);
}

kc_exec *kc_aot_create_checked(const kc_plan *d, const char *target, int threads) {
  create_error[0] = 0;
  const char *features = target ? strstr(target, " features=") : NULL;
  char lacks[512];
  if (features && kc_aot_cpu_lacks(features + 10, lacks, sizeof lacks, NULL, 0) > 0) {
    char lib[256], triple[128], cpu[128], list[1024] = "";
    library_name(d, lib, sizeof lib);
    target_field(target, " triple=", triple, sizeof triple);
    target_field(target, " cpu=", cpu, sizeof cpu);
    triple[strcspn(triple, "-")] = 0; /* the architecture */
    for (const char *p = features + 10; *p && *p != ' ';) {
      size_t len = strcspn(p, ", ");
      if (len > 1 && p[0] == '+') add_name(list, sizeof list, p + 1, len - 1);
      p += len + (p[len] == ',');
    }
    snprintf(create_error, sizeof create_error,
             "%s was compiled for %s CPU '%s' with %s; this CPU lacks %s (compile the model "
             "for a CPU this one has all features of: kernc compile --cpu=x86-64-v2 or "
             "--cpu=multi for any recent x86-64, or on a machine with this CPU)",
             lib, triple, cpu, list, lacks);
    return NULL;
  }
  kc_exec *m = kc_aot_create(d, threads);
  if (!m) snprintf(create_error, sizeof create_error, "out of memory creating model %s", d->name);
  return m;
}

/* ---- the variants of a library (kc_aot_targets) ------------------------------------------- */

int64_t kc_aot_pick(const kc_aot_targets *t) {
  for (int64_t i = t->n - 1; i >= 0; i--) {
    const char *features = t->v[i]->target ? strstr(t->v[i]->target, " features=") : NULL;
    if (!features || kc_aot_cpu_lacks(features + 10, NULL, 0, NULL, 0) == 0) return i;
  }
  return -1;
}

kc_exec *kc_aot_create_best(const kc_aot_targets *t, int threads) {
  int64_t i = kc_aot_pick(t);
  if (i < 0) i = 0;
  return kc_aot_create_checked(t->v[i]->plan, t->v[i]->target, threads);
}

const char *kc_aot_target(const kc_aot_targets *t) {
  int64_t i = kc_aot_pick(t);
  return i < 0 ? NULL : t->v[i]->cpu;
}
