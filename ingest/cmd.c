/* cmd.c — `gptline ingest`: run workers, dedup, report, extract.
 *
 * The command layer over the ingest library: options, log lines, the
 * progress line and exit statuses (0 ok, 1 failure, 2 usage, 3 invalid
 * data — with --strict, bad input seen). `gptline ingest --inputs LIST
 * --out DIR` runs one rank (--rank/--world, as a Slurm array task would) or
 * k local ranks as child processes (--workers k). `dedup` is the
 * whole-dataset pass, `report` the table of every rank's stats, `extract`
 * prints what the readers make of a file (JSONL on stdout), for looking at
 * inputs and for tests.
 */
#include "ingest/ingest.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static gl_progress_t progress;

static void log_line(void *ctx, int level, const char *msg)
{
    (void)ctx;
    if (progress.drawn)
        fputc('\n', stderr); /* keep the progress line apart from log lines */
    progress.drawn = 0;
    gl_log((gl_log_level_t)level, "%s", msg);
}

static void on_progress(void *ctx, uint64_t docs, uint64_t bytes)
{
    (void)ctx;
    gl_progress_add(&progress, docs, bytes);
}

/* Reads the input list: one path per line, '#' comments, blank lines skipped. */
static char **read_list(const char *path, size_t *n, gl_err_t *err)
{
    char *data;
    size_t len;
    if (gl_read_file(path, 1u << 30, &data, &len, err))
        return NULL;
    char **v = NULL;
    size_t k = 0;
    char *save, *line = strtok_r(data, "\n", &save);
    for (; line; line = strtok_r(NULL, "\n", &save)) {
        size_t m = strlen(line);
        while (m && (line[m - 1] == '\r' || line[m - 1] == ' '))
            line[--m] = 0;
        if (!m || line[0] == '#')
            continue;
        v = gl_xrealloc(v, (k + 1) * sizeof *v);
        v[k++] = gl_xstrdup(line);
    }
    free(data);
    *n = k;
    return v;
}

/* PATH with each "{rank}" replaced by the rank. Caller frees. */
static char *rank_path(const char *tmpl, uint32_t rank)
{
    char r[16];
    snprintf(r, sizeof r, "%u", rank);
    size_t cap = strlen(tmpl) + 1;
    for (const char *p = strstr(tmpl, "{rank}"); p; p = strstr(p + 6, "{rank}"))
        cap += strlen(r);
    char *out = gl_xmalloc(cap), *w = out;
    for (const char *p = tmpl; *p;) {
        if (!strncmp(p, "{rank}", 6)) {
            w += sprintf(w, "%s", r);
            p += 6;
        } else {
            *w++ = *p++;
        }
    }
    *w = 0;
    return out;
}

static int run_usage(const char *prog)
{
    printf("usage: %s --inputs LIST --out DIR [--tokenizer bytes|VOCAB] [--rank I --world N] [--workers K]\n"
           "       %s dedup DIR | report [--json] DIR | extract [--kind K] FILE...\n\n"
           "Reads the inputs named in LIST (one path per line: WARC/WET, MediaWiki XML,\n"
           "tar/zip source archives, JSONL; compressed or not), extracts, filters and\n"
           "tokenizes their documents into one shard per input in DIR. Input k belongs to\n"
           "rank k mod N; finished inputs are marked done and skipped on relaunch.\n\n"
           "  -i, --inputs LIST       file listing the inputs\n"
           "  -o, --out DIR           dataset folder (shards, sigs/, done/, stats/)\n"
           "  -t, --tokenizer SPEC    'bytes' (byte-level ids, end-of-text 256; the default) or a\n"
           "                          BPE vocabulary file (tiktoken, encoder.json, .gltok)\n"
           "  -r, --rank I            this worker's rank (default 0)\n"
           "  -w, --world N           number of ranks (default 1)\n"
           "  -k, --workers K         run K local ranks as processes (ranks I*K..I*K+K-1 of N*K)\n"
           "      --lang CODES        keep only these languages (CLD2, e.g. en,bg); default all\n"
           "      --detect-lang       record each document's language (CLD2) without filtering;\n"
           "                          off by default: CLD2 costs more than all other filters\n"
           "      --min-chars N       length filter: minimum characters (default 200; code 1)\n"
           "      --min-words N       length filter: minimum words (default 20; code 1)\n"
           "      --no-filters        switch every filter off\n"
           "      --no-gopher | --no-c4 | --no-pii | --no-dedup | --no-length\n"
           "                          switch one filter off\n"
           "      --max-record BYTES  cap on a WARC record, wiki page, JSON line (default 16M)\n"
           "      --max-file BYTES    cap on a source file (default 1M)\n"
           "      --strict            exit 3 when any bad input was seen\n"
           "      --metrics-file PATH counters in the Prometheus text format, rewritten every\n"
           "                          5 s and at exit; {rank} in PATH becomes the rank (needed\n"
           "                          with --workers); default with $GPTLINE_METRICS_DIR:\n"
           "                          DIR/gptline-ingest-{rank}.prom\n\n"
           "Commands:\n"
           "  dedup DIR               whole-dataset exact + MinHash near-dup removal (compacts shards)\n"
           "  report DIR              stats of every rank and input, added up\n"
           "  extract FILE...         print the documents of files as JSONL (no filters)\n\n"
           "Exit status: 0 ok, 1 failure, 2 usage error, 3 bad input with --strict.\n",
           prog, prog);
    return GL_EXIT_OK;
}

