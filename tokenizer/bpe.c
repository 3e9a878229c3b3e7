/* bpe.c — encoding text to ids and decoding ids to bytes.
 *
 * Encoding cuts the text at allowed special tokens, pre-tokenizes each
 * stretch of ordinary text with the vocabulary's pattern (tok_pretok_next)
 * and turns every piece into ids. Most pieces of real text (80-90%) are
 * whole tokens, so the first thing tried is one hash lookup of the whole
 * piece. The rest go through byte-pair merging by rank, tiktoken's rule:
 * repeatedly merge the adjacent pair whose concatenation has the lowest
 * rank, the leftmost on ties, until no adjacent pair is a token.
 *
 * Two implementations of that one rule: pieces up to SMALL_PIECE bytes use
 * flat arrays and a linear scan for the minimum per merge (quadratic, but
 * tiny and cache-resident — the common case); longer pieces, such as a
 * 100 KB run of one letter, use a doubly linked list of parts and a
 * tournament tree (an implicit segment tree of minima) over the keys
 * rank << 32 | start of each part's pair with its right neighbour: the root
 * is the pair to merge, the key orders equal ranks by position (the
 * leftmost rule), and each merge updates three leaves in O(log n) — no
 * stale entries, no unpredictable swaps, O(n log n) per piece. (A binary
 * heap with lazy deletion, tried first, spent twice the time in sifting.)
 * Short pieces that are not tokens are remembered in a small per-thread
 * cache. The tests run both paths against a naive reference.
 */
#include "tokenizer/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SMALL_PIECE 48

void tok_ids_free(tok_ids_t *a)
{
    if (!a)
        return;
    free(a->ids);
    a->ids = NULL;
    a->n = a->cap = 0;
}

int tok_ids_reserve(tok_ids_t *a, size_t extra, gl_err_t *err)
{
    if (a->n + extra <= a->cap)
        return GL_OK;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < a->n + extra)
        cap *= 2;
    uint32_t *p = realloc(a->ids, cap * sizeof *p);
    if (!p)
        return gl_err_set(err, GL_ENOMEM, "out of memory for %zu token ids", cap);
    a->ids = p;
    a->cap = cap;
    return GL_OK;
}

static inline uint32_t pair_rank(const tok_vocab_t *v, const uint8_t *p, size_t n, uint32_t max_rank)
{
    uint32_t r = tok_lookup(v, p, n);
    return r < max_rank ? r : TOK_NONE;
}

/* Flat-array merging for short pieces; out has room for n ids. */
static size_t bpe_small(const tok_vocab_t *v, const uint8_t *p, size_t n, uint32_t max_rank, uint32_t *out)
{
    /* one spare entry past the end of each, so the gap-closing loop below
     * reads only set values */
    uint32_t pos[SMALL_PIECE + 1], rank[SMALL_PIECE + 1], ids[SMALL_PIECE + 1];
    size_t m = n; /* parts */
    for (size_t i = 0; i <= n; i++)
        pos[i] = (uint32_t)i;
    for (size_t i = 0; i < n; i++)
        ids[i] = v->byte_id[p[i]];
    ids[n] = TOK_NONE;
    for (size_t i = 0; i + 1 < n; i++)
        rank[i] = pair_rank(v, p + i, 2, max_rank);
    rank[n - 1] = rank[n] = TOK_NONE;
    while (m > 1) {
        uint32_t best = TOK_NONE;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++) { /* branch-free: the minimum is unpredictable */
            uint32_t r = rank[i];
            int lt = r < best;
            best = lt ? r : best;
            bi = lt ? i : bi;
        }
        if (best == TOK_NONE)
            break;
        /* merge parts bi and bi+1 */
        ids[bi] = best;
        /* close the gap; the arrays are short, so plain loops beat memmove calls */
        for (size_t i = bi + 1; i < m; i++) {
            pos[i] = pos[i + 1];
            ids[i] = ids[i + 1];
            rank[i] = rank[i + 1];
        }
        m--;
        if (bi + 1 < m)
            rank[bi] = pair_rank(v, p + pos[bi], pos[bi + 2] - pos[bi], max_rank);
        if (bi > 0)
            rank[bi - 1] = pair_rank(v, p + pos[bi - 1], pos[bi + 1] - pos[bi - 1], max_rank);
    }
    memcpy(out, ids, m * sizeof *ids);
    return m;
}

