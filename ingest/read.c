/* read.c — opening inputs and the buffered stream every reader uses.
 *
 * Each input is opened with libarchive: for WARC/WET, wiki XML and JSONL as
 * a "raw" archive (so gzip, bzip2 — multistream included — xz and zstd are
 * decompressed on the fly), for code as a real archive (tar, zip, ...).
 * The stream below hands readers lines and exact byte counts from a buffer
 * of at most a record's size, so memory stays bounded however large the
 * input. It also guards against decompression bombs: past ratio_after
 * uncompressed bytes, an expansion ratio above max_ratio ends the input.
 */
#include "ingest/internal.h"

#include <archive_entry.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const counter_names[INGEST_NCOUNTERS] = {
    [INGEST_SKIP_RECORD] = "skip.record_type",
    [INGEST_SKIP_NOT_HTML] = "skip.not_html",
    [INGEST_SKIP_HTTP_STATUS] = "skip.http_status",
    [INGEST_SKIP_REDIRECT] = "skip.redirect",
    [INGEST_SKIP_NAMESPACE] = "skip.namespace",
    [INGEST_SKIP_TOO_LARGE] = "skip.too_large",
    [INGEST_SKIP_BINARY] = "skip.binary",
    [INGEST_SKIP_BAD_UTF8] = "skip.bad_utf8",
    [INGEST_SKIP_VENDORED] = "skip.vendored",
    [INGEST_SKIP_GENERATED] = "skip.generated",
    [INGEST_SKIP_MINIFIED] = "skip.minified",
    [INGEST_SKIP_UNKNOWN_LANG] = "skip.unknown_language",
    [INGEST_SKIP_EMPTY] = "skip.empty",
    [INGEST_DROP_LENGTH] = "drop.length",
    [INGEST_DROP_GOPHER_QUALITY] = "drop.gopher_quality",
    [INGEST_DROP_GOPHER_REPETITION] = "drop.gopher_repetition",
    [INGEST_DROP_C4] = "drop.c4",
    [INGEST_DROP_LANGUAGE] = "drop.language",
    [INGEST_DROP_DUP_EXACT] = "drop.dup_exact",
    [INGEST_PII_EMAIL] = "pii.email",
    [INGEST_PII_IP] = "pii.ip",
    [INGEST_ERR_TRUNCATED] = "error.truncated",
    [INGEST_ERR_HEADER] = "error.header",
    [INGEST_ERR_LENGTH] = "error.content_length",
    [INGEST_ERR_CHARSET] = "error.charset",
    [INGEST_ERR_UTF8] = "error.utf8",
    [INGEST_ERR_XML] = "error.xml",
    [INGEST_ERR_JSON] = "error.json",
    [INGEST_ERR_ARCHIVE] = "error.archive",
    [INGEST_ERR_BOMB] = "error.bomb",
    [INGEST_ERR_LINE] = "error.line_length",
    [INGEST_ERR_OPEN] = "error.open",
    [INGEST_SKIP_ENCODING] = "skip.content_encoding",
};

const char *ingest_counter_name(ingest_counter_t c)
{
    return (unsigned)c < INGEST_NCOUNTERS ? counter_names[c] : "?";
}

int ingest_counter_by_name(const char *name)
{
    for (int i = 0; i < INGEST_NCOUNTERS; i++)
        if (!strcmp(counter_names[i], name))
            return i;
    return -1;
}

int ingest_counter_is_error(ingest_counter_t c)
{
    return c >= INGEST_ERR_TRUNCATED && c <= INGEST_ERR_OPEN;
}

void ingest_read_opts_default(ingest_read_opts_t *o)
{
    o->max_record = 16u << 20;
    o->max_file = 1u << 20;
    o->max_line = 64u << 10;
    o->max_ratio = 1000;
    o->ratio_after = 64u << 20;
}

/* ---- buffers ---- */

void ibuf_reserve(ingest_buf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->p = gl_xrealloc(b->p, cap);
    b->cap = cap;
}

void ibuf_put(ingest_buf_t *b, const void *p, size_t n)
{
    ibuf_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
}

void ibuf_puts(ingest_buf_t *b, const char *s) { ibuf_put(b, s, strlen(s)); }

void ibuf_clear(ingest_buf_t *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = 0;
}

