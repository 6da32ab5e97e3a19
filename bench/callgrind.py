#!/usr/bin/env python3
"""Instructions per delivered event, counted by valgrind's callgrind: a
figure that does not move with the load of a shared machine.

Each gateway runs alone under callgrind in one process (sluice with
--workers 1; nginx with master_process off and one worker), serving 100
TLS h2 streams over 4 connections on one subject (--streams, default 100),
10 messages/s of 100 bytes (--rate; valgrind slows everything about 50
times, and this load stays well inside what both keep up with there).
More streams per message amortize the per-message work (NATS receive and
encoding for sluice, the POST for nchan) over more deliveries. Two runs differ only in duration
(--short and --long seconds of publishing); each server is started
fresh for each and stopped gracefully so callgrind writes its totals. The
difference in instructions over the difference in delivered events is the
cost of one delivered event, with start-up, handshakes and stream opening
cancelled out. Publishing is each one's native way: sluice receives from
NATS (nats-server is not counted), nchan parses an HTTP POST.

--keep DIR copies each run's callgrind files to DIR/<server>-<seconds>s/,
for a per-function breakdown: `callgrind_annotate --inclusive=no` on the
long run's file, minus the short run's, is the cost of the extra events.
"""
import glob
import os
import re
import shutil
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def total_ir(outdir):
    """Sum of 'summary:' or 'totals:' over every callgrind file (one per
    thread or process)."""
    tot = 0
    for f in glob.glob(os.path.join(outdir, "callgrind.out*")):
        with open(f) as fh:
            text = fh.read()
        m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if m:
            tot += int(m.group(1))
    return tot


def one(fleet, name, seconds, keep=None):
    d = b.tempdir("sluice-bench-cg-")
    wrap = ["valgrind", "--tool=callgrind", "--separate-threads=no",
            "--callgrind-out-file=%s/callgrind.out.%%p" % d]
    if name == "sluice":
        s = b.start_sluice(fleet.nats, fleet.crt, ["--workers", "1", "--drain-ms", "100"],
                           plain=False, wrap=wrap)
    else:
        s = b.start_nchan(fleet.crt, 0, wrap=wrap)
    args = fleet.client_args(s, "h2")
    p = {"connections": 4, "streams": fleet.streams // 4, "rate": fleet.rate, "payload": 100,
         "duration": seconds, "drain": 5, "open-timeout": 60}
    flat = []
    for k, v in p.items():
        flat += ["--" + k, v]
    r = b.bench(args + flat, timeout=seconds + 120, label="callgrind %s %ss" % (name, seconds))
    b.stop(s.proc, sig=signal.SIGTERM if name == "sluice" else signal.SIGQUIT, timeout=60)
    ir = total_ir(d)
    if keep:
        dst = os.path.join(keep, "%s-%gs" % (name, seconds))
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(d, dst)
    b.log("%s %ss: %d events, %d instructions" % (name, seconds, r["events"], ir))
    return r["events"], ir, r


def main():
    a = b.flags(sys.argv[1:], lambda ap: (ap.add_argument("--short", type=float, default=3),
                                          ap.add_argument("--long", type=float, default=9),
                                          ap.add_argument("--streams", type=int, default=100),
                                          ap.add_argument("--rate", type=float, default=10),
                                          ap.add_argument("--keep", default=None)))
    if not b.shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind)")
        return
    fleet = b.Fleet([])
    fleet.streams, fleet.rate = a.streams, a.rate
    doc = {"scenario": "callgrind", "meta": b.meta(), "streams": a.streams, "rate": a.rate,
           "results": {}}
    names = ["sluice"] + [p for p in a.peers if p == "nchan"]
    if "nchan" in names:
        why = b.ensure_packages(["nginx", "libnginx-mod-nchan"])
        if why:
            names.remove("nchan")
            doc["skipped"] = {"nchan": why}
    for name in names:
        e1, i1, _ = one(fleet, name, a.short, a.keep)
        e2, i2, r2 = one(fleet, name, a.long, a.keep)
        per = (i2 - i1) / (e2 - e1) if e2 > e1 else None
        doc["results"][name] = {"events_short": e1, "events_long": e2, "ir_short": i1,
                                "ir_long": i2, "ir_per_event": per,
                                "delivered_ratio_long": r2["delivered_ratio"]}
    rows = []
    base = doc["results"]["sluice"]["ir_per_event"]
    for name, v in doc["results"].items():
        rows.append([name, v["events_long"] - v["events_short"], v["ir_per_event"],
                     None if name == "sluice" else b.ratio(base, v["ir_per_event"])])
    print(b.table(["server", "events (difference)", "instructions/event", "ratio"], rows))
    b.save("callgrind-%ds" % a.streams, doc)


if __name__ == "__main__":
    main()
