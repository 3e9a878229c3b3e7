/* test_trainer_rl.c — the RL stage (trainer/rl.c).
 *
 * The pieces against naive references written here: GAE as the explicit
 * sum of discounted TD errors, whitening, GRPO's group advantages, the
 * clipped policy and value losses and the k3 KL estimator (values and
 * derivatives), and the PPO losses' gradients through a model (policy)
 * and through a model with a scalar head (critic) against central finite
 * differences. The log-probabilities of a policy against a second copy of
 * itself give a KL of exactly 0, and a critic initialised from a reward
 * model gives at each response position the reward model's score of the
 * prefix ending there.
 *
 * Then the whole stage on a learnable rule: a small byte-level "SFT" model
 * (pretrained on strings of the letters a-h, documents ending with
 * end-of-text), a reward model trained on rankings that prefer responses
 * with more 'a's, and prompts of three letters. A short PPO run must raise
 * the mean reward clearly while the KL to the reference stays under a
 * stated bound; with a large beta the policy stays near the reference;
 * GRPO must raise the reward too.
 */
#include "shards/shards.h"
#include "tests/tap.h"
#include "tests/train_util.h"
#include "trainer/rl.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(uint32_t n) { return tt_rnd(&rng, n); }
static float frand(void) { return (float)rnd(1u << 24) / (float)(1u << 23) - 1.0f; }

/* ---- naive references --------------------------------------------------- */

static void naive_gae(const float *rew, const float *val, int n, double gamma, double lam, double *adv, double *ret)
{
    for (int t = 0; t < n; t++) {
        double a = 0, f = 1;
        for (int l = t; l < n; l++) {
            double next = l + 1 < n ? val[l + 1] : 0;
            a += f * (rew[l] + gamma * next - val[l]);
            f *= gamma * lam;
        }
        adv[t] = a;
        ret[t] = a + val[t];
    }
}

