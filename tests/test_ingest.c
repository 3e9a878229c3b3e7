/* test_ingest.c — the ingest readers, extractors and filters.
 *
 * On the real files of the shared data folder, against facts about them
 * that do not come from this code (the wiki sample's 206 pages of which 100
 * are redirects and 205 in namespace 0, the crawl samples' response counts
 * as their READMEs and `grep` give them, the charsets the pages declare);
 * on crafted inputs for each kind of bad input (malformed header, wrong
 * Content-Length, lying charset, malformed XML, entity bomb, decompression
 * bomb, absurd line); and on crafted texts for each filter, the HTML and
 * wikitext extractors, and MinHash against the exact Jaccard similarity of
 * the shingle sets computed naively.
 */
#include "ingest/ingest.h"
#include "tests/tap.h"

#include <archive.h>
#include <archive_entry.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t n;
    char *text[512];
    size_t len[512];
    char *url[512], *title[512], *id[512], *date[512], *path[512], *lang[512], *license[512];
    uint64_t counts[INGEST_NCOUNTERS];
    uint64_t last_offset;
} coll_t;

static char *dup0(const char *s) { return s ? strdup(s) : NULL; }

static int c_doc(void *ctx, const ingest_doc_t *d, gl_err_t *err)
{
    coll_t *c = ctx;
    (void)err;
    if (c->n >= 512)
        return GL_OK;
    size_t i = c->n++;
    c->text[i] = malloc(d->len + 1);
    memcpy(c->text[i], d->text, d->len);
    c->text[i][d->len] = 0;
    c->len[i] = d->len;
    c->url[i] = dup0(d->url);
    c->title[i] = dup0(d->title);
    c->id[i] = dup0(d->record_id);
    c->date[i] = dup0(d->date);
    c->path[i] = dup0(d->path);
    c->lang[i] = dup0(d->language);
    c->license[i] = dup0(d->license);
    return GL_OK;
}

static void c_count(void *ctx, ingest_counter_t k, uint64_t off, const char *msg)
{
    coll_t *c = ctx;
    c->counts[k]++;
    if (msg && getenv("GL_TEST_VERBOSE"))
        tap_diag("%s @%llu: %s", ingest_counter_name(k), (unsigned long long)off, msg);
    c->last_offset = off;
}

static void coll_free(coll_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->text[i]);
        free(c->url[i]);
        free(c->title[i]);
        free(c->id[i]);
        free(c->date[i]);
        free(c->path[i]);
        free(c->lang[i]);
        free(c->license[i]);
    }
    memset(c, 0, sizeof *c);
}

static int read_data(const char *rel, coll_t *c)
{
    char *p = tap_data_path(rel);
    if (!p)
        return -1;
    ingest_sink_t s = {.doc = c_doc, .count = c_count, .ctx = c};
    gl_err_t err = {0};
    int rc = ingest_read_file(p, INGEST_KIND_AUTO, NULL, &s, NULL, &err);
    if (rc)
        tap_diag("%s", err.msg);
    free(p);
    return rc;
}

static int read_mem(const char *data, size_t len, ingest_kind_t kind, const ingest_read_opts_t *o, coll_t *c)
{
    ingest_sink_t s = {.doc = c_doc, .count = c_count, .ctx = c};
    gl_err_t err = {0};
    return ingest_read_memory(data, len, "crafted", kind, o, &s, NULL, &err);
}

static int any_has(const coll_t *c, const char *needle)
{
    for (size_t i = 0; i < c->n; i++)
        if (strstr(c->text[i], needle))
            return 1;
    return 0;
}

/* ---- real files ---- */

static void test_wiki(void)
{
    coll_t c = {0};
    if (read_data("wiki/enwiki-pages-articles-sample.xml.bz2", &c) < 0) {
        tap_skip(8, "no shared data");
        return;
    }
    /* 206 pages: 100 redirects, 205 in namespace 0, 106 articles that are not redirects */
    is_int(c.n, 106, "wiki sample: 106 articles extracted");
    is_int(c.n + c.counts[INGEST_SKIP_REDIRECT] + c.counts[INGEST_SKIP_NAMESPACE] + c.counts[INGEST_SKIP_EMPTY], 206,
           "wiki sample: every one of the 206 pages accounted for");
    is_int(c.counts[INGEST_SKIP_REDIRECT] + c.counts[INGEST_SKIP_NAMESPACE], 100,
           "wiki sample: 100 redirects skipped (one outside namespace 0)");
    int markup = 0, meta = 1;
    for (size_t i = 0; i < c.n; i++) {
        const char *t = c.text[i];
        if (strstr(t, "{{") || strstr(t, "}}") || strstr(t, "[[") || strstr(t, "]]") || strstr(t, "'''") ||
            strstr(t, "<ref") || strstr(t, "{|") || strstr(t, "<!--") || strstr(t, "&lt;ref"))
            markup++;
        if (!c.title[i] || !c.id[i] || !c.date[i] || strlen(c.date[i]) < 10)
            meta = 0;
    }
    is_int(markup, 0, "wiki sample: no templates, links, bold marks, refs, tables or comments left");
    ok(meta, "wiki sample: title, page id and revision date kept");
    ok(any_has(&c, "Anarchism") || any_has(&c, "anarchism"), "wiki sample: article prose present");
    coll_free(&c);

    read_data("wiki/bgwiki-utf16-sample.xml.bz2", &c);
    /* 3 pages, 1 of them in namespace 0 */
    is_int(c.n, 1, "UTF-16 dump: the one namespace-0 page extracted");
    ok(c.n && ingest_utf8_valid(c.text[0], c.len[0]) && strstr(c.text[0], "\xd0"),
       "UTF-16 dump: text converted to UTF-8 Cyrillic");
    coll_free(&c);

    read_data("wiki/enwiki-table-markup.xml.bz2", &c);
    int tables = 0;
    for (size_t i = 0; i < c.n; i++)
        if (strstr(c.text[i], "{|") || strstr(c.text[i], "|-") || strstr(c.text[i], "||"))
            tables++;
    is_int(c.n, 5, "table-markup sample: 5 pages");
    is_int(tables, 0, "table-markup sample: no table markup left");
    coll_free(&c);
}

