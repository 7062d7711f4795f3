/*
 * runtime/safetensors.c - read and write safetensors files (runtime/safetensors.h).
 *
 * The JSON reader is for exactly the safetensors header: a top object whose members are tensor
 * objects ("dtype", "shape", "data_offsets", each once) or "__metadata__" (strings to strings).
 * It reads through a cursor with an end, so truncated or malformed headers stop with an error
 * that says where (byte offset in the header) and what was expected.
 */
#include "runtime/safetensors.h"
#include "ir/internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADER (100u << 20) /* the safetensors library's own limit */

static const struct {
  const char *name;
  kc_dtype t;
} dtypes[] = {{"F32", KC_F32}, {"F16", KC_F16}, {"BF16", KC_BF16}, {"F64", KC_F64}, {"I64", KC_I64},
              {"I32", KC_I32}, {"I16", KC_I16}, {"I8", KC_I8},     {"U64", KC_U64}, {"U32", KC_U32},
              {"U16", KC_U16}, {"U8", KC_U8},   {"BOOL", KC_BOOL}};

static const char *dtype_st(kc_dtype t) {
  for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
    if (dtypes[i].t == t) return dtypes[i].name;
  return NULL;
}

/* ---- writing ---------------------------------------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

static void put_str(sbuf *b, const char *s) {
  puts_(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      put(b, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      puts_(b, esc);
    } else {
      put(b, (const char *)&c, 1);
    }
  }
  puts_(b, "\"");
}

static size_t tensor_bytes(const kc_st_tensor *t) {
  size_t n = kc_dtype_size(t->dtype);
  for (int d = 0; d < t->rank; d++)
    n *= (size_t)t->dims[d];
  return n;
}

kc_status kc_st_write(kc_context *ctx, const char *path, const kc_st_tensor *ts, uint32_t n,
                      const char *const *meta, uint32_t nmeta) {
  sbuf h = {0};
  size_t off = 0;
  char num[64];
  puts_(&h, "{");
  if (nmeta) {
    puts_(&h, "\"__metadata__\":{");
    for (uint32_t k = 0; k < nmeta; k++) {
      if (k) puts_(&h, ",");
      put_str(&h, meta[2 * k]);
      puts_(&h, ":");
      put_str(&h, meta[2 * k + 1]);
    }
    puts_(&h, "}");
  }
  for (uint32_t i = 0; i < n; i++) {
    const char *dt = dtype_st(ts[i].dtype);
    if (!dt) {
      free(h.p);
      return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                       "%s: tensor '%s' has dtype %s, which safetensors "
                       "has no name for",
                       path, ts[i].name, kc_dtype_name(ts[i].dtype));
    }
    if (i || nmeta) puts_(&h, ",");
    put_str(&h, ts[i].name);
    puts_(&h, ":{\"dtype\":\"");
    puts_(&h, dt);
    puts_(&h, "\",\"shape\":[");
    for (int d = 0; d < ts[i].rank; d++) {
      snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)ts[i].dims[d]);
      puts_(&h, num);
    }
    size_t nb = tensor_bytes(&ts[i]);
    snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
    puts_(&h, num);
    off += nb;
  }
  puts_(&h, "}");
  while (!h.oom && h.len % 8) /* the data then starts 8-aligned, as the reference writer does */
    puts_(&h, " ");
  if (h.oom) {
    free(h.p);
    return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory writing the header", path);
  }
  FILE *f = fopen(path, "wb");
  if (!f) {
    free(h.p);
    return kc_errorf(ctx, KC_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
  }
  unsigned char len8[8];
  for (int k = 0; k < 8; k++)
    len8[k] = (unsigned char)((uint64_t)h.len >> (8 * k));
  bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.p, 1, h.len, f) == h.len;
  for (uint32_t i = 0; ok && i < n; i++) {
    size_t nb = tensor_bytes(&ts[i]);
    ok = nb == 0 || fwrite(ts[i].data, 1, nb, f) == nb;
  }
  ok = (fclose(f) == 0) && ok;
  free(h.p);
  if (!ok) return kc_errorf(ctx, KC_ERR_IO, "%s: write failed: %s", path, strerror(errno));
  return KC_OK;
}

