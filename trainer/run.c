/* run.c — the training loop of the pretraining, SFT, RM and DPO stages.
 *
 * One step: `accum` micro-batches of (B, T) from this rank's sampler,
 * forward and backward each (gradients scaled by 1/accum), gradients
 * averaged across ranks, clipped, one AdamW update at the scheduled
 * learning rate. Rank 0 logs the step (metrics.jsonl and a line on
 * stderr), evaluates on the held-out set every eval_every steps, and
 * checkpoints every ckpt_every steps and at the end.
 *
 * Determinism: the data order is a pure function of (seed, epoch), the
 * kernels' reductions are fixed for a thread count, and a checkpoint holds
 * the weights, both AdamW moments and the sampler position bit for bit, so
 * a run resumed from a checkpoint repeats the uninterrupted run's losses
 * exactly. Pretraining reads windows of the token stream; SFT reads whole
 * conversations, one per row, with the loss counted on the spans the
 * record marks (assistant turns and their end-of-text). RM and DPO read
 * rankings, whole groups per micro-batch: RM learns a scalar head with the
 * pairwise loss; DPO (Rafailov et al., 2023) puts the same pairwise loss
 * on the implicit reward beta * log(pi / pi_ref) of each response, pi_ref
 * a frozen copy of the starting model, so no reward model is needed.
 */
#include "trainer/run.h"
#include "shards/shards.h"

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define STATE_FORMAT 1

void train_run_defaults(train_run_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->stage = TRAIN_STAGE_PRETRAIN;
    o->cfg = (train_config_t){.n_layer = 4, .n_head = 4, .n_embd = 128, .n_ctx = 64};
    o->B = 12;
    o->T = 64;
    o->accum = 1;
    o->steps = 2000;
    o->sched = (train_sched_t){.max_lr = 1e-3f, .min_lr = 1e-4f, .warmup = 100};
    o->adamw = (train_adamw_t){.beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.1f};
    o->clip = 1.0f;
    o->dpo_beta = 0.1f;
    o->seed = 1337;
    o->eval_every = 250;
    o->eval_batches = 20;
    o->ckpt_every = 500;
    o->log_every = 10;
}

/* ---- the reward head ---------------------------------------------------- */

/* The scalar head of a reward model: r = w . h, h the final hidden state
 * at the sequence's true last token (Hugging Face's
 * GPT2ForSequenceClassification "score.weight", [1, C], no bias), with its
 * own AdamW moments. */
typedef train_head_t rm_head_t;

static void rm_head_init(rm_head_t *h, int C)
{
    h->C = C;
    h->w = gl_xcalloc((size_t)C, sizeof *h->w);
    h->g = gl_xcalloc((size_t)C, sizeof *h->g);
    h->m = gl_xcalloc((size_t)C, sizeof *h->m);
    h->v = gl_xcalloc((size_t)C, sizeof *h->v);
    h->step = 0;
}

static void rm_head_free(rm_head_t *h)
{
    free(h->w), free(h->g), free(h->m), free(h->v);
    memset(h, 0, sizeof *h);
}

/* Writes the head as safetensors: "score.weight" [1, C], and with moments
 * also "exp_avg.score.weight" and "exp_avg_sq.score.weight" (the optimizer
 * state's names) and the update count in the metadata. */
static int rm_head_save(const rm_head_t *h, const char *path, int moments, gl_err_t *err)
{
    static const char *names[3] = {"score.weight", "exp_avg.score.weight", "exp_avg_sq.score.weight"};
    const float *data[3] = {h->w, h->m, h->v};
    int nt = moments ? 3 : 1;
    size_t bytes = (size_t)h->C * sizeof(float);
    char hdr[1024];
    int n = snprintf(hdr, sizeof hdr, "{");
    for (int i = 0; i < nt; i++)
        n += snprintf(hdr + n, sizeof hdr - (size_t)n, "\"%s\":{\"dtype\":\"F32\",\"shape\":[1,%d],\"data_offsets\":[%zu,%zu]},",
                      names[i], h->C, i * bytes, (i + 1) * bytes);
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "\"__metadata__\":{\"format\":\"pt\",\"step\":\"%ld\"}}", h->step);
    while (n % 8)
        hdr[n++] = ' ';
    uint64_t hl = (uint64_t)n;
    gl_atomic_file_t af;
    int rc = gl_atomic_open(&af, path, err);
    if (rc)
        return rc;
    int bad = fwrite(&hl, 8, 1, af.f) != 1 || fwrite(hdr, 1, (size_t)n, af.f) != (size_t)n;
    for (int i = 0; i < nt && !bad; i++)
        bad = fwrite(data[i], sizeof(float), (size_t)h->C, af.f) != (size_t)h->C;
    if (bad) {
        gl_atomic_abort(&af);
        return gl_err_set(err, GL_EIO, "%s: write failed: %s", path, strerror(errno));
    }
    return gl_atomic_commit(&af, err);
}

static int rm_head_load(rm_head_t *h, const char *path, gl_err_t *err)
{
    char *data;
    size_t len;
    int rc = gl_read_file(path, (size_t)1 << 26, &data, &len, err);
    if (rc)
        return rc;
    train_st_t st;
    if ((rc = train_st_parse((const uint8_t *)data, len, len, path, &st, err)))
        goto out;
    rc = gl_err_set(err, GL_ECORRUPT, "%s: no F32 score.weight of shape [1, %d]", path, h->C);
    for (size_t i = 0; i < st.n_tensors; i++) {
        const train_st_tensor_t *t = &st.tensors[i];
        float *dst = !strcmp(t->name, "score.weight")              ? h->w
                     : !strcmp(t->name, "exp_avg.score.weight")    ? h->m
                     : !strcmp(t->name, "exp_avg_sq.score.weight") ? h->v
                                                                   : NULL;
        if (!dst || !(t->dtype == TRAIN_F32 && t->ndim == 2 && t->shape[0] == 1 && t->shape[1] == h->C))
            continue;
        memcpy(dst, data + st.data_offset + t->begin, (size_t)h->C * sizeof(float));
        if (dst == h->w) {
            rc = GL_OK;
            gl_err_clear(err);
        }
    }
    const char *step = train_st_meta(&st, "step");
    if (step && h->m)
        h->step = atol(step);
    train_st_free(&st);
out:
    free(data);
    return rc;
}

/* AdamW on the head, as train_adamw_step does on the model. */
static void rm_head_step(rm_head_t *h, const train_adamw_t *a, float lr)
{
    h->step++;
    double b1 = 1 - pow(a->beta1, (double)h->step), b2 = 1 - pow(a->beta2, (double)h->step);
    for (int i = 0; i < h->C; i++) {
        h->m[i] = a->beta1 * h->m[i] + (1 - a->beta1) * h->g[i];
        h->v[i] = a->beta2 * h->v[i] + (1 - a->beta2) * h->g[i] * h->g[i];
        double mh = h->m[i] / b1, vh = h->v[i] / b2;
        h->w[i] -= lr * (float)(mh / (sqrt(vh) + a->eps) + a->weight_decay * h->w[i]);
    }
}

void train_head_init(train_head_t *h, int C) { rm_head_init(h, C); }
void train_head_free(train_head_t *h) { rm_head_free(h); }
int train_head_save(const train_head_t *h, const char *path, int moments, gl_err_t *err)
{
    return rm_head_save(h, path, moments, err);
}
int train_head_load(train_head_t *h, const char *path, gl_err_t *err) { return rm_head_load(h, path, err); }
void train_head_step(train_head_t *h, const train_adamw_t *a, float lr) { rm_head_step(h, a, lr); }

/* ---- checkpoints ------------------------------------------------------ */

typedef struct {
    long step;                  /* steps done */
    uint64_t epoch, next;       /* sampler position */
    uint64_t tokens;            /* tokens trained on */
    uint64_t dropout_iter;      /* the model's dropout mask stream */
} run_state_t;

static json_t *config_json(const train_config_t *c)
{
    return json_pack("{s:i,s:i,s:i,s:i,s:i}", "n_layer", c->n_layer, "n_head", c->n_head, "n_embd", c->n_embd,
                     "n_ctx", c->n_ctx, "vocab_size", c->vocab_size);
}

