/* test_trainer_grad.c — every layer's backward pass against central finite
 * differences of its own forward pass, then the whole model's.
 *
 * Each layer gets a random upstream gradient r, so the scalar checked is
 * f = sum(r * out), accumulated in double. The float32 forward limits the
 * precision of a finite difference to about 1e-4 relative with h = 1e-2 on
 * O(1) inputs, so the check is normwise: |fd - analytic| / |analytic| over
 * every coordinate of every input (a sample of them for the whole model)
 * must stay under a few 1e-3 — far below what a wrong term, index or
 * missing factor produces.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/tap.h"
#include "tests/train_util.h"
#include "trainer/internal.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((rng >> 40) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}
static void fill(float *p, size_t n, float scale, float offset)
{
    for (size_t i = 0; i < n; i++)
        p[i] = offset + scale * frand();
}
static float *vec(size_t n) { return calloc(n, sizeof(float)); }

static double dotd(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* A layer under test: forward(ctx) returns the scalar f. */
typedef double (*fwd_fn)(void *ctx);

#define TOL 3e-3
#define CHECK(fn, ctx, x, g, n, name)                                      \
    do {                                                                   \
        double e_ = tt_fd_check(fn, ctx, x, g, n, 1e-2f);                  \
        ok(e_ < TOL, "%s (err %.1e)", name, e_);                           \
    } while (0)

/* ---- LayerNorm ---- */
typedef struct { int N, C; float *inp, *w, *b, *out, *mean, *rstd, *r; } ln_t;
static double ln_f(void *p)
{
    ln_t *c = p;
    train_k_layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C);
    return dotd(c->out, c->r, (size_t)c->N * c->C);
}
static void test_layernorm(void)
{
    ln_t c = {.N = 5, .C = 7};
    size_t n = (size_t)c.N * c.C;
    c.inp = vec(n); c.out = vec(n); c.r = vec(n); c.w = vec(c.C); c.b = vec(c.C);
    c.mean = vec(c.N); c.rstd = vec(c.N);
    fill(c.inp, n, 2.0f, 0.5f); fill(c.r, n, 1.0f, 0); fill(c.w, c.C, 0.5f, 1.0f); fill(c.b, c.C, 0.5f, 0);
    float *dinp = vec(n), *dw = vec(c.C), *db = vec(c.C), *part = vec(2 * c.C);
    ln_f(&c);
    train_k_layernorm_backward(dinp, dw, db, c.r, c.inp, c.w, c.mean, c.rstd, c.N, c.C, part, 1);
    CHECK(ln_f, &c, c.inp, dinp, n, "layernorm dinp");
    CHECK(ln_f, &c, c.w, dw, c.C, "layernorm dw");
    CHECK(ln_f, &c, c.b, db, c.C, "layernorm db");
    /* dinp accumulates: a second backward doubles it. */
    float first = dinp[3];
    train_k_layernorm_backward(dinp, dw, db, c.r, c.inp, c.w, c.mean, c.rstd, c.N, c.C, part, 1);
    ok(fabsf(dinp[3] - 2 * first) <= 1e-6f * fabsf(first) + 1e-7f, "layernorm dinp accumulates");
    free(c.inp); free(c.out); free(c.r); free(c.w); free(c.b); free(c.mean); free(c.rstd);
    free(dinp); free(dw); free(db); free(part);
}

/* ---- matmul with bias and residual ---- */
typedef struct { int N, IC, OC; float *inp, *w, *bias, *res, *out, *r; } mm_t;
static double mm_f(void *p)
{
    mm_t *c = p;
    train_k_matmul_forward(c->out, c->inp, c->w, c->bias, c->res, c->N, c->IC, c->OC);
    return dotd(c->out, c->r, (size_t)c->N * c->OC);
}
static void test_matmul(void)
{
    mm_t c = {.N = 6, .IC = 5, .OC = 70};   /* OC > 64: two bias column blocks */
    size_t ni = (size_t)c.N * c.IC, nw = (size_t)c.IC * c.OC, no = (size_t)c.N * c.OC;
    c.inp = vec(ni); c.w = vec(nw); c.bias = vec(c.OC); c.res = vec(no); c.out = vec(no); c.r = vec(no);
    fill(c.inp, ni, 1, 0); fill(c.w, nw, 1, 0); fill(c.bias, c.OC, 1, 0); fill(c.res, no, 1, 0);
    fill(c.r, no, 1, 0);
    float *dinp = vec(ni), *dw = vec(nw), *db = vec(c.OC);
    mm_f(&c);
    train_k_matmul_backward(dinp, dw, db, c.r, c.inp, c.w, c.N, c.IC, c.OC);
    CHECK(mm_f, &c, c.inp, dinp, ni, "matmul dinp");
    CHECK(mm_f, &c, c.w, dw, nw, "matmul dw");
    CHECK(mm_f, &c, c.bias, db, c.OC, "matmul dbias");
    CHECK(mm_f, &c, c.res, c.r, no, "matmul residual passes the gradient");
    free(c.inp); free(c.w); free(c.bias); free(c.res); free(c.out); free(c.r);
    free(dinp); free(dw); free(db);
}

