/*
 * ir/text.h - private to the text form of the IR (ir/print.c, ir/lex.c, ir/parse.c,
 * ir/parse_literal.c).
 *
 * The grammar and the printing rules are documented at the top of ir/print.c (what is written)
 * and ir/parse.c (what is read). This header holds what both sides must agree on: which
 * strings may be written bare, how strings are quoted, and the character-level reader.
 *
 * The reader works on a cursor into one NUL-terminated source text instead of a token stream,
 * so symbolic dims can be handed to kc_dim_parse (ir/dim.c) as raw text and a `dense<...>`
 * literal can be re-read once the type that follows it is known. The first error sets `failed`
 * and keeps its message (later reports are dropped), so callers only propagate `false`.
 */
#ifndef KERNC_IR_TEXT_H
#define KERNC_IR_TEXT_H

#include "internal.h"

#define KC_KIR_VERSION 1

/* Longest identifier written bare; longer names are quoted, so readers use fixed buffers. */
#define KC_TEXT_MAX_IDENT 127

/* s is [A-Za-z_][A-Za-z0-9_]* and at most KC_TEXT_MAX_IDENT bytes long */
bool kc_text_is_ident(const char *s);
/*
 * A string attribute may be written bare when it is an identifier that cannot be read as
 * anything else: not a dtype name, not `_`, `true`, `false`, `inf`, `nan`, `dense`.
 */
bool kc_text_bare_ok(const char *s);
/* Write s in double quotes with C escapes (\" \\ \n \t \r, \xHH for other control bytes). */
void kc_text_fprint_string(FILE *f, const char *s);

typedef struct kc_lexer {
  kc_context *ctx;
  const char *file; /* for messages */
  const char *src;  /* start of the text, for line/column */
  const char *p;    /* cursor */
  bool failed;
  bool nomem;         /* the failure was an allocation: reported as KC_ERR_NOMEM */
  size_t dense_bytes; /* bytes of the dense literals read so far (ir/parse_literal.c's cap) */
  size_t len;         /* strlen(src), once needed (0: not yet measured) */
} kc_lexer;

/* A number as written: its text, and whether it reads as a float (has . e inf nan). */
typedef struct kc_num {
  char text[80];
  bool is_float;
  const char *at; /* where it starts, for messages */
} kc_num;

/* Set ctx's error (status s) to "file:line:col: error: msg", the source line of `at` in src and
 * a caret under it (chibicc style). */
void kc_text_error_at(kc_context *ctx, kc_status s, const char *file, const char *src,
                      const char *at, const char *msg);
/* Report "file:line:col: error: msg", the source line and a caret under `at`; returns false. */
bool kc_lex_error(kc_lexer *lx, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Skip blanks, newlines and `#` comments (to end of line). */
void kc_lex_skip(kc_lexer *lx);
/* After skipping, is the next character c? Consumes nothing. */
bool kc_lex_peek(kc_lexer *lx, char c);
/* After skipping, consume c if it is next. */
bool kc_lex_accept(kc_lexer *lx, char c);
/* Consume c or fail with "expected <what>". */
bool kc_lex_expect(kc_lexer *lx, char c, const char *what);
/* After skipping, is the next token exactly the identifier word? Consumes nothing. */
bool kc_lex_peek_word(kc_lexer *lx, const char *word);
/* Consume the identifier word if it is next. */
bool kc_lex_accept_word(kc_lexer *lx, const char *word);
/* An identifier into buf (too long is an error); `what` names it in the message. */
bool kc_lex_ident(kc_lexer *lx, char *buf, size_t size, const char *what);
/* A quoted string, unescaped into a's memory. */
bool kc_lex_string(kc_lexer *lx, kc_arena *a, const char **out);
/* A number: [-+]digits[.digits][e[-+]digits], or [-+]inf / nan. */
bool kc_lex_number(kc_lexer *lx, kc_num *out);
/* Is a number next (digit, sign + digit, inf, nan)? */
bool kc_lex_peek_number(kc_lexer *lx);
/* Convert a number read by kc_lex_number; each fails with a message at the number. */
bool kc_num_i64(kc_lexer *lx, const kc_num *n, int64_t *out);
bool kc_num_u64(kc_lexer *lx, const kc_num *n, uint64_t *out);
bool kc_num_f64(kc_lexer *lx, const kc_num *n, double *out);
bool kc_num_f32(kc_lexer *lx, const kc_num *n, float *out);
/* `%N` with N > 0 (and below a sanity limit). */
bool kc_lex_value_id(kc_lexer *lx, uint32_t *id);
/* Report an allocation failure at the cursor; returns false. */
bool kc_lex_nomem(kc_lexer *lx);

/* ---- ir/parse_literal.c: types, literals, attributes ---------------------------------- */

/* A type as read; the parser trusts it (the verifier checks it later). */
typedef struct kc_ptype {
  bool absent; /* `_`: the type of an absent result */
  kc_dtype dt; /* KC_DT_NONE for `?` */
  int rank;    /* -1: unknown (`?` or DTYPE[*]) */
  kc_dim dims[KC_MAX_RANK];
  const char *at; /* where it starts, for messages */
} kc_ptype;

/* A type; symbolic dims are made in graph g. */
bool kc_parse_type(kc_lexer *lx, kc_graph *g, kc_ptype *t);
/* Step over a `dense<...>` literal whose type comes after it. */
bool kc_skip_dense(kc_lexer *lx);
/* A `dense<...>` literal of type t, as a new anonymous tensor *ti of g. */
bool kc_parse_dense(kc_lexer *lx, kc_graph *g, const kc_ptype *t, uint32_t *ti);
/* The tensor called name with type t (made without data on first use); at is for messages. */
bool kc_parse_named_tensor(kc_lexer *lx, kc_graph *g, const char *name, const kc_ptype *t,
                           const char *at, uint32_t *ti);
/* After '{': attributes up to '}', set on node ni in order; duplicates are errors. */
bool kc_parse_attrs(kc_lexer *lx, kc_graph *g, uint32_t ni);

#endif /* KERNC_IR_TEXT_H */
