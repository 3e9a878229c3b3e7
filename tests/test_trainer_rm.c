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
#include "trainer/run.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static int write_rankings(const char *dir, int n, gl_err_t *err)
{
    if (gl_mkdir_p(dir, err))
        return -1;
    char *path = gl_path_join(dir, "rm-000000.mdb");
    shard_writer_opts_t o = {.kind = GPTLINE__RECORD_KIND__RM, .tokenizer_name = SHARD_BYTES_TOKENIZER,
                             .tokenizer_hash = shard_bytes_tokenizer_hash(), .vocab_size = SHARD_BYTES_VOCAB,
                             .eot_id = SHARD_BYTES_EOT};
    shard_writer_t *w = shard_writer_create(path, &o, err);
    free(path);
    if (!w)
        return -1;
    for (int k = 0; k < n; k++) {
        uint32_t tok[64];
        size_t len = 0;
        Gptline__RmRanking r = GPTLINE__RM_RANKING__INIT;
        Gptline__Span prompt = GPTLINE__SPAN__INIT, resp[3], *resp_p[3];
        uint32_t rank[3];
        prompt.start = 0;
        for (uint32_t i = 0, pl = 3 + rnd(5); i < pl; i++)
            tok[len++] = 'a' + rnd(25);
        prompt.end = (uint32_t)len;
        uint32_t best = rnd(3);
        for (uint32_t i = 0; i < 3; i++) {
            gptline__span__init(&resp[i]);
            resp_p[i] = &resp[i];
            resp[i].start = (uint32_t)len;
            uint32_t rl = 1 + rnd(12), zat = rnd(rl);
            for (uint32_t j = 0; j < rl; j++)
                tok[len++] = (i == best && j == zat) ? 'z' : 'a' + rnd(25);
            resp[i].end = (uint32_t)len;
            rank[i] = i == best ? 0 : 1;
        }
        r.prompt = &prompt;
        r.n_responses = 3;
        r.responses = resp_p;
        r.n_rank = 3;
        r.rank = rank;
        if (shard_writer_add(w, tok, len, &r.base, err)) {
            shard_writer_abort(&w);
            return -1;
        }
    }
    return shard_writer_seal(&w, err) ? -1 : 0;
}

static double last_accuracy(const char *metrics)
{
    FILE *f = fopen(metrics, "r");
    char line[1024];
    double acc = NAN;
    while (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *a = j ? json_object_get(j, "val_accuracy") : NULL;
        if (a)
            acc = json_number_value(a);
        json_decref(j);
    }
    if (f)
        fclose(f);
    return acc;
}

int main(void)
{
    gl_err_t err = {0};
    const char *tmp = tap_tmpdir();
    char *train = gl_path_join(tmp, "train"), *val = gl_path_join(tmp, "val"), *out = gl_path_join(tmp, "rm");
    ok(write_rankings(train, 1500, &err) == 0, "1500 training rankings: %s", err.msg[0] ? err.msg : "ok");
    ok(write_rankings(val, 200, &err) == 0, "200 held-out rankings");

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
    double acc = last_accuracy(metrics);
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
    char *da = NULL, *db = NULL;
    size_t la = 0, lb = 0;
    gl_read_file(ma, 1 << 20, &da, &la, NULL);
    gl_read_file(mb, 1 << 20, &db, &lb, NULL);
    /* compare the losses only: throughput differs between runs */
    int resumed_same = rr == 0 && da && db;
    for (char *pa = da, *pb = db; resumed_same && pa && pb;) {
        char *qa = strstr(pa, "\"loss\":"), *qb = strstr(pb, "\"loss\":");
        if (!qa || !qb) {
            resumed_same = !qa && !qb;
            break;
        }
        resumed_same = strtod(qa + 7, NULL) == strtod(qb + 7, NULL);
        pa = qa + 7, pb = qb + 7;
    }
    ok(resumed_same, "RM run stopped at step 5 and resumed repeats the 12 losses exactly");
    free(da), free(db), free(ma), free(mb), free(ra), free(rb);

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
        rows[i] = 'a' + (int32_t)rnd(26);
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
