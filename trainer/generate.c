/* generate.c — KV-cached batched generation and sampling.
 *
 * Inference reads the same flat weights as training but runs its own lean
 * forward: one new token per row per step, the keys and values of every
 * earlier position kept in a cache (L, B, maxT, C), so a step costs the
 * matrix-vector work of one token plus attention over the row's cached
 * positions instead of recomputing the whole prefix. Rows advance in lock
 * step but hold prompts of different lengths: a row feeds its prompt one
 * token per step and starts sampling after its last prompt token, so a
 * batch of RL rollouts or best-of-N samples shares every matrix product.
 * The matrix products over the batch rows go to OpenBLAS sgemm.
 *
 * Sampling: temperature (0 = greedy argmax), top-k, top-p (nucleus), from
 * a seeded generator; a row stops at the stop id (end-of-text) or after
 * max_new tokens. The log-probability of each sampled token under the
 * untempered distribution is returned too (the RL stage needs it).
 */
#include "trainer/run.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-5f

int train_gen_init(train_gen_t *g, const train_model_t *m, int B, int maxT, gl_err_t *err)
{
    memset(g, 0, sizeof *g);
    if (B < 1 || maxT < 1 || maxT > m->cfg.n_ctx)
        return gl_err_set(err, GL_EINVAL, "generation: B=%d and maxT=%d must be positive and maxT <= n_ctx %d", B,
                          maxT, m->cfg.n_ctx);
    int L = m->cfg.n_layer, C = m->cfg.n_embd, V = m->cfg.vocab_size;
    g->m = m;
    g->B = B;
    g->maxT = maxT;
    size_t cache = (size_t)L * B * maxT * C;
    g->k = malloc(cache * sizeof *g->k);
    g->v = malloc(cache * sizeof *g->v);
    g->x = malloc((size_t)B * C * sizeof *g->x);
    g->xn = malloc((size_t)B * C * sizeof *g->xn);
    g->qkv = malloc((size_t)B * 3 * C * sizeof *g->qkv);
    g->y = malloc((size_t)B * C * sizeof *g->y);
    g->h = malloc((size_t)B * 4 * C * sizeof *g->h);
    g->att = malloc((size_t)maxT * sizeof *g->att);
    g->logits = malloc((size_t)B * V * sizeof *g->logits);
    g->pos = calloc((size_t)B, sizeof *g->pos);
    if (!g->k || !g->v || !g->x || !g->xn || !g->qkv || !g->y || !g->h || !g->att || !g->logits || !g->pos) {
        train_gen_free(g);
        return gl_err_set(err, GL_ENOMEM, "generation: out of memory for a cache of %zu floats", 2 * cache);
    }
    return GL_OK;
}

void train_gen_free(train_gen_t *g)
{
    free(g->k), free(g->v), free(g->x), free(g->xn), free(g->qkv), free(g->y), free(g->h), free(g->att);
    free(g->logits), free(g->pos);
    memset(g, 0, sizeof *g);
}

void train_gen_reset(train_gen_t *g)
{
    memset(g->pos, 0, (size_t)g->B * sizeof *g->pos);
}

static void layernorm(float *out, const float *x, const float *w, const float *b, int C)
{
    double mean = 0, var = 0;
    for (int i = 0; i < C; i++)
        mean += x[i];
    mean /= C;
    for (int i = 0; i < C; i++)
        var += (x[i] - mean) * (x[i] - mean);
    float rstd = (float)(1.0 / sqrt(var / C + LN_EPS));
    for (int i = 0; i < C; i++)
        out[i] = ((float)(x[i] - mean)) * rstd * w[i] + b[i];
}

/* out (rows x n) = in (rows x k) @ W (k x n) + bias */
static void linear(float *out, const float *in, const float *W, const float *bias, int rows, int k, int n)
{
    for (int r = 0; r < rows; r++)
        memcpy(out + (size_t)r * n, bias, (size_t)n * sizeof *out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, n, k, 1.0f, in, k, W, n, 1.0f, out, n);
}

