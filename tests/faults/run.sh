#!/bin/sh
# tests/faults/run.sh - the fault suite of issue 6 (`make test-faults`).
#
#   sh tests/faults/run.sh [--short] [FAULT...]
#
# Brings up a PRIVATE multi-host cluster (deploy/cluster.sh with
# tests/faults/faults.topology, its own run directory, namespace prefix and
# subnet: it runs beside `make cluster`, `make demo` and the other tests),
# with interval data flowing steadily (every meter pushes a block of 4
# one-minute intervals every wall second: AMI_PROFILE_INTERVAL=1m,
# BLOCK=4, TIME_SCALE=240, a fixed START so a restarted fleet makes the
# very same blocks again) and on-demand reads running from the operator
# host (ami-load read --json, plus a one-read-at-a-time probe for the
# recovery time). Then, for each fault, it injects the fault, waits (with
# a deadline) until the system has recovered, and compares what the meters
# produced with what the MDMS stored, by reading the MDMS's LMDB itself
# (tests/faults/account.py, mdb_dump, read-only).
#
# Faults (numbers from issue 6; default order 6 1 2 3 4 5 7: the fleet
# restart first, because a restarted fleet replays its production from
# START at the same pace and must catch up with what it had made; the map
# size last, because it restarts the MDMS twice):
#   1  kill -9 headend-1; its supervisor restarts it; reads succeed again
#      within the heartbeat expiry (3 heartbeats); no interval reading lost
#   2  kill -9 the MDMS while batches flow; after its restart every reading
#      in LMDB before the kill is still there, none twice, the backlog drains
#   3  kill -9 the broker; clients and workers reconnect (MDP), reads resume
#   4  agg-1's uplink cut for FAULT4_CUT_S (60 s, the issue's figure): the
#      bridge-side end of its host's veth taken down (a cable cut: no RST,
#      packets vanish; fleet-1, on the same host, keeps talking to agg-1
#      over the host's own address), agg-1 killed -9 halfway through the
#      outage (supervisord restarts it; it must restore its custody from
#      its store: restored blocks in its log >= what the store held before
#      the kill), the link up again. While it is down nothing of fleet-1
#      may reach the MDMS, and the MDMS plus agg-1's custody store must
#      hold every reading fleet-1 made, without a hole. Reads of agg-1's
#      meters (the probe) may fail with AMI_E_NO_ROUTE / AMI_E_TIMEOUT /
#      AMI_E_UNREACHABLE while the link is down and until it recovers;
#      reads of agg-2's meters (the load) must not fail. Recovery: link up
#      -> the MDMS has every reading fleet-1 made up to the link-up moment
#      (what the MDMS and the custody held then); the first successful
#      read of agg-1's meters after link up is in the note
#   5  slow and stalling links: agg-1 reaches each head end through a
#      tools/ami-faultrelay on its own host (listening on its loopback;
#      render.sh's AMI_HEADEND_VIA, set before the cluster is up, so only
#      when fault 5 is asked for), and while data and reads of agg-1's
#      meters flow the relays add 200+-50 ms, then limit the bandwidth,
#      stall longer than a read's timeout then resume, reset every
#      connection, refuse new ones for longer than the heartbeat expiry
#      then pass. Reads succeed or fail with AMI_E_TIMEOUT (the MDMS
#      spaces its resends after a relay's NO_ROUTE, so a reset link is back
#      before a read gives up, and a read that runs out of time is a
#      timeout). Only while the link is refused for longer than the
#      heartbeat expiry (a dead link: the head ends declare agg-1 gone and
#      withdraw its service) also with AMI_E_NO_ROUTE / AMI_E_UNREACHABLE,
#      as in fault 4; any other kind, or a read that outlives its deadline
#      (NO_REPLY), fails the fault. Recovery: from resume / pass to reads
#      succeeding again
#   6  kill -9 fleet-1: its command counters survive, no replayed command
#      accepted, no reading stored twice
#   7  the MDMS's disk full (a map size just above its database): ingest
#      stops with a clear error, back-pressure reaches the aggregators,
#      nothing stored is lost, amictl status still answers; ingest resumes
#      once space is given (the map size raised again, the MDMS restarted)
# A NOT BUILT fault counts as a failure, never as a pass.
#
# --short: faults 1 and 2 with shorter traffic windows (the bounded form of
# `make test`, tests/integration/faults_short_test.sh).
#
# Output: one table row per fault: readings produced (every interval every
# meter has made since START, up to the fleets' profile clocks taken after
# the fault: the check is cumulative), stored (of those, present in LMDB),
# lost (must be 0), dup (on-demand readings stored twice under one
# correlation id + interval readings that conflicted; an interval slot is
# stored at most once by construction, so the MDMS's intervals_dup is shown
# as "redelivered" in the note: duplicates it detected and dropped), the
# recovery time, the reads that failed during the fault (load and probe)
# and their kinds. Exit 0 only if every fault ran, lost nothing, stored
# nothing twice and recovered within its deadline.
#
# Needs root, `ip netns`, supervisord, python3, mdb_dump (lmdb-utils). A
# trap tears everything down on any exit and asserts that no namespace and
# no process of the suite is left. KEEP=1 keeps the run directory (logs,
# database) for a post-mortem; the namespaces and processes always go.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${AMI_BIN:-bin}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
# shellcheck disable=SC2034  # (TOPO, METERS, LOAD_TIMEOUT_MS ...: used by lib.sh)
TOPO=$ROOT/tests/faults/faults.topology
# shellcheck source=tests/faults/lib.sh
. "$ROOT/tests/faults/lib.sh"

short=0
faults=""
while [ $# -gt 0 ]; do
    case $1 in
        --short) short=1; shift ;;
        [1-7]) faults="$faults $1"; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "usage: $0 [--short] [FAULT 1..7 ...]" >&2; exit 2 ;;
    esac
done
if [ -z "$faults" ]; then
    if [ $short -eq 1 ]; then faults="1 2"; else faults="6 1 2 3 4 5 7"; fi
fi

# ------------------------------------------------------------- settings
# The topology's counts (faults.topology): 2 fleets of 50 meters.
FLEETS=2
MPF=50
# shellcheck disable=SC2034
METERS=$((FLEETS * MPF))
# Interval data: 1-minute intervals at 240 simulated seconds per wall
# second = 4 intervals per meter per wall second, pushed as one block of 4:
# 400 readings/s in all, a steady stream (a batch every second per fleet)
# that fills a small map within seconds (fault 7) while using a few % of
# the machine. START fixed (now, rounded down to the interval) so that a
# restarted fleet makes the same blocks again (ami_meter.h "Not persisted").
P_INTERVAL_S=60
P_BLOCK=4
P_SCALE=240
P_START=$(( $(date +%s) / P_INTERVAL_S * P_INTERVAL_S ))
HEARTBEAT_S=1
# The heartbeat expiry (a peer silent for 3 heartbeats is gone: DESIGN.md).
EXPIRY_S=$((3 * HEARTBEAT_S))
# Reads: each load read's timeout (the MDMS's own is 3 s); the probe's is
# shorter so that the recovery time is measured to about a second.
# shellcheck disable=SC2034
LOAD_TIMEOUT_MS=2000
PROBE_TIMEOUT_MS=1000

# Seconds. FLOW_S: traffic runs this long before each injection, so data
# and reads are in flight through the component that is killed (a fixed
# time on purpose: it is the fault's set-up, not a readiness wait).
if [ $short -eq 1 ]; then FLOW_S=3; else FLOW_S=5; fi
UP_S=120        # cluster.sh up, whole (its own waits: 10 + 40 + 15)
DOWN_S=90       # cluster.sh down, whole (its own waits: 40 + 2 x 10)
RESTART_S=15    # supervisord runs a killed program again (startsecs=1, then a retry)
READY_S=30      # the MDMS sees the restarted node READY, every other node READY
DRAIN_S=45      # every reading made before the check is in LMDB: a batch lost in
                # a killed relay is resent after AMI_BATCH_ACK_TIMEOUT_MS (10 s),
                # a refused one after AMI_BATCH_RETRY_MS; 45 s is 4 ack timeouts
PROBE_OK=3      # consecutive successful probe reads that say "recovered"
# Recovery deadlines (kill -> reads succeed again), per fault:
#   1: the heartbeat expiry, plus one probe period (a probe read takes up to
#      PROBE_TIMEOUT_MS, so the recovery is known to that precision)
#   2, 3, 6: the supervisor's restart (startsecs=1) + reconnection (ZeroMQ
#      reconnect, MDP worker liveness of 3 heartbeats) + the expiry, with room
#   7: from "space given" (the MDMS restarted with a larger map)
REC_1_S=$(( EXPIRY_S + PROBE_TIMEOUT_MS / 1000 ))
REC_2_S=15
REC_3_S=15
REC_6_S=15
REC_7_S=20
# Fault 5 (tools/ami-faultrelay on agg-1's head-end links). Durations are
# the faults themselves (fixed on purpose), the rest deadlines:
F5_DELAY_MS=200     # the issue's delay, each way ...
F5_JITTER_MS=50     # ... +- this (uniform, order kept)
F5_DELAY_S=8        # delayed this long: a few dozen reads and batches
F5_RATE_S=8         # a slow link: the bandwidth of each relay limited to
                    # what agg-1 sends upward in all (measured in the base
                    # phase) plus F5_RATE_HEADROOM %, at least F5_RATE_MIN
                    # bytes/s: the link carries the data, slowly