static void test_crawl(void)
{
    coll_t c = {0};
    if (read_data("crawl/cc-2020-34-sample.warc.gz", &c) < 0) {
        tap_skip(13, "no shared data");
        return;
    }
    /* 16 responses, all text/html with 200 status */
    is_int(c.n, 16, "CC sample: 16 responses extracted");
    int valid = 1, meta = 1, script = 0;
    for (size_t i = 0; i < c.n; i++) {
        valid &= ingest_utf8_valid(c.text[i], c.len[i]);
        if (!c.url[i] || strncmp(c.url[i], "http", 4) || !c.date[i] || !c.id[i] || strncmp(c.id[i], "<urn:uuid:", 10))
            meta = 0;
        if (strstr(c.text[i], "<script") || strstr(c.text[i], "function(") || strstr(c.text[i], "<div") ||
            strstr(c.text[i], "{display"))
            script++;
    }
    ok(valid, "CC sample: every text is valid UTF-8");
    ok(meta, "CC sample: URL, WARC-Date and WARC-Record-ID kept");
    is_int(script, 0, "CC sample: no markup or script in the text");
    /* gb2312 pages come out as CJK (U+4E00..U+9FFF: E4..E9 lead bytes), the windows-1251 page as Cyrillic */
    int cjk = 0, cyr = 0;
    for (size_t i = 0; i < c.n; i++) {
        const unsigned char *t = (const unsigned char *)c.text[i];
        size_t nc = 0, ny = 0;
        for (size_t k = 0; k + 2 < c.len[i]; k++) {
            if (t[k] >= 0xe4 && t[k] <= 0xe9 && (t[k + 1] & 0xc0) == 0x80)
                nc++;
            if ((t[k] == 0xd0 || t[k] == 0xd1) && (t[k + 1] & 0xc0) == 0x80)
                ny++;
        }
        cjk += nc > 50;
        cyr += ny > 50;
    }
    ok(cjk >= 5, "CC sample: the gb2312/gbk pages decode to Chinese text (%d pages)", cjk);
    ok(cyr >= 1, "CC sample: the windows-1251 page decodes to Cyrillic text");
    coll_free(&c);

    read_data("crawl/wget-sample-0000.warc.gz", &c);
    int bare = c.n > 0;
    for (size_t i = 0; i < c.n; i++)
        bare &= c.url[i] && !strncmp(c.url[i], "http", 4) && c.url[i][strlen(c.url[i]) - 1] != '>';
    ok(bare, "wget sample 0: URLs without wget's angle brackets");
    is_int(c.n + c.counts[INGEST_SKIP_EMPTY] + c.counts[INGEST_SKIP_NOT_HTML] + c.counts[INGEST_SKIP_HTTP_STATUS], 22,
           "wget sample 0: all 22 responses accounted for");
    coll_free(&c);
    read_data("crawl/wget-sample-0001.warc.gz", &c);
    is_int(c.n + c.counts[INGEST_SKIP_EMPTY] + c.counts[INGEST_SKIP_NOT_HTML] + c.counts[INGEST_SKIP_HTTP_STATUS], 15,
           "wget sample 1: all 15 responses accounted for");
    coll_free(&c);

    read_data("crawl/cc-whirlwind.warc.wet.gz", &c);
    is_int(c.n, 1, "WET: one conversion record");
    ok(c.n && c.url[0] && strstr(c.url[0], "Escopete"), "WET: target URI kept");
    coll_free(&c);

    int rc = read_data("crawl/clipped.warc.gz", &c);
    is_int(rc, GL_OK, "clipped WARC: the reader goes on (no error returned)");
    ok(c.counts[INGEST_ERR_TRUNCATED] >= 1, "clipped WARC: truncation counted");
    is_int(c.n, 0, "clipped WARC: the cut-off record is not kept");
    coll_free(&c);
}

static void test_code(void)
{
    coll_t c = {0};
    if (read_data("code/argparse-1.2.1.tar.gz", &c) < 0) {
        tap_skip(6, "no shared data");
        return;
    }
    int py = 0, lic = 1, paths = 1;
    for (size_t i = 0; i < c.n; i++) {
        if (c.lang[i] && !strcmp(c.lang[i], "Python"))
            py++;
        if (!c.license[i] || !strstr(c.license[i], "LICENSE.txt"))
            lic = 0;
        if (!c.path[i] || strncmp(c.path[i], "argparse-1.2.1/", 15))
            paths = 0;
    }
    /* tar tzf: argparse.py, setup.py, test/test_argparse.py, and doc/source/conf.py, whose
     * header calls it "this autogenerated file" (sphinx-quickstart) */
    is_int(py, 3, "argparse: the 3 hand-written Python files");
    is_int(c.counts[INGEST_SKIP_GENERATED], 1, "argparse: the autogenerated conf.py skipped");
    ok(lic, "argparse: licence file recorded on every document");
    ok(paths, "argparse: paths inside the archive kept");
    ok(c.counts[INGEST_SKIP_UNKNOWN_LANG] >= 1, "argparse: files of no known language skipped (PKG-INFO...)");
    coll_free(&c);
    read_data("code/distribute-0.7.3.zip", &c);
    int zpy = 0;
    for (size_t i = 0; i < c.n; i++)
        zpy += c.lang[i] && !strcmp(c.lang[i], "Python");
    ok(zpy >= 30, "distribute zip: its Python files read (%d)", zpy);
    coll_free(&c);
}

