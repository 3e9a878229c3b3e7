/* bench_trainer.c — tokens/s of a GPT-2 training step against the PyTorch
 * reference on the same machine, and MFU against the OpenBLAS sgemm peak
 * measured in the same run.
 *
 * A step is zero_grad + forward + backward + clipping + AdamW on a (B,T)
 * batch. Both sides run at 1 and 2 threads, taking turns step by step (C
 * at 1 thread, PyTorch at 1, C at 2, PyTorch at 2; STEPS turns after
 * WARMUP turns not counted), so that both see the same phases of a shared
 * machine. Each side's thread count is the one with its faster median
 * step (on a 2-core machine PyTorch is often fastest single-threaded);
 * each turn gives a ratio, PyTorch's step time over C's at those thread
 * counts, and the median of the turns' ratios is the figure, as the other
 * benchmarks' medians of pairs are. (Taking in each turn the faster of a
 * side's two steps instead would favour the side whose two thread counts
 * are close: the lesser of two samples of one speed is a lucky draw.) The
 * table gives each side's best step at each thread count. Model FLOPs per
 * token, the usual count: 6 * (12 L C^2 + V C) for the matrix products of
 * forward and backward plus 6 L T C for causal attention (half of the
 * T x T products).
 *
 *   bench_trainer [L H C T B V STEPS [WARMUP]]     (WARMUP default 3)
 *
 * Without arguments, the two shapes, each in a process of its own
 * (for its peak memory): 6 6 384 256 8 65 10 3, then GPT-2 124M, 12 12 768
 * 1024 1 50257 2 1 (far from its floor, and each step takes seconds).
 *
 * The peer is tests/ref/gpt2_ref.py bench (plain torch, float32), run
 * with $PYTHON (default /usr/bin/python3) and driven a step at a time
 * through pipes; skipped when torch is missing.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "bench/peer.h"
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

/* One training step of the C model: wall-clock and CPU seconds. */
static void c_step(train_model_t *m, train_optim_t *o, const int32_t *tok, const int32_t *tgt, int B, int T,
                   double *wall, double *cpu)
{
    train_adamw_t hp = {0.9f, 0.95f, 1e-8f, 0.1f};
    gl_err_t err;
    double t0 = gl_now(), c0 = cpu_now();
    train_model_zero_grad(m);
    if (train_model_forward(m, tok, tgt, NULL, B, T, &err)) {
        fprintf(stderr, "bench_trainer: %s\n", err.msg);
        exit(1);
    }
    train_model_backward(m, 1.0f);
    train_clip_grad_norm(m, 1.0f);
    train_adamw_step(o, m, &hp, 1e-4f);
    *wall = gl_now() - t0;
    *cpu = cpu_now() - c0;
}

/* One training step of the peer; -1 when it does not answer. */
static int torch_step(peer_t *p, double *wall, double *cpu)
{
    if (!p->to || fputs("step\n", p->to) < 0 || fflush(p->to) || fscanf(p->from, "%lf %lf", wall, cpu) != 2)
        return -1;
    return 0;
}

/* The peer at a thread count, ready for steps; 0 when torch is missing. */
static int torch_start(peer_t *p, const int *a, int threads)
{
    char args[256], line[64];
    snprintf(args, sizeof args, "bench %d %d %d %d %d %d %d", a[0], a[1], a[2], a[3], a[4], a[5], threads);
    if (peer_spawn(p, "", "gpt2_ref.py", args) || !fgets(line, sizeof line, p->from) || strncmp(line, "ready", 5)) {
        peer_close(p);
        return 0;
    }
    return 1;
}

/* Lets the other side's spinning threads go to sleep before a step:
 * OpenBLAS's pool (in the peer) spins for about 0.1 s after a call. */
static void settle(void)
{
    struct timespec ts = {0, 200000000};
    nanosleep(&ts, NULL);
}

#define MAX_STEPS 64

/* The least of x[0..n), n >= 1. */
static double lowest(const double *x, int n)
{
    double m = x[0];
    for (int i = 1; i < n; i++)
        m = fmin(m, x[i]);
    return m;
}

/* The median of x[0..n), n <= MAX_STEPS; *lo and *hi (when not NULL) get
 * the least and the greatest. */
static double median(const double *x, int n, double *lo, double *hi)
{
    double y[MAX_STEPS];
    memcpy(y, x, n * sizeof y[0]);
    qsort(y, n, sizeof y[0], bench_cmp_double);
    if (lo)
        *lo = y[0];
    if (hi)
        *hi = y[n - 1];
    return n % 2 ? y[n / 2] : (y[n / 2 - 1] + y[n / 2]) / 2;
}

/* One shape; a = L H C T B V STEPS WARMUP. Both sides at 1 and 2 threads,
 * step by step in turn: a C step at 1 thread, a PyTorch step at 1, then
 * both at 2, WARMUP + STEPS times (the first WARMUP not counted: PyTorch's
 * second and third steps can still take twice as long as its later ones,
 * its allocator and autograd warming up). This machine's speed moves
 * in phases of about a minute; taking turns step by step puts both sides
 * in the same phases, which whole runs one after the other do not. */
