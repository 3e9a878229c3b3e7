/* cmd.c — `gptline tokenizer`: encode, decode, info, convert and train.
 *
 * The command layer over the tokenizer library: option parsing, reading
 * stdin or files, printing, exit statuses (0 ok, 1 failure, 2 usage,
 * 3 invalid data). encode streams its input through tok_stream_t, so any
 * size of input works in bounded memory; decode reads ids as text.
 */
#include "shards/shards.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Options shared by the commands that load a vocabulary. */
typedef struct {
    const char *path;
    tok_load_opts_t o;
} vocab_arg_t;

static int set_pattern(const char *prog, const char *s, tok_pretok_t *out)
{
    int p = tok_pretok_from_name(s);
    if (p < 0)
        return gl_usage_error(prog, "unknown pattern '%s' (gpt2, cl100k_base or o200k_base)", s);
    *out = (tok_pretok_t)p;
    return 0;
}

/* The vocabulary options every subcommand shares: -t VOCAB, --pattern,
 * --chat-roles. 0, or the exit status of a bad value. */
static int vocab_opt(const char *prog, int c, const char *arg, vocab_arg_t *va)
{
    switch (c) {
    case 't': va->path = arg; return 0;
    case 'P': return set_pattern(prog, arg, &va->o.pattern);
    default: va->o.chat_roles = 1; return 0; /* 'C' */
    }
}

static const char vocab_help[] =
    "  -t, --tokenizer VOCAB   a tiktoken rank file, GPT-2 encoder.json (vocab.bpe\n"
    "                          beside it) or a gptline .gltok file\n"
    "      --pattern P         pre-tokenization pattern when the file does not say\n"
    "                          (gpt2, cl100k_base, o200k_base)\n"
    "      --chat-roles        add <|system|>, <|user|>, <|assistant|> when absent\n";

static tok_vocab_t *load_vocab(const char *prog, vocab_arg_t *va, int *status)
{
    gl_err_t err = {0};
    if (!va->path) {
        *status = gl_usage_error(prog, "missing --tokenizer VOCAB");
        return NULL;
    }
    tok_vocab_t *v = tok_vocab_load(va->path, &va->o, &err);
    if (!v)
        *status = gl_cmd_fail(prog, &err);
    return v;
}

