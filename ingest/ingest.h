/* ingest.h — the pretraining data pipeline: archives in, clean tokenized
 * shards out.
 *
 *   input ──libarchive──▶ reader ──▶ extractor ──▶ filters ──▶ dedup ──▶ tokenizer ──▶ shard
 *
 * Readers (WARC/WET, MediaWiki XML, code archives, JSONL) stream one input
 * through libarchive and hand each document to a sink callback; nothing is
 * written to temporary files and every item is capped in size. Bad input
 * (truncated streams, malformed headers, bad encodings, malformed XML,
 * bombs) is reported to the sink as a counted problem naming the input and
 * the byte offset in the uncompressed stream, and the reader goes on with
 * the next record where the format allows it.
 *
 * Extractors turn HTML and wikitext into plain UTF-8 text with line
 * structure. Filters drop (or, for PII, rewrite) documents and count the
 * reason. The worker ties it together: one shard per input, a done-marker
 * per input after its shard is sealed, per-input stats and MinHash
 * signatures for the whole-dataset `ingest dedup` pass. See docs/ingest.md.
 *
 * Errors: functions return 0 (GL_OK) or a gl_code_t with *err naming the
 * input; they never print or exit.
 *
 * Threads: the readers and extractors keep per-process state (a cache of
 * iconv descriptors, libxml2's error handlers, the charset name returned
 * by ingest_to_utf8), so use them from one thread per process — the
 * worker model, where more cores mean more ranks.
 */
#ifndef GL_INGEST_H
#define GL_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "shard.pb-c.h"

/* ---- counters ---------------------------------------------------------- */

/* Everything a worker counts per input. Numbers are never reused: they are
 * stored by name in the stats files, but keep the order stable anyway. */
typedef enum {
    /* items a reader skips by design */
    INGEST_SKIP_RECORD = 0,   /* WARC record that is not a response/conversion */
    INGEST_SKIP_NOT_HTML,     /* response whose payload is not HTML */
    INGEST_SKIP_HTTP_STATUS,  /* response with a non-2xx status */
    INGEST_SKIP_REDIRECT,     /* wiki redirect page */
    INGEST_SKIP_NAMESPACE,    /* wiki page outside namespace 0 */
    INGEST_SKIP_TOO_LARGE,    /* record, page or file over its size cap */
    INGEST_SKIP_BINARY,       /* code file with NUL bytes */
    INGEST_SKIP_BAD_UTF8,     /* code file that is not valid UTF-8 */
    INGEST_SKIP_VENDORED,     /* vendored / third-party path */
    INGEST_SKIP_GENERATED,    /* generated file */
    INGEST_SKIP_MINIFIED,     /* StarCoder's minified-file rules */
    INGEST_SKIP_UNKNOWN_LANG, /* code file of no known language */
    INGEST_SKIP_EMPTY,        /* nothing left after extraction */
    /* filters */
    INGEST_DROP_LENGTH,
    INGEST_DROP_GOPHER_QUALITY,
    INGEST_DROP_GOPHER_REPETITION,
    INGEST_DROP_C4,
    INGEST_DROP_LANGUAGE,
    INGEST_DROP_DUP_EXACT,     /* same text earlier in the same input */
    INGEST_PII_EMAIL,          /* e-mail addresses replaced (not a drop) */
    INGEST_PII_IP,             /* IP addresses replaced (not a drop) */
    /* bad input: each also reported to the sink's problem callback */
    INGEST_ERR_TRUNCATED,      /* compressed stream ends early / read error */
    INGEST_ERR_HEADER,         /* malformed WARC or HTTP header */
    INGEST_ERR_LENGTH,         /* wrong Content-Length */
    INGEST_ERR_CHARSET,        /* declared charset wrong or unknown */
    INGEST_ERR_UTF8,           /* invalid UTF-8 repaired */
    INGEST_ERR_XML,            /* malformed XML */
    INGEST_ERR_JSON,           /* malformed JSON line */
    INGEST_ERR_ARCHIVE,        /* unreadable archive or entry */
    INGEST_ERR_BOMB,           /* decompression bomb (expansion ratio cap) */
    INGEST_ERR_LINE,           /* absurd line length */
    INGEST_ERR_OPEN,           /* input could not be opened */
    INGEST_SKIP_ENCODING,      /* HTTP Content-Encoding other than gzip/identity */
    INGEST_NCOUNTERS
} ingest_counter_t;

