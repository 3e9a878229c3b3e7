/* train.c — learning a byte-level BPE vocabulary from text.
 *
 * Two phases. Counting: documents are cut into chunks at safe cuts
 * (tok_pretok_cut) so that a single huge input also spreads over threads;
 * each thread pre-tokenizes its chunks and counts pieces in its own hash
 * map (bytes -> count, open addressing over an arena); the maps are then
 * folded into one. Pieces never span documents.
 *
 * Merging: every distinct piece becomes a "word", an array of token ids
 * (its bytes at first) with a weight, its count. Pair counts over all
 * words are kept in a hash map (left << 32 | right -> pair index) with,
 * per pair, the list of words it occurs in, and a max-heap of (count,
 * left, right). A merge pops the top, checks it against the live count
 * (entries are lazy: counts of existing pairs only fall, so a stale entry
 * is an overestimate; it is re-pushed with the live count), rewrites only
 * the words that hold the pair, and adjusts the counts of the neighbouring
 * pairs — no recount of everything per merge. The pairs that gained count
 * are pushed once after each merge.
 *
 * The rule, documented in tokenizer.h: merge the pair with the largest
 * count (adjacent pairs in every word, overlapping ones counted, times the
 * word's count); ties to the smallest (left id, right id); occurrences in
 * a word are merged left to right. The result does not depend on the
 * number of threads or on the order of the inputs' pieces in memory.
 * A vocabulary of 30k tokens from 10 MB of text takes about a second.
 */
#include "tokenizer/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a bytes -> u64 map over an arena ------------------------------------ */

typedef struct {
    uint64_t hash;
    uint64_t val;
    uint32_t off, len; /* key bytes: arena[off .. off + len) */
} bentry_t;

typedef struct {
    bentry_t *e; /* cap slots; len == UINT32_MAX marks empty */
    size_t cap, n;
    uint8_t *arena;
    size_t alen, acap;
} bmap_t;

static int bmap_init(bmap_t *m, size_t cap)
{
    memset(m, 0, sizeof *m);
    m->cap = cap;
    m->e = malloc(cap * sizeof *m->e);
    if (!m->e)
        return -1;
    for (size_t i = 0; i < cap; i++)
        m->e[i].len = UINT32_MAX;
    return 0;
}

static void bmap_free(bmap_t *m)
{
    free(m->e);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

static int bmap_grow(bmap_t *m)
{
    bmap_t n = *m;
    n.cap = m->cap * 2;
    n.e = malloc(n.cap * sizeof *n.e);
    if (!n.e)
        return -1;
    for (size_t i = 0; i < n.cap; i++)
        n.e[i].len = UINT32_MAX;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->e[i].len == UINT32_MAX)
            continue;
        size_t j = m->e[i].hash & (n.cap - 1);
        while (n.e[j].len != UINT32_MAX)
            j = (j + 1) & (n.cap - 1);
        n.e[j] = m->e[i];
    }
    free(m->e);
    m->e = n.e;
    m->cap = n.cap;
    return 0;
}

/* The entry for key (inserted with val 0 when absent), or NULL on OOM. */
static bentry_t *bmap_get(bmap_t *m, const uint8_t *p, size_t n, uint64_t h, int insert)
{
    size_t i = h & (m->cap - 1);
    for (;;) {
        bentry_t *e = &m->e[i];
        if (e->len == UINT32_MAX)
            break;
        if (e->hash == h && e->len == n && !memcmp(m->arena + e->off, p, n))
            return e;
        i = (i + 1) & (m->cap - 1);
    }
    if (!insert || m->alen + n > UINT32_MAX)
        return NULL; /* absent, or the arena's 32-bit offsets are full */
    if (2 * (m->n + 1) > m->cap) {
        if (bmap_grow(m))
            return NULL;
        return bmap_get(m, p, n, h, insert);
    }
    if (m->alen + n > m->acap) {
        size_t c = m->acap ? m->acap : 1 << 16;
        while (c < m->alen + n)
            c *= 2;
        uint8_t *a = realloc(m->arena, c);
        if (!a)
            return NULL;
        m->arena = a;
        m->acap = c;
    }
    memcpy(m->arena + m->alen, p, n);
    bentry_t *e = &m->e[i];
    e->hash = h;
    e->val = 0;
    e->off = (uint32_t)m->alen;
    e->len = (uint32_t)n;
    m->alen += n;
    m->n++;
    return e;
}

