#!/bin/sh
# tools/ami-load/bench.sh - the standard benchmark scenarios of ami-bus
# (make bench; not part of make test).
#
#   sh tools/ami-load/bench.sh [--bin DIR] [--seconds S] [--out FILE]
#
# Runs, one after the other on this machine, each with its figures also as
# ratios to a one-hop baseline measured in the same run:
#   1. ami-load baseline                       the machine's CURVE-hop ceiling
#   2. ami-load ingest --meters 10000          interval data, 2 fleets
#   3. ami-load ingest --meters 100000         interval data, ONE fleet process
#                                              (the 256 MiB fleet target)
#   (and ami-load security-cost: the application security's CPU per read and block)
#   4. ami-load read --concurrency 1 and 64    on-demand reads against a
#                                              private deployment (200 meters,
#                                              rate limits off)
# each measured for S seconds (BENCH_SECONDS, default 60; 5 is a quick smoke
# check), and writes FILE (docs/BENCHMARKS.md) with the machine's
# description and every figure (tools/ami-load/bench_report.py). The raw
# JSON of every run is kept next to it in FILE's directory as
# bench-results.json. Exits non-zero if a scenario failed (the report says
# which and why); the report is written either way.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BIN=$root/bin
SECS=${BENCH_SECONDS:-60}
OUT=$root/docs/BENCHMARKS.md
while [ $# -gt 0 ]; do
    case $1 in
        --bin) BIN=$2; shift 2 ;;
        --seconds) SECS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "usage: $0 [--bin DIR] [--seconds S] [--out FILE]" >&2; exit 2 ;;
    esac
done
case $BIN in /*) ;; *) BIN=$root/$BIN ;; esac
case $SECS in ''|*[!0-9]*|0) echo "bench: --seconds / BENCH_SECONDS must be a whole number >= 1" >&2; exit 2 ;; esac
for b in ami-load ami-keygen amictl ami-mdms ami-meter; do
    [ -x "$BIN/$b" ] || { echo "bench: $BIN/$b is missing (make first)" >&2; exit 1; }
done
for c in supervisord supervisorctl python3; do
    command -v $c >/dev/null 2>&1 || { echo "bench: $c is not installed" >&2; exit 1; }
done
load=$BIN/ami-load
# the templates of this tree, whichever BIN (build/san/bin has no ../deploy)
export AMI_DEPLOY_DIR="$root/deploy"

work=$(mktemp -d "${TMPDIR:-/tmp}/ami-bench.XXXXXX")
reads_dir=$work/reads
reads_pid=""
# shellcheck disable=SC2317  # (invoked by the trap)
cleanup() {
    rc=$?
    trap - EXIT INT TERM
    if [ -n "$reads_pid" ] && kill -0 "$reads_pid" 2>/dev/null; then
        supervisorctl -c "$reads_dir/supervisord.conf" shutdown >/dev/null 2>&1 || kill -TERM "$reads_pid"
        n=0
        while kill -0 "$reads_pid" 2>/dev/null && [ "$n" -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
    fi
    if [ "$rc" -eq 0 ]; then rm -rf "$work"; else echo "bench: kept $work" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failed=0
# run NAME COMMAND...: COMMAND's JSON into $work/NAME.json, its exit status
# into $work/NAME.rc, its stderr into $work/NAME.err
run() {
    name=$1; shift
    echo "bench: $name: $*" >&2
    rc=0
    "$@" >"$work/$name.json" 2>"$work/$name.err" || rc=$?
    echo $rc >"$work/$name.rc"
    if [ $rc -ne 0 ]; then
        failed=1
        echo "bench: $name exited $rc:" >&2
        tail -n 5 "$work/$name.err" >&2
    fi
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
run baseline "$load" baseline --seconds 2 --json
run security-cost "$load" security-cost --seconds 2 --json
run ingest-10k "$load" ingest --meters 10000 --fleets 2 --duration "$SECS" --json
run ingest-100k "$load" ingest --meters 100000 --fleets 1 --aggregators 1 --duration "$SECS" --json

# On-demand reads: a private deployment brought up (and checked: 200
# meters, one block each, accounted) by ami-load ingest --keep, then left
# idle for the reads.
run reads-setup "$load" ingest --meters 200 --fleets 2 --limit 4 --duration 1 --no-baseline \
    --dir "$reads_dir" --keep --json
reads_pid=$(cat "$reads_dir/supervisord.pid" 2>/dev/null || true)
if [ -n "$reads_pid" ] && kill -0 "$reads_pid" 2>/dev/null; then
    cfg=$reads_dir/etc/amictl.cfg
    # a read through each aggregator first (a head end can be READY a moment
    # before the broker lists its worker): asked again until 15 s have passed
    for meter in MTR-000001 MTR-000200; do
        deadline=$(( $(date +%s) + 15 ))
        until "$BIN/amictl" -c "$cfg" read $meter --timeout 2000 >/dev/null 2>&1; do
            [ "$(date +%s)" -lt $deadline ] || break
            sleep 0.2
        done
    done
    run reads-c1 "$load" read -c "$cfg" --meters 1-200 --concurrency 1 --duration "$SECS" --baseline --json
    run reads-c64 "$load" read -c "$cfg" --meters 1-200 --concurrency 64 --duration "$SECS" --baseline --json
    supervisorctl -c "$reads_dir/supervisord.conf" shutdown >/dev/null 2>&1 || true
    n=0
    while kill -0 "$reads_pid" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
    reads_pid=""
else
    echo "bench: the reads' deployment did not start: no read scenarios" >&2
    failed=1
fi
finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)

mkdir -p "$(dirname "$OUT")"
python3 "$here/bench_report.py" --work "$work" --seconds "$SECS" --started "$started" \
    --finished "$finished" --root "$root" --out "$OUT" \
    --raw "$(dirname "$OUT")/bench-results.json"
echo "bench: wrote $OUT" >&2
exit $failed
