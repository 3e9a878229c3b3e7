/* kernels.c — the layers of the GPT-2 model: a _forward/_backward pair per
 * layer over flat float32 arrays, as in llm.c.
 *
 * Matrix products go to OpenBLAS sgemm, cut into one slab per OpenMP
 * thread (train_k_gemm: one thread pool, OpenBLAS itself single-threaded);
 * the rest are loops the compiler vectorises, threaded over rows. Called
 * inside a parallel region (the model's per-thread slices), every kernel
 * runs on the calling thread alone. Loops use a polynomial exp instead of
 * a libm call per element. Matrices are [in, out]
 * (Conv1D layout), so y = x W is a plain row-major sgemm; biases and
 * residual additions are fused into it by filling the output first and
 * calling sgemm with beta = 1. Attention is flash style: the forward keeps
 * each softmax row's log-sum-exp and the backward recomputes the
 * probabilities, per head and block of query rows, so nothing T x T is
 * stored; the row-by-row version is kept as the reference.
 *
 * Workload: thousands of rows of width 64..4096 per call; loops under
 * PAR_MIN elements stay on one thread. The tests check every layer's
 * backward against finite differences (tests/test_trainer_grad.c).
 */
#include "trainer/internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define LN_EPS 1e-5f

/* Loops over fewer elements than this run on one thread: waking the team
 * costs more than the work (small batches, generation, tests). */
#define PAR_MIN ((size_t)1 << 15)

/* C = alpha op(A) op(B) + beta C, row-major, threaded by us: the output is
 * cut into slabs of rows (or of columns, when it is wide and short) and
 * each OpenMP thread runs a single-threaded sgemm on its slab. One thread
 * pool for the whole trainer: OpenBLAS's own pool would spin against
 * OpenMP's between calls (train_set_threads keeps OpenBLAS at one thread). */
void train_k_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc)
{
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    int nt = 1;
#ifdef _OPENMP
    if ((double)M * N * K > 4e6 && !omp_in_parallel())
        nt = omp_get_max_threads();
#endif
    if (nt <= 1) {
        cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int by_rows = M >= N;
    int len = by_rows ? M : N;
    int chunk = (len + nt - 1) / nt;
    chunk = (chunk + 15) & ~15;
    int nchunks = (len + chunk - 1) / chunk;
#pragma omp parallel for schedule(static, 1) num_threads(nt)
    for (int c = 0; c < nchunks; c++) {
        int o = c * chunk, n = len - o < chunk ? len - o : chunk;
        if (by_rows)
            cblas_sgemm(CblasRowMajor, TA, TB, n, N, K, alpha, ta ? A + o : A + (size_t)o * lda, lda, B,
                        ldb, beta, C + (size_t)o * ldc, ldc);
        else
            cblas_sgemm(CblasRowMajor, TA, TB, M, n, K, alpha, A, lda, tb ? B + (size_t)o * ldb : B + o,
                        ldb, beta, C + o, ldc);
    }
}

/* ---- layers: embeddings ------------------------------------------------ */

void train_k_encoder_forward(float *out, const int32_t *tok, const float *wte, const float *wpe,
                             int B, int T, int C)
{
#pragma omp parallel for if ((size_t)B * T * C > PAR_MIN)
    for (int bt = 0; bt < B * T; bt++) {
        const float *e = wte + (size_t)tok[bt] * C, *p = wpe + (size_t)(bt % T) * C;
        float *o = out + (size_t)bt * C;
        for (int i = 0; i < C; i++)
            o[i] = e[i] + p[i];
    }
}

void train_k_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                              int B, int T, int C)
{
    /* Sequential over rows: repeated tokens add into the same row. */
    for (int bt = 0; bt < B * T; bt++) {
        const float *d = dout + (size_t)bt * C;
        float *e = dwte + (size_t)tok[bt] * C, *p = dwpe + (size_t)(bt % T) * C;
#pragma omp simd
        for (int i = 0; i < C; i++) {
            e[i] += d[i];
            p[i] += d[i];
        }
    }
}

/* ---- layers: LayerNorm ------------------------------------------------- */

void train_k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                               const float *w, const float *b, int N, int C)
{
#pragma omp parallel for if ((size_t)N * C > PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int k = 0; k < C; k++)
            s += x[k];
        float mu = s / C, v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int k = 0; k < C; k++) {
            float d = x[k] - mu;
            v += d * d;
        }
        float r = 1.0f / sqrtf(v / C + LN_EPS);
        float *o = out + (size_t)i * C;
#pragma omp simd
        for (int k = 0; k < C; k++)
            o[k] = (x[k] - mu) * r * w[k] + b[k];
        mean[i] = mu;
        rstd[i] = r;
    }
}

/* dinp += d(LayerNorm)/dinp; dw, db += parameter gradients. part holds
 * nthreads * 2C floats of per-thread partial sums. */
