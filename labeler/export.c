/* export.c — labels out of the store: SFT and RM shards, JSONL, and the
 * statistics admins read (throughput, agreement).
 *
 * Export reads one snapshot (a read transaction) and walks the submissions
 * in id order, so the output is deterministic and the server keeps
 * serving. Each demonstration becomes one SftConversation record, each
 * ranking one RmRanking record (the trainer expands a ranking of K into
 * its K(K-1)/2 pairs; ties give no pair). Tokenization goes through a
 * small internal interface (tokenizer_t) with two implementations: a BPE
 * vocabulary (tokenizer/tokenizer.h) loaded with the chat-role special
 * tokens,
 *
 *     <|user|> prompt <|assistant|> response <|endoftext|>
 *
 * and the shard library's byte-level tokenizer ("bytes": ids 0-255,
 * end-of-text 256) with plain-text role markers,
 *
 *     "User: " prompt "\n\nAssistant: " response <eot>
 *
 * the loss span covering the response and its end-of-text in both. An RM
 * record is the prompt (through the assistant marker) followed by each
 * candidate with no end-of-text: the trainer closes each row with it, as
 * for `gptline shards import`. The JSONL formats are the ones `shards
 * import` reads back.
 *
 * Workload: a million comparisons (~170k rankings of 4) in a few seconds:
 * one pass, no per-record allocation beyond protobuf unpacking, tasks
 * looked up by key in the same snapshot.
 */
#include "labeler/internal.h"
#include "shards/shards.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- tokenizer interface ------------------------------------------------ */

/* Token vectors are the tokenizer's tok_ids_t (realloc'ed array). */
typedef tok_ids_t u32vec_t;

static void vec_push(u32vec_t *v, uint32_t x)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 4096;
        v->ids = gl_xrealloc(v->ids, v->cap * sizeof *v->ids);
    }
    v->ids[v->n++] = x;
}

typedef enum { TURN_USER, TURN_ASSISTANT } turn_t;

/* What export needs of a tokenizer: the byte-level one of `shards pack`
 * (ids 0-255, end-of-text 256, role markers written as plain text), or a
 * BPE vocabulary (tokenizer/tokenizer.h) loaded with the chat-role special
 * tokens, whose turns open with <|user|> / <|assistant|> and end with
 * <|endoftext|>. Contractors' text is encoded with no special token
 * allowed: "<|endoftext|>" typed in a response stays ordinary text. */
typedef struct {
    const char *name;
    uint64_t hash;
    uint32_t vocab_size, eot;
    void *ctx;
    /* Appends the tokens of text. */
    int (*encode)(void *ctx, const char *text, u32vec_t *out, gl_err_t *err);
    /* Appends the marker that opens a turn (first: the conversation's first). */
    int (*open_turn)(void *ctx, turn_t t, int first, u32vec_t *out, gl_err_t *err);
    void (*close)(void *ctx);
} tokenizer_t;

static int bytes_encode(void *ctx, const char *text, u32vec_t *out, gl_err_t *err)
{
    (void)ctx;
    (void)err;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        vec_push(out, *p);
    return GL_OK;
}

static int bytes_open_turn(void *ctx, turn_t t, int first, u32vec_t *out, gl_err_t *err)
{
    return bytes_encode(ctx, t == TURN_USER ? (first ? "User: " : "\n\nUser: ") : "\n\nAssistant: ", out, err);
}

static int bpe_encode(void *ctx, const char *text, u32vec_t *out, gl_err_t *err)
{
    return tok_encode(ctx, text, strlen(text), TOK_ALLOW_NONE, out, err);
}

static int bpe_open_turn(void *ctx, turn_t t, int first, u32vec_t *out, gl_err_t *err)
{
    (void)first;
    const char *name = t == TURN_USER ? "<|user|>" : "<|assistant|>";
    int64_t id = tok_special_id(ctx, name);
    if (id < 0)
        return gl_err_set(err, GL_EINVAL, "vocabulary %s has no %s token", tok_vocab_name(ctx), name);
    vec_push(out, (uint32_t)id);
    return GL_OK;
}

