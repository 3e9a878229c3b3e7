/* tok.c — the tokenizer seam of the ingest worker.
 *
 * The worker sees a tokenizer only through this file: a name and identity
 * hash for the shard manifest, vocabulary size, end-of-text id and a batch
 * encoder. Today it is the shard library's byte-level tokenizer (ids
 * 0-255, end-of-text 256, the same identity `shards pack` writes), so
 * ingest datasets and packed datasets mix. The BPE tokenizer (branch
 * tok-bpe, tokenizer/tokenizer.h) plugs in here when it lands: a vocab
 * file path as the spec, tok_encode_batch for the batch.
 */
#include "ingest/internal.h"
#include "shards/shards.h"

#include <stdlib.h>
#include <string.h>

struct ingest_tok {
    char name[64];
    uint64_t hash;
    uint32_t vocab, eot;
};

ingest_tok_t *ingest_tok_open(const char *spec, gl_err_t *err)
{
    if (!spec || strcmp(spec, SHARD_BYTES_TOKENIZER)) {
        gl_err_set(err, GL_EUNSUPPORTED,
                   "tokenizer '%s': this build knows only 'bytes' (the BPE tokenizer is not merged yet)",
                   spec ? spec : "(none)");
        return NULL;
    }
    ingest_tok_t *t = gl_xcalloc(1, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", SHARD_BYTES_TOKENIZER);
    t->hash = shard_bytes_tokenizer_hash();
    t->vocab = SHARD_BYTES_VOCAB;
    t->eot = SHARD_BYTES_EOT;
    return t;
}

void ingest_tok_free(ingest_tok_t **t)
{
    if (!t || !*t)
        return;
    free(*t);
    *t = NULL;
}

const char *ingest_tok_name(const ingest_tok_t *t) { return t->name; }
uint64_t ingest_tok_hash(const ingest_tok_t *t) { return t->hash; }
uint32_t ingest_tok_vocab(const ingest_tok_t *t) { return t->vocab; }
uint32_t ingest_tok_eot(const ingest_tok_t *t) { return t->eot; }

int ingest_tok_encode_batch(ingest_tok_t *t, const char *const *texts, const size_t *lens, size_t n,
                            uint32_t **store, size_t *store_cap, size_t *offsets, gl_err_t *err)
{
    (void)t;
    (void)err;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += lens[i];
    if (total > *store_cap) {
        *store = gl_xrealloc(*store, total * sizeof **store);
        *store_cap = total;
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        offsets[i] = at;
        const unsigned char *s = (const unsigned char *)texts[i];
        uint32_t *o = *store + at;
        for (size_t k = 0; k < lens[i]; k++)
            o[k] = s[k];
        at += lens[i];
    }
    offsets[n] = at;
    return GL_OK;
}
