/* fuzz_label_msg.c — fuzzes what the labeling server does with a frame
 * from the network: label_wire_decode (protobuf, version, limits, UTF-8),
 * then the whole request handler of the store (label_store_apply) as a
 * registered contractor against a small store with a demonstration and a
 * ranking task, exactly as the writer thread runs it. The reply must
 * always decode and carry a status. Seeds are one valid request of each
 * kind.
 */
#include "labeler/labeler.h"
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static label_store_t *store;
static char dir[128];

static void cleanup(void)
{
    label_store_close(&store);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/gl-fuzz-label-%ld", (long)getpid());
    gl_err_t err = {0};
    store = label_store_open(dir, NULL, &err);
    if (!store)
        abort();
    label_keypair_t kp;
    label_keygen(&kp, &err);
    label_store_add_contractor(store, "fuzz", kp.public_z85, GPTLINE__LABEL__ROLE__CONTRACTOR, &err);
    char path[160];
    snprintf(path, sizeof path, "%s/in.jsonl", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"prompt\":\"p\",\"overlap\":100}\n", f);
    fclose(f);
    uint64_t a, b;
    label_store_import_prompts(store, path, 100, &a, &b, &err);
    f = fopen(path, "w");
    fputs("{\"prompt\":\"q\",\"candidates\":[\"a\",\"b\",\"c\"],\"overlap\":100}\n", f);
    fclose(f);
    label_store_import_candidates(store, path, 100, &a, &b, &err);
    atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store)
        setup();
    Gptline__Label__Request *q = NULL;
    uint64_t rid;
    gl_err_t err = {0};
    if (label_wire_decode(data, size, &q, &rid, &err) == GL_OK) {
        if (q->body_case == GPTLINE__LABEL__REQUEST__BODY_RANKING)
            label_check_ranking(size % 12, q->ranking->rank, q->ranking->n_rank, q->ranking->flags,
                                q->ranking->n_flags, q->ranking->rating, &err);
        gptline__label__request__free_unpacked(q, NULL);
    }
    label_work_t w = {.contractor = "fuzz", .data = data, .len = size};
    label_store_apply(store, &w, 1, 1700000000000, &err);
    Gptline__Label__Reply *r = gptline__label__reply__unpack(NULL, w.reply_len, w.reply);
    if (!r)
        abort(); /* every request gets a well-formed reply */
    gptline__label__reply__free_unpacked(r, NULL);
    free(w.reply);
    return 0;
}

uint8_t *gl_fuzz_seed(size_t i, size_t *len)
{
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__Hello h = GPTLINE__LABEL__HELLO__INIT;
    Gptline__Label__LeaseRequest l = GPTLINE__LABEL__LEASE_REQUEST__INIT;
    Gptline__Label__SubmitDemonstration d = GPTLINE__LABEL__SUBMIT_DEMONSTRATION__INIT;
    Gptline__Label__SubmitRanking r = GPTLINE__LABEL__SUBMIT_RANKING__INIT;
    Gptline__Label__SkipTask s = GPTLINE__LABEL__SKIP_TASK__INIT;
    Gptline__Label__SubmitPrompt p = GPTLINE__LABEL__SUBMIT_PROMPT__INIT;
    uint32_t rank[3] = {2, 0, 1}, flags[3] = {0, 1, 6};
    q.version = LABEL_PROTOCOL_VERSION;
    q.request_id = 1000 + i;
    switch (i) {
    case 0: h.client = "fuzz"; q.body_case = GPTLINE__LABEL__REQUEST__BODY_HELLO; q.hello = &h; break;
    case 1: l.count = 2; q.body_case = GPTLINE__LABEL__REQUEST__BODY_LEASE; q.lease = &l; break;
    case 2:
        d.task_id = 1;
        d.response = "an answer";
        q.body_case = GPTLINE__LABEL__REQUEST__BODY_DEMONSTRATION;
        q.demonstration = &d;
        break;
    case 3:
        r.task_id = 2;
        r.rank = rank;
        r.n_rank = 3;
        r.flags = flags;
        r.n_flags = 3;
        r.rating = 6;
        q.body_case = GPTLINE__LABEL__REQUEST__BODY_RANKING;
        q.ranking = &r;
        break;
    case 4:
        s.task_id = 1;
        s.reason = "why";
        q.body_case = GPTLINE__LABEL__REQUEST__BODY_SKIP;
        q.skip = &s;
        break;
    case 5: p.prompt = "new prompt"; q.body_case = GPTLINE__LABEL__REQUEST__BODY_PROMPT; q.prompt = &p; break;
    default: return NULL;
    }
    *len = gptline__label__request__get_packed_size(&q);
    uint8_t *b = malloc(*len);
    gptline__label__request__pack(&q, b);
    return b;
}
