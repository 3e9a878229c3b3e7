/* bench_tokenizer.c — tokenizer speed against the peers a user would pick
 * instead: single-thread encode MB/s for gpt2 and cl100k, scaling over 2
 * threads, and BPE training time for a 30k vocabulary on 10 MB, beside
 * tiktoken (npm, WASM) and Hugging Face tokenizers (npm
 * @anush008/tokenizers, native) measured in the same run by
 * bench/tokenizer_peers.mjs on the same text, printed as ratios.
 *
 * The text is the shared tokenizer texts of real writing (Shakespeare, C
 * headers, web pages, Wikipedia XML) concatenated and repeated to at least
 * 10 MB — the generated Unicode stress text, built of pathological runs,
 * is for exactness (tests), not for a speed figure; it is written to $GL_BENCH_DIR (default
 * ~/.cache/gptline-bench) for the peers to read. A single-thread encode
 * caches pieces only within one call, and the batch runs start each call
 * with empty caches, so repetition measures the same thing as fresh text
 * of that mix. Each timing is the best of 3 runs, to
 * keep other processes on a shared machine out of it; single-thread rates
 * are given in wall-clock and in CPU time (both sides), and the ratios use
 * CPU time. Scaling over 2 threads is the median ratio of 7 pairs of
 * runs, 1 and 2 threads alternately; the load average is printed: it only
 * means something when 2 cores are free.
 * GL_BENCH_PEERS=0 skips the peers.
 */
#include "bench/bench_util.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCALE_RUNS 7 /* pairs of 1- and 2-thread batch runs */

/* CPU seconds of the calling thread: a shared machine's other processes
 * do not count in it, which wall-clock time cannot promise. */
static double proc_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec * 1e-6;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define MIN_BYTES (10u << 20)
#define DOC_BYTES (64u << 10)

static const char *const TEXTS[] = {"c-headers", "tinyshakespeare", "web-html", "wiki-xml"};
#define N_TEXTS (sizeof TEXTS / sizeof TEXTS[0])

typedef struct {
    char key[64];
    double val;
} peer_t;
static peer_t peers[32];
static int n_peers;

static double peer(const char *key)
{
    for (int i = 0; i < n_peers; i++)
        if (!strcmp(peers[i].key, key))
            return peers[i].val;
    return 0;
}

static void ratio(const char *what, double ours, const char *peer_key, const char *unit, int higher_better)
{
    double p = peer(peer_key);
    if (p > 0)
        printf("  %-44s %8.2f %-5s vs %8.2f  = %6.2fx\n", what, ours, unit, p,
               higher_better ? ours / p : p / ours);
    else
        printf("  %-44s %8.2f %-5s (peer not measured)\n", what, ours, unit);
}

