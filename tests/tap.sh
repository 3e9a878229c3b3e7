# tap.sh — TAP helpers for shell tests (sourced, not run).
#
#   . "$(dirname "$0")/tap.sh"
#   check "name" command args...     ok if the command exits 0
#   check_fails "name" STATUS cmd... ok if the command exits with STATUS
#   is "name" GOT WANT               ok if the strings are equal
#   done_testing                     prints the plan; exits 1 if any failed
#
# GPTLINE (the binary) and GL_DATA come from the Makefile. TMP is a fresh
# folder removed at exit.
set -u
_n=0
_failed=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gltest.XXXXXX")
trap '[ -n "${GL_KEEP_TMP:-}" ] || rm -rf "$TMP"' EXIT
: "${GPTLINE:?GPTLINE must name the gptline binary (make test sets it)}"

_result() { # status name
  _n=$((_n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $_n - $2"; else echo "not ok $_n - $2"; _failed=$((_failed + 1)); fi
}
check() {
  local name=$1; shift
  if "$@" >"$TMP/.out" 2>"$TMP/.err"; then _result 0 "$name"; else
    _result 1 "$name"; echo "#   command: $*"; sed 's/^/#   /' "$TMP/.err" | head -20; fi
}
check_fails() {
  local name=$1 want=$2; shift 2
  "$@" >"$TMP/.out" 2>"$TMP/.err"
  local got=$?
  if [ "$got" -eq "$want" ]; then _result 0 "$name"; else
    _result 1 "$name"; echo "#   command: $*"; echo "#   exit status $got, expected $want"; sed 's/^/#   /' "$TMP/.err" | head -20; fi
}
is() {
  if [ "$2" = "$3" ]; then _result 0 "$1"; else
    _result 1 "$1"; printf '#   got:      %s\n#   expected: %s\n' "$2" "$3"; fi
}
skip_all() { echo "1..0 # SKIP $*"; exit 0; }
done_testing() { echo "1..$_n"; [ "$_failed" -eq 0 ]; exit $?; }
