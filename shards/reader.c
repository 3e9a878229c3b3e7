/* reader.c — opening and validating sealed shards; zero-copy access.
 *
 * A sealed shard never changes, so it is opened with MDB_RDONLY|MDB_NOLOCK
 * and one read transaction is held for the reader's lifetime: every token
 * view points into the memory map and stays valid until shard_close().
 *
 * Opening validates everything a later access relies on, so that a bad
 * file is an error message and never a crash: the file must hold all the
 * pages LMDB's meta page claims (a truncated file would otherwise SIGBUS on
 * access), the magic and format version must match, the manifest must
 * parse and agree with the offsets and chunk tables, every token chunk must
 * have exactly the size the chunk table gives and lie inside the file, and
 * every document must sit inside one chunk. That pass also collects a
 * pointer per chunk and per document, so random access and the sampler are
 * a binary search and a memcpy, with no B-tree walk per read.
 */
#include "shards/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

struct shard_reader {
    char *path;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi_meta, dbi_tokens, dbi_docs;
    Gptline__ShardManifest *man;
    uint64_t file_size, body_size;
    int file_checked;
    const uint8_t *map_lo, *map_hi; /* the file's bytes inside the map */
    const uint64_t *offsets;        /* doc_count + 1, in the map (8-aligned copy if needed) */
    uint64_t *offsets_copy;
    const uint64_t *cstart;         /* chunk_count + 1 stream positions */
    uint64_t *cstart_copy;
    const uint8_t **chunk_ptr;      /* chunk_count */
    const uint8_t **doc_ptr;        /* doc_count */
    uint32_t width;
    unsigned psize;
    size_t last_pgno;
};

static int inside(const shard_reader_t *r, const void *p, size_t len)
{
    const uint8_t *b = p;
    return b >= r->map_lo && b <= r->map_hi && len <= (size_t)(r->map_hi - b);
}

/* LMDB does not expose where it mapped the file, and the bounds checks
 * below need it. Every LMDB page starts with its own page number, and pages
 * are OS pages of a page-aligned map, so the page holding a record tells
 * the base: page address - pgno * psize. Two records must agree. */
static int map_base_from(const shard_reader_t *r, const char *key, const uint8_t **base)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    if (mdb_get(r->txn, r->dbi_meta, &k, &v))
        return -1;
    uintptr_t page = (uintptr_t)v.mv_data & ~(uintptr_t)(r->psize - 1);
    size_t pgno;
    memcpy(&pgno, (const void *)page, sizeof pgno);
    if (pgno < 2 || pgno > r->last_pgno)
        return -1;
    *base = (const uint8_t *)(page - pgno * r->psize);
    return 0;
}

static int find_map(shard_reader_t *r, gl_err_t *err)
{
    const uint8_t *a, *b;
    if (map_base_from(r, SHARD_KEY_MAGIC, &a) || map_base_from(r, SHARD_KEY_MANIFEST, &b) || a != b)
        return gl_err_set(err, GL_ECORRUPT, "%s: not a sealed gptline shard (magic or manifest record missing or damaged)",
                          r->path);
    r->map_lo = a;
    r->map_hi = a + r->body_size;
#ifdef MADV_HUGEPAGE
    /* Let page-cache readahead build 2 MiB folios and map them with huge
     * pages: random training windows then cost far fewer TLB misses.
     * Advice only; failure changes nothing. */
    madvise((void *)a, (size_t)r->body_size, MADV_HUGEPAGE);
#endif
    return GL_OK;
}

static int get_meta_key(shard_reader_t *r, const char *key, MDB_val *v, gl_err_t *err)
{
    MDB_val k = {strlen(key), (void *)key};
    int rc = mdb_get(r->txn, r->dbi_meta, &k, v);
    if (rc == MDB_NOTFOUND)
        return gl_err_set(err, GL_ECORRUPT, "%s: not a sealed gptline shard (no '%s' record)", r->path, key);
    if (rc)
        return shard_mdb_err(err, rc, r->path, "reading meta");
    if (!inside(r, v->mv_data, v->mv_size))
        return gl_err_set(err, GL_ECORRUPT, "%s: '%s' record lies outside the file", r->path, key);
    return GL_OK;
}

