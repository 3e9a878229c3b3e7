/* worker.c — one ingest rank: its inputs in, one sealed shard per input out.
 *
 * Input k of the list belongs to rank k mod world. For each of its inputs
 * not yet marked done the worker reads documents, filters them, drops
 * exact repeats within the input, fingerprints what it keeps, tokenizes in
 * batches and appends to the shard "in-K.mdb". Then, in this order: the
 * signatures file sigs/in-K.sig is written (atomically), the shard is
 * sealed (the shard library writes it under a temporary name and renames
 * it), and the done-marker done/in-K.json (the input's stats) is written
 * atomically. A worker killed at any point leaves either nothing for input
 * K, or an unsealed temporary (removed by the next writer), or a sealed
 * shard without a marker (removed and redone on relaunch): an input is
 * either wholly in the dataset with its marker or redone, so no document is
 * lost or duplicated, and only the input that was in progress is redone.
 *
 * Everything is per input, so what a document becomes does not depend on
 * which rank read it or how often it was restarted; the cross-input,
 * cross-rank dedup is the separate `ingest dedup` pass over the
 * signatures. Memory: one record (capped), one batch of documents, and the
 * within-input hash set (8 bytes per kept document).
 */
#include "ingest/internal.h"
#include "shards/shards.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define BATCH_DOCS 128
#define BATCH_BYTES (8u << 20)
#define LOG_PROBLEMS_PER_INPUT 20

typedef struct {
    char *text;
    size_t len;
    Gptline__DocMeta meta;
    char *strs[8];
} pending_t;

typedef struct {
    const ingest_worker_opts_t *o;
    ingest_tok_t *tok;
    size_t index;
    const char *input;
    shard_writer_t *w;
    char *shard_path;
    ingest_filter_opts_t fo[8];
    ingest_buf_t filtered;
    /* within-input exact dedup */
    uint64_t *seen;
    size_t seen_cap, seen_n;
    /* signatures */
    ingest_buf_t sigs;
    uint64_t seq, sig_count;
    /* batch */
    pending_t batch[BATCH_DOCS];
    size_t nbatch, batch_bytes;
    uint32_t *ids;
    size_t ids_cap;
    ingest_stats_t st;   /* this input */
    unsigned logged;
    uint64_t progress_bytes; /* bytes_in already reported */
    gl_err_t werr;
    /* metrics: the run's totals so far are *total (finished inputs) + st */
    gl_metrics_t metrics;
    const ingest_stats_t *total;
    uint64_t assigned;
    int metrics_warned;
} job_t;