/* ---- GELU ---- */
typedef struct { size_t n; float *inp, *out, *r; } ge_t;
static double ge_f(void *p)
{
    ge_t *c = p;
    train_k_gelu_forward(c->out, c->inp, c->n);
    return dotd(c->out, c->r, c->n);
}
static double max_rel(const float *a, const float *b, size_t n);
static void test_gelu(void)
{
    ge_t c = {.n = 64};
    c.inp = vec(c.n); c.out = vec(c.n); c.r = vec(c.n);
    fill(c.inp, c.n, 4.0f, 0); fill(c.r, c.n, 1, 0);
    float *d = vec(c.n);
    memcpy(d, c.r, c.n * sizeof(float));
    ge_f(&c);
    train_k_gelu_backward(d, c.inp, c.n);
    CHECK(ge_f, &c, c.inp, d, c.n, "gelu");
    /* Against the formula, independently: gelu(1) = 0.841192. */
    float one = 1.0f, out;
    train_k_gelu_forward(&out, &one, 1);
    ok(fabsf(out - 0.8411920f) < 1e-6f, "gelu(1) = %.7f", out);
    /* The forward that keeps the derivative: the same output, and the
     * backward as a product. */
    float *x = vec(c.n), *o2 = vec(c.n), *d2 = vec(c.n);
    memcpy(x, c.inp, c.n * sizeof(float));
    memcpy(d2, c.r, c.n * sizeof(float));
    ge_f(&c);
    train_k_gelu_forward_dx(o2, x, c.n);
    train_k_mul(d2, x, c.n);
    ok(!memcmp(o2, c.out, c.n * sizeof(float)) && max_rel(d2, d, c.n) < 1e-6,
       "gelu forward keeping the derivative: same output, same backward (rel %.1e)", max_rel(d2, d, c.n));
    free(x); free(o2); free(d2);
    free(c.inp); free(c.out); free(c.r); free(d);
}

/* ---- attention ---- */
typedef struct { int B, T, C, NH, ref; float drop; float *qkv, *out, *lse, *rows, *r; } at_t;
static double at_f(void *p)
{
    at_t *c = p;
    if (c->ref)
        train_k_attention_forward_ref(c->out, c->lse, c->qkv, c->B, c->T, c->C, c->NH, c->rows, 1);
    else
        train_k_attention_forward(c->out, c->lse, c->qkv, c->B, c->T, c->C, c->NH, c->rows, 1, c->drop, 99);
    return dotd(c->out, c->r, (size_t)c->B * c->T * c->C);
}

static double max_rel(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return mb > 0 ? md / mb : md;
}

/* The blocked attention against the row-by-row reference, over more than
 * one block of query rows, at a head width that fills the register blocks
 * (hs 64) and at one that does not (hs 4). */