void train_k_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const float *w, const float *mean,
                                const float *rstd, int N, int C, float *part, int nthreads)
{
    memset(part, 0, (size_t)nthreads * 2 * C * sizeof(float));
#pragma omp parallel num_threads(nthreads) if ((size_t)N * C > PAR_MIN)
    {
        float *pdw = part + (size_t)train_thread_id() * 2 * C, *pdb = pdw + C;
#pragma omp for
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *d = dout + (size_t)i * C;
            float *dx = dinp + (size_t)i * C;
            float mu = mean[i], r = rstd[i];
            float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
#pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
            for (int k = 0; k < C; k++) {
                float xh = (x[k] - mu) * r, dn = w[k] * d[k];
                dnorm_mean += dn;
                dnorm_norm_mean += dn * xh;
            }
            dnorm_mean /= C;
            dnorm_norm_mean /= C;
#pragma omp simd
            for (int k = 0; k < C; k++) {
                float xh = (x[k] - mu) * r, dn = w[k] * d[k];
                pdb[k] += d[k];
                pdw[k] += xh * d[k];
                dx[k] += (dn - dnorm_mean - xh * dnorm_norm_mean) * r;
            }
        }
    }
    for (int t = 0; t < nthreads; t++) {
        const float *pdw = part + (size_t)t * 2 * C, *pdb = pdw + C;
        for (int k = 0; k < C; k++) {
            dw[k] += pdw[k];
            db[k] += pdb[k];
        }
    }
}

/* ---- layers: matrix products ------------------------------------------ */

/* out[N,OC] = inp[N,IC] w[IC,OC] + bias (+ res when res is non-NULL). */
void train_k_matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                            const float *res, int N, int IC, int OC)
{
#pragma omp parallel for if ((size_t)N * OC > PAR_MIN)
    for (int i = 0; i < N; i++) {
        float *o = out + (size_t)i * OC;
        if (res) {
            const float *r = res + (size_t)i * OC;
            for (int k = 0; k < OC; k++)
                o[k] = r[k] + bias[k];
        } else {
            memcpy(o, bias, (size_t)OC * sizeof(float));
        }
    }
    train_k_gemm(0, 0, N, OC, IC, 1.0f, inp, IC, w, OC, 1.0f, out, OC);
}

/* The same product for a few rows (generation: one token per row). sgemm
 * packs the whole weight matrix on every call, which for a handful of rows
 * costs as much as the product itself; here each thread takes blocks of
 * MR_COLS output columns, and for every MR_ROWS rows streams the block's
 * weight slab (IC x MR_COLS, kept in L2 across the row blocks) into
 * MR_ROWS x MR_COLS accumulators the compiler keeps in vector registers
 * (fmaf: ISO C does not contract a * b + c into a fused multiply-add).
 * Measured on the 6-layer, width-384 shapes at one thread: 70-90 GFLOP/s
 * against sgemm's 40 (8 rows) and 65 (32 rows). */
#define MR_ROWS 4
#define MR_COLS 64
#define MR_AHEAD 8 /* weight rows prefetched ahead */
static void matmul_rows_block(float *out, const float *inp, const float *w, const float *bias, const float *res,
                              int r0, int o0, int IC, int OC)
{
    float acc[MR_ROWS][MR_COLS];
    const float *x = inp + (size_t)r0 * IC;
    for (int r = 0; r < MR_ROWS; r++)
        for (int k = 0; k < MR_COLS; k++)
            acc[r][k] = bias[o0 + k] + (res ? res[(size_t)(r0 + r) * OC + o0 + k] : 0.0f);
    for (int i = 0; i < IC; i++) {
        const float *wr = w + (size_t)i * OC + o0;
        if (i + MR_AHEAD < IC) /* rows of the slab are OC apart: too far for the hardware prefetcher */
            for (int k = 0; k < MR_COLS; k += 16)
                __builtin_prefetch(wr + (size_t)MR_AHEAD * OC + k);
        for (int r = 0; r < MR_ROWS; r++) {
            float xv = x[(size_t)r * IC + i];
            for (int k = 0; k < MR_COLS; k++)
                acc[r][k] = fmaf(xv, wr[k], acc[r][k]);
        }
    }
    for (int r = 0; r < MR_ROWS; r++)
        memcpy(out + (size_t)(r0 + r) * OC + o0, acc[r], sizeof acc[r]);
}

/* One row (the rows left over after the blocks of MR_ROWS). */
static void matmul_row_block(float *out, const float *inp, const float *w, const float *bias, const float *res,
                             int r, int o0, int IC, int OC)
{
    float acc[MR_COLS];
    const float *x = inp + (size_t)r * IC;
    for (int k = 0; k < MR_COLS; k++)
        acc[k] = bias[o0 + k] + (res ? res[(size_t)r * OC + o0 + k] : 0.0f);
    for (int i = 0; i < IC; i++) {
        const float *wr = w + (size_t)i * OC + o0;
        if (i + MR_AHEAD < IC)
            for (int k = 0; k < MR_COLS; k += 16)
                __builtin_prefetch(wr + (size_t)MR_AHEAD * OC + k);
        for (int k = 0; k < MR_COLS; k++)
            acc[k] = fmaf(x[i], wr[k], acc[k]);
    }
    memcpy(out + (size_t)r * OC + o0, acc, sizeof acc);
}

