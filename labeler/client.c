/* client.c — the contractor's side of the protocol: one DEALER socket
 * with CURVE, the Lazy Pirate retry loop, and a journal of unsent work.
 *
 * A request is sent and its reply awaited for timeout_ms; when none comes
 * the socket is closed (linger 0, so nothing stale is sent later), a new
 * one connected, and the same bytes — same request id — sent again, up to
 * `retries` tries. The server answers a request id it has already applied
 * with the stored reply, so a retry never makes a second label. Replies
 * whose request id is not the one awaited (late answers to an earlier
 * try) are dropped.
 *
 * Submissions are journaled: the packed request is written (fsynced) to
 * <journal>/<request id>.req before the first send and removed when a
 * reply came. A client killed, or one that gave up while the server was
 * down, finds them at its next start and replays them (same ids again).
 *
 * A socket monitor watches the handshake: when the server's ZAP handler
 * refuses the key, the call fails at once with a clear message instead of
 * timing out.
 */
#include "labeler/labeler.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

struct label_client {
    label_client_opts_t o;
    char *endpoint, *journal;
    void *ctx, *sock, *mon;
    uint64_t next_id;
    unsigned sockets;
    int own_ctx;
};

static void set_int(void *sock, int opt, int v) { zmq_setsockopt(sock, opt, &v, sizeof v); }

static void close_socket(label_client_t *c)
{
    if (c->sock) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->sock);
        c->sock = NULL;
    }
    if (c->mon) {
        zmq_close(c->mon);
        c->mon = NULL;
    }
}

static int open_socket(label_client_t *c, gl_err_t *err)
{
    int hb = c->o.heartbeat_ms > 0 ? c->o.heartbeat_ms : 5000;
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock)
        return gl_err_set(err, GL_EIO, "zmq_socket: %s", zmq_strerror(errno));
    set_int(c->sock, ZMQ_LINGER, 0);
    zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, c->o.server_public_z85, 40);
    zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, c->o.key.public_z85, 40);
    zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, c->o.key.secret_z85, 40);
    set_int(c->sock, ZMQ_HEARTBEAT_IVL, hb);
    set_int(c->sock, ZMQ_HEARTBEAT_TIMEOUT, 3 * hb);
    set_int(c->sock, ZMQ_RECONNECT_IVL, 100);
    set_int(c->sock, ZMQ_RECONNECT_IVL_MAX, 1000);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://label-monitor-%p-%u", (void *)c, c->sockets++); /* unique per context */
    if (zmq_socket_monitor(c->sock, ep, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) ==
        0) {
        c->mon = zmq_socket(c->ctx, ZMQ_PAIR);
        set_int(c->mon, ZMQ_LINGER, 0);
        if (zmq_connect(c->mon, ep) != 0) {
            zmq_close(c->mon);
            c->mon = NULL;
        }
    }
    if (zmq_connect(c->sock, c->endpoint) != 0) {
        int e = errno;
        close_socket(c);
        return gl_err_set(err, GL_EINVAL, "connecting to %s: %s", c->endpoint, zmq_strerror(e));
    }
    return GL_OK;
}

label_client_t *label_client_open(const label_client_opts_t *o, gl_err_t *err)
{
    label_client_t *c = gl_xcalloc(1, sizeof *c);
    c->o = *o;
    c->endpoint = gl_xstrdup(o->endpoint);
    c->journal = o->journal_dir ? gl_xstrdup(o->journal_dir) : NULL;
    c->o.endpoint = c->endpoint;
    c->o.journal_dir = c->journal;
    if (c->o.timeout_ms <= 0)
        c->o.timeout_ms = 2500;
    if (c->o.retries <= 0)
        c->o.retries = 3;
    if (getrandom(&c->next_id, sizeof c->next_id, 0) != sizeof c->next_id)
        c->next_id = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
    c->next_id = (c->next_id >> 2) | 1; /* room to count up, never 0 */
    if (c->journal && gl_mkdir_p(c->journal, err))
        goto fail;
    if (o->zmq_context) {
        c->ctx = o->zmq_context;
    } else {
        c->ctx = zmq_ctx_new();
        c->own_ctx = 1;
        zmq_ctx_set(c->ctx, ZMQ_BLOCKY, 0);
    }
    if (open_socket(c, err))
        goto fail;
    return c;
fail:
    label_client_close(&c);
    return NULL;
}

void label_client_close(label_client_t **cp)
{
    if (!cp || !*cp)
        return;
    label_client_t *c = *cp;
    close_socket(c);
    if (c->ctx && c->own_ctx)
        zmq_ctx_term(c->ctx);
    free(c->endpoint);
    free(c->journal);
    free(c);
    *cp = NULL;
}

static char *journal_path(const label_client_t *c, uint64_t id)
{
    char name[40];
    snprintf(name, sizeof name, "%016llx.req", (unsigned long long)id);
    return gl_path_join(c->journal, name);
}

