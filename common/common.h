/* common.h — the small shared conventions every gptline component uses.
 *
 * One error type (gl_err_t) carrying a code and a message that names the
 * file, record or peer at fault; logging and a progress line for the
 * command layer; getopt_long subcommand dispatch; atomic file writes.
 *
 * Libraries return errors, they never print or exit. Only main() and the
 * command layer (the *_cmd functions) print and choose the exit status.
 */
#ifndef GL_COMMON_H
#define GL_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GL_VERSION "0.1.0"

/* ---- errors ----------------------------------------------------------- */

/* Error codes. Numbers are never reused. */
typedef enum {
    GL_OK = 0,
    GL_EINVAL = 1,       /* invalid argument or option */
    GL_EIO = 2,          /* operating-system I/O failure (errno in message) */
    GL_ENOMEM = 3,       /* allocation failed */
    GL_ECORRUPT = 4,     /* data failed validation: bad magic, size, checksum */
    GL_EVERSION = 5,     /* format version this build does not read */
    GL_ENOTFOUND = 6,    /* file, key or record does not exist */
    GL_EEXIST = 7,       /* already exists */
    GL_EDB = 8,          /* LMDB returned an error (its message included) */
    GL_EMISMATCH = 9,    /* inputs disagree (e.g. shards of different tokenizers) */
    GL_ERANGE = 10,      /* index or size out of range */
    GL_EUNSUPPORTED = 11,/* valid but not supported by this build */
    GL_EINTERRUPTED = 12,/* stopped by a signal */
    GL_EPARSE = 13,      /* malformed outside input */
} gl_code_t;

typedef struct {
    gl_code_t code;
    char msg[480];
} gl_err_t;

/* Sets err (if non-NULL) and returns code, so callers can write
 * `return gl_err_set(err, GL_EIO, "%s: %s", path, strerror(errno));`. */
