#!/bin/sh
# deploy/cluster.sh - run ami-bus across several hosts on one machine, each
# host a network namespace with its own address and its own supervisord
# (make cluster / make cluster-stop).
#
#   sh deploy/cluster.sh [OPTIONS] up       create the hosts of the topology,
#                                           provision keys once, render each
#                                           host's configuration, start its
#                                           supervisord, wait until every
#                                           service is READY (asked from the
#                                           operator host), read MTR-000001
#   sh deploy/cluster.sh [OPTIONS] down     stop every supervisord and
#                                           service, delete every namespace
#                                           (and with them the veths);
#                                           idempotent
#   sh deploy/cluster.sh [OPTIONS] status   each host, its supervisord's and
#                                           the MDMS's view
#   sh deploy/cluster.sh [OPTIONS] amictl ARGS...
#                                           amictl on the operator host
#
# Options (each also from the environment):
#   --topology FILE  the hosts [AMI_CLUSTER_TOPOLOGY, deploy/cluster.topology]
#   --var DIR        run directory [AMI_CLUSTER_VAR, var/cluster]
#   --prefix P       namespace name prefix [AMI_CLUSTER_PREFIX, ami-]
#   --subnet A.B.C.0/24  the hosts' subnet instead of the topology's network
#                    (each host keeps its last octet) [AMI_CLUSTER_SUBNET]
# AMI_CLUSTER_KEEP=1: a failed `up` leaves what it started (for a
# post-mortem) instead of bringing it down. render.sh's settings
# (AMI_LOG_LEVEL, AMI_HEARTBEAT, AMI_PROFILE_* ...) pass through.
#
# The network (nothing of the root namespace's is touched, no interface is
# ever created in it):
#   PREFIX+bridge     a namespace holding bridge br0 and one veth end per
#                     host, v-HOST, enslaved to br0
#   PREFIX+HOST       one per host: lo up, eth0 (the veth's other end) with
#                     the host's address/24
# Run directory: DIR/keys (the provisioning station: ami-keygen, once for
# the whole topology), DIR/HOST/ (one render.sh run directory per host:
# keys/ (only what the host's own nodes need: see host_keys), etc/, log/,
# db/, state/,
# supervisord.conf, supervisord.pid, supervisor.sock), DIR/namespaces (what
# `up` created, for `down`). Needs root and iproute2's `ip netns`.
set -eu
# No pathname expansion: host and node lists are split on blanks, never globbed.
set -f

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${AMI_BIN_DIR:-$root/bin}
topology=${AMI_CLUSTER_TOPOLOGY:-$root/deploy/cluster.topology}
var=${AMI_CLUSTER_VAR:-$root/var/cluster}
prefix=${AMI_CLUSTER_PREFIX:-ami-}
subnet=${AMI_CLUSTER_SUBNET:-}

# Seconds: for a supervisord to write its pid file; for every service to be
# READY (as the demo); for the first read (a head end can be READY a moment
# before the broker lists its worker); for every supervisord to stop
# (stopwaitsecs=10 per service, by priority group; the hosts stop in
# parallel); for leftovers to end on SIGTERM before SIGKILL.
WAIT_PID=10
WAIT_READY=40
WAIT_READ=15
WAIT_STOP=40
WAIT_TERM=10

say() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; exit 1; }
now() { date +%s; }

usage() {
    echo "usage: $0 [--topology FILE] [--var DIR] [--prefix P] [--subnet A.B.C.0/24] up|down|status|amictl ARGS..." >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --topology) [ $# -ge 2 ] || usage; topology=$2; shift 2 ;;
        --var)      [ $# -ge 2 ] || usage; var=$2; shift 2 ;;
        --prefix)   [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
        --subnet)   [ $# -ge 2 ] || usage; subnet=$2; shift 2 ;;
        -h|--help)  sed -n '2,/^set -eu/p' "$0" | sed '$d'; exit 0 ;;
        -*)         usage ;;
        *)          break ;;
    esac
done
[ $# -ge 1 ] || usage
cmd=$1; shift
case $cmd in up|down|status) [ $# -eq 0 ] || usage ;; amictl) ;; *) usage ;; esac

# A namespace name is PREFIX+HOST; the bridge's veth ends are v-HOST (an
# interface name holds 15 bytes: hosts are at most 12 characters).
case $prefix in
    ''|*[!a-z0-9-]*) die "--prefix must be letters a-z, digits and '-', not '$prefix'" ;;
