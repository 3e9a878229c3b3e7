/* sample.c — `gptline sample`: continuations of a prompt, best-of-N
 * against a reward model, and candidate responses for the labelers.
 *
 * Three modes over the same batched, KV-cached generator (train_generate):
 *   - one prompt (--prompt / --prompt-ids), -N samples one after another;
 *   - best-of-N (--best-of N --reward RM): N samples of the prompt as one
 *     batch, each scored by the reward model, the highest printed
 *     (train_best_of_n; --scores prints every sample with its score);
 *   - candidates (--prompts FILE --n K): K samples of every prompt of a
 *     file, written as the JSON lines `gptline label admin
 *     import-candidates` reads ({"prompt": ..., "candidates": [...]}), the
 *     loop that turns a model's outputs into ranking tasks. Prompts are
 *     batched (--batch rows per generation call, K rows per prompt).
 *
 * Prompts are wrapped in the chat template the stages train on when the
 * model has one: with a vocabulary holding the chat roles,
 * <|user|>TEXT<|assistant|> (tokenizer/chat.c); for a byte-level model,
 * the labeler's plain-text markers "User: TEXT\n\nAssistant: ". Candidates
 * use it by default (--raw turns it off), a single --prompt with --chat.
 * Text written as JSON is made valid UTF-8 (a sampled byte sequence need
 * not be): each invalid byte becomes U+FFFD.
 */
#include "tokenizer/tokenizer.h"
#include "trainer/run.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* What the labeling service accepts for a ranking task (labeler.h). */
#define CAND_MIN 2
#define CAND_MAX 9

/* Parses "12 7 3" (spaces or commas) into ids; returns the count or -1. */
static int parse_ids(const char *s, int32_t *ids, int cap)
{
    int n = 0;
    for (;;) {
        while (*s == ' ' || *s == ',')
            s++;
        if (!*s)
            return n;
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX || n >= cap)
            return -1;
        ids[n++] = (int32_t)v;
        s = end;
    }
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c >= 0x01 && c < 0x80)
        return 1;
    size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!len || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return len;
}

/* Copy of s[0..n) as valid UTF-8: NUL and each byte not part of a valid
 * sequence become U+FFFD. Caller frees. */
static char *utf8_clean(const uint8_t *s, size_t n)
{
    char *out = gl_xmalloc(n * 3 + 1), *o = out;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(s + i, n - i);
        if (k) {
            memcpy(o, s + i, k);
            o += k, i += k;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3, i++;
        }
    }
    *o = '\0';
    return out;
}

/* The model being sampled and how its text maps to ids. */
typedef struct {
    train_model_t m;
    train_config_t cfg;
    tok_vocab_t *vocab; /* NULL: byte-level (vocab 257) or ids only */
    int bytes;          /* byte-level model: ids 0-255 are the bytes, 256 end-of-text */
    int32_t stop_id;    /* end-of-text, or -1 */
} sampler_t;

/* Encodes a prompt (the chat template's user turn with chat) into
 * ids[0..cap), keeping its end when too long; *n gets the count. Without a
 * vocabulary or byte-level model only ids are possible: GL_EINVAL. *chat
 * is cleared when the vocabulary has no chat roles (plain text then). */