static int save_checkpoint(const char *out, const train_run_opts_t *o, const train_model_t *m,
                           const train_optim_t *opt, const rm_head_t *head, const run_state_t *st, int world,
                           gl_err_t *err)
{
    char name[64], tmpname[64];
    snprintf(name, sizeof name, "ckpt-%08ld", st->step);
    snprintf(tmpname, sizeof tmpname, "ckpt-%08ld.tmp", st->step);
    char *dir = gl_path_join(out, name), *tmp = gl_path_join(out, tmpname);
    char *mp = gl_path_join(tmp, "model.safetensors"), *op = gl_path_join(tmp, "optim.safetensors"),
         *sp = gl_path_join(tmp, "state.json"), *lp = gl_path_join(out, "latest");
    int rc = gl_mkdir_p(tmp, err);
    if (!rc)
        rc = train_save(m, mp, 0, err);
    if (!rc)
        rc = train_optim_save(opt, m, op, err);
    if (!rc && head) {
        char *hp = gl_path_join(tmp, "score.safetensors");
        rc = rm_head_save(head, hp, 1, err);
        free(hp);
    }
    if (!rc) {
        json_t *j = json_pack("{s:i,s:I,s:{s:I,s:I},s:I,s:I,s:o,s:{s:i,s:i,s:i,s:i,s:I,s:I},s:i}", "format",
                              STATE_FORMAT, "step", (json_int_t)st->step, "sampler", "epoch", (json_int_t)st->epoch,
                              "next", (json_int_t)st->next, "tokens", (json_int_t)st->tokens, "dropout_iter",
                              (json_int_t)m->dropout_iter, "config", config_json(&m->cfg),
                              "run", "stage", (int)o->stage, "B", o->B, "T", o->T, "accum", o->accum, "steps",
                              (json_int_t)o->steps, "seed", (json_int_t)o->seed, "world", world);
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rc = gl_write_file_atomic(sp, s, strlen(s), err);
        free(s);
        json_decref(j);
    }
    if (!rc) {
        /* a checkpoint of the same step from an earlier, killed run: replace it */
        struct stat stt;
        if (stat(dir, &stt) == 0) {
            static const char *files[] = {"model.safetensors", "optim.safetensors", "state.json",
                                          "score.safetensors"};
            for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
                char *f = gl_path_join(dir, files[i]);
                unlink(f);
                free(f);
            }
            rmdir(dir);
        }
        rc = gl_rename_durable(tmp, dir, err);
    }
    if (!rc)
        rc = gl_write_file_atomic(lp, name, strlen(name), err);
    free(dir), free(tmp), free(mp), free(op), free(sp), free(lp);
    return rc;
}

/* Reads out/latest: the checkpoint folder. Caller frees. */
static char *latest_checkpoint(const char *out, gl_err_t *err)
{
    char *lp = gl_path_join(out, "latest"), *data = NULL;
    size_t len;
    int rc = gl_read_file(lp, 256, &data, &len, err);
    free(lp);
    if (rc)
        return NULL;
    while (len && (data[len - 1] == '\n' || data[len - 1] == ' '))
        data[--len] = '\0';
    if (!len || strchr(data, '/')) {
        gl_err_set(err, GL_ECORRUPT, "%s/latest: does not name a checkpoint", out);
        free(data);
        return NULL;
    }
    char *dir = gl_path_join(out, data);
    free(data);
    return dir;
}

char *train_latest_checkpoint(const char *out, gl_err_t *err) { return latest_checkpoint(out, err); }

char *train_checkpoint_model_path(const char *path, gl_err_t *err)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        gl_err_set(err, GL_ENOTFOUND, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(st.st_mode))
        return gl_xstrdup(path);
    char *p = gl_path_join(path, "model.safetensors");
    if (stat(p, &st) == 0)
        return p;
    free(p);
    char *dir = latest_checkpoint(path, err);
    if (!dir) {
        gl_err_prefix(err, "%s: no model.safetensors and no readable 'latest'", path);
        return NULL;
    }
    p = gl_path_join(dir, "model.safetensors");
    free(dir);
    return p;
}

static int load_state(const char *dir, const train_run_opts_t *o, const train_model_t *m, int world,
                      run_state_t *st, gl_err_t *err)
{
    char *sp = gl_path_join(dir, "state.json");
    json_error_t je;
    json_t *j = json_load_file(sp, 0, &je);
    int rc = GL_OK;
    if (!j) {
        rc = gl_err_set(err, GL_ECORRUPT, "%s: %s (line %d)", sp, je.text, je.line);
        goto out;
    }
    json_int_t fmt = 0, step = -1, epoch = 0, next = 0, tokens = 0, diter = 0, stage = 0, B = 0, T = 0, accum = 0,
               w = 0;
    json_int_t nl = 0, nh = 0, ne = 0, nc = 0, vs = 0;
    if (json_unpack_ex(j, &je, 0, "{s:I,s:I,s:{s:I,s:I},s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s?I,s?I},s:I}",
                       "format", &fmt, "step", &step, "sampler", "epoch", &epoch, "next", &next, "tokens", &tokens,
                       "dropout_iter", &diter,
                       "config", "n_layer", &nl, "n_head", &nh, "n_embd", &ne, "n_ctx", &nc, "vocab_size", &vs, "run",
                       "stage", &stage, "B", &B, "T", &T, "accum", &accum, "steps", &(json_int_t){0}, "seed",
                       &(json_int_t){0}, "world", &w)) {
        rc = gl_err_set(err, GL_ECORRUPT, "%s: %s", sp, je.text);
        goto out;
    }
    if (fmt != STATE_FORMAT) {
        rc = gl_err_set(err, GL_EVERSION, "%s: state format %lld; this build reads %d", sp, (long long)fmt,
                        STATE_FORMAT);
        goto out;
    }
    if (nl != m->cfg.n_layer || nh != m->cfg.n_head || ne != m->cfg.n_embd || nc != m->cfg.n_ctx ||
        vs != m->cfg.vocab_size) {
        rc = gl_err_set(err, GL_EMISMATCH, "%s: the checkpoint's model config differs from this run's", sp);
        goto out;
    }
    if (stage != (json_int_t)o->stage || B != o->B || T != o->T || accum != o->accum || w != world) {
        rc = gl_err_set(err, GL_EMISMATCH,
                        "%s: checkpoint was made with stage %lld, B=%lld T=%lld accum=%lld on %lld ranks; this run "
                        "has stage %d, B=%d T=%d accum=%d on %d ranks: resume with the same settings",
                        sp, (long long)stage, (long long)B, (long long)T, (long long)accum, (long long)w,
                        (int)o->stage, o->B, o->T, o->accum, world);
        goto out;
    }
    st->step = (long)step;
    st->epoch = (uint64_t)epoch;
    st->next = (uint64_t)next;
    st->tokens = (uint64_t)tokens;
    st->dropout_iter = (uint64_t)diter;
out:
    json_decref(j);
    free(sp);
    return rc;
}

/* ---- metrics ------------------------------------------------------------ */

/* Rewrites metrics.jsonl keeping only records of steps before `step` (a
 * resumed run repeats the steps after its checkpoint). */
static void trim_metrics(const char *path, long step)
{
    char *data;
    size_t len;
    if (gl_read_file(path, (size_t)1 << 30, &data, &len, NULL))
        return;
    char *keep = gl_xmalloc(len + 1);
    size_t k = 0;
    for (char *line = data, *end; line < data + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(data + len - line));
        if (!end)
            end = data + len;
        *end = '\0';
        json_t *j = json_loads(line, 0, NULL);
        json_int_t s = j ? json_integer_value(json_object_get(j, "step")) : step;
        json_decref(j);
        if (s < step) {
            size_t n = strlen(line);
            memcpy(keep + k, line, n);
            keep[k + n] = '\n';
            k += n + 1;
        }
    }
    gl_write_file_atomic(path, keep, k, NULL);
    free(keep);
    free(data);
}

