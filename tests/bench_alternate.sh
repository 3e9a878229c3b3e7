#!/usr/bin/env bash
# bench_alternate.sh — bench/alternate.py, which the Shakespeare benchmark
# runs gptline and its PyTorch peer with: the two commands take turns (one
# stopped while the other runs), the seconds line and both outputs come
# back, a peer's "ready" line ends its set-up and is not passed on, and
# failures give a non-zero status that names what was wrong.
. "$(dirname "$0")/tap.sh"
PY=${PYTHON:-python3}
SRC=${GL_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
A="$SRC/bench/alternate.py"
cd "$TMP" || exit 1

# Each side appends its letter to one file 150 times, 10 ms apart: run at
# the same time the letters would interleave line by line; in turns of
# 0.3 s they come in a few long runs (one per turn).
writer() { echo "for i in \$(seq 150); do echo $1 >> $TMP/log; sleep 0.01; done; echo done $1"; }
check "two writers in turns exit 0" $PY "$A" 0.3 -- sh -c "$(writer a)" -- sh -c "echo ready; $(writer b)"
cp "$TMP/.out" out
is "each side wrote all its lines" "$(grep -c a log) $(grep -c b log)" "150 150"
runs=$(uniq log | wc -l)
check "the letters come in runs, one side stopped while the other ran ($runs runs)" test "$runs" -lt 40
check "first line: seconds of A and of B" grep -Eq '^seconds [0-9]+\.[0-9]{3} [0-9]+\.[0-9]{3}$' <(head -1 out)
is "then A's output, then B's, without the ready line" "$(tail -n +2 out | tr '\n' ' ')" "done a done b "

check_fails "a side that fails makes the status 1" 1 $PY "$A" 0.2 -- false -- true
check_fails "a command that cannot start is an error" 1 $PY "$A" 0.2 -- "$TMP/no-such-command" -- true
cp "$TMP/.err" err
check "the error names it" grep -q "cannot start $TMP/no-such-command" err
check_fails "a slice that is not a positive number is an error" 1 $PY "$A" 0 -- true -- true
cp "$TMP/.err" err
check "the error names the slice" grep -q "not '0'" err
check_fails "without two commands it prints its usage" 2 $PY "$A" 1 -- true
done_testing
