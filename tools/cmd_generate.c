/*
 * tools/cmd_generate.c - `kernc generate MODEL --prompt "1 2 3"|ids.npy --max-new N [sampling |
 * beam options] [--paged]`: a decoding session over MODEL (a causal decoder taking token ids),
 * prompt prefilled, tokens generated with the KV cache and printed as they come (beam search:
 * the best sequence and its score at the end), then a line with the timing: prefill ms and ms
 * per generated token.
 *
 * MODEL is a model kernc reads (the session derives and JIT-compiles its decode step), or a
 * library `kernc compile` made (a path ending in .so): it is dlopen'ed and its session entry
 * points (NAME_session_new ..., found by the NAME of libNAME.so or --name) run the decode step
 * compiled into it. Both run the same session and generation code (runtime/session.c,
 * runtime/generate.c), so they print the same tokens.
 *
 * Token ids only: kernc has no tokenizer. The prompt is ids separated by spaces or commas, or a
 * .npy file of integers (1-D, or [1, n]).
 */
#include "ir/internal.h"
#include "runtime/runtime.h"
#include "tools/cli.h"
#include "tools/commands.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PROMPT 65536

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* "1 2 3" / "1,2,3" or a .npy file into ids; the count, or -1 (said on stderr). */
static int64_t read_prompt(kc_context *ctx, const cli_cmd *cmd, const char *arg, int64_t *ids) {
  size_t len = strlen(arg);
  if (len > 4 && strcmp(arg + len - 4, ".npy") == 0) {
    kc_tensor_desc t;
    if (kc_npy_read(ctx, arg, &t) != KC_OK) return cli_fail(ctx, KC_ERR_IO, arg), -1;
    int64_t n = t.rank == 1 ? t.dims[0] : t.rank == 2 && t.dims[0] == 1 ? t.dims[1] : -1;
    if (n < 0 || n > MAX_PROMPT || (t.dtype != KC_I64 && t.dtype != KC_I32)) {
      kc_npy_free(&t);
      fprintf(stderr, "kernc: %s: the prompt must be integer ids, [n] or [1, n]\n", arg);
      return -1;
    }
    for (int64_t i = 0; i < n; i++)
      ids[i] = t.dtype == KC_I64 ? ((int64_t *)t.data)[i] : ((int32_t *)t.data)[i];
    kc_npy_free(&t);
    return n;
  }
  int64_t n = 0;
  for (const char *p = arg; *p;) {
    while (*p == ' ' || *p == ',' || *p == '\t')
      p++;
    if (!*p) break;
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (end == p || errno || n == MAX_PROMPT) {
      cli_usage_error(cmd, "--prompt: '%s' is not a list of token ids", arg);
      return -1;
    }
    ids[n++] = v;
    p = end;
  }
  if (!n) cli_usage_error(cmd, "--prompt is empty");
  return n ? n : -1;
}

/* A number option; false (usage error said) when it does not parse or is out of [lo, hi]. */
static bool num(const cli_cmd *cmd, const char *name, const char *s, double lo, double hi,
                double *out) {
  if (!s) return true;
  char *end;
  double v = strtod(s, &end);
  if (*end || end == s || !(v >= lo && v <= hi)) {
    cli_usage_error(cmd, "--%s needs a number in [%g, %g], got '%s'", name, lo, hi, s);
    return false;
  }
  *out = v;
  return true;
}

/* ---- where the session comes from: the JIT or a compiled library ----------------------------- */

/* A session and its functions: kernc.h's, or a library's entry points with the same types
 * (kc_model_generate_options has kc_generate_options' layout: runtime/export_header.c). */
typedef struct backend {
  void *s;
  void *so;                            /* the library; NULL: the JIT */
  const char *(*error)(const void *s); /* a library's NAME_session_error */
  int (*generate)(void *s, int32_t count, const int64_t *const *prompts, const int64_t *nprompt,
                  const kc_generate_options *o, int64_t *const *outs, int64_t *nout);
  int (*beams)(void *s, const int64_t *prompt, int64_t nprompt, const kc_generate_options *o,
               int64_t *out, int64_t *nout, double *score);
  int64_t (*bytes_per_token)(const void *s);
  void (*free)(void *s);
  const char *cpu; /* a library's NAME_target(): the CPU its kernels here are for; else NULL */
} backend;

static int jit_generate(void *s, int32_t count, const int64_t *const *prompts,
                        const int64_t *nprompt, const kc_generate_options *o, int64_t *const *outs,
                        int64_t *nout) {
  return (int)kc_generate_batch(s, count, prompts, nprompt, o, outs, nout);
}

