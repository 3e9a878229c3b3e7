/* pipeline.c — the pipeline file: INI through libinih, the stage table,
 * references between stages, the dependency order and each stage's
 * command lines.
 *
 * libinih does the INI syntax (sections, key = value, ';'/'#' comments,
 * indented continuation lines); the text reaches it through our own line
 * reader, which counts lines (so every message says FILE:LINE), sees each
 * section header (so an empty section such as "[dedup]" still names a
 * stage) and refuses a line longer than the library's buffer instead of
 * letting it be split in two.
 *
 * Each stage kind is a row of `kinds` below: the gptline subcommand it
 * runs, its known keys (the option each becomes, how a path in it is
 * fingerprinted, its default) and how it resumes. A key that the kind does
 * not know is passed through as "--key value" ("--key" for true, nothing
 * for false), so a new option of a command needs no change here. A value
 * "@NAME" or "@NAME/sub/path" is the output of stage NAME: it adds the
 * dependency, and the path it names is fingerprinted as an input.
 */
#include "run/internal.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    K_REQ = 1,       /* required (after defaults) */
    K_LIST = 2,      /* whitespace-separated list; the option is repeated per item */
    K_POS = 4,       /* positional, after the options */
    K_INTERNAL = 8,  /* read by the builder, not written as an option */
};

typedef struct {
    const char *key;
    const char *opt;      /* the command's option; NULL for K_POS / K_INTERNAL */
    run_fp_kind_t fp;     /* how a path in it is fingerprinted; NONE: not a path */
    int flags;
    const char *def;      /* default: alternatives "a|b"; "@X..." applies when stage X exists */
} key_spec_t;

struct stage_kind {
    const char *kind;
    const char *cmd[4];
    const char *out_opt;  /* option naming the output; NULL: built specially */
    run_fp_kind_t out_fp;
    const char *out_ext;  /* extension of the default output name */
    run_resume_t resume;
    int train;
    key_spec_t keys[8];
};

#define TRAIN_KEYS(data_def, init_def)                                                                    \
    {{"data", "--data", RUN_FP_DATASET, K_REQ, data_def}, {"val", "--val", RUN_FP_DATASET, 0, NULL},        \
     {"init", "--init", RUN_FP_CKPT, 0, init_def}}

/* In the canonical order, which breaks ties in the execution order. */
static const stage_kind_t kinds[] = {
    {"ingest", {"ingest"}, "--out", RUN_FP_TREE, "", RUN_RESUME_RELAUNCH, 0,
     {{"inputs", NULL, RUN_FP_FILE, K_LIST | K_INTERNAL, NULL},
      {"inputs-from", NULL, RUN_FP_NONE, K_INTERNAL, NULL},
      {"tokenizer", "--tokenizer", RUN_FP_FILE, 0, "bytes"}}},
    {"tokenizer", {"tokenizer", "train"}, "--output", RUN_FP_FILE, ".gltok", RUN_RESUME_NONE, 0,
     {{"vocab-size", "--vocab-size", RUN_FP_NONE, K_REQ, NULL},
      {"shards", "--shards", RUN_FP_DATASET, 0, NULL},
      {"shards-tokenizer", "--shards-tokenizer", RUN_FP_FILE, 0, NULL},
      {"input", NULL, RUN_FP_AUTO, K_LIST | K_POS, NULL}}},
    {"shards", {"shards", "pack"}, "--output", RUN_FP_TREE, "", RUN_RESUME_NONE, 0,
     {{"tokenizer", "--tokenizer", RUN_FP_FILE, 0, "@tokenizer|bytes"},
      {"input", NULL, RUN_FP_AUTO, K_LIST | K_POS | K_REQ, NULL}}},
    {"import", {"shards", "import"}, "--output", RUN_FP_TREE, "", RUN_RESUME_NONE, 0,
     {{"kind", "--kind", RUN_FP_NONE, K_REQ, NULL},
      {"tokenizer", "--tokenizer", RUN_FP_FILE, K_REQ, "@tokenizer"},
      {"input", NULL, RUN_FP_AUTO, K_LIST | K_POS | K_REQ, NULL}}},
    {"dedup", {"ingest", "dedup"}, NULL, RUN_FP_TREE, "", RUN_RESUME_NONE, 0,
     {{"data", NULL, RUN_FP_TREE, K_POS | K_REQ, "@ingest"}}},
    {"pretrain", {"train", "pretrain"}, "--out", RUN_FP_CKPT, "", RUN_RESUME_TRAIN, 1,
     TRAIN_KEYS("@dedup|@ingest|@shards", NULL)},
    {"label-export", {"label", "admin", "export"}, NULL, RUN_FP_TREE, "", RUN_RESUME_NONE, 0,
     {{"db", "--db", RUN_FP_TREE, K_REQ, NULL},
      {"kinds", NULL, RUN_FP_NONE, K_LIST | K_INTERNAL, "sft rm"},
      {"tokenizer", "--tokenizer", RUN_FP_FILE, 0, "@tokenizer|bytes"}}},
    {"sft", {"train", "sft"}, "--out", RUN_FP_CKPT, "", RUN_RESUME_TRAIN, 1,
     TRAIN_KEYS("@label-export/sft", "@pretrain")},
    {"rm", {"train", "rm"}, "--out", RUN_FP_CKPT, "", RUN_RESUME_TRAIN, 1,
     TRAIN_KEYS("@label-export/rm", "@sft|@pretrain")},
    {"rl", {"train", "rl"}, "--out", RUN_FP_CKPT, "", RUN_RESUME_TRAIN, 1,
     {{"policy", "--policy", RUN_FP_CKPT, K_REQ, "@sft"},
      {"reward", "--reward", RUN_FP_CKPT, K_REQ, "@rm"},
      {"prompts", "--prompts", RUN_FP_DATASET, K_REQ, NULL}}},
};
#define NKINDS (sizeof kinds / sizeof *kinds)

