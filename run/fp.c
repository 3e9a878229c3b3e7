/* fp.c — fingerprints of the files and folders stages read and write.
 *
 * A fingerprint is a 64-bit XXH3 over content, never over times alone, so
 * that a rerun skips only what is really unchanged. To stay cheap on the
 * large artefacts a pipeline moves around:
 *
 *   - a sealed shard (*.mdb with a valid trailer) is fingerprinted by its
 *     64-byte trailer, which holds the length and XXH3-64 of the shard
 *     written when it was sealed; shards are never changed in place;
 *   - a small file (up to 1 MiB) is hashed whole, every time;
 *   - a large file (checkpoints, raw crawl archives) is hashed whole once;
 *     its hash is cached with its size, mtime, ctime and inode, and reused
 *     while all four are unchanged and its last change is at least two
 *     seconds older than the hashing was (as git does against coarse
 *     timestamps). A write to a file always moves its ctime, which no user
 *     tool can set back, so a stale cache entry is never trusted.
 *
 * A folder's fingerprint hashes its entries in name order, recursively:
 * relative name, then the entry's fingerprint. Writers' temporaries
 * (*.tmp) and LMDB lock files are left out: readers ignore them too.
 */
#include "run/internal.h"
#include "shards/shards.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define SMALL_FILE (1u << 20)
#define CACHE_SLACK_NS 2000000000LL

static int64_t ns_of(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return ns_of(t);
}

static int hash_fd(int fd, const char *path, uint64_t *out, gl_err_t *err)
{
    XXH3_state_t *h = XXH3_createState();
    XXH3_64bits_reset(h);
    size_t cap = 1u << 20;
    char *buf = gl_xmalloc(cap);
    int rc = GL_OK;
    for (;;) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = gl_err_set(err, GL_EIO, "%s: %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        XXH3_64bits_update(h, buf, (size_t)n);
    }
    *out = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    free(buf);
    return rc;
}

/* Content hash of a regular file, through the cache for large ones. */
static int fp_file(const char *path, json_t *cache, uint64_t *fp, gl_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return gl_err_set(err, GL_EIO, "%s: %s", path, strerror(errno));
    }
    int big = cache && st.st_size > SMALL_FILE;
    if (big) {
        json_int_t sz, mt, ct, ino, at;
        const char *hex;
        json_t *e = json_object_get(cache, path);
        if (e && !json_unpack(e, "[I,I,I,I,s,I]", &sz, &mt, &ct, &ino, &hex, &at) && sz == st.st_size &&
            mt == ns_of(st.st_mtim) && ct == ns_of(st.st_ctim) && ino == (json_int_t)st.st_ino &&
            ct + CACHE_SLACK_NS < at && mt + CACHE_SLACK_NS < at) {
            close(fd);
            *fp = strtoull(hex, NULL, 16);
            return GL_OK;
        }
    }
    int64_t at = now_ns();
    int rc = hash_fd(fd, path, fp, err);
    close(fd);
    if (!rc && big) {
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)*fp);
        json_object_set_new(cache, path,
                            json_pack("[I,I,I,I,s,I]", (json_int_t)st.st_size, (json_int_t)ns_of(st.st_mtim),
                                      (json_int_t)ns_of(st.st_ctim), (json_int_t)st.st_ino, hex, (json_int_t)at));
    }
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* A shard by its trailer; anything else named *.mdb by content. */
static int fp_shard_or_file(const char *path, json_t *cache, uint64_t *fp, gl_err_t *err)
{
    if (ends_with(path, SHARD_SUFFIX)) {
        gl_err_t e2 = {0};
        int rc = shard_file_fingerprint(path, fp, &e2);
        if (rc == GL_OK)
            return GL_OK;
        if (rc == GL_ENOTFOUND || rc == GL_EIO) {
            *err = e2;
            return rc;
        }
    }
    return fp_file(path, cache, fp, err);
}

static void mix(XXH3_state_t *h, const char *name, uint64_t fp)
{
    XXH3_64bits_update(h, name, strlen(name) + 1);
    XXH3_64bits_update(h, &fp, sizeof fp);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int skipped(const char *name)
{
    return !strcmp(name, ".") || !strcmp(name, "..") || ends_with(name, ".tmp") || !strcmp(name, "lock.mdb") ||
           ends_with(name, "-lock");
}

/* Sorted entry names of a folder. Caller frees each and the array. */
static int list_dir(const char *dir, char ***names, size_t *n, gl_err_t *err)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (skipped(e->d_name))
            continue;
        *names = gl_xrealloc(*names, (*n + 1) * sizeof **names);
        (*names)[(*n)++] = gl_xstrdup(e->d_name);
    }
    closedir(d);
    if (*n)
        qsort(*names, *n, sizeof **names, cmp_str);
    return GL_OK;
}

