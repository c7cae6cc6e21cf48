# shellcheck shell=sh
# tests/integration/lib/deploy.sh - a private deployment for the integration
# tests (sourced, not run: tests/run.sh runs only tests/integration/*.sh).
#
# The real binaries (BIN/ami-*) under a real supervisord, on loopback, in
# the test's OWN temporary directory and ports, so it never collides with a
# running `make demo`. A test sources this file right after `set -u`:
#     . "$(dirname "$0")/lib/deploy.sh"
# sets its deadlines (STOP_S is required: seconds for supervisord and every
# service to be gone after shutdown; LOG_TAIL, default 25, is how many lines
# of each log the cleanup prints on failure), then:
#     deploy_setup PREFIX [EXTRA_BIN...]  # checks, trap, $tmp, $conf, $base
#     "$BIN/ami-keygen" init "$tmp/keys" ...
#     deploy_render [VAR=VALUE...]        # deploy/render.sh into $tmp
#     deploy_start                        # supervisord; sets $sup_pid
#     ... the test's own checks ...
#     deploy_shutdown                     # and assert no process is left
# Messages name the test after its script (demo_test.sh -> "demo_test").
# Every wait has a deadline; the EXIT trap shuts supervisord down on any
# failure, ends whatever is left of the test's processes, prints the tail of
# every log and removes the directory (KEEP=1 keeps it for a post-mortem).

root=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${AMI_BIN:-bin}
case $BIN in /*) ;; *) BIN=$root/$BIN ;; esac
me=$(basename "$0" .sh)

tmp=""
conf=""
sup_pid=""
base=""

say() { echo "$me: $*"; }
fail() { echo "FAIL: $me: $*"; exit 1; }
now() { date +%s; }

ours() {
    # Every process of this test names its directory on its command line
    # (supervisord -c TMP/supervisord.conf, BIN/ami-ROLE -c TMP/etc/...).
    [ -n "$tmp" ] || return 0
    pgrep -f "$tmp/" 2>/dev/null || true
}

# shellcheck disable=SC2317  # (invoked by the trap)
cleanup() {
    rc=$?
    trap - EXIT INT TERM
    if [ -n "$sup_pid" ] && kill -0 "$sup_pid" 2>/dev/null; then
        supervisorctl -c "$conf" shutdown >/dev/null 2>&1 || kill -TERM "$sup_pid" 2>/dev/null
        deadline=$(( $(now) + STOP_S ))
        while kill -0 "$sup_pid" 2>/dev/null && [ "$(now)" -lt "$deadline" ]; do sleep 0.2; done
    fi
    left=$(ours)
    if [ -n "$left" ]; then
        echo "$me: cleanup: ending leftover process(es) $left"
        # shellcheck disable=SC2086
        kill -TERM $left 2>/dev/null
        sleep 1
        left=$(ours)
        # shellcheck disable=SC2086
        [ -z "$left" ] || kill -KILL $left 2>/dev/null
    fi
    if [ "$rc" -ne 0 ] && [ -n "$tmp" ] && [ -d "$tmp/log" ]; then
        for f in "$tmp"/log/*.log; do
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

# port_free PORT: nobody listens on TCP PORT.
port_free() {
    if command -v ss >/dev/null 2>&1; then
        [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
    else
        # no ss: the kernel's socket table (state 0A = LISTEN, port in hex)
        ! awk -v p="$(printf '%04X' "$1")" \
            '$4 == "0A" && substr($2, index($2, ":") + 1) == p { found = 1 } END { exit !found }' \
            /proc/net/tcp /proc/net/tcp6 2>/dev/null
    fi
}

# deploy_setup PREFIX [EXTRA_BIN...]: install the cleanup trap, check the
# binaries (the services,
# amictl, ami-keygen and EXTRA_BIN...) and tools, make the directory $tmp (${TMPDIR:-/tmp}/PREFIX.XXXXXX, $conf its
# supervisord.conf) and pick a free port base $base.
deploy_setup() {
    prefix=$1; shift
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    for b in ami-mdms ami-broker ami-headend ami-aggregator ami-meter amictl ami-keygen "$@"; do
        [ -x "$BIN/$b" ] || fail "$BIN/$b is missing (build first: make)"
    done
    for c in supervisord supervisorctl python3 pgrep; do
        command -v $c >/dev/null 2>&1 || fail "$c is not installed"
    done

    tmp=$(mktemp -d "${TMPDIR:-/tmp}/$prefix.XXXXXX") || fail "no temporary directory"
    conf=$tmp/supervisord.conf

    # A port base whose 8 ports (render.sh's layout) are free. Bases stay below
    # 32768 - 302 so no port is in Linux's default ephemeral range, where an
    # outgoing connection could take one between our check and the bind.
    base=""
    tries=0
    while [ -z "$base" ] && [ $tries -lt 50 ]; do
        tries=$((tries + 1))
        r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
        candidate=$(( 10000 + (r % 220) * 100 ))
        all_free=1
        for off in 0 100 101 102 201 202 301 302; do
            port_free $((candidate + off)) || { all_free=0; break; }
        done
        [ $all_free -eq 1 ] && base=$candidate
    done
    [ -n "$base" ] || fail "no free port base found in 50 tries"
    say "directory $tmp, port base $base"
}

# deploy_render [VAR=VALUE...]: render the demo's templates into $tmp for
# port base $base, with VAR=VALUE... (AMI_LOG_LEVEL, AMI_RATE_* ...) in
# render.sh's environment.
deploy_render() {
    env AMI_BIN_DIR="$BIN" "$@" sh "$root/deploy/render.sh" "$tmp" "$base" || fail "render.sh"
}

# deploy_start: start supervisord on $conf and wait (10 s at most) for its
# pid file; sets $sup_pid.
deploy_start() {
    supervisord -c "$conf" || fail "supervisord did not start"
    deadline=$(( $(now) + 10 ))
    while [ ! -s "$tmp/supervisord.pid" ] && [ "$(now)" -lt $deadline ]; do sleep 0.1; done
    sup_pid=$(cat "$tmp/supervisord.pid" 2>/dev/null)
    if [ -z "$sup_pid" ] || ! kill -0 "$sup_pid" 2>/dev/null; then
        fail "supervisord is not running"
    fi
}

# deploy_shutdown: shut supervisord down, wait (STOP_S at most) until it is
# gone, and fail if any process of this test is left.
deploy_shutdown() {
    supervisorctl -c "$conf" shutdown >/dev/null || fail "supervisorctl shutdown"
    deadline=$(( $(now) + STOP_S ))
    while kill -0 "$sup_pid" 2>/dev/null; do
        [ "$(now)" -lt $deadline ] || fail "supervisord still runs ${STOP_S}s after shutdown"
        sleep 0.2
    done
    left=$(ours)
    if [ -n "$left" ]; then
        # shellcheck disable=SC2086
        ps -o pid,args -p "$(echo $left | tr ' ' ',')"
        fail "process(es) left behind: $left"
    fi
    sup_pid=""
}