static void bpe_close(void *ctx)
{
    tok_vocab_t *v = ctx;
    tok_vocab_free(&v);
}

/* "bytes", or the path of a vocabulary file (tiktoken ranks, GPT-2
 * encoder.json, .gltok). */
static int tokenizer_get(const char *name, tokenizer_t *t, gl_err_t *err)
{
    if (!name || !strcmp(name, SHARD_BYTES_TOKENIZER)) {
        *t = (tokenizer_t){.name = SHARD_BYTES_TOKENIZER, .hash = shard_bytes_tokenizer_hash(),
                           .vocab_size = SHARD_BYTES_VOCAB, .eot = SHARD_BYTES_EOT, .encode = bytes_encode,
                           .open_turn = bytes_open_turn};
        return GL_OK;
    }
    tok_load_opts_t lo = {.chat_roles = 1};
    tok_vocab_t *v = tok_vocab_load(name, &lo, err);
    if (!v)
        return err->code ? err->code : GL_EINVAL;
    int64_t eot = tok_eot_id(v);
    if (eot < 0) {
        tok_vocab_free(&v);
        return gl_err_set(err, GL_EINVAL, "%s: vocabulary without <|endoftext|>", name);
    }
    *t = (tokenizer_t){.name = tok_vocab_name(v), .hash = tok_vocab_hash(v), .vocab_size = tok_vocab_size(v),
                       .eot = (uint32_t)eot, .ctx = v, .encode = bpe_encode, .open_turn = bpe_open_turn,
                       .close = bpe_close};
    return GL_OK;
}

/* Lays out prompt (and, for SFT, the response and its end-of-text) in out.
 * *resp_start gets where the assistant's text begins. With a BPE
 * vocabulary this is the chat template every stage shares
 * (tok_chat_encode / tok_chat_prompt in tokenizer/chat.c). */
static int layout(tokenizer_t *tok, const char *prompt, const char *response, u32vec_t *out, uint32_t *resp_start,
                  gl_err_t *err)
{
    int rc;
    if (tok->ctx) {
        tok_turn_t turns[2] = {{TOK_ROLE_USER, prompt, strlen(prompt)},
                               {TOK_ROLE_ASSISTANT, response ? response : "", response ? strlen(response) : 0}};
        if (!response) {
            rc = tok_chat_prompt(tok->ctx, turns, 1, out, err);
            *resp_start = (uint32_t)out->n;
            return rc;
        }
        tok_spans_t spans = {0};
        rc = tok_chat_encode(tok->ctx, turns, 2, out, &spans, err);
        *resp_start = !rc && spans.n == 1 ? spans.s[0].start : (uint32_t)out->n;
        tok_spans_free(&spans);
        return rc;
    }
    rc = tok->open_turn(tok->ctx, TURN_USER, 1, out, err);
    if (!rc)
        rc = tok->encode(tok->ctx, prompt, out, err);
    if (!rc)
        rc = tok->open_turn(tok->ctx, TURN_ASSISTANT, 0, out, err);
    *resp_start = (uint32_t)out->n;
    if (!rc && response) {
        rc = tok->encode(tok->ctx, response, out, err);
        vec_push(out, tok->eot);
    }
    return rc;
}

/* ---- export ------------------------------------------------------------- */

static size_t strict_pairs(const uint32_t *rank, size_t k)
{
    size_t n = 0;
    for (size_t i = 0; i < k; i++)
        for (size_t j = i + 1; j < k; j++)
            n += rank[i] != rank[j];
    return n;
}

static char *hh_text(const char *prompt, const char *response)
{
    size_t n = strlen(prompt) + strlen(response) + 32;
    char *s = gl_xmalloc(n);
    snprintf(s, n, "\n\nHuman: %s\n\nAssistant: %s", prompt, response);
    return s;
}

static int write_json(FILE *f, json_t *o)
{
    int rc = json_dumpf(o, f, JSON_COMPACT | JSON_PRESERVE_ORDER) || fputc('\n', f) == EOF;
    json_decref(o);
    return rc;
}

