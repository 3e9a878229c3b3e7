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
 * were designed for.
 *
 * The workload is every crawl document, so the rules share their work: one
 * scan over 64-byte masks of space bytes finds the words, and which gaps
 * break a line or a paragraph, for the length and both Gopher rules;
 * repeated lines, paragraphs and n-grams are counted by 64-bit hash in one
 * open-addressing table whose rounds are told apart by a tag (never
 * cleared), kept per thread with the word arrays between calls (up to
 * 4 MB each; a larger one is freed after its document); C4 finds its
 * phrases through one rare letter of each instead of searching each phrase.
 * tests/test_ingest_filters.c holds naive models of every rule and checks
 * these against them.
 */
#include "ingest/internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#define XXH_INLINE_ALL /* the word and line hashes are short: inline them */
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

/* ---- byte classes ---- */

enum { CL_SP = 1, CL_LETTER = 2 };
static unsigned char cls[256];
static unsigned char lower_tab[256];

__attribute__((constructor)) static void init_tables(void)
{
    for (int c = 0; c < 256; c++) {
        lower_tab[c] = (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v')
            cls[c] |= CL_SP;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80)
            cls[c] |= CL_LETTER;
    }
}

static inline int is_sp(char c) { return cls[(unsigned char)c] & CL_SP; }

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

typedef struct {
    const char *p;
    size_t n;
} span_t;

/* ---- per-thread scratch ----
 * The word arrays and the counting table live between calls, so a
 * document costs no allocation and finds the table warm in the cache; a
 * buffer grown past SCRATCH_KEEP for a huge document is freed after it. */
#define SCRATCH_KEEP ((size_t)4 << 20)
enum { SC_WORDS, SC_BRK, SC_HASH, SC_AT, SC_TABLE, SC_N };
static _Thread_local struct {
    void *p;
    size_t cap;
} sc[SC_N];

/* Scratch buffer k of at least bytes bytes (contents undefined, except
 * SC_TABLE, which is zeroed when it is (re)allocated). */
static void *scratch(int k, size_t bytes)
{
    if (bytes > sc[k].cap) {
        free(sc[k].p);
        sc[k].p = k == SC_TABLE ? gl_xcalloc(1, bytes) : gl_xmalloc(bytes);
        sc[k].cap = bytes;
    }
    return sc[k].p;
}

static void scratch_done(void)
{
    for (int k = 0; k < SC_N; k++)
        if (sc[k].cap > SCRATCH_KEEP) {
            free(sc[k].p);
            sc[k].p = NULL;
            sc[k].cap = 0;
        }
}

/* ---- one pass over a text: its words, lines and paragraphs ----
 *
 * Words are runs of non-space bytes. A line is the text between '\n's
 * with its surrounding spaces trimmed, a paragraph the text between
 * "\n\n"s trimmed the same way; empty ones do not count. So a line (a
 * paragraph) is exactly a run of words with no '\n' ("\n\n") in the gaps
 * between them, spanning from its first word's start to its last word's
 * end: one scan finds the words and marks which gaps break a line or a
 * paragraph, and every rule works from that. */
typedef struct {
    const char *t;
    size_t n;
    span_t *w;             /* words */
    unsigned char *brk;    /* per word: 1 = starts a line, 3 = starts a paragraph too */
    size_t nw, nl, np, chars;
} view_t;

static void view_init(view_t *v, const char *t, size_t n)
{
    memset(v, 0, sizeof *v);
    v->t = t;
    v->n = n;
    size_t cap = n / 2 + 2; /* a word and its gap take 2 bytes or more */
    span_t *w = v->w = scratch(SC_WORDS, cap * sizeof *v->w);
    unsigned char *brk = v->brk = scratch(SC_BRK, cap);
    size_t nw = 0, nl = 0, np = 0, chars = 0, ws = 0, we = 0;
    const unsigned char *u = (const unsigned char *)t;
    int in = 0; /* inside a word */
    /* per block of 64 bytes, a mask of its spaces; words start where a
     * space bit is followed by a non-space one and end at the next space */
    for (size_t base = 0; base < n; base += 64) {
        size_t m = n - base < 64 ? n - base : 64;
        uint64_t sp = ingest_bytemask(u + base, m, INGEST_BM_SPACE, 1);
        uint64_t after_sp = sp << 1 | (uint64_t)!in;
        uint64_t starts = ~sp & after_sp, ends = sp & ~after_sp;
        for (;;) {
            if (in) {
                if (!ends)
                    break;
                size_t e = base + (size_t)__builtin_ctzll(ends);
                ends &= ends - 1;
                w[nw++] = (span_t){t + ws, e - ws};
                chars += e - ws;
                we = e;
                in = 0;
            } else {
                if (!starts)
                    break;
                size_t s = base + (size_t)__builtin_ctzll(starts);
                starts &= starts - 1;
                /* the gap: a '\n' breaks the line, two in a row the paragraph */
                unsigned br = 3;
                if (nw) {
                    br = 0;
                    for (size_t j = we; j < s; j++)
                        if (u[j] == '\n')
                            br |= j + 1 < s && u[j + 1] == '\n' ? 3 : 1;
                }
                brk[nw] = (unsigned char)br;
                nl += br & 1;
                np += br >> 1;
                ws = s;
                in = 1;
            }
        }
    }
    if (in) {
        w[nw++] = (span_t){t + ws, n - ws};
        chars += n - ws;
    }
    v->nw = nw;
    v->nl = nl;
    v->np = np;
    v->chars = chars;
}

