/*
 * frontend/onnx_load.c - kc_onnx_load: read an ONNX model file into a new, typed IR graph.
 *
 * Steps, each refusing bad input with a message that names the file (and node and op):
 *   1. map the file and unpack the ModelProto into the graph's arena (one copy of the weight
 *      bytes, which weights then borrow);
 *   2. check the IR version, the opset imports (one per domain) and the default-domain opset,
 *      and every node's attributes (named, no name twice, the value field their type says);
 *   3. scan every node against the op table and report ALL unsupported op types at once;
 *   4. check graph inputs/outputs are tensors of kernc dtypes and the node graph is well formed
 *      (every input defined, no value defined twice, no cycle), ordering nodes topologically;
 *   5. initializers -> weights, inputs -> graph inputs (dim_param -> symbol, unknown -> fresh),
 *      nodes in order through the op table (each IR node shape-inferred as it is made), outputs.
 *
 * Invariants: nothing indexes into the message before checking it is there (protobuf-c leaves
 * unset strings and sub-messages NULL); on failure the partial graph is freed and *out is NULL.
 */
/* realpath is XSI */
#define _XOPEN_SOURCE 700
#include "onnx_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* protobuf-c allocates the message from the graph's arena: freed with the graph. */
static void *arena_alloc(void *arena, size_t size) { return kc_arena_alloc(arena, size); }
static void arena_free(void *arena, void *p) {
  (void)arena;
  (void)p;
}

