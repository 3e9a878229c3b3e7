/* tap.c — implementation of the TAP helpers in tap.h. */
#include "tests/tap.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int n_run, n_fail;
static char tmpdir[512];

int tap_check(int cond, const char *file, int line, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    n_run++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_run, name);
    if (!cond) {
        n_fail++;
        printf("#   Failed test at %s line %d.\n", file, line);
    }
    fflush(stdout);
    return cond;
}

void tap_diag(const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *s = msg, *e; s && *s; s = e ? e + 1 : NULL) {
        e = strchr(s, '\n');
        if (e)
            *e = '\0';
        printf("# %s\n", s);
    }
    fflush(stdout);
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(p);
}

static void cleanup(void)
{
    if (tmpdir[0] && !getenv("GL_KEEP_TMP"))
        nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    tmpdir[0] = '\0';
}

void tap_skip_all(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("1..0 # SKIP %s\n", msg);
    cleanup();
    exit(0);
}

void tap_skip(int n, const char *reason)
{
    for (int i = 0; i < n; i++)
        printf("ok %d # skip %s\n", ++n_run, reason);
}

int tap_failed(void) { return n_fail; }

int tap_done(void)
{
    printf("1..%d\n", n_run);
    if (n_fail)
        printf("# failed %d of %d checks\n", n_fail, n_run);
    cleanup();
    return n_fail ? 1 : 0;
}

const char *tap_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/gltest.XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return tmpdir;
}

char *tap_data_path(const char *rel)
{
    const char *d = getenv("GL_DATA");
    if (!d || !*d)
        d = "../shared/data";
    struct stat st;
    if (stat(d, &st) < 0 || !S_ISDIR(st.st_mode))
        return NULL;
    size_t n = strlen(d) + strlen(rel) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", d, rel);
    return p;
}
