#!/usr/bin/env bash
# labeler_netns.sh — the labeling service and its clients as separate
# hosts: the server in one network namespace, clients in three others,
# each joined to the server's namespace by its own veth pair (its own
# subnet). Checked: clients reach the service only at its CURVE endpoint
# (not at their own loopback; a client pinning the wrong server key gets
# nothing, an unregistered key is refused, plain TCP bytes are dropped and
# the service goes on); cutting a client's link (ip link set down) in the
# middle of a --batch stream and bringing it back loses nothing: the
# submission journaled while the link was down and everything after it is
# stored exactly once, counted with `label admin stats` and `export`,
# while a client on another link keeps working during the cut.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
PY=${PYTHON:-python3}
command -v ip >/dev/null || skip_all "ip (iproute2) not installed"
S=gl$$s A=gl$$a B=gl$$b C=gl$$c
ip netns add $S 2>/dev/null || skip_all "cannot create network namespaces here (needs root / CAP_SYS_ADMIN)"
SPID=
cleanup() {
  for p in $SPID ${APID:-}; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  for n in $S $A $B $C; do ip netns del $n 2>/dev/null; done
  [ -n "${GL_KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
cd "$TMP" || exit 1

# ---- the network: 10.88.K.1 (server side) <-> 10.88.K.2 (client K) ---------
ip -n $S link set lo up
k=0
for n in $A $B $C; do
  k=$((k + 1))
  ip netns add $n && ip -n $n link set lo up &&
    ip -n $S link add s$k type veth peer name eth0 netns $n &&
    ip -n $S addr add 10.88.$k.1/24 dev s$k && ip -n $S link set s$k up &&
    ip -n $n addr add 10.88.$k.2/24 dev eth0 && ip -n $n link set eth0 up ||
    skip_all "cannot create veth pairs between namespaces"
done
EA=tcp://10.88.1.1:5555 EB=tcp://10.88.2.1:5555 EC=tcp://10.88.3.1:5555
inns() { local n=$1; shift; ip netns exec "$n" "$@"; }

$G label keygen server >/dev/null
$G label keygen other >/dev/null
for c in alice bob mallory; do $G label keygen $c >/dev/null; done
$G label admin add-contractor --db db alice alice.pub 2>/dev/null
$G label admin add-contractor --db db bob bob.pub 2>/dev/null
NA=60 NB=40
for i in $(seq 1 $((NA + NB + 10))); do echo "{\"prompt\": \"netns prompt $i\"}"; done > prompts.jsonl
$G label admin import-prompts --db db prompts.jsonl >/dev/null 2>&1
IMPORTED=$((NA + NB + 10))

# ip netns exec execs the server: $! is the server's own pid
ip netns exec $S $G label serve --db db --key server.key -e tcp://0.0.0.0:5555 --heartbeat 500 2>server.log &
SPID=$!
for _ in $(seq 1 100); do grep -q 'listening on' server.log && break; sleep 0.05; done
grep -q 'listening on tcp://0.0.0.0:5555' server.log; _result $? "the server listens in its own namespace"

# ---- only the CURVE endpoint -------------------------------------------------
inns $A bash -c 'exec 3<>/dev/tcp/127.0.0.1/5555' 2>/dev/null
[ $? -ne 0 ]; _result $? "nothing listens on the client host's own loopback"
inns $A bash -c 'exec 3<>/dev/tcp/10.88.1.1/5555' 2>/dev/null; _result $? "the client host reaches the server's address"
inns $C bash -c 'exec 3<>/dev/tcp/10.88.3.1/5555; printf "GET / HTTP/1.0\r\n\r\nnot zmtp at all" >&3; sleep 0.3' 2>/dev/null
echo '{"response": "sent to an impostor"}' > one.jsonl
check_fails "a client pinning another server key gets no service" 1 \
  inns $C $G label client -e $EC -s other.pub -k alice.key --journal j/wrong -b one.jsonl -t 300 -r 2
check_fails "an unregistered key is refused" 1 \
  inns $C $G label client -e $EC -s server.pub -k mallory.key --journal j/mallory -b one.jsonl -t 2000
grep -q "refused this key" "$TMP/.err"; _result $? "with the refusal named"
check "after the junk and the refusals the service still serves (bob, from host C)" \
  inns $C $G label client -e $EC -s server.pub -k bob.key --journal j/bob0 --guidelines -t 1000 -r 5
kill -0 $SPID; _result $? "the server is still running"

# ---- a link cut in the middle of alice's stream --------------------------------
acks() { grep -c '"status":"ok"' "$1" 2>/dev/null; }
wait_acks() { # FILE N: until N acknowledgements (10 s at most)
  for _ in $(seq 1 200); do [ "$(acks "$1")" -ge "$2" ] && return 0; sleep 0.05; done
  return 1
}
for i in $(seq 1 $NA); do echo "{\"response\": \"alice answer $i\"}"; done > alice.jsonl
mkfifo alice.fifo
ip netns exec $A $G label client -e $EA -s server.pub -k alice.key --journal j/alice -b - -t 300 -r 200 \
  < alice.fifo > alice.out 2> alice.err &
APID=$!
exec 7> alice.fifo
sed -n '1,20p' alice.jsonl >&7
wait_acks alice.out 20; _result $? "20 demonstrations acknowledged over alice's link"
ip -n $A link set eth0 down
# with the link down: a new prompt (one request, journaled before it is sent), then more work
echo '{"prompt": "written by alice while her link was down"}' >&7
sed -n '21,40p' alice.jsonl >&7
sleep 1
is "while the link is down, the unsent submission waits in alice's journal" "$(find j/alice -name '*.req' | wc -l)" 1
is "and nothing more is acknowledged" "$(acks alice.out)" 20
# bob, on another link, works meanwhile
for i in $(seq 1 $NB); do echo "{\"response\": \"bob answer $i\"}"; done > bob.jsonl
check "bob submits $NB demonstrations from host B during alice's cut" \
  inns $B $G label client -e $EB -s server.pub -k bob.key --journal j/bob -b bob.jsonl -t 1000 -r 10
is "bob: all acknowledged" "$(grep -c '"status":"ok"' "$TMP/.out")" $NB
is "alice is still waiting" "$(acks alice.out)" 20
ip -n $A link set eth0 up
# two more cuts, wherever the free-running stream happens to be (a lease,
# a submission on its way, or a reply on its way back: then the resent
# request must be answered from the server's record, not applied again)
sed -n "41,${NA}p" alice.jsonl >&7
exec 7>&-
for at in 45 55; do
  wait_acks alice.out $at
  ip -n $A link set eth0 down
  sleep 0.7
  ip -n $A link set eth0 up
done
wait $APID; is "alice's client finishes with status 0 after the cuts" $? 0
is "alice: $NA demonstrations and the prompt acknowledged" "$(acks alice.out)" $((NA + 1))
is "alice's journal is empty" "$(find j/alice -name '*.req' | wc -l)" 0

# ---- in the store, exactly once ---------------------------------------------------
kill $SPID; wait $SPID; SPID=
$G label admin export --db db --kind sft --jsonl sft.jsonl 2>/dev/null
is "alice's $NA demonstrations stored" "$(grep -c '"contractor":"alice"' sft.jsonl)" $NA
is "each once" "$(grep -o '"response":"alice answer [0-9]*"' sft.jsonl | sort -u | wc -l)" $NA
is "bob's $NB stored" "$(grep -c '"contractor":"bob"' sft.jsonl)" $NB
ids=$(grep -o '"submission":[0-9]*' alice.out | sort)
missing=0
for s in $ids; do grep -q "$s}" sft.jsonl || missing=$((missing + 1)); done
is "every submission id alice was given is in the export" $missing 0
$G label admin stats --db db > stats.json 2>/dev/null
tasks=$($PY -c "import json,sys; q = json.load(open(sys.argv[1]))['queues']['demonstration']; print(q['pending'] + q['leased'] + q['done'])" stats.json)
is "the prompt sent while the link was down became exactly one task" "$tasks" $((IMPORTED + 1))
demos=$($PY -c "import json,sys; print(sum(c['demonstrations'] for c in json.load(open(sys.argv[1]))['contractors']))" stats.json)
is "stats count $((NA + NB)) demonstrations" "$demos" $((NA + NB))
grep -q "stopped:.* [1-9][0-9]* refused handshakes" server.log; _result $? "the server counted the refused handshake"
done_testing
