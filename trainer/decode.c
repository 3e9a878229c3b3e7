/* decode.c — generation with a key/value cache: one new position per call.
 *
 * Generation feeds one token per row at a time; recomputing the whole
 * prefix for each would cost O(T^2) forwards. The cache keeps every
 * layer's keys and values of the positions fed, so a step is the model on
 * B rows: the same layer kernels as training (LayerNorm, sgemm products,
 * GELU), plus attention of the new query over the cached keys. The cache
 * is apart from the model, so one set of weights can serve several caches
 * and a frozen reference model needs none of the training buffers.
 *
 * Each row has its own position, so rows holding prompts of different
 * lengths advance together (a batch of RL rollouts or best-of-N samples
 * shares every matrix product); a row may also be fed alone while the
 * others wait (train_model_decode_rows).
 *
 * Workload: B of 1..64 rows, T up to the context; a step is dominated by
 * reading the weights once (B x C by C x 4C products) and each row's
 * cached keys and values. So the products run on a few-row kernel
 * (train_k_matmul_forward_rows: sgemm would pack every weight matrix at
 * every step), and the cache keeps a contiguous (T, head size) slab per
 * row and head, read by two matrix-vector products per head (scores, then
 * the weighted values), rows and heads spread over the threads.
 */
#include "trainer/internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int train_kv_init(train_kv_t *kv, const train_model_t *m, int B, int T, gl_err_t *err)
{
    memset(kv, 0, sizeof *kv);
    const train_config_t *c = &m->cfg;
    if (B < 1 || T < 1 || T > c->n_ctx)
        return gl_err_set(err, GL_EINVAL, "kv cache: %d rows x %d positions invalid (context %d)", B, T,
                          c->n_ctx);
    kv->B = B;
    kv->T = T;
    kv->L = c->n_layer;
    kv->C = c->n_embd;
    kv->V = c->vocab_size;
    size_t C = kv->C, cache = (size_t)kv->L * B * T * C;
    size_t step = (size_t)B * (C * 11 + 2 + (size_t)kv->V) + (size_t)B * c->n_head * T;
    kv->k = malloc(cache * sizeof(float));
    kv->v = malloc(cache * sizeof(float));
    kv->mem = malloc(step * sizeof(float));
    kv->pos = calloc((size_t)B, sizeof *kv->pos);
    if (!kv->k || !kv->v || !kv->mem || !kv->pos) {
        train_kv_free(kv);
        return gl_err_set(err, GL_ENOMEM, "kv cache: out of memory for %d rows x %d positions", B, T);
    }
    float *p = kv->mem;
    kv->x = p, p += B * C;
    kv->ln = p, p += B * C;
    kv->mean = p, p += B;
    kv->rstd = p, p += B;
    kv->qkv = p, p += B * 3 * C;
    kv->att = p, p += B * C;
    kv->fch = p, p += B * 4 * C;
    kv->logits = p, p += (size_t)B * kv->V;
    kv->scores = p;
    return GL_OK;
}

void train_kv_free(train_kv_t *kv)
{
    if (!kv)
        return;
    free(kv->k);
    free(kv->v);
    free(kv->mem);
    free(kv->pos);
    memset(kv, 0, sizeof *kv);
}

void train_kv_reset(train_kv_t *kv)
{
    kv->len = 0;
    memset(kv->pos, 0, (size_t)kv->B * sizeof *kv->pos);
}

int train_model_decode(const train_model_t *m, train_kv_t *kv, const int32_t *tokens, gl_err_t *err)
{
    return train_model_decode_rows(m, kv, tokens, NULL, err);
}

