/* wikitext.c — MediaWiki markup to plain text.
 *
 * Not a MediaWiki parser (templates would need the whole wiki to expand):
 * a single left-to-right pass that drops what renders as furniture and
 * keeps what renders as prose. Dropped: templates {{...}} (nested, with
 * {{{parameters}}}), tables {| ... |}, <ref>, comments, <gallery>, <math>
 * and similar extension tags, file/image/category and interlanguage links,
 * magic words (__TOC__), horizontal rules. Kept: [[target|label]] as its
 * label (and [[target]] as target), [url label] as label, headings and
 * list items as lines of their own, text inside other tags, character
 * entities decoded. Every construct that does not close is taken as
 * literal text, so broken markup loses nothing and never loops.
 *
 * Workload: article bodies of up to a few MB; linear except for scans to
 * a closing bracket, which skip the bracketed span in one go.
 */
#include "ingest/internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_DEPTH 16

/* Index just past the balanced close of an open/close pair starting at i
 * (s[i..] begins with open), or 0 if it does not close. */
static size_t match(const char *s, size_t n, size_t i, const char *open, const char *close)
{
    size_t lo = strlen(open), lc = strlen(close);
    int depth = 0;
    while (i < n) {
        if (i + lo <= n && !memcmp(s + i, open, lo)) {
            depth++;
            i += lo;
        } else if (i + lc <= n && !memcmp(s + i, close, lc)) {
            depth--;
            i += lc;
            if (depth == 0)
                return i;
        } else {
            i++;
        }
    }
    return 0;
}

/* Tables: {| at line start to the matching |} (nesting counted). */
static size_t match_table(const char *s, size_t n, size_t i)
{
    int depth = 0;
    while (i < n) {
        int bol = i == 0 || s[i - 1] == '\n';
        size_t j = i;
        if (bol)
            while (j < n && (s[j] == ' ' || s[j] == ':'))
                j++;
        if (bol && j + 1 < n && s[j] == '{' && s[j + 1] == '|') {
            depth++;
            i = j + 2;
        } else if (bol && j + 1 < n && s[j] == '|' && s[j + 1] == '}') {
            depth--;
            i = j + 2;
            if (depth == 0)
                return i;
        } else {
            const char *nl = memchr(s + i, '\n', n - i);
            if (!nl)
                return 0;
            i = (size_t)(nl - s) + 1;
        }
    }
    return 0;
}

static int ci_prefix(const char *s, size_t n, const char *p)
{
    size_t k = strlen(p);
    return n >= k && !strncasecmp(s, p, k);
}

/* Decodes one entity at s (which starts with '&'); returns its length
 * consumed, 0 if not an entity. */
static size_t entity(const char *s, size_t n, ingest_buf_t *out)
{
    static const struct { const char *name, *utf8; } ents[] = {
        {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"nbsp", " "},
        {"ndash", "\xe2\x80\x93"}, {"mdash", "\xe2\x80\x94"}, {"minus", "\xe2\x88\x92"},
        {"hellip", "\xe2\x80\xa6"}, {"times", "\xc3\x97"}, {"deg", "\xc2\xb0"}, {"thinsp", " "},
        {"lsquo", "\xe2\x80\x98"}, {"rsquo", "\xe2\x80\x99"}, {"ldquo", "\xe2\x80\x9c"},
        {"rdquo", "\xe2\x80\x9d"}, {"middot", "\xc2\xb7"}, {"copy", "\xc2\xa9"}, {"shy", ""},
        {NULL, NULL}};
    if (n > 1 && s[1] == '#') {
        size_t i = 2;
        int hex = i < n && (s[i] == 'x' || s[i] == 'X');
        if (hex)
            i++;
        unsigned long cp = 0;
        size_t d = 0;
        while (i < n && d < 8 && (hex ? isxdigit((unsigned char)s[i]) : isdigit((unsigned char)s[i]))) {
            cp = cp * (hex ? 16 : 10) +
                 (unsigned long)(isdigit((unsigned char)s[i]) ? s[i] - '0' : (tolower((unsigned char)s[i]) - 'a' + 10));
            i++;
            d++;
        }
        if (!d || i >= n || s[i] != ';' || cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        char u[4];
        size_t k;
        if (cp < 0x80) { u[0] = (char)cp; k = 1; }
        else if (cp < 0x800) { u[0] = (char)(0xc0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3f)); k = 2; }
        else if (cp < 0x10000) { u[0] = (char)(0xe0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[2] = (char)(0x80 | (cp & 0x3f)); k = 3; }
        else { u[0] = (char)(0xf0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 0x3f)); u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (char)(0x80 | (cp & 0x3f)); k = 4; }
        ibuf_put(out, u, k);
        return i + 1;
    }
    for (int e = 0; ents[e].name; e++) {
        size_t k = strlen(ents[e].name);
        if (1 + k < n && !memcmp(s + 1, ents[e].name, k) && s[1 + k] == ';') {
            ibuf_puts(out, ents[e].utf8);
            return k + 2;
        }
    }
    return 0;
}