/* Loads a u64 table of n entries from the meta database (zero-copy when
 * the record is 8-byte aligned in the map, else copied). */
static int load_u64_table(shard_reader_t *r, const char *key, uint64_t n, const uint64_t **out, uint64_t **copy,
                          gl_err_t *err)
{
    MDB_val v;
    int rc = get_meta_key(r, key, &v, err);
    if (rc)
        return rc;
    if (n > SIZE_MAX / 8 || v.mv_size != n * 8)
        return gl_err_set(err, GL_ECORRUPT, "%s: '%s' table has %zu bytes for %llu entries", r->path, key,
                          v.mv_size, (unsigned long long)n);
    if (((uintptr_t)v.mv_data & 7) == 0) {
        *out = v.mv_data;
        return GL_OK;
    }
    *copy = malloc(v.mv_size);
    if (!*copy)
        return gl_err_set(err, GL_ENOMEM, "%s: out of memory", r->path);
    memcpy(*copy, v.mv_data, v.mv_size);
    *out = *copy;
    return GL_OK;
}

static int validate(shard_reader_t *r, gl_err_t *err)
{
    MDB_val v;
    int rc = get_meta_key(r, SHARD_KEY_MAGIC, &v, err);
    if (rc)
        return rc;
    if (v.mv_size != SHARD_MAGIC_LEN || memcmp(v.mv_data, SHARD_MAGIC, sizeof SHARD_MAGIC))
        return gl_err_set(err, GL_ECORRUPT, "%s: bad magic: not a gptline shard", r->path);
    uint32_t ver;
    memcpy(&ver, (const uint8_t *)v.mv_data + 8, 4);
    if (ver != SHARD_FORMAT_VERSION)
        return gl_err_set(err, GL_EVERSION, "%s: shard format version %u; this build reads version %u",
                          r->path, ver, SHARD_FORMAT_VERSION);

    if ((rc = get_meta_key(r, SHARD_KEY_MANIFEST, &v, err)))
        return rc;
    r->man = gptline__shard_manifest__unpack(NULL, v.mv_size, v.mv_data);
    if (!r->man)
        return gl_err_set(err, GL_ECORRUPT, "%s: manifest does not parse", r->path);
    const Gptline__ShardManifest *m = r->man;
    if (m->format_version != SHARD_FORMAT_VERSION)
        return gl_err_set(err, GL_EVERSION, "%s: manifest format version %u; this build reads version %u",
                          r->path, m->format_version, SHARD_FORMAT_VERSION);
    if (!m->tokenizer || !m->tokenizer->vocab_size || m->tokenizer->eot_id >= m->tokenizer->vocab_size)
        return gl_err_set(err, GL_ECORRUPT, "%s: manifest has no valid tokenizer", r->path);
    if (m->token_width != (m->tokenizer->vocab_size <= 65536 ? 2u : 4u))
        return gl_err_set(err, GL_ECORRUPT, "%s: token width %u does not fit vocab size %u", r->path,
                          m->token_width, m->tokenizer->vocab_size);
    if (m->kind <= GPTLINE__RECORD_KIND__RECORD_KIND_UNSPECIFIED || m->kind > GPTLINE__RECORD_KIND__RL_PROMPTS)
        return gl_err_set(err, GL_ECORRUPT, "%s: unknown record kind %d", r->path, (int)m->kind);
    r->width = m->token_width;

    if ((rc = load_u64_table(r, SHARD_KEY_OFFSETS, m->doc_count + 1, &r->offsets, &r->offsets_copy, err)) ||
        (rc = load_u64_table(r, SHARD_KEY_CHUNKS, m->chunk_count + 1, &r->cstart, &r->cstart_copy, err)))
        return rc;
    const uint64_t *off = r->offsets, *cs = r->cstart;
    if (off[0] != 0 || off[m->doc_count] != m->token_count)
        return gl_err_set(err, GL_ECORRUPT, "%s: offsets table disagrees with the manifest's %llu tokens",
                          r->path, (unsigned long long)m->token_count);
    for (uint64_t i = 0; i < m->doc_count; i++)
        if (off[i + 1] < off[i])
            return gl_err_set(err, GL_ECORRUPT, "%s: offsets table not increasing at document %llu", r->path,
                              (unsigned long long)i);
    if (cs[0] != 0 || cs[m->chunk_count] != m->token_count + m->doc_count)
        return gl_err_set(err, GL_ECORRUPT, "%s: chunk table does not cover the %llu-token stream", r->path,
                          (unsigned long long)(m->token_count + m->doc_count));
    for (uint64_t c = 0; c < m->chunk_count; c++)
        if (cs[c + 1] <= cs[c])
            return gl_err_set(err, GL_ECORRUPT, "%s: chunk table not increasing at chunk %llu", r->path,
                              (unsigned long long)c);

    /* One pass over the chunk records: keys, sizes, bounds, pointers. */
    r->chunk_ptr = malloc((m->chunk_count ? m->chunk_count : 1) * sizeof *r->chunk_ptr);
    r->doc_ptr = malloc((m->doc_count ? m->doc_count : 1) * sizeof *r->doc_ptr);
    if (!r->chunk_ptr || !r->doc_ptr)
        return gl_err_set(err, GL_ENOMEM, "%s: out of memory", r->path);
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(r->txn, r->dbi_tokens, &cur)))
        return shard_mdb_err(err, rc, r->path, "mdb_cursor_open");
    MDB_val k;
    uint64_t c = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), c++) {
        size_t key;
        if (k.mv_size != sizeof key) {
            rc = -1;
            break;
        }
        memcpy(&key, k.mv_data, sizeof key);
        /* a chunk value is 0-63 pad bytes (for alignment), then its tokens */
        uint64_t bytes = c < m->chunk_count ? (cs[c + 1] - cs[c]) * r->width : 0;
        if (c >= m->chunk_count || key != c || v.mv_size < bytes || v.mv_size - bytes >= 64 ||
            !inside(r, v.mv_data, v.mv_size)) {
            rc = -1;
            break;
        }
        r->chunk_ptr[c] = (const uint8_t *)v.mv_data + (v.mv_size - bytes);
    }
    mdb_cursor_close(cur);
    if (rc == -1)
        return gl_err_set(err, GL_ECORRUPT, "%s: token chunk %llu does not match the chunk table", r->path,
                          (unsigned long long)c);
    if (rc != MDB_NOTFOUND)
        return shard_mdb_err(err, rc, r->path, "reading tokens");
    if (c != m->chunk_count)
        return gl_err_set(err, GL_ECORRUPT, "%s: %llu token chunks, manifest says %llu", r->path,
                          (unsigned long long)c, (unsigned long long)m->chunk_count);

    /* Every document and its end-of-text lie inside one chunk. */
    c = 0;
    for (uint64_t i = 0; i < m->doc_count; i++) {
        uint64_t a = off[i] + i, b = off[i + 1] + i + 1;
        while (c < m->chunk_count && cs[c + 1] <= a)
            c++;
        if (c == m->chunk_count || a < cs[c] || b > cs[c + 1])
            return gl_err_set(err, GL_ECORRUPT, "%s: document %llu spans token chunks", r->path,
                              (unsigned long long)i);
        r->doc_ptr[i] = r->chunk_ptr[c] + (a - cs[c]) * r->width;
    }
    return GL_OK;
}

