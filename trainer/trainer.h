/* trainer.h — the GPT-2 model in plain C: forward, backward, AdamW and
 * safetensors checkpoints.
 *
 * The model is GPT-2: token + learned position embeddings, pre-LayerNorm
 * blocks of causal multi-head self-attention and a 4x GELU (tanh) MLP, a
 * final LayerNorm, and an output projection tied to the token embedding.
 * Every tensor is a flat float32 array; the weights of one kind for all
 * layers sit side by side in one block (llm.c's layout), and the matrices
 * are kept in Hugging Face's Conv1D layout [in, out] so a checkpoint is a
 * straight copy. All memory is allocated by train_model_init(); a training
 * step allocates nothing.
 *
 * Errors: functions that can fail return 0 (GL_OK) or a gl_code_t and fill
 * *err; they never print or exit. Misuse (a NULL model, a backward without
 * a forward) is a programmer error and asserts.
 */
#ifndef GL_TRAINER_H
#define GL_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* ---- configuration ---------------------------------------------------- */

typedef struct {
    int n_layer;     /* transformer blocks */
    int n_head;      /* attention heads; n_embd % n_head == 0 */
    int n_embd;      /* width C */
    int n_ctx;       /* context length: rows of the position embedding */
    int vocab_size;  /* rows of the token embedding */
    uint64_t tokenizer_hash; /* identity of the vocabulary the model was trained with; 0 = unknown */
} train_config_t;

/* Checks a configuration (positive sizes, heads divide the width, sane
 * limits); GL_EINVAL with a message naming the field. */
int train_config_check(const train_config_t *cfg, gl_err_t *err);

/* ---- parameters ------------------------------------------------------- */

/* The parameter tensors, in storage order. Per-layer kinds hold all layers
 * back to back (layer l at offset l * per-layer size). Matrices are [in, out]
 * row-major (Conv1D), except wte/wpe which are [rows, C]. */
enum {
    TRAIN_WTE, TRAIN_WPE,                 /* [V,C], [n_ctx,C] */
    TRAIN_LN1W, TRAIN_LN1B,               /* [L,C] */
    TRAIN_QKVW, TRAIN_QKVB,               /* [L,C,3C], [L,3C] */
    TRAIN_ATTPROJW, TRAIN_ATTPROJB,       /* [L,C,C], [L,C] */
    TRAIN_LN2W, TRAIN_LN2B,               /* [L,C] */
    TRAIN_FCW, TRAIN_FCB,                 /* [L,C,4C], [L,4C] */
    TRAIN_FCPROJW, TRAIN_FCPROJB,         /* [L,4C,C], [L,C] */
    TRAIN_LNFW, TRAIN_LNFB,               /* [C] */
    TRAIN_NPARAM_TENSORS
};

typedef struct {
    float *t[TRAIN_NPARAM_TENSORS];       /* pointers into one block */
} train_params_t;

/* ---- the model -------------------------------------------------------- */

/* Activations kept by the forward pass for the backward pass, for up to
 * B x T tokens (L = layers, NH = heads). Each layer's slice starts at the
 * capacity's offset (l * B * T * width); inside it, the tokens of the last
 * forward are packed: row b, position t at b * T' + t for that call's T'. */
typedef struct {
    float *encoded;    /* (B,T,C) embeddings: input of layer 0 */
    float *ln1;        /* (L,B,T,C) */
    float *ln1_mean, *ln1_rstd;   /* (L,B,T) */
    float *qkv;        /* (L,B,T,3C) */
    float *atty;       /* (L,B,T,C) attention output before the projection */
    float *att_lse;    /* (L,B,NH,T) log-sum-exp of each softmax row */
    float *residual2;  /* (L,B,T,C) after the attention branch */
    float *ln2;        /* (L,B,T,C) */
    float *ln2_mean, *ln2_rstd;   /* (L,B,T) */
    float *fch;        /* (L,B,T,4C) MLP hidden before GELU; in a model with
                          gradients, GELU's derivative there (for backward) */
    float *fch_gelu;   /* (L,B,T,4C) */
    float *residual3;  /* (L,B,T,C) layer output */
    float *lnf;        /* (B,T,C) final LayerNorm output: the hidden states */
    float *lnf_mean, *lnf_rstd;   /* (B,T) */
    float *logits;     /* (B,T,V); overwritten by their gradient in backward */
    float *lse;        /* (B,T) log-sum-exp of each logits row */
    float *losses;     /* (B,T) per-token cross-entropy (0 where not counted) */
} train_acts_t;

