/* shard_util.h — deterministic synthetic documents for the shard tests.
 *
 * Document d has doc_len(d) tokens, token j being doc_token(d, j): pure
 * functions of (seed, d, j), so a test can check any read of a dataset of
 * hundreds of millions of tokens against this naive model without keeping
 * the tokens anywhere.
 */
#ifndef GL_TEST_SHARD_UTIL_H
#define GL_TEST_SHARD_UTIL_H

#include <stdint.h>

static inline uint64_t tu_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Lengths 0..max_len-1, with some empty documents. */
static inline uint32_t tu_doc_len(uint64_t seed, uint64_t d, uint32_t max_len)
{
    uint64_t h = tu_mix(seed ^ (d * 0x100000001b3ull));
    if (h % 97 == 0)
        return 0;
    return (uint32_t)(h % max_len);
}

/* A token in [0, vocab - 1): never the end-of-text id vocab - 1. */
static inline uint32_t tu_token(uint64_t seed, uint64_t d, uint64_t j, uint32_t vocab)
{
    return (uint32_t)(tu_mix(seed * 31 + tu_mix(d) + j) % (vocab - 1));
}

#endif