int label_export(label_store_t *s, const label_export_opts_t *o, label_export_stats_t *st, gl_err_t *err)
{
    tokenizer_t tok = {0};
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    shard_writer_t *w = NULL;
    gl_atomic_file_t af = {0};
    FILE *jf = NULL;
    u32vec_t toks = {0};
    uint64_t shard_no = 0, per_shard = o->shard_records ? o->shard_records : 1000000;
    int rc;
    Gptline__Label__TaskKind want =
        o->kind == LABEL_EXPORT_RM ? GPTLINE__LABEL__TASK_KIND__RANKING : GPTLINE__LABEL__TASK_KIND__DEMONSTRATION;
    memset(st, 0, sizeof *st);
    if ((rc = tokenizer_get(o->tokenizer, &tok, err)))
        return rc;
    if (o->out_dir && (rc = gl_mkdir_p(o->out_dir, err)))
        goto out;
    if (o->jsonl_path) {
        if (!strcmp(o->jsonl_path, "-")) {
            jf = stdout;
        } else {
            if ((rc = gl_atomic_open(&af, o->jsonl_path, err)))
                goto out;
            jf = af.f;
        }
    }
    if ((rc = label_store_read_txn(s, &txn, err)))
        goto out;
    int mrc = mdb_cursor_open(txn, s->subs, &cur);
    if (mrc) {
        rc = gl_err_set(err, GL_EDB, "%s: %s", s->dir, mdb_strerror(mrc));
        goto out;
    }
    MDB_val k, v;
    Gptline__Label__Task *task = NULL; /* cache: overlapping submissions share it */
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Gptline__Label__Submission *sub = gptline__label__submission__unpack(NULL, v.mv_size, v.mv_data);
        if (!sub) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: submission %llu does not decode", s->dir,
                            (unsigned long long)(k.mv_size == 8 ? label_get_be64(k.mv_data) : 0));
            break;
        }
        if (sub->kind != want) {
            gptline__label__submission__free_unpacked(sub, NULL);
            continue;
        }
        if (!task || task->id != sub->task_id) {
            if (task)
                gptline__label__task__free_unpacked(task, NULL);
            task = NULL;
            if ((rc = label_store_get_task(s, txn, sub->task_id, &task, err))) {
                gptline__label__submission__free_unpacked(sub, NULL);
                break;
            }
        }
        char idbuf[48];
        snprintf(idbuf, sizeof idbuf, "label-%llu", (unsigned long long)sub->id);
        if (o->out_dir && !w) {
            char name[64];
            snprintf(name, sizeof name, "%s-%05llu" SHARD_SUFFIX, want == GPTLINE__LABEL__TASK_KIND__RANKING ? "rm" : "sft",
                     (unsigned long long)shard_no++);
            char *path = gl_path_join(o->out_dir, name);
            shard_writer_opts_t wo = {.kind = want == GPTLINE__LABEL__TASK_KIND__RANKING ? GPTLINE__RECORD_KIND__RM
                                                                                          : GPTLINE__RECORD_KIND__SFT,
                                      .tokenizer_name = tok.name, .tokenizer_hash = tok.hash,
                                      .vocab_size = tok.vocab_size, .eot_id = tok.eot,
                                      .command = "label admin export"};
            w = shard_writer_create(path, &wo, err);
            free(path);
            if (!w) {
                rc = err->code;
                gptline__label__submission__free_unpacked(sub, NULL);
                break;
            }
            shard_writer_add_input(w, s->dir);
        }
        toks.n = 0;
        if (want == GPTLINE__LABEL__TASK_KIND__DEMONSTRATION) {
            if (w) {
                uint32_t start;
                if ((rc = layout(&tok, task->prompt, sub->response, &toks, &start, err))) {
                    gptline__label__submission__free_unpacked(sub, NULL);
                    break;
                }
                Gptline__Turn t0 = GPTLINE__TURN__INIT, t1 = GPTLINE__TURN__INIT, *turns[2] = {&t0, &t1};
                t0.role = GPTLINE__ROLE__USER;
                t0.text = task->prompt;
                t1.role = GPTLINE__ROLE__ASSISTANT;
                t1.text = sub->response;
                Gptline__Span span = GPTLINE__SPAN__INIT, *spans[1] = {&span};
                span.start = start;
                span.end = (uint32_t)toks.n;
                Gptline__SftConversation m = GPTLINE__SFT_CONVERSATION__INIT;
                m.id = idbuf;
                m.n_turns = 2;
                m.turns = turns;
                m.n_loss_spans = 1;
                m.loss_spans = spans;
                m.contractor = sub->contractor;
                rc = shard_writer_add(w, toks.ids, toks.n, &m.base, err);
            }
            if (!rc && jf) {
                rc = write_json(jf, json_pack("{s:s,s:s,s:s,s:I,s:I}", "prompt", task->prompt, "response",
                                              sub->response, "contractor", sub->contractor, "task",
                                              (json_int_t)task->id, "submission", (json_int_t)sub->id))
                         ? gl_err_set(err, GL_EIO, "%s: %s", o->jsonl_path, strerror(errno))
                         : 0;
                st->jsonl_lines++;
            }
        } else {
            size_t kc = task->n_candidates;
            if (sub->n_rank != kc) {
                rc = gl_err_set(err, GL_ECORRUPT, "%s: submission %llu ranks %zu of %zu candidates", s->dir,
                                (unsigned long long)sub->id, sub->n_rank, kc);
                gptline__label__submission__free_unpacked(sub, NULL);
                break;
            }
            st->comparisons += strict_pairs(sub->rank, kc);
            if (w) {
                Gptline__Span pspan = GPTLINE__SPAN__INIT, rsp[LABEL_MAX_CANDIDATES], *rspp[LABEL_MAX_CANDIDATES];
                rc = layout(&tok, task->prompt, NULL, &toks, &pspan.end, err);
                for (size_t i = 0; i < kc && !rc; i++) {
                    gptline__span__init(&rsp[i]);
                    rsp[i].start = (uint32_t)toks.n;
                    rc = tok.encode(tok.ctx, task->candidates[i], &toks, err);
                    rsp[i].end = (uint32_t)toks.n; /* no end-of-text: the trainer closes each row */
                    rspp[i] = &rsp[i];
                }
                if (rc) {
                    gptline__label__submission__free_unpacked(sub, NULL);
                    break;
                }
                Gptline__RmRanking m = GPTLINE__RM_RANKING__INIT;
                m.id = idbuf;
                m.prompt = &pspan;
                m.n_responses = kc;
                m.responses = rspp;
                m.n_rank = kc;
                m.rank = sub->rank;
                m.contractor = sub->contractor;
                m.prompt_text = task->prompt;
                m.n_response_texts = kc;
                m.response_texts = task->candidates;
                rc = shard_writer_add(w, toks.ids, toks.n, &m.base, err);
            }
            if (!rc && jf && o->jsonl == LABEL_JSONL_HH) {
                for (size_t i = 0; i < kc && !rc; i++)
                    for (size_t j = 0; j < kc && !rc; j++) {
                        if (sub->rank[i] >= sub->rank[j])
                            continue;
                        char *ch = hh_text(task->prompt, task->candidates[i]);
                        char *rj = hh_text(task->prompt, task->candidates[j]);
                        if (write_json(jf, json_pack("{s:s,s:s}", "chosen", ch, "rejected", rj)))
                            rc = gl_err_set(err, GL_EIO, "%s: %s", o->jsonl_path, strerror(errno));
                        free(ch);
                        free(rj);
                        st->jsonl_lines++;
                    }
            } else if (!rc && jf) {
                /* ranked list: responses best first; ties keep candidate order */
                json_t *resp = json_array(), *ranks = json_array(), *flags = json_array();
                for (uint32_t r = 0; r < kc; r++)
                    for (size_t i = 0; i < kc; i++)
                        if (sub->rank[i] == r) {
                            json_array_append_new(resp, json_string(task->candidates[i]));
                            json_array_append_new(ranks, json_integer(r));
                        }
                for (size_t i = 0; i < sub->n_flags; i++)
                    json_array_append_new(flags, json_integer(sub->flags[i]));
                if (write_json(jf, json_pack("{s:s,s:o,s:o,s:o,s:i,s:s,s:I,s:I}", "prompt", task->prompt,
                                             "responses", resp, "ranks", ranks, "flags", flags, "rating",
                                             (int)sub->rating, "contractor", sub->contractor, "task",
                                             (json_int_t)task->id, "submission", (json_int_t)sub->id)))
                    rc = gl_err_set(err, GL_EIO, "%s: %s", o->jsonl_path, strerror(errno));
                st->jsonl_lines++;
            }
        }
        st->records++;
        st->tokens += w ? toks.n : 0;
        gptline__label__submission__free_unpacked(sub, NULL);
        if (o->progress)
            gl_progress_add(o->progress, 1, 0);
        if (rc)
            break;
        if (w && shard_writer_docs(w) >= per_shard) {
            if ((rc = shard_writer_seal(&w, err)))
                break;
            st->shards++;
        }
    }
    if (task)
        gptline__label__task__free_unpacked(task, NULL);
    if (!rc && mrc && mrc != MDB_NOTFOUND)
        rc = gl_err_set(err, GL_EDB, "%s: %s", s->dir, mdb_strerror(mrc));
    if (!rc && w) {
        if (!(rc = shard_writer_seal(&w, err)))
            st->shards++;
    }
