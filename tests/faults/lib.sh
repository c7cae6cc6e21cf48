# tests/faults/lib.sh - shared helpers of the fault suite (issue 6), sourced
# by tests/faults/run.sh. POSIX sh. Nothing here starts anything on its own.
#
# The suite's cluster: deploy/cluster.sh with tests/faults/faults.topology,
# under a private run directory ($VAR), namespace prefix ($PREFIX) and
# subnet ($NET.0/24), so it runs beside `make cluster`, `make demo` and the
# other tests. Every wait below has a deadline (seconds, "why" next to each
# figure in run.sh) and polls something that answers: the host's supervisord,
# the MDMS's status (amictl status --json from the operator host), the
# database (mdb_dump), or a background process's pid.
#
# Conventions: fx_* functions; the globals they use are set by run.sh
# (ROOT BIN TMP VAR PREFIX NET TOPO and the profile settings P_START,
# P_INTERVAL_S); a failing helper returns non-zero and says why on stderr,
# it never exits (the caller decides whether a fault failed).

fx_say() { echo "faults: $*"; }
fx_warn() { echo "faults: $*" >&2; }
fx_now() { date +%s; }
fx_ms() { date +%s%3N; }

# fx_cluster SECONDS ARGS...: deploy/cluster.sh on the suite's cluster, bounded
fx_cluster() {
    _limit=$1; shift
    timeout -k 5 "$_limit" env AMI_BIN_DIR="$BIN" sh "$ROOT/deploy/cluster.sh" \
        --topology "$TOPO" --var "$VAR" --prefix "$PREFIX" --subnet "$NET.0/24" "$@"
}

# fx_amictl ARGS...: amictl on the operator host (bounded: 20 s, several
# times amictl's own 5 s timeout)
fx_amictl() {
    timeout -k 2 20 ip netns exec "${PREFIX}ops" "$BIN/amictl" -c "$VAR/ops/etc/amictl.cfg" "$@"
}

# fx_sup HOST ARGS...: that host's supervisorctl (bounded: 15 s)
fx_sup() {
    _h=$1; shift
    timeout -k 2 15 supervisorctl -c "$VAR/$_h/supervisord.conf" "$@"
}

# fx_pid HOST PROGRAM: the program's pid as its supervisord says, if RUNNING
fx_pid() {
    fx_sup "$1" status "$2" 2>/dev/null | awk '$2 == "RUNNING" { sub(",", "", $4); print $4 }'
}

# fx_wait_restart HOST PROGRAM OLDPID SECONDS: until the supervisor runs the
# program again under another pid; prints the new pid
fx_wait_restart() {
    _dl=$(( $(fx_now) + $4 ))
    while :; do
        _p=$(fx_pid "$1" "$2")
        if [ -n "$_p" ] && [ "$_p" != "$3" ]; then echo "$_p"; return 0; fi
        [ "$(fx_now)" -lt "$_dl" ] || { fx_warn "$2 on $1 not RUNNING again within $4 s"; return 1; }
        sleep 0.1   # polling supervisord: it has no "tell me when" call
    done
}

# fx_status FILE: the MDMS's status (every service, its counters) as JSON
fx_status() {
    fx_amictl status --json >"$1" 2>/dev/null
}

# fx_stat FILE NODE KEY: one value of a status file ("" if absent); KEY may
# be state, uptimeMs, or a counter name
fx_stat() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
for s in d.get("services", []):
    if s.get("node") == sys.argv[2]:
        k = sys.argv[3]
        v = s.get(k, s.get("stats", {}).get(k))
        if v is not None:
            print(v)
        break
EOF
}

# fx_num FILE NODE KEY: as fx_stat, 0 when absent (for arithmetic)
fx_num() {
    _v=$(fx_stat "$@")
    case $_v in ''|*[!0-9]*) echo 0 ;; *) echo "$_v" ;; esac
}

