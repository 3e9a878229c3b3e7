/* test_tokenizer_bpe.c — the merge algorithm against a naive reference,
 * special tokens both ways, malformed vocabulary files, and conversions
 * between the three file formats.
 *
 * The reference BPE keeps the parts as separate byte strings and, at each
 * step, looks up every adjacent pair again and merges the lowest-ranked,
 * leftmost one: the definition, without any of the fast path's
 * bookkeeping. */
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

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Naive BPE of one piece: returns the number of ids written to out. */
static size_t naive_bpe(const tok_vocab_t *v, const uint8_t *p, size_t n, uint32_t *out)
{
    size_t *start = malloc((n + 1) * sizeof *start), m = n;
    for (size_t i = 0; i <= n; i++)
        start[i] = i;
    for (;;) {
        int64_t best = -1;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            int64_t r = tok_token_id(v, p + start[i], start[i + 2] - start[i]);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                bi = i;
            }
        }
        if (best < 0)
            break;
        memmove(start + bi + 1, start + bi + 2, (m - bi - 1) * sizeof *start);
        m--;
    }
    for (size_t i = 0; i < m; i++)
        out[i] = (uint32_t)tok_token_id(v, p + start[i], start[i + 1] - start[i]);
    free(start);
    return m;
}

static int same_as_naive(const tok_vocab_t *v, const uint8_t *p, size_t n)
{
    tok_ids_t got = {0};
    gl_err_t err = {0};
    uint32_t *want = malloc((n + 1) * sizeof *want);
    size_t wn = naive_bpe(v, p, n, want);
    int ok = tok_encode_piece(v, p, n, &got, &err) == 0 && got.n == wn && !memcmp(got.ids, want, wn * 4);
    free(want);
    tok_ids_free(&got);
    return ok;
}

static void random_pieces(const tok_vocab_t *v, const char *label, const char *alphabet, int count)
{
    size_t al = strlen(alphabet);
    uint8_t buf[600];
    int bad = 0;
    for (int t = 0; t < count && !bad; t++) {
        size_t n = 1 + rnd() % (t % 4 == 0 ? 500 : 40);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)(t % 5 == 0 ? rnd() : (uint64_t)alphabet[rnd() % al]);
        if (!same_as_naive(v, buf, n)) {
            bad = 1;
            tap_diag("first mismatch: piece of %zu bytes '%.*s'", n, (int)n, buf);
        }
    }
    ok(!bad, "%s: %d random pieces merge as the naive reference does", label, count);
    /* long runs of one letter and of two alternating letters */
    static const size_t lens[] = {127, 128, 129, 300, 1500};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        uint8_t *run = malloc(lens[k]);
        memset(run, alphabet[0], lens[k]);
        int a = same_as_naive(v, run, lens[k]);
        for (size_t i = 0; i < lens[k]; i++)
            run[i] = (uint8_t)alphabet[i % 2];
        ok(a && same_as_naive(v, run, lens[k]), "%s: runs of %zu letters merge as the naive reference does",
           label, lens[k]);
        free(run);
    }
}

static tok_vocab_t *tiny_vocab(gl_err_t *err)
{
    static const char *extra[] = {"ab", "aa", "bc", "abc", "aaaa", "ba", "cab", "aaa", "bb", "abab", "ca"};
    const size_t ne = sizeof extra / sizeof extra[0];
    uint8_t bytes[256];
    const uint8_t *tok[256 + 16];
    uint32_t len[256 + 16];
    for (int i = 0; i < 256; i++) {
        bytes[i] = (uint8_t)i;
        tok[i] = &bytes[i];
        len[i] = 1;
    }
    for (size_t i = 0; i < ne; i++) {
        tok[256 + i] = (const uint8_t *)extra[i];
        len[256 + i] = (uint32_t)strlen(extra[i]);
    }
    return tok_vocab_from_tokens("tiny", TOK_PRETOK_GPT2, tok, len, (uint32_t)(256 + ne), err);
}

