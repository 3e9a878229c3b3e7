/* bench_shards.c — shard write and sampling throughput against the flat-file
 * peers measured in the same run.
 *
 * Write: N tokens as documents into a sealed shard (buffering, LMDB
 * transactions, checksums, trailer, fsync, rename) vs the same 2-byte
 * tokens written to a flat file with fwrite + fsync, the physical limit of
 * this disk. Sampling: (B=16, T=1024) batches from the dataset's sampler vs
 * reading the same windows (same window ids) from an mmaped flat file of
 * the token stream. Each side runs REPEAT times, alternating; medians are
 * compared. Floors: write >= 0.5x, sampling >= 0.8x the flat figure.
 *
 * Usage: bench_shards [tokens] (default 128M); files go to $GL_BUILD/bench
 * (or ./build/bench).
 */
#include "bench/bench_util.h"
#include "shards/shards.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPEAT 6
#define B 16
#define T 1024
#define VOCAB 50257u

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The flat peer's copy, built like the dataset's own (AVX2 where the CPU
 * has it), so the ratio measures the shard layout and lookups, not the
 * instruction set. */
__attribute__((target_clones("avx2", "default"), noinline))
static void flat_copy(int32_t *restrict dst, const uint16_t *restrict src, int n)
{
    for (int j = 0; j < n; j++)
        dst[j] = src[j];
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return v[n / 2];
}

