#!/usr/bin/env bash
# bench_shakespeare.sh — nanoGPT's CPU recipe for character-level
# Shakespeare (4 layers, 4 heads, width 128, T=64, B=12, 2000 iterations,
# lr 1e-3 cosine to 1e-4, warmup 100, beta2 0.99, dropout 0) trained by
# gptline and by the same model in PyTorch (bench/shakespeare_peer.py), in
# turns of a second on the same 90/10 split: wall time of training plus the
# final held-out evaluation, and the held-out loss. Floor: held-out loss <= 1.89
# in <= 0.5x PyTorch's time. gptline reads bytes (vocabulary 257), PyTorch
# the 65 characters: the loss is per character either way.
# GL_BENCH_SHAKESPEARE=0 skips it (it takes a few minutes).
set -euo pipefail
[ "${GL_BENCH_SHAKESPEARE:-1}" != 0 ] || { echo "shakespeare: skipped (GL_BENCH_SHAKESPEARE=0)"; exit 0; }
G=${GPTLINE:-build/gptline}
TEXT=${GL_DATA:-../shared/data}/text/tinyshakespeare.txt
PY=${PYTHON:-/usr/bin/python3}
[ -r "$TEXT" ] || { echo "shakespeare: skipped ($TEXT not found)"; exit 0; }
D=${GL_BUILD:-build}/bench/shakespeare
rm -rf "$D" && mkdir -p "$D"
n=$(stat -c %s "$TEXT"); cut=$((n * 9 / 10))
head -c "$cut" "$TEXT" > "$D/train.txt"; tail -c +$((cut + 1)) "$TEXT" > "$D/val.txt"
"$G" shards pack -o "$D/train" "$D/train.txt" 2>/dev/null
"$G" shards pack -o "$D/val" "$D/val.txt" 2>/dev/null
threads=${GL_BENCH_THREADS:-$(nproc)}
ours=(train pretrain --data "$D/train" --val "$D/val" --out "$D/run" --layers 4 --heads 4 --width 128 --context 64
  -B 12 -T 64 --steps 2000 --lr 1e-3 --min-lr 1e-4 --warmup 100 --beta1 0.9 --beta2 0.99 --wd 0.1 --clip 1.0
  --eval-every 2000 --eval-batches 200 --ckpt-every 2000 --threads "$threads" -q)
val_loss() { sed -n 's/.*"val_loss":\([0-9.]*\).*/\1/p' "$D/run/metrics.jsonl" | tail -1; }
report_ours() { printf 'gptline  %d threads: %6.1f s, held-out loss %.4f\n' "$threads" "$1" "$(val_loss)"; }
if ! "$PY" -c 'import torch' 2>/dev/null; then
  t0=$(date +%s.%N)
  "$G" "${ours[@]}"
  t1=$(date +%s.%N)
  report_ours "$(echo "$t1 - $t0" | bc -l)"
  echo "PyTorch: not installed (python3-torch); no ratio"
  exit 0
fi
# Both runs in turns of a second (bench/alternate.py), so that both see the
# same phases of the machine; the peer splits the whole text itself (given
# the original), and its set-up (importing torch) is not counted.
out=$("$PY" "$(dirname "$0")/alternate.py" 1 -- "$G" "${ours[@]}" -- \
  "$PY" "$(dirname "$0")/shakespeare_peer.py" "$TEXT" 1)
read -r _ ours_s ps <<< "$(echo "$out" | head -1)"
pv=$(echo "$out" | sed -n 's/.*"val_loss": \([0-9.]*\).*/\1/p')
val=$(val_loss)
report_ours "$ours_s"
printf 'PyTorch  1 thread:  %6.1f s, held-out loss %.4f\n' "$ps" "$pv"
ratio=$(echo "$ours_s / $ps" | bc -l)
printf 'time ratio gptline/PyTorch %.2f (floor <= 0.50), held-out loss %.4f (floor <= 1.89): %s\n' "$ratio" "$val" \
  "$(echo "$ratio <= 0.5 && $val <= 1.89" | bc -l | sed 's/1/met/;s/0/not met/')"