/* ---- tournament-tree merging for long pieces ------------------------------ */

static inline void tree_set(uint64_t *tree, size_t P, size_t i, uint64_t key)
{
    size_t j = P + i;
    tree[j] = key;
    for (j >>= 1; j; j >>= 1) {
        uint64_t a = tree[2 * j], b = tree[2 * j + 1], m = a < b ? a : b;
        if (tree[j] == m) /* unchanged here: unchanged above */
            break;
        tree[j] = m;
    }
}

static int bpe_large(const tok_vocab_t *v, const uint8_t *p, size_t n, uint32_t max_rank, uint32_t *out,
                     size_t *n_out, gl_err_t *err)
{
    /* Parts are named by their first byte. next[s] is the start of the
     * following part (n at the end), prev[s] the preceding one, id[s] the
     * part's token. Leaf s of the tree holds the key rank << 32 | s of the
     * pair (s, next[s]), or UINT64_MAX; inner nodes hold the minimum of
     * their children, so the root is the lowest-ranked, leftmost pair. */
    size_t P = 1;
    while (P < n)
        P *= 2;
    uint32_t *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev), *id = malloc(n * sizeof *id);
    uint64_t *tree = malloc(2 * P * sizeof *tree);
    int rc = GL_OK;
    if (!next || !prev || !id || !tree) {
        rc = gl_err_set(err, GL_ENOMEM, "out of memory merging a piece of %zu bytes", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        next[i] = (uint32_t)(i + 1);
        prev[i] = i ? (uint32_t)(i - 1) : TOK_NONE;
        id[i] = v->byte_id[p[i]];
        uint32_t r = i + 1 < n ? pair_rank(v, p + i, 2, max_rank) : TOK_NONE;
        tree[P + i] = r == TOK_NONE ? UINT64_MAX : (uint64_t)r << 32 | i;
    }
    for (size_t i = n; i < P; i++)
        tree[P + i] = UINT64_MAX;
    for (size_t j = P - 1; j >= 1; j--) {
        uint64_t a = tree[2 * j], b = tree[2 * j + 1];
        tree[j] = a < b ? a : b;
    }
    while (tree[1] != UINT64_MAX) {
        uint64_t top = tree[1];
        uint32_t r = (uint32_t)(top >> 32), s = (uint32_t)top;
        uint32_t t = next[s], after = next[t];
        id[s] = r;
        next[s] = after;
        if (after < n)
            prev[after] = s;
        tree_set(tree, P, t, UINT64_MAX); /* t is gone */
        uint32_t rs = after < n ? pair_rank(v, p + s, next[after] - s, max_rank) : TOK_NONE;
        tree_set(tree, P, s, rs == TOK_NONE ? UINT64_MAX : (uint64_t)rs << 32 | s);
        uint32_t b = prev[s];
        if (b != TOK_NONE) {
            uint32_t rb = pair_rank(v, p + b, after - b, max_rank);
            tree_set(tree, P, b, rb == TOK_NONE ? UINT64_MAX : (uint64_t)rb << 32 | b);
        }
    }
    size_t k = 0;
    for (uint32_t s = 0; s < n; s = next[s])
        out[k++] = id[s];
    *n_out = k;
out:
    free(next);
    free(prev);
    free(id);
    free(tree);
    return rc;
}

int tok_bpe_piece(const tok_vocab_t *v, const uint8_t *p, size_t n, uint32_t max_rank, tok_ids_t *out,
                  gl_err_t *err)
{
    if (!n)
        return GL_OK;
    if (n > UINT32_MAX - 1)
        return gl_err_set(err, GL_ERANGE, "piece of %zu bytes is too long", n);
    int rc = tok_ids_reserve(out, n, err);
    if (rc)
        return rc;
    if (n == 1) {
        out->ids[out->n++] = v->byte_id[p[0]];
        return GL_OK;
    }
    if (max_rank == TOK_NONE) {
        uint32_t whole = tok_lookup(v, p, n);
        if (whole != TOK_NONE) {
            out->ids[out->n++] = whole;
            return GL_OK;
        }
    }
    if (n <= SMALL_PIECE) {
        out->n += bpe_small(v, p, n, max_rank, out->ids + out->n);
        return GL_OK;
    }
    size_t k = 0;
    rc = bpe_large(v, p, n, max_rank, out->ids + out->n, &k, err);
    out->n += k;
    return rc;
}

