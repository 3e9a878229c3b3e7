/* cmd.c — `gptline train pretrain|sft|rm|dpo|rl` and `gptline eval` (rl's
 * options are parsed in rl.c, `gptline sample` is in sample.c).
 *
 * Options map one to one onto train_run_opts_t. Under mpirun/srun every
 * rank runs the same command; only rank 0 prints.
 */
#include "tokenizer/tokenizer.h"
#include "trainer/rl.h"
#include "trainer/run.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

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
           "  --log-every N (10)  --threads N  -q, --quiet\n"
           "  --metrics-file PATH Prometheus textfile of the run's counters (rank 0;\n"
           "                      default with $GPTLINE_METRICS_DIR: DIR/gptline-train-STAGE.prom)\n\n"
           "Data-parallel: mpirun -np N gptline train ... (each rank reads its part;\n"
           "gradients are averaged; rank 0 writes). SIGINT/SIGTERM checkpoint and stop.\n");
    return GL_EXIT_OK;
}

static int run_stage(int argc, char **argv, train_stage_t stage)
{
    enum { O_VAL = 256, O_INIT, O_RESUME, O_LAYERS, O_HEADS, O_WIDTH, O_CTX, O_ACCUM, O_STEPS, O_UNTIL, O_LR,
           O_MINLR, O_WARMUP, O_B1, O_B2, O_WD, O_CLIP, O_SEED, O_EVE, O_EVB, O_CKE, O_LOGE, O_THREADS, O_DROPOUT, O_METRICS,
           O_BETA };
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
        {"metrics-file", required_argument, NULL, O_METRICS}, {"help", no_argument, NULL, 'h'}, {0}};
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
    const char *metrics_opt = NULL;
    while ((c = getopt_long(argc, argv, "d:o:B:T:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'd': o.data = optarg; break;
        case 'o': o.out = optarg; break;
        case O_VAL: o.val = optarg; break;
        case O_INIT: o.init = optarg; break;
        case O_RESUME: o.resume = 1; break;
        case O_LAYERS: bad = gl_parse_int(optarg, &o.cfg.n_layer); break;
        case O_HEADS: bad = gl_parse_int(optarg, &o.cfg.n_head); break;
        case O_WIDTH: bad = gl_parse_int(optarg, &o.cfg.n_embd); break;
        case O_CTX: bad = gl_parse_int(optarg, &o.cfg.n_ctx); ctx_set = 1; break;
        case 'B': bad = gl_parse_int(optarg, &o.B); break;
        case 'T': bad = gl_parse_int(optarg, &o.T); break;
        case O_ACCUM: bad = gl_parse_int(optarg, &o.accum); break;
        case O_STEPS: bad = gl_parse_int(optarg, &c); lv = c; o.steps = lv; break;
        case O_UNTIL: bad = gl_parse_int(optarg, &c); lv = c; o.until = lv; break;
        case O_LR: bad = gl_parse_float(optarg, &o.sched.max_lr); break;
        case O_MINLR: bad = gl_parse_float(optarg, &o.sched.min_lr); break;
        case O_WARMUP: bad = gl_parse_int(optarg, &c); o.sched.warmup = c; break;
        case O_B1: bad = gl_parse_float(optarg, &o.adamw.beta1); break;
        case O_B2: bad = gl_parse_float(optarg, &o.adamw.beta2); break;
        case O_WD: bad = gl_parse_float(optarg, &o.adamw.weight_decay); break;
        case O_CLIP: bad = gl_parse_float(optarg, &o.clip); break;
        case O_DROPOUT: bad = gl_parse_float(optarg, &o.dropout); break;
        case O_BETA:
            bad = stage != TRAIN_STAGE_DPO || gl_parse_float(optarg, &o.dpo_beta) || !(o.dpo_beta > 0);
            break;
        case O_SEED: bad = gl_parse_int(optarg, &c); o.seed = (uint64_t)c; break;
        case O_EVE: bad = gl_parse_int(optarg, &o.eval_every); break;
        case O_EVB: bad = gl_parse_int(optarg, &o.eval_batches); break;
        case O_CKE: bad = gl_parse_int(optarg, &o.ckpt_every); break;
        case O_LOGE: bad = gl_parse_int(optarg, &o.log_every); break;
        case O_THREADS: bad = gl_parse_int(optarg, &o.threads); break;
        case 'q': o.quiet = 1; break;
        case O_METRICS: metrics_opt = optarg; break;
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
    static const char *prom_names[] = {[TRAIN_STAGE_PRETRAIN] = "gptline-train-pretrain.prom",
                                       [TRAIN_STAGE_SFT] = "gptline-train-sft.prom",
                                       [TRAIN_STAGE_RM] = "gptline-train-rm.prom",
                                       [TRAIN_STAGE_DPO] = "gptline-train-dpo.prom"};
    char *metrics_path = gl_metrics_path(metrics_opt, prom_names[stage]);
    o.metrics_file = metrics_path;
    int rc = train_run(&o, &dist, &err);
    int status = rc ? gl_cmd_fail(argv[0], &err) : GL_EXIT_OK;
    free(metrics_path);
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
    {"rl", train_rl_cmd, "RL against a reward model: PPO or GRPO"},
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
        case 'B': bad = gl_parse_int(optarg, &B) || !B; break;
        case 'T': bad = gl_parse_int(optarg, &T); break;
        case 'n': bad = gl_parse_int(optarg, &batches); break;
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
