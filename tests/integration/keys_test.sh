#!/bin/sh
# tests/integration/keys_test.sh - key lifecycle on the running system, as
# processes (SEC-KEY-2 rotation without stopping, SEC-KEY-3 revocation from
# the next connection on, SEC-KEY-1 nothing but provisioned keys):
#   a. revoke operator "viewer" while everything runs: its next amictl
#      status is refused at the handshake (exit 4), the operator's works;
#   b. rotate operator "operator" with a 4 s window: during the window both
#      the old key (a copy kept aside) and the new one work; once the
#      window has passed (waited for with a deadline) `prune` removes the
#      old key: the old copy is refused (exit 4), the new one works;
#   c. rotate fleet-1's transport key and `supervisorctl restart` it: reads
#      of its meters succeed again within a deadline; after `rotate
#      --finish` and another restart (only the new key listed) too.
# Private deployment (own temporary directory, free ports, own
# supervisord), every wait bounded, a trap that leaves no process behind;
# the whole run stays under 90 s. KEEP=1 keeps the directory.
set -u

# the private deployment: set-up, cleanup trap, shutdown
# shellcheck source=tests/integration/lib/deploy.sh
. "$(dirname "$0")/lib/deploy.sh"

# Seconds: each deadline is several times what a healthy run needs.
READY_S=30      # all services READY after start
REFUSE_S=10     # a revoked / pruned key is refused (zauth re-reads at the next handshake)
WINDOW_S=4      # the operator rotation window: room for two amictl calls
EXPIRE_S=10     # that window has passed (waited for, bounded)
RESTART_S=30    # reads of a restarted fleet's meters succeed again
STOP_S=20       # supervisord and every service gone after shutdown
READ_MS=3000    # per-read timeout

# ---------------------------------------------------------------- set-up
t_start=$(date +%s)
deploy_setup ami-keys-test

"$BIN/ami-keygen" init "$tmp/keys" || fail "ami-keygen init"
"$BIN/ami-keygen" check "$tmp/keys" || fail "ami-keygen check after init"
deploy_render
amictl="$BIN/amictl -c $tmp/etc/amictl.cfg"

deploy_start
say "supervisord pid $sup_pid"

# ---------------------------------------------------------------- ready
t0=$(now)
$amictl status --wait $READY_S >/dev/null || fail "not every service became READY within ${READY_S}s"
say "every service READY after $(( $(now) - t0 ))s"

# until WANTED_CODES LIMIT_S CMD...: run CMD until its exit code is one of
# WANTED_CODES; fail at the deadline. Sets $last_rc.
until_rc() {
    wanted=$1; limit=$2; shift 2
    deadline=$(( $(now) + limit ))
    attempts=0
    while :; do
        attempts=$((attempts + 1))
        last_rc=0
        "$@" >"$tmp/out" 2>"$tmp/err" || last_rc=$?
        for w in $wanted; do
            if [ $last_rc -eq "$w" ]; then
                say "$(echo "$*" | sed "s|$tmp|TMP|g") -> exit $last_rc after $attempts attempt(s)"
                return 0
            fi
        done
        if [ "$(now)" -ge $deadline ]; then
            cat "$tmp/err"
            fail "$* exited $last_rc, wanted one of: $wanted (for ${limit}s, $attempts attempts)"
        fi
        sleep 0.2
    done
}
keygen="$BIN/ami-keygen"
ops=$tmp/keys/operators

# ---------------------------------------------------------------- a. revoke
$amictl --cert "$ops/viewer.cert" status >/dev/null || fail "viewer's status before revocation"
"$keygen" revoke "$tmp/keys" viewer >"$tmp/out" || { cat "$tmp/out"; fail "ami-keygen revoke viewer"; }
grep -q "viewer" "$tmp/keys/revoked.txt" || fail "revoke did not record viewer in revoked.txt"
until_rc 4 $REFUSE_S $amictl --cert "$ops/viewer.cert" --timeout 2000 status
grep -qi "refused" "$tmp/err" || fail "viewer's exit 4 does not say its key was refused"
$amictl status >/dev/null || fail "the operator's status after revoking viewer"
say "ok: a. revoked viewer refused at its next connection (exit 4); others unaffected"

