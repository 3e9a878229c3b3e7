/* tap.h — a minimal TAP producer for gptline's C tests, run by prove.
 *
 * Each check prints "ok N - name" or "not ok N - name" with the file and
 * line of the failure; tap_done() prints the plan and returns the exit
 * status (non-zero when any check failed), so `return tap_done();` ends
 * every test's main.
 */
#ifndef GL_TAP_H
#define GL_TAP_H

#include <stdint.h>

int tap_check(int cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Skips the whole test with a reason (prints "1..0 # SKIP ..." and exits 0). */
void tap_skip_all(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tap_skip(int n, const char *reason);
int tap_done(void);
int tap_failed(void);

/* A fresh private folder for this test, removed by tap_done() unless
 * GL_KEEP_TMP is set. */
const char *tap_tmpdir(void);
/* Path of a file in the shared test data folder (GL_DATA), or NULL when the
 * folder is absent. Caller owns the result. */
char *tap_data_path(const char *rel);

#define ok(cond, ...) tap_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, ...)                                                      \
    do {                                                                            \
        long long g_ = (long long)(got), w_ = (long long)(want);                    \
        if (!tap_check(g_ == w_, __FILE__, __LINE__, __VA_ARGS__))                  \
            tap_diag("     got: %lld\n  expected: %lld", g_, w_);                   \
    } while (0)
#define is_str(got, want, ...)                                                      \
    do {                                                                            \
        const char *g_ = (got), *w_ = (want);                                       \
        int e_ = g_ && w_ && !strcmp(g_, w_);                                       \
        if (!tap_check(e_, __FILE__, __LINE__, __VA_ARGS__))                        \
            tap_diag("     got: '%s'\n  expected: '%s'", g_ ? g_ : "(null)",        \
                     w_ ? w_ : "(null)");                                           \
    } while (0)

#endif
