/* train_util.h — synthetic SFT and RM datasets for the trainer tests.
 *
 * Byte-level shards (SHARD_BYTES_TOKENIZER) of tasks a tiny model learns
 * in a few hundred steps: conversations "U:<word>\nA:<word>" whose loss
 * span is the assistant's copy of the user's 4-letter word, and rankings of
 * K=3 responses where the one holding the letter 'z' is best and the other
 * two tie. The caller owns the random state, so a test draws its data and
 * its other random numbers from one reproducible stream. Also: reading a
 * run's metrics.jsonl, and a finite-difference gradient check.
 */
#ifndef GL_TEST_TRAIN_UTIL_H
#define GL_TEST_TRAIN_UTIL_H

#include "shards/shards.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The normwise relative error of an analytic gradient g of f with respect
 * to x[n] against central differences of step h. */
static inline double tt_fd_check(double (*f)(void *ctx), void *ctx, float *x, const float *g, size_t n, float h)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + h;
        double fp = f(ctx);
        x[i] = keep - h;
        double fm = f(ctx);
        x[i] = keep;
        double fd = (fp - fm) / (2.0 * h);
        num += (fd - g[i]) * (fd - g[i]);
        den += (double)g[i] * g[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* xorshift64: a number in [0, n) from the state *s (not 0). */
static inline uint32_t tt_rnd(uint64_t *s, uint32_t n)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s % n);
}

/* Starts DIR/<name>-000000.mdb (DIR created) for byte-level records of the
 * given kind; NULL and *err on failure. Seal or abort it. */
static inline shard_writer_t *tt_writer(const char *dir, const char *name, Gptline__RecordKind kind, gl_err_t *err)
{
    if (gl_mkdir_p(dir, err))
        return NULL;
    char file[64];
    snprintf(file, sizeof file, "%s-000000.mdb", name);
    char *path = gl_path_join(dir, file);
    shard_writer_opts_t o = {.kind = kind, .tokenizer_name = SHARD_BYTES_TOKENIZER,
                             .tokenizer_hash = shard_bytes_tokenizer_hash(), .vocab_size = SHARD_BYTES_VOCAB,
                             .eot_id = SHARD_BYTES_EOT};
    shard_writer_t *w = shard_writer_create(path, &o, err);
    free(path);
    return w;
}

/* Adds a record; on failure discards the shard (*w NULL) and returns -1. */
static inline int tt_add(shard_writer_t **w, const uint32_t *tok, size_t len, const ProtobufCMessage *meta,
                         gl_err_t *err)
{
    if (shard_writer_add(*w, tok, len, meta, err)) {
        shard_writer_abort(w);
        return -1;
    }
    return 0;
}

/* One conversation "U:<word>\nA:<word>" + end-of-text (11 tokens) in tok;
 * [*start, *end) is its loss span: the assistant's word and end-of-text.
 * Returns the length. */
static inline size_t tt_conversation(uint32_t *tok, uint32_t *start, uint32_t *end, const char *word)
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

/* DIR/sft-000000.mdb: n conversations on random words from *rng, or all on
 * "quiz" when fixed. 0, or -1 and *err. */
static inline int tt_write_sft(const char *dir, int n, int fixed, uint64_t *rng, gl_err_t *err)
{
    shard_writer_t *w = tt_writer(dir, "sft", GPTLINE__RECORD_KIND__SFT, err);
    if (!w)
        return -1;
    for (int k = 0; k < n; k++) {
        char word[5] = "quiz";
        if (!fixed)
            for (int i = 0; i < 4; i++)
                word[i] = (char)('a' + tt_rnd(rng, 26));
        uint32_t tok[16];
        Gptline__SftConversation c = GPTLINE__SFT_CONVERSATION__INIT;
        Gptline__Span span = GPTLINE__SPAN__INIT, *sp[1] = {&span};
        size_t len = tt_conversation(tok, &span.start, &span.end, word);
        c.n_loss_spans = 1;
        c.loss_spans = sp;
        if (tt_add(&w, tok, len, &c.base, err))
            return -1;
    }
    return shard_writer_seal(&w, err) ? -1 : 0;
}

/* DIR/rm-000000.mdb: n rankings of a prompt of 3-7 letters and 3 responses
 * of 1-12 letters ('a'..'y'), the best (rank 0) holding one 'z', the other
 * two tied (rank 1); drawn from *rng. 0, or -1 and *err. */
static inline int tt_write_rankings(const char *dir, int n, uint64_t *rng, gl_err_t *err)
{
    shard_writer_t *w = tt_writer(dir, "rm", GPTLINE__RECORD_KIND__RM, err);
    if (!w)
        return -1;
    for (int k = 0; k < n; k++) {
        uint32_t tok[64];
        size_t len = 0;
        Gptline__RmRanking r = GPTLINE__RM_RANKING__INIT;
        Gptline__Span prompt = GPTLINE__SPAN__INIT, resp[3], *resp_p[3];
        uint32_t rank[3];
        prompt.start = 0;
        for (uint32_t i = 0, pl = 3 + tt_rnd(rng, 5); i < pl; i++)
            tok[len++] = 'a' + tt_rnd(rng, 25);
        prompt.end = (uint32_t)len;
        uint32_t best = tt_rnd(rng, 3);
        for (uint32_t i = 0; i < 3; i++) {
            gptline__span__init(&resp[i]);
            resp_p[i] = &resp[i];
            resp[i].start = (uint32_t)len;
            uint32_t rl = 1 + tt_rnd(rng, 12), zat = tt_rnd(rng, rl);
            for (uint32_t j = 0; j < rl; j++)
                tok[len++] = (i == best && j == zat) ? 'z' : 'a' + tt_rnd(rng, 25);
            resp[i].end = (uint32_t)len;
            rank[i] = i == best ? 0 : 1;
        }
        r.prompt = &prompt;
        r.n_responses = 3;
        r.responses = resp_p;
        r.n_rank = 3;
        r.rank = rank;
        if (tt_add(&w, tok, len, &r.base, err))
            return -1;
    }
    return shard_writer_seal(&w, err) ? -1 : 0;
}

/* The value of key in the first (first = 1) or last metrics line having
 * it; NaN when no line has it or the file cannot be read. */
static inline double tt_metric(const char *metrics, const char *key, int first)
{
    FILE *f = fopen(metrics, "r");
    char line[2048];
    double v = NAN;
    while (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *a = j ? json_object_get(j, key) : NULL;
        if (a && (!first || isnan(v)))
            v = json_number_value(a);
        json_decref(j);
    }
    if (f)
        fclose(f);
    return v;
}

/* The "loss" values of a metrics file, in order, as text ("" when none);
 * caller frees. Two runs' texts are equal when their losses are. */
static inline char *tt_losses(const char *metrics)
{
    char *data = NULL, *out = calloc(1, 1 << 16);
    size_t len = 0, n = 0;
    gl_read_file(metrics, 1 << 22, &data, &len, NULL);
    for (char *p = data; p && (p = strstr(p, "\"loss\":")) && n < (1 << 16) - 32; p += 7)
        n += (size_t)snprintf(out + n, (1 << 16) - n, "%.9g ", strtod(p + 7, NULL));
    free(data);
    return out;
}

#endif
