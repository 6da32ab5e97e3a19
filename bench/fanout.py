#!/usr/bin/env python3
"""Fan-out: one subject, many streams, fixed publish rates.

Full: 1,000 and 10,000 streams over 10 TLS h2 connections, 100-byte
payloads at 100 and 1,000 messages/s, 20 s each; sluice against nchan (h2).
Then 1,000 HTTP/1.1 connections (one stream each) at 100 messages/s, 20 s:
sluice's cleartext listener against nchan and Pushpin.
--quick: 1,000 h2 streams at 100 and 1,000 msg/s for 4 s, and 300 HTTP/1.1
streams at 100 msg/s for 4 s.
--case STREAMSxRATE (repeatable) runs only those h2 cases, for --duration
seconds (default 20, or 4 with --quick), saved as fanout-<STREAMSxRATE,...>:
the CPU-per-event figure of issue 16 is `--peers nchan --case 1000x1000`
(1,000 streams, each sent 1,000 events/s over TLS h2, beside nginx+nchan).

Per run: messages the server took per second (an HTTP publisher waits for
each answer, so a server that answers late takes fewer than asked),
delivered events/s and the share of expected deliveries (messages taken x
streams), latency
percentiles (publisher clock to parsed event), gateway CPU seconds per
million delivered events (sluice's own; nats-server's beside it), client
CPU, and whether the client was the limit. Ratios are sluice/peer from the
same run of this script. Each run gets freshly started servers: a peer
still fanning out a backlog from the run before would spoil the next.
"""
import sys, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def main():
    a = b.flags(sys.argv[1:], lambda ap: (ap.add_argument("--case", action="append", default=[]),
                                          ap.add_argument("--duration", type=float, default=None)))
    dur = a.duration or (4 if a.quick else 20)
    h2_cases = [(1000, 100), (1000, 1000)] if a.quick else \
        [(1000, 100), (1000, 1000), (10000, 100), (10000, 1000)]
    h1_cases = [(300, 100)] if a.quick else [(1000, 100)]
    if a.case:
        h2_cases = [tuple(int(x) for x in c.split("x")) for c in a.case]
        h1_cases = []
    fleet = b.Fleet(a.peers)
    doc = {"scenario": "fanout", "quick": a.quick, "meta": b.meta(), "rows": []}
    for streams, rate in h2_cases:
        for name in fleet.names():
            p = {"connections": 10, "streams": streams // 10, "rate": rate, "payload": 100,
                 "duration": dur, "drain": 3}
            row = b.run_case(fleet, name, "h2", p, timeout=dur + 60, fresh=True)
            if row:
                doc["rows"].append(row)
    for conns, rate in h1_cases:
        for name in fleet.names():
            p = {"connections": conns, "rate": rate, "payload": 100, "duration": dur, "drain": 3}
            row = b.run_case(fleet, name, "h1", p, timeout=dur + 60, fresh=True)
            if row:
                doc["rows"].append(row)
    doc["skipped"] = fleet.skipped
    fleet.stop_all()
    print_table(doc)
    if a.case:
        b.save("fanout-" + ",".join(a.case), doc)
    else:
        b.save("fanout-quick" if a.quick else "fanout", doc)


def cpu_per_m(row, name):
    return b.rget(row, "servers", name, "cpu_s_per_M_events")


def client_us(row):
    """The client's CPU (all its threads) per delivered event, in µs (= s per million)."""
    cpu, ev = b.rget(row, "client", "cpu_s"), b.rget(row, "events")
    return round(cpu / ev * 1e6, 3) if cpu is not None and ev else None


def print_table(doc):
    rows = []
    by_case = {}
    for r in doc["rows"]:
        key = (r["proto"], b.rget(r, "streams"), r["params"]["rate"])
        by_case.setdefault(key, {})[r["server"]] = r
    for (proto, streams, rate), servers in by_case.items():
        base = servers.get("sluice")
        for name, r in servers.items():
            lat = b.rget(r, "latency_ms") or {}
            cpu = cpu_per_m(r, name)
            rows.append([proto, streams, rate, name, b.rget(r, "pub_rate"), b.rget(r, "events_per_s"),
                         b.rget(r, "delivered_ratio"), lat.get("p50"), lat.get("p99"),
                         lat.get("p999"), lat.get("max"), cpu,
                         cpu_per_m(r, "nats") if name == "sluice" else None,
                         b.rget(r, "client", "main_thread_share"), client_us(r),
                         b.rget(r, "client", "limited"),
                         None if name == "sluice" else b.ratio(cpu_per_m(base, "sluice"), cpu),
                         None if name == "sluice" or not base else
                         b.ratio((b.rget(base, "latency_ms") or {}).get("p99"), lat.get("p99"))])
    print(b.table(["proto", "streams", "msg/s", "server", "taken/s", "events/s", "delivered",
                   "p50 ms",
                   "p99 ms", "p99.9 ms", "max ms", "cpu s/M ev", "nats s/M", "client cpu",
                   "client s/M ev",
                   "client-bound", "cpu ratio", "p99 ratio"], rows))
    for k, v in doc.get("skipped", {}).items():
        print("skipped %s: %s" % (k, v))


if __name__ == "__main__":
    main()
