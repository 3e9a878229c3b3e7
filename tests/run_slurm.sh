#!/usr/bin/env bash
# run_slurm.sh — `gptline run --slurm` on a real Slurm: a single-node
# cluster (munged, slurmctld, slurmd from Debian's packages,
# tests/slurm_cluster.sh) started for the test. A pipeline of ingest (a
# 2-task array over three inputs made here, with a tokenizer trained by
# the pipeline) -> dedup -> pretrain (2 ranks, srun --mpi=pmix) -> sft
# (from an imported JSONL) is submitted, waited
# for, and checked: every stage done in --status, the dataset verifies,
# the checkpoint and metrics say world 2; a rerun submits nothing; one
# changed training parameter resubmits exactly pretrain and sft; while
# those jobs are queued or running a rerun leaves them alone and --status
# names their Slurm states; pretrain's job cancelled with scancel is seen
# as CANCELLED (sft's as never able to start), and the next run resubmits
# both and the pipeline completes. Skips only where Slurm is not installed
# or its daemons cannot start here.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/slurm_cluster.sh"
G=$GPTLINE
PY=${PYTHON:-python3}
lic=/usr/share/common-licenses
[ -d $lic ] || skip_all "no $lic on this machine"
trap 'slurm_cluster_stop; [ -n "${GL_KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
slurm_cluster_start "$TMP/slurm" || skip_all "no Slurm: $SLURM_CLUSTER_WHY"

# the jobs run as this user, with this environment (sbatch --export=ALL);
# Open MPI inside them: shared memory without CMA, no InfiniBand probing
export GPTLINE_METRICS_DIR=$TMP/prom OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none \
  OMPI_MCA_pml=ob1
mkdir -p prom

# inputs: three JSONL files of paragraphs (c repeats some of a: dedup has work)
jsonl() { # FILE -> one document per paragraph
  awk -v RS= '{gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, " "); gsub(/\n/, " ");
    if (length($0) > 60) printf "{\"id\":\"%d\",\"text\":\"%s\"}\n", NR, $0}' "$1"
}
jsonl $lic/GPL-3 | head -40 > a.jsonl
jsonl $lic/Apache-2.0 > b.jsonl
head -10 a.jsonl | sed 's/"id":"/"id":"c/' > c.jsonl
for i in $(seq 20); do printf '{"prompt": "Say %d", "response": "%d"}\n' $i $i; done > sft.jsonl