static void test_attention_tiled(int C, int NH)
{
    int B = 2, T = 172;
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    float *qkv = vec(nq), *o1 = vec(no), *o2 = vec(no), *l1 = vec(nl), *l2 = vec(nl), *r = vec(no);
    float *d1 = vec(nq), *d2 = vec(nq), *scr = vec(train_k_attention_scratch(T, C / NH) + T);
    fill(qkv, nq, 2.0f, 0);
    fill(r, no, 1, 0);
    train_k_attention_forward(o1, l1, qkv, B, T, C, NH, scr, 1, 0.0f, 0);
    train_k_attention_forward_ref(o2, l2, qkv, B, T, C, NH, scr, 1);
    ok(max_rel(o1, o2, no) < 1e-5, "tiled attention output = reference, hs %d (rel %.1e)", C / NH,
       max_rel(o1, o2, no));
    ok(max_rel(l1, l2, nl) < 1e-5, "tiled attention lse = reference, hs %d (rel %.1e)", C / NH, max_rel(l1, l2, nl));
    fill(d1, nq, 1e3f, 7); /* stale values: the backward must overwrite every element */
    train_k_attention_backward(d1, r, qkv, o1, l1, B, T, C, NH, scr, 1, 0.0f, 0);
    train_k_attention_backward_ref(d2, r, qkv, o2, l2, B, T, C, NH);
    ok(max_rel(d1, d2, nq) < 1e-4, "tiled attention dqkv = reference, hs %d (rel %.1e)", C / NH,
       max_rel(d1, d2, nq));
    free(qkv); free(o1); free(o2); free(l1); free(l2); free(r); free(d1); free(d2); free(scr);
}
static void test_attention(void)
{
  for (int ref = 0; ref < 3; ref++) {
    /* 0: sgemm version, 1: row-by-row reference, 2: sgemm with dropout */
    at_t c = {.B = 2, .T = 5, .C = 8, .NH = 2, .ref = ref == 1, .drop = ref == 2 ? 0.3f : 0.0f};
    size_t nq = (size_t)c.B * c.T * 3 * c.C, no = (size_t)c.B * c.T * c.C;
    c.qkv = vec(nq); c.out = vec(no); c.lse = vec((size_t)c.B * c.NH * c.T);
    c.rows = vec(train_k_attention_scratch(c.T, c.C / c.NH)); c.r = vec(no);
    fill(c.qkv, nq, 1.5f, 0); fill(c.r, no, 1, 0);
    float *dqkv = vec(nq);
    at_f(&c);
    if (ref == 1)
        train_k_attention_backward_ref(dqkv, c.r, c.qkv, c.out, c.lse, c.B, c.T, c.C, c.NH);
    else
        train_k_attention_backward(dqkv, c.r, c.qkv, c.out, c.lse, c.B, c.T, c.C, c.NH, c.rows, 1, c.drop, 99);
    CHECK(at_f, &c, c.qkv, dqkv, nq,
          ref == 1 ? "reference attention dqkv" : ref == 2 ? "attention with dropout dqkv" : "attention dqkv");
    /* Causality: the first token's output is its own value vector. */
    int okv = 1;
    for (int i = 0; i < c.C; i++)
        okv &= fabsf(c.out[i] - c.qkv[2 * c.C + i]) < 1e-6f;
    if (c.drop == 0.0f)
        ok(okv, "attention: position 0 attends only to itself");
    free(c.qkv); free(c.out); free(c.lse); free(c.rows); free(c.r); free(dqkv);
  }
}

/* ---- cross-entropy with weights and ignored targets ---- */
typedef struct { int N, V; float *logits, *losses, *lse, *w; int32_t *tgt; } ce_t;
static double ce_f(void *p)
{
    ce_t *c = p;
    return train_k_crossentropy_forward(c->losses, c->lse, c->logits, c->tgt, c->w, c->N, c->V);
}
static void test_crossentropy(void)
{
    ce_t c = {.N = 5, .V = 9};
    size_t n = (size_t)c.N * c.V;
    int32_t tgt[5] = {3, -1, 0, 8, 4};
    float w[5] = {1.0f, 1.0f, 0.0f, 0.7f, 1.3f};
    c.logits = vec(n); c.losses = vec(c.N); c.lse = vec(c.N); c.w = w; c.tgt = tgt;
    fill(c.logits, n, 3, 0);
    double total = ce_f(&c);
    /* Independent value: row 0 is log(sum exp) - z[3], weight 1. */
    double s = 0;
    for (int k = 0; k < c.V; k++)
        s += exp(c.logits[k]);
    ok(fabs(c.losses[0] - (log(s) - c.logits[3])) < 1e-5, "cross-entropy row value");
    ok(c.losses[1] == 0 && c.losses[2] == 0, "ignored and zero-weight rows count nothing");
    float *d = vec(n);
    memcpy(d, c.logits, n * sizeof(float));
    train_k_crossentropy_backward(d, c.lse, c.tgt, c.w, 1.0f, c.N, c.V);
    CHECK(ce_f, &c, c.logits, d, n, "cross-entropy dlogits");
    ok(total > 0, "cross-entropy total positive");
    free(c.logits); free(c.losses); free(c.lse); free(d);
}

