#!/usr/bin/env bash
# ingest_cli.sh — `gptline ingest` end to end: the WET-recall check on the
# Common Crawl page, every real input kind into verified shards, nested and
# vendored code archives, --strict on bad input, three workers with one
# killed mid-run and relaunched giving exactly the single-worker dataset,
# and exact + near duplicates planted across two workers removed by
# `ingest dedup` (idempotently).
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
PY=${PYTHON:-python3}

for c in "ingest" "ingest dedup" "ingest report" "ingest extract"; do
  # shellcheck disable=SC2086
  check "gptline $c --help" $G $c --help
done
check_fails "ingest without --inputs exits 2" 2 $G ingest --out "$TMP/x"
check_fails "ingest --rank >= --world exits 2" 2 $G ingest --inputs /dev/null --out "$TMP/x" --rank 2 --world 2
check_fails "unknown tokenizer fails" 1 $G ingest --inputs /dev/null --out "$TMP/x" --tokenizer nosuch.vocab

# --- language identification: only when asked (--detect-lang, --lang) ---
mkdir -p "$TMP/lang"
$PY - "$TMP/lang/en.jsonl" <<'PYEOF'
import json, sys
text = ("The committee met on Tuesday to discuss the proposed changes to the library opening hours. "
        "Several residents spoke in favour of longer evening hours, while others asked for more staff. "
        "After a long discussion the members agreed to publish a report next month.")
open(sys.argv[1], "w").write(json.dumps({"id": "en-1", "text": text}) + "\n")
PYEOF
echo "$TMP/lang/en.jsonl" > "$TMP/lang/in.txt"
check "ingest without language identification" $G ingest --no-filters --inputs "$TMP/lang/in.txt" --out "$TMP/lang/off"
is "no language recorded by default" "$($G shards cat --meta "$TMP/lang/off" | grep -c '"language":"en"')" 0
check "ingest --detect-lang" $G ingest --no-filters --detect-lang --inputs "$TMP/lang/in.txt" --out "$TMP/lang/on"
is "--detect-lang records English" "$($G shards cat --meta "$TMP/lang/on" | grep -c '"language":"en"')" 1
check "ingest --lang bg" $G ingest --no-filters --lang bg --inputs "$TMP/lang/in.txt" --out "$TMP/lang/bg"
is "--lang bg drops the English document" "$($G shards cat --meta "$TMP/lang/bg" | wc -l)" 0

D=${GL_DATA:-}
[ -n "$D" ] && [ -d "$D/crawl" ] || { done_testing; }

# --- WET recall: our text of the WARC page keeps the WET's content lines ---
$G ingest extract --text "$D/crawl/cc-whirlwind.warc.gz" > "$TMP/page.txt" 2>/dev/null
zcat "$D/crawl/cc-whirlwind.warc.gz" > "$TMP/page.warc"
zcat "$D/crawl/cc-whirlwind.warc.wet.gz" > "$TMP/page.wet"
recall=$($PY - "$TMP/page.txt" "$TMP/page.wet" "$TMP/page.warc" <<'PYEOF'
import sys, re, html
ours = open(sys.argv[1], encoding='utf-8').read()
wet = open(sys.argv[2], encoding='utf-8', errors='replace', newline='').read()
warc = open(sys.argv[3], encoding='utf-8', errors='replace').read()
# the conversion record's block: after its WARC header
body = wet.split('WARC-Type: conversion', 1)[1].split('\r\n\r\n', 1)[1]
body = body.split('\r\n\r\n', 1)[0]
lines = [l.strip() for l in body.split('\n') if len(l.split()) >= 10]
# lines that the page puts in its <footer> element are dropped by design
foot = warc[warc.find('<footer'):warc.find('</footer>')]
foot_text = re.sub(r'\s+', ' ', html.unescape(re.sub(r'<[^>]+>', ' ', foot)))
content = [l for l in lines if l[:40] not in foot_text]
kept = [l for l in content if l in ours]
menus = [l for l in body.split('\n') if l.strip() in ('Menú principal', 'Ir al contenido', 'Donativos', 'Creyar cuenta', 'Dentrar-ie')]
menu_kept = [l for l in menus if ('\n' + l.strip() + '\n') in ('\n' + ours + '\n')]
print(len(content), len(kept), len(lines) - len(content), len(menus), len(menu_kept))
PYEOF
)
read -r n_content n_kept n_footer n_menu n_menu_kept <<<"$recall"
is "WET recall: all $n_content content lines (>= 10 words) kept ($n_footer footer lines excluded)" "$n_kept" "$n_content"
ok_content=$([ "${n_content:-0}" -ge 5 ] && echo yes || echo no)
is "WET recall: the page has content lines to check" "$ok_content" "yes"
is "WET recall: none of the $n_menu menu lines kept" "$n_menu_kept" "0"

