/* pretok_ref.c — the reference pre-tokenizer: a small backtracking regex
 * matcher that runs tiktoken's pattern text itself.
 *
 * The fast scanners in pretok.c are hand-derived from the three patterns;
 * this file is what they are checked against, so it is written to be
 * obviously right rather than fast. It parses the regex string that
 * tok_pretok_regex() returns (the subset of regex syntax the three patterns
 * use: alternation, (?:...), (?i:...), (?!...), classes with \p{..}, \s,
 * \S, \r, \n and literals, the quantifiers ? * + {m,n}, possessive forms)
 * and matches it the way a backtracking engine (fancy-regex, PCRE) does:
 * alternatives in order, greedy quantifiers trying the longest count first,
 * possessive ones never giving back, the first successful path wins.
 *
 * Why not PCRE2: the system's PCRE2 carries older Unicode tables than the
 * 16.0 tiktoken uses, \s differs in places between engines, and PCRE2
 * refuses invalid UTF-8 where we must accept any bytes. This matcher uses
 * the Unicode 16.0 general-category table (a different table from the class
 * flags the fast scanner reads) and its own UTF-8 decoder. The tests
 * compare it with PCRE2 where both are defined (valid UTF-8 of characters
 * whose classes PCRE2 agrees on).
 *
 * Workload: tests and benchmarks only. Each call matches one piece; a
 * quantified single character collects its candidate end positions in an
 * array (on the heap past 64), so a 100 KB run of letters costs memory,
 * not stack. The
 * parsed patterns are built once (pthread_once) and shared read-only.
 */
#include "tokenizer/pretok.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/unicode.h"

static const char *const regex_text[] = {
    [TOK_PRETOK_GPT2] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
                        "|\\s+(?!\\S)|\\s+",
    [TOK_PRETOK_CL100K] = "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,3}"
                          "| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
    [TOK_PRETOK_O200K] =
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
        "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
        "|\\p{N}{1,3}"
        "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
        "|\\s*[\\r\\n]+"
        "|\\s+(?!\\S)"
        "|\\s+",
};

static const char *const names[] = {
    [TOK_PRETOK_GPT2] = "gpt2",
    [TOK_PRETOK_CL100K] = "cl100k_base",
    [TOK_PRETOK_O200K] = "o200k_base",
};

static int valid_pattern(tok_pretok_t p)
{
    return p >= TOK_PRETOK_GPT2 && p <= TOK_PRETOK_O200K;
}

const char *tok_pretok_regex(tok_pretok_t p)
{
    return valid_pattern(p) ? regex_text[p] : NULL;
}

const char *tok_pretok_name(tok_pretok_t p)
{
    return valid_pattern(p) ? names[p] : NULL;
}

int tok_pretok_from_name(const char *name)
{
    if (!name)
        return -1;
    if (!strcmp(name, "gpt2") || !strcmp(name, "r50k_base") || !strcmp(name, "p50k_base"))
        return TOK_PRETOK_GPT2;
    if (!strcmp(name, "cl100k_base"))
        return TOK_PRETOK_CL100K;
    if (!strcmp(name, "o200k_base"))
        return TOK_PRETOK_O200K;
    return -1;
}

/* ---- characters ------------------------------------------------------- */

/* An invalid UTF-8 byte, read as one character of no class. */
#define NOCHAR 0xFFFFFFFFu

typedef struct {
    uint32_t cp; /* code point, or NOCHAR */
    size_t n;    /* bytes it takes */
} rchar;

/* Decodes the character at s[pos] (pos < len) by the UTF-8 definition of
 * RFC 3629: a lead byte announces the length, every following byte is a
 * continuation, and the value is a scalar value in its shortest form.
 * Anything else is one invalid byte. */