/* Map (or read) the whole file and unpack it. */
static kc_status read_model(kc_context *ctx, kc_graph *g, const char *path,
                            Onnx__ModelProto **model) {
  /* a FIFO or device given as the model must be refused, not waited on */
  struct stat st;
  int fd = kc_open_regular(ctx, path, &st);
  if (fd < 0) return KC_ERR_IO;
  if (st.st_size == 0) {
    close(fd);
    return kc_errorf(ctx, KC_ERR_PARSE, "%s: empty file, not an ONNX model", path);
  }
  size_t size = (size_t)st.st_size;
  void *buf = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (buf == MAP_FAILED)
    return kc_errorf(ctx, KC_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
  ProtobufCAllocator alloc = {arena_alloc, arena_free, &g->arena};
  *model = onnx__model_proto__unpack(&alloc, size, buf);
  munmap(buf, size);
  if (!*model)
    return kc_errorf(ctx, KC_ERR_PARSE,
                     "%s: not a valid ONNX model (the protobuf is truncated or corrupt)", path);
  return KC_OK;
}

static bool is_default_domain(const char *d) { return !d || !*d || strcmp(d, "ai.onnx") == 0; }

/* "'name'" or "#index" for messages. */
static void node_desc(const Onnx__NodeProto *np, size_t i, char *buf, size_t size) {
  if (np->name && *np->name)
    snprintf(buf, size, "'%s'", np->name);
  else
    snprintf(buf, size, "#%zu", i);
}

/* Version of domain in the model's opset imports, or -1. */
static int64_t opset_of(const Onnx__ModelProto *m, const char *domain) {
  for (size_t i = 0; i < m->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = m->opset_import[i];
    if (!o) continue;
    bool match = is_default_domain(domain) ? is_default_domain(o->domain)
                                           : (o->domain && strcmp(o->domain, domain) == 0);
    if (match) return o->has_version ? o->version : -1;
  }
  return -1;
}

/* Step 2: one opset_import entry per domain ("" and "ai.onnx" are the same one): two versions of
 * one domain leave the model's meaning open, and ONNX's checker refuses them too. */
static kc_status check_opsets(onnx_imp *im, const Onnx__ModelProto *m) {
  for (size_t i = 0; i < m->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *a = m->opset_import[i];
    if (!a) continue;
    for (size_t j = 0; j < i; j++) {
      const Onnx__OperatorSetIdProto *b = m->opset_import[j];
      if (!b) continue;
      bool same = is_default_domain(a->domain) ? is_default_domain(b->domain)
                                               : (b->domain && strcmp(a->domain, b->domain) == 0);
      if (same)
        return kc_errorf(im->ctx, KC_ERR_PARSE,
                         "%s: opset_import lists domain '%s' twice (versions %lld and %lld)",
                         im->path, a->domain && *a->domain ? a->domain : "ai.onnx",
                         b->has_version ? (long long)b->version : -1LL,
                         a->has_version ? (long long)a->version : -1LL);
    }
  }
  return KC_OK;
}

/* The value fields attribute a carries, as a bit per AttributeType; the count goes to *n. */
static uint32_t attr_fields(const Onnx__AttributeProto *a, int *n) {
  uint32_t bits = 0;
#define F(cond, T)                                                                                 \
  if (cond) bits |= 1u << ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__##T
  F(a->has_f, FLOAT);
  F(a->has_i, INT);
  F(a->has_s, STRING);
  F(a->t, TENSOR);
  F(a->g, GRAPH);
  F(a->sparse_tensor, SPARSE_TENSOR);
  F(a->tp, TYPE_PROTO);
  F(a->n_floats, FLOATS);
  F(a->n_ints, INTS);
  F(a->n_strings, STRINGS);
  F(a->n_tensors, TENSORS);
  F(a->n_graphs, GRAPHS);
  F(a->n_sparse_tensors, SPARSE_TENSORS);
  F(a->n_type_protos, TYPE_PROTOS);
#undef F
  *n = __builtin_popcount(bits);
  return bits;
}

static const char *attr_type_name(int t) {
  static const char *const names[] = {"UNDEFINED",      "FLOAT",      "INT",        "STRING",
                                      "TENSOR",         "GRAPH",      "FLOATS",     "INTS",
                                      "STRINGS",        "TENSORS",    "GRAPHS",     "SPARSE_TENSOR",
                                      "SPARSE_TENSORS", "TYPE_PROTO", "TYPE_PROTOS"};
  return t >= 0 && t < (int)(sizeof names / sizeof *names) ? names[t] : "unknown";
}

/* Step 2b: every node's attributes have a name, no name twice, and carry the one value field
 * their declared type says (a list may be empty), as ONNX's checker demands: otherwise which
 * value kernc reads would be an accident of the decoder. */
static kc_status check_attrs(onnx_imp *im, const Onnx__GraphProto *gp) {
  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    if (!np) continue;
    char desc[300];
    node_desc(np, i, desc, sizeof desc);
    const char *op = np->op_type ? np->op_type : "?";
    for (size_t k = 0; k < np->n_attribute; k++) {
      const Onnx__AttributeProto *a = np->attribute[k];
      if (!a || !a->name || !*a->name)
        return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: node %s (%s): attribute %zu has no name",
                         im->path, desc, op, k);
      for (size_t j = 0; j < k; j++)
        if (np->attribute[j] && np->attribute[j]->name &&
            strcmp(np->attribute[j]->name, a->name) == 0)
          return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: node %s (%s): attribute '%s' is given twice",
                           im->path, desc, op, a->name);
      int nf;
      uint32_t bits = attr_fields(a, &nf);
      int t = a->has_type ? (int)a->type : 0;
      bool list = (t >= ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS &&
                   t <= ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS) ||
                  t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS ||
                  t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS;
      if (nf > 1)
        return kc_errorf(im->ctx, KC_ERR_PARSE,
                         "%s: node %s (%s): attribute '%s' carries %d value fields, not one",
                         im->path, desc, op, a->name, nf);
      if (!t) {
        if (!nf)
          return kc_errorf(im->ctx, KC_ERR_PARSE,
                           "%s: node %s (%s): attribute '%s' has no type and no value", im->path,
                           desc, op, a->name);
        continue; /* IR 1 left the type out: the one field present says it */
      }
      if (t >= 32 || (nf == 1 && !(bits & (1u << t))) || (nf == 0 && !list)) {
        int got = nf ? __builtin_ctz(bits) : 0;
        return kc_errorf(im->ctx, KC_ERR_PARSE,
                         "%s: node %s (%s): attribute '%s' is declared %s but carries %s%s",
                         im->path, desc, op, a->name, attr_type_name(t), nf ? "a " : "no value",
                         nf ? attr_type_name(got) : "");
      }
    }
  }
  return KC_OK;
}

