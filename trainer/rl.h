/* rl.h — the RL stage: PPO (InstructGPT) and GRPO (DeepSeekMath) against
 * a reward model, on top of the model (trainer.h) and the runs (run.h).
 *
 * A run writes into its output folder, as the other stages do:
 *   metrics.jsonl      one JSON object per step (see docs/rl.md)
 *   ckpt-NNNNNNNN/     model.safetensors + optim.safetensors (the policy:
 *                      a GPT-2 checkpoint `gptline sample` reads),
 *                      value.safetensors + value_optim.safetensors +
 *                      value_head.safetensors (PPO's critic, a reward-model
 *                      checkpoint in all but name) and state.json (step,
 *                      prompt sampler and pretraining-mix positions, the
 *                      KL coefficient, the settings); whole or absent
 *   latest             the name of the newest complete checkpoint
 *   rl.png             reward, KL, entropy, clip fraction, value loss,
 *                      approximate KL, response length, time split
 * A run killed at any point resumes from `latest` with --resume and logs
 * the same statistics as an uninterrupted run (same threads and ranks).
 *
 * The per-token pieces (GAE, whitening, the clipped losses, the k3 KL
 * estimator, group advantages, log-probabilities and values of packed
 * rows) are public so that the tests can hold them against naive
 * references.
 */
#ifndef GL_TRAINER_RL_H
#define GL_TRAINER_RL_H

#include "trainer/run.h"

typedef enum { TRAIN_RL_PPO = 1, TRAIN_RL_GRPO = 2 } train_rl_algo_t;

typedef struct {
    train_rl_algo_t algo;
    const char *policy;      /* SFT checkpoint: the initial policy and the frozen reference */
    const char *reward;      /* RM checkpoint (with score.safetensors); PPO's critic starts as it */
    const char *prompts;     /* RL prompt shards (`gptline shards import --kind rl`) */
    const char *out;         /* output folder */
    const char *ptx_data;    /* pretraining shards for the PPO-ptx term, or NULL */
    int resume;              /* continue from out/latest */
    int B;                   /* prompts per rank per step */
    int group;               /* samples per prompt: GRPO's G (PPO: 1 unless set) */
    int epochs;              /* passes over each rollout batch */
    int minibatches;         /* optimiser steps per pass (over the global batch) */
    int micro;               /* rows per forward/backward (0: all of a rank's rows) */
    long steps;              /* RL steps (rollout + update) */
    long until;              /* stop after this step (0: steps) */
    train_sched_t sched;     /* the policy's learning rate; max_steps from steps */
    float value_lr;          /* the critic's learning rate (constant) */
    train_adamw_t adamw;
    float clip;              /* global gradient norm clip of each model; 0 off */
    float kl_coef;           /* beta: initial KL coefficient */
    float target_kl;         /* > 0: adaptive beta toward this KL (nats per response) */
    float kl_horizon;        /* the controller's horizon in episodes */
    float gamma, lam;        /* GAE */
    float cliprange;         /* epsilon of the clipped surrogate */
    float cliprange_value;   /* epsilon of the clipped value loss */
    float missing_eot_penalty; /* subtracted from the score of a response cut at max_new */
    float ptx_coef;          /* weight of the pretraining loss (with ptx_data) */
    int ptx_B;               /* pretraining rows per optimiser step per rank */
    train_sample_opts_t sample; /* temperature, top-k, top-p, max_new (seed, stop: set by the run) */
    uint64_t seed;
    int ckpt_every, log_every, threads;
    int quiet;
} train_rl_opts_t;

/* Defaults for an algorithm (see docs/rl.md for each value). */
void train_rl_defaults(train_rl_opts_t *o, train_rl_algo_t algo);

/* Runs the RL stage to the end (or `until`). Every rank calls it; rank 0
 * writes the output folder. */
int train_rl_run(const train_rl_opts_t *o, train_dist_t *dist, gl_err_t *err);

/* `gptline train rl` */
int train_rl_cmd(int argc, char **argv);

/* ---- the pieces ------------------------------------------------------- */