int tok_encode_piece(const tok_vocab_t *v, const uint8_t *piece, size_t len, tok_ids_t *out, gl_err_t *err)
{
    return tok_bpe_piece(v, piece, len, TOK_NONE, out, err);
}

/* ---- piece cache ------------------------------------------------------------ */

/* A direct-mapped cache of short pieces that are not single tokens ->
 * their ids: words outside the vocabulary recur, and their merges cost far
 * more than one look here. One per encoding thread (never shared), so no
 * locks; 64-byte entries, 4096 of them (256 KB). Entries hold the piece's
 * bytes, so a hit is exact. */
#define CACHE_BYTES 22
#define CACHE_IDS 8
#define CACHE_SLOTS 4096
typedef struct {
    uint64_t h;
    uint8_t len, nids;
    uint8_t bytes[CACHE_BYTES];
    uint32_t ids[CACHE_IDS];
} cent_t;

static cent_t *cache_new(void) { return calloc(CACHE_SLOTS, sizeof(cent_t)); }

/* Encodes ordinary text (no specials); cache may be NULL. */
static int encode_ordinary(const tok_vocab_t *v, const uint8_t *s, size_t len, tok_ids_t *out, cent_t *cache,
                           gl_err_t *err)
{
    tok_pretok_t pat = v->pattern;
    size_t pos = 0;
    int rc = tok_ids_reserve(out, len / 3 + 16, err);
    if (rc)
        return rc;
    while (pos < len) {
        size_t n = tok_pretok_next(pat, s, len, pos);
        if (n == 0 || n > len - pos) /* never from a correct pre-tokenizer; stay safe */
            n = 1;
        const uint8_t *p = s + pos;
        pos += n;
        if (out->n + 1 > out->cap && (rc = tok_ids_reserve(out, 1, err)))
            return rc;
        if (n == 1) {
            out->ids[out->n++] = v->byte_id[p[0]];
            continue;
        }
        uint64_t key = len - (pos - n) >= 8 ? tok_key8_wide(p, n) : tok_key8(p, n);
        uint64_t h = tok_slot_hash(p, n, key);
        uint32_t whole = tok_lookup_h(v, p, n, key, h);
        if (whole != TOK_NONE) {
            out->ids[out->n++] = whole;
            continue;
        }
        cent_t *ce = NULL;
        if (cache && n <= CACHE_BYTES) {
            ce = &cache[(h >> 40) & (CACHE_SLOTS - 1)];
            if (ce->h == h && ce->len == n && !memcmp(ce->bytes, p, n)) {
                if ((rc = tok_ids_reserve(out, ce->nids, err)))
                    return rc;
                for (unsigned k = 0; k < ce->nids; k++)
                    out->ids[out->n + k] = ce->ids[k];
                out->n += ce->nids;
                continue;
            }
        }
        size_t before = out->n;
        if ((rc = tok_bpe_piece(v, p, n, TOK_NONE, out, err)))
            return rc;
        if (ce && out->n - before <= CACHE_IDS) {
            ce->h = h;
            ce->len = (uint8_t)n;
            ce->nids = (uint8_t)(out->n - before);
            memcpy(ce->bytes, p, n);
            memcpy(ce->ids, out->ids + before, ce->nids * sizeof *ce->ids);
        }
    }
    return GL_OK;
}

/* tok_encode with a caller's cache (NULL: one for this call when the text
 * is long enough to pay for it). */