void train_k_matmul_forward_rows(float *out, const float *inp, const float *w, const float *bias,
                                 const float *res, int N, int IC, int OC)
{
    int nblk = OC / MR_COLS, tail = nblk * MR_COLS;
#pragma omp parallel for schedule(static) if ((size_t)N * IC * OC > 4000000)
    for (int bi = 0; bi < nblk; bi++) {
        int r0 = 0;
        for (; r0 + MR_ROWS <= N; r0 += MR_ROWS)
            matmul_rows_block(out, inp, w, bias, res, r0, bi * MR_COLS, IC, OC);
        for (; r0 < N; r0++)
            matmul_row_block(out, inp, w, bias, res, r0, bi * MR_COLS, IC, OC);
    }
    for (int r = 0; r < N && tail < OC; r++) /* the last OC % MR_COLS columns */
        for (int k = tail; k < OC; k++) {
            float a = bias[k] + (res ? res[(size_t)r * OC + k] : 0.0f);
            for (int i = 0; i < IC; i++)
                a += inp[(size_t)r * IC + i] * w[(size_t)i * OC + k];
            out[(size_t)r * OC + k] = a;
        }
}

/* dinp = dout w^T (overwritten; skipped when NULL); dw += inp^T dout;
 * db += column sums of dout. */
void train_k_matmul_backward(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, int N, int IC, int OC)
{
    if (dinp)
        train_k_gemm(0, 1, N, IC, OC, 1.0f, dout, OC, w, OC, 0.0f, dinp, IC);
    train_k_gemm(1, 0, IC, OC, N, 1.0f, inp, IC, dout, OC, 1.0f, dw, OC);
    if (db) {
        /* Column blocks per thread; rows streamed, columns vectorised. */
        int nblk = (OC + 63) / 64;
#pragma omp parallel for if ((size_t)N * OC > PAR_MIN)
        for (int bi = 0; bi < nblk; bi++) {
            int k0 = bi * 64, k1 = k0 + 64 < OC ? k0 + 64 : OC;
            float acc[64] = {0};
            for (int i = 0; i < N; i++) {
                const float *d = dout + (size_t)i * OC;
                for (int k = k0; k < k1; k++)
                    acc[k - k0] += d[k];
            }
            for (int k = k0; k < k1; k++)
                db[k] += acc[k - k0];
        }
    }
}

/* ---- exp and tanh that vectorise ------------------------------------- */

/* e^x for x <= 88, to about 2 ulp: x = n ln2 + r, |r| <= ln2/2, e^r by
 * Cephes' degree-6 polynomial, 2^n put into the exponent bits. Plain C
 * that the compiler vectorises (libm's expf is a call per element). Inputs
 * below -80 give e^-80 ~ 2e-35 instead of less: harmless in softmax and
 * GELU, and it keeps results out of the denormals, which are slow. */
static inline float exp_fast(float x)
{
    x = x < -80.0f ? -80.0f : x > 88.0f ? 88.0f : x;
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits;
    memcpy(&bits, &p, 4);
    bits += (int32_t)n * (1 << 23);
    memcpy(&p, &bits, 4);
    return p;
}

/* tanh(u) = 1 - 2 / (e^{2u} + 1): absolute error ~1e-7, which is what
 * GELU's 1 + tanh needs. */
void train_k_softmax(float *x, int n)
{
    float mx = -INFINITY, sum = 0.0f;
    for (int i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) {
        x[i] = exp_fast(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

static inline float tanh_fast(float u) { return 1.0f - 2.0f / (exp_fast(2.0f * u) + 1.0f); }

/* ---- dropout -------------------------------------------------------------- */

/* The keep decision of element i under key: a counter-based hash, so the
 * backward pass regenerates the forward's mask instead of storing it. */
#define DROP_STRIDE 0x9e3779b97f4a7c15ULL
static inline int drop_keep(uint64_t key, uint64_t i, uint32_t threshold)
{
    uint64_t z = key + (i + 1) * DROP_STRIDE;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (uint32_t)((z ^ (z >> 31)) >> 32) >= threshold;
}

static inline uint32_t drop_threshold(float p) { return (uint32_t)((double)p * 4294967296.0); }

uint64_t train_k_dropout_key(uint64_t seed, uint64_t iter, uint64_t site)
{
    uint64_t z = seed ^ (iter * 0xd1b54a32d192ed03ULL) ^ (site * 0xaef17502108ef2d9ULL);
    z = (z ^ (z >> 33)) * 0xff51afd7ed558ccdULL;
    z = (z ^ (z >> 33)) * 0xc4ceb9fe1a85ec53ULL;
    return z ^ (z >> 33);
}

/* drop_keep hashes key + (i + 1) * stride: moving the key by first
 * strides moves the index by first. */
uint64_t train_k_dropout_key_at(uint64_t key, uint64_t first) { return key + first * DROP_STRIDE; }

void train_k_dropout(float *x, size_t n, float p, uint64_t key)
{
    uint32_t th = drop_threshold(p);
    float scale = 1.0f / (1.0f - p);
#pragma omp parallel for simd if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] = drop_keep(key, i, th) ? x[i] * scale : 0.0f;
}

/* ---- layers: GELU (tanh approximation, as GPT-2) ---------------------- */

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

void train_k_gelu_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for simd if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], u = GELU_SCALE * (x + 0.044715f * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanh_fast(u));
    }
}