esac
[ ${#prefix} -le 16 ] || die "--prefix is longer than 16 characters"
sub3=""
if [ -n "$subnet" ]; then
    case $subnet in
        *.0/24) sub3=${subnet%.0/24} ;;
        *) die "--subnet must be a /24 written A.B.C.0/24, not '$subnet'" ;;
    esac
fi

# Every command needs root and a working `ip netns`: refuse before anything.
[ "$(id -u)" -eq 0 ] || die "$cmd needs root (network namespaces, veth pairs, a bridge): run it as root, e.g. sudo make cluster"
command -v ip >/dev/null 2>&1 || die "'ip' is missing (Debian package iproute2)"
ip netns list >/dev/null 2>&1 || die "'ip netns' does not work here (no network-namespace support in this kernel or sandbox?)"

mkdir -p "$var"
var=$(cd "$var" && pwd)
[ ! -d "$bin" ] || bin=$(cd "$bin" && pwd)
brns=${prefix}bridge
nsfile=$var/namespaces
# The commands to suggest: with this run's options when they are not the defaults.
self="sh deploy/cluster.sh"
[ "$topology" = "$root/deploy/cluster.topology" ] || self="$self --topology $topology"
[ "$var" = "$root/var/cluster" ] || self="$self --var $var"
[ "$prefix" = ami- ] || self="$self --prefix $prefix"
[ -z "$subnet" ] || self="$self --subnet $subnet"
start="make cluster"
stop="make cluster-stop"
if [ "$self" != "sh deploy/cluster.sh" ]; then start="$self up"; stop="$self down"; fi