/* ---- small helpers ------------------------------------------------------- */

static int perr(gl_err_t *err, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int perr(gl_err_t *err, const char *file, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        return gl_err_set(err, GL_EPARSE, "%s:%d: %s", file, line, msg);
    return gl_err_set(err, GL_EPARSE, "%s: %s", file, msg);
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = gl_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static const stage_kind_t *kind_of(const char *section)
{
    size_t n = strcspn(section, ".");
    for (size_t i = 0; i < NKINDS; i++)
        if (strlen(kinds[i].kind) == n && !strncmp(kinds[i].kind, section, n))
            return &kinds[i];
    return NULL;
}

static const key_spec_t *spec_of(const stage_kind_t *k, const char *key)
{
    for (const key_spec_t *s = k->keys; s->key; s++)
        if (!strcmp(s->key, key))
            return s;
    return NULL;
}

const char *run_kv_get(const run_stage_t *s, const char *key)
{
    for (size_t i = 0; i < s->nkv; i++)
        if (!strcmp(s->kv[i].key, key))
            return s->kv[i].value;
    return NULL;
}

static const run_kv_t *kv_find(const run_stage_t *s, const char *key)
{
    for (size_t i = 0; i < s->nkv; i++)
        if (!strcmp(s->kv[i].key, key))
            return &s->kv[i];
    return NULL;
}

/* Splits on blanks. Caller frees each item and the array. */
static char **split_ws(const char *s, size_t *n)
{
    char **v = NULL;
    *n = 0;
    while (*s) {
        while (*s && isspace((unsigned char)*s))
            s++;
        if (!*s)
            break;
        size_t m = 0;
        while (s[m] && !isspace((unsigned char)s[m]))
            m++;
        v = gl_xrealloc(v, (*n + 1) * sizeof *v);
        v[*n] = gl_xmalloc(m + 1);
        memcpy(v[*n], s, m);
        v[(*n)++][m] = '\0';
        s += m;
    }
    return v;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* path made absolute against dir, with "." and ".." parts and repeated
 * slashes folded, so that equal places compare equal. Caller frees. */
static char *abs_path(const char *dir, const char *path)
{
    char *full = path[0] == '/' ? gl_xstrdup(path) : gl_path_join(dir, path);
    size_t n = strlen(full);
    char *out = gl_xmalloc(n + 2);
    size_t o = 0;
    for (const char *p = full; *p;) {
        while (*p == '/')
            p++;
        size_t m = strcspn(p, "/");
        if (!m)
            break;
        if (m == 1 && p[0] == '.') {
        } else if (m == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else {
            out[o++] = '/';
            memcpy(out + o, p, m);
            o += m;
        }
        p += m;
    }
    if (!o)
        out[o++] = '/';
    out[o] = '\0';
    free(full);
    return out;
}

static int is_true(const char *v)
{
    return !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on");
}

static int is_false(const char *v)
{
    return !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off");
}

static int valid_key(const char *k)
{
    if (!islower((unsigned char)k[0]) && !isdigit((unsigned char)k[0]))
        return 0;
    for (const char *c = k; *c; c++)
        if (!islower((unsigned char)*c) && !isdigit((unsigned char)*c) && *c != '-')
            return 0;
    return 1;
}

static int valid_stage_name(const char *n)
{
    if (!*n || strlen(n) > 64)
        return 0;
    for (const char *c = n; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_' && *c != '.')
            return 0;
    return n[strlen(n) - 1] != '.';
}

/* ---- INI reading ------------------------------------------------------- */

typedef struct {
    run_pipeline_t *p;
    const char *file;          /* for messages */
    const char *text;
    size_t len, pos;
    int line;                  /* number of the line inih is looking at */
    int cont;                  /* that line is indented (a continuation) */
    int have_key;              /* a key was seen since the last section header */
    int in_pipeline;           /* the current section is [pipeline] */
    int seen_pipeline;
    run_stage_t *cur;          /* the current stage section */
    run_kv_t *gkv;             /* [pipeline]'s keys */
    size_t ngkv;
    gl_err_t *err;
    int failed;
} parse_t;

static void section_start(parse_t *ps, const char *name)
{
    run_pipeline_t *p = ps->p;
    ps->have_key = 0;
    ps->cur = NULL;
    ps->in_pipeline = 0;
    if (!strcmp(name, "pipeline")) {
        if (ps->seen_pipeline && !ps->failed)
            ps->failed = perr(ps->err, ps->file, ps->line, "section [pipeline] appears twice");
        ps->seen_pipeline = ps->in_pipeline = 1;
        return;
    }
    if (ps->failed)
        return;
    if (!kind_of(name)) {
        ps->failed = perr(ps->err, ps->file, ps->line,
                          "unknown stage [%s]: stages are ingest, tokenizer, shards, import, dedup, "
                          "pretrain, label-export, sft, rm, rl (or KIND.NAME)",
                          name);
        return;
    }
    if (!valid_stage_name(name)) {
        ps->failed = perr(ps->err, ps->file, ps->line, "bad stage name [%s] (letters, digits, '-', '_', '.')", name);
        return;
    }
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->st[i].name, name)) {
            ps->failed = perr(ps->err, ps->file, ps->line, "section [%s] appears twice (first on line %d)", name,
                              p->st[i].line);
            return;
        }
    p->st = gl_xrealloc(p->st, (p->n + 1) * sizeof *p->st);
    run_stage_t *s = &p->st[p->n++];
    memset(s, 0, sizeof *s);
    s->name = gl_xstrdup(name);
    s->kind = kind_of(name);
    s->line = ps->line;
    ps->cur = s;
}

/* inih's line source: one line of the text per call. */
static char *reader(char *str, int num, void *stream)
{
    parse_t *ps = stream;
    if (ps->failed || ps->pos >= ps->len)
        return NULL;
    const char *s = ps->text + ps->pos;
    const char *nl = memchr(s, '\n', ps->len - ps->pos);
    size_t n = nl ? (size_t)(nl - s) + 1 : ps->len - ps->pos;
    ps->line++;
    if (memchr(s, '\0', n)) {
        ps->failed = perr(ps->err, ps->file, ps->line, "NUL byte in the line");
        return NULL;
    }
    if (n + 1 > (size_t)num) {
        ps->failed = perr(ps->err, ps->file, ps->line,
                          "line longer than %d characters (continue a long value on indented lines)", num - 2);
        return NULL;
    }
    memcpy(str, s, n);
    str[n] = '\0';
    ps->pos += n;
    ps->cont = n && (s[0] == ' ' || s[0] == '\t');
    /* a section header, seen as inih will see it (an indented line after a
     * key continues that key's value instead) */
    const char *t = s;
    while (t < s + n && (*t == ' ' || *t == '\t'))
        t++;
    if (t < s + n && *t == '[' && !(ps->cont && ps->have_key)) {
        const char *e = memchr(t, ']', (size_t)(s + n - t));
        if (e) {
            char name[256];
            size_t m = (size_t)(e - t - 1);
            if (m >= sizeof name)
                m = sizeof name - 1;
            memcpy(name, t + 1, m);
            name[m] = '\0';
            /* inih strips blanks around the name too */
            char *a = name;
            while (*a == ' ' || *a == '\t')
                a++;
            size_t k = strlen(a);
            while (k && (a[k - 1] == ' ' || a[k - 1] == '\t'))
                a[--k] = '\0';
            section_start(ps, a);
        }
    }
    return str;
}

static void kv_add(run_kv_t **kv, size_t *n, const char *key, const char *value, int line)
{
    *kv = gl_xrealloc(*kv, (*n + 1) * sizeof **kv);
    (*kv)[*n] = (run_kv_t){gl_xstrdup(key), gl_xstrdup(value), line};
    (*n)++;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
    parse_t *ps = user;
    if (ps->failed)
        return 0;
    if (!section[0]) {
        ps->failed = perr(ps->err, ps->file, ps->line, "'%s' outside a section: start with [pipeline] or a stage", key);
        return 0;
    }
    run_kv_t **kv;
    size_t *n;
    if (ps->in_pipeline) {
        kv = &ps->gkv, n = &ps->ngkv;
    } else if (ps->cur) {
        kv = &ps->cur->kv, n = &ps->cur->nkv;
    } else {
        return 1; /* a section already refused */
    }
    if (ps->cont && ps->have_key && *n && !strcmp((*kv)[*n - 1].key, key)) {
        run_kv_t *last = &(*kv)[*n - 1];
        char *v = last->value[0] ? xasprintf("%s %s", last->value, value) : gl_xstrdup(value);
        free(last->value);
        last->value = v;
        return 1;
    }
    if (!valid_key(key)) {
        ps->failed = perr(ps->err, ps->file, ps->line, "bad key '%s' (lower-case letters, digits and '-')", key);
        return 0;
    }
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*kv)[i].key, key)) {
            ps->failed = perr(ps->err, ps->file, ps->line, "'%s' given twice in [%s] (first on line %d)", key, section,
                              (*kv)[i].line);
            return 0;
        }
    kv_add(kv, n, key, value, ps->line);
    ps->have_key = 1;
    return 1;
}