/* d *= gelu'(inp), in place. */
void train_k_gelu_backward(float *d, const float *inp, size_t n)
{
#pragma omp parallel for simd if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = tanh_fast(u), sech2 = 1.0f - th * th;
        float g = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        d[i] *= g;
    }
}

/* out = gelu(x), and x becomes gelu'(x), for a backward pass that then
 * only multiplies (train_k_mul): the tanh is computed once. */
void train_k_gelu_forward_dx(float *out, float *x, size_t n)
{
#pragma omp parallel for simd if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float xi = x[i], u = GELU_SCALE * (xi + 0.044715f * xi * xi * xi);
        float th = tanh_fast(u), sech2 = 1.0f - th * th;
        out[i] = 0.5f * xi * (1.0f + th);
        x[i] = 0.5f * (1.0f + th) + 0.5f * xi * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * xi * xi);
    }
}

void train_k_mul(float *d, const float *g, size_t n)
{
#pragma omp parallel for simd if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        d[i] *= g[i];
}

/* ---- layers: causal self-attention ------------------------------------- */

static inline float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* qkv (B,T,3C) holds q|k|v per token, heads side by side inside each.
 * out (B,T,C) = softmax(q k^T / sqrt(hs), causal) v per head; lse
 * (B,NH,T) keeps each row's log-sum-exp for the backward pass. rows holds
 * nthreads * T floats. */
void train_k_attention_forward_ref(float *out, float *lse, const float *qkv, int B, int T, int C,
                                   int NH, float *rows, int nthreads)
{
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = 3 * (size_t)C;
#pragma omp parallel for collapse(2) schedule(dynamic, 8) num_threads(nthreads) if ((size_t)B * T * T * C > 4 * PAR_MIN)
    for (int bh = 0; bh < B * NH; bh++) {
        for (int t = 0; t < T; t++) {
            int b = bh / NH, h = bh % NH;
            float *s = rows + (size_t)train_thread_id() * T;
            const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            const float *q = base + (size_t)t * C3;
            float mx = -INFINITY;
            for (int t2 = 0; t2 <= t; t2++) {
                s[t2] = dot(q, base + (size_t)t2 * C3 + C, hs) * scale;
                if (s[t2] > mx)
                    mx = s[t2];
            }
            float sum = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) {
                s[t2] = expf(s[t2] - mx);
                sum += s[t2];
            }
            float inv = 1.0f / sum;
            float *o = out + ((size_t)b * T + t) * C + (size_t)h * hs;
            for (int i = 0; i < hs; i++)
                o[i] = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *v = base + (size_t)t2 * C3 + 2 * C;
                float p = s[t2] * inv;
#pragma omp simd
                for (int i = 0; i < hs; i++)
                    o[i] += p * v[i];
            }
            lse[(size_t)bh * T + t] = mx + logf(sum);
        }
    }
}

/* dqkv (B,T,3C) = gradient of the attention from dout (B,T,C), recomputing
 * the probabilities from lse. dqkv is overwritten. */
void train_k_attention_backward_ref(float *dqkv, const float *dout, const float *qkv,
                                    const float *out, const float *lse, int B, int T, int C, int NH)
{
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = 3 * (size_t)C;
    memset(dqkv, 0, (size_t)B * T * C3 * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)B * T * T * C > 4 * PAR_MIN)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
        float *dbase = dqkv + (size_t)b * T * C3 + (size_t)h * hs;
        for (int t = 0; t < T; t++) {
            const float *q = base + (size_t)t * C3;
            const float *dO = dout + ((size_t)b * T + t) * C + (size_t)h * hs;
            const float *O = out + ((size_t)b * T + t) * C + (size_t)h * hs;
            float *dq = dbase + (size_t)t * C3;
            float D = dot(dO, O, hs), l = lse[(size_t)bh * T + t];
            for (int t2 = 0; t2 <= t; t2++) {
                const float *k = base + (size_t)t2 * C3 + C, *v = k + C;
                float *dk = dbase + (size_t)t2 * C3 + C, *dv = dk + C;
                float p = expf(dot(q, k, hs) * scale - l);
                float ds = p * (dot(dO, v, hs) - D) * scale;
#pragma omp simd
                for (int i = 0; i < hs; i++) {
                    dv[i] += p * dO[i];
                    dq[i] += ds * k[i];
                    dk[i] += ds * q[i];
                }
            }
        }
    }
}