/* Step 3: every op kernc cannot import, each once with its first node, in one message. */
static kc_status scan_ops(onnx_imp *im, const Onnx__ModelProto *m) {
  const Onnx__GraphProto *gp = m->graph;
  char msg[KC_ERRBUF_SIZE - 512], nodes[1024];
  size_t len = 0, nlen = 0;
  int count = 0;
  const Onnx__NodeProto *firsts[256]; /* the first node of each op reported so far */
  msg[0] = nodes[0] = 0;
  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    if (!np || !np->op_type || !*np->op_type)
      return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: node #%zu has no op type", im->path, i);
    bool def = is_default_domain(np->domain);
    const onnx_op *row = def ? kc_onnx_op_find(np->op_type) : NULL;
    if (row && im->opset >= row->since) continue;
    /* report each (domain, op) once */
    bool seen = false;
    for (int j = 0; j < count && j < 256 && !seen; j++) {
      const Onnx__NodeProto *p = firsts[j];
      seen = strcmp(p->op_type, np->op_type) == 0 &&
             (def ? is_default_domain(p->domain) : p->domain && strcmp(p->domain, np->domain) == 0);
    }
    if (seen) continue;
    char desc[300];
    node_desc(np, i, desc, sizeof desc);
    int64_t ver = def ? im->opset : opset_of(m, np->domain);
    if (len < sizeof msg)
      len +=
          (size_t)snprintf(msg + len, sizeof msg - len, "%s%s%s%s(opset %lld)", count ? ", " : "",
                           def ? "" : np->domain, def ? "" : ".", np->op_type, (long long)ver);
    if (nlen < sizeof nodes)
      nlen += (size_t)snprintf(nodes + nlen, sizeof nodes - nlen, "%s%s %s", count ? ", " : "",
                               np->op_type, desc);
    if (count < 256) firsts[count] = np;
    count++;
  }
  if (!count) return KC_OK;
  return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "%s: unsupported ops %s (first nodes: %s)",
                   im->path, msg, nodes);
}

/* The tensor type of a graph input/output, refusing sequences, maps, optionals and sparse. */
static kc_status io_type(onnx_imp *im, const Onnx__ValueInfoProto *vi, const char *kind,
                         const Onnx__TypeProto__Tensor **tt) {
  const char *name = vi->name ? vi->name : "";
  const Onnx__TypeProto *tp = vi->type;
  *tt = NULL;
  if (!tp)
    return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: graph %s '%s' has no type", im->path, kind, name);
  const char *what = NULL;
  switch (tp->value_case) {
  case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE: break;
  case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE: what = "a sequence"; break;
  case ONNX__TYPE_PROTO__VALUE_MAP_TYPE: what = "a map"; break;
  case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE: what = "an optional"; break;
  case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE: what = "a sparse tensor"; break;
  default: what = "of an unknown kind"; break;
  }
  if (what)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                     "%s: graph %s '%s' is %s; kernc handles dense tensors only", im->path, kind,
                     name, what);
  if (!tp->tensor_type || !tp->tensor_type->has_elem_type)
    return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: graph %s '%s' has no element type", im->path, kind,
                     name);
  int32_t et = tp->tensor_type->elem_type;
  if (!kc_onnx_dtype(et))
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                     "%s: graph %s '%s' has dtype %s (%d), which kernc does not support", im->path,
                     kind, name, kc_onnx_dtype_name(et), (int)et);
  *tt = tp->tensor_type;
  return KC_OK;
}

/* Step 4: types of inputs/outputs, then definitions and a topological order of the nodes. */
static kc_status check_io(onnx_imp *im, const Onnx__GraphProto *gp) {
  const Onnx__TypeProto__Tensor *tt;
  for (size_t i = 0; i < gp->n_input; i++) {
    const Onnx__ValueInfoProto *vi = gp->input[i];
    if (!vi || !vi->name || !*vi->name)
      return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: graph input %zu has no name", im->path, i);
    if (vi->type) {
      kc_status s = io_type(im, vi, "input", &tt);
      if (s != KC_OK) return s;
    }
  }
  for (size_t i = 0; i < gp->n_output; i++) {
    const Onnx__ValueInfoProto *vi = gp->output[i];
    if (!vi || !vi->name || !*vi->name)
      return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: graph output %zu has no name", im->path, i);
    if (vi->type) {
      kc_status s = io_type(im, vi, "output", &tt);
      if (s != KC_OK) return s;
    }
  }
  return KC_OK;
}

