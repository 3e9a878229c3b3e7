/* jsonl.c — JSONL documents ({"id", "text", "metadata"}) as datatrove and
 * dolma write them, optionally compressed.
 *
 * One JSON object per line, parsed with jansson. "text" is required;
 * "id" becomes the record id; "metadata" (or the top level) may carry
 * "url", "date"/"timestamp", "title", "path", "language", "license".
 * A malformed line or one over max_record is counted and skipped.
 */
#include "ingest/internal.h"

#include <jansson.h>
#include <string.h>

static const char *str_of(json_t *o, json_t *meta, const char *key)
{
    json_t *v = meta ? json_object_get(meta, key) : NULL;
    if (!json_is_string(v))
        v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int ingest_jsonl_stream(istream_t *s, gl_err_t *err)
{
    const char *l;
    size_t n;
    int rc = GL_OK;
    char idbuf[32];
    for (;;) {
        uint64_t off = s->pos;
        int r = istream_line(s, s->o->max_record, &l, &n);
        if (r == 0)
            break;
        if (r < 0) {
            icount(s->sink, INGEST_SKIP_TOO_LARGE, off, "%s: offset %llu: JSON line over the cap", s->name,
                   (unsigned long long)off);
            continue;
        }
        while (n && (l[n - 1] == '\r' || l[n - 1] == ' '))
            n--;
        if (n == 0)
            continue;
        json_error_t je;
        json_t *o = json_loadb(l, n, JSON_REJECT_DUPLICATES, &je);
        json_t *text = o ? json_object_get(o, "text") : NULL;
        if (!o || !json_is_string(text)) {
            icount(s->sink, INGEST_ERR_JSON, off, "%s: offset %llu: %s", s->name, (unsigned long long)off,
                   o ? "no \"text\" string" : je.text);
            json_decref(o);
            continue;
        }
        json_t *meta = json_object_get(o, "metadata");
        if (!json_is_object(meta))
            meta = NULL;
        json_t *id = json_object_get(o, "id");
        const char *ids = json_is_string(id) ? json_string_value(id) : NULL;
        if (json_is_integer(id)) {
            snprintf(idbuf, sizeof idbuf, "%lld", (long long)json_integer_value(id));
            ids = idbuf;
        }
        Gptline__SourceKind sk = GPTLINE__SOURCE_KIND__JSONL;
        const char *date = str_of(o, meta, "date");
        ingest_doc_t d = {.source = sk, .text = json_string_value(text), .len = json_string_length(text),
                          .record_id = ids, .url = str_of(o, meta, "url"),
                          .date = date ? date : str_of(o, meta, "timestamp"), .title = str_of(o, meta, "title"),
                          .path = str_of(o, meta, "path"), .language = str_of(o, meta, "language"),
                          .license = str_of(o, meta, "license"), .offset = off};
        if (!d.len)
            icount(s->sink, INGEST_SKIP_EMPTY, off, NULL);
        else
            rc = s->sink->doc(s->sink->ctx, &d, err);
        json_decref(o);
        if (rc)
            break;
    }
    return rc;
}
