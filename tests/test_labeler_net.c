/* test_labeler_net.c — the real server on loopback, in a thread of this
 * test, with clients of the library and raw CURVE sockets: the handshake
 * admits registered keys only (unknown and revoked keys refused, a key
 * revoked while connected refused per request); malformed, truncated,
 * multi-frame, wrong-version and oversized frames get an error reply or a
 * dropped connection while the server keeps serving; a retried request id
 * gives the stored reply; the server shuts down cleanly. */
#include "labeler/labeler.h"
#include "tests/tap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static label_server_opts_t sopts;
static volatile sig_atomic_t stop, bound;
static int server_rc;
static gl_err_t server_err;
static label_server_stats_t sstats;

static void *server_main(void *arg)
{
    (void)arg;
    server_rc = label_server_run(&sopts, &stop, &bound, &sstats, &server_err);
    bound = 1;
    return NULL;
}

static char endpoint[256];

static label_client_t *client_for(const label_keypair_t *kp, int timeout_ms, int retries)
{
    label_client_opts_t o = {.endpoint = endpoint, .key = *kp, .timeout_ms = timeout_ms, .retries = retries};
    memcpy(o.server_public_z85, sopts.key.public_z85, 41);
    gl_err_t err = {0};
    label_client_t *c = label_client_open(&o, &err);
    if (!c)
        tap_diag("client: %s", err.msg);
    return c;
}

static int call(label_client_t *c, Gptline__Label__Request *q, Gptline__Label__Reply **rep, gl_err_t *err)
{
    return label_client_call(c, q, 0, rep, err);
}

static int hello(label_client_t *c, Gptline__Label__Reply **rep, gl_err_t *err)
{
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__Hello h = GPTLINE__LABEL__HELLO__INIT;
    h.client = "test";
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_HELLO;
    q.hello = &h;
    return call(c, &q, rep, err);
}

/* A raw CURVE DEALER as alice, for frames the library would never send. */
static void *raw_socket(void *ctx, const label_keypair_t *kp)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, sopts.key.public_z85, 40);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, kp->public_z85, 40);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, kp->secret_z85, 40);
    zmq_connect(s, endpoint);
    return s;
}

/* Waits up to ms for one reply frame; NULL on timeout. */
static Gptline__Label__Reply *raw_reply(void *s, int ms)
{
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0)
        return NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, s, 0);
    Gptline__Label__Reply *r = gptline__label__reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
    zmq_msg_close(&m);
    return r;
}

static uint8_t *ping_bytes(uint32_t version, uint64_t rid, size_t *len)
{
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__Ping p = GPTLINE__LABEL__PING__INIT;
    q.version = version;
    q.request_id = rid;
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_PING;
    q.ping = &p;
    *len = gptline__label__request__get_packed_size(&q);
    uint8_t *b = malloc(*len);
    gptline__label__request__pack(&q, b);
    return b;
}