/* Tags whose whole element is dropped. */
static const char *const drop_elems[] = {"ref", "gallery", "math", "timeline", "imagemap", "score", "graph",
                                         "templatedata", "mapframe", "maplink", "chem", "ce", "hiero",
                                         "syntaxhighlight", "source", "includeonly", "noinclude", "references",
                                         "inputbox", "categorytree", "templatestyles", NULL};

/* Handles a '<' at s[i]: comments, dropped elements, other tags. Returns
 * the index after what it consumed, or i when '<' is literal. */
static size_t tag(const char *s, size_t n, size_t i, ingest_buf_t *out, int *nowiki)
{
    if (i + 4 <= n && !memcmp(s + i, "<!--", 4)) {
        const char *e = memmem(s + i + 4, n - i - 4, "-->", 3);
        return e ? (size_t)(e - s) + 3 : n;
    }
    size_t j = i + 1;
    int closing = j < n && s[j] == '/';
    if (closing)
        j++;
    size_t name0 = j;
    while (j < n && (isalnum((unsigned char)s[j])))
        j++;
    size_t nl = j - name0;
    if (!nl || nl > 20)
        return i;
    const char *gt = memchr(s + j, '>', n - j > 2048 ? 2048 : n - j);
    if (!gt)
        return i;
    size_t end = (size_t)(gt - s) + 1;
    int selfclose = gt > s + j && gt[-1] == '/';
    char name[24];
    for (size_t k = 0; k < nl; k++)
        name[k] = (char)tolower((unsigned char)s[name0 + k]);
    name[nl] = 0;
    if (!strcmp(name, "nowiki")) {
        if (!closing && !selfclose)
            *nowiki = 1;
        else
            *nowiki = 0;
        return end;
    }
    if (!strcmp(name, "br")) {
        ibuf_putc(out, '\n');
        return end;
    }
    for (int d = 0; drop_elems[d]; d++) {
        if (strcmp(name, drop_elems[d]))
            continue;
        if (closing || selfclose)
            return end;
        /* find </name> */
        char close[32];
        int cl = snprintf(close, sizeof close, "</%s", name);
        for (size_t k = end; k + (size_t)cl <= n; k++) {
            if (s[k] == '{' && s[k + 1] == '{') {
                /* a template inside the element may hold a stray close tag */
                size_t e = match(s, n, k, "{{", "}}");
                if (e)
                    k = e - 1;
                continue;
            }
            if (s[k] == '<' && !strncasecmp(s + k, close, (size_t)cl)) {
                const char *g = memchr(s + k, '>', n - k);
                return g ? (size_t)(g - s) + 1 : n;
            }
        }
        return n; /* unclosed: the rest is inside it */
    }
    /* any other tag: dropped, its content kept */
    if (!strcmp(name, "p") || !strcmp(name, "div") || !strcmp(name, "li") || !strcmp(name, "tr"))
        ibuf_putc(out, '\n');
    return end;
}

static void convert(const char *s, size_t n, ingest_buf_t *out, int depth);

