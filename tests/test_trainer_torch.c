/* test_trainer_torch.c — the C GPT-2 against an independent PyTorch
 * implementation (tests/ref/gpt2_ref.py, float64).
 *
 * A small random model is saved as safetensors and a batch as a raw file in
 * the test's folder; the reference loads both, and its logits, loss and
 * every gradient (written back as safetensors, read by train_load) must
 * match ours to a relative error of 1e-4 (max abs difference over max abs
 * value, per tensor). Then both run 10 AdamW steps with warmup + cosine,
 * clipping and two micro-batches of gradient accumulation, and the losses
 * must agree. Skipped when torch is not importable by $PYTHON.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/tap.h"
#include "trainer/trainer.h"

static const char *python(void)
{
    const char *p = getenv("PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}

static const char *src_dir(void)
{
    const char *s = getenv("GL_SRC");
    return s && *s ? s : ".";
}

static uint64_t rng = 0x243f6a8885a308d3ULL;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(void) { return (rnd() & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f; }

/* Random weights of a larger scale than GPT-2's init, so every path
 * (biases, LayerNorm gains) carries signal. */
static void randomise(train_model_t *m)
{
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
        float *p = m->params.t[k];
        int gain = k == TRAIN_LN1W || k == TRAIN_LN2W || k == TRAIN_LNFW;
        float scale = train_param_decays(k) ? 0.15f : 0.1f;
        for (size_t i = 0; i < m->sizes[k]; i++)
            p[i] = (gain ? 1.0f : 0.0f) + scale * frand();
    }
}

typedef struct {
    int32_t *tok, *tgt;
    float *w;
} micro_t;

static void make_micro(micro_t *mb, int B, int T, int V, int masked)
{
    mb->tok = malloc(sizeof(int32_t) * B * T);
    mb->tgt = malloc(sizeof(int32_t) * B * T);
    mb->w = malloc(sizeof(float) * B * T);
    for (int i = 0; i < B * T; i++) {
        mb->tok[i] = rnd() % V;
        mb->tgt[i] = rnd() % V;
        mb->w[i] = 1.0f;
        if (masked) {
            if (i % 7 == 3)
                mb->tgt[i] = -1;           /* not counted (padding) */
            if (i % 5 == 1)
                mb->w[i] = 0.0f;           /* not counted (prompt) */
            if (i % 5 == 2)
                mb->w[i] = 0.5f + (rnd() % 100) / 100.0f;   /* weighted */
        }
    }
}

static void free_micro(micro_t *mb)
{
    free(mb->tok);
    free(mb->tgt);
    free(mb->w);
}

static int write_batch(const char *path, const micro_t *mbs, int nm, int B, int T)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int32_t hdr[3] = {nm, B, T};
    fwrite(hdr, sizeof hdr, 1, f);
    for (int i = 0; i < nm; i++) {
        fwrite(mbs[i].tok, sizeof(int32_t), B * T, f);
        fwrite(mbs[i].tgt, sizeof(int32_t), B * T, f);
        fwrite(mbs[i].w, sizeof(float), B * T, f);
    }
    return fclose(f);
}

static double *read_f64(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    double *d = malloc(n * sizeof(double));
    size_t got = fread(d, sizeof(double), n, f);
    char extra;
    int more = fread(&extra, 1, 1, f) == 1;
    fclose(f);
    if (got != n || more) {
        free(d);
        return NULL;
    }
    return d;
}

static int run_ref(const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/ref/gpt2_ref.py' %s", python(), src_dir(), args);
    return system(cmd);
}

static double rel_err_f(const float *got, const float *want, size_t n)
{
    double md = 0, mw = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        md = d > md ? d : md;
        mw = fabs(want[i]) > mw ? fabs(want[i]) : mw;
    }
    return mw > 0 ? md / mw : md;
}

