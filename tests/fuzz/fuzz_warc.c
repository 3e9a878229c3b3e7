/* fuzz_warc.c — fuzzes the WARC reader: record framing, header lines,
 * Content-Length, the HTTP header, chunked coding, charset detection and
 * conversion, and the HTML extractor behind it. Input: raw (uncompressed)
 * WARC bytes. Every document must be valid UTF-8. */
#include "ingest/ingest.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

static int doc(void *ctx, const ingest_doc_t *d, gl_err_t *err)
{
    (void)ctx;
    (void)err;
    if (!ingest_utf8_valid(d->text, d->len))
        abort();
    return GL_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ingest_sink_t s = {.doc = doc};
    ingest_read_opts_t o;
    ingest_read_opts_default(&o);
    o.max_record = 1 << 16;
    o.max_line = 1 << 12;
    gl_err_t err = {0};
    ingest_read_memory(data, size, "fuzz.warc", INGEST_KIND_WARC, &o, &s, NULL, &err);
    return 0;
}

static const char *const seeds[] = {
    "WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://a/\r\nContent-Type: application/http; msgtype=response\r\n"
    "Content-Length: 88\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/html; charset=gb2312\r\n\r\n<p>\xc4\xe3\xba\xc3 <b>x</b></p>\r\n\r\n",
    "WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 95\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    "Content-Type: text/html\r\n\r\n5\r\n<p>ab\r\n6\r\ncd</p>\r\n0\r\n\r\n\r\n\r\n",
    "WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: http://b/\r\nContent-Length: 11\r\n\r\nplain text\n\r\n\r\n"
    "WARC/1.0\r\nWARC-Type: request\r\nContent-Length: 3\r\n\r\nGET\r\n\r\n",
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
