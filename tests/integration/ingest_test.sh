#!/bin/sh
# tests/integration/ingest_test.sh - interval data end to end, as an operator
# sees it (FUN-INGEST: ami-load ingest's accounting matches the database;
# amictl history --from/--to and amictl gaps), run by tests/run.sh; exit 0 =
# pass.
#
#   1. ami-load ingest renders and starts its private deployment into this
#      test's own directory and port base (--dir, --port-base; the same
#      supervisord layout as lib/deploy.sh's), 200 meters in 2 fleets in
#      FLOOD mode, each meter limited to LIMIT intervals of 15 minutes from
#      START; measures 5 s, stops the fleets, accounts, and (--keep) leaves
#      the deployment running. Asserted: exit 0, exactly one JSON object,
#      ok, produced > 0, produced = stored by the MDMS = counted in LMDB,
#      lost 0, stored twice 0, 200 meters with data, no rejected block and
#      no conflict.
#   2. amictl history MTR-000001 --from START --to END (END = the end of the
#      last interval LIMIT allows) in text and JSON: H records, contiguous from
#      the first interval, ascending, H > 0; amictl gaps over the same
#      range: H + missing = LIMIT, and the only run of missing intervals (if
#      any: a fleet stopped by SIGUSR1 mid-day) is at the end; over a range
#      8 intervals longer: 8 more missing. When every meter reached LIMIT
#      (per-meter min = max = LIMIT, the normal case), H = LIMIT exactly.
#   3. shut down; no process of this test is left.
# No assertion is about speed. Every wait has a deadline (ami-load's own
# --ready-timeout and --drain-timeout, and STOP_S); a trap cleans up on any
# failure. KEEP=1 keeps the directory.
set -u

# shellcheck source=tests/integration/lib/deploy.sh
. "$(dirname "$0")/lib/deploy.sh"

READY_S=60      # every service up after start (ami-load --ready-timeout)
DRAIN_S=60      # the chain settled after the fleets stop (--drain-timeout)
STOP_S=40       # supervisord and every service gone after shutdown
LOG_TAIL=20     # lines of each log the cleanup prints on failure

METERS=200
LIMIT=192       # two days of 15-minute intervals per meter
STEP=900
START=$(( $(date -u +%s) / 86400 * 86400 - 7 * 86400 ))   # a week ago, 00:00 UTC
FIRST=$(( START + STEP ))    # the first interval's END (ranges are of END times, inclusive)
END=$(( START + LIMIT * STEP ))

deploy_setup ami-ingest-test ami-load
amictl="$BIN/amictl -c $tmp/etc/amictl.cfg"

# ---------------------------------------------------------------- ingest
rc=0
"$BIN/ami-load" ingest --meters $METERS --fleets 2 --duration 5 --limit $LIMIT --start $START \
    --dir "$tmp" --port-base "$base" --deploy "$root/deploy" --keep --no-baseline --json \
    --ready-timeout $READY_S --drain-timeout $DRAIN_S >"$tmp/out" 2>"$tmp/err" || rc=$?
# whatever happened, the cleanup trap must be able to stop what was started
sup_pid=$(cat "$tmp/supervisord.pid" 2>/dev/null || true)
[ $rc -eq 0 ] || { cat "$tmp/out" "$tmp/err"; fail "ami-load ingest exited $rc"; }
[ "$(wc -l <"$tmp/out")" -eq 1 ] || { cat "$tmp/out"; fail "--json printed more than one line"; }
if [ -z "$sup_pid" ] || ! kill -0 "$sup_pid" 2>/dev/null; then fail "--keep: the deployment is not running"; fi
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
meters, limit = int(sys.argv[2]), int(sys.argv[3])
a = d["accounting"]
assert d["command"] == "ingest" and d["ok"] is True, d
assert d["meters"] == meters and d["deployment"]["kept"] is True, d
assert a["settled"] is True and a["counted"] is True, a
assert a["produced"] > 0, a
assert a["produced"] == a["stored"] == a["inDatabase"], a
assert a["lost"] == 0 and a["storedTwice"] == 0, a
assert a["blocksRejected"] == 0 and a["conflicts"] == 0, a
assert a["meters"] == meters, a
assert 1 <= a["perMeterMin"] <= a["perMeterMax"] <= limit, a
assert a["produced"] <= meters * limit, a
assert d["window"]["seconds"] > 0 and d["storage"]["bytesPerReading"] > 0, d
roles = sorted(set(s["role"] for s in d["services"]))
assert roles == ["aggregator", "broker", "headend", "mdms", "meter"], roles
for s in d["services"]:
    assert s["pid"] > 0 and s["peakRssKiB"] > 0, s
print("ingest_test: ok: %d readings produced, stored and counted once each (%d..%d per meter), "
      "%.0f readings/s, %.1f bytes/reading" % (a["produced"], a["perMeterMin"], a["perMeterMax"],
      d["window"]["readingsPerSecond"], d["storage"]["bytesPerReading"]))
print("FULL" if a["perMeterMin"] == a["perMeterMax"] == limit else "PARTIAL")
' "$tmp/out" $METERS $LIMIT >"$tmp/verdict" || { cat "$tmp/out"; fail "ami-load ingest --json is not as expected"; }
head -n 1 "$tmp/verdict"
full=$(tail -n 1 "$tmp/verdict")

