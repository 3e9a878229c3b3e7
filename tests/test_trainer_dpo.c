/* test_trainer_dpo.c — direct preference optimisation.
 *
 * (1) The DPO loss of train_dpo_batch equals a naive computation (each
 * model's logits, a log-softmax in double, the response tokens summed,
 * every ordered pair of each ranking written out), and its gradient
 * through the whole model equals central finite differences of that naive
 * loss. A policy equal to its reference has loss ln 2 and no correct pair.
 * (2) On a synthetic preference with a learnable rule (of K=3 responses
 * the one containing the letter 'z' is best, the other two tie), a short
 * `train dpo` run from a fresh "SFT" model raises the held-out
 * implicit-reward accuracy far above chance (50%) with a positive margin;
 * its loss.png carries the held-out accuracy panel. (3) A DPO run stopped
 * and resumed repeats its losses exactly.
 */
#include "shards/shards.h"
#include "tests/tap.h"
#include "tests/train_util.h"
#include "trainer/run.h"

#include <cairo.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;
static float frand(void) { return (float)tt_rnd(&rng, 1 << 24) / (float)(1 << 24) * 2.0f - 1.0f; }

/* ---- (1) the loss and its gradient ------------------------------------- */

#define B1 5
#define T1 6
typedef struct {
    train_model_t *m, *ref;
    int32_t tok[B1 * T1], tgt[B1 * T1];
    int group[B1];
    uint32_t rank[B1];
    float beta;
} dpo_case_t;

/* Sum over each row's counted targets of log softmax(logits)[target], from
 * a forward without targets, in double. */
static void naive_logprobs(train_model_t *m, const dpo_case_t *c, double *lp)
{
    gl_err_t err;
    train_model_forward(m, c->tok, NULL, NULL, B1, T1, &err);
    int V = m->cfg.vocab_size;
    for (int i = 0; i < B1; i++) {
        lp[i] = 0;
        for (int t = 0; t < T1; t++) {
            int y = c->tgt[i * T1 + t];
            if (y < 0)
                continue;
            const float *z = m->acts.logits + (size_t)(i * T1 + t) * V;
            double mx = z[0], s = 0;
            for (int k = 1; k < V; k++)
                mx = z[k] > mx ? z[k] : mx;
            for (int k = 0; k < V; k++)
                s += exp((double)z[k] - mx);
            lp[i] += (double)z[y] - mx - log(s);
        }
    }
}

static double naive_loss(void *p)
{
    dpo_case_t *c = p;
    double lp[B1], lr[B1], total = 0;
    naive_logprobs(c->m, c, lp);
    naive_logprobs(c->ref, c, lr);
    int groups = c->group[B1 - 1] + 1;
    for (int g = 0; g < groups; g++) {
        double sum = 0;
        int n = 0;
        for (int w = 0; w < B1; w++)
            for (int l = 0; l < B1; l++) {
                if (c->group[w] != g || c->group[l] != g || c->rank[w] >= c->rank[l])
                    continue;
                double z = c->beta * ((lp[w] - lr[w]) - (lp[l] - lr[l]));
                sum += log(1 + exp(-z)); /* -log sigmoid(z) */
                n++;
            }
        total += sum / n;
    }
    return total / groups;
}

