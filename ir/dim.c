/*
 * ir/dim.c - symbolic dimensions: hash-consed, canonical expressions over named symbols.
 *
 * A dim >= 0 is a size; a dim < 0 is -(index+1) into g->dexprs. Every dim made here is in
 * canonical form, so equal expressions are the same kc_dim and callers compare with ==:
 *   - an expression is a polynomial: a sum of terms c*x1*...*xk plus a constant k, where the
 *     atoms xi are symbols, or quotients/remainders (DIV, MOD) that did not simplify;
 *   - atoms within a term and terms within a sum are sorted by a structural order built on
 *     symbol names, not creation order, so two graphs holding the same expression print it the
 *     same way whatever order their symbols were made in (print/parse round trips rely on it);
 *   - a term is MUL(c, MUL(x1, MUL(x2, ...))), c left out when 1 (coefficient first);
 *     a sum is ADD(t1, ADD(t2, ... ADD(tn, k))), the constant last and left out when 0;
 *   - like terms are combined (S+S is 2*S) and zero terms dropped;
 *   - negative integers are KC_DX_CONST expressions (a negative kc_dim names an expression).
 * Division and remainder are floor division, as the sizes they describe are non-negative; they
 * simplify when the divisor divides exactly (12*S/12 = S, B*S/S = B), a constant divisor takes
 * its multiples out ((12*S+T)/12 = S+T/12), and a remainder by a constant reduces coefficients.
 * Polynomials beyond the fixed term/atom limits keep the operation as a raw (non-canonical)
 * node: still correct, merely not merged with equal expressions.
 * Lookups are linear in g->dexprs: graphs hold tens to a few hundred expressions.
 */
#include "internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TERMS 32
#define MAX_ATOMS 8

typedef struct term {
  int64_t c;
  int n;
  kc_dim x[MAX_ATOMS]; /* sorted by cmp_dim */
} term;

typedef struct poly {
  bool ok; /* false: a limit or an overflow was hit; the caller falls back to a raw node */
  int n;
  int64_t k;
  term t[MAX_TERMS]; /* sorted by cmp_term, no zero coefficients */
} poly;

static const kc_dexpr *expr(const kc_graph *g, kc_dim d) {
  KC_ASSERT(KC_DIM_IS_SYM(d) && KC_DIM_EXPR(d) < g->ndexprs);
  return &g->dexprs[KC_DIM_EXPR(d)];
}

bool kc_dim_const(const kc_graph *g, kc_dim d, int64_t *v) {
  if (!KC_DIM_IS_SYM(d)) {
    *v = d;
    return true;
  }
  const kc_dexpr *e = expr(g, d);
  if (e->kind != KC_DX_CONST) return false;
  *v = e->a;
  return true;
}

/* The expression (kind, a, b, name), found or appended; all dims come through here. */
static kc_dim node(kc_graph *g, kc_dexpr_kind kind, kc_dim a, kc_dim b, const char *name) {
  for (uint32_t i = 0; i < g->ndexprs; i++) {
    const kc_dexpr *e = &g->dexprs[i];
    if (e->kind != kind) continue;
    if (kind == KC_DX_SYM ? strcmp(e->name, name) == 0 : (e->a == a && e->b == b))
      return -(kc_dim)i - 1;
  }
  if (g->ndexprs == g->capdexprs) {
    uint32_t cap = g->capdexprs ? g->capdexprs * 2 : 16;
    kc_dexpr *p = realloc(g->dexprs, cap * sizeof *p);
    if (!p) {
      kc_graph_fail(g, KC_ERR_NOMEM);
      return 0;
    }
    g->dexprs = p;
    g->capdexprs = cap;
  }
  kc_dexpr *e = &g->dexprs[g->ndexprs];
  memset(e, 0, sizeof *e);
  e->kind = kind;
  e->a = a;
  e->b = b;
  if (kind == KC_DX_SYM) {
    e->name = kc_arena_strdup(&g->arena, name);
    if (!e->name) {
      kc_graph_fail(g, KC_ERR_NOMEM);
      return 0;
    }
  }
  return -(kc_dim)(g->ndexprs++) - 1;
}

kc_dim kc_dim_int(kc_graph *g, int64_t v) { return v >= 0 ? v : node(g, KC_DX_CONST, v, 0, NULL); }

kc_dim kc_sym(kc_graph *g, const char *name) {
  if (!name || !*name) return kc_dim_fresh(g);
  return node(g, KC_DX_SYM, 0, 0, name);
}

static bool sym_exists(const kc_graph *g, const char *name) {
  for (uint32_t i = 0; i < g->ndexprs; i++)
    if (g->dexprs[i].kind == KC_DX_SYM && strcmp(g->dexprs[i].name, name) == 0) return true;
  return false;
}

