/* test_trainer_generate.c — KV-cached generation against the full forward
 * pass and against the PyTorch reference.
 *
 * (1) Logits from the cache, one token at a time, equal the training
 * forward's logits at every position, also after a prefill of several
 * positions at once. (2) Rows of different prompt lengths
 * generated together equal each row generated alone. (3) Greedy decoding
 * equals the PyTorch reference's greedy continuation (tests/ref,
 * recomputing without a cache in float64). (4) Sampling is reproducible
 * from its seed, top-k 1 is greedy, and generation stops at end-of-text.
 */
#include "tests/tap.h"
#include "trainer/run.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define V 50
#define CTX 24

int main(void)
{
    gl_err_t err = {0};
    train_config_t cfg = {.n_layer = 2, .n_head = 4, .n_embd = 32, .n_ctx = CTX, .vocab_size = V};
    train_model_t m = {0};
    ok(train_model_init(&m, &cfg, 1, CTX, 0, &err) == 0, "model");
    train_model_init_weights(&m, 11);
    /* larger weights than the init's: sharper distributions, fewer ties */
    for (size_t i = 0; i < m.sizes[TRAIN_WTE]; i++)
        m.params.t[TRAIN_WTE][i] *= 20;

    int32_t seq[CTX];
    uint64_t s = 3;
    for (int i = 0; i < CTX; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        seq[i] = (int32_t)((s >> 33) % V);
    }
    /* (1) */
    train_model_forward(&m, seq, NULL, NULL, 1, CTX, &err);
    train_kv_t g;
    ok(train_kv_init(&g, &m, 1, CTX, &err) == 0, "cache for 1 row of %d", CTX);
    double worst = 0;
    for (int t = 0; t < CTX; t++) {
        train_model_decode(&m, &g, &seq[t], &err);
        for (int v = 0; v < V; v++) {
            double a = g.logits[v], b = m.acts.logits[(size_t)t * V + v];
            double d = fabs(a - b) / (1 + fabs(b));
            worst = d > worst ? d : worst;
        }
    }
    ok(worst < 1e-4, "cached logits equal the full forward at all %d positions (worst rel. %.2g)", CTX, worst);
    int32_t over = 1;
    ok(train_model_decode(&m, &g, &over, &err) == GL_ERANGE, "a full row is refused");
    /* the first 10 positions at once, then one at a time */
    train_kv_reset(&g);
    ok(train_model_prefill(&m, &g, seq, 10, &err) == 0, "prefill 10 positions: %s", err.msg[0] ? err.msg : "ok");
    worst = 0;
    for (int t = 10; t < CTX; t++) {
        train_model_decode(&m, &g, &seq[t], &err);
        for (int v = 0; v < V; v++) {
            double a = g.logits[v], b = m.acts.logits[(size_t)t * V + v];
            worst = fmax(worst, fabs(a - b) / (1 + fabs(b)));
        }
    }
    ok(worst < 1e-4, "after a prefill the cached logits equal the full forward (worst rel. %.2g)", worst);
    train_kv_reset(&g);
    ok(train_model_prefill(&m, &g, seq, CTX + 1, &err) == GL_ERANGE, "a prefill past the cache is refused");
    train_kv_free(&g);

    /* (2) */
    const int32_t *prompts[3] = {seq, seq + 5, seq + 9};
    int plen[3] = {3, 7, 1}, olen[3], olen1;
    int32_t out[3 * 10], one[10];
    train_sample_opts_t greedy = {.temperature = 0, .max_new = 10, .stop_id = -1};
    gl_err_clear(&err);
    train_kv_init(&g, &m, 3, CTX, &err);
    ok(train_generate(&g, &m, prompts, plen, &greedy, out, olen, NULL, &err) == 0, "batch of 3 prompts: %s",
       err.msg[0] ? err.msg : "ok");
    train_kv_free(&g);
    int same = 1;
    train_kv_init(&g, &m, 1, CTX, &err);
    for (int b = 0; b < 3; b++) {
        train_generate(&g, &m, &prompts[b], &plen[b], &greedy, one, &olen1, NULL, &err);
        same &= olen1 == olen[b] && !memcmp(one, out + b * 10, (size_t)olen1 * sizeof *one);
    }
    ok(same, "each row of the batch equals the row generated alone");
    /* 128 rows of 10-token prompts: a prefill of 128 x 9 positions, in
     * chunks, many rows per product, against rows generated alone */
    enum { NB = 128 };
    const int32_t *pb[NB];
    int plb[NB], olb[NB];
    int32_t *outb = malloc(NB * 10 * sizeof *outb);
    for (int b = 0; b < NB; b++)
        pb[b] = seq + b % 14, plb[b] = 10;
    train_kv_free(&g);
    train_kv_init(&g, &m, NB, CTX, &err);
    ok(train_generate(&g, &m, pb, plb, &greedy, outb, olb, NULL, &err) == 0, "batch of %d prompts of 10 tokens", NB);
    train_kv_free(&g);
    train_kv_init(&g, &m, 1, CTX, &err);
    same = 1;
    static const int probe[] = {0, 5, 13, 77, 127};
    for (int k = 0; k < 5; k++) {
        int b = probe[k];
        train_generate(&g, &m, &pb[b], &plb[b], &greedy, one, &olen1, NULL, &err);
        same &= olen1 == olb[b] && !memcmp(one, outb + b * 10, (size_t)olen1 * sizeof *one);
    }
    ok(same, "rows 0, 5, 13, 77, 127 of the %d equal the rows generated alone", NB);
    free(outb);

    /* (3) */
    const char *py = getenv("PYTHON");
    char *src = getenv("GL_SRC");
    if (py && src && access(py, X_OK) == 0) {
        char *dir = gl_path_join(tap_tmpdir(), "m.safetensors");
        ok(train_save(&m, dir, 0, &err) == 0, "save the model");
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s %s/tests/ref/gpt2_generate.py %s 10 %d %d %d 2>&1", py, src, dir, seq[5],
                 seq[6], seq[7]);
        FILE *p = popen(cmd, "r");
        char line[512] = "";
        if (p && !fgets(line, sizeof line, p))
            line[0] = '\0';
        int st = p ? pclose(p) : -1;
        if (st != 0 && strstr(line, "No module named")) {
            tap_skip(1, "PyTorch is not installed");
        } else {
            char mine[512] = "";
            size_t n = 0;
            const int32_t *pr = seq + 5;
            int pl = 3;
            train_generate(&g, &m, &pr, &pl, &greedy, one, &olen1, NULL, &err);
            for (int i = 0; i < olen1; i++)
                n += (size_t)snprintf(mine + n, sizeof mine - n, i ? " %d" : "%d", one[i]);
            line[strcspn(line, "\n")] = '\0';
            is_str(mine, line, "greedy continuation equals PyTorch's");
        }
        free(dir);
    } else {
        tap_skip(1, "no PYTHON/GL_SRC for the PyTorch reference");
    }

    /* (4) */
    train_sample_opts_t samp = {.temperature = 3.0f, .top_p = 0.95f, .seed = 42, .max_new = 12, .stop_id = -1};
    int32_t a[12], b2[12];
    int la, lb;
    const int32_t *pr = seq;
    int pl = 4;
    float lp[12];
    train_generate(&g, &m, &pr, &pl, &samp, a, &la, lp, &err);
    train_generate(&g, &m, &pr, &pl, &samp, b2, &lb, NULL, &err);
    ok(la == lb && !memcmp(a, b2, (size_t)la * sizeof *a), "same seed, same sample");
    int lp_ok = 1;
    for (int i = 0; i < la; i++)
        lp_ok &= lp[i] <= 0 && isfinite(lp[i]);
    ok(lp_ok, "log-probabilities returned");
    samp.seed = 43;
    train_generate(&g, &m, &pr, &pl, &samp, b2, &lb, NULL, &err);
    ok(memcmp(a, b2, (size_t)la * sizeof *a) != 0, "another seed, another sample");
    train_sample_opts_t topk1 = {.temperature = 1.5f, .top_k = 1, .seed = 9, .max_new = 12, .stop_id = -1};
    train_generate(&g, &m, &pr, &pl, &topk1, a, &la, NULL, &err);
    greedy.max_new = 12;
    train_generate(&g, &m, &pr, &pl, &greedy, b2, &lb, NULL, &err);
    ok(la == lb && !memcmp(a, b2, (size_t)la * sizeof *a), "top-k 1 is greedy");
    train_sample_opts_t stop = greedy;
    stop.stop_id = b2[2];
    train_generate(&g, &m, &pr, &pl, &stop, a, &la, NULL, &err);
    int first = 0;
    while (b2[first] != stop.stop_id)
        first++;
    ok(la == first + 1 && a[la - 1] == stop.stop_id, "stops at the stop id (after %d tokens)", la);
    int big = CTX;
    ok(train_generate(&g, &m, &pr, &big, &greedy, a, &la, NULL, &err) == GL_ERANGE, "prompt + max_new past the context refused");
    train_kv_free(&g);
    train_model_free(&m);
    return tap_done();
}
