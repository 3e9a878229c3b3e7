/* label_util.h — building labeling requests in tests and benchmarks.
 *
 * Small helpers that pack a Request the way a client would, and a one-shot
 * label_store_apply() that returns the unpacked reply, so a test can talk
 * to the store without a socket. */
#ifndef GL_TEST_LABEL_UTIL_H
#define GL_TEST_LABEL_UTIL_H

#include "labeler/labeler.h"

#include <stdlib.h>
#include <string.h>

static uint64_t lu_next_rid = 1;

/* Packs q (version and, when 0, request id filled in); caller frees. */
static inline uint8_t *lu_pack(Gptline__Label__Request *q, size_t *len)
{
    q->version = LABEL_PROTOCOL_VERSION;
    if (!q->request_id)
        q->request_id = lu_next_rid++;
    *len = gptline__label__request__get_packed_size(q);
    uint8_t *b = malloc(*len ? *len : 1);
    gptline__label__request__pack(q, b);
    return b;
}

/* Applies one request as contractor c at time now; caller frees the reply. */
static inline Gptline__Label__Reply *lu_apply(label_store_t *s, const char *c, Gptline__Label__Request *q,
                                              int64_t now)
{
    size_t len;
    uint8_t *b = lu_pack(q, &len);
    label_work_t w = {.contractor = c, .data = b, .len = len};
    gl_err_t err = {0};
    label_store_apply(s, &w, 1, now, &err);
    Gptline__Label__Reply *r = gptline__label__reply__unpack(NULL, w.reply_len, w.reply);
    free(w.reply);
    free(b);
    return r;
}

static inline Gptline__Label__Reply *lu_lease(label_store_t *s, const char *c, Gptline__Label__TaskKind kind,
                                              uint64_t task, uint32_t count, int64_t now)
{
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__LeaseRequest l = GPTLINE__LABEL__LEASE_REQUEST__INIT;
    l.kind = kind;
    l.task_id = task;
    l.count = count;
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_LEASE;
    q.lease = &l;
    return lu_apply(s, c, &q, now);
}

static inline Gptline__Label__Reply *lu_demo(label_store_t *s, const char *c, uint64_t task, const char *text,
                                             uint64_t rid, int64_t now)
{
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__SubmitDemonstration d = GPTLINE__LABEL__SUBMIT_DEMONSTRATION__INIT;
    d.task_id = task;
    d.response = (char *)text;
    q.request_id = rid;
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_DEMONSTRATION;
    q.demonstration = &d;
    return lu_apply(s, c, &q, now);
}

/* Packs a ranking submission (rank of n entries). */
static inline void lu_ranking_req(Gptline__Label__Request *q, Gptline__Label__SubmitRanking *r, uint64_t task,
                                  uint32_t *rank, size_t n, uint32_t rating, uint64_t rid)
{
    gptline__label__request__init(q);
    gptline__label__submit_ranking__init(r);
    r->task_id = task;
    r->rank = rank;
    r->n_rank = n;
    r->rating = rating;
    q->request_id = rid;
    q->body_case = GPTLINE__LABEL__REQUEST__BODY_RANKING;
    q->ranking = r;
}

static inline Gptline__Label__Reply *lu_rank(label_store_t *s, const char *c, uint64_t task, uint32_t *rank,
                                             size_t n, uint32_t rating, uint64_t rid, int64_t now)
{
    Gptline__Label__Request q;
    Gptline__Label__SubmitRanking r;
    lu_ranking_req(&q, &r, task, rank, n, rating, rid);
    return lu_apply(s, c, &q, now);
}

static inline const char *lu_status(const Gptline__Label__Reply *r)
{
    return r ? label_status_name(r->status) : "(no reply)";
}

#endif