static int encode_cached(const tok_vocab_t *v, const void *text, size_t len, uint64_t allowed, tok_ids_t *out,
                         cent_t *cache, gl_err_t *err)
{
    const uint8_t *s = text;
    cent_t *own = NULL;
    int rc;
    if (!cache && len >= (64 << 10))
        cache = own = cache_new(); /* NULL on OOM is fine: no cache */
    if (v->n_special < 64)
        allowed &= ((uint64_t)1 << v->n_special) - 1;
    if (!allowed) {
        rc = encode_ordinary(v, s, len, out, cache, err);
        free(own);
        return rc;
    }
    /* next_at[k]: where special k next occurs at or after pos (len: never) */
    size_t next_at[TOK_MAX_SPECIALS];
    for (size_t k = 0; k < v->n_special; k++)
        next_at[k] = (size_t)-1;
    size_t pos = 0;
    rc = GL_OK;
    while (pos < len) {
        size_t best = len, bk = 0;
        for (size_t k = 0; k < v->n_special; k++) {
            if (!(allowed >> k & 1))
                continue;
            if (next_at[k] == (size_t)-1 || (next_at[k] < pos && next_at[k] != len)) {
                const uint8_t *f = memmem(s + pos, len - pos, v->special[k].name, v->special[k].len);
                next_at[k] = f ? (size_t)(f - s) : len;
            }
            /* earliest; the longest at one position */
            if (next_at[k] < best || (next_at[k] == best && best < len && v->special[k].len > v->special[bk].len)) {
                best = next_at[k];
                bk = k;
            }
        }
        if ((rc = encode_ordinary(v, s + pos, best - pos, out, cache, err)))
            break;
        if (best == len)
            break;
        if ((rc = tok_ids_reserve(out, 1, err)))
            break;
        out->ids[out->n++] = v->special[bk].id;
        pos = best + v->special[bk].len;
    }
    free(own);
    return rc;
}

int tok_encode(const tok_vocab_t *v, const void *text, size_t len, uint64_t allowed, tok_ids_t *out, gl_err_t *err)
{
    return encode_cached(v, text, len, allowed, out, NULL, err);
}

int tok_decode(const tok_vocab_t *v, const uint32_t *ids, size_t n, uint8_t **buf, size_t *len, size_t *cap,
               gl_err_t *err)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = ids[i];
        if (id < v->n_ids && v->len[id]) {
            need += v->len[id];
        } else {
            size_t l;
            if (!tok_token_bytes(v, id, &l))
                return gl_err_set(err, GL_ERANGE, "id %u (position %zu) is not a token of %s", id, i, v->name);
            need += l;
        }
    }
    if (*len + need + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + need + 1)
            c *= 2;
        uint8_t *b = realloc(*buf, c);
        if (!b)
            return gl_err_set(err, GL_ENOMEM, "out of memory decoding %zu ids", n);
        *buf = b;
        *cap = c;
    }
    uint8_t *o = *buf + *len;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = ids[i];
        size_t l;
        const uint8_t *b;
        if (id < v->n_ids && v->len[id]) {
            b = v->bytes + v->start[id];
            l = v->len[id];
        } else {
            b = tok_token_bytes(v, id, &l);
        }
        memcpy(o, b, l);
        o += l;
    }
    *len = (size_t)(o - *buf);
    (*buf)[*len] = '\0';
    return GL_OK;
}

/* ---- batch ------------------------------------------------------------------ */

typedef struct {
    const tok_vocab_t *v;
    const tok_doc_t *docs;
    size_t n;
    uint64_t allowed;
    tok_ids_t *outs;
    atomic_size_t next;
    atomic_int failed;
    gl_err_t err;
    pthread_mutex_t mu;
} batch_t;

static void *batch_worker(void *arg)
{
    batch_t *b = arg;
    gl_err_t e = {0};
    cent_t *cache = cache_new();
    for (;;) {
        size_t i = atomic_fetch_add(&b->next, 1);
        if (i >= b->n || atomic_load(&b->failed))
            break;
        /* Encode into a local copy: the threads take neighbouring documents,
         * and their tok_ids_t headers share cache lines — updating outs[i].n
         * per token in place would bounce those lines between the cores. */
        tok_ids_t out = b->outs[i];
        int rc = encode_cached(b->v, b->docs[i].text, b->docs[i].len, b->allowed, &out, cache, &e);
        b->outs[i] = out;
        if (rc) {
            pthread_mutex_lock(&b->mu);
            if (!atomic_exchange(&b->failed, 1))
                b->err = e;
            pthread_mutex_unlock(&b->mu);
            break;
        }
    }
    free(cache);
    return NULL;
}

