/* store.c — the labeling service's durable state in one LMDB environment,
 * and the rules of the work: leases, overlap, who may label what.
 *
 * Everything the service knows lives in LMDB (folder <db>/data.mdb), in
 * these databases:
 *
 *   meta         "magic" -> "GLLABEL\0" + u32 version; "next_task",
 *                "next_sub" -> u64 counters; "replies_pruned" -> u64
 *   contractors  id -> Contractor            keys  public key (32) -> id
 *   tasks        u64be id -> Task: the texts (prompt, candidates), written
 *                once at creation
 *   state        u64be id -> Task without the texts: overlap, authors,
 *                done_by, leases, skipped_by, candidate_count. Leases and
 *                submissions read and rewrite only this small record, so
 *                long candidates are not copied on every label
 *   open_demo    u64be id -> i64  tasks still wanting labels, per kind:
 *   open_rank    u64be id -> i64  what lease scans; the value is the time
 *                (ms) until which every slot is leased (0: a slot is free),
 *                so the scan passes leased tasks without reading them
 *   subs         u64be id -> Submission      (export reads them in order)
 *   idem         contractor \0 u64be request id -> packed Reply, or for a
 *                lease 'L' + the u64be task ids (the reply is rebuilt)
 *   idem_age     u64be ms stored + the idem key -> ""   the same replies in
 *                the order they were stored, for pruning (version 2)
 *   counts       contractor -> u64[4] demonstrations, rankings, skips, prompts
 *   touched      contractor \0 u64be task -> ""   tasks a contractor may never
 *                get again (labeled, skipped, authored): lease skips them
 *                without unpacking the task record
 *   cursors      contractor \0 kind -> u64 id of the last task leased: the
 *                next lease scans the open queue from there, wrapping round
 *
 * The server's one writer thread calls label_store_apply() with every
 * request that arrived since its last commit: one write transaction, one
 * synced commit for the whole batch (group commit), and only then are the
 * replies sent — an acknowledged label has reached the disk. Each reply is
 * stored under (contractor, request id) in the same transaction, so a
 * retried request gets the stored reply, never a second label. The rules
 * are evaluated against the task record at `now`: a lease past its expiry
 * no longer holds a slot, so an abandoned task returns to the queue
 * without a sweeper.
 *
 * Stored replies are kept for opts.reply_retention_seconds: each batch's
 * transaction (and the server's writer when idle) deletes the oldest ones
 * past it, at most opts.prune_batch a transaction, walking idem_age from
 * its first key, so the work is proportional to what is pruned. A retry
 * arriving later is applied again. A version 1 store (no idem_age) is
 * upgraded at open: its replies are indexed as stored at the upgrade.
 * Admin commands (import, revoke, export, backup) open the same
 * environment from another process; LMDB's lock file serialises writers
 * across processes.
 *
 * Workload: tens of thousands of tasks, hundreds of contractors, bursts of
 * thousands of small submissions a second. A lease scans the open queue of
 * one kind from where this contractor's last lease stopped (wrapping round,
 * so a slot freed behind it is found too), and skips tasks it may never
 * get by a key lookup in `touched`, so a contractor far ahead of the others
 * does not make every lease re-read the tasks they already did.
 */
#include "labeler/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define DEFAULT_MAP (256ull << 20)

static const char DEMO_GUIDE[] =
    "Write the response you would want a helpful, honest and harmless assistant to give.\n"
    "Follow the instruction in the prompt; if it is ambiguous, answer the most likely intent.\n"
    "Be correct and complete but not padded. Refuse clearly and briefly if the request is harmful.\n"
    "Skip (with a reason) prompts you cannot answer well.\n";
static const char RANK_GUIDE[] =
    "Order the candidate responses from best to worst: most helpful, truthful and harmless first.\n"
    "Give equal ranks only when you truly cannot prefer one. Flag candidates that are unsafe,\n"
    "factually wrong, or fail to follow the instruction, and rate the best one 1 (bad) to 7 (excellent).\n";

static int db_err(gl_err_t *err, int rc, const char *what, const label_store_t *s)
{
    return gl_err_set(err, rc == MDB_MAP_FULL ? GL_ERANGE : GL_EDB, "%s: %s: %s", s ? s->dir : "label store",
                      what, mdb_strerror(rc));
}

/* ---- open / close ------------------------------------------------------- */

static int grow(label_store_t *s, gl_err_t *err)
{
    MDB_envinfo info;
    pthread_rwlock_wrlock(&s->resize_lock);
    mdb_env_info(s->env, &info);
    int rc = mdb_env_set_mapsize(s->env, info.me_mapsize * 2);
    pthread_rwlock_unlock(&s->resize_lock);
    if (rc)
        return db_err(err, rc, "growing the map", s);
    s->growths++;
    return GL_OK;
}

static int txn_begin(label_store_t *s, unsigned flags, MDB_txn **txn, gl_err_t *err)
{
    for (int tries = 0;; tries++) {
        int rc = mdb_txn_begin(s->env, NULL, flags, txn);
        if (rc == MDB_MAP_RESIZED && tries < 4) {
            /* another process (an admin import) grew the map */
            pthread_rwlock_wrlock(&s->resize_lock);
            mdb_env_set_mapsize(s->env, 0);
            pthread_rwlock_unlock(&s->resize_lock);
            continue;
        }
        if (rc)
            return db_err(err, rc, "beginning a transaction", s);
        return GL_OK;
    }
}

int label_store_read_txn(label_store_t *s, MDB_txn **txn, gl_err_t *err)
{
    return txn_begin(s, MDB_RDONLY, txn, err);
}

static int upgrade_v1(label_store_t *s, gl_err_t *err);

label_store_t *label_store_open(const char *dir, const label_store_opts_t *opts, gl_err_t *err)
{
    label_store_t *s = gl_xcalloc(1, sizeof *s);
    MDB_txn *txn = NULL;
    int rc, upgrade = 0;
    pthread_rwlock_init(&s->resize_lock, NULL);
    s->dir = gl_xstrdup(dir);
    if (opts)
        s->opts = *opts;
    if (!s->opts.lease_seconds)
        s->opts.lease_seconds = 1800;
    if (!s->opts.prompt_overlap)
        s->opts.prompt_overlap = 1;
    if (!s->opts.demo_guidelines)
        s->opts.demo_guidelines = DEMO_GUIDE;
    if (!s->opts.rank_guidelines)
        s->opts.rank_guidelines = RANK_GUIDE;
    if (!s->opts.reply_retention_seconds)
        s->opts.reply_retention_seconds = LABEL_REPLY_RETENTION_DEFAULT;
    if (!s->opts.prune_batch)
        s->opts.prune_batch = LABEL_PRUNE_BATCH_DEFAULT;
    if (gl_mkdir_p(dir, err))
        goto fail;
    if ((rc = mdb_env_create(&s->env))) {
        db_err(err, rc, "mdb_env_create", s);
        goto fail;
    }
    mdb_env_set_maxdbs(s->env, 16);
    mdb_env_set_maxreaders(s->env, 256);
    mdb_env_set_mapsize(s->env, s->opts.map_size ? s->opts.map_size : DEFAULT_MAP);
    if ((rc = mdb_env_open(s->env, dir, 0, 0600))) {
        db_err(err, rc, "opening the environment", s);
        mdb_env_close(s->env);
        s->env = NULL;
        goto fail;
    }
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn))) {
        db_err(err, rc, "beginning a transaction", s);
        goto fail;
    }
    struct {
        const char *name;
        MDB_dbi *dbi;
    } dbs[] = {{"meta", &s->meta},           {"contractors", &s->contractors}, {"keys", &s->keys},
               {"tasks", &s->tasks},         {"open_demo", &s->open_demo},     {"open_rank", &s->open_rank},
               {"subs", &s->subs},           {"idem", &s->idem},               {"counts", &s->counts},
               {"touched", &s->touched},     {"cursors", &s->cursors},         {"state", &s->state},
               {"idem_age", &s->idem_age}};
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++)
        if ((rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi))) {
            db_err(err, rc, dbs[i].name, s);
            goto fail;
        }
    uint8_t magic[12];
    memcpy(magic, LABEL_STORE_MAGIC, 8);
    uint32_t v = LABEL_STORE_VERSION;
    memcpy(magic + 8, &v, 4);
    MDB_val k = {5, "magic"}, val;
    rc = mdb_get(txn, s->meta, &k, &val);
    if (rc == MDB_NOTFOUND) {
        val.mv_size = sizeof magic;
        val.mv_data = magic;
        if ((rc = mdb_put(txn, s->meta, &k, &val, 0))) {
            db_err(err, rc, "writing the magic", s);
            goto fail;
        }
    } else if (rc) {
        db_err(err, rc, "reading the magic", s);
        goto fail;
    } else if (val.mv_size != sizeof magic || memcmp(val.mv_data, LABEL_STORE_MAGIC, 8)) {
        gl_err_set(err, GL_ECORRUPT, "%s: not a gptline label store (bad magic)", dir);
        goto fail;
    } else {
        uint32_t got;
        memcpy(&got, (uint8_t *)val.mv_data + 8, 4);
        if (got == 1) {
            upgrade = 1;
        } else if (got != LABEL_STORE_VERSION) {
            gl_err_set(err, GL_EVERSION, "%s: label store version %u, this build reads 1 and %u", dir, got,
                       LABEL_STORE_VERSION);
            goto fail;
        }
    }
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc) {
        db_err(err, rc, "committing", s);
        goto fail;
    }
    if (upgrade && upgrade_v1(s, err))
        goto fail;
    return s;