FILE *train_metrics_open(const char *path, long step, gl_err_t *err)
{
    if (step > 0)
        trim_metrics(path, step);
    else
        unlink(path);
    FILE *f = fopen(path, "a");
    if (!f)
        gl_err_set(err, GL_EIO, "%s: %s", path, strerror(errno));
    return f;
}

void train_metrics_append(FILE *f, json_t *j)
{
    if (!f)
        return;
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    fprintf(f, "%s\n", s);
    fflush(f);
    free(s);
}

/* Peak single-precision matrix-multiply rate of this machine, GFLOP/s, as
 * OpenBLAS delivers it: the denominator of MFU. */
static double sgemm_peak(void)
{
    const int n = 384;
    float *a = gl_xcalloc((size_t)n * n, sizeof *a), *b = gl_xcalloc((size_t)n * n, sizeof *b),
          *c = gl_xcalloc((size_t)n * n, sizeof *c);
    for (int i = 0; i < n * n; i++)
        a[i] = b[i] = 1.0f / (float)(1 + i % 7);
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = gl_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = gl_now() - t0;
        double g = 2.0 * n * n * n / dt / 1e9;
        best = g > best ? g : best;
    }
    free(a), free(b), free(c);
    return best;
}

/* Training FLOPs per token (forward + backward): 6N plus attention. A
 * reward model's step does not run the output projection (its loss comes
 * from the hidden states), so 6VC of the 6N are not done. */
static double flops_per_token(const train_model_t *m, int T, train_stage_t stage)
{
    double n = (double)m->n_params, vc = (double)m->cfg.vocab_size * m->cfg.n_embd;
    return 6.0 * n - (stage == TRAIN_STAGE_RM ? 6.0 * vc : 0.0) + 6.0 * m->cfg.n_layer * (double)T * m->cfg.n_embd;
}

/* ---- data --------------------------------------------------------------- */

typedef struct {
    shard_dataset_t *ds;
    shard_sampler_t s;          /* pretraining windows */
    /* SFT: records in a per-epoch shuffled order, rank-strided */
    uint64_t *order;
    uint64_t n_records, epoch, next;
    uint64_t seed;
    int rank, world;
    int32_t *win;               /* B * (T+1) */
} run_data_t;

static void shuffle_records(run_data_t *d)
{
    for (uint64_t i = 0; i < d->n_records; i++)
        d->order[i] = i;
    uint64_t s = d->seed * 0x9e3779b97f4a7c15ull + d->epoch * 0xbf58476d1ce4e5b9ull + 1;
    for (uint64_t i = d->n_records; i > 1; i--) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint64_t j = s % i, t = d->order[i - 1];
        d->order[i - 1] = d->order[j];
        d->order[j] = t;
    }
}

/* Fills one micro-batch: tokens, targets (-1: not counted) and weights. */
static int next_batch(run_data_t *d, train_stage_t stage, int B, int T, int32_t *tok, int32_t *tgt, float *w,
                      gl_err_t *err)
{
    if (stage == TRAIN_STAGE_PRETRAIN) {
        int rc = shard_sampler_next(&d->s, d->win, err);
        if (rc)
            return rc;
        train_split_windows(d->win, B, T, tok, tgt);
        (void)w; /* every target counts: the forward takes NULL weights */
        return GL_OK;
    }
    uint32_t eot = shard_dataset_tokenizer(d->ds)->eot_id;
    uint64_t per_rank = d->n_records / (uint64_t)d->world;
    for (int b = 0; b < B; b++) {
        if (d->next >= per_rank) {
            d->epoch++;
            d->next = 0;
            shuffle_records(d);
        }
        uint64_t rec = d->order[d->next++ * (uint64_t)d->world + (uint64_t)d->rank];
        shard_tokens_t t;
        const uint8_t *meta;
        size_t mlen;
        const shard_reader_t *r;
        int rc = shard_dataset_record(d->ds, rec, &t, &meta, &mlen, &r, err);
        if (rc)
            return rc;
        Gptline__SftConversation *c = gptline__sft_conversation__unpack(NULL, mlen, meta);
        if (!c)
            return gl_err_set(err, GL_ECORRUPT, "%s: record %llu: SFT conversation does not parse", shard_path(r),
                              (unsigned long long)rec);
        int32_t *row = tok + (size_t)b * T, *trow = tgt + (size_t)b * T;
        float *wrow = w + (size_t)b * T;
        for (int i = 0; i < T; i++) {
            row[i] = (uint64_t)i < t.n ? (int32_t)shard_token_at(&t, (uint64_t)i) : (int32_t)eot;
            uint64_t p = (uint64_t)i + 1; /* the token predicted at i */
            int counted = 0;
            for (size_t k = 0; k < c->n_loss_spans && p < t.n; k++)
                counted |= p >= c->loss_spans[k]->start && p < c->loss_spans[k]->end;
            trow[i] = counted ? (int32_t)shard_token_at(&t, p) : -1;
            wrow[i] = counted ? 1.0f : 0.0f;
        }
        gptline__sft_conversation__free_unpacked(c, NULL);
    }
    return GL_OK;
}

/* ---- reward modelling ------------------------------------------------- */

/* One micro-batch of rankings: whole groups (a prompt and its K responses,
 * one row each: prompt + response + end-of-text, the prompt's start cut if
 * too long) until the next group does not fit in B rows. */
typedef struct {
    int32_t *tok;    /* B * T, padded with end-of-text */
    int *len;        /* B: true length of each row; the reward is read at len-1 */
    int *plen;       /* B: prompt tokens kept at the row's start; the response follows */
    int *group;      /* B */
    uint32_t *rank;  /* B: 0 = best; equal ranks are ties */
    int rows, groups;
} rm_batch_t;

static int rm_fill(run_data_t *d, int B, int T, int wrap, rm_batch_t *bt, gl_err_t *err)
{
    uint32_t eot = shard_dataset_tokenizer(d->ds)->eot_id;
    uint64_t per_rank = d->n_records / (uint64_t)d->world;
    bt->rows = bt->groups = 0;
    for (;;) {
        if (d->next >= per_rank) {
            if (!wrap)
                return GL_OK;
            d->epoch++;
            d->next = 0;
            shuffle_records(d);
        }
        uint64_t rec = d->order[d->next * (uint64_t)d->world + (uint64_t)d->rank], li = rec;
        shard_tokens_t t;
        const uint8_t *meta;
        size_t mlen;
        const shard_reader_t *r;
        int rc = shard_dataset_record(d->ds, rec, &t, &meta, &mlen, &r, err);
        if (rc)
            return rc;
        Gptline__RmRanking *k = gptline__rm_ranking__unpack(NULL, mlen, meta);
        if (!k || !k->prompt || k->n_responses < 2 || k->n_rank != k->n_responses) {
            if (k)
                gptline__rm_ranking__free_unpacked(k, NULL);
            return gl_err_set(err, GL_ECORRUPT, "%s: record %llu: not a ranking of 2 or more responses",
                              shard_path(r), (unsigned long long)li);
        }
        int K = (int)k->n_responses;
        if (K > B) {
            gptline__rm_ranking__free_unpacked(k, NULL);
            return gl_err_set(err, GL_EINVAL, "%s: record %llu ranks %d responses; B=%d rows cannot hold them",
                              shard_path(r), (unsigned long long)li, K, B);
        }
        if (bt->rows + K > B) {
            gptline__rm_ranking__free_unpacked(k, NULL);
            return GL_OK; /* the group starts the next micro-batch */
        }
        d->next++;
        for (int i = 0; i < K; i++) {
            const Gptline__Span *pr = k->prompt, *rs = k->responses[i];
            if (pr->end < pr->start || pr->end > t.n || rs->end < rs->start || rs->end > t.n) {
                gptline__rm_ranking__free_unpacked(k, NULL);
                return gl_err_set(err, GL_ECORRUPT, "%s: record %llu: spans outside its %llu tokens", shard_path(r),
                                  (unsigned long long)li, (unsigned long long)t.n);
            }
            uint64_t plen = pr->end - pr->start, rlen = rs->end - rs->start;
            uint64_t want = plen + rlen + 1;
            uint64_t cut = want > (uint64_t)T ? want - (uint64_t)T : 0; /* drop the prompt's start */
            if (cut > plen) { /* the response alone is too long: keep its start */
                rlen = (uint64_t)T - 1;
                cut = plen;
            }
            int32_t *row = bt->tok + (size_t)bt->rows * T;
            int n = 0;
            for (uint64_t j = pr->start + cut; j < pr->end; j++)
                row[n++] = (int32_t)shard_token_at(&t, j);
            for (uint64_t j = rs->start; j < rs->start + rlen; j++)
                row[n++] = (int32_t)shard_token_at(&t, j);
            int kept = n - (int)rlen;
            row[n++] = (int32_t)eot;
            bt->len[bt->rows] = n;
            bt->plen[bt->rows] = kept;
            for (int j = n; j < T; j++)
                row[j] = (int32_t)eot;
            bt->group[bt->rows] = bt->groups;
            bt->rank[bt->rows] = k->rank[i];
            bt->rows++;
        }
        bt->groups++;
        gptline__rm_ranking__free_unpacked(k, NULL);
    }
}