/* The same attention fused, for training: threads take heads. Per head, K
 * (and in the backward pass V) is transposed once into scratch and the
 * other operands copied into rows padded to whole register blocks; every
 * product then runs as register-blocked loops the compiler vectorises
 * (ATT_MR rows x ATT_NC columns of accumulators, fmaf so that each step
 * is one fused multiply-add). Only the causal part is computed, rounded up
 * to whole blocks, and nothing T x T is kept: the forward pass holds
 * ATT_MR rows of scores at a time, the backward pass ATT_RB rows of
 * probabilities and their gradients. On sgemm the same products ran at a
 * third of the machine's rate or less: each call packs its operands, the
 * heads are small (64 x 64 blocks at width 32), and a causal block is half
 * masked. */
#if defined(__AVX512F__)
#define ATT_NC 32 /* columns per register block: two vectors */
#define ATT_MR 8  /* rows per register block */
#else
#define ATT_NC 16
#define ATT_MR 4
#endif
#define ATT_RB 64 /* query rows per block of the backward pass */
#define ATT_V 16  /* softmax columns per step: a whole vector (or two) */
_Static_assert(ATT_NC % ATT_V == 0, "the softmax steps must end inside the computed columns");

static int round_up(int n, int m) { return (n + m - 1) / m * m; }

/* The sum and the maximum of ATT_V lanes, halving: a few vector steps
 * instead of a chain of ATT_V scalar ones (float addition is not
 * reassociated for us). v is overwritten. */
static inline float lanes_sum(float *v)
{
    for (int w = ATT_V / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++)
            v[k] += v[k + w];
    return v[0];
}

static inline float lanes_max(float *v)
{
    for (int w = ATT_V / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++)
            v[k] = v[k + w] > v[k] ? v[k + w] : v[k];
    return v[0];
}

/* The distance between rows of the T-wide scratch arrays (K^T, V^T and the
 * score rows): whole register blocks and one cache line more. At a power of
 * two (T = 256: 1 KiB) a block's column of rows would fall into a few L1
 * sets and evict itself. */
#define ATT_PAD 16
static int att_ld(int T) { return round_up(T, ATT_NC) + ATT_PAD; }

size_t train_k_attention_scratch(int T, int hs)
{
    size_t Tp = (size_t)round_up(T, ATT_NC), hp = (size_t)round_up(hs, ATT_NC), Tl = (size_t)att_ld(T);
    return 2 * (size_t)hs * Tl + 3 * Tp * hp + 2 * (size_t)ATT_RB * Tl;
}

/* Xt (hs, Tp; rows ldt apart) = scale X^T for the T rows of X (ld apart),
 * zero past T. */
static void att_transpose(float *Xt, int ldt, int Tp, const float *X, size_t ld, int T, int hs, float scale)
{
    /* 16 rows at a time: each output row gets a whole vector per step,
     * and the 16 input rows stay in L1 while d sweeps them */
    int j0 = 0;
    for (; j0 + 16 <= T; j0 += 16)
        for (int d = 0; d < hs; d++) {
            float *o = Xt + (size_t)d * ldt + j0;
            for (int jj = 0; jj < 16; jj++)
                o[jj] = X[(j0 + jj) * ld + d] * scale;
        }
    for (int d = 0; d < hs; d++)
        for (int j = j0; j < Tp; j++)
            Xt[(size_t)d * ldt + j] = j < T ? X[j * ld + d] * scale : 0.0f;
}

/* The n rows of X (ld apart, hs wide) as rows whole register blocks
 * wide: X itself when hs is a multiple of ATT_NC, else a copy in Xp (n,
 * hp) zero-padded to hp; *ldx gets the distance between the rows. */
static const float *att_rows(float *Xp, int hp, const float *X, size_t ld, int n, int hs, size_t *ldx)
{
    if (hs == hp) {
        *ldx = ld;
        return X;
    }
    for (int j = 0; j < n; j++) {
        float *o = Xp + (size_t)j * hp;
        const float *x = X + j * ld;
        for (int d = 0; d < hs; d++) /* a loop, not memcpy: a library call per short row costs more */
            o[d] = x[d];
        for (int d = hs; d < hp; d++)
            o[d] = 0.0f;
    }
    *ldx = (size_t)hp;
    return Xp;
}

/* Stores (add 0) or adds (add 1) the first w <= ATT_NC values of a into y. */
static inline void att_put(float *y, const float *a, int w, int add)
{
    if (w == ATT_NC) {
        if (add)
            for (int k = 0; k < ATT_NC; k++)
                y[k] += a[k];
        else
            for (int k = 0; k < ATT_NC; k++)
                y[k] = a[k];
    } else {
        for (int k = 0; k < w; k++)
            y[k] = add ? y[k] + a[k] : a[k];
    }
}

