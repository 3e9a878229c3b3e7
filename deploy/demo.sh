#!/usr/bin/env bash
# demo.sh — the gptline pipeline on data found on this machine.
#
# Packs the licence texts and package copyright files that every Debian
# system carries (plus compressed changelogs, decompressed on the fly) into
# a token shard dataset, verifies it, shows what the trainer's sampler
# reads, then runs the training stages on it (demo-train.sh): a BPE
# vocabulary, pretraining, SFT, a reward model and a chat sample.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GPTLINE:-build/gptline}
OUT=${DEMO_DIR:-build/demo}
[ -x "$G" ] || { echo "demo: $G not built; run 'make demo'" >&2; exit 1; }

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$OUT"
mkdir -p "$OUT"

inputs=()
for d in /usr/share/common-licenses /usr/share/doc; do [ -d "$d" ] && inputs+=("$d"); done
[ ${#inputs[@]} -gt 0 ] || { echo "demo: no /usr/share/common-licenses or /usr/share/doc here" >&2; exit 1; }

step "pack the text under ${inputs[*]} into shards (byte-level tokens)"
# copyright files and licences: plain text; changelogs: gzip, decompressed by libarchive
find "${inputs[@]}" -type f \( -name 'copyright' -o -path '*/common-licenses/*' -o -name 'changelog.Debian.gz' \) \
  | sort > "$OUT/inputs.txt"
echo "$(wc -l < "$OUT/inputs.txt") input files"
xargs -a "$OUT/inputs.txt" -d '\n' "$G" shards pack -o "$OUT/pretrain" --shard-tokens 8M

step "gptline shards stat"
"$G" shards stat --shards "$OUT/pretrain"

step "gptline shards verify"
"$G" shards verify -q "$OUT/pretrain" && echo "all shards verified (checksums, structure, counts)"

step "the first document's metadata and opening lines"
"$G" shards cat --meta --limit 1 "$OUT/pretrain" > "$OUT/doc0.txt"
head -1 "$OUT/doc0.txt"
"$G" shards cat --text --limit 1 "$OUT/pretrain" > "$OUT/doc0.txt"
head -8 "$OUT/doc0.txt"

step "one training batch: B=2 windows of T+1=33 tokens (rank 0 of 2), as text"
"$G" shards sample -B 2 -T 32 --seed 1 --rank 0 --world 2 "$OUT/pretrain" | while read -r ids; do
  printf '%s' "$ids" | awk '{for (i = 1; i <= NF; i++) if ($i == 256) printf "<|endoftext|>"; else printf "%c", $i}' | tr '\n' ' '
  echo
done

"$(dirname "$0")/demo-train.sh" "$OUT"

echo
echo "demo: everything it made is in $OUT"
