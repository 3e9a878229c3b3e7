/* test_labeler.c — the label store's rules and export, without sockets:
 * ranking validation against a naive model; N-way overlap, never twice to
 * one contractor, no self-ranking; lease expiry on an injected clock;
 * rejections with reasons; idempotent retry; revocation; map growth;
 * agreement statistics against hand-computed values; export to SFT and RM
 * shards read back with the shard library and compared with the text that
 * went in; hot backup; pruning of stored replies past their retention
 * (bounded per transaction) and the upgrade of a version 1 store. */
#include "labeler/labeler.h"
#include "shards/shards.h"
#include "tokenizer/tokenizer.h"
#include "tests/label_util.h"
#include "tests/tap.h"

#include <jansson.h>
#include <lmdb.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define OK_ GPTLINE__LABEL__STATUS__STATUS_OK
#define DEMO GPTLINE__LABEL__TASK_KIND__DEMONSTRATION
#define RANK GPTLINE__LABEL__TASK_KIND__RANKING

static const int64_t T0 = 1700000000000;

/* naive: a valid ranking uses each of 0..m-1 (m >= 2) and nothing else */
static int naive_valid(const uint32_t *r, size_t k)
{
    int used[16] = {0};
    for (size_t i = 0; i < k; i++) {
        if (r[i] >= k)
            return 0;
        used[r[i]] = 1;
    }
    size_t m = 0;
    while (m < k && used[m])
        m++;
    for (size_t v = m; v < k; v++)
        if (used[v])
            return 0;
    return m >= 2;
}

