/* test_ingest_filters.c — the fast filters against naive models of their rules.
 *
 * ingest/filter.c computes the Gopher, C4, length and PII rules in a few
 * passes with hash tables and vector scans. Here each rule is written the
 * slow, obvious way from its definition (words and lines split by hand,
 * lines and n-grams compared as strings, phrases found with memmem on a
 * lowercased copy, PII replaced byte by byte), and both run side by side
 * on thousands of random texts built to hit every rule's edges: stop
 * words in any case, bullets, ellipses, repeated lines, paragraphs and
 * n-grams, C4's phrases inside words and across line breaks, braces,
 * "lorem ipsum", e-mail and IP look-alikes, every kind of space. The
 * MinHash signature of a text must equal that of its normalised form
 * (lowercase, one space between words of letters and digits).
 */
#include "ingest/ingest.h"
#include "ingest/internal.h"
#include "tests/tap.h"

#include <stdlib.h>
#include <string.h>

/* ---- random texts ---- */

static uint64_t rng = 0x1234567887654321ull;
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static const char *const vocab[] = {
    "the", "The", "THE", "be", "Be", "to", "of", "OF", "and", "that", "have", "with", "With", "tHaT",
    "history", "town", "river", "market", "bridge", "stone", "summer", "people", "region", "square",
    "end.", "yes!", "why?", "said\"", "it's'", "wait...", "so\xe2\x80\xa6", "\xe5\xa5\xbd\xe3\x80\x82",
    "\xe5\x90\x97\xef\xbc\x9f", "\xe5\x95\x8a\xef\xbc\x81", "a.b", "x!y", "-", "*", "\xe2\x80\xa2", "\xe2\x97\x8f",
    "-item", "*star", "\xe2\x80\xa2" "dot", "#tag", "##", "#", "...", "\xe2\x80\xa6", "42", "3.14", "v1.2.3.4",
    "10.0.0.1", "192.168.1.255", "999.1.1.1", "1.2.3.4.5", "john@mail.example.org", "a@b.", "x@y.co",
    "user.name+tag@sub.domain.com", "@home", "me@", "javascript", "JavaScript", "nojavascript", "Privacy",
    "privacy", "policy", "Policy", "cookie", "Cookie", "cookies", "COOKIES", "uses", "use", "Use", "of", "terms",
    "Terms", "ipsum", "IPSUM", "}", "caf\xc3\xa9", "na\xc3\xafve", "\xd0\x91\xd1\x8a\xd0\xbb",
    "w0rd", "under_score", "hy-phen", "it's", "(paren)", "\"quoted\"", "e.g.", "U.S.", "ok", "a", "I",
};
#define NVOCAB (sizeof vocab / sizeof vocab[0])
static const char *const gaps[] = {" ", " ", " ", " ", " ", "  ", "\t", "\n", "\n", "\n\n", "\r\n", " \n",
                                   "\n ", "\n \n", "\n\n\n", "\f", "\v", "\r", " \t ", "\r\n\r\n"};
#define NGAPS (sizeof gaps / sizeof gaps[0])

/* A random text of about words words into buf (cap bytes); some texts
 * repeat earlier stretches to trip the repetition rules. */
static size_t random_text(char *buf, size_t cap, unsigned words, int rare_words)
{
    size_t n = 0;
    unsigned mode = rnd(4);
    if (rnd(4) == 0) /* leading spaces */
        n += (size_t)snprintf(buf + n, cap - n, "%s", gaps[rnd(NGAPS)]);
    for (unsigned i = 0; i < words && n + 200 < cap; i++) {
        if (mode && n > 20 && rnd(mode == 3 ? 4 : 30) == 0) {
            /* repeat an earlier stretch, or the text since the last line
             * or paragraph break */
            size_t from = rnd((unsigned)n), len = 1 + rnd(mode == 3 ? 120 : 40);
            unsigned how = rnd(3);
            if (how) {
                const char *brk = how == 1 ? "\n" : "\n\n";
                for (from = n - 1; from > 0 && memcmp(buf + from - 1, brk, strlen(brk)); from--)
                    ;
                len = n - from;
            }
            if (from + len > n)
                len = n - from;
            if (n + len + 1 < cap) {
                memmove(buf + n, buf + from, len);
                n += len;
            }
            continue;
        }
        static const char *const rare[] = {"{", "x{y", "lorem", "Lorem", "LOREM"};
        const char *w;
        char tmp[32];
        if (rnd(400) == 0) {
            w = rare[rnd(5)];
        } else if (rare_words && rnd(3) == 0) {
            snprintf(tmp, sizeof tmp, "w%u", rnd(100000));
            w = tmp;
        } else {
            w = vocab[rnd(NVOCAB)];
        }
        size_t k = strlen(w);
        memcpy(buf + n, w, k);
        n += k;
        const char *g = rnd(12) == 0 ? gaps[rnd(NGAPS)] : " ";
        if (rnd(200) == 0) /* a word glued to the next */
            g = "";
        if (strchr(g, '\n') && rnd(3)) /* most lines end a sentence */
            buf[n++] = ".!?"[rnd(3)];
        k = strlen(g);
        memcpy(buf + n, g, k);
        n += k;
    }
    buf[n] = 0;
    return n;
}

