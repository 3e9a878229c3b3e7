/* server.c — `gptline label serve`: the ZeroMQ front of the label store.
 *
 * Three threads, talking only through ZeroMQ sockets (which are not
 * thread-safe, so each has one owner):
 *
 *   ZAP      a REP socket on inproc://zeromq.zap.01, bound before the
 *            server socket exists, so no client is ever admitted without
 *            it. For each CURVE handshake it looks the client's public key
 *            up in the store's registry and answers 200 with the
 *            contractor id as the ZAP User-Id and the role as the "Role"
 *            metadata property, or 400.
 *   main     the ROUTER socket (CURVE server, ZMQ_MAXMSGSIZE, heartbeats).
 *            Each frame is decoded and checked (label_wire_decode); a bad
 *            one is answered at once with BAD_REQUEST / BAD_VERSION and
 *            goes no further. Good ones go to the writer over an inproc
 *            PAIR, tagged with the User-Id the handshake proved; replies
 *            coming back are routed to their peers.
 *   writer   takes everything queued since its last commit (up to
 *            max_batch) and applies it in one LMDB transaction, committed
 *            and synced (label_store_apply), then sends the replies. While
 *            it syncs, new requests queue up: the batch grows with the load,
 *            which is what keeps the rate up at 64 clients (group commit).
 *            Each batch's transaction also prunes stored replies past their
 *            retention; when idle, the writer prunes once a second on its
 *            own, one bounded transaction at a time, and again at once
 *            (checking for requests in between) while a backlog remains.
 *
 * Shutdown: *stop is polled every 100 ms; the threads are joined, every
 * socket closed with linger 0, the context terminated and the store
 * closed. Requests not yet committed get no reply: the client's retry
 * (same request id) is answered by the next server.
 */
#include "labeler/internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define WRITER_ENDPOINT "inproc://gptline-label-writer"

typedef struct {
    label_store_t *store;
    void *zap, *writer_pair;
    size_t max_batch;
    atomic_int stopping;
    atomic_ulong requests, replies, bad, commits, refused, stored, pruned, stored_replies;
    gl_err_t writer_err;      /* written by the writer before it sets writer_failed */
    atomic_int writer_failed;
} server_t;

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void set_int(void *sock, int opt, int v) { zmq_setsockopt(sock, opt, &v, sizeof v); }

/* Receives the rest of a multipart message and drops it. */
static void drain(void *sock)
{
    int more = 1;
    size_t ml = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &ml) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock, 0);
        zmq_msg_close(&m);
    }
}

/* ---- ZAP ---------------------------------------------------------------- */