static void test_check_ranking(void)
{
    int agree = 1, n = 0;
    for (size_t k = 2; k <= 5; k++) {
        size_t total = 1;
        for (size_t i = 0; i < k; i++)
            total *= k + 1;
        for (size_t code = 0; code < total; code++) {
            uint32_t r[8];
            size_t c = code;
            for (size_t i = 0; i < k; i++, c /= k + 1)
                r[i] = (uint32_t)(c % (k + 1));
            gl_err_t e;
            int got = label_check_ranking(k, r, k, NULL, 0, 4, &e) == GL_OK;
            agree &= got == naive_valid(r, k);
            n++;
        }
    }
    ok(agree, "label_check_ranking agrees with the naive model on %d rankings (k = 2..5)", n);
    gl_err_t e;
    uint32_t r3[3] = {0, 1, 2}, fl[3] = {0, 8, 0};
    ok(label_check_ranking(3, r3, 2, NULL, 0, 4, &e) != GL_OK, "too few entries refused");
    ok(label_check_ranking(3, r3, 3, NULL, 0, 0, &e) != GL_OK, "rating 0 refused");
    ok(label_check_ranking(3, r3, 3, NULL, 0, 8, &e) != GL_OK, "rating 8 refused");
    ok(label_check_ranking(3, r3, 3, fl, 3, 4, &e) != GL_OK, "unknown flag bit refused");
    ok(strstr(e.msg, "flag") != NULL, "reason names the flag: %s", e.msg);
    fl[1] = 7;
    ok(label_check_ranking(3, r3, 3, fl, 3, 4, &e) == GL_OK, "known flags accepted");
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static label_store_t *fresh(const char *name, const label_store_opts_t *o)
{
    char *dir = gl_path_join(tap_tmpdir(), name);
    gl_err_t err = {0};
    label_store_t *s = label_store_open(dir, o, &err);
    if (!s)
        tap_diag("open %s: %s", dir, err.msg);
    free(dir);
    const char *ids[] = {"alice", "bob", "carol"};
    for (int i = 0; s && i < 3; i++) {
        label_keypair_t kp;
        label_keygen(&kp, &err);
        if (label_store_add_contractor(s, ids[i], kp.public_z85, GPTLINE__LABEL__ROLE__CONTRACTOR, &err))
            tap_diag("add %s: %s", ids[i], err.msg);
    }
    return s;
}

static uint64_t import(label_store_t *s, const char *name, const char *jsonl, int ranking, uint32_t overlap)
{
    char *p = gl_path_join(tap_tmpdir(), name);
    write_text(p, jsonl);
    uint64_t added = 0, bad = 0;
    gl_err_t err = {0};
    int rc = ranking ? label_store_import_candidates(s, p, overlap, &added, &bad, &err)
                     : label_store_import_prompts(s, p, overlap, &added, &bad, &err);
    if (rc)
        tap_diag("import: %s", err.msg);
    free(p);
    return added;
}

static size_t n_tasks(const Gptline__Label__Reply *r)
{
    return r && r->status == OK_ && r->body_case == GPTLINE__LABEL__REPLY__BODY_TASKS ? r->tasks->n_tasks : 0;
}

static void test_assignment(void)
{
    label_store_t *s = fresh("assign", NULL);
    is_int(import(s, "p.jsonl", "{\"prompt\":\"p1\"}\n{\"prompt\":\"p2\"}\n{\"prompt\":\"p3\"}\n", 0, 2), 3,
           "three prompts imported");
    Gptline__Label__Reply *r;
    r = lu_lease(s, "alice", DEMO, 0, 10, T0);
    is_int(n_tasks(r), 3, "alice leases all three");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "alice", DEMO, 0, 10, T0);
    is_str(lu_status(r), "no task", "a task is never leased twice to the same contractor");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "bob", DEMO, 0, 10, T0);
    is_int(n_tasks(r), 3, "bob gets the second slot of each (overlap 2)");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "carol", DEMO, 0, 10, T0);
    is_str(lu_status(r), "no task", "carol gets nothing: every slot is leased");
    gptline__label__reply__free_unpacked(r, NULL);

    r = lu_demo(s, "alice", 1, "  \n ", 0, T0 + 10);
    is_str(lu_status(r), "rejected", "an empty response is rejected");
    ok(r && strstr(r->error, "empty"), "with the reason: %s", r ? r->error : "");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_demo(s, "carol", 1, "mine", 0, T0 + 10);
    is_str(lu_status(r), "not leased", "a submission for a task not leased is rejected");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_demo(s, "alice", 99, "x", 0, T0 + 10);
    is_str(lu_status(r), "not leased", "a submission for a task that does not exist is rejected");
    gptline__label__reply__free_unpacked(r, NULL);

    /* idempotency: the same request id twice gives one submission */
    r = lu_demo(s, "alice", 1, "answer one", 777, T0 + 20);
    is_str(lu_status(r), "ok", "alice submits task 1");
    uint64_t sid = r && r->ack ? r->ack->submission_id : 0;
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_demo(s, "alice", 1, "answer one", 777, T0 + 30);
    is_str(lu_status(r), "ok", "the retry is answered ok");
    is_int(r && r->ack ? r->ack->submission_id : 0, sid, "with the same submission id");
    gptline__label__reply__free_unpacked(r, NULL);
    is_int(label_store_submissions(s), 1, "and only one submission is stored");
    r = lu_demo(s, "alice", 1, "answer again", 778, T0 + 40);
    is_str(lu_status(r), "not leased", "a second label of the same task by a new request is refused");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "alice", 0, 1, 1, T0 + 50);
    is_str(lu_status(r), "rejected", "leasing a task already labeled is refused");
    gptline__label__reply__free_unpacked(r, NULL);

    /* skip with a reason */
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__SkipTask sk = GPTLINE__LABEL__SKIP_TASK__INIT;
    sk.task_id = 2;
    sk.reason = "";
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_SKIP;
    q.skip = &sk;
    r = lu_apply(s, "bob", &q, T0 + 60);
    is_str(lu_status(r), "rejected", "a skip without a reason is rejected");
    gptline__label__reply__free_unpacked(r, NULL);
    sk.reason = "not my language";
    q.request_id = 0;
    r = lu_apply(s, "bob", &q, T0 + 60);
    is_str(lu_status(r), "ok", "a skip with a reason is accepted");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "carol", DEMO, 0, 10, T0 + 70);
    ok(n_tasks(r) == 1 && r->tasks->tasks[0]->task_id == 2, "the skipped slot goes to carol");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "bob", DEMO, 2, 1, T0 + 80);
    is_str(lu_status(r), "rejected", "bob is not offered what he skipped");
    gptline__label__reply__free_unpacked(r, NULL);

    /* revocation */
    gl_err_t err = {0};
    ok(label_store_revoke(s, "carol", &err) == GL_OK, "revoke carol");
    r = lu_lease(s, "carol", DEMO, 0, 1, T0 + 90);
    is_str(lu_status(r), "revoked", "a revoked contractor's requests are refused");
    gptline__label__reply__free_unpacked(r, NULL);
    ok(label_store_revoke(s, "nobody", &err) == GL_ENOTFOUND, "revoking an unknown id fails");
    label_store_close(&s);
}

static void test_lease_expiry(void)
{
    label_store_opts_t o = {.lease_seconds = 60};
    label_store_t *s = fresh("expiry", &o);
    import(s, "p.jsonl", "{\"prompt\":\"only one\"}\n", 0, 1);
    Gptline__Label__Reply *r = lu_lease(s, "alice", DEMO, 0, 1, T0);
    is_int(n_tasks(r), 1, "alice leases the task");
    ok(r && n_tasks(r) && r->tasks->tasks[0]->lease_expires_unix_ms == T0 + 60000, "lease ends after 60 s");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "bob", DEMO, 0, 1, T0 + 59999);
    is_str(lu_status(r), "no task", "bob gets nothing while the lease holds");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "bob", DEMO, 0, 1, T0 + 60001);
    is_int(n_tasks(r), 1, "after expiry the task returns to the queue: bob leases it");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_demo(s, "alice", 1, "late", 0, T0 + 61000);
    is_str(lu_status(r), "not leased", "alice's expired lease no longer counts");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_demo(s, "bob", 1, "in time", 0, T0 + 62000);
    is_str(lu_status(r), "ok", "bob submits");
    gptline__label__reply__free_unpacked(r, NULL);
    label_store_close(&s);
}

/* The lease scan resumes after the contractor's last lease and wraps
 * round: a slot freed behind the cursor is still found. */