int main(void)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import torch, numpy' >/dev/null 2>&1", python());
    if (system(cmd) != 0)
        tap_skip_all("torch/numpy not importable by %s (apt-get install python3-torch python3-numpy)",
                     python());

    const char *dir = tap_tmpdir();
    char model_path[300], batch_path[300], grads_path[300], path[300];
    snprintf(model_path, sizeof model_path, "%s/model.safetensors", dir);
    snprintf(batch_path, sizeof batch_path, "%s/batch.bin", dir);
    snprintf(grads_path, sizeof grads_path, "%s/grads.safetensors", dir);

    train_config_t cfg = {.n_layer = 2, .n_head = 4, .n_embd = 48, .n_ctx = 24, .vocab_size = 97};
    int B = 3, T = 16, V = cfg.vocab_size;
    gl_err_t err = {0};
    train_model_t m, ref;
    int rc = train_model_init(&m, &cfg, B, T, TRAIN_GRADS, &err);
    is_int(rc, GL_OK, "model init: %s", err.msg);
    rc = train_model_init(&ref, &cfg, 0, 0, TRAIN_GRADS, &err);
    is_int(rc, GL_OK, "reference holder init: %s", err.msg);
    randomise(&m);
    rc = train_save(&m, model_path, 0, &err);
    is_int(rc, GL_OK, "save model: %s", err.msg);

    /* ---- one forward + backward ---- */
    micro_t mb;
    make_micro(&mb, B, T, V, 1);
    ok(write_batch(batch_path, &mb, 1, B, T) == 0, "write batch");
    rc = train_model_forward(&m, mb.tok, mb.tgt, mb.w, B, T, &err);
    is_int(rc, GL_OK, "forward: %s", err.msg);
    size_t nl = (size_t)B * T * V;
    float *logits = malloc(nl * sizeof(float));
    memcpy(logits, m.acts.logits, nl * sizeof(float));
    train_model_zero_grad(&m);
    train_model_backward(&m, 1.0f);
    rc = train_save(&m, grads_path, 1, &err);
    is_int(rc, GL_OK, "save gradients: %s", err.msg);

    snprintf(cmd, sizeof cmd, "grads '%s' '%s' '%s'", model_path, batch_path, dir);
    rc = run_ref(cmd);
    is_int(rc, 0, "reference forward/backward ran");
    snprintf(path, sizeof path, "%s/logits.f64", dir);
    double *rlogits = read_f64(path, nl);
    snprintf(path, sizeof path, "%s/loss.f64", dir);
    double *rloss = read_f64(path, 1);
    ok(rlogits && rloss, "reference outputs read");
    if (rlogits && rloss) {
        double md = 0, mw = 0;
        for (size_t i = 0; i < nl; i++) {
            md = fmax(md, fabs(logits[i] - rlogits[i]));
            mw = fmax(mw, fabs(rlogits[i]));
        }
        ok(md / mw <= 1e-4, "logits match (rel err %.2e)", md / mw);
        double le = fabs(m.loss - rloss[0]) / fabs(rloss[0]);
        ok(le <= 1e-4, "loss matches: %.7f vs %.7f (rel err %.2e)", m.loss, rloss[0], le);
    }
    snprintf(path, sizeof path, "%s/grads.safetensors", dir);
    rc = train_load(&ref, path, 1, &err);
    is_int(rc, GL_OK, "reference gradients load: %s", err.msg);
    if (rc == GL_OK) {
        for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
            double e = rel_err_f(m.grads.t[k], ref.grads.t[k], m.sizes[k]);
            ok(e <= 1e-4, "gradient of %s matches (rel err %.2e)", train_param_name(k), e);
        }
    }
    free(rlogits);
    free(rloss);
    free(logits);
    free_micro(&mb);

    /* ---- 10 AdamW steps, 2 micro-batches each ---- */
    enum { STEPS = 10, NM = 2 };
    micro_t mbs[NM];
    for (int i = 0; i < NM; i++)
        make_micro(&mbs[i], B, T, V, i == 1);
    ok(write_batch(batch_path, mbs, NM, B, T) == 0, "write training batch");
    train_sched_t sched = {.max_lr = 1e-2f, .min_lr = 1e-3f, .warmup = 3, .max_steps = STEPS};
    train_adamw_t hp = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    float clip = 1.0f;
    rc = train_load(&m, model_path, 0, &err);
    is_int(rc, GL_OK, "reload initial weights: %s", err.msg);
    train_optim_t opt;
    rc = train_optim_init(&opt, &m, &err);
    is_int(rc, GL_OK, "optimizer init");
    double losses[STEPS];
    int clipped = 0;
    for (int s = 0; s < STEPS; s++) {
        train_model_zero_grad(&m);
        losses[s] = 0;
        for (int i = 0; i < NM; i++) {
            if (train_model_forward(&m, mbs[i].tok, mbs[i].tgt, mbs[i].w, B, T, &err))
                break;
            losses[s] += m.loss / NM;
            train_model_backward(&m, 1.0f / NM);
        }
        float norm = train_clip_grad_norm(&m, clip);
        clipped += norm > clip;
        train_adamw_step(&opt, &m, &hp, train_lr_at(&sched, s));
    }
    ok(clipped > 0, "clipping was exercised (%d of %d steps)", clipped, STEPS);
    snprintf(cmd, sizeof cmd,
             "train '%s' '%s' '%s' '{\"steps\": %d, \"max_lr\": %g, \"min_lr\": %g, \"warmup\": %ld, "
             "\"max_steps\": %ld, \"beta1\": %g, \"beta2\": %g, \"eps\": %g, \"weight_decay\": %g, "
             "\"clip\": %g}'",
             model_path, batch_path, dir, STEPS, (double)sched.max_lr, (double)sched.min_lr,
             sched.warmup, sched.max_steps, (double)hp.beta1, (double)hp.beta2, (double)hp.eps,
             (double)hp.weight_decay, (double)clip);
    rc = run_ref(cmd);
    is_int(rc, 0, "reference training ran");
    snprintf(path, sizeof path, "%s/losses.f64", dir);
    double *rl = read_f64(path, STEPS);
    ok(rl != NULL, "reference losses read");
    if (rl) {
        for (int s = 0; s < STEPS; s++) {
            double e = fabs(losses[s] - rl[s]) / fabs(rl[s]);
            ok(e <= 1e-4, "step %d loss %.6f vs %.6f (rel err %.2e)", s, losses[s], rl[s], e);
        }
        ok(rl[STEPS - 1] < rl[0] - 0.1, "training lowers the loss (%.3f -> %.3f)", rl[0], rl[STEPS - 1]);
    }
    free(rl);

    /* ---- greedy continuation with the KV cache vs the reference ---- */
    {
        enum { PROMPT = 5, GEN = 12 };
        int32_t prompt[PROMPT] = {3, 14, 15, 92, 65}, got[GEN];
        train_kv_t kv;
        rc = train_kv_init(&kv, &m, 1, cfg.n_ctx, &err);
        is_int(rc, GL_OK, "kv cache init: %s", err.msg);
        for (int i = 0; i < PROMPT && !rc; i++)
            rc = train_model_decode(&m, &kv, &prompt[i], &err);
        for (int i = 0; i < GEN && !rc; i++) {
            int best = 0;
            for (int v = 1; v < V; v++)
                if (kv.logits[v] > kv.logits[best])
                    best = v;
            got[i] = best;
            if (i + 1 < GEN)
                rc = train_model_decode(&m, &kv, &got[i], &err);
        }
        is_int(rc, GL_OK, "decode ran: %s", err.msg);
        snprintf(cmd, sizeof cmd, "greedy '%s' 3,14,15,92,65 %d > '%s/greedy.txt'", model_path, GEN, dir);
        /* the trained weights: save them for the reference */
        rc = train_save(&m, model_path, 0, &err);
        is_int(rc, GL_OK, "save trained model: %s", err.msg);
        is_int(run_ref(cmd), 0, "reference greedy ran");
        snprintf(path, sizeof path, "%s/greedy.txt", dir);
        FILE *f = fopen(path, "r");
        int want[GEN], n = 0;
        while (f && n < GEN && fscanf(f, "%d,", &want[n]) == 1)
            n++;
        if (f)
            fclose(f);
        int same = n == GEN;
        for (int i = 0; same && i < GEN; i++)
            same = got[i] == want[i];
        char gs[256] = "", ws[256] = "";
        for (int i = 0; i < GEN; i++) {
            snprintf(gs + strlen(gs), sizeof gs - strlen(gs), "%d ", got[i]);
            if (i < n)
                snprintf(ws + strlen(ws), sizeof ws - strlen(ws), "%d ", want[i]);
        }
        ok(same, "greedy continuation equals the reference's: %s/ %s", gs, ws);
        train_kv_free(&kv);
    }
    for (int i = 0; i < NM; i++)
        free_micro(&mbs[i]);
    train_optim_free(&opt);
    train_model_free(&m);
    train_model_free(&ref);
    return tap_done();
}
