/* optim.c — AdamW, global-norm gradient clipping and the learning-rate
 * schedule.
 *
 * AdamW is PyTorch's torch.optim.AdamW (decoupled weight decay, bias
 * correction), applied as one fused pass over the flat parameter block;
 * weight decay goes to the 2-D tensors only, as nanoGPT does (embeddings
 * and matrices decay; biases and LayerNorm parameters do not). Clipping
 * follows torch.nn.utils.clip_grad_norm_. The pass is memory-bound: four
 * floats read and three written per parameter, threaded over the block.
 */
#include "trainer/internal.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int train_optim_init(train_optim_t *o, const train_model_t *m, gl_err_t *err)
{
    memset(o, 0, sizeof *o);
    o->n = m->n_params;
    /* the model's allocation: 2 MiB pages for the moments too */
    o->m = train_alloc_floats(o->n);
    o->v = train_alloc_floats(o->n);
    if (!o->m || !o->v) {
        train_optim_free(o);
        return gl_err_set(err, GL_ENOMEM, "optimizer: out of memory for %zu parameters", m->n_params);
    }
    memset(o->m, 0, o->n * sizeof(float));
    memset(o->v, 0, o->n * sizeof(float));
    return GL_OK;
}

void train_optim_free(train_optim_t *o)
{
    if (!o)
        return;
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

void train_adamw_step(train_optim_t *o, train_model_t *m, const train_adamw_t *h, float lr)
{
    assert(o && m && m->grads_mem && o->n == m->n_params);
    o->step++;
    float b1 = h->beta1, b2 = h->beta2;
    float bc1 = 1.0f - powf(b1, (float)o->step), bc2 = 1.0f - powf(b2, (float)o->step);
    float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2), eps = h->eps, wd = h->weight_decay;
    /* One parallel region over all the tensors: no barrier between them. */
#pragma omp parallel if (o->n > 1 << 15)
    {
        size_t off = 0;
        for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
            size_t n = m->sizes[k];
            float *p = m->params.t[k], *g = m->grads.t[k];
            float *mm = o->m + off, *vv = o->v + off;
            float decay = train_param_decays(k) ? 1.0f - lr * wd : 1.0f;
#pragma omp for simd schedule(static) nowait
            for (size_t i = 0; i < n; i++) {
                float gi = g[i];
                float mi = b1 * mm[i] + (1.0f - b1) * gi;
                float vi = b2 * vv[i] + (1.0f - b2) * gi * gi;
                mm[i] = mi;
                vv[i] = vi;
                p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
            }
            off += n;
        }
    }
}

float train_grad_norm(const train_model_t *m)
{
    assert(m && m->grads_mem);
    const float *g = m->grads_mem;
    size_t n = m->n_params;
    double ss = 0.0;
#pragma omp parallel for simd reduction(+ : ss) schedule(static) if (n > 1 << 15)
    for (size_t i = 0; i < n; i++)
        ss += (double)g[i] * g[i];
    return (float)sqrt(ss);
}

float train_clip_grad_norm(train_model_t *m, float max_norm)
{
    float norm = train_grad_norm(m);
    if (max_norm > 0.0f) {
        float coef = max_norm / (norm + 1e-6f);
        if (coef < 1.0f) {
            float *g = m->grads_mem;
            size_t n = m->n_params;
#pragma omp parallel for simd schedule(static) if (n > 1 << 15)
            for (size_t i = 0; i < n; i++)
                g[i] *= coef;
        }
    }
    return norm;
}

float train_lr_at(const train_sched_t *s, long step)
{
    if (step < s->warmup)
        return s->max_lr * (float)(step + 1) / (float)s->warmup;
    if (step >= s->max_steps)
        return s->min_lr;
    double ratio = (double)(step - s->warmup) / (double)(s->max_steps - s->warmup);
    double coeff = 0.5 * (1.0 + cos(M_PI * ratio));
    return (float)(s->min_lr + coeff * (s->max_lr - s->min_lr));
}
