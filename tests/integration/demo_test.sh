#!/bin/sh
# tests/integration/demo_test.sh - the whole system as processes (FUN-READ-1,
# FUN-READ-2, SEC-AUTHZ-1, SEC-AVAIL-1), run by tests/run.sh; exit 0 = pass.
#
# The real binaries (bin/ami-*, bin/amictl, bin/ami-keygen) under a real
# supervisord, on loopback, with this test's OWN directory and ports, so it
# never collides with a running `make demo`:
#   1. pick a free port base (8 ports, outside the kernel's ephemeral range),
#      provision a temporary directory with ami-keygen, render the demo's
#      templates into it with deploy/render.sh, start supervisord;
#   2. wait by asking (amictl status --wait), never by sleeping;
#   3. every program RUNNING; read MTR-000150 --json: one MeterReadings
#      object, mRID MTR-000150, 19 readings; the reading is stored (history);
#      an unknown meter exits 5; a VIEWER's read exits 4;
#   4. stop headend-1: reads still succeed; stop headend-2 too: a read fails
#      with exit 1 (no route) or 3 (timeout); start headend-1: reads succeed
#      again;
#   5. shut everything down and check that no process of this test is left.
# Every wait has a deadline; a trap cleans up on any failure (and prints the
# tail of every log). Set KEEP=1 to keep the directory for a post-mortem.
set -u

# the private deployment: set-up, cleanup trap, shutdown
# shellcheck source=tests/integration/lib/deploy.sh
. "$(dirname "$0")/lib/deploy.sh"

# Seconds: each deadline is several times what a healthy run needs.
READY_S=40      # all services READY after start
FAILOVER_S=20   # a read succeeds again after a head end stops / restarts
NOROUTE_S=20    # reads fail once both head ends are gone
STOP_S=40       # supervisord and every service gone after shutdown
READ_MS=3000    # per-read timeout for the failover loops

# ---------------------------------------------------------------- set-up
deploy_setup ami-demo-test

"$BIN/ami-keygen" init "$tmp/keys" || fail "ami-keygen init"
"$BIN/ami-keygen" check "$tmp/keys" || fail "ami-keygen check after init"
deploy_render
amictl="$BIN/amictl -c $tmp/etc/amictl.cfg"

deploy_start
say "supervisord pid $sup_pid"

# ---------------------------------------------------------------- ready
t0=$(now)
$amictl status --wait $READY_S || fail "not every service became READY within ${READY_S}s"
say "every service READY after $(( $(now) - t0 ))s"

status=$(supervisorctl -c "$conf" status)
echo "$status"
programs=$(echo "$status" | grep -c '^ami-')
running=$(echo "$status" | grep -c '^ami-[a-z0-9-]* *RUNNING')
[ "$programs" -eq 8 ] || fail "supervisorctl lists $programs programs, expected 8"
[ "$running" -eq 8 ] || fail "only $running of 8 programs are RUNNING"
say "ok: all 8 programs RUNNING"

# ---------------------------------------------------------------- reads
# read_until WANTED_CODES DEADLINE_S ARGS...: run amictl ARGS until its exit
# code is one of WANTED_CODES; fail at the deadline. Sets $last_rc.
read_until() {
    wanted=$1; limit=$2; shift 2
    deadline=$(( $(now) + limit ))
    attempts=0
    while :; do
        attempts=$((attempts + 1))
        last_rc=0
        $amictl "$@" >"$tmp/out" 2>"$tmp/err" || last_rc=$?
        for w in $wanted; do
            if [ $last_rc -eq "$w" ]; then
                say "amictl $* -> exit $last_rc after $attempts attempt(s)"
                return 0
            fi
        done
        if [ "$(now)" -ge $deadline ]; then
            cat "$tmp/err"
            fail "amictl $* exited $last_rc, wanted one of: $wanted (for ${limit}s, $attempts attempts)"
        fi
    done
}

