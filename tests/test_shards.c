/* test_shards.c — the shard writer, reader, dataset and sampler against a
 * naive model of the data: round trips, map growth, bad files (truncated,
 * wrong version, flipped bytes, not a shard), a writer killed mid-write,
 * readers running while another shard is written, and the sampler's
 * determinism and rank-disjointness. */
#include "shards/shards.h"
#include "tests/shard_util.h"
#include "tests/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#define EOT_OF(vocab) ((vocab) - 1)

static char *path_in(const char *name)
{
    return gl_path_join(tap_tmpdir(), name);
}

static shard_writer_opts_t opts_for(uint32_t vocab)
{
    shard_writer_opts_t o = {0};
    o.tokenizer_name = "test";
    o.tokenizer_hash = 0x1234;
    o.vocab_size = vocab;
    o.eot_id = EOT_OF(vocab);
    o.command = "test";
    return o;
}

/* Writes docs [first, first+n) of the synthetic model into path. */
static int write_shard(const char *path, uint64_t seed, uint64_t first, uint64_t n, uint32_t vocab,
                       uint32_t max_len, shard_writer_opts_t *opt)
{
    gl_err_t err = {0};
    shard_writer_opts_t o = opt ? *opt : opts_for(vocab);
    shard_writer_t *w = shard_writer_create(path, &o, &err);
    if (!w) {
        tap_diag("create %s: %s", path, err.msg);
        return -1;
    }
    uint32_t *buf = malloc((max_len + 1) * sizeof *buf);
    char title[64];
    for (uint64_t d = first; d < first + n; d++) {
        uint32_t len = tu_doc_len(seed, d, max_len);
        for (uint32_t j = 0; j < len; j++)
            buf[j] = tu_token(seed, d, j, vocab);
        Gptline__DocMeta m = GPTLINE__DOC_META__INIT;
        snprintf(title, sizeof title, "doc %llu", (unsigned long long)d);
        m.source = (d & 1) ? GPTLINE__SOURCE_KIND__WIKI : GPTLINE__SOURCE_KIND__CRAWL;
        m.title = title;
        m.url = "https://example.org/x";
        m.byte_length = len * 3;
        if (shard_writer_add(w, buf, len, &m.base, &err)) {
            tap_diag("add: %s", err.msg);
            free(buf);
            shard_writer_abort(&w);
            return -1;
        }
    }
    free(buf);
    shard_writer_add_input(w, "synthetic");
    if (shard_writer_seal(&w, &err)) {
        tap_diag("seal: %s", err.msg);
        return -1;
    }
    return 0;
}

/* Checks every document of a shard against the model. */
static int check_shard(const shard_reader_t *r, uint64_t seed, uint64_t first, uint32_t vocab, uint32_t max_len)
{
    for (uint64_t i = 0; i < shard_doc_count(r); i++) {
        shard_tokens_t t;
        if (shard_tokens(r, i, &t, NULL))
            return 0;
        uint64_t d = first + i;
        if (t.n != tu_doc_len(seed, d, max_len))
            return 0;
        for (uint64_t j = 0; j < t.n; j++)
            if (shard_token_at(&t, j) != tu_token(seed, d, j, vocab))
                return 0;
        Gptline__DocMeta *m = NULL;
        if (shard_doc_meta(r, i, &m, NULL))
            return 0;
        char title[64];
        snprintf(title, sizeof title, "doc %llu", (unsigned long long)d);
        int good = !strcmp(m->title, title) && m->byte_length == t.n * 3 &&
                   m->source == ((d & 1) ? GPTLINE__SOURCE_KIND__WIKI : GPTLINE__SOURCE_KIND__CRAWL);
        gptline__doc_meta__free_unpacked(m, NULL);
        if (!good)
            return 0;
    }
    return 1;
}

