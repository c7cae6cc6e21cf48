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
#      --finish` and another restart (only the new key listed) too;
#   d. rotate headend-1 while reads run (the other head end carries them);
#   e. rotate agg-1 (a server to its fleets, a client of both head ends)
#      while reads of agg-2's meters run: both head ends' allow-lists take
#      the new key, agg-1 then fleet-1 restart, agg-1's meters read again;
#      after --finish a client presenting the old key is refused at a
#      head end's handshake;
#   f. rotate the MDMS command-signing key (app/mdms-sign): the running
#      fleets take the new key from meter/mdms-pub on their own (HEALTH
#      mdms_keys 2), the MDMS restarts signing with it, reads succeed;
#      after --finish the fleets hold the new key only and reads go on;
#   g. revoke agg-1 (its live sessions dropped, its next connection
#      refused).
# Private deployment (own temporary directory, free ports, own
# supervisord), every wait bounded, a trap that leaves no process behind;
# the whole run stays under 150 s. KEEP=1 keeps the directory.
set -u

# the private deployment: set-up, cleanup trap, shutdown
# shellcheck source=tests/integration/lib/deploy.sh
. "$(dirname "$0")/lib/deploy.sh"

# Seconds: each deadline is several times what a healthy run needs.
READY_S=30      # all services READY after start
REFUSE_S=10     # a revoked / pruned key is refused (zauth re-reads at the next handshake)
WINDOW_S=4      # the operator rotation window: room for two amictl calls
EXPIRE_S=10     # that window has passed (waited for, bounded)
RESTART_S=30    # reads of a restarted fleet's (aggregator's, MDMS's) meters succeed again
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

# ---------------------------------------------------------------- e. rotate an aggregator
# SEC-KEY-2a: agg-1 gets a new CURVE key while the system runs. It is a
# client of both head ends (their allow-lists must take the new key and
# keep the old one for the window) and the server of fleet-1 (which trusts
# nodes/agg-1.cert, read at its start). So: rotate, restart agg-1 (it
# connects to the head ends with its new key), restart its fleet (it now
# expects the new server key), and agg-1's meters read again; agg-2's
# meters read throughout. After --finish the old key is refused at a head
# end's handshake: amictl pointed at headend-1's aggregator endpoint, with
# headend-1's server cert, presenting the old agg-1 key (exit 4 "refused";
# while the key was listed the same probe passed the handshake).
cp -p "$tmp/keys/nodes/agg-1.cert" "$tmp/keys/nodes/agg-1.cert_secret" "$tmp/aside/" \
    || fail "copy agg-1's key aside"
he1_probe="$amictl -e tcp://127.0.0.1:$((base + 201)) --mdms-cert $tmp/keys/nodes/headend-1.cert"
until_rc 0 $RESTART_S $amictl read MTR-000042 --timeout $READ_MS
"$keygen" rotate "$tmp/keys" agg-1 >"$tmp/out" || { cat "$tmp/out"; fail "ami-keygen rotate agg-1"; }
cmp -s "$tmp/keys/nodes/agg-1.cert_secret" "$tmp/aside/agg-1.cert_secret" && fail "rotate did not change agg-1's secret"
new_key=$(sed -n 's/^ *public-key = "\(.*\)"$/\1/p' "$tmp/keys/nodes/agg-1.cert")
old_key=$(sed -n 's/^ *public-key = "\(.*\)"$/\1/p' "$tmp/aside/agg-1.cert")
[ -n "$new_key" ] && [ -n "$old_key" ] || fail "cannot read agg-1's public keys"
for h in headend-1 headend-2; do
    grep -qF -e "$new_key" "$tmp/keys/allow/$h/agg-1.cert" || fail "allow/$h does not hold agg-1's new key"
    grep -lF -e "$old_key" "$tmp/keys/allow/$h/"agg-1.old-*.cert >/dev/null 2>&1 \
        || fail "allow/$h does not keep agg-1's old key for the window"
done
grep -q "restart its clients too: the fleets of this aggregator" "$tmp/out" \
    || { cat "$tmp/out"; fail "rotate agg-1 does not tell to restart its fleets"; }
# inside the window the old key still passes a head end's handshake
# (the head end does not serve an operator's request: no answer, exit 3,
# or its HELLO, exit 1; what matters is that the handshake passed)
rc=0; $he1_probe --cert "$tmp/aside/agg-1.cert" --timeout 1000 status >/dev/null 2>"$tmp/err" || rc=$?
grep -qi "refused" "$tmp/err" && { cat "$tmp/err"; fail "agg-1's old key refused inside its window (exit $rc)"; }
[ $rc -eq 1 ] || [ $rc -eq 3 ] || { cat "$tmp/err"; fail "the probe with agg-1's old key inside its window: exit $rc"; }
supervisorctl -c "$conf" restart ami-aggregator-1 >/dev/null || fail "supervisorctl restart ami-aggregator-1"
reads=0
for m in MTR-000101 MTR-000150 MTR-000199; do
    $amictl read $m --timeout $READ_MS >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "read $m (agg-2) while agg-1 restarts"; }
    reads=$((reads + 1))
done
supervisorctl -c "$conf" restart ami-meter-1 >/dev/null || fail "supervisorctl restart ami-meter-1 (agg-1's fleet)"
until_rc 0 $RESTART_S $amictl read MTR-000042 --timeout $READ_MS
"$keygen" rotate "$tmp/keys" agg-1 --finish >"$tmp/out" || { cat "$tmp/out"; fail "rotate agg-1 --finish"; }
for h in headend-1 headend-2; do
    for f in "$tmp/keys/allow/$h/"agg-1.old-*; do
        [ -e "$f" ] && fail "--finish left agg-1's old key in allow/$h"
    done
    grep -rqF -e "$old_key" "$tmp/keys/allow/$h" && fail "allow/$h still holds agg-1's old key"
