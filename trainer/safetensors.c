/* safetensors.c — model checkpoints in the safetensors format, with the
 * Hugging Face GPT-2 tensor names and shapes.
 *
 * A safetensors file is an 8-byte little-endian header length, a JSON
 * header mapping each tensor name to {dtype, shape, data_offsets}, plus an
 * optional "__metadata__" object of strings, then the raw tensor bytes.
 * We write F32 tensors named as transformers' GPT2Model names them
 * (wte.weight, h.0.attn.c_attn.weight, ...), the matrices in Conv1D layout
 * [in, out] — the layout the model keeps in memory, so saving and loading
 * are straight copies — and the config (n_layer, n_head, n_embd, n_ctx,
 * vocab_size) in the metadata, so a checkpoint opens in PyTorch and
 * transformers as it is. Loading also takes F16/BF16 (converted to F32),
 * the "transformer." prefix of GPT2LMHeadModel files and ignores the tied
 * lm_head.weight and the attention-mask buffers of older exports.
 *
 * The header is untrusted input: its length is checked against the file,
 * the JSON is parsed with jansson (duplicate keys rejected), and every
 * tensor's dtype, shape, byte size and offsets are validated — in range,
 * no overlap, no gap — before any byte is read. Errors name the file and
 * the tensor. Files are mapped read-only; writes go to a temporary name,
 * are fsynced and renamed.
 */
#include "trainer/trainer.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u << 20)   /* the reference implementation's limit */

static const char *const dtype_names[] = {"F32", "F16", "BF16"};
static const int dtype_bytes[] = {4, 2, 2};

void train_st_free(train_st_t *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    for (size_t i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_vals[i]);
    }
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_vals);
    memset(st, 0, sizeof *st);
}

const char *train_st_meta(const train_st_t *st, const char *key)
{
    for (size_t i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta_keys[i], key))
            return st->meta_vals[i];
    return NULL;
}

static int cmp_begin(const void *a, const void *b)
{
    const train_st_tensor_t *x = *(train_st_tensor_t *const *)a, *y = *(train_st_tensor_t *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* A JSON integer that is a valid non-negative size, into *out. */
static int json_u64(json_t *j, uint64_t *out)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return 0;
    *out = (uint64_t)json_integer_value(j);
    return 1;
}

static int parse_tensor(const char *name, const char *key, json_t *v, uint64_t data_len,
                        train_st_tensor_t *t, gl_err_t *err)
{
    if (!json_is_object(v))
        return gl_err_set(err, GL_ECORRUPT, "%s: tensor '%s': entry is not an object", name, key);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2)
        return gl_err_set(err, GL_ECORRUPT, "%s: tensor '%s': needs dtype, shape and two data_offsets",
                          name, key);
    const char *ds = json_string_value(jd);
    int dt = -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(ds, dtype_names[i]))
            dt = i;
    if (dt < 0)
        return gl_err_set(err, GL_EUNSUPPORTED, "%s: tensor '%s': dtype %s not supported (F32, F16, BF16)",
                          name, key, ds);
    t->dtype = (train_dtype_t)dt;
    size_t nd = json_array_size(js);
    if (nd > 4)
        return gl_err_set(err, GL_EUNSUPPORTED, "%s: tensor '%s': %zu dimensions (at most 4)", name, key, nd);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (!json_u64(json_array_get(js, i), &d))
            return gl_err_set(err, GL_ECORRUPT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                              name, key, i);
        if (d > ((uint64_t)1 << 40) || (d && numel > UINT64_MAX / 8 / d))
            return gl_err_set(err, GL_ECORRUPT, "%s: tensor '%s': shape too large", name, key);
        t->shape[i] = (int64_t)d;
        numel *= d;
    }
    if (!json_u64(json_array_get(jo, 0), &t->begin) || !json_u64(json_array_get(jo, 1), &t->end))
        return gl_err_set(err, GL_ECORRUPT, "%s: tensor '%s': data_offsets are not non-negative integers",
                          name, key);
    if (t->begin > t->end || t->end > data_len)
        return gl_err_set(err, GL_ECORRUPT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] outside the %llu data bytes", name,
                          key, (unsigned long long)t->begin, (unsigned long long)t->end,
                          (unsigned long long)data_len);
    if (t->end - t->begin != numel * (uint64_t)dtype_bytes[dt])
        return gl_err_set(err, GL_ECORRUPT, "%s: tensor '%s': %llu bytes for %llu elements of %s", name,
                          key, (unsigned long long)(t->end - t->begin), (unsigned long long)numel, ds);
    return GL_OK;
}

