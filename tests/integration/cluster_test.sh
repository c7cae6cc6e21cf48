#!/bin/sh
# tests/integration/cluster_test.sh - the multi-host deployment (issue 6):
# deploy/cluster.sh brings deploy/cluster.topology up as network-namespace
# hosts and takes it down without a trace. Run by tests/run.sh; exit 0 = pass.
#
# Under its OWN run directory, namespace prefix and subnet (so it runs next
# to `make cluster`, `make demo` and the other tests):
#   1. cluster.sh up: keys, per-host configuration, namespaces, one
#      supervisord per host, READY, a first read (its own deadlines; the
#      whole call is bounded too);
#   2. every host's namespace has its eth0 address; the root namespace's
#      interfaces and addresses are exactly what they were; each host's
#      keys directory holds the secrets of its own nodes and no other, and
#      its configuration names no key outside it;
#   3. the services talk over the veths: the broker and the MDMS listen on
#      the core host's address only, headend-1 holds connections to the
#      broker and the MDMS ingest on the core host and from both aggregator
#      hosts, agg-1 holds one to headend-2's host;
#   4. from the operator host: every node READY in the MDMS's status, a
#      read of MTR-000150 (fleet-2, behind agg-2) as MeterReadings JSON;
#   5. cluster.sh down: no namespace of ours, no process, the root
#      namespace unchanged (no veth left); a second down is a no-op.
# Needs root and `ip netns` (the CI runs as root). Every wait has a
# deadline; a trap brings the cluster down and removes the directory on any
# failure (printing the tail of every log; KEEP=1 keeps the directory).
set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${AMI_BIN:-bin}
case $BIN in /*) ;; *) BIN=$root/$BIN ;; esac
me=$(basename "$0" .sh)

# Seconds: each several times what a healthy run needs (up takes ~5 s).
UP_S=120        # the whole of cluster.sh up (its own waits: 10 + 40 + 15)
DOWN_S=90       # the whole of cluster.sh down (its own waits: 40 + 2 x 10)
CONN_S=15       # the expected connections show in ss
READ_S=20       # a read from the operator host succeeds

say() { echo "$me: $*"; }
fail() { echo "FAIL: $me: $*"; exit 1; }
now() { date +%s; }

tmp=""
prefix=""
net=""

ours() {
    [ -n "$tmp" ] || return 0
    pgrep -f "$tmp/" 2>/dev/null || true
}
our_ns() {
    [ -n "$prefix" ] || return 0
    ip netns list 2>/dev/null | awk '{ print $1 }' | grep "^$prefix" || true
}
root_net() {
    # the root namespace's interfaces and addresses, without counters
    { ip -o link show | awk '{ print $2, $3 }'; ip -o addr show | awk '{ print $2, $3, $4 }'; } | sort
}

# shellcheck disable=SC2317  # (invoked by the trap)
cleanup() {
    rc=$?
    trap - EXIT INT TERM
    if [ -n "$net" ] && { [ -n "$(our_ns)" ] || [ -n "$(ours)" ]; }; then
        say "cleanup: bringing the cluster down"
        cluster "$DOWN_S" down || true
    fi
    # belt and braces: whatever is still ours, by pid and by name
    left=$(ours)
    # shellcheck disable=SC2086
    [ -z "$left" ] || { echo "$me: cleanup: killing $left"; kill -KILL $left 2>/dev/null; }
    for ns in $(our_ns); do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    if [ "$rc" -ne 0 ] && [ -n "$tmp" ]; then
        for f in "$tmp"/run/*/log/*.log; do
            [ -f "$f" ] || continue
            echo "---- tail of $f"
            tail -n "${LOG_TAIL:-25}" "$f"
        done
    fi
    if [ -n "$tmp" ]; then
        if [ "${KEEP:-0}" = 1 ]; then echo "$me: kept $tmp"; else rm -rf "$tmp"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# cluster SECONDS ARGS...: deploy/cluster.sh on this test's cluster, bounded
cluster() {
    limit=$1; shift
    timeout -k 5 "$limit" env AMI_BIN_DIR="$BIN" sh "$root/deploy/cluster.sh" \
        --var "$tmp/run" --prefix "$prefix" --subnet "$net.0/24" "$@"
}

# ---------------------------------------------------------------- set-up
[ "$(id -u)" -eq 0 ] || fail "needs root (network namespaces): run the suite as root"
command -v ip >/dev/null 2>&1 || fail "'ip' is missing (Debian package iproute2)"
ip netns list >/dev/null 2>&1 || fail "'ip netns' does not work on this machine"
for b in ami-mdms ami-broker ami-headend ami-aggregator ami-meter amictl ami-keygen; do
    [ -x "$BIN/$b" ] || fail "$BIN/$b is missing (build first: make)"
done
for c in supervisord supervisorctl python3 pgrep ss timeout; do
    command -v $c >/dev/null 2>&1 || fail "$c is not installed"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ami-cluster-test.XXXXXX") || fail "no temporary directory"
# A prefix no namespace on this machine has yet, and a subnet of our own
# (namespaces are isolated, so the subnet cannot clash; it is still a
# parameter, and this proves it is honoured).
prefix=""
tries=0
while [ -z "$prefix" ] && [ $tries -lt 20 ]; do
    tries=$((tries + 1))
    r=$(od -An -N2 -tx2 /dev/urandom | tr -d ' ')
    candidate="amit$r-"
    ip netns list | awk '{ print $1 }' | grep -q "^$candidate" || prefix=$candidate
done
[ -n "$prefix" ] || fail "no free namespace prefix in 20 tries"
net=10.78.$(( $(od -An -N1 -tu1 /dev/urandom | tr -d ' ') ))
say "directory $tmp, namespaces $prefix*, subnet $net.0/24"

hosts="core he1 he2 agg1 agg2 ops"
root_before=$(root_net)

# ---------------------------------------------------------------- up
t0=$(now)
rc=0
cluster $UP_S up >"$tmp/up.out" 2>&1 || rc=$?
cat "$tmp/up.out"
[ $rc -eq 0 ] || fail "cluster.sh up exited $rc"
say "up in $(( $(now) - t0 ))s"
grep -q '^Meter  *MTR-000001$' "$tmp/up.out" || fail "up did not show the read of MTR-000001"
grep -q "ip netns exec ${prefix}ops " "$tmp/up.out" || fail "up did not say how to run amictl on the operator host"

# ---------------------------------------------------------------- hosts
for ns in ${prefix}bridge $(for h in $hosts; do echo "$prefix$h"; done); do
    ip netns list | awk '{ print $1 }' | grep -qx "$ns" || fail "namespace $ns does not exist"
done
addr_of() { case $1 in core) echo "$net.2" ;; he1) echo "$net.11" ;; he2) echo "$net.12" ;;
            agg1) echo "$net.21" ;; agg2) echo "$net.22" ;; ops) echo "$net.100" ;; esac; }
for h in $hosts; do
    ip -n "$prefix$h" -o -4 addr show dev eth0 | grep -q " $(addr_of "$h")/24 " \
        || fail "host $h: eth0 does not have $(addr_of "$h")/24"
    ip -n "${prefix}bridge" -o link show "v-$h" | grep -q "master br0" \
        || fail "host $h: its veth end v-$h is not on the bridge"
done
[ "$(root_net)" = "$root_before" ] || fail "the root namespace's interfaces or addresses changed"
say "ok: 6 hosts with their addresses on one bridge; the root namespace untouched"

# ---------------------------------------------------------------- keys
# Each host holds the secrets of its own nodes only (cluster.sh host_keys)
secrets_of() { (cd "$tmp/run/$1/keys" && find . -name '*_secret' -type f | sed 's|^\./||' | sort | tr '\n' ' '); }
expect_secrets() {  # HOST SECRETS...: exactly these secret files, and each configured file exists
    h=$1; shift
    want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
    got=$(secrets_of "$h")
    [ "$got" = "$want" ] || fail "host $h holds the secrets '$got', expected '$want'"
    for f in $(sed -n 's/.*"\([^"]*\/keys\/[^"]*\)".*/\1/p' "$tmp/run/$h"/etc/*.cfg | sort -u); do
        case $f in "$tmp/run/$h/keys/"*) ;; *) fail "host $h: its configuration names $f, outside its own keys";; esac
    done
}
expect_secrets core nodes/broker.cert_secret nodes/mdms.cert_secret app/mdms-box.cert_secret \
    app/mdms-data.cert_secret app/mdms-sign.cert_secret
