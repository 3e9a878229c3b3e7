/* vocab.c — loading, checking and writing BPE vocabularies.
 *
 * Three formats carry the same thing, a map from byte strings to ranks:
 * tiktoken rank files ("base64 rank" per line), GPT-2's encoder.json (token
 * strings in GPT-2's printable byte-to-unicode alphabet -> id) with
 * vocab.bpe (the merges, in rank order), and gptline's own text file, which
 * adds a magic/version line, the name, the pre-tokenization pattern, the
 * special tokens and a closing identity hash that catches truncation and
 * edits. All three load into one flat representation: every token's bytes
 * in one buffer, start/len arrays indexed by id, and an open-addressing
 * table (XXH3 of the bytes, linear probing, load <= 1/2) for bytes -> id.
 * Loading cl100k (100k lines, 1.6 MB) is dominated by base64 decoding and
 * table inserts and takes a few milliseconds.
 *
 * A loaded vocabulary is never modified after loading (special tokens are
 * registered before it is shared), so encoders in any number of threads
 * read it without locks.
 */
#include "tokenizer/internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---- known encodings ---------------------------------------------------- */

typedef struct {
    const char *name;
    const char *alias;
    uint32_t ordinary;
    tok_pretok_t pattern;
    struct {
        const char *name;
        uint32_t id;
    } specials[6];
} tok_known_t;

static const tok_known_t known[] = {
    {"gpt2", "r50k_base", 50256, TOK_PRETOK_GPT2, {{"<|endoftext|>", 50256}}},
    {"cl100k_base", NULL, 100256, TOK_PRETOK_CL100K,
     {{"<|endoftext|>", 100257},
      {"<|fim_prefix|>", 100258},
      {"<|fim_middle|>", 100259},
      {"<|fim_suffix|>", 100260},
      {"<|endofprompt|>", 100276}}},
    {"o200k_base", NULL, 199998, TOK_PRETOK_O200K, {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}}},
};
#define N_KNOWN (sizeof known / sizeof known[0])

static const char *const chat_roles[] = {"<|system|>", "<|user|>", "<|assistant|>"};

static int is_known_special_name(const char *s, size_t n)
{
    static const char *const extra[] = {"<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                                        "<|endofprompt|>", "<|system|>", "<|user|>", "<|assistant|>"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        if (strlen(extra[i]) == n && !memcmp(extra[i], s, n))
            return 1;
    return 0;
}

/* ---- small helpers ------------------------------------------------------ */

static tok_vocab_t *vocab_alloc(void)
{
    tok_vocab_t *v = calloc(1, sizeof *v);
    return v;
}

void tok_vocab_free(tok_vocab_t **pv)
{
    if (!pv || !*pv)
        return;
    tok_vocab_t *v = *pv;
    free(v->name);
    free(v->bytes);
    free(v->start);
    free(v->len);
    free(v->slots);
    for (size_t i = 0; i < v->n_special; i++)
        free(v->special[i].name);
    free(v);
    *pv = NULL;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* The file's base name without its extension; caller owns it. */
static char *stem(const char *path)
{
    char *s = gl_xstrdup(base_name(path));
    char *dot = strrchr(s, '.');
    if (dot && dot != s)
        *dot = '\0';
    return s;
}

static const tok_known_t *known_by_name(const char *name)
{
    for (size_t i = 0; i < N_KNOWN; i++)
        if (!strcmp(name, known[i].name) || (known[i].alias && !strcmp(name, known[i].alias)))
            return &known[i];
    return NULL;
}

static const tok_known_t *known_by_count(uint32_t ordinary)
{
    for (size_t i = 0; i < N_KNOWN; i++)
        if (known[i].ordinary == ordinary)
            return &known[i];
    return NULL;
}

/* Quotes up to 40 bytes of s for an error message. */
static const char *quote(const uint8_t *s, size_t n, char *buf, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap && i < 40; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    buf[o] = '\0';
    return buf;
}

/* ---- index -------------------------------------------------------------- */

void tok_vocab_rehash(tok_vocab_t *v)
{
    XXH3_state_t *st = XXH3_createState();
    uint32_t u[2] = {(uint32_t)v->pattern, v->n_ids};
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, u, sizeof u);
    for (uint32_t i = 0; i < v->n_ids; i++) {
        XXH3_64bits_update(st, &v->len[i], 4);
        XXH3_64bits_update(st, v->bytes + v->start[i], v->len[i]);
    }
    /* specials in id order */
    uint32_t ns = (uint32_t)v->n_special;
    XXH3_64bits_update(st, &ns, 4);
    uint32_t prev = 0;
    for (size_t k = 0; k < v->n_special; k++) {
        size_t best = SIZE_MAX;
        for (size_t j = 0; j < v->n_special; j++)
            if ((k == 0 || v->special[j].id > prev) && (best == SIZE_MAX || v->special[j].id < v->special[best].id))
                best = j;
        prev = v->special[best].id;
        uint32_t w[2] = {v->special[best].id, (uint32_t)v->special[best].len};
        XXH3_64bits_update(st, w, sizeof w);
        XXH3_64bits_update(st, v->special[best].name, v->special[best].len);
    }
    v->hash = XXH3_64bits_digest(st);
    XXH3_freeState(st);
}

int tok_vocab_index(tok_vocab_t *v, const char *where, gl_err_t *err)
{
    while (v->n_ids && !v->len[v->n_ids - 1]) /* no gap at the end */
        v->n_ids--;
    uint32_t cap = 16, count = 0;
    for (uint32_t id = 0; id < v->n_ids; id++)
        count += v->len[id] != 0;
    while (cap < 2 * (uint64_t)count + 2)
        cap *= 2;
    free(v->slots);
    v->slots = malloc(sizeof *v->slots * cap);
    if (!v->slots)
        return gl_err_set(err, GL_ENOMEM, "%s: out of memory", where);
    memset(v->slots, 0xff, sizeof *v->slots * cap);
    v->mask = cap - 1;
    v->n_ordinary = 0;
    char q[200];
    for (uint32_t id = 0; id < v->n_ids; id++) {
        if (!v->len[id])
            continue;
        const uint8_t *p = v->bytes + v->start[id];
        uint32_t n = v->len[id];
        uint64_t key = tok_key8(p, n);
        uint32_t i = (uint32_t)tok_slot_hash(p, n, key) & v->mask;
        while (v->slots[i].id != TOK_NONE) {
            uint32_t o = v->slots[i].id;
            if (v->len[o] == n && !memcmp(v->bytes + v->start[o], p, n))
                return gl_err_set(err, GL_ECORRUPT, "%s: token '%s' appears twice (ids %u and %u)", where,
                                  quote(p, n, q, sizeof q), o, id);
            i = (i + 1) & v->mask;
        }
        v->slots[i].id = id;
        v->slots[i].key = key;
        v->slots[i].len = n;
        v->n_ordinary++;
    }
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        v->byte_id[b] = tok_lookup(v, &c, 1);
        if (v->byte_id[b] == TOK_NONE)
            return gl_err_set(err, GL_ECORRUPT, "%s: byte 0x%02x is not a token (byte-level BPE needs all 256)",
                              where, b);
    }
    v->size = v->n_ids;
    for (size_t k = 0; k < v->n_special; k++)
        if (v->special[k].id + 1 > v->size)
            v->size = v->special[k].id + 1;
    tok_vocab_rehash(v);
    return GL_OK;
}