/* S[r][0..nc) = sum_d A[r][d] Bt[d][j] for the mr <= ATT_MR rows of A (lda
 * apart); nc a multiple of ATT_NC, Bt (hs, ldb) with ldb >= nc. */
static void att_rows_by_cols(float *S, int lds, const float *A, size_t lda, const float *Bt, int ldb, int hs,
                             int nc, int mr)
{
    const float *a[ATT_MR];
    for (int r = 0; r < ATT_MR; r++) /* missing rows repeat the last: computed, not stored */
        a[r] = A + (size_t)(r < mr ? r : mr - 1) * lda;
    for (int j0 = 0; j0 < nc; j0 += ATT_NC) {
        float acc[ATT_MR][ATT_NC] = {{0}};
        for (int d = 0; d < hs; d++) {
            const float *b = Bt + (size_t)d * ldb + j0;
            for (int r = 0; r < ATT_MR; r++) {
                float x = a[r][d];
                for (int k = 0; k < ATT_NC; k++)
                    acc[r][k] = fmaf(x, b[k], acc[r][k]);
            }
        }
        for (int r = 0; r < mr; r++)
            memcpy(S + (size_t)r * lds + j0, acc[r], sizeof acc[r]);
    }
}

/* O[r][0..hs) = scale[r] sum_{j<n} P[r][j] X[j][.] for the mr <= ATT_MR
 * rows of P (ldp apart): X rows ldx apart, whole blocks wide (hp); O rows
 * ldo apart; scale NULL: 1. */
static void att_rows_by_rows(float *O, size_t ldo, int hs, const float *P, int ldp, const float *X, size_t ldx,
                             int hp, int n, int mr, const float *scale)
{
    const float *p[ATT_MR];
    for (int r = 0; r < ATT_MR; r++)
        p[r] = P + (size_t)(r < mr ? r : mr - 1) * ldp;
    for (int c0 = 0; c0 < hp; c0 += ATT_NC) {
        float acc[ATT_MR][ATT_NC] = {{0}};
        for (int j = 0; j < n; j++) {
            const float *x = X + j * ldx + c0;
            for (int r = 0; r < ATT_MR; r++) {
                float w = p[r][j];
                for (int k = 0; k < ATT_NC; k++)
                    acc[r][k] = fmaf(w, x[k], acc[r][k]);
            }
        }
        for (int r = 0; r < mr; r++) {
            if (scale)
                for (int k = 0; k < ATT_NC; k++)
                    acc[r][k] *= scale[r];
            att_put(O + r * ldo + c0, acc[r], hs - c0 < ATT_NC ? hs - c0 : ATT_NC, 0);
        }
    }
}

/* Y[j][0..hs) (+)= sum_r W[r][j] X[r][.] for the keys j < n, over the rb
 * query rows r0.. of W (ldw apart, zero where r0 + r < j) and X (rows ldx
 * apart, hp wide); Y rows ldy apart. Keys from r0 on are new to this block
 * of rows and stored, the earlier ones added to; the rows before key j are
 * skipped. r0 must be a multiple of ATT_MR. */
static void att_cols_by_rows(float *Y, size_t ldy, int hs, const float *W, int ldw, const float *X, size_t ldx,
                             int hp, int n, int rb, int r0)
{
    for (int j0 = 0; j0 < n; j0 += ATT_MR) {
        int rlo = j0 > r0 ? j0 - r0 : 0, nj = n - j0 < ATT_MR ? n - j0 : ATT_MR;
        for (int c0 = 0; c0 < hp; c0 += ATT_NC) {
            float acc[ATT_MR][ATT_NC] = {{0}};
            for (int r = rlo; r < rb; r++) {
                const float *x = X + r * ldx + c0, *w = W + (size_t)r * ldw + j0;
                for (int jj = 0; jj < ATT_MR; jj++) {
                    float wv = w[jj];
                    for (int k = 0; k < ATT_NC; k++)
                        acc[jj][k] = fmaf(wv, x[k], acc[jj][k]);
                }
            }
            for (int jj = 0; jj < nj; jj++)
                att_put(Y + (j0 + jj) * ldy + c0, acc[jj], hs - c0 < ATT_NC ? hs - c0 : ATT_NC, j0 < r0);
        }
    }
}

