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
#include "trainer/run.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SEQ 16 /* sequence length */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* One conversation: tokens and the loss span [start, end). */
static size_t conversation(uint32_t *tok, uint32_t *start, uint32_t *end, const char *word)
{
    size_t n = 0;
    tok[n++] = 'U';
    tok[n++] = ':';
    for (int i = 0; i < 4; i++)
        tok[n++] = (uint8_t)word[i];
    tok[n++] = '\n';
    tok[n++] = 'A';
    tok[n++] = ':';
    *start = (uint32_t)n;
    for (int i = 0; i < 4; i++)
        tok[n++] = (uint8_t)word[i];
    tok[n++] = SHARD_BYTES_EOT;
    *end = (uint32_t)n;
    return n;
}

static int write_sft(const char *dir, int n, int fixed, gl_err_t *err)
{
    if (gl_mkdir_p(dir, err))
        return -1;
    char *path = gl_path_join(dir, "sft-000000.mdb");
    shard_writer_opts_t o = {.kind = GPTLINE__RECORD_KIND__SFT, .tokenizer_name = SHARD_BYTES_TOKENIZER,
                             .tokenizer_hash = shard_bytes_tokenizer_hash(), .vocab_size = SHARD_BYTES_VOCAB,
                             .eot_id = SHARD_BYTES_EOT};
    shard_writer_t *w = shard_writer_create(path, &o, err);
    free(path);
    if (!w)
        return -1;
    for (int k = 0; k < n; k++) {
        char word[5] = "quiz";
        if (!fixed)
            for (int i = 0; i < 4; i++)
                word[i] = (char)('a' + rnd(26));
        uint32_t tok[SEQ];
        Gptline__SftConversation c = GPTLINE__SFT_CONVERSATION__INIT;
        Gptline__Span span = GPTLINE__SPAN__INIT, *sp[1] = {&span};
        size_t len = conversation(tok, &span.start, &span.end, word);
        c.n_loss_spans = 1;
        c.loss_spans = sp;
        if (shard_writer_add(w, tok, len, &c.base, err)) {
            shard_writer_abort(&w);
            return -1;
        }
    }
    return shard_writer_seal(&w, err) ? -1 : 0;
}

static double first_loss(const char *metrics)
{
    FILE *f = fopen(metrics, "r");
    char line[1024];
    double l = NAN;
    if (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        l = json_number_value(json_object_get(j, "loss"));
        json_decref(j);
    }
    if (f)
        fclose(f);
    return l;
}

/* Teacher-forced accuracy on the assistant tokens of n fresh conversations. */
static double accuracy(train_model_t *m, int n)
{
    int32_t tok[SEQ];
    int right = 0, total = 0;
    for (int k = 0; k < n; k++) {
        char word[4];
        for (int i = 0; i < 4; i++)
            word[i] = (char)('a' + rnd(26));
        uint32_t t32[SEQ] = {0}, s = 0, e = 0;
        size_t len = conversation(t32, &s, &e, word);
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
    ok(write_sft(fixed, 8, 1, &err) == 0, "SFT shard of one repeated conversation");
    ok(write_sft(train, 4000, 0, &err) == 0, "SFT shard of 4000 conversations");

    /* (1) the loss counts the assistant tokens only */
    char *out1 = gl_path_join(tmp, "mask");
    train_run_opts_t o = opts(fixed, out1);
    o.steps = 1;
    train_dist_t dist = {.rank = 0, .world = 1};
    ok(train_run(&o, &dist, &err) == 0, "one SFT step: %s", err.msg[0] ? err.msg : "ok");
    char *metrics = gl_path_join(out1, "metrics.jsonl");
    double reported = first_loss(metrics);
    train_model_t m = {0};
    o.cfg.vocab_size = SHARD_BYTES_VOCAB;
    train_model_init(&m, &o.cfg, o.B, SEQ, 0, &err);
    train_model_init_weights(&m, o.seed); /* the run's initial weights */
    uint32_t t32[SEQ] = {0}, s = 0, e = 0;
    size_t len = conversation(t32, &s, &e, "quiz");
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