int main(void)
{
    gl_err_t err = {0};
    label_keypair_t alice, bob, carol, dave;
    label_keygen(&sopts.key, &err);
    label_keygen(&alice, &err);
    label_keygen(&bob, &err);
    label_keygen(&carol, &err);
    label_keygen(&dave, &err);
    char *db = gl_path_join(tap_tmpdir(), "db");
    label_store_t *s = label_store_open(db, NULL, &err);
    ok(s != NULL, "store");
    label_store_add_contractor(s, "alice", alice.public_z85, GPTLINE__LABEL__ROLE__CONTRACTOR, &err);
    label_store_add_contractor(s, "bob", bob.public_z85, GPTLINE__LABEL__ROLE__CONTRACTOR, &err);
    label_store_add_contractor(s, "carol", carol.public_z85, GPTLINE__LABEL__ROLE__ADMIN, &err);
    label_store_revoke(s, "carol", &err);
    char *pj = gl_path_join(tap_tmpdir(), "p.jsonl");
    FILE *f = fopen(pj, "w");
    fputs("{\"prompt\":\"one\"}\n{\"prompt\":\"two\"}\n", f);
    fclose(f);
    uint64_t added, bad;
    label_store_import_prompts(s, pj, 2, &added, &bad, &err);
    label_store_close(&s);

    sopts.db_dir = db;
    sopts.endpoint = "tcp://127.0.0.1:*"; /* a free port; the restart below reuses it */
    sopts.heartbeat_ms = 500;
    pthread_t th;
    pthread_create(&th, NULL, server_main, NULL);
    for (int i = 0; i < 500 && !bound; i++)
        usleep(10000);
    snprintf(endpoint, sizeof endpoint, "%s", sstats.endpoint);
    sopts.endpoint = endpoint;
    ok(bound && !server_rc && strncmp(endpoint, "tcp://127.0.0.1:", 16) == 0 && strcmp(endpoint + 16, "*"),
       "server bound %s %s", endpoint, server_rc ? server_err.msg : "");

    /* a registered key */
    label_client_t *ca = client_for(&alice, 3000, 2);
    Gptline__Label__Reply *r = NULL;
    ok(ca && hello(ca, &r, &err) == GL_OK, "alice says hello: %s", err.msg);
    ok(r && r->body_case == GPTLINE__LABEL__REPLY__BODY_WELCOME && !strcmp(r->welcome->contractor, "alice"),
       "welcomed as alice (the id the handshake proved)");
    ok(r && r->welcome && strlen(r->welcome->demonstration_guidelines) > 20, "with guidelines");
    if (r)
        gptline__label__reply__free_unpacked(r, NULL);

    /* unregistered and revoked keys are refused at the handshake */
    double t0 = gl_now();
    label_client_t *cd = client_for(&dave, 3000, 2);
    r = NULL;
    int rc = cd ? hello(cd, &r, &err) : -1;
    is_int(rc, GL_EINVAL, "an unregistered key is refused");
    ok(strstr(err.msg, "refused"), "saying so: %s", err.msg);
    ok(gl_now() - t0 < 2.5, "at the handshake, not by a timeout (%.2f s)", gl_now() - t0);
    label_client_close(&cd);
    label_client_t *cc = client_for(&carol, 3000, 2);
    rc = cc ? hello(cc, &r, &err) : -1;
    is_int(rc, GL_EINVAL, "a revoked key is refused at the handshake");
    label_client_close(&cc);

    /* idempotent retry over the wire */
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__LeaseRequest l = GPTLINE__LABEL__LEASE_REQUEST__INIT;
    l.count = 1;
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_LEASE;
    q.lease = &l;
    rc = call(ca, &q, &r, &err);
    ok(!rc && r->status == GPTLINE__LABEL__STATUS__STATUS_OK && r->tasks && r->tasks->n_tasks == 1, "alice leases a task");
    uint64_t task = !rc && r->tasks && r->tasks->n_tasks ? r->tasks->tasks[0]->task_id : 0;
    if (!rc)
        gptline__label__reply__free_unpacked(r, NULL);
    Gptline__Label__Request d = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__SubmitDemonstration dm = GPTLINE__LABEL__SUBMIT_DEMONSTRATION__INIT;
    dm.task_id = task;
    dm.response = "the answer";
    d.body_case = GPTLINE__LABEL__REQUEST__BODY_DEMONSTRATION;
    d.demonstration = &dm;
    d.request_id = 424242;
    uint64_t s1 = 0, s2 = 0;
    if (call(ca, &d, &r, &err) == GL_OK) {
        s1 = r->ack ? r->ack->submission_id : 0;
        gptline__label__reply__free_unpacked(r, NULL);
    }
    if (call(ca, &d, &r, &err) == GL_OK) {
        s2 = r->ack ? r->ack->submission_id : 0;
        is_str(label_status_name(r->status), "ok", "the retried submission is answered ok");
        gptline__label__reply__free_unpacked(r, NULL);
    }
    ok(s1 && s1 == s2, "with the stored reply: submission %llu both times", (unsigned long long)s1);

    /* bad frames */
    void *ctx = zmq_ctx_new();
    void *raw = raw_socket(ctx, &alice);
    zmq_send(raw, "\xff\xff\xff\xff\x0f", 5, 0);
    r = raw_reply(raw, 3000);
    ok(r && r->status == GPTLINE__LABEL__STATUS__STATUS_BAD_REQUEST, "garbage gets BAD_REQUEST");
    if (r)
        gptline__label__reply__free_unpacked(r, NULL);
    size_t len;
    uint8_t *b = ping_bytes(9, 77, &len);
    zmq_send(raw, b, len, 0);
    r = raw_reply(raw, 3000);
    ok(r && r->status == GPTLINE__LABEL__STATUS__STATUS_BAD_VERSION && r->request_id == 77,
       "version 9 gets BAD_VERSION with its request id");
    if (r)
        gptline__label__reply__free_unpacked(r, NULL);
    free(b);
    b = ping_bytes(LABEL_PROTOCOL_VERSION, 0x123456789ull, &len);
    zmq_send(raw, b, len - 2, 0);
    r = raw_reply(raw, 3000);
    ok(r && r->status == GPTLINE__LABEL__STATUS__STATUS_BAD_REQUEST, "a truncated frame gets BAD_REQUEST");
    if (r)
        gptline__label__reply__free_unpacked(r, NULL);
    zmq_send(raw, b, len, ZMQ_SNDMORE);
    zmq_send(raw, b, len, 0);
    r = raw_reply(raw, 3000);
    ok(r && r->status == GPTLINE__LABEL__STATUS__STATUS_BAD_REQUEST, "a two-frame message gets BAD_REQUEST");
    if (r)
        gptline__label__reply__free_unpacked(r, NULL);
    zmq_send(raw, b, len, 0);
    r = raw_reply(raw, 3000);
    ok(r && r->status == GPTLINE__LABEL__STATUS__STATUS_OK && r->body_case == GPTLINE__LABEL__REPLY__BODY_PONG,
       "the same connection still gets answers");
    if (r)
        gptline__label__reply__free_unpacked(r, NULL);
    size_t big = LABEL_MAX_MESSAGE + 1024;
    uint8_t *huge = calloc(1, big);
    zmq_send(raw, huge, big, 0);
    r = raw_reply(raw, 1000);
    ok(r == NULL, "an oversized message gets no reply (ZMQ_MAXMSGSIZE drops the connection)");
    if (r)
        gptline__label__reply__free_unpacked(r, NULL);
    free(huge);
    zmq_close(raw);
    raw = raw_socket(ctx, &alice);
    zmq_send(raw, b, len, 0);
    r = raw_reply(raw, 3000);
    ok(r && r->status == GPTLINE__LABEL__STATUS__STATUS_OK, "the server keeps serving after all of it");
    if (r)
        gptline__label__reply__free_unpacked(r, NULL);
    free(b);
    zmq_close(raw);
    zmq_ctx_term(ctx);

    /* bob connected, then revoked: his next request is refused */
    label_client_t *cb = client_for(&bob, 3000, 2);
    ok(cb && hello(cb, &r, &err) == GL_OK, "bob says hello");
    if (r)
        gptline__label__reply__free_unpacked(r, NULL);
    s = label_store_open(db, NULL, &err); /* a second handle, as the admin command would */
    ok(s && label_store_revoke(s, "bob", &err) == GL_OK, "revoke bob while he is connected");
    label_store_close(&s);
    rc = call(cb, &q, &r, &err);
    ok(rc == GL_OK && r->status == GPTLINE__LABEL__STATUS__STATUS_REVOKED, "his next request gets REVOKED");
    if (!rc)
        gptline__label__reply__free_unpacked(r, NULL);
    label_client_close(&cb);
    label_client_close(&ca);

    /* the journal: a submission the server never answered is kept and
     * replayed by the next client on the same journal */
    char *jdir = gl_path_join(tap_tmpdir(), "journal");
    label_client_opts_t jo = {.endpoint = endpoint, .key = alice, .timeout_ms = 300, .retries = 2, .journal_dir = jdir};
    memcpy(jo.server_public_z85, sopts.key.public_z85, 41);
    label_client_t *cj = label_client_open(&jo, &err);
    q.request_id = 0; /* a new request (the same id would get the stored reply) */
    rc = cj ? call(cj, &q, &r, &err) : -1;
    ok(!rc && r->tasks && r->tasks->n_tasks == 1, "alice leases her second task");
    dm.task_id = !rc && r->tasks && r->tasks->n_tasks ? r->tasks->tasks[0]->task_id : 0;
    if (!rc)
        gptline__label__reply__free_unpacked(r, NULL);
    stop = 1;
    pthread_join(th, NULL);
    is_int(server_rc, GL_OK, "the server stops cleanly %s", server_rc ? server_err.msg : "");
    ok(sstats.refused_handshakes >= 2, "it counted %llu refused handshakes", (unsigned long long)sstats.refused_handshakes);
    ok(sstats.bad_requests >= 3, "and %llu bad requests", (unsigned long long)sstats.bad_requests);
    d.request_id = 0;
    dm.response = "written while the server was down";
    rc = label_client_call(cj, &d, 1, &r, &err);
    is_int(rc, GL_EIO, "with the server down the submission fails after its retries: %s", err.msg);
    label_client_close(&cj);
    char *jf = NULL;
    if (asprintf(&jf, "%s/%016llx.req", jdir, (unsigned long long)d.request_id) > 0)
        ok(access(jf, F_OK) == 0, "and stays in the journal");
    free(jf);
    stop = bound = 0;
    pthread_create(&th, NULL, server_main, NULL);
    for (int i = 0; i < 500 && !bound; i++)
        usleep(10000);
    cj = label_client_open(&jo, &err);
    size_t replayed = 0;
    ok(cj && label_client_replay(cj, NULL, NULL, &replayed, &err) == GL_OK, "replay after the restart: %s", err.msg);
    is_int(replayed, 1, "one journaled submission replayed");
    ok(label_client_replay(cj, NULL, NULL, &replayed, &err) == GL_OK && replayed == 0, "the journal is empty after");
    label_client_close(&cj);
    stop = 1;
    pthread_join(th, NULL);
    is_int(server_rc, GL_OK, "the restarted server stops cleanly");
    s = label_store_open(db, NULL, &err);
    is_int(s ? label_store_submissions(s) : 0, 2, "the store holds both submissions, once each");
    label_store_close(&s);
    free(jdir);
    free(db);
    free(pj);
    return tap_done();
}
