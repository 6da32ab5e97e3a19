#!/usr/bin/env python3
"""Saturation: the highest publish rate delivered to 1,000 streams.

1,000 streams over 10 TLS h2 connections, one subject, 100-byte payloads.
The rate doubles from 50 messages/s, each step a fresh run of --step
seconds (default 5; --quick 2), until a step is not sustained: fewer than
99 % of the expected deliveries (published x streams) arrive within a 1 s
drain, or p99 latency passes 250 ms (delivery backing up), or the
publisher cannot keep the rate (the server takes publishes too slowly:
nchan answers a POST only after fanning it out; or the publisher thread
is out of CPU, a client limit). After the first failed step, one step at
1.5 x the last good rate narrows the bound. The highest sustained rate is
reported with the step that failed and why; when the client's main thread
was at >= 90 % of a core there, the client, not the server, was the limit
and the figure is a lower bound for the server.
"""
import sys, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

P99_LIMIT_MS = 250
RATIO_MIN = 0.99


def step_ok(r):
    if r is None or "report" not in r:
        return False, "run failed"
    rep = r["report"]
    if r.get("server_died") is not None:
        return False, "server died (exit %s)" % r["server_died"]
    if rep["pub_behind"]:
        pub_share = rep["client"]["pub_cpu_s"] / max(rep["duration_s"], 1e-9)
        if pub_share >= 0.8:
            return False, "publisher thread CPU-bound at %.0f/s (client limit)" % rep["pub_rate"]
        return False, "server took only %.0f publishes/s" % rep["pub_rate"]
    if rep["delivered_ratio"] < RATIO_MIN:
        return False, "delivered %.3f of expected" % rep["delivered_ratio"]
    p99 = rep["latency_ms"].get("p99", 0)
    if p99 > P99_LIMIT_MS:
        return False, "p99 %.0f ms" % p99
    return True, ""


def main():
    a = b.flags(sys.argv[1:], lambda ap: ap.add_argument("--step", type=float, default=None))
    step = a.step or (2 if a.quick else 5)
    max_steps = 10 if a.quick else 12
    fleet = b.Fleet(a.peers)
    doc = {"scenario": "saturation", "quick": a.quick, "meta": b.meta(), "rows": [],
           "results": {}}
    for name in fleet.names():
        if fleet.start(name) is None or fleet.client_args(fleet.servers[name], "h2") is None:
            continue
        rate, best, fail, refined = 50, None, None, False
        for _ in range(max_steps):
            p = {"connections": 10, "streams": 100, "rate": rate, "payload": 100,
                 "duration": step, "drain": 1}
            row = b.run_case(fleet, name, "h2", p, timeout=step + 40, fresh=True)
            if row is None:
                break
            ok, why = step_ok(row)
            row["sustained"], row["why"] = ok, why
            doc["rows"].append(row)
            if ok:
                best = row
                if refined:
                    break
                rate *= 2
                continue
            fail = {"rate": rate, "why": why,
                    "client_bound": bool(b.rget(row, "client", "limited"))}
            # One step between the last good rate and the failed one.
            if refined or best is None:
                break
            refined = True
            rate = best["params"]["rate"] * 3 // 2
        doc["results"][name] = {
            "sustained_rate": best["params"]["rate"] if best else None,
            "events_per_s": b.rget(best, "events_per_s") if best else None,
            "cpu_s_per_M_events": b.rget(best, "servers", name, "cpu_s_per_M_events")
            if best else None,
            "failed_at": fail}
    doc["skipped"] = fleet.skipped
    fleet.stop_all()
    print_table(doc)
    b.save("saturation-quick" if a.quick else "saturation", doc)


def print_table(doc):
    rows = []
    for r in doc["rows"]:
        lat = b.rget(r, "latency_ms") or {}
        rows.append([r["server"], r["params"]["rate"], b.rget(r, "pub_rate"),
                     b.rget(r, "events_per_s"), b.rget(r, "delivered_ratio"), lat.get("p99"),
                     b.rget(r, "servers", r["server"], "cpu_share"),
                     b.rget(r, "client", "main_thread_share"), b.rget(r, "client", "limited"),
                     "yes" if r.get("sustained") else "no: " + r.get("why", "")])
    print(b.table(["server", "rate", "published/s", "events/s", "delivered", "p99 ms",
                   "server cores", "client cpu", "client-bound", "sustained"], rows))
    res = doc["results"]
    base = (res.get("sluice") or {}).get("sustained_rate")
    for name, v in res.items():
        f = v["failed_at"]
        print("%-8s highest sustained %s msg/s x 1000 streams%s%s" % (
            name, b.fmt(v["sustained_rate"]),
            "; failed at %d: %s%s" % (f["rate"], f["why"],
                                     " (client-bound: a lower bound)" if f["client_bound"] else "")
            if f else " (no failure within the steps run)",
            "" if name == "sluice" else "; ratio sluice/%s %s" % (
                name, b.fmt(b.ratio(base, v["sustained_rate"])))))
    for k, v in doc.get("skipped", {}).items():
        print("skipped %s: %s" % (k, v))


if __name__ == "__main__":
    main()
