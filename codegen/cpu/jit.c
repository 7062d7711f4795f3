/*
 * codegen/cpu/jit.c - the CPU target: LLVM native target, a target machine for the host CPU
 * name and features (or, for kc_export --cpu, a named CPU and the features of x86_cpus.def), an
 * ORC LLJIT with a thread-safe context, the O3 pipeline (after merging identical functions;
 * kc_options.opt_level may ask for less), and symbol lookup. Also the facts (vector width, FMA,
 * VNNI from the chosen CPU's features; caches from the host) the emitters size kernels by.
 *
 * Invariants:
 *   - Two target machines exist with the same triple/CPU/features/-O level: one was consumed
 *     by the JIT's target machine builder, cpu->tm runs the pass pipeline, so the IR is
 *     optimized for exactly the machine code generator that compiles it.
 *   - Process symbols (libm, later libmvec when linked in) are visible to JIT'd code through a
 *     process search generator, so emitters may call them by name; the libcalls LLVM itself may
 *     emit that the process may lack (__truncsfbf2) are defined by address.
 *   - Every LLVM error message ends in the context's error buffer; none is printed.
 *   - cpu->features is the one feature list of the chosen CPU: the target machines get it, the
 *     emitters' facts are derived from it, and an AOT object records it.
 */
#include "codegen/aot.h" /* kc_truncsfbf2 */
#include "cpu.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kc_status kc_cpu_llvm_error(kc_cpu *cpu, LLVMErrorRef err, const char *what) {
  char *msg = LLVMGetErrorMessage(err); /* consumes err */
  kc_status s = kc_errorf(cpu->ctx, KC_ERR_INTERNAL, "LLVM: %s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return s;
}

/* Size in bytes of the per-core data cache of a level, from sysfs; 0 when unknown. */
static long sysfs_cache_bytes(int level) {
  char path[128], buf[64];
  for (int idx = 0; idx < 8; idx++) {
    int lv = 0;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", idx);
    FILE *f = fopen(path, "r");
    if (!f) break;
    if (fscanf(f, "%d", &lv) != 1) lv = 0;
    fclose(f);
    if (lv != level) continue;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", idx);
    f = fopen(path, "r");
    if (!f) continue;
    int is_inst = fgets(buf, sizeof buf, f) && strncmp(buf, "Instruction", 11) == 0;
    fclose(f);
    if (is_inst) continue;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", idx);
    f = fopen(path, "r");
    if (!f) continue;
    long n = 0;
    char unit = 0;
    int got = fscanf(f, "%ld%c", &n, &unit);
    fclose(f);
    if (got < 1) continue;
    if (got == 2 && (unit == 'K' || unit == 'k')) n *= 1024;
    if (got == 2 && (unit == 'M' || unit == 'm')) n *= 1024 * 1024;
    return n;
  }
  return 0;
}

/* "+avx512f" present as a whole entry of LLVM's comma-separated feature list. */
static bool has_feature(const char *features, const char *name) {
  size_t n = strlen(name);
  for (const char *p = features; p && *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n + 1 && p[0] == '+' && strncmp(p + 1, name, n) == 0) return true;
    p = e ? e + 1 : NULL;
  }
  return false;
}

static void host_info(kc_cpu *cpu, const char *name) {
  kc_cpu_info *in = &cpu->info;
  snprintf(in->name, sizeof in->name, "%s", name);
  bool avx512 = has_feature(cpu->features, "avx512f");
  bool avx = has_feature(cpu->features, "avx");
  in->f32_lanes = avx512 ? 16 : avx ? 8 : 4;
  in->vec_regs = avx512 ? 32 : 16;
  in->has_fma = has_feature(cpu->features, "fma");
  in->has_vnni = avx512 && has_feature(cpu->features, "avx512vnni");
  in->l1d_bytes = sysfs_cache_bytes(1);
  in->l2_bytes = sysfs_cache_bytes(2);
  if (in->l1d_bytes <= 0) in->l1d_bytes = 32 * 1024;
  if (in->l2_bytes <= 0) in->l2_bytes = 1024 * 1024;
}

