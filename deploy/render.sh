#!/bin/sh
# deploy/render.sh - render the demo topology's configuration into a run directory.
#
#   sh deploy/render.sh VAR_DIR [PORT_BASE]
#
# Writes, with absolute paths:
#   VAR_DIR/etc/<node>.cfg       one per service (mdms, broker, headend-1/2,
#                                agg-1/2, fleet-1/2) from deploy/etc/<role>.cfg.in
#   VAR_DIR/etc/amictl.cfg       amictl's configuration for this deployment
#   VAR_DIR/etc/ports            the ports chosen (NAME=PORT lines, for people)
#   VAR_DIR/supervisord.conf     from deploy/supervisord.conf.in
# and creates VAR_DIR/log, VAR_DIR/db, VAR_DIR/state. Keys are expected in
# VAR_DIR/keys (ami-keygen init VAR_DIR/keys); rendering does not need them.
#
# Ports follow one layout around PORT_BASE (default 7000, the demo's ports):
#   broker BASE; MDMS api BASE+100, ingest BASE+101, events BASE+102;
#   headend-N BASE+200+N; agg-N BASE+300+N.
# So a test can run a second, private deployment next to a running demo by
# choosing another base (tests/integration/demo_test.sh does).
#
# Environment: AMI_BIN_DIR   directory of the ami-* binaries [<repo>/bin]
#              AMI_LOG_LEVEL log/level of every service [info]
#              AMI_HEARTBEAT heartbeat of every service [1s]
#              AMI_RATE_OPERATOR, AMI_RATE_OPERATOR_BURST, AMI_RATE_METER,
#              AMI_RATE_METER_BURST  the MDMS's on-demand read limits
#                            [10/s, 20, 2/s, 4]; 0 = unlimited (benchmarks)
# Re-rendering is idempotent: files are replaced atomically (rename).
set -eu

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
# A Unix socket path holds at most 107 bytes.
if [ ${#var} -gt 80 ]; then
    echo "render: '$var' is too long for supervisord's socket path (max 80 characters)" >&2
    exit 2
fi

etc=$var/etc
keys=$var/keys
mkdir -p "$etc" "$var/log" "$var/db" "$var/state"

port_broker=$base
port_api=$((base + 100))
port_ingest=$((base + 101))
port_events=$((base + 102))
port_headend_1=$((base + 201))
port_headend_2=$((base + 202))
port_agg_1=$((base + 301))
port_agg_2=$((base + 302))

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
s|@PORT_BROKER@|$port_broker|g
s|@PORT_API@|$port_api|g
s|@PORT_INGEST@|$port_ingest|g
s|@PORT_EVENTS@|$port_events|g
s|@PORT_HEADEND_1@|$port_headend_1|g
s|@PORT_HEADEND_2@|$port_headend_2|g
s|@PORT_AGG_1@|$port_agg_1|g
s|@PORT_AGG_2@|$port_agg_2|g
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
render "$t/mdms.cfg.in"       "$etc/mdms.cfg"      NODE=mdms
render "$t/broker.cfg.in"     "$etc/broker.cfg"    NODE=broker
render "$t/headend.cfg.in"    "$etc/headend-1.cfg" NODE=headend-1 PORT_SELF=$port_headend_1
render "$t/headend.cfg.in"    "$etc/headend-2.cfg" NODE=headend-2 PORT_SELF=$port_headend_2
render "$t/aggregator.cfg.in" "$etc/agg-1.cfg"     NODE=agg-1 PORT_SELF=$port_agg_1
render "$t/aggregator.cfg.in" "$etc/agg-2.cfg"     NODE=agg-2 PORT_SELF=$port_agg_2
# fleet i -> aggregator ((i-1) mod 2)+1, meters (i-1)*100+1 .. i*100, as
# ami-keygen's default topology provisions them.
render "$t/meter.cfg.in"      "$etc/fleet-1.cfg"   NODE=fleet-1 AGG=agg-1 PORT_AGG=$port_agg_1 FIRST=1 COUNT=100
render "$t/meter.cfg.in"      "$etc/fleet-2.cfg"   NODE=fleet-2 AGG=agg-2 PORT_AGG=$port_agg_2 FIRST=101 COUNT=100
render "$t/amictl.cfg.in"     "$etc/amictl.cfg"
render "$here/supervisord.conf.in" "$var/supervisord.conf"
rm -f "$common"

cat >"$etc/ports.tmp" <<EOF
BROKER=$port_broker
MDMS_API=$port_api
MDMS_INGEST=$port_ingest
MDMS_EVENTS=$port_events
HEADEND_1=$port_headend_1
HEADEND_2=$port_headend_2
AGG_1=$port_agg_1
AGG_2=$port_agg_2
EOF
mv -f "$etc/ports.tmp" "$etc/ports"
