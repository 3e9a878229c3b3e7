/* writer.c — the shard writer: append documents, seal, rename into place.
 *
 * Workload: an ingest worker or `shards pack` appends documents of a few
 * hundred to a few million tokens, gigabytes per shard, as fast as the disk
 * allows. Tokens are not stored one LMDB value per document: documents,
 * each followed by the end-of-text id, are laid end to end into chunks of
 * about 1 MiB (a document never spans two chunks; a bigger one gets a chunk
 * of its own), so a chunk is a verbatim piece of the token stream the
 * sampler reads. Big values keep LMDB's overflow-page waste under 1% (one
 * value per document wasted half a page each) and make a training window a
 * single memcpy in the common case. Per-document metadata goes to its own
 * database, keyed by document index.
 *
 * The open chunk and the metadata of its documents are buffered in memory,
 * already converted to the stored token width, and written in one LMDB
 * transaction when the chunk closes (MDB_APPEND, so LMDB fills its B-trees
 * sequentially). The buffer stays in cache, so the data crosses memory
 * once more than a plain write() would. If the map fills, the transaction
 * is aborted, the map doubled and the chunk replayed from the buffer, so
 * no record is lost and the map never needs to be sized in advance.
 *
 * The environment is opened with MDB_NOSYNC and MDB_NOLOCK: one process
 * owns the temporary file (guarded by flock), and an unsealed shard is
 * worthless after a crash anyway. Durability comes once, at seal: the
 * manifest is committed last, the trailer with the file's checksum
 * appended, the file synced, renamed to its final name, and the folder
 * synced.
 */
#include "shards/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define MAX_INPUTS_KEPT 1000

typedef struct {
    size_t off, len; /* bytes in buf_tok (chunks) or buf_meta (metadata) */
} span_t;

struct shard_writer {
    char *path, *tmp;
    int lock_fd;
    MDB_env *env;
    MDB_dbi dbi_meta, dbi_tokens, dbi_docs;
    shard_writer_opts_t opts;
    uint32_t width;
    size_t map_size;
    unsigned growths;

    /* the open chunk and the metadata of its documents */
    uint8_t *buf_tok, *buf_meta;
    size_t tok_len, tok_cap, meta_len, meta_cap;
    span_t *metas;
    size_t nmetas, metas_cap;
    uint64_t committed_docs;

    /* totals */
    uint64_t docs, tokens, doc_bytes;
    uint64_t *offsets; /* cumulative token counts, docs + 1 entries */
    size_t offsets_cap;
    uint64_t *cstart; /* stream position where each chunk starts, chunks + 1 */
    size_t cstart_cap;
    uint64_t nchunks_total;
    XXH3_state_t *h_tok, *h_meta;
    uint64_t src_docs[8], src_tokens[8];
    char **inputs;
    size_t ninputs;
    uint64_t inputs_total;
};

int shard_mdb_err(gl_err_t *err, int rc, const char *path, const char *what)
{
    gl_code_t code = GL_EDB;
    if (rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
        rc == MDB_BAD_TXN)
        code = GL_ECORRUPT;
    else if (rc == MDB_VERSION_MISMATCH)
        code = GL_EVERSION;
    else if (rc == ENOENT)
        code = GL_ENOTFOUND;
    else if (rc == ENOMEM)
        code = GL_ENOMEM;
    return gl_err_set(err, code, "%s: %s: %s", path, what, mdb_strerror(rc));
}

void shard_trailer_encode(const shard_trailer_t *t, uint8_t out[SHARD_TRAILER_LEN])
{
    memset(out, 0, SHARD_TRAILER_LEN);
    memcpy(out, SHARD_TRAILER_MAGIC, sizeof SHARD_TRAILER_MAGIC);
    uint32_t ver = SHARD_FORMAT_VERSION;
    memcpy(out + 8, &ver, 4);
    memcpy(out + 16, &t->body_len, 8);
    memcpy(out + 24, &t->body_xxh3, 8);
    uint64_t h = XXH3_64bits(out, 32);
    memcpy(out + 32, &h, 8);
}