int train_model_decode_rows(const train_model_t *m, train_kv_t *kv, const int32_t *tokens, const uint8_t *feed,
                            gl_err_t *err)
{
    const train_config_t *c = &m->cfg;
    int B = kv->B, C = c->n_embd, NH = c->n_head, V = c->vocab_size, hs = C / NH;
    if (kv->C != C || kv->L != c->n_layer || kv->V != V)
        return gl_err_set(err, GL_EINVAL, "decode: the cache was made for another model");
    for (int b = 0; b < B; b++) {
        if (feed && !feed[b])
            continue;
        if (kv->pos[b] >= kv->T)
            return gl_err_set(err, GL_ERANGE, "decode: row %d of the cache full at %d positions", b, kv->T);
        if (tokens[b] < 0 || tokens[b] >= V)
            return gl_err_set(err, GL_ERANGE, "decode: token %d of row %d outside vocab %d", tokens[b], b, V);
    }
    const train_params_t *p = &m->params;
    float scale = 1.0f / sqrtf((float)hs);
    /* a row not fed this step computes at its last position (results
     * discarded, cache untouched): cheaper than compacting the batch */
    for (int b = 0; b < B; b++) {
        int pos = kv->pos[b] < kv->T ? kv->pos[b] : kv->T - 1;
        int32_t tok = feed && !feed[b] ? 0 : tokens[b];
        for (int i = 0; i < C; i++)
            kv->x[(size_t)b * C + i] = p->t[TRAIN_WTE][(size_t)tok * C + i] + p->t[TRAIN_WPE][(size_t)pos * C + i];
    }
    for (int l = 0; l < c->n_layer; l++) {
        size_t lC = (size_t)l * C;
        train_k_layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, p->t[TRAIN_LN1W] + lC,
                                  p->t[TRAIN_LN1B] + lC, B, C);
        train_k_matmul_forward_rows(kv->qkv, kv->ln, p->t[TRAIN_QKVW] + lC * 3 * C, p->t[TRAIN_QKVB] + lC * 3,
                                    NULL, B, C, 3 * C);
        /* the new keys and values into the cache, then the attention of
         * each row's query over its cached positions, two matrix-vector
         * products per head over contiguous (T, hs) slabs: rows and heads
         * are independent, so they share the threads */
        size_t work = 0;
        for (int b = 0; b < B; b++) {
            if (feed && !feed[b])
                continue;
            for (int h = 0; h < NH; h++) {
                size_t at = ((((size_t)l * B + b) * NH + h) * kv->T + (size_t)kv->pos[b]) * hs;
                const float *src = kv->qkv + (size_t)b * 3 * C + (size_t)h * hs;
                memcpy(kv->k + at, src + C, (size_t)hs * sizeof(float));
                memcpy(kv->v + at, src + 2 * C, (size_t)hs * sizeof(float));
            }
            work += (size_t)(kv->pos[b] + 1) * C;
        }
#pragma omp parallel for collapse(2) schedule(static) if (work > 32768)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                if (feed && !feed[b])
                    continue;
                int n = kv->pos[b] + 1;
                size_t slab = (((size_t)l * B + b) * NH + h) * kv->T * hs;
                const float *qh = kv->qkv + (size_t)b * 3 * C + (size_t)h * hs;
                float *s = kv->scores + ((size_t)b * NH + h) * kv->T;
                cblas_sgemv(CblasRowMajor, CblasNoTrans, n, hs, scale, kv->k + slab, hs, qh, 1, 0.0f, s, 1);
                train_k_softmax(s, n);
                cblas_sgemv(CblasRowMajor, CblasTrans, n, hs, 1.0f, kv->v + slab, hs, s, 1, 0.0f,
                            kv->att + (size_t)b * C + (size_t)h * hs, 1);
            }
        /* x += attproj(att); x += fcproj(gelu(fc(ln2(x)))): the residual
         * products write over x (the fill reads each element first). */
        train_k_matmul_forward_rows(kv->x, kv->att, p->t[TRAIN_ATTPROJW] + lC * C, p->t[TRAIN_ATTPROJB] + lC,
                                    kv->x, B, C, C);
        train_k_layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, p->t[TRAIN_LN2W] + lC,
                                  p->t[TRAIN_LN2B] + lC, B, C);
        train_k_matmul_forward_rows(kv->fch, kv->ln, p->t[TRAIN_FCW] + lC * 4 * C, p->t[TRAIN_FCB] + lC * 4,
                                    NULL, B, C, 4 * C);
        train_k_gelu_forward(kv->fch, kv->fch, (size_t)B * 4 * C);
        train_k_matmul_forward_rows(kv->x, kv->fch, p->t[TRAIN_FCPROJW] + lC * 4 * C, p->t[TRAIN_FCPROJB] + lC,
                                    kv->x, B, 4 * C, C);
    }
    train_k_layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, p->t[TRAIN_LNFW], p->t[TRAIN_LNFB], B, C);
    train_k_gemm(0, 1, B, V, C, 1.0f, kv->ln, C, p->t[TRAIN_WTE], C, 0.0f, kv->logits, V);
    kv->len = 0;
    for (int b = 0; b < B; b++) {
        if (!feed || feed[b])
            kv->pos[b]++;
        kv->len = kv->pos[b] > kv->len ? kv->pos[b] : kv->len;
    }
    return GL_OK;
}

