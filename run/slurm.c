/* slurm.c — asking Slurm what became of a stage's jobs, and cancelling
 * them.
 *
 * A stage submitted with `gptline run --slurm` records its job ids (one,
 * or three for an ingest array: start, array, end). The jobs themselves
 * record the stage's start and end; a job that is cancelled, times out or
 * loses its node records nothing, so its stage stays "queued" or
 * "running". Before trusting such a record, the runner asks Slurm:
 *
 *   scontrol -o show job ID     the controller's view: live jobs, and ended
 *                               ones for MinJobAge seconds (300 by default)
 *   sacct -X -n -P -j ID        when the controller no longer knows the job
 *                               and accounting is on (it is optional)
 *
 * Each line (one per array task) gives a state; the stage's jobs together
 * are live (some job queued, running, completing, suspended), dead (a job
 * ended FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED,
 * BOOT_FAIL or DEADLINE, or waits on a dependency that can never be met),
 * done (all COMPLETED), gone (Slurm no longer knows them: they ended, how is
 * lost) or unknown (Slurm cannot be asked: no scontrol, no controller).
 * Queries cost one scontrol call per recorded job, only for stages whose
 * record is queued or running.
 */
#include "run/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int run_capture(char *const *argv, char *out, size_t cap, int *status, gl_err_t *err)
{
    int fds[2];
    if (pipe(fds) < 0)
        return gl_err_set(err, GL_EIO, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]), close(fds[1]);
        return gl_err_set(err, GL_EIO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], argv);
        dprintf(2, "cannot run %s: %s", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    char sink[512];
    /* read everything (the child must not block on a full pipe), keep cap - 1 */
    for (;;) {
        r = n + 1 < cap ? read(fds[0], out + n, cap - 1 - n) : read(fds[0], sink, sizeof sink);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (n + 1 < cap)
            n += (size_t)r;
    }
    close(fds[0]);
    out[n] = '\0';
    int ws;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
    while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
    return GL_OK;
}