# ---------------------------------------------------------------- b. rotate an operator
mkdir -m 700 "$tmp/aside"
cp -p "$ops/operator.cert" "$ops/operator.cert_secret" "$tmp/aside/" || fail "copy the old key aside"
"$keygen" rotate "$tmp/keys" operator --window $WINDOW_S >"$tmp/out" || { cat "$tmp/out"; fail "ami-keygen rotate operator"; }
cmp -s "$ops/operator.cert_secret" "$tmp/aside/operator.cert_secret" && fail "rotate did not change the secret"
old_file=""
for f in "$tmp/keys/allow/mdms/"operator.old-*; do
    [ -e "$f" ] && { old_file=$(basename "$f"); break; }
done
[ -n "$old_file" ] || fail "rotate kept no old key in allow/mdms"
expires=$(sed -n 's/^ *expires = "\{0,1\}\([0-9]*\)"\{0,1\}$/\1/p' "$tmp/keys/allow/mdms/$old_file")
[ -n "$expires" ] || fail "the old key has no expires metadata"
# Inside the window both keys work: the new one (amictl.cfg names
# operators/operator.cert) and the old copy. A failure only counts while
# the clock is still inside the window (a very slow machine may pass it).
rc=0; $amictl --cert "$tmp/aside/operator.cert" --timeout 2000 status >/dev/null 2>"$tmp/err" || rc=$?
if [ $rc -ne 0 ]; then
    [ "$(now)" -ge "$expires" ] || { cat "$tmp/err"; fail "the old operator key inside its window: exit $rc"; }
    say "note: the ${WINDOW_S}s window ended before the old key's check (slow machine)"
else
    say "ok: the old operator key works inside its window"
fi
$amictl --timeout 2000 status >/dev/null || fail "the new operator key inside the window"
# wait (bounded) until the window has passed, then prune
deadline=$(( $(now) + EXPIRE_S ))
while [ "$(now)" -lt "$expires" ]; do
    [ "$(now)" -lt $deadline ] || fail "the clock did not reach expires=$expires"
    sleep 0.2
done
"$keygen" prune "$tmp/keys" >"$tmp/out" || { cat "$tmp/out"; fail "ami-keygen prune"; }
[ -e "$tmp/keys/allow/mdms/$old_file" ] && fail "prune left $old_file"
until_rc 4 $REFUSE_S $amictl --cert "$tmp/aside/operator.cert" --timeout 2000 status
$amictl --timeout 2000 status >/dev/null || fail "the new operator key after prune"
"$keygen" check "$tmp/keys" -q || fail "ami-keygen check after revoke/rotate/prune"
say "ok: b. rotated operator: new key works; after the window and prune the old key is refused"

# ---------------------------------------------------------------- c. rotate a fleet
until_rc 0 $RESTART_S $amictl read MTR-000042 --timeout $READ_MS
"$keygen" rotate "$tmp/keys" fleet-1 >"$tmp/out" || { cat "$tmp/out"; fail "ami-keygen rotate fleet-1"; }
supervisorctl -c "$conf" restart ami-meter-1 >/dev/null || fail "supervisorctl restart ami-meter-1"
until_rc 0 $RESTART_S $amictl read MTR-000042 --timeout $READ_MS
# end the window: only the new key is listed; restart again, reads go on
"$keygen" rotate "$tmp/keys" fleet-1 --finish >"$tmp/out" || { cat "$tmp/out"; fail "rotate fleet-1 --finish"; }
for f in "$tmp/keys/allow/agg-1/"fleet-1.old-*; do
    [ -e "$f" ] && fail "--finish left fleet-1's old key"
done
supervisorctl -c "$conf" restart ami-meter-1 >/dev/null || fail "supervisorctl restart ami-meter-1 (2)"
until_rc 0 $RESTART_S $amictl read MTR-000042 --timeout $READ_MS
supervisorctl -c "$conf" status ami-meter-1 | grep -q RUNNING || fail "ami-meter-1 is not RUNNING"
"$keygen" check "$tmp/keys" -q || fail "ami-keygen check after rotating fleet-1"
say "ok: c. fleet-1 rotated and restarted: its meters read again (old key window finished)"