done
until_rc 4 $REFUSE_S $he1_probe --cert "$tmp/aside/agg-1.cert" --timeout 2000 status
grep -qi "refused" "$tmp/err" || { cat "$tmp/err"; fail "agg-1's old key after --finish: exit 4 but not refused at the handshake"; }
$amictl status --wait $READY_S >/dev/null || fail "not every service READY after agg-1's rotation"
$amictl read MTR-000042 --timeout $READ_MS >/dev/null || fail "read via agg-1 after --finish"
"$keygen" check "$tmp/keys" -q || fail "ami-keygen check after rotating agg-1"
say "ok: e. agg-1 rotated: both head ends took its new key, agg-1 and fleet-1 restarted, its meters read again ($reads agg-2 reads meanwhile); its old key is refused at headend-1 after --finish"

# ---------------------------------------------------------------- f. rotate the MDMS signing key
# SEC-KEY-2b: a new MDMS command-signing key. The fleets re-read
# meter/mdms-pub on their own and accept old and new (HEALTH mdms_keys 2)
# before the MDMS is restarted to sign with the new one; reads succeed;
# after --finish the fleets accept the new key only (mdms_keys 1), and
# reads go on. (That a command signed with the removed key is refused with
# AMI_E_BAD_SIGNATURE is tests/unit/test_meter.c
# test_sec_key_2_mdms_signing_overlap.)
fleet_keys() {
    $amictl status --json >"$tmp/status.json" 2>/dev/null || return 2
    python3 - "$tmp/status.json" "$1" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["services"]
want = int(sys.argv[2])
fleets = [r for r in rows if r.get("node") in ("fleet-1", "fleet-2")]
ok = len(fleets) == 2 and all((r.get("stats") or {}).get("mdms_keys") == want for r in fleets)
sys.exit(0 if ok else 1)
PY
}
sign_before=$(sed -n 's/^ *public-key = "\(.*\)"$/\1/p' "$tmp/keys/app/mdms-sign.cert")
"$keygen" rotate "$tmp/keys" mdms-sign >"$tmp/out" || { cat "$tmp/out"; fail "ami-keygen rotate mdms-sign"; }
sign_after=$(sed -n 's/^ *public-key = "\(.*\)"$/\1/p' "$tmp/keys/app/mdms-sign.cert")
[ -n "$sign_after" ] && [ "$sign_after" != "$sign_before" ] || fail "rotate mdms-sign did not change the signing key"
grep -qF -e "$sign_after" "$tmp/keys/app/mdms-pub/mdms-sign.cert" || fail "app/mdms-pub lacks the new signing key"
grep -lF -e "$sign_before" "$tmp/keys/app/mdms-pub/"mdms-sign.old-*.cert >/dev/null 2>&1 \
    || fail "app/mdms-pub does not keep the old signing key for the window"
until_rc 0 $REFUSE_S fleet_keys 2
$amictl read MTR-000150 --timeout $READ_MS >/dev/null || fail "read before the MDMS restarts (old key, in its window)"
supervisorctl -c "$conf" restart ami-mdms >/dev/null || fail "supervisorctl restart ami-mdms"
$amictl status --wait $READY_S >/dev/null || fail "not every service READY after the MDMS restart"
until_rc 0 $RESTART_S $amictl read MTR-000150 --timeout $READ_MS
until_rc 0 $RESTART_S $amictl read MTR-000042 --timeout $READ_MS
"$keygen" rotate "$tmp/keys" mdms-sign --finish >"$tmp/out" || { cat "$tmp/out"; fail "rotate mdms-sign --finish"; }
for f in "$tmp/keys/app/mdms-pub/"mdms-sign.old-*; do
    [ -e "$f" ] && fail "--finish left the old signing key $f"
done
until_rc 0 $REFUSE_S fleet_keys 1
# SIGHUP makes a fleet re-read its keys at once (ami-meter's main)
supervisorctl -c "$conf" signal HUP ami-meter-2 >/dev/null || fail "supervisorctl signal HUP ami-meter-2"
deadline=$(( $(now) + REFUSE_S ))
until grep -q "SIGHUP: MDMS signing keys re-read: 1 accepted" "$tmp/log/ami-meter-2.log"; do
    [ "$(now)" -lt $deadline ] || fail "ami-meter-2 did not log its SIGHUP key reload"
    sleep 0.2
done
$amictl read MTR-000150 --timeout $READ_MS >/dev/null || fail "read with the new signing key only"
$amictl read MTR-000042 --timeout $READ_MS >/dev/null || fail "read via agg-1 with the new signing key only"
"$keygen" check "$tmp/keys" -q || fail "ami-keygen check after rotating mdms-sign"
say "ok: f. MDMS signing key rotated: fleets took it without a restart, the MDMS signs with it after its restart, reads succeed; after --finish the fleets hold it alone"

# ---------------------------------------------------------------- g. revoke an aggregator
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
say "ok: g. revoked agg-1 lost its live sessions (reads of its meters fail: exit $revoked_rc), stays refused after a restart; agg-2 unaffected"

# ---------------------------------------------------------------- shutdown
deploy_shutdown
say "ok: shut down, no process left; total $(( $(now) - t_start ))s"
say "PASS"
exit 0