static void write_file(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

/* Loads path and expects failure with code and every needle in the message. */
static void expect_fail(const char *path, const tok_load_opts_t *o, gl_code_t code, const char *what,
                        const char *needle)
{
    gl_err_t err = {0};
    tok_vocab_t *v = tok_vocab_load(path, o, &err);
    int good = !v && err.code == code && strstr(err.msg, needle) != NULL;
    if (!ok(good, "%s: error %d naming '%s'", what, (int)code, needle))
        tap_diag("code %d, message: %s", (int)err.code, err.msg);
    tok_vocab_free(&v);
}

static int encode_str(const tok_vocab_t *v, const char *s, uint64_t allowed, tok_ids_t *out)
{
    gl_err_t err = {0};
    out->n = 0;
    return tok_encode(v, s, strlen(s), allowed, out, &err);
}

static int has_id(const tok_ids_t *a, uint32_t id)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->ids[i] == id)
            return 1;
    return 0;
}

static void test_specials(const tok_vocab_t *v)
{
    tok_ids_t a = {0}, b = {0}, c = {0};
    int64_t eot = tok_eot_id(v);
    ok(eot == 100257, "cl100k end-of-text is 100257");
    ok(tok_special_id(v, "<|fim_prefix|>") == 100258 && tok_special_id(v, "<|fim_middle|>") == 100259 &&
           tok_special_id(v, "<|fim_suffix|>") == 100260 && tok_special_id(v, "<|endofprompt|>") == 100276,
       "cl100k fim and endofprompt ids");
    const char *text = "hello <|endoftext|> world<|fim_prefix|>!";
    encode_str(v, text, TOK_ALLOW_NONE, &a);
    ok(!has_id(&a, 100257) && !has_id(&a, 100258), "not allowed: special text is encoded as ordinary text");
    gl_err_t err = {0};
    uint8_t *d = NULL;
    size_t dl = 0, dc = 0;
    ok(tok_decode(v, a.ids, a.n, &d, &dl, &dc, &err) == 0 && dl == strlen(text) && !memcmp(d, text, dl),
       "not allowed: round trip");
    encode_str(v, text, TOK_ALLOW_ALL, &b);
    ok(has_id(&b, 100257) && has_id(&b, 100258), "allowed: both specials become their ids");
    /* ids = encode("hello ") eot encode(" world") fim_prefix encode("!") */
    uint32_t exp[64];
    size_t n = 0;
    static const char *parts[] = {"hello ", NULL, " world", NULL, "!"};
    static const uint32_t sp[] = {0, 100257, 0, 100258, 0};
    tok_ids_t want = {0};
    for (size_t i = 0; i < 5; i++) {
        if (parts[i]) {
            encode_str(v, parts[i], 0, &want);
            for (size_t j = 0; j < want.n && n < 64; j++)
                exp[n++] = want.ids[j];
        } else {
            exp[n++] = sp[i];
        }
    }
    ok(b.n == n && !memcmp(b.ids, exp, n * 4), "allowed: specials cut the text, the rest encoded around them");
    dl = 0;
    ok(tok_decode(v, b.ids, b.n, &d, &dl, &dc, &err) == 0 && dl == strlen(text) && !memcmp(d, text, dl),
       "allowed: round trip");
    encode_str(v, text, tok_special_mask(v, "<|fim_prefix|>"), &c);
    ok(!has_id(&c, 100257) && has_id(&c, 100258), "only the allowed special is recognised");
    ok(tok_special_mask(v, "<|nope|>") == 0, "unknown special has no mask");
    uint32_t bad = 100256;
    dl = 0;
    ok(tok_decode(v, &bad, 1, &d, &dl, &dc, &err) == GL_ERANGE, "decoding an id with no token fails");
    free(d);
    tok_ids_free(&a);
    tok_ids_free(&b);
    tok_ids_free(&c);
    tok_ids_free(&want);
}