fail:
    if (txn)
        mdb_txn_abort(txn);
    label_store_close(&s);
    return NULL;
}

void label_store_close(label_store_t **sp)
{
    if (!sp || !*sp)
        return;
    label_store_t *s = *sp;
    if (s->env)
        mdb_env_close(s->env);
    pthread_rwlock_destroy(&s->resize_lock);
    free(s->dir);
    free(s);
    *sp = NULL;
}

unsigned label_store_map_growths(const label_store_t *s) { return s->growths; }

/* ---- small helpers ------------------------------------------------------ */

/* The meta counter name (absent: first) gets add added; *old (may be NULL)
 * gets its value before. */
static int meta_add(label_store_t *s, MDB_txn *txn, const char *name, uint64_t first, uint64_t add, uint64_t *old)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    uint64_t cur = first;
    int rc = mdb_get(txn, s->meta, &k, &v);
    if (rc == 0 && v.mv_size == 8)
        memcpy(&cur, v.mv_data, 8);
    else if (rc && rc != MDB_NOTFOUND)
        return rc;
    if (old)
        *old = cur;
    cur += add;
    v.mv_size = 8;
    v.mv_data = &cur;
    return mdb_put(txn, s->meta, &k, &v, 0);
}

/* The next id of the sequence name (ids start at 1). */
static int meta_next(label_store_t *s, MDB_txn *txn, const char *name, uint64_t *out)
{
    return meta_add(s, txn, name, 1, 1, out);
}

static int put_msg(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    MDB_val v = {n, NULL};
    int rc = mdb_put(txn, dbi, k, &v, MDB_RESERVE);
    if (rc)
        return rc;
    protobuf_c_message_pack(m, v.mv_data);
    return 0;
}

/* Reads task id from one of the two task databases (the task with its
 * texts, or its small state record) and decodes it. */
static int get_task_record(label_store_t *s, MDB_txn *txn, MDB_dbi dbi, const char *what, uint64_t id,
                           Gptline__Label__Task **out, gl_err_t *err)
{
    uint8_t kb[8];
    label_be64(kb, id);
    MDB_val k = {8, kb}, v;
    *out = NULL;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return gl_err_set(err, GL_ENOTFOUND, "task %llu does not exist", (unsigned long long)id);
    if (rc)
        return db_err(err, rc, "reading a task", s);
    *out = gptline__label__task__unpack(NULL, v.mv_size, v.mv_data);
    if (!*out)
        return gl_err_set(err, GL_ECORRUPT, "%s: task %llu: %s does not decode", s->dir, (unsigned long long)id,
                          what);
    return GL_OK;
}

int label_store_get_task(label_store_t *s, MDB_txn *txn, uint64_t id, Gptline__Label__Task **out,
                         gl_err_t *err)
{
    return get_task_record(s, txn, s->tasks, "record", id, out, err);
}

static int get_state(label_store_t *s, MDB_txn *txn, uint64_t id, Gptline__Label__Task **out, gl_err_t *err)
{
    return get_task_record(s, txn, s->state, "state record", id, out, err);
}

/* Writes a task's state record (t holds no texts: it came from get_state). */
static int put_state(label_store_t *s, MDB_txn *txn, const Gptline__Label__Task *t)
{
    uint8_t kb[8];
    label_be64(kb, t->id);
    MDB_val k = {8, kb};
    return put_msg(txn, s->state, &k, &t->base);
}

/* Writes a new task: its texts once, and its state without them. */
static int put_new_task(label_store_t *s, MDB_txn *txn, Gptline__Label__Task *t)
{
    uint8_t kb[8];
    label_be64(kb, t->id);
    MDB_val k = {8, kb};
    t->candidate_count = (uint32_t)t->n_candidates;
    int rc = put_msg(txn, s->tasks, &k, &t->base);
    if (rc)
        return rc;
    Gptline__Label__Task st = *t; /* shallow: only packed */
    st.prompt = (char *)"";
    st.n_candidates = 0;
    st.candidates = NULL;
    st.source_id = (char *)"";
    return put_state(s, txn, &st);
}

static MDB_dbi open_db(label_store_t *s, Gptline__Label__TaskKind kind)
{
    return kind == GPTLINE__LABEL__TASK_KIND__RANKING ? s->open_rank : s->open_demo;
}

static int has(char **list, size_t n, const char *c)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], c))
            return 1;
    return 0;
}

static size_t active_leases(const Gptline__Label__Task *t, int64_t now, const char *except)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n_leases; i++)
        if (t->leases[i]->expires_unix_ms > now && (!except || strcmp(t->leases[i]->contractor, except)))
            n++;
    return n;
}

static Gptline__Label__Lease *lease_of(const Gptline__Label__Task *t, const char *c)
{
    for (size_t i = 0; i < t->n_leases; i++)
        if (!strcmp(t->leases[i]->contractor, c))
            return t->leases[i];
    return NULL;
}

/* Removes expired leases and c's lease (c may be NULL); the removed entries
 * are freed. Returns how many were removed. */
static size_t prune_leases(Gptline__Label__Task *t, int64_t now, const char *c)
{
    size_t w = 0, removed = 0;
    for (size_t i = 0; i < t->n_leases; i++) {
        Gptline__Label__Lease *l = t->leases[i];
        if (l->expires_unix_ms <= now || (c && !strcmp(l->contractor, c))) {
            free(l->contractor);
            free(l);
            removed++;
        } else {
            t->leases[w++] = l;
        }
    }
    t->n_leases = w;
    return removed;
}

/* May contractor c take a slot of task t now? Sets *why when not. */
static int eligible(const Gptline__Label__Task *t, const char *c, int64_t now, const char **why)
{
    if (t->prompt_author && !strcmp(t->prompt_author, c)) {
        *why = "you wrote this prompt";
        return 0;
    }
    if (has(t->candidate_authors, t->n_candidate_authors, c)) {
        *why = "you wrote one of the candidates (nobody ranks their own writing)";
        return 0;
    }
    Gptline__Label__Lease *mine = lease_of(t, c);
    if (mine && mine->expires_unix_ms > now) {
        *why = "the task is already leased to you";
        return 0;
    }
    if (has(t->done_by, t->n_done_by, c)) {
        *why = "you already labeled this task";
        return 0;
    }
    if (has(t->skipped_by, t->n_skipped_by, c)) {
        *why = "you skipped this task";
        return 0;
    }
    if (t->n_done_by + active_leases(t, now, c) >= t->overlap) {
        *why = "the task has all the labels it needs or is leased to others";
        return 0;
    }
    return 1;
}

/* Heap-allocated protobuf-c strings and repeated fields, so that a task
 * record unpacked by protobuf-c (allocator NULL = malloc) can be edited in
 * place and freed with free_unpacked. */
static void push_str(char ***list, size_t *n, const char *s)
{
    *list = gl_xrealloc(*list, (*n + 1) * sizeof **list);
    (*list)[(*n)++] = gl_xstrdup(s);
}

static void add_lease(Gptline__Label__Task *t, const char *c, int64_t now, int64_t expires)
{
    Gptline__Label__Lease *l = gl_xmalloc(sizeof *l);
    gptline__label__lease__init(l);
    l->contractor = gl_xstrdup(c);
    l->leased_unix_ms = now;
    l->expires_unix_ms = expires;
    t->leases = gl_xrealloc(t->leases, (t->n_leases + 1) * sizeof *t->leases);
    t->leases[t->n_leases++] = l;
}

