/*
 * tests/test_generate.c - generation over a decoding session (kc_generate_batch,
 * kc_generate_beams, `kernc generate`) against Hugging Face transformers 4.46.3's generate() on
 * the same weights (argv[1]: the kernc binary, argv[2]: tests/).
 *
 * tests/generate/NAME/ (NAME: gpt2_gen_tiny, GPT2LMHeadModel; llama_gen_tiny, LlamaForCausalLM
 * with GQA and RoPE) holds the model as torch.onnx.export wrote it from transformers' own classes,
 * test_data_set_0 (PyTorch's float64 logits of two rows of 10 ids) and generate.txt, greedy and
 * beam-search results of generate() on single prompts; all written by
 * tests/models/make_generate_refs.py, whose header gives the format and the cases.
 *
 * Checked, for a contiguous cache and a paged one (blocks of 4 tokens, so every sequence spans
 * several): the prefill logits equal PyTorch's (1e-4 + 1e-3 |want|, tests/test_session.c's
 * tolerance: the decode graph kernc derives from these exports computes the model); every greedy
 * case gives transformers' tokens exactly, for each prompt alone and for all prompts of the case
 * in one batch (sequences that stop at an EOS at different steps among them), and the token
 * callback sees each prompt's tokens in order; every beam case gives transformers' tokens
 * exactly and its sequences_scores within 1e-4 relative. One session per layout serves all the
 * cases of a model, its contiguous cache holding only a few sequences, so a sequence a generate
 * call did not free shows as a full cache. `kernc generate` prints the same tokens (and beam
 * score) for a greedy, a repetition-penalty and a beam case.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "frontend/frontend.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IDS 64
#define MAX_CASES 64
#define MAX_PROMPTS 8

static const char *kernc, *tests;

typedef struct gcase {
  int line; /* in generate.txt, for messages */
  bool beam;
  int64_t max_new, eos;
  double rep, lp, score;
  int32_t beams, early;
  int64_t prompt[MAX_IDS], tokens[MAX_IDS];
  int64_t nprompt, ntokens;
} gcase;

typedef struct model {
  const char *name;
  kc_context *ctx;
  kc_graph *g;
  gcase c[MAX_CASES];
  int n;
} model;

/* ---- generate.txt -------------------------------------------------------------------------- */

/* "1,2,3" into ids (at most MAX_IDS); the count. */
static int64_t parse_ids(const char *s, int64_t *ids, int line) {
  int64_t n = 0;
  while (*s) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || n == MAX_IDS) fail_msg("generate.txt line %d: bad id list '%s'", line, s);
    ids[n++] = v;
    s = *end == ',' ? end + 1 : end;
  }
  return n;
}

