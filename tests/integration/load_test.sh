#!/bin/sh
# tests/integration/load_test.sh - bin/ami-load against a real deployment
# (the load-testing use case of DESIGN.md section 3; FUN-READ-1 under load),
# run by tests/run.sh; exit 0 = pass.
#
# Like demo_test.sh: the real binaries under a real supervisord, on
# loopback, in this test's OWN directory and ports (never a running
# `make demo`):
#   1. pick a free port base, provision keys (ami-keygen), render the
#      demo's templates (deploy/render.sh), start supervisord;
#   2. wait by asking (amictl status --wait), then until one read through
#      each aggregator succeeds (right after start-up a head end can be
#      READY a moment before the broker has its worker);
#   3. ami-load read --count 200 --concurrency 8 --json: exit 0, exactly
#      one JSON object, 200 ok, 0 failed, no error kinds, p50 > 0;
#   4. a VIEWER's load: every read refused (AMI_E_DENIED), exit 1;
#      nothing listening at the endpoint: exit 3 "cannot reach the MDMS";
#   5. ami-load baseline --seconds 1 --json: both PUSH->PULL rates > 0,
#      echo round trips > 0, and its receiver process is gone afterwards;
#   6. shut everything down; no process of this test is left.
# No assertion is about speed: a slow machine makes this slower, not fail.
# Every wait has a deadline; a trap cleans up on any failure. KEEP=1 keeps
# the directory.
set -u

# the private deployment: set-up, cleanup trap, shutdown
# shellcheck source=tests/integration/lib/deploy.sh
. "$(dirname "$0")/lib/deploy.sh"

# Seconds: each deadline is several times what a healthy run needs.
READY_S=30      # all services READY after start
ROUTE_S=15      # a first read through each aggregator succeeds
STOP_S=20       # supervisord and every service gone after shutdown
LOG_TAIL=15     # lines of each log the cleanup prints on failure

receivers() {
    # ami-load baseline's child processes, by our binary's path
    pgrep -f "^$BIN/ami-load __baseline-receiver" 2>/dev/null | sort || true
}

# ---------------------------------------------------------------- set-up
deploy_setup ami-load-test ami-load

"$BIN/ami-keygen" init "$tmp/keys" >/dev/null || fail "ami-keygen init"
# warn: a log line per read would only slow the services under load; the
# MDMS's read rate limits (SEC-AVAIL-2) off (0): this test loads on purpose
deploy_render AMI_LOG_LEVEL=warn AMI_RATE_OPERATOR=0 AMI_RATE_METER=0
cfg=$tmp/etc/amictl.cfg
amictl="$BIN/amictl -c $cfg"
load="$BIN/ami-load"

deploy_start

# ---------------------------------------------------------------- ready
t0=$(now)
$amictl status --wait $READY_S >/dev/null || fail "not every service became READY within ${READY_S}s"
for meter in MTR-000001 MTR-000200; do      # one per aggregator
    deadline=$(( $(now) + ROUTE_S ))
    until $amictl read $meter --timeout 2000 >/dev/null 2>"$tmp/err"; do
        [ "$(now)" -lt $deadline ] || { cat "$tmp/err"; fail "no read of $meter within ${ROUTE_S}s"; }
        sleep 0.2   # "no route" comes back at once: do not spin
    done
done
say "ready, and a read through each aggregator works, after $(( $(now) - t0 ))s"

# ---------------------------------------------------------------- read load
rc=0
$load read --count 200 --concurrency 8 --json -c "$cfg" >"$tmp/out" 2>"$tmp/err" || rc=$?
[ $rc -eq 0 ] || { cat "$tmp/out" "$tmp/err"; fail "ami-load read exited $rc"; }
[ "$(wc -l <"$tmp/out")" -eq 1 ] || { cat "$tmp/out"; fail "--json printed more than one line"; }
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["command"] == "read", d
assert d["sent"] == 200 and d["ok"] == 200, "sent %s ok %s" % (d["sent"], d["ok"])
assert d["failed"] == 0 and d["errors"] == {}, d["errors"]
assert d["concurrency"] == 8 and 1 <= d["maxInFlight"] <= 8, d
lat = d["latencyUs"]
assert lat["count"] == 200 and lat["p50"] > 0, lat
assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
assert d["readsPerSecond"] > 0 and d["elapsedS"] > 0, d
print("load_test: ok: 200 reads, %.0f reads/s, p50 %.2f ms, p99 %.2f ms"
      % (d["readsPerSecond"], lat["p50"] / 1e3, lat["p99"] / 1e3))
' "$tmp/out" || { cat "$tmp/out"; fail "ami-load read --json is not as expected"; }

# a VIEWER may not read: every read is refused, by kind, and the exit says so
rc=0
$load read --count 3 --json -c "$cfg" --cert "$tmp/keys/operators/viewer.cert" \
    >"$tmp/out" 2>"$tmp/err" || rc=$?
[ $rc -eq 1 ] || { cat "$tmp/out" "$tmp/err"; fail "VIEWER load: exit $rc, expected 1"; }
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] == 0 and d["failed"] == 3 and d["errors"] == {"AMI_E_DENIED": 3}, d
' "$tmp/out" || { cat "$tmp/out"; fail "VIEWER load: not 3 x AMI_E_DENIED"; }
say "ok: a VIEWER's reads -> 3 x AMI_E_DENIED, exit 1"

# nothing listens at the endpoint (the broker's port + 1 is not in the
# layout, and port_free checked the layout only: check this one too)
dead=$((base + 1))
if port_free $dead; then
    rc=0
    $load read --count 1 --timeout 500 -c "$cfg" -e "tcp://127.0.0.1:$dead" \
        >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ $rc -eq 3 ] || { cat "$tmp/out" "$tmp/err"; fail "no MDMS: exit $rc, expected 3"; }
    grep -q "cannot reach the MDMS at tcp://127.0.0.1:$dead" "$tmp/err" \
        || { cat "$tmp/err"; fail "no MDMS: not the expected message"; }
    say "ok: nothing at the endpoint -> exit 3, \"$(cat "$tmp/err")\""
fi

# ---------------------------------------------------------------- baseline
before=$(receivers)
rc=0
$load baseline --seconds 1 --json >"$tmp/out" 2>"$tmp/err" || rc=$?
[ $rc -eq 0 ] || { cat "$tmp/out" "$tmp/err"; fail "ami-load baseline exited $rc"; }
python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))["baseline"]
pp = {p["bytes"]: p for p in b["pushPull"]}
assert sorted(pp) == [100, 1000], pp
assert pp[100]["messagesPerSecond"] > 0 and pp[1000]["messagesPerSecond"] > 0, pp
e = b["echo"]
assert e["roundTrips"] > 0 and 0 < e["latencyUs"]["p50"] <= e["latencyUs"]["p99"], e
print("load_test: ok: baseline %.0f msg/s at 100 B, %.0f msg/s at 1000 B, echo p50 %.0f us"
      % (pp[100]["messagesPerSecond"], pp[1000]["messagesPerSecond"], e["latencyUs"]["p50"]))
' "$tmp/out" || { cat "$tmp/out"; fail "ami-load baseline --json is not as expected"; }
after=$(receivers)
[ "$before" = "$after" ] || fail "a baseline receiver process was left behind: $after"

# ---------------------------------------------------------------- shutdown
deploy_shutdown
say "ok: shut down, no process left"
say "PASS"
exit 0
