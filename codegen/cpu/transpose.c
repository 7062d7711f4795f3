/*
 * codegen/cpu/transpose.c - kc_lower_transpose: out[i0..in-1] = x[i at perm], perm defaulting
 * to the reversed axes.
 *
 * The permutation is simplified at compile time: axes of static size 1 are dropped, and
 * output axes that read consecutive input axes in order are merged ("groups"), so
 * [B,S,H,D] -> [B,H,S,D] is a 3-group copy of rows of D and [0,2,3,1] moves rows of H*D.
 * When the last group reads the input's last axis, rows are contiguous on both sides and the
 * index map (index.h) copies them with memcpy. Otherwise (e.g. swapping the last two dims)
 * the kernel is blocked: tiles of t x t elements over the output's last group and the group
 * that reads the input's last axis; a full tile is t vector loads along the input's last
 * axis, an in-register transpose (shuffles) and t vector stores, so both sides move whole
 * cache lines. Partial tiles at the edges copy element by element.
 *
 * Work units: index-map units for the contiguous case; (outer index, band of the output's last
 * group, tile of the input-last group) for the blocked one. Both are computed the same way by the
 * kernel and NAME_units.
 */
#include "codegen/cpu/index.h"

#include <string.h>

/* Output groups: group g reads input axes first[g]..last[g] (consecutive, in order). */
typedef struct tplan {
  int rank; /* input rank */
  int n;    /* groups */
  int first[KC_MAX_RANK], last[KC_MAX_RANK];
  int inner; /* group that reads the input's last kept axis (its source stride is 1); -1: none */
} tplan;

static void plan(const kc_cpu_emit *e, tplan *p) {
  const kc_value *x = kc_value_of(e->g, e->n->in[0]);
  const kc_attr *pa = kc_node_attr(e->n, "perm");
  int perm[KC_MAX_RANK], pos[KC_MAX_RANK], kept = 0;
  memset(p, 0, sizeof *p);
  p->rank = x->rank;
  for (int k = 0; k < x->rank; k++)
    perm[k] = pa ? (int)pa->u.ints.v[k] : x->rank - 1 - k;
  /* pos: rank of an input axis among the kept ones, so 1-sized gaps do not block merging */
  for (int a = 0; a < x->rank; a++)
    pos[a] = x->dims[a] == 1 ? -1 : kept++;
  p->inner = -1;
  for (int k = 0; k < x->rank; k++) {
    int a = perm[k];
    if (pos[a] < 0) continue;
    if (p->n > 0 && pos[p->last[p->n - 1]] + 1 == pos[a]) {
      p->last[p->n - 1] = a;
    } else {
      p->first[p->n] = p->last[p->n] = a;
      p->n++;
    }
    if (pos[a] == kept - 1) p->inner = p->n - 1;
  }
}

/* Extent and source stride of each group (in the function whose dims pointer is given). */
static void group_dims(kc_cpu_emit *e, LLVMValueRef dims, const tplan *p, LLVMValueRef *ext,
                       LLVMValueRef *sstride) {
  LLVMValueRef in_ext[KC_MAX_RANK], in_str[KC_MAX_RANK];
  for (int a = 0; a < p->rank; a++)
    in_ext[a] = kc_emit_dim(e, dims, false, 0, a);
  kc_idx_strides(e->ir, p->rank, in_ext, in_str);
  for (int g = 0; g < p->n; g++) {
    ext[g] = kc_idx_prod(e->ir, p->last[g] - p->first[g] + 1, in_ext + p->first[g]);
    if (sstride) sstride[g] = in_str[p->last[g]];
  }
}

static bool blocked(const tplan *p) { return p->n >= 2 && p->inner != p->n - 1; }

/*
 * Tiles per band: a unit covers BAND tiles along the output's last group, so consecutive units
 * (one thread's range) sweep a band of input rows left to right instead of striding over
 * every input row for each tile (one cache line per page touched).
 */
#define BAND 16

static unsigned tile(const kc_cpu_emit *e) {
  /* 16 lanes (8 for 8-byte elements): a tile's vectors fit the 32 AVX-512 registers */
  size_t es = kc_dtype_size(kc_value_of(e->g, e->n->in[0])->dtype);
  return es >= 8 ? 8 : 16;
}

