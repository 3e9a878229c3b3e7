/* cmd.c — `gptline train pretrain|sft|rm|dpo`, `gptline eval` and
 * `gptline sample`.
 *
 * Options map one to one onto train_run_opts_t. Under mpirun/srun every
 * rank runs the same command; only rank 0 prints.
 */
#include "tokenizer/tokenizer.h"
#include "trainer/run.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static int parse_int(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 1 << 30)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    float v = strtof(s, &end);
    if (!*s || *end || !(v == v))
        return -1;
    *out = v;
    return 0;
}

static int usage_train(const char *prog, train_stage_t stage)
{
    printf("usage: %s --data DIR --out DIR [options]\n\n", prog);
    if (stage == TRAIN_STAGE_PRETRAIN)
        printf("Pretrains a GPT on (B, T) windows of a token shard dataset (documents joined\n"
               "by end-of-text). A new model takes its vocabulary from the dataset.\n\n");
    else if (stage == TRAIN_STAGE_SFT)
        printf("Fine-tunes a model on SFT conversation shards; the loss counts only the\n"
               "assistant tokens and the end-of-text after them. Start from --init CKPT.\n\n");
    else if (stage == TRAIN_STAGE_DPO)
        printf("Direct preference optimisation on RM ranking shards, no reward model: the\n"
               "policy starts from --init SFT_CKPT and a frozen copy of it is the reference.\n"
               "For every ordered pair (w better than l) of a ranking the loss is\n"
               "  -log sigmoid(beta * (log pi(w)/pi_ref(w) - log pi(l)/pi_ref(l)))\n"
               "with log-probs summed over the response tokens and their end-of-text,\n"
               "averaged per prompt. Logs the implicit-reward accuracy and margin; the\n"
               "held-out set reports them too.\n"
               "  --beta X            strength of the leash to the reference (0.1)\n\n");
    else
        printf("Trains a reward model on RM ranking shards: a scalar head on the hidden\n"
               "state of each prompt+response's true last token (its end-of-text), the\n"
               "loss -log sigmoid(r_better - r_worse) over all K(K-1)/2 ordered pairs of\n"
               "each ranking, averaged per prompt. B rows hold whole rankings. The\n"
               "held-out set reports pairwise accuracy. Start from --init SFT_CKPT.\n\n");
    printf("data and output:\n"
           "  --data DIR          training shards\n"
           "  --val DIR           held-out shards: loss, perplexity, bits per byte\n"
           "  --out DIR           checkpoints (ckpt-N/, latest) and metrics.jsonl\n"
           "  --init CKPT         start from a checkpoint (folder or .safetensors)\n"
           "  --resume            continue from OUT/latest (same settings)\n"
           "model (new models):\n"
           "  --layers N (4)  --heads N (4)  --width N (128)  --context N (64)\n"
           "batch and schedule:\n"
           "  -B, --batch N (12)  -T, --seq N (64)  --accum N (1)\n"
           "  --steps N (2000)    --until N (stop early at step N, checkpointed)\n"
           "  --lr X (1e-3)  --min-lr X (1e-4)  --warmup N (100)\n"
           "  --beta1 X (0.9)  --beta2 X (0.99)  --wd X (0.1)  --clip X (1.0)\n"
           "  --dropout X (0)  --seed N (1337)\n"
           "logging:\n"
           "  --eval-every N (250)  --eval-batches N (20)  --ckpt-every N (500)\n"
           "  --log-every N (10)  --threads N  -q, --quiet\n\n"
           "Data-parallel: mpirun -np N gptline train ... (each rank reads its part;\n"
           "gradients are averaged; rank 0 writes). SIGINT/SIGTERM checkpoint and stop.\n");
    return GL_EXIT_OK;
}