void train_k_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C,
                               int NH, float *scratch, int nthreads, float drop, uint64_t key)
{
    uint32_t th = drop_threshold(drop);
    float dscale = 1.0f / (1.0f - drop);
    int hs = C / NH, Tp = round_up(T, ATT_NC), Tl = att_ld(T), hp = round_up(hs, ATT_NC);
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = 3 * (size_t)C, per = train_k_attention_scratch(T, hs);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if ((size_t)B * T * T * C > 4 * PAR_MIN)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        float *Kt = scratch + (size_t)train_thread_id() * per, *Vp = Kt + (size_t)hs * Tl, *S = Vp + (size_t)Tp * hp;
        const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
        float *lrow = lse + (size_t)bh * T;
        size_t ldv;
        att_transpose(Kt, Tl, Tp, base + C, C3, T, hs, scale);
        const float *V = att_rows(Vp, hp, base + 2 * C, C3, T, hs, &ldv);
        for (int r0 = 0; r0 < T; r0 += ATT_MR) {
            int mr = T - r0 < ATT_MR ? T - r0 : ATT_MR, n = r0 + mr;
            float inv[ATT_MR];
            att_rows_by_cols(S, Tl, base + r0 * C3, C3, Kt, Tl, hs, round_up(n, ATT_NC), mr);
            for (int r = 0; r < mr; r++) {
                float *row = S + (size_t)r * Tl;
                int i = r0 + r, m = i + 1, mv = round_up(m, ATT_V);
                /* whole vectors up to mv (within the computed columns),
                 * the keys past i masked: no scalar tail per row; lanes
                 * reduced once at the end */
                float vmx[ATT_V], vsum[ATT_V];
                for (int k = 0; k < ATT_V; k++)
                    vmx[k] = -INFINITY, vsum[k] = 0.0f;
                for (int j0 = 0; j0 < mv; j0 += ATT_V)
                    for (int k = 0; k < ATT_V; k++)
                        vmx[k] = j0 + k < m && row[j0 + k] > vmx[k] ? row[j0 + k] : vmx[k];
                float mx = lanes_max(vmx);
                for (int j0 = 0; j0 < mv; j0 += ATT_V)
                    for (int k = 0; k < ATT_V; k++) {
                        float e = j0 + k < m ? exp_fast(row[j0 + k] - mx) : 0.0f;
                        row[j0 + k] = e;
                        vsum[k] += e;
                    }
                float sum = lanes_sum(vsum);
                /* the rows stay unnormalised: the product's rows are scaled */
                inv[r] = 1.0f / sum;
                if (drop > 0.0f) {
                    uint64_t base_i = ((uint64_t)bh * T + i) * T;
                    inv[r] *= dscale;
                    for (int j = 0; j < m; j++)
                        row[j] = drop_keep(key, base_i + j, th) ? row[j] : 0.0f;
                }
                for (int j = mv; j < n; j++)
                    row[j] = 0.0f;
                lrow[i] = mx + logf(sum);
            }
            att_rows_by_rows(out + ((size_t)b * T + r0) * C + (size_t)h * hs, C, hs, S, Tl, V, ldv, hp, n, mr, inv);
        }
    }
}

/* Backward of train_k_attention_forward, per head and block of ATT_RB
 * query rows: P from the kept lse, dP = dO V^T, dS = P (dP - D) with D =
 * rowsum(dO * O), then dQ = dS K for the block's rows and dK += dS^T Q,
 * dV += P^T dO for the keys it sees (stored by the first block that sees
 * them, so dqkv needs no clearing). With
 * dropout the probabilities are masked after the softmax (the mask
 * regenerated from key), and D = rowsum(dO * O) still holds. dqkv is
 * overwritten. */
