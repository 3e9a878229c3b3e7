/* fuzz_pretok.c — libFuzzer target: the fast pre-tokenizer must split any
 * byte string exactly as the reference matcher does, into non-empty pieces
 * that cover the input; and cutting the input at a safe cut
 * (tok_pretok_cut) must not change the pieces. The first byte picks the
 * pattern. */
#include "tests/fuzz/fuzz.h"
#include "tokenizer/pretok.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    tok_pretok_t p = (tok_pretok_t)(1 + data[0] % 3);
    const uint8_t *s = data + 1;
    size_t len = size - 1, pos = 0;
    size_t cut = tok_pretok_cut(s, len, len / 2);
    while (pos < len) {
        size_t fast = tok_pretok_next(p, s, len, pos);
        size_t ref = tok_pretok_ref_next(p, s, len, pos);
        if (fast != ref || fast == 0 || fast > len - pos)
            abort();
        /* the same piece when the text is cut in two at a safe cut */
        if (pos < cut && pos + fast > cut)
            abort();
        size_t part = pos < cut ? tok_pretok_next(p, s, cut, pos)
                                : tok_pretok_next(p, s + cut, len - cut, pos - cut);
        if (part != fast)
            abort();
        pos += fast;
    }
    return 0;
}
