/*
 * codegen/cuda/kv_cache.c - kc_cuda_lower_kv_store and kc_cuda_lower_attention_cache: the KV-cache
 * ops of decoding (ir/ops.def), and the device library section with their templates. Semantics,
 * layout and index checks are the CPU kernels' (codegen/cpu/kv_cache.c): cache [NBLK, L, 2, KVH,
 * BS, D], token t of row b in block table[b, t / BS] slot t % BS; lens clamped into [0, S]; query
 * row i sees keys j <= past[b] + min(i, lens[b] - 1); a table entry outside [0, NBLK) reports its
 * position, a block past the table (or a negative position, or any when BS = 0) the row's last
 * entry b * MAXB + MAXB - 1, through the error words of codegen/cuda/cuda.h (with the entry's
 * value), and nothing is read or written through it.
 *
 * kv_store: a thread per element of k; padding tokens write nothing.
 * attention_cache: a block of 4 warps per unit (batch b, query head h, block of 16 query rows), as
 * the fused attention, whose tile core (kc_att_tile) it runs over a cache key source. With one
 * query row (S = 1, decoding) the unit is (b, h) and runs kc_att_decode instead: the row's keys
 * are split over the 4 warps (flash-decoding inside the block), each warp keeping its own online
 * softmax state over tiles of 32 keys (lane j scores key j; lanes own output dims for P @ V), and
 * the 4 partial states are merged through shared memory at the end: y = sum_w e^(m_w - M) acc_w /
 * sum_w e^(m_w - M) l_w. Splitting a row over several blocks would need a merge step after the
 * kernel (or counters zeroed before it), which one kernel of the ABI does not have.
 */
#include "codegen/cuda/emit.h"

#include <math.h>

