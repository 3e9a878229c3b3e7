/* fuzz_shard.c — fuzzes what the shard reader parses: the magic record,
 * the manifest (protobuf), the offsets table and the token records'
 * sizes, inside an LMDB file that LMDB itself wrote (LMDB's page structure
 * is protected by the file checksum, so it is not the target here).
 *
 * Input layout: four length-prefixed fields (u16 little-endian length,
 * then bytes): magic record, manifest, offsets, chunk table; the rest is
 * split into token chunks of 1..64 bytes (the first byte sets the length)
 * and the same bytes as metadata records.
 */
#include "shards/internal.h"
#include "tests/fuzz/fuzz.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t *take(const uint8_t **p, size_t *n, size_t *len)
{
    if (*n < 2) {
        *len = 0;
        return *p;
    }
    size_t l = (size_t)(*p)[0] | (size_t)(*p)[1] << 8;
    *p += 2;
    *n -= 2;
    if (l > *n)
        l = *n;
    const uint8_t *r = *p;
    *p += l;
    *n -= l;
    *len = l;
    return r;
}

static char path[256];

static int build(const uint8_t *data, size_t size)
{
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/gl-fuzz-shard-%ld.mdb", (long)getpid());
    unlink(path);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, tok, docs;
    if (mdb_env_create(&env))
        return -1;
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, 8u << 20);
    int rc = mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOSYNC, 0644);
    if (!rc)
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (!rc) {
        mdb_dbi_open(txn, SHARD_DB_META, MDB_CREATE, &meta);
        mdb_dbi_open(txn, SHARD_DB_TOKENS, MDB_CREATE | MDB_INTEGERKEY, &tok);
        mdb_dbi_open(txn, SHARD_DB_DOCS, MDB_CREATE | MDB_INTEGERKEY, &docs);
        const char *keys[4] = {SHARD_KEY_MAGIC, SHARD_KEY_MANIFEST, SHARD_KEY_OFFSETS, SHARD_KEY_CHUNKS};
        for (int i = 0; i < 4; i++) {
            size_t len;
            const uint8_t *v = take(&data, &size, &len);
            MDB_val k = {strlen(keys[i]), (void *)keys[i]}, val = {len, (void *)v};
            if (len)
                mdb_put(txn, meta, &k, &val, 0);
        }
        for (size_t id = 0; size; id++) {
            size_t len = 1 + data[0] % 64;
            if (len > size)
                len = size;
            MDB_val k = {sizeof id, &id}, val = {len, (void *)data};
            mdb_put(txn, tok, &k, &val, MDB_APPEND);
            mdb_put(txn, docs, &k, &val, MDB_APPEND);
            data += len;
            size -= len;
        }
        rc = mdb_txn_commit(txn);
    }
    mdb_env_close(env);
    if (rc)
        return -1;
    int fd = open(path, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    shard_trailer_t t = {.body_len = (uint64_t)st.st_size};
    shard_hash_fd(fd, path, t.body_len, &t.body_xxh3, NULL);
    uint8_t raw[SHARD_TRAILER_LEN];
    shard_trailer_encode(&t, raw);
    rc = pwrite(fd, raw, sizeof raw, st.st_size) == (ssize_t)sizeof raw ? 0 : -1;
    close(fd);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16 || build(data, size))
        return 0;
    gl_err_t err;
    shard_reader_t *r = shard_open(path, SHARD_OPEN_CHECKSUM, &err);
    if (getenv("GL_FUZZ_DEBUG"))
        fprintf(stderr, "%s\n", r ? "opened" : err.msg);
    if (r) {
        shard_verify(r, &err);
        for (uint64_t i = 0; i < shard_doc_count(r); i++) {
            shard_tokens_t t;
            Gptline__DocMeta *m = NULL;
            if (!shard_tokens(r, i, &t, NULL))
                for (uint64_t j = 0; j < t.n; j++)
                    (void)shard_token_at(&t, j);
            if (!shard_doc_meta(r, i, &m, NULL))
                gptline__doc_meta__free_unpacked(m, NULL);
        }
        shard_close(&r);
    }
    unlink(path);
    return 0;
}

/* Seeds: a well-formed shard of 1-3 documents in the input layout above. */
static void put_field(uint8_t **p, const void *data, size_t len)
{
    (*p)[0] = (uint8_t)len;
    (*p)[1] = (uint8_t)(len >> 8);
    memcpy(*p + 2, data, len);
    *p += 2 + len;
}

uint8_t *gl_fuzz_seed(size_t i, size_t *len)
{
    if (i >= 3)
        return NULL;
    size_t ndocs = i + 1;
    uint8_t magic[SHARD_MAGIC_LEN] = {0};
    memcpy(magic, SHARD_MAGIC, sizeof SHARD_MAGIC);
    uint32_t ver = SHARD_FORMAT_VERSION;
    memcpy(magic + 8, &ver, 4);
    /* each document: 4 two-byte tokens and end-of-text (256), one chunk */
    uint64_t off[4] = {0}, cs[2] = {0, 5 * ndocs};
    uint16_t chunk[15];
    for (size_t d = 0; d < ndocs; d++) {
        uint16_t doc[5] = {7, 3, 4, 5, 256};
        memcpy(chunk + 5 * d, doc, sizeof doc);
        off[d + 1] = off[d] + 4;
    }
    chunk[0] = (uint16_t)(10 * ndocs - 1); /* the chunk's length byte: 1 + x % 64 */
    Gptline__ShardManifest m = GPTLINE__SHARD_MANIFEST__INIT;
    Gptline__TokenizerId tok = GPTLINE__TOKENIZER_ID__INIT;
    tok.name = "bytes";
    tok.vocab_size = 257;
    tok.eot_id = 256;
    m.format_version = SHARD_FORMAT_VERSION;
    m.kind = GPTLINE__RECORD_KIND__DOCUMENTS;
    m.tokenizer = &tok;
    m.token_width = 2;
    m.doc_count = ndocs;
    m.token_count = off[ndocs];
    m.chunk_count = 1;
    size_t ml = gptline__shard_manifest__get_packed_size(&m);
    uint8_t *packed = malloc(ml);
    gptline__shard_manifest__pack(&m, packed);
    size_t total = 8 + sizeof magic + ml + (ndocs + 1) * 8 + sizeof cs + 10 * ndocs;
    uint8_t *b = malloc(total), *p = b;
    put_field(&p, magic, sizeof magic);
    put_field(&p, packed, ml);
    put_field(&p, off, (ndocs + 1) * 8);
    put_field(&p, cs, sizeof cs);
    memcpy(p, chunk, 10 * ndocs);
    free(packed);
    *len = total;
    return b;
}