/*
 * Where a value name comes from while ordering: a node (index+1), an initializer or a graph
 * input (both >= INIT_SRC). A graph input may repeat an initializer's name (IR < 4 models list
 * every initializer as an input too); any other repeated name is an error.
 */
#define INIT_SRC (UINT32_MAX - 1)
#define INPUT_SRC UINT32_MAX

static kc_status define(onnx_imp *im, onnx_names *src, const char *name, uint32_t from,
                        const char *what) {
  if (kc_onnx_names_get(src, name).id)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "%s: value '%s' (%s) is defined twice", im->path, name,
                     what);
  if (!kc_onnx_names_put(src, name, (kc_val){from}))
    return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  return KC_OK;
}

/*
 * Fill order[] with the node indices in a topological order: the file's order when it already
 * is one (the ONNX rule), else Kahn's algorithm. Undefined inputs and cycles are errors.
 */
static kc_status order_nodes(onnx_imp *im, const Onnx__GraphProto *gp, uint32_t *order) {
  onnx_names src = {0};
  kc_status s = KC_OK;
  uint32_t n = (uint32_t)gp->n_node, *indeg = NULL, *start = NULL, *edges = NULL, *queue = NULL;
  for (size_t i = 0; i < gp->n_initializer && s == KC_OK; i++)
    s = define(im, &src, gp->initializer[i]->name, INIT_SRC, "initializer");
  for (size_t i = 0; i < gp->n_input && s == KC_OK; i++)
    if (kc_onnx_names_get(&src, gp->input[i]->name).id != INIT_SRC)
      s = define(im, &src, gp->input[i]->name, INPUT_SRC, "graph input");
  for (uint32_t i = 0; i < n && s == KC_OK; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    for (size_t j = 0; j < np->n_output && s == KC_OK; j++)
      if (np->output[j] && *np->output[j]) s = define(im, &src, np->output[j], i + 1, np->op_type);
  }
  if (s != KC_OK) goto done;
  /* undefined inputs; count edges; is the file order already topological? */
  bool sorted = true;
  size_t nedges = 0;
  for (uint32_t i = 0; i < n; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    for (size_t j = 0; j < np->n_input; j++) {
      if (!np->input[j] || !*np->input[j]) continue;
      uint32_t from = kc_onnx_names_get(&src, np->input[j]).id;
      if (!from) {
        char desc[300];
        node_desc(np, i, desc, sizeof desc);
        s = kc_errorf(im->ctx, KC_ERR_VERIFY,
                      "%s: node %s (%s): input '%s' is not defined by any node, graph input or "
                      "initializer",
                      im->path, desc, np->op_type, np->input[j]);
        goto done;
      }
      if (from < INIT_SRC) {
        nedges++;
        if (from - 1 >= i) sorted = false;
      }
    }
  }
  for (size_t i = 0; i < gp->n_output; i++)
    if (!kc_onnx_names_get(&src, gp->output[i]->name).id) {
      s = kc_errorf(im->ctx, KC_ERR_VERIFY, "%s: graph output '%s' is not defined", im->path,
                    gp->output[i]->name);
      goto done;
    }
  if (sorted) {
    for (uint32_t i = 0; i < n; i++)
      order[i] = i;
    goto done;
  }
  indeg = calloc(n + 1, sizeof *indeg);
  start = calloc(n + 2, sizeof *start);
  edges = calloc(nedges + 1, sizeof *edges);
  queue = calloc(n + 1, sizeof *queue);
  if (!indeg || !start || !edges || !queue) {
    s = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    goto done;
  }
  /* edges producer -> consumer in CSR form */
  for (uint32_t pass = 0; pass < 2; pass++) {
    for (uint32_t i = 0; i < n; i++) {
      const Onnx__NodeProto *np = gp->node[i];
      for (size_t j = 0; j < np->n_input; j++) {
        uint32_t from =
            np->input[j] && *np->input[j] ? kc_onnx_names_get(&src, np->input[j]).id : INPUT_SRC;
        if (from >= INIT_SRC) continue;
        if (pass == 0) {
          start[from]++; /* start[p+1] counts edges of producer p */
          indeg[i]++;
        } else {
          edges[start[from - 1]++] = i;
        }
      }
    }
    if (pass == 0)
      for (uint32_t p = 1; p <= n; p++)
        start[p] += start[p - 1];
  }
  /* after pass 1, start[p] is the end of p's edges; p's begin is start[p-1] (0 for p=0) */
  uint32_t head = 0, tail = 0;
  for (uint32_t i = 0; i < n; i++)
    if (!indeg[i]) queue[tail++] = i;
  while (head < tail) {
    uint32_t p = queue[head++];
    order[head - 1] = p;
    for (uint32_t e = p ? start[p - 1] : 0; e < start[p]; e++)
      if (--indeg[edges[e]] == 0) queue[tail++] = edges[e];
  }
  if (tail < n) {
    for (uint32_t i = 0; i < n; i++)
      if (indeg[i]) {
        char desc[300];
        node_desc(gp->node[i], i, desc, sizeof desc);
        s = kc_errorf(im->ctx, KC_ERR_VERIFY, "%s: the graph has a cycle through node %s (%s)",
                      im->path, desc, gp->node[i]->op_type);
        break;
      }
  }
done:
  free(indeg);
  free(start);
  free(edges);
  free(queue);
  kc_onnx_names_free(&src);
  return s;
}