/* ---- counting -------------------------------------------------------------- */

struct tok_trainer {
    tok_train_opts_t o;
    bmap_t pieces;
};

tok_trainer_t *tok_trainer_new(const tok_train_opts_t *opts, gl_err_t *err)
{
    tok_trainer_t *t = calloc(1, sizeof *t);
    if (!t || bmap_init(&t->pieces, 1 << 16)) {
        free(t);
        gl_err_set(err, GL_ENOMEM, "out of memory");
        return NULL;
    }
    t->o = *opts;
    if (!t->o.pattern)
        t->o.pattern = TOK_PRETOK_O200K;
    if (!t->o.name)
        t->o.name = "gltok";
    if (t->o.threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        t->o.threads = c > 0 ? (int)c : 1;
    }
    if (t->o.vocab_size < 256) {
        gl_err_set(err, GL_EINVAL, "vocabulary size %u is below 256", t->o.vocab_size);
        tok_trainer_free(&t);
    }
    return t;
}

void tok_trainer_free(tok_trainer_t **pt)
{
    if (!pt || !*pt)
        return;
    bmap_free(&(*pt)->pieces);
    free(*pt);
    *pt = NULL;
}

size_t tok_trainer_pieces(const tok_trainer_t *t) { return t->pieces.n; }

typedef struct {
    const uint8_t *p;
    size_t n;
} chunk_t;

typedef struct {
    const chunk_t *chunks;
    size_t n;
    tok_pretok_t pattern;
    atomic_size_t next;
    atomic_int oom;
} count_job_t;

typedef struct {
    count_job_t *job;
    bmap_t map;
} count_arg_t;

static void *count_worker(void *arg)
{
    count_arg_t *a = arg;
    count_job_t *j = a->job;
    for (;;) {
        size_t k = atomic_fetch_add(&j->next, 1);
        if (k >= j->n || atomic_load(&j->oom))
            break;
        const uint8_t *s = j->chunks[k].p;
        size_t len = j->chunks[k].n;
        for (size_t pos = 0; pos < len;) {
            size_t n = tok_pretok_next(j->pattern, s, len, pos);
            if (n == 0 || n > len - pos)
                n = 1;
            if (n > TOK_MAX_TOKEN_BYTES) { /* longer than any token may be: not counted */
                pos += n;
                continue;
            }
            bentry_t *e = bmap_get(&a->map, s + pos, n, tok_hash_bytes(s + pos, n), 1);
            if (!e) {
                atomic_store(&j->oom, 1);
                return NULL;
            }
            e->val++;
            pos += n;
        }
    }
    return NULL;
}