void ingest_buf_free(ingest_buf_t *b)
{
    if (!b)
        return;
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void icount(ingest_sink_t *sink, ingest_counter_t c, uint64_t offset, const char *fmt, ...)
{
    if (!sink->count)
        return;
    char msg[400];
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    sink->count(sink->ctx, c, offset, fmt ? msg : NULL);
}

/* ---- stream ---- */

size_t istream_fill(istream_t *s)
{
    if (s->eof)
        return 0;
    if (s->beg > 0 && s->beg == s->end) {
        s->beg = s->end = 0;
    } else if (s->beg > s->cap / 2) {
        memmove(s->buf, s->buf + s->beg, s->end - s->beg);
        s->end -= s->beg;
        s->beg = 0;
    }
    if (s->end == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1 << 16;
        s->buf = gl_xrealloc(s->buf, s->cap);
    }
    la_ssize_t got = archive_read_data(s->a, s->buf + s->end, s->cap - s->end);
    if (got <= 0) {
        s->eof = 1;
        if (got < 0) {
            s->failed = 1;
            snprintf(s->errmsg, sizeof s->errmsg, "%s", archive_error_string(s->a) ? archive_error_string(s->a) : "read error");
            icount(s->sink, INGEST_ERR_TRUNCATED, s->pos + (s->end - s->beg), "%s: stream ends early at offset %llu: %s",
                   s->name, (unsigned long long)(s->pos + (s->end - s->beg)), s->errmsg);
        }
        return 0;
    }
    s->end += (size_t)got;
    if (s->bytes_in)
        *s->bytes_in += (uint64_t)got;
    uint64_t out = s->pos + (s->end - s->beg);
    if (out > s->o->ratio_after) {
        int64_t in = archive_filter_bytes(s->a, -1);
        if (in > 0 && (double)out / (double)in > s->o->max_ratio) {
            s->eof = 1;
            s->failed = 1;
            icount(s->sink, INGEST_ERR_BOMB, out, "%s: decompression bomb: %llu bytes out of %lld (ratio over %g); input abandoned",
                   s->name, (unsigned long long)out, (long long)in, s->o->max_ratio);
        }
    }
    return (size_t)got;
}

int istream_line(istream_t *s, size_t max, const char **line, size_t *len)
{
    size_t scanned = 0;
    for (;;) {
        char *nl = s->end > s->beg + scanned ? memchr(s->buf + s->beg + scanned, '\n', s->end - s->beg - scanned)
                                              : NULL;
        if (nl) {
            size_t n = (size_t)(nl - (s->buf + s->beg));
            *line = s->buf + s->beg;
            *len = n;
            s->beg += n + 1;
            s->pos += n + 1;
            return 1;
        }
        scanned = s->end - s->beg;
        if (scanned > max) {
            /* absurd line: drop it up to its newline without buffering it */
            s->pos += scanned;
            s->beg = s->end;
            for (;;) {
                if (!istream_fill(s))
                    return -1;
                nl = memchr(s->buf + s->beg, '\n', s->end - s->beg);
                if (nl) {
                    size_t n = (size_t)(nl - (s->buf + s->beg)) + 1;
                    s->beg += n;
                    s->pos += n;
                    return -1;
                }
                s->pos += s->end - s->beg;
                s->beg = s->end;
            }
        }
        if (!istream_fill(s)) {
            if (s->end == s->beg)
                return 0;
            *line = s->buf + s->beg;
            *len = s->end - s->beg;
            s->pos += *len;
            s->beg = s->end;
            return 1;
        }
    }
}

size_t istream_read(istream_t *s, void *dst, size_t n)
{
    size_t done = 0;
    while (done < n) {
        if (s->beg == s->end && !istream_fill(s))
            break;
        size_t k = s->end - s->beg;
        if (k > n - done)
            k = n - done;
        if (dst)
            memcpy((char *)dst + done, s->buf + s->beg, k);
        s->beg += k;
        s->pos += k;
        done += k;
    }
    return done;
}

void istream_unread(istream_t *s, const void *p, size_t n)
{
    if (n <= s->beg) {
        s->beg -= n;
    } else {
        size_t live = s->end - s->beg;
        if (live + n > s->cap) {
            s->cap = live + n;
            s->buf = gl_xrealloc(s->buf, s->cap);
        }
        memmove(s->buf + n, s->buf + s->beg, live);
        s->beg = 0;
        s->end = n + live;
    }
    memmove(s->buf + s->beg, p, n);
    s->pos -= n;
}

size_t istream_peek(istream_t *s, size_t n, const char **p)
{
    while (s->end - s->beg < n && istream_fill(s))
        ;
    *p = s->buf + s->beg;
    return s->end - s->beg < n ? s->end - s->beg : n;
}

/* ---- kinds ---- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcasecmp(s + a - b, suffix);
}

ingest_kind_t ingest_kind_of(const char *path)
{
    static const char *const comp[] = {"", ".gz", ".bz2", ".xz", ".zst", ".lz4", NULL};
    char base[1024];
    for (int i = 0; comp[i]; i++) {
        size_t n = strlen(path), k = strlen(comp[i]);
        if (n < k || strcasecmp(path + n - k, comp[i]) || n - k >= sizeof base)
            continue;
        memcpy(base, path, n - k);
        base[n - k] = 0;
        if (ends_with(base, ".warc") || ends_with(base, ".wet") || ends_with(base, ".arc"))
            return INGEST_KIND_WARC;
        if (ends_with(base, ".xml"))
            return INGEST_KIND_WIKI;
        if (ends_with(base, ".jsonl") || ends_with(base, ".json") || ends_with(base, ".ndjson"))
            return INGEST_KIND_JSONL;
        if (ends_with(base, ".tar"))
            return INGEST_KIND_CODE;
    }
    if (ends_with(path, ".zip") || ends_with(path, ".tgz") || ends_with(path, ".tbz2") ||
        ends_with(path, ".txz") || ends_with(path, ".whl") || ends_with(path, ".jar"))
        return INGEST_KIND_CODE;
    return INGEST_KIND_AUTO;
}

const char *ingest_kind_name(ingest_kind_t k)
{
    switch (k) {
    case INGEST_KIND_WARC: return "warc";
    case INGEST_KIND_WIKI: return "wiki";
    case INGEST_KIND_CODE: return "code";
    case INGEST_KIND_JSONL: return "jsonl";
    default: return "auto";
    }
}

/* ---- opening ---- */

static struct archive *open_archive(const char *path, const void *data, size_t len, int raw)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    if (raw) {
        archive_read_support_format_raw(a);
        archive_read_support_format_empty(a);
    } else {
        archive_read_support_format_all(a);
    }
    int ok = data ? archive_read_open_memory(a, data, len) : archive_read_open_filename(a, path, 1 << 16);
    if (ok != ARCHIVE_OK) {
        /* keep the handle: the caller reads the error string */
        return a;
    }
    return a;
}