static void test_pieces(void)
{
    float rew[9], val[9], adv[9], ret[9];
    double na[9], nr[9];
    double worst = 0;
    const double gl[][2] = {{1, 0.95}, {0.99, 1}, {0.9, 0}, {1, 1}};
    for (int k = 0; k < 4; k++)
        for (int n = 1; n <= 9; n++) {
            for (int i = 0; i < n; i++)
                rew[i] = frand(), val[i] = 2 * frand();
            train_rl_gae(rew, val, n, (float)gl[k][0], (float)gl[k][1], adv, ret);
            naive_gae(rew, val, n, gl[k][0], gl[k][1], na, nr);
            for (int i = 0; i < n; i++)
                worst = fmax(worst, fmax(fabs(adv[i] - na[i]), fabs(ret[i] - nr[i])));
        }
    ok(worst < 1e-5, "GAE equals the explicit sum of discounted TD errors (max diff %.1e)", worst);

    /* whitening: mean 0, population variance 1, order kept */
    float x[50], y[50];
    double m = 0, v = 0;
    for (int i = 0; i < 50; i++)
        x[i] = y[i] = 3 + 5 * frand();
    for (int i = 0; i < 50; i++)
        m += x[i];
    m /= 50;
    for (int i = 0; i < 50; i++)
        v += (x[i] - m) * (x[i] - m);
    v /= 50;
    train_dist_t one = {.rank = 0, .world = 1};
    gl_err_t err = {0};
    train_rl_whiten(y, 50, &one, &err);
    worst = 0;
    for (int i = 0; i < 50; i++)
        worst = fmax(worst, fabs(y[i] - (x[i] - m) / sqrt(v + 1e-8)));
    ok(worst < 1e-5, "whitening equals (x - mean) / std (max diff %.1e)", worst);

    /* group advantages: 3 groups of 4, one of equal scores */
    float sc[12] = {1, 2, 3, 6, 0.5f, 0.5f, 0.5f, 0.5f, -1, 1, -1, 1}, ga[12];
    train_rl_group_advantages(sc, 3, 4, ga);
    worst = 0;
    for (int g = 0; g < 3; g++) {
        double mu = 0, var = 0;
        for (int i = 0; i < 4; i++)
            mu += sc[g * 4 + i] / 4.0;
        for (int i = 0; i < 4; i++)
            var += (sc[g * 4 + i] - mu) * (sc[g * 4 + i] - mu) / 3.0;
        for (int i = 0; i < 4; i++) {
            double want = var > 0 ? (sc[g * 4 + i] - mu) / (sqrt(var) + 1e-4) : 0;
            worst = fmax(worst, fabs(ga[g * 4 + i] - want));
        }
    }
    ok(worst < 1e-5 && ga[4] == 0 && ga[7] == 0, "group advantages (s - mean) / std, 0 for a tied group (%.1e)",
       worst);

    /* clipped surrogate: value, clip count and derivative by finite
     * differences of the function itself, at ratios inside and outside
     * the band for both signs of the advantage */
    float lp[8], old[8], a[8], d[8];
    const float off[8] = {0.05f, -0.05f, 0.6f, -0.6f, 0.05f, -0.05f, 0.6f, -0.6f};
    for (int i = 0; i < 8; i++) {
        lp[i] = -1 - frand();
        old[i] = lp[i] - off[i];
        a[i] = i < 4 ? 1.5f : -0.7f;
    }
    double clipped = 0, akl = 0, want = 0, wclip = 0, wakl = 0;
    for (int i = 0; i < 8; i++) {
        double r = exp((double)lp[i] - old[i]), rc = fmin(fmax(r, 0.8), 1.2);
        want += fmax(-a[i] * r, -a[i] * rc);
        wclip += -a[i] * rc > -a[i] * r;
        wakl += r - 1 - log(r);
    }
    double got = train_rl_policy_loss(lp, old, a, 8, 0.2f, 0.5f, d, &clipped, &akl);
    ok(fabs(got - 0.5 * want) < 1e-5 && clipped == wclip && wclip == 2 && fabs(akl - wakl) < 1e-5,
       "policy loss %.5f (want %.5f), %g of 8 tokens clipped, approx KL %.5f", got, 0.5 * want, clipped, akl);
    worst = 0;
    for (int i = 0; i < 8; i++) {
        float keep = lp[i];
        lp[i] = keep + 1e-3f;
        double fp = train_rl_policy_loss(lp, old, a, 8, 0.2f, 0.5f, NULL, NULL, NULL);
        lp[i] = keep - 1e-3f;
        double fm = train_rl_policy_loss(lp, old, a, 8, 0.2f, 0.5f, NULL, NULL, NULL);
        lp[i] = keep;
        worst = fmax(worst, fabs((fp - fm) / 2e-3 - d[i]));
    }
    ok(worst < 1e-3, "policy loss derivative vs finite differences (max diff %.1e)", worst);

    /* clipped value loss */
    float v1[6], vo[6], R[6], dv[6];
    const float dvo[6] = {0.1f, -0.1f, 0.5f, -0.5f, 0.5f, -0.5f};
    const float dr[6] = {0.3f, 0.3f, 1.0f, -1.0f, -1.0f, 1.0f};
    for (int i = 0; i < 6; i++) {
        vo[i] = frand();
        v1[i] = vo[i] + dvo[i];
        R[i] = vo[i] + dr[i];
    }
    double vc = 0, vwant = 0;
    got = train_rl_value_loss(v1, vo, R, 6, 0.2f, 1, dv, &vc);
    for (int i = 0; i < 6; i++) {
        double c = vo[i] + fmin(fmax((double)v1[i] - vo[i], -0.2), 0.2);
        vwant += 0.5 * fmax((v1[i] - R[i]) * (v1[i] - R[i]), (c - R[i]) * (c - R[i]));
    }
    worst = 0;
    for (int i = 0; i < 6; i++) {
        float keep = v1[i];
        v1[i] = keep + 1e-3f;
        double fp = train_rl_value_loss(v1, vo, R, 6, 0.2f, 1, NULL, NULL);
        v1[i] = keep - 1e-3f;
        double fm = train_rl_value_loss(v1, vo, R, 6, 0.2f, 1, NULL, NULL);
        v1[i] = keep;
        worst = fmax(worst, fabs((fp - fm) / 2e-3 - dv[i]));
    }
    ok(fabs(got - vwant) < 1e-5 && vc == 2 && worst < 1e-3,
       "value loss %.5f (want %.5f), %g clipped, derivative vs finite differences %.1e", got, vwant, vc, worst);

    /* k3 */
    float k3d[8] = {0};
    double k3 = train_rl_kl_k3(lp, old, 8, 1, k3d), k3w = 0, k3self = train_rl_kl_k3(lp, lp, 8, 1, NULL);
    for (int i = 0; i < 8; i++) {
        double q = (double)old[i] - lp[i];
        k3w += exp(q) - q - 1;
    }
    worst = 0;
    for (int i = 0; i < 8; i++) {
        float keep = lp[i];
        lp[i] = keep + 1e-3f;
        double fp = train_rl_kl_k3(lp, old, 8, 1, NULL);
        lp[i] = keep - 1e-3f;
        double fm = train_rl_kl_k3(lp, old, 8, 1, NULL);
        lp[i] = keep;
        worst = fmax(worst, fabs((fp - fm) / 2e-3 - k3d[i]));
    }
    ok(fabs(k3 - k3w) < 1e-5 && k3 > 0 && k3self == 0 && worst < 1e-3,
       "k3 KL %.5f (want %.5f), 0 against itself, derivative %.1e", k3, k3w, worst);
}

