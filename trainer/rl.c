/* rl.c — the RL stage: PPO against a reward model with a KL leash to the
 * SFT model (InstructGPT), and GRPO (DeepSeekMath), sharing one loop.
 *
 * One step:
 *  1. Prompts. The step's global batch is the next world * B prompts of a
 *     per-epoch shuffled order (a pure function of seed and epoch); rank r
 *     takes the r-th slice of B, each prompt repeated `group` times (GRPO's
 *     G samples; PPO's group is 1). A prompt longer than the context leaves
 *     room for max_new tokens by losing its start.
 *  2. Rollouts. One train_generate call over all of a rank's rows (KV
 *     cache, prompts of different lengths in lock step), stopping at
 *     end-of-text. Each row samples from its own seed, a hash of (seed,
 *     step, global row), so a row's response does not depend on how the
 *     rows are spread over ranks: `mpirun -np 2` with B prompts each rolls
 *     out what one process with 2B does.
 *  3. Scoring, one batched forward each (in chunks of `micro` rows): the
 *     policy (the old log-probabilities and the entropy), the frozen
 *     reference (its log-probabilities), PPO's critic (values) and the
 *     reward model (the score at the true last token of prompt+response).
 *     A response cut at max_new without end-of-text is scored with an
 *     end-of-text appended — the layout the RM was trained on — minus
 *     missing_eot_penalty (TRL's missing_eos_penalty; 0 by default).
 *  4. Advantages. PPO: per-token rewards -beta (log pi - log pi_ref), plus
 *     the score at the last token; GAE over each response with the
 *     critic's values; advantages whitened over the global batch. GRPO:
 *     (score - group mean) / group std for every token of a response, no
 *     critic; the KL to the reference is a loss term (k3 estimator) instead
 *     of a reward penalty.
 *  5. Update. `epochs` passes; each pass is a permutation of the global
 *     rows (the same on every rank) cut into `minibatches`, each rank
 *     working on the rows it holds. A minibatch's loss is the mean over its
 *     global response tokens, so after the all-reduce every rank holds the
 *     gradient one process would compute; clipped, one AdamW step per model.
 *     PPO: clipped surrogate on the policy, clipped value loss on the
 *     critic, and with --ptx-data ptx_coef times the language-model loss
 *     on a batch of pretraining windows (PPO-ptx). GRPO: clipped surrogate
 *     plus beta times the k3 KL estimate.
 *  6. With target_kl > 0, beta follows Ziegler et al.'s proportional
 *     controller: beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * N / horizon.
 *
 * Determinism: prompts, seeds and minibatch permutations are functions of
 * (seed, step), and a checkpoint holds the weights and moments of policy
 * and critic, beta and the sampler positions, so a resumed run repeats the
 * uninterrupted run's statistics (same threads and ranks).
 *
 * Workload: generation dominates a step (one position per forward, small
 * matrices); scoring and the update are full-sequence forwards/backwards.
 * The metrics report the share of each.
 */
#include "trainer/rl.h"
#include "shards/shards.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RL_STATE_FORMAT 1

void train_rl_defaults(train_rl_opts_t *o, train_rl_algo_t algo)
{
    memset(o, 0, sizeof *o);
    o->algo = algo;
    o->B = 8;
    o->group = algo == TRAIN_RL_GRPO ? 4 : 1;
    o->epochs = algo == TRAIN_RL_GRPO ? 1 : 4;
    o->minibatches = 1;
    o->steps = 200;
    o->sched = (train_sched_t){.max_lr = 1e-5f, .min_lr = 1e-5f, .warmup = 0};
    o->value_lr = 1e-5f;
    o->adamw = (train_adamw_t){.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0};
    o->clip = 1.0f;
    o->kl_coef = algo == TRAIN_RL_GRPO ? 0.04f : 0.02f;
    o->kl_horizon = 10000;
    o->gamma = 1;
    o->lam = 0.95f;
    o->cliprange = 0.2f;
    o->cliprange_value = 0.2f;
    o->ptx_coef = 1;
    o->ptx_B = 4;
    o->sample = (train_sample_opts_t){.temperature = 1, .max_new = 32, .stop_id = -1};
    o->seed = 1337;
    o->ckpt_every = 50;
    o->log_every = 1;
}

/* ---- the pieces --------------------------------------------------------- */

void train_rl_gae(const float *rew, const float *val, int n, float gamma, float lam, float *adv, float *ret)
{
    double a = 0;
    for (int t = n - 1; t >= 0; t--) {
        double next = t + 1 < n ? val[t + 1] : 0;
        double delta = rew[t] + gamma * next - val[t];
        a = delta + (double)gamma * lam * a;
        adv[t] = (float)a;
        ret[t] = (float)(a + val[t]);
    }
}

int train_rl_whiten(float *x, size_t n, train_dist_t *dist, gl_err_t *err)
{
    double s[2] = {0, (double)n};
    for (size_t i = 0; i < n; i++)
        s[0] += x[i];
    int rc = train_dist_sum(dist, s, 2, err);
    if (rc)
        return rc;
    double mean = s[1] > 0 ? s[0] / s[1] : 0, v[1] = {0};
    for (size_t i = 0; i < n; i++)
        v[0] += (x[i] - mean) * (x[i] - mean);
    if ((rc = train_dist_sum(dist, v, 1, err)))
        return rc;
    double rstd = 1 / sqrt((s[1] > 0 ? v[0] / s[1] : 0) + 1e-8);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((x[i] - mean) * rstd);
    return GL_OK;
}

void train_rl_group_advantages(const float *score, int groups, int G, float *adv)
{
    for (int g = 0; g < groups; g++) {
        const float *s = score + (size_t)g * G;
        double mean = 0, var = 0;
        for (int i = 0; i < G; i++)
            mean += s[i];
        mean /= G;
        for (int i = 0; i < G; i++)
            var += (s[i] - mean) * (s[i] - mean);
        double sd = G > 1 ? sqrt(var / (G - 1)) : 0;
        for (int i = 0; i < G; i++)
            adv[(size_t)g * G + i] = sd > 0 ? (float)((s[i] - mean) / (sd + 1e-4)) : 0.0f;
    }
}

double train_rl_policy_loss(const float *logp, const float *old, const float *adv, int n, float eps, float w,
                            float *dlogp, double *clipped, double *approx_kl)
{
    double loss = 0;
    for (int i = 0; i < n; i++) {
        double lr = (double)logp[i] - old[i], r = exp(lr), a = adv[i];
        double rc = r < 1 - eps ? 1 - eps : r > 1 + eps ? 1 + eps : r;
        double l1 = -a * r, l2 = -a * rc;
        int clip = l2 > l1;
        loss += clip ? l2 : l1;
        if (dlogp)
            dlogp[i] = clip ? 0.0f : (float)(w * -a * r); /* d(-a r)/dlogp = -a r */
        if (clipped)
            *clipped += clip;
        if (approx_kl)
            *approx_kl += (r - 1) - lr;
    }
    return w * loss;
}

double train_rl_value_loss(const float *v, const float *old, const float *ret, int n, float eps, float w, float *dv,
                           double *clipped)
{
    double loss = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)v[i] - old[i];
        double vc = old[i] + (d < -eps ? -eps : d > eps ? eps : d);
        double e1 = (double)v[i] - ret[i], e2 = vc - ret[i];
        int clip = e2 * e2 > e1 * e1;
        loss += 0.5 * (clip ? e2 * e2 : e1 * e1);
        if (dv) /* the clipped term moves only while v is inside the band, where vc = v */
            dv[i] = (float)(w * (clip ? (fabs(d) < eps ? e2 : 0) : e1));
        if (clipped)
            *clipped += clip;
    }
    return w * loss;
}

double train_rl_kl_k3(const float *logp, const float *ref, int n, float w, float *dlogp)
{
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)ref[i] - logp[i], e = exp(d);
        sum += e - d - 1;
        if (dlogp)
            dlogp[i] += (float)(w * (1 - e)); /* d/dlogp (e^(ref-logp) - (ref-logp) - 1) */
    }
    return w * sum;
}

/* Forward of packed rows with targets on the response tokens; reads the
 * log-probabilities (and entropies into ent via entbuf[rows * T]). tgt is
 * the caller's (rows * T), kept until the backward. */