# fx_wait_ready NODE MAX_UPTIME_MS SECONDS: until the MDMS sees NODE READY
# with an uptime under MAX_UPTIME_MS (so: the new process, not the report
# of the one that was killed; 0: no uptime check), and every other node
# READY too
fx_wait_ready() {
    _dl=$(( $(fx_now) + $3 ))
    while :; do
        if fx_status "$TMP/st.json"; then
            _st=$(fx_stat "$TMP/st.json" "$1" state)
            _up=$(fx_stat "$TMP/st.json" "$1" uptimeMs)
            _bad=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join(s["node"] for s in d["services"] if s["state"] != "READY"))' "$TMP/st.json" 2>/dev/null)
            if [ "$_st" = READY ] && [ -n "$_up" ] && { [ "$2" -eq 0 ] || [ "$_up" -lt "$2" ]; } && [ -z "$_bad" ]; then
                return 0
            fi
        fi
        [ "$(fx_now)" -lt "$_dl" ] || { fx_warn "$1 not READY (state '${_st:-?}', uptime ${_up:-?} ms; not ready: ${_bad:-?}) within $3 s"; return 1; }
        sleep 0.2   # polling the MDMS's status: its view refreshes every heartbeat
    done
}

# ---------------------------------------------------------------- traffic
# On-demand reads while a fault runs, two kinds, both from the operator host:
#   load  - one `ami-load read --concurrency 1 --json` for the whole window
#           (stopped with SIGINT: it prints the figures so far), for the
#           reads failed during the fault and their kinds;
#   probe - one read at a time (`ami-load read --count 1 --json`), each
#           line "start_ms end_ms ok|KIND", for the recovery time.
# Both read every meter unless given a range FIRST-LAST of meter numbers
# (fault 5 reads only the meters behind the aggregator it slows down).
fx_load_start() {  # TAG [FIRST-LAST]
    ip netns exec "${PREFIX}ops" "$BIN/ami-load" read -c "$VAR/ops/etc/amictl.cfg" \
        --concurrency 1 --duration 3600 --meters "${2:-1-$METERS}" --timeout "$LOAD_TIMEOUT_MS" --json \
        >"$TMP/load-$1.json" 2>"$TMP/load-$1.err" &
    echo $! >"$TMP/load.pid"
}
fx_probe_start() {  # TAG [FIRST-LAST]
    : >"$TMP/probe-$1.txt"
    _r=${2:-1-$METERS}
    (
        first=${_r%-*}; last=${_r#*-}
        m=$first
        while [ ! -f "$TMP/probe.stop" ]; do
            t0=$(fx_ms)
            out=$(timeout -k 1 10 ip netns exec "${PREFIX}ops" "$BIN/ami-load" read -c "$VAR/ops/etc/amictl.cfg" \
                --count 1 --meters "$m-$m" --timeout "$PROBE_TIMEOUT_MS" --json 2>/dev/null)
            t1=$(fx_ms)
            kind=$(echo "$out" | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    print("NO_OUTPUT"); sys.exit(0)
if d.get("ok") == 1: print("ok")
elif "error" in d: print(d["error"].get("name", "ERROR"))
else: print(",".join(d.get("errors", {}).keys()) or "FAILED")')
            echo "$t0 $t1 $kind" >>"$TMP/probe-$1.txt"
            m=$(( m >= last ? first : m + 1 ))
            sleep 0.1   # pacing: at most ~10 probes a second, so the probe measures, not loads
        done
    ) &
    echo $! >"$TMP/probe.pid"
}
# fx_traffic_stop: stop the load (SIGINT, figures so far) and the probe;
# bounded by 15 s (a read in flight ends by its timeout + 2 s)
fx_traffic_stop() {
    touch "$TMP/probe.stop"
    fx_load_stop
    if [ -f "$TMP/probe.pid" ]; then
        _p=$(cat "$TMP/probe.pid")
        _dl=$(( $(fx_now) + 15 ))
        while kill -0 "$_p" 2>/dev/null; do
            if [ "$(fx_now)" -ge "$_dl" ]; then kill -KILL "$_p" 2>/dev/null; break; fi
            sleep 0.1   # polling the pid: it ends on its own once told
        done
        wait "$_p" 2>/dev/null
        rm -f "$TMP/probe.pid"
    fi
    rm -f "$TMP/probe.stop"
}

# fx_load_stop: stop the load only (SIGINT: it prints its figures so far);
# bounded as above
fx_load_stop() {
    [ -f "$TMP/load.pid" ] || return 0
    _p=$(cat "$TMP/load.pid")
    kill -INT "$_p" 2>/dev/null
    _dl=$(( $(fx_now) + 15 ))
    while kill -0 "$_p" 2>/dev/null; do
        if [ "$(fx_now)" -ge "$_dl" ]; then kill -KILL "$_p" 2>/dev/null; break; fi
        sleep 0.1   # polling the pid: it ends on its own once told
    done
    wait "$_p" 2>/dev/null
    rm -f "$TMP/load.pid"
}

# fx_probe_recovered TAG SINCE_MS N: 0 when the last N probes succeeded and
# all of them started after SINCE_MS
fx_probe_recovered() {
    tail -n "$3" "$TMP/probe-$1.txt" | awk -v s="$2" -v n="$3" '
        $1 >= s && $3 == "ok" { k++ } END { exit !(k == n) }'
}

# fx_recovery TAG KILL_MS: "SECONDS FAILED KINDS" from the probe: the time
# from the kill to the END of the first successful probe read that started
# after the kill and after the last failed one (a probe started while the
# MDMS is down waits for it and succeeds late: the end time counts that);
# -1 when there is none; the number of failed probes and their kinds
fx_recovery() {
    awk -v k="$2" '
        { st[NR] = $1; en[NR] = $2; ok[NR] = ($3 == "ok") }
        $2 > k && $3 != "ok" { last = $2; failed++; kinds[$3]++ }
        END {
            rec = -1
            from = (failed ? last : k)
            for (i = 1; i <= NR; i++)
                if (st[i] >= from && ok[i]) { rec = (en[i] - k) / 1000; break }
            s = ""
            for (x in kinds) s = s (s == "" ? "" : ",") x "=" kinds[x]
            printf "%.2f %d %s\n", rec, failed, (s == "" ? "-" : s)
        }' "$TMP/probe-$1.txt"
}

# fx_load_failures TAG: "FAILED KINDS SENT/MAXLATENCY" of the load's JSON
fx_load_failures() {
    python3 - "$TMP/load-$1.json" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print("? NO_JSON"); sys.exit(0)
if "error" in d:
    print("? " + d["error"].get("name", "ERROR")); sys.exit(0)
e = d.get("errors", {})
lat = d.get("latencyUs", {})
print(d.get("failed", 0), ",".join("%s=%s" % (k, v) for k, v in sorted(e.items())) or "-",
      "%d/%.0fms" % (d.get("sent", 0), lat.get("max", 0) / 1000.0))
EOF
}

# ---------------------------------------------------------------- accounting
# fx_clocks FILE: "--expect FIRST-LAST:P" for every fleet of a status file
fx_clocks() {
    _a=""
    _k=1
    while [ $_k -le "$FLEETS" ]; do
        _p=$(fx_stat "$1" "fleet-$_k" profile_clock)
        [ -n "$_p" ] || return 1
        _a="$_a --expect $(( (_k - 1) * MPF + 1 ))-$(( _k * MPF )):$_p"
        _k=$((_k + 1))
    done
    echo "$_a"
}

# fx_account TAG SECONDS [--before SNAP] [EXTRA --expect ...]: take the
# fleets' profile clocks now, then ask the database until every reading
# they made up to them is stored (or SECONDS pass); writes
# $TMP/acct-TAG.json (account.py check) and prints the drain time (s)
fx_account() {
    _tag=$1; _secs=$2; shift 2
    fx_status "$TMP/acct-st.json" || { fx_warn "no status for the accounting"; return 1; }
    _exp=$(fx_clocks "$TMP/acct-st.json") || { fx_warn "a fleet has no profile_clock"; return 1; }
    _t0=$(fx_ms)
    _dl=$(( $(fx_now) + _secs ))
    while :; do
        # shellcheck disable=SC2086
        python3 "$ROOT/tests/faults/account.py" check "$VAR/db/db/mdms" --start "$P_START" \
            --interval "$P_INTERVAL_S" $_exp "$@" >"$TMP/acct-$_tag.json" 2>"$TMP/acct.err" || true
        _lost=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["lost"])' "$TMP/acct-$_tag.json" 2>/dev/null)
        if [ "$_lost" = 0 ] || [ "$(fx_now)" -ge "$_dl" ]; then break; fi
        sleep 0.5   # polling the database while the backlog drains
    done
    awk -v a="$(fx_ms)" -v b="$_t0" 'BEGIN { printf "%.1f\n", (a - b) / 1000 }'
}

# fx_acct TAG KEY: one figure of $TMP/acct-TAG.json
fx_acct() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], "?"))' "$TMP/acct-$1.json" "$2" 2>/dev/null || echo "?"
}