/* ---- resolution ---------------------------------------------------------- */

static int find_stage(const run_pipeline_t *p, const char *name, size_t len)
{
    for (size_t i = 0; i < p->n; i++)
        if (strlen(p->st[i].name) == len && !strncmp(p->st[i].name, name, len))
            return (int)i;
    return -1;
}

int run_pipeline_find(const run_pipeline_t *p, const char *name)
{
    return find_stage(p, name, strlen(name));
}

/* The default of a key in this pipeline: the first alternative that
 * applies, or NULL. */
static const char *pick_default(const run_pipeline_t *p, const char *def, char *buf, size_t cap)
{
    while (def && *def) {
        size_t m = strcspn(def, "|");
        snprintf(buf, cap, "%.*s", (int)m, def);
        if (buf[0] != '@')
            return buf;
        size_t nl = strcspn(buf + 1, "/");
        int i = find_stage(p, buf + 1, nl);
        if (i >= 0) {
            /* "@label-export/sft": only when that export makes sft */
            const char *sub = buf[1 + nl] == '/' ? buf + 2 + nl : NULL;
            const char *ks = !strcmp(p->st[i].kind->kind, "label-export") && sub ? run_kv_get(&p->st[i], "kinds") : NULL;
            if (!ks || strstr(ks, sub))
                return buf;
        }
        def += m;
        if (*def == '|')
            def++;
    }
    return NULL;
}

