#!/usr/bin/env bash
# metrics.sh — the Prometheus textfiles of the long-running commands: the
# labeling server, two ingest workers and a training run each write a file
# that a strict checker of the exposition format reads (tests/promtext.py,
# plus python3-prometheus-client's parser when installed), and the numbers
# in it are the ones the command reports elsewhere: the server's stop line
# and the store's export (and a backup restored and served again), the
# workers' stats/rank-R.json, the trainer's
# metrics.jsonl and checkpoint.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
PY=${PYTHON:-python3}
SRC=${GL_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$TMP" || exit 1
prom() { $PY "$SRC/tests/promtext.py" "$@"; }
val() { # FILE SERIES: the value of one series in a checked file ('' if absent)
  prom "$1" 2>/dev/null | awk -v s="$2" '$1 == s {print $2}'
}

check "label serve --help names --metrics-file" sh -c "$G label serve --help | grep -q -- --metrics-file"
check "ingest --help names --metrics-file" sh -c "$G ingest --help | grep -q -- --metrics-file"
check "train pretrain --help names --metrics-file" sh -c "$G train pretrain --help | grep -q -- --metrics-file"
check_fails "--workers without {rank} in the metrics path is a usage error" 2 \
  $G ingest --inputs /dev/null --out x --workers 2 --metrics-file m.prom

# ---- the labeling server ----------------------------------------------------
export GPTLINE_METRICS_INTERVAL=0.2
$G label keygen server >/dev/null
$G label keygen alice >/dev/null
$G label keygen mallory >/dev/null
$G label admin add-contractor --db db alice alice.pub 2>/dev/null
for i in 1 2 3 4 5; do echo "{\"prompt\": \"metrics prompt $i\"}"; done > prompts.jsonl
$G label admin import-prompts --db db prompts.jsonl >/dev/null 2>&1
check_fails "an unwritable metrics path stops the server at start" 1 \
  $G label serve --db db --key server.key -e 'tcp://127.0.0.1:*' --metrics-file no/such/dir/l.prom
mkdir -p textfile
$G label serve --db db --key server.key -e 'tcp://127.0.0.1:*' --heartbeat 500 \
  --metrics-file textfile/label.prom 2>server.log &
SPID=$!
trap 'kill $SPID 2>/dev/null; wait $SPID 2>/dev/null; [ -n "${GL_KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT
PORT=
for _ in $(seq 1 200); do
  PORT=$(sed -n 's/.*listening on tcp:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' server.log | tail -1)
  [ -n "$PORT" ] && break
  sleep 0.05
done
EP=tcp://127.0.0.1:$PORT
check "the file is there as soon as the server listens" test -s textfile/label.prom
check "it parses (strict checker)" prom textfile/label.prom
is "no submissions yet" "$(val textfile/label.prom gptline_label_submissions)" 0
for i in 1 2 3 4; do echo "{\"response\": \"answer $i\"}"; done > alice.jsonl
check "4 demonstrations from alice" $G label client -e $EP -s server.pub -k alice.key --journal j/a -b alice.jsonl
check_fails "an unregistered key is refused" 1 $G label client -e $EP -s server.pub -k mallory.key --journal j/m \
  -b alice.jsonl -t 2000
# rewritten while serving: the new submissions show up without a restart
for _ in $(seq 1 50); do [ "$(val textfile/label.prom gptline_label_submissions)" = 4 ] && break; sleep 0.1; done
is "4 submissions, rewritten while serving" "$(val textfile/label.prom gptline_label_submissions)" 4
check "hot backup while serving" $G label backup --db db --out backup
kill $SPID; wait $SPID
check "the last file parses" prom textfile/label.prom
line=$(grep 'stopped:' server.log)
n() { echo "$line" | sed -n "s/.* \([0-9]*\) $1.*/\1/p"; }
is "requests = the server's stop line" "$(val textfile/label.prom gptline_label_requests_total)" "$(n requests)"
is "replies = the stop line" "$(val textfile/label.prom gptline_label_replies_total)" "$(n replies)"
is "commits = the stop line" "$(val textfile/label.prom gptline_label_commits_total)" "$(n commits)"
is "refused handshakes = the stop line" "$(val textfile/label.prom gptline_label_refused_handshakes_total)" \
  "$(n 'refused handshakes')"
[ "$(n 'refused handshakes')" -ge 1 ]; _result $? "mallory's refused handshake was counted"
$G label admin export --db db --kind sft --jsonl sft.jsonl 2>/dev/null
is "submissions = lines the store exports" "$(val textfile/label.prom gptline_label_submissions)" "$(wc -l < sft.jsonl)"
ls textfile | grep -v '\.prom$' > leftovers
is "no temporary files left beside it" "$(cat leftovers)" ""
# restore: serve the backup; the work goes on from where it was
# (with a 1 s reply retention: the idle server prunes the stored replies)
$G label serve --db backup --key server.key -e "$EP" --heartbeat 500 --metrics-file textfile/restored.prom \
  --reply-retention 1 2>restored.log &
SPID=$!
for _ in $(seq 1 100); do grep -q 'listening on' restored.log && break; sleep 0.05; done
echo '{"response": "answer 5"}' > more.jsonl
check "restored: alice's next demonstration is accepted" \
  $G label client -e $EP -s server.pub -k alice.key --journal j/a -b more.jsonl
check "restored: a 6th finds no task (5 prompts, 4 done before the backup)" \
  sh -c "$G label client -e $EP -s server.pub -k alice.key --journal j/a -b more.jsonl | grep -q 'no task'"
for _ in $(seq 1 100); do [ "$(val textfile/restored.prom gptline_label_stored_replies)" = 0 ] && break; sleep 0.1; done
is "every stored reply pruned a second after it was stored" "$(val textfile/restored.prom gptline_label_stored_replies)" 0
kill $SPID; wait $SPID
line=$(grep 'stopped:' restored.log)
[ "$(n 'stored replies pruned')" -ge 4 ]; _result $? "the old and new replies were pruned ($(n 'stored replies pruned'))"
is "pruned replies = the stop line" "$(val textfile/restored.prom gptline_label_replies_pruned_total)" \
  "$(n 'stored replies pruned')"
is "and = the store's total in admin stats" \
  "$($G label admin stats --db backup | $PY -c 'import json,sys; print(json.load(sys.stdin)["replies"]["pruned"])')" \
  "$(n 'stored replies pruned')"
$G label admin export --db backup --kind sft --jsonl restored.jsonl 2>/dev/null
is "the restored store exports the 4 old and the new demonstration" "$(wc -l < restored.jsonl)" 5
head -4 restored.jsonl | cmp -s - sft.jsonl; _result $? "the old ones exactly as before"
is "its metrics count 5 submissions" "$(val textfile/restored.prom gptline_label_submissions)" 5

# ---- ingest workers -----------------------------------------------------------
for d in common shards labeler; do tar -czf $d.tar.gz -C "$SRC" $d; done
printf '%s\n' "$TMP/common.tar.gz" "$TMP/shards.tar.gz" "$TMP/labeler.tar.gz" > inputs.txt
check "ingest with 2 workers and a metrics file per rank" $G ingest --inputs inputs.txt --out ds --workers 2 \
  --metrics-file "textfile/ingest-{rank}.prom"
for r in 0 1; do
  f=textfile/ingest-$r.prom
  check "rank $r: the file parses" prom $f
  js=ds/stats/rank-0000$r.json
  L="{rank=\"$r\",world=\"2\"}"
  for k in tokens:gptline_ingest_tokens_total docs_kept:gptline_ingest_documents_kept_total \
           docs_in:gptline_ingest_documents_read_total bytes_in:gptline_ingest_read_bytes_total; do
    want=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" $js ${k%%:*})
    is "rank $r: ${k#*:} = stats/rank-$r.json ${k%%:*} ($want)" "$(val $f "${k#*:}$L")" "$want"
  done
  want=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['inputs_done'])" $js)
  is "rank $r: inputs done = the stats file" "$(val $f "gptline_ingest_inputs_total{rank=\"$r\",state=\"done\",world=\"2\"}")" "$want"
  is "rank $r: finished" "$(val $f "gptline_ingest_finished$L")" 1
done
is "rank 0 had inputs 0 and 2" "$(val textfile/ingest-0.prom 'gptline_ingest_inputs_assigned{rank="0",world="2"}')" 2
GPTLINE_METRICS_DIR=$TMP/textfile check "rerun with GPTLINE_METRICS_DIR: every input already done" \
  $G ingest --inputs inputs.txt --out ds
is "default file name, inputs skipped counted" \
  "$(val textfile/gptline-ingest-0.prom 'gptline_ingest_inputs_total{rank="0",state="skipped",world="1"}')" 3

# ---- a training run --------------------------------------------------------------
$G shards pack -o train "$SRC/README.md" "$SRC"/docs/*.md 2>/dev/null
check "pretrain with a metrics file" $G train pretrain --data train --out run --layers 1 --heads 1 --width 16 \
  --context 16 -B 2 -T 16 --steps 6 --threads 1 --eval-every 0 --ckpt-every 3 -q --metrics-file textfile/train.prom
f=textfile/train.prom
check "it parses" prom $f
last=$(tail -1 run/metrics.jsonl)
jget() { echo "$last" | $PY -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
L='{stage="pretrain"}'
is "step = the checkpoint's step" "$(val $f "gptline_train_step$L")" \
  "$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "run/$(cat run/latest)/state.json")"
is "tokens = metrics.jsonl's last tokens" "$(val $f "gptline_train_tokens_total$L")" "$(jget tokens)"
$PY -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-6 * abs(b))" \
  "$(val $f "gptline_train_loss$L")" "$(jget loss)"
_result $? "loss = metrics.jsonl's last loss"
is "2 checkpoints written" "$(val $f "gptline_train_checkpoints_total$L")" 2
is "world size 1" "$(val $f "gptline_train_world_size$L")" 1
is "finished" "$(val $f "gptline_train_finished$L")" 1
done_testing
