#!/usr/bin/env python3
"""Idle: memory held per open stream and per connection, and what a burst leaves.

Full: 50,000 streams over 50 TLS h2 connections (1,000 each), and 5,000
connections with one stream each (TLS h2; then cleartext HTTP/1.1, where
Pushpin joins). --quick: 10,000 streams over 10 connections, and 1,000
connections. --conns N sets the one-stream-per-connection count.

Each server is started fresh for each case, warmed with one stream, and its
RSS read from /proc/PID/status (summed over its processes: nginx's master
and workers, Pushpin's condure, proxy, handler and zurl). Then the streams
are opened and held with nothing published; RSS is read again once every
stream has its 200. (RSS after - RSS before) / streams is the figure; for
the one-stream-per-connection cases it is per connection (TLS state,
buffers, the HTTP/2 session). The client uses one process: 5,000
connections fit the 20,000 open files a process may have here.

The TLS h2 one-stream-per-connection case goes on: a burst of 20 events of
8 KB to every stream (20 messages on the one subject every stream
watches, published as fast as the publisher can), read by every client;
the highest RSS seen while it drains ("peak"), RSS right after the last
event arrived ("burst end"), and again --hold seconds later ("held": what
the burst left behind, the figure that sizes a fleet whose browsers see
bursts). Kernel memory: the slab (/proc/meminfo: socket, inode, file and
epoll objects) with the idle connections open, and the highest TCP buffer
memory during the burst (/proc/net/sockstat "mem", pages), both per
loopback connection pair (both ends are on this machine).
"""
import sys, os, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

BURST_EVENTS = 20
BURST_BYTES = 8192


def sockstat():
    """(TCP sockets in use, TCP memory pages) from /proc/net/sockstat."""
    with open("/proc/net/sockstat") as f:
        for ln in f:
            if ln.startswith("TCP:"):
                v = ln.split()
                return int(v[v.index("inuse") + 1]), int(v[v.index("mem") + 1])
    return None, None


def slab_kb():
    """The kernel's slab memory (socket, inode, file and epoll objects), KiB,
    from /proc/meminfo: machine-wide, so only a large delta means anything."""
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith("Slab:"):
                return int(ln.split()[1])
    return None


def watch_ready(path, srv, out, done):
    """Once the window starts (path written, the burst about to go out): the
    server's RSS and the kernel's slab memory; then, until done is set, the
    highest RSS and TCP memory seen (every 0.1 s) while the burst drains."""
    deadline = time.monotonic() + 300
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not os.path.exists(path):
        return
    out["rss_kb_idle"] = out["rss_kb_peak"] = srv.rss_kb()
    out["tcp_inuse"], out["tcp_mem_pages_peak"] = sockstat()
    out["slab_kb"] = slab_kb()
    while not done.wait(0.1):
        out["rss_kb_peak"] = max(out["rss_kb_peak"], srv.rss_kb())
        out["tcp_mem_pages_peak"] = max(out["tcp_mem_pages_peak"], sockstat()[1])


