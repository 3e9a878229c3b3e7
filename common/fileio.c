/* fileio.c — durable file writes and small file helpers.
 *
 * Every artefact gptline writes (checkpoints, vocabularies, manifests) is
 * written to a temporary name in the destination folder, fsynced, renamed
 * over the final name and the folder fsynced, so a reader sees either the
 * old file or the complete new one, even across a crash.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *gl_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = gl_xmalloc(a + b + 2);
    memcpy(p, dir, a);
    size_t n = a;
    if (a && dir[a - 1] != '/')
        p[n++] = '/';
    memcpy(p + n, name, b + 1);
    return p;
}

int gl_fsync_parent(const char *path, gl_err_t *err)
{
    char *copy = gl_xstrdup(path);
    const char *dir = dirname(copy);
    int rc = GL_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) < 0)
        rc = gl_err_set(err, GL_EIO, "%s: fsync of folder failed: %s", dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

int gl_rename_durable(const char *tmp, const char *path, gl_err_t *err)
{
    if (rename(tmp, path) < 0)
        return gl_err_set(err, GL_EIO, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
    return gl_fsync_parent(path, err);
}

static char *tmp_name(const char *path)
{
    size_t n = strlen(path) + 32;
    char *t = gl_xmalloc(n);
    snprintf(t, n, "%s.tmp.%ld", path, (long)getpid());
    return t;
}

int gl_atomic_open(gl_atomic_file_t *af, const char *path, gl_err_t *err)
{
    af->path = gl_xstrdup(path);
    af->tmp = tmp_name(path);
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        int rc = gl_err_set(err, GL_EIO, "%s: cannot create: %s", af->tmp, strerror(errno));
        free(af->path);
        free(af->tmp);
        af->path = af->tmp = NULL;
        return rc;
    }
    return GL_OK;
}

void gl_atomic_abort(gl_atomic_file_t *af)
{
    if (af->f)
        fclose(af->f);
    if (af->tmp)
        unlink(af->tmp);
    free(af->path);
    free(af->tmp);
    af->f = NULL;
    af->path = af->tmp = NULL;
}

int gl_atomic_commit(gl_atomic_file_t *af, gl_err_t *err)
{
    int rc = GL_OK;
    if (fflush(af->f) != 0 || ferror(af->f) || fsync(fileno(af->f)) < 0) {
        rc = gl_err_set(err, GL_EIO, "%s: write failed: %s", af->tmp, strerror(errno));
        gl_atomic_abort(af);
        return rc;
    }
    if (fclose(af->f) != 0) {
        af->f = NULL;
        rc = gl_err_set(err, GL_EIO, "%s: close failed: %s", af->tmp, strerror(errno));
        gl_atomic_abort(af);
        return rc;
    }
    af->f = NULL;
    rc = gl_rename_durable(af->tmp, af->path, err);
    if (rc)
        unlink(af->tmp);
    free(af->path);
    free(af->tmp);
    af->path = af->tmp = NULL;
    return rc;
}

int gl_write_file_atomic(const char *path, const void *data, size_t len, gl_err_t *err)
{
    gl_atomic_file_t af;
    int rc = gl_atomic_open(&af, path, err);
    if (rc)
        return rc;
    if (len && fwrite(data, 1, len, af.f) != len) {
        rc = gl_err_set(err, GL_EIO, "%s: write failed: %s", af.tmp, strerror(errno));
        gl_atomic_abort(&af);
        return rc;
    }
    return gl_atomic_commit(&af, err);
}

int gl_read_file(const char *path, size_t max_len, char **data, size_t *len, gl_err_t *err)
{
    *data = NULL;
    *len = 0;
    int rc = GL_OK;
    FILE *f = fopen(path, "rb");
    if (!f)
        return gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: cannot open: %s", path,
                          strerror(errno));
    size_t cap = max_len < (1 << 16) ? max_len : (1 << 16), n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap >= max_len) {
                if (fgetc(f) == EOF)
                    break;
                rc = gl_err_set(err, GL_ERANGE, "%s: larger than the limit of %zu bytes", path, max_len);
                goto out;
            }
            size_t ncap = cap * 2 > max_len ? max_len : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                rc = gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = gl_err_set(err, GL_EIO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
    }
out:
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return GL_OK;
}

int gl_mkdir_p(const char *path, gl_err_t *err)
{
    char *p = gl_xstrdup(path);
    int rc = GL_OK;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0777) < 0 && errno != EEXIST) {
                rc = gl_err_set(err, GL_EIO, "%s: cannot create folder: %s", p, strerror(errno));
                break;
            }
            *s = c;
            if (!c)
                break;
        }
    }
    if (!rc) {
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
            rc = gl_err_set(err, GL_EIO, "%s: not a folder", path);
    }
    free(p);
    return rc;
}