static void add_dep(run_stage_t *s, int d)
{
    for (size_t i = 0; i < s->ndeps; i++)
        if (s->deps[i] == d)
            return;
    s->deps = gl_xrealloc(s->deps, (s->ndeps + 1) * sizeof *s->deps);
    s->deps[s->ndeps++] = d;
}

static void add_input(run_stage_t *s, const char *key, const char *path, run_fp_kind_t fp, int from)
{
    s->in = gl_xrealloc(s->in, (s->nin + 1) * sizeof *s->in);
    s->in[s->nin++] = (run_input_t){gl_xstrdup(key), gl_xstrdup(path), fp, from};
    if (from >= 0)
        add_dep(s, from);
}

/* A value item: "@STAGE[/sub]" to that stage's output (*from = its index),
 * else a path against the pipeline's folder. Caller frees. */
static char *resolve_item(run_pipeline_t *p, const char *item, int *from, const char *key, int line, gl_err_t *err)
{
    *from = -1;
    if (item[0] != '@')
        return abs_path(p->dir, item);
    size_t nl = strcspn(item + 1, "/");
    int i = find_stage(p, item + 1, nl);
    if (i < 0) {
        perr(err, p->path, line, "'%s = %s': no stage [%.*s] in this pipeline", key, item, (int)nl, item + 1);
        return NULL;
    }
    *from = i;
    if (!item[1 + nl] || !item[2 + nl])
        return gl_xstrdup(p->st[i].out);
    char *joined = gl_path_join(p->st[i].out, item + 2 + nl);
    char *r = abs_path("/", joined);
    free(joined);
    return r;
}

typedef struct {
    char **v;
    size_t n;
} argv_t;

static void push(argv_t *a, const char *s)
{
    a->v = gl_xrealloc(a->v, (a->n + 2) * sizeof *a->v);
    a->v[a->n++] = gl_xstrdup(s);
    a->v[a->n] = NULL;
}

static void push_cmd(run_stage_t *s, argv_t *a)
{
    s->cmds = gl_xrealloc(s->cmds, (s->ncmds + 1) * sizeof *s->cmds);
    s->cmds[s->ncmds++] = a->v;
    a->v = NULL;
    a->n = 0;
}

/* Reads an ingest input list (one path per line, '#' comments), paths
 * against the list's folder. */
static int read_list(run_pipeline_t *p, const char *path, int line, char ***items, size_t *n, gl_err_t *err)
{
    char *data;
    size_t len;
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return perr(err, p->path, line, "inputs-from: %s is not a file", path);
    int rc = gl_read_file(path, 1u << 30, &data, &len, err);
    if (rc) { /* a missing list is a missing input, not a malformed pipeline */
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return gl_err_set(err, rc, "%s:%d: inputs-from: %s", p->path, line, msg);
    }
    char *dir = gl_xstrdup(path);
    *strrchr(dir, '/') = '\0';
    char *save, *l = strtok_r(data, "\n", &save);
    for (; l; l = strtok_r(NULL, "\n", &save)) {
        size_t m = strlen(l);
        while (m && (l[m - 1] == '\r' || l[m - 1] == ' '))
            l[--m] = 0;
        if (!m || l[0] == '#')
            continue;
        *items = gl_xrealloc(*items, (*n + 1) * sizeof **items);
        (*items)[(*n)++] = abs_path(dir[0] ? dir : "/", l);
    }
    free(dir);
    free(data);
    return GL_OK;
}

/* The effective value of a key: as written, else its default. */
static const char *value_of(const run_pipeline_t *p, const run_stage_t *s, const key_spec_t *k, char *buf, size_t cap)
{
    const char *v = run_kv_get(s, k->key);
    return v ? v : pick_default(p, k->def, buf, cap);
}

