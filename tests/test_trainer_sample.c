/* test_trainer_sample.c — best-of-N and candidates for the labelers.
 *
 * (1) train_best_of_n over several seeds and prompts: the returned index is
 * the argmax of the scores; each score equals the reward model's score of
 * that row built here (prompt + response + end-of-text) and scored alone;
 * row 0 is what a plain one-row sample with the same seed gives, so the
 * best never scores below the first sample. (2) `gptline sample
 * --best-of N --reward RM --scores` marks the argmax, and without --scores
 * prints that sample. (3) The loop with the labelers: `gptline sample
 * --prompts FILE --n K --out C` then `gptline label admin
 * import-candidates C`: the store holds one ranking task per prompt with
 * the right prompt and the K sampled responses.
 */
#include "tests/label_util.h"
#include "tests/tap.h"
#include "trainer/run.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define V 50
#define CTX 24
#define N 5
#define MAXNEW 10

static void test_best_of_n(void)
{
    gl_err_t err = {0};
    train_config_t cfg = {.n_layer = 2, .n_head = 4, .n_embd = 32, .n_ctx = CTX, .vocab_size = V};
    train_model_t pol = {0}, rm = {0};
    ok(train_model_init(&pol, &cfg, 0, 0, 0, &err) == 0 && train_model_init(&rm, &cfg, N, CTX, 0, &err) == 0,
       "a policy and a reward model");
    train_model_init_weights(&pol, 3);
    for (size_t i = 0; i < pol.sizes[TRAIN_WTE]; i++)
        pol.params.t[TRAIN_WTE][i] *= 10; /* less uniform samples */
    train_model_init_weights(&rm, 4);
    float w[32];
    uint64_t s = 17;
    for (int c = 0; c < 32; c++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        w[c] = (float)((s >> 40) % 2001) / 1000.0f - 1.0f;
    }
    train_kv_t kv = {0}, kv1 = {0};
    ok(train_kv_init(&kv, &pol, N, CTX, &err) == 0 && train_kv_init(&kv1, &pol, 1, CTX, &err) == 0, "caches");
    int argmax_ok = 1, scores_ok = 1, first_ok = 1, never_lower = 1, varied = 0, runs = 0;
    for (int seed = 1; seed <= 6; seed++)
        for (int p = 0; p < 3; p++) {
            int32_t prompt[12];
            int plen = 1 + 4 * p; /* 1, 5, 9 tokens */
            for (int i = 0; i < plen; i++)
                prompt[i] = (int32_t)((seed * 31 + i * 7 + p) % V);
            train_sample_opts_t o = {.temperature = 1.0f, .seed = (uint64_t)seed, .max_new = MAXNEW, .stop_id = 7};
            int32_t out[N * MAXNEW], one[MAXNEW];
            int olen[N], olen1, best = -1;
            float sc[N];
            if (train_best_of_n(&kv, &pol, &rm, w, prompt, plen, &o, out, olen, sc, &best, &err)) {
                ok(0, "best-of-N: %s", err.msg);
                continue;
            }
            runs++;
            for (int b = 0; b < N; b++) {
                argmax_ok &= sc[b] <= sc[best] && (sc[b] < sc[best] || b >= best);
                /* the row the reward model reads, built here */
                int32_t row[CTX + MAXNEW + 1];
                int n = 0, rl = olen[b] && out[b * MAXNEW + olen[b] - 1] == 7 ? olen[b] - 1 : olen[b];
                for (int i = 0; i < plen; i++)
                    row[n++] = prompt[i];
                for (int i = 0; i < rl; i++)
                    row[n++] = out[b * MAXNEW + i];
                row[n++] = 7;
                float alone;
                train_rm_score(&rm, w, row, &n, 1, n, &alone, &err);
                scores_ok &= fabsf(alone - sc[b]) <= 1e-4f * (1 + fabsf(alone));
                varied |= sc[b] != sc[0];
            }
            const int32_t *pp = prompt;
            train_generate(&kv1, &pol, &pp, &plen, &o, one, &olen1, NULL, &err);
            first_ok &= olen1 == olen[0] && !memcmp(one, out, (size_t)olen1 * sizeof *one);
            never_lower &= sc[best] >= sc[0];
        }
    ok(runs == 18, "18 best-of-%d runs (6 seeds x 3 prompts)", N);
    ok(varied, "the samples get different scores");
    ok(argmax_ok, "the best is the argmax of the scores (the first of equals)");
    ok(scores_ok, "each score equals its prompt + response + end-of-text scored alone");
    ok(first_ok, "row 0 equals a plain sample with the same seed");
    ok(never_lower, "best-of-N never scores below the first sample");
    train_sample_opts_t nostop = {.temperature = 1.0f, .seed = 1, .max_new = MAXNEW, .stop_id = -1};
    int32_t out[N * MAXNEW], p0 = 1;
    int olen[N], best;
    float sc[N];
    ok(train_best_of_n(&kv, &pol, &rm, w, &p0, 1, &nostop, out, olen, sc, &best, &err) == GL_EINVAL,
       "without an end-of-text id: refused");
    train_kv_free(&kv);
    train_kv_free(&kv1);
    train_model_free(&pol);
    train_model_free(&rm);
}

