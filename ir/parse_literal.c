/*
 * ir/parse_literal.c - the parts of the text IR reader below a statement: types, tensor
 * literals (dense<...>, @"name"), and attribute dictionaries. The grammar is at the top of
 * ir/parse.c; the spelling rules are at the top of ir/print.c.
 *
 * Invariants: a literal's dtype and shape always come from a type read before the literal is
 * (re)read, so elements are converted straight to their dtype (strtof for f32, never through
 * double); tensors made here live in the graph's table, their data in its arena.
 */
#include "text.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Byte limit of one dense literal: guards against dense<0> : f32[100000,100000]. */
#define MAX_DENSE_BYTES ((size_t)1 << 30)
/* Byte limit of all dense literals of one text together (bodies included): without it a few
 * hundred bytes of splats (dense<0> : f32[16384,16384], six times) allocate gigabytes. Text IR
 * constants are shapes, scalars and small tables; real weights are named tensors (@"name"),
 * whose data is never in the text. So the total is below one literal's limit, which it makes
 * the effective limit of a single literal too. */
#define MAX_DENSE_TOTAL_BYTES ((size_t)256 << 20)

bool kc_parse_type(kc_lexer *lx, kc_graph *g, kc_ptype *t) {
  memset(t, 0, sizeof *t);
  kc_lex_skip(lx);
  t->at = lx->p;
  t->rank = -1;
  if (kc_lex_accept_word(lx, "_")) {
    t->absent = true;
    return true;
  }
  if (kc_lex_accept(lx, '?')) return true;
  char name[32];
  if (!kc_lex_ident(lx, name, sizeof name, "a type")) return false;
  t->dt = kc_dtype_parse(name);
  if (t->dt == KC_DT_NONE) return kc_lex_error(lx, t->at, "unknown dtype '%s'", name);
  if (!kc_lex_expect(lx, '[', "'[' after the dtype")) return false;
  if (kc_lex_accept(lx, '*')) return kc_lex_expect(lx, ']', "']' after '*'");
  t->rank = 0;
  if (kc_lex_accept(lx, ']')) return true;
  do {
    kc_lex_skip(lx);
    if (t->rank == KC_MAX_RANK)
      return kc_lex_error(lx, lx->p, "more than %d dims in a type", KC_MAX_RANK);
    const char *at = lx->p;
    if (!kc_dim_parse(g, &lx->p, &t->dims[t->rank]))
      return kc_lex_error(lx, at, "bad dimension (expected an integer, a symbol or B*S+1...)");
    const char *why = kc_dim_invalid(g, t->dims[t->rank]);
    if (why) /* f32[-3], f32[B/0], a product past int64: no tensor has such a size */
      return kc_lex_error(lx, at, "dimension '%.*s' %s", (int)(lx->p - at < 200 ? lx->p - at : 200),
                          at, why);
    t->rank++;
  } while (kc_lex_accept(lx, ','));
  return kc_lex_expect(lx, ']', "',' or ']' in the type");
}

/* The static dims of a tensor type (tensors cannot have symbolic or unknown shapes), and its
 * element count, which must fit in memory as bytes of the widest dtype. */
static bool tensor_dims(kc_lexer *lx, const kc_ptype *t, int64_t *dims, size_t *numel) {
  if (t->absent || t->dt == KC_DT_NONE || t->rank < 0)
    return kc_lex_error(lx, t->at, "a tensor needs a dtype and a shape");
  *numel = 1;
  for (int i = 0; i < t->rank; i++) {
    if (KC_DIM_IS_SYM(t->dims[i]))
      return kc_lex_error(lx, t->at, "a tensor's dims must be integers, not symbols");
    dims[i] = t->dims[i];
    if (dims[i] && *numel > SIZE_MAX / 8 / (size_t)dims[i])
      return kc_lex_error(lx, t->at, "tensor is too large");
    *numel *= (size_t)dims[i];
  }
  return true;
}