static void test_malformed(const char *dir, const char *cl100k_path)
{
    char *p = gl_path_join(dir, "x.tiktoken");
    gl_err_t err = {0};
    tok_load_opts_t gpt2pat = {.pattern = TOK_PRETOK_GPT2};
    /* a valid small rank file: the 256 bytes */
    char good[256 * 16];
    size_t gl = 0;
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 256; i++)
        gl += (size_t)sprintf(good + gl, "%c%c== %d\n", b64[i >> 2], b64[(i & 3) << 4], i);
    write_file(p, good, gl);
    tok_vocab_t *v = tok_vocab_load(p, &gpt2pat, &err);
    ok(v && tok_vocab_ordinary(v) == 256, "a rank file of the 256 bytes loads");
    tok_vocab_free(&v);
    expect_fail(p, NULL, GL_EINVAL, "unknown encoding without a pattern", "pattern");

    char buf[256 * 16 + 64];
    memcpy(buf, good, gl);
    memcpy(buf + 8 * 1, "!!", 2); /* line 2: "AQ== 1" -> "!!== 1" */
    write_file(p, buf, gl);
    expect_fail(p, &gpt2pat, GL_EPARSE, "bad base64", "x.tiktoken:2: bad base64");

    memcpy(buf, good, gl);
    memcpy(buf + gl, "AA== 256\n", 9); /* byte 0 again under another rank */
    write_file(p, buf, gl + 9);
    expect_fail(p, &gpt2pat, GL_ECORRUPT, "duplicate token", "appears twice");

    memcpy(buf + gl, "YWI= 5\n", 7); /* "ab" with rank 5, taken by byte 5 */
    write_file(p, buf, gl + 7);
    expect_fail(p, &gpt2pat, GL_ECORRUPT, "duplicate rank", "x.tiktoken:257: duplicate rank 5 (first on line 6)");

    memcpy(buf + gl, "YWI= 999999999\n", 15); /* a huge rank: refused, not allocated */
    write_file(p, buf, gl + 15);
    expect_fail(p, &gpt2pat, GL_ERANGE, "huge rank", "too large");

    memcpy(buf + gl, "YWI=\n", 5);
    write_file(p, buf, gl + 5);
    expect_fail(p, &gpt2pat, GL_EPARSE, "missing rank", "x.tiktoken:257");

    write_file(p, good, gl - 9); /* the last line cut off: byte 255 missing */
    expect_fail(p, &gpt2pat, GL_ECORRUPT, "missing byte", "0xff is not a token");

    write_file(p, good, gl - 5); /* cut inside the last line */
    expect_fail(p, &gpt2pat, GL_EPARSE, "truncated line", "x.tiktoken:256");

    expect_fail("/nonexistent/x.tiktoken", NULL, GL_ENOTFOUND, "missing file", "/nonexistent/x.tiktoken");

    if (cl100k_path) {
        /* a known encoding cut at a line boundary is caught by its size */
        char *data;
        size_t len;
        gl_read_file(cl100k_path, (size_t)1 << 30, &data, &len, &err);
        size_t cut = 0;
        for (int lines = 0; lines < 5000; cut++)
            lines += data[cut] == '\n';
        char *q = gl_path_join(dir, "cl100k_base.tiktoken");
        write_file(q, data, cut);
        expect_fail(q, NULL, GL_ECORRUPT, "truncated cl100k_base", "truncated");
        free(q);
        free(data);
    }

    /* GPT-2 files */
    char *ej = gl_path_join(dir, "encoder.json"), *vb = gl_path_join(dir, "vocab.bpe");
    write_file(ej, "{\"a\": 0, ", 9);
    write_file(vb, "#version: 0.2\n", 14);
    expect_fail(ej, NULL, GL_EPARSE, "bad JSON", "encoder.json");
    /* 256 bytes + "ab" (256) + "abc" (257) */
    {
        uint16_t cp[256];
        int n = 0;
        for (int b = 0; b < 256; b++) {
            int pr = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
            cp[b] = (uint16_t)(pr ? b : 256 + n++);
        }
        char js[8192];
        size_t o = 0;
        o += (size_t)sprintf(js + o, "{");
        for (int b = 0; b < 256; b++) {
            char u[8];
            if (cp[b] < 0x80 && cp[b] != '"' && cp[b] != '\\')
                sprintf(u, "%c", cp[b]);
            else
                sprintf(u, "\\u%04x", cp[b]);
            o += (size_t)sprintf(js + o, "\"%s\": %d, ", u, b);
        }
        o += (size_t)sprintf(js + o, "\"ab\": 256, \"abc\": 257, \"<|endoftext|>\": 258}");
        write_file(ej, js, o);
        write_file(vb, "#version: 0.2\na b\nab c\n", 23);
        tok_load_opts_t op = {.pattern = TOK_PRETOK_GPT2, .name = "mini"};
        v = tok_vocab_load(ej, &op, &err);
        ok(v && tok_vocab_ordinary(v) == 258 && tok_eot_id(v) == 258, "small GPT-2 files load");
        if (!v)
            tap_diag("%s", err.msg);
        tok_vocab_free(&v);
        write_file(vb, "#version: 0.2\na b\n", 18);
        expect_fail(ej, &op, GL_ECORRUPT, "missing merges", "missing merges");
        write_file(vb, "#version: 0.2\na b\nabc\n", 22);
        expect_fail(ej, &op, GL_EPARSE, "merge line without a space", "vocab.bpe:3");
        write_file(vb, "#version: 0.2\na b\nab x\n", 23);
        expect_fail(ej, &op, GL_ECORRUPT, "merge of an unknown token", "vocab.bpe:3");
    }
    free(ej);
    free(vb);

    /* gptline's own file */
    char *gt = gl_path_join(dir, "t.gltok");
    write_file(p, good, gl);
    v = tok_vocab_load(p, &gpt2pat, &err);
    tok_vocab_add_chat_roles(v, &err);
    ok(tok_vocab_save(v, gt, TOK_FMT_GLTOK, &err) == 0, "save a .gltok file");
    tok_vocab_t *w = tok_vocab_load(gt, NULL, &err);
    ok(w && tok_vocab_hash(w) == tok_vocab_hash(v) && tok_special_id(w, "<|assistant|>") == 259 &&
           tok_vocab_pattern(w) == TOK_PRETOK_GPT2,
       "the .gltok file keeps tokens, pattern and specials");
    tok_vocab_free(&w);
    char *data;
    size_t len;
    gl_read_file(gt, 1 << 20, &data, &len, &err);
    write_file(gt, data, len - 10);
    expect_fail(gt, NULL, GL_ECORRUPT, "truncated .gltok", "t.gltok");
    write_file(gt, data, len / 2);
    expect_fail(gt, NULL, GL_ECORRUPT, "truncated .gltok in the tokens", "truncated");
    char *ed = malloc(len);
    memcpy(ed, data, len);
    char *r = strstr(ed, "\nAA== 0");
    r[1] = 'B'; /* byte 0 -> byte 4: a duplicate token */
    write_file(gt, ed, len);
    expect_fail(gt, NULL, GL_ECORRUPT, "edited .gltok", "appears twice");
    memcpy(ed, data, len);
    r = strstr(ed, "special ");
    r[8] = '9'; /* another id */
    write_file(gt, ed, len);
    expect_fail(gt, NULL, GL_ECORRUPT, "edited specials", "does not match");
    memcpy(ed, data, len);
    ed[strlen(TOK_FORMAT_MAGIC) + 1] = '7';
    write_file(gt, ed, len);
    expect_fail(gt, NULL, GL_EVERSION, "future version", "version 7");
    ed[0] = 'X';
    write_file(gt, ed, len);
    expect_fail(gt, &(tok_load_opts_t){.format = TOK_FMT_GLTOK}, GL_ECORRUPT, "bad magic", "not a gptline");
    free(ed);
    free(data);
    free(gt);
    tok_vocab_free(&v);
    free(p);
}