/* Registers a special without recomputing the hash (loaders do it once). */
static int add_special_raw(tok_vocab_t *v, const char *name, uint32_t id, gl_err_t *err)
{
    size_t n = strlen(name);
    if (!n || strchr(name, '\n') || strchr(name, '\r'))
        return gl_err_set(err, GL_EINVAL, "special token name '%s' is empty or holds a line break", name);
    if (v->n_special >= TOK_MAX_SPECIALS)
        return gl_err_set(err, GL_ERANGE, "%s: more than %d special tokens", v->name, TOK_MAX_SPECIALS);
    if (id == TOK_NONE)
        id = v->size;
    if (id >= TOK_MAX_IDS)
        return gl_err_set(err, GL_ERANGE, "%s: special token %s: id %u is too large", v->name, name, id);
    for (size_t k = 0; k < v->n_special; k++) {
        if (!strcmp(v->special[k].name, name))
            return gl_err_set(err, GL_EEXIST, "%s: special token %s registered twice", v->name, name);
        if (v->special[k].id == id)
            return gl_err_set(err, GL_EEXIST, "%s: special tokens %s and %s both have id %u", v->name,
                              v->special[k].name, name, id);
    }
    if (id < v->n_ids && v->len[id])
        return gl_err_set(err, GL_EEXIST, "%s: special token %s has id %u, an ordinary token's", v->name, name,
                          id);
    tok_special_t *s = &v->special[v->n_special++];
    s->name = gl_xstrdup(name);
    s->len = n;
    s->id = id;
    if (id + 1 > v->size)
        v->size = id + 1;
    return GL_OK;
}

int tok_vocab_add_special(tok_vocab_t *v, const char *name, uint32_t id, gl_err_t *err)
{
    int rc = add_special_raw(v, name, id, err);
    if (!rc)
        tok_vocab_rehash(v);
    return rc;
}

int tok_vocab_add_chat_roles(tok_vocab_t *v, gl_err_t *err)
{
    if (tok_special_id(v, "<|endoftext|>") < 0 && tok_vocab_add_special(v, "<|endoftext|>", TOK_NONE, err))
        return err ? err->code : GL_EINVAL;
    for (size_t i = 0; i < sizeof chat_roles / sizeof chat_roles[0]; i++)
        if (tok_special_id(v, chat_roles[i]) < 0 && tok_vocab_add_special(v, chat_roles[i], TOK_NONE, err))
            return err ? err->code : GL_EINVAL;
    return GL_OK;
}

/* Registers the built-in specials of a known encoding. */
static int add_known_specials(tok_vocab_t *v, const tok_known_t *k, gl_err_t *err)
{
    for (size_t i = 0; i < 6 && k->specials[i].name; i++)
        if (tok_special_id(v, k->specials[i].name) < 0 &&
            add_special_raw(v, k->specials[i].name, k->specials[i].id, err))
            return err ? err->code : GL_EINVAL;
    return GL_OK;
}

/* Sets the pattern and the built-in specials after the tokens are indexed. */
static int finish_load(tok_vocab_t *v, const char *path, const tok_load_opts_t *o, gl_err_t *err)
{
    const tok_known_t *k = known_by_name(v->name);
    if (k && k->ordinary != v->n_ordinary)
        return gl_err_set(err, GL_ECORRUPT, "%s: %u tokens where %s has %u (truncated or edited file?)", path,
                          v->n_ordinary, k->name, k->ordinary);
    if (!k)
        k = known_by_count(v->n_ordinary);
    if (o && o->pattern)
        v->pattern = o->pattern;
    if (!v->pattern && k)
        v->pattern = k->pattern;
    if (!v->pattern)
        return gl_err_set(err, GL_EINVAL,
                          "%s: cannot tell the pre-tokenization pattern of '%s'; name it (gpt2, cl100k_base, "
                          "o200k_base)",
                          path, v->name);
    if (k && k->pattern == v->pattern && add_known_specials(v, k, err))
        return gl_err_prefix(err, "%s", path), err ? err->code : GL_EINVAL;
    if (o && o->chat_roles && tok_vocab_add_chat_roles(v, err))
        return gl_err_prefix(err, "%s", path), err ? err->code : GL_EINVAL;
    tok_vocab_rehash(v);
    return GL_OK;
}

