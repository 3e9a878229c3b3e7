/* test_pretok.c — the pre-tokenizer: the reference matcher against PCRE2
 * and hand-checked splits, the fast scanners against the reference on the
 * real texts and on thousands of random and adversarial byte strings.
 *
 * Three independent views of the same regexes: PCRE2 running the pattern
 * text (on valid UTF-8, with characters whose classes PCRE2's older Unicode
 * tables disagree on replaced by U+FFFD), the reference backtracking matcher
 * (pretok_ref.c), and the hand-written scanners (pretok.c).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretok.h"
#include "tokenizer/unicode.h"
#include "common/common.h"
#include "tests/tap.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

static const tok_pretok_t ALL[] = {TOK_PRETOK_GPT2, TOK_PRETOK_CL100K, TOK_PRETOK_O200K};

/* ---- helpers ---------------------------------------------------------- */

static size_t put_utf8(uint8_t *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Prints a byte string as C-escaped text into a diagnostic. */
static void diag_bytes(const char *what, const uint8_t *s, size_t len)
{
    char buf[400];
    size_t o = 0;
    for (size_t i = 0; i < len && o < sizeof buf - 8; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7F && s[i] != '\\')
            buf[o++] = (char)s[i];
        else
            o += (size_t)snprintf(buf + o, sizeof buf - o, "\\x%02X", s[i]);
    }
    buf[o] = 0;
    tap_diag("%s (%zu bytes): \"%s\"%s", what, len, buf, o >= sizeof buf - 8 ? "..." : "");
}

typedef size_t (*next_fn)(tok_pretok_t, const uint8_t *, size_t, size_t);

/* Length of the well-formed UTF-8 sequence at s[k], or 0: decoded
 * leniently, then accepted only if it is a scalar value whose canonical
 * encoding is these very bytes. */
static size_t valid_seq_len(const uint8_t *s, size_t len, size_t k)
{
    uint8_t b = s[k];
    size_t n = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 0;
    if (!n || len - k < n)
        return 0;
    uint32_t cp = n == 1 ? b : (uint32_t)(b & (0x7F >> n));
    for (size_t i = 1; i < n; i++)
        cp = cp << 6 | (s[k + i] & 0x3Fu);
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    uint8_t enc[4];
    return put_utf8(enc, cp) == n && !memcmp(enc, s + k, n) ? n : 0;
}

/* Whether a piece boundary at b would cut a well-formed sequence. */
static int cuts_sequence(const uint8_t *s, size_t len, size_t b)
{
    for (size_t back = 1; back <= 3 && back <= b; back++)
        if (valid_seq_len(s, len, b - back) > back)
            return 1;
    return 0;
}

/* Splits s with both functions; returns the first byte offset where their
 * pieces differ, or (size_t)-1 when they agree everywhere. Also checks that
 * every piece is non-empty and within the input (so the pieces concatenate
 * to the input) and ends on a character boundary. */
static size_t first_difference(tok_pretok_t p, next_fn a, next_fn b, const uint8_t *s, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        size_t na = a(p, s, len, pos), nb = b(p, s, len, pos);
        if (na != nb || na == 0 || na > len - pos || cuts_sequence(s, len, pos + na))
            return pos;
        pos += na;
    }
    return (size_t)-1;
}

static int agree(tok_pretok_t p, const uint8_t *s, size_t len, const char *what)
{
    size_t at = first_difference(p, tok_pretok_next, tok_pretok_ref_next, s, len);
    if (at == (size_t)-1)
        return 1;
    tap_diag("%s: %s: fast %zu bytes, reference %zu bytes at offset %zu", what,
             tok_pretok_name(p), tok_pretok_next(p, s, len, at), tok_pretok_ref_next(p, s, len, at), at);
    size_t from = at > 16 ? at - 16 : 0;
    diag_bytes("context from 16 bytes before", s + from, len - from < 64 ? len - from : 64);
    return 0;
}

/* ---- PCRE2 as a second reference -------------------------------------- */

typedef struct {
    pcre2_code *re[4];
    pcre2_code *prop[9];
    pcre2_match_data *md;
    uint8_t *verdict; /* per code point: 0 unknown, 1 PCRE2 agrees, 2 not */
} pcre_ref;