/* Step 5b: initializers become weights named as in the model. */
static kc_status import_initializers(onnx_imp *im, const Onnx__GraphProto *gp) {
  for (size_t i = 0; i < gp->n_initializer; i++) {
    const Onnx__TensorProto *tp = gp->initializer[i];
    char what[300];
    snprintf(what, sizeof what, "%s: initializer '%s'", im->path, tp->name);
    onnx_tensor t;
    kc_status s = kc_onnx_tensor_decode(im->ctx, &im->g->arena, tp, im->dir, what, &t);
    if (s != KC_OK) return s;
    im->node = NULL;
    kc_val v = kc_onnx_weight(im, tp->name, &t, &s);
    if (s != KC_OK) return s;
    if (!kc_onnx_names_put(&im->names, tp->name, v))
      return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    kc_value_of(im->g, v)->name = kc_arena_strdup(&im->g->arena, tp->name);
  }
  return KC_OK;
}

/*
 * dim_param -> symbol. A dim_param is any string ("batch size", "1x", "a\"b", "bätch", "B*S+1",
 * "N-1"), but a symbol must read back from the text IR as itself: [A-Za-z_][A-Za-z0-9_]*, so
 * "B*S+1" is not re-read as an expression. Each other byte becomes '_', a leading digit (or an
 * empty result) gets '_' in front, the name is cut to DIMSYM_MAX bytes, and a name some other
 * symbol already has (another dim_param mapped there, an unkN fresh one) gets _2, _3... The
 * map is per import, so one dim_param is one symbol across all inputs and two are never one.
 */
#define DIMSYM_MAX 96

typedef struct dim_map {
  const char **param; /* the dim_params seen, in the model's arena */
  kc_dim *sym;        /* the symbol each became */
  size_t n, cap;
} dim_map;

static bool sym_taken(const kc_graph *g, const char *name) {
  for (uint32_t i = 0; i < g->ndexprs; i++)
    if (g->dexprs[i].kind == KC_DX_SYM && strcmp(g->dexprs[i].name, name) == 0) return true;
  return false;
}

/* The symbol for dim_param p (made on first use); 0 when out of memory. */
static kc_dim dim_param_sym(onnx_imp *im, dim_map *m, const char *p) {
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->param[i], p) == 0) return m->sym[i];
  if (m->n == m->cap) {
    size_t cap = m->cap ? 2 * m->cap : 8;
    const char **np = realloc(m->param, cap * sizeof *np);
    if (np) m->param = np;
    kc_dim *ns = np ? realloc(m->sym, cap * sizeof *ns) : NULL;
    if (!ns) return 0;
    m->sym = ns;
    m->cap = cap;
  }
  char base[DIMSYM_MAX + 2], name[DIMSYM_MAX + 24];
  size_t n = 0;
  if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_')) base[n++] = '_';
  for (const char *c = p; *c && n < DIMSYM_MAX; c++) {
    bool ok = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '_';
    base[n++] = ok ? *c : '_';
  }
  base[n] = 0;
  snprintf(name, sizeof name, "%s", base);
  for (unsigned k = 2; sym_taken(im->g, name); k++)
    snprintf(name, sizeof name, "%s_%u", base, k);
  kc_dim d = kc_sym(im->g, name);
  m->param[m->n] = p;
  m->sym[m->n++] = d;
  return d;
}