/* ---- contractors -------------------------------------------------------- */

static int get_contractor(label_store_t *s, MDB_txn *txn, const char *id, Gptline__Label__Contractor **out)
{
    MDB_val k = {strlen(id), (void *)id}, v;
    *out = NULL;
    int rc = mdb_get(txn, s->contractors, &k, &v);
    if (rc)
        return rc;
    *out = gptline__label__contractor__unpack(NULL, v.mv_size, v.mv_data);
    return *out ? 0 : MDB_CORRUPTED;
}

/* Runs fn in a write transaction, growing the map and retrying when it
 * fills. fn returns an MDB code (0 ok) or, as a negative number, a gl code
 * it has set in err. */
static int write_txn(label_store_t *s, int (*fn)(label_store_t *, MDB_txn *, void *, gl_err_t *), void *ctx,
                     gl_err_t *err)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        MDB_txn *txn;
        int rc = txn_begin(s, 0, &txn, err);
        if (rc)
            return rc;
        rc = fn(s, txn, ctx, err);
        if (rc) {
            mdb_txn_abort(txn);
        } else {
            rc = mdb_txn_commit(txn);
        }
        if (rc == MDB_MAP_FULL) {
            if ((rc = grow(s, err)))
                return rc;
            continue;
        }
        if (rc < 0)
            return -rc;
        if (rc)
            return db_err(err, rc, "write", s);
        return GL_OK;
    }
    return gl_err_set(err, GL_ERANGE, "%s: the map keeps filling", s->dir);
}

typedef struct {
    const char *id;
    uint8_t key[32];
    Gptline__Label__Role role;
} add_ctx_t;

static int add_fn(label_store_t *s, MDB_txn *txn, void *vctx, gl_err_t *err)
{
    add_ctx_t *a = vctx;
    MDB_val kk = {32, a->key}, v;
    int rc = mdb_get(txn, s->keys, &kk, &v);
    if (rc == 0)
        return -gl_err_set(err, GL_EEXIST, "this public key is already registered (to %.*s)", (int)v.mv_size,
                           (char *)v.mv_data);
    if (rc != MDB_NOTFOUND)
        return rc;
    Gptline__Label__Contractor *old = NULL;
    rc = get_contractor(s, txn, a->id, &old);
    if (rc == 0 && !old->revoked) {
        gptline__label__contractor__free_unpacked(old, NULL);
        return -gl_err_set(err, GL_EEXIST, "contractor %s is already registered", a->id);
    }
    if (rc && rc != MDB_NOTFOUND)
        return rc;
    if (old) { /* re-activation with a new key: the old key stays refused */
        MDB_val ok = {old->public_key.len, old->public_key.data};
        mdb_del(txn, s->keys, &ok, NULL);
        gptline__label__contractor__free_unpacked(old, NULL);
    }
    Gptline__Label__Contractor c = GPTLINE__LABEL__CONTRACTOR__INIT;
    c.id = (char *)a->id;
    c.public_key.data = a->key;
    c.public_key.len = 32;
    c.role = a->role;
    c.created_unix_ms = (int64_t)(time(NULL)) * 1000;
    MDB_val ck = {strlen(a->id), (void *)a->id};
    if ((rc = put_msg(txn, s->contractors, &ck, &c.base)))
        return rc;
    v.mv_size = strlen(a->id);
    v.mv_data = (void *)a->id;
    return mdb_put(txn, s->keys, &kk, &v, 0);
}

int label_store_add_contractor(label_store_t *s, const char *id, const char *public_z85,
                               Gptline__Label__Role role, gl_err_t *err)
{
    add_ctx_t a = {.id = id, .role = role};
    if (!label_id_ok(id))
        return gl_err_set(err, GL_EINVAL, "contractor id '%s': use 1-%u of A-Z a-z 0-9 _ . -", id, LABEL_MAX_ID);
    if (strlen(public_z85) != 40 || !zmq_z85_decode(a.key, public_z85))
        return gl_err_set(err, GL_EINVAL, "public key of %s is not 40 characters of Z85", id);
    if (role != GPTLINE__LABEL__ROLE__CONTRACTOR && role != GPTLINE__LABEL__ROLE__ADMIN)
        return gl_err_set(err, GL_EINVAL, "unknown role");
    return write_txn(s, add_fn, &a, err);
}

static int revoke_fn(label_store_t *s, MDB_txn *txn, void *vctx, gl_err_t *err)
{
    const char *id = vctx;
    Gptline__Label__Contractor *c = NULL;
    int rc = get_contractor(s, txn, id, &c);
    if (rc == MDB_NOTFOUND)
        return -gl_err_set(err, GL_ENOTFOUND, "no contractor %s", id);
    if (rc)
        return rc;
    c->revoked = 1;
    c->revoked_unix_ms = (int64_t)(time(NULL)) * 1000;
    MDB_val kk = {c->public_key.len, c->public_key.data};
    rc = mdb_del(txn, s->keys, &kk, NULL);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    MDB_val ck = {strlen(id), (void *)id};
    if (!rc)
        rc = put_msg(txn, s->contractors, &ck, &c->base);
    gptline__label__contractor__free_unpacked(c, NULL);
    return rc;
}

int label_store_revoke(label_store_t *s, const char *id, gl_err_t *err)
{
    if (!label_id_ok(id))
        return gl_err_set(err, GL_EINVAL, "bad contractor id '%s'", id);
    return write_txn(s, revoke_fn, (void *)id, err);
}

int label_store_lookup_key(label_store_t *s, const uint8_t key[32], char *id, size_t cap, Gptline__Label__Role *role,
                           gl_err_t *err)
{
    MDB_txn *txn = NULL;
    int rc;
    pthread_rwlock_rdlock(&s->resize_lock);
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc == MDB_MAP_RESIZED) {
        pthread_rwlock_unlock(&s->resize_lock);
        pthread_rwlock_wrlock(&s->resize_lock);
        mdb_env_set_mapsize(s->env, 0);
        pthread_rwlock_unlock(&s->resize_lock);
        pthread_rwlock_rdlock(&s->resize_lock);
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    }
    if (rc) {
        txn = NULL;
        rc = db_err(err, rc, "key lookup", s);
        goto out;
    }
    MDB_val k = {32, (void *)key}, v;
    int mrc = mdb_get(txn, s->keys, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        rc = gl_err_set(err, GL_ENOTFOUND, "unknown public key");
        goto out;
    }
    if (mrc || v.mv_size >= cap) {
        rc = db_err(err, mrc ? mrc : MDB_CORRUPTED, "key lookup", s);
        goto out;
    }
    memcpy(id, v.mv_data, v.mv_size);
    id[v.mv_size] = 0;
    Gptline__Label__Contractor *c = NULL;
    mrc = get_contractor(s, txn, id, &c);
    if (mrc || c->revoked)
        rc = gl_err_set(err, GL_EINVAL, "contractor %s is revoked", id);
    else if (role)
        *role = c->role;
    if (c)
        gptline__label__contractor__free_unpacked(c, NULL);
out:
    if (txn)
        mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->resize_lock);
    return rc;
}

int label_store_list_contractors(label_store_t *s, char **text, gl_err_t *err)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    size_t len = 0;
    FILE *m = open_memstream(text, &len);
    int rc = txn_begin(s, MDB_RDONLY, &txn, err);
    if (rc)
        goto out;
    int mrc = mdb_cursor_open(txn, s->contractors, &cur);
    MDB_val k, v;
    for (mrc = mrc ? mrc : mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Gptline__Label__Contractor *c = gptline__label__contractor__unpack(NULL, v.mv_size, v.mv_data);
        if (!c)
            continue;
        char z85[41] = "";
        if (c->public_key.len == 32)
            zmq_z85_encode(z85, c->public_key.data, 32);
        json_t *o = json_pack("{s:s,s:s,s:b,s:s,s:I}", "id", c->id, "role",
                              c->role == GPTLINE__LABEL__ROLE__ADMIN ? "admin" : "contractor", "revoked",
                              (int)c->revoked, "public_key", z85, "created_unix_ms", (json_int_t)c->created_unix_ms);
        char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fprintf(m, "%s\n", line);
        free(line);
        json_decref(o);
        gptline__label__contractor__free_unpacked(c, NULL);
    }
    if (mrc != MDB_NOTFOUND)
        rc = db_err(err, mrc, "listing contractors", s);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
