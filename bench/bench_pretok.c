/* bench_pretok.c — pre-tokenization speed: the hand-written scanners
 * against the reference matcher and against PCRE2-JIT running the same
 * regex, single thread, on the same real text.
 *
 * The text is the shared tokenizer texts (Shakespeare, C headers, web
 * pages, Wikipedia XML, the Unicode stress text) concatenated and repeated
 * up to at least 10 MB; the scanners keep no state between calls, so the
 * repetition measures the same thing as fresh text of that mix. The text is
 * split in 32 KB blocks, each timed as the best of 7 passes (2 for the
 * reference, which is timed on the first 2 MB only: it is slow by design),
 * so that time taken by other processes on a shared machine stays out. Prints MB/s and ratios; the piece
 * counts are printed too, as a check that every contender split the text.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretok.h"
#include "common/common.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_BYTES (10u << 20)
#define REF_BYTES (2u << 20)

static const char *const TEXTS[] = {"c-headers", "tinyshakespeare", "unicode-stress", "web-html",
                                    "wiki-xml"};

typedef size_t (*next_fn)(tok_pretok_t, const uint8_t *, size_t, size_t);

/* One contender: a scanner (f) or a PCRE2 pattern (re). */
typedef struct {
    next_fn f;
    tok_pretok_t p;
    pcre2_code *re;
    pcre2_match_data *md;
} contender;

/* Splits one block; returns the number of pieces. */
static size_t split_block(const contender *c, const uint8_t *s, size_t len)
{
    size_t pos = 0, n = 0;
    if (c->f) {
        while (pos < len) {
            pos += c->f(c->p, s, len, pos);
            n++;
        }
        return n;
    }
    while (pos < len) {
        if (pcre2_jit_match(c->re, s, len, pos, 0, c->md, NULL) < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        pos = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
        n++;
    }
    return n;
}

/* Seconds to split s[0..len) block by block, each block timed as the best
 * of passes runs: the machine is shared, and the minimum leaves out the
 * time other processes took. *pieces gets the piece count. */
static double timed_split(const contender *c, const uint8_t *s, size_t len, int passes, size_t *pieces)
{
    const size_t block = 32 * 1024;
    double total = 0;
    *pieces = 0;
    for (size_t off = 0; off < len; off += block) {
        size_t n = len - off < block ? len - off : block, count = 0;
        double best = 1e30;
        for (int r = 0; r < passes; r++) {
            double t0 = gl_now();
            count = split_block(c, s + off, n);
            double t = gl_now() - t0;
            if (t < best)
                best = t;
        }
        total += best;
        *pieces += count;
    }
    return total;
}

int main(void)
{
    const char *dir = getenv("GL_DATA");
    if (!dir)
        dir = "../shared/data";
    size_t cap = 0, len = 0;
    uint8_t *text = NULL;
    char *parts[5] = {0};
    size_t part_len[5] = {0};
    for (int t = 0; t < 5; t++) {
        char path[512];
        gl_err_t err = {0};
        snprintf(path, sizeof path, "%s/tokenizers/texts/%s.txt", dir, TEXTS[t]);
        if (gl_read_file(path, (size_t)1 << 30, &parts[t], &part_len[t], &err) != 0) {
            printf("bench_pretok: skipped, %s\n", err.msg);
            return 0;
        }
    }
    while (len < MIN_BYTES) {
        for (int t = 0; t < 5; t++) {
            if (len + part_len[t] > cap) {
                cap = (len + part_len[t]) * 2;
                text = gl_xrealloc(text, cap);
            }
            memcpy(text + len, parts[t], part_len[t]);
            len += part_len[t];
        }
    }
    for (int t = 0; t < 5; t++)
        free(parts[t]);

    printf("pre-tokenization, single thread, %.1f MB of real text (shared tokenizer texts, repeated)\n",
           len / 1e6);
    printf("%-12s %12s %12s %12s %10s %10s\n", "pattern", "fast MB/s", "ref MB/s", "PCRE2-JIT",
           "fast/ref", "fast/PCRE2");
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    for (int p = TOK_PRETOK_GPT2; p <= TOK_PRETOK_O200K; p++) {
        size_t fast_pieces, ref_pieces, pcre_pieces = 0;
        contender fast = {tok_pretok_next, (tok_pretok_t)p, NULL, NULL};
        double tf = timed_split(&fast, text, len, 7, &fast_pieces);
        contender ref = {tok_pretok_ref_next, (tok_pretok_t)p, NULL, NULL};
        double tr = timed_split(&ref, text, REF_BYTES, 2, &ref_pieces);

        int code;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)tok_pretok_regex((tok_pretok_t)p), PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
        double tp = 0;
        contender pc = {NULL, (tok_pretok_t)p, re, md};
        if (re && pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0)
            tp = timed_split(&pc, text, len, 7, &pcre_pieces);
        pcre2_code_free(re);

        double mf = len / tf / 1e6, mr = REF_BYTES / tr / 1e6, mp = tp > 0 ? len / tp / 1e6 : 0;
        printf("%-12s %12.1f %12.1f %12.1f %9.1fx %9.1fx\n", tok_pretok_name((tok_pretok_t)p), mf, mr, mp,
               mf / mr, mp > 0 ? mf / mp : 0);
        printf("%-12s pieces: fast %zu, PCRE2 %zu (PCRE2 has older Unicode tables)\n", "", fast_pieces,
               pcre_pieces);
    }
    pcre2_match_data_free(md);
    free(text);
    return 0;
}
