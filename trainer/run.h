/* run.h — training runs: the stage loops, checkpoints with resume, data
 * parallelism, evaluation and the metrics log, on top of the model in
 * trainer.h.
 *
 * A run writes into its output folder:
 *   metrics.jsonl      one JSON object per step (and per evaluation)
 *   ckpt-NNNNNNNN/     a checkpoint: model.safetensors (Hugging Face GPT-2
 *                      names), optim.safetensors (AdamW moments), state.json
 *                      (step, sampler position, options), and for a reward
 *                      model score.safetensors (the scalar head,
 *                      "score.weight" [1, C] as GPT2ForSequenceClassification
 *                      names it, with its moments); written as
 *                      ckpt-NNNNNNNN.tmp and renamed, so it is whole or absent
 *   latest             the name of the newest complete checkpoint
 *   loss.png           the loss curves, redrawn at each evaluation and at the end
 * A run killed at any point resumes from `latest` with --resume and
 * produces the same losses as an uninterrupted run with the same thread
 * count and world size.
 */
#ifndef GL_TRAINER_RUN_H
#define GL_TRAINER_RUN_H

#include "trainer/trainer.h"

#include <jansson.h>
#include <signal.h>

/* ---- data parallelism ------------------------------------------------- */

typedef struct {
    int rank, world;
    int mpi; /* MPI was initialised (launched by mpirun/srun) */
} train_dist_t;

/* World of one unless a launcher's environment says otherwise; then
 * MPI_Init. */
int train_dist_init(train_dist_t *d, gl_err_t *err);
void train_dist_finalize(train_dist_t *d);
/* In place: buf = mean over ranks. */
int train_dist_allreduce_mean(train_dist_t *d, float *buf, size_t n, gl_err_t *err);
/* In place: vals = sum over ranks. */
int train_dist_sum(train_dist_t *d, double *vals, int n, gl_err_t *err);
/* 1 if any rank passed a non-zero value (collective). */
int train_dist_any_error(train_dist_t *d, int mine);
void train_dist_barrier(train_dist_t *d);

/* ---- runs ------------------------------------------------------------- */

/* The numbers are stored in checkpoints (state.json): never reused. */
typedef enum {
    TRAIN_STAGE_PRETRAIN = 1,
    TRAIN_STAGE_SFT = 2,
    TRAIN_STAGE_RM = 3,
    TRAIN_STAGE_DPO = 5, /* direct preference optimisation on RM rankings */
} train_stage_t;

typedef struct {
    train_stage_t stage;
    const char *data;        /* training dataset folder */
    const char *val;         /* held-out dataset folder, or NULL */
    const char *out;         /* output folder */
    const char *init;        /* checkpoint (folder or .safetensors) to start from, or NULL */
    int resume;              /* continue from out/latest */
    train_config_t cfg;      /* used when init is NULL; vocab from the dataset */
    int B, T, accum;         /* micro-batch rows, sequence length, micro-batches per step */
    long steps;              /* schedule length */
    long until;              /* stop after this step (0: steps) */
    train_sched_t sched;     /* max_steps is taken from steps */
    train_adamw_t adamw;
    float clip;              /* global gradient norm clip; 0 off */
    float dropout;           /* rate; 0 off (the default) */
    float dpo_beta;          /* DPO: beta of the implicit reward beta * log(pi / pi_ref) (0.1) */
    uint64_t seed;
    int eval_every, eval_batches, ckpt_every, log_every;
    int threads;
    int quiet;               /* no per-step lines on stderr */
    const char *metrics_file;/* Prometheus textfile (gptline_train_*, label stage) written by
                                rank 0 after a step when metrics_interval seconds (default 5)
                                have passed, after checkpoints and at the end; NULL: none */
    double metrics_interval;
} train_run_opts_t;

/* Default options (nanoGPT-like). */
void train_run_defaults(train_run_opts_t *o);

/* Runs a stage to the end (or `until`). Every rank calls it; rank 0 writes
 * the output folder. */
int train_run(const train_run_opts_t *o, train_dist_t *dist, gl_err_t *err);

