/* lang.c — language identification with CLD2 (Debian's libcld2).
 *
 * CLD2 has only a C++ interface. Rather than add a C++ compiler to the
 * build for a two-function shim, this binds the two functions it needs by
 * their Itanium C++ ABI names: CLD2::DetectLanguage(const char*, int,
 * bool, bool*) -> Language (an int enum) and CLD2::LanguageCode(Language)
 * -> const char*. Both take and return only C types, so the call is the
 * same as C's; the names are part of libcld2.so.0's ABI and cannot change
 * without a soname bump. CLD2 wants valid UTF-8, which every extractor
 * guarantees. Codes are ISO 639-1 where one exists ("en", "bg", "zh").
 */
#include "ingest/internal.h"

#include <stdbool.h>
#include <string.h>

extern int _ZN4CLD214DetectLanguageEPKcibPb(const char *buffer, int len, bool plain, bool *reliable);
extern const char *_ZN4CLD212LanguageCodeENS_8LanguageE(int lang);

const char *ingest_lang_detect(const char *t, size_t n, int *reliable)
{
    bool rel = false;
    if (n > (32u << 10))
        n = 32u << 10; /* the first 32 KB decide: plenty for CLD2, and bounded */
    /* keep whole UTF-8 sequences */
    while (n && ((unsigned char)t[n - 1] & 0xc0) == 0x80)
        n--;
    if (n && (unsigned char)t[n - 1] >= 0xc0)
        n--;
    int lang = _ZN4CLD214DetectLanguageEPKcibPb(t, (int)n, true, &rel);
    *reliable = rel;
    const char *code = _ZN4CLD212LanguageCodeENS_8LanguageE(lang);
    if (!code || !strcmp(code, "un"))
        return NULL;
    return code;
}