static int is_interwiki(const char *t, size_t n)
{
    static const char *const ns[] = {"file:", "image:", "category:", "media:", "wikipedia:", "wp:", "help:",
                                     "template:", "portal:", "special:", "user:", "talk:", "draft:", "module:",
                                     "mediawiki:", "wiktionary:", "wikt:", "commons:", "s:", "q:", "n:",
                                     "b:", "v:", "species:", "meta:", "m:", "mw:", "d:", "wikidata:",
                                     "\xd0\x9a\xd0\xb0\xd1\x82\xd0\xb5\xd0\xb3\xd0\xbe\xd1\x80\xd0\xb8\xd1\x8f:", /* Категория: */
                                     "\xd0\xa4\xd0\xb0\xd0\xb9\xd0\xbb:", /* Файл: */
                                     "\xd0\x98\xd0\xb7\xd0\xbe\xd0\xb1\xd1\x80\xd0\xb0\xd0\xb6\xd0\xb5\xd0\xbd\xd0\xb8\xd0\xb5:", /* Изображение: */
                                     NULL};
    for (int i = 0; ns[i]; i++)
        if (ci_prefix(t, n, ns[i]))
            return 1;
    /* interlanguage links: [[xx:...]] [[xxx:...]] [[zh-yue:...]] */
    size_t k = 0;
    while (k < n && k < 12 && (islower((unsigned char)t[k]) || t[k] == '-'))
        k++;
    return k >= 2 && k < n && t[k] == ':';
}

/* [[...]] whose inner text is s[0..n). */
static void wikilink(const char *s, size_t n, ingest_buf_t *out, int depth)
{
    while (n && s[0] == ' ') {
        s++;
        n--;
    }
    int colon = n && s[0] == ':';
    if (!colon && is_interwiki(s, n))
        return;
    if (colon) {
        s++;
        n--;
    }
    /* label: after the last top-level '|' */
    size_t bar = n, lvl = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && ((s[i] == '[' && s[i + 1] == '[') || (s[i] == '{' && s[i + 1] == '{'))) { lvl++; i++; }
        else if (i + 1 < n && ((s[i] == ']' && s[i + 1] == ']') || (s[i] == '}' && s[i + 1] == '}'))) { if (lvl) lvl--; i++; }
        else if (s[i] == '|' && !lvl) bar = i;
    }
    if (bar < n) {
        convert(s + bar + 1, n - bar - 1, out, depth + 1);
    } else {
        size_t k = n;
        const char *h = memchr(s, '#', n);
        if (h && h != s)
            k = (size_t)(h - s);
        convert(s, k, out, depth + 1);
    }
}