/* clang-format off */
const char kc_cu_sec_kv_cache[] =
    "/*\n"
    " * Decoding: query row 0 of head h in batch b against keys [0, n), n = past + min(0, len - 1) + 1,\n"
    " * split over the block's warps and merged (codegen/cuda/kv_cache.c).\n"
    " */\n"
    "template <class T, class MT, class TC, int D, int KVH, int MASK, bool ROT, bool INTER>\n"
    "__device__ void kc_att_decode(const kc_att_p &p, const kc_att_cache_src<T, D, KVH> &src, i64 b, i64 h,\n"
    "                              i64 P, i64 len) {\n"
    "  constexpr int NW = 4, DL = (D + 31) / 32; /* the warps of a 128-thread block */\n"
    "  __shared__ float qs[D];\n"
    "  __shared__ float part[NW][D + 2];\n"
    "  const T *c = (const T *)p.c;\n"
    "  const MT *mk = (const MT *)p.m;\n"
    "  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;\n"
    "  for (int d = threadIdx.x; d < D; d += blockDim.x)\n"
    "    qs[d] = kc_att_elem<T, TC, ROT, INTER>((const T *)p.q, b * p.qs0 + h * p.qs2, d, P, p) * p.scale;\n"
    "  __syncthreads();\n"
    "  const i64 n = kc_max((i64)0, P + kc_min((i64)0, len - 1) + 1);\n"
    "  float m = -KC_INF, l = 0, acc[DL];\n"
    "#pragma unroll\n"
    "  for (int t = 0; t < DL; t++) acc[t] = 0;\n"
    "  for (i64 j0 = (i64)w * 32; j0 < n; j0 += NW * 32) { /* warp-uniform */\n"
    "    const i64 j = j0 + lane;\n"
    "    float s = -KC_INF;\n"
    "    i64 vr = -1;\n"
    "    if (j < n) {\n"
    "      const i64 kr = src.row(j);\n"
    "      if (kr >= 0) {\n"
    "        vr = kr + src.voff();\n"
    "        float dot = 0;\n"
    "#pragma unroll 8\n"
    "        for (int d = 0; d < D; d++) dot += qs[d] * (float)kc_f(c[kr + d]);\n"
    "        if (p.softcap > 0) dot = p.softcap * tanhf(dot / p.softcap);\n"
    "        bool keep = true;\n"
    "        if constexpr (MASK == 2) {\n"
    "          if (j < p.mlim) dot += (float)kc_f(mk[b * p.ms0 + h * p.ms1 + j * p.ms3]);\n"
    "          else keep = false;\n"
    "        }\n"
    "        s = keep ? dot : -KC_INF;\n"
    "      }\n"
    "    }\n"
    "    const float mn = fmaxf(m, kc_warp_reduce(s, kc_op_max()));\n"
    "    const float mu = mn == -KC_INF ? 0.0f : mn; /* nothing visible yet: no -inf - -inf */\n"
    "    const float pj = s == -KC_INF ? 0.0f : expf(s - mu);\n"
    "    const float corr = m == -KC_INF ? 0.0f : expf(m - mu);\n"
    "    l = l * corr + kc_warp_reduce(pj, kc_op_sum());\n"
    "    m = mn;\n"
    "#pragma unroll\n"
    "    for (int t = 0; t < DL; t++) acc[t] *= corr;\n"
    "    for (int jj = 0; jj < 32; jj++) {\n"
    "      const float pb = __shfl_sync(0xffffffffu, pj, jj);\n"
    "      const i64 r = __shfl_sync(0xffffffffu, vr, jj);\n"
    "      if (pb == 0.0f || r < 0) continue; /* the same for the whole warp */\n"
    "#pragma unroll\n"
    "      for (int t = 0; t < DL; t++)\n"
    "        if (lane + 32 * t < D) acc[t] += pb * (float)kc_f(c[r + lane + 32 * t]);\n"
    "    }\n"
    "  }\n"
    "  if (lane == 0) part[w][D] = m, part[w][D + 1] = l;\n"
    "#pragma unroll\n"
    "  for (int t = 0; t < DL; t++)\n"
    "    if (lane + 32 * t < D) part[w][lane + 32 * t] = acc[t];\n"
    "  __syncthreads();\n"
    "  if (w == 0) {\n"
    "    float mx = -KC_INF;\n"
    "    for (int i = 0; i < NW; i++) mx = fmaxf(mx, part[i][D]);\n"
    "    float e[NW], sum = 0;\n"
    "    for (int i = 0; i < NW; i++) {\n"
    "      e[i] = part[i][D] == -KC_INF ? 0.0f : expf(part[i][D] - mx);\n"
    "      sum += e[i] * part[i][D + 1];\n"
    "    }\n"
    "    const float inv = sum > 0 ? 1.0f / sum : 0.0f;\n"
    "    for (int d = lane; d < D; d += 32) {\n"
    "      float y = 0;\n"
    "      for (int i = 0; i < NW; i++) y += e[i] * part[i][d];\n"
    "      ((T *)p.y)[b * p.ys0 + h * p.ys2 + d] = kc_st<T>::to(y * inv);\n"
    "    }\n"
    "  }\n"
    "  __syncthreads(); /* qs and part are reused by the next unit */\n"
    "}\n"
    "\n"
    "/* attention_cache: unit u = (b, h, block of 16 query rows); with S = 1 the decode path. */\n"
    "template <class T, class MT, class TC, int D, int BC, int HEADS, int GROUP, int MASK, bool ROT,\n"
    "          bool INTER>\n"
    "__device__ void kc_attention_cache(const kc_att_p &p, i64 units) {\n"
    "  constexpr int QB = 16, KVH = HEADS / GROUP;\n"
    "  const i64 nqb = (p.S + QB - 1) / QB;\n"
    "  for (i64 u = blockIdx.x; u < units; u += gridDim.x) {\n"
    "    const i64 qb = u % nqb, h = u / nqb % HEADS, b = u / nqb / HEADS, hk = h / GROUP;\n"
    "    const i64 P = p.past[b], len = kc_max((i64)0, kc_min(p.lens[b], p.S));\n"
    "    const kc_att_cache_src<T, D, KVH> src{p, b, hk};\n"
    "    if (p.S == 1)\n"
    "      kc_att_decode<T, MT, TC, D, KVH, MASK, ROT, INTER>(p, src, b, h, P, len);\n"
    "    else\n"
    "      kc_att_tile<T, MT, TC, D, D, BC, true, MASK, ROT, INTER>(p, src, b, h, qb * QB, P, P, len - 1, P + len);\n"
    "  }\n"
    "}\n"
    ;
/* clang-format on */

/* Warps of a decoding unit (the block's). */
#define DEC_WARPS (KC_CU_ATT_BLOCK / 32)

enum { CACHE, KS, VS, TABLE, PAST, LENS, KS_COS, KS_SIN };        /* kv_store */
enum { Q, AC_CACHE, AC_TABLE, AC_PAST, AC_LENS, MASK, COS, SIN }; /* attention_cache */

/* The cache geometry and the row operands into p (cache input ci, table ti, past pi, lens li). */
static void cache_params(kc_cuda_emit *e, uint32_t ci, uint32_t ti, uint32_t pi, uint32_t li) {
  kc_cu_printf(e->t,
               "  p.tab = in%u;\n  p.past = in%u;\n  p.lens = in%u;\n  p.err = kc_err;\n"
               "  p.nblk = %s;\n  p.L = %s;\n  p.bs = %s;\n  p.maxb = %s;\n  p.layer = %lldLL;\n",
               ti, pi, li, kc_cu_dim(e, false, ci, 0), kc_cu_dim(e, false, ci, 1),
               kc_cu_dim(e, false, ci, 4), kc_cu_dim(e, false, ti, 1),
               (long long)kc_node_int(e->n, "layer", 0));
}

