/* test_trainer_safetensors.c — checkpoints: round trip, files written by
 * hand the way other tools write them (F16, BF16, "transformer." prefix,
 * tied lm_head, mask buffers, no config metadata), and a clear error for
 * every kind of corrupt or mismatched file.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/tap.h"
#include "trainer/trainer.h"

static char dir[256];

static char *tpath(const char *name)
{
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* Writes a safetensors file from a JSON header and a data section. */
static void write_raw(const char *path, const char *hdr, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    uint64_t len = strlen(hdr);
    uint8_t lb[8];
    for (int i = 0; i < 8; i++)
        lb[i] = (uint8_t)(len >> (8 * i));
    fwrite(lb, 1, 8, f);
    fwrite(hdr, 1, len, f);
    if (n)
        fwrite(data, 1, n, f);
    fclose(f);
}

/* The value the hand-built files hold at element i: exact in F16 and BF16. */
static float pattern(size_t i) { return (float)((int)(i % 17) - 8) * 0.25f; }

static uint16_t to_half(float f)   /* exact for the pattern values */
{
    if (f == 0.0f)
        return 0;
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000, exp = ((b >> 23) & 0xff) - 127 + 15, man = (b >> 13) & 0x3ff;
    return (uint16_t)(sign | exp << 10 | man);
}

/* Builds a GPT-2 file for cfg the way transformers' GPT2LMHeadModel export
 * looks: names written here independently of the trainer's table. */
static void build_file(const char *path, const train_config_t *c, const char *dtype,
                       const char *prefix, int with_meta, int extras)
{
    int C = c->n_embd, es = !strcmp(dtype, "F32") ? 4 : 2;
    struct { char name[96]; long r, k; } t[256];
    int nt = 0;
#define ADD(nm, rows, cols) do { snprintf(t[nt].name, 96, "%s%s", prefix, nm); t[nt].r = rows; t[nt].k = cols; nt++; } while (0)
    ADD("wte.weight", c->vocab_size, C);
    ADD("wpe.weight", c->n_ctx, C);
    for (int l = 0; l < c->n_layer; l++) {
        char n[64];
#define ADDL(s, rows, cols) do { snprintf(n, sizeof n, "h.%d.%s", l, s); ADD(n, rows, cols); } while (0)
        ADDL("ln_1.weight", C, 0); ADDL("ln_1.bias", C, 0);
        ADDL("attn.c_attn.weight", C, 3 * C); ADDL("attn.c_attn.bias", 3 * C, 0);
        ADDL("attn.c_proj.weight", C, C); ADDL("attn.c_proj.bias", C, 0);
        ADDL("ln_2.weight", C, 0); ADDL("ln_2.bias", C, 0);
        ADDL("mlp.c_fc.weight", C, 4 * C); ADDL("mlp.c_fc.bias", 4 * C, 0);
        ADDL("mlp.c_proj.weight", 4 * C, C); ADDL("mlp.c_proj.bias", C, 0);
        if (extras)
            ADDL("attn.bias", c->n_ctx, c->n_ctx);   /* old mask buffer (stored here as 2-D) */
    }
    ADD("ln_f.weight", C, 0);
    ADD("ln_f.bias", C, 0);
#undef ADDL
#undef ADD
    if (extras) {
        snprintf(t[nt].name, 96, "lm_head.weight");
        t[nt].r = c->vocab_size;
        t[nt].k = C;
        nt++;
    }
    size_t hcap = 65536, off = 0, total = 0;
    char *h = malloc(hcap);
    int hn = snprintf(h, hcap, "{");
    if (with_meta)
        hn += snprintf(h + hn, hcap - hn,
                       "\"__metadata__\":{\"format\":\"pt\",\"n_layer\":\"%d\",\"n_head\":\"%d\","
                       "\"n_embd\":\"%d\",\"n_ctx\":\"%d\",\"vocab_size\":\"%d\"},",
                       c->n_layer, c->n_head, C, c->n_ctx, c->vocab_size);
    else
        hn += snprintf(h + hn, hcap - hn, "\"__metadata__\":{\"format\":\"pt\"},");
    for (int i = 0; i < nt; i++)
        total += (size_t)t[i].r * (t[i].k ? t[i].k : 1) * es;
    uint8_t *data = malloc(total);
    for (int i = 0; i < nt; i++) {
        size_t n = (size_t)t[i].r * (t[i].k ? t[i].k : 1);
        if (t[i].k)
            hn += snprintf(h + hn, hcap - hn, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%ld,%ld],\"data_offsets\":[%zu,%zu]}",
                           i ? "," : "", t[i].name, dtype, t[i].r, t[i].k, off, off + n * es);
        else
            hn += snprintf(h + hn, hcap - hn, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%ld],\"data_offsets\":[%zu,%zu]}",
                           i ? "," : "", t[i].name, dtype, t[i].r, off, off + n * es);
        for (size_t j = 0; j < n; j++) {
            float v = pattern(j);
            uint8_t *d = data + off + j * es;
            if (es == 4) {
                memcpy(d, &v, 4);
            } else {
                uint32_t b;
                memcpy(&b, &v, 4);
                uint16_t x = !strcmp(dtype, "BF16") ? (uint16_t)(b >> 16) : to_half(v);
                d[0] = (uint8_t)x;
                d[1] = (uint8_t)(x >> 8);
            }
        }
        off += n * es;
    }
    snprintf(h + hn, hcap - hn, "}");
    write_raw(path, h, data, total);
    free(h);
    free(data);
}