/* The tensor called name with type t, made on first use (without data). */
bool kc_parse_named_tensor(kc_lexer *lx, kc_graph *g, const char *name, const kc_ptype *t,
                           const char *at, uint32_t *ti) {
  int64_t dims[KC_MAX_RANK];
  size_t numel;
  if (!tensor_dims(lx, t, dims, &numel)) return false;
  for (uint32_t i = 0; i < g->ntensors; i++) {
    const kc_tensor *tn = &g->tensors[i];
    if (!tn->name || strcmp(tn->name, name) != 0) continue;
    bool same = tn->dtype == t->dt && tn->rank == t->rank;
    for (int d = 0; same && d < t->rank; d++)
      same = tn->dims[d] == dims[d];
    if (!same) return kc_lex_error(lx, at, "tensor \"%s\" is used with two types", name);
    *ti = i;
    return true;
  }
  *ti = kc_graph_add_tensor(g, name, t->dt, t->rank, dims, NULL, false);
  return *ti != UINT32_MAX || kc_lex_nomem(lx);
}

/* Integer ranges of the integer dtypes, for range checks of dense elements. */
static bool int_range(kc_dtype dt, int64_t *lo, int64_t *hi) {
  switch (dt) {
  case KC_I64: *lo = INT64_MIN, *hi = INT64_MAX; return true;
  case KC_I32: *lo = INT32_MIN, *hi = INT32_MAX; return true;
  case KC_I16: *lo = INT16_MIN, *hi = INT16_MAX; return true;
  case KC_I8: *lo = INT8_MIN, *hi = INT8_MAX; return true;
  case KC_U32: *lo = 0, *hi = UINT32_MAX; return true;
  case KC_U16: *lo = 0, *hi = UINT16_MAX; return true;
  case KC_U8: *lo = 0, *hi = UINT8_MAX; return true;
  default: return false;
  }
}

/* One element of a dense literal, stored at dst in dtype dt. */
static bool parse_elem(kc_lexer *lx, kc_dtype dt, unsigned char *dst) {
  kc_num n;
  if (dt == KC_BOOL) {
    dst[0] = kc_lex_accept_word(lx, "true");
    if (dst[0] || kc_lex_accept_word(lx, "false")) return true;
    kc_lex_skip(lx);
    return kc_lex_error(lx, lx->p, "expected true or false");
  }
  if (!kc_lex_number(lx, &n)) return false;
  if (dt == KC_F64) {
    double d;
    if (!kc_num_f64(lx, &n, &d)) return false;
    memcpy(dst, &d, 8);
    return true;
  }
  if (kc_dtype_is_float(dt)) {
    float f;
    if (!kc_num_f32(lx, &n, &f)) return false;
    if (dt == KC_F32) {
      memcpy(dst, &f, 4);
    } else {
      uint16_t h = dt == KC_F16 ? kc_f32_to_f16(f) : kc_f32_to_bf16(f);
      memcpy(dst, &h, 2);
    }
    return true;
  }
  if (dt == KC_U64) {
    uint64_t u;
    if (!kc_num_u64(lx, &n, &u)) return false;
    memcpy(dst, &u, 8);
    return true;
  }
  int64_t v, lo, hi;
  if (!int_range(dt, &lo, &hi)) return kc_lex_error(lx, n.at, "no literal for this dtype");
  if (!kc_num_i64(lx, &n, &v)) return false;
  if (v < lo || v > hi)
    return kc_lex_error(lx, n.at, "%s is out of range for %s", n.text, kc_dtype_name(dt));
  int8_t i8 = (int8_t)v;
  int16_t i16 = (int16_t)v;
  int32_t i32 = (int32_t)v;
  switch (kc_dtype_size(dt)) {
  case 1: memcpy(dst, &i8, 1); break;
  case 2: memcpy(dst, &i16, 2); break;
  case 4: memcpy(dst, &i32, 4); break;
  default: memcpy(dst, &v, 8); break;
  }
  return true;
}

/* Step over a `dense<...>` literal whose type is not known yet. */
bool kc_skip_dense(kc_lexer *lx) {
  const char *at = lx->p;
  if (!kc_lex_accept_word(lx, "dense") || !kc_lex_expect(lx, '<', "'<' after dense")) return false;
  const char *e = strchr(lx->p, '>');
  if (!e) return kc_lex_error(lx, at, "unterminated dense literal (missing '>')");
  lx->p = e + 1;
  return true;
}