int tok_trainer_add(tok_trainer_t *t, const tok_doc_t *docs, size_t n, gl_err_t *err)
{
    /* Chunks of about 1 MB, cut at safe places. */
    size_t nc = 0, cc = 64;
    chunk_t *ch = malloc(cc * sizeof *ch);
    int rc = GL_OK;
    int nt = t->o.threads > 64 ? 64 : t->o.threads;
    count_arg_t args[64];
    pthread_t th[64];
    int started = 0;
    memset(args, 0, sizeof args);
    if (!ch)
        return gl_err_set(err, GL_ENOMEM, "out of memory");
    for (size_t d = 0; d < n; d++) {
        const uint8_t *s = docs[d].text;
        size_t len = docs[d].len, pos = 0;
        while (pos < len) {
            size_t end = len;
            if (len - pos > (1 << 20))
                end = pos + tok_pretok_cut(s + pos, len - pos, 1 << 20);
            if (nc == cc) {
                cc *= 2;
                chunk_t *c2 = realloc(ch, cc * sizeof *ch);
                if (!c2) {
                    rc = gl_err_set(err, GL_ENOMEM, "out of memory");
                    goto out;
                }
                ch = c2;
            }
            ch[nc].p = s + pos;
            ch[nc++].n = end - pos;
            pos = end;
        }
    }
    count_job_t job = {.chunks = ch, .n = nc, .pattern = t->o.pattern};
    atomic_init(&job.next, 0);
    atomic_init(&job.oom, 0);
    if ((size_t)nt > nc)
        nt = nc ? (int)nc : 1;
    for (int i = 0; i < nt; i++) {
        args[i].job = &job;
        if (i > 0 && bmap_init(&args[i].map, 1 << 14)) {
            rc = gl_err_set(err, GL_ENOMEM, "out of memory");
            goto out;
        }
    }
    args[0].map = t->pieces; /* thread 0 counts straight into the trainer's map */
    for (int i = 1; i < nt; i++)
        if (!pthread_create(&th[i], NULL, count_worker, &args[i]))
            started = i;
        else
            break;
    count_worker(&args[0]);
    for (int i = 1; i <= started; i++)
        pthread_join(th[i], NULL);
    t->pieces = args[0].map;
    for (int i = 1; i < nt && !atomic_load(&job.oom); i++)
        for (size_t k = 0; k < args[i].map.cap; k++) {
            bentry_t *e = &args[i].map.e[k];
            if (e->len == UINT32_MAX)
                continue;
            bentry_t *f = bmap_get(&t->pieces, args[i].map.arena + e->off, e->len, e->hash, 1);
            if (!f) {
                atomic_store(&job.oom, 1);
                break;
            }
            f->val += e->val;
        }
    if (atomic_load(&job.oom))
        rc = gl_err_set(err, GL_ENOMEM, "out of memory counting pieces");
out:
    for (int i = 1; i < 64; i++)
        bmap_free(&args[i].map);
    free(ch);
    return rc;
}

/* ---- merging ---------------------------------------------------------------- */

typedef struct {
    int64_t count;
    uint32_t a, b;
} hent_t;

/* true when x comes out of the max-heap before y */
static inline int hbefore(const hent_t *x, const hent_t *y)
{
    if (x->count != y->count)
        return x->count > y->count;
    if (x->a != y->a)
        return x->a < y->a;
    return x->b < y->b;
}

typedef struct {
    hent_t *h;
    size_t n, cap;
} heap_t;

static int hpush(heap_t *hp, hent_t x)
{
    if (hp->n == hp->cap) {
        size_t c = hp->cap ? 2 * hp->cap : 1024;
        hent_t *p = realloc(hp->h, c * sizeof *p);
        if (!p)
            return -1;
        hp->h = p;
        hp->cap = c;
    }
    size_t i = hp->n++;
    while (i) {
        size_t par = (i - 1) / 2;
        if (!hbefore(&x, &hp->h[par]))
            break;
        hp->h[i] = hp->h[par];
        i = par;
    }
    hp->h[i] = x;
    return 0;
}

static hent_t hpop(heap_t *hp)
{
    hent_t top = hp->h[0], x = hp->h[--hp->n];
    size_t i = 0, m = hp->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && hbefore(&hp->h[c + 1], &hp->h[c]))
            c++;
        if (!hbefore(&hp->h[c], &x))
            break;
        hp->h[i] = hp->h[c];
        i = c;
    }
    if (m)
        hp->h[i] = x;
    return top;
}

typedef struct {
    uint32_t *w;
    uint32_t n, cap;
} wlist_t;

