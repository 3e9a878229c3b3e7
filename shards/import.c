/* import.c — `gptline shards import`: JSONL in the formats people have →
 * SFT, RM or RL-prompt shards, laid out with the chat template.
 *
 *   sft  {"prompt": P, "response": R}            (optional "system")
 *        {"messages": [{"role", "content"}, ...]} (system/user/assistant)
 *   rm   {"chosen": C, "rejected": R}            Anthropic HH-RLHF transcripts
 *                                                 ("\n\nHuman: ...\n\nAssistant: ...")
 *        {"prompt": P, "responses": [best, ..., worst]} (optional "ranks": [0, 1, 1])
 *   rl   {"prompt": P} or {"messages": [...]}
 *
 * An SFT record's tokens are the whole conversation with the loss spans
 * over each assistant text and its end-of-text; an RM record's tokens are
 * the prompt (the conversation up to "<|assistant|>") followed by each
 * response; an RL record's tokens are the prompt. Inputs are read through
 * libarchive (gzip, zstd, ...). A bad line is reported with its file and
 * line number, counted, and skipped; every good line is kept; a line over
 * 16 MiB is refused without being held. Exit status 1 when any line was
 * bad.
 */
#include "shards/internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>

/* A longer line is refused (and counted) without being held in memory. */
#define IMPORT_MAX_LINE (16 << 20)

typedef enum { IMP_SFT, IMP_RM, IMP_RL } imp_kind_t;

typedef struct {
    shard_tokenizer_t tok;
    imp_kind_t kind;
    shard_writer_t *w;
    const char *dir, *prefix;
    unsigned next_index;
    uint64_t records, bad, tokens, max_records;
} importer_t;

/* Turns of a conversation: borrowed text pointers. */
typedef struct {
    tok_turn_t t[64];
    size_t n;
    char *owned[64]; /* texts cut from HH transcripts */
    size_t nowned;
} turns_t;

static void turns_free(turns_t *c)
{
    for (size_t i = 0; i < c->nowned; i++)
        free(c->owned[i]);
    c->n = c->nowned = 0;
}

static int add_turn(turns_t *c, tok_role_t role, const char *text, size_t len, char *owned)
{
    if (c->n == 64)
        return -1;
    c->t[c->n++] = (tok_turn_t){role, text, len};
    if (owned)
        c->owned[c->nowned++] = owned;
    return 0;
}

static int messages(json_t *arr, turns_t *c, char *why, size_t cap)
{
    size_t i;
    json_t *m;
    json_array_foreach(arr, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        int r = role ? tok_role_from_name(role) : -1;
        if (r < 0 || !json_is_string(content)) {
            snprintf(why, cap, "message %zu needs a known \"role\" and a string \"content\"", i);
            return -1;
        }
        if (add_turn(c, (tok_role_t)r, json_string_value(content), json_string_length(content), NULL)) {
            snprintf(why, cap, "more than 64 messages");
            return -1;
        }
    }
    return 0;
}

/* Splits an HH-RLHF transcript into turns; the last must be the
 * assistant's. */
static int hh_transcript(const char *s, turns_t *c, char *why, size_t cap)
{
    static const char *H = "\n\nHuman:", *A = "\n\nAssistant:";
    const char *p = s;
    while (*p) {
        const char *h = strstr(p, H), *a = strstr(p, A);
        const char *at = h && (!a || h < a) ? h : a;
        if (!at) {
            if (c->n == 0) {
                snprintf(why, cap, "not an HH transcript (no \"\\n\\nHuman:\")");
                return -1;
            }
            break;
        }
        tok_role_t role = at == h ? TOK_ROLE_USER : TOK_ROLE_ASSISTANT;
        const char *body = at + strlen(role == TOK_ROLE_USER ? H : A);
        while (*body == ' ')
            body++;
        const char *nh = strstr(body, H), *na = strstr(body, A);
        const char *end = nh && (!na || nh < na) ? nh : na ? na : body + strlen(body);
        size_t len = (size_t)(end - body);
        char *t = gl_xmalloc(len + 1);
        memcpy(t, body, len);
        t[len] = '\0';
        if (add_turn(c, role, t, len, t)) {
            free(t);
            snprintf(why, cap, "more than 64 turns");
            return -1;
        }
        p = end;
    }
    if (!c->n || c->t[c->n - 1].role != TOK_ROLE_ASSISTANT) {
        snprintf(why, cap, "the transcript does not end with an Assistant turn");
        return -1;
    }
    return 0;
}

