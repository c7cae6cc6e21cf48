#!/bin/sh
# tools/security-report/security-report.sh - the requirement -> test report.
#
#   sh tools/security-report/security-report.sh [--matrix FILE] [--logs DIR]
#                                               [--gaps] [--verbose]
#
# Reads the traceability matrix (docs/security/matrix.tsv: one line per
# (requirement, test), "REQ-ID<TAB>test-binary<TAB>test-name<TAB>note") and
# the logs `make test` leaves in build/rel/test-logs/ (tests/run.sh), and
# prints, per requirement (DESIGN.md section 6 order, then the extensions
# in the order the matrix first names them), each mapped test with
#
#   PASS     cmocka: LOGS/<binary>.log has "[       OK ] <test-name>";
#            integration (tests/integration/<test-name>.sh): LOGS/<test-name>.log
#            ends with the runner's "[  PASSED  ] 1 test(s)." line;
#            fuzz: LOGS/fuzz-smoke.log has "fuzz ok:" lines (test-name
#            fuzz-smoke = every target, or one target's name) and no
#            "FUZZ FAIL:" line for it
#   FAIL     "[  FAILED  ] <test-name>", skipped, the test absent from its
#            log, or the log missing
#   MISSING  test-binary "-", note "MISSING: ...": no test exists yet; the
#            note says what test is needed (the work list of the security
#            issue)
#   OPEN     test-binary "-", note "OPEN: ...": an extension requirement
#            (one the analysis added, not in DESIGN.md section 6) that is
#            knowingly not built yet; the note says why and where it is
#            planned. Allowed only for extensions: on a DESIGN.md id it
#            counts as MISSING.
#
# A requirement is FAILING if any of its tests fails; else MISSING if it has
# no test at all (and no OPEN line), or any MISSING line; else OPEN if it has
# an OPEN line; else PASSING. It is "covered" if at least one real test is
# mapped to it. The last line is
#
#   requirements: N, covered: C, passing: P, open: O, missing: M, failing: F
#
# Options:
#   --matrix FILE   the matrix [<repo>/docs/security/matrix.tsv]
#   --logs DIR      the test logs [<repo>/build/rel/test-logs]
#   --gaps          print only what is not passing (the work list)
#   --verbose       print every test's note, not only the gaps'
#
# Exit status: 0 every requirement PASSING or (extensions) OPEN; 1 some
# MISSING or FAILING;
# 2 usage error, unreadable matrix, malformed matrix line or no logs.
#
# POSIX sh and awk only, so that `sh tools/security-report/security-report.sh`
# works wherever `make test` does.
set -u

prog=security-report

# DESIGN.md section 6, in its order: every one of these must be traced,
# and one the matrix does not name is reported MISSING. Update this list
# together with DESIGN.md.
DESIGN_IDS="FUN-READ-1 FUN-READ-2 FUN-INT-1 SEC-AUTH-1 SEC-AUTH-2 SEC-AUTHZ-1
SEC-AUTHZ-2 SEC-INT-1 SEC-INT-2 SEC-INT-3 SEC-CONF-1 SEC-CONF-2 SEC-AUD-1
SEC-NR-1 SEC-AVAIL-1 SEC-AVAIL-2 SEC-KEY-1 SEC-KEY-2 SEC-KEY-3 SEC-FAIL-1
SEC-VAL-1"

usage() {
    cat <<'USAGE'
usage: sh tools/security-report/security-report.sh [--matrix FILE] [--logs DIR]
                                                  [--gaps] [--verbose]
  --matrix FILE  traceability matrix [docs/security/matrix.tsv of this tree]
  --logs DIR     logs of `make test` [build/rel/test-logs of this tree]
  --gaps         print only what is not passing (the work list)
  --verbose      print every test's note
Prints PASS / FAIL / MISSING / OPEN per requirement and test, then
"requirements: N, covered: C, passing: P, open: O, missing: M, failing: F".
Exit 0: all passing (extensions: or open); 1: something missing or failing;
2: usage or input error.
USAGE
}

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
matrix=""
logs=""
gaps=0
verbose=0
while [ $# -gt 0 ]; do
    case $1 in
        --matrix)   [ $# -ge 2 ] || { echo "$prog: --matrix needs a file" >&2; exit 2; }
                    matrix=$2; shift 2 ;;
        --matrix=*) matrix=${1#--matrix=}; shift ;;
        --logs)     [ $# -ge 2 ] || { echo "$prog: --logs needs a directory" >&2; exit 2; }
                    logs=$2; shift 2 ;;
        --logs=*)   logs=${1#--logs=}; shift ;;
        --gaps)     gaps=1; shift ;;
        -v|--verbose) verbose=1; shift ;;
        -h|--help)  usage; exit 0 ;;
        *)          echo "$prog: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$matrix" ] || matrix=$root/docs/security/matrix.tsv
