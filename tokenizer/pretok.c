/* pretok.c — the fast pre-tokenizer: one hand-written scanner per tiktoken
 * pattern, no regex engine.
 *
 * Every byte of text an encoder sees passes through here, so each scanner
 * is the regex worked out by hand into straight-line decisions on the class
 * of the first one or two characters, followed by a single forward loop
 * over a run. The backtracking a regex engine would do is resolved ahead of
 * time; for example `\s+(?!\S)` followed by more text is "the whitespace run
 * minus its last character", and `\s*[\r\n]` is "the whitespace run up to
 * and including its last CR or LF". The comments beside each branch name
 * the alternative of the pattern it implements; the order of the branches
 * is the order of the alternatives, because the first alternative that
 * matches wins.
 *
 * Characters are decoded inline (strict UTF-8: shortest form, no
 * surrogates, at most U+10FFFF; any other byte is one character of class
 * TOK_UC_OT only) and classified by one lookup in the two-stage table of
 * unicode_tables.c, whose flag byte already answers each class the patterns
 * use (\p{L}, \p{N}, \s, [^\s\p{L}\p{N}], [\r\n] and o200k's two case
 * classes). ASCII never reaches the decoder: the loops over runs read the
 * flags of a byte from tok_uc_byte_class, which marks the bytes >= 0x80
 * that need decoding.
 *
 * Workload: called once per piece by the BPE encoder over gigabytes of web
 * text, code and Wikipedia; pieces are short (a word, a space, a number) so
 * the cost is a few table lookups per byte. tok_pretok_ref_next() in
 * pretok_ref.c is the reference these scanners are tested against.
 */
#include "tokenizer/pretok.h"

#include "tokenizer/unicode.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum {
    L = TOK_UC_L,
    N = TOK_UC_N,
    WS = TOK_UC_WS,
    UP = TOK_UC_UP,
    LO = TOK_UC_LO,
    OT = TOK_UC_OT,
    CRLF = TOK_UC_CRLF,
};

/* A decoded character: its class flags in the low 8 bits, its length in
 * bytes above (a packed value stays in a register in the loops). */
#define CLS(x) ((x) & 0xFFu)
#define LEN(x) ((x) >> 8)
#define INFO(cls, n) ((uint32_t)(n) << 8 | (cls))

/* The non-ASCII character at s[i] (i < len). An invalid byte is one
 * character of class OT. Kept out of line: the callers' loops stay small
 * for the ASCII that dominates most text. */
static uint32_t decode_info(const uint8_t *s, size_t len, size_t i)
{
    uint32_t b = s[i];
    size_t left = len - i;
    if (b >= 0xC2 && b <= 0xDF) {
        if (left >= 2 && (s[i + 1] & 0xC0) == 0x80)
            return INFO(tok_uc_class((b & 0x1F) << 6 | (s[i + 1] & 0x3Fu)), 2);
    } else if (b >= 0xE0 && b <= 0xEF) {
        if (left >= 3) {
            uint32_t b1 = s[i + 1], b2 = s[i + 2];
            uint32_t lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
            if (b1 >= lo && b1 <= hi && (b2 & 0xC0) == 0x80)
                return INFO(tok_uc_class((b & 0x0F) << 12 | (b1 & 0x3F) << 6 | (b2 & 0x3F)), 3);
        }
    } else if (b >= 0xF0 && b <= 0xF4) {
        if (left >= 4) {
            uint32_t b1 = s[i + 1], b2 = s[i + 2], b3 = s[i + 3];
            uint32_t lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
            if (b1 >= lo && b1 <= hi && (b2 & 0xC0) == 0x80 && (b3 & 0xC0) == 0x80)
                return INFO(tok_uc_class((b & 0x07) << 18 | (b1 & 0x3F) << 12 | (b2 & 0x3F) << 6 |
                                         (b3 & 0x3F)),
                            4);
        }
    }
    return INFO(OT, 1);
}