typedef struct {
    train_config_t cfg;
    int B, T;                 /* capacity given to init: batch rows, sequence */
    size_t sizes[TRAIN_NPARAM_TENSORS];  /* element count of each tensor */
    size_t n_params;          /* total elements */
    float *params_mem;        /* n_params floats */
    train_params_t params;
    float *grads_mem;         /* n_params floats, or NULL (no TRAIN_GRADS) */
    train_params_t grads;
    float *acts_mem;
    train_acts_t acts;
    float *scratch;           /* backward buffers and per-thread rows */
    size_t scratch_len;
    int nthreads;             /* per-thread scratch slots */
    float *tgrads;            /* (nthreads-1) x n_params: the gradient blocks of
                                 threads 1.. when a batch is split into per-thread
                                 slices (zero between backward passes), or NULL */
    /* state of the last forward */
    int cur_B, cur_T;
    int have_targets;         /* forward had targets: backward allowed */
    const int32_t *cur_tokens, *cur_targets;  /* borrowed until backward */
    const float *cur_weights;
    double weight_sum;        /* sum of the loss weights of the last forward */
    float loss;               /* mean loss of the last forward with targets */
    /* dropout (train_model_set_dropout) */
    float dropout;            /* rate; 0 = off (the default) */
    int training;             /* dropout applies only in training mode */
    uint64_t dropout_seed;
    uint64_t dropout_iter;    /* forwards done in training mode: the mask stream */
    float cur_dropout;        /* rate and stream of the last forward, for backward */
    uint64_t cur_dropout_iter;
} train_model_t;

/* Flags for train_model_init. */
enum {
    TRAIN_GRADS = 1,   /* allocate gradients (training); not for a frozen copy */
};

/* Sets the number of threads the trainer's kernels use (OpenMP), and keeps
 * OpenBLAS at one thread: the trainer splits its matrix products over its
 * own threads, so that two thread pools do not spin against each other.
 * n <= 0 keeps the OpenMP default (OMP_NUM_THREADS or the core count).
 * Call it before train_model_init, which sizes per-thread scratch for the
 * count in force; init applies the OpenBLAS part itself. */
void train_set_threads(int n);

/* Allocates a model of config cfg able to run batches of up to B rows of
 * up to T tokens (T <= cfg->n_ctx); B = T = 0 allocates the weights only.
 * Weights start at zero (see train_model_init_weights / train_load).
 * Per-thread scratch is sized for the OpenMP thread count in force, and
 * OpenBLAS is set to one thread (see train_set_threads). The model owns
 * everything; train_model_free() releases it. On error the model is left
 * freed (free is still safe). GL_EINVAL for a bad config, GL_ENOMEM. */
int train_model_init(train_model_t *m, const train_config_t *cfg, int B, int T,
                     int flags, gl_err_t *err);
/* Releases what init allocated; safe on a zeroed or already freed model. */
void train_model_free(train_model_t *m);

/* GPT-2 initialisation, reproducible from seed (independent of threads):
 * weights N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)), biases 0,
 * LayerNorm gains 1. */
void train_model_init_weights(train_model_t *m, uint64_t seed);

/* Name of a parameter tensor kind ("wte", "qkvw", ...); for messages. */
const char *train_param_name(int kind);
/* 1 if AdamW decays this tensor kind (the 2-D ones), else 0. */
int train_param_decays(int kind);

/* Dropout as in nanoGPT — on the embeddings, the attention probabilities
 * and the output of both residual branches — with rate p in [0, 1), masks
 * drawn from seed and the count of training forwards (dropout_iter, to be
 * saved with a checkpoint for an exact resume), and applied only while
 * training mode is on (train_model_set_training). GL_EINVAL for p outside
 * [0, 1). */
int train_model_set_dropout(train_model_t *m, float p, uint64_t seed, gl_err_t *err);
/* Training mode on (1) or off (0, the default: evaluation, generation). */
void train_model_set_training(train_model_t *m, int on);

/* Forward pass over tokens (B,T) (row-major, borrowed until backward).
 * With targets (B,T) the per-token cross-entropy is computed and the mean
 * over counted tokens stored in m->loss: loss = sum(w*ce) / sum(w), where
 * w = weights[b*T+t] (NULL: all 1; 0 leaves a token out, as SFT does with
 * prompt tokens). A target of -1 also leaves the token out. Without
 * targets (NULL) only m->acts.logits and m->acts.lnf are computed.
 * GL_ERANGE if B/T exceed the capacity or a token is out of the vocab;
 * GL_EINVAL if no token is counted. */
int train_model_forward(train_model_t *m, const int32_t *tokens, const int32_t *targets,
                        const float *weights, int B, int T, gl_err_t *err);