int train_gen_step(train_gen_t *g, const int32_t *tokens, gl_err_t *err)
{
    const train_model_t *m = g->m;
    const train_params_t *p = &m->params;
    int B = g->B, L = m->cfg.n_layer, C = m->cfg.n_embd, NH = m->cfg.n_head, hs = C / NH, V = m->cfg.vocab_size;
    for (int b = 0; b < B; b++) {
        if (g->pos[b] >= g->maxT)
            return gl_err_set(err, GL_ERANGE, "generation: row %d is full (%d positions)", b, g->maxT);
        if (tokens[b] < 0 || tokens[b] >= V)
            return gl_err_set(err, GL_ERANGE, "generation: token %d of row %d outside the vocabulary of %d",
                              tokens[b], b, V);
        const float *te = p->t[TRAIN_WTE] + (size_t)tokens[b] * C, *pe = p->t[TRAIN_WPE] + (size_t)g->pos[b] * C;
        for (int c = 0; c < C; c++)
            g->x[(size_t)b * C + c] = te[c] + pe[c];
    }
    float scale = 1.0f / sqrtf((float)hs);
    for (int l = 0; l < L; l++) {
        for (int b = 0; b < B; b++)
            layernorm(g->xn + (size_t)b * C, g->x + (size_t)b * C, p->t[TRAIN_LN1W] + (size_t)l * C,
                      p->t[TRAIN_LN1B] + (size_t)l * C, C);
        linear(g->qkv, g->xn, p->t[TRAIN_QKVW] + (size_t)l * C * 3 * C, p->t[TRAIN_QKVB] + (size_t)l * 3 * C, B, C,
               3 * C);
        for (int b = 0; b < B; b++) {
            int t = g->pos[b];
            float *kc = g->k + (((size_t)l * B + b) * g->maxT) * C, *vc = g->v + (((size_t)l * B + b) * g->maxT) * C;
            const float *q = g->qkv + (size_t)b * 3 * C;
            memcpy(kc + (size_t)t * C, q + C, (size_t)C * sizeof *kc);
            memcpy(vc + (size_t)t * C, q + 2 * C, (size_t)C * sizeof *vc);
            float *y = g->y + (size_t)b * C;
            for (int h = 0; h < NH; h++) {
                float mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const float *k = kc + (size_t)s * C + h * hs;
                    float dot = 0;
                    for (int i = 0; i < hs; i++)
                        dot += q[h * hs + i] * k[i];
                    g->att[s] = dot * scale;
                    mx = g->att[s] > mx ? g->att[s] : mx;
                }
                float sum = 0;
                for (int s = 0; s <= t; s++) {
                    g->att[s] = expf(g->att[s] - mx);
                    sum += g->att[s];
                }
                float inv = 1.0f / sum;
                for (int i = 0; i < hs; i++)
                    y[h * hs + i] = 0;
                for (int s = 0; s <= t; s++) {
                    const float *v = vc + (size_t)s * C + h * hs;
                    float a = g->att[s] * inv;
                    for (int i = 0; i < hs; i++)
                        y[h * hs + i] += a * v[i];
                }
            }
        }
        /* x += y @ Wproj + b */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, C, C, 1.0f, g->y, C,
                    p->t[TRAIN_ATTPROJW] + (size_t)l * C * C, C, 1.0f, g->x, C);
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                g->x[(size_t)b * C + c] += p->t[TRAIN_ATTPROJB][(size_t)l * C + c];
        for (int b = 0; b < B; b++)
            layernorm(g->xn + (size_t)b * C, g->x + (size_t)b * C, p->t[TRAIN_LN2W] + (size_t)l * C,
                      p->t[TRAIN_LN2B] + (size_t)l * C, C);
        linear(g->h, g->xn, p->t[TRAIN_FCW] + (size_t)l * C * 4 * C, p->t[TRAIN_FCB] + (size_t)l * 4 * C, B, C,
               4 * C);
        for (size_t i = 0; i < (size_t)B * 4 * C; i++) {
            float x = g->h[i];
            g->h[i] = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, C, 4 * C, 1.0f, g->h, 4 * C,
                    p->t[TRAIN_FCPROJW] + (size_t)l * 4 * C * C, C, 1.0f, g->x, C);
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                g->x[(size_t)b * C + c] += p->t[TRAIN_FCPROJB][(size_t)l * C + c];
    }
    for (int b = 0; b < B; b++)
        layernorm(g->xn + (size_t)b * C, g->x + (size_t)b * C, p->t[TRAIN_LNFW], p->t[TRAIN_LNFB], C);
    /* logits = xn @ wte^T (the tied output projection) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, V, C, 1.0f, g->xn, C, p->t[TRAIN_WTE], C, 0.0f,
                g->logits, V);
    for (int b = 0; b < B; b++)
        g->pos[b]++;
    return GL_OK;
}

/* ---- sampling ----------------------------------------------------------- */

static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct {
    float p;
    int id;
} cand_t;

static int cmp_cand(const void *a, const void *b)
{
    float x = ((const cand_t *)a)->p, y = ((const cand_t *)b)->p;
    if (x != y)
        return x < y ? 1 : -1;
    return ((const cand_t *)a)->id - ((const cand_t *)b)->id;
}

/* Picks a token from logits[V]; returns it and its log-probability under
 * the untempered softmax in *logp. */
