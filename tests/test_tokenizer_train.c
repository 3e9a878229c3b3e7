/* test_tokenizer_train.c — BPE training against a naive trainer that
 * recounts every pair of every piece before each merge; determinism
 * across thread counts; trained vocabularies round-trip any bytes. */
#include "tests/tap.h"
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

typedef struct {
    uint32_t a, b;
    int64_t w;
} pw_t;

static int cmp_pw(const void *x, const void *y)
{
    const pw_t *p = x, *q = y;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    if (p->b != q->b)
        return p->b < q->b ? -1 : 1;
    return 0;
}

/* The naive trainer: the same rule as tokenizer.h states it, written out
 * directly. Returns the number of tokens; tok[i]/tlen[i] their bytes. */
static uint32_t naive_train(tok_pretok_t pat, const char *text, size_t len, uint32_t target, uint8_t **tok,
                            uint32_t *tlen)
{
    /* pieces, one word per occurrence (weights all 1: simpler still) */
    size_t nw = 0, cap = 1024;
    uint32_t **word = malloc(cap * sizeof *word);
    uint32_t *wl = malloc(cap * sizeof *wl);
    for (size_t pos = 0; pos < len;) {
        size_t n = tok_pretok_next(pat, (const uint8_t *)text, len, pos);
        if (nw == cap) {
            cap *= 2;
            word = realloc(word, cap * sizeof *word);
            wl = realloc(wl, cap * sizeof *wl);
        }
        word[nw] = malloc(n * sizeof **word);
        for (size_t k = 0; k < n; k++)
            word[nw][k] = (uint8_t)text[pos + k];
        wl[nw++] = (uint32_t)n;
        pos += n;
    }
    uint32_t ntok = 256;
    for (uint32_t i = 0; i < 256; i++) {
        tok[i] = malloc(1);
        tok[i][0] = (uint8_t)i;
        tlen[i] = 1;
    }
    pw_t *pairs = malloc((len + 1) * sizeof *pairs);
    while (ntok < target) {
        size_t np = 0;
        for (size_t w = 0; w < nw; w++)
            for (uint32_t k = 0; k + 1 < wl[w]; k++)
                pairs[np++] = (pw_t){word[w][k], word[w][k + 1], 1};
        if (!np)
            break;
        qsort(pairs, np, sizeof *pairs, cmp_pw);
        pw_t best = {0, 0, 0};
        for (size_t i = 0; i < np;) {
            size_t j = i;
            int64_t c = 0;
            while (j < np && pairs[j].a == pairs[i].a && pairs[j].b == pairs[i].b)
                c += pairs[j++].w;
            if (c > best.w) /* strictly more: ties keep the smaller (a, b), seen first */
                best = (pw_t){pairs[i].a, pairs[i].b, c};
            i = j;
        }
        uint32_t la = tlen[best.a], lb = tlen[best.b];
        uint8_t *nb = malloc(la + lb);
        memcpy(nb, tok[best.a], la);
        memcpy(nb + la, tok[best.b], lb);
        uint32_t c = ntok;
        for (uint32_t i = 0; i < ntok; i++)
            if (tlen[i] == la + lb && !memcmp(tok[i], nb, la + lb))
                c = i;
        if (c == ntok) {
            tok[ntok] = nb;
            tlen[ntok++] = la + lb;
        } else {
            free(nb);
        }
        for (size_t w = 0; w < nw; w++) {
            uint32_t o = 0;
            for (uint32_t r = 0; r < wl[w];) {
                if (r + 1 < wl[w] && word[w][r] == best.a && word[w][r + 1] == best.b) {
                    word[w][o++] = c;
                    r += 2;
                } else {
                    word[w][o++] = word[w][r++];
                }
            }
            wl[w] = o;
        }
    }
    for (size_t w = 0; w < nw; w++)
        free(word[w]);
    free(word);
    free(wl);
    free(pairs);
    return ntok;
}

static tok_vocab_t *train(const char *text, size_t len, uint32_t n, tok_pretok_t pat, int threads, size_t ndocs)
{
    gl_err_t err = {0};
    tok_train_opts_t o = {.vocab_size = n, .pattern = pat, .threads = threads, .name = "t"};
    tok_trainer_t *t = tok_trainer_new(&o, &err);
    /* documents cut at the safe cuts nearest to equal parts */
    tok_doc_t docs[16];
    size_t nd = 0, pos = 0;
    for (size_t k = 1; k <= ndocs && pos < len; k++) {
        size_t end = k == ndocs ? len : tok_pretok_cut((const uint8_t *)text, len, len * k / ndocs);
        if (end <= pos)
            continue;
        docs[nd++] = (tok_doc_t){text + pos, end - pos};
        pos = end;
    }
    int rc = tok_trainer_add(t, docs, nd, &err);
    tok_vocab_t *v = rc ? NULL : tok_trainer_finish(t, &err);
    if (!v)
        tap_diag("training failed: %s", err.msg);
    tok_trainer_free(&t);
    return v;
}

static void compare_naive(const char *label, const char *text, size_t len, uint32_t n, tok_pretok_t pat)
{
    uint8_t **tok = calloc(n, sizeof *tok);
    uint32_t *tlen = calloc(n, sizeof *tlen);
    uint32_t nn = naive_train(pat, text, len, n, tok, tlen);
    tok_vocab_t *v = train(text, len, n, pat, 2, 3);
    int same = v && tok_vocab_ordinary(v) == nn;
    uint32_t first_bad = 0;
    for (uint32_t i = 0; same && i < nn; i++) {
        size_t l;
        const uint8_t *b = tok_token_bytes(v, i, &l);
        if (!b || l != tlen[i] || memcmp(b, tok[i], l)) {
            same = 0;
            first_bad = i;
        }
    }
    if (!ok(same, "%s: %u tokens equal to the naive trainer's", label, nn))
        tap_diag("ordinary tokens %u vs %u; first difference at id %u", v ? tok_vocab_ordinary(v) : 0, nn,
                 first_bad);
    for (uint32_t i = 0; i < nn; i++)
        free(tok[i]);
    free(tok);
    free(tlen);
    tok_vocab_free(&v);
}

