/* warc.c — WARC and WET records to documents.
 *
 * A WARC file is a sequence of records: a version line ("WARC/1.0"),
 * "Name: value" header lines, a blank line, Content-Length bytes of block,
 * and two CRLFs. The reader takes `response` records carrying HTTP
 * responses (it parses the status line and headers, undoes chunked
 * transfer coding, finds the charset in the Content-Type header or a
 * <meta> tag or sniffs it, converts to UTF-8 and extracts the text) and
 * WET `conversion` records (already text). URL, date and record id become
 * metadata.
 *
 * Bad input is counted and survived: a header that does not parse, a
 * Content-Length that does not land on the record separator (too long: the
 * next record's version line is looked for inside the block read, and the
 * bytes from it are put back in the stream; too short: the stream is
 * scanned on to the next version line), a record cut off by the end of a
 * truncated stream, records over the size cap (skipped without buffering
 * them). Only one record's block is held in memory.
 */
#include "ingest/internal.h"

#include <archive_entry.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    char type[32], uri[2048], date[64], id[128], ctype[256];
    int64_t length;
} warc_hdr_t;

static void copy_val(char *dst, size_t cap, const char *v, size_t n)
{
    while (n && (v[0] == ' ' || v[0] == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\r' || v[n - 1] == '\t'))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

static int is_version_line(const char *l, size_t n)
{
    return n >= 6 && !memcmp(l, "WARC/", 5) && isdigit((unsigned char)l[5]);
}

/* Reads header lines after the version line. Returns 1 ok, 0 malformed,
 * -1 end of stream. */
static int read_header(istream_t *s, warc_hdr_t *h)
{
    memset(h, 0, sizeof *h);
    h->length = -1;
    const char *l;
    size_t n;
    size_t total = 0;
    for (;;) {
        int r = istream_line(s, s->o->max_line, &l, &n);
        if (r == 0)
            return -1;
        if (r < 0)
            return 0;
        total += n;
        if (total > 1u << 20)
            return 0;
        if (n && l[n - 1] == '\r')
            n--;
        if (n == 0)
            break;
        const char *colon = memchr(l, ':', n);
        if (!colon)
            return 0;
        size_t kn = (size_t)(colon - l);
        const char *v = colon + 1;
        size_t vn = n - kn - 1;
        if (kn == 9 && !strncasecmp(l, "WARC-Type", kn))
            copy_val(h->type, sizeof h->type, v, vn);
        else if (kn == 15 && !strncasecmp(l, "WARC-Target-URI", kn)) {
            copy_val(h->uri, sizeof h->uri, v, vn);
            size_t ul = strlen(h->uri); /* wget writes <uri>, as WARC 1.0's grammar showed */
            if (ul >= 2 && h->uri[0] == '<' && h->uri[ul - 1] == '>') {
                memmove(h->uri, h->uri + 1, ul - 2);
                h->uri[ul - 2] = 0;
            }
        }
        else if (kn == 9 && !strncasecmp(l, "WARC-Date", kn))
            copy_val(h->date, sizeof h->date, v, vn);
        else if (kn == 14 && !strncasecmp(l, "WARC-Record-ID", kn))
            copy_val(h->id, sizeof h->id, v, vn);
        else if (kn == 12 && !strncasecmp(l, "Content-Type", kn))
            copy_val(h->ctype, sizeof h->ctype, v, vn);
        else if (kn == 14 && !strncasecmp(l, "Content-Length", kn)) {
            char num[32];
            copy_val(num, sizeof num, v, vn);
            char *end;
            if (!num[0] || !isdigit((unsigned char)num[0]))
                return 0;
            long long x = strtoll(num, &end, 10);
            if (*end || x < 0)
                return 0;
            h->length = x;
        }
    }
    if (h->length < 0 || !h->type[0])
        return 0;
    return 1;
}

/* Scans forward to the next version line (resynchronising after an error). */
static int resync(istream_t *s)
{
    const char *l;
    size_t n;
    for (;;) {
        int r = istream_line(s, s->o->max_line, &l, &n);
        if (r == 0)
            return 0;
        if (r > 0 && is_version_line(l, n))
            return 1;
    }
}

/* The first version line inside a block (not at its start), preferring
 * one after a blank line, as the record separator leaves it; NULL if none. */
static const char *next_record(const char *p, size_t n)
{
    const char *first = NULL;
    for (const char *q = p; (q = memmem(q, n - (size_t)(q - p), "\nWARC/", 6));) {
        q++;
        if (!is_version_line(q, n - (size_t)(q - p)))
            continue;
        size_t at = (size_t)(q - p);
        if ((at >= 4 && !memcmp(q - 4, "\r\n\r\n", 4)) || (at >= 2 && !memcmp(q - 2, "\n\n", 2)))
            return q;
        if (!first)
            first = q;
    }
    return first;
}

/* Finds "charset=" in a header value or meta content; writes it to out. */
static int find_charset(const char *s, size_t n, char *out, size_t cap)
{
    for (size_t i = 0; i + 8 <= n; i++) {
        if (strncasecmp(s + i, "charset", 7))
            continue;
        size_t j = i + 7;
        while (j < n && (s[j] == ' ' || s[j] == '\t'))
            j++;
        if (j >= n || s[j] != '=')
            continue;
        j++;
        while (j < n && (s[j] == ' ' || s[j] == '"' || s[j] == '\''))
            j++;
        size_t k = 0;
        while (j < n && k + 1 < cap && (isalnum((unsigned char)s[j]) || s[j] == '-' || s[j] == '_' ||
                                        s[j] == ':' || s[j] == '.'))
            out[k++] = s[j++];
        out[k] = 0;
        if (k)
            return 1;
    }
    return 0;
}

/* Looks for <meta ... charset=...> in the first 4 KB of the payload. */
static int meta_charset(const char *p, size_t n, char *out, size_t cap)
{
    if (n > 4096)
        n = 4096;
    for (size_t i = 0; i + 5 < n; i++) {
        if (p[i] != '<' || strncasecmp(p + i + 1, "meta", 4))
            continue;
        const char *e = memchr(p + i, '>', n - i);
        if (!e)
            return 0;
        if (find_charset(p + i, (size_t)(e - (p + i)), out, cap))
            return 1;
    }
    return 0;
}

/* Undoes chunked transfer coding in place; returns the new length. */
static size_t dechunk(char *p, size_t n)
{
    size_t r = 0, w = 0;
    while (r < n) {
        char *end;
        unsigned long long sz = strtoull(p + r, &end, 16);
        if (end == p + r)
            break;
        const char *nl = memchr(p + r, '\n', n - r);
        if (!nl)
            break;
        r = (size_t)(nl - p) + 1;
        if (sz == 0 || sz > n - r)
            break;
        memmove(p + w, p + r, sz);
        w += sz;
        r += sz;
        if (r < n && p[r] == '\r')
            r++;
        if (r < n && p[r] == '\n')
            r++;
    }
    return w;
}

typedef struct {
    ingest_buf_t block, utf8, text, title, gz;
} warc_bufs_t;

/* Decodes a gzip-encoded payload (up to cap bytes out) into out. */
static int gunzip(const char *p, size_t n, size_t cap, ingest_buf_t *out)
{
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    int rc = -1;
    archive_read_support_filter_gzip(a);
    archive_read_support_format_raw(a);
    ibuf_clear(out);
    if (archive_read_open_memory(a, p, n) != ARCHIVE_OK || archive_read_next_header(a, &e) != ARCHIVE_OK)
        goto out;
    for (;;) {
        ibuf_reserve(out, 1 << 16);
        la_ssize_t k = archive_read_data(a, out->p + out->len, out->cap - out->len - 1);
        if (k < 0)
            goto out;
        if (k == 0)
            break;
        out->len += (size_t)k;
        if (out->len > cap)
            goto out;
    }
    out->p[out->len] = 0;
    rc = 0;
out:
    archive_read_free(a);
    return rc;
}

static int emit(istream_t *s, const warc_hdr_t *h, uint64_t off, const char *text, size_t len, const char *title,
                gl_err_t *err)
{
    if (len == 0) {
        icount(s->sink, INGEST_SKIP_EMPTY, off, NULL);
        return GL_OK;
    }
    ingest_doc_t d = {.source = GPTLINE__SOURCE_KIND__CRAWL, .text = text, .len = len,
                      .url = h->uri[0] ? h->uri : NULL, .date = h->date[0] ? h->date : NULL,
                      .record_id = h->id[0] ? h->id : NULL, .title = title && *title ? title : NULL,
                      .offset = off};
    return s->sink->doc(s->sink->ctx, &d, err);
}

static int response(istream_t *s, const warc_hdr_t *h, uint64_t off, warc_bufs_t *b, gl_err_t *err)
{
    char *p = b->block.p;
    size_t n = b->block.len;
    /* status line */
    char *nl = memchr(p, '\n', n);
    if (!nl || n < 12 || strncmp(p, "HTTP/", 5)) {
        icount(s->sink, INGEST_ERR_HEADER, off, "%s: offset %llu: response record without an HTTP status line",
               s->name, (unsigned long long)off);
        return GL_OK;
    }
    const char *sp = memchr(p, ' ', (size_t)(nl - p));
    int status = sp ? atoi(sp + 1) : 0;
    size_t i = (size_t)(nl - p) + 1;
    char ctype[256] = "", tenc[64] = "", cenc[64] = "";
    int header_ok = 0;
    while (i < n) {
        char *e = memchr(p + i, '\n', n - i);
        if (!e)
            break;
        size_t ln = (size_t)(e - (p + i));
        if (ln && p[i + ln - 1] == '\r')
            ln--;
        if (ln == 0) {
            i = (size_t)(e - p) + 1;
            header_ok = 1;
            break;
        }
        const char *c = memchr(p + i, ':', ln);
        if (c) {
            size_t kn = (size_t)(c - (p + i));
            if (kn == 12 && !strncasecmp(p + i, "Content-Type", 12))
                copy_val(ctype, sizeof ctype, c + 1, ln - kn - 1);
            else if (kn == 17 && !strncasecmp(p + i, "Transfer-Encoding", 17))
                copy_val(tenc, sizeof tenc, c + 1, ln - kn - 1);
            else if (kn == 16 && !strncasecmp(p + i, "Content-Encoding", 16))
                copy_val(cenc, sizeof cenc, c + 1, ln - kn - 1);
        }
        i = (size_t)(e - p) + 1;
    }
    if (!header_ok) {
        icount(s->sink, INGEST_ERR_HEADER, off, "%s: offset %llu: HTTP header does not end", s->name,
               (unsigned long long)off);
        return GL_OK;
    }
    if (status < 200 || status > 299) {
        icount(s->sink, INGEST_SKIP_HTTP_STATUS, off, NULL);
        return GL_OK;
    }
    if (ctype[0] && !strcasestr(ctype, "html")) {
        icount(s->sink, INGEST_SKIP_NOT_HTML, off, NULL);
        return GL_OK;
    }
    char *body = p + i;
    size_t blen = n - i;
    if (strcasestr(tenc, "chunked"))
        blen = dechunk(body, blen);
    if (cenc[0] && (!strcasecmp(cenc, "gzip") || !strcasecmp(cenc, "x-gzip"))) {
        if (gunzip(body, blen, s->o->max_record, &b->gz)) {
            icount(s->sink, INGEST_ERR_TRUNCATED, off, "%s: offset %llu: gzip Content-Encoding does not decode",
                   s->name, (unsigned long long)off);
            return GL_OK;
        }
        body = b->gz.p;
        blen = b->gz.len;
    } else if (cenc[0] && strcasecmp(cenc, "identity")) {
        icount(s->sink, INGEST_SKIP_ENCODING, off, NULL);
        return GL_OK;
    }
    if (!ctype[0]) {
        /* no Content-Type: take it if it looks like HTML */
        size_t k = 0;
        while (k < blen && k < 512 && isspace((unsigned char)body[k]))
            k++;
        if (k >= blen || body[k] != '<') {
            icount(s->sink, INGEST_SKIP_NOT_HTML, off, NULL);
            return GL_OK;
        }
    }
    char cs[64] = "";
    if (!find_charset(ctype, strlen(ctype), cs, sizeof cs))
        meta_charset(body, blen, cs, sizeof cs);
    const char *used;
    if (ingest_to_utf8(body, blen, cs, &b->utf8, &used))
        icount(s->sink, cs[0] ? INGEST_ERR_CHARSET : INGEST_ERR_UTF8, off,
               "%s: offset %llu: %s%s%s; decoded as %s", s->name, (unsigned long long)off,
               cs[0] ? "declared charset " : "invalid UTF-8 and no charset declared", cs, cs[0] ? " is wrong" : "",
               used);
    if (ingest_html_to_text(b->utf8.p, b->utf8.len, &b->text, &b->title)) {
        icount(s->sink, INGEST_SKIP_EMPTY, off, NULL);
        return GL_OK;
    }
    return emit(s, h, off, b->text.p, b->text.len, b->title.p, err);
}

static int conversion(istream_t *s, const warc_hdr_t *h, uint64_t off, warc_bufs_t *b, gl_err_t *err)
{
    const char *used;
    if (ingest_to_utf8(b->block.p, b->block.len, "UTF-8", &b->utf8, &used))
        icount(s->sink, INGEST_ERR_UTF8, off, "%s: offset %llu: invalid UTF-8 in a conversion record, repaired",
               s->name, (unsigned long long)off);
    /* trim the trailing newlines of the block */
    size_t n = b->utf8.len;
    while (n && (b->utf8.p[n - 1] == '\n' || b->utf8.p[n - 1] == '\r'))
        n--;
    return emit(s, h, off, b->utf8.p, n, NULL, err);
}

int ingest_warc_stream(istream_t *s, gl_err_t *err)
{
    warc_bufs_t b = {0};
    int rc = GL_OK;
    const char *l;
    size_t n;
    int have_version = 0;
    for (;;) {
        uint64_t off = s->pos;
        if (!have_version) {
            int r = istream_line(s, s->o->max_line, &l, &n);
            if (r == 0)
                break;
            if (r < 0) {
                icount(s->sink, INGEST_ERR_LINE, off, "%s: offset %llu: line longer than %zu bytes", s->name,
                       (unsigned long long)off, s->o->max_line);
                if (!resync(s))
                    break;
            } else if (n == 0 || (n == 1 && l[0] == '\r')) {
                continue; /* blank lines between records */
            } else if (!is_version_line(l, n)) {
                icount(s->sink, INGEST_ERR_HEADER, off, "%s: offset %llu: expected a WARC version line", s->name,
                       (unsigned long long)off);
                if (!resync(s))
                    break;
                off = s->pos; /* the record starts at the line just read; offset approximate */
            }
        }
        have_version = 0;
        warc_hdr_t h;
        int r = read_header(s, &h);
        if (r < 0) {
            if (!s->failed)
                icount(s->sink, INGEST_ERR_TRUNCATED, off, "%s: offset %llu: record header cut off by the end of the file",
                       s->name, (unsigned long long)off);
            break;
        }
        if (r == 0) {
            icount(s->sink, INGEST_ERR_HEADER, off, "%s: offset %llu: malformed WARC header", s->name,
                   (unsigned long long)off);
            if (!resync(s))
                break;
            have_version = 1;
            continue;
        }
        int want = !strcasecmp(h.type, "response") || !strcasecmp(h.type, "conversion");
        if (want && !strcasecmp(h.type, "response") && h.ctype[0] && !strcasestr(h.ctype, "http"))
            want = 0;
        if (!want)
            icount(s->sink, INGEST_SKIP_RECORD, off, NULL);
        uint64_t len = (uint64_t)h.length;
        if (want && len > s->o->max_record) {
            icount(s->sink, INGEST_SKIP_TOO_LARGE, off, "%s: offset %llu: record of %llu bytes over the cap", s->name,
                   (unsigned long long)off, (unsigned long long)len);
            want = 0;
        }
        /* blocks up to the cap are read into memory, wanted or not, so that
         * a wrong Content-Length can be looked for the next record in */
        size_t got;
        int held = len <= s->o->max_record;
        if (held) {
            ibuf_clear(&b.block);
            ibuf_reserve(&b.block, (size_t)len);
            got = istream_read(s, b.block.p, (size_t)len);
            b.block.len = got;
            b.block.p[got] = 0;
        } else {
            got = 0;
            uint64_t left = len;
            while (left) {
                size_t k = istream_read(s, NULL, left > (1u << 20) ? (1u << 20) : (size_t)left);
                if (!k)
                    break;
                got += k;
                left -= k;
            }
        }
        /* the block must be followed by CRLF CRLF */
        const char *p;
        size_t k = got < len ? 0 : istream_peek(s, 4, &p);
        int sep_ok = got == len && ((k == 4 && !memcmp(p, "\r\n\r\n", 4)) || (k >= 2 && !memcmp(p, "\n\n", 2)) || k == 0);
        if (!sep_ok) {
            /* Content-Length too long: the next record starts inside what
             * was read; put it back and go on from its version line */
            const char *next = held ? next_record(b.block.p, got) : NULL;
            if (next) {
                icount(s->sink, INGEST_ERR_LENGTH, off,
                       "%s: offset %llu: Content-Length %llu runs past the record separator into the next record; "
                       "record dropped", s->name, (unsigned long long)off, (unsigned long long)len);
                istream_unread(s, next, got - (size_t)(next - b.block.p));
                continue;
            }
        }
        if (got < len) {
            if (!s->failed)
                icount(s->sink, INGEST_ERR_TRUNCATED, off, "%s: offset %llu: record cut off after %zu of %llu bytes",
                       s->name, (unsigned long long)off, got, (unsigned long long)len);
            break; /* a partial record is never kept */
        }
        if (!sep_ok) {
            /* too short (or too long with no record after): scan on */
            icount(s->sink, INGEST_ERR_LENGTH, off,
                   "%s: offset %llu: Content-Length %llu does not end at the record separator; record dropped",
                   s->name, (unsigned long long)off, (unsigned long long)len);
            if (!resync(s))
                break;
            have_version = 1;
            continue;
        }
        if (!want)
            continue;
        if (!strcasecmp(h.type, "response"))
            rc = response(s, &h, off, &b, err);
        else
            rc = conversion(s, &h, off, &b, err);
        if (rc)
            break;
    }
    ingest_buf_free(&b.block);
    ingest_buf_free(&b.utf8);
    ingest_buf_free(&b.text);
    ingest_buf_free(&b.title);
    ingest_buf_free(&b.gz);
    return rc;
}