static int pick(const float *logits, int V, const train_sample_opts_t *o, uint64_t *rng, cand_t *c, float *logp)
{
    float mx = -INFINITY;
    int arg = 0;
    for (int v = 0; v < V; v++)
        if (logits[v] > mx) {
            mx = logits[v];
            arg = v;
        }
    double z = 0;
    for (int v = 0; v < V; v++)
        z += exp((double)logits[v] - mx);
    double lse = mx + log(z);
    int id = arg;
    if (o->temperature > 0) {
        double zt = 0;
        for (int v = 0; v < V; v++) {
            c[v].id = v;
            c[v].p = (float)exp(((double)logits[v] - mx) / o->temperature);
            zt += c[v].p;
        }
        int n = V;
        if ((o->top_k > 0 && o->top_k < V) || (o->top_p > 0 && o->top_p < 1)) {
            qsort(c, (size_t)V, sizeof *c, cmp_cand);
            if (o->top_k > 0 && o->top_k < n)
                n = o->top_k;
            if (o->top_p > 0 && o->top_p < 1) {
                double acc = 0, tot = 0;
                for (int i = 0; i < n; i++)
                    tot += c[i].p;
                for (int i = 0; i < n; i++) {
                    acc += c[i].p;
                    if (acc >= o->top_p * tot) {
                        n = i + 1;
                        break;
                    }
                }
            }
            zt = 0;
            for (int i = 0; i < n; i++)
                zt += c[i].p;
        }
        double u = (double)(next_u64(rng) >> 11) * 0x1.0p-53 * zt, acc = 0;
        id = c[n - 1].id;
        for (int i = 0; i < n; i++) {
            acc += c[i].p;
            if (u < acc) {
                id = c[i].id;
                break;
            }
        }
    }
    *logp = (float)(logits[id] - lse);
    return id;
}

int train_generate(train_gen_t *g, const int32_t *const *prompts, const int *plen, const train_sample_opts_t *o,
                   int32_t *out, int *out_len, float *logprobs, gl_err_t *err)
{
    int B = g->B, V = g->m->cfg.vocab_size, maxp = 0;
    for (int b = 0; b < B; b++) {
        if (plen[b] < 1)
            return gl_err_set(err, GL_EINVAL, "generation: row %d has an empty prompt", b);
        maxp = plen[b] > maxp ? plen[b] : maxp;
        out_len[b] = 0;
    }
    if (maxp + o->max_new > g->maxT + 1)
        return gl_err_set(err, GL_ERANGE, "generation: prompt of %d + %d new tokens exceeds the context of %d", maxp,
                          o->max_new, g->maxT);
    train_gen_reset(g);
    uint64_t rng = o->seed * 0x2545f4914f6cdd1dull + 1;
    cand_t *c = malloc((size_t)V * sizeof *c);
    int32_t *in = malloc((size_t)B * sizeof *in);
    int *done = calloc((size_t)B, sizeof *done);
    int rc = GL_OK;
    if (!c || !in || !done) {
        rc = gl_err_set(err, GL_ENOMEM, "generation: out of memory");
        goto out;
    }
    for (int step = 0;; step++) {
        int live = 0;
        for (int b = 0; b < B; b++) {
            if (step < plen[b])
                in[b] = prompts[b][step];
            else
                in[b] = out_len[b] ? out[(size_t)b * o->max_new + out_len[b] - 1] : prompts[b][plen[b] - 1];
            live |= !done[b];
        }
        if (!live)
            break;
        /* rows that are done still take a step (their cache is not used): a
         * full-batch product is cheaper than compacting rows */
        int stop_all = 1;
        for (int b = 0; b < B; b++)
            stop_all &= done[b] || g->pos[b] >= g->maxT;
        if (stop_all)
            break;
        for (int b = 0; b < B; b++)
            if (g->pos[b] >= g->maxT)
                g->pos[b] = g->maxT - 1; /* a finished row may run out of room: overwrite its last slot */
        if ((rc = train_gen_step(g, in, err)))
            goto out;
        for (int b = 0; b < B; b++) {
            if (done[b] || step < plen[b] - 1)
                continue;
            float lp;
            int id = pick(g->logits + (size_t)b * V, V, o, &rng, c, &lp);
            out[(size_t)b * o->max_new + out_len[b]] = id;
            if (logprobs)
                logprobs[(size_t)b * o->max_new + out_len[b]] = lp;
            out_len[b]++;
            if ((o->stop_id >= 0 && id == o->stop_id) || out_len[b] >= o->max_new)
                done[b] = 1;
        }
    }
out:
    free(c), free(in), free(done);
    return rc;
}
