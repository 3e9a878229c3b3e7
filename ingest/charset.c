/* charset.c — bytes of any charset to valid UTF-8.
 *
 * Crawled pages declare their charset in the HTTP header or a <meta> tag,
 * and often lie. The declared name is mapped the way browsers do (gb2312
 * and gbk decode as GB18030, latin-1 as windows-1252, WHATWG's rules) and
 * tried with iconv; if the bytes are not valid in it, or nothing was
 * declared, uchardet sniffs the charset. Whatever remains undecodable
 * becomes U+FFFD, so the output is always valid UTF-8. One iconv
 * descriptor is cached per charset name, since a crawl repeats a few.
 */
#include "ingest/internal.h"

#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uchardet/uchardet.h>

int ingest_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        /* fast path over ASCII, 8 bytes at a time */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
        else return 0;
        for (size_t k = 1; k <= n; k++) {
            if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* Copies valid UTF-8 and replaces each invalid byte with U+FFFD. */
static void utf8_repair(const char *str, size_t len, ingest_buf_t *out)
{
    const unsigned char *s = (const unsigned char *)str;
    ibuf_reserve(out, len + 16);
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] < 0x80)
            j++;
        if (j > i)
            ibuf_put(out, s + i, j - i);
        i = j;
        if (i >= len)
            break;
        size_t n = 0;
        unsigned c = s[i];
        if (c >= 0xc2 && c <= 0xdf) n = 2;
        else if (c >= 0xe0 && c <= 0xef) n = 3;
        else if (c >= 0xf0 && c <= 0xf4) n = 4;
        if (n && i + n <= len && ingest_utf8_valid((const char *)s + i, n)) {
            ibuf_put(out, s + i, n);
            i += n;
        } else {
            ibuf_put(out, "\xef\xbf\xbd", 3);
            i++;
        }
    }
}

/* The charset a declared label decodes as (WHATWG-style aliases). */
static const char *canonical(const char *label)
{
    static const struct { const char *label, *name; } map[] = {
        {"utf-8", "UTF-8"}, {"utf8", "UTF-8"}, {"unicode-1-1-utf-8", "UTF-8"},
        {"gb2312", "GB18030"}, {"gbk", "GB18030"}, {"gb18030", "GB18030"}, {"x-gbk", "GB18030"},
        {"gb_2312-80", "GB18030"}, {"chinese", "GB18030"},
        {"iso-8859-1", "WINDOWS-1252"}, {"latin1", "WINDOWS-1252"}, {"iso8859-1", "WINDOWS-1252"},
        {"us-ascii", "WINDOWS-1252"}, {"ascii", "WINDOWS-1252"}, {"windows-1252", "WINDOWS-1252"},
        {"cp1252", "WINDOWS-1252"}, {"iso-8859-9", "WINDOWS-1254"},
        {"windows-1251", "WINDOWS-1251"}, {"cp1251", "WINDOWS-1251"},
        {"big5", "BIG5-HKSCS"}, {"shift_jis", "CP932"}, {"sjis", "CP932"}, {"x-sjis", "CP932"},
        {"euc-kr", "CP949"}, {"ks_c_5601-1987", "CP949"},
        {NULL, NULL}};
    for (int i = 0; map[i].label; i++)
        if (!strcasecmp(label, map[i].label))
            return map[i].name;
    return label;
}

#define NCACHE 8
static struct {
    char name[40];
    iconv_t cd;
} cache[NCACHE];
static int cache_next;

static iconv_t get_cd(const char *name)
{
    for (int i = 0; i < NCACHE; i++)
        if (cache[i].name[0] && !strcasecmp(cache[i].name, name))
            return cache[i].cd;
    if (strlen(name) >= sizeof cache[0].name)
        return (iconv_t)-1;
    iconv_t cd = iconv_open("UTF-8", name);
    if (cd == (iconv_t)-1)
        return cd;
    int k = cache_next++ % NCACHE;
    if (cache[k].name[0])
        iconv_close(cache[k].cd);
    snprintf(cache[k].name, sizeof cache[k].name, "%s", name);
    cache[k].cd = cd;
    return cd;
}

/* Converts with iconv; returns 0 if every byte converted, -1 otherwise
 * (out then holds a partial result the caller discards). */
static int convert(const char *name, const char *data, size_t len, ingest_buf_t *out)
{
    iconv_t cd = get_cd(name);
    if (cd == (iconv_t)-1)
        return -1;
    iconv(cd, NULL, NULL, NULL, NULL);
    ibuf_clear(out);
    ibuf_reserve(out, len * 2 + 16);
    char *in = (char *)data;
    size_t inleft = len;
    while (inleft > 0) {
        char *o = out->p + out->len;
        size_t oleft = out->cap - out->len - 1;
        size_t r = iconv(cd, &in, &inleft, &o, &oleft);
        out->len = (size_t)(o - out->p);
        if (r == (size_t)-1) {
            if (errno == E2BIG) {
                ibuf_reserve(out, inleft * 2 + 64);
                continue;
            }
            return -1;
        }
    }
    out->p[out->len] = 0;
    return 0;
}

static const char *sniff(const char *data, size_t len, char *name, size_t cap)
{
    uchardet_t u = uchardet_new();
    const char *r = NULL;
    if (!u)
        return NULL;
    if (uchardet_handle_data(u, data, len) == 0) {
        uchardet_data_end(u);
        const char *cs = uchardet_get_charset(u);
        if (cs && *cs) {
            snprintf(name, cap, "%s", cs);
            r = name;
        }
    }
    uchardet_delete(u);
    return r;
}

int ingest_to_utf8(const char *data, size_t len, const char *charset, ingest_buf_t *out, const char **used)
{
    static char sniffed[64];
    const char *want = charset && *charset ? canonical(charset) : NULL;
    ibuf_clear(out);
    if (want && !strcasecmp(want, "UTF-8")) {
        if (ingest_utf8_valid(data, len)) {
            ibuf_put(out, data, len);
            *used = "UTF-8";
            return 0;
        }
    } else if (want && convert(want, data, len, out) == 0) {
        *used = want;
        return 0;
    }
    /* nothing declared, or the declaration lied */
    if (ingest_utf8_valid(data, len)) {
        ibuf_clear(out);
        ibuf_put(out, data, len);
        *used = "UTF-8";
        return want ? 1 : 0;
    }
    const char *s = sniff(data, len, sniffed, sizeof sniffed);
    if (s) {
        const char *c = canonical(s);
        if (strcasecmp(c, "UTF-8") && strcasecmp(c, "ASCII") && convert(c, data, len, out) == 0) {
            snprintf(sniffed, sizeof sniffed, "%s", c);
            *used = sniffed;
            return want ? 1 : 0;
        }
    }
    ibuf_clear(out);
    utf8_repair(data, len, out);
    *used = "UTF-8";
    return 1;
}
