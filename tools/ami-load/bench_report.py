#!/usr/bin/env python3
"""tools/ami-load/bench_report.py - write docs/BENCHMARKS.md from the JSON
results of tools/ami-load/bench.sh (make bench).

Reads WORK/NAME.json (one ami-load --json object), WORK/NAME.rc (its exit
status) and WORK/NAME.err (its stderr) for each scenario, describes the
machine (nproc, CPU model, memory, kernel, OS, date) and the source tree
(git commit), and writes one Markdown report: every figure, its ratio to
the one-hop baseline measured in the same run, and the issue's targets
with met / missed and by how much. Also writes every raw result into one
JSON file (--raw) so the figures can be re-read by a program.
"""
import argparse
import json
import os
import platform
import subprocess

SCENARIOS = ["baseline", "security-cost", "ingest-10k", "ingest-100k", "reads-setup", "reads-c1", "reads-c64"]


def load(work, name):
    """(result dict or None, exit status or None, last stderr lines)"""
    result, rc, err = None, None, ""
    try:
        with open(os.path.join(work, name + ".json")) as f:
            text = f.read().strip()
        if text:
            result = json.loads(text.splitlines()[-1])
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(work, name + ".rc")) as f:
            rc = int(f.read().strip())
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(work, name + ".err"), errors="replace") as f:
            err = "\n".join(line for line in f.read().replace("\r", "\n").splitlines()
                            if line.strip() and not line.startswith("\x1b"))[-600:]
    except OSError:
        pass
    return result, rc, err


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    except OSError:
        pass
    osname = platform.system()
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "model": model, "memory": mem,
            "kernel": platform.release(), "os": osname}


def git(root):
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def k(x):
    """thousands separated by a thin space, as the README writes them"""
    return "{:,.0f}".format(x).replace(",", "\u202f")


def ms(us):
    return "%.2f ms" % (us / 1000.0) if us >= 1000 else "%.0f µs" % us


def mib(kib):
    return "%.1f MiB" % (kib / 1024.0)


def failure(name, result, rc, err):
    why = ""
    if result and "error" in result:
        why = result["error"].get("message", "")
    elif result and result.get("command") == "ingest" and not result.get("ok", True):
        a = result.get("accounting", {})
        why = ("accounting failed: settled %s, produced %s, in LMDB %s, lost %s, stored twice %s, "
               "rejected %s, conflicts %s" % (a.get("settled"), a.get("produced"), a.get("inDatabase"),
                                               a.get("lost"), a.get("storedTwice"),
                                               a.get("blocksRejected"), a.get("conflicts")))
    elif err:
        why = err.splitlines()[-1]
    return "**%s failed** (exit %s): %s" % (name, rc, why or "no output")


def baseline_line(b):
    pp = {p["bytes"]: p for p in b["pushPull"]}
    e = b["echo"]["latencyUs"]
    return ("PUSH→PULL 100 B **%s msg/s**, 1000 B **%s msg/s**; DEALER→ROUTER echo one in flight "
            "p50 %s, p99 %s" % (k(pp[100]["messagesPerSecond"]), k(pp[1000]["messagesPerSecond"]),
                                ms(e["p50"]), ms(e["p99"])))


