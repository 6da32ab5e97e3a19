#!/usr/bin/env python3
"""A million streams on one gateway: time to open, RSS per stream, and one
round of events to all of them.

Full: 250 TLS h2 connections x 4,000 streams = 1,000,000 streams on 1,000
subjects (stream i listens on subject i mod 1,000), one client process.
--quick: 25 x 4,000 = 100,000 streams on 100 subjects. sluice only: nchan
holds about 10 KiB per idle stream (bench/idle.py), 10 GB for a million.

The gateway runs with --stream-rate 100000 and --max-streams-total 0: the
default 1,000 new streams per second per connection is a per-client abuse
limit, and the default process-wide cap of 250,000 streams would refuse
three quarters of them; this measures how fast the gateway itself opens
and holds streams. Once every stream is open the
gateway's RSS and CPU are read; then one round is published: one 100-byte
message per subject, all at once (--rate 100000 --messages SUBJECTS), so
every stream gets exactly one event. Latency is publish -> event at the
client (p50/p99/max: max is the round's length). CPU: the gateway's
during the open and during the round, the client's during the round.
Bounded: open-timeout 300 s, drain 60 s.
"""
import sys, os, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def gw_sample(srv):
    cpu = rss = 0
    for pid in srv.pids():
        try:
            c, r = b.proc_sample(pid)
        except (OSError, ValueError):
            continue
        cpu, rss = cpu + c, rss + r
    return cpu, rss


def main():
    def extra(ap):
        ap.add_argument("--conns", type=int, help="connections (default 250; quick 25)")
        ap.add_argument("--streams", type=int, default=4000, help="streams per connection")
        ap.add_argument("--subjects", type=int, help="subjects (default streams / 1,000)")
    a = b.flags(sys.argv[1:], extra)
    conns = a.conns or (25 if a.quick else 250)
    total = conns * a.streams
    subjects = a.subjects or max(1, total // 1000)
    flags = ["--stream-rate", "100000", "--max-streams-total", "0"]
    fleet = b.Fleet([], sluice_extra=flags)
    srv = fleet.start("sluice", fresh=True)
    b.run_case(fleet, "sluice", "h2", {"connections": 1, "streams": 1, "duration": 0.2,
                                       "drain": 0}, timeout=30)
    time.sleep(1)
    cpu0, rss0 = gw_sample(srv)
    tmp = b.tempdir("sluice-bench-million-")
    ready = os.path.join(tmp, "ready")
    seen = {}

    def watch():
        end = time.monotonic() + 320
        while not os.path.exists(ready) and time.monotonic() < end:
            time.sleep(0.02)
        seen["cpu"], seen["rss"] = gw_sample(srv)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    params = {"connections": conns, "streams": a.streams, "subjects": subjects,
              "rate": 100000, "messages": subjects, "duration": 2, "drain": 60,
              "open-timeout": 300, "settle": 1, "ready-file": ready, "hist": True}
    row = b.run_case(fleet, "sluice", "h2", params, timeout=420)
    t.join(timeout=5)
    row["rss_kb_before"] = rss0
    doc = {"scenario": "million", "quick": a.quick, "meta": b.meta(), "rows": [row],
           "gateway_flags": flags}
    r = row.get("report")
    if r:
        n = r["streams_open"] or 1
        row["rss_kb_open"] = seen.get("rss")
        row["bytes_per_stream"] = ((seen.get("rss") or 0) - rss0) * 1024 / n
        row["gateway_open_cpu_s"] = (seen.get("cpu") or cpu0) - cpu0
        s = r["servers"]["sluice"]
        if r["server_ended"] or r["expected"] != r["streams_open"] * 1:
            b.log("WARNING: %d streams ended by the gateway, %d of %d expected events: "
                  "not every stream was held" % (r["server_ended"], r["expected"],
                                                  r["streams_open"]))
        lat = r["latency_ms"]
        print(b.table(["streams", "open", "open s", "gw CPU open s", "B/stream", "events",
                       "expected", "p50 ms", "p99 ms", "max ms", "gw CPU round s",
                       "client CPU round s", "load", "commit"],
                      [[total, r["streams_open"], r["open_s"], row["gateway_open_cpu_s"],
                        row["bytes_per_stream"], r["events"], r["expected"], lat.get("p50"),
                        lat.get("p99"), lat.get("max"), s.get("cpu_s"), r["client"]["cpu_s"],
                        row["loadavg_1m"], doc["meta"].get("commit")]]))
    fleet.stop_all()
    b.save("million-quick" if a.quick else "million", doc)


if __name__ == "__main__":
    main()