static int holds_pattern(const train_model_t *m)
{
    const train_config_t *c = &m->cfg;
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
        int per = k >= TRAIN_LN1W && k <= TRAIN_FCPROJB;
        size_t n = m->sizes[k] / (per ? c->n_layer : 1);
        for (size_t i = 0; i < m->sizes[k]; i++)
            if (m->params.t[k][i] != pattern(i % n))
                return 0;
    }
    return 1;
}

/* Expects load of path to fail with code and a message containing want. */
static void expect_fail(train_model_t *m, const char *path, int code, const char *want, const char *what)
{
    gl_err_t err = {0};
    int rc = train_load(m, path, 0, &err);
    if (!ok(rc == code && strstr(err.msg, want) && strstr(err.msg, path), "%s: error %d '%s'", what, rc,
            err.msg))
        tap_diag("wanted code %d and '%s'", code, want);
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s", tap_tmpdir());
    gl_err_t err = {0};
    train_config_t cfg = {.n_layer = 2, .n_head = 2, .n_embd = 16, .n_ctx = 8, .vocab_size = 29};
    train_model_t a, b;
    is_int(train_model_init(&a, &cfg, 0, 0, 0, &err), GL_OK, "init a");
    is_int(train_model_init(&b, &cfg, 0, 0, 0, &err), GL_OK, "init b");
    train_model_init_weights(&a, 7);

    /* Round trip, atomically, over an existing file. */
    const char *p = tpath("m.safetensors");
    is_int(train_save(&a, p, 0, &err), GL_OK, "save: %s", err.msg);
    is_int(train_save(&a, p, 0, &err), GL_OK, "save again over it: %s", err.msg);
    is_int(train_load(&b, p, 0, &err), GL_OK, "load: %s", err.msg);
    ok(!memcmp(a.params_mem, b.params_mem, a.n_params * sizeof(float)), "round trip is exact");
    DIR *d = opendir(dir);
    int stray = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        stray += strstr(e->d_name, ".tmp") != NULL;
    closedir(d);
    ok(!stray, "no temporary file left behind");
    train_config_t rc_cfg;
    is_int(train_read_config(p, &rc_cfg, &err), GL_OK, "read config: %s", err.msg);
    ok(!memcmp(&rc_cfg, &cfg, sizeof cfg), "config from metadata");
    train_model_init_weights(&b, 8);
    ok(memcmp(a.params_mem, b.params_mem, a.n_params * sizeof(float)), "other seed, other weights");
    train_model_init_weights(&b, 7);
    ok(!memcmp(a.params_mem, b.params_mem, a.n_params * sizeof(float)), "same seed, same weights");

    /* Files as other tools write them. */
    const char *dtypes[] = {"F32", "F16", "BF16"};
    for (int i = 0; i < 3; i++) {
        const char *q = tpath("hand.safetensors");
        build_file(q, &cfg, dtypes[i], i ? "transformer." : "", 1, i == 2);
        memset(b.params_mem, 0, b.n_params * sizeof(float));
        int rc = train_load(&b, q, 0, &err);
        ok(rc == GL_OK && holds_pattern(&b), "hand-built %s file%s loads: %s", dtypes[i],
           i ? " with prefix" : "", rc ? err.msg : "");
    }
    /* No config metadata (published GPT-2): inferred, heads of 64. */
    train_config_t big = {.n_layer = 1, .n_head = 2, .n_embd = 128, .n_ctx = 4, .vocab_size = 5};
    const char *q = tpath("nometa.safetensors");
    build_file(q, &big, "F16", "", 0, 1);
    is_int(train_read_config(q, &rc_cfg, &err), GL_OK, "config inferred: %s", err.msg);
    ok(!memcmp(&rc_cfg, &big, sizeof big), "inferred %d layers, %d heads, width %d, ctx %d, vocab %d",
       rc_cfg.n_layer, rc_cfg.n_head, rc_cfg.n_embd, rc_cfg.n_ctx, rc_cfg.vocab_size);

    /* Mismatches. */
    train_config_t other = cfg;
    other.n_layer = 3;
    build_file(tpath("3layer.safetensors"), &other, "F32", "", 1, 0);
    expect_fail(&b, tpath("3layer.safetensors"), GL_EMISMATCH, "n_layer", "more layers (metadata)");
    build_file(tpath("3layer.safetensors"), &other, "F32", "", 0, 0);
    expect_fail(&b, tpath("3layer.safetensors"), GL_EMISMATCH, "h.2.", "more layers (names)");
    other = cfg;
    other.vocab_size = 30;
    build_file(tpath("vocab.safetensors"), &other, "F32", "", 0, 0);
    expect_fail(&b, tpath("vocab.safetensors"), GL_EMISMATCH, "wte.weight", "other vocab size");
    other = cfg;
    other.n_layer = 1;
    build_file(tpath("1layer.safetensors"), &other, "F32", "", 0, 0);
    expect_fail(&b, tpath("1layer.safetensors"), GL_EMISMATCH, "h.1.ln_1.weight", "missing layer");

    /* Corrupt headers. */
    float four[4] = {1, 2, 3, 4};
    struct { const char *hdr; size_t data; int code; const char *want; const char *what; } bad[] = {
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}", 16, GL_ECORRUPT, "JSON", "truncated JSON"},
        {"[1,2]", 0, GL_ECORRUPT, "not a JSON object", "not an object"},
        {"{\"x\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, GL_EUNSUPPORTED, "I64", "dtype I64"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,20]}}", 16, GL_ECORRUPT, "outside", "offsets past the end"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,16]}}", 16, GL_ECORRUPT, "bytes for 5 elements", "size vs shape"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, GL_ECORRUPT, "overlaps", "overlap"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", 16, GL_ECORRUPT, "gap", "gap"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16, GL_ECORRUPT, "cover 8 of the 16", "trailing bytes"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, GL_ECORRUPT, "duplicate", "duplicate name"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", 16, GL_ECORRUPT, "shape[0]", "negative dim"},
        {"{\"__metadata__\":{\"n_layer\":2},\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, GL_ECORRUPT, "not a string", "metadata value"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,0]}}", 16, GL_ECORRUPT, "outside", "reversed offsets"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, GL_EMISMATCH, "'x' is not part", "unknown tensor"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *bp = tpath("bad.safetensors");
        write_raw(bp, bad[i].hdr, four, bad[i].data);
        expect_fail(&b, bp, bad[i].code, bad[i].want, bad[i].what);
    }
    /* Header length larger than the file, and a file too short. */
    const char *bp = tpath("short.safetensors");
    FILE *f = fopen(bp, "wb");
    uint8_t lb[12] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    fwrite(lb, 1, 12, f);
    fclose(f);
    expect_fail(&b, bp, GL_ECORRUPT, "does not fit", "header length past the end");
    f = fopen(bp, "wb");
    fwrite(lb, 1, 5, f);
    fclose(f);
    expect_fail(&b, bp, GL_ECORRUPT, "too short", "5-byte file");
    expect_fail(&b, tpath("absent.safetensors"), GL_ENOTFOUND, "absent", "missing file");
    is_int(train_read_config(bp, &rc_cfg, &err), GL_ECORRUPT, "read config of a corrupt file fails");

    /* Optimizer state: a run saved after 3 steps and resumed gives the same
     * losses as the run that went on. */
    {
        train_model_t r;
        train_optim_t o, o2;
        gl_err_clear(&err);
        is_int(train_model_init(&r, &cfg, 2, 8, TRAIN_GRADS, &err), GL_OK, "trainable model");
        train_model_init_weights(&r, 11);
        train_optim_init(&o, &r, &err);
        int32_t tok[16], tgt[16];
        for (int i = 0; i < 16; i++) {
            tok[i] = (i * 5 + 1) % 29;
            tgt[i] = (i * 3 + 2) % 29;
        }
        train_adamw_t hp = {0.9f, 0.95f, 1e-8f, 0.1f};
        float went_on[3], resumed[3];
        for (int s = 0; s < 6; s++) {
            if (s == 3) {
                is_int(train_save(&r, tpath("w.safetensors"), 0, &err), GL_OK, "save weights: %s", err.msg);
                is_int(train_optim_save(&o, &r, tpath("o.safetensors"), &err), GL_OK, "save optimizer: %s",
                       err.msg);
            }
            train_model_zero_grad(&r);
            train_model_forward(&r, tok, tgt, NULL, 2, 8, &err);
            if (s >= 3)
                went_on[s - 3] = r.loss;
            train_model_backward(&r, 1.0f);
            train_adamw_step(&o, &r, &hp, 1e-2f);
        }
        memset(r.params_mem, 0, r.n_params * sizeof(float));
        train_optim_init(&o2, &r, &err);
        is_int(train_load(&r, tpath("w.safetensors"), 0, &err), GL_OK, "load weights: %s", err.msg);
        is_int(train_optim_load(&o2, &r, tpath("o.safetensors"), &err), GL_OK, "load optimizer: %s", err.msg);
        is_int(o2.step, 3, "optimizer step restored");
        for (int s = 0; s < 3; s++) {
            train_model_zero_grad(&r);
            train_model_forward(&r, tok, tgt, NULL, 2, 8, &err);
            resumed[s] = r.loss;
            train_model_backward(&r, 1.0f);
            train_adamw_step(&o2, &r, &hp, 1e-2f);
        }
        ok(!memcmp(went_on, resumed, sizeof went_on), "resumed losses equal (%.6f %.6f %.6f)", resumed[0],
           resumed[1], resumed[2]);
        expect_fail(&r, tpath("o.safetensors"), GL_EMISMATCH, "exp_avg.wte.weight",
                    "optimizer file is not a weights file");
        gl_err_clear(&err);
        int rc = train_optim_load(&o2, &r, tpath("w.safetensors"), &err);
        ok(rc == GL_ECORRUPT && strstr(err.msg, "step"), "weights file is not an optimizer file: %s", err.msg);
        train_optim_free(&o);
        train_optim_free(&o2);
        train_model_free(&r);
    }
    train_model_free(&a);
    train_model_free(&b);
    return tap_done();
}