int train_st_parse(const uint8_t *buf, size_t len, uint64_t len_total, const char *name,
                   train_st_t *st, gl_err_t *err)
{
    memset(st, 0, sizeof *st);
    json_t *root = NULL;
    train_st_tensor_t **order = NULL;
    int rc = GL_OK;
    if (len < 8 || len_total < len)
        return gl_err_set(err, GL_ECORRUPT, "%s: %llu bytes, too short for a safetensors file", name,
                          (unsigned long long)len_total);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > ST_MAX_HEADER || hlen > len_total - 8)
        return gl_err_set(err, GL_ECORRUPT, "%s: header length %llu does not fit the %llu-byte file", name,
                          (unsigned long long)hlen, (unsigned long long)len_total);
    if (hlen > len - 8)
        return gl_err_set(err, GL_ERANGE, "%s: header of %llu bytes not in the buffer given", name,
                          (unsigned long long)hlen);
    if (hlen < 2 || buf[8] != '{')
        return gl_err_set(err, GL_ECORRUPT, "%s: header is not a JSON object", name);
    st->data_offset = 8 + hlen;
    st->data_len = len_total - 8 - hlen;

    json_error_t jerr;
    root = json_loadb((const char *)buf + 8, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        rc = gl_err_set(err, GL_ECORRUPT, "%s: header JSON: %s (line %d)", name,
                        root ? "not an object" : jerr.text, root ? 0 : jerr.line);
        goto out;
    }
    size_t n = json_object_size(root);
    st->tensors = calloc(n ? n : 1, sizeof *st->tensors);
    order = calloc(n ? n : 1, sizeof *order);
    if (!st->tensors || !order) {
        rc = gl_err_set(err, GL_ENOMEM, "%s: out of memory for %zu header entries", name, n);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) {
                rc = gl_err_set(err, GL_ECORRUPT, "%s: __metadata__ is not an object", name);
                goto out;
            }
            size_t nm = json_object_size(v);
            st->meta_keys = calloc(nm ? nm : 1, sizeof(char *));
            st->meta_vals = calloc(nm ? nm : 1, sizeof(char *));
            if (!st->meta_keys || !st->meta_vals) {
                rc = gl_err_set(err, GL_ENOMEM, "%s: out of memory for metadata", name);
                goto out;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = gl_err_set(err, GL_ECORRUPT, "%s: __metadata__ value of '%s' is not a string",
                                    name, mk);
                    goto out;
                }
                st->meta_keys[st->n_meta] = gl_xstrdup(mk);
                st->meta_vals[st->n_meta] = gl_xstrdup(json_string_value(mv));
                st->n_meta++;
            }
            continue;
        }
        if (!*key) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: a tensor has an empty name", name);
            goto out;
        }
        train_st_tensor_t *t = &st->tensors[st->n_tensors];
        rc = parse_tensor(name, key, v, st->data_len, t, err);
        if (rc)
            goto out;
        t->name = gl_xstrdup(key);
        order[st->n_tensors] = t;
        st->n_tensors++;
    }
    /* The data section must be covered exactly: sorted by offset, each
     * tensor starts where the previous one ended. */
    qsort(order, st->n_tensors, sizeof *order, cmp_begin);
    uint64_t at = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        if (order[i]->begin != at) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: tensor '%s' %s at byte %llu (expected %llu)", name,
                            order[i]->name, order[i]->begin < at ? "overlaps the previous one" : "leaves a gap",
                            (unsigned long long)order[i]->begin, (unsigned long long)at);
            goto out;
        }
        at = order[i]->end;
    }
    if (at != st->data_len)
        rc = gl_err_set(err, GL_ECORRUPT, "%s: tensors cover %llu of the %llu data bytes", name,
                        (unsigned long long)at, (unsigned long long)st->data_len);