static void test_round_trip(void)
{
    gl_err_t err = {0};
    const uint32_t vocabs[] = {257, 50257, 100277, 200019};
    for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++) {
        uint32_t vocab = vocabs[v];
        char name[64];
        snprintf(name, sizeof name, "rt-%u.mdb", vocab);
        char *p = path_in(name);
        ok(write_shard(p, 7, 0, 300, vocab, 2000, NULL) == 0, "vocab %u: write 300 documents", vocab);
        shard_reader_t *r = shard_open(p, 0, &err);
        ok(r != NULL, "vocab %u: open: %s", vocab, r ? "ok" : err.msg);
        if (!r) {
            free(p);
            continue;
        }
        const Gptline__ShardManifest *m = shard_manifest(r);
        is_int(m->token_width, vocab <= 65536 ? 2 : 4, "vocab %u: token width", vocab);
        is_int(shard_doc_count(r), 300, "vocab %u: document count", vocab);
        uint64_t want = 0, docs_odd = 0;
        for (uint64_t d = 0; d < 300; d++) {
            want += tu_doc_len(7, d, 2000);
            docs_odd += d & 1;
        }
        is_int(shard_token_count(r), want, "vocab %u: token count", vocab);
        ok(check_shard(r, 7, 0, vocab, 2000), "vocab %u: every token and metadata record read back", vocab);
        ok(shard_verify(r, &err) == 0, "vocab %u: verify passes", vocab);
        is_str(m->tokenizer->name, "test", "tokenizer name in manifest");
        is_int(m->tokenizer->eot_id, vocab - 1, "end-of-text id in manifest");
        int found = 0;
        for (size_t k = 0; k < m->n_sources; k++)
            if (m->sources[k]->source == GPTLINE__SOURCE_KIND__WIKI && m->sources[k]->docs == docs_odd)
                found = 1;
        ok(found, "per-source document counts in manifest");
        ok(m->provenance && m->provenance->n_inputs == 1 && !strcmp(m->provenance->inputs[0], "synthetic"),
           "provenance records the input");
        shard_tokens_t t;
        ok(shard_tokens(r, 300, &t, &err) == GL_ERANGE, "document index past the end is GL_ERANGE");
        shard_close(&r);
        ok(r == NULL, "close nulls the pointer");
        shard_close(&r); /* NULL-safe */
        free(p);
    }

    /* Tokens outside the vocabulary are refused; earlier documents kept. */
    char *p = path_in("range.mdb");
    shard_writer_opts_t o = opts_for(257);
    shard_writer_t *w = shard_writer_create(p, &o, &err);
    uint32_t good[3] = {1, 2, 3}, bad[2] = {5, 257};
    ok(shard_writer_add(w, good, 3, NULL, &err) == 0, "add a valid document");
    ok(shard_writer_add(w, bad, 2, NULL, &err) == GL_ERANGE && strstr(err.msg, "257"),
       "token outside the vocabulary refused: %s", err.msg);
    ok(shard_writer_seal(&w, &err) == 0 && w == NULL, "seal after a refused document");
    shard_reader_t *r = shard_open(p, 0, &err);
    ok(r && shard_doc_count(r) == 1, "the accepted document is kept");
    shard_close(&r);
    ok(shard_writer_create(p, &o, &err) == NULL && err.code == GL_EEXIST, "refuses to overwrite a sealed shard");
    free(p);
}

static void test_map_growth(void)
{
    gl_err_t err = {0};
    char *p = path_in("grow.mdb");
    shard_writer_opts_t o = opts_for(50257);
    o.map_size = 64 << 10;     /* 64 KiB: far too small */
    o.chunk_bytes = 256 << 10; /* many chunks, each replayed after a growth */
    shard_writer_t *w = shard_writer_create(p, &o, &err);
    ok(w != NULL, "writer with a 64 KiB map");
    uint32_t *buf = malloc(5000 * sizeof *buf);
    int rc = 0;
    for (uint64_t d = 0; d < 2000 && !rc; d++) {
        uint32_t len = tu_doc_len(3, d, 5000);
        for (uint32_t j = 0; j < len; j++)
            buf[j] = tu_token(3, d, j, 50257);
        Gptline__DocMeta m = GPTLINE__DOC_META__INIT;
        char title[64];
        snprintf(title, sizeof title, "doc %llu", (unsigned long long)d);
        m.source = (d & 1) ? GPTLINE__SOURCE_KIND__WIKI : GPTLINE__SOURCE_KIND__CRAWL;
        m.title = title;
        m.url = "https://example.org/x";
        m.byte_length = len * 3;
        rc = shard_writer_add(w, buf, len, &m.base, &err);
    }
    free(buf);
    ok(rc == 0, "10 MB written through a 64 KiB initial map");
    unsigned growths = shard_writer_map_growths(w);
    ok(growths >= 5, "map grew %u times", growths);
    ok(shard_writer_seal(&w, &err) == 0, "seal");
    shard_reader_t *r = shard_open(p, 0, &err);
    ok(r && shard_doc_count(r) == 2000 && check_shard(r, 3, 0, 50257, 5000),
       "every document survives the replayed batches");
    ok(r && shard_verify(r, &err) == 0, "verify after growth");
    shard_close(&r);
    free(p);
}