int shard_hash_fd(int fd, const char *path, uint64_t len, uint64_t *out, gl_err_t *err)
{
    if (len == 0) {
        *out = XXH3_64bits(NULL, 0);
        return GL_OK;
    }
    /* Map in 64 MiB windows, populated up front: faulting the map in page
     * by page, or copying it out with pread, costs more than the hash. */
    const uint64_t win = (uint64_t)64 << 20;
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
    XXH3_64bits_reset(st);
    int rc = GL_OK;
    for (uint64_t pos = 0; pos < len; pos += win) {
        size_t n = (size_t)(len - pos < win ? len - pos : win);
        void *map = mmap(NULL, n, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, (off_t)pos);
        if (map == MAP_FAILED) {
            rc = gl_err_set(err, GL_EIO, "%s: mmap for checksum: %s", path, strerror(errno));
            break;
        }
        XXH3_64bits_update(st, map, n);
        munmap(map, n);
    }
    *out = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return rc;
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(*buf, n * elem);
    if (!p)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static int open_env(shard_writer_t *w, gl_err_t *err)
{
    int rc = mdb_env_create(&w->env);
    if (rc)
        return shard_mdb_err(err, rc, w->tmp, "mdb_env_create");
    mdb_env_set_maxdbs(w->env, 4);
    mdb_env_set_mapsize(w->env, w->map_size);
    rc = mdb_env_open(w->env, w->tmp, MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOSYNC | MDB_NOMETASYNC, 0644);
    if (rc)
        return shard_mdb_err(err, rc, w->tmp, "cannot create shard");
    MDB_txn *txn;
    rc = mdb_txn_begin(w->env, NULL, 0, &txn);
    if (rc)
        return shard_mdb_err(err, rc, w->tmp, "mdb_txn_begin");
    if ((rc = mdb_dbi_open(txn, SHARD_DB_META, MDB_CREATE, &w->dbi_meta)) ||
        (rc = mdb_dbi_open(txn, SHARD_DB_TOKENS, MDB_CREATE | MDB_INTEGERKEY, &w->dbi_tokens)) ||
        (rc = mdb_dbi_open(txn, SHARD_DB_DOCS, MDB_CREATE | MDB_INTEGERKEY, &w->dbi_docs))) {
        mdb_txn_abort(txn);
        return shard_mdb_err(err, rc, w->tmp, "mdb_dbi_open");
    }
    rc = mdb_txn_commit(txn);
    if (rc)
        return shard_mdb_err(err, rc, w->tmp, "mdb_txn_commit");
    return GL_OK;
}

shard_writer_t *shard_writer_create(const char *path, const shard_writer_opts_t *opts,
                                    gl_err_t *err)
{
    if (!opts || !opts->tokenizer_name || !opts->vocab_size || opts->eot_id >= opts->vocab_size) {
        gl_err_set(err, GL_EINVAL, "%s: writer needs a tokenizer name, vocab size and an end-of-text id below it",
                   path);
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) == 0) {
        gl_err_set(err, GL_EEXIST, "%s: shard already exists", path);
        return NULL;
    }
    shard_writer_t *w = gl_xcalloc(1, sizeof *w);
    w->lock_fd = -1;
    w->opts = *opts;
    if (!w->opts.kind)
        w->opts.kind = GPTLINE__RECORD_KIND__DOCUMENTS;
    if (!w->opts.chunk_bytes)
        w->opts.chunk_bytes = (size_t)1 << 20;
    w->map_size = opts->map_size ? opts->map_size : (size_t)1 << 30;
    w->width = opts->vocab_size <= 65536 ? 2 : 4;
    w->path = gl_xstrdup(path);
    size_t n = strlen(path) + sizeof SHARD_TMP_SUFFIX;
    w->tmp = gl_xmalloc(n);
    snprintf(w->tmp, n, "%s%s", path, SHARD_TMP_SUFFIX);

    /* Claim the temporary name: a live writer holds an flock on it; a file
     * left by a killed writer has none and is replaced. */
    w->lock_fd = open(w->tmp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (w->lock_fd < 0) {
        gl_err_set(err, GL_EIO, "%s: cannot create: %s", w->tmp, strerror(errno));
        goto fail;
    }
    if (flock(w->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        gl_err_set(err, GL_EEXIST, "%s: another process is writing this shard", w->tmp);
        goto fail_keep;
    }
    if (ftruncate(w->lock_fd, 0) < 0) {
        gl_err_set(err, GL_EIO, "%s: cannot truncate: %s", w->tmp, strerror(errno));
        goto fail;
    }
    if (open_env(w, err))
        goto fail;
    w->offsets_cap = 1024;
    w->offsets = gl_xmalloc(w->offsets_cap * sizeof *w->offsets);
    w->offsets[0] = 0;
    w->cstart_cap = 64;
    w->cstart = gl_xmalloc(w->cstart_cap * sizeof *w->cstart);
    w->cstart[0] = 0;
    w->h_tok = XXH3_createState();
    w->h_meta = XXH3_createState();
    XXH3_64bits_reset(w->h_tok);
    XXH3_64bits_reset(w->h_meta);
    return w;

fail:
    unlink(w->tmp);
fail_keep:
    if (w->env)
        mdb_env_close(w->env);
    if (w->lock_fd >= 0)
        close(w->lock_fd);
    free(w->path);
    free(w->tmp);
    free(w);
    return NULL;
}

/* Writes the open chunk and its documents' metadata in one transaction;
 * grows the map and replays on MDB_MAP_FULL. */
static int close_chunk(shard_writer_t *w, gl_err_t *err)
{
    if (!w->tok_len && !w->nmetas)
        return GL_OK;
    if (grow((void **)&w->cstart, &w->cstart_cap, w->nchunks_total + 2, sizeof *w->cstart))
        return gl_err_set(err, GL_ENOMEM, "%s: out of memory", w->path);
    for (;;) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(w->env, NULL, 0, &txn);
        if (rc)
            return shard_mdb_err(err, rc, w->tmp, "mdb_txn_begin");
        if (w->tok_len) {
            size_t id = (size_t)w->nchunks_total;
            MDB_val k = {sizeof id, &id}, v = {w->tok_len, w->buf_tok};
            rc = mdb_put(txn, w->dbi_tokens, &k, &v, MDB_APPEND);
        }
        for (size_t i = 0; i < w->nmetas && !rc; i++) {
            size_t id = (size_t)(w->committed_docs + i);
            MDB_val k = {sizeof id, &id}, v = {w->metas[i].len, w->buf_meta + w->metas[i].off};
            rc = mdb_put(txn, w->dbi_docs, &k, &v, MDB_APPEND);
        }
        if (!rc)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        if (rc == MDB_MAP_FULL) {
            /* Double the map and replay the chunk. */
            size_t size = w->map_size * 2;
            int r2 = mdb_env_set_mapsize(w->env, size);
            if (r2)
                return shard_mdb_err(err, r2, w->tmp, "cannot grow map");
            w->map_size = size;
            w->growths++;
            continue;
        }
        if (rc)
            return shard_mdb_err(err, rc, w->tmp, "write failed");
        break;
    }
    if (w->tok_len) {
        w->cstart[w->nchunks_total + 1] = w->cstart[w->nchunks_total] + w->tok_len / w->width;
        w->nchunks_total++;
    }
    w->committed_docs += w->nmetas;
    w->tok_len = 0;
    w->nmetas = 0;
    w->meta_len = 0;
    return GL_OK;
}

int shard_writer_add(shard_writer_t *w, const uint32_t *tokens, size_t n,
                     const ProtobufCMessage *meta, gl_err_t *err)
{
    if (n > UINT32_MAX)
        return gl_err_set(err, GL_ERANGE, "%s: document of %zu tokens is too long", w->path, n);
    size_t rec_bytes = (n + 1) * w->width; /* the tokens and the end-of-text after them */
    if (w->tok_len && w->tok_len + rec_bytes > w->opts.chunk_bytes) {
        int rc = close_chunk(w, err);
        if (rc)
            return rc;
    }
    size_t meta_bytes = meta ? protobuf_c_message_get_packed_size(meta) : 0;
    if (grow((void **)&w->buf_tok, &w->tok_cap, w->tok_len + rec_bytes, 1) ||
        grow((void **)&w->buf_meta, &w->meta_cap, w->meta_len + meta_bytes, 1) ||
        grow((void **)&w->metas, &w->metas_cap, w->nmetas + 1, sizeof *w->metas) ||
        grow((void **)&w->offsets, &w->offsets_cap, w->docs + 2, sizeof *w->offsets))
        return gl_err_set(err, GL_ENOMEM, "%s: out of memory buffering a document of %zu tokens", w->path, n);

    /* Convert and range-check in one pass; nothing is kept until tok_len
     * moves, so a refused document leaves the buffer as it was. */
    uint8_t *dst = w->buf_tok + w->tok_len;
    uint32_t max = 0;
    if (w->width == 2) {
        for (size_t i = 0; i < n; i++) {
            uint32_t t = tokens[i];
            max = t > max ? t : max;
            uint16_t v = (uint16_t)t;
            memcpy(dst + 2 * i, &v, 2);
        }
        uint16_t e = (uint16_t)w->opts.eot_id;
        memcpy(dst + 2 * n, &e, 2);
    } else {
        for (size_t i = 0; i < n; i++) {
            uint32_t t = tokens[i];
            max = t > max ? t : max;
            memcpy(dst + 4 * i, &t, 4);
        }
        memcpy(dst + 4 * n, &w->opts.eot_id, 4);
    }
    if (max >= w->opts.vocab_size) {
        size_t i = 0;
        while (tokens[i] < w->opts.vocab_size)
            i++;
        return gl_err_set(err, GL_ERANGE, "%s: document %llu: token %u at %zu is outside the vocabulary of %u",
                          w->path, (unsigned long long)w->docs, tokens[i], i, w->opts.vocab_size);
    }
    if (meta)
        protobuf_c_message_pack(meta, w->buf_meta + w->meta_len);
    XXH3_64bits_update(w->h_tok, dst, rec_bytes);
    XXH3_64bits_update(w->h_meta, w->buf_meta + w->meta_len, meta_bytes);
    w->metas[w->nmetas++] = (span_t){w->meta_len, meta_bytes};
    w->tok_len += rec_bytes;
    w->meta_len += meta_bytes;

    w->offsets[w->docs + 1] = w->offsets[w->docs] + n;
    w->docs++;
    w->tokens += n;
    if (meta && meta->descriptor == &gptline__doc_meta__descriptor) {
        const Gptline__DocMeta *dm = (const Gptline__DocMeta *)meta;
        unsigned s = (unsigned)dm->source < 8 ? (unsigned)dm->source : 0;
        w->src_docs[s]++;
        w->src_tokens[s] += n;
        w->doc_bytes += dm->byte_length;
    }
    return GL_OK;
}

void shard_writer_add_input(shard_writer_t *w, const char *input)
{
    w->inputs_total++;
    if (w->ninputs >= MAX_INPUTS_KEPT)
        return;
    w->inputs = gl_xrealloc(w->inputs, (w->ninputs + 1) * sizeof *w->inputs);
    w->inputs[w->ninputs++] = gl_xstrdup(input);
}

uint64_t shard_writer_docs(const shard_writer_t *w) { return w->docs; }
uint64_t shard_writer_tokens(const shard_writer_t *w) { return w->tokens; }
unsigned shard_writer_map_growths(const shard_writer_t *w) { return w->growths; }

static void writer_free(shard_writer_t *w)
{
    if (w->env)
        mdb_env_close(w->env);
    if (w->lock_fd >= 0)
        close(w->lock_fd);
    for (size_t i = 0; i < w->ninputs; i++)
        free(w->inputs[i]);
    free(w->inputs);
    XXH3_freeState(w->h_tok);
    XXH3_freeState(w->h_meta);
    free(w->buf_tok);
    free(w->buf_meta);
    free(w->metas);
    free(w->cstart);
    free(w->offsets);
    free(w->path);
    free(w->tmp);
    free(w);
}

void shard_writer_abort(shard_writer_t **wp)
{
    if (!wp || !*wp)
        return;
    shard_writer_t *w = *wp;
    unlink(w->tmp);
    writer_free(w);
    *wp = NULL;
}

/* Puts one meta key; grows the map on MDB_MAP_FULL. */
static int put_meta(shard_writer_t *w, const char *key, const void *data, size_t len, gl_err_t *err)
{
    for (;;) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(w->env, NULL, 0, &txn);
        if (rc)
            return shard_mdb_err(err, rc, w->tmp, "mdb_txn_begin");
        MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)data};
        rc = mdb_put(txn, w->dbi_meta, &k, &v, 0);
        if (!rc)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        if (rc == MDB_MAP_FULL) {
            w->map_size *= 2;
            w->growths++;
            if ((rc = mdb_env_set_mapsize(w->env, w->map_size)))
                return shard_mdb_err(err, rc, w->tmp, "cannot grow map");
            continue;
        }
        if (rc)
            return shard_mdb_err(err, rc, w->tmp, "write failed");
        return GL_OK;
    }
}

