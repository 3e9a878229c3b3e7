#!/usr/bin/env bash
# demo-train.sh — the training stages of the demo, on data found on this
# machine: a BPE vocabulary learned from the licence texts and copyright
# files Debian installs, pretraining on them, then SFT and reward-model
# data made from the same files (the question "Which licence covers
# package P?" with the package's first "License:" field as the answer, and
# a wrong licence as the worse response), SFT and RM runs, and a chat
# sample. Called by demo.sh with the dataset folder it packed; small
# settings so it takes a few minutes on 2 cores.
set -euo pipefail
G=${GPTLINE:-build/gptline}
OUT=${1:?usage: demo-train.sh OUTDIR}
STEPS=${DEMO_STEPS:-300}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "learn a 2000-token BPE vocabulary from the same text (gptline tokenizer train)"
xargs -a "$OUT/inputs.txt" -d '\n' "$G" tokenizer train -o "$OUT/vocab.gltok" -n 2000
"$G" tokenizer info -t "$OUT/vocab.gltok" | head -4
V="$OUT/vocab.gltok"

step "pack it with the vocabulary: training and held-out shards"
xargs -a "$OUT/inputs.txt" -d '\n' "$G" shards pack -o "$OUT/bpe" -t "$V"
find /usr/share/common-licenses -type f | sort | tail -3 > "$OUT/val-inputs.txt"
xargs -a "$OUT/val-inputs.txt" -d '\n' "$G" shards pack -o "$OUT/bpe-val" -t "$V"
"$G" shards stat "$OUT/bpe" | sed -n '5,8p'

step "pretrain a small GPT ($STEPS steps; loss curves in $OUT/base/loss.png)"
"$G" train pretrain --data "$OUT/bpe" --val "$OUT/bpe-val" --out "$OUT/base" --layers 2 --heads 4 --width 128 \
  --context 128 -B 8 -T 128 --steps "$STEPS" --lr 2e-3 --min-lr 2e-4 --warmup 30 --eval-every 100 \
  --eval-batches 8 --log-every 50
"$G" eval --model "$OUT/base" --data "$OUT/bpe-val" -B 8 --batches 8

step "SFT and RM data from the copyright files (gptline shards import)"
# one question per package with a "License:" field; the wrong answer is
# another package's licence (deterministic, never the right one)
awk -v sft="$OUT/sft.jsonl" -v rm="$OUT/rm.jsonl" '
  function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/[\t\r]/, " ", s); return s }
  BEGIN { n = 0 }
  FNR == 1 { pkg = FILENAME; sub(/\/copyright$/, "", pkg); sub(/.*\//, "", pkg); got = 0 }
  /^License:/ && !got { lic = $0; sub(/^License: */, "", lic); if (lic != "") { L[n] = lic; P[n++] = pkg }; got = 1 }
  END {
    for (i = 0; i < n; i++) {
      w = L[(i * 7 + 3) % n]; if (w == L[i]) w = L[(i * 11 + 5) % n]; if (w == L[i]) continue
      q = "Which licence covers the Debian package " P[i] "?"
      printf "{\"prompt\": \"%s\", \"response\": \"%s\"}\n", esc(q), esc(L[i]) > sft
      printf "{\"prompt\": \"%s\", \"responses\": [\"%s\", \"%s\"]}\n", esc(q), esc(L[i]), esc(w) > rm
    }
  }' /usr/share/doc/*/copyright
"$G" shards import --kind sft -t "$V" -o "$OUT/sft" "$OUT/sft.jsonl"
"$G" shards import --kind rm -t "$V" -o "$OUT/rm" "$OUT/rm.jsonl"
head -1 "$OUT/sft.jsonl"

step "supervised fine-tuning from the pretrained model"
"$G" train sft --init "$OUT/base" --data "$OUT/sft" --out "$OUT/sft-model" -B 8 -T 128 --steps $((STEPS / 2)) \
  --lr 1e-3 --min-lr 1e-4 --warmup 10 --log-every 50
step "a reward model from the SFT model (held-out = its own data here; pairwise accuracy)"
"$G" train rm --init "$OUT/sft-model" --data "$OUT/rm" --val "$OUT/rm" --out "$OUT/rm-model" -B 8 -T 128 \
  --steps $((STEPS / 2)) --lr 1e-3 --min-lr 1e-4 --warmup 10 --eval-every $((STEPS / 2)) --eval-batches 20 \
  --log-every 50

step "ask the SFT model (gptline sample --chat, greedy)"
for pkg in adduser $(ls /usr/share/doc | sed -n '10p;20p'); do
  printf 'Q: Which licence covers the Debian package %s?\nA: ' "$pkg"
  "$G" sample --model "$OUT/sft-model" -T "$V" --chat --prompt "Which licence covers the Debian package $pkg?" \
    -n 16 -t 0
done