static void test_lease_cursor(void)
{
    label_store_opts_t o = {.lease_seconds = 10};
    label_store_t *s = fresh("cursor", &o);
    import(s, "p.jsonl", "{\"prompt\":\"t1\"}\n{\"prompt\":\"t2\"}\n{\"prompt\":\"t3\"}\n", 0, 1);
    uint64_t got[4] = {0};
    const char *who[4] = {"alice", "bob", "bob", "bob"};
    int64_t when[4] = {T0, T0, T0 + 1, T0 + 20000};
    for (int i = 0; i < 4; i++) {
        Gptline__Label__Reply *r = lu_lease(s, who[i], DEMO, 0, 1, when[i]);
        got[i] = n_tasks(r) ? r->tasks->tasks[0]->task_id : 0;
        gptline__label__reply__free_unpacked(r, NULL);
    }
    ok(got[0] == 1 && got[1] == 2 && got[2] == 3, "leases go in queue order (%llu %llu %llu)",
       (unsigned long long)got[0], (unsigned long long)got[1], (unsigned long long)got[2]);
    is_int(got[3], 1, "after alice's lease expired, bob's scan wraps round to task 1");
    /* a retried lease (same request id) gets the same tasks, leased once */
    import(s, "q.jsonl", "{\"prompt\":\"t4\"}\n{\"prompt\":\"t5\"}\n", 0, 1);
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__LeaseRequest l = GPTLINE__LABEL__LEASE_REQUEST__INIT;
    l.count = 1;
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_LEASE;
    q.lease = &l;
    q.request_id = 9001;
    Gptline__Label__Reply *a = lu_apply(s, "carol", &q, T0 + 20000);
    Gptline__Label__Reply *b = lu_apply(s, "carol", &q, T0 + 20001);
    ok(n_tasks(a) == 1 && n_tasks(b) == 1 && a->tasks->tasks[0]->task_id == b->tasks->tasks[0]->task_id &&
           !strcmp(a->tasks->tasks[0]->prompt, b->tasks->tasks[0]->prompt) &&
           a->tasks->tasks[0]->lease_expires_unix_ms == b->tasks->tasks[0]->lease_expires_unix_ms,
       "a retried lease gets the same task and lease back");
    gptline__label__reply__free_unpacked(a, NULL);
    gptline__label__reply__free_unpacked(b, NULL);
    a = lu_lease(s, "alice", DEMO, 0, 5, T0 + 20002);
    /* tasks 2 and 3 (bob's leases expired) and the one new task carol did not get */
    is_int(n_tasks(a), 3, "carol's task was leased once: alice gets the 3 others");
    gptline__label__reply__free_unpacked(a, NULL);
    label_store_close(&s);
}

static void test_ranking_rules(void)
{
    label_store_t *s = fresh("ranking", NULL);
    is_int(import(s, "c.jsonl",
                  "{\"prompt\":\"q1\",\"candidates\":[\"a\",{\"text\":\"b\",\"author\":\"carol\"},\"c\"]}\n"
                  "{\"prompt\":\"q2\",\"candidates\":[\"x\",\"y\"]}\n"
                  "{\"prompt\":\"bad\",\"candidates\":[\"only one\"]}\n",
                  1, 3),
           2, "two ranking tasks imported, the one with a single candidate refused");
    Gptline__Label__Reply *r = lu_lease(s, "carol", RANK, 0, 10, T0);
    ok(n_tasks(r) == 1 && r->tasks->tasks[0]->task_id == 2, "carol is never offered the task she wrote for");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "carol", 0, 1, 1, T0);
    is_str(lu_status(r), "rejected", "nor can she lease it by id");
    ok(r && strstr(r->error, "own writing"), "reason: %s", r ? r->error : "");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "alice", RANK, 1, 1, T0);
    ok(n_tasks(r) == 1 && r->tasks->tasks[0]->n_candidates == 3, "alice leases task 1 with its 3 candidates");
    gptline__label__reply__free_unpacked(r, NULL);
    uint32_t bad1[3] = {0, 0, 0}, bad2[3] = {0, 2, 3}, bad3[2] = {0, 1}, good[3] = {1, 0, 1};
    r = lu_rank(s, "alice", 1, bad1, 3, 4, 0, T0);
    is_str(lu_status(r), "rejected", "an all-tie ranking is rejected");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_rank(s, "alice", 1, bad2, 3, 4, 0, T0);
    is_str(lu_status(r), "rejected", "a ranking that is not a (tied) permutation is rejected");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_rank(s, "alice", 1, bad3, 2, 4, 0, T0);
    is_str(lu_status(r), "rejected", "a ranking of 2 for 3 candidates is rejected");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_rank(s, "alice", 1, good, 3, 9, 0, T0);
    is_str(lu_status(r), "rejected", "rating 9 is rejected");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_demo(s, "alice", 1, "text", 0, T0);
    is_str(lu_status(r), "rejected", "a demonstration for a ranking task is rejected");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_rank(s, "alice", 1, good, 3, 5, 0, T0);
    is_str(lu_status(r), "ok", "a ranking with a tie is accepted");
    gptline__label__reply__free_unpacked(r, NULL);

    /* malformed frames through the same path the server uses */
    uint8_t junk[5] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    label_work_t w = {.contractor = "alice", .data = junk, .len = sizeof junk};
    gl_err_t err = {0};
    label_store_apply(s, &w, 1, T0, &err);
    r = gptline__label__reply__unpack(NULL, w.reply_len, w.reply);
    is_str(lu_status(r), "bad request", "a malformed frame gets BAD_REQUEST");
    gptline__label__reply__free_unpacked(r, NULL);
    free(w.reply);
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__Ping ping = GPTLINE__LABEL__PING__INIT;
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_PING;
    q.ping = &ping;
    q.request_id = 5;
    q.version = 2;
    size_t len = gptline__label__request__get_packed_size(&q);
    uint8_t *b = malloc(len);
    gptline__label__request__pack(&q, b);
    w = (label_work_t){.contractor = "alice", .data = b, .len = len};
    label_store_apply(s, &w, 1, T0, &err);
    r = gptline__label__reply__unpack(NULL, w.reply_len, w.reply);
    is_str(lu_status(r), "bad version", "version 2 gets BAD_VERSION");
    is_int(r ? r->request_id : 0, 5, "carrying the request id");
    gptline__label__reply__free_unpacked(r, NULL);
    free(w.reply);
    free(b);
    label_store_close(&s);
}

