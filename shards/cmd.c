/* cmd.c — `gptline shards`: stat, verify, cat, sample and pack.
 *
 * The command layer over the shard library: it parses options, prints and
 * picks exit statuses (0 ok, 1 failure, 2 usage, 3 invalid data). `pack`
 * is the way to make a dataset from any text before the tokenizer exists:
 * files (read through libarchive, so .gz/.bz2/.xz/.zst are decompressed on
 * the fly), folders (walked recursively, in name order) or stdin, one
 * document per file, line or paragraph, byte-level ids 0-255 plus
 * end-of-text 256.
 */
#include "shards/internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <dirent.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *source_name(Gptline__SourceKind s)
{
    switch (s) {
    case GPTLINE__SOURCE_KIND__TEXT: return "text";
    case GPTLINE__SOURCE_KIND__CRAWL: return "crawl";
    case GPTLINE__SOURCE_KIND__WIKI: return "wiki";
    case GPTLINE__SOURCE_KIND__CODE: return "code";
    case GPTLINE__SOURCE_KIND__JSONL: return "jsonl";
    case GPTLINE__SOURCE_KIND__LABELS: return "labels";
    default: return "unspecified";
    }
}

static const char *kind_name(Gptline__RecordKind k)
{
    switch (k) {
    case GPTLINE__RECORD_KIND__DOCUMENTS: return "documents";
    case GPTLINE__RECORD_KIND__SFT: return "sft";
    case GPTLINE__RECORD_KIND__RM: return "rm";
    case GPTLINE__RECORD_KIND__RL_PROMPTS: return "rl-prompts";
    default: return "unspecified";
    }
}

/* ---- stat --------------------------------------------------------------- */