static const char *const PROPS[9] = {"\\p{L}", "\\p{N}", "\\s", "\\p{Lu}", "\\p{Ll}",
                                     "\\p{Lt}", "\\p{Lm}", "\\p{Lo}", "\\p{M}"};

static pcre2_code *compile(const char *pat)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &code, &off, NULL);
    if (re)
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static int pcre_ref_init(pcre_ref *r)
{
    memset(r, 0, sizeof *r);
    for (int i = 0; i < 3; i++)
        if (!(r->re[ALL[i]] = compile(tok_pretok_regex(ALL[i]))))
            return -1;
    for (int i = 0; i < 9; i++)
        if (!(r->prop[i] = compile(PROPS[i])))
            return -1;
    r->md = pcre2_match_data_create(4, NULL);
    r->verdict = calloc(0x110000, 1);
    return r->md && r->verdict ? 0 : -1;
}

static void pcre_ref_free(pcre_ref *r)
{
    for (int i = 0; i < 4; i++)
        pcre2_code_free(r->re[i]);
    for (int i = 0; i < 9; i++)
        pcre2_code_free(r->prop[i]);
    pcre2_match_data_free(r->md);
    free(r->verdict);
}

/* Whether PCRE2's classes for cp equal those of our Unicode 16.0 table. */
static int pcre_agrees(pcre_ref *r, uint32_t cp)
{
    if (r->verdict[cp])
        return r->verdict[cp] == 1;
    tok_gc_t gc = tok_uc_gc(cp);
    int ours[9] = {
        gc <= TOK_GC_LO, gc >= TOK_GC_ND && gc <= TOK_GC_NO, tok_uc_gc_space(cp),
        gc == TOK_GC_LU, gc == TOK_GC_LL, gc == TOK_GC_LT, gc == TOK_GC_LM, gc == TOK_GC_LO,
        gc >= TOK_GC_MN && gc <= TOK_GC_ME,
    };
    uint8_t u[4];
    size_t n = put_utf8(u, cp);
    int same = 1;
    for (int i = 0; i < 9; i++) {
        int m = pcre2_match(r->prop[i], u, n, 0, PCRE2_ANCHORED, r->md, NULL) >= 0;
        if (m != ours[i])
            same = 0;
    }
    r->verdict[cp] = same ? 1 : 2;
    return same;
}

/* Copies valid UTF-8 text, replacing characters PCRE2 classifies
 * differently by U+FFFD (no class in both). Caller owns the result. */
static uint8_t *pcre_comparable(pcre_ref *r, const uint8_t *s, size_t len, size_t *out_len,
                                size_t *replaced)
{
    uint8_t *out = malloc(len * 3 + 4);
    size_t o = 0, i = 0;
    *replaced = 0;
    while (i < len) {
        uint32_t cp;
        size_t n;
        uint8_t b = s[i];
        if (b < 0x80)
            cp = b, n = 1;
        else if (b < 0xE0)
            cp = (uint32_t)(b & 0x1F) << 6 | (s[i + 1] & 0x3F), n = 2;
        else if (b < 0xF0)
            cp = (uint32_t)(b & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F), n = 3;
        else
            cp = (uint32_t)(b & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3F) << 12 |
                 (uint32_t)(s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F), n = 4;
        if (pcre_agrees(r, cp)) {
            memcpy(out + o, s + i, n);
            o += n;
        } else {
            o += put_utf8(out + o, 0xFFFD);
            (*replaced)++;
        }
        i += n;
    }
    *out_len = o;
    return out;
}

static size_t pcre_next_len(pcre_ref *r, tok_pretok_t p, const uint8_t *s, size_t len, size_t pos)
{
    int rc = pcre2_match(r->re[p], s, len, pos, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, r->md, NULL);
    if (rc < 0)
        return 0;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
    return ov[1] - ov[0];
}