typedef struct named_cpu {
  const char *name, *features;
} named_cpu;

static const named_cpu x86_cpus[] = {
#define X86_CPU(name, features) {name, features},
#include "codegen/cpu/x86_cpus.def"
#undef X86_CPU
};

/* The entry of x86_cpus.def named name; NULL when there is none or the host is no x86-64. */
static const named_cpu *find_cpu(const char *name) {
  char *triple = LLVMGetDefaultTargetTriple();
  bool x86_64 = strncmp(triple, "x86_64", 6) == 0;
  LLVMDisposeMessage(triple);
  for (size_t i = 0; x86_64 && i < sizeof x86_cpus / sizeof *x86_cpus; i++)
    if (strcmp(x86_cpus[i].name, name) == 0) return &x86_cpus[i];
  return NULL;
}

kc_status kc_cpu_check_name(kc_context *ctx, const char *name) {
  if (!name || strcmp(name, "native") == 0 || find_cpu(name)) return KC_OK;
  return kc_errorf(ctx, KC_ERR_INVALID_ARG,
                   "unknown CPU '%.100s' (use native, x86-64-v2, x86-64-v3, x86-64-v4, or an LLVM "
                   "x86-64 CPU name such as skylake-avx512 or znver3; other architectures: native)",
                   name);
}

/* Name and features of the CPU asked for (NULL or "native": the host's) into *name and
 * cpu->features (LLVM-owned strings). */
static kc_status choose_cpu(kc_cpu *cpu, const char *want, char **name) {
  *name = NULL;
  kc_status s = kc_cpu_check_name(cpu->ctx, want);
  if (s != KC_OK) return s;
  const named_cpu *c = want && strcmp(want, "native") != 0 ? find_cpu(want) : NULL;
  cpu->features = c ? LLVMCreateMessage(c->features) : LLVMGetHostCPUFeatures();
  *name = c ? LLVMCreateMessage(c->name) : LLVMGetHostCPUName();
  return KC_OK;
}

static float truncsfbf2(float x) { return kc_truncsfbf2(x); }

/* The libcalls kernels may need that the process may lack (codegen/aot.h), by address: they
 * take precedence over the process's own. */
static LLVMErrorRef define_builtins(kc_cpu *cpu) {
  LLVMJITSymbolFlags flags = {LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable,
                              0};
  LLVMOrcCSymbolMapPair sym = {LLVMOrcLLJITMangleAndIntern(cpu->jit, "__truncsfbf2"),
                               {(LLVMOrcExecutorAddress)(uintptr_t)truncsfbf2, flags}};
  LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(&sym, 1);
  return LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(cpu->jit), mu);
}

static LLVMTargetMachineRef host_tm(kc_cpu *cpu, LLVMTargetRef target) {
  static const LLVMCodeGenOptLevel levels[] = {LLVMCodeGenLevelNone, LLVMCodeGenLevelLess,
                                               LLVMCodeGenLevelDefault, LLVMCodeGenLevelAggressive};
  return LLVMCreateTargetMachine(target, cpu->triple, cpu->info.name, cpu->features,
                                 levels[cpu->opt_level], LLVMRelocDefault, LLVMCodeModelJITDefault);
}

kc_status kc_cpu_new(kc_context *ctx, kc_cpu **out) { return kc_cpu_new_for(ctx, NULL, out); }