/* Rewards of the last forward: rewards[i] = w . lnf[i, len[i]-1]. */
static void rewards_of(const train_model_t *m, const float *w, const int *len, int rows, int T, float *rewards)
{
    int C = m->cfg.n_embd;
    for (int i = 0; i < rows; i++) {
        const float *x = m->acts.lnf + ((size_t)i * T + (size_t)(len[i] - 1)) * C;
        double r = 0;
        for (int c = 0; c < C; c++)
            r += (double)w[c] * x[c];
        rewards[i] = (float)r;
    }
}

static void rm_rewards(const train_model_t *m, const rm_head_t *h, const rm_batch_t *bt, int T, float *rewards)
{
    rewards_of(m, h->w, bt->len, bt->rows, T, rewards);
}

int train_rm_score(train_model_t *m, const float *w, const int32_t *tokens, const int *len, int rows, int T,
                   float *rewards, gl_err_t *err)
{
    for (int i = 0; i < rows; i++)
        if (len[i] < 1 || len[i] > T)
            return gl_err_set(err, GL_ERANGE, "row %d: length %d outside 1..%d", i, len[i], T);
    int rc = train_model_forward_hidden(m, tokens, rows, T, err);
    if (!rc)
        rewards_of(m, w, len, rows, T, rewards);
    return rc;
}

int train_rm_head_load(const char *path, int C, float *w, gl_err_t *err)
{
    rm_head_t h = {.C = C, .w = w}; /* no moments: only the weight is read */
    return rm_head_load(&h, path, err);
}

/* Pairwise loss of a batch: for each group, the mean over its ordered pairs
 * (better, worse) of -log sigmoid(r_better - r_worse); the batch loss is
 * the mean over groups. With dr non-NULL also its gradient wrt rewards
 * (times scale). Counts correct pairs (r_better > r_worse); with sums
 * non-NULL adds the sums over pairs of r_better - r_worse, r_better and
 * r_worse to sums[0..2]. */
static double rm_loss(const rm_batch_t *bt, const float *r, float scale, float *dr, double *pairs, double *correct,
                      double *sums)
{
    double total = 0;
    if (dr)
        memset(dr, 0, (size_t)bt->rows * sizeof *dr);
    for (int g = 0, i0 = 0; g < bt->groups; g++) {
        int i1 = i0;
        while (i1 < bt->rows && bt->group[i1] == g)
            i1++;
        int np = 0;
        for (int i = i0; i < i1; i++)
            for (int j = i0; j < i1; j++)
                np += bt->rank[i] < bt->rank[j];
        double lg = 0;
        for (int i = i0; i < i1 && np; i++)
            for (int j = i0; j < i1; j++) {
                if (bt->rank[i] >= bt->rank[j])
                    continue;
                double diff = (double)r[i] - r[j];
                lg += diff > 0 ? log1p(exp(-diff)) : -diff + log1p(exp(diff)); /* -log sigmoid(diff) */
                *correct += diff > 0;
                if (sums) {
                    sums[0] += diff;
                    sums[1] += r[i];
                    sums[2] += r[j];
                }
                if (dr) {
                    double gsig = -1.0 / (1.0 + exp(diff)); /* d/d diff of -log sigmoid */
                    float gv = (float)(gsig / np / bt->groups) * scale;
                    dr[i] += gv;
                    dr[j] -= gv;
                }
            }
        *pairs += np;
        total += np ? lg / np : 0;
        i0 = i1;
    }
    return bt->groups ? total / bt->groups : 0;
}

/* ---- direct preference optimisation ------------------------------------ */

/* DPO's targets for a batch of rankings: the next token on the response
 * and its end-of-text (positions plen..len-1 of a row, predicted one
 * position earlier), -1 elsewhere: the tokens SFT counts. */
static void dpo_targets(const rm_batch_t *bt, int T, int32_t *tgt)
{
    for (int i = 0; i < bt->rows; i++)
        for (int t = 0; t < T; t++) {
            int p = t + 1; /* the position predicted at t */
            tgt[(size_t)i * T + t] = p >= bt->plen[i] && p < bt->len[i] ? bt->tok[(size_t)i * T + p] : -1;
        }
}

/* Sum over each row's counted targets of log p: -sum of the last
 * forward's per-token cross-entropies. */
static void seq_logprobs(const train_model_t *m, int rows, int T, double *lp)
{
    for (int i = 0; i < rows; i++) {
        double s = 0;
        for (int t = 0; t < T; t++)
            s -= m->acts.losses[(size_t)i * T + t];
        lp[i] = s;
    }
}

int train_dpo_batch(train_model_t *m, train_model_t *ref, const int32_t *tok, const int32_t *tgt, const int *group,
                    const uint32_t *rank, int rows, int T, float beta, float scale, train_dpo_stats_t *st,
                    gl_err_t *err)
{
    if (rows < 1)
        return gl_err_set(err, GL_EINVAL, "dpo: an empty batch");
    for (int i = 0; i < rows; i++)
        if (group[i] != (i ? group[i - 1] + (group[i] != group[i - 1]) : 0))
            return gl_err_set(err, GL_EINVAL, "dpo: row %d: groups must be consecutive from 0", i);
    rm_batch_t bt = {.tok = (int32_t *)tok, .group = (int *)group, .rank = (uint32_t *)rank, .rows = rows,
                     .groups = group[rows - 1] + 1};
    double *lp = gl_xmalloc((size_t)rows * 2 * sizeof *lp), *lr = lp + rows;
    float *r = gl_xmalloc((size_t)rows * 2 * sizeof *r), *dr = r + rows;
    float *coef = NULL;
    int rc;
    /* the reference first: the policy's activations must be the last
     * forward for its backward */
    if ((rc = train_model_forward(ref, tok, tgt, NULL, rows, T, err)))
        goto out;
    seq_logprobs(ref, rows, T, lr);
    if ((rc = train_model_forward(m, tok, tgt, NULL, rows, T, err)))
        goto out;
    seq_logprobs(m, rows, T, lp);
    for (int i = 0; i < rows; i++)
        r[i] = (float)(beta * (lp[i] - lr[i]));
    double sums[3] = {0, 0, 0};
    st->loss += rm_loss(&bt, r, scale, dr, &st->pairs, &st->correct, sums);
    st->groups += bt.groups;
    st->margin += sums[0];
    st->chosen += sums[1];
    st->rejected += sums[2];
    if (scale != 0) {
        /* loss(r), r_i = beta * sum_t log p_t = -beta * sum_t ce_t:
         * d loss / d ce_t = -beta * dr_i on row i's counted tokens */
        coef = gl_xmalloc((size_t)rows * T * sizeof *coef);
        for (int i = 0; i < rows; i++)
            for (int t = 0; t < T; t++)
                coef[(size_t)i * T + t] = tgt[(size_t)i * T + t] >= 0 ? -beta * dr[i] : 0.0f;
        train_model_backward_tokens(m, coef);
    }
out:
    free(lp), free(r), free(coef);
    return rc;
}

/* Held-out pairwise accuracy and loss: of a reward model (ref NULL, head
 * h), or of a DPO policy m against its reference ref (implicit rewards;
 * *dpo gets the DPO measurements summed over every rank). */