/* ---- embeddings ---- */
typedef struct { int B, T, C, V; float *wte, *wpe, *out, *r; int32_t *tok; } en_t;
static double en_f(void *p)
{
    en_t *c = p;
    train_k_encoder_forward(c->out, c->tok, c->wte, c->wpe, c->B, c->T, c->C);
    return dotd(c->out, c->r, (size_t)c->B * c->T * c->C);
}
static void test_encoder(void)
{
    int32_t tok[6] = {1, 3, 1, 0, 2, 1};   /* repeated tokens accumulate */
    en_t c = {.B = 2, .T = 3, .C = 4, .V = 5, .tok = tok};
    size_t no = (size_t)c.B * c.T * c.C;
    c.wte = vec((size_t)c.V * c.C); c.wpe = vec((size_t)c.T * c.C); c.out = vec(no); c.r = vec(no);
    fill(c.wte, (size_t)c.V * c.C, 1, 0); fill(c.wpe, (size_t)c.T * c.C, 1, 0); fill(c.r, no, 1, 0);
    float *dwte = vec((size_t)c.V * c.C), *dwpe = vec((size_t)c.T * c.C);
    en_f(&c);
    train_k_encoder_backward(dwte, dwpe, c.r, c.tok, c.B, c.T, c.C);
    CHECK(en_f, &c, c.wte, dwte, (size_t)c.V * c.C, "encoder dwte");
    CHECK(en_f, &c, c.wpe, dwpe, (size_t)c.T * c.C, "encoder dwpe");
    free(c.wte); free(c.wpe); free(c.out); free(c.r); free(dwte); free(dwpe);
}

/* ---- the whole model ---- */
typedef struct { train_model_t *m; int32_t *tok, *tgt; float *w; int B, T; } mo_t;
static double mo_f(void *p)
{
    mo_t *c = p;
    gl_err_t err;
    c->m->dropout_iter = 7;   /* the same dropout masks at every evaluation */
    if (train_model_forward(c->m, c->tok, c->tgt, c->w, c->B, c->T, &err))
        return NAN;
    double s = 0;   /* the loss, recomputed in double from the per-token terms */
    for (int i = 0; i < c->B * c->T; i++)
        s += c->m->acts.losses[i];
    return s / c->m->weight_sum;
}
/* Dropout's mask: the rate, the scaling, the same mask for the same key,
 * and training mode off means no dropout at all. */
static void test_dropout(void)
{
    size_t n = 200000;
    float *x = vec(n), *y = vec(n);
    for (size_t i = 0; i < n; i++)
        x[i] = y[i] = 1.0f;
    train_k_dropout(x, n, 0.3f, 5);
    train_k_dropout(y, n, 0.3f, 5);
    size_t zeros = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        zeros += x[i] == 0.0f;
        sum += x[i];
    }
    ok(fabs((double)zeros / n - 0.3) < 0.005, "dropout rate %.4f", (double)zeros / n);
    ok(fabs(sum / n - 1.0) < 0.01, "dropout keeps the mean (%.4f)", sum / n);
    ok(!memcmp(x, y, n * sizeof(float)), "same key, same mask");
    free(x);
    free(y);

    train_config_t cfg = {.n_layer = 1, .n_head = 2, .n_embd = 8, .n_ctx = 6, .vocab_size = 11};
    train_model_t m;
    gl_err_t err;
    train_model_init(&m, &cfg, 1, 6, 0, &err);
    train_model_init_weights(&m, 1);
    int32_t tok[6] = {1, 2, 3, 4, 5, 6}, tgt[6] = {2, 3, 4, 5, 6, 7};
    train_model_forward(&m, tok, tgt, NULL, 1, 6, &err);
    float plain = m.loss;
    is_int(train_model_set_dropout(&m, 0.5f, 1, &err), GL_OK, "set dropout");
    train_model_forward(&m, tok, tgt, NULL, 1, 6, &err);
    ok(m.loss == plain, "no dropout outside training mode");
    train_model_set_training(&m, 1);
    train_model_forward(&m, tok, tgt, NULL, 1, 6, &err);
    ok(m.loss != plain && m.dropout_iter == 1, "dropout in training mode (%g vs %g)", m.loss, plain);
    is_int(train_model_set_dropout(&m, 1.0f, 1, &err), GL_EINVAL, "dropout 1 refused");
    train_model_free(&m);
}