static int resolve_stage(run_pipeline_t *p, size_t si, gl_err_t *err)
{
    run_stage_t *s = &p->st[si];
    const stage_kind_t *k = s->kind;
    char buf[256];
    int rc = GL_OK;
    argv_t a = {0}, pos = {0};
    s->kind_name = k->kind;
    s->resume = k->resume;
    s->train = k->train;
    s->out_fp = k->out_fp;
    s->params = json_object();

    /* keys: required ones, names, plain values */
    for (const key_spec_t *ks = k->keys; ks->key; ks++) {
        const char *v = value_of(p, s, ks, buf, sizeof buf);
        if ((ks->flags & K_REQ) && (!v || !v[0])) {
            const char *alt = ks->def ? " (no default applies: the stage it names is not in this pipeline)" : "";
            return perr(err, p->path, s->line, "[%s]: missing required key '%s'%s", s->name, ks->key, alt);
        }
        if (v && !run_kv_get(s, ks->key))
            json_object_set_new(s->params, ks->key, json_string(v));
    }
    for (size_t i = 0; i < s->nkv; i++) {
        const run_kv_t *kv = &s->kv[i];
        if (strncmp(kv->key, "slurm-", 6))
            json_object_set_new(s->params, kv->key, json_string(kv->value));
        if (!strcmp(kv->key, "slurm-opt"))
            s->slurm_opt = gl_xstrdup(kv->value);
        else if (!strcmp(kv->key, "slurm-array")) {
            uint64_t n;
            if (strcmp(k->kind, "ingest") || gl_parse_u64(kv->value, &n) || n < 1 || n > 100000)
                return perr(err, p->path, kv->line, "slurm-array: %s",
                            strcmp(k->kind, "ingest") ? "only an ingest stage runs as a job array"
                                                      : "a number of tasks from 1 to 100000");
            s->array = (long)n;
        } else if (!strncmp(kv->key, "slurm-", 6)) {
            return perr(err, p->path, kv->line, "unknown key '%s' (slurm-opt, slurm-array)", kv->key);
        }
    }
    if (!strcmp(k->kind, "ingest") && !s->array)
        s->array = 1;

    /* the output */
    const run_kv_t *okv = kv_find(s, "out");
    if (!k->out_opt && okv && !strcmp(k->kind, "dedup"))
        return perr(err, p->path, okv->line, "[%s]: dedup rewrites its data folder in place; it has no 'out'",
                    s->name);
    if (okv && okv->value[0] == '@')
        return perr(err, p->path, okv->line, "[%s]: 'out' must be a path, not a reference", s->name);
    if (okv && !okv->value[0])
        return perr(err, p->path, okv->line, "[%s]: empty 'out'", s->name);

    for (size_t i = 0; k->cmd[i]; i++)
        push(&a, k->cmd[i]);
    if (!strcmp(k->kind, "ingest")) {
        char *ln = xasprintf("state/%s.inputs", s->name);
        s->list_file = gl_path_join(p->work, ln);
        free(ln);
        push(&a, "--inputs");
        push(&a, s->list_file);
    }
    if (k->out_opt) {
        push(&a, k->out_opt);
        push(&a, s->out);
    }

    /* known keys */
    for (const key_spec_t *ks = k->keys; ks->key && !rc; ks++) {
        const char *v = value_of(p, s, ks, buf, sizeof buf);
        const run_kv_t *kv = kv_find(s, ks->key);
        int line = kv ? kv->line : s->line;
        if (!v || !v[0] || (ks->flags & K_INTERNAL && ks->fp == RUN_FP_NONE))
            continue;
        size_t n = 1;
        char **items = (ks->flags & K_LIST) ? split_ws(v, &n) : NULL;
        for (size_t j = 0; j < n && !rc; j++) {
            const char *item = items ? items[j] : v;
            char *val;
            if (ks->fp == RUN_FP_NONE || (strstr(ks->key, "tokenizer") && !strcmp(item, "bytes"))) {
                val = gl_xstrdup(item);
            } else {
                int from;
                val = resolve_item(p, item, &from, ks->key, line, err);
                if (!val) {
                    rc = GL_EPARSE;
                    break;
                }
                add_input(s, ks->key, val, ks->fp, from);
            }
            if (ks->flags & K_POS)
                push(&pos, val);
            else if (!(ks->flags & K_INTERNAL)) {
                push(&a, ks->opt);
                push(&a, val);
            }
            free(val);
        }
        free_strv(items, items ? n : 0);
    }
    if (rc)
        goto out;

    /* passed-through keys */
    for (size_t i = 0; i < s->nkv; i++) {
        const run_kv_t *kv = &s->kv[i];
        if (spec_of(k, kv->key) || !strcmp(kv->key, "out") || !strncmp(kv->key, "slurm-", 6) || is_false(kv->value))
            continue;
        char *opt = xasprintf("--%s", kv->key);
        push(&a, opt);
        free(opt);
        if (is_true(kv->value))
            continue;
        if (kv->value[0] == '@') {
            int from;
            char *val = resolve_item(p, kv->value, &from, kv->key, kv->line, err);
            if (!val) {
                rc = GL_EPARSE;
                goto out;
            }
            add_input(s, kv->key, val, RUN_FP_AUTO, from);
            push(&a, val);
            free(val);
        } else {
            push(&a, kv->value);
        }
    }

    /* kind-specific wiring */
    if (!strcmp(k->kind, "ingest")) {
        const run_kv_t *in = kv_find(s, "inputs"), *from = kv_find(s, "inputs-from");
        if (!in && !from) {
            rc = perr(err, p->path, s->line, "[%s]: missing required key 'inputs' (or 'inputs-from')", s->name);
            goto out;
        }
        char **items = NULL;
        size_t n = 0;
        if (from) {
            char *lp = abs_path(p->dir, from->value);
            rc = read_list(p, lp, from->line, &items, &n, err);
            free(lp);
            for (size_t j = 0; !rc && j < n; j++)
                add_input(s, "inputs-from", items[j], RUN_FP_FILE, -1);
        }
        size_t len = 0;
        for (size_t j = 0; j < s->nin; j++)
            if (!strcmp(s->in[j].key, "inputs") || !strcmp(s->in[j].key, "inputs-from"))
                len += strlen(s->in[j].path) + 1;
        s->list_text = gl_xmalloc(len + 1);
        s->list_text[0] = '\0';
        char *w = s->list_text;
        for (size_t j = 0; j < s->nin; j++)
            if (!strcmp(s->in[j].key, "inputs") || !strcmp(s->in[j].key, "inputs-from"))
                w += sprintf(w, "%s\n", s->in[j].path);
        free_strv(items, n);
        if (rc)
            goto out;
    } else if (!strcmp(k->kind, "tokenizer")) {
        int has_in = run_kv_get(s, "input") != NULL, has_sh = run_kv_get(s, "shards") != NULL;
        if (has_in == has_sh) {
            rc = perr(err, p->path, s->line, "[%s]: give exactly one of 'input' (text files) and 'shards' (a dataset)",
                      s->name);
            goto out;
        }
    } else if (!strcmp(k->kind, "label-export")) {
        const char *kv = value_of(p, s, spec_of(k, "kinds"), buf, sizeof buf);
        size_t n;
        char **ks = split_ws(kv, &n);
        if (!n)
            rc = perr(err, p->path, s->line, "[%s]: 'kinds' is empty (sft, rm)", s->name);
        for (size_t j = 0; j < n && !rc; j++) {
            if (strcmp(ks[j], "sft") && strcmp(ks[j], "rm")) {
                const run_kv_t *kk = kv_find(s, "kinds");
                rc = perr(err, p->path, kk ? kk->line : s->line, "[%s]: unknown kind '%s' (sft, rm)", s->name, ks[j]);
                break;
            }
            argv_t c = {0};
            for (size_t m = 0; m < a.n; m++)
                push(&c, a.v[m]);
            char *o = gl_path_join(s->out, ks[j]);
            push(&c, "--kind");
            push(&c, ks[j]);
            push(&c, "--out");
            push(&c, o);
            free(o);
            push_cmd(s, &c);
        }
        free_strv(ks, n);
        goto out;
    }
    for (size_t j = 0; j < pos.n; j++)
        push(&a, pos.v[j]);
    push_cmd(s, &a);
out:
    free_strv(a.v, a.n);
    free_strv(pos.v, pos.n);
    return rc;
}

