/*
 * tools/cmd_bench.c - `kernc bench MODEL`: compile a model for this CPU, run it a few times to
 * warm up, then time --iters runs and print the median, min and p90 latency, the memory plan's
 * peak arena bytes, the process's peak RSS, and the kernels sorted by the time they took (the
 * runtime's per-node profile, kc_module_profile).
 *
 * Inputs not given as --input NAME=FILE.npy are made up, from a fixed seed so runs compare:
 *   - floats uniform in [-1, 1); bool 0 or 1;
 *   - integers in [0, D): D is the smallest dim they index when they feed a gather as indices
 *     (or a rotary as positions), possibly through casts and reshapes, else 2 for inputs named
 *     like a mask, else 10, so that index checks in kernels never fire;
 *   - symbolic dims from --dim SYM=N, else from the shapes of the given .npy files, else 1 for
 *     symbols named like a batch and 128 for the rest; the header says which came from where.
 * A text IR model carries no weight data (weights print as references), so weights without
 * data are filled with uniform values scaled by 1/sqrt(rows), and the header says so.
 *
 * --input and --dim repeat, which the shared flag parser does not do: they are taken out of argv
 * here before the rest goes through cli_parse (they still appear in --help).
 */
#include "ir/internal.h"
#include "runtime/runtime.h"
#include "tools/bench_decode.h"
#include "tools/cli.h"
#include "tools/commands.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_SYMS 64
#define INDEX_DEPTH 8 /* casts/reshapes followed from an integer input to its gather */

typedef struct bench_args {
  const char **input; /* "NAME=FILE" or "FILE" (by position), as given */
  int ninput;
  const char **dim; /* "SYM=N" */
  int ndim;
  char **rest; /* argv without the --input and --dim arguments */
  int nrest;
} bench_args;

/* A symbolic dim's value and where it came from, for the header. */
typedef struct sym_binding {
  const char *name;
  int64_t value;
  const char *how; /* "--dim", "from <input>", "default" */
} sym_binding;

typedef struct syms {
  sym_binding b[MAX_SYMS];
  int n;
} syms;

/* A small deterministic generator (splitmix64): no global state, same inputs every run. */
typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float rng_unit(rng *r) { return (float)((double)(rng_next(r) >> 40) * 0x1p-23 - 1.0); }

/* "12.345 ms", or "45.6 us" below a millisecond, into buf. */
static const char *fmt_ms(double ms, char *buf, size_t size) {
  if (ms >= 1.0)
    snprintf(buf, size, "%.3f ms", ms);
  else
    snprintf(buf, size, "%.1f us", ms * 1e3);
  return buf;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---- arguments ------------------------------------------------------------------------------ */

/* Take one repeatable option (long name, short letter or 0) at argv[*i] into list; 1 if taken,
 * 0 if argv[*i] is something else, 2 on bad usage. */
static int take_one(const cli_cmd *cmd, int argc, char **argv, int *i, const char *name,
                    char short_name, const char **list, int *n) {
  const char *s = argv[*i];
  size_t len = strlen(name);
  bool is_long = s[0] == '-' && s[1] == '-' && strncmp(s + 2, name, len) == 0;
  if (is_long && s[2 + len] == '=') {
    list[(*n)++] = s + 3 + len;
    return 1;
  }
  bool is_short = short_name && s[0] == '-' && s[1] == short_name;
  if ((is_long && s[2 + len] == 0) || (is_short && s[2] == 0)) {
    if (*i + 1 >= argc) {
      cli_usage_error(cmd, "option '%s' needs a value", s);
      return 2;
    }
    list[(*n)++] = argv[++*i];
    return 1;
  }
  if (is_short) {
    list[(*n)++] = s + 2;
    return 1;
  }
  return 0;
}

/* Split the repeatable --input and --dim out of argv; 2 on bad usage, else -1. */
static int take_repeated(const cli_cmd *cmd, int argc, char **argv, bench_args *a) {
  bool only_pos = false;
  for (int i = 0; i < argc; i++) {
    int r = 0;
    if (i > 0 && !only_pos) {
      r = take_one(cmd, argc, argv, &i, "input", 'i', a->input, &a->ninput);
      if (!r) r = take_one(cmd, argc, argv, &i, "dim", 0, a->dim, &a->ndim);
    }
    if (r == 2) return 2;
    if (r == 1) continue;
    if (i > 0 && strcmp(argv[i], "--") == 0) only_pos = true;
    a->rest[a->nrest++] = argv[i];
  }
  return -1;
}

/* *out = text as an integer in [lo, hi]; -1, or 2 after a usage error naming option. */
static int parse_int(const cli_cmd *cmd, const char *option, const char *text, long lo, long hi,
                     long *out) {
  char *end;
  long v = strtol(text, &end, 10);
  if (!*text || *end || v < lo || v > hi)
    return cli_usage_error(cmd, "%s needs a number in [%ld, %ld], got '%s'", option, lo, hi, text);
  *out = v;
  return -1;
}

/* ---- symbolic dims -------------------------------------------------------------------------- */

static sym_binding *sym_find(syms *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->b[i].name, name) == 0) return &s->b[i];
  return NULL;
}