static double jnum(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : -99;
}

static void test_stats(void)
{
    label_store_t *s = fresh("stats", NULL);
    import(s, "c.jsonl",
           "{\"prompt\":\"q1\",\"candidates\":[\"a\",\"b\",\"c\"]}\n"
           "{\"prompt\":\"q2\",\"candidates\":[\"a\",\"b\",\"c\"]}\n",
           1, 2);
    uint32_t same[3] = {0, 1, 2}, rev[3] = {2, 1, 0};
    Gptline__Label__Reply *r;
    const char *who[2] = {"alice", "bob"};
    for (int i = 0; i < 2; i++) {
        r = lu_lease(s, who[i], RANK, 0, 2, T0);
        gptline__label__reply__free_unpacked(r, NULL);
    }
    /* task 1: both rank a > b > c; task 2: bob reverses alice */
    gptline__label__reply__free_unpacked(lu_rank(s, "alice", 1, same, 3, 5, 0, T0 + 1000), NULL);
    gptline__label__reply__free_unpacked(lu_rank(s, "bob", 1, same, 3, 5, 0, T0 + 3000), NULL);
    gptline__label__reply__free_unpacked(lu_rank(s, "alice", 2, same, 3, 5, 0, T0 + 5000), NULL);
    gptline__label__reply__free_unpacked(lu_rank(s, "bob", 2, rev, 3, 5, 0, T0 + 7000), NULL);
    char *js = NULL;
    gl_err_t err = {0};
    ok(label_store_stats(s, T0 + 8000, &js, &err) == GL_OK, "stats");
    json_t *o = json_loads(js ? js : "{}", 0, NULL);
    /* by hand: 3 pairs agree on task 1, 0 of 3 on task 2 -> 0.5; tau +1 and -1 -> 0 */
    ok(fabs(jnum(o, "pairwise_agreement") - 0.5) < 1e-9, "overall pairwise agreement 0.5 (%g)",
       jnum(o, "pairwise_agreement"));
    ok(fabs(jnum(o, "kendall_tau")) < 1e-9, "overall Kendall tau 0 (%g)", jnum(o, "kendall_tau"));
    json_t *rk = json_object_get(json_object_get(o, "queues"), "ranking");
    is_int(jnum(rk, "done"), 2, "both ranking tasks done");
    json_t *bob = json_array_get(json_object_get(o, "contractors"), 1);
    is_str(json_string_value(json_object_get(bob, "contractor")), "bob", "second contractor is bob");
    is_int(jnum(bob, "rankings"), 2, "bob ranked 2");
    ok(fabs(jnum(bob, "median_seconds_per_task") - 5.0) < 1e-9, "bob's median time 5 s (%g)",
       jnum(bob, "median_seconds_per_task"));
    json_decref(o);
    free(js);
    label_store_close(&s);
}

static void test_map_growth(void)
{
    label_store_opts_t o = {.map_size = 256 * 1024};
    label_store_t *s = fresh("growth", &o);
    char *big = malloc(LABEL_MAX_PROMPT);
    memset(big, 'p', LABEL_MAX_PROMPT - 1);
    big[LABEL_MAX_PROMPT - 1] = 0;
    int all_ok = 1;
    for (int i = 0; i < 64; i++) {
        Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
        Gptline__Label__SubmitPrompt p = GPTLINE__LABEL__SUBMIT_PROMPT__INIT;
        big[0] = (char)('a' + i % 26);
        p.prompt = big;
        q.body_case = GPTLINE__LABEL__REQUEST__BODY_PROMPT;
        q.prompt = &p;
        Gptline__Label__Reply *r = lu_apply(s, "alice", &q, T0);
        all_ok &= r && r->status == OK_;
        gptline__label__reply__free_unpacked(r, NULL);
    }
    ok(all_ok, "64 prompts of 32 KiB into a 256 KiB map all acknowledged");
    ok(label_store_map_growths(s) > 0, "the map grew %u times", label_store_map_growths(s));
    Gptline__Label__Reply *r = lu_lease(s, "bob", DEMO, 0, 64, T0);
    is_int(n_tasks(r), 64, "all 64 prompts are tasks bob can lease");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_lease(s, "alice", DEMO, 0, 64, T0);
    is_str(lu_status(r), "no task", "alice is not offered the prompts she wrote");
    gptline__label__reply__free_unpacked(r, NULL);
    free(big);
    label_store_close(&s);
}