void train_k_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                                const float *lse, int B, int T, int C, int NH, float *scratch,
                                int nthreads, float drop, uint64_t key)
{
    uint32_t th = drop_threshold(drop);
    float dscale = 1.0f / (1.0f - drop);
    int hs = C / NH, Tp = round_up(T, ATT_NC), Tl = att_ld(T), hp = round_up(hs, ATT_NC);
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = 3 * (size_t)C, per = train_k_attention_scratch(T, hs), Th = (size_t)Tp * hp;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if ((size_t)B * T * T * C > 4 * PAR_MIN)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        float *Kt = scratch + (size_t)train_thread_id() * per, *Vt = Kt + (size_t)hs * Tl;
        float *Kp = Vt + (size_t)hs * Tl, *Qp = Kp + Th, *dOp = Qp + Th, *P = dOp + Th, *dS = P + (size_t)ATT_RB * Tl;
        const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
        const float *dObase = dout + (size_t)b * T * C + (size_t)h * hs;
        const float *Obase = out + (size_t)b * T * C + (size_t)h * hs;
        float *dbase = dqkv + (size_t)b * T * C3 + (size_t)h * hs;
        const float *lrow = lse + (size_t)bh * T;
        size_t ldk, ldq, ldo;
        att_transpose(Kt, Tl, Tp, base + C, C3, T, hs, scale);
        att_transpose(Vt, Tl, Tp, base + 2 * C, C3, T, hs, 1.0f);
        const float *K = att_rows(Kp, hp, base + C, C3, T, hs, &ldk);
        const float *Q = att_rows(Qp, hp, base, C3, T, hs, &ldq);
        const float *dO = att_rows(dOp, hp, dObase, C, T, hs, &ldo);
        for (int r0 = 0; r0 < T; r0 += ATT_RB) {
            int rb = T - r0 < ATT_RB ? T - r0 : ATT_RB, n = r0 + rb, nc = round_up(n, ATT_NC);
            for (int s0 = 0; s0 < rb; s0 += ATT_MR) {
                int mr = rb - s0 < ATT_MR ? rb - s0 : ATT_MR, ns = round_up(r0 + s0 + mr, ATT_NC);
                att_rows_by_cols(P + (size_t)s0 * Tl, Tl, base + (r0 + s0) * C3, C3, Kt, Tl, hs, ns, mr);
                att_rows_by_cols(dS + (size_t)s0 * Tl, Tl, dObase + (size_t)(r0 + s0) * C, C, Vt, Tl, hs, ns, mr);
            }
            /* D for the block's rows first: the rows of O are not in
             * cache, and here their loads overlap */
            float Dr[ATT_RB];
            for (int r = 0; r < rb; r++)
                Dr[r] = dot(dObase + (size_t)(r0 + r) * C, Obase + (size_t)(r0 + r) * C, hs);
            for (int r = 0; r < rb; r++) {
                float *prow = P + (size_t)r * Tl, *drow = dS + (size_t)r * Tl;
                int i = r0 + r, m = i + 1, mv = round_up(m, ATT_V);
                float l = lrow[i], D = Dr[r];
                int done = mv; /* columns written; the rest of the block's are zeroed below */
                if (drop > 0.0f) {
                    /* prow becomes the dropped P' (for dV); dP = mask dP' / (1-p). */
                    uint64_t base_i = ((uint64_t)bh * T + i) * T;
                    for (int j = 0; j < m; j++) {
                        float pj = exp_fast(prow[j] - l), mj = drop_keep(key, base_i + j, th) ? dscale : 0.0f;
                        prow[j] = pj * mj;
                        drow[j] = pj * (drow[j] * mj - D) * scale;
                    }
                    done = m;
                } else {
                    /* whole vectors up to mv, as in the forward pass */
                    for (int j0 = 0; j0 < mv; j0 += ATT_V)
                        for (int k = 0; k < ATT_V; k++) {
                            int j = j0 + k;
                            float pj = exp_fast(prow[j] - l);
                            drow[j] = j < m ? pj * (drow[j] - D) * scale : 0.0f;
                            prow[j] = j < m ? pj : 0.0f;
                        }
                }
                for (int j = done; j < nc; j++)
                    prow[j] = drow[j] = 0.0f;
            }
            for (int s0 = 0; s0 < rb; s0 += ATT_MR) {
                int mr = rb - s0 < ATT_MR ? rb - s0 : ATT_MR;
                att_rows_by_rows(dbase + (r0 + s0) * C3, C3, hs, dS + (size_t)s0 * Tl, Tl, K, ldk, hp,
                                 r0 + s0 + mr, mr, NULL);
            }
            att_cols_by_rows(dbase + C, C3, hs, dS, Tl, Q + r0 * ldq, ldq, hp, n, rb, r0);
            att_cols_by_rows(dbase + 2 * C, C3, hs, P, Tl, dO + r0 * ldo, ldo, hp, n, rb, r0);
        }
    }
}

/* ---- layers: classifier and cross-entropy ----------------------------- */

/* Per row: lse = log-sum-exp of the logits; losses = w * (lse - logit[y]).
 * Returns sum of the losses (double). */
double train_k_crossentropy_forward(float *losses, float *lse, const float *logits,
                                    const int32_t *targets, const float *weights, int N, int V)
{
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) if ((size_t)N * V > PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int k = 0; k < V; k++)
            mx = z[k] > mx ? z[k] : mx;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int k = 0; k < V; k++)
            s += exp_fast(z[k] - mx);
        lse[i] = mx + logf(s);
        float w = weights ? weights[i] : 1.0f;
        if (targets[i] < 0)
            w = 0.0f;
        losses[i] = w != 0.0f ? w * (lse[i] - z[targets[i]]) : 0.0f;
        total += losses[i];
    }
    return total;
}

/* logits (N,V) becomes dlogits = scale * w * (softmax - onehot(y)). */
void train_k_crossentropy_backward(float *logits, const float *lse, const int32_t *targets,
                                   const float *weights, float scale, int N, int V)
{
#pragma omp parallel for if ((size_t)N * V > PAR_MIN)
    for (int i = 0; i < N; i++) {
        float *z = logits + (size_t)i * V;
        float w = weights ? weights[i] : 1.0f;
        if (targets[i] < 0)
            w = 0.0f;
        float c = scale * w;
        if (c == 0.0f) {
            memset(z, 0, (size_t)V * sizeof(float));
            continue;
        }
        float l = lse[i];
#pragma omp simd
        for (int k = 0; k < V; k++)
            z[k] = c * exp_fast(z[k] - l);
        z[targets[i]] -= c;
    }
}