static void test_gradient(void)
{
    train_config_t cfg = {.n_layer = 1, .n_head = 2, .n_embd = 8, .n_ctx = 8, .vocab_size = 11};
    train_model_t m = {0}, ref = {0};
    gl_err_t err = {0};
    ok(train_model_init(&m, &cfg, B1, T1, TRAIN_GRADS, &err) == 0 && train_model_init(&ref, &cfg, B1, T1, 0, &err) == 0,
       "policy with gradients, reference without");
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
        float one = k == TRAIN_LN1W || k == TRAIN_LN2W || k == TRAIN_LNFW ? 1.0f : 0.0f;
        for (size_t i = 0; i < m.sizes[k]; i++) {
            m.params.t[k][i] = one + 0.5f * frand();
            ref.params.t[k][i] = m.params.t[k][i] + 0.2f * frand(); /* the policy has moved away */
        }
    }
    dpo_case_t c = {.m = &m, .ref = &ref, .beta = 0.7f};
    /* rows: a ranking of 3 (best, then a tie) and a ranking of 2 (row 4 best) */
    static const int group[B1] = {0, 0, 0, 1, 1}, plen[B1] = {2, 2, 3, 1, 1}, len[B1] = {5, 6, 4, 6, 3};
    static const uint32_t rank[B1] = {0, 1, 1, 1, 0};
    for (int i = 0; i < B1; i++) {
        c.group[i] = group[i];
        c.rank[i] = rank[i];
        for (int t = 0; t < T1; t++)
            c.tok[i * T1 + t] = (int32_t)tt_rnd(&rng, 11);
        for (int t = 0; t < T1; t++) {
            int p = t + 1;
            c.tgt[i * T1 + t] = p >= plen[i] && p < len[i] ? c.tok[i * T1 + p] : -1;
        }
    }
    train_dpo_stats_t st = {0};
    train_model_zero_grad(&m);
    ok(train_dpo_batch(&m, &ref, c.tok, c.tgt, c.group, c.rank, B1, T1, c.beta, 1.0f, &st, &err) == 0,
       "dpo batch: %s", err.msg[0] ? err.msg : "ok");
    float *g = malloc(m.n_params * sizeof *g);
    memcpy(g, m.grads_mem, m.n_params * sizeof *g);
    double want = naive_loss(&c);
    ok(fabs(st.loss - want) < 1e-5 * (1 + want), "loss %.7f equals the naive computation %.7f", st.loss, want);
    is_int((int)st.pairs, 3, "3 ordered pairs (the tie is no pair)");
    is_int((int)st.groups, 2, "2 rankings");
    double worst = 0;
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
        double e = tt_fd_check(naive_loss, &c, m.params.t[k], g + (m.params.t[k] - m.params_mem), m.sizes[k], 1e-2f);
        worst = e > worst ? e : worst;
        if (e >= 1e-2)
            tap_diag("gradient of %s: error %.2e", train_param_name(k), e);
    }
    ok(worst < 1e-2, "gradient of every tensor equals finite differences of the naive loss (worst %.1e)", worst);

    /* twice the scale, twice the gradient; scale 0 leaves the gradients */
    train_model_zero_grad(&m);
    train_dpo_stats_t s2 = {0};
    train_dpo_batch(&m, &ref, c.tok, c.tgt, c.group, c.rank, B1, T1, c.beta, 2.0f, &s2, &err);
    train_dpo_batch(&m, &ref, c.tok, c.tgt, c.group, c.rank, B1, T1, c.beta, 0.0f, &s2, &err);
    double d = 0, n = 0;
    for (size_t i = 0; i < m.n_params; i++) {
        d += fabs(m.grads_mem[i] - 2 * g[i]);
        n += fabs(2 * g[i]);
    }
    ok(d <= 1e-5 * n, "the gradient scales with the scale; scale 0 adds none");

    /* the policy at its reference: every implicit reward is 0 */
    memcpy(ref.params_mem, m.params_mem, m.n_params * sizeof(float));
    train_dpo_stats_t s0 = {0};
    train_dpo_batch(&m, &ref, c.tok, c.tgt, c.group, c.rank, B1, T1, c.beta, 0.0f, &s0, &err);
    ok(fabs(s0.loss - log(2.0)) < 1e-6 && s0.correct == 0 && s0.margin == 0,
       "policy = reference: loss ln 2 (%.7f), no correct pair, margin 0", s0.loss);
    int bad_group[B1] = {0, 0, 2, 2, 2};
    ok(train_dpo_batch(&m, &ref, c.tok, c.tgt, bad_group, c.rank, B1, T1, c.beta, 0.0f, &s0, &err) == GL_EINVAL,
       "groups that skip a number are refused");
    free(g);
    train_model_free(&m);
    train_model_free(&ref);
}

/* The height of a PNG in pixels; -1 when it cannot be read. */
static int png_height(const char *path)
{
    cairo_surface_t *img = cairo_image_surface_create_from_png(path);
    int h = cairo_surface_status(img) == CAIRO_STATUS_SUCCESS ? cairo_image_surface_get_height(img) : -1;
    cairo_surface_destroy(img);
    return h;
}