static int rm_evaluate(train_model_t *m, const rm_head_t *h, train_model_t *ref, float beta, const char *data,
                       int B, int T, int max_batches, train_dist_t *dist, double *loss, double *acc,
                       train_dpo_stats_t *dpo, gl_err_t *err)
{
    run_data_t d = {0};
    rm_batch_t bt = {0};
    float *r = NULL;
    int32_t *tgt = NULL;
    int rc = GL_OK;
    train_dpo_stats_t s = {0}; /* loss summed * groups for RM; DPO sums per batch mean * groups */
    d.ds = shard_dataset_open(data, 0, err);
    if (!d.ds)
        return err->code;
    if (shard_dataset_kind(d.ds) != GPTLINE__RECORD_KIND__RM) {
        rc = gl_err_set(err, GL_EMISMATCH, "%s: records are not RM rankings", data);
        goto out;
    }
    d.rank = dist->rank;
    d.world = dist->world;
    d.n_records = shard_dataset_docs(d.ds);
    d.order = gl_xmalloc((d.n_records ? d.n_records : 1) * sizeof *d.order);
    for (uint64_t i = 0; i < d.n_records; i++)
        d.order[i] = i;
    bt.tok = gl_xmalloc((size_t)B * T * sizeof *bt.tok);
    bt.len = gl_xmalloc((size_t)B * sizeof *bt.len);
    bt.plen = gl_xmalloc((size_t)B * sizeof *bt.plen);
    bt.group = gl_xmalloc((size_t)B * sizeof *bt.group);
    bt.rank = gl_xmalloc((size_t)B * sizeof *bt.rank);
    r = gl_xmalloc((size_t)B * sizeof *r);
    tgt = gl_xmalloc((size_t)B * T * sizeof *tgt);
    for (int k = 0; max_batches <= 0 || k < max_batches; k++) {
        if ((rc = rm_fill(&d, B, T, 0, &bt, err)))
            goto out;
        if (!bt.rows)
            break;
        if (ref) {
            train_dpo_stats_t one = {0};
            dpo_targets(&bt, T, tgt);
            if ((rc = train_dpo_batch(m, ref, bt.tok, tgt, bt.group, bt.rank, bt.rows, T, beta, 0, &one, err)))
                goto out;
            s.loss += one.loss * one.groups;
            s.groups += one.groups, s.pairs += one.pairs, s.correct += one.correct;
            s.margin += one.margin, s.chosen += one.chosen, s.rejected += one.rejected;
        } else {
            if ((rc = train_model_forward_hidden(m, bt.tok, bt.rows, T, err)))
                goto out;
            rm_rewards(m, h, &bt, T, r);
            s.loss += rm_loss(&bt, r, 1, NULL, &s.pairs, &s.correct, NULL) * bt.groups;
            s.groups += bt.groups;
        }
    }
    double all[7] = {s.loss, s.pairs, s.correct, s.groups, s.margin, s.chosen, s.rejected};
    if ((rc = train_dist_sum(dist, all, 7, err)))
        goto out;
    *loss = all[3] ? all[0] / all[3] : NAN;
    *acc = all[1] ? all[2] / all[1] : NAN;
    if (dpo)
        *dpo = (train_dpo_stats_t){.loss = *loss, .groups = all[3], .pairs = all[1], .correct = all[2],
                                   .margin = all[4], .chosen = all[5], .rejected = all[6]};
out:
    free(bt.tok), free(bt.len), free(bt.plen), free(bt.group), free(bt.rank), free(r), free(tgt), free(d.order);
    shard_dataset_close(&d.ds);
    return rc;
}

/* ---- evaluation --------------------------------------------------------- */

int train_eval_dataset(train_model_t *m, const char *data, int B, int T, int max_batches, train_dist_t *dist,
                       train_eval_t *out, gl_err_t *err)
{
    int rc = GL_OK;
    shard_dataset_t *ds = shard_dataset_open(data, 0, err);
    if (!ds)
        return err->code;
    const Gptline__TokenizerId *tid = shard_dataset_tokenizer(ds);
    int32_t *win = NULL, *tok = NULL, *tgt = NULL;
    double sums[3] = {0, 0, 0}; /* loss * tokens, tokens, bytes */
    if (!tid || (int)tid->vocab_size != m->cfg.vocab_size ||
        (m->cfg.tokenizer_hash && m->cfg.tokenizer_hash != tid->hash)) {
        rc = gl_err_set(err, GL_EMISMATCH, "%s: dataset tokenizer '%s' (%u tokens) is not the model's (%d tokens)",
                        data, tid ? tid->name : "?", tid ? tid->vocab_size : 0, m->cfg.vocab_size);
        goto out;
    }
    shard_sampler_t s;
    if ((rc = shard_sampler_init(&s, ds, (uint32_t)B, (uint32_t)T, 0, (uint32_t)dist->rank, (uint32_t)dist->world,
                                 0, err)))
        goto out;
    uint64_t batches = s.per_rank / (uint64_t)B;
    if (max_batches > 0 && batches > (uint64_t)max_batches)
        batches = (uint64_t)max_batches;
    if (!batches)
        batches = 1; /* fewer windows than B: wraps into the next epoch */
    win = gl_xmalloc((size_t)B * (T + 1) * sizeof *win);
    tok = gl_xmalloc((size_t)B * T * sizeof *tok);
    tgt = gl_xmalloc((size_t)B * T * sizeof *tgt);
    for (uint64_t k = 0; k < batches; k++) {
        if ((rc = shard_sampler_next(&s, win, err)))
            goto out;
        train_split_windows(win, B, T, tok, tgt);
        if ((rc = train_model_forward(m, tok, tgt, NULL, B, T, err)))
            goto out;
        sums[0] += (double)m->loss * B * T;
        sums[1] += (double)B * T;
    }
    if ((rc = train_dist_sum(dist, sums, 2, err)))
        goto out;
    out->tokens = (uint64_t)sums[1];
    out->loss = sums[0] / sums[1];
    out->ppl = exp(out->loss);
    /* bits per byte: the dataset's text bytes per token */
    uint64_t bytes = 0, toks = 0;
    for (size_t i = 0; i < shard_dataset_shard_count(ds); i++) {
        bytes += shard_manifest(shard_dataset_shard(ds, i))->doc_bytes;
        toks += shard_manifest(shard_dataset_shard(ds, i))->token_count;
    }
    out->bpb = bytes && toks ? out->loss / log(2.0) * (double)toks / (double)bytes : NAN;
out:
    free(win), free(tok), free(tgt);
    shard_dataset_close(&ds);
    return rc;
}

/* ---- the run ------------------------------------------------------------ */

/* ---- Prometheus textfile ------------------------------------------------ */

typedef struct {
    gl_metrics_t m;
    double started;
    long steps_done, ckpts;
    double loss, lr, norm, tps, mfu, val_loss;
    int have_step, have_val;
} prom_t;