static int run_stage(int argc, char **argv, train_stage_t stage)
{
    enum { O_VAL = 256, O_INIT, O_RESUME, O_LAYERS, O_HEADS, O_WIDTH, O_CTX, O_ACCUM, O_STEPS, O_UNTIL, O_LR,
           O_MINLR, O_WARMUP, O_B1, O_B2, O_WD, O_CLIP, O_SEED, O_EVE, O_EVB, O_CKE, O_LOGE, O_THREADS, O_DROPOUT, O_BETA };
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},    {"out", required_argument, NULL, 'o'},
        {"val", required_argument, NULL, O_VAL},   {"init", required_argument, NULL, O_INIT},
        {"resume", no_argument, NULL, O_RESUME},   {"layers", required_argument, NULL, O_LAYERS},
        {"heads", required_argument, NULL, O_HEADS}, {"width", required_argument, NULL, O_WIDTH},
        {"context", required_argument, NULL, O_CTX}, {"batch", required_argument, NULL, 'B'},
        {"seq", required_argument, NULL, 'T'},     {"accum", required_argument, NULL, O_ACCUM},
        {"steps", required_argument, NULL, O_STEPS}, {"until", required_argument, NULL, O_UNTIL},
        {"lr", required_argument, NULL, O_LR},     {"min-lr", required_argument, NULL, O_MINLR},
        {"warmup", required_argument, NULL, O_WARMUP}, {"beta1", required_argument, NULL, O_B1},
        {"beta2", required_argument, NULL, O_B2},  {"wd", required_argument, NULL, O_WD},
        {"clip", required_argument, NULL, O_CLIP}, {"seed", required_argument, NULL, O_SEED},
        {"dropout", required_argument, NULL, O_DROPOUT}, {"beta", required_argument, NULL, O_BETA},
        {"eval-every", required_argument, NULL, O_EVE}, {"eval-batches", required_argument, NULL, O_EVB},
        {"ckpt-every", required_argument, NULL, O_CKE}, {"log-every", required_argument, NULL, O_LOGE},
        {"threads", required_argument, NULL, O_THREADS}, {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},          {0}};
    train_run_opts_t o;
    train_run_defaults(&o);
    o.stage = stage;
    if (stage != TRAIN_STAGE_PRETRAIN) {
        o.sched.max_lr = 1e-4f;
        o.sched.min_lr = 1e-5f;
        o.sched.warmup = 10;
        o.steps = 500;
    }
    int c, bad = 0, ctx_set = 0;
    long lv;
    while ((c = getopt_long(argc, argv, "d:o:B:T:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'd': o.data = optarg; break;
        case 'o': o.out = optarg; break;
        case O_VAL: o.val = optarg; break;
        case O_INIT: o.init = optarg; break;
        case O_RESUME: o.resume = 1; break;
        case O_LAYERS: bad = parse_int(optarg, &o.cfg.n_layer); break;
        case O_HEADS: bad = parse_int(optarg, &o.cfg.n_head); break;
        case O_WIDTH: bad = parse_int(optarg, &o.cfg.n_embd); break;
        case O_CTX: bad = parse_int(optarg, &o.cfg.n_ctx); ctx_set = 1; break;
        case 'B': bad = parse_int(optarg, &o.B); break;
        case 'T': bad = parse_int(optarg, &o.T); break;
        case O_ACCUM: bad = parse_int(optarg, &o.accum); break;
        case O_STEPS: bad = parse_int(optarg, &c); lv = c; o.steps = lv; break;
        case O_UNTIL: bad = parse_int(optarg, &c); lv = c; o.until = lv; break;
        case O_LR: bad = parse_float(optarg, &o.sched.max_lr); break;
        case O_MINLR: bad = parse_float(optarg, &o.sched.min_lr); break;
        case O_WARMUP: bad = parse_int(optarg, &c); o.sched.warmup = c; break;
        case O_B1: bad = parse_float(optarg, &o.adamw.beta1); break;
        case O_B2: bad = parse_float(optarg, &o.adamw.beta2); break;
        case O_WD: bad = parse_float(optarg, &o.adamw.weight_decay); break;
        case O_CLIP: bad = parse_float(optarg, &o.clip); break;
        case O_DROPOUT: bad = parse_float(optarg, &o.dropout); break;
        case O_BETA:
            bad = stage != TRAIN_STAGE_DPO || parse_float(optarg, &o.dpo_beta) || !(o.dpo_beta > 0);
            break;
        case O_SEED: bad = parse_int(optarg, &c); o.seed = (uint64_t)c; break;
        case O_EVE: bad = parse_int(optarg, &o.eval_every); break;
        case O_EVB: bad = parse_int(optarg, &o.eval_batches); break;
        case O_CKE: bad = parse_int(optarg, &o.ckpt_every); break;
        case O_LOGE: bad = parse_int(optarg, &o.log_every); break;
        case O_THREADS: bad = parse_int(optarg, &o.threads); break;
        case 'q': o.quiet = 1; break;
        case 'h': return usage_train(argv[0], stage);
        default: return gl_usage_error(argv[0], "bad option");
        }
        if (bad)
            return gl_usage_error(argv[0], "bad value '%s'", optarg);
    }
    if (optind != argc)
        return gl_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
    if (!o.data || !o.out)
        return gl_usage_error(argv[0], "--data and --out are required");
    if (stage == TRAIN_STAGE_DPO && !o.init)
        return gl_usage_error(argv[0], "--init SFT_CKPT is required (the policy's start and the reference)");
    if (!ctx_set && o.T > o.cfg.n_ctx)
        o.cfg.n_ctx = o.T;
    gl_err_t err = {0};
    train_dist_t dist;
    if (train_dist_init(&dist, &err))
        return gl_cmd_fail(argv[0], &err);
    if (dist.rank)
        gl_log_set_level(GL_LOG_ERROR);
    int rc = train_run(&o, &dist, &err);
    int status = rc ? gl_cmd_fail(argv[0], &err) : GL_EXIT_OK;
    train_dist_finalize(&dist);
    return status;
}