static rchar ref_decode(const uint8_t *s, size_t len, size_t pos)
{
    const rchar bad = {NOCHAR, 1};
    uint8_t b = s[pos];
    size_t n;
    uint32_t cp, min;

    if (b < 0x80)
        return (rchar){b, 1};
    if ((b & 0xE0) == 0xC0) {
        n = 2, cp = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
        n = 3, cp = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
        n = 4, cp = b & 0x07, min = 0x10000;
    } else {
        return bad;
    }
    if (len - pos < n)
        return bad;
    for (size_t i = 1; i < n; i++) {
        if ((s[pos + i] & 0xC0) != 0x80)
            return bad;
        cp = cp << 6 | (s[pos + i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return bad;
    return (rchar){cp, n};
}

/* Simple case folding, restricted to what can meet an ASCII letter. */
static uint32_t fold(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + ('a' - 'A');
    for (int i = 0; i < tok_uc_fold_ascii_count; i++)
        if (tok_uc_fold_ascii[i].cp == c)
            return (uint32_t)tok_uc_fold_ascii[i].ascii;
    return c;
}

/* ---- the pattern as a tree -------------------------------------------- */

#define MAX_LITS 16

/* A set of characters: [...], \p{..}, \s, \S or a literal. */
typedef struct {
    int negate;
    uint32_t gc_mask; /* bit g: general category g is in */
    int space;        /* \s is in */
    int nonspace;     /* \S is in */
    int ci;           /* literals match case-insensitively */
    int nlits;
    uint32_t lits[MAX_LITS];
} rset;

typedef enum { N_EMPTY, N_SET, N_SEQ, N_ALT, N_REP, N_NOTAHEAD } nop;

typedef struct node {
    nop op;
    rset set;              /* N_SET */
    const struct node *a;  /* N_SEQ, N_ALT: first; N_REP, N_NOTAHEAD: the body */
    const struct node *b;  /* N_SEQ: the rest; N_ALT: the other alternatives */
    int min, max;          /* N_REP; max < 0: unbounded */
    int possessive;        /* N_REP */
} node;

#define MAX_NODES 256

typedef struct {
    const char *re; /* parse position */
    node pool[MAX_NODES];
    int used;
    const node *root;
} pattern;

static pattern patterns[TOK_PRETOK_O200K + 1];
static pthread_once_t patterns_once = PTHREAD_ONCE_INIT;

/* Parse errors are programmer mistakes: the patterns are constants. */
#define SYNTAX(cond) assert((cond) && "unsupported regex syntax")

static node *new_node(pattern *pt, nop op)
{
    SYNTAX(pt->used < MAX_NODES);
    node *n = &pt->pool[pt->used++];
    memset(n, 0, sizeof *n);
    n->op = op;
    return n;
}

static uint32_t prop_mask(const char *name, size_t len)
{
    static const struct { const char *name; uint32_t mask; } props[] = {
        {"L", 1u << TOK_GC_LU | 1u << TOK_GC_LL | 1u << TOK_GC_LT | 1u << TOK_GC_LM | 1u << TOK_GC_LO},
        {"Lu", 1u << TOK_GC_LU},
        {"Ll", 1u << TOK_GC_LL},
        {"Lt", 1u << TOK_GC_LT},
        {"Lm", 1u << TOK_GC_LM},
        {"Lo", 1u << TOK_GC_LO},
        {"M", 1u << TOK_GC_MN | 1u << TOK_GC_MC | 1u << TOK_GC_ME},
        {"N", 1u << TOK_GC_ND | 1u << TOK_GC_NL | 1u << TOK_GC_NO},
    };
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (strlen(props[i].name) == len && !memcmp(props[i].name, name, len))
            return props[i].mask;
    SYNTAX(0);
    return 0;
}

/* Reads one ASCII literal character or escape into set (inside or
 * outside a class). */
static void parse_item(pattern *pt, rset *set)
{
    SYNTAX(set->nlits < MAX_LITS);
    char c = *pt->re++;
    if (c != '\\') {
        SYNTAX((unsigned char)c < 0x80);
        set->lits[set->nlits++] = (uint8_t)c;
        return;
    }
    c = *pt->re++;
    switch (c) {
    case 's': set->space = 1; break;
    case 'S': set->nonspace = 1; break;
    case 'r': set->lits[set->nlits++] = '\r'; break;
    case 'n': set->lits[set->nlits++] = '\n'; break;
    case 'p': {
        SYNTAX(*pt->re == '{');
        const char *end = strchr(pt->re, '}');
        SYNTAX(end != NULL);
        set->gc_mask |= prop_mask(pt->re + 1, (size_t)(end - pt->re - 1));
        pt->re = end + 1;
        break;
    }
    default: SYNTAX(0);
    }
}

static const node *parse_alt(pattern *pt, int ci);

static const node *parse_atom(pattern *pt, int ci)
{
    if (*pt->re == '(') {
        pt->re++;
        SYNTAX(*pt->re == '?');
        pt->re++;
        if (*pt->re == '!') {
            pt->re++;
            node *n = new_node(pt, N_NOTAHEAD);
            n->a = parse_alt(pt, ci);
            SYNTAX(*pt->re == ')');
            pt->re++;
            return n;
        }
        if (*pt->re == 'i') {
            ci = 1;
            pt->re++;
        }
        SYNTAX(*pt->re == ':');
        pt->re++;
        const node *n = parse_alt(pt, ci);
        SYNTAX(*pt->re == ')');
        pt->re++;
        return n;
    }
    node *n = new_node(pt, N_SET);
    n->set.ci = ci;
    if (*pt->re == '[') {
        pt->re++;
        if (*pt->re == '^') {
            n->set.negate = 1;
            pt->re++;
        }
        while (*pt->re != ']') {
            SYNTAX(*pt->re != '\0');
            parse_item(pt, &n->set);
        }
        pt->re++;
    } else {
        parse_item(pt, &n->set);
    }
    return n;
}

static int parse_int(pattern *pt)
{
    int v = 0;
    SYNTAX(*pt->re >= '0' && *pt->re <= '9');
    while (*pt->re >= '0' && *pt->re <= '9')
        v = v * 10 + (*pt->re++ - '0');
    return v;
}

/* atom quantifier? */
static const node *parse_piece(pattern *pt, int ci)
{
    const node *atom = parse_atom(pt, ci);
    int min, max;
    switch (*pt->re) {
    case '?': min = 0, max = 1; break;
    case '*': min = 0, max = -1; break;
    case '+': min = 1, max = -1; break;
    case '{':
        pt->re++;
        min = max = parse_int(pt);
        if (*pt->re == ',') {
            pt->re++;
            max = parse_int(pt);
        }
        SYNTAX(*pt->re == '}');
        break;
    default: return atom;
    }
    pt->re++;
    node *n = new_node(pt, N_REP);
    n->a = atom;
    n->min = min;
    n->max = max;
    if (*pt->re == '+') {
        n->possessive = 1;
        pt->re++;
    }
    SYNTAX(*pt->re != '?'); /* lazy quantifiers: not used */
    /* Repeats of a multi-character body are only supported as optionals. */
    SYNTAX(atom->op == N_SET || max == 1);
    return n;
}

static const node *parse_seq(pattern *pt, int ci)
{
    if (*pt->re == '\0' || *pt->re == '|' || *pt->re == ')')
        return new_node(pt, N_EMPTY);
    const node *first = parse_piece(pt, ci);
    if (*pt->re == '\0' || *pt->re == '|' || *pt->re == ')')
        return first;
    node *n = new_node(pt, N_SEQ);
    n->a = first;
    n->b = parse_seq(pt, ci);
    return n;
}

static const node *parse_alt(pattern *pt, int ci)
{
    const node *first = parse_seq(pt, ci);
    if (*pt->re != '|')
        return first;
    pt->re++;
    node *n = new_node(pt, N_ALT);
    n->a = first;
    n->b = parse_alt(pt, ci);
    return n;
}

static void parse_all(void)
{
    for (int p = TOK_PRETOK_GPT2; p <= TOK_PRETOK_O200K; p++) {
        pattern *pt = &patterns[p];
        pt->re = regex_text[p];
        pt->root = parse_alt(pt, 0);
        SYNTAX(*pt->re == '\0');
    }
}

/* ---- matching --------------------------------------------------------- */

static int set_has(const rset *set, rchar c)
{
    int in = 0;
    if (c.cp != NOCHAR) {
        int space = tok_uc_gc_space(c.cp);
        if ((set->gc_mask >> tok_uc_gc(c.cp)) & 1)
            in = 1;
        if (set->space && space)
            in = 1;
        if (set->nonspace && !space)
            in = 1;
        for (int i = 0; i < set->nlits && !in; i++)
            if (c.cp == set->lits[i] || (set->ci && fold(c.cp) == fold(set->lits[i])))
                in = 1;
    } else if (set->nonspace) {
        in = 1; /* an invalid byte is not a space */
    }
    return in != set->negate;
}

/* What remains to match after the current node: a stack of nodes. */
typedef struct kont {
    const node *n;
    const struct kont *next;
} kont;

typedef struct {
    const uint8_t *s;
    size_t len;
} subject;

#define FAIL ((size_t)-1)

static size_t match(const subject *x, const node *n, size_t pos, const kont *k);

/* A quantified set: collect the end positions of 0..max characters, then
 * try the rest from the longest count down (only the longest when
 * possessive). */
static size_t match_rep_set(const subject *x, const node *n, size_t pos, const kont *k)
{
    size_t local[64], cap = 64, cnt = 0, r = FAIL;
    size_t *ends = local;
    ends[cnt++] = pos;
    while ((n->max < 0 || (int)cnt - 1 < n->max) && pos < x->len) {
        rchar c = ref_decode(x->s, x->len, pos);
        if (!set_has(&n->a->set, c))
            break;
        pos += c.n;
        if (cnt == cap) {
            cap *= 2;
            size_t *grown = malloc(cap * sizeof *ends);
            assert(grown);
            memcpy(grown, ends, cnt * sizeof *ends);
            if (ends != local)
                free(ends);
            ends = grown;
        }
        ends[cnt++] = pos;
    }
    for (size_t i = cnt; i-- > (size_t)n->min;) {
        r = match(x, NULL, ends[i], k);
        if (r != FAIL || n->possessive)
            break;
    }
    if (ends != local)
        free(ends);
    return r;
}

/* Returns the end of the first successful match of n followed by k at pos
 * (in backtracking order), or FAIL. */
static size_t match(const subject *x, const node *n, size_t pos, const kont *k)
{
    if (!n)
        return k ? match(x, k->n, pos, k->next) : pos;
    switch (n->op) {
    case N_EMPTY:
        return match(x, NULL, pos, k);
    case N_SET: {
        if (pos >= x->len)
            return FAIL;
        rchar c = ref_decode(x->s, x->len, pos);
        return set_has(&n->set, c) ? match(x, NULL, pos + c.n, k) : FAIL;
    }
    case N_SEQ: {
        kont rest = {n->b, k};
        return match(x, n->a, pos, &rest);
    }
    case N_ALT: {
        size_t r = match(x, n->a, pos, k);
        return r != FAIL ? r : match(x, n->b, pos, k);
    }
    case N_NOTAHEAD:
        return match(x, n->a, pos, NULL) != FAIL ? FAIL : match(x, NULL, pos, k);
    case N_REP:
        if (n->a->op == N_SET)
            return match_rep_set(x, n, pos, k);
        /* An optional group (max == 1, checked by the parser). */
        if (n->possessive) {
            size_t end = match(x, n->a, pos, NULL);
            return match(x, NULL, end != FAIL ? end : pos, k);
        } else {
            size_t r = match(x, n->a, pos, k);
            if (r == FAIL && n->min == 0)
                r = match(x, NULL, pos, k);
            return r;
        }
    }
    return FAIL;
}

size_t tok_pretok_ref_next(tok_pretok_t p, const uint8_t *s, size_t len, size_t pos)
{
    assert(valid_pattern(p) && pos < len);
    pthread_once(&patterns_once, parse_all);
    subject x = {s, len};
    size_t end = match(&x, patterns[p].root, pos, NULL);
    /* Every character starts a non-empty match in all three patterns. */
    assert(end != FAIL && end > pos);
    return end - pos;
}
