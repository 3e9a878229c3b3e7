/* tokenizer.h — byte-level BPE in the GPT-2 / tiktoken family.
 *
 * A vocabulary (tok_vocab_t) maps byte strings to ranks. The rank of a token
 * is its id, and it is also its merge priority: encoding pre-tokenizes the
 * text with one of the three standard patterns (tokenizer/pretok.h), then,
 * inside each piece, repeatedly merges the adjacent pair of parts whose
 * concatenation has the lowest rank (leftmost on ties) until no pair is a
 * token. This is tiktoken's definition, and it gives the ids tiktoken and
 * GPT-2's encoder give. Special tokens (end-of-text, fill-in-the-middle,
 * chat roles) are separate: they have names, ids outside the ordinary
 * ranks, and are only produced from text when the caller allows them.
 *
 * Formats read: tiktoken rank files ("base64 rank" per line), GPT-2's
 * encoder.json + vocab.bpe, and gptline's own versioned file (*.gltok),
 * which also records the name, the pattern and the special tokens. See
 * docs/tokenizer.md.
 *
 * A loaded vocabulary is immutable and may be shared by any number of
 * threads encoding at once. Functions return 0 or a gl_code_t and fill
 * *err with a message naming the file and line at fault; they never print
 * or exit.
 */
#ifndef GL_TOKENIZER_H
#define GL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "tokenizer/pretok.h"

#define TOK_FORMAT_MAGIC "gptline-tokenizer"
#define TOK_FORMAT_VERSION 1
#define TOK_MAX_SPECIALS 64      /* special tokens per vocabulary */
#define TOK_MAX_TOKEN_BYTES 4096 /* longest ordinary token accepted */
#define TOK_MAX_IDS (1u << 24)     /* ids (ranks, special ids) are below this */
#define TOK_ALLOW_NONE ((uint64_t)0)
#define TOK_ALLOW_ALL (~(uint64_t)0)

typedef struct tok_vocab tok_vocab_t;

/* ---- loading ------------------------------------------------------------ */

typedef enum {
    TOK_FMT_AUTO = 0,     /* by content: own magic, '{' (encoder.json), else tiktoken */
    TOK_FMT_TIKTOKEN = 1, /* "base64 rank" lines */
    TOK_FMT_GPT2 = 2,     /* encoder.json, with vocab.bpe in the same folder */
    TOK_FMT_GLTOK = 3,    /* gptline's own file */
} tok_format_t;

typedef struct {
    tok_format_t format;   /* TOK_FMT_AUTO (0) by default */
    tok_pretok_t pattern;  /* 0: from the file (gltok) or from the encoding's name */
    const char *name;      /* 0: from the file, else the file's base name */
    const char *merges;    /* GPT-2: path of vocab.bpe; 0: beside encoder.json */
    int chat_roles;        /* append <|system|>, <|user|>, <|assistant|> if absent */
} tok_load_opts_t;

/* Loads a vocabulary. The standard special tokens of a known encoding
 * (gpt2/r50k_base, cl100k_base, o200k_base; recognised by the file's base
 * name or by its number of ordinary tokens) are registered. A file whose
 * pattern cannot be told fails with GL_EINVAL unless opts->pattern is set.
 * Malformed input gives GL_EPARSE / GL_ECORRUPT naming file and line.
 * opts may be NULL. Caller owns the result (tok_vocab_free). */
tok_vocab_t *tok_vocab_load(const char *path, const tok_load_opts_t *opts, gl_err_t *err);

/* Builds a vocabulary from n ordinary tokens: token i has bytes
 * tokens[i][0..lens[i]) and id (= rank) i. A token of length 0 leaves a
 * gap (no token at that id). Every single byte must be a token; no two
 * tokens may be equal. Copies everything. Caller owns the result. */
tok_vocab_t *tok_vocab_from_tokens(const char *name, tok_pretok_t pattern, const uint8_t *const *tokens,
                                   const uint32_t *lens, uint32_t n, gl_err_t *err);

/* Registers a special token. id = UINT32_MAX picks the next free id after
 * every token. Fails with GL_EEXIST when the name or the id is taken. */
int tok_vocab_add_special(tok_vocab_t *v, const char *name, uint32_t id, gl_err_t *err);
/* Registers <|system|>, <|user|>, <|assistant|> (and <|endoftext|> when the
 * vocabulary has none) after the vocabulary, skipping those present. */
int tok_vocab_add_chat_roles(tok_vocab_t *v, gl_err_t *err);

/* NULL-safe; nulls *v. */
void tok_vocab_free(tok_vocab_t **v);

