/* shards.h — LMDB token shards: the storage every training stage reads.
 *
 * A shard is one LMDB environment in a single file (MDB_NOSUBDIR), written
 * by one writer and then sealed: written under "<name>.tmp", a manifest
 * recorded last, synced, and renamed to "<name>" (by convention *.mdb).
 * Nothing reads a file that was not sealed. Inside, three databases:
 *
 *   meta    "magic"    -> "GLSHARD\0" + u32 format version (little-endian)
 *           "manifest" -> gptline.ShardManifest (protobuf)
 *           "offsets"  -> u64[doc_count + 1], cumulative token counts
 *   tokens  chunk index (size_t, MDB_INTEGERKEY) -> 0-63 pad bytes, then
 *           about 1 MiB of the token stream: whole documents, each followed
 *           by the end-of-text id, 2 or 4 bytes per token (little-endian)
 *   docs    doc index -> metadata record (protobuf; DocMeta for DOCUMENTS,
 *           SftConversation / RmRanking / RlPrompt for the later stages)
 *
 * After LMDB's pages the sealed file ends with a 64-byte trailer: "GLSHEND\0",
 * u32 format version, u32 reserved, u64 length of the LMDB part, u64
 * XXH3-64 of the LMDB part, u64 XXH3-64 of the trailer's first 32 bytes.
 * Opening checks the trailer and the size (so a truncated or unsealed file
 * is refused before LMDB sees it); SHARD_OPEN_CHECKSUM also hashes the
 * whole file first, so that no corruption anywhere reaches LMDB, which
 * trusts its pages.
 *
 * A dataset is a folder of sealed shards of one record kind and tokenizer.
 * Its token stream is every document of every shard (shards in name order),
 * each followed by the end-of-text id; the sampler cuts (B, T+1) windows
 * from that stream. See docs/shards.md.
 *
 * Errors: functions return 0 (GL_OK) or a gl_code_t and fill *err with a
 * message naming the shard file; they never print or exit.
 */
#ifndef GL_SHARDS_H
#define GL_SHARDS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/common.h"
#include "shard.pb-c.h"

#define SHARD_FORMAT_VERSION 1
#define SHARD_MAGIC "GLSHARD"  /* 7 chars + NUL = 8 bytes on disk */
#define SHARD_TRAILER_MAGIC "GLSHEND"
#define SHARD_TRAILER_LEN 64
#define SHARD_SUFFIX ".mdb"
#define SHARD_TMP_SUFFIX ".tmp"

/* ---- writer ----------------------------------------------------------- */

typedef struct shard_writer shard_writer_t;

typedef struct {
    Gptline__RecordKind kind;   /* default (0): GPTLINE__RECORD_KIND__DOCUMENTS */
    const char *tokenizer_name; /* required */
    uint64_t tokenizer_hash;
    uint32_t vocab_size;        /* required; <= 65536 stores 2-byte tokens, else 4 */
    uint32_t eot_id;            /* must be < vocab_size */
    const char *command;        /* provenance: what wrote it ("shards pack") */
    uint32_t rank, world;       /* provenance: ingest worker rank/world */
    size_t chunk_bytes;         /* token bytes per chunk and transaction; default 1 MiB */
    size_t map_size;            /* initial LMDB map size; default 1 GiB; grows */
} shard_writer_opts_t;

/* Starts a shard that will appear at path when sealed. Fails with GL_EEXIST
 * if path exists or another live process is writing it; a stale temporary
 * file left by a killed writer is removed. Caller owns the writer: end it
 * with shard_writer_seal() or shard_writer_abort(). */
shard_writer_t *shard_writer_create(const char *path, const shard_writer_opts_t *opts,
                                    gl_err_t *err);

/* Appends a record: n tokens (each < vocab_size) and its metadata message
 * (may be NULL; for DOCUMENTS a Gptline__DocMeta, whose source and
 * byte_length feed the manifest's per-source counts). Both are copied. On
 * error the record is not added and the records added before are kept. */
int shard_writer_add(shard_writer_t *w, const uint32_t *tokens, size_t n,
                     const ProtobufCMessage *meta, gl_err_t *err);

/* Records an input file in the provenance (first 1000 kept, all counted). */
void shard_writer_add_input(shard_writer_t *w, const char *input);

uint64_t shard_writer_docs(const shard_writer_t *w);
uint64_t shard_writer_tokens(const shard_writer_t *w);
/* Number of times the map was grown (for tests and stats). */
unsigned shard_writer_map_growths(const shard_writer_t *w);

