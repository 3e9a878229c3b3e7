/* minhash.c — document fingerprints for exact and near-duplicate removal.
 *
 * Exact: XXH3-64 of the final text. Near: a MinHash signature of 112
 * values over word 5-gram shingles, as FineWeb computes them (text
 * lowercased, punctuation dropped, whitespace collapsed; 14 bands of 8
 * rows, so two documents share a band with probability ~0.5 at Jaccard
 * similarity 0.72 and ~0.99 at 0.85). Each shingle is hashed once with
 * XXH3; the 112 permutations are multiply-shift hashes of that 64-bit
 * value folded to 32 bits: (h xor x_k) * m_k mod 2^32 with a random mask
 * x_k and odd multiplier m_k from a fixed seed — a bijection of the 32-bit
 * hashes per row, two 32-bit operations per shingle and row in a loop the
 * compiler vectorises. (The test checks the estimates against the exact
 * Jaccard similarity; 64-bit multiply-add-shift was twice as slow.)
 */
#include "ingest/internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

uint64_t ingest_text_hash(const char *text, size_t len) { return XXH3_64bits(text, len); }

static uint32_t mh_x[INGEST_MH_PERM], mh_m[INGEST_MH_PERM];
static int mh_ready;

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void mh_init(void)
{
    uint64_t s = 0x6770746c696e6531ull; /* fixed: signatures must agree across workers and runs */
    for (int k = 0; k < INGEST_MH_PERM; k++) {
        uint64_t r = splitmix(&s);
        mh_x[k] = (uint32_t)r;
        mh_m[k] = (uint32_t)(r >> 32) | 1;
    }
    mh_ready = 1;
}

/* Row k's minimum over the shingle hashes: a min-reduction over a flat
 * array, which the compiler vectorises (8 lanes with AVX2, where the CPU
 * has it; the default clone is the portable loop). */
__attribute__((target_clones("avx2", "default")))
static void mh_rows(const uint32_t *hs, size_t n, uint32_t *mins)
{
    for (int k = 0; k < INGEST_MH_PERM; k++) {
        uint32_t x = mh_x[k], m = mh_m[k], lo = UINT32_MAX;
        for (size_t i = 0; i < n; i++) {
            uint32_t v = (hs[i] ^ x) * m;
            lo = v < lo ? v : lo;
        }
        mins[k] = lo;
    }
}

void ingest_minhash(const char *text, size_t len, uint32_t sig[INGEST_MH_PERM])
{
    if (!mh_ready)
        mh_init();
    /* normalise: lowercase words of letters/digits/non-ASCII, single spaces */
    char *norm = gl_xmalloc(len + 1);
    size_t *starts = gl_xmalloc((len / 2 + 2) * sizeof *starts);
    size_t n = 0, words = 0;
    int inword = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (isalnum(c) || c >= 0x80) {
            if (!inword) {
                if (n)
                    norm[n++] = ' ';
                starts[words++] = n;
                inword = 1;
            }
            norm[n++] = (char)tolower(c);
        } else {
            inword = 0;
        }
    }
    starts[words] = n + 1; /* one past the last word's end + its space */
    size_t shingles = words >= INGEST_MH_NGRAM ? words - INGEST_MH_NGRAM + 1 : 1;
    uint32_t *hs = gl_xmalloc(shingles * sizeof *hs);
    for (size_t i = 0; i < shingles; i++) {
        size_t s = words ? starts[i] : 0;
        size_t e = words >= INGEST_MH_NGRAM ? starts[i + INGEST_MH_NGRAM] - 1 : n;
        uint64_t h64 = XXH3_64bits(norm + s, e > s ? e - s : 0);
        hs[i] = (uint32_t)(h64 ^ (h64 >> 32));
    }
    uint32_t mins[INGEST_MH_PERM];
    mh_rows(hs, shingles, mins);
    free(hs);
    memcpy(sig, mins, sizeof mins);
    free(norm);
    free(starts);
}