static int open_shard(importer_t *im, gl_err_t *err)
{
    static const Gptline__RecordKind kinds[] = {GPTLINE__RECORD_KIND__SFT, GPTLINE__RECORD_KIND__RM,
                                                GPTLINE__RECORD_KIND__RL_PROMPTS};
    char name[256];
    snprintf(name, sizeof name, "%s-%06u%s", im->prefix, im->next_index++, SHARD_SUFFIX);
    char *path = gl_path_join(im->dir, name);
    shard_writer_opts_t o = shard_tokenizer_writer_opts(&im->tok, kinds[im->kind]);
    o.command = "shards import";
    im->w = shard_writer_create(path, &o, err);
    free(path);
    return im->w ? GL_OK : err->code;
}

/* One JSON line into one record. Returns 0, -1 for a bad line (why set),
 * or a gl_code_t for a write failure. */
static int import_line(importer_t *im, json_t *j, const char *input, char *why, size_t cap, gl_err_t *err)
{
    tok_ids_t ids = {0};
    tok_spans_t spans = {0};
    turns_t conv = {0}, other = {0};
    int rc = -1;
    if (!im->tok.vocab) {
        snprintf(why, cap, "import needs a vocabulary with chat roles (--tokenizer)");
        goto out;
    }
    const tok_vocab_t *v = im->tok.vocab;
    json_t *msgs = json_object_get(j, "messages");
    const char *system = json_string_value(json_object_get(j, "system"));
    if (system)
        add_turn(&conv, TOK_ROLE_SYSTEM, system, strlen(system), NULL);

    if (im->kind == IMP_SFT || im->kind == IMP_RL) {
        if (json_is_array(msgs)) {
            if (messages(msgs, &conv, why, cap))
                goto out;
        } else {
            json_t *pr = json_object_get(j, "prompt"), *re = json_object_get(j, "response");
            if (!json_is_string(pr) || (im->kind == IMP_SFT && !json_is_string(re))) {
                snprintf(why, cap, im->kind == IMP_SFT ? "needs \"prompt\" and \"response\" strings, or \"messages\""
                                                       : "needs a \"prompt\" string or \"messages\"");
                goto out;
            }
            add_turn(&conv, TOK_ROLE_USER, json_string_value(pr), json_string_length(pr), NULL);
            if (im->kind == IMP_SFT)
                add_turn(&conv, TOK_ROLE_ASSISTANT, json_string_value(re), json_string_length(re), NULL);
        }
        if (im->kind == IMP_RL && conv.n && conv.t[conv.n - 1].role == TOK_ROLE_ASSISTANT)
            conv.n--; /* the prompt is what comes before the reply */
        int has_asst = 0, has_user = 0;
        for (size_t i = 0; i < conv.n; i++) {
            has_asst |= conv.t[i].role == TOK_ROLE_ASSISTANT && conv.t[i].len > 0;
            has_user |= conv.t[i].role == TOK_ROLE_USER;
        }
        if (im->kind == IMP_SFT && !has_asst) {
            snprintf(why, cap, "no non-empty assistant message to learn from");
            goto out;
        }
        if (!has_user) {
            snprintf(why, cap, "no user message");
            goto out;
        }
    } else { /* RM */
        json_t *ch = json_object_get(j, "chosen"), *rj = json_object_get(j, "rejected");
        json_t *pr = json_object_get(j, "prompt"), *rs = json_object_get(j, "responses");
        const char *resp[9];
        size_t rlen[9], K = 0;
        uint32_t rank[9];
        if (json_is_string(ch) && json_is_string(rj)) {
            if (hh_transcript(json_string_value(ch), &conv, why, cap) ||
                hh_transcript(json_string_value(rj), &other, why, cap))
                goto out;
            resp[0] = conv.t[conv.n - 1].text, rlen[0] = conv.t[conv.n - 1].len;
            resp[1] = other.t[other.n - 1].text, rlen[1] = other.t[other.n - 1].len;
            rank[0] = 0, rank[1] = 1, K = 2;
            conv.n--; /* the prompt: the chosen transcript before its last reply */
        } else if (json_is_string(pr) && json_is_array(rs)) {
            K = json_array_size(rs);
            if (K < 2 || K > 9) {
                snprintf(why, cap, "\"responses\" must hold 2 to 9 strings, best first (has %zu)", K);
                goto out;
            }
            json_t *rk = json_object_get(j, "ranks");
            if (rk && (!json_is_array(rk) || json_array_size(rk) != K)) {
                snprintf(why, cap, "\"ranks\" must have one entry per response");
                goto out;
            }
            for (size_t i = 0; i < K; i++) {
                json_t *r = json_array_get(rs, i);
                json_t *rv = rk ? json_array_get(rk, i) : NULL;
                if (!json_is_string(r) || (rv && (!json_is_integer(rv) || json_integer_value(rv) < 0 ||
                                                  json_integer_value(rv) > 8))) {
                    snprintf(why, cap, "response %zu: not a string, or its rank not 0..8", i);
                    goto out;
                }
                resp[i] = json_string_value(r), rlen[i] = json_string_length(r);
                rank[i] = rv ? (uint32_t)json_integer_value(rv) : (uint32_t)i;
            }
            add_turn(&conv, TOK_ROLE_USER, json_string_value(pr), json_string_length(pr), NULL);
        } else {
            snprintf(why, cap, "needs \"chosen\" and \"rejected\" strings, or \"prompt\" and \"responses\"");
            goto out;
        }
        int distinct = 0;
        for (size_t i = 1; i < K; i++)
            distinct |= rank[i] != rank[0];
        if (!distinct) {
            snprintf(why, cap, "all responses tie: no preference to learn");
            goto out;
        }
        if ((rc = tok_chat_prompt(v, conv.t, conv.n, &ids, err)))
            goto out;
        rc = -1;
        Gptline__RmRanking r = GPTLINE__RM_RANKING__INIT;
        Gptline__Span ps = GPTLINE__SPAN__INIT, rsp[9], *rspp[9];
        ps.start = 0;
        ps.end = (uint32_t)ids.n;
        for (size_t i = 0; i < K; i++) {
            gptline__span__init(&rsp[i]);
            rsp[i].start = (uint32_t)ids.n;
            if ((rc = tok_encode(v, resp[i], rlen[i], TOK_ALLOW_NONE, &ids, err)))
                goto out;
            rsp[i].end = (uint32_t)ids.n;
            rspp[i] = &rsp[i];
        }
        r.prompt = &ps;
        r.n_responses = K;
        r.responses = rspp;
        r.n_rank = K;
        r.rank = rank;
        r.id = (char *)(json_string_value(json_object_get(j, "id")) ? json_string_value(json_object_get(j, "id"))
                                                                    : "");
        if (!im->w && (rc = open_shard(im, err)))
            goto out;
        rc = shard_writer_add(im->w, ids.ids, ids.n, &r.base, err);
        goto done;
    }

    if (im->kind == IMP_SFT) {
        if ((rc = tok_chat_encode(v, conv.t, conv.n, &ids, &spans, err)))
            goto out;
        Gptline__SftConversation s = GPTLINE__SFT_CONVERSATION__INIT;
        Gptline__Span sp[64], *spp[64];
        for (size_t i = 0; i < spans.n && i < 64; i++) {
            gptline__span__init(&sp[i]);
            sp[i].start = spans.s[i].start;
            sp[i].end = spans.s[i].end;
            spp[i] = &sp[i];
        }
        s.n_loss_spans = spans.n;
        s.loss_spans = spp;
        s.id = (char *)(json_string_value(json_object_get(j, "id")) ? json_string_value(json_object_get(j, "id"))
                                                                    : "");
        if (!im->w && (rc = open_shard(im, err)))
            goto out;
        rc = shard_writer_add(im->w, ids.ids, ids.n, &s.base, err);
    } else {
        if ((rc = tok_chat_prompt(v, conv.t, conv.n, &ids, err)))
            goto out;
        Gptline__RlPrompt p = GPTLINE__RL_PROMPT__INIT;
        p.id = (char *)(json_string_value(json_object_get(j, "id")) ? json_string_value(json_object_get(j, "id"))
                                                                    : "");
        p.text = (char *)(conv.n ? conv.t[conv.n - 1].text : "");
        if (!im->w && (rc = open_shard(im, err)))
            goto out;
        rc = shard_writer_add(im->w, ids.ids, ids.n, &p.base, err);
    }
done:
    if (!rc) {
        im->records++;
        im->tokens += ids.n;
    }
out:
    (void)input;
    tok_ids_free(&ids);
    tok_spans_free(&spans);
    turns_free(&conv);
    turns_free(&other);
    return rc;
}