typedef struct { train_model_t *m; int32_t *tok; int B, T; float *r; } hid_t;
static double hid_f(void *p)
{
    hid_t *c = p;
    gl_err_t err;
    c->m->dropout_iter = 7;
    if (train_model_forward_hidden(c->m, c->tok, c->B, c->T, &err))
        return NAN;
    return dotd(c->m->acts.lnf, c->r, (size_t)c->B * c->T * c->m->cfg.n_embd);
}

static void test_model(float dropout)
{
    train_config_t cfg = {.n_layer = 2, .n_head = 2, .n_embd = 8, .n_ctx = 6, .vocab_size = 11};
    train_model_t m;
    gl_err_t err = {0};
    int B = 2, T = 5;
    is_int(train_model_init(&m, &cfg, B, T, TRAIN_GRADS, &err), GL_OK, "tiny model init %s", err.msg);
    is_int(train_model_set_dropout(&m, dropout, 42, &err), GL_OK, "dropout %g", dropout);
    train_model_set_training(&m, 1);
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++)
        fill(m.params.t[k], m.sizes[k], 0.4f,
             k == TRAIN_LN1W || k == TRAIN_LN2W || k == TRAIN_LNFW ? 1.0f : 0.0f);
    int32_t tok[10], tgt[10];
    float w[10];
    for (int i = 0; i < 10; i++) {
        tok[i] = (i * 7 + 3) % 11;
        tgt[i] = i == 4 ? -1 : (i * 5 + 1) % 11;
        w[i] = i == 6 ? 0.0f : 1.0f;
    }
    mo_t c = {&m, tok, tgt, w, B, T};
    mo_f(&c);
    train_model_zero_grad(&m);
    train_model_backward(&m, 1.0f);
    float *g = vec(m.n_params);
    memcpy(g, m.grads_mem, m.n_params * sizeof(float));
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
        float *x = m.params.t[k], *gk = g + (m.params.t[k] - m.params_mem);
        /* wpe row 5 (position T) gets no gradient: check it is exactly 0. */
        double e = tt_fd_check(mo_f, &c, x, gk, m.sizes[k], 1e-2f);
        ok(e < 1e-2, "model%s gradient of %s vs finite differences (err %.1e)",
           dropout > 0 ? " (dropout)" : "", train_param_name(k), e);
    }
    int zero = 1;
    for (int i = 5 * 8; i < 6 * 8; i++)
        zero &= g[(m.params.t[TRAIN_WPE] - m.params_mem) + i] == 0.0f;
    ok(zero, "unused position row has zero gradient");
    free(g);

    /* Backward from the hidden states (for a reward or value head): the
     * gradient of sum(r * lnf), no targets. */
    float *r = vec((size_t)B * T * 8);
    fill(r, (size_t)B * T * 8, 1, 0);
    hid_t hc = {&m, tok, B, T, r};
    size_t nh = (size_t)B * T * 8;
    float *full = vec(nh);
    m.dropout_iter = 7;
    train_model_forward(&m, tok, NULL, NULL, B, T, &err);
    memcpy(full, m.acts.lnf, nh * sizeof(float));
    hid_f(&hc);
    ok(!memcmp(full, m.acts.lnf, nh * sizeof(float)), "forward_hidden gives the hidden states of the full forward");
    free(full);
    train_model_zero_grad(&m);
    train_model_backward_hidden(&m, r);
    g = vec(m.n_params);
    memcpy(g, m.grads_mem, m.n_params * sizeof(float));
    int kinds[] = {TRAIN_WTE, TRAIN_WPE, TRAIN_QKVW, TRAIN_FCPROJB, TRAIN_LNFW};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        int k = kinds[i];
        double e = tt_fd_check(hid_f, &hc, m.params.t[k], g + (m.params.t[k] - m.params_mem), m.sizes[k], 1e-2f);
        ok(e < 1e-2, "hidden-state backward: gradient of %s (err %.1e)", train_param_name(k), e);
    }
    free(r);
    free(g);
    train_model_free(&m);
    train_model_free(&m);   /* free is idempotent */
}

/* Per-token coefficients (the policy-gradient form): the gradient of
 * sum_i coef_i * ce_i with coefficients of both signs, and the entropy
 * against a direct computation. */