/* One graph input: its dtype and dims (dim_param -> symbol, unknown -> fresh symbol). */
static kc_status import_input(onnx_imp *im, dim_map *dm_syms, const Onnx__ValueInfoProto *vi) {
  const Onnx__TypeProto__Tensor *tt;
  kc_status s = io_type(im, vi, "input", &tt);
  if (s != KC_OK) return s;
  if (!tt->shape)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                     "%s: graph input '%s' has no shape; kernc needs at least its rank", im->path,
                     vi->name);
  if (tt->shape->n_dim > KC_MAX_RANK)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                     "%s: graph input '%s' has rank %zu, above kernc's limit of %d", im->path,
                     vi->name, tt->shape->n_dim, KC_MAX_RANK);
  kc_dim dims[KC_MAX_RANK];
  for (size_t d = 0; d < tt->shape->n_dim; d++) {
    const Onnx__TensorShapeProto__Dimension *dm = tt->shape->dim[d];
    if (dm && dm->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
      if (dm->dim_value < 0)
        return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: graph input '%s' has dim %lld", im->path,
                         vi->name, (long long)dm->dim_value);
      dims[d] = dm->dim_value;
    } else if (dm && dm->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
               dm->dim_param && *dm->dim_param) {
      dims[d] = dim_param_sym(im, dm_syms, dm->dim_param);
      if (!dims[d]) return kc_errorf(im->ctx, KC_ERR_NOMEM, "%s: out of memory", im->path);
    } else {
      dims[d] = kc_dim_fresh(im->g);
    }
  }
  kc_val v = kc_graph_add_input(im->g, vi->name, kc_onnx_dtype(tt->elem_type),
                                (int)tt->shape->n_dim, dims);
  if (!v.id || !kc_onnx_names_put(&im->names, vi->name, v))
    return kc_errorf(im->ctx, KC_ERR_NOMEM, "%s: cannot add graph input '%s'", im->path, vi->name);
  return KC_OK;
}

/* Step 5a: graph inputs that are not initializers (those are weights). */
static kc_status import_inputs(onnx_imp *im, const Onnx__GraphProto *gp) {
  onnx_names inits = {0};
  dim_map syms = {0};
  kc_status s = KC_OK;
  for (size_t i = 0; i < gp->n_initializer && s == KC_OK; i++)
    if (!kc_onnx_names_put(&inits, gp->initializer[i]->name, (kc_val){1}))
      s = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < gp->n_input && s == KC_OK; i++)
    if (!kc_onnx_names_get(&inits, gp->input[i]->name).id)
      s = import_input(im, &syms, gp->input[i]);
  kc_onnx_names_free(&inits);
  free(syms.param);
  free(syms.sym);
  return s;
}

/* Step 5c: one node through the op table; its messages get the file, node and op in front. */
static kc_status import_node(onnx_imp *im, const Onnx__NodeProto *np, size_t idx) {
  im->node = np;
  kc_status s = kc_onnx_import_node(im, np, kc_onnx_op_find(np->op_type));
  im->node = NULL;
  if (s == KC_OK) return KC_OK;
  char inner[KC_ERRBUF_SIZE / 2], desc[300];
  snprintf(inner, sizeof inner, "%s", kc_last_error(im->ctx));
  node_desc(np, idx, desc, sizeof desc);
  return kc_errorf(im->ctx, s, "%s: node %s (%s, opset %lld): %s", im->path, desc, np->op_type,
                   (long long)im->opset, inner);
}

/* The model's folder, resolved, for external data. */
static char *model_dir(const char *path) {
  char *copy = strdup(path);
  if (!copy) return NULL;
  char *slash = strrchr(copy, '/');
  const char *d = ".";
  if (slash == copy)
    d = "/";
  else if (slash) {
    *slash = 0;
    d = copy;
  }
  char *real = realpath(d, NULL);
  free(copy);
  return real;
}