static bool sym_lookup(void *user, const char *name, int64_t *v) {
  sym_binding *b = sym_find(user, name);
  if (b) *v = b->value;
  return b != NULL;
}

/* The symbol d names when it is a plain symbol ("B"), else NULL (integers, B*S...). */
static const char *plain_sym(const kc_graph *g, kc_dim d) {
  if (!KC_DIM_IS_SYM(d)) return NULL;
  const kc_dexpr *e = &g->dexprs[KC_DIM_EXPR(d)];
  return e->kind == KC_DX_SYM ? e->name : NULL;
}

static bool sym_add(syms *s, const char *name, int64_t v, const char *how) {
  if (sym_find(s, name)) return true;
  if (s->n >= MAX_SYMS) return false;
  s->b[s->n++] = (sym_binding){name, v, how};
  return true;
}

/* Symbols named like a batch get 1: a latency benchmark is about one request. */
static bool batch_like(const char *name) {
  char low[64];
  size_t n = 0;
  for (; name[n] && n + 1 < sizeof low; n++)
    low[n] = (char)tolower((unsigned char)name[n]);
  low[n] = 0;
  return strcmp(low, "b") == 0 || strcmp(low, "n") == 0 || strcmp(low, "bs") == 0 ||
         strstr(low, "batch") != NULL;
}

/* --dim SYM=N, each naming a symbol of some input; exit code on failure, else -1. */
static int bind_dim_flags(const cli_cmd *cmd, const kc_graph *g, const bench_args *a, syms *s) {
  for (int k = 0; k < a->ndim; k++) {
    const char *eq = strchr(a->dim[k], '=');
    long v;
    if (!eq || eq == a->dim[k])
      return cli_usage_error(cmd, "--dim needs SYM=N, got '%s'", a->dim[k]);
    int rc = parse_int(cmd, "--dim", eq + 1, 0, INT32_MAX, &v);
    if (rc >= 0) return rc;
    const char *name = NULL;
    for (uint32_t i = 0; i < kc_graph_num_inputs(g) && !name; i++) {
      kc_dim dims[KC_MAX_RANK];
      kc_val x = kc_graph_input(g, i);
      kc_val_dims(g, x, dims);
      for (int d = 0; d < kc_val_rank(g, x) && !name; d++) {
        const char *sn = plain_sym(g, dims[d]);
        if (sn && strlen(sn) == (size_t)(eq - a->dim[k]) &&
            strncmp(sn, a->dim[k], (size_t)(eq - a->dim[k])) == 0)
          name = sn;
      }
    }
    if (!name) {
      fprintf(stderr, "kernc: no input of the model has a dim named '%.*s'\n",
              (int)(eq - a->dim[k]), a->dim[k]);
      return 1;
    }
    if (sym_find(s, name)) return cli_usage_error(cmd, "--dim %s is given twice", name);
    if (!sym_add(s, name, v, "--dim")) return (fprintf(stderr, "kernc: too many dims\n"), 1);
  }
  return -1;
}