static int bench_shape(const int *a)
{
    int L = a[0], H = a[1], C = a[2], T = a[3], B = a[4], V = a[5];
    int steps = a[6] < 1 ? 1 : a[6] > MAX_STEPS ? MAX_STEPS : a[6], warmup = a[7] < 1 ? 1 : a[7];
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
    printf("trainer step: %d layers, %d heads, width %d, T=%d, B=%d, vocab %d (%.1fM params, %.1f MFLOP/token); "
           "%d turns after %d of warm-up\n",
           L, H, C, T, B, V, m.n_params / 1e6, flops_tok / 1e6, steps, warmup);
    fflush(stdout);
    /* The peak is the best sgemm rate, measured before and again after the
     * steps: on a shared machine the second core is not always there, and
     * one slow minute would make the MFU look higher than it is. */
    double peaks[3] = {0}, peak = 0;
    for (int th = 1; th <= 2; th++) {
        blas_threads(th);
        peaks[th] = sgemm_peak(C, B * T);
    }
    peer_t peer[3];
    int torch = torch_start(&peer[1], a, 1) && torch_start(&peer[2], a, 2);
    if (!torch)
        peer_close(&peer[1]);
    /* per thread count, each counted turn's wall and CPU seconds of each side */
    double cturn[3][MAX_STEPS], ccpu[3][MAX_STEPS], tturn[3][MAX_STEPS], tcpu[3][MAX_STEPS], ratio[MAX_STEPS];
    for (int s = 1 - warmup; s <= steps; s++) {
        for (int th = 1; th <= 2; th++) {
            double w, c;
            train_set_threads(th);
            c_step(&m, &o, tok, tgt, B, T, &w, &c);
            if (s > 0)
                cturn[th][s - 1] = w, ccpu[th][s - 1] = c;
            if (!torch)
                continue;
            settle();
            if (torch_step(&peer[th], &w, &c)) {
                fprintf(stderr, "bench_trainer: the PyTorch peer stopped answering\n");
                return 1;
            }
            settle();
            if (s > 0)
                tturn[th][s - 1] = w, tcpu[th][s - 1] = c;
        }
    }
    if (torch) {
        peer_close(&peer[1]);
        peer_close(&peer[2]);
    }
    for (int th = 1; th <= 2; th++) {
        blas_threads(th);
        double p = sgemm_peak(C, B * T);
        peaks[th] = fmax(peaks[th], p);
    }
    /* two cores can do twice one core's rate: when both of the 2-thread
     * measurements fell in slow moments, the doubled 1-thread rate is the
     * better bound */
    peak = fmax(peaks[2], 2 * peaks[1]);
    printf("sgemm peak: %.1f GFLOP/s at 1 thread, %.1f at 2; MFU against %.1f\n", peaks[1], peaks[2], peak);
    printf("%-8s %12s %12s %8s %14s %14s %8s %8s\n", "threads", "C tok/s", "torch tok/s", "ratio", "C tok/CPU-s",
           "torch tok/CPU-s", "ratio", "MFU");
    double best_c = 0, best_t = 0;
    for (int th = 1; th <= 2; th++) {
        /* each side's best step at this thread count */
        double c = B * T / lowest(cturn[th], steps), cc = B * T / lowest(ccpu[th], steps);
        double t = torch ? B * T / lowest(tturn[th], steps) : 0, tc = torch ? B * T / lowest(tcpu[th], steps) : 0;
        printf("%-8d %12.0f %12.0f %8.2f %14.0f %14.0f %8.2f %7.1f%%\n", th, c, t, t > 0 ? c / t : 0, cc, tc,
               tc > 0 ? cc / tc : 0, 100 * c * flops_tok / 1e9 / peak);
        best_c = fmax(best_c, c);
        best_t = fmax(best_t, t);
    }
    double mfu = best_c * flops_tok / 1e9 / peak;
    if (torch) {
        /* each side at the thread count of its faster median step */
        double mc[3], mt[3];
        for (int th = 1; th <= 2; th++)
            mc[th] = median(cturn[th], steps, NULL, NULL), mt[th] = median(tturn[th], steps, NULL, NULL);
        int thc = mc[2] < mc[1] ? 2 : 1, tht = mt[2] < mt[1] ? 2 : 1;
        for (int s = 0; s < steps; s++)
            ratio[s] = tturn[tht][s] / cturn[thc][s];
        printf("median steps: C %.0f tok/s at %d thread%s, PyTorch %.0f tok/s at %d thread%s\n", B * T / mc[thc], thc,
               thc > 1 ? "s" : "", B * T / mt[tht], tht, tht > 1 ? "s" : "");
        printf("turns' ratios in order:");
        for (int s = 0; s < steps; s++)
            printf(" %.2f", ratio[s]);
        printf("\n");
        /* for comparison, the biased figure: each turn's faster step */
        double lucky[MAX_STEPS];
        for (int s = 0; s < steps; s++)
            lucky[s] = fmin(tturn[1][s], tturn[2][s]) / fmin(cturn[1][s], cturn[2][s]);
        double lo, hi, med = median(ratio, steps, &lo, &hi);
        printf("C / PyTorch, best of 1 and 2 threads: %.2fx, the median of the %d turns' ratios (range %.2f-%.2f); "
               "best steps C %.0f tok/s, PyTorch %.0f tok/s (%.2fx); MFU %.1f%% of sgemm peak\n",
               med, steps, lo, hi, best_c, best_t, best_c / best_t, 100 * mfu);
        printf("  (each turn's faster step of each side instead: %.2fx)\n", median(lucky, steps, NULL, NULL));
    } else {
        printf("best of 1 and 2 threads: C %.0f tok/s (PyTorch reference not run: torch missing); MFU %.1f%%\n",
               best_c, 100 * mfu);
    }
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    if (torch)
        printf("peak memory: C %.0f MiB, PyTorch %.0f MiB (max resident set)\n", self.ru_maxrss / 1024.0,
               kids.ru_maxrss / 1024.0);
    else
        printf("peak memory: C %.0f MiB (max resident set)\n", self.ru_maxrss / 1024.0);
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
    static const int shapes[2][8] = {{6, 6, 384, 256, 8, 65, 10, 3}, {12, 12, 768, 1024, 1, 50257, 2, 1}};
    int a[8];
    memcpy(a, shapes[0], sizeof a);
    for (int i = 1; i < argc && i <= 8; i++)
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