/* A `dense<...>` literal of type t, as a new anonymous tensor. */
bool kc_parse_dense(kc_lexer *lx, kc_graph *g, const kc_ptype *t, uint32_t *ti) {
  int64_t dims[KC_MAX_RANK];
  size_t numel = 0, es = kc_dtype_size(t->dt);
  if (!tensor_dims(lx, t, dims, &numel)) return false;
  if (!kc_lex_accept_word(lx, "dense") || !kc_lex_expect(lx, '<', "'<' after dense")) return false;
  unsigned char *data = NULL;
  if (!kc_lex_accept(lx, '?')) {
    if (numel * es > MAX_DENSE_BYTES)
      return kc_lex_error(lx, lx->p, "dense literal is too large (over %zu bytes)",
                          MAX_DENSE_BYTES);
    if (numel * es > MAX_DENSE_TOTAL_BYTES - lx->dense_bytes)
      return kc_lex_error(lx, lx->p,
                          "this dense literal (%zu bytes) takes the constants of the text past "
                          "their total limit of %zu bytes (%zu bytes before it)",
                          numel * es, MAX_DENSE_TOTAL_BYTES, lx->dense_bytes);
    lx->dense_bytes += numel * es;
    data = kc_arena_alloc(&g->arena, numel * es);
    if (!data) return kc_lex_nomem(lx);
    kc_lex_skip(lx);
    const char *at = lx->p;
    if (kc_lex_accept(lx, '[')) {
      size_t n = 0;
      if (!kc_lex_accept(lx, ']')) {
        do {
          kc_lex_skip(lx);
          if (n == numel)
            return kc_lex_error(lx, lx->p, "too many elements: the type holds %zu", numel);
          if (!parse_elem(lx, t->dt, data + n++ * es)) return false;
        } while (kc_lex_accept(lx, ','));
        if (!kc_lex_expect(lx, ']', "',' or ']' in the dense literal")) return false;
      }
      if (n != numel)
        return kc_lex_error(lx, at, "dense literal has %zu elements, but its type needs %zu", n,
                            numel);
    } else {
      unsigned char one[8];
      if (!parse_elem(lx, t->dt, one)) return false;
      for (size_t i = 0; i < numel; i++)
        memcpy(data + i * es, one, es);
    }
  }
  if (!kc_lex_expect(lx, '>', "'>' to close the dense literal")) return false;
  *ti = kc_graph_add_tensor(g, NULL, t->dt, t->rank, dims, data, false);
  return *ti != UINT32_MAX || kc_lex_nomem(lx);
}

/* `literal ':' type` of a tensor attribute. */
static bool parse_tensor_attr(kc_lexer *lx, kc_graph *g, uint32_t *ti) {
  kc_lex_skip(lx);
  const char *lit = lx->p, *name = NULL;
  kc_ptype t;
  if (kc_lex_accept(lx, '@')) {
    if (!kc_lex_string(lx, &g->arena, &name)) return false;
  } else if (!kc_skip_dense(lx)) {
    return false;
  }
  if (!kc_lex_expect(lx, ':', "':' and the tensor's type after the literal") ||
      !kc_parse_type(lx, g, &t))
    return false;
  if (name) return kc_parse_named_tensor(lx, g, name, &t, lit, ti);
  const char *after = lx->p;
  lx->p = lit;
  if (!kc_parse_dense(lx, g, &t, ti)) return false;
  lx->p = after;
  return true;
}