kc_dim kc_dim_fresh(kc_graph *g) {
  char name[32];
  /* a parsed graph may already use unkN names: skip those, a fresh symbol must be new */
  do
    snprintf(name, sizeof name, "unk%u", g->nfresh++);
  while (sym_exists(g, name));
  return node(g, KC_DX_SYM, 0, 0, name);
}

/* ---- structural order ---------------------------------------------------------------------- */

/* Total order on canonical dims: integers by value first, then by kind, symbols by name. */
static int cmp_dim(const kc_graph *g, kc_dim x, kc_dim y) {
  if (x == y) return 0;
  int64_t vx, vy;
  bool cx = kc_dim_const(g, x, &vx), cy = kc_dim_const(g, y, &vy);
  if (cx && cy) return vx < vy ? -1 : vx > vy;
  if (cx != cy) return cx ? -1 : 1;
  const kc_dexpr *ex = expr(g, x), *ey = expr(g, y);
  if (ex->kind != ey->kind) return ex->kind < ey->kind ? -1 : 1;
  if (ex->kind == KC_DX_SYM) return strcmp(ex->name, ey->name);
  int c = cmp_dim(g, ex->a, ey->a);
  return c ? c : cmp_dim(g, ex->b, ey->b);
}

/* Terms by their atoms, lexicographically, a prefix first; coefficients do not count. */
static int cmp_term(const kc_graph *g, const term *a, const term *b) {
  for (int i = 0; i < a->n && i < b->n; i++) {
    int c = cmp_dim(g, a->x[i], b->x[i]);
    if (c) return c;
  }
  return a->n < b->n ? -1 : a->n > b->n;
}

/* ---- polynomials --------------------------------------------------------------------------- */

static void add_const(poly *p, int64_t v) {
  if (__builtin_add_overflow(p->k, v, &p->k)) p->ok = false;
}

/* p += t (t's atoms sorted). */
static void add_term(const kc_graph *g, poly *p, const term *t) {
  if (!p->ok || t->c == 0) return;
  if (t->n == 0) {
    add_const(p, t->c);
    return;
  }
  int i = 0, c = 1;
  while (i < p->n && (c = cmp_term(g, &p->t[i], t)) < 0)
    i++;
  if (i < p->n && c == 0) {
    if (__builtin_add_overflow(p->t[i].c, t->c, &p->t[i].c)) p->ok = false;
    if (p->t[i].c == 0) {
      memmove(&p->t[i], &p->t[i + 1], (size_t)(p->n - i - 1) * sizeof *p->t);
      p->n--;
    }
    return;
  }
  if (p->n == MAX_TERMS) {
    p->ok = false;
    return;
  }
  memmove(&p->t[i + 1], &p->t[i], (size_t)(p->n - i) * sizeof *p->t);
  p->t[i] = *t;
  p->n++;
}

/* Insert atom x into t keeping the atoms sorted; false when t is full. */
static bool add_atom(const kc_graph *g, term *t, kc_dim x) {
  if (t->n == MAX_ATOMS) return false;
  int i = t->n;
  while (i > 0 && cmp_dim(g, t->x[i - 1], x) > 0) {
    t->x[i] = t->x[i - 1];
    i--;
  }
  t->x[i] = x;
  t->n++;
  return true;
}

/* d as a single term, when it is a product of integers and atoms (no sums inside). */
static bool as_term(const kc_graph *g, kc_dim d, term *t) {
  int64_t v;
  if (kc_dim_const(g, d, &v)) return !__builtin_mul_overflow(t->c, v, &t->c);
  const kc_dexpr *e = expr(g, d);
  if (e->kind == KC_DX_ADD) return false;
  if (e->kind == KC_DX_MUL) return as_term(g, e->a, t) && as_term(g, e->b, t);
  return add_atom(g, t, d);
}

/* p += coef * d */
static void accum(const kc_graph *g, poly *p, kc_dim d, int64_t coef) {
  if (!p->ok) return;
  int64_t v;
  if (kc_dim_const(g, d, &v)) {
    if (__builtin_mul_overflow(v, coef, &v)) p->ok = false;
    add_const(p, v);
    return;
  }
  const kc_dexpr *e = expr(g, d);
  if (e->kind == KC_DX_ADD) {
    accum(g, p, e->a, coef);
    accum(g, p, e->b, coef);
    return;
  }
  term t = {.c = coef};
  if (e->kind != KC_DX_MUL || !as_term(g, d, &t)) { /* a raw product of sums: keep it whole */
    t = (term){.c = coef, .n = 1, .x = {d}};
  }
  add_term(g, p, &t);
}

static void to_poly(const kc_graph *g, kc_dim d, poly *p) {
  p->ok = true;
  p->n = 0;
  p->k = 0;
  accum(g, p, d, 1);
}

