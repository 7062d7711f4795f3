/*
 * codegen/cuda/attention.c - kc_cuda_lower_attention: kernc's fused attention op (ir/ops.def),
 * and the device library section with its kernel template (kc_attention).
 *
 * Layouts, masks, GQA, past / present K/V and rotary are those of the CPU kernel
 * (codegen/cpu/attention.c): q [B,S,heads*D] or [B,heads,S,D]; k/v [B,S_kv,kv_heads*D] or
 * [B,kv_heads,S_kv,D]; query head h reads kv head h / (heads / kv_heads); mask none / causal
 * (bottom-right aligned: key j of T = P + S_kv visible to query i iff j <= i + T - S) / padding
 * ([B, T], nonzero keeps) / additive (broadcast to [B, heads, S, T]), causal with a mask input adds
 * it; past K/V [B, kv_heads, P, D] come before the new keys; rotary (cos/sin [max_pos, R/2]) turns
 * q and the new keys at positions P + index; a `softcap` attribute, when a graph carries one, caps
 * the scores. A row whose keys are all masked gives 0. lse (result 3, when asked): f32
 * [B, heads, S], each row's log-sum-exp (max + log sum of the online softmax; -inf for a row
 * that saw no key).
 *
 * The kernel never materializes S x T: a block of 4 warps per (batch, head, 16 query rows) streams
 * tiles of BC keys through shared memory with an online softmax (kc_att_tile, the one tile core the
 * KV-cache attention shares: it reads keys through a source object, here past then new keys).
 * The head sizes must be static (they size registers and shared memory); BC is the largest power
 * of two up to 32 whose tiles fit 47 KB of static shared memory with the 16 staged queries.
 * Arithmetic is f32 whatever the dtype.
 */
#include "codegen/cuda/emit.h"

#include <math.h>
#include <string.h>