/* ---- base64 ------------------------------------------------------------- */

static int8_t b64val[256];
static void b64_init(void)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(b64val, -1, sizeof b64val);
    for (int i = 0; i < 64; i++)
        b64val[(uint8_t)a[i]] = (int8_t)i;
}

/* Decodes s[0..n) into out (room for n/4*3); returns the length or -1. */
static long b64_decode(const uint8_t *s, size_t n, uint8_t *out)
{
    if (!b64val[0])
        b64_init();
    if (n == 0 || n % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int a = b64val[s[i]], b = b64val[s[i + 1]], c = b64val[s[i + 2]], d = b64val[s[i + 3]];
        int last = i + 4 == n;
        if (a < 0 || b < 0)
            return -1;
        if (last && s[i + 2] == '=' && s[i + 3] == '=') {
            if (b & 15)
                return -1;
            out[o++] = (uint8_t)(a << 2 | b >> 4);
        } else if (last && s[i + 3] == '=') {
            if (c < 0 || (c & 3))
                return -1;
            out[o++] = (uint8_t)(a << 2 | b >> 4);
            out[o++] = (uint8_t)(b << 4 | c >> 2);
        } else {
            if (c < 0 || d < 0)
                return -1;
            out[o++] = (uint8_t)(a << 2 | b >> 4);
            out[o++] = (uint8_t)(b << 4 | c >> 2);
            out[o++] = (uint8_t)(c << 6 | d);
        }
    }
    return (long)o;
}

