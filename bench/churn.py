#!/usr/bin/env python3
"""Churn: streams closed and reopened at a fixed rate, resuming with
Last-Event-ID, while messages flow.

Full: 1,000 streams over 10 TLS h2 connections on one subject, 100
messages/s, 100 streams closed (RST_STREAM CANCEL) and reopened per second
with their last id, 20 s; then 300 HTTP/1.1 connections with 50
close-and-reconnects per second. --quick: the same for 5 s.

What it shows: the cost of opening streams (CPU per delivered event with
churn included), time to first event after a reopen (the replay from
history), and correctness under churn: every event is seq-numbered per
subject, so gaps and duplicates are counted per stream across reopens.
Pushpin has no history of its own (the GRIP origin would have to replay),
so its gaps are expected and reported, not a fault.

The churn rate stays below nghttp2's rapid-reset limit that sluice enables
(33 resets/s per connection after a burst of 1,000): a client that cancels
faster is sent GOAWAY, which is the point of that limit.
"""
import sys, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def main():
    a = b.flags(sys.argv[1:])
    dur = 5 if a.quick else 20
    fleet = b.Fleet(a.peers)
    doc = {"scenario": "churn", "quick": a.quick, "meta": b.meta(), "rows": []}
    cases = [("h2", {"connections": 10, "streams": 100, "churn": 100}),
             ("h1", {"connections": 300, "churn": 50})]
    for proto, p in cases:
        for name in fleet.names():
            q = dict(p, rate=100, payload=100, duration=dur, drain=3)
            row = b.run_case(fleet, name, proto, q, timeout=dur + 60, fresh=True)
            if row:
                doc["rows"].append(row)
    doc["skipped"] = fleet.skipped
    fleet.stop_all()
    print_table(doc)
    b.save("churn-quick" if a.quick else "churn", doc)


def print_table(doc):
    rows, base = [], {}
    for r in doc["rows"]:
        if r["server"] == "sluice":
            base[r["proto"]] = r
    for r in doc["rows"]:
        lat = b.rget(r, "latency_ms") or {}
        tt = b.rget(r, "ttfe_ms") or {}
        cpu = b.rget(r, "servers", r["server"], "cpu_s_per_M_events")
        rows.append([r["proto"], r["server"], b.rget(r, "churned"), b.rget(r, "reopened"),
                     b.rget(r, "events_per_s"), b.rget(r, "delivered_ratio"), b.rget(r, "gaps"),
                     b.rget(r, "dups"), tt.get("p50"), tt.get("p99"), lat.get("p99"), cpu,
                     b.rget(r, "client", "limited"),
                     None if r["server"] == "sluice" else
                     b.ratio(b.rget(base.get(r["proto"]), "servers", "sluice",
                                    "cpu_s_per_M_events"), cpu)])
    print(b.table(["proto", "server", "churned", "reopened", "events/s", "delivered", "gaps",
                   "dups", "ttfe p50 ms", "ttfe p99 ms", "p99 ms", "cpu s/M ev", "client-bound",
                   "cpu ratio"], rows))
    for k, v in doc.get("skipped", {}).items():
        print("skipped %s: %s" % (k, v))


if __name__ == "__main__":
    main()
