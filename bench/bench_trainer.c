/* bench_trainer.c — tokens/s of a GPT-2 training step against the PyTorch
 * reference on the same machine, and MFU against the OpenBLAS sgemm peak
 * measured in the same run.
 *
 * A step is zero_grad + forward + backward + AdamW on a (B,T) batch; the
 * best of STEPS timed steps (after one warm-up) counts. Both sides run at 1
 * and 2 threads and the best of each is compared (on a 2-core machine
 * PyTorch is often fastest single-threaded). Model FLOPs per token, the
 * usual count: 6 * (12 L C^2 + V C) for the matrix products of forward and
 * backward plus 6 L T C for causal attention (half of the T x T products).
 *
 *   bench_trainer [L H C T B V STEPS]
 *
 * Without arguments, the two shapes, each in a process of its own
 * (for its peak memory): 6 6 384 256 8 65 5, then GPT-2 124M, 12 12 768
 * 1024 1 50257 1.
 *
 * The peer is tests/ref/gpt2_ref.py (plain torch, float32), run with
 * $PYTHON (default /usr/bin/python3); skipped when torch is missing.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "trainer/trainer.h"


/* For the sgemm peak: OpenBLAS's own threads. */
static void blas_threads(int n) { openblas_set_num_threads(n); }

/* Best GFLOP/s of sgemm over shapes like the model's products. */
static double sgemm_peak(int C, int N)
{
    int shapes[][3] = {{N, 4 * C, C}, {N, C, 4 * C}, {4 * C, C, N}, {1024, 1024, 1024}};
    double best = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], Nn = shapes[s][1], K = shapes[s][2];
        float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * Nn),
              *c = malloc(sizeof(float) * M * Nn);
        for (long i = 0; i < (long)M * K; i++)
            a[i] = (float)(i % 13) * 0.01f;
        for (long i = 0; i < (long)K * Nn; i++)
            b[i] = (float)(i % 7) * 0.01f;
        for (int r = 0; r < 4; r++) {
            double t0 = gl_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, Nn, K, 1.0f, a, K, b, Nn, 0.0f, c, Nn);
            double g = 2.0 * M * Nn * K / (gl_now() - t0) / 1e9;
            if (r > 0 && g > best)
                best = g;
        }
        free(a);
        free(b);
        free(c);
    }
    return best;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Best tokens/s over the timed steps, by wall clock; *cpu gets tokens per
 * CPU-second of the process (all threads), which a busy machine distorts
 * less. */
static double c_tokens_per_s(train_model_t *m, train_optim_t *o, const int32_t *tok,
                             const int32_t *tgt, int B, int T, int steps, double *cpu)
{
    train_adamw_t hp = {0.9f, 0.95f, 1e-8f, 0.1f};
    gl_err_t err;
    double best = 1e30, best_cpu = 1e30;
    for (int s = 0; s <= steps; s++) {
        double t0 = gl_now(), c0 = cpu_now();
        train_model_zero_grad(m);
        if (train_model_forward(m, tok, tgt, NULL, B, T, &err)) {
            fprintf(stderr, "bench_trainer: %s\n", err.msg);
            exit(1);
        }
        train_model_backward(m, 1.0f);
        train_clip_grad_norm(m, 1.0f);
        train_adamw_step(o, m, &hp, 1e-4f);
        double dt = gl_now() - t0, dc = cpu_now() - c0;
        if (s > 0 && dt < best)
            best = dt;
        if (s > 0 && dc < best_cpu)
            best_cpu = dc;
    }
    *cpu = B * T / best_cpu;
    return B * T / best;
}

static double torch_tokens_per_s(int L, int H, int C, int T, int B, int V, int steps, int threads,
                                 double *cpu)
{
    const char *py = getenv("PYTHON"), *src = getenv("GL_SRC");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/ref/gpt2_ref.py' bench %d %d %d %d %d %d %d %d 2>/dev/null",
             py && *py ? py : "/usr/bin/python3", src && *src ? src : ".", L, H, C, T, B, V, steps, threads);
    FILE *p = popen(cmd, "r");
    double v = 0;
    *cpu = 0;
    if (!p)
        return 0;
    if (fscanf(p, "%lf %lf", &v, cpu) != 2)
        v = *cpu = 0;
    pclose(p);
    return v;
}