/* ---- crafted bad input ---- */

static void warc_rec(char *buf, size_t cap, size_t *len, const char *type, const char *uri, const char *block,
                     long declared)
{
    size_t bl = strlen(block);
    *len += (size_t)snprintf(buf + *len, cap - *len,
                             "WARC/1.0\r\nWARC-Type: %s\r\nWARC-Target-URI: %s\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
                             "WARC-Record-ID: <urn:uuid:%zu>\r\nContent-Type: application/http; msgtype=response\r\n"
                             "Content-Length: %ld\r\n\r\n%s\r\n\r\n",
                             type, uri, *len, declared >= 0 ? declared : (long)bl, block);
}

static const char *http_page(const char *charset, const char *body, char *buf, size_t cap)
{
    snprintf(buf, cap, "HTTP/1.1 200 OK\r\nContent-Type: text/html%s%s\r\n\r\n%s", charset ? "; charset=" : "",
             charset ? charset : "", body);
    return buf;
}

static void test_bad_warc(void)
{
    static char w[1 << 16];
    char page[4096];
    size_t n = 0;
    coll_t c = {0};
    /* malformed header between two good records */
    warc_rec(w, sizeof w, &n, "response", "http://a/", http_page(NULL, "<p>first page</p>", page, sizeof page), -1);
    n += (size_t)snprintf(w + n, sizeof w - n, "WARC/1.0\r\nthis is not a header\r\n\r\n");
    warc_rec(w, sizeof w, &n, "response", "http://b/", http_page(NULL, "<p>second page</p>", page, sizeof page), -1);
    read_mem(w, n, INGEST_KIND_WARC, NULL, &c);
    is_int(c.n, 2, "malformed WARC header: the records around it are kept");
    is_int(c.counts[INGEST_ERR_HEADER], 1, "malformed WARC header: counted once");
    coll_free(&c);

    /* wrong Content-Length (too short), then good records */
    n = 0;
    warc_rec(w, sizeof w, &n, "response", "http://a/", http_page(NULL, "<p>long body here</p>", page, sizeof page), 30);
    warc_rec(w, sizeof w, &n, "response", "http://b/", http_page(NULL, "<p>next page</p>", page, sizeof page), -1);
    warc_rec(w, sizeof w, &n, "response", "http://c/", http_page(NULL, "<p>third</p>", page, sizeof page), -1);
    read_mem(w, n, INGEST_KIND_WARC, NULL, &c);
    is_int(c.counts[INGEST_ERR_LENGTH], 1, "Content-Length too short: counted");
    is_int(c.n, 2, "Content-Length too short: the bad record dropped, the next ones kept");
    ok(c.n == 2 && !strcmp(c.text[0], "next page") && !strcmp(c.text[1], "third"),
       "Content-Length too short: resynchronised on the next record");
    coll_free(&c);

    /* wrong Content-Length (too long), by a little (into the next record's
     * header), by a lot (over the next record, into the third) and past the
     * end of the file (the second of three); WARC and WET */
    static const struct {
        long extra;
        int bad;
        const char *name;
    } longer[] = {{60, 0, "into the next header"}, {400, 0, "over the next record"}, {100000, 1, "past the end"}};
    for (int wet = 0; wet < 2; wet++)
        for (size_t v = 0; v < sizeof longer / sizeof longer[0]; v++) {
            const char *type = wet ? "conversion" : "response";
            const char *bodies[3] = {"first", "second", "third"};
            n = 0;
            for (int r = 0; r < 3; r++) {
                const char *body = wet ? bodies[r] : http_page(NULL, r == 0 ? "<p>first</p>" : r == 1 ? "<p>second</p>"
                                                                                                   : "<p>third</p>",
                                                               page, sizeof page);
                long declared = r == longer[v].bad ? (long)strlen(body) + longer[v].extra : -1;
                warc_rec(w, sizeof w, &n, type, "http://a/", body, declared);
            }
            read_mem(w, n, INGEST_KIND_WARC, NULL, &c);
            const char *dropped = bodies[longer[v].bad];
            int kept_others = c.n == 2 && !any_has(&c, dropped);
            for (int r = 0; r < 3; r++)
                if (r != longer[v].bad)
                    kept_others &= any_has(&c, bodies[r]);
            ok(kept_others && c.counts[INGEST_ERR_LENGTH] == 1 && c.counts[INGEST_ERR_TRUNCATED] == 0,
               "Content-Length too long (%s, %s): counted, that record dropped, the others kept", longer[v].name,
               wet ? "WET" : "WARC");
            coll_free(&c);
        }

    /* a charset that lies: declared UTF-8, bytes in windows-1252 */
    n = 0;
    warc_rec(w, sizeof w, &n, "response", "http://a/",
             http_page("utf-8", "<p>caf\xe9 cr\xe8me br\xfbl\xe9" "e, d\xe9j\xe0 vu, na\xef" "ve fa\xe7" "ade</p>", page, sizeof page), -1);
    /* undeclared, only in <meta> */
    warc_rec(w, sizeof w, &n, "response", "http://b/",
             http_page(NULL, "<html><head><meta charset=\"windows-1251\"></head><body><p>\xcf\xf0\xe8\xe2\xe5\xf2 \xec\xe8\xf0</p></body></html>", page, sizeof page), -1);
    read_mem(w, n, INGEST_KIND_WARC, NULL, &c);
    is_int(c.n, 2, "charsets: both pages kept");
    ok(c.n == 2 && strstr(c.text[0], "caf\xc3\xa9 cr\xc3\xa8me"), "lying charset: decoded as what the bytes are");
    ok(c.counts[INGEST_ERR_CHARSET] == 1, "lying charset: counted");
    is_str(c.n == 2 ? c.text[1] : "", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd0\xbc\xd0\xb8\xd1\x80",
           "<meta> charset windows-1251 honoured");
    coll_free(&c);

    /* absurd line length in a header */
    n = 0;
    char *big = malloc(200000);
    memset(big, 'x', 199999);
    big[199999] = 0;
    size_t cap = 300000;
    char *w2 = malloc(cap);
    n = (size_t)snprintf(w2, cap, "WARC/1.0\r\nWARC-Type: response\r\nX-Long: %s\r\n\r\n", big);
    warc_rec(w2, cap, &n, "response", "http://b/", http_page(NULL, "<p>after</p>", page, sizeof page), -1);
    read_mem(w2, n, INGEST_KIND_WARC, NULL, &c);
    ok(c.counts[INGEST_ERR_LINE] + c.counts[INGEST_ERR_HEADER] >= 1, "absurd line: counted");
    ok(c.n == 1 && !strcmp(c.text[0], "after"), "absurd line: the next record kept");
    coll_free(&c);
    free(big);
    free(w2);

    /* record over the cap: skipped, the next kept */
    n = 0;
    char body[3000];
    memset(body, 'a', sizeof body - 1);
    body[sizeof body - 1] = 0;
    char page2[4096];
    warc_rec(w, sizeof w, &n, "response", "http://a/", http_page(NULL, body, page2, sizeof page2), -1);
    warc_rec(w, sizeof w, &n, "response", "http://b/", http_page(NULL, "<p>small</p>", page, sizeof page), -1);
    ingest_read_opts_t o;
    ingest_read_opts_default(&o);
    o.max_record = 1000;
    read_mem(w, n, INGEST_KIND_WARC, &o, &c);
    is_int(c.counts[INGEST_SKIP_TOO_LARGE], 1, "oversized record: skipped and counted");
    is_int(c.n, 1, "oversized record: the next record kept");
    coll_free(&c);
}