out:
    free(order);
    json_decref(root);
    if (rc)
        train_st_free(st);
    return rc;
}

/* ---- GPT-2 names ---------------------------------------------------------- */

static const char *const hf_suffix[TRAIN_NPARAM_TENSORS] = {
    "wte.weight", "wpe.weight", "ln_1.weight", "ln_1.bias", "attn.c_attn.weight",
    "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_f.weight",
    "ln_f.bias",
};

static int per_layer(int kind) { return kind >= TRAIN_LN1W && kind <= TRAIN_FCPROJB; }

/* Shape of one tensor (one layer's slice for per-layer kinds). */
static int kind_shape(const train_config_t *c, int kind, int64_t *shape)
{
    int64_t C = c->n_embd;
    switch (kind) {
    case TRAIN_WTE: shape[0] = c->vocab_size; shape[1] = C; return 2;
    case TRAIN_WPE: shape[0] = c->n_ctx; shape[1] = C; return 2;
    case TRAIN_QKVW: shape[0] = C; shape[1] = 3 * C; return 2;
    case TRAIN_QKVB: shape[0] = 3 * C; return 1;
    case TRAIN_ATTPROJW: shape[0] = C; shape[1] = C; return 2;
    case TRAIN_FCW: shape[0] = C; shape[1] = 4 * C; return 2;
    case TRAIN_FCB: shape[0] = 4 * C; return 1;
    case TRAIN_FCPROJW: shape[0] = 4 * C; shape[1] = C; return 2;
    default: shape[0] = C; return 1;
    }
}

static void tensor_name(char *buf, size_t cap, int kind, int layer)
{
    if (per_layer(kind))
        snprintf(buf, cap, "h.%d.%s", layer, hf_suffix[kind]);
    else
        snprintf(buf, cap, "%s", hf_suffix[kind]);
}

/* ---- saving ------------------------------------------------------------ */

static int host_is_le(void)
{
    uint16_t x = 1;
    return *(uint8_t *)&x == 1;
}

/* Writes blocks (each laid out like m->params_mem) under the GPT-2 names,
 * block i prefixed with prefix[i], with the config and extra metadata. */