/* r = p * q */
static void poly_mul(const kc_graph *g, const poly *p, const poly *q, poly *r) {
  r->ok = p->ok && q->ok;
  r->n = 0;
  r->k = 0;
  /* each factor's constant becomes a term with no atoms, so one double loop covers all */
  for (int i = -1; i < p->n && r->ok; i++) {
    term a = i < 0 ? (term){.c = p->k} : p->t[i];
    for (int j = -1; j < q->n && r->ok; j++) {
      term b = j < 0 ? (term){.c = q->k} : q->t[j];
      term t = a;
      if (__builtin_mul_overflow(a.c, b.c, &t.c)) r->ok = false;
      for (int m = 0; m < b.n && r->ok; m++)
        if (!add_atom(g, &t, b.x[m])) r->ok = false;
      if (r->ok) add_term(g, r, &t);
    }
  }
}

static kc_dim term_dim(kc_graph *g, const term *t) {
  if (t->n == 0) return kc_dim_int(g, t->c);
  kc_dim m = t->x[t->n - 1];
  for (int i = t->n - 2; i >= 0; i--)
    m = node(g, KC_DX_MUL, t->x[i], m, NULL);
  return t->c == 1 ? m : node(g, KC_DX_MUL, kc_dim_int(g, t->c), m, NULL);
}

static kc_dim from_poly(kc_graph *g, const poly *p) {
  if (p->n == 0) return kc_dim_int(g, p->k);
  kc_dim s = term_dim(g, &p->t[p->n - 1]);
  if (p->k != 0) s = node(g, KC_DX_ADD, s, kc_dim_int(g, p->k), NULL);
  for (int i = p->n - 2; i >= 0; i--)
    s = node(g, KC_DX_ADD, term_dim(g, &p->t[i]), s, NULL);
  return s;
}

/* ---- arithmetic ---------------------------------------------------------------------------- */

/* a + coef*b through polynomials, or a raw node when they overflow. */
static kc_dim add_scaled(kc_graph *g, kc_dim a, kc_dim b, int64_t coef) {
  poly p;
  to_poly(g, a, &p);
  accum(g, &p, b, coef);
  if (p.ok) return from_poly(g, &p);
  if (coef == 1) return node(g, KC_DX_ADD, a, b, NULL);
  /* coef*b as kc_dim_mul makes it, not a raw node: the text "A+(-B)" reads back to this */
  return node(g, KC_DX_ADD, a, kc_dim_mul(g, kc_dim_int(g, coef), b), NULL);
}

kc_dim kc_dim_add(kc_graph *g, kc_dim a, kc_dim b) {
  int64_t r;
  if (!KC_DIM_IS_SYM(a) && !KC_DIM_IS_SYM(b) && !__builtin_add_overflow(a, b, &r)) return r;
  if (a == 0) return b;
  if (b == 0) return a;
  return add_scaled(g, a, b, 1);
}

kc_dim kc_dim_sub(kc_graph *g, kc_dim a, kc_dim b) {
  if (!KC_DIM_IS_SYM(a) && !KC_DIM_IS_SYM(b)) return kc_dim_int(g, a - b);
  if (b == 0) return a;
  if (a == b) return 0;
  return add_scaled(g, a, b, -1);
}

kc_dim kc_dim_mul(kc_graph *g, kc_dim a, kc_dim b) {
  int64_t r;
  if (!KC_DIM_IS_SYM(a) && !KC_DIM_IS_SYM(b) && !__builtin_mul_overflow(a, b, &r)) return r;
  if (a == 0 || b == 0) return 0;
  if (a == 1) return b;
  if (b == 1) return a;
  poly p, q, r2;
  to_poly(g, a, &p);
  to_poly(g, b, &q);
  poly_mul(g, &p, &q, &r2);
  if (r2.ok) return from_poly(g, &r2);
  return cmp_dim(g, a, b) <= 0 ? node(g, KC_DX_MUL, a, b, NULL) : node(g, KC_DX_MUL, b, a, NULL);
}