[ -n "$logs" ] || logs=$root/build/rel/test-logs

if [ ! -f "$matrix" ] || [ ! -r "$matrix" ]; then
    echo "$prog: cannot read the matrix '$matrix'" >&2
    exit 2
fi
if [ ! -d "$logs" ]; then
    echo "$prog: no test logs in '$logs': run \`make test\` first" >&2
    echo "$prog: (it writes build/rel/test-logs/; or point --logs at another log directory)" >&2
    exit 2
fi
found=0
for f in "$logs"/*.log; do
    [ -f "$f" ] && { found=1; break; }
done
if [ $found -eq 0 ]; then
    echo "$prog: '$logs' holds no *.log file: run \`make test\` first" >&2
    exit 2
fi

# One line for awk -v (a newline inside a -v value is not portable).
design_ids=$(printf '%s\n' "$DESIGN_IDS" | tr '\n' ' ')
exec awk -F '\t' \
    -v design="$design_ids" -v logs="$logs" -v matrix="$matrix" \
    -v gaps="$gaps" -v verbose="$verbose" -v prog="$prog" '
function fail_line(msg) {
    errors = errors prog ": " matrix ":" FNR ": " msg "\n"
}

# Read one log once; remember what it says about each test. Returns 1 if the
# file exists (even empty), 0 if it cannot be opened.
function load(file,    r, line, p, nm) {
    if (file in exists)
        return exists[file]
    r = (getline line < file)
    if (r < 0) {
        exists[file] = 0
        return 0
    }
    exists[file] = 1
    while (r > 0) {
        sub(/\r$/, "", line)
        if ((p = index(line, "[       OK ] ")) > 0) {
            nm = substr(line, p + 13); sub(/[ \t].*$/, "", nm); ok[file, nm] = 1
        }
        if ((p = index(line, "[  FAILED  ] ")) > 0) {
            nm = substr(line, p + 13); sub(/[ \t].*$/, "", nm); failed[file, nm] = 1
        }
        if ((p = index(line, "[  SKIPPED ] ")) > 0) {
            nm = substr(line, p + 13); sub(/[ \t].*$/, "", nm); skipped[file, nm] = 1
        }
        if (line ~ /^\[  PASSED  \] 1 test\(s\)\.[ \t]*$/)
            passed_one[file] = 1
        if (index(line, "fuzz ok: ") == 1) {
            nm = substr(line, 10); sub(/[ \t].*$/, "", nm)
            fuzz_ok[file, nm] = 1; fuzz_any_ok[file] = 1
        }
        if (index(line, "FUZZ FAIL: ") == 1) {
            nm = substr(line, 12); sub(/[ \t].*$/, "", nm)
            fuzz_fail[file, nm] = 1; fuzz_any_fail[file] = 1
        }
        if (index(line, "no fuzz targets built") == 1)
            fuzz_any_fail[file] = 1
        r = (getline line < file)
    }
    close(file)
    return 1
}

# Status of one mapped test: "PASS", "FAIL" or "MISSING"; sets why.
function status(bin, name,    file) {
    why = ""
    if (bin == "-")
        return note_open ? "OPEN" : "MISSING"
    if (bin == "integration") {
        file = logs "/" name ".log"
        if (!load(file)) { why = "no log " file; return "FAIL" }
        if (file in passed_one) return "PASS"
        why = "failed (no PASSED line in " file ")"
        return "FAIL"
    }
    if (bin == "fuzz") {
        file = logs "/fuzz-smoke.log"
        if (!load(file)) { why = "no log " file; return "FAIL" }
        if (name == "fuzz-smoke") {
            if ((file in fuzz_any_ok) && !(file in fuzz_any_fail)) return "PASS"
            why = (file in fuzz_any_fail) ? "a fuzz target failed (see " file ")" \
                                          : "no \"fuzz ok:\" line in " file
            return "FAIL"
        }
        if (((file, name) in fuzz_ok) && !((file, name) in fuzz_fail)) return "PASS"
        why = ((file, name) in fuzz_fail) ? "fuzz target failed" : "not in " file
        return "FAIL"
    }
    file = logs "/" bin ".log"
    if (!load(file)) { why = "no log " file; return "FAIL" }
    if ((file, name) in failed) { why = "failed (see " file ")"; return "FAIL" }
    if ((file, name) in skipped) { why = "skipped"; return "FAIL" }
    if ((file, name) in ok) return "PASS"
    why = "not in " file " (not run: crashed, renamed, or not built?)"
    return "FAIL"
}

BEGIN {
    nreq = split(design, order, " ")
    for (i = 1; i <= nreq; i++)
        known[order[i]] = 1
}

{ sub(/\r$/, "") }
/^[ \t]*$/ || /^#/ { next }
{
    if (NF != 4) {
        fail_line("expected 4 tab-separated fields (REQ-ID, test-binary, test-name, note), found " NF)
        next
    }
    id = $1; bin = $2; name = $3; note = $4
    if (id !~ /^[A-Z]+(-[A-Z]+)*-[0-9]+$/) {
        fail_line("requirement id \"" id "\" is not of the form SEC-XYZ-N")
        next
    }
    if (bin != "-" && bin != "integration" && bin != "fuzz" && bin !~ /^test_[A-Za-z0-9_]+$/) {
        fail_line("test binary \"" bin "\" is not test_*, integration, fuzz or -")
        next
    }
    if (bin == "-" && name != "-") {
        fail_line("a gap line (binary -) must have test-name -")
        next
    }
    if (bin != "-" && name !~ /^[A-Za-z0-9_.-]+$/) {
        fail_line("test name \"" name "\" is not a plain name")
        next
    }
    if (bin == "-" && note !~ /^(MISSING|OPEN): /)
        printf "%s: %s:%d: warning: a gap line should note \"MISSING: <the test needed>\" or \"OPEN: <why not built>\"\n", \
               prog, matrix, FNR > "/dev/stderr"
    if (!(id in known)) {
        known[id] = 1
        order[++nreq] = id
        extension[id] = 1
    }
    if (bin != "-" && ((id, bin, name) in seen))
        printf "%s: %s:%d: warning: %s %s/%s is listed twice\n", \
               prog, matrix, FNR, id, bin, name > "/dev/stderr"
    seen[id, bin, name] = 1
    k = ++rows[id]
    rbin[id, k] = bin; rname[id, k] = name; rnote[id, k] = note
}

END {
    if (errors != "") {
        printf "%s", errors > "/dev/stderr"
        print prog ": the matrix is malformed; no report" > "/dev/stderr"
        exit 2
    }
    printf "security report: matrix %s, logs %s\n", matrix, logs
    covered = passing = missing = failing = open = 0
    for (i = 1; i <= nreq; i++) {
        id = order[i]
        n = rows[id] + 0
        npass = nfail = ngap = nopen = nreal = 0
        for (k = 1; k <= n; k++) {
            note_open = (rnote[id, k] ~ /^OPEN: /) && (id in extension)
            st[k] = status(rbin[id, k], rname[id, k]); sw[k] = why
            if (st[k] == "PASS") npass++
            else if (st[k] == "FAIL") nfail++
            else if (st[k] == "OPEN") nopen++
            else ngap++
            if (rbin[id, k] != "-") nreal++
        }
        if (nreal > 0) covered++
        if (nfail > 0) { rs = "FAILING"; failing++ }
        else if ((nreal == 0 && nopen == 0) || ngap > 0) { rs = "MISSING"; missing++ }
        else if (nopen > 0) { rs = "OPEN"; open++ }
        else { rs = "PASSING"; passing++ }
        if (gaps && rs == "PASSING")
            continue
        detail = npass "/" nreal " test(s) pass"
        if (nreal == 0) detail = "no test yet"
        if (ngap > 0) detail = detail ", " ngap " missing"
        if (nopen > 0) detail = detail ", " nopen " open"
        if (n == 0) detail = "not in the matrix"
        printf "\n%-12s %-8s %s%s\n", id, rs, (id in extension) ? "(extension) " : "", detail
        for (k = 1; k <= n; k++) {
            if (gaps && st[k] == "PASS")
                continue
            if (st[k] == "MISSING" || st[k] == "OPEN") {
                text = rnote[id, k]; sub(/^(MISSING|OPEN): */, "", text)
                printf "  %-8s %s\n", st[k], text
                continue
            }
            printf "  %-8s %-20s %s\n", st[k], rbin[id, k], rname[id, k]
            if (st[k] == "FAIL")
                printf "  %-8s %-20s -> %s\n", "", "", sw[k]
            else if (verbose && rnote[id, k] != "")
                printf "  %-8s %-20s %s\n", "", "", rnote[id, k]
        }
        if (n == 0)
            printf "  %-8s %s\n", "MISSING", "no test mapped in " matrix
    }
    printf "\nrequirements: %d, covered: %d, passing: %d, open: %d, missing: %d, failing: %d\n", \
           nreq, covered, passing, open, missing, failing
    rc = 0
    if (missing > 0 || failing > 0)
        rc = 1
    exit rc
}' "$matrix"
