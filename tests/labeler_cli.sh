#!/usr/bin/env bash
# labeler_cli.sh — `gptline label` end to end on loopback, with real
# processes: keys and registry; import; scripted contractors (--batch)
# writing demonstrations and rankings under the overlap and no-self-ranking
# rules; export to SFT and RM shards read back by `gptline shards`; an
# unregistered and a revoked key refused; the server killed with -9 and
# restarted under 32 concurrent clients: every acknowledged submission is
# present afterwards, nothing is lost and nothing duplicated; hot backup.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
PORT=   # the first server picks a free port (*); restarts reuse it
EP=
cd "$TMP" || exit 1

for c in "label" "label keygen" "label serve" "label client" "label backup" "label admin" \
         "label admin add-contractor" "label admin revoke" "label admin list" "label admin import-prompts" \
         "label admin import-candidates" "label admin stats" "label admin export"; do
  # shellcheck disable=SC2086
  check "gptline $c --help" $G $c --help
done
check_fails "serve without --db exits 2" 2 $G label serve --key x.key
check_fails "export without --kind exits 2" 2 $G label admin export --db db --out x

SPID=
start_server() {
  $G label serve --db db --key server.key -e "tcp://127.0.0.1:${PORT:-*}" --heartbeat 500 --lease 600 2>>server.log &
  SPID=$!
  for _ in $(seq 1 400); do
    [ -n "$PORT" ] && break
    PORT=$(sed -n 's/.*listening on tcp:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' server.log | tail -1)
    sleep 0.05
  done
  EP=tcp://127.0.0.1:$PORT
  # ready when a registered client gets its welcome
  $G label client -e $EP -s server.pub -k alice.key --journal j/probe --guidelines -t 300 -r 40 >/dev/null 2>&1
}
stop_server() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null; SPID=; }
trap 'stop_server; [ -n "${GL_KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT

check "keygen server" $G label keygen server
is "public key printed" "$(cat "$TMP/.out")" "$(cat server.pub)"
is "secret key file is private" "$(stat -c %a server.key)" "600"
for who in alice bob carol dave; do $G label keygen $who >/dev/null; done
check "add alice" $G label admin add-contractor --db db alice alice.pub
check "add bob (a Z85 key may start with -: after --)" $G label admin add-contractor --db db -- bob "$(cat bob.pub)"
check "add carol" $G label admin add-contractor --db db carol carol.pub
check_fails "the same key twice is refused" 1 $G label admin add-contractor --db db alice2 alice.pub
check_fails "a bad id is refused (exit 2)" 2 $G label admin add-contractor --db db 'bad id' dave.pub
check "revoke carol" $G label admin revoke --db db carol
check "list" $G label admin list --db db
is "three contractors listed" "$(wc -l < "$TMP/.out")" 3
grep -q '"id":"carol","role":"contractor","revoked":true' "$TMP/.out"; _result $? "carol is listed as revoked"
grep -qF "\"public_key\":\"$(cat alice.pub)\"" "$TMP/.out"; _result $? "alice's public key is listed"

for i in 1 2 3 4; do echo "{\"prompt\": \"Prompt $i: say something\", \"id\": \"p$i\"}"; done > prompts.jsonl
echo 'not json' >> prompts.jsonl
check_fails "import-prompts with a bad line exits 3" 3 $G label admin import-prompts --db db --overlap 2 prompts.jsonl
grep -q "imported 4 demonstration tasks" "$TMP/.out"; _result $? "the 4 good prompts are imported"
cat > cands.jsonl <<'EOF'
{"prompt": "Which is best?", "candidates": ["first", "second", "third"]}
{"prompt": "Pick one", "candidates": [{"text": "alice wrote this", "author": "alice"}, "model text"]}
EOF
check "import-candidates" $G label admin import-candidates --db db --overlap 2 cands.jsonl

start_server
check "server is up" kill -0 "$SPID"

# scripted contractors
cat > alice.jsonl <<'EOF'
{"response": "Alice answer A"}
{"response": "Alice answer B"}
{"response": "Alice answer C"}
{"response": "Alice answer D"}
{"response": "Alice answer E"}
{"ranking": [2, 0, 1], "flags": [1, 0, 0], "rating": 6}
{"ranking": [1, 0], "rating": 3}
{"prompt": "A prompt alice wrote"}
EOF
sed 's/Alice/Bob/; s/"ranking": \[2, 0, 1\]/"ranking": [0, 2, 1]/' alice.jsonl | grep -v '"prompt"' > bob.jsonl
check "alice's batch (no task is not an error)" \
  $G label client -e $EP -s server.pub -k alice.key --journal j/alice -b alice.jsonl
cp "$TMP/.out" alice.out
is "alice: 4 demonstrations, 1 ranking and 1 prompt accepted" "$(grep -c '"status":"ok"' alice.out)" 6
is "alice: the 5th demonstration finds no task (4 prompts)" "$(grep -c '"status":"no task"' alice.out)" 2
check "bob's batch" $G label client -e $EP -s server.pub -k bob.key --journal j/bob -b bob.jsonl
cp "$TMP/.out" bob.out
# bob: 4 imported prompts + alice's prompt = 5 demonstrations, and both rankings
is "bob: 5 demonstrations and 2 rankings accepted" "$(grep -c '"status":"ok"' bob.out)" 7

