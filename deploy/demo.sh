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
# that text and the inputs ingested again with it. Then the labeling
# service: keys, registry, imported prompts and candidates, scripted
# contractors (--batch) writing demonstrations and ranking candidates,
# stats, export to SFT and RM shards that the trainer reads. Last the four
# training stages (demo-train.sh): a BPE vocabulary and pretraining; SFT on
# demonstrations and a reward model on rankings that scripted contractors
# submit through the labeling service by a stated rule; RL (PPO) against
# that reward model; and the same questions asked of the base, SFT and RL
# models.
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
step "labeling: a server key, three contractors, prompts and candidates"
L=$OUT/label
mkdir -p "$L"
"$G" label keygen "$L/server" >/dev/null
for who in alice bob carol; do
  "$G" label keygen "$L/$who" >/dev/null
  "$G" -q label admin add-contractor --db "$L/db" $who "$L/$who.pub"
done
cat > "$L/prompts.jsonl" <<'END'
{"prompt": "Explain in two sentences what a software licence is."}
{"prompt": "What does the GPL require when you distribute a modified program?"}
{"prompt": "Write a haiku about free software."}
END
cat > "$L/candidates.jsonl" <<'END'
{"prompt": "Is the MIT licence permissive?", "candidates": ["Yes: it allows reuse with attribution.", "No.", "Yes, it is permissive; keep the notice and you may reuse, modify and sell."]}
{"prompt": "Name a copyleft licence.", "candidates": ["The GPL.", "MIT", "The GNU General Public License (GPL) is the best-known copyleft licence."]}
END
"$G" label admin import-prompts --db "$L/db" --overlap 2 "$L/prompts.jsonl"
"$G" label admin import-candidates --db "$L/db" --overlap 3 "$L/candidates.jsonl"

step "gptline label serve (CURVE, registered keys only) on loopback"
"$G" label serve --db "$L/db" --key "$L/server.key" --endpoint 'tcp://127.0.0.1:*' 2> "$L/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
EP=
for _ in $(seq 1 200); do  # the port it picked is in its log
  EP=$(sed -n 's/.*listening on \(tcp:[^,]*\),.*/\1/p' "$L/server.log")
  [ -n "$EP" ] && break
  sleep 0.05
done
echo "listening on $EP"
"$G" label client -e "$EP" -s "$L/server.pub" -k "$L/alice.key" --journal "$L/j" --guidelines -t 300 -r 40 | head -4

step "scripted contractors (--batch): demonstrations and rankings"
cat > "$L/alice.jsonl" <<'END'
{"response": "A software licence is the legal permission to use, copy or change a program. It states what you may do and under which conditions."}
{"response": "You must offer the source code of your modified version under the GPL to those you give the program to."}
{"response": "Code shared in light / many hands mend what one breaks / the commons grows green"}
{"ranking": [1, 2, 0], "flags": [0, 1, 0], "rating": 6}
{"ranking": [1, 2, 0], "rating": 6}
END
cat > "$L/bob.jsonl" <<'END'
{"response": "It is the set of terms under which the authors let you use and share their program."}
{"response": "Distributing a modified GPL program obliges you to release its source under the same licence."}
{"ranking": [0, 2, 1], "rating": 5}
{"ranking": [1, 2, 0], "flags": [0, 4, 0], "rating": 6}
END
cat > "$L/carol.jsonl" <<'END'
{"ranking": [1, 2, 0], "rating": 5}
{"ranking": [1, 2, 0], "rating": 7}
{"prompt": "What is public domain software?"}
END
for who in alice bob carol; do
  echo "-- $who"
  "$G" label client -e "$EP" -s "$L/server.pub" -k "$L/$who.key" --journal "$L/j-$who" --batch "$L/$who.jsonl"
done

step "gptline label admin stats: queues and agreement"
"$G" label admin stats --db "$L/db" | grep -E '"(pending|leased|done|contractor|pairwise_agreement|kendall_tau)"'

step "export to SFT and RM shards (byte-level tokens) and HH-RLHF JSONL"
"$G" label admin export --db "$L/db" --kind sft --out "$L/sft" --tokenizer bytes
"$G" label admin export --db "$L/db" --kind rm --out "$L/rm" --tokenizer bytes --jsonl "$L/hh.jsonl" --format hh
"$G" shards stat "$L/sft" | grep -E '^(kind|documents|tokens)'
"$G" shards stat "$L/rm" | grep -E '^(kind|documents|tokens)'
VOCAB=${GL_DATA:-../shared/data}/tokenizers/vocab/cl100k_base.tiktoken
if [ -r "$VOCAB" ]; then
  echo "-- the same demonstrations with the cl100k_base BPE vocabulary and its chat-role tokens"
  "$G" label admin export --db "$L/db" --kind sft --out "$L/sft-cl100k" --tokenizer "$VOCAB"
  "$G" shards stat "$L/sft-cl100k" | grep -E '^(tokenizer|documents|tokens)'
fi
echo "first HH-RLHF pair: $(head -1 "$L/hh.jsonl")"
"$G" label backup --db "$L/db" --out "$L/backup" && echo "hot backup in $L/backup"

step "the trainer reads the label shards: a few SFT steps, then reward-model steps"
"$G" train sft --data "$L/sft" --out "$L/train-sft" --layers 1 --heads 2 --width 32 --context 256 -B 2 -T 256 \
  --steps 4 --eval-every 0 --ckpt-every 4 --log-every 2 --threads 1
"$G" train rm --data "$L/rm" --out "$L/train-rm" --init "$L/train-sft/$(cat "$L/train-sft/latest")" -B 6 -T 256 \
  --steps 4 --eval-every 0 --ckpt-every 4 --log-every 2 --threads 1
kill "$SERVER"
wait "$SERVER" 2>/dev/null || true
trap - EXIT

"$(dirname "$0")/demo-train.sh" "$OUT"

echo
echo "demo: everything it made is in $OUT (labels in $L: sft and rm shards, hh.jsonl)"