typedef struct {
    /* pair map: key -> index */
    uint64_t *keys; /* UINT64_MAX empty */
    uint32_t *idx;
    size_t cap, n;
    /* per pair */
    int64_t *count;
    wlist_t *where;
    uint32_t *stamp; /* merge number that last queued it for a push */
    uint64_t *pkey;  /* the pair itself: left << 32 | right */
    size_t pcap;
} pairs_t;

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static int pairs_grow_map(pairs_t *P)
{
    size_t cap = P->cap ? P->cap * 2 : 1 << 16;
    uint64_t *k = malloc(cap * sizeof *k);
    uint32_t *ix = malloc(cap * sizeof *ix);
    if (!k || !ix) {
        free(k);
        free(ix);
        return -1;
    }
    memset(k, 0xff, cap * sizeof *k);
    for (size_t i = 0; i < P->cap; i++) {
        if (P->keys[i] == UINT64_MAX)
            continue;
        size_t j = mix64(P->keys[i]) & (cap - 1);
        while (k[j] != UINT64_MAX)
            j = (j + 1) & (cap - 1);
        k[j] = P->keys[i];
        ix[j] = P->idx[i];
    }
    free(P->keys);
    free(P->idx);
    P->keys = k;
    P->idx = ix;
    P->cap = cap;
    return 0;
}

/* Index of pair (a, b), created with count 0 when absent; -1 on OOM. */
static int64_t pair_get(pairs_t *P, uint32_t a, uint32_t b)
{
    uint64_t key = (uint64_t)a << 32 | b;
    if (2 * (P->n + 1) > P->cap && pairs_grow_map(P))
        return -1;
    size_t j = mix64(key) & (P->cap - 1);
    while (P->keys[j] != UINT64_MAX) {
        if (P->keys[j] == key)
            return P->idx[j];
        j = (j + 1) & (P->cap - 1);
    }
    if (P->n == P->pcap) {
        size_t c = P->pcap ? 2 * P->pcap : 1 << 15;
        int64_t *cn = realloc(P->count, c * sizeof *cn);
        if (cn)
            P->count = cn;
        wlist_t *wh = realloc(P->where, c * sizeof *wh);
        if (wh)
            P->where = wh;
        uint32_t *st = realloc(P->stamp, c * sizeof *st);
        if (st)
            P->stamp = st;
        uint64_t *pk = realloc(P->pkey, c * sizeof *pk);
        if (pk)
            P->pkey = pk;
        if (!cn || !wh || !st || !pk)
            return -1;
        P->pcap = c;
    }
    size_t i = P->n++;
    P->keys[j] = key;
    P->idx[j] = (uint32_t)i;
    P->count[i] = 0;
    P->where[i] = (wlist_t){0};
    P->stamp[i] = UINT32_MAX;
    P->pkey[i] = key;
    return (int64_t)i;
}

static int64_t pair_find(const pairs_t *P, uint32_t a, uint32_t b)
{
    uint64_t key = (uint64_t)a << 32 | b;
    size_t j = mix64(key) & (P->cap - 1);
    while (P->keys[j] != UINT64_MAX) {
        if (P->keys[j] == key)
            return P->idx[j];
        j = (j + 1) & (P->cap - 1);
    }
    return -1;
}

static int wl_add(wlist_t *l, uint32_t w)
{
    if (l->n && l->w[l->n - 1] == w)
        return 0;
    if (l->n == l->cap) {
        uint32_t c = l->cap ? 2 * l->cap : 4;
        uint32_t *p = realloc(l->w, c * sizeof *p);
        if (!p)
            return -1;
        l->w = p;
        l->cap = c;
    }
    l->w[l->n++] = w;
    return 0;
}

typedef struct {
    pairs_t P;
    uint32_t *touched;
    size_t nt, ct;
    uint32_t merge_no;
    int oom;
} mstate_t;

static void adj(mstate_t *M, uint32_t a, uint32_t b, int64_t d, uint32_t w)
{
    int64_t i = d > 0 ? pair_get(&M->P, a, b) : pair_find(&M->P, a, b);
    if (i < 0) {
        M->oom |= d > 0;
        return;
    }
    M->P.count[i] += d;
    if (d > 0) {
        if (wl_add(&M->P.where[i], w))
            M->oom = 1;
        if (M->P.stamp[i] != M->merge_no) {
            M->P.stamp[i] = M->merge_no;
            if (M->nt == M->ct) {
                size_t c = M->ct ? 2 * M->ct : 256;
                uint32_t *p = realloc(M->touched, c * sizeof *p);
                if (!p) {
                    M->oom = 1;
                    return;
                }
                M->touched = p;
                M->ct = c;
            }
            M->touched[M->nt++] = (uint32_t)i;
        }
    }
}

