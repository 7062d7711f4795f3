/*
 * examples/next_token.c - run a GPT-2-style model compiled ahead of time by kernc on a prompt of
 * token ids: print the five likeliest next tokens with their probabilities, then extend the
 * prompt greedily by a few tokens twice: re-running the whole sequence for every new token
 * (gpt2_run), and with the KV cache of a decoding session (gpt2_session_new, gpt2_decode: the
 * prompt prefilled once, then one token per step), which must give the same tokens.
 *
 * Built against the header that `kernc compile examples/gpt2_tiny.onnx -o DIR/libgpt2.so` writes
 * (DIR/gpt2.h) and linked with DIR/libgpt2.so; it needs neither kernc nor LLVM. The model takes
 * input_ids i64[batch, seq] and returns logits f32[batch, seq, vocab]; this program runs batch 1.
 * There is no tokenizer: a prompt is a file of integer ids (`#` starts a comment). The session
 * entry points exist because kernc derived the model's decode step (gpt2_HAS_SESSION).
 *
 * usage: next_token PROMPT_FILE [NEW_TOKENS]
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#endif

#include "gpt2.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The vocabulary is the logits' last dim, which the header carries; the position table (wpe) has
 * 64 rows, a weight's shape the header does not carry, so sequences are at most 64 long. The ids
 * are checked here because an id outside the table is not the model's to catch. */
#define VOCAB ((int)gpt2_OUTPUT_logits_DIM_2)
#define MAX_SEQ 64
#define TOP_K 5

/* Reads whitespace-separated ids from `path` into ids[0..*n); 0 on success, else prints why. */
static int read_prompt(const char *path, int64_t *ids, int cap, int *n) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "next_token: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  char word[64];
  int line = 1, c, rc = 0;
  *n = 0;
  while (rc == 0 && (c = fgetc(f)) != EOF) {
    if (c == '\n') line++;
    if (c == '#') { /* a comment runs to the end of the line */
      while ((c = fgetc(f)) != EOF && c != '\n') {
      }
      line++;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',') continue;
    int len = 0;
    while (c != EOF && c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != ',' && c != '#') {
      if (len < (int)sizeof word - 1) word[len++] = (char)c;
      c = fgetc(f);
    }
    word[len] = '\0';
    if (c != EOF) ungetc(c, f);
    char *end;
    errno = 0;
    long long v = strtoll(word, &end, 10);
    if (*end || errno || v < 0 || v >= VOCAB) {
      fprintf(stderr, "%s:%d: '%s' is not a token id (ids are integers 0 to %d; no tokenizer)\n",
              path, line, word, VOCAB - 1);
      rc = -1;
    } else if (*n == cap) {
      fprintf(stderr, "%s:%d: more than %d ids: the model's context is %d tokens\n", path, line,
              cap, MAX_SEQ);
      rc = -1;
    } else {
      ids[(*n)++] = v;
    }
  }
  if (rc == 0 && *n == 0) {
    fprintf(stderr, "next_token: %s holds no token ids\n", path);
    rc = -1;
  }
  fclose(f);
  return rc;
}

static int argmax(const float *logits, int vocab) {
  int best = 0;
  for (int v = 1; v < vocab; v++)
    if (logits[v] > logits[best]) best = v;
  return best;
}

/* Greedy continuation of ids[0..n) by `count` tokens into next[], with the KV cache of session
 * s: a new sequence, the prompt prefilled in one step, then one token per step; the sequence is
 * freed at the end. 0 on success, else prints the session's error. */
static int greedy_cached(gpt2_session_t *s, const int64_t *ids, int n, int count, int64_t *next) {
  float logits[VOCAB];
  int32_t seq;
  int rc = gpt2_seq_new(s, &seq);
  kc_model_decode_entry e = {.seq = seq, .ntokens = n, .tokens = ids, .logits = logits};
  for (int i = 0; rc == 0 && i < count; i++) {
    if ((rc = gpt2_decode(s, &e, 1)) != 0) break;
    next[i] = argmax(logits, VOCAB);
    e = (kc_model_decode_entry){.seq = seq, .ntokens = 1, .tokens = &next[i], .logits = logits};
  }
  if (rc != 0) fprintf(stderr, "next_token: gpt2_decode: %s\n", gpt2_session_error(s));
  gpt2_seq_free(s, seq);
  return rc ? -1 : 0;
}

/* Runs the model on ids[0..n) (batch 1) and points *last at the n-1'th row of logits, *vocab at
 * its length. 0 on success, else prints the model's error. */