/* ---- the command ---------------------------------------------------------- */

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Writes a reward head file: "score.weight" [1, C] F32. */
static int write_head(const char *path, const float *w, int C)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr,
                     "{\"score.weight\":{\"dtype\":\"F32\",\"shape\":[1,%d],\"data_offsets\":[0,%d]}}", C, 4 * C);
    while (n % 8)
        hdr[n++] = ' ';
    uint64_t hl = (uint64_t)n;
    FILE *f = fopen(path, "wb");
    int bad = !f || fwrite(&hl, 8, 1, f) != 1 || fwrite(hdr, 1, (size_t)n, f) != (size_t)n ||
              fwrite(w, 4, (size_t)C, f) != (size_t)C;
    if (f)
        fclose(f);
    return bad ? -1 : 0;
}

static json_t *read_lines(const char *path)
{
    json_t *a = json_array();
    FILE *f = fopen(path, "r");
    char line[1 << 16];
    while (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        if (j)
            json_array_append_new(a, j);
    }
    if (f)
        fclose(f);
    return a;
}

static void test_command(const char *G)
{
    gl_err_t err = {0};
    const char *tmp = tap_tmpdir();
    char cmd[4096];
    /* a byte-level policy and a reward model (model + score.safetensors) */
    train_config_t cfg = {.n_layer = 1, .n_head = 2, .n_embd = 16, .n_ctx = 48, .vocab_size = 257};
    train_model_t m = {0};
    char *pdir = gl_path_join(tmp, "policy"), *rdir = gl_path_join(tmp, "rm");
    char *pm = gl_path_join(pdir, "model.safetensors"), *rmp = gl_path_join(rdir, "model.safetensors"),
         *hp = gl_path_join(rdir, "score.safetensors");
    gl_mkdir_p(pdir, &err);
    gl_mkdir_p(rdir, &err);
    float w[16];
    for (int c = 0; c < 16; c++)
        w[c] = (float)((c * 37) % 11) / 5.0f - 1.0f;
    int made = train_model_init(&m, &cfg, 0, 0, 0, &err) == 0;
    train_model_init_weights(&m, 8);
    made &= train_save(&m, pm, 0, &err) == 0;
    train_model_init_weights(&m, 9);
    made &= train_save(&m, rmp, 0, &err) == 0 && write_head(hp, w, 16) == 0;
    train_model_free(&m);
    ok(made, "policy and reward checkpoints written");

    /* (2) best-of-N from the command line */
    char *sj = gl_path_join(tmp, "scores.jsonl"), *bo = gl_path_join(tmp, "best.txt"), *po = gl_path_join(tmp, "plain.txt");
    snprintf(cmd, sizeof cmd, "%s sample --model %s --prompt ab -n 12 --seed 5 --ids --best-of 6 --reward %s --scores > %s",
             G, pdir, rdir, sj);
    is_int(run(cmd), 0, "sample --best-of 6 --reward RM --scores");
    json_t *a = read_lines(sj);
    int nl = (int)json_array_size(a), best = -1, nbest = 0;
    double top = -INFINITY;
    for (int i = 0; i < nl; i++) {
        double sc = json_number_value(json_object_get(json_array_get(a, (size_t)i), "score"));
        if (sc > top)
            top = sc, best = i;
    }
    for (int i = 0; i < nl; i++)
        nbest += json_is_true(json_object_get(json_array_get(a, (size_t)i), "best")) ? (i == best ? 1 : 100) : 0;
    is_int(nl, 6, "six samples with their scores");
    ok(nbest == 1, "the sample marked best has the top score (%.4f, sample %d)", top, best);
    snprintf(cmd, sizeof cmd, "%s sample --model %s --prompt ab -n 12 --seed 5 --ids --best-of 6 --reward %s > %s", G,
             pdir, rdir, bo);
    is_int(run(cmd), 0, "sample --best-of 6 --reward RM");
    snprintf(cmd, sizeof cmd, "%s sample --model %s --prompt ab -n 12 --seed 5 --ids > %s", G, pdir, po);
    is_int(run(cmd), 0, "plain sample, same seed");
    char *btxt = NULL, *ptxt = NULL;
    size_t bl = 0, pl = 0;
    gl_read_file(bo, 1 << 16, &btxt, &bl, NULL);
    gl_read_file(po, 1 << 16, &ptxt, &pl, NULL);
    char want[2048] = "", first[2048] = "";
    for (int pass = 0; pass < 2 && best >= 0; pass++) {
        json_t *ids = json_object_get(json_array_get(a, pass ? 0 : (size_t)best), "ids");
        char *d = pass ? first : want;
        size_t n = 0;
        for (size_t i = 0; i < json_array_size(ids); i++)
            n += (size_t)snprintf(d + n, 2048 - n, i ? " %lld" : "%lld",
                                  (long long)json_integer_value(json_array_get(ids, i)));
        snprintf(d + n, 2048 - n, "\n");
    }
    is_str(btxt ? btxt : "", want, "without --scores it prints the best sample");
    is_str(ptxt ? ptxt : "", first, "sample 0 is the plain sample of the same seed");
    json_decref(a);
    snprintf(cmd, sizeof cmd, "%s sample --model %s --prompt ab --best-of 3 >/dev/null 2>&1", G, pdir);
    is_int(run(cmd), 2, "--best-of without --reward is a usage error");

    /* (3) candidates -> import-candidates -> ranking tasks */
    static const char *prompts[3] = {"Say hello", "a plain line, not JSON", "Caf\xc3\xa9 or tea?"};
    char *pf = gl_path_join(tmp, "prompts.txt"), *cf = gl_path_join(tmp, "cands.jsonl"),
         *db = gl_path_join(tmp, "labels");
    FILE *f = fopen(pf, "w");
    fprintf(f, "{\"prompt\": \"%s\", \"id\": \"p1\"}\n%s\n\n{\"prompt\": \"%s\"}\n", prompts[0], prompts[1],
            prompts[2]);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s sample --model %s --prompts %s --n 3 -n 16 --seed 2 --out %s", G, pdir, pf, cf);
    is_int(run(cmd), 0, "sample --prompts FILE --n 3 --out C.jsonl");
    json_t *c = read_lines(cf);
    int shape = json_array_size(c) == 3;
    for (size_t i = 0; shape && i < 3; i++) {
        json_t *o = json_array_get(c, i);
        shape &= !strcmp(json_string_value(json_object_get(o, "prompt")), prompts[i]) &&
                 json_array_size(json_object_get(o, "candidates")) == 3;
    }
    ok(shape, "one line per prompt, in order, with 3 candidates each");
    is_str(json_string_value(json_object_get(json_array_get(c, 0), "id")), "p1", "the prompt's id is kept");
    snprintf(cmd, sizeof cmd, "%s sample --model %s --prompts %s --n 1 >/dev/null 2>&1", G, pdir, pf);
    is_int(run(cmd), 2, "--n 1 is refused (a ranking needs 2 to 9)");

    snprintf(cmd, sizeof cmd, "%s label admin import-candidates --db %s %s >/dev/null 2>&1", G, db, cf);
    is_int(run(cmd), 0, "label admin import-candidates");
    label_store_t *s = label_store_open(db, NULL, &err);
    ok(s != NULL, "open the label store: %s", s ? "ok" : err.msg);
    char *stats = NULL;
    label_store_stats(s, 0, &stats, &err);
    json_t *js = json_loads(stats ? stats : "{}", 0, NULL);
    json_t *q = json_object_get(json_object_get(js, "queues"), "ranking");
    is_int((int)json_integer_value(json_object_get(q, "pending")), 3, "stats: 3 ranking tasks pending");
    json_decref(js);
    free(stats);
    label_keypair_t kp;
    label_keygen(&kp, &err);
    label_store_add_contractor(s, "alice", kp.public_z85, GPTLINE__LABEL__ROLE__CONTRACTOR, &err);
    Gptline__Label__Reply *r = lu_lease(s, "alice", GPTLINE__LABEL__TASK_KIND__RANKING, 0, 10, 1000);
    int same = r && r->body_case == GPTLINE__LABEL__REPLY__BODY_TASKS && r->tasks->n_tasks == 3;
    for (size_t t = 0; same && t < 3; t++) {
        const Gptline__Label__TaskView *v = r->tasks->tasks[t];
        json_t *line = NULL;
        for (size_t i = 0; i < 3; i++)
            if (!strcmp(json_string_value(json_object_get(json_array_get(c, i), "prompt")), v->prompt))
                line = json_array_get(c, i);
        json_t *cands = json_object_get(line, "candidates");
        same &= line && v->n_candidates == 3;
        for (size_t k = 0; same && k < 3; k++)
            same &= !strcmp(v->candidates[k]->text, json_string_value(json_array_get(cands, k)));
    }
    ok(same, "a contractor leases 3 ranking tasks: each prompt with its 3 sampled responses");
    gptline__label__reply__free_unpacked(r, NULL);
    label_store_close(&s);
    json_decref(c);
    free(pf), free(cf), free(db), free(btxt), free(ptxt), free(sj), free(bo), free(po);
    free(pdir), free(rdir), free(pm), free(rmp), free(hp);
}

int main(void)
{
    test_best_of_n();
    const char *G = getenv("GPTLINE");
    if (G && *G)
        test_command(G);
    else
        tap_skip(1, "GPTLINE not set: the command is not tested");
    return tap_done();
}
