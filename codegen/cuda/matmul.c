/*
 * codegen/cuda/matmul.c - kc_cuda_lower_matmul, the CUDA family of matmul (ONNX MatMul), gemm
 * and matmul_ep, and the device library section it calls (kc_mm_tile).
 *
 * Shapes as ONNX MatMul: A [..., M, K] @ B [..., K, N]; a 1-D A is [1, K] and a 1-D B is
 * [K, 1], the added dim not in the output; batch dims broadcast numpy-style (a stride of 0
 * where an operand has 1 or lacks the dim, decided at run time for symbolic dims). gemm is
 * 2-D with transposes, which are only strides (rsa = 1 reads A^T).
 *
 * A block of 256 threads per 64 x 64 tile of one product (units = batch * ceil(M / 64) *
 * ceil(N / 64)); kc_mm_tile stages 64 x 16 slices of A and 16 x 64 of B in shared memory,
 * converted to the accumulator type (f32 for f32/f16/bf16, f64, integers in their own type,
 * wrapping), and each thread keeps a 4 x 4 register tile. The epilogue runs on the registers
 * before the one store: gemm y = alpha * y + beta * C, matmul_ep y = act(y + bias) * scale +
 * residual, with C, bias, scale and residual broadcast to the output by strides.
 * Not yet: tensor cores (WMMA / mma.sync) for f16 / bf16; they take the f32 path.
 */
#include "codegen/cuda/emit.h"

#include <string.h>

/* clang-format off */
const char kc_cu_sec_matmul[] =
    "/* One 64 x 64 tile of C = A @ B at (m0, n0): A[m][k] at A + m*rsa + k*csa, B[k][n] at\n"
    " * B + k*rsb + n*csb. 256 threads; thread (ty, tx) = (tid / 16, tid % 16) owns rows\n"
    " * m0 + ty + 16 i and columns n0 + tx + 16 j of the tile (acc[i][j]). */\n"
    "template <class ACC, class TA, class TB>\n"
    "__device__ __forceinline__ void kc_mm_tile(const TA *__restrict__ A, const TB *__restrict__ B,\n"
    "    i64 M, i64 N, i64 K, i64 rsa, i64 csa, i64 rsb, i64 csb, i64 m0, i64 n0, ACC (&acc)[4][4]) {\n"
    "  __shared__ ACC As[16][65];\n"
    "  __shared__ ACC Bs[16][65];\n"
    "  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;\n"
    "#pragma unroll\n"
    "  for (int i = 0; i < 4; i++)\n"
    "#pragma unroll\n"
    "    for (int j = 0; j < 4; j++) acc[i][j] = (ACC)0;\n"
    "  for (i64 k0 = 0; k0 < K; k0 += 16) {\n"
    "    for (int l = tid; l < 1024; l += 256) {\n"
    "      const int kk = l & 15, mm = l >> 4;\n"
    "      const i64 m = m0 + mm, k = k0 + kk;\n"
    "      As[kk][mm] = m < M && k < K ? (ACC)kc_f(A[m * rsa + k * csa]) : (ACC)0;\n"
    "    }\n"
    "    for (int l = tid; l < 1024; l += 256) {\n"
    "      const int nn = l & 63, kk = l >> 6;\n"
    "      const i64 n = n0 + nn, k = k0 + kk;\n"
    "      Bs[kk][nn] = n < N && k < K ? (ACC)kc_f(B[k * rsb + n * csb]) : (ACC)0;\n"
    "    }\n"
    "    __syncthreads();\n"
    "#pragma unroll\n"
    "    for (int kk = 0; kk < 16; kk++) {\n"
    "      ACC x[4], y[4];\n"
    "#pragma unroll\n"
    "      for (int i = 0; i < 4; i++) x[i] = As[kk][ty + 16 * i];\n"
    "#pragma unroll\n"
    "      for (int j = 0; j < 4; j++) y[j] = Bs[kk][tx + 16 * j];\n"
    "#pragma unroll\n"
    "      for (int i = 0; i < 4; i++)\n"
    "#pragma unroll\n"
    "        for (int j = 0; j < 4; j++) acc[i][j] = kc_add(acc[i][j], kc_mul(x[i], y[j]));\n"
    "    }\n"
    "    __syncthreads();\n"
    "  }\n"
    "}\n";
/* clang-format on */

#define MM_BLOCK 256
#define MM_TILE 64

typedef struct mm {
  kc_dtype dt;
  bool gemm, ta, tb;
  int ra, rb, ro, nb;
  bool has_m, has_n;
  const char *acc;
} mm;

