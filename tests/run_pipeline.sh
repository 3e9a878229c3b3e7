#!/usr/bin/env bash
# run_pipeline.sh — `gptline run` on small pipelines built from text on this
# machine: a whole pipeline runs (tokenizer, ingest, dedup, shards, import,
# pretrain, sft, rm); a rerun does nothing; changing one parameter reruns
# exactly the stages downstream of it; a pipeline killed mid-pretraining
# resumes that stage from its checkpoint and skips the finished ones;
# --force, --dry-run, --status; a failing stage is named with its log and
# exit status; malformed pipeline files are refused with the line at fault;
# --slurm's scripts, and running them through a stand-in sbatch; what
# stand-ins for scontrol/sacct say of jobs that ended without recording it.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
lic=/usr/share/common-licenses
[ -d $lic ] || skip_all "no $lic on this machine"
cd "$TMP" || exit 1

check "--help" $G run --help
check_fails "no pipeline file is a usage error" 2 $G run

# inputs: documents as JSONL (some repeated, for dedup), conversations and
# rankings made with a vocabulary trained here
python_free_jsonl() { # FILE: one JSON document per paragraph of $lic/GPL-3, the first 20 twice
  awk -v RS= '{gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, " "); gsub(/\n/, " "); if (length($0) > 60) print}' \
    $lic/GPL-3 | awk '{printf "{\"id\":\"%d\",\"text\":\"%s\"}\n", NR, $0} NR <= 20 {d[NR] = $0}
      END {for (i = 1; i <= 20; i++) printf "{\"id\":\"d%d\",\"text\":\"%s\"}\n", i, d[i]}' > "$1"
}
python_free_jsonl docs.jsonl
for i in $(seq 40); do printf '{"prompt": "Repeat: word%d", "response": "word%d"}\n' $i $i; done > sft.jsonl
for i in $(seq 40); do
  printf '{"prompt": "Is %d even?", "responses": ["%s", "%s"]}\n' $i \
    "$([ $((i % 2)) = 0 ] && echo yes || echo no)" "$([ $((i % 2)) = 0 ] && echo no || echo yes)"
done > rm.jsonl

M="layers = 1
heads = 1
width = 32
context = 32
batch = 4
seq = 32
threads = 1"
write_pipeline() { # STEPS_SFT
  cat > p.ini <<EOF
; a small pipeline: every stage kind but label-export and rl
[pipeline]
work = work

[tokenizer]
input = $lic/GPL-2
vocab-size = 300

[ingest]
inputs = docs.jsonl
tokenizer = @tokenizer
no-filters = true

[dedup]

[shards.val]
input = $lic/Apache-2.0
tokenizer = @tokenizer

[import.sft]
kind = sft
input = sft.jsonl

[import.rm]
kind = rm
input = rm.jsonl

[pretrain]
val = @shards.val
$M
steps = 30
ckpt-every = 10
eval-every = 30
eval-batches = 2

[sft]
data = @import.sft
$M
steps = $1

[rm]
data = @import.rm
$M
steps = 4
EOF
}
write_pipeline 5
W=$TMP/work
stamp() { sed -n 's/.*"finished": *\([0-9.e+]*\).*/\1/p' "$W/state/$1.json"; }
ran() { # the stages of the last run, in order
  sed -n 's/^gptline: run: \([^:]*\): \(run\|resume\) .*/\1/p' "$TMP/.err" | tr '\n' ' ' | sed 's/ $//'
}

check "dry run of a new pipeline" $G run --dry-run p.ini
is "dry run: every stage would run" "$(awk '/^[a-z]/ {print $2}' "$TMP/.out" | sort -u)" "run"
grep -q '^pretrain *run *upstream stage dedup runs$' "$TMP/.out"; _result $? "dry run says why"
grep -q "\$ .*gptline train pretrain --out $W/out/pretrain --data $W/out/ingest --val $W/out/shards.val" "$TMP/.out"
_result $? "dry run prints the command line, references resolved"
[ ! -e "$W/state/pretrain.json" ]; _result $? "dry run runs nothing"