/* ---- reading ---------------------------------------------------------------------------- */

typedef struct rd {
  kc_context *ctx;
  const char *what;
  const char *s, *p, *end;
} rd;

static kc_status bad(rd *r, const char *fmt, const char *arg) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, arg);
  return kc_errorf(r->ctx, KC_ERR_PARSE, "%s: safetensors header, byte %zu: %s", r->what,
                   (size_t)(r->p - r->s), msg);
}

static void ws(rd *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
    r->p++;
}

static bool eat(rd *r, char c) {
  ws(r);
  if (r->p < r->end && *r->p == c) {
    r->p++;
    return true;
  }
  return false;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A JSON string into a malloc'd *out (\uXXXX as UTF-8; surrogate pairs joined). */
static kc_status str(rd *r, char **out) {
  *out = NULL;
  if (!eat(r, '"')) return bad(r, "expected a string%s", "");
  sbuf b = {0};
  for (;;) {
    if (r->p >= r->end) {
      free(b.p);
      return bad(r, "unterminated string%s", "");
    }
    unsigned char c = (unsigned char)*r->p++;
    if (c == '"') break;
    if (c < 0x20) {
      free(b.p);
      return bad(r, "control character in a string%s", "");
    }
    if (c != '\\') {
      put(&b, (const char *)&c, 1);
      continue;
    }
    if (r->p >= r->end) break;
    char e = *r->p++, o = 0;
    switch (e) {
    case '"': o = '"'; break;
    case '\\': o = '\\'; break;
    case '/': o = '/'; break;
    case 'b': o = '\b'; break;
    case 'f': o = '\f'; break;
    case 'n': o = '\n'; break;
    case 'r': o = '\r'; break;
    case 't': o = '\t'; break;
    case 'u': {
      uint32_t cp = 0;
      for (int k = 0; k < 4; k++) {
        int h = r->p < r->end ? hexval(*r->p++) : -1;
        if (h < 0) {
          free(b.p);
          return bad(r, "bad \\u escape%s", "");
        }
        cp = cp * 16 + (uint32_t)h;
      }
      if (cp >= 0xD800 && cp < 0xDC00 && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
        uint32_t lo = 0;
        bool ok = true;
        for (int k = 2; k < 6; k++) {
          int h = hexval(r->p[k]);
          ok = ok && h >= 0;
          lo = lo * 16 + (uint32_t)(h < 0 ? 0 : h);
        }
        if (ok && lo >= 0xDC00 && lo < 0xE000) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          r->p += 6;
        }
      }
      char u[4];
      size_t un;
      if (cp < 0x80) {
        u[0] = (char)cp, un = 1;
      } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 63)), un = 2;
      } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 63));
        u[2] = (char)(0x80 | (cp & 63)), un = 3;
      } else {
        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 63));
        u[2] = (char)(0x80 | ((cp >> 6) & 63)), u[3] = (char)(0x80 | (cp & 63)), un = 4;
      }
      put(&b, u, un);
      continue;
    }
    default: free(b.p); return bad(r, "bad escape in a string%s", "");
    }
    put(&b, &o, 1);
  }
  if (b.oom) {
    free(b.p);
    return kc_errorf(r->ctx, KC_ERR_NOMEM, "%s: out of memory", r->what);
  }
  if (!b.p) {
    b.p = malloc(1);
    if (!b.p) return kc_errorf(r->ctx, KC_ERR_NOMEM, "%s: out of memory", r->what);
    b.p[0] = 0;
  }
  if (strlen(b.p) != b.len) {
    free(b.p);
    return bad(r, "NUL character in a string%s", "");
  }
  *out = b.p;
  return KC_OK;
}