/* Strides of operand `which` (0 A, 1 B) along the output's batch dims: `NAME_k`. */
static void batch_strides(kc_cuda_emit *e, const mm *p, uint32_t which, const char *name) {
  const kc_value *v = kc_cu_val(e, false, which), *o = kc_cu_val(e, true, 0);
  int r = v->rank, lb = r - 2; /* its batch dims */
  for (int k = 0; k < p->nb; k++) {
    int ai = k - (p->nb - lb);
    const char *s = "0LL";
    if (r >= 2 && ai >= 0 && v->dims[ai] != 1) {
      const char *stride = kc_cu_numel(e, false, which, ai + 1, r);
      s = v->dims[ai] == o->dims[k]
              ? stride
              : kc_cu_fmt(e, "(%s == 1LL ? 0LL : %s)", kc_cu_dim(e, false, which, ai), stride);
    }
    kc_cu_printf(e->t, "  const i64 %s_%d = %s;\n", name, k, s);
  }
}

static kc_status plan(kc_cuda_emit *e, mm *p) {
  const kc_node *n = e->n;
  p->dt = kc_cu_val(e, false, 0)->dtype;
  p->gemm = n->op == KC_OP_GEMM;
  p->ra = kc_cu_val(e, false, 0)->rank;
  p->rb = kc_cu_val(e, false, 1)->rank;
  p->ro = kc_cu_val(e, true, 0)->rank;
  if (!kc_dtype_is_float(p->dt) && !kc_dtype_is_int(p->dt))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "%s of %s", kc_ops[n->op].name, kc_dtype_name(p->dt));
  if (kc_cu_val(e, false, 1)->dtype != p->dt)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "operands of different dtypes");
  if (p->ra < 1 || p->rb < 1 || (p->gemm && (p->ra != 2 || p->rb != 2)))
    return kc_cu_fail(e, KC_ERR_SHAPE, "operands of rank %d and %d", p->ra, p->rb);
  p->ta = p->gemm && kc_node_int(n, "transA", 0);
  p->tb = p->gemm && kc_node_int(n, "transB", 0);
  p->has_m = p->ra >= 2;
  p->has_n = p->rb >= 2;
  p->nb = p->ro - p->has_m - p->has_n;
  p->acc = kc_cu_acc_type(p->dt);
  if (!strcmp(p->acc, "int") || !strcmp(p->acc, "unsigned int"))
    p->acc = kc_cu_ctype(p->dt); /* wrap in the dtype's own width */
  return p->nb < 0 ? kc_cu_fail(e, KC_ERR_SHAPE, "output of rank %d", p->ro) : KC_OK;
}

/* M, N, K and the in-matrix strides. */
static void sizes(kc_cuda_emit *e, const mm *p) {
  int ra = p->ra, rb = p->rb;
  const char *M, *N, *K, *rsa, *csa, *rsb, *csb;
  if (p->gemm) {
    M = kc_cu_dim(e, false, 0, p->ta ? 1 : 0);
    K = kc_cu_dim(e, false, 0, p->ta ? 0 : 1);
    N = kc_cu_dim(e, false, 1, p->tb ? 0 : 1);
    rsa = p->ta ? "1LL" : "K", csa = p->ta ? "M" : "1LL";
    rsb = p->tb ? "1LL" : "N", csb = p->tb ? "K" : "1LL";
  } else {
    M = p->has_m ? kc_cu_dim(e, false, 0, ra - 2) : "1LL";
    K = kc_cu_dim(e, false, 0, ra - 1);
    N = p->has_n ? kc_cu_dim(e, false, 1, rb - 1) : "1LL";
    rsa = p->has_m ? "K" : "0LL", csa = "1LL";
    rsb = p->has_n ? "N" : "1LL", csb = p->has_n ? "1LL" : "0LL";
  }
  kc_cu_printf(e->t, "  const i64 M = %s, N = %s, K = %s;\n", M, N, K);
  kc_cu_printf(e->t, "  const i64 rsa = %s, csa = %s, rsb = %s, csb = %s;\n", rsa, csa, rsb, csb);
}