static int cmd_run(int argc, char **argv)
{
    enum { O_LANG = 256, O_MINC, O_MINW, O_NOF, O_NOG, O_NOC4, O_NOPII, O_NODD, O_NOLEN, O_MAXR, O_MAXF, O_STRICT, O_THR, O_METRICS, O_DETECT };
    static const struct option opts[] = {
        {"inputs", required_argument, NULL, 'i'}, {"out", required_argument, NULL, 'o'},
        {"tokenizer", required_argument, NULL, 't'}, {"rank", required_argument, NULL, 'r'},
        {"world", required_argument, NULL, 'w'}, {"workers", required_argument, NULL, 'k'},
        {"lang", required_argument, NULL, O_LANG}, {"min-chars", required_argument, NULL, O_MINC},
        {"min-words", required_argument, NULL, O_MINW}, {"no-filters", no_argument, NULL, O_NOF},
        {"no-gopher", no_argument, NULL, O_NOG}, {"no-c4", no_argument, NULL, O_NOC4},
        {"no-pii", no_argument, NULL, O_NOPII}, {"no-dedup", no_argument, NULL, O_NODD},
        {"no-length", no_argument, NULL, O_NOLEN}, {"max-record", required_argument, NULL, O_MAXR},
        {"max-file", required_argument, NULL, O_MAXF}, {"strict", no_argument, NULL, O_STRICT},
        {"throttle-ms", required_argument, NULL, O_THR}, {"metrics-file", required_argument, NULL, O_METRICS},
        {"detect-lang", no_argument, NULL, O_DETECT},
        {"help", no_argument, NULL, 'h'}, {0}};
    ingest_worker_opts_t o = {.tokenizer = "bytes", .world = 1, .log = log_line, .progress = on_progress};
    ingest_read_opts_default(&o.read);
    const char *list = NULL, *metrics_opt = NULL;
    uint64_t rank = 0, world = 1, workers = 0, v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:o:t:r:w:k:h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': list = optarg; break;
        case 'o': o.out_dir = optarg; break;
        case 't': o.tokenizer = optarg; break;
        case 'r':
            if (gl_parse_u64(optarg, &rank)) return gl_usage_error(argv[0], "bad --rank '%s'", optarg);
            break;
        case 'w':
            if (gl_parse_u64(optarg, &world) || !world) return gl_usage_error(argv[0], "bad --world '%s'", optarg);
            break;
        case 'k':
            if (gl_parse_u64(optarg, &workers) || !workers || workers > 1024)
                return gl_usage_error(argv[0], "bad --workers '%s'", optarg);
            break;
        case O_LANG: o.languages = optarg; break;
        case O_DETECT: o.detect_lang = 1; break;
        case O_MINC:
            if (gl_parse_u64(optarg, &v)) return gl_usage_error(argv[0], "bad --min-chars");
            o.min_chars = (size_t)v;
            break;
        case O_MINW:
            if (gl_parse_u64(optarg, &v)) return gl_usage_error(argv[0], "bad --min-words");
            o.min_words = (size_t)v;
            break;
        case O_NOF: o.filters_off = 1; break;
        case O_NOG: o.no_gopher = 1; break;
        case O_NOC4: o.no_c4 = 1; break;
        case O_NOPII: o.no_pii = 1; break;
        case O_NODD: o.no_dedup = 1; break;
        case O_NOLEN: o.no_length = 1; break;
        case O_MAXR:
            if (gl_parse_u64(optarg, &v) || !v) return gl_usage_error(argv[0], "bad --max-record");
            o.read.max_record = (size_t)v;
            break;
        case O_MAXF:
            if (gl_parse_u64(optarg, &v) || !v) return gl_usage_error(argv[0], "bad --max-file");
            o.read.max_file = (size_t)v;
            break;
        case O_STRICT: o.strict = 1; break;
        case O_THR:
            if (gl_parse_u64(optarg, &v)) return gl_usage_error(argv[0], "bad --throttle-ms");
            o.throttle_ms = (unsigned)v;
            break;
        case O_METRICS: metrics_opt = optarg; break;
        case 'h': return run_usage(argv[0]);
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (!list || !o.out_dir)
        return gl_usage_error(argv[0], "--inputs and --out are required");
    if (optind != argc)
        return gl_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
    if (rank >= world)
        return gl_usage_error(argv[0], "--rank %llu is not below --world %llu", (unsigned long long)rank,
                              (unsigned long long)world);
    if (metrics_opt && workers > 1 && !strstr(metrics_opt, "{rank}"))
        return gl_usage_error(argv[0], "--metrics-file needs {rank} in its path with --workers");
    char *metrics_tmpl = gl_metrics_path(metrics_opt, "gptline-ingest-{rank}.prom");
    gl_err_t err = {0};
    size_t n = 0;
    char **inputs = read_list(list, &n, &err);
    if (!inputs && err.code) {
        free(metrics_tmpl);
        return gl_cmd_fail(argv[0], &err);
    }
    int status = GL_EXIT_OK;
    if (workers) {
        /* k local ranks as child processes */
        pid_t *pids = gl_xcalloc(workers, sizeof *pids);
        for (uint64_t j = 0; j < workers; j++) {
            pid_t p = fork();
            if (p < 0) {
                gl_error("fork: %s", strerror(errno));
                status = GL_EXIT_FAIL;
                break;
            }
            if (p == 0) {
                o.rank = (uint32_t)(rank * workers + j);
                o.world = (uint32_t)(world * workers);
                o.progress = NULL; /* one line per terminal: children stay quiet */
                char *mp = metrics_tmpl ? rank_path(metrics_tmpl, o.rank) : NULL;
                o.metrics_file = mp;
                ingest_stats_t st;
                int rc = ingest_worker_run(&o, inputs, n, &st, &err);
                if (rc)
                    gl_error("rank %u: %s", o.rank, err.msg);
                free(mp);
                _exit(rc ? gl_exit_status(err.code) : GL_EXIT_OK);
            }
            pids[j] = p;
        }
        for (uint64_t j = 0; j < workers; j++) {
            int ws;
            if (pids[j] <= 0 || waitpid(pids[j], &ws, 0) < 0)
                continue;
            int s = WIFEXITED(ws) ? WEXITSTATUS(ws) : GL_EXIT_FAIL;
            if (s > status)
                status = s;
        }
        free(pids);
    } else {
        o.rank = (uint32_t)rank;
        o.world = (uint32_t)world;
        char *mp = metrics_tmpl ? rank_path(metrics_tmpl, o.rank) : NULL;
        o.metrics_file = mp;
        ingest_stats_t st;
        double t0 = gl_now();
        gl_progress_start(&progress, "ingest", "docs", 0, 0);
        int rc = ingest_worker_run(&o, inputs, n, &st, &err);
        gl_progress_finish(&progress);
        if (rc) {
            status = gl_cmd_fail(argv[0], &err);
        }
        char b1[32], b2[32];
        gl_info("rank %u/%u: %llu inputs done (%llu already done, %llu unreadable), %llu of %llu documents kept, "
                "%s tokens, %s in, %.1f s",
                o.rank, o.world, (unsigned long long)st.inputs_done, (unsigned long long)st.inputs_skipped,
                (unsigned long long)st.inputs_failed, (unsigned long long)st.docs_kept,
                (unsigned long long)st.docs_in, gl_fmt_count((double)st.tokens, b1, sizeof b1),
                gl_fmt_bytes((double)st.bytes_in, b2, sizeof b2), gl_now() - t0);
        free(mp);
    }
    free(metrics_tmpl);
    for (size_t i = 0; i < n; i++)
        free(inputs[i]);
    free(inputs);
    return status;
}

