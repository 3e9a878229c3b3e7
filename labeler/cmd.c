/* cmd.c — `gptline label`: keygen, serve, client, backup and admin.
 *
 * The command layer over the labeler library: options, messages, exit
 * statuses (0 ok, 1 failure, 2 usage, 3 invalid data). The client has two
 * faces: `--batch FILE.jsonl` for scripts (one JSON result line per input
 * line on stdout), and an interactive loop for a contractor at a terminal
 * ($EDITOR for demonstrations, typed orderings for rankings, a
 * confirmation before each submission, progress after it). Both replay the
 * journal of unsent submissions first.
 */
#include "labeler/labeler.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int parse_u32(const char *prog, const char *what, const char *s, uint32_t *out)
{
    uint64_t v;
    if (gl_parse_u64(s, &v) < 0 || v > UINT32_MAX)
        return gl_usage_error(prog, "bad %s '%s'", what, s);
    *out = (uint32_t)v;
    return 0;
}

/* ---- keygen ------------------------------------------------------------- */

static int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            printf("usage: %s NAME\n\n"
                   "Makes a CURVE key pair: NAME.key (public and secret, mode 0600; keep it)\n"
                   "and NAME.pub (the public key, to give to the admin). Prints the public key.\n",
                   argv[0]);
            return GL_EXIT_OK;
        }
        return gl_usage_error(argv[0], "bad option");
    }
    if (optind != argc - 1)
        return gl_usage_error(argv[0], "expected one NAME");
    label_keypair_t kp;
    gl_err_t err = {0};
    if (label_keygen(&kp, &err) || label_key_write(argv[optind], &kp, &err))
        return gl_cmd_fail(argv[0], &err);
    printf("%s\n", kp.public_z85);
    return GL_EXIT_OK;
}

/* ---- serve -------------------------------------------------------------- */

typedef struct {
    const label_server_opts_t *o;
    volatile sig_atomic_t *bound;
    label_server_stats_t *st;
    gl_err_t *err;
    int rc;
    atomic_int done;
} serve_args_t;

static void *serve_thread(void *arg)
{
    serve_args_t *a = arg;
    a->rc = label_server_run(a->o, &stop_flag, a->bound, a->st, a->err);
    a->done = 1;
    return NULL;
}