static void rotary_params(kc_cuda_emit *e, uint32_t cos_in, uint32_t sin_in, int64_t D) {
  kc_cu_printf(e->t,
               "  p.cs = in%u;\n  p.sn = in%u;\n  p.maxpos = %s;\n  p.cw = %s;\n"
               "  p.half = kc_min(p.cw, %lldLL);\n",
               cos_in, sin_in, kc_cu_dim(e, false, cos_in, 0), kc_cu_dim(e, false, cos_in, 1),
               (long long)(D / 2));
}

/* Static kv heads and head size of the cache (input ci), of a float dtype. */
static kc_status cache_shape(kc_cuda_emit *e, uint32_t ci, int64_t *kvh, int64_t *D) {
  const kc_value *c = kc_cu_val(e, false, ci);
  if (c->rank != 6 || KC_DIM_IS_SYM(c->dims[3]) || KC_DIM_IS_SYM(c->dims[5]) ||
      !kc_dtype_is_float(c->dtype) || c->dims[5] <= 0)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED,
                      "the cache must be a float [NBLK, L, 2, KVH, BS, D] with static KVH and D");
  *kvh = c->dims[3];
  *D = c->dims[5];
  return KC_OK;
}

kc_status kc_cuda_lower_kv_store(kc_cuda_emit *e) {
  const kc_node *n = e->n;
  const kc_value *k = kc_cu_val(e, false, KS);
  int64_t kvh = 0, D = 0;
  kc_status s = cache_shape(e, CACHE, &kvh, &D);
  if (s != KC_OK) return s;
  int rank = k->rank;
  kc_dtype t = k->dtype;
  bool rot = kc_cu_present(e, false, KS_COS) && kc_cu_present(e, false, KS_SIN);
  bool inter = kc_node_int(n, "rotary_interleaved", 0) != 0;
  const char *st = kc_cu_stype(t);
  e->sections |= KC_CU_SEC_ATTENTION;
  kc_cu_launch_threads(e, 256);
  kc_cu_units_dims(e, false, KS, 0, rank, 1);
  kc_cu_check_indices(e, TABLE, CACHE, 0);
  kc_cu_begin(e, 256);
  kc_cu_puts(e->t, "  kc_att_p p = {};\n");
  cache_params(e, CACHE, TABLE, PAST, LENS);
  if (rot) rotary_params(e, KS_COS, KS_SIN, D);
  kc_cu_printf(e->t, "  const i64 S = %s, KVH = %lldLL, D = %lldLL;\n",
               kc_cu_dim(e, false, KS, rank == 3 ? 1 : 2), (long long)kvh, (long long)D);
  kc_cu_puts(e->t, "  KC_THREADS(idx) {\n"
                   "    const i64 d = idx % D, r = idx / D;\n");
  if (rank == 3)
    kc_cu_puts(e->t, "    const i64 h = r % KVH, s = r / KVH % S, b = r / KVH / S;\n");
  else
    kc_cu_puts(e->t, "    const i64 s = r % S, h = r / S % KVH, b = r / S / KVH;\n");
  kc_cu_printf(
      e->t,
      "    if (s >= kc_max((i64)0, kc_min(p.lens[b], S))) continue; /* padding */\n"
      "    const i64 pos = p.past[b] + s, k = pos >= 0 && p.bs > 0 ? pos / p.bs : -1;\n"
      "    if (k < 0 || k >= p.maxb) { /* outside the table: the row's last entry */\n"
      "      const i64 last = b * p.maxb + (p.maxb > 0 ? p.maxb - 1 : 0);\n"
      "      kc_att_bad(kc_err, last, p.maxb > 0 ? (i64)p.tab[last] : 0);\n"
      "      continue;\n"
      "    }\n"
      "    const i64 blk = p.tab[b * p.maxb + k];\n"
      "    if ((u64)blk >= (u64)p.nblk) {\n"
      "      kc_att_bad(kc_err, b * p.maxb + k, blk);\n"
      "      continue;\n"
      "    }\n"
      "    const i64 o = ((((blk * p.L + p.layer) * 2) * KVH + h) * p.bs + pos %% p.bs) * D + d;\n"
      "    out0[o + KVH * p.bs * D] = in2[idx];\n");
  if (rot)
    kc_cu_printf(e->t,
                 "    out0[o] = kc_st<%s>::to(kc_att_elem<%s, %s, true, %s>(in1, idx - d, (int)d, "
                 "pos, p));\n",
                 st, st, kc_cu_stype(kc_cu_val(e, false, KS_COS)->dtype), inter ? "true" : "false");
  else
    kc_cu_puts(e->t, "    out0[o] = in1[idx]; /* copies keep their bits */\n");
  kc_cu_puts(e->t, "  }\n");
  kc_cu_end(e);
  return KC_OK;
}

