/* internal.h — private declarations shared by the shard library's files. */
#ifndef GL_SHARDS_INTERNAL_H
#define GL_SHARDS_INTERNAL_H

#include <lmdb.h>

#include "shards/shards.h"
#include "tokenizer/tokenizer.h"

#define SHARD_DB_META "meta"
#define SHARD_DB_TOKENS "tokens"
#define SHARD_DB_DOCS "docs"
#define SHARD_KEY_MAGIC "magic"
#define SHARD_KEY_MANIFEST "manifest"
#define SHARD_KEY_OFFSETS "offsets"
#define SHARD_KEY_CHUNKS "chunks"
#define SHARD_MAGIC_LEN 12 /* 8 bytes of magic + u32 version */

/* The trailer at the end of a sealed shard file. */
typedef struct {
    uint64_t body_len;   /* bytes of the LMDB part */
    uint64_t body_xxh3;  /* XXH3-64 of them */
} shard_trailer_t;

/* Encodes a trailer into 64 bytes. */
void shard_trailer_encode(const shard_trailer_t *t, uint8_t out[SHARD_TRAILER_LEN]);
/* Reads and checks the trailer of an open file of file_size bytes. */
int shard_trailer_read(int fd, const char *path, uint64_t file_size, shard_trailer_t *t, gl_err_t *err);
/* XXH3-64 of the first len bytes of fd. */
int shard_hash_fd(int fd, const char *path, uint64_t len, uint64_t *out, gl_err_t *err);

/* The tokenizer of the shards commands: a vocabulary file, or the
 * byte-level tokenizer (vocab NULL). */
typedef struct {
    tok_vocab_t *vocab;
    char name[128];
    uint64_t hash;
    uint32_t vocab_size, eot;
} shard_tokenizer_t;

/* "bytes" or a vocabulary file (chat_roles: add the chat-role tokens).
 * The vocabulary must have an end-of-text token. */
int shard_tokenizer_load(shard_tokenizer_t *t, const char *spec, int chat_roles, gl_err_t *err);
void shard_tokenizer_free(shard_tokenizer_t *t);
/* Writer options naming this tokenizer. */
shard_writer_opts_t shard_tokenizer_writer_opts(const shard_tokenizer_t *t, Gptline__RecordKind kind);
/* Encodes documents (no special token allowed) into outs[n]. */
int shard_tokenizer_encode_batch(const shard_tokenizer_t *t, const tok_doc_t *docs, size_t n, tok_ids_t *outs,
                                 gl_err_t *err);
/* GL_EMISMATCH unless id names this tokenizer (same hash and size). */
int shard_tokenizer_check(const shard_tokenizer_t *t, const Gptline__TokenizerId *id, const char *what,
                          gl_err_t *err);
/* Appends the bytes of a token view to *buf (see tok_decode). */
int shard_tokenizer_decode(const shard_tokenizer_t *t, const shard_tokens_t *tk, uint8_t **buf, size_t *len,
                           size_t *cap, gl_err_t *err);

/* `gptline shards import` (import.c). */
int shards_import_cmd(int argc, char **argv);

/* Formats an LMDB error for path into err. */
int shard_mdb_err(gl_err_t *err, int rc, const char *path, const char *what);



/* Hot-path accessors for dataset.c (reader.c): validated at open. */
/* Chunk c holds stream positions [cstart[c], cstart[c+1]) of the shard. */
const uint8_t *const *shard_chunk_ptrs(const shard_reader_t *r);
const uint64_t *shard_chunk_starts(const shard_reader_t *r);
uint64_t shard_chunk_count(const shard_reader_t *r);
#endif