/* Symbols of given inputs take the sizes of their files; the rest their defaults. */
static int bind_defaults(const kc_graph *g, const kc_tensor_desc *in, syms *s) {
  for (int pass = 0; pass < 2; pass++)
    for (uint32_t i = 0; i < kc_graph_num_inputs(g); i++) {
      kc_val x = kc_graph_input(g, i);
      kc_dim dims[KC_MAX_RANK];
      int rank = kc_val_rank(g, x);
      if ((pass == 0) != (in[i].data != NULL) || (pass == 0 && in[i].rank != rank)) continue;
      kc_val_dims(g, x, dims);
      for (int d = 0; d < rank; d++) {
        const char *sn = plain_sym(g, dims[d]);
        bool ok = !sn || (pass == 0 ? sym_add(s, sn, in[i].dims[d], kc_graph_input_name(g, i))
                                    : sym_add(s, sn, batch_like(sn) ? 1 : 128, "default"));
        if (!ok) return (fprintf(stderr, "kernc: too many symbolic dims\n"), 1);
      }
    }
  return -1;
}

/* Concrete dims of value v of g; false (after a message) when a dim cannot be evaluated. */
static bool concrete_dims(const kc_graph *g, kc_val v, syms *s, int64_t *out) {
  kc_dim dims[KC_MAX_RANK];
  kc_val_dims(g, v, dims);
  for (int d = 0; d < kc_val_rank(g, v); d++)
    if (!kc_dim_eval(g, dims[d], sym_lookup, s, &out[d])) {
      char buf[128];
      fprintf(stderr, "kernc: cannot size dim %s of %%%u (give its symbols with --dim SYM=N)\n",
              kc_dim_str(g, dims[d], buf, sizeof buf), v.id);
      return false;
    }
  return true;
}

/* ---- made-up data --------------------------------------------------------------------------- */

/* Smallest dim that value v (or a cast/reshape of it) indexes, or INT64_MAX when none. */
static int64_t index_bound(const kc_graph *g, kc_val v, syms *s, int depth) {
  int64_t best = INT64_MAX;
  for (uint32_t i = 0; i < g->nnodes && depth < INDEX_DEPTH; i++) {
    const kc_node *n = &g->nodes[i];
    kc_val data = {0};
    int64_t axis = 0;
    if (n->op == KC_OP_GATHER && n->nin > 1 && n->in[1].id == v.id) {
      data = n->in[0];
      axis = kc_node_int(n, "axis", 0);
    } else if (n->op == KC_OP_ROTARY && n->nin > 3 && n->in[3].id == v.id) {
      data = n->in[1]; /* position ids index the rows of the cos cache */
    } else if ((n->op == KC_OP_CAST || n->op == KC_OP_IDENTITY || n->op == KC_OP_RESHAPE ||
                n->op == KC_OP_UNSQUEEZE || n->op == KC_OP_SQUEEZE || n->op == KC_OP_FLATTEN) &&
               n->nin > 0 && n->in[0].id == v.id && n->nout > 0) {
      int64_t b = index_bound(g, n->out[0], s, depth + 1);
      if (b < best) best = b;
      continue;
    } else {
      continue;
    }
    int rank = kc_val_rank(g, data);
    kc_dim dims[KC_MAX_RANK];
    int64_t size;
    if (axis < 0) axis += rank;
    if (axis < 0 || axis >= rank) continue;
    kc_val_dims(g, data, dims);
    if (kc_dim_eval(g, dims[axis], sym_lookup, s, &size) && size < best) best = size;
  }
  return best;
}

static bool mask_like(const char *name) {
  char low[128];
  size_t n = 0;
  for (; name[n] && n + 1 < sizeof low; n++)
    low[n] = (char)tolower((unsigned char)name[n]);
  low[n] = 0;
  return strstr(low, "mask") != NULL;
}

/* Fill n elements of dtype t at p: floats scale * [-1, 1), integers [0, hi), bool 0/1. */
static void fill(void *p, kc_dtype t, size_t n, float scale, int64_t hi, rng *r) {
  for (size_t i = 0; i < n; i++) {
    float f = rng_unit(r) * scale;
    int64_t k = hi > 0 ? (int64_t)(rng_next(r) % (uint64_t)hi) : 0;
    switch (t) {
    case KC_F32: ((float *)p)[i] = f; break;
    case KC_F64: ((double *)p)[i] = f; break;
    case KC_F16: ((uint16_t *)p)[i] = kc_f32_to_f16(f); break;
    case KC_BF16: ((uint16_t *)p)[i] = kc_f32_to_bf16(f); break;
    case KC_I64: ((int64_t *)p)[i] = k; break;
    case KC_U64: ((uint64_t *)p)[i] = (uint64_t)k; break;
    case KC_I32: ((int32_t *)p)[i] = (int32_t)k; break;
    case KC_U32: ((uint32_t *)p)[i] = (uint32_t)k; break;
    case KC_I16: ((int16_t *)p)[i] = (int16_t)k; break;
    case KC_U16: ((uint16_t *)p)[i] = (uint16_t)k; break;
    case KC_I8: ((int8_t *)p)[i] = (int8_t)k; break;
    case KC_U8: ((uint8_t *)p)[i] = (uint8_t)k; break;
    case KC_BOOL: ((uint8_t *)p)[i] = (uint8_t)(rng_next(r) & 1); break;
    default: break;
    }
  }
}

