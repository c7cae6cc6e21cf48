#!/bin/sh
# deploy/render.sh - render the demo topology's configuration into a run directory.
#
#   sh deploy/render.sh VAR_DIR [PORT_BASE]
#
# Writes, with absolute paths:
#   VAR_DIR/etc/<node>.cfg       one per service (mdms, broker, headend-1..H,
#                                agg-1..A, fleet-1..F) from deploy/etc/<role>.cfg.in
#   VAR_DIR/etc/amictl.cfg       amictl's configuration for this deployment
#                                (amictl/expect lists every node)
#   VAR_DIR/etc/ports            the ports chosen (NAME=PORT lines, for people)
#   VAR_DIR/supervisord.conf     deploy/supervisord.conf.in, then one
#                                deploy/supervisord-program.conf.in per service
# and creates VAR_DIR/log, VAR_DIR/db, VAR_DIR/state. Keys are expected in
# VAR_DIR/keys (ami-keygen init VAR_DIR/keys); rendering does not need them.
#
# Topology: the one VAR_DIR/keys/topology.cfg describes (what `ami-keygen
# init` was asked for: head ends H, aggregators A, fleets F, meters per
# fleet M); without keys yet, AMI_HEADENDS, AMI_AGGREGATORS, AMI_FLEETS,
# AMI_METERS_PER_FLEET [2, 2, 2, 100], which must then match what keygen
# will be given. Fleet i carries meters (i-1)*M+1 .. i*M and reports to
# aggregator ((i-1) mod A)+1, as ami-keygen provisions them; every
# aggregator reports to every head end.
#
# Ports follow one layout around PORT_BASE (default 7000, the demo's ports):
#   broker BASE; MDMS api BASE+100, ingest BASE+101, events BASE+102;
#   headend-N BASE+200+N; agg-N BASE+300+N.
# So a test can run a second, private deployment next to a running demo by
# choosing another base (tests/integration/demo_test.sh does).
#
# Addresses: every endpoint is on 127.0.0.1 unless AMI_ADDRS places nodes on
# hosts. Multi-host (deploy/cluster.sh renders one VAR_DIR per host this way):
#              AMI_ADDRS     "NODE=IPv4 ..." for any of broker, mdms,
#                            headend-N, agg-N, fleet-N, amictl: a server
#                            binds on its own address, its clients connect
#                            to that address; an unlisted node is at
#                            127.0.0.1 [empty: the single-host layout]
#              AMI_NODES     "NODE ...": only these nodes' etc/<node>.cfg and
#                            [program:x] sections are written (one host's
#                            share; empty = none, a host running only
#                            amictl); etc/amictl.cfg, etc/ports and the
#                            supervisord globals always are [unset: every
#                            node of the topology]
#              AMI_KEYS_DIR  the keys (ami-keygen init) the configuration
#                            points to, and whose topology.cfg is read, so
#                            hosts can share one provisioning [VAR_DIR/keys]
#              AMI_HEADEND_VIA  "agg-N/headend-K=IPv4:PORT ...": agg-N
#                            connects to headend-K at that address instead
#                            of the head end's own (a relay in front of the
#                            link: the fault suite's tools/ami-faultrelay);
#                            the head end binds as before [empty: none]
#
# Environment: AMI_BIN_DIR   directory of the ami-* binaries [<repo>/bin]
#              AMI_LOG_LEVEL log/level of every service [info]
#              AMI_HEARTBEAT heartbeat of every service [1s]
#              AMI_RATE_OPERATOR, AMI_RATE_OPERATOR_BURST, AMI_RATE_METER,
#              AMI_RATE_METER_BURST  the MDMS's on-demand read limits
#                            [10/s, 20, 2/s, 4]; 0 = unlimited (benchmarks)
#              Interval data (the meters' load profile, meter/profile/* and
#              mdms/interval; docs/SERVICES.md):
#              AMI_PROFILE_ENABLED     fleets push interval data [true]
#              AMI_PROFILE_INTERVAL    interval length, divides a day [15m];
#                                      the MDMS gets the same value
#              AMI_PROFILE_BLOCK       intervals per pushed block, 1..96 [4]
#              AMI_PROFILE_TIME_SCALE  simulated seconds per wall second [60:
#                                      the demo fills a day of history in 24
#                                      minutes]; 1 = real time; 0 = FLOOD, as
#                                      fast as the chain's credit allows
#                                      (ami-load ingest)
#              AMI_PROFILE_START       Unix seconds of the first interval's
#                                      start [0 = now, rounded down]
#              AMI_PROFILE_LIMIT       intervals per meter, then the fleet
#                                      stops producing [0 = no limit]
#              AMI_MDMS_MAP_SIZE       the MDMS's LMDB map size, the most its
#                                      database may grow to [1G] (sparse: a
#                                      large map costs no disk until used)
# Re-rendering is idempotent: files are replaced atomically (rename).
set -eu
# No pathname expansion: AMI_ADDRS and AMI_NODES are split on blanks, never globbed.
set -f

