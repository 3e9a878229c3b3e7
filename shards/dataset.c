/* dataset.c — a folder of shards as one token stream, and the sampler.
 *
 * The stream is every document of every shard in name order, each followed
 * by the end-of-text id — which is exactly how shards store their token
 * chunks. Reading a window is two binary searches (shard, then chunk) and
 * one copy per chunk it touches (usually one), straight from the maps.
 *
 * The sampler shuffles windows with a keyed Feistel permutation of [0, W)
 * (cycle-walking to stay inside the domain) instead of a shuffled table:
 * O(1) memory for any dataset size, the same order on every rank, and the
 * epoch's order recomputed from (seed, epoch) alone, which makes resuming a
 * matter of saving two integers.
 */
#include "shards/internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>

struct shard_dataset {
    char *dir;
    shard_reader_t **shards;
    size_t n, unsealed;
    uint64_t *sstart;    /* stream offset of each shard, n + 1 entries */
    uint64_t docs, tokens;
    uint64_t *dstart;    /* first global doc index of each shard, n + 1 */
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int shard_list(const char *dir, char ***paths, size_t *n, size_t *unsealed, gl_err_t *err)
{
    *paths = NULL;
    *n = 0;
    if (unsealed)
        *unsealed = 0;
    DIR *dh = opendir(dir);
    if (!dh)
        return gl_err_set(err, GL_ENOTFOUND, "%s: cannot open dataset folder: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(dh))) {
        if (e->d_name[0] == '.')
            continue;
        if (ends_with(e->d_name, SHARD_SUFFIX)) {
            *paths = gl_xrealloc(*paths, (*n + 1) * sizeof **paths);
            (*paths)[(*n)++] = gl_path_join(dir, e->d_name);
        } else if (unsealed && ends_with(e->d_name, SHARD_SUFFIX SHARD_TMP_SUFFIX)) {
            (*unsealed)++;
        }
    }
    closedir(dh);
    if (*n)
        qsort(*paths, *n, sizeof **paths, cmp_str);
    return GL_OK;
}

void shard_list_free(char **paths, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

shard_dataset_t *shard_dataset_open(const char *dir, unsigned flags, gl_err_t *err)
{
    char **names;
    size_t nn, unsealed;
    if (shard_list(dir, &names, &nn, &unsealed, err))
        return NULL;
    shard_dataset_t *d = gl_xcalloc(1, sizeof *d);
    d->dir = gl_xstrdup(dir);
    d->unsealed = unsealed;
    d->shards = gl_xcalloc(nn ? nn : 1, sizeof *d->shards);
    d->sstart = gl_xcalloc(nn + 1, sizeof *d->sstart);
    d->dstart = gl_xcalloc(nn + 1, sizeof *d->dstart);
    int rc = GL_OK;
    for (size_t i = 0; i < nn; i++) {
        shard_reader_t *r = shard_open(names[i], flags, err);
        if (!r) {
            rc = err ? err->code : GL_ECORRUPT;
            break;
        }
        d->shards[d->n++] = r;
        const Gptline__ShardManifest *m0 = shard_manifest(d->shards[0]), *m = shard_manifest(r);
        if (m->kind != m0->kind || m->tokenizer->hash != m0->tokenizer->hash ||
            m->tokenizer->vocab_size != m0->tokenizer->vocab_size ||
            strcmp(m->tokenizer->name, m0->tokenizer->name)) {
            rc = gl_err_set(err, GL_EMISMATCH, "%s: shard %s has a different record kind or tokenizer than %s",
                            dir, strrchr(names[i], '/') + 1, strrchr(names[0], '/') + 1);
            break;
        }
        d->sstart[d->n] = d->sstart[d->n - 1] + m->token_count + m->doc_count;
        d->dstart[d->n] = d->dstart[d->n - 1] + m->doc_count;
        d->docs += m->doc_count;
        d->tokens += m->token_count;
    }
    shard_list_free(names, nn);
    if (rc) {
        shard_dataset_close(&d);
        return NULL;
    }
    return d;
}

void shard_dataset_close(shard_dataset_t **dp)
{
    if (!dp || !*dp)
        return;
    shard_dataset_t *d = *dp;
    for (size_t i = 0; i < d->n; i++)
        shard_close(&d->shards[i]);
    free(d->shards);
    free(d->sstart);
    free(d->dstart);
    free(d->dir);
    free(d);
    *dp = NULL;
}

size_t shard_dataset_shard_count(const shard_dataset_t *d) { return d->n; }
shard_reader_t *shard_dataset_shard(const shard_dataset_t *d, size_t i) { return i < d->n ? d->shards[i] : NULL; }
size_t shard_dataset_unsealed(const shard_dataset_t *d) { return d->unsealed; }
uint64_t shard_dataset_docs(const shard_dataset_t *d) { return d->docs; }
uint64_t shard_dataset_tokens(const shard_dataset_t *d) { return d->tokens; }
uint64_t shard_dataset_stream_len(const shard_dataset_t *d) { return d->sstart[d->n]; }

const Gptline__TokenizerId *shard_dataset_tokenizer(const shard_dataset_t *d)
{
    return d->n ? shard_manifest(d->shards[0])->tokenizer : NULL;
}

Gptline__RecordKind shard_dataset_kind(const shard_dataset_t *d)
{
    return d->n ? shard_manifest(d->shards[0])->kind : GPTLINE__RECORD_KIND__RECORD_KIND_UNSPECIFIED;
}

/* Largest i in [0, n) with a[i] <= x (a[0] <= x assumed). */
static size_t upper_index(const uint64_t *a, uint64_t n, uint64_t x)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

int shard_dataset_locate(const shard_dataset_t *d, uint64_t doc, size_t *shard, uint64_t *local, gl_err_t *err)
{
    if (doc >= d->docs)
        return gl_err_set(err, GL_ERANGE, "%s: document %llu out of range (%llu documents)", d->dir,
                          (unsigned long long)doc, (unsigned long long)d->docs);
    /* Skip empty shards: find the last shard whose first doc <= doc and that has docs. */
    size_t s = upper_index(d->dstart, d->n, doc);
    while (d->dstart[s + 1] <= doc)
        s++;
    *shard = s;
    *local = doc - d->dstart[s];
    return GL_OK;
}

/* Widens stored tokens to int32. LMDB keeps values 2-byte aligned (chunks
 * in overflow pages sit 16 bytes into a page), so 2-byte tokens are read
 * through a typed pointer, which lets the compiler vectorise the loop (for
 * AVX2 too, picked at run time); 4-byte tokens are copied as bytes. */
__attribute__((target_clones("avx2", "default")))
static void copy_tokens(int32_t *restrict out, const uint8_t *restrict src, uint64_t n, uint32_t width)
{
    if (width == 2) {
        const uint16_t *s = (const uint16_t *)(const void *)src;
        for (uint64_t j = 0; j < n; j++)
            out[j] = s[j];
    } else {
        memcpy(out, src, n * 4);
    }
}

int shard_dataset_record(const shard_dataset_t *d, uint64_t index, shard_tokens_t *tokens, const uint8_t **meta,
                         size_t *meta_len, const shard_reader_t **shard, gl_err_t *err)
{
    size_t s = 0;
    uint64_t local = 0;
    int rc = shard_dataset_locate(d, index, &s, &local, err);
    if (rc)
        return rc;
    const shard_reader_t *r = d->shards[s];
    if (shard)
        *shard = r;
    if ((rc = shard_tokens(r, local, tokens, err)))
        return rc;
    return shard_meta(r, local, meta, meta_len, err);
}

/* The chunk holding stream position x of a shard. Chunks are nearly equal
 * in size, so a proportional guess is right or one off; a few steps from
 * it, else a binary search (shards with very uneven chunks). */
static uint64_t find_chunk(const uint64_t *cs, uint64_t nc, uint64_t x)
{
    uint64_t c = (uint64_t)((double)x / (double)cs[nc] * (double)nc);
    if (c >= nc)
        c = nc - 1;
    for (int step = 0; step < 4; step++) {
        if (cs[c] > x)
            c--;
        else if (cs[c + 1] <= x)
            c++;
        else
            return c;
    }
    return upper_index(cs, nc, x);
}

int shard_dataset_read(const shard_dataset_t *d, uint64_t pos, uint64_t n, int32_t *out, gl_err_t *err)
{
    uint64_t L = d->sstart[d->n];
    if (pos > L || n > L - pos)
        return gl_err_set(err, GL_ERANGE, "%s: stream range [%llu, %llu) past its end %llu", d->dir,
                          (unsigned long long)pos, (unsigned long long)(pos + n), (unsigned long long)L);
    if (!n)
        return GL_OK;
    size_t s = upper_index(d->sstart, d->n, pos);
    while (d->sstart[s + 1] <= pos)
        s++; /* skip empty shards */
    const shard_reader_t *r = d->shards[s];
    const uint64_t *cs = shard_chunk_starts(r);
    const uint8_t *const *cp = shard_chunk_ptrs(r);
    uint64_t nc = shard_chunk_count(r);
    uint32_t width = shard_manifest(r)->token_width;
    uint64_t local = pos - d->sstart[s];
    uint64_t c = find_chunk(cs, nc, local);
    for (;;) {
        uint64_t k = cs[c + 1] - local < n ? cs[c + 1] - local : n;
        copy_tokens(out, cp[c] + (local - cs[c]) * width, k, width);
        out += k;
        n -= k;
        if (!n)
            return GL_OK;
        local += k;
        if (++c == nc) {
            do
                s++;
            while (shard_doc_count(d->shards[s]) == 0);
            r = d->shards[s];
            cs = shard_chunk_starts(r);
            cp = shard_chunk_ptrs(r);
            nc = shard_chunk_count(r);
            c = 0;
            local = 0;
        }
    }
}

/* ---- sampler ---------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static void set_epoch(shard_sampler_t *s, uint64_t epoch)
{
    s->epoch = epoch;
    for (int i = 0; i < 4; i++)
        s->key[i] = mix64(s->seed * 0x9e3779b97f4a7c15ull + mix64(epoch + 1) + (uint64_t)i * 0x632be59bd9b4e019ull);
}

/* The keyed bijection of [0, 2^(2*half_bits)); cycle-walked into [0, W). */
static uint64_t permute(const shard_sampler_t *s, uint64_t x)
{
    uint64_t mask = (s->half_bits >= 32) ? 0xffffffffull : ((1ull << s->half_bits) - 1);
    do {
        uint64_t l = x >> s->half_bits, r = x & mask;
        for (int i = 0; i < 4; i++) {
            uint64_t t = l ^ (mix64(r ^ s->key[i]) & mask);
            l = r;
            r = t;
        }
        x = (l << s->half_bits) | r;
    } while (x >= s->windows);
    return x;
}

int shard_sampler_init(shard_sampler_t *s, const shard_dataset_t *ds, uint32_t B, uint32_t T, uint64_t seed,
                       uint32_t rank, uint32_t world, int shuffle, gl_err_t *err)
{
    memset(s, 0, sizeof *s);
    if (!B || !T || !world || rank >= world)
        return gl_err_set(err, GL_EINVAL, "sampler: need B, T > 0 and rank < world (B=%u T=%u rank=%u world=%u)",
                          B, T, rank, world);
    uint64_t L = shard_dataset_stream_len(ds);
    s->ds = ds;
    s->B = B;
    s->T = T;
    s->seed = seed;
    s->rank = rank;
    s->world = world;
    s->shuffle = shuffle;
    s->windows = L > 0 ? (L - 1) / T : 0;
    s->per_rank = s->windows / world;
    if (s->per_rank == 0)
        return gl_err_set(err, GL_ERANGE,
                          "%s: stream of %llu tokens holds %llu windows of T=%u, fewer than the %u ranks",
                          ds->dir, (unsigned long long)L, (unsigned long long)s->windows, T, world);
    unsigned bits = 2;
    while (bits < 64 && (1ull << bits) < s->windows)
        bits++;
    bits += bits & 1;
    s->half_bits = bits / 2;
    set_epoch(s, 0);
    return GL_OK;
}

uint64_t shard_sampler_window(shard_sampler_t *s, uint64_t epoch, uint64_t k)
{
    if (epoch != s->epoch)
        set_epoch(s, epoch);
    uint64_t p = k * s->world + s->rank;
    return s->shuffle ? permute(s, p) : p;
}

void shard_sampler_seek(shard_sampler_t *s, uint64_t epoch, uint64_t next)
{
    set_epoch(s, epoch);
    s->next = next;
}

int shard_sampler_next(shard_sampler_t *s, int32_t *out, gl_err_t *err)
{
    for (uint32_t b = 0; b < s->B; b++) {
        if (s->next >= s->per_rank) {
            set_epoch(s, s->epoch + 1);
            s->next = 0;
        }
        uint64_t w = shard_sampler_window(s, s->epoch, s->next++);
        int rc = shard_dataset_read(s->ds, w * s->T, (uint64_t)s->T + 1, out + (size_t)b * (s->T + 1), err);
        if (rc)
            return rc;
    }
    return GL_OK;
}

uint64_t shard_bytes_tokenizer_hash(void)
{
    /* FNV-1a of the tokenizer's description: stable across builds. */
    const char *id = "gptline bytes tokenizer v1: ids 0-255 are bytes, 256 is <|endoftext|>";
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return h;
}
