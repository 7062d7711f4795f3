/*
 * ir/print.c - writes a graph as text IR (.kir); ir/parse.c reads it back.
 *
 * Invariant: print(parse(print(g))) == print(g), byte for byte. So everything printed has one
 * spelling only, and nothing is renumbered: %N is the value id N (id 0 is "none", written _).
 *
 *   # kir 1[ weights="FILE.safetensors"][  HEADER]
 *   graph @NAME(%1: f32[B,S,768] "x", %2: i64[B,S]) {
 *     %3 = weight "wte" : f32[50257,768]
 *     %4 = constant dense<[0, 0, -1]> : i64[3]
 *     %5, %6 = split(%3, _) {axis=-1, num_outputs=2} : f32[B,S,384], f32[B,S,384]
 *     %7 = fused(%5, %6) : f32[B,S,384] graph @fused0(%1: f32[B,S,384], %2: f32[B,S,384]) {
 *       %3 = add(%1, %2) : f32[B,S,384]
 *       return %3
 *     } loc("Add_3")
 *     return %7 "y"
 *   }
 *
 * Rules:
 *   - Types: DTYPE[d0,d1] with dims from kc_dim_fprint, f32[] for scalars, f32[*] when the rank is
 *     not known yet, ? when not even the dtype is, _ for an absent result.
 *   - Attributes in the node's stored order as name=value: int 3; float always with . e inf or
 *     nan (kc_fmt_double), so 1.0 is a float and 1 an int; string bare when kc_text_bare_ok,
 *     else quoted; dtype bare (to=f16); ints [1, 2]; floats [1.0, 2.5]; an empty list [] (read
 *     back as ints unless the op's schema says floats).
 *   - Tensors: a named tensor is a reference @"name" (its data is never printed, as weights);
 *     an anonymous one is dense<E> when all its elements are equal (splat) or
 *     dense<[E, E, ...]> in row-major order, dense<?> when it has no data. Element dtype and
 *     shape are not part of the literal: a tensor attribute is followed by its type
 *     (value=dense<0.0> : f32[1]); the `constant` special form takes them from its result type.
 *   - Elements: kc_fmt_float for f32/f16/bf16 (through f32), kc_fmt_double for f64, decimal
 *     integers, true/false for bool.
 *   - Special forms: `weight "NAME"` for the attribute name, `constant LITERAL` for the
 *     attribute value when its tensor has the result's type; otherwise the generic form
 *     op(args) {attrs} is printed, which the parser also reads for these ops.
 *   - A body graph (fused ops) follows the types; loc("...") comes last.
 */
#include "text.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void kc_text_fprint_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\t': fputs("\\t", f); break;
    case '\r': fputs("\\r", f); break;
    default:
      if (*p < 0x20 || *p == 0x7f)
        fprintf(f, "\\x%02x", *p);
      else
        fputc(*p, f); /* bytes >= 0x80 pass through: UTF-8 names stay readable */
    }
  }
  fputc('"', f);
}

/* Graph and attribute names: bare when an identifier, else quoted. */
static void print_name(FILE *f, const char *s) {
  if (kc_text_is_ident(s))
    fputs(s, f);
  else
    kc_text_fprint_string(f, s ? s : "");
}

static void indent(FILE *f, int n) {
  for (int i = 0; i < n; i++)
    fputc(' ', f);
}

void kc_type_fprint(const kc_graph *g, FILE *f, kc_val v) {
  if (!v.id) {
    fputc('_', f);
    return;
  }
  const kc_value *val = v.id < g->nvals ? &g->vals[v.id] : NULL;
  if (!val || val->dtype <= KC_DT_NONE || val->dtype >= KC_DT_COUNT) {
    fputc('?', f);
    return;
  }
  fprintf(f, "%s[", kc_dtype_name(val->dtype));
  if (val->rank < 0) fputc('*', f);
  for (int i = 0; i < val->rank; i++) {
    if (i) fputc(',', f);
    kc_dim_fprint(g, val->dims[i], f); /* streamed: a long dim is never cut short */
  }
  fputc(']', f);
}

static void print_tensor_type(FILE *f, const kc_tensor *t) {
  fprintf(f, "%s[", kc_dtype_name(t->dtype));
  for (int i = 0; i < t->rank; i++)
    fprintf(f, "%s%" PRId64, i ? "," : "", t->dims[i]);
  fputc(']', f);
}