/* gzip of data, made with libarchive; caller frees */
static char *gzip_bytes(const char *data, size_t n, size_t *out_len)
{
    size_t cap = n + 1024;
    char *out = malloc(cap);
    struct archive *a = archive_write_new();
    archive_write_add_filter_gzip(a);
    archive_write_set_format_raw(a);
    archive_write_open_memory(a, out, cap, out_len);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_filetype(e, AE_IFREG);
    archive_write_header(a, e);
    archive_write_data(a, data, n);
    archive_entry_free(e);
    archive_write_close(a);
    archive_write_free(a);
    return out;
}

static void test_content_encoding(void)
{
    const char *html = "<p>a zipped page</p>";
    size_t zl;
    char *z = gzip_bytes(html, strlen(html), &zl);
    char *w = malloc(4096);
    int hl = snprintf(w, 4096, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n\r\n");
    memcpy(w + hl, z, zl);
    size_t bl = (size_t)hl + zl;
    char *rec = malloc(8192);
    size_t n = (size_t)snprintf(rec, 8192, "WARC/1.0\r\nWARC-Type: response\r\nContent-Length: %zu\r\n\r\n", bl);
    memcpy(rec + n, w, bl);
    n += bl;
    memcpy(rec + n, "\r\n\r\n", 4);
    n += 4;
    coll_t c = {0};
    read_mem(rec, n, INGEST_KIND_WARC, NULL, &c);
    ok(c.n == 1 && !strcmp(c.text[0], "a zipped page"), "gzip Content-Encoding decoded");
    coll_free(&c);
    free(z);
    free(w);
    free(rec);
}

/* gzip of n zero bytes, made with libarchive */
static char *gzip_zeros(size_t n, size_t *out_len)
{
    size_t cap = n / 100 + 65536;
    char *out = malloc(cap);
    struct archive *a = archive_write_new();
    archive_write_add_filter_gzip(a);
    archive_write_set_format_raw(a);
    archive_write_open_memory(a, out, cap, out_len);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_filetype(e, AE_IFREG);
    archive_write_header(a, e);
    char *z = calloc(1, 1 << 20);
    memcpy(z, "WARC/1.0\r\n", 10);
    for (size_t done = 0; done < n; done += 1 << 20)
        archive_write_data(a, z, 1 << 20);
    free(z);
    archive_entry_free(e);
    archive_write_close(a);
    archive_write_free(a);
    return out;
}

/* The uncompressed bytes of a compressed file (caller frees). */
static char *decompress(const char *path, size_t *len)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    struct archive_entry *e;
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    if (archive_read_open_filename(a, path, 1 << 16) == ARCHIVE_OK && archive_read_next_header(a, &e) == ARCHIVE_OK) {
        la_ssize_t k;
        while ((k = archive_read_data(a, out + n, cap - n)) > 0)
            if ((n += (size_t)k) == cap)
                out = realloc(out, cap *= 2);
    }
    archive_read_free(a);
    *len = n;
    return out;
}