/* ---- naive models ---- */

typedef struct {
    const char *p;
    size_t n;
} sp_t;

static int nsp(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static size_t n_words(const char *t, size_t n, sp_t *w)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (nsp(t[i])) {
            i++;
            continue;
        }
        size_t s = i;
        while (i < n && !nsp(t[i]))
            i++;
        w[k++] = (sp_t){t + s, i - s};
    }
    return k;
}

static sp_t trim(const char *p, size_t n)
{
    while (n && nsp(p[n - 1]))
        n--;
    while (n && nsp(p[0])) {
        p++;
        n--;
    }
    return (sp_t){p, n};
}

/* Lines (split at each '\n') or paragraphs (split at each "\n\n"), trimmed,
 * empty ones left out. */
static size_t n_lines(const char *t, size_t n, int para, sp_t *l)
{
    size_t k = 0, s = 0;
    for (size_t i = 0; i <= n; i++) {
        int cut = i == n || (para ? (i + 1 < n && t[i] == '\n' && t[i + 1] == '\n') : t[i] == '\n');
        if (!cut)
            continue;
        sp_t x = trim(t + s, i - s);
        if (x.n)
            l[k++] = x;
        s = i + 1;
    }
    return k;
}

static int ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x += 32;
        if (y >= 'A' && y <= 'Z')
            y += 32;
        if (x != y)
            return 0;
    }
    return 1;
}

static int suffix(sp_t s, const char *x)
{
    size_t k = strlen(x);
    return s.n >= k && !memcmp(s.p + s.n - k, x, k);
}

static int prefix(sp_t s, const char *x)
{
    size_t k = strlen(x);
    return s.n >= k && !memcmp(s.p, x, k);
}