static kc_status load(onnx_imp *im) {
  Onnx__ModelProto *m;
  kc_status s = read_model(im->ctx, im->g, im->path, &m);
  if (s != KC_OK) return s;
  if (!m->has_ir_version || m->ir_version < KC_ONNX_IR_MIN || m->ir_version > KC_ONNX_IR_MAX)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                     "%s: IR version %lld is not supported (kernc reads %d to %d)", im->path,
                     m->has_ir_version ? (long long)m->ir_version : 0LL, KC_ONNX_IR_MIN,
                     KC_ONNX_IR_MAX);
  const Onnx__GraphProto *gp = m->graph;
  if (!gp) return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: the model has no graph", im->path);
  if ((s = check_opsets(im, m)) != KC_OK || (s = check_attrs(im, gp)) != KC_OK) return s;
  im->opset = opset_of(m, "");
  if (im->opset < 0) {
    /* no default-domain opset: fine only when no node needs one (scan_ops lists the rest) */
    for (size_t i = 0; i < gp->n_node; i++)
      if (gp->node[i] && is_default_domain(gp->node[i]->domain))
        return kc_errorf(im->ctx, KC_ERR_PARSE,
                         "%s: node #%zu is in the default domain but the model imports no "
                         "default-domain opset",
                         im->path, i);
  } else if (im->opset < KC_ONNX_OPSET_MIN || im->opset > KC_ONNX_OPSET_MAX)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                     "%s: default-domain opset %lld is not supported (kernc reads %d to %d)",
                     im->path, (long long)im->opset, KC_ONNX_OPSET_MIN, KC_ONNX_OPSET_MAX);
  for (size_t i = 0; i < gp->n_initializer; i++)
    if (!gp->initializer[i] || !gp->initializer[i]->name || !*gp->initializer[i]->name)
      return kc_errorf(im->ctx, KC_ERR_PARSE, "%s: initializer %zu has no name", im->path, i);
  if (gp->n_sparse_initializer)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "%s: sparse initializers are not supported",
                     im->path);
  if ((s = scan_ops(im, m)) != KC_OK || (s = check_io(im, gp)) != KC_OK) return s;
  uint32_t *order = malloc((gp->n_node + 1) * sizeof *order);
  if (!order) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  if ((s = order_nodes(im, gp, order)) == KC_OK && (s = import_inputs(im, gp)) == KC_OK)
    s = import_initializers(im, gp);
  for (size_t i = 0; i < gp->n_node && s == KC_OK; i++)
    s = import_node(im, gp->node[order[i]], order[i]);
  free(order);
  if (s != KC_OK) return s;
  for (size_t i = 0; i < gp->n_output; i++) {
    kc_val v = kc_onnx_names_get(&im->names, gp->output[i]->name);
    if (!v.id)
      return kc_errorf(im->ctx, KC_ERR_VERIFY, "%s: graph output '%s' has no value", im->path,
                       gp->output[i]->name);
    kc_output(im->g, v, gp->output[i]->name);
  }
  if (gp->name && *gp->name) im->g->name = kc_arena_strdup(&im->g->arena, gp->name);
  if (kc_graph_status(im->g) != KC_OK)
    return kc_errorf(im->ctx, kc_graph_status(im->g), "%s: building the graph failed", im->path);
  return KC_OK;
}

kc_status kc_onnx_load(kc_context *ctx, const char *path, kc_graph **out) {
  if (!ctx || !out) return KC_ERR_INVALID_ARG;
  kc_clear_error(ctx);
  *out = NULL;
  if (!path || !*path) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_onnx_load: no path given");
  onnx_imp im = {.ctx = ctx, .path = path};
  im.g = kc_graph_new(ctx, NULL);
  char *dir = model_dir(path);
  if (!im.g || !dir) {
    kc_graph_free(im.g);
    free(dir);
    return kc_errorf(ctx, dir ? KC_ERR_NOMEM : KC_ERR_IO, "%s: cannot open: %s", path,
                     dir ? "out of memory" : strerror(errno));
  }
  im.dir = dir;
  kc_status s = load(&im);
  kc_onnx_names_free(&im.names);
  free(dir);
  if (s != KC_OK) {
    kc_graph_free(im.g);
    return s;
  }
  *out = im.g;
  return KC_OK;
}
