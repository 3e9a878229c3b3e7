#!/usr/bin/env bash
# systemd_units.sh — the units in deploy/systemd: `systemd-analyze verify`
# passes on each (any message fails the check, not only the exit status),
# `systemd-analyze security --offline` rates each service's exposure at
# most "OK", the label service carries the hardening the docs promise, the
# sysusers file creates the user in a scratch root, every option the
# ExecStart lines pass exists in the command's --help, and the label and
# ingest command lines, with systemd's specifiers filled in, really run:
# the server listens and stops cleanly on SIGTERM, a worker ingests its
# inputs.
#
# verify needs the ExecStart binaries to exist: the units name the
# installed /usr/local/bin/gptline, which the test replaces with the
# built binary in temporary copies; nothing else in them changes.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
SRC=${GL_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
U=$SRC/deploy/systemd
command -v systemd-analyze >/dev/null || skip_all "systemd-analyze not installed (package systemd)"
cd "$TMP" || exit 1
mkdir units
for f in "$U"/gptline-*.service "$U"/gptline-*.timer; do
  sed "s|/usr/local/bin/gptline|$G|g" "$f" > "units/$(basename "$f")"
done
is "only the binary's path differs from the shipped units" \
  "$(cd units && for f in *; do diff "$U/$f" "$f" | grep -c '^>'; done | sort -u | tr '\n' ' ')" \
  "$(cd units && for f in *; do grep -c /usr/local/bin/gptline "$U/$f"; done | sort -u | tr '\n' ' ')"
ln -s gptline-ingest@.service units/gptline-ingest@3.service
cd units || exit 1
for u in gptline-label.service gptline-ingest@3.service gptline-train.service gptline-train.timer; do
  out=$(systemd-analyze verify "$u" 2>&1); rc=$?
  [ $rc -eq 0 ] && [ -z "$out" ]; _result $? "systemd-analyze verify $u"
  [ -z "$out" ] || echo "$out" | sed 's/^/#   /'
done
for u in gptline-label.service gptline-ingest@3.service gptline-train.service; do
  line=$(systemd-analyze security --offline=true --no-pager "$u" 2>&1 | grep 'Overall exposure level')
  score=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
  awk -v s="${score:-99}" 'BEGIN {exit !(s <= 2.0)}'; _result $? "$u: exposure ${score:-?} (at most 2.0, 'OK')"
done
cd .. || exit 1

# the label service's hardening, as the issue and docs/operations.md state it
L=$U/gptline-label.service
for k in '^User=gptline$' '^ProtectSystem=strict$' '^ProtectHome=yes$' '^PrivateTmp=yes$' '^NoNewPrivileges=yes$' \
         '^CapabilityBoundingSet=$' '^Restart=on-failure$' '^StateDirectory=gptline/labels$' \
         '^LoadCredential=server.key:/etc/gptline/server.key$'; do
  grep -q "$k" "$L"; _result $? "gptline-label.service: $k"
done
grep -q '^Unit=gptline-train.service$' "$U/gptline-train.timer"; _result $? "the timer starts gptline-train.service"
grep -q '^OnCalendar=' "$U/gptline-train.timer"; _result $? "on a calendar"
grep -q '^ExecStart=/usr/local/bin/gptline run /etc/gptline/nightly.ini$' "$U/gptline-train.service"
_result $? "the training service runs the nightly pipeline"
for s in label-export rm rl; do
  grep -q "^\[$s\]" "$U/nightly.ini"; _result $? "nightly.ini has a [$s] stage"
done

# sysusers: the user and group, in a scratch root
if command -v systemd-sysusers >/dev/null; then
  mkdir -p root/etc
  check "systemd-sysusers creates the user" systemd-sysusers --root="$TMP/root" "$U/gptline.sysusers"
  grep -q '^gptline:x:[0-9]*:[0-9]*:.*:/var/lib/gptline:' root/etc/passwd; _result $? "gptline in passwd"
else
  echo "ok $((_n += 1)) # skip systemd-sysusers not installed"
fi

# every --option of an ExecStart line is one the command knows
execline() { sed -n 's/^ExecStart=//p' "$1"; }
opts_known() { # UNIT SUBCOMMAND...
  local unit=$1; shift
  local help bad=
  help=$($G "$@" --help 2>&1)
  for o in $(execline "$unit" | grep -o -- '--[a-z-]*'); do
    echo "$help" | grep -q -- "$o" || bad="$bad $o"
  done
  is "$(basename "$unit"): the options of 'gptline $*' exist" "$bad" ""
}
opts_known "$L" label serve
opts_known "$U/gptline-ingest@.service" ingest

# the command lines run: systemd's specifiers and variables filled in by hand
expand() { # UNIT: its ExecStart with %S %d %i and the ${VAR}/$VAR of the environment expanded
  execline "$1" | sed -e "s|/usr/local/bin/gptline|$G|" -e "s|%S|$TMP/state|g" -e "s|%d|$TMP/cred|g" \
    -e "s|%i|0|g" | while read -r l; do eval "echo $l"; done
}
mkdir -p state/gptline cred
$G label keygen cred/server >/dev/null
cmd=$(GPTLINE_LABEL_ENDPOINT='tcp://127.0.0.1:*' GPTLINE_LABEL_OPTS='--heartbeat 500' expand "$L")
# shellcheck disable=SC2086
$cmd 2> label.log &
pid=$!
for _ in $(seq 1 100); do grep -q 'listening on' label.log && break; sleep 0.05; done
grep -q 'listening on tcp://127.0.0.1:' label.log; _result $? "gptline-label.service's command line serves"
check "its store is in the state folder" test -f state/gptline/labels/data.mdb
kill -TERM $pid; wait $pid; is "SIGTERM (KillSignal) stops it with status 0" $? 0

tar -czf src.tar.gz -C "$SRC" common
echo "$TMP/src.tar.gz" > inputs.txt
mkdir -p prom
cmd=$(GPTLINE_INGEST_INPUTS=$TMP/inputs.txt GPTLINE_INGEST_OUT=$TMP/ds GPTLINE_INGEST_WORLD=1 \
  GPTLINE_INGEST_OPTS='--min-chars 1' expand "$U/gptline-ingest@.service")
# shellcheck disable=SC2086
check "gptline-ingest@0's command line ingests" env GPTLINE_METRICS_DIR="$TMP/prom" $cmd
check "input 0 is marked done" test -f ds/done/in-000000.json
check "with GPTLINE_METRICS_DIR from the environment file: rank 0's metrics file" test -s prom/gptline-ingest-0.prom
done_testing