# ------------------------------------------------------------- topology
# The topology, checked and normalised, one statement a line:
#   net A.B.C | base N | mpf N | counts H A F | ops HOST | host NAME ADDR NODE...
parse_topology() {
    [ -r "$topology" ] || die "cannot read the topology $topology"
    awk -v sub3="$sub3" '
    function err(msg) {
        printf "cluster: %s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"
        bad = 1; exit 1
    }
    function fin(msg) { printf "cluster: %s: %s\n", FILENAME, msg > "/dev/stderr"; exit 1 }
    function quad(a, n,    p, k, i) {  # a is n dot-separated numbers 0..255
        k = split(a, p, ".")
        if (k != n) return 0
        for (i = 1; i <= k; i++)
            if (p[i] !~ /^[0-9]+$/ || length(p[i]) > 3 || p[i] + 0 > 255) return 0
        return 1
    }
    function private(a,    p) {  # RFC 1918
        split(a, p, ".")
        return p[1] == 10 || (p[1] == 172 && p[2] >= 16 && p[2] <= 31) || (p[1] == 192 && p[2] == 168)
    }
    BEGIN { base = 7000; mpf = 100 }
    { sub(/#.*/, "") }
    NF == 0 { next }
    $1 == "network" {
        if (NF != 2 || $2 !~ /\.0\/24$/) err("network A.B.C.0/24 (a /24)")
        net = substr($2, 1, length($2) - 5)
        if (!quad(net, 3)) err("network: " $2 " is not an IPv4 /24")
        next
    }
    $1 == "port-base" {
        if (NF != 2 || $2 !~ /^[0-9]+$/ || $2 + 0 < 1024 || $2 + 0 > 65000) err("port-base N, N in 1024..65000")
        base = $2 + 0; next
    }
    $1 == "meters-per-fleet" {
        if (NF != 2 || $2 !~ /^[0-9]+$/ || $2 + 0 < 1 || $2 + 0 > 1000000) err("meters-per-fleet N, N in 1..1000000")
        mpf = $2 + 0; next
    }
    $1 == "host" {
        if (NF < 4) err("host NAME ADDRESS NODE...")
        name = $2; addr = $3
        if (name !~ /^[a-z][a-z0-9]*$/ || length(name) > 12) err("host name " name ": 1..12 of a-z 0-9, starting with a letter")
        if (name == "bridge") err("host name bridge is taken by the bridge namespace")
        if (name in hostseen) err("host " name " is declared twice")
        if (net == "") err("the network statement must come before the first host")
        if (!quad(addr, 4)) err(addr " is not an IPv4 address")
        last = addr; sub(/.*\./, "", last); pre = addr; sub(/\.[0-9]+$/, "", pre)
        if (pre != net) err(addr " is not in the network " net ".0/24")
        if (last + 0 < 1 || last + 0 > 254) err(addr ": the host part must be 1..254")
        if ((last + 0) in lastseen) err(addr " is already host " lastseen[last + 0] "\047s address")
        hostseen[name] = 1; lastseen[last + 0] = name
        nodes = ""
        for (i = 4; i <= NF; i++) {
            nd = $i
            if (nd in nodeseen) err("node " nd " is already on host " nodeseen[nd])
            nodeseen[nd] = name
            if (nd == "amictl") ops = name
            else if (nd == "broker" || nd == "mdms") ;
            else if (nd ~ /^headend-[1-9][0-9]*$/) { k = substr(nd, 9) + 0; he[k] = 1; if (k > nhe) nhe = k }
            else if (nd ~ /^agg-[1-9][0-9]*$/) { k = substr(nd, 5) + 0; ag[k] = 1; if (k > nag) nag = k }
            else if (nd ~ /^fleet-[1-9][0-9]*$/) { k = substr(nd, 7) + 0; fl[k] = 1; if (k > nfl) nfl = k }
            else err("unknown node " nd " (broker, mdms, headend-K, agg-K, fleet-K, amictl)")
            nodes = nodes " " nd
        }
        nh++; hname[nh] = name; hlast[nh] = last + 0; hnodes[nh] = nodes
        next
    }
    { err("unknown statement " $1 " (network, port-base, meters-per-fleet, host)") }
    END {
        if (bad) exit 1
        if (net == "") fin("no network statement")
        if (!("broker" in nodeseen)) fin("no host runs the broker")
        if (!("mdms" in nodeseen)) fin("no host runs the mdms")
        if (!("amictl" in nodeseen)) fin("no host runs amictl (the operator host)")
        for (k = 1; k <= nhe; k++) if (!(k in he)) fin("headend-" k " is missing (head ends are numbered 1.." nhe ")")
        for (k = 1; k <= nag; k++) if (!(k in ag)) fin("agg-" k " is missing (aggregators are numbered 1.." nag ")")
        for (k = 1; k <= nfl; k++) if (!(k in fl)) fin("fleet-" k " is missing (fleets are numbered 1.." nfl ")")
        # ami-keygen bounds (tools/ami-keygen/keygen.h)
        if (nhe < 1 || nhe > 16) fin("1..16 head ends, not " nhe + 0)
        if (nag < 1 || nag > 256) fin("1..256 aggregators, not " nag + 0)
        if (nfl < nag || nfl > 1024) fin("at least one fleet per aggregator (" nag + 0 ") and at most 1024, not " nfl + 0)
        if (sub3 != "") {
            if (!quad(sub3, 3)) fin("--subnet " sub3 ".0/24 is not an IPv4 /24")
            net = sub3
        }
        if (!private(net)) fin("the network " net ".0/24 is not a private range (10/8, 172.16/12, 192.168/16)")
        print "net", net; print "base", base; print "mpf", mpf
        print "counts", nhe, nag, nfl; print "ops", ops
        for (i = 1; i <= nh; i++) print "host", hname[i], net "." hlast[i] hnodes[i]
    }' "$topology"
}

topo=""
load_topology() {
    topo=$(parse_topology) || exit 2
    net=$(echo "$topo" | awk '$1 == "net" { print $2 }')
    base=$(echo "$topo" | awk '$1 == "base" { print $2 }')
    mpf=$(echo "$topo" | awk '$1 == "mpf" { print $2 }')
    counts=$(echo "$topo" | awk '$1 == "counts" { print $2, $3, $4 }')
    ops=$(echo "$topo" | awk '$1 == "ops" { print $2 }')
    hosts=$(echo "$topo" | awk '$1 == "host" { printf "%s ", $2 }')
    # NODE=ADDRESS for every node, for render.sh
    addrs=$(echo "$topo" | awk '$1 == "host" { for (i = 4; i <= NF; i++) printf "%s=%s ", $i, $3 }')
    # shellcheck disable=SC2086  # (three numbers, split on purpose)
    set -- $counts
    n_headends=$1; n_aggregators=$2; n_fleets=$3
    for h in $hosts; do
        [ ${#var} -le $((80 - ${#h} - 1)) ] || die "'$var/$h' is too long for supervisord's socket path (run directory at most $((80 - ${#h} - 1)) characters)"
    done
}
host_addr() { echo "$topo" | awk -v h="$1" '$1 == "host" && $2 == h { print $3 }'; }
host_nodes() { echo "$topo" | awk -v h="$1" '$1 == "host" && $2 == h { for (i = 4; i <= NF; i++) printf "%s%s", (i > 4 ? " " : ""), $i }'; }
# host_services HOST: its nodes but amictl (what its supervisord runs)
host_services() { host_nodes "$1" | tr ' ' '\n' | grep -v '^amictl$' | tr '\n' ' ' | sed 's/ *$//'; }
# host_keys HOST: DIR/HOST/keys, what HOST may hold of the provisioning
# station DIR/keys: the topology and every node's public certificate, and
# only for HOST's own nodes their secrets, allow-lists and application keys
# (mdms: its signing, box and data keys and the registry; fleet-K: its seed
# and the MDMS's public keys; amictl: the operators' certificates). A host
# that is broken into gives away its own nodes, never another's secret.
# Re-made from the station at every `up`, so a rotation there reaches it.
host_keys() {
    _src=$var/keys; _dst=$var/$1/keys
    rm -rf "$_dst"
    mkdir -p "$_dst/nodes" "$_dst/allow" "$_dst/app" "$_dst/operators"
    chmod 700 "$_dst"
    cp -p "$_src/topology.cfg" "$_dst/"
    find "$_src/nodes" -maxdepth 1 -name '*.cert' -type f -exec cp -p {} "$_dst/nodes/" \;
    for _n in $(host_nodes "$1"); do
        [ ! -f "$_src/nodes/$_n.cert_secret" ] || cp -p "$_src/nodes/$_n.cert_secret" "$_dst/nodes/"
        [ ! -d "$_src/allow/$_n" ] || cp -Rp "$_src/allow/$_n" "$_dst/allow/"
        case $_n in
            mdms)
                for _k in mdms-sign mdms-box mdms-data; do
                    cp -p "$_src/app/$_k.cert" "$_src/app/$_k.cert_secret" "$_dst/app/"
                done
                cp -p "$_src/app/meters.tsv" "$_dst/app/" ;;
            fleet-*)
                cp -p "$_src/app/$_n.cert" "$_src/app/$_n.cert_secret" "$_dst/app/"
                cp -Rp "$_src/app/mdms-pub" "$_dst/app/" ;;
            amictl)
                cp -Rp "$_src/operators/." "$_dst/operators/" ;;
        esac
    done
}

# ------------------------------------------------------------- helpers
ns_exists() { ip netns list 2>/dev/null | awk '{ print $1 }' | grep -qx "$1"; }

pid_of() {  # HOST: its supervisord's pid if it runs, else nothing
    f=$var/$1/supervisord.pid
    [ -f "$f" ] || return 0
    p=$(cat "$f" 2>/dev/null || true)
    case $p in ''|*[!0-9]*) return 0 ;; esac
    if kill -0 "$p" 2>/dev/null; then echo "$p"; fi
}

