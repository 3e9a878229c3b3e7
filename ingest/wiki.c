/* wiki.c — MediaWiki XML dumps to documents.
 *
 * The dump is streamed through libxml2's xmlTextReader fed from the
 * libarchive stream (bzip2 multistream and UTF-16 dumps included: libxml2
 * reads the byte-order mark), with entity substitution, DTD loading and
 * network access off, so entity bombs and external entities do not expand.
 * Per <page> it collects title, ns, id, redirect, and the last revision's
 * timestamp and text; articles (ns 0) that are not redirects go through
 * the wikitext converter. Page text is capped (max_record); a larger page
 * is skipped and counted. Malformed XML ends the input with a counted error
 * naming the line and byte offset; the pages before it are kept.
 */
#include "ingest/internal.h"

#include <libxml/xmlreader.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    istream_t *s;
} io_t;

static int io_read(void *ctx, char *buf, int len)
{
    io_t *io = ctx;
    istream_t *s = io->s;
    if (s->beg == s->end && !istream_fill(s))
        return 0;
    size_t k = s->end - s->beg;
    if (k > (size_t)len)
        k = (size_t)len;
    memcpy(buf, s->buf + s->beg, k);
    s->beg += k;
    s->pos += k;
    return (int)k;
}

static int io_close(void *ctx)
{
    (void)ctx;
    return 0;
}

/* Counts the first error of each stretch (libxml2 reports follow-on
 * errors of one fault too); logged with its line. */
static void xml_error(void *ctx, xmlErrorPtr e)
{
    istream_t *s = ctx;
    if (!e || e->level < XML_ERR_ERROR)
        return;
    if (s->xml_errors++ >= 1)
        return;
    char msg[200];
    snprintf(msg, sizeof msg, "%s", e->message ? e->message : "parse error");
    size_t k = strlen(msg);
    while (k && msg[k - 1] == '\n')
        msg[--k] = 0;
    icount(s->sink, INGEST_ERR_XML, s->pos, "%s: malformed XML at line %d (offset about %llu): %s", s->name, e->line,
           (unsigned long long)s->pos, msg);
}

enum { F_NONE, F_TITLE, F_NS, F_ID, F_TS, F_TEXT };

typedef struct {
    ingest_buf_t title, ns, id, ts, text;
    int redirect, too_big, in_revision, have_id;
    uint64_t offset;
} page_t;

static void page_reset(page_t *p)
{
    ibuf_clear(&p->title);
    ibuf_clear(&p->ns);
    ibuf_clear(&p->id);
    ibuf_clear(&p->ts);
    ibuf_clear(&p->text);
    p->redirect = p->too_big = p->in_revision = p->have_id = 0;
}