/* ---- gradients through a model ------------------------------------------ */

typedef struct {
    train_model_t *m;
    const float *w; /* a head: value loss; NULL: policy loss */
    int32_t *tok, tgt[16];
    int plen[2], rlen[2];
    float old[2 * 8], adv[2 * 8], ret[2 * 8];
} lossctx_t;

static double loss_f(lossctx_t *c)
{
    float out[2 * 8];
    gl_err_t err;
    int rc = c->w ? train_rl_values(c->m, c->w, c->tok, c->plen, c->rlen, 2, 8, 8, out, &err)
                  : train_rl_logprobs(c->m, c->tok, c->tgt, c->plen, c->rlen, 2, 8, 8, out, NULL, &err);
    if (rc)
        return NAN;
    double l = 0;
    for (int i = 0; i < 2; i++)
        l += c->w ? train_rl_value_loss(out + i * 8, c->old + i * 8, c->ret + i * 8, c->rlen[i], 0.2f, 0.1f, NULL, NULL)
                  : train_rl_policy_loss(out + i * 8, c->old + i * 8, c->adv + i * 8, c->rlen[i], 0.2f, 0.1f, NULL,
                                         NULL, NULL);
    return l;
}

static double fd_check(lossctx_t *c, float *x, const float *g, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + 1e-2f;
        double fp = loss_f(c);
        x[i] = keep - 1e-2f;
        double fm = loss_f(c);
        x[i] = keep;
        double fd = (fp - fm) / 2e-2;
        num += (fd - g[i]) * (fd - g[i]);
        den += (double)g[i] * g[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void test_model_gradients(void)
{
    train_config_t cfg = {.n_layer = 1, .n_head = 2, .n_embd = 8, .n_ctx = 8, .vocab_size = 11};
    train_model_t m;
    gl_err_t err = {0};
    ok(train_model_init(&m, &cfg, 2, 8, TRAIN_GRADS, &err) == 0, "tiny model");
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++)
        for (size_t i = 0; i < m.sizes[k]; i++)
            m.params.t[k][i] = (k == TRAIN_LN1W || k == TRAIN_LN2W || k == TRAIN_LNFW ? 1.0f : 0.0f) + 0.4f * frand();
    int32_t tok[16];
    for (int i = 0; i < 16; i++)
        tok[i] = (int32_t)((i * 7 + 3) % 11);
    lossctx_t c = {.m = &m, .tok = tok, .plen = {3, 2}, .rlen = {4, 6}};
    float lp[16], d[8], head[8];
    train_rl_logprobs(&m, tok, c.tgt, c.plen, c.rlen, 2, 8, 8, lp, NULL, &err);
    /* old log-probs at fixed offsets: ratios inside and outside the band,
     * away from its edges, for advantages of both signs */
    const float off[4] = {0.05f, -0.6f, 0.6f, -0.05f};
    for (int i = 0; i < 16; i++) {
        c.old[i] = lp[i] - off[i % 4];
        c.adv[i] = (i % 3 == 0 ? -1.0f : 1.0f) * (0.5f + (float)(i % 5) / 4);
    }
    /* analytic: forward, the loss's derivative, one backward */
    train_model_zero_grad(&m);
    train_rl_logprobs(&m, tok, c.tgt, c.plen, c.rlen, 2, 8, 8, lp, NULL, &err);
    float coef[16] = {0};
    for (int i = 0; i < 2; i++) {
        train_rl_policy_loss(lp + i * 8, c.old + i * 8, c.adv + i * 8, c.rlen[i], 0.2f, 0.1f, d, NULL, NULL);
        for (int j = 0; j < c.rlen[i]; j++)
            coef[i * 8 + c.plen[i] - 1 + j] = -d[j];
    }
    train_model_backward_tokens(&m, coef);
    float *g = malloc(m.n_params * sizeof *g);
    memcpy(g, m.grads_mem, m.n_params * sizeof *g);
    double worst = 0;
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++)
        worst = fmax(worst, fd_check(&c, m.params.t[k], g + (m.params.t[k] - m.params_mem), m.sizes[k]));
    ok(worst < 1e-2, "PPO policy loss: gradient through the model vs finite differences (worst tensor %.1e)", worst);

    /* the clipped value loss through the model and a head */
    for (int i = 0; i < 8; i++)
        head[i] = frand();
    c.w = head;
    float v[16];
    train_rl_values(&m, head, tok, c.plen, c.rlen, 2, 8, 8, v, &err);
    const float voff[4] = {0.1f, -0.5f, 0.5f, -0.1f}, roff[4] = {0.7f, -1.0f, -1.0f, 0.3f};
    for (int i = 0; i < 16; i++) {
        c.old[i] = v[i] - voff[i % 4];
        c.ret[i] = c.old[i] + roff[i % 4];
    }
    train_model_zero_grad(&m);
    train_rl_values(&m, head, tok, c.plen, c.rlen, 2, 8, 8, v, &err);
    float *dlnf = calloc(16 * 8, sizeof *dlnf), gh[8] = {0};
    for (int i = 0; i < 2; i++) {
        train_rl_value_loss(v + i * 8, c.old + i * 8, c.ret + i * 8, c.rlen[i], 0.2f, 0.1f, d, NULL);
        for (int j = 0; j < c.rlen[i]; j++)
            for (int k = 0; k < 8; k++) {
                size_t at = ((size_t)i * 8 + (size_t)(c.plen[i] - 1 + j)) * 8 + (size_t)k;
                dlnf[at] = d[j] * head[k];
                gh[k] += d[j] * m.acts.lnf[at];
            }
    }
    train_model_backward_hidden(&m, dlnf);
    memcpy(g, m.grads_mem, m.n_params * sizeof *g);
    int kinds[] = {TRAIN_WTE, TRAIN_WPE, TRAIN_QKVW, TRAIN_FCW, TRAIN_LNFW, TRAIN_LNFB};
    worst = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
        worst = fmax(worst, fd_check(&c, m.params.t[kinds[k]], g + (m.params.t[kinds[k]] - m.params_mem),
                                     m.sizes[kinds[k]]));
    double wh = fd_check(&c, head, gh, 8);
    ok(worst < 1e-2 && wh < 1e-2, "PPO value loss: gradient through the model (%.1e) and the head (%.1e)", worst, wh);
    free(g), free(dlnf);
    train_model_free(&m);
}