leftovers() {
    # Our processes: every service (BIN/ami-ROLE -c VAR/HOST/etc/NODE.cfg),
    # every supervisord (-c VAR/HOST/supervisord.conf), and anything still
    # inside one of our namespaces (a namespace is deleted only once empty).
    {
        pgrep -f "/ami-[a-z]+ -c $var/[a-z0-9]+/etc/" 2>/dev/null || true
        pgrep -f "supervisord -c $var/[a-z0-9]+/supervisord.conf" 2>/dev/null || true
        for ns in $(our_namespaces); do
            ip netns pids "$ns" 2>/dev/null || true
        done
    } | grep -vx "$$" | sort -un | tr '\n' ' ' | sed 's/ *$//'
}

our_namespaces() {
    # What `up` recorded, and what the topology names: those that exist.
    {
        [ -f "$nsfile" ] && cat "$nsfile"
        for h in ${hosts:-}; do echo "$prefix$h"; done
        echo "$brns"
    } | sort -u | while read -r ns; do
        [ -n "$ns" ] && ns_exists "$ns" && echo "$ns"
    done
    return 0
}

amictl_ops() {  # ARGS...: amictl on the operator host
    ip netns exec "$prefix$ops" "$bin/amictl" -c "$var/$ops/etc/amictl.cfg" "$@"
}