/* Rewrites the magic record's version with LMDB directly. */
static int set_version(const char *path, uint32_t version)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 4);
    int rc = mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOLOCK, 0644);
    if (!rc)
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (!rc && !(rc = mdb_dbi_open(txn, "meta", 0, &dbi))) {
        uint8_t magic[12] = "GLSHARD";
        memcpy(magic + 8, &version, 4);
        MDB_val k = {5, "magic"}, v = {12, magic};
        rc = mdb_put(txn, dbi, &k, &v, 0);
        rc = rc ? rc : mdb_txn_commit(txn);
    }
    mdb_env_close(env);
    return rc;
}

static int copy_file(const char *from, const char *to, off_t truncate_to)
{
    char *data;
    size_t len;
    if (gl_read_file(from, (size_t)1 << 30, &data, &len, NULL))
        return -1;
    if (truncate_to >= 0 && (size_t)truncate_to < len)
        len = (size_t)truncate_to;
    int rc = gl_write_file_atomic(to, data, len, NULL);
    free(data);
    return rc;
}

static void test_bad_files(void)
{
    gl_err_t err = {0};
    char *good = path_in("good.mdb");
    write_shard(good, 11, 0, 400, 50257, 3000, NULL);
    struct stat st;
    stat(good, &st);

    /* wrong version */
    char *wv = path_in("wrong-version.mdb");
    copy_file(good, wv, -1);
    ok(set_version(wv, 99) == 0, "rewrote the format version to 99");
    shard_reader_t *r = shard_open(wv, 0, &err);
    ok(r == NULL && err.code == GL_EVERSION, "wrong version refused");
    ok(strstr(err.msg, "version 99") && strstr(err.msg, "wrong-version.mdb"), "message names file and version: %s",
       err.msg);

    /* a newer format version in the trailer */
    {
        char *tv = path_in("trailer-version.mdb");
        char *data;
        size_t len;
        gl_read_file(good, (size_t)1 << 30, &data, &len, NULL);
        uint8_t *tr = (uint8_t *)data + len - SHARD_TRAILER_LEN;
        uint32_t v2 = 2;
        memcpy(tr + 8, &v2, 4);
        uint64_t h = XXH3_64bits(tr, 32);
        memcpy(tr + 32, &h, 8);
        gl_write_file_atomic(tv, data, len, NULL);
        free(data);
        r = shard_open(tv, 0, &err);
        ok(r == NULL && err.code == GL_EVERSION && strstr(err.msg, "version 2"), "trailer of version 2 refused: %s",
           err.msg);
        free(tv);
    }

    /* truncated at several points */
    off_t cuts[] = {st.st_size / 2, st.st_size - 4096, 8192, 100, 0};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char name[64];
        snprintf(name, sizeof name, "trunc-%zu.mdb", i);
        char *tp = path_in(name);
        copy_file(good, tp, cuts[i]);
        r = shard_open(tp, 0, &err);
        ok(r == NULL && (err.code == GL_ECORRUPT) && strstr(err.msg, name),
           "truncated to %lld bytes: %s", (long long)cuts[i], err.msg);
        shard_close(&r);
        free(tp);
    }

    /* not a shard: text, and an LMDB file without our records */
    char *junk = path_in("junk.mdb");
    char text[20000];
    memset(text, 'x', sizeof text);
    gl_write_file_atomic(junk, text, sizeof text, NULL);
    r = shard_open(junk, 0, &err);
    ok(r == NULL && err.code == GL_ECORRUPT, "a text file is not a shard: %s", err.msg);
    char *plain = path_in("plain.mdb");
    {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        mdb_env_create(&env);
        mdb_env_open(env, plain, MDB_NOSUBDIR | MDB_NOLOCK, 0644);
        mdb_txn_begin(env, NULL, 0, &txn);
        mdb_dbi_open(txn, NULL, 0, &dbi);
        MDB_val k = {1, "k"}, v = {1, "v"};
        mdb_put(txn, dbi, &k, &v, 0);
        mdb_txn_commit(txn);
        mdb_env_close(env);
    }
    r = shard_open(plain, 0, &err);
    ok(r == NULL && err.code == GL_ECORRUPT, "a foreign LMDB file is not a shard: %s", err.msg);
    char *missing = path_in("missing.mdb");
    r = shard_open(missing, 0, &err);
    ok(r == NULL && err.code == GL_ENOTFOUND, "missing file: %s", err.msg);

    /* flipped bytes inside token data: find a token run in the file */
    char *data;
    size_t len;
    gl_read_file(good, (size_t)1 << 30, &data, &len, NULL);
    uint16_t pat[8];
    uint64_t d = 5;
    while (tu_doc_len(11, d, 3000) < 100)
        d++;
    for (int j = 0; j < 8; j++)
        pat[j] = (uint16_t)tu_token(11, d, 40 + (uint64_t)j, 50257);
    uint8_t *at = memmem(data, len, pat, sizeof pat);
    ok(at != NULL, "found document %llu's tokens in the file", (unsigned long long)d);
    if (at) {
        at[3] ^= 0x5a;
        char *fp = path_in("flipped.mdb");
        gl_write_file_atomic(fp, data, len, NULL);
        r = shard_open(fp, 0, &err);
        ok(r != NULL, "a shard with flipped token bytes still opens");
        ok(r && shard_verify(r, &err) == GL_ECORRUPT && strstr(err.msg, "checksum") && strstr(err.msg, "flipped.mdb"),
           "verify catches the flipped bytes: %s", err.msg);
        shard_close(&r);
        free(fp);
    }
    /* flips at many places: never a crash, open or verify reports it */
    uint64_t caught = 0, tries = 0;
    for (size_t off = 3 * 4096 + 17; off < len; off += len / 23 + 1) {
        char *cp = malloc(len);
        memcpy(cp, data, len);
        cp[off] ^= 0xff;
        char *fp = path_in("flip-many.mdb");
        gl_write_file_atomic(fp, cp, len, NULL);
        free(cp);
        r = shard_open(fp, SHARD_OPEN_CHECKSUM, &err);
        tries++;
        if (!r || shard_verify(r, &err))
            caught++;
        shard_close(&r);
        free(fp);
    }
    ok(caught == tries, "flips across the file: %llu of %llu detected, none crashed", (unsigned long long)caught,
       (unsigned long long)tries);
    free(data);
    free(good);
    free(wv);
    free(junk);
    free(plain);
    free(missing);
}