typedef struct { train_model_t *m; int32_t *tok, *tgt; const float *coef; int B, T; } tk_t;
static double tk_f(void *p)
{
    tk_t *c = p;
    gl_err_t err;
    if (train_model_forward(c->m, c->tok, c->tgt, NULL, c->B, c->T, &err))
        return NAN;
    double s = 0;
    for (int i = 0; i < c->B * c->T; i++)
        s += (double)c->coef[i] * c->m->acts.losses[i];
    return s;
}

static void test_token_coefficients(void)
{
    train_config_t cfg = {.n_layer = 1, .n_head = 2, .n_embd = 8, .n_ctx = 6, .vocab_size = 11};
    train_model_t m;
    gl_err_t err = {0};
    int B = 2, T = 5;
    is_int(train_model_init(&m, &cfg, B, T, TRAIN_GRADS, &err), GL_OK, "coefficient model init");
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++)
        fill(m.params.t[k], m.sizes[k], 0.4f,
             k == TRAIN_LN1W || k == TRAIN_LN2W || k == TRAIN_LNFW ? 1.0f : 0.0f);
    int32_t tok[10], tgt[10];
    float coef[10];
    for (int i = 0; i < 10; i++) {
        tok[i] = (i * 3 + 1) % 11;
        tgt[i] = i == 7 ? -1 : (i * 4 + 2) % 11;
        coef[i] = (i % 3 == 0 ? -1.0f : 0.7f) * (1.0f + 0.1f * i);
    }
    tk_t c = {&m, tok, tgt, coef, B, T};
    tk_f(&c);
    float ent[10];
    train_model_entropy(&m, ent);
    double worst = 0;
    for (int i = 0; i < 10; i++) {
        const float *z = m.acts.logits + (size_t)i * 11;
        double mx = z[0], s = 0, h = 0;
        for (int k = 1; k < 11; k++)
            mx = z[k] > mx ? z[k] : mx;
        for (int k = 0; k < 11; k++)
            s += exp(z[k] - mx);
        for (int k = 0; k < 11; k++) {
            double p = exp(z[k] - mx) / s;
            h -= p * log(p);
        }
        worst = fmax(worst, fabs(h - ent[i]));
    }
    ok(worst < 1e-5, "entropy matches a direct computation (max err %.1e)", worst);
    train_model_zero_grad(&m);
    train_model_backward_tokens(&m, coef);
    float *g = vec(m.n_params);
    memcpy(g, m.grads_mem, m.n_params * sizeof(float));
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
        double e = tt_fd_check(tk_f, &c, m.params.t[k], g + (m.params.t[k] - m.params_mem), m.sizes[k], 1e-2f);
        ok(e < 1e-2, "per-token coefficients: gradient of %s (err %.1e)", train_param_name(k), e);
    }
    free(g);
    train_model_free(&m);
}

/* One forward and backward pass of (B, T) at nt threads; logits and
 * gradients copied out. how: 0 the loss, 1 the loss with dropout (the same
 * masks each call), 2 the loss twice without zeroing (accumulation), 3
 * from a made-up gradient of the hidden states (backward_hidden). */
static void run_threads(train_model_t *m, int nt, int how, const int32_t *tok, const int32_t *tgt, int B, int T,
                        float *lg, float *g)
{
    gl_err_t err = {0};
    size_t N = (size_t)B * T, C = m->cfg.n_embd, V = m->cfg.vocab_size;
    train_set_threads(nt);
    train_model_set_training(m, how == 1);
    m->dropout_iter = 3;
    train_model_zero_grad(m);
    for (int k = 0; k < (how == 2 ? 2 : 1); k++) {
        if (how == 3) {
            train_model_forward_hidden(m, tok, B, T, &err);
            float *d = vec(N * C);
            for (size_t i = 0; i < N * C; i++)
                d[i] = m->acts.lnf[i] * (float)(1 + i % 5) * 0.01f;
            memcpy(lg, m->acts.lnf, N * C * sizeof(float));
            train_model_backward_hidden(m, d);
            free(d);
        } else {
            train_model_forward(m, tok, tgt, NULL, B, T, &err);
            memcpy(lg, m->acts.logits, N * V * sizeof(float));
            train_model_backward(m, 1.0f);
        }
    }
    memcpy(g, m->grads_mem, m->n_params * sizeof(float));
    train_model_set_training(m, 0);
}

/* The threaded paths against one thread, on batches big enough to take
 * them: a batch that divides among the threads runs as one slice per
 * thread (own gradient blocks, summed after the backward pass), any other
 * as a whole (slabbed sgemm, heads over threads, per-thread LayerNorm
 * sums). Dropout masks do not depend on the split. */
