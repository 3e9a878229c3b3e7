/* test_pretok_unicode.c — the generated Unicode 16.0 tables: the class
 * flags the fast scanner reads must follow from the general-category table
 * the reference reads, for every code point; and spot checks of known
 * characters, including ones new in Unicode 15 and 16 (which the system's
 * older tables would get wrong). */
#include "tokenizer/unicode.h"
#include "tests/tap.h"

#include <string.h>

/* The flags a code point must have, derived from its general category. */
static unsigned expected_flags(uint32_t cp)
{
    tok_gc_t gc = tok_uc_gc(cp);
    int letter = gc == TOK_GC_LU || gc == TOK_GC_LL || gc == TOK_GC_LT || gc == TOK_GC_LM ||
                 gc == TOK_GC_LO;
    int number = gc == TOK_GC_ND || gc == TOK_GC_NL || gc == TOK_GC_NO;
    int mark = gc == TOK_GC_MN || gc == TOK_GC_MC || gc == TOK_GC_ME;
    int space = tok_uc_gc_space(cp);
    unsigned f = 0;
    if (letter)
        f |= TOK_UC_L;
    if (number)
        f |= TOK_UC_N;
    if (space)
        f |= TOK_UC_WS;
    if (gc == TOK_GC_LU || gc == TOK_GC_LT || gc == TOK_GC_LM || gc == TOK_GC_LO || mark)
        f |= TOK_UC_UP;
    if (gc == TOK_GC_LL || gc == TOK_GC_LM || gc == TOK_GC_LO || mark)
        f |= TOK_UC_LO;
    if (!letter && !number && !space)
        f |= TOK_UC_OT;
    if (cp == '\r' || cp == '\n')
        f |= TOK_UC_CRLF;
    return f;
}

int main(void)
{
    uint32_t bad = 0, first_bad = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++)
        if (tok_uc_class(cp) != expected_flags(cp) && !bad++)
            first_bad = cp;
    ok(!bad, "class flags follow from the general category for all code points");
    if (bad)
        tap_diag("%u code points differ, the first U+%04X", bad, first_bad);

    int bytes_ok = 1;
    for (int b = 0; b < 256; b++)
        if (tok_uc_byte_class[b] != (b < 0x80 ? tok_uc_class((uint32_t)b) : TOK_UC_MB))
            bytes_ok = 0;
    ok(bytes_ok, "byte classes: ASCII flags, and MB for bytes >= 0x80");

    /* White_Space, as Rust's \s: not Python's str.isspace nor C's isspace. */
    static const uint32_t spaces[] = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680,
                                      0x2000, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
    static const uint32_t not_spaces[] = {0x1C, 0x1D, 0x1E, 0x1F, 0x180E, 0x200B, 0xFEFF, 0x00};
    int n_ws = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++)
        n_ws += (tok_uc_class(cp) & TOK_UC_WS) != 0;
    is_int(n_ws, 25, "White_Space has 25 code points");
    for (size_t i = 0; i < sizeof spaces / sizeof *spaces; i++)
        ok(tok_uc_class(spaces[i]) & TOK_UC_WS, "U+%04X is \\s", spaces[i]);
    for (size_t i = 0; i < sizeof not_spaces / sizeof *not_spaces; i++)
        ok(!(tok_uc_class(not_spaces[i]) & TOK_UC_WS), "U+%04X is not \\s", not_spaces[i]);

    /* General categories of well-known characters. */
    static const struct { uint32_t cp; tok_gc_t gc; const char *what; } known[] = {
        {0x0041, TOK_GC_LU, "A"},
        {0x0061, TOK_GC_LL, "a"},
        {0x01C5, TOK_GC_LT, "Dz with caron"},
        {0x02B0, TOK_GC_LM, "modifier h"},
        {0x00AA, TOK_GC_LO, "feminine ordinal"},
        {0x4E2D, TOK_GC_LO, "CJK 'middle'"},
        {0x0301, TOK_GC_MN, "combining acute"},
        {0x0903, TOK_GC_MC, "Devanagari visarga"},
        {0x20DD, TOK_GC_ME, "combining enclosing circle"},
        {0x0660, TOK_GC_ND, "Arabic-Indic zero"},
        {0x2160, TOK_GC_NL, "Roman numeral one"},
        {0x00B2, TOK_GC_NO, "superscript two"},
        {0x017F, TOK_GC_LL, "long s"},
        {0x212A, TOK_GC_LU, "Kelvin sign"},
        {0x1F600, TOK_GC_SO, "grinning face"},
        {0xE000, TOK_GC_CO, "private use"},
        {0xFFFD, TOK_GC_SO, "replacement character"},
        {0x1C89, TOK_GC_LU, "Cyrillic capital TJE (new in 16.0)"},
        {0x1C8A, TOK_GC_LL, "Cyrillic small TJE (new in 16.0)"},
        {0x10D50, TOK_GC_LU, "Garay capital letter (new in 16.0)"},
        {0x10D70, TOK_GC_LL, "Garay small letter (new in 16.0)"},
        {0x11F04, TOK_GC_LO, "Kawi letter (new in 15.0)"},
        {0x0378, TOK_GC_CN, "unassigned"},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        is_int(tok_uc_gc(known[i].cp), known[i].gc, "U+%04X %s", known[i].cp, known[i].what);

    /* Case folding onto ASCII letters: exactly long s and Kelvin. */
    is_int(tok_uc_fold_ascii_count, 2, "two non-ASCII characters fold to ASCII letters");
    int folds = 0;
    for (int i = 0; i < tok_uc_fold_ascii_count; i++)
        folds += (tok_uc_fold_ascii[i].cp == 0x017F && tok_uc_fold_ascii[i].ascii == 's') ||
                 (tok_uc_fold_ascii[i].cp == 0x212A && tok_uc_fold_ascii[i].ascii == 'k');
    is_int(folds, 2, "U+017F folds to s, U+212A to k");

    /* Samples cover every category but surrogates. */
    is_int(tok_uc_gc_samples_count, TOK_GC_COUNT - 1, "samples of every general category");
    int samples_ok = 1;
    for (int g = 0; g < tok_uc_gc_samples_count; g++)
        for (int j = 0; j < tok_uc_gc_samples[g].n; j++)
            if (tok_uc_gc(tok_uc_gc_samples[g].cp[j]) != (tok_gc_t)g)
                samples_ok = 0;
    ok(samples_ok, "every sample has its category");
    return tap_done();
}