static int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"db", required_argument, NULL, 'd'},
                                         {"endpoint", required_argument, NULL, 'e'},
                                         {"key", required_argument, NULL, 'k'},
                                         {"lease", required_argument, NULL, 'l'},
                                         {"prompt-overlap", required_argument, NULL, 'o'},
                                         {"demo-guidelines", required_argument, NULL, 'D'},
                                         {"rank-guidelines", required_argument, NULL, 'R'},
                                         {"max-batch", required_argument, NULL, 'b'},
                                         {"heartbeat", required_argument, NULL, 'H'},
                                         {"metrics-file", required_argument, NULL, 'M'},
                                         {"reply-retention", required_argument, NULL, 'T'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    label_server_opts_t o = {.endpoint = "tcp://127.0.0.1:5555"};
    const char *keyfile = NULL, *dg = NULL, *rg = NULL, *mf = NULL;
    char *dgt = NULL, *rgt = NULL;
    uint32_t v = 0;
    int c, rc;
    while ((c = getopt_long(argc, argv, "d:e:k:l:o:b:", opts, NULL)) != -1) {
        switch (c) {
        case 'd': o.db_dir = optarg; break;
        case 'e': o.endpoint = optarg; break;
        case 'k': keyfile = optarg; break;
        case 'l':
            if ((rc = parse_u32(argv[0], "lease", optarg, &o.store.lease_seconds)))
                return rc;
            break;
        case 'o':
            if ((rc = parse_u32(argv[0], "overlap", optarg, &o.store.prompt_overlap)))
                return rc;
            break;
        case 'b':
            if ((rc = parse_u32(argv[0], "batch", optarg, &v)))
                return rc;
            o.max_batch = v;
            break;
        case 'H':
            if ((rc = parse_u32(argv[0], "heartbeat", optarg, &v)))
                return rc;
            o.heartbeat_ms = (int)v;
            break;
        case 'D': dg = optarg; break;
        case 'R': rg = optarg; break;
        case 'M': mf = optarg; break;
        case 'T':
            if ((rc = parse_u32(argv[0], "reply retention", optarg, &o.store.reply_retention_seconds)))
                return rc;
            if (!o.store.reply_retention_seconds)
                return gl_usage_error(argv[0], "--reply-retention must be at least 1 second");
            break;
        case 'h':
            printf("usage: %s --db DIR --key SERVER.key [options]\n\n"
                   "Runs the labeling service: a ZeroMQ ROUTER socket with CURVE encryption,\n"
                   "admitting only contractors registered with 'gptline label admin\n"
                   "add-contractor'. Every submission is acknowledged only after its LMDB\n"
                   "transaction is committed and synced. Stops cleanly on SIGINT/SIGTERM.\n\n"
                   "  -d, --db DIR              the label store (created if absent)\n"
                   "  -k, --key FILE            the server's key pair (gptline label keygen)\n"
                   "  -e, --endpoint EP         where to listen (default tcp://127.0.0.1:5555;\n"
                   "                            port * picks a free one, logged at start)\n"
                   "  -l, --lease SECONDS       how long a task stays leased (default 1800)\n"
                   "  -o, --prompt-overlap N    contractors per contractor-written prompt (1)\n"
                   "      --demo-guidelines F   guidelines text for demonstrations\n"
                   "      --rank-guidelines F   guidelines text for rankings\n"
                   "  -b, --max-batch N         requests per group commit (default 512)\n"
                   "      --heartbeat MS        ZeroMQ heartbeat interval (default 5000)\n"
                   "      --metrics-file PATH   counters in the Prometheus text format, rewritten\n"
                   "                            every 5 s and at exit (default with\n"
                   "                            $GPTLINE_METRICS_DIR: DIR/gptline-label.prom)\n"
                   "      --reply-retention SECONDS\n"
                   "                            how long the reply to a request is kept to answer\n"
                   "                            its retries (default 604800, 7 days); a retry\n"
                   "                            arriving later is applied again, so keep it above\n"
                   "                            the time contractors' journals may hold unsent work\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind != argc || !o.db_dir || !keyfile)
        return gl_usage_error(argv[0], "--db and --key are required");
    gl_err_t err = {0};
    size_t len;
    if (label_key_read(keyfile, &o.key, &err))
        return gl_cmd_fail(argv[0], &err);
    if (!o.key.secret_z85[0])
        return gl_usage_error(argv[0], "%s holds no secret key (use the .key file)", keyfile);
    if ((dg && gl_read_file(dg, LABEL_MAX_PROMPT, &dgt, &len, &err)) ||
        (rg && gl_read_file(rg, LABEL_MAX_PROMPT, &rgt, &len, &err))) {
        free(dgt);
        return gl_cmd_fail(argv[0], &err);
    }
    o.store.demo_guidelines = dgt;
    o.store.rank_guidelines = rgt;
    char *metrics_path = gl_metrics_path(mf, "gptline-label.prom");
    o.metrics_file = metrics_path;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    label_server_stats_t st = {0};
    volatile sig_atomic_t bound = 0;
    pthread_t th;
    /* the server runs in a thread so that this one can say where it listens */
    serve_args_t sa_ = {.o = &o, .bound = &bound, .st = &st, .err = &err};
    if (pthread_create(&th, NULL, serve_thread, &sa_)) {
        free(dgt);
        free(rgt);
        free(metrics_path);
        return GL_EXIT_FAIL;
    }
    while (!bound && !sa_.done)
        usleep(10000);
    if (bound && !sa_.done)
        gl_info("label service listening on %s, store %s", st.endpoint, o.db_dir);
    pthread_join(th, NULL);
    rc = sa_.rc;
    free(dgt);
    free(rgt);
    free(metrics_path);
    if (rc)
        return gl_cmd_fail(argv[0], &err);
    if (st.metrics_errors)
        gl_warn("%llu rewrites of the metrics file failed", (unsigned long long)st.metrics_errors);
    gl_info("stopped: %llu requests, %llu replies, %llu bad, %llu commits, %llu refused handshakes, "
            "%llu submissions stored, %llu stored replies pruned",
            (unsigned long long)st.requests, (unsigned long long)st.replies, (unsigned long long)st.bad_requests,
            (unsigned long long)st.commits, (unsigned long long)st.refused_handshakes,
            (unsigned long long)st.submissions, (unsigned long long)st.replies_pruned);
    return GL_EXIT_OK;
}

/* ---- backup ------------------------------------------------------------- */

static int cmd_backup(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'}, {"out", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'}, {0}};
    const char *db = NULL, *out = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "d:o:", opts, NULL)) != -1) {
        switch (c) {
        case 'd': db = optarg; break;
        case 'o': out = optarg; break;
        case 'h':
            printf("usage: %s --db DIR --out DIR\n\n"
                   "Copies the label store into a new folder: a consistent, compacted hot copy\n"
                   "(LMDB's copy), safe while the service runs. Start a server on the copy to\n"
                   "restore it.\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (!db || !out || optind != argc)
        return gl_usage_error(argv[0], "--db and --out are required");
    gl_err_t err = {0};
    label_store_t *s = label_store_open(db, NULL, &err);
    if (!s || label_store_backup(s, out, &err)) {
        label_store_close(&s);
        return gl_cmd_fail(argv[0], &err);
    }
    label_store_close(&s);
    return GL_EXIT_OK;
}

/* ---- admin -------------------------------------------------------------- */

/* Common option parsing of the admin commands: --db and a few more. */
typedef struct {
    const char *db, *out, *tokenizer, *jsonl, *format;
    int kind, admin;
    uint32_t overlap;
    uint64_t shard_records;
} admin_opts_t;

static int admin_parse(int argc, char **argv, admin_opts_t *a, const char *usage)
{
    static const struct option opts[] = {{"db", required_argument, NULL, 'd'},
                                         {"overlap", required_argument, NULL, 'n'},
                                         {"admin", no_argument, NULL, 'A'},
                                         {"kind", required_argument, NULL, 'k'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"tokenizer", required_argument, NULL, 't'},
                                         {"jsonl", required_argument, NULL, 'j'},
                                         {"format", required_argument, NULL, 'f'},
                                         {"shard-records", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "d:n:k:o:t:j:f:r:", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->db = optarg; break;
        case 'n':
            if (parse_u32(argv[0], "overlap", optarg, &a->overlap) || a->overlap == 0 || a->overlap > 999)
                return gl_usage_error(argv[0], "--overlap must be 1..999");
            break;
        case 'A': a->admin = 1; break;
        case 'k':
            if (!strcmp(optarg, "sft"))
                a->kind = LABEL_EXPORT_SFT;
            else if (!strcmp(optarg, "rm"))
                a->kind = LABEL_EXPORT_RM;
            else
                return gl_usage_error(argv[0], "--kind is sft or rm");
            break;
        case 'o': a->out = optarg; break;
        case 't': a->tokenizer = optarg; break;
        case 'j': a->jsonl = optarg; break;
        case 'f': a->format = optarg; break;
        case 'r':
            if (gl_parse_u64(optarg, &a->shard_records) < 0 || !a->shard_records)
                return gl_usage_error(argv[0], "bad --shard-records");
            break;
        case 'h': printf("usage: %s %s\n", argv[0], usage); return -1;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (!a->db)
        return gl_usage_error(argv[0], "--db DIR is required");
    return 0;
}

#define ADMIN_PARSE(usage)                                                                                        \
    admin_opts_t a = {0};                                                                                         \
    int prc = admin_parse(argc, argv, &a, usage);                                                                 \
    if (prc)                                                                                                      \
        return prc < 0 ? GL_EXIT_OK : prc;                                                                        \
    gl_err_t err = {0};

static int cmd_add(int argc, char **argv)
{
    ADMIN_PARSE("--db DIR [--admin] [--] ID PUBLIC_KEY|FILE.pub\n\n"
                "Registers a contractor's public key (Z85, or a .pub file from 'gptline label\n"
                "keygen'). --admin gives the admin role. A Z85 key may begin with '-': put\n"
                "'--' before ID then.")
    if (optind != argc - 2)
        return gl_usage_error(argv[0], "expected ID and a public key or .pub file");
    label_keypair_t kp;
    const char *key = argv[optind + 1];
    if (strlen(key) != 40 || access(key, F_OK) == 0) {
        if (label_key_read(key, &kp, &err))
            return gl_cmd_fail(argv[0], &err);
        key = kp.public_z85;
    }
    label_store_t *s = label_store_open(a.db, NULL, &err);
    int rc = !s || label_store_add_contractor(s, argv[optind], key,
                                              a.admin ? GPTLINE__LABEL__ROLE__ADMIN : GPTLINE__LABEL__ROLE__CONTRACTOR,
                                              &err);
    label_store_close(&s);
    if (rc)
        return gl_cmd_fail(argv[0], &err);
    gl_info("registered %s", argv[optind]);
    return GL_EXIT_OK;
}

static int cmd_revoke(int argc, char **argv)
{
    ADMIN_PARSE("--db DIR ID\n\nRevokes a contractor: the key is refused at the next handshake and\n"
                "requests on open connections are refused.")
    if (optind != argc - 1)
        return gl_usage_error(argv[0], "expected one ID");
    label_store_t *s = label_store_open(a.db, NULL, &err);
    int rc = !s || label_store_revoke(s, argv[optind], &err);
    label_store_close(&s);
    return rc ? gl_cmd_fail(argv[0], &err) : GL_EXIT_OK;
}

static int cmd_list(int argc, char **argv)
{
    ADMIN_PARSE("--db DIR\n\nLists the registered contractors, one JSON object a line:\n"
                "{\"id\",\"role\",\"revoked\",\"public_key\",\"created_unix_ms\"}.")
    if (optind != argc)
        return gl_usage_error(argv[0], "unexpected argument");
    label_store_t *s = label_store_open(a.db, NULL, &err);
    char *text = NULL;
    int rc = !s || label_store_list_contractors(s, &text, &err);
    label_store_close(&s);
    if (rc)
        return gl_cmd_fail(argv[0], &err);
    fputs(text, stdout);
    free(text);
    return GL_EXIT_OK;
}

static int do_import(int argc, char **argv, int ranking)
{
    ADMIN_PARSE(ranking ? "--db DIR [--overlap N] FILE.jsonl\n\n"
                          "Imports ranking tasks, one JSON object a line:\n"
                          "  {\"prompt\": \"...\", \"candidates\": [\"...\", ...], \"overlap\": N, \"id\": \"...\"}\n"
                          "with 2..9 candidates, each a string or {\"text\": \"...\", \"author\": \"ID\"}\n"
                          "(an author never ranks the task). --overlap: contractors per task (1)."
                        : "--db DIR [--overlap N] FILE.jsonl\n\n"
                          "Imports prompts as demonstration tasks, one JSON object a line:\n"
                          "  {\"prompt\": \"...\", \"overlap\": N, \"id\": \"...\"}\n"
                          "--overlap: contractors per prompt (default 1). FILE '-' reads stdin.")
    if (optind != argc - 1)
        return gl_usage_error(argv[0], "expected one FILE.jsonl");
    label_store_t *s = label_store_open(a.db, NULL, &err);
    if (!s)
        return gl_cmd_fail(argv[0], &err);
    uint64_t added = 0, bad = 0;
    int rc = ranking ? label_store_import_candidates(s, argv[optind], a.overlap, &added, &bad, &err)
                     : label_store_import_prompts(s, argv[optind], a.overlap, &added, &bad, &err);
    label_store_close(&s);
    if (rc)
        return gl_cmd_fail(argv[0], &err);
    if (bad)
        gl_warn("%llu bad lines skipped; first: %s", (unsigned long long)bad, err.msg);
    printf("imported %llu %s tasks\n", (unsigned long long)added, ranking ? "ranking" : "demonstration");
    return bad ? GL_EXIT_INVALID : GL_EXIT_OK;
}

static int cmd_import_prompts(int argc, char **argv) { return do_import(argc, argv, 0); }
static int cmd_import_candidates(int argc, char **argv) { return do_import(argc, argv, 1); }

static int cmd_stats(int argc, char **argv)
{
    ADMIN_PARSE("--db DIR\n\nPrints JSON statistics: per queue (pending, leased, done) and per\n"
                "contractor (demonstrations, rankings, skips, median seconds per task, pairwise\n"
                "agreement and Kendall's tau with others on shared ranking tasks).")
    if (optind != argc)
        return gl_usage_error(argv[0], "unexpected argument");
    label_store_t *s = label_store_open(a.db, NULL, &err);
    char *json = NULL;
    int rc = !s || label_store_stats(s, (int64_t)time(NULL) * 1000, &json, &err);
    label_store_close(&s);
    if (rc)
        return gl_cmd_fail(argv[0], &err);
    puts(json);
    free(json);
    return GL_EXIT_OK;
}

static int cmd_export(int argc, char **argv)
{
    ADMIN_PARSE("--db DIR --kind sft|rm [--out DIR] [--tokenizer VOCAB|bytes] [--jsonl FILE] [--format F]\n\n"
                "Exports every submission of a kind, in submission order:\n"
                "  --out DIR           sealed shards (record kind SFT or RM) the trainer reads\n"
                "  --tokenizer VOCAB   a BPE vocabulary (tiktoken ranks, GPT-2 encoder.json,\n"
                "                      .gltok), laid out with its chat-role tokens <|user|>,\n"
                "                      <|assistant|>, <|endoftext|>; or 'bytes' (byte-level ids,\n"
                "                      end-of-text 256, plain-text role markers; the default)\n"
                "  --shard-records N   records per shard (default 1M)\n"
                "  --jsonl FILE        JSONL too ('-' for stdout), --format:\n"
                "                        sft: prompt-response   {\"prompt\",\"response\",...}\n"
                "                        rm:  hh                {\"chosen\",\"rejected\"} per strict pair (HH-RLHF)\n"
                "                             ranked (default)  {\"prompt\",\"responses\" best first,\"rank\",...}")
    if (optind != argc || !a.kind || (!a.out && !a.jsonl))
        return gl_usage_error(argv[0], "--kind and one of --out / --jsonl are required");
    label_export_opts_t o = {.kind = (label_export_kind_t)a.kind, .out_dir = a.out,
                             .tokenizer = a.tokenizer ? a.tokenizer : "bytes", .jsonl_path = a.jsonl,
                             .shard_records = a.shard_records};
    if (a.jsonl) {
        const char *f = a.format ? a.format : (a.kind == LABEL_EXPORT_SFT ? "prompt-response" : "ranked");
        if (a.kind == LABEL_EXPORT_SFT && !strcmp(f, "prompt-response"))
            o.jsonl = LABEL_JSONL_PROMPT_RESPONSE;
        else if (a.kind == LABEL_EXPORT_RM && !strcmp(f, "hh"))
            o.jsonl = LABEL_JSONL_HH;
        else if (a.kind == LABEL_EXPORT_RM && !strcmp(f, "ranked"))
            o.jsonl = LABEL_JSONL_RANKED;
        else
            return gl_usage_error(argv[0], "--format %s does not apply to --kind %s", f,
                                  a.kind == LABEL_EXPORT_SFT ? "sft" : "rm");
    }
    label_store_t *s = label_store_open(a.db, NULL, &err);
    if (!s)
        return gl_cmd_fail(argv[0], &err);
    gl_progress_t p;
    gl_progress_start(&p, "export", "records", 0, 0);
    o.progress = &p;
    label_export_stats_t st;
    int rc = label_export(s, &o, &st, &err);
    gl_progress_finish(&p);
    label_store_close(&s);
    if (rc)
        return gl_cmd_fail(argv[0], &err);
    fprintf(stderr, "exported %llu records (%llu comparisons, %llu tokens) into %llu shards, %llu JSONL lines\n",
            (unsigned long long)st.records, (unsigned long long)st.comparisons, (unsigned long long)st.tokens,
            (unsigned long long)st.shards, (unsigned long long)st.jsonl_lines);
    return GL_EXIT_OK;
}

static const gl_cmd_t admin_cmds[] = {
    {"add-contractor", cmd_add, "register a contractor's public key"},
    {"revoke", cmd_revoke, "revoke a contractor"},
    {"list", cmd_list, "list the registered contractors"},
    {"import-prompts", cmd_import_prompts, "import prompts (JSONL) as demonstration tasks"},
    {"import-candidates", cmd_import_candidates, "import prompts with candidates (JSONL) as ranking tasks"},
    {"stats", cmd_stats, "queues, throughput and agreement, as JSON"},
    {"export", cmd_export, "export labels to SFT/RM shards and JSONL"},
    {NULL, NULL, NULL},
};

static int cmd_admin(int argc, char **argv) { return gl_cmd_dispatch(argv[0], admin_cmds, argc, argv); }

/* ---- client ------------------------------------------------------------- */

typedef struct {
    label_client_t *c;
    int failed;
} client_ctx_t;

static void print_result(long line, int replayed, const Gptline__Label__Reply *rep, uint64_t task)
{
    json_t *o = json_object();
    if (line)
        json_object_set_new(o, "line", json_integer(line));
    if (replayed)
        json_object_set_new(o, "replayed", json_true());
    json_object_set_new(o, "request", json_integer((json_int_t)rep->request_id));
    json_object_set_new(o, "status", json_string(label_status_name(rep->status)));
    if (rep->body_case == GPTLINE__LABEL__REPLY__BODY_ACK) {
        json_object_set_new(o, "task", json_integer((json_int_t)rep->ack->task_id));
        if (rep->ack->submission_id)
            json_object_set_new(o, "submission", json_integer((json_int_t)rep->ack->submission_id));
    } else if (task) {
        json_object_set_new(o, "task", json_integer((json_int_t)task));
    }
    if (rep->error && *rep->error)
        json_object_set_new(o, "error", json_string(rep->error));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    puts(s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

static void on_replay(void *ctx, const Gptline__Label__Request *req, const Gptline__Label__Reply *rep)
{
    (void)ctx;
    (void)req;
    print_result(0, 1, rep, 0);
}

/* Leases one task (a given id, or the next of a kind). Caller frees *rep. */
static int lease(label_client_t *c, Gptline__Label__TaskKind kind, uint64_t task_id, Gptline__Label__Reply **rep,
                 gl_err_t *err)
{
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__LeaseRequest l = GPTLINE__LABEL__LEASE_REQUEST__INIT;
    l.kind = kind;
    l.task_id = task_id;
    l.count = 1;
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_LEASE;
    q.lease = &l;
    return label_client_call(c, &q, 0, rep, err);
}

static int batch_line(label_client_t *c, long lineno, json_t *o, gl_err_t *err, int *bad)
{
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__SubmitDemonstration d = GPTLINE__LABEL__SUBMIT_DEMONSTRATION__INIT;
    Gptline__Label__SubmitRanking r = GPTLINE__LABEL__SUBMIT_RANKING__INIT;
    Gptline__Label__SkipTask sk = GPTLINE__LABEL__SKIP_TASK__INIT;
    Gptline__Label__SubmitPrompt sp = GPTLINE__LABEL__SUBMIT_PROMPT__INIT;
    Gptline__Label__Reply *rep = NULL;
    uint32_t rank[LABEL_MAX_CANDIDATES], flags[LABEL_MAX_CANDIDATES];
    int rc = GL_OK;
    json_t *jt = json_object_get(o, "task");
    if (jt && (!json_is_integer(jt) || json_integer_value(jt) <= 0)) {
        fprintf(stderr, "line %ld: \"task\" must be a task number (as the results print it)\n", lineno);
        *bad = 1;
        return GL_OK;
    }
    uint64_t task = jt ? (uint64_t)json_integer_value(jt) : 0;
    Gptline__Label__TaskKind kind = 0;
    const char *prompt = json_string_value(json_object_get(o, "prompt"));
    json_t *response = json_object_get(o, "response"), *ranking = json_object_get(o, "ranking"),
           *skip = json_object_get(o, "skip");
    if (json_is_string(response))
        kind = GPTLINE__LABEL__TASK_KIND__DEMONSTRATION;
    else if (json_is_array(ranking))
        kind = GPTLINE__LABEL__TASK_KIND__RANKING;
    else if (json_is_string(skip)) {
        const char *k = json_string_value(json_object_get(o, "kind"));
        kind = k && !strcmp(k, "ranking") ? GPTLINE__LABEL__TASK_KIND__RANKING
               : k && !strcmp(k, "demonstration") ? GPTLINE__LABEL__TASK_KIND__DEMONSTRATION : 0;
    } else if (!prompt) {
        fprintf(stderr, "line %ld: expected \"response\", \"ranking\", \"skip\" or \"prompt\"\n", lineno);
        *bad = 1;
        return GL_OK;
    }
    if (prompt && !kind) {
        sp.prompt = (char *)prompt;
        q.body_case = GPTLINE__LABEL__REQUEST__BODY_PROMPT;
        q.prompt = &sp;
        goto send;
    }
    if ((rc = lease(c, kind, task, &rep, err)))
        return rc;
    if (rep->status != GPTLINE__LABEL__STATUS__STATUS_OK || rep->body_case != GPTLINE__LABEL__REPLY__BODY_TASKS ||
        rep->tasks->n_tasks == 0) {
        print_result(lineno, 0, rep, task);
        if (rep->status != GPTLINE__LABEL__STATUS__STATUS_NO_TASK)
            *bad = 1;
        gptline__label__reply__free_unpacked(rep, NULL);
        return GL_OK;
    }
    const Gptline__Label__TaskView *tv = rep->tasks->tasks[0];
    task = tv->task_id;
    if (json_is_string(skip)) {
        sk.task_id = task;
        sk.reason = (char *)json_string_value(skip);
        q.body_case = GPTLINE__LABEL__REQUEST__BODY_SKIP;
        q.skip = &sk;
    } else if (kind == GPTLINE__LABEL__TASK_KIND__DEMONSTRATION) {
        d.task_id = task;
        d.response = (char *)json_string_value(response);
        q.body_case = GPTLINE__LABEL__REQUEST__BODY_DEMONSTRATION;
        q.demonstration = &d;
    } else {
        size_t i;
        json_t *x;
        r.task_id = task;
        json_array_foreach(ranking, i, x) if (i < LABEL_MAX_CANDIDATES) rank[r.n_rank++] = (uint32_t)json_integer_value(x);
        json_array_foreach(json_object_get(o, "flags"), i, x) if (i < LABEL_MAX_CANDIDATES) flags[r.n_flags++] =
            (uint32_t)json_integer_value(x);
        r.rank = rank;
        r.flags = r.n_flags ? flags : NULL;
        r.rating = (uint32_t)json_integer_value(json_object_get(o, "rating"));
        q.body_case = GPTLINE__LABEL__REQUEST__BODY_RANKING;
        q.ranking = &r;
    }
    gptline__label__reply__free_unpacked(rep, NULL);
    rep = NULL;
send:
    if ((rc = label_client_call(c, &q, 1, &rep, err)))
        return rc;
    print_result(lineno, 0, rep, task);
    if (rep->status != GPTLINE__LABEL__STATUS__STATUS_OK)
        *bad = 1;
    gptline__label__reply__free_unpacked(rep, NULL);
    return GL_OK;
}

static int run_batch(label_client_t *c, const char *path, gl_err_t *err, int *bad)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f)
        return gl_err_set(err, GL_ENOTFOUND, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = GL_OK;
    while (!rc && !stop_flag && (len = getline(&line, &cap, f)) > 0) {
        lineno++;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        if (!json_is_object(o)) {
            if (len > 1) {
                fprintf(stderr, "%s:%ld: %s\n", path, lineno, o ? "not a JSON object" : je.text);
                *bad = 1;
            }
            json_decref(o);
            continue;
        }
        rc = batch_line(c, lineno, o, err, bad);
        json_decref(o);
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

/* Interactive: lines from stdin, prompts on stderr. */
static char *ask(const char *question)
{
    static char *line;
    static size_t cap;
    fprintf(stderr, "%s", question);
    fflush(stderr);
    ssize_t n = getline(&line, &cap, stdin);
    if (n <= 0) {
        free(line);
        line = NULL;
        cap = 0;
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = 0;
    return line;
}

static char *edit_response(const Gptline__Label__TaskView *t)
{
    char path[] = "/tmp/gptline-label-XXXXXX.md";
    int fd = mkstemps(path, 3);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "w");
    fprintf(f, "\n# Write the ideal response above. Lines starting with '#' are ignored;\n"
               "# an empty response cancels.\n#\n# Prompt:\n");
    char *dup = gl_xstrdup(t->prompt), *save = NULL;
    for (char *l = strtok_r(dup, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        fprintf(f, "#   %s\n", l);
    free(dup);
    fclose(f);
    const char *ed = getenv("VISUAL") ? getenv("VISUAL") : getenv("EDITOR") ? getenv("EDITOR") : "vi";
    size_t cl = strlen(ed) + strlen(path) + 8;
    char *cmd = gl_xmalloc(cl);
    snprintf(cmd, cl, "%s '%s'", ed, path);
    int st = system(cmd);
    free(cmd);
    char *data = NULL, *out = NULL;
    size_t len, o = 0;
    gl_err_t e;
    if (st == 0 && !gl_read_file(path, LABEL_MAX_RESPONSE + 4096, &data, &len, &e)) {
        out = gl_xmalloc(len + 1);
        save = NULL;
        for (char *p = data; p && *p;) {
            char *nl = strchr(p, '\n');
            size_t ll = nl ? (size_t)(nl - p) + 1 : strlen(p);
            if (*p != '#') {
                memcpy(out + o, p, ll);
                o += ll;
            }
            p = nl ? nl + 1 : NULL;
        }
        while (o && (out[o - 1] == '\n' || out[o - 1] == ' '))
            o--;
        out[o] = 0;
    }
    free(data);
    unlink(path);
    if (out && !*out) {
        free(out);
        out = NULL;
    }
    return out;
}

/* "2 1 3" (best first) or "2=1 3" (tie) -> rank[i] for candidate i. */
static int parse_order(const char *s, size_t k, uint32_t *rank)
{
    int seen[LABEL_MAX_CANDIDATES] = {0};
    uint32_t pos = 0;
    size_t n = 0;
    for (const char *p = s; *p;) {
        while (*p == ' ' || *p == ',' || *p == '>')
            p++;
        if (!*p)
            break;
        if (*p < '1' || *p > '9')
            return -1;
        size_t c = (size_t)(*p - '1');
        if (c >= k || seen[c])
            return -1;
        seen[c] = 1;
        rank[c] = pos;
        n++;
        p++;
        if (*p == '=') {
            p++;
            continue; /* same position */
        }
        pos++;
    }
    return n == k ? 0 : -1;
}

static void show_progress(label_client_t *c)
{
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__ProgressRequest pr = GPTLINE__LABEL__PROGRESS_REQUEST__INIT;
    Gptline__Label__Reply *rep;
    gl_err_t e;
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_PROGRESS;
    q.progress = &pr;
    if (label_client_call(c, &q, 0, &rep, &e) == 0) {
        if (rep->body_case == GPTLINE__LABEL__REPLY__BODY_PROGRESS)
            fprintf(stderr, "progress: %llu demonstrations, %llu rankings, %llu skips; open: %llu + %llu\n",
                    (unsigned long long)rep->progress->demonstrations, (unsigned long long)rep->progress->rankings,
                    (unsigned long long)rep->progress->skips, (unsigned long long)rep->progress->open_demonstrations,
                    (unsigned long long)rep->progress->open_rankings);
        gptline__label__reply__free_unpacked(rep, NULL);
    }
}

/* Shows a task on stderr; when it is longer than the terminal, through
 * $PAGER (default "less") so that long candidates can be paged. */
static void show_task(const Gptline__Label__TaskView *t)
{
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    fprintf(m, "\n== task %llu (%s)\n\nPROMPT:\n%s\n\n", (unsigned long long)t->task_id,
            t->kind == GPTLINE__LABEL__TASK_KIND__RANKING ? "ranking" : "demonstration", t->prompt);
    for (size_t i = 0; i < t->n_candidates; i++)
        fprintf(m, "--- candidate %zu ---\n%s\n\n", i + 1, t->candidates[i]->text);
    fclose(m);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    struct winsize ws;
    FILE *pager = NULL;
    if (isatty(2) && ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_row && lines + 4 > ws.ws_row) {
        const char *pg = getenv("PAGER") && *getenv("PAGER") ? getenv("PAGER") : "less";
        fflush(stderr);
        pager = popen(pg, "w");
    }
    if (pager) {
        fwrite(text, 1, len, pager);
        pclose(pager);
        fprintf(stderr, "(task %llu shown in %s)\n", (unsigned long long)t->task_id,
                getenv("PAGER") && *getenv("PAGER") ? getenv("PAGER") : "less");
    } else {
        fwrite(text, 1, len, stderr);
    }
    free(text);
}

static int run_interactive(label_client_t *c, Gptline__Label__TaskKind kind, gl_err_t *err)
{
    int rc = GL_OK;
    while (!stop_flag) {
        show_progress(c);
        Gptline__Label__Reply *rep = NULL;
        if ((rc = lease(c, kind, 0, &rep, err)))
            return rc;
        if (rep->status != GPTLINE__LABEL__STATUS__STATUS_OK || !rep->tasks || !rep->tasks->n_tasks) {
            fprintf(stderr, "%s\n", rep->error && *rep->error ? rep->error : "no task");
            gptline__label__reply__free_unpacked(rep, NULL);
            return GL_OK;
        }
        const Gptline__Label__TaskView *t = rep->tasks->tasks[0];
        Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
        Gptline__Label__SubmitDemonstration d = GPTLINE__LABEL__SUBMIT_DEMONSTRATION__INIT;
        Gptline__Label__SubmitRanking r = GPTLINE__LABEL__SUBMIT_RANKING__INIT;
        Gptline__Label__SkipTask sk = GPTLINE__LABEL__SKIP_TASK__INIT;
        uint32_t rank[LABEL_MAX_CANDIDATES], flags[LABEL_MAX_CANDIDATES] = {0};
        char *text = NULL, *reason = NULL;
        double t0 = gl_now();
        show_task(t);
        if (t->kind == GPTLINE__LABEL__TASK_KIND__RANKING) {
            const char *a;
            for (;;) {
                a = ask("order best to worst (e.g. \"2 1 3\", ties \"2=1 3\"; s = skip, q = quit): ");
                if (!a || !strcmp(a, "q") || !strcmp(a, "s") || parse_order(a, t->n_candidates, rank) == 0)
                    break;
                fprintf(stderr, "name each of the %zu candidates once\n", t->n_candidates);
            }
            if (a && !strcmp(a, "s")) {
                const char *why = ask("reason for skipping: ");
                reason = gl_xstrdup(why && *why ? why : "skipped");
            } else if (!a || !strcmp(a, "q")) {
                gptline__label__reply__free_unpacked(rep, NULL);
                return GL_OK;
            } else {
                a = ask("flags (e.g. \"1u 3w 2i\": u unsafe, w factually wrong, i fails the instruction; empty: none): ");
                for (const char *p = a; p && *p; p++)
                    if (*p >= '1' && *p <= '9' && (size_t)(*p - '1') < t->n_candidates) {
                        size_t ci = (size_t)(*p - '1');
                        for (p++; *p && *p != ' '; p++)
                            flags[ci] |= *p == 'u' ? 1u : *p == 'w' ? 2u : *p == 'i' ? 4u : 0u;
                        if (!*p)
                            break;
                    }
                unsigned rating = 0;
                while (rating < 1 || rating > 7) {
                    a = ask("overall rating 1-7: ");
                    if (!a)
                        break;
                    rating = (unsigned)atoi(a);
                }
                r.task_id = t->task_id;
                r.rank = rank;
                r.n_rank = t->n_candidates;
                r.flags = flags;
                r.n_flags = t->n_candidates;
                r.rating = rating;
                q.body_case = GPTLINE__LABEL__REQUEST__BODY_RANKING;
                q.ranking = &r;
            }
        } else {
            const char *a = ask("press Enter to write the response in $EDITOR (s = skip, q = quit): ");
            if (!a || !strcmp(a, "q")) {
                gptline__label__reply__free_unpacked(rep, NULL);
                return GL_OK;
            }
            if (!strcmp(a, "s")) {
                const char *why = ask("reason for skipping: ");
                reason = gl_xstrdup(why && *why ? why : "skipped");
            } else {
                text = edit_response(t);
                if (!text) {
                    fprintf(stderr, "empty response: nothing submitted (the lease expires by itself)\n");
                    gptline__label__reply__free_unpacked(rep, NULL);
                    continue;
                }
                fprintf(stderr, "RESPONSE:\n%s\n\n", text);
                d.task_id = t->task_id;
                d.response = text;
                q.body_case = GPTLINE__LABEL__REQUEST__BODY_DEMONSTRATION;
                q.demonstration = &d;
            }
        }
        if (reason) {
            sk.task_id = t->task_id;
            sk.reason = reason;
            q.body_case = GPTLINE__LABEL__REQUEST__BODY_SKIP;
            q.skip = &sk;
        }
        uint32_t secs = (uint32_t)(gl_now() - t0);
        d.seconds_spent = r.seconds_spent = secs;
        const char *yes = ask("submit? [y/n] ");
        if (yes && (yes[0] == 'y' || yes[0] == 'Y')) {
            Gptline__Label__Reply *ack = NULL;
            rc = label_client_call(c, &q, 1, &ack, err);
            if (!rc) {
                fprintf(stderr, "%s%s%s\n", label_status_name(ack->status), ack->error && *ack->error ? ": " : "",
                        ack->error ? ack->error : "");
                gptline__label__reply__free_unpacked(ack, NULL);
            }
        } else {
            fprintf(stderr, "not submitted\n");
        }
        free(text);
        free(reason);
        gptline__label__reply__free_unpacked(rep, NULL);
        if (rc)
            return rc;
    }
    return rc;
}

static int cmd_client(int argc, char **argv)
{
    static const struct option opts[] = {{"endpoint", required_argument, NULL, 'e'},
                                         {"server-key", required_argument, NULL, 's'},
                                         {"key", required_argument, NULL, 'k'},
                                         {"journal", required_argument, NULL, 'J'},
                                         {"batch", required_argument, NULL, 'b'},
                                         {"kind", required_argument, NULL, 'K'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"retries", required_argument, NULL, 'r'},
                                         {"guidelines", no_argument, NULL, 'g'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    label_client_opts_t o = {.endpoint = "tcp://127.0.0.1:5555"};
    const char *skey = NULL, *key = NULL, *batch = NULL, *journal = NULL;
    Gptline__Label__TaskKind kind = 0;
    int c, guidelines = 0;
    uint32_t v = 0;
    while ((c = getopt_long(argc, argv, "e:s:k:b:t:r:", opts, NULL)) != -1) {
        switch (c) {
        case 'e': o.endpoint = optarg; break;
        case 's': skey = optarg; break;
        case 'k': key = optarg; break;
        case 'J': journal = optarg; break;
        case 'b': batch = optarg; break;
        case 'g': guidelines = 1; break;
        case 'K':
            if (!strcmp(optarg, "demonstration") || !strcmp(optarg, "demo"))
                kind = GPTLINE__LABEL__TASK_KIND__DEMONSTRATION;
            else if (!strcmp(optarg, "ranking") || !strcmp(optarg, "rank"))
                kind = GPTLINE__LABEL__TASK_KIND__RANKING;
            else
                return gl_usage_error(argv[0], "--kind is demonstration or ranking");
            break;
        case 't':
            if (parse_u32(argv[0], "timeout", optarg, &v))
                return GL_EXIT_USAGE;
            o.timeout_ms = (int)v;
            break;
        case 'r':
            if (parse_u32(argv[0], "retries", optarg, &v))
                return GL_EXIT_USAGE;
            o.retries = (int)v;
            break;
        case 'h':
            printf("usage: %s --server-key SERVER.pub --key ME.key [options]\n\n"
                   "The contractor client. Without --batch: interactive (guidelines, then tasks\n"
                   "one by one; demonstrations in $EDITOR, rankings typed as an order).\n\n"
                   "  -e, --endpoint EP       the service (default tcp://127.0.0.1:5555)\n"
                   "  -s, --server-key FILE   the server's public key (.pub)\n"
                   "  -k, --key FILE          your key pair (.key, from 'gptline label keygen')\n"
                   "      --journal DIR       unsent submissions, replayed at start\n"
                   "                          (default ~/.local/state/gptline/label-journal)\n"
                   "  -b, --batch FILE        submit non-interactively; one JSON object a line:\n"
                   "                            {\"response\": \"...\"}            next demonstration\n"
                   "                            {\"ranking\": [0,1,1], \"flags\": [0,0,1], \"rating\": 5}\n"
                   "                            {\"skip\": \"reason\", \"kind\": \"ranking\"}\n"
                   "                            {\"prompt\": \"...\"}              a new prompt\n"
                   "                          \"task\": N (a task number) aims a line at one task.\n"
                   "                          One JSON result a line on stdout.\n"
                   "      --kind K            demonstration or ranking only (interactive)\n"
                   "      --guidelines        print the guidelines and exit\n"
                   "  -t, --timeout MS        per try (default 2500)\n"
                   "  -r, --retries N         tries before giving up (default 3); unsent work\n"
                   "                          stays in the journal\n\n"
                   "Exit status: 0 all accepted, 1 something was rejected or not sent.\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind != argc || !skey || !key)
        return gl_usage_error(argv[0], "--server-key and --key are required");
    gl_err_t err = {0};
    label_keypair_t sk;
    if (label_key_read(skey, &sk, &err) || label_key_read(key, &o.key, &err))
        return gl_cmd_fail(argv[0], &err);
    if (!o.key.secret_z85[0])
        return gl_usage_error(argv[0], "%s holds no secret key (use your .key file)", key);
    memcpy(o.server_public_z85, sk.public_z85, 41);
    char *jdef = NULL;
    if (!journal) {
        const char *home = getenv("HOME");
        size_t l = (home ? strlen(home) : 4) + 80;
        jdef = gl_xmalloc(l);
        snprintf(jdef, l, "%s/.local/state/gptline/label-journal/%.8s", home ? home : "/tmp", o.key.public_z85);
        journal = jdef;
    }
    o.journal_dir = journal;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc, bad = 0;
    label_client_t *cl = label_client_open(&o, &err);
    if (!cl) {
        free(jdef);
        return gl_cmd_fail(argv[0], &err);
    }
    /* hello: proves the key and fetches the guidelines */
    Gptline__Label__Request q = GPTLINE__LABEL__REQUEST__INIT;
    Gptline__Label__Hello h = GPTLINE__LABEL__HELLO__INIT;
    Gptline__Label__Reply *rep = NULL;
    h.client = "gptline " GL_VERSION;
    q.body_case = GPTLINE__LABEL__REQUEST__BODY_HELLO;
    q.hello = &h;
    if ((rc = label_client_call(cl, &q, 0, &rep, &err)))
        goto out;
    if (rep->status != GPTLINE__LABEL__STATUS__STATUS_OK || rep->body_case != GPTLINE__LABEL__REPLY__BODY_WELCOME) {
        rc = gl_err_set(&err, GL_EINVAL, "server: %s: %s", label_status_name(rep->status),
                        rep->error ? rep->error : "");
        goto out;
    }
    if (guidelines || (!batch && isatty(0)))
        printf("Welcome, %s.\n\nDEMONSTRATIONS\n%s\nRANKINGS\n%s\n", rep->welcome->contractor,
               rep->welcome->demonstration_guidelines, rep->welcome->ranking_guidelines);
    if (guidelines)
        goto out;
    size_t replayed = 0;
    if ((rc = label_client_replay(cl, on_replay, NULL, &replayed, &err)))
        goto out;
    if (replayed)
        gl_info("replayed %zu journaled submission(s)", replayed);
    rc = batch ? run_batch(cl, batch, &err, &bad) : run_interactive(cl, kind, &err);
out:
    if (rep)
        gptline__label__reply__free_unpacked(rep, NULL);
    label_client_close(&cl);
    if (rc) {
        if (rc == GL_EIO)
            gl_error("unsent submissions stay in %s and are replayed at the next start", journal);
        free(jdef);
        gl_cmd_fail(argv[0], &err);
        return GL_EXIT_FAIL; /* a refused key or an unreachable server: not a usage error */
    }
    free(jdef);
    return bad ? GL_EXIT_FAIL : GL_EXIT_OK;
}

/* ---- dispatch ----------------------------------------------------------- */

static const gl_cmd_t label_cmds[] = {
    {"keygen", cmd_keygen, "make a CURVE key pair (NAME.key, NAME.pub)"},
    {"serve", cmd_serve, "run the labeling service"},
    {"client", cmd_client, "the contractor client (interactive or --batch)"},
    {"backup", cmd_backup, "hot copy of the label store"},
    {"admin", cmd_admin, "contractors, imports, stats and export"},
    {NULL, NULL, NULL},
};

int label_cmd(int argc, char **argv) { return gl_cmd_dispatch(argv[0], label_cmds, argc, argv); }