out:
    if (cur)
        mdb_cursor_close(cur);
    if (txn)
        mdb_txn_abort(txn);
    shard_writer_abort(&w);
    if (af.f) {
        if (!rc)
            rc = gl_atomic_commit(&af, err);
        else
            gl_atomic_abort(&af);
    } else if (jf && fflush(jf) && !rc) {
        rc = gl_err_set(err, GL_EIO, "stdout: %s", strerror(errno));
    }
    free(toks.ids);
    if (tok.close)
        tok.close(tok.ctx);
    return rc;
}

/* ---- statistics ---------------------------------------------------------- */

typedef struct {
    char *id;
    uint64_t demos, ranks, skips;
    double *secs;
    size_t nsecs;
    double agree, pairs; /* pairwise agreements / comparable pairs with others */
    double tau_sum;
    uint64_t tau_n;
} cstat_t;

static cstat_t *cstat_get(cstat_t **arr, size_t *n, const char *id)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*arr)[i].id, id))
            return &(*arr)[i];
    *arr = gl_xrealloc(*arr, (*n + 1) * sizeof **arr);
    cstat_t *c = &(*arr)[(*n)++];
    memset(c, 0, sizeof *c);
    c->id = gl_xstrdup(id);
    return c;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Agreement of two rankings of k candidates: over every candidate pair,
 * the two agree when they order it the same way (or both tie it).
 * Kendall's tau-b: (concordant - discordant) / sqrt((n0 - t1)(n0 - t2)). */