static void test_dataset_and_sampler(void)
{
    gl_err_t err = {0};
    char *dir = path_in("ds");
    gl_mkdir_p(dir, NULL);
    const uint32_t vocab = 1000;
    const uint64_t seed = 5, per = 150, nshards = 7;
    const uint32_t max_len = 700;
    for (uint64_t s = 0; s < nshards; s++) {
        char name[64];
        snprintf(name, sizeof name, "part-%03llu.mdb", (unsigned long long)s);
        char *p = gl_path_join(dir, name);
        /* shard 3 is empty: the stream must skip it */
        write_shard(p, seed, s * per, s == 3 ? 0 : per, vocab, max_len, NULL);
        free(p);
    }
    shard_dataset_t *d = shard_dataset_open(dir, 0, &err);
    ok(d != NULL, "open dataset of %llu shards: %s", (unsigned long long)nshards, d ? "ok" : err.msg);
    if (!d)
        return;
    /* The naive model of the stream: docs of every shard except the empty one. */
    uint64_t ndocs = 0, ntok = 0;
    uint64_t *docs = malloc(nshards * per * sizeof *docs);
    for (uint64_t s = 0; s < nshards; s++)
        for (uint64_t i = 0; s != 3 && i < per; i++) {
            docs[ndocs++] = s * per + i;
            ntok += tu_doc_len(seed, s * per + i, max_len);
        }
    is_int(shard_dataset_docs(d), ndocs, "global document count");
    is_int(shard_dataset_tokens(d), ntok, "global token count");
    uint64_t L = shard_dataset_stream_len(d);
    is_int(L, ntok + ndocs, "stream = tokens + one end-of-text per document");
    int32_t *stream = malloc(L * sizeof *stream);
    uint64_t n = 0;
    for (uint64_t k = 0; k < ndocs; k++) {
        uint32_t len = tu_doc_len(seed, docs[k], max_len);
        for (uint32_t j = 0; j < len; j++)
            stream[n++] = (int32_t)tu_token(seed, docs[k], j, vocab);
        stream[n++] = (int32_t)EOT_OF(vocab);
    }
    int32_t *buf = malloc(L * sizeof *buf);
    ok(shard_dataset_read(d, 0, L, buf, &err) == 0 && !memcmp(buf, stream, L * sizeof *buf),
       "the whole stream read at once equals the model");
    int good = 1;
    for (int k = 0; k < 2000 && good; k++) {
        uint64_t pos = tu_mix((uint64_t)k) % L, len = tu_mix((uint64_t)k + 99) % 3000;
        if (len > L - pos)
            len = L - pos;
        good = shard_dataset_read(d, pos, len, buf, &err) == 0 && !memcmp(buf, stream + pos, len * sizeof *buf);
    }
    ok(good, "2000 random stream ranges equal the model");
    ok(shard_dataset_read(d, L - 1, 2, buf, &err) == GL_ERANGE, "reading past the stream's end is GL_ERANGE");
    size_t si;
    uint64_t li;
    ok(shard_dataset_locate(d, per * 3, &si, &li, &err) == 0 && si == 4 && li == 0,
       "global document index skips the empty shard");

    /* sampler: windows equal the model; determinism; rank-disjointness */
    const uint32_t B = 3, T = 37;
    shard_sampler_t a, b;
    shard_sampler_init(&a, d, B, T, 42, 0, 1, 1, &err);
    shard_sampler_init(&b, d, B, T, 42, 0, 1, 1, &err);
    uint64_t W = (L - 1) / T;
    is_int(a.windows, W, "window count (L-1)/T");
    int32_t *x = malloc((size_t)B * (T + 1) * sizeof *x), *y = malloc((size_t)B * (T + 1) * sizeof *y);
    int same = 1, match = 1;
    for (int step = 0; step < 50; step++) {
        uint64_t e = a.epoch, k0 = a.next;
        shard_sampler_next(&a, x, &err);
        shard_sampler_next(&b, y, &err);
        same &= !memcmp(x, y, (size_t)B * (T + 1) * sizeof *x);
        (void)e;
        (void)k0;
    }
    ok(same, "same seed, same batches");
    /* every window yielded is a slice of the stream at a multiple of T */
    shard_sampler_init(&a, d, B, T, 42, 0, 1, 1, &err);
    for (int step = 0; step < 50 && match; step++) {
        uint64_t ids[3];
        for (uint32_t i = 0; i < B; i++) {
            uint64_t e = a.epoch, k = a.next + i;
            if (k >= a.per_rank) {
                e++;
                k -= a.per_rank;
            }
            ids[i] = shard_sampler_window(&b, e, k);
        }
        shard_sampler_next(&a, x, &err);
        for (uint32_t i = 0; i < B; i++)
            match &= !memcmp(x + i * (T + 1), stream + ids[i] * T, (T + 1) * sizeof *x);
    }
    ok(match, "each window is stream[w*T, w*T+T+1) of its window id");
    shard_sampler_init(&b, d, B, T, 43, 0, 1, 1, &err);
    int differ = 0;
    for (uint64_t k = 0; k < 20; k++)
        differ |= shard_sampler_window(&a, 0, k) != shard_sampler_window(&b, 0, k);
    ok(differ, "another seed, another order");

    /* one epoch is a permutation; ranks are disjoint and cover all but W mod world */
    for (uint32_t world = 1; world <= 5; world++) {
        uint8_t *seen = calloc(W, 1);
        int disjoint = 1;
        uint64_t total = 0;
        for (uint32_t rank = 0; rank < world; rank++) {
            shard_sampler_t s;
            shard_sampler_init(&s, d, B, T, 9, rank, world, 1, &err);
            for (uint64_t k = 0; k < s.per_rank; k++) {
                uint64_t w = shard_sampler_window(&s, 3, k);
                if (w >= W || seen[w])
                    disjoint = 0;
                else
                    seen[w] = 1;
                total++;
            }
        }
        ok(disjoint && total == W - W % world, "world %u: ranks' windows are disjoint, %llu of %llu covered", world,
           (unsigned long long)total, (unsigned long long)W);
        free(seen);
    }
    shard_sampler_t s0, s1;
    shard_sampler_init(&s0, d, B, T, 9, 0, 1, 1, &err);
    shard_sampler_init(&s1, d, B, T, 9, 0, 1, 1, &err);
    int epochs_differ = 0;
    for (uint64_t k = 0; k < 20; k++)
        epochs_differ |= shard_sampler_window(&s0, 0, k) != shard_sampler_window(&s1, 1, k);
    ok(epochs_differ, "each epoch has its own order");

    /* resume: seek to a saved position gives the same batches */
    shard_sampler_init(&a, d, B, T, 77, 1, 2, 1, &err);
    for (int i = 0; i < 30; i++)
        shard_sampler_next(&a, x, &err);
    uint64_t ep = a.epoch, nx = a.next;
    shard_sampler_next(&a, x, &err);
    shard_sampler_init(&b, d, B, T, 77, 1, 2, 1, &err);
    shard_sampler_seek(&b, ep, nx);
    shard_sampler_next(&b, y, &err);
    ok(!memcmp(x, y, (size_t)B * (T + 1) * sizeof *x), "seek to (epoch, step) resumes the same batches");

    /* unshuffled: windows in stream order */
    shard_sampler_init(&a, d, 1, T, 1, 0, 1, 0, &err);
    int ordered = 1;
    for (uint64_t k = 0; k < 10; k++) {
        shard_sampler_next(&a, x, &err);
        ordered &= !memcmp(x, stream + k * T, (T + 1) * sizeof *x);
    }
    ok(ordered, "no-shuffle sampler walks the stream in order");
    ok(shard_sampler_init(&a, d, 1, (uint32_t)L, 1, 0, 1, 1, &err) == GL_ERANGE, "T longer than the stream refused");

    free(x);
    free(y);
    free(buf);
    free(stream);
    free(docs);
    shard_dataset_close(&d);

    /* mismatched tokenizer in one folder */
    char *odd = gl_path_join(dir, "zz-other.mdb");
    shard_writer_opts_t o = opts_for(1000);
    o.tokenizer_hash = 0x9999;
    write_shard(odd, seed, 0, 3, vocab, max_len, &o);
    d = shard_dataset_open(dir, 0, &err);
    ok(d == NULL && err.code == GL_EMISMATCH && strstr(err.msg, "zz-other.mdb"), "mixed tokenizers refused: %s",
       err.msg);
    unlink(odd);
    free(odd);
    free(dir);
}

