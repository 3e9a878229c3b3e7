/* test_shards_big.c — a dataset of many shards and over 100M tokens: counts,
 * random windows against the naive model, full coverage of an epoch by four
 * ranks, and a full verify of one shard. */
#include "shards/shards.h"
#include "tests/shard_util.h"
#include "tests/tap.h"

#include <stdlib.h>
#include <string.h>

#define VOCAB 50257u
#define NSHARDS 8
#define DOCS_PER_SHARD 1300
#define MAX_LEN 20000
#define SEED 17

/* The model's stream: doc d's tokens then end-of-text, docs in order. */
static uint64_t *doc_start; /* stream offset of each doc, ndocs + 1 */
static uint64_t ndocs;

static int32_t model_at(uint64_t pos)
{
    uint64_t lo = 0, hi = ndocs;
    while (hi - lo > 1) {
        uint64_t mid = (lo + hi) / 2;
        if (doc_start[mid] <= pos)
            lo = mid;
        else
            hi = mid;
    }
    uint64_t j = pos - doc_start[lo];
    if (j == tu_doc_len(SEED, lo, MAX_LEN))
        return (int32_t)(VOCAB - 1);
    return (int32_t)tu_token(SEED, lo, j, VOCAB);
}

int main(void)
{
    gl_err_t err = {0};
    char *dir = gl_path_join(tap_tmpdir(), "big");
    gl_mkdir_p(dir, NULL);
    ndocs = (uint64_t)NSHARDS * DOCS_PER_SHARD;
    doc_start = malloc((ndocs + 1) * sizeof *doc_start);
    doc_start[0] = 0;
    for (uint64_t d = 0; d < ndocs; d++)
        doc_start[d + 1] = doc_start[d] + tu_doc_len(SEED, d, MAX_LEN) + 1;
    uint64_t tokens = doc_start[ndocs] - ndocs;

    uint32_t *buf = malloc(MAX_LEN * sizeof *buf);
    int wrote = 1;
    for (int s = 0; s < NSHARDS && wrote; s++) {
        char name[64];
        snprintf(name, sizeof name, "shard-%06d.mdb", s);
        char *p = gl_path_join(dir, name);
        shard_writer_opts_t o = {.tokenizer_name = "test", .tokenizer_hash = 1, .vocab_size = VOCAB,
                                 .eot_id = VOCAB - 1, .map_size = 16u << 20};
        shard_writer_t *w = shard_writer_create(p, &o, &err);
        for (uint64_t d = (uint64_t)s * DOCS_PER_SHARD; w && d < (uint64_t)(s + 1) * DOCS_PER_SHARD; d++) {
            uint32_t len = tu_doc_len(SEED, d, MAX_LEN);
            for (uint32_t j = 0; j < len; j++)
                buf[j] = tu_token(SEED, d, j, VOCAB);
            if (shard_writer_add(w, buf, len, NULL, &err))
                wrote = 0;
        }
        if (!w || shard_writer_seal(&w, &err))
            wrote = 0;
        free(p);
    }
    free(buf);
    ok(wrote, "wrote %d shards: %s", NSHARDS, wrote ? "ok" : err.msg);
    ok(tokens >= 100000000ull, "the dataset holds %llu tokens (>= 100M)", (unsigned long long)tokens);

    shard_dataset_t *d = shard_dataset_open(dir, 0, &err);
    ok(d != NULL, "open: %s", d ? "ok" : err.msg);
    if (!d)
        return tap_done();
    is_int(shard_dataset_shard_count(d), NSHARDS, "shard count");
    is_int(shard_dataset_docs(d), ndocs, "document count");
    is_int(shard_dataset_tokens(d), tokens, "token count");
    is_int(shard_dataset_stream_len(d), doc_start[ndocs], "stream length");

    const uint32_t B = 16, T = 1024;
    shard_sampler_t s;
    ok(shard_sampler_init(&s, d, B, T, 3, 0, 1, 1, &err) == 0, "sampler B=16 T=1024");
    int32_t *x = malloc((size_t)B * (T + 1) * sizeof *x);
    int match = 1;
    for (int step = 0; step < 100 && match; step++) {
        uint64_t e = s.epoch, k = s.next;
        shard_sampler_next(&s, x, &err);
        for (uint32_t b = 0; b < B && match; b++) {
            shard_sampler_t q = s;
            uint64_t kk = k + b, ee = e;
            if (kk >= s.per_rank) {
                ee++;
                kk -= s.per_rank;
            }
            uint64_t w = shard_sampler_window(&q, ee, kk);
            for (uint32_t j = 0; j <= T && match; j++)
                match = x[b * (T + 1) + j] == model_at(w * T + j);
        }
    }
    ok(match, "100 batches of (16, 1025) equal the model's stream");
    free(x);

    /* four ranks cover the epoch exactly once */
    uint64_t W = s.windows;
    uint8_t *seen = calloc(W, 1);
    uint64_t total = 0, dup = 0;
    for (uint32_t rank = 0; rank < 4; rank++) {
        shard_sampler_t r;
        shard_sampler_init(&r, d, B, T, 3, rank, 4, 1, &err);
        for (uint64_t k = 0; k < r.per_rank; k++) {
            uint64_t w = shard_sampler_window(&r, 0, k);
            dup += seen[w]++ != 0;
            total++;
        }
    }
    ok(dup == 0 && total == W - W % 4, "4 ranks: %llu windows, no window twice (of %llu)", (unsigned long long)total,
       (unsigned long long)W);
    free(seen);

    ok(shard_verify(shard_dataset_shard(d, NSHARDS - 1), &err) == 0, "verify the last shard: %s",
       err.msg[0] ? err.msg : "ok");
    shard_dataset_close(&d);
    free(doc_start);
    free(dir);
    return tap_done();
}
