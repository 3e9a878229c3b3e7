#!/usr/bin/env bash
# trainer_run.sh — `gptline train pretrain` end to end on text from this
# machine: the loss falls; a run stopped and resumed repeats the
# uninterrupted run's losses exactly; a run killed with SIGKILL (possibly
# mid-checkpoint) resumes from its last whole checkpoint; settings that do
# not match the checkpoint or the data are refused with a clear error;
# `mpirun -np 2` gives the losses of one process with twice the gradient
# accumulation; `gptline eval` agrees with the run's own evaluation.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
lic=/usr/share/common-licenses
[ -d $lic ] || skip_all "no $lic on this machine"

check "--help" $G train pretrain --help
check "train --help" $G train --help
check_fails "missing --data is a usage error" 2 $G train pretrain --out "$TMP/x"
check "train dpo --help" $G train dpo --help
check_fails "train dpo without --init is a usage error" 2 $G train dpo --data "$TMP/x" --out "$TMP/x"

$G shards pack -o "$TMP/train" $lic/GPL-3 $lic/Apache-2.0 $lic/GPL-2 2>/dev/null
$G shards pack -o "$TMP/val" $lic/LGPL-2.1 2>/dev/null
M="--layers 2 --heads 2 --width 32 --context 32 -B 4 -T 32 --threads 1 --lr 3e-3 --warmup 5 --seed 7 -q"
losses() { sed -n 's/^{"step":\([0-9]*\),"loss":\([^,]*\),.*/\1 \2/p' "$1/metrics.jsonl"; }

check "pretrain 40 steps" $G train pretrain --data "$TMP/train" --val "$TMP/val" --out "$TMP/a" $M --steps 40 \
  --ckpt-every 10 --eval-every 40 --eval-batches 4
first=$(losses "$TMP/a" | head -1 | cut -d' ' -f2)
last=$(losses "$TMP/a" | tail -5 | awk '{s += $2} END {print s / NR}')
awk -v f="$first" -v l="$last" 'BEGIN {exit !(l < f - 1.0)}'; _result $? "loss falls from $first to $last"
is "a metrics line per step" "$(losses "$TMP/a" | wc -l)" 40
is "latest names the last checkpoint" "$(cat "$TMP/a/latest")" "ckpt-00000040"
grep -q '"val_loss"' "$TMP/a/metrics.jsonl"; _result $? "evaluation recorded"
is "loss curves rendered to a PNG" "$(head -c 8 "$TMP/a/loss.png" | od -An -tx1 | tr -d ' ')" "89504e470d0a1a0a"

# stop at 20, resume to 40: the same losses, bit for bit
check "run to step 20 of 40" $G train pretrain --data "$TMP/train" --out "$TMP/b" $M --steps 40 --until 20 --ckpt-every 10
check "resume to step 40" $G train pretrain --data "$TMP/train" --out "$TMP/b" $M --steps 40 --ckpt-every 10 --resume
losses "$TMP/a" > "$TMP/la"; losses "$TMP/b" > "$TMP/lb"
cmp -s "$TMP/la" "$TMP/lb"; _result $? "resumed run repeats the uninterrupted losses exactly"
[ $? -eq 0 ] || diff "$TMP/la" "$TMP/lb" | head -5 | sed 's/^/#   /'

# the same with dropout: the mask stream is part of the checkpoint
$G train pretrain --data "$TMP/train" --out "$TMP/da" $M --steps 16 --dropout 0.2 >/dev/null 2>&1
$G train pretrain --data "$TMP/train" --out "$TMP/db" $M --steps 16 --dropout 0.2 --until 7 >/dev/null 2>&1
$G train pretrain --data "$TMP/train" --out "$TMP/db" $M --steps 16 --dropout 0.2 --resume >/dev/null 2>&1
losses "$TMP/da" > "$TMP/lda"; losses "$TMP/db" > "$TMP/ldb"
[ "$(wc -l < "$TMP/lda")" -eq 16 ] && cmp -s "$TMP/lda" "$TMP/ldb"; _result $? "with dropout too, resume repeats the losses"
$G train pretrain --data "$TMP/train" --out "$TMP/dn" $M --steps 16 >/dev/null 2>&1
losses "$TMP/dn" > "$TMP/ldn"
! cmp -s "$TMP/lda" "$TMP/ldn"; _result $? "dropout changes the losses"