int shard_trailer_read(int fd, const char *path, uint64_t file_size, shard_trailer_t *t, gl_err_t *err)
{
    uint8_t raw[SHARD_TRAILER_LEN];
    if (file_size < SHARD_TRAILER_LEN)
        return gl_err_set(err, GL_ECORRUPT, "%s: not a gptline shard (%llu bytes is too small)", path,
                          (unsigned long long)file_size);
    if (pread(fd, raw, sizeof raw, (off_t)(file_size - sizeof raw)) != (ssize_t)sizeof raw)
        return gl_err_set(err, GL_EIO, "%s: reading the trailer: %s", path, strerror(errno));
    if (memcmp(raw, SHARD_TRAILER_MAGIC, sizeof SHARD_TRAILER_MAGIC))
        return gl_err_set(err, GL_ECORRUPT, "%s: no shard trailer: not a sealed gptline shard, or truncated", path);
    uint32_t ver;
    uint64_t h;
    memcpy(&ver, raw + 8, 4);
    memcpy(&t->body_len, raw + 16, 8);
    memcpy(&t->body_xxh3, raw + 24, 8);
    memcpy(&h, raw + 32, 8);
    if (h != XXH3_64bits(raw, 32))
        return gl_err_set(err, GL_ECORRUPT, "%s: shard trailer damaged", path);
    if (ver != SHARD_FORMAT_VERSION)
        return gl_err_set(err, GL_EVERSION, "%s: shard format version %u; this build reads version %u", path, ver,
                          SHARD_FORMAT_VERSION);
    if (t->body_len != file_size - SHARD_TRAILER_LEN)
        return gl_err_set(err, GL_ECORRUPT, "%s: file has %llu bytes, its trailer says %llu", path,
                          (unsigned long long)file_size, (unsigned long long)(t->body_len + SHARD_TRAILER_LEN));
    return GL_OK;
}