static bool is_float(kc_dtype t) {
  return t == KC_F32 || t == KC_F64 || t == KC_F16 || t == KC_BF16;
}

/* Weights a text IR names without data get uniform values; returns how many, -1 on no memory. */
static int fill_weights(kc_graph *g, rng *r) {
  int filled = 0;
  for (uint32_t i = 0; i < g->ntensors; i++) {
    kc_tensor *t = &g->tensors[i];
    if (t->data || !t->nbytes) continue;
    void *p = kc_arena_alloc(&g->arena, t->nbytes);
    if (!p) return -1;
    size_t n = t->nbytes / kc_dtype_size(t->dtype);
    /* 1/sqrt(rows) keeps activations of deep stacks of matmuls near 1: no inf/NaN slow paths */
    float scale = t->rank >= 2 && t->dims[0] > 0 ? 1.0f / sqrtf((float)t->dims[0]) : 1.0f;
    fill(p, t->dtype, n, scale, 10, r);
    t->data = p;
    filled++;
  }
  return filled;
}

/* Print "[1,128,768]". */
static void print_dims(const int64_t *dims, int rank) {
  putchar('[');
  for (int d = 0; d < rank; d++)
    printf("%s%lld", d ? "," : "", (long long)dims[d]);
  putchar(']');
}

/* Read the --input files into in[] (graph order); exit code on failure, else -1. */
static int read_inputs(kc_context *ctx, const kc_graph *g, const bench_args *a,
                       kc_tensor_desc *in) {
  return cli_read_inputs(ctx, g, a->ninput, a->input, in);
}

/* Make up every input not read from a file; prints one line per input. Exit code or -1. */
static int make_inputs(const kc_graph *g, kc_tensor_desc *in, bool *owned, syms *s, rng *r) {
  for (uint32_t i = 0; i < kc_graph_num_inputs(g); i++) {
    kc_val x = kc_graph_input(g, i);
    const char *name = kc_graph_input_name(g, i);
    printf("  %-14s ", *name ? name : "?");
    if (in[i].data) {
      printf("%s", kc_dtype_name(in[i].dtype));
      print_dims(in[i].dims, in[i].rank);
      printf("  from file\n");
      continue;
    }
    kc_tensor_desc *t = &in[i];
    t->name = name;
    t->dtype = kc_val_dtype(g, x);
    t->rank = kc_val_rank(g, x);
    if (t->rank < 0 || t->rank > KC_MAX_RANK || !concrete_dims(g, x, s, t->dims)) return 1;
    size_t n = 1;
    for (int d = 0; d < t->rank; d++)
      n *= (size_t)t->dims[d];
    t->data = malloc(n * kc_dtype_size(t->dtype) + 1);
    if (!t->data) return (fprintf(stderr, "kernc: out of memory for input '%s'\n", name), 1);
    owned[i] = true;
    printf("%s", kc_dtype_name(t->dtype));
    print_dims(t->dims, t->rank);
    int64_t hi = 0;
    if (is_float(t->dtype)) {
      printf("  random uniform in [-1, 1)\n");
    } else if (t->dtype == KC_BOOL) {
      printf("  random true/false\n");
    } else {
      hi = index_bound(g, x, s, 0);
      const char *why = "gather indices";
      if (hi == INT64_MAX) {
        hi = mask_like(name) ? 2 : 10;
        why = mask_like(name) ? "a mask" : "no index use found";
      }
      if (hi < 1) hi = 1;
      printf("  random integers in [0, %lld) (%s)\n", (long long)hi, why);
    }
    fill(t->data, t->dtype, n, 1.0f, hi, r);
  }
  return -1;
}