check "the whole pipeline runs" $G run p.ini
is "in dependency order" "$(ran)" "tokenizer ingest shards.val import.sft import.rm dedup pretrain sft rm"
[ -f "$W/out/rm/latest" ] && [ -f "$W/out/rm/$(cat "$W/out/rm/latest")/score.safetensors" ]
_result $? "the reward model was trained"
grep -q '"val_loss"' "$W/out/pretrain/metrics.jsonl"; _result $? "pretraining evaluated on the held-out shards"
grep -q 'duplicates removed' "$W/logs/dedup.log"; _result $? "dedup ran on ingest's output (its log)"

check "a rerun" $G run p.ini
is "a rerun runs nothing" "$(ran)" ""
grep -q "every stage is up to date" "$TMP/.err"; _result $? "and says so"
check "status" $G run --status p.ini
is "status: every stage done" "$(awk 'NR > 2 {print $2}' "$TMP/.out" | sort -u)" "done"

# one parameter: sft's steps -> sft and rm (whose init is sft) rerun, nothing upstream
pre=$(stamp pretrain)
write_pipeline 6
check "dry run after a change" $G run --dry-run p.ini
grep -q '^sft *run *parameter steps changed: 5 -> 6$' "$TMP/.out"; _result $? "the changed parameter is named"
check "run after changing sft's steps" $G run p.ini
is "exactly the stages downstream of it rerun" "$(ran)" "sft rm"
is "pretraining untouched" "$(stamp pretrain)" "$pre"

# an input file changes -> its stage and those after it
echo '{"prompt": "Repeat: extra", "response": "extra"}' >> sft.jsonl
check "run after an input changed" $G run p.ini
is "a changed input reruns its stage and the dependents" "$(ran)" "import.sft sft rm"

# an output altered or removed behind the pipeline's back
rm -rf "$W/out/shards.val"
check "run after an output was removed" $G run p.ini
is "a missing output reruns its stage and the dependents" "$(ran)" "shards.val pretrain sft rm"

# ingest grows: a new input is ingested in place, then dedup and what follows
head -5 docs.jsonl | sed 's/"id":"/"id":"new/' > more.jsonl
sed -i 's/^inputs = docs.jsonl$/inputs = docs.jsonl more.jsonl/' p.ini
check "dry run after adding an input" $G run --dry-run p.ini
grep -q '^ingest *resume *1 input added; relaunched' "$TMP/.out"; _result $? "an added ingest input relaunches ingest"
check "run after adding an input" $G run p.ini
is "ingest, dedup and the rest rerun" "$(ran)" "ingest dedup pretrain sft rm"
grep -q "already done" "$W/logs/ingest.log"; _result $? "ingest skipped the input it had finished"

check "--force" $G run --force import.rm p.ini
is "--force reruns the stage and its dependents" "$(ran)" "import.rm rm"
check_fails "--force of an unknown stage" 2 $G run --force nope p.ini

# killed mid-pretraining (the whole process group, as a lost node would be),
# then rerun: the finished stages are skipped, pretraining resumes
sed -i 's/^steps = 30$/steps = 400/; s/^eval-every = 30$/eval-every = 400/' p.ini
setsid $G run p.ini > /dev/null 2>&1 &
pid=$!
for _ in $(seq 1000); do # its fresh run has begun (the old output is gone) and checkpointed
  grep -qs '"status": "running"' "$W/state/pretrain.json" && grep -qs 'ckpt-' "$W/out/pretrain/latest" && break
  sleep 0.01
