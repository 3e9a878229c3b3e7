/* test_tokenizer.c — exact ids against tiktoken 1.0.22 for every text of
 * $GL_DATA/tokenizers/texts and the three encodings (gpt2 loaded both from
 * GPT-2's encoder.json + vocab.bpe and from r50k_base.tiktoken), the
 * round trip on the same texts, the batch and streaming encoders against
 * the one-shot encoder, and the load time of cl100k. */
#include "tests/tap.h"
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU seconds of this thread: timing checks that other processes on a
 * shared machine cannot fail. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *texts[] = {"c-headers", "tinyshakespeare", "unicode-stress", "web-html", "wiki-xml"};
#define N_TEXTS (sizeof texts / sizeof texts[0])

static int read_ids(const char *path, tok_ids_t *out)
{
    char *buf;
    size_t len;
    gl_err_t err = {0};
    if (gl_read_file(path, (size_t)1 << 30, &buf, &len, &err))
        return -1;
    char *p = buf, *e;
    out->n = 0;
    for (;;) {
        while (*p == ' ' || *p == '\n')
            p++;
        if (!*p)
            break;
        unsigned long x = strtoul(p, &e, 10);
        if (e == p)
            break;
        if (out->n == out->cap) {
            out->cap = out->cap ? 2 * out->cap : 4096;
            out->ids = realloc(out->ids, out->cap * sizeof *out->ids);
        }
        out->ids[out->n++] = (uint32_t)x;
        p = e;
    }
    free(buf);
    return 0;
}

static void first_diff(const tok_ids_t *got, const tok_ids_t *want)
{
    size_t i = 0;
    while (i < got->n && i < want->n && got->ids[i] == want->ids[i])
        i++;
    tap_diag("got %zu ids, expected %zu; first difference at %zu: got %u, expected %u", got->n, want->n, i,
             i < got->n ? got->ids[i] : 0, i < want->n ? want->ids[i] : 0);
}

static void check_encoding(const char *label, tok_vocab_t *v, const char *expect_name)
{
    for (size_t t = 0; t < N_TEXTS; t++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizers/texts/%s.txt", texts[t]);
        char *tpath = tap_data_path(rel);
        snprintf(rel, sizeof rel, "tokenizers/expected/%s.%s.ids", texts[t], expect_name);
        char *epath = tap_data_path(rel);
        char *text = NULL;
        size_t len = 0;
        gl_err_t err = {0};
        tok_ids_t want = {0}, got = {0};
        if (gl_read_file(tpath, (size_t)1 << 30, &text, &len, &err) || read_ids(epath, &want)) {
            ok(0, "%s: read %s and its ids (%s)", label, texts[t], err.msg);
            goto next;
        }
        ok(tok_encode(v, text, len, TOK_ALLOW_NONE, &got, &err) == 0, "%s: encode %s", label, texts[t]);
        int same = got.n == want.n && !memcmp(got.ids, want.ids, got.n * sizeof *got.ids);
        if (!ok(same, "%s: %s gives tiktoken's %zu ids", label, texts[t], want.n))
            first_diff(&got, &want);
        uint8_t *dec = NULL;
        size_t dlen = 0, dcap = 0;
        ok(tok_decode(v, got.ids, got.n, &dec, &dlen, &dcap, &err) == 0 && dlen == len && !memcmp(dec, text, len),
           "%s: %s decodes back to the same bytes", label, texts[t]);
        free(dec);

        /* streaming in odd chunk sizes gives the same ids */
        tok_stream_t *s = tok_stream_new(v, TOK_ALLOW_NONE, 0, &err);
        tok_ids_t st = {0};
        int rc = 0;
        for (size_t off = 0, k = 0; off < len && !rc; k++) {
            size_t c = 1 + (k * 7919) % 50000;
            if (c > len - off)
                c = len - off;
            rc = tok_stream_feed(s, text + off, c, &st, &err);
            off += c;
        }
        rc = rc || tok_stream_finish(s, &st, &err);
        ok(!rc && st.n == want.n && !memcmp(st.ids, want.ids, st.n * sizeof *st.ids),
           "%s: %s streamed in chunks gives the same ids", label, texts[t]);
        tok_stream_free(&s);
        tok_ids_free(&st);
    next:
        tok_ids_free(&want);
        tok_ids_free(&got);
        free(text);
        free(tpath);
        free(epath);
    }
}