static int logprobs_fw(train_model_t *m, const int32_t *tok, int32_t *tgt, const int *plen, const int *rlen,
                       int rows, int T, int stride, float *logp, float *ent, float *entbuf, gl_err_t *err)
{
    for (int i = 0; i < rows; i++) {
        if (plen[i] < 1 || rlen[i] < 1 || plen[i] + rlen[i] > T)
            return gl_err_set(err, GL_ERANGE, "row %d: prompt %d + response %d tokens outside 1..%d", i, plen[i],
                              rlen[i], T);
        int32_t *tr = tgt + (size_t)i * T;
        const int32_t *r = tok + (size_t)i * T;
        for (int t = 0; t < T; t++)
            tr[t] = t >= plen[i] - 1 && t < plen[i] + rlen[i] - 1 ? r[t + 1] : -1;
    }
    int rc = train_model_forward(m, tok, tgt, NULL, rows, T, err);
    if (rc)
        return rc;
    if (ent)
        train_model_entropy(m, entbuf);
    for (int i = 0; i < rows; i++) {
        size_t at = (size_t)i * T + (size_t)(plen[i] - 1);
        for (int j = 0; j < rlen[i]; j++) {
            if (logp)
                logp[(size_t)i * stride + j] = -m->acts.losses[at + j];
            if (ent)
                ent[(size_t)i * stride + j] = entbuf[at + j];
        }
    }
    return GL_OK;
}

int train_rl_logprobs(train_model_t *m, const int32_t *tok, int32_t *tgt, const int *plen, const int *rlen, int rows,
                      int T, int stride, float *logp, float *entropy, gl_err_t *err)
{
    float *eb = entropy ? malloc((size_t)rows * T * sizeof *eb) : NULL;
    int rc = entropy && !eb ? gl_err_set(err, GL_ENOMEM, "logprobs: out of memory")
                            : logprobs_fw(m, tok, tgt, plen, rlen, rows, T, stride, logp, entropy, eb, err);
    free(eb);
    return rc;
}

/* Values of the last forward (no targets needed). */
static void values_of(const train_model_t *m, const float *w, const int *plen, const int *rlen, int rows, int T,
                      int stride, float *values)
{
    int C = m->cfg.n_embd;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < rlen[i]; j++) {
            const float *h = m->acts.lnf + ((size_t)i * T + (size_t)(plen[i] - 1 + j)) * C;
            double v = 0;
            for (int c = 0; c < C; c++)
                v += (double)w[c] * h[c];
            values[(size_t)i * stride + j] = (float)v;
        }
}

int train_rl_values(train_model_t *m, const float *w, const int32_t *tok, const int *plen, const int *rlen, int rows,
                    int T, int stride, float *values, gl_err_t *err)
{
    for (int i = 0; i < rows; i++)
        if (plen[i] < 1 || rlen[i] < 1 || plen[i] + rlen[i] > T)
            return gl_err_set(err, GL_ERANGE, "row %d: prompt %d + response %d tokens outside 1..%d", i, plen[i],
                              rlen[i], T);
    int rc = train_model_forward(m, tok, NULL, NULL, rows, T, err);
    if (!rc)
        values_of(m, w, plen, rlen, rows, T, stride, values);
    return rc;
}

/* The head file beside a checkpoint's model file. Caller frees. */
static char *head_path_of(const char *model_path)
{
    char *dir = gl_xstrdup(model_path), *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    char *hp = gl_path_join(slash ? dir : ".", "score.safetensors");
    free(dir);
    return hp;
}

int train_rl_load_rm(const char *ckpt, int B, int T, int flags, train_model_t *m, float **w, gl_err_t *err)
{
    train_config_t cfg;
    train_head_t h = {0};
    char *mp = train_checkpoint_model_path(ckpt, err), *hp = NULL;
    int rc;
    *w = NULL;
    if (!mp)
        return err->code;
    hp = head_path_of(mp);
    struct stat st;
    if (stat(hp, &st) != 0) {
        rc = gl_err_set(err, GL_ENOTFOUND, "%s: not a reward model (no score.safetensors beside %s)", ckpt, mp);
        goto out;
    }
    if ((rc = train_read_config(mp, &cfg, err)) || (rc = train_model_init(m, &cfg, B, T, flags, err)) ||
        (rc = train_load(m, mp, 0, err)))
        goto out;
    h.C = cfg.n_embd;
    h.w = gl_xcalloc((size_t)h.C, sizeof *h.w);
    if ((rc = train_head_load(&h, hp, err))) {
        free(h.w);
        goto out;
    }
    *w = h.w;
out:
    if (rc)
        train_model_free(m);
    free(mp), free(hp);
    return rc;
}

/* ---- rollouts ------------------------------------------------------------- */

typedef struct {
    int R, T, S;          /* rows, sequence capacity, response stride (max_new) */
    int32_t *seq;         /* R * T: prompt, response, then end-of-text padding */
    int *plen, *rlen;
    int32_t *resp;        /* R * S: train_generate's output */
    uint8_t *cut;         /* R: stopped at max_new without end-of-text */
    float *old, *ref, *ent, *val, *adv, *ret; /* R * S, per response token */
    float *score;         /* R: RM score (minus the missing-eot penalty) */
    float *raw;           /* R: RM score */
    uint64_t *seeds;      /* R */
} rollout_t;

static void rollout_init(rollout_t *ro, int R, int T, int S)
{
    ro->R = R, ro->T = T, ro->S = S;
    size_t rs = (size_t)R * S;
    ro->seq = gl_xcalloc((size_t)R * T, sizeof *ro->seq);
    ro->plen = gl_xcalloc((size_t)R, sizeof *ro->plen);
    ro->rlen = gl_xcalloc((size_t)R, sizeof *ro->rlen);
    ro->resp = gl_xcalloc(rs, sizeof *ro->resp);
    ro->cut = gl_xcalloc((size_t)R, 1);
    ro->old = gl_xcalloc(rs, sizeof(float));
    ro->ref = gl_xcalloc(rs, sizeof(float));
    ro->ent = gl_xcalloc(rs, sizeof(float));
    ro->val = gl_xcalloc(rs, sizeof(float));
    ro->adv = gl_xcalloc(rs, sizeof(float));
    ro->ret = gl_xcalloc(rs, sizeof(float));
    ro->score = gl_xcalloc((size_t)R, sizeof(float));
    ro->raw = gl_xcalloc((size_t)R, sizeof(float));
    ro->seeds = gl_xcalloc((size_t)R, sizeof *ro->seeds);
}

static void rollout_free(rollout_t *ro)
{
    free(ro->seq), free(ro->plen), free(ro->rlen), free(ro->resp), free(ro->cut), free(ro->old), free(ro->ref);
    free(ro->ent), free(ro->val), free(ro->adv), free(ro->ret), free(ro->score), free(ro->raw), free(ro->seeds);
    memset(ro, 0, sizeof *ro);
}

/* Copies rows idx[0..n) into a packed batch tok (n, Tc) and returns Tc,
 * the longest row (+1 with eot_cut for cut rows, scored with an
 * end-of-text appended: the padding after them is end-of-text already). */
static int pack_rows(const rollout_t *ro, const int *idx, int n, int eot_cut, int32_t *tok, int *plen, int *rlen,
                     int *len)
{
    int Tc = 1;
    for (int i = 0; i < n; i++) {
        int r = idx[i];
        plen[i] = ro->plen[r];
        rlen[i] = ro->rlen[r];
        len[i] = plen[i] + rlen[i] + (eot_cut && ro->cut[r]);
        Tc = len[i] > Tc ? len[i] : Tc;
    }
    for (int i = 0; i < n; i++)
        memcpy(tok + (size_t)i * Tc, ro->seq + (size_t)idx[i] * ro->T, (size_t)Tc * sizeof *tok);
    return Tc;
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The prompts in a per-epoch shuffled order; every rank walks the same
 * global sequence. */
typedef struct {
    uint64_t *order, n, epoch, next, seed;
} prompt_order_t;

static void order_shuffle(prompt_order_t *p)
{
    for (uint64_t i = 0; i < p->n; i++)
        p->order[i] = i;
    uint64_t s = mix64(p->seed ^ mix64(p->epoch + 0x5151)) | 1;
    for (uint64_t i = p->n; i > 1; i--) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint64_t j = s % i, t = p->order[i - 1];
        p->order[i - 1] = p->order[j];
        p->order[j] = t;
    }
}

