/*
 * codegen/cpu/aot_object.c - the object file of a model compiled ahead of time: the graph's
 * kernels (lowered exactly as for the JIT), the tables of codegen/aot.h as constant data, the
 * dims function, the weights, and the entry points NAME_create/_run/_free/_error that hand the
 * tables to the executor in the runtime archive linked beside it (runtime/aot_entry.c).
 *
 * Weights never become LLVM constants: module-level assembly pulls the weights file in with
 * .incbin (LLVM's integrated assembler copies it as bytes), so a 500 MB model costs a file copy,
 * not a giant constant through the optimizer. On x86-64 they go to .lrodata, which linkers place
 * after all other data, so RIP-relative references of the code stay short whatever their size.
 *
 * The CPU the kernels need is recorded as a string (KC_AOT_TARGET_MARK, then triple, LLVM CPU
 * name and every "+feature" of the very feature list the target machine gets), which NAME_create
 * hands to the runtime: it checks the features with cpuid before anything of the model runs.
 *
 * A library may hold the kernels for several CPUs (kc_export_options.cpu): one object per CPU
 * variant, each lowered by a kc_cpu for its CPU. Variant 0's object defines the weights, the
 * entry points (for every variant: NAME_create takes kc_aot_targets, a table of the variants,
 * and runs the last one the CPU can) and the table; variant i > 0's object defines its kernels
 * and plans, internal as ever, and one hidden kc_aot_variant NAME_variant_<i> the table refers
 * to, and refers to variant 0's weights symbol: the weights are stored once.
 *
 * The CUDA target (kc_cpu_obj_new + kc_cpu_obj_set_cuda) writes the same tables and entry points
 * without CPU kernels: the steps' fn/units are NULL, the device blob of codegen/aot_cuda.h is
 * pulled in like the weights, and NAME_create is kc_aot_cuda_create.
 *
 * A causal decoder's object also holds its decode step (kc_cpu_obj_lower_decode): a second
 * graph lowered into a module of its own, every definition renamed with DECODE_PREFIX ("dec_k3_
 * matmul": the two graphs' kernels, both numbered from node 0, would clash), linked into the
 * model's module; a second plan table over the same weights symbol, a kc_plan_decode, and the
 * session entry points (NAME_session_new ... NAME_generate_beams, codegen/aot.h).
 *
 * Invariants:
 *   - Only the entry points are exported (the five, and the session ones of a decoder): every
 *     other definition is made internal (kernels, tables) or hidden (the weights, the variants,
 *     the runtime's functions), so two models link side by side.
 *   - The object is position independent (for -shared) and built for its kc_cpu's CPU (the
 *     host's unless kc_cpu_new_for named one), as the kernels were lowered.
 *   - The entry points are built for the architecture's baseline CPU, not the host's: NAME_create
 *     runs before the feature check, so it must not itself use an instruction a CPU may lack.
 *   - The recorded features are the "+" entries of cpu->features, the string emit_object gives
 *     LLVMCreateTargetMachine: one source for what the code uses and what is checked.
 *   - Table structs are written field by field as i64/ptr in codegen/aot.h's order; the static
 *     asserts below tie each writer to the struct's size.
 */
#include "codegen/aot.h"
#include "codegen/cpu/aot_emit.h"
#include "codegen/plan.h"

#include <llvm-c/Linker.h>
#include <llvm-c/Target.h>

#include <stdlib.h>
#include <string.h>

/* Starts the recorded target string, so `strings libNAME.so | grep kernc-target` shows it. */
#define KC_AOT_TARGET_MARK "kernc-target"

_Static_assert(sizeof(kc_plan_value) == KC_PLAN_VALUE_WORDS * 8, "kc_plan_value layout");
_Static_assert(sizeof(kc_plan_step) == KC_PLAN_STEP_WORDS * 8, "kc_plan_step layout");
_Static_assert(sizeof(kc_plan_io) == KC_PLAN_IO_WORDS * 8, "kc_plan_io layout");
_Static_assert(sizeof(kc_plan_idim) == KC_PLAN_IDIM_WORDS * 8, "kc_plan_idim layout");
_Static_assert(sizeof(kc_plan_req) == KC_PLAN_REQ_WORDS * 8, "kc_plan_req layout");
_Static_assert(sizeof(kc_plan) == KC_PLAN_WORDS * 8, "kc_plan layout");
_Static_assert(sizeof(kc_plan_decode) == KC_PLAN_DECODE_WORDS * 8, "kc_plan_decode layout");
_Static_assert(sizeof(kc_aot_variant) == KC_AOT_VARIANT_WORDS * 8, "kc_aot_variant layout");
_Static_assert(sizeof(kc_aot_targets) == KC_AOT_TARGETS_WORDS * 8, "kc_aot_targets layout");

#define NAME_MAX_LEN 160
/* The decode step's definitions: no kernel of lower.c ("k<N>_op") and no helper starts so. */
#define DECODE_PREFIX "dec_"