static int64_t floor_div(int64_t a, int64_t b) {
  if (b == -1) return a == INT64_MIN ? a : -a;
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int64_t floor_mod(int64_t a, int64_t b) {
  if (b == -1) return 0;
  return a - floor_div(a, b) * b;
}

/* Is a a multiple of c (c != 0) with a quotient that fits? INT64_MIN / -1 does not. */
static bool divides(int64_t a, int64_t c) { return c == -1 ? a != INT64_MIN : a % c == 0; }

/* Does term t contain every atom of m (as a multiset)? If so, *rest = t without them. */
static bool term_divides(const term *t, const term *m, term *rest) {
  *rest = *t;
  for (int i = 0; i < m->n; i++) {
    int j = 0;
    while (j < rest->n && rest->x[j] != m->x[i])
      j++;
    if (j == rest->n) return false;
    memmove(&rest->x[j], &rest->x[j + 1], (size_t)(rest->n - j - 1) * sizeof *rest->x);
    rest->n--;
  }
  return true;
}

/* p / m exactly, m a single term with coefficient c != 0: true with *q when it divides. */
static bool poly_div_term(const kc_graph *g, const poly *p, const term *m, poly *q) {
  q->ok = true;
  q->n = 0;
  q->k = 0;
  if (!divides(p->k, m->c) || (p->k != 0 && m->n > 0)) return false;
  q->k = p->k / m->c;
  for (int i = 0; i < p->n; i++) {
    term r;
    if (!divides(p->t[i].c, m->c) || !term_divides(&p->t[i], m, &r)) return false;
    r.c = p->t[i].c / m->c;
    add_term(g, q, &r);
  }
  return q->ok;
}

kc_dim kc_dim_div(kc_graph *g, kc_dim a, kc_dim b) {
  int64_t va, vb;
  bool ca = kc_dim_const(g, a, &va), cb = kc_dim_const(g, b, &vb);
  if (cb && vb == 0) return node(g, KC_DX_DIV, a, b, NULL); /* undefined: left symbolic */
  if (ca && cb) return kc_dim_int(g, floor_div(va, vb));
  if (cb && vb == 1) return a;
  if (cb && vb == -1) return kc_dim_mul(g, a, b);
  if (a == b) return 1;
  if (ca && va == 0) return 0;
  poly p, d, q;
  to_poly(g, a, &p);
  if (!p.ok) return node(g, KC_DX_DIV, a, b, NULL);
  if (!cb) { /* a single-term divisor: only exact division simplifies */
    to_poly(g, b, &d);
    if (d.ok && d.k == 0 && d.n == 1 && poly_div_term(g, &p, &d.t[0], &q)) return from_poly(g, &q);
    return node(g, KC_DX_DIV, a, b, NULL);
  }
  /* a constant divisor: floor((c*X + R) / c) = X + floor(R / c) for integer X */
  poly out = {.ok = true}, rest = {.ok = true};
  for (int i = 0; i < p.n; i++) {
    term t = p.t[i];
    if (divides(t.c, vb)) {
      t.c /= vb;
      add_term(g, &out, &t);
    } else {
      add_term(g, &rest, &t);
    }
  }
  if (rest.n == 0) {
    add_const(&out, floor_div(p.k, vb));
    return out.ok ? from_poly(g, &out) : node(g, KC_DX_DIV, a, b, NULL);
  }
  add_const(&rest, p.k);
  if (!out.ok || !rest.ok) return node(g, KC_DX_DIV, a, b, NULL);
  kc_dim r = node(g, KC_DX_DIV, from_poly(g, &rest), b, NULL);
  return out.n == 0 ? r : kc_dim_add(g, from_poly(g, &out), r);
}

kc_dim kc_dim_mod(kc_graph *g, kc_dim a, kc_dim b) {
  int64_t va, vb;
  bool ca = kc_dim_const(g, a, &va), cb = kc_dim_const(g, b, &vb);
  if (cb && vb == 0) return node(g, KC_DX_MOD, a, b, NULL);
  if (ca && cb) return kc_dim_int(g, floor_mod(va, vb));
  if ((cb && vb == 1) || a == b || (ca && va == 0)) return 0;
  poly p, d, q;
  to_poly(g, a, &p);
  to_poly(g, b, &d);
  if (!p.ok || !d.ok) return node(g, KC_DX_MOD, a, b, NULL);
  if (!cb) {
    if (d.k == 0 && d.n == 1 && poly_div_term(g, &p, &d.t[0], &q)) return 0;
    return node(g, KC_DX_MOD, a, b, NULL);
  }
  /* adding multiples of a constant divisor does not change the remainder */
  poly rest = {.ok = true};
  for (int i = 0; i < p.n; i++) {
    term t = p.t[i];
    t.c = floor_mod(t.c, vb);
    add_term(g, &rest, &t);
  }
  rest.k = floor_mod(p.k, vb);
  if (rest.n == 0) return kc_dim_int(g, rest.k);
  return node(g, KC_DX_MOD, from_poly(g, &rest), b, NULL);
}

bool kc_dim_div_exact(kc_graph *g, kc_dim a, kc_dim b, kc_dim *q) {
  int64_t vb;
  if (kc_dim_const(g, b, &vb) && vb == 0) return false;
  kc_dim d = kc_dim_div(g, a, b);
  if (kc_dim_mul(g, d, b) != a) return false;
  *q = d;
  return true;
}

/* ---- bounds ------------------------------------------------------------------------------------
 */

bool kc_dim_lower(const kc_graph *g, kc_dim d, int64_t *lo) {
  if (kc_dim_const(g, d, lo)) return true;
  const kc_dexpr *e = expr(g, d);
  int64_t a, b;
  switch (e->kind) {
  case KC_DX_SYM: *lo = 0; return true; /* symbols are sizes */
  case KC_DX_ADD:
    return kc_dim_lower(g, e->a, &a) && kc_dim_lower(g, e->b, &b) &&
           !__builtin_add_overflow(a, b, lo);
  case KC_DX_MUL: /* a product of non-negative factors is at least the product of their bounds */
    return kc_dim_lower(g, e->a, &a) && a >= 0 && kc_dim_lower(g, e->b, &b) && b >= 0 &&
           !__builtin_mul_overflow(a, b, lo);
  case KC_DX_DIV: /* floor(a / b) >= 0 for a >= 0 and b >= 1 */
    if (!kc_dim_lower(g, e->a, &a) || a < 0 || !kc_dim_lower(g, e->b, &b) || b < 1) return false;
    *lo = 0;
    return true;
  case KC_DX_MOD: /* a floor remainder by a positive divisor is never negative */
    if (!kc_dim_lower(g, e->b, &b) || b < 1) return false;
    *lo = 0;
    return true;
  default: return false;
  }
}

/* ---- text ------------------------------------------------------------------------------------ */

/* Where text goes: a fixed buffer (kc_dim_str, for messages: truncated when full), or a stream
 * (kc_dim_fprint, for the text IR: never truncated, so whatever is printed parses back). */
typedef struct sbuf {
  char *p;
  size_t size, len;
  FILE *f;
} sbuf;

static void put(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (s->f) {
    vfprintf(s->f, fmt, ap);
  } else if (s->len < s->size) {
    int n = vsnprintf(s->p + s->len, s->size - s->len, fmt, ap);
    if (n > 0) s->len = s->len + (size_t)n < s->size ? s->len + (size_t)n : s->size;
  }
  va_end(ap);
}

static void print_dim(const kc_graph *g, sbuf *s, kc_dim d);

/* A factor of a product; sums always need parentheses, DIV/MOD unless they come first. */
static void print_factor(const kc_graph *g, sbuf *s, kc_dim d, bool first) {
  if (KC_DIM_IS_SYM(d)) {
    kc_dexpr_kind k = expr(g, d)->kind;
    if (k == KC_DX_ADD || (!first && (k == KC_DX_DIV || k == KC_DX_MOD))) {
      put(s, "(");
      print_dim(g, s, d);
      put(s, ")");
      return;
    }
  }
  print_dim(g, s, d);
}

/* The factors of a product, flattened (multiplication is associative). */
static void print_factors(const kc_graph *g, sbuf *s, kc_dim d, bool *first) {
  if (KC_DIM_IS_SYM(d) && expr(g, d)->kind == KC_DX_MUL) {
    print_factors(g, s, expr(g, d)->a, first);
    print_factors(g, s, expr(g, d)->b, first);
    return;
  }
  if (!*first) put(s, "*");
  print_factor(g, s, d, *first);
  *first = false;
}

/* Is the first factor of product d a quotient or remainder? */
static bool div_first(const kc_graph *g, kc_dim d) {
  while (KC_DIM_IS_SYM(d) && expr(g, d)->kind == KC_DX_MUL)
    d = expr(g, d)->a;
  return KC_DIM_IS_SYM(d) && (expr(g, d)->kind == KC_DX_DIV || expr(g, d)->kind == KC_DX_MOD);
}

/* |v| for v < 0, without overflow at INT64_MIN. */
static unsigned long long magnitude(int64_t v) { return (unsigned long long)-(v + 1) + 1; }

/* A term of a sum; after the first one, negative terms print as "-" and their magnitude. */
static void print_term(const kc_graph *g, sbuf *s, kc_dim d, bool first) {
  int64_t v;
  if (!first && kc_dim_const(g, d, &v)) {
    if (v == INT64_MIN) /* its magnitude is no int64: written as one negative literal */
      put(s, "+(%lld)", (long long)v);
    else if (v < 0)
      put(s, "-%llu", magnitude(v));
    else
      put(s, "+%lld", (long long)v);
    return;
  }
  if (!first && KC_DIM_IS_SYM(d)) {
    const kc_dexpr *e = expr(g, d);
    if (e->kind == KC_DX_MUL && kc_dim_const(g, e->a, &v) && v < 0) {
      bool f = true; /* a printed coefficient is the first factor: "-2*(S/2)", not "-2*S/2" */
      if (v == INT64_MIN) {
        put(s, "+(%lld)", (long long)v);
        f = false;
      } else {
        put(s, "-");
        if (v != -1) {
          put(s, "%llu", magnitude(v));
          f = false;
        }
      }
      print_factors(g, s, e->b, &f);
      return;
    }
  }
  if (first && KC_DIM_IS_SYM(d)) { /* "-S", but "-1*(S/2)": unary minus binds tighter than / */
    const kc_dexpr *e = expr(g, d);
    if (e->kind == KC_DX_MUL && kc_dim_const(g, e->a, &v) && v == -1 && !div_first(g, e->b)) {
      put(s, "-");
      bool f = true;
      print_factors(g, s, e->b, &f);
      return;
    }
  }
  if (!first) put(s, "+");
  bool f = true;
  print_factors(g, s, d, &f);
}

/* Is MUL node d a canonical term (term_dim's shape: an optional coefficient, then at most
 * MAX_ATOMS atoms in order)? Its factors may then be printed flat: parsing "c*x1*x2" multiplies
 * left to right and canonicalizes back to d. A raw product (ir/dim.c keeps one when the
 * polynomial limits are hit) is printed by its structure instead. */
static bool is_term(const kc_graph *g, kc_dim d) {
  const kc_dexpr *e = expr(g, d);
  int64_t v;
  if (kc_dim_const(g, e->a, &v)) {
    if (v == 1 || v == 0 || !KC_DIM_IS_SYM(e->b) || kc_dim_const(g, e->b, &v)) return false;
    d = e->b;
  }
  kc_dim prev = 0;
  int n = 0;
  for (;;) {
    kc_dim x = d;
    bool more = KC_DIM_IS_SYM(d) && expr(g, d)->kind == KC_DX_MUL;
    if (more) x = expr(g, d)->a;
    if (!KC_DIM_IS_SYM(x)) return false;
    kc_dexpr_kind k = expr(g, x)->kind;
    if (k == KC_DX_ADD || k == KC_DX_MUL || k == KC_DX_CONST) return false;
    if (n > 0 && cmp_dim(g, prev, x) > 0) return false;
    if (++n > MAX_ATOMS) return false;
    prev = x;
    if (!more) return true;
    d = expr(g, d)->b;
  }
}

/* Is ADD node d a canonical sum (from_poly's shape: canonical terms in strictly increasing
 * order, at most MAX_TERMS, a non-zero constant last)? Then it prints flat; else by structure. */
static bool is_sum(const kc_graph *g, kc_dim d) {
  term prev = {0}, t;
  int n = 0;
  for (;;) {
    kc_dim x = d;
    bool more = KC_DIM_IS_SYM(d) && expr(g, d)->kind == KC_DX_ADD;
    if (more) x = expr(g, d)->a;
    int64_t v;
    if (kc_dim_const(g, x, &v)) return !more && v != 0 && n > 0; /* the constant comes last */
    if (expr(g, x)->kind == KC_DX_ADD) return false;
    if (expr(g, x)->kind == KC_DX_MUL && !is_term(g, x)) return false;
    t = (term){.c = 1};
    if (!as_term(g, x, &t) || (n > 0 && cmp_term(g, &prev, &t) >= 0)) return false;
    if (++n > MAX_TERMS) return false;
    prev = t;
    if (!more) return true;
    d = expr(g, d)->b;
  }
}

/* A raw node as written by its structure: "A op (B)", so parsing applies op to the same two
 * operands (kc_dim_add/kc_dim_mul are deterministic and hit the same limit again). */
static void print_raw(const kc_graph *g, sbuf *s, kc_dim d) {
  const kc_dexpr *e = expr(g, d);
  bool left_paren = e->kind == KC_DX_MUL && KC_DIM_IS_SYM(e->a) && expr(g, e->a)->kind == KC_DX_ADD;
  if (left_paren) put(s, "(");
  print_dim(g, s, e->a);
  if (left_paren) put(s, ")");
  put(s, e->kind == KC_DX_ADD ? "+(" : "*(");
  print_dim(g, s, e->b);
  put(s, ")");
}

static void print_terms(const kc_graph *g, sbuf *s, kc_dim d, bool *first) {
  if (KC_DIM_IS_SYM(d) && expr(g, d)->kind == KC_DX_ADD) {
    print_terms(g, s, expr(g, d)->a, first);
    print_terms(g, s, expr(g, d)->b, first);
    return;
  }
  print_term(g, s, d, *first);
  *first = false;
}

static void print_dim(const kc_graph *g, sbuf *s, kc_dim d) {
  if (!KC_DIM_IS_SYM(d)) {
    put(s, "%lld", (long long)d);
    return;
  }
  if (KC_DIM_EXPR(d) >= g->ndexprs) {
    put(s, "?");
    return;
  }
  const kc_dexpr *e = expr(g, d);
  bool first = true;
  switch (e->kind) {
  case KC_DX_CONST: put(s, "%lld", (long long)e->a); return;
  case KC_DX_SYM: put(s, "%s", e->name); return;
  case KC_DX_ADD:
    if (is_sum(g, d))
      print_terms(g, s, d, &first);
    else
      print_raw(g, s, d);
    return;
  case KC_DX_MUL:
    if (is_term(g, d))
      print_term(g, s, d, true);
    else
      print_raw(g, s, d);
    return;
  case KC_DX_DIV:
  case KC_DX_MOD: {
    /* left-associative: the left side needs parentheses only when it is a sum */
    print_factor(g, s, e->a, true);
    put(s, e->kind == KC_DX_DIV ? "/" : "%%");
    bool simple = !KC_DIM_IS_SYM(e->b) || expr(g, e->b)->kind == KC_DX_SYM ||
                  expr(g, e->b)->kind == KC_DX_CONST;
    if (!simple) put(s, "(");
    print_dim(g, s, e->b);
    if (!simple) put(s, ")");
    return;
  }
  }
}

const char *kc_dim_str(const kc_graph *g, kc_dim d, char *buf, size_t size) {
  if (!buf || size == 0) return buf;
  buf[0] = 0;
  sbuf s = {buf, size, 0, NULL};
  print_dim(g, &s, d);
  return buf;
}

void kc_dim_fprint(const kc_graph *g, kc_dim d, FILE *f) {
  sbuf s = {NULL, 0, 0, f};
  print_dim(g, &s, d);
}

/* ---- validity ---------------------------------------------------------------------------- */

/* Does the expression tree of d (shared subexpressions counted each time they occur) have more
 * than *budget nodes? Decrements *budget; stops early, so the cost is at most the limit. */
static bool tree_over(const kc_graph *g, kc_dim d, int64_t *budget) {
  if (--*budget < 0) return true;
  if (!KC_DIM_IS_SYM(d)) return false;
  const kc_dexpr *e = expr(g, d);
  if (e->kind == KC_DX_SYM || e->kind == KC_DX_CONST) return false;
  return tree_over(g, e->a, budget) || tree_over(g, e->b, budget);
}

/* Does d divide by the constant 0 anywhere? */
static bool div_by_zero(const kc_graph *g, kc_dim d) {
  if (!KC_DIM_IS_SYM(d)) return false;
  const kc_dexpr *e = expr(g, d);
  if (e->kind == KC_DX_SYM || e->kind == KC_DX_CONST) return false;
  int64_t v;
  if ((e->kind == KC_DX_DIV || e->kind == KC_DX_MOD) && kc_dim_const(g, e->b, &v) && v == 0)
    return true;
  return div_by_zero(g, e->a) || div_by_zero(g, e->b);
}

/* d with every symbol 1, the smallest size a non-empty tensor's symbols take: false when an
 * operation overflows int64 there (a division by a divisor that is 0 there is not counted:
 * B/(S-1) is fine for S > 1, so its value is taken as unknown and *known cleared). */
static bool fits_at_ones(const kc_graph *g, kc_dim d, int64_t *out, bool *known) {
  if (kc_dim_const(g, d, out)) return true;
  const kc_dexpr *e = expr(g, d);
  if (e->kind == KC_DX_SYM) {
    *out = 1;
    return true;
  }
  int64_t a, b;
  bool ka = true, kb = true;
  if (!fits_at_ones(g, e->a, &a, &ka) || !fits_at_ones(g, e->b, &b, &kb)) return false;
  *known = ka && kb;
  if (!*known) return true;
  switch (e->kind) {
  case KC_DX_ADD: return !__builtin_add_overflow(a, b, out);
  case KC_DX_MUL: return !__builtin_mul_overflow(a, b, out);
  default:
    if (b == 0) {
      *known = false;
      return true;
    }
    *out = e->kind == KC_DX_DIV ? floor_div(a, b) : floor_mod(a, b);
    return true;
  }
}

const char *kc_dim_invalid(const kc_graph *g, kc_dim d) {
  int64_t v, budget = KC_DIM_MAX_NODES;
  if (KC_DIM_IS_SYM(d) && KC_DIM_EXPR(d) >= g->ndexprs) return "names no expression";
  if (kc_dim_const(g, d, &v)) return v < 0 ? "is negative" : NULL;
  if (tree_over(g, d, &budget)) return "is too large an expression";
  if (div_by_zero(g, d)) return "divides by zero";
  bool known = true;
  if (!fits_at_ones(g, d, &v, &known)) return "overflows int64";
  return NULL;
}

/* Recursive descent: expr := term (('+'|'-') term)*, term := unary (('*'|'/'|'%') unary)*,
 * unary := '-' unary | INT | IDENT | '(' expr ')'. */
static bool parse_expr(kc_graph *g, const char **p, kc_dim *out, int depth);

static void skip_ws(const char **p) {
  while (**p == ' ' || **p == '\t')
    (*p)++;
}

static bool parse_unary(kc_graph *g, const char **p, kc_dim *out, int depth) {
  if (depth > 64) return false;
  const char *s = *p;
  skip_ws(&s);
  if (*s == '-' && isdigit((unsigned char)s[1])) {
    /* a negative integer is one literal, so INT64_MIN, which is printed, reads back */
    uint64_t m = 0;
    for (s++; isdigit((unsigned char)*s); s++)
      if (__builtin_mul_overflow(m, 10, &m) ||
          __builtin_add_overflow(m, (uint64_t)(*s - '0'), &m) || m > (uint64_t)INT64_MAX + 1)
        return false;
    *out = kc_dim_int(g, m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m);
  } else if (*s == '-') {
    s++;
    kc_dim d;
    if (!parse_unary(g, &s, &d, depth + 1)) return false;
    *out = kc_dim_mul(g, kc_dim_int(g, -1), d);
  } else if (isdigit((unsigned char)*s)) {
    int64_t v = 0;
    while (isdigit((unsigned char)*s)) {
      if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v))
        return false;
      s++;
    }
    *out = v;
  } else if (isalpha((unsigned char)*s) || *s == '_') {
    char name[128];
    size_t n = 0;
    while (isalnum((unsigned char)*s) || *s == '_') {
      if (n + 1 >= sizeof name) return false;
      name[n++] = *s++;
    }
    name[n] = 0;
    *out = kc_sym(g, name);
  } else if (*s == '(') {
    s++;
    if (!parse_expr(g, &s, out, depth + 1)) return false;
    skip_ws(&s);
    if (*s != ')') return false;
    s++;
  } else {
    return false;
  }
  *p = s;
  return true;
}