static uint64_t order_take(prompt_order_t *p)
{
    if (p->next >= p->n) {
        p->epoch++;
        p->next = 0;
        order_shuffle(p);
    }
    return p->order[p->next++];
}

/* ---- checkpoints ------------------------------------------------------------ */

typedef struct {
    long step;
    uint64_t epoch, next;          /* prompt order */
    uint64_t ptx_epoch, ptx_next;  /* pretraining windows */
    double beta;                   /* KL coefficient */
} rl_state_t;

static const char *const ckpt_files[] = {"model.safetensors", "optim.safetensors", "value.safetensors",
                                         "value_optim.safetensors", "value_head.safetensors", "state.json"};

static json_t *rl_settings(const train_rl_opts_t *o, const train_model_t *pm, int world)
{
    return json_pack("{s:s,s:i,s:i,s:i,s:I,s:i,s:{s:i,s:i,s:i,s:i,s:i}}", "algo",
                     o->algo == TRAIN_RL_GRPO ? "grpo" : "ppo", "B", o->B, "group", o->group, "max_new",
                     o->sample.max_new, "seed", (json_int_t)o->seed, "world", world, "config", "n_layer",
                     pm->cfg.n_layer, "n_head", pm->cfg.n_head, "n_embd", pm->cfg.n_embd, "n_ctx", pm->cfg.n_ctx,
                     "vocab_size", pm->cfg.vocab_size);
}

static int save_rl_checkpoint(const train_rl_opts_t *o, const train_model_t *pm, const train_optim_t *popt,
                              const train_model_t *vm, const train_optim_t *vopt, const train_head_t *vh,
                              const rl_state_t *st, int world, gl_err_t *err)
{
    char name[64], tmpname[64];
    snprintf(name, sizeof name, "ckpt-%08ld", st->step);
    snprintf(tmpname, sizeof tmpname, "ckpt-%08ld.tmp", st->step);
    char *dir = gl_path_join(o->out, name), *tmp = gl_path_join(o->out, tmpname);
    char *p[6];
    for (int i = 0; i < 6; i++)
        p[i] = gl_path_join(tmp, ckpt_files[i]);
    int rc = gl_mkdir_p(tmp, err);
    if (!rc)
        rc = train_save(pm, p[0], 0, err);
    if (!rc)
        rc = train_optim_save(popt, pm, p[1], err);
    if (!rc && vm) {
        rc = train_save(vm, p[2], 0, err);
        if (!rc)
            rc = train_optim_save(vopt, vm, p[3], err);
        if (!rc)
            rc = train_head_save(vh, p[4], 1, err);
    }
    if (!rc) {
        json_t *j = json_pack("{s:i,s:I,s:{s:I,s:I},s:{s:I,s:I},s:f,s:o}", "format", RL_STATE_FORMAT, "step",
                              (json_int_t)st->step, "sampler", "epoch", (json_int_t)st->epoch, "next",
                              (json_int_t)st->next, "ptx", "epoch", (json_int_t)st->ptx_epoch, "next",
                              (json_int_t)st->ptx_next, "kl_coef", st->beta, "run", rl_settings(o, pm, world));
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        rc = gl_write_file_atomic(p[5], s, strlen(s), err);
        free(s);
        json_decref(j);
    }
    if (!rc) {
        struct stat stt;
        if (stat(dir, &stt) == 0) { /* the same step from an earlier, killed run */
            for (int i = 0; i < 6; i++) {
                char *f = gl_path_join(dir, ckpt_files[i]);
                unlink(f);
                free(f);
            }
            rmdir(dir);
        }
        rc = gl_rename_durable(tmp, dir, err);
    }
    if (!rc) {
        char *lp = gl_path_join(o->out, "latest");
        rc = gl_write_file_atomic(lp, name, strlen(name), err);
        free(lp);
    }
    for (int i = 0; i < 6; i++)
        free(p[i]);
    free(dir), free(tmp);
    return rc;
}

static int load_rl_state(const char *dir, const train_rl_opts_t *o, const train_model_t *pm, int world,
                         rl_state_t *st, gl_err_t *err)
{
    char *sp = gl_path_join(dir, "state.json");
    json_error_t je;
    json_t *j = json_load_file(sp, 0, &je), *run = NULL, *want = rl_settings(o, pm, world);
    json_int_t fmt = 0, step = 0, ep = 0, nx = 0, pep = 0, pnx = 0;
    double beta = 0;
    int rc = GL_OK;
    if (!j) {
        rc = gl_err_set(err, GL_ECORRUPT, "%s: %s (line %d)", sp, je.text, je.line);
        goto out;
    }
    if (json_unpack_ex(j, &je, 0, "{s:I,s:I,s:{s:I,s:I},s:{s:I,s:I},s:F,s:o}", "format", &fmt, "step", &step,
                       "sampler", "epoch", &ep, "next", &nx, "ptx", "epoch", &pep, "next", &pnx, "kl_coef", &beta,
                       "run", &run)) {
        rc = gl_err_set(err, GL_ECORRUPT, "%s: %s", sp, je.text);
        goto out;
    }
    if (fmt != RL_STATE_FORMAT) {
        rc = gl_err_set(err, GL_EVERSION, "%s: state format %lld; this build reads %d", sp, (long long)fmt,
                        RL_STATE_FORMAT);
        goto out;
    }
    if (!json_equal(run, want)) {
        char *a = json_dumps(run, JSON_COMPACT | JSON_SORT_KEYS), *b = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
        rc = gl_err_set(err, GL_EMISMATCH, "%s: the checkpoint was made with %s; this run has %s: resume with the "
                        "same settings", sp, a, b);
        free(a), free(b);
        goto out;
    }
    st->step = (long)step;
    st->epoch = (uint64_t)ep, st->next = (uint64_t)nx;
    st->ptx_epoch = (uint64_t)pep, st->ptx_next = (uint64_t)pnx;
    st->beta = beta;
out:
    json_decref(j);
    json_decref(want);
    free(sp);
    return rc;
}

/* ---- the run ------------------------------------------------------------- */

/* Checks a model's vocabulary against the prompts' tokenizer. */
static int check_vocab(const char *what, const train_config_t *c, const Gptline__TokenizerId *tid, gl_err_t *err)
{
    if (c->vocab_size != (int)tid->vocab_size)
        return gl_err_set(err, GL_EMISMATCH, "%s: the model's vocabulary has %d tokens, the prompts' tokenizer "
                          "'%s' has %u", what, c->vocab_size, tid->name, tid->vocab_size);
    if (c->tokenizer_hash && tid->hash && c->tokenizer_hash != tid->hash)
        return gl_err_set(err, GL_EMISMATCH, "%s: the model was trained with tokenizer %016llx, the prompts were "
                          "made with '%s' (%016llx)", what, (unsigned long long)c->tokenizer_hash, tid->name,
                          (unsigned long long)tid->hash);
    return GL_OK;
}

/* Scratch for chunks of rows. */
typedef struct {
    int cap, T;
    int *idx, *plen, *rlen, *len;
    int32_t *tok, *tgt;
    float *coef, *entbuf, *lp, *dl, *v, *dv, *dlnf, *rew;
} chunk_t;

/* Statistics of one step, summed over ranks at the end of it. */
enum {
    S_SCORE, S_SCORE2, S_KL, S_ENT, S_TOK, S_ROWS, S_CUT, S_LEN, /* rollouts */
    S_PG, S_CLIP, S_AKL, S_UTOK, S_VL, S_VCLIP, S_K3, S_PTX, S_PTXN, S_GN, S_GNN, /* updates */
    S_N
};

