#!/usr/bin/env bash
# shards_cli.sh — `gptline shards` end to end: pack real text found on the
# machine (plain and gzip), stat, cat back byte-exact, sample, verify; a
# corrupted and a truncated shard caught with exit status 3 naming the
# shard; --help everywhere; usage errors exit 2.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE

# --help on every command level
for c in "" "shards" "shards stat" "shards verify" "shards cat" "shards sample" "shards pack"; do
  # shellcheck disable=SC2086
  check "gptline $c --help" $G $c --help
done
check "gptline --version" $G --version
grep -q '^gptline [0-9]' "$TMP/.out"; _result $? "--version prints the version"
check_fails "unknown command exits 2" 2 $G nosuch
check_fails "unknown shards command exits 2" 2 $G shards nosuch
check_fails "bad option exits 2" 2 $G shards stat --nosuch "$TMP"
check_fails "pack without --output exits 2" 2 $G shards pack /dev/null

# inputs: real text from the machine, one of them gzip-compressed
mkdir -p "$TMP/in/sub"
lic=/usr/share/common-licenses
[ -d $lic ] || skip_all "no $lic on this machine"
cp $lic/GPL-3 $lic/Apache-2.0 "$TMP/in/"
cp $lic/MIT "$TMP/in/sub/" 2>/dev/null || cp $lic/BSD "$TMP/in/sub/"
gzip -c $lic/GPL-2 > "$TMP/in/sub/gpl2.gz"
printf 'bin\000ary' > "$TMP/in/sub/binary.dat"

check "pack a folder" $G shards pack -o "$TMP/ds" --shard-tokens 10000 "$TMP/in"
grep -q "1 binary" "$TMP/.err"; _result $? "binary file skipped and counted"
nshards=$(ls "$TMP/ds"/*.mdb | wc -l)
[ "$nshards" -gt 2 ]; _result $? "rotated into $nshards shards at 10k tokens"

check "stat" $G shards stat "$TMP/ds"
grep -q "^documents   4$" "$TMP/.out"; _result $? "stat counts 4 documents"
want=$(( $(cat "$TMP"/in/GPL-3 "$TMP"/in/Apache-2.0 "$TMP"/in/sub/MIT "$TMP"/in/sub/BSD 2>/dev/null | wc -c) + $(zcat "$TMP/in/sub/gpl2.gz" | wc -c) ))
check "stat --json" $G shards stat --json "$TMP/ds"
got=$(sed -n 's/.*"tokens": \([0-9]*\).*/\1/p' "$TMP/.out" | head -1)
is "tokens = bytes of the inputs (gzip decompressed)" "$got" "$want"

# cat --text gives back each file byte for byte (documents end with a newline)
check "cat --text" $G shards cat --text "$TMP/ds"
{ cat "$TMP/in/Apache-2.0"; echo; cat "$TMP/in/GPL-3"; echo; for f in "$TMP"/in/sub/*; do
    case $f in *.gz) zcat "$f"; echo ;; *.dat) ;; *) cat "$f"; echo ;; esac; done; } > "$TMP/want.txt"
cmp -s "$TMP/.out" "$TMP/want.txt"; _result $? "cat --text equals the inputs in walk order"
check "cat --meta --limit 1" $G shards cat --meta --limit 1 "$TMP/ds"
head -1 "$TMP/.out" | grep -q '"path":".*Apache-2.0"'; _result $? "metadata names the input file"
check "cat ids of document 1" $G shards cat --doc 1 --limit 1 "$TMP/ds"
first=$(head -c 12 "$TMP/in/GPL-3" | od -An -tu1 | xargs)
case "$(cut -d' ' -f1-12 "$TMP/.out")" in "$first") _result 0 "ids are the bytes";; *) _result 1 "ids are the bytes";; esac

# sampler
check "sample" $G shards sample -B 2 -T 16 --seed 3 -n 2 "$TMP/ds"
is "sample prints B*batches windows" "$(wc -l < "$TMP/.out")" 4
is "each window has T+1 ids" "$(head -1 "$TMP/.out" | wc -w)" 17
$G shards sample -B 2 -T 16 --seed 3 -n 2 "$TMP/ds" > "$TMP/s2"
cmp -s "$TMP/.out" "$TMP/s2"; _result $? "sampling is deterministic"
check_fails "rank >= world is a usage error" 2 $G shards sample -r 2 -w 2 "$TMP/ds"

# stdin and split modes
printf 'one\ntwo\n\nthree\n' | $G shards pack -o "$TMP/lines" --split line - 2>/dev/null
is "--split line: 3 documents from stdin" "$($G shards stat --json "$TMP/lines" | sed -n 's/.*"documents": \([0-9]*\).*/\1/p' | head -1)" 3
printf 'a b\nc\n\n\nd\n' | $G shards pack -o "$TMP/para" --split paragraph 2>/dev/null
is "--split paragraph: 2 documents" "$($G shards stat --json "$TMP/para" | sed -n 's/.*"documents": \([0-9]*\).*/\1/p' | head -1)" 2
printf 'more\n' | $G shards pack -o "$TMP/lines" --split line 2>/dev/null
is "a second pack appends a new shard" "$(ls "$TMP/lines" | wc -l)" 2

# missing input: counted, the rest still packed, exit 1
check_fails "missing input exits 1" 1 $G shards pack -o "$TMP/partial" "$TMP/in/GPL-3" "$TMP/nonexistent"
grep -q nonexistent "$TMP/.err"; _result $? "the missing input is named"
is "the readable input was packed" "$($G shards stat --json "$TMP/partial" | sed -n 's/.*"documents": \([0-9]*\).*/\1/p' | head -1)" 1

# verify: good, then corrupted, then truncated
check "verify a good dataset" $G shards verify "$TMP/ds"
cp -r "$TMP/ds" "$TMP/bad"
victim=$(ls "$TMP/bad"/*.mdb | sed -n 2p)
# flip bytes in the middle of the token data (a run of the license text)
off=$(grep -obUaP 'G\x00N\x00U\x00' "$victim" | head -1 | cut -d: -f1)
[ -n "$off" ]; _result $? "found token data in $(basename "$victim")"
printf 'XX' | dd of="$victim" bs=1 seek="$off" conv=notrunc status=none
check_fails "verify exits 3 on flipped bytes" 3 $G shards verify "$TMP/bad"
grep -q "FAILED.*$(basename "$victim").*checksum" "$TMP/.out"; _result $? "the corrupt shard is named"
grep -q "^ok " "$TMP/.out"; _result $? "the good shards still pass"
cp -r "$TMP/ds" "$TMP/trunc"
victim=$(ls "$TMP/trunc"/*.mdb | sed -n 1p)
truncate -s 10000 "$victim"
check_fails "verify exits 3 on a truncated shard" 3 $G shards verify "$TMP/trunc"
grep -q "$(basename "$victim")" "$TMP/.err"; _result $? "the truncated shard is named"
check_fails "stat refuses a dataset with a truncated shard" 3 $G shards stat "$TMP/trunc"
touch "$TMP/ds/leftover.mdb.tmp"
check "stat ignores an unsealed shard" $G shards stat "$TMP/ds"
grep -q "unsealed" "$TMP/.out"; _result $? "and says so"
check_fails "stat of a missing folder exits 1" 1 $G shards stat "$TMP/nope"
mkdir -p "$TMP/empty"
check "stat of an empty folder" $G shards stat "$TMP/empty"
check "verify of an empty folder" $G shards verify "$TMP/empty"

done_testing
