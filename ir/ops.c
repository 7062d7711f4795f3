/*
 * ir/ops.c - the op table built from ops.def, and lookups by name and attribute schema.
 *
 * Shape functions are declared here from the same rows, so a row without its function is a
 * link error, not a silent hole.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define OP(id, name, mini, maxi, mino, maxo, shape, cls, flags, attrs)                             \
  kc_status shape(kc_graph *g, kc_node *n);
#include "ops.def"
#undef OP

const kc_op_info kc_ops[KC_OP_COUNT] = {
    [KC_OP_NOP] = {"nop", 0, -1, 0, -1, NULL, KC_CLASS_OPAQUE, 0, ""},
#define OP(id, name, mini, maxi, mino, maxo, shape, cls, flags, attrs)                             \
  [KC_OP_##id] = {name, mini, maxi, mino, maxo, shape, KC_CLASS_##cls, flags, attrs},
#include "ops.def"
#undef OP
};

kc_op kc_op_lookup(const char *name) {
  for (int op = 1; op < KC_OP_COUNT; op++)
    if (strcmp(kc_ops[op].name, name) == 0) return (kc_op)op;
  return KC_OP_NOP;
}

bool kc_op_attr_schema(kc_op op, const char *name, char *kind, const char **def, bool *required) {
  const char *p = kc_ops[op].attrs;
  size_t len = strlen(name);
  while (p && *p) {
    const char *end = strchr(p, ',');
    if (!end) end = p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (colon && (size_t)(colon - p) == len && memcmp(p, name, len) == 0) {
      *kind = colon[1];
      const char *rest = colon + 2;
      *required = rest == end;
      *def = (rest < end && *rest == '=') ? rest + 1 : NULL; /* text up to ',' or end */
      return true;
    }
    p = *end ? end + 1 : end;
  }
  return false;
}

const char *kc_arity_text(int lo, int hi, char *buf, size_t size) {
  if (hi < 0)
    snprintf(buf, size, "at least %d", lo);
  else if (lo == hi)
    snprintf(buf, size, "%d", lo);
  else
    snprintf(buf, size, "%d to %d", lo, hi);
  return buf;
}