/* One binary level: operands by sub, operators from ops; an operator with no operand after it
 * is not consumed, so "S->" stops before the '-'. */
static bool parse_level(kc_graph *g, const char **p, kc_dim *out, int depth, const char *ops) {
  bool sum = ops[0] == '+';
  kc_dim acc;
  if (!(sum ? parse_level(g, p, &acc, depth, "*/%") : parse_unary(g, p, &acc, depth))) return false;
  for (;;) {
    const char *s = *p;
    skip_ws(&s);
    if (!*s || !strchr(ops, *s)) break;
    char op = *s++;
    kc_dim r;
    if (!(sum ? parse_level(g, &s, &r, depth, "*/%") : parse_unary(g, &s, &r, depth))) break;
    switch (op) {
    case '+': acc = kc_dim_add(g, acc, r); break;
    case '-': acc = kc_dim_sub(g, acc, r); break;
    case '*': acc = kc_dim_mul(g, acc, r); break;
    case '/': acc = kc_dim_div(g, acc, r); break;
    default: acc = kc_dim_mod(g, acc, r); break;
    }
    *p = s;
  }
  *out = acc;
  return true;
}

static bool parse_expr(kc_graph *g, const char **p, kc_dim *out, int depth) {
  return parse_level(g, p, out, depth, "+-");
}