static void view_free(view_t *v)
{
    (void)v;
    scratch_done();
}

/* The line (mask 1) or paragraph (mask 2) that starts at word *i, as a
 * span; advances *i past it. */
static span_t next_group(const view_t *v, size_t *i, unsigned mask)
{
    size_t a = *i, b = a + 1;
    while (b < v->nw && !(v->brk[b] & mask))
        b++;
    *i = b;
    const span_t *last = &v->w[b - 1];
    return (span_t){v->w[a].p, (size_t)(last->p + last->n - v->w[a].p)};
}

static int ends_ellipsis(const char *p, size_t n)
{
    return n >= 3 && (p[n - 1] == '.' || p[n - 1] == '\xa6') &&
           (!memcmp(p + n - 3, "...", 3) || !memcmp(p + n - 3, "\xe2\x80\xa6", 3));
}

/* One of the stop words the, be, to, of, and, that, have, with (any case). */
static int is_stop(const char *p, size_t n)
{
    if (n < 2 || n > 4)
        return 0;
    uint32_t x = 0;
    for (size_t k = 0; k < n; k++)
        x |= (uint32_t)lower_tab[(unsigned char)p[k]] << (8 * k);
#define W2(a, b) ((uint32_t)(a) | (uint32_t)(b) << 8)
#define W3(a, b, c) (W2(a, b) | (uint32_t)(c) << 16)
#define W4(a, b, c, d) (W3(a, b, c) | (uint32_t)(d) << 24)
    switch (n) {
    case 2: return x == W2('b', 'e') || x == W2('t', 'o') || x == W2('o', 'f');
    case 3: return x == W3('t', 'h', 'e') || x == W3('a', 'n', 'd');
    default: return x == W4('t', 'h', 'a', 't') || x == W4('h', 'a', 'v', 'e') || x == W4('w', 'i', 't', 'h');
    }
#undef W2
#undef W3
#undef W4
}

static int gopher_quality(const view_t *v)
{
    const span_t *w = v->w;
    size_t nw = v->nw, nl = v->nl;
    if (nw < 50 || nw > 100000)
        return 0;
    double mean = (double)v->chars / (double)nw;
    if (mean < 3 || mean > 10)
        return 0;
    size_t alpha = 0, hashes = 0, ell = 0, stops = 0, bullets = 0, ellend = 0;
    for (size_t i = 0; i < v->n; i++)
        hashes += v->t[i] == '#'; /* '#' is not a space: every one is in a word */
    for (size_t i = 0; i < nw; i++) {
        const unsigned char *p = (const unsigned char *)w[i].p;
        size_t m = w[i].n, k = 0;
        while (k < m && !(cls[p[k]] & CL_LETTER))
            k++;
        alpha += k < m;
        ell += ends_ellipsis(w[i].p, m);
        stops += is_stop(w[i].p, m);
        /* a line's first and last bytes are its first and last word's */
        if (v->brk[i] && (p[0] == '-' || p[0] == '*' || (m >= 3 && !memcmp(p, "\xe2\x80\xa2", 3)) ||
                          (m >= 3 && !memcmp(p, "\xe2\x97\x8f", 3))))
            bullets++;
        if ((i + 1 == nw || v->brk[i + 1]) && ends_ellipsis(w[i].p, m))
            ellend++;
    }
    if ((double)(hashes + ell) / (double)nw > 0.1)
        return 0;
    if (nl && (double)bullets / (double)nl > 0.9)
        return 0;
    if (nl && (double)ellend / (double)nl > 0.3)
        return 0;
    if ((double)alpha / (double)nw < 0.8)
        return 0;
    if (stops < 2)
        return 0;
    return 1;
}