out:
    fclose(m);
    if (rc) {
        free(*text);
        *text = NULL;
    }
    return rc;
}

/* ---- import ------------------------------------------------------------- */

static int touch(label_store_t *s, MDB_txn *txn, const char *c, uint64_t id);

typedef struct {
    Gptline__Label__Task **tasks;
    size_t n, done;
} import_ctx_t;

static int import_fn(label_store_t *s, MDB_txn *txn, void *vctx, gl_err_t *err)
{
    (void)err;
    import_ctx_t *ic = vctx;
    size_t end = ic->done + 4096 < ic->n ? ic->done + 4096 : ic->n;
    for (size_t i = ic->done; i < end; i++) {
        Gptline__Label__Task *t = ic->tasks[i];
        int rc = meta_next(s, txn, "next_task", &t->id);
        if (!rc)
            rc = put_new_task(s, txn, t);
        uint8_t kb[8];
        int64_t zero = 0;
        label_be64(kb, t->id);
        MDB_val k = {8, kb}, v = {8, &zero};
        if (!rc)
            rc = mdb_put(txn, open_db(s, t->kind), &k, &v, 0);
        for (size_t j = 0; !rc && j < t->n_candidate_authors; j++)
            if (t->candidate_authors[j][0])
                rc = touch(s, txn, t->candidate_authors[j], t->id);
        if (rc)
            return rc;
    }
    return 0;
}

static void free_import_task(Gptline__Label__Task *t)
{
    free(t->prompt);
    if (t->source_id != protobuf_c_empty_string)
        free(t->source_id);
    for (size_t j = 0; j < t->n_candidates; j++)
        free(t->candidates[j]);
    for (size_t j = 0; j < t->n_candidate_authors; j++)
        free(t->candidate_authors[j]);
    free(t->candidates);
    free(t->candidate_authors);
    free(t);
}

static void free_import(import_ctx_t *ic)
{
    for (size_t i = 0; i < ic->n; i++)
        free_import_task(ic->tasks[i]);
    free(ic->tasks);
}

static int import_file(label_store_t *s, const char *path, uint32_t overlap, Gptline__Label__TaskKind kind,
                       uint64_t *added, uint64_t *bad, gl_err_t *err)
{
    import_ctx_t ic = {0};
    size_t cap = 0, lineno = 0;
    char *line = NULL, first_bad[300] = "";
    size_t lcap = 0;
    ssize_t len;
    int rc = GL_OK;
    *added = *bad = 0;
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f)
        return gl_err_set(err, GL_ENOTFOUND, "%s: %s", path, strerror(errno));
    int64_t now = (int64_t)time(NULL) * 1000;
    while ((len = getline(&line, &lcap, f)) > 0) {
        lineno++;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        const char *why = NULL;
        const char *prompt = NULL;
        json_t *cands = NULL;
        if (!o || !json_is_object(o)) {
            if (len <= 1 && o == NULL) /* blank line */
                continue;
            why = o ? "not a JSON object" : je.text;
            goto bad_line;
        }
        prompt = json_string_value(json_object_get(o, "prompt"));
        if (!prompt || !*prompt || !label_text_ok(prompt, LABEL_MAX_PROMPT)) {
            why = "no \"prompt\" string (or over the size limit)";
            goto bad_line;
        }
        cands = json_object_get(o, "candidates");
        if (kind == GPTLINE__LABEL__TASK_KIND__RANKING &&
            (!json_is_array(cands) || json_array_size(cands) < LABEL_MIN_CANDIDATES ||
             json_array_size(cands) > LABEL_MAX_CANDIDATES)) {
            why = "\"candidates\" must be an array of 2 to 9 responses";
            goto bad_line;
        }
        Gptline__Label__Task *t = gl_xmalloc(sizeof *t);
        gptline__label__task__init(t);
        t->kind = kind;
        t->prompt = gl_xstrdup(prompt);
        json_t *ov = json_object_get(o, "overlap");
        t->overlap = json_is_integer(ov) && json_integer_value(ov) > 0 && json_integer_value(ov) < 1000
                         ? (uint32_t)json_integer_value(ov)
                         : overlap;
        t->created_unix_ms = now;
        json_t *sid = json_object_get(o, "id");
        if (json_is_string(sid) && label_text_ok(json_string_value(sid), 256))
            t->source_id = gl_xstrdup(json_string_value(sid));
        else if (json_is_integer(sid)) {
            char b[32];
            snprintf(b, sizeof b, "%lld", (long long)json_integer_value(sid));
            t->source_id = gl_xstrdup(b);
        }
        if (kind == GPTLINE__LABEL__TASK_KIND__RANKING) {
            size_t i;
            json_t *c;
            json_array_foreach(cands, i, c)
            {
                const char *text = json_is_string(c) ? json_string_value(c)
                                                      : json_string_value(json_object_get(c, "text"));
                const char *author = json_is_object(c) ? json_string_value(json_object_get(c, "author")) : NULL;
                if (!text || !label_text_ok(text, LABEL_MAX_RESPONSE) || (author && !label_id_ok(author))) {
                    why = "a candidate is not a string (or {\"text\",\"author\"}) within the limits";
                    break;
                }
                push_str(&t->candidates, &t->n_candidates, text);
                push_str(&t->candidate_authors, &t->n_candidate_authors, author ? author : "");
            }
            if (why) {
                free_import_task(t);
                goto bad_line;
            }
        }
        if (ic.n == cap) {
            cap = cap ? cap * 2 : 256;
            ic.tasks = gl_xrealloc(ic.tasks, cap * sizeof *ic.tasks);
        }
        ic.tasks[ic.n++] = t;
        json_decref(o);
        continue;
    bad_line:
        json_decref(o);
        if (!*bad)
            snprintf(first_bad, sizeof first_bad, "%s:%zu: %s", path, lineno, why);
        (*bad)++;
    }
    if (f != stdin)
        fclose(f);
    free(line);
    if (ic.n == 0 && *bad) {
        rc = gl_err_set(err, GL_EPARSE, "%s (and %llu bad lines in all)", first_bad, (unsigned long long)*bad);
        goto out;
    }
    while (ic.done < ic.n) {
        if ((rc = write_txn(s, import_fn, &ic, err)))
            goto out;
        ic.done = ic.done + 4096 < ic.n ? ic.done + 4096 : ic.n;
        *added = ic.done;
    }
    if (*bad)
        gl_err_set(err, GL_OK, "%s", first_bad);
out:
    free_import(&ic);
    return rc;
}

int label_store_import_prompts(label_store_t *s, const char *path, uint32_t overlap, uint64_t *added,
                               uint64_t *bad, gl_err_t *err)
{
    return import_file(s, path, overlap ? overlap : 1, GPTLINE__LABEL__TASK_KIND__DEMONSTRATION, added, bad, err);
}

int label_store_import_candidates(label_store_t *s, const char *path, uint32_t overlap, uint64_t *added,
                                  uint64_t *bad, gl_err_t *err)
{
    return import_file(s, path, overlap ? overlap : 1, GPTLINE__LABEL__TASK_KIND__RANKING, added, bad, err);
}

/* ---- stored replies: their age, pruning, the version 1 upgrade ---------- */

#define AGE_KEY_MAX (8 + LABEL_MAX_ID + 9 + 64) /* u64be ms + an idem key, with room */

/* Records that the reply under idem key ik was stored at now. */
static int put_age(label_store_t *s, MDB_txn *txn, const MDB_val *ik, int64_t now)
{
    uint8_t kb[AGE_KEY_MAX];
    if (ik->mv_size > sizeof kb - 8)
        return MDB_BAD_VALSIZE; /* cannot happen: contractor ids are at most LABEL_MAX_ID */
    label_be64(kb, now > 0 ? (uint64_t)now : 0);
    memcpy(kb + 8, ik->mv_data, ik->mv_size);
    MDB_val k = {8 + ik->mv_size, kb}, v = {0, ""};
    return mdb_put(txn, s->idem_age, &k, &v, 0);
}

/* Deletes, oldest first, up to opts.prune_batch replies stored more than
 * the retention before now, with their idem_age entries; *n gets how many.
 * Returns an MDB code. */