/* n lease requests (ids rid0..) from c in one batch: each stores a reply */
static void lease_batch(label_store_t *s, const char *c, uint64_t rid0, size_t n, int64_t now)
{
    label_work_t *w = calloc(n, sizeof *w);
    uint8_t **bufs = calloc(n, sizeof *bufs);
    for (size_t i = 0; i < n; i++) {
        Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
        Gptline__Label__LeaseRequest l = GPTLINE__LABEL__LEASE_REQUEST__INIT;
        l.count = 1;
        q.body_case = GPTLINE__LABEL__REQUEST__BODY_LEASE;
        q.lease = &l;
        q.request_id = rid0 + i;
        bufs[i] = lu_pack(&q, &w[i].len);
        w[i].contractor = c;
        w[i].data = bufs[i];
    }
    gl_err_t err = {0};
    if (label_store_apply(s, w, n, now, &err))
        tap_diag("apply: %s", err.msg);
    for (size_t i = 0; i < n; i++) {
        free(w[i].reply);
        free(bufs[i]);
    }
    free(w);
    free(bufs);
}

static uint64_t stats_u64(label_store_t *s, const char *key)
{
    char *js = NULL;
    gl_err_t err = {0};
    uint64_t v = UINT64_MAX;
    if (label_store_stats(s, T0, &js, &err) == GL_OK) {
        json_t *o = json_loads(js, 0, NULL);
        json_t *x = json_object_get(json_object_get(o, "replies"), key);
        if (json_is_integer(x))
            v = (uint64_t)json_integer_value(x);
        json_decref(o);
    }
    free(js);
    return v;
}

/* Stored replies answer retries for the retention window, then go. */
static void test_reply_retention(void)
{
    label_store_opts_t o = {.lease_seconds = 3600, .reply_retention_seconds = 60, .prune_batch = 100};
    label_store_t *s = fresh("retention", &o);
    import(s, "p.jsonl", "{\"prompt\":\"p1\"}\n{\"prompt\":\"p2\"}\n", 0, 1);
    Gptline__Label__Reply *r = lu_lease(s, "alice", DEMO, 0, 2, T0 + 1000);
    is_int(n_tasks(r), 2, "alice leases both tasks");
    gptline__label__reply__free_unpacked(r, NULL);
    r = lu_demo(s, "alice", 1, "first", 4242, T0 + 1000);
    uint64_t sid = r && r->ack ? r->ack->submission_id : 0;
    is_str(lu_status(r), "ok", "alice submits task 1");
    gptline__label__reply__free_unpacked(r, NULL);
    is_int(label_store_replies(s), 2, "two replies stored (the lease and the submission)");

    /* (1) a retry inside the window: the stored reply, no second label */
    r = lu_demo(s, "alice", 1, "first", 4242, T0 + 1000 + 60000);
    is_str(lu_status(r), "ok", "a retry 60 s later (the window, not past it) is answered ok");
    is_int(r && r->ack ? r->ack->submission_id : 0, sid, "with the stored submission id");
    gptline__label__reply__free_unpacked(r, NULL);
    is_int(label_store_submissions(s), 1, "and no second submission");
    is_int(label_store_replies_pruned(s), 0, "nothing pruned yet");

    /* (2) past the window the replies are pruned by the next write */
    r = lu_demo(s, "alice", 2, "second", 4243, T0 + 1000 + 60001);
    is_str(lu_status(r), "ok", "alice submits task 2 past the window of the first");
    gptline__label__reply__free_unpacked(r, NULL);
    is_int(label_store_replies_pruned(s), 2, "that batch pruned the lease's and the first submission's replies");
    is_int(label_store_replies(s), 1, "only the new reply is left");
    is_int(stats_u64(s, "pruned"), 2, "stats count 2 pruned replies");
    is_int(stats_u64(s, "stored"), 1, "and 1 stored");
    r = lu_demo(s, "alice", 1, "first", 4242, T0 + 1000 + 60002);
    is_str(lu_status(r), "not leased", "a retry after the window is applied again (and refused: already done)");
    gptline__label__reply__free_unpacked(r, NULL);
    is_int(label_store_submissions(s), 2, "still two submissions (one of each task)");
    size_t n = 99;
    gl_err_t err = {0};
    ok(label_store_prune_replies(s, T0 + 1000 + 60002, &n, &err) == GL_OK && n == 0,
       "nothing else is past the window (%zu pruned)", n);

    /* (3) bounded per transaction: 252 expired replies go 100, 100, 52 */
    lease_batch(s, "bob", 1000000, 250, T0 + 100000);
    uint64_t before = label_store_replies(s), base = label_store_replies_pruned(s);
    is_int(before, 250 + 2, "250 more replies stored");
    size_t got[4] = {0};
    int all_ok = 1;
    for (int i = 0; i < 4; i++)
        all_ok &= label_store_prune_replies(s, T0 + 100000 + 60001, &got[i], &err) == GL_OK;
    ok(all_ok && got[0] == 100 && got[1] == 100 && got[2] == 52 && got[3] == 0,
       "pruned 100, 100, 52, 0 over four calls (%zu %zu %zu %zu)", got[0], got[1], got[2], got[3]);
    is_int(label_store_replies(s), 0, "every expired reply is gone");
    is_int(label_store_replies_pruned(s) - base, 252, "the counter grew by 252");
    lease_batch(s, "bob", 2000000, 150, T0 + 200000);
    lease_batch(s, "carol", 3000000, 1, T0 + 200000 + 60001);
    is_int(label_store_replies(s), 150 + 1 - 100, "a batch prunes at most 100 of the 150 expired with it");
    is_int(stats_u64(s, "pruned"), 2 + 252 + 100, "the store's total of pruned replies");
    label_store_close(&s);
}