/* Reads a whole file ("-": stdin). Caller owns *buf. */
static int read_all(const char *path, char **buf, size_t *len, gl_err_t *err)
{
    if (strcmp(path, "-"))
        return gl_read_file(path, (size_t)1 << 34, buf, len, err);
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    if (!b)
        return gl_err_set(err, GL_ENOMEM, "out of memory");
    for (;;) {
        if (n == cap) {
            cap *= 2;
            char *p = realloc(b, cap + 1);
            if (!p) {
                free(b);
                return gl_err_set(err, GL_ENOMEM, "out of memory reading stdin");
            }
            b = p;
        }
        ssize_t r = read(0, b + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(b);
            return gl_err_set(err, GL_EIO, "stdin: %s", strerror(errno));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return GL_OK;
}

/* Writes ids as decimal, space-separated (first says whether one came yet). */
static void print_ids(FILE *f, const tok_ids_t *ids, int *first)
{
    char buf[1 << 16];
    size_t o = 0;
    for (size_t i = 0; i < ids->n; i++) {
        if (o > sizeof buf - 16) {
            fwrite(buf, 1, o, f);
            o = 0;
        }
        if (!*first)
            buf[o++] = ' ';
        *first = 0;
        char tmp[12];
        int k = 0;
        uint32_t x = ids->ids[i];
        do
            tmp[k++] = (char)('0' + x % 10);
        while ((x /= 10));
        while (k)
            buf[o++] = tmp[--k];
    }
    fwrite(buf, 1, o, f);
}

/* ---- encode ---------------------------------------------------------------- */

static int cmd_encode(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, NULL, 't'},
                                         {"pattern", required_argument, NULL, 'P'},
                                         {"chat-roles", no_argument, NULL, 'C'},
                                         {"allow-special", optional_argument, NULL, 'a'},
                                         {"count", no_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    vocab_arg_t va = {0};
    const char *allow = NULL;
    int c, count_only = 0, st;
    while ((c = getopt_long(argc, argv, "t:c", opts, NULL)) != -1) {
        switch (c) {
        case 't': case 'P': case 'C':
            if ((st = vocab_opt(argv[0], c, optarg, &va)))
                return st;
            break;
        case 'a': allow = optarg ? optarg : "all"; break;
        case 'c': count_only = 1; break;
        case 'h':
            printf("usage: %s -t VOCAB [options] [FILE|-]\n\n"
                   "Encodes text (FILE or stdin) to token ids: one line of ids separated by\n"
                   "spaces on stdout. Any bytes are accepted. Text that looks like a special\n"
                   "token is encoded as plain text unless that token is allowed.\n\n"
                   "%s"
                   "      --allow-special[=LIST]  recognise special tokens: all (the default\n"
                   "                          when no LIST is given) or a comma-separated list\n"
                   "                          of names such as '<|endoftext|>'\n"
                   "  -c, --count             print only the number of tokens\n",
                   argv[0], vocab_help);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind < argc - 1)
        return gl_usage_error(argv[0], "expected at most one input");
    const char *in = optind < argc ? argv[optind] : "-";
    tok_vocab_t *v = load_vocab(argv[0], &va, &st);
    if (!v)
        return st;
    uint64_t allowed = TOK_ALLOW_NONE;
    if (allow && !strcmp(allow, "all")) {
        allowed = TOK_ALLOW_ALL;
    } else if (allow) {
        char *list = gl_xstrdup(allow), *save = NULL;
        for (char *s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
            uint64_t m = tok_special_mask(v, s);
            if (!m) {
                free(list);
                tok_vocab_free(&v);
                return gl_usage_error(argv[0], "no special token '%s' in %s", s, va.path);
            }
            allowed |= m;
        }
        free(list);
    }
    gl_err_t err = {0};
    FILE *f = strcmp(in, "-") ? fopen(in, "rb") : stdin;
    if (!f) {
        gl_err_set(&err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", in, strerror(errno));
        tok_vocab_free(&v);
        return gl_cmd_fail(argv[0], &err);
    }
    tok_stream_t *s = tok_stream_new(v, allowed, 0, &err);
    tok_ids_t ids = {0};
    int first = 1, rc = s ? GL_OK : err.code;
    uint64_t total = 0;
    static char buf[1 << 20];
    size_t n;
    while (!rc && (n = fread(buf, 1, sizeof buf, f)) > 0) {
        ids.n = 0;
        rc = tok_stream_feed(s, buf, n, &ids, &err);
        total += ids.n;
        if (!count_only)
            print_ids(stdout, &ids, &first);
    }
    if (!rc && ferror(f))
        rc = gl_err_set(&err, GL_EIO, "%s: read error", in);
    if (!rc) {
        ids.n = 0;
        rc = tok_stream_finish(s, &ids, &err);
        total += ids.n;
        if (!count_only)
            print_ids(stdout, &ids, &first);
    }
    if (count_only)
        printf("%llu", (unsigned long long)total);
    putchar('\n');
    if (f != stdin)
        fclose(f);
    tok_stream_free(&s);
    tok_ids_free(&ids);
    tok_vocab_free(&v);
    if (!rc && fflush(stdout))
        rc = gl_err_set(&err, GL_EIO, "stdout: %s", strerror(errno));
    return rc ? gl_cmd_fail(argv[0], &err) : GL_EXIT_OK;
}

/* ---- decode ---------------------------------------------------------------- */

static int cmd_decode(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, NULL, 't'},
                                         {"pattern", required_argument, NULL, 'P'},
                                         {"chat-roles", no_argument, NULL, 'C'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    vocab_arg_t va = {0};
    int c, st;
    while ((c = getopt_long(argc, argv, "t:", opts, NULL)) != -1) {
        switch (c) {
        case 't': case 'P': case 'C':
            if ((st = vocab_opt(argv[0], c, optarg, &va)))
                return st;
            break;
        case 'h':
            printf("usage: %s -t VOCAB [FILE|-]\n\n"
                   "Decodes token ids (decimal, separated by spaces, commas or newlines; FILE\n"
                   "or stdin) to the bytes they stand for, on stdout. An id that is not a\n"
                   "token of VOCAB, or text that is not an id, exits with status 3.\n\n%s",
                   argv[0], vocab_help);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind < argc - 1)
        return gl_usage_error(argv[0], "expected at most one input");
    const char *in = optind < argc ? argv[optind] : "-";
    gl_err_t err = {0};
    char *text = NULL;
    size_t len = 0;
    if (read_all(in, &text, &len, &err))
        return gl_cmd_fail(argv[0], &err);
    tok_vocab_t *v = load_vocab(argv[0], &va, &st);
    if (!v) {
        free(text);
        return st;
    }
    tok_ids_t ids = {0};
    int rc = GL_OK;
    for (char *p = text; *p && !rc;) {
        if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t' || *p == ',') {
            p++;
            continue;
        }
        char *e;
        errno = 0;
        unsigned long long x = strtoull(p, &e, 10);
        if (e == p || *p == '-' || *p == '+' || errno || x > UINT32_MAX) {
            rc = gl_err_set(&err, GL_EPARSE, "%s: '%.20s' is not a token id (byte %zu)", in, p, (size_t)(p - text));
            break;
        }
        if ((rc = tok_ids_reserve(&ids, 1, &err)))
            break;
        ids.ids[ids.n++] = (uint32_t)x;
        p = e;
    }
    uint8_t *out = NULL;
    size_t olen = 0, ocap = 0;
    if (!rc && !(rc = tok_decode(v, ids.ids, ids.n, &out, &olen, &ocap, &err)) &&
        (fwrite(out, 1, olen, stdout) != olen || fflush(stdout)))
        rc = gl_err_set(&err, GL_EIO, "stdout: %s", strerror(errno));
    free(out);
    free(text);
    tok_ids_free(&ids);
    tok_vocab_free(&v);
    if (rc == GL_ERANGE || rc == GL_EPARSE) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        return GL_EXIT_INVALID;
    }
    return rc ? gl_cmd_fail(argv[0], &err) : GL_EXIT_OK;
}

/* ---- info ------------------------------------------------------------------ */

static int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, NULL, 't'},
                                         {"pattern", required_argument, NULL, 'P'},
                                         {"chat-roles", no_argument, NULL, 'C'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    vocab_arg_t va = {0};
    int c, st;
    while ((c = getopt_long(argc, argv, "t:", opts, NULL)) != -1) {
        switch (c) {
        case 't': case 'P': case 'C':
            if ((st = vocab_opt(argv[0], c, optarg, &va)))
                return st;
            break;
        case 'h':
            printf("usage: %s -t VOCAB\n\n"
                   "Prints a vocabulary's name, size, pattern, special tokens and identity\n"
                   "hash (the one recorded in token shards).\n\n%s",
                   argv[0], vocab_help);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind < argc && !va.path)
        va.path = argv[optind++];
    if (optind != argc)
        return gl_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
    double t0 = gl_now();
    tok_vocab_t *v = load_vocab(argv[0], &va, &st);
    if (!v)
        return st;
    double dt = gl_now() - t0;
    tok_pretok_t p = tok_vocab_pattern(v);
    printf("name        %s\n", tok_vocab_name(v));
    printf("hash        %016llx\n", (unsigned long long)tok_vocab_hash(v));
    printf("vocab size  %u (%u ordinary tokens, %zu special)\n", tok_vocab_size(v), tok_vocab_ordinary(v),
           tok_special_count(v));
    printf("pattern     %s\n", tok_pretok_name(p));
    printf("regex       %s\n", tok_pretok_regex(p));
    int64_t eot = tok_eot_id(v);
    if (eot >= 0)
        printf("end-of-text %lld\n", (long long)eot);
    for (size_t i = 0; i < tok_special_count(v); i++) {
        uint32_t id;
        const char *n = tok_special_name(v, i, &id);
        printf("special     %u %s\n", id, n);
    }
    printf("loaded in   %.1f ms\n", dt * 1e3);
    tok_vocab_free(&v);
    return GL_EXIT_OK;
}

/* ---- convert ---------------------------------------------------------------- */

static int parse_format(const char *s, tok_format_t *f)
{
    if (!strcmp(s, "tiktoken"))
        *f = TOK_FMT_TIKTOKEN;
    else if (!strcmp(s, "gpt2"))
        *f = TOK_FMT_GPT2;
    else if (!strcmp(s, "gltok"))
        *f = TOK_FMT_GLTOK;
    else
        return -1;
    return 0;
}

static tok_format_t format_of_path(const char *path)
{
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".json"))
        return TOK_FMT_GPT2;
    if (n >= 9 && !strcmp(path + n - 9, ".tiktoken"))
        return TOK_FMT_TIKTOKEN;
    return TOK_FMT_GLTOK;
}

static int cmd_convert(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, NULL, 't'},
                                         {"pattern", required_argument, NULL, 'P'},
                                         {"chat-roles", no_argument, NULL, 'C'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"to", required_argument, NULL, 'f'},
                                         {"name", required_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    vocab_arg_t va = {0};
    const char *out = NULL;
    tok_format_t fmt = TOK_FMT_AUTO;
    int c, st;
    while ((c = getopt_long(argc, argv, "t:o:", opts, NULL)) != -1) {
        switch (c) {
        case 't': case 'P': case 'C':
            if ((st = vocab_opt(argv[0], c, optarg, &va)))
                return st;
            break;
        case 'o': out = optarg; break;
        case 'n': va.o.name = optarg; break;
        case 'f':
            if (parse_format(optarg, &fmt))
                return gl_usage_error(argv[0], "unknown format '%s' (tiktoken, gpt2, gltok)", optarg);
            break;
        case 'h':
            printf("usage: %s -t VOCAB -o OUT [--to FORMAT] [options]\n\n"
                   "Writes a vocabulary in another format: tiktoken (rank file; special\n"
                   "tokens are not part of it), gpt2 (OUT is encoder.json, vocab.bpe is\n"
                   "written beside it) or gltok (gptline's own file: tokens, pattern,\n"
                   "special tokens, identity hash). Without --to the format follows OUT's\n"
                   "extension: .json, .tiktoken, else gltok. Files are written atomically.\n\n"
                   "%s"
                   "  -o, --output OUT        the file to write\n"
                   "      --to FORMAT         tiktoken, gpt2 or gltok\n"
                   "      --name NAME         the vocabulary's name (recorded in gltok)\n",
                   argv[0], vocab_help);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (optind < argc && !va.path)
        va.path = argv[optind++];
    if (optind != argc)
        return gl_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
    if (!out)
        return gl_usage_error(argv[0], "missing --output OUT");
    if (fmt == TOK_FMT_AUTO)
        fmt = format_of_path(out);
    tok_vocab_t *v = load_vocab(argv[0], &va, &st);
    if (!v)
        return st;
    gl_err_t err = {0};
    int rc = tok_vocab_save(v, out, fmt, &err);
    if (!rc)
        gl_info("wrote %s (%u tokens, hash %016llx)", out, tok_vocab_size(v),
                (unsigned long long)tok_vocab_hash(v));
    tok_vocab_free(&v);
    return rc ? gl_cmd_fail(argv[0], &err) : GL_EXIT_OK;
}

/* ---- train ------------------------------------------------------------------ */

/* Counts the pieces of every document of a shard dataset, decoded with the
 * byte-level ids (byte shards) or the vocabulary the dataset was made with,
 * handed to the trainer in batches of about 32 MB (counted over threads). */
static int train_from_shards(tok_trainer_t *t, const char *dir, const char *vocab_path, uint64_t *bytes,
                             gl_err_t *err)
{
    shard_dataset_t *d = shard_dataset_open(dir, 0, err);
    if (!d)
        return err->code;
    const Gptline__TokenizerId *id = shard_dataset_tokenizer(d);
    tok_vocab_t *v = NULL;
    int rc = GL_OK, bytes_ids = id && !strcmp(id->name, SHARD_BYTES_TOKENIZER) && id->vocab_size == SHARD_BYTES_VOCAB;
    if (id && !bytes_ids) {
        tok_load_opts_t lo = {.chat_roles = 0};
        if (!vocab_path) {
            rc = gl_err_set(err, GL_EINVAL, "%s: made with '%s'; give it with --shards-tokenizer", dir, id->name);
            goto out;
        }
        if (!(v = tok_vocab_load(vocab_path, &lo, err))) {
            rc = (int)err->code;
            goto out;
        }
        /* the dataset may have been made with the chat roles added */
        if (tok_vocab_hash(v) != id->hash && (tok_vocab_add_chat_roles(v, err) || tok_vocab_hash(v) != id->hash)) {
            rc = gl_err_set(err, GL_EMISMATCH, "%s: made with '%s', not with %s", dir, id->name, vocab_path);
            goto out;
        }
    }
    tok_doc_t *docs = NULL;
    uint8_t **bufs = NULL;
    size_t n = 0, cap = 0, batch = 0;
    uint64_t total = shard_dataset_docs(d);
    uint32_t *ids = NULL;
    size_t ids_cap = 0;
    for (uint64_t i = 0; i <= total && !rc; i++) {
        if (i == total || batch >= (32u << 20)) { /* count the batch */
            rc = tok_trainer_add(t, docs, n, err);
            for (size_t k = 0; k < n; k++)
                free(bufs[k]);
            n = 0;
            batch = 0;
            if (i == total)
                break;
        }
        shard_tokens_t tk;
        const uint8_t *meta;
        size_t mlen;
        if ((rc = shard_dataset_record(d, i, &tk, &meta, &mlen, NULL, err)))
            break;
        if (tk.n > ids_cap) {
            ids_cap = tk.n;
            ids = gl_xrealloc(ids, ids_cap * sizeof *ids);
        }
        for (uint64_t j = 0; j < tk.n; j++)
            ids[j] = shard_token_at(&tk, j);
        uint8_t *text = NULL;
        size_t len = 0, tcap = 0;
        if (bytes_ids) {
            text = gl_xmalloc(tk.n ? tk.n : 1);
            for (uint64_t j = 0; j < tk.n && !rc; j++) {
                if (ids[j] > 255)
                    rc = gl_err_set(err, GL_ECORRUPT, "%s: document %llu: id %u is not a byte", dir,
                                    (unsigned long long)i, ids[j]);
                text[len++] = (uint8_t)ids[j];
            }
        } else {
            rc = tok_decode(v, ids, tk.n, &text, &len, &tcap, err);
        }
        if (rc) {
            free(text);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            docs = gl_xrealloc(docs, cap * sizeof *docs);
            bufs = gl_xrealloc(bufs, cap * sizeof *bufs);
        }
        bufs[n] = text;
        docs[n++] = (tok_doc_t){text, len};
        batch += len;
        *bytes += len;
    }
    for (size_t k = 0; k < n; k++)
        free(bufs[k]);
    free(docs), free(bufs), free(ids);
out:
    tok_vocab_free(&v);
    shard_dataset_close(&d);
    return rc;
}

static int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"vocab-size", required_argument, NULL, 'n'},
                                         {"pattern", required_argument, NULL, 'P'},
                                         {"threads", required_argument, NULL, 'j'},
                                         {"name", required_argument, NULL, 'N'},
                                         {"no-specials", no_argument, NULL, 'S'},
                                         {"shards", required_argument, NULL, 'D'},
                                         {"shards-tokenizer", required_argument, NULL, 'T'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    tok_train_opts_t o = {.vocab_size = 0, .pattern = TOK_PRETOK_O200K, .chat_roles = 1};
    const char *out = NULL, *shards = NULL, *shards_vocab = NULL;
    int c, st;
    uint64_t u;
    while ((c = getopt_long(argc, argv, "o:n:j:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'n':
            if (gl_parse_u64(optarg, &u) || u < 256 || u > 2000000)
                return gl_usage_error(argv[0], "bad --vocab-size '%s' (256 to 2M)", optarg);
            o.vocab_size = (uint32_t)u;
            break;
        case 'j':
            if (gl_parse_u64(optarg, &u) || u > 64)
                return gl_usage_error(argv[0], "bad --threads '%s'", optarg);
            o.threads = (int)u;
            break;
        case 'P':
            if ((st = set_pattern(argv[0], optarg, &o.pattern)))
                return st;
            break;
        case 'N': o.name = optarg; break;
        case 'S': o.chat_roles = 0; break;
        case 'D': shards = optarg; break;
        case 'T': shards_vocab = optarg; break;
        case 'h':
            printf("usage: %s -o OUT -n N [options] [FILE...|-]\n"
                   "       %s -o OUT -n N [options] --shards DIR\n\n"
                   "Learns a byte-level BPE vocabulary of N ordinary tokens (256 bytes plus\n"
                   "N-256 merges) from text files or stdin, each file one document, or from\n"
                   "the documents of a shard dataset.\n"
                   "Each merge takes the most frequent adjacent pair of tokens over all\n"
                   "pre-token pieces; ties go to the smallest (left id, right id), so the\n"
                   "result is deterministic. <|endoftext|> and the chat roles <|system|>,\n"
                   "<|user|>, <|assistant|> follow the ordinary tokens.\n\n"
                   "  -o, --output OUT        vocabulary file (format by extension, as convert)\n"
                   "  -n, --vocab-size N      ordinary tokens to learn (256 to 2M)\n"
                   "      --pattern P         gpt2, cl100k_base or o200k_base (default)\n"
                   "  -j, --threads N         counting threads (default: all cores)\n"
                   "      --name NAME         recorded in the file (default: OUT's base name)\n"
                   "      --no-specials       no end-of-text or chat-role tokens\n"
                   "      --shards DIR        learn from a shard dataset's documents\n"
                   "      --shards-tokenizer VOCAB  the vocabulary that dataset was made with\n"
                   "                          (not needed for byte-level shards)\n",
                   argv[0], argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
    }
    if (!out)
        return gl_usage_error(argv[0], "missing --output OUT");
    if (!o.vocab_size)
        return gl_usage_error(argv[0], "missing --vocab-size N");
    char *name = NULL;
    if (!o.name) {
        const char *b = strrchr(out, '/');
        name = gl_xstrdup(b ? b + 1 : out);
        char *dot = strrchr(name, '.');
        if (dot && dot != name)
            *dot = '\0';
        o.name = name;
    }
    gl_err_t err = {0};
    int rc = GL_OK;
    tok_vocab_t *v = NULL;
    gl_progress_t prog;
    o.progress = &prog;
    tok_trainer_t *t = tok_trainer_new(&o, &err);
    if (!t) {
        free(name);
        return gl_cmd_fail(argv[0], &err);
    }
    if (shards && optind < argc) {
        tok_trainer_free(&t);
        free(name);
        return gl_usage_error(argv[0], "give --shards or files, not both");
    }
    if (shards) {
        double s0 = gl_now();
        uint64_t sbytes = 0;
        rc = train_from_shards(t, shards, shards_vocab, &sbytes, &err);
        if (!rc) {
            char a[32];
            gl_info("counted %zu distinct pieces in %s of text from %s in %.2f s", tok_trainer_pieces(t),
                    gl_fmt_bytes((double)sbytes, a, sizeof a), shards, gl_now() - s0);
            gl_progress_start(&prog, "train", "merges", o.vocab_size - 256, 0);
            v = tok_trainer_finish(t, &err);
            gl_progress_finish(&prog);
            if (!v)
                rc = err.code;
        }
        if (!rc)
            rc = tok_vocab_save(v, out, format_of_path(out), &err);
        if (!rc)
            gl_info("wrote %s: %u tokens (%u ordinary), hash %016llx", out, tok_vocab_size(v), tok_vocab_ordinary(v),
                    (unsigned long long)tok_vocab_hash(v));
        tok_vocab_free(&v);
        tok_trainer_free(&t);
        free(name);
        return rc ? gl_cmd_fail(argv[0], &err) : GL_EXIT_OK;
    }
    int nin = argc - optind;
    const char *stdin_only[] = {"-"};
    const char **inputs = nin ? (const char **)argv + optind : stdin_only;
    if (!nin)
        nin = 1;
    double t0 = gl_now();
    uint64_t bytes = 0;
    for (int i = 0; i < nin && !rc; i++) {
        char *buf;
        size_t len;
        if ((rc = read_all(inputs[i], &buf, &len, &err)))
            break;
        tok_doc_t d = {buf, len};
        rc = tok_trainer_add(t, &d, 1, &err);
        bytes += len;
        free(buf);
    }
    double t1 = gl_now();
    if (!rc) {
        char a[32];
        gl_info("counted %zu distinct pieces in %s of text in %.2f s",
                tok_trainer_pieces(t), gl_fmt_bytes((double)bytes, a, sizeof a), t1 - t0);
        gl_progress_start(&prog, "train", "merges", o.vocab_size - 256, 0);
        v = tok_trainer_finish(t, &err);
        gl_progress_finish(&prog);
        if (!v)
            rc = err.code;
    }
    if (!rc)
        rc = tok_vocab_save(v, out, format_of_path(out), &err);
    if (!rc)
        gl_info("wrote %s: %u tokens (%u ordinary), hash %016llx, in %.2f s", out, tok_vocab_size(v),
                tok_vocab_ordinary(v), (unsigned long long)tok_vocab_hash(v), gl_now() - t0);
    tok_vocab_free(&v);
    tok_trainer_free(&t);
    free(name);
    return rc ? gl_cmd_fail(argv[0], &err) : GL_EXIT_OK;
}

static const gl_cmd_t tok_cmds[] = {
    {"encode", cmd_encode, "text (stdin or a file) to token ids"},
    {"decode", cmd_decode, "token ids to text"},
    {"info", cmd_info, "size, pattern, special tokens and identity hash of a vocabulary"},
    {"convert", cmd_convert, "write a vocabulary as tiktoken, GPT-2 or gltok files"},
    {"train", cmd_train, "learn a BPE vocabulary from text"},
    {NULL, NULL, NULL},
};

int tok_cmd(int argc, char **argv)
{
    return gl_cmd_dispatch(argv[0], tok_cmds, argc, argv);
}