static int jit_beams(void *s, const int64_t *prompt, int64_t nprompt, const kc_generate_options *o,
                     int64_t *out, int64_t *nout, double *score) {
  return (int)kc_generate_beams(s, prompt, nprompt, o, out, nout, score);
}

static int64_t jit_bytes(const void *s) { return kc_session_cache_bytes_per_token(s); }
static void jit_free(void *s) { kc_session_free(s); }

static bool is_library(const char *path) {
  size_t len = strlen(path);
  return len > 3 && strcmp(path + len - 3, ".so") == 0;
}

/* The model name of a library: given, or libNAME.so's NAME made an identifier, as kc_export
 * names it when it is not told (runtime/export.c). */
static void library_name(const char *given, const char *path, char *buf, size_t size) {
  if (given) {
    snprintf(buf, size, "%s", given);
    return;
  }
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  if (strncmp(base, "lib", 3) == 0 && base[3] && base[3] != '.') base += 3;
  size_t j = 0;
  if (isdigit((unsigned char)*base) || strncmp(base, "kc_", 3) == 0)
    j = (size_t)snprintf(buf, size, "model_");
  for (; *base && *base != '.' && j + 1 < size; base++)
    buf[j++] = isalnum((unsigned char)*base) || *base == '_' ? *base : '_';
  buf[j] = 0;
  if (!j) snprintf(buf, size, "model");
}

/* NAME_suffix of the library, or NULL (*missing names it). */
static void *entry(backend *b, const char *name, const char *suffix, const char **missing) {
  char sym[256];
  snprintf(sym, sizeof sym, "%s_%s", name, suffix);
  void *f = dlsym(b->so, sym);
  if (!f && !*missing) *missing = suffix;
  return f;
}

/* Open library path's session (so: the session options); exit code on failure (said on
 * stderr), else -1. */
static int open_library(backend *b, const char *path, const char *given,
                        const kc_session_options *so) {
  char name[200];
  library_name(given, path, name, sizeof name);
  char file[4096]; /* a bare file name is in this folder, not on the loader's search path */
  snprintf(file, sizeof file, "%s%s", strchr(path, '/') ? "" : "./", path);
  b->so = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (!b->so) {
    fprintf(stderr, "kernc: %s\n", dlerror());
    return 1;
  }
  const char *missing = NULL;
  void *(*session_new)(int, int, int64_t, int64_t);
  *(void **)&session_new = entry(b, name, "session_new", &missing);
  *(void **)&b->error = entry(b, name, "session_error", &missing);
  *(void **)&b->generate = entry(b, name, "generate", &missing);
  *(void **)&b->beams = entry(b, name, "generate_beams", &missing);
  *(void **)&b->bytes_per_token = entry(b, name, "session_cache_bytes_per_token", &missing);
  *(void **)&b->free = entry(b, name, "session_free", &missing);
  if (missing) {
    char create[sizeof name + 16];
    snprintf(create, sizeof create, "%s_create", name);
    if (!dlsym(b->so, create))
      fprintf(stderr,
              "kernc: %s: no model named '%s' in it (%s is not there); give its name with "
              "--name\n",
              path, name, create);
    else
      fprintf(stderr,
              "kernc: %s: model '%s' has no decoding session (%s_%s is not there); its header "
              "says why\n",
              path, name, name, missing);
    return 1;
  }
  const char *(*target)(void); /* absent in libraries older than kernc compile --cpu */
  char tsym[sizeof name + 16];
  snprintf(tsym, sizeof tsym, "%s_target", name);
  *(void **)&target = dlsym(b->so, tsym);
  b->cpu = target ? target() : NULL;
  b->s = so->paged ? session_new(so->threads, 1, 16, so->max_tokens)
                   : session_new(so->threads, 0, so->max_len, so->max_seqs);
  if (!b->s) {
    fprintf(stderr, "kernc: %s: %s\n", path, b->error(NULL));
    return 1;
  }
  return -1;
}

static void close_backend(backend *b) {
  if (b->s && b->free) b->free(b->s);
  if (b->so) dlclose(b->so);
}

static void print_token(void *user, int32_t prompt, int64_t token) {
  (void)prompt;
  int *count = user;
  printf("%s%lld", (*count)++ ? " " : "", (long long)token);
  fflush(stdout);
}