def ingest_section(out, title, d):
    a, w, lat, st = d["accounting"], d["window"], d["latencyUs"], d["storage"]
    p = d["profile"]
    out.append("### %s\n" % title)
    out.append("`ami-load ingest --meters %d --fleets %d --aggregators %d` (%d head ends; blocks of "
               "%d × %d s intervals; FLOOD; measured %.1f s, services up after %.1f s)\n"
               % (d["meters"], d["fleets"], d["aggregators"], d["headends"], p["block"],
                  p["intervalS"], w["seconds"], d["readyS"]))
    out.append("| figure | value |")
    out.append("|---|---|")
    r = d.get("ratios")
    out.append("| readings committed | **%s readings/s** (%s in the window)%s |"
               % (k(w["readingsPerSecond"]), k(w["storedEnd"] - w["storedStart"]),
                  "; %.2f × one-hop 100 B messages/s" % r["readingsPerHopMessage100"] if r else ""))
    out.append("| latency, meter seal → durable in LMDB | p50 %s, p99 %s, max %s%s |"
               % (ms(lat["p50"]), ms(lat["p99"]), ms(lat["max"]),
                  " (p50 = %.0f × one-hop round trip p50)" % r["latencyP50OverEchoP50"] if r else ""))
    out.append("| accounting | produced %s, stored %s, counted in LMDB %s: **lost %d, stored twice %d**; "
               "%d meters, %s..%s readings each; %s duplicates dropped, %d conflicts, %d blocks "
               "rejected; settled %.1f s after the stop |"
               % (k(a["produced"]), k(a["stored"]), k(a["inDatabase"]), a["lost"], a["storedTwice"],
                  a["meters"], k(a["perMeterMin"]), k(a["perMeterMax"]), k(a["duplicatesDropped"]),
                  a["conflicts"], a["blocksRejected"], a["drainS"]))
    out.append("| storage | **%.1f bytes/reading** in the `intervals` database (%.1f MiB, %.0f %% of its "
               "records' 96 slots filled: %.1f bytes/reading once every record is full); %.1f "
               "bytes/reading for the whole LMDB file (%.1f MiB, page %d B) |"
               % (st["bytesPerReading"], st["intervalsBytes"] / 1048576.0, 100 * st["slotFill"],
                  st["bytesPerReadingFull"], st["fileBytesPerReading"], st["fileBytes"] / 1048576.0,
                  st["pageSize"]))
    if r:
        out.append("| baseline (same run) | %s |" % baseline_line(d["baseline"]))
    out.append("")
    out.append("| service | CPU % (window) | CPU s | RSS start → end | peak RSS | own memory (RssAnon) start → end |")
    out.append("|---|---|---|---|---|---|")
    for s in d["services"]:
        out.append("| %s | %.1f | %.1f | %s → %s | %s | %s → %s |"
                   % (s["node"], s["cpuPercent"], s["cpuSeconds"], mib(s["rssStartKiB"]),
                      mib(s["rssEndKiB"]), mib(s["peakRssKiB"]), mib(s.get("anonStartKiB", 0)),
                      mib(s.get("anonEndKiB", 0))))
    out.append("")
    out.append("RSS counts the file pages a process maps: the MDMS maps its LMDB file, so its RSS "
               "grows with the database; RssAnon is its own memory (heap, stacks, buffers).")
    out.append("")


def read_row(name, d):
    lat = d["latencyUs"]
    errors = ", ".join("%s %d" % kv for kv in sorted(d["errors"].items())) or "none"
    r = d.get("ratios")
    return ("| `ami-load read --concurrency %d` | **%s reads/s** | %s | %s | **%s** | %s | %d of %d "
            "(%s) | %s |"
            % (d["concurrency"], k(d["readsPerSecond"]), ms(lat["p50"]), ms(lat["p90"]),
               ms(lat["p99"]), ms(lat["max"]), d["failed"], d["sent"], errors,
               "p50 = %.1f × one-hop round trip; one read = %.0f one-hop 100 B messages"
               % (r["p50OverEchoP50"], r["messagesPerRead100"]) if r else ""))


def verdict(ok, text):
    return ("met" if ok else "**missed**") + (": " + text if text else "")