/* clang-format off */
const char kc_cu_sec_attention[] =
    "/* Attention parameters the kernel wrapper fills from its arguments. Strides: batch, sequence,\n"
    " * head of q, k, v, y; ms: the additive mask's over [B, heads, S, T], mlim: keys at or past it\n"
    " * have no mask value (masked out); mT: the padding mask's row length. The cache fields are\n"
    " * attention_cache's and kv_store's (codegen/cuda/kv_cache.c). */\n"
    "struct kc_att_p {\n"
    "  const void *q, *k, *v, *m, *pk, *pv, *cs, *sn;\n"
    "  void *y, *prk, *prv;\n"
    "  i64 S, P, T, off, mT; /* off = T - S: causal alignment */\n"
    "  i64 qs0, qs1, qs2, ks0, ks1, ks2, vs0, vs1, vs2, ys0, ys1, ys2;\n"
    "  i64 ms0, ms1, ms2, ms3, mlim;\n"
    "  i64 maxpos, cw, half;\n"
    "  float scale, softcap;\n"
    "  const void *c;\n"
    "  const int *tab;\n"
    "  const i64 *past, *lens;\n"
    "  unsigned long long *err;\n"
    "  i64 nblk, L, layer, bs, maxb;\n"
    "  float *lse; /* f32 [B, lseh, S]: each row's log-sum-exp, when not null */\n"
    "  i64 lseh;\n"
    "};\n"
    "\n"
    "/* Element d of the head vector at x + base, rotated to position pos when ROT (f32). */\n"
    "template <class T, class TC, bool ROT, bool INTER>\n"
    "__device__ __forceinline__ float kc_att_elem(const T *x, i64 base, int d, i64 pos, const kc_att_p &p) {\n"
    "  if constexpr (!ROT) {\n"
    "    return (float)kc_f(x[base + d]);\n"
    "  } else {\n"
    "    if (d >= 2 * p.half) return (float)kc_f(x[base + d]);\n"
    "    pos = pos < 0 ? 0 : pos >= p.maxpos ? p.maxpos - 1 : pos;\n"
    "    bool second;\n"
    "    i64 c, i0, i1;\n"
    "    if constexpr (INTER) {\n"
    "      second = d & 1, c = d >> 1, i0 = base + d - (d & 1), i1 = i0 + 1;\n"
    "    } else {\n"
    "      second = d >= p.half, c = second ? d - p.half : d, i0 = base + c, i1 = i0 + p.half;\n"
    "    }\n"
    "    const float x1 = (float)kc_f(x[i0]), x2 = (float)kc_f(x[i1]);\n"
    "    const float co = (float)kc_f(((const TC *)p.cs)[pos * p.cw + c]);\n"
    "    const float si = (float)kc_f(((const TC *)p.sn)[pos * p.cw + c]);\n"
    "    return second ? x1 * si + x2 * co : x1 * co - x2 * si;\n"
    "  }\n"
    "}\n"
    "\n"
    "/* Key sources of kc_att_tile: element d of key / value j (0 <= j < the unit's key count) of the\n"
    " * unit's batch b and kv head hk, as f32. The fused op's: past K/V [B, KVH, P, D] first, then the\n"
    " * new keys (rotated when ROT). */\n"
    "template <class T, class TC, int D, int DV, bool ROT, bool INTER, bool PAST> struct kc_att_fused_src {\n"
    "  const kc_att_p &p;\n"
    "  i64 b, hk, bk; /* bk = b * KVH + hk */\n"
    "  __device__ float key(i64 j, int d) const {\n"
    "    if (PAST && j < p.P) return (float)kc_f(((const T *)p.pk)[(bk * p.P + j) * D + d]);\n"
    "    return kc_att_elem<T, TC, ROT, INTER>((const T *)p.k, b * p.ks0 + (j - p.P) * p.ks1 + hk * p.ks2, d, j, p);\n"
    "  }\n"
    "  __device__ float val(i64 j, int d) const {\n"
    "    return (float)kc_f(PAST && j < p.P ? ((const T *)p.pv)[(bk * p.P + j) * DV + d]\n"
    "                                       : ((const T *)p.v)[b * p.vs0 + (j - p.P) * p.vs1 + hk * p.vs2 + d]);\n"
    "  }\n"
    "};\n"
    "\n"
    "/* The index check of codegen/cuda/cuda.h: report table position pos holding idx. */\n"
    "__device__ __forceinline__ void kc_att_bad(unsigned long long *err, i64 pos, i64 idx) {\n"
    "  if (atomicCAS(err, 0ull, (unsigned long long)pos + 1ull) == 0ull) err[1] = (unsigned long long)idx;\n"
    "}\n"
    "\n"
    "/* The KV cache's: token j of row b in block tab[b, j / bs], slot j % bs (codegen/cuda/kv_cache.c).\n"
    " * row() is the element offset of key j in the cache (its value is voff() further), or -1 after\n"
    " * reporting a table entry outside [0, nblk) (its position) or a block past the table (the row's\n"
    " * last entry): nothing is read through a bad entry. */\n"
    "template <class T, int D, int KVH> struct kc_att_cache_src {\n"
    "  const kc_att_p &p;\n"
    "  i64 b, hk;\n"
    "  __device__ i64 row(i64 j) const {\n"
    "    const i64 k = p.bs > 0 ? j / p.bs : p.maxb; /* empty blocks hold no token */\n"
    "    if (k >= p.maxb) {\n"
    "      const i64 last = b * p.maxb + (p.maxb > 0 ? p.maxb - 1 : 0);\n"
    "      kc_att_bad(p.err, last, p.maxb > 0 ? (i64)p.tab[last] : 0);\n"
    "      return -1;\n"
    "    }\n"
    "    const i64 blk = p.tab[b * p.maxb + k];\n"
    "    if ((u64)blk >= (u64)p.nblk) {\n"
    "      kc_att_bad(p.err, b * p.maxb + k, blk);\n"
    "      return -1;\n"
    "    }\n"
    "    return ((((blk * p.L + p.layer) * 2) * KVH + hk) * p.bs + j % p.bs) * D;\n"
    "  }\n"
    "  __device__ i64 voff() const { return (i64)KVH * p.bs * D; }\n"
    "  __device__ float key(i64 j, int d) const {\n"
    "    const i64 r = row(j);\n"
    "    return r < 0 ? 0.0f : (float)kc_f(((const T *)p.c)[r + d]);\n"
    "  }\n"
    "  __device__ float val(i64 j, int d) const {\n"
    "    const i64 r = row(j);\n"
    "    return r < 0 ? 0.0f : (float)kc_f(((const T *)p.c)[r + voff() + d]);\n"
    "  }\n"
    "};\n"
    "\n"
    "/*\n"
    " * FlashAttention-style attention of one unit: batch b, query head h, query rows [i0, i0 + QB),\n"
    " * QB = 16, over keys [0, nkeys) of a source; 4 warps, each owning QB/4 rows. Query row i is rotated\n"
    " * at P + i and, when CAUSAL, sees keys j <= off + min(i, lm1) (later tiles are skipped). Per\n"
    " * tile of BC keys, K and V are staged in shared memory as f32; lane j scores key j against a row,\n"
    " * the warp keeps the row's running max m and sum l (online softmax) and rescales its accumulator\n"
    " * (lane owns output dims lane + 32 t) before adding p_j * V[j]. Masks: padding (MASK 1: m[b, j]\n"
    " * != 0 keeps), additive (MASK 2). A row with no visible key writes 0.\n"
    " */\n"
    "template <class T, class MT, class TC, int D, int DV, int BC, bool CAUSAL, int MASK, bool ROT,\n"
    "          bool INTER, class SRC>\n"
    "__device__ void kc_att_tile(const kc_att_p &p, const SRC &src, i64 b, i64 h, i64 i0, i64 P, i64 off,\n"
    "                            i64 lm1, i64 nkeys) {\n"
    "  constexpr int QB = 16, RW = QB / 4, DVL = (DV + 31) / 32;\n"
    "  __shared__ float Qs[QB][D];\n"
    "  __shared__ float Ks[BC][D + 1];\n"
    "  __shared__ float Vs[BC][DV];\n"
    "  const T *q = (const T *)p.q;\n"
    "  const MT *mk = (const MT *)p.m;\n"
    "  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;\n"
    "  for (int e = threadIdx.x; e < QB * D; e += blockDim.x) {\n"
    "    const int r = e / D, d = e % D;\n"
    "    const i64 i = i0 + r;\n"
    "    Qs[r][d] = i < p.S ? kc_att_elem<T, TC, ROT, INTER>(q, b * p.qs0 + i * p.qs1 + h * p.qs2, d, P + i, p) * p.scale : 0.0f;\n"
    "  }\n"
    "  float m[RW], l[RW], acc[RW][DVL];\n"
    "#pragma unroll\n"
    "  for (int rr = 0; rr < RW; rr++) {\n"
    "    m[rr] = -KC_INF, l[rr] = 0;\n"
    "#pragma unroll\n"
    "    for (int t = 0; t < DVL; t++) acc[rr][t] = 0;\n"
    "  }\n"
    "  i64 kend = nkeys;\n"
    "  if constexpr (CAUSAL) kend = kc_max((i64)0, kc_min(kend, off + kc_min(kc_min(i0 + QB, p.S) - 1, lm1) + 1));\n"
    "  for (i64 j0 = 0; j0 < kend; j0 += BC) {\n"
    "    __syncthreads(); /* Q staged; the previous tile consumed */\n"
    "    for (int e = threadIdx.x; e < BC * D; e += blockDim.x) {\n"
    "      const int jj = e / D, d = e % D;\n"
    "      const i64 j = j0 + jj;\n"
    "      Ks[jj][d] = j < kend ? src.key(j, d) : 0.0f;\n"
    "    }\n"
    "    for (int e = threadIdx.x; e < BC * DV; e += blockDim.x) {\n"
    "      const int jj = e / DV, d = e % DV;\n"
    "      const i64 j = j0 + jj;\n"
    "      Vs[jj][d] = j < kend ? src.val(j, d) : 0.0f;\n"
    "    }\n"
    "    __syncthreads();\n"
    "#pragma unroll\n"
    "    for (int rr = 0; rr < RW; rr++) {\n"
    "      const int r = w * RW + rr;\n"
    "      const i64 i = i0 + r, j = j0 + lane;\n"
    "      if (i >= p.S) continue; /* the same for the whole warp */\n"
    "      float s = -KC_INF;\n"
    "      if (lane < BC && j < kend) {\n"
    "        float dot = 0;\n"
    "#pragma unroll 8\n"
    "        for (int d = 0; d < D; d++) dot += Qs[r][d] * Ks[lane][d];\n"
    "        if (p.softcap > 0) dot = p.softcap * tanhf(dot / p.softcap);\n"
    "        bool keep = true;\n"
    "        if constexpr (CAUSAL) keep = j <= off + kc_min(i, lm1);\n"
    "        if constexpr (MASK == 1) keep = keep && kc_f(mk[b * p.mT + j]) != 0;\n"
    "        if constexpr (MASK == 2) {\n"
    "          if (j < p.mlim) dot += (float)kc_f(mk[b * p.ms0 + h * p.ms1 + i * p.ms2 + j * p.ms3]);\n"
    "          else keep = false;\n"
    "        }\n"
    "        s = keep ? dot : -KC_INF;\n"
    "      }\n"
    "      const float mn = fmaxf(m[rr], kc_warp_reduce(s, kc_op_max()));\n"
    "      const float mu = mn == -KC_INF ? 0.0f : mn; /* nothing visible yet: no -inf - -inf */\n"
    "      const float pj = s == -KC_INF ? 0.0f : expf(s - mu);\n"
    "      const float corr = m[rr] == -KC_INF ? 0.0f : expf(m[rr] - mu);\n"
    "      l[rr] = l[rr] * corr + kc_warp_reduce(pj, kc_op_sum());\n"
    "      m[rr] = mn;\n"
    "#pragma unroll\n"
    "      for (int t = 0; t < DVL; t++) acc[rr][t] *= corr;\n"
    "      for (int jj = 0; jj < BC; jj++) {\n"
    "        const float pb = __shfl_sync(0xffffffffu, pj, jj);\n"
    "#pragma unroll\n"
    "        for (int t = 0; t < DVL; t++)\n"
    "          if (lane + 32 * t < DV) acc[rr][t] += pb * Vs[jj][lane + 32 * t];\n"
    "      }\n"
    "    }\n"
    "  }\n"
    "#pragma unroll\n"
    "  for (int rr = 0; rr < RW; rr++) {\n"
    "    const i64 i = i0 + w * RW + rr;\n"
    "    if (i >= p.S) continue;\n"
    "    const float inv = l[rr] > 0 ? 1.0f / l[rr] : 0.0f;\n"
    "    if (p.lse && lane == 0) p.lse[(b * p.lseh + h) * p.S + i] = l[rr] > 0 ? m[rr] + logf(l[rr]) : -KC_INF;\n"
    "#pragma unroll\n"
    "    for (int t = 0; t < DVL; t++)\n"
    "      if (lane + 32 * t < DV)\n"
    "        ((T *)p.y)[b * p.ys0 + i * p.ys1 + h * p.ys2 + lane + 32 * t] = kc_st<T>::to(acc[rr][t] * inv);\n"
    "  }\n"
    "  __syncthreads(); /* Qs is restaged by the next unit */\n"
    "}\n"
    "\n"
    "/*\n"
    " * kernc's fused attention: unit u = (batch b, query head h, block of 16 query rows), keys from\n"
    " * past K/V then the new ones, causal bottom-right aligned (key j visible to query i iff\n"
    " * j <= i + T - S). Present K/V are written by the unit with the group's first head and the first\n"
    " * query block, from past and new keys (never from present).\n"
    " */\n"
    "template <class T, class MT, class TC, int D, int DV, int BC, int HEADS, int GROUP, bool CAUSAL,\n"
    "          int MASK, bool ROT, bool INTER, bool PAST, bool PRK, bool PRV>\n"
    "__device__ void kc_attention(const kc_att_p &p, i64 units) {\n"
    "  constexpr int QB = 16, KVH = HEADS / GROUP;\n"
    "  const T *k = (const T *)p.k, *v = (const T *)p.v;\n"
    "  const T *pk = (const T *)p.pk, *pv = (const T *)p.pv;\n"
    "  const i64 nqb = (p.S + QB - 1) / QB;\n"
    "  for (i64 u = blockIdx.x; u < units; u += gridDim.x) {\n"
    "    const i64 qb = u % nqb, h = u / nqb % HEADS, b = u / nqb / HEADS, hk = h / GROUP;\n"
    "    const i64 bk = b * KVH + hk;\n"
    "    if constexpr (PRK || PRV) {\n"
    "      if (qb == 0 && h % GROUP == 0) {\n"
    "        if constexpr (PRK)\n"
    "          for (i64 e = threadIdx.x; e < p.T * D; e += blockDim.x) {\n"
    "            const i64 j = e / D;\n"
    "            const int d = (int)(e % D);\n"
    "            const i64 kr = b * p.ks0 + (j - p.P) * p.ks1 + hk * p.ks2;\n"
    "            T *dst = (T *)p.prk + bk * p.T * D + e;\n"
    "            /* copies keep their bits; only rotated keys go through f32 */\n"
    "            if (PAST && j < p.P) *dst = pk[(bk * p.P + j) * D + d];\n"
    "            else if (ROT) *dst = kc_st<T>::to(kc_att_elem<T, TC, ROT, INTER>(k, kr, d, j, p));\n"
    "            else *dst = k[kr + d];\n"
    "          }\n"
    "        if constexpr (PRV)\n"
    "          for (i64 e = threadIdx.x; e < p.T * DV; e += blockDim.x) {\n"
    "            const i64 j = e / DV;\n"
    "            const int d = (int)(e % DV);\n"
    "            ((T *)p.prv)[bk * p.T * DV + e] = PAST && j < p.P ? pv[(bk * p.P + j) * DV + d]\n"
    "                                                           : v[b * p.vs0 + (j - p.P) * p.vs1 + hk * p.vs2 + d];\n"
    "          }\n"
    "      }\n"
    "    }\n"
    "    const kc_att_fused_src<T, TC, D, DV, ROT, INTER, PAST> src{p, b, hk, bk};\n"
    "    kc_att_tile<T, MT, TC, D, DV, BC, CAUSAL, MASK, ROT, INTER>(p, src, b, h, qb * QB, p.P, p.off, p.S - 1, p.T);\n"
    "  }\n"
    "}\n"
    ;