/* Reads one input line by line; bad lines are reported and counted. */
static int import_file(importer_t *im, const char *path, const char *argv0, gl_err_t *err)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    archive_read_support_format_empty(a);
    struct archive_entry *e;
    int rc = GL_OK;
    int ok = strcmp(path, "-") ? archive_read_open_filename(a, path, 1 << 16)
                               : archive_read_open_fd(a, 0, 1 << 16);
    if (ok != ARCHIVE_OK || (ok = archive_read_next_header(a, &e)) == ARCHIVE_FATAL) {
        fprintf(stderr, "%s: %s: cannot read: %s\n", argv0, path, archive_error_string(a));
        im->bad++;
        goto out;
    }
    if (ok == ARCHIVE_EOF)
        goto out;
    char *line = NULL, buf[1 << 16];
    size_t len = 0, cap = 0;
    uint64_t lineno = 0;
    for (int eof = 0; !eof && !rc;) {
        la_ssize_t got = archive_read_data(a, buf, sizeof buf);
        if (got < 0) {
            fprintf(stderr, "%s: %s: read error after line %llu: %s\n", argv0, path, (unsigned long long)lineno,
                    archive_error_string(a));
            im->bad++;
            break;
        }
        eof = got == 0;
        for (la_ssize_t i = 0; (i < got || (eof && len)) && !rc; i++) {
            if (!eof && buf[i] != '\n') {
                if (len >= IMPORT_MAX_LINE) { /* keep counting, drop the bytes */
                    len++;
                    continue;
                }
                if (len + 1 >= cap) {
                    cap = cap ? 2 * cap : 4096;
                    line = gl_xrealloc(line, cap);
                }
                line[len++] = buf[i];
                continue;
            }
            lineno++;
            if (len > IMPORT_MAX_LINE) {
                fprintf(stderr, "%s: %s:%llu: line of %zu bytes is over the limit of %d\n", argv0, path,
                        (unsigned long long)lineno, len, IMPORT_MAX_LINE);
                im->bad++;
                len = 0;
                if (eof)
                    break;
                continue;
            }
            line = len + 1 > cap ? gl_xrealloc(line, cap = len + 1) : line;
            line[len] = '\0';
            size_t n = len;
            len = 0;
            while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
                line[--n] = '\0';
            if (!n)
                continue;
            json_error_t je;
            json_t *j = json_loadb(line, n, 0, &je);
            char why[256] = "";
            int r;
            if (!j || !json_is_object(j)) {
                snprintf(why, sizeof why, "not a JSON object: %s", j ? "" : je.text);
                r = -1;
            } else {
                r = import_line(im, j, path, why, sizeof why, err);
            }
            json_decref(j);
            if (r == -1) {
                fprintf(stderr, "%s: %s:%llu: %s\n", argv0, path, (unsigned long long)lineno, why);
                im->bad++;
            } else if (r) {
                rc = r;
            } else if (im->max_records && shard_writer_docs(im->w) >= im->max_records) {
                rc = shard_writer_seal(&im->w, err);
            }
            if (eof)
                break;
        }
    }
    free(line);
