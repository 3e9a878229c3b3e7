/* gptline.c — the multi-call binary: `gptline <command> ...`.
 *
 * Thin by design: each command lives in its component's library and is
 * registered here by name. Options common to all commands (-v/-q) are taken
 * before the command name.
 */
#include "common/common.h"
#include "ingest/ingest.h"
#include "labeler/labeler.h"
#include "run/run.h"
#include "shards/shards.h"
#include "tokenizer/tokenizer.h"
#include "trainer/run.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const gl_cmd_t commands[] = {
    {"ingest", ingest_cmd, "crawl, wiki and code archives to clean tokenized shards"},
    {"shards", shards_cmd, "pack, import, inspect and verify LMDB token shards"},
    {"tokenizer", tok_cmd, "BPE vocabularies: encode, decode, info, convert, train"},
    {"label", label_cmd, "labeling service, contractor client and label export"},
    {"train", train_cmd, "train a GPT: pretrain, sft, rm, rl"},
    {"sample", train_sample_cmd, "generate text from a checkpoint (KV cache, top-k/top-p)"},
    {"eval", train_eval_cmd, "loss, perplexity and bits per byte of a checkpoint on shards"},
    {"run", run_cmd, "run a pipeline file's stages make-like, locally or under Slurm"},
    {NULL, NULL, NULL},
};

static int usage(FILE *f)
{
    fprintf(f,
            "usage: gptline [-v|-q] <command> [options]\n"
            "       gptline --version\n\n"
            "gptline builds a GPT assistant end to end: ingest, tokenizer, labeling\n"
            "and the training stages, over LMDB token shards.\n\n"
            "commands:\n");
    gl_cmd_print_list(f, commands);
    fprintf(f, "\nRun 'gptline <command> --help' for a command's options.\n"
               "Exit status: 0 ok, 1 failure, 2 usage error, 3 invalid or corrupt data.\n");
    return f == stdout ? GL_EXIT_OK : GL_EXIT_USAGE;
}

/* Settings that libraries read from the environment when they are loaded,
 * before main, so that gptline must run again to change them:
 *
 * - Debian's OpenBLAS 0.3.21 does not know some newer x86 CPUs and falls
 *   back to its generic SSE3 ("Prescott") kernels, five times slower than
 *   the AVX2 ("Haswell") ones these CPUs run correctly. When
 *   OPENBLAS_CORETYPE is unset and that fallback happened on a CPU with
 *   AVX2 and FMA, use OPENBLAS_CORETYPE=Haswell.
 * - libgomp's threads spin up to 300,000 rounds (milliseconds) at each
 *   barrier before they sleep. On a machine shared with other work, the
 *   thread being waited for is often descheduled, and the spinning made
 *   training steps of small models 3-5x slower (measured: 100 Shakespeare
 *   steps in 92-153 s against 30-34 s, load 8 on 2 cores). The commands
 *   that train or generate (train, sample, eval) run with
 *   GOMP_SPINCOUNT=20000 instead — still far longer than a barrier takes
 *   on a quiet machine.
 * - OpenBLAS starts a pool of threads when it is loaded; they spin on
 *   sched_yield for about 0.1 s before they sleep. gptline never uses that
 *   pool (the trainer threads with OpenMP and calls sgemm on one thread
 *   per slice), so the spinning only took CPU from the work: 10% of an
 *   ingest worker's second core in a 1 s run. The commands that keep the
 *   cores busy (train, sample, eval, ingest, tokenizer, shards) run with
 *   OPENBLAS_NUM_THREADS=1, which keeps the pool from starting; the quick
 *   ones are not started twice for it (a start costs ~14 ms, mostly the
 *   dynamic linker).
 *
 * A value set by the user is left as it is. */
static void tune_environment(int argc, char **argv)
{
    int changed = 0;
    if (!getenv("OPENBLAS_CORETYPE") && !strcmp(openblas_get_corename(), "Prescott")) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            setenv("OPENBLAS_CORETYPE", "Haswell", 1);
            changed = 1;
        }
    }
    int i = 1;
    while (i < argc && argv[i][0] == '-')
        i++;
    const char *cmd = i < argc ? argv[i] : "";
    int trains = !strcmp(cmd, "train") || !strcmp(cmd, "sample") || !strcmp(cmd, "eval");
    int busy = trains || !strcmp(cmd, "ingest") || !strcmp(cmd, "tokenizer") || !strcmp(cmd, "shards");
    if (busy && !getenv("OPENBLAS_NUM_THREADS")) {
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        changed = 1;
    }
    if (trains && !getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY")) {
        setenv("GOMP_SPINCOUNT", "20000", 1);
        changed = 1;
    }
    if (!changed)
        return;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return;
    self[n] = '\0';
    execv(self, argv); /* on failure: go on as we are */
}

int main(int argc, char **argv)
{
    tune_environment(argc, argv);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--version")) {
            printf("gptline %s\n", GL_VERSION);
            return GL_EXIT_OK;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            return usage(stdout);
        } else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
            gl_log_set_level(GL_LOG_DEBUG);
        } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
            gl_log_set_level(GL_LOG_WARN);
        } else {
            return gl_usage_error("gptline", "unknown option '%s'", argv[i]);
        }
    }
    if (i >= argc)
        return usage(stderr);
    /* Present the command table with argv[0] = "gptline". */
    argv[i - 1] = argv[0];
    return gl_cmd_dispatch("gptline", commands, argc - i + 1, argv + i - 1);
}