# ------------------------------------------------------------- up
created=0
up_done=0
# shellcheck disable=SC2317  # (invoked by the trap)
up_failed() {
    rc=$?
    trap - EXIT
    if [ "$rc" -ne 0 ] && [ $up_done -eq 0 ] && [ $created -eq 1 ]; then
        echo "cluster: up failed; logs are in $var/<host>/log/" >&2
        if [ "${AMI_CLUSTER_KEEP:-0}" = 1 ]; then
            echo "cluster: AMI_CLUSTER_KEEP=1: left as it is; '$stop' removes it" >&2
        else
            echo "cluster: bringing down what was started (AMI_CLUSTER_KEEP=1 keeps it)" >&2
            down || true
        fi
    fi
    exit "$rc"
}

network_up() {
    : >"$nsfile"
    say "network $net.0/24: namespace $brns (bridge br0), one namespace per host"
    ip netns add "$brns"
    echo "$brns" >>"$nsfile"
    ip -n "$brns" link set lo up
    ip -n "$brns" link add br0 type bridge
    ip -n "$brns" link set br0 up
    for h in $hosts; do
        ns=$prefix$h
        addr=$(host_addr "$h")
        ip netns add "$ns"
        echo "$ns" >>"$nsfile"
        ip -n "$ns" link set lo up
        # created inside the bridge's namespace, its peer straight into the host's
        ip -n "$brns" link add "v-$h" type veth peer name eth0 netns "$ns"
        ip -n "$brns" link set "v-$h" master br0
        ip -n "$brns" link set "v-$h" up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        printf 'cluster:   %-14s %-15s %s\n' "$ns" "$addr" "$(host_nodes "$h")"
    done
}

