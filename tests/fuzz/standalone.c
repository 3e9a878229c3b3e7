/* standalone.c — runs a libFuzzer target (LLVMFuzzerTestOneInput) without
 * libFuzzer, so `make test` exercises every fuzz target with any compiler.
 *
 * With file arguments it replays them (a saved corpus or crash). Without,
 * it feeds the target a deterministic sequence: a few hundred seeded
 * pseudo-random inputs, each followed by mutations of the last inputs (bit
 * flips, "interesting" bytes, inserted and deleted ranges, duplicated
 * chunks, splices of two inputs), as a fuzzer would. The target signals a
 * failure by crashing (abort, sanitizer report); reaching the end prints one
 * passing TAP line. GL_FUZZ_RUNS=N changes the number of random seeds
 * (default 300); the whole run stays well under 5 s at -O2. A target that
 * defines gl_fuzz_seed (fuzz.h) also gets its well-formed seeds and
 * mutations of them, which reach deeper than random bytes into formats
 * with magic numbers and length fields.
 */
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUT 4096

static uint64_t state = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static size_t below(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

/* Bytes that tend to matter to parsers and text code. */
static const uint8_t INTERESTING[] = {0x00, 0x01, 0x7F, 0x80, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED,
                                      0xEF, 0xF0, 0xF4, 0xF5, 0xFF, ' ', '\t', '\n', '\r', '\'',
                                      '"', '/', '\\', '<', '|', '0', '9', 'a', 'z', 'A', 'Z'};

/* A random input: mixes runs of ASCII text, UTF-8 sequences and raw bytes. */
static size_t random_input(uint8_t *buf)
{
    size_t len = below(MAX_INPUT / 4) + (below(8) == 0 ? below(MAX_INPUT / 2) : 0);
    size_t i = 0;
    while (i < len) {
        size_t run = 1 + below(16);
        int kind = (int)below(4);
        for (size_t k = 0; k < run && i < len; k++) {
            switch (kind) {
            case 0: buf[i++] = (uint8_t)(0x20 + below(0x5F)); break;
            case 1: buf[i++] = INTERESTING[below(sizeof INTERESTING)]; break;
            case 2: buf[i++] = (uint8_t)rnd(); break;
            default: { /* a well-formed UTF-8 sequence of a random scalar value */
                uint32_t cp = (uint32_t)below(0x110000);
                if (cp >= 0xD800 && cp <= 0xDFFF)
                    cp -= 0x800;
                if (cp < 0x80 && i + 1 <= len) {
                    buf[i++] = (uint8_t)cp;
                } else if (cp < 0x800 && i + 2 <= len) {
                    buf[i++] = (uint8_t)(0xC0 | cp >> 6);
                    buf[i++] = (uint8_t)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000 && i + 3 <= len) {
                    buf[i++] = (uint8_t)(0xE0 | cp >> 12);
                    buf[i++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                    buf[i++] = (uint8_t)(0x80 | (cp & 0x3F));
                } else if (i + 4 <= len) {
                    buf[i++] = (uint8_t)(0xF0 | cp >> 18);
                    buf[i++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
                    buf[i++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                    buf[i++] = (uint8_t)(0x80 | (cp & 0x3F));
                } else {
                    buf[i++] = (uint8_t)rnd();
                }
            }
            }
        }
    }
    return len;
}

/* One mutation of buf (len bytes, capacity MAX_INPUT) in place; other is a
 * second input to splice from. Returns the new length. */
static size_t mutate(uint8_t *buf, size_t len, const uint8_t *other, size_t other_len)
{
    switch (below(6)) {
    case 0: /* flip a bit */
        if (len)
            buf[below(len)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* set an interesting byte */
        if (len)
            buf[below(len)] = INTERESTING[below(sizeof INTERESTING)];
        break;
    case 2: { /* insert random bytes */
        size_t at = below(len + 1), n = 1 + below(8);
        if (len + n > MAX_INPUT)
            break;
        memmove(buf + at + n, buf + at, len - at);
        for (size_t k = 0; k < n; k++)
            buf[at + k] = (uint8_t)rnd();
        len += n;
        break;
    }
    case 3: { /* delete a range */
        if (!len)
            break;
        size_t at = below(len), n = 1 + below(len - at);
        memmove(buf + at, buf + at + n, len - at - n);
        len -= n;
        break;
    }
    case 4: { /* duplicate a chunk many times (long runs) */
        if (!len)
            break;
        size_t at = below(len), n = 1 + below(len - at < 8 ? len - at : 8);
        size_t times = 1 + below(256);
        uint8_t chunk[8];
        memcpy(chunk, buf + at, n);
        while (times-- && len + n <= MAX_INPUT) {
            memmove(buf + at + n, buf + at, len - at);
            memcpy(buf + at, chunk, n);
            len += n;
        }
        break;
    }
    default: { /* splice: our head, the other's tail */
        size_t cut = below(len + 1), from = below(other_len + 1);
        size_t n = other_len - from;
        if (cut + n > MAX_INPUT)
            n = MAX_INPUT - cut;
        memcpy(buf + cut, other + from, n);
        len = cut + n;
    }
    }
    return len;
}

static int replay(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "%s: cannot open %s\n", argv[0], argv[i]);
            return 1;
        }
        static uint8_t data[1 << 20];
        size_t n = fread(data, 1, sizeof data, f);
        fclose(f);
        LLVMFuzzerTestOneInput(data, n);
    }
    printf("1..1\nok 1 - replayed %d inputs\n", argc - 1);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return replay(argc, argv);
    const char *env = getenv("GL_FUZZ_RUNS");
    long seeds = env ? atol(env) : 300;
    static uint8_t cur[MAX_INPUT], prev[MAX_INPUT], tmp[MAX_INPUT];
    size_t prev_len = 0;
    unsigned long runs = 0;

    LLVMFuzzerTestOneInput(cur, 0);
    runs++;
    for (long s = 0; s < seeds; s++) {
        size_t len = random_input(cur);
        LLVMFuzzerTestOneInput(cur, len);
        runs++;
        for (int m = 0; m < 4; m++) {
            size_t n = len;
            memcpy(tmp, cur, n);
            for (size_t k = 1 + below(4); k-- > 0;)
                n = mutate(tmp, n, prev, prev_len);
            LLVMFuzzerTestOneInput(tmp, n);
            runs++;
        }
        memcpy(prev, cur, len);
        prev_len = len;
    }
    /* the target's own seeds, each with mutations spliced from the others */
    size_t nseeds = 0;
    static uint8_t seed_buf[MAX_INPUT];
    size_t seed_len = 0;
    for (size_t i = 0; gl_fuzz_seed; i++) {
        size_t n;
        uint8_t *sd = gl_fuzz_seed(i, &n);
        if (!sd)
            break;
        if (n > MAX_INPUT)
            n = MAX_INPUT;
        LLVMFuzzerTestOneInput(sd, n);
        runs++;
        for (int m = 0; m < 60; m++) {
            size_t k = n;
            memcpy(tmp, sd, n);
            for (size_t r = 1 + below(3); r-- > 0;)
                k = mutate(tmp, k, seed_len ? seed_buf : sd, seed_len ? seed_len : n);
            LLVMFuzzerTestOneInput(tmp, k);
            runs++;
        }
        memcpy(seed_buf, sd, n);
        seed_len = n;
        free(sd);
        nseeds++;
    }
    printf("1..1\nok 1 - %lu inputs (%ld random seeds, %zu target seeds and their mutations), no failure\n", runs,
           seeds, nseeds);
    return 0;
}