int main(void)
{
    char *dir = tap_data_path("tokenizers");
    if (!dir)
        tap_skip_all("no test data (GL_DATA unset and ../shared/data absent)");
    free(dir);
    gl_err_t err = {0};
    struct {
        const char *label, *file, *expect;
    } enc[] = {
        {"gpt2 (encoder.json)", "tokenizers/vocab/gpt2/encoder.json", "gpt2"},
        {"gpt2 (r50k_base.tiktoken)", "tokenizers/vocab/r50k_base.tiktoken", "gpt2"},
        {"cl100k_base", "tokenizers/vocab/cl100k_base.tiktoken", "cl100k_base"},
        {"o200k_base", "tokenizers/vocab/o200k_base.tiktoken", "o200k_base"},
    };
    uint64_t gpt2_hash[2] = {0, 0};
    for (size_t e = 0; e < sizeof enc / sizeof enc[0]; e++) {
        char *path = tap_data_path(enc[e].file);
        double t0 = cpu_now();
        tok_vocab_t *v = tok_vocab_load(path, NULL, &err);
        double dt = cpu_now() - t0;
        if (!ok(v != NULL, "load %s", enc[e].label)) {
            tap_diag("%s", err.msg);
            free(path);
            continue;
        }
        tap_diag("%s: %u tokens loaded in %.1f ms", enc[e].label, tok_vocab_ordinary(v), dt * 1e3);
#ifndef __SANITIZE_ADDRESS__
        if (!strcmp(enc[e].expect, "cl100k_base"))
            ok(dt < 0.1, "cl100k loads in under 100 ms (%.1f ms)", dt * 1e3);
#endif
        if (e < 2)
            gpt2_hash[e] = tok_vocab_hash(v);
        check_encoding(enc[e].label, v, enc[e].expect);

        /* the batch encoder gives the same ids as one document at a time */
        tok_doc_t docs[N_TEXTS];
        char *bufs[N_TEXTS];
        tok_ids_t outs[N_TEXTS], one = {0};
        memset(outs, 0, sizeof outs);
        for (size_t t = 0; t < N_TEXTS; t++) {
            char rel[256];
            snprintf(rel, sizeof rel, "tokenizers/texts/%s.txt", texts[t]);
            char *tp = tap_data_path(rel);
            gl_read_file(tp, (size_t)1 << 30, &bufs[t], &docs[t].len, &err);
            docs[t].text = bufs[t];
            free(tp);
        }
        ok(tok_encode_batch(v, docs, N_TEXTS, TOK_ALLOW_NONE, 2, outs, &err) == 0, "%s: batch encode on 2 threads",
           enc[e].label);
        int same = 1;
        for (size_t t = 0; t < N_TEXTS; t++) {
            one.n = 0;
            tok_encode(v, docs[t].text, docs[t].len, TOK_ALLOW_NONE, &one, &err);
            same &= one.n == outs[t].n && !memcmp(one.ids, outs[t].ids, one.n * sizeof *one.ids);
            tok_ids_free(&outs[t]);
            free(bufs[t]);
        }
        ok(same, "%s: batch ids equal one-at-a-time ids", enc[e].label);
        tok_ids_free(&one);
        tok_vocab_free(&v);
        free(path);
    }
    ok(gpt2_hash[0] && gpt2_hash[0] == gpt2_hash[1], "GPT-2 files and r50k_base.tiktoken have one identity hash");
    return tap_done();
}