int main(void)
{
    const char *data = getenv("GL_DATA");
    if (!data || !*data)
        data = "../shared/data";
    gl_err_t err = {0};
    char path[4096];
    /* the corpus */
    size_t len = 0, cap = MIN_BYTES + (4u << 20);
    char *text = malloc(cap);
    char *parts[N_TEXTS];
    size_t plen[N_TEXTS];
    for (size_t i = 0; i < N_TEXTS; i++) {
        snprintf(path, sizeof path, "%s/tokenizers/texts/%s.txt", data, TEXTS[i]);
        if (gl_read_file(path, 1 << 28, &parts[i], &plen[i], &err)) {
            printf("bench_tokenizer: skipped: %s\n", err.msg);
            return 0;
        }
    }
    while (len < MIN_BYTES)
        for (size_t i = 0; i < N_TEXTS; i++) {
            if (len + plen[i] > cap) {
                cap = 2 * (len + plen[i]);
                text = realloc(text, cap);
            }
            memcpy(text + len, parts[i], plen[i]);
            len += plen[i];
        }
    for (size_t i = 0; i < N_TEXTS; i++)
        free(parts[i]);
    const char *bdir = getenv("GL_BENCH_DIR");
    char dbuf[2048];
    if (!bdir) {
        snprintf(dbuf, sizeof dbuf, "%.1000s/.cache/gptline-bench", getenv("HOME") ? getenv("HOME") : "/tmp");
        bdir = dbuf;
    }
    gl_mkdir_p(bdir, &err);
    snprintf(path, sizeof path, "%.2000s/corpus.txt", bdir);
    if (gl_write_file_atomic(path, text, len, &err))
        printf("bench_tokenizer: %s\n", err.msg);

    /* documents of ~64 KB cut at safe cuts, for the batch encoder */
    size_t nd = 0;
    tok_doc_t *docs = malloc((len / DOC_BYTES + 2) * 2 * sizeof *docs);
    for (size_t pos = 0; pos < len;) {
        size_t end = pos + DOC_BYTES < len ? tok_pretok_cut((const uint8_t *)text, len, pos + DOC_BYTES) : len;
        docs[nd++] = (tok_doc_t){text + pos, end - pos};
        pos = end;
    }

    /* peers first (they read corpus.txt) */
    const char *pe = getenv("GL_BENCH_PEERS");
    const char *src = getenv("GL_SRC");
    if (!pe || strcmp(pe, "0")) {
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "node %s/bench/tokenizer_peers.mjs '%s' '%s' 2>&1", src ? src : ".", path, data);
        FILE *p = popen(cmd, "r");
        char line[512];
        while (p && fgets(line, sizeof line, p)) {
            char k[64];
            double v;
            if (sscanf(line, "PEER %63s %lf", k, &v) == 2 && n_peers < 32) {
                snprintf(peers[n_peers].key, sizeof peers[n_peers].key, "%s", k);
                peers[n_peers++].val = v;
            } else {
                printf("  peers: %s", line);
            }
        }
        if (p)
            pclose(p);
    }

    char lb[32];
    double load[3] = {0, 0, 0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = 0;
        fclose(la);
    }
    printf("load average %.2f, %ld cores online\n", load[0], sysconf(_SC_NPROCESSORS_ONLN));
    printf("text: %s (the shared tokenizer texts repeated), %zu documents for the batch runs\n",
           gl_fmt_bytes((double)len, lb, sizeof lb), nd);
    static const struct {
        const char *name, *file, *peer;
    } enc[] = {{"gpt2", "r50k_base.tiktoken", "tiktoken_gpt2"}, {"cl100k_base", "cl100k_base.tiktoken", "tiktoken_cl100k"}};
    double mbs1_cl = 0, scale_cl = 0;
    for (size_t e = 0; e < 2; e++) {
        snprintf(path, sizeof path, "%s/tokenizers/vocab/%s", data, enc[e].file);
        tok_vocab_t *v = tok_vocab_load(path, NULL, &err);
        if (!v) {
            printf("bench_tokenizer: %s\n", err.msg);
            return 1;
        }
        tok_ids_t ids = {0};
        double best = 1e9, bestc = 1e9;
        for (int r = 0; r < 3; r++) {
            ids.n = 0;
            double t0 = gl_now(), c0 = cpu_now();
            tok_encode(v, text, len, TOK_ALLOW_NONE, &ids, &err);
            double dt = gl_now() - t0, dc = cpu_now() - c0;
            if (dt < best)
                best = dt;
            if (dc < bestc)
                bestc = dc;
        }
        double mbs = (double)len / 1e6 / bestc;
        tok_ids_t *outs = calloc(nd, sizeof *outs);
        /* 1 and 2 threads alternately, SCALE_RUNS pairs: the machine's
         * load drifts over seconds, so each pair's ratio compares runs a
         * moment apart, and the median of the ratios is the figure. */
        double bt[3] = {0, 1e9, 1e9}, bc[3] = {0, 1e9, 1e9}, ratios[SCALE_RUNS];
        for (int r = 0; r < SCALE_RUNS; r++) {
            double pair[3];
            for (int th = 1; th <= 2; th++) {
                for (size_t i = 0; i < nd; i++)
                    outs[i].n = 0;
                double t0 = gl_now(), c0 = proc_cpu();
                tok_encode_batch(v, docs, nd, TOK_ALLOW_NONE, th, outs, &err);
                double dt = gl_now() - t0, dc = proc_cpu() - c0;
                pair[th] = dt;
                if (dt < bt[th])
                    bt[th] = dt;
                if (dc < bc[th])
                    bc[th] = dc;
            }
            ratios[r] = pair[1] / pair[2];
        }
        qsort(ratios, SCALE_RUNS, sizeof *ratios, bench_cmp_double);
        size_t bn = 0;
        for (size_t i = 0; i < nd; i++) {
            bn += outs[i].n;
            tok_ids_free(&outs[i]);
        }
        free(outs);
        printf("%s: %zu tokens (batch: %zu)\n", enc[e].name, ids.n, bn);
        char key[64], pk[64];
        printf("  %-44s %8.2f MB/s wall-clock\n", "encode 1 thread", (double)len / 1e6 / best);
        snprintf(key, sizeof key, "encode 1 thread, %s (MB/s, CPU time)", enc[e].name);
        snprintf(pk, sizeof pk, "%s_cpu", enc[e].peer);
        ratio(key, mbs, pk, "MB/s", 1);
        snprintf(key, sizeof key, "%s_tokens", enc[e].peer);
        if (peer(key) > 0)
            printf("  %-44s %s\n", "same token count as tiktoken", (size_t)peer(key) == ids.n ? "yes" : "NO");
        if (e == 0) {
            ratio("vs HF tokenizers (MB/s, CPU time)", mbs, "hf_gpt2_cpu", "MB/s", 1);
        }
        double s2 = ratios[SCALE_RUNS / 2];
        printf("  %-44s %8.2f MB/s on 1, %8.2f MB/s on 2 threads (best of %d)\n", "batch encode",
               (double)len / 1e6 / bt[1], (double)len / 1e6 / bt[2], SCALE_RUNS);
        printf("  %-44s %.2fx median of %d pairs (%.2f .. %.2f)\n", "batch encode, 2 threads / 1", s2, SCALE_RUNS,
               ratios[0], ratios[SCALE_RUNS - 1]);
        printf("  %-44s %8.2f s on 1, %8.2f s on 2 threads = %.2f efficiency\n", "batch encode, CPU time of all threads",
               bc[1], bc[2], bc[1] / bc[2]);
        if (e == 1) {
            mbs1_cl = mbs;
            scale_cl = s2;
        }
        tok_ids_free(&ids);
        tok_vocab_free(&v);
    }

    /* training: 30k tokens on the 10 MB, 1 and 2 threads */
    double ttrain[3] = {0};
    for (int th = 1; th <= 2; th++) {
        tok_train_opts_t o = {.vocab_size = 30000, .pattern = TOK_PRETOK_GPT2, .threads = th};
        double t0 = gl_now();
        tok_trainer_t *t = tok_trainer_new(&o, &err);
        tok_doc_t d = {text, len};
        tok_trainer_add(t, &d, 1, &err);
        double tc = gl_now();
        tok_vocab_t *v = tok_trainer_finish(t, &err);
        ttrain[th] = gl_now() - t0;
        printf("train 30k on %d thread%s: %.2f s (counting %.2f s, merging %.2f s), %u tokens\n", th, th > 1 ? "s" : "",
               ttrain[th], tc - t0, ttrain[th] - (tc - t0), v ? tok_vocab_ordinary(v) : 0);
        tok_vocab_free(&v);
        tok_trainer_free(&t);
    }
    ratio("train 30k, 1 thread (s; ratio = HF / ours)", ttrain[1], "hf_train_1", "s", 0);
    ratio("train 30k, 2 threads (s; ratio = HF / ours)", ttrain[2], "hf_train_2", "s", 0);

    printf("floors: cl100k encode >= 50 MB/s: %s (%.1f); 2-thread scaling >= 1.8x: %s (%.2fx); "
           "training >= 2x HF: %s\n",
           mbs1_cl >= 50 ? "met" : "NOT met", mbs1_cl, scale_cl >= 1.8 ? "met" : "NOT met", scale_cl,
           peer("hf_train_1") > 0 ? (peer("hf_train_1") / ttrain[1] >= 2 && peer("hf_train_2") / ttrain[2] >= 2 ? "met" : "NOT met")
                                  : "not measured");
    free(docs);
    free(text);
    return 0;
}