check_fails "an unregistered key is refused" 1 $G label client -e $EP -s server.pub -k dave.key --journal j/dave -b bob.jsonl -t 3000
grep -q "refused this key" "$TMP/.err"; _result $? "with a message saying the key was refused"
check_fails "a revoked key is refused" 1 $G label client -e $EP -s server.pub -k carol.key --journal j/carol -b bob.jsonl -t 3000
echo '{"prompt": "one more"}' > more.jsonl
$G label admin import-prompts --db db more.jsonl >/dev/null
echo '{"prompt": "rank more", "candidates": ["x", "y", "z"]}' > more.jsonl
$G label admin import-candidates --db db more.jsonl >/dev/null
printf '{"ranking": [0, 0, 0], "rating": 4}\n{"response": "   "}\n{"ranking": [0, 1, 2], "rating": 4, "task": 1}\n' > bad.jsonl
check_fails "invalid submissions are rejected (exit 1)" 1 $G label client -e $EP -s server.pub -k bob.key --journal j/bob -b bad.jsonl
grep -q '"status":"rejected".*ties every candidate' "$TMP/.out"; _result $? "an all-tie ranking is rejected with its reason"
grep -q '"status":"rejected".*empty response' "$TMP/.out"; _result $? "an empty response is rejected with its reason"

grep -q '"line":3,.*"status":"rejected"' "$TMP/.out"; _result $? "a ranking aimed at a task bob already did is rejected"
echo '{"task": "p1", "response": "aimed by name"}' > badtask.jsonl
check_fails "a task given by name instead of number is refused (exit 1)" 1 \
  $G label client -e $EP -s server.pub -k bob.key --journal j/bob -b badtask.jsonl
grep -q 'must be a task number' "$TMP/.err"; _result $? "with a message saying what a task is"

check "stats" $G label admin stats --db db
grep -q '"contractor": "bob"' "$TMP/.out"; _result $? "stats list bob"
grep -q '"kendall_tau": -1.0' "$TMP/.out"; _result $? "alice and bob ranked task 5 in opposite orders: Kendall tau -1"

check "export sft while serving" $G label admin export --db db --kind sft --out sft --jsonl sft.jsonl
check "shards stat sft" $G shards stat --json sft
grep -q '"kind": "sft"' "$TMP/.out"; _result $? "SFT shards of record kind sft"
grep -q '"documents": 9' "$TMP/.out"; _result $? "9 demonstrations exported"
check_fails "export with a vocabulary file that does not exist fails" 1 $G label admin export --db db --kind sft --out nope --tokenizer nope.tiktoken
check "export rm" $G label admin export --db db --kind rm --out rm --jsonl hh.jsonl --format hh
check "shards verify rm" $G shards verify rm
check "shards stat rm" $G shards stat --json rm
grep -q '"documents": 3' "$TMP/.out"; _result $? "3 rankings exported"
is "HH-RLHF pairs: (3 + 1) from bob, 3 from alice" "$(wc -l < hh.jsonl)" 7
# the JSONL formats are the ones `gptline shards import` reads, and with a
# BPE vocabulary the export's layout is the chat template import uses
VOCAB=${GL_DATA:-}/tokenizers/vocab/r50k_base.tiktoken
if [ -n "${GL_DATA:-}" ] && [ -r "$VOCAB" ]; then
  check "export sft with a BPE vocabulary" $G label admin export --db db --kind sft --out sft-bpe --tokenizer "$VOCAB"
  check "shards import of the exported prompt/response JSONL" $G shards import --kind sft -t "$VOCAB" -o sft-imp sft.jsonl
  $G shards cat sft-bpe > a.ids; $G shards cat sft-imp > b.ids
  check "same token ids as shards import (the shared chat template)" cmp a.ids b.ids
  check "export rm ranked JSONL" $G label admin export --db db --kind rm --jsonl ranked.jsonl
  check "shards import of the ranked JSONL" $G shards import --kind rm -t "$VOCAB" -o rm-imp ranked.jsonl
  check "shards import of the HH-RLHF JSONL" $G shards import --kind rm -t "$VOCAB" -o hh-imp hh.jsonl
  $G shards stat --json hh-imp > "$TMP/.out"
  grep -q '"documents": 7' "$TMP/.out"; _result $? "one imported record per exported comparison"
else
  echo "# skip: no r50k_base vocabulary in GL_DATA"
fi
# the trainer reads the exported shards: a few SFT steps on the
# demonstrations, then reward-model steps on the rankings from that model
check "train sft on the exported SFT shards" $G train sft --data sft --out tr-sft --layers 1 --heads 1 --width 16 \
  --context 256 -B 2 -T 256 --steps 2 --eval-every 0 --ckpt-every 2 --log-every 1 --threads 1