static void test_convert(const char *dir, const char *path, const char *label, int gpt2_too)
{
    gl_err_t err = {0};
    tok_vocab_t *v = tok_vocab_load(path, NULL, &err), *w = NULL;
    if (!ok(v != NULL, "%s: load", label))
        return;
    static const char text[] = "Converted vocabularies encode the same: naïve café 123456 <|endoftext|>\n\n";
    tok_ids_t a = {0}, b = {0};
    tok_encode(v, text, sizeof text - 1, TOK_ALLOW_ALL, &a, &err);
    char *out = gl_path_join(dir, "conv.gltok");
    ok(tok_vocab_save(v, out, TOK_FMT_GLTOK, &err) == 0 && (w = tok_vocab_load(out, NULL, &err)) &&
           tok_vocab_hash(w) == tok_vocab_hash(v),
       "%s -> gltok -> same identity", label);
    if (w)
        tok_encode(w, text, sizeof text - 1, TOK_ALLOW_ALL, &b, &err);
    ok(w && a.n == b.n && !memcmp(a.ids, b.ids, a.n * 4), "%s: gltok copy encodes the same", label);
    tok_vocab_free(&w);
    free(out);
    char name[128];
    snprintf(name, sizeof name, "%s.tiktoken", tok_vocab_name(v));
    out = gl_path_join(dir, name);
    ok(tok_vocab_save(v, out, TOK_FMT_TIKTOKEN, &err) == 0 && (w = tok_vocab_load(out, NULL, &err)) &&
           tok_vocab_hash(w) == tok_vocab_hash(v),
       "%s -> tiktoken -> same identity", label);
    tok_vocab_free(&w);
    free(out);
    if (gpt2_too) {
        char *sub = gl_path_join(dir, "g2");
        gl_mkdir_p(sub, &err);
        out = gl_path_join(sub, "encoder.json");
        int rc = tok_vocab_save(v, out, TOK_FMT_GPT2, &err);
        if (rc)
            tap_diag("%s", err.msg);
        ok(rc == 0 && (w = tok_vocab_load(out, NULL, &err)) && tok_vocab_hash(w) == tok_vocab_hash(v),
           "%s -> encoder.json + vocab.bpe -> same identity", label);
        if (!w)
            tap_diag("%s", err.msg);
        tok_vocab_free(&w);
        free(out);
        free(sub);
    }
    tok_ids_free(&a);
    tok_ids_free(&b);
    tok_vocab_free(&v);
}