/* Reads a monitor event; returns 1 when the handshake was refused. */
static int refused(label_client_t *c)
{
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    int r = 0;
    if (zmq_msg_recv(&ev, c->mon, ZMQ_DONTWAIT) >= 0) {
        if (zmq_msg_more(&ev))
            zmq_msg_recv(&addr, c->mon, 0);
        if (zmq_msg_size(&ev) >= 6) {
            uint16_t event;
            memcpy(&event, zmq_msg_data(&ev), 2);
            r = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL;
        }
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
    return r;
}

static int call_bytes(label_client_t *c, uint64_t rid, const uint8_t *buf, size_t len,
                      Gptline__Label__Reply **rep, gl_err_t *err)
{
    *rep = NULL;
    for (int attempt = 0; attempt < c->o.retries; attempt++) {
        if (!c->sock && open_socket(c, err))
            return err->code;
        if (zmq_send(c->sock, buf, len, ZMQ_DONTWAIT) < 0 && errno != EAGAIN)
            return gl_err_set(err, GL_EIO, "sending to %s: %s", c->endpoint, zmq_strerror(errno));
        double deadline = gl_now() + c->o.timeout_ms / 1000.0;
        for (;;) {
            double left = deadline - gl_now();
            if (left <= 0)
                break;
            zmq_pollitem_t it[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->mon, 0, ZMQ_POLLIN, 0}};
            int n = zmq_poll(it, c->mon ? 2 : 1, (long)(left * 1000) + 1);
            if (n < 0) {
                if (errno == EINTR)
                    return gl_err_set(err, GL_EINTERRUPTED, "interrupted");
                return gl_err_set(err, GL_EIO, "zmq_poll: %s", zmq_strerror(errno));
            }
            if (c->mon && (it[1].revents & ZMQ_POLLIN) && refused(c))
                return gl_err_set(err, GL_EINVAL,
                                  "%s refused this key at the handshake (unknown or revoked contractor, "
                                  "or the wrong server key)",
                                  c->endpoint);
            if (!(it[0].revents & ZMQ_POLLIN))
                continue;
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, c->sock, 0) < 0) {
                zmq_msg_close(&m);
                continue;
            }
            Gptline__Label__Reply *r = gptline__label__reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
            zmq_msg_close(&m);
            if (r && (r->request_id == rid || r->request_id == 0)) {
                *rep = r;
                return GL_OK;
            }
            if (r) /* a late reply to an earlier request */
                gptline__label__reply__free_unpacked(r, NULL);
        }
        /* Lazy Pirate: abandon this socket, and with it anything queued */
        close_socket(c);
    }
    return gl_err_set(err, GL_EIO, "no reply from %s after %d tries of %d ms", c->endpoint, c->o.retries,
                      c->o.timeout_ms);
}

int label_client_call(label_client_t *c, Gptline__Label__Request *req, int journal,
                      Gptline__Label__Reply **rep, gl_err_t *err)
{
    char *jp = NULL;
    int rc;
    req->version = LABEL_PROTOCOL_VERSION;
    if (!req->request_id)
        req->request_id = c->next_id++;
    size_t len = gptline__label__request__get_packed_size(req);
    uint8_t *buf = gl_xmalloc(len ? len : 1);
    gptline__label__request__pack(req, buf);
    if (journal && c->journal) {
        jp = journal_path(c, req->request_id);
        if ((rc = gl_write_file_atomic(jp, buf, len, err)))
            goto out;
    }
    rc = call_bytes(c, req->request_id, buf, len, rep, err);
    if (!rc && jp && (*rep)->status != GPTLINE__LABEL__STATUS__STATUS_INTERNAL)
        unlink(jp); /* answered: nothing left to replay */
out:
    free(jp);
    free(buf);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int label_client_replay(label_client_t *c,
                        void (*fn)(void *ctx, const Gptline__Label__Request *req, const Gptline__Label__Reply *rep),
                        void *ctx, size_t *n, gl_err_t *err)
{
    *n = 0;
    if (!c->journal)
        return GL_OK;
    DIR *d = opendir(c->journal);
    if (!d)
        return gl_err_set(err, GL_EIO, "%s: %s", c->journal, strerror(errno));
    char **names = NULL;
    size_t cnt = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".req")) {
            names = gl_xrealloc(names, (cnt + 1) * sizeof *names);
            names[cnt++] = gl_path_join(c->journal, e->d_name);
        }
    }
    closedir(d);
    if (cnt > 1)
        qsort(names, cnt, sizeof *names, cmp_str);
    int rc = GL_OK;
    for (size_t i = 0; i < cnt && !rc; i++) {
        char *data;
        size_t len;
        if ((rc = gl_read_file(names[i], LABEL_MAX_MESSAGE, &data, &len, err)))
            break;
        Gptline__Label__Request *q = gptline__label__request__unpack(NULL, len, (uint8_t *)data);
        if (!q) { /* a torn or foreign file: keep it aside, do not send */
            char *bad = gl_xmalloc(strlen(names[i]) + 5);
            sprintf(bad, "%s.bad", names[i]);
            rename(names[i], bad);
            free(bad);
            free(data);
            continue;
        }
        Gptline__Label__Reply *rep = NULL;
        rc = call_bytes(c, q->request_id, (uint8_t *)data, len, &rep, err);
        if (!rc) {
            if (rep->status != GPTLINE__LABEL__STATUS__STATUS_INTERNAL)
                unlink(names[i]);
            if (fn)
                fn(ctx, q, rep);
            (*n)++;
            gptline__label__reply__free_unpacked(rep, NULL);
        }
        gptline__label__request__free_unpacked(q, NULL);
        free(data);
    }
    for (size_t i = 0; i < cnt; i++)
        free(names[i]);
    free(names);
    return rc;
}