/* A version 1 store (no idem_age) is upgraded at open and its replies
 * still answer retries, then expire a window after the upgrade. */
static void test_reply_upgrade(void)
{
    label_store_opts_t o = {.lease_seconds = 3600, .reply_retention_seconds = 60};
    label_store_t *s = fresh("upgrade", &o);
    import(s, "p.jsonl", "{\"prompt\":\"p1\"}\n", 0, 1);
    gptline__label__reply__free_unpacked(lu_lease(s, "alice", DEMO, 0, 1, T0), NULL);
    Gptline__Label__Reply *r = lu_demo(s, "alice", 1, "answer", 555, T0 + 10);
    uint64_t sid = r && r->ack ? r->ack->submission_id : 0;
    gptline__label__reply__free_unpacked(r, NULL);
    lease_batch(s, "bob", 7000, 20000, T0 + 20); /* more than one upgrade batch (16384) */
    label_store_close(&s);

    /* make it a version 1 store: no idem_age, magic version 1 */
    char *dir = gl_path_join(tap_tmpdir(), "upgrade");
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, age;
    int rc = mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    rc = rc ? rc : mdb_env_open(env, dir, 0, 0600);
    rc = rc ? rc : mdb_txn_begin(env, NULL, 0, &txn);
    rc = rc ? rc : mdb_dbi_open(txn, "meta", 0, &meta);
    rc = rc ? rc : mdb_dbi_open(txn, "idem_age", 0, &age);
    rc = rc ? rc : mdb_drop(txn, age, 1);
    uint8_t magic[12];
    uint32_t one = 1;
    memcpy(magic, LABEL_STORE_MAGIC, 8);
    memcpy(magic + 8, &one, 4);
    MDB_val k = {5, "magic"}, v = {12, magic};
    rc = rc ? rc : mdb_put(txn, meta, &k, &v, 0);
    rc = rc ? rc : mdb_txn_commit(txn);
    mdb_env_close(env);
    ok(rc == 0, "the store is made version 1 without idem_age: %s", mdb_strerror(rc));

    int64_t t0 = (int64_t)time(NULL) * 1000;
    gl_err_t err = {0};
    s = label_store_open(dir, &o, &err);
    int64_t t1 = (int64_t)time(NULL) * 1000 + 999;
    ok(s != NULL, "the version 1 store opens: %s", err.msg);
    if (!s) {
        free(dir);
        return;
    }
    is_int(label_store_replies(s), 20002, "with its 20002 stored replies");
    r = lu_demo(s, "alice", 1, "answer", 555, t1);
    is_int(r && r->ack ? r->ack->submission_id : 0, sid, "a retry gets the stored reply after the upgrade");
    gptline__label__reply__free_unpacked(r, NULL);
    is_int(label_store_submissions(s), 1, "and no second submission");
    size_t n = 99;
    ok(label_store_prune_replies(s, t0 + 60000, &n, &err) == GL_OK && n == 0,
       "old replies are kept a window after the upgrade (%zu pruned)", n);
    label_store_close(&s);

    /* reopening: now version 2, nothing to upgrade */
    s = label_store_open(dir, &o, &err);
    ok(s != NULL, "the upgraded store reopens");
    uint64_t total = 0;
    for (int i = 0; s && i < 1000 && label_store_prune_replies(s, t1 + 60001, &n, &err) == GL_OK && n; i++)
        total += n;
    is_int(total, 20002, "a window after the upgrade every old reply is pruned");
    is_int(s ? label_store_replies(s) : 1, 0, "none left");
    label_store_close(&s);

    /* and a store of a later version is refused */
    rc = mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    rc = rc ? rc : mdb_env_open(env, dir, 0, 0600);
    rc = rc ? rc : mdb_txn_begin(env, NULL, 0, &txn);
    rc = rc ? rc : mdb_dbi_open(txn, "meta", 0, &meta);
    uint32_t three = 3;
    memcpy(magic + 8, &three, 4);
    rc = rc ? rc : mdb_put(txn, meta, &k, &v, 0);
    rc = rc ? rc : mdb_txn_commit(txn);
    mdb_env_close(env);
    s = label_store_open(dir, &o, &err);
    ok(!s && err.code == GL_EVERSION, "a version 3 store is refused: %s", err.msg);
    label_store_close(&s);
    free(dir);
}