# a training stage's launch waits at this gate until the file "go" exists:
# its job is then running, deterministically, for as long as the test needs
cat > gate <<EOF
#!/bin/sh
for i in \$(seq 600); do [ -e "$TMP/go" ] && exec "\$@"; sleep 0.1; done
exit 1
EOF
chmod +x gate
M="layers = 1
heads = 1
width = 16
context = 32
batch = 2
seq = 32
threads = 1
eval-every = 0"
write_pipeline() { # PRETRAIN-STEPS
  cat > p.ini <<EOF
[pipeline]
work = work
slurm-srun = $TMP/gate srun --mpi=pmix
; training with MPI leaks by design; the rest is checked for leaks outside the jobs
slurm-opt = --export=ALL,ASAN_OPTIONS=abort_on_error=1:detect_leaks=0

[tokenizer]
input = $lic/GPL-2
vocab-size = 300

[ingest]
inputs = a.jsonl b.jsonl c.jsonl
tokenizer = @tokenizer
no-filters = true
slurm-array = 2

[dedup]

[import.sft]
kind = sft
input = sft.jsonl

[pretrain]
$M
steps = $1
ckpt-every = 2
slurm-opt = --ntasks=2 --cpus-per-task=1

[sft]
data = @import.sft
$M
steps = 3
EOF
}
W=$TMP/work
submitted() { # the stages the last run submitted, in order
  sed -n 's/^gptline: run: \([^:]*\): \(run\|resume\) (.*/\1/p' "$TMP/.err" | tr '\n' ' ' | sed 's/ $//'
}
njobs() { grep -c ': Slurm job [0-9]*$' "$TMP/.err"; }
wait_idle() { # TIMEOUT_S: until no job is left in the queue
  local t=0
  while [ -n "$(squeue -h 2>/dev/null)" ] && [ $t -lt $(($1 * 10)) ]; do sleep 0.1; t=$((t + 1)); done
  [ -z "$(squeue -h 2>/dev/null)" ]
}
wait_record() { # STAGE STATUS TIMEOUT_S
  local t=0
  until grep -qs "\"status\": \"$2\"" "$W/state/$1.json"; do
    [ $t -lt $(($3 * 10)) ] || return 1
    sleep 0.1; t=$((t + 1))
  done
}
statuses() { $G run --status p.ini 2>/dev/null | awk 'NR > 2 {printf "%s=%s ", $1, $2}' | sed 's/ $//'; }
show_logs() { for f in "$W"/logs/*.log; do echo "# == $f"; tail -5 "$f" | sed 's/^/#   /'; done; }
json() { $PY -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1" 2>/dev/null; }
all_done="tokenizer=done ingest=done import.sft=done dedup=done pretrain=done sft=done"

# ---- the whole pipeline as Slurm jobs -------------------------------------------
write_pipeline 4
touch go
check "gptline run --slurm submits the pipeline" $G run --slurm p.ini
is "every stage submitted" "$(submitted)" "tokenizer ingest import.sft dedup pretrain sft"
is "8 jobs: ingest's start, array and end, then one per stage" "$(njobs)" 8
wait_idle 300; _result $? "every job left the queue"
st=$(statuses)
is "--status: every stage done" "$st" "$all_done"
[ "$st" = "$all_done" ] || show_logs
check "the deduplicated dataset verifies" $G shards verify "$W/out/ingest"
is "ingest ran as ranks 0 and 1 of 2" "$(ls "$W"/out/ingest/stats/ 2>/dev/null | tr '\n' ' ')" \
  "rank-00000.json rank-00001.json "
grep -q '"removed": *[1-9]' "$W/out/ingest/dedup/removed.json"; _result $? "dedup removed c's copies"
is "pretrain's last checkpoint" "$(cat "$W/out/pretrain/latest" 2>/dev/null)" ckpt-00000004
is "its checkpoint records world 2" "$(json "$W/out/pretrain/ckpt-00000004/state.json" "['world']")" 2
grep -q '^gptline_train_world_size{stage="pretrain"} 2$' prom/gptline-train-pretrain.prom
_result $? "its metrics: world size 2"
is "4 steps in its metrics.jsonl" "$(grep -c '"loss"' "$W/out/pretrain/metrics.jsonl" 2>/dev/null)" 4
pj=$(json "$W/state/pretrain.json" "['job']")
grep -q 'ranks=2' "$W/logs/pretrain-$pj.log"; _result $? "its Slurm log says ranks=2"
[ -f "$W/out/sft/$(cat "$W/out/sft/latest" 2>/dev/null)/model.safetensors" ]; _result $? "sft wrote its model"

check "a second run" $G run --slurm p.ini
is "submits nothing" "$(njobs)" 0
grep -q "every stage is up to date" "$TMP/.err"; _result $? "and says every stage is up to date"

# ---- one training parameter changes; the jobs are watched ----------------------
rm go
write_pipeline 6
check "run after pretrain's steps changed" $G run --slurm p.ini
is "exactly pretrain and sft are resubmitted" "$(submitted)" "pretrain sft"
grep -q "pretrain: run (parameter steps changed: 4 -> 6)" "$TMP/.err"; _result $? "naming the parameter"
pj=$(json "$W/state/pretrain.json" "['job']")
sj=$(json "$W/state/sft.json" "['job']")
wait_record pretrain running 30; _result $? "pretrain's job has started (job $pj)"
check "a run while they are in Slurm" $G run --slurm p.ini
is "leaves them alone" "$(njobs)" 0
grep -q "pretrain: Slurm job $pj RUNNING; left alone" "$TMP/.err"; _result $? "pretrain: RUNNING, left alone"
grep -q "sft: Slurm job $sj PENDING (Dependency); left alone" "$TMP/.err"; _result $? "sft: PENDING (Dependency)"
check "--status" $G run --status p.ini
grep -q "^pretrain *running .*Slurm job $pj RUNNING" "$TMP/.out"; _result $? "--status: pretrain running"
grep -q "^sft *queued .*Slurm job $sj PENDING (Dependency)" "$TMP/.out"; _result $? "--status: sft queued"
check_fails "a local run of a stage still in Slurm is refused" 1 $G run --force sft p.ini
grep -q "stage sft: Slurm job $sj PENDING (Dependency): wait for it" "$TMP/.err"; _result $? "saying why"

# ---- a cancelled job -----------------------------------------------------------------
scancel "$pj"
st=$(slurm_wait "$pj" 30); is "pretrain's job cancelled ($st)" $? 1
for _ in $(seq 300); do # Slurm marks sft's dependency as never satisfied at its next pass (slow on a loaded machine)
  squeue -h -j "$sj" -o %r 2>/dev/null | grep -q DependencyNeverSatisfied && break; sleep 0.1
done
rec=$(cat "$W/state/pretrain.json")
check "--status after scancel" $G run --status p.ini
grep -q "^pretrain *interrupted .*Slurm job $pj CANCELLED; runs again" "$TMP/.out"
_result $? "--status: pretrain interrupted, Slurm job CANCELLED"
grep -q "^sft *interrupted .*Slurm job $sj PENDING (DependencyNeverSatisfied): it can never start" "$TMP/.out"
_result $? "--status: sft's job can never start"
is "--status left the record as it was" "$(cat "$W/state/pretrain.json")" "$rec"
touch go
check "the next run" $G run --slurm p.ini
is "resubmits pretrain and sft" "$(submitted)" "pretrain sft"
grep -q "pretrain: Slurm job $pj CANCELLED; recorded as interrupted" "$TMP/.err"; _result $? "recording pretrain's end"
grep -q "sft: cancelled Slurm job $sj" "$TMP/.err"; _result $? "cancelling sft's stuck job"
wait_idle 300; _result $? "every job left the queue"
st=$(statuses)
is "--status: every stage done" "$st" "$all_done"
[ "$st" = "$all_done" ] || show_logs
is "pretrain's last checkpoint" "$(cat "$W/out/pretrain/latest" 2>/dev/null)" ckpt-00000006
is "6 steps in its metrics.jsonl" "$(grep -c '"loss"' "$W/out/pretrain/metrics.jsonl" 2>/dev/null)" 6
is "sft's old job ended CANCELLED" "$(scontrol -o show job "$sj" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')" CANCELLED
check "a last run" $G run --slurm p.ini
is "submits nothing" "$(njobs)" 0

done_testing