static int n_quality(const char *t, size_t n)
{
    sp_t *w = malloc((n + 1) * sizeof *w), *l = malloc((n + 1) * sizeof *l);
    size_t nw = n_words(t, n, w), nl = n_lines(t, n, 0, l);
    int ok = 0;
    if (nw < 50 || nw > 100000)
        goto out;
    size_t chars = 0, alpha = 0, sym = 0, stops = 0;
    static const char *const stop[] = {"the", "be", "to", "of", "and", "that", "have", "with"};
    for (size_t i = 0; i < nw; i++) {
        chars += w[i].n;
        int letter = 0;
        for (size_t k = 0; k < w[i].n; k++) {
            unsigned char c = (unsigned char)w[i].p[k];
            letter |= (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
            sym += c == '#';
        }
        alpha += letter;
        sym += suffix(w[i], "...") || suffix(w[i], "\xe2\x80\xa6");
        for (int s = 0; s < 8; s++)
            stops += strlen(stop[s]) == w[i].n && ieq(w[i].p, stop[s], w[i].n);
    }
    size_t bullets = 0, ellend = 0;
    for (size_t i = 0; i < nl; i++) {
        bullets += prefix(l[i], "-") || prefix(l[i], "*") || prefix(l[i], "\xe2\x80\xa2") || prefix(l[i], "\xe2\x97\x8f");
        ellend += suffix(l[i], "...") || suffix(l[i], "\xe2\x80\xa6");
    }
    double mean = (double)chars / (double)nw;
    ok = mean >= 3 && mean <= 10 && (double)sym / (double)nw <= 0.1 && (!nl || (double)bullets / (double)nl <= 0.9) &&
         (!nl || (double)ellend / (double)nl <= 0.3) && (double)alpha / (double)nw >= 0.8 && stops >= 2;
out:
    free(w);
    free(l);
    return ok;
}

static int span_eq(sp_t a, sp_t b) { return a.n == b.n && !memcmp(a.p, b.p, a.n); }

static int gram_eq(const sp_t *w, size_t i, size_t j, size_t k)
{
    for (size_t q = 0; q < k; q++)
        if (!span_eq(w[i + q], w[j + q]))
            return 0;
    return 1;
}

/* Duplicate fractions by count and characters: an item that equals an
 * earlier one is a duplicate. */
static int n_dups_ok(const sp_t *s, size_t n)
{
    size_t dup = 0, dupc = 0, all = 0;
    for (size_t i = 0; i < n; i++) {
        all += s[i].n;
        for (size_t j = 0; j < i; j++)
            if (span_eq(s[i], s[j])) {
                dup++;
                dupc += s[i].n;
                break;
            }
    }
    return !((n && (double)dup / (double)n > 0.3) || (all && (double)dupc / (double)all > 0.2));
}

static int n_repetition(const char *t, size_t n)
{
    sp_t *w = malloc((n + 1) * sizeof *w), *l = malloc((n + 1) * sizeof *l);
    size_t nw = n_words(t, n, w);
    int ok = 0;
    if (!n_dups_ok(l, n_lines(t, n, 0, l)) || !n_dups_ok(l, n_lines(t, n, 1, l)))
        goto out;
    size_t total = 0;
    for (size_t i = 0; i < nw; i++)
        total += w[i].n;
    if (!total) {
        ok = 1;
        goto out;
    }
    /* top n-gram: the one whose running count first reaches the maximum */
    static const double top_max[5] = {0, 0, 0.20, 0.18, 0.16};
    for (size_t k = 2; k <= 4 && nw >= k; k++) {
        size_t best = 0, best_at = 0;
        for (size_t i = 0; i + k <= nw; i++) {
            size_t c = 0;
            for (size_t j = 0; j <= i; j++)
                c += gram_eq(w, i, j, k);
            if (c > best) {
                best = c;
                best_at = i;
            }
        }
        size_t glen = 0;
        for (size_t j = 0; j < k; j++)
            glen += w[best_at + j].n;
        if (best > 1 && (double)(glen * best) / (double)total > top_max[k])
            goto out;
    }
    static const double dup_max[11] = {0, 0, 0, 0, 0, 0.15, 0.14, 0.13, 0.12, 0.11, 0.10};
    char *twice = malloc(nw + 1);
    for (size_t k = 5; k <= 10 && nw >= k; k++) {
        for (size_t i = 0; i + k <= nw; i++) { /* the n-gram at i occurs elsewhere too */
            twice[i] = 0;
            for (size_t j = 0; j + k <= nw && !twice[i]; j++)
                twice[i] = j != i && gram_eq(w, i, j, k);
        }
        size_t dc = 0;
        for (size_t q = 0; q < nw; q++) {
            int in = 0; /* word q inside an n-gram that occurs twice */
            for (size_t i = q + 1 >= k ? q + 1 - k : 0; i <= q && i + k <= nw; i++)
                in |= twice[i];
            if (in)
                dc += w[q].n;
        }
        if ((double)dc / (double)total > dup_max[k]) {
            free(twice);
            goto out;
        }
    }
    free(twice);
    ok = 1;
out:
    free(w);
    free(l);
    return ok;
}

static int n_c4(const char *t, size_t n, ingest_buf_t *out, size_t *out_len)
{
    static const char *const bad[] = {"javascript", "terms of use", "privacy policy", "cookie policy",
                                      "uses cookies", "use of cookies", "use cookies"};
    *out_len = 0;
    if (memchr(t, '{', n))
        return 0;
    char *low = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        low[i] = t[i] >= 'A' && t[i] <= 'Z' ? (char)(t[i] + 32) : t[i];
    int found = memmem(low, n, "lorem ipsum", 11) != NULL;
    free(low);
    if (found)
        return 0;
    sp_t *l = malloc((n + 1) * sizeof *l);
    size_t nl = n_lines(t, n, 0, l), sentences = 0, len = 0;
    out->len = 0;
    for (size_t i = 0; i < nl; i++) {
        char *ll = malloc(l[i].n + 1);
        for (size_t k = 0; k < l[i].n; k++)
            ll[k] = l[i].p[k] >= 'A' && l[i].p[k] <= 'Z' ? (char)(l[i].p[k] + 32) : l[i].p[k];
        int drop = 0;
        for (int b = 0; b < 7; b++)
            drop |= memmem(ll, l[i].n, bad[b], strlen(bad[b])) != NULL;
        free(ll);
        sp_t x = l[i];
        char last = x.p[x.n - 1];
        int term = last == '.' || last == '!' || last == '?' || last == '"' || last == '\'' ||
                   suffix(x, "\xe3\x80\x82") || suffix(x, "\xef\xbc\x81") || suffix(x, "\xef\xbc\x9f");
        sp_t *ws = malloc((x.n + 1) * sizeof *ws);
        size_t nws = n_words(x.p, x.n, ws);
        free(ws);
        if (drop || !term || suffix(x, "...") || nws < 3)
            continue;
        for (size_t k = 0; k < x.n; k++)
            sentences += (x.p[k] == '.' || x.p[k] == '!' || x.p[k] == '?') && (k + 1 == x.n || x.p[k + 1] == ' ');
        if (len)
            out->p[len++] = '\n';
        memcpy(out->p + len, x.p, x.n);
        len += x.n;
    }
    free(l);
    *out_len = len;
    return sentences >= 3;
}

static int alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int digit(char c) { return c >= '0' && c <= '9'; }
static int email_c(char c) { return alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }

/* PII by its definition, one byte at a time. */
static size_t n_pii(const char *t, size_t n, char *o, uint64_t cnt[2])
{
    size_t i = 0, copied = 0, k = 0;
    while (i < n) {
        if (t[i] == '@' && i > 0 && email_c(t[i - 1])) {
            size_t s = i;
            while (s > copied && email_c(t[s - 1]))
                s--;
            size_t e = i + 1, dots = 0;
            while (e < n && (alnum(t[e]) || t[e] == '-' || t[e] == '.'))
                dots += t[e++] == '.';
            while (e > i + 1 && t[e - 1] == '.') {
                e--;
                dots--;
            }
            size_t tld = 0;
            while (e - tld > i + 1 && t[e - tld - 1] != '.')
                tld++;
            if (s < i && dots && tld >= 2 && !digit(t[e - 1]) && alnum(t[e - 1])) {
                memcpy(o + k, t + copied, s - copied);
                k += s - copied;
                memcpy(o + k, "email@example.com", 17);
                k += 17;
                cnt[0]++;
                copied = i = e;
                continue;
            }
        }
        if (digit(t[i]) && (i == 0 || (!alnum(t[i - 1]) && t[i - 1] != '.'))) {
            size_t e = i;
            int parts = 0, good = 1;
            while (parts < 4 && good) {
                size_t d = 0;
                unsigned v = 0;
                while (e < n && digit(t[e]) && d < 4) {
                    v = v * 10 + (unsigned)(t[e++] - '0');
                    d++;
                }
                good = d && d <= 3 && v <= 255;
                if (good && ++parts < 4) {
                    good = e + 1 < n && t[e] == '.' && digit(t[e + 1]);
                    e += good;
                }
            }
            if (good && parts == 4 && (e >= n || (!alnum(t[e]) && !(t[e] == '.' && e + 1 < n && digit(t[e + 1]))))) {
                memcpy(o + k, t + copied, i - copied);
                k += i - copied;
                memcpy(o + k, "0.0.0.0", 7);
                k += 7;
                cnt[1]++;
                copied = i = e;
                continue;
            }
            while (i < n && (digit(t[i]) || t[i] == '.'))
                i++;
            continue;
        }
        i++;
    }
    memcpy(o + k, t + copied, n - copied);
    return k + n - copied;
}

/* The whole chain with the crawl defaults (C4, length, Gopher, PII). */
static int n_filter(const char *t, size_t n, char *o, size_t *olen, uint64_t cnt[2])
{
    ingest_buf_t c4 = {0};
    c4.p = malloc(n + 1);
    size_t len;
    int r = -1;
    if (!n_c4(t, n, &c4, &len)) {
        r = INGEST_DROP_C4;
        goto out;
    }
    sp_t *w = malloc((len + 1) * sizeof *w);
    size_t nw = n_words(c4.p, len, w);
    free(w);
    if (len < 200 || nw < 20)
        r = INGEST_DROP_LENGTH;
    else if (!n_quality(c4.p, len))
        r = INGEST_DROP_GOPHER_QUALITY;
    else if (!n_repetition(c4.p, len))
        r = INGEST_DROP_GOPHER_REPETITION;
    else
        *olen = n_pii(c4.p, len, o, cnt);
out:
    free(c4.p);
    return r;
}

/* MinHash's normal form: lowercase runs of letters, digits and non-ASCII
 * bytes, one space between them. */
static size_t mh_norm(const char *t, size_t n, char *o)
{
    size_t k = 0;
    int in = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (alnum((char)c) || c >= 0x80) {
            if (!in && k)
                o[k++] = ' ';
            o[k++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            in = 1;
        } else {
            in = 0;
        }
    }
    return k;
}

/* Texts on the edges random texts seldom reach. */
static void crafted(void)
{
    char t[4000];
    /* lines pass, paragraphs fail: one paragraph of 10 distinct lines, then
     * a short paragraph twice (1 of 12 lines repeats, 1 of 3 paragraphs) */
    char head[1000];
    size_t n = 0;
    for (int i = 0; i < 10; i++)
        n += (size_t)snprintf(head + n, sizeof head - n, "alpha%d beta%d gamma%d delta%d\n", i, i, i, i);
    n = (size_t)snprintf(t, sizeof t, "%s\nshort one\n\nshort one\n", head);
    is_int(ingest_gopher_repetition(t, n), n_repetition(t, n), "crafted: paragraphs repeat where lines do not");
    is_int(ingest_gopher_repetition(t, n), 0, "crafted: that fails the paragraph rule");
    /* "\n \n" is not a paragraph break */
    n = (size_t)snprintf(t, sizeof t, "%s\n \nshort one\n \nshort one\n", head);
    is_int(ingest_gopher_repetition(t, n), n_repetition(t, n), "crafted: a blank line with a space does not part paragraphs");
    is_int(ingest_gopher_repetition(t, n), 1, "crafted: so that passes");
    /* two 2-grams reach a count of 3, the short one first: the top 2-gram
     * is the short one (the first to reach the highest count) */
    n = (size_t)snprintf(t, sizeof t, "x y a1 b1 c1 x y a2 b2 c2 x y a3 b3 c3 longwordaaaa longwordbbbb d1 e1 f1 "
                         "longwordaaaa longwordbbbb d2 e2 f2 longwordaaaa longwordbbbb d3 e3 f3");
    is_int(ingest_gopher_repetition(t, n), n_repetition(t, n), "crafted: ties for the top 2-gram");
}

/* The vector byte classes against their portable definition. */
static void bytemasks(void)
{
    unsigned char b[64 + 64];
    int bad = 0;
    for (int it = 0; it < 20000; it++) {
        for (int i = 0; i < 128; i++) /* every byte value, skewed to the edges of the classes */
            b[i] = (unsigned char)(it < 4 ? (it * 64 + i) & 255 : rnd(4) ? rnd(256) : (unsigned char)"\t\n\v\f\r\x08\x0e @09/:AZaz[`{\x7f\x80\xff"[rnd(23)]);
        size_t off = rnd(64), n = rnd(65);
        for (int c = INGEST_BM_SPACE; c <= INGEST_BM_C4; c++) {
            bad += ingest_bytemask64(b + off, c) != ingest_bytemask_ref(b + off, 64, c);
            uint64_t want = ingest_bytemask_ref(b + off, n, c);
            bad += ingest_bytemask(b + off, n, c, 0) != want;
            bad += ingest_bytemask(b + off, n, c, 1) != (want | (n < 64 ? ~0ull << n : 0));
        }
    }
    is_int(bad, 0, "byte-class masks equal their portable definition on random blocks");
}

int main(void)
{
    bytemasks();
    crafted();
    enum { CAP = 1 << 15 };
    char *t = malloc(CAP), *o = malloc(4 * CAP);
    ingest_buf_t out = {0};
    ingest_filter_opts_t fo;
    ingest_filter_opts_default(&fo, GPTLINE__SOURCE_KIND__CRAWL);
    int runs = getenv("GL_FILTER_RUNS") ? atoi(getenv("GL_FILTER_RUNS")) : 1500;
    int bad_q = 0, bad_r = 0, bad_c4 = 0, bad_pii = 0, bad_chain = 0, bad_mh = 0;
    unsigned seen_q[2] = {0, 0}, seen_r[2] = {0, 0}, seen_c4[2] = {0, 0}, seen_chain[INGEST_NCOUNTERS + 1] = {0};
    for (int it = 0; it < runs; it++) {
        unsigned words = 20 + rnd(it % 25 == 0 ? 600 : 250);
        size_t n = random_text(t, CAP, words, rnd(2));
        int q = ingest_gopher_quality(t, n), nq = n_quality(t, n);
        seen_q[nq]++;
        if (q != nq && bad_q++ < 3)
            tap_diag("Gopher quality differs (fast %d, naive %d) on:\n%s", q, nq, t);
        int r = ingest_gopher_repetition(t, n), nr = n_repetition(t, n);
        seen_r[nr]++;
        if (r != nr && bad_r++ < 3)
            tap_diag("Gopher repetition differs (fast %d, naive %d) on:\n%s", r, nr, t);
        size_t olen;
        int c = ingest_c4(t, n, &out);
        ingest_buf_t nb = {.p = o};
        int nc = n_c4(t, n, &nb, &olen);
        seen_c4[nc]++;
        if ((c != nc || out.len != olen || memcmp(out.p, o, olen)) && bad_c4++ < 3)
            tap_diag("C4 differs (fast %d, naive %d) on:\n%s\n-- fast:\n%.*s\n-- naive:\n%.*s", c, nc, t,
                     (int)out.len, out.p, (int)olen, o);
        uint64_t c1[2] = {0, 0}, c2[2] = {0, 0};
        ingest_pii_scrub(t, n, &out, c1);
        olen = n_pii(t, n, o, c2);
        if ((out.len != olen || memcmp(out.p, o, olen) || c1[0] != c2[0] || c1[1] != c2[1]) && bad_pii++ < 3)
            tap_diag("PII differs on:\n%s\n-- fast:\n%.*s\n-- naive:\n%.*s", t, (int)out.len, out.p, (int)olen, o);
        c1[0] = c1[1] = c2[0] = c2[1] = 0;
        int f = ingest_filter(&fo, t, n, &out, c1), nf = n_filter(t, n, o, &olen, c2);
        seen_chain[nf < 0 ? INGEST_NCOUNTERS : nf]++;
        if ((f != nf || (f < 0 && (out.len != olen || memcmp(out.p, o, olen) || c1[0] != c2[0] || c1[1] != c2[1]))) &&
            bad_chain++ < 3)
            tap_diag("filter chain differs (fast %d, naive %d) on:\n%s", f, nf, t);
        uint32_t s1[INGEST_MH_PERM], s2[INGEST_MH_PERM];
        ingest_minhash(t, n, s1);
        size_t m = mh_norm(t, n, o);
        ingest_minhash(o, m, s2);
        if (memcmp(s1, s2, sizeof s1) && bad_mh++ < 3)
            tap_diag("MinHash of the text and of its normal form differ:\n%s\n-- normal form:\n%.*s", t, (int)m, o);
    }
    is_int(bad_q, 0, "Gopher quality equals the naive rule on %d random texts (%u pass, %u fail)", runs, seen_q[1],
           seen_q[0]);
    is_int(bad_r, 0, "Gopher repetition equals the naive rule (%u pass, %u fail)", seen_r[1], seen_r[0]);
    is_int(bad_c4, 0, "C4 equals the naive rule, kept lines included (%u pass, %u fail)", seen_c4[1], seen_c4[0]);
    is_int(bad_pii, 0, "PII scrubbing equals the byte-by-byte rule");
    is_int(bad_chain, 0, "the crawl filter chain equals the naive chain (%u kept, %u c4, %u length, %u quality, %u repetition)",
           seen_chain[INGEST_NCOUNTERS], seen_chain[INGEST_DROP_C4], seen_chain[INGEST_DROP_LENGTH],
           seen_chain[INGEST_DROP_GOPHER_QUALITY], seen_chain[INGEST_DROP_GOPHER_REPETITION]);
    is_int(bad_mh, 0, "MinHash of a text equals that of its normal form");
    ok(seen_q[0] > 50 && seen_q[1] > 50 && seen_r[0] > 50 && seen_r[1] > 50 && seen_c4[0] > 50 && seen_c4[1] > 50,
       "the random texts pass and fail every rule often");
    ingest_buf_free(&out);
    free(t);
    free(o);
    return tap_done();
}
