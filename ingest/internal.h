/* internal.h — helpers shared by the ingest readers (not installed). */
#ifndef GL_INGEST_INTERNAL_H
#define GL_INGEST_INTERNAL_H

#include "ingest/ingest.h"

#include <archive.h>
#include <string.h>

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
/* Puts n bytes (that were read) back in front of the stream, and its
 * offset back by n: the next reads see them again. p must not point into
 * the stream's own buffer. */
void istream_unread(istream_t *s, const void *p, size_t n);
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

/* ---- byte classes, 64 bytes at a time ----
 * The filters and MinHash walk words and look for rare bytes through bit
 * masks: bit i of a mask says whether byte i of a 64-byte block is in a
 * class, so runs and hits are found with bit operations instead of a
 * branch per byte. ingest_bytemask_ref is the portable definition (and
 * what the tests compare against); ingest_bytemask64 the same with SSE2
 * where the compiler targets it. */
enum {
    INGEST_BM_SPACE, /* space, \t, \n, \v, \f, \r */
    INGEST_BM_WORD,  /* ASCII letter or digit, or any byte >= 0x80 */
    INGEST_BM_PII,   /* '@' or digit */
    INGEST_BM_C4,    /* j, v, f, k, p in either case: a letter of each C4 phrase */
};

static inline int ingest_bm_in(int cls, unsigned char b)
{
    switch (cls) {
    case INGEST_BM_SPACE: return b == ' ' || (b >= 9 && b <= 13);
    case INGEST_BM_WORD: return b >= 0x80 || (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'z');
    case INGEST_BM_PII: return b == '@' || (b >= '0' && b <= '9');
    default: return b && strchr("jvfkpJVFKP", b) != NULL;
    }
}

/* Mask of the n (<= 64) bytes at p in class cls; bits n..63 are 0. */
static inline uint64_t ingest_bytemask_ref(const unsigned char *p, size_t n, int cls)
{
    uint64_t m = 0;
    for (size_t i = 0; i < n; i++)
        m |= (uint64_t)ingest_bm_in(cls, p[i]) << i;
    return m;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* 0xff in the bytes of v that lie in [lo, lo + span] (unsigned). */
static inline __m128i bm_range(__m128i v, unsigned char lo, unsigned char span)
{
    __m128i d = _mm_sub_epi8(v, _mm_set1_epi8((char)lo));
    return _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8((char)span)), d);
}
#endif

/* Mask of the 64 bytes at p in class cls. */
static inline uint64_t ingest_bytemask64(const unsigned char *p, int cls)
{
#if defined(__SSE2__)
    uint64_t m = 0;
    for (int k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * k)), r;
        switch (cls) {
        case INGEST_BM_SPACE:
            r = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')), bm_range(v, 9, 4));
            break;
        case INGEST_BM_WORD:
            r = _mm_or_si128(_mm_or_si128(bm_range(v, 0x80, 0x7f), bm_range(v, '0', 9)),
                             bm_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 25));
            break;
        case INGEST_BM_PII:
            r = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('@')), bm_range(v, '0', 9));
            break;
        default: {
            __m128i l = _mm_or_si128(v, _mm_set1_epi8(0x20)); /* only 'J' and 'j' give 'j', and so on */
            r = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(l, _mm_set1_epi8('j')), _mm_cmpeq_epi8(l, _mm_set1_epi8('v'))),
                             _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(l, _mm_set1_epi8('f')), _mm_cmpeq_epi8(l, _mm_set1_epi8('k'))),
                                          _mm_cmpeq_epi8(l, _mm_set1_epi8('p'))));
            break;
        }
        }
        m |= (uint64_t)(unsigned)_mm_movemask_epi8(r) << (16 * k);
    }
    return m;
#else
    return ingest_bytemask_ref(p, 64, cls);
#endif
}

/* Mask of the bytes p[0..n) in class cls, n <= 64; bits n..63 are pad. */
static inline uint64_t ingest_bytemask(const unsigned char *p, size_t n, int cls, int pad)
{
    if (n == 64)
        return ingest_bytemask64(p, cls);
    return ingest_bytemask_ref(p, n, cls) | (pad ? ~0ull << n : 0);
}

/* Silences libxml2's default error printing (libraries never print). */
void ingest_xml_quiet(void);

#endif