/* Evaluation of a checkpoint on a dataset: mean loss, perplexity and bits
 * per byte over up to max_batches (B, T) windows in stream order. */
typedef struct {
    double loss, ppl, bpb;
    uint64_t tokens;
} train_eval_t;
int train_eval_dataset(train_model_t *m, const char *data, int B, int T, int max_batches, train_dist_t *dist,
                       train_eval_t *out, gl_err_t *err);

/* The checkpoint file of a model: path itself if it is a file, else
 * path/model.safetensors, else the model of path/latest. Caller frees. */
char *train_checkpoint_model_path(const char *path, gl_err_t *err);

/* ---- reward models ---------------------------------------------------- */

/* Scores rows (B, T) of prompt+response tokens, each padded after its true
 * length len[i]: rewards[i] = w . h(i, len[i]-1), the final hidden state at
 * the true last token (never at padding). w has n_embd floats. */
int train_rm_score(train_model_t *m, const float *w, const int32_t *tokens, const int *len, int rows, int T,
                   float *rewards, gl_err_t *err);
/* Loads a reward head ("score.weight", [1, C], F32) into w[C]. */
int train_rm_head_load(const char *path, int C, float *w, gl_err_t *err);

/* ---- direct preference optimisation ------------------------------------ */

/* What a DPO batch measured. The implicit reward of a row is
 * r = beta * (log pi(response) - log pi_ref(response)), the log-probs
 * summed over the response tokens and its end-of-text. */
typedef struct {
    double loss;            /* mean over groups of the mean over each group's pairs */
    double groups, pairs;   /* rankings, and their ordered pairs (better, worse) */
    double correct;         /* pairs with r_better > r_worse */
    double margin;          /* sum over pairs of r_better - r_worse */
    double chosen, rejected;/* sums over pairs of r_better, of r_worse */
} train_dpo_stats_t;

/* One DPO micro-batch of rankings: rows (rows, T) of tokens with targets
 * tgt (the next token on the response and its end-of-text, -1 elsewhere,
 * as SFT counts them); group[i] the ranking row i belongs to (0, 1, ...,
 * consecutive rows), rank[i] its position in it (0 = best, equal = tie).
 * Runs the frozen reference ref and the policy m forward, and for every
 * ordered pair (w better than l) of a ranking the loss
 *   -log sigmoid(r_w - r_l),
 * averaged over the ranking's pairs and then over the rankings. With
 * scale != 0, ADDS the gradient of scale * loss to m->grads (through
 * train_model_backward_tokens: each response token of row i gets the
 * coefficient -beta * dloss/dr_i). Adds its measurements to *st. Both
 * models must hold rows x T; ref needs no gradients. */
int train_dpo_batch(train_model_t *m, train_model_t *ref, const int32_t *tok, const int32_t *tgt, const int *group,
                    const uint32_t *rank, int rows, int T, float beta, float scale, train_dpo_stats_t *st,
                    gl_err_t *err);

/* ---- generation ------------------------------------------------------- */

typedef struct {
    float temperature;       /* 0: greedy */
    int top_k;               /* 0: off */
    float top_p;             /* 0 or 1: off */
    uint64_t seed;
    int max_new;             /* tokens to generate per row at most */
    int32_t stop_id;         /* end-of-text; -1: none */
    const uint64_t *row_seeds; /* one seed per row (kv->B), borrowed; NULL: one
                                * stream for the batch from seed. With it a
                                * row's sample does not depend on the other
                                * rows (RL rollouts split over ranks) */
} train_sample_opts_t;

/* Continues kv->B prompts (prompts[b] of plen[b] >= 1 tokens) with the
 * model's KV-cached decoder (train_kv_t, trainer.h): out is (B, max_new),
 * out_len[b] the tokens generated for row b (the stop id included when
 * reached); logprobs (optional, same shape) the log-probability of each
 * under the model's untempered distribution. Resets kv first. */
int train_generate(train_kv_t *kv, const train_model_t *m, const int32_t *const *prompts, const int *plen,
                   const train_sample_opts_t *o, int32_t *out, int *out_len, float *logprobs, gl_err_t *err);

