/* pretok.h — pre-tokenization: splitting text into the pieces that BPE
 * merges within, exactly as tiktoken's regexes split it.
 *
 * Three patterns: gpt2 (= r50k_base, also p50k), cl100k_base and
 * o200k_base. tok_pretok_next() is a hand-written scanner per pattern;
 * tok_pretok_ref_next() is a slow backtracking regex matcher that runs the
 * pattern text itself, kept as the reference the tests compare against.
 * Both use the Unicode 16.0 classes of unicode_tables.c, as tiktoken does.
 *
 * Input is any byte string. Valid UTF-8 is split exactly as tiktoken splits
 * the same text. Invalid UTF-8 (a byte that does not start a well-formed,
 * shortest-form sequence of a scalar value: stray continuation bytes,
 * truncated sequences, overlong forms, UTF-8-encoded surrogates ED A0..BF,
 * values past U+10FFFF, bytes F5..FF) is read one byte at a time, each byte
 * a character of no class: not a letter, number or space, like U+FFFD,
 * which is what tiktoken sees for such input after replacement. So such a
 * byte joins runs of punctuation (`[^\s\p{L}\p{N}]`) and can be the one
 * optional leading character before letters in cl100k/o200k. Pieces never
 * split a valid UTF-8 sequence, and the pieces of a string concatenate to
 * the string.
 *
 * All functions are pure and thread-safe.
 */
#ifndef TOK_PRETOK_H
#define TOK_PRETOK_H

#include <stddef.h>
#include <stdint.h>

typedef enum { TOK_PRETOK_GPT2 = 1, TOK_PRETOK_CL100K = 2, TOK_PRETOK_O200K = 3 } tok_pretok_t;

/* Length in bytes (> 0) of the pre-token starting at s[pos]; requires
 * pos < len. The piece is what tiktoken's regex matches at pos, with the
 * rest of s (up to len) as the text that follows it. Split a text by
 * `for (pos = 0; pos < len; pos += n) n = tok_pretok_next(p, s, len, pos);`.
 * Returns 1 if p is not a pattern. */
size_t tok_pretok_next(tok_pretok_t p, const uint8_t *s, size_t len, size_t pos);

/* The first safe cut at or after from: a position b (2 <= b < len) where
 * s[b-1] is '\n', s[b-2] is printable ASCII other than space (0x21..0x7E)
 * and so is s[b] but for '/' (o200k's punctuation pieces take a trailing
 * [\r\n/]*), or len when there is none. At a safe cut every pattern
 * starts a piece, and splitting s[0..b) and s[b..len) as separate texts
 * gives the same pieces as splitting s whole: a stream or a large text can
 * be cut there into chunks pre-tokenized on their own (streaming, threads).
 * Cutting anywhere else can change the pieces next to the cut (a word, a
 * whitespace run or a UTF-8 sequence split in two). */
size_t tok_pretok_cut(const uint8_t *s, size_t len, size_t from);

/* The same as tok_pretok_next, by the reference matcher (slow, obviously
 * right); p must be a pattern. */
size_t tok_pretok_ref_next(tok_pretok_t p, const uint8_t *s, size_t len, size_t pos);

/* The regex of pattern p as tiktoken writes it (static string). */
const char *tok_pretok_regex(tok_pretok_t p);
/* "gpt2", "cl100k_base" or "o200k_base" (static string); NULL if p is not
 * a pattern. */
const char *tok_pretok_name(tok_pretok_t p);
/* The pattern named name ("gpt2", "r50k_base", "p50k_base", "cl100k_base",
 * "o200k_base"), or -1 if unknown. */
int tok_pretok_from_name(const char *name);

#endif
