/* bench_generate.c — generation throughput (tokens/s) of the KV-cached
 * decoder against a PyTorch generation loop with a cache, on the same
 * checkpoint and batch.
 *
 * B rows of PROMPT tokens each are continued greedily by NEW tokens
 * (train_generate: the prompts fed through the cache, then one position
 * per step); tokens/s = B * NEW / seconds, the prompt included, best of
 * REPEATS runs. The peer is `tests/ref/gpt2_generate.py bench` (plain
 * torch, float32, one batched forward over the prompts, then one position
 * per step over its cache), run with $PYTHON on the model this program
 * saves. Both at 1 and 2 threads, batches 8 and 32; row 0's tokens are
 * compared as a check that both generate the same thing. Tokens per
 * CPU-second (process CPU time, all threads) are printed too: on a shared
 * machine they move less than the wall clock.
 *
 *   bench_generate [L H C V PROMPT NEW REPEATS]   default 6 6 384 65 16 128 3
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/peer.h"
#include "common/common.h"
#include "trainer/run.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Best tokens/s by wall clock; *cpu gets the best per CPU-second of the
 * process (all threads), which a busy machine distorts less. */
static double c_tokens_per_s(const train_model_t *m, int B, int P, int NEW, int repeats, int32_t *row0, double *cpu)
{
    gl_err_t err;
    train_kv_t kv;
    int V = m->cfg.vocab_size;
    int32_t *prompts = malloc(sizeof(int32_t) * B * P), *out = malloc(sizeof(int32_t) * B * NEW);
    const int32_t **pp = malloc(sizeof *pp * B);
    int *plen = malloc(sizeof(int) * B), *olen = malloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < P; i++)
            prompts[b * P + i] = (7 * b + 13 * i + 1) % V;
        pp[b] = prompts + b * P;
        plen[b] = P;
    }
    train_sample_opts_t o = {.temperature = 0, .max_new = NEW, .stop_id = -1};
    if (train_kv_init(&kv, m, B, P + NEW, &err)) {
        fprintf(stderr, "bench_generate: %s\n", err.msg);
        exit(1);
    }
    double best = 0;
    *cpu = 0;
    for (int r = 0; r < repeats; r++) {
        double t0 = gl_now(), c0 = cpu_now();
        if (train_generate(&kv, m, pp, plen, &o, out, olen, NULL, &err)) {
            fprintf(stderr, "bench_generate: %s\n", err.msg);
            exit(1);
        }
        double tps = B * NEW / (gl_now() - t0), tpc = B * NEW / (cpu_now() - c0);
        best = tps > best ? tps : best;
        *cpu = tpc > *cpu ? tpc : *cpu;
    }
    memcpy(row0, out, sizeof(int32_t) * NEW);
    train_kv_free(&kv);
    free(prompts), free(out), free(pp), free(plen), free(olen);
    return best;
}

/* The peer's best tokens/s (0 when torch is missing); row0 gets its ids. */
static double torch_tokens_per_s(const char *model, int B, int P, int NEW, int threads, int repeats, int32_t *row0,
                                 double *cpu)
{
    char env[96], args[1536];
    /* torch's own thread count does not reach the OpenBLAS it calls: both
     * are set, so "1 thread" is one thread */
    snprintf(env, sizeof env, "OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d", threads, threads);
    snprintf(args, sizeof args, "bench '%s' %d %d %d %d %d", model, B, P, NEW, threads, repeats);
    FILE *p = peer_open(env, "gpt2_generate.py", args);
    double v = 0;
    *cpu = 0;
    if (!p)
        return 0;
    if (fscanf(p, "%lf %lf", &v, cpu) != 2)
        v = *cpu = 0;
    for (int i = 0; i < NEW && v > 0; i++)
        if (fscanf(p, "%d", &row0[i]) != 1)
            row0[i] = -1;
    pclose(p);
    return v;
}

int main(int argc, char **argv)
{
    int a[7] = {6, 6, 384, 65, 16, 128, 3};
    for (int i = 1; i < argc && i <= 7; i++)
        a[i - 1] = atoi(argv[i]);
    int L = a[0], H = a[1], C = a[2], V = a[3], P = a[4], NEW = a[5], repeats = a[6];
    train_config_t cfg = {.n_layer = L, .n_head = H, .n_embd = C, .n_ctx = P + NEW, .vocab_size = V};
    train_model_t m;
    gl_err_t err;
    if (train_model_init(&m, &cfg, 0, 0, 0, &err)) {
        fprintf(stderr, "bench_generate: %s\n", err.msg);
        return 1;
    }
    train_model_init_weights(&m, 1);
    char model[] = "/tmp/bench_generate.XXXXXX";
    int fd = mkstemp(model);
    if (fd < 0 || train_save(&m, model, 0, &err)) {
        fprintf(stderr, "bench_generate: cannot save the model: %s\n", fd < 0 ? "mkstemp" : err.msg);
        return 1;
    }
    close(fd);
    printf("generation: %d layers, %d heads, width %d, vocab %d (%.1fM params); %d prompt + %d new tokens per row, "
           "greedy, best of %d\n",
           L, H, C, V, m.n_params / 1e6, P, NEW, repeats);
    printf("%-6s %-8s %10s %14s %7s %14s %16s %7s %9s\n", "batch", "threads", "C tok/s", "PyTorch tok/s", "ratio",
           "C tok/CPU-s", "PyTorch tok/CPU-s", "ratio", "same ids");
    int32_t *c0 = malloc(sizeof(int32_t) * NEW), *t0 = malloc(sizeof(int32_t) * NEW);
    static const int batches[2] = {8, 32};
    for (int bi = 0; bi < 2; bi++) {
        double best_c = 0, best_t = 0;
        for (int th = 1; th <= 2; th++) {
            train_set_threads(th);
            double cc, tc;
            double ct = c_tokens_per_s(&m, batches[bi], P, NEW, repeats, c0, &cc);
            double tt = torch_tokens_per_s(model, batches[bi], P, NEW, th, repeats, t0, &tc);
            int same = tt > 0 && !memcmp(c0, t0, sizeof(int32_t) * NEW);
            printf("%-6d %-8d %10.0f %14.0f %7.2f %14.0f %16.0f %7.2f %9s\n", batches[bi], th, ct, tt,
                   tt > 0 ? ct / tt : 0, cc, tc, tc > 0 ? cc / tc : 0, tt > 0 ? (same ? "yes" : "no") : "-");
            best_c = ct > best_c ? ct : best_c;
            best_t = tt > best_t ? tt : best_t;
        }
        if (best_t > 0)
            printf("batch %d, best of 1 and 2 threads: C %.0f tok/s, PyTorch %.0f tok/s, ratio %.2fx (floor 2x)\n",
                   batches[bi], best_c, best_t, best_c / best_t);
        else
            printf("batch %d: C %.0f tok/s (PyTorch reference not run: torch missing)\n", batches[bi], best_c);
    }
    unlink(model);
    free(c0), free(t0);
    train_model_free(&m);
    return 0;
}