/* Blocked: the unit space is the groups other than inner and last, then tiles of inner. */
static int blocked_space(kc_cpu_emit *e, const tplan *p, const LLVMValueRef *ext,
                         LLVMValueRef *space) {
  int n = 0;
  for (int g = 0; g < p->n - 1; g++)
    if (g != p->inner) space[n++] = ext[g];
  space[n++] = kc_ir_cdiv(e->ir, ext[p->n - 1], kc_ir_i64(e->ir, BAND * tile(e)));
  space[n++] = kc_ir_cdiv(e->ir, ext[p->inner], kc_ir_i64(e->ir, tile(e)));
  return n;
}

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  tplan p;
  plan(e, &p);
  LLVMValueRef ext[KC_MAX_RANK], space[KC_MAX_RANK];
  if (p.n == 0) return kc_ir_i64(e->ir, 1);
  group_dims(e, dims, &p, ext, NULL);
  if (!blocked(&p)) return kc_idx_map_units(e->ir, p.n, ext);
  int ns = blocked_space(e, &p, ext, space);
  return kc_idx_prod(e->ir, ns, space);
}

/* Transpose t vectors of t lanes in registers: log2(t) stages of two-source shuffles, stage h
 * swapping the off-diagonal h x h blocks of every 2h x 2h block. */
static void transpose_regs(kc_ir *ir, unsigned t, LLVMValueRef *v) {
  for (unsigned h = 1; h < t; h *= 2) {
    LLVMValueRef lo[16], hi[16];
    for (unsigned p = 0; p < t; p++) {
      lo[p] = kc_ir_i32(ir, (int32_t)((p & h) ? t + p - h : p));
      hi[p] = kc_ir_i32(ir, (int32_t)((p & h) ? t + p : p + h));
    }
    LLVMValueRef ml = LLVMConstVector(lo, t), mh = LLVMConstVector(hi, t);
    for (unsigned i = 0; i < t; i++) {
      if (i & h) continue;
      LLVMValueRef a = v[i], b = v[i + h];
      v[i] = LLVMBuildShuffleVector(ir->b, a, b, ml, "");
      v[i + h] = LLVMBuildShuffleVector(ir->b, a, b, mh, "");
    }
  }
}

/* A full t x t tile: t vector loads along the input's last axis, shuffles, t vector stores. */
static void full_tile(kc_ir *ir, unsigned t, LLVMTypeRef et, LLVMValueRef src, LLVMValueRef soff,
                      LLVMValueRef sstride, LLVMValueRef dst, LLVMValueRef doff,
                      LLVMValueRef dstride) {
  LLVMTypeRef vt = LLVMVectorType(et, t);
  unsigned align = LLVMGetIntTypeWidth(et) / 8;
  LLVMValueRef v[16];
  for (unsigned i = 0; i < t; i++) {
    LLVMValueRef at = kc_ir_add(ir, soff, kc_ir_mul(ir, kc_ir_i64(ir, i), sstride));
    v[i] = kc_ir_load(ir, vt, LLVMBuildInBoundsGEP2(ir->b, et, src, &at, 1, ""), align);
  }
  transpose_regs(ir, t, v);
  for (unsigned i = 0; i < t; i++) {
    LLVMValueRef at = kc_ir_add(ir, doff, kc_ir_mul(ir, kc_ir_i64(ir, i), dstride));
    kc_ir_store(ir, v[i], LLVMBuildInBoundsGEP2(ir->b, et, dst, &at, 1, ""), align);
  }
}