struct kc_cpu_obj {
  kc_cpu *cpu;
  const kc_graph *g;
  LLVMModuleRef mod;
  char *cuda; /* the CUDA target's device blob (codegen/aot_cuda.h); NULL: CPU kernels */
  /* the decode step (kc_cpu_obj_lower_decode / _set_decode); dg NULL: none */
  const kc_graph *dg;
  const kc_plan_decode *decode;
  const kc_dim *decode_slot_dims;
};

/* CUDA target: no CPU kernels, host code for the baseline CPU (the library must run on any host
 * of the architecture: only the driver is required), NAME_create is kc_aot_cuda_create. */
kc_status kc_cpu_obj_new(kc_cpu *cpu, const kc_graph *g, kc_cpu_obj **out) {
  *out = calloc(1, sizeof **out);
  if (!*out) return kc_errorf(cpu->ctx, KC_ERR_NOMEM, "out of memory lowering @%s", g->name);
  (*out)->cpu = cpu;
  (*out)->g = g;
  (*out)->mod = kc_cpu_module_new(cpu, "graph_host");
  return KC_OK;
}

kc_status kc_cpu_obj_set_cuda(kc_cpu_obj *o, const char *blob_path) {
  free(o->cuda);
  o->cuda = strdup(blob_path);
  return o->cuda ? KC_OK : kc_errorf(o->cpu->ctx, KC_ERR_NOMEM, "out of memory");
}

kc_status kc_cpu_obj_lower(kc_cpu *cpu, const kc_graph *g, kc_cpu_kernel *kernels,
                           kc_cpu_obj **out) {
  *out = NULL;
  kc_cpu_obj *o = calloc(1, sizeof *o);
  if (!o) return kc_errorf(cpu->ctx, KC_ERR_NOMEM, "out of memory lowering @%s", g->name);
  o->cpu = cpu;
  o->g = g;
  kc_status s = kc_cpu_lower_module(cpu, g, kernels, &o->mod);
  if (s != KC_OK) {
    free(o);
    return s;
  }
  *out = o;
  return KC_OK;
}

void kc_cpu_obj_free(kc_cpu_obj *o) {
  if (!o) return;
  if (o->mod) LLVMDisposeModule(o->mod);
  free(o->cuda);
  free(o);
}

/* Every definition of mod renamed DECODE_PREFIX + its name (declarations keep theirs: they are
 * the libm, intrinsic and runtime functions both graphs call). */
static bool rename_all(LLVMModuleRef mod) {
  char buf[512];
  for (int globals = 0; globals < 2; globals++)
    for (LLVMValueRef v = globals ? LLVMGetFirstGlobal(mod) : LLVMGetFirstFunction(mod); v;
         v = globals ? LLVMGetNextGlobal(v) : LLVMGetNextFunction(v)) {
      size_t len;
      const char *name = LLVMGetValueName2(v, &len);
      if (LLVMIsDeclaration(v) || !len) continue;
      if (len + sizeof DECODE_PREFIX > sizeof buf) return false;
      memcpy(buf, DECODE_PREFIX, sizeof DECODE_PREFIX - 1);
      memcpy(buf + sizeof DECODE_PREFIX - 1, name, len);
      LLVMSetValueName2(v, buf, len + sizeof DECODE_PREFIX - 1);
    }
  return true;
}

kc_status kc_cpu_obj_lower_decode(kc_cpu_obj *o, const kc_graph *dg, kc_cpu_kernel *kernels) {
  LLVMModuleRef mod;
  kc_status s = kc_cpu_lower_module(o->cpu, dg, kernels, &mod); /* o->cpu's context: linkable */
  if (s != KC_OK) return s;
  if (!rename_all(mod)) {
    LLVMDisposeModule(mod);
    return kc_errorf(o->cpu->ctx, KC_ERR_INTERNAL, "AOT: a symbol of the decode step is too long");
  }
  if (LLVMLinkModules2(o->mod, mod)) /* consumes mod */
    return kc_errorf(o->cpu->ctx, KC_ERR_INTERNAL,
                     "AOT: the decode step's kernels do not link with the model's");
  o->dg = dg;
  return KC_OK;
}

void kc_cpu_obj_set_decode(kc_cpu_obj *o, const kc_plan_decode *d, const kc_dim *slot_dims) {
  if (!d) o->dg = NULL; /* none after all: its kernels, unused, are dropped as internal */
  o->decode = d;
  o->decode_slot_dims = slot_dims;
}

/* ---- constant data ---------------------------------------------------------------------------
 */

static LLVMValueRef i64c(kc_ir *ir, int64_t v) { return kc_ir_i64(ir, v); }
static LLVMValueRef nullp(kc_ir *ir) { return LLVMConstNull(ir->t_ptr); }

