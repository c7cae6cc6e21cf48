#!/bin/sh
# deploy/demo.sh - run the ami-bus demo topology under supervisord (make demo / make stop).
#
#   sh deploy/demo.sh start    provision var/demo once, render its configuration,
#                              start supervisord, wait until every service is READY
#                              (by asking the MDMS: amictl status --wait), perform
#                              one on-demand read and show it
#   sh deploy/demo.sh stop     stop every service and supervisord; returns when no
#                              process of the demo is left
#   sh deploy/demo.sh status   supervisord's view and the MDMS's view
#
# Everything lives in var/demo (ignored by git; `make distclean` removes it):
# keys/ (ami-keygen), etc/ (rendered configuration), log/, db/, state/,
# supervisord.conf, supervisord.pid, supervisor.sock. Every command is
# idempotent: start on a running demo only checks it and reads again; stop
# on a stopped one says so.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
var=$root/var/demo
bin=$root/bin
conf=$var/supervisord.conf
pidfile=$var/supervisord.pid
amictl="$bin/amictl -c $var/etc/amictl.cfg"
# The demo's port layout (deploy/render.sh): broker 7000, MDMS 7100-7102,
# head ends 7201-7202, aggregators 7301-7302.
PORT_BASE=7000
PORTS="7000 7100 7101 7102 7201 7202 7301 7302"
# Seconds to wait for every service to be READY, for the first read to
# succeed, and for everything to stop (stopwaitsecs=10 per service, by
# priority group).
WAIT_READY=30
WAIT_READ=15
WAIT_STOP=40

say() { echo "demo: $*"; }
die() { echo "demo: $*" >&2; exit 1; }

running_pid() {
    # The pid of our supervisord if it runs, else nothing.
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile" 2>/dev/null || true)
    case $pid in ''|*[!0-9]*) return 0 ;; esac
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

leftovers() {
    # Our services: started as BIN/ami-ROLE -c VAR/etc/NODE.cfg (only
    # those: a `tail -f var/demo/log/...` in another terminal is not ours).
    pgrep -f "/ami-[a-z]+ -c $var/etc/" 2>/dev/null || true
}

ports_in_use() {
    command -v ss >/dev/null 2>&1 || return 0
    for p in $PORTS; do
        if [ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then printf ' %s' "$p"; fi
    done
}

start() {
    for b in ami-mdms ami-broker ami-headend ami-aggregator ami-meter amictl ami-keygen; do
        [ -x "$bin/$b" ] || die "$bin/$b is missing: build first (make)"
    done
    command -v supervisord >/dev/null 2>&1 || die "supervisord is missing: run 'make deps' (Debian package supervisor)"
    mkdir -p "$var"

    # 1. keys: provision once, never overwrite
    rc=0
    "$bin/ami-keygen" check -q "$var/keys" || rc=$?
    case $rc in
        0) say "keys: $var/keys is complete" ;;
        4) say "keys: provisioning $var/keys (no key is ever stored in the repository)"
           "$bin/ami-keygen" init "$var/keys" ;;
        *) die "keys in $var/keys are damaged (see above); 'make distclean' removes var/ and every key in it" ;;
    esac

    # 2. configuration, with absolute paths
    sh "$root/deploy/render.sh" "$var" "$PORT_BASE"

    # 3. supervisord, unless it already runs
    pid=$(running_pid)
    if [ -n "$pid" ]; then
        say "supervisord already runs (pid $pid); checking the services"
        supervisorctl -c "$conf" update >/dev/null
    else
        busy=$(ports_in_use)
        [ -z "$busy" ] || die "port(s)$busy already in use by another program: the demo needs $PORTS"
        say "starting supervisord -c $conf"
        supervisord -c "$conf"
    fi

    # 4. wait by asking the MDMS, not by sleeping
    say "waiting until every service is READY (amictl status --wait $WAIT_READY)"
    if ! $amictl status --wait "$WAIT_READY"; then
        supervisorctl -c "$conf" status || true
        die "the services did not all become ready; logs are in $var/log/"
    fi

    # 5. the use case: an on-demand read through the whole chain. Right
    # after start-up a head end may be READY a moment before the broker
    # has its worker for an aggregator, so a read failing with "no route"
    # (1) or a timeout (3) is asked again until the deadline.
    echo
    say "bin/amictl read MTR-000001"
    deadline=$(( $(date +%s) + WAIT_READ ))
    while :; do
        rc=0
        $amictl read MTR-000001 || rc=$?
        [ $rc -eq 0 ] && break
        if [ $rc -ne 1 ] && [ $rc -ne 3 ] || [ "$(date +%s)" -ge $deadline ]; then
            die "the read failed (exit $rc); logs are in $var/log/"
        fi
        say "retrying the read"
    done
    cat <<EOF

demo: ami-bus is running (supervisord pid $(running_pid)). Next:
  bin/amictl read MTR-000150               read another meter (MTR-000001 .. MTR-000200)
  bin/amictl read MTR-000150 --json        the same as IEC 61968-9 MeterReadings JSON
  bin/amictl history MTR-000001            stored readings, newest first
  bin/amictl status                        every service, as the MDMS sees it
  supervisorctl -c var/demo/supervisord.conf status    every process, as supervisord sees it
  make stop                                stop everything
Logs: var/demo/log/   Keys: var/demo/keys/   Other operators: bin/amictl --cert var/demo/keys/operators/viewer.cert ...
EOF
}

stop() {
    pid=$(running_pid)
    if [ -z "$pid" ]; then
        rest=$(leftovers)
        if [ -z "$rest" ]; then
            say "nothing is running"
            rm -f "$pidfile"
            return 0
        fi
    else
        say "stopping every service and supervisord (pid $pid)"
        supervisorctl -c "$conf" shutdown >/dev/null || kill -TERM "$pid" 2>/dev/null || true
        deadline=$(( $(date +%s) + WAIT_STOP ))
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$(date +%s)" -ge $deadline ]; then
                say "supervisord did not stop within ${WAIT_STOP}s: sending SIGTERM"
                kill -TERM "$pid" 2>/dev/null || true
                break
            fi
            # polling the pid: there is nothing else to ask once supervisord
            # has been told to shut down
            sleep 0.2
        done
    fi
    # Anything of ours still alive (supervisord killed hard, a service that
    # ignored SIGTERM): end it by pid, then make sure.
    rest=$(leftovers)
    if [ -n "$rest" ]; then
        say "ending leftover process(es): $rest"
        # shellcheck disable=SC2086
        kill -TERM $rest 2>/dev/null || true
        deadline=$(( $(date +%s) + 10 ))
        while [ -n "$(leftovers)" ] && [ "$(date +%s)" -lt $deadline ]; do sleep 0.2; done
        rest=$(leftovers)
        # shellcheck disable=SC2086
        [ -z "$rest" ] || kill -KILL $rest 2>/dev/null || true
    fi
    rest=$(leftovers)
    [ -z "$rest" ] || die "process(es) $rest would not stop"
    rm -f "$pidfile"
    say "stopped"
}

status() {
    pid=$(running_pid)
    if [ -z "$pid" ]; then
        say "not running"
        return 3
    fi
    supervisorctl -c "$conf" status || true
    echo
    $amictl status
}

case "${1:-}" in
    start)  start ;;
    stop)   stop ;;
    status) status ;;
    *)      echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
