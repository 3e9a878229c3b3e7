/* internal.h — helpers shared by the ingest readers (not installed). */
#ifndef GL_INGEST_INTERNAL_H
#define GL_INGEST_INTERNAL_H

#include "ingest/ingest.h"

#include <archive.h>

/* ---- buffers ---- */
void ibuf_reserve(ingest_buf_t *b, size_t extra);
void ibuf_put(ingest_buf_t *b, const void *p, size_t n);
static inline void ibuf_putc(ingest_buf_t *b, char c)
{
    if (b->len + 2 > b->cap)
        ibuf_reserve(b, 1);
    b->p[b->len++] = c;
    b->p[b->len] = 0;
}
void ibuf_puts(ingest_buf_t *b, const char *s);
void ibuf_clear(ingest_buf_t *b);

/* ---- a buffered byte stream over one libarchive entry ---- */
typedef struct {
    struct archive *a;
    const char *name;
    char *buf;
    size_t cap, beg, end;
    uint64_t pos;              /* uncompressed offset of buf[beg] */
    int eof;                   /* no more data (clean end or error) */
    int failed;                /* the stream ended with an error */
    char errmsg[200];
    const ingest_read_opts_t *o;
    ingest_sink_t *sink;
    uint64_t *bytes_in;
    unsigned xml_errors;       /* wiki reader: errors reported so far */
} istream_t;

/* Reads more data; returns bytes added (0 at end or error). */
size_t istream_fill(istream_t *s);
/* Next line (without the \n; a trailing \r stays) of at most max bytes:
 * *line points into the buffer until the next call. Returns 1, 0 at end,
 * -1 when the line was longer than max (skipped to its end, counted by
 * the caller). */
int istream_line(istream_t *s, size_t max, const char **line, size_t *len);
/* Reads exactly n bytes into dst (if dst non-NULL, else skips them).
 * Returns the number read (< n at the end of the stream). */
size_t istream_read(istream_t *s, void *dst, size_t n);
/* Peeks at up to n bytes (fills as needed); returns how many are available. */
size_t istream_peek(istream_t *s, size_t n, const char **p);

/* Reports a counted event. */
void icount(ingest_sink_t *sink, ingest_counter_t c, uint64_t offset, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reader entry points: each reads the stream of an opened archive whose
 * first header was read (raw format), or (code) the archive itself. */
int ingest_warc_stream(istream_t *s, gl_err_t *err);
int ingest_jsonl_stream(istream_t *s, gl_err_t *err);
int ingest_wiki_stream(istream_t *s, gl_err_t *err);
int ingest_code_archive(struct archive *a, const char *name, const char *license,
                        const ingest_read_opts_t *o, ingest_sink_t *sink, uint64_t *bytes_in,
                        gl_err_t *err);
/* Pass 1 over a code archive: the path of its licence file (shallowest
 * LICENSE/LICENCE/COPYING*) and a guess of its kind, into out ("" if none). */
void ingest_code_license(struct archive *a, char *out, size_t cap);

/* Silences libxml2's default error printing (libraries never print). */
void ingest_xml_quiet(void);

#endif
