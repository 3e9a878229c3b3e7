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

#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL /* shingles are short: inline the hash */
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

/* Each row's minimum over the shingle hashes: min-reductions over a flat
 * array, four rows per pass so each hash is loaded once for four, which
 * the compiler vectorises (16 lanes with AVX-512, 8 with AVX2, where the
 * CPU has them; the default clone is the portable loop). */
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
static void mh_rows(const uint32_t *hs, size_t n, uint32_t *mins)
{
    for (int k = 0; k < INGEST_MH_PERM; k += 4) {
        uint32_t x0 = mh_x[k], x1 = mh_x[k + 1], x2 = mh_x[k + 2], x3 = mh_x[k + 3];
        uint32_t m0 = mh_m[k], m1 = mh_m[k + 1], m2 = mh_m[k + 2], m3 = mh_m[k + 3];
        uint32_t lo0 = UINT32_MAX, lo1 = UINT32_MAX, lo2 = UINT32_MAX, lo3 = UINT32_MAX;
        for (size_t i = 0; i < n; i++) {
            uint32_t h = hs[i], v0 = (h ^ x0) * m0, v1 = (h ^ x1) * m1, v2 = (h ^ x2) * m2, v3 = (h ^ x3) * m3;
            lo0 = v0 < lo0 ? v0 : lo0;
            lo1 = v1 < lo1 ? v1 : lo1;
            lo2 = v2 < lo2 ? v2 : lo2;
            lo3 = v3 < lo3 ? v3 : lo3;
        }
        mins[k] = lo0;
        mins[k + 1] = lo1;
        mins[k + 2] = lo2;
        mins[k + 3] = lo3;
    }
}

/* Per byte: its lowercase (ASCII letters; digits and bytes >= 0x80 are
 * themselves). */
static unsigned char mh_lower[256];
__attribute__((constructor)) static void mh_tables(void)
{
    for (int c = 0; c < 256; c++)
        mh_lower[c] = (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

/* Scratch kept between calls (per thread); freed after a huge text. */
static _Thread_local struct {
    char *p;
    size_t cap;
} mh_mem;

void ingest_minhash(const char *text, size_t len, uint32_t sig[INGEST_MH_PERM])
{
    if (!mh_ready)
        mh_init();
    /* normalise: lowercase words of letters/digits/non-ASCII, single
     * spaces; one buffer holds the text, the word starts and the shingle
     * hashes */
    size_t maxw = len / 2 + 2, need = len + 1 + maxw * (sizeof(size_t) + sizeof(uint32_t));
    if (need > mh_mem.cap) {
        free(mh_mem.p);
        mh_mem.p = gl_xmalloc(need);
        mh_mem.cap = need;
    }
    size_t *starts = (size_t *)(void *)mh_mem.p;
    uint32_t *hs = (uint32_t *)(starts + maxw);
    char *norm = (char *)(hs + maxw);
    const unsigned char *u = (const unsigned char *)text;
    size_t n = 0, words = 0, ws = 0;
    int in = 0;
    /* words from 64-byte masks of word bytes: a word starts at a word
     * byte after a non-word one and ends at the next non-word byte */
    for (size_t base = 0; base < len; base += 64) {
        size_t m = len - base < 64 ? len - base : 64;
        uint64_t wm = ingest_bytemask(u + base, m, INGEST_BM_WORD, 0);
        uint64_t after = wm << 1 | (uint64_t)in;
        uint64_t st = wm & ~after, en = ~wm & after;
        for (;;) {
            if (in) {
                if (!en)
                    break;
                size_t e = base + (size_t)__builtin_ctzll(en);
                en &= en - 1;
                for (size_t j = ws; j < e; j++)
                    norm[n++] = (char)mh_lower[u[j]];
                in = 0;
            } else {
                if (!st)
                    break;
                ws = base + (size_t)__builtin_ctzll(st);
                st &= st - 1;
                if (n)
                    norm[n++] = ' ';
                starts[words++] = n;
                in = 1;
            }
        }
    }
    if (in)
        for (size_t j = ws; j < len; j++)
            norm[n++] = (char)mh_lower[u[j]];
    starts[words] = n + 1; /* one past the last word's end + its space */
    size_t shingles = words >= INGEST_MH_NGRAM ? words - INGEST_MH_NGRAM + 1 : 1;
    for (size_t k = 0; k < shingles; k++) {
        size_t s = words ? starts[k] : 0;
        size_t e = words >= INGEST_MH_NGRAM ? starts[k + INGEST_MH_NGRAM] - 1 : n;
        uint64_t h64 = XXH3_64bits(norm + s, e > s ? e - s : 0);
        hs[k] = (uint32_t)(h64 ^ (h64 >> 32));
    }
    mh_rows(hs, shingles, sig);
    if (mh_mem.cap > ((size_t)4 << 20)) {
        free(mh_mem.p);
        mh_mem.p = NULL;
        mh_mem.cap = 0;
    }
}