/* A private constant global holding init; returns it (a ptr). */
static LLVMValueRef private_const(kc_ir *ir, const char *name, LLVMValueRef init) {
  LLVMValueRef gv = LLVMAddGlobal(ir->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(gv, init);
  LLVMSetGlobalConstant(gv, 1);
  LLVMSetLinkage(gv, LLVMPrivateLinkage);
  LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
  return gv;
}

static LLVMValueRef cstr(kc_ir *ir, const char *s) {
  if (!s) return nullp(ir);
  return private_const(ir, ".str", LLVMConstStringInContext(ir->ctx, s, (unsigned)strlen(s), 0));
}

static LLVMValueRef cstruct(kc_ir *ir, LLVMValueRef *fields, unsigned n) {
  return LLVMConstStructInContext(ir->ctx, fields, n, 0);
}

/* A constant array of n elements (all of one type) as a private global; NULL pointer when empty. */
static LLVMValueRef carray(kc_ir *ir, const char *name, LLVMValueRef *elems, int64_t n) {
  if (n <= 0) return nullp(ir);
  return private_const(ir, name, LLVMConstArray2(LLVMTypeOf(elems[0]), elems, (uint64_t)n));
}

static LLVMValueRef i64_array(kc_ir *ir, const char *name, const int64_t *v, int64_t n, bool *oom) {
  LLVMValueRef *e = malloc((size_t)(n > 0 ? n : 1) * sizeof *e);
  if (!e) {
    *oom = true;
    return nullp(ir);
  }
  for (int64_t i = 0; i < n; i++)
    e[i] = i64c(ir, v[i]);
  LLVMValueRef r = carray(ir, name, e, n);
  free(e);
  return r;
}

static LLVMValueRef values_table(kc_ir *ir, const kc_plan *m, bool *oom) {
  LLVMValueRef *e = malloc((size_t)(m->nvalues + 1) * sizeof *e);
  if (!e) {
    *oom = true;
    return nullp(ir);
  }
  for (int64_t i = 0; i < m->nvalues; i++) {
    const kc_plan_value *v = &m->values[i];
    LLVMValueRef f[KC_PLAN_VALUE_WORDS] = {
        i64c(ir, v->storage), i64c(ir, v->dtype), i64c(ir, v->rank), i64c(ir, v->dims),
        i64c(ir, v->ref),     i64c(ir, v->first), i64c(ir, v->last)};
    e[i] = cstruct(ir, f, KC_PLAN_VALUE_WORDS);
  }
  LLVMValueRef r = carray(ir, "kc_values", e, m->nvalues);
  free(e);
  return r;
}

/* Steps with the kernels of their nodes of g: fn and units by the lowering's symbol names, after
 * prefix. */
static kc_status steps_table(kc_cpu_obj *o, kc_ir *ir, const kc_plan *m, const kc_graph *g,
                             const char *prefix, LLVMValueRef *out) {
  *out = nullp(ir);
  LLVMValueRef *e = malloc((size_t)(m->nsteps + 1) * sizeof *e);
  if (!e) return kc_errorf(o->cpu->ctx, KC_ERR_NOMEM, "out of memory writing the step table");
  for (int64_t i = 0; i < m->nsteps; i++) {
    const kc_plan_step *s = &m->steps[i];
    char name[NAME_MAX_LEN], units[NAME_MAX_LEN + 8];
    size_t pl = (size_t)snprintf(name, sizeof name, "%s", prefix);
    kc_cpu_kernel_name(name + pl, sizeof name - pl, (uint32_t)s->node, g->nodes[s->node].op);
    snprintf(units, sizeof units, "%s_units", name);
    LLVMValueRef fn = LLVMGetNamedFunction(o->mod, name), un = LLVMGetNamedFunction(o->mod, units);
    if (o->cuda) fn = un = nullp(ir); /* the device blob launches it */
    if (!fn || !un) {
      free(e);
      return kc_node_errorf((kc_graph *)g, &g->nodes[s->node], KC_ERR_INTERNAL,
                            "AOT: no kernel %s in the lowered module", name);
    }
    LLVMValueRef f[KC_PLAN_STEP_WORDS] = {
        fn,
        un,
        cstr(ir, name),
        i64c(ir, s->node),
        i64c(ir, s->grain),
        i64c(ir, s->ws_bytes),
        i64c(ir, s->shared_bytes),
        i64c(ir, s->shared_zero),
        i64c(ir, s->nbufs),
        i64c(ir, s->bufs),
        i64c(ir, s->ndims),
        i64c(ir, s->dims),
        i64c(ir, s->check_in),
        i64c(ir, s->check_dim),
        cstr(ir, s->what),
    };
    e[i] = cstruct(ir, f, KC_PLAN_STEP_WORDS);
  }
  *out = carray(ir, "kc_steps", e, m->nsteps);
  free(e);
  return KC_OK;
}

static LLVMValueRef io_table(kc_ir *ir, const char *name, const kc_plan_io *io, int64_t n,
                             bool *oom) {
  LLVMValueRef *e = malloc((size_t)(n + 1) * sizeof *e);
  if (!e) {
    *oom = true;
    return nullp(ir);
  }
  for (int64_t i = 0; i < n; i++) {
    LLVMValueRef f[KC_PLAN_IO_WORDS] = {cstr(ir, io[i].name), i64c(ir, io[i].value),
                                        i64c(ir, io[i].copy)};
    e[i] = cstruct(ir, f, KC_PLAN_IO_WORDS);
  }
  LLVMValueRef r = carray(ir, name, e, n);
  free(e);
  return r;
}

static LLVMValueRef idims_table(kc_ir *ir, const kc_plan *m, bool *oom) {
  int64_t n = m->ninputs * KC_MAX_RANK;
  LLVMValueRef *e = malloc((size_t)(n + 1) * sizeof *e);
  if (!e) {
    *oom = true;
    return nullp(ir);
  }
  for (int64_t i = 0; i < n; i++) {
    const kc_plan_idim *d = &m->idims[i];
    LLVMValueRef f[KC_PLAN_IDIM_WORDS] = {i64c(ir, d->kind), i64c(ir, d->value), cstr(ir, d->text)};
    e[i] = cstruct(ir, f, KC_PLAN_IDIM_WORDS);
  }
  LLVMValueRef r = carray(ir, "kc_idims", e, n);
  free(e);
  return r;
}

/* A table of n strings (the symbol names, the requirements' texts). */
static LLVMValueRef strings_table(kc_ir *ir, const char *name, const char *const *strs, int64_t n,
                                  bool *oom) {
  LLVMValueRef *e = malloc((size_t)(n + 1) * sizeof *e);
  if (!e) {
    *oom = true;
    return nullp(ir);
  }
  for (int64_t i = 0; i < n; i++)
    e[i] = cstr(ir, strs[i]);
  LLVMValueRef r = carray(ir, name, e, n);
  free(e);
  return r;
}

static LLVMValueRef reqs_table(kc_ir *ir, const kc_plan *m, bool *oom) {
  LLVMValueRef *e = malloc((size_t)(m->nreqs + 1) * sizeof *e);
  if (!e) {
    *oom = true;
    return nullp(ir);
  }
  for (int64_t i = 0; i < m->nreqs; i++) {
    const kc_plan_req *r = &m->reqs[i];
    LLVMValueRef f[KC_PLAN_REQ_WORDS] = {i64c(ir, r->kind), i64c(ir, r->slot), i64c(ir, r->slot2),
                                         cstr(ir, r->text), cstr(ir, r->a),    cstr(ir, r->b)};
    e[i] = cstruct(ir, f, KC_PLAN_REQ_WORDS);
  }
  LLVMValueRef r = carray(ir, "kc_reqs", e, m->nreqs);
  free(e);
  return r;
}

/* ---- weights ---------------------------------------------------------------------------------
 */

/* path with '\' and '"' escaped for an assembler string; false when it does not fit. */
static bool asm_quote(const char *path, char *buf, size_t size) {
  size_t j = 0;
  for (const char *p = path; *p; p++) {
    if (j + 3 >= size) return false;
    if (*p == '\\' || *p == '"') buf[j++] = '\\';
    buf[j++] = *p;
  }
  buf[j] = 0;
  return true;
}

/* The hidden symbol NAME_<what>: the bytes of weights_path, 64-byte aligned, read-only; defined
 * here, or only declared (another object of the library defines it) when define is false. */
static kc_status weights_symbol(kc_cpu_obj *o, kc_ir *ir, const char *prefix, const char *what,
                                const char *weights_path, bool define, LLVMValueRef *out) {
  *out = nullp(ir);
  if (!weights_path) return KC_OK;
  char sym[NAME_MAX_LEN], quoted[4096], text[sizeof quoted + 4 * NAME_MAX_LEN + 128];
  snprintf(sym, sizeof sym, "%s_%s", prefix, what);
  if (!define) {
    *out = LLVMAddGlobal(o->mod, LLVMInt8TypeInContext(ir->ctx), sym);
    LLVMSetVisibility(*out, LLVMHiddenVisibility);
    LLVMSetGlobalConstant(*out, 1);
    return KC_OK;
  }
  if (!asm_quote(weights_path, quoted, sizeof quoted))
    return kc_errorf(o->cpu->ctx, KC_ERR_INVALID_ARG, "weights path is too long: %s", weights_path);
  bool x86_64 = strncmp(o->cpu->triple, "x86_64", 6) == 0;
  snprintf(text, sizeof text,
           "\t.pushsection %s,\"a\",@progbits\n\t.balign 64\n\t.globl %s\n\t.hidden %s\n%s:\n"
           "\t.incbin \"%s\"\n\t.popsection\n",
           x86_64 ? ".lrodata.kc_weights" : ".rodata.kc_weights", sym, sym, sym, quoted);
  LLVMAppendModuleInlineAsm(o->mod, text, strlen(text));
  LLVMValueRef gv = LLVMAddGlobal(o->mod, LLVMInt8TypeInContext(ir->ctx), sym);
  LLVMSetVisibility(gv, LLVMHiddenVisibility);
  LLVMSetGlobalConstant(gv, 1);
  *out = gv;
  return KC_OK;
}

/* ---- entry points ----------------------------------------------------------------------------
 */

/* A hidden declaration of a runtime function (defined in the archive linked beside). */
static LLVMValueRef runtime_fn(kc_ir *ir, const char *name, LLVMTypeRef ret, LLVMTypeRef *params,
                               unsigned n) {
  LLVMValueRef fn = LLVMAddFunction(ir->mod, name, LLVMFunctionType(ret, params, n, 0));
  LLVMSetVisibility(fn, LLVMHiddenVisibility);
  return fn;
}

/* The architecture's baseline CPU (LLVM's name), for code that runs before the feature check. */
static const char *baseline_cpu(const char *triple) {
  if (strncmp(triple, "x86_64", 6) == 0) return "x86-64";
  return "generic";
}

/* PREFIX_suffix(params...) { return rt(model?, target?, params...); }, for the baseline CPU. */
static void entry(kc_ir *ir, const char *triple, const char *prefix, const char *suffix,
                  LLVMValueRef rt, LLVMTypeRef ret, LLVMTypeRef *params, unsigned n,
                  LLVMValueRef model, LLVMValueRef target) {
  char name[NAME_MAX_LEN];
  snprintf(name, sizeof name, "%s_%s", prefix, suffix);
  LLVMValueRef fn = kc_ir_func(ir, name, ret, params, n, false);
  /* attributes override the target machine's CPU and features for this function only */
  kc_ir_fn_attr(ir, fn, "target-cpu", baseline_cpu(triple));
  kc_ir_fn_attr(ir, fn, "target-features", "");
  LLVMValueRef args[16];
  unsigned na = 0;
  if (model) args[na++] = model;
  if (target) args[na++] = target;
  for (unsigned i = 0; i < n && na < sizeof args / sizeof *args; i++)
    args[na++] = LLVMGetParam(fn, i);
  LLVMTypeRef rtt = LLVMGlobalGetValueType(rt);
  LLVMValueRef r = LLVMBuildCall2(ir->b, rtt, rt, args, na, "");
  if (LLVMGetTypeKind(ret) == LLVMVoidTypeKind)
    LLVMBuildRetVoid(ir->b);
  else
    LLVMBuildRet(ir->b, r);
}

/* NAME_create picks the variant of the table `variants` (kc_aot_targets) this CPU runs best and
 * checks the CPU (kc_aot_create_best), NAME_target says which; for the CUDA target (variants
 * NULL) NAME_create is kc_aot_cuda_create(model, device blob, threads) and there is no
 * NAME_target. */
static void entry_points(kc_ir *ir, const char *triple, const char *prefix, LLVMValueRef variants,
                         LLVMValueRef model, LLVMValueRef blob) {
  LLVMTypeRef p = ir->t_ptr, i32 = ir->t_i32;
  LLVMTypeRef create_p[3] = {p, p, i32}, best_p[2] = {p, i32}, run_p[3] = {p, p, p};
  LLVMValueRef create = variants ? runtime_fn(ir, "kc_aot_create_best", p, best_p, 2)
                                 : runtime_fn(ir, "kc_aot_cuda_create", p, create_p, 3);
  LLVMValueRef run = runtime_fn(ir, "kc_aot_run", i32, run_p, 3);
  LLVMValueRef fr = runtime_fn(ir, "kc_aot_free", ir->t_void, &p, 1);
  LLVMValueRef err = runtime_fn(ir, "kc_aot_error", p, &p, 1);
  if (variants)
    entry(ir, triple, prefix, "create", create, p, &i32, 1, variants, NULL);
  else
    entry(ir, triple, prefix, "create", create, p, &i32, 1, model, blob);
  entry(ir, triple, prefix, "run", run, i32, run_p, 3, NULL, NULL);
  entry(ir, triple, prefix, "free", fr, ir->t_void, &p, 1, NULL, NULL);
  entry(ir, triple, prefix, "error", err, p, &p, 1, NULL, NULL);
  if (variants)
    entry(ir, triple, prefix, "target", runtime_fn(ir, "kc_aot_target", p, &p, 1), p, NULL, 0,
          variants, NULL);
}

/* One session entry point: its type as letters (return, then parameters: p pointer, i int32,
 * l int64, v void) and the runtime function it calls; kc_aot_session_best also gets the
 * variants (kc_aot_targets) first. The letters must match kernc.h's prototype
 * argument for argument: a missing last argument still worked at -O3, where the entry became a
 * jump that left the caller's stack argument in place, and broke at -O0. */
typedef struct session_entry {
  const char *suffix, *rt, *type;
} session_entry;

static const session_entry session_entries[] = {
    {"session_new", "kc_aot_session_best", "piill"},
    {"session_free", "kc_session_free", "vp"},
    {"session_error", "kc_aot_session_error", "pp"},
    {"session_vocab", "kc_session_vocab", "lp"},
    {"session_cache_bytes_per_token", "kc_session_cache_bytes_per_token", "lp"},
    {"seq_new", "kc_session_seq_new", "ipp"},
    {"seq_fork", "kc_session_seq_fork", "ipip"},
    {"seq_free", "kc_session_seq_free", "vpi"},
    {"seq_len", "kc_session_seq_len", "lpi"},
    {"seq_truncate", "kc_session_seq_truncate", "ipil"},
    {"decode", "kc_session_decode", "ippi"},
    {"generate_defaults", "kc_generate_defaults", "vp"},
    {"generate", "kc_generate_batch", "ipippppp"},
    {"generate_beams", "kc_generate_beams", "ipplpppp"},
};

static LLVMTypeRef type_of(kc_ir *ir, char c) {
  switch (c) {
  case 'p': return ir->t_ptr;
  case 'i': return ir->t_i32;
  case 'l': return ir->t_i64;
  default: return ir->t_void;
  }
}

/* The session entry points over the decode steps of variants (kc_aot_targets); session_new picks
 * and checks the CPU first, as NAME_create does. */
static void session_entry_points(kc_ir *ir, const char *triple, const char *prefix,
                                 LLVMValueRef variants) {
  for (size_t i = 0; i < sizeof session_entries / sizeof *session_entries; i++) {
    const session_entry *e = &session_entries[i];
    bool first = i == 0; /* session_new */
    LLVMTypeRef params[10], rt_params[12];
    unsigned n = 0, nr = 0;
    if (first) rt_params[nr++] = ir->t_ptr;
    for (const char *c = e->type + 1; *c; c++) {
      params[n++] = type_of(ir, *c);
      rt_params[nr++] = type_of(ir, *c);
    }
    LLVMTypeRef ret = type_of(ir, e->type[0]);
    LLVMValueRef rt = runtime_fn(ir, e->rt, ret, rt_params, nr);
    entry(ir, triple, prefix, e->suffix, rt, ret, params, n, first ? variants : NULL, NULL);
  }
}

static int cmp_cstr(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * "kernc-target triple=T cpu=C features=+a,+b,..." into a malloc'd string: the "+" entries of
 * LLVM's feature list, sorted so the message a CPU mismatch gives reads well. NULL: no memory.
 */
static char *target_string(const kc_cpu *cpu) {
  const char *fs = cpu->features ? cpu->features : "";
  size_t n = 1, len = strlen(fs);
  for (const char *c = fs; *c; c++)
    n += *c == ',';
  char *copy = malloc(len + 1), **feat = malloc(n * sizeof *feat);
  char *out = malloc(len + strlen(cpu->triple) + strlen(cpu->info.name) + 64);
  if (!copy || !feat || !out) {
    free(copy);
    free(feat);
    free(out);
    return NULL;
  }
  memcpy(copy, fs, len + 1);
  size_t k = 0;
  for (char *tok = copy, *next; tok; tok = next) {
    next = strchr(tok, ',');
    if (next) *next++ = 0;
    if (tok[0] == '+' && tok[1]) feat[k++] = tok;
  }
  qsort(feat, k, sizeof *feat, cmp_cstr);
  size_t l = (size_t)sprintf(out, KC_AOT_TARGET_MARK " triple=%s cpu=%s features=", cpu->triple,
                             cpu->info.name);
  for (size_t i = 0; i < k; i++)
    l += (size_t)sprintf(out + l, "%s%s", i ? "," : "", feat[i]);
  free(copy);
  free(feat);
  return out;
}

/* Everything defined here but the entry points becomes internal: kernels may share names with
 * another model's in the same program, and LLVM may drop what nothing uses. */
static void internalize(LLVMModuleRef mod, const char *prefix) {
  size_t plen = strlen(prefix);
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f)) continue;
    size_t len;
    const char *name = LLVMGetValueName2(f, &len);
    static const char *const model_api[] = {"create", "run", "free", "error", "target"};
    bool api = false;
    const char *suffix = name + plen + 1;
    if (len > plen + 1 && strncmp(name, prefix, plen) == 0 && name[plen] == '_') {
      for (size_t i = 0; i < sizeof model_api / sizeof *model_api && !api; i++)
        api = strcmp(suffix, model_api[i]) == 0;
      for (size_t i = 0; i < sizeof session_entries / sizeof *session_entries && !api; i++)
        api = strcmp(suffix, session_entries[i].suffix) == 0;
    }
    if (!api) LLVMSetLinkage(f, LLVMInternalLinkage);
  }
  for (LLVMValueRef gv = LLVMGetFirstGlobal(mod); gv; gv = LLVMGetNextGlobal(gv))
    if (!LLVMIsDeclaration(gv) && LLVMGetLinkage(gv) == LLVMExternalLinkage)
      LLVMSetLinkage(gv, LLVMInternalLinkage);
}