# fx_snap TAG: the MDMS's interval readings now, for `--before`
fx_snap() {
    python3 "$ROOT/tests/faults/account.py" snap "$VAR/db/db/mdms" "$TMP/snap-$1.json" >/dev/null
}

# ---------------------------------------------------------------- relays
# Fault 5: one tools/ami-faultrelay per head-end link of one aggregator, in
# that aggregator's host namespace, listening on its loopback; render.sh's
# AMI_HEADEND_VIA points the aggregator at them (run.sh sets it before the
# cluster is up, so the aggregator connects through them from its first
# start). Globals (run.sh): RELAY_HOST (the host), RELAY_LINKS ("K:LPORT:
# ADDRESS:PORT ...": relay K listens on 127.0.0.1:LPORT and relays to
# headend-K at ADDRESS:PORT). Relay K: control socket $TMP/relay-K.ctl,
# log $TMP/relay-K.log, pid $TMP/relay-K.pid.

# fx_relay_ctl K COMMAND...: one control command to relay K; prints the
# reply line; non-zero on ERR or no answer (ctl's own deadline is 5 s)
fx_relay_ctl() {
    _k=$1; shift
    timeout -k 1 10 "$BIN/ami-faultrelay" ctl --control "$TMP/relay-$_k.ctl" "$@"
}