/* The wiki sample cut short or damaged just after a page, at several
 * places: every article whose </page> lies before the damage comes out,
 * exactly as from the whole file, and nothing after it. The articles
 * before a place are counted from the raw XML, independently of the
 * reader: <page>...</page> spans with <ns>0</ns> and no <redirect. */
static void test_wiki_damaged(void)
{
    char *path = tap_data_path("wiki/enwiki-pages-articles-sample.xml.bz2");
    coll_t full = {0}, c = {0};
    if (!path || read_data("wiki/enwiki-pages-articles-sample.xml.bz2", &full) < 0) {
        tap_skip(2, "no shared data");
        free(path);
        return;
    }
    size_t n;
    char *xml = decompress(path, &n);
    free(path);
    char *buf = malloc(n + 64);
    int bad = 0, runs = 0, partial = 0;
    static const size_t deltas[] = {0, 1, 40, 300};
    const char *p = xml;
    for (int page = 0; page < 24 && (p = strstr(p, "</page>")); page++) {
        p += 7;
        if (page % 4 != 3)
            continue;
        for (size_t d = 0; d < sizeof deltas / sizeof deltas[0]; d++)
            for (int corrupt = 0; corrupt < 2; corrupt++) {
                size_t cut = (size_t)(p - xml) + deltas[d], len = cut;
                memcpy(buf, xml, cut);
                if (corrupt) { /* a broken tag, then the rest of the dump */
                    memcpy(buf + cut, "<bad a=\"x>&&\n", 14);
                    len += 14;
                    memcpy(buf + len, xml + cut, 2000);
                    len += 2000;
                }
                size_t want = 0;
                for (const char *q = xml; (q = strstr(q, "<page>")) && q < xml + cut;) {
                    const char *e = strstr(q, "</page>");
                    if (!e || (size_t)(e + 7 - xml) > cut)
                        break;
                    char *body = strndup(q, (size_t)(e - q));
                    want += strstr(body, "<ns>0</ns>") && !strstr(body, "<redirect");
                    free(body);
                    q = e;
                }
                read_mem(buf, len, INGEST_KIND_WIKI, NULL, &c);
                runs++;
                int same = c.n == want && c.counts[INGEST_ERR_XML] == 1;
                for (size_t i = 0; same && i < c.n; i++)
                    same = !strcmp(c.text[i], full.text[i]) && !strcmp(c.title[i], full.title[i]);
                if (!same && bad++ < 3)
                    tap_diag("cut at %zu (%s): %zu articles out, %zu before the damage, %llu XML errors", cut,
                             corrupt ? "corrupted" : "truncated", c.n, want,
                             (unsigned long long)c.counts[INGEST_ERR_XML]);
                partial += want > 0;
                coll_free(&c);
            }
    }
    is_int(bad, 0, "damaged wiki dump: every article closed before the damage kept, none after (%d cuts)", runs);
    ok(runs >= 40 && partial >= 40, "damaged wiki dump: the cuts fall after articles");
    free(buf);
    free(xml);
    coll_free(&full);
}

static void test_bad_other(void)
{
    coll_t c = {0};
    /* malformed XML after two good pages (the second long) */
    char *xml = malloc(60000);
    strcpy(xml, "<mediawiki><page><title>A</title><ns>0</ns><id>1</id><revision><timestamp>2020-01-01T00:00:00Z"
                "</timestamp><text>Good '''text''' here.</text></revision></page><page><title>P</title><ns>0</ns>"
                "<revision><text>");
    size_t xl = strlen(xml);
    for (int i = 0; i < 20000; i++, xl += 2)
        memcpy(xml + xl, "x ", 3);
    strcat(xml, "</text></revision></page><page><title>B</title><ns>0</ns><revision><text>broken <</text></page>"
                "</mediawiki>");
    int rc = read_mem(xml, strlen(xml), INGEST_KIND_WIKI, NULL, &c);
    free(xml);
    is_int(rc, GL_OK, "malformed XML: no error returned");
    is_int(c.n, 2, "malformed XML: both pages before the error kept, the broken one not");
    is_int(c.counts[INGEST_ERR_XML], 1, "malformed XML: counted");
    ok(c.n && !strcmp(c.text[0], "Good text here."), "wikitext of the good page");
    coll_free(&c);

    /* entity-expansion bomb: entities are not expanded */
    const char *bomb = "<?xml version=\"1.0\"?><!DOCTYPE m [<!ENTITY a \"aaaaaaaaaaaaaaaaaaaaaaaa\">"
                       "<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">"
                       "<!ENTITY d \"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\"><!ENTITY e \"&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;\">"
                       "<!ENTITY f \"&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;\"><!ENTITY g \"&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;\">"
                       "<!ENTITY h \"&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;\"><!ENTITY i \"&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;\">]>"
                       "<mediawiki><page><title>Bomb</title><ns>0</ns><revision><text>x &i; y</text></revision>"
                       "</page></mediawiki>";
    double t0 = gl_now();
    rc = read_mem(bomb, strlen(bomb), INGEST_KIND_WIKI, NULL, &c);
    size_t biggest = 0;
    for (size_t i = 0; i < c.n; i++)
        biggest = c.len[i] > biggest ? c.len[i] : biggest;
    ok(rc == GL_OK && biggest < 10000 && gl_now() - t0 < 5, "entity bomb: not expanded (%zu bytes out)", biggest);
    coll_free(&c);

    /* decompression bomb: 64 MB of zeros, checked after 1 MB at ratio 100 */
    size_t zl;
    char *z = gzip_zeros(64u << 20, &zl);
    ingest_read_opts_t o;
    ingest_read_opts_default(&o);
    o.ratio_after = 1u << 20;
    o.max_ratio = 100;
    uint64_t bytes = 0;
    ingest_sink_t s = {.doc = c_doc, .count = c_count, .ctx = &c};
    gl_err_t err = {0};
    rc = ingest_read_memory(z, zl, "bomb.warc.gz", INGEST_KIND_WARC, &o, &s, &bytes, &err);
    ok(rc == GL_OK && c.counts[INGEST_ERR_BOMB] == 1, "decompression bomb: counted, input abandoned");
    ok(bytes < (8u << 20), "decompression bomb: stopped early (%llu bytes read)", (unsigned long long)bytes);
    free(z);
    coll_free(&c);

    /* JSONL: good, malformed, no text, metadata */
    const char *jl = "{\"id\":\"a\",\"text\":\"hello\",\"metadata\":{\"url\":\"http://x/\"}}\n{broken\n{\"id\":2}\n"
                     "{\"id\":3,\"text\":\"second\"}\n";
    read_mem(jl, strlen(jl), INGEST_KIND_JSONL, NULL, &c);
    is_int(c.n, 2, "JSONL: two documents");
    is_int(c.counts[INGEST_ERR_JSON], 2, "JSONL: malformed and text-less lines counted");
    ok(c.n == 2 && c.url[0] && !strcmp(c.url[0], "http://x/") && !strcmp(c.id[1], "3"), "JSONL: id and metadata kept");
    coll_free(&c);
}

