#!/usr/bin/env bash
# demo.sh — the gptline pipeline on data found on this machine.
#
# Packs the licence texts and package copyright files that every Debian
# system carries (plus compressed changelogs, decompressed on the fly) into
# a token shard dataset, verifies it and shows what the trainer's sampler
# reads. Then ingest: the HTML documentation installed on the machine is
# crawled over loopback with `wget --warc-file` into a real WARC, the C
# headers of /usr/include and this project's own source become code
# archives, and `gptline ingest` (two local workers) extracts, filters,
# deduplicates and tokenizes them into shards; a BPE tokenizer is trained on
# that text and the inputs ingested again with it. Last, the training stages
# (demo-train.sh): a BPE vocabulary, pretraining, SFT, a reward model and a
# chat sample.
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

# ---- ingest: a real crawl over loopback, and code archives ----

step "crawl the HTML documentation under /usr/share/doc over loopback into a WARC (wget --warc-file)"
command -v wget >/dev/null || { echo "demo: wget is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$OUT/crawl" "$OUT/code" "$OUT/wget"
perl deploy/demo-httpd.pl /usr/share/doc "$OUT/httpd.port" 300 &
httpd=$!
trap 'kill $httpd 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$OUT/httpd.port" ] && break; sleep 0.1; done
port=$(cat "$OUT/httpd.port")
wget -q -r -l 1 -e robots=off --delete-after -nd -P "$OUT/wget" \
  --warc-file="$OUT/crawl/usr-share-doc" "http://127.0.0.1:$port/" || true
kill $httpd 2>/dev/null; wait $httpd 2>/dev/null || true
ls -l "$OUT/crawl"

step "code archives: the C headers of /usr/include and this project's source"
(cd /usr && find include -maxdepth 1 -name '*.h' -type f | sort) > "$OUT/code/headers.txt"
tar -czf "$OUT/code/usr-include.tar.gz" -C /usr -T "$OUT/code/headers.txt"
tar -czf "$OUT/code/gptline-src.tar.gz" --exclude=./build --exclude=./.git . 
ls -l "$OUT/code"

step "gptline ingest: 2 local workers, default filters, byte-level tokens"
ls "$OUT"/crawl/*.warc.gz "$OUT"/code/*.tar.gz > "$OUT/ingest-inputs.txt"
"$G" ingest --inputs "$OUT/ingest-inputs.txt" --out "$OUT/ingest" --tokenizer bytes --workers 2

step "gptline ingest dedup (exact + MinHash near duplicates, all workers together)"
"$G" ingest dedup "$OUT/ingest"

step "gptline ingest report"
"$G" ingest report "$OUT/ingest"

step "the ingested dataset"
"$G" shards verify -q "$OUT/ingest" && echo "all shards verified"
"$G" shards stat "$OUT/ingest"
"$G" shards cat --meta "$OUT/ingest" > "$OUT/ingest-meta.txt"
doc=$(grep -m1 '^{"doc":[0-9]*,.*"source":"crawl"' "$OUT/ingest-meta.txt" | sed 's/^{"doc":\([0-9]*\),.*/\1/')
if [ -n "$doc" ]; then
  echo "-- document $doc, a crawled page:"
  grep -m1 "^{\"doc\":$doc," "$OUT/ingest-meta.txt" | cut -c1-200
  "$G" shards cat --text --doc "$doc" --limit 1 "$OUT/ingest" > "$OUT/ingest-doc.txt"
  head -8 "$OUT/ingest-doc.txt" | cut -c1-160
fi

step "train a BPE tokenizer (2048 tokens) on the ingested text"
"$G" shards cat --text "$OUT/ingest" > "$OUT/ingest.txt"
"$G" tokenizer train -o "$OUT/demo.gltok" -n 2048 -j 2 "$OUT/ingest.txt"

step "gptline ingest again, tokenized with it (the same documents, fewer tokens)"
"$G" ingest --inputs "$OUT/ingest-inputs.txt" --out "$OUT/ingest-bpe" --tokenizer "$OUT/demo.gltok" --workers 2
"$G" ingest dedup "$OUT/ingest-bpe"
"$G" shards verify -q "$OUT/ingest-bpe" && echo "all shards verified"
"$G" shards stat "$OUT/ingest-bpe"

"$(dirname "$0")/demo-train.sh" "$OUT"

echo
echo "demo: everything it made is in $OUT"