static int read_any(const char *path, const void *data, size_t len, const char *name, ingest_kind_t kind,
                    const ingest_read_opts_t *o, ingest_sink_t *sink, uint64_t *bytes_in, gl_err_t *err)
{
    ingest_read_opts_t defo;
    if (!o) {
        ingest_read_opts_default(&defo);
        o = &defo;
    }
    if (kind == INGEST_KIND_AUTO)
        kind = ingest_kind_of(name);
    if (kind == INGEST_KIND_AUTO)
        return gl_err_set(err, GL_EINVAL, "%s: cannot tell the input kind from its name", name);
    ingest_xml_quiet();
    int rc = GL_OK;
    if (kind == INGEST_KIND_CODE) {
        char license[512] = "";
        struct archive *a = open_archive(path, data, len, 0);
        if (archive_errno(a) || archive_error_string(a)) {
            rc = gl_err_set(err, GL_EIO, "%s: cannot open: %s", name, archive_error_string(a));
            archive_read_free(a);
            return rc;
        }
        ingest_code_license(a, license, sizeof license);
        archive_read_free(a);
        a = open_archive(path, data, len, 0);
        rc = ingest_code_archive(a, name, license, o, sink, bytes_in, err);
        archive_read_free(a);
        return rc;
    }
    struct archive *a = open_archive(path, data, len, 1);
    struct archive_entry *ent;
    istream_t s = {.a = a, .name = name, .o = o, .sink = sink, .bytes_in = bytes_in};
    if (archive_error_string(a)) {
        rc = gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: cannot open: %s", name,
                        archive_error_string(a));
        goto out;
    }
    int h = archive_read_next_header(a, &ent);
    if (h == ARCHIVE_EOF)
        goto out;
    if (h != ARCHIVE_OK && h != ARCHIVE_WARN) {
        icount(sink, INGEST_ERR_ARCHIVE, 0, "%s: unreadable: %s", name, archive_error_string(a));
        goto out;
    }
    switch (kind) {
    case INGEST_KIND_WARC: rc = ingest_warc_stream(&s, err); break;
    case INGEST_KIND_WIKI: rc = ingest_wiki_stream(&s, err); break;
    default: rc = ingest_jsonl_stream(&s, err); break;
    }
out:
    free(s.buf);
    archive_read_free(a);
    return rc;
}

int ingest_read_file(const char *path, ingest_kind_t kind, const ingest_read_opts_t *o, ingest_sink_t *sink,
                     uint64_t *bytes_in, gl_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", path, strerror(errno));
    fclose(f);
    return read_any(path, NULL, 0, path, kind, o, sink, bytes_in, err);
}

int ingest_read_memory(const void *data, size_t len, const char *name, ingest_kind_t kind,
                       const ingest_read_opts_t *o, ingest_sink_t *sink, uint64_t *bytes_in, gl_err_t *err)
{
    return read_any(NULL, data ? data : "", len, name, kind, o, sink, bytes_in, err);
}