expect_secrets he1 nodes/headend-1.cert_secret
expect_secrets he2 nodes/headend-2.cert_secret
expect_secrets agg1 nodes/agg-1.cert_secret nodes/fleet-1.cert_secret app/fleet-1.cert_secret
expect_secrets agg2 nodes/agg-2.cert_secret nodes/fleet-2.cert_secret app/fleet-2.cert_secret
expect_secrets ops operators/auditor.cert_secret operators/operator.cert_secret \
    operators/secadm.cert_secret operators/viewer.cert_secret
say "ok: every host holds the secret keys of its own nodes only"

# ---------------------------------------------------------------- veths
listen=$(ip netns exec "${prefix}core" ss -Hltn)
for p in 7000 7100 7101 7102; do
    echo "$listen" | grep -q " $net\.2:$p " || { echo "$listen"; fail "core: nothing listens on $net.2:$p"; }
done
if echo "$listen" | awk -v a="$net.2:" 'index($4, a) != 1 { found = 1 } END { exit !found }'; then
    echo "$listen"; fail "core: a service listens elsewhere than on the host's address (loopback, every address)"
fi
# estab HOST LOCAL PEER: HOST's namespace has an established TCP connection
# between LOCAL and PEER (ADDR:PORT, or ADDR: for any port)
estab() {
    ip netns exec "$prefix$1" ss -Htn state established | awk -v l="$2" -v p="$3" '
        index($3, l) == 1 && index($4, p) == 1 { found = 1 } END { exit !found }'
}
deadline=$(( $(now) + CONN_S ))
while :; do
    missing=""
    estab he1 "$net.11:" "$net.2:7000" || missing="$missing he1->broker"
    estab he1 "$net.11:" "$net.2:7101" || missing="$missing he1->mdms-ingest"
    estab he1 "$net.11:7201" "$net.21:" || missing="$missing agg1->he1"
    estab he1 "$net.11:7201" "$net.22:" || missing="$missing agg2->he1"
    estab agg1 "$net.21:" "$net.12:7202" || missing="$missing agg1->he2"
    estab core "$net.2:7000" "$net.2:" || missing="$missing mdms->broker"
    [ -z "$missing" ] && break
    if [ "$(now)" -ge $deadline ]; then
        for h in core he1 agg1; do echo "== $h"; ip netns exec "$prefix$h" ss -tn; done
        fail "connections missing after ${CONN_S}s:$missing"
    fi
    sleep 0.2