/* ---- report ---------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int cmp_prof(const void *a, const void *b) {
  const kc_node_profile *x = a, *y = b;
  if (x->ns != y->ns) return x->ns < y->ns ? 1 : -1;
  return x->node < y->node ? -1 : x->node > y->node;
}

static void print_bytes(const char *label, size_t bytes) {
  double v = (double)bytes;
  const char *unit = "B";
  if (bytes < (1u << 10)) {
    printf("%-12s %zu bytes\n", label, bytes);
    return;
  }
  if (bytes >= (1u << 30))
    v /= (double)(1u << 30), unit = "GiB";
  else if (bytes >= (1u << 20))
    v /= (double)(1u << 20), unit = "MiB";
  else if (bytes >= (1u << 10))
    v /= (double)(1u << 10), unit = "KiB";
  printf("%-12s %.2f %s (%zu bytes)\n", label, v, unit, bytes);
}

/* The kernels by total time: top `top` rows (0: all), then one "other" row. */
static int print_kernels(const kc_module *m, int iters, int top, double run_ms) {
  uint32_t n = kc_module_profile(m, NULL, 0);
  kc_node_profile *p = calloc(n + 1, sizeof *p);
  if (!p) return (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_module_profile(m, p, n);
  qsort(p, n, sizeof *p, cmp_prof);
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; i++)
    total += p[i].ns;
  const kc_graph *g = kc_module_graph(m);
  double kernel_ms = (double)total / iters / 1e6;
  char a[32], b[32];
  printf("\nkernels      %u: %s per run; outside kernels (bind, shapes, plan, copies) %s\n", n,
         fmt_ms(kernel_ms, a, sizeof a),
         fmt_ms(run_ms > kernel_ms ? run_ms - kernel_ms : 0.0, b, sizeof b));
  if (!n) {
    printf("  (none: every node is a view, a source or folded away)\n");
    free(p);
    return -1;
  }
  printf("  %6s %12s %10s  %-20s %-24s %s\n", "share", "us/run", "min us", "op", "result", "node");
  uint32_t shown = top > 0 && (uint32_t)top < n ? (uint32_t)top : n;
  for (uint32_t i = 0; i < shown; i++) {
    char type[96], dim[48];
    int len = snprintf(type, sizeof type, "%%%u %s[", p[i].value,
                       kc_dtype_name(kc_val_dtype(g, (kc_val){p[i].value})));
    int rank = kc_val_rank(g, (kc_val){p[i].value});
    kc_dim dims[KC_MAX_RANK];
    kc_val_dims(g, (kc_val){p[i].value}, dims);
    for (int d = 0; d < rank && len > 0 && (size_t)len < sizeof type; d++)
      len += snprintf(type + len, sizeof type - (size_t)len, "%s%s", d ? "," : "",
                      kc_dim_str(g, dims[d], dim, sizeof dim));
    if (len > 0 && (size_t)len < sizeof type) snprintf(type + len, sizeof type - (size_t)len, "]");
    printf("  %5.1f%% %12.3f %10.3f  %-20s ", total ? 100.0 * (double)p[i].ns / (double)total : 0,
           (double)p[i].ns / iters / 1e3, (double)p[i].min_ns / 1e3, p[i].op);
    if (p[i].loc)
      printf("%-24s %s", type, p[i].loc);
    else
      printf("%s", type);
    if (p[i].calls != (uint64_t)iters) printf(" (%llu calls)", (unsigned long long)p[i].calls);
    printf("\n");
  }
  if (shown < n) {
    uint64_t rest = 0;
    for (uint32_t i = shown; i < n; i++)
      rest += p[i].ns;
    printf("  %5.1f%% %12.3f %10s  other (%u kernels)\n",
           total ? 100.0 * (double)rest / (double)total : 0, (double)rest / iters / 1e3, "",
           n - shown);
  }
  free(p);
  return -1;
}

/* ---- the benchmark ----------------------------------------------------------------------------
 */

typedef struct bench_opts {
  long threads, iters, warmup, top;
  const char *passes;
  const char *target; /* NULL: the default */
} bench_opts;