int cmd_generate(int argc, char **argv) {
  const char *prompt = NULL, *max_new = "32", *temperature = NULL, *top_k = NULL, *top_p = NULL;
  const char *min_p = NULL, *penalty = NULL, *seed = NULL, *beams = NULL, *length_penalty = NULL;
  const char *eos = NULL, *threads = NULL, *target = NULL, *max_len = NULL, *name = NULL;
  bool paged = false;
  cli_cmd cmd = {
      .name = "kernc generate",
      .args = "MODEL",
      .about =
          "Generate tokens after a prompt with a KV cache: kernc derives the decode step from\n"
          "the causal decoder MODEL (token ids [B, S] in, logits [B, S, vocab] out), prefills\n"
          "the prompt and prints each token as it comes, then prefill ms and ms per token.\n"
          "MODEL may be a library `kernc compile` made (FILE.so): its session entry points run.\n"
          "Greedy unless --temperature is given; --beams K for beam search. Token selection\n"
          "follows Hugging Face transformers 4.46.3 (filters off unless given).",
      .min_pos = 1,
      .max_pos = 1,
  };
  cli_add(&cmd,
          (cli_opt){"prompt", 'p', "IDS", "token ids \"1 2 3\", or a .npy of them", NULL, &prompt});
  cli_add(&cmd, (cli_opt){"max-new", 'n', "N", "tokens to generate at most (default 32)", NULL,
                          &max_new});
  cli_add(&cmd, (cli_opt){"temperature", 0, "T", "sample at this temperature (0: greedy)", NULL,
                          &temperature});
  cli_add(&cmd, (cli_opt){"top-k", 0, "K", "sample among the K most likely", NULL, &top_k});
  cli_add(&cmd, (cli_opt){"top-p", 0, "P", "sample within probability mass P", NULL, &top_p});
  cli_add(&cmd, (cli_opt){"min-p", 0, "P", "drop tokens under P times the top one", NULL, &min_p});
  cli_add(&cmd,
          (cli_opt){"repetition-penalty", 0, "R", "penalize tokens seen (1: off)", NULL, &penalty});
  cli_add(&cmd, (cli_opt){"seed", 0, "N", "the sequence's seed (default 0)", NULL, &seed});
  cli_add(&cmd, (cli_opt){"beams", 0, "K", "beam search with K beams", NULL, &beams});
  cli_add(&cmd, (cli_opt){"length-penalty", 0, "L", "beam scores / length^L (default 1)", NULL,
                          &length_penalty});
  cli_add(&cmd, (cli_opt){"eos", 0, "ID", "stop after this token id", NULL, &eos});
  cli_add(&cmd, (cli_opt){"paged", 0, NULL,
                          "paged KV cache (blocks of 16 tokens) instead of a "
                          "contiguous one",
                          &paged, NULL});
  cli_add(&cmd, (cli_opt){"max-len", 0, "N",
                          "cache tokens per sequence (default: prompt + "
                          "max-new)",
                          NULL, &max_len});
  cli_add(&cmd, (cli_opt){"threads", 0, "N", "threads (default: one per core)", NULL, &threads});
  cli_add(&cmd, (cli_opt){"target", 0, "cpu|cuda", "where to run (default: cpu)", NULL, &target});
  cli_add(&cmd, (cli_opt){"name", 0, "NAME", "a library's model name (default: NAME of libNAME.so)",
                          NULL, &name});
  const char *pos[1];
  int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
  if (rc >= 0) return rc;
  if (!prompt) return cli_usage_error(&cmd, "missing --prompt");
  if ((rc = cli_check_target(&cmd, target)) >= 0) return rc;
  bool lib = is_library(pos[0]);
  if (lib && target)
    return cli_usage_error(&cmd, "--target: a compiled library runs where it was compiled for");
  if (!lib && name) return cli_usage_error(&cmd, "--name is for a compiled library (FILE.so)");
  double v_max = 32, v_t = 0, v_k = 0, v_p = 1, v_minp = 0, v_pen = 1, v_seed = 0, v_beams = 1;
  double v_lp = 1, v_eos = -1, v_threads = 0, v_len = 0;
  if (!num(&cmd, "max-new", max_new, 1, 1e6, &v_max) ||
      !num(&cmd, "temperature", temperature, 0, 1e6, &v_t) ||
      !num(&cmd, "top-k", top_k, 0, 1e9, &v_k) || !num(&cmd, "top-p", top_p, 0, 1, &v_p) ||
      !num(&cmd, "min-p", min_p, 0, 1, &v_minp) ||
      !num(&cmd, "repetition-penalty", penalty, 1e-6, 1e6, &v_pen) ||
      !num(&cmd, "seed", seed, 0, 9007199254740992.0, &v_seed) ||
      !num(&cmd, "beams", beams, 1, 64, &v_beams) ||
      !num(&cmd, "length-penalty", length_penalty, -1e6, 1e6, &v_lp) ||
      !num(&cmd, "eos", eos, 0, 1e12, &v_eos) ||
      !num(&cmd, "threads", threads, 1, KC_MAX_THREADS, &v_threads) ||
      !num(&cmd, "max-len", max_len, 1, 1e9, &v_len))
    return 2;
  kc_context *ctx = cli_context_new();
  if (!ctx) return (fprintf(stderr, "kernc: out of memory\n"), 1);
  int64_t *ids = malloc(MAX_PROMPT * sizeof *ids), *out = malloc(((size_t)v_max + 2) * sizeof *out);
  int64_t n = ids && out ? read_prompt(ctx, &cmd, prompt, ids) : -1;
  kc_graph *g = NULL;
  backend b = {0};
  kc_status st = KC_OK;
  rc = n < 0 ? 2 : -1;
  if (rc < 0 && !lib && (st = cli_load(ctx, pos[0], true, &g)) != KC_OK)
    rc = cli_fail(ctx, st, pos[0]);
  int nbeams = (int)v_beams;
  int64_t need = n + (int64_t)v_max + 1;
  kc_session_options so = {.target = target,
                           .threads = (int)v_threads,
                           .paged = paged,
                           .max_tokens = need * nbeams + 16 * nbeams,
                           .max_len = v_len > 0 ? (int64_t)v_len : need,
                           .max_seqs = nbeams + 1};
  double t0 = now_ms();
  if (rc < 0 && lib) {
    rc = open_library(&b, pos[0], name, &so);
  } else if (rc < 0) {
    kc_session *s = NULL;
    if ((st = kc_session_new(ctx, g, &so, &s)) != KC_OK) rc = cli_fail(ctx, st, pos[0]);
    b = (backend){.s = s,
                  .generate = jit_generate,
                  .beams = jit_beams,
                  .bytes_per_token = jit_bytes,
                  .free = jit_free};
  }
  double t1 = now_ms();
  int printed = 0;
  int64_t eos_id = (int64_t)v_eos, nout = 0;
  kc_generate_options o;
  kc_generate_defaults(&o);
  o.max_new = (int64_t)v_max;
  o.temperature = v_t;
  o.top_k = (int32_t)v_k;
  o.top_p = v_p;
  o.min_p = v_minp;
  o.repetition_penalty = v_pen;
  o.seed = (uint64_t)v_seed;
  o.num_beams = nbeams;
  o.length_penalty = v_lp;
  o.eos = v_eos >= 0 ? &eos_id : NULL;
  o.neos = v_eos >= 0;
  o.on_token = print_token;
  o.user = &printed;
  double score = 0;
  if (rc < 0) {
    int code;
    if (nbeams > 1) {
      code = b.beams(b.s, ids, n, &o, out, &nout, &score);
    } else {
      int64_t *outs[1] = {out};
      const int64_t *prompts[1] = {ids};
      code = b.generate(b.s, 1, prompts, &n, &o, outs, &nout);
    }
    printf("\n");
    if (code != 0 && lib)
      rc = (fprintf(stderr, "kernc: %s: %s\n", pos[0], b.error(b.s)), 1);
    else if (code != 0)
      rc = cli_fail(ctx, (kc_status)code, pos[0]);
  }
  double t2 = now_ms();
  if (rc < 0) {
    if (nbeams > 1) printf("score %.6f\n", score);
    fflush(stdout); /* the tokens before the timing line when both go to one terminal or file */
    fprintf(stderr,
            "kernc: session %s in %.0f ms; %lld prompt tokens, %lld generated in %.1f ms "
            "(%.2f ms per token, prefill included); cache %lld bytes per token, %s%s%s\n",
            lib ? "loaded" : "compiled", t1 - t0, (long long)n, (long long)nout, t2 - t1,
            nout ? (t2 - t1) / (double)nout : 0, (long long)b.bytes_per_token(b.s),
            paged ? "paged" : "contiguous", b.cpu ? "; kernels for CPU " : "", b.cpu ? b.cpu : "");
    rc = 0;
  }
  close_backend(&b);
  kc_graph_free(g);
  free(ids);
  free(out);
  kc_context_free(ctx);
  return rc;
}