int ingest_gopher_quality(const char *t, size_t n)
{
    view_t v;
    view_init(&v, t, n);
    int ok = gopher_quality(&v);
    view_free(&v);
    return ok;
}

/* ---- counting 64-bit keys: an open-addressing table ----
 * Each counting round (lines, paragraphs, each n, and each call) tags its
 * slots with its own number, so a slot of an earlier round reads as empty
 * and the table is never cleared, only zeroed when allocated (and when the
 * tag wraps around). */
typedef struct {
    uint64_t key;
    uint32_t cnt, tag;
} slot_t;

typedef struct {
    slot_t *s;
    size_t mask;
    unsigned shift;
    uint32_t tag;
} ctab_t;

static _Thread_local uint32_t ctab_tag;

/* A table for up to n keys per round (scratch: valid until scratch_done). */
static void ctab_init(ctab_t *t, size_t n)
{
    size_t cap = 16;
    unsigned bits = 4;
    while (cap < n * 2) {
        cap *= 2;
        bits++;
    }
    t->s = scratch(SC_TABLE, cap * sizeof *t->s);
    t->mask = cap - 1;
    t->shift = 64 - bits;
    t->tag = ctab_tag;
}

/* Starts a round: later adds ignore the slots of earlier rounds. */
static void ctab_round(ctab_t *t)
{
    if (++ctab_tag == 0) {
        memset(sc[SC_TABLE].p, 0, sc[SC_TABLE].cap);
        ctab_tag = 1;
    }
    t->tag = ctab_tag;
}

/* The slot of key (one added to its count) in the current round. Keys are
 * compared with their low bit set (0 is never a key), so the home slot
 * comes from the high bits (Fibonacci hashing), not from the low ones,
 * whose lowest is then always 1 and would leave half the table unused. */
static inline size_t ctab_home(const ctab_t *t, uint64_t key)
{
    return (size_t)(((key | 1) * 0x9e3779b97f4a7c15ull) >> t->shift);
}

static inline slot_t *ctab_add(ctab_t *t, uint64_t key)
{
    size_t i = ctab_home(t, key);
    key |= 1;
    for (;;) {
        slot_t *s = &t->s[i];
        if (s->tag != t->tag) {
            s->tag = t->tag;
            s->key = key;
            s->cnt = 1;
            return s;
        }
        if (s->key == key) {
            s->cnt++;
            return s;
        }
        i = (i + 1) & t->mask;
    }
}

/* Fraction of the lines or paragraphs (by count and by characters) that
 * repeat an earlier one. */
static void dup_fracs(const view_t *v, ctab_t *t, unsigned mask, double *by_count, double *by_chars)
{
    ctab_round(t);
    size_t dup = 0, dupc = 0, all = 0, n = 0;
    for (size_t i = 0; i < v->nw;) {
        span_t s = next_group(v, &i, mask);
        n++;
        all += s.n;
        if (ctab_add(t, XXH3_64bits(s.p, s.n))->cnt > 1) {
            dup++;
            dupc += s.n;
        }
    }
    *by_count = n ? (double)dup / (double)n : 0;
    *by_chars = all ? (double)dupc / (double)all : 0;
}

/* ---- n-gram keys ----
 * The key of the k-gram at word i comes from a chain over its words'
 * hashes: c_1 = (S ^ h_i) * P, c_j = (c_{j-1} ^ h_{i+j-1}) * P + (j - 1),
 * key = c_k ^ (c_k >> 29). The chain of the (k+1)-gram at i extends that
 * of the k-gram at i by one step, so the rounds k = 2, 3, ... each cost one
 * step per word; equal n-grams get equal keys, and different ones equal
 * keys with probability 2^-64. */
#define GRAM_SEED 0x9e3779b97f4a7c15ull
#define GRAM_MUL 0x100000001b3ull

typedef struct {
    const uint64_t *wh; /* word hashes */
    uint64_t *c;        /* chain per position, for the current k */
    uint64_t *key;      /* keys of the current k */
    size_t nw, k;
} grams_t;