static int prune_replies(label_store_t *s, MDB_txn *txn, int64_t now, size_t *n)
{
    int64_t cutoff = now - (int64_t)s->opts.reply_retention_seconds * 1000; /* older than this goes */
    MDB_cursor *cur;
    *n = 0;
    if (cutoff <= 0)
        return 0;
    int rc = mdb_cursor_open(txn, s->idem_age, &cur);
    if (rc)
        return rc;
    while (*n < s->opts.prune_batch) {
        MDB_val k, v;
        if ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)))
            break;
        if (k.mv_size >= 8 && label_get_be64(k.mv_data) >= (uint64_t)cutoff)
            break;
        if (k.mv_size > 8 && k.mv_size <= AGE_KEY_MAX) {
            uint8_t ib[AGE_KEY_MAX];
            memcpy(ib, (uint8_t *)k.mv_data + 8, k.mv_size - 8);
            MDB_val ik = {k.mv_size - 8, ib};
            rc = mdb_del(txn, s->idem, &ik, NULL);
            if (rc && rc != MDB_NOTFOUND)
                break;
        }
        if ((rc = mdb_cursor_del(cur, 0)))
            break;
        (*n)++;
    }
    mdb_cursor_close(cur);
    if (rc && rc != MDB_NOTFOUND)
        return rc;
    return *n ? meta_add(s, txn, "replies_pruned", 0, *n, NULL) : 0;
}

typedef struct {
    int64_t now;
    size_t pruned;
} prune_ctx_t;

static int prune_fn(label_store_t *s, MDB_txn *txn, void *vctx, gl_err_t *err)
{
    (void)err;
    prune_ctx_t *p = vctx;
    return prune_replies(s, txn, p->now, &p->pruned);
}

int label_store_prune_replies(label_store_t *s, int64_t now_ms, size_t *pruned, gl_err_t *err)
{
    prune_ctx_t p = {.now = now_ms};
    int rc = write_txn(s, prune_fn, &p, err);
    if (!rc)
        s->pruned += p.pruned;
    *pruned = rc ? 0 : p.pruned;
    return rc;
}

uint64_t label_store_replies_pruned(const label_store_t *s) { return s->pruned; }

/* The upgrade from version 1, resumable batch by batch: every idem key
 * gets an idem_age entry dated when the upgrade began (meta
 * "upgrade_ms", so a restarted upgrade dates them the same), then the
 * version becomes 2. */
typedef struct {
    uint8_t from[AGE_KEY_MAX], next[AGE_KEY_MAX]; /* last idem key done: committed, this batch */
    size_t from_len, next_len;
    int done;
} upgrade_ctx_t;