/* ---- order ----------------------------------------------------------------- */

/* Puts the stages in dependency order (ties: the canonical kind order, then
 * the file's order); a cycle is an error naming it. */
static int order_stages(run_pipeline_t *p, gl_err_t *err)
{
    size_t n = p->n;
    int *done = gl_xcalloc(n ? n : 1, sizeof *done);
    size_t *order = gl_xcalloc(n ? n : 1, sizeof *order);
    size_t k = 0;
    int rc = GL_OK;
    while (k < n) {
        int best = -1;
        for (size_t i = 0; i < n; i++) {
            if (done[i])
                continue;
            int ready = 1;
            for (size_t d = 0; d < p->st[i].ndeps && ready; d++)
                ready = done[p->st[i].deps[d]];
            if (ready && (best < 0 || p->st[i].kind < p->st[best].kind))
                best = (int)i;
        }
        if (best < 0)
            break;
        done[best] = 1;
        order[k++] = (size_t)best;
    }
    if (k < n) {
        /* walk dependencies among the stages left until one repeats */
        size_t start = 0;
        while (done[start])
            start++;
        int *seen = gl_xcalloc(n, sizeof *seen);
        size_t cur = start, step = 1;
        while (!seen[cur]) {
            seen[cur] = (int)step++;
            size_t next = cur;
            for (size_t d = 0; d < p->st[cur].ndeps; d++)
                if (!done[p->st[cur].deps[d]]) {
                    next = (size_t)p->st[cur].deps[d];
                    break;
                }
            cur = next;
        }
        char msg[300] = "";
        size_t c = cur;
        do {
            size_t l = strlen(msg);
            snprintf(msg + l, sizeof msg - l, "%s%s", l ? " <- " : "", p->st[c].name);
            for (size_t d = 0; d < p->st[c].ndeps; d++)
                if (!done[p->st[c].deps[d]]) {
                    c = (size_t)p->st[c].deps[d];
                    break;
                }
        } while (c != cur);
        size_t l = strlen(msg);
        snprintf(msg + l, sizeof msg - l, " <- %s", p->st[cur].name);
        rc = perr(err, p->path, p->st[cur].line, "dependency cycle: %s (each needs the output of the next)", msg);
        free(seen);
    } else {
        /* permute, remapping the indices in deps and inputs */
        size_t *where = gl_xmalloc(n * sizeof *where);
        for (size_t i = 0; i < n; i++)
            where[order[i]] = i;
        run_stage_t *st = gl_xmalloc(n * sizeof *st);
        for (size_t i = 0; i < n; i++) {
            st[i] = p->st[order[i]];
            for (size_t d = 0; d < st[i].ndeps; d++)
                st[i].deps[d] = (int)where[st[i].deps[d]];
            for (size_t j = 0; j < st[i].nin; j++)
                if (st[i].in[j].from >= 0)
                    st[i].in[j].from = (int)where[st[i].in[j].from];
        }
        free(p->st);
        p->st = st;
        free(where);
    }
    free(done);
    free(order);
    return rc;
}

