#!/bin/sh
# tests/integration/service_keys_test.sh - SEC-KEY-1 at the process level:
# every service BINARY refuses to start, exits 1 and names the file, when
#   a. its node secret (nodes/<id>.cert_secret) is group/other-readable;
#   b. its node secret is missing;
#   c. its configured certificate is another node's (role / node-id differ);
#   d. (MDMS, fleet) an application secret is readable by others;
# and starts normally with the provisioned keys (the control case, so a
# refusal is not just "it never starts"). Each start is bounded by a
# deadline; a service that does not refuse is killed and the test fails.
# Private keys and configuration in the test's own temporary directory;
# nothing is left running (the deploy library's trap). Under 60 s.
set -u

# shellcheck source=tests/integration/lib/deploy.sh
. "$(dirname "$0")/lib/deploy.sh"

REFUSE_S=10     # a refusing service exits at once; 10 s is generous
READY_S=15      # the control start logs READY
STOP_S=10

deploy_setup ami-svckeys-test
"$BIN/ami-keygen" init "$tmp/keys" >/dev/null || fail "ami-keygen init"
deploy_render

# expect_refusal WHAT FILE BINARY CONFIG [ARGS...]: the service exits 1 within
# REFUSE_S seconds and its stderr names FILE (a path fragment).
expect_refusal() {
    what=$1 file=$2 bin=$3 cfg=$4
    shift 4
    timeout -s KILL "$REFUSE_S" "$BIN/$bin" -c "$cfg" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ "$rc" -eq 1 ] || { cat "$tmp/err"; fail "$bin ($what): exit $rc, expected 1 (137 = had to be killed)"; }
    grep -q -- "$file" "$tmp/err" || { cat "$tmp/err"; fail "$bin ($what): stderr does not name $file"; }
    say "ok: $bin refuses: $what"
}

# expect_start BINARY CONFIG: the service logs that it is READY, then stops
# cleanly on SIGTERM (exit 0).
expect_start() {
    bin=$1 cfg=$2
    "$BIN/$bin" -c "$cfg" >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    deadline=$(( $(now) + READY_S ))
    until grep -qi "ready" "$tmp/err" "$tmp/out" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$tmp/err"; fail "$bin: exited before READY with the provisioned keys"; }
        [ "$(now)" -lt "$deadline" ] || { kill -KILL "$pid"; fail "$bin: not READY within ${READY_S}s"; }
        sleep 0.1
    done
    kill -TERM "$pid"
    deadline=$(( $(now) + STOP_S ))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$(now)" -lt "$deadline" ] || { kill -KILL "$pid"; fail "$bin: did not stop on SIGTERM"; }
        sleep 0.1
    done
    wait "$pid"
    rc=$?
    [ "$rc" -eq 0 ] || fail "$bin: exit $rc after SIGTERM, expected 0"
    say "ok: $bin starts with its provisioned keys"
}

nodes=$tmp/keys/nodes
app=$tmp/keys/app

# role binary, config name, node id, another node's id of a different role
for spec in "ami-mdms mdms mdms broker" "ami-broker broker broker mdms" \
            "ami-headend headend-1 headend-1 agg-1" "ami-aggregator agg-1 agg-1 headend-1" \
            "ami-meter fleet-1 fleet-1 agg-2"; do
    # shellcheck disable=SC2086
    set -- $spec
    bin=$1 cfg=$tmp/etc/$2.cfg id=$3 other=$4
    secret=$nodes/$id.cert_secret

    chmod 0640 "$secret"
    expect_refusal "group-readable node secret" "$id.cert_secret" "$bin" "$cfg"
    chmod 0604 "$secret"
    expect_refusal "world-readable node secret" "$id.cert_secret" "$bin" "$cfg"
    chmod 0600 "$secret"

    mv "$secret" "$secret.away"
    expect_refusal "missing node secret" "$id.cert_secret" "$bin" "$cfg"
    mv "$secret.away" "$secret"

    expect_refusal "another node's certificate" "$other.cert" "$bin" "$cfg" -o "node/cert=$nodes/$other.cert"

    expect_start "$bin" "$cfg"
done

# application secrets: the MDMS's signing, box and data keys; a fleet's secret
for f in mdms-sign.cert_secret mdms-box.cert_secret mdms-data.cert_secret; do
    chmod 0644 "$app/$f"
    expect_refusal "world-readable $f" "$f" ami-mdms "$tmp/etc/mdms.cfg"
    chmod 0600 "$app/$f"
done
chmod 0640 "$app/fleet-1.cert_secret"
expect_refusal "group-readable fleet secret" "fleet-1.cert_secret" ami-meter "$tmp/etc/fleet-1.cfg"
chmod 0600 "$app/fleet-1.cert_secret"

[ -z "$(ours)" ] || fail "processes left: $(ours)"
say "PASS"