static void *zap_main(void *arg)
{
    server_t *sv = arg;
    while (!atomic_load(&sv->stopping)) {
        zmq_pollitem_t it = {sv->zap, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0)
            continue;
        zmq_msg_t f[8];
        int nf = 0, more = 1;
        while (more && nf < 8) {
            zmq_msg_init(&f[nf]);
            if (zmq_msg_recv(&f[nf], sv->zap, 0) < 0) {
                zmq_msg_close(&f[nf]);
                break;
            }
            more = zmq_msg_more(&f[nf]);
            nf++;
        }
        if (more)
            drain(sv->zap);
        if (nf < 6) { /* not a ZAP request; REP must still answer */
            for (int i = 0; i < nf; i++)
                zmq_msg_close(&f[i]);
            zmq_send(sv->zap, "", 0, 0);
            continue;
        }
        const char *status = "400", *text = "unknown or revoked key";
        char id[LABEL_MAX_ID + 1] = "";
        uint8_t meta[32];
        size_t meta_len = 0;
        gl_err_t e;
        Gptline__Label__Role role = GPTLINE__LABEL__ROLE__CONTRACTOR;
        if (zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) && nf >= 7 &&
            zmq_msg_size(&f[6]) == 32) {
            if (label_store_lookup_key(sv->store, zmq_msg_data(&f[6]), id, sizeof id, &role, &e) == GL_OK) {
                status = "200";
                text = "OK";
                /* ZMTP metadata: the role, read by the server as the "Role"
                 * property of each message of this connection */
                const char *rv = role == GPTLINE__LABEL__ROLE__ADMIN ? "admin" : "contractor";
                size_t vl = strlen(rv);
                meta[0] = 4;
                memcpy(meta + 1, "Role", 4);
                meta[5] = meta[6] = meta[7] = 0;
                meta[8] = (uint8_t)vl;
                memcpy(meta + 9, rv, vl);
                meta_len = 9 + vl;
            }
        } else {
            text = "CURVE required";
        }
        if (status[0] != '2')
            atomic_fetch_add(&sv->refused, 1);
        zmq_send(sv->zap, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(sv->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
        zmq_send(sv->zap, status, 3, ZMQ_SNDMORE);
        zmq_send(sv->zap, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(sv->zap, id, strlen(id), ZMQ_SNDMORE);
        zmq_send(sv->zap, meta, meta_len, 0);
        for (int i = 0; i < nf; i++)
            zmq_msg_close(&f[i]);
    }
    return NULL;
}

/* ---- writer ------------------------------------------------------------- */

typedef struct {
    zmq_msg_t id, user, body;
} item_t;

static void *writer_main(void *arg)
{
    server_t *sv = arg;
    size_t cap = sv->max_batch;
    item_t *items = gl_xcalloc(cap, sizeof *items);
    label_work_t *work = gl_xcalloc(cap, sizeof *work);
    char **users = gl_xcalloc(cap, sizeof *users);
    int64_t next_prune = 0;
    int backlog = 0; /* the last prune was a full batch: more may be due */
    while (!atomic_load(&sv->stopping)) {
        zmq_pollitem_t it = {sv->writer_pair, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, backlog ? 0 : 100) <= 0) {
            int64_t now = wall_ms();
            if (!backlog && now < next_prune)
                continue;
            size_t pruned = 0;
            gl_err_t e = {0};
            if (label_store_prune_replies(sv->store, now, &pruned, &e) && !atomic_load(&sv->writer_failed)) {
                sv->writer_err = e;
                atomic_store(&sv->writer_failed, 1);
            }
            backlog = pruned >= sv->store->opts.prune_batch;
            next_prune = now + 1000;
            if (pruned) {
                atomic_store(&sv->pruned, label_store_replies_pruned(sv->store));
                atomic_store(&sv->stored_replies, label_store_replies(sv->store));
            }
            continue;
        }
        size_t n = 0;
        while (n < cap) {
            item_t *m = &items[n];
            zmq_msg_init(&m->id);
            if (zmq_msg_recv(&m->id, sv->writer_pair, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m->id);
                break;
            }
            zmq_msg_init(&m->user);
            zmq_msg_init(&m->body);
            zmq_msg_recv(&m->user, sv->writer_pair, 0);
            zmq_msg_recv(&m->body, sv->writer_pair, 0);
            size_t ul = zmq_msg_size(&m->user);
            users[n] = gl_xmalloc(ul + 1);
            memcpy(users[n], zmq_msg_data(&m->user), ul);
            users[n][ul] = 0;
            work[n] = (label_work_t){.contractor = users[n], .data = zmq_msg_data(&m->body),
                                     .len = zmq_msg_size(&m->body)};
            n++;
        }
        if (!n)
            continue;
        gl_err_t e = {0};
        if (label_store_apply(sv->store, work, n, wall_ms(), &e) && !atomic_load(&sv->writer_failed)) {
            sv->writer_err = e; /* replies carry STATUS_INTERNAL; the first error is kept */
            atomic_store(&sv->writer_failed, 1);
        }
        atomic_fetch_add(&sv->commits, 1);
        /* the writer is between transactions */
        atomic_store(&sv->stored, label_store_submissions(sv->store));
        atomic_store(&sv->pruned, label_store_replies_pruned(sv->store));
        atomic_store(&sv->stored_replies, label_store_replies(sv->store));
        for (size_t i = 0; i < n; i++) {
            zmq_msg_send(&items[i].id, sv->writer_pair, ZMQ_SNDMORE);
            zmq_send(sv->writer_pair, work[i].reply, work[i].reply_len, 0);
            free(work[i].reply);
            work[i].reply = NULL;
            zmq_msg_close(&items[i].id);
            zmq_msg_close(&items[i].user);
            zmq_msg_close(&items[i].body);
            free(users[i]);
        }
    }
    free(items);
    free(work);
    free(users);
    return NULL;
}

/* ---- metrics ------------------------------------------------------------ */

/* The counters as a Prometheus textfile (common/metrics.c). */
static int write_metrics(server_t *sv, gl_metrics_t *m, double started, gl_err_t *err)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } counters[] = {
        {"gptline_label_requests_total", "Requests received from authenticated clients.",
         offsetof(server_t, requests)},
        {"gptline_label_replies_total", "Replies sent after their group commit.", offsetof(server_t, replies)},
        {"gptline_label_bad_requests_total", "Malformed, oversized or wrong-version requests answered with an error.",
         offsetof(server_t, bad)},
        {"gptline_label_commits_total", "LMDB write transactions committed and synced (group commits).",
         offsetof(server_t, commits)},
        {"gptline_label_refused_handshakes_total", "CURVE handshakes refused by the ZAP handler (unknown or revoked keys).",
         offsetof(server_t, refused)},
        {"gptline_label_replies_pruned_total",
         "Stored replies (answers to retried requests) deleted past the retention window.",
         offsetof(server_t, pruned)},
    };
    gl_metrics_begin(m);
    for (size_t i = 0; i < sizeof counters / sizeof *counters; i++)
        gl_metrics_add(m, counters[i].name, GL_METRIC_COUNTER, counters[i].help, NULL, NULL,
                       (double)atomic_load((atomic_ulong *)((char *)sv + counters[i].off)));
    gl_metrics_add(m, "gptline_label_submissions", GL_METRIC_GAUGE,
                   "Submissions (demonstrations, rankings, skips, prompts) in the store.", NULL, NULL,
                   (double)atomic_load(&sv->stored));
    gl_metrics_add(m, "gptline_label_stored_replies", GL_METRIC_GAUGE,
                   "Stored replies a retried request would be answered from.", NULL, NULL,
                   (double)atomic_load(&sv->stored_replies));
    gl_metrics_add(m, "gptline_label_start_time_seconds", GL_METRIC_GAUGE, "When the server started, Unix time.",
                   NULL, NULL, started);
    return gl_metrics_write(m, err);
}