tok_vocab_t *tok_trainer_finish(tok_trainer_t *t, gl_err_t *err)
{
    bmap_t *pm = &t->pieces;
    size_t nw = pm->n, total_sym = 0;
    uint32_t target = t->o.vocab_size;
    uint32_t *wstart = NULL, *wlen = NULL, *sym = NULL;
    int64_t *wcount = NULL;
    uint8_t *tb = NULL; /* token bytes arena */
    uint32_t *tstart = NULL, *tlen = NULL;
    size_t tblen = 0, tbcap = 0;
    uint32_t ntok = 256;
    bmap_t tmap = {0};
    heap_t heap = {0};
    mstate_t M = {0};
    tok_vocab_t *v = NULL;
    const uint8_t **tokp = NULL;
    int oom = 0;

    for (size_t i = 0; i < pm->cap; i++)
        if (pm->e[i].len != UINT32_MAX)
            total_sym += pm->e[i].len;
    if (target > TOK_MAX_IDS) {
        gl_err_set(err, GL_ERANGE, "vocabulary size %u is above %u", target, TOK_MAX_IDS);
        return NULL;
    }
    wstart = malloc((nw + 1) * sizeof *wstart);
    wlen = malloc((nw + 1) * sizeof *wlen);
    wcount = malloc((nw + 1) * sizeof *wcount);
    sym = malloc((total_sym + 1) * sizeof *sym);
    tstart = malloc((size_t)target * sizeof *tstart);
    tlen = malloc((size_t)target * sizeof *tlen);
    tbcap = 4096;
    tb = malloc(tbcap);
    if (!wstart || !wlen || !wcount || !sym || !tstart || !tlen || !tb || bmap_init(&tmap, 1 << 12)) {
        oom = 1;
        goto out;
    }
    /* words in arena order (deterministic for given inputs) */
    size_t w = 0, s = 0;
    for (size_t i = 0; i < pm->cap; i++) {
        bentry_t *e = &pm->e[i];
        if (e->len == UINT32_MAX)
            continue;
        wstart[w] = (uint32_t)s;
        wlen[w] = e->len;
        wcount[w] = (int64_t)e->val;
        for (uint32_t k = 0; k < e->len; k++)
            sym[s++] = pm->arena[e->off + k];
        w++;
    }
    for (uint32_t b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        tb[b] = c;
        tstart[b] = b;
        tlen[b] = 1;
        bentry_t *e = bmap_get(&tmap, &c, 1, tok_hash_bytes(&c, 1), 1);
        if (!e) {
            oom = 1;
            goto out;
        }
        e->val = b;
    }
    tblen = 256;
    M.merge_no = 0;
    for (size_t i = 0; i < nw; i++) {
        uint32_t *p = sym + wstart[i];
        for (uint32_t k = 0; k + 1 < wlen[i]; k++)
            adj(&M, p[k], p[k + 1], wcount[i], (uint32_t)i);
    }
    if (M.oom) {
        oom = 1;
        goto out;
    }
    /* Initial heap: every pair. */
    for (size_t pi = 0; pi < M.P.n; pi++)
        if (M.P.count[pi] > 0 &&
            hpush(&heap, (hent_t){M.P.count[pi], (uint32_t)(M.P.pkey[pi] >> 32), (uint32_t)M.P.pkey[pi]})) {
            oom = 1;
            goto out;
        }
    M.nt = 0;

    while (ntok < target && heap.n) {
        hent_t top = hpop(&heap);
        int64_t pi = pair_find(&M.P, top.a, top.b);
        if (pi < 0 || M.P.count[pi] <= 0)
            continue;
        if (M.P.count[pi] != top.count) {
            if (hpush(&heap, (hent_t){M.P.count[pi], top.a, top.b})) {
                oom = 1;
                goto out;
            }
            continue;
        }
        /* the new token's bytes */
        uint32_t la = tlen[top.a], lb = tlen[top.b];
        if (tblen + la + lb > tbcap) {
            while (tblen + la + lb > tbcap)
                tbcap *= 2;
            uint8_t *p = realloc(tb, tbcap);
            if (!p) {
                oom = 1;
                goto out;
            }
            tb = p;
        }
        memcpy(tb + tblen, tb + tstart[top.a], la);
        memcpy(tb + tblen + la, tb + tstart[top.b], lb);
        uint64_t h = tok_hash_bytes(tb + tblen, la + lb);
        bentry_t *e = bmap_get(&tmap, tb + tblen, la + lb, h, 0);
        uint32_t c;
        if (e) {
            c = (uint32_t)e->val; /* the bytes are a token already: reuse it */
        } else {
            c = ntok++;
            tstart[c] = (uint32_t)tblen;
            tlen[c] = la + lb;
            tblen += la + lb;
            e = bmap_get(&tmap, tb + tstart[c], tlen[c], h, 1);
            if (!e) {
                oom = 1;
                goto out;
            }
            e->val = c;
        }
        /* rewrite the words that hold (a, b) */
        wlist_t L = M.P.where[pi];
        M.P.where[pi] = (wlist_t){0};
        M.merge_no++;
        M.nt = 0;
        for (uint32_t k = 0; k < L.n; k++) {
            uint32_t wi = L.w[k];
            uint32_t *p = sym + wstart[wi], n = wlen[wi], r = 0, o = 0;
            int64_t wc = wcount[wi];
            while (r < n) {
                if (r + 1 < n && p[r] == top.a && p[r + 1] == top.b) {
                    if (o > 0) {
                        adj(&M, p[o - 1], top.a, -wc, wi);
                        adj(&M, p[o - 1], c, wc, wi);
                    }
                    adj(&M, top.a, top.b, -wc, wi);
                    if (r + 2 < n) {
                        adj(&M, top.b, p[r + 2], -wc, wi);
                        adj(&M, c, p[r + 2], wc, wi);
                    }
                    p[o++] = c;
                    r += 2;
                } else {
                    p[o++] = p[r++];
                }
            }
            wlen[wi] = o;
        }
        free(L.w);
        if (M.oom) {
            oom = 1;
            goto out;
        }
        /* the pairs that gained count go in once, with their live counts */
        for (size_t j = 0; j < M.nt; j++) {
            uint32_t q = M.touched[j];
            if (M.P.count[q] > 0 &&
                hpush(&heap, (hent_t){M.P.count[q], (uint32_t)(M.P.pkey[q] >> 32), (uint32_t)M.P.pkey[q]})) {
                oom = 1;
                goto out;
            }
        }
        if (t->o.progress)
            gl_progress_add(t->o.progress, 1, 0);
    }
    tokp = malloc((size_t)ntok * sizeof *tokp);
    if (!tokp) {
        oom = 1;
        goto out;
    }
    for (uint32_t i = 0; i < ntok; i++)
        tokp[i] = tb + tstart[i];
    v = tok_vocab_from_tokens(t->o.name, t->o.pattern, tokp, tlen, ntok, err);
    if (v && t->o.chat_roles && tok_vocab_add_chat_roles(v, err))
        tok_vocab_free(&v);
out:
    if (oom)
        gl_err_set(err, GL_ENOMEM, "out of memory training the vocabulary");
    free(tokp);
    free(wstart);
    free(wlen);
    free(wcount);
    free(sym);
    free(tb);
    free(tstart);
    free(tlen);
    bmap_free(&tmap);
    free(heap.h);
    for (size_t i = 0; i < M.P.n; i++)
        free(M.P.where[i].w);
    free(M.P.keys);
    free(M.P.idx);
    free(M.P.count);
    free(M.P.where);
    free(M.P.stamp);
    free(M.P.pkey);
    free(M.touched);
    return v;
}