/* After a failed run: defaulted dims are the likeliest cause (a model's tables are shorter). */
static void default_hint(const syms *s) {
  int n = 0;
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->b[i].how, "default") == 0)
      fprintf(stderr, "%s%s=%lld", n++ ? ", " : "kernc: note: defaulted dims ", s->b[i].name,
              (long long)s->b[i].value);
  if (n) fprintf(stderr, "; give other values with --dim SYM=N\n");
}

/* Compile, warm up, time and report; in[] holds every input. Exit code or -1. */
static int measure(kc_context *ctx, const kc_graph *g, const kc_tensor_desc *in,
                   const bench_opts *o, const syms *sy) {
  uint32_t nin = kc_graph_num_inputs(g), nout = kc_graph_num_outputs(g);
  kc_compile_options co = {.target = o->target, .passes = o->passes, .threads = (int)o->threads};
  kc_module *m = NULL;
  double t0 = now_ms();
  kc_status s = kc_compile(ctx, g, &co, &m);
  double compile_ms = now_ms() - t0;
  if (s != KC_OK) return cli_fail(ctx, s, NULL);
  kc_tensor_desc *out = calloc(nout + 1, sizeof *out);
  double *ms = calloc((size_t)o->iters + 1, sizeof *ms);
  int rc = out && ms ? -1 : (fprintf(stderr, "kernc: out of memory\n"), 1);
  double first_ms = 0;
  for (long i = 0; rc < 0 && i < o->warmup + o->iters; i++) {
    if (i == o->warmup && (s = kc_module_set_profile(m, 1)) != KC_OK) rc = cli_fail(ctx, s, NULL);
    t0 = now_ms();
    if (rc < 0 && (s = kc_run(m, in, nin, out, nout)) != KC_OK) {
      rc = cli_fail(ctx, s, NULL);
      default_hint(sy);
    }
    double t = now_ms() - t0;
    if (i == 0) first_ms = t;
    if (i >= o->warmup) ms[i - o->warmup] = t;
  }
  if (rc < 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (o->target) printf("target       %s\n", o->target);
    if (o->threads)
      printf("threads      %ld\n", o->threads);
    else
      printf("threads      %ld (one per core)\n", cores > 0 ? cores : 1);
    printf("outputs     ");
    for (uint32_t k = 0; k < nout; k++) {
      if (out[k].name)
        printf(" %s ", out[k].name);
      else
        printf(" %%%u ", kc_graph_output(g, k).id);
      printf("%s", kc_dtype_name(out[k].dtype));
      print_dims(out[k].dims, out[k].rank);
    }
    printf("\ncompile      %.1f ms (passes: %s)\n", compile_ms,
           o->passes ? (*o->passes ? o->passes : "none") : "the target's default");
    char a[32], b[32], c[32], d[32];
    printf("runs         %ld warm-up (first %s), %ld timed\n", o->warmup,
           fmt_ms(first_ms, a, sizeof a), o->iters);
    double sum = 0;
    for (long i = 0; i < o->iters; i++)
      sum += ms[i];
    qsort(ms, (size_t)o->iters, sizeof *ms, cmp_double);
    long n = o->iters, p90 = (9 * n + 9) / 10 - 1; /* nearest rank */
    double median = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2;
    printf("latency      median %s   min %s   p90 %s   mean %s\n", fmt_ms(median, a, sizeof a),
           fmt_ms(ms[0], b, sizeof b), fmt_ms(ms[p90], c, sizeof c),
           fmt_ms(sum / (double)n, d, sizeof d));
    print_bytes("peak arena", kc_module_peak_bytes(m));
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) print_bytes("peak RSS", (size_t)ru.ru_maxrss * 1024);
    rc = print_kernels(m, (int)o->iters, (int)o->top, sum / (double)n);
  }
  kc_module_free(m);
  free(out);
  free(ms);
  return rc;
}