bool kc_dim_parse(kc_graph *g, const char **p, kc_dim *out) {
  const char *s = *p;
  if (!parse_expr(g, &s, out, 0)) return false;
  *p = s;
  return true;
}

/* ---- evaluation and import --------------------------------------------------------------------
 */

bool kc_dim_eval(const kc_graph *g, kc_dim d,
                 bool (*lookup)(void *user, const char *name, int64_t *v), void *user,
                 int64_t *out) {
  if (kc_dim_const(g, d, out)) return true;
  const kc_dexpr *e = expr(g, d);
  if (e->kind == KC_DX_SYM) return lookup && lookup(user, e->name, out);
  int64_t a, b;
  if (!kc_dim_eval(g, e->a, lookup, user, &a) || !kc_dim_eval(g, e->b, lookup, user, &b))
    return false;
  switch (e->kind) {
  case KC_DX_ADD: return !__builtin_add_overflow(a, b, out);
  case KC_DX_MUL: return !__builtin_mul_overflow(a, b, out);
  case KC_DX_DIV:
    if (b == 0) return false;
    *out = floor_div(a, b);
    return true;
  case KC_DX_MOD:
    if (b == 0) return false;
    *out = floor_mod(a, b);
    return true;
  default: return false;
  }
}

kc_dim kc_dim_import(kc_graph *dst, const kc_graph *src, kc_dim d) {
  int64_t v;
  if (kc_dim_const(src, d, &v)) return kc_dim_int(dst, v);
  const kc_dexpr *e = expr(src, d);
  if (e->kind == KC_DX_SYM) return kc_sym(dst, e->name);
  kc_dim a = kc_dim_import(dst, src, e->a), b = kc_dim_import(dst, src, e->b);
  switch (e->kind) {
  case KC_DX_ADD: return kc_dim_add(dst, a, b);
  case KC_DX_MUL: return kc_dim_mul(dst, a, b);
  case KC_DX_DIV: return kc_dim_div(dst, a, b);
  default: return kc_dim_mod(dst, a, b);
  }
}