def targets(results):
    rows = []
    for name, label in (("ingest-10k", "10 000 meters"), ("ingest-100k", "100 000 meters")):
        d = results[name][0]
        if d and d.get("command") == "ingest" and "window" in d:
            rate, secs = d["window"]["readingsPerSecond"], d["window"]["seconds"]
            a = d["accounting"]
            clean = a["lost"] == 0 and a["storedTwice"] == 0 and d["ok"]
            why = []
            if rate < 250000:
                why.append("%.0f %% of the rate" % (100 * rate / 250000))
            if secs < 59.5:
                why.append("measured %.0f s, not 60 (BENCH_SECONDS)" % secs)
            if not clean:
                why.append("accounting failed")
            rows.append(("Ingest ≥ 250 000 readings/s end to end, sustained 60 s, none lost or "
                         "stored twice (%s)" % label,
                         "%s readings/s over %.0f s; lost %d, stored twice %d"
                         % (k(rate), secs, a["lost"], a["storedTwice"]),
                         verdict(not why, "; ".join(why))))
    d = results["ingest-100k"][0]
    if d and d.get("command") == "ingest" and "services" in d:
        fleets = [s for s in d["services"] if s["role"] == "meter"]
        if len(fleets) == 1:
            peak = fleets[0]["peakRssKiB"]
            rows.append(("100 000 simulated meters in one `ami-meter` process ≤ 256 MiB RSS",
                         "peak RSS %s" % mib(peak),
                         verdict(peak <= 256 * 1024, "" if peak <= 256 * 1024
                                 else "%.0f %% over" % (100 * (peak / (256 * 1024) - 1)))))
        mdms = [s for s in d["services"] if s["role"] == "mdms"]
        if mdms:
            m = mdms[0]
            rows.append(("MDMS memory flat over a 10-minute ingest soak",
                         "own memory (RssAnon) %s → %s over this %.0f s window (RSS with its "
                         "mapped LMDB file %s → %s); the soak itself is `ami-load ingest "
                         "--meters 100000 --duration 600`"
                         % (mib(m.get("anonStartKiB", 0)), mib(m.get("anonEndKiB", 0)),
                            d["window"]["seconds"], mib(m["rssStartKiB"]), mib(m["rssEndKiB"])),
                         "not run by `make bench`"))
    for name in ("ingest-10k", "ingest-100k"):
        d = results[name][0]
        if d and d.get("command") == "ingest" and "storage" in d and d["storage"]["bytesPerReading"] > 0:
            st = d["storage"]
            b = st["bytesPerReading"]
            rows.append(("LMDB ≤ 48 bytes per stored interval reading (%s)" % name,
                         "%.1f bytes/reading as stored (`intervals` database, %.0f %% of its "
                         "records' slots filled; %.1f once every record is full); %.1f for the "
                         "whole file. The records hold the values only: each block's "
                         "authenticated box is verified at ingest and not kept"
                         % (b, 100 * st["slotFill"], st["bytesPerReadingFull"],
                            st["fileBytesPerReading"]),
                         verdict(b <= 48, "" if b <= 48 else "%.1f bytes over as stored" % (b - 48))))
    d64, d1 = results["reads-c64"][0], results["reads-c1"][0]
    if d64 and "readsPerSecond" in d64:
        rate, p99 = d64["readsPerSecond"], d64["latencyUs"]["p99"]
        rows.append(("On-demand reads ≥ 3 000/s at concurrency 64 with p99 ≤ 10 ms",
                     "%s reads/s, p99 %s" % (k(rate), ms(p99)),
                     verdict(rate >= 3000 and p99 <= 10000,
                             "; ".join(x for x in (
                                 "%.0f %% of the rate" % (100 * rate / 3000) if rate < 3000 else "",
                                 "p99 %.1f × the bound" % (p99 / 10000) if p99 > 10000 else "") if x))))
    if d1 and "latencyUs" in d1:
        p50 = d1["latencyUs"]["p50"]
        rows.append(("A single on-demand read p50 ≤ 2 ms", "p50 %s" % ms(p50),
                     verdict(p50 <= 2000, "" if p50 <= 2000 else "%.2f ms over" % ((p50 - 2000) / 1000))))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--seconds", required=True, type=int)
    ap.add_argument("--started", required=True)
    ap.add_argument("--finished", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--raw", required=True)
    args = ap.parse_args()
    results = {name: load(args.work, name) for name in SCENARIOS}
    m = machine()
    out = ["# ami-bus benchmarks", "",
           "Written by `make bench` (tools/ami-load/bench.sh, BENCH_SECONDS=%d); every figure below "
           "comes from `ami-load` in that one run, and each is also given as a ratio to the one-hop "
           "CurveZMQ baseline measured in the same run, so that figures from a noisy or different "
           "machine can be compared. Raw results: `bench-results.json` next to this file." % args.seconds,
           "", "## Machine", "",
           "| | |", "|---|---|",
           "| CPUs (nproc) | %s |" % m["nproc"],
           "| CPU model | %s |" % m["model"],
           "| memory | %s |" % m["memory"],
           "| kernel | %s |" % m["kernel"],
           "| OS | %s |" % m["os"],
           "| date (UTC) | %s .. %s |" % (args.started, args.finished),
           "| source | %s |" % git(args.root),
           "| measured window | %d s per scenario |" % args.seconds,
           "",
           "Every service runs as its own process under supervisord, CURVE on every hop, "
           "end-to-end integrity on every block (per-meter XChaCha20-Poly1305 box, key from the "
           "meter's signing key and the MDMS's box key), durable LMDB commits (fdatasync) before "
           "every acknowledgement, log level warn.", ""]
    failures = [failure(n, *results[n]) for n in SCENARIOS
                if results[n][1] not in (0, None) or (results[n][0] is None and results[n][1] is None)]
    out += ["## Targets (issue 5)", "", "| target | measured | verdict |", "|---|---|---|"]
    for t in targets(results):
        out.append("| %s | %s | %s |" % t)
    out.append("")
    if failures:
        out += ["## Failures", ""] + ["- " + f for f in failures] + [""]
    out += ["## Baseline: one CurveZMQ hop", ""]
    b = results["baseline"][0]
    if b and "baseline" in b:
        out += ["`ami-load baseline --seconds 2`: " + baseline_line(b["baseline"]) + ".", ""]
    out += ["## Interval-data ingest", "",
            "`ami-load ingest` renders and starts a private deployment (2 head ends; the fleets in "
            "FLOOD mode: every meter pushes its load profile as fast as the chain's credit "
            "allows), measures the MDMS's committed readings over the window, stops the fleets "
            "(SIGUSR1), waits until every reading produced is stored, then counts the readings in "
            "the MDMS's LMDB itself (read-only) against what the fleets produced. Latency is the "
            "MDMS's histogram since it started: from the meter sealing a block to the block's "
            "durable commit.", ""]
    for name, title in (("ingest-10k", "10 000 meters (2 fleets, 2 aggregators)"),
                        ("ingest-100k", "100 000 meters (one fleet process, one aggregator)")):
        d = results[name][0]
        if d and d.get("command") == "ingest" and "window" in d:
            ingest_section(out, title, d)
        else:
            out += ["### " + title, "", failure(name, *results[name]), ""]
    out += ["## On-demand reads", "",
            "Against a private deployment of 200 meters (2 fleets, 2 aggregators, 2 head ends; the "
            "MDMS's read rate limits off; idle: its fleets made one block each and stopped), "
            "`ami-load read` keeps C reads in flight, never two to one meter.", "",
            "| command | throughput | p50 | p90 | p99 | max | failed | ratios (same run) |",
            "|---|---|---|---|---|---|---|---|"]
    for name in ("reads-c1", "reads-c64"):
        d = results[name][0]
        if d and d.get("command") == "read" and "latencyUs" in d:
            out.append(read_row(name, d))
        else:
            out.append("| %s | %s | | | | | | |" % (name, failure(name, *results[name])))
    out.append("")
    sc = results["security-cost"][0]
    c1 = results["reads-c1"][0]
    out += ["## What the end-to-end security costs", "",
            "`ami-load security-cost` times, in one process with the real code, every "
            "application-layer step of an on-demand read and of an interval block (the CURVE "
            "transport is in the baseline above). The layer cannot be switched off (ami-bus never "
            "falls back to plaintext), so a read \"without it\" is the measured p50 minus the "
            "steps on the read's critical path: an estimate.", ""]
    if sc and "read" in sc:
        r, bl = sc["read"], sc["block"]
        out += ["| step | µs |", "|---|---|",
                "| MDMS: encode + Ed25519-sign READ_REQ | %.1f |" % r["mdmsSignCommand"],
                "| meter: verify the command | %.1f |" % r["meterVerifyCommand"],
                "| meter: encode READING, seal (X25519), sign READ_RESP | %.1f |" % r["meterAnswer"],
                "| MDMS: verify, open, decode | %.1f |" % r["mdmsCheckAnswer"],
                "| **read critical path** | **%.1f** |" % r["criticalPath"],
                "| meter: encode + seal a block of %d intervals (XChaCha20-Poly1305) | %.2f |" % (bl["intervals"], bl["meterSeal"]),
                "| MDMS: open + decode it | %.2f |" % bl["mdmsOpen"],
                "| **per interval reading** | **%.3f** |" % bl["perReading"],
                "| once per meter, cached: profile key, meter / MDMS side | %.1f / %.1f |"
                % (sc["perMeterOnce"]["meterProfileKey"], sc["perMeterOnce"]["mdmsProfileKey"]), ""]
        if c1 and "latencyUs" in c1:
            p50 = c1["latencyUs"]["p50"]
            p99 = c1["latencyUs"]["p99"]
            cp = r["criticalPath"]
            out += ["On-demand read at concurrency 1: p50 %.2f ms with the application layer, about "
                    "%.2f ms without it (%.0f %% of the read); p99 %.2f ms with, about %.2f ms without." %
                    (p50 / 1e3, (p50 - cp) / 1e3, 100.0 * cp / p50 if p50 else 0, p99 / 1e3, (p99 - cp) / 1e3), ""]
        i100 = results["ingest-100k"][0]
        if i100 and "window" in i100:
            rate = i100["window"].get("readingsPerSecond")
            if rate:
                out += ["Interval ingest: the boxes cost %.3f µs of CPU per reading (meter and MDMS "
                        "together), %.1f %% of one core at the %.0f readings/s measured with "
                        "100 000 meters." % (bl["perReading"], bl["perReading"] * rate / 1e4, rate), ""]
    else:
        out += [failure("security-cost", *results["security-cost"]), ""]
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    with open(args.raw, "w") as f:
        json.dump({"machine": m, "seconds": args.seconds, "started": args.started,
                   "finished": args.finished,
                   "results": {n: {"exit": results[n][1], "result": results[n][0]} for n in SCENARIOS}},
                  f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