static int round_trip(const tok_vocab_t *v, const void *s, size_t n)
{
    tok_ids_t ids = {0};
    gl_err_t err = {0};
    uint8_t *d = NULL;
    size_t dl = 0, dc = 0;
    int good = tok_encode(v, s, n, TOK_ALLOW_NONE, &ids, &err) == 0 &&
               tok_decode(v, ids.ids, ids.n, &d, &dl, &dc, &err) == 0 && dl == n && (!n || !memcmp(d, s, n));
    free(d);
    tok_ids_free(&ids);
    return good;
}

int main(void)
{
    /* a small synthetic corpus: words of a skewed distribution, numbers,
     * punctuation, runs of repeated letters (overlapping pairs), lines */
    static const char *words[] = {"the", "then", "there", "aaaa", "banana", "abab", "cat", "scatter", "a",
                                  "I'm", "don't", "123", "45678", "éé", "über", "ab", "ba", "aaaaaaa"};
    size_t cap = 60000, len = 0;
    char *text = malloc(cap + 64);
    while (len < cap) {
        size_t w = rnd() % 18;
        if (rnd() % 3 == 0)
            w %= 4;
        len += (size_t)sprintf(text + len, "%s%s", words[w], rnd() % 9 == 0 ? ".\nZ" : rnd() % 5 ? " " : ", ");
    }
    compare_naive("synthetic, o200k pattern", text, len, 256 + 200, TOK_PRETOK_O200K);
    compare_naive("synthetic, gpt2 pattern", text, len, 256 + 120, TOK_PRETOK_GPT2);
    compare_naive("runs of one letter", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa aaa aa a", 67, 270,
                  TOK_PRETOK_CL100K);

    char *sp = tap_data_path("tokenizers/texts/tinyshakespeare.txt");
    char *sh = NULL;
    size_t shl = 0;
    gl_err_t err = {0};
    if (sp && gl_read_file(sp, 1 << 24, &sh, &shl, &err) == 0) {
        compare_naive("tinyshakespeare (first 40 KB)", sh, 40000, 256 + 150, TOK_PRETOK_CL100K);
        /* determinism: 1 thread / 1 document vs 2 threads / 5 documents */
        tok_vocab_t *a = train(sh, shl, 3000, TOK_PRETOK_O200K, 1, 1);
        tok_vocab_t *b = train(sh, shl, 3000, TOK_PRETOK_O200K, 2, 5);
        ok(a && b && tok_vocab_hash(a) == tok_vocab_hash(b), "same vocabulary on 1 and 2 threads");
        ok(a && round_trip(a, sh, shl), "trained vocabulary round-trips its corpus");
        tok_vocab_free(&a);
        tok_vocab_free(&b);
    } else {
        tap_skip(3, "no test data");
    }
    free(sh);
    free(sp);

    tok_vocab_t *v = train(text, len, 400, TOK_PRETOK_GPT2, 2, 2);
    uint8_t rb[2000];
    int good = v != NULL;
    for (int t = 0; t < 200 && good; t++) {
        size_t n = rnd() % sizeof rb;
        for (size_t i = 0; i < n; i++)
            rb[i] = (uint8_t)(t % 2 ? rnd() : (uint64_t)"ab \n."[rnd() % 5]);
        good = round_trip(v, rb, n);
    }
    ok(good, "trained vocabulary round-trips random bytes");
    /* a trained vocabulary written as GPT-2 files loads back the same */
    if (v && tok_vocab_add_chat_roles(v, &err) == 0) {
        char *dir = gl_path_join(tap_tmpdir(), "mine");
        char *ej = gl_path_join(dir, "encoder.json");
        gl_mkdir_p(dir, &err);
        tok_load_opts_t lo = {.pattern = TOK_PRETOK_GPT2};
        tok_vocab_t *w = NULL;
        ok(tok_vocab_save(v, ej, TOK_FMT_GPT2, &err) == 0 && (w = tok_vocab_load(ej, &lo, &err)) &&
               tok_vocab_hash(w) == tok_vocab_hash(v) && !strcmp(tok_vocab_name(w), "mine"),
           "trained vocabulary -> GPT-2 files -> the same vocabulary");
        if (!w)
            tap_diag("%s", err.msg);
        tok_vocab_free(&w);
        free(ej);
        free(dir);
    }
    tok_vocab_free(&v);

    tok_train_opts_t o = {.vocab_size = 300, .chat_roles = 1};
    tok_trainer_t *t = tok_trainer_new(&o, &err);
    tok_doc_t d = {"hello hello hello", 17};
    tok_trainer_add(t, &d, 1, &err);
    v = tok_trainer_finish(t, &err);
    ok(v && tok_eot_id(v) >= 0 && tok_special_id(v, "<|assistant|>") > tok_eot_id(v) &&
           (uint32_t)tok_eot_id(v) >= tok_vocab_ordinary(v),
       "end-of-text and chat roles follow the trained tokens");
    ok(v && tok_vocab_ordinary(v) < 300, "training stops when no pair is left");
    tok_vocab_free(&v);
    tok_trainer_free(&t);
    o.vocab_size = 100;
    ok(tok_trainer_new(&o, &err) == NULL && err.code == GL_EINVAL, "a vocabulary below 256 is refused");
    free(text);
    return tap_done();
}
