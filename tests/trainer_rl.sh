#!/usr/bin/env bash
# trainer_rl.sh — `gptline train rl` from the command line, on data made
# with the other commands (a vocabulary trained here, pretraining shards, RM
# rankings and RL prompts imported from JSONL, a small policy and reward
# model trained for a few steps): PPO and GRPO runs complete and log every
# metric; the first step's KL to the reference is 0; a run killed with
# SIGKILL resumes from its last checkpoint and logs the same statistics as
# an uninterrupted run; a resume with other settings is refused;
# `mpirun -np 2` with B prompts per rank gives the first-step statistics of
# one process with 2B, and so does `train dpo` on the same rankings;
# `gptline sample` reads the RL checkpoint.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
lic=/usr/share/common-licenses
[ -d $lic ] || skip_all "no $lic on this machine"

check "train rl --help" $G train rl --help
grep -q -- "--target-kl" "$TMP/.out" && grep -q -- "--ptx-data" "$TMP/.out"; _result $? "--help lists the knobs"
check_fails "missing --reward is a usage error" 2 $G train rl --policy x --prompts y --out z
check_fails "a bad --algo is a usage error" 2 $G train rl --algo dpo --policy x --reward y --prompts z --out o

# data: a vocabulary with chat roles, pretraining shards, rankings, prompts
$G tokenizer train -o "$TMP/v.gltok" -n 300 $lic/GPL-3 2>/dev/null
V="$TMP/v.gltok"
$G shards pack -t "$V" -o "$TMP/docs" $lic/GPL-3 $lic/Apache-2.0 2>/dev/null
words=$(tr -cs 'a-z' '\n' < $lic/GPL-3 | awk 'length > 2' | head -400)
set -- $words
: > "$TMP/p.jsonl"; : > "$TMP/rm.jsonl"
i=0
while [ $# -ge 4 ]; do
  printf '{"prompt": "%s %s"}\n' "$1" "$2" >> "$TMP/p.jsonl"
  printf '{"prompt": "%s %s", "responses": ["free %s", "%s"]}\n' "$1" "$2" "$3" "$4" >> "$TMP/rm.jsonl"
  shift 4; i=$((i + 1))
done
check "import RL prompts" $G shards import --kind rl -t "$V" -o "$TMP/prompts" "$TMP/p.jsonl"
check "import rankings" $G shards import --kind rm -t "$V" -o "$TMP/rank" "$TMP/rm.jsonl"
check "policy: pretrain 20 steps" $G train pretrain --data "$TMP/docs" --out "$TMP/pol" --layers 2 --heads 2 \
  --width 32 --context 48 -B 4 -T 48 --steps 20 --lr 3e-3 --warmup 2 --threads 1 -q
check "reward model: 10 steps" $G train rm --data "$TMP/rank" --init "$TMP/pol" --out "$TMP/rmo" -B 4 -T 48 \
  --steps 10 --lr 1e-3 --warmup 2 --threads 1 -q
check_fails "a policy checkpoint is not a reward model" 1 $G train rl --policy "$TMP/pol" --reward "$TMP/pol" \
  --prompts "$TMP/prompts" --out "$TMP/bad" -q
grep -q "score.safetensors" "$TMP/.err"; _result $? "the message names the missing head"

R="--policy $TMP/pol --reward $TMP/rmo --prompts $TMP/prompts --max-new 16 --lr 1e-3 --threads 1 -q"
stats() { sed 's/,"gen_s".*//' "$1/metrics.jsonl"; } # every field but the timings

check "PPO 40 steps" $G train rl $R --out "$TMP/a" -B 8 --minibatches 2 --steps 40 --ckpt-every 2
is "a metrics line per step" "$(wc -l < "$TMP/a/metrics.jsonl")" 40
for k in reward kl kl_coef entropy clipfrac approx_kl value_loss response_len gen_s train_s gen_share; do
  grep -q "\"$k\":" "$TMP/a/metrics.jsonl" || { echo "# no $k"; false; } || break
done
_result $? "reward, KL, entropy, clip fraction, approx KL, value loss, length, time split logged"
kl0=$(head -1 "$TMP/a/metrics.jsonl" | sed 's/.*"kl":\([^,]*\),.*/\1/')
awk -v k="$kl0" 'BEGIN {exit !(k == 0)}'; _result $? "the first step's KL to the reference is 0 ($kl0)"
is "rl.png rendered" "$(head -c 8 "$TMP/a/rl.png" | od -An -tx1 | tr -d ' ')" "89504e470d0a1a0a"
ls "$TMP/a/ckpt-00000040" > "$TMP/files"
is "the checkpoint holds policy, critic, their optimisers and the state" "$(tr '\n' ' ' < "$TMP/files")" \
  "model.safetensors optim.safetensors state.json value.safetensors value_head.safetensors value_optim.safetensors "
check "sample from the RL checkpoint" $G sample --model "$TMP/a" -T "$V" --chat --prompt "the program" -n 8 -t 0

# SIGKILL mid-run, then resume: the same statistics as the run not killed
$G train rl $R --out "$TMP/k" -B 8 --minibatches 2 --steps 40 --ckpt-every 2 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1000); do grep -qs 'ckpt-0000000[4-9]\|ckpt-000000[1-3]' "$TMP/k/latest" && break; sleep 0.01; done
kill -9 $pid 2>/dev/null; killed=$?
{ wait $pid; } 2>/dev/null  # no "Killed" line from the shell
[ $killed -eq 0 ] && [ -f "$TMP/k/latest" ]; _result $? "killed mid-run with a checkpoint ($(cat "$TMP/k/latest" 2>/dev/null))"
check "resume after SIGKILL" $G train rl $R --out "$TMP/k" -B 8 --minibatches 2 --steps 40 --ckpt-every 2 --resume
stats "$TMP/a" > "$TMP/sa"; stats "$TMP/k" > "$TMP/sk"
[ "$(wc -l < "$TMP/sk")" -eq 40 ] && cmp -s "$TMP/sa" "$TMP/sk"
_result $? "after SIGKILL and resume: every step once, the same statistics"
[ $? -eq 0 ] || diff "$TMP/sa" "$TMP/sk" | head -4 | sed 's/^/#   /'
check_fails "resume with another batch is refused" 1 $G train rl $R --out "$TMP/k" -B 4 --steps 40 --resume
grep -q '"B":8' "$TMP/.err"; _result $? "the message names the checkpoint's settings"