/* A non-negative integer below 2^62. */
static kc_status uint_(rd *r, uint64_t *v) {
  ws(r);
  if (r->p >= r->end || *r->p < '0' || *r->p > '9')
    return bad(r, "expected a non-negative integer%s", "");
  uint64_t x = 0;
  while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
    x = x * 10 + (uint64_t)(*r->p++ - '0');
    if (x >= (1ull << 62)) return bad(r, "integer too large%s", "");
  }
  if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E'))
    return bad(r, "expected an integer%s", "");
  *v = x;
  return KC_OK;
}

/* [n, n, ...] into v (at most max entries). */
static kc_status uint_list(rd *r, uint64_t *v, int max, int *count) {
  *count = 0;
  if (!eat(r, '[')) return bad(r, "expected '['%s", "");
  if (eat(r, ']')) return KC_OK;
  do {
    if (*count == max) return bad(r, "list too long (at most %s entries)", max == 2 ? "2" : "8");
    kc_status s = uint_(r, &v[(*count)++]);
    if (s != KC_OK) return s;
  } while (eat(r, ','));
  if (!eat(r, ']')) return bad(r, "expected ',' or ']'%s", "");
  return KC_OK;
}

/* The tensor object after its name: {"dtype": .., "shape": [..], "data_offsets": [b, e]}. */
static kc_status tensor_obj(rd *r, kc_st_entry *e, uint64_t off[2]) {
  if (!eat(r, '{')) return bad(r, "expected '{' for tensor '%s'", e->name);
  bool have[3] = {0};
  kc_status s = KC_OK;
  do {
    char *key = NULL;
    if ((s = str(r, &key)) != KC_OK) return s;
    int which = strcmp(key, "dtype") == 0          ? 0
                : strcmp(key, "shape") == 0        ? 1
                : strcmp(key, "data_offsets") == 0 ? 2
                                                   : -1;
    free(key);
    if (which < 0) return bad(r, "tensor '%s': unknown key", e->name);
    if (have[which]) return bad(r, "tensor '%s': a key given twice", e->name);
    have[which] = true;
    if (!eat(r, ':')) return bad(r, "expected ':'%s", "");
    if (which == 0) {
      char *dt = NULL;
      if ((s = str(r, &dt)) != KC_OK) return s;
      e->dtype = KC_DT_NONE;
      for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (strcmp(dt, dtypes[i].name) == 0) e->dtype = dtypes[i].t;
      free(dt);
      if (e->dtype == KC_DT_NONE) return bad(r, "tensor '%s': unknown dtype", e->name);
    } else if (which == 1) {
      uint64_t d[KC_MAX_RANK];
      if ((s = uint_list(r, d, KC_MAX_RANK, &e->rank)) != KC_OK) return s;
      for (int k = 0; k < e->rank; k++)
        e->dims[k] = (int64_t)d[k];
    } else {
      int c;
      if ((s = uint_list(r, off, 2, &c)) != KC_OK) return s;
      if (c != 2) return bad(r, "tensor '%s': data_offsets needs [begin, end]", e->name);
    }
  } while (eat(r, ','));
  if (!eat(r, '}')) return bad(r, "expected ',' or '}'%s", "");
  if (!have[0] || !have[1] || !have[2])
    return bad(r, "tensor '%s' needs dtype, shape and data_offsets", e->name);
  return KC_OK;
}

static kc_status metadata(rd *r, kc_st_file *f) {
  if (!eat(r, '{')) return bad(r, "expected '{' after \"__metadata__\"%s", "");
  if (eat(r, '}')) return KC_OK;
  do {
    char **m = realloc(f->meta, (f->nmeta + 1) * 2 * sizeof *m);
    if (!m) return kc_errorf(r->ctx, KC_ERR_NOMEM, "%s: out of memory", r->what);
    f->meta = m;
    m[2 * f->nmeta] = m[2 * f->nmeta + 1] = NULL;
    f->nmeta++;
    kc_status s = str(r, &m[2 * f->nmeta - 2]);
    if (s != KC_OK) return s;
    if (!eat(r, ':')) return bad(r, "expected ':'%s", "");
    if ((s = str(r, &m[2 * f->nmeta - 1])) != KC_OK) return s;
  } while (eat(r, ','));
  if (!eat(r, '}')) return bad(r, "expected ',' or '}' in __metadata__%s", "");
  return KC_OK;
}

