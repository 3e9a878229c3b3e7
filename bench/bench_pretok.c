/* bench_pretok.c — pre-tokenization speed: the hand-written scanners
 * against the reference matcher and against PCRE2-JIT running the same
 * regex, single thread, on the same real text.
 *
 * The text is the shared tokenizer texts (Shakespeare, C headers, web
 * pages, Wikipedia XML, the Unicode stress text) concatenated and repeated
 * up to at least 10 MB; the scanners keep no state between calls, so the
 * repetition measures the same thing as fresh text of that mix. Each
 * measurement is the best of several passes. The reference is timed on the
 * first 2 MB only (it is slow by design). Prints MB/s and ratios; the piece
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

static double split_all(next_fn f, tok_pretok_t p, const uint8_t *s, size_t len, size_t *pieces)
{
    double t0 = gl_now();
    size_t pos = 0, n = 0;
    while (pos < len) {
        pos += f(p, s, len, pos);
        n++;
    }
    *pieces = n;
    return gl_now() - t0;
}

static double split_pcre(pcre2_code *re, pcre2_match_data *md, const uint8_t *s, size_t len,
                         size_t *pieces)
{
    double t0 = gl_now();
    size_t pos = 0, n = 0;
    while (pos < len) {
        int rc = pcre2_jit_match(re, s, len, pos, 0, md, NULL);
        if (rc < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        pos = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
        n++;
    }
    *pieces = n;
    return gl_now() - t0;
}

static double best_of(int passes, double (*once)(void *), void *arg)
{
    double best = 1e30;
    for (int i = 0; i < passes; i++) {
        double t = once(arg);
        if (t < best)
            best = t;
    }
    return best;
}

typedef struct {
    next_fn f;
    tok_pretok_t p;
    const uint8_t *s;
    size_t len, pieces;
    pcre2_code *re;
    pcre2_match_data *md;
} job;

static double run_fn(void *arg)
{
    job *j = arg;
    return split_all(j->f, j->p, j->s, j->len, &j->pieces);
}

static double run_pcre(void *arg)
{
    job *j = arg;
    return split_pcre(j->re, j->md, j->s, j->len, &j->pieces);
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
        job fast = {tok_pretok_next, (tok_pretok_t)p, text, len, 0, NULL, NULL};
        double tf = best_of(3, run_fn, &fast);
        job ref = {tok_pretok_ref_next, (tok_pretok_t)p, text, REF_BYTES, 0, NULL, NULL};
        double tr = best_of(1, run_fn, &ref);

        int code;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)tok_pretok_regex((tok_pretok_t)p), PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
        double tp = 0;
        job pc = {NULL, (tok_pretok_t)p, text, len, 0, re, md};
        if (re && pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0)
            tp = best_of(2, run_pcre, &pc);
        pcre2_code_free(re);

        double mf = len / tf / 1e6, mr = REF_BYTES / tr / 1e6, mp = tp > 0 ? len / tp / 1e6 : 0;
        printf("%-12s %12.1f %12.1f %12.1f %9.1fx %9.1fx\n", tok_pretok_name((tok_pretok_t)p), mf, mr, mp,
               mf / mr, mp > 0 ? mf / mp : 0);
        printf("%-12s pieces: fast %zu, PCRE2 %zu (PCRE2 has older Unicode tables)\n", "", fast.pieces,
               pc.pieces);
    }
    pcre2_match_data_free(md);
    free(text);
    return 0;
}