/* ---- fixtures: shards of bytes ------------------------------------------- */

/* strings of the letters a-h, 1-8 long */
static size_t letters(uint32_t *t, size_t at, int min, int max)
{
    int n = min + (int)rnd((uint32_t)(max - min + 1));
    for (int i = 0; i < n; i++)
        t[at + i] = 'a' + rnd(8);
    return (size_t)n;
}

static int count_a(const uint32_t *t, size_t n)
{
    int c = 0;
    for (size_t i = 0; i < n; i++)
        c += t[i] == 'a';
    return c;
}

static int write_fixtures(const char *docs, const char *rank, const char *rank_val, const char *prompts,
                          gl_err_t *err)
{
    uint32_t t[64];
    shard_writer_t *w = tt_writer(docs, "s", GPTLINE__RECORD_KIND__DOCUMENTS, err);
    for (int k = 0; w && k < 3000; k++)
        if (shard_writer_add(w, t, letters(t, 0, 1, 8), NULL, err))
            return -1;
    if (!w || shard_writer_seal(&w, err))
        return -1;
    /* rankings: three responses, more 'a's is better (equal counts tie) */
    for (int set = 0; set < 2; set++) {
        if (!(w = tt_writer(set ? rank_val : rank, "s", GPTLINE__RECORD_KIND__RM, err)))
            return -1;
        for (int k = 0; k < (set ? 200 : 1500);) {
            Gptline__RmRanking r = GPTLINE__RM_RANKING__INIT;
            Gptline__Span prompt = GPTLINE__SPAN__INIT, resp[3], *rp[3];
            uint32_t rk[3];
            size_t len = letters(t, 0, 3, 3);
            prompt.end = (uint32_t)len;
            int cnt[3];
            for (int i = 0; i < 3; i++) {
                gptline__span__init(&resp[i]);
                rp[i] = &resp[i];
                resp[i].start = (uint32_t)len;
                size_t n = letters(t, len, 1, 10);
                for (size_t j = 0; j < n; j++) /* more 'a's than the prior gives, to rank */
                    if (rnd(4) == 0)
                        t[len + j] = 'a';
                cnt[i] = count_a(t + len, n);
                len += n;
                resp[i].end = (uint32_t)len;
            }
            if (cnt[0] == cnt[1] && cnt[1] == cnt[2])
                continue;
            for (int i = 0; i < 3; i++)
                rk[i] = (uint32_t)((cnt[(i + 1) % 3] > cnt[i]) + (cnt[(i + 2) % 3] > cnt[i]));
            r.prompt = &prompt;
            r.n_responses = r.n_rank = 3;
            r.responses = rp;
            r.rank = rk;
            if (shard_writer_add(w, t, len, &r.base, err))
                return -1;
            k++;
        }
        if (shard_writer_seal(&w, err))
            return -1;
    }
    if (!(w = tt_writer(prompts, "s", GPTLINE__RECORD_KIND__RL_PROMPTS, err)))
        return -1;
    for (int k = 0; k < 300; k++) {
        Gptline__RlPrompt p = GPTLINE__RL_PROMPT__INIT;
        if (shard_writer_add(w, t, letters(t, 0, 3, 3), &p.base, err))
            return -1;
    }
    return shard_writer_seal(&w, err) ? -1 : 0;
}