out:
    archive_read_free(a);
    return rc;
}

int shards_import_cmd(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"kind", required_argument, NULL, 'k'},
                                         {"tokenizer", required_argument, NULL, 't'},
                                         {"prefix", required_argument, NULL, 'p'},
                                         {"shard-records", required_argument, NULL, 's'},
                                         {"no-chat-roles", no_argument, NULL, 'N'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    importer_t im = {.prefix = NULL};
    const char *kind = NULL, *tokenizer = NULL;
    int chat_roles = 1, c;
    while ((c = getopt_long(argc, argv, "o:k:t:p:s:N", opts, NULL)) != -1) {
        switch (c) {
        case 'o': im.dir = optarg; break;
        case 'k': kind = optarg; break;
        case 't': tokenizer = optarg; break;
        case 'p': im.prefix = optarg; break;
        case 's':
            if (gl_parse_u64(optarg, &im.max_records) || !im.max_records)
                return gl_usage_error(argv[0], "bad --shard-records '%s'", optarg);
            break;
        case 'N': chat_roles = 0; break;
        case 'h':
            printf("usage: %s --kind sft|rm|rl --tokenizer VOCAB -o DIR FILE.jsonl...\n\n"
                   "Imports JSONL into SFT, RM or RL-prompt shards, laid out with the chat\n"
                   "template (<|user|>...<|assistant|>...<|endoftext|>).\n\n"
                   "  sft  {\"prompt\",\"response\"} or {\"messages\":[{\"role\",\"content\"}]}\n"
                   "  rm   HH-RLHF {\"chosen\",\"rejected\"} or {\"prompt\",\"responses\":[best..worst]}\n"
                   "       (optional \"ranks\":[0,1,1] for ties)\n"
                   "  rl   {\"prompt\"} or {\"messages\"}\n\n"
                   "  -o, --output DIR          dataset folder\n"
                   "  -t, --tokenizer VOCAB     vocabulary file; the chat-role tokens are added\n"
                   "                            unless --no-chat-roles\n"
                   "  -p, --prefix NAME         shard file prefix (the kind)\n"
                   "  -s, --shard-records N     start a new shard every N records\n\n"
                   "Files may be compressed; '-' reads stdin. Bad lines are reported with\n"
                   "their line number and skipped; exit status 1 if there were any.\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (!im.dir || !kind || !tokenizer || optind >= argc)
        return gl_usage_error(argv[0], "--kind, --tokenizer, --output and an input are required");
    if (!strcmp(kind, "sft"))
        im.kind = IMP_SFT;
    else if (!strcmp(kind, "rm"))
        im.kind = IMP_RM;
    else if (!strcmp(kind, "rl"))
        im.kind = IMP_RL;
    else
        return gl_usage_error(argv[0], "--kind must be sft, rm or rl");
    if (!im.prefix)
        im.prefix = kind;
    gl_err_t err = {0};
    int rc = shard_tokenizer_load(&im.tok, tokenizer, chat_roles, &err);
    if (!rc && !im.tok.vocab)
        rc = gl_err_set(&err, GL_EINVAL, "import needs a vocabulary file with chat roles, not '%s'", tokenizer);
    if (!rc)
        rc = gl_mkdir_p(im.dir, &err);
    for (int i = optind; i < argc && !rc; i++)
        rc = import_file(&im, argv[i], argv[0], &err);
    if (!rc && im.w)
        rc = shard_writer_seal(&im.w, &err);
    shard_writer_abort(&im.w);
    shard_tokenizer_free(&im.tok);
    if (rc)
        return gl_cmd_fail(argv[0], &err);
    gl_info("imported %llu %s records (%llu tokens) into %s; %llu bad line(s) skipped", (unsigned long long)im.records,
            kind, (unsigned long long)im.tokens, im.dir, (unsigned long long)im.bad);
    return im.bad ? GL_EXIT_FAIL : GL_EXIT_OK;
}