kc_status kc_cpu_new_for(kc_context *ctx, const char *cpu_name, kc_cpu **out) {
  *out = NULL;
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter())
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED, "LLVM has no native target for this host");
  kc_cpu *cpu = calloc(1, sizeof *cpu);
  if (!cpu) return kc_errorf(ctx, KC_ERR_NOMEM, "out of memory creating the CPU target");
  cpu->ctx = ctx;
  int level = kc_context_options(ctx)->opt_level;
  cpu->opt_level = level >= 1 && level <= 3 ? level : level == -1 ? 0 : 3;
  cpu->triple = LLVMGetDefaultTargetTriple();
  char *name;
  kc_status cs = choose_cpu(cpu, cpu_name, &name);
  if (cs != KC_OK) {
    kc_cpu_free(cpu);
    return cs;
  }
  host_info(cpu, name);
  LLVMDisposeMessage(name);

  LLVMTargetRef target;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(cpu->triple, &target, &msg)) {
    kc_status s = kc_errorf(ctx, KC_ERR_UNSUPPORTED, "LLVM: no target for %s: %s", cpu->triple,
                            msg ? msg : "");
    LLVMDisposeMessage(msg);
    kc_cpu_free(cpu);
    return s;
  }
  cpu->tm = host_tm(cpu, target);
  LLVMTargetMachineRef jit_tm = host_tm(cpu, target);
  if (!cpu->tm || !jit_tm) {
    if (jit_tm) LLVMDisposeTargetMachine(jit_tm);
    kc_cpu_free(cpu);
    return kc_errorf(ctx, KC_ERR_INTERNAL, "LLVM: cannot create a target machine for CPU '%s'",
                     cpu_name ? cpu_name : "native");
  }

  LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
      jb, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jit_tm));
  LLVMErrorRef err = LLVMOrcCreateLLJIT(&cpu->jit, jb); /* consumes jb */
  if (err) {
    cpu->jit = NULL;
    kc_status s = kc_cpu_llvm_error(cpu, err, "creating the JIT");
    kc_cpu_free(cpu);
    return s;
  }
  LLVMOrcDefinitionGeneratorRef gen;
  err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
      &gen, LLVMOrcLLJITGetGlobalPrefix(cpu->jit), NULL, NULL);
  if (err) {
    kc_status s = kc_cpu_llvm_error(cpu, err, "exposing process symbols to the JIT");
    kc_cpu_free(cpu);
    return s;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(cpu->jit), gen);
  if ((err = define_builtins(cpu)) != NULL) {
    kc_status s = kc_cpu_llvm_error(cpu, err, "defining the JIT's builtins");
    kc_cpu_free(cpu);
    return s;
  }
  cpu->tsc = LLVMOrcCreateNewThreadSafeContext();
  *out = cpu;
  return KC_OK;
}

void kc_cpu_free(kc_cpu *cpu) {
  if (!cpu) return;
  if (cpu->jit) {
    LLVMErrorRef err = LLVMOrcDisposeLLJIT(cpu->jit);
    if (err) LLVMConsumeError(err);
  }
  if (cpu->tsc) LLVMOrcDisposeThreadSafeContext(cpu->tsc);
  if (cpu->tm) LLVMDisposeTargetMachine(cpu->tm);
  LLVMDisposeMessage(cpu->triple);
  LLVMDisposeMessage(cpu->features);
  free(cpu->dump_dir);
  free(cpu);
}

const kc_cpu_info *kc_cpu_host(const kc_cpu *cpu) { return &cpu->info; }

kc_status kc_cpu_set_dump_dir(kc_cpu *cpu, const char *dir) {
  free(cpu->dump_dir);
  cpu->dump_dir = NULL;
  if (!dir) return KC_OK;
  cpu->dump_dir = malloc(strlen(dir) + 1);
  if (!cpu->dump_dir) return kc_errorf(cpu->ctx, KC_ERR_NOMEM, "out of memory");
  strcpy(cpu->dump_dir, dir);
  return KC_OK;
}