static void compare(const uint32_t *a, const uint32_t *b, size_t k, double *agree, double *pairs, double *tau,
                    int *tau_ok)
{
    long conc = 0, disc = 0, ta = 0, tb = 0, n0 = 0;
    *agree = *pairs = 0;
    for (size_t i = 0; i < k; i++)
        for (size_t j = i + 1; j < k; j++) {
            int da = (a[i] > a[j]) - (a[i] < a[j]), db = (b[i] > b[j]) - (b[i] < b[j]);
            n0++;
            *pairs += 1;
            *agree += da == db;
            if (!da)
                ta++;
            if (!db)
                tb++;
            if (da && db)
                *(da == db ? &conc : &disc) += 1;
        }
    double den = sqrt((double)(n0 - ta) * (double)(n0 - tb));
    *tau_ok = den > 0;
    *tau = den > 0 ? (double)(conc - disc) / den : 0;
}

typedef struct {
    char *contractor;
    uint32_t rank[LABEL_MAX_CANDIDATES];
    size_t k;
} rsub_t;

typedef struct {
    uint64_t task, sub;
    rsub_t r;
} tr_t;

static int cmp_tr(const void *a, const void *b)
{
    const tr_t *x = a, *y = b;
    if (x->task != y->task)
        return x->task < y->task ? -1 : 1;
    return x->sub < y->sub ? -1 : x->sub > y->sub;
}