read_until 0 $FAILOVER_S read MTR-000150 --json --timeout $READ_MS
python3 -c '
import json, sys
doc = json.load(open(sys.argv[1]))
mr = doc["MeterReadings"]
rows = mr["MeterReading"]
assert len(rows) == 1, "MeterReading has %d entries" % len(rows)
m = rows[0]
assert m["Meter"]["mRID"] == "MTR-000150", m["Meter"]
assert len(m["Readings"]) == 19, "%d readings" % len(m["Readings"])
corr = mr["correlationId"]
assert len(corr) == 32 and int(corr, 16) >= 0, corr
req = m["requestId"]
assert len(req) == 32 and int(req, 16) >= 0 and req != corr, "request id %s: fresh per read, not the operator corr" % req
for r in m["Readings"]:
    t = r["ReadingType"]
    assert t["obis"].count(".") == 5 and isinstance(r["value"], int), r
    assert isinstance(t["powerOfTenMultiplier"], int) and r["ReadingQualities"], r
names = [r["ReadingType"]["name"] for r in m["Readings"]]
assert "Active energy import (+A)" in names, names
assert m["readDateTime"].endswith("Z") and m["storedDateTime"].endswith("Z"), m
' "$tmp/out" || { cat "$tmp/out"; fail "read MTR-000150 --json is not the expected MeterReadings"; }
[ "$(wc -l <"$tmp/out")" -eq 1 ] || fail "--json printed more than one line"
say "ok: read MTR-000150 --json: one MeterReadings object, 19 readings"

$amictl history MTR-000150 --last 1 --json >"$tmp/out" || fail "history MTR-000150"
python3 -c '
import json, sys
rows = json.load(open(sys.argv[1]))["MeterReadings"]["MeterReading"]
assert len(rows) == 1 and rows[0]["Meter"]["mRID"] == "MTR-000150", rows
' "$tmp/out" || fail "the read was not stored (history MTR-000150 --last 1)"
say "ok: the reading is stored (history)"

$amictl read MTR-000150 >"$tmp/out" || fail "read MTR-000150 (table)"
grep -q 'Correlation id  [0-9a-f]\{32\}' "$tmp/out" || fail "the table shows no correlation id"
grep -q '^1.0.1.8.0.255 ' "$tmp/out" || fail "the table has no +A register"

rc=0
$amictl read MTR-999999 --json >"$tmp/out" 2>"$tmp/err" || rc=$?
[ $rc -eq 5 ] || { cat "$tmp/out" "$tmp/err"; fail "unknown meter: exit $rc, expected 5"; }
python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))["error"]
assert e["name"] == "AMI_E_UNKNOWN_METER" and e["code"] == 20, e
assert len(e["correlationId"]) == 32, e
' "$tmp/out" || fail "unknown meter: not the expected JSON error"
say "ok: unknown meter -> exit 5, AMI_E_UNKNOWN_METER"

rc=0
$amictl --cert "$tmp/keys/operators/viewer.cert" read MTR-000150 >"$tmp/out" 2>"$tmp/err" || rc=$?
[ $rc -eq 4 ] || { cat "$tmp/out" "$tmp/err"; fail "VIEWER read: exit $rc, expected 4 (denied)"; }
say "ok: a VIEWER's read -> exit 4"
$amictl --cert "$tmp/keys/operators/viewer.cert" status >/dev/null || fail "a VIEWER may see status"

# ---------------------------------------------------------------- failover
supervisorctl -c "$conf" stop ami-headend-1 >/dev/null || fail "supervisorctl stop ami-headend-1"
read_until 0 $FAILOVER_S read MTR-000150 --timeout $READ_MS
say "ok: reads go on with headend-1 stopped (SEC-AVAIL-1)"

supervisorctl -c "$conf" stop ami-headend-2 >/dev/null || fail "supervisorctl stop ami-headend-2"
read_until "1 3" $NOROUTE_S read MTR-000150 --timeout $READ_MS
say "ok: no head end -> exit $last_rc ($(cat "$tmp/err"))"

supervisorctl -c "$conf" start ami-headend-1 >/dev/null || fail "supervisorctl start ami-headend-1"
read_until 0 $FAILOVER_S read MTR-000150 --timeout $READ_MS
say "ok: reads succeed again once headend-1 is back"

# ---------------------------------------------------------------- shutdown
deploy_shutdown
say "ok: shut down, no process left"
say "PASS"
exit 0