done
kill -9 -- -$pid 2>/dev/null; killed=$?
{ wait $pid; } 2>/dev/null
[ $killed -eq 0 ] && [ -f "$W/out/pretrain/latest" ]; _result $? "killed during pretraining ($(cat "$W/out/pretrain/latest" 2>/dev/null))"
check "status after the kill" $G run --status p.ini
grep -q '^pretrain *interrupted .*resumes from ckpt-' "$TMP/.out"; _result $? "status: pretrain interrupted, resumes"
grep -q '^sft *stale' "$TMP/.out"; _result $? "status: sft stale"
check "rerun after the kill" $G run p.ini
is "it resumes pretraining and reruns what follows" "$(ran)" "pretrain sft rm"
grep -q 'stage pretrain: resume (interrupted; resumes from ckpt-' "$W/logs/pretrain.log"; _result $? "the log says resumed"
grep -q "steps [1-9][0-9]*\.\.400" "$W/logs/pretrain.log"; _result $? "the trainer continued from its checkpoint"
is "every step once in the metrics" "$(grep -c '"loss"' "$W/out/pretrain/metrics.jsonl")" \
  "$(sed -n 's/^{"step":\([0-9]*\),"loss".*/\1/p' "$W/out/pretrain/metrics.jsonl" | sort -un | wc -l)"
is "400 steps" "$(grep -c "\"loss\"" "$W/out/pretrain/metrics.jsonl")" 400

# a failing stage stops the pipeline and names itself, its log and exit status
sed -i 's/^\[rm\]$/[rm]\nno-such-option = 1/' p.ini
check_fails "a failing stage" 1 $G run p.ini
grep -q "stage rm failed with exit status 2; its log: $W/logs/rm.log" "$TMP/.err"; _result $? "names stage, exit status, log"
grep -q "no-such-option" "$TMP/.err"; _result $? "shows the end of the log"
check "status after the failure" $G run --status p.ini
grep -q "^rm *failed .*exit status 2; log $W/logs/rm.log" "$TMP/.out"; _result $? "status: failed with the log"

# --slurm: the scripts (--dry-run), then a stand-in sbatch that runs each job
# at once (its dependencies ran before it) to check the jobs' bookkeeping
cat > s.ini <<EOF
[pipeline]
work = swork
slurm-opt = --partition=cpu
[ingest]
inputs = docs.jsonl
no-filters = true
slurm-array = 2
[dedup]
[pretrain]
$M
steps = 4
slurm-opt = --nodes=1
EOF
check "--slurm --dry-run" $G run --slurm --dry-run --slurm-opt --account=x s.ini
grep -q '^# JOB_ingest=$(sbatch --parsable --dependency=afterok:$JOB_ingest_start --partition=cpu --account=x --array=0-1 ' "$TMP/.out"
_result $? "ingest is a job array"
grep -q '^# JOB_dedup=$(sbatch --parsable --dependency=afterok:$JOB_ingest_end --partition=cpu' "$TMP/.out"
_result $? "dedup waits for ingest"
grep -q '^srun "$G" train pretrain ' "$TMP/.out"; _result $? "training goes through srun"
grep -q -- '--rank "$SLURM_ARRAY_TASK_ID" --world 2' "$TMP/.out"; _result $? "each array task is one rank"
grep -q -- '--nodes=1' "$TMP/.out"; _result $? "per-stage sbatch options"
[ ! -e swork/state/ingest.json ]; _result $? "--dry-run submits nothing"

