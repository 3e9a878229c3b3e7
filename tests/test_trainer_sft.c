/* test_trainer_sft.c — the SFT stage.
 *
 * Conversations "U:<word>\nA:<word>" + end-of-text, where the assistant
 * repeats the user's random 4-letter word; the loss spans cover the
 * assistant's word and its end-of-text. Checks: (1) the loss the run
 * reports at step 0 equals a cross-entropy computed by this test over the
 * assistant tokens only (and differs from the loss over every token), so
 * prompt tokens give no gradient; (2) a short SFT run from a freshly
 * initialised model raises held-out next-token accuracy on the assistant
 * tokens from chance to well above it.
 */
#include "shards/shards.h"
#include "tests/tap.h"
#include "tests/train_util.h"
#include "trainer/run.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SEQ 16 /* sequence length */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* Teacher-forced accuracy on the assistant tokens of n fresh conversations. */
static double accuracy(train_model_t *m, int n)
{
    int32_t tok[SEQ];
    int right = 0, total = 0;
    for (int k = 0; k < n; k++) {
        char word[4];
        for (int i = 0; i < 4; i++)
            word[i] = (char)('a' + tt_rnd(&rng, 26));
        uint32_t t32[SEQ] = {0}, s = 0, e = 0;
        size_t len = tt_conversation(t32, &s, &e, word);
        for (int i = 0; i < SEQ; i++)
            tok[i] = i < (int)len ? (int32_t)t32[i] : (int32_t)SHARD_BYTES_EOT;
        if (train_model_forward(m, tok, NULL, NULL, 1, SEQ, NULL))
            return NAN;
        int V = m->cfg.vocab_size;
        for (uint32_t p = s; p < e; p++) { /* predicted at p-1 */
            const float *lg = m->acts.logits + (size_t)(p - 1) * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                best = lg[v] > lg[best] ? v : best;
            right += best == tok[p];
            total++;
        }
    }
    return (double)right / total;
}

static train_run_opts_t opts(const char *data, const char *out)
{
    train_run_opts_t o;
    train_run_defaults(&o);
    o.stage = TRAIN_STAGE_SFT;
    o.data = data;
    o.out = out;
    o.cfg = (train_config_t){.n_layer = 2, .n_head = 2, .n_embd = 48, .n_ctx = SEQ};
    o.B = 16;
    o.T = SEQ;
    o.seed = 5;
    o.threads = 1;
    o.quiet = 1;
    o.ckpt_every = 0;
    o.eval_every = 0;
    return o;
}

int main(void)
{
    gl_err_t err = {0};
    const char *tmp = tap_tmpdir();
    char *fixed = gl_path_join(tmp, "fixed"), *train = gl_path_join(tmp, "train");
    ok(tt_write_sft(fixed, 8, 1, &rng, &err) == 0, "SFT shard of one repeated conversation");
    ok(tt_write_sft(train, 4000, 0, &rng, &err) == 0, "SFT shard of 4000 conversations");

    /* (1) the loss counts the assistant tokens only */
    char *out1 = gl_path_join(tmp, "mask");
    train_run_opts_t o = opts(fixed, out1);
    o.steps = 1;
    train_dist_t dist = {.rank = 0, .world = 1};
    ok(train_run(&o, &dist, &err) == 0, "one SFT step: %s", err.msg[0] ? err.msg : "ok");
    char *metrics = gl_path_join(out1, "metrics.jsonl");
    double reported = tt_metric(metrics, "loss", 1);
    train_model_t m = {0};
    o.cfg.vocab_size = SHARD_BYTES_VOCAB;
    train_model_init(&m, &o.cfg, o.B, SEQ, 0, &err);
    train_model_init_weights(&m, o.seed); /* the run's initial weights */
    uint32_t t32[SEQ] = {0}, s = 0, e = 0;
    size_t len = tt_conversation(t32, &s, &e, "quiz");
    int32_t tok[SEQ], tgt[SEQ], all[SEQ];
    for (int i = 0; i < SEQ; i++) {
        tok[i] = i < (int)len ? (int32_t)t32[i] : (int32_t)SHARD_BYTES_EOT;
        tgt[i] = (uint32_t)(i + 1) >= s && (uint32_t)(i + 1) < e ? (int32_t)t32[i + 1] : -1;
        all[i] = (size_t)(i + 1) < len ? (int32_t)t32[i + 1] : -1;
    }
    train_model_forward(&m, tok, tgt, NULL, 1, SEQ, &err);
    double want = m.loss;
    train_model_forward(&m, tok, all, NULL, 1, SEQ, &err);
    double every = m.loss;
    ok(fabs(reported - want) < 1e-5 * (1 + want), "step-0 loss %.6f = CE over the 5 assistant tokens %.6f", reported,
       want);
    ok(fabs(reported - every) > 1e-3, "and not the CE over every token (%.6f)", every);

    /* (2) SFT teaches the task */
    double before = accuracy(&m, 200);
    train_model_free(&m);
    char *out2 = gl_path_join(tmp, "sft");
    o = opts(train, out2);
    o.steps = 400;
    o.sched.max_lr = 3e-3f;
    o.sched.min_lr = 3e-4f;
    o.sched.warmup = 20;
    ok(train_run(&o, &dist, &err) == 0, "SFT 400 steps: %s", err.msg[0] ? err.msg : "ok");
    char *ck = train_checkpoint_model_path(out2, &err);
    train_config_t cfg;
    ok(ck && train_read_config(ck, &cfg, &err) == 0 && train_model_init(&m, &cfg, 1, SEQ, 0, &err) == 0 &&
           train_load(&m, ck, 0, &err) == 0,
       "load the SFT model");
    double after = accuracy(&m, 200);
    ok(before < 0.2 && after > 0.6, "held-out assistant-token accuracy %.1f%% -> %.1f%%", 100 * before, 100 * after);
    train_model_free(&m);
    free(ck), free(metrics), free(out1), free(out2), free(fixed), free(train);
    return tap_done();
}