static void grams_init(grams_t *g, const uint64_t *wh, size_t nw, uint64_t *c, uint64_t *key)
{
    *g = (grams_t){wh, c, key, nw, 1};
    for (size_t i = 0; i < nw; i++)
        c[i] = (GRAM_SEED ^ wh[i]) * GRAM_MUL;
}

/* Moves to k + 1; returns the number of (k+1)-grams, whose keys are in key[]. */
static size_t grams_next(grams_t *g)
{
    size_t k = g->k++, ng = g->nw - k;
    const uint64_t *wh = g->wh + k;
    uint64_t *restrict ch = g->c, *restrict key = g->key;
    for (size_t i = 0; i < ng; i++) {
        uint64_t c = (ch[i] ^ wh[i]) * GRAM_MUL + k;
        ch[i] = c;
        key[i] = c ^ (c >> 29);
    }
    return ng;
}

#define PREFETCH_AHEAD 8

/* The next round's k-grams into the table: the slot of each into at[i]
 * (when at) and the highest count reached, at the position where it was
 * first reached (*best_at). Tables past L1 get their slots prefetched. */
static uint32_t count_grams(ctab_t *tb, grams_t *g, slot_t **at, size_t *best_at)
{
    size_t ng = grams_next(g);
    const uint64_t *key = g->key;
    ctab_round(tb);
    uint32_t best = 0;
    int pf = tb->mask >= 4096;
    for (size_t i = 0; i < ng; i++) {
        if (pf && i + PREFETCH_AHEAD < ng)
            __builtin_prefetch(&tb->s[ctab_home(tb, key[i + PREFETCH_AHEAD])], 1);
        slot_t *sl = ctab_add(tb, key[i]);
        if (at)
            at[i] = sl;
        if (sl->cnt > best) {
            best = sl->cnt;
            *best_at = i;
        }
    }
    return best;
}

/* The most frequent k-gram's share of the characters (count times its
 * length over total): the k-gram whose count first reaches the highest
 * count, measured at the occurrence where it does. *repeats says whether
 * any k-gram occurs twice. */
static double top_share(ctab_t *tb, const view_t *v, grams_t *g, size_t total, int *repeats)
{
    size_t best_at = 0, k = g->k + 1;
    uint32_t best = count_grams(tb, g, NULL, &best_at);
    *repeats = best >= 2;
    if (best < 2)
        return 0;
    size_t glen = 0;
    for (size_t j = 0; j < k; j++)
        glen += v->w[best_at + j].n;
    return (double)(glen * best) / (double)total;
}

/* The share of the characters in words inside a k-gram that occurs twice
 * or more; at[] is scratch of nw entries. */
static double dup_share(ctab_t *tb, const view_t *v, grams_t *g, slot_t **at, size_t total)
{
    size_t best_at, k = g->k + 1, nw = v->nw, ng = nw - k + 1;
    count_grams(tb, g, at, &best_at);
    size_t dc = 0, cover = 0; /* words before cover are inside a repeated k-gram */
    for (size_t i = 0; i < nw; i++) {
        if (i < ng && at[i]->cnt > 1)
            cover = i + k;
        if (i < cover)
            dc += v->w[i].n;
    }
    return (double)dc / (double)total;
}