up() {
    load_topology
    for b in ami-mdms ami-broker ami-headend ami-aggregator ami-meter amictl ami-keygen; do
        [ -x "$bin/$b" ] || die "$bin/$b is missing: build first (make)"
    done
    command -v supervisord >/dev/null 2>&1 || die "supervisord is missing: run 'make deps' (Debian package supervisor)"

    # Already up (every namespace, every supervisord)? Then only check and read.
    existing=$(our_namespaces | tr '\n' ' ')
    running=1
    for h in $hosts; do
        ns_exists "$prefix$h" || running=0
        if [ -n "$(host_services "$h")" ] && [ -z "$(pid_of "$h")" ]; then running=0; fi
    done
    ns_exists "$brns" || running=0
    if [ $running -eq 1 ]; then
        say "already up; checking the services"
    elif [ -n "$existing" ]; then
        die "partly up (namespaces: ${existing% }): run '$stop' first"
    else
        trap up_failed EXIT

        # 1. keys: once for the whole topology, never overwritten
        rc=0
        "$bin/ami-keygen" check -q "$var/keys" || rc=$?
        case $rc in
            0) say "keys: $var/keys is complete" ;;
            4) say "keys: provisioning $var/keys ($n_headends head ends, $n_aggregators aggregators, $n_fleets fleets of $mpf meters)"
               "$bin/ami-keygen" init "$var/keys" --headends "$n_headends" --aggregators "$n_aggregators" \
                   --fleets "$n_fleets" --meters-per-fleet "$mpf" >/dev/null ;;
            *) die "keys in $var/keys are damaged (see above); remove $var to provision anew" ;;
        esac

        # 2. keys and configuration, one run directory per host (each
        #    with its own keys); render.sh refuses keys provisioned for
        #    another topology
        for h in $hosts; do
            host_keys "$h" || die "keys for host $h: cannot copy them from $var/keys"
            env AMI_BIN_DIR="$bin" AMI_KEYS_DIR="$var/$h/keys" AMI_ADDRS="$addrs" AMI_NODES="$(host_services "$h")" \
                AMI_HEADENDS="$n_headends" AMI_AGGREGATORS="$n_aggregators" AMI_FLEETS="$n_fleets" \
                AMI_METERS_PER_FLEET="$mpf" sh "$root/deploy/render.sh" "$var/$h" "$base" \
                || die "render.sh for host $h failed (keys of another topology? remove $var/keys)"
        done

        # 3. the network
        created=1
        network_up

        # 4. one supervisord per host that runs services, inside its namespace
        for h in $hosts; do
            [ -n "$(host_services "$h")" ] || continue
            rm -f "$var/$h/supervisord.pid"
            ip netns exec "$prefix$h" supervisord -c "$var/$h/supervisord.conf" \
                || die "supervisord of host $h did not start"
        done
        for h in $hosts; do
            [ -n "$(host_services "$h")" ] || continue
            deadline=$(( $(now) + WAIT_PID ))
            # polling for the pid file: supervisord daemonizes, nothing to ask yet
            while [ -z "$(pid_of "$h")" ]; do
                [ "$(now)" -lt $deadline ] || die "supervisord of host $h is not running after ${WAIT_PID}s (see $var/$h/log/supervisord.log)"
                sleep 0.1
            done
            say "host $h: supervisord pid $(pid_of "$h") runs $(host_services "$h")"
        done
    fi

    # 5. wait by asking the MDMS from the operator host, never by sleeping
    say "waiting until every service is READY (amictl status --wait $WAIT_READY, from host $ops)"
    if ! amictl_ops status --wait "$WAIT_READY"; then
        for h in $hosts; do
            if [ -n "$(host_services "$h")" ]; then
                echo "== host $h"
                supervisorctl -c "$var/$h/supervisord.conf" status || true
            fi
        done
        die "the services did not all become ready; logs are in $var/<host>/log/"
    fi

    # 6. an on-demand read across the hosts; "no route" (1) or a timeout (3)
    #    right after start-up is asked again until the deadline
    echo
    say "amictl read MTR-000001 (from host $ops)"
    deadline=$(( $(now) + WAIT_READ ))
    while :; do
        rc=0
        amictl_ops read MTR-000001 || rc=$?
        [ $rc -eq 0 ] && break
        if { [ $rc -ne 1 ] && [ $rc -ne 3 ]; } || [ "$(now)" -ge $deadline ]; then
            die "the read failed (exit $rc); logs are in $var/<host>/log/"
        fi
        say "retrying the read"
    done
    up_done=1
    trap - EXIT
    rel=${var#"$root"/}
    last=MTR-$(printf '%06d' $(( n_fleets * mpf )))
    he_host=$(echo "$topo" | awk '$1 == "host" { for (i = 4; i <= NF; i++) if ($i == "headend-1") print $2 }')
    mdms_host=$(echo "$topo" | awk '$1 == "host" { for (i = 4; i <= NF; i++) if ($i == "mdms") print $2 }')
    cat <<EOF

cluster: up: hosts ${hosts% } on $net.0/24, namespaces $prefix<host>. Next:
  amictl on the operator host $ops (meters MTR-000001 .. $last):
    $self amictl read $last
    ip netns exec $prefix$ops bin/amictl -c $rel/$ops/etc/amictl.cfg status
  every host, as its supervisord and the MDMS see it:
    $self status
  one host's processes, and its connections over its veth (here: headend-1's):
    supervisorctl -c $rel/$mdms_host/supervisord.conf status
    ip netns exec $prefix$he_host ss -tn
  stop everything and delete the namespaces:
    $stop
Logs: $rel/<host>/log/   Keys: $rel/<host>/keys/ (provisioned in $rel/keys/)
EOF
}