/* ---- writing ------------------------------------------------------------ */

/* Writes v in a format (atomically: temporary name, fsync, rename).
 * TOK_FMT_TIKTOKEN writes the ordinary tokens only (special tokens are not
 * part of that format). TOK_FMT_GPT2 writes encoder.json at path and
 * vocab.bpe beside it (merges are recovered from the ranks; a vocabulary
 * whose tokens cannot all be made by merging two lower-ranked tokens fails
 * with GL_EUNSUPPORTED). TOK_FMT_GLTOK keeps everything. */
int tok_vocab_save(const tok_vocab_t *v, const char *path, tok_format_t format, gl_err_t *err);

/* ---- properties --------------------------------------------------------- */

const char *tok_vocab_name(const tok_vocab_t *v);
tok_pretok_t tok_vocab_pattern(const tok_vocab_t *v);
/* One more than the largest id (ordinary or special). */
uint32_t tok_vocab_size(const tok_vocab_t *v);
/* Number of ordinary tokens (ids with bytes). */
uint32_t tok_vocab_ordinary(const tok_vocab_t *v);
/* Identity: XXH3-64 over the tokens in id order, the pattern and the
 * special tokens; equal for the same vocabulary in any file format. */
uint64_t tok_vocab_hash(const tok_vocab_t *v);
/* Bytes of token id (ordinary or special, whose bytes are its name);
 * NULL for an id with no token. Owned by v. */
const uint8_t *tok_token_bytes(const tok_vocab_t *v, uint32_t id, size_t *len);
/* Rank (= id) of an ordinary token's bytes, or -1. */
int64_t tok_token_id(const tok_vocab_t *v, const void *bytes, size_t len);

size_t tok_special_count(const tok_vocab_t *v);
/* Special token i (0 <= i < count) in registration order; name owned by v. */
const char *tok_special_name(const tok_vocab_t *v, size_t i, uint32_t *id);
/* Id of a special token by name, or -1. */
int64_t tok_special_id(const tok_vocab_t *v, const char *name);
/* The end-of-text id (<|endoftext|>), or -1 when there is none. */
int64_t tok_eot_id(const tok_vocab_t *v);
/* Bit mask (for the allowed argument of the encoders) of the special named
 * name, or 0 when the vocabulary has no such special. */
uint64_t tok_special_mask(const tok_vocab_t *v, const char *name);

/* ---- encoding and decoding ---------------------------------------------- */

/* A growable array of ids. Zero-initialise; free with tok_ids_free. */
typedef struct {
    uint32_t *ids;
    size_t n, cap;
} tok_ids_t;
void tok_ids_free(tok_ids_t *a);
/* Ensures room for extra more ids (GL_ENOMEM otherwise). */
int tok_ids_reserve(tok_ids_t *a, size_t extra, gl_err_t *err);

/* Appends the ids of text[0..len) to out. Special tokens whose bits are set
 * in allowed (TOK_ALLOW_ALL, TOK_ALLOW_NONE, or tok_special_mask()s or-ed
 * together) are recognised in the text; everything else, text that looks
 * like a special token included, is encoded as ordinary bytes. Any bytes,
 * invalid UTF-8 included, are accepted. Fails only with GL_ENOMEM. */
int tok_encode(const tok_vocab_t *v, const void *text, size_t len, uint64_t allowed, tok_ids_t *out,
               gl_err_t *err);

/* Encodes one pre-token piece by BPE merges (no pre-tokenization, no
 * specials); appends its ids. For tests and tools. */
int tok_encode_piece(const tok_vocab_t *v, const uint8_t *piece, size_t len, tok_ids_t *out, gl_err_t *err);

/* Appends the bytes of ids to *buf (realloc'ed; *len updated, *cap its
 * capacity; start with all zero). Caller owns *buf. An id with no token
 * fails with GL_ERANGE and appends nothing. */
int tok_decode(const tok_vocab_t *v, const uint32_t *ids, size_t n, uint8_t **buf, size_t *len, size_t *cap,
               gl_err_t *err);

/* ---- batch and streaming -------------------------------------------------- */

typedef struct {
    const void *text;
    size_t len;
} tok_doc_t;

/* Encodes n documents over threads threads (0: all cores); outs[i] (zero-
 * initialised by the caller, who owns and frees them) receives document
 * i's ids. Work is shared dynamically, so uneven documents balance. */
int tok_encode_batch(const tok_vocab_t *v, const tok_doc_t *docs, size_t n, uint64_t allowed, int threads,
                     tok_ids_t *outs, gl_err_t *err);