/* Static name of a counter ("skip.redirect", "drop.c4", "error.xml"...). */
const char *ingest_counter_name(ingest_counter_t c);
/* Counter by name, or -1. */
int ingest_counter_by_name(const char *name);
/* 1 for INGEST_ERR_* counters. */
int ingest_counter_is_error(ingest_counter_t c);

/* ---- documents and sinks ---------------------------------------------- */

/* One extracted document. Every pointer is owned by the reader and valid
 * only during the sink's doc() call; NULL fields are unknown. */
typedef struct {
    Gptline__SourceKind source;
    const char *text;          /* UTF-8, not NUL-terminated */
    size_t len;
    const char *url, *title, *path, *date, *record_id, *license, *language;
    uint64_t offset;           /* byte offset of its record in the uncompressed input */
} ingest_doc_t;

typedef struct {
    /* A document; return non-zero (a gl_code_t, *err set) to stop reading. */
    int (*doc)(void *ctx, const ingest_doc_t *d, gl_err_t *err);
    /* A counted event: a skip, or bad input with offset and message (msg is
     * NULL for plain skips). Optional. */
    void (*count)(void *ctx, ingest_counter_t c, uint64_t offset, const char *msg);
    void *ctx;
} ingest_sink_t;

/* ---- readers ----------------------------------------------------------- */

typedef enum {
    INGEST_KIND_AUTO = 0,
    INGEST_KIND_WARC,   /* WARC or WET (response and conversion records) */
    INGEST_KIND_WIKI,   /* MediaWiki XML dump */
    INGEST_KIND_CODE,   /* tar.* / zip source archive */
    INGEST_KIND_JSONL,  /* {"id","text","metadata"} per line */
} ingest_kind_t;

typedef struct {
    size_t max_record;      /* WARC record / wiki page / JSONL line cap; default 16 MiB */
    size_t max_file;        /* code file cap; default 1 MiB */
    size_t max_line;        /* header line cap; default 64 KiB */
    double max_ratio;       /* decompression ratio beyond which the input is a bomb; default 1000 */
    uint64_t ratio_after;   /* ratio checked once this many bytes came out; default 64 MiB */
} ingest_read_opts_t;

void ingest_read_opts_default(ingest_read_opts_t *o);

/* The kind a path names by its extension (.warc/.wet/.xml/.jsonl/.tar/.zip
 * and compressed forms), or INGEST_KIND_AUTO when it cannot tell. */
ingest_kind_t ingest_kind_of(const char *path);
const char *ingest_kind_name(ingest_kind_t k);

/* Reads one input file and passes its documents to sink. Bad input inside
 * the file is counted through sink->count and reading goes on; returns an
 * error only when the file cannot be opened (GL_EIO/GL_ENOTFOUND), when its
 * kind is unknown (GL_EINVAL) or when the sink stopped (its code). The
 * bytes of uncompressed input read are added to *bytes_in if non-NULL. */
int ingest_read_file(const char *path, ingest_kind_t kind, const ingest_read_opts_t *o,
                     ingest_sink_t *sink, uint64_t *bytes_in, gl_err_t *err);
/* The same over a memory buffer (compressed or not); name is used in
 * messages. Used by tests and fuzz targets. */
int ingest_read_memory(const void *data, size_t len, const char *name, ingest_kind_t kind,
                       const ingest_read_opts_t *o, ingest_sink_t *sink, uint64_t *bytes_in,
                       gl_err_t *err);

/* ---- extractors --------------------------------------------------------- */

/* A growable byte buffer. Owned by whoever declared it; free with
 * ingest_buf_free(). */