static int encode_prompt(const sampler_t *s, const char *text, int *chat, int32_t *ids, int cap, int *n,
                         gl_err_t *err)
{
    tok_ids_t t = {0};
    int rc = GL_OK;
    *n = 0;
    if (s->vocab) {
        tok_turn_t turn = {TOK_ROLE_USER, text, strlen(text)};
        if (*chat && tok_chat_prompt(s->vocab, &turn, 1, &t, err) == GL_EINVAL) {
            *chat = 0; /* a vocabulary without the chat roles */
            t.n = 0;
            gl_err_clear(err);
        }
        if (!*chat)
            rc = tok_encode(s->vocab, text, strlen(text), TOK_ALLOW_NONE, &t, err);
    } else if (s->bytes) {
        const char *pre = *chat ? "User: " : "", *post = *chat ? "\n\nAssistant: " : "";
        size_t lp = strlen(pre), lt = strlen(text), lq = strlen(post);
        if (!(rc = tok_ids_reserve(&t, lp + lt + lq, err))) {
            for (size_t i = 0; i < lp; i++)
                t.ids[t.n++] = (uint8_t)pre[i];
            for (size_t i = 0; i < lt; i++)
                t.ids[t.n++] = (uint8_t)text[i];
            for (size_t i = 0; i < lq; i++)
                t.ids[t.n++] = (uint8_t)post[i];
        }
    } else {
        rc = gl_err_set(err, GL_EINVAL, "prompt text needs --tokenizer (the model is not byte-level)");
    }
    size_t from = t.n > (size_t)cap ? t.n - (size_t)cap : 0;
    for (size_t i = from; !rc && i < t.n; i++)
        ids[(*n)++] = (int32_t)t.ids[i];
    tok_ids_free(&t);
    return rc;
}

/* The response ids[0..n) (its stop token dropped) as UTF-8 text; caller
 * frees. */
static int response_text(const sampler_t *s, const int32_t *ids, int n, char **out, gl_err_t *err)
{
    if (n && ids[n - 1] == s->stop_id)
        n--;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    if (s->vocab) {
        int rc = tok_decode(s->vocab, (const uint32_t *)ids, (size_t)n, &buf, &len, &cap, err);
        if (rc) {
            free(buf);
            return rc;
        }
    } else {
        buf = gl_xmalloc((size_t)n + 1);
        for (int i = 0; i < n; i++)
            buf[len++] = ids[i] < 256 ? (uint8_t)ids[i] : '?';
    }
    *out = utf8_clean(buf, len);
    free(buf);
    return GL_OK;
}