# --- every real input kind into shards ---
ls "$D"/crawl/*.warc.gz "$D"/crawl/*.wet.gz "$D"/wiki/*.xml.bz2 "$D"/code/* > "$TMP/real.txt"
check "ingest the real data" $G ingest --inputs "$TMP/real.txt" --out "$TMP/real"
check "its shards verify" $G shards verify "$TMP/real"
n_in=$(wc -l < "$TMP/real.txt")
is "one done-marker per input" "$(ls "$TMP/real/done" | wc -l)" "$n_in"
check "report" $G ingest report "$TMP/real"
grep -q "skip.redirect" "$TMP/.out"; _result $? "report lists removal reasons"
grep -q "error.truncated" "$TMP/.out"; _result $? "report counts the clipped WARC"
$G ingest report --json "$TMP/real" > "$TMP/rep.json"
docs=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['total']['docs_kept'])" "$TMP/rep.json")
$G shards stat --json "$TMP/real" > "$TMP/stat.json"
sdocs=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['documents'])" "$TMP/stat.json")
is "report's kept documents = documents in the shards" "$docs" "$sdocs"
$G shards cat --text "$TMP/real" > "$TMP/all.txt"
grep -c -i -E '<script|<div|\{\{cite' "$TMP/all.txt" > "$TMP/markup"
is "no markup in the dataset's text" "$(cat "$TMP/markup")" "0"
check "relaunch is a no-op" $G ingest --inputs "$TMP/real.txt" --out "$TMP/real"
$G shards stat --json "$TMP/real" > "$TMP/stat2.json"
cmp -s "$TMP/stat.json" "$TMP/stat2.json"; _result $? "relaunch changes nothing"
echo "$D/crawl/clipped.warc.gz" > "$TMP/clip.txt"
check_fails "--strict exits 3 on the clipped WARC" 3 $G ingest --strict --inputs "$TMP/clip.txt" --out "$TMP/clip"
grep -q "clipped.warc.gz" "$TMP/.err"; _result $? "the error names the input"
check "an ingest that kept no document is an empty, valid dataset" $G shards stat "$TMP/clip"
printf '%s\n' "$TMP/no-such.warc.gz" "$D/crawl/cc-whirlwind.warc.wet.gz" > "$TMP/missing.txt"
check "a missing input is logged and skipped (exit 0)" $G ingest --no-filters --inputs "$TMP/missing.txt" --out "$TMP/miss"
grep -q "no-such.warc.gz" "$TMP/.err"; _result $? "the log names the missing input"
is "the missing input is not marked done, the other is" "$(ls "$TMP/miss/done")" "in-000001.json"
check_fails "--strict exits 3 on a missing input" 3 $G ingest --strict --inputs "$TMP/missing.txt" --out "$TMP/miss"

# --- nested, vendored, minified and binary code ---
mkdir -p "$TMP/src/proj/node_modules/dep" "$TMP/inner/lib"
printf 'def f(x):\n    return x + 1\n' > "$TMP/inner/lib/mod.py"
(cd "$TMP/inner" && zip -qr "$TMP/src/proj/inner.zip" lib)
printf 'int main(void) { return 0; }\n' > "$TMP/src/proj/main.c"
printf 'module.exports = 1;\n' > "$TMP/src/proj/node_modules/dep/index.js"
$PY -c "print('var a=1;' * 400)" > "$TMP/src/proj/app.js"
printf 'bin\000ary\n' > "$TMP/src/proj/blob.c"
printf 'MIT License\nPermission is hereby granted, free of charge, to any person\n' > "$TMP/src/proj/LICENSE"
tar -C "$TMP/src" -czf "$TMP/proj.tar.gz" proj
$G ingest extract "$TMP/proj.tar.gz" > "$TMP/code.jsonl" 2> "$TMP/code.err"
paths=$($PY -c "
import json,sys
print(' '.join(sorted(json.loads(l)['path'] for l in open(sys.argv[1]))))" "$TMP/code.jsonl")
is "code: nested zip read, vendored/minified/binary skipped" "$paths" "proj/inner.zip!lib/mod.py proj/main.c"
grep -q '"license":"proj/LICENSE (MIT)"' "$TMP/code.jsonl"; _result $? "code: licence file recorded"
for r in skip.vendored skip.minified skip.binary; do
  grep -q "^$r 1" "$TMP/code.err"; _result $? "code: $r counted"
done
# a tar.gz bomb: 4 entries of 24 MB of zeros, ~1000:1 compressed
$PY - "$TMP/bomb.tar.gz" <<'PYEOF'
import sys, tarfile, io
class Zeros(io.RawIOBase):
    def __init__(self, n): self.n = n
    def readinto(self, b):
        k = min(len(b), self.n); b[:k] = bytes(k); self.n -= k; return k
with tarfile.open(sys.argv[1], 'w:gz', compresslevel=9) as t:
    for i in range(4):
        ti = tarfile.TarInfo('bomb/z%d.c' % i); ti.size = 24 << 20
        t.addfile(ti, Zeros(ti.size))
PYEOF
$G ingest extract "$TMP/bomb.tar.gz" > /dev/null 2> "$TMP/bomb.err"
grep -q "^error.bomb 1" "$TMP/bomb.err"; _result $? "code: decompression bomb counted and abandoned"

# --- a BPE vocabulary: the shards hold what `gptline tokenizer encode` gives ---
V="$D/tokenizers/vocab/cl100k_base.tiktoken"
if [ -f "$V" ]; then
  check "ingest with the cl100k_base vocabulary" $G ingest --inputs "$TMP/real.txt" --out "$TMP/bpe" --tokenizer "$V"
  check "BPE shards verify" $G shards verify "$TMP/bpe"
  $G shards stat --json "$TMP/bpe" > "$TMP/bpe.json"
  is "BPE dataset: same documents as the byte-level one" \
    "$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['documents'])" "$TMP/bpe.json")" "$sdocs"
  is "BPE dataset: cl100k_base identity in the manifest" \
    "$($PY -c "import json,sys; t=json.load(open(sys.argv[1]))['tokenizer']; print(t['name'], t['eot_id'])" "$TMP/bpe.json")" \
    "cl100k_base 100257"
  same=0
  for doc in 0 40 120; do
    $G shards cat --text --doc $doc --limit 1 "$TMP/real" | head -c -1 > "$TMP/doc.txt"
    $G tokenizer encode -t "$V" "$TMP/doc.txt" > "$TMP/want.ids"
    $G shards cat --doc $doc --limit 1 "$TMP/bpe" > "$TMP/got.ids"
    cmp -s <(tr -s ' \n' '\n\n' < "$TMP/want.ids" | grep .) <(tr -s ' \n' '\n\n' < "$TMP/got.ids" | grep .) && same=$((same + 1))
  done
  is "BPE dataset: documents 0, 40, 120 hold the ids the tokenizer gives their text" "$same" "3"
  check_fails "a vocabulary without end-of-text is refused" 1 $G ingest --inputs /dev/null --out "$TMP/x2" --tokenizer /etc/hostname
fi

# --- compressed forms: multistream bzip2 wiki, xz and zstd JSONL ---
$PY - "$TMP" <<'PYEOF'
import sys, bz2, lzma, json
d = sys.argv[1]
head = '<mediawiki xml:lang="en">\n'
page = lambda i: ('<page><title>T%d</title><ns>0</ns><id>%d</id><revision><timestamp>2020-01-01T00:00:00Z'
                  '</timestamp><text>Page %d body with [[link|words]].</text></revision></page>\n' % (i, i, i))
# three independent bzip2 streams, as the multistream dumps are cut
parts = [head + page(1), page(2) + page(3), '</mediawiki>\n']
open(d + '/multi.xml.bz2', 'wb').write(b''.join(bz2.compress(p.encode()) for p in parts))
lines = ''.join(json.dumps({'id': str(i), 'text': 'document %d' % i}) + '\n' for i in range(5))
open(d + '/docs.jsonl.xz', 'wb').write(lzma.compress(lines.encode()))
open(d + '/docs.jsonl', 'w').write(lines)
PYEOF
is "multistream bzip2 dump: pages of every stream" "$($G ingest extract "$TMP/multi.xml.bz2" 2>/dev/null | wc -l)" "3"
is "xz JSONL" "$($G ingest extract "$TMP/docs.jsonl.xz" 2>/dev/null | wc -l)" "5"
if command -v zstd >/dev/null; then
  zstd -q "$TMP/docs.jsonl" -o "$TMP/docs.jsonl.zst"
  is "zstd JSONL" "$($G ingest extract "$TMP/docs.jsonl.zst" 2>/dev/null | wc -l)" "5"
fi
check "report --inputs" $G ingest report --inputs "$TMP/real"
grep -q "clipped.warc.gz" "$TMP/.out"; _result $? "report --inputs names each input"

# --- three workers, one killed mid-run and relaunched = one worker ---
mkdir -p "$TMP/jl"
$PY - "$TMP/jl" <<'PYEOF'
import sys, random, json
r = random.Random(7)
words = ['w%d' % i for i in range(3000)]
for f in range(24):
    with open('%s/part-%02d.jsonl' % (sys.argv[1], f), 'w') as out:
        for d in range(15):
            text = ' '.join(r.choice(words) for _ in range(80))
            out.write(json.dumps({'id': '%d-%d' % (f, d), 'text': text}) + '\n')
PYEOF
ls "$TMP"/jl/*.jsonl > "$TMP/jl.txt"
check "single worker" $G ingest --no-filters --inputs "$TMP/jl.txt" --out "$TMP/one"
for r in 0 2; do
  $G ingest --no-filters --inputs "$TMP/jl.txt" --out "$TMP/three" --rank $r --world 3 2>/dev/null &
done
$G ingest --no-filters --throttle-ms 25 --inputs "$TMP/jl.txt" --out "$TMP/three" --rank 1 --world 3 2>/dev/null &
victim=$!
# kill rank 1 once it finished its first input and is inside the next one
for _ in $(seq 200); do
  [ -e "$TMP/three/done/in-000001.json" ] && break
  sleep 0.05
done
sleep 0.2
exec 3>&2 2>/dev/null # bash reports the killed job on its stderr
kill -KILL $victim
wait
exec 2>&3 3>&-
ndone=$(ls "$TMP/three/done" | wc -l)
mid=$([ "$ndone" -gt 0 ] && [ "$ndone" -lt 24 ] && echo yes || echo no)
is "the killed worker left its inputs unfinished ($ndone of 24 done)" "$mid" "yes"
check "relaunch rank 1" $G ingest --no-filters --inputs "$TMP/jl.txt" --out "$TMP/three" --rank 1 --world 3
is "all inputs done after the relaunch" "$(ls "$TMP/three/done" | wc -l)" "24"
check "three-worker shards verify" $G shards verify "$TMP/three"
$G shards cat --text "$TMP/one" > "$TMP/one.txt"
$G shards cat --text "$TMP/three" > "$TMP/three.txt"
cmp -s "$TMP/one.txt" "$TMP/three.txt"; _result $? "killed + relaunched workers = single worker, byte for byte"
tot() { $G ingest report --json "$1" | $PY -c 'import json,sys; t=json.load(sys.stdin)["total"]; print(t["inputs"], t["docs_in"], t["docs_kept"], t["tokens"])'; }
is "report over three ranks = report of one (inputs, documents, tokens)" "$(tot "$TMP/three")" "$(tot "$TMP/one")"
is "documents: 24 inputs x 15" "$($G shards stat --json "$TMP/three" | $PY -c 'import json,sys; print(json.load(sys.stdin)["documents"])')" "360"

# --- exact and near duplicates planted across two workers ---
mkdir -p "$TMP/dd"
$PY - "$TMP/dd" <<'PYEOF'
import sys, random, json
r = random.Random(11)
words = ['v%d' % i for i in range(5000)]
docs = [[r.choice(words) for _ in range(300)] for _ in range(7)]
a = docs[:5]
near = list(docs[1]); near[50] = 'changed'; near[150] = 'changed'; near[250] = 'changed'
b = [docs[0], near, docs[5], docs[6], docs[6]]   # exact of a[0], near of a[1], 2 new, and a repeat within b
for name, ds in (('a', a), ('b', b)):
    with open('%s/%s.jsonl' % (sys.argv[1], name), 'w') as out:
        for i, d in enumerate(ds):
            out.write(json.dumps({'id': '%s%d' % (name, i), 'text': ' '.join(d)}) + '\n')
PYEOF
printf '%s\n' "$TMP/dd/a.jsonl" "$TMP/dd/b.jsonl" > "$TMP/dd.txt"
check "two workers over the planted duplicates" $G ingest --no-length --no-gopher --inputs "$TMP/dd.txt" --out "$TMP/ddo" --workers 2
is "within-input repeat dropped by the worker" \
  "$($G ingest report --json "$TMP/ddo" | $PY -c 'import json,sys; print(json.load(sys.stdin)["total"]["counters"]["drop.dup_exact"])')" "1"
check "dedup" $G ingest dedup "$TMP/ddo"
is "dedup removes 1 exact and 1 near duplicate" "$(cat "$TMP/.out")" "9 documents signed, 1 exact and 1 near duplicates removed"
is "7 documents left" "$($G shards stat --json "$TMP/ddo" | $PY -c 'import json,sys; print(json.load(sys.stdin)["documents"])')" "7"
check "dedup again" $G ingest dedup "$TMP/ddo"
is "dedup is idempotent" "$(cat "$TMP/.out")" "9 documents signed, 0 exact and 0 near duplicates removed"
check "deduped shards verify" $G shards verify "$TMP/ddo"
$G shards cat --meta "$TMP/ddo" | grep -c '"input":"[^"]*a.jsonl"' > "$TMP/na"
is "the first copies (input a) are the ones kept" "$(cat "$TMP/na")" "5"

done_testing