/* Reference vs PCRE2 on valid UTF-8 text s. */
static int ref_agrees_with_pcre(pcre_ref *r, tok_pretok_t p, const uint8_t *s, size_t len,
                                const char *what)
{
    size_t n, replaced;
    uint8_t *t = pcre_comparable(r, s, len, &n, &replaced);
    size_t pos = 0;
    int good = 1;
    while (pos < n) {
        size_t a = tok_pretok_ref_next(p, t, n, pos), b = pcre_next_len(r, p, t, n, pos);
        if (a != b) {
            tap_diag("%s: %s: reference %zu bytes, PCRE2 %zu bytes at offset %zu", what,
                     tok_pretok_name(p), a, b, pos);
            size_t from = pos > 16 ? pos - 16 : 0;
            diag_bytes("context", t + from, n - from < 64 ? n - from : 64);
            good = 0;
            break;
        }
        pos += a;
    }
    free(t);
    return good;
}

/* ---- hand-checked splits ---------------------------------------------- */

/* Pieces joined by '|' (inputs here contain no '|'). Derived by hand from
 * the regexes and tiktoken's documented behaviour, not from this code. */
typedef struct {
    tok_pretok_t p;
    const char *text;
    const char *pieces;
} split_case;

static const split_case SPLITS[] = {
    {TOK_PRETOK_GPT2, "Hello world", "Hello| world"},
    {TOK_PRETOK_GPT2, "I'm here, isn't it?", "I|'m| here|,| isn|'t| it|?"},
    {TOK_PRETOK_GPT2, "I'M", "I|'|M"},
    {TOK_PRETOK_GPT2, "a  b", "a| | b"},
    {TOK_PRETOK_GPT2, "a \n\n b", "a| \n\n| b"},
    {TOK_PRETOK_GPT2, "x   ", "x|   "},
    {TOK_PRETOK_GPT2, "12345 678", "12345| 678"},
    {TOK_PRETOK_GPT2, " !!?x", " !!?|x"},
    {TOK_PRETOK_GPT2, "\tfoo", "\t|foo"},
    {TOK_PRETOK_CL100K, "Hello world", "Hello| world"},
    {TOK_PRETOK_CL100K, "I'M DON'T", "I|'M| DON|'T"},
    {TOK_PRETOK_CL100K, "12345", "123|45"},
    {TOK_PRETOK_CL100K, "\tfoo", "\tfoo"},
    {TOK_PRETOK_CL100K, "(foo", "(foo"},
    {TOK_PRETOK_CL100K, "a  b", "a| | b"},
    {TOK_PRETOK_CL100K, "a \n\n b", "a| \n\n| b"},
    {TOK_PRETOK_CL100K, "x);\n\n", "x|);\n\n"},
    {TOK_PRETOK_CL100K, "x \r\n  y", "x| \r\n| | y"},
    {TOK_PRETOK_CL100K, "'sup", "'s|up"},
    {TOK_PRETOK_CL100K, "'\xC5\xBF", "'\xC5\xBF"}, /* U+017F folds to 's' */
    {TOK_PRETOK_O200K, "Hello world", "Hello| world"},
    {TOK_PRETOK_O200K, "HelloWorld", "Hello|World"},
    {TOK_PRETOK_O200K, "HELLO world", "HELLO| world"},
    {TOK_PRETOK_O200K, "don't DON'T", "don't| DON'T"},
    {TOK_PRETOK_O200K, "12345", "123|45"},
    {TOK_PRETOK_O200K, "a/b//\n", "a|/b|//\n"},
    {TOK_PRETOK_O200K, "x \r\n  y", "x| \r\n| | y"},
    /* invalid UTF-8: each bad byte is a character of no class */
    {TOK_PRETOK_GPT2, "a\xED\xA0\x80" "b", "a|\xED\xA0\x80|b"},
    {TOK_PRETOK_GPT2, " \xFF\xC0\x80" "abc", " \xFF\xC0\x80|abc"},
    {TOK_PRETOK_CL100K, "\x80" "abc", "\x80" "abc"},
    {TOK_PRETOK_CL100K, "\xF0\x9F\x98" "abc", "\xF0\x9F\x98|abc"},
    {TOK_PRETOK_O200K, "\xE2\x82" "Abc", "\xE2\x82|Abc"},
    {TOK_PRETOK_O200K, "\x82" "Abc", "\x82" "Abc"},
};