int ingest_wiki_stream(istream_t *s, gl_err_t *err)
{
    io_t io = {s};
    int rc = GL_OK;
    page_t pg = {0};
    ingest_buf_t plain = {0};
    /* Recover mode: a malformed stretch costs the pages it touches, not the
     * rest of the dump; the errors are counted through the handler. */
    xmlTextReaderPtr r = xmlReaderForIO(io_read, io_close, &io, s->name, NULL,
                                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                            XML_PARSE_COMPACT | XML_PARSE_RECOVER);
    if (!r) {
        icount(s->sink, INGEST_ERR_XML, 0, "%s: cannot start the XML reader", s->name);
        return GL_OK;
    }
    xmlTextReaderSetStructuredErrorHandler(r, xml_error, s);
    int in_page = 0, field = F_NONE, page_depth = 0;
    ingest_buf_t *cur = NULL;
    int ret;
    while ((ret = xmlTextReaderRead(r)) == 1) {
        int type = xmlTextReaderNodeType(r);
        const char *name = (const char *)xmlTextReaderConstLocalName(r);
        int depth = xmlTextReaderDepth(r);
        if (type == XML_READER_TYPE_ELEMENT) {
            if (!strcmp(name, "page")) {
                in_page = 1;
                page_depth = depth;
                page_reset(&pg);
                pg.offset = s->pos;
                continue;
            }
            if (!in_page)
                continue;
            field = F_NONE;
            if (!strcmp(name, "revision")) {
                pg.in_revision = 1;
                ibuf_clear(&pg.text); /* keep the last revision */
                ibuf_clear(&pg.ts);
            } else if (!strcmp(name, "redirect") && depth == page_depth + 1) {
                pg.redirect = 1;
            } else if (!strcmp(name, "title") && depth == page_depth + 1) {
                field = F_TITLE;
            } else if (!strcmp(name, "ns") && depth == page_depth + 1) {
                field = F_NS;
            } else if (!strcmp(name, "id") && depth == page_depth + 1) {
                field = F_ID;
            } else if (!strcmp(name, "timestamp") && pg.in_revision) {
                field = F_TS;
            } else if (!strcmp(name, "text") && pg.in_revision) {
                field = F_TEXT;
            }
            cur = field == F_TITLE ? &pg.title : field == F_NS ? &pg.ns : field == F_ID ? &pg.id
                : field == F_TS ? &pg.ts : field == F_TEXT ? &pg.text : NULL;
            if (xmlTextReaderIsEmptyElement(r)) {
                field = F_NONE;
                cur = NULL;
            }
        } else if (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_CDATA ||
                   type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE) {
            if (!cur)
                continue;
            const char *v = (const char *)xmlTextReaderConstValue(r);
            size_t n = v ? strlen(v) : 0;
            if (cur->len + n > s->o->max_record) {
                pg.too_big = 1;
                continue;
            }
            ibuf_put(cur, v, n);
        } else if (type == XML_READER_TYPE_END_ELEMENT) {
            if (in_page && !strcmp(name, "revision")) {
                pg.in_revision = 0;
            } else if (in_page && !strcmp(name, "page") && depth == page_depth) {
                in_page = 0;
                if (pg.too_big) {
                    icount(s->sink, INGEST_SKIP_TOO_LARGE, pg.offset, "%s: page '%s' over the size cap", s->name,
                           pg.title.p ? pg.title.p : "");
                } else if (pg.ns.len && strcmp(pg.ns.p, "0")) {
                    icount(s->sink, INGEST_SKIP_NAMESPACE, pg.offset, NULL);
                } else if (pg.redirect) {
                    icount(s->sink, INGEST_SKIP_REDIRECT, pg.offset, NULL);
                } else {
                    ingest_wikitext_to_text(pg.text.p ? pg.text.p : "", pg.text.len, &plain);
                    if (!plain.len) {
                        icount(s->sink, INGEST_SKIP_EMPTY, pg.offset, NULL);
                    } else {
                        ingest_doc_t d = {.source = GPTLINE__SOURCE_KIND__WIKI, .text = plain.p, .len = plain.len,
                                          .title = pg.title.len ? pg.title.p : NULL,
                                          .record_id = pg.id.len ? pg.id.p : NULL,
                                          .date = pg.ts.len ? pg.ts.p : NULL, .offset = pg.offset};
                        rc = s->sink->doc(s->sink->ctx, &d, err);
                        if (rc)
                            goto out;
                    }
                }
            }
            field = F_NONE;
            cur = NULL;
        }
    }
    if (ret < 0 && !s->failed && !s->xml_errors)
        icount(s->sink, INGEST_ERR_XML, s->pos, "%s: malformed XML at line %d (offset about %llu)", s->name,
               xmlTextReaderGetParserLineNumber(r), (unsigned long long)s->pos);
out:
    xmlFreeTextReader(r);
    ingest_buf_free(&pg.title);
    ingest_buf_free(&pg.ns);
    ingest_buf_free(&pg.id);
    ingest_buf_free(&pg.ts);
    ingest_buf_free(&pg.text);
    ingest_buf_free(&plain);
    return rc;
}