/* A writer killed with SIGKILL mid-write leaves no sealed shard, and the
 * next run replaces its temporary file. */
static void test_killed_writer(void)
{
    gl_err_t err = {0};
    char *dir = path_in("killed");
    gl_mkdir_p(dir, NULL);
    char *sealed = gl_path_join(dir, "a.mdb");
    write_shard(sealed, 1, 0, 50, 300, 500, NULL);
    char *p = gl_path_join(dir, "b.mdb");
    char *tmp = gl_path_join(dir, "b.mdb" SHARD_TMP_SUFFIX);
    pid_t pid = fork();
    if (pid == 0) {
        shard_writer_opts_t o = opts_for(300);
        o.chunk_bytes = 1 << 16;
        shard_writer_t *w = shard_writer_create(p, &o, NULL);
        uint32_t buf[4096];
        for (uint64_t d = 0;; d++) {
            for (int j = 0; j < 4096; j++)
                buf[j] = tu_token(2, d, (uint64_t)j, 300);
            shard_writer_add(w, buf, 4096, NULL, NULL);
        }
    }
    struct stat st;
    for (int i = 0; i < 1000; i++) {
        if (stat(tmp, &st) == 0 && st.st_size > (4 << 20))
            break;
        usleep(10000);
    }
    ok(stat(tmp, &st) == 0 && st.st_size > (4 << 20), "writer is writing (%lld bytes)", (long long)st.st_size);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "writer killed with SIGKILL");
    ok(stat(p, &st) < 0 && errno == ENOENT, "no sealed shard under the final name");
    shard_dataset_t *d = shard_dataset_open(dir, 0, &err);
    ok(d && shard_dataset_shard_count(d) == 1 && shard_dataset_unsealed(d) == 1,
       "dataset sees the sealed shard and skips the unsealed one");
    ok(d && shard_dataset_docs(d) == 50, "only the sealed shard's documents");
    shard_dataset_close(&d);
    ok(write_shard(p, 4, 0, 20, 300, 500, NULL) == 0, "next run writes the same shard name");
    ok(stat(tmp, &st) < 0, "stale temporary file gone");
    d = shard_dataset_open(dir, 0, &err);
    ok(d && shard_dataset_shard_count(d) == 2 && shard_dataset_unsealed(d) == 0 && shard_dataset_docs(d) == 70,
       "dataset now has both shards");
    shard_reader_t *r = shard_open(p, 0, &err);
    ok(r && check_shard(r, 4, 0, 300, 500) && shard_verify(r, &err) == 0, "the rewritten shard is whole");
    shard_close(&r);
    shard_dataset_close(&d);

    /* a live writer's name cannot be taken */
    char *c = gl_path_join(dir, "c.mdb");
    shard_writer_opts_t o = opts_for(300);
    shard_writer_t *w1 = shard_writer_create(c, &o, &err);
    shard_writer_t *w2 = shard_writer_create(c, &o, &err);
    ok(w1 && !w2 && err.code == GL_EEXIST, "second writer of a live shard refused: %s", err.msg);
    shard_writer_abort(&w1);
    ok(stat(c, &st) < 0, "aborted shard leaves nothing");
    free(c);
    free(tmp);
    free(p);
    free(sealed);
    free(dir);
}