static void check_splits(void)
{
    for (size_t i = 0; i < sizeof SPLITS / sizeof SPLITS[0]; i++) {
        const split_case *c = &SPLITS[i];
        const uint8_t *s = (const uint8_t *)c->text;
        size_t len = strlen(c->text);
        for (int which = 0; which < 2; which++) {
            next_fn f = which ? tok_pretok_ref_next : tok_pretok_next;
            char got[256];
            size_t o = 0, pos = 0;
            while (pos < len && o + 1 < sizeof got) {
                size_t n = f(c->p, s, len, pos);
                if (pos && o + 1 < sizeof got)
                    got[o++] = '|';
                for (size_t k = 0; k < n && o + 1 < sizeof got; k++)
                    got[o++] = (char)s[pos + k];
                pos += n;
            }
            got[o] = 0;
            is_str(got, c->pieces, "%s %s split #%zu", which ? "reference" : "fast",
                   tok_pretok_name(c->p), i);
        }
    }
}

/* ---- random and adversarial strings ----------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static size_t rnd_below(size_t n)
{
    return (size_t)(rnd() % n);
}

/* Fragments that exercise every branch of the three patterns. */
static const char *const FRAGMENTS[] = {
    " ", "  ", "\t", "\n", "\r", "\r\n", "\n\n", " \n", "\n ", "\r\r\n", "\v", "\f",
    "\xC2\x85", "\xC2\xA0", "\xE1\x9A\x80", "\xE2\x80\x80", "\xE2\x80\xA8", "\xE2\x80\xA9",
    "\xE3\x80\x80", "\xE2\x80\x8B", "\x1C", "\x1F",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'lL",
    "'D", "'x", "'", "''", "'\xC5\xBF", "'\xE2\x84\xAA", "\xC5\xBF",
    "a", "Z", "hello", "World", "HELLO", "McDonald",
    /* letter runs around the 16-byte blocks of the ASCII letter scan */
    "abcdefghijklmno", "Internationalize", "ABCDEFGHIJKLMNOPQ", "pneumonoultramicroscopicsilicovolcano",
    "abcdefghijklmnopqrst\xC3\xA9xyz", "Zabcdefghijklmno\xC5\xBF", "\xC3\xA9t\xC3\xA9", "\xC7\x85", "\xCA\xB0",
    "\xE4\xB8\xAD\xE6\x96\x87", "\xCC\x81", "\xE0\xA4\x95\xE0\xA5\x8D", "\xD9\x8B",
    "0", "7", "123", "4567", "\xD9\xA3", "\xE2\x85\xA0", "\xC2\xB2", "\xF0\x9D\x9F\x8E",
    ".", ",", "!", "?", "/", "//", "(", ")", "{", "}", "-", "_", "$", "\xE2\x82\xAC",
    "\xF0\x9F\x98\x80", "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD", "\xEF\xBF\xBD",
    /* invalid UTF-8 */
    "\x80", "\xBF", "\xC0\x80", "\xC1\xBF", "\xC2", "\xE0\x80\x80", "\xE0\xA0", "\xED\xA0\x80",
    "\xED\xBF\xBF", "\xF4\x90\x80\x80", "\xF5", "\xFF", "\xF0\x9F\x98", "\xE2\x82",
    "\xED\xA0\xBD\xED\xB8\x80",
};
#define NFRAG (sizeof FRAGMENTS / sizeof FRAGMENTS[0])