/* ---- the object --------------------------------------------------------------------------------
 */

static kc_status emit_object(kc_cpu_obj *o, const char *path) {
  kc_cpu *cpu = o->cpu;
  LLVMTargetRef target;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(cpu->triple, &target, &msg)) {
    kc_status s = kc_errorf(cpu->ctx, KC_ERR_UNSUPPORTED, "LLVM: no target for %s: %s", cpu->triple,
                            msg ? msg : "");
    LLVMDisposeMessage(msg);
    return s;
  }
  /* the JIT's CPU and features, but position independent code for a shared library */
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(
      target, cpu->triple, o->cuda ? baseline_cpu(cpu->triple) : cpu->info.name,
      o->cuda ? "" : cpu->features, LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
  if (!tm) return kc_errorf(cpu->ctx, KC_ERR_INTERNAL, "LLVM: cannot create a PIC target machine");
  kc_status s = KC_OK;
  if (LLVMTargetMachineEmitToFile(tm, o->mod, path, LLVMObjectFile, &msg)) {
    s = kc_errorf(cpu->ctx, KC_ERR_IO, "writing object %s: %s", path, msg ? msg : "");
    LLVMDisposeMessage(msg);
  }
  LLVMDisposeTargetMachine(tm);
  return s;
}

/* Entries of buf_values: the steps' ranges end there. */
static int64_t nbuf_values(const kc_plan *m) {
  int64_t n = 0;
  for (int64_t i = 0; i < m->nsteps; i++)
    if (m->steps[i].bufs + m->steps[i].nbufs > n) n = m->steps[i].bufs + m->steps[i].nbufs;
  return n;
}

