/* standalone.c — runs a fuzz target without libFuzzer, as a TAP test.
 *
 * With file arguments, feeds each file to the target once (reproducing a
 * crash). Without, runs GL_FUZZ_RUNS (default 400) inputs from a fixed
 * seed: random byte strings of random lengths, and mutations (bit flips,
 * byte sets, truncations, insertions, splices) of the target's seeds. A
 * crash or sanitizer report fails the test; the run is deterministic.
 */
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint8_t *mutate(const uint8_t *src, size_t len, size_t *out_len)
{
    size_t cap = len + 64;
    uint8_t *b = malloc(cap);
    memcpy(b, src, len);
    size_t n = len;
    int rounds = 1 + (int)(next() % 4);
    for (int r = 0; r < rounds; r++) {
        switch (next() % 5) {
        case 0: if (n) b[next() % n] ^= (uint8_t)(1u << (next() % 8)); break;
        case 1: if (n) b[next() % n] = (uint8_t)next(); break;
        case 2: if (n) n = next() % n; break;
        case 3:
            if (n < cap) {
                size_t at = n ? next() % n : 0;
                memmove(b + at + 1, b + at, n - at);
                b[at] = (uint8_t)next();
                n++;
            }
            break;
        case 4:
            if (n > 8) {
                size_t a = next() % n, c = next() % n, k = 1 + next() % 8;
                if (a + k <= n && c + k <= n)
                    memmove(b + a, b + c, k);
            }
            break;
        }
    }
    *out_len = n;
    return b;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            FILE *f = fopen(argv[i], "rb");
            if (!f) {
                perror(argv[i]);
                return 2;
            }
            fseek(f, 0, SEEK_END);
            long n = ftell(f);
            fseek(f, 0, SEEK_SET);
            uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
            size_t got = fread(b, 1, (size_t)n, f);
            fclose(f);
            LLVMFuzzerTestOneInput(b, got);
            free(b);
        }
        printf("replayed %d input(s)\n", argc - 1);
        return 0;
    }
    const char *env = getenv("GL_FUZZ_RUNS");
    long runs = env ? atol(env) : 400;
    size_t nseeds = 0;
    uint8_t **seeds = NULL;
    size_t *seed_len = NULL;
    if (gl_fuzz_seed) {
        for (;;) {
            size_t len;
            uint8_t *s = gl_fuzz_seed(nseeds, &len);
            if (!s)
                break;
            seeds = realloc(seeds, (nseeds + 1) * sizeof *seeds);
            seed_len = realloc(seed_len, (nseeds + 1) * sizeof *seed_len);
            seeds[nseeds] = s;
            seed_len[nseeds++] = len;
        }
    }
    printf("1..1\n");
    for (size_t i = 0; i < nseeds; i++)
        LLVMFuzzerTestOneInput(seeds[i], seed_len[i]);
    for (long r = 0; r < runs; r++) {
        size_t len;
        uint8_t *b;
        if (nseeds && next() % 4) {
            size_t k = next() % nseeds;
            b = mutate(seeds[k], seed_len[k], &len);
        } else {
            len = next() % 2048;
            b = malloc(len ? len : 1);
            for (size_t j = 0; j < len; j++)
                b[j] = (uint8_t)next();
        }
        LLVMFuzzerTestOneInput(b, len);
        free(b);
    }
    for (size_t i = 0; i < nseeds; i++)
        free(seeds[i]);
    free(seeds);
    free(seed_len);
    printf("ok 1 - %ld fuzz inputs and %zu seeds ran without a crash\n", runs, nseeds);
    return 0;
}
