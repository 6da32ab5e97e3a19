#!/usr/bin/env python3
"""Idle: memory held per open stream and per connection.

Full: 50,000 streams over 50 TLS h2 connections (1,000 each), and 5,000
connections with one stream each (TLS h2; then cleartext HTTP/1.1, where
Pushpin joins). --quick: 10,000 streams over 10 connections, and 1,000
connections.

Each server is started fresh for each case, warmed with one stream, and its
RSS read from /proc/PID/status (summed over its processes: nginx's master
and workers, Pushpin's condure, proxy, handler and zurl). Then the streams
are opened and held with nothing published; RSS is read again once every
stream has its 200. (RSS after - RSS before) / streams is the figure; for
the one-stream-per-connection cases it is per connection (TLS state,
buffers, the HTTP/2 session). The client uses one process: 5,000
connections fit the 20,000 open files a process may have here.
"""
import sys, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def main():
    a = b.flags(sys.argv[1:])
    mux = (10, 1000) if a.quick else (50, 1000)
    conns = 1000 if a.quick else 5000
    cases = [("h2", mux[0], mux[1]), ("h2", conns, 1), ("h1", conns, 1)]
    fleet = b.Fleet(a.peers)
    doc = {"scenario": "idle", "quick": a.quick, "meta": b.meta(), "rows": []}
    for proto, c, s in cases:
        for name in fleet.names():
            srv = fleet.start(name, fresh=True)
            if srv is None or fleet.client_args(srv, proto) is None:
                continue
            # Warm-up: the first connection allocates TLS, nghttp2 and
            # thread caches that every later one shares.
            b.run_case(fleet, name, proto, {"connections": 1, "streams": 1, "duration": 0.2,
                                            "drain": 0}, timeout=30)
            p = {"connections": c, "streams": s, "duration": 3 if not a.quick else 1,
                 "drain": 0, "open-timeout": 60}
            row = b.run_case(fleet, name, proto, p, timeout=120)
            if not row or "report" not in row:
                if row:
                    doc["rows"].append(row)
                continue
            r = row["report"]
            after = r["servers"][name]["rss_kb_window"]
            n = r["streams_open"] or 1
            row["rss_kb_per_stream"] = (after - row["rss_kb_before"]) / n
            doc["rows"].append(row)
    doc["skipped"] = fleet.skipped
    fleet.stop_all()
    print_table(doc)
    b.save("idle-quick" if a.quick else "idle", doc)


def print_table(doc):
    rows = []
    base = {}
    for r in doc["rows"]:
        key = (r["proto"], r["params"]["connections"], r["params"]["streams"])
        if r["server"] == "sluice":
            base[key] = r.get("rss_kb_per_stream")
    for r in doc["rows"]:
        key = (r["proto"], r["params"]["connections"], r["params"]["streams"])
        per = r.get("rss_kb_per_stream")
        rows.append([r["proto"], key[1], key[2], r["server"], b.rget(r, "streams_open"),
                     b.rget(r, "open_s"), r["rss_kb_before"] / 1024,
                     (b.rget(r, "servers", r["server"], "rss_kb_window") or 0) / 1024, per,
                     None if r["server"] == "sluice" else b.ratio(base.get(key), per),
                     r.get("error")])
    print(b.table(["proto", "conns", "streams/conn", "server", "open", "open s", "RSS before MiB",
                   "RSS open MiB", "KiB per stream", "ratio", "error"], rows))
    for k, v in doc.get("skipped", {}).items():
        print("skipped %s: %s" % (k, v))


if __name__ == "__main__":
    main()
