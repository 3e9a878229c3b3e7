/* test_common.c — the shared conventions: errors, number parsing, atomic
 * writes, file reading limits, progress formatting. */
#include "common/common.h"
#include "tests/tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void)
{
    gl_err_t err = {0};

    /* errors */
    is_int(gl_err_set(&err, GL_ECORRUPT, "%s: bad %d", "f.mdb", 7), GL_ECORRUPT, "gl_err_set returns the code");
    is_str(err.msg, "f.mdb: bad 7", "message formatted");
    gl_err_prefix(&err, "dataset %s", "d");
    is_str(err.msg, "dataset d: f.mdb: bad 7", "prefix adds context");
    char longp[1000];
    memset(longp, 'x', sizeof longp - 1);
    longp[999] = 0;
    gl_err_prefix(&err, "%s", longp);
    ok(strlen(err.msg) == sizeof err.msg - 1, "overlong message is cut to fit");
    is_int(gl_err_set(NULL, GL_EIO, "x"), GL_EIO, "NULL err is allowed");
    is_int(gl_exit_status(GL_ECORRUPT), GL_EXIT_INVALID, "corrupt data exits 3");
    is_int(gl_exit_status(GL_EIO), GL_EXIT_FAIL, "I/O failure exits 1");
    ok(strcmp(gl_strerror(GL_EVERSION), "unknown error") != 0, "every code has a name");

    /* numbers */
    uint64_t v = 0;
    ok(gl_parse_u64("123", &v) == 0 && v == 123, "parse 123");
    ok(gl_parse_u64("4k", &v) == 0 && v == 4000, "parse 4k");
    ok(gl_parse_u64("2M", &v) == 0 && v == 2000000, "parse 2M");
    ok(gl_parse_u64("-1", &v) == -1, "reject negative");
    ok(gl_parse_u64("12x", &v) == -1, "reject trailing junk");
    ok(gl_parse_u64("", &v) == -1, "reject empty");
    ok(gl_parse_u64("99999999999999999999", &v) == -1, "reject overflow");
    ok(gl_parse_u64("18446744073709551615", &v) == 0 && v == UINT64_MAX, "accept UINT64_MAX");
    ok(gl_parse_u64("20000000000000T", &v) == -1, "reject suffix overflow");

    /* atomic writes */
    const char *dir = tap_tmpdir();
    char *path = gl_path_join(dir, "a.txt");
    ok(gl_write_file_atomic(path, "hello", 5, &err) == 0, "atomic write");
    char *data;
    size_t len;
    ok(gl_read_file(path, 100, &data, &len, &err) == 0 && len == 5 && !memcmp(data, "hello", 5),
       "read back what was written");
    free(data);
    ok(gl_write_file_atomic(path, "bye", 3, &err) == 0, "atomic overwrite");
    ok(gl_read_file(path, 100, &data, &len, &err) == 0 && len == 3 && !strcmp(data, "bye"), "new content whole");
    free(data);
    ok(gl_read_file(path, 3, &data, &len, &err) == 0 && len == 3, "file of exactly the limit is read");
    free(data);
    ok(gl_read_file(path, 2, &data, &len, &err) == GL_ERANGE && data == NULL, "over the limit is an error");
    ok(strstr(err.msg, "a.txt") != NULL, "error names the file");
    char *missing = gl_path_join(dir, "missing");
    ok(gl_read_file(missing, 10, &data, &len, &err) == GL_ENOTFOUND, "missing file is GL_ENOTFOUND");

    gl_atomic_file_t af;
    ok(gl_atomic_open(&af, missing, &err) == 0, "atomic open");
    fputs("partial", af.f);
    fflush(af.f);
    struct stat st;
    ok(stat(missing, &st) < 0, "final name absent before commit");
    gl_atomic_abort(&af);
    ok(stat(missing, &st) < 0, "abort leaves nothing");
    char *sub = gl_path_join(dir, "x/y/z");
    ok(gl_mkdir_p(sub, &err) == 0 && stat(sub, &st) == 0 && S_ISDIR(st.st_mode), "mkdir -p");
    ok(gl_mkdir_p(sub, &err) == 0, "mkdir -p of an existing folder");
    ok(gl_mkdir_p(path, &err) != 0, "mkdir -p over a file fails");
    free(sub);
    free(missing);
    free(path);

    /* progress line */
    gl_progress_t p;
    gl_progress_start(&p, "pack", "files", 200, 0);
    p.items = 50;
    char line[256];
    gl_progress_format(&p, p.t0 + 10.0, line, sizeof line);
    ok(strstr(line, "25.0%") != NULL, "percent done: %s", line);
    ok(strstr(line, "5.00 files/s") != NULL, "rate: %s", line);
    ok(strstr(line, "ETA 0:30") != NULL, "ETA from rate: %s", line);
    /* metrics: one HELP/TYPE per family, labels escaped, atomic file */
    {
        const char *dir = tap_tmpdir();
        char *path = gl_path_join(dir, "m.prom");
        gl_metrics_t m;
        const char *bad[] = {"9x", "v", NULL};
        ok(gl_metrics_init(&m, path, 1, bad, &err) == GL_EINVAL, "a bad label name is refused");
        const char *labels[] = {"rank", "3", "note", "a\"b\\c\nd", NULL};
        is_int(gl_metrics_init(&m, path, 60, labels, &err), GL_OK, "metrics init");
        ok(gl_metrics_due(&m), "due before the first write");
        gl_metrics_begin(&m);
        gl_metrics_add(&m, "gptline_x_total", GL_METRIC_COUNTER, "Things\ncounted.", "kind", "a", 3);
        gl_metrics_add(&m, "gptline_x_total", GL_METRIC_COUNTER, "ignored", "kind", "b", 12345678901.0);
        gl_metrics_add(&m, "gptline_y", GL_METRIC_GAUGE, "A gauge.", NULL, NULL, 0.5);
        is_int(gl_metrics_write(&m, &err), GL_OK, "metrics write");
        ok(!gl_metrics_due(&m), "not due right after a write");
        char *text = NULL;
        size_t len;
        gl_read_file(path, 1 << 20, &text, &len, &err);
        is_str(text,
               "# HELP gptline_x_total Things\\ncounted.\n"
               "# TYPE gptline_x_total counter\n"
               "gptline_x_total{rank=\"3\",note=\"a\\\"b\\\\c\\nd\",kind=\"a\"} 3\n"
               "gptline_x_total{rank=\"3\",note=\"a\\\"b\\\\c\\nd\",kind=\"b\"} 12345678901\n"
               "# HELP gptline_y A gauge.\n"
               "# TYPE gptline_y gauge\n"
               "gptline_y{rank=\"3\",note=\"a\\\"b\\\\c\\nd\"} 0.5\n",
               "the exposition: HELP/TYPE once per family, values escaped");
        free(text);
        gl_metrics_begin(&m);
        gl_metrics_add(&m, "gptline_z", GL_METRIC_GAUGE, "Z.", NULL, NULL, (double)INFINITY);
        gl_metrics_write(&m, &err);
        gl_read_file(path, 1 << 20, &text, &len, &err);
        ok(text && strstr(text, "gptline_z{rank=\"3\",note=\"a\\\"b\\\\c\\nd\"} +Inf\n"), "rewritten whole; +Inf");
        free(text);
        char *tmp = gl_path_join(dir, "m.prom.tmp");
        struct stat sb;
        char tmpn[600];
        snprintf(tmpn, sizeof tmpn, "%s.%ld", tmp, (long)getpid());
        ok(stat(tmpn, &sb) != 0, "no temporary file left");
        free(tmp);
        gl_metrics_free(&m);
        char *np = gl_path_join(dir, "no/such/dir/m.prom");
        gl_metrics_init(&m, np, 1, NULL, &err);
        gl_metrics_begin(&m);
        ok(gl_metrics_write(&m, &err) == GL_EIO, "an unwritable path is an error");
        gl_metrics_free(&m);
        free(np);
        setenv("GPTLINE_METRICS_DIR", dir, 1);
        char *p2 = gl_metrics_path(NULL, "gptline-x.prom");
        ok(p2 && strstr(p2, "/gptline-x.prom"), "GPTLINE_METRICS_DIR gives the default path");
        free(p2);
        p2 = gl_metrics_path("given.prom", "gptline-x.prom");
        is_str(p2, "given.prom", "the option wins over the folder");
        free(p2);
        unsetenv("GPTLINE_METRICS_DIR");
        ok(gl_metrics_path(NULL, "x") == NULL, "no option, no folder: no metrics");
        free(path);
    }

    return tap_done();
}