/* clang-format on */

enum { Q, K, V, MASK, PAST_K, PAST_V, COS, SIN };

void kc_cu_att_strides(kc_cuda_emit *e, int rank, const char *name, const char *S, int64_t H,
                       int64_t dh) {
  if (rank == 3)
    kc_cu_printf(e->t, "  p.%s0 = %s * %lldLL; p.%s1 = %lldLL; p.%s2 = %lldLL;\n", name, S,
                 (long long)(H * dh), name, (long long)(H * dh), name, (long long)dh);
  else
    kc_cu_printf(e->t, "  p.%s0 = %s * %lldLL; p.%s1 = %lldLL; p.%s2 = %s * %lldLL;\n", name, S,
                 (long long)(H * dh), name, (long long)dh, name, S, (long long)dh);
}

void kc_cu_att_mask_strides(kc_cuda_emit *e, uint32_t in) {
  const kc_value *m = kc_cu_val(e, false, in);
  for (int a = 0; a < 4; a++) {
    int ma = a - (4 - m->rank);
    const char *s = "0LL";
    if (ma >= 0 && m->dims[ma] != 1) {
      const char *st = kc_cu_numel(e, false, in, ma + 1, m->rank);
      s = KC_DIM_IS_SYM(m->dims[ma])
              ? kc_cu_fmt(e, "(%s == 1LL ? 0LL : %s)", kc_cu_dim(e, false, in, ma), st)
              : st;
    }
    kc_cu_printf(e->t, "  p.ms%d = %s;\n", a, s);
  }
}

