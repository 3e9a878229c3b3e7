/* internal.h — the trainer's layer kernels (kernels.c), shared by the model
 * and the layer tests; not part of the public API.
 *
 * Shapes: N rows (= B*T tokens), C width, V vocab; every array is flat,
 * row-major float32. Backward functions ADD into parameter gradients and
 * say for each input gradient whether it is added or overwritten.
 */
#ifndef GL_TRAINER_INTERNAL_H
#define GL_TRAINER_INTERNAL_H

#include "trainer/trainer.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* The calling thread's number in its OpenMP team (0 outside one): the
 * index of its scratch slot. */
static inline int train_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* n floats, 64-byte aligned, on 2 MiB pages when they fill some
 * (model.c); free() them. NULL for n 0 or out of memory. */
float *train_alloc_floats(size_t n);

/* out[bt] = wte[tok[bt]] + wpe[bt % T]. */
void train_k_encoder_forward(float *out, const int32_t *tok, const float *wte, const float *wpe,
                             int B, int T, int C);
/* dwte, dwpe += scatter of dout. */
void train_k_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tok,
                              int B, int T, int C);
/* LayerNorm over the last axis (eps 1e-5); mean, rstd (N) kept. */
void train_k_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                               const float *w, const float *b, int N, int C);
/* dinp += ...; dw, db += ...; part: nthreads * 2C floats of scratch. */
void train_k_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const float *w, const float *mean,
                                const float *rstd, int N, int C, float *part, int nthreads);
/* out[N,OC] = inp[N,IC] w[IC,OC] + bias (+ res[N,OC] when non-NULL). */
void train_k_matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                            const float *res, int N, int IC, int OC);
/* The same for a few rows N (generation): out may be res (each element
 * is read before it is written); no sgemm, so no packing of w per call. */
void train_k_matmul_forward_rows(float *out, const float *inp, const float *w, const float *bias,
                                 const float *res, int N, int IC, int OC);
/* dinp = dout w^T (overwritten; skipped when NULL); dw += inp^T dout;
 * db += column sums of dout (skipped when NULL). */
void train_k_matmul_backward(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, int N, int IC, int OC);
/* Dropout with rate p, in place: x = keep ? x / (1-p) : 0, the keep
 * decision of element i a hash of (key, i), so applying it to the gradient
 * in backward is the same call. train_k_dropout_key() derives the key of
 * one site (embeddings, a layer's attention or residual) of one forward. */
void train_k_dropout(float *x, size_t n, float p, uint64_t key);
uint64_t train_k_dropout_key(uint64_t seed, uint64_t iter, uint64_t site);
/* The key that gives, from element 0 of an array, the mask key gives from
 * element first: for a part of a batch, the masks of the whole. */
uint64_t train_k_dropout_key_at(uint64_t key, uint64_t first);
/* x[0..n) = softmax(x), in place (the polynomial exp). */
void train_k_softmax(float *x, int n);
/* GELU, tanh approximation. */
void train_k_gelu_forward(float *out, const float *inp, size_t n);
/* d *= gelu'(inp), in place. */
void train_k_gelu_backward(float *d, const float *inp, size_t n);
/* out = gelu(x), and x is overwritten by gelu'(x) (what the backward
 * pass needs), so that the backward is d *= x (train_k_mul). */
void train_k_gelu_forward_dx(float *out, float *x, size_t n);
/* d *= g, elementwise. */
void train_k_mul(float *d, const float *g, size_t n);
/* C = alpha op(A) op(B) + beta C (row-major; ta, tb: transpose A, B),
 * split over the OpenMP threads, each running a one-thread sgemm. */
void train_k_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
/* Causal self-attention. qkv (B,T,3C): q|k|v per token, heads side by side;
 * out (B,T,C); lse (B,NH,T) log-sum-exp per softmax row. Threads over
 * heads, each with train_k_attention_scratch(T, C/NH) floats of scratch
 * (slot thread_id). drop > 0: dropout on the probabilities with mask key. */
size_t train_k_attention_scratch(int T, int hs);
void train_k_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C,
                               int NH, float *scratch, int nthreads, float drop, uint64_t key);
/* dqkv (B,T,3C), overwritten, from dout (B,T,C) and the forward's out, lse. */
void train_k_attention_backward(float *dqkv, const float *dout, const float *qkv,
                                const float *out, const float *lse, int B, int T, int C, int NH,
                                float *scratch, int nthreads, float drop, uint64_t key);
/* The portable row-by-row version the tests compare the above against:
 * rows is nthreads * T floats; threads over (batch, head). */
void train_k_attention_forward_ref(float *out, float *lse, const float *qkv, int B, int T, int C,
                                   int NH, float *rows, int nthreads);
void train_k_attention_backward_ref(float *dqkv, const float *dout, const float *qkv,
                                    const float *out, const float *lse, int B, int T, int C, int NH);
/* Per row: lse = log-sum-exp(logits); losses = w * (lse - logits[y]), with
 * w = weights[i] (NULL: 1) and 0 where y < 0. Returns the sum of losses. */
double train_k_crossentropy_forward(float *losses, float *lse, const float *logits,
                                    const int32_t *targets, const float *weights, int N, int V);
/* logits becomes dlogits = scale * w * (softmax - onehot(y)), in place. */
void train_k_crossentropy_backward(float *logits, const float *lse, const int32_t *targets,
                                   const float *weights, float scale, int N, int V);

#endif