/* The forward pass up to the final LayerNorm: m->acts.lnf (the hidden
 * states a scalar head reads) without the output projection to the
 * vocabulary, which a reward or value head does not need; the logits are
 * left undefined. train_model_backward_hidden applies. Errors as
 * train_model_forward. */
int train_model_forward_hidden(train_model_t *m, const int32_t *tokens, int B, int T, gl_err_t *err);
/* Splits windows win[B * (T+1)] (what shard_sampler_next yields) into
 * inputs tok[B * T] = win[:, :T] and next-token targets tgt[B * T] =
 * win[:, 1:]. */
void train_split_windows(const int32_t *win, int B, int T, int32_t *tok, int32_t *tgt);

/* Sets the gradients to zero (start of an accumulation). */
void train_model_zero_grad(train_model_t *m);

/* Backward pass of the last forward (which must have had targets):
 * ADDS the gradient of loss_scale * loss to m->grads (use 1/k with k
 * micro-batches of gradient accumulation). Overwrites m->acts.logits. */
void train_model_backward(train_model_t *m, float loss_scale);

/* Backward pass of the last forward (which must have had targets) from
 * per-token coefficients instead of the mean loss: ADDS to m->grads the
 * gradient of sum_i coef[i] * ce_i over the tokens i = b * T + t, where
 * ce_i = -log p(target_i) (a target of -1 contributes nothing; the
 * forward's weights play no part). Coefficients may be negative: with
 * coef = -g it is the gradient of sum_i g_i log p_i, the form every
 * policy-gradient loss takes (PPO, GRPO, DPO), g_i being the loss's
 * derivative with respect to token i's log-probability. Forward with
 * weights NULL and m->acts.losses[i] is -log p(target_i). Overwrites
 * m->acts.logits. */
void train_model_backward_tokens(train_model_t *m, const float *coef);
/* Entropy (nats) of each position's next-token distribution of the last
 * forward with targets, out[B * T]; call it before the backward pass,
 * which overwrites the logits. */
void train_model_entropy(const train_model_t *m, float *out);
/* Backward pass from a gradient of the hidden states instead of the
 * language-model loss: ADDS to m->grads the gradient of sum(dlnf * lnf),
 * where lnf = m->acts.lnf of the last forward (with or without targets)
 * and dlnf is (B,T,C) for that forward's B, T (borrowed for the call). For
 * heads on top of the model (a scalar reward or value head): the head
 * computes its own gradient and passes dlnf down. The tied output
 * projection gets no gradient from this path. */
void train_model_backward_hidden(train_model_t *m, const float *dlnf);

/* ---- generation with a KV cache ------------------------------------------ */

/* The keys and values of every layer for the positions fed so far, for up
 * to B rows and T positions (T <= n_ctx), and the buffers of one step.
 * Owned by the caller (train_kv_init / train_kv_free); used with the model
 * it was made for, which it does not own. */
typedef struct {
    int B, T, L, C, V;
    int len;          /* positions fed so far: the most of any row */
    int *pos;         /* (B): positions fed so far, per row */
    float *k, *v;     /* (L, B, n_head, T, head size): a (T, hs) slab per row and head */
    float *mem;       /* one step's buffers */
    float *x, *ln, *mean, *rstd, *qkv, *att, *fch, *scores;
    float *logits;    /* (B, V): next-token logits after the last step */
} train_kv_t;

int train_kv_init(train_kv_t *kv, const train_model_t *m, int B, int T, gl_err_t *err);
void train_kv_free(train_kv_t *kv);
/* Forgets the positions fed (a new prompt). */
void train_kv_reset(train_kv_t *kv);

/* Feeds tokens[B] (one per row) at each row's next position, keeping its
 * keys and values, and leaves the next-token logits in kv->logits. Same
 * results as train_model_forward over the whole sequence, at the cost of
 * one position. GL_ERANGE when a row is full or a token is out of the
 * vocab. */
int train_model_decode(const train_model_t *m, train_kv_t *kv, const int32_t *tokens, gl_err_t *err);
/* The same for the rows b with feed[b] != 0 only (feed NULL: all); the
 * other rows keep their positions, and their logits are meaningless. */
int train_model_decode_rows(const train_model_t *m, train_kv_t *kv, const int32_t *tokens, const uint8_t *feed,
                            gl_err_t *err);

/* Feeds n tokens to every row at once, tokens (B, n) row-major, at
 * positions pos..pos+n-1 (every row must be at the same position pos, as
 * after train_kv_reset): the cache then holds what n calls of
 * train_model_decode would leave, without the logits (kv->logits is not
 * updated). Many rows per product instead of a few: the prompt part of
 * generation. Allocates its buffers for the call. GL_ERANGE past the
 * cache or the vocab, GL_EINVAL for rows at different positions. */