static int upgrade_fn(label_store_t *s, MDB_txn *txn, void *vctx, gl_err_t *err)
{
    (void)err;
    upgrade_ctx_t *u = vctx;
    MDB_val mk = {5, "magic"}, v, k;
    int rc = mdb_get(txn, s->meta, &mk, &v);
    uint32_t got = 0;
    if (rc)
        return rc;
    if (v.mv_size == 12)
        memcpy(&got, (uint8_t *)v.mv_data + 8, 4);
    if (got == LABEL_STORE_VERSION) { /* another process finished it */
        u->done = 1;
        return 0;
    }
    int64_t when = (int64_t)time(NULL) * 1000;
    MDB_val tk = {10, "upgrade_ms"};
    if ((rc = mdb_get(txn, s->meta, &tk, &v)) == 0 && v.mv_size == 8) {
        memcpy(&when, v.mv_data, 8);
    } else {
        v.mv_size = 8;
        v.mv_data = &when;
        if ((rc = mdb_put(txn, s->meta, &tk, &v, 0)))
            return rc;
    }
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, s->idem, &cur)))
        return rc;
    k.mv_size = u->from_len;
    k.mv_data = u->from;
    rc = u->from_len ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (!rc && u->from_len && k.mv_size == u->from_len && !memcmp(k.mv_data, u->from, u->from_len))
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    u->next_len = u->from_len;
    memcpy(u->next, u->from, u->from_len);
    for (int i = 0; !rc && i < 16384; i++) {
        if (k.mv_size <= sizeof u->next - 8) {
            memcpy(u->next, k.mv_data, k.mv_size);
            u->next_len = k.mv_size;
            MDB_val ik = {u->next_len, u->next};
            if ((rc = put_age(s, txn, &ik, when)))
                break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return rc; /* 0: a full batch, more to do */
    uint8_t magic[12];
    memcpy(magic, LABEL_STORE_MAGIC, 8);
    uint32_t ver = LABEL_STORE_VERSION;
    memcpy(magic + 8, &ver, 4);
    v.mv_size = sizeof magic;
    v.mv_data = magic;
    if ((rc = mdb_put(txn, s->meta, &mk, &v, 0)) || (rc = mdb_del(txn, s->meta, &tk, NULL)))
        return rc;
    u->done = 1;
    return 0;
}

static int upgrade_v1(label_store_t *s, gl_err_t *err)
{
    upgrade_ctx_t *u = gl_xcalloc(1, sizeof *u);
    int rc = GL_OK;
    while (!u->done && !(rc = write_txn(s, upgrade_fn, u, err))) {
        memcpy(u->from, u->next, u->next_len); /* committed */
        u->from_len = u->next_len;
    }
    free(u);
    return rc;
}

/* ---- requests ----------------------------------------------------------- */

enum { C_DEMO, C_RANK, C_SKIP, C_PROMPT };

static int bump_count(label_store_t *s, MDB_txn *txn, const char *c, int which)
{
    MDB_val k = {strlen(c), (void *)c}, v;
    uint64_t n[4] = {0};
    int rc = mdb_get(txn, s->counts, &k, &v);
    if (rc == 0 && v.mv_size == sizeof n)
        memcpy(n, v.mv_data, sizeof n);
    else if (rc && rc != MDB_NOTFOUND)
        return rc;
    n[which]++;
    v.mv_size = sizeof n;
    v.mv_data = n;
    return mdb_put(txn, s->counts, &k, &v, 0);
}

static size_t ckey(uint8_t *buf, const char *c, uint64_t id)
{
    size_t l = strlen(c);
    memcpy(buf, c, l);
    buf[l] = 0;
    label_be64(buf + l + 1, id);
    return l + 9;
}

/* Marks task id as one c may never get again. */
static int touch(label_store_t *s, MDB_txn *txn, const char *c, uint64_t id)
{
    uint8_t buf[LABEL_MAX_ID + 16];
    if (strlen(c) > LABEL_MAX_ID)
        return 0;
    MDB_val k = {ckey(buf, c, id), buf}, v = {0, ""};
    return mdb_put(txn, s->touched, &k, &v, 0);
}

static int is_touched(label_store_t *s, MDB_txn *txn, const char *c, uint64_t id)
{
    uint8_t buf[LABEL_MAX_ID + 16];
    if (strlen(c) > LABEL_MAX_ID)
        return 0;
    MDB_val k = {ckey(buf, c, id), buf}, v;
    return mdb_get(txn, s->touched, &k, &v) == 0;
}

/* What handling a request produced: a status and message, or a body. */
typedef struct {
    Gptline__Label__Reply rep;
    Gptline__Label__Tasks tasks;
    Gptline__Label__Welcome welcome;
    Gptline__Label__Ack ack;
    Gptline__Label__ProgressReply progress;
    Gptline__Label__Pong pong;
    char msg[512];
} reply_t;

static void reject(reply_t *r, Gptline__Label__Status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reject(reply_t *r, Gptline__Label__Status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    r->rep.status = st;
    r->rep.error = r->msg;
}

static void free_tasks(Gptline__Label__Tasks *ts)
{
    for (size_t i = 0; i < ts->n_tasks; i++) {
        Gptline__Label__TaskView *v = ts->tasks[i];
        free(v->prompt);
        for (size_t j = 0; j < v->n_candidates; j++) {
            free(v->candidates[j]->text);
            free(v->candidates[j]);
        }
        free(v->candidates);
        free(v);
    }
    free(ts->tasks);
    ts->tasks = NULL;
    ts->n_tasks = 0;
}

static void add_view(Gptline__Label__Tasks *ts, const Gptline__Label__Task *t, int64_t expires)
{
    Gptline__Label__TaskView *v = gl_xmalloc(sizeof *v);
    gptline__label__task_view__init(v);
    v->task_id = t->id;
    v->kind = t->kind;
    v->prompt = gl_xstrdup(t->prompt);
    v->lease_expires_unix_ms = expires;
    v->n_candidates = t->n_candidates;
    v->candidates = gl_xcalloc(t->n_candidates ? t->n_candidates : 1, sizeof *v->candidates);
    for (size_t i = 0; i < t->n_candidates; i++) {
        v->candidates[i] = gl_xmalloc(sizeof *v->candidates[i]);
        gptline__label__candidate__init(v->candidates[i]);
        v->candidates[i]->text = gl_xstrdup(t->candidates[i]);
    }
    ts->tasks = gl_xrealloc(ts->tasks, (ts->n_tasks + 1) * sizeof *ts->tasks);
    ts->tasks[ts->n_tasks++] = v;
}

/* Records in the open queue until when task t (still wanting labels) has
 * every slot leased: the earliest expiry of its leases when they fill it,
 * else 0. A lease scan skips the task until then without unpacking it.
 * cur, when not NULL, is a cursor of the scan positioned on the task. */
static int mark_open(label_store_t *s, MDB_txn *txn, const Gptline__Label__Task *t, int64_t now, MDB_cursor *cur)
{
    int64_t until = 0;
    if (t->n_done_by >= t->overlap)
        return 0; /* complete: not in the queue */
    if (t->n_done_by + active_leases(t, now, NULL) >= t->overlap) {
        for (size_t i = 0; i < t->n_leases; i++) {
            int64_t e = t->leases[i]->expires_unix_ms;
            if (e > now && (!until || e < until))
                until = e;
        }
    }
    uint8_t kb[8];
    label_be64(kb, t->id);
    MDB_val k = {8, kb}, v = {sizeof until, &until};
    return cur ? mdb_cursor_put(cur, &k, &v, MDB_CURRENT) : mdb_put(txn, open_db(s, t->kind), &k, &v, 0);
}

/* Leases task t (its state record) to c (the caller checked eligibility),
 * records it, and adds the task with its texts to the reply. */
static int grant(label_store_t *s, MDB_txn *txn, Gptline__Label__Task *t, const char *c, int64_t now, reply_t *r,
                 MDB_cursor *cur)
{
    int64_t expires = now + (int64_t)s->opts.lease_seconds * 1000;
    prune_leases(t, now, c);
    add_lease(t, c, now, expires);
    int rc = put_state(s, txn, t);
    if (!rc)
        rc = mark_open(s, txn, t, now, cur);
    Gptline__Label__Task *text = NULL;
    gl_err_t e;
    if (!rc && label_store_get_task(s, txn, t->id, &text, &e) == GL_OK)
        add_view(&r->tasks, text, expires);
    if (text)
        gptline__label__task__free_unpacked(text, NULL);
    return rc;
}

static int do_lease(label_store_t *s, MDB_txn *txn, const char *c, const Gptline__Label__LeaseRequest *lr,
                    int64_t now, reply_t *r)
{
    int rc = 0;
    uint32_t want = lr->count ? lr->count : 1;
    r->rep.body_case = GPTLINE__LABEL__REPLY__BODY_TASKS;
    r->rep.tasks = &r->tasks;
    if (lr->task_id) {
        Gptline__Label__Task *t = NULL;
        gl_err_t e;
        if (get_state(s, txn, lr->task_id, &t, &e)) {
            reject(r, GPTLINE__LABEL__STATUS__STATUS_REJECTED, "%s", e.msg);
            return 0;
        }
        const char *why = NULL;
        Gptline__Label__Lease *mine = lease_of(t, c);
        if ((mine && mine->expires_unix_ms > now) || eligible(t, c, now, &why))
            rc = grant(s, txn, t, c, now, r, NULL);
        else
            reject(r, GPTLINE__LABEL__STATUS__STATUS_REJECTED, "task %llu: %s", (unsigned long long)t->id, why);
        gptline__label__task__free_unpacked(t, NULL);
        return rc;
    }
    Gptline__Label__TaskKind kinds[2] = {GPTLINE__LABEL__TASK_KIND__DEMONSTRATION,
                                         GPTLINE__LABEL__TASK_KIND__RANKING};
    for (int ki = 0; ki < 2 && r->tasks.n_tasks < want && !rc; ki++) {
        if (lr->kind && lr->kind != kinds[ki])
            continue;
        /* from this contractor's cursor to the end, then from the start */
        uint8_t cb[LABEL_MAX_ID + 16];
        size_t cl = strlen(c) < LABEL_MAX_ID ? strlen(c) : LABEL_MAX_ID;
        memcpy(cb, c, cl);
        cb[cl] = 0;
        cb[cl + 1] = (uint8_t)kinds[ki];
        MDB_val ck = {cl + 2, cb}, cv;
        uint64_t from = 0, last = 0;
        if (mdb_get(txn, s->cursors, &ck, &cv) == 0 && cv.mv_size == 8)
            memcpy(&from, cv.mv_data, 8);
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, open_db(s, kinds[ki]), &cur)))
            break;
        for (int pass = 0; pass < 2 && !rc && r->tasks.n_tasks < want; pass++) {
            MDB_val k, v;
            uint8_t kb[8];
            label_be64(kb, from + 1);
            k.mv_size = 8;
            k.mv_data = kb;
            int mrc = pass == 0 ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
            for (; mrc == 0 && r->tasks.n_tasks < want; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
                if (k.mv_size != 8)
                    continue;
                uint64_t id = label_get_be64(k.mv_data);
                if (pass == 1 && id > from)
                    break;
                if (v.mv_size == 8) { /* every slot leased until then: skip unread */
                    int64_t until;
                    memcpy(&until, v.mv_data, 8);
                    if (until > now)
                        continue;
                }
                if (is_touched(s, txn, c, id))
                    continue;
                Gptline__Label__Task *t = NULL;
                gl_err_t e;
                if (get_state(s, txn, id, &t, &e))
                    continue;
                const char *why;
                if (eligible(t, c, now, &why)) {
                    rc = grant(s, txn, t, c, now, r, NULL);
                    last = id;
                }
                gptline__label__task__free_unpacked(t, NULL);
                if (rc)
                    break;
            }
            if (mrc && mrc != MDB_NOTFOUND && !rc)
                rc = mrc;
        }
        mdb_cursor_close(cur);
        if (!rc && last) {
            cv.mv_size = 8;
            cv.mv_data = &last;
            rc = mdb_put(txn, s->cursors, &ck, &cv, 0);
        }
    }
    if (!rc && r->tasks.n_tasks == 0)
        reject(r, GPTLINE__LABEL__STATUS__STATUS_NO_TASK, "no task available for you right now");
    return rc;
}

/* The common part of the submit handlers: task id must be leased to c (a
 * lease past its expiry still counts while nobody else has taken the slot)
 * and be of the given kind (0: any). sub, for a demonstration or a ranking,
 * holds the answer's own fields: it is checked (a ranking against the
 * task's candidates), completed and stored, the task is marked done by c
 * and leaves the open queue when it has all its labels. sub NULL is a
 * skip: the task is marked skipped by c and reopened. Rule violations are
 * replies; returns an MDB code. */
