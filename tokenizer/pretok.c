/* pretok.c — the fast pre-tokenizer (first version: the reference). */
#include "tokenizer/pretok.h"

size_t tok_pretok_next(tok_pretok_t p, const uint8_t *s, size_t len, size_t pos)
{
    return tok_pretok_ref_next(p, s, len, pos);
}