/* Load, make up what is missing, then measure. Exit code. */
static int bench(const cli_cmd *cmd, const char *path, const bench_args *a, const bench_opts *o) {
  kc_context *ctx = cli_context_new();
  if (!ctx) return (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_graph *g = NULL;
  kc_tensor_desc *in = NULL;
  bool *owned = NULL;
  rng r = {0x6b65726e63u}; /* fixed: every bench of a model sees the same data */
  syms *s = calloc(1, sizeof *s);
  double t0 = now_ms();
  kc_status st = s ? cli_load(ctx, path, true, &g) : KC_ERR_NOMEM;
  double load_ms = now_ms() - t0;
  int rc = st == KC_OK ? -1 : cli_fail(ctx, st, path);
  uint32_t nin = g ? kc_graph_num_inputs(g) : 0;
  if (rc < 0) {
    in = calloc(nin + 1, sizeof *in);
    owned = calloc(nin + 1, sizeof *owned);
    if (!in || !owned) rc = (fprintf(stderr, "kernc: out of memory\n"), 1);
  }
  if (rc < 0) rc = bind_dim_flags(cmd, g, a, s);
  if (rc < 0) rc = read_inputs(ctx, g, a, in);
  if (rc < 0) rc = bind_defaults(g, in, s);
  int weights = rc < 0 ? fill_weights(g, &r) : 0;
  if (weights < 0) rc = (fprintf(stderr, "kernc: out of memory for weights\n"), 1);
  if (rc < 0) {
    printf("model        %s (graph @%s, %u nodes; loaded in %.1f ms)\n", path, g->name, g->nnodes,
           load_ms);
    if (weights)
      printf("weights      %d without data: random uniform, scaled by 1/sqrt(rows)\n", weights);
    if (s->n) printf("dims        ");
    for (int i = 0; i < s->n; i++)
      printf(" %s=%lld (%s)%s", s->b[i].name, (long long)s->b[i].value, s->b[i].how,
             i + 1 < s->n ? "," : "\n");
    printf("inputs%s\n", nin ? "" : "       (none)");
    rc = make_inputs(g, in, owned, s, &r);
  }
  fflush(stdout); /* the header before compile messages and errors, in order */
  if (rc < 0) rc = measure(ctx, g, in, o, s);
  for (uint32_t i = 0; in && i < nin; i++)
    if (owned[i])
      free(in[i].data);
    else
      kc_npy_free(&in[i]);
  free(in);
  free(owned);
  free(s);
  kc_graph_free(g);
  kc_context_free(ctx);
  return rc < 0 ? 0 : rc;
}

/* --contexts "128,512,1024" into o; false (usage error said) when it does not parse. */
static bool parse_contexts(const cli_cmd *cmd, const char *text, bench_decode_opts *o) {
  o->ncontexts = 0;
  for (const char *p = text; *p;) {
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p || v < 1 || v > 1000000 || o->ncontexts == BENCH_MAX_CONTEXTS ||
        (*end && *end != ',')) {
      cli_usage_error(cmd, "--contexts needs up to %d lengths like 128,512,1024, got '%s'",
                      BENCH_MAX_CONTEXTS, text);
      return false;
    }
    o->contexts[o->ncontexts++] = v;
    p = *end ? end + 1 : end;
  }
  return o->ncontexts > 0 || (cli_usage_error(cmd, "--contexts is empty"), false);
}