/* Best-of-N (rejection sampling): kv->B continuations of one prompt,
 * generated as one batch (train_generate; row 0 is what a batch of one
 * samples with the same seed), each scored by the reward model rm with
 * head w (train_rm_head_load) at the end-of-text o->stop_id closing
 * prompt + response: the response's own stop token, or one appended; the
 * prompt's start is cut when the row exceeds rm's capacity T. out is
 * (kv->B, max_new) and out_len[kv->B] as for train_generate, scores[kv->B]
 * the rewards, *best the index of the highest (the first of equals). rm
 * must hold kv->B rows. GL_EINVAL without a stop id. */
int train_best_of_n(train_kv_t *kv, const train_model_t *m, train_model_t *rm, const float *w, const int32_t *prompt,
                    int plen, const train_sample_opts_t *o, int32_t *out, int *out_len, float *scores, int *best,
                    gl_err_t *err);

/* ---- helpers the stages share (run.c) ------------------------------------ */

/* The scalar head of a reward or value model: r = w . h, h the final
 * hidden state at a position (GPT2ForSequenceClassification's
 * "score.weight", [1, C], no bias), with its gradient g and AdamW moments
 * m, v; all owned by the head (train_head_init / train_head_free). */
typedef struct {
    int C;
    float *w, *g, *m, *v;
    long step;
} train_head_t;

void train_head_init(train_head_t *h, int C);
/* Safe on a zeroed or freed head. */
void train_head_free(train_head_t *h);
/* Writes "score.weight" (and with moments "exp_avg.score.weight",
 * "exp_avg_sq.score.weight" and the step) as safetensors, atomically. */
int train_head_save(const train_head_t *h, const char *path, int moments, gl_err_t *err);
/* Reads what train_head_save wrote (the moments when present). */
int train_head_load(train_head_t *h, const char *path, gl_err_t *err);
/* One AdamW update of w from g, as train_adamw_step does for a model. */
void train_head_step(train_head_t *h, const train_adamw_t *a, float lr);
/* The folder out/latest names; NULL with GL_ENOTFOUND when there is none.
 * Caller frees. */
char *train_latest_checkpoint(const char *out, gl_err_t *err);
/* Opens a run's metrics.jsonl for appending from step `step`: the records
 * of later steps (a resumed run's) are dropped, all of them at step 0.
 * NULL with GL_EIO. */
FILE *train_metrics_open(const char *path, long step, gl_err_t *err);
/* Appends record j to the metrics log as one line, flushed (f may be NULL:
 * then nothing). */
void train_metrics_append(FILE *f, json_t *j);

/* SIGINT and SIGTERM ask a training loop to checkpoint and stop: between
 * train_stop_catch and train_stop_release they only set the flag that
 * train_stop_requested reads. */
typedef struct {
    struct sigaction old_int, old_term;
} train_stop_t;
void train_stop_catch(train_stop_t *s);
int train_stop_requested(void);
void train_stop_release(train_stop_t *s);

/* Renders metrics.jsonl to a PNG (loss, held-out loss, learning rate,
 * throughput and, when the evaluations have val_accuracy (RM, DPO), the
 * held-out pairwise accuracy); written atomically. */
int train_plot_metrics(const char *metrics, const char *png, gl_err_t *err);

/* A grid of panels (two per row), each the values of up to three
 * metrics.jsonl fields against the step, with a legend; written
 * atomically. Records without a panel's fields are skipped. */
typedef struct {
    const char *title;
    const char *keys[3];     /* fields; NULL ends the list */
    const char *labels[3];   /* legend entries (NULL: the field's name) */
} train_plot_panel_t;
int train_plot_panels(const char *metrics, const char *png, const train_plot_panel_t *panels, int n, gl_err_t *err);

/* `gptline train ...` and `gptline eval ...` */
int train_cmd(int argc, char **argv);
int train_eval_cmd(int argc, char **argv);
int train_sample_cmd(int argc, char **argv);

#endif
