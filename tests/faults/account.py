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
  custody STATEDIR --mdms DBDIR --meters FIRST-LAST --start S --interval I
          --block B         what an aggregator's custody store holds
                            ("custody": key be64 slot -> the batch's blocks,
                            each a msgpack [meter_id, seq, box]; an empty
                            value is a free slot): records (non-empty),
                            blocks, bytes, readings (B per block: a block
                            of seq s holds intervals s-B+1..s); and, for
                            the meters FIRST-LAST, what the MDMS and the
                            custody hold together: covered_to = the
                            smallest, over the meters, of the end (Unix s)
                            of the last interval of an unbroken run from
                            the first interval after S (so every reading
                            up to covered_to is in one or the other),
                            gaps = meters whose readings have a hole
                            before their last one (first_gap: the first),
                            mdms = those meters' readings in the MDMS,
                            held_only = readings in custody and not in
                            the MDMS, foreign = blocks of other meters

Layouts: services/aggregator/ami_aggregator.h ("Custody store"),
services/mdms/ami_mdms_db.h ("intervals": key meter_id 0x00 be32
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


def _mp_item(b, i):
    """(value, next offset) of the msgpack scalar at b[i]: the str, uint
    and bin forms a custody block uses (ami_msg.h ami_block_t)."""
    t = b[i]
    if t <= 0x7f:
        return t, i + 1
    if 0xa0 <= t <= 0xbf:
        n = t & 0x1f
        return b[i + 1:i + 1 + n].decode(), i + 1 + n
    sizes = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}
    if t in sizes:
        n = sizes[t]
        return int.from_bytes(b[i + 1:i + 1 + n], "big"), i + 1 + n
    lens = {0xd9: 1, 0xda: 2, 0xdb: 4, 0xc4: 1, 0xc5: 2, 0xc6: 4}
    if t in lens:
        k = lens[t]
        n = int.from_bytes(b[i + 1:i + 1 + k], "big")
        v = b[i + 1 + k:i + 1 + k + n]
        return (v.decode() if t in (0xd9, 0xda, 0xdb) else v), i + 1 + k + n
    raise ValueError("msgpack type 0x%02x at %d" % (t, i))


def custody_blocks(statedir):
    """[(meter_id, seq)] of every block held, (records, bytes)."""
    blocks = []
    records = size = 0
    for _, value in dump(statedir, "custody"):
        if not value:
            continue    # a free slot (tombstone)
        records += 1
        size += len(value)
        i = 0
        while i < len(value):
            if value[i] == 0x93:
                i += 1
            elif value[i:i + 3] == b"\xdc\x00\x03":
                i += 3
            elif value[i:i + 5] == b"\xdd\x00\x00\x00\x03":
                i += 5
            else:
                raise ValueError("custody record: not a block at %d" % i)
            meter, i = _mp_item(value, i)
            seq, i = _mp_item(value, i)
            _, i = _mp_item(value, i)
            blocks.append((meter, seq))
    return blocks, records, size


def custody(argv):
    statedir = argv[2]
    opts = {}
    i = 3
    while i < len(argv):
        opts[argv[i].lstrip("-")] = argv[i + 1]
        i += 2
    start, interval, blk = int(opts["start"]), int(opts["interval"]), int(opts["block"])
    a, b = (int(x) for x in opts["meters"].split("-"))
    blocks, records, size = custody_blocks(statedir)
    held = {}
    for meter, seq in blocks:
        s = held.setdefault(meter, set())
        for n in range(seq - blk + 1, seq + 1):
            s.add(n)
    have = intervals(opts["mdms"])
    n0 = start // interval
    covered = None
    gaps = 0
    first_gap = None
    mdms = held_only = 0
    for m in range(a, b + 1):
        mid = "MTR-%06d" % m
        sm = have.get(mid, set())
        sh = held.get(mid, set())
        mdms += len(sm)
        held_only += len(sh - sm)
        u = sm | sh
        n = n0
        while n + 1 in u:
            n += 1
        if covered is None or n < covered:
            covered = n
        if u and max(u) > n:
            gaps += 1
            if first_gap is None:
                first_gap = "%s@%d" % (mid, (n + 1) * interval)
    mine = set("MTR-%06d" % m for m in range(a, b + 1))
    print(json.dumps({"records": records, "blocks": len(blocks), "bytes": size,
                      "readings": len(blocks) * blk,
                      "foreign": sum(1 for m, _ in blocks if m not in mine),
                      "covered_to": (covered or n0) * interval,
                      "gaps": gaps, "first_gap": first_gap,
                      "mdms": mdms, "held_only": held_only}))
    return 0


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
    if cmd == "custody":
        return custody(argv)
    raise SystemExit("usage: account.py snap|check|counters|le|custody ...")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
