/* filter.c — quality filters and PII scrubbing for extracted documents.
 *
 * The rules and thresholds are the published ones, so a corpus cleaned
 * here is comparable to one cleaned by datatrove:
 *  - length: at least min_chars characters and min_words words;
 *  - Gopher quality (Rae et al. 2021): 50..100000 words, mean word length
 *    3..10, symbol (# and ellipsis) to word ratio <= 0.1, <= 90% of lines
 *    starting with a bullet, <= 30% ending with an ellipsis, >= 80% of
 *    words holding a letter, >= 2 of the stop words the/be/to/of/and/that/
 *    have/with;
 *  - Gopher repetition: duplicated lines <= 30% (by count) and <= 20% (by
 *    characters), duplicated paragraphs the same, the most frequent 2/3/4-
 *    gram covering <= 20/18/16% of characters, and characters inside
 *    duplicated 5..10-grams <= 15/14/13/12/11/10%;
 *  - C4 (Raffel et al. 2020): keep only lines ending in terminal
 *    punctuation with at least 3 words, drop lines about javascript or
 *    cookie/terms/privacy policies, drop the page if it has "lorem ipsum"
 *    or a curly bracket or fewer than 3 sentences (5 in C4; 3 keeps short
 *    articles);
 *  - PII: e-mail addresses become email@example.com, IPv4 addresses
 *    0.0.0.0 (as dolma does).
 * Words are runs of non-space bytes, enough for the languages these rules
 * were designed for. Hash tables are small open-addressing arrays sized to
 * the document and freed at the end.
 */
#include "ingest/internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

void ingest_filter_opts_default(ingest_filter_opts_t *o, Gptline__SourceKind source)
{
    memset(o, 0, sizeof *o);
    int web = source == GPTLINE__SOURCE_KIND__CRAWL || source == GPTLINE__SOURCE_KIND__JSONL;
    o->length = 1;
    o->min_chars = source == GPTLINE__SOURCE_KIND__CODE ? 1 : 200;
    o->min_words = source == GPTLINE__SOURCE_KIND__CODE ? 1 : 20;
    o->gopher_quality = web;
    o->gopher_repetition = web;
    o->c4 = source == GPTLINE__SOURCE_KIND__CRAWL;
    o->pii = 1;
    o->dedup_exact = 1;
}

typedef struct {
    const char *p;
    size_t n;
} span_t;