# fx_relays COMMAND...: the command to every relay, one after the other;
# 0 iff every relay answered OK
fx_relays() {
    _rc=0
    for _l in $RELAY_LINKS; do
        _r=$(fx_relay_ctl "${_l%%:*}" "$@" 2>&1) || { fx_warn "relay ${_l%%:*}: '$*': ${_r:-no answer}"; _rc=1; }
    done
    return $_rc
}

# fx_relay_stat K FIELD: one counter of relay K's `stats` line ("" if none)
fx_relay_stat() {
    fx_relay_ctl "$1" stats 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# fx_relays_start SECONDS: run in the background while cluster.sh brings
# the hosts up: waits (at most SECONDS) until RELAY_HOST's namespace has
# its loopback up, starts every relay there, and waits until each one's
# control socket answers. Writes $TMP/relays.ok, or $TMP/relays.fail with
# the reason. A relay that is not up when the aggregator first connects
# costs nothing: ZeroMQ connects again every 100 ms (libzmq's default).
fx_relays_start() {
    _dl=$(( $(fx_now) + $1 ))
    _ns=$PREFIX$RELAY_HOST
    until ip -n "$_ns" addr show dev lo 2>/dev/null | grep -q 'inet 127\.0\.0\.1/'; do
        [ "$(fx_now)" -lt "$_dl" ] || { echo "namespace $_ns with lo up not there within $1 s" >"$TMP/relays.fail"; return 1; }
        sleep 0.05  # polling `ip netns`: cluster.sh creates it, nothing to wait on
    done
    for _l in $RELAY_LINKS; do
        _k=${_l%%:*}; _rest=${_l#*:}; _lp=${_rest%%:*}; _to=${_rest#*:}
        ip netns exec "$_ns" "$BIN/ami-faultrelay" --listen "127.0.0.1:$_lp" --to "$_to" \
            --control "$TMP/relay-$_k.ctl" >"$TMP/relay-$_k.log" 2>&1 &
        echo $! >"$TMP/relay-$_k.pid"
    done
    for _l in $RELAY_LINKS; do
        _k=${_l%%:*}
        until fx_relay_ctl "$_k" stats >/dev/null 2>&1; do
            kill -0 "$(cat "$TMP/relay-$_k.pid")" 2>/dev/null || { echo "relay $_k exited: $(tail -n 3 "$TMP/relay-$_k.log")" >"$TMP/relays.fail"; return 1; }
            [ "$(fx_now)" -lt "$_dl" ] || { echo "relay $_k's control socket silent within $1 s" >"$TMP/relays.fail"; return 1; }
            sleep 0.1   # polling the control socket: the relay binds it before its loop
        done
    done
    : >"$TMP/relays.ok"
}

# fx_relays_stop: SIGTERM every relay (it resets its connections and
# removes its socket file), wait for it (10 s), then SIGKILL
fx_relays_stop() {
    for _f in "$TMP"/relay-*.pid; do
        [ -f "$_f" ] || continue
        _p=$(cat "$_f")
        kill -TERM "$_p" 2>/dev/null
        _dl=$(( $(fx_now) + 10 ))
        while kill -0 "$_p" 2>/dev/null; do
            if [ "$(fx_now)" -ge "$_dl" ]; then kill -KILL "$_p" 2>/dev/null; break; fi
            sleep 0.1   # polling the pid: it ends on its own once told
        done
        rm -f "$_f"
    done
}

# fx_probe_phases TAG PHASES TIMEOUT_MS: the probe's reads by phase
# (PHASES: lines "NAME START_MS", the last line "end END_MS"; a read
# belongs to the phase in which it started): one line per phase,
# "NAME SENT OK FAILED KINDS MAX_MS" (KINDS "-" or KIND=N,...)
fx_probe_phases() {
    awk -v t="$3" '
        FNR == NR { name[NR] = $1; from[NR] = $2; n = NR; next }
        {
            p = 0
            for (i = 1; i < n; i++) if ($1 >= from[i] && $1 < from[i + 1]) p = i
            if (!p) next
            sent[p]++
            if ($3 == "ok") okc[p]++; else { fail[p]++; k[p, $3]++; kinds[$3] = 1 }
            if ($2 - $1 > mx[p]) mx[p] = $2 - $1
        }
        END {
            for (i = 1; i < n; i++) {
                s = ""
                for (x in kinds) if ((i, x) in k) s = s (s == "" ? "" : ",") x "=" k[i, x]
                printf "%s %d %d %d %s %d\n", name[i], sent[i], okc[i], fail[i], (s == "" ? "-" : s), mx[i]
            }
        }' "$2" "$TMP/probe-$1.txt"
}

# fx_recovery_at TAG FROM_MS TO_MS: the recovery from FROM_MS (a fault
# lifted): as fx_recovery, but only the probe's reads that ended after
# FROM_MS and started before TO_MS count; seconds, -1.00 if none
fx_recovery_at() {
    awk -v k="$2" -v e="$3" '
        $1 >= e { next }
        { st[NR] = $1; en[NR] = $2; ok[NR] = ($3 == "ok") }
        $2 > k && $3 != "ok" { last = $2; failed++ }
        END {
            rec = -1
            from = (failed ? last : k)
            for (i = 1; i <= NR; i++)
                if ((i in st) && st[i] >= from && ok[i]) { rec = (en[i] - k) / 1000; break }
            printf "%.2f\n", rec
        }' "$TMP/probe-$1.txt"
}
