#!/usr/bin/env python3
"""Many subjects: every stream on its own subject, publishes round robin.

Full: 10,000 streams over 10 TLS h2 connections, stream i on subject i,
1,000 messages/s round robin over the 10,000 subjects (each subject gets
one message every 10 s), 20 s; then 5,000 HTTP/1.1 connections the same
way (Pushpin joins). --quick: 2,000 streams over 2 h2 connections and
2,000 HTTP/1.1 connections, 1,000 msg/s, 5 s.

What it shows: the cost of many subscriptions (sluice holds one NATS
subscription per subject; nchan a channel; Pushpin a channel), as the time
to open every stream, RSS per stream, CPU per delivered event and latency.
"""
import sys, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def main():
    a = b.flags(sys.argv[1:])
    dur = 5 if a.quick else 20
    cases = [("h2", 2, 1000), ("h1", 2000, 1)] if a.quick else \
        [("h2", 10, 1000), ("h1", 5000, 1)]
    fleet = b.Fleet(a.peers)
    doc = {"scenario": "subjects", "quick": a.quick, "meta": b.meta(), "rows": []}
    for proto, c, s in cases:
        for name in fleet.names():
            n = c * s
            p = {"connections": c, "streams": s, "subjects": n, "rate": 1000, "payload": 100,
                 "duration": dur, "drain": 3, "open-timeout": 60}
            row = b.run_case(fleet, name, proto, p, timeout=dur + 120, fresh=True)
            if row is None:
                continue
            if "report" in row:
                after = row["report"]["servers"][name]["rss_kb_open"]
                row["rss_kb_per_stream"] = (after - row["rss_kb_before"]) / max(1, n)
            doc["rows"].append(row)
    doc["skipped"] = fleet.skipped
    fleet.stop_all()
    print_table(doc)
    b.save("subjects-quick" if a.quick else "subjects", doc)


def print_table(doc):
    rows, base = [], {}
    for r in doc["rows"]:
        if r["server"] == "sluice":
            base[r["proto"]] = r
    for r in doc["rows"]:
        lat = b.rget(r, "latency_ms") or {}
        cpu = b.rget(r, "servers", r["server"], "cpu_s_per_M_events")
        bs = base.get(r["proto"])
        rows.append([r["proto"], b.rget(r, "streams"), r["server"], b.rget(r, "streams_open"),
                     b.rget(r, "open_s"), r.get("rss_kb_per_stream"), b.rget(r, "events_per_s"),
                     b.rget(r, "delivered_ratio"), lat.get("p50"), lat.get("p99"), cpu,
                     b.rget(r, "client", "limited"),
                     None if r["server"] == "sluice" else
                     b.ratio(b.rget(bs, "servers", "sluice", "cpu_s_per_M_events"), cpu),
                     None if r["server"] == "sluice" else
                     b.ratio(bs.get("rss_kb_per_stream") if bs else None, r.get("rss_kb_per_stream"))])
    print(b.table(["proto", "streams", "server", "open", "open s", "KiB/stream", "events/s",
                   "delivered", "p50 ms", "p99 ms", "cpu s/M ev", "client-bound", "cpu ratio",
                   "KiB ratio"], rows))
    for k, v in doc.get("skipped", {}).items():
        print("skipped %s: %s" % (k, v))


if __name__ == "__main__":
    main()