mkdir -p bin
cat > bin/sbatch <<'EOF'
#!/bin/bash
# stand-in sbatch: runs the job now; prints a job id like --parsable
id=$(( $(cat "$FAKE_SLURM/next" 2>/dev/null || echo 100) + 1 )); echo $id > "$FAKE_SLURM/next"
echo "$*" >> "$FAKE_SLURM/calls"
script=${!#} arr=
for a in "$@"; do case $a in --array=0-*) arr=${a#--array=0-} ;; esac; done
if [ -n "$arr" ]; then
  for t in $(seq 0 "$arr"); do SLURM_JOB_ID=$id SLURM_ARRAY_TASK_ID=$t bash "$script" >> "$FAKE_SLURM/out" 2>&1; done
else
  SLURM_JOB_ID=$id bash "$script" >> "$FAKE_SLURM/out" 2>&1
fi
echo $id
EOF
printf '#!/bin/bash\nexec "$@"\n' > bin/srun
chmod +x bin/sbatch bin/srun
export FAKE_SLURM=$TMP
check "--slurm submits" env PATH="$TMP/bin:$PATH" $G run --slurm s.ini
is "one sbatch per job (ingest: start, array, end)" "$(wc -l < calls)" 5
grep -q -- '--dependency=afterok:103 ' calls; _result $? "dedup depends on ingest's end job"
check "status after the Slurm jobs" $G run --status s.ini
is "the jobs recorded their stages as done" "$(awk 'NR > 2 {print $2}' "$TMP/.out" | sort -u)" "done"
check "a rerun after Slurm" env PATH="$TMP/bin:$PATH" $G run --slurm s.ini
is "nothing submitted again" "$(wc -l < calls)" 5
# Slurm requeues a job (sbatch --requeue, a failed node) by running its
# script again with SLURM_RESTART_COUNT set: training continues from its
# checkpoint instead of starting over
grep -q 'SLURM_RESTART_COUNT' swork/slurm/pretrain.sbatch; _result $? "the training job script handles a requeue"
steps_before=$(grep -c '"loss"' swork/out/pretrain/metrics.jsonl)
check "the requeued training job runs" env PATH="$TMP/bin:$PATH" SLURM_JOB_ID=300 SLURM_RESTART_COUNT=1 \
  bash swork/slurm/pretrain.sbatch
grep -q -- "steps 4\.\.4" "$TMP/.err"; _result $? "it continued from the checkpoint of step 4 (steps 4..4)"
is "no step trained twice after the requeue" "$(grep -c '"loss"' swork/out/pretrain/metrics.jsonl)" "$steps_before"

# what Slurm says of jobs that ended without recording their stage, through
# stand-ins for sbatch (submits, runs nothing), scontrol and sacct (answer
# from files, in Slurm's formats) and scancel; the real thing: run_slurm.sh
mkdir -p bin2 jobs acct
cat > bin2/sbatch <<'EOF'
#!/bin/bash
id=$(( $(cat "$FAKE_SLURM/next") + 1 )); echo $id > "$FAKE_SLURM/next"; echo "$*" >> "$FAKE_SLURM/calls2"; echo $id
EOF
cat > bin2/scontrol <<'EOF'
#!/bin/bash
[ -e "$FAKE_SLURM/down" ] && { echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"; exit 1; }
[ -f "$FAKE_SLURM/jobs/$4" ] && { cat "$FAKE_SLURM/jobs/$4"; exit 0; }
echo "slurm_load_jobs error: Invalid job id specified"; exit 1
EOF
cat > bin2/sacct <<'EOF'
#!/bin/bash
[ -f "$FAKE_SLURM/acct/${!#}" ] && { cat "$FAKE_SLURM/acct/${!#}"; exit 0; }
echo "Slurm accounting storage is disabled"; exit 1
EOF
printf '#!/bin/bash\necho "$*" >> "$FAKE_SLURM/cancelled"\n' > bin2/scancel
chmod +x bin2/*
job() { # ID STATE [REASON] [EXITCODE] [TASK]: one `scontrol -o show job` line, appended
  echo "JobId=$1${5:+ ArrayJobId=$1 ArrayTaskId=$5} JobName=x UserId=root(0) Priority=1 JobState=$2" \
    "Reason=${3:-None} Dependency=(null) ExitCode=${4:-0:0} RunTime=00:00:01" >> jobs/$1
}
like() { case "$2" in *"$3"*) _result 0 "$1" ;; *) _result 1 "$1"; printf '#   got:      %s\n#   expected: *%s*\n' "$2" "$3" ;; esac; }
P2="env PATH=$TMP/bin2:$PATH"
status_of() { $P2 $G run --status s.ini | sed -n "s/^$1  *//p"; }
echo 200 > next
check "--slurm --force ingest: submitted, nothing runs" $P2 $G run --slurm --force ingest s.ini
is "jobs 201-205: ingest's start, array, end, dedup, pretrain" "$(wc -l < calls2)" 5
SLURM_JOB_ID=201 $P2 $G run --job-start ingest s.ini 2>/dev/null; _result $? "ingest's start job records its start"
grep -q '"201",' swork/state/ingest.json && grep -q '"203"' swork/state/ingest.json
_result $? "keeping the submission's job ids"
job 201 COMPLETED; job 202 RUNNING None 0:0 0; job 202 PENDING Resources 0:0 1; job 203 PENDING Dependency
job 204 PENDING Dependency; job 205 PENDING Dependency
like "--status: ingest running, its array job" "$(status_of ingest)" "running "
like "naming it" "$(status_of ingest)" "Slurm job 202 RUNNING"
like "--status: pretrain queued" "$(status_of pretrain)" "queued "
check "a run while the jobs are in Slurm" $P2 $G run --slurm s.ini
is "submits nothing" "$(wc -l < calls2)" 5
grep -q "nothing to run; 3 stages still queued or running in Slurm" "$TMP/.err"; _result $? "and says so"
rm jobs/202; job 202 COMPLETED None 0:0 0; job 202 TIMEOUT TimeLimit 0:15 1
like "a task timed out: interrupted" "$(status_of ingest)" "interrupted "
like "naming the state" "$(status_of ingest)" "Slurm job 202 TIMEOUT; relaunched, finished inputs are skipped"
rm jobs/202 jobs/203; job 202 FAILED NonZeroExitCode 2:0 1; job 202 COMPLETED None 0:0 0
job 203 PENDING DependencyNeverSatisfied
like "a task failed: failed" "$(status_of ingest)" "failed "
like "with its exit status and logs" "$(status_of ingest)" "next run: Slurm job 202 FAILED (exit status 2); relaunched, finished inputs are skipped; log $TMP/swork/logs/ingest-202_*.log"
mv jobs/202 jobs/202.x
printf 'CANCELLED by 0|0:15\nCOMPLETED|0:0\n' > acct/202
like "the controller forgot the job: accounting says" "$(status_of ingest)" "Slurm job 202 CANCELLED"
rm acct/202; mv jobs/203 jobs/203.x
like "forgotten, no accounting: ended, how is lost" "$(status_of ingest)" "Slurm job 202 ended; Slurm no longer knows how"
touch down
like "no controller: as recorded" "$(status_of ingest)" "running "
like "saying Slurm cannot be asked" "$(status_of ingest)" "Slurm cannot be asked about job 201 (scontrol: slurm_load_jobs error: Unable to contact"
rm down; mv jobs/202.x jobs/202; mv jobs/203.x jobs/203
# a cancelled job's script may record its end (by SIGTERM) before it dies
mv jobs/202 jobs/202.x; job 202 CANCELLED None 0:15 1; job 202 COMPLETED None 0:0 0
SLURM_JOB_ID=201 $P2 $G run --job-end ingest --exit-status 143 s.ini 2>/dev/null
like "a stage ended by a signal: Slurm is asked" "$(status_of ingest)" "interrupted "
like "and names the state" "$(status_of ingest)" "next run: Slurm job 202 CANCELLED; relaunched"
mv jobs/202.x jobs/202
rm jobs/204 jobs/205; job 204 PENDING DependencyNeverSatisfied; job 205 PENDING DependencyNeverSatisfied
check "--dry-run after the failure" $P2 $G run --slurm --dry-run s.ini
grep -q '^ingest *resume *Slurm job 202 FAILED (exit status 2); relaunched, finished inputs are skipped; Slurm job 203 cancelled first$' "$TMP/.out"
_result $? "ingest relaunched, its stuck end job cancelled first"
grep -q '^# scancel 203$' "$TMP/.out" && grep -q -- '--dependency=afterany:203 ' "$TMP/.out"
_result $? "the new start job waits for the old job's end"
check "the run after the failure" $P2 $G run --slurm s.ini
grep -q "ingest: Slurm job 202 FAILED (exit status 2); recorded as failed" "$TMP/.err"; _result $? "records ingest failed"
is "cancels the jobs that can never start" "$(tr '\n' ' ' < cancelled)" "203 204 205 "
is "resubmits ingest, dedup and pretrain" "$(wc -l < calls2)" 10

# malformed pipeline files: exit 3 and the line at fault
bad() { # NAME EXPECTED-MESSAGE-REGEX PIPELINE-TEXT
  printf '%s\n' "$3" > bad.ini
  check_fails "$1: exit 3" 3 $G run --dry-run bad.ini
  grep -q -- "$2" "$TMP/.err"; _result $? "$1: says '$2'"
}
bad "unknown stage" "bad.ini:3: unknown stage \[foo\]" "$(printf '[pretrain]\ndata = x\n[foo]\n')"
bad "missing key" "bad.ini:1: \[shards\]: missing required key 'input'" "$(printf '[shards]\ntokenizer = bytes\n')"
bad "syntax error" "bad.ini:3: syntax error" "$(printf '[shards]\ninput = a\nthis line is wrong\n')"
bad "a cycle" "dependency cycle: .*ingest.*tokenizer" \
  "$(printf '[tokenizer]\nshards = @ingest\nvocab-size = 300\n[ingest]\ninputs = docs.jsonl\ntokenizer = @tokenizer\n')"
bad "unknown reference" "bad.ini:2: 'data = @nope': no stage \[nope\]" "$(printf '[pretrain]\ndata = @nope\n')"
bad "no default for data" "missing required key 'data'" "$(printf '[sft]\n')"
bad "a key twice" "bad.ini:3: 'input' given twice" "$(printf '[shards]\ninput = a\ninput = b\n')"
bad "unknown [pipeline] key" "bad.ini:2: unknown key 'wrok'" "$(printf '[pipeline]\nwrok = x\n[shards]\ninput = a\n')"
bad "an over-long line" "bad.ini:2: line longer than" "$(printf '[shards]\ninput = '; printf 'x%.0s' $(seq 300))"
bad "a section twice" "bad.ini:3: section \[shards\] appears twice" "$(printf '[shards]\ninput = a\n[shards]\n')"
printf '[shards]\ninput = /nonexistent/x\n' > missing.ini
check_fails "a missing input file" 1 $G run --dry-run missing.ini
grep -q "missing input: input = /nonexistent/x" "$TMP/.err"; _result $? "names the missing input"

# the documented example: every stage planned, locally and as Slurm jobs
mkdir -p ex/data/val ex/labels && cp "$GL_SRC/deploy/pipelines/example.ini" ex/ && cd ex &&
  touch data/sample.txt data/inputs.txt data/val/v.txt data/prompts.jsonl &&
  sed -i 's|^db = .*|db = labels|' example.ini && cd ..
check "deploy/pipelines/example.ini plans" $G run --dry-run ex/example.ini
is "its stages" "$(awk '/^[a-z]/ {printf "%s ", $1}' "$TMP/.out")" \
  "tokenizer ingest shards.val import.prompts dedup pretrain label-export sft rm rl "
check "deploy/pipelines/example.ini as Slurm jobs" $G run --dry-run --slurm ex/example.ini
grep -q -- '--array=0-63' "$TMP/.out" && grep -q '^srun "$G" train rl ' "$TMP/.out"; _result $? "array and srun"

done_testing