int train_rl_run(const train_rl_opts_t *o, train_dist_t *dist, gl_err_t *err)
{
    int rc = GL_OK, lead = dist->rank == 0, ppo = o->algo == TRAIN_RL_PPO;
    train_model_t pm = {0}, ref = {0}, rm = {0}, vm = {0};
    train_optim_t popt = {0}, vopt = {0};
    train_head_t vh = {0};
    train_kv_t kv = {0};
    float *rm_w = NULL;
    shard_dataset_t *ds = NULL, *ptx_ds = NULL;
    shard_sampler_t ptx_s;
    int32_t *ptx_win = NULL, *ptx_tok = NULL, *ptx_tgt = NULL;
    prompt_order_t po = {0};
    rollout_t ro = {0};
    chunk_t ck = {0};
    FILE *metrics = NULL;
    char *metrics_path = gl_path_join(o->out, "metrics.jsonl"), *policy_path = NULL, *resume_dir = NULL;
    const int32_t **prompt_ptr = NULL;
    double *glob_len = NULL;
    int *perm = NULL, *mine = NULL;
    float *flat = NULL;
    rl_state_t st = {0};
    int G = o->group, world = dist->world;
    int R = o->B * G, NG = R * world, S = o->sample.max_new;

    if (o->B <= 0 || G <= 0 || o->epochs <= 0 || o->minibatches <= 0 || o->steps <= 0 || S <= 0 || o->micro < 0)
        return gl_err_set(err, GL_EINVAL, "batch, group, epochs, minibatches, steps and max-new must be positive");
    if (o->minibatches > NG)
        return gl_err_set(err, GL_EINVAL, "%d minibatches of %d rollouts: fewer rollouts than minibatches",
                          o->minibatches, NG);
    if (o->algo == TRAIN_RL_GRPO && G < 2)
        return gl_err_set(err, GL_EINVAL, "GRPO needs a group of 2 or more samples per prompt");

    /* prompts */
    if (!(ds = shard_dataset_open(o->prompts, 0, err))) {
        rc = err->code;
        goto out;
    }
    const Gptline__TokenizerId *tid = shard_dataset_tokenizer(ds);
    if (!tid || shard_dataset_kind(ds) != GPTLINE__RECORD_KIND__RL_PROMPTS) {
        rc = gl_err_set(err, GL_EMISMATCH, "%s: not RL prompt records (make them with `gptline shards import "
                        "--kind rl`)", o->prompts);
        goto out;
    }
    po.n = shard_dataset_docs(ds);
    if (!po.n) {
        rc = gl_err_set(err, GL_EINVAL, "%s: no prompts", o->prompts);
        goto out;
    }
    po.seed = o->seed;
    po.order = gl_xmalloc(po.n * sizeof *po.order);
    order_shuffle(&po);
    int32_t eot = (int32_t)tid->eot_id;

    /* models: the policy and its frozen reference from the SFT checkpoint,
     * the reward model, and PPO's critic initialised as the reward model */
    train_config_t pcfg, rcfg;
    if (!(policy_path = train_checkpoint_model_path(o->policy, err))) {
        rc = err->code;
        goto out;
    }
    char *rm_model = train_checkpoint_model_path(o->reward, err);
    if (!rm_model) {
        rc = err->code;
        goto out;
    }
    rc = train_read_config(rm_model, &rcfg, err);
    if (!rc)
        rc = check_vocab(rm_model, &rcfg, tid, err);
    free(rm_model);
    if (rc || (rc = train_read_config(policy_path, &pcfg, err)) || (rc = check_vocab(policy_path, &pcfg, tid, err)))
        goto out;
    int T = pcfg.n_ctx < rcfg.n_ctx ? pcfg.n_ctx : rcfg.n_ctx;
    if (S + 2 > T) {
        rc = gl_err_set(err, GL_EINVAL, "--max-new %d leaves no room for a prompt in a context of %d", S, T);
        goto out;
    }
    int pmax = T - S - 1; /* prompt tokens kept: the response and an end-of-text fit after them */
    int cap = o->micro > 0 && o->micro < R ? o->micro : R;
    int pcap = o->ptx_data && o->ptx_B > cap ? o->ptx_B : cap;
    if (o->threads > 0)
        train_set_threads(o->threads);
    if ((rc = train_model_init(&pm, &pcfg, pcap, T, TRAIN_GRADS, err)) || (rc = train_load(&pm, policy_path, 0, err)) ||
        (rc = train_model_init(&ref, &pcfg, cap, T, 0, err)) || (rc = train_load(&ref, policy_path, 0, err)) ||
        (rc = train_optim_init(&popt, &pm, err)) || (rc = train_rl_load_rm(o->reward, cap, T, 0, &rm, &rm_w, err)))
        goto out;
    if (ppo) {
        float *w0 = NULL;
        if ((rc = train_rl_load_rm(o->reward, cap, T, TRAIN_GRADS, &vm, &w0, err)))
            goto out;
        train_head_init(&vh, vm.cfg.n_embd);
        memcpy(vh.w, w0, (size_t)vh.C * sizeof *vh.w);
        free(w0);
        if ((rc = train_optim_init(&vopt, &vm, err)))
            goto out;
    }
    if ((rc = train_kv_init(&kv, &pm, R, T, err)))
        goto out;

    /* the pretraining mix */
    if (o->ptx_data) {
        if (!(ptx_ds = shard_dataset_open(o->ptx_data, 0, err))) {
            rc = err->code;
            goto out;
        }
        const Gptline__TokenizerId *pt = shard_dataset_tokenizer(ptx_ds);
        if (!pt || shard_dataset_kind(ptx_ds) != GPTLINE__RECORD_KIND__DOCUMENTS) {
            rc = gl_err_set(err, GL_EMISMATCH, "%s: not pretraining documents", o->ptx_data);
            goto out;
        }
        if ((rc = check_vocab(o->ptx_data, &pcfg, pt, err)) ||
            (rc = shard_sampler_init(&ptx_s, ptx_ds, (uint32_t)o->ptx_B, (uint32_t)T, o->seed ^ 0x7074,
                                     (uint32_t)dist->rank, (uint32_t)world, 1, err)))
            goto out;
        ptx_win = gl_xmalloc((size_t)o->ptx_B * (T + 1) * sizeof *ptx_win);
        ptx_tok = gl_xmalloc((size_t)o->ptx_B * T * sizeof *ptx_tok);
        ptx_tgt = gl_xmalloc((size_t)o->ptx_B * T * sizeof *ptx_tgt);
    }

    /* buffers */
    rollout_init(&ro, R, T, S);
    prompt_ptr = gl_xmalloc((size_t)R * sizeof *prompt_ptr);
    int Cv = ppo ? vm.cfg.n_embd : 1;
    ck.cap = cap, ck.T = T;
    ck.idx = gl_xmalloc((size_t)R * sizeof *ck.idx);
    ck.plen = gl_xmalloc((size_t)cap * sizeof(int));
    ck.rlen = gl_xmalloc((size_t)cap * sizeof(int));
    ck.len = gl_xmalloc((size_t)cap * sizeof(int));
    ck.tok = gl_xmalloc((size_t)cap * T * sizeof *ck.tok);
    ck.tgt = gl_xmalloc((size_t)cap * T * sizeof *ck.tgt);
    ck.coef = gl_xmalloc((size_t)cap * T * sizeof(float));
    ck.entbuf = gl_xmalloc((size_t)cap * T * sizeof(float));
    ck.lp = gl_xmalloc((size_t)cap * S * sizeof(float));
    ck.dl = gl_xmalloc((size_t)S * sizeof(float));
    ck.v = gl_xmalloc((size_t)cap * S * sizeof(float));
    ck.dv = gl_xmalloc((size_t)S * sizeof(float));
    ck.rew = gl_xmalloc((size_t)S * sizeof(float));
    ck.dlnf = ppo ? gl_xmalloc((size_t)cap * T * Cv * sizeof(float)) : NULL;
    glob_len = gl_xmalloc((size_t)NG * sizeof *glob_len);
    perm = gl_xmalloc((size_t)NG * sizeof *perm);
    mine = gl_xmalloc((size_t)NG * sizeof *mine);
    flat = gl_xmalloc((size_t)R * S * sizeof *flat);

    /* resume */
    st.beta = o->kl_coef;
    if (lead && (rc = gl_mkdir_p(o->out, err)))
        goto out;
    train_dist_barrier(dist);
    if (o->resume) {
        resume_dir = train_latest_checkpoint(o->out, err);
        if (resume_dir) {
            char *p[5];
            for (int i = 0; i < 5; i++)
                p[i] = gl_path_join(resume_dir, ckpt_files[i]);
            rc = load_rl_state(resume_dir, o, &pm, world, &st, err);
            if (!rc)
                rc = train_load(&pm, p[0], 0, err);
            if (!rc)
                rc = train_optim_load(&popt, &pm, p[1], err);
            if (!rc && ppo)
                rc = train_load(&vm, p[2], 0, err);
            if (!rc && ppo)
                rc = train_optim_load(&vopt, &vm, p[3], err);
            if (!rc && ppo)
                rc = train_head_load(&vh, p[4], err);
            for (int i = 0; i < 5; i++)
                free(p[i]);
            if (rc)
                goto out;
            po.epoch = st.epoch;
            po.next = st.next;
            order_shuffle(&po);
            if (ptx_ds)
                shard_sampler_seek(&ptx_s, st.ptx_epoch, st.ptx_next);
        } else if (err->code != GL_ENOTFOUND) {
            rc = err->code;
            goto out;
        }
        gl_err_clear(err);
    }
    if (lead) {
        if (!(metrics = train_metrics_open(metrics_path, st.step, err))) {
            rc = err->code;
            goto out;
        }
    }

    train_sched_t sched = o->sched;
    sched.max_steps = o->steps;
    long until = o->until > 0 && o->until < o->steps ? o->until : o->steps;
    train_sample_opts_t so = o->sample;
    so.stop_id = eot;
    so.row_seeds = ro.seeds;
    double t_start = gl_now();
    long steps_timed = 0;
    train_stop_t stop_sig;
    train_stop_catch(&stop_sig);
    if (lead && !o->quiet)
        gl_info("rl (%s): policy %zu parameters, critic %zu; %d prompts x %d samples per rank, %d ranks; max %d new "
                "tokens; steps %ld..%ld",
                ppo ? "ppo" : "grpo", pm.n_params, vm.n_params, o->B, G, world, S, st.step, until);

    while (st.step < until) {
        double t0 = gl_now(), sums[S_N] = {0};
        int bad = 0;

        /* 1. the step's prompts: the global sequence, this rank's slice */
        for (int k = 0; k < o->B * world && !bad; k++) {
            uint64_t rec = order_take(&po);
            int p = k - dist->rank * o->B;
            if (p < 0 || p >= o->B)
                continue;
            shard_tokens_t t;
            const uint8_t *meta;
            size_t mlen;
            const shard_reader_t *rd;
            if ((bad = shard_dataset_record(ds, rec, &t, &meta, &mlen, &rd, err)))
                break;
            if (t.n == 0) {
                bad = gl_err_set(err, GL_ECORRUPT, "%s: record %llu: an empty prompt", shard_path(rd),
                                 (unsigned long long)rec);
                break;
            }
            uint64_t skip = t.n > (uint64_t)pmax ? t.n - (uint64_t)pmax : 0;
            for (int g = 0; g < G; g++) {
                int r = p * G + g;
                int32_t *row = ro.seq + (size_t)r * T;
                ro.plen[r] = (int)(t.n - skip);
                for (int i = 0; i < ro.plen[r]; i++)
                    row[i] = (int32_t)shard_token_at(&t, skip + (uint64_t)i);
                prompt_ptr[r] = row;
                ro.seeds[r] = mix64(mix64(mix64(o->seed) ^ (uint64_t)st.step) ^ (uint64_t)(dist->rank * R + r));
            }
        }
        if (train_dist_any_error(dist, bad)) {
            rc = bad ? bad : gl_err_set(err, GL_EIO, "another rank failed");
            goto out;
        }

        /* 2. rollouts */
        if ((rc = train_generate(&kv, &pm, prompt_ptr, ro.plen, &so, ro.resp, ro.rlen, NULL, err)))
            goto out;
        for (int r = 0; r < R; r++) {
            int32_t *row = ro.seq + (size_t)r * T;
            memcpy(row + ro.plen[r], ro.resp + (size_t)r * S, (size_t)ro.rlen[r] * sizeof *row);
            for (int i = ro.plen[r] + ro.rlen[r]; i < T; i++)
                row[i] = eot;
            ro.cut[r] = ro.resp[(size_t)r * S + ro.rlen[r] - 1] != eot;
        }
        double t_gen = gl_now();

        /* 3. scoring, in chunks of cap rows */
        for (int r0 = 0; r0 < R; r0 += cap) {
            int n = R - r0 < cap ? R - r0 : cap;
            for (int i = 0; i < n; i++)
                ck.idx[i] = r0 + i;
            int Tc = pack_rows(&ro, ck.idx, n, 0, ck.tok, ck.plen, ck.rlen, ck.len);
            size_t at = (size_t)r0 * S;
            if ((rc = logprobs_fw(&pm, ck.tok, ck.tgt, ck.plen, ck.rlen, n, Tc, S, ro.old + at, ro.ent + at, ck.entbuf,
                                  err)) ||
                (rc = logprobs_fw(&ref, ck.tok, ck.tgt, ck.plen, ck.rlen, n, Tc, S, ro.ref + at, NULL, NULL, err)))
                goto out;
            if (ppo && (rc = train_rl_values(&vm, vh.w, ck.tok, ck.plen, ck.rlen, n, Tc, S, ro.val + at, err)))
                goto out;
            Tc = pack_rows(&ro, ck.idx, n, 1, ck.tok, ck.plen, ck.rlen, ck.len);
            if ((rc = train_rm_score(&rm, rm_w, ck.tok, ck.len, n, Tc, ro.raw + r0, err)))
                goto out;
        }
        for (int r = 0; r < R; r++) {
            ro.score[r] = ro.raw[r] - (ro.cut[r] ? o->missing_eot_penalty : 0);
            double kl = 0;
            for (int j = 0; j < ro.rlen[r]; j++) {
                size_t i = (size_t)r * S + j;
                kl += (double)ro.old[i] - ro.ref[i];
                sums[S_ENT] += ro.ent[i];
            }
            sums[S_SCORE] += ro.raw[r];
            sums[S_SCORE2] += (double)ro.raw[r] * ro.raw[r];
            sums[S_KL] += kl;
            sums[S_TOK] += ro.rlen[r];
            sums[S_CUT] += ro.cut[r];
            sums[S_LEN] += ro.rlen[r];
        }
        sums[S_ROWS] = R;

        /* 4. advantages */
        size_t nflat = 0;
        if (ppo) {
            for (int r = 0; r < R; r++) {
                int n = ro.rlen[r];
                size_t at = (size_t)r * S;
                for (int j = 0; j < n; j++)
                    ck.rew[j] = (float)(-st.beta * ((double)ro.old[at + j] - ro.ref[at + j]));
                ck.rew[n - 1] += ro.score[r];
                train_rl_gae(ck.rew, ro.val + at, n, o->gamma, o->lam, ro.adv + at, ro.ret + at);
                memcpy(flat + nflat, ro.adv + at, (size_t)n * sizeof *flat);
                nflat += (size_t)n;
            }
            if ((rc = train_rl_whiten(flat, nflat, dist, err)))
                goto out;
            nflat = 0;
            for (int r = 0; r < R; r++) {
                memcpy(ro.adv + (size_t)r * S, flat + nflat, (size_t)ro.rlen[r] * sizeof *flat);
                nflat += (size_t)ro.rlen[r];
            }
        } else {
            train_rl_group_advantages(ro.score, o->B, G, flat);
            for (int r = 0; r < R; r++)
                for (int j = 0; j < ro.rlen[r]; j++)
                    ro.adv[(size_t)r * S + j] = flat[r];
        }
        double t_score = gl_now();

        /* 5. update: every rank knows every row's length, for the
         * minibatches' global token counts */
        memset(glob_len, 0, (size_t)NG * sizeof *glob_len);
        for (int r = 0; r < R; r++)
            glob_len[dist->rank * R + r] = ro.rlen[r];
        if ((rc = train_dist_sum(dist, glob_len, NG, err)))
            goto out;
        float lr = train_lr_at(&sched, st.step);
        for (int ep = 0; ep < o->epochs; ep++) {
            for (int i = 0; i < NG; i++)
                perm[i] = i;
            uint64_t s = mix64(mix64(o->seed ^ 0x9e37) ^ ((uint64_t)st.step * 64 + (uint64_t)ep)) | 1;
            for (int i = NG; i > 1; i--) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                int j = (int)(s % (uint64_t)i), t = perm[i - 1];
                perm[i - 1] = perm[j];
                perm[j] = t;
            }
            for (int mb = 0; mb < o->minibatches; mb++) {
                int lo = (int)((long)mb * NG / o->minibatches), hi = (int)((long)(mb + 1) * NG / o->minibatches);
                double ntok = 0;
                int nmine = 0;
                for (int i = lo; i < hi; i++) {
                    ntok += glob_len[perm[i]];
                    if (perm[i] / R == dist->rank)
                        mine[nmine++] = perm[i] % R;
                }
                float scale = (float)(world / ntok); /* the all-reduce's mean then gives sum / ntok */
                train_model_zero_grad(&pm);
                if (ppo) {
                    train_model_zero_grad(&vm);
                    memset(vh.g, 0, (size_t)vh.C * sizeof *vh.g);
                }
                for (int c0 = 0; c0 < nmine; c0 += cap) {
                    int n = nmine - c0 < cap ? nmine - c0 : cap;
                    int Tc = pack_rows(&ro, mine + c0, n, 0, ck.tok, ck.plen, ck.rlen, ck.len);
                    if ((rc = logprobs_fw(&pm, ck.tok, ck.tgt, ck.plen, ck.rlen, n, Tc, S, ck.lp, NULL, NULL, err)))
                        goto out;
                    memset(ck.coef, 0, (size_t)n * Tc * sizeof *ck.coef);
                    for (int i = 0; i < n; i++) {
                        size_t at = (size_t)mine[c0 + i] * S;
                        int len = ck.rlen[i];
                        const float *lp = ck.lp + (size_t)i * S;
                        sums[S_PG] += train_rl_policy_loss(lp, ro.old + at, ro.adv + at, len, o->cliprange, scale,
                                                           ck.dl, &sums[S_CLIP], &sums[S_AKL]) / scale;
                        if (!ppo) { /* GRPO: beta k3(pi || ref) in the loss */
                            sums[S_K3] += train_rl_kl_k3(lp, ro.ref + at, len, 1, NULL);
                            train_rl_kl_k3(lp, ro.ref + at, len, (float)st.beta * scale, ck.dl);
                        }
                        float *cf = ck.coef + (size_t)i * Tc + (ck.plen[i] - 1);
                        for (int j = 0; j < len; j++)
                            cf[j] = -ck.dl[j]; /* coef multiplies -log p */
                        sums[S_UTOK] += len;
                    }
                    train_model_backward_tokens(&pm, ck.coef);
                    if (!ppo)
                        continue;
                    if ((rc = train_rl_values(&vm, vh.w, ck.tok, ck.plen, ck.rlen, n, Tc, S, ck.v, err)))
                        goto out;
                    memset(ck.dlnf, 0, (size_t)n * Tc * Cv * sizeof *ck.dlnf);
                    for (int i = 0; i < n; i++) {
                        size_t at = (size_t)mine[c0 + i] * S;
                        int len = ck.rlen[i];
                        sums[S_VL] += train_rl_value_loss(ck.v + (size_t)i * S, ro.val + at, ro.ret + at, len,
                                                          o->cliprange_value, scale, ck.dv, &sums[S_VCLIP]) / scale;
                        for (int j = 0; j < len; j++) {
                            size_t h = ((size_t)i * Tc + (size_t)(ck.plen[i] - 1 + j)) * Cv;
                            for (int c = 0; c < Cv; c++) {
                                ck.dlnf[h + c] = ck.dv[j] * vh.w[c];
                                vh.g[c] += ck.dv[j] * vm.acts.lnf[h + c];
                            }
                        }
                    }
                    train_model_backward_hidden(&vm, ck.dlnf);
                }
                if (ptx_ds) {
                    if ((rc = shard_sampler_next(&ptx_s, ptx_win, err)))
                        goto out;
                    train_split_windows(ptx_win, o->ptx_B, T, ptx_tok, ptx_tgt);
                    if ((rc = train_model_forward(&pm, ptx_tok, ptx_tgt, NULL, o->ptx_B, T, err)))
                        goto out;
                    train_model_backward(&pm, o->ptx_coef);
                    sums[S_PTX] += pm.loss;
                    sums[S_PTXN] += 1;
                }
                if ((rc = train_dist_allreduce_mean(dist, pm.grads_mem, pm.n_params, err)))
                    goto out;
                sums[S_GN] += train_clip_grad_norm(&pm, o->clip);
                sums[S_GNN] += 1;
                train_adamw_step(&popt, &pm, &o->adamw, lr);
                if (ppo) {
                    if ((rc = train_dist_allreduce_mean(dist, vm.grads_mem, vm.n_params, err)) ||
                        (rc = train_dist_allreduce_mean(dist, vh.g, (size_t)vh.C, err)))
                        goto out;
                    double hn = 0, mn = train_grad_norm(&vm);
                    for (int c = 0; c < vh.C; c++)
                        hn += (double)vh.g[c] * vh.g[c];
                    float norm = (float)sqrt(mn * mn + hn);
                    if (o->clip > 0 && norm > o->clip) {
                        float sc = o->clip / (norm + 1e-6f);
                        for (size_t i = 0; i < vm.n_params; i++)
                            vm.grads_mem[i] *= sc;
                        for (int c = 0; c < vh.C; c++)
                            vh.g[c] *= sc;
                    }
                    train_adamw_step(&vopt, &vm, &o->adamw, o->value_lr);
                    train_head_step(&vh, &o->adamw, o->value_lr);
                }
            }
        }
        double t_train = gl_now();

        /* 6. statistics over all ranks; the KL controller */
        double loc_gn = sums[S_GN], loc_gnn = sums[S_GNN];
        if ((rc = train_dist_sum(dist, sums, S_N, err)))
            goto out;
        /* the gradient norm is the same on every rank (after the all-reduce) */
        sums[S_GN] = loc_gn, sums[S_GNN] = loc_gnn;
        double rows = sums[S_ROWS], utok = sums[S_UTOK];
        double reward = sums[S_SCORE] / rows, kl = sums[S_KL] / rows;
        double reward_sd = sqrt(fmax(0, sums[S_SCORE2] / rows - reward * reward));
        double beta_used = st.beta;
        if (o->target_kl > 0) {
            double e = kl / o->target_kl - 1;
            e = e < -0.2 ? -0.2 : e > 0.2 ? 0.2 : e;
            st.beta *= 1 + e * rows / o->kl_horizon;
        }
        st.step++;
        st.epoch = po.epoch, st.next = po.next;
        if (ptx_ds)
            st.ptx_epoch = ptx_s.epoch, st.ptx_next = ptx_s.next;
        steps_timed++;
        if (lead) {
            double gen_s = t_gen - t0, score_s = t_score - t_gen, train_s = t_train - t_score;
            json_t *j = json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "step",
                                  (json_int_t)(st.step - 1), "reward", reward, "reward_std", reward_sd, "kl", kl,
                                  "kl_coef", beta_used, "objective", reward - beta_used * kl, "entropy",
                                  sums[S_ENT] / sums[S_TOK], "clipfrac", sums[S_CLIP] / utok, "approx_kl",
                                  sums[S_AKL] / utok, "policy_loss", sums[S_PG] / utok, "response_len",
                                  sums[S_LEN] / rows, "cut_frac", sums[S_CUT] / rows, "lr", (double)lr, "grad_norm",
                                  sums[S_GN] / sums[S_GNN]);
            if (ppo) {
                json_object_set_new(j, "value_loss", json_real(sums[S_VL] / utok));
                json_object_set_new(j, "value_clipfrac", json_real(sums[S_VCLIP] / utok));
            } else {
                json_object_set_new(j, "kl_k3", json_real(sums[S_K3] / utok));
            }
            if (ptx_ds)
                json_object_set_new(j, "ptx_loss", json_real(sums[S_PTX] / sums[S_PTXN]));
            /* timings last: every field before them is deterministic */
            json_object_set_new(j, "gen_s", json_real(gen_s));
            json_object_set_new(j, "score_s", json_real(score_s));
            json_object_set_new(j, "train_s", json_real(train_s));
            json_object_set_new(j, "gen_share", json_real(gen_s / (gen_s + score_s + train_s)));
            train_metrics_append(metrics, j);
            json_decref(j);
            if (!o->quiet && (st.step % (o->log_every > 0 ? o->log_every : 1) == 0 || st.step == until)) {
                char eta[32];
                gl_fmt_eta((double)(until - st.step) * ((gl_now() - t_start) / (double)steps_timed), eta, sizeof eta);
                fprintf(stderr,
                        "step %ld/%ld | reward %.4f | kl %.3f | beta %.3g | entropy %.3f | clip %.3f | akl %.2e | "
                        "vloss %.4f | len %.1f | gen %.0f%% | ETA %s\n",
                        st.step, until, reward, kl, beta_used, sums[S_ENT] / sums[S_TOK], sums[S_CLIP] / utok,
                        sums[S_AKL] / utok, ppo ? sums[S_VL] / utok : 0.0, sums[S_LEN] / rows,
                        100 * gen_s / (gen_s + score_s + train_s), eta);
            }
        }
        int stop = train_dist_any_error(dist, train_stop_requested());
        if (lead && (st.step % 10 == 0 || st.step == until || stop)) {
            static const train_plot_panel_t panels[] = {
                {"reward (RM score)", {"reward", "objective"}, {"mean score", "score - beta KL"}},
                {"KL to the reference (nats per response)", {"kl"}, {NULL}},
                {"policy entropy (nats per token)", {"entropy"}, {NULL}},
                {"clip fraction", {"clipfrac", "value_clipfrac"}, {"policy", "value"}},
                {"value loss", {"value_loss"}, {NULL}},
                {"approximate KL old/new", {"approx_kl"}, {NULL}},
                {"response length (tokens)", {"response_len"}, {NULL}},
                {"seconds per step", {"gen_s", "score_s", "train_s"}, {"generation", "scoring", "training"}},
            };
            char *png = gl_path_join(o->out, "rl.png");
            gl_err_t perr;
            if (train_plot_panels(metrics_path, png, panels, (int)(sizeof panels / sizeof *panels), &perr))
                gl_warn("%s", perr.msg);
            free(png);
        }
        if ((o->ckpt_every > 0 && st.step % o->ckpt_every == 0) || st.step == until || stop) {
            if (lead && (rc = save_rl_checkpoint(o, &pm, &popt, ppo ? &vm : NULL, &vopt, &vh, &st, world, err)))
                goto out;
            train_dist_barrier(dist);
        }
        if (stop) {
            rc = gl_err_set(err, GL_EINTERRUPTED, "interrupted at step %ld; checkpoint written, resume with --resume",
                            st.step);
            break;
        }
    }
    train_stop_release(&stop_sig);