# SIGKILL at a random moment (a model big enough to be caught mid-run),
# then resume: the same losses as a run that was not killed
K="--layers 4 --heads 4 --width 96 --context 32 -B 8 -T 32 --threads 1 --lr 3e-3 --warmup 5 --seed 7 -q --steps 30"
$G train pretrain --data "$TMP/train" --out "$TMP/kref" $K --ckpt-every 3 >/dev/null 2>&1
$G train pretrain --data "$TMP/train" --out "$TMP/k" $K --ckpt-every 3 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 400); do grep -qs 'ckpt-0000000[6-9]\|ckpt-0000001' "$TMP/k/latest" && break; sleep 0.01; done
kill -9 $pid 2>/dev/null; killed=$?
wait $pid 2>/dev/null
[ $killed -eq 0 ] && [ -f "$TMP/k/latest" ]; _result $? "killed mid-run with a checkpoint ($(cat "$TMP/k/latest" 2>/dev/null))"
mkdir -p "$TMP/k/ckpt-00000099.tmp" && echo partial > "$TMP/k/ckpt-00000099.tmp/model.safetensors"
check "resume after SIGKILL" $G train pretrain --data "$TMP/train" --out "$TMP/k" $K --ckpt-every 3 --resume
losses "$TMP/kref" > "$TMP/lkr"; losses "$TMP/k" > "$TMP/lk"
[ "$(wc -l < "$TMP/lk")" -eq 30 ] && cmp -s "$TMP/lkr" "$TMP/lk"
_result $? "after SIGKILL and resume: every step once, the same losses"

# refused settings
check_fails "resume with another batch size" 1 $G train pretrain --data "$TMP/train" --out "$TMP/b" \
  --layers 2 --heads 2 --width 32 --context 32 -B 2 -T 32 --steps 40 --resume -q
grep -q "B=4" "$TMP/.err"; _result $? "the message names the checkpoint's settings"
printf 'x\n' | $G shards pack -o "$TMP/other" - 2>/dev/null
$G shards pack -o "$TMP/sft-like" $lic/GPL-3 2>/dev/null
check_fails "a checkpoint on data of another record kind" 1 $G train sft --data "$TMP/train" --out "$TMP/s" \
  --init "$TMP/a" -q
grep -q "not SFT records" "$TMP/.err"; _result $? "names the record kind"
head -c 4096 /dev/urandom > "$TMP/bad.safetensors"
check_fails "a corrupt checkpoint exits 3" 3 $G train pretrain --data "$TMP/train" --out "$TMP/c" --init "$TMP/bad.safetensors" -q
grep -q "bad.safetensors" "$TMP/.err"; _result $? "the corrupt checkpoint is named"

# gptline eval agrees with the run's last evaluation
check "eval" $G eval --model "$TMP/a" --data "$TMP/val" -B 4 -T 32 --batches 4
want=$(sed -n 's/.*"val_loss":\([^,]*\).*/\1/p' "$TMP/a/metrics.jsonl" | tail -1)
got=$(sed -n 's/.*"loss":\([^,]*\).*/\1/p' "$TMP/.out")
awk -v a="$want" -v b="$got" 'BEGIN {d = a - b; if (d < 0) d = -d; exit !(d < 1e-4)}'
_result $? "eval loss $got equals the run's $want"

# sampling from the checkpoint
check "sample --help" $G sample --help
check "sample greedy ids" $G sample --model "$TMP/a" --prompt-ids "71 78 85" -n 8 -t 0 --ids
is "8 ids" "$(wc -w < "$TMP/.out")" 8
cp "$TMP/.out" "$TMP/g1"; $G sample --model "$TMP/a" --prompt-ids "71,78,85" -n 8 -t 0 --ids > "$TMP/g2"
cmp -s "$TMP/g1" "$TMP/g2"; _result $? "greedy is deterministic"
check "sample text" $G sample --model "$TMP/a" --prompt "The " -n 20 -t 0.8 --top-k 40 --seed 3 -N 2
is "two samples, one per line" "$(wc -l < "$TMP/.out")" 2
check_fails "bad ids" 2 $G sample --model "$TMP/a" --prompt-ids "1 x" -n 3

# data parallel: 2 ranks x accum 1 == 1 process x accum 2
if command -v mpirun >/dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
  check "1 process, accum 2" $G train pretrain --data "$TMP/train" --out "$TMP/m1" $M --steps 12 --accum 2
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 check "mpirun -np 2, accum 1" mpirun -np 2 $G train pretrain \
    --data "$TMP/train" --out "$TMP/m2" $M --steps 12 --accum 1
  losses "$TMP/m1" > "$TMP/l1"; losses "$TMP/m2" > "$TMP/l2"
  paste "$TMP/l1" "$TMP/l2" | awk 'NF == 4 {n++; d = $2 - $4; if (d < 0) d = -d; if (d > 1e-4 * $2) bad++}
    END {exit !(n == 12 && !bad)}'
  _result $? "2 ranks give the same 12 losses as gradient accumulation (rel. 1e-4)"
else
  echo "ok $((_n += 1)) # skip mpirun not installed"
fi

done_testing
