/* dedup.c — the whole-dataset dedup pass (`gptline ingest dedup DIR`).
 *
 * Workers dedup only within an input; across inputs and ranks the
 * duplicates are found here, once every worker is done, from the
 * signature files they wrote (sigs/in-K.sig: per kept document its
 * sequence number, exact text hash and 112-value MinHash). Only inputs
 * with a done-marker count. Documents are numbered in (input, sequence)
 * order; exact hashes and each of the 14 band keys (8 rows hashed) are
 * sorted and equal neighbours joined in a union-find whose root is the
 * cluster's smallest number, so the survivor of a cluster is its first
 * document in input order, whatever the ranks were. A removed document
 * counts as exact when its text hash equals the survivor's, else near.
 *
 * The result is applied by compacting: each shard holding removed
 * documents is rewritten without them (under .compact/, then renamed over
 * the old one, so readers see either the old or the new shard), and
 * dedup/removed.json lists what was removed. Running it again finds the
 * same clusters, whose removed members are already gone: it is
 * idempotent. Memory: 8 + 8 + 14 x 8 bytes per document.
 */
#include "ingest/internal.h"
#include "shards/shards.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

typedef struct {
    uint64_t input, seq, exact;
    uint64_t band[INGEST_MH_BANDS];
} dsig_t;

static dsig_t *g_sigs;
static int g_key; /* -1: exact, else band */

static uint64_t key_of(const dsig_t *s) { return g_key < 0 ? s->exact : s->band[g_key]; }

static int cmp_idx(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint64_t kx = key_of(&g_sigs[x]), ky = key_of(&g_sigs[y]);
    if (kx != ky)
        return kx < ky ? -1 : 1;
    return x < y ? -1 : x > y;
}

static uint32_t find(uint32_t *par, uint32_t x)
{
    while (par[x] != x) {
        par[x] = par[par[x]];
        x = par[x];
    }
    return x;
}

static void unite(uint32_t *par, uint32_t a, uint32_t b)
{
    a = find(par, a);
    b = find(par, b);
    if (a == b)
        return;
    if (a < b)
        par[b] = a;
    else
        par[a] = b;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Loads sigs/in-K.sig for every K with a done-marker, in K order. */
static int load(const char *dir, dsig_t **out, size_t *n_out, gl_err_t *err)
{
    char *sd = gl_path_join(dir, "done");
    DIR *dh = opendir(sd);
    free(sd);
    uint64_t *ks = NULL;
    size_t nk = 0;
    if (dh) {
        struct dirent *e;
        while ((e = readdir(dh))) {
            unsigned long long k;
            char tail[16];
            if (sscanf(e->d_name, "in-%llu%15s", &k, tail) == 2 && !strcmp(tail, ".json")) {
                ks = gl_xrealloc(ks, (nk + 1) * sizeof *ks);
                ks[nk++] = k;
            }
        }
        closedir(dh);
    }
    qsort(ks, nk, sizeof *ks, cmp_u64);
    dsig_t *v = NULL;
    size_t n = 0, cap = 0;
    int rc = GL_OK;
    for (size_t i = 0; i < nk; i++) {
        char name[64];
        snprintf(name, sizeof name, "sigs/in-%06llu.sig", (unsigned long long)ks[i]);
        char *p = gl_path_join(dir, name);
        char *data = NULL;
        size_t len = 0;
        rc = gl_read_file(p, (size_t)1 << 40, &data, &len, err);
        if (rc) {
            free(p);
            goto out;
        }
        const size_t rec = 16 + 4 * INGEST_MH_PERM;
        uint64_t h, cnt = 0, idx;
        uint32_t ver, perm;
        if (len < 40 || memcmp(data, "GLMHSIG1", 8)) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: not a signature file", p);
        } else if (memcpy(&h, data + len - 8, 8), h != XXH3_64bits(data, len - 8)) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: checksum mismatch", p);
        } else {
            memcpy(&ver, data + 8, 4);
            memcpy(&perm, data + 12, 4);
            memcpy(&idx, data + 16, 8);
            memcpy(&cnt, data + 24, 8);
            if (ver != 1 || perm != INGEST_MH_PERM)
                rc = gl_err_set(err, GL_EVERSION, "%s: signature version %u / %u rows not readable", p, ver, perm);
            else if (cnt > (len - 40) / rec || 32 + cnt * rec + 8 != len)
                rc = gl_err_set(err, GL_ECORRUPT, "%s: size does not match its %llu records", p,
                                (unsigned long long)cnt);
        }
        if (!rc) {
            for (uint64_t r = 0; r < cnt; r++) {
                const char *q = data + 32 + r * rec;
                if (n == cap) {
                    cap = cap ? cap * 2 : 1024;
                    v = gl_xrealloc(v, cap * sizeof *v);
                }
                dsig_t *s = &v[n++];
                s->input = ks[i];
                memcpy(&s->seq, q, 8);
                memcpy(&s->exact, q + 8, 8);
                for (int b = 0; b < INGEST_MH_BANDS; b++)
                    s->band[b] = XXH3_64bits_withSeed(q + 16 + 4 * INGEST_MH_ROWS * b, 4 * INGEST_MH_ROWS, (uint64_t)b);
            }
        }
        free(data);
        free(p);
        if (rc)
            goto out;
    }
