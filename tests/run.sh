#!/bin/sh
# tests/run.sh - the one entry point of the test suite (called by `make test`).
#
# Runs every cmocka binary in OUT/tests, every script in tests/integration
# (if any), a short fuzzing pass over each decoder's seed corpus and the
# security report (tools/security-report) over their logs, then
# prints one summary line "N passed, M failed" and exits non-zero if any test
# failed or any binary died without a cmocka summary (a crash counts as a
# failure, never as silence). Per-binary output is kept in OUT/test-logs/.
set -u
OUT=build/rel
BIN=bin
while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        *) echo "usage: $0 [--out DIR] [--bin DIR]" >&2; exit 2 ;;
    esac
done
export AMI_BIN="$BIN" AMI_OUT="$OUT"
LOGS="$OUT/test-logs"
rm -rf "$LOGS"; mkdir -p "$LOGS"
passed=0; failed=0; failed_names=""

# Any single binary gets at most this long (seconds): a hang is a failure,
# not a stuck CI job.
LIMIT=300

account() { # name rc logfile
    name=$1; rc=$2; log=$3
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\./\1/p' "$log" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s), listed below:/\1/p' "$log" | tail -n 1)
    p=${p:-0}; f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        # died (signal, sanitizer, timeout) or a non-cmocka test failed
        f=1
        echo "FAIL: $name exited with status $rc (see $log)"
    fi
    passed=$((passed + p)); failed=$((failed + f))
    [ "$f" -gt 0 ] && failed_names="$failed_names $name"
}

for t in "$OUT"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    log="$LOGS/$name.log"
    timeout -k 5 $LIMIT "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    account "$name" $rc "$log"
done

for t in tests/integration/*.sh; do
    [ -f "$t" ] || continue
    name=$(basename "$t" .sh)
    log="$LOGS/$name.log"
    timeout -k 5 $LIMIT sh "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    if [ $rc -eq 0 ]; then
        echo "[  PASSED  ] 1 test(s)." >>"$log"
    fi
    account "$name" $rc "$log"
done

# Fuzz smoke: each decoder fuzzer over its seed corpus plus a bounded number
# of mutations. Bounded by run count, so a slow machine is slower, not failed.
log="$LOGS/fuzz-smoke.log"
sh tests/fuzz/run.sh --smoke --out "$OUT" >"$log" 2>&1
rc=$?
tail -n 20 "$log"
account fuzz-smoke $rc "$log"

# AMI-SEC traceability (make security-report) over this run's logs: every
# DESIGN.md section 6 requirement must have its tests, all passing. Counted
# as one test; its full report stays in the log.
log="$LOGS/security-report.log"
sh tools/security-report/security-report.sh --logs "$LOGS" >"$log" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
    echo "[  PASSED  ] 1 test(s)." >>"$log"
else
    sh tools/security-report/security-report.sh --logs "$LOGS" --gaps 2>&1 | tail -n 40
fi
tail -n 2 "$log"
account security-report $rc "$log"

echo
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