static void print_elem(FILE *f, kc_dtype t, const unsigned char *p) {
  char buf[64];
  float fv;
  double dv;
  uint16_t h;
  union {
    int64_t i64;
    int32_t i32;
    int16_t i16;
    int8_t i8;
    uint64_t u64;
    uint32_t u32;
    uint16_t u16;
    uint8_t u8;
  } u;
  memcpy(&u, p, kc_dtype_size(t));
  switch (t) {
  case KC_F32: memcpy(&fv, p, 4); break;
  case KC_F16: memcpy(&h, p, 2), fv = kc_f16_to_f32(h); break;
  case KC_BF16: memcpy(&h, p, 2), fv = kc_bf16_to_f32(h); break;
  case KC_F64:
    memcpy(&dv, p, 8);
    kc_fmt_double(buf, sizeof buf, dv);
    fputs(buf, f);
    return;
  case KC_I64: fprintf(f, "%" PRId64, u.i64); return;
  case KC_I32: fprintf(f, "%" PRId32, u.i32); return;
  case KC_I16: fprintf(f, "%" PRId16, u.i16); return;
  case KC_I8: fprintf(f, "%" PRId8, u.i8); return;
  case KC_U64: fprintf(f, "%" PRIu64, u.u64); return;
  case KC_U32: fprintf(f, "%" PRIu32, u.u32); return;
  case KC_U16: fprintf(f, "%" PRIu16, u.u16); return;
  case KC_U8: fprintf(f, "%" PRIu8, u.u8); return;
  case KC_BOOL: fputs(u.u8 ? "true" : "false", f); return;
  default: fputc('?', f); return;
  }
  kc_fmt_float(buf, sizeof buf, fv);
  fputs(buf, f);
}

/* The literal of a tensor, without its type. */
static void print_tensor_ref(const kc_graph *g, FILE *f, uint32_t ti) {
  KC_ASSERT(ti < g->ntensors);
  const kc_tensor *t = &g->tensors[ti];
  if (t->name) {
    fputc('@', f);
    kc_text_fprint_string(f, t->name);
    return;
  }
  fputs("dense<", f);
  size_t es = kc_dtype_size(t->dtype), n = es ? t->nbytes / es : 0;
  const unsigned char *p = t->data;
  if (!p || !es) {
    fputc('?', f);
  } else {
    /* bytewise, so -0.0 among 0.0 or distinct NaNs are not folded into a splat */
    bool splat = n > 0;
    for (size_t i = 1; i < n && splat; i++)
      splat = memcmp(p + i * es, p, es) == 0;
    if (splat) {
      print_elem(f, t->dtype, p);
    } else {
      fputc('[', f);
      for (size_t i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        print_elem(f, t->dtype, p + i * es);
      }
      fputc(']', f);
    }
  }
  fputc('>', f);
}

static void print_attr_value(const kc_graph *g, FILE *f, const kc_attr *a) {
  char buf[64];
  switch (a->kind) {
  case KC_ATTR_INT: fprintf(f, "%" PRId64, a->u.i); break;
  case KC_ATTR_FLOAT:
    kc_fmt_double(buf, sizeof buf, a->u.f);
    fputs(buf, f);
    break;
  case KC_ATTR_STRING:
    if (kc_text_bare_ok(a->u.s))
      fputs(a->u.s, f);
    else
      kc_text_fprint_string(f, a->u.s ? a->u.s : "");
    break;
  case KC_ATTR_INTS:
    fputc('[', f);
    for (uint32_t i = 0; i < a->u.ints.n; i++)
      fprintf(f, "%s%" PRId64, i ? ", " : "", a->u.ints.v[i]);
    fputc(']', f);
    break;
  case KC_ATTR_FLOATS:
    fputc('[', f);
    for (uint32_t i = 0; i < a->u.floats.n; i++) {
      kc_fmt_double(buf, sizeof buf, a->u.floats.v[i]);
      fprintf(f, "%s%s", i ? ", " : "", buf);
    }
    fputc(']', f);
    break;
  case KC_ATTR_DTYPE: fputs(kc_dtype_name(a->u.t), f); break;
  case KC_ATTR_TENSOR:
    print_tensor_ref(g, f, a->u.tensor);
    fputs(" : ", f);
    print_tensor_type(f, &g->tensors[a->u.tensor]);
    break;
  }
}

/* Does tensor ti have exactly the type of value v (so the constant form can omit it)? */
static bool tensor_has_type(const kc_graph *g, uint32_t ti, kc_val v) {
  if (ti >= g->ntensors || !v.id || v.id >= g->nvals) return false;
  const kc_tensor *t = &g->tensors[ti];
  const kc_value *val = &g->vals[v.id];
  if (t->dtype != val->dtype || t->rank != val->rank) return false;
  for (int i = 0; i < t->rank; i++)
    if (t->dims[i] != val->dims[i]) return false;
  return true;
}

/* The attribute a special form writes in place of the argument list, or NULL. */
static const kc_attr *special_attr(const kc_graph *g, const kc_node *n) {
  if (n->nin != 0 || n->nout != 1) return NULL;
  if (n->op == KC_OP_WEIGHT) {
    const kc_attr *a = kc_node_attr(n, "name");
    return a && a->kind == KC_ATTR_STRING && a->u.s ? a : NULL;
  }
  if (n->op == KC_OP_CONSTANT) {
    const kc_attr *a = kc_node_attr(n, "value");
    return a && a->kind == KC_ATTR_TENSOR && tensor_has_type(g, a->u.tensor, n->out[0]) ? a : NULL;
  }
  return NULL;
}