static int cmd_pretrain(int argc, char **argv) { return run_stage(argc, argv, TRAIN_STAGE_PRETRAIN); }
static int cmd_sft(int argc, char **argv) { return run_stage(argc, argv, TRAIN_STAGE_SFT); }
static int cmd_rm(int argc, char **argv) { return run_stage(argc, argv, TRAIN_STAGE_RM); }
static int cmd_dpo(int argc, char **argv) { return run_stage(argc, argv, TRAIN_STAGE_DPO); }

static const gl_cmd_t train_cmds[] = {
    {"pretrain", cmd_pretrain, "pretrain a GPT on token shards"},
    {"sft", cmd_sft, "supervised fine-tuning on conversation shards"},
    {"rm", cmd_rm, "train a reward model on ranking shards"},
    {"dpo", cmd_dpo, "direct preference optimisation on ranking shards"},
    {NULL, NULL, NULL},
};

int train_cmd(int argc, char **argv) { return gl_cmd_dispatch(argv[0], train_cmds, argc, argv); }

int train_eval_cmd(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"data", required_argument, NULL, 'd'},
                                         {"batch", required_argument, NULL, 'B'},
                                         {"seq", required_argument, NULL, 'T'},
                                         {"batches", required_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *model = NULL, *data = NULL;
    int B = 8, T = 0, batches = 0, c;
    while ((c = getopt_long(argc, argv, "m:d:B:T:n:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': model = optarg; break;
        case 'd': data = optarg; break;
        case 'B': bad = parse_int(optarg, &B) || !B; break;
        case 'T': bad = parse_int(optarg, &T); break;
        case 'n': bad = parse_int(optarg, &batches); break;
        case 'h':
            printf("usage: %s --model CKPT --data DIR [-B N] [-T N] [--batches N]\n\n"
                   "Evaluates a checkpoint on a token shard dataset: mean loss, perplexity\n"
                   "and bits per byte over windows in stream order (all of them unless\n"
                   "--batches). T defaults to the model's context. Prints one JSON line.\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
        if (bad)
            return gl_usage_error(argv[0], "bad value '%s'", optarg);
    }
    if (!model || !data || optind != argc)
        return gl_usage_error(argv[0], "--model and --data are required");
    gl_err_t err = {0};
    train_dist_t dist;
    train_model_t m = {0};
    train_config_t cfg;
    train_eval_t ev;
    char *path = NULL;
    int status = GL_EXIT_OK;
    if (train_dist_init(&dist, &err))
        return gl_cmd_fail(argv[0], &err);
    if (!(path = train_checkpoint_model_path(model, &err)) || train_read_config(path, &cfg, &err) ||
        train_model_init(&m, &cfg, B, T ? T : cfg.n_ctx, 0, &err) || train_load(&m, path, 0, &err) ||
        train_eval_dataset(&m, data, B, T ? T : cfg.n_ctx, batches, &dist, &ev, &err)) {
        status = gl_cmd_fail(argv[0], &err);
    } else if (dist.rank == 0) {
        printf("{\"loss\":%.6f,\"perplexity\":%.4f,\"bits_per_byte\":%.5f,\"tokens\":%llu}\n", ev.loss, ev.ppl,
               ev.bpb, (unsigned long long)ev.tokens);
    }
    free(path);
    train_model_free(&m);
    train_dist_finalize(&dist);
    return status;
}

/* ---- gptline sample ----------------------------------------------------- */

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

int train_sample_cmd(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"prompt", required_argument, NULL, 'p'},
                                         {"prompt-ids", required_argument, NULL, 'I'},
                                         {"max-new", required_argument, NULL, 'n'},
                                         {"temperature", required_argument, NULL, 't'},
                                         {"top-k", required_argument, NULL, 'k'},
                                         {"top-p", required_argument, NULL, 'P'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"num", required_argument, NULL, 'N'},
                                         {"ids", no_argument, NULL, 'i'},
                                         {"tokenizer", required_argument, NULL, 'T'},
                                         {"chat", no_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *model = NULL, *prompt = NULL, *prompt_ids = NULL, *vocab_path = NULL;
    int chat = 0;
    train_sample_opts_t so = {.temperature = 1.0f, .max_new = 100, .stop_id = -1, .seed = 1};
    int ids_out = 0, num = 1, c, seed = 1;
    while ((c = getopt_long(argc, argv, "m:p:I:n:t:k:P:s:N:iT:ch", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'I': prompt_ids = optarg; break;
        case 'n': bad = parse_int(optarg, &so.max_new) || !so.max_new; break;
        case 't': bad = parse_float(optarg, &so.temperature) || so.temperature < 0; break;
        case 'k': bad = parse_int(optarg, &so.top_k); break;
        case 'P': bad = parse_float(optarg, &so.top_p) || so.top_p < 0 || so.top_p > 1; break;
        case 's': bad = parse_int(optarg, &seed); break;
        case 'N': bad = parse_int(optarg, &num) || !num; break;
        case 'i': ids_out = 1; break;
        case 'T': vocab_path = optarg; break;
        case 'c': chat = 1; break;
        case 'h':
            printf("usage: %s --model CKPT (--prompt TEXT | --prompt-ids \"ID ...\") [options]\n\n"
                   "Generates a continuation with the KV cache: temperature 0 is greedy; top-k\n"
                   "and top-p (nucleus) restrict sampling; stops at end-of-text. A --prompt\n"
                   "is text: encoded with --tokenizer, or as bytes for a byte-level model.\n\n"
                   "  -T, --tokenizer VOCAB the model's vocabulary (with its chat roles)\n"
                   "  -c, --chat            wrap the prompt as a user turn: <|user|>TEXT<|assistant|>\n"
                   "  -n, --max-new N       tokens to generate (100)\n"
                   "  -t, --temperature X   1.0; 0 = greedy\n"
                   "  -k, --top-k N         0 = off\n"
                   "  -P, --top-p X         0 or 1 = off\n"
                   "  -s, --seed N          sampling seed (1)\n"
                   "  -N, --num N           samples of the same prompt, one per line\n"
                   "  -i, --ids             print token ids instead of text\n",
                   argv[0]);
            return GL_EXIT_OK;
        default: return gl_usage_error(argv[0], "bad option");
        }
        if (bad)
            return gl_usage_error(argv[0], "bad value '%s'", optarg);
    }
    if (!model || optind != argc || !!prompt == !!prompt_ids)
        return gl_usage_error(argv[0], "--model and one of --prompt or --prompt-ids are required");
    so.seed = (uint64_t)seed;
    gl_err_t err = {0};
    train_model_t m = {0};
    train_config_t cfg;
    train_kv_t kv = {0};
    char *path = NULL;
    int32_t *pids = NULL, *out = NULL;
    tok_vocab_t *vocab = NULL;
    uint8_t *text = NULL;
    size_t tlen = 0, tcap = 0;
    int plen = 0, status = GL_EXIT_OK;
    if (!(path = train_checkpoint_model_path(model, &err)) || train_read_config(path, &cfg, &err) ||
        train_model_init(&m, &cfg, 0, 0, 0, &err) || train_load(&m, path, 0, &err)) {
        status = gl_cmd_fail(argv[0], &err);
        goto out;
    }
    int bytes = cfg.vocab_size == 257 && !vocab_path;
    pids = gl_xmalloc((size_t)cfg.n_ctx * sizeof *pids);
    if (vocab_path) {
        tok_load_opts_t lo = {.chat_roles = 0};
        if (!(vocab = tok_vocab_load(vocab_path, &lo, &err))) {
            status = gl_cmd_fail(argv[0], &err);
            goto out;
        }
        /* the model's data may have been made with the chat roles added */
        if (((cfg.tokenizer_hash && tok_vocab_hash(vocab) != cfg.tokenizer_hash) ||
             (int)tok_vocab_size(vocab) != cfg.vocab_size) &&
            tok_vocab_add_chat_roles(vocab, &err)) {
            status = gl_cmd_fail(argv[0], &err);
            goto out;
        }
        if (cfg.tokenizer_hash && tok_vocab_hash(vocab) != cfg.tokenizer_hash) {
            gl_err_set(&err, GL_EMISMATCH, "%s: not the vocabulary the model was trained with", vocab_path);
            status = gl_cmd_fail(argv[0], &err);
            goto out;
        }
        if ((int)tok_vocab_size(vocab) != cfg.vocab_size) {
            gl_err_set(&err, GL_EMISMATCH, "%s: %u tokens, the model has %d", vocab_path, tok_vocab_size(vocab),
                       cfg.vocab_size);
            status = gl_cmd_fail(argv[0], &err);
            goto out;
        }
        so.stop_id = (int32_t)tok_eot_id(vocab);
    }
    if (prompt && vocab) {
        tok_ids_t ids = {0};
        tok_turn_t turn = {TOK_ROLE_USER, prompt, strlen(prompt)};
        int r = chat ? tok_chat_prompt(vocab, &turn, 1, &ids, &err)
                     : tok_encode(vocab, prompt, strlen(prompt), TOK_ALLOW_NONE, &ids, &err);
        for (size_t i = 0; !r && i < ids.n && plen < cfg.n_ctx; i++)
            pids[plen++] = (int32_t)ids.ids[i];
        tok_ids_free(&ids);
        if (r) {
            status = gl_cmd_fail(argv[0], &err);
            goto out;
        }
    } else if (prompt) {
        if (!bytes || chat) {
            status = gl_usage_error(argv[0], "--prompt text needs --tokenizer (or a byte-level model, no --chat)");
            goto out;
        }
        for (const char *q = prompt; *q && plen < cfg.n_ctx; q++)
            pids[plen++] = (uint8_t)*q;
    } else if ((plen = parse_ids(prompt_ids, pids, cfg.n_ctx)) <= 0) {
        status = gl_usage_error(argv[0], "bad --prompt-ids '%s'", prompt_ids);
        goto out;
    }
    if (bytes)
        so.stop_id = 256;
    if (plen < 1) {
        status = gl_usage_error(argv[0], "the prompt is empty");
        goto out;
    }
    if (plen + so.max_new > cfg.n_ctx + 1)
        so.max_new = cfg.n_ctx + 1 - plen;
    if (so.max_new < 1) {
        status = gl_usage_error(argv[0], "the prompt fills the model's context of %d", cfg.n_ctx);
        goto out;
    }
    if (train_kv_init(&kv, &m, 1, cfg.n_ctx, &err)) {
        status = gl_cmd_fail(argv[0], &err);
        goto out;
    }
    out = gl_xmalloc((size_t)so.max_new * sizeof *out);
    for (int k = 0; k < num; k++) {
        int olen;
        const int32_t *pp = pids;
        if (train_generate(&kv, &m, &pp, &plen, &so, out, &olen, NULL, &err)) {
            status = gl_cmd_fail(argv[0], &err);
            goto out;
        }
        if (olen && out[olen - 1] == so.stop_id && !ids_out)
            olen--;
        if (ids_out) {
            for (int i = 0; i < olen; i++)
                printf(i ? " %d" : "%d", out[i]);
        } else if (vocab) {
            tlen = 0;
            if (tok_decode(vocab, (const uint32_t *)out, (size_t)olen, &text, &tlen, &tcap, &err)) {
                status = gl_cmd_fail(argv[0], &err);
                goto out;
            }
            fwrite(text, 1, tlen, stdout);
        } else {
            for (int i = 0; i < olen; i++)
                putchar(out[i] < 256 ? out[i] : '?');
        }
        putchar('\n');
        so.seed++;
    }
out:
    free(path), free(pids), free(out), free(text);
    tok_vocab_free(&vocab);
    train_kv_free(&kv);
    train_model_free(&m);
    return status;
}
