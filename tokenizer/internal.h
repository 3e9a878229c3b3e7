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

/* One slot of the open-addressing table bytes -> id. The first 8 bytes
 * of the token live in the slot, so most lookups (tokens of up to 8
 * bytes) touch one cache line. */
typedef struct {
    uint64_t key; /* the first min(len, 8) bytes, little-endian, zero-padded */
    uint32_t id;  /* TOK_NONE when empty */
    uint32_t len;
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

/* The first min(n, 8) bytes of p as a little-endian integer (n >= 1),
 * without reading past p[n-1]. */
static inline uint64_t tok_key8(const uint8_t *p, size_t n)
{
    uint64_t k;
    if (n >= 8) {
        memcpy(&k, p, 8);
    } else if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + n - 4, 4);
        k = (uint64_t)lo | (uint64_t)hi << (8 * (n - 4));
    } else {
        k = (uint64_t)p[0] | (uint64_t)p[n / 2] << (8 * (n / 2)) | (uint64_t)p[n - 1] << (8 * (n - 1));
    }
    return k;
}

/* tok_key8 where 8 bytes can be read at p (the bytes past p[n-1] are not
 * part of the key): one load and a mask, no branch on n to mispredict. */
static inline uint64_t tok_key8_wide(const uint8_t *p, size_t n)
{
    uint64_t k;
    memcpy(&k, p, 8);
    size_t m = n < 8 ? n : 8;
    return k & (~0ULL >> (64 - 8 * m));
}

/* Slot hash of a token: a multiply-mix of its key for short tokens, XXH3
 * for longer ones. */
static inline uint64_t tok_slot_hash(const uint8_t *p, size_t n, uint64_t key)
{
    if (n > 8)
        return XXH3_64bits(p, n);
    uint64_t h = (key ^ (uint64_t)n << 59) * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 32);
}

/* Id of bytes p[0..n) (n >= 1) with key tok_key8(p, n) and hash
 * tok_slot_hash(p, n, key), or TOK_NONE. */
static inline uint32_t tok_lookup_h(const tok_vocab_t *v, const uint8_t *p, size_t n, uint64_t key, uint64_t h)
{
    uint32_t i = (uint32_t)h & v->mask;
    for (;;) {
        const tok_slot_t *s = &v->slots[i];
        if (s->id == TOK_NONE)
            return TOK_NONE;
        if (s->key == key && s->len == n && (n <= 8 || !memcmp(v->bytes + v->start[s->id] + 8, p + 8, n - 8)))
            return s->id;
        i = (i + 1) & v->mask;
    }
}

/* Id of bytes p[0..n) (n >= 1) or TOK_NONE. The innermost lookup of
 * encoding. */
static inline uint32_t tok_lookup(const tok_vocab_t *v, const uint8_t *p, size_t n)
{
    uint64_t key = tok_key8(p, n);
    return tok_lookup_h(v, p, n, key, tok_slot_hash(p, n, key));
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