static void convert(const char *s, size_t n, ingest_buf_t *out, int depth)
{
    if (depth > MAX_DEPTH)
        return;
    int nowiki = 0;
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        int bol = i == 0 || s[i - 1] == '\n';
        if (nowiki) {
            if (c == '<' && ci_prefix(s + i, n - i, "</nowiki")) {
                size_t e = tag(s, n, i, out, &nowiki);
                if (e != i) {
                    i = e;
                    continue;
                }
            }
            ibuf_putc(out, c);
            i++;
            continue;
        }
        if (bol && depth == 0) {
            size_t j = i;
            while (j < n && s[j] == ' ')
                j++;
            if (j + 1 < n && s[j] == '{' && s[j + 1] == '|') {
                size_t e = match_table(s, n, i);
                if (e) {
                    i = e < n && s[e] == '\n' ? e + 1 : e;
                    continue;
                }
            }
            if (c == '=' ) {
                /* heading: strip the = marks on both ends */
                const char *nl = memchr(s + i, '\n', n - i);
                size_t e = nl ? (size_t)(nl - s) : n;
                size_t a = i, b = e;
                while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\r' || s[b - 1] == '\t'))
                    b--;
                int lv = 0, rv = 0;
                while (a < b && s[a] == '=') { a++; lv++; }
                while (b > a && s[b - 1] == '=') { b--; rv++; }
                if (lv >= 1 && rv >= 1 && b > a) {
                    while (a < b && s[a] == ' ') a++;
                    while (b > a && s[b - 1] == ' ') b--;
                    convert(s + a, b - a, out, depth + 1);
                    ibuf_putc(out, '\n');
                    i = e < n ? e + 1 : n;
                    continue;
                }
            }
            if (c == '*' || c == '#' || c == ':' || c == ';') {
                while (i < n && (s[i] == '*' || s[i] == '#' || s[i] == ':' || s[i] == ';'))
                    i++;
                while (i < n && s[i] == ' ')
                    i++;
                continue;
            }
            if (i + 4 <= n && !memcmp(s + i, "----", 4)) {
                while (i < n && s[i] == '-')
                    i++;
                continue;
            }
        }
        if (c == '{' && i + 1 < n && s[i + 1] == '{') {
            size_t e = match(s, n, i, "{{", "}}");
            if (e) {
                i = e;
                continue;
            }
            i += 2; /* unclosed: literal braces dropped */
            continue;
        }
        if (c == '[' && i + 1 < n && s[i + 1] == '[') {
            size_t e = match(s, n, i, "[[", "]]");
            if (e) {
                wikilink(s + i + 2, e - i - 4, out, depth);
                i = e;
                continue;
            }
            /* unclosed: "[[target|label]" (a common typo) up to the line's end */
            const char *nl = memchr(s + i, '\n', n - i);
            const char *rb = memchr(s + i + 2, ']', (nl ? (size_t)(nl - s) : n) - i - 2);
            if (rb) {
                wikilink(s + i + 2, (size_t)(rb - (s + i + 2)), out, depth);
                i = (size_t)(rb - s) + 1;
                continue;
            }
            ibuf_put(out, "[[", 2);
            i += 2;
            continue;
        }
        if (c == '[' && (ci_prefix(s + i + 1, n - i - 1, "http") || ci_prefix(s + i + 1, n - i - 1, "//") ||
                         ci_prefix(s + i + 1, n - i - 1, "ftp") || ci_prefix(s + i + 1, n - i - 1, "mailto:"))) {
            const char *e = NULL;
            for (size_t j = i + 1; j < n && s[j] != '\n'; j++) {
                if (s[j] == '[' && j + 1 < n && s[j + 1] == '[') {
                    size_t m = match(s, n, j, "[[", "]]");
                    if (m) {
                        j = m - 1; /* a wikilink inside the label */
                        continue;
                    }
                }
                if (s[j] == ']') {
                    e = s + j;
                    break;
                }
            }
            const char *nl = memchr(s + i, '\n', n - i);
            if (e && (!nl || e < nl)) {
                const char *sp = memchr(s + i, ' ', (size_t)(e - (s + i)));
                if (sp)
                    convert(sp + 1, (size_t)(e - sp - 1), out, depth + 1);
                i = (size_t)(e - s) + 1;
                continue;
            }
        }
        if (c == '\'' && i + 1 < n && s[i + 1] == '\'') {
            while (i < n && s[i] == '\'')
                i++;
            continue;
        }
        if (c == '<') {
            size_t e = tag(s, n, i, out, &nowiki);
            if (e != i) {
                i = e;
                continue;
            }
        }
        if (c == '&') {
            size_t k = entity(s + i, n - i, out);
            if (k) {
                i += k;
                continue;
            }
        }
        if (c == '_' && i + 1 < n && s[i + 1] == '_') {
            size_t j = i + 2;
            while (j < n && isupper((unsigned char)s[j]))
                j++;
            if (j > i + 2 && j + 1 < n && s[j] == '_' && s[j + 1] == '_') {
                i = j + 2;
                continue;
            }
        }
        ibuf_putc(out, c);
        i++;
    }
}

/* Collapses spaces, trims lines, keeps at most one blank line in a row
 * and none at the ends. */
static void tidy(ingest_buf_t *b)
{
    size_t r = 0, w = 0;
    int blank = 0;
    while (r < b->len) {
        size_t e = r;
        while (e < b->len && b->p[e] != '\n')
            e++;
        size_t ls = w;
        int sp = 0;
        for (size_t k = r; k < e; k++) {
            char c = b->p[k];
            if (c == ' ' || c == '\t' || c == '\r') {
                sp = 1;
                continue;
            }
            if (sp && w > ls)
                b->p[w++] = ' ';
            sp = 0;
            b->p[w++] = c;
        }
        if (w == ls) {
            blank = 1;
        } else {
            if (blank && ls > 0) {
                memmove(b->p + ls + 1, b->p + ls, w - ls);
                b->p[ls] = '\n';
                w++;
            }
            blank = 0;
            b->p[w++] = '\n';
        }
        r = e + 1;
    }
    while (w && b->p[w - 1] == '\n')
        w--;
    b->len = w;
    if (b->p)
        b->p[w] = 0;
}

void ingest_wikitext_to_text(const char *wt, size_t len, ingest_buf_t *out)
{
    ibuf_clear(out);
    ibuf_reserve(out, len + 16);
    convert(wt, len, out, 0);
    tidy(out);
}