# GRPO, with an adaptive KL coefficient: stopped at 5, resumed to 10
G2="--algo grpo -B 2 --group 4 --steps 10 --target-kl 1 --kl-horizon 16"
check "GRPO 10 steps" $G train rl $R $G2 --out "$TMP/g"
check "GRPO until step 5" $G train rl $R $G2 --out "$TMP/h" --until 5
check "GRPO resumed" $G train rl $R $G2 --out "$TMP/h" --resume
stats "$TMP/g" > "$TMP/sg"; stats "$TMP/h" > "$TMP/sh"
[ "$(wc -l < "$TMP/sh")" -eq 10 ] && cmp -s "$TMP/sg" "$TMP/sh"
_result $? "GRPO resumed repeats the statistics, the adaptive beta included"
b0=$(head -1 "$TMP/sg" | sed 's/.*"kl_coef":\([^,]*\),.*/\1/'); b9=$(tail -1 "$TMP/sg" | sed 's/.*"kl_coef":\([^,]*\),.*/\1/')
awk -v a="$b0" -v b="$b9" 'BEGIN {exit !(a != b)}'; _result $? "beta adapts ($b0 -> $b9)"

# same_stats NAME FILE1 FILE2 LINE: the statistics of line LINE agree to 1e-4 relative
same_stats() {
  local f1 f2 a b k bad=0
  f1=$(sed -n "$4p" "$2"); f2=$(sed -n "$4p" "$3")
  [ -n "$f1" ] && [ -n "$f2" ] || { echo "# no line $4 in $2 or $3"; bad=1; }
  for k in reward reward_std kl entropy response_len cut_frac clipfrac approx_kl policy_loss value_loss grad_norm \
      ptx_loss loss accuracy margin chosen rejected; do
    echo "$f1" | grep -q "\"$k\":" || continue
    a=$(echo "$f1" | sed "s/.*\"$k\":\([^,}]*\).*/\1/"); b=$(echo "$f2" | sed "s/.*\"$k\":\([^,}]*\).*/\1/")
    awk -v a="$a" -v b="$b" 'BEGIN {d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a; exit !(d <= 1e-4 * m + 1e-6)}' ||
      { echo "# $k: $a vs $b"; bad=1; }
  done
  _result $bad "$1"
}