# ---------------------------------------------------------------- d. rotate a head end
# SEC-KEY-2: headend-1 gets a new CURVE key and is restarted while reads
# run: every read succeeds throughout (the other head end carries them);
# after --finish the old key is refused at the handshake. The old key's
# observable refusal: the MDMS allow-list holds head ends (ingest) and
# operators (api), so an amictl presenting the head end's key gets past
# the handshake and is DENIED by role (it is not an operator) while the key
# is listed, and REFUSED at the handshake once it is not.
cp -p "$tmp/keys/nodes/headend-1.cert" "$tmp/keys/nodes/headend-1.cert_secret" "$tmp/aside/" \
    || fail "copy headend-1's key aside"
until_rc 4 $REFUSE_S $amictl --cert "$tmp/aside/headend-1.cert" --timeout 2000 status
grep -qi "refused" "$tmp/err" && fail "headend-1's listed key was refused at the handshake"
"$keygen" rotate "$tmp/keys" headend-1 >"$tmp/out" || { cat "$tmp/out"; fail "ami-keygen rotate headend-1"; }
supervisorctl -c "$conf" restart ami-headend-1 >/dev/null || fail "supervisorctl restart ami-headend-1"
reads=0
for m in MTR-000001 MTR-000101 MTR-000002 MTR-000102 MTR-000003 MTR-000103; do
    $amictl read $m --timeout $READ_MS >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "read $m while headend-1 restarts with its new key"; }
    reads=$((reads + 1))
done
"$keygen" rotate "$tmp/keys" headend-1 --finish >"$tmp/out" || { cat "$tmp/out"; fail "rotate headend-1 --finish"; }
until_rc 4 $REFUSE_S $amictl --cert "$tmp/aside/headend-1.cert" --timeout 2000 status
grep -qi "refused" "$tmp/err" || { cat "$tmp/err"; fail "headend-1's old key after --finish: exit 4 but not refused at the handshake"; }
$amictl status --wait $READY_S >/dev/null || fail "not every service READY after headend-1's rotation"
until_rc 0 $RESTART_S $amictl read MTR-000042 --timeout $READ_MS
say "ok: d. headend-1 rotated and restarted: $reads reads during it all succeeded; its old key is refused after --finish"

# ---------------------------------------------------------------- e. revoke an aggregator
# SEC-KEY-3 (system level) and SEC-KEY-4 (live sessions): agg-1 is revoked
# while connected. The head ends' per-message allow-list check drops its
# live session, so they stop hearing it and withdraw its service: reads of
# its meters (fleet-1, MTR-000001..100) fail, the MDMS reports agg-1 not
# READY, and after a restart its next connection is refused too. agg-2's
# meters read normally throughout.
$amictl read MTR-000042 --timeout $READ_MS >/dev/null || fail "read via agg-1 before its revocation"
"$keygen" revoke "$tmp/keys" agg-1 >"$tmp/out" || { cat "$tmp/out"; fail "ami-keygen revoke agg-1"; }
until_rc "1 3" $REFUSE_S $amictl read MTR-000042 --timeout $READ_MS
revoked_rc=$last_rc
$amictl read MTR-000150 --timeout $READ_MS >/dev/null || fail "read via agg-2 after agg-1's revocation"
# the MDMS marks a service DOWN after 3 heartbeats unheard: wait for it
agg1_ready() {
    $amictl status --json >"$tmp/status.json" 2>/dev/null || return 2
    python3 - "$tmp/status.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["services"]
sys.exit(0 if any(r.get("node") == "agg-1" and r.get("state") == "READY" for r in rows) else 1)
PY
}
until_rc 1 $REFUSE_S agg1_ready
supervisorctl -c "$conf" restart ami-aggregator-1 >/dev/null || fail "supervisorctl restart ami-aggregator-1"
rc=0; $amictl read MTR-000042 --timeout $READ_MS >/dev/null 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "a read via the revoked agg-1 succeeded after its restart"
$amictl read MTR-000150 --timeout $READ_MS >/dev/null || fail "read via agg-2 after agg-1's restart"
say "ok: e. revoked agg-1 lost its live sessions (reads of its meters fail: exit $revoked_rc), stays refused after a restart; agg-2 unaffected"

# ---------------------------------------------------------------- shutdown
deploy_shutdown
say "ok: shut down, no process left; total $(( $(now) - t_start ))s"
say "PASS"
exit 0
