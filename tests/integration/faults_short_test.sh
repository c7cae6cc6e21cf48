#!/bin/sh
# tests/integration/faults_short_test.sh - the bounded short form of the
# fault suite (issue 6) for `make test`: tests/faults/run.sh --short, i.e.
# faults 1 (kill -9 a head end: reads recover within the heartbeat expiry,
# no interval reading lost) and 2 (kill -9 the MDMS while batches flow:
# what LMDB held survives, nothing lost or stored twice, the backlog
# drains), on a private multi-host cluster of its own (namespaces, subnet,
# run directory), torn down at the end with a check that nothing is left.
# About 40 s on the project's VM; bounded here by SHORT_S. `make
# test-faults` runs every fault. Run by tests/run.sh; exit 0 = pass. Needs
# root and `ip netns` (the CI runs as root).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
# Seconds: the whole short suite, ~3 x what a healthy run takes (its own
# waits are bounded too; this bounds the sum, and timeout's TERM lets the
# suite's trap tear the cluster down).
SHORT_S=150
timeout -k 60 "$SHORT_S" sh "$root/tests/faults/run.sh" --short
rc=$?
[ $rc -eq 0 ] || echo "FAIL: faults_short_test: tests/faults/run.sh --short exited $rc"
exit $rc
