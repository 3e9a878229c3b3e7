/* generate.c — batched sampling over the model's KV-cached decoder.
 *
 * Rows advance in lock step over train_model_decode_rows but hold prompts
 * of different lengths: a row feeds its prompt one token per step and
 * starts sampling after its last prompt token; a finished row stops being
 * fed. A batch of RL rollouts or best-of-N samples so shares every matrix
 * product.
 *
 * Sampling: temperature (0 = greedy argmax), top-k, top-p (nucleus), from
 * a seeded generator per row (row 0's stream is the seed's, so the first
 * row of a batch samples what a batch of one would); a row stops at the
 * stop id (end-of-text) or after max_new tokens. The log-probability of
 * each sampled token under the untempered distribution is returned too
 * (the RL stage needs it). With per-row seeds (o->row_seeds) row b's
 * stream comes from its own seed instead, so a row's sample does not depend
 * on which rows share its batch or rank.
 *
 * Best-of-N (rejection sampling) generates N continuations of a prompt as
 * one batch and keeps the one a reward model scores highest.
 */
#include "trainer/run.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* Picks a token from logits[V]; returns it and, when logp is not NULL,
 * its log-probability under the untempered softmax in *logp (greedy
 * without it is an argmax, no exponential). */
static int pick(const float *logits, int V, const train_sample_opts_t *o, uint64_t *rng, cand_t *c, float *logp)
{
    float mx = -INFINITY;
    int arg = 0;
    for (int v = 0; v < V; v++)
        if (logits[v] > mx) {
            mx = logits[v];
            arg = v;
        }
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
    if (logp) {
        double z = 0;
        for (int v = 0; v < V; v++)
            z += exp((double)logits[v] - mx);
        *logp = (float)(logits[id] - (mx + log(z)));
    }
    return id;
}

int train_generate(train_kv_t *kv, const train_model_t *m, const int32_t *const *prompts, const int *plen,
                   const train_sample_opts_t *o, int32_t *out, int *out_len, float *logprobs, gl_err_t *err)
{
    int B = kv->B, V = m->cfg.vocab_size, maxp = 0;
    if (B < 1)
        return gl_err_set(err, GL_EINVAL, "generation: a cache of no rows");
    for (int b = 0; b < B; b++) {
        if (plen[b] < 1)
            return gl_err_set(err, GL_EINVAL, "generation: row %d has an empty prompt", b);
        maxp = plen[b] > maxp ? plen[b] : maxp;
        out_len[b] = 0;
    }
    if (o->max_new < 1 || maxp + o->max_new - 1 > kv->T)
        return gl_err_set(err, GL_ERANGE, "generation: prompt of %d + %d new tokens exceeds the cache of %d", maxp,
                          o->max_new, kv->T);
    train_kv_reset(kv);
    cand_t *c = malloc((size_t)V * sizeof *c);
    int32_t *in = malloc((size_t)B * sizeof *in);
    uint8_t *feed = malloc((size_t)B);
    uint64_t *rng = malloc((size_t)B * sizeof *rng);
    int rc = GL_OK;
    if (!c || !in || !feed || !rng) {
        rc = gl_err_set(err, GL_ENOMEM, "generation: out of memory");
        goto out;
    }
    /* a stream per row: row b's samples do not depend on the other rows */
    for (int b = 0; b < B; b++) {
        uint64_t x = (o->seed * 0x2545f4914f6cdd1dull + 1) ^ ((uint64_t)b * 0xd1b54a32d192ed03ull);
        rng[b] = b ? next_u64(&x) : x;
    }
    memset(feed, 1, (size_t)B);
    for (int b = 0; o->row_seeds && b < B; b++)
        rng[b] = o->row_seeds[b] * 0x2545f4914f6cdd1dull + 1;
    /* the positions every row feeds from its prompt before any samples:
     * all at once, many rows per product */
    int pre = plen[0] - 1;
    for (int b = 1; b < B; b++)
        pre = plen[b] - 1 < pre ? plen[b] - 1 : pre;
    if (pre > 0) {
        int32_t *toks = malloc((size_t)B * pre * sizeof *toks);
        if (!toks) {
            rc = gl_err_set(err, GL_ENOMEM, "generation: out of memory");
            goto out;
        }
        for (int b = 0; b < B; b++)
            memcpy(toks + (size_t)b * pre, prompts[b], (size_t)pre * sizeof *toks);
        rc = train_model_prefill(m, kv, toks, pre, err);
        free(toks);
        if (rc)
            goto out;
    }
    for (int step = pre > 0 ? pre : 0;; step++) {
        int live = 0;
        for (int b = 0; b < B; b++) {
            if (!feed[b])
                continue;
            in[b] = step < plen[b] ? prompts[b][step] : out[(size_t)b * o->max_new + out_len[b] - 1];
            live = 1;
        }
        if (!live)
            break;
        if ((rc = train_model_decode_rows(m, kv, in, feed, err)))
            goto out;
        for (int b = 0; b < B; b++) {
            if (!feed[b] || step < plen[b] - 1)
                continue;
            float lp;
            int id = pick(kv->logits + (size_t)b * V, V, o, &rng[b], c, logprobs ? &lp : NULL);
            out[(size_t)b * o->max_new + out_len[b]] = id;
            if (logprobs)
                logprobs[(size_t)b * o->max_new + out_len[b]] = lp;
            out_len[b]++;
            if ((o->stop_id >= 0 && id == o->stop_id) || out_len[b] >= o->max_new)
                feed[b] = 0; /* done: the last token need not be fed */
        }
    }
out:
    free(c), free(in), free(feed), free(rng);
    return rc;
}

