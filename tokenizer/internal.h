/* internal.h — the tokenizer's private structures, shared by its .c files. */
#ifndef GL_TOKENIZER_INTERNAL_H
#define GL_TOKENIZER_INTERNAL_H

#include "tokenizer/tokenizer.h"

#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define TOK_NONE UINT32_MAX

typedef struct {
    char *name;
    size_t len;
    uint32_t id;
} tok_special_t;

/* One slot of the open-addressing table bytes -> id. */
typedef struct {
    uint32_t id;  /* TOK_NONE when empty */
    uint32_t tag; /* high half of the hash, to skip most memcmps */
} tok_slot_t;

struct tok_vocab {
    char *name;
    tok_pretok_t pattern;
    uint32_t n_ids;      /* ordinary id space 0..n_ids-1 (gaps have len 0) */
    uint32_t n_ordinary; /* ids that have bytes */
    uint8_t *bytes;      /* every token's bytes, flat */
    uint32_t *start;     /* token id: bytes[start[id] .. start[id] + len[id]) */
    uint32_t *len;
    tok_slot_t *slots;
    uint32_t mask; /* slots - 1 (a power of two minus one) */
    uint32_t byte_id[256];
    tok_special_t special[TOK_MAX_SPECIALS];
    size_t n_special;
    uint32_t size; /* max id + 1, specials included */
    uint64_t hash;
};

static inline uint64_t tok_hash_bytes(const uint8_t *p, size_t n) { return XXH3_64bits(p, n); }

/* Id of bytes p[0..n) or TOK_NONE. The innermost lookup of encoding. */
static inline uint32_t tok_lookup(const tok_vocab_t *v, const uint8_t *p, size_t n)
{
    uint64_t h = tok_hash_bytes(p, n);
    uint32_t tag = (uint32_t)(h >> 32), i = (uint32_t)h & v->mask;
    for (;;) {
        const tok_slot_t *s = &v->slots[i];
        if (s->id == TOK_NONE)
            return TOK_NONE;
        if (s->tag == tag && v->len[s->id] == n && !memcmp(v->bytes + v->start[s->id], p, n))
            return s->id;
        i = (i + 1) & v->mask;
    }
}

/* Builds the lookup table, byte_id and the hash; checks that every single
 * byte is a token and no two tokens are equal (GL_ECORRUPT naming what,
 * "where" prefixes the message). */
int tok_vocab_index(tok_vocab_t *v, const char *where, gl_err_t *err);
/* Recomputes v->hash (after specials change). */
void tok_vocab_rehash(tok_vocab_t *v);

/* BPE of one piece using only tokens of rank < max_rank: appends the ids to
 * out (TOK_NONE never appears as all single bytes are tokens). */
int tok_bpe_piece(const tok_vocab_t *v, const uint8_t *p, size_t n, uint32_t max_rank, tok_ids_t *out,
                  gl_err_t *err);


#endif
