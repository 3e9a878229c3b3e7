#!/usr/bin/env bash
# slurm.sh — the Slurm scripts of deploy/slurm on a real Slurm: a
# single-node cluster (munged, slurmctld, slurmd from Debian's packages,
# tests/slurm_cluster.sh) started for the test. Submitted through sbatch:
# the ingest array (2 ranks) with the dedup pass chained after it; a
# partial resubmission, which needs the world size; and a 2-rank MPI
# training job (srun --mpi=pmix). Checked: every input's shard and done
# marker, written by the rank it belongs to; each rank's stats and metrics
# file; the dedup report; the training checkpoint, its world size of 2 in
# the checkpoint, the log and the metrics file. Skips only where Slurm is
# not installed or its daemons cannot start here.
. "$(dirname "$0")/tap.sh"
. "$(dirname "$0")/slurm_cluster.sh"
G=$GPTLINE
PY=${PYTHON:-python3}
SRC=${GL_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
S=$SRC/deploy/slurm
trap 'slurm_cluster_stop; [ -n "${GL_KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
slurm_cluster_start "$TMP/slurm" || skip_all "no Slurm: $SLURM_CLUSTER_WHY"
check "the node is up (sinfo)" sinfo -h -o %T
check "srun knows PMIx" sh -c "srun --mpi=list 2>&1 | grep -q pmix"

# the jobs run as this user, with this environment (sbatch --export=ALL)
export GPTLINE=$G GPTLINE_METRICS_DIR=$TMP/prom
mkdir -p prom
fail_log() { for f in "$@"; do [ -f "$f" ] && sed 's/^/#   /' "$f" | tail -15; done; }

# ---- ingest array + dedup ----------------------------------------------------
for d in common shards labeler tokenizer; do tar -czf $d.tar.gz -C "$SRC" $d; done
# a repeated archive: its documents are exact duplicates of input 0's across ranks
cp common.tar.gz common-copy.tar.gz
printf '%s\n' "$TMP"/common.tar.gz "$TMP"/shards.tar.gz "$TMP"/labeler.tar.gz "$TMP"/tokenizer.tar.gz \
  "$TMP"/common-copy.tar.gz > inputs.txt
N=5
jid=$(sbatch --parsable --array=0-1 -o "$TMP/ingest-%A_%a.log" "$S/ingest.sbatch" inputs.txt "$TMP/ds" --min-chars 1)
_result $? "sbatch the ingest array (job $jid)"
did=$(sbatch --parsable --dependency=afterok:$jid -o "$TMP/dedup-%j.log" "$S/dedup.sbatch" "$TMP/ds")
_result $? "sbatch dedup after it (--dependency=afterok)"
st=$(slurm_wait "$jid" 60); rc=$?
is "both array tasks COMPLETED ($st)" $rc 0
[ $rc -eq 0 ] || fail_log ingest-*.log
st=$(slurm_wait "$did" 60); rc=$?
is "the dedup job COMPLETED after them ($st)" $rc 0
[ $rc -eq 0 ] || fail_log dedup-*.log
is "a done marker for each of the $N inputs" "$(ls ds/done/in-*.json 2>/dev/null | wc -l)" $N
is "a sealed shard for each input but the copy, which dedup emptied" "$(ls -d ds/in-*.mdb 2>/dev/null | wc -l)" $((N - 1))
bad=0
for k in $(seq 0 $((N - 1))); do
  r=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['rank'])" "$(printf 'ds/done/in-%06d.json' $k)" 2>/dev/null)
  [ "$r" = $((k % 2)) ] || bad=$((bad + 1))
done
is "input k was done by rank k mod 2" $bad 0
check "stats of rank 0" test -f ds/stats/rank-00000.json
check "stats of rank 1" test -f ds/stats/rank-00001.json
for r in 0 1; do
  check "rank $r's metrics file parses" $PY "$SRC/tests/promtext.py" prom/gptline-ingest-$r.prom
  grep -q "^gptline_ingest_finished{rank=\"$r\",world=\"2\"} 1$" prom/gptline-ingest-$r.prom
  _result $? "rank $r of world 2 finished"
done
check "shards verify the dataset" $G shards verify ds
check "dedup wrote its report" test -s ds/report.json
removed=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['removed'])" ds/dedup/removed.json 2>/dev/null)
kept0=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['docs_kept'])" ds/done/in-000000.json)
is "dedup removed the copy's documents (rank 0's input 4 = input 0)" "$removed" "$kept0"

# a partial resubmission must be told the world size
jid=$(sbatch --parsable --array=1 -o "$TMP/re-%A_%a.log" "$S/ingest.sbatch" inputs.txt "$TMP/ds")
slurm_wait "$jid" 30 >/dev/null; [ $? -eq 1 ]; _result $? "--array=1 without WORLD fails"
grep -q "give the world size" re-*.log; _result $? "saying why"
jid=$(WORLD=2 sbatch --parsable --array=1 -o "$TMP/re2-%A_%a.log" "$S/ingest.sbatch" inputs.txt "$TMP/ds")
st=$(slurm_wait "$jid" 30); is "WORLD=2 --array=1 COMPLETED ($st)" $? 0
$PY "$SRC/tests/promtext.py" prom/gptline-ingest-1.prom |
  grep -q '^gptline_ingest_inputs_total{rank="1",state="skipped",world="2"} 2$'
_result $? "rank 1 skipped its 2 finished inputs"

# ---- 2-rank MPI training ---------------------------------------------------------
$G shards pack -o train "$SRC/README.md" "$SRC"/docs/*.md 2>/dev/null
# Open MPI inside the job: shared memory without CMA (containers), no InfiniBand probing
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_pml=ob1
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
tid=$(sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 -o "$TMP/train-%j.out" "$S/train.sbatch" \
  pretrain --data "$TMP/train" --out "$TMP/run" --layers 1 --heads 1 --width 16 --context 16 -B 2 -T 16 \
  --steps 4 --ckpt-every 2 --eval-every 0 --log-every 1 --metrics-file "$TMP/prom/train.prom")
_result $? "sbatch the training job (job $tid)"
st=$(slurm_wait "$tid" 90); rc=$?
is "the training job COMPLETED ($st)" $rc 0
[ $rc -eq 0 ] || fail_log train-*.out
is "checkpoint of the last step" "$(cat run/latest 2>/dev/null)" ckpt-00000004
is "the checkpoint records world 2" \
  "$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['world'])" run/ckpt-00000004/state.json 2>/dev/null)" 2
grep -q 'ranks=2' train-$tid.out; _result $? "the trainer's log says ranks=2"
is "4 steps in metrics.jsonl" "$(grep -c '"loss"' run/metrics.jsonl 2>/dev/null)" 4
grep -q '^gptline_train_world_size{stage="pretrain"} 2$' prom/train.prom; _result $? "metrics: world size 2"
# tokens: B * T * ranks per step
grep -q '^gptline_train_tokens_total{stage="pretrain"} 256$' prom/train.prom; _result $? "metrics: 4 steps x 2x16 x 2 ranks = 256 tokens"

pids=$SLURM_CLUSTER_PIDS
slurm_cluster_stop
left=0
for p in $pids; do kill -0 "$p" 2>/dev/null && left=$((left + 1)); done
is "munged, slurmctld and slurmd are stopped" $left 0
done_testing
