/* standalone.c — runs a libFuzzer target without libFuzzer, so every
 * `make test` exercises each fuzz target (a minimal driver; the full one
 * may replace it).
 *
 * With file arguments, each file is one input (reproducing a crash).
 * Without, a seeded random-mutation run: the target's seed corpus (the
 * optional gl_fuzz_seed_corpus) and random bytes, mutated by bit flips,
 * byte sets, inserts, deletes and splices, for GL_FUZZ_RUNS inputs
 * (default 20000) from GL_FUZZ_SEED (default 1). Prints TAP.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void gl_fuzz_seed_corpus(void (*add)(const uint8_t *, size_t)) __attribute__((weak));

#define MAX_INPUT 4096
#define MAX_SEEDS 64

static uint8_t *seeds[MAX_SEEDS];
static size_t seed_len[MAX_SEEDS], n_seeds;
static uint64_t rs;

static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 11);
}

static void add_seed(const uint8_t *d, size_t n)
{
    if (n_seeds == MAX_SEEDS || n > MAX_INPUT)
        return;
    seeds[n_seeds] = malloc(n ? n : 1);
    memcpy(seeds[n_seeds], d, n);
    seed_len[n_seeds++] = n;
}

static size_t mutate(uint8_t *buf, size_t n)
{
    static const char interesting[] = "0123456789{}[]\",:-.eE \xff";
    int k = 1 + rnd() % 4;
    while (k--) {
        switch (rnd() % 6) {
        case 0:   /* flip a bit */
            if (n)
                buf[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 1:   /* set a byte to a JSON-ish character */
            if (n)
                buf[rnd() % n] = (uint8_t)interesting[rnd() % (sizeof interesting - 1)];
            break;
        case 2:   /* insert a byte */
            if (n < MAX_INPUT) {
                size_t at = rnd() % (n + 1);
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = (uint8_t)rnd();
                n++;
            }
            break;
        case 3:   /* delete a run */
            if (n) {
                size_t at = rnd() % n, len = 1 + rnd() % 8;
                if (len > n - at)
                    len = n - at;
                memmove(buf + at, buf + at + len, n - at - len);
                n -= len;
            }
            break;
        case 4:   /* splice the tail of a seed */
            if (n_seeds) {
                size_t s = rnd() % n_seeds, at = n ? rnd() % n : 0;
                size_t from = seed_len[s] ? rnd() % seed_len[s] : 0, len = seed_len[s] - from;
                if (at + len > MAX_INPUT)
                    len = MAX_INPUT - at;
                memcpy(buf + at, seeds[s] + from, len);
                if (at + len > n)
                    n = at + len;
            }
            break;
        default:  /* rewrite a leading length field */
            if (n >= 8) {
                uint64_t v = rnd() % (n + 16);
                for (int i = 0; i < 8; i++)
                    buf[i] = (uint8_t)(v >> (8 * i));
            }
        }
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            FILE *f = fopen(argv[i], "rb");
            if (!f) {
                perror(argv[i]);
                return 1;
            }
            static uint8_t buf[1 << 24];
            size_t n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            LLVMFuzzerTestOneInput(buf, n);
        }
        printf("1..1\nok 1 - %d inputs replayed\n", argc - 1);
        return 0;
    }
    const char *e = getenv("GL_FUZZ_RUNS");
    long runs = e ? atol(e) : 20000;
    e = getenv("GL_FUZZ_SEED");
    rs = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(e ? atoll(e) : 1);
    if (gl_fuzz_seed_corpus)
        gl_fuzz_seed_corpus(add_seed);
    static uint8_t buf[MAX_INPUT];
    for (size_t i = 0; i < n_seeds; i++)
        LLVMFuzzerTestOneInput(seeds[i], seed_len[i]);
    for (long r = 0; r < runs; r++) {
        size_t n;
        if (n_seeds && rnd() % 8) {
            size_t s = rnd() % n_seeds;
            memcpy(buf, seeds[s], seed_len[s]);
            n = seed_len[s];
        } else {
            n = rnd() % 64;
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)rnd();
        }
        n = mutate(buf, n);
        /* A copy of exactly n bytes, so reads past the end are caught. */
        uint8_t *in = malloc(n ? n : 1);
        memcpy(in, buf, n);
        LLVMFuzzerTestOneInput(in, n);
        free(in);
    }
    for (size_t i = 0; i < n_seeds; i++)
        free(seeds[i]);
    printf("1..1\nok 1 - %ld mutated inputs and %zu seeds ran\n", runs, n_seeds);
    return 0;
}