static int fp_tree(const char *dir, const char *rel, XXH3_state_t *h, json_t *cache, gl_err_t *err)
{
    char **names;
    size_t n;
    int rc = list_dir(dir, &names, &n, err);
    for (size_t i = 0; !rc && i < n; i++) {
        char *p = gl_path_join(dir, names[i]);
        char *r = rel[0] ? gl_path_join(rel, names[i]) : gl_xstrdup(names[i]);
        struct stat st;
        if (stat(p, &st) < 0) {
            if (errno != ENOENT) /* a dangling link or a file removed meanwhile counts as absent */
                rc = gl_err_set(err, GL_EIO, "%s: %s", p, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            mix(h, r, 0x6469720a); /* "dir" */
            rc = fp_tree(p, r, h, cache, err);
        } else if (S_ISREG(st.st_mode)) {
            uint64_t f;
            rc = fp_shard_or_file(p, cache, &f, err);
            if (!rc)
                mix(h, r, f);
        }
        free(p), free(r);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static int fp_tree_top(const char *dir, json_t *cache, uint64_t *fp, gl_err_t *err)
{
    XXH3_state_t *h = XXH3_createState();
    XXH3_64bits_reset(h);
    mix(h, "tree", 0);
    int rc = fp_tree(dir, "", h, cache, err);
    *fp = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    return rc;
}

static int fp_dataset(const char *dir, uint64_t *fp, gl_err_t *err)
{
    char **paths;
    size_t n;
    int rc = shard_list(dir, &paths, &n, NULL, err);
    if (rc)
        return rc;
    XXH3_state_t *h = XXH3_createState();
    XXH3_64bits_reset(h);
    mix(h, "dataset", n);
    for (size_t i = 0; !rc && i < n; i++) {
        uint64_t f;
        rc = shard_file_fingerprint(paths[i], &f, err);
        if (!rc)
            mix(h, strrchr(paths[i], '/') + 1, f);
    }
    *fp = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    shard_list_free(paths, n);
    return rc;
}

/* A checkpoint: a file; a folder with model.safetensors; or a run's output
 * folder, by the checkpoint its `latest` names. */
static int fp_ckpt(const char *path, json_t *cache, uint64_t *fp, gl_err_t *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fp_file(path, cache, fp, err);
    char *model = gl_path_join(path, "model.safetensors");
    int has_model = stat(model, &st) == 0;
    free(model);
    if (has_model)
        return fp_tree_top(path, cache, fp, err);
    char *lp = gl_path_join(path, "latest"), *name = NULL;
    size_t len;
    int rc = gl_read_file(lp, 256, &name, &len, err);
    free(lp);
    if (rc) {
        if (rc == GL_ENOTFOUND)
            gl_err_set(err, GL_ENOTFOUND, "%s: no checkpoint (no latest)", path);
        return rc;
    }
    while (len && (name[len - 1] == '\n' || name[len - 1] == ' '))
        name[--len] = '\0';
    if (!len || strchr(name, '/')) {
        rc = gl_err_set(err, GL_ENOTFOUND, "%s/latest: does not name a checkpoint", path);
    } else {
        char *dir = gl_path_join(path, name);
        uint64_t f = 0;
        rc = fp_tree_top(dir, cache, &f, err);
        free(dir);
        *fp = XXH3_64bits_withSeed(name, len, f);
    }
    free(name);
    return rc;
}

int run_fingerprint(const char *path, run_fp_kind_t kind, json_t *cache, uint64_t *fp, gl_err_t *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", path,
                          errno == ENOENT ? "missing" : strerror(errno));
    switch (kind) {
    case RUN_FP_FILE: return fp_file(path, cache, fp, err);
    case RUN_FP_TREE: return S_ISDIR(st.st_mode) ? fp_tree_top(path, cache, fp, err) : fp_file(path, cache, fp, err);
    case RUN_FP_DATASET: return fp_dataset(path, fp, err);
    case RUN_FP_CKPT: return fp_ckpt(path, cache, fp, err);
    case RUN_FP_AUTO:
    default: return S_ISDIR(st.st_mode) ? fp_tree_top(path, cache, fp, err) : fp_shard_or_file(path, cache, fp, err);
    }
}