static int save_blocks(const train_model_t *m, const char *path, int nb, const char *const *prefix,
                       const float *const *block, const char *extra_key, const char *extra_val,
                       gl_err_t *err)
{
    const train_config_t *c = &m->cfg;
    if (!host_is_le())
        return gl_err_set(err, GL_EUNSUPPORTED, "%s: saving needs a little-endian host", path);
    json_t *root = json_object(), *meta = json_object();
    char num[32], name[160];
#define META(k, v) do { snprintf(num, sizeof num, "%d", (v)); json_object_set_new(meta, k, json_string(num)); } while (0)
    json_object_set_new(meta, "format", json_string("pt"));
    META("n_layer", c->n_layer);
    META("n_head", c->n_head);
    META("n_embd", c->n_embd);
    META("n_ctx", c->n_ctx);
    META("vocab_size", c->vocab_size);
#undef META
    if (c->tokenizer_hash) {
        snprintf(num, sizeof num, "%016llx", (unsigned long long)c->tokenizer_hash);
        json_object_set_new(meta, "tokenizer_hash", json_string(num));
    }
    json_object_set_new(meta, "producer", json_string("gptline " GL_VERSION));
    if (extra_key)
        json_object_set_new(meta, extra_key, json_string(extra_val));
    json_object_set_new(root, "__metadata__", meta);
    uint64_t off = 0;
    for (int b = 0; b < nb; b++) {
        for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++) {
            int nl = per_layer(k) ? c->n_layer : 1;
            for (int l = 0; l < nl; l++) {
                int64_t shape[4];
                int nd = kind_shape(c, k, shape);
                uint64_t bytes = (uint64_t)m->sizes[k] / nl * 4;
                json_t *t = json_object(), *js = json_array();
                for (int i = 0; i < nd; i++)
                    json_array_append_new(js, json_integer(shape[i]));
                json_object_set_new(t, "dtype", json_string("F32"));
                json_object_set_new(t, "shape", js);
                json_object_set_new(t, "data_offsets",
                                    json_pack("[II]", (json_int_t)off, (json_int_t)(off + bytes)));
                size_t pl = strlen(prefix[b]);
                memcpy(name, prefix[b], pl);
                tensor_name(name + pl, sizeof name - pl, k, l);
                json_object_set_new(root, name, t);
                off += bytes;
            }
        }
    }
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!hdr)
        return gl_err_set(err, GL_ENOMEM, "%s: out of memory for the header", path);
    /* Pad the header with spaces so the data starts 8-byte aligned. */
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    gl_atomic_file_t af;
    int rc = gl_atomic_open(&af, path, err);
    if (rc) {
        free(hdr);
        return rc;
    }
    int ok = fwrite(lenbuf, 1, 8, af.f) == 8 && fwrite(hdr, 1, hlen, af.f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++)
        ok = fputc(' ', af.f) != EOF;
    free(hdr);
    /* The blocks are laid out in tensor order, which is the header's. */
    for (int b = 0; ok && b < nb; b++)
        ok = fwrite(block[b], sizeof(float), m->n_params, af.f) == m->n_params;
    if (!ok) {
        rc = gl_err_set(err, GL_EIO, "%s: write failed: %s", path, strerror(errno));
        gl_atomic_abort(&af);
        return rc;
    }
    return gl_atomic_commit(&af, err);
}

int train_save(const train_model_t *m, const char *path, int grads, gl_err_t *err)
{
    if (grads && !m->grads_mem)
        return gl_err_set(err, GL_EINVAL, "%s: the model has no gradients to save", path);
    const char *prefix[1] = {""};
    const float *block[1] = {grads ? m->grads_mem : m->params_mem};
    return save_blocks(m, path, 1, prefix, block, NULL, NULL, err);
}

static const char *const optim_prefix[2] = {"exp_avg.", "exp_avg_sq."};

int train_optim_save(const train_optim_t *o, const train_model_t *m, const char *path, gl_err_t *err)
{
    if (o->n != m->n_params)
        return gl_err_set(err, GL_EINVAL, "%s: optimizer state does not match the model", path);
    char step[32];
    snprintf(step, sizeof step, "%ld", o->step);
    const float *block[2] = {o->m, o->v};
    return save_blocks(m, path, 2, optim_prefix, block, "step", step, err);
}

/* ---- loading ----------------------------------------------------------- */

typedef struct {
    int fd;
    uint8_t *map;
    size_t len;
} mapped_t;