int main(void)
{
    test_gradient();

    /* (2) learning a preference */

    gl_err_t err = {0};
    const char *tmp = tap_tmpdir();
    char *train = gl_path_join(tmp, "train"), *val = gl_path_join(tmp, "val"), *out = gl_path_join(tmp, "dpo"),
         *sft = gl_path_join(tmp, "sft.safetensors");
    ok(tt_write_rankings(train, 1200, &rng, &err) == 0, "1200 training rankings: %s", err.msg[0] ? err.msg : "ok");
    ok(tt_write_rankings(val, 200, &rng, &err) == 0, "200 held-out rankings");

    /* the "SFT" model DPO starts from: a fresh byte-level GPT */
    train_config_t cfg = {.n_layer = 2, .n_head = 2, .n_embd = 32, .n_ctx = 32, .vocab_size = SHARD_BYTES_VOCAB,
                          .tokenizer_hash = shard_bytes_tokenizer_hash()};
    train_model_t m0 = {0};
    ok(train_model_init(&m0, &cfg, 0, 0, 0, &err) == 0, "sft model");
    train_model_init_weights(&m0, 5);
    ok(train_save(&m0, sft, 0, &err) == 0, "save it");
    train_model_free(&m0);

    train_run_opts_t o;
    train_run_defaults(&o);
    o.stage = TRAIN_STAGE_DPO;
    o.data = train;
    o.val = val;
    o.out = out;
    o.init = sft;
    o.B = 12;
    o.T = 32;
    o.steps = 120;
    o.sched.max_lr = 2e-3f;
    o.sched.min_lr = 2e-4f;
    o.sched.warmup = 10;
    o.dpo_beta = 0.1f;
    o.eval_every = 10;
    o.eval_batches = 0;
    o.ckpt_every = 0;
    o.threads = 1;
    o.quiet = 1;
    train_dist_t dist = {.rank = 0, .world = 1};
    int rc = train_run(&o, &dist, &err);
    ok(rc == 0, "train dpo 120 steps: %s", rc ? err.msg : "ok");
    char *metrics = gl_path_join(out, "metrics.jsonl");
    double acc0 = tt_metric(metrics, "val_accuracy", 1), acc = tt_metric(metrics, "val_accuracy", 0);
    double margin = tt_metric(metrics, "val_margin", 0);
    /* at the start (policy = reference) every implicit reward is 0 and no
     * pair is correct; a policy ordering pairs at random gets 50% */
    ok(acc >= 0.9 && acc >= acc0, "held-out implicit-reward accuracy %.1f%% after 120 steps (%.1f%% after 10)",
       100 * acc, 100 * acc0);
    ok(margin > 0, "held-out reward margin %.4f > 0", margin);
    double tc = tt_metric(metrics, "chosen", 0), tr = tt_metric(metrics, "rejected", 0);
    double ta = tt_metric(metrics, "accuracy", 0);
    ok(!isnan(tc) && !isnan(tr) && tc > tr && ta > 0.5,
       "training steps log accuracy %.2f, chosen %.3f > rejected %.3f", ta, tc, tr);
    ok(!isnan(tt_metric(metrics, "val_chosen", 0)) && !isnan(tt_metric(metrics, "val_rejected", 0)),
       "held-out chosen and rejected rewards logged");
    /* loss.png has the held-out accuracy panel: a plot of the same run
     * without its evaluations is shorter by it */
    char *png = gl_path_join(out, "loss.png"), *steps = gl_path_join(tmp, "steps.jsonl"),
         *png2 = gl_path_join(tmp, "steps.png");
    FILE *in = fopen(metrics, "r"), *f = fopen(steps, "w");
    char line[2048];
    while (in && f && fgets(line, sizeof line, in))
        if (!strstr(line, "\"val_accuracy\""))
            fputs(line, f);
    if (in)
        fclose(in);
    if (f)
        fclose(f);
    int h1 = png_height(png), h2 = train_plot_metrics(steps, png2, &err) ? -1 : png_height(png2);
    ok(h2 > 0 && h1 > h2 + 100, "loss.png adds the held-out accuracy panel (%d px tall; %d without evaluations)", h1,
       h2);
    free(png), free(steps), free(png2);

    o.init = NULL;
    ok(train_run(&o, &dist, &err) == GL_EINVAL, "DPO without --init is refused");
    o.init = sft;

    /* stopped and resumed, the DPO run repeats its losses exactly */
    char *ra = gl_path_join(tmp, "ra"), *rb = gl_path_join(tmp, "rb");
    train_run_opts_t r = o;
    r.steps = 10;
    r.val = NULL;
    r.out = ra;
    int rr = train_run(&r, &dist, &err);
    r.out = rb;
    r.until = 4;
    rr |= train_run(&r, &dist, &err);
    r.until = 0;
    r.resume = 1;
    rr |= train_run(&r, &dist, &err);
    char *ma = gl_path_join(ra, "metrics.jsonl"), *mb = gl_path_join(rb, "metrics.jsonl");
    char *la = tt_losses(ma), *lb = tt_losses(mb);
    ok(rr == 0 && strlen(la) > 20 && !strcmp(la, lb), "DPO run stopped at step 4 and resumed repeats the 10 losses");
    if (strcmp(la, lb))
        tap_diag("uninterrupted: %s\n# resumed:       %s", la, lb);
    free(la), free(lb), free(ma), free(mb), free(ra), free(rb);
    free(metrics), free(train), free(val), free(out), free(sft);
    return tap_done();
}