/* The character at s[i], i < len. */
static inline uint32_t info(const uint8_t *s, size_t len, size_t i)
{
    uint32_t b = s[i];
    return b < 0x80 ? INFO(tok_uc_stage2[0][b], 1) : decode_info(s, len, i);
}

/* The character at s[i], or 0 (no class, length 0) at the end. */
static inline uint32_t info_at(const uint8_t *s, size_t len, size_t i)
{
    return i < len ? info(s, len, i) : 0;
}

#if defined(__SSE2__)
/* End of the run of ASCII letters from i, 16 bytes at a time: a word ends
 * at a bit of a movemask instead of at a per-byte branch that the CPU
 * mispredicts once per word. Stops at the first byte that is not an ASCII
 * letter (non-ASCII included), or within 16 bytes of the end. */
static inline size_t ascii_letters(const uint8_t *s, size_t len, size_t i)
{
    const __m128i lower = _mm_set1_epi8(0x20), a = _mm_set1_epi8('a'), z = _mm_set1_epi8(25);
    while (len - i >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i t = _mm_sub_epi8(_mm_or_si128(x, lower), a); /* letters: 0..25 */
        unsigned letters = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(t, z), t));
        if (letters != 0xFFFFu)
            return i + (size_t)__builtin_ctz(~letters);
        i += 16;
    }
    return i;
}
#endif

/* End of the run of characters with any of the classes in mask, from i. */
static inline size_t run(const uint8_t *s, size_t len, size_t i, unsigned mask)
{
#if defined(__SSE2__)
    if (mask == L) { /* ASCII letters need no table; an ASCII non-letter ends the run */
        i = ascii_letters(s, len, i);
        if (i < len && s[i] < 0x80 && (unsigned)((s[i] | 0x20) - 'a') >= 26u)
            return i;
    }
#endif
    while (i < len) {
        unsigned b = tok_uc_byte_class[s[i]];
        if (b & mask) { /* the common case, kept short */
            i++;
            continue;
        }
        if (!(b & TOK_UC_MB))
            break;
        uint32_t c = decode_info(s, len, i);
        if (!(CLS(c) & mask))
            break;
        i += LEN(c);
    }
    return i;
}

/* \p{N}{1,3} at a number of length n0 at pos. */
static inline size_t numbers(const uint8_t *s, size_t len, size_t pos, size_t n0)
{
    size_t i = pos + n0;
    for (int count = 1; count < 3; count++) {
        uint32_t c = info_at(s, len, i);
        if (!(CLS(c) & N))
            break;
        i += LEN(c);
    }
    return i - pos;
}

/* The whitespace alternatives, at a whitespace character:
 *   with_crlf: `\s*[\r\n]` (cl100k) or `\s*[\r\n]+` (o200k): the run up to
 *              and including its last CR or LF, when it has one;
 *   `\s+(?!\S)`: the whole run at the end of the text, else the run less its
 *              last character when that leaves one;
 *   `\s+`:     otherwise the one character. */
static inline size_t whitespace(const uint8_t *s, size_t len, size_t pos, int with_crlf)
{
    size_t i = pos, last = pos, after_crlf = 0;
    while (i < len) {
        uint32_t c = info(s, len, i);
        if (!(CLS(c) & WS))
            break;
        if (CLS(c) & CRLF)
            after_crlf = i + 1;
        last = i;
        i += LEN(c);
    }
    if (with_crlf && after_crlf)
        return after_crlf - pos;
    if (i == len || last == pos)
        return i - pos;
    return last - pos;
}

#define NO_MATCH ((size_t)-1)

/* ---- gpt2 / r50k ------------------------------------------------------ */
/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */

static size_t next_gpt2(const uint8_t *s, size_t len, size_t pos)
{
    uint8_t b = s[pos];
    if (b == '\'' && len - pos >= 2) { /* 's|'t|'re|'ve|'m|'ll|'d */
        uint8_t c = s[pos + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd')
            return 2;
        if (len - pos >= 3) {
            uint8_t d = s[pos + 2];
            if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
                return 3;
        }
    }
    unsigned c = CLS(info(s, len, pos));
    size_t start = pos;
    if (b == ' ') { /* the optional space of the next three alternatives */
        unsigned c1 = CLS(info_at(s, len, pos + 1));
        if (c1 & (L | N | OT))
            start = pos + 1, c = c1;
    }
    if (c & L) /* ' ?\p{L}+' */
        return run(s, len, start, L) - pos;
    if (c & N) /* ' ?\p{N}+' */
        return run(s, len, start, N) - pos;
    if (c & OT) /* ' ?[^\s\p{L}\p{N}]+' */
        return run(s, len, start, OT) - pos;
    return whitespace(s, len, pos, 0);
}

/* ---- cl100k_base ------------------------------------------------------ */
/* '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}
 * | ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+ */

/* Length of a case-insensitive contraction at s[i] ("'s", "'LL", "'ſ",
 * ...), or 0. cl100k's '(?i:[sdmt]|ll|ve|re) and o200k's
 * (?i:'s|'t|'re|'ve|'m|'ll|'d) are the same set. Case-insensitive means
 * Unicode simple case folding: besides ASCII, only U+017F LATIN SMALL
 * LETTER LONG S folds onto one of these letters (see tok_uc_fold_ascii). */
static inline size_t contraction(const uint8_t *s, size_t len, size_t i)
{
    if (len - i < 2 || s[i] != '\'')
        return 0;
    /* | 0x20 lowers ASCII letters; no other byte lands on a letter. */
    unsigned c = s[i + 1] | 0x20;
    if (c == 's' || c == 't' || c == 'm' || c == 'd')
        return 2;
    if (len - i >= 3) {
        if (s[i + 1] == 0xC5 && s[i + 2] == 0xBF) /* U+017F */
            return 3;
        unsigned d = s[i + 2] | 0x20;
        if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
            return 3;
    }
    return 0;
}

static size_t next_cl100k(const uint8_t *s, size_t len, size_t pos)
{
    size_t k = contraction(s, len, pos);
    if (k)
        return k;
    uint32_t c0 = info(s, len, pos);
    size_t n0 = LEN(c0);
    if (CLS(c0) & L) /* [^\r\n\p{L}\p{N}]?+\p{L}+ without the prefix */
        return run(s, len, pos + n0, L) - pos;
    if (!(CLS(c0) & (N | CRLF))) { /* ... with the prefix, which is possessive */
        uint32_t c1 = info_at(s, len, pos + n0);
        if (CLS(c1) & L)
            return run(s, len, pos + n0 + LEN(c1), L) - pos;
    }
    if (CLS(c0) & N) /* \p{N}{1,3} */
        return numbers(s, len, pos, n0);
    size_t start = NO_MATCH;
    if (CLS(c0) & OT)
        start = pos;
    else if (s[pos] == ' ' && (CLS(info_at(s, len, pos + 1)) & OT))
        start = pos + 1;
    if (start != NO_MATCH) { /* ' ?[^\s\p{L}\p{N}]++[\r\n]*' */
        size_t i = run(s, len, start, OT);
        while (i < len && (s[i] == '\r' || s[i] == '\n'))
            i++;
        return i - pos;
    }
    return whitespace(s, len, pos, 1);
}

/* ---- o200k_base ------------------------------------------------------- */
/* [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|...)?
 * |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|...)?
 * |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * UP is the first bracket class, LO the second; Lm, Lo and M are in both. */

/* UP* LO+ from i: the UP run, then backtracking to the last point where a
 * LO run can start: the character after the UP run when it is LO (then the
 * LO run continues), else the last character of the UP run that is also LO
 * (then the LO run is that character alone, as the next is UP-only or is
 * not LO). Returns the end, or NO_MATCH. */
static inline size_t upper_lower(const uint8_t *s, size_t len, size_t i)
{
    size_t both_end = NO_MATCH;
    while (i < len) {
        uint32_t c = info(s, len, i);
        if (!(CLS(c) & UP)) {
            if (CLS(c) & LO)
                return run(s, len, i + LEN(c), LO);
            break;
        }
        i += LEN(c);
        if (CLS(c) & LO)
            both_end = i;
    }
    return both_end;
}

/* UP+ LO* from i, or NO_MATCH. */
static inline size_t upper_then_lower(const uint8_t *s, size_t len, size_t i)
{
    uint32_t c = info_at(s, len, i);
    if (!(CLS(c) & UP))
        return NO_MATCH;
    return run(s, len, run(s, len, i + LEN(c), UP), LO);
}

static size_t next_o200k(const uint8_t *s, size_t len, size_t pos)
{
    size_t end;
    uint32_t c0 = info(s, len, pos);
    size_t n0 = LEN(c0);
    /* The first two alternatives need a character of their classes at pos
     * (without the optional prefix), or the prefix [^\r\n\p{L}\p{N}] at
     * pos and such a character after it (with). Either way one of them
     * then matches; they are tried in the regex's order. */
    int without = (CLS(c0) & (UP | LO)) != 0;
    int with = !(CLS(c0) & (L | N | CRLF)) && (CLS(info_at(s, len, pos + n0)) & (UP | LO));
    if (with || without) {
        if ((with && (end = upper_lower(s, len, pos + n0)) != NO_MATCH) ||
            (without && (end = upper_lower(s, len, pos)) != NO_MATCH) ||
            (with && (end = upper_then_lower(s, len, pos + n0)) != NO_MATCH) ||
            (without && (end = upper_then_lower(s, len, pos)) != NO_MATCH))
            return end + contraction(s, len, end) - pos;
    }
    if (CLS(c0) & N) /* \p{N}{1,3} */
        return numbers(s, len, pos, n0);
    size_t start = NO_MATCH;
    if (CLS(c0) & OT)
        start = pos;
    else if (s[pos] == ' ' && (CLS(info_at(s, len, pos + 1)) & OT))
        start = pos + 1;
    if (start != NO_MATCH) { /* ' ?[^\s\p{L}\p{N}]+[\r\n/]*' */
        size_t i = run(s, len, start, OT);
        while (i < len && (s[i] == '\r' || s[i] == '\n' || s[i] == '/'))
            i++;
        return i - pos;
    }
    return whitespace(s, len, pos, 1);
}

/* Why a cut b is safe: the '\n' at b-1 is whitespace with non-space on
 * both sides, so in every pattern the piece holding it ends at b (gpt2: a
 * one-character whitespace run is its own piece; cl100k, o200k: `\s*[\r\n]`
 * or the [\r\n]* (o200k: [\r\n/]*, hence no '/' at b) after punctuation
 * ends there), with or without the text after b, and no scan started before b-1 reads past the '\n' (no run of
 * letters, numbers, punctuation or upper-case letters contains it). The
 * scanners only look forward, so the pieces from b on never depend on the
 * text before. The tests check this on the real texts and random strings. */
size_t tok_pretok_cut(const uint8_t *s, size_t len, size_t from)
{
    for (size_t b = from < 2 ? 2 : from; b < len; b++) {
        if (s[b - 1] != '\n')
            continue;
        if (s[b - 2] > 0x20 && s[b - 2] < 0x7F && s[b] > 0x20 && s[b] < 0x7F && s[b] != '/')
            return b;
    }
    return len;
}

size_t tok_pretok_next(tok_pretok_t p, const uint8_t *s, size_t len, size_t pos)
{
    switch (p) {
    case TOK_PRETOK_GPT2: return next_gpt2(s, len, pos);
    case TOK_PRETOK_CL100K: return next_cl100k(s, len, pos);
    case TOK_PRETOK_O200K: return next_o200k(s, len, pos);
    }
    return 1;
}
