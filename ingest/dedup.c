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
 * idempotent. Memory per document: its exact hash and the keys of 7
 * bands (8 bytes each: the 14 bands are joined in two passes, each reading
 * the signature files, and a band's keys are freed once joined), 4 bytes
 * of union-find and 4 of sort index: 72 bytes. The input and sequence
 * number of a document come from where it lies in the input order.
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

/* The signatures of every document, numbered in (input, sequence) order:
 * flat arrays, the band keys band-major so that each band's keys are one
 * array. Inputs are runs of documents (in_start); a document's sequence
 * number is its place in its input's run when the worker wrote them in
 * order (it does), else it is kept in seq. */
typedef struct {
    size_t n;
    uint64_t *exact;                    /* n */
    uint64_t *band[INGEST_MH_BANDS];    /* n each */
    size_t ninputs;
    uint64_t *in_k;                     /* input number */
    size_t *in_start;                   /* ninputs + 1 */
    uint64_t *seq;                      /* n, or NULL when every input's are 0, 1, 2... */
} dsigs_t;

static void dsigs_free(dsigs_t *d)
{
    free(d->exact);
    for (int b = 0; b < INGEST_MH_BANDS; b++)
        free(d->band[b]);
    free(d->in_k);
    free(d->in_start);
    free(d->seq);
    memset(d, 0, sizeof *d);
}

static const uint64_t *g_keys;

static int cmp_idx(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint64_t kx = g_keys[x], ky = g_keys[y];
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

static void grow(void **p, size_t elem, size_t cap) { *p = gl_xrealloc(*p, cap * elem); }

/* The band keys held in memory at once: the bands are joined in passes of
 * this many, each pass reading the signature files again. */
#define BANDS_PER_PASS 7

/* Loads sigs/in-K.sig for every K with a done-marker, in K order: on the
 * first pass (d->n == 0 on entry, d zeroed) the inputs, exact hashes and
 * sequence numbers, and on every pass the keys of bands [b0, b1). A later
 * pass checks the files hold the same documents as the first. */
static int load(const char *dir, dsigs_t *d, int b0, int b1, gl_err_t *err)
{
    int first = d->in_start == NULL;
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
    if (nk > 1)
        qsort(ks, nk, sizeof *ks, cmp_u64);
    int rc = GL_OK;
    if (first) {
        d->in_k = gl_xmalloc((nk ? nk : 1) * sizeof *d->in_k);
        d->in_start = gl_xmalloc((nk + 1) * sizeof *d->in_start);
        d->in_start[0] = 0;
    } else if (nk != d->ninputs || (nk && memcmp(ks, d->in_k, nk * sizeof *ks))) {
        rc = gl_err_set(err, GL_ECORRUPT, "%s: inputs marked done changed during the dedup pass", dir);
        goto out;
    }
    size_t n = 0, cap = first ? 0 : d->n;
    for (int b = b0; b < b1; b++)
        d->band[b] = gl_xmalloc((cap ? cap : 1) * sizeof *d->band[b]);
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
        if (!rc && !first && n + cnt != d->in_start[i + 1])
            rc = gl_err_set(err, GL_ECORRUPT, "%s: changed during the dedup pass", p);
        if (!rc) {
            if (first && n + cnt > cap) {
                while (n + cnt > cap)
                    cap = cap ? cap * 2 : 1024;
                grow((void **)&d->exact, sizeof *d->exact, cap);
                for (int b = b0; b < b1; b++)
                    grow((void **)&d->band[b], sizeof *d->band[b], cap);
                if (d->seq)
                    grow((void **)&d->seq, sizeof *d->seq, cap);
            }
            for (uint64_t r = 0; r < cnt; r++, n++) {
                const char *q = data + 32 + r * rec;
                if (first) {
                    uint64_t seq;
                    memcpy(&seq, q, 8);
                    if (seq != r && !d->seq) { /* out of order: keep every sequence number from now on */
                        d->seq = gl_xmalloc(cap * sizeof *d->seq);
                        for (size_t in = 0, j = 0; in <= i; in++)
                            for (; j < (in < i ? d->in_start[in + 1] : n); j++)
                                d->seq[j] = j - d->in_start[in];
                    }
                    if (d->seq)
                        d->seq[n] = seq;
                    memcpy(&d->exact[n], q + 8, 8);
                }
                for (int b = b0; b < b1; b++)
                    d->band[b][n] = XXH3_64bits_withSeed(q + 16 + 4 * INGEST_MH_ROWS * b, 4 * INGEST_MH_ROWS, (uint64_t)b);
            }
        }
        free(data);
        free(p);
        if (rc)
            goto out;
        if (first) {
            d->in_k[i] = ks[i];
            d->in_start[i + 1] = n;
            d->ninputs = i + 1;
        }
    }
    d->n = n;
out:
    free(ks);
    return rc;
}

/* Document i's input (index into in_k) and sequence number. */
static size_t input_of(const dsigs_t *d, size_t i)
{
    size_t lo = 0, hi = d->ninputs; /* the last input starting at or before i */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (d->in_start[mid] <= i)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static uint64_t seq_of(const dsigs_t *d, size_t i, size_t in) { return d->seq ? d->seq[i] : i - d->in_start[in]; }

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
    dsigs_t d = {0};
    uint32_t *par = NULL, *idx = NULL;
    uint64_t *rm = NULL;
    json_t *list = json_array();
    size_t n = 0;
    int rc = GL_OK;
    *removed_exact = *removed_near = 0;
    *docs_seen = 0;
    /* exact hashes, then each band: sort, join equal neighbours; a band's
     * keys are freed once joined, and loaded BANDS_PER_PASS at a time */
    for (int b0 = 0; b0 < INGEST_MH_BANDS; b0 += BANDS_PER_PASS) {
        int b1 = b0 + BANDS_PER_PASS < INGEST_MH_BANDS ? b0 + BANDS_PER_PASS : INGEST_MH_BANDS;
        if ((rc = load(dir, &d, b0, b1, err)))
            goto out;
        if (!par) {
            n = *docs_seen = d.n;
            if (n > UINT32_MAX) {
                rc = gl_err_set(err, GL_ERANGE, "%s: %zu documents: over the dedup pass's 2^32", dir, n);
                goto out;
            }
            par = gl_xmalloc((n ? n : 1) * sizeof *par);
            idx = gl_xmalloc((n ? n : 1) * sizeof *idx);
            for (size_t i = 0; i < n; i++)
                par[i] = (uint32_t)i;
        }
        for (int key = b0 ? b0 : -1; key < b1; key++) {
            g_keys = key < 0 ? d.exact : d.band[key];
            for (size_t i = 0; i < n; i++)
                idx[i] = (uint32_t)i;
            qsort(idx, n, sizeof *idx, cmp_idx);
            for (size_t i = 1; i < n; i++)
                if (g_keys[idx[i]] == g_keys[idx[i - 1]])
                    unite(par, idx[i], idx[i - 1]);
            if (key >= 0) {
                free(d.band[key]);
                d.band[key] = NULL;
            }
        }
    }
    free(idx);
    idx = NULL;
    /* per input, the sorted sequence numbers to remove */
    size_t most = 0;
    for (size_t in = 0; in < d.ninputs; in++)
        if (d.in_start[in + 1] - d.in_start[in] > most)
            most = d.in_start[in + 1] - d.in_start[in];
    rm = gl_xmalloc((most ? most : 1) * sizeof *rm);
    for (size_t in = 0; in < d.ninputs; in++) {
        uint64_t k = d.in_k[in];
        size_t nrm = 0;
        for (size_t i = d.in_start[in]; i < d.in_start[in + 1]; i++) {
            uint32_t root = find(par, (uint32_t)i);
            if (root == i)
                continue;
            size_t rin = input_of(&d, root);
            rm[nrm++] = seq_of(&d, i, in);
            int exact = d.exact[root] == d.exact[i];
            json_array_append_new(list, json_pack("{s:I,s:I,s:s,s:I,s:I}", "input", (json_int_t)k, "doc_seq",
                                                  (json_int_t)seq_of(&d, i, in), "reason", exact ? "exact" : "near",
                                                  "kept_input", (json_int_t)d.in_k[rin], "kept_doc_seq",
                                                  (json_int_t)seq_of(&d, root, rin)));
        }
        if (!nrm)
            continue;
        qsort(rm, nrm, sizeof *rm, cmp_u64);
        uint64_t removed;
        if ((rc = compact(dir, k, rm, nrm, &removed, err)))
            goto out;
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
    dsigs_free(&d);
    free(par);
    free(idx);
    free(rm);
    return rc;
}