int kc_cu_att_pick_bc(int64_t D, int64_t Dv, int64_t extra) {
  for (int bc = 32; bc >= 1; bc /= 2)
    if ((KC_CU_ATT_QB * D + bc * (D + 1 + Dv)) * 4 + extra <= KC_CU_ATT_SMEM) return bc;
  return 0;
}

kc_status kc_cu_att_configure(kc_cuda_emit *e, uint32_t mask_in, kc_cu_att_cfg *c) {
  const kc_node *n = e->n;
  const kc_value *q = kc_cu_val(e, false, 0), *k = kc_cu_val(e, false, 1),
                 *v = kc_cu_val(e, false, 2);
  int rank = c->rank = q->rank;
  int64_t heads = kc_node_int(n, "heads", 0), kvh = kc_node_int(n, "kv_heads", heads);
  if (heads <= 0 || kvh <= 0 || heads % kvh || (rank != 3 && rank != 4))
    return kc_cu_fail(e, KC_ERR_SHAPE, "heads %lld, kv_heads %lld, rank %d", (long long)heads,
                      (long long)kvh, rank);
  c->heads = heads;
  c->kvh = kvh;
  kc_dim dq = q->dims[rank - 1], dk = k->dims[rank - 1], dv = v->dims[rank - 1];
  if (KC_DIM_IS_SYM(dq) || KC_DIM_IS_SYM(dk) || KC_DIM_IS_SYM(dv))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "the head sizes must be static");
  c->D = rank == 3 ? dq / heads : dq;
  c->Dv = rank == 3 ? dv / kvh : dv;
  int64_t Dk = rank == 3 ? dk / kvh : dk;
  if (c->D <= 0 || c->Dv <= 0 || Dk != c->D)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "head sizes D %lld, D_k %lld, D_v %lld",
                      (long long)c->D, (long long)Dk, (long long)c->Dv);
  kc_dtype t = c->t = q->dtype;
  if (!kc_dtype_is_float(t) || k->dtype != t || v->dtype != t)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "q, k, v of %s, %s, %s", kc_dtype_name(t),
                      kc_dtype_name(k->dtype), kc_dtype_name(v->dtype));
  const char *mask = c->mask = kc_node_string(n, "mask", "none");
  c->causal = !strcmp(mask, "causal");
  c->has_mask = kc_cu_present(e, false, mask_in);
  c->mk = !strcmp(mask, "padding") ? 1 : !strcmp(mask, "additive") ? 2 : 0;
  if (!c->mk && !c->causal && strcmp(mask, "none"))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "mask kind '%s'", mask);
  if (c->causal && c->has_mask) c->mk = 2;
  if ((c->mk != 0) != c->has_mask)
    return kc_cu_fail(e, KC_ERR_SHAPE, "mask=%s and the mask input disagree", mask);
  return KC_OK;
}