int label_store_stats(label_store_t *s, int64_t now_ms, char **json, gl_err_t *err)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    cstat_t *cs = NULL;
    size_t ncs = 0;
    rsub_t *group = NULL;
    size_t ngroup = 0, gcap = 0;
    uint64_t group_task = 0;
    double all_agree = 0, all_pairs = 0, all_tau = 0;
    uint64_t all_tau_n = 0;
    int rc;
    *json = NULL;
    if ((rc = label_store_read_txn(s, &txn, err)))
        return rc;
    json_t *root = json_object(), *queues = json_object(), *people = json_array();
    /* queues: from the task records */
    uint64_t q[3][4] = {{0}}; /* [kind][pending, leased, done, skipped-by] */
    int mrc = mdb_cursor_open(txn, s->state, &cur);
    MDB_val k, v;
    for (mrc = mrc ? mrc : mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Gptline__Label__Task *t = gptline__label__task__unpack(NULL, v.mv_size, v.mv_data);
        if (!t)
            continue;
        int kind = t->kind == GPTLINE__LABEL__TASK_KIND__RANKING ? 2 : 1;
        size_t leased = 0;
        for (size_t i = 0; i < t->n_leases; i++)
            leased += t->leases[i]->expires_unix_ms > now_ms;
        if (t->n_done_by >= t->overlap)
            q[kind][2]++;
        else if (leased)
            q[kind][1]++;
        else
            q[kind][0]++;
        for (size_t i = 0; i < t->n_skipped_by; i++)
            cstat_get(&cs, &ncs, t->skipped_by[i])->skips++;
        gptline__label__task__free_unpacked(t, NULL);
    }
    mdb_cursor_close(cur);
    cur = NULL;
    for (int kind = 1; kind <= 2; kind++)
        json_object_set_new(queues, kind == 1 ? "demonstration" : "ranking",
                            json_pack("{s:I,s:I,s:I}", "pending", (json_int_t)q[kind][0], "leased",
                                      (json_int_t)q[kind][1], "done", (json_int_t)q[kind][2]));
    /* submissions, grouped by task for agreement: submissions of one task
     * are not adjacent in id order, so collect (task, sub) first */
    tr_t *trs = NULL;
    size_t ntr = 0, trcap = 0;
    mrc = mdb_cursor_open(txn, s->subs, &cur);
    for (mrc = mrc ? mrc : mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Gptline__Label__Submission *sub = gptline__label__submission__unpack(NULL, v.mv_size, v.mv_data);
        if (!sub)
            continue;
        cstat_t *c = cstat_get(&cs, &ncs, sub->contractor);
        if (sub->kind == GPTLINE__LABEL__TASK_KIND__RANKING) {
            c->ranks++;
            if (sub->n_rank <= LABEL_MAX_CANDIDATES) {
                if (ntr == trcap) {
                    trcap = trcap ? trcap * 2 : 1024;
                    trs = gl_xrealloc(trs, trcap * sizeof *trs);
                }
                trs[ntr].task = sub->task_id;
                trs[ntr].sub = sub->id;
                trs[ntr].r.contractor = c->id;
                trs[ntr].r.k = sub->n_rank;
                memcpy(trs[ntr].r.rank, sub->rank, sub->n_rank * sizeof *sub->rank);
                ntr++;
            }
        } else {
            c->demos++;
        }
        double secs = sub->seconds_spent ? (double)sub->seconds_spent
                                         : (double)(sub->submitted_unix_ms - sub->leased_unix_ms) / 1000.0;
        c->secs = gl_xrealloc(c->secs, (c->nsecs + 1) * sizeof *c->secs);
        c->secs[c->nsecs++] = secs;
        gptline__label__submission__free_unpacked(sub, NULL);
    }
    mdb_cursor_close(cur);
    cur = NULL;
    if (ntr > 1)
        qsort(trs, ntr, sizeof *trs, cmp_tr);
    for (size_t i = 0; i <= ntr; i++) {
        if (i == ntr || (ngroup && trs[i].task != group_task)) {
            for (size_t a = 0; a < ngroup; a++)
                for (size_t b = a + 1; b < ngroup; b++) {
                    if (group[a].k != group[b].k || !strcmp(group[a].contractor, group[b].contractor))
                        continue;
                    double ag, pr, tau;
                    int tok;
                    compare(group[a].rank, group[b].rank, group[a].k, &ag, &pr, &tau, &tok);
                    cstat_t *ca = cstat_get(&cs, &ncs, group[a].contractor);
                    cstat_t *cb = cstat_get(&cs, &ncs, group[b].contractor);
                    ca->agree += ag, ca->pairs += pr, cb->agree += ag, cb->pairs += pr;
                    all_agree += ag, all_pairs += pr;
                    if (tok) {
                        ca->tau_sum += tau, ca->tau_n++, cb->tau_sum += tau, cb->tau_n++;
                        all_tau += tau, all_tau_n++;
                    }
                }
            ngroup = 0;
        }
        if (i == ntr)
            break;
        if (ngroup == gcap) {
            gcap = gcap ? gcap * 2 : 16;
            group = gl_xrealloc(group, gcap * sizeof *group);
        }
        group_task = trs[i].task;
        group[ngroup++] = trs[i].r;
    }
    for (size_t i = 0; i < ncs; i++) {
        cstat_t *c = &cs[i];
        double med = 0;
        if (c->nsecs) {
            qsort(c->secs, c->nsecs, sizeof *c->secs, cmp_dbl); /* nsecs >= 1 */
            med = c->nsecs % 2 ? c->secs[c->nsecs / 2] : (c->secs[c->nsecs / 2 - 1] + c->secs[c->nsecs / 2]) / 2;
        }
        json_t *o = json_pack("{s:s,s:I,s:I,s:I,s:f}", "contractor", c->id, "demonstrations", (json_int_t)c->demos,
                              "rankings", (json_int_t)c->ranks, "skips", (json_int_t)c->skips,
                              "median_seconds_per_task", med);
        json_object_set_new(o, "pairwise_agreement", c->pairs ? json_real(c->agree / c->pairs) : json_null());
        json_object_set_new(o, "kendall_tau", c->tau_n ? json_real(c->tau_sum / (double)c->tau_n) : json_null());
        json_array_append_new(people, o);
    }
    json_object_set_new(root, "queues", queues);
    json_object_set_new(root, "contractors", people);
    json_object_set_new(root, "pairwise_agreement", all_pairs ? json_real(all_agree / all_pairs) : json_null());
    json_object_set_new(root, "kendall_tau", all_tau_n ? json_real(all_tau / (double)all_tau_n) : json_null());
    json_object_set_new(root, "ranking_submissions", json_integer((json_int_t)ntr));
    /* stored replies (answers to retries) and how many the retention pruned */
    MDB_stat ist;
    uint64_t pruned = 0;
    MDB_val pk = {14, "replies_pruned"}, pv;
    if (mdb_get(txn, s->meta, &pk, &pv) == 0 && pv.mv_size == 8)
        memcpy(&pruned, pv.mv_data, 8);
    json_object_set_new(root, "replies",
                        json_pack("{s:I,s:I}", "stored",
                                  (json_int_t)(mdb_stat(txn, s->idem, &ist) ? 0 : ist.ms_entries), "pruned",
                                  (json_int_t)pruned));
    *json = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    for (size_t i = 0; i < ncs; i++) {
        free(cs[i].id);
        free(cs[i].secs);
    }
    free(cs);
    free(trs);
    free(group);
    mdb_txn_abort(txn);
    return GL_OK;
}