static int cmd_stat(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"shards", no_argument, NULL, 's'}, {"help", no_argument, NULL, 'h'}, {0}};
    int json = 0, per_shard = 0, c;
    while ((c = getopt_long(argc, argv, "js", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 's': per_shard = 1; break;
        case 'h':
            printf("usage: %s [--json] [--shards] DIR\n\n"
                   "Prints a dataset's counts: shards, documents, tokens, sources,\n"
                   "tokenizer and size on disk. DIR is a folder of shards.\n\n"
                   "  -j, --json     one JSON object on stdout\n"
                   "  -s, --shards   also one line per shard\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind != argc - 1)
        return gl_usage_error(argv[0], "expected one dataset folder");
    gl_err_t err = {0};
    shard_dataset_t *d = shard_dataset_open(argv[optind], 0, &err);
    if (!d)
        return gl_cmd_fail(argv[0], &err);
    uint64_t disk = 0, bytes = 0, src_docs[8] = {0}, src_tokens[8] = {0};
    size_t n = shard_dataset_shard_count(d);
    for (size_t i = 0; i < n; i++) {
        const shard_reader_t *r = shard_dataset_shard(d, i);
        const Gptline__ShardManifest *m = shard_manifest(r);
        disk += shard_file_size(r);
        bytes += m->doc_bytes;
        for (size_t k = 0; k < m->n_sources; k++) {
            unsigned s = (unsigned)m->sources[k]->source & 7;
            src_docs[s] += m->sources[k]->docs;
            src_tokens[s] += m->sources[k]->tokens;
        }
    }
    const Gptline__TokenizerId *tok = shard_dataset_tokenizer(d);
    uint64_t docs = shard_dataset_docs(d), tokens = shard_dataset_tokens(d);
    if (json) {
        json_t *o = json_object(), *src = json_object(), *sh = json_array();
        json_object_set_new(o, "path", json_string(argv[optind]));
        json_object_set_new(o, "shards", json_integer((json_int_t)n));
        json_object_set_new(o, "unsealed", json_integer((json_int_t)shard_dataset_unsealed(d)));
        json_object_set_new(o, "kind", json_string(kind_name(shard_dataset_kind(d))));
        json_object_set_new(o, "documents", json_integer((json_int_t)docs));
        json_object_set_new(o, "tokens", json_integer((json_int_t)tokens));
        json_object_set_new(o, "text_bytes", json_integer((json_int_t)bytes));
        json_object_set_new(o, "disk_bytes", json_integer((json_int_t)disk));
        if (tok) {
            char h[32];
            snprintf(h, sizeof h, "%016llx", (unsigned long long)tok->hash);
            json_object_set_new(o, "tokenizer",
                                json_pack("{s:s,s:s,s:i,s:i}", "name", tok->name, "hash", h, "vocab_size",
                                          (json_int_t)tok->vocab_size, "eot_id", (json_int_t)tok->eot_id));
        }
        for (unsigned s = 0; s < 8; s++)
            if (src_docs[s])
                json_object_set_new(src, source_name((Gptline__SourceKind)s),
                                    json_pack("{s:I,s:I}", "documents", (json_int_t)src_docs[s], "tokens",
                                              (json_int_t)src_tokens[s]));
        json_object_set_new(o, "sources", src);
        if (per_shard) {
            for (size_t i = 0; i < n; i++) {
                const shard_reader_t *r = shard_dataset_shard(d, i);
                json_array_append_new(sh, json_pack("{s:s,s:I,s:I,s:I}", "path", shard_path(r), "documents",
                                                    (json_int_t)shard_doc_count(r), "tokens",
                                                    (json_int_t)shard_token_count(r), "disk_bytes",
                                                    (json_int_t)shard_file_size(r)));
            }
            json_object_set_new(o, "shard_list", sh);
        } else {
            json_decref(sh);
        }
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        puts(s);
        free(s);
        json_decref(o);
    } else {
        char a[32], b[32];
        printf("dataset     %s\n", argv[optind]);
        printf("shards      %zu", n);
        if (shard_dataset_unsealed(d))
            printf(" (+%zu unsealed, ignored)", shard_dataset_unsealed(d));
        printf("\nkind        %s\n", kind_name(shard_dataset_kind(d)));
        if (tok)
            printf("tokenizer   %s (hash %016llx, vocab %u, end-of-text %u, %u-byte tokens)\n", tok->name,
                   (unsigned long long)tok->hash, tok->vocab_size, tok->eot_id, tok->vocab_size <= 65536 ? 2 : 4);
        printf("documents   %llu\n", (unsigned long long)docs);
        printf("tokens      %llu (%s)\n", (unsigned long long)tokens, gl_fmt_count((double)tokens, a, sizeof a));
        if (bytes)
            printf("text        %s, %.2f bytes/token\n", gl_fmt_bytes((double)bytes, a, sizeof a),
                   tokens ? (double)bytes / (double)tokens : 0.0);
        printf("disk        %s (%.2f bytes/token)\n", gl_fmt_bytes((double)disk, b, sizeof b),
               tokens ? (double)disk / (double)tokens : 0.0);
        for (unsigned s = 0; s < 8; s++)
            if (src_docs[s])
                printf("source      %-8s %llu documents, %llu tokens\n", source_name((Gptline__SourceKind)s),
                       (unsigned long long)src_docs[s], (unsigned long long)src_tokens[s]);
        if (per_shard)
            for (size_t i = 0; i < n; i++) {
                const shard_reader_t *r = shard_dataset_shard(d, i);
                printf("  %s  %llu documents  %llu tokens  %s\n", shard_path(r),
                       (unsigned long long)shard_doc_count(r), (unsigned long long)shard_token_count(r),
                       gl_fmt_bytes((double)shard_file_size(r), a, sizeof a));
            }
    }
    shard_dataset_close(&d);
    return GL_EXIT_OK;
}

/* ---- verify ------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A dataset folder's shards, or one shard file given by its path. */
static int list_shards(const char *dir, char ***out, size_t *n, size_t *unsealed, gl_err_t *err)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return gl_err_set(err, GL_ENOTFOUND, "%s: %s", dir, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return shard_list(dir, out, n, unsealed, err);
    *out = gl_xmalloc(sizeof **out);
    (*out)[0] = gl_xstrdup(dir);
    *n = 1;
    *unsealed = 0;
    return GL_OK;
}

static int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {{"quiet", no_argument, NULL, 'q'}, {"help", no_argument, NULL, 'h'}, {0}};
    int quiet = 0, c;
    while ((c = getopt_long(argc, argv, "q", opts, NULL)) != -1) {
        switch (c) {
        case 'q': quiet = 1; break;
        case 'h':
            printf("usage: %s [-q] DIR|SHARD...\n\n"
                   "Checks every shard: LMDB structure, size, magic, version, manifest,\n"
                   "offsets, and the checksums of all tokens and metadata. Prints one line\n"
                   "per shard. Exit status 3 if any shard is invalid, naming it.\n\n"
                   "  -q, --quiet   print only failures\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind >= argc)
        return gl_usage_error(argv[0], "expected a dataset folder or shard files");
    size_t bad = 0, good = 0;
    int status = GL_EXIT_OK;
    for (int a = optind; a < argc; a++) {
        char **paths;
        size_t n, unsealed;
        gl_err_t err = {0};
        if (list_shards(argv[a], &paths, &n, &unsealed, &err)) {
            fprintf(stderr, "%s: %s\n", argv[0], err.msg);
            status = GL_EXIT_FAIL;
            continue;
        }
        if (unsealed && !quiet)
            printf("note %s: %zu unsealed shard file(s) ignored\n", argv[a], unsealed);
        for (size_t i = 0; i < n; i++) {
            shard_reader_t *r = shard_open(paths[i], SHARD_OPEN_CHECKSUM, &err);
            if (r && !shard_verify(r, &err)) {
                good++;
                if (!quiet)
                    printf("ok %s (%llu documents, %llu tokens)\n", paths[i],
                           (unsigned long long)shard_doc_count(r), (unsigned long long)shard_token_count(r));
            } else {
                bad++;
                printf("FAILED %s\n", err.msg);
                fprintf(stderr, "%s: %s\n", argv[0], err.msg);
            }
            shard_close(&r);
        }
        shard_list_free(paths, n);
        if (!bad) {
            /* All shards valid: check that they form one dataset. */
            struct stat st;
            if (stat(argv[a], &st) == 0 && S_ISDIR(st.st_mode)) {
                shard_dataset_t *d = shard_dataset_open(argv[a], 0, &err);
                if (!d) {
                    bad++;
                    printf("FAILED %s\n", err.msg);
                    fprintf(stderr, "%s: %s\n", argv[0], err.msg);
                }
                shard_dataset_close(&d);
            }
        }
    }
    if (!quiet)
        printf("%zu shard(s) ok, %zu invalid\n", good, bad);
    if (bad)
        return GL_EXIT_INVALID;
    return status;
}

/* ---- cat ---------------------------------------------------------------- */

static void print_meta_json(FILE *f, uint64_t idx, const shard_tokens_t *t, const Gptline__DocMeta *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "doc", json_integer((json_int_t)idx));
    json_object_set_new(o, "tokens", json_integer((json_int_t)t->n));
    if (m) {
        json_object_set_new(o, "source", json_string(source_name(m->source)));
        if (*m->url) json_object_set_new(o, "url", json_string(m->url));
        if (*m->title) json_object_set_new(o, "title", json_string(m->title));
        if (*m->path) json_object_set_new(o, "path", json_string(m->path));
        if (*m->input) json_object_set_new(o, "input", json_string(m->input));
        if (*m->date) json_object_set_new(o, "date", json_string(m->date));
        if (*m->record_id) json_object_set_new(o, "record_id", json_string(m->record_id));
        if (*m->language) json_object_set_new(o, "language", json_string(m->language));
        if (*m->license) json_object_set_new(o, "license", json_string(m->license));
        json_object_set_new(o, "bytes", json_integer((json_int_t)m->byte_length));
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fprintf(f, "%s\n", s);
    free(s);
    json_decref(o);
}

/* The metadata of a non-document record as a JSON line. */
static int print_record_json(FILE *f, uint64_t idx, Gptline__RecordKind kind, const uint8_t *d, size_t n,
                             uint64_t ntok)
{
    json_t *o = json_pack("{s:I,s:I}", "record", (json_int_t)idx, "tokens", (json_int_t)ntok);
    int ok = 1;
    if (kind == GPTLINE__RECORD_KIND__SFT) {
        Gptline__SftConversation *c = gptline__sft_conversation__unpack(NULL, n, d);
        if ((ok = c != NULL)) {
            json_t *sp = json_array();
            for (size_t i = 0; i < c->n_loss_spans; i++)
                json_array_append_new(sp, json_pack("[I,I]", (json_int_t)c->loss_spans[i]->start,
                                                    (json_int_t)c->loss_spans[i]->end));
            json_object_set_new(o, "id", json_string(c->id));
            json_object_set_new(o, "loss_spans", sp);
            gptline__sft_conversation__free_unpacked(c, NULL);
        }
    } else if (kind == GPTLINE__RECORD_KIND__RM) {
        Gptline__RmRanking *r = gptline__rm_ranking__unpack(NULL, n, d);
        if ((ok = r != NULL && r->prompt)) {
            json_t *rs = json_array(), *rk = json_array();
            for (size_t i = 0; i < r->n_responses; i++)
                json_array_append_new(rs, json_pack("[I,I]", (json_int_t)r->responses[i]->start,
                                                    (json_int_t)r->responses[i]->end));
            for (size_t i = 0; i < r->n_rank; i++)
                json_array_append_new(rk, json_integer(r->rank[i]));
            json_object_set_new(o, "id", json_string(r->id));
            json_object_set_new(o, "prompt", json_pack("[I,I]", (json_int_t)r->prompt->start,
                                                       (json_int_t)r->prompt->end));
            json_object_set_new(o, "responses", rs);
            json_object_set_new(o, "ranks", rk);
        }
        if (r)
            gptline__rm_ranking__free_unpacked(r, NULL);
    } else if (kind == GPTLINE__RECORD_KIND__RL_PROMPTS) {
        Gptline__RlPrompt *p = gptline__rl_prompt__unpack(NULL, n, d);
        if ((ok = p != NULL)) {
            json_object_set_new(o, "id", json_string(p->id));
            gptline__rl_prompt__free_unpacked(p, NULL);
        }
    }
    if (ok) {
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fprintf(f, "%s\n", s);
        free(s);
    }
    json_decref(o);
    return ok ? GL_OK : GL_ECORRUPT;
}

static int cmd_cat(int argc, char **argv)
{
    static const struct option opts[] = {{"doc", required_argument, NULL, 'd'},
                                         {"limit", required_argument, NULL, 'n'},
                                         {"text", no_argument, NULL, 't'},
                                         {"meta", no_argument, NULL, 'm'},
                                         {"tokenizer", required_argument, NULL, 'T'},
                                         {"chat-roles", no_argument, NULL, 'C'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    uint64_t first = 0, limit = UINT64_MAX;
    int text = 0, meta = 0, chat = 0, c;
    const char *tokenizer = SHARD_BYTES_TOKENIZER;
    while ((c = getopt_long(argc, argv, "d:n:tmT:C", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (gl_parse_u64(optarg, &first)) return gl_usage_error(argv[0], "bad --doc '%s'", optarg);
            break;
        case 'n':
            if (gl_parse_u64(optarg, &limit)) return gl_usage_error(argv[0], "bad --limit '%s'", optarg);
            break;
        case 't': text = 1; break;
        case 'm': meta = 1; break;
        case 'T': tokenizer = optarg; break;
        case 'C': chat = 1; break;
        case 'h':
            printf("usage: %s [--doc N] [--limit N] [--text [--tokenizer VOCAB]] [--meta] DIR\n\n"
                   "Prints documents of a dataset, one per line as token ids.\n\n"
                   "  -d, --doc N     start at document N (global index)\n"
                   "  -n, --limit N   print at most N documents\n"
                   "  -t, --text      print the decoded text instead, documents separated\n"
                   "                  by a line break\n"
                   "  -T, --tokenizer VOCAB  the dataset's vocabulary for --text ('bytes', the\n"
                   "                  default, is built in); -C if it was used with --chat-roles\n"
                   "  -m, --meta      print each document's metadata as a JSON line first\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind != argc - 1)
        return gl_usage_error(argv[0], "expected one dataset folder");
    gl_err_t err = {0};
    shard_dataset_t *d = shard_dataset_open(argv[optind], 0, &err);
    if (!d)
        return gl_cmd_fail(argv[0], &err);
    const Gptline__TokenizerId *tok = shard_dataset_tokenizer(d);
    int rc = GL_EXIT_OK;
    shard_tokenizer_t tz = {0};
    uint8_t *tbuf = NULL;
    size_t tlen = 0, tcap = 0;
    if (text && tok &&
        (shard_tokenizer_load(&tz, tokenizer, chat, &err) || shard_tokenizer_check(&tz, tok, argv[optind], &err))) {
        rc = gl_cmd_fail(argv[0], &err);
        goto out;
    }
    uint64_t end = shard_dataset_docs(d);
    if (limit < end - (first < end ? first : end))
        end = first + limit;
    for (uint64_t g = first; g < end; g++) {
        size_t s;
        uint64_t i;
        shard_tokens_t t;
        shard_dataset_locate(d, g, &s, &i, NULL);
        const shard_reader_t *r = shard_dataset_shard(d, s);
        shard_tokens(r, i, &t, NULL);
        if (meta && shard_dataset_kind(d) == GPTLINE__RECORD_KIND__DOCUMENTS) {
            Gptline__DocMeta *m = NULL;
            if (shard_doc_meta(r, i, &m, &err)) {
                rc = gl_cmd_fail(argv[0], &err);
                goto out;
            }
            print_meta_json(stdout, g, &t, m);
            gptline__doc_meta__free_unpacked(m, NULL);
        } else if (meta) {
            const uint8_t *md;
            size_t ml;
            if (shard_meta(r, i, &md, &ml, &err) ||
                print_record_json(stdout, g, shard_dataset_kind(d), md, ml, t.n)) {
                if (!err.msg[0])
                    gl_err_set(&err, GL_ECORRUPT, "%s: record %llu: metadata does not parse", shard_path(r),
                               (unsigned long long)i);
                rc = gl_cmd_fail(argv[0], &err);
                goto out;
            }
        }
        if (text) {
            tlen = 0;
            if (shard_tokenizer_decode(&tz, &t, &tbuf, &tlen, &tcap, &err)) {
                rc = gl_cmd_fail(argv[0], &err);
                goto out;
            }
            fwrite(tbuf, 1, tlen, stdout);
            putchar('\n');
        } else {
            for (uint64_t j = 0; j < t.n; j++)
                printf(j ? " %u" : "%u", shard_token_at(&t, j));
            putchar('\n');
        }
        if (ferror(stdout))
            break;
    }
out:
    free(tbuf);
    shard_tokenizer_free(&tz);
    shard_dataset_close(&d);
    return rc;
}

/* ---- sample ------------------------------------------------------------- */

static int cmd_sample(int argc, char **argv)
{
    static const struct option opts[] = {{"batch", required_argument, NULL, 'B'},
                                         {"context", required_argument, NULL, 'T'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"rank", required_argument, NULL, 'r'},
                                         {"world", required_argument, NULL, 'w'},
                                         {"batches", required_argument, NULL, 'n'},
                                         {"epoch", required_argument, NULL, 'e'},
                                         {"step", required_argument, NULL, 'k'},
                                         {"no-shuffle", no_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    uint64_t B = 4, T = 64, seed = 1, rank = 0, world = 1, batches = 1, epoch = 0, step = 0;
    int shuffle = 1, c;
    while ((c = getopt_long(argc, argv, "B:T:s:r:w:n:e:k:S", opts, NULL)) != -1) {
        uint64_t *dst = NULL;
        switch (c) {
        case 'B': dst = &B; break;
        case 'T': dst = &T; break;
        case 's': dst = &seed; break;
        case 'r': dst = &rank; break;
        case 'w': dst = &world; break;
        case 'n': dst = &batches; break;
        case 'e': dst = &epoch; break;
        case 'k': dst = &step; break;
        case 'S': shuffle = 0; break;
        case 'h':
            printf("usage: %s [options] DIR\n\n"
                   "Prints (B, T+1) windows the training sampler yields, one window per\n"
                   "line as token ids.\n\n"
                   "  -B, --batch N      windows per batch (4)\n"
                   "  -T, --context N    context length T (64); windows hold T+1 tokens\n"
                   "  -s, --seed N       shuffle seed (1)\n"
                   "  -r, --rank N       data-parallel rank (0)\n"
                   "  -w, --world N      data-parallel world size (1)\n"
                   "  -n, --batches N    batches to print (1)\n"
                   "  -e, --epoch N      start at epoch N (0)\n"
                   "  -k, --step N       start at window N of the epoch (0)\n"
                   "  -S, --no-shuffle   windows in stream order\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
        if (dst && gl_parse_u64(optarg, dst))
            return gl_usage_error(argv[0], "bad number '%s' for -%c", optarg, c);
    }
    if (optind != argc - 1)
        return gl_usage_error(argv[0], "expected one dataset folder");
    if (!B || !T || B > 1u << 20 || T > 1u << 24 || world > UINT32_MAX || rank >= world)
        return gl_usage_error(argv[0], "need 0 < B, 0 < T and rank < world");
    gl_err_t err = {0};
    shard_dataset_t *d = shard_dataset_open(argv[optind], 0, &err);
    if (!d)
        return gl_cmd_fail(argv[0], &err);
    shard_sampler_t s;
    int rc = GL_EXIT_OK;
    int32_t *buf = NULL;
    if (shard_sampler_init(&s, d, (uint32_t)B, (uint32_t)T, seed, (uint32_t)rank, (uint32_t)world, shuffle, &err)) {
        rc = gl_cmd_fail(argv[0], &err);
        goto out;
    }
    shard_sampler_seek(&s, epoch, step);
    buf = gl_xmalloc(B * (T + 1) * sizeof *buf);
    for (uint64_t k = 0; k < batches; k++) {
        if (shard_sampler_next(&s, buf, &err)) {
            rc = gl_cmd_fail(argv[0], &err);
            goto out;
        }
        for (uint64_t b = 0; b < B; b++) {
            for (uint64_t j = 0; j <= T; j++)
                printf(j ? " %d" : "%d", buf[b * (T + 1) + j]);
            putchar('\n');
        }
    }
out:
    free(buf);
    shard_dataset_close(&d);
    return rc;
}

/* ---- pack --------------------------------------------------------------- */

typedef enum { SPLIT_FILE, SPLIT_LINE, SPLIT_PARA } split_t;

/* A document waiting for the batch encoder. */
typedef struct {
    char *text;
    size_t len;
    const char *input; /* owned by the input list */
} pending_t;

typedef struct {
    const char *dir, *prefix, *argv0;
    uint64_t shard_tokens, max_bytes, min_bytes;
    split_t split;
    unsigned next_index;
    shard_writer_t *w;
    const char *w_last_input;  /* last input recorded in w's provenance */
    shard_tokenizer_t tok;
    pending_t *batch;
    size_t nbatch, batch_cap, batch_bytes;
    uint64_t docs, tokens, files, shards;
    uint64_t skip_binary, skip_oversized, skip_small, unreadable;
    gl_progress_t progress;
    uint64_t rank, world;
} pack_t;

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

static int pack_open_shard(pack_t *p, gl_err_t *err)
{
    char name[256];
    snprintf(name, sizeof name, "%s-%06u%s", p->prefix, p->next_index++, SHARD_SUFFIX);
    char *path = gl_path_join(p->dir, name);
    shard_writer_opts_t o = shard_tokenizer_writer_opts(&p->tok, GPTLINE__RECORD_KIND__DOCUMENTS);
    o.command = "shards pack";
    o.rank = (uint32_t)p->rank;
    o.world = (uint32_t)p->world;
    p->w = shard_writer_create(path, &o, err);
    p->w_last_input = NULL;
    free(path);
    return p->w ? GL_OK : err->code;
}

static int pack_seal(pack_t *p, gl_err_t *err)
{
    if (!p->w)
        return GL_OK;
    if (shard_writer_docs(p->w) == 0) {
        shard_writer_abort(&p->w);
        p->next_index--;
        return GL_OK;
    }
    p->shards++;
    return shard_writer_seal(&p->w, err);
}

/* Encodes the pending documents (over all cores) and writes them in order,
 * starting a new shard every shard_tokens tokens. */
static int pack_flush(pack_t *p, gl_err_t *err)
{
    if (!p->nbatch)
        return GL_OK;
    tok_ids_t *ids = gl_xcalloc(p->nbatch, sizeof *ids);
    tok_doc_t *docs = gl_xmalloc(p->nbatch * sizeof *docs);
    for (size_t i = 0; i < p->nbatch; i++)
        docs[i] = (tok_doc_t){p->batch[i].text, p->batch[i].len};
    int rc = shard_tokenizer_encode_batch(&p->tok, docs, p->nbatch, ids, err);
    for (size_t i = 0; i < p->nbatch && !rc; i++) {
        if (!p->w && (rc = pack_open_shard(p, err)))
            break;
        Gptline__DocMeta m = GPTLINE__DOC_META__INIT;
        m.source = GPTLINE__SOURCE_KIND__TEXT;
        m.path = (char *)p->batch[i].input;
        m.input = (char *)p->batch[i].input;
        m.byte_length = p->batch[i].len;
        if ((rc = shard_writer_add(p->w, ids[i].ids, ids[i].n, &m.base, err)))
            break;
        if (p->w_last_input != p->batch[i].input) {
            shard_writer_add_input(p->w, p->batch[i].input);
            p->w_last_input = p->batch[i].input;
        }
        p->docs++;
        p->tokens += ids[i].n;
        if (shard_writer_tokens(p->w) >= p->shard_tokens)
            rc = pack_seal(p, err);
    }
    for (size_t i = 0; i < p->nbatch; i++) {
        tok_ids_free(&ids[i]);
        free(p->batch[i].text);
    }
    free(ids);
    free(docs);
    p->nbatch = 0;
    p->batch_bytes = 0;
    return rc;
}

static int pack_doc(pack_t *p, const char *input, const char *text, size_t len, gl_err_t *err)
{
    if (len < p->min_bytes || len == 0) {
        p->skip_small++;
        return GL_OK;
    }
    if (p->nbatch == p->batch_cap) {
        p->batch_cap = p->batch_cap ? 2 * p->batch_cap : 256;
        p->batch = gl_xrealloc(p->batch, p->batch_cap * sizeof *p->batch);
    }
    char *copy = gl_xmalloc(len);
    memcpy(copy, text, len);
    p->batch[p->nbatch++] = (pending_t){copy, len, input};
    p->batch_bytes += len;
    if (p->batch_bytes >= (8u << 20) || p->nbatch >= 4096)
        return pack_flush(p, err);
    return GL_OK;
}

static int pack_text(pack_t *p, const char *input, const char *buf, size_t len, gl_err_t *err)
{
    if (memchr(buf, '\0', len)) {
        p->skip_binary++;
        gl_debug("%s: skipped (binary: contains NUL bytes)", input);
        return GL_OK;
    }
    if (p->split == SPLIT_FILE)
        return pack_doc(p, input, buf, len, err);
    size_t start = 0;
    while (start < len) {
        size_t end = start;
        if (p->split == SPLIT_LINE) {
            while (end < len && buf[end] != '\n')
                end++;
        } else {
            while (end < len && !(buf[end] == '\n' && end + 1 < len && buf[end + 1] == '\n'))
                end++;
        }
        size_t e = end;
        while (e > start && (buf[e - 1] == '\n' || buf[e - 1] == '\r'))
            e--;
        size_t s = start;
        while (s < e && buf[s] == '\n')
            s++;
        if (e > s) {
            int rc = pack_doc(p, input, buf + s, e - s, err);
            if (rc)
                return rc;
        }
        start = end + 1;
        while (p->split == SPLIT_PARA && start < len && buf[start] == '\n')
            start++;
    }
    return GL_OK;
}

/* Reads one input through libarchive's raw format (decompressing any
 * filter it knows). Returns -1 for an unreadable input (already reported),
 * or a gl_code_t for a write failure. */
static int pack_file(pack_t *p, const char *path, gl_err_t *err)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    archive_read_support_format_empty(a);
    int ok = strcmp(path, "-") ? archive_read_open_filename(a, path, 1 << 16)
                               : archive_read_open_fd(a, STDIN_FILENO, 1 << 16);
    struct archive_entry *ent;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = GL_OK;
    const char *name = strcmp(path, "-") ? path : "(stdin)";
    if (ok != ARCHIVE_OK) {
        gl_warn("%s: cannot read: %s", name, archive_error_string(a));
        rc = -1;
        goto out;
    }
    ok = archive_read_next_header(a, &ent);
    if (ok == ARCHIVE_EOF)
        goto done; /* empty */
    if (ok != ARCHIVE_OK) {
        gl_warn("%s: cannot read: %s", name, archive_error_string(a));
        rc = -1;
        goto out;
    }
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            buf = gl_xrealloc(buf, cap);
        }
        la_ssize_t got = archive_read_data(a, buf + len, cap - len);
        if (got < 0) {
            gl_warn("%s: read error after %zu bytes: %s (nothing kept from this input)", name, len,
                    archive_error_string(a));
            rc = -1;
            goto out;
        }
        if (got == 0)
            break;
        len += (size_t)got;
        gl_progress_add(&p->progress, 0, (uint64_t)got);
        if (len > p->max_bytes) {
            p->skip_oversized++;
            gl_warn("%s: skipped: larger than --max-bytes %llu", name, (unsigned long long)p->max_bytes);
            goto out;
        }
    }
done:
    rc = pack_text(p, name, buf ? buf : "", len, err);
out:
    if (rc == -1)
        p->unreadable++;
    free(buf);
    archive_read_free(a);
    gl_progress_add(&p->progress, 1, 0);
    return rc;
}

static char **walk_list;
static size_t walk_n;
static int walk_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_F && S_ISREG(st->st_mode)) {
        walk_list = gl_xrealloc(walk_list, (walk_n + 1) * sizeof *walk_list);
        walk_list[walk_n++] = gl_xstrdup(path);
    }
    return 0;
}

/* Finds the next free shard index for prefix in dir. */
static unsigned next_free_index(const char *dir, const char *prefix)
{
    DIR *dh = opendir(dir);
    unsigned next = 0;
    if (!dh)
        return 0;
    size_t pl = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(dh))) {
        unsigned idx;
        char tail[16];
        if (!strncmp(e->d_name, prefix, pl) && e->d_name[pl] == '-' &&
            sscanf(e->d_name + pl + 1, "%u%15s", &idx, tail) == 2 && !strcmp(tail, SHARD_SUFFIX) && idx + 1 > next)
            next = idx + 1;
    }
    closedir(dh);
    return next;
}

static int cmd_pack(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"prefix", required_argument, NULL, 'p'},
                                         {"shard-tokens", required_argument, NULL, 's'},
                                         {"split", required_argument, NULL, 'S'},
                                         {"max-bytes", required_argument, NULL, 'M'},
                                         {"min-bytes", required_argument, NULL, 'm'},
                                         {"rank", required_argument, NULL, 'r'},
                                         {"world", required_argument, NULL, 'w'},
                                         {"tokenizer", required_argument, NULL, 't'},
                                         {"chat-roles", no_argument, NULL, 'C'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *tokenizer = SHARD_BYTES_TOKENIZER;
    int chat_roles = 0;
    pack_t p = {.prefix = "shard", .shard_tokens = 256000000, .max_bytes = 64000000, .min_bytes = 1, .world = 1};
    p.argv0 = argv[0];
    int c;
    while ((c = getopt_long(argc, argv, "o:p:s:S:M:m:r:w:t:C", opts, NULL)) != -1) {
        switch (c) {
        case 'o': p.dir = optarg; break;
        case 't': tokenizer = optarg; break;
        case 'C': chat_roles = 1; break;
        case 'p': p.prefix = optarg; break;
        case 's':
            if (gl_parse_u64(optarg, &p.shard_tokens) || !p.shard_tokens)
                return gl_usage_error(argv[0], "bad --shard-tokens '%s'", optarg);
            break;
        case 'M':
            if (gl_parse_u64(optarg, &p.max_bytes) || !p.max_bytes)
                return gl_usage_error(argv[0], "bad --max-bytes '%s'", optarg);
            break;
        case 'm':
            if (gl_parse_u64(optarg, &p.min_bytes))
                return gl_usage_error(argv[0], "bad --min-bytes '%s'", optarg);
            break;
        case 'r':
            if (gl_parse_u64(optarg, &p.rank)) return gl_usage_error(argv[0], "bad --rank '%s'", optarg);
            break;
        case 'w':
            if (gl_parse_u64(optarg, &p.world) || !p.world) return gl_usage_error(argv[0], "bad --world '%s'", optarg);
            break;
        case 'S':
            if (!strcmp(optarg, "file")) p.split = SPLIT_FILE;
            else if (!strcmp(optarg, "line")) p.split = SPLIT_LINE;
            else if (!strcmp(optarg, "paragraph")) p.split = SPLIT_PARA;
            else return gl_usage_error(argv[0], "bad --split '%s' (file, line or paragraph)", optarg);
            break;
        case 'h':
            printf("usage: %s -o DIR [options] [FILE|FOLDER|-]...\n\n"
                   "Packs text into token shards, tokenized with --tokenizer (a vocabulary\n"
                   "file: tiktoken, GPT-2 encoder.json or .gltok), or by default with the\n"
                   "byte-level tokenizer (ids 0-255, end-of-text 256), over all cores.\n"
                   "Files are read through libarchive, so gzip, bzip2,\n"
                   "xz and zstd files are decompressed; folders are walked recursively in\n"
                   "name order; '-' (or no input) reads stdin. Binary files (NUL bytes) are\n"
                   "skipped and counted. New shards are numbered after those already in DIR.\n\n"
                   "  -o, --output DIR        dataset folder (created if missing)\n"
                   "  -t, --tokenizer VOCAB   vocabulary file, or 'bytes' (the default)\n"
                   "  -C, --chat-roles        add the chat-role tokens to a standard vocabulary\n"
                   "                          (use the same vocabulary for every stage's data)\n"
                   "  -p, --prefix NAME       shard file prefix (shard): NAME-000000.mdb\n"
                   "  -s, --shard-tokens N    start a new shard after N tokens (256M)\n"
                   "  -S, --split MODE        file (default), line or paragraph: one document each\n"
                   "  -M, --max-bytes N       skip inputs larger than N bytes (64M)\n"
                   "  -m, --min-bytes N       skip documents shorter than N bytes (1)\n"
                   "  -r, --rank N, -w, --world N\n"
                   "                          take only inputs k with k mod N == rank\n\n"
                   "Exit status: 0 when every input was read, 1 if any could not be read\n"
                   "(everything readable is still packed and sealed), 2 usage.\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (!p.dir)
        return gl_usage_error(argv[0], "missing --output DIR");
    if (p.rank >= p.world)
        return gl_usage_error(argv[0], "--rank must be below --world");
    gl_err_t err = {0};
    if (shard_tokenizer_load(&p.tok, tokenizer, chat_roles, &err) || gl_mkdir_p(p.dir, &err)) {
        shard_tokenizer_free(&p.tok);
        return gl_cmd_fail(argv[0], &err);
    }
    p.next_index = next_free_index(p.dir, p.prefix);

    /* Collect the inputs. */
    walk_list = NULL;
    walk_n = 0;
    if (optind == argc) {
        walk_list = gl_xmalloc(sizeof *walk_list);
        walk_list[walk_n++] = gl_xstrdup("-");
    }
    for (int a = optind; a < argc; a++) {
        struct stat st;
        size_t before = walk_n;
        if (!strcmp(argv[a], "-")) {
            walk_list = gl_xrealloc(walk_list, (walk_n + 1) * sizeof *walk_list);
            walk_list[walk_n++] = gl_xstrdup("-");
        } else if (stat(argv[a], &st) < 0) {
            gl_warn("%s: %s", argv[a], strerror(errno));
            p.unreadable++;
        } else if (S_ISDIR(st.st_mode)) {
            nftw(argv[a], walk_cb, 32, FTW_PHYS);
            qsort(walk_list + before, walk_n - before, sizeof *walk_list, cmp_str);
        } else {
            walk_list = gl_xrealloc(walk_list, (walk_n + 1) * sizeof *walk_list);
            walk_list[walk_n++] = gl_xstrdup(argv[a]);
        }
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    interrupted = 0;

    uint64_t mine = 0;
    for (size_t i = 0; i < walk_n; i++)
        mine += i % p.world == p.rank;
    gl_progress_start(&p.progress, "pack", "files", mine, 0);
    int rc = GL_OK;
    for (size_t i = 0; i < walk_n && !rc && !interrupted; i++) {
        if (i % p.world != p.rank)
            continue;
        p.files++;
        int r = pack_file(&p, walk_list[i], &err);
        if (r > 0)
            rc = r;
    }
    gl_progress_finish(&p.progress);
    if (!rc)
        rc = pack_flush(&p, &err);
    if (!rc)
        rc = pack_seal(&p, &err);
    else
        shard_writer_abort(&p.w);
    for (size_t i = 0; i < p.nbatch; i++)
        free(p.batch[i].text);
    free(p.batch);
    shard_tokenizer_free(&p.tok);
    for (size_t i = 0; i < walk_n; i++)
        free(walk_list[i]);
    free(walk_list);
    if (rc)
        return gl_cmd_fail(argv[0], &err);
    char t[32];
    gl_info("packed %llu documents, %s tokens, from %llu inputs into %llu shard(s) in %s",
            (unsigned long long)p.docs, gl_fmt_count((double)p.tokens, t, sizeof t), (unsigned long long)p.files,
            (unsigned long long)p.shards, p.dir);
    if (p.skip_binary || p.skip_oversized || p.skip_small || p.unreadable)
        gl_info("skipped: %llu binary, %llu oversized, %llu too short; %llu unreadable",
                (unsigned long long)p.skip_binary, (unsigned long long)p.skip_oversized,
                (unsigned long long)p.skip_small, (unsigned long long)p.unreadable);
    if (interrupted) {
        gl_error("interrupted; what was packed so far is sealed");
        return GL_EXIT_FAIL;
    }
    return p.unreadable ? GL_EXIT_FAIL : GL_EXIT_OK;
}

static const gl_cmd_t shard_cmds[] = {
    {"stat", cmd_stat, "counts, tokens, sources, tokenizer and size of a dataset"},
    {"verify", cmd_verify, "check every shard; exit 3 naming any corrupt one"},
    {"cat", cmd_cat, "print documents as token ids or text"},
    {"sample", cmd_sample, "print the (B, T+1) windows the training sampler yields"},
    {"pack", cmd_pack, "pack text files or stdin into shards"},
    {"import", shards_import_cmd, "JSONL conversations, rankings or prompts into SFT/RM/RL shards"},
    {NULL, NULL, NULL},
};

int shards_cmd(int argc, char **argv)
{
    return gl_cmd_dispatch(argv[0], shard_cmds, argc, argv);
}