static int cmd_dedup(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: %s DIR\n\nRemoves exact and near duplicates (MinHash LSH over word 5-grams, 14 bands x 8\n"
               "rows) across every input and rank of the dataset in DIR, keeping the first of\n"
               "each cluster in input order; rewrites the shards concerned and lists the\n"
               "removed documents in DIR/dedup/removed.json. Run it after all workers finished;\n"
               "running it again changes nothing.\n",
               argv[0]);
        return GL_EXIT_OK;
    }
    if (argc != 2 || argv[1][0] == '-')
        return gl_usage_error(argv[0], "expected one dataset folder");
    gl_err_t err = {0};
    uint64_t ex, near, seen;
    if (ingest_dedup_run(argv[1], &ex, &near, &seen, &err))
        return gl_cmd_fail(argv[0], &err);
    printf("%llu documents signed, %llu exact and %llu near duplicates removed\n", (unsigned long long)seen,
           (unsigned long long)ex, (unsigned long long)near);
    return GL_EXIT_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int cmd_report(int argc, char **argv)
{
    int json = 0, per_input = 0;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: %s [--json] [--inputs] DIR\n\nAdds up the stats of every input marked done in DIR, per rank and in\n"
                   "total: inputs, records read, documents read and kept, bytes, tokens, and\n"
                   "every skip, filter and error counter.\n\n"
                   "  --json     one JSON object on stdout\n"
                   "  --inputs   also one line per input (documents, kept, errors)\n",
                   argv[0]);
            return GL_EXIT_OK;
        } else if (!strcmp(argv[i], "--inputs")) {
            per_input = 1;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (argv[i][0] == '-' || dir) {
            return gl_usage_error(argv[0], "bad argument '%s'", argv[i]);
        } else {
            dir = argv[i];
        }
    }
    if (!dir)
        return gl_usage_error(argv[0], "expected one dataset folder");
    char *dd = gl_path_join(dir, "done");
    DIR *dh = opendir(dd);
    if (!dh) {
        gl_error("%s: %s (not an ingest output folder?)", dd, strerror(errno));
        free(dd);
        return GL_EXIT_FAIL;
    }
    json_t *ranks = json_object(), *total = json_object();
    struct dirent *e;
    const char *num[] = {"records", "docs_in", "docs_kept", "bytes_in", "bytes_kept", "tokens", NULL};
    json_t *inputs = json_array();
    char **names = NULL;
    size_t nn = 0;
    while ((e = readdir(dh))) {
        if (strncmp(e->d_name, "in-", 3) || !strstr(e->d_name, ".json"))
            continue;
        names = gl_xrealloc(names, (nn + 1) * sizeof *names);
        names[nn++] = gl_xstrdup(e->d_name);
    }
    closedir(dh);
    qsort(names, nn, sizeof *names, cmp_str); /* in-K.json: input order */
    for (size_t ni = 0; ni < nn; ni++) {
        char *p = gl_path_join(dd, names[ni]);
        free(names[ni]);
        json_error_t je;
        json_t *o = json_load_file(p, 0, &je);
        free(p);
        if (!o)
            continue;
        char rk[32];
        snprintf(rk, sizeof rk, "%lld", (long long)json_integer_value(json_object_get(o, "rank")));
        json_t *r = json_object_get(ranks, rk);
        if (!r) {
            r = json_object();
            json_object_set_new(ranks, rk, r);
        }
        json_t *targets[2] = {r, total};
        for (int t = 0; t < 2; t++) {
            json_t *x = targets[t];
            json_object_set_new(x, "inputs", json_integer(json_integer_value(json_object_get(x, "inputs")) + 1));
            for (int k = 0; num[k]; k++)
                json_object_set_new(x, num[k], json_integer(json_integer_value(json_object_get(x, num[k])) +
                                                            json_integer_value(json_object_get(o, num[k]))));
            json_t *c = json_object_get(x, "counters");
            if (!c) {
                c = json_object();
                json_object_set_new(x, "counters", c);
            }
            const char *key;
            json_t *val;
            json_object_foreach(json_object_get(o, "counters"), key, val)
                json_object_set_new(c, key, json_integer(json_integer_value(json_object_get(c, key)) +
                                                         json_integer_value(val)));
        }
        json_array_append_new(inputs, o);
    }
    free(names);
    free(dd);
    char *dp = gl_path_join(dir, "dedup/removed.json");
    json_t *dedup = json_load_file(dp, 0, NULL);
    free(dp);
    if (json) {
        json_t *out = json_pack("{s:o,s:o}", "ranks", ranks, "total", total);
        if (dedup)
            json_object_set_new(out, "dedup_removed", json_incref(json_object_get(dedup, "removed")));
        if (per_input)
            json_object_set(out, "inputs", inputs);
        char *s = json_dumps(out, JSON_INDENT(1) | JSON_SORT_KEYS);
        puts(s);
        free(s);
        json_decref(out);
    } else {
        printf("%-8s %7s %10s %10s %10s %12s %12s %12s %8s\n", "rank", "inputs", "records", "docs in", "kept", "MB in",
               "MB kept", "tokens", "errors");
        const char *key;
        json_t *r;
        json_t *rows[2] = {ranks, NULL};
        (void)rows;
        for (int pass = 0; pass < 2; pass++) {
            json_t *it = pass ? json_pack("{s:O}", "total", total) : json_incref(ranks);
            json_object_foreach(it, key, r)
            {
                long long errs = 0;
                const char *ck;
                json_t *cv;
                json_object_foreach(json_object_get(r, "counters"), ck, cv) if (!strncmp(ck, "error.", 6)) errs +=
                    json_integer_value(cv);
                printf("%-8s %7lld %10lld %10lld %10lld %12.2f %12.2f %12lld %8lld\n", key,
                       (long long)json_integer_value(json_object_get(r, "inputs")),
                       (long long)json_integer_value(json_object_get(r, "records")),
                       (long long)json_integer_value(json_object_get(r, "docs_in")),
                       (long long)json_integer_value(json_object_get(r, "docs_kept")),
                       json_integer_value(json_object_get(r, "bytes_in")) / 1e6,
                       json_integer_value(json_object_get(r, "bytes_kept")) / 1e6,
                       (long long)json_integer_value(json_object_get(r, "tokens")), errs);
            }
            json_decref(it);
        }
        if (per_input) {
            printf("\n%-6s %5s %9s %9s %7s  %s\n", "input", "rank", "docs in", "kept", "errors", "path");
            size_t k;
            json_t *o;
            json_array_foreach(inputs, k, o)
            {
                long long errs = 0;
                const char *ck;
                json_t *cv;
                json_object_foreach(json_object_get(o, "counters"), ck, cv) if (!strncmp(ck, "error.", 6)) errs +=
                    json_integer_value(cv);
                printf("%-6lld %5lld %9lld %9lld %7lld  %s\n", (long long)json_integer_value(json_object_get(o, "index")),
                       (long long)json_integer_value(json_object_get(o, "rank")),
                       (long long)json_integer_value(json_object_get(o, "docs_in")),
                       (long long)json_integer_value(json_object_get(o, "docs_kept")), errs,
                       json_string_value(json_object_get(o, "input")) ? json_string_value(json_object_get(o, "input"))
                                                                      : "?");
            }
        }
        printf("\n%-32s %12s\n", "counter (all ranks)", "count");
        const char *ck;
        json_t *cv;
        json_object_foreach(json_object_get(total, "counters"), ck, cv)
            printf("%-32s %12lld\n", ck, (long long)json_integer_value(cv));
        if (dedup)
            printf("%-32s %12lld\n", "dedup.removed", (long long)json_integer_value(json_object_get(dedup, "removed")));
        json_decref(ranks);
        json_decref(total);
    }
    json_decref(dedup);
    json_decref(inputs);
    return GL_EXIT_OK;
}