# PPO-ptx: the pretraining term is logged, and its sampler resumes
P3="-B 4 --steps 4 --ptx-data $TMP/docs --ptx-batch 2 --ptx-coef 0.5"
check "PPO-ptx 4 steps" $G train rl $R $P3 --out "$TMP/x1"
grep -q '"ptx_loss":' "$TMP/x1/metrics.jsonl"; _result $? "ptx_loss logged"
$G train rl $R $P3 --out "$TMP/x2" --until 2 >/dev/null 2>&1
check "PPO-ptx resumed at step 2" $G train rl $R $P3 --out "$TMP/x2" --resume
stats "$TMP/x1" > "$TMP/s1"; stats "$TMP/x2" > "$TMP/s2"
cmp -s "$TMP/s1" "$TMP/s2"; _result $? "PPO-ptx resumed repeats the statistics, ptx_loss included"

# --micro splits the forwards, not the result
check "PPO in micro-batches of 3 rows" $G train rl $R --out "$TMP/u" -B 8 --minibatches 2 --steps 2 --micro 3
stats "$TMP/u" > "$TMP/su"
same_stats "--micro 3 gives the first step of the whole-batch run" "$TMP/sa" "$TMP/su" 1

# data parallel: 2 ranks x 2 prompts == 1 process x 4 prompts in the first step
if command -v mpirun >/dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
  check "1 process, 4 prompts" $G train rl $R --out "$TMP/m1" -B 4 --minibatches 2 --steps 3
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 check "mpirun -np 2, 2 prompts each" mpirun -np 2 $G train rl $R \
    --out "$TMP/m2" -B 2 --minibatches 2 --steps 3
  is "3 steps logged" "$(wc -l < "$TMP/m2/metrics.jsonl" 2>/dev/null)" 3
  same_stats "first-step statistics of 2 ranks equal one process's (reward, KL, entropy, clip, value loss, ...)" \
    "$TMP/m1/metrics.jsonl" "$TMP/m2/metrics.jsonl" 1
  # DPO: 2 ranks x 2 rankings (4 rows) == 1 process x 4 rankings (8 rows)
  D="--init $TMP/pol --data $TMP/rank -T 48 --steps 3 --lr 1e-3 --warmup 1 --threads 1 -q"
  mkdir -p "$TMP/prom"
  GPTLINE_METRICS_DIR="$TMP/prom" check "DPO, 1 process, 8 rows" $G train dpo $D --out "$TMP/d1" -B 8
  grep -q '^gptline_train_world_size{stage="dpo"} 1$' "$TMP/prom/gptline-train-dpo.prom"
  _result $? "DPO's Prometheus file: gptline-train-dpo.prom, stage=\"dpo\""
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 check "DPO, mpirun -np 2, 4 rows each" mpirun -np 2 $G train dpo $D \
    --out "$TMP/d2" -B 4
  same_stats "DPO: the first step of 2 ranks equals one process's (loss, grad norm, accuracy, margin, rewards)" \
    "$TMP/d1/metrics.jsonl" "$TMP/d2/metrics.jsonl" 1
  same_stats "DPO: and so does the third, after two updates" "$TMP/d1/metrics.jsonl" "$TMP/d2/metrics.jsonl" 3
else
  echo "ok $((_n += 1)) # skip mpirun not installed"
fi

done_testing