/* One shape, both sides at 1 and 2 threads; a = L H C T B V STEPS. */
static int bench_shape(const int *a)
{
    int L = a[0], H = a[1], C = a[2], T = a[3], B = a[4], V = a[5], steps = a[6];
    train_config_t cfg = {.n_layer = L, .n_head = H, .n_embd = C, .n_ctx = T, .vocab_size = V};
    train_model_t m;
    train_optim_t o;
    gl_err_t err;
    train_set_threads(2);
    if (train_model_init(&m, &cfg, B, T, TRAIN_GRADS, &err) || train_optim_init(&o, &m, &err)) {
        fprintf(stderr, "bench_trainer: %s\n", err.msg);
        return 1;
    }
    train_model_init_weights(&m, 1);
    int32_t *tok = malloc(sizeof(int32_t) * B * T), *tgt = malloc(sizeof(int32_t) * B * T);
    for (int i = 0; i < B * T; i++) {
        tok[i] = (i * 7919) % V;
        tgt[i] = (i * 104729 + 3) % V;
    }
    double flops_tok = 6.0 * (12.0 * L * C * C + (double)V * C) + 6.0 * L * T * C;
    printf("OpenBLAS %s, core %s (OPENBLAS_CORETYPE=%s)\n", openblas_get_config(), openblas_get_corename(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset");
    printf("trainer step: %d layers, %d heads, width %d, T=%d, B=%d, vocab %d (%.1fM params, %.1f MFLOP/token)\n",
           L, H, C, T, B, V, m.n_params / 1e6, flops_tok / 1e6);
    printf("%-8s %12s %12s %8s %14s %14s %8s %10s %8s\n", "threads", "C tok/s", "torch tok/s", "ratio",
           "C tok/CPU-s", "torch tok/CPU-s", "ratio", "sgemm GF", "MFU");
    /* The peak is the best sgemm rate at either thread count, measured
     * before and again after the steps: on a shared machine the second
     * core is not always there, and one slow minute would make the MFU
     * look higher than it is. */
    double peaks[3] = {0}, peak = 0, ct[3], tt[3], cc[3], tc[3];
    for (int th = 1; th <= 2; th++) {
        blas_threads(th);
        peaks[th] = sgemm_peak(C, B * T);
    }
    for (int th = 1; th <= 2; th++) {
        train_set_threads(th);
        ct[th] = c_tokens_per_s(&m, &o, tok, tgt, B, T, steps, &cc[th]);
        tt[th] = torch_tokens_per_s(L, H, C, T, B, V, steps, th, &tc[th]);
    }
    for (int th = 1; th <= 2; th++) {
        blas_threads(th);
        double p = sgemm_peak(C, B * T);
        peaks[th] = p > peaks[th] ? p : peaks[th];
        peak = peaks[th] > peak ? peaks[th] : peak;
    }
    double best_c = 0, best_t = 0, best_mfu = 0;
    for (int th = 1; th <= 2; th++) {
        double mfu = ct[th] * flops_tok / 1e9 / peak;
        printf("%-8d %12.0f %12.0f %8.2f %14.0f %14.0f %8.2f %10.1f %7.1f%%\n", th, ct[th], tt[th],
               tt[th] > 0 ? ct[th] / tt[th] : 0, cc[th], tc[th], tc[th] > 0 ? cc[th] / tc[th] : 0, peaks[th],
               100 * mfu);
        best_c = ct[th] > best_c ? ct[th] : best_c;
        best_t = tt[th] > best_t ? tt[th] : best_t;
        best_mfu = mfu > best_mfu ? mfu : best_mfu;
    }
    if (best_t > 0)
        printf("best of 1 and 2 threads: C %.0f tok/s, PyTorch %.0f tok/s, ratio %.2fx; MFU %.1f%% of sgemm peak\n",
               best_c, best_t, best_c / best_t, 100 * best_mfu);
    else
        printf("best of 1 and 2 threads: C %.0f tok/s (PyTorch reference not run: torch missing); MFU %.1f%%\n",
               best_c, 100 * best_mfu);
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    printf("peak memory: C %.0f MiB, PyTorch %.0f MiB (max resident set)\n", self.ru_maxrss / 1024.0,
           kids.ru_maxrss / 1024.0);
    free(tok);
    free(tgt);
    train_optim_free(&o);
    train_model_free(&m);
    return 0;
}

int main(int argc, char **argv)
{
    /* the two shapes: the 6-layer model, then GPT-2 124M (one
     * sequence of 1024 tokens per step) */
    static const int shapes[2][7] = {{6, 6, 384, 256, 8, 65, 5}, {12, 12, 768, 1024, 1, 50257, 1}};
    int a[7];
    memcpy(a, shapes[0], sizeof a);
    for (int i = 1; i < argc && i <= 7; i++)
        a[i - 1] = atoi(argv[i]);
    if (argc > 1)
        return bench_shape(a);
    for (int s = 0; s < 2; s++) {
        /* peak memory is per process: each shape runs in a child of its own */
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            int rc = bench_shape(shapes[s]);
            fflush(stdout);
            _exit(rc);
        }
        int st;
        if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
            return 1;
        printf("\n");
    }
    return 0;
}