int gl_err_set(gl_err_t *err, gl_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the existing message with "<prefix>: " (context on the way up). */
int gl_err_prefix(gl_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void gl_err_clear(gl_err_t *err);
/* Static name of a code, e.g. "corrupt data". */
const char *gl_strerror(gl_code_t code);

/* Process exit statuses the command layer uses; scripts may rely on them. */
enum {
    GL_EXIT_OK = 0,
    GL_EXIT_FAIL = 1,     /* the command failed (I/O, bad input, ...) */
    GL_EXIT_USAGE = 2,    /* bad command line */
    GL_EXIT_INVALID = 3,  /* a check found invalid or corrupt data */
};
/* Exit status for an error code (GL_ECORRUPT/GL_EVERSION -> GL_EXIT_INVALID). */
int gl_exit_status(gl_code_t code);

/* ---- memory ----------------------------------------------------------- */

/* malloc/calloc/realloc that abort with a message on exhaustion: used for
 * small bookkeeping allocations where recovery is not meaningful. Large
 * buffers sized by input use plain malloc and return GL_ENOMEM. */
void *gl_xmalloc(size_t n);
void *gl_xcalloc(size_t n, size_t size);
void *gl_xrealloc(void *p, size_t n);
char *gl_xstrdup(const char *s);

/* ---- logging (command layer only) ------------------------------------ */

typedef enum { GL_LOG_ERROR = 0, GL_LOG_WARN, GL_LOG_INFO, GL_LOG_DEBUG } gl_log_level_t;

/* Default level is INFO, or GPTLINE_LOG=error|warn|info|debug. */
void gl_log_set_level(gl_log_level_t level);
gl_log_level_t gl_log_get_level(void);
void gl_log(gl_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define gl_error(...) gl_log(GL_LOG_ERROR, __VA_ARGS__)
#define gl_warn(...) gl_log(GL_LOG_WARN, __VA_ARGS__)
#define gl_info(...) gl_log(GL_LOG_INFO, __VA_ARGS__)
#define gl_debug(...) gl_log(GL_LOG_DEBUG, __VA_ARGS__)

/* ---- progress line ---------------------------------------------------- */

/* A one-line progress display on stderr: items/s, bytes/s and ETA when a
 * total is known. Redraws at most every 250 ms; prints nothing unless
 * stderr is a terminal (GPTLINE_PROGRESS=1 forces it on, =0 off). */
typedef struct {
    const char *label;
    const char *unit;        /* what an item is: "docs", "merges", ... */
    uint64_t total_items;    /* 0 when unknown */
    uint64_t total_bytes;    /* 0 when unknown */
    uint64_t items, bytes;
    double t0, last_draw;
    int enabled;
    int drawn;
} gl_progress_t;

void gl_progress_start(gl_progress_t *p, const char *label, const char *unit,
                       uint64_t total_items, uint64_t total_bytes);
/* Adds to the counters and redraws if due. Cheap enough to call per item. */
void gl_progress_add(gl_progress_t *p, uint64_t items, uint64_t bytes);
/* Draws the final line (if enabled) and ends it with a newline. */
void gl_progress_finish(gl_progress_t *p);
/* Formats the line into buf (used by the display and by tests). */
void gl_progress_format(const gl_progress_t *p, double now, char *buf, size_t cap);

/* Monotonic seconds. */
double gl_now(void);
/* "1.23 GB" style, into buf; returns buf. */
char *gl_fmt_bytes(double bytes, char *buf, size_t cap);
/* "1:02:03" / "2:03" style duration of s seconds ("--:--" when unknown or
 * absurd), into buf; returns buf. */
char *gl_fmt_eta(double s, char *buf, size_t cap);
/* "12.3M" style count, into buf; returns buf. */
char *gl_fmt_count(double n, char *buf, size_t cap);

/* ---- subcommands ------------------------------------------------------ */

/* A subcommand: run() gets argv with argv[0] = the full command name
 * ("gptline shards stat") and returns a GL_EXIT_* status. */
typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} gl_cmd_t;

/* Dispatches argv[1] to the matching command of the NULL-name-terminated
 * table; handles --help/-h and unknown commands (exit 2). prog is the name
 * of this command level ("gptline" or "gptline shards"). */
int gl_cmd_dispatch(const char *prog, const gl_cmd_t *cmds, int argc, char **argv);
/* Prints the command list of a table (for --help). */
void gl_cmd_print_list(FILE *f, const gl_cmd_t *cmds);
/* Prints "<prog>: <message>\nTry '<prog> --help'." and returns GL_EXIT_USAGE. */
int gl_usage_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "<prog>: <err message>" and returns gl_exit_status(err->code). */
int gl_cmd_fail(const char *prog, const gl_err_t *err);
/* Parses a non-negative integer with optional k/M/G suffix (powers of 1000
 * for counts); returns -1 on malformed input. */
int gl_parse_u64(const char *s, uint64_t *out);
/* An option's integer in 0..2^30, or a float (not NaN), the whole string;
 * -1 on malformed input. */
int gl_parse_int(const char *s, int *out);
int gl_parse_float(const char *s, float *out);

/* ---- files ------------------------------------------------------------ */

/* Writes data to path atomically: a temporary file in the same folder,
 * fsync, rename over path, fsync of the folder. */
int gl_write_file_atomic(const char *path, const void *data, size_t len, gl_err_t *err);

/* An atomic file being written: FILE* on a temporary name; commit makes it
 * appear under the final name, abort removes it. */
typedef struct {
    FILE *f;
    char *path;     /* final name */
    char *tmp;      /* temporary name */
} gl_atomic_file_t;
int gl_atomic_open(gl_atomic_file_t *af, const char *path, gl_err_t *err);
int gl_atomic_commit(gl_atomic_file_t *af, gl_err_t *err);
void gl_atomic_abort(gl_atomic_file_t *af);

/* Renames tmp to path and fsyncs the folder of path. */
int gl_rename_durable(const char *tmp, const char *path, gl_err_t *err);
/* fsyncs the folder that holds path. */
int gl_fsync_parent(const char *path, gl_err_t *err);
/* Reads a whole file. Caller owns *data (free()); a NUL is appended (not
 * counted in *len). Fails with GL_ERANGE past max_len bytes. */
int gl_read_file(const char *path, size_t max_len, char **data, size_t *len, gl_err_t *err);
/* mkdir -p. */
int gl_mkdir_p(const char *path, gl_err_t *err);
/* Joins a folder and a name; caller owns the result. */
char *gl_path_join(const char *dir, const char *name);

/* ---- metrics (Prometheus text format, node_exporter textfile) ---------- */

/* A metrics file: the counters of a long-running command in the Prometheus
 * text exposition format (version 0.0.4), for node_exporter's textfile
 * collector. The command rebuilds the whole exposition each time
 * (gl_metrics_begin, then gl_metrics_add per sample) and gl_metrics_write
 * replaces the file atomically (a temporary name in the same folder, then
 * rename; no fsync: metrics need not survive a crash). Names are
 * gptline_<component>_<name>, counters end in _total. */
typedef enum { GL_METRIC_COUNTER = 0, GL_METRIC_GAUGE } gl_metric_type_t;

typedef struct {
    char *path;          /* the .prom file (owned) */
    char *labels;        /* label pairs added to every sample, formatted (owned) */
    char *buf;           /* the exposition being built (owned) */
    size_t len, cap;
    char last_family[128];
    double interval, last_write; /* seconds between periodic writes */
} gl_metrics_t;

/* Starts a metrics file at path, written at most every interval_s seconds
 * by gl_metrics_due() (<= 0: $GPTLINE_METRICS_INTERVAL, else 5). labels is NULL or a NULL-terminated list of
 * key, value, key, value... added to every sample (values escaped here).
 * Fails (GL_EINVAL) on a label name that is not [a-zA-Z_][a-zA-Z0-9_]*. */
int gl_metrics_init(gl_metrics_t *m, const char *path, double interval_s, const char *const *labels,
                    gl_err_t *err);
/* Frees what init allocated; leaves the file in place. NULL-safe. */
void gl_metrics_free(gl_metrics_t *m);
/* The path from the command line, else $GPTLINE_METRICS_DIR/<name>, else
 * NULL. Caller owns the result. */
char *gl_metrics_path(const char *option, const char *name);
/* 1 when interval seconds have passed since the last write (or none). */
int gl_metrics_due(const gl_metrics_t *m);
/* Empties the exposition. */
void gl_metrics_begin(gl_metrics_t *m);
/* Adds a sample of family `name` (gptline_..., asserted well-formed by the
 * caller). The # HELP and # TYPE lines come before the first sample of a
 * family; the samples of one family must be added one after another.
 * key/value: one extra label for this sample, or NULL. */
void gl_metrics_add(gl_metrics_t *m, const char *name, gl_metric_type_t type, const char *help,
                    const char *key, const char *value, double v);
/* Writes the exposition to the file atomically. */
int gl_metrics_write(gl_metrics_t *m, gl_err_t *err);

#endif