static void print_graph(const kc_graph *g, FILE *f, int ind);

static void print_node(const kc_graph *g, FILE *f, const kc_node *n, int ind) {
  indent(f, ind);
  for (uint32_t i = 0; i < n->nout; i++) {
    if (i) fputs(", ", f);
    if (n->out[i].id)
      fprintf(f, "%%%" PRIu32, n->out[i].id);
    else
      fputc('_', f);
  }
  fprintf(f, " = %s", kc_ops[n->op].name);
  const kc_attr *sp = special_attr(g, n);
  if (sp && sp->kind == KC_ATTR_STRING) {
    fputc(' ', f);
    kc_text_fprint_string(f, sp->u.s);
  } else if (sp) {
    fputc(' ', f);
    print_tensor_ref(g, f, sp->u.tensor);
  } else {
    fputc('(', f);
    for (uint32_t i = 0; i < n->nin; i++) {
      if (i) fputs(", ", f);
      if (n->in[i].id)
        fprintf(f, "%%%" PRIu32, n->in[i].id);
      else
        fputc('_', f);
    }
    fputc(')', f);
  }
  bool first = true;
  for (uint32_t i = 0; i < n->nattr; i++) {
    if (&n->attrs[i] == sp) continue;
    fputs(first ? " {" : ", ", f);
    first = false;
    print_name(f, n->attrs[i].name);
    fputc('=', f);
    print_attr_value(g, f, &n->attrs[i]);
  }
  if (!first) fputc('}', f);
  fputs(" : ", f);
  for (uint32_t i = 0; i < n->nout; i++) {
    if (i) fputs(", ", f);
    kc_type_fprint(g, f, n->out[i]);
  }
  if (n->body) {
    fputc(' ', f);
    print_graph(n->body, f, ind);
  }
  if (n->loc) {
    fputs(" loc(", f);
    kc_text_fprint_string(f, n->loc);
    fputc(')', f);
  }
  fputc('\n', f);
}

/* Prints from `graph` to the closing brace, without a newline after it. */
static void print_graph(const kc_graph *g, FILE *f, int ind) {
  fputs("graph @", f);
  print_name(f, g->name);
  fputc('(', f);
  for (uint32_t i = 0; i < g->ninputs; i++) {
    kc_val v = g->inputs[i];
    fprintf(f, "%s%%%" PRIu32 ": ", i ? ", " : "", v.id);
    kc_type_fprint(g, f, v);
    const char *name = v.id < g->nvals ? g->vals[v.id].name : NULL;
    if (name && *name) {
      fputc(' ', f);
      kc_text_fprint_string(f, name);
    }
  }
  fputs(") {\n", f);
  for (uint32_t i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op != KC_OP_NOP) print_node(g, f, &g->nodes[i], ind + 2);
  indent(f, ind + 2);
  fputs("return", f);
  for (uint32_t i = 0; i < g->noutputs; i++) {
    fprintf(f, "%s%%%" PRIu32, i ? ", " : " ", g->outputs[i].v.id);
    if (g->outputs[i].name && *g->outputs[i].name) {
      fputc(' ', f);
      kc_text_fprint_string(f, g->outputs[i].name);
    }
  }
  fputc('\n', f);
  indent(f, ind);
  fputc('}', f);
}

kc_status kc_graph_print_header(const kc_graph *g, FILE *f, const char *header) {
  fprintf(f, "# kir %d", KC_KIR_VERSION);
  if (g->weights_file) {
    fputs(" weights=", f);
    kc_text_fprint_string(f, g->weights_file);
  }
  if (header && *header) {
    fputs("  ", f);
    /* the header is one comment line: a newline in it would start a line of IR */
    for (const char *p = header; *p; p++)
      fputc(*p == '\n' || *p == '\r' ? ' ' : *p, f);
  }
  fputc('\n', f);
  print_graph(g, f, 0);
  fputc('\n', f);
  if (ferror(f)) return kc_errorf(g->ctx, KC_ERR_IO, "cannot write the text IR of @%s", g->name);
  return KC_OK;
}

kc_status kc_graph_print(const kc_graph *g, FILE *f) { return kc_graph_print_header(g, f, NULL); }

char *kc_graph_print_str(const kc_graph *g) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) {
    kc_errorf(g->ctx, KC_ERR_NOMEM, "cannot print @%s: out of memory", g->name);
    return NULL;
  }
  kc_status s = kc_graph_print(g, f);
  if (fclose(f) != 0 && s == KC_OK)
    s = kc_errorf(g->ctx, KC_ERR_NOMEM, "cannot print @%s: out of memory", g->name);
  if (s != KC_OK) {
    free(buf);
    return NULL;
  }
  return buf;
}