static unsigned char lower_tab[256];
__attribute__((constructor)) static void init_lower(void)
{
    for (int c = 0; c < 256; c++)
        lower_tab[c] = (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

static const unsigned char sp_tab[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1, ['\f'] = 1, ['\v'] = 1};
static inline int is_sp(char c) { return sp_tab[(unsigned char)c]; }

static size_t split_words(const char *t, size_t n, span_t **out)
{
    size_t cap = 64, k = 0;
    span_t *w = gl_xmalloc(cap * sizeof *w);
    size_t i = 0;
    while (i < n) {
        while (i < n && is_sp(t[i]))
            i++;
        size_t s = i;
        while (i < n && !is_sp(t[i]))
            i++;
        if (i > s) {
            if (k == cap)
                w = gl_xrealloc(w, (cap *= 2) * sizeof *w);
            w[k++] = (span_t){t + s, i - s};
        }
    }
    *out = w;
    return k;
}

/* Number of words in t, counting up to at most max. */
static size_t count_words(const char *t, size_t n, size_t max)
{
    size_t k = 0;
    int in = 0;
    for (size_t i = 0; i < n && k < max; i++) {
        int sp = is_sp(t[i]);
        k += !sp && !in;
        in = !sp;
    }
    return k;
}

/* Splits on sep ('\n' lines, or blank-line paragraphs when para). */
static size_t split_lines(const char *t, size_t n, int para, span_t **out)
{
    size_t cap = 64, k = 0;
    span_t *w = gl_xmalloc(cap * sizeof *w);
    size_t i = 0;
    while (i < n) {
        size_t s = i;
        if (para) {
            while (i < n && !(t[i] == '\n' && i + 1 < n && t[i + 1] == '\n'))
                i++;
        } else {
            while (i < n && t[i] != '\n')
                i++;
        }
        size_t e = i;
        while (e > s && is_sp(t[e - 1]))
            e--;
        while (s < e && is_sp(t[s]))
            s++;
        if (e > s) {
            if (k == cap)
                w = gl_xrealloc(w, (cap *= 2) * sizeof *w);
            w[k++] = (span_t){t + s, e - s};
        }
        while (i < n && t[i] == '\n')
            i++;
    }
    *out = w;
    return k;
}

/* A text with its words and lines, split once for all the rules. */
typedef struct {
    const char *t;
    size_t n;
    span_t *w, *l;
    size_t nw, nl;
} view_t;

static void view_init(view_t *v, const char *t, size_t n)
{
    v->t = t;
    v->n = n;
    v->nw = split_words(t, n, &v->w);
    v->nl = split_lines(t, n, 0, &v->l);
}

static void view_free(view_t *v)
{
    free(v->w);
    free(v->l);
}

static int gopher_quality(const view_t *v)
{
    const span_t *w = v->w, *l = v->l;
    size_t nw = v->nw, nl = v->nl;
    int ok = 0;
    if (nw < 50 || nw > 100000)
        goto out;
    size_t chars = 0, alpha = 0, hashes = 0, ell = 0, stops = 0;
    static const char *const stop[] = {"the", "be", "to", "of", "and", "that", "have", "with", NULL};
    static const size_t stop_len[] = {3, 2, 2, 2, 3, 4, 4, 4};
    for (size_t i = 0; i < nw; i++) {
        chars += w[i].n;
        int has = 0;
        for (size_t k = 0; k < w[i].n; k++)
            if (isalpha((unsigned char)w[i].p[k]) || (unsigned char)w[i].p[k] >= 0x80) {
                has = 1;
                break;
            }
        alpha += has;
        for (size_t k = 0; k < w[i].n; k++)
            hashes += w[i].p[k] == '#';
        if ((w[i].n >= 3 && !memcmp(w[i].p + w[i].n - 3, "...", 3)) ||
            (w[i].n >= 3 && !memcmp(w[i].p + w[i].n - 3, "\xe2\x80\xa6", 3)))
            ell++;
        if (w[i].n >= 2 && w[i].n <= 4) {
            for (int s = 0; stop[s]; s++)
                if (w[i].n == stop_len[s] && lower_tab[(unsigned char)w[i].p[0]] == stop[s][0] &&
                    !strncasecmp(w[i].p, stop[s], w[i].n)) {
                    stops++;
                    break;
                }
        }
    }
    double mean = (double)chars / (double)nw;
    if (mean < 3 || mean > 10)
        goto out;
    if ((double)(hashes + ell) / (double)nw > 0.1)
        goto out;
    size_t bullets = 0, ellend = 0;
    for (size_t i = 0; i < nl; i++) {
        const char *p = l[i].p;
        size_t m = l[i].n;
        if (p[0] == '-' || p[0] == '*' || (m >= 3 && !memcmp(p, "\xe2\x80\xa2", 3)) ||
            (m >= 3 && !memcmp(p, "\xe2\x97\x8f", 3)))
            bullets++;
        if ((m >= 3 && !memcmp(p + m - 3, "...", 3)) || (m >= 3 && !memcmp(p + m - 3, "\xe2\x80\xa6", 3)))
            ellend++;
    }
    if (nl && (double)bullets / (double)nl > 0.9)
        goto out;
    if (nl && (double)ellend / (double)nl > 0.3)
        goto out;
    if ((double)alpha / (double)nw < 0.8)
        goto out;
    if (stops < 2)
        goto out;
    ok = 1;
out:
    return ok;
}

int ingest_gopher_quality(const char *t, size_t n)
{
    view_t v;
    view_init(&v, t, n);
    int ok = gopher_quality(&v);
    view_free(&v);
    return ok;
}

/* ---- a small counting hash table over 64-bit keys ---- */
typedef struct {
    uint64_t *k;
    uint32_t *c;
    size_t cap;
} ctab_t;

static void ctab_init(ctab_t *t, size_t n)
{
    t->cap = 16;
    while (t->cap < n * 2)
        t->cap *= 2;
    t->k = gl_xcalloc(t->cap, sizeof *t->k);
    t->c = gl_xcalloc(t->cap, sizeof *t->c);
}

/* Adds one to key's count; returns the new count. */
static uint32_t ctab_add(ctab_t *t, uint64_t key)
{
    key |= 1; /* 0 marks empty */
    size_t i = (size_t)key & (t->cap - 1);
    while (t->k[i] && t->k[i] != key)
        i = (i + 1) & (t->cap - 1);
    t->k[i] = key;
    return ++t->c[i];
}

static uint32_t ctab_get(const ctab_t *t, uint64_t key)
{
    key |= 1;
    size_t i = (size_t)key & (t->cap - 1);
    while (t->k[i] && t->k[i] != key)
        i = (i + 1) & (t->cap - 1);
    return t->k[i] ? t->c[i] : 0;
}

static void ctab_free(ctab_t *t)
{
    free(t->k);
    free(t->c);
}

/* Fraction of items (by count and by characters) that repeat an earlier one. */
static void dup_fracs(const span_t *s, size_t n, double *by_count, double *by_chars)
{
    ctab_t t;
    ctab_init(&t, n);
    size_t dup = 0, dupc = 0, all = 0;
    for (size_t i = 0; i < n; i++) {
        all += s[i].n;
        if (ctab_add(&t, XXH3_64bits(s[i].p, s[i].n)) > 1) {
            dup++;
            dupc += s[i].n;
        }
    }
    ctab_free(&t);
    *by_count = n ? (double)dup / (double)n : 0;
    *by_chars = all ? (double)dupc / (double)all : 0;
}

/* n-gram hash from the words' hashes (each word hashed once). */
static uint64_t ngram_hash(const uint64_t *wh, size_t at, size_t k)
{
    uint64_t h = 0x9e3779b97f4a7c15ull * k;
    for (size_t j = 0; j < k; j++)
        h = (h ^ wh[at + j]) * 0x100000001b3ull + j;
    return h ^ (h >> 29);
}

static int gopher_repetition(const view_t *v)
{
    const span_t *l = v->l, *w = v->w;
    span_t *p;
    uint64_t *wh = NULL;
    size_t nl = v->nl, np = split_lines(v->t, v->n, 1, &p), nw = v->nw;
    int ok = 0;
    double c, ch;
    dup_fracs(l, nl, &c, &ch);
    if (c > 0.3 || ch > 0.2)
        goto out;
    dup_fracs(p, np, &c, &ch);
    if (c > 0.3 || ch > 0.2)
        goto out;
    size_t total = 0;
    for (size_t i = 0; i < nw; i++)
        total += w[i].n;
    if (!total) {
        ok = 1;
        goto out;
    }
    wh = gl_xmalloc(nw * sizeof *wh);
    for (size_t i = 0; i < nw; i++)
        wh[i] = XXH3_64bits(w[i].p, w[i].n);
    static const double top_max[5] = {0, 0, 0.20, 0.18, 0.16};
    for (size_t k = 2; k <= 4; k++) {
        if (nw < k)
            break;
        ctab_t tb;
        ctab_init(&tb, nw);
        uint32_t best = 0;
        size_t best_at = 0;
        for (size_t i = 0; i + k <= nw; i++) {
            uint32_t cnt = ctab_add(&tb, ngram_hash(wh, i, k));
            if (cnt > best) {
                best = cnt;
                best_at = i;
            }
        }
        ctab_free(&tb);
        if (best > 1) {
            size_t glen = 0;
            for (size_t j = 0; j < k; j++)
                glen += w[best_at + j].n;
            if ((double)(glen * best) / (double)total > top_max[k])
                goto out;
        }
    }
    static const double dup_max[11] = {0, 0, 0, 0, 0, 0.15, 0.14, 0.13, 0.12, 0.11, 0.10};
    unsigned char *mark = gl_xmalloc(nw ? nw : 1);
    for (size_t k = 5; k <= 10; k++) {
        if (nw < k)
            break;
        ctab_t tb;
        ctab_init(&tb, nw);
        for (size_t i = 0; i + k <= nw; i++)
            ctab_add(&tb, ngram_hash(wh, i, k));
        memset(mark, 0, nw);
        for (size_t i = 0; i + k <= nw; i++)
            if (ctab_get(&tb, ngram_hash(wh, i, k)) > 1)
                memset(mark + i, 1, k);
        ctab_free(&tb);
        size_t dc = 0;
        for (size_t i = 0; i < nw; i++)
            if (mark[i])
                dc += w[i].n;
        if ((double)dc / (double)total > dup_max[k]) {
            free(mark);
            goto out;
        }
        /* a word inside a repeated k-gram (k > 5) is inside a repeated
         * 5-gram, so the longer fractions are at most this one */
        if (k == 5 && (double)dc / (double)total <= dup_max[10])
            break;
    }
    free(mark);
    ok = 1;
out:
    free(p);
    free(wh);
    return ok;
}

int ingest_gopher_repetition(const char *t, size_t n)
{
    view_t v;
    view_init(&v, t, n);
    int ok = gopher_repetition(&v);
    view_free(&v);
    return ok;
}

int ingest_c4(const char *t, size_t n, ingest_buf_t *out)
{
    ibuf_clear(out);
    if (memchr(t, '{', n))
        return 0;
    /* one lowercased copy; each phrase is searched once over the whole
     * text and marks the lines it falls in */
    static const char *const bad[] = {"javascript", "terms of use", "privacy policy", "cookie policy",
                                      "uses cookies", "use of cookies", "use cookies", NULL};
    static const size_t bad_len[] = {10, 12, 14, 13, 12, 14, 11};
    ingest_buf_t low = {0};
    ibuf_reserve(&low, n);
    for (size_t k = 0; k < n; k++)
        low.p[k] = (char)lower_tab[(unsigned char)t[k]];
    low.len = n;
    if (memmem(low.p, n, "lorem ipsum", 11)) {
        ingest_buf_free(&low);
        return 0;
    }
    span_t *l;
    size_t nl = split_lines(t, n, 0, &l);
    unsigned char *dropped = gl_xcalloc(nl ? nl : 1, 1);
    for (int b = 0; bad[b]; b++) {
        const char *from = low.p, *end = low.p + n, *hit;
        while ((hit = memmem(from, (size_t)(end - from), bad[b], bad_len[b]))) {
            size_t off = (size_t)(hit - low.p), lo = 0, hi = nl;
            while (lo < hi) { /* last line starting at or before off */
                size_t mid = (lo + hi) / 2;
                if ((size_t)(l[mid].p - t) <= off)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo)
                dropped[lo - 1] = 1;
            from = hit + 1;
        }
    }
    size_t sentences = 0;
    for (size_t i = 0; i < nl; i++) {
        const char *p = l[i].p;
        size_t m = l[i].n;
        char last = p[m - 1];
        int term = last == '.' || last == '!' || last == '?' || last == '"' || last == '\'' ||
                   (m >= 3 && (!memcmp(p + m - 3, "\xe3\x80\x82", 3) || !memcmp(p + m - 3, "\xef\xbc\x81", 3) ||
                               !memcmp(p + m - 3, "\xef\xbc\x9f", 3)));
        if (dropped[i] || !term || (m >= 3 && !memcmp(p + m - 3, "...", 3)))
            continue;
        if (count_words(p, m, 3) < 3)
            continue;
        for (size_t k = 0; k < m; k++)
            if ((p[k] == '.' || p[k] == '!' || p[k] == '?') && (k + 1 == m || p[k + 1] == ' '))
                sentences++;
        if (out->len)
            ibuf_putc(out, '\n');
        ibuf_put(out, p, m);
    }
    free(dropped);
    free(l);
    ingest_buf_free(&low);
    return sentences >= 3;
}

static int email_char(char c) { return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }

void ingest_pii_scrub(const char *t, size_t n, ingest_buf_t *out, uint64_t counts[2])
{
    ibuf_clear(out);
    ibuf_reserve(out, n + 16);
    size_t i = 0, copied = 0;
    while (i < n) {
        char c = t[i];
        if (c == '@' && i > 0 && email_char(t[i - 1])) {
            size_t s = i;
            while (s > copied && email_char(t[s - 1]))
                s--;
            size_t e = i + 1, dots = 0;
            while (e < n && (isalnum((unsigned char)t[e]) || t[e] == '-' || t[e] == '.')) {
                if (t[e] == '.')
                    dots++;
                e++;
            }
            while (e > i + 1 && t[e - 1] == '.') {
                e--;
                dots--;
            }
            /* domain needs a dot and a 2+ letter TLD */
            size_t tld = 0;
            for (size_t k = e; k > i + 1 && t[k - 1] != '.'; k--)
                tld++;
            if (s < i && dots >= 1 && tld >= 2 && isalpha((unsigned char)t[e - 1])) {
                ibuf_put(out, t + copied, s - copied);
                ibuf_puts(out, "email@example.com");
                if (counts)
                    counts[0]++;
                copied = i = e;
                continue;
            }
        }
        if (isdigit((unsigned char)c) && (i == 0 || (!isalnum((unsigned char)t[i - 1]) && t[i - 1] != '.'))) {
            size_t e = i;
            int parts = 0, okp = 1;
            while (parts < 4) {
                size_t d = 0;
                unsigned v = 0;
                while (e < n && isdigit((unsigned char)t[e]) && d < 4) {
                    v = v * 10 + (unsigned)(t[e] - '0');
                    e++;
                    d++;
                }
                if (!d || d > 3 || v > 255) {
                    okp = 0;
                    break;
                }
                parts++;
                if (parts < 4) {
                    if (e < n && t[e] == '.' && e + 1 < n && isdigit((unsigned char)t[e + 1]))
                        e++;
                    else {
                        okp = 0;
                        break;
                    }
                }
            }
            if (okp && parts == 4 && (e >= n || (!isalnum((unsigned char)t[e]) && !(t[e] == '.' && e + 1 < n && isdigit((unsigned char)t[e + 1]))))) {
                ibuf_put(out, t + copied, i - copied);
                ibuf_puts(out, "0.0.0.0");
                if (counts)
                    counts[1]++;
                copied = i = e;
                continue;
            }
            while (i < n && (isdigit((unsigned char)t[i]) || t[i] == '.'))
                i++;
            continue;
        }
        i++;
    }
    ibuf_put(out, t + copied, n - copied);
}

static int lang_ok(const char *langs, const char *t, size_t n);

int ingest_filter(const ingest_filter_opts_t *o, const char *text, size_t len, ingest_buf_t *out,
                  uint64_t pii_counts[2])
{
    ingest_buf_t tmp = {0};
    int r = -1;
    ibuf_clear(out);
    ibuf_put(out, text, len);
    if (o->c4) {
        if (!ingest_c4(out->p, out->len, &tmp)) {
            r = INGEST_DROP_C4;
            goto done;
        }
        ibuf_clear(out);
        ibuf_put(out, tmp.p, tmp.len);
    }
    if (o->length || o->gopher_quality || o->gopher_repetition) {
        view_t v;
        view_init(&v, out->p, out->len);
        if (o->length && (out->len < o->min_chars || v.nw < o->min_words))
            r = INGEST_DROP_LENGTH;
        else if (o->gopher_quality && !gopher_quality(&v))
            r = INGEST_DROP_GOPHER_QUALITY;
        else if (o->gopher_repetition && !gopher_repetition(&v))
            r = INGEST_DROP_GOPHER_REPETITION;
        view_free(&v);
        if (r >= 0)
            goto done;
    }
    if (o->languages && *o->languages && !lang_ok(o->languages, out->p, out->len)) {
        r = INGEST_DROP_LANGUAGE;
        goto done;
    }
    if (o->pii) {
        ingest_pii_scrub(out->p, out->len, &tmp, pii_counts);
        ibuf_clear(out);
        ibuf_put(out, tmp.p, tmp.len);
    }
done:
    ingest_buf_free(&tmp);
    return r;
}

static int lang_ok(const char *langs, const char *t, size_t n)
{
    int rel;
    const char *code = ingest_lang_detect(t, n, &rel);
    if (!code)
        return 0;
    size_t k = strlen(code);
    const char *p = langs;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t m = e ? (size_t)(e - p) : strlen(p);
        if (m == k && !strncasecmp(p, code, k))
            return 1;
        p += m + (e ? 1 : 0);
    }
    return 0;
}
