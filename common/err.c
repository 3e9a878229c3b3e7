/* err.c — the project-wide error type and checked allocation.
 *
 * An error is a code plus a message that names what was at fault. Messages
 * are built bottom-up: the place that detects a problem writes the detail
 * ("shard-000.mdb: checksum mismatch"), callers may prefix context.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

int gl_err_set(gl_err_t *err, gl_code_t code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return (int)code;
}

int gl_err_prefix(gl_err_t *err, const char *fmt, ...)
{
    if (!err)
        return GL_OK;
    char prefix[sizeof err->msg], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* prefix + ": " + old, cut to fit (a long message loses its tail). */
    size_t a = strlen(prefix), b = strlen(old), cap = sizeof err->msg - 1;
    if (a > cap)
        a = cap;
    memcpy(err->msg, prefix, a);
    size_t n = a;
    for (const char *sep = ": "; *sep && n < cap; sep++)
        err->msg[n++] = *sep;
    if (b > cap - n)
        b = cap - n;
    memcpy(err->msg + n, old, b);
    err->msg[n + b] = '\0';
    return (int)err->code;
}

void gl_err_clear(gl_err_t *err)
{
    if (err) {
        err->code = GL_OK;
        err->msg[0] = '\0';
    }
}

const char *gl_strerror(gl_code_t code)
{
    switch (code) {
    case GL_OK: return "success";
    case GL_EINVAL: return "invalid argument";
    case GL_EIO: return "I/O error";
    case GL_ENOMEM: return "out of memory";
    case GL_ECORRUPT: return "corrupt data";
    case GL_EVERSION: return "unsupported format version";
    case GL_ENOTFOUND: return "not found";
    case GL_EEXIST: return "already exists";
    case GL_EDB: return "database error";
    case GL_EMISMATCH: return "inputs do not match";
    case GL_ERANGE: return "out of range";
    case GL_EUNSUPPORTED: return "not supported";
    case GL_EINTERRUPTED: return "interrupted";
    case GL_EPARSE: return "malformed input";
    }
    return "unknown error";
}

int gl_exit_status(gl_code_t code)
{
    switch (code) {
    case GL_OK: return GL_EXIT_OK;
    case GL_ECORRUPT:
    case GL_EVERSION: return GL_EXIT_INVALID;
    case GL_EINVAL: return GL_EXIT_USAGE;
    default: return GL_EXIT_FAIL;
    }
}

static void oom(size_t n)
{
    fprintf(stderr, "gptline: out of memory allocating %zu bytes\n", n);
    abort();
}

void *gl_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *gl_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *gl_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *gl_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = gl_xmalloc(n);
    memcpy(d, s, n);
    return d;
}