static void b64_encode(const uint8_t *s, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = a[x >> 18];
        out[o++] = a[(x >> 12) & 63];
        out[o++] = a[(x >> 6) & 63];
        out[o++] = a[x & 63];
    }
    if (n - i == 1) {
        uint32_t x = (uint32_t)s[i] << 16;
        out[o++] = a[x >> 18];
        out[o++] = a[(x >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        out[o++] = a[x >> 18];
        out[o++] = a[(x >> 12) & 63];
        out[o++] = a[(x >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
}

/* ---- rank lines (tiktoken and gltok bodies) ------------------------------- */

/* Parses "base64 rank" lines from buf[*pos..len) into v; stops after
 * max_lines lines (SIZE_MAX: to the end) or at a line that does not start
 * with a base64 character when stop_at_word is set. *line is the number of
 * the line before the first. */
static int parse_rank_lines(tok_vocab_t *v, const char *path, const uint8_t *buf, size_t len, size_t *pos,
                            size_t max_lines, size_t *line, gl_err_t *err)
{
    if (!b64val[0])
        b64_init();
    size_t p = *pos, cap_ids = 1024, n_lines = 0;
    uint64_t *rank_of_line = NULL; /* rank << 32 | line index, for the id arrays */
    uint32_t *lstart = NULL, *llen = NULL;
    int rc = GL_OK;
    v->bytes = malloc(len - p + 1);
    rank_of_line = malloc(sizeof *rank_of_line * cap_ids);
    lstart = malloc(sizeof *lstart * cap_ids);
    llen = malloc(sizeof *llen * cap_ids);
    if (!v->bytes || !rank_of_line || !lstart || !llen) {
        rc = gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    size_t nbytes = 0;
    uint32_t max_rank = 0;
    while (p < len && n_lines < max_lines) {
        size_t ln = *line + n_lines + 1;
        const uint8_t *s = buf + p, *nl = memchr(s, '\n', len - p);
        size_t L = nl ? (size_t)(nl - s) : len - p;
        size_t next = nl ? p + L + 1 : len;
        if (L && s[L - 1] == '\r')
            L--;
        if (L == 0) { /* blank lines are allowed (trailing newline) */
            if (max_lines != SIZE_MAX) {
                rc = gl_err_set(err, GL_EPARSE, "%s:%zu: empty line among the token lines", path, ln);
                goto out;
            }
            p = next;
            *line += 1;
            continue;
        }
        const uint8_t *sp = memchr(s, ' ', L);
        if (!sp) {
            rc = gl_err_set(err, GL_EPARSE, "%s:%zu: expected 'base64 rank'%s", path, ln,
                            nl ? "" : " (truncated file?)");
            goto out;
        }
        size_t bl = (size_t)(sp - s);
        long dl = b64_decode(s, bl, v->bytes + nbytes);
        if (dl <= 0) {
            rc = gl_err_set(err, GL_EPARSE, "%s:%zu: bad base64 '%.*s'", path, ln, (int)(bl > 60 ? 60 : bl),
                            (const char *)s);
            goto out;
        }
        if (dl > TOK_MAX_TOKEN_BYTES) {
            rc = gl_err_set(err, GL_ERANGE, "%s:%zu: token of %ld bytes (limit %d)", path, ln, dl,
                            TOK_MAX_TOKEN_BYTES);
            goto out;
        }
        uint64_t r = 0;
        size_t k = bl + 1;
        if (k >= L) {
            rc = gl_err_set(err, GL_EPARSE, "%s:%zu: missing rank%s", path, ln, nl ? "" : " (truncated file?)");
            goto out;
        }
        for (; k < L; k++) {
            if (s[k] < '0' || s[k] > '9' || r > 0x7ffffffeULL / 10) {
                rc = gl_err_set(err, GL_EPARSE, "%s:%zu: bad rank '%.*s'", path, ln, (int)(L - bl - 1 > 20 ? 20 : L - bl - 1),
                                (const char *)s + bl + 1);
                goto out;
            }
            r = r * 10 + (uint64_t)(s[k] - '0');
        }
        if (n_lines == cap_ids) {
            cap_ids *= 2;
            uint64_t *a = realloc(rank_of_line, sizeof *a * cap_ids);
            if (a)
                rank_of_line = a;
            uint32_t *b = realloc(lstart, sizeof *b * cap_ids);
            if (b)
                lstart = b;
            uint32_t *c = realloc(llen, sizeof *c * cap_ids);
            if (c)
                llen = c;
            if (!a || !b || !c) {
                rc = gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
                goto out;
            }
        }
        rank_of_line[n_lines] = r;
        lstart[n_lines] = (uint32_t)nbytes;
        llen[n_lines] = (uint32_t)dl;
        nbytes += (size_t)dl;
        if (r > max_rank)
            max_rank = (uint32_t)r;
        n_lines++;
        p = next;
    }
    if (max_rank >= TOK_MAX_IDS) {
        rc = gl_err_set(err, GL_ERANGE, "%s: rank %u is too large (ranks are below %u)", path, max_rank, TOK_MAX_IDS);
        goto out;
    }
    if (max_lines != SIZE_MAX && n_lines < max_lines) {
        rc = gl_err_set(err, GL_ECORRUPT, "%s: truncated: %zu of %zu token lines", path, n_lines, max_lines);
        goto out;
    }
    if (!n_lines) {
        rc = gl_err_set(err, GL_EPARSE, "%s: no tokens", path);
        goto out;
    }
    v->n_ids = max_rank + 1;
    v->start = calloc(v->n_ids, sizeof *v->start);
    v->len = calloc(v->n_ids, sizeof *v->len);
    if (!v->start || !v->len) {
        rc = gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < n_lines; i++) {
        uint32_t r = (uint32_t)rank_of_line[i];
        if (v->len[r]) {
            size_t first = 0;
            while ((uint32_t)rank_of_line[first] != r)
                first++;
            rc = gl_err_set(err, GL_ECORRUPT, "%s:%zu: duplicate rank %u (first on line %zu)", path,
                            *line + i + 1, r, *line + first + 1);
            goto out;
        }
        v->start[r] = lstart[i];
        v->len[r] = llen[i];
    }
    *line += n_lines;
    *pos = p;
out:
    free(rank_of_line);
    free(lstart);
    free(llen);
    return rc;
}

static tok_vocab_t *load_tiktoken(const char *path, const uint8_t *buf, size_t len, const tok_load_opts_t *o,
                                  gl_err_t *err)
{
    tok_vocab_t *v = vocab_alloc();
    size_t pos = 0, line = 0;
    if (!v) {
        gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    v->name = o && o->name ? gl_xstrdup(o->name) : stem(path);
    if (parse_rank_lines(v, path, buf, len, &pos, SIZE_MAX, &line, err) || tok_vocab_index(v, path, err) ||
        finish_load(v, path, o, err))
        tok_vocab_free(&v);
    return v;
}

/* ---- GPT-2 files ---------------------------------------------------------- */

/* GPT-2's byte <-> unicode alphabet: printable Latin-1 bytes stand for
 * themselves, the other 68 bytes map to U+0100.. in byte order. */
static void gpt2_alphabet(uint16_t byte_to_cp[256], int16_t cp_to_byte[324])
{
    int n = 0;
    for (int i = 0; i < 324; i++)
        cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        byte_to_cp[b] = (uint16_t)(printable ? b : 256 + n++);
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
}

/* Decodes a GPT-2 token string (UTF-8 of alphabet code points) to bytes;
 * returns the length or -1. */
static long gpt2_decode(const char *s, size_t n, const int16_t cp_to_byte[324], uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)s[i];
        uint32_t cp;
        if (c < 0x80) {
            cp = c;
            i++;
        } else if ((c & 0xe0) == 0xc0 && i + 1 < n) {
            cp = (uint32_t)(c & 0x1f) << 6 | ((uint8_t)s[i + 1] & 0x3f);
            i += 2;
        } else {
            return -1;
        }
        if (cp >= 324 || cp_to_byte[cp] < 0)
            return -1;
        out[o++] = (uint8_t)cp_to_byte[cp];
    }
    return (long)o;
}

static char *gpt2_encode(const uint8_t *s, size_t n, const uint16_t byte_to_cp[256])
{
    char *o = gl_xmalloc(2 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t cp = byte_to_cp[s[i]];
        if (cp < 0x80) {
            o[k++] = (char)cp;
        } else {
            o[k++] = (char)(0xc0 | cp >> 6);
            o[k++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    o[k] = '\0';
    return o;
}

static tok_vocab_t *load_gpt2(const char *path, const tok_load_opts_t *o, gl_err_t *err)
{
    uint16_t b2c[256];
    int16_t c2b[324];
    gpt2_alphabet(b2c, c2b);
    tok_vocab_t *v = vocab_alloc();
    json_t *root = NULL;
    char *mpath = NULL, *mbuf = NULL;
    uint8_t *seen = NULL;
    size_t mlen = 0;
    json_error_t je;
    char q[200];
    if (!v) {
        gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    if (o && o->name)
        v->name = gl_xstrdup(o->name);
    root = json_load_file(path, 0, &je);
    if (!root) {
        gl_err_set(err, errno == ENOENT && je.line < 0 ? GL_ENOTFOUND : GL_EPARSE, "%s:%d: %s", path, je.line,
                   je.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        gl_err_set(err, GL_EPARSE, "%s: expected a JSON object of token -> id", path);
        goto fail;
    }
    size_t total = 0, nkeys = json_object_size(root);
    uint32_t max_id = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= (json_int_t)TOK_MAX_IDS) {
            gl_err_set(err, GL_EPARSE, "%s: token '%s' has no valid id", path, key);
            goto fail;
        }
        if ((uint32_t)id > max_id)
            max_id = (uint32_t)id;
        total += strlen(key);
    }
    if (!nkeys) {
        gl_err_set(err, GL_EPARSE, "%s: no tokens", path);
        goto fail;
    }
    v->n_ids = max_id + 1;
    v->bytes = malloc(total + 1);
    v->start = calloc(v->n_ids, sizeof *v->start);
    v->len = calloc(v->n_ids, sizeof *v->len);
    if (!v->bytes || !v->start || !v->len) {
        gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    size_t nb = 0;
    json_object_foreach(root, key, val)
    {
        uint32_t id = (uint32_t)json_integer_value(val);
        size_t kl = strlen(key);
        if (is_known_special_name(key, kl)) {
            if (add_special_raw(v, key, id, err)) {
                gl_err_prefix(err, "%s", path);
                goto fail;
            }
            continue;
        }
        long dl = gpt2_decode(key, kl, c2b, v->bytes + nb);
        if (dl <= 0 || dl > TOK_MAX_TOKEN_BYTES) {
            gl_err_set(err, GL_EPARSE, "%s: token '%s' is not in GPT-2's byte alphabet", path,
                       quote((const uint8_t *)key, kl, q, sizeof q));
            goto fail;
        }
        if (v->len[id]) {
            gl_err_set(err, GL_ECORRUPT, "%s: duplicate id %u", path, id);
            goto fail;
        }
        for (size_t k = 0; k < v->n_special; k++)
            if (v->special[k].id == id) {
                gl_err_set(err, GL_ECORRUPT, "%s: duplicate id %u", path, id);
                goto fail;
            }
        v->start[id] = (uint32_t)nb;
        v->len[id] = (uint32_t)dl;
        nb += (size_t)dl;
    }
    json_decref(root);
    root = NULL;
    if (tok_vocab_index(v, path, err))
        goto fail;
    if (!v->name) { /* GPT-2's own files, else the folder's name */
        const char *slash = strrchr(path, '/'), *b = path;
        size_t bl = 0;
        if (slash) {
            b = slash;
            while (b > path && b[-1] != '/')
                b--;
            bl = (size_t)(slash - b);
        }
        v->name = v->n_ordinary == 50256 || !bl ? gl_xstrdup(v->n_ordinary == 50256 ? "gpt2" : "encoder")
                                                : strndup(b, bl);
    }

    /* The merges: each line "a b" makes token a+b; their results must be
     * every multi-byte token, in increasing id order, so that rank = id. */
    if (o && o->merges) {
        mpath = gl_xstrdup(o->merges);
    } else {
        const char *slash = strrchr(path, '/');
        char *dir = slash ? strndup(path, (size_t)(slash - path)) : gl_xstrdup(".");
        mpath = gl_path_join(dir, "vocab.bpe");
        free(dir);
    }
    if (gl_read_file(mpath, 1 << 30, &mbuf, &mlen, err))
        goto fail;
    seen = calloc(v->n_ids, 1);
    if (!seen) {
        gl_err_set(err, GL_ENOMEM, "%s: out of memory", mpath);
        goto fail;
    }
    {
        size_t p = 0, line = 0, n_merges = 0;
        uint32_t prev = 0;
        uint8_t tmp[2 * TOK_MAX_TOKEN_BYTES];
        while (p < mlen) {
            const char *s = mbuf + p, *nl = memchr(s, '\n', mlen - p);
            size_t L = nl ? (size_t)(nl - s) : mlen - p;
            p += L + (nl != NULL);
            line++;
            if (L && s[L - 1] == '\r')
                L--;
            if (!L || (line == 1 && s[0] == '#'))
                continue;
            const char *sp = memchr(s, ' ', L);
            if (!sp || sp == s || sp == s + L - 1 || memchr(sp + 1, ' ', (size_t)(s + L - sp - 1))) {
                gl_err_set(err, GL_EPARSE, "%s:%zu: expected two tokens separated by one space", mpath, line);
                goto fail;
            }
            if ((size_t)(sp - s) > TOK_MAX_TOKEN_BYTES || (size_t)(s + L - sp - 1) > TOK_MAX_TOKEN_BYTES) {
                gl_err_set(err, GL_ERANGE, "%s:%zu: token too long", mpath, line);
                goto fail;
            }
            long la = gpt2_decode(s, (size_t)(sp - s), c2b, tmp);
            long lb = la > 0 ? gpt2_decode(sp + 1, (size_t)(s + L - sp - 1), c2b, tmp + la) : -1;
            if (la <= 0 || lb <= 0) {
                gl_err_set(err, GL_EPARSE, "%s:%zu: not in GPT-2's byte alphabet", mpath, line);
                goto fail;
            }
            uint32_t a = tok_lookup(v, tmp, (size_t)la), b = tok_lookup(v, tmp + la, (size_t)lb);
            uint32_t c = tok_lookup(v, tmp, (size_t)(la + lb));
            if (a == TOK_NONE || b == TOK_NONE || c == TOK_NONE) {
                gl_err_set(err, GL_ECORRUPT, "%s:%zu: merge '%.*s' uses or makes a token not in %s", mpath, line,
                           (int)L, s, base_name(path));
                goto fail;
            }
            if (seen[c]) {
                gl_err_set(err, GL_ECORRUPT, "%s:%zu: token %u is made by a second merge", mpath, line, c);
                goto fail;
            }
            if (n_merges && c < prev) {
                gl_err_set(err, GL_ECORRUPT, "%s:%zu: merge makes id %u after id %u (merges must follow the ids)",
                           mpath, line, c, prev);
                goto fail;
            }
            seen[c] = 1;
            prev = c;
            n_merges++;
        }
        for (uint32_t id = 0; id < v->n_ids; id++)
            if (v->len[id] > 1 && !seen[id]) {
                gl_err_set(err, GL_ECORRUPT, "%s: missing merges: no line makes token '%s' (id %u)", mpath,
                           quote(v->bytes + v->start[id], v->len[id], q, sizeof q), id);
                goto fail;
            }
    }
    if (finish_load(v, path, o, err))
        goto fail;
    free(seen);
    free(mbuf);
    free(mpath);
    return v;
fail:
    json_decref(root);
    free(seen);
    free(mbuf);
    free(mpath);
    tok_vocab_free(&v);
    return NULL;
}

/* ---- gptline's own format --------------------------------------------------- */

/* Reads the next line of buf; returns 0 at the end. */
static int next_line(const char *buf, size_t len, size_t *p, const char **s, size_t *L)
{
    if (*p >= len)
        return 0;
    *s = buf + *p;
    const char *nl = memchr(*s, '\n', len - *p);
    *L = nl ? (size_t)(nl - *s) : len - *p;
    *p += *L + (nl != NULL);
    return 1;
}

static tok_vocab_t *load_gltok(const char *path, const char *buf, size_t len, const tok_load_opts_t *o,
                               gl_err_t *err)
{
    tok_vocab_t *v = vocab_alloc();
    const char *s;
    size_t L, p = 0, line = 0, n_tokens = 0;
    int have_tokens = 0;
    struct {
        char *name;
        uint32_t id;
    } sp[TOK_MAX_SPECIALS];
    size_t n_sp = 0;
    if (!v) {
        gl_err_set(err, GL_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    /* header */
    if (!next_line(buf, len, &p, &s, &L) || L < sizeof TOK_FORMAT_MAGIC ||
        memcmp(s, TOK_FORMAT_MAGIC " ", sizeof TOK_FORMAT_MAGIC)) {
        gl_err_set(err, GL_ECORRUPT, "%s:1: not a gptline tokenizer file", path);
        goto fail;
    }
    line = 1;
    unsigned ver = (unsigned)atoi(s + sizeof TOK_FORMAT_MAGIC);
    if (ver != TOK_FORMAT_VERSION) {
        gl_err_set(err, GL_EVERSION, "%s:1: format version %u; this build reads version %d", path, ver,
                   TOK_FORMAT_VERSION);
        goto fail;
    }
    for (;;) {
        if (!next_line(buf, len, &p, &s, &L)) {
            gl_err_set(err, GL_ECORRUPT, "%s: truncated in the header", path);
            goto fail;
        }
        line++;
        char word[16];
        const char *sp1 = memchr(s, ' ', L);
        size_t wl = sp1 ? (size_t)(sp1 - s) : L;
        const char *arg = sp1 ? sp1 + 1 : s + L;
        size_t al = sp1 ? L - wl - 1 : 0;
        if (wl >= sizeof word) {
            gl_err_set(err, GL_EPARSE, "%s:%zu: unknown header line", path, line);
            goto fail;
        }
        memcpy(word, s, wl);
        word[wl] = '\0';
        if (!strcmp(word, "name") && al) {
            free(v->name);
            v->name = strndup(arg, al);
        } else if (!strcmp(word, "pattern") && al) {
            char pn[32];
            snprintf(pn, sizeof pn, "%.*s", (int)(al < 31 ? al : 31), arg);
            int pt = tok_pretok_from_name(pn);
            if (pt < 0) {
                gl_err_set(err, GL_EUNSUPPORTED, "%s:%zu: unknown pattern '%s'", path, line, pn);
                goto fail;
            }
            v->pattern = (tok_pretok_t)pt;
        } else if (!strcmp(word, "tokens") && al) {
            char *e;
            n_tokens = strtoul(arg, &e, 10);
            if (e != arg + al || !n_tokens || n_tokens > 0x7fffffff) {
                gl_err_set(err, GL_EPARSE, "%s:%zu: bad token count", path, line);
                goto fail;
            }
            have_tokens = 1;
        } else if (!strcmp(word, "special") && al) {
            char *e;
            unsigned long id = strtoul(arg, &e, 10);
            if (e == arg || *e != ' ' || e + 1 >= arg + al || id >= TOK_NONE || n_sp == TOK_MAX_SPECIALS) {
                gl_err_set(err, GL_EPARSE, "%s:%zu: expected 'special ID NAME'", path, line);
                goto fail;
            }
            sp[n_sp].id = (uint32_t)id;
            sp[n_sp++].name = strndup(e + 1, (size_t)(arg + al - e - 1));
        } else if (!strcmp(word, "ranks") && !al) {
            break;
        } else {
            gl_err_set(err, GL_EPARSE, "%s:%zu: unknown header line '%s'", path, line, word);
            goto fail;
        }
    }
    if (!v->name || !v->pattern || !have_tokens) {
        gl_err_set(err, GL_ECORRUPT, "%s: header lacks name, pattern or tokens", path);
        goto fail;
    }
    if (parse_rank_lines(v, path, (const uint8_t *)buf, len, &p, n_tokens, &line, err) ||
        tok_vocab_index(v, path, err))
        goto fail;
    for (size_t k = 0; k < n_sp; k++)
        if (add_special_raw(v, sp[k].name, sp[k].id, err)) {
            gl_err_prefix(err, "%s", path);
            goto fail;
        }
    tok_vocab_rehash(v);
    if (!next_line(buf, len, &p, &s, &L) || L != 20 || memcmp(s, "end ", 4)) {
        gl_err_set(err, GL_ECORRUPT, "%s:%zu: truncated: missing 'end HASH' line", path, line + 1);
        goto fail;
    }
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)v->hash);
    if (memcmp(s + 4, hex, 16)) {
        gl_err_set(err, GL_ECORRUPT, "%s:%zu: identity hash %.16s does not match the content (%s)", path, line + 1,
                   s + 4, hex);
        goto fail;
    }
    if (o && o->name) {
        free(v->name);
        v->name = gl_xstrdup(o->name);
    }
    if (o && o->chat_roles && tok_vocab_add_chat_roles(v, err)) {
        gl_err_prefix(err, "%s", path);
        goto fail;
    }
    for (size_t k = 0; k < n_sp; k++)
        free(sp[k].name);
    return v;
fail:
    for (size_t k = 0; k < n_sp; k++)
        free(sp[k].name);
    tok_vocab_free(&v);
    return NULL;
}

tok_vocab_t *tok_vocab_load(const char *path, const tok_load_opts_t *o, gl_err_t *err)
{
    tok_format_t f = o ? o->format : TOK_FMT_AUTO;
    char *buf = NULL;
    size_t len = 0;
    tok_vocab_t *v = NULL;
    if (f != TOK_FMT_GPT2) {
        if (gl_read_file(path, (size_t)1 << 31, &buf, &len, err))
            return NULL;
        if (f == TOK_FMT_AUTO) {
            size_t i = 0;
            while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t'))
                i++;
            if (len >= sizeof TOK_FORMAT_MAGIC - 1 && !memcmp(buf, TOK_FORMAT_MAGIC, sizeof TOK_FORMAT_MAGIC - 1))
                f = TOK_FMT_GLTOK;
            else if (i < len && buf[i] == '{')
                f = TOK_FMT_GPT2;
            else
                f = TOK_FMT_TIKTOKEN;
        }
    }
    if (f == TOK_FMT_GPT2) {
        free(buf);
        buf = NULL;
        v = load_gpt2(path, o, err);
    } else if (f == TOK_FMT_GLTOK) {
        v = load_gltok(path, buf, len, o, err);
    } else {
        v = load_tiktoken(path, (const uint8_t *)buf, len, o, err);
    }
    free(buf);
    return v;
}

tok_vocab_t *tok_vocab_from_tokens(const char *name, tok_pretok_t pattern, const uint8_t *const *tokens,
                                   const uint32_t *lens, uint32_t n, gl_err_t *err)
{
    tok_vocab_t *v = vocab_alloc();
    size_t total = 0;
    if (!v) {
        gl_err_set(err, GL_ENOMEM, "%s: out of memory", name);
        return NULL;
    }
    v->name = gl_xstrdup(name);
    v->pattern = pattern;
    if (n > TOK_MAX_IDS) {
        gl_err_set(err, GL_ERANGE, "%s: %u tokens (limit %u)", name, n, TOK_MAX_IDS);
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (lens[i] > TOK_MAX_TOKEN_BYTES) {
            gl_err_set(err, GL_ERANGE, "%s: token %u of %u bytes (limit %d)", name, i, lens[i], TOK_MAX_TOKEN_BYTES);
            goto fail;
        }
        total += lens[i];
    }
    v->n_ids = n;
    v->bytes = malloc(total + 1);
    v->start = calloc(n ? n : 1, sizeof *v->start);
    v->len = calloc(n ? n : 1, sizeof *v->len);
    if (!v->bytes || !v->start || !v->len) {
        gl_err_set(err, GL_ENOMEM, "%s: out of memory", name);
        goto fail;
    }
    total = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (lens[i])
            memcpy(v->bytes + total, tokens[i], lens[i]);
        v->start[i] = (uint32_t)total;
        v->len[i] = lens[i];
        total += lens[i];
    }
    if (tok_vocab_index(v, name, err))
        goto fail;
    return v;
fail:
    tok_vocab_free(&v);
    return NULL;
}

/* ---- saving ----------------------------------------------------------------- */

static int save_ranks(const tok_vocab_t *v, FILE *f)
{
    char b64[TOK_MAX_TOKEN_BYTES / 3 * 4 + 8];
    for (uint32_t id = 0; id < v->n_ids; id++) {
        if (!v->len[id])
            continue;
        b64_encode(v->bytes + v->start[id], v->len[id], b64);
        if (fprintf(f, "%s %u\n", b64, id) < 0)
            return -1;
    }
    return 0;
}

static int save_gpt2(const tok_vocab_t *v, const char *path, gl_err_t *err)
{
    uint16_t b2c[256];
    int16_t c2b[324];
    gpt2_alphabet(b2c, c2b);
    gl_atomic_file_t af = {0}, am = {0};
    tok_ids_t parts = {0};
    char *mpath = NULL;
    int rc = GL_OK;
    json_t *o = json_object();
    for (uint32_t id = 0; id < v->size; id++) {
        size_t n;
        const uint8_t *b = tok_token_bytes(v, id, &n);
        if (!b)
            continue;
        if (id < v->n_ids && v->len[id]) {
            char *s = gpt2_encode(b, n, b2c);
            json_object_set_new(o, s, json_integer(id));
            free(s);
        } else {
            json_object_set_new(o, (const char *)b, json_integer(id));
        }
    }
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path)) : gl_xstrdup(".");
    mpath = gl_path_join(dir, "vocab.bpe");
    free(dir);
    if ((rc = gl_atomic_open(&af, path, err)) || (rc = gl_atomic_open(&am, mpath, err)))
        goto out;
    if (json_dumpf(o, af.f, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_ENSURE_ASCII) < 0) {
        rc = gl_err_set(err, GL_EIO, "%s: write failed", path);
        goto out;
    }
    fprintf(am.f, "#version: 0.2\n");
    /* Token id was made by merging the two parts that BPE with the tokens
     * ranked below it leaves. */
    for (uint32_t id = 0; id < v->n_ids; id++) {
        if (v->len[id] < 2)
            continue;
        parts.n = 0;
        if ((rc = tok_bpe_piece(v, v->bytes + v->start[id], v->len[id], id, &parts, err)))
            goto out;
        if (parts.n != 2) {
            rc = gl_err_set(err, GL_EUNSUPPORTED, "%s: token %u is not the merge of two lower-ranked tokens",
                            path, id);
            goto out;
        }
        char *a = gpt2_encode(v->bytes + v->start[parts.ids[0]], v->len[parts.ids[0]], b2c);
        char *b = gpt2_encode(v->bytes + v->start[parts.ids[1]], v->len[parts.ids[1]], b2c);
        fprintf(am.f, "%s %s\n", a, b);
        free(a);
        free(b);
    }
    if ((rc = gl_atomic_commit(&af, err)) || (rc = gl_atomic_commit(&am, err)))
        goto out;
out:
    if (rc) {
        if (af.f)
            gl_atomic_abort(&af);
        if (am.f)
            gl_atomic_abort(&am);
    }
    tok_ids_free(&parts);
    free(mpath);
    json_decref(o);
    return rc;
}

int tok_vocab_save(const tok_vocab_t *v, const char *path, tok_format_t format, gl_err_t *err)
{
    if (format == TOK_FMT_GPT2)
        return save_gpt2(v, path, err);
    gl_atomic_file_t af = {0};
    int rc = gl_atomic_open(&af, path, err);
    if (rc)
        return rc;
    if (format == TOK_FMT_GLTOK) {
        fprintf(af.f, "%s %d\nname %s\npattern %s\ntokens %u\n", TOK_FORMAT_MAGIC, TOK_FORMAT_VERSION, v->name,
                tok_pretok_name(v->pattern), v->n_ordinary);
        for (size_t k = 0; k < v->n_special; k++)
            fprintf(af.f, "special %u %s\n", v->special[k].id, v->special[k].name);
        fprintf(af.f, "ranks\n");
    } else if (format != TOK_FMT_TIKTOKEN) {
        gl_atomic_abort(&af);
        return gl_err_set(err, GL_EINVAL, "%s: unknown format %d", path, (int)format);
    }
    if (save_ranks(v, af.f) < 0 ||
        (format == TOK_FMT_GLTOK && fprintf(af.f, "end %016llx\n", (unsigned long long)v->hash) < 0)) {
        gl_atomic_abort(&af);
        return gl_err_set(err, GL_EIO, "%s: write failed: %s", path, strerror(errno));
    }
    return gl_atomic_commit(&af, err);
}

/* ---- properties ------------------------------------------------------------- */

const char *tok_vocab_name(const tok_vocab_t *v) { return v->name; }
tok_pretok_t tok_vocab_pattern(const tok_vocab_t *v) { return v->pattern; }
uint32_t tok_vocab_size(const tok_vocab_t *v) { return v->size; }
uint32_t tok_vocab_ordinary(const tok_vocab_t *v) { return v->n_ordinary; }
uint64_t tok_vocab_hash(const tok_vocab_t *v) { return v->hash; }
size_t tok_special_count(const tok_vocab_t *v) { return v->n_special; }

const uint8_t *tok_token_bytes(const tok_vocab_t *v, uint32_t id, size_t *len)
{
    if (id < v->n_ids && v->len[id]) {
        *len = v->len[id];
        return v->bytes + v->start[id];
    }
    for (size_t k = 0; k < v->n_special; k++)
        if (v->special[k].id == id) {
            *len = v->special[k].len;
            return (const uint8_t *)v->special[k].name;
        }
    *len = 0;
    return NULL;
}

int64_t tok_token_id(const tok_vocab_t *v, const void *bytes, size_t len)
{
    if (!len)
        return -1;
    uint32_t id = tok_lookup(v, bytes, len);
    return id == TOK_NONE ? -1 : (int64_t)id;
}

const char *tok_special_name(const tok_vocab_t *v, size_t i, uint32_t *id)
{
    if (i >= v->n_special)
        return NULL;
    if (id)
        *id = v->special[i].id;
    return v->special[i].name;
}

int64_t tok_special_id(const tok_vocab_t *v, const char *name)
{
    for (size_t k = 0; k < v->n_special; k++)
        if (!strcmp(v->special[k].name, name))
            return v->special[k].id;
    return -1;
}

int64_t tok_eot_id(const tok_vocab_t *v) { return tok_special_id(v, "<|endoftext|>"); }

uint64_t tok_special_mask(const tok_vocab_t *v, const char *name)
{
    for (size_t k = 0; k < v->n_special; k++)
        if (!strcmp(v->special[k].name, name))
            return (uint64_t)1 << k;
    return 0;
}