static void parse_case(char *text, gcase *c, int line) {
  memset(c, 0, sizeof *c);
  c->line = line;
  int seen = 0;
  for (char *save, *kv = strtok_r(text, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
    char *v = strchr(kv, '=');
    if (!v) fail_msg("generate.txt line %d: '%s' is not key=value", line, kv);
    *v++ = 0;
    seen++;
    if (!strcmp(kv, "mode"))
      c->beam = !strcmp(v, "beams");
    else if (!strcmp(kv, "max_new"))
      c->max_new = atoll(v);
    else if (!strcmp(kv, "eos"))
      c->eos = atoll(v);
    else if (!strcmp(kv, "rep"))
      c->rep = strtod(v, NULL);
    else if (!strcmp(kv, "beams"))
      c->beams = atoi(v);
    else if (!strcmp(kv, "lp"))
      c->lp = strtod(v, NULL);
    else if (!strcmp(kv, "early"))
      c->early = atoi(v);
    else if (!strcmp(kv, "prompt"))
      c->nprompt = parse_ids(v, c->prompt, line);
    else if (!strcmp(kv, "tokens"))
      c->ntokens = parse_ids(v, c->tokens, line);
    else if (!strcmp(kv, "score"))
      c->score = strtod(v, NULL);
    else
      fail_msg("generate.txt line %d: unknown key '%s'", line, kv);
  }
  if (seen != 10 || c->nprompt == 0 || c->max_new <= 0 || c->ntokens > c->max_new + 1)
    fail_msg("generate.txt line %d: incomplete case", line);
}

/* The model and its cases (free with unload). */
static model *load(const char *name) {
  char path[4096];
  model *m = calloc(1, sizeof *m);
  assert_non_null(m);
  m->name = name;
  m->ctx = kc_context_new();
  snprintf(path, sizeof path, "%s/generate/%s/model.onnx", tests, name);
  if (kc_onnx_load(m->ctx, path, &m->g) != KC_OK) fail_msg("%s", kc_last_error(m->ctx));
  snprintf(path, sizeof path, "%s/generate/%s/generate.txt", tests, name);
  char *text = th_read_file(path, NULL);
  if (!text) fail_msg("cannot read %s", path);
  m->n = 0;
  int line = 0;
  for (char *save, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    line++;
    if (l[0] == '#' || !l[0]) continue;
    if (m->n == MAX_CASES) fail_msg("%s: more than %d cases", path, MAX_CASES);
    parse_case(l, &m->c[m->n++], line);
  }
  free(text);
  assert_true(m->n >= 8);
  return m;
}

static void unload(model *m) {
  kc_graph_free(m->g);
  kc_context_free(m->ctx);
  free(m);
}

/* ---- sessions ------------------------------------------------------------------------------- */

typedef struct layout {
  const char *what;
  kc_session_options o;
} layout;

/* contiguous: 5 sequences of 32 tokens (a batch of 3 prompts, or 4 beams and their forks); paged:
 * blocks of 4 tokens */
static const layout layouts[] = {
    {"contiguous cache", {.threads = 2, .max_len = 32, .max_seqs = 5}},
    {"paged cache", {.threads = 2, .paged = 1, .block_size = 4, .max_tokens = 320}},
};

static kc_session *session(const model *m, const layout *l) {
  kc_session *s;
  if (kc_session_new(m->ctx, m->g, &l->o, &s) != KC_OK)
    fail_msg("%s, %s: %s", m->name, l->what, kc_last_error(m->ctx));
  return s;
}

/* Every sequence a generate call made is freed when it returns: no id is live. The ids a cache
 * hands out are below 2 * blocks + 64 (runtime/kv_cache.c), under 1024 for these sessions. */
static void expect_no_sequences(const model *m, kc_session *s, const char *what, int line) {
  for (int32_t id = 0; id < 1024; id++)
    if (kc_session_seq_len(s, id) >= 0)
      fail_msg("%s generate.txt line %d (%s): sequence %d (%lld tokens) is still live after "
               "generating",
               m->name, line, what, id, (long long)kc_session_seq_len(s, id));
}

static void ids_str(char *buf, size_t size, const int64_t *ids, int64_t n) {
  size_t at = 0;
  buf[0] = 0;
  for (int64_t i = 0; i < n && at + 24 < size; i++)
    at += (size_t)snprintf(buf + at, size - at, "%s%lld", i ? "," : "", (long long)ids[i]);
}

static void expect_tokens(const model *m, const gcase *c, const char *what, const int64_t *got,
                          int64_t n) {
  if (n == c->ntokens && !memcmp(got, c->tokens, (size_t)n * sizeof *got)) return;
  char g[1024], w[1024];
  ids_str(g, sizeof g, got, n);
  ids_str(w, sizeof w, c->tokens, c->ntokens);
  fail_msg("%s generate.txt line %d (%s): tokens %s, transformers %s", m->name, c->line, what, g,
           w);
}

static kc_generate_options options(const gcase *c) {
  kc_generate_options o;
  kc_generate_defaults(&o);
  o.max_new = c->max_new;
  o.repetition_penalty = c->rep;
  o.eos = c->eos >= 0 ? &c->eos : NULL;
  o.neos = c->eos >= 0;
  if (c->beam) {
    o.num_beams = c->beams;
    o.length_penalty = c->lp;
    o.early_stopping = c->early;
  }
  return o;
}

/* ---- prefill logits ---------------------------------------------------------------------- */

static void logits_of(const char *name) {
  model *m = load(name);
  char path[4096];
  kc_pb_tensor ids, want;
  snprintf(path, sizeof path, "%s/generate/%s/test_data_set_0/input_0.pb", tests, name);
  if (kc_tensor_pb_read(m->ctx, path, &ids) != KC_OK) fail_msg("%s", kc_last_error(m->ctx));
  snprintf(path, sizeof path, "%s/generate/%s/test_data_set_0/output_0.pb", tests, name);
  if (kc_tensor_pb_read(m->ctx, path, &want) != KC_OK) fail_msg("%s", kc_last_error(m->ctx));
  assert_int_equal(ids.t.rank, 2);
  int64_t rows = ids.t.dims[0], len = ids.t.dims[1], vocab = want.t.dims[2];
  for (size_t li = 0; li < sizeof layouts / sizeof *layouts; li++) {
    kc_session *s = session(m, &layouts[li]);
    assert_int_equal(kc_session_vocab(s), vocab);
    float *got = malloc((size_t)(rows * len * vocab) * sizeof *got);
    kc_decode_entry e[MAX_PROMPTS];
    for (int64_t r = 0; r < rows; r++) {
      assert_int_equal(kc_session_seq_new(s, &e[r].seq), KC_OK);
      e[r].ntokens = (int32_t)len;
      e[r].tokens = (const int64_t *)ids.t.data + r * len;
      e[r].logits = got + r * len * vocab;
      e[r].all = 1;
    }
    if (kc_session_decode(s, e, (int32_t)rows) != KC_OK)
      fail_msg("%s: %s", name, kc_last_error(m->ctx));
    const float *w = want.t.data;
    for (int64_t i = 0; i < rows * len * vocab; i++)
      if (!(fabsf(got[i] - w[i]) <= 1e-4f + 1e-3f * fabsf(w[i])))
        fail_msg("%s, %s: logits row %lld position %lld token %lld: %.7g, PyTorch %.7g", name,
                 layouts[li].what, (long long)(i / (len * vocab)), (long long)(i / vocab % len),
                 (long long)(i % vocab), got[i], w[i]);
    free(got);
    kc_session_free(s);
  }
  kc_pb_tensor_free(&ids);
  kc_pb_tensor_free(&want);
  unload(m);
}

/* ---- greedy ------------------------------------------------------------------------------ */

typedef struct stream {
  int64_t tok[MAX_PROMPTS][MAX_IDS];
  int64_t n[MAX_PROMPTS];
  bool bad;
} stream;

static void on_token(void *user, int32_t prompt, int64_t token) {
  stream *st = user;
  if (prompt < 0 || prompt >= MAX_PROMPTS || st->n[prompt] == MAX_IDS) {
    st->bad = true;
    return;
  }
  st->tok[prompt][st->n[prompt]++] = token;
}

static bool same_options(const gcase *a, const gcase *b) {
  return a->beam == b->beam && a->max_new == b->max_new && a->eos == b->eos && a->rep == b->rep;
}

/* The cases c[0..n), one prompt each, generated together in one batch. */
static void greedy_batch(const model *m, kc_session *s, const layout *l, const gcase *c, int n) {
  const int64_t *prompts[MAX_PROMPTS];
  int64_t nprompt[MAX_PROMPTS], nout[MAX_PROMPTS], buf[MAX_PROMPTS][MAX_IDS];
  int64_t *outs[MAX_PROMPTS];
  for (int i = 0; i < n; i++) {
    prompts[i] = c[i].prompt;
    nprompt[i] = c[i].nprompt;
    outs[i] = buf[i];
  }
  stream st = {0};
  kc_generate_options o = options(&c[0]);
  o.on_token = on_token;
  o.user = &st;
  char what[160];
  snprintf(what, sizeof what, "%s, %s of %d prompts", l->what, n > 1 ? "a batch" : "alone", n);
  if (kc_generate_batch(s, n, prompts, nprompt, &o, outs, nout) != KC_OK)
    fail_msg("%s generate.txt line %d (%s): %s", m->name, c[0].line, what, kc_last_error(m->ctx));
  assert_false(st.bad);
  expect_no_sequences(m, s, what, c[0].line);
  for (int i = 0; i < n; i++) {
    expect_tokens(m, &c[i], what, outs[i], nout[i]);
    expect_tokens(m, &c[i], "the callback", st.tok[i], st.n[i]);
  }
}

static void greedy_of(const char *name) {
  model *m = load(name);
  int groups = 0;
  for (size_t li = 0; li < sizeof layouts / sizeof *layouts; li++) {
    kc_session *s = session(m, &layouts[li]);
    for (int i = 0; i < m->n; i++) {
      if (m->c[i].beam) continue;
      greedy_batch(m, s, &layouts[li], &m->c[i], 1);
      /* a run of cases with the same options (each on its own prompt): as one batch too */
      if (i == 0 || !same_options(&m->c[i - 1], &m->c[i])) {
        int n = 1;
        while (i + n < m->n && n < MAX_PROMPTS && same_options(&m->c[i], &m->c[i + n]))
          n++;
        if (n > 1) greedy_batch(m, s, &layouts[li], &m->c[i], n), groups++;
      }
    }
    kc_session_free(s);
  }
  assert_true(groups >= 2 * 3); /* no EOS, an EOS, a repetition penalty; per layout */
  unload(m);
}

/* ---- beam search ------------------------------------------------------------------------- */

static void beams_of(const char *name) {
  model *m = load(name);
  int cases = 0;
  for (size_t li = 0; li < sizeof layouts / sizeof *layouts; li++) {
    kc_session *s = session(m, &layouts[li]);
    for (int i = 0; i < m->n; i++) {
      const gcase *c = &m->c[i];
      if (!c->beam) continue;
      stream st = {0};
      kc_generate_options o = options(c);
      o.on_token = on_token;
      o.user = &st;
      int64_t out[MAX_IDS + 1], nout = -1;
      double score = NAN;
      char what[160];
      snprintf(what, sizeof what, "%s, %d beams, length_penalty %g, early_stopping %d",
               layouts[li].what, c->beams, c->lp, c->early);
      if (kc_generate_beams(s, c->prompt, c->nprompt, &o, out, &nout, &score) != KC_OK)
        fail_msg("%s generate.txt line %d (%s): %s", name, c->line, what, kc_last_error(m->ctx));
      expect_no_sequences(m, s, what, c->line);
      expect_tokens(m, c, what, out, nout);
      expect_tokens(m, c, "the callback", st.tok[0], st.n[0]);
      if (!(fabs(score - c->score) <= 1e-4 * fabs(c->score)))
        fail_msg("%s generate.txt line %d (%s): score %.9g, transformers %.9g", name, c->line, what,
                 score, c->score);
      cases++;
    }
    kc_session_free(s);
  }
  assert_true(cases >= 2 * 12);
  unload(m);
}

/* ---- kernc generate ----------------------------------------------------------------------- */

/* `kernc generate` on case c: its first line must be the tokens, and a beam search's "score S"
 * line the score. */
static void cli_case(const model *m, const gcase *c, const char *flags) {
  char cmd[8192], prompt[1024], *out = NULL;
  ids_str(prompt, sizeof prompt, c->prompt, c->nprompt);
  int at = snprintf(cmd, sizeof cmd,
                    "'%s' generate '%s/generate/%s/model.onnx' --prompt '%s' "
                    "--max-new %lld --repetition-penalty %.9g %s",
                    kernc, tests, m->name, prompt, (long long)c->max_new, c->rep, flags);
  if (c->eos >= 0) at += snprintf(cmd + at, sizeof cmd - at, " --eos %lld", (long long)c->eos);
  if (c->beam)
    at += snprintf(cmd + at, sizeof cmd - at, " --beams %d --length-penalty %.9g", c->beams, c->lp);
  char *err = NULL;
  int rc = th_exec(cmd, &out, &err);
  if (rc != 0) fail_msg("$ %s\n%s%s(exit %d)", cmd, out, err, rc);
  int64_t got[MAX_IDS + 1], n = 0;
  char *p = out;
  while (*p && *p != '\n' && n <= MAX_IDS) {
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p) break;
    got[n++] = v;
    p = end;
    while (*p == ' ')
      p++;
  }
  char what[300];
  snprintf(what, sizeof what, "kernc generate %s", flags);
  expect_tokens(m, c, what, got, n);
  if (c->beam) {
    char *sc = strstr(out, "\nscore ");
    double score = sc ? strtod(sc + 7, NULL) : NAN;
    /* printed with %.6f */
    if (!(fabs(score - c->score) <= 1e-4 * fabs(c->score) + 1e-6))
      fail_msg("$ %s\nscore %.9g, transformers %.9g\n%s", cmd, score, c->score, out);
  }
  free(out);
  free(err);
}