/* ---- load ------------------------------------------------------------------ */

static int path_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && (path[n] == '\0' || path[n] == '/' || (n == 1 && dir[0] == '/'));
}

static int resolve(run_pipeline_t *p, parse_t *ps, gl_err_t *err)
{
    /* [pipeline] */
    const char *work = NULL;
    for (size_t i = 0; i < ps->ngkv; i++) {
        const run_kv_t *kv = &ps->gkv[i];
        if (!strcmp(kv->key, "work"))
            work = kv->value;
        else if (!strcmp(kv->key, "name"))
            p->name = gl_xstrdup(kv->value);
        else if (!strcmp(kv->key, "slurm-opt"))
            p->slurm_opt = gl_xstrdup(kv->value);
        else if (!strcmp(kv->key, "slurm-srun"))
            p->srun = gl_xstrdup(kv->value);
        else
            return perr(err, p->path, kv->line, "unknown key '%s' in [pipeline] (work, name, slurm-opt, slurm-srun)",
                        kv->key);
        if (!kv->value[0])
            return perr(err, p->path, kv->line, "empty '%s'", kv->key);
    }
    const char *base = strrchr(p->path, '/') + 1;
    size_t bl = strcspn(base, ".");
    if (!p->name)
        p->name = bl ? xasprintf("%.*s", (int)bl, base) : gl_xstrdup("pipeline");
    if (!valid_stage_name(p->name))
        return perr(err, p->path, 0, "bad pipeline name '%s' (letters, digits, '-', '_', '.')", p->name);
    if (work) {
        p->work = abs_path(p->dir, work);
    } else {
        char *w = xasprintf("%s.work", p->name);
        p->work = gl_path_join(p->dir, w);
        free(w);
    }
    if (!p->srun)
        p->srun = gl_xstrdup("srun");
    if (!p->n)
        return perr(err, p->path, 0, "no stages: add a section such as [pretrain]");

    /* outputs first (references resolve to them); dedup's is its data */
    for (size_t i = 0; i < p->n; i++) {
        run_stage_t *s = &p->st[i];
        if (strcmp(s->kind->kind, "dedup"))
            continue;
        char buf[64];
        const char *d = run_kv_get(s, "data");
        if (!d)
            d = pick_default(p, "@ingest", buf, sizeof buf);
        if (!d)
            return perr(err, p->path, s->line, "[%s]: missing required key 'data' (no default applies: the stage it "
                        "names is not in this pipeline)", s->name);
        if (d[0] == '@') {
            int j = find_stage(p, d + 1, strcspn(d + 1, "/"));
            if (j >= 0 && !strcmp(p->st[j].kind->kind, "dedup"))
                return perr(err, p->path, s->line, "[%s]: data names another dedup stage", s->name);
        }
        s->inplace = 1;
    }
    for (size_t i = 0; i < p->n; i++) {
        run_stage_t *s = &p->st[i];
        if (s->inplace)
            continue;
        const char *o = run_kv_get(s, "out");
        char *def = xasprintf("out/%s%s", s->name, s->kind->out_ext);
        s->out = o && o[0] && o[0] != '@' ? abs_path(p->dir, o) : gl_path_join(p->work, def);
        free(def);
    }
    for (size_t i = 0; i < p->n; i++) {
        run_stage_t *s = &p->st[i];
        if (!s->inplace)
            continue;
        char buf[64];
        const char *d = run_kv_get(s, "data");
        if (!d)
            d = pick_default(p, "@ingest", buf, sizeof buf);
        int from;
        const run_kv_t *kv = kv_find(s, "data");
        s->out = resolve_item(p, d, &from, "data", kv ? kv->line : s->line, err);
        if (!s->out)
            return GL_EPARSE;
    }
    for (size_t i = 0; i < p->n; i++) {
        int rc = resolve_stage(p, i, err);
        if (rc)
            return rc;
    }

    /* outputs apart; a path under another stage's output depends on it */
    for (size_t i = 0; i < p->n; i++) {
        run_stage_t *s = &p->st[i];
        for (size_t j = 0; j < p->n; j++) {
            if (i == j)
                continue;
            const run_stage_t *t = &p->st[j];
            if (!s->inplace && !t->inplace && (path_under(s->out, t->out) || path_under(t->out, s->out)))
                return perr(err, p->path, s->line, "[%s] and [%s] write the same place (%s)", s->name, t->name, s->out);
        }
        for (size_t k = 0; k < s->nin; k++) {
            if (s->in[k].from >= 0)
                continue;
            for (size_t j = 0; j < p->n; j++)
                if (j != i && path_under(s->in[k].path, p->st[j].out) && !p->st[j].inplace) {
                    s->in[k].from = (int)j;
                    add_dep(s, (int)j);
                }
            if (!s->inplace && path_under(s->in[k].path, s->out))
                return perr(err, p->path, s->line, "[%s]: input %s is inside its own output", s->name, s->in[k].path);
        }
    }
    /* a stage that rewrites a folder in place comes after its writer and
     * before its readers */
    for (size_t i = 0; i < p->n; i++) {
        if (!p->st[i].inplace)
            continue;
        int writer = -1;
        for (size_t k = 0; k < p->st[i].nin; k++)
            writer = p->st[i].in[k].from >= 0 ? p->st[i].in[k].from : writer;
        for (size_t j = 0; j < p->n; j++) {
            if (j == i || (int)j == writer)
                continue;
            for (size_t k = 0; k < p->st[j].nin; k++)
                if (path_under(p->st[j].in[k].path, p->st[i].out)) {
                    p->st[j].in[k].from = (int)i;
                    add_dep(&p->st[j], (int)i);
                }
        }
    }
    return order_stages(p, err);
}