/* Commits what is buffered, writes the offsets and manifest, syncs, and
 * renames the file into place. Frees *w and sets it to NULL, on error too
 * (the temporary file is then removed). */
int shard_writer_seal(shard_writer_t **w, gl_err_t *err);

/* Discards the shard (removes the temporary file). NULL-safe; nulls *w. */
void shard_writer_abort(shard_writer_t **w);

/* ---- reader ----------------------------------------------------------- */

typedef struct shard_reader shard_reader_t;

/* A zero-copy view of a token array inside the map. Valid until the reader
 * (or the dataset that owns it) is closed. data may not be aligned to the
 * token width: read it with shard_token_at() or memcpy. */
typedef struct {
    const uint8_t *data;
    uint64_t n;        /* tokens */
    uint32_t width;    /* bytes per token: 2 or 4 */
} shard_tokens_t;

static inline uint32_t shard_token_at(const shard_tokens_t *t, uint64_t i)
{
    if (t->width == 2) {
        uint16_t v;
        memcpy(&v, t->data + 2 * i, 2);
        return v;
    }
    uint32_t v;
    memcpy(&v, t->data + 4 * i, 4);
    return v;
}

/* Flags of shard_open. */
#define SHARD_OPEN_CHECKSUM 1u /* hash the whole file before trusting it */

/* Opens a sealed shard read-only. Validates the trailer, the file's size
 * against its pages (a truncated file is an error, not a crash), the magic,
 * the format version, the manifest and the offsets; with
 * SHARD_OPEN_CHECKSUM first the whole file's checksum. Caller owns the
 * reader. */
shard_reader_t *shard_open(const char *path, unsigned flags, gl_err_t *err);
/* NULL-safe; nulls *r. Invalidates every view taken from it. */
void shard_close(shard_reader_t **r);

const char *shard_path(const shard_reader_t *r);
/* The manifest; owned by the reader. */
const Gptline__ShardManifest *shard_manifest(const shard_reader_t *r);
uint64_t shard_doc_count(const shard_reader_t *r);
uint64_t shard_token_count(const shard_reader_t *r);
/* Size of the file on disk in bytes. */
uint64_t shard_file_size(const shard_reader_t *r);

/* Document i's tokens (zero-copy view). */
int shard_tokens(const shard_reader_t *r, uint64_t i, shard_tokens_t *out, gl_err_t *err);
/* Document i's metadata record bytes (zero-copy, same lifetime as views);
 * unpack with the message type of the manifest's record kind. */
int shard_meta(const shard_reader_t *r, uint64_t i, const uint8_t **data, size_t *len,
               gl_err_t *err);
/* Unpacks document i's DocMeta. Caller frees with
 * gptline__doc_meta__free_unpacked(m, NULL). */
int shard_doc_meta(const shard_reader_t *r, uint64_t i, Gptline__DocMeta **out, gl_err_t *err);

/* Checks the whole-file checksum (unless the reader was opened with
 * SHARD_OPEN_CHECKSUM), then reads every record and checks the token and
 * metadata checksums and counts against the manifest. GL_ECORRUPT names the
 * shard and the check. */
int shard_verify(const shard_reader_t *r, gl_err_t *err);

/* The identity of a sealed shard file, read from its 64-byte trailer alone
 * (the length and XXH3-64 of its LMDB part, as sealed): cheap, and it
 * changes whenever the shard is rewritten and sealed again. Fails with
 * GL_ECORRUPT/GL_EVERSION when the file is not a sealed shard, GL_ENOTFOUND
 * when it is missing. Does not hash the file (shard_verify does). */
int shard_file_fingerprint(const char *path, uint64_t *fp, gl_err_t *err);

/* ---- dataset ---------------------------------------------------------- */

typedef struct shard_dataset shard_dataset_t;

/* The sealed shards (*.mdb) of a dataset folder, as paths in name order;
 * *unsealed (may be NULL) counts the temporary files of writers running or
 * killed. Caller frees with shard_list_free. */
int shard_list(const char *dir, char ***paths, size_t *n, size_t *unsealed, gl_err_t *err);
void shard_list_free(char **paths, size_t n);

/* Opens every sealed shard (*.mdb) in dir, in name order; temporary files of
 * writers still running or killed are skipped (and counted). All shards
 * must share the record kind and tokenizer (GL_EMISMATCH otherwise). An
 * empty folder is a valid empty dataset. Caller owns the dataset. */