# ---------------------------------------------------------------- history
rc=0
$amictl history MTR-000001 --from $START --to $END --json >"$tmp/history" 2>"$tmp/err" || rc=$?
[ $rc -eq 0 ] || { cat "$tmp/history" "$tmp/err"; fail "amictl history --from/--to exited $rc"; }
rc=0
$amictl history MTR-000001 --from $START --to $END >"$tmp/history.txt" 2>"$tmp/err" || rc=$?
[ $rc -eq 0 ] || { cat "$tmp/history.txt" "$tmp/err"; fail "amictl history (text) exited $rc"; }
h=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))["MeterReadings"]
start, step, limit = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
mr = d["MeterReading"][0]
assert mr["Meter"]["mRID"] == "MTR-000001", mr["Meter"]
blocks = mr["IntervalBlocks"]
assert [b["ReadingType"]["obis"] for b in blocks] == ["1.0.1.8.0.255", "1.0.2.8.0.255"], blocks
n = mr["count"]
assert 1 <= n <= limit, n
for b in blocks:
    assert len(b["IntervalReadings"]) == n, len(b["IntervalReadings"])
    if n > 1:
        assert b["ReadingType"]["intervalLength"] == step, b["ReadingType"]
# contiguous from the first interval end, registers never decreasing
import datetime
def ts(s):
    return int(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.000Z")
               .replace(tzinfo=datetime.timezone.utc).timestamp())
ends = [ts(r["timeStamp"]) for r in blocks[0]["IntervalReadings"]]
assert ends == [start + step * (i + 1) for i in range(n)], ends[:5]
imp = [r["value"] for r in blocks[0]["IntervalReadings"]]
assert imp == sorted(imp), "+A decreases"
print(n)
' "$tmp/history" $START $STEP $LIMIT) || { head -c 2000 "$tmp/history"; fail "amictl history --json is not as expected"; }
grep -q "^$h interval(s)\$" "$tmp/history.txt" || { tail -n 3 "$tmp/history.txt"; fail "history text does not end with '$h interval(s)'"; }
[ "$(grep -c '^20[0-9-]*T[0-9:]*Z ' "$tmp/history.txt")" -eq "$h" ] || fail "history text: not $h rows"
if [ "$full" = FULL ]; then
    [ "$h" -eq $LIMIT ] || fail "every meter made $LIMIT intervals, but history of MTR-000001 has $h"
fi
say "ok: amictl history MTR-000001 --from/--to: $h intervals, contiguous, as text and JSON"

# ---------------------------------------------------------------- gaps
rc=0
$amictl gaps MTR-000001 --from $FIRST --to $END --json >"$tmp/gaps" 2>"$tmp/err" || rc=$?
[ $rc -eq 0 ] || { cat "$tmp/gaps" "$tmp/err"; fail "amictl gaps exited $rc"; }
rc=0
$amictl gaps MTR-000001 --from $FIRST --to $((END + 8 * STEP)) --interval 15m --json \
    >"$tmp/gaps2" 2>"$tmp/err" || rc=$?
[ $rc -eq 0 ] || { cat "$tmp/gaps2" "$tmp/err"; fail "amictl gaps (longer range) exited $rc"; }
rc=0
$amictl gaps MTR-000001 --from $FIRST --to $((END + 8 * STEP)) >"$tmp/gaps.txt" 2>"$tmp/err" || rc=$?
[ $rc -eq 0 ] || { cat "$tmp/gaps.txt" "$tmp/err"; fail "amictl gaps (text) exited $rc"; }
python3 -c '
import json, sys
g, g2 = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
h, limit = int(sys.argv[3]), int(sys.argv[4])
assert g["mRID"] == "MTR-000001" and g["intervalLength"] == 900, g
assert g["expected"] == limit and g["present"] == h and g["missing"] == limit - h, g
assert g["offGrid"] == 0, g
# what is missing is one run at the end (a fleet stopped mid-way), or nothing
assert (g["gaps"] == []) == (h == limit), g["gaps"]
if g["gaps"]:
    assert len(g["gaps"]) == 1 and g["gaps"][0]["count"] == limit - h, g["gaps"]
assert g2["expected"] == limit + 8 and g2["missing"] == limit - h + 8, g2
assert sum(r["count"] for r in g2["gaps"]) == g2["missing"], g2
' "$tmp/gaps" "$tmp/gaps2" "$h" $LIMIT || { cat "$tmp/gaps" "$tmp/gaps2"; fail "amictl gaps --json is not as expected"; }
grep -q "^$((LIMIT - h + 8)) missing\$" "$tmp/gaps.txt" || { cat "$tmp/gaps.txt"; fail "gaps text: not '$((LIMIT - h + 8)) missing'"; }
say "ok: amictl gaps MTR-000001: $((LIMIT - h)) missing of $LIMIT; 8 more over a range 8 intervals longer"

# ---------------------------------------------------------------- shutdown
deploy_shutdown
say "ok: shut down, no process left"
say "PASS"
exit 0