static void die(const char *what, const gl_err_t *err)
{
    fprintf(stderr, "bench_shards: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

int main(int argc, char **argv)
{
    uint64_t ntok = 128000000;
    if (argc > 1 && gl_parse_u64(argv[1], &ntok))
        die("usage: bench_shards [tokens]", NULL);
    const char *b = getenv("GL_BUILD");
    char *dir = gl_path_join(b ? b : "build", "bench");
    gl_err_t err = {0};
    if (gl_mkdir_p(dir, &err))
        die("mkdir", &err);

    /* documents: lengths 200..8000 tokens, random ids */
    uint32_t *tok = malloc(ntok * sizeof *tok);
    uint16_t *tok16 = malloc(ntok * sizeof *tok16);
    for (uint64_t i = 0; i < ntok; i++) {
        tok[i] = (uint32_t)(mix(i) % (VOCAB - 1));
        tok16[i] = (uint16_t)tok[i];
    }
    uint64_t *lens = NULL, ndocs = 0, pos = 0;
    while (pos < ntok) {
        uint64_t l = 200 + mix(pos ^ 0xabc) % 7800;
        if (l > ntok - pos)
            l = ntok - pos;
        lens = realloc(lens, (ndocs + 1) * sizeof *lens);
        lens[ndocs++] = l;
        pos += l;
    }
    char *shard_dir = gl_path_join(dir, "ds");
    gl_mkdir_p(shard_dir, NULL);
    char *shard = gl_path_join(shard_dir, "shard-000000.mdb");
    char *flat = gl_path_join(dir, "flat.bin");

    double tw_shard[REPEAT], tw_flat[REPEAT];
    for (int r = 0; r < REPEAT; r++) {
        unlink(shard);
        double t0 = gl_now();
        shard_writer_opts_t o = {.tokenizer_name = "bench", .vocab_size = VOCAB, .eot_id = VOCAB - 1};
        shard_writer_t *w = shard_writer_create(shard, &o, &err);
        if (!w)
            die("create", &err);
        pos = 0;
        for (uint64_t d = 0; d < ndocs; d++) {
            Gptline__DocMeta m = GPTLINE__DOC_META__INIT;
            m.source = GPTLINE__SOURCE_KIND__TEXT;
            m.byte_length = lens[d] * 4;
            if (shard_writer_add(w, tok + pos, lens[d], &m.base, &err))
                die("add", &err);
            pos += lens[d];
        }
        if (shard_writer_seal(&w, &err))
            die("seal", &err);
        tw_shard[r] = gl_now() - t0;

        unlink(flat);
        t0 = gl_now();
        FILE *f = fopen(flat, "wb");
        if (!f || fwrite(tok16, 2, ntok, f) != ntok || fflush(f) || fsync(fileno(f)))
            die("flat write", NULL);
        fclose(f);
        tw_flat[r] = gl_now() - t0;
    }
    struct stat st;
    stat(shard, &st);
    double ws = median(tw_shard, REPEAT), wf = median(tw_flat, REPEAT);
    double mb = (double)ntok * 2 / 1e6;
    printf("shard write   %6.0f MB/s (%.0f M tokens/s, %.2f bytes/token on disk) | flat fwrite+fsync %6.0f MB/s | "
           "ratio %.2f (floor 0.50)\n",
           mb / ws, (double)ntok / ws / 1e6, (double)st.st_size / (double)ntok, mb / wf, wf / ws);

    /* the flat stream file for sampling: tokens with end-of-text per doc */
    uint64_t L = ntok + ndocs;
    uint16_t *stream = malloc(L * sizeof *stream);
    pos = 0;
    uint64_t sp = 0;
    for (uint64_t d = 0; d < ndocs; d++) {
        memcpy(stream + sp, tok16 + pos, lens[d] * 2);
        sp += lens[d];
        pos += lens[d];
        stream[sp++] = (uint16_t)(VOCAB - 1);
    }
    if (gl_write_file_atomic(flat, stream, L * 2, &err))
        die("flat stream", &err);
    free(stream);
    free(tok);
    free(tok16);

    shard_dataset_t *ds = shard_dataset_open(shard_dir, 0, &err);
    if (!ds)
        die("open", &err);
    int fd = open(flat, O_RDONLY);
    const uint16_t *map = mmap(NULL, L * 2, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        die("mmap", NULL);
    int32_t *out = malloc((size_t)B * (T + 1) * sizeof *out);
    volatile int64_t warm = 0;
    {
        /* touch every page of both once, so page faults are not timed */
        int32_t *blk = malloc((size_t)1 << 22);
        for (uint64_t p = 0; p < L; p += (1u << 20)) {
            uint64_t k = L - p < (1u << 20) ? L - p : (1u << 20);
            shard_dataset_read(ds, p, k, blk, &err);
            warm += blk[k - 1];
        }
        for (uint64_t p = 0; p < L; p += 2048)
            warm += map[p];
        free(blk);
    }
    const int batches = 3000;
    double ts[REPEAT], tf[REPEAT];
    volatile int64_t sink = 0;
    for (int r = 0; r < REPEAT; r++) {
        shard_sampler_t s, q;
        shard_sampler_init(&s, ds, B, T, 1 + (uint64_t)r, 0, 1, 1, &err);
        q = s;
        for (int side = 0; side < 2; side++) {
            /* alternate which side runs first, so neither gains from order */
            if ((side ^ r) & 1) {
                double t0 = gl_now();
                for (int k = 0; k < batches; k++) {
                    shard_sampler_next(&s, out, &err);
                    sink += out[k % (B * (T + 1))];
                }
                ts[r] = gl_now() - t0;
            } else {
                double t0 = gl_now();
                for (int k = 0; k < batches; k++) {
                    for (int i = 0; i < B; i++) {
                        uint64_t w = shard_sampler_window(&q, q.epoch, q.next++);
                        if (q.next >= q.per_rank) {
                            q.next = 0;
                            q.epoch++;
                        }
                        flat_copy(out + (size_t)i * (T + 1), map + w * T, T + 1);
                    }
                    sink += out[k % (B * (T + 1))];
                }
                tf[r] = gl_now() - t0;
            }
        }
    }
    double ms = median(ts, REPEAT), mf = median(tf, REPEAT);
    double toks = (double)batches * B * (T + 1);
    printf("shard sample  %6.0f M tokens/s (%.0f batches/s of B=%d T=%d) | flat mmap %6.0f M tokens/s | ratio %.2f "
           "(floor 0.80)\n",
           toks / ms / 1e6, batches / ms, B, T, toks / mf / 1e6, mf / ms);
    munmap((void *)map, L * 2);
    close(fd);
    shard_dataset_close(&ds);
    unlink(shard);
    unlink(flat);
    rmdir(shard_dir);
    free(out);
    free(lens);
    free(shard);
    free(shard_dir);
    free(flat);
    free(dir);
    return 0;
}