/* The plan m of graph g as a constant global named m->name + "_model" (internal): its tables,
 * its dims function m->name + "_dims" and the kernels of its steps (symbols after kprefix);
 * weights is the weights symbol (or NULL). */
static kc_status plan_global(kc_cpu_obj *o, kc_ir *ir, const kc_plan *m, const kc_graph *g,
                             const kc_dim *slot_dims, const char *kprefix, LLVMValueRef weights,
                             LLVMValueRef *out) {
  bool oom = false;
  char name[NAME_MAX_LEN];
  LLVMValueRef dims_fn, steps;
  snprintf(name, sizeof name, "%s_dims", m->name);
  kc_status s = kc_aot_emit_dims(ir, g, name, slot_dims, m->nslots, m->syms, m->nsyms, &dims_fn);
  if (s == KC_OK) s = steps_table(o, ir, m, g, kprefix, &steps);
  if (s != KC_OK) return s;
  LLVMValueRef f[KC_PLAN_WORDS] = {
      cstr(ir, m->name),
      i64c(ir, m->nvalues),
      i64c(ir, m->nsteps),
      i64c(ir, m->ninputs),
      i64c(ir, m->noutputs),
      i64c(ir, m->nsyms),
      i64c(ir, m->nslots),
      i64c(ir, m->narena),
      i64c(ir, m->nstep_dims),
      values_table(ir, m, &oom),
      steps,
      io_table(ir, "kc_inputs", m->inputs, m->ninputs, &oom),
      io_table(ir, "kc_outputs", m->outputs, m->noutputs, &oom),
      idims_table(ir, m, &oom),
      strings_table(ir, "kc_syms", m->syms, m->nsyms, &oom),
      i64_array(ir, "kc_buf_values", m->buf_values, nbuf_values(m), &oom),
      i64_array(ir, "kc_dim_slots", m->dim_slots, m->nstep_dims, &oom),
      i64_array(ir, "kc_arena_order", m->arena_order, m->narena, &oom),
      weights,
      i64c(ir, m->weights_bytes),
      dims_fn,
      i64c(ir, m->max_ws),
      i64c(ir, m->nreqs),
      reqs_table(ir, m, &oom),
      i64c(ir, 0), /* no late symbols: kc_export refuses sizes that depend on data */
      nullp(ir),
      nullp(ir), /* value_data: the weights blob instead */
  };
  if (oom) return kc_errorf(o->cpu->ctx, KC_ERR_NOMEM, "out of memory writing the model tables");
  snprintf(name, sizeof name, "%s_model", m->name);
  *out = private_const(ir, name, cstruct(ir, f, KC_PLAN_WORDS));
  LLVMSetLinkage(*out, LLVMInternalLinkage);
  return KC_OK;
}