shard_dataset_t *shard_dataset_open(const char *dir, unsigned flags, gl_err_t *err);
/* NULL-safe; nulls *d. */
void shard_dataset_close(shard_dataset_t **d);

size_t shard_dataset_shard_count(const shard_dataset_t *d);
/* Shard i (owned by the dataset). */
shard_reader_t *shard_dataset_shard(const shard_dataset_t *d, size_t i);
/* Number of unsealed temporary files that were skipped. */
size_t shard_dataset_unsealed(const shard_dataset_t *d);
uint64_t shard_dataset_docs(const shard_dataset_t *d);
uint64_t shard_dataset_tokens(const shard_dataset_t *d);
/* Length of the token stream: tokens plus one end-of-text per document. */
uint64_t shard_dataset_stream_len(const shard_dataset_t *d);
/* The tokenizer all shards share (NULL for an empty dataset). */
const Gptline__TokenizerId *shard_dataset_tokenizer(const shard_dataset_t *d);
Gptline__RecordKind shard_dataset_kind(const shard_dataset_t *d);
/* Document by global index: its shard and index within it. */
int shard_dataset_locate(const shard_dataset_t *d, uint64_t doc, size_t *shard, uint64_t *local,
                         gl_err_t *err);

/* Record (document) by global index: its token view and its metadata
 * bytes (both zero-copy, valid while the dataset is open); shard (may be
 * NULL) receives the reader that holds it, for messages. */
int shard_dataset_record(const shard_dataset_t *d, uint64_t index, shard_tokens_t *tokens, const uint8_t **meta,
                         size_t *meta_len, const shard_reader_t **shard, gl_err_t *err);

/* Copies n tokens of the stream starting at pos into out (as int32). */
int shard_dataset_read(const shard_dataset_t *d, uint64_t pos, uint64_t n, int32_t *out,
                       gl_err_t *err);

/* ---- sampler ---------------------------------------------------------- */

/* Yields batches of B windows of T+1 consecutive stream tokens (inputs are
 * the first T, targets the last T). The stream is cut into W = (L-1)/T
 * windows starting at multiples of T; each epoch visits them in an order
 * fixed by (seed, epoch) — a keyed bijection of [0, W), no table — and
 * rank r of world n takes the epoch's positions r, r+n, r+2n, ... (the
 * W mod n leftover windows are skipped that epoch), so ranks never share a
 * window within an epoch. Deterministic: the same (dataset, B, T, seed,
 * rank, world) gives the same batches. The position (epoch, step) can be
 * saved and restored for resuming. */
typedef struct {
    const shard_dataset_t *ds;
    uint32_t B, T;
    uint64_t seed;
    uint32_t rank, world;
    int shuffle;              /* 0: windows in stream order (evaluation) */
    uint64_t windows;         /* W: windows in the stream */
    uint64_t per_rank;        /* windows of this rank per epoch */
    uint64_t epoch;           /* current epoch */
    uint64_t next;            /* next window index within this rank's epoch */
    uint64_t key[4];          /* round keys of the current epoch */
    unsigned half_bits;       /* Feistel half width in bits */
} shard_sampler_t;

/* Fails with GL_ERANGE if the stream holds fewer windows than world ranks. */
int shard_sampler_init(shard_sampler_t *s, const shard_dataset_t *ds, uint32_t B, uint32_t T,
                       uint64_t seed, uint32_t rank, uint32_t world, int shuffle, gl_err_t *err);
/* Fills out[B * (T+1)]; moves to the next epoch when this one is used up. */
int shard_sampler_next(shard_sampler_t *s, int32_t *out, gl_err_t *err);
/* Global window id of this rank's k-th window in epoch e. */
uint64_t shard_sampler_window(shard_sampler_t *s, uint64_t epoch, uint64_t k);
/* Resumes at (epoch, next). */
void shard_sampler_seek(shard_sampler_t *s, uint64_t epoch, uint64_t next);

/* ---- the byte-level tokenizer of `shards pack` ------------------------ */

#define SHARD_BYTES_TOKENIZER "bytes"
#define SHARD_BYTES_VOCAB 257u
#define SHARD_BYTES_EOT 256u
uint64_t shard_bytes_tokenizer_hash(void);

/* ---- command ---------------------------------------------------------- */

/* `gptline shards ...` */
int shards_cmd(int argc, char **argv);

#endif