/* Prints a response as the plain modes do: ids, or its bytes, a line. */
static int print_response(const sampler_t *s, const int32_t *ids, int n, int ids_out, gl_err_t *err)
{
    if (ids_out) {
        for (int i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
    } else {
        if (n && ids[n - 1] == s->stop_id)
            n--;
        if (s->vocab) {
            uint8_t *buf = NULL;
            size_t len = 0, cap = 0;
            int rc = tok_decode(s->vocab, (const uint32_t *)ids, (size_t)n, &buf, &len, &cap, err);
            if (!rc)
                fwrite(buf, 1, len, stdout);
            free(buf);
            if (rc)
                return rc;
        } else {
            for (int i = 0; i < n; i++)
                putchar(ids[i] < 256 ? ids[i] : '?');
        }
    }
    putchar('\n');
    return GL_OK;
}

/* Loads the model and (optionally) its vocabulary. */
static int sampler_open(sampler_t *s, const char *model, const char *vocab_path, gl_err_t *err)
{
    memset(s, 0, sizeof *s);
    s->stop_id = -1;
    char *path = train_checkpoint_model_path(model, err);
    int rc = !path ? (int)err->code : GL_OK;
    if (!rc && !(rc = train_read_config(path, &s->cfg, err)) &&
        !(rc = train_model_init(&s->m, &s->cfg, 0, 0, 0, err)))
        rc = train_load(&s->m, path, 0, err);
    free(path);
    if (rc)
        return rc;
    s->bytes = s->cfg.vocab_size == 257 && !vocab_path;
    if (s->bytes)
        s->stop_id = 256;
    if (!vocab_path)
        return GL_OK;
    tok_load_opts_t lo = {.chat_roles = 0};
    if (!(s->vocab = tok_vocab_load(vocab_path, &lo, err)))
        return err->code;
    /* the model's data may have been made with the chat roles added */
    if (((s->cfg.tokenizer_hash && tok_vocab_hash(s->vocab) != s->cfg.tokenizer_hash) ||
         (int)tok_vocab_size(s->vocab) != s->cfg.vocab_size) &&
        (rc = tok_vocab_add_chat_roles(s->vocab, err)))
        return rc;
    if (s->cfg.tokenizer_hash && tok_vocab_hash(s->vocab) != s->cfg.tokenizer_hash)
        return gl_err_set(err, GL_EMISMATCH, "%s: not the vocabulary the model was trained with", vocab_path);
    if ((int)tok_vocab_size(s->vocab) != s->cfg.vocab_size)
        return gl_err_set(err, GL_EMISMATCH, "%s: %u tokens, the model has %d", vocab_path, tok_vocab_size(s->vocab),
                          s->cfg.vocab_size);
    s->stop_id = (int32_t)tok_eot_id(s->vocab);
    return GL_OK;
}

static void sampler_close(sampler_t *s)
{
    tok_vocab_free(&s->vocab);
    train_model_free(&s->m);
}

/* ---- best-of-N ------------------------------------------------------------ */

/* The reward model of a checkpoint: the model and score.safetensors beside
 * it; rows x its context. Caller frees *w and the model. */
static int reward_open(const char *ckpt, const train_config_t *policy, int rows, train_model_t *rm, float **w,
                       gl_err_t *err)
{
    train_config_t cfg;
    char *path = train_checkpoint_model_path(ckpt, err), *hp = NULL;
    int rc = !path ? (int)err->code : train_read_config(path, &cfg, err);
    if (rc)
        goto out;
    if (cfg.vocab_size != policy->vocab_size ||
        (cfg.tokenizer_hash && policy->tokenizer_hash && cfg.tokenizer_hash != policy->tokenizer_hash)) {
        rc = gl_err_set(err, GL_EMISMATCH, "%s: the reward model's vocabulary is not the policy's", path);
        goto out;
    }
    if ((rc = train_model_init(rm, &cfg, rows, cfg.n_ctx, 0, err)) || (rc = train_load(rm, path, 0, err)))
        goto out;
    char *slash = strrchr(path, '/');
    if (slash)
        *slash = '\0';
    hp = gl_path_join(slash ? path : ".", "score.safetensors");
    *w = gl_xcalloc((size_t)cfg.n_embd, sizeof **w);
    rc = train_rm_head_load(hp, cfg.n_embd, *w, err);
out:
    free(path), free(hp);
    return rc;
}

/* ---- candidates ------------------------------------------------------------ */

typedef struct {
    char *text; /* the prompt as given (valid UTF-8) */
    json_t *id; /* the input's "id", or NULL */
} prompt_t;

/* Reads FILE: JSON lines {"prompt": "...", "id": ...} (what import-prompts
 * reads) or one prompt per line; blank lines are skipped. */
static int read_prompts(const char *file, prompt_t **out, int *n, gl_err_t *err)
{
    FILE *f = strcmp(file, "-") ? fopen(file, "r") : stdin;
    if (!f)
        return gl_err_set(err, GL_ENOTFOUND, "%s: %s", file, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    int rc = GL_OK, have = 0;
    *out = NULL;
    *n = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (!len)
            continue;
        prompt_t p = {0};
        if (line[0] == '{') {
            json_error_t je;
            json_t *o = json_loadb(line, (size_t)len, 0, &je);
            const char *t = json_string_value(json_object_get(o, "prompt"));
            if (!t || !*t) {
                json_decref(o);
                rc = gl_err_set(err, GL_EPARSE, "%s:%zu: %s", file, lineno,
                                o ? "no \"prompt\" string" : je.text);
                break;
            }
            p.text = gl_xstrdup(t);
            if ((p.id = json_object_get(o, "id")))
                json_incref(p.id);
            json_decref(o);
        } else {
            p.text = utf8_clean((const uint8_t *)line, (size_t)len);
        }
        if (*n == have) {
            have = have ? 2 * have : 64;
            *out = gl_xrealloc(*out, (size_t)have * sizeof **out);
        }
        (*out)[(*n)++] = p;
    }
    free(line);
    if (f != stdin)
        fclose(f);
    if (!rc && !*n)
        rc = gl_err_set(err, GL_EINVAL, "%s: no prompts", file);
    return rc;
}

/* K samples of every prompt, as import-candidates JSON lines on f. */
static int write_candidates(sampler_t *s, const prompt_t *ps, int np, int K, int batch, int chat,
                            const train_sample_opts_t *so, FILE *f, gl_err_t *err)
{
    int per = batch / K > 0 ? batch / K : 1, rows = per * K, rc = GL_OK;
    int cap = s->cfg.n_ctx + 1 - so->max_new; /* prompt tokens that fit before max_new more */
    train_kv_t kv = {0};
    int32_t *pids = gl_xmalloc((size_t)per * s->cfg.n_ctx * sizeof *pids);
    int32_t *out = gl_xmalloc((size_t)rows * so->max_new * sizeof *out);
    int *plen = gl_xmalloc((size_t)rows * sizeof *plen), *olen = gl_xmalloc((size_t)rows * sizeof *olen);
    const int32_t **prompts = gl_xmalloc((size_t)rows * sizeof *prompts);
    gl_progress_t prog;
    gl_progress_start(&prog, "candidates", "prompts", (uint64_t)np, 0);
    if (cap < 1) {
        rc = gl_err_set(err, GL_EINVAL, "%d new tokens leave no room for a prompt in the context of %d",
                        so->max_new, s->cfg.n_ctx);
        goto out;
    }
    for (int p0 = 0; p0 < np && !rc; p0 += per) {
        int cnt = np - p0 < per ? np - p0 : per, nr = cnt * K;
        for (int i = 0; i < cnt && !rc; i++) {
            int c = chat, n;
            int32_t *ids = pids + (size_t)i * s->cfg.n_ctx;
            if ((rc = encode_prompt(s, ps[p0 + i].text, &c, ids, cap, &n, err)))
                break;
            if (n < 1)
                rc = gl_err_set(err, GL_EINVAL, "prompt %d encodes to no tokens", p0 + i + 1);
            for (int k = 0; k < K; k++) {
                prompts[i * K + k] = ids;
                plen[i * K + k] = n;
            }
        }
        if (rc)
            break;
        if (kv.B != nr) {
            train_kv_free(&kv);
            if ((rc = train_kv_init(&kv, &s->m, nr, s->cfg.n_ctx, err)))
                break;
        }
        train_sample_opts_t o = *so;
        o.seed = so->seed + (uint64_t)p0;
        if ((rc = train_generate(&kv, &s->m, prompts, plen, &o, out, olen, NULL, err)))
            break;
        for (int i = 0; i < cnt && !rc; i++) {
            json_t *line = json_object(), *cands = json_array();
            json_object_set_new(line, "prompt", json_string(ps[p0 + i].text));
            for (int k = 0; k < K && !rc; k++) {
                char *text = NULL;
                int r = i * K + k;
                if (!(rc = response_text(s, out + (size_t)r * so->max_new, olen[r], &text, err)))
                    json_array_append_new(cands, json_string(text));
                free(text);
            }
            json_object_set_new(line, "candidates", cands);
            if (ps[p0 + i].id)
                json_object_set(line, "id", ps[p0 + i].id);
            char *js = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (!rc && (!js || fprintf(f, "%s\n", js) < 0))
                rc = gl_err_set(err, GL_EIO, "writing candidates: %s", strerror(errno));
            free(js);
            json_decref(line);
        }
        gl_progress_add(&prog, (uint64_t)cnt, 0);
    }
out:
    gl_progress_finish(&prog);
    train_kv_free(&kv);
    free(pids), free(out), free(plen), free(olen), free(prompts);
    return rc;
}

/* ---- the command ------------------------------------------------------------ */

static int usage(const char *prog)
{
    printf("usage: %s --model CKPT (--prompt TEXT | --prompt-ids \"ID ...\") [options]\n"
           "       %s --model CKPT --prompt TEXT --best-of N --reward RM_CKPT [--scores]\n"
           "       %s --model CKPT --prompts FILE --n K [--out FILE]\n\n"
           "Generates continuations with the KV cache: temperature 0 is greedy; top-k\n"
           "and top-p (nucleus) restrict sampling; stops at end-of-text. A --prompt\n"
           "is text: encoded with --tokenizer, or as bytes for a byte-level model.\n\n"
           "  -T, --tokenizer VOCAB the model's vocabulary (with its chat roles)\n"
           "  -c, --chat            wrap the prompt as a user turn: <|user|>TEXT<|assistant|>\n"
           "                        (byte-level model: \"User: TEXT\\n\\nAssistant: \")\n"
           "  -n, --max-new N       tokens to generate (100)\n"
           "  -t, --temperature X   1.0; 0 = greedy\n"
           "  -k, --top-k N         0 = off\n"
           "  -P, --top-p X         0 or 1 = off\n"
           "  -s, --seed N          sampling seed (1)\n"
           "  -N, --num N           samples of the same prompt, one per line\n"
           "  -i, --ids             print token ids instead of text\n"
           "best-of-N (rejection sampling):\n"
           "  --best-of N           sample N continuations as one batch, print the one the\n"
           "                        reward model scores highest (at prompt+response's\n"
           "                        end-of-text)\n"
           "  --reward RM_CKPT      the reward model (a `train rm` checkpoint)\n"
           "  --scores              print every sample as a JSON line instead:\n"
           "                        {\"sample\",\"score\",\"best\",\"text\" (or \"ids\")}\n"
           "candidates for ranking tasks:\n"
           "  --prompts FILE        JSON lines {\"prompt\": ..., \"id\": ...} (import-prompts'\n"
           "                        format) or one prompt per line; '-' is stdin\n"
           "  --n K                 responses per prompt, 2..9 (same as --num)\n"
           "  --out FILE            write there (atomically) instead of stdout\n"
           "  --batch R             rows per generation call (32; K rows per prompt)\n"
           "  --raw                 no chat template (default: the model's, if it has one)\n"
           "Writes one line per prompt, {\"prompt\", \"candidates\": [K texts], \"id\"}, the\n"
           "format `gptline label admin import-candidates` reads.\n",
           prog, prog, prog);
    return GL_EXIT_OK;
}

int train_sample_cmd(int argc, char **argv)
{
    enum { O_BEST = 256, O_REWARD, O_SCORES, O_PROMPTS, O_OUT, O_BATCH, O_RAW };
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"prompt", required_argument, NULL, 'p'},
                                         {"prompt-ids", required_argument, NULL, 'I'},
                                         {"max-new", required_argument, NULL, 'n'},
                                         {"temperature", required_argument, NULL, 't'},
                                         {"top-k", required_argument, NULL, 'k'},
                                         {"top-p", required_argument, NULL, 'P'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"num", required_argument, NULL, 'N'},
                                         {"n", required_argument, NULL, 'N'},
                                         {"ids", no_argument, NULL, 'i'},
                                         {"tokenizer", required_argument, NULL, 'T'},
                                         {"chat", no_argument, NULL, 'c'},
                                         {"best-of", required_argument, NULL, O_BEST},
                                         {"reward", required_argument, NULL, O_REWARD},
                                         {"scores", no_argument, NULL, O_SCORES},
                                         {"prompts", required_argument, NULL, O_PROMPTS},
                                         {"out", required_argument, NULL, O_OUT},
                                         {"batch", required_argument, NULL, O_BATCH},
                                         {"raw", no_argument, NULL, O_RAW},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *model = NULL, *prompt = NULL, *prompt_ids = NULL, *vocab_path = NULL, *reward = NULL,
               *prompts_file = NULL, *out_file = NULL;
    int chat = 0, raw = 0, best_of = 0, scores = 0, batch = 32, num_set = 0;
    train_sample_opts_t so = {.temperature = 1.0f, .max_new = 100, .stop_id = -1, .seed = 1};
    int ids_out = 0, num = 1, c, seed = 1;
    while ((c = getopt_long(argc, argv, "m:p:I:n:t:k:P:s:N:iT:ch", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'I': prompt_ids = optarg; break;
        case 'n': bad = gl_parse_int(optarg, &so.max_new) || !so.max_new; break;
        case 't': bad = gl_parse_float(optarg, &so.temperature) || so.temperature < 0; break;
        case 'k': bad = gl_parse_int(optarg, &so.top_k); break;
        case 'P': bad = gl_parse_float(optarg, &so.top_p) || so.top_p < 0 || so.top_p > 1; break;
        case 's': bad = gl_parse_int(optarg, &seed); break;
        case 'N': bad = gl_parse_int(optarg, &num) || !num; num_set = 1; break;
        case 'i': ids_out = 1; break;
        case 'T': vocab_path = optarg; break;
        case 'c': chat = 1; break;
        case O_BEST: bad = gl_parse_int(optarg, &best_of) || best_of < 1 || best_of > 1024; break;
        case O_REWARD: reward = optarg; break;
        case O_SCORES: scores = 1; break;
        case O_PROMPTS: prompts_file = optarg; break;
        case O_OUT: out_file = optarg; break;
        case O_BATCH: bad = gl_parse_int(optarg, &batch) || !batch; break;
        case O_RAW: raw = 1; break;
        case 'h': return usage(argv[0]);
        default: return gl_usage_error(argv[0], "bad option");
        }
        if (bad)
            return gl_usage_error(argv[0], "bad value '%s'", optarg);
    }
    if (!model || optind != argc)
        return gl_usage_error(argv[0], "--model is required");
    if (prompts_file) {
        if (prompt || prompt_ids || best_of || ids_out)
            return gl_usage_error(argv[0], "--prompts takes no --prompt, --prompt-ids, --best-of or --ids");
        if (!num_set)
            num = 4;
        if (num < CAND_MIN || num > CAND_MAX)
            return gl_usage_error(argv[0], "--n %d: a ranking task holds %d to %d candidates", num, CAND_MIN,
                                  CAND_MAX);
    } else if (!!prompt == !!prompt_ids) {
        return gl_usage_error(argv[0], "one of --prompt, --prompt-ids or --prompts is required");
    } else if (out_file || raw) {
        return gl_usage_error(argv[0], "--out and --raw go with --prompts");
    }
    if (!!best_of != !!reward || (scores && !best_of))
        return gl_usage_error(argv[0], "--best-of and --reward go together (and --scores with them)");
    so.seed = (uint64_t)seed;
    gl_err_t err = {0};
    sampler_t s;
    train_kv_t kv = {0};
    train_model_t rm = {0};
    float *w = NULL, *sc = NULL;
    int32_t *pids = NULL, *out = NULL;
    int *olen = NULL;
    prompt_t *ps = NULL;
    int np = 0, plen = 0, status = GL_EXIT_OK;
    if (sampler_open(&s, model, vocab_path, &err))
        goto fail;
    if (s.stop_id >= 0)
        so.stop_id = s.stop_id;

    if (prompts_file) {
        if (!s.vocab && !s.bytes) {
            status = gl_usage_error(argv[0], "candidates are text: --tokenizer is needed for this model");
            goto out;
        }
        if (so.max_new > s.cfg.n_ctx - 1)
            so.max_new = s.cfg.n_ctx - 1;
        if (read_prompts(prompts_file, &ps, &np, &err))
            goto fail;
        gl_atomic_file_t af = {0};
        FILE *f = stdout;
        if (out_file) {
            if (gl_atomic_open(&af, out_file, &err))
                goto fail;
            f = af.f;
        }
        int rc = write_candidates(&s, ps, np, num, batch, !raw, &so, f, &err);
        if (out_file) {
            if (rc)
                gl_atomic_abort(&af);
            else
                rc = gl_atomic_commit(&af, &err);
        }
        if (rc)
            goto fail;
        gl_info("%d prompts, %d candidates each%s%s", np, num, out_file ? ", written to " : "",
                out_file ? out_file : "");
        goto out;
    }

    pids = gl_xmalloc((size_t)s.cfg.n_ctx * sizeof *pids);
    if (prompt) {
        if (chat && !s.vocab && !s.bytes) {
            status = gl_usage_error(argv[0], "--chat needs --tokenizer (or a byte-level model)");
            goto out;
        }
        if (!s.vocab && !s.bytes) {
            status = gl_usage_error(argv[0], "--prompt text needs --tokenizer (or a byte-level model)");
            goto out;
        }
        int want_chat = chat;
        if (encode_prompt(&s, prompt, &want_chat, pids, s.cfg.n_ctx, &plen, &err))
            goto fail;
        if (chat && !want_chat) {
            gl_err_set(&err, GL_EINVAL, "%s: the vocabulary has no chat roles", vocab_path);
            goto fail;
        }
    } else if ((plen = parse_ids(prompt_ids, pids, s.cfg.n_ctx)) <= 0) {
        status = gl_usage_error(argv[0], "bad --prompt-ids '%s'", prompt_ids);
        goto out;
    }
    if (plen < 1) {
        status = gl_usage_error(argv[0], "the prompt is empty");
        goto out;
    }
    if (plen + so.max_new > s.cfg.n_ctx + 1)
        so.max_new = s.cfg.n_ctx + 1 - plen;
    if (so.max_new < 1) {
        status = gl_usage_error(argv[0], "the prompt fills the model's context of %d", s.cfg.n_ctx);
        goto out;
    }
    int rows = best_of ? best_of : 1;
    if (train_kv_init(&kv, &s.m, rows, s.cfg.n_ctx, &err))
        goto fail;
    if (best_of) {
        if (so.stop_id < 0) {
            status = gl_usage_error(argv[0], "--best-of needs an end-of-text: --tokenizer, or a byte-level model");
            goto out;
        }
        if (reward_open(reward, &s.cfg, rows, &rm, &w, &err))
            goto fail;
        sc = gl_xmalloc((size_t)rows * sizeof *sc);
    }
    out = gl_xmalloc((size_t)rows * so.max_new * sizeof *out);
    olen = gl_xmalloc((size_t)rows * sizeof *olen);
    for (int k = 0; k < num; k++) {
        if (!best_of) {
            const int32_t *pp = pids;
            if (train_generate(&kv, &s.m, &pp, &plen, &so, out, olen, NULL, &err) ||
                print_response(&s, out, olen[0], ids_out, &err))
                goto fail;
        } else {
            int best;
            if (train_best_of_n(&kv, &s.m, &rm, w, pids, plen, &so, out, olen, sc, &best, &err))
                goto fail;
            if (!scores && print_response(&s, out + (size_t)best * so.max_new, olen[best], ids_out, &err))
                goto fail;
            for (int b = 0; scores && b < rows; b++) {
                const int32_t *r = out + (size_t)b * so.max_new;
                json_t *j = json_pack("{s:i,s:f,s:b}", "sample", b, "score", (double)sc[b], "best", b == best);
                if (ids_out) {
                    json_t *a = json_array();
                    for (int i = 0; i < olen[b]; i++)
                        json_array_append_new(a, json_integer(r[i]));
                    json_object_set_new(j, "ids", a);
                } else {
                    char *text = NULL;
                    if (response_text(&s, r, olen[b], &text, &err)) {
                        json_decref(j);
                        goto fail;
                    }
                    json_object_set_new(j, "text", json_string(text));
                    free(text);
                }
                char *js = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
                puts(js);
                free(js);
                json_decref(j);
            }
        }
        so.seed++;
    }
    goto out;
fail:
    status = gl_cmd_fail(argv[0], &err);
out:
    for (int i = 0; i < np; i++) {
        free(ps[i].text);
        json_decref(ps[i].id);
    }
    free(ps), free(pids), free(out), free(olen), free(w), free(sc);
    train_kv_free(&kv);
    train_model_free(&rm);
    sampler_close(&s);
    return status;
}
