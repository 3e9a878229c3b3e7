/* metrics.c — counters of long-running commands as a Prometheus textfile.
 *
 * The labeling server, the ingest workers and the trainer expose what they
 * count in the Prometheus text exposition format (0.0.4) as a file that
 * node_exporter's textfile collector picks up (--collector.textfile.directory;
 * it reads *.prom). No HTTP server in the process, nothing to secure: the
 * file is rebuilt whole from the command's counters every few seconds and
 * at exit, written to a temporary name beside it and renamed, so the
 * collector never reads half a file. The temporary name (PATH.tmp.PID)
 * does not end in .prom, so the collector ignores it.
 *
 * The workload is tiny (tens of samples every few seconds): the exposition
 * is built in one growing buffer and written with one write().
 */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void put(gl_metrics_t *m, const char *s, size_t n)
{
    if (m->len + n + 1 > m->cap) {
        m->cap = (m->len + n + 1) * 2 + 256;
        m->buf = gl_xrealloc(m->buf, m->cap);
    }
    memcpy(m->buf + m->len, s, n);
    m->len += n;
    m->buf[m->len] = 0;
}

static void puts_(gl_metrics_t *m, const char *s) { put(m, s, strlen(s)); }

/* Label values escape \, " and newline; HELP text escapes \ and newline. */
static void put_escaped(gl_metrics_t *m, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(m, "\\\\");
        else if (*s == '\n')
            puts_(m, "\\n");
        else if (quote && *s == '"')
            puts_(m, "\\\"");
        else
            put(m, s, 1);
    }
}

static int label_name_ok(const char *k)
{
    if (!*k || !(isalpha((unsigned char)*k) || *k == '_') || !strncmp(k, "__", 2))
        return 0;
    for (; *k; k++)
        if (!(isalnum((unsigned char)*k) || *k == '_'))
            return 0;
    return 1;
}

int gl_metrics_init(gl_metrics_t *m, const char *path, double interval_s, const char *const *labels,
                    gl_err_t *err)
{
    memset(m, 0, sizeof *m);
    const char *env = getenv("GPTLINE_METRICS_INTERVAL");
    if (interval_s <= 0 && env && *env)
        interval_s = strtod(env, NULL);
    m->interval = interval_s > 0 ? interval_s : 5;
    m->last_write = -1;
    gl_metrics_t l = {0}; /* a scratch builder for the label text */
    for (size_t i = 0; labels && labels[i]; i += 2) {
        if (!labels[i + 1] || !label_name_ok(labels[i])) {
            free(l.buf);
            return gl_err_set(err, GL_EINVAL, "metrics: bad label name '%s'", labels[i]);
        }
        if (i)
            puts_(&l, ",");
        puts_(&l, labels[i]);
        puts_(&l, "=\"");
        put_escaped(&l, labels[i + 1], 1);
        puts_(&l, "\"");
    }
    m->labels = l.buf; /* NULL when there are none */
    m->path = gl_xstrdup(path);
    return GL_OK;
}

void gl_metrics_free(gl_metrics_t *m)
{
    if (!m)
        return;
    free(m->path);
    free(m->labels);
    free(m->buf);
    memset(m, 0, sizeof *m);
}

char *gl_metrics_path(const char *option, const char *name)
{
    if (option && *option)
        return gl_xstrdup(option);
    const char *dir = getenv("GPTLINE_METRICS_DIR");
    if (dir && *dir)
        return gl_path_join(dir, name);
    return NULL;
}

int gl_metrics_due(const gl_metrics_t *m)
{
    return m->path && (m->last_write < 0 || gl_now() - m->last_write >= m->interval);
}

void gl_metrics_begin(gl_metrics_t *m)
{
    m->len = 0;
    if (m->buf)
        m->buf[0] = 0;
    m->last_family[0] = 0;
}

void gl_metrics_add(gl_metrics_t *m, const char *name, gl_metric_type_t type, const char *help,
                    const char *key, const char *value, double v)
{
    if (strcmp(m->last_family, name)) {
        snprintf(m->last_family, sizeof m->last_family, "%s", name);
        puts_(m, "# HELP ");
        puts_(m, name);
        puts_(m, " ");
        put_escaped(m, help, 0);
        puts_(m, "\n# TYPE ");
        puts_(m, name);
        puts_(m, type == GL_METRIC_COUNTER ? " counter\n" : " gauge\n");
    }
    puts_(m, name);
    if (m->labels || key) {
        puts_(m, "{");
        if (m->labels)
            puts_(m, m->labels);
        if (key) {
            if (m->labels)
                puts_(m, ",");
            puts_(m, key);
            puts_(m, "=\"");
            put_escaped(m, value ? value : "", 1);
            puts_(m, "\"");
        }
        puts_(m, "}");
    }
    char num[64];
    if (isnan(v))
        snprintf(num, sizeof num, " NaN\n");
    else if (isinf(v))
        snprintf(num, sizeof num, " %sInf\n", v > 0 ? "+" : "-");
    else
        snprintf(num, sizeof num, " %.17g\n", v);
    puts_(m, num);
}

int gl_metrics_write(gl_metrics_t *m, gl_err_t *err)
{
    if (!m->path)
        return GL_OK;
    m->last_write = gl_now();
    size_t n = strlen(m->path) + 32;
    char *tmp = gl_xmalloc(n);
    snprintf(tmp, n, "%s.tmp.%ld", m->path, (long)getpid());
    int rc = GL_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = gl_err_set(err, GL_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    size_t off = 0;
    while (off < m->len) {
        ssize_t w = write(fd, m->buf + off, m->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = gl_err_set(err, GL_EIO, "%s: write failed: %s", tmp, strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    if (close(fd) < 0 && !rc)
        rc = gl_err_set(err, GL_EIO, "%s: close failed: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, m->path) < 0)
        rc = gl_err_set(err, GL_EIO, "%s: rename from %s failed: %s", m->path, tmp, strerror(errno));
    if (rc)
        unlink(tmp);
out:
    free(tmp);
    return rc;
}