/* `kernc bench --decode`: the session's prefill and decode steps (tools/bench_decode.c). */
static int decode_mode(const cli_cmd *cmd, const char *path, bench_decode_opts *o,
                       const char *contexts, const char *prefill) {
  long v;
  if (contexts && !parse_contexts(cmd, contexts, o)) return 2;
  if (prefill) {
    int rc = parse_int(cmd, "--prefill", prefill, 1, 1000000, &v);
    if (rc >= 0) return rc;
    o->prefill = v;
  }
  kc_context *ctx = cli_context_new();
  if (!ctx) return (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_graph *g = NULL;
  kc_status st = cli_load(ctx, path, true, &g);
  int rc = st == KC_OK ? bench_decode(ctx, g, o) : cli_fail(ctx, st, path);
  kc_graph_free(g);
  kc_context_free(ctx);
  return rc;
}

int cmd_bench(int argc, char **argv) {
  const char *threads = NULL, *iters = NULL, *warmup = NULL, *top = NULL, *passes = NULL;
  const char *contexts = NULL, *prefill = NULL;
  bool decode = false, paged = false;
  const char *target = NULL; /* the default target */
  const char *unused = NULL; /* --input and --dim are taken out of argv before parsing */
  cli_cmd cmd = {
      .name = "kernc bench",
      .args = "MODEL",
      .about = "Compile MODEL (.onnx, or text IR .kir) for this CPU, run it --warmup times, then\n"
               "time --iters runs: median, min and p90 latency, peak arena bytes, peak RSS and\n"
               "the kernels by total time. Inputs not given are random (floats in [-1, 1),\n"
               "integers below the dim they index), symbolic dims default to 1 for a batch and\n"
               "128 otherwise; weights a .kir file has no data for are random too.",
      .min_pos = 1,
      .max_pos = 1,
  };
  cli_add(&cmd, (cli_opt){"input", 'i', "NAME=FILE.npy",
                          "an input as a .npy file (repeat; others are random)", NULL, &unused});
  cli_add(&cmd,
          (cli_opt){"dim", 0, "SYM=N", "value of a symbolic input dim (repeat)", NULL, &unused});
  cli_add(&cmd, (cli_opt){"threads", 0, "N", "threads to run on (default: one per core)", NULL,
                          &threads});
  cli_add(&cmd, (cli_opt){"iters", 0, "N", "timed runs (default 20)", NULL, &iters});
  cli_add(&cmd, (cli_opt){"warmup", 0, "N", "untimed runs first (default 3)", NULL, &warmup});
  cli_add(&cmd, (cli_opt){"top", 0, "N", "kernels listed, the rest summed (default 15; 0: all)",
                          NULL, &top});
  cli_add(&cmd, (cli_opt){"passes", 0, "LIST",
                          "passes to compile with (default: the target's pipeline; empty: none)",
                          NULL, &passes});
  cli_add(&cmd, (cli_opt){"target", 0, "cpu|cuda", "where to run (default: cpu)", NULL, &target});
  cli_add(&cmd, (cli_opt){"decode", 0, NULL,
                          "a causal decoder with its KV cache: prefill ms, then ms per decoded "
                          "token at each --contexts length, tokens/s and cache bytes",
                          &decode, NULL});
  cli_add(&cmd, (cli_opt){"contexts", 0, "LIST", "--decode: cached lengths (default 128,512,1024)",
                          NULL, &contexts});
  cli_add(&cmd, (cli_opt){"prefill", 0, "N", "--decode: prompt tokens timed (default 128)", NULL,
                          &prefill});
  cli_add(&cmd, (cli_opt){"paged", 0, NULL, "--decode: a paged cache (blocks of 16 tokens)", &paged,
                          NULL});
  bench_args a = {0};
  a.input = calloc((size_t)argc + 1, sizeof *a.input);
  a.dim = calloc((size_t)argc + 1, sizeof *a.dim);
  a.rest = calloc((size_t)argc + 1, sizeof *a.rest);
  const char *pos[1];
  int npos = 0;
  int rc = a.input && a.dim && a.rest ? take_repeated(&cmd, argc, argv, &a)
                                      : (fprintf(stderr, "kernc: out of memory\n"), 1);
  if (rc < 0) rc = cli_parse(&cmd, a.nrest, a.rest, pos, &npos);
  bench_opts o = {
      .threads = 0, .iters = 20, .warmup = 3, .top = 15, .passes = passes, .target = target};
  if (rc < 0) rc = cli_check_target(&cmd, target);
  if (rc < 0 && threads) rc = parse_int(&cmd, "--threads", threads, 1, KC_MAX_THREADS, &o.threads);
  if (rc < 0 && iters) rc = parse_int(&cmd, "--iters", iters, 1, 100000000, &o.iters);
  if (rc < 0 && warmup) rc = parse_int(&cmd, "--warmup", warmup, 0, 100000000, &o.warmup);
  if (rc < 0 && top) rc = parse_int(&cmd, "--top", top, 0, 1000000, &o.top);
  if (rc < 0 && decode) {
    bench_decode_opts d = {.path = pos[0],
                           .threads = o.threads,
                           .paged = paged,
                           .prefill = 128,
                           .contexts = {128, 512, 1024},
                           .ncontexts = 3,
                           .warmup = o.warmup,
                           .iters = o.iters};
    rc = decode_mode(&cmd, pos[0], &d, contexts, prefill);
  } else if (rc < 0) {
    rc = bench(&cmd, pos[0], &a, &o);
  }
  free(a.input);
  free(a.dim);
  free(a.rest);
  return rc;
}