static void test_threads(void)
{
    train_config_t cfg = {.n_layer = 2, .n_head = 4, .n_embd = 64, .n_ctx = 160, .vocab_size = 100};
    int B = 4, T = 160, N = B * T;
    train_model_t m;
    gl_err_t err = {0};
    train_set_threads(2);
    is_int(train_model_init(&m, &cfg, B, T, TRAIN_GRADS, &err), GL_OK, "threaded model init %s", err.msg);
    ok(m.nthreads == 2 && m.tgrads, "two thread slots (%d) and a second gradient block", m.nthreads);
    is_int(train_model_set_dropout(&m, 0.2f, 5, &err), GL_OK, "dropout 0.2");
    train_model_init_weights(&m, 3);
    int32_t *tok = malloc(sizeof(int32_t) * N), *tgt = malloc(sizeof(int32_t) * N);
    for (int i = 0; i < N; i++) {
        tok[i] = (i * 37 + 11) % 100;
        tgt[i] = (i * 53 + 7) % 100;
    }
    float *g[2], *lg[2];
    for (int run = 0; run < 2; run++) {
        g[run] = vec(m.n_params);
        lg[run] = vec((size_t)N * 100);
    }
    static const char *const what[] = {"", ", dropout", ", 2 accumulated", ", from the hidden states"};
    for (int rows = 3; rows <= B; rows++) {
        for (int how = 0; how < 4; how++) {
            size_t nl = (size_t)rows * T * (how == 3 ? cfg.n_embd : 100);
            for (int run = 0; run < 2; run++)
                run_threads(&m, run ? 1 : 2, how, tok, tgt, rows, T, lg[run], g[run]);
            double worst = 0;
            const char *at = "";
            for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
                size_t off = m.params.t[k] - m.params_mem;
                double e = max_rel(g[0] + off, g[1] + off, m.sizes[k]);
                if (e > worst)
                    worst = e, at = train_param_name(k);
            }
            ok(max_rel(lg[0], lg[1], nl) < 1e-5 && worst < 1e-4,
               "B=%d (%s)%s: 2 threads = 1 thread (%s rel %.1e, gradient of %s rel %.1e)", rows,
               rows % 2 ? "whole batch" : "a slice per thread", what[how], how == 3 ? "hidden" : "logits",
               max_rel(lg[0], lg[1], nl), at, worst);
        }
    }
    /* accumulation adds: twice one pass */
    run_threads(&m, 2, 0, tok, tgt, B, T, lg[0], g[0]);
    run_threads(&m, 2, 2, tok, tgt, B, T, lg[1], g[1]);
    for (size_t i = 0; i < m.n_params; i++)
        g[0][i] *= 2.0f;
    ok(max_rel(g[0], g[1], m.n_params) < 1e-5, "2 threads: two accumulated passes = twice one (rel %.1e)",
       max_rel(g[0], g[1], m.n_params));
    train_model_set_dropout(&m, 0.0f, 0, &err);
    train_set_threads(2);
    /* A smaller batch than the capacity gives what a model of exactly that
     * size gives. */
    train_model_t m2;
    int B2 = 3, T2 = 100;
    is_int(train_model_init(&m2, &cfg, B2, T2, TRAIN_GRADS, &err), GL_OK, "exact-size model");
    memcpy(m2.params_mem, m.params_mem, m.n_params * sizeof(float));
    train_model_t *mm[2] = {&m, &m2};
    for (int run = 0; run < 2; run++) {
        train_model_zero_grad(mm[run]);
        train_model_forward(mm[run], tok, tgt, NULL, B2, T2, &err);
        memcpy(lg[run], mm[run]->acts.logits, (size_t)B2 * T2 * 100 * sizeof(float));
        train_model_backward(mm[run], 1.0f);
    }
    ok(m.loss == m2.loss && !memcmp(lg[0], lg[1], (size_t)B2 * T2 * 100 * sizeof(float)),
       "batch below capacity: same logits and loss as an exact-size model");
    ok(!memcmp(m.grads_mem, m2.grads_mem, m.n_params * sizeof(float)),
       "batch below capacity: same gradients");
    train_model_free(&m2);
    for (int run = 0; run < 2; run++) {
        free(g[run]);
        free(lg[run]);
    }
    free(tok);
    free(tgt);
    train_model_free(&m);
}

