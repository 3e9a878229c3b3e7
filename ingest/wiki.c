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
 * naming the line and byte offset. libxml2 parses a few KB ahead of the
 * reader and, on an error, stops delivering what it had already parsed;
 * so the reader walks that part of the tree itself, up to the elements
 * the parser still had open at the error: every page closed before the
 * error comes out, the page the error cut does not.
 */
#include "ingest/internal.h"

#include <libxml/xmlreader.h>
#include <stdlib.h>
#include <string.h>

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

#define MAX_OPEN 64

/* The reader's state: the stream, the page being collected and, at the
 * last XML error, the elements the parser had open (so the pages that it
 * had closed before the error can be told from the one it was inside). */
typedef struct {
    istream_t *s;
    page_t pg;
    ingest_buf_t plain, *cur;
    int in_page, field, page_depth;
    const void *open[MAX_OPEN]; /* compared, never dereferenced */
    int nopen;                  /* -1: unknown */
    gl_err_t *err;              /* set by the sink when it stops the reading */
} wiki_t;

static int io_read(void *ctx, char *buf, int len)
{
    wiki_t *w = ctx;
    istream_t *s = w->s;
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
 * errors of one fault too); logged with its line. Every error also
 * records the parser's open elements. */
static void xml_error(void *ctx, xmlErrorPtr e)
{
    wiki_t *w = ctx;
    istream_t *s = w->s;
    if (!e || e->level < XML_ERR_ERROR)
        return;
    w->nopen = -1;
    if (e->ctxt && (e->domain == XML_FROM_PARSER || e->domain == XML_FROM_NAMESPACE)) {
        xmlParserCtxtPtr pc = e->ctxt;
        if (pc->nodeNr >= 0 && pc->nodeNr <= MAX_OPEN) {
            for (int i = 0; i < pc->nodeNr; i++)
                w->open[i] = pc->nodeTab[i];
            w->nopen = pc->nodeNr;
        }
    }
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

static int was_open(const wiki_t *w, const void *node)
{
    for (int i = 0; i < w->nopen; i++)
        if (w->open[i] == node)
            return 1;
    return 0;
}

/* One event of the document: an element's start (empty: it has no end
 * event) or end, or a text. Collects the page and hands it to the sink at
 * its end. Returns the sink's code. */
static int page_event(wiki_t *w, int type, const char *name, int depth, int empty, const char *v)
{
    istream_t *s = w->s;
    page_t *pg = &w->pg;
    if (type == XML_READER_TYPE_ELEMENT) {
        if (!strcmp(name, "page")) {
            w->in_page = 1;
            w->page_depth = depth;
            page_reset(pg);
            pg->offset = s->pos;
            return GL_OK;
        }
        if (!w->in_page)
            return GL_OK;
        int field = F_NONE;
        if (!strcmp(name, "revision")) {
            pg->in_revision = 1;
            ibuf_clear(&pg->text); /* keep the last revision */
            ibuf_clear(&pg->ts);
        } else if (!strcmp(name, "redirect") && depth == w->page_depth + 1) {
            pg->redirect = 1;
        } else if (!strcmp(name, "title") && depth == w->page_depth + 1) {
            field = F_TITLE;
        } else if (!strcmp(name, "ns") && depth == w->page_depth + 1) {
            field = F_NS;
        } else if (!strcmp(name, "id") && depth == w->page_depth + 1) {
            field = F_ID;
        } else if (!strcmp(name, "timestamp") && pg->in_revision) {
            field = F_TS;
        } else if (!strcmp(name, "text") && pg->in_revision) {
            field = F_TEXT;
        }
        w->cur = empty ? NULL
               : field == F_TITLE ? &pg->title : field == F_NS ? &pg->ns : field == F_ID ? &pg->id
               : field == F_TS ? &pg->ts : field == F_TEXT ? &pg->text : NULL;
    } else if (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_CDATA ||
               type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE) {
        if (!w->cur)
            return GL_OK;
        size_t n = v ? strlen(v) : 0;
        if (w->cur->len + n > s->o->max_record) {
            pg->too_big = 1;
            return GL_OK;
        }
        ibuf_put(w->cur, v, n);
    } else if (type == XML_READER_TYPE_END_ELEMENT) {
        w->cur = NULL;
        if (w->in_page && !strcmp(name, "revision")) {
            pg->in_revision = 0;
        } else if (w->in_page && !strcmp(name, "page") && depth == w->page_depth) {
            w->in_page = 0;
            if (pg->too_big) {
                icount(s->sink, INGEST_SKIP_TOO_LARGE, pg->offset, "%s: page '%s' over the size cap", s->name,
                       pg->title.p ? pg->title.p : "");
            } else if (pg->ns.len && strcmp(pg->ns.p, "0")) {
                icount(s->sink, INGEST_SKIP_NAMESPACE, pg->offset, NULL);
            } else if (pg->redirect) {
                icount(s->sink, INGEST_SKIP_REDIRECT, pg->offset, NULL);
            } else {
                ingest_wikitext_to_text(pg->text.p ? pg->text.p : "", pg->text.len, &w->plain);
                if (!w->plain.len) {
                    icount(s->sink, INGEST_SKIP_EMPTY, pg->offset, NULL);
                } else {
                    ingest_doc_t d = {.source = GPTLINE__SOURCE_KIND__WIKI, .text = w->plain.p, .len = w->plain.len,
                                      .title = pg->title.len ? pg->title.p : NULL,
                                      .record_id = pg->id.len ? pg->id.p : NULL,
                                      .date = pg->ts.len ? pg->ts.p : NULL, .offset = pg->offset};
                    int rc = s->sink->doc(s->sink->ctx, &d, w->err);
                    if (rc)
                        return rc;
                }
            }
        }
    }
    return GL_OK;
}

/* The event of node n at depth (an element's start, or a text); *ended
 * says whether there is nothing inside it left to walk. */
static int node_event(wiki_t *w, xmlNodePtr n, int depth, int *ended)
{
    *ended = 1; /* texts have no children; entity references are not expanded */
    if (n->type == XML_ELEMENT_NODE) {
        *ended = !n->children;
        return page_event(w, XML_READER_TYPE_ELEMENT, (const char *)n->name, depth, !n->children, NULL);
    }
    if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE)
        return page_event(w, n->type == XML_TEXT_NODE ? XML_READER_TYPE_TEXT : XML_READER_TYPE_CDATA, NULL, depth, 0,
                          (const char *)n->content);
    return GL_OK;
}