out:
    if (metrics)
        fclose(metrics);
    free(metrics_path), free(policy_path), free(resume_dir), free(rm_w);
    free(prompt_ptr), free(glob_len), free(perm), free(mine), free(flat), free(po.order);
    free(ck.idx), free(ck.plen), free(ck.rlen), free(ck.len), free(ck.tok), free(ck.tgt), free(ck.coef);
    free(ck.entbuf), free(ck.lp), free(ck.dl), free(ck.v), free(ck.dv), free(ck.rew), free(ck.dlnf);
    free(ptx_win), free(ptx_tok), free(ptx_tgt);
    rollout_free(&ro);
    train_kv_free(&kv);
    train_head_free(&vh);
    train_optim_free(&popt), train_optim_free(&vopt);
    train_model_free(&pm), train_model_free(&ref), train_model_free(&rm), train_model_free(&vm);
    shard_dataset_close(&ds), shard_dataset_close(&ptx_ds);
    return rc;
}

/* ---- gptline train rl ----------------------------------------------------- */

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static int usage_rl(const char *prog, const train_rl_opts_t *p, const train_rl_opts_t *g)
{
    printf("usage: %s --policy SFT_CKPT --reward RM_CKPT --prompts DIR --out DIR [options]\n\n"
           "Optimises a policy (started from the SFT checkpoint, which also stays as\n"
           "the frozen reference) against a reward model on RL prompt shards: each\n"
           "step rolls out responses with the KV cache, scores them, and updates.\n"
           "Defaults are given as PPO / GRPO where they differ; docs/rl.md explains each.\n\n"
           "  --algo ppo|grpo        PPO with a critic (InstructGPT), or GRPO: group-relative\n"
           "                         advantages, no critic, KL in the loss (ppo)\n"
           "  --resume               continue from OUT/latest (same settings)\n"
           "rollouts:\n"
           "  -B, --batch N          prompts per rank per step (%d)\n"
           "  --group N              samples per prompt (%d / %d)\n"
           "  --max-new N            tokens per response at most (%d)\n"
           "  --temperature X (%g)  --top-k N (0: off)  --top-p X (1: off)\n"
           "  --missing-eot-penalty X  subtracted from the score of a response cut at\n"
           "                         max-new without end-of-text (0)\n"
           "reward and KL:\n"
           "  --kl-coef X            beta: KL penalty per token (PPO) or k3 loss weight (GRPO)\n"
           "                         (%g / %g)\n"
           "  --target-kl X          adapt beta toward this KL per response, nats (0: fixed)\n"
           "  --kl-horizon N         the adaptive controller's horizon in episodes (%g)\n"
           "  --gamma X (%g)  --lam X (%g)   GAE discount and lambda (PPO)\n"
           "update:\n"
           "  --epochs N             passes over each rollout batch (%d / %d)\n"
           "  --minibatches N        optimiser steps per pass (%d)\n"
           "  --micro N              rows per forward/backward; 0: all of a rank's (0)\n"
           "  --cliprange X (%g)  --cliprange-value X (%g)\n"
           "  --steps N (%ld)  --until N (stop early at step N, checkpointed)\n"
           "  --lr X (%g)  --min-lr X (= --lr: constant)  --warmup N (%ld)\n"
           "  --value-lr X           the critic's learning rate (= --lr)\n"
           "  --beta1 X (%g)  --beta2 X (%g)  --wd X (%g)  --clip X (%g)\n"
           "  --ptx-data DIR         pretraining shards: add the PPO-ptx language-model term\n"
           "  --ptx-coef X (%g)  --ptx-batch N (%d windows per optimiser step per rank)\n"
           "other:\n"
           "  --seed N (%llu)  --ckpt-every N (%d)  --log-every N (%d)  --threads N  -q, --quiet\n\n"
           "Writes OUT/metrics.jsonl (a line per step: reward, kl, entropy, clipfrac,\n"
           "value_loss, approx_kl, response_len, gen_s/score_s/train_s, ...), OUT/rl.png\n"
           "and checkpoints (policy, critic, optimisers, beta, sampler). Data-parallel:\n"
           "mpirun -np N gptline train rl ... (each rank its own prompts; gradients and\n"
           "statistics over all; rank 0 writes). SIGINT/SIGTERM checkpoint and stop.\n",
           prog, p->B, p->group, g->group, p->sample.max_new, (double)p->sample.temperature, (double)p->kl_coef,
           (double)g->kl_coef, (double)p->kl_horizon, (double)p->gamma, (double)p->lam, p->epochs, g->epochs,
           p->minibatches, (double)p->cliprange, (double)p->cliprange_value, p->steps, (double)p->sched.max_lr,
           p->sched.warmup, (double)p->adamw.beta1, (double)p->adamw.beta2, (double)p->adamw.weight_decay,
           (double)p->clip, (double)p->ptx_coef, p->ptx_B, (unsigned long long)p->seed, p->ckpt_every,
           p->log_every);
    return GL_EXIT_OK;
}

