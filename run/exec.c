/* exec.c — planning and running a pipeline: the per-stage state records,
 * the make-like staleness rules, local runs as child processes, Slurm
 * submission, and the status table.
 *
 * State lives in WORK/state/STAGE.json, one record per stage, written
 * atomically at each transition: "running" (with the parameters and the
 * inputs' fingerprints, before the command starts), then "done" (with the
 * outputs' fingerprints), "failed" (exit status) or "interrupted". A
 * record still "running" when no `gptline run` holds WORK/state/lock is a
 * run that was killed. Under Slurm, "queued" is written at submission and
 * the job itself writes the rest (`gptline run --job-start/--job-end`).
 *
 * The plan is decided once, before anything runs, in dependency order: a
 * stage runs when it is forced, never ran, did not finish, its parameters
 * or inputs differ from its record, its outputs are missing or altered, or
 * a stage it depends on runs. A stage that did not finish with unchanged
 * parameters and inputs resumes (training with --resume from OUT/latest;
 * ingest relaunched, skipping finished inputs); otherwise it runs fresh,
 * with its old output removed first.
 */
#include "run/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STATE_FORMAT 1

/* ACT_WAIT: the stage's Slurm jobs are still queued or running; they are
 * left alone and dependents submitted now wait for them. */
enum { ACT_SKIP = 0, ACT_RUN, ACT_RESUME, ACT_WAIT };
static const char *act_name[] = {"skip", "run", "resume", "wait"};

typedef struct {
    int action;
    char why[480];
    int asked;       /* the record is queued/running with Slurm jobs: sl is what Slurm said */
    run_slurm_t sl;
    char last[32];   /* the stage's last recorded job (what dependents wait for) */
} plan_t;

/* ---- helpers ------------------------------------------------------------- */

static double wall_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static char *state_file(const run_pipeline_t *p, const run_stage_t *s, const char *ext)
{
    size_t n = strlen(p->work) + strlen(s->name) + 32;
    char *f = gl_xmalloc(n);
    snprintf(f, n, "%s/state/%s%s", p->work, s->name, ext);
    return f;
}

static char *log_file(const run_pipeline_t *p, const run_stage_t *s)
{
    size_t n = strlen(p->work) + strlen(s->name) + 16;
    char *f = gl_xmalloc(n);
    snprintf(f, n, "%s/logs/%s.log", p->work, s->name);
    return f;
}

/* The stage's record, or NULL (none yet). A record that does not parse is
 * an error naming it. */
static int state_load(const run_pipeline_t *p, const run_stage_t *s, json_t **out, gl_err_t *err)
{
    char *f = state_file(p, s, ".json");
    json_error_t je;
    *out = NULL;
    int rc = GL_OK;
    if (access(f, F_OK) == 0) {
        *out = json_load_file(f, 0, &je);
        if (!*out || !json_is_object(*out) ||
            json_integer_value(json_object_get(*out, "format")) != STATE_FORMAT) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: not a stage record of this version%s%s (remove it to start over)",
                            f, *out ? "" : ": ", *out ? "" : je.text);
            json_decref(*out);
            *out = NULL;
        }
    }
    free(f);
    return rc;
}