out:
    free(ks);
    if (rc) {
        free(v);
        v = NULL;
        n = 0;
    }
    *out = v;
    *n_out = n;
    return rc;
}

/* Rewrites shard in-K.mdb without the documents whose doc_seq is in rm
 * (sorted). Returns the number removed in *removed. */
static int compact(const char *dir, uint64_t k, const uint64_t *rm, size_t nrm, uint64_t *removed, gl_err_t *err)
{
    char name[64];
    snprintf(name, sizeof name, "in-%06llu%s", (unsigned long long)k, SHARD_SUFFIX);
    char *path = gl_path_join(dir, name), *cdir = gl_path_join(dir, ".compact"), *tmp = gl_path_join(cdir, name);
    shard_reader_t *r = NULL;
    shard_writer_t *w = NULL;
    uint32_t *ids = NULL;
    size_t cap = 0;
    int rc = GL_OK;
    char tokname[128];
    *removed = 0;
    r = shard_open(path, 0, err);
    if (!r) {
        rc = err->code == GL_ENOTFOUND ? GL_OK : err->code; /* an input with no documents has no shard */
        if (!rc)
            gl_err_clear(err);
        goto out;
    }
    if ((rc = gl_mkdir_p(cdir, err)))
        goto out;
    unlink(tmp);
    const Gptline__ShardManifest *m = shard_manifest(r);
    /* the writer keeps the name until it seals, after the reader is closed */
    snprintf(tokname, sizeof tokname, "%s", m->tokenizer->name);
    shard_writer_opts_t so = {.kind = m->kind, .tokenizer_name = tokname,
                              .tokenizer_hash = m->tokenizer->hash, .vocab_size = m->tokenizer->vocab_size,
                              .eot_id = m->tokenizer->eot_id, .command = "ingest dedup",
                              .rank = m->provenance ? m->provenance->rank : 0,
                              .world = m->provenance ? m->provenance->world : 1};
    uint64_t n = shard_doc_count(r), drop = 0;
    for (uint64_t i = 0; i < n; i++) {
        Gptline__DocMeta *dm;
        if ((rc = shard_doc_meta(r, i, &dm, err)))
            goto out;
        uint64_t seq = dm->doc_seq;
        int gone = bsearch(&seq, rm, nrm, sizeof *rm, cmp_u64) != NULL;
        if (gone) {
            drop++;
            gptline__doc_meta__free_unpacked(dm, NULL);
            continue;
        }
        if (!w) {
            w = shard_writer_create(tmp, &so, err);
            if (!w) {
                gptline__doc_meta__free_unpacked(dm, NULL);
                rc = err->code;
                goto out;
            }
            if (m->provenance)
                for (size_t q = 0; q < m->provenance->n_inputs; q++)
                    shard_writer_add_input(w, m->provenance->inputs[q]);
        }
        shard_tokens_t t;
        if ((rc = shard_tokens(r, i, &t, err))) {
            gptline__doc_meta__free_unpacked(dm, NULL);
            goto out;
        }
        if (t.n > cap) {
            cap = (size_t)t.n;
            ids = gl_xrealloc(ids, cap * sizeof *ids);
        }
        for (uint64_t q = 0; q < t.n; q++)
            ids[q] = shard_token_at(&t, q);
        rc = shard_writer_add(w, ids, (size_t)t.n, &dm->base, err);
        gptline__doc_meta__free_unpacked(dm, NULL);
        if (rc)
            goto out;
    }
    if (!drop) {
        shard_writer_abort(&w);
        goto out;
    }
    shard_close(&r);
    if (w) {
        if ((rc = shard_writer_seal(&w, err)))
            goto out;
        rc = gl_rename_durable(tmp, path, err);
    } else if (unlink(path)) {
        rc = gl_err_set(err, GL_EIO, "%s: %s", path, strerror(errno));
    }
    if (!rc)
        *removed = drop;
out:
    shard_writer_abort(&w);
    shard_close(&r);
    free(ids);
    free(path);
    free(tmp);
    free(cdir);
    return rc;
}