def main():
    def extra(ap):
        ap.add_argument("--conns", type=int, help="one-stream connections (default 5,000; quick 1,000)")
        ap.add_argument("--hold", type=float, default=5.0,
                        help="seconds after the burst before RSS is read again (default 5)")
    a = b.flags(sys.argv[1:], extra)
    mux = (10, 1000) if a.quick else (50, 1000)
    conns = a.conns or (1000 if a.quick else 5000)
    cases = [("h2", mux[0], mux[1], False), ("h2", conns, 1, True), ("h1", conns, 1, False)]
    fleet = b.Fleet(a.peers)
    doc = {"scenario": "idle", "quick": a.quick, "meta": b.meta(), "rows": [],
           "burst": {"events": BURST_EVENTS, "bytes": BURST_BYTES, "hold_s": a.hold}}
    tmp = b.tempdir("sluice-bench-idle-")
    for proto, c, s, burst in cases:
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
            seen = {}
            if burst:
                ready = os.path.join(tmp, "ready-%s-%d" % (name, c))
                # Every stream watches subject 0: 20 messages are 20 events each.
                p.update({"rate": 1000, "messages": BURST_EVENTS, "payload": BURST_BYTES,
                          "duration": 30, "drain": 60, "hold": a.hold, "ready-file": ready})
                seen["tcp_inuse_before"], seen["tcp_mem_pages_before"] = sockstat()
                seen["slab_kb_before"] = slab_kb()
                done = threading.Event()
                t = threading.Thread(target=watch_ready, args=(ready, srv, seen, done), daemon=True)
                t.start()
            row = b.run_case(fleet, name, proto, p, timeout=180 + (a.hold if burst else 0))
            if burst:
                done.set()
                t.join(timeout=5)
            if not row or "report" not in row:
                if row:
                    doc["rows"].append(row)
                continue
            row.update(seen)
            r = row["report"]
            n = r["streams_open"] or 1
            before = row["rss_kb_before"]
            if burst:
                row["burst"] = True
                idle = seen.get("rss_kb_idle") or r["servers"][name]["rss_kb_window"]
                row["rss_kb_per_stream"] = (idle - before) / n
                row["rss_kb_per_conn_peak"] = (seen.get("rss_kb_peak", before) - before) / n
                row["rss_kb_per_conn_burst"] = (r["servers"][name]["rss_kb_end"] - before) / n
                held = r["servers"][name].get("rss_kb_held")
                row["rss_kb_per_conn_held"] = (held - before) / n if held else None
                if seen.get("tcp_mem_pages_peak") is not None:
                    # Both ends are on this machine: per connection is per socket pair.
                    row["tcp_kb_per_conn_pair_peak"] = \
                        (seen["tcp_mem_pages_peak"] - seen["tcp_mem_pages_before"]) * 4 / n
                if seen.get("slab_kb") is not None:
                    row["kernel_slab_kb_per_conn_pair"] = \
                        (seen["slab_kb"] - seen["slab_kb_before"]) / n
            else:
                row["rss_kb_per_stream"] = (r["servers"][name]["rss_kb_window"] - before) / n
            doc["rows"].append(row)
    doc["skipped"] = fleet.skipped
    fleet.stop_all()
    print_table(doc)
    b.save("idle-quick" if a.quick else "idle", doc)


def print_table(doc):
    rows = []
    base = {}

    def key(r):
        return (r["proto"], r["params"]["connections"], r["params"]["streams"])
    for r in doc["rows"]:
        if r["server"] == "sluice":
            base[key(r)] = r
    for r in doc["rows"]:
        per = r.get("rss_kb_per_stream")
        sl = base.get(key(r), {})
        rows.append([r["proto"], key(r)[1], key(r)[2], r["server"], b.rget(r, "streams_open"),
                     b.rget(r, "open_s"), r["rss_kb_before"] / 1024, per,
                     None if r["server"] == "sluice" else b.ratio(per, sl.get("rss_kb_per_stream")),
                     r.get("rss_kb_per_conn_peak"), r.get("rss_kb_per_conn_burst"),
                     r.get("rss_kb_per_conn_held"),
                     None if r["server"] == "sluice" else
                     b.ratio(r.get("rss_kb_per_conn_held"), sl.get("rss_kb_per_conn_held")),
                     r.get("tcp_kb_per_conn_pair_peak"), r.get("kernel_slab_kb_per_conn_pair"),
                     r.get("loadavg_1m"), r.get("error")])
    print(b.table(["proto", "conns", "streams/conn", "server", "open", "open s", "RSS before MiB",
                   "KiB/stream idle", "peer/sluice", "KiB/conn peak", "KiB/conn burst end",
                   "KiB/conn held", "peer/sluice held", "TCP KiB/pair peak", "slab KiB/pair", "load", "error"],
                  rows))
    print("commit %s, %s" % (doc["meta"].get("commit"), doc["meta"].get("date")))
    for k, v in doc.get("skipped", {}).items():
        print("skipped %s: %s" % (k, v))


if __name__ == "__main__":
    main()