static void test_windows(void)
{
    int32_t win[2 * 5] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, tok[8], tgt[8];
    train_split_windows(win, 2, 4, tok, tgt);
    int32_t wt[8] = {1, 2, 3, 4, 6, 7, 8, 9}, wg[8] = {2, 3, 4, 5, 7, 8, 9, 10};
    ok(!memcmp(tok, wt, sizeof wt) && !memcmp(tgt, wg, sizeof wg), "windows split into inputs and targets");
}

/* Decoding position by position with the KV cache gives the logits of
 * the full forward at every position. */
static void test_decode(void)
{
    train_config_t cfg = {.n_layer = 2, .n_head = 2, .n_embd = 16, .n_ctx = 12, .vocab_size = 23};
    int B = 2, T = 12, V = 23;
    train_model_t m;
    train_kv_t kv;
    gl_err_t err = {0};
    train_model_init(&m, &cfg, B, T, 0, &err);
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++)
        fill(m.params.t[k], m.sizes[k], 0.3f,
             k == TRAIN_LN1W || k == TRAIN_LN2W || k == TRAIN_LNFW ? 1.0f : 0.0f);
    int32_t tok[24];
    for (int i = 0; i < B * T; i++)
        tok[i] = (i * 7 + 2) % V;
    is_int(train_model_forward(&m, tok, NULL, NULL, B, T, &err), GL_OK, "full forward");
    is_int(train_kv_init(&kv, &m, B, T, &err), GL_OK, "kv init");
    double worst = 0;
    for (int t = 0; t < T; t++) {
        int32_t step[2] = {tok[t], tok[T + t]};
        if (train_model_decode(&m, &kv, step, &err))
            break;
        for (int b = 0; b < B; b++)
            worst = fmax(worst, max_rel(kv.logits + (size_t)b * V, m.acts.logits + ((size_t)b * T + t) * V, V));
    }
    ok(kv.len == T && worst < 1e-5, "decoded logits = full forward at every position (rel %.1e)", worst);
    int32_t one[2] = {0, 0};
    is_int(train_model_decode(&m, &kv, one, &err), GL_ERANGE, "full cache refused");
    train_kv_reset(&kv);
    one[1] = V;
    is_int(train_model_decode(&m, &kv, one, &err), GL_ERANGE, "token outside the vocab refused");
    train_kv_free(&kv);
    train_model_free(&m);
}

/* The few-row product of generation against the sgemm one: row counts
 * around the block of 4, a column count with a tail past the blocks of 64,
 * with and without the residual, in place over the residual. */
static void test_matmul_rows(void)
{
    int IC = 40, OC = 150;
    float *x = vec(9 * IC), *w = vec(IC * OC), *b = vec(OC), *res = vec(9 * OC), *want = vec(9 * OC),
          *got = vec(9 * OC);
    fill(x, 9 * IC, 1, 0), fill(w, IC * OC, 1, 0), fill(b, OC, 1, 0), fill(res, 9 * OC, 1, 0);
    double worst = 0;
    static const int ns[] = {1, 3, 4, 9};
    for (int k = 0; k < 4; k++)
        for (int r = 0; r < 3; r++) {
            int N = ns[k];
            train_k_matmul_forward(want, x, w, b, r ? res : NULL, N, IC, OC);
            if (r == 2) { /* out is the residual */
                memcpy(got, res, (size_t)N * OC * sizeof *got);
                train_k_matmul_forward_rows(got, x, w, b, got, N, IC, OC);
            } else {
                train_k_matmul_forward_rows(got, x, w, b, r ? res : NULL, N, IC, OC);
            }
            worst = fmax(worst, max_rel(got, want, (size_t)N * OC));
        }
    ok(worst < 1e-5, "few-row product equals the sgemm one (1, 3, 4, 9 rows; worst rel. %.1e)", worst);
    free(x), free(w), free(b), free(res), free(want), free(got);
}

int main(void)
{
    test_matmul_rows();
    test_decode();
    test_windows();
    test_encoder();
    test_layernorm();
    test_matmul();
    test_gelu();
    test_attention();
    test_attention_tiled(12, 3);
    test_attention_tiled(96, 3);
    test_attention_tiled(128, 2);
    test_crossentropy();
    test_model(0.0f);
    test_model(0.25f);
    test_dropout();
    test_token_coefficients();
    test_threads();
    return tap_done();
}
