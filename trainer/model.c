/* model.c — the GPT-2 model: configuration, memory layout, initialisation,
 * and the forward and backward passes as the sequence of the layers in
 * kernels.c.
 *
 * The shape of llm.c's train_gpt2.c: all parameters in one block, all
 * gradients in another, all activations in a third, sized once by
 * train_model_init() for the largest batch; a training step allocates
 * nothing. The backward pass needs only four (B,T,width) scratch buffers
 * besides the activations: it walks the layers in reverse carrying the
 * gradient of the residual stream in place. A batch that divides among
 * the threads runs as one slice per thread (see slice_t).
 *
 * Workload: training steps on (B,T) batches with B*T in the thousands and
 * widths of 64..1024, and small forward-only batches for evaluation and
 * generation.
 */
#include "trainer/internal.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void train_set_threads(int n)
{
    openblas_set_num_threads(1);
#ifdef _OPENMP
    if (n > 0)
        omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Threads for a kernel with per-thread scratch: the count in force, within
 * the slots init sized. */
static int run_threads(const train_model_t *m)
{
    int n = max_threads();
    return n < m->nthreads ? n : m->nthreads;
}

/* ---- configuration and layout ---------------------------------------- */

static const char *const param_names[TRAIN_NPARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
};

const char *train_param_name(int kind)
{
    return kind >= 0 && kind < TRAIN_NPARAM_TENSORS ? param_names[kind] : "?";
}

int train_param_decays(int kind)
{
    switch (kind) {
    case TRAIN_WTE: case TRAIN_WPE: case TRAIN_QKVW: case TRAIN_ATTPROJW:
    case TRAIN_FCW: case TRAIN_FCPROJW:
        return 1;
    default:
        return 0;
    }
}

int train_config_check(const train_config_t *c, gl_err_t *err)
{
    if (c->n_layer < 1 || c->n_layer > 1024)
        return gl_err_set(err, GL_EINVAL, "model config: n_layer %d out of range 1..1024", c->n_layer);
    if (c->n_embd < 1 || c->n_embd > 65536)
        return gl_err_set(err, GL_EINVAL, "model config: n_embd %d out of range 1..65536", c->n_embd);
    if (c->n_head < 1 || c->n_embd % c->n_head)
        return gl_err_set(err, GL_EINVAL, "model config: n_head %d does not divide n_embd %d",
                          c->n_head, c->n_embd);
    if (c->n_ctx < 1 || c->n_ctx > 1 << 20)
        return gl_err_set(err, GL_EINVAL, "model config: n_ctx %d out of range 1..%d", c->n_ctx, 1 << 20);
    if (c->vocab_size < 1 || c->vocab_size > 1 << 24)
        return gl_err_set(err, GL_EINVAL, "model config: vocab_size %d out of range 1..%d",
                          c->vocab_size, 1 << 24);
    return GL_OK;
}

static void param_sizes(const train_config_t *c, size_t *s)
{
    size_t L = c->n_layer, C = c->n_embd;
    s[TRAIN_WTE] = (size_t)c->vocab_size * C;
    s[TRAIN_WPE] = (size_t)c->n_ctx * C;
    s[TRAIN_LN1W] = s[TRAIN_LN1B] = L * C;
    s[TRAIN_QKVW] = L * C * 3 * C;
    s[TRAIN_QKVB] = L * 3 * C;
    s[TRAIN_ATTPROJW] = L * C * C;
    s[TRAIN_ATTPROJB] = L * C;
    s[TRAIN_LN2W] = s[TRAIN_LN2B] = L * C;
    s[TRAIN_FCW] = L * C * 4 * C;
    s[TRAIN_FCB] = L * 4 * C;
    s[TRAIN_FCPROJW] = L * 4 * C * C;
    s[TRAIN_FCPROJB] = L * C;
    s[TRAIN_LNFW] = s[TRAIN_LNFB] = C;
}

static void point_params(train_params_t *p, float *mem, const size_t *sizes)
{
    for (int i = 0; i < TRAIN_NPARAM_TENSORS; i++) {
        p->t[i] = mem;
        mem += sizes[i];
    }
}

/* Lays out the activations in mem (or only counts when mem is NULL);
 * returns the number of floats. */
static size_t point_acts(train_acts_t *a, float *mem, const train_config_t *c, size_t B, size_t T)
{
    size_t L = c->n_layer, C = c->n_embd, NH = c->n_head, V = c->vocab_size, BT = B * T;
    float *base = mem, *p = mem;
#define TAKE(field, n) do { if (base) a->field = p; p += (n); } while (0)
    TAKE(encoded, BT * C);
    TAKE(ln1, L * BT * C);
    TAKE(ln1_mean, L * BT);
    TAKE(ln1_rstd, L * BT);
    TAKE(qkv, L * BT * 3 * C);
    TAKE(atty, L * BT * C);
    TAKE(att_lse, L * B * NH * T);
    TAKE(residual2, L * BT * C);
    TAKE(ln2, L * BT * C);
    TAKE(ln2_mean, L * BT);
    TAKE(ln2_rstd, L * BT);
    TAKE(fch, L * BT * 4 * C);
    TAKE(fch_gelu, L * BT * 4 * C);
    TAKE(residual3, L * BT * C);
    TAKE(lnf, BT * C);
    TAKE(lnf_mean, BT);
    TAKE(lnf_rstd, BT);
    TAKE(logits, BT * V);
    TAKE(lse, BT);
    TAKE(losses, BT);
#undef TAKE
    return (size_t)(p - base);
}

/* Scratch: dresidual (BT,C), dC (BT,C), dqkv (BT,3C), d4C (BT,4C) for the
 * backward pass; per thread attention's buffers and 2C floats of LayerNorm
 * partial sums. */
static size_t scratch_floats(const train_config_t *c, size_t B, size_t T, int nthreads)
{
    size_t BT = B * T, C = c->n_embd;
    size_t att = train_k_attention_scratch((int)T, c->n_embd / c->n_head);
    return BT * C * 9 + (size_t)nthreads * (att + 2 * C + 16);
}

void train_model_free(train_model_t *m)
{
    if (!m)
        return;
    free(m->params_mem);
    free(m->grads_mem);
    free(m->acts_mem);
    free(m->scratch);
    free(m->tgrads);
    memset(m, 0, sizeof *m);
}

#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_MIN ((size_t)4 << 20) /* bytes from which an array asks for them */

float *train_alloc_floats(size_t n)
{
    if (n == 0)
        return NULL;
    if (n > SIZE_MAX / sizeof(float))
        return NULL;
    void *p = NULL;
    /* 64-byte alignment for vector loads; sizes rounded to a multiple.
     * Arrays of megabytes (weights, gradients, activations) go on 2 MiB
     * pages where the kernel gives them on request (transparent huge pages
     * in "madvise" mode): the passes over them and sgemm's packing then
     * miss the TLB less (0.5-1% of the 6-layer step, in paired steps). */
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63, align = 64;
    if (bytes >= HUGE_MIN) {
        align = HUGE_PAGE;
        bytes = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    }
    if (posix_memalign(&p, align, bytes))
        return NULL;
    if (align == HUGE_PAGE)
        madvise(p, bytes, MADV_HUGEPAGE); /* advice: where refused, small pages */
    return p;
}

int train_model_init(train_model_t *m, const train_config_t *cfg, int B, int T, int flags,
                     gl_err_t *err)
{
    memset(m, 0, sizeof *m);
    int rc = train_config_check(cfg, err);
    if (rc)
        return rc;
    if (B < 0 || T < 0 || (B == 0) != (T == 0) || T > cfg->n_ctx)
        return gl_err_set(err, GL_EINVAL, "model: batch %d x %d invalid (context %d)", B, T,
                          cfg->n_ctx);
    m->cfg = *cfg;
    m->B = B;
    m->T = T;
    param_sizes(cfg, m->sizes);
    for (int i = 0; i < TRAIN_NPARAM_TENSORS; i++)
        m->n_params += m->sizes[i];
    m->params_mem = train_alloc_floats(m->n_params);
    if (!m->params_mem)
        goto nomem;
    memset(m->params_mem, 0, m->n_params * sizeof(float));
    point_params(&m->params, m->params_mem, m->sizes);
    if (flags & TRAIN_GRADS) {
        m->grads_mem = train_alloc_floats(m->n_params);
        if (!m->grads_mem)
            goto nomem;
        memset(m->grads_mem, 0, m->n_params * sizeof(float));
        point_params(&m->grads, m->grads_mem, m->sizes);
    }
    if (B > 0) {
        size_t n = point_acts(&m->acts, NULL, cfg, B, T);
        m->acts_mem = train_alloc_floats(n);
        if (!m->acts_mem)
            goto nomem;
        memset(m->acts_mem, 0, n * sizeof(float));
        point_acts(&m->acts, m->acts_mem, cfg, B, T);
        train_set_threads(0);
        m->nthreads = max_threads();
        if (m->nthreads < 1)
            m->nthreads = 1;
        m->scratch_len = scratch_floats(cfg, B, T, m->nthreads);
        m->scratch = train_alloc_floats(m->scratch_len);
        if (!m->scratch)
            goto nomem;
        memset(m->scratch, 0, m->scratch_len * sizeof(float));
        /* Per-thread gradient blocks for batches split into slices, when
         * the batch can be and they take no more than the activations (a
         * large model on many threads runs its batches whole instead). */
        size_t nt1 = (size_t)(m->nthreads - 1);
        if (m->grads_mem && nt1 > 0 && B >= m->nthreads && nt1 * m->n_params <= n) {
            if (!(m->tgrads = train_alloc_floats(nt1 * m->n_params)))
                goto nomem;
            memset(m->tgrads, 0, nt1 * m->n_params * sizeof(float));
        }
    }
    return GL_OK;
nomem:
    train_model_free(m);
    return gl_err_set(err, GL_ENOMEM, "model: out of memory allocating %d layers x %d width for %d x %d",
                      cfg->n_layer, cfg->n_embd, B, T);
}

/* ---- initialisation ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s)
{
    return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static void fill_normal(float *p, size_t n, float std, uint64_t *s)
{
    for (size_t i = 0; i < n; i += 2) {
        double u1 = uniform01(s), u2 = uniform01(s);
        double r = sqrt(-2.0 * log(u1));
        p[i] = (float)(std * r * cos(2 * M_PI * u2));
        if (i + 1 < n)
            p[i + 1] = (float)(std * r * sin(2 * M_PI * u2));
    }
}

void train_model_init_weights(train_model_t *m, uint64_t seed)
{
    uint64_t s = seed;
    float std = 0.02f, proj_std = 0.02f / sqrtf(2.0f * m->cfg.n_layer);
    for (int i = 0; i < TRAIN_NPARAM_TENSORS; i++) {
        float *p = m->params.t[i];
        size_t n = m->sizes[i];
        switch (i) {
        case TRAIN_LN1W: case TRAIN_LN2W: case TRAIN_LNFW:
            for (size_t j = 0; j < n; j++)
                p[j] = 1.0f;
            break;
        case TRAIN_ATTPROJW: case TRAIN_FCPROJW:
            fill_normal(p, n, proj_std, &s);
            break;
        default:
            if (train_param_decays(i))
                fill_normal(p, n, std, &s);
            else
                memset(p, 0, n * sizeof(float));
        }
    }
}

/* ---- the model --------------------------------------------------------- */

int train_model_set_dropout(train_model_t *m, float p, uint64_t seed, gl_err_t *err)
{
    if (!(p >= 0.0f && p < 1.0f))
        return gl_err_set(err, GL_EINVAL, "dropout %g outside [0, 1)", (double)p);
    m->dropout = p;
    m->dropout_seed = seed;
    return GL_OK;
}

void train_model_set_training(train_model_t *m, int on) { m->training = !!on; }

/* Dropout sites of one forward: 0 the embeddings, then per layer three. */
enum { SITE_ATT = 1, SITE_ATTPROJ = 2, SITE_FCPROJ = 3 };
static uint64_t site_key(const train_model_t *m, int layer, int site)
{
    return train_k_dropout_key(m->dropout_seed, m->cur_dropout_iter,
                               layer < 0 ? 0 : (uint64_t)(3 * layer + site));
}

/* out = res + dropout(inp w + bias), unfused for the dropout; tmp (N,OC). */
static void matmul_dropout_forward(float *out, float *tmp, const float *inp, const float *w,
                                   const float *bias, const float *res, int N, int IC, int OC,
                                   float p, uint64_t key)
{
    train_k_matmul_forward(tmp, inp, w, bias, NULL, N, IC, OC);
    train_k_dropout(tmp, (size_t)N * OC, p, key);
    size_t n = (size_t)N * OC;
#pragma omp parallel for simd if (n > 32768)
    for (size_t i = 0; i < n; i++)
        out[i] = res[i] + tmp[i];
}

static int forward(train_model_t *m, const int32_t *tokens, const int32_t *targets, const float *weights, int B,
                   int T, int logits, gl_err_t *err);

int train_model_forward(train_model_t *m, const int32_t *tokens, const int32_t *targets,
                        const float *weights, int B, int T, gl_err_t *err)
{
    return forward(m, tokens, targets, weights, B, T, 1, err);
}

int train_model_forward_hidden(train_model_t *m, const int32_t *tokens, int B, int T, gl_err_t *err)
{
    return forward(m, tokens, NULL, NULL, B, T, 0, err);
}

/* A part of the batch and how its kernels run. A step either runs as a
 * whole (one slice, the kernels threading themselves: the matrix products
 * in slabs, attention over heads) or, when the batch divides among the
 * threads, as one slice of whole sequences per thread, each thread taking
 * its slice through every layer with one-thread kernels and adding its
 * parameter gradients into its own block (tgrads), summed at the end of
 * the backward pass: no barrier between the layers, and each thread keeps
 * its rows in its own cache. */
typedef struct {
    int b0, nb;        /* batch rows b0 .. b0+nb-1 */
    int kt;            /* threads for the kernels with per-thread scratch */
    float *att, *part; /* attention and LayerNorm scratch: slot 0 of kt */
    train_params_t g;  /* gradients to add into */
} slice_t;

static float *att_scratch(const train_model_t *m)
{
    return m->scratch + (size_t)m->B * m->T * m->cfg.n_embd * 9;
}

static slice_t slice_of(const train_model_t *m, int b0, int nb, int slot)
{
    slice_t s = {.b0 = b0, .nb = nb};
    float *att = att_scratch(m);
    size_t per = train_k_attention_scratch(m->T, m->cfg.n_embd / m->cfg.n_head);
    float *part = att + (size_t)m->nthreads * per;
    if (slot < 0) {
        s.kt = run_threads(m);
        s.att = att;
        s.part = part;
    } else {
        s.kt = 1;
        s.att = att + (size_t)slot * per;
        s.part = part + (size_t)slot * 2 * m->cfg.n_embd;
    }
    /* a forward-only slice may have no gradient block */
    if (m->grads_mem && (slot <= 0 || m->tgrads))
        point_params(&s.g, slot > 0 ? m->tgrads + (size_t)(slot - 1) * m->n_params : m->grads_mem, m->sizes);
    return s;
}

/* Threads to split a batch of B rows into slices over, or 1 (the batch as
 * a whole): B must divide evenly, and a backward pass needs the per-thread
 * gradient blocks. */
static int slice_threads(const train_model_t *m, int B, int backward)
{
    int nt = run_threads(m);
#ifdef _OPENMP
    if (omp_in_parallel())
        return 1;
#endif
    if (nt < 2 || B < nt || B % nt || (backward && !m->tgrads))
        return 1;
    return nt;
}

/* The mask key of a dropout site for an array whose first element is
 * element first of the whole batch's. */
static uint64_t slice_key(const train_model_t *m, int layer, int site, uint64_t first)
{
    return train_k_dropout_key_at(site_key(m, layer, site), first);
}

/* The forward pass of the rows of s; returns the sum of their losses
 * (with targets). */
static double forward_slice(train_model_t *m, const slice_t *s, const int32_t *tokens, const int32_t *targets,
                            const float *weights, int T, int logits)
{
    const train_config_t *c = &m->cfg;
    int L = c->n_layer, C = c->n_embd, NH = c->n_head, V = c->vocab_size;
    const train_params_t *p = &m->params;
    train_acts_t *a = &m->acts;
    size_t cap = (size_t)m->B * m->T, r0 = (size_t)s->b0 * T;
    int N = s->nb * T;
    float dp = m->cur_dropout;
    float *tmp = m->scratch + r0 * C;   /* the backward's dresidual buffer, free now */
    float *encoded = a->encoded + r0 * C;
    train_k_encoder_forward(encoded, tokens + r0, p->t[TRAIN_WTE], p->t[TRAIN_WPE], s->nb, T, C);
    if (dp > 0.0f)
        train_k_dropout(encoded, (size_t)N * C, dp, slice_key(m, -1, 0, r0 * C));
    const float *residual = encoded;
    for (int l = 0; l < L; l++) {
        size_t oC = l * cap * C + r0 * C, o1 = l * cap + r0;
        float *ln1 = a->ln1 + oC, *qkv = a->qkv + 3 * oC, *atty = a->atty + oC;
        float *res2 = a->residual2 + oC, *ln2 = a->ln2 + oC, *fch = a->fch + 4 * oC;
        float *fchg = a->fch_gelu + 4 * oC, *res3 = a->residual3 + oC;
        train_k_layernorm_forward(ln1, a->ln1_mean + o1, a->ln1_rstd + o1, residual,
                                  p->t[TRAIN_LN1W] + (size_t)l * C, p->t[TRAIN_LN1B] + (size_t)l * C, N, C);
        train_k_matmul_forward(qkv, ln1, p->t[TRAIN_QKVW] + (size_t)l * C * 3 * C,
                               p->t[TRAIN_QKVB] + (size_t)l * 3 * C, NULL, N, C, 3 * C);
        train_k_attention_forward(atty, a->att_lse + (size_t)l * m->B * NH * m->T + (size_t)s->b0 * NH * T, qkv,
                                  s->nb, T, C, NH, s->att, s->kt, dp,
                                  slice_key(m, l, SITE_ATT, (uint64_t)s->b0 * NH * T * T));
        if (dp > 0.0f)
            matmul_dropout_forward(res2, tmp, atty, p->t[TRAIN_ATTPROJW] + (size_t)l * C * C,
                                   p->t[TRAIN_ATTPROJB] + (size_t)l * C, residual, N, C, C, dp,
                                   slice_key(m, l, SITE_ATTPROJ, r0 * C));
        else
            train_k_matmul_forward(res2, atty, p->t[TRAIN_ATTPROJW] + (size_t)l * C * C,
                                   p->t[TRAIN_ATTPROJB] + (size_t)l * C, residual, N, C, C);
        train_k_layernorm_forward(ln2, a->ln2_mean + o1, a->ln2_rstd + o1, res2,
                                  p->t[TRAIN_LN2W] + (size_t)l * C, p->t[TRAIN_LN2B] + (size_t)l * C, N, C);
        train_k_matmul_forward(fch, ln2, p->t[TRAIN_FCW] + (size_t)l * C * 4 * C,
                               p->t[TRAIN_FCB] + (size_t)l * 4 * C, NULL, N, C, 4 * C);
        if (m->grads_mem)
            train_k_gelu_forward_dx(fchg, fch, (size_t)N * 4 * C);   /* fch becomes GELU's derivative */
        else
            train_k_gelu_forward(fchg, fch, (size_t)N * 4 * C);
        if (dp > 0.0f)
            matmul_dropout_forward(res3, tmp, fchg, p->t[TRAIN_FCPROJW] + (size_t)l * 4 * C * C,
                                   p->t[TRAIN_FCPROJB] + (size_t)l * C, res2, N, 4 * C, C, dp,
                                   slice_key(m, l, SITE_FCPROJ, r0 * C));
        else
            train_k_matmul_forward(res3, fchg, p->t[TRAIN_FCPROJW] + (size_t)l * 4 * C * C,
                                   p->t[TRAIN_FCPROJB] + (size_t)l * C, res2, N, 4 * C, C);
        residual = res3;
    }
    float *lnf = a->lnf + r0 * C, *lg = a->logits + r0 * V;
    train_k_layernorm_forward(lnf, a->lnf_mean + r0, a->lnf_rstd + r0, residual, p->t[TRAIN_LNFW],
                              p->t[TRAIN_LNFB], N, C);
    if (logits)
        train_k_gemm(0, 1, N, V, C, 1.0f, lnf, C, p->t[TRAIN_WTE], C, 0.0f, lg, V);
    if (!targets)
        return 0.0;
    return train_k_crossentropy_forward(a->losses + r0, a->lse + r0, lg, targets + r0, weights ? weights + r0 : NULL,
                                        N, V);
}

static int forward(train_model_t *m, const int32_t *tokens, const int32_t *targets, const float *weights, int B,
                   int T, int logits, gl_err_t *err)
{
    assert(m && m->acts_mem && tokens);
    int V = m->cfg.vocab_size;
    m->have_targets = 0;
    m->cur_B = m->cur_T = 0;
    if (B < 1 || T < 1 || B > m->B || T > m->T)
        return gl_err_set(err, GL_ERANGE, "forward: batch %d x %d outside the model's %d x %d",
                          B, T, m->B, m->T);
    int N = B * T;
    for (int i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return gl_err_set(err, GL_ERANGE, "forward: token %d at row %d position %d outside vocab %d",
                              tokens[i], i / T, i % T, V);
        if (targets && (targets[i] < -1 || targets[i] >= V))
            return gl_err_set(err, GL_ERANGE, "forward: target %d at row %d position %d outside vocab %d",
                              targets[i], i / T, i % T, V);
    }
    double wsum = 0.0;
    if (targets) {
        for (int i = 0; i < N; i++)
            if (targets[i] >= 0)
                wsum += weights ? weights[i] : 1.0f;
        if (!(wsum > 0.0))
            return gl_err_set(err, GL_EINVAL, "forward: no token counted in the loss (weights sum to %g)",
                              wsum);
    }

    float dp = m->training ? m->dropout : 0.0f;
    m->cur_dropout = dp;
    m->cur_dropout_iter = m->dropout_iter;
    if (dp > 0.0f)
        m->dropout_iter++;
    double total = 0.0;
    int nt = slice_threads(m, B, 0);
    if (nt == 1) {
        slice_t s = slice_of(m, 0, B, -1);
        total = forward_slice(m, &s, tokens, targets, weights, T, logits);
    } else {
        /* the losses summed in slice order: the same total every run */
        double part[nt];
#pragma omp parallel num_threads(nt)
        {
            int t = train_thread_id();
            slice_t s = slice_of(m, t * (B / nt), B / nt, t);
            part[t] = forward_slice(m, &s, tokens, targets, weights, T, logits);
        }
        for (int t = 0; t < nt; t++)
            total += part[t];
    }

    m->cur_B = B;
    m->cur_T = T;
    m->cur_tokens = tokens;
    m->cur_targets = targets;
    m->cur_weights = weights;
    if (targets) {
        m->weight_sum = wsum;
        m->loss = (float)(total / wsum);
        m->have_targets = 1;
    }
    return GL_OK;
}

void train_split_windows(const int32_t *win, int B, int T, int32_t *tok, int32_t *tgt)
{
    for (int b = 0; b < B; b++) {
        const int32_t *w = win + (size_t)b * (T + 1);
        memcpy(tok + (size_t)b * T, w, (size_t)T * sizeof(int32_t));
        memcpy(tgt + (size_t)b * T, w + 1, (size_t)T * sizeof(int32_t));
    }
}

void train_model_zero_grad(train_model_t *m)
{
    assert(m && m->grads_mem);
    /* split over the threads: a serial memset would leave the others idle */
    size_t n = m->n_params, chunk = 1 << 16;
#pragma omp parallel for schedule(static) if (n > 4 * chunk)
    for (size_t i = 0; i < n; i += chunk)
        memset(m->grads_mem + i, 0, (n - i < chunk ? n - i : chunk) * sizeof(float));
}

/* The backward pass below the final LayerNorm's output, for the rows of s,
 * from the gradient dlnf of those rows (in the dC buffer): every layer's
 * parameters and the embeddings, added into s->g. */
static void backward_trunk(train_model_t *m, const slice_t *s, const float *dlnf)
{
    const train_config_t *c = &m->cfg;
    int L = c->n_layer, C = c->n_embd, NH = c->n_head;
    int T = m->cur_T, N = s->nb * T;
    size_t cap = (size_t)m->B * m->T, r0 = (size_t)s->b0 * T;
    const train_params_t *p = &m->params;
    const train_params_t *g = &s->g;
    train_acts_t *a = &m->acts;
    float *dres = m->scratch + r0 * C, *dC = m->scratch + cap * C + r0 * C;
    float *dqkv = m->scratch + 2 * cap * C + r0 * 3 * C, *d4C = m->scratch + 5 * cap * C + r0 * 4 * C;
    float dp = m->cur_dropout;

    memset(dres, 0, (size_t)N * C * sizeof(float));
    const float *last = a->residual3 + (size_t)(L - 1) * cap * C + r0 * C;
    train_k_layernorm_backward(dres, g->t[TRAIN_LNFW], g->t[TRAIN_LNFB], dlnf, last, p->t[TRAIN_LNFW],
                               a->lnf_mean + r0, a->lnf_rstd + r0, N, C, s->part, s->kt);
    for (int l = L - 1; l >= 0; l--) {
        size_t oC = l * cap * C + r0 * C, o1 = l * cap + r0;
        const float *residual = l == 0 ? a->encoded + r0 * C : a->residual3 + (l - 1) * cap * C + r0 * C;
        const float *ln1 = a->ln1 + oC, *qkv = a->qkv + 3 * oC, *atty = a->atty + oC;
        const float *res2 = a->residual2 + oC, *ln2 = a->ln2 + oC, *fch = a->fch + 4 * oC;
        const float *fchg = a->fch_gelu + 4 * oC;
        size_t lC = (size_t)l * C;
        /* With dropout the branches see the masked gradient; dqkv is free
         * until the attention backward below. */
        const float *dbranch = dres;
        if (dp > 0.0f) {
            memcpy(dqkv, dres, (size_t)N * C * sizeof(float));
            train_k_dropout(dqkv, (size_t)N * C, dp, slice_key(m, l, SITE_FCPROJ, r0 * C));
            dbranch = dqkv;
        }
        /* MLP branch: res3 = res2 + fcproj(gelu(fc(ln2(res2)))). */
        train_k_matmul_backward(d4C, g->t[TRAIN_FCPROJW] + lC * 4 * C, g->t[TRAIN_FCPROJB] + lC, dbranch,
                                fchg, p->t[TRAIN_FCPROJW] + lC * 4 * C, N, 4 * C, C);
        train_k_mul(d4C, fch, (size_t)N * 4 * C);   /* fch holds GELU's derivative */
        train_k_matmul_backward(dC, g->t[TRAIN_FCW] + lC * 4 * C, g->t[TRAIN_FCB] + lC * 4, d4C, ln2,
                                p->t[TRAIN_FCW] + lC * 4 * C, N, C, 4 * C);
        train_k_layernorm_backward(dres, g->t[TRAIN_LN2W] + lC, g->t[TRAIN_LN2B] + lC, dC, res2,
                                   p->t[TRAIN_LN2W] + lC, a->ln2_mean + o1, a->ln2_rstd + o1, N, C, s->part,
                                   s->kt);
        if (dp > 0.0f) {
            memcpy(dqkv, dres, (size_t)N * C * sizeof(float));
            train_k_dropout(dqkv, (size_t)N * C, dp, slice_key(m, l, SITE_ATTPROJ, r0 * C));
        }
        /* Attention branch: res2 = res + attproj(attn(qkv(ln1(res)))). */
        train_k_matmul_backward(dC, g->t[TRAIN_ATTPROJW] + lC * C, g->t[TRAIN_ATTPROJB] + lC, dbranch, atty,
                                p->t[TRAIN_ATTPROJW] + lC * C, N, C, C);
        train_k_attention_backward(dqkv, dC, qkv, atty,
                                   a->att_lse + (size_t)l * m->B * NH * m->T + (size_t)s->b0 * NH * T, s->nb,
                                   T, C, NH, s->att, s->kt, dp,
                                   slice_key(m, l, SITE_ATT, (uint64_t)s->b0 * NH * T * T));
        train_k_matmul_backward(dC, g->t[TRAIN_QKVW] + lC * 3 * C, g->t[TRAIN_QKVB] + lC * 3, dqkv, ln1,
                                p->t[TRAIN_QKVW] + lC * 3 * C, N, C, 3 * C);
        train_k_layernorm_backward(dres, g->t[TRAIN_LN1W] + lC, g->t[TRAIN_LN1B] + lC, dC, residual,
                                   p->t[TRAIN_LN1W] + lC, a->ln1_mean + o1, a->ln1_rstd + o1, N, C, s->part,
                                   s->kt);
    }
    if (dp > 0.0f)
        train_k_dropout(dres, (size_t)N * C, dp, slice_key(m, -1, 0, r0 * C));
    train_k_encoder_backward(g->t[TRAIN_WTE], g->t[TRAIN_WPE], dres, m->cur_tokens + r0, s->nb, T, C);
}

/* The classifier's and the trunk's backward for the rows of s, from the
 * per-token cross-entropies weighted by scale * w[i] (w NULL: 1); with
 * ce 0, from the gradient of the hidden states already in the dC buffer. */
static void backward_slice(train_model_t *m, const slice_t *s, int ce, const float *w, float scale)
{
    int C = m->cfg.n_embd, V = m->cfg.vocab_size, T = m->cur_T, N = s->nb * T;
    size_t cap = (size_t)m->B * m->T, r0 = (size_t)s->b0 * T;
    float *dlnf = m->scratch + cap * C + r0 * C;   /* the dC buffer of backward_trunk */
    if (ce) {
        train_acts_t *a = &m->acts;
        const float *wte = m->params.t[TRAIN_WTE];
        float *lg = a->logits + r0 * V;
        train_k_crossentropy_backward(lg, a->lse + r0, m->cur_targets + r0, w ? w + r0 : NULL, scale, N, V);
        /* Classifier: dlnf = dlogits wte; dwte += dlogits^T lnf. */
        train_k_gemm(0, 0, N, C, V, 1.0f, lg, V, wte, C, 0.0f, dlnf, C);
        train_k_gemm(1, 0, V, C, N, 1.0f, lg, V, a->lnf + r0 * C, C, 1.0f, s->g.t[TRAIN_WTE], C);
    }
    backward_trunk(m, s, dlnf);
}

/* The backward pass over the whole batch: as one slice, or one slice per
 * thread and then the threads' gradient blocks summed into m->grads (and
 * zeroed for the next pass). */
static void backward(train_model_t *m, int ce, const float *w, float scale)
{
    int B = m->cur_B, nt = slice_threads(m, B, 1);
    if (nt == 1) {
        slice_t s = slice_of(m, 0, B, -1);
        backward_slice(m, &s, ce, w, scale);
        return;
    }
    size_t n = m->n_params;
#pragma omp parallel num_threads(nt)
    {
        int t = train_thread_id();
        slice_t s = slice_of(m, t * (B / nt), B / nt, t);
        backward_slice(m, &s, ce, w, scale);
#pragma omp barrier
        /* One pass per thread block, each thread on the same static share
         * of the elements every time (so no barrier between the passes):
         * the same sums in the same order as element by element, but
         * loops the compiler vectorises. */
        float *g = m->grads_mem;
        for (int k = 0; k < nt - 1; k++) {
            float *tg = m->tgrads + (size_t)k * n;
#pragma omp for simd schedule(static) nowait
            for (size_t i = 0; i < n; i++) {
                g[i] += tg[i];
                tg[i] = 0.0f;
            }
        }
    }
}

static void backward_ce(train_model_t *m, const float *w, float scale)
{
    assert(m && m->grads_mem && m->have_targets);
    backward(m, 1, w, scale);
    m->have_targets = 0;
}

void train_model_backward(train_model_t *m, float loss_scale)
{
    assert(m && m->have_targets);
    backward_ce(m, m->cur_weights, (float)(loss_scale / m->weight_sum));
}

void train_model_backward_tokens(train_model_t *m, const float *coef)
{
    assert(m && coef);
    backward_ce(m, coef, 1.0f);
}

void train_model_entropy(const train_model_t *m, float *out)
{
    assert(m && m->have_targets && out);
    int V = m->cfg.vocab_size, N = m->cur_B * m->cur_T;
    const float *logits = m->acts.logits, *lse = m->acts.lse;
#pragma omp parallel for if ((size_t)N * V > 65536)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        double pz = 0.0;
        for (int k = 0; k < V; k++)
            pz += exp((double)z[k] - lse[i]) * z[k];
        out[i] = (float)(lse[i] - pz);
    }
}

void train_model_backward_hidden(train_model_t *m, const float *dlnf)
{
    assert(m && m->grads_mem && m->cur_B > 0 && dlnf);
    size_t n = (size_t)m->cur_B * m->cur_T * m->cfg.n_embd;
    float *copy = m->scratch + (size_t)m->B * m->T * m->cfg.n_embd;
    memmove(copy, dlnf, n * sizeof(float));
    backward(m, 0, NULL, 1.0f);
}
