#!/usr/bin/env python3
"""Connections: memory per idle TLS h2 connection at 20,000-connection
scale, sluice beside nginx+nchan, and the extrapolation to 100,000 browsers.

A process here may hold at most 20,000 open files (ulimit -n), the gateway
included, so the full run opens 19,800 connections (--conns) with one idle
stream each, spread over --clients sluice-bench processes (4 by default).
Each server is started fresh, warmed with one stream, and its RSS read;
then every client opens its share and, once all of them are in their
window (ready files), the server's RSS, /proc/net/sockstat (TCP memory
pages) and the kernel's slab memory (/proc/meminfo) are read. Per
connection = (after - before) / connections open. The 100,000-browser
figure is before + 100,000 x per connection (user space), plus the
kernel's share per connection measured here (one end's half of the
loopback pair's slab delta).

--quick: 2,000 connections over 2 clients. Bounded: each client runs for
at most open-timeout (300 s) + hold + 5 s.
"""
import sys, os, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402
import idle  # noqa: E402  (sockstat, slab_kb)

BROWSERS = 100000


def main():
    def extra(ap):
        ap.add_argument("--conns", type=int, help="connections (default 19,800; quick 2,000)")
        ap.add_argument("--clients", type=int, help="client processes (default 4; quick 2)")
    a = b.flags(sys.argv[1:], extra)
    conns = a.conns or (2000 if a.quick else 19800)
    clients = a.clients or (2 if a.quick else 4)
    fleet = b.Fleet([p for p in a.peers if p == "nchan"])
    doc = {"scenario": "connections", "quick": a.quick, "meta": b.meta(), "rows": [],
           "browsers": BROWSERS}
    tmp = b.tempdir("sluice-bench-conns-")
    for name in fleet.names():
        srv = fleet.start(name, fresh=True)
        if srv is None:
            continue
        b.run_case(fleet, name, "h2", {"connections": 1, "streams": 1, "duration": 0.2,
                                       "drain": 0}, timeout=30)
        time.sleep(1)
        row = {"server": name, "connections": conns, "clients": clients,
               "loadavg_1m": round(os.getloadavg()[0], 2), "rss_kb_before": srv.rss_kb()}
        tcp0, mem0 = idle.sockstat()
        slab0 = idle.slab_kb()
        base = fleet.client_args(srv, "h2")
        procs, readies = [], []
        hold = 8
        t0 = time.monotonic()
        for i in range(clients):
            n = conns // clients + (1 if i < conns % clients else 0)
            ready = os.path.join(tmp, "ready-%s-%d" % (name, i))
            readies.append(ready)
            args = [b.binary("SLUICE_BENCH", "bench/sluice-bench")] + base + [
                "--connections", n, "--streams", 1, "--rate", 0, "--open-timeout", 300,
                "--duration", hold, "--drain", 0, "--ready-file", ready,
                "--label", "%s client %d" % (name, i)]
            procs.append(b.spawn([str(x) for x in args], stdout=b.subprocess.PIPE,
                                 stderr=b.subprocess.PIPE))
        deadline = time.monotonic() + 320
        while time.monotonic() < deadline and not all(os.path.exists(r) for r in readies):
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.1)
        row["open_s"] = time.monotonic() - t0
        row["rss_kb_open"] = srv.rss_kb()
        tcp1, mem1 = idle.sockstat()
        slab1 = idle.slab_kb()
        opened = 0
        for p in procs:
            try:
                out, _ = p.communicate(timeout=hold + 330)
            except b.subprocess.TimeoutExpired:
                b.stop(p)
                continue
            for ln in out.decode().splitlines():
                if ln.startswith("{"):
                    opened += b.json.loads(ln)["streams_open"]
        row["open"] = opened
        n = opened or 1
        row["rss_kb_per_conn"] = (row["rss_kb_open"] - row["rss_kb_before"]) / n
        row["tcp_sockets"] = tcp1 - tcp0
        row["tcp_mem_kb_per_conn"] = (mem1 - mem0) * 4 / n
        # Both ends of every connection live on this machine: half is the server's.
        row["slab_kb_per_conn"] = (slab1 - slab0) / n / 2
        row["rss_mib_100k"] = (row["rss_kb_before"] + BROWSERS * row["rss_kb_per_conn"]) / 1024
        row["kernel_mib_100k"] = BROWSERS * (row["slab_kb_per_conn"] + row["tcp_mem_kb_per_conn"] / 2) / 1024
        b.log("  %s: %d open in %.1f s, %.1f KiB/conn user, %.1f KiB/conn kernel slab"
              % (name, opened, row["open_s"], row["rss_kb_per_conn"], row["slab_kb_per_conn"]))
        doc["rows"].append(row)
        srv.stop()
    doc["skipped"] = fleet.skipped
    fleet.stop_all()
    print_table(doc)
    b.save("connections-quick" if a.quick else "connections", doc)


def print_table(doc):
    sl = next((r for r in doc["rows"] if r["server"] == "sluice"), {})
    rows = []
    for r in doc["rows"]:
        rows.append([r["server"], r["open"], r["clients"], r["open_s"], r["rss_kb_before"] / 1024,
                     r["rss_kb_open"] / 1024, r["rss_kb_per_conn"],
                     None if r is sl else b.ratio(r["rss_kb_per_conn"], sl.get("rss_kb_per_conn")),
                     r["slab_kb_per_conn"], r["tcp_mem_kb_per_conn"], r["rss_mib_100k"],
                     r["kernel_mib_100k"], r["loadavg_1m"]])
    print(b.table(["server", "open", "clients", "open s", "RSS before MiB", "RSS open MiB",
                   "KiB/conn", "peer/sluice", "kernel slab KiB/conn", "TCP mem KiB/pair",
                   "100k: RSS MiB", "100k: kernel MiB", "load"], rows))
    print("commit %s, %s" % (doc["meta"].get("commit"), doc["meta"].get("date")))
    for k, v in doc.get("skipped", {}).items():
        print("skipped %s: %s" % (k, v))


if __name__ == "__main__":
    main()