/* The decode step's plan and its kc_plan_decode (NAME_decode_info), for NAME_session_new. */
static kc_status decode_global(kc_cpu_obj *o, kc_ir *ir, const char *prefix, LLVMValueRef weights,
                               LLVMValueRef *out) {
  const kc_plan_decode *d = o->decode;
  LLVMValueRef plan;
  kc_status s =
      plan_global(o, ir, d->plan, o->dg, o->decode_slot_dims, DECODE_PREFIX, weights, &plan);
  if (s != KC_OK) return s;
  LLVMValueRef f[KC_PLAN_DECODE_WORDS] = {plan,
                                          i64c(ir, d->vocab),
                                          i64c(ir, d->layers),
                                          i64c(ir, d->kv_heads),
                                          i64c(ir, d->head_dim),
                                          i64c(ir, d->dtype_size)};
  char name[NAME_MAX_LEN];
  snprintf(name, sizeof name, "%s_decode_info", prefix);
  *out = private_const(ir, name, cstruct(ir, f, KC_PLAN_DECODE_WORDS));
  LLVMSetLinkage(*out, LLVMInternalLinkage);
  return KC_OK;
}

/* This object's kc_aot_variant NAME_variant_<variant> (internal; kc_cpu_obj_write exports
 * variant i > 0's as a hidden symbol): the plan, the decode step (or NULL), the target string. */