/* ---- best-of-N ---------------------------------------------------------- */

int train_best_of_n(train_kv_t *kv, const train_model_t *m, train_model_t *rm, const float *w, const int32_t *prompt,
                    int plen, const train_sample_opts_t *o, int32_t *out, int *out_len, float *scores, int *best,
                    gl_err_t *err)
{
    int n = kv->B, T = rm->T, rc;
    if (o->stop_id < 0)
        return gl_err_set(err, GL_EINVAL, "best-of-N: the reward model reads the end-of-text; no stop id given");
    if (n > rm->B || T < 2)
        return gl_err_set(err, GL_ERANGE, "best-of-N: the reward model holds %d rows of %d tokens, %d wanted", rm->B,
                          T, n);
    const int32_t **prompts = gl_xcalloc((size_t)n, sizeof *prompts);
    int *plens = gl_xcalloc((size_t)n, sizeof *plens), *len = gl_xcalloc((size_t)n, sizeof *len);
    int32_t *rows = gl_xcalloc((size_t)n * T, sizeof *rows);
    for (int b = 0; b < n; b++)
        prompts[b] = prompt, plens[b] = plen;
    if ((rc = train_generate(kv, m, prompts, plens, o, out, out_len, NULL, err)))
        goto out;
    /* the rows the reward model was trained on: prompt + response +
     * end-of-text (the response's own stop token, or one appended), the
     * prompt's start cut when the row does not fit */
    int maxlen = 1;
    for (int b = 0; b < n; b++) {
        const int32_t *r = out + (size_t)b * o->max_new;
        int rl = out_len[b] && r[out_len[b] - 1] == o->stop_id ? out_len[b] - 1 : out_len[b];
        int cut = plen + rl + 1 > T ? plen + rl + 1 - T : 0, k = 0;
        if (cut > plen) { /* the response alone is too long: keep its start */
            rl = T - 1;
            cut = plen;
        }
        int32_t *row = rows + (size_t)b * T;
        for (int i = cut; i < plen; i++)
            row[k++] = prompt[i];
        for (int i = 0; i < rl; i++)
            row[k++] = r[i];
        row[k++] = o->stop_id;
        len[b] = k;
        maxlen = k > maxlen ? k : maxlen;
    }
    /* score with the rows packed at the longest row's length */
    for (int b = 0; b < n; b++) {
        memmove(rows + (size_t)b * maxlen, rows + (size_t)b * T, (size_t)len[b] * sizeof *rows);
        for (int i = len[b]; i < maxlen; i++)
            rows[(size_t)b * maxlen + i] = o->stop_id;
    }
    if ((rc = train_rm_score(rm, w, rows, len, n, maxlen, scores, err)))
        goto out;
    *best = 0;
    for (int b = 1; b < n; b++)
        if (scores[b] > scores[*best])
            *best = b;
out:
    free(prompts), free(plens), free(len), free(rows);
    return rc;
}