/* Builds a random string of up to cap bytes into buf; returns its length. */
static size_t random_string(uint8_t *buf, size_t cap)
{
    size_t len = 0, target = 1 + rnd_below(cap);
    int mode = (int)rnd_below(4);
    while (len + 8 < target) {
        switch (mode == 3 ? (int)rnd_below(3) : mode) {
        case 0: { /* fragments */
            const char *f = FRAGMENTS[rnd_below(NFRAG)];
            size_t n = strlen(f);
            if (!n) /* the NUL fragment */
                n = 1;
            if (len + n > cap) /* the long letter runs may not fit */
                return len;
            memcpy(buf + len, f, n);
            len += n;
            break;
        }
        case 1: { /* a sample of some general category, or ASCII */
            uint32_t cp;
            if (rnd_below(3) == 0) {
                cp = (uint32_t)rnd_below(0x80);
            } else {
                const tok_uc_samples_t *g = &tok_uc_gc_samples[rnd_below((size_t)tok_uc_gc_samples_count)];
                cp = g->cp[rnd_below((size_t)g->n)];
            }
            len += put_utf8(buf + len, cp);
            break;
        }
        default: /* any byte, or any scalar value */
            if (rnd_below(2)) {
                buf[len++] = (uint8_t)rnd();
            } else {
                uint32_t cp = (uint32_t)rnd_below(0x110000);
                if (cp >= 0xD800 && cp <= 0xDFFF)
                    cp = 0xFFFD;
                len += put_utf8(buf + len, cp);
            }
        }
    }
    return len;
}

static void check_random(int cases)
{
    uint8_t buf[512];
    int bad[4] = {0};
    for (int i = 0; i < cases; i++) {
        size_t len = random_string(buf, sizeof buf - 8);
        for (int k = 0; k < 3; k++) {
            tok_pretok_t p = ALL[k];
            if (bad[p] < 3 && !agree(p, buf, len, "random string")) {
                bad[p]++;
                diag_bytes("input", buf, len);
            }
        }
    }
    for (int k = 0; k < 3; k++)
        ok(!bad[ALL[k]], "%s: fast equals reference on %d random strings", tok_pretok_name(ALL[k]), cases);
}

/* Each general category's samples, alone, repeated, and after each
 * optional prefix the patterns know (space, apostrophe, punctuation). */
static void check_categories(void)
{
    static const char *const prefixes[] = {"", " ", "'", "(", "\n", "\xCC\x81", "A", "a", "1", "\x80"};
    static const char *const suffixes[] = {"", "'s", "'LL", " x", "\r\n", "a", "A", "9"};
    uint8_t buf[128];
    int good[4] = {1, 1, 1, 1};
    for (int g = 0; g < tok_uc_gc_samples_count; g++) {
        const tok_uc_samples_t *smp = &tok_uc_gc_samples[g];
        for (int j = 0; j < smp->n; j++)
            for (size_t a = 0; a < sizeof prefixes / sizeof *prefixes; a++)
                for (size_t z = 0; z < sizeof suffixes / sizeof *suffixes; z++) {
                    size_t len = 0;
                    memcpy(buf, prefixes[a], strlen(prefixes[a]));
                    len += strlen(prefixes[a]);
                    for (int r = 0; r < 1 + (j % 3); r++)
                        len += put_utf8(buf + len, smp->cp[(j + (size_t)r * 5) % (size_t)smp->n]);
                    memcpy(buf + len, suffixes[z], strlen(suffixes[z]));
                    len += strlen(suffixes[z]);
                    for (int k = 0; k < 3; k++)
                        if (good[ALL[k]] && !agree(ALL[k], buf, len, smp->name))
                            good[ALL[k]] = 0;
                }
    }
    for (int k = 0; k < 3; k++)
        ok(good[ALL[k]], "%s: fast equals reference on every general category", tok_pretok_name(ALL[k]));
}