static int prom_write(prom_t *p, const run_state_t *st, long until, int world, int finished, gl_err_t *err)
{
    gl_metrics_t *m = &p->m;
    gl_metrics_begin(m);
    gl_metrics_add(m, "gptline_train_step", GL_METRIC_GAUGE, "Optimizer steps taken in this run (resumed runs included).",
                   NULL, NULL, (double)st->step);
    gl_metrics_add(m, "gptline_train_step_target", GL_METRIC_GAUGE, "The step this process stops at.", NULL, NULL,
                   (double)until);
    gl_metrics_add(m, "gptline_train_steps_total", GL_METRIC_COUNTER, "Steps taken by this process.", NULL, NULL,
                   (double)p->steps_done);
    gl_metrics_add(m, "gptline_train_tokens_total", GL_METRIC_COUNTER,
                   "Tokens trained on in this run, all ranks (resumed runs included).", NULL, NULL,
                   (double)st->tokens);
    gl_metrics_add(m, "gptline_train_checkpoints_total", GL_METRIC_COUNTER, "Checkpoints written by this process.",
                   NULL, NULL, (double)p->ckpts);
    gl_metrics_add(m, "gptline_train_world_size", GL_METRIC_GAUGE, "Data-parallel ranks (MPI world size).", NULL,
                   NULL, (double)world);
    if (p->have_step) {
        gl_metrics_add(m, "gptline_train_loss", GL_METRIC_GAUGE, "Training loss of the last step.", NULL, NULL, p->loss);
        gl_metrics_add(m, "gptline_train_learning_rate", GL_METRIC_GAUGE, "Learning rate of the last step.", NULL, NULL,
                       p->lr);
        gl_metrics_add(m, "gptline_train_grad_norm", GL_METRIC_GAUGE, "Global gradient norm of the last step (before clipping).",
                       NULL, NULL, p->norm);
        gl_metrics_add(m, "gptline_train_tokens_per_second", GL_METRIC_GAUGE, "Throughput of the last step, all ranks.",
                       NULL, NULL, p->tps);
        gl_metrics_add(m, "gptline_train_mfu_ratio", GL_METRIC_GAUGE, "Model FLOPs utilisation of the last step (0-1).",
                       NULL, NULL, p->mfu);
    }
    if (p->have_val)
        gl_metrics_add(m, "gptline_train_val_loss", GL_METRIC_GAUGE, "Held-out loss at the last evaluation.", NULL,
                       NULL, p->val_loss);
    gl_metrics_add(m, "gptline_train_start_time_seconds", GL_METRIC_GAUGE, "When this process started training, Unix time.",
                   NULL, NULL, p->started);
    gl_metrics_add(m, "gptline_train_finished", GL_METRIC_GAUGE, "1 once the run reached its last step.", NULL, NULL,
                   finished);
    return gl_metrics_write(m, err);
}

static void prom_tick(prom_t *p, const train_run_opts_t *o, const run_state_t *st, long until, int world, int force)
{
    gl_err_t e;
    if (!o->metrics_file || !p->m.path || !(force || gl_metrics_due(&p->m)))
        return;
    if (prom_write(p, st, until, world, st->step >= until, &e))
        gl_warn("%s", e.msg); /* a missing metrics file does not stop training */
}

static volatile sig_atomic_t stop_requested;
static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

void train_stop_catch(train_stop_t *s)
{
    stop_requested = 0;
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, &s->old_int);
    sigaction(SIGTERM, &sa, &s->old_term);
}

int train_stop_requested(void) { return stop_requested; }

void train_stop_release(train_stop_t *s)
{
    sigaction(SIGINT, &s->old_int, NULL);
    sigaction(SIGTERM, &s->old_term, NULL);
}


