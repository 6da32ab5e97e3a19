#!/usr/bin/env python3
"""Durable Streams fan-out: many SSE readers of one stream, beside /events.

One nats-server with JetStream and sluice with --ds-base-path /v1/stream/.
Per run a fresh text/plain stream is created; sluice-bench opens READERS
streams (10 TLS h2 connections) and appends RATE messages/s of 100 bytes
through the protocol (POST /v1/stream/<name>, HTTP/1.1, one at a time, as
a writer would), for DURATION seconds. Two readers' modes, each on its own
fresh gateway:

  ds-sse   GET /v1/stream/<name>?offset=now&live=sse: the protocol's SSE (a
           data event and the reader's control event per append)
  events   GET /events/ds.d.<name>: the same appends as sluice SSE events

Reported: appends the gateway took per second, data events delivered per
second and their share of appends x readers, latency percentiles
(publisher clock to parsed event), and gateway CPU seconds per million
delivered data events (nats-server's beside it). Control events are
counted apart (sluice-bench sees them as events without a stamp).

Full: 1,000 readers at 1,000 appends/s for 10 s. --quick: 5 s.
"""
import http.client
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

READERS, RATE = 1000, 1000


def start_js_nats():
    port = b.free_port()
    exe = shutil.which("nats-server")
    if not exe:
        raise b.BenchError("nats-server is not installed (apt-get install nats-server)")
    store = b.tempdir("sluice-bench-js-")
    p = b.spawn([exe, "-a", b.HOST, "-p", str(port), "-js", "-sd", store],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b.wait_until(lambda: b.tcp_open(port), 10, "nats-server on %d" % port)
    s = b.Server("nats", p)
    s.port = port
    s.url = "nats://%s:%d" % (b.HOST, port)
    return s


def create(port, name):
    c = http.client.HTTPConnection(b.HOST, port, timeout=10)
    c.request("PUT", "/v1/stream/" + name, headers={"Content-Type": "text/plain"})
    r = c.getresponse()
    r.read()
    c.close()
    if r.status != 201:
        raise b.BenchError("PUT /v1/stream/%s: %d" % (name, r.status))


def run(mode, dur, crt):
    nats = start_js_nats()
    # The readers start at once, each start a DS job: ds-max-inflight (64) would refuse most.
    gw = b.start_sluice(nats, crt, extra=["--ds-base-path", "/v1/stream/",
                                          "--max-streams", "2000",
                                          "--ds-max-inflight", "2000"])
    name = "bench%d" % int(time.time() * 1000)
    create(gw.plain_port, name)
    path = ("/v1/stream/%s?offset=now&live=sse" % name if mode == "ds-sse"
            else "/events/ds.d.%s" % name)
    args = ["--connect", "%s:%d" % (b.HOST, gw.port), "--cacert", crt["ca"],
            "--connections", 10, "--streams", READERS // 10, "--path", path,
            "--pub", "http", "--pub-url", "http://%s:%d" % (b.HOST, gw.plain_port),
            "--subject", "/v1/stream/" + name, "--rate", RATE, "--payload", 100,
            "--duration", dur, "--drain", 3] + gw.pid_args() + nats.pid_args()
    b.log("run: %s, %d readers, %d appends/s, %d s" % (mode, READERS, RATE, dur))
    r = b.bench(args, timeout=dur + 90, label="ds " + mode)
    gw.stop()
    nats.stop()
    srv = r["servers"].get("sluice", {})
    nsrv = r["servers"].get("nats", {})
    events = r.get("events", 0)
    control = r.get("events_without_ts", 0)
    data = events - control
    taken = r.get("pub_rate") or 0
    row = {"mode": mode, "report": r, "data_events": data, "control_events": control,
           "taken_per_s": taken,
           "data_per_s": data / dur if dur else None,
           "delivered": data / (taken * dur * READERS) if taken else None,
           "cpu_s": srv.get("cpu_s"),
           "cpu_s_per_M_data": srv.get("cpu_s") / data * 1e6 if data and srv.get("cpu_s") else None,
           "nats_cpu_s_per_M_data": nsrv.get("cpu_s") / data * 1e6
           if data and nsrv.get("cpu_s") else None}
    return row


def main():
    a = b.flags(sys.argv[1:])
    dur = 5 if a.quick else 10
    crt = b.certs()
    doc = {"scenario": "ds", "quick": a.quick, "meta": b.meta(), "rows": []}
    for mode in ("ds-sse", "events"):
        doc["rows"].append(run(mode, dur, crt))
    rows = []
    for r in doc["rows"]:
        lat = r["report"].get("latency_ms") or {}
        rows.append([r["mode"], READERS, RATE, r["taken_per_s"], r["data_per_s"], r["delivered"],
                     r["control_events"], lat.get("p50"), lat.get("p99"), r["cpu_s_per_M_data"],
                     r["nats_cpu_s_per_M_data"]])
    print(b.table(["mode", "readers", "appends/s", "taken/s", "data ev/s", "delivered",
                   "control ev", "p50 ms", "p99 ms", "cpu s/M data ev", "nats s/M"], rows))
    b.save("ds-quick" if a.quick else "ds", doc)


if __name__ == "__main__":
    main()