/* Long runs: 100 KB of one letter, digits, spaces, CR/LF mixes. */
static void check_long_runs(void)
{
    const size_t n = 100000;
    uint8_t *buf = malloc(n + 16);
    static const char *const units[] = {"a", "A", "\xC3\xA9", "\xC3\x89", "\xCC\x81", "7", " ",
                                        "\t", " \n", "\r\n", "\n", " \r", "!", "/"};
    static const char *const tails[] = {"", "x", " x", "\n", "'s", "1"};
    int good[4] = {1, 1, 1, 1};
    for (size_t u = 0; u < sizeof units / sizeof *units; u++)
        for (size_t t = 0; t < sizeof tails / sizeof *tails; t++) {
            size_t ul = strlen(units[u]), len = 0;
            while (len + ul <= n) {
                memcpy(buf + len, units[u], ul);
                len += ul;
            }
            memcpy(buf + len, tails[t], strlen(tails[t]));
            len += strlen(tails[t]);
            for (int k = 0; k < 3; k++)
                if (good[ALL[k]] && !agree(ALL[k], buf, len, "long run"))
                    good[ALL[k]] = 0;
        }
    /* random mixes of spaces, tabs, CR, LF and Unicode spaces */
    static const char *const spaces[] = {" ", "\t", "\r", "\n", "\r\n", "\xC2\xA0", "\xE3\x80\x80",
                                         "\xC2\x85", "\v"};
    for (int r = 0; r < 12; r++) {
        size_t len = 0, target = 1000 + rnd_below(30000);
        while (len < target) {
            const char *sp = spaces[rnd_below(r < 6 ? 5 : sizeof spaces / sizeof *spaces)];
            memcpy(buf + len, sp, strlen(sp));
            len += strlen(sp);
        }
        const char *tail = tails[rnd_below(sizeof tails / sizeof *tails)];
        memcpy(buf + len, tail, strlen(tail));
        len += strlen(tail);
        for (int k = 0; k < 3; k++)
            if (good[ALL[k]] && !agree(ALL[k], buf, len, "whitespace mix"))
                good[ALL[k]] = 0;
    }
    for (int k = 0; k < 3; k++)
        ok(good[ALL[k]], "%s: fast equals reference on 100 KB runs and long whitespace mixes",
           tok_pretok_name(ALL[k]));
    free(buf);
}

/* ---- safe cuts -------------------------------------------------------- */

/* At every safe cut b of s (at most max_cuts), with the reference: b is a
 * piece boundary of the whole text, the pieces of s[0..b) as a text of its
 * own end the same way as those of the whole text (checked from a few
 * pieces before b), and s[b..len) as its own text starts with the same
 * pieces as the whole text from b. Returns the number of cuts checked, or
 * -1 on a failure. */
static long check_cuts_in(tok_pretok_t p, const uint8_t *s, size_t len, long max_cuts)
{
    size_t *bound = malloc((len + 1) * sizeof *bound), nb = 0, pos = 0;
    while (pos < len) {
        bound[nb++] = pos;
        pos += tok_pretok_ref_next(p, s, len, pos);
    }
    bound[nb++] = len;
    long cuts = 0;
    size_t k = 0;
    for (size_t b = tok_pretok_cut(s, len, 0); b < len && cuts < max_cuts;
         b = tok_pretok_cut(s, len, b + 1), cuts++) {
        while (k < nb && bound[k] < b)
            k++;
        int good = k < nb && bound[k] == b;
        /* left side, from 3 pieces back */
        size_t j = k >= 3 ? k - 3 : 0;
        for (size_t q = bound[j]; good && q < b; j++) {
            size_t n = tok_pretok_ref_next(p, s, b, q);
            good = q + n == bound[j + 1];
            q += n;
        }
        /* right side, 8 pieces */
        size_t q = 0;
        for (size_t i = 0; good && i < 8 && b + q < len; i++) {
            size_t n = tok_pretok_ref_next(p, s + b, len - b, q);
            good = b + q + n == bound[k + i + 1];
            q += n;
        }
        if (!good) {
            tap_diag("%s: cut at %zu changes the pieces", tok_pretok_name(p), b);
            size_t from = b > 16 ? b - 16 : 0;
            diag_bytes("context", s + from, len - from < 40 ? len - from : 40);
            cuts = -1;
            break;
        }
    }
    free(bound);
    return cuts;
}

static void check_cuts(void)
{
    long total[4] = {0};
    uint8_t buf[600];
    for (int i = 0; i < 3000; i++) {
        size_t len = random_string(buf, 500);
        /* plant a few cut shapes: printable, newline, printable */
        for (int c = 0; c < 4; c++) {
            size_t at = rnd_below(len + 1);
            static const char *const shapes[] = {"x\nY", ".\n(", "'\ns", "a\n'", ";\n#", "9\n9", "/\n/", ")\n/"};
            const char *sh = shapes[rnd_below(8)];
            if (len + 3 > sizeof buf)
                break;
            memmove(buf + at + 3, buf + at, len - at);
            memcpy(buf + at, sh, 3);
            len += 3;
        }
        for (int k = 0; k < 3; k++)
            if (total[ALL[k]] >= 0) {
                long n = check_cuts_in(ALL[k], buf, len, 1000);
                total[ALL[k]] = n < 0 ? -1 : total[ALL[k]] + n;
            }
    }
    for (int k = 0; k < 3; k++)
        ok(total[ALL[k]] > 1000, "%s: safe cuts keep the pieces (%ld cuts in random strings)",
           tok_pretok_name(ALL[k]), total[ALL[k]]);
}