/* The value of KEY= in one `scontrol -o` line, into v. */
static void field(const char *line, const char *key, char *v, size_t cap)
{
    size_t kl = strlen(key);
    v[0] = '\0';
    for (const char *p = line; (p = strstr(p, key)); p += kl) {
        if ((p == line || p[-1] == ' ') && p[kl] == '=') {
            p += kl + 1;
            size_t n = strcspn(p, " \n");
            snprintf(v, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
            return;
        }
    }
}

static int final_bad(const char *state)
{
    static const char *bad[] = {"FAILED",  "CANCELLED", "TIMEOUT",  "NODE_FAIL", "OUT_OF_MEMORY",
                                "PREEMPTED", "BOOT_FAIL", "DEADLINE", NULL};
    for (int i = 0; bad[i]; i++)
        if (!strcmp(state, bad[i]))
            return 1;
    return 0;
}

/* "1:0" -> 1, "0:9" -> 137. */
static int exit_code(const char *s)
{
    int code = 0, sig = 0;
    if (sscanf(s, "%d:%d", &code, &sig) < 1)
        return -1;
    return sig ? 128 + sig : code;
}

/* One state line of job id: folds it into out. */
typedef struct {
    int bad, never, live, running, completed;
} tally_t;

static void take(run_slurm_t *out, tally_t *t, const char *id, const char *state, const char *reason,
                 const char *exitc)
{
    if (!strcmp(state, "COMPLETED")) {
        t->completed++;
        return;
    }
    if (final_bad(state)) {
        if (!t->bad++) {
            snprintf(out->job, sizeof out->job, "%s", id);
            snprintf(out->state, sizeof out->state, "%s", state);
            out->reason[0] = '\0';
            out->exit_status = !strcmp(state, "FAILED") || !strcmp(state, "OUT_OF_MEMORY") ? exit_code(exitc) : -1;
        }
        return;
    }
    /* anything else is in the queue: it is cancelled before a resubmission */
    size_t q;
    for (q = 0; q < out->nqueued && strcmp(out->queued[q], id); q++) {
    }
    if (q == out->nqueued && q < sizeof out->queued / sizeof out->queued[0])
        snprintf(out->queued[out->nqueued++], sizeof out->queued[0], "%s", id);
    if (!strcmp(state, "PENDING") && !strcmp(reason, "DependencyNeverSatisfied")) {
        if (!t->bad && !t->never++) {
            snprintf(out->job, sizeof out->job, "%s", id);
            snprintf(out->state, sizeof out->state, "PENDING");
            snprintf(out->reason, sizeof out->reason, "%s", reason);
        }
        return;
    }
    if (!t->bad && !t->never && (!t->live || (strcmp(state, "PENDING") && !t->running))) {
        snprintf(out->job, sizeof out->job, "%s", id);
        snprintf(out->state, sizeof out->state, "%s", state);
        snprintf(out->reason, sizeof out->reason, "%s", strcmp(state, "PENDING") ? "" : reason);
    }
    t->live++;
    t->running += strcmp(state, "PENDING") != 0;
}

void run_slurm_query(const char *const *jobs, size_t n, run_slurm_t *out)
{
    memset(out, 0, sizeof *out);
    out->exit_status = -1;
    tally_t t = {0};
    int gone = 0;
    char gone_job[32] = "";
    /* one line per array task, ~1.5 KB each */
    size_t cap = 1u << 21;
    char *buf = gl_xmalloc(cap), line[8192];
    gl_err_t e = {0};
    for (size_t j = 0; j < n; j++) {
        int st;
        char *argv[] = {"scontrol", "-o", "show", "job", (char *)jobs[j], NULL};
        if (run_capture(argv, buf, cap, &st, &e)) {
            out->kind = RUN_SLURM_NOASK;
            snprintf(out->job, sizeof out->job, "%s", jobs[j]);
            snprintf(out->msg, sizeof out->msg, "%.150s", e.msg);
            goto out;
        }
        if (st == 0) {
            int lines = 0;
            for (char *p = buf; *p;) {
                size_t l = strcspn(p, "\n");
                snprintf(line, sizeof line, "%.*s", (int)(l < sizeof line ? l : sizeof line - 1), p);
                p += l + (p[l] == '\n');
                char state[48], reason[64], exitc[32];
                field(line, "JobState", state, sizeof state);
                if (!state[0])
                    continue;
                field(line, "Reason", reason, sizeof reason);
                field(line, "ExitCode", exitc, sizeof exitc);
                take(out, &t, jobs[j], state, reason, exitc);
                lines++;
            }
            if (lines)
                continue;
        } else if (!strstr(buf, "Invalid job id")) {
            out->kind = RUN_SLURM_NOASK;
            snprintf(out->job, sizeof out->job, "%s", jobs[j]);
            const char *last = strrchr(buf, '\n'); /* the last line says most: "fatal: ..." */
            snprintf(out->msg, sizeof out->msg, "scontrol: %s", last ? last + 1 : buf);
            goto out;
        }
        /* the controller forgot it: accounting, when there is some */
        char *av[] = {"sacct", "-X", "-n", "-P", "-o", "State,ExitCode", "-j", (char *)jobs[j], NULL};
        int lines = 0;
        if (!run_capture(av, buf, cap, &st, &e) && st == 0) {
            for (char *p = buf; *p;) {
                size_t l = strcspn(p, "\n");
                snprintf(line, sizeof line, "%.*s", (int)(l < sizeof line ? l : sizeof line - 1), p);
                p += l + (p[l] == '\n');
                char *bar = strchr(line, '|');
                if (!bar)
                    continue;
                *bar = '\0';
                line[strcspn(line, " ")] = '\0'; /* "CANCELLED by 0" */
                if (!line[0])
                    continue;
                take(out, &t, jobs[j], line, "", bar + 1);
                lines++;
            }
        }
        if (!lines && !gone++)
            snprintf(gone_job, sizeof gone_job, "%s", jobs[j]);
    }
    if (t.bad || t.never)
        out->kind = RUN_SLURM_DEAD;
    else if (t.live)
        out->kind = RUN_SLURM_LIVE;
    else if (gone) {
        out->kind = RUN_SLURM_GONE;
        snprintf(out->job, sizeof out->job, "%s", gone_job);
    } else {
        out->kind = RUN_SLURM_DONE;
        snprintf(out->job, sizeof out->job, "%s", n ? jobs[n - 1] : "");
        snprintf(out->state, sizeof out->state, "COMPLETED");
    }
out:
    free(buf);
}

int run_slurm_cancel(const char *const *jobs, size_t n, gl_err_t *err)
{
    if (!n)
        return GL_OK;
    char **argv = gl_xcalloc(n + 2, sizeof *argv);
    argv[0] = "scancel";
    for (size_t j = 0; j < n; j++)
        argv[j + 1] = (char *)jobs[j];
    char buf[1024];
    int st = 0;
    int rc = run_capture(argv, buf, sizeof buf, &st, err);
    free(argv);
    if (!rc && st)
        rc = gl_err_set(err, GL_EIO, "scancel failed (%s)", buf[0] ? buf : "no output");
    return rc;
}

void run_slurm_describe(const run_slurm_t *s, char *out, size_t cap)
{
    switch (s->kind) {
    case RUN_SLURM_NOASK:
        snprintf(out, cap, "Slurm cannot be asked about job %s (%s)", s->job, s->msg);
        break;
    case RUN_SLURM_GONE:
        snprintf(out, cap, "Slurm job %s ended; Slurm no longer knows how", s->job);
        break;
    case RUN_SLURM_DONE:
        snprintf(out, cap, "Slurm job %s COMPLETED without recording the stage's end", s->job);
        break;
    default:
        if (s->reason[0])
            snprintf(out, cap, "Slurm job %s %s (%s)%s", s->job, s->state, s->reason,
                     !strcmp(s->reason, "DependencyNeverSatisfied") ? ": it can never start" : "");
        else if (s->exit_status >= 0)
            snprintf(out, cap, "Slurm job %s %s (exit status %d)", s->job, s->state, s->exit_status);
        else
            snprintf(out, cap, "Slurm job %s %s", s->job, s->state);
    }
}