/* ---- main --------------------------------------------------------------- */

static void reply_error(server_t *sv, void *router, zmq_msg_t *id, uint64_t rid, gl_code_t code, const char *msg)
{
    size_t len;
    uint8_t *b = label_error_pack(rid,
                                  code == GL_EVERSION ? GPTLINE__LABEL__STATUS__STATUS_BAD_VERSION
                                                      : GPTLINE__LABEL__STATUS__STATUS_BAD_REQUEST,
                                  msg, &len);
    zmq_msg_send(id, router, ZMQ_SNDMORE);
    zmq_send(router, b, len, 0);
    free(b);
    atomic_fetch_add(&sv->bad, 1);
}

int label_server_run(const label_server_opts_t *o, volatile sig_atomic_t *stop, volatile sig_atomic_t *bound,
                     label_server_stats_t *stats, gl_err_t *err)
{
    server_t sv = {.max_batch = o->max_batch ? o->max_batch : 512};
    void *ctx = NULL, *router = NULL, *pair = NULL;
    pthread_t zap_th, writer_th;
    int zap_started = 0, writer_started = 0, rc = GL_OK;
    int hb = o->heartbeat_ms > 0 ? o->heartbeat_ms : 5000;
    gl_metrics_t metrics = {0};
    uint64_t metrics_errors = 0;
    double started = (double)wall_ms() / 1000;

    if (!zmq_has("curve"))
        return gl_err_set(err, GL_EUNSUPPORTED, "this libzmq was built without CURVE");
    sv.store = label_store_open(o->db_dir, &o->store, err);
    if (!sv.store)
        return err->code;
    atomic_store(&sv.stored, label_store_submissions(sv.store));
    atomic_store(&sv.stored_replies, label_store_replies(sv.store));
    if (o->metrics_file && ((rc = gl_metrics_init(&metrics, o->metrics_file, o->metrics_interval, NULL, err)) ||
                            (rc = write_metrics(&sv, &metrics, started, err)))) {
        label_store_close(&sv.store);
        gl_metrics_free(&metrics);
        return rc;
    }
    ctx = zmq_ctx_new();
    /* 1. the ZAP handler, before any socket that could take a client */
    sv.zap = zmq_socket(ctx, ZMQ_REP);
    set_int(sv.zap, ZMQ_LINGER, 0);
    if (zmq_bind(sv.zap, ZAP_ENDPOINT) != 0) {
        rc = gl_err_set(err, GL_EIO, "binding the ZAP handler: %s", zmq_strerror(errno));
        goto out;
    }
    if (pthread_create(&zap_th, NULL, zap_main, &sv)) {
        rc = gl_err_set(err, GL_EIO, "starting the ZAP thread");
        goto out;
    }
    zap_started = 1;
    /* 2. the writer */
    pair = zmq_socket(ctx, ZMQ_PAIR);
    sv.writer_pair = zmq_socket(ctx, ZMQ_PAIR);
    set_int(pair, ZMQ_LINGER, 0);
    set_int(sv.writer_pair, ZMQ_LINGER, 0);
    set_int(pair, ZMQ_SNDHWM, 0);
    set_int(pair, ZMQ_RCVHWM, 0);
    set_int(sv.writer_pair, ZMQ_SNDHWM, 0);
    set_int(sv.writer_pair, ZMQ_RCVHWM, 0);
    if (zmq_bind(pair, WRITER_ENDPOINT) || zmq_connect(sv.writer_pair, WRITER_ENDPOINT)) {
        rc = gl_err_set(err, GL_EIO, "writer pipe: %s", zmq_strerror(errno));
        goto out;
    }
    if (pthread_create(&writer_th, NULL, writer_main, &sv)) {
        rc = gl_err_set(err, GL_EIO, "starting the writer thread");
        goto out;
    }
    writer_started = 1;
    /* 3. the server socket */
    router = zmq_socket(ctx, ZMQ_ROUTER);
    set_int(router, ZMQ_LINGER, 0);
    set_int(router, ZMQ_CURVE_SERVER, 1);
    zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, o->key.secret_z85, 40);
    zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, "gptline", 7);
    int64_t maxmsg = LABEL_MAX_MESSAGE;
    zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    set_int(router, ZMQ_HEARTBEAT_IVL, hb);
    set_int(router, ZMQ_HEARTBEAT_TIMEOUT, 3 * hb);
    set_int(router, ZMQ_HEARTBEAT_TTL, 3 * hb);
    set_int(router, ZMQ_SNDHWM, 100000);
    set_int(router, ZMQ_RCVHWM, 100000);
    if (zmq_bind(router, o->endpoint) != 0) {
        rc = gl_err_set(err, GL_EIO, "binding %s: %s", o->endpoint, zmq_strerror(errno));
        goto out;
    }
    if (stats) {
        size_t el = sizeof stats->endpoint;
        if (zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, stats->endpoint, &el) != 0)
            snprintf(stats->endpoint, sizeof stats->endpoint, "%s", o->endpoint);
    }
    if (bound)
        *bound = 1;

    while (!*stop && !atomic_load(&sv.writer_failed)) {
        gl_err_t me;
        if (o->metrics_file && gl_metrics_due(&metrics) && write_metrics(&sv, &metrics, started, &me))
            metrics_errors++;
        zmq_pollitem_t items[2] = {{router, 0, ZMQ_POLLIN, 0}, {pair, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(items, 2, 100);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = gl_err_set(err, GL_EIO, "zmq_poll: %s", zmq_strerror(errno));
            break;
        }
        for (int k = 0; k < 4096 && (items[0].revents & ZMQ_POLLIN); k++) {
            zmq_msg_t id, body;
            zmq_msg_init(&id);
            if (zmq_msg_recv(&id, router, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&id);
                break;
            }
            zmq_msg_init(&body);
            int got = zmq_msg_more(&id) ? zmq_msg_recv(&body, router, 0) : -1;
            atomic_fetch_add(&sv.requests, 1);
            /* who sent it, as the handshake proved: id and role from ZAP */
            const char *user = got >= 0 ? zmq_msg_gets(&body, "User-Id") : NULL;
            const char *role = got >= 0 ? zmq_msg_gets(&body, "Role") : NULL;
            if (got < 0 || zmq_msg_more(&body)) {
                drain(router);
                reply_error(&sv, router, &id, 0, GL_EPARSE, "expected a single-frame request");
            } else if (!user || !*user || !role) {
                atomic_fetch_add(&sv.bad, 1); /* cannot happen past ZAP; drop */
            } else {
                Gptline__Label__Request *q;
                uint64_t rid;
                gl_err_t e;
                int code = label_wire_decode(zmq_msg_data(&body), zmq_msg_size(&body), &q, &rid, &e);
                if (code) {
                    reply_error(&sv, router, &id, rid, (gl_code_t)code, e.msg);
                } else {
                    gptline__label__request__free_unpacked(q, NULL);
                    zmq_msg_send(&id, pair, ZMQ_SNDMORE);
                    zmq_send(pair, user, strlen(user), ZMQ_SNDMORE);
                    zmq_msg_send(&body, pair, 0);
                }
            }
            zmq_msg_close(&id);
            zmq_msg_close(&body);
        }
        for (;;) {
            zmq_msg_t id, rep;
            zmq_msg_init(&id);
            if (zmq_msg_recv(&id, pair, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&id);
                break;
            }
            zmq_msg_init(&rep);
            zmq_msg_recv(&rep, pair, 0);
            zmq_msg_send(&id, router, ZMQ_SNDMORE); /* a peer gone meanwhile: dropped */
            zmq_msg_send(&rep, router, 0);
            atomic_fetch_add(&sv.replies, 1);
            zmq_msg_close(&id);
            zmq_msg_close(&rep);
        }
    }
out:
    atomic_store(&sv.stopping, 1);
    if (writer_started)
        pthread_join(writer_th, NULL);
    if (zap_started)
        pthread_join(zap_th, NULL);
    if (atomic_load(&sv.writer_failed) && !rc) /* a storage failure stops the service: let a supervisor restart it */
        rc = gl_err_set(err, sv.writer_err.code ? sv.writer_err.code : GL_EDB, "writer: %s", sv.writer_err.msg);
    if (router)
        zmq_close(router);
    if (pair)
        zmq_close(pair);
    if (sv.writer_pair)
        zmq_close(sv.writer_pair);
    if (sv.zap)
        zmq_close(sv.zap);
    if (ctx)
        zmq_ctx_term(ctx);
    if (o->metrics_file) {
        gl_err_t me;
        if (write_metrics(&sv, &metrics, started, &me))
            metrics_errors++;
        gl_metrics_free(&metrics);
    }
    if (stats) { /* endpoint was set at bind */
        stats->requests = atomic_load(&sv.requests);
        stats->replies = atomic_load(&sv.replies);
        stats->bad_requests = atomic_load(&sv.bad);
        stats->commits = atomic_load(&sv.commits);
        stats->refused_handshakes = atomic_load(&sv.refused);
        stats->submissions = atomic_load(&sv.stored);
        stats->replies_pruned = atomic_load(&sv.pruned);
        stats->metrics_errors = metrics_errors;
    }
    label_store_close(&sv.store);
    return rc;
}