/* `[n, n, ...]`: ints, or floats when any element is written as a float. */
static bool parse_list(kc_lexer *lx, kc_graph *g, uint32_t ni, const char *name) {
  kc_num *nums = NULL;
  uint32_t n = 0, cap = 0;
  bool any_float = false, ok = true;
  if (!kc_lex_accept(lx, ']')) {
    do {
      kc_lex_skip(lx);
      if (*lx->p == '[') {
        ok = kc_lex_error(lx, lx->p, "nested lists are not allowed in attributes");
        break;
      }
      if (!kc_lex_peek_number(lx)) {
        ok = kc_lex_error(lx, lx->p, "attribute lists hold numbers only");
        break;
      }
      if (n == cap) {
        cap = cap ? cap * 2 : 8;
        kc_num *p = realloc(nums, cap * sizeof *p);
        if (!p) {
          ok = kc_lex_nomem(lx);
          break;
        }
        nums = p;
      }
      if (!(ok = kc_lex_number(lx, &nums[n]))) break;
      any_float |= nums[n++].is_float;
    } while (kc_lex_accept(lx, ','));
    ok = ok && kc_lex_expect(lx, ']', "',' or ']' in the list");
  }
  char kind = 0;
  const char *def;
  bool req;
  if (ok && n == 0 && kc_op_attr_schema(g->nodes[ni].op, name, &kind, &def, &req) && kind == 'F')
    any_float = true;
  void *vals = ok && n ? malloc(n * 8) : NULL;
  if (ok && n && !vals) ok = kc_lex_nomem(lx);
  for (uint32_t i = 0; ok && i < n; i++)
    ok = any_float ? kc_num_f64(lx, &nums[i], (double *)vals + i)
                   : kc_num_i64(lx, &nums[i], (int64_t *)vals + i);
  if (ok && any_float) kc_node_set_floats(g, ni, name, n, vals);
  if (ok && !any_float) kc_node_set_ints(g, ni, name, n, vals);
  free(vals);
  free(nums);
  return ok;
}

static bool parse_attr_value(kc_lexer *lx, kc_graph *g, uint32_t ni, const char *name) {
  kc_lex_skip(lx);
  const char *at = lx->p;
  if (kc_lex_accept(lx, '[')) return parse_list(lx, g, ni, name);
  if (*at == '"') {
    const char *s;
    if (!kc_lex_string(lx, &g->arena, &s)) return false;
    kc_node_set_string(g, ni, name, s);
    return true;
  }
  if (*at == '@' || kc_lex_peek_word(lx, "dense")) {
    uint32_t ti;
    if (!parse_tensor_attr(lx, g, &ti)) return false;
    kc_node_set_tensor(g, ni, name, ti);
    return true;
  }
  if (kc_lex_peek_number(lx)) {
    kc_num n;
    if (!kc_lex_number(lx, &n)) return false;
    if (n.is_float) {
      double d;
      if (!kc_num_f64(lx, &n, &d)) return false;
      kc_node_set_float(g, ni, name, d);
    } else {
      int64_t i;
      if (!kc_num_i64(lx, &n, &i)) return false;
      kc_node_set_int(g, ni, name, i);
    }
    return true;
  }
  char id[KC_TEXT_MAX_IDENT + 1];
  if ((isalpha((unsigned char)*at) || *at == '_') && kc_lex_ident(lx, id, sizeof id, "a value")) {
    kc_dtype dt = kc_dtype_parse(id);
    if (dt != KC_DT_NONE) {
      kc_node_set_dtype(g, ni, name, dt);
      return true;
    }
    if (!kc_text_bare_ok(id))
      return kc_lex_error(lx, at, "'%s' is not an attribute value (quote it for a string)", id);
    kc_node_set_string(g, ni, name, id);
    return true;
  }
  return kc_lex_error(lx, at, "unknown attribute value syntax for '%s'", name);
}

bool kc_parse_attrs(kc_lexer *lx, kc_graph *g, uint32_t ni) {
  if (kc_lex_accept(lx, '}')) return true;
  do {
    kc_lex_skip(lx);
    const char *at = lx->p, *name;
    char buf[KC_TEXT_MAX_IDENT + 1];
    if (*at == '"') {
      if (!kc_lex_string(lx, &g->arena, &name)) return false;
    } else {
      if (!kc_lex_ident(lx, buf, sizeof buf, "an attribute name")) return false;
      name = buf;
    }
    if (kc_node_attr(&g->nodes[ni], name))
      return kc_lex_error(lx, at, "duplicate attribute '%s'", name);
    if (!kc_lex_expect(lx, '=', "'=' after the attribute name") ||
        !parse_attr_value(lx, g, ni, name))
      return false;
    if (g->sticky == KC_ERR_NOMEM) return kc_lex_nomem(lx);
  } while (kc_lex_accept(lx, ','));
  return kc_lex_expect(lx, '}', "',' or '}' after an attribute");
}