int shard_writer_seal(shard_writer_t **wp, gl_err_t *err)
{
    shard_writer_t *w = *wp;
    int rc = close_chunk(w, err);
    if (rc)
        goto out;

    uint8_t magic[SHARD_MAGIC_LEN] = {0};
    memcpy(magic, SHARD_MAGIC, sizeof SHARD_MAGIC);
    uint32_t ver = SHARD_FORMAT_VERSION;
    memcpy(magic + 8, &ver, 4);
    if ((rc = put_meta(w, SHARD_KEY_MAGIC, magic, sizeof magic, err)) ||
        (rc = put_meta(w, SHARD_KEY_OFFSETS, w->offsets, (w->docs + 1) * sizeof *w->offsets, err)) ||
        (rc = put_meta(w, SHARD_KEY_CHUNKS, w->cstart, (w->nchunks_total + 1) * sizeof *w->cstart, err)))
        goto out;

    /* The manifest goes last: its presence marks the shard complete. */
    Gptline__ShardManifest man = GPTLINE__SHARD_MANIFEST__INIT;
    Gptline__TokenizerId tok = GPTLINE__TOKENIZER_ID__INIT;
    Gptline__Provenance prov = GPTLINE__PROVENANCE__INIT;
    Gptline__SourceCount sc[8], *scp[8];
    size_t nsc = 0;
    char host[256] = "";
    char tool[64];
    gethostname(host, sizeof host - 1);
    snprintf(tool, sizeof tool, "gptline %s", GL_VERSION);

    tok.name = (char *)w->opts.tokenizer_name;
    tok.hash = w->opts.tokenizer_hash;
    tok.vocab_size = w->opts.vocab_size;
    tok.eot_id = w->opts.eot_id;
    prov.tool = tool;
    prov.command = (char *)(w->opts.command ? w->opts.command : "");
    prov.host = host;
    prov.pid = getpid();
    prov.rank = w->opts.rank;
    prov.world = w->opts.world;
    prov.n_inputs = w->ninputs;
    prov.inputs = w->inputs;
    prov.inputs_total = w->inputs_total;
    prov.created_unix = (int64_t)time(NULL);
    for (unsigned s = 0; s < 8; s++) {
        if (!w->src_docs[s])
            continue;
        gptline__source_count__init(&sc[nsc]);
        sc[nsc].source = (Gptline__SourceKind)s;
        sc[nsc].docs = w->src_docs[s];
        sc[nsc].tokens = w->src_tokens[s];
        scp[nsc] = &sc[nsc];
        nsc++;
    }
    man.format_version = SHARD_FORMAT_VERSION;
    man.kind = w->opts.kind;
    man.tokenizer = &tok;
    man.token_width = w->width;
    man.doc_count = w->docs;
    man.token_count = w->tokens;
    man.tokens_xxh3 = XXH3_64bits_digest(w->h_tok);
    man.chunk_count = w->nchunks_total;
    man.meta_xxh3 = XXH3_64bits_digest(w->h_meta);
    man.n_sources = nsc;
    man.sources = scp;
    man.provenance = &prov;
    man.doc_bytes = w->doc_bytes;

    size_t len = gptline__shard_manifest__get_packed_size(&man);
    uint8_t *buf = gl_xmalloc(len);
    gptline__shard_manifest__pack(&man, buf);
    rc = put_meta(w, SHARD_KEY_MANIFEST, buf, len, err);
    free(buf);
    if (rc)
        goto out;

    /* Close LMDB (nothing synced yet: MDB_NOSYNC), append the trailer with
     * the whole file's checksum, then one fsync and the rename. */
    mdb_env_close(w->env);
    w->env = NULL;
    struct stat st;
    shard_trailer_t tr;
    uint8_t raw[SHARD_TRAILER_LEN];
    if (fstat(w->lock_fd, &st) < 0) {
        rc = gl_err_set(err, GL_EIO, "%s: stat: %s", w->tmp, strerror(errno));
        goto out;
    }
    tr.body_len = (uint64_t)st.st_size;
    if ((rc = shard_hash_fd(w->lock_fd, w->tmp, tr.body_len, &tr.body_xxh3, err)))
        goto out;
    shard_trailer_encode(&tr, raw);
    if (pwrite(w->lock_fd, raw, sizeof raw, (off_t)tr.body_len) != (ssize_t)sizeof raw || fsync(w->lock_fd) < 0) {
        rc = gl_err_set(err, GL_EIO, "%s: writing the trailer: %s", w->tmp, strerror(errno));
        goto out;
    }
    /* The data is on disk: drop it from the page cache. A writer does not
     * read it back, and readers then get it through readahead in large
     * folios (see reader.c) instead of the small ones LMDB's writes left. */
    posix_fadvise(w->lock_fd, 0, 0, POSIX_FADV_DONTNEED);
    rc = gl_rename_durable(w->tmp, w->path, err);
out:
    if (rc)
        unlink(w->tmp);
    writer_free(w);
    *wp = NULL;
    return rc;
}