static int map_file(const char *path, mapped_t *mf, gl_err_t *err)
{
    memset(mf, 0, sizeof *mf);
    mf->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (mf->fd < 0)
        return gl_err_set(err, errno == ENOENT ? GL_ENOTFOUND : GL_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(mf->fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(mf->fd);
        return gl_err_set(err, GL_EIO, "%s: not a regular file", path);
    }
    mf->len = (size_t)sb.st_size;
    if (mf->len < 8) {
        close(mf->fd);
        return gl_err_set(err, GL_ECORRUPT, "%s: %zu bytes, too short for a safetensors file", path,
                          mf->len);
    }
    mf->map = mmap(NULL, mf->len, PROT_READ, MAP_PRIVATE, mf->fd, 0);
    if (mf->map == MAP_FAILED) {
        close(mf->fd);
        return gl_err_set(err, GL_EIO, "%s: mmap: %s", path, strerror(errno));
    }
    return GL_OK;
}

static void unmap_file(mapped_t *mf)
{
    if (mf->map && mf->map != MAP_FAILED)
        munmap(mf->map, mf->len);
    if (mf->fd > 0)
        close(mf->fd);
    memset(mf, 0, sizeof *mf);
}

static int parse_int_meta(const train_st_t *st, const char *key, int *out)
{
    const char *s = train_st_meta(st, key);
    if (!s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > (1L << 30))
        return -1;
    *out = (int)v;
    return 1;
}

/* Strips the GPT2LMHeadModel prefix. */
static const char *base_name(const char *n)
{
    return strncmp(n, "transformer.", 12) ? n : n + 12;
}

/* Config from the metadata, or inferred from the shapes when the metadata
 * is absent (published GPT-2 files carry only {"format": "pt"}): vocab and
 * width from wte, context from wpe, layers by counting h.{i}.ln_1.weight,
 * heads as width / 64 (every GPT-2 size has 64-wide heads). */
static int st_config(const train_st_t *st, const char *path, train_config_t *cfg, gl_err_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    static const char *const keys[] = {"n_layer", "n_head", "n_embd", "n_ctx", "vocab_size"};
    int *fields[] = {&cfg->n_layer, &cfg->n_head, &cfg->n_embd, &cfg->n_ctx, &cfg->vocab_size};
    for (int i = 0; i < 5; i++)
        if (parse_int_meta(st, keys[i], fields[i]) < 0)
            return gl_err_set(err, GL_ECORRUPT, "%s: metadata %s='%s' is not a positive integer", path,
                              keys[i], train_st_meta(st, keys[i]));
    const char *th = train_st_meta(st, "tokenizer_hash");
    if (th) {
        char *end;
        unsigned long long h = strtoull(th, &end, 16);
        if (!*th || *end)
            return gl_err_set(err, GL_ECORRUPT, "%s: metadata tokenizer_hash='%s' is not hexadecimal", path, th);
        cfg->tokenizer_hash = (uint64_t)h;
    }
    for (size_t i = 0; i < st->n_tensors; i++) {
        const train_st_tensor_t *t = &st->tensors[i];
        const char *n = base_name(t->name);
        if (!strcmp(n, "wte.weight") && t->ndim == 2) {
            if (!cfg->vocab_size)
                cfg->vocab_size = (int)t->shape[0];
            if (!cfg->n_embd)
                cfg->n_embd = (int)t->shape[1];
        } else if (!strcmp(n, "wpe.weight") && t->ndim == 2 && !cfg->n_ctx) {
            cfg->n_ctx = (int)t->shape[0];
        }
    }
    if (!train_st_meta(st, "n_layer")) {
        char want[64];
        for (int l = 0; l < 1024; l++) {
            snprintf(want, sizeof want, "h.%d.ln_1.weight", l);
            int found = 0;
            for (size_t i = 0; i < st->n_tensors && !found; i++)
                found = !strcmp(base_name(st->tensors[i].name), want);
            if (!found)
                break;
            cfg->n_layer = l + 1;
        }
    }
    if (!cfg->n_head && cfg->n_embd % 64 == 0)
        cfg->n_head = cfg->n_embd / 64;
    int rc = train_config_check(cfg, err);
    if (rc)
        return gl_err_prefix(err, "%s", path), rc;
    return GL_OK;
}

int train_read_config(const char *path, train_config_t *cfg, gl_err_t *err)
{
    mapped_t mf;
    train_st_t st;
    int rc = map_file(path, &mf, err);
    if (rc)
        return rc;
    rc = train_st_parse(mf.map, mf.len, mf.len, path, &st, err);
    if (!rc)
        rc = st_config(&st, path, cfg, err);
    train_st_free(&st);
    unmap_file(&mf);
    return rc;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            bits = sign | exp << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void convert(float *dst, const uint8_t *src, size_t n, train_dtype_t dt)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == TRAIN_F32) {
            uint32_t b = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 |
                         (uint32_t)src[4 * i + 2] << 16 | (uint32_t)src[4 * i + 3] << 24;
            memcpy(&dst[i], &b, 4);
        } else {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            if (dt == TRAIN_F16) {
                dst[i] = half_to_float(h);
            } else {
                uint32_t b = (uint32_t)h << 16;
                memcpy(&dst[i], &b, 4);
            }
        }
    }
}