/* ---- extractors ---- */

static void test_html(void)
{
    ingest_buf_t out = {0}, title = {0};
    const char *h = "<html><head><title>T  x</title><style>p{color:red}</style><script>var x=1;</script></head><body>"
                    "<header>Site header</header><nav><a href=/>Home</a> <a href=/b>About</a></nav>"
                    "<div class=\"main-menu\"><a href=/c>Contact us today</a></div>"
                    "<h1>The   heading</h1><p>First <b>bold</b>\n paragraph.</p>"
                    "<ul><li>one item</li><li>two &amp; more</li></ul>"
                    "<ul><li><a href=/1>L1</a></li><li><a href=/2>L2</a></li><li><a href=/3>L3</a></li></ul>"
                    "<pre>line 1\n  line 2</pre><form><input value=x>Search</form>"
                    "<footer>Copyright footer</footer></body></html>";
    ingest_html_to_text(h, strlen(h), &out, &title);
    is_str(out.p, "The heading\nFirst bold paragraph.\n- one item\n- two & more\nline 1\n  line 2",
           "HTML: headings, paragraphs, lists and <pre> kept; boilerplate dropped");
    is_str(title.p, "T x", "HTML: title");
    ingest_html_to_text("", 0, &out, NULL);
    is_int(out.len, 0, "HTML: empty input");
    const char *broken = "<p>unclosed <b>bold <i>both</p><div>next";
    ingest_html_to_text(broken, strlen(broken), &out, NULL);
    is_str(out.p, "unclosed bold both\nnext", "HTML: broken markup recovered");
    ingest_buf_free(&out);
    ingest_buf_free(&title);
}

static void test_wikitext(void)
{
    static const struct { const char *in, *want, *name; } cases[] = {
        {"'''Bold''' and ''italic'' [[Target|label]] [[Plain]]s.", "Bold and italic label Plains.", "links and quotes"},
        {"A{{cite|x={{nested}}}}B", "AB", "nested templates"},
        {"Text<ref name=a>citation</ref> more<ref name=b/>.", "Text more.", "refs"},
        {"x<!-- hidden -->y", "xy", "comments"},
        {"== Heading ==\n* item one\n# item two\nbody", "Heading\nitem one\nitem two\nbody", "headings and lists"},
        {"before\n{| class=wikitable\n|-\n| a || b\n|}\nafter", "before\nafter", "tables"},
        {"[[File:X.jpg|thumb|A [[caption]]]]Keep [[Category:Cats]]", "Keep", "files and categories"},
        {"see [http://example.com the site] and [http://x.y]", "see the site and", "external links"},
        {"<gallery>\nA.jpg\n</gallery>rest", "rest", "galleries"},
        {"a &amp; b&nbsp;c &#x41;&#66;", "a & b c AB", "entities"},
        {"unclosed {{template and [[link", "unclosed template and [[link", "unclosed constructs"},
        {"at [[Univ|UC] today", "at UC today", "a link closed by one bracket"},
        {"a<ref>{{cite|x</ref y>z}}</ref>b", "ab", "a stray close tag inside a ref's template"},
        {"[[fr:Page]]text __TOC__", "text", "interlanguage links and magic words"},
    };
    ingest_buf_t out = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ingest_wikitext_to_text(cases[i].in, strlen(cases[i].in), &out);
        is_str(out.p ? out.p : "", cases[i].want, "wikitext: %s", cases[i].name);
    }
    ingest_buf_free(&out);
}

/* ---- filters ---- */

static const char *prose =
    "The history of the town goes back to the twelfth century, when a small chapel was built on the hill above the "
    "river. Over the following centuries the settlement grew around the market that the bishop had granted, and by "
    "the time of the first census it was the largest town of the valley. The old bridge, which still stands, was "
    "built with stone from the nearby quarry and has been repaired many times. Today the town is known for its "
    "festival in late summer, when people from the whole region come to see the procession and to eat with friends "
    "at long tables set up in the main square.";

