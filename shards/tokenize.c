/* tokenize.c — the tokenizer behind `shards pack`, `cat` and `import`.
 *
 * Either a vocabulary loaded by the tokenizer component, or the built-in
 * byte-level tokenizer (ids 0-255 are bytes, 256 is end-of-text) that needs
 * no file. Both encode many documents at once: the vocabulary over all
 * cores through tok_encode_batch.
 */
#include "shards/internal.h"

#include <stdlib.h>

int shard_tokenizer_load(shard_tokenizer_t *t, const char *spec, int chat_roles, gl_err_t *err)
{
    memset(t, 0, sizeof *t);
    if (!spec || !strcmp(spec, SHARD_BYTES_TOKENIZER)) {
        snprintf(t->name, sizeof t->name, "%s", SHARD_BYTES_TOKENIZER);
        t->hash = shard_bytes_tokenizer_hash();
        t->vocab_size = SHARD_BYTES_VOCAB;
        t->eot = SHARD_BYTES_EOT;
        return GL_OK;
    }
    tok_load_opts_t o = {.chat_roles = chat_roles};
    t->vocab = tok_vocab_load(spec, &o, err);
    if (!t->vocab)
        return err ? err->code : GL_EINVAL;
    int64_t eot = tok_eot_id(t->vocab);
    if (eot < 0) {
        tok_vocab_free(&t->vocab);
        return gl_err_set(err, GL_EINVAL, "%s: the vocabulary has no <|endoftext|> token to join documents", spec);
    }
    snprintf(t->name, sizeof t->name, "%s", tok_vocab_name(t->vocab));
    t->hash = tok_vocab_hash(t->vocab);
    t->vocab_size = tok_vocab_size(t->vocab);
    t->eot = (uint32_t)eot;
    return GL_OK;
}

void shard_tokenizer_free(shard_tokenizer_t *t)
{
    tok_vocab_free(&t->vocab);
}

shard_writer_opts_t shard_tokenizer_writer_opts(const shard_tokenizer_t *t, Gptline__RecordKind kind)
{
    shard_writer_opts_t o = {0};
    o.kind = kind;
    o.tokenizer_name = t->name;
    o.tokenizer_hash = t->hash;
    o.vocab_size = t->vocab_size;
    o.eot_id = t->eot;
    return o;
}

int shard_tokenizer_encode_batch(const shard_tokenizer_t *t, const tok_doc_t *docs, size_t n, tok_ids_t *outs,
                                 gl_err_t *err)
{
    if (t->vocab)
        return tok_encode_batch(t->vocab, docs, n, TOK_ALLOW_NONE, 0, outs, err);
    for (size_t i = 0; i < n; i++) {
        int rc = tok_ids_reserve(&outs[i], docs[i].len, err);
        if (rc)
            return rc;
        const uint8_t *b = docs[i].text;
        for (size_t j = 0; j < docs[i].len; j++)
            outs[i].ids[outs[i].n++] = b[j];
    }
    return GL_OK;
}

int shard_tokenizer_check(const shard_tokenizer_t *t, const Gptline__TokenizerId *id, const char *what,
                          gl_err_t *err)
{
    if (!id || id->hash != t->hash || id->vocab_size != t->vocab_size)
        return gl_err_set(err, GL_EMISMATCH, "%s was tokenized by '%s' (%u tokens), not by '%s' (%u tokens)", what,
                          id ? id->name : "?", id ? id->vocab_size : 0, t->name, t->vocab_size);
    return GL_OK;
}

int shard_tokenizer_decode(const shard_tokenizer_t *t, const shard_tokens_t *tk, uint8_t **buf, size_t *len,
                           size_t *cap, gl_err_t *err)
{
    uint32_t *ids = malloc((tk->n ? tk->n : 1) * sizeof *ids);
    if (!ids)
        return gl_err_set(err, GL_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < tk->n; i++)
        ids[i] = shard_token_at(tk, i);
    int rc = GL_OK;
    if (t->vocab) {
        rc = tok_decode(t->vocab, ids, tk->n, buf, len, cap, err);
    } else {
        if (*len + tk->n > *cap) {
            size_t nc = (*len + tk->n) * 2;
            uint8_t *nb = realloc(*buf, nc);
            if (!nb) {
                free(ids);
                return gl_err_set(err, GL_ENOMEM, "out of memory");
            }
            *buf = nb;
            *cap = nc;
        }
        for (uint64_t i = 0; i < tk->n; i++) {
            if (ids[i] > 255) {
                rc = gl_err_set(err, GL_ERANGE, "id %u is not a byte", ids[i]);
                break;
            }
            (*buf)[(*len)++] = (uint8_t)ids[i];
        }
    }
    free(ids);
    return rc;
}
