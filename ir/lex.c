/*
 * ir/lex.c - the character-level reader of the text IR: blanks and comments, identifiers,
 * strings, numbers, value ids, and parse errors with the source line and a caret.
 *
 * Invariants: the cursor only moves forward past what a call consumed (parse.c may save and
 * restore it to re-read a literal); once an error is reported, `failed` stays set and the
 * first message stays in the context's error buffer.
 */
#include "text.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Value ids above this are rejected: a typo like %4000000000 must not allocate gigabytes. */
#define MAX_VALUE_ID (1u << 24)
/* Nor may a short text: each id up to the largest allocates a value (about 130 bytes), so ids
 * are also held below 64 per byte of text plus this (a printed graph's ids are dense: gaps come
 * only from values a pass deleted). 370 bytes with %9388346 once allocated 2 GB. */
#define VALUE_IDS_FREE (1u << 16)

static bool ident_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static bool ident_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

bool kc_text_is_ident(const char *s) {
  if (!s || !ident_start(*s)) return false;
  size_t n = 1;
  while (s[n])
    if (!ident_char(s[n++])) return false;
  return n <= KC_TEXT_MAX_IDENT;
}

bool kc_text_bare_ok(const char *s) {
  static const char *const reserved[] = {"_", "true", "false", "inf", "nan", "dense"};
  if (!kc_text_is_ident(s) || kc_dtype_parse(s) != KC_DT_NONE) return false;
  for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
    if (strcmp(s, reserved[i]) == 0) return false;
  return true;
}

bool kc_lex_error(kc_lexer *lx, const char *at, const char *fmt, ...) {
  if (lx->failed) return false;
  lx->failed = true;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);

  /* At the end of input, point just after the last token rather than at an empty line. */
  if (!*at)
    while (at > lx->src && isspace((unsigned char)at[-1]))
      at--;
  kc_text_error_at(lx->ctx, KC_ERR_PARSE, lx->file, lx->src, at, msg);
  return false;
}

void kc_text_error_at(kc_context *ctx, kc_status s, const char *file, const char *src,
                      const char *at, const char *msg) {
  const char *ls = at, *le = at;
  while (ls > src && ls[-1] != '\n')
    ls--;
  while (*le && *le != '\n')
    le++;
  if (le > ls && le[-1] == '\r') le--;
  int line = 1;
  for (const char *q = src; q < ls; q++)
    line += *q == '\n';

  /* The caret keeps tabs so it lines up under the same column in a terminal. */
  char caret[512];
  size_t n = 0;
  for (const char *q = ls; q < at && n + 2 < sizeof caret; q++)
    if (((unsigned char)*q & 0xc0) != 0x80) caret[n++] = *q == '\t' ? '\t' : ' ';
  caret[n] = 0;
  kc_errorf(ctx, s, "%s:%d:%d: error: %s\n%.*s\n%s^", file, line, (int)(at - ls) + 1, msg,
            (int)(le - ls), ls, caret);
}

void kc_lex_skip(kc_lexer *lx) {
  for (;;) {
    char c = *lx->p;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      lx->p++;
    } else if (c == '#') {
      while (*lx->p && *lx->p != '\n')
        lx->p++;
    } else {
      return;
    }
  }
}

bool kc_lex_peek(kc_lexer *lx, char c) {
  kc_lex_skip(lx);
  return *lx->p == c;
}

bool kc_lex_accept(kc_lexer *lx, char c) {
  if (!kc_lex_peek(lx, c)) return false;
  lx->p++;
  return true;
}

bool kc_lex_nomem(kc_lexer *lx) {
  bool first = !lx->failed;
  kc_lex_error(lx, lx->p, "out of memory");
  if (first) lx->nomem = true;
  return false;
}

bool kc_lex_expect(kc_lexer *lx, char c, const char *what) {
  if (lx->failed) return false;
  if (kc_lex_accept(lx, c)) return true;
  return kc_lex_error(lx, lx->p, "expected %s", what);
}

bool kc_lex_peek_word(kc_lexer *lx, const char *word) {
  kc_lex_skip(lx);
  size_t len = strlen(word);
  return strncmp(lx->p, word, len) == 0 && !ident_char(lx->p[len]);
}

