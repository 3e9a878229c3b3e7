/* fuzz_html.c — fuzzes the HTML extractor (libxml2's recovering parser
 * and the text walk: link-density rollback, <pre>, tidy). Input: bytes
 * made valid UTF-8 first, as the WARC reader does. Output must be valid
 * UTF-8 and never longer than a small multiple of the input. */
#include "ingest/ingest.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ingest_buf_t u = {0}, out = {0}, title = {0};
    const char *used;
    ingest_to_utf8((const char *)data, size, size & 1 ? "windows-1252" : NULL, &u, &used);
    if (!ingest_utf8_valid(u.p, u.len))
        abort();
    ingest_html_to_text(u.p ? u.p : "", u.len, &out, &title);
    if (!ingest_utf8_valid(out.p ? out.p : "", out.len) || out.len > 4 * u.len + 64)
        abort();
    ingest_buf_free(&u);
    ingest_buf_free(&out);
    ingest_buf_free(&title);
    return 0;
}

static const char *const seeds[] = {
    "<html><head><title>t</title><script>x</script></head><body><nav><a>m</a></nav><h1>H</h1><p>a <b>b</b></p>"
    "<ul><li><a href=1>l</a></li><li>i</li></ul><pre>  x\n y</pre><table><tr><td>c</td><td>d</td></tr></table></body>",
    "<div class=menu><p>x<br>y</div><footer>f</footer><p>unclosed <i>italic",
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