static void emit_blocked(kc_cpu_emit *e, const tplan *p, LLVMTypeRef et, LLVMValueRef src,
                         LLVMValueRef dst, const LLVMValueRef *ext, const LLVMValueRef *sstr) {
  kc_ir *ir = e->ir;
  int q = p->inner, last = p->n - 1;
  LLVMValueRef dstr[KC_MAX_RANK], space[KC_MAX_RANK], ss[KC_MAX_RANK], ds[KC_MAX_RANK];
  LLVMValueRef t = kc_ir_i64(ir, tile(e));
  kc_idx_strides(ir, p->n, ext, dstr);
  int ns = blocked_space(e, p, ext, space);
  for (int g = 0, j = 0; g < last; g++) {
    if (g == q) continue;
    ss[j] = sstr[g];
    ds[j++] = dstr[g];
  }
  LLVMValueRef band = kc_ir_i64(ir, BAND * tile(e));
  ss[ns - 2] = kc_ir_mul(ir, sstr[last], band);
  ds[ns - 2] = band;
  ss[ns - 1] = t; /* the inner group's source stride is 1 */
  ds[ns - 1] = kc_ir_mul(ir, dstr[q], t);

  LLVMValueRef idx[KC_MAX_RANK];
  kc_idx_unravel(ir, e->p_begin, ns, space, idx);
  kc_loop lu;
  kc_loop_begin(ir, &lu, e->p_begin, e->p_end, kc_ir_i64(ir, 1), (unsigned)ns, idx);
  LLVMValueRef cur[KC_MAX_RANK];
  memcpy(cur, lu.carry, (size_t)ns * sizeof *cur);
  LLVMValueRef sbase = kc_idx_dot(ir, ns, cur, ss, NULL);
  LLVMValueRef dbase = kc_idx_dot(ir, ns, cur, ds, NULL);
  LLVMValueRef qn = kc_ir_min(ir, t, kc_ir_sub(ir, ext[q], kc_ir_mul(ir, cur[ns - 1], t)));
  LLVMValueRef jend =
      kc_ir_min(ir, band, kc_ir_sub(ir, ext[last], kc_ir_mul(ir, cur[ns - 2], band)));
  kc_loop lj; /* tiles of the band, along the output's last group */
  LLVMValueRef jb = kc_loop_begin(ir, &lj, kc_ir_i64(ir, 0), jend, t, 0, NULL);
  LLVMValueRef jn = kc_ir_min(ir, t, kc_ir_sub(ir, jend, jb));
  LLVMValueRef full = LLVMBuildAnd(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, qn, t, ""),
                                   LLVMBuildICmp(ir->b, LLVMIntEQ, jn, t, ""), "");
  kc_if c;
  kc_if_begin(ir, &c, full);
  full_tile(ir, tile(e), et, src, kc_ir_add(ir, sbase, kc_ir_mul(ir, jb, sstr[last])), sstr[last],
            dst, kc_ir_add(ir, dbase, jb), dstr[q]);
  kc_if_else(ir, &c);
  kc_loop lq;
  LLVMValueRef qq = kc_loop_begin(ir, &lq, kc_ir_i64(ir, 0), qn, kc_ir_i64(ir, 1), 0, NULL);
  LLVMValueRef doff = kc_ir_add(ir, kc_ir_add(ir, dbase, kc_ir_mul(ir, qq, dstr[q])), jb);
  LLVMValueRef soff = kc_ir_add(ir, kc_ir_add(ir, sbase, qq), kc_ir_mul(ir, jb, sstr[last]));
  kc_idx_copy_run(ir, et, dst, doff, src, soff, sstr[last], jn);
  kc_loop_end(ir, &lq, NULL);
  kc_if_end(ir, &c);
  kc_loop_end(ir, &lj, NULL);
  kc_idx_next(ir, ns, space, cur);
  kc_loop_end(ir, &lu, cur);
}

kc_status kc_lower_transpose(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  tplan p;
  plan(e, &p);
  kc_emit_units_custom(e, units);
  kc_emit_kernel_begin(e);
  LLVMTypeRef et = kc_idx_elem_type(ir, kc_value_of(e->g, e->n->in[0])->dtype);
  LLVMValueRef src = kc_emit_in_ptr(e, 0), dst = kc_emit_out_ptr(e, 0);
  LLVMValueRef ext[KC_MAX_RANK], sstr[KC_MAX_RANK];
  group_dims(e, e->p_dims, &p, ext, sstr);
  if (blocked(&p)) {
    emit_blocked(e, &p, et, src, dst, ext, sstr);
  } else {
    kc_idx_map m = {.rank = p.n, .base = kc_ir_i64(ir, 0)};
    for (int g = 0; g < p.n; g++) {
      m.dim[g] = ext[g];
      m.stride[g] = sstr[g];
    }
    if (p.n == 0) { /* every dim is 1: one element */
      m.rank = 1;
      m.dim[0] = m.stride[0] = kc_ir_i64(ir, 1);
    }
    kc_idx_map_copy(e, et, src, dst, &m);
  }
  kc_emit_kernel_end(e);
  return KC_OK;
}