typedef struct span {
  uint64_t b, e;
  uint32_t i;
} span;

static int span_cmp(const void *a, const void *b) {
  const span *x = a, *y = b;
  return x->b < y->b ? -1 : x->b > y->b ? 1 : (x->e > y->e) - (x->e < y->e);
}

/* Parse the header in f->buf (len bytes) and check every tensor against the data. */
static kc_status parse(kc_context *ctx, size_t len, const char *what, kc_st_file *f) {
  if (len < 8)
    return kc_errorf(ctx, KC_ERR_PARSE,
                     "%s: not a safetensors file: %zu bytes, shorter than "
                     "the 8-byte header length",
                     what, len);
  uint64_t hl = 0;
  for (int k = 7; k >= 0; k--)
    hl = hl << 8 | f->buf[k];
  if (hl > MAX_HEADER || hl > len - 8)
    return kc_errorf(ctx, KC_ERR_PARSE,
                     "%s: safetensors header length %llu is larger than the "
                     "file's %zu bytes after it%s",
                     what, (unsigned long long)hl, len - 8,
                     hl > MAX_HEADER ? " (or the 100 MiB limit)" : "");
  rd r = {ctx, what, (const char *)f->buf + 8, (const char *)f->buf + 8,
          (const char *)f->buf + 8 + hl};
  const unsigned char *data = f->buf + 8 + hl;
  size_t dlen = len - 8 - (size_t)hl;
  kc_status s = KC_OK;
  uint64_t(*offs)[2] = NULL;
  if (!eat(&r, '{')) return bad(&r, "expected '{' (the header is a JSON object)%s", "");
  if (!eat(&r, '}')) {
    do {
      char *name = NULL;
      if ((s = str(&r, &name)) != KC_OK) break;
      if (!eat(&r, ':')) {
        free(name);
        s = bad(&r, "expected ':'%s", "");
        break;
      }
      if (strcmp(name, "__metadata__") == 0) {
        free(name);
        if (f->meta) {
          s = bad(&r, "__metadata__ given twice%s", "");
          break;
        }
        if ((s = metadata(&r, f)) != KC_OK) break;
        continue;
      }
      if (kc_st_find(f, name)) {
        s = bad(&r, "tensor '%s' given twice", name);
        free(name);
        break;
      }
      kc_st_entry *e = realloc(f->e, (f->n + 1) * sizeof *e);
      uint64_t(*o)[2] = realloc(offs, (f->n + 1) * sizeof *o);
      if (e) f->e = e;
      if (o) offs = o;
      if (!e || !o) {
        free(name);
        s = kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
        break;
      }
      memset(&f->e[f->n], 0, sizeof *e);
      f->e[f->n].name = name;
      f->n++;
      if ((s = tensor_obj(&r, &f->e[f->n - 1], offs[f->n - 1])) != KC_OK) break;
    } while (eat(&r, ','));
    if (s == KC_OK && !eat(&r, '}')) s = bad(&r, "expected ',' or '}'%s", "");
  }
  ws(&r);
  if (s == KC_OK && r.p != r.end) s = bad(&r, "text after the header object%s", "");
  span *sp = s == KC_OK && f->n ? malloc(f->n * sizeof *sp) : NULL;
  if (s == KC_OK && f->n && !sp) s = kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
  for (uint32_t i = 0; s == KC_OK && i < f->n; i++) {
    kc_st_entry *e = &f->e[i];
    uint64_t b = offs[i][0], end = offs[i][1], want = kc_dtype_size(e->dtype);
    for (int d = 0; d < e->rank; d++)
      want = e->dims[d] == 0 || want <= (1ull << 62) / (uint64_t)e->dims[d]
                 ? want * (uint64_t)e->dims[d]
                 : (1ull << 62);
    if (b > end || end > dlen)
      s = kc_errorf(ctx, KC_ERR_PARSE,
                    "%s: tensor '%s': data_offsets [%llu, %llu] are outside "
                    "the %zu bytes of data",
                    what, e->name, (unsigned long long)b, (unsigned long long)end, dlen);
    else if (end - b != want)
      s = kc_errorf(ctx, KC_ERR_PARSE,
                    "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu "
                    "bytes, its dtype and shape need %llu",
                    what, e->name, (unsigned long long)b, (unsigned long long)end,
                    (unsigned long long)(end - b), (unsigned long long)want);
    e->data = data + b;
    e->nbytes = (size_t)(end - b);
    if (sp) sp[i] = (span){b, end, i};
  }
  if (s == KC_OK && f->n) {
    qsort(sp, f->n, sizeof *sp, span_cmp);
    uint32_t last = UINT32_MAX; /* the non-empty span reaching furthest so far */
    for (uint32_t k = 0; s == KC_OK && k < f->n; k++) {
      if (sp[k].e == sp[k].b) continue;
      if (last != UINT32_MAX && sp[k].b < sp[last].e)
        s = kc_errorf(ctx, KC_ERR_PARSE, "%s: tensors '%s' and '%s' overlap in the data", what,
                      f->e[sp[last].i].name, f->e[sp[k].i].name);
      if (last == UINT32_MAX || sp[k].e > sp[last].e) last = k;
    }
  }
  free(sp);
  free(offs);
  return s;
}