/* After the parser stopped on an error, the tree still holds what it had
 * parsed beyond the reader's position (it parses a few KB ahead): walks
 * it in document order after node n (after its end when ended), as the
 * reader would have, up to the end of an element that was still open at
 * the error. So every page closed before the error comes out, and the one
 * the error cut does not. */
static int walk_parsed(wiki_t *w, xmlNodePtr n, int ended, int depth)
{
    for (;;) {
        int rc;
        if (n->type == XML_ELEMENT_NODE && !ended && n->children) {
            n = n->children;
            depth++;
        } else if (n->next) {
            n = n->next;
        } else {
            n = n->parent;
            depth--;
            if (!n || n->type != XML_ELEMENT_NODE || was_open(w, n))
                return GL_OK;
            ended = 1;
            if ((rc = page_event(w, XML_READER_TYPE_END_ELEMENT, (const char *)n->name, depth, 0, NULL)))
                return rc;
            continue;
        }
        if ((rc = node_event(w, n, depth, &ended)))
            return rc;
    }
}

static int node_depth(xmlNodePtr n)
{
    int d = 0;
    for (xmlNodePtr p = n->parent; p && p->type == XML_ELEMENT_NODE; p = p->parent)
        d++;
    return d;
}

/* Delivers what the tree holds after the reader's last event: the reader
 * may have moved on to a node it could not deliver (it frees the nodes it
 * leaves, so the last event's node is only used when the reader is still
 * on it). */
static int after_error(wiki_t *w, xmlTextReaderPtr r, xmlNodePtr last, int last_end, int last_depth)
{
    xmlNodePtr cur = xmlTextReaderCurrentNode(r);
    if (!cur || w->nopen < 0)
        return GL_OK;
    if (cur == last)
        return walk_parsed(w, last, last_end, last_depth);
    int d = node_depth(cur), ended, rc;
    if (d < last_depth) { /* it went back up to cur: cur's end is undelivered */
        if (cur->type != XML_ELEMENT_NODE || was_open(w, cur))
            return GL_OK;
        if ((rc = page_event(w, XML_READER_TYPE_END_ELEMENT, (const char *)cur->name, d, 0, NULL)))
            return rc;
        return walk_parsed(w, cur, 1, d);
    }
    if ((rc = node_event(w, cur, d, &ended)))
        return rc;
    return walk_parsed(w, cur, ended, d);
}

int ingest_wiki_stream(istream_t *s, gl_err_t *err)
{
    wiki_t *w = gl_xcalloc(1, sizeof *w);
    w->s = s;
    w->err = err;
    int rc = GL_OK;
    /* Recover mode: a malformed stretch costs the pages it touches, not the
     * rest of the dump; the errors are counted through the handler. */
    xmlTextReaderPtr r = xmlReaderForIO(io_read, io_close, w, s->name, NULL,
                                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                            XML_PARSE_COMPACT | XML_PARSE_RECOVER);
    if (!r) {
        icount(s->sink, INGEST_ERR_XML, 0, "%s: cannot start the XML reader", s->name);
        goto out;
    }
    xmlTextReaderSetStructuredErrorHandler(r, xml_error, w);
    xmlNodePtr last = NULL; /* the node of the last event, and whether it was its end */
    int last_end = 0, last_depth = 0, ret;
    while ((ret = xmlTextReaderRead(r)) == 1) {
        int type = xmlTextReaderNodeType(r), depth = xmlTextReaderDepth(r);
        last = xmlTextReaderCurrentNode(r);
        last_end = type == XML_READER_TYPE_END_ELEMENT ||
                   (type == XML_READER_TYPE_ELEMENT && xmlTextReaderIsEmptyElement(r));
        last_depth = depth;
        const char *v = NULL;
        if (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_CDATA || type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE)
            v = (const char *)xmlTextReaderConstValue(r);
        rc = page_event(w, type, (const char *)xmlTextReaderConstLocalName(r), depth,
                        type == XML_READER_TYPE_ELEMENT && xmlTextReaderIsEmptyElement(r), v);
        if (rc)
            goto out;
    }
    if (ret < 0) {
        if (!s->failed && !s->xml_errors)
            icount(s->sink, INGEST_ERR_XML, s->pos, "%s: malformed XML at line %d (offset about %llu)", s->name,
                   xmlTextReaderGetParserLineNumber(r), (unsigned long long)s->pos);
        rc = after_error(w, r, last, last_end, last_depth);
    }
out:
    xmlFreeTextReader(r);
    ingest_buf_free(&w->pg.title);
    ingest_buf_free(&w->pg.ns);
    ingest_buf_free(&w->pg.id);
    ingest_buf_free(&w->pg.ts);
    ingest_buf_free(&w->pg.text);
    ingest_buf_free(&w->plain);
    free(w);
    return rc;
}