int ingest_dedup_run(const char *dir, uint64_t *removed_exact, uint64_t *removed_near, uint64_t *docs_seen,
                     gl_err_t *err)
{
    dsig_t *s = NULL;
    size_t n = 0;
    uint32_t *par = NULL, *idx = NULL;
    json_t *list = json_array();
    int rc = load(dir, &s, &n, err);
    *removed_exact = *removed_near = 0;
    *docs_seen = n;
    if (rc)
        goto out;
    if (n > UINT32_MAX) {
        rc = gl_err_set(err, GL_ERANGE, "%s: %zu documents: over the dedup pass's 2^32", dir, n);
        goto out;
    }
    par = gl_xmalloc((n ? n : 1) * sizeof *par);
    idx = gl_xmalloc((n ? n : 1) * sizeof *idx);
    for (size_t i = 0; i < n; i++)
        par[i] = (uint32_t)i;
    g_sigs = s;
    for (int key = -1; key < INGEST_MH_BANDS; key++) {
        for (size_t i = 0; i < n; i++)
            idx[i] = (uint32_t)i;
        g_key = key;
        qsort(idx, n, sizeof *idx, cmp_idx);
        for (size_t i = 1; i < n; i++)
            if (key_of(&s[idx[i]]) == key_of(&s[idx[i - 1]]))
                unite(par, idx[i], idx[i - 1]);
    }
    /* per input, the sorted sequence numbers to remove */
    size_t i = 0;
    uint64_t *rm = gl_xmalloc((n ? n : 1) * sizeof *rm);
    while (i < n) {
        uint64_t k = s[i].input;
        size_t nrm = 0;
        for (; i < n && s[i].input == k; i++) {
            uint32_t root = find(par, (uint32_t)i);
            if (root == i)
                continue;
            rm[nrm++] = s[i].seq;
            int exact = s[root].exact == s[i].exact;
            json_array_append_new(list, json_pack("{s:I,s:I,s:s,s:I,s:I}", "input", (json_int_t)k, "doc_seq",
                                                  (json_int_t)s[i].seq, "reason", exact ? "exact" : "near",
                                                  "kept_input", (json_int_t)s[root].input, "kept_doc_seq",
                                                  (json_int_t)s[root].seq));
        }
        if (!nrm)
            continue;
        qsort(rm, nrm, sizeof *rm, cmp_u64);
        uint64_t removed;
        if ((rc = compact(dir, k, rm, nrm, &removed, err))) {
            free(rm);
            goto out;
        }
        /* count by reason only what this run removed from the shard */
        if (removed) {
            size_t first = json_array_size(list) - nrm;
            for (size_t q = first; q < json_array_size(list); q++) {
                const char *why = json_string_value(json_object_get(json_array_get(list, q), "reason"));
                if (!strcmp(why, "exact"))
                    (*removed_exact)++;
                else
                    (*removed_near)++;
            }
        }
    }
    free(rm);
    {
        char *dd = gl_path_join(dir, "dedup");
        rc = gl_mkdir_p(dd, err);
        char *p = gl_path_join(dd, "removed.json");
        free(dd);
        if (!rc) {
            json_t *o = json_pack("{s:I,s:I,s:O}", "documents", (json_int_t)n, "removed",
                                  (json_int_t)json_array_size(list), "list", list);
            char *txt = json_dumps(o, JSON_INDENT(1));
            rc = gl_write_file_atomic(p, txt, strlen(txt), err);
            free(txt);
            json_decref(o);
        }
        free(p);
    }
out:
    json_decref(list);
    free(s);
    free(par);
    free(idx);
    return rc;
}