# ------------------------------------------------------------- down
down() {
    # The topology names what may exist; if it no longer parses, the
    # recorded namespaces and the run directory still say what to stop.
    hosts=""
    if t=$(parse_topology 2>/dev/null); then
        hosts=$(echo "$t" | awk '$1 == "host" { printf "%s ", $2 }')
    fi
    # every host directory with a supervisord.conf, whatever the topology says
    sup_hosts=""
    set +f
    for d in "$var"/*/supervisord.conf; do
        [ -f "$d" ] && sup_hosts="$sup_hosts $(basename "$(dirname "$d")")"
    done
    set -f
    namespaces=$(our_namespaces | tr '\n' ' ')
    pids=""
    for h in $sup_hosts; do
        p=$(pid_of "$h")
        [ -n "$p" ] && pids="$pids $p"
    done
    if [ -z "$namespaces" ] && [ -z "$pids" ] && [ -z "$(leftovers)" ]; then
        say "nothing is up"
        rm -f "$nsfile"
        return 0
    fi

    # 1. every supervisord shuts down (its services first), all at once
    for h in $sup_hosts; do
        p=$(pid_of "$h")
        [ -n "$p" ] || continue
        say "host $h: stopping supervisord (pid $p) and its services"
        supervisorctl -c "$var/$h/supervisord.conf" shutdown >/dev/null 2>&1 || kill -TERM "$p" 2>/dev/null || true
    done
    deadline=$(( $(now) + WAIT_STOP ))
    for p in $pids; do
        # polling the pids: there is nothing else to ask once told to stop
        while kill -0 "$p" 2>/dev/null; do
            if [ "$(now)" -ge $deadline ]; then
                say "supervisord $p did not stop within ${WAIT_STOP}s: sending SIGTERM"
                kill -TERM "$p" 2>/dev/null || true
                break
            fi
            sleep 0.2
        done
    done

    # 2. anything of ours still alive: end it by pid
    rest=$(leftovers)
    if [ -n "$rest" ]; then
        say "ending leftover process(es): $rest"
        # shellcheck disable=SC2086
        kill -TERM $rest 2>/dev/null || true
        deadline=$(( $(now) + WAIT_TERM ))
        while [ -n "$(leftovers)" ] && [ "$(now)" -lt $deadline ]; do sleep 0.2; done
        rest=$(leftovers)
        # shellcheck disable=SC2086
        [ -z "$rest" ] || kill -KILL $rest 2>/dev/null || true
        deadline=$(( $(now) + WAIT_TERM ))
        while [ -n "$(leftovers)" ] && [ "$(now)" -lt $deadline ]; do sleep 0.2; done
    fi
    rest=$(leftovers)
    [ -z "$rest" ] || die "process(es) $rest would not stop"

    # 3. the namespaces: deleting one deletes its interfaces, and a veth
    #    goes with either of its ends
    for ns in $(our_namespaces); do
        ip netns del "$ns" || die "cannot delete namespace $ns"
    done
    left=$(our_namespaces | tr '\n' ' ')
    [ -z "$left" ] || die "namespace(s) $left are still there"
    rm -f "$nsfile"
    for h in $sup_hosts; do rm -f "$var/$h/supervisord.pid"; done
    say "down: no process, namespace or veth of the cluster is left (logs and keys stay in $var)"
}

# ------------------------------------------------------------- status
status() {
    load_topology
    any=0
    printf '%-8s %-16s %-15s %-10s %s\n' HOST NAMESPACE ADDRESS SUPERVISOR NODES
    for h in $hosts; do
        ns=$prefix$h
        if ns_exists "$ns"; then any=1; else ns="($ns: none)"; fi
        p=$(pid_of "$h"); [ -n "$p" ] || p=-
        [ -n "$(host_services "$h")" ] || p="(none)"
        printf '%-8s %-16s %-15s %-10s %s\n' "$h" "$ns" "$(host_addr "$h")" "$p" "$(host_nodes "$h")"
    done
    if [ $any -eq 0 ]; then
        say "not up"
        return 3
    fi
    for h in $hosts; do
        [ -n "$(pid_of "$h")" ] || continue
        echo
        echo "== host $h"
        supervisorctl -c "$var/$h/supervisord.conf" status || true
    done
    echo
    echo "== the MDMS's view (amictl status, from host $ops)"
    amictl_ops status
}

case $cmd in
    up)     up ;;
    down)   down ;;
    status) status ;;
    amictl)
            load_topology
        ns_exists "$prefix$ops" || die "the cluster is not up (no namespace $prefix$ops): $start"
        exec ip netns exec "$prefix$ops" "$bin/amictl" -c "$var/$ops/etc/amictl.cfg" "$@" ;;
esac
