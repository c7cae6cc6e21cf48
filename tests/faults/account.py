#!/usr/bin/env python3
"""tests/faults/account.py - the fault suite's accounting (issue 6).

Reads LMDB databases with mdb_dump (lmdb-utils; read-only, beside the
running service) and answers, as one line of JSON on stdout:

  snap DBDIR OUT            every interval reading present in the MDMS's
                            "intervals" database (meter, interval number),
                            saved to OUT for a later `check --before OUT`
  check DBDIR --start S --interval I --expect FIRST-LAST:P ... [--before F]
                            produced = for each FIRST-LAST:P (a fleet's
                            meters and its profile clock P: every meter
                            of the fleet has made every interval whose end
                            is in (S, P]), the readings that must be
                            stored; stored = those of them present; lost =
                            produced - stored; lost_before = readings that
                            were in snapshot F and are gone now (a
                            committed reading must never disappear);
                            read_dups = on-demand readings stored more than
                            once under one correlation id ("readings":
                            key meter_id 0x00 be64 read_ms request_id(16));
                            total = every interval reading present
  counters DBDIR            a fleet's persisted command counters
                            ("counters": be32 meter number -> be64), as
                            {"meter number": counter}
  le A B                    exit 0 iff every counter of `counters` output A
                            is <= the same meter's counter in B, else 1
                            with the meters that went back

Layouts: services/mdms/ami_mdms_db.h ("intervals": key meter_id 0x00 be32
bucket, value 12-byte presence bitmap in clear then the sealed slots; slot
s of bucket b is interval number n = b*96 + s + 1, end = n * interval),
services/meter/ami_meter.h ("counters").
"""
import json
import subprocess
import sys

SLOTS = 96  # intervals per bucket (ami_mdms_db.h)


def dump(dbdir, name):
    """(key bytes, value bytes) of every entry of named database NAME."""
    try:
        out = subprocess.run(["mdb_dump", "-s", name, dbdir], check=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=60).stdout.decode()
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode()
        if "MDB_NOTFOUND" in err:  # the database does not exist yet
            return []
        raise
    lines = out.split("\n")
    i = lines.index("HEADER=END") + 1
    rows = []
    while i + 1 < len(lines) and lines[i].startswith(" "):
        rows.append((bytes.fromhex(lines[i][1:]), bytes.fromhex(lines[i + 1][1:])))
        i += 2
    return rows


def intervals(dbdir):
    """{meter_id: set(interval numbers)} present."""
    have = {}
    for key, value in dump(dbdir, "intervals"):
        meter, _, rest = key.partition(b"\0")
        bucket = int.from_bytes(rest[:4], "big")
        bits = value[:12]
        s = have.setdefault(meter.decode(), set())
        for slot in range(SLOTS):
            if bits[slot // 8] & (1 << (slot % 8)):
                s.add(bucket * SLOTS + slot + 1)
    return have


def read_dups(dbdir):
    seen = {}
    for key, _ in dump(dbdir, "readings"):
        meter, _, rest = key.partition(b"\0")
        rid = (meter, rest[8:24])
        seen[rid] = seen.get(rid, 0) + 1
    return sum(c - 1 for c in seen.values() if c > 1), len(seen)


def main(argv):
    cmd = argv[1]
    if cmd == "snap":
        have = intervals(argv[2])
        with open(argv[3], "w") as f:
            json.dump({m: sorted(v) for m, v in have.items()}, f)
        print(json.dumps({"total": sum(len(v) for v in have.values())}))
        return 0
    if cmd == "check":
        dbdir = argv[2]
        start = interval = None
        expect = []
        before = None
        i = 3
        while i < len(argv):
            if argv[i] == "--start":
                start = int(argv[i + 1])
            elif argv[i] == "--interval":
                interval = int(argv[i + 1])
            elif argv[i] == "--expect":
                rng, p = argv[i + 1].split(":")
                a, b = rng.split("-")
                expect.append((int(a), int(b), int(p)))
            elif argv[i] == "--before":
                before = argv[i + 1]
            else:
                raise SystemExit("account.py check: unknown " + argv[i])
            i += 2
        have = intervals(dbdir)
        produced = stored = 0
        first_missing = None
        n0 = start // interval  # intervals end at (n0, n_p] * interval
        for a, b, p in expect:
            n_p = p // interval
            for m in range(a, b + 1):
                mid = "MTR-%06d" % m
                s = have.get(mid, set())
                for n in range(n0 + 1, n_p + 1):
                    produced += 1
                    if n in s:
                        stored += 1
                    elif first_missing is None:
                        first_missing = "%s@%d" % (mid, n * interval)
        lost_before = 0
        if before:
            with open(before) as f:
                old = json.load(f)
            for m, ns in old.items():
                s = have.get(m, set())
                lost_before += sum(1 for n in ns if n not in s)
        dups, reads = read_dups(dbdir)
        print(json.dumps({"produced": produced, "stored": stored,
                          "lost": produced - stored, "lost_before": lost_before,
                          "first_missing": first_missing, "read_dups": dups,
                          "reads_stored": reads,
                          "total": sum(len(v) for v in have.values())}))
        return 0
    if cmd == "counters":
        out = {}
        for key, value in dump(argv[2], "counters"):
            out[str(int.from_bytes(key, "big"))] = int.from_bytes(value, "big")
        print(json.dumps(out))
        return 0
    if cmd == "le":
        with open(argv[2]) as f:
            a = json.load(f)
        with open(argv[3]) as f:
            b = json.load(f)
        back = [m for m, c in a.items() if b.get(m, 0) < c]
        print(json.dumps({"meters": len(a), "went_back": back[:10], "went_back_count": len(back)}))
        return 1 if back else 0
    raise SystemExit("usage: account.py snap|check|counters|le ...")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