static LLVMValueRef variant_global(kc_cpu_obj *o, kc_ir *ir, const char *prefix, int variant,
                                   LLVMValueRef model, LLVMValueRef decode, const char *target) {
  LLVMValueRef f[KC_AOT_VARIANT_WORDS] = {model, decode ? decode : nullp(ir), cstr(ir, target),
                                          cstr(ir, o->cpu->info.name)};
  char name[NAME_MAX_LEN];
  snprintf(name, sizeof name, "%s_variant_%d", prefix, variant);
  LLVMValueRef gv = private_const(ir, name, cstruct(ir, f, KC_AOT_VARIANT_WORDS));
  LLVMSetLinkage(gv, LLVMInternalLinkage);
  return gv;
}

/* The kc_aot_targets of the library: this object's variant 0, then the other objects' hidden
 * NAME_variant_<i>, i < nvariants. */
static LLVMValueRef targets_global(kc_ir *ir, const char *prefix, LLVMValueRef v0, int nvariants) {
  LLVMValueRef e[KC_AOT_MAX_VARIANTS];
  char name[NAME_MAX_LEN];
  e[0] = v0;
  for (int i = 1; i < nvariants && i < KC_AOT_MAX_VARIANTS; i++) {
    snprintf(name, sizeof name, "%s_variant_%d", prefix, i);
    e[i] = LLVMAddGlobal(ir->mod, LLVMGlobalGetValueType(v0), name);
    LLVMSetVisibility(e[i], LLVMHiddenVisibility);
    LLVMSetGlobalConstant(e[i], 1);
  }
  LLVMValueRef f[KC_AOT_TARGETS_WORDS] = {i64c(ir, nvariants),
                                          carray(ir, "kc_variants", e, nvariants)};
  snprintf(name, sizeof name, "%s_targets", prefix);
  LLVMValueRef gv = private_const(ir, name, cstruct(ir, f, KC_AOT_TARGETS_WORDS));
  LLVMSetLinkage(gv, LLVMInternalLinkage);
  return gv;
}