static int state_save(const run_pipeline_t *p, const run_stage_t *s, json_t *st, gl_err_t *err)
{
    char *dir = gl_path_join(p->work, "state");
    int rc = gl_mkdir_p(dir, err);
    free(dir);
    if (rc)
        return rc;
    char *f = state_file(p, s, ".json");
    char *text = json_dumps(st, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    rc = gl_write_file_atomic(f, text, strlen(text), err);
    free(text);
    free(f);
    return rc;
}

/* A short lock on one stage's record, between `gptline run --slurm` and
 * the jobs it submitted (which may start before sbatch returns). Returns
 * the descriptor to close, or -1. */
static int stage_lock(const run_pipeline_t *p, const run_stage_t *s)
{
    char *f = state_file(p, s, ".lock");
    int fd = open(f, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    free(f);
    if (fd >= 0)
        while (flock(fd, LOCK_EX) < 0 && errno == EINTR) {
        }
    return fd;
}

static void stage_unlock(int fd)
{
    if (fd >= 0)
        close(fd);
}

static const char *sget(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *cache_load(const run_pipeline_t *p)
{
    char *f = gl_path_join(p->work, "state/fpcache.json");
    json_t *c = json_load_file(f, 0, NULL);
    free(f);
    if (!json_is_object(c)) {
        json_decref(c);
        c = json_object();
    }
    return c;
}

static void cache_save(const run_pipeline_t *p, json_t *c)
{
    char *f = gl_path_join(p->work, "state/fpcache.json");
    char *text = json_dumps(c, JSON_COMPACT);
    gl_err_t e;
    if (text)
        gl_write_file_atomic(f, text, strlen(text), &e); /* a cache: losing it only costs time */
    free(text);
    free(f);
}

static char *hex(uint64_t v)
{
    char *s = gl_xmalloc(17);
    snprintf(s, 17, "%016llx", (unsigned long long)v);
    return s;
}

/* Fingerprints of the stage's inputs now: [{"key","path","fp"|null}].
 * *missing (may be NULL) gets the index of the first missing one, or -1. */
static int inputs_now(const run_stage_t *s, json_t *cache, json_t **out, int *missing, gl_err_t *err)
{
    *out = json_array();
    if (missing)
        *missing = -1;
    for (size_t i = 0; i < s->nin; i++) {
        uint64_t fp;
        gl_err_t e = {0};
        int rc = run_fingerprint(s->in[i].path, s->in[i].fp, cache, &fp, &e);
        json_t *v;
        if (rc == GL_ENOTFOUND) {
            v = json_null();
            if (missing && *missing < 0)
                *missing = (int)i;
        } else if (rc) {
            *err = e;
            json_decref(*out);
            *out = NULL;
            return rc;
        } else {
            char *h = hex(fp);
            v = json_string(h);
            free(h);
        }
        json_array_append_new(*out, json_pack("{s:s,s:s,s:o}", "key", s->in[i].key, "path", s->in[i].path, "fp", v));
    }
    return GL_OK;
}

/* Fingerprint of the stage's output now, hex, or NULL when missing. */
static int output_now(const run_stage_t *s, json_t *cache, char **fp, gl_err_t *err)
{
    uint64_t v;
    gl_err_t e = {0};
    *fp = NULL;
    int rc = run_fingerprint(s->out, s->out_fp, cache, &v, &e);
    if (rc == GL_ENOTFOUND)
        return GL_OK;
    if (rc) {
        *err = e;
        return rc;
    }
    *fp = hex(v);
    return GL_OK;
}

static const char *recorded_output(json_t *st)
{
    json_t *o = json_array_get(json_object_get(st, "outputs"), 0);
    return sget(o, "fp");
}

/* The Slurm jobs a record names: "jobs" (start, array, end for an ingest
 * array), else "job". Returns how many (at most 3); ids point into st. */
static size_t record_jobs(json_t *st, const char *ids[3])
{
    size_t n = 0;
    json_t *a = json_object_get(st, "jobs"), *v;
    size_t k;
    json_array_foreach(a, k, v) {
        if (json_is_string(v) && n < 3)
            ids[n++] = json_string_value(v);
    }
    if (!n && sget(st, "job") && sget(st, "job")[0])
        ids[n++] = sget(st, "job");
    return n;
}

/* Whether Slurm is to be asked what became of a record's jobs: it is still
 * queued or running (a job that is cancelled, times out or loses its node
 * records nothing), or its job recorded an end by a signal (the job script
 * can record its end between its command's death and its own when Slurm
 * stops a job) and Slurm's word is not in it yet. */
static int slurm_unresolved(json_t *st)
{
    const char *status = sget(st, "status") ? sget(st, "status") : "";
    if (!strcmp(status, "queued") || !strcmp(status, "running"))
        return 1;
    return (!strcmp(status, "failed") || !strcmp(status, "interrupted")) && !sget(st, "slurm") &&
           json_integer_value(json_object_get(st, "exit_status")) >= 128;
}

/* A dead or ended job's stage is recorded failed (the job failed) or
 * interrupted (cancelled, timed out, lost its node, never started). */
static const char *slurm_end_status(const run_slurm_t *sl)
{
    return sl->kind == RUN_SLURM_DEAD && (!strcmp(sl->state, "FAILED") || !strcmp(sl->state, "OUT_OF_MEMORY"))
               ? "failed"
               : "interrupted";
}

/* ---- the plan -------------------------------------------------------------- */

/* First parameter that differs, described into why; 0 when equal. */
static int params_differ(json_t *old, json_t *now, char *why, size_t cap)
{
    const char *k;
    json_t *v;
    json_object_foreach(now, k, v) {
        json_t *o = json_object_get(old, k);
        if (!o) {
            snprintf(why, cap, "parameter %s added (%s)", k, json_string_value(v));
            return 1;
        }
        if (!json_equal(o, v)) {
            snprintf(why, cap, "parameter %s changed: %s -> %s", k, json_string_value(o), json_string_value(v));
            return 1;
        }
    }
    json_object_foreach(old, k, v) {
        if (!json_object_get(now, k)) {
            snprintf(why, cap, "parameter %s removed (was %s)", k, json_string_value(v));
            return 1;
        }
    }
    return 0;
}

static int inputs_differ(json_t *old, json_t *now, char *why, size_t cap)
{
    size_t n = json_array_size(now);
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(now, i), *b = json_array_get(old, i);
        if (!b || !json_equal(json_object_get(a, "fp"), json_object_get(b, "fp")) ||
            strcmp(sget(a, "key"), sget(b, "key") ? sget(b, "key") : "")) {
            snprintf(why, cap, "input %s changed (%s)", sget(a, "key"), sget(a, "path"));
            return 1;
        }
    }
    if (json_array_size(old) != n) {
        snprintf(why, cap, "inputs changed (%zu, were %zu)", n, json_array_size(old));
        return 1;
    }
    return 0;
}

static int is_list_key(const char *k)
{
    return !strcmp(k, "inputs") || !strcmp(k, "inputs-from");
}

/* Ingest grows in place: the same settings and the recorded inputs, in the
 * same order and unchanged, at the head of the new list. */
static int ingest_appended(json_t *st, const run_stage_t *s, json_t *in_now, size_t *added)
{
    json_t *op = json_deep_copy(json_object_get(st, "params")), *np = json_deep_copy(s->params);
    json_object_del(op, "inputs"), json_object_del(op, "inputs-from");
    json_object_del(np, "inputs"), json_object_del(np, "inputs-from");
    int same = json_equal(op, np);
    json_decref(op), json_decref(np);
    if (!same)
        return 0;
    json_t *old = json_object_get(st, "inputs");
    size_t i = 0, j = 0, no = json_array_size(old), nn = json_array_size(in_now);
    /* other inputs (the tokenizer) must be equal; list entries a prefix */
    json_t *ol = json_array(), *nl = json_array(), *oo = json_array(), *no_ = json_array();
    for (i = 0; i < no; i++) {
        json_t *e = json_array_get(old, i);
        json_array_append(is_list_key(sget(e, "key")) ? ol : oo, e);
    }
    for (j = 0; j < nn; j++) {
        json_t *e = json_array_get(in_now, j);
        json_array_append(is_list_key(sget(e, "key")) ? nl : no_, e);
    }
    int ok = json_equal(oo, no_) && json_array_size(ol) < json_array_size(nl);
    for (i = 0; ok && i < json_array_size(ol); i++) {
        json_t *a = json_array_get(ol, i), *b = json_array_get(nl, i);
        ok = !strcmp(sget(a, "path"), sget(b, "path")) && json_equal(json_object_get(a, "fp"), json_object_get(b, "fp"));
    }
    *added = json_array_size(nl) - json_array_size(ol);
    json_decref(ol), json_decref(nl), json_decref(oo), json_decref(no_);
    return ok;
}

/* The output a done stage left is still there: unchanged, or rewritten by
 * an in-place stage (dedup) from exactly that output. */
static int output_intact(const run_pipeline_t *p, size_t i, json_t *st, const char *now)
{
    const char *rec = recorded_output(st);
    if (!now || !rec)
        return 0;
    if (!strcmp(now, rec))
        return 1;
    for (size_t j = 0; j < p->n; j++) {
        const run_stage_t *t = &p->st[j];
        if (!t->inplace || strcmp(t->out, p->st[i].out))
            continue;
        json_t *ts = NULL;
        gl_err_t e;
        if (state_load(p, t, &ts, &e) || !ts)
            continue;
        int ok = 0;
        const char *tout = recorded_output(ts);
        json_t *tin = json_object_get(ts, "inputs");
        for (size_t k = 0; k < json_array_size(tin); k++) {
            json_t *x = json_array_get(tin, k);
            if (!strcmp(sget(x, "path") ? sget(x, "path") : "", t->out) && sget(x, "fp") && !strcmp(sget(x, "fp"), rec))
                ok = 1;
        }
        ok = ok && sget(ts, "status") && !strcmp(sget(ts, "status"), "done") && tout && !strcmp(tout, now);
        json_decref(ts);
        if (ok)
            return 1;
    }
    return 0;
}

static int has_latest(const run_stage_t *s, char *name, size_t cap)
{
    char *lp = gl_path_join(s->out, "latest"), *data = NULL;
    size_t len;
    gl_err_t e;
    int ok = gl_read_file(lp, 256, &data, &len, &e) == GL_OK && len > 0;
    if (ok) {
        while (len && (data[len - 1] == '\n' || data[len - 1] == ' '))
            data[--len] = '\0';
        snprintf(name, cap, "%s", data);
    }
    free(lp);
    free(data);
    return ok;
}

/* How an unfinished stage continues, into pl. */
static void plan_continue(const run_stage_t *s, plan_t *pl, const char *what_)
{
    char ck[128], what[320];
    snprintf(what, sizeof what, "%s", what_); /* may be pl->why */
    if (s->resume == RUN_RESUME_TRAIN && has_latest(s, ck, sizeof ck)) {
        pl->action = ACT_RESUME;
        snprintf(pl->why, sizeof pl->why, "%s; resumes from %s", what, ck);
    } else if (s->resume == RUN_RESUME_RELAUNCH) {
        pl->action = ACT_RESUME;
        snprintf(pl->why, sizeof pl->why, "%s; relaunched, finished inputs are skipped", what);
    } else {
        pl->action = ACT_RUN;
        snprintf(pl->why, sizeof pl->why, "%s; runs again%s", what,
                 s->resume == RUN_RESUME_TRAIN ? " (no checkpoint yet)" : "");
    }
}

static int lock_held_elsewhere(const run_pipeline_t *p)
{
    char *f = gl_path_join(p->work, "state/lock");
    int fd = open(f, O_RDONLY | O_CLOEXEC);
    free(f);
    if (fd < 0)
        return 0;
    int held = flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

static int plan_stage(const run_pipeline_t *p, size_t i, const run_opts_t *o, const plan_t *plans, json_t *cache,
                      int locked, plan_t *pl, gl_err_t *err)
{
    const run_stage_t *s = &p->st[i];
    memset(pl, 0, sizeof *pl);
    pl->action = ACT_RUN;
    json_t *st = NULL, *in = NULL;
    int missing;
    int rc = inputs_now(s, cache, &in, &missing, err);
    if (rc)
        goto out;
    for (size_t k = 0; k < s->nin; k++)
        if (s->in[k].from < 0 && json_is_null(json_object_get(json_array_get(in, k), "fp"))) {
            rc = gl_err_set(err, GL_ENOTFOUND, "[%s]: missing input: %s = %s", s->name, s->in[k].key, s->in[k].path);
            goto out;
        }
    if ((rc = state_load(p, s, &st, err)))
        goto out;
    const char *status = st && sget(st, "status") ? sget(st, "status") : "";
    /* a record left queued or running by Slurm jobs, or ended by a signal: ask Slurm */
    const char *ids[3];
    size_t nj = slurm_unresolved(st) ? record_jobs(st, ids) : 0;
    if (nj) {
        snprintf(pl->last, sizeof pl->last, "%s", ids[nj - 1]);
        run_slurm_query(ids, nj, &pl->sl);
        pl->asked = 1;
        if (pl->sl.kind != RUN_SLURM_LIVE && pl->sl.kind != RUN_SLURM_NOASK) {
            /* ended: what the job recorded before it ended is on disk now */
            json_decref(st);
            if ((rc = state_load(p, s, &st, err)))
                goto out;
            status = st && sget(st, "status") ? sget(st, "status") : "";
            pl->asked = slurm_unresolved(st);
        }
    }
    int live = pl->asked && pl->sl.kind == RUN_SLURM_LIVE;
    char what[320] = "";
    if (pl->asked)
        run_slurm_describe(&pl->sl, what, sizeof what);
    for (size_t f = 0; o && f < o->nforce; f++)
        if (!strcmp(o->force[f], s->name)) {
            snprintf(pl->why, sizeof pl->why, "forced (--force)");
            goto out;
        }
    for (size_t d = 0; d < s->ndeps; d++)
        if (plans[s->deps[d]].action == ACT_RUN || plans[s->deps[d]].action == ACT_RESUME) {
            snprintf(pl->why, sizeof pl->why, "upstream stage %s runs", p->st[s->deps[d]].name);
            goto out;
        }
    if (live) {
        pl->action = ACT_WAIT;
        snprintf(pl->why, sizeof pl->why, "%s; left alone (--force %s cancels and resubmits it)", what, s->name);
        goto out;
    }
    for (size_t d = 0; d < s->ndeps; d++)
        if (plans[s->deps[d]].action == ACT_WAIT) {
            snprintf(pl->why, sizeof pl->why, "upstream stage %s is still in Slurm (job %s)", p->st[s->deps[d]].name,
                     plans[s->deps[d]].last);
            goto out;
        }
    if (!st) {
        snprintf(pl->why, sizeof pl->why, "never run");
        goto out;
    }
    if (pl->asked && pl->sl.kind == RUN_SLURM_NOASK) {
        size_t l = strlen(what);
        snprintf(what + l, sizeof what - l, ": cancel it first if it still runs");
    }
    if (!strcmp(status, "queued")) {
        /* its job never started: nothing to resume */
        snprintf(pl->why, sizeof pl->why, "%s; never started, submitted again", what[0] ? what : "queued");
        goto out;
    }
    if (s->inplace) {
        /* its input is its output: as it left it counts as unchanged */
        const char *rec_out = recorded_output(st);
        json_t *old_in = json_object_get(st, "inputs");
        for (size_t k = 0; k < json_array_size(in); k++) {
            json_t *e = json_array_get(in, k), *o = json_array_get(old_in, k);
            if (rec_out && o && !strcmp(sget(e, "path"), s->out) && sget(e, "fp") && !strcmp(sget(e, "fp"), rec_out))
                json_object_set(e, "fp", json_object_get(o, "fp"));
        }
    }
    char why[320];
    size_t added = 0;
    if (params_differ(json_object_get(st, "params"), s->params, why, sizeof why) ||
        inputs_differ(json_object_get(st, "inputs"), in, why, sizeof why)) {
        if (!strcmp(s->kind_name, "ingest") && !strcmp(status, "done") && ingest_appended(st, s, in, &added)) {
            pl->action = ACT_RESUME;
            snprintf(pl->why, sizeof pl->why, "%zu input%s added; relaunched, finished inputs are skipped", added,
                     added == 1 ? "" : "s");
        } else {
            snprintf(pl->why, sizeof pl->why, "%s", why);
        }
        goto out;
    }
    if (!strcmp(status, "running")) {
        if (!pl->asked && locked < 0 && lock_held_elsewhere(p)) {
            snprintf(pl->why, sizeof pl->why, "running now");
            goto out;
        }
        plan_continue(s, pl, what[0] ? what : "interrupted");
        goto out;
    }
    if (!strcmp(status, "interrupted") || !strcmp(status, "failed")) {
        json_int_t code = json_integer_value(json_object_get(st, "exit_status"));
        const char *sl = sget(st, "slurm");
        if (pl->asked && pl->sl.kind != RUN_SLURM_NOASK)
            ; /* what Slurm says now */
        else if (!strcmp(status, "failed") && sl)
            snprintf(what, sizeof what, "failed last time (%s)", sl);
        else if (!strcmp(status, "failed"))
            snprintf(what, sizeof what, "failed last time (exit status %lld)", (long long)code);
        else
            snprintf(what, sizeof what, "interrupted%s%s%s", sl ? " (" : "", sl ? sl : "", sl ? ")" : "");
        plan_continue(s, pl, what);
        goto out;
    }
    char *now;
    rc = output_now(s, cache, &now, err);
    if (rc)
        goto out;
    if (!now)
        snprintf(pl->why, sizeof pl->why, "output %s is missing", s->out);
    else if (!output_intact(p, i, st, now))
        snprintf(pl->why, sizeof pl->why, "output %s was altered", s->out);
    else {
        pl->action = ACT_SKIP;
        snprintf(pl->why, sizeof pl->why, "up to date");
    }
    free(now);
out:
    json_decref(st);
    json_decref(in);
    return rc;
}

static int make_plan(const run_pipeline_t *p, const run_opts_t *o, json_t *cache, int locked, plan_t *plans,
                     gl_err_t *err)
{
    for (size_t i = 0; i < p->n; i++) {
        plan_t *pl = &plans[i];
        int rc = plan_stage(p, i, o, plans, cache, locked, pl, err);
        if (rc)
            return rc;
        if ((pl->action == ACT_RUN || pl->action == ACT_RESUME) && pl->asked && pl->sl.nqueued) {
            size_t l = strlen(pl->why);
            snprintf(pl->why + l, sizeof pl->why - l, "; Slurm job%s", pl->sl.nqueued > 1 ? "s" : "");
            for (size_t q = 0; q < pl->sl.nqueued; q++) {
                l = strlen(pl->why);
                snprintf(pl->why + l, sizeof pl->why - l, " %s", pl->sl.queued[q]);
            }
            l = strlen(pl->why);
            snprintf(pl->why + l, sizeof pl->why - l, " cancelled first");
        }
    }
    return GL_OK;
}

/* ---- running one stage ------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int path_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && (path[n] == '\0' || path[n] == '/');
}

/* Before a fresh run: removes what the stage wrote before. Only the
 * pipeline's own work folder and outputs this stage recorded are removed;
 * anything else in the way is an error. */
static int clean_output(const run_pipeline_t *p, const run_stage_t *s, gl_err_t *err)
{
    struct stat sb;
    if (s->inplace || lstat(s->out, &sb) < 0)
        return GL_OK;
    json_t *st = NULL;
    gl_err_t e;
    state_load(p, s, &st, &e);
    int ours = path_under(s->out, p->work) || (sget(st, "out") && !strcmp(sget(st, "out"), s->out));
    json_decref(st);
    if (!ours)
        return gl_err_set(err, GL_EEXIST,
                          "[%s]: %s exists and was not written by this pipeline: remove it or set another 'out'",
                          s->name, s->out);
    if (nftw(s->out, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
        return gl_err_set(err, GL_EIO, "%s: cannot remove the old output: %s", s->out, strerror(errno));
    return GL_OK;
}

static json_t *cmds_json(const run_pipeline_t *p, const run_stage_t *s, int resume)
{
    (void)p;
    json_t *a = json_array();
    for (size_t c = 0; c < s->ncmds; c++) {
        json_t *v = json_array();
        json_array_append_new(v, json_string("gptline"));
        for (char **x = s->cmds[c]; *x; x++)
            json_array_append_new(v, json_string(*x));
        if (resume && s->resume == RUN_RESUME_TRAIN)
            json_array_append_new(v, json_string("--resume"));
        json_array_append_new(a, v);
    }
    return a;
}

/* Prepares and records the start of a stage: output cleaned when fresh,
 * ingest's input list written, inputs fingerprinted, "running" saved. */
static int stage_begin(const run_pipeline_t *p, const run_stage_t *s, int fresh, int resume, json_t *cache,
                       const char *job, json_t *jobs, json_t **rec, gl_err_t *err)
{
    int rc = fresh ? clean_output(p, s, err) : GL_OK;
    char *dirs[3] = {gl_path_join(p->work, "state"), gl_path_join(p->work, "logs"), gl_xstrdup(s->out)};
    *strrchr(dirs[2], '/') = '\0';
    for (int d = 0; d < 3; d++) {
        if (!rc && dirs[d][0])
            rc = gl_mkdir_p(dirs[d], err);
        free(dirs[d]);
    }
    if (!rc && s->list_file)
        rc = gl_write_file_atomic(s->list_file, s->list_text, strlen(s->list_text), err);
    json_t *in = NULL;
    int missing = -1;
    if (!rc)
        rc = inputs_now(s, cache, &in, &missing, err);
    if (!rc && missing >= 0)
        rc = gl_err_set(err, GL_ENOTFOUND, "[%s]: missing input: %s = %s", s->name, s->in[missing].key,
                        s->in[missing].path);
    if (rc) {
        json_decref(in);
        return rc;
    }
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    *rec = json_pack("{s:i,s:s,s:s,s:s,s:f,s:s,s:O,s:o,s:o,s:s,s:s,s:I}", "format", STATE_FORMAT, "stage", s->name,
                     "kind", s->kind_name, "status", "running", "started", wall_now(), "mode",
                     resume ? "resume" : "fresh", "params", s->params, "inputs", in, "command",
                     cmds_json(p, s, resume), "out", s->out, "host", host, "pid", (json_int_t)getpid());
    if (job)
        json_object_set_new(*rec, "job", json_string(job));
    if (jobs)
        json_object_set(*rec, "jobs", jobs);
    rc = state_save(p, s, *rec, err);
    if (rc) {
        json_decref(*rec);
        *rec = NULL;
    }
    return rc;
}

static int stage_finish(const run_pipeline_t *p, const run_stage_t *s, json_t *rec, const char *status, int code,
                        json_t *cache, gl_err_t *err)
{
    double now = wall_now();
    json_object_set_new(rec, "status", json_string(status));
    json_object_set_new(rec, "finished", json_real(now));
    json_object_set_new(rec, "duration", json_real(now - json_real_value(json_object_get(rec, "started"))));
    json_object_set_new(rec, "exit_status", json_integer(code));
    json_object_del(rec, "pid");
    if (!strcmp(status, "done")) {
        char *fp;
        int rc = output_now(s, cache, &fp, err);
        if (rc)
            return rc;
        if (!fp)
            return gl_err_set(err, GL_ENOTFOUND, "[%s]: finished but left no output at %s", s->name, s->out);
        json_object_set_new(rec, "outputs", json_pack("[{s:s,s:s}]", "path", s->out, "fp", fp));
        free(fp);
    }
    return state_save(p, s, rec, err);
}

static volatile sig_atomic_t child_pid, stop_signal;

static void on_stop(int sig)
{
    stop_signal = sig;
    if (child_pid > 0)
        kill((pid_t)child_pid, SIGTERM);
}

static void loglinef(const run_opts_t *o, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void loglinef(const run_opts_t *o, int level, const char *fmt, ...)
{
    if (!o->log)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->log(o->log_ctx, level, msg);
}

/* Runs argv (argv[0] ignored: self runs) in dir with stdout and stderr to
 * logfd; returns the wait status. */
static int run_child(const char *self, char **argv, const char *dir, int logfd, int *wstatus, gl_err_t *err)
{
    pid_t pid = fork();
    if (pid < 0)
        return gl_err_set(err, GL_EIO, "fork: %s", strerror(errno));
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        if (chdir(dir) < 0)
            _exit(127);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execv(self, argv);
        dprintf(2, "gptline run: cannot run %s: %s\n", self, strerror(errno));
        _exit(127);
    }
    child_pid = pid;
    while (waitpid(pid, wstatus, 0) < 0) {
        if (errno != EINTR) {
            child_pid = 0;
            return gl_err_set(err, GL_EIO, "waitpid: %s", strerror(errno));
        }
    }
    child_pid = 0;
    return GL_OK;
}

static void shell_quote(FILE *f, const char *s)
{
    if (*s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,@+%") == strlen(s)) {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", f);
        else
            fputc(*s, f);
    }
    fputc('\'', f);
}

static void print_cmd(FILE *f, const char *self, char **argv, int resume)
{
    shell_quote(f, self);
    for (char **a = argv; *a; a++) {
        fputc(' ', f);
        shell_quote(f, *a);
    }
    if (resume)
        fputs(" --resume", f);
}

static int run_stage_local(const run_pipeline_t *p, const run_stage_t *s, const plan_t *pl, const run_opts_t *o,
                           json_t *cache, gl_err_t *err)
{
    int resume = pl->action == ACT_RESUME;
    json_t *rec = NULL;
    int rc = stage_begin(p, s, !resume, resume, cache, NULL, NULL, &rec, err);
    if (rc)
        return rc;
    char *lf = log_file(p, s);
    int fd = open(lf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = gl_err_set(err, GL_EIO, "%s: %s", lf, strerror(errno));
        goto out;
    }
    FILE *lfp = fdopen(dup(fd), "a");
    time_t t = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
    fprintf(lfp, "== %s gptline run: stage %s: %s (%s)\n", when, s->name, act_name[pl->action], pl->why);
    int train_resume = resume && s->resume == RUN_RESUME_TRAIN && strstr(pl->why, "resumes from");
    for (size_t c = 0; c < s->ncmds; c++) {
        fputs("$ ", lfp);
        print_cmd(lfp, o->self, s->cmds[c], train_resume);
        fputc('\n', lfp);
    }
    fclose(lfp);
    double t0 = gl_now();
    int code = 0, sig = 0;
    for (size_t c = 0; c < s->ncmds && !code && !sig && !stop_signal; c++) {
        size_t n = 0;
        while (s->cmds[c][n])
            n++;
        char **argv = gl_xcalloc(n + 3, sizeof *argv);
        argv[0] = "gptline";
        memcpy(argv + 1, s->cmds[c], n * sizeof *argv);
        if (train_resume)
            argv[n + 1] = "--resume";
        int ws;
        rc = run_child(o->self, argv, p->dir, fd, &ws, err);
        free(argv);
        if (rc)
            break;
        if (WIFEXITED(ws))
            code = WEXITSTATUS(ws);
        else if (WIFSIGNALED(ws))
            sig = WTERMSIG(ws);
    }
    close(fd);
    double dt = gl_now() - t0;
    if (rc) {
        stage_finish(p, s, rec, "failed", -1, cache, &(gl_err_t){0});
    } else if (stop_signal) {
        stage_finish(p, s, rec, "interrupted", code ? code : 128 + (sig ? sig : (int)stop_signal), cache,
                     &(gl_err_t){0});
        rc = gl_err_set(err, GL_EINTERRUPTED, "interrupted during stage %s (log: %s); run again to resume", s->name, lf);
    } else if (code || sig) {
        stage_finish(p, s, rec, "failed", code ? code : 128 + sig, cache, &(gl_err_t){0});
        if (sig)
            rc = gl_err_set(err, GL_EIO, "stage %s was killed by signal %d (%s); its log: %s", s->name, sig,
                            strsignal(sig), lf);
        else
            rc = gl_err_set(err, GL_EIO, "stage %s failed with exit status %d; its log: %s", s->name, code, lf);
    } else {
        rc = stage_finish(p, s, rec, "done", 0, cache, err);
        if (rc) /* e.g. it left no output */
            stage_finish(p, s, rec, "failed", 0, cache, &(gl_err_t){0});
        if (!rc) {
            char d[32];
            loglinef(o, GL_LOG_INFO, "%s: done in %s", s->name, gl_fmt_eta(dt, d, sizeof d));
        }
    }
out:
    free(lf);
    json_decref(rec);
    return rc;
}

/* ---- Slurm ------------------------------------------------------------------ */

static void script_header(FILE *f, const run_pipeline_t *p, const run_stage_t *s, const char *suffix,
                          const char *what, int array)
{
    fprintf(f, "#!/bin/bash\n# gptline run: %s of stage %s, pipeline ", what, s->name);
    fputs(p->path, f);
    fprintf(f, "\n#SBATCH --job-name=gptline-%s-%s%s\n", p->name, s->name, suffix);
    fprintf(f, "#SBATCH --output=%s/logs/%s%s-%s.log\n", p->work, s->name, suffix, array ? "%A_%a" : "%j");
    fprintf(f, "#SBATCH --chdir=%s\nset -u\nG=", p->dir);
    shell_quote(f, p->self_for_scripts);
    fputs("\nP=", f);
    shell_quote(f, p->path);
    fputc('\n', f);
}

/* The job script(s) of a stage: one, or three for an ingest array (start,
 * the array, end). texts[k] are owned by the caller. */
static size_t stage_scripts(const run_pipeline_t *p, const run_stage_t *s, const plan_t *pl, char *texts[3])
{
    int resume = pl->action == ACT_RESUME;
    int train_resume = resume && s->resume == RUN_RESUME_TRAIN && strstr(pl->why, "resumes from");
    const char *fresh = resume ? "" : " --fresh";
    size_t len;
    FILE *f;
    if (s->array > 1) {
        f = open_memstream(&texts[0], &len);
        script_header(f, p, s, "-start", "the start", 0);
        fprintf(f, "exec \"$G\" run --job-start %s%s \"$P\"\n", s->name, fresh);
        fclose(f);
        f = open_memstream(&texts[1], &len);
        script_header(f, p, s, "", "the workers", 1);
        fputs("exec \"$G\"", f);
        for (char **a = s->cmds[0]; *a; a++) {
            fputc(' ', f);
            shell_quote(f, *a);
        }
        fprintf(f, " --rank \"$SLURM_ARRAY_TASK_ID\" --world %ld\n", s->array);
        fclose(f);
        f = open_memstream(&texts[2], &len);
        script_header(f, p, s, "-end", "the end", 0);
        fprintf(f, "exec \"$G\" run --job-end %s --exit-status 0 \"$P\"\n", s->name);
        fclose(f);
        return 3;
    }
    f = open_memstream(&texts[0], &len);
    script_header(f, p, s, "", "the job", 0);
    /* A training job Slurm requeues (sbatch --requeue, a failed node) runs
     * this script again: it continues from its checkpoint when there is one. */
    int requeue = s->resume == RUN_RESUME_TRAIN && !train_resume;
    if (requeue) {
        fputs("fresh=--fresh resume=\n"
              "if [ \"${SLURM_RESTART_COUNT:-0}\" -gt 0 ] && [ -f ",
              f);
        char *latest = gl_path_join(s->out, "latest");
        shell_quote(f, latest);
        free(latest);
        fputs(" ]; then\n  fresh= resume=--resume  # requeued: continue from the checkpoint\nfi\n", f);
        fprintf(f, "\"$G\" run --job-start %s $fresh \"$P\" || exit $?\nrc=0\n", s->name);
    } else {
        fprintf(f, "\"$G\" run --job-start %s%s \"$P\" || exit $?\nrc=0\n", s->name, fresh);
    }
    for (size_t c = 0; c < s->ncmds; c++) {
        fputs(c ? "[ $rc -eq 0 ] && " : "", f);
        if (s->train)
            fprintf(f, "%s ", p->srun);
        fputs("\"$G\"", f);
        for (char **a = s->cmds[c]; *a; a++) {
            fputc(' ', f);
            shell_quote(f, *a);
        }
        fprintf(f, "%s || rc=$?\n", train_resume ? " --resume" : requeue ? " $resume" : "");
    }
    fprintf(f, "\"$G\" run --job-end %s --exit-status \"$rc\" \"$P\" || exit $?\nexit \"$rc\"\n", s->name);
    fclose(f);
    return 1;
}

/* Splits on blanks into argv (appended). */
static void split_into(char ***v, size_t *n, const char *s)
{
    while (s && *s) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        size_t m = strcspn(s, " \t");
        *v = gl_xrealloc(*v, (*n + 2) * sizeof **v);
        (*v)[*n] = strndup(s, m);
        (*v)[++*n] = NULL;
        s += m;
    }
}

/* sbatch --parsable ...: the job id, or an error with sbatch's words. */
static int sbatch(char **argv, char *jobid, size_t cap, gl_err_t *err)
{
    char out[1024];
    int st;
    int rc = run_capture(argv, out, sizeof out, &st, err);
    if (rc)
        return rc;
    size_t d = strspn(out, "0123456789");
    if (st || !d)
        return gl_err_set(err, GL_EIO, "sbatch failed (%s)", out[0] ? out : "no output");
    snprintf(jobid, cap, "%.*s", (int)d, out);
    return GL_OK;
}

/* "JOB_ingest_end": the shell variable --dry-run names a job by. */
static const char *var_name(const run_stage_t *s, const char *suffix)
{
    static char buf[4][160];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "JOB_%s%s", s->name, suffix);
    for (char *c = b; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            *c = '_';
    return b;
}

/* Submits a stage's job(s): its old jobs still in the queue are cancelled
 * first and the new ones wait for their end (afterany); the first job waits
 * for the last jobs of the upstream stages that run or are still in Slurm
 * (afterok). The record says "queued", then gets the job ids; a job that
 * started before sbatch returned has recorded its start: it gets them too. */
static int submit_stage(run_pipeline_t *p, size_t i, const plan_t *plans, char (*jobs)[32], const run_opts_t *o,
                        gl_err_t *err)
{
    const run_stage_t *s = &p->st[i];
    const plan_t *pl = &plans[i];
    char *texts[3] = {0};
    size_t nt = stage_scripts(p, s, pl, texts);
    int rc = GL_OK;
    char after[160] = "";
    if (pl->asked && pl->sl.nqueued) {
        const char *q[3];
        for (size_t k = 0; k < pl->sl.nqueued; k++) {
            q[k] = pl->sl.queued[k];
            size_t l = strlen(after);
            snprintf(after + l, sizeof after - l, "%s%s", l ? ":" : "afterany:", q[k]);
        }
        if (o->dry_run) {
            fprintf(o->out, "# scancel %s\n", strchr(after, ':') + 1);
        } else if ((rc = run_slurm_cancel(q, pl->sl.nqueued, err))) {
            gl_err_prefix(err, "[%s]: cancelling its old jobs", s->name);
            goto out;
        } else {
            loglinef(o, GL_LOG_INFO, "%s: cancelled Slurm job %s", s->name, strchr(after, ':') + 1);
        }
    }
    if (!o->dry_run) {
        json_t *rec = json_pack("{s:i,s:s,s:s,s:s,s:f,s:O,s:o,s:s}", "format", STATE_FORMAT, "stage", s->name,
                                "kind", s->kind_name, "status", "queued", "submitted", wall_now(), "params",
                                s->params, "command", cmds_json(p, s, pl->action == ACT_RESUME), "out", s->out);
        int lk = stage_lock(p, s);
        rc = state_save(p, s, rec, err);
        stage_unlock(lk);
        json_decref(rec);
    }
    const char *sfx[3] = {nt == 3 ? "-start" : "", "", "-end"};
    char ids[3][32] = {"", "", ""};
    size_t k;
    for (k = 0; k < nt && !rc; k++) {
        /* dependencies: the upstream stages' last jobs, or the previous part */
        char dep[1024] = "";
        if (k) {
            if (o->dry_run)
                snprintf(dep, sizeof dep, "--dependency=afterok:$%s", var_name(s, sfx[k - 1]));
            else
                snprintf(dep, sizeof dep, "--dependency=afterok:%s", ids[k - 1]);
        } else {
            for (size_t d = 0; d < s->ndeps; d++) {
                const run_stage_t *t = &p->st[s->deps[d]];
                int act = plans[s->deps[d]].action;
                if (act == ACT_SKIP)
                    continue;
                size_t l = strlen(dep);
                if (o->dry_run && act != ACT_WAIT)
                    snprintf(dep + l, sizeof dep - l, "%s$%s", l ? ":" : "--dependency=afterok:",
                             var_name(t, t->array > 1 ? "-end" : ""));
                else
                    snprintf(dep + l, sizeof dep - l, "%s%s", l ? ":" : "--dependency=afterok:", jobs[s->deps[d]]);
            }
            if (after[0]) {
                size_t l = strlen(dep);
                snprintf(dep + l, sizeof dep - l, "%s%s", l ? "," : "--dependency=", after);
            }
        }
        size_t nl = strlen(p->work) + strlen(s->name) + 32;
        char *name = gl_xmalloc(nl);
        snprintf(name, nl, "%s/slurm/%s%s.sbatch", p->work, s->name, nt == 3 ? sfx[k] : "");
        char **argv = NULL;
        size_t n = 0;
        split_into(&argv, &n, o->sbatch ? o->sbatch : "sbatch");
        split_into(&argv, &n, "--parsable");
        split_into(&argv, &n, dep);
        split_into(&argv, &n, p->slurm_opt);
        split_into(&argv, &n, s->slurm_opt);
        if (nt == 3 && k == 1) {
            char arr[64];
            snprintf(arr, sizeof arr, "--array=0-%ld", s->array - 1);
            split_into(&argv, &n, arr);
        }
        split_into(&argv, &n, name);
        if (o->dry_run) {
            fprintf(o->out, "# %s=$(", var_name(s, sfx[k]));
            for (size_t a = 0; a < n; a++)
                fprintf(o->out, "%s%s", a ? " " : "", argv[a]);
            fprintf(o->out, ")\n# %s:\n%s\n", name, texts[k]);
        } else {
            /* Slurm opens the job's --output before the job runs: logs/ must exist */
            char *sd = gl_path_join(p->work, "slurm"), *ld = gl_path_join(p->work, "logs");
            rc = gl_mkdir_p(sd, err);
            if (!rc)
                rc = gl_mkdir_p(ld, err);
            free(sd), free(ld);
            if (!rc)
                rc = gl_write_file_atomic(name, texts[k], strlen(texts[k]), err);
            if (!rc)
                rc = sbatch(argv, ids[k], sizeof ids[k], err);
            if (rc)
                gl_err_prefix(err, "submitting %s", name);
            else
                loglinef(o, GL_LOG_INFO, "%s%s: Slurm job %s", s->name, sfx[k], ids[k]);
        }
        for (size_t a = 0; a < n; a++)
            free(argv[a]);
        free(argv);
        free(name);
    }
    if (!rc && !o->dry_run) {
        snprintf(jobs[i], sizeof jobs[i], "%s", ids[nt - 1]);
        /* the job ids go into the record: still queued, or what one of these jobs wrote */
        int lk = stage_lock(p, s);
        json_t *rec = NULL;
        gl_err_t e;
        if (!state_load(p, s, &rec, &e) && rec) {
            const char *st = sget(rec, "status") ? sget(rec, "status") : "", *job = sget(rec, "job");
            int ours = !strcmp(st, "queued");
            for (k = 0; k < nt && !ours; k++)
                ours = job && !strcmp(job, ids[k]);
            if (ours) {
                json_t *list = json_array();
                for (k = 0; k < nt; k++)
                    json_array_append_new(list, json_string(ids[k]));
                json_object_set_new(rec, "jobs", list);
                if (!strcmp(st, "queued"))
                    json_object_set_new(rec, "job", json_string(ids[nt - 1]));
                rc = state_save(p, s, rec, err);
            }
        }
        json_decref(rec);
        stage_unlock(lk);
    }
    if (rc && !o->dry_run) {
        /* a stage is submitted whole or not at all */
        const char *q[3];
        size_t nq = 0;
        for (k = 0; k < nt; k++)
            if (ids[k][0])
                q[nq++] = ids[k];
        run_slurm_cancel(q, nq, &(gl_err_t){0});
    }
out:
    for (k = 0; k < nt; k++)
        free(texts[k]);
    return rc;
}

/* ---- the whole run ------------------------------------------------------------- */

static int take_lock(const run_pipeline_t *p, int *fd, gl_err_t *err)
{
    char *dir = gl_path_join(p->work, "state");
    int rc = gl_mkdir_p(dir, err);
    free(dir);
    if (rc)
        return rc;
    char *f = gl_path_join(p->work, "state/lock");
    *fd = open(f, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0)
        rc = gl_err_set(err, GL_EIO, "%s: %s", f, strerror(errno));
    else if (flock(*fd, LOCK_EX | LOCK_NB) < 0)
        rc = gl_err_set(err, GL_EEXIST, "%s: another gptline run is using this work folder", p->work);
    free(f);
    return rc;
}

/* A stage whose Slurm jobs ended without recording it (cancelled, timed
 * out, lost node, failed outside the command): its record says so now. */
static void record_slurm_end(const run_pipeline_t *p, const run_stage_t *s, const plan_t *pl, const run_opts_t *o)
{
    int lk = stage_lock(p, s);
    json_t *rec = NULL;
    gl_err_t e;
    const char *ids[3];
    size_t nj;
    if (!state_load(p, s, &rec, &e) && rec && slurm_unresolved(rec) && (nj = record_jobs(rec, ids)) &&
        !strcmp(ids[nj - 1], pl->last)) {
        char d[320];
        run_slurm_describe(&pl->sl, d, sizeof d);
        const char *status = slurm_end_status(&pl->sl);
        json_object_set_new(rec, "status", json_string(status));
        json_object_set_new(rec, "slurm", json_string(d));
        json_object_set_new(rec, "slurm_job", json_string(pl->sl.job));
        if (pl->sl.exit_status >= 0)
            json_object_set_new(rec, "exit_status", json_integer(pl->sl.exit_status));
        json_object_del(rec, "pid");
        if (!state_save(p, s, rec, &e))
            loglinef(o, GL_LOG_WARN, "%s: %s; recorded as %s", s->name, d, status);
    }
    json_decref(rec);
    stage_unlock(lk);
}

/* A local run cannot run a stage whose Slurm job is still queued or
 * running, nor one that needs such a stage. */
static int local_conflict(const run_pipeline_t *p, const plan_t *plans, gl_err_t *err)
{
    for (size_t i = 0; i < p->n; i++) {
        const plan_t *pl = &plans[i];
        char d[320];
        if (pl->action != ACT_RUN && pl->action != ACT_RESUME)
            continue;
        if (pl->asked && pl->sl.kind == RUN_SLURM_LIVE) {
            run_slurm_describe(&pl->sl, d, sizeof d);
            return gl_err_set(err, GL_EEXIST, "stage %s: %s: wait for it, cancel it (scancel), or run with --slurm",
                              p->st[i].name, d);
        }
        for (size_t k = 0; k < p->st[i].ndeps; k++) {
            const plan_t *up = &plans[p->st[i].deps[k]];
            if (up->action != ACT_WAIT)
                continue;
            run_slurm_describe(&up->sl, d, sizeof d);
            return gl_err_set(err, GL_EEXIST, "stage %s needs stage %s, which is still in Slurm (%s): wait for it, "
                              "or run with --slurm to chain after it", p->st[i].name, p->st[p->st[i].deps[k]].name, d);
        }
    }
    return GL_OK;
}

int run_pipeline_exec(run_pipeline_t *p, const run_opts_t *o, int *failed, gl_err_t *err)
{
    if (failed)
        *failed = -1;
    for (size_t f = 0; f < o->nforce; f++)
        if (run_pipeline_find(p, o->force[f]) < 0)
            return gl_err_set(err, GL_EINVAL, "--force %s: no such stage in %s", o->force[f], p->path);
    free(p->self_for_scripts);
    p->self_for_scripts = gl_xstrdup(o->self);
    int lock = -1, rc = GL_OK;
    if (!o->dry_run && (rc = take_lock(p, &lock, err)))
        return rc;
    json_t *cache = cache_load(p);
    plan_t *plans = gl_xcalloc(p->n, sizeof *plans);
    char(*jobs)[32] = gl_xcalloc(p->n, sizeof *jobs);
    rc = make_plan(p, o, cache, lock, plans, err);
    if (!rc && !o->slurm && !o->dry_run)
        rc = local_conflict(p, plans, err);
    if (rc)
        goto out;
    size_t todo = 0, waiting = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (plans[i].action == ACT_WAIT)
            snprintf(jobs[i], sizeof jobs[i], "%s", plans[i].last), waiting++;
        else if (plans[i].action != ACT_SKIP)
            todo++;
        int ended = plans[i].asked && (plans[i].sl.kind == RUN_SLURM_DEAD || plans[i].sl.kind == RUN_SLURM_DONE ||
                                       plans[i].sl.kind == RUN_SLURM_GONE);
        if (ended && !o->dry_run)
            record_slurm_end(p, &p->st[i], &plans[i], o);
    }
    if (o->dry_run) {
        for (size_t i = 0; i < p->n; i++) {
            const run_stage_t *s = &p->st[i];
            fprintf(o->out, "%-14s %-6s %s\n", s->name, act_name[plans[i].action], plans[i].why);
            if (plans[i].action == ACT_SKIP || plans[i].action == ACT_WAIT)
                continue;
            if (o->slurm) {
                rc = submit_stage(p, i, plans, jobs, o, err);
                if (rc)
                    goto out;
                continue;
            }
            int train_resume = plans[i].action == ACT_RESUME && s->resume == RUN_RESUME_TRAIN &&
                               strstr(plans[i].why, "resumes from");
            for (size_t c = 0; c < s->ncmds; c++) {
                fputs("    $ ", o->out);
                print_cmd(o->out, o->self, s->cmds[c], train_resume);
                fputc('\n', o->out);
            }
        }
        goto out;
    }
    if (!todo && !waiting)
        loglinef(o, GL_LOG_INFO, "%s: every stage is up to date", p->name);
    else if (!todo)
        loglinef(o, GL_LOG_INFO, "%s: nothing to run; %zu stage%s still queued or running in Slurm", p->name, waiting,
                 waiting == 1 ? "" : "s");
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_stop;
    stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    for (size_t i = 0; i < p->n && !rc; i++) {
        const run_stage_t *s = &p->st[i];
        if (plans[i].action == ACT_SKIP) {
            loglinef(o, GL_LOG_INFO, "%s: up to date", s->name);
            continue;
        }
        if (plans[i].action == ACT_WAIT) {
            loglinef(o, GL_LOG_INFO, "%s: %s", s->name, plans[i].why);
            continue;
        }
        loglinef(o, GL_LOG_INFO, "%s: %s (%s)", s->name, act_name[plans[i].action], plans[i].why);
        if (o->slurm) {
            rc = submit_stage(p, i, plans, jobs, o, err);
        } else {
            /* jobs that can never start (their dependency failed) are dropped */
            const char *q[3];
            for (size_t k = 0; k < plans[i].sl.nqueued; k++)
                q[k] = plans[i].sl.queued[k];
            rc = plans[i].asked ? run_slurm_cancel(q, plans[i].sl.nqueued, err) : GL_OK;
            if (!rc)
                rc = run_stage_local(p, s, &plans[i], o, cache, err);
        }
        if (rc && failed)
            *failed = (int)i;
        cache_save(p, cache);
        if (!rc && stop_signal)
            rc = gl_err_set(err, GL_EINTERRUPTED, "interrupted after stage %s", s->name);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
out:
    json_decref(cache);
    free(plans);
    free(jobs);
    if (lock >= 0)
        close(lock);
    return rc;
}

/* ---- status ---------------------------------------------------------------------- */

/* The log of a stage's run: WORK/logs/STAGE.log when run here, the job's
 * STAGE-JOB.log (STAGE-ARRAY_*.log for an ingest array) under Slurm. */
static void stage_log_path(const run_pipeline_t *p, const run_stage_t *s, json_t *st, const char *job, char *out,
                           size_t cap)
{
    const char *ids[3];
    size_t nj = record_jobs(st, ids);
    if (job && job[0])
        snprintf(out, cap, "%s/logs/%s-%s%s.log", p->work, s->name, job, nj == 3 && !strcmp(job, ids[1]) ? "_*" : "");
    else
        snprintf(out, cap, "%s/logs/%s.log", p->work, s->name);
}

int run_pipeline_status(run_pipeline_t *p, FILE *out, gl_err_t *err)
{
    json_t *cache = cache_load(p);
    plan_t *plans = gl_xcalloc(p->n, sizeof *plans);
    int rc = GL_OK;
    int busy = lock_held_elsewhere(p);
    fprintf(out, "pipeline %s (%s), work folder %s\n", p->name, p->path, p->work);
    fprintf(out, "%-14s %-12s %-19s %9s  %s\n", "STAGE", "STATUS", "WHEN", "DURATION", "DETAIL");
    for (size_t i = 0; i < p->n && !rc; i++) {
        const run_stage_t *s = &p->st[i];
        gl_err_t e = {0};
        json_t *st = NULL;
        const plan_t *pl = &plans[i];
        /* the plan first: it asks Slurm, and a job that ended meanwhile has written the record */
        int prc = plan_stage(p, i, NULL, plans, cache, -1, &plans[i], &e);
        rc = state_load(p, s, &st, err);
        if (rc)
            break;
        const char *status = st && sget(st, "status") ? sget(st, "status") : "";
        const char *label;
        char detail[2048] = "";
        if (!st) {
            label = "never run";
        } else if (!strcmp(status, "done")) {
            label = plans[i].action == ACT_SKIP && !prc ? "done" : "stale";
            if (prc)
                snprintf(detail, sizeof detail, "%s", e.msg);
            else if (plans[i].action != ACT_SKIP)
                snprintf(detail, sizeof detail, "%s", plans[i].why);
        } else if (pl->asked) {
            /* what Slurm says of its jobs */
            char d[320];
            run_slurm_describe(&pl->sl, d, sizeof d);
            if (pl->sl.kind == RUN_SLURM_LIVE)
                label = strcmp(pl->sl.state, "PENDING") ? "running" : "queued";
            else if (pl->sl.kind == RUN_SLURM_NOASK)
                label = status;
            else
                label = slurm_end_status(&pl->sl);
            if (pl->sl.kind == RUN_SLURM_LIVE || pl->sl.kind == RUN_SLURM_NOASK || prc ||
                pl->action == ACT_SKIP)
                snprintf(detail, sizeof detail, "%s", d);
            else if (strstr(pl->why, d))
                snprintf(detail, sizeof detail, "next run: %s", pl->why);
            else
                snprintf(detail, sizeof detail, "%s; next run: %s", d, pl->why);
            if (!strcmp(label, "failed")) {
                char lf[1024];
                stage_log_path(p, s, st, pl->sl.job, lf, sizeof lf);
                size_t l = strlen(detail);
                snprintf(detail + l, sizeof detail - l, "; log %s", lf);
            }
        } else if (!strcmp(status, "running")) {
            label = busy ? "running" : "interrupted";
        } else if (!strcmp(status, "queued")) {
            label = "queued";
            snprintf(detail, sizeof detail, "no Slurm job recorded");
        } else if (!strcmp(status, "failed")) {
            label = "failed";
            char lf[1024];
            stage_log_path(p, s, st, sget(st, "slurm_job") ? sget(st, "slurm_job") : sget(st, "job"), lf, sizeof lf);
            if (sget(st, "slurm"))
                snprintf(detail, sizeof detail, "%s; log %s", sget(st, "slurm"), lf);
            else
                snprintf(detail, sizeof detail, "exit status %lld; log %s",
                         (long long)json_integer_value(json_object_get(st, "exit_status")), lf);
        } else {
            label = "interrupted";
        }
        if (!strcmp(label, "interrupted") && !detail[0] && pl->action != ACT_SKIP && !prc)
            snprintf(detail, sizeof detail, "next run: %s", pl->why);
        char when[32] = "-", dur[32] = "-";
        json_t *tj = json_object_get(st, "finished");
        if (!tj)
            tj = json_object_get(st, "started");
        if (!tj)
            tj = json_object_get(st, "submitted");
        if (tj) {
            time_t t = (time_t)json_number_value(tj);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
        }
        if (json_object_get(st, "duration"))
            gl_fmt_eta(json_number_value(json_object_get(st, "duration")), dur, sizeof dur);
        fprintf(out, "%-14s %-12s %-19s %9s  %s\n", s->name, label, when, dur, detail);
        json_decref(st);
    }
    json_decref(cache);
    free(plans);
    return rc;
}

/* ---- inside Slurm jobs -------------------------------------------------------------- */

int run_job_start(run_pipeline_t *p, const char *name, int fresh, gl_err_t *err)
{
    int i = run_pipeline_find(p, name);
    if (i < 0)
        return gl_err_set(err, GL_EINVAL, "no stage %s in %s", name, p->path);
    const run_stage_t *s = &p->st[i];
    json_t *cache = cache_load(p), *rec = NULL;
    const char *job = getenv("SLURM_JOB_ID");
    int lk = stage_lock(p, s);
    /* the submission's job ids stay in the record (Slurm is asked about them) */
    json_t *old = NULL, *jobs = NULL, *v;
    gl_err_t e;
    size_t k;
    if (job && !state_load(p, s, &old, &e) && old)
        json_array_foreach(json_object_get(old, "jobs"), k, v) {
            if (json_is_string(v) && !strcmp(json_string_value(v), job))
                jobs = json_object_get(old, "jobs");
        }
    int rc = stage_begin(p, s, fresh, !fresh, cache, job ? job : "", jobs, &rec, err);
    json_decref(old);
    stage_unlock(lk);
    cache_save(p, cache);
    json_decref(cache);
    json_decref(rec);
    return rc;
}

int run_job_end(run_pipeline_t *p, const char *name, int exit_status, gl_err_t *err)
{
    int i = run_pipeline_find(p, name);
    if (i < 0)
        return gl_err_set(err, GL_EINVAL, "no stage %s in %s", name, p->path);
    const run_stage_t *s = &p->st[i];
    json_t *rec = NULL;
    int lk = stage_lock(p, s);
    int rc = state_load(p, s, &rec, err);
    if (!rc && (!rec || !sget(rec, "status") || strcmp(sget(rec, "status"), "running")))
        rc = gl_err_set(err, GL_EINVAL, "[%s]: no running record to finish (run --job-start first)", name);
    json_t *cache = cache_load(p);
    if (!rc)
        rc = stage_finish(p, s, rec, exit_status ? "failed" : "done", exit_status, cache, err);
    stage_unlock(lk);
    cache_save(p, cache);
    json_decref(cache);
    json_decref(rec);
    return rc;
}