/* ---- prefill: n positions per row at once ----------------------------------- */

#define PREFILL_ROWS 1024 /* rows (positions x batch rows) per prefill chunk */

/* A product over many rows goes to sgemm, over a few to the few-row kernel. */
static void matmul(float *out, const float *inp, const float *w, const float *bias, const float *res, int N, int IC,
                   int OC)
{
    if (N >= 64)
        train_k_matmul_forward(out, inp, w, bias, res, N, IC, OC);
    else
        train_k_matmul_forward_rows(out, inp, w, bias, res, N, IC, OC);
}

/* Positions pos..pos+n-1 of every row (tokens (B, n) with row stride ld);
 * checked by the caller. */
static int prefill_chunk(const train_model_t *m, train_kv_t *kv, const int32_t *tokens, int ld, int n, gl_err_t *err)
{
    const train_config_t *c = &m->cfg;
    int B = kv->B, C = c->n_embd, NH = c->n_head, hs = C / NH, p0 = kv->pos[0];
    const train_params_t *p = &m->params;
    size_t N = (size_t)B * n, S = (size_t)n * (p0 + n);
    int nth = 1;
#ifdef _OPENMP
    nth = omp_get_max_threads();
#endif
    float *mem = malloc((N * (C * 10 + 2) + (size_t)nth * S) * sizeof(float));
    if (!mem)
        return gl_err_set(err, GL_ENOMEM, "prefill: out of memory for %d rows x %d positions", B, n);
    float *x = mem, *ln = x + N * C, *qkv = ln + N * C, *att = qkv + N * 3 * C, *fch = att + N * C,
          *mean = fch + N * 4 * C, *rstd = mean + N, *scores = rstd + N;
    float scale = 1.0f / sqrtf((float)hs);
    for (size_t r = 0; r < N; r++) {
        const float *e = p->t[TRAIN_WTE] + (size_t)tokens[(r / (size_t)n) * (size_t)ld + r % (size_t)n] * C,
                    *pe = p->t[TRAIN_WPE] + (size_t)(p0 + (int)(r % (size_t)n)) * C;
        for (int i = 0; i < C; i++)
            x[r * C + i] = e[i] + pe[i];
    }
    for (int l = 0; l < c->n_layer; l++) {
        size_t lC = (size_t)l * C;
        train_k_layernorm_forward(ln, mean, rstd, x, p->t[TRAIN_LN1W] + lC, p->t[TRAIN_LN1B] + lC, (int)N, C);
        matmul(qkv, ln, p->t[TRAIN_QKVW] + lC * 3 * C, p->t[TRAIN_QKVB] + lC * 3, NULL, (int)N, C, 3 * C);
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                size_t slab = (((size_t)l * B + b) * NH + h) * kv->T * hs;
                for (int j = 0; j < n; j++) {
                    const float *src = qkv + ((size_t)b * n + j) * 3 * C + (size_t)h * hs;
                    memcpy(kv->k + slab + (size_t)(p0 + j) * hs, src + C, (size_t)hs * sizeof(float));
                    memcpy(kv->v + slab + (size_t)(p0 + j) * hs, src + 2 * C, (size_t)hs * sizeof(float));
                }
            }
        /* per row and head: S = Q K^T over the cache, causal softmax, O = P V */
#pragma omp parallel for collapse(2) schedule(static) if (N * (p0 + n) * C > 32768)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                int K = p0 + n;
                float *s = scores + (size_t)train_thread_id() * S;
                size_t slab = (((size_t)l * B + b) * NH + h) * kv->T * hs;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, K, hs, scale,
                            qkv + (size_t)b * n * 3 * C + (size_t)h * hs, 3 * C, kv->k + slab, hs, 0.0f, s, K);
                for (int j = 0; j < n; j++) {
                    float *row = s + (size_t)j * K;
                    train_k_softmax(row, p0 + j + 1);
                    memset(row + p0 + j + 1, 0, (size_t)(n - j - 1) * sizeof(float));
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, K, 1.0f, s, K, kv->v + slab, hs, 0.0f,
                            att + (size_t)b * n * C + (size_t)h * hs, C);
            }
        matmul(x, att, p->t[TRAIN_ATTPROJW] + lC * C, p->t[TRAIN_ATTPROJB] + lC, x, (int)N, C, C);
        train_k_layernorm_forward(ln, mean, rstd, x, p->t[TRAIN_LN2W] + lC, p->t[TRAIN_LN2B] + lC, (int)N, C);
        matmul(fch, ln, p->t[TRAIN_FCW] + lC * 4 * C, p->t[TRAIN_FCB] + lC * 4, NULL, (int)N, C, 4 * C);
        train_k_gelu_forward(fch, fch, N * 4 * C);
        matmul(x, fch, p->t[TRAIN_FCPROJW] + lC * 4 * C, p->t[TRAIN_FCPROJB] + lC, x, (int)N, 4 * C, C);
    }
    free(mem);
    for (int b = 0; b < B; b++)
        kv->pos[b] += n;
    kv->len = p0 + n;
    return GL_OK;
}

