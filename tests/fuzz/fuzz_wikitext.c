/* fuzz_wikitext.c — fuzzes the wikitext converter: nested templates and
 * links, tables, tags, entities, unclosed constructs. The output must
 * never be longer than the input plus what entities expand to, and valid
 * UTF-8 when the input is. */
#include "ingest/ingest.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ingest_buf_t out = {0};
    ingest_wikitext_to_text((const char *)data, size, &out);
    if (out.len > 2 * size + 16)
        abort();
    if (ingest_utf8_valid((const char *)data, size) && !ingest_utf8_valid(out.p ? out.p : "", out.len)) {
        /* entities may only add valid sequences; cut ones come from the input's own bytes */
        int has_amp = memchr(data, '&', size) != NULL;
        if (!has_amp)
            abort();
    }
    ingest_buf_free(&out);
    return 0;
}

static const char *const seeds[] = {
    "== H ==\n'''B''' [[a|b]] {{t|x={{y}}}} [http://x l] <ref>r</ref><!--c-->\n{|\n|a||b\n|}\n* li &amp; &#x41;",
    "[[File:x.jpg|thumb|[[nested]]]] {{{{{p}}}}} <gallery>g</gallery> [[fr:x]] __TOC__ <nowiki>[[raw]]</nowiki>",
    NULL};

uint8_t *gl_fuzz_seed(size_t i, size_t *len)
{
    if (i >= sizeof seeds / sizeof seeds[0] - 1)
        return NULL;
    *len = strlen(seeds[i]);
    uint8_t *b = malloc(*len);
    memcpy(b, seeds[i], *len);
    return b;
}