static bool ends_with_eos(const gcase *c) {
  return c->ntokens && c->tokens[c->ntokens - 1] == c->eos;
}

static void cli_of(const char *name) {
  model *m = load(name);
  const gcase *greedy_eos = NULL, *greedy_rep = NULL, *beam = NULL;
  for (int i = 0; i < m->n; i++) {
    const gcase *c = &m->c[i];
    if (!c->beam && c->eos >= 0 && c->ntokens < c->max_new && !greedy_eos) greedy_eos = c;
    if (!c->beam && c->rep != 1 && !greedy_rep) greedy_rep = c;
    /* the CLI has no early_stopping flag: a case with it off, an EOS and length penalty != 1,
     * ended by its EOS where there is one */
    if (c->beam && c->eos >= 0 && c->lp != 1 && !c->early &&
        (!beam || (ends_with_eos(c) && !ends_with_eos(beam))))
      beam = c;
  }
  assert_non_null(greedy_eos);
  assert_non_null(greedy_rep);
  assert_non_null(beam);
  cli_case(m, greedy_eos, "");
  cli_case(m, greedy_rep, "--paged");
  cli_case(m, beam, "");
  cli_case(m, beam, "--paged");
  unload(m);
}

static void t_logits_gpt2(void **state) { (void)state, logits_of("gpt2_gen_tiny"); }
static void t_logits_llama(void **state) { (void)state, logits_of("llama_gen_tiny"); }
static void t_greedy_gpt2(void **state) { (void)state, greedy_of("gpt2_gen_tiny"); }
static void t_greedy_llama(void **state) { (void)state, greedy_of("llama_gen_tiny"); }
static void t_beams_gpt2(void **state) { (void)state, beams_of("gpt2_gen_tiny"); }
static void t_beams_llama(void **state) { (void)state, beams_of("llama_gen_tiny"); }
static void t_cli_gpt2(void **state) { (void)state, cli_of("gpt2_gen_tiny"); }
static void t_cli_llama(void **state) { (void)state, cli_of("llama_gen_tiny"); }

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC TESTS_DIR\n", argv[0]);
    return 2;
  }
  kernc = argv[1];
  tests = argv[2];
  const struct CMUnitTest t[] = {
      cmocka_unit_test(t_logits_gpt2), cmocka_unit_test(t_logits_llama),
      cmocka_unit_test(t_greedy_gpt2), cmocka_unit_test(t_greedy_llama),
      cmocka_unit_test(t_beams_gpt2),  cmocka_unit_test(t_beams_llama),
      cmocka_unit_test(t_cli_gpt2),    cmocka_unit_test(t_cli_llama),
  };
  return cmocka_run_group_tests(t, NULL, NULL);
}