int train_rl_cmd(int argc, char **argv)
{
    enum { O_POLICY = 256, O_REWARD, O_PROMPTS, O_ALGO, O_RESUME, O_GROUP, O_MAXNEW, O_TEMP, O_TOPK, O_TOPP,
           O_PENALTY, O_KL, O_TKL, O_HORIZON, O_GAMMA, O_LAM, O_EPOCHS, O_MB, O_MICRO, O_CR, O_CRV, O_STEPS,
           O_UNTIL, O_LR, O_MINLR, O_WARMUP, O_VLR, O_B1, O_B2, O_WD, O_CLIP, O_PTX, O_PTXC, O_PTXB, O_SEED,
           O_CKE, O_LOGE, O_THREADS };
    static const struct option opts[] = {
        {"policy", required_argument, NULL, O_POLICY}, {"reward", required_argument, NULL, O_REWARD},
        {"prompts", required_argument, NULL, O_PROMPTS}, {"out", required_argument, NULL, 'o'},
        {"algo", required_argument, NULL, O_ALGO}, {"resume", no_argument, NULL, O_RESUME},
        {"batch", required_argument, NULL, 'B'}, {"group", required_argument, NULL, O_GROUP},
        {"max-new", required_argument, NULL, O_MAXNEW}, {"temperature", required_argument, NULL, O_TEMP},
        {"top-k", required_argument, NULL, O_TOPK}, {"top-p", required_argument, NULL, O_TOPP},
        {"missing-eot-penalty", required_argument, NULL, O_PENALTY}, {"kl-coef", required_argument, NULL, O_KL},
        {"target-kl", required_argument, NULL, O_TKL}, {"kl-horizon", required_argument, NULL, O_HORIZON},
        {"gamma", required_argument, NULL, O_GAMMA}, {"lam", required_argument, NULL, O_LAM},
        {"epochs", required_argument, NULL, O_EPOCHS}, {"minibatches", required_argument, NULL, O_MB},
        {"micro", required_argument, NULL, O_MICRO}, {"cliprange", required_argument, NULL, O_CR},
        {"cliprange-value", required_argument, NULL, O_CRV}, {"steps", required_argument, NULL, O_STEPS},
        {"until", required_argument, NULL, O_UNTIL}, {"lr", required_argument, NULL, O_LR},
        {"min-lr", required_argument, NULL, O_MINLR}, {"warmup", required_argument, NULL, O_WARMUP},
        {"value-lr", required_argument, NULL, O_VLR}, {"beta1", required_argument, NULL, O_B1},
        {"beta2", required_argument, NULL, O_B2}, {"wd", required_argument, NULL, O_WD},
        {"clip", required_argument, NULL, O_CLIP}, {"ptx-data", required_argument, NULL, O_PTX},
        {"ptx-coef", required_argument, NULL, O_PTXC}, {"ptx-batch", required_argument, NULL, O_PTXB},
        {"seed", required_argument, NULL, O_SEED}, {"ckpt-every", required_argument, NULL, O_CKE},
        {"log-every", required_argument, NULL, O_LOGE}, {"threads", required_argument, NULL, O_THREADS},
        {"quiet", no_argument, NULL, 'q'}, {"help", no_argument, NULL, 'h'}, {0}};
    /* the algorithm chooses the defaults: find it first */
    train_rl_algo_t algo = TRAIN_RL_PPO;
    for (int i = 1; i < argc; i++) {
        const char *v = !strcmp(argv[i], "--algo") && i + 1 < argc ? argv[i + 1]
                        : !strncmp(argv[i], "--algo=", 7)         ? argv[i] + 7
                                                                  : NULL;
        if (v && !strcmp(v, "grpo"))
            algo = TRAIN_RL_GRPO;
        else if (v && strcmp(v, "ppo"))
            return gl_usage_error(argv[0], "--algo must be ppo or grpo");
    }
    train_rl_opts_t o, dp, dg;
    train_rl_defaults(&o, algo);
    train_rl_defaults(&dp, TRAIN_RL_PPO);
    train_rl_defaults(&dg, TRAIN_RL_GRPO);
    int c, lr_set = 0, min_set = 0, vlr_set = 0;
    double v = 0;
    while ((c = getopt_long(argc, argv, "o:B:qh", opts, NULL)) != -1) {
        int bad = 0;
        const double I = 1 << 30;
        switch (c) {
        case O_POLICY: o.policy = optarg; break;
        case O_REWARD: o.reward = optarg; break;
        case O_PROMPTS: o.prompts = optarg; break;
        case 'o': o.out = optarg; break;
        case O_ALGO: break;
        case O_RESUME: o.resume = 1; break;
        case 'B': bad = parse_num(optarg, 1, I, &v); o.B = (int)v; break;
        case O_GROUP: bad = parse_num(optarg, 1, I, &v); o.group = (int)v; break;
        case O_MAXNEW: bad = parse_num(optarg, 1, I, &v); o.sample.max_new = (int)v; break;
        case O_TEMP: bad = parse_num(optarg, 1e-3, 100, &v); o.sample.temperature = (float)v; break;
        case O_TOPK: bad = parse_num(optarg, 0, I, &v); o.sample.top_k = (int)v; break;
        case O_TOPP: bad = parse_num(optarg, 0, 1, &v); o.sample.top_p = (float)v; break;
        case O_PENALTY: bad = parse_num(optarg, -1e9, 1e9, &v); o.missing_eot_penalty = (float)v; break;
        case O_KL: bad = parse_num(optarg, 0, 1e6, &v); o.kl_coef = (float)v; break;
        case O_TKL: bad = parse_num(optarg, 0, 1e9, &v); o.target_kl = (float)v; break;
        case O_HORIZON: bad = parse_num(optarg, 1, 1e12, &v); o.kl_horizon = (float)v; break;
        case O_GAMMA: bad = parse_num(optarg, 0, 1, &v); o.gamma = (float)v; break;
        case O_LAM: bad = parse_num(optarg, 0, 1, &v); o.lam = (float)v; break;
        case O_EPOCHS: bad = parse_num(optarg, 1, I, &v); o.epochs = (int)v; break;
        case O_MB: bad = parse_num(optarg, 1, I, &v); o.minibatches = (int)v; break;
        case O_MICRO: bad = parse_num(optarg, 0, I, &v); o.micro = (int)v; break;
        case O_CR: bad = parse_num(optarg, 0, 10, &v); o.cliprange = (float)v; break;
        case O_CRV: bad = parse_num(optarg, 0, 1e9, &v); o.cliprange_value = (float)v; break;
        case O_STEPS: bad = parse_num(optarg, 1, I, &v); o.steps = (long)v; break;
        case O_UNTIL: bad = parse_num(optarg, 0, I, &v); o.until = (long)v; break;
        case O_LR: bad = parse_num(optarg, 0, 10, &v); o.sched.max_lr = (float)v; lr_set = 1; break;
        case O_MINLR: bad = parse_num(optarg, 0, 10, &v); o.sched.min_lr = (float)v; min_set = 1; break;
        case O_WARMUP: bad = parse_num(optarg, 0, I, &v); o.sched.warmup = (long)v; break;
        case O_VLR: bad = parse_num(optarg, 0, 10, &v); o.value_lr = (float)v; vlr_set = 1; break;
        case O_B1: bad = parse_num(optarg, 0, 1, &v); o.adamw.beta1 = (float)v; break;
        case O_B2: bad = parse_num(optarg, 0, 1, &v); o.adamw.beta2 = (float)v; break;
        case O_WD: bad = parse_num(optarg, 0, 10, &v); o.adamw.weight_decay = (float)v; break;
        case O_CLIP: bad = parse_num(optarg, 0, 1e9, &v); o.clip = (float)v; break;
        case O_PTX: o.ptx_data = optarg; break;
        case O_PTXC: bad = parse_num(optarg, 0, 1e9, &v); o.ptx_coef = (float)v; break;
        case O_PTXB: bad = parse_num(optarg, 1, I, &v); o.ptx_B = (int)v; break;
        case O_SEED: bad = parse_num(optarg, 0, 1e18, &v); o.seed = (uint64_t)v; break;
        case O_CKE: bad = parse_num(optarg, 0, I, &v); o.ckpt_every = (int)v; break;
        case O_LOGE: bad = parse_num(optarg, 0, I, &v); o.log_every = (int)v; break;
        case O_THREADS: bad = parse_num(optarg, 0, 4096, &v); o.threads = (int)v; break;
        case 'q': o.quiet = 1; break;
        case 'h': return usage_rl(argv[0], &dp, &dg);
        default: return gl_usage_error(argv[0], "bad option");
        }
        if (bad)
            return gl_usage_error(argv[0], "bad value '%s'", optarg);
    }
    if (optind != argc)
        return gl_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
    if (!o.policy || !o.reward || !o.prompts || !o.out)
        return gl_usage_error(argv[0], "--policy, --reward, --prompts and --out are required");
    if (lr_set && !min_set)
        o.sched.min_lr = o.sched.max_lr;
    if (lr_set && !vlr_set)
        o.value_lr = o.sched.max_lr;
    gl_err_t err = {0};
    train_dist_t dist;
    if (train_dist_init(&dist, &err))
        return gl_cmd_fail(argv[0], &err);
    if (dist.rank)
        gl_log_set_level(GL_LOG_ERROR);
    int rc = train_rl_run(&o, &dist, &err);
    int status = rc ? gl_cmd_fail(argv[0], &err) : GL_EXIT_OK;
    train_dist_finalize(&dist);
    return status;
}
