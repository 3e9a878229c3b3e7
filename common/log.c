/* log.c — leveled logging and the progress line, both on stderr.
 *
 * For the command layer only: libraries return errors instead. The progress
 * line redraws in place (carriage return) at most four times a second and
 * stays silent when stderr is not a terminal, so logs and pipes stay clean.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int log_level = -1;

static gl_log_level_t level_from_env(void)
{
    const char *s = getenv("GPTLINE_LOG");
    if (!s)
        return GL_LOG_INFO;
    if (!strcasecmp(s, "error")) return GL_LOG_ERROR;
    if (!strcasecmp(s, "warn")) return GL_LOG_WARN;
    if (!strcasecmp(s, "debug")) return GL_LOG_DEBUG;
    return GL_LOG_INFO;
}

void gl_log_set_level(gl_log_level_t level) { log_level = (int)level; }

gl_log_level_t gl_log_get_level(void)
{
    if (log_level < 0)
        log_level = (int)level_from_env();
    return (gl_log_level_t)log_level;
}

void gl_log(gl_log_level_t level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warning", "info", "debug"};
    if (level > gl_log_get_level())
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (level == GL_LOG_INFO)
        fprintf(stderr, "gptline: %s\n", line);
    else
        fprintf(stderr, "gptline: %s: %s\n", names[level], line);
}

double gl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

char *gl_fmt_bytes(double b, char *buf, size_t cap)
{
    static const char *u[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    int i = 0;
    while (b >= 1000.0 && i < 5) {
        b /= 1000.0;
        i++;
    }
    if (i == 0)
        snprintf(buf, cap, "%.0f %s", b, u[i]);
    else
        snprintf(buf, cap, "%.*f %s", b < 10 ? 2 : b < 100 ? 1 : 0, b, u[i]);
    return buf;
}

char *gl_fmt_count(double n, char *buf, size_t cap)
{
    static const char *u[] = {"", "k", "M", "G", "T"};
    int i = 0;
    while (n >= 1000.0 && i < 4) {
        n /= 1000.0;
        i++;
    }
    if (i == 0)
        snprintf(buf, cap, "%.0f", n);
    else
        snprintf(buf, cap, "%.*f%s", n < 10 ? 2 : n < 100 ? 1 : 0, n, u[i]);
    return buf;
}

static char *fmt_rate(double r, char *buf, size_t cap)
{
    if (r >= 1000.0)
        return gl_fmt_count(r, buf, cap);
    snprintf(buf, cap, "%.*f", r < 10 ? 2 : r < 100 ? 1 : 0, r);
    return buf;
}

char *gl_fmt_eta(double s, char *buf, size_t cap)
{
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, cap, "--:--");
        return buf;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
    return buf;
}

void gl_progress_start(gl_progress_t *p, const char *label, const char *unit,
                       uint64_t total_items, uint64_t total_bytes)
{
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit ? unit : "items";
    p->total_items = total_items;
    p->total_bytes = total_bytes;
    p->t0 = gl_now();
    const char *force = getenv("GPTLINE_PROGRESS");
    if (force && *force)
        p->enabled = *force != '0';
    else
        p->enabled = isatty(STDERR_FILENO);
}

void gl_progress_format(const gl_progress_t *p, double now, char *buf, size_t cap)
{
    double dt = now - p->t0;
    if (dt <= 0)
        dt = 1e-9;
    char a[32], b[32], c[32], d[32], eta[32];
    double ir = (double)p->items / dt, br = (double)p->bytes / dt;
    double frac = -1;
    if (p->total_bytes)
        frac = (double)p->bytes / (double)p->total_bytes;
    else if (p->total_items)
        frac = (double)p->items / (double)p->total_items;
    gl_fmt_eta(frac > 0 ? dt * (1 - frac) / frac : -1, eta, sizeof eta);
    int n = snprintf(buf, cap, "%s: %s %s", p->label, gl_fmt_count((double)p->items, a, sizeof a),
                     p->unit);
    if (n < 0 || (size_t)n >= cap)
        return;
    if (frac >= 0)
        n += snprintf(buf + n, cap - (size_t)n, " (%.1f%%)", 100.0 * (frac > 1 ? 1 : frac));
    if ((size_t)n >= cap)
        return;
    n += snprintf(buf + n, cap - (size_t)n, ", %s %s/s", fmt_rate(ir, b, sizeof b), p->unit);
    if ((size_t)n >= cap)
        return;
    if (p->bytes)
        n += snprintf(buf + n, cap - (size_t)n, ", %s, %s/s", gl_fmt_bytes((double)p->bytes, c, sizeof c),
                      gl_fmt_bytes(br, d, sizeof d));
    if ((size_t)n >= cap)
        return;
    if (frac >= 0)
        snprintf(buf + n, cap - (size_t)n, ", ETA %s", eta);
}

static void draw(gl_progress_t *p, double now)
{
    char line[256];
    gl_progress_format(p, now, line, sizeof line);
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    p->last_draw = now;
    p->drawn = 1;
}

void gl_progress_add(gl_progress_t *p, uint64_t items, uint64_t bytes)
{
    p->items += items;
    p->bytes += bytes;
    if (!p->enabled)
        return;
    double now = gl_now();
    if (now - p->last_draw >= 0.25)
        draw(p, now);
}

void gl_progress_finish(gl_progress_t *p)
{
    if (!p->enabled)
        return;
    draw(p, gl_now());
    fputc('\n', stderr);
}