kc_status kc_cuda_lower_attention_cache(kc_cuda_emit *e) {
  const kc_node *n = e->n;
  const kc_value *q = kc_cu_val(e, false, Q);
  int rank = q->rank;
  int64_t heads = kc_node_int(n, "heads", 0), kvh = kc_node_int(n, "kv_heads", heads), ckvh = 0,
          D = 0;
  kc_status s = cache_shape(e, AC_CACHE, &ckvh, &D);
  if (s != KC_OK) return s;
  if (heads <= 0 || kvh <= 0 || heads % kvh || ckvh != kvh || (rank != 3 && rank != 4))
    return kc_cu_fail(e, KC_ERR_SHAPE, "heads %lld, kv_heads %lld, cache kv heads %lld, rank %d",
                      (long long)heads, (long long)kvh, (long long)ckvh, rank);
  int bc = kc_cu_att_pick_bc(D, D, (D + DEC_WARPS * (D + 2)) * 4);
  if (!bc) return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "head size %lld", (long long)D);
  kc_dtype t = q->dtype;
  if (!kc_dtype_is_float(t) || kc_cu_val(e, false, AC_CACHE)->dtype != t)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "q and the cache of %s, %s", kc_dtype_name(t),
                      kc_dtype_name(kc_cu_val(e, false, AC_CACHE)->dtype));
  bool mask = kc_cu_present(e, false, MASK);
  bool rot = kc_cu_present(e, false, COS) && kc_cu_present(e, false, SIN);
  const kc_attr *sc = kc_node_attr(n, "scale");
  double scale = sc ? sc->u.f : 1.0 / sqrt((double)D);
  const char *st = kc_cu_stype(t);

  e->sections |= KC_CU_SEC_ATTENTION | KC_CU_SEC_KV_CACHE;
  kc_cu_launch_blocks(e, KC_CU_ATT_BLOCK);
  kc_cu_units_dims(e, false, Q, 0, 1, 1);
  kc_cu_units_const(e, heads);
  kc_cu_units_dims(e, false, Q, rank == 3 ? 1 : 2, rank == 3 ? 2 : 3, KC_CU_ATT_QB);
  kc_cu_check_indices(e, AC_TABLE, AC_CACHE, 0);
  kc_cu_begin(e, KC_CU_ATT_BLOCK);
  kc_cu_printf(e->t, "  kc_att_p p = {};\n  p.q = in%u;\n  p.c = in%u;\n  p.y = out0;\n", Q,
               AC_CACHE);
  cache_params(e, AC_CACHE, AC_TABLE, AC_PAST, AC_LENS);
  char S[64];
  snprintf(S, sizeof S, "%s", kc_cu_dim(e, false, Q, rank == 3 ? 1 : 2));
  kc_cu_printf(e->t, "  p.S = %s;\n", S);
  kc_cu_att_strides(e, rank, "qs", S, heads, D);
  kc_cu_att_strides(e, rank, "ys", S, heads, D);
  if (mask) {
    const kc_value *m = kc_cu_val(e, false, MASK);
    kc_cu_printf(e->t, "  p.m = in%u;\n", MASK);
    kc_cu_att_mask_strides(e, MASK);
    /* keys past the mask's last dim have no value: masked out (one column broadcasts) */
    const char *tm = kc_cu_dim(e, false, MASK, m->rank - 1);
    kc_cu_printf(e->t, "  p.mlim = %s == 1LL ? 0x7fffffffffffffffLL : %s;\n", tm, tm);
  }
  if (rot) rotary_params(e, COS, SIN, D);
  kc_cu_printf(e->t, "  p.scale = (float)%.17g;\n  p.softcap = (float)%.17g;\n", scale,
               kc_node_float(n, "softcap", 0));
  kc_cu_printf(e->t,
               "  kc_attention_cache<%s, %s, %s, %lld, %d, %lld, %lld, %d, %s, %s>(p, a.units);\n",
               st, mask ? kc_cu_stype(kc_cu_val(e, false, MASK)->dtype) : "float",
               rot ? kc_cu_stype(kc_cu_val(e, false, COS)->dtype) : st, (long long)D, bc,
               (long long)heads, (long long)(heads / kvh), mask ? 2 : 0, rot ? "true" : "false",
               kc_node_int(n, "rotary_interleaved", 0) ? "true" : "false");
  kc_cu_end(e);
  return KC_OK;
}