static int submit(label_store_t *s, MDB_txn *txn, const char *c, const Gptline__Label__Request *q, uint64_t id,
                  Gptline__Label__TaskKind kind, Gptline__Label__Submission *sub, int64_t now, reply_t *r)
{
    gl_err_t e;
    Gptline__Label__Task *t = NULL;
    if (get_state(s, txn, id, &t, &e)) {
        reject(r, GPTLINE__LABEL__STATUS__STATUS_NOT_LEASED, "task %llu is not leased to you (%s)",
               (unsigned long long)id, e.msg);
        return 0;
    }
    int rc = 0;
    Gptline__Label__Lease *l = lease_of(t, c);
    if (!l || (l->expires_unix_ms <= now && t->n_done_by + active_leases(t, now, c) >= t->overlap)) {
        reject(r, GPTLINE__LABEL__STATUS__STATUS_NOT_LEASED, "task %llu is not leased to you%s",
               (unsigned long long)id, l ? " (your lease expired and the task went to someone else)" : "");
        goto out;
    }
    if (kind && t->kind != kind) {
        reject(r, GPTLINE__LABEL__STATUS__STATUS_REJECTED, "task %llu is a %s task", (unsigned long long)id,
               t->kind == GPTLINE__LABEL__TASK_KIND__RANKING ? "ranking" : "demonstration");
        goto out;
    }
    if (sub && t->kind == GPTLINE__LABEL__TASK_KIND__RANKING &&
        label_check_ranking(t->candidate_count, sub->rank, sub->n_rank, sub->flags, sub->n_flags, sub->rating, &e)) {
        reject(r, GPTLINE__LABEL__STATUS__STATUS_REJECTED, "task %llu: %s", (unsigned long long)t->id, e.msg);
        goto out;
    }
    if (sub) {
        sub->task_id = t->id;
        sub->kind = t->kind;
        sub->contractor = (char *)c;
        sub->request_id = q->request_id;
        sub->submitted_unix_ms = now;
        sub->leased_unix_ms = l->leased_unix_ms;
        uint8_t kb[8];
        MDB_val k = {8, kb};
        if ((rc = meta_next(s, txn, "next_sub", &sub->id)))
            goto out;
        label_be64(kb, sub->id);
        if ((rc = put_msg(txn, s->subs, &k, &sub->base)))
            goto out;
    }
    prune_leases(t, now, c);
    if (sub)
        push_str(&t->done_by, &t->n_done_by, c);
    else
        push_str(&t->skipped_by, &t->n_skipped_by, c);
    if ((rc = put_state(s, txn, t)) || (rc = touch(s, txn, c, t->id)))
        goto out;
    if (t->n_done_by >= t->overlap) {
        uint8_t kb[8];
        label_be64(kb, t->id);
        MDB_val k = {8, kb};
        rc = mdb_del(txn, open_db(s, t->kind), &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    } else {
        rc = mark_open(s, txn, t, now, NULL);
    }
    int counter = !sub ? C_SKIP : t->kind == GPTLINE__LABEL__TASK_KIND__RANKING ? C_RANK : C_DEMO;
    if (rc || (rc = bump_count(s, txn, c, counter)))
        goto out;
    r->ack.task_id = t->id;
    r->ack.submission_id = sub ? sub->id : 0;
    r->rep.body_case = GPTLINE__LABEL__REPLY__BODY_ACK;
    r->rep.ack = &r->ack;
out:
    gptline__label__task__free_unpacked(t, NULL);
    return rc;
}

static int do_demo(label_store_t *s, MDB_txn *txn, const char *c, const Gptline__Label__Request *q, int64_t now,
                   reply_t *r)
{
    const Gptline__Label__SubmitDemonstration *d = q->demonstration;
    const char *p = d->response;
    while (p && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
        p++;
    if (!p || !*p) {
        reject(r, GPTLINE__LABEL__STATUS__STATUS_REJECTED, "empty response");
        return 0;
    }
    Gptline__Label__Submission sub = GPTLINE__LABEL__SUBMISSION__INIT;
    sub.response = d->response;
    sub.seconds_spent = d->seconds_spent;
    return submit(s, txn, c, q, d->task_id, GPTLINE__LABEL__TASK_KIND__DEMONSTRATION, &sub, now, r);
}

static int do_ranking(label_store_t *s, MDB_txn *txn, const char *c, const Gptline__Label__Request *q, int64_t now,
                      reply_t *r)
{
    const Gptline__Label__SubmitRanking *k = q->ranking;
    Gptline__Label__Submission sub = GPTLINE__LABEL__SUBMISSION__INIT;
    sub.rank = k->rank;
    sub.n_rank = k->n_rank;
    sub.flags = k->flags;
    sub.n_flags = k->n_flags;
    sub.rating = k->rating;
    sub.seconds_spent = k->seconds_spent;
    return submit(s, txn, c, q, k->task_id, GPTLINE__LABEL__TASK_KIND__RANKING, &sub, now, r);
}

static int do_skip(label_store_t *s, MDB_txn *txn, const char *c, const Gptline__Label__Request *q, int64_t now,
                   reply_t *r)
{
    const Gptline__Label__SkipTask *k = q->skip;
    if (!k->reason || !*k->reason) {
        reject(r, GPTLINE__LABEL__STATUS__STATUS_REJECTED, "a skip needs a reason");
        return 0;
    }
    return submit(s, txn, c, q, k->task_id, 0, NULL, now, r);
}

static int do_prompt(label_store_t *s, MDB_txn *txn, const char *c, const Gptline__Label__Request *q, int64_t now,
                     reply_t *r)
{
    const char *p = q->prompt->prompt;
    if (!p || !*p) {
        reject(r, GPTLINE__LABEL__STATUS__STATUS_REJECTED, "empty prompt");
        return 0;
    }
    Gptline__Label__Task t = GPTLINE__LABEL__TASK__INIT;
    t.kind = GPTLINE__LABEL__TASK_KIND__DEMONSTRATION;
    t.prompt = (char *)p;
    t.prompt_author = (char *)c;
    t.overlap = s->opts.prompt_overlap;
    t.created_unix_ms = now;
    int rc = meta_next(s, txn, "next_task", &t.id);
    if (!rc)
        rc = put_new_task(s, txn, &t);
    uint8_t kb[8];
    int64_t zero = 0;
    label_be64(kb, t.id);
    MDB_val k = {8, kb}, v = {8, &zero};
    if (!rc)
        rc = mdb_put(txn, s->open_demo, &k, &v, 0);
    if (!rc)
        rc = touch(s, txn, c, t.id);
    if (!rc)
        rc = bump_count(s, txn, c, C_PROMPT);
    r->ack.task_id = t.id;
    r->rep.body_case = GPTLINE__LABEL__REPLY__BODY_ACK;
    r->rep.ack = &r->ack;
    return rc;
}

static int do_progress(label_store_t *s, MDB_txn *txn, const char *c, reply_t *r)
{
    MDB_val k = {strlen(c), (void *)c}, v;
    uint64_t n[4] = {0};
    int rc = mdb_get(txn, s->counts, &k, &v);
    if (rc == 0 && v.mv_size == sizeof n)
        memcpy(n, v.mv_data, sizeof n);
    else if (rc && rc != MDB_NOTFOUND)
        return rc;
    MDB_stat st;
    r->progress.demonstrations = n[C_DEMO];
    r->progress.rankings = n[C_RANK];
    r->progress.skips = n[C_SKIP];
    r->progress.prompts = n[C_PROMPT];
    if (!mdb_stat(txn, s->open_demo, &st))
        r->progress.open_demonstrations = st.ms_entries;
    if (!mdb_stat(txn, s->open_rank, &st))
        r->progress.open_rankings = st.ms_entries;
    r->rep.body_case = GPTLINE__LABEL__REPLY__BODY_PROGRESS;
    r->rep.progress = &r->progress;
    return 0;
}

/* Handles one request inside the batch's transaction. Returns an MDB code
 * (the batch is then aborted and retried or failed); rule violations are
 * replies, not errors. */
static int handle(label_store_t *s, MDB_txn *txn, label_work_t *w, int64_t now)
{
    Gptline__Label__Request *q = NULL;
    uint64_t rid = 0;
    gl_err_t e = {0};
    int rc = 0;
    reply_t *r = gl_xcalloc(1, sizeof *r);
    gptline__label__reply__init(&r->rep);
    gptline__label__tasks__init(&r->tasks);
    gptline__label__welcome__init(&r->welcome);
    gptline__label__ack__init(&r->ack);
    gptline__label__progress_reply__init(&r->progress);
    gptline__label__pong__init(&r->pong);
    int code = label_wire_decode(w->data, w->len, &q, &rid, &e);
    if (code) {
        w->reply = label_error_pack(rid,
                                    code == GL_EVERSION ? GPTLINE__LABEL__STATUS__STATUS_BAD_VERSION
                                                        : GPTLINE__LABEL__STATUS__STATUS_BAD_REQUEST,
                                    e.msg, &w->reply_len);
        goto out;
    }
    r->rep.version = LABEL_PROTOCOL_VERSION;
    r->rep.request_id = q->request_id;
    Gptline__Label__Contractor *ct = NULL;
    rc = get_contractor(s, txn, w->contractor, &ct);
    if (rc == MDB_NOTFOUND || (ct && ct->revoked)) {
        rc = 0;
        reject(r, GPTLINE__LABEL__STATUS__STATUS_REVOKED, "contractor %s is revoked", w->contractor);
        if (ct)
            gptline__label__contractor__free_unpacked(ct, NULL);
        w->reply = label_reply_pack(&r->rep, &w->reply_len);
        goto out;
    }
    if (rc)
        goto out;
    Gptline__Label__Role role = ct->role;
    gptline__label__contractor__free_unpacked(ct, NULL);

    int writes = q->body_case != GPTLINE__LABEL__REQUEST__BODY_HELLO &&
                 q->body_case != GPTLINE__LABEL__REQUEST__BODY_PROGRESS &&
                 q->body_case != GPTLINE__LABEL__REQUEST__BODY_PING;
    size_t cl = strlen(w->contractor);
    uint8_t *ik = gl_xmalloc(cl + 9);
    memcpy(ik, w->contractor, cl);
    ik[cl] = 0;
    label_be64(ik + cl + 1, q->request_id);
    MDB_val idk = {cl + 9, ik}, idv;
    if (writes) {
        rc = mdb_get(txn, s->idem, &idk, &idv);
        if (rc == 0 && idv.mv_size >= 1 && ((uint8_t *)idv.mv_data)[0] == 'L') {
            /* a retried lease: its tasks again, from their records */
            rc = 0;
            r->rep.body_case = GPTLINE__LABEL__REPLY__BODY_TASKS;
            r->rep.tasks = &r->tasks;
            for (size_t i = 0; 1 + 8 * (i + 1) <= idv.mv_size; i++) {
                Gptline__Label__Task *t = NULL, *st = NULL;
                gl_err_t e;
                uint64_t id = label_get_be64((uint8_t *)idv.mv_data + 1 + 8 * i);
                if (label_store_get_task(s, txn, id, &t, &e) == GL_OK && get_state(s, txn, id, &st, &e) == GL_OK) {
                    Gptline__Label__Lease *l = lease_of(st, w->contractor);
                    add_view(&r->tasks, t, l ? l->expires_unix_ms : 0);
                }
                if (t)
                    gptline__label__task__free_unpacked(t, NULL);
                if (st)
                    gptline__label__task__free_unpacked(st, NULL);
            }
            w->reply = label_reply_pack(&r->rep, &w->reply_len);
            free(ik);
            goto out;
        }
        if (rc == 0) { /* a retry: the stored reply, nothing applied again */
            w->reply = gl_xmalloc(idv.mv_size ? idv.mv_size : 1);
            memcpy(w->reply, idv.mv_data, idv.mv_size);
            w->reply_len = idv.mv_size;
            free(ik);
            goto out;
        }
        if (rc != MDB_NOTFOUND) {
            free(ik);
            goto out;
        }
        rc = 0;
    }
    switch (q->body_case) {
    case GPTLINE__LABEL__REQUEST__BODY_HELLO:
        r->welcome.contractor = (char *)w->contractor;
        r->welcome.role = role;
        r->welcome.demonstration_guidelines = (char *)s->opts.demo_guidelines;
        r->welcome.ranking_guidelines = (char *)s->opts.rank_guidelines;
        r->welcome.max_message_bytes = LABEL_MAX_MESSAGE;
        r->welcome.lease_seconds = s->opts.lease_seconds;
        r->rep.body_case = GPTLINE__LABEL__REPLY__BODY_WELCOME;
        r->rep.welcome = &r->welcome;
        break;
    case GPTLINE__LABEL__REQUEST__BODY_PING:
        r->pong.server_unix_ms = now;
        r->rep.body_case = GPTLINE__LABEL__REPLY__BODY_PONG;
        r->rep.pong = &r->pong;
        break;
    case GPTLINE__LABEL__REQUEST__BODY_PROGRESS: rc = do_progress(s, txn, w->contractor, r); break;
    case GPTLINE__LABEL__REQUEST__BODY_LEASE: rc = do_lease(s, txn, w->contractor, q->lease, now, r); break;
    case GPTLINE__LABEL__REQUEST__BODY_DEMONSTRATION: rc = do_demo(s, txn, w->contractor, q, now, r); break;
    case GPTLINE__LABEL__REQUEST__BODY_RANKING: rc = do_ranking(s, txn, w->contractor, q, now, r); break;
    case GPTLINE__LABEL__REQUEST__BODY_SKIP: rc = do_skip(s, txn, w->contractor, q, now, r); break;
    case GPTLINE__LABEL__REQUEST__BODY_PROMPT: rc = do_prompt(s, txn, w->contractor, q, now, r); break;
    default: reject(r, GPTLINE__LABEL__STATUS__STATUS_BAD_REQUEST, "request without a body"); break;
    }
    if (!rc) {
        if (r->rep.status != GPTLINE__LABEL__STATUS__STATUS_OK)
            r->rep.body_case = GPTLINE__LABEL__REPLY__BODY__NOT_SET;
        w->reply = label_reply_pack(&r->rep, &w->reply_len);
        if (writes && r->rep.body_case == GPTLINE__LABEL__REPLY__BODY_TASKS) {
            /* a lease reply can be large (64 tasks of prompts and candidates):
             * keep only 'L' and the task ids, and rebuild it on a retry */
            idv.mv_size = 1 + 8 * r->tasks.n_tasks;
            if (!(rc = mdb_put(txn, s->idem, &idk, &idv, MDB_RESERVE))) {
                uint8_t *p = idv.mv_data;
                p[0] = 'L';
                for (size_t i = 0; i < r->tasks.n_tasks; i++)
                    label_be64(p + 1 + 8 * i, r->tasks.tasks[i]->task_id);
            }
        } else if (writes) {
            idv.mv_size = w->reply_len;
            idv.mv_data = w->reply;
            rc = mdb_put(txn, s->idem, &idk, &idv, 0);
        }
        if (!rc && writes)
            rc = put_age(s, txn, &idk, now);
    }
    free(ik);
out:
    free_tasks(&r->tasks);
    free(r);
    if (q)
        gptline__label__request__free_unpacked(q, NULL);
    return rc;
}

int label_store_apply(label_store_t *s, label_work_t *work, size_t n, int64_t now_ms, gl_err_t *err)
{
    int rc = 0;
    for (int attempt = 0; attempt < 16; attempt++) {
        MDB_txn *txn;
        size_t pruned = 0;
        for (size_t i = 0; i < n; i++) {
            free(work[i].reply);
            work[i].reply = NULL;
            work[i].reply_len = 0;
        }
        if ((rc = txn_begin(s, 0, &txn, err)))
            break;
        int mrc = 0;
        for (size_t i = 0; i < n && !mrc; i++)
            mrc = handle(s, txn, &work[i], now_ms);
        if (!mrc) /* after the requests: a retry in this batch still finds its reply */
            mrc = prune_replies(s, txn, now_ms, &pruned);
        if (mrc)
            mdb_txn_abort(txn);
        else if (!(mrc = mdb_txn_commit(txn)))
            s->pruned += pruned;
        if (mrc == MDB_MAP_FULL) {
            if ((rc = grow(s, err)))
                break;
            continue;
        }
        if (mrc)
            rc = db_err(err, mrc, "committing a batch", s);
        break;
    }
    if (rc) { /* nothing was stored: every request gets an error it may retry */
        for (size_t i = 0; i < n; i++) {
            free(work[i].reply);
            Gptline__Label__Request *q = gptline__label__request__unpack(NULL, work[i].len, work[i].data);
            work[i].reply = label_error_pack(q ? q->request_id : 0, GPTLINE__LABEL__STATUS__STATUS_INTERNAL,
                                             err->msg, &work[i].reply_len);
            if (q)
                gptline__label__request__free_unpacked(q, NULL);
        }
    }
    return rc;
}

/* ---- backup, counts ----------------------------------------------------- */

int label_store_backup(label_store_t *s, const char *dir, gl_err_t *err)
{
    int rc;
    if ((rc = gl_mkdir_p(dir, err)))
        return rc;
    char *data = gl_path_join(dir, "data.mdb");
    struct stat st;
    if (stat(data, &st) == 0) {
        rc = gl_err_set(err, GL_EEXIST, "%s already exists", data);
        goto out;
    }
    pthread_rwlock_rdlock(&s->resize_lock);
    int mrc = mdb_env_copy2(s->env, dir, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&s->resize_lock);
    if (mrc) {
        rc = gl_err_set(err, GL_EDB, "backup of %s to %s: %s", s->dir, dir, mdb_strerror(mrc));
        goto out;
    }
    int fd = open(data, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    rc = gl_fsync_parent(data, err);
out:
    free(data);
    return rc;
}

static uint64_t entries(label_store_t *s, MDB_dbi dbi)
{
    MDB_txn *txn;
    MDB_stat st;
    gl_err_t e;
    if (txn_begin(s, MDB_RDONLY, &txn, &e))
        return 0;
    uint64_t n = mdb_stat(txn, dbi, &st) ? 0 : st.ms_entries;
    mdb_txn_abort(txn);
    return n;
}

uint64_t label_store_submissions(label_store_t *s) { return entries(s, s->subs); }

uint64_t label_store_replies(label_store_t *s) { return entries(s, s->idem); }
