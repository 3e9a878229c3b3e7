/* test_trainer_rm.c — the reward-model stage.
 *
 * A synthetic preference with a learnable rule: of K=3 responses to a
 * prompt, the one containing the letter 'z' is best and the other two tie.
 * A small model trained from scratch with `train rm` must reach >= 90%
 * pairwise accuracy on held-out rankings. Separately: rewards read for rows
 * of different lengths in one padded batch equal the rewards of each row
 * scored alone, i.e. the head reads the true last token, never padding.
 */
#include "shards/shards.h"
#include "tests/tap.h"
#include "tests/train_util.h"
#include "trainer/run.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;

int main(void)
{
    gl_err_t err = {0};
    const char *tmp = tap_tmpdir();
    char *train = gl_path_join(tmp, "train"), *val = gl_path_join(tmp, "val"), *out = gl_path_join(tmp, "rm");
    ok(tt_write_rankings(train, 1500, &rng, &err) == 0, "1500 training rankings: %s", err.msg[0] ? err.msg : "ok");
    ok(tt_write_rankings(val, 200, &rng, &err) == 0, "200 held-out rankings");

    train_run_opts_t o;
    train_run_defaults(&o);
    o.stage = TRAIN_STAGE_RM;
    o.data = train;
    o.val = val;
    o.out = out;
    o.cfg = (train_config_t){.n_layer = 2, .n_head = 2, .n_embd = 32, .n_ctx = 32};
    o.B = 12;
    o.T = 32;
    o.steps = 300;
    o.sched.max_lr = 3e-3f;
    o.sched.min_lr = 3e-4f;
    o.sched.warmup = 20;
    o.eval_every = 300;
    o.eval_batches = 0;
    o.ckpt_every = 300;
    o.threads = 1;
    o.quiet = 1;
    train_dist_t dist = {.rank = 0, .world = 1};
    int rc = train_run(&o, &dist, &err);
    ok(rc == 0, "train rm 300 steps: %s", rc ? err.msg : "ok");
    char *metrics = gl_path_join(out, "metrics.jsonl");
    double acc = tt_metric(metrics, "val_accuracy", 0);
    ok(acc >= 0.90, "held-out pairwise accuracy %.1f%% >= 90%%", 100 * acc);

    /* stopped and resumed, the RM run repeats its losses exactly */
    char *ra = gl_path_join(tmp, "ra"), *rb = gl_path_join(tmp, "rb");
    train_run_opts_t r = o;
    r.steps = 12;
    r.val = NULL;
    r.ckpt_every = 0;
    r.out = ra;
    int rr = train_run(&r, &dist, &err);
    r.out = rb;
    r.until = 5;
    rr |= train_run(&r, &dist, &err);
    r.until = 0;
    r.resume = 1;
    rr |= train_run(&r, &dist, &err);
    char *ma = gl_path_join(ra, "metrics.jsonl"), *mb = gl_path_join(rb, "metrics.jsonl");
    char *la = tt_losses(ma), *lb = tt_losses(mb); /* the losses only: throughput differs between runs */
    ok(rr == 0 && *la && !strcmp(la, lb), "RM run stopped at step 5 and resumed repeats the 12 losses exactly");
    free(la), free(lb), free(ma), free(mb), free(ra), free(rb);

    /* the head reads the true last token */
    char *ck = train_checkpoint_model_path(out, &err);
    train_config_t cfg;
    train_model_t m = {0};
    ok(ck && train_read_config(ck, &cfg, &err) == 0 && train_model_init(&m, &cfg, 4, 32, 0, &err) == 0 &&
           train_load(&m, ck, 0, &err) == 0,
       "load the reward model: %s", err.msg[0] ? err.msg : "ok");
    float *w = calloc((size_t)cfg.n_embd, sizeof *w);
    char *dir = strdup(ck), *slash = strrchr(dir, '/');
    *slash = '\0';
    char *hp = gl_path_join(dir, "score.safetensors");
    ok(train_rm_head_load(hp, cfg.n_embd, w, &err) == 0, "load the head: %s", err.msg[0] ? err.msg : "ok");
    int32_t rows[4 * 32];
    int len[4] = {5, 17, 32, 1};
    for (int i = 0; i < 4 * 32; i++)
        rows[i] = 'a' + (int32_t)tt_rnd(&rng, 26);
    for (int i = 0; i < 4; i++)
        for (int j = len[i]; j < 32; j++)
            rows[i * 32 + j] = (int32_t)SHARD_BYTES_EOT; /* padding */
    float batch[4], alone[4];
    ok(train_rm_score(&m, w, rows, len, 4, 32, batch, &err) == 0, "score a padded batch of lengths 5, 17, 32, 1");
    int same = 1;
    for (int i = 0; i < 4; i++) {
        float r;
        train_rm_score(&m, w, rows + i * 32, &len[i], 1, len[i], &r, &err);
        alone[i] = r;
        same &= fabsf(batch[i] - alone[i]) <= 1e-4f * (1 + fabsf(alone[i]));
    }
    ok(same, "batch rewards equal each row scored alone (%.5f %.5f %.5f %.5f)", batch[0], batch[1], batch[2],
       batch[3]);
    /* a reward read at the padding would change when the padding changes */
    for (int j = len[0]; j < 32; j++)
        rows[j] = 'q';
    float changed[4];
    train_rm_score(&m, w, rows, len, 4, 32, changed, &err);
    ok(changed[0] == batch[0], "changing row 0's padding leaves its reward unchanged");
    int bad_len[1] = {0};
    ok(train_rm_score(&m, w, rows, bad_len, 1, 32, changed, &err) == GL_ERANGE, "length 0 refused");
    train_model_free(&m);
    free(w), free(dir), free(hp), free(ck), free(metrics), free(train), free(val), free(out);
    return tap_done();
}