F5_RATE_HEADROOM=50
F5_RATE_MIN=2000
F5_STARVE_S=8       # a starved link: a quarter of agg-1's upward data rate;
                    # the data backs up in the aggregator's buffer; reads
                    # of its meters complete or time out
F5_STALL_MS=$(( LOAD_TIMEOUT_MS + 500 ))  # longer than every read's timeout
                    # (load 2 s, probe 1 s), shorter than the heartbeat expiry
                    # (3 s: anything heard keeps an aggregator live), so a
                    # stall is a slow link, not a dead one
F5_RESET_S=3        # traffic after the reset (reconnection through the relay)
F5_REFUSE_S=$(( EXPIRY_S + 2 ))  # longer than the expiry: the head ends lose
                    # agg-1 and withdraw its service (a dead link)
REC_5_S=8           # resume/reset/pass -> reads succeed again: ZeroMQ's reconnect
                    # (100 ms), HELLO, the head end's MDP workers READY at the
                    # broker, and a probe period, with room
F5_MIN_DELAYED_US=$(( 2 * (F5_DELAY_MS - F5_JITTER_MS) * 1000 ))  # a read crosses
                    # a relay twice (request down, answer up): every read of
                    # the delay phase's load takes at least this
F5_RELAY_PORT=17200 # relay K listens on 127.0.0.1:F5_RELAY_PORT+K on agg-1's host
# Fault 4 (agg-1's uplink cut). FAULT4_CUT_S is the fault itself (the
# issue's 60 s; FAULT4_CUT_S=20 for a quicker manual run), the rest deadlines:
FAULT4_CUT_S=${FAULT4_CUT_S:-60}
case $FAULT4_CUT_S in ''|*[!0-9]*) echo "FAULT4_CUT_S must be whole seconds" >&2; exit 2 ;; esac
[ "$FAULT4_CUT_S" -ge 10 ] || { echo "FAULT4_CUT_S must be >= 10 (the kill in the middle, the expiry before it)" >&2; exit 2; }
F4_GONE_S=$(( EXPIRY_S + 5 ))   # the MDMS calls agg-1 DOWN: silent 3 heartbeats,
                    # plus its own status refresh, with room
F4_RESTORE_S=15     # the restarted agg-1 logs what it restored from its store
                    # (RESTART_S: supervisord's restart; the store opens at once)
REC_4_S=40          # link up -> every reading fleet-1 made is in the MDMS: TCP
                    # connections attempted during the cut back off (SYN
                    # retransmits at 1, 2, 4, 8, 16 s), then HELLO, the head
                    # ends' workers, and the held batches (credit 4 x 1024
                    # blocks per MDMS commit round: ~FAULT4_CUT_S x 50 blocks
                    # take a few rounds)
CATCHUP_S=120   # fault 6: the restarted fleet replays from START at the same
                # pace, so it needs as long as it had run (fault 6 runs first)
MAP_MARGIN_K=512  # fault 7: the map this far above the database's size: at
                  # ~400 readings/s (plus new records and LMDB's copy-on-write
                  # pages) it is full within seconds
FULL_S=60       # fault 7: the MDMS reports a full map


