/* tok.c — the tokenizer seam of the ingest worker.
 *
 * The worker sees a tokenizer only through this file: a name and identity
 * hash for the shard manifest, vocabulary size, end-of-text id and a batch
 * encoder. Two kinds: "bytes", the shard library's byte-level tokenizer
 * (ids 0-255, end-of-text 256, the identity `shards pack` writes, so such
 * datasets mix), and a BPE vocabulary file that tokenizer/ loads (tiktoken
 * rank files, GPT-2's encoder.json, gptline's .gltok), encoded with
 * tok_encode_batch on one thread — a worker is one process per core, so
 * cores are used by running more ranks, not threads. Special-token text in
 * documents is encoded as ordinary text: no document can inject an
 * end-of-text.
 */
#include "ingest/internal.h"
#include "shards/shards.h"
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

struct ingest_tok {
    char name[64];
    uint64_t hash;
    uint32_t vocab, eot;
    tok_vocab_t *bpe;        /* NULL for bytes */
    tok_ids_t *outs;         /* per document of a batch */
    size_t outs_cap;
};

ingest_tok_t *ingest_tok_open(const char *spec, gl_err_t *err)
{
    if (!spec || !*spec) {
        gl_err_set(err, GL_EINVAL, "no tokenizer given ('bytes' or a vocabulary file)");
        return NULL;
    }
    ingest_tok_t *t = gl_xcalloc(1, sizeof *t);
    if (!strcmp(spec, SHARD_BYTES_TOKENIZER)) {
        snprintf(t->name, sizeof t->name, "%s", SHARD_BYTES_TOKENIZER);
        t->hash = shard_bytes_tokenizer_hash();
        t->vocab = SHARD_BYTES_VOCAB;
        t->eot = SHARD_BYTES_EOT;
        return t;
    }
    t->bpe = tok_vocab_load(spec, NULL, err);
    if (!t->bpe) {
        free(t);
        return NULL;
    }
    int64_t eot = tok_eot_id(t->bpe);
    if (eot < 0) {
        gl_err_set(err, GL_EINVAL, "%s: the vocabulary has no <|endoftext|> to join documents", spec);
        ingest_tok_free(&t);
        return NULL;
    }
    snprintf(t->name, sizeof t->name, "%s", tok_vocab_name(t->bpe));
    t->hash = tok_vocab_hash(t->bpe);
    t->vocab = tok_vocab_size(t->bpe);
    t->eot = (uint32_t)eot;
    return t;
}

void ingest_tok_free(ingest_tok_t **t)
{
    if (!t || !*t)
        return;
    for (size_t i = 0; i < (*t)->outs_cap; i++)
        tok_ids_free(&(*t)->outs[i]);
    free((*t)->outs);
    tok_vocab_free(&(*t)->bpe);
    free(*t);
    *t = NULL;
}

const char *ingest_tok_name(const ingest_tok_t *t) { return t->name; }
uint64_t ingest_tok_hash(const ingest_tok_t *t) { return t->hash; }
uint32_t ingest_tok_vocab(const ingest_tok_t *t) { return t->vocab; }
uint32_t ingest_tok_eot(const ingest_tok_t *t) { return t->eot; }

static void reserve_store(uint32_t **store, size_t *store_cap, size_t total)
{
    if (total > *store_cap) {
        *store = gl_xrealloc(*store, total * sizeof **store);
        *store_cap = total;
    }
}

int ingest_tok_encode_batch(ingest_tok_t *t, const char *const *texts, const size_t *lens, size_t n,
                            uint32_t **store, size_t *store_cap, size_t *offsets, gl_err_t *err)
{
    size_t total = 0;
    if (!t->bpe) {
        for (size_t i = 0; i < n; i++)
            total += lens[i];
        reserve_store(store, store_cap, total);
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
    if (n > t->outs_cap) {
        t->outs = gl_xrealloc(t->outs, n * sizeof *t->outs);
        memset(t->outs + t->outs_cap, 0, (n - t->outs_cap) * sizeof *t->outs);
        t->outs_cap = n;
    }
    tok_doc_t *docs = gl_xmalloc((n ? n : 1) * sizeof *docs);
    for (size_t i = 0; i < n; i++) {
        docs[i].text = texts[i];
        docs[i].len = lens[i];
        t->outs[i].n = 0;
    }
    int rc = tok_encode_batch(t->bpe, docs, n, TOK_ALLOW_NONE, 1, t->outs, err);
    free(docs);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        total += t->outs[i].n;
    reserve_store(store, store_cap, total);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        offsets[i] = at;
        if (t->outs[i].n)
            memcpy(*store + at, t->outs[i].ids, t->outs[i].n * sizeof **store);
        at += t->outs[i].n;
    }
    offsets[n] = at;
    return GL_OK;
}