typedef struct {
    char *p;
    size_t len, cap;
} ingest_buf_t;
void ingest_buf_free(ingest_buf_t *b);

/* HTML (UTF-8) to text: script/style/nav/header/footer/forms and
 * link-dense blocks dropped; paragraphs, headings and list items one per
 * line; <pre> keeps its lines. out is overwritten (not NUL-terminated
 * beyond len, but a NUL follows). The <title> goes to title (overwritten)
 * when non-NULL. Returns GL_ENOMEM or GL_EPARSE only when nothing could be
 * parsed. */
int ingest_html_to_text(const char *html, size_t len, ingest_buf_t *out, ingest_buf_t *title);

/* MediaWiki wikitext to plain text: templates, tables, refs, comments,
 * galleries, files and categories dropped; links to their labels; bold and
 * italic marks removed; headings and list items kept as lines. */
void ingest_wikitext_to_text(const char *wt, size_t len, ingest_buf_t *out);

/* Converts len bytes in charset (NULL/"" = unknown: sniffed) to UTF-8
 * into out. *used receives the charset actually used (static string).
 * Returns 1 when the declared charset was wrong or unknown and another was
 * used, 0 otherwise; invalid sequences become U+FFFD. */
int ingest_to_utf8(const char *data, size_t len, const char *charset, ingest_buf_t *out,
                   const char **used);

/* 1 if s[0..len) is valid UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int ingest_utf8_valid(const char *s, size_t len);

/* ---- filters ------------------------------------------------------------ */

typedef struct {
    int length;            /* on: min_chars / min_words */
    size_t min_chars;      /* default 200 */
    size_t min_words;      /* default 20 */
    int gopher_quality;    /* default on for crawl and JSONL */
    int gopher_repetition; /* default on for crawl and JSONL */
    int c4;                /* C4 line rules; default on for crawl */
    int pii;               /* replace e-mails and IPs; default on */
    int dedup_exact;       /* within an input; default on */
    const char *languages; /* comma list of ISO codes to keep ("en,bg"); NULL keeps all */
} ingest_filter_opts_t;

/* Defaults for documents of a source kind. */
void ingest_filter_opts_default(ingest_filter_opts_t *o, Gptline__SourceKind source);

/* Applies the filters to text (which may be rewritten in place into out:
 * C4 removes lines, PII replaces addresses). Returns -1 when kept (out
 * holds the final text), or the counter of the reason it was dropped.
 * pii_counts[0..1] (e-mails, IPs replaced) are added to when non-NULL. */
int ingest_filter(const ingest_filter_opts_t *o, const char *text, size_t len, ingest_buf_t *out,
                  uint64_t pii_counts[2]);

/* Individual rules, exposed for tests: 1 = passes. */
int ingest_gopher_quality(const char *text, size_t len);
int ingest_gopher_repetition(const char *text, size_t len);
/* C4 line rules into out; returns 1 if the page survives. */
int ingest_c4(const char *text, size_t len, ingest_buf_t *out);
/* PII scrub into out; adds replacements to counts[0] (e-mails), counts[1] (IPs). */
void ingest_pii_scrub(const char *text, size_t len, ingest_buf_t *out, uint64_t counts[2]);

/* Language of t by CLD2: an ISO 639-1 code ("en", "bg", ...) or NULL when
 * CLD2 cannot tell; *reliable is CLD2's own verdict. Static string. */
const char *ingest_lang_detect(const char *t, size_t n, int *reliable);

/* ---- dedup -------------------------------------------------------------- */

#define INGEST_MH_BANDS 14
#define INGEST_MH_ROWS 8
#define INGEST_MH_PERM (INGEST_MH_BANDS * INGEST_MH_ROWS)
#define INGEST_MH_NGRAM 5

/* 64-bit hash of a text for exact dedup. */
uint64_t ingest_text_hash(const char *text, size_t len);
/* MinHash signature over word 5-grams of the normalised text (lowercase,
 * punctuation dropped). Texts of fewer than 5 words hash as one shingle. */
void ingest_minhash(const char *text, size_t len, uint32_t sig[INGEST_MH_PERM]);