kc_status kc_cuda_lower_attention(kc_cuda_emit *e) {
  const kc_node *n = e->n;
  kc_cu_att_cfg c;
  kc_status cs = kc_cu_att_configure(e, MASK, &c);
  if (cs != KC_OK) return cs;
  int rank = c.rank;
  int64_t heads = c.heads, kvh = c.kvh, D = c.D, Dv = c.Dv;
  kc_dtype t = c.t;
  bool causal = c.causal, has_mask = c.has_mask;
  int mk = c.mk;
  int bc = kc_cu_att_pick_bc(D, Dv, 0);
  if (!bc)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "head sizes D %lld, D_v %lld", (long long)D,
                      (long long)Dv);
  bool past = kc_cu_present(e, false, PAST_K) && kc_cu_present(e, false, PAST_V);
  bool rot = kc_cu_present(e, false, COS) && kc_cu_present(e, false, SIN);
  const kc_attr *sc = kc_node_attr(n, "scale");
  double scale = sc ? sc->u.f : 1.0 / sqrt((double)D);
  const char *st = kc_cu_stype(t);

  e->sections |= KC_CU_SEC_ATTENTION;
  kc_cu_launch_blocks(e, KC_CU_ATT_BLOCK);
  kc_cu_units_dims(e, false, Q, 0, 1, 1);
  kc_cu_units_const(e, heads);
  kc_cu_units_dims(e, false, Q, rank == 3 ? 1 : 2, rank == 3 ? 2 : 3, KC_CU_ATT_QB);
  kc_cu_begin(e, KC_CU_ATT_BLOCK);
  kc_cu_puts(e->t, "  kc_att_p p = {};\n");
  static const char *const in_name[] = {"q", "k", "v", "m", "pk", "pv", "cs", "sn"};
  for (uint32_t i = 0; i < 8 && i < n->nin; i++)
    if (kc_cu_present(e, false, i)) kc_cu_printf(e->t, "  p.%s = in%u;\n", in_name[i], i);
  static const char *const out_name[] = {"y", "prk", "prv"};
  bool prk = kc_cu_present(e, true, 1), prv = kc_cu_present(e, true, 2);
  for (uint32_t i = 0; i < 3 && i < n->nout; i++)
    if (kc_cu_present(e, true, i)) kc_cu_printf(e->t, "  p.%s = out%u;\n", out_name[i], i);
  if (kc_cu_present(e, true, 3))
    kc_cu_printf(e->t, "  p.lse = out3;\n  p.lseh = %lldLL;\n", (long long)heads);
  int sdim = rank == 3 ? 1 : 2;
  char S[64], Skv[64];
  snprintf(S, sizeof S, "%s", kc_cu_dim(e, false, Q, sdim));
  snprintf(Skv, sizeof Skv, "%s", kc_cu_dim(e, false, K, sdim));
  kc_cu_printf(e->t,
               "  p.S = %s;\n  p.P = %s;\n  p.T = p.P + %s;\n  p.off = p.T - p.S;\n  p.mT = p.T;\n"
               "  p.mlim = 0x7fffffffffffffffLL;\n",
               S, past ? kc_cu_dim(e, false, PAST_K, 2) : "0LL", Skv);
  kc_cu_att_strides(e, rank, "qs", S, heads, D);
  kc_cu_att_strides(e, rank, "ks", Skv, kvh, D);
  kc_cu_att_strides(e, rank, "vs", Skv, kvh, Dv);
  kc_cu_att_strides(e, rank, "ys", S, heads, Dv);
  if (mk == 2) kc_cu_att_mask_strides(e, MASK);
  if (rot)
    kc_cu_printf(e->t, "  p.maxpos = %s;\n  p.cw = %s;\n  p.half = kc_min(p.cw, %lldLL);\n",
                 kc_cu_dim(e, false, COS, 0), kc_cu_dim(e, false, COS, 1), (long long)(D / 2));
  kc_cu_printf(e->t, "  p.scale = (float)%.17g;\n  p.softcap = (float)%.17g;\n", scale,
               kc_node_float(n, "softcap", 0));
  kc_cu_printf(
      e->t,
      "  kc_attention<%s, %s, %s, %lld, %lld, %d, %lld, %lld, %s, %d, %s, %s, %s, %s, %s>(p, "
      "a.units);\n",
      st, has_mask ? kc_cu_stype(kc_cu_val(e, false, MASK)->dtype) : "float",
      rot ? kc_cu_stype(kc_cu_val(e, false, COS)->dtype) : st, (long long)D, (long long)Dv, bc,
      (long long)heads, (long long)(heads / kvh), causal ? "true" : "false", mk,
      rot ? "true" : "false", kc_node_int(n, "rotary_interleaved", 0) ? "true" : "false",
      past ? "true" : "false", prk ? "true" : "false", prv ? "true" : "false");
  kc_cu_end(e);
  return KC_OK;
}