/* Loads blocks (each laid out like m->params_mem) from the tensors named
 * prefix[i] + GPT-2 name; every tensor of every block must be there. With
 * step non-NULL, the "step" metadata is read into it. */
static int load_blocks(train_model_t *m, const char *path, int nb, const char *const *prefix,
                       float *const *block, long *step, gl_err_t *err)
{
    const train_config_t *c = &m->cfg;
    mapped_t mf;
    train_st_t st;
    uint8_t *seen = NULL;
    int rc = map_file(path, &mf, err);
    if (rc)
        return rc;
    rc = train_st_parse(mf.map, mf.len, mf.len, path, &st, err);
    if (rc) {
        unmap_file(&mf);
        return rc;
    }
    /* Metadata present must agree with the model. */
    static const char *const keys[] = {"n_layer", "n_head", "n_embd", "n_ctx", "vocab_size"};
    const int want[] = {c->n_layer, c->n_head, c->n_embd, c->n_ctx, c->vocab_size};
    for (int i = 0; i < 5; i++) {
        int v = 0, r = parse_int_meta(&st, keys[i], &v);
        if (r < 0 || (r > 0 && v != want[i])) {
            rc = gl_err_set(err, r < 0 ? GL_ECORRUPT : GL_EMISMATCH,
                            "%s: metadata %s='%s' but the model has %d", path, keys[i],
                            train_st_meta(&st, keys[i]), want[i]);
            goto out;
        }
    }
    if (step) {
        const char *sv = train_st_meta(&st, "step");
        char *end;
        errno = 0;
        long v = sv ? strtol(sv, &end, 10) : -1;
        if (!sv || errno || end == sv || *end || v < 0) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: metadata step missing or invalid", path);
            goto out;
        }
        *step = v;
    }
    /* Every file tensor must be a model tensor (or a known ignorable one). */
    int per_block = 0;
    for (int k = 0; k < TRAIN_NPARAM_TENSORS; k++)
        per_block += per_layer(k) ? c->n_layer : 1;
    int total = per_block * nb, matched = 0;
    seen = calloc((size_t)total, 1);
    if (!seen) {
        rc = gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < st.n_tensors; i++) {
        const train_st_tensor_t *t = &st.tensors[i];
        int b = -1;   /* the block of the longest matching prefix */
        size_t bl = 0;
        for (int j = 0; j < nb; j++) {
            size_t pl = strlen(prefix[j]);
            if (!strncmp(t->name, prefix[j], pl) && (b < 0 || pl > bl)) {
                b = j;
                bl = pl;
            }
        }
        const char *n = b >= 0 ? base_name(t->name + strlen(prefix[b])) : t->name;
        int kind = -1, layer = 0;
        for (int k = 0; b >= 0 && k < TRAIN_NPARAM_TENSORS && kind < 0; k++) {
            if (!per_layer(k)) {
                if (!strcmp(n, hf_suffix[k]))
                    kind = k;
            } else if (!strncmp(n, "h.", 2)) {
                char *end;
                long l = strtol(n + 2, &end, 10);
                if (n[2] >= '0' && n[2] <= '9' && *end == '.' && !strcmp(end + 1, hf_suffix[k]) && l >= 0 &&
                    l < c->n_layer && (end - (n + 2) == 1 || n[2] != '0')) {
                    kind = k;
                    layer = (int)l;
                }
            }
        }
        if (kind < 0) {
            size_t nl = strlen(n);
            if (!strcmp(t->name, "lm_head.weight") ||
                (nl > 10 && !strcmp(n + nl - 10, ".attn.bias")) ||
                (nl > 17 && !strcmp(n + nl - 17, ".attn.masked_bias")))
                continue;
            rc = gl_err_set(err, GL_EMISMATCH, "%s: tensor '%s' is not part of a %d-layer GPT-2", path,
                            t->name, c->n_layer);
            goto out;
        }
        int64_t shape[4];
        int nd = kind_shape(c, kind, shape);
        int same = t->ndim == nd;
        for (int d = 0; same && d < nd; d++)
            same = t->shape[d] == shape[d];
        if (!same) {
            char got[96] = "", exp[96] = "";
            for (int d = 0; d < t->ndim; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "",
                         (long long)t->shape[d]);
            for (int d = 0; d < nd; d++)
                snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", d ? "," : "",
                         (long long)shape[d]);
            rc = gl_err_set(err, GL_EMISMATCH, "%s: tensor '%s' has shape [%s], the model needs [%s]",
                            path, t->name, got, exp);
            goto out;
        }
        int slot = b * per_block + layer;
        for (int k = 0; k < kind; k++)
            slot += per_layer(k) ? c->n_layer : 1;
        if (seen[slot]) {
            rc = gl_err_set(err, GL_ECORRUPT, "%s: tensor '%s' appears twice", path, t->name);
            goto out;
        }
        seen[slot] = 1;
        size_t per = m->sizes[kind] / (per_layer(kind) ? c->n_layer : 1);
        float *dst = block[b] + (m->params.t[kind] - m->params_mem) + per * layer;
        convert(dst, mf.map + st.data_offset + t->begin, per, t->dtype);
        matched++;
    }
    /* Names are unique in the header and each matched a distinct slot. */
    for (int b = 0, slot = 0; !rc && b < nb; b++) {
        for (int k = 0; !rc && k < TRAIN_NPARAM_TENSORS; k++) {
            for (int l = 0; l < (per_layer(k) ? c->n_layer : 1); l++, slot++) {
                if (!seen[slot]) {
                    char name[160];
                    size_t pl = strlen(prefix[b]);
                    memcpy(name, prefix[b], pl);
                    tensor_name(name + pl, sizeof name - pl, k, l);
                    rc = gl_err_set(err, GL_EMISMATCH, "%s: tensor '%s' missing (%d of %d found)", path,
                                    name, matched, total);
                    break;
                }
            }
        }
    }
out:
    free(seen);
    train_st_free(&st);
    unmap_file(&mf);
    return rc;
}

int train_load(train_model_t *m, const char *path, int grads, gl_err_t *err)
{
    if (grads && !m->grads_mem)
        return gl_err_set(err, GL_EINVAL, "%s: the model has no gradients to load into", path);
    const char *prefix[1] = {""};
    float *block[1] = {grads ? m->grads_mem : m->params_mem};
    return load_blocks(m, path, 1, prefix, block, NULL, err);
}

int train_optim_load(train_optim_t *o, train_model_t *m, const char *path, gl_err_t *err)
{
    if (o->n != m->n_params)
        return gl_err_set(err, GL_EINVAL, "%s: optimizer state does not match the model", path);
    float *block[2] = {o->m, o->v};
    long step = 0;
    int rc = load_blocks(m, path, 2, optim_prefix, block, &step, err);
    if (!rc)
        o->step = step;
    return rc;
}
