/* fuzz_tokenizer.c — libFuzzer target: decode(encode(x)) == x for any
 * bytes, with special tokens allowed or not, for a small built-in
 * vocabulary (many merges over a few letters) and, when $GL_DATA holds it,
 * cl100k_base; the batch and streaming encoders agree with the one-shot
 * encoder. The first byte picks the vocabulary and the allowed set. */
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tok_vocab_t *vocabs[2];
static int inited;

static void init(void)
{
    gl_err_t err = {0};
    static const char *extra[] = {"ab", "aa", "ba", "aaa", "aaaa", "abab", "<|", "|>", "end", "<|end", " a", "\n\n"};
    uint8_t bytes[256];
    const uint8_t *tok[256 + 12];
    uint32_t len[256 + 12];
    for (int i = 0; i < 256; i++) {
        bytes[i] = (uint8_t)i;
        tok[i] = &bytes[i];
        len[i] = 1;
    }
    for (int i = 0; i < 12; i++) {
        tok[256 + i] = (const uint8_t *)extra[i];
        len[256 + i] = (uint32_t)strlen(extra[i]);
    }
    vocabs[0] = tok_vocab_from_tokens("fuzz", TOK_PRETOK_CL100K, tok, len, 256 + 12, &err);
    if (!vocabs[0] || tok_vocab_add_chat_roles(vocabs[0], &err))
        abort();
    const char *d = getenv("GL_DATA");
    if (d) {
        char *p = malloc(strlen(d) + 64);
        strcpy(p, d);
        strcat(p, "/tokenizers/vocab/cl100k_base.tiktoken");
        vocabs[1] = tok_vocab_load(p, NULL, &err);
        free(p);
    }
    inited = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!inited)
        init();
    if (size < 1)
        return 0;
    tok_vocab_t *v = vocabs[data[0] & 1] ? vocabs[data[0] & 1] : vocabs[0];
    uint64_t allowed = data[0] & 2 ? TOK_ALLOW_ALL : TOK_ALLOW_NONE;
    const uint8_t *s = data + 1;
    size_t n = size - 1;
    gl_err_t err = {0};
    tok_ids_t ids = {0}, st = {0}, b = {0};
    uint8_t *out = NULL;
    size_t olen = 0, ocap = 0;
    if (tok_encode(v, s, n, allowed, &ids, &err) || tok_decode(v, ids.ids, ids.n, &out, &olen, &ocap, &err))
        abort();
    if (olen != n || (n && memcmp(out, s, n)))
        abort();
    /* streaming in chunks of a size taken from the input */
    tok_stream_t *stm = tok_stream_new(v, allowed, 64 + (data[0] >> 2), &err);
    size_t step = 1 + (data[0] >> 3);
    for (size_t off = 0; off < n; off += step)
        if (tok_stream_feed(stm, s + off, off + step > n ? n - off : step, &st, &err))
            abort();
    if (tok_stream_finish(stm, &st, &err))
        abort();
    tok_stream_free(&stm);
    olen = 0;
    if (tok_decode(v, st.ids, st.n, &out, &olen, &ocap, &err) || olen != n || (n && memcmp(out, s, n)))
        abort();
    tok_doc_t doc = {s, n};
    if (tok_encode_batch(v, &doc, 1, allowed, 1, &b, &err) || b.n != ids.n ||
        (ids.n && memcmp(b.ids, ids.ids, ids.n * sizeof *ids.ids)))
        abort();
    free(out);
    tok_ids_free(&ids);
    tok_ids_free(&st);
    tok_ids_free(&b);
    return 0;
}