bool kc_lex_accept_word(kc_lexer *lx, const char *word) {
  if (!kc_lex_peek_word(lx, word)) return false;
  lx->p += strlen(word);
  return true;
}

bool kc_lex_ident(kc_lexer *lx, char *buf, size_t size, const char *what) {
  if (lx->failed) return false;
  kc_lex_skip(lx);
  const char *s = lx->p;
  if (!ident_start(*s)) return kc_lex_error(lx, s, "expected %s", what);
  const char *e = s;
  while (ident_char(*e))
    e++;
  if ((size_t)(e - s) >= size) return kc_lex_error(lx, s, "%s is too long", what);
  memcpy(buf, s, (size_t)(e - s));
  buf[e - s] = 0;
  lx->p = e;
  return true;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool kc_lex_string(kc_lexer *lx, kc_arena *a, const char **out) {
  if (!kc_lex_expect(lx, '"', "'\"'")) return false;
  const char *open = lx->p - 1, *e = lx->p;
  /* Find the closing quote first: the unescaped text is never longer than the raw one. */
  while (*e != '"') {
    if (!*e || *e == '\n') return kc_lex_error(lx, open, "unterminated string");
    if (*e == '\\' && e[1] && e[1] != '\n') e++;
    e++;
  }
  char *buf = kc_arena_alloc(a, (size_t)(e - lx->p) + 1);
  if (!buf) return kc_lex_error(lx, open, "out of memory");
  size_t n = 0;
  for (const char *q = lx->p; q < e; q++) {
    if (*q != '\\') {
      buf[n++] = *q;
      continue;
    }
    const char *esc = q++;
    switch (*q) {
    case 'n': buf[n++] = '\n'; break;
    case 't': buf[n++] = '\t'; break;
    case 'r': buf[n++] = '\r'; break;
    case '"': buf[n++] = '"'; break;
    case '\'': buf[n++] = '\''; break;
    case '\\': buf[n++] = '\\'; break;
    case 'x': {
      /* exactly two hex digits, so "\x41B" is unambiguous (C would read all three) */
      int hi = q + 1 < e ? hexval(q[1]) : -1, lo = q + 2 < e ? hexval(q[2]) : -1;
      if (hi < 0 || lo < 0) return kc_lex_error(lx, esc, "\\x needs two hex digits");
      if (hi == 0 && lo == 0) return kc_lex_error(lx, esc, "NUL byte in string");
      buf[n++] = (char)(hi * 16 + lo);
      q += 2;
      break;
    }
    default: return kc_lex_error(lx, esc, "unknown escape '\\%c' in string", *q);
    }
  }
  buf[n] = 0;
  lx->p = e + 1;
  *out = buf;
  return true;
}

/* Length of inf/nan at s (after a sign), or 0. */
static size_t special_len(const char *s) {
  if ((strncmp(s, "inf", 3) == 0 || strncmp(s, "nan", 3) == 0) && !ident_char(s[3])) return 3;
  return 0;
}

bool kc_lex_peek_number(kc_lexer *lx) {
  kc_lex_skip(lx);
  const char *q = lx->p;
  if (*q == '-' || *q == '+') q++;
  return isdigit((unsigned char)*q) || (*q == '.' && isdigit((unsigned char)q[1])) ||
         special_len(q);
}

bool kc_lex_number(kc_lexer *lx, kc_num *out) {
  if (lx->failed) return false;
  if (!kc_lex_peek_number(lx)) return kc_lex_error(lx, lx->p, "expected a number");
  const char *s = lx->p, *q = s;
  out->is_float = false;
  out->at = s;
  if (*q == '-' || *q == '+') q++;
  size_t sp = special_len(q);
  if (sp) {
    q += sp;
    out->is_float = true;
  } else {
    while (isdigit((unsigned char)*q))
      q++;
    if (*q == '.') {
      out->is_float = true;
      q++;
      while (isdigit((unsigned char)*q))
        q++;
    }
    if ((*q == 'e' || *q == 'E') &&
        (isdigit((unsigned char)q[1]) ||
         ((q[1] == '-' || q[1] == '+') && isdigit((unsigned char)q[2])))) {
      out->is_float = true;
      q += 2;
      while (isdigit((unsigned char)*q))
        q++;
    }
  }
  if (ident_char(*q) || *q == '.') {
    const char *e = q;
    while (ident_char(*e) || *e == '.')
      e++;
    return kc_lex_error(lx, s, "bad number '%.*s'", (int)(e - s), s);
  }
  if ((size_t)(q - s) >= sizeof out->text) return kc_lex_error(lx, s, "number is too long");
  memcpy(out->text, s, (size_t)(q - s));
  out->text[q - s] = 0;
  lx->p = q;
  return true;
}

bool kc_num_i64(kc_lexer *lx, const kc_num *n, int64_t *out) {
  if (n->is_float) return kc_lex_error(lx, n->at, "expected an integer, got '%s'", n->text);
  errno = 0;
  long long v = strtoll(n->text, NULL, 10);
  if (errno == ERANGE) return kc_lex_error(lx, n->at, "integer '%s' is out of range", n->text);
  *out = v;
  return true;
}

bool kc_num_u64(kc_lexer *lx, const kc_num *n, uint64_t *out) {
  if (n->is_float) return kc_lex_error(lx, n->at, "expected an integer, got '%s'", n->text);
  if (n->text[0] == '-') return kc_lex_error(lx, n->at, "integer '%s' is out of range", n->text);
  errno = 0;
  unsigned long long v = strtoull(n->text, NULL, 10);
  if (errno == ERANGE) return kc_lex_error(lx, n->at, "integer '%s' is out of range", n->text);
  *out = v;
  return true;
}

/* Overflow to infinity is an error; underflow to a denormal or zero is fine (that is the
 * nearest representable value, and 1e-45 must read back as the smallest f32 denormal). */
bool kc_num_f64(kc_lexer *lx, const kc_num *n, double *out) {
  errno = 0;
  double v = strtod(n->text, NULL);
  const char *t = n->text + (n->text[0] == '-' || n->text[0] == '+');
  if (errno == ERANGE && isinf(v) && !special_len(t))
    return kc_lex_error(lx, n->at, "float '%s' is out of range", n->text);
  *out = v;
  return true;
}

bool kc_num_f32(kc_lexer *lx, const kc_num *n, float *out) {
  errno = 0;
  /* strtof, not strtod + cast: rounding twice could land on a different float */
  float v = strtof(n->text, NULL);
  const char *t = n->text + (n->text[0] == '-' || n->text[0] == '+');
  if (isinf(v) && !special_len(t))
    return kc_lex_error(lx, n->at, "float '%s' is out of range for f32", n->text);
  *out = v;
  return true;
}

bool kc_lex_value_id(kc_lexer *lx, uint32_t *id) {
  if (!kc_lex_expect(lx, '%', "a value id '%N'")) return false;
  const char *s = lx->p;
  if (!isdigit((unsigned char)*s)) return kc_lex_error(lx, s - 1, "expected a value id '%%N'");
  uint64_t v = 0;
  const char *q = s;
  while (isdigit((unsigned char)*q)) {
    v = v * 10 + (uint64_t)(*q - '0');
    if (v > MAX_VALUE_ID) return kc_lex_error(lx, s - 1, "value id is too large");
    q++;
  }
  if (!lx->len) lx->len = strlen(lx->src);
  if (v > VALUE_IDS_FREE && (v - VALUE_IDS_FREE) / 64 > lx->len)
    return kc_lex_error(lx, s - 1,
                        "value id %%%llu is too large for a text of %zu bytes (at most %zu)",
                        (unsigned long long)v, lx->len, (size_t)VALUE_IDS_FREE + 64 * lx->len);
  if (ident_char(*q)) return kc_lex_error(lx, s - 1, "bad value id");
  if (v == 0)
    return kc_lex_error(lx, s - 1, "value id %%0 is reserved; write _ for an absent value");
  lx->p = q;
  *id = (uint32_t)v;
  return true;
}