LLVMModuleRef kc_cpu_module_new(kc_cpu *cpu, const char *name) {
  LLVMContextRef c = LLVMOrcThreadSafeContextGetContext(cpu->tsc);
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(name, c);
  LLVMSetTarget(mod, cpu->triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(cpu->tm);
  LLVMSetModuleDataLayout(mod, dl);
  LLVMDisposeTargetData(dl);
  return mod;
}

/* Best effort: a failed dump is reported in the log, never fails compilation. */
static void dump_module(kc_cpu *cpu, LLVMModuleRef mod) {
  size_t len;
  const char *name = LLVMGetModuleIdentifier(mod, &len);
  char path[1024];
  char *msg = NULL;
  snprintf(path, sizeof path, "%s/%s.ll", cpu->dump_dir, name);
  if (LLVMPrintModuleToFile(mod, path, &msg)) kc_logf(cpu->ctx, KC_LOG_WARN, "dump: %s", msg);
  LLVMDisposeMessage(msg);
  msg = NULL;
  snprintf(path, sizeof path, "%s/%s.s", cpu->dump_dir, name);
  if (LLVMTargetMachineEmitToFile(cpu->tm, mod, path, LLVMAssemblyFile, &msg))
    kc_logf(cpu->ctx, KC_LOG_WARN, "dump: %s", msg);
  LLVMDisposeMessage(msg);
}

kc_status kc_cpu_module_optimize(kc_cpu *cpu, LLVMModuleRef mod, unsigned flags) {
  char *msg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
    kc_status s = kc_errorf(cpu->ctx, KC_ERR_INTERNAL, "LLVM: generated module is invalid: %s",
                            msg ? msg : "");
    LLVMDisposeMessage(msg);
    return s;
  }
  LLVMDisposeMessage(msg);

  /* Hand-vectorized modules are already unrolled and vectorized as wanted; letting LLVM
   * do it again only costs compile time (about a quarter of it for matmul). */
  int auto_loops = !(flags & KC_CPU_MOD_HANDVEC);
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(opts, auto_loops);
  LLVMPassBuilderOptionsSetSLPVectorization(opts, auto_loops);
  LLVMPassBuilderOptionsSetLoopUnrolling(opts, auto_loops);
  /* mergefunc first: the layers of a model lower to kernels that differ only in their names
   * (k44_layer_norm, k50_layer_norm, ...); merging them before O3 makes every later pass and
   * the code generator see each body once (a third less compile time for a 2-layer GPT-2's
   * training step, more for deeper models); the duplicates stay as one-jump thunks under their
   * own names, so lookups and the AOT tables are unchanged. */
  char pipeline[64];
  snprintf(pipeline, sizeof pipeline, "mergefunc,default<O%d>", cpu->opt_level);
  LLVMErrorRef err = LLVMRunPasses(mod, pipeline, cpu->tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (err) return kc_cpu_llvm_error(cpu, err, "optimizing");
  if (cpu->dump_dir) dump_module(cpu, mod);
  return KC_OK;
}

kc_status kc_cpu_module_add(kc_cpu *cpu, LLVMModuleRef mod, unsigned flags) {
  kc_status s = kc_cpu_module_optimize(cpu, mod, flags);
  if (s != KC_OK) {
    LLVMDisposeModule(mod);
    return s;
  }
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, cpu->tsc);
  LLVMErrorRef err =
      LLVMOrcLLJITAddLLVMIRModule(cpu->jit, LLVMOrcLLJITGetMainJITDylib(cpu->jit), tsm);
  if (err) return kc_cpu_llvm_error(cpu, err, "adding a module to the JIT");
  return KC_OK;
}

kc_status kc_cpu_lookup(kc_cpu *cpu, const char *name, void **addr) {
  LLVMOrcExecutorAddress a = 0;
  *addr = NULL;
  LLVMErrorRef err = LLVMOrcLLJITLookup(cpu->jit, &a, name);
  if (err) return kc_cpu_llvm_error(cpu, err, "looking up a kernel");
  *addr = (void *)(uintptr_t)a;
  return KC_OK;
}