/* The epilogue statements on `v` at output coordinates (batch offset oeK, m, n). */
static kc_status epilogue(kc_cuda_emit *e, const mm *p, const int *ops, int nops) {
  const kc_node *n = e->n;
  bool fp = kc_dtype_is_float(p->dt);
  for (int j = 0; j < nops; j++) {
    int i = ops[j];
    kc_dtype t = kc_cu_val(e, false, (uint32_t)i)->dtype;
    const char *off =
        kc_cu_fmt(e, "oe%d%s%s", i, p->has_m ? kc_cu_fmt(e, " + m * e%d_%d", i, p->nb) : "",
                  p->has_n ? kc_cu_fmt(e, " + n * e%d_%d", i, p->nb + p->has_m) : "");
    kc_cu_printf(e->t, "        const %s c%d = (%s)%s;\n", p->acc, i, p->acc,
                 kc_cu_load(e, t, kc_cu_fmt(e, "in%d", i), off));
  }
  if (p->gemm) {
    double alpha = kc_node_float(n, "alpha", 1), beta = kc_node_float(n, "beta", 1);
    if (!fp && (alpha != (double)(long long)alpha || beta != (double)(long long)beta))
      return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "integer gemm with alpha %g, beta %g", alpha, beta);
    if (alpha != 1) kc_cu_printf(e->t, "        v = kc_mul(v, (%s)%.17g);\n", p->acc, alpha);
    if (nops) kc_cu_printf(e->t, "        v = kc_add(v, kc_mul(c2, (%s)%.17g));\n", p->acc, beta);
    return KC_OK;
  }
  if (n->op != KC_OP_MATMUL_EP) return KC_OK;
  const char *act = kc_node_string(n, "act", "none");
  bool relu = !strcmp(act, "relu"), gelu = !strcmp(act, "gelu"), gtanh = !strcmp(act, "gelu_tanh");
  if (!relu && !gelu && !gtanh && strcmp(act, "none"))
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "matmul_ep act=\"%s\"", act);
  if ((gelu || gtanh) && !fp)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "act=%s on %s", act, kc_dtype_name(p->dt));
  if (kc_cu_present(e, false, 2)) kc_cu_puts(e->t, "        v = kc_add(v, c2);\n");
  if (relu || gelu || gtanh)
    kc_cu_printf(e->t, "        v = %s(v);\n",
                 relu   ? "kc_relu"
                 : gelu ? "kc_gelu"
                        : "kc_gelu_tanh");
  if (kc_cu_present(e, false, 4)) kc_cu_puts(e->t, "        v = kc_mul(v, c4);\n");
  if (kc_cu_present(e, false, 3)) kc_cu_puts(e->t, "        v = kc_add(v, c3);\n");
  return KC_OK;
}

kc_status kc_cuda_lower_matmul(kc_cuda_emit *e) {
  mm p = {0};
  kc_status s = plan(e, &p);
  if (s != KC_OK) return s;
  const kc_value *o = kc_cu_val(e, true, 0);
  e->sections |= KC_CU_SEC_MATMUL;
  kc_cu_launch_blocks(e, MM_BLOCK);
  kc_cu_units_dims(e, true, 0, 0, p.nb, 1);
  if (p.has_m) kc_cu_units_dims(e, true, 0, p.nb, p.nb + 1, MM_TILE);
  if (p.has_n) kc_cu_units_dims(e, true, 0, p.ro - 1, p.ro, MM_TILE);
  kc_cu_begin(e, MM_BLOCK);
  sizes(e, &p);
  /* epilogue operands: gemm's C (input 2), matmul_ep's bias, residual and scale (2, 3, 4) */
  int ops[3], nops = 0;
  for (uint32_t i = 2; i < e->n->nin && i < 5; i++)
    if (kc_cu_present(e, false, i)) ops[nops++] = (int)i;
  batch_strides(e, &p, 0, "ba");
  batch_strides(e, &p, 1, "bb");
  const char *sn[5] = {"ba", "bb"}, *on[5] = {"oa", "ob"};
  char names[3][2][16];
  for (int j = 0; j < nops; j++) {
    snprintf(names[j][0], sizeof names[j][0], "e%d", ops[j]);
    snprintf(names[j][1], sizeof names[j][1], "oe%d", ops[j]);
    kc_cu_bcast_strides(e, (uint32_t)ops[j], p.ro, o->dims, names[j][0]);
    sn[2 + j] = names[j][0];
    on[2 + j] = names[j][1];
  }
  kc_cu_printf(e->t, "  const i64 mt = (M + %d) / %d, nt = (N + %d) / %d;\n", MM_TILE - 1, MM_TILE,
               MM_TILE - 1, MM_TILE);
  kc_cu_puts(e->t, "  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;\n"
                   "  KC_BLOCKS(u) {\n"
                   "    const i64 tn = u % nt, tm = (u / nt) % mt, bi = u / nt / mt;\n"
                   "    i64 oa = 0, ob = 0");
  for (int j = 0; j < nops; j++)
    kc_cu_printf(e->t, ", %s = 0", on[2 + j]);
  kc_cu_puts(e->t, ";\n");
  kc_cu_decompose(e, 4, "bi", true, 0, 0, p.nb, 2 + nops, sn, on, NULL);
  kc_cu_printf(e->t, "    %s acc[4][4];\n", p.acc);
  kc_cu_printf(e->t,
               "    kc_mm_tile<%s>(in0 + oa, in1 + ob, M, N, K, rsa, csa, rsb, csb, tm * %d, "
               "tn * %d, acc);\n",
               p.acc, MM_TILE, MM_TILE);
  kc_cu_printf(e->t,
               "    for (int i = 0; i < 4; i++)\n"
               "      for (int j = 0; j < 4; j++) {\n"
               "        const i64 m = tm * %d + ty + 16 * i, n = tn * %d + tx + 16 * j;\n"
               "        if (m >= M || n >= N) continue;\n"
               "        %s v = acc[i][j];\n",
               MM_TILE, MM_TILE, p.acc);
  if ((s = epilogue(e, &p, ops, nops)) != KC_OK) return s;
  kc_cu_store(e, 8, o->dtype, "out0", "(bi * M + m) * N + n", "v");
  kc_cu_puts(e->t, "      }\n  }\n");
  kc_cu_end(e);
  return KC_OK;
}