# ------------------------------------------------------------- set-up
me="faults"
fail_setup() { echo "FAIL: $me: $*"; exit 1; }
TMP=""
PREFIX=""
NET=""
VAR=""
ours() {  # our processes: anything whose command line names our directory
    [ -n "$TMP" ] || return 0
    pgrep -f "$TMP/" 2>/dev/null | grep -vx "$$" || true
}
our_ns() {
    [ -n "$PREFIX" ] || return 0
    ip netns list 2>/dev/null | awk '{ print $1 }' | grep "^$PREFIX" || true
}
# shellcheck disable=SC2317  # (invoked by the trap)
cleanup() {
    rc=$?
    clean=0
    trap - EXIT INT TERM
    [ -n "$TMP" ] && [ -d "$TMP" ] && fx_traffic_stop
    if [ -n "${RELAY_STARTER:-}" ]; then kill "$RELAY_STARTER" 2>/dev/null; wait "$RELAY_STARTER" 2>/dev/null; fi
    [ -n "$TMP" ] && [ -d "$TMP" ] && fx_relays_stop
    if [ -n "$NET" ] && { [ -n "$(our_ns)" ] || [ -n "$(ours)" ]; }; then
        fx_say "tearing the cluster down"
        fx_cluster "$DOWN_S" down >"$TMP/down.out" 2>&1 || { cat "$TMP/down.out"; rc=1; }
    fi
    left=$(ours)
    if [ -n "$left" ]; then
        echo "FAIL: $me: process(es) left after cluster.sh down: $left"
        # shellcheck disable=SC2086
        ps -o pid,args -p "$(echo $left | tr ' ' ',')" 2>/dev/null
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
        rc=1
    fi
    for ns in $(our_ns); do
        echo "FAIL: $me: namespace $ns left after cluster.sh down"
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
        rc=1
    done
    if [ -n "$(ours)" ] || [ -n "$(our_ns)" ]; then
        echo "FAIL: $me: could not remove everything"; rc=1
    elif [ -n "$NET" ]; then
        clean=1
    fi
    if [ "$rc" -ne 0 ] && [ -n "$TMP" ]; then
        for f in "$VAR"/*/log/ami-*.log; do
            [ -f "$f" ] || continue
            grep -E ' (ERROR|WARN)' "$f" | tail -n "${LOG_TAIL:-6}" | sed "s|^|${f#"$VAR"/}: |"
        done
    fi
    if [ -n "$TMP" ]; then
        if [ "${KEEP:-0}" = 1 ]; then fx_say "kept $TMP"; else rm -rf "$TMP"; fi
    fi
    [ "$clean" = 1 ] && fx_say "teardown: no namespace or process of the suite is left"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" -eq 0 ] || fail_setup "needs root (network namespaces): run it as root"
ip netns list >/dev/null 2>&1 || fail_setup "'ip netns' does not work on this machine"
for b in ami-mdms ami-broker ami-headend ami-aggregator ami-meter amictl ami-keygen ami-load; do
    [ -x "$BIN/$b" ] || fail_setup "$BIN/$b is missing (build first: make)"
done
for c in supervisord supervisorctl python3 mdb_dump pgrep timeout; do
    command -v $c >/dev/null 2>&1 || fail_setup "$c is not installed (mdb_dump: Debian package lmdb-utils)"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ami-faults.XXXXXX") || fail_setup "no temporary directory"
VAR=$TMP/run
tries=0
while [ -z "$PREFIX" ] && [ $tries -lt 20 ]; do
    tries=$((tries + 1))
    r=$(od -An -N2 -tx2 /dev/urandom | tr -d ' ')
    ip netns list | awk '{ print $1 }' | grep -q "^amif$r-" || PREFIX="amif$r-"
done
[ -n "$PREFIX" ] || fail_setup "no free namespace prefix in 20 tries"
NET=10.79.$(( $(od -An -N1 -tu1 /dev/urandom | tr -d ' ') ))
fx_say "directory $TMP, namespaces ${PREFIX}*, subnet $NET.0/24, faults:$faults"

# Fault 5: agg-1's head-end links through relays on agg-1's host, from its
# first start (render.sh's AMI_HEADEND_VIA; the relays start as soon as the
# host's namespace is there, while cluster.sh brings the hosts up)
RELAY_HOST=""
RELAY_LINKS=""
RELAY_STARTER=""
case " $faults " in *" 5 "*)
    RELAY_HOST=$(awk '$1 == "host" { for (i = 4; i <= NF; i++) if ($i == "agg-1") print $2 }' "$TOPO")
    pbase=$(awk '$1 == "port-base" { print $2 }' "$TOPO")
    via=""
    # shellcheck disable=SC2013  # (one word per head end: NODE=ADDRESS)
    for he in $(awk '$1 == "host" { for (i = 4; i <= NF; i++) if ($i ~ /^headend-[0-9]+$/) print $i "=" $3 }' "$TOPO"); do
        k=${he%%=*}; k=${k#headend-}; a=${he#*=}
        to=$NET.${a##*.}:$(( ${pbase:-7000} + 200 + k ))
        RELAY_LINKS="$RELAY_LINKS $k:$((F5_RELAY_PORT + k)):$to"
        via="$via agg-1/headend-$k=127.0.0.1:$((F5_RELAY_PORT + k))"
    done
    { [ -n "$RELAY_HOST" ] && [ -n "$RELAY_LINKS" ]; } || fail_setup "fault 5: no agg-1 or no head end in $TOPO"
    export AMI_HEADEND_VIA="${via# }"
    fx_relays_start "$UP_S" &
    RELAY_STARTER=$!
    fx_say "fault 5: agg-1 (host $RELAY_HOST) reaches its head ends through relays:$RELAY_LINKS"
    ;;
esac

t0=$(fx_now)
export AMI_HEARTBEAT=${HEARTBEAT_S}s AMI_LOG_LEVEL=info \
    AMI_PROFILE_INTERVAL=${P_INTERVAL_S}s AMI_PROFILE_BLOCK=$P_BLOCK \
    AMI_PROFILE_TIME_SCALE=$P_SCALE AMI_PROFILE_START=$P_START AMI_PROFILE_LIMIT=0 \
    AMI_RATE_OPERATOR=0 AMI_RATE_METER=0
# (the MDMS's read rate limits off: the suite's reads are load, not abuse)
fx_cluster "$UP_S" up >"$TMP/up.out" 2>&1 || { tail -n 30 "$TMP/up.out"; fail_setup "cluster.sh up failed"; }
fx_say "cluster up in $(( $(fx_now) - t0 ))s (hosts brk db he1 he2 agg1 agg2 ops)"
if [ -n "$RELAY_STARTER" ]; then
    wait "$RELAY_STARTER"
    RELAY_STARTER=""
    [ -f "$TMP/relays.ok" ] || fail_setup "fault 5: relays: $(cat "$TMP/relays.fail" 2>/dev/null)"
fi

# ------------------------------------------------------------- the table
failed=0
rows=""
row() {  # FAULT PRODUCED STORED LOST DUP RECOVERY READS_FAILED VERDICT NOTE
    r=$(printf '%-24s %9s %9s %5s %4s %8s  %-34s %-4s %s' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9")
    rows="$rows$r
"
    echo "$r"
}
header() {
    printf '%-24s %9s %9s %5s %4s %8s  %-34s %-4s %s\n' FAULT PRODUCED STORED LOST DUP RECOVERY \
        "READS FAILED (kinds)" "" NOTE
}

# fault_common TAG NAME HOST PROGRAM NODE REC_S [BEFORE_SNAP]: the kill -9 of
# one supervised program while traffic flows, its restart, the recovery,
# the accounting, the row. Sets F_OK (1 pass) and F_KILL_MS.
fault_kill() {
    tag=$1; name=$2; host=$3; prog=$4; node=$5; rec_s=$6; snap=${7:-0}
    F_OK=1; note=""
    mdms_before=$(fx_status "$TMP/pre-$tag.json" && fx_stat "$TMP/pre-$tag.json" mdms intervals_dup)
    fx_load_start "$tag"
    fx_probe_start "$tag"
    sleep "$FLOW_S"   # let data and reads flow through $node before the kill (see FLOW_S)
    pid=$(fx_pid "$host" "$prog")
    [ -n "$pid" ] || { F_OK=0; note="$prog was not RUNNING before the kill; "; }
    before=""
    if [ "$snap" = 1 ]; then fx_snap "$tag"; before="--before $TMP/snap-$tag.json"; fi
    [ -z "${PRE_KILL:-}" ] || $PRE_KILL
    F_KILL_MS=$(fx_ms)
    [ -n "$pid" ] && kill -KILL "$pid"
    fx_say "$name: kill -9 $node (pid ${pid:-?}) at +$(( (F_KILL_MS - t0 * 1000) / 1000 ))s"
    newpid=$(fx_wait_restart "$host" "$prog" "${pid:-x}" "$RESTART_S") || { F_OK=0; note="${note}not restarted; "; }
    fx_say "$name: supervisord restarted it (pid ${newpid:-none}) after $(( $(fx_ms) - F_KILL_MS )) ms"
    # the new process: up for less time than since the kill. Not for the
    # broker: the MDMS's row for it is READY while MDP replies come within 3
    # heartbeats and its uptime counts from then (ami_mdms.h STATUS), so a
    # broker back within 3 heartbeats keeps its old uptime
    maxup=$(( $(fx_ms) - F_KILL_MS + 1000 ))
    [ "$node" = broker ] && maxup=0
    fx_wait_ready "$node" "$maxup" "$READY_S" || { F_OK=0; note="${note}not READY; "; }
    ready_ms=$(fx_ms)
    fx_say "$name: every node READY again $(( ready_ms - F_KILL_MS )) ms after the kill"
    # reads recovered: PROBE_OK probe reads in a row succeeded, all started
    # after the restarted node was READY
    dl=$(( $(fx_now) + rec_s + READY_S ))
    until fx_probe_recovered "$tag" "$ready_ms" "$PROBE_OK"; do
        [ "$(fx_now)" -lt "$dl" ] || { F_OK=0; note="${note}reads did not recover; "; break; }
        sleep 0.2   # polling the probe's log
    done
    fx_traffic_stop
    # shellcheck disable=SC2046  # (split on purpose: three words)
    set -- $(fx_recovery "$tag" "$F_KILL_MS")
    rec=$1; pfail=$2; pkinds=$3
    # shellcheck disable=SC2046  # (split on purpose: three words)
    set -- $(fx_load_failures "$tag")
    lfail=$1; lkinds=$2; note="${note}load reads/max latency ${3:-?}; "
    if [ "$rec" = "-1.00" ]; then F_OK=0; rec="never"; note="${note}no successful read after the last failure; "
    elif awk -v r="$rec" -v d="$rec_s" 'BEGIN { exit !(r > d) }'; then
        F_OK=0; note="${note}recovery ${rec}s > deadline ${rec_s}s; "
    fi
    drain=$(fx_account "$tag" "$DRAIN_S" $before)
    produced=$(fx_acct "$tag" produced); stored=$(fx_acct "$tag" stored); lost=$(fx_acct "$tag" lost)
    lostb=$(fx_acct "$tag" lost_before); rdups=$(fx_acct "$tag" read_dups)
    fx_status "$TMP/post-$tag.json"
    conflicts=$(fx_stat "$TMP/post-$tag.json" mdms intervals_conflict)
    redeliv=$(fx_stat "$TMP/post-$tag.json" mdms intervals_dup)
    dup=$(( ${rdups:-0} + ${conflicts:-0} ))
    [ "$lost" = 0 ] || { F_OK=0; note="${note}LOST $lost (first missing $(fx_acct "$tag" first_missing)); "; }
    [ "$lostb" = 0 ] || { F_OK=0; note="${note}$lostb readings in LMDB before the kill are GONE; "; }
    [ "$dup" = 0 ] || { F_OK=0; note="${note}DUPLICATED: $rdups reads, $conflicts conflicting intervals; "; }
    [ "$snap" = 1 ] && note="${note}pre-kill LMDB kept: lost_before=$lostb; "
    note="${note}drain ${drain}s; redelivered-dropped ${redeliv:-?} (before: ${mdms_before:-?}); deadline ${rec_s}s"
    verdict=PASS; [ $F_OK = 1 ] || { verdict=FAIL; failed=$((failed + 1)); }
    row "$name" "$produced" "$stored" "$lost" "$dup" "${rec}s" "load $lfail ${lkinds}; probe $pfail ${pkinds}" "$verdict" "$note"
}

fault_1() { fault_kill f1 "1 kill -9 headend-1" he1 ami-headend-1 headend-1 "$REC_1_S"; }
fault_2() { fault_kill f2 "2 kill -9 mdms" db ami-mdms mdms "$REC_2_S" 1; }
fault_3() { fault_kill f3 "3 kill -9 broker" brk ami-broker broker "$REC_3_S"; }

# fault 6, right before the kill (reads have run for FLOW_S): the fleet's
# persisted command counters, and its profile clock (its replay must pass it)
f6_pre_kill() {
    python3 "$ROOT/tests/faults/account.py" counters "$VAR/agg1/state/fleet-1" >"$TMP/ctr-before.json" 2>/dev/null
    fx_status "$TMP/f6-pre.json"
    p1=$(fx_stat "$TMP/f6-pre.json" fleet-1 profile_clock)
}
fault_6() {
    p1=""
    PRE_KILL=f6_pre_kill
    fault_kill f6 "6 kill -9 fleet-1" agg1 ami-meter-1 fleet-1 "$REC_6_S"
    PRE_KILL=""
    ok6=$F_OK
    python3 "$ROOT/tests/faults/account.py" counters "$VAR/agg1/state/fleet-1" >"$TMP/ctr-after.json" 2>/dev/null
    le=$(python3 "$ROOT/tests/faults/account.py" le "$TMP/ctr-before.json" "$TMP/ctr-after.json") || ok6=0
    nctr=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$TMP/ctr-before.json" 2>/dev/null)
    refused=$(fx_stat "$TMP/post-f6.json" fleet-1 refused)
    [ "${nctr:-0}" -gt 0 ] || { ok6=0; le="no counter persisted before the kill ($le)"; }
    [ "${refused:-1}" = 0 ] || ok6=0
    fx_say "6: counters of $nctr meters persisted before the kill; after the restart: $le; reads refused by the restarted fleet: ${refused:-?}"
    # the replay of the restarted fleet must pass where the killed one was,
    # then everything it had made up to there must be stored once
    dl=$(( $(fx_now) + CATCHUP_S ))
    while :; do
        fx_status "$TMP/f6-cu.json"
        p2=$(fx_stat "$TMP/f6-cu.json" fleet-1 profile_clock)
        [ -n "$p2" ] && [ -n "$p1" ] && [ "$p2" -gt "$p1" ] && break
        [ "$(fx_now)" -lt "$dl" ] || { ok6=0; fx_warn "fleet-1's replay did not pass $p1 within ${CATCHUP_S}s"; break; }
        sleep 0.5   # polling the fleet's profile clock (status)
    done
    drain=$(fx_account f6b "$DRAIN_S")
    lost=$(fx_acct f6b lost)
    fx_status "$TMP/f6-end.json"
    conflicts=$(fx_stat "$TMP/f6-end.json" mdms intervals_conflict)
    [ "$lost" = 0 ] && [ "${conflicts:-1}" = 0 ] || ok6=0
    verdict=PASS; [ $ok6 = 1 ] || verdict=FAIL
    if [ $F_OK = 1 ] && [ $ok6 = 0 ]; then failed=$((failed + 1)); fi
    row "6 ... after the replay" "$(fx_acct f6b produced)" "$(fx_acct f6b stored)" "$lost" "$(( $(fx_acct f6b read_dups) + ${conflicts:-0} ))" "-" \
        "(replayed blocks dropped: $(fx_stat "$TMP/f6-end.json" mdms intervals_dup))" "$verdict" \
        "counters kept for $nctr meters ($le); restarted fleet refused ${refused:-?} reads; drain ${drain}s"
}

not_built() {  # N NAME WHY
    failed=$((failed + 1))
    row "$1 $2" "-" "-" "-" "-" "-" "-" "FAIL" "NOT BUILT: $3"
}
# Fault 4: agg-1's uplink cut for FAULT4_CUT_S with agg-1 killed -9 halfway
# (see the header). Timeline, from the cut (C) on:
#   C-FLOW_S  load (agg-2's meters) and probe (agg-1's meters) start
#   C         the bridge-side end of agg-1's host's veth down; the MDMS
#             must call agg-1 DOWN within F4_GONE_S
#   C+CUT/2   the custody store read (what it holds, held1), then kill -9
#             agg-1; supervisord restarts it while the link is still down;
#             its log must say it restored >= held1 blocks from its store
#   C+CUT     the store read again, with the MDMS's LMDB: fleet-1's meters
#             have every interval up to covered_to, without a hole, in one
#             or the other, and nothing of fleet-1 reached the MDMS since
#             the kill; then the link up (U)
#   U..       recovery: until the MDMS has every reading up to covered_to
#             (REC_4_S); agg-1 READY again as the new process; the probe
#             reads agg-1's meters again; then the suite's accounting
# f4_custody OUT: agg-1's custody store and the MDMS, for fleet-1's meters
# (account.py custody; read-only, beside the running services)
f4_custody() {
    python3 "$ROOT/tests/faults/account.py" custody "$F4_STATE" --mdms "$VAR/db/db/mdms" \
        --meters "1-$MPF" --start "$P_START" --interval "$P_INTERVAL_S" --block "$P_BLOCK" \
        >"$1" 2>"$1.err" || { fx_warn "custody of agg-1 unreadable: $(tail -n 1 "$1.err")"; return 1; }
}
# f4_get FILE KEY: one figure of a JSON line ("?" if none)
f4_get() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], "?"))' "$1" "$2" 2>/dev/null || echo "?"
}
# f4_sleep_until MS: the fault's fixed timeline (not a readiness wait)
f4_sleep_until() {
    _s=$(awk -v t="$1" -v n="$(fx_ms)" 'BEGIN { d = (t - n) / 1000; if (d > 0) printf "%.3f", d; else print 0 }')
    sleep "$_s"
}
# f4_disallowed KINDS: the kinds (K=N,...) a read of agg-1's meters may not
# fail with while its link is down or recovering, "" if none
f4_disallowed() {
    echo "$1" | tr ',' '\n' | while IFS='=' read -r _k _n; do
        case $_k in ''|-|AMI_E_NO_ROUTE|AMI_E_TIMEOUT|AMI_E_UNREACHABLE) ;; *) printf '%s=%s ' "$_k" "${_n:-?}" ;; esac
    done
}
fault_4() {
    F_OK=1; note=""
    host=$(awk '$1 == "host" { for (i = 4; i <= NF; i++) if ($i == "agg-1") print $2 }' "$TOPO")
    [ -n "$host" ] || { not_built 4 "uplink cut ${FAULT4_CUT_S}s" "no agg-1 in $TOPO"; return; }
    case " $(awk -v h="$host" '$1 == "host" && $2 == h' "$TOPO") " in
        *" fleet-1 "*) ;;
        *) not_built 4 "uplink cut ${FAULT4_CUT_S}s" "fleet-1 is not on agg-1's host: the cut would cut it too"; return ;;
    esac
    brns=${PREFIX}bridge
    veth=v-$host
    prog=ami-aggregator-1
    alog=$VAR/$host/log/$prog.log
    F4_STATE=$VAR/$host/state/agg-1
    [ -d "$F4_STATE" ] || { F_OK=0; note="no custody store $F4_STATE; "; }
    fx_status "$TMP/pre-f4.json"
    [ "$(fx_stat "$TMP/pre-f4.json" agg-1 state)" = READY ] || { F_OK=0; note="${note}agg-1 not READY before the cut; "; }
    fx_load_start f4 "$((MPF + 1))-$METERS"   # agg-2's meters: untouched by the cut
    fx_probe_start f4 "1-$MPF"                # agg-1's meters (fleet-1)
    sleep "$FLOW_S"   # data and reads flow through agg-1 before the cut (see FLOW_S)
    fx_status "$TMP/f4-cut.json"
    p_cut=$(fx_stat "$TMP/f4-cut.json" fleet-1 profile_clock)
    fx_snap f4        # every reading in LMDB before the cut must still be there at the end

    # the cut: a cable pulled between agg-1's host and the bridge
    cut_ms=$(fx_ms)
    ip -n "$brns" link set "$veth" down || { F_OK=0; note="${note}could not take $veth down; "; }
    carrier=$(ip -n "$PREFIX$host" link show eth0 2>/dev/null | head -n 1)
    case $carrier in *NO-CARRIER*) ;; *) F_OK=0; note="${note}eth0 of $host still has a carrier; " ;; esac
    fx_say "4: agg-1's uplink cut ($brns: $veth down; $host eth0 NO-CARRIER) at +$(( cut_ms / 1000 - t0 ))s for ${FAULT4_CUT_S}s"
    # the MDMS stops hearing agg-1 (its HEALTH and fleet-1's cross the link)
    gone=""
    dl=$(( $(fx_now) + F4_GONE_S ))
    while :; do
        fx_status "$TMP/f4-st.json"
        st=$(fx_stat "$TMP/f4-st.json" agg-1 state)
        if [ -n "$st" ] && [ "$st" != READY ]; then gone=$(( $(fx_ms) - cut_ms )); break; fi
        [ "$(fx_now)" -lt "$dl" ] || { F_OK=0; note="${note}the MDMS still saw agg-1 ${st:-?} ${F4_GONE_S}s into the cut; "; break; }
        sleep 0.2   # polling the MDMS's status: its view refreshes every heartbeat
    done
    fx_say "4: the MDMS calls agg-1 ${st:-?} after ${gone:-?} ms"

    # halfway: what the store holds, then kill -9 (supervisord restarts it)
    f4_sleep_until $(( cut_ms + FAULT4_CUT_S * 500 ))   # the outage's first half
    f4_custody "$TMP/f4-kill.json" || F_OK=0
    held1=$(f4_get "$TMP/f4-kill.json" blocks); mdms1=$(f4_get "$TMP/f4-kill.json" mdms)
    lines=$(wc -l <"$alog")
    pid=$(fx_pid "$host" "$prog")
    [ -n "$pid" ] || { F_OK=0; note="${note}$prog was not RUNNING before the kill; "; }
    kill_ms=$(fx_ms)
    [ -n "$pid" ] && kill -KILL "$pid"
    fx_say "4: custody store holds $held1 blocks ($(f4_get "$TMP/f4-kill.json" bytes) bytes in $(f4_get "$TMP/f4-kill.json" records) batches); kill -9 agg-1 (pid ${pid:-?}) $(( (kill_ms - cut_ms) / 1000 ))s into the cut"
    newpid=$(fx_wait_restart "$host" "$prog" "${pid:-x}" "$RESTART_S") || { F_OK=0; note="${note}agg-1 not restarted; "; }
    # the new process restores its custody: its log says how much
    restored=""; rline=""
    dl=$(( $(fx_now) + F4_RESTORE_S ))
    while :; do
        rline=$(tail -n +"$((lines + 1))" "$alog" | grep -m 1 "custody store .* blocks (.* bytes) in .* batches not yet acknowledged")
        [ -n "$rline" ] && break
        [ "$(fx_now)" -lt "$dl" ] || break
        sleep 0.2   # polling agg-1's log: the MDMS cannot hear it now
    done
    restored=$(echo "$rline" | sed -n 's/.*custody store [^ ]*: \([0-9]*\) blocks (\([0-9]*\) bytes) in \([0-9]*\) batches.*/\1 \2 \3/p')
    # shellcheck disable=SC2086  # (split on purpose: three words)
    set -- $restored
    rblocks=${1:-0}; rbytes=${2:-0}; rbatches=${3:-0}
    fx_say "4: agg-1 restarted (pid ${newpid:-none}) $(( $(fx_ms) - kill_ms )) ms after the kill; restored from its store: ${rblocks} blocks, ${rbytes} bytes, ${rbatches} batches"
    if [ "$rblocks" -eq 0 ]; then
        F_OK=0; note="${note}agg-1 restored nothing from its store (log: $(tail -n +"$((lines + 1))" "$alog" | grep -m 2 -i 'custody\|store' | cut -c1-160 | tr '\n' ' ')); "
    elif case $held1 in ''|*[!0-9]*) true ;; *) [ "$rblocks" -lt "$held1" ] ;; esac; then
        F_OK=0; note="${note}restored $rblocks blocks < $held1 held before the kill; "
    fi
    [ "$(tail -n +"$((lines + 1))" "$alog" | grep -c ' ERROR')" = 0 ] || { F_OK=0; note="${note}agg-1 logged errors after its restart; "; }

    # the end of the outage: the MDMS and the custody together hold every
    # reading fleet-1 made, no hole; nothing of fleet-1 got through
    f4_sleep_until $(( cut_ms + FAULT4_CUT_S * 1000 ))   # the outage's second half
    f4_custody "$TMP/f4-up.json" || F_OK=0
    up_ms=$(fx_ms)
    ip -n "$brns" link set "$veth" up || { F_OK=0; note="${note}could not bring $veth up; "; }
    held2=$(f4_get "$TMP/f4-up.json" blocks); mdms2=$(f4_get "$TMP/f4-up.json" mdms)
    cov=$(f4_get "$TMP/f4-up.json" covered_to); gaps=$(f4_get "$TMP/f4-up.json" gaps)
    honly=$(f4_get "$TMP/f4-up.json" held_only); foreign=$(f4_get "$TMP/f4-up.json" foreign)
    fx_say "4: link up after $(( (up_ms - cut_ms) / 1000 ))s; custody then: $held2 blocks ($honly readings not in the MDMS), fleet-1's readings in MDMS or custody without a hole up to $cov (clock at the cut ${p_cut:-?}), meters with a hole: $gaps $(f4_get "$TMP/f4-up.json" first_gap)"
    [ "$gaps" = 0 ] || { F_OK=0; note="${note}HOLE in MDMS+custody for $gaps meters (first $(f4_get "$TMP/f4-up.json" first_gap)); "; }
    [ "$foreign" = 0 ] || { F_OK=0; note="${note}$foreign blocks of other meters in agg-1's custody; "; }
    [ "$mdms1" = "$mdms2" ] || { F_OK=0; note="${note}fleet-1's readings in the MDMS went $mdms1 -> $mdms2 while the link was down: not cut?; "; }
    # the fleet went on producing during the cut, and custody took it: the
    # covered run reaches past the cut by the outage's length, less a few
    # seconds (the restart, during which the fleet holds its outbox)
    want=$(( ${p_cut:-0} + (FAULT4_CUT_S - 5) * P_SCALE ))
    case $cov in ''|*[!0-9]*) F_OK=0; note="${note}no coverage figure; " ;;
        *) [ "$cov" -ge "$want" ] || { F_OK=0; note="${note}held readings reach $cov < $want (the clock at the cut + $((FAULT4_CUT_S - 5))s); "; } ;;
    esac

    # recovery: the MDMS has every reading made up to the link-up moment
    rec=""
    dl=$(( $(fx_now) + REC_4_S ))
    while :; do
        python3 "$ROOT/tests/faults/account.py" check "$VAR/db/db/mdms" --start "$P_START" \
            --interval "$P_INTERVAL_S" --expect "1-$MPF:$cov" >"$TMP/acct-f4up.json" 2>"$TMP/acct.err" || true
        l=$(fx_acct f4up lost)
        if [ "$l" = 0 ]; then rec=$(awk -v a="$(fx_ms)" -v b="$up_ms" 'BEGIN { printf "%.2f", (a - b) / 1000 }'); break; fi
        [ "$(fx_now)" -lt "$dl" ] || { F_OK=0; note="${note}$l held readings not in the MDMS ${REC_4_S}s after link up (first $(fx_acct f4up first_missing)); "; break; }
        sleep 0.5   # polling the database while the held data drains
    done
    fx_say "4: the MDMS has every reading fleet-1 made up to the link-up moment ${rec:-never} s after link up"
    fx_wait_ready agg-1 $(( $(fx_ms) - kill_ms + 1000 )) "$READY_S" || { F_OK=0; note="${note}agg-1 not READY after link up; "; }
    dl=$(( $(fx_now) + REC_4_S ))
    until fx_probe_recovered f4 "$up_ms" "$PROBE_OK"; do
        [ "$(fx_now)" -lt "$dl" ] || { F_OK=0; note="${note}reads of agg-1's meters did not recover; "; break; }
        sleep 0.2   # polling the probe's log
    done
    fx_traffic_stop
    # reads: agg-1's (probe) fail only while cut or recovering, and only
    # with the allowed kinds; agg-2's (load) never
    # shellcheck disable=SC2046  # (split on purpose: three words)
    set -- $(fx_recovery f4 0); pall=$2
    # shellcheck disable=SC2046
    set -- $(fx_recovery f4 "$cut_ms"); pfail=$2; pkinds=$3
    # shellcheck disable=SC2046
    set -- $(fx_recovery f4 "$up_ms"); rec_read=$1
    [ "$pall" = "$pfail" ] || { F_OK=0; note="${note}$((pall - pfail)) reads of agg-1's meters failed before the cut; "; }
    bad=$(f4_disallowed "$pkinds")
    if [ -n "$bad" ]; then
        # when: each such read's start (s from the cut) and length (ms)
        when=$(awk -v c="$cut_ms" '$3 != "ok" && $3 !~ /^AMI_E_(NO_ROUTE|TIMEOUT|UNREACHABLE)$/ {
            printf "%s%s at cut%+.1fs took %dms", (n++ ? ", " : ""), $3, ($1 - c) / 1000, $2 - $1 }' "$TMP/probe-f4.txt")
        F_OK=0; note="${note}reads of agg-1's meters failed with $bad($when; link up at cut+$(( (up_ms - cut_ms) / 1000 ))s); "
    fi
    psent=$(wc -l <"$TMP/probe-f4.txt")
    # shellcheck disable=SC2046
    set -- $(fx_load_failures f4); lfail=$1; lkinds=$2; lsent=$3
    [ "$lfail" = 0 ] || { F_OK=0; note="${note}reads of agg-2's meters failed ($lkinds); "; }
    if [ "$rec_read" = "-1.00" ]; then F_OK=0; rec_read=never; fi

    # the suite's accounting: everything produced is stored, once
    drain=$(fx_account f4 "$DRAIN_S" --before "$TMP/snap-f4.json")
    produced=$(fx_acct f4 produced); stored=$(fx_acct f4 stored); lost=$(fx_acct f4 lost)
    lostb=$(fx_acct f4 lost_before); rdups=$(fx_acct f4 read_dups)
    fx_status "$TMP/post-f4.json"
    conflicts=$(fx_stat "$TMP/post-f4.json" mdms intervals_conflict)
    redeliv=$(fx_stat "$TMP/post-f4.json" mdms intervals_dup)
    dup=$(( ${rdups:-0} + ${conflicts:-0} ))
    [ "$lost" = 0 ] || { F_OK=0; note="${note}LOST $lost (first missing $(fx_acct f4 first_missing)); "; }
    [ "$lostb" = 0 ] || { F_OK=0; note="${note}$lostb readings in LMDB before the cut are GONE; "; }
    [ "$dup" = 0 ] || { F_OK=0; note="${note}DUPLICATED: $rdups reads, $conflicts conflicting intervals; "; }
    # back-pressure: agg-1's bound, and that nothing was refused or dropped
    # on the way (the new agg-1's counters: since the kill; fleet-1's:
    # since the cut, it was not restarted)
    bmax=$(fx_num "$TMP/post-f4.json" agg-1 buffer_max)
    ovf=$(fx_num "$TMP/post-f4.json" agg-1 overflow_blocks)
    serr=$(( $(fx_num "$TMP/post-f4.json" agg-1 store_refused) + $(fx_num "$TMP/post-f4.json" agg-1 store_errors) ))
    fdrop=$(( $(fx_num "$TMP/post-f4.json" fleet-1 dropped) - $(fx_num "$TMP/pre-f4.json" fleet-1 dropped) ))
    [ "$ovf" = 0 ] || note="${note}agg-1 refused $ovf blocks BUSY (buffer full; the fleet keeps and resends them); "
    [ "$serr" = 0 ] || { F_OK=0; note="${note}agg-1's store refused/failed $serr times; "; }
    [ "$fdrop" = 0 ] || { F_OK=0; note="${note}fleet-1 dropped $fdrop frames; "; }
    rate=$(( MPF * P_SCALE / (P_INTERVAL_S * P_BLOCK) ))   # fleet-1's blocks per wall second
    peak=$held2; case $peak in ''|*[!0-9]*) peak=0 ;; esac
    fill=$(( bmax / (rate > 0 ? rate : 1) ))
    fx_say "4: back-pressure: agg-1 holds at most $bmax blocks (aggregator/buffer-blocks; and buffer-bytes); fleet-1 makes $rate blocks/s, so a cut fills it after ${fill}s (~$(( fill / 60 )) min); this cut held $peak at most; past the bound agg-1 answers BUSY (overflow_blocks, now $ovf) and fleet-1 keeps its unacknowledged batches (<= 16) and stops making new ones until custody is taken: nothing is dropped (test_aggregator test_buffer_bound, test_meter test_profile_busy); fleet-1 frames dropped: $fdrop"
    case $rec in '') F_OK=0; rec=never ;; esac
    note="${note}recovery = link up -> MDMS has all fleet-1 readings up to then (custody held $held2 blocks, restored $rblocks after kill -9 at $(( (kill_ms - cut_ms) / 1000 ))s); first good read of agg-1 meters ${rec_read}s after link up; MDMS saw agg-1 DOWN after ${gone:-?}ms; agg-2 reads (load) sent/max latency ${lsent}, agg-1 reads (probe) $psent; buffer bound $bmax blocks = ${fill}s of fleet-1; drain ${drain}s; redelivered-dropped ${redeliv:-?}; deadline ${REC_4_S}s"
    verdict=PASS; [ $F_OK = 1 ] || { verdict=FAIL; failed=$((failed + 1)); }
    row "4 uplink cut ${FAULT4_CUT_S}s+kill" "$produced" "$stored" "$lost" "$dup" "${rec}s" \
        "load $lfail ${lkinds}; probe $pfail ${pkinds}" "$verdict" "$note"
}
# Fault 5: slow and stalling links between agg-1 and its head ends, through
# the relays set up before the cluster (RELAY_LINKS; see the settings).
# Phases, each with its own load (its figures are that phase's) and one
# probe across all of them (each read belongs to the phase it started in):
#   base    nothing injected (the relays only relay)
#   delay   F5_DELAY_MS +- F5_JITTER_MS each way, then none
#   rate    each way at agg-1's upward data rate + F5_RATE_HEADROOM %, then
#           unlimited; until reads recover
#   starve  each way at a quarter of that rate, then unlimited; until reads
#           recover (agg-1 may be heard too seldom: reads time out)
#   stall   nothing moves for F5_STALL_MS, then resume; until reads recover
#   reset   every relayed connection cut (RST both sides); until recovered
#   refuse  new connections refused and the open ones cut, for F5_REFUSE_S,
#           then pass; until reads recover
# f5_phase NAME: a new phase starts now ("end": the last one ends); its
# load starts with f5_load_start once the fault is injected
f5_phase() {
    fx_load_stop
    echo "$1 $(fx_ms)" >>"$TMP/f5-phases.txt"
}
f5_load_start() { fx_load_start "f5-$1" "$F5_LOAD_METERS"; }
# f5_wait_recovered FROM_MS: until PROBE_OK probe reads in a row, all
# started after FROM_MS, succeeded (deadline: REC_5_S + the probe reads
# themselves)
f5_wait_recovered() {
    _dl=$(( $(fx_now) + REC_5_S + PROBE_OK * (PROBE_TIMEOUT_MS / 1000 + 1) ))
    until fx_probe_recovered f5 "$1" "$PROBE_OK"; do
        [ "$(fx_now)" -lt "$_dl" ] || return 1
        sleep 0.2   # polling the probe's log
    done
}
# f5_disallowed PHASE KINDS: the kinds (K=N,...) a read may not fail with
# in that phase, "" if none
f5_disallowed() {
    case $1 in
        refuse) _ok="AMI_E_TIMEOUT AMI_E_NO_ROUTE AMI_E_UNREACHABLE" ;;
        *) _ok="AMI_E_TIMEOUT" ;;
    esac
    echo "$2" | tr ',' '\n' | while IFS='=' read -r _k _n; do
        case $_k in ''|-) continue ;; esac
        case " $_ok " in *" $_k "*) ;; *) printf '%s=%s ' "$_k" "${_n:-?}" ;; esac
    done
}
# f5_load JSON_TAG: "SENT OK FAILED KINDS MIN_MS MAX_MS LATE P50_MS" of one phase's load
f5_load() {
    python3 - "$TMP/load-$1.json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print("0 0 ? NO_JSON 0 0 0 0"); sys.exit(0)
if "error" in d:   # the run gave up (no answer at all by its first read's timeout): one read failed
    print("1 0 1 %s=1 0 0 0 0" % d["error"].get("name", "ERROR")); sys.exit(0)
e = d.get("errors", {}); lat = d.get("latencyUs", {})
print(d.get("sent", 0), d.get("ok", 0), d.get("failed", 0),
      ",".join("%s=%s" % (k, v) for k, v in sorted(e.items())) or "-",
      "%.0f" % (lat.get("min", 0) / 1000.0), "%.0f" % (lat.get("max", 0) / 1000.0), d.get("late", 0),
      "%.0f" % (lat.get("p50", 0) / 1000.0))
PY
}
fault_5() {
    F_OK=1; note=""
    # fleet-1's meters, behind agg-1 (fleet K reports to aggregator
    # ((K-1) mod aggregators)+1): the probe reads the first ten, the load
    # the others, so that no two reads of one meter race each other (the
    # later command would be refused as a replay: the meter's job)
    F5_PROBE_METERS=1-10
    F5_LOAD_METERS=11-$MPF
    if [ -z "$RELAY_LINKS" ]; then
        not_built 5 "slow/stalling links" "the relays were not set up"
        return
    fi
    # agg-1 is connected through every relay (else the fault injects nothing)
    for l in $RELAY_LINKS; do
        k=${l%%:*}
        a=$(fx_relay_stat "$k" active)
        [ "${a:-0}" -ge 1 ] || { F_OK=0; note="${note}relay $k carries no connection (active=${a:-?}); "; }
    done
    fx_status "$TMP/pre-f5.json"
    : >"$TMP/f5-phases.txt"
    fx_probe_start f5 "$F5_PROBE_METERS"
    f5_phase base
    f5_load_start base
    up0=0; for l in $RELAY_LINKS; do up0=$(( up0 + $(fx_relay_stat "${l%%:*}" bytes_c2u) )); done
    base_ms=$(fx_ms)
    sleep "$FLOW_S"     # reads of agg-1's meters through the relays, nothing injected
    up1=0; for l in $RELAY_LINKS; do up1=$(( up1 + $(fx_relay_stat "${l%%:*}" bytes_c2u) )); done
    offered=$(( (up1 - up0) * 1000 / ($(fx_ms) - base_ms + 1) ))
    fx_say "5: agg-1 sends $offered bytes/s upward through the relays (base phase)"

    f5_phase delay
    fx_relays delay "$F5_DELAY_MS" "$F5_JITTER_MS" || { F_OK=0; note="${note}delay not set; "; }
    f5_load_start delay
    fx_say "5: delay ${F5_DELAY_MS}+-${F5_JITTER_MS} ms each way for ${F5_DELAY_S}s"
    sleep "$F5_DELAY_S" # the fault's duration
    fx_load_stop        # before the delay is lifted: each of its reads was delayed both ways
    fx_relays delay 0 0 || F_OK=0

    rate=$(( offered * (100 + F5_RATE_HEADROOM) / 100 ))
    [ "$rate" -ge "$F5_RATE_MIN" ] || rate=$F5_RATE_MIN
    for ph in rate starve; do
        [ "$ph" = starve ] && rate=$(( offered / 4 ))
        [ "$rate" -ge 1 ] || rate=1
        f5_phase "$ph"
        b0=$(fx_relay_stat 1 bytes_c2u); r0=$(fx_ms)
        fx_relays rate "$rate" || { F_OK=0; note="${note}rate not set; "; }
        f5_load_start "$ph"
        fx_say "5: $ph: bandwidth $rate bytes/s each way per connection"
        if [ "$ph" = rate ]; then sleep "$F5_RATE_S"; else sleep "$F5_STARVE_S"; fi   # the fault's duration
        b1=$(fx_relay_stat 1 bytes_c2u)
        seen=$(( (${b1:-0} - ${b0:-0}) * 1000 / ($(fx_ms) - r0 + 1) ))
        lift_ms=$(fx_ms)
        fx_relays rate 0 || F_OK=0
        fx_say "5: $ph: relay 1 carried $seen bytes/s upward meanwhile"
        if [ "$ph" = rate ]; then rate_rate=$rate; seen_rate=$seen; lift_rate=$lift_ms
        else rate_starve=$rate; seen_starve=$seen; lift_starve=$lift_ms; fi
        f5_wait_recovered "$lift_ms" || { F_OK=0; note="${note}reads did not recover after $ph; "; }
    done

    f5_phase stall
    f5_load_start stall
    sleep 0.5   # the load's first reads are answered before the stall (ami-load gives
                # up a run that has no answer at all by its first read's timeout)
    fx_relays stall || { F_OK=0; note="${note}stall not set; "; }
    fx_say "5: stall for ${F5_STALL_MS} ms"
    sleep "$(awk -v m="$F5_STALL_MS" 'BEGIN { printf "%.3f", m / 1000 }')"   # the fault's duration
    resume_ms=$(fx_ms)
    fx_relays resume || F_OK=0
    f5_wait_recovered "$resume_ms" || { F_OK=0; note="${note}reads did not recover after resume; "; }

    f5_phase reset
    reset_ms=$(fx_ms)
    fx_relays reset || { F_OK=0; note="${note}reset failed; "; }
    f5_load_start reset
    fx_say "5: every connection reset"
    sleep "$F5_RESET_S" # traffic after the reset (the aggregator reconnects through the relays)
    f5_wait_recovered "$reset_ms" || { F_OK=0; note="${note}reads did not recover after the reset; "; }

    f5_phase refuse
    fx_relays refuse || { F_OK=0; note="${note}refuse not set; "; }
    fx_relays reset || F_OK=0
    f5_load_start refuse
    fx_say "5: connections cut and refused for ${F5_REFUSE_S}s"
    sleep "$F5_REFUSE_S"    # the fault's duration
    pass_ms=$(fx_ms)
    fx_relays pass || F_OK=0
    f5_wait_recovered "$pass_ms" || { F_OK=0; note="${note}reads did not recover after pass; "; }
    f5_phase end
    fx_traffic_stop
    end_ms=$(fx_ms)

    # the relays did what was asked: connections reset and refused, and
    # every accepted connection accounted for
    rstat=""
    for l in $RELAY_LINKS; do
        k=${l%%:*}
        st=$(fx_relay_ctl "$k" stats)
        rs=$(echo "$st" | tr ' ' '\n' | sed -n 's/^resets=//p')
        rf=$(echo "$st" | tr ' ' '\n' | sed -n 's/^refused=//p')
        bal=$(echo "$st" | tr ' ' '\n' | awk -F= '{ v[$1] = $2 } END { print (v["accepted"] == v["active"] + v["closed"] + v["resets"] + v["aborts"]) ? "ok" : "unbalanced" }')
        rstat="$rstat relay$k: $(echo "$st" | cut -d' ' -f1-6);"
        [ "${rs:-0}" -ge 2 ] || { F_OK=0; note="${note}relay $k reset ${rs:-?} connections (< 2); "; }
        [ "${rf:-0}" -ge 1 ] || { F_OK=0; note="${note}relay $k refused none; "; }
        [ "$bal" = ok ] || { F_OK=0; note="${note}relay $k counters $bal; "; }
    done
    fx_say "5: relays:$rstat"

    # reads, phase by phase: every failure of an allowed kind, none late
    lfail=0; lkinds=""; pfail=0; pkinds=""; phases=""
    fx_probe_phases f5 "$TMP/f5-phases.txt" "$PROBE_TIMEOUT_MS" >"$TMP/f5-probe.txt"
    while read -r ph psent pok pf pk pmax; do
        # shellcheck disable=SC2046  # (split on purpose: eight words)
        set -- $(f5_load "f5-$ph")
        lsent=$1; lok=$2; lf=$3; lk=$4; lmin=$5; lmax=$6; late=$7; lp50=$8
        bad="$(f5_disallowed "$ph" "$lk")$(f5_disallowed "$ph" "$pk")"
        [ -z "$bad" ] || { F_OK=0; note="${note}$ph: reads failed with $bad; "; }
        [ "$late" = 0 ] || { F_OK=0; note="${note}$ph: $late late answers; "; }
        [ "$lsent" -gt 0 ] || { F_OK=0; note="${note}$ph: no load read; "; }
        case $lf in ''|*[!0-9]*) F_OK=0; lf=0 ;; esac
        lfail=$((lfail + lf)); pfail=$((pfail + pf))
        [ "$lk" = - ] || lkinds="$lkinds,$ph:$lk"
        [ "$pk" = - ] || pkinds="$pkinds,$ph:$pk"
        phases="$phases$ph $lok/$lsent ${lmin}/${lp50}/${lmax}ms; "
        fx_say "5: $(printf '%-6s' "$ph") load ok $lok/$lsent failed ${lk} latency ${lmin}..${lmax} ms (p50 ${lp50}); probe ok $pok/$psent failed ${pk} max ${pmax} ms"
        if [ "$ph" = delay ] && [ "$lok" -gt 0 ] && [ $((lmin * 1000)) -lt "$F5_MIN_DELAYED_US" ]; then
            F_OK=0; note="${note}delay: a read took ${lmin} ms < $((F5_MIN_DELAYED_US / 1000)) ms: not through the relays?; "
        fi
    done <"$TMP/f5-probe.txt"
    [ -s "$TMP/f5-probe.txt" ] || { F_OK=0; note="${note}no probe reads; "; }

    # recovery: from each lift of a fault to reads succeeding again
    next_of() { awk -v p="$1" '$1 == p { getline; print $2 }' "$TMP/f5-phases.txt"; }
    rec_rate=$(fx_recovery_at f5 "$lift_rate" "$(next_of rate)")
    rec_starve=$(fx_recovery_at f5 "$lift_starve" "$(next_of starve)")
    rec_resume=$(fx_recovery_at f5 "$resume_ms" "$(next_of stall)")
    rec_reset=$(fx_recovery_at f5 "$reset_ms" "$(next_of reset)")
    rec_pass=$(fx_recovery_at f5 "$pass_ms" "$end_ms")
    for r in $rec_rate $rec_starve $rec_resume $rec_reset $rec_pass; do
        if [ "$r" = "-1.00" ]; then F_OK=0; note="${note}no successful read after a fault was lifted; "
        elif awk -v r="$r" -v d="$REC_5_S" 'BEGIN { exit !(r > d) }'; then
            F_OK=0; note="${note}recovery ${r}s > deadline ${REC_5_S}s; "
        fi
    done
    # the row's recovery (as the issue asks): the longer of resume and pass
    rec=$(awk -v a="$rec_resume" -v b="$rec_pass" 'BEGIN { if (a < 0 || b < 0) print "never"; else printf "%.2f\n", (a > b ? a : b) }')

    # nothing corrupted: no block rejected or malformed anywhere on the path
    drain=$(fx_account f5 "$DRAIN_S")
    produced=$(fx_acct f5 produced); stored=$(fx_acct f5 stored); lost=$(fx_acct f5 lost)
    rdups=$(fx_acct f5 read_dups)
    fx_status "$TMP/post-f5.json"
    conflicts=$(fx_stat "$TMP/post-f5.json" mdms intervals_conflict)
    redeliv=$(fx_stat "$TMP/post-f5.json" mdms intervals_dup)
    corrupt=""
    for nk in mdms:blocks_rejected mdms:ingest_malformed mdms:bad_responses mdms:malformed \
              agg-1:malformed headend-1:bad-frames headend-2:bad-frames; do
        d=$(( $(fx_num "$TMP/post-f5.json" "${nk%%:*}" "${nk#*:}") - $(fx_num "$TMP/pre-f5.json" "${nk%%:*}" "${nk#*:}") ))
        [ "$d" = 0 ] || corrupt="$corrupt $nk+$d"
    done
    [ -z "$corrupt" ] || { F_OK=0; note="${note}CORRUPTED/refused:$corrupt; "; }
    resent=$(( $(fx_num "$TMP/post-f5.json" agg-1 batches_resent) - $(fx_num "$TMP/pre-f5.json" agg-1 batches_resent) ))
    dup=$(( ${rdups:-0} + ${conflicts:-0} ))
    [ "$lost" = 0 ] || { F_OK=0; note="${note}LOST $lost (first missing $(fx_acct f5 first_missing)); "; }
    [ "$dup" = 0 ] || { F_OK=0; note="${note}DUPLICATED: $rdups reads, $conflicts conflicting intervals; "; }
    note="${note}recovery: rate ${rec_rate}s starve ${rec_starve}s resume ${rec_resume}s reset ${rec_reset}s pass ${rec_pass}s (deadline ${REC_5_S}s); load by phase: ${phases}upward ${offered} B/s, limited to ${rate_rate} (carried ${seen_rate}) then ${rate_starve} (carried ${seen_starve}); agg-1 batches resent +$resent; drain ${drain}s; redelivered-dropped ${redeliv:-?}"
    verdict=PASS; [ $F_OK = 1 ] || { verdict=FAIL; failed=$((failed + 1)); }
    row "5 slow/stalling links" "$produced" "$stored" "$lost" "$dup" "${rec}s" \
        "load $lfail ${lkinds#,}; probe $pfail ${pkinds#,}" "$verdict" "$note"
}