kc_status kc_st_parse(kc_context *ctx, const void *buf, size_t len, const char *what,
                      kc_st_file *out) {
  memset(out, 0, sizeof *out);
  out->buf = malloc(len ? len : 1);
  if (!out->buf) return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", what);
  if (len) memcpy(out->buf, buf, len);
  kc_status s = parse(ctx, len, what, out);
  if (s != KC_OK) kc_st_free(out);
  return s;
}

kc_status kc_st_read(kc_context *ctx, const char *path, kc_st_file *out) {
  memset(out, 0, sizeof *out);
  FILE *f = kc_fopen_regular(ctx, path);
  if (!f) return KC_ERR_IO; /* the message is set */
  long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  if (len < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return kc_errorf(ctx, KC_ERR_IO, "%s: cannot read its size", path);
  }
  out->buf = malloc(len ? (size_t)len : 1);
  bool ok = out->buf && fread(out->buf, 1, (size_t)len, f) == (size_t)len;
  fclose(f);
  if (!ok) {
    kc_status st = out->buf ? kc_errorf(ctx, KC_ERR_IO, "%s: read failed", path)
                            : kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", path);
    kc_st_free(out);
    return st;
  }
  kc_status s = parse(ctx, (size_t)len, path, out);
  if (s != KC_OK) kc_st_free(out);
  return s;
}

void kc_st_free(kc_st_file *f) {
  for (uint32_t i = 0; i < f->n; i++)
    free(f->e[i].name);
  for (uint32_t k = 0; k < 2 * f->nmeta; k++)
    free(f->meta[k]);
  free(f->e);
  free(f->meta);
  free(f->buf);
  memset(f, 0, sizeof *f);
}

const kc_st_entry *kc_st_find(const kc_st_file *f, const char *name) {
  for (uint32_t i = 0; i < f->n; i++)
    if (f->e[i].name && strcmp(f->e[i].name, name) == 0) return &f->e[i];
  return NULL;
}

const char *kc_st_meta(const kc_st_file *f, const char *key) {
  for (uint32_t k = 0; k < f->nmeta; k++)
    if (f->meta[2 * k] && strcmp(f->meta[2 * k], key) == 0) return f->meta[2 * k + 1];
  return NULL;
}