static void wlog(const ingest_worker_opts_t *o, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void wlog(const ingest_worker_opts_t *o, int level, const char *fmt, ...)
{
    if (!o->log)
        return;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->log(o->log_ctx, level, msg);
}

static int seen_add(job_t *j, uint64_t h)
{
    h |= 1;
    if (j->seen_n * 2 >= j->seen_cap) {
        size_t cap = j->seen_cap ? j->seen_cap * 2 : 1024;
        uint64_t *t = gl_xcalloc(cap, sizeof *t);
        for (size_t i = 0; i < j->seen_cap; i++)
            if (j->seen[i]) {
                size_t k = (size_t)j->seen[i] & (cap - 1);
                while (t[k])
                    k = (k + 1) & (cap - 1);
                t[k] = j->seen[i];
            }
        free(j->seen);
        j->seen = t;
        j->seen_cap = cap;
    }
    size_t k = (size_t)h & (j->seen_cap - 1);
    while (j->seen[k]) {
        if (j->seen[k] == h)
            return 0;
        k = (k + 1) & (j->seen_cap - 1);
    }
    j->seen[k] = h;
    j->seen_n++;
    return 1;
}

static void on_count(void *ctx, ingest_counter_t c, uint64_t offset, const char *msg)
{
    job_t *j = ctx;
    (void)offset;
    j->st.counters[c]++;
    if (msg && ingest_counter_is_error(c)) {
        if (j->logged < LOG_PROBLEMS_PER_INPUT)
            wlog(j->o, GL_LOG_WARN, "%s: %s", ingest_counter_name(c), msg);
        else if (j->logged == LOG_PROBLEMS_PER_INPUT)
            wlog(j->o, GL_LOG_WARN, "%s: more problems in this input; see its stats", j->input);
        j->logged++;
    }
}

static char *dupn(const char *s) { return s ? gl_xstrdup(s) : NULL; }

static int open_shard(job_t *j, gl_err_t *err)
{
    shard_writer_opts_t so = {
        .kind = GPTLINE__RECORD_KIND__DOCUMENTS,
        .tokenizer_name = ingest_tok_name(j->tok),
        .tokenizer_hash = ingest_tok_hash(j->tok),
        .vocab_size = ingest_tok_vocab(j->tok),
        .eot_id = ingest_tok_eot(j->tok),
        .command = "ingest",
        .rank = j->o->rank,
        .world = j->o->world,
    };
    j->w = shard_writer_create(j->shard_path, &so, err);
    if (!j->w)
        return err->code;
    shard_writer_add_input(j->w, j->input);
    return GL_OK;
}

static int flush(job_t *j, gl_err_t *err)
{
    if (!j->nbatch)
        return GL_OK;
    int rc = GL_OK;
    const char *texts[BATCH_DOCS];
    size_t lens[BATCH_DOCS], offs[BATCH_DOCS + 1];
    for (size_t i = 0; i < j->nbatch; i++) {
        texts[i] = j->batch[i].text;
        lens[i] = j->batch[i].len;
    }
    rc = ingest_tok_encode_batch(j->tok, texts, lens, j->nbatch, &j->ids, &j->ids_cap, offs, err);
    if (rc)
        goto out;
    if (!j->w && (rc = open_shard(j, err)))
        goto out;
    for (size_t i = 0; i < j->nbatch; i++) {
        size_t n = offs[i + 1] - offs[i];
        rc = shard_writer_add(j->w, j->ids + offs[i], n, &j->batch[i].meta.base, err);
        if (rc)
            goto out;
        j->st.tokens += n;
    }
out:
    for (size_t i = 0; i < j->nbatch; i++) {
        free(j->batch[i].text);
        for (int k = 0; k < 8; k++)
            free(j->batch[i].strs[k]);
    }
    j->nbatch = 0;
    j->batch_bytes = 0;
    return rc;
}

/* The rank's counters as a Prometheus textfile: finished inputs plus the
 * one in progress. */
static int write_metrics(job_t *j, int finished, gl_err_t *err)
{
    const ingest_stats_t *t = j->total, *c = finished ? NULL : &j->st;
    gl_metrics_t *m = &j->metrics;
#define SUM(f) ((double)(t->f + (c ? c->f : 0)))
    gl_metrics_begin(m);
    gl_metrics_add(m, "gptline_ingest_inputs_assigned", GL_METRIC_GAUGE, "Inputs of the list that belong to this rank.",
                   NULL, NULL, (double)j->assigned);
    gl_metrics_add(m, "gptline_ingest_inputs_total", GL_METRIC_COUNTER,
                   "Inputs finished by this run: done (sealed and marked), skipped (marked done before), failed (unreadable).",
                   "state", "done", (double)t->inputs_done);
    gl_metrics_add(m, "gptline_ingest_inputs_total", GL_METRIC_COUNTER, "", "state", "skipped",
                   (double)t->inputs_skipped);
    gl_metrics_add(m, "gptline_ingest_inputs_total", GL_METRIC_COUNTER, "", "state", "failed",
                   (double)t->inputs_failed);
    gl_metrics_add(m, "gptline_ingest_documents_read_total", GL_METRIC_COUNTER, "Documents the readers produced.",
                   NULL, NULL, SUM(docs_in));
    gl_metrics_add(m, "gptline_ingest_documents_kept_total", GL_METRIC_COUNTER,
                   "Documents that passed the filters and were written.", NULL, NULL, SUM(docs_kept));
    gl_metrics_add(m, "gptline_ingest_read_bytes_total", GL_METRIC_COUNTER, "Uncompressed input bytes read.", NULL,
                   NULL, SUM(bytes_in));
    gl_metrics_add(m, "gptline_ingest_kept_bytes_total", GL_METRIC_COUNTER, "Text bytes of the kept documents.", NULL,
                   NULL, SUM(bytes_kept));
    gl_metrics_add(m, "gptline_ingest_tokens_total", GL_METRIC_COUNTER, "Tokens written to shards.", NULL, NULL,
                   SUM(tokens));
    for (int i = 0; i < INGEST_NCOUNTERS; i++)
        gl_metrics_add(m, "gptline_ingest_events_total", GL_METRIC_COUNTER,
                       i ? "" : "Skips, filter drops, PII replacements and bad-input events, by counter name.",
                       "event", ingest_counter_name((ingest_counter_t)i), SUM(counters[i]));
    gl_metrics_add(m, "gptline_ingest_finished", GL_METRIC_GAUGE, "1 once this rank has gone through all its inputs.",
                   NULL, NULL, finished);
#undef SUM
    return gl_metrics_write(m, err);
}

static void metrics_tick(job_t *j)
{
    gl_err_t e;
    if (j->o->metrics_file && gl_metrics_due(&j->metrics) && write_metrics(j, 0, &e) && !j->metrics_warned++)
        wlog(j->o, GL_LOG_WARN, "%s", e.msg);
}

static int on_doc(void *ctx, const ingest_doc_t *d, gl_err_t *err)
{
    job_t *j = ctx;
    const ingest_worker_opts_t *o = j->o;
    j->st.docs_in++;
    metrics_tick(j);
    if (o->progress) {
        o->progress(o->log_ctx, 1, j->st.bytes_in - j->progress_bytes);
        j->progress_bytes = j->st.bytes_in;
    }
    if (o->throttle_ms)
        usleep(o->throttle_ms * 1000u);
    const ingest_filter_opts_t *fo = &j->fo[(unsigned)d->source & 7];
    uint64_t pii[2] = {0, 0};
    int r = ingest_filter(fo, d->text, d->len, &j->filtered, pii);
    j->st.counters[INGEST_PII_EMAIL] += pii[0];
    j->st.counters[INGEST_PII_IP] += pii[1];
    if (r >= 0) {
        j->st.counters[r]++;
        return GL_OK;
    }
    const char *text = j->filtered.p;
    size_t len = j->filtered.len;
    /* Language identification costs more than every other filter together
     * (CLD2 reads ~36 MB/s), so it runs only when asked: to filter (--lang)
     * or to record (--detect-lang). Code is never identified: its language
     * is the programming language. */
    const char *lang = d->language;
    int want_lang = (o->languages && *o->languages) || o->detect_lang;
    if (!lang && want_lang && d->source != GPTLINE__SOURCE_KIND__CODE) {
        int rel;
        lang = ingest_lang_detect(text, len, &rel);
    }
    if (o->languages && *o->languages && d->source != GPTLINE__SOURCE_KIND__CODE) {
        int keep = 0;
        if (lang) {
            size_t k = strlen(lang);
            for (const char *p = o->languages; *p;) {
                const char *e = strchr(p, ',');
                size_t m = e ? (size_t)(e - p) : strlen(p);
                if (m == k && !strncmp(p, lang, k))
                    keep = 1;
                p += m + (e ? 1 : 0);
            }
        }
        if (!keep) {
            j->st.counters[INGEST_DROP_LANGUAGE]++;
            return GL_OK;
        }
    }
    uint64_t h = ingest_text_hash(text, len);
    if (fo->dedup_exact && !seen_add(j, h)) {
        j->st.counters[INGEST_DROP_DUP_EXACT]++;
        return GL_OK;
    }
    /* signature record: seq, exact hash, minhash */
    uint32_t sig[INGEST_MH_PERM];
    ingest_minhash(text, len, sig);
    uint64_t seq = j->seq++;
    ibuf_put(&j->sigs, &seq, 8);
    ibuf_put(&j->sigs, &h, 8);
    ibuf_put(&j->sigs, sig, sizeof sig);
    j->sig_count++;
    pending_t *p = &j->batch[j->nbatch++];
    memset(p, 0, sizeof *p);
    p->text = gl_xmalloc(len + 1);
    memcpy(p->text, text, len);
    p->text[len] = 0;
    p->len = len;
    Gptline__DocMeta m = GPTLINE__DOC_META__INIT;
    m.source = d->source;
    m.url = p->strs[0] = dupn(d->url);
    m.title = p->strs[1] = dupn(d->title);
    m.path = p->strs[2] = dupn(d->path);
    m.date = p->strs[3] = dupn(d->date);
    m.record_id = p->strs[4] = dupn(d->record_id);
    m.license = p->strs[5] = dupn(d->license);
    m.language = p->strs[6] = dupn(lang);
    m.input = p->strs[7] = dupn(j->input);
    if (!m.url) m.url = (char *)"";
    if (!m.title) m.title = (char *)"";
    if (!m.path) m.path = (char *)"";
    if (!m.date) m.date = (char *)"";
    if (!m.record_id) m.record_id = (char *)"";
    if (!m.license) m.license = (char *)"";
    if (!m.language) m.language = (char *)"";
    m.byte_length = len;
    m.input_index = j->index;
    m.doc_seq = seq;
    m.text_hash = h;
    p->meta = m;
    j->st.docs_kept++;
    j->st.bytes_kept += len;
    j->batch_bytes += len;
    if (j->nbatch == BATCH_DOCS || j->batch_bytes >= BATCH_BYTES) {
        int rc = flush(j, err);
        if (rc)
            j->werr.code = (gl_code_t)rc;
        return rc;
    }
    return GL_OK;
}

/* ---- files of the output folder ---- */

static char *name_in(const char *dir, const char *sub, size_t k, const char *suffix)
{
    char name[128];
    snprintf(name, sizeof name, "%s%sin-%06zu%s", sub ? sub : "", sub ? "/" : "", k, suffix);
    return gl_path_join(dir, name);
}

#define SIG_MAGIC "GLMHSIG1"
#define SIG_VERSION 1u

static int write_sigs(job_t *j, gl_err_t *err)
{
    char *path = name_in(j->o->out_dir, "sigs", j->index, ".sig");
    ingest_buf_t b = {0};
    ibuf_put(&b, SIG_MAGIC, 8);
    uint32_t v = SIG_VERSION, perm = INGEST_MH_PERM;
    uint64_t idx = j->index;
    ibuf_put(&b, &v, 4);
    ibuf_put(&b, &perm, 4);
    ibuf_put(&b, &idx, 8);
    ibuf_put(&b, &j->sig_count, 8);
    ibuf_put(&b, j->sigs.p ? j->sigs.p : "", j->sigs.len);
    uint64_t h = XXH3_64bits(b.p, b.len);
    ibuf_put(&b, &h, 8);
    int rc = gl_write_file_atomic(path, b.p, b.len, err);
    ingest_buf_free(&b);
    free(path);
    return rc;
}

static json_t *stats_json(const ingest_stats_t *s)
{
    json_t *o = json_object(), *c = json_object();
    /* records: every item the readers looked at (documents and skips) */
    uint64_t records = s->docs_in;
    for (int i = 0; i < INGEST_NCOUNTERS; i++)
        if (!strncmp(ingest_counter_name((ingest_counter_t)i), "skip.", 5))
            records += s->counters[i];
    json_object_set_new(o, "records", json_integer((json_int_t)records));
    json_object_set_new(o, "docs_in", json_integer((json_int_t)s->docs_in));
    json_object_set_new(o, "docs_kept", json_integer((json_int_t)s->docs_kept));
    json_object_set_new(o, "bytes_in", json_integer((json_int_t)s->bytes_in));
    json_object_set_new(o, "bytes_kept", json_integer((json_int_t)s->bytes_kept));
    json_object_set_new(o, "tokens", json_integer((json_int_t)s->tokens));
    for (int i = 0; i < INGEST_NCOUNTERS; i++)
        if (s->counters[i])
            json_object_set_new(c, ingest_counter_name((ingest_counter_t)i), json_integer((json_int_t)s->counters[i]));
    json_object_set_new(o, "counters", c);
    return o;
}

static int write_json(const char *path, json_t *o, gl_err_t *err)
{
    char *s = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
    int rc = gl_write_file_atomic(path, s, strlen(s), err);
    free(s);
    return rc;
}

static void stats_add(ingest_stats_t *a, const ingest_stats_t *b)
{
    a->docs_in += b->docs_in;
    a->docs_kept += b->docs_kept;
    a->bytes_in += b->bytes_in;
    a->bytes_kept += b->bytes_kept;
    a->tokens += b->tokens;
    for (int i = 0; i < INGEST_NCOUNTERS; i++)
        a->counters[i] += b->counters[i];
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Processes input k. Returns GL_OK, or an error of the output side. */
static int run_input(job_t *j, gl_err_t *err)
{
    const ingest_worker_opts_t *o = j->o;
    int rc = GL_OK;
    double t0 = gl_now();
    char *done = name_in(o->out_dir, "done", j->index, ".json");
    j->shard_path = name_in(o->out_dir, NULL, j->index, SHARD_SUFFIX);
    /* a sealed shard without its marker: the worker died before marking it */
    if (file_exists(j->shard_path)) {
        wlog(o, GL_LOG_INFO, "%s: removing %s sealed by a run that did not mark it done", j->input, j->shard_path);
        if (unlink(j->shard_path)) {
            rc = gl_err_set(err, GL_EIO, "%s: %s", j->shard_path, strerror(errno));
            goto out;
        }
    }
    ingest_sink_t sink = {.doc = on_doc, .count = on_count, .ctx = j};
    gl_err_t rerr = {0};
    int r = ingest_read_file(j->input, INGEST_KIND_AUTO, &o->read, &sink, &j->st.bytes_in, &rerr);
    if (r && j->werr.code == GL_OK && (r == GL_ENOTFOUND || r == GL_EIO || r == GL_EINVAL)) {
        /* the input itself is unreadable: not marked done, so a relaunch retries */
        j->st.counters[INGEST_ERR_OPEN]++;
        wlog(o, GL_LOG_ERROR, "%s", rerr.msg);
        shard_writer_abort(&j->w);
        rc = -1;
        goto out;
    }
    if (r) {
        *err = rerr;
        rc = r;
        goto out;
    }
    if ((rc = flush(j, err)))
        goto out;
    if ((rc = write_sigs(j, err)))
        goto out;
    if (j->w && (rc = shard_writer_seal(&j->w, err)))
        goto out;
    json_t *js = stats_json(&j->st);
    json_object_set_new(js, "input", json_string(j->input));
    json_object_set_new(js, "index", json_integer((json_int_t)j->index));
    json_object_set_new(js, "rank", json_integer(o->rank));
    json_object_set_new(js, "world", json_integer(o->world));
    json_object_set_new(js, "kind", json_string(ingest_kind_name(ingest_kind_of(j->input))));
    json_object_set_new(js, "seconds", json_real(gl_now() - t0));
    rc = write_json(done, js, err);
    json_decref(js);
out:
    shard_writer_abort(&j->w);
    free(done);
    free(j->shard_path);
    j->shard_path = NULL;
    return rc;
}

int ingest_worker_run(const ingest_worker_opts_t *o, char *const *inputs, size_t n_inputs, ingest_stats_t *stats,
                      gl_err_t *err)
{
    memset(stats, 0, sizeof *stats);
    if (!o->world || o->rank >= o->world)
        return gl_err_set(err, GL_EINVAL, "rank %u of world %u", o->rank, o->world);
    int rc = GL_OK;
    job_t *j = gl_xcalloc(1, sizeof *j);
    j->o = o;
    j->tok = ingest_tok_open(o->tokenizer, err);
    if (!j->tok) {
        rc = err->code;
        goto out;
    }
    for (unsigned s = 0; s < 8; s++) {
        ingest_filter_opts_t *f = &j->fo[s];
        ingest_filter_opts_default(f, (Gptline__SourceKind)s);
        if (o->filters_off)
            memset(f, 0, sizeof *f);
        if (o->no_gopher)
            f->gopher_quality = f->gopher_repetition = 0;
        if (o->no_c4)
            f->c4 = 0;
        if (o->no_pii)
            f->pii = 0;
        if (o->no_dedup)
            f->dedup_exact = 0;
        if (o->no_length)
            f->length = 0;
        if (o->min_chars)
            f->min_chars = o->min_chars;
        if (o->min_words)
            f->min_words = o->min_words;
        f->languages = NULL; /* the worker applies --lang itself, with the language it records */
    }
    const char *subs[] = {"", "sigs", "done", "stats"};
    for (int i = 0; i < 4; i++) {
        char *d = gl_path_join(o->out_dir, subs[i]);
        rc = gl_mkdir_p(d, err);
        free(d);
        if (rc)
            goto out;
    }
    j->total = stats;
    j->assigned = n_inputs > o->rank ? (n_inputs - o->rank + o->world - 1) / o->world : 0;
    if (o->metrics_file) {
        char rk[16], wd[16];
        snprintf(rk, sizeof rk, "%u", o->rank);
        snprintf(wd, sizeof wd, "%u", o->world);
        const char *labels[] = {"rank", rk, "world", wd, NULL};
        if ((rc = gl_metrics_init(&j->metrics, o->metrics_file, o->metrics_interval, labels, err)) ||
            (rc = write_metrics(j, 0, err)))
            goto out;
    }
    uint64_t bad = 0;
    for (size_t k = o->rank; k < n_inputs; k += o->world) {
        char *done = name_in(o->out_dir, "done", k, ".json");
        int is_done = file_exists(done);
        free(done);
        if (is_done) {
            stats->inputs_skipped++;
            continue;
        }
        memset(&j->st, 0, sizeof j->st);
        ibuf_clear(&j->sigs);
        j->seen_n = 0;
        if (j->seen)
            memset(j->seen, 0, j->seen_cap * sizeof *j->seen);
        j->seq = j->sig_count = 0;
        j->logged = 0;
        j->progress_bytes = 0;
        j->index = k;
        j->input = inputs[k];
        gl_err_clear(&j->werr);
        rc = run_input(j, err);
        stats_add(stats, &j->st);
        for (int c = 0; c < INGEST_NCOUNTERS; c++)
            if (ingest_counter_is_error((ingest_counter_t)c))
                bad += j->st.counters[c];
        if (rc == -1) {
            stats->inputs_failed++;
            rc = GL_OK;
            continue;
        }
        if (rc)
            goto out;
        stats->inputs_done++;
        wlog(o, GL_LOG_INFO, "%s: %llu of %llu documents kept, %llu tokens", inputs[k],
             (unsigned long long)j->st.docs_kept, (unsigned long long)j->st.docs_in,
             (unsigned long long)j->st.tokens);
        memset(&j->st, 0, sizeof j->st); /* now in *stats */
        if (o->metrics_file)
            j->metrics.last_write = -1; /* due: a rewrite after each input */
        metrics_tick(j);
    }
    {
        json_t *js = stats_json(stats);
        json_object_set_new(js, "rank", json_integer(o->rank));
        json_object_set_new(js, "world", json_integer(o->world));
        json_object_set_new(js, "inputs_done", json_integer((json_int_t)stats->inputs_done));
        json_object_set_new(js, "inputs_skipped", json_integer((json_int_t)stats->inputs_skipped));
        json_object_set_new(js, "inputs_failed", json_integer((json_int_t)stats->inputs_failed));
        char name[64];
        snprintf(name, sizeof name, "stats/rank-%05u.json", o->rank);
        char *p = gl_path_join(o->out_dir, name);
        rc = write_json(p, js, err);
        free(p);
        json_decref(js);
        if (rc)
            goto out;
    }
    if (o->metrics_file && (rc = write_metrics(j, 1, err)))
        goto out;
    if (o->strict && (bad || stats->inputs_failed))
        rc = gl_err_set(err, GL_ECORRUPT, "strict: %llu bad-input events, %llu unreadable inputs",
                        (unsigned long long)bad, (unsigned long long)stats->inputs_failed);
out:
    if (j) {
        gl_metrics_free(&j->metrics);
        for (size_t i = 0; i < j->nbatch; i++) {
            free(j->batch[i].text);
            for (int k = 0; k < 8; k++)
                free(j->batch[i].strs[k]);
        }
        shard_writer_abort(&j->w);
        ingest_tok_free(&j->tok);
        ingest_buf_free(&j->filtered);
        ingest_buf_free(&j->sigs);
        free(j->seen);
        free(j->ids);
        free(j);
    }
    return rc;
}