fault_7() {
    F_OK=1; note=""
    cfg=$VAR/db/etc/mdms.cfg
    size=$(stat -c %s "$VAR/db/db/mdms/data.mdb")
    small=$(( size / 1024 + MAP_MARGIN_K ))
    # the MDMS takes no map under 1M (mdms/map-size)
    [ "$small" -ge 1024 ] || small=1024
    small=${small}K
    sed -i "s/^\( *map-size = \)[^ ]*/\1$small/" "$cfg"
    grep -q "map-size = $small" "$cfg" || { F_OK=0; note="could not set map-size; "; }
    # an orderly restart to make the disk small: the set-up, not the fault
    fx_sup db restart ami-mdms >/dev/null || { F_OK=0; note="${note}restart failed; "; }
    fx_wait_ready mdms 60000 "$READY_S" || F_OK=0
    log_lines=$(wc -l <"$VAR/db/log/ami-mdms.log")
    fx_say "7: MDMS restarted with map-size $small (database $size bytes)"
    fx_status "$TMP/f7-pre.json"
    fx_load_start f7
    fx_probe_start f7
    fill_ms=$(fx_ms)
    # the map fills: the MDMS's ingest fails, which shows in its counters
    # (batches_failed) when it still answers a status, and in its log (an
    # ami_store MDB_MAP_FULL on the intervals database) in any case: the
    # status itself may be withheld once the audit log cannot be written
    log=$VAR/db/log/ami-mdms.log
    full_ms=""
    dl=$(( $(fx_now) + FULL_S ))
    while :; do
        fx_status "$TMP/f7-st.json"
        bf=$(fx_num "$TMP/f7-st.json" mdms batches_failed)
        err=$(tail -n +"$((log_lines + 1))" "$log" | grep "MDB_MAP_FULL" | grep -m 1 "'intervals'\|batch commit" | cut -c1-200)
        if [ "$bf" -gt 0 ] || [ -n "$err" ]; then full_ms=$(fx_ms); break; fi
        [ "$(fx_now)" -lt "$dl" ] || { F_OK=0; note="${note}map never full in ${FULL_S}s; "; break; }
        sleep 0.5   # polling the MDMS's counters and log while the map fills
    done
    [ -n "$err" ] || err=$(tail -n +"$((log_lines + 1))" "$log" | grep -m 1 "MAP_FULL" | cut -c1-200)
    fx_say "7: map full after $(( (${full_ms:-$fill_ms} - fill_ms) / 1000 ))s (batches_failed=${bf:-?}); the MDMS says: ${err:-NOTHING}"
    [ -n "$err" ] || { F_OK=0; note="${note}no clear error in the MDMS log; "; }
    # While the map is full the MDMS still answers amictl status (the one
    # reply it sends although its audit entry cannot be written: health and
    # counters, no meter data), so the operator can see the full disk; the
    # fault fails if it does not. Back-pressure is read from the relays'
    # cumulative counters once space is back (below): refused BATCH_ACKs
    # (acks_refused) and resends at the aggregators, busy/refused at the
    # head ends.
    fx_status "$TMP/f7-full.json"
    stfull=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["error"]["name"] if "error" in d else "answered")' "$TMP/f7-full.json" 2>/dev/null)
    fx_say "7: amictl status while full: ${stfull:-no answer}"
    [ "$stfull" = answered ] || { F_OK=0; note="${note}amictl status not answered while full (${stfull:-no answer}); "; }
    # stay full a moment with traffic on (reads fail meanwhile: their kinds
    # are part of the row), then give space back
    sleep 3   # the full state held for 3 s with data arriving: a fixed part of the fault
    fx_snap f7
    sed -i "s/^\( *map-size = \)[^ ]*/\11G/" "$cfg"
    space_ms=$(fx_ms)
    fx_sup db restart ami-mdms >/dev/null || { F_OK=0; note="${note}restart failed; "; }
    fx_wait_ready mdms $(( $(fx_ms) - space_ms + 1000 )) "$READY_S" || { F_OK=0; note="${note}not READY; "; }
    ready_ms=$(fx_ms)
    dl=$(( $(fx_now) + REC_7_S ))
    until fx_probe_recovered f7 "$ready_ms" "$PROBE_OK"; do
        [ "$(fx_now)" -lt "$dl" ] || { F_OK=0; note="${note}reads did not recover; "; break; }
        sleep 0.2   # polling the probe's log
    done
    fx_traffic_stop
    # shellcheck disable=SC2046  # (split on purpose: three words)
    set -- $(fx_recovery f7 "$space_ms"); rec=$1; pfail=$2; pkinds=$3
    # shellcheck disable=SC2046  # (split on purpose: three words)
    set -- $(fx_load_failures f7); lfail=$1; lkinds=$2; note="${note}load reads/max latency ${3:-?}; "
    drain=$(fx_account f7 "$DRAIN_S" --before "$TMP/snap-f7.json")
    lost=$(fx_acct f7 lost); lostb=$(fx_acct f7 lost_before)
    fx_status "$TMP/post-f7.json"
    conflicts=$(fx_stat "$TMP/post-f7.json" mdms intervals_conflict)
    dup=$(( $(fx_acct f7 read_dups) + ${conflicts:-0} ))
    bp=""
    for a in agg-1 agg-2; do
        d_ar=$(( $(fx_num "$TMP/post-f7.json" $a acks_refused) - $(fx_num "$TMP/f7-pre.json" $a acks_refused) ))
        d_rs=$(( $(fx_num "$TMP/post-f7.json" $a batches_resent) - $(fx_num "$TMP/f7-pre.json" $a batches_resent) ))
        [ "$d_ar" -gt 0 ] && bp="$bp $a acks_refused+$d_ar resent+$d_rs;"
    done
    for h in headend-1 headend-2; do
        d_b=$(( $(fx_num "$TMP/post-f7.json" $h batches_busy) + $(fx_num "$TMP/post-f7.json" $h batches_refused) \
              - $(fx_num "$TMP/f7-pre.json" $h batches_busy) - $(fx_num "$TMP/f7-pre.json" $h batches_refused) ))
        bp="$bp $h busy/refused+$d_b;"
    done
    fx_say "7: back-pressure (counters after the recovery minus before the fault):$bp"
    case $bp in *acks_refused*) ;; *) F_OK=0; note="${note}no back-pressure reached the aggregators; " ;; esac
    [ "$lost" = 0 ] || { F_OK=0; note="${note}LOST $lost (first missing $(fx_acct f7 first_missing)); "; }
    [ "$lostb" = 0 ] || { F_OK=0; note="${note}$lostb stored readings GONE; "; }
    [ "$dup" = 0 ] || { F_OK=0; note="${note}DUPLICATED $dup; "; }
    if [ "$rec" = "-1.00" ]; then F_OK=0; rec=never
    elif awk -v r="$rec" -v d="$REC_7_S" 'BEGIN { exit !(r > d) }'; then
        F_OK=0; note="${note}recovery ${rec}s > deadline ${REC_7_S}s; "
    fi
    note="${note}status while full: ${stfull:-?}; recovery from space given; drain ${drain}s; back-pressure:${bp:- none}"
    verdict=PASS; [ $F_OK = 1 ] || { verdict=FAIL; failed=$((failed + 1)); }
    row "7 MDMS disk full" "$(fx_acct f7 produced)" "$(fx_acct f7 stored)" "$lost" "$dup" "${rec}s" \
        "load $lfail ${lkinds}; probe $pfail ${pkinds}" "$verdict" "$note"
}

header
for f in $faults; do
    "fault_$f"
done

echo
fx_say "fault suite: $(( $(fx_now) - t0 ))s; readings cumulative since START; heartbeat ${HEARTBEAT_S}s (expiry ${EXPIRY_S}s)"
header
printf '%s' "$rows"
if [ $failed -gt 0 ]; then
    echo "FAIL: $me: $failed fault(s) failed"
    exit 1
fi
fx_say "PASS"
exit 0
