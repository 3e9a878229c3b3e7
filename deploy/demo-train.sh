#!/usr/bin/env bash
# demo-train.sh — the four training stages of the demo, on data found on
# this machine and labels written through the labeling service.
#
#   1. A BPE vocabulary learned from the licence texts and copyright files
#      Debian installs, and a small GPT pretrained on them.
#   2. The labeling service (CURVE on loopback) with one question per
#      package — "Which licence covers the Debian package P?" — and scripted
#      contractors. alice and bob write the demonstrations from the
#      package's copyright file (its first "License:" field): alice in a
#      sentence ("P is covered by L."), bob the bare licence name. carol and
#      dave rank three candidates by a stated rule: the answer in a sentence
#      naming the package first, the bare licence second, a wrong licence
#      (another package's) last.
#   3. SFT on the exported demonstrations, a reward model on the exported
#      rankings (90% to train, 10% held out for its accuracy).
#   4. RL (PPO) from the SFT model against the reward model, with a KL leash
#      to the SFT model; then the same questions asked of the base, SFT and
#      RL models.
#
# Called by demo.sh with its output folder; small settings so it takes a
# few minutes on 2 cores. DEMO_STEPS scales the pretraining length.
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

# ---- labels through the service ----

L=$OUT/labels
mkdir -p "$L"
step "the questions, and what the scripted contractors know (the copyright files)"
# licences.tsv: package, its licence, two other packages' licences (never
# the same text as its own); one line per package with a "License:" field
awk '
  BEGIN { n = 0 }
  FNR == 1 { pkg = FILENAME; sub(/\/copyright$/, "", pkg); sub(/.*\//, "", pkg); got = 0 }
  /^License:/ && !got { lic = $0; sub(/^License:[ \t]*/, "", lic); gsub(/[\t\r"\\]/, " ", lic)
                        if (lic != "" && length(lic) < 40) { L[n] = lic; P[n++] = pkg }; got = 1 }
  END {
    for (i = 0; i < n; i++) {
      a = L[(i * 7 + 3) % n]; b = L[(i * 13 + 5) % n]
      if (a == L[i] || b == L[i] || a == b) continue
      printf "%s\t%s\t%s\t%s\n", P[i], L[i], a, b
    }
  }' /usr/share/doc/*/copyright > "$L/licences.tsv"
N=$(wc -l < "$L/licences.tsv")
echo "$N packages; for example: $(head -1 "$L/licences.tsv" | cut -f1,2 | tr '\t' ' ')"
awk -F'\t' '{ printf "{\"prompt\": \"Which licence covers the Debian package %s?\"}\n", $1 }' "$L/licences.tsv" \
  > "$L/prompts.jsonl"
# candidates in a rotating order, so the best is not always first
awk -F'\t' '{ q = "Which licence covers the Debian package " $1 "?"; r = NR % 3
  c[0] = $1 " is covered by " $2 "."; c[1] = $2; c[2] = $3
  printf "{\"prompt\": \"%s\", \"candidates\": [\"%s\", \"%s\", \"%s\"]}\n", q, c[r], c[(r + 1) % 3], c[(r + 2) % 3] }' \
  "$L/licences.tsv" > "$L/candidates.jsonl"

step "gptline label serve: $N demonstration tasks and $N ranking tasks (two rankers each)"
"$G" label keygen "$L/server" >/dev/null
for who in alice bob carol dave; do
  "$G" label keygen "$L/$who" >/dev/null
  "$G" -q label admin add-contractor --db "$L/db" $who "$L/$who.pub"
done
"$G" label admin import-prompts --db "$L/db" "$L/prompts.jsonl"
"$G" label admin import-candidates --db "$L/db" --overlap 2 "$L/candidates.jsonl"
"$G" label serve --db "$L/db" --key "$L/server.key" --endpoint 'tcp://127.0.0.1:*' 2> "$L/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
EP=
for _ in $(seq 1 200); do
  EP=$(sed -n 's/.*listening on \(tcp:[^,]*\),.*/\1/p' "$L/server.log")
  [ -n "$EP" ] && break
  sleep 0.05
done
echo "listening on $EP"

step "scripted contractors: alice (sentences) and bob (bare names) answer, carol and dave rank by the rule"
# Tasks are numbered in import order: demonstrations 1..N, rankings N+1..2N.
awk -F'\t' -v out="$L" '{ if (NR % 2) printf "{\"task\": %d, \"response\": \"%s is covered by %s.\"}\n", NR, $1, $2 > (out "/alice.jsonl")
  else printf "{\"task\": %d, \"response\": \"%s\"}\n", NR, $2 > (out "/bob.jsonl") }' "$L/licences.tsv"
# the rule: candidate j holds c[(r + j) % 3], whose rank is its index in c
awk -F'\t' -v n="$N" '{ r = NR % 3
  printf "{\"task\": %d, \"ranking\": [%d, %d, %d], \"rating\": 6}\n", n + NR, r % 3, (r + 1) % 3, (r + 2) % 3 }' \
  "$L/licences.tsv" > "$L/carol.jsonl"
cp "$L/carol.jsonl" "$L/dave.jsonl"
for who in alice bob carol dave; do
  ok=$("$G" label client -e "$EP" -s "$L/server.pub" -k "$L/$who.key" --journal "$L/j-$who" \
         --batch "$L/$who.jsonl" | grep -c '"status":"ok"' || true)
  echo "$who: $ok submissions accepted"
done
"$G" label admin stats --db "$L/db" | tail -4 | head -2 | tr -d '",' | sed 's/^ */rankers agree: /'
kill "$SERVER"
wait "$SERVER" 2>/dev/null || true
trap - EXIT

step "export the labels: SFT shards, and the rankings split 90/10 into RM train and held-out"
"$G" label admin export --db "$L/db" --kind sft --out "$OUT/sft" --tokenizer "$V"
"$G" label admin export --db "$L/db" --kind rm --jsonl "$L/rankings.jsonl" >/dev/null
awk -v tr="$L/rm-train.jsonl" -v va="$L/rm-val.jsonl" '{ print > (NR % 10 == 0 ? va : tr) }' "$L/rankings.jsonl"
"$G" shards import --kind rm -t "$V" -o "$OUT/rm" "$L/rm-train.jsonl"
"$G" shards import --kind rm -t "$V" -o "$OUT/rm-val" "$L/rm-val.jsonl"
"$G" shards import --kind rl -t "$V" -o "$OUT/rl-prompts" "$L/prompts.jsonl"
head -1 "$L/rankings.jsonl" | cut -c1-200

step "supervised fine-tuning from the pretrained model, on the contractors' demonstrations"
"$G" train sft --init "$OUT/base" --data "$OUT/sft" --out "$OUT/sft-model" -B 8 -T 128 --steps $((STEPS / 2)) \
  --lr 1e-3 --min-lr 1e-4 --warmup 10 --log-every 50
step "a reward model from the SFT model, on the contractors' rankings (held-out pairwise accuracy)"
"$G" train rm --init "$OUT/sft-model" --data "$OUT/rm" --val "$OUT/rm-val" --out "$OUT/rm-model" -B 8 -T 128 \
  --steps $((STEPS / 2)) --lr 1e-3 --min-lr 1e-4 --warmup 10 --eval-every $((STEPS / 2)) --eval-batches 20 \
  --log-every 50
acc=$(grep '"val_accuracy"' "$OUT/rm-model/metrics.jsonl" | tail -1 | sed -n 's/.*"val_accuracy": *\([0-9.]*\).*/\1/p')
echo "reward model: held-out pairwise accuracy ${acc:-?} (pairs of held-out rankings it orders as the rule does)"

MODELS="base sft-model"
if "$G" train rl --help >/dev/null 2>&1; then
  step "RL: PPO from the SFT model against the reward model, KL leash to the SFT model (curves in $OUT/rl-model/rl.png)"
  # one thread: the model is small enough that a second one only waits at barriers
  "$G" train rl --policy "$OUT/sft-model" --reward "$OUT/rm-model" --prompts "$OUT/rl-prompts" \
    --out "$OUT/rl-model" --steps "${DEMO_RL_STEPS:-40}" -B 16 --max-new 24 --lr 1e-4 --missing-eot-penalty 1 \
    --log-every 10 --threads 1
  awk -F'"reward":' 'NF > 1 { split($2, a, ","); r[n++] = a[1] }
    END { k = n < 10 ? n : 10; for (i = 0; i < k; i++) { f += r[i]; l += r[n - 1 - i] }
          if (k) printf "mean reward: first %d steps %.3f, last %d steps %.3f\n", k, f / k, k, l / k }' \
    "$OUT/rl-model/metrics.jsonl"
  MODELS="$MODELS rl-model"
fi

step "the same questions to each model (gptline sample --chat, greedy)"
for pkg in $(awk -F'\t' 'NR % 10 == 0 { print $1 }' "$L/licences.tsv" | head -3); do
  want=$(awk -F'\t' -v p="$pkg" '$1 == p { print $2 }' "$L/licences.tsv")
  echo "Q: Which licence covers the Debian package $pkg?   (its copyright file: $want)"
  for m in $MODELS; do
    printf '  %-10s ' "$m:"
    "$G" sample --model "$OUT/$m" -T "$V" --chat --prompt "Which licence covers the Debian package $pkg?" \
      -n 16 -t 0 | head -1
  done
done
echo
echo "loss curves: $OUT/base/loss.png $OUT/sft-model/loss.png $OUT/rm-model/loss.png"
[ -d "$OUT/rl-model" ] && echo "reward and KL curves: $OUT/rl-model/rl.png"
true