kc_status kc_cpu_obj_write(kc_cpu_obj *o, const kc_plan *m, const kc_dim *slot_dims,
                           const char *weights_path, int variant, int nvariants,
                           const char *obj_path) {
  /* module assembly (the weights' .incbin) goes through the target's assembly parser, which
   * the JIT never needs; without it LLVM aborts instead of reporting */
  if (LLVMInitializeNativeAsmParser())
    return kc_errorf(o->cpu->ctx, KC_ERR_UNSUPPORTED, "LLVM has no assembly parser for %s",
                     o->cpu->triple);
  if (o->dg && (!o->decode || o->cuda))
    return kc_errorf(o->cpu->ctx, KC_ERR_INTERNAL, "AOT: a decode step without its plan");
  if (nvariants < 1 || nvariants > KC_AOT_MAX_VARIANTS || variant < 0 || variant >= nvariants ||
      (o->cuda && nvariants > 1))
    return kc_errorf(o->cpu->ctx, KC_ERR_INTERNAL, "AOT: CPU variant %d of %d", variant, nvariants);
  kc_ir ir;
  kc_ir_init(&ir, o->mod);
  LLVMValueRef weights, model = NULL, decode = NULL, var = NULL;
  kc_status s = weights_symbol(o, &ir, m->name, "weights", weights_path, variant == 0, &weights);
  LLVMValueRef blob = nullp(&ir);
  if (s == KC_OK && o->cuda) s = weights_symbol(o, &ir, m->name, "cuda", o->cuda, true, &blob);
  if (s == KC_OK) s = plan_global(o, &ir, m, o->g, slot_dims, "", weights, &model);
  if (s == KC_OK && o->dg) s = decode_global(o, &ir, m->name, weights, &decode);
  char *target = s == KC_OK ? target_string(o->cpu) : NULL;
  if (s == KC_OK && !target)
    s = kc_errorf(o->cpu->ctx, KC_ERR_NOMEM, "out of memory writing the model tables");
  if (s == KC_OK && !o->cuda) var = variant_global(o, &ir, m->name, variant, model, decode, target);
  if (s == KC_OK && variant == 0) {
    LLVMValueRef table = var ? targets_global(&ir, m->name, var, nvariants) : NULL;
    entry_points(&ir, o->cpu->triple, m->name, table, model, blob);
    if (decode) session_entry_points(&ir, o->cpu->triple, m->name, table);
  }
  free(target);
  kc_ir_dispose(&ir);
  if (s != KC_OK) return s;
  internalize(o->mod, m->name);
  if (variant > 0) { /* what variant 0's table refers to */
    LLVMSetLinkage(var, LLVMExternalLinkage);
    LLVMSetVisibility(var, LLVMHiddenVisibility);
  }
  s = kc_cpu_module_optimize(o->cpu, o->mod, 0);
  return s == KC_OK ? emit_object(o, obj_path) : s;
}