run_pipeline_t *run_pipeline_load(const char *path, const char *text, size_t len, gl_err_t *err)
{
    char *data = NULL;
    if (!text) {
        if (gl_read_file(path, 1u << 24, &data, &len, err))
            return NULL;
        text = data;
    }
    run_pipeline_t *p = gl_xcalloc(1, sizeof *p);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        strcpy(cwd, "/");
    p->path = abs_path(cwd, path);
    p->dir = gl_xstrdup(p->path);
    *strrchr(p->dir, '/') = '\0';
    if (!p->dir[0]) {
        free(p->dir);
        p->dir = gl_xstrdup("/");
    }
    parse_t ps = {.p = p, .file = path, .text = text, .len = len, .err = err};
    int r = ini_parse_stream(reader, &ps, handler, &ps);
    int rc = GL_OK;
    if (ps.failed)
        rc = ps.failed;
    else if (r == -2)
        rc = gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
    else if (r)
        rc = perr(err, path, r, "syntax error: expected [section], key = value, or a ';'/'#' comment");
    if (!rc)
        rc = resolve(p, &ps, err);
    for (size_t i = 0; i < ps.ngkv; i++)
        free(ps.gkv[i].key), free(ps.gkv[i].value);
    free(ps.gkv);
    free(data);
    if (rc)
        run_pipeline_free(&p);
    return p;
}

void run_pipeline_free(run_pipeline_t **pp)
{
    run_pipeline_t *p = pp ? *pp : NULL;
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        run_stage_t *s = &p->st[i];
        free(s->name);
        for (size_t j = 0; j < s->nkv; j++)
            free(s->kv[j].key), free(s->kv[j].value);
        free(s->kv);
        free(s->out);
        free(s->deps);
        for (size_t j = 0; j < s->nin; j++)
            free(s->in[j].key), free(s->in[j].path);
        free(s->in);
        for (size_t j = 0; j < s->ncmds; j++) {
            for (char **a = s->cmds[j]; *a; a++)
                free(*a);
            free(s->cmds[j]);
        }
        free(s->cmds);
        free(s->list_file);
        free(s->list_text);
        json_decref(s->params);
        free(s->slurm_opt);
    }
    free(p->st);
    free(p->path), free(p->dir), free(p->work), free(p->name), free(p->slurm_opt), free(p->srun);
    free(p->self_for_scripts);
    free(p);
    *pp = NULL;
}

size_t run_pipeline_count(const run_pipeline_t *p)
{
    return p->n;
}

const char *run_pipeline_stage_name(const run_pipeline_t *p, size_t i)
{
    return i < p->n ? p->st[i].name : NULL;
}

const char *run_pipeline_work(const run_pipeline_t *p)
{
    return p->work;
}

void run_pipeline_add_slurm_opt(run_pipeline_t *p, const char *opt)
{
    char *s = p->slurm_opt ? xasprintf("%s %s", p->slurm_opt, opt) : gl_xstrdup(opt);
    free(p->slurm_opt);
    p->slurm_opt = s;
}
