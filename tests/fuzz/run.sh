#!/bin/sh
# tests/fuzz/run.sh - run every libFuzzer target in build/fuzz.
#
#   --smoke          bounded run count over the seed corpus (the test suite);
#                    prints "[  PASSED  ] N test(s)." for the runner
#   --seconds S      fuzz each target for S seconds (make fuzz)
#
# The seed corpus is written fresh by OUT/fuzz/mkcorpus (the real encoder);
# the working corpus lives in build/fuzz/corpus-<target> and grows across
# `make fuzz` runs. A crash, leak or timeout makes the script exit non-zero
# and leaves the reproducer in build/fuzz/.
set -u
OUT=build/rel; MODE=smoke; SECONDS_EACH=60
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) MODE=smoke; shift ;;
        --seconds) MODE=timed; SECONDS_EACH=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "usage: $0 [--smoke | --seconds S] [--out DIR]" >&2; exit 2 ;;
    esac
done
SEEDS=build/fuzz/seeds
rm -rf "$SEEDS"; mkdir -p "$SEEDS"
"$OUT/fuzz/mkcorpus" "$SEEDS" || { echo "mkcorpus failed"; exit 1; }

# Why these limits: a frame is at most 1 MiB, so no honest decode needs more
# than a few MiB; -malloc_limit_mb catches a decoder that trusts a length
# field and asks for gigabytes. -timeout catches a hang on one input.
COMMON="-rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10 -print_final_stats=0"
ok=0; bad=0
for f in build/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f")
    work="build/fuzz/corpus-$name"
    mkdir -p "$work"
    log="build/fuzz/$name.log"
    if [ "$MODE" = smoke ]; then
        # 20000 mutations: a few seconds, enough to catch a regression
        # that breaks on the seeds' neighbours.
        "$f" $COMMON -runs=20000 -seed=1 -artifact_prefix=build/fuzz/ "$SEEDS" >"$log" 2>&1
    else
        "$f" $COMMON -max_total_time="$SECONDS_EACH" -artifact_prefix=build/fuzz/ "$work" "$SEEDS" >"$log" 2>&1
    fi
    rc=$?
    tail -n 8 "$log"
    if [ $rc -ne 0 ]; then
        echo "FUZZ FAIL: $name exited $rc (log $log; reproducer build/fuzz/crash-*/leak-*/timeout-*/oom-*)"
        bad=$((bad + 1))
    else
        echo "fuzz ok: $name"
        ok=$((ok + 1))
    fi
done
[ $((ok + bad)) -eq 0 ] && { echo "no fuzz targets built"; exit 1; }
echo "[  PASSED  ] $ok test(s)."
[ $bad -gt 0 ] && echo "[  FAILED  ] $bad test(s), listed below:"
[ $bad -eq 0 ]