/* ---- extract ---- */

typedef struct {
    uint64_t docs, counts[INGEST_NCOUNTERS];
    int text_only;
} ex_t;

static void set_str(json_t *o, const char *k, const char *v)
{
    if (v)
        json_object_set_new(o, k, json_stringn_nocheck(v, strlen(v)));
}

static int ex_doc(void *ctx, const ingest_doc_t *d, gl_err_t *err)
{
    ex_t *x = ctx;
    (void)err;
    x->docs++;
    if (x->text_only) {
        fwrite(d->text, 1, d->len, stdout);
        fputs("\n\f\n", stdout);
        return GL_OK;
    }
    json_t *o = json_object();
    json_object_set_new(o, "text", json_stringn_nocheck(d->text, d->len));
    set_str(o, "url", d->url);
    set_str(o, "title", d->title);
    set_str(o, "path", d->path);
    set_str(o, "date", d->date);
    set_str(o, "id", d->record_id);
    set_str(o, "license", d->license);
    set_str(o, "language", d->language);
    json_object_set_new(o, "offset", json_integer((json_int_t)d->offset));
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    puts(s);
    free(s);
    json_decref(o);
    return GL_OK;
}

static void ex_count(void *ctx, ingest_counter_t c, uint64_t off, const char *msg)
{
    ex_t *x = ctx;
    (void)off;
    x->counts[c]++;
    if (msg)
        gl_warn("%s: %s", ingest_counter_name(c), msg);
}