usage() {
    echo "usage: $0 VAR_DIR [PORT_BASE]" >&2
    exit 2
}
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
base=${2:-7000}
case $base in
    ''|*[!0-9]*) echo "render: PORT_BASE must be a number, not '$base'" >&2; exit 2 ;;
esac
# The highest port is BASE+302; ports below 1024 need privileges.
if [ "$base" -lt 1024 ] || [ "$base" -gt 65000 ]; then
    echo "render: PORT_BASE must be 1024..65000" >&2
    exit 2
fi

mkdir -p "$1"
var=$(cd "$1" && pwd)
bin=${AMI_BIN_DIR:-$root/bin}
mkdir -p "$bin" 2>/dev/null || true
bin=$(cd "$bin" && pwd)
log_level=${AMI_LOG_LEVEL:-info}
heartbeat=${AMI_HEARTBEAT:-1s}
rate_operator=${AMI_RATE_OPERATOR:-10/s}
rate_operator_burst=${AMI_RATE_OPERATOR_BURST:-20}
rate_meter=${AMI_RATE_METER:-2/s}
rate_meter_burst=${AMI_RATE_METER_BURST:-4}

# Paths go unquoted into supervisord command lines and into sed
# replacements: allow only characters that mean nothing to either.
for p in "$var" "$bin"; do
    case $p in
        *[!A-Za-z0-9/._+-]*)
            echo "render: path '$p' has characters this script does not quote" >&2
            echo "        (use a directory path of letters, digits and / . _ + -)" >&2
            exit 2 ;;
    esac
done
case $log_level in error|warn|info|debug) ;; *) echo "render: bad AMI_LOG_LEVEL" >&2; exit 2 ;; esac
case $heartbeat in ''|*[!0-9a-z]*) echo "render: bad AMI_HEARTBEAT" >&2; exit 2 ;; esac

profile_enabled=${AMI_PROFILE_ENABLED:-true}
profile_interval=${AMI_PROFILE_INTERVAL:-15m}
profile_block=${AMI_PROFILE_BLOCK:-4}
profile_time_scale=${AMI_PROFILE_TIME_SCALE:-60}
profile_start=${AMI_PROFILE_START:-0}
profile_limit=${AMI_PROFILE_LIMIT:-0}
map_size=${AMI_MDMS_MAP_SIZE:-1G}
case $map_size in ''|[!0-9]*|*[!0-9KMGT]*) echo "render: bad AMI_MDMS_MAP_SIZE (e.g. 1G, 512M)" >&2; exit 2 ;; esac
case $profile_enabled in true|false) ;; *) echo "render: AMI_PROFILE_ENABLED must be true or false" >&2; exit 2 ;; esac
case $profile_interval in ''|*[!0-9a-z]*) echo "render: bad AMI_PROFILE_INTERVAL (e.g. 15m, 900s)" >&2; exit 2 ;; esac
# number NAME VALUE MAX: a decimal 0..MAX, or exit 2
number() {
    case $2 in ''|*[!0-9]*) echo "render: $1 must be a number, not '$2'" >&2; exit 2 ;; esac
    if [ ${#2} -gt 10 ] || [ "$2" -gt "$3" ]; then
        echo "render: $1 must be at most $3" >&2; exit 2
    fi
}
number AMI_PROFILE_BLOCK "$profile_block" 96
[ "$profile_block" -ge 1 ] || { echo "render: AMI_PROFILE_BLOCK must be 1..96" >&2; exit 2; }
number AMI_PROFILE_TIME_SCALE "$profile_time_scale" 1000000
number AMI_PROFILE_START "$profile_start" 4294967295
number AMI_PROFILE_LIMIT "$profile_limit" 4294967295

# The keys: VAR_DIR/keys unless AMI_KEYS_DIR names a shared provisioning.
keys=$var/keys
if [ -n "${AMI_KEYS_DIR:-}" ]; then
    mkdir -p "$AMI_KEYS_DIR"
    keys=$(cd "$AMI_KEYS_DIR" && pwd)
    case $keys in
        *[!A-Za-z0-9/._+-]*)
            echo "render: AMI_KEYS_DIR '$keys' has characters this script does not quote" >&2
            exit 2 ;;
    esac