static int gopher_repetition(const view_t *v)
{
    const span_t *w = v->w;
    size_t nw = v->nw;
    int ok = 0;
    double c, ch;
    ctab_t tb;
    ctab_init(&tb, nw);
    dup_fracs(v, &tb, 1, &c, &ch);
    if (c > 0.3 || ch > 0.2)
        goto out;
    if (v->np != v->nl) { /* else every line is a paragraph */
        dup_fracs(v, &tb, 2, &c, &ch);
        if (c > 0.3 || ch > 0.2)
            goto out;
    }
    size_t total = v->chars;
    if (!total || nw < 2) {
        ok = 1;
        goto out;
    }
    uint64_t *wh = scratch(SC_HASH, 3 * nw * sizeof *wh);
    for (size_t i = 0; i < nw; i++)
        wh[i] = XXH3_64bits(w[i].p, w[i].n);
    grams_t g;
    grams_init(&g, wh, nw, wh + nw, wh + 2 * nw);
    /* the most frequent 2/3/4-gram covers at most 20/18/16%; when no
     * k-gram repeats, no longer one does */
    int rep = 0;
    if (top_share(&tb, v, &g, total, &rep) > 0.20)
        goto out;
    if (rep && nw >= 3 && top_share(&tb, v, &g, total, &rep) > 0.18)
        goto out;
    if (rep && nw >= 4 && top_share(&tb, v, &g, total, &rep) > 0.16)
        goto out;
    /* characters inside repeated 5..10-grams at most 15..10%; a word inside
     * a repeated (k+1)-gram is inside a repeated k-gram, so the shares only
     * fall with k: once one is at most 10%, the last bound, no longer
     * k-gram can break its own */
    static const double dup_max[11] = {0, 0, 0, 0, 0, 0.15, 0.14, 0.13, 0.12, 0.11, 0.10};
    if (rep && nw >= 5) {
        slot_t **at = scratch(SC_AT, nw * sizeof *at);
        for (size_t k = 5; k <= 10 && nw >= k; k++) {
            double d = dup_share(&tb, v, &g, at, total);
            if (d > dup_max[k])
                goto out;
            if (d <= dup_max[10])
                break;
        }
    }
    ok = 1;
out:
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

/* ---- C4 ---- */

/* The phrases C4 looks for, each found through one of its letters (its
 * anchor: j, v, f, k or p, the INGEST_BM_C4 class): every occurrence of
 * the anchor letter, in either case, is a place where the phrase could
 * hold it, and these letters are rare enough that most 64-byte blocks
 * hold few. */
static const struct {
    const char *s;
    char anchor;
} c4_phrase[] = {
    {"javascript", 'j'},  {"privacy policy", 'v'}, {"terms of use", 'f'}, {"cookie policy", 'k'},
    {"uses cookies", 'k'}, {"use of cookies", 'k'}, {"use cookies", 'k'},  {"lorem ipsum", 'p'},
};
#define C4_NPHRASE (sizeof c4_phrase / sizeof c4_phrase[0])
#define C4_LOREM (C4_NPHRASE - 1)
/* per anchor letter (lowercase), its phrases: index, anchor offset, length */
static struct {
    unsigned char n, f[C4_NPHRASE], at[C4_NPHRASE], len[C4_NPHRASE];
} c4_by_anchor[26];

__attribute__((constructor)) static void c4_tables(void)
{
    for (size_t f = 0; f < C4_NPHRASE; f++) {
        int a = c4_phrase[f].anchor - 'a';
        unsigned k = c4_by_anchor[a].n++;
        c4_by_anchor[a].f[k] = (unsigned char)f;
        c4_by_anchor[a].at[k] = (unsigned char)(strchr(c4_phrase[f].s, c4_phrase[f].anchor) - c4_phrase[f].s);
        c4_by_anchor[a].len[k] = (unsigned char)strlen(c4_phrase[f].s);
    }
}

static int match_lower(const unsigned char *p, const char *lower, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (lower_tab[p[k]] != (unsigned char)lower[k])
            return 0;
    return 1;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* The offsets where a line-dropping phrase starts, sorted, into *hits
 * (caller frees); returns how many, or -1 when the text has "lorem ipsum". */
static long c4_find_phrases(const char *t, size_t n, size_t **hits)
{
    const unsigned char *u = (const unsigned char *)t;
    size_t nh = 0, cap = 0;
    *hits = NULL;
    for (size_t base = 0; base < n; base += 64) {
        size_t m = n - base < 64 ? n - base : 64;
        for (uint64_t mk = ingest_bytemask(u + base, m, INGEST_BM_C4, 0); mk; mk &= mk - 1) {
            size_t off = base + (size_t)__builtin_ctzll(mk);
            int a = lower_tab[u[off]] - 'a';
            for (unsigned k = 0; k < c4_by_anchor[a].n; k++) {
                size_t at = c4_by_anchor[a].at[k], len = c4_by_anchor[a].len[k], f = c4_by_anchor[a].f[k];
                if (off < at || off - at + len > n || !match_lower(u + off - at, c4_phrase[f].s, len))
                    continue;
                if (f == C4_LOREM) {
                    free(*hits);
                    *hits = NULL;
                    return -1;
                }
                if (nh == cap)
                    *hits = gl_xrealloc(*hits, (cap = cap ? cap * 2 : 16) * sizeof **hits);
                (*hits)[nh++] = off - at;
            }
        }
    }
    if (nh > 1) /* found in anchor order, not start order */
        qsort(*hits, nh, sizeof **hits, cmp_size);
    return (long)nh;
}

/* Number of '.', '!' or '?' in p[0..m) followed by a space or the end;
 * byte counters over stretches of 240 bytes, so that it vectorises. */
static size_t sentence_ends(const char *p, size_t m)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t total = 0;
    for (size_t k = 1; k < m;) {
        size_t end = m - k > 240 ? k + 240 : m;
        uint8_t acc = 0;
        for (; k < end; k++) {
            uint8_t a = u[k - 1], b = u[k];
            uint8_t t = (uint8_t)-(a == '.') | (uint8_t)-(a == '!') | (uint8_t)-(a == '?');
            acc = (uint8_t)(acc - (t & (uint8_t)-(b == ' ')));
        }
        total += acc;
    }
    char last = p[m - 1];
    return total + (last == '.' || last == '!' || last == '?');
}

int ingest_c4(const char *t, size_t n, ingest_buf_t *out)
{
    ibuf_clear(out);
    if (memchr(t, '{', n))
        return 0;
    size_t *hits;
    long nh = c4_find_phrases(t, n, &hits);
    if (nh < 0)
        return 0;
    ibuf_reserve(out, n);
    size_t sentences = 0, h = 0;
    const char *end = t + n;
    for (const char *ls = t; ls < end;) {
        const char *nl = memchr(ls, '\n', (size_t)(end - ls));
        const char *le = nl ? nl : end;
        const char *p = ls, *e = le;
        ls = nl ? nl + 1 : end;
        while (e > p && is_sp(e[-1]))
            e--;
        while (p < e && is_sp(*p))
            p++;
        size_t m = (size_t)(e - p);
        if (!m)
            continue;
        /* a phrase in this line drops it (phrases lie inside one line) */
        int bad = 0;
        while (h < (size_t)nh && t + hits[h] < e) {
            bad |= t + hits[h] >= p;
            h++;
        }
        char last = p[m - 1];
        int term = last == '.' || last == '!' || last == '?' || last == '"' || last == '\'' ||
                   (m >= 3 && (!memcmp(p + m - 3, "\xe3\x80\x82", 3) || !memcmp(p + m - 3, "\xef\xbc\x81", 3) ||
                               !memcmp(p + m - 3, "\xef\xbc\x9f", 3)));
        if (bad || !term || (m >= 3 && !memcmp(p + m - 3, "...", 3)) || count_words(p, m, 3) < 3)
            continue;
        /* sentence ends: . ! ? followed by a space or the line's end */
        sentences += sentence_ends(p, m);
        if (out->len)
            out->p[out->len++] = '\n';
        memcpy(out->p + out->len, p, m);
        out->len += m;
    }
    out->p[out->len] = 0;
    free(hits);
    return sentences >= 3;
}

static int email_char(char c) { return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }

void ingest_pii_scrub(const char *t, size_t n, ingest_buf_t *out, uint64_t counts[2])
{
    ibuf_clear(out);
    ibuf_reserve(out, n + 16);
    size_t i = 0, copied = 0;
    const unsigned char *u = (const unsigned char *)t;
    while (i < n) {
        /* only an '@' or a digit can start a replacement: skip to the next */
        size_t m = n - i < 64 ? n - i : 64;
        uint64_t hit = ingest_bytemask(u + i, m, INGEST_BM_PII, 0);
        if (!hit) {
            i += m;
            continue;
        }
        i += (size_t)__builtin_ctzll(hit);
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
    ingest_buf_t c4 = {0};
    int r = -1;
    const char *t = text;
    size_t n = len;
    ibuf_clear(out);
    if (o->c4) {
        if (!ingest_c4(text, len, &c4)) {
            r = INGEST_DROP_C4;
            goto done;
        }
        t = c4.p;
        n = c4.len;
    }
    if (o->length || o->gopher_quality || o->gopher_repetition) {
        view_t v;
        view_init(&v, t, n);
        if (o->length && (n < o->min_chars || v.nw < o->min_words))
            r = INGEST_DROP_LENGTH;
        else if (o->gopher_quality && !gopher_quality(&v))
            r = INGEST_DROP_GOPHER_QUALITY;
        else if (o->gopher_repetition && !gopher_repetition(&v))
            r = INGEST_DROP_GOPHER_REPETITION;
        view_free(&v);
        if (r >= 0)
            goto done;
    }
    if (o->languages && *o->languages && !lang_ok(o->languages, t, n)) {
        r = INGEST_DROP_LANGUAGE;
        goto done;
    }
    if (o->pii)
        ingest_pii_scrub(t, n, out, pii_counts);
    else
        ibuf_put(out, t, n);
done:
    ingest_buf_free(&c4);
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