/* Tokens of a record back to text (byte ids; 256 as <eot>). */
static char *detok(const shard_tokens_t *t, uint64_t from, uint64_t to)
{
    char *s = malloc((to - from) * 5 + 1);
    size_t n = 0;
    for (uint64_t i = from; i < to; i++) {
        uint32_t v = shard_token_at(t, i);
        if (v == 256) {
            memcpy(s + n, "<eot>", 5);
            n += 5;
        } else {
            s[n++] = (char)v;
        }
    }
    s[n] = 0;
    return s;
}

static void test_export(void)
{
    label_store_t *s = fresh("export", NULL);
    import(s, "p.jsonl", "{\"prompt\":\"Say hi\"}\n{\"prompt\":\"Name a colour\"}\n", 0, 1);
    import(s, "c.jsonl", "{\"prompt\":\"Best?\",\"candidates\":[\"one\",\"two\",\"three\"]}\n", 1, 1);
    Gptline__Label__Reply *r = lu_lease(s, "alice", 0, 0, 3, T0);
    is_int(n_tasks(r), 3, "alice leases 2 demonstrations and 1 ranking");
    gptline__label__reply__free_unpacked(r, NULL);
    gptline__label__reply__free_unpacked(lu_demo(s, "alice", 2, "Blue.", 0, T0), NULL);
    gptline__label__reply__free_unpacked(lu_demo(s, "alice", 1, "Hi!", 0, T0), NULL);
    uint32_t rank[3] = {1, 0, 1};
    gptline__label__reply__free_unpacked(lu_rank(s, "alice", 3, rank, 3, 6, 0, T0), NULL);

    char *sft = gl_path_join(tap_tmpdir(), "sft"), *rm = gl_path_join(tap_tmpdir(), "rm");
    char *jl = gl_path_join(tap_tmpdir(), "hh.jsonl");
    label_export_opts_t o = {.kind = LABEL_EXPORT_SFT, .out_dir = sft, .tokenizer = "bytes"};
    label_export_stats_t st;
    gl_err_t err = {0};
    ok(label_export(s, &o, &st, &err) == GL_OK, "export sft: %s", err.msg);
    is_int(st.records, 2, "two SFT records");
    shard_dataset_t *d = shard_dataset_open(sft, SHARD_OPEN_CHECKSUM, &err);
    ok(d != NULL, "SFT shards open as a dataset: %s", err.msg);
    if (d) {
        is_int(shard_dataset_kind(d), GPTLINE__RECORD_KIND__SFT, "record kind SFT");
        is_int(shard_dataset_docs(d), 2, "two records");
        shard_reader_t *rd = shard_dataset_shard(d, 0);
        shard_tokens_t t;
        const uint8_t *m;
        size_t ml;
        shard_tokens(rd, 0, &t, &err);
        char *text = detok(&t, 0, t.n);
        /* submission order: task 2 was submitted first */
        is_str(text, "User: Name a colour\n\nAssistant: Blue.<eot>", "record 0 is the first submission, laid out");
        free(text);
        shard_meta(rd, 0, &m, &ml, &err);
        Gptline__SftConversation *c = gptline__sft_conversation__unpack(NULL, ml, m);
        ok(c && c->n_turns == 2 && c->n_loss_spans == 1, "SftConversation with 2 turns and a loss span");
        if (c && c->n_loss_spans == 1) {
            text = detok(&t, c->loss_spans[0]->start, c->loss_spans[0]->end);
            is_str(text, "Blue.<eot>", "the loss span is the response and its end-of-text");
            free(text);
            is_str(c->contractor, "alice", "contractor recorded");
        }
        gptline__sft_conversation__free_unpacked(c, NULL);
        shard_dataset_close(&d);
    }
    o = (label_export_opts_t){.kind = LABEL_EXPORT_RM, .out_dir = rm, .jsonl_path = jl, .jsonl = LABEL_JSONL_HH};
    ok(label_export(s, &o, &st, &err) == GL_OK, "export rm: %s", err.msg);
    is_int(st.comparisons, 2, "one ranking {1,0,1} holds 2 strict comparisons");
    is_int(st.jsonl_lines, 2, "two HH-RLHF lines");
    d = shard_dataset_open(rm, SHARD_OPEN_CHECKSUM, &err);
    ok(d != NULL, "RM shards open as a dataset: %s", err.msg);
    if (d) {
        is_int(shard_dataset_kind(d), GPTLINE__RECORD_KIND__RM, "record kind RM");
        shard_reader_t *rd = shard_dataset_shard(d, 0);
        shard_tokens_t t;
        const uint8_t *m;
        size_t ml;
        shard_tokens(rd, 0, &t, &err);
        shard_meta(rd, 0, &m, &ml, &err);
        Gptline__RmRanking *k = gptline__rm_ranking__unpack(NULL, ml, m);
        ok(k && k->n_responses == 3 && k->n_rank == 3, "RmRanking of 3 responses");
        if (k && k->n_responses == 3) {
            const char *want[3] = {"one", "two", "three"};
            for (int i = 0; i < 3; i++) {
                char *text = detok(&t, k->responses[i]->start, k->responses[i]->end);
                is_str(text, want[i], "response span %d", i);
                free(text);
                is_int(k->rank[i], rank[i], "rank %d as submitted", i);
            }
            is_int(t.n, k->responses[2]->end, "candidates follow the prompt with no end-of-text (the trainer adds it)");
            char *text = detok(&t, k->prompt->start, k->prompt->end);
            is_str(text, "User: Best?\n\nAssistant: ", "prompt span");
            free(text);
        }
        gptline__rm_ranking__free_unpacked(k, NULL);
        shard_dataset_close(&d);
    }
    char *data = NULL;
    size_t len;
    gl_read_file(jl, 1 << 20, &data, &len, &err);
    ok(data && strstr(data, "{\"chosen\": \"\\n\\nHuman: Best?\\n\\nAssistant: two\", \"rejected\": "
                            "\"\\n\\nHuman: Best?\\n\\nAssistant: one\"}") == NULL &&
           data && strstr(data, "\"chosen\":\"\\n\\nHuman: Best?\\n\\nAssistant: two\",\"rejected\":"
                                "\"\\n\\nHuman: Best?\\n\\nAssistant: one\"}"),
       "HH-RLHF line: two chosen over one");
    free(data);

    /* export with a BPE vocabulary: chat-role special tokens */
    char *vocab = tap_data_path("tokenizers/vocab/r50k_base.tiktoken");
    if (vocab && access(vocab, R_OK) == 0) {
        char *bpe = gl_path_join(tap_tmpdir(), "sft-bpe");
        o = (label_export_opts_t){.kind = LABEL_EXPORT_SFT, .out_dir = bpe, .tokenizer = vocab};
        ok(label_export(s, &o, &st, &err) == GL_OK, "export sft with %s: %s", vocab, err.msg);
        tok_load_opts_t lo = {.chat_roles = 1};
        tok_vocab_t *v = tok_vocab_load(vocab, &lo, &err);
        d = shard_dataset_open(bpe, 0, &err);
        ok(v && d, "the vocabulary and the BPE dataset open");
        if (v && d) {
            const Gptline__TokenizerId *tid = shard_dataset_tokenizer(d);
            ok(tid && tid->hash == tok_vocab_hash(v) && tid->eot_id == (uint32_t)tok_eot_id(v) &&
                   tid->vocab_size == tok_vocab_size(v),
               "the manifest names the vocabulary (hash, end-of-text, size with the chat roles)");
            shard_reader_t *rd = shard_dataset_shard(d, 0);
            shard_tokens_t t;
            const uint8_t *m;
            size_t ml;
            shard_tokens(rd, 0, &t, &err);
            uint32_t *ids = malloc(t.n * sizeof *ids);
            for (uint64_t i = 0; i < t.n; i++)
                ids[i] = shard_token_at(&t, i);
            uint8_t *buf = NULL;
            size_t len = 0, cap = 0;
            tok_decode(v, ids, t.n, &buf, &len, &cap, &err);
            char *text = strndup((char *)buf, len);
            is_str(text, "<|user|>Name a colour<|assistant|>Blue.<|endoftext|>",
                   "record 0 decodes to the conversation with the chat-role tokens");
            free(text);
            shard_meta(rd, 0, &m, &ml, &err);
            Gptline__SftConversation *c = gptline__sft_conversation__unpack(NULL, ml, m);
            if (c && c->n_loss_spans == 1) {
                len = 0;
                tok_decode(v, ids + c->loss_spans[0]->start, c->loss_spans[0]->end - c->loss_spans[0]->start, &buf,
                           &len, &cap, &err);
                text = strndup((char *)buf, len);
                is_str(text, "Blue.<|endoftext|>", "the loss span is the response and <|endoftext|>");
                free(text);
            } else {
                ok(0, "the loss span is the response and <|endoftext|>");
            }
            gptline__sft_conversation__free_unpacked(c, NULL);
            free(buf);
            free(ids);
        }
        shard_dataset_close(&d);
        tok_vocab_free(&v);
        free(bpe);
    } else {
        tap_skip(5, "no r50k_base vocabulary in GL_DATA");
    }
    free(vocab);

    /* hot backup: a copy with the same submissions */
    char *bk = gl_path_join(tap_tmpdir(), "backup");
    ok(label_store_backup(s, bk, &err) == GL_OK, "backup: %s", err.msg);
    label_store_t *b = label_store_open(bk, NULL, &err);
    is_int(b ? label_store_submissions(b) : 0, 3, "the backup holds the 3 submissions");
    label_store_close(&b);
    ok(label_store_backup(s, bk, &err) == GL_EEXIST, "a backup never overwrites a store");
    free(bk);
    free(sft);
    free(rm);
    free(jl);
    label_store_close(&s);
}

int main(void)
{
    test_check_ranking();
    test_assignment();
    test_lease_expiry();
    test_lease_cursor();
    test_ranking_rules();
    test_stats();
    test_map_growth();
    test_reply_retention();
    test_reply_upgrade();
    test_export();
    return tap_done();
}