done
say "ok: head end, aggregators, broker and MDMS connected over the hosts' addresses"

# ---------------------------------------------------------------- ops host
cluster $READ_S amictl status >"$tmp/status" || { cat "$tmp/status"; fail "amictl status from the operator host"; }
for node in mdms broker headend-1 headend-2 agg-1 agg-2 fleet-1 fleet-2; do
    grep -q "^[a-z]*  *$node  *READY " "$tmp/status" || { cat "$tmp/status"; fail "$node is not READY in the MDMS's status"; }
done
say "ok: every node READY, as the MDMS sees it from the operator host"

deadline=$(( $(now) + READ_S ))
while :; do
    rc=0
    cluster $READ_S amictl read MTR-000150 --json >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ $rc -eq 0 ] && break
    if { [ $rc -ne 1 ] && [ $rc -ne 3 ]; } || [ "$(now)" -ge $deadline ]; then
        cat "$tmp/out" "$tmp/err"; fail "read MTR-000150 from the operator host: exit $rc"
    fi
    sleep 0.2  # pacing between attempts (a "no route" answer comes at once)
done
python3 -c '
import json, sys
rows = json.load(open(sys.argv[1]))["MeterReadings"]["MeterReading"]
assert len(rows) == 1 and rows[0]["Meter"]["mRID"] == "MTR-000150", rows
assert len(rows[0]["Readings"]) == 19, len(rows[0]["Readings"])
' "$tmp/out" || { cat "$tmp/out"; fail "read MTR-000150: not the expected MeterReadings"; }
say "ok: read MTR-000150 from the operator host (fleet-2 behind agg-2)"

cluster $READ_S status >"$tmp/out" 2>&1 || { cat "$tmp/out"; fail "cluster.sh status"; }
sups=$(ps -o pid= -C supervisord 2>/dev/null | tr -d ' ' | while read -r p; do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "$tmp/run/"; then echo "$p"; fi
done | wc -l)
[ "$sups" -eq 5 ] || fail "$sups supervisord processes of this cluster, expected 5 (every host but ops)"

# ---------------------------------------------------------------- down
t0=$(now)
cluster $DOWN_S down || fail "cluster.sh down failed"
say "down in $(( $(now) - t0 ))s"
left=$(our_ns)
[ -z "$left" ] || fail "namespace(s) left behind: $left"
left=$(ours)
if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    ps -o pid,args -p "$(echo $left | tr ' ' ',')"
    fail "process(es) left behind: $left"
fi
[ "$(root_net)" = "$root_before" ] || fail "the root namespace's interfaces changed after down"
ip -o link show type veth | grep -q "v-\|$prefix" && fail "a veth of ours is in the root namespace"
cluster $DOWN_S down >"$tmp/out" 2>&1 || { cat "$tmp/out"; fail "a second down failed"; }
grep -q "nothing is up" "$tmp/out" || { cat "$tmp/out"; fail "a second down did something"; }
say "ok: down left no namespace, veth or process; a second down is a no-op"
say "PASS"
exit 0