int main(void)
{
    gl_err_t err = {0};
    const char *dir = tap_tmpdir();

    tok_vocab_t *tiny = tiny_vocab(&err);
    ok(tiny != NULL, "a vocabulary from a token list");
    random_pieces(tiny, "tiny vocab", "abc", 3000);
    ok(tok_token_id(tiny, "aaaa", 4) == 260 && tok_token_id(tiny, "zz", 2) == -1, "token lookup");
    tok_vocab_free(&tiny);

    char *cl = tap_data_path("tokenizers/vocab/cl100k_base.tiktoken");
    char *r50 = tap_data_path("tokenizers/vocab/r50k_base.tiktoken");
    char *o200 = tap_data_path("tokenizers/vocab/o200k_base.tiktoken");
    if (cl) {
        tok_vocab_t *v = tok_vocab_load(cl, NULL, &err);
        ok(v != NULL, "load cl100k_base");
        random_pieces(v, "cl100k", "eatons ", 2000);
        random_pieces(v, "cl100k digits", "0123456789", 300);
        /* a 100 KB run of letters merges quickly (no quadratic blow-up) */
        size_t n = 100000;
        uint8_t *run = malloc(n);
        memset(run, 'a', n);
        tok_ids_t ids = {0};
        double t0 = cpu_now();
        int rc = tok_encode(v, run, n, 0, &ids, &err);
        double dt = cpu_now() - t0;
        uint8_t *d = NULL;
        size_t dl = 0, dc = 0;
        ok(rc == 0 && tok_decode(v, ids.ids, ids.n, &d, &dl, &dc, &err) == 0 && dl == n && !memcmp(d, run, n),
           "100 KB of one letter: %zu ids in %.1f ms, round trip", ids.n, dt * 1e3);
        ok(dt < 2.0, "100 KB of one letter encodes in under 2 s");
        free(d);
        free(run);
        tok_ids_free(&ids);
        test_specials(v);
        tok_vocab_free(&v);

        tok_load_opts_t co = {.chat_roles = 1};
        v = tok_vocab_load(cl, &co, &err);
        ok(v && tok_special_id(v, "<|system|>") == 100277 && tok_special_id(v, "<|user|>") == 100278 &&
               tok_special_id(v, "<|assistant|>") == 100279 && tok_vocab_size(v) == 100280,
           "cl100k with chat roles after its last special");
        tok_ids_t c = {0};
        ok(v && encode_str(v, "<|user|>hi<|assistant|>", TOK_ALLOW_ALL, &c) == 0 && c.n >= 3 &&
               c.ids[0] == 100278 && c.ids[c.n - 1] == 100279,
           "chat role tokens encode when allowed");
        tok_ids_free(&c);
        tok_vocab_free(&v);
    } else {
        tap_skip(1, "no test data");
    }
    test_malformed(dir, cl);
    if (r50) {
        test_convert(dir, r50, "r50k_base", 1);
        tok_load_opts_t co = {.chat_roles = 1};
        tok_vocab_t *v = tok_vocab_load(r50, &co, &err);
        ok(v && tok_eot_id(v) == 50256 && tok_special_id(v, "<|system|>") == 50257, "gpt2 end-of-text and roles");
        tok_vocab_free(&v);
    }
    if (o200)
        test_convert(dir, o200, "o200k_base", 0);
    free(cl);
    free(r50);
    free(o200);
    return tap_done();
}