static void test_filters(void)
{
    ok(ingest_gopher_quality(prose, strlen(prose)), "Gopher quality: real prose passes");
    const char *few = "Too few words to count as a document at all.";
    ok(!ingest_gopher_quality(few, strlen(few)), "Gopher quality: under 50 words fails");
    char sym[2000] = "";
    for (int i = 0; i < 60; i++)
        strcat(sym, "#tag the ");
    ok(!ingest_gopher_quality(sym, strlen(sym)), "Gopher quality: symbol-to-word ratio fails");
    char nostop[2000] = "";
    for (int i = 0; i < 60; i++)
        strcat(nostop, "lorem ipsum dolor ");
    ok(!ingest_gopher_quality(nostop, strlen(nostop)), "Gopher quality: no stop words fails");
    ok(ingest_gopher_repetition(prose, strlen(prose)), "Gopher repetition: real prose passes");
    char rep[4000] = "";
    for (int i = 0; i < 20; i++)
        strcat(rep, "Click here to subscribe to our newsletter today.\n");
    ok(!ingest_gopher_repetition(rep, strlen(rep)), "Gopher repetition: repeated lines fail");

    ingest_buf_t out = {0};
    char page[4000];
    snprintf(page, sizeof page, "Home\nMenu item\n%s\nPlease enable JavaScript to view this site.\n"
             "This website uses cookies to improve it.\nRead our Privacy Policy today.\nShare", prose);
    ok(ingest_c4(page, strlen(page), &out), "C4: a page with sentences survives");
    is_str(out.p, prose, "C4: lines without terminal punctuation, javascript, cookie and policy lines removed");
    const char *lorem = "LOREM IPSUM dolor sit amet. This is one. This is two. This is three.";
    ok(!ingest_c4(lorem, strlen(lorem), &out), "C4: lorem ipsum page dropped");
    const char *brace = "This has a { brace. This is one. This is two. This is three.";
    ok(!ingest_c4(brace, strlen(brace), &out), "C4: page with a curly bracket dropped");

    uint64_t cnt[2] = {0, 0};
    const char *pii = "Mail john.doe+x@mail.example.org or 10.0.0.1; not v1.2.3.4.5 nor 999.1.1.1 nor a@b.";
    ingest_pii_scrub(pii, strlen(pii), &out, cnt);
    is_str(out.p, "Mail email@example.com or 0.0.0.0; not v1.2.3.4.5 nor 999.1.1.1 nor a@b.",
           "PII: e-mail and IPv4 addresses replaced, look-alikes kept");
    ok(cnt[0] == 1 && cnt[1] == 1, "PII: replacements counted");

    ingest_filter_opts_t fo;
    ingest_filter_opts_default(&fo, GPTLINE__SOURCE_KIND__CRAWL);
    is_int(ingest_filter(&fo, few, strlen(few), &out, NULL), INGEST_DROP_C4, "filter chain: short page dropped by C4");
    fo.c4 = 0;
    is_int(ingest_filter(&fo, few, strlen(few), &out, NULL), INGEST_DROP_LENGTH, "filter chain: then by length");
    fo.length = 0;
    is_int(ingest_filter(&fo, few, strlen(few), &out, NULL), INGEST_DROP_GOPHER_QUALITY, "filter chain: then Gopher");
    memset(&fo, 0, sizeof fo);
    is_int(ingest_filter(&fo, few, strlen(few), &out, NULL), -1, "filter chain: everything off keeps it");
    fo.languages = "bg";
    is_int(ingest_filter(&fo, prose, strlen(prose), &out, NULL), INGEST_DROP_LANGUAGE, "language: English dropped when bg asked");
    fo.languages = "fr,en";
    is_int(ingest_filter(&fo, prose, strlen(prose), &out, NULL), -1, "language: English kept when en asked");
    int rel;
    const char *bg = "\xd0\x91\xd1\x8a\xd0\xbb\xd0\xb3\xd0\xb0\xd1\x80\xd0\xb8\xd1\x8f \xd0\xb5 \xd0\xb4\xd1\x8a\xd1\x80"
                     "\xd0\xb6\xd0\xb0\xd0\xb2\xd0\xb0 \xd0\xb2 \xd0\xae\xd0\xb3\xd0\xbe\xd0\xb8\xd0\xb7\xd1\x82\xd0\xbe"
                     "\xd1\x87\xd0\xbd\xd0\xb0 \xd0\x95\xd0\xb2\xd1\x80\xd0\xbe\xd0\xbf\xd0\xb0, \xd0\xbd\xd0\xb0 "
                     "\xd0\x91\xd0\xb0\xd0\xbb\xd0\xba\xd0\xb0\xd0\xbd\xd1\x81\xd0\xba\xd0\xb8\xd1\x8f \xd0\xbf\xd0\xbe"
                     "\xd0\xbb\xd1\x83\xd0\xbe\xd1\x81\xd1\x82\xd1\x80\xd0\xbe\xd0\xb2.";
    const char *code = ingest_lang_detect(bg, strlen(bg), &rel);
    is_str(code, "bg", "CLD2: Bulgarian");
    ingest_buf_free(&out);
}

/* ---- MinHash against the exact Jaccard of the shingle sets ---- */