int train_run(const train_run_opts_t *o, train_dist_t *dist, gl_err_t *err)
{
    int rc = GL_OK, lead = dist->rank == 0;
    train_model_t m = {0};
    train_optim_t opt = {0};
    run_data_t d = {0};
    FILE *metrics = NULL;
    char *metrics_path = gl_path_join(o->out, "metrics.jsonl");
    char *init_path = NULL, *resume_dir = NULL;
    int32_t *tok = NULL, *tgt = NULL;
    float *wts = NULL;
    run_state_t st = {0};
    prom_t prom = {0};
    int pairs_stage = o->stage == TRAIN_STAGE_RM || o->stage == TRAIN_STAGE_DPO; /* reads rankings */
    Gptline__RecordKind want = o->stage == TRAIN_STAGE_SFT ? GPTLINE__RECORD_KIND__SFT
                               : pairs_stage               ? GPTLINE__RECORD_KIND__RM
                                                           : GPTLINE__RECORD_KIND__DOCUMENTS;
    static const char *kind_names[] = {"", "pretraining document", "SFT", "RM ranking", "RL prompt"};
    rm_head_t head = {0};
    rm_batch_t bt = {0};
    float *rew = NULL, *drew = NULL, *dlnf = NULL;
    train_model_t ref = {0}; /* DPO: the frozen reference, the --init weights */

    if (o->B <= 0 || o->T <= 0 || o->accum <= 0 || o->steps <= 0) {
        rc = gl_err_set(err, GL_EINVAL, "B, T, accum and steps must be positive");
        goto out;
    }
    if (o->stage == TRAIN_STAGE_DPO && (!o->init || !(o->dpo_beta > 0))) {
        rc = gl_err_set(err, GL_EINVAL, "DPO needs --init (the SFT model, also the reference) and beta > 0");
        goto out;
    }
    d.ds = shard_dataset_open(o->data, 0, err);
    if (!d.ds) {
        rc = err->code;
        goto out;
    }
    const Gptline__TokenizerId *tid = shard_dataset_tokenizer(d.ds);
    if (!tid) {
        rc = gl_err_set(err, GL_EINVAL, "%s: the dataset is empty", o->data);
        goto out;
    }
    if (shard_dataset_kind(d.ds) != want) {
        rc = gl_err_set(err, GL_EMISMATCH, "%s: records are not %s records", o->data, kind_names[want]);
        goto out;
    }

    /* the model: from a checkpoint, or fresh with the dataset's vocabulary */
    train_config_t cfg = o->cfg;
    cfg.vocab_size = (int)tid->vocab_size;
    cfg.tokenizer_hash = tid->hash;
    if (o->init) {
        if (!(init_path = train_checkpoint_model_path(o->init, err))) {
            rc = err->code;
            goto out;
        }
        if ((rc = train_read_config(init_path, &cfg, err)))
            goto out;
        if (cfg.vocab_size != (int)tid->vocab_size) {
            rc = gl_err_set(err, GL_EMISMATCH,
                            "%s: the model's vocabulary has %d tokens, the dataset's tokenizer '%s' has %u",
                            init_path, cfg.vocab_size, tid->name, tid->vocab_size);
            goto out;
        }
        if (cfg.tokenizer_hash && cfg.tokenizer_hash != tid->hash) {
            rc = gl_err_set(err, GL_EMISMATCH,
                            "%s: the model was trained with tokenizer %016llx, the dataset was made with '%s' "
                            "(%016llx): same size, another vocabulary",
                            init_path, (unsigned long long)cfg.tokenizer_hash, tid->name,
                            (unsigned long long)tid->hash);
            goto out;
        }
        cfg.tokenizer_hash = tid->hash; /* a model of unknown vocabulary (a published one) adopts the data's */
    }
    if (o->T > cfg.n_ctx) {
        rc = gl_err_set(err, GL_EINVAL, "T=%d is longer than the model's context of %d", o->T, cfg.n_ctx);
        goto out;
    }
    if (o->threads > 0)
        train_set_threads(o->threads);
    if ((rc = train_model_init(&m, &cfg, o->B, o->T, TRAIN_GRADS, err)))
        goto out;
    if (init_path) {
        if ((rc = train_load(&m, init_path, 0, err)))
            goto out;
    } else {
        train_model_init_weights(&m, o->seed);
    }
    if ((rc = train_optim_init(&opt, &m, err)))
        goto out;
    if (o->dropout > 0 && (rc = train_model_set_dropout(&m, o->dropout, o->seed ^ 0xd209, err)))
        goto out;
    if (o->stage == TRAIN_STAGE_DPO) {
        /* the reference: the same weights, frozen (no gradients, no optimizer) */
        if ((rc = train_model_init(&ref, &cfg, o->B, o->T, 0, err)) || (rc = train_load(&ref, init_path, 0, err)))
            goto out;
    }
    if (pairs_stage) {
        bt.tok = gl_xmalloc((size_t)o->B * o->T * sizeof *bt.tok);
        bt.len = gl_xmalloc((size_t)o->B * sizeof *bt.len);
        bt.plen = gl_xmalloc((size_t)o->B * sizeof *bt.plen);
        bt.group = gl_xmalloc((size_t)o->B * sizeof *bt.group);
        bt.rank = gl_xmalloc((size_t)o->B * sizeof *bt.rank);
    }
    if (o->stage == TRAIN_STAGE_RM) {
        /* a new scalar head (zeros: every reward starts at 0), or the one of
         * the checkpoint we start from */
        rm_head_init(&head, cfg.n_embd);
        if (o->init) {
            char *dir = gl_xstrdup(init_path), *slash = strrchr(dir, '/');
            if (slash)
                *slash = '\0';
            char *hp = gl_path_join(slash ? dir : ".", "score.safetensors");
            struct stat hs;
            if (stat(hp, &hs) == 0)
                rc = rm_head_load(&head, hp, err);
            free(hp), free(dir);
            if (rc)
                goto out;
        }
        rew = gl_xmalloc((size_t)o->B * sizeof *rew);
        drew = gl_xmalloc((size_t)o->B * sizeof *drew);
        dlnf = gl_xcalloc((size_t)o->B * o->T * cfg.n_embd, sizeof *dlnf);
    }

    /* data order */
    d.seed = o->seed;
    d.rank = dist->rank;
    d.world = dist->world;
    d.win = gl_xmalloc((size_t)o->B * (o->T + 1) * sizeof *d.win);
    if (o->stage == TRAIN_STAGE_PRETRAIN) {
        if ((rc = shard_sampler_init(&d.s, d.ds, (uint32_t)o->B, (uint32_t)o->T, o->seed, (uint32_t)dist->rank,
                                     (uint32_t)dist->world, 1, err)))
            goto out;
    } else { /* SFT and RM: whole records in a shuffled order */
        d.n_records = shard_dataset_docs(d.ds);
        if (d.n_records < (uint64_t)dist->world) {
            rc = gl_err_set(err, GL_ERANGE, "%s: %llu records for %d ranks", o->data,
                            (unsigned long long)d.n_records, dist->world);
            goto out;
        }
        d.order = gl_xmalloc(d.n_records * sizeof *d.order);
        shuffle_records(&d);
    }

    /* resume */
    if (lead && (rc = gl_mkdir_p(o->out, err)))
        goto out;
    train_dist_barrier(dist);
    if (o->resume) {
        resume_dir = latest_checkpoint(o->out, err);
        if (resume_dir) {
            char *mp = gl_path_join(resume_dir, "model.safetensors"),
                 *op = gl_path_join(resume_dir, "optim.safetensors");
            rc = load_state(resume_dir, o, &m, dist->world, &st, err);
            if (!rc)
                rc = train_load(&m, mp, 0, err);
            if (!rc)
                rc = train_optim_load(&opt, &m, op, err);
            if (!rc && o->stage == TRAIN_STAGE_RM) {
                char *hp = gl_path_join(resume_dir, "score.safetensors");
                rc = rm_head_load(&head, hp, err);
                free(hp);
            }
            free(mp), free(op);
            if (rc)
                goto out;
            m.dropout_iter = st.dropout_iter;
            if (o->stage == TRAIN_STAGE_PRETRAIN) {
                shard_sampler_seek(&d.s, st.epoch, st.next);
            } else {
                d.epoch = st.epoch;
                d.next = st.next;
                shuffle_records(&d);
            }
        } else if (err->code != GL_ENOTFOUND) {
            rc = err->code;
            goto out;
        }
        gl_err_clear(err);
    }
    if (lead) {
        if (!(metrics = train_metrics_open(metrics_path, st.step, err))) {
            rc = err->code;
            goto out;
        }
        if (o->metrics_file) {
            static const char *stage_names[] = {[TRAIN_STAGE_PRETRAIN] = "pretrain", [TRAIN_STAGE_SFT] = "sft",
                                                [TRAIN_STAGE_RM] = "rm", [TRAIN_STAGE_DPO] = "dpo"};
            const char *labels[] = {"stage", stage_names[o->stage], NULL};
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            prom.started = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
            long until0 = o->until > 0 && o->until < o->steps ? o->until : o->steps;
            if ((rc = gl_metrics_init(&prom.m, o->metrics_file, o->metrics_interval, labels, err)) ||
                (rc = prom_write(&prom, &st, until0, dist->world, 0, err)))
                goto out;
        }
    }

    tok = gl_xmalloc((size_t)o->B * o->T * sizeof *tok);
    tgt = gl_xmalloc((size_t)o->B * o->T * sizeof *tgt);
    wts = gl_xmalloc((size_t)o->B * o->T * sizeof *wts);
    train_sched_t sched = o->sched;
    sched.max_steps = o->steps;
    long until = o->until > 0 && o->until < o->steps ? o->until : o->steps;
    double peak = lead ? sgemm_peak() : 0;
    double fpt = flops_per_token(&m, o->T, o->stage);
    if (o->stage == TRAIN_STAGE_DPO)
        fpt *= 8.0 / 6.0; /* the reference's forward too */
    double t_start = gl_now(), t_last = t_start;
    long steps_timed = 0;
    train_stop_t stop_sig;
    train_stop_catch(&stop_sig);
    if (lead && !o->quiet)
        gl_info("%s: %zu parameters, %d layers, %d heads, width %d, context %d, vocab %d; B=%d T=%d accum=%d "
                "ranks=%d; steps %ld..%ld",
                o->stage == TRAIN_STAGE_SFT   ? "sft"
                : o->stage == TRAIN_STAGE_RM  ? "rm"
                : o->stage == TRAIN_STAGE_DPO ? "dpo"
                                              : "pretrain",
                m.n_params, cfg.n_layer, cfg.n_head, cfg.n_embd,
                cfg.n_ctx, cfg.vocab_size, o->B, o->T, o->accum, dist->world, st.step, until);

    while (st.step < until) {
        double t0 = gl_now();
        float lr = train_lr_at(&sched, st.step);
        train_model_zero_grad(&m);
        train_model_set_training(&m, 1);
        double loss_sum = 0, counted = 0;
        train_dpo_stats_t dst = {0};
        int bad = 0;
        if (o->stage == TRAIN_STAGE_RM)
            memset(head.g, 0, (size_t)head.C * sizeof *head.g);
        for (int a = 0; a < o->accum && !bad && o->stage == TRAIN_STAGE_RM; a++) {
            /* rewards at each row's true last token; the pairwise loss's
             * gradient enters the model through the hidden states */
            double pairs = 0, correct = 0;
            int C = cfg.n_embd;
            if ((bad = rm_fill(&d, o->B, o->T, 1, &bt, err)) ||
                (bad = train_model_forward_hidden(&m, bt.tok, bt.rows, o->T, err)))
                break;
            rm_rewards(&m, &head, &bt, o->T, rew);
            loss_sum += rm_loss(&bt, rew, 1.0f / (float)o->accum, drew, &pairs, &correct, NULL);
            counted += 1;
            memset(dlnf, 0, (size_t)bt.rows * o->T * C * sizeof *dlnf);
            for (int i = 0; i < bt.rows; i++) {
                size_t at = ((size_t)i * o->T + (size_t)(bt.len[i] - 1)) * C;
                for (int c = 0; c < C; c++) {
                    dlnf[at + c] = drew[i] * head.w[c];
                    head.g[c] += drew[i] * m.acts.lnf[at + c];
                }
            }
            train_model_backward_hidden(&m, dlnf);
        }
        for (int a = 0; a < o->accum && !bad && o->stage == TRAIN_STAGE_DPO; a++) {
            /* the policy's and the reference's log-probs of each response;
             * the loss's gradient enters through per-token coefficients */
            if ((bad = rm_fill(&d, o->B, o->T, 1, &bt, err)))
                break;
            dpo_targets(&bt, o->T, tgt);
            double before = dst.loss;
            if ((bad = train_dpo_batch(&m, &ref, bt.tok, tgt, bt.group, bt.rank, bt.rows, o->T, o->dpo_beta,
                                       1.0f / (float)o->accum, &dst, err)))
                break;
            loss_sum += dst.loss - before;
            counted += 1;
        }
        for (int a = 0; a < o->accum && !bad && !pairs_stage; a++) {
            bad = next_batch(&d, o->stage, o->B, o->T, tok, tgt, wts, err);
            if (!bad) {
                bad = train_model_forward(&m, tok, tgt, o->stage == TRAIN_STAGE_PRETRAIN ? NULL : wts, o->B, o->T,
                                          err);
                if (bad == GL_EINVAL && o->stage == TRAIN_STAGE_SFT) {
                    bad = 0; /* a micro-batch without assistant tokens: no gradient */
                    gl_err_clear(err);
                    continue;
                }
            }
            if (!bad) {
                train_model_backward(&m, 1.0f / (float)o->accum);
                loss_sum += m.loss;
                counted += 1;
            }
        }
        if (train_dist_any_error(dist, bad)) {
            rc = bad ? bad : gl_err_set(err, GL_EIO, "another rank failed");
            goto out;
        }
        double sums[7] = {loss_sum, counted, dst.pairs, dst.correct, dst.margin, dst.chosen, dst.rejected};
        if ((rc = train_dist_allreduce_mean(dist, m.grads_mem, m.n_params, err)) ||
            (rc = train_dist_sum(dist, sums, o->stage == TRAIN_STAGE_DPO ? 7 : 2, err)))
            goto out;
        float loss = sums[1] > 0 ? (float)(sums[0] / sums[1]) : NAN;
        float norm;
        if (o->stage == TRAIN_STAGE_RM) {
            /* one global norm over the model and the head */
            if ((rc = train_dist_allreduce_mean(dist, head.g, (size_t)head.C, err)))
                goto out;
            double hn = 0, mn = train_grad_norm(&m);
            for (int c = 0; c < head.C; c++)
                hn += (double)head.g[c] * head.g[c];
            norm = (float)sqrt(mn * mn + hn);
            if (o->clip > 0 && norm > o->clip) {
                float sc = o->clip / (norm + 1e-6f);
                for (size_t i = 0; i < m.n_params; i++)
                    m.grads_mem[i] *= sc;
                for (int c = 0; c < head.C; c++)
                    head.g[c] *= sc;
            }
            rm_head_step(&head, &o->adamw, lr);
        } else {
            norm = train_clip_grad_norm(&m, o->clip);
        }
        train_adamw_step(&opt, &m, &o->adamw, lr);
        st.step++;
        st.tokens += (uint64_t)o->B * o->T * o->accum * dist->world;
        if (o->stage == TRAIN_STAGE_PRETRAIN) {
            st.epoch = d.s.epoch;
            st.next = d.s.next;
        } else {
            st.epoch = d.epoch;
            st.next = d.next;
        }
        double dt = gl_now() - t0;
        steps_timed++;
        if (lead) {
            double tps = (double)o->B * o->T * o->accum * dist->world / dt;
            /* the peak is one thread's (OpenBLAS runs single-threaded inside the
             * model's own threads): scale it by the threads and ranks in use */
            double cores = (double)(m.nthreads > 0 ? m.nthreads : 1) * dist->world;
            double mfu = peak > 0 ? tps * fpt / (peak * 1e9 * cores) : 0;
            json_t *j = json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:I}", "step", (json_int_t)(st.step - 1), "loss",
                                  (double)loss, "lr", (double)lr, "grad_norm", (double)norm, "tokens_per_s", tps,
                                  "mfu", mfu, "tokens", (json_int_t)st.tokens);
            if (o->stage == TRAIN_STAGE_DPO && sums[2] > 0) {
                json_object_set_new(j, "accuracy", json_real(sums[3] / sums[2]));
                json_object_set_new(j, "margin", json_real(sums[4] / sums[2]));
                json_object_set_new(j, "chosen", json_real(sums[5] / sums[2]));
                json_object_set_new(j, "rejected", json_real(sums[6] / sums[2]));
            }
            train_metrics_append(metrics, j);
            json_decref(j);
            prom.steps_done++;
            prom.have_step = 1;
            prom.loss = loss, prom.lr = lr, prom.norm = norm, prom.tps = tps, prom.mfu = mfu;
            if (!o->quiet && (st.step % (o->log_every > 0 ? o->log_every : 1) == 0 || st.step == until)) {
                double el = gl_now() - t_last;
                char eta[32];
                gl_fmt_eta((until - st.step) * ((gl_now() - t_start) / (double)steps_timed), eta, sizeof eta);
                fprintf(stderr, "step %ld/%ld | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | MFU %.1f%% | ETA %s\n",
                        st.step, until, loss, lr, norm, tps, 100 * mfu, eta);
                (void)el;
                t_last = gl_now();
            }
        }
        int eval_now = o->val && o->eval_every > 0 && (st.step % o->eval_every == 0 || st.step == until);
        train_model_set_training(&m, 0);
        if (eval_now && pairs_stage) {
            double vl = 0, acc = 0;
            train_dpo_stats_t ds = {0};
            int dpo = o->stage == TRAIN_STAGE_DPO;
            if ((rc = rm_evaluate(&m, &head, dpo ? &ref : NULL, o->dpo_beta, o->val, o->B, o->T, o->eval_batches,
                                  dist, &vl, &acc, &ds, err)))
                goto out;
            if (lead) {
                json_t *j = json_pack("{s:I,s:f,s:f}", "step", (json_int_t)(st.step - 1), "val_loss", vl,
                                      "val_accuracy", acc);
                if (dpo && ds.pairs > 0) {
                    json_object_set_new(j, "val_margin", json_real(ds.margin / ds.pairs));
                    json_object_set_new(j, "val_chosen", json_real(ds.chosen / ds.pairs));
                    json_object_set_new(j, "val_rejected", json_real(ds.rejected / ds.pairs));
                }
                train_metrics_append(metrics, j);
                json_decref(j);
                prom.have_val = 1, prom.val_loss = vl;
                if (!o->quiet && dpo)
                    fprintf(stderr, "step %ld | val loss %.4f | implicit-reward accuracy %.1f%% | margin %.4f\n",
                            st.step, vl, 100 * acc, ds.pairs > 0 ? ds.margin / ds.pairs : 0.0);
                else if (!o->quiet)
                    fprintf(stderr, "step %ld | val loss %.4f | pairwise accuracy %.1f%%\n", st.step, vl, 100 * acc);
            }
        } else if (eval_now) {
            train_eval_t ev;
            if ((rc = train_eval_dataset(&m, o->val, o->B, o->T, o->eval_batches, dist, &ev, err)))
                goto out;
            if (lead) {
                json_t *j = json_pack("{s:I,s:f,s:f,s:f}", "step", (json_int_t)(st.step - 1), "val_loss", ev.loss,
                                      "val_ppl", ev.ppl, "val_bpb", isnan(ev.bpb) ? 0.0 : ev.bpb);
                train_metrics_append(metrics, j);
                json_decref(j);
                prom.have_val = 1, prom.val_loss = ev.loss;
                if (!o->quiet)
                    fprintf(stderr, "step %ld | val loss %.4f | ppl %.2f | %.3f bits/byte\n", st.step, ev.loss, ev.ppl,
                            ev.bpb);
            }
        }
        if (lead && (eval_now || st.step == until)) {
            char *png = gl_path_join(o->out, "loss.png");
            gl_err_t perr;
            if (train_plot_metrics(metrics_path, png, &perr))
                gl_warn("%s", perr.msg); /* a missing picture does not stop training */
            free(png);
        }
        int stop = train_dist_any_error(dist, train_stop_requested());
        int ckpt = (o->ckpt_every > 0 && st.step % o->ckpt_every == 0) || st.step == until || stop;
        if (ckpt) {
            if (lead && (rc = save_checkpoint(o->out, o, &m, &opt, o->stage == TRAIN_STAGE_RM ? &head : NULL, &st,
                                              dist->world, err)))
                goto out;
            prom.ckpts++;
            train_dist_barrier(dist);
        }
        if (lead)
            prom_tick(&prom, o, &st, until, dist->world, ckpt);
        if (stop) {
            rc = gl_err_set(err, GL_EINTERRUPTED, "interrupted at step %ld; checkpoint written, resume with --resume",
                            st.step);
            break;
        }
    }
    train_stop_release(&stop_sig);
out:
    if (metrics)
        fclose(metrics);
    gl_metrics_free(&prom.m);
    free(metrics_path), free(init_path), free(resume_dir);
    free(tok), free(tgt), free(wts);
    free(d.win), free(d.order);
    free(bt.tok), free(bt.len), free(bt.plen), free(bt.group), free(bt.rank), free(rew), free(drew), free(dlnf);
    rm_head_free(&head);
    train_model_free(&ref);
    shard_dataset_close(&d.ds);
    train_optim_free(&opt);
    train_model_free(&m);
    return rc;
}