fi

# The topology: from the keys when they exist, else from the environment.
topo=$keys/topology.cfg
topo_value() {  # KEY: its value in topology.cfg's "topology" section
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([0-9][0-9]*\)[[:space:]]*\(#.*\)*\$/\1/p" "$topo" | head -n 1
}
if [ -f "$topo" ]; then
    headends=$(topo_value headends)
    aggregators=$(topo_value aggregators)
    fleets=$(topo_value fleets)
    per_fleet=$(topo_value meters-per-fleet)
    for kv in "AMI_HEADENDS:${AMI_HEADENDS:-}:$headends" "AMI_AGGREGATORS:${AMI_AGGREGATORS:-}:$aggregators" \
              "AMI_FLEETS:${AMI_FLEETS:-}:$fleets" "AMI_METERS_PER_FLEET:${AMI_METERS_PER_FLEET:-}:$per_fleet"; do
        name=${kv%%:*}; rest=${kv#*:}; given=${rest%%:*}; have=${rest#*:}
        if [ -n "$given" ] && [ "$given" != "$have" ]; then
            echo "render: $name=$given, but $topo says $have" >&2; exit 2
        fi
    done
else
    headends=${AMI_HEADENDS:-2}
    aggregators=${AMI_AGGREGATORS:-2}
    fleets=${AMI_FLEETS:-2}
    per_fleet=${AMI_METERS_PER_FLEET:-100}
fi
# ami-keygen's bounds (tools/ami-keygen/keygen.h)
number "head ends" "$headends" 16
number aggregators "$aggregators" 256
number fleets "$fleets" 1024
number "meters per fleet" "$per_fleet" 1000000
if [ "$headends" -lt 1 ] || [ "$aggregators" -lt 1 ] || [ "$fleets" -lt "$aggregators" ] || [ "$per_fleet" -lt 1 ]; then
    echo "render: topology: need head ends >= 1, aggregators >= 1, fleets >= aggregators, meters >= 1" >&2
    exit 2
fi
if [ $((base + 300 + aggregators)) -gt 65535 ]; then
    echo "render: PORT_BASE $base leaves no room for $aggregators aggregators" >&2; exit 2
fi
# A Unix socket path holds at most 107 bytes.
if [ ${#var} -gt 80 ]; then
    echo "render: '$var' is too long for supervisord's socket path (max 80 characters)" >&2
    exit 2
fi

# Nodes: the topology's, and where they are (AMI_ADDRS) and which of them
# this VAR_DIR runs (AMI_NODES).
nodes="broker mdms"
i=1; while [ $i -le "$headends" ]; do nodes="$nodes headend-$i"; i=$((i + 1)); done
i=1; while [ $i -le "$aggregators" ]; do nodes="$nodes agg-$i"; i=$((i + 1)); done
i=1; while [ $i -le "$fleets" ]; do nodes="$nodes fleet-$i"; i=$((i + 1)); done
# known NODE: NODE is one of the topology's nodes (or amictl, if ALSO_AMICTL=1)
known() {
    case " $nodes " in *" $1 "*) return 0 ;; esac
    [ "${2:-0}" = 1 ] && [ "$1" = amictl ]
}
addrs=${AMI_ADDRS:-}
for kv in $addrs; do
    node=${kv%%=*}; addr=${kv#*=}
    case $kv in *=*) ;; *) echo "render: AMI_ADDRS: '$kv' is not NODE=ADDRESS" >&2; exit 2 ;; esac
    known "$node" 1 || { echo "render: AMI_ADDRS: '$node' is not a node of this topology" >&2; exit 2; }
    # a dotted-quad IPv4 address, each part 0..255
    ok=$(echo "$addr" | awk -F. 'NF == 4 { for (i = 1; i <= 4; i++) if ($i !~ /^[0-9]+$/ || length($i) > 3 || $i > 255) exit; print "ok" }')
    [ "$ok" = ok ] || { echo "render: AMI_ADDRS: '$addr' (of $node) is not an IPv4 address" >&2; exit 2; }
done
# addr_of NODE: the address NODE binds on or is reached at
addr_of() {
    for kv in $addrs; do
        if [ "${kv%%=*}" = "$1" ]; then echo "${kv#*=}"; return 0; fi
    done
    echo 127.0.0.1
}
# AMI_HEADEND_VIA: agg-N/headend-K=IPv4:PORT, both nodes of the topology
via=${AMI_HEADEND_VIA:-}
for kv in $via; do
    link=${kv%%=*}; to=${kv#*=}; va=${link%%/*}; vh=${link#*/}
    case $kv in */*=*:*) ;; *) echo "render: AMI_HEADEND_VIA: '$kv' is not agg-N/headend-K=ADDRESS:PORT" >&2; exit 2 ;; esac
    case $va in agg-*) ;; *) echo "render: AMI_HEADEND_VIA: '$va' is not an aggregator" >&2; exit 2 ;; esac
    case $vh in headend-*) ;; *) echo "render: AMI_HEADEND_VIA: '$vh' is not a head end" >&2; exit 2 ;; esac
    { known "$va" && known "$vh"; } || { echo "render: AMI_HEADEND_VIA: '$link' is not a link of this topology" >&2; exit 2; }
    ok=$(echo "${to%:*}" | awk -F. 'NF == 4 { for (i = 1; i <= 4; i++) if ($i !~ /^[0-9]+$/ || length($i) > 3 || $i > 255) exit; print "ok" }')
    [ "$ok" = ok ] || { echo "render: AMI_HEADEND_VIA: '${to%:*}' (of $link) is not an IPv4 address" >&2; exit 2; }
    number "AMI_HEADEND_VIA port of $link" "${to##*:}" 65535
done
if [ -n "${AMI_NODES+set}" ]; then
    for node in $AMI_NODES; do
        known "$node" || { echo "render: AMI_NODES: '$node' is not a node of this topology" >&2; exit 2; }
    done
fi
# here_too NODE: NODE's configuration and program belong in this VAR_DIR
here_too() {
    [ -z "${AMI_NODES+set}" ] && return 0
    case " $AMI_NODES " in *" $1 "*) return 0 ;; esac
    return 1
}
addr_broker=$(addr_of broker)
addr_mdms=$(addr_of mdms)

etc=$var/etc
mkdir -p "$etc" "$var/log" "$var/db" "$var/state"

port_broker=$base
port_api=$((base + 100))
port_ingest=$((base + 101))
port_events=$((base + 102))

common=$etc/.common.sed
cat >"$common" <<EOF
s|@BIN@|$bin|g
s|@ETC@|$etc|g
s|@VAR@|$var|g
s|@KEYS@|$keys|g
s|@LOG_LEVEL@|$log_level|g
s|@HEARTBEAT@|$heartbeat|g
s|@RATE_OPERATOR@|$rate_operator|g
s|@RATE_OPERATOR_BURST@|$rate_operator_burst|g
s|@RATE_METER@|$rate_meter|g
s|@RATE_METER_BURST@|$rate_meter_burst|g
s|@PROFILE_ENABLED@|$profile_enabled|g
s|@PROFILE_INTERVAL@|$profile_interval|g
s|@PROFILE_BLOCK@|$profile_block|g
s|@PROFILE_TIME_SCALE@|$profile_time_scale|g
s|@PROFILE_START@|$profile_start|g
s|@PROFILE_LIMIT@|$profile_limit|g
s|@MDMS_MAP_SIZE@|$map_size|g
s|@PORT_BROKER@|$port_broker|g
s|@PORT_API@|$port_api|g
s|@PORT_INGEST@|$port_ingest|g
s|@PORT_EVENTS@|$port_events|g
s|@ADDR_BROKER@|$addr_broker|g
s|@ADDR_MDMS@|$addr_mdms|g
EOF

# render TEMPLATE OUTPUT [NAME=VALUE...]: substitute, refuse leftovers, rename.
render() {
    tpl=$1; out=$2; shift 2
    : >"$out.sed"
    for kv in "$@"; do
        printf 's|@%s@|%s|g\n' "${kv%%=*}" "${kv#*=}" >>"$out.sed"
    done
    sed -f "$out.sed" -f "$common" "$tpl" >"$out.tmp"
    rm -f "$out.sed"
    if grep -n '@[A-Z0-9_]*@' "$out.tmp" >&2; then
        echo "render: $tpl: variables left unrendered (above)" >&2
        rm -f "$out.tmp"
        exit 1
    fi
    mv -f "$out.tmp" "$out"
}

t=$here/etc
sup=$var/supervisord.conf
# program NAME BINARY NODE PRIORITY: append a [program:NAME] section to $sup.tmp
program() {
    render "$here/supervisord-program.conf.in" "$sup.part" PROGRAM="$1" BINARY="$2" NODE="$3" PRIORITY="$4"
    # the template's own header comment (up to its first blank line) is not repeated
    awk 'body || /^$/ { body = 1; print }' "$sup.part" >>"$sup.tmp"
    rm -f "$sup.part"
}
render "$here/supervisord.conf.in" "$sup.tmp"
expect="mdms broker"
ports="BROKER=$port_broker
MDMS_API=$port_api
MDMS_INGEST=$port_ingest
MDMS_EVENTS=$port_events"

if here_too mdms; then
    render "$t/mdms.cfg.in"       "$etc/mdms.cfg"      NODE=mdms ADDR_SELF="$addr_mdms"
fi
if here_too broker; then
    render "$t/broker.cfg.in"     "$etc/broker.cfg"    NODE=broker ADDR_SELF="$addr_broker"
    program ami-broker ami-broker broker 100
fi
if here_too mdms; then program ami-mdms ami-mdms mdms 200; fi

# Each aggregator reports to every head end: its headends section lists them.
headend_list=$etc/.headends
: >"$headend_list"
h=1
while [ $h -le "$headends" ]; do
    port=$((base + 200 + h))
    addr=$(addr_of headend-$h)
    if here_too headend-$h; then
        render "$t/headend.cfg.in" "$etc/headend-$h.cfg" NODE=headend-$h PORT_SELF=$port ADDR_SELF="$addr"
        program ami-headend-$h ami-headend headend-$h 300
    fi
    printf '        headend-%s\n            endpoint = tcp://%s:%s\n            cert = "%s/nodes/headend-%s.cert"\n' \
        "$h" "$addr" "$port" "$keys" "$h" >>"$headend_list"
    expect="$expect headend-$h"
    ports="$ports
HEADEND_$h=$port"
    h=$((h + 1))
done
a=1
while [ $a -le "$aggregators" ]; do
    port=$((base + 300 + a))
    if here_too agg-$a; then
        # the template ends with the "headends" section: the list goes below it
        render "$t/aggregator.cfg.in" "$etc/agg-$a.cfg.part" NODE=agg-$a PORT_SELF=$port \
            ADDR_SELF="$(addr_of agg-$a)"
        if [ -z "$via" ]; then
            cat "$etc/agg-$a.cfg.part" "$headend_list" >"$etc/agg-$a.cfg.tmp"
        else
            # AMI_HEADEND_VIA: this aggregator's links through a relay
            : >"$etc/agg-$a.via.sed"
            for kv in $via; do
                link=${kv%%=*}
                [ "${link%%/*}" = "agg-$a" ] || continue
                printf '/^        %s$/{n;s|endpoint = .*|endpoint = tcp://%s|;}\n' "${link#*/}" "${kv#*=}" >>"$etc/agg-$a.via.sed"
            done
            sed -f "$etc/agg-$a.via.sed" "$headend_list" | cat "$etc/agg-$a.cfg.part" - >"$etc/agg-$a.cfg.tmp"
            rm -f "$etc/agg-$a.via.sed"
        fi
        rm -f "$etc/agg-$a.cfg.part"
        mv -f "$etc/agg-$a.cfg.tmp" "$etc/agg-$a.cfg"
        program ami-aggregator-$a ami-aggregator agg-$a 400
    fi
    expect="$expect agg-$a"
    ports="$ports
AGG_$a=$port"
    a=$((a + 1))
done
rm -f "$headend_list"
f=1
while [ $f -le "$fleets" ]; do
    agg=$(( (f - 1) % aggregators + 1 ))
    if here_too fleet-$f; then
        render "$t/meter.cfg.in" "$etc/fleet-$f.cfg" NODE=fleet-$f AGG=agg-$agg \
            PORT_AGG=$((base + 300 + agg)) ADDR_AGG="$(addr_of agg-$agg)" \
            FIRST=$(( (f - 1) * per_fleet + 1 )) COUNT="$per_fleet"
        program ami-meter-$f ami-meter fleet-$f 500
    fi
    expect="$expect fleet-$f"
    f=$((f + 1))
done
render "$t/amictl.cfg.in"     "$etc/amictl.cfg"    EXPECT="$expect"
mv -f "$sup.tmp" "$sup"
rm -f "$common"

printf '%s\n' "$ports" >"$etc/ports.tmp"
mv -f "$etc/ports.tmp" "$etc/ports"