int shard_file_fingerprint(const char *path, uint64_t *fp, gl_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    shard_trailer_t t = {0};
    int rc = fstat(fd, &st) < 0 ? gl_err_set(err, GL_EIO, "%s: %s", path, strerror(errno))
                                : shard_trailer_read(fd, path, (uint64_t)st.st_size, &t, err);
    close(fd);
    if (!rc) {
        uint64_t v[2] = {t.body_len, t.body_xxh3};
        *fp = XXH3_64bits(v, sizeof v);
    }
    return rc;
}

static int check_file_hash(const char *path, gl_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    shard_trailer_t t = {0};
    uint64_t h = 0;
    int rc;
    if (fstat(fd, &st) < 0)
        rc = gl_err_set(err, GL_EIO, "%s: %s", path, strerror(errno));
    else if (!(rc = shard_trailer_read(fd, path, (uint64_t)st.st_size, &t, err)) &&
             !(rc = shard_hash_fd(fd, path, t.body_len, &h, err)) && h != t.body_xxh3)
        rc = gl_err_set(err, GL_ECORRUPT, "%s: file checksum mismatch (data corrupted)", path);
    close(fd);
    return rc;
}

shard_reader_t *shard_open(const char *path, unsigned flags, gl_err_t *err)
{
    shard_reader_t *r = gl_xcalloc(1, sizeof *r);
    r->path = gl_xstrdup(path);
    struct stat st;
    int rc;
    if (stat(path, &st) < 0) {
        gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        gl_err_set(err, GL_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    if (flags & SHARD_OPEN_CHECKSUM) {
        if (check_file_hash(path, err))
            goto fail;
        r->file_checked = 1;
    }
    {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        shard_trailer_t t;
        if (fd < 0) {
            gl_err_set(err, GL_EIO, "%s: %s", path, strerror(errno));
            goto fail;
        }
        rc = shard_trailer_read(fd, path, (uint64_t)st.st_size, &t, err);
        close(fd);
        if (rc)
            goto fail;
        r->file_size = (uint64_t)st.st_size;
        r->body_size = t.body_len;
    }
    if (r->body_size < 2 * (uint64_t)sysconf(_SC_PAGESIZE)) {
        gl_err_set(err, GL_ECORRUPT, "%s: not a gptline shard (%llu bytes is too small)", path,
                   (unsigned long long)r->body_size);
        goto fail;
    }
    if ((rc = mdb_env_create(&r->env))) {
        shard_mdb_err(err, rc, path, "mdb_env_create");
        goto fail;
    }
    mdb_env_set_maxdbs(r->env, 4);
    rc = mdb_env_open(r->env, path, MDB_RDONLY | MDB_NOSUBDIR | MDB_NOLOCK, 0);
    if (rc) {
        if (rc == MDB_INVALID || rc == EINVAL || rc == ENOENT || rc == MDB_VERSION_MISMATCH)
            gl_err_set(err, GL_ECORRUPT, "%s: not a gptline shard (LMDB: %s)", path, mdb_strerror(rc));
        else
            shard_mdb_err(err, rc, path, "cannot open");
        goto fail;
    }
    MDB_envinfo info;
    MDB_stat est;
    mdb_env_info(r->env, &info);
    mdb_env_stat(r->env, &est);
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * est.ms_psize;
    if (need > r->body_size) {
        gl_err_set(err, GL_ECORRUPT, "%s: damaged: LMDB part has %llu bytes, its pages need %llu", path,
                   (unsigned long long)r->body_size, (unsigned long long)need);
        goto fail;
    }
    r->last_pgno = info.me_last_pgno;
    r->psize = est.ms_psize;
    if (r->psize != (unsigned)sysconf(_SC_PAGESIZE)) {
        gl_err_set(err, GL_EUNSUPPORTED, "%s: LMDB page size %u differs from this machine's %ld", path,
                   r->psize, sysconf(_SC_PAGESIZE));
        goto fail;
    }
    if ((rc = mdb_txn_begin(r->env, NULL, MDB_RDONLY, &r->txn))) {
        shard_mdb_err(err, rc, path, "mdb_txn_begin");
        goto fail;
    }
    if ((rc = mdb_dbi_open(r->txn, SHARD_DB_META, 0, &r->dbi_meta)) ||
        (rc = mdb_dbi_open(r->txn, SHARD_DB_TOKENS, MDB_INTEGERKEY, &r->dbi_tokens)) ||
        (rc = mdb_dbi_open(r->txn, SHARD_DB_DOCS, MDB_INTEGERKEY, &r->dbi_docs))) {
        if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE)
            gl_err_set(err, GL_ECORRUPT, "%s: not a gptline shard (missing databases)", path);
        else
            shard_mdb_err(err, rc, path, "mdb_dbi_open");
        goto fail;
    }
    if (find_map(r, err) || validate(r, err))
        goto fail;
    return r;
fail:
    shard_close(&r);
    return NULL;
}

void shard_close(shard_reader_t **rp)
{
    if (!rp || !*rp)
        return;
    shard_reader_t *r = *rp;
    if (r->txn)
        mdb_txn_abort(r->txn);
    if (r->env)
        mdb_env_close(r->env);
    if (r->man)
        gptline__shard_manifest__free_unpacked(r->man, NULL);
    free(r->offsets_copy);
    free(r->cstart_copy);
    free(r->chunk_ptr);
    free(r->doc_ptr);
    free(r->path);
    free(r);
    *rp = NULL;
}

const char *shard_path(const shard_reader_t *r) { return r->path; }
const Gptline__ShardManifest *shard_manifest(const shard_reader_t *r) { return r->man; }
uint64_t shard_doc_count(const shard_reader_t *r) { return r->man->doc_count; }
uint64_t shard_token_count(const shard_reader_t *r) { return r->man->token_count; }
uint64_t shard_file_size(const shard_reader_t *r) { return r->file_size; }

/* For the dataset's hot path: pointers and offsets without re-validation. */
const uint8_t *const *shard_chunk_ptrs(const shard_reader_t *r) { return r->chunk_ptr; }
const uint64_t *shard_chunk_starts(const shard_reader_t *r) { return r->cstart; }
uint64_t shard_chunk_count(const shard_reader_t *r) { return r->man->chunk_count; }

int shard_tokens(const shard_reader_t *r, uint64_t i, shard_tokens_t *out, gl_err_t *err)
{
    if (i >= r->man->doc_count)
        return gl_err_set(err, GL_ERANGE, "%s: document %llu out of range (%llu documents)", r->path,
                          (unsigned long long)i, (unsigned long long)r->man->doc_count);
    out->data = r->doc_ptr[i];
    out->n = r->offsets[i + 1] - r->offsets[i];
    out->width = r->width;
    return GL_OK;
}

int shard_meta(const shard_reader_t *r, uint64_t i, const uint8_t **data, size_t *len, gl_err_t *err)
{
    if (i >= r->man->doc_count)
        return gl_err_set(err, GL_ERANGE, "%s: document %llu out of range (%llu documents)", r->path,
                          (unsigned long long)i, (unsigned long long)r->man->doc_count);
    size_t key = (size_t)i;
    MDB_val k = {sizeof key, &key}, v;
    int rc = mdb_get(r->txn, r->dbi_docs, &k, &v);
    if (rc == MDB_NOTFOUND)
        return gl_err_set(err, GL_ECORRUPT, "%s: document %llu has no metadata record", r->path,
                          (unsigned long long)i);
    if (rc)
        return shard_mdb_err(err, rc, r->path, "reading metadata");
    if (!inside(r, v.mv_data, v.mv_size))
        return gl_err_set(err, GL_ECORRUPT, "%s: metadata of document %llu lies outside the file", r->path,
                          (unsigned long long)i);
    *data = v.mv_data;
    *len = v.mv_size;
    return GL_OK;
}

int shard_doc_meta(const shard_reader_t *r, uint64_t i, Gptline__DocMeta **out, gl_err_t *err)
{
    const uint8_t *d = NULL;
    size_t n = 0;
    int rc = shard_meta(r, i, &d, &n, err);
    if (rc)
        return rc;
    if (r->man->kind != GPTLINE__RECORD_KIND__DOCUMENTS)
        return gl_err_set(err, GL_EMISMATCH, "%s: records are not documents", r->path);
    *out = gptline__doc_meta__unpack(NULL, n, d);
    if (!*out)
        return gl_err_set(err, GL_ECORRUPT, "%s: metadata of document %llu does not parse", r->path,
                          (unsigned long long)i);
    return GL_OK;
}

int shard_verify(const shard_reader_t *r, gl_err_t *err)
{
    const Gptline__ShardManifest *m = r->man;
    if (!r->file_checked && check_file_hash(r->path, err))
        return err ? err->code : GL_ECORRUPT;
    XXH3_state_t *ht = XXH3_createState(), *hm = XXH3_createState();
    XXH3_64bits_reset(ht);
    XXH3_64bits_reset(hm);
    int rc = GL_OK;
    MDB_cursor *cur = NULL;
    uint64_t n = 0;
    for (uint64_t c = 0; c < m->chunk_count; c++)
        XXH3_64bits_update(ht, r->chunk_ptr[c], (r->cstart[c + 1] - r->cstart[c]) * r->width);
    for (uint64_t i = 0; i < m->doc_count; i++) {
        shard_tokens_t t = {0};
        shard_tokens(r, i, &t, NULL);
        for (uint64_t j = 0; j < t.n; j++)
            if (shard_token_at(&t, j) >= m->tokenizer->vocab_size) {
                rc = gl_err_set(err, GL_ECORRUPT, "%s: document %llu: token %u outside the vocabulary",
                                r->path, (unsigned long long)i, shard_token_at(&t, j));
                goto out;
            }
        if (shard_token_at(&t, t.n) != m->tokenizer->eot_id) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: document %llu is not followed by end-of-text", r->path,
                            (unsigned long long)i);
            goto out;
        }
    }
    if (XXH3_64bits_digest(ht) != m->tokens_xxh3) {
        rc = gl_err_set(err, GL_ECORRUPT, "%s: token checksum mismatch (data corrupted)", r->path);
        goto out;
    }
    MDB_val k, v;
    if ((rc = mdb_cursor_open(r->txn, r->dbi_docs, &cur))) {
        rc = shard_mdb_err(err, rc, r->path, "mdb_cursor_open");
        goto out;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
        if (!inside(r, v.mv_data, v.mv_size)) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: metadata record %llu lies outside the file", r->path,
                            (unsigned long long)n);
            goto out;
        }
        XXH3_64bits_update(hm, v.mv_data, v.mv_size);
    }
    if (rc != MDB_NOTFOUND) {
        rc = shard_mdb_err(err, rc, r->path, "reading metadata");
        goto out;
    }
    rc = GL_OK;
    if (n != m->doc_count)
        rc = gl_err_set(err, GL_ECORRUPT, "%s: %llu metadata records, manifest says %llu", r->path,
                        (unsigned long long)n, (unsigned long long)m->doc_count);
    else if (XXH3_64bits_digest(hm) != m->meta_xxh3)
        rc = gl_err_set(err, GL_ECORRUPT, "%s: metadata checksum mismatch (data corrupted)", r->path);
out:
    if (cur)
        mdb_cursor_close(cur);
    XXH3_freeState(ht);
    XXH3_freeState(hm);
    return rc;
}