int train_model_prefill(const train_model_t *m, train_kv_t *kv, const int32_t *tokens, int n, gl_err_t *err);

/* ---- optimiser -------------------------------------------------------- */

typedef struct {
    float beta1, beta2, eps;   /* e.g. 0.9, 0.95, 1e-8 */
    float weight_decay;        /* applied to the 2-D tensors only (nanoGPT) */
} train_adamw_t;

/* AdamW state: the first and second moments, owned by the optimiser. */
typedef struct {
    float *m, *v;              /* n_params each */
    size_t n;
    long step;                 /* updates done */
} train_optim_t;

int train_optim_init(train_optim_t *o, const train_model_t *m, gl_err_t *err);
void train_optim_free(train_optim_t *o);

/* One AdamW update of m->params from m->grads with learning rate lr
 * (PyTorch's torch.optim.AdamW, decoupled weight decay). */
void train_adamw_step(train_optim_t *o, train_model_t *m, const train_adamw_t *h, float lr);

/* L2 norm of all gradients (accumulated in double). */
float train_grad_norm(const train_model_t *m);
/* Clips the global gradient norm to max_norm as
 * torch.nn.utils.clip_grad_norm_ does; returns the norm before clipping.
 * max_norm <= 0 only measures. */
float train_clip_grad_norm(train_model_t *m, float max_norm);

/* Learning rate schedule: linear warmup to max_lr over warmup steps, then
 * cosine decay to min_lr at max_steps, min_lr after. step counts from 0. */
typedef struct {
    float max_lr, min_lr;
    long warmup, max_steps;
} train_sched_t;
float train_lr_at(const train_sched_t *s, long step);

/* ---- safetensors ------------------------------------------------------ */

/* One tensor of a parsed safetensors header. */
typedef enum { TRAIN_F32 = 0, TRAIN_F16 = 1, TRAIN_BF16 = 2 } train_dtype_t;
typedef struct {
    char *name;
    train_dtype_t dtype;
    int ndim;
    int64_t shape[4];
    uint64_t begin, end;       /* byte offsets within the data section */
} train_st_tensor_t;

/* A parsed safetensors header: the tensors and the __metadata__ entries. */
typedef struct {
    train_st_tensor_t *tensors;
    size_t n_tensors;
    char **meta_keys, **meta_vals;
    size_t n_meta;
    uint64_t data_offset;      /* 8 + header length */
    uint64_t data_len;         /* bytes after the header */
} train_st_t;

/* Parses and validates the header of a safetensors file held in buf[len]
 * (the whole file, or at least its header when len_total gives the file
 * size): header length within the file, JSON shape, dtypes (F32, F16,
 * BF16; others GL_EUNSUPPORTED), shapes, offsets in range, sizes matching
 * shapes, no overlap and no gap. name is used in messages. Caller owns
 * *st: train_st_free(). */
int train_st_parse(const uint8_t *buf, size_t len, uint64_t len_total, const char *name,
                   train_st_t *st, gl_err_t *err);
void train_st_free(train_st_t *st);
/* Value of a __metadata__ key, or NULL; valid while st lives. */
const char *train_st_meta(const train_st_t *st, const char *key);

/* Reads the model config from a checkpoint's metadata. */
int train_read_config(const char *path, train_config_t *cfg, gl_err_t *err);

/* Writes the weights (or, with grads = 1, the gradients under the same
 * names) with the Hugging Face GPT-2 names and shapes and the config in
 * the metadata, atomically (temporary name, fsync, rename). */
int train_save(const train_model_t *m, const char *path, int grads, gl_err_t *err);

/* Loads weights into an initialised model (into m->grads with grads = 1).
 * Every tensor of the model must be present with the model's shape; F16 and
 * BF16 are converted; a "transformer." prefix is accepted; the tied
 * "lm_head.weight" and the attention mask buffers are ignored; any other
 * name is an error. Metadata, when present, must agree with the model. */
int train_load(train_model_t *m, const char *path, int grads, gl_err_t *err);

/* The optimizer state of a model, in the same format: the moments as
 * "exp_avg.<name>" and "exp_avg_sq.<name>" (PyTorch's names for them),
 * the update count as metadata "step", the model config as for weights;
 * written atomically. Load checks everything train_load checks. */
int train_optim_save(const train_optim_t *o, const train_model_t *m, const char *path, gl_err_t *err);
int train_optim_load(train_optim_t *o, train_model_t *m, const char *path, gl_err_t *err);

#endif