grep -qi "loss nan" "$TMP/.err" "$TMP/.out"; [ $? -ne 0 ]; _result $? "with a finite loss on the response tokens"
check "train rm on the exported RM shards" $G train rm --data rm --out tr-rm --init "tr-sft/$(cat tr-sft/latest 2>/dev/null)" -B 6 -T 256 \
  --steps 2 --eval-every 0 --ckpt-every 2 --log-every 1 --threads 1
grep -q "loss 0.69" "$TMP/.err" "$TMP/.out"; _result $? "starting at the pairwise loss of an untrained head, ln 2"
check "backup while serving" $G label backup --db db --out backup
check "the backup exports the same" $G label admin export --db backup --kind sft --jsonl sft2.jsonl
check "identical JSONL" cmp sft.jsonl sft2.jsonl

# ---- the interactive client, driven through stdin and a scripted $EDITOR --
$G label keygen erin >/dev/null
$G label admin add-contractor --db db erin erin.pub 2>/dev/null
echo '{"prompt": "interactive prompt"}' > ip.jsonl
$G label admin import-prompts --db db ip.jsonl >/dev/null
printf '\ny\n' > keys.txt
check "interactive demonstration (EDITOR scripted)" env EDITOR='sed -i 1s/^/Typed_by_erin/' \
  $G label client -e $EP -s server.pub -k erin.key --journal j/erin --kind demonstration < keys.txt
grep -q "RESPONSE:" "$TMP/.err" && grep -q "submit? \[y/n\] ok" "$TMP/.err"; _result $? "shows the response and the server's ok"
printf '2 1\n2w\n6\ny\n' > keys.txt
check "interactive ranking (order, flags, rating, confirm)" \
  $G label client -e $EP -s server.pub -k erin.key --journal j/erin --kind ranking < keys.txt
$G label admin export --db db --kind sft --jsonl erin.jsonl 2>/dev/null
grep -q '"response":"Typed_by_erin","contractor":"erin"' erin.jsonl; _result $? "erin's typed demonstration is stored"
$G label admin export --db db --kind rm --jsonl erin.jsonl 2>/dev/null
grep -q '"flags":\[0,2\],"rating":6,"contractor":"erin"' erin.jsonl; _result $? "erin's ranking, flags and rating are stored"

# ---- kill -9 under 32 concurrent clients --------------------------------
N=32; PER=12
for i in $(seq -w 1 $N); do
  $G label keygen c$i >/dev/null
  $G label admin add-contractor --db db c$i c$i.pub 2>/dev/null
  for k in $(seq 1 $PER); do echo "{\"response\": \"c$i answer $k\"}"; done > c$i.jsonl
done
for k in $(seq 1 $((N * PER))); do echo "{\"prompt\": \"load prompt $k\"}"; done > load.jsonl
$G label admin import-prompts --db db load.jsonl >/dev/null
for i in $(seq -w 1 $N); do
  $G label client -e $EP -s server.pub -k c$i.key --journal j/c$i -b c$i.jsonl -t 400 -r 60 > c$i.out 2> c$i.err &
  echo $! >> clients.pids
done
# kill once the first acknowledgements are out
for _ in $(seq 1 200); do
  [ "$(cat c*.out 2>/dev/null | grep -c '"status":"ok"')" -ge 40 ] && break
  sleep 0.05
done
acked_at_kill=$(cat c*.out | grep -c '"status":"ok"')
kill -9 "$SPID"; wait "$SPID" 2>/dev/null; SPID=
sleep 1
# every submission acknowledged before the kill is in the store
$G label admin export --db db --kind sft --jsonl after_kill.jsonl 2>/dev/null
missing=0
for s in $(cat c*.out | sed -n 's/.*"status":"ok","task":[0-9]*,"submission":\([0-9]*\).*/\1/p'); do
  grep -q "\"submission\":$s}" after_kill.jsonl || missing=$((missing + 1))
done
is "all $acked_at_kill submissions acknowledged before kill -9 are stored" "$missing" 0
start_server
fail=0
while read -r p; do wait "$p" || fail=$((fail + 1)); done < clients.pids
is "all 32 clients finish after the restart (Lazy Pirate)" "$fail" 0
$G label admin export --db db --kind sft --jsonl final.jsonl 2>/dev/null
acked=$(cat c*.out | grep -c '"status":"ok"')
is "every client line acknowledged" "$acked" $((N * PER))
stored=$(grep -c '"contractor":"c[0-9]*"' final.jsonl)
is "stored = acknowledged: nothing lost, nothing duplicated" "$stored" $((N * PER))
distinct=$(grep -o '"response":"c[0-9]* answer [0-9]*"' final.jsonl | sort -u | wc -l)
is "each answer stored once" "$distinct" $((N * PER))
missing=0
for s in $(cat c*.out | sed -n 's/.*"submission":\([0-9]*\).*/\1/p'); do
  grep -q "\"submission\":$s}" final.jsonl || missing=$((missing + 1))
done
is "every acknowledged submission id is in the export" "$missing" 0
is "journals are empty" "$(find j -name '*.req' | wc -l)" 0

stop_server
grep -q "stopped:" server.log; _result $? "SIGTERM stops the server cleanly"
done_testing