static int run(gpt2_t *m, const int64_t *ids, int n, const float **last, int *vocab) {
  gpt2_tensor in[gpt2_NUM_INPUTS] = {
      [gpt2_INPUT_input_ids] = {.name = "input_ids",
                                .dtype = gpt2_INPUT_input_ids_DTYPE,
                                .rank = gpt2_INPUT_input_ids_RANK,
                                .dims = gpt2_INPUT_input_ids_DIMS(1, n),
                                .data = (void *)ids},
  };
  gpt2_tensor out[gpt2_NUM_OUTPUTS];
  int rc = gpt2_run(m, in, out);
  if (rc != 0) {
    fprintf(stderr, "next_token: gpt2_run failed (status %d): %s\n", rc, gpt2_error(m));
    return -1;
  }
  const gpt2_tensor *lg = &out[gpt2_OUTPUT_logits];
  const int64_t want[] = gpt2_OUTPUT_logits_DIMS(1, n);
  if (lg->dtype != gpt2_OUTPUT_logits_DTYPE || lg->rank != gpt2_OUTPUT_logits_RANK ||
      memcmp(lg->dims, want, sizeof want) != 0) {
    fprintf(stderr, "next_token: the logits are not f32[1,%d,%d]: another model?\n", n, VOCAB);
    return -1;
  }
  *vocab = (int)lg->dims[2];
  *last = (const float *)lg->data + (size_t)(n - 1) * (size_t)*vocab;
  return 0;
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void print_ids(const char *caption, const int64_t *ids, int from, int to) {
  printf("%s", caption);
  for (int i = from; i < to; i++)
    printf(" %lld", (long long)ids[i]);
  printf("\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    fprintf(stderr, "usage: %s PROMPT_FILE [NEW_TOKENS]  (a prompt is token ids, no text)\n",
            argv[0]);
    return 2;
  }
  int new_tokens = 8;
  if (argc == 3) {
    char *end;
    long v = strtol(argv[2], &end, 10);
    if (*end || v < 0 || v >= MAX_SEQ) {
      fprintf(stderr, "next_token: NEW_TOKENS must be 0 to %d, not '%s'\n", MAX_SEQ - 1, argv[2]);
      return 2;
    }
    new_tokens = (int)v;
  }

  int64_t ids[MAX_SEQ];
  int n;
  if (read_prompt(argv[1], ids, MAX_SEQ, &n) != 0) return 1;
  if (n + new_tokens > MAX_SEQ) {
    new_tokens = MAX_SEQ - n;
    fprintf(stderr, "next_token: only %d new tokens fit in the context of %d\n", new_tokens,
            MAX_SEQ);
  }

  gpt2_t *m = gpt2_create(0);
  if (!m) {
    fprintf(stderr, "next_token: gpt2_create: %s\n", gpt2_error(NULL)); /* e.g. CPU features */
    return 1;
  }
  /* contiguous cache: 1 sequence of up to MAX_SEQ tokens, gpt2_CACHE_BYTES(MAX_SEQ) bytes */
  gpt2_session_t *s = gpt2_session_new(0, 0, MAX_SEQ, 1);
  if (!s) {
    fprintf(stderr, "next_token: gpt2_session_new: %s\n", gpt2_session_error(NULL));
    gpt2_free(m);
    return 1;
  }
  int rc = 1, vocab;
  const float *logits;
  print_ids("prompt:", ids, 0, n);
  double t0 = now_ms();
  if (run(m, ids, n, &logits, &vocab) != 0) goto done;
  double t1 = now_ms();

  /* softmax over the last position, in double, shifted by the maximum so exp cannot overflow */
  double *p = malloc((size_t)vocab * sizeof *p), max = logits[0], sum = 0;
  if (!p) {
    fprintf(stderr, "next_token: out of memory\n");
    goto done;
  }
  for (int v = 1; v < vocab; v++)
    if (logits[v] > max) max = logits[v];
  for (int v = 0; v < vocab; v++)
    sum += p[v] = exp(logits[v] - max);
  printf("next token, top %d of %d (seq %d, %.2f ms):\n", TOP_K, vocab, n, t1 - t0);
  for (int k = 0; k < TOP_K && k < vocab; k++) { /* selection: the vocabulary is small */
    int best = 0;
    for (int v = 1; v < vocab; v++)
      if (p[v] > p[best]) best = v;
    printf("  id %3d   p = %.4f\n", best, p[best] / sum);
    p[best] = -1;
  }
  free(p);

  double t2 = now_ms();
  int n0 = n;
  for (int step = 0; step < new_tokens; step++) {
    if (run(m, ids, n, &logits, &vocab) != 0) goto done;
    ids[n++] = argmax(logits, vocab);
  }
  double t3 = now_ms();
  int64_t cached[MAX_SEQ];
  if (greedy_cached(s, ids, n0, new_tokens, cached) != 0) goto done;
  double t4 = now_ms(), per = new_tokens ? 1.0 / new_tokens : 0;
  printf("greedy, %d new tokens:\n", new_tokens);
  print_ids("  prompt:", ids, 0, n0);
  print_ids("  new:   ", ids, n0, n);
  printf("  whole sequence re-run per token: %.3f ms per token\n", (t3 - t2) * per);
  printf("  KV cache (prefill, then one token per step): %.3f ms per token, %d cache bytes per "
         "token\n",
         (t4 - t3) * per, (int)gpt2_CACHE_BYTES_PER_TOKEN);
  if (memcmp(cached, ids + n0, (size_t)new_tokens * sizeof *cached) != 0) {
    print_ids("  the KV cache gave other tokens:", cached, 0, new_tokens);
    goto done;
  }
  printf("  (the same tokens)\n");
  rc = 0;
done:
  gpt2_session_free(s);
  gpt2_free(m);
  return rc;
}