/* A position in buf[0..len) at or before len where the text may be cut and
 * each side encoded alone with the same result as the whole: just after a
 * '\n' that precedes an ASCII letter (no pattern lets a piece span that),
 * the last such at or after min_pos; 0 when there is none. */
size_t tok_safe_cut(const uint8_t *buf, size_t len, size_t min_pos);

/* Streaming encoder for inputs of any size: feed bytes in chunks of any
 * size, ids come out as soon as a safe cut is seen; finish flushes. Holds
 * at most max_hold bytes (default 16 MiB; past it the text is cut anyway,
 * which may differ from whole-text encoding at that one place). */
typedef struct tok_stream tok_stream_t;
/* Caller owns the stream; v must outlive it. */
tok_stream_t *tok_stream_new(const tok_vocab_t *v, uint64_t allowed, size_t max_hold, gl_err_t *err);
/* Appends the ids that became final to out. */
int tok_stream_feed(tok_stream_t *s, const void *data, size_t len, tok_ids_t *out, gl_err_t *err);
int tok_stream_finish(tok_stream_t *s, tok_ids_t *out, gl_err_t *err);
/* NULL-safe; nulls *s. */
void tok_stream_free(tok_stream_t **s);

/* ---- training ------------------------------------------------------------- */

typedef struct {
    uint32_t vocab_size;   /* ordinary tokens to reach, >= 256 (specials come after) */
    tok_pretok_t pattern;  /* default (0): TOK_PRETOK_O200K */
    const char *name;      /* default "gltok" */
    int threads;           /* counting threads; 0: all cores */
    int chat_roles;        /* register end-of-text and the chat roles after the vocab */
    gl_progress_t *progress; /* optional; counts merges */
} tok_train_opts_t;

typedef struct tok_trainer tok_trainer_t;

/* A trainer gathers pre-token piece counts from text, then learns merges.
 * Caller owns it. */
tok_trainer_t *tok_trainer_new(const tok_train_opts_t *opts, gl_err_t *err);
/* Counts the pieces of one document (pieces never span documents).
 * Documents added in one call are counted over opts->threads threads. */
int tok_trainer_add(tok_trainer_t *t, const tok_doc_t *docs, size_t n, gl_err_t *err);
/* Learns merges until vocab_size ordinary tokens (or no pair is left).
 * Each step merges the adjacent pair with the largest count over all
 * pieces (weighted by how often the piece occurred); ties go to the pair
 * whose (left id, right id) is smallest. Token 256 + k is the k-th merge,
 * ids 0-255 the bytes; a merge whose bytes are already a token reuses it.
 * Caller owns the result. */
tok_vocab_t *tok_trainer_finish(tok_trainer_t *t, gl_err_t *err);
/* Number of distinct pieces counted so far. */
size_t tok_trainer_pieces(const tok_trainer_t *t);
/* NULL-safe; nulls *t. */
void tok_trainer_free(tok_trainer_t **t);

/* ---- conversations -------------------------------------------------------- */

/* The chat layout of every stage (see chat.c): each turn is its role token
 * and its text; each assistant turn ends with <|endoftext|>. Needs a
 * vocabulary with the chat roles. */
typedef enum { TOK_ROLE_SYSTEM = 0, TOK_ROLE_USER = 1, TOK_ROLE_ASSISTANT = 2 } tok_role_t;
typedef struct {
    tok_role_t role;
    const char *text;
    size_t len;
} tok_turn_t;
typedef struct {
    uint32_t start, end; /* token positions, end exclusive */
} tok_span_t;
typedef struct {
    tok_span_t *s;
    size_t n, cap;
} tok_spans_t;

/* "system", "user"/"human", "assistant"/"gpt" -> role, else -1. */
int tok_role_from_name(const char *name);
/* Appends the conversation's ids to out and, when spans is non-NULL, the
 * loss spans (each assistant text and its end-of-text) to spans. Text is
 * encoded with no special token allowed. GL_EINVAL when the vocabulary
 * lacks a role token. */
int tok_chat_encode(const tok_vocab_t *v, const tok_turn_t *turns, size_t n, tok_ids_t *out, tok_spans_t *spans,
                    gl_err_t *err);
/* The conversation followed by <|assistant|>: the prompt a model completes. */
int tok_chat_prompt(const tok_vocab_t *v, const tok_turn_t *turns, size_t n, tok_ids_t *out, gl_err_t *err);
/* NULL-safe on an empty list. */
void tok_spans_free(tok_spans_t *s);

/* ---- command -------------------------------------------------------------- */

/* `gptline tokenizer ...`; returns a GL_EXIT_* status. */
int tok_cmd(int argc, char **argv);

#endif