/* Generalised advantage estimation over one response of n tokens with
 * per-token rewards rew[n] and values val[n] (the value after the last
 * token is 0: the episode ends): delta_t = r_t + gamma V_{t+1} - V_t,
 * A_t = delta_t + gamma lam A_{t+1}; ret_t = A_t + V_t. */
void train_rl_gae(const float *rew, const float *val, int n, float gamma, float lam, float *adv, float *ret);

/* Whitens x[n] in place over all ranks' values together: (x - mean) /
 * sqrt(var + 1e-8), var the population variance (lm-human-preferences'
 * whiten). Collective: every rank calls it. */
int train_rl_whiten(float *x, size_t n, train_dist_t *dist, gl_err_t *err);

/* GRPO's advantages: for `groups` groups of G scores each, (s - mean) /
 * (std + 1e-4), std the sample standard deviation of the group (0 for a
 * group of equal scores, whose advantages are then 0). */
void train_rl_group_advantages(const float *score, int groups, int G, float *adv);

/* PPO's clipped surrogate over n tokens, times w: loss = w sum_i max(-A_i
 * r_i, -A_i clip(r_i, 1 - eps, 1 + eps)), r_i = exp(logp_i - old_i).
 * dlogp[i] = d loss / d logp_i. Adds to *clipped the tokens whose clipped
 * term is the larger (no gradient) and to *approx_kl the k3 estimate of
 * KL(old || new): sum_i (r_i - 1) - log r_i. Returns the loss. */
double train_rl_policy_loss(const float *logp, const float *old, const float *adv, int n, float eps, float w,
                            float *dlogp, double *clipped, double *approx_kl);

/* PPO's clipped value loss over n tokens, times w: w sum_i 0.5 max((v_i -
 * R_i)^2, (vc_i - R_i)^2), vc_i = old_i + clip(v_i - old_i, -eps, eps).
 * dv[i] = d loss / d v_i; *clipped counts the tokens where the clipped
 * term is the larger. Returns the loss. */
double train_rl_value_loss(const float *v, const float *old, const float *ret, int n, float eps, float w, float *dv,
                           double *clipped);

/* The k3 estimator of KL(pi || ref) (Schulman; DeepSeekMath's GRPO loss)
 * over n tokens, times w: w sum_i exp(ref_i - logp_i) - (ref_i - logp_i) - 1,
 * always >= 0. ADDS its derivative wrt logp to dlogp (when non-NULL).
 * Returns the sum. */
double train_rl_kl_k3(const float *logp, const float *ref, int n, float w, float *dlogp);

/* Log-probabilities of responses: tok (rows, T) holds each row's prompt of
 * plen[i] tokens followed by its response of rlen[i] >= 1 tokens (padding
 * after). logp[i * stride + j] = log p(response token j | everything
 * before it); entropy (optional, same layout) the entropy in nats of the
 * distribution that token was drawn from. One forward over the rows with
 * targets: tgt (rows * T, the caller's) is filled with them, and the model
 * borrows tok and tgt until a backward (train_model_backward_tokens with
 * coefficients at positions plen[i] - 1 + j) may follow. */
int train_rl_logprobs(train_model_t *m, const int32_t *tok, int32_t *tgt, const int *plen, const int *rlen, int rows,
                      int T, int stride, float *logp, float *entropy, gl_err_t *err);

/* Values of the same rows from a value model (a trunk m and a head w[C]):
 * values[i * stride + j] = w . h(plen[i] - 1 + j), the estimate of the
 * return from the state before response token j. One forward. */
int train_rl_values(train_model_t *m, const float *w, const int32_t *tok, const int *plen, const int *rlen, int rows,
                    int T, int stride, float *values, gl_err_t *err);

/* Opens a reward-model checkpoint (a folder, or its model.safetensors with
 * score.safetensors beside it): a model with capacity (B, T) and flags
 * (TRAIN_GRADS for a critic that trains) and its head, w owned by the
 * caller (C floats, malloc). GL_ENOTFOUND when there is no head. */
int train_rl_load_rm(const char *ckpt, int B, int T, int flags, train_model_t *m, float **w, gl_err_t *err);

#endif