int tok_encode_batch(const tok_vocab_t *v, const tok_doc_t *docs, size_t n, uint64_t allowed, int threads,
                     tok_ids_t *outs, gl_err_t *err)
{
    if (threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c > 0 ? (int)c : 1;
    }
    if ((size_t)threads > n)
        threads = n ? (int)n : 1;
    batch_t b = {.v = v, .docs = docs, .n = n, .allowed = allowed, .outs = outs};
    atomic_init(&b.next, 0);
    atomic_init(&b.failed, 0);
    pthread_mutex_init(&b.mu, NULL);
    pthread_t th[256];
    int started = 0;
    if (threads > 256)
        threads = 256;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&th[started], NULL, batch_worker, &b))
            break;
        started++;
    }
    batch_worker(&b);
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    pthread_mutex_destroy(&b.mu);
    if (atomic_load(&b.failed)) {
        if (err)
            *err = b.err;
        return b.err.code ? (int)b.err.code : GL_ENOMEM;
    }
    return GL_OK;
}

/* ---- streaming ---------------------------------------------------------------- */

size_t tok_safe_cut(const uint8_t *buf, size_t len, size_t min_pos)
{
    /* buf[p-2] printable ASCII (so the whitespace run is the lone '\n'),
     * buf[p-1] == '\n', buf[p] an ASCII letter. */
    if (len < 3)
        return 0;
    for (size_t p = len - 1; p >= 2 && p >= min_pos; p--) {
        if (buf[p - 1] != '\n')
            continue;
        uint8_t c = buf[p] | 0x20, b = buf[p - 2];
        if (c >= 'a' && c <= 'z' && b > 0x20 && b < 0x7f)
            return p;
    }
    return 0;
}

struct tok_stream {
    const tok_vocab_t *v;
    uint64_t allowed;
    size_t max_hold;
    uint8_t *buf;
    size_t len, cap, scanned;
    cent_t *cache;
};

tok_stream_t *tok_stream_new(const tok_vocab_t *v, uint64_t allowed, size_t max_hold, gl_err_t *err)
{
    tok_stream_t *s = calloc(1, sizeof *s);
    if (!s) {
        gl_err_set(err, GL_ENOMEM, "out of memory");
        return NULL;
    }
    s->v = v;
    s->allowed = allowed;
    s->max_hold = max_hold ? max_hold : (size_t)16 << 20;
    s->cache = cache_new();
    return s;
}

void tok_stream_free(tok_stream_t **ps)
{
    if (!ps || !*ps)
        return;
    free((*ps)->buf);
    free((*ps)->cache);
    free(*ps);
    *ps = NULL;
}

int tok_stream_feed(tok_stream_t *s, const void *data, size_t len, tok_ids_t *out, gl_err_t *err)
{
    const uint8_t *d = data;
    while (len) {
        size_t take = len;
        if (s->len + take > s->max_hold)
            take = s->max_hold > s->len ? s->max_hold - s->len : 0;
        if (take) {
            if (s->len + take > s->cap) {
                size_t c = s->cap ? s->cap : 65536;
                while (c < s->len + take)
                    c *= 2;
                uint8_t *b = realloc(s->buf, c);
                if (!b)
                    return gl_err_set(err, GL_ENOMEM, "out of memory buffering %zu bytes", c);
                s->buf = b;
                s->cap = c;
            }
            memcpy(s->buf + s->len, d, take);
            s->len += take;
            d += take;
            len -= take;
        }
        /* Encode up to the last safe cut once a good amount is buffered. */
        if (s->len >= 65536 || s->len >= s->max_hold) {
            size_t cut = tok_safe_cut(s->buf, s->len, s->scanned > 2 ? s->scanned - 2 : 0);
            if (!cut && s->len >= s->max_hold)
                cut = s->len; /* no safe place in max_hold bytes: cut anyway */
            s->scanned = s->len;
            if (cut) {
                int rc = encode_cached(s->v, s->buf, cut, s->allowed, out, s->cache, err);
                if (rc)
                    return rc;
                memmove(s->buf, s->buf + cut, s->len - cut);
                s->len -= cut;
                s->scanned = s->len;
            }
        }
    }
    return GL_OK;
}

int tok_stream_finish(tok_stream_t *s, tok_ids_t *out, gl_err_t *err)
{
    int rc = encode_cached(s->v, s->buf, s->len, s->allowed, out, s->cache, err);
    s->len = s->scanned = 0;
    return rc;
}