/* Readers work while another process writes a shard into the same folder. */
static void test_read_while_writing(void)
{
    gl_err_t err = {0};
    char *dir = path_in("live");
    gl_mkdir_p(dir, NULL);
    char *a = gl_path_join(dir, "a.mdb"), *b = gl_path_join(dir, "b.mdb");
    write_shard(a, 21, 0, 200, 5000, 800, NULL);
    int go[2], started[2];
    if (pipe(go) || pipe(started))
        return;
    pid_t pid = fork();
    if (pid == 0) {
        shard_writer_opts_t o = opts_for(5000);
        o.chunk_bytes = 1 << 14;
        shard_writer_t *w = shard_writer_create(b, &o, NULL);
        uint32_t buf[800];
        for (uint64_t d = 200; d < 300; d++) { /* first half, committed in batches */
            uint32_t len = tu_doc_len(21, d, 800);
            for (uint32_t j = 0; j < len; j++)
                buf[j] = tu_token(21, d, j, 5000);
            Gptline__DocMeta m = GPTLINE__DOC_META__INIT;
            char title[64];
            snprintf(title, sizeof title, "doc %llu", (unsigned long long)d);
            m.source = (d & 1) ? GPTLINE__SOURCE_KIND__WIKI : GPTLINE__SOURCE_KIND__CRAWL;
            m.title = title;
            m.url = "https://example.org/x";
            m.byte_length = len * 3;
            shard_writer_add(w, buf, len, &m.base, NULL);
        }
        if (write(started[1], "s", 1) != 1)
            _exit(1);
        char ch;
        if (read(go[0], &ch, 1) != 1)
            _exit(1);
        _exit(shard_writer_seal(&w, NULL) ? 1 : 0);
    }
    char ch;
    ok(read(started[0], &ch, 1) == 1, "writer has written half of its shard");
    shard_dataset_t *d = shard_dataset_open(dir, 0, &err);
    ok(d && shard_dataset_shard_count(d) == 1 && shard_dataset_unsealed(d) == 1,
       "while it writes, the dataset has only the sealed shard");
    ok(d && check_shard(shard_dataset_shard(d, 0), 21, 0, 5000, 800), "and reads it whole");
    shard_reader_t *r = shard_open(a, 0, &err);
    ok(r && shard_verify(r, &err) == 0, "a reader verifies the sealed shard meanwhile");
    if (write(go[1], "g", 1) != 1)
        tap_diag("pipe write failed");
    int status;
    waitpid(pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer sealed its shard");
    ok(d && check_shard(shard_dataset_shard(d, 0), 21, 0, 5000, 800), "open readers unaffected by the new shard");
    shard_close(&r);
    shard_dataset_close(&d);
    d = shard_dataset_open(dir, 0, &err);
    ok(d && shard_dataset_shard_count(d) == 2 && shard_dataset_docs(d) == 300 &&
           check_shard(shard_dataset_shard(d, 1), 21, 200, 5000, 800),
       "reopened dataset includes the new shard");
    shard_dataset_close(&d);
    free(a);
    free(b);
    free(dir);
}

/* The later stages' records share the store with their own record kind. */
static void test_record_kinds(void)
{
    gl_err_t err = {0};
    char *p = path_in("sft.mdb");
    shard_writer_opts_t o = opts_for(300);
    o.kind = GPTLINE__RECORD_KIND__SFT;
    shard_writer_t *w = shard_writer_create(p, &o, &err);
    Gptline__SftConversation c = GPTLINE__SFT_CONVERSATION__INIT;
    Gptline__Turn t1 = GPTLINE__TURN__INIT, t2 = GPTLINE__TURN__INIT, *turns[2] = {&t1, &t2};
    Gptline__Span span = GPTLINE__SPAN__INIT, *spans[1] = {&span};
    t1.role = GPTLINE__ROLE__USER;
    t1.text = "hi";
    t2.role = GPTLINE__ROLE__ASSISTANT;
    t2.text = "hello";
    c.id = "conv-1";
    c.n_turns = 2;
    c.turns = turns;
    span.start = 2;
    span.end = 8;
    c.n_loss_spans = 1;
    c.loss_spans = spans;
    uint32_t toks[8] = {'h', 'i', 'h', 'e', 'l', 'l', 'o', 299};
    ok(w && shard_writer_add(w, toks, 8, &c.base, &err) == 0 && shard_writer_seal(&w, &err) == 0,
       "write an SFT shard");
    shard_reader_t *r = shard_open(p, 0, &err);
    ok(r && shard_manifest(r)->kind == GPTLINE__RECORD_KIND__SFT, "manifest says sft");
    const uint8_t *d = NULL;
    size_t n = 0;
    Gptline__SftConversation *back = NULL;
    if (r && !shard_meta(r, 0, &d, &n, &err))
        back = gptline__sft_conversation__unpack(NULL, n, d);
    ok(back && back->n_turns == 2 && !strcmp(back->turns[1]->text, "hello") && back->n_loss_spans == 1 &&
           back->loss_spans[0]->end == 8,
       "the conversation record reads back");
    Gptline__DocMeta *m = NULL;
    ok(r && shard_doc_meta(r, 0, &m, &err) == GL_EMISMATCH, "asking an sft shard for DocMeta is refused");
    if (back)
        gptline__sft_conversation__free_unpacked(back, NULL);
    shard_close(&r);
    free(p);
}

int main(void)
{
    test_record_kinds();
    test_round_trip();
    test_map_growth();
    test_bad_files();
    test_dataset_and_sampler();
    test_killed_writer();
    test_read_while_writing();
    return tap_done();
}