static size_t shingles(const char *t, uint64_t *out)
{
    /* naive: words of the lowercased text, 5-grams joined by spaces, hashed by strings compared */
    char words[400][32];
    size_t nw = 0;
    const char *p = t;
    while (*p && nw < 400) {
        while (*p == ' ')
            p++;
        size_t k = 0;
        while (*p && *p != ' ' && k < 31)
            words[nw][k++] = *p++;
        words[nw][k] = 0;
        if (k)
            nw++;
    }
    size_t n = 0;
    for (size_t i = 0; i + 5 <= nw; i++) {
        uint64_t h = 1469598103934665603ull;
        for (size_t j = 0; j < 5; j++)
            for (const char *q = words[i + j]; *q; q++)
                h = (h ^ (unsigned char)*q) * 1099511628211ull;
        out[n++] = h;
    }
    return n;
}

static double jaccard(const char *a, const char *b)
{
    static uint64_t sa[400], sb[400];
    size_t na = shingles(a, sa), nb = shingles(b, sb), inter = 0, uni = 0;
    for (size_t i = 0; i < na; i++) {
        int dup = 0;
        for (size_t k = 0; k < i; k++)
            dup |= sa[k] == sa[i];
        if (dup)
            continue;
        int in = 0;
        for (size_t j = 0; j < nb; j++)
            in |= sb[j] == sa[i];
        inter += in;
        uni++;
    }
    for (size_t j = 0; j < nb; j++) {
        int dup = 0;
        for (size_t k = 0; k < j; k++)
            dup |= sb[k] == sb[j];
        int in = 0;
        for (size_t i = 0; i < na; i++)
            in |= sa[i] == sb[j];
        uni += !dup && !in;
    }
    return uni ? (double)inter / (double)uni : 1;
}

static void test_minhash(void)
{
    /* a text of 200 distinct words, and variants with k words changed */
    char base[4000] = "", var[4000];
    for (int i = 0; i < 200; i++) {
        char w[16];
        snprintf(w, sizeof w, "w%d ", i * 7919 % 1000);
        strcat(base, w);
    }
    uint32_t s0[INGEST_MH_PERM], s1[INGEST_MH_PERM];
    ingest_minhash(base, strlen(base), s0);
    double worst = 0;
    int near_band = 0, far_band = 0;
    for (int k = 0; k <= 60; k += 3) {
        strcpy(var, base);
        for (int j = 0; j < k; j++) {
            char *p = var;
            for (int q = 0; q < j * 200 / (k ? k : 1); q++)
                p = strchr(p, ' ') + 1;
            p[0] = 'z'; /* change one word */
        }
        ingest_minhash(var, strlen(var), s1);
        int eq = 0;
        for (int i = 0; i < INGEST_MH_PERM; i++)
            eq += s0[i] == s1[i];
        double est = (double)eq / INGEST_MH_PERM, exact = jaccard(base, var);
        if (fabs(est - exact) > worst)
            worst = est - exact > 0 ? est - exact : exact - est;
        int band = 0;
        for (int b = 0; b < INGEST_MH_BANDS; b++)
            band |= !memcmp(s0 + b * INGEST_MH_ROWS, s1 + b * INGEST_MH_ROWS, 4 * INGEST_MH_ROWS);
        if (exact >= 0.85)
            near_band += !band;
        if (exact <= 0.3)
            far_band += band;
    }
    ok(worst < 0.15, "MinHash estimate within 0.15 of the exact Jaccard (worst %.3f)", worst);
    is_int(near_band, 0, "LSH: every pair at Jaccard >= 0.85 shares a band");
    is_int(far_band, 0, "LSH: no pair at Jaccard <= 0.3 shares a band");
    uint32_t e1[INGEST_MH_PERM], e2[INGEST_MH_PERM];
    ingest_minhash("Hello, World!", 13, e1);
    ingest_minhash("hello world", 11, e2);
    ok(!memcmp(e1, e2, sizeof e1), "MinHash: case and punctuation normalised");
}

static void test_kinds(void)
{
    is_int(ingest_kind_of("x/CC-MAIN-1.warc.gz"), INGEST_KIND_WARC, "kind: .warc.gz");
    is_int(ingest_kind_of("a.warc.wet.gz"), INGEST_KIND_WARC, "kind: .wet.gz");
    is_int(ingest_kind_of("enwiki.xml.bz2"), INGEST_KIND_WIKI, "kind: .xml.bz2");
    is_int(ingest_kind_of("p.tar.zst"), INGEST_KIND_CODE, "kind: .tar.zst");
    is_int(ingest_kind_of("p.zip"), INGEST_KIND_CODE, "kind: .zip");
    is_int(ingest_kind_of("d.jsonl.zst"), INGEST_KIND_JSONL, "kind: .jsonl.zst");
    is_int(ingest_kind_of("readme"), INGEST_KIND_AUTO, "kind: unknown");
    ok(ingest_utf8_valid("\xc3\xa9", 2) && !ingest_utf8_valid("\xc3", 1) && !ingest_utf8_valid("\xed\xa0\x80", 3) &&
           !ingest_utf8_valid("\xc0\xaf", 2) && ingest_utf8_valid("\xf0\x9f\x98\x80", 4),
       "UTF-8 validation: truncation, surrogates, overlongs");
}

int main(void)
{
    test_kinds();
    test_html();
    test_wikitext();
    test_filters();
    test_minhash();
    test_bad_warc();
    test_content_encoding();
    test_bad_other();
    test_wiki();
    test_wiki_damaged();
    test_crawl();
    test_code();
    return tap_done();
}