/* ---- real texts ------------------------------------------------------- */

static const char *const TEXTS[] = {"c-headers", "tinyshakespeare", "unicode-stress", "web-html",
                                    "wiki-xml"};

static void check_texts(pcre_ref *pr)
{
    char rel[128];
    for (size_t t = 0; t < sizeof TEXTS / sizeof *TEXTS; t++) {
        snprintf(rel, sizeof rel, "tokenizers/texts/%s.txt", TEXTS[t]);
        char *path = tap_data_path(rel);
        char *data = NULL;
        size_t len = 0;
        gl_err_t err = {0};
        if (!path || gl_read_file(path, (size_t)1 << 30, &data, &len, &err) != 0) {
            tap_skip(9, "test data absent (GL_DATA)");
            free(path);
            continue;
        }
        const uint8_t *s = (const uint8_t *)data;
        for (int k = 0; k < 3; k++) {
            ok(agree(ALL[k], s, len, TEXTS[t]), "%s: %s: fast equals reference", TEXTS[t],
               tok_pretok_name(ALL[k]));
            long cuts = check_cuts_in(ALL[k], s, len, 400);
            ok(cuts >= 0, "%s: %s: %ld safe cuts keep the pieces", TEXTS[t], tok_pretok_name(ALL[k]), cuts);
            ok(ref_agrees_with_pcre(pr, ALL[k], s, len, TEXTS[t]), "%s: %s: reference equals PCRE2",
               TEXTS[t], tok_pretok_name(ALL[k]));
        }
        free(data);
        free(path);
    }
}

int main(void)
{
    /* names */
    for (int k = 0; k < 3; k++) {
        is_int(tok_pretok_from_name(tok_pretok_name(ALL[k])), ALL[k], "name round trip %d", k);
        ok(tok_pretok_regex(ALL[k]) != NULL, "regex of %s", tok_pretok_name(ALL[k]));
    }
    is_int(tok_pretok_from_name("r50k_base"), TOK_PRETOK_GPT2, "r50k_base is gpt2");
    is_int(tok_pretok_from_name("nope"), -1, "unknown name");
    ok(tok_pretok_name((tok_pretok_t)9) == NULL, "no name for a bad pattern");

    check_splits();

    pcre_ref pr;
    if (pcre_ref_init(&pr) != 0) {
        ok(0, "PCRE2 compiles the three patterns");
        return tap_done();
    }
    /* Reference vs PCRE2 on valid random text. */
    {
        uint8_t buf[512];
        int good[4] = {1, 1, 1, 1};
        for (int i = 0; i < 2000; i++) {
            size_t len = 0, target = 1 + rnd_below(400);
            while (len + 8 < target) {
                if (rnd_below(2)) {
                    const char *f = FRAGMENTS[rnd_below(NFRAG - 15)]; /* valid ones */
                    memcpy(buf + len, f, strlen(f));
                    len += strlen(f);
                } else {
                    const tok_uc_samples_t *g = &tok_uc_gc_samples[rnd_below((size_t)tok_uc_gc_samples_count)];
                    len += put_utf8(buf + len, g->cp[rnd_below((size_t)g->n)]);
                }
            }
            for (int k = 0; k < 3; k++)
                if (good[ALL[k]] && !ref_agrees_with_pcre(&pr, ALL[k], buf, len, "random valid text"))
                    good[ALL[k]] = 0;
        }
        for (int k = 0; k < 3; k++)
            ok(good[ALL[k]], "%s: reference equals PCRE2 on 2000 random valid strings",
               tok_pretok_name(ALL[k]));
    }

    check_texts(&pr);
    pcre_ref_free(&pr);
    check_categories();
    check_long_runs();
    check_random(3000);
    check_cuts();
    return tap_done();
}