/* ---- tokenizer ---------------------------------------------------------- */

/* The tokenizer behind the worker: "bytes" (ids 0-255, end of text 256,
 * the shard library's byte tokenizer) or the path of a BPE vocabulary
 * (tiktoken rank file, GPT-2 encoder.json, .gltok; it must have an
 * <|endoftext|>). Caller owns it. */
typedef struct ingest_tok ingest_tok_t;
ingest_tok_t *ingest_tok_open(const char *spec, gl_err_t *err);
void ingest_tok_free(ingest_tok_t **t);
const char *ingest_tok_name(const ingest_tok_t *t);
uint64_t ingest_tok_hash(const ingest_tok_t *t);
uint32_t ingest_tok_vocab(const ingest_tok_t *t);
uint32_t ingest_tok_eot(const ingest_tok_t *t);
/* Encodes n texts into *store (grown as needed; owned by the caller,
 * free()); text i's ids are (*store)[offsets[i] .. offsets[i+1]), so
 * offsets has n+1 entries. */
int ingest_tok_encode_batch(ingest_tok_t *t, const char *const *texts, const size_t *lens, size_t n,
                            uint32_t **store, size_t *store_cap, size_t *offsets, gl_err_t *err);

/* ---- worker ------------------------------------------------------------- */

typedef struct {
    const char *out_dir;
    const char *tokenizer;            /* spec for ingest_tok_open */
    uint32_t rank, world;
    int strict;                        /* any bad input makes the run fail */
    ingest_read_opts_t read;
    int filters_off;                   /* switch every filter off */
    int no_gopher, no_c4, no_pii, no_dedup, no_length;
    const char *languages;             /* keep these (CLD2 runs on every document) */
    int detect_lang;                   /* record each document's language (CLD2) without --lang */
    size_t min_chars, min_words;       /* 0: default */
    unsigned throttle_ms;              /* sleep per document (tests of killed workers) */
    /* Log lines: called by the worker for each input and problem; may be
     * NULL. The command layer prints them. */
    void (*log)(void *ctx, int level, const char *msg);
    void *log_ctx;
    /* Progress: called after each document the readers produce, with the
     * uncompressed bytes read since the last call; may be NULL. */
    void (*progress)(void *ctx, uint64_t docs, uint64_t bytes);
    /* Prometheus textfile of this rank's counters (gptline_ingest_*, labels
     * rank and world), rewritten every metrics_interval seconds (default 5)
     * while documents flow, after each input and at the end; NULL: none. A
     * path that cannot be written fails the start. */
    const char *metrics_file;
    double metrics_interval;
} ingest_worker_opts_t;

typedef struct {
    uint64_t inputs_done, inputs_skipped, inputs_failed;
    uint64_t docs_in, docs_kept, bytes_in, bytes_kept, tokens;
    uint64_t counters[INGEST_NCOUNTERS];
} ingest_stats_t;

/* Runs rank opts->rank of opts->world over the inputs (input k belongs to
 * rank k mod world), skipping inputs already marked done. Fills *stats
 * (this run's work) and writes <out>/stats/rank-R.json. Returns GL_OK, an
 * error that stopped the worker, or (strict) GL_ECORRUPT when bad input
 * was seen. */
int ingest_worker_run(const ingest_worker_opts_t *o, char *const *inputs, size_t n_inputs,
                      ingest_stats_t *stats, gl_err_t *err);

/* The whole-dataset dedup pass: reads the signatures every worker wrote in
 * dir, finds exact and near duplicates (MinHash LSH, 14 bands x 8 rows)
 * across all inputs, keeps the first of each cluster (lowest input, then
 * document order) and compacts the shards holding the others. Idempotent.
 * *removed_exact / *removed_near count the documents removed this time. */
int ingest_dedup_run(const char *dir, uint64_t *removed_exact, uint64_t *removed_near,
                     uint64_t *docs_seen, gl_err_t *err);

/* `gptline ingest ...` */
int ingest_cmd(int argc, char **argv);

#endif