int train_model_prefill(const train_model_t *m, train_kv_t *kv, const int32_t *tokens, int n, gl_err_t *err)
{
    const train_config_t *c = &m->cfg;
    int B = kv->B, V = c->vocab_size, p0 = kv->pos[0];
    if (kv->C != c->n_embd || kv->L != c->n_layer || kv->V != V)
        return gl_err_set(err, GL_EINVAL, "prefill: the cache was made for another model");
    if (n < 1)
        return GL_OK;
    if (p0 + n > kv->T)
        return gl_err_set(err, GL_ERANGE, "prefill: %d + %d positions exceed the cache of %d", p0, n, kv->T);
    for (int b = 0; b < B; b++) {
        if (kv->pos[b] != p0)
            return gl_err_set(err, GL_EINVAL, "prefill: the rows are at different positions");
        for (int j = 0; j < n; j++)
            if (tokens[(size_t)b * n + j] < 0 || tokens[(size_t)b * n + j] >= V)
                return gl_err_set(err, GL_ERANGE, "prefill: token %d of row %d outside vocab %d",
                                  tokens[(size_t)b * n + j], b, V);
    }
    /* chunks of at most PREFILL_ROWS rows per product: bounded memory */
    int step = PREFILL_ROWS / B > 0 ? PREFILL_ROWS / B : 1;
    for (int j = 0; j < n; j += step) {
        int rc = prefill_chunk(m, kv, tokens + j, n, n - j < step ? n - j : step, err);
        if (rc)
            return rc;
    }
    return GL_OK;
}