/* Field `key` of each step of a metrics.jsonl; returns the count. */
static int series(const char *out, const char *key, double *v, int cap)
{
    char *path = gl_path_join(out, "metrics.jsonl"), line[4096];
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && n < cap && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *x = j ? json_object_get(j, key) : NULL;
        if (x)
            v[n++] = json_number_value(x);
        json_decref(j);
    }
    if (f)
        fclose(f);
    free(path);
    return n;
}

static double mean(const double *v, int from, int to)
{
    double s = 0;
    for (int i = from; i < to; i++)
        s += v[i];
    return s / (to - from);
}

static void test_stage(const char *tmp)
{
    gl_err_t err = {0};
    char *docs = gl_path_join(tmp, "docs"), *rank = gl_path_join(tmp, "rank"), *rval = gl_path_join(tmp, "rval"),
         *prompts = gl_path_join(tmp, "prompts"), *sft = gl_path_join(tmp, "sft"), *rmo = gl_path_join(tmp, "rm");
    ok(write_fixtures(docs, rank, rval, prompts, &err) == 0, "fixtures: documents, rankings, prompts %s", err.msg);
    train_dist_t one = {.rank = 0, .world = 1};

    /* the "SFT" policy: letters a-h, then end-of-text */
    train_run_opts_t o;
    train_run_defaults(&o);
    o.data = docs;
    o.out = sft;
    o.cfg = (train_config_t){.n_layer = 2, .n_head = 2, .n_embd = 32, .n_ctx = 32};
    o.B = 8, o.T = 32, o.steps = 60, o.threads = 1, o.quiet = 1, o.ckpt_every = 0;
    o.sched = (train_sched_t){.max_lr = 3e-3f, .min_lr = 3e-4f, .warmup = 5};
    int rc = train_run(&o, &one, &err);
    ok(rc == 0, "policy: pretrain 60 steps %s", rc ? err.msg : "");

    /* the reward model: more 'a's is better */
    train_run_opts_t r = o;
    r.stage = TRAIN_STAGE_RM;
    r.data = rank, r.val = rval, r.out = rmo, r.init = sft;
    r.B = 12, r.steps = 250, r.eval_every = 250, r.eval_batches = 0;
    r.sched = (train_sched_t){.max_lr = 3e-3f, .min_lr = 3e-4f, .warmup = 20};
    rc = train_run(&r, &one, &err);
    double acc[4];
    int na = series(rmo, "val_accuracy", acc, 4);
    ok(rc == 0 && na == 1 && acc[0] > 0.8, "reward model: held-out pairwise accuracy %.2f > 0.8 %s",
       na ? acc[0] : 0, rc ? err.msg : "");

    /* KL of the policy to itself; the critic starts as the reward model */
    train_model_t a = {0}, b = {0}, rm = {0}, vm = {0};
    float *rw = NULL, *vw = NULL;
    char *pp = train_checkpoint_model_path(sft, &err);
    train_config_t cfg;
    train_read_config(pp, &cfg, &err);
    ok(train_model_init(&a, &cfg, 4, 32, 0, &err) == 0 && train_load(&a, pp, 0, &err) == 0 &&
           train_model_init(&b, &cfg, 4, 32, 0, &err) == 0 && train_load(&b, pp, 0, &err) == 0,
       "policy and reference loaded");
    int32_t tok[4 * 32], tgt[4 * 32];
    int plen[4] = {3, 3, 5, 2}, rlen[4] = {6, 1, 9, 12}, len[4];
    for (int i = 0; i < 4 * 32; i++)
        tok[i] = 'a' + (int32_t)rnd(8);
    float la[4 * 16], lb[4 * 16];
    train_rl_logprobs(&a, tok, tgt, plen, rlen, 4, 32, 16, la, NULL, &err);
    train_rl_logprobs(&b, tok, tgt, plen, rlen, 4, 32, 16, lb, NULL, &err);
    double kl = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < rlen[i]; j++)
            kl += la[i * 16 + j] - lb[i * 16 + j];
    ok(kl == 0, "KL of the policy to itself is 0 (%g)", kl);
    ok(train_rl_load_rm(rmo, 4, 32, 0, &rm, &rw, &err) == 0 && train_rl_load_rm(rmo, 4, 32, TRAIN_GRADS, &vm, &vw, &err) == 0,
       "reward model and critic loaded %s", err.msg);
    float vals[4 * 16];
    train_rl_values(&vm, vw, tok, plen, rlen, 4, 32, 16, vals, &err);
    double worst = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < rlen[i]; j++) { /* the value before token j: the RM's score of the prefix */
            float s;
            len[0] = plen[i] + j;
            train_rm_score(&rm, rw, tok + i * 32, len, 1, 32, &s, &err);
            worst = fmax(worst, fabs(s - vals[i * 16 + j]));
        }
    ok(worst < 1e-4, "initial critic values equal the reward model's scores of each prefix (max diff %.1e)", worst);
    train_model_free(&a), train_model_free(&b), train_model_free(&rm), train_model_free(&vm);
    free(rw), free(vw), free(pp);

    /* PPO raises the reward, within a KL bound */
    char *p1 = gl_path_join(tmp, "ppo"), *p2 = gl_path_join(tmp, "ppo-beta"), *p3 = gl_path_join(tmp, "grpo");
    train_rl_opts_t q;
    train_rl_defaults(&q, TRAIN_RL_PPO);
    q.policy = sft, q.reward = rmo, q.prompts = prompts, q.out = p1;
    q.B = 16, q.steps = 30, q.minibatches = 2, q.threads = 1, q.quiet = 1, q.ckpt_every = 0;
    q.sample.max_new = 16;
    q.sched = (train_sched_t){.max_lr = 1e-3f, .min_lr = 1e-3f};
    q.value_lr = 1e-3f;
    q.kl_coef = 0.3f;
    rc = train_rl_run(&q, &one, &err);
    double rew[64], kls[64], rb[64], klb[64];
    int n = series(p1, "reward", rew, 64);
    series(p1, "kl", kls, 64);
    double r0 = mean(rew, 0, 5), r1 = mean(rew, n - 5, n), kmean = mean(kls, 0, n), kmax = 0;
    for (int i = 0; i < n; i++)
        kmax = fmax(kmax, kls[i]);
    ok(rc == 0 && n == 30, "PPO: 30 steps %s", rc ? err.msg : "");
    ok(kls[0] == 0, "the first step's KL to the reference is exactly 0 (%g)", kls[0]);
    ok(r1 > r0 + 5, "PPO raises the mean reward: %.3f over the first 5 steps, %.3f over the last 5", r0, r1);
    /* the RM rewards length (more letters, more 'a's): KL grows with it,
     * the penalty holds it under 2 nats per token of the 16 */
    ok(kmax < 32, "beta 0.3: KL to the reference stays under 32 nats per response (max %.2f, mean %.2f)", kmax,
       kmean);

    /* a large beta keeps the policy near the reference */
    q.out = p2;
    q.kl_coef = 5;
    rc = train_rl_run(&q, &one, &err);
    int nb = series(p2, "kl", klb, 64);
    series(p2, "reward", rb, 64);
    double kbmean = nb ? mean(klb, 0, nb) : NAN;
    ok(rc == 0 && nb == 30 && kbmean < 1.5 && kbmean < 0.2 * kmean,
       "beta 5: mean KL %.3f nats per response, under 1.5 and a fifth of beta 0.3's %.3f (reward %.2f -> %.2f)",
       kbmean, kmean, mean(rb, 0, 5), mean(rb, nb - 5, nb));

    /* GRPO on the same task */
    train_rl_opts_t gq;
    train_rl_defaults(&gq, TRAIN_RL_GRPO);
    gq.policy = sft, gq.reward = rmo, gq.prompts = prompts, gq.out = p3;
    gq.B = 4, gq.group = 4, gq.steps = 30, gq.threads = 1, gq.quiet = 1, gq.ckpt_every = 0;
    gq.sample.max_new = 16;
    gq.sched = (train_sched_t){.max_lr = 2e-3f, .min_lr = 2e-3f};
    rc = train_rl_run(&gq, &one, &err);
    n = series(p3, "reward", rew, 64);
    r0 = mean(rew, 0, 5), r1 = mean(rew, n - 5, n);
    ok(rc == 0 && n == 30 && r1 > r0 + 4, "GRPO raises the mean reward: %.3f -> %.3f %s", r0, r1, rc ? err.msg : "");
    char *png = gl_path_join(p1, "rl.png");
    FILE *f = fopen(png, "rb");
    unsigned char sig[8] = {0};
    ok(f && fread(sig, 1, 8, f) == 8 && sig[0] == 0x89 && sig[1] == 'P', "rl.png written");
    if (f)
        fclose(f);
    free(png), free(p1), free(p2), free(p3);
    free(docs), free(rank), free(rval), free(prompts), free(sft), free(rmo);
}

int main(void)
{
    test_pieces();
    test_model_gradients();
    test_stage(tap_tmpdir());
    return tap_done();
}