static int cmd_extract(int argc, char **argv)
{
    static const struct option opts[] = {{"kind", required_argument, NULL, 'K'}, {"text", no_argument, NULL, 'T'},
                                         {"help", no_argument, NULL, 'h'}, {0}};
    ingest_kind_t kind = INGEST_KIND_AUTO;
    ex_t x = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "K:Th", opts, NULL)) != -1) {
        switch (c) {
        case 'K':
            if (!strcmp(optarg, "warc")) kind = INGEST_KIND_WARC;
            else if (!strcmp(optarg, "wiki")) kind = INGEST_KIND_WIKI;
            else if (!strcmp(optarg, "code")) kind = INGEST_KIND_CODE;
            else if (!strcmp(optarg, "jsonl")) kind = INGEST_KIND_JSONL;
            else return gl_usage_error(argv[0], "bad --kind '%s' (warc, wiki, code, jsonl)", optarg);
            break;
        case 'T': x.text_only = 1; break;
        case 'h':
            printf("usage: %s [--kind warc|wiki|code|jsonl] [--text] FILE...\n\n"
                   "Prints the documents the readers extract from each FILE, before any\n"
                   "filter: one JSON object per line (text and metadata), or with --text the\n"
                   "texts separated by form feeds. Counters go to stderr.\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind >= argc)
        return gl_usage_error(argv[0], "expected input files");
    int status = GL_EXIT_OK;
    for (int i = optind; i < argc; i++) {
        gl_err_t err = {0};
        ingest_sink_t sink = {.doc = ex_doc, .count = ex_count, .ctx = &x};
        if (ingest_read_file(argv[i], kind, NULL, &sink, NULL, &err))
            status = gl_cmd_fail(argv[0], &err);
    }
    fflush(stdout);
    fprintf(stderr, "documents %llu\n", (unsigned long long)x.docs);
    for (int i = 0; i < INGEST_NCOUNTERS; i++)
        if (x.counts[i])
            fprintf(stderr, "%s %llu\n", ingest_counter_name((ingest_counter_t)i), (unsigned long long)x.counts[i]);
    return status;
}

static const gl_cmd_t subcmds[] = {
    {"dedup", cmd_dedup, "whole-dataset exact and near-duplicate removal"},
    {"report", cmd_report, "stats of every rank, added up"},
    {"extract", cmd_extract, "print the documents of input files as JSONL"},
    {NULL, NULL, NULL},
};

int ingest_cmd(int argc, char **argv)
{
    if (argc >= 2)
        for (const gl_cmd_t *c = subcmds; c->name; c++)
            if (!strcmp(argv[1], c->name))
                return gl_cmd_dispatch(argv[0], subcmds, argc, argv);
    return cmd_run(argc, argv);
}
