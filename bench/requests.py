#!/usr/bin/env python3
"""Request streams: POST-started token streams beside plain subscriptions.

Full: 1,000 concurrent request streams over 10 TLS h2 connections, each a
POST /v1/chat/completions that the gateway's request route hands to
tools/sluice-llm on llm.chat, answered at 50 tokens/s for 20 s (50,000
tokens/s through 1,000 POST-started streams). Then the same load through
plain subscriptions: 1,000 GET /events/bench.{s} streams, each on its own
subject, and once they are all open the script sends sluice-llm 1,000
requests over NATS itself, each with one of those subjects as its reply
subject: the same service publishing the same tokens at the same pace, so
the two cases differ only in how the stream reached the gateway.
--quick: 200 streams for 10 s (the size the shared development machine
takes; --streams and --duration set any other).

Per case: time to first token p50/p99 (POST sent -> first token parsed;
request streams only) for the S POSTs sent at once at the start (their
connections' TLS handshakes share the client's one thread, so these
include queueing behind the other handshakes) and, the figure for a new
request under load, for 20 more POSTs on one fresh connection made while
the S streams are streaming (a second sluice-bench, "ttft under load"), token latency p50/p99/max (sluice-llm --stamp and
the publisher write the wall clock into each token; the difference at
parsing is the end-to-end latency: service -> NATS -> gateway -> TLS ->
parser), tokens/s delivered against those asked for, lost or doubled tokens
(per-stream sequence numbers), and CPU: the gateway's microseconds per
delivered token, nats-server's beside it, and the service's (sluice-llm, or
the publisher inside sluice-bench) for scale.

Every answer asks for enough tokens to outlast the window (duration + 3 s
of them), so the window measures steady streaming; sluice-bench never POSTs
again (a finished answer is not reopened within the run).

No peers: nchan and Pushpin have no request routes.
"""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

SUBJECT = "llm.chat"
ROUTE = "/v1/chat/completions"
# The gateway's request route to the service (README, "Request routes").
PROBES = 20  # POSTs of the "ttft under load" probe
ROUTE_FLAGS = ["--request-route", "%s %s" % (ROUTE, SUBJECT)]


def extra(ap):
    ap.add_argument("--streams", type=int, help="concurrent streams (default 1000; quick 200)")
    ap.add_argument("--rate", type=float, default=50, help="tokens per second per stream")
    ap.add_argument("--duration", type=float, help="seconds measured (default 20; quick 10)")
    ap.add_argument("--connections", type=int, default=10, help="h2 connections")


def start_llm(nats, streams, rate, tokens):
    exe = b.binary("SLUICE_LLM", "sluice-llm")
    p = b.spawn([exe, "--nats", nats.url, "--subject", SUBJECT, "--rate", str(rate), "--stamp",
                 "--max-answers", str(streams + PROBES + 16), "--max-tokens", str(tokens),
                 "--tokens", str(tokens)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = b.Output(p.stderr)

    def ready():
        if p.poll() is not None:
            raise b.BenchError("sluice-llm exited %s:\n%s" % (p.returncode, out.tail()))
        return out.find("ready on")
    b.wait_until(ready, 15, "sluice-llm to subscribe")
    s = b.Server("llm", p)
    s.out = out
    return s


def nats_requests(url, subject, replies, body):
    """Publishes body to subject once per reply subject (raw NATS protocol),
    then waits for the server's PONG: every request has reached nats-server."""
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sk:
        f = sk.makefile("rb")
        f.readline()  # INFO
        data = body.encode()
        out = [b'CONNECT {"verbose":false,"pedantic":false,"name":"bench-requests"}\r\n']
        for r in replies:
            out.append(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), r.encode(), len(data), data))
        out.append(b"PING\r\n")
        sk.sendall(b"".join(out))
        while True:
            line = f.readline()
            if not line:
                raise b.BenchError("nats-server closed the connection: requests not confirmed")
            if line.startswith(b"-ERR"):
                raise b.BenchError("nats-server refused the requests: %r" % line)
            if line.startswith(b"PONG"):
                return


def bench_then(args, timeout, label, after_ready):
    """b.bench(), but calls after_ready() once the window starts (all streams open)."""
    ready = os.path.join(b.tempdir("sluice-bench-ready-"), "ready")
    cmd = [b.binary("SLUICE_BENCH", "bench/sluice-bench")] + [str(a) for a in args] + [
        "--ready-file", ready, "--label=" + label]
    p = b.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    b.wait_until(lambda: os.path.exists(ready) or p.poll() is not None, timeout,
                 "every stream open")
    if p.poll() is None:
        after_ready()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        b.stop(p)
        raise b.BenchError("sluice-bench did not finish within %.0f s" % timeout)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise b.BenchError("sluice-bench exited %d without a report:\n%s"
                           % (p.returncode, err.decode()[-2000:]))
    r = json.loads(lines[-1])
    r["exit"] = p.returncode
    return r


def summary(kind, r, streams, rate, dur, service):
    lat = r.get("latency_ms") or {}
    ttft = r.get("ttfe_ms") or {}
    srv = r.get("servers") or {}
    gw = srv.get("sluice", {})
    tokens = r.get("events", 0)
    per_token = lambda s: (round(s.get("cpu_s", 0) / tokens * 1e6, 2) if tokens else None)  # noqa
    return {
        "case": kind, "streams_open": r.get("streams_open"), "streams": r.get("streams"),
        "open_s": r.get("open_s"),
        "asked_tokens_per_s": streams * rate, "tokens_per_s": r.get("events_per_s"),
        "delivered_ratio": round(tokens / (streams * rate * dur), 4) if dur else None,
        "ttft_ms": {k: ttft.get(k) for k in ("n", "p50", "p99", "max") if k in ttft},
        "latency_ms": {k: lat.get(k) for k in ("p50", "p99", "p999", "max") if k in lat},
        "lost": r.get("gaps"), "doubled": r.get("dups"),
        "events_without_stamp": r.get("events_without_ts"),
        "gateway_us_per_token": per_token(gw),
        "nats_us_per_token": per_token(srv.get("nats", {})),
        "service_us_per_token": per_token(srv.get(service, {})),
        "gateway_cpu_s": gw.get("cpu_s"),
        "client_main_thread_share": (r.get("client") or {}).get("main_thread_share"),
        "client_limited": (r.get("client") or {}).get("limited"),
        "status_counts": r.get("status_counts"),
    }


def main():
    a = b.flags(sys.argv[1:], extra)
    streams = a.streams or (200 if a.quick else 1000)
    dur = a.duration or (10 if a.quick else 20)
    conns = min(a.connections, streams)
    per_conn = (streams + conns - 1) // conns
    streams = per_conn * conns
    tokens = int(a.rate * (dur + 3)) + 10
    fleet = b.Fleet([], sluice_extra=ROUTE_FLAGS)
    doc = {"scenario": "requests", "quick": a.quick, "meta": b.meta(),
           "params": {"streams": streams, "connections": conns, "rate": a.rate,
                      "duration": dur, "tokens_per_answer": tokens}, "rows": []}
    ca = ["--cacert", fleet.crt["ca"]]
    common = ["--connections", conns, "--streams", per_conn, "--duration", dur, "--drain", 2,
              "--open-timeout", 30, "--settle", 0.25]

    # 1. Request streams: every stream a POST answered by sluice-llm.
    gw = fleet.start("sluice", fresh=True)
    llm = start_llm(fleet.nats, streams, a.rate, tokens)
    body = json.dumps({"model": "sluice-llm", "stream": True, "max_tokens": tokens,
                       "messages": [{"role": "user", "content": "bench"}]},
                      separators=(",", ":"))
    args = ["--connect", "%s:%d" % (b.HOST, gw.port)] + ca + common + [
        "--path", ROUTE, "--post-body", body, "--stamp-after", '"content":"', "--pub", "none",
        "--reopen-ms", 600000] + gw.pid_args() + fleet.nats.pid_args() + llm.pid_args()
    b.log("run: %d request streams at %g tokens/s for %g s" % (streams, a.rate, dur))
    probe = {}

    def probe_under_load():
        # 20 more POSTs on one connection, its handshake done before they go,
        # while the S streams stream: time to first token of a new request.
        small = json.dumps({"model": "sluice-llm", "stream": True, "max_tokens": 5,
                            "messages": [{"role": "user", "content": "probe"}]},
                           separators=(",", ":"))
        probe["report"] = b.bench(["--connect", "%s:%d" % (b.HOST, gw.port)] + ca + [
            "--connections", 1, "--streams", PROBES, "--path", ROUTE, "--post-body", small,
            "--stamp-after", '"content":"', "--pub", "none", "--duration", 1, "--drain", 1,
            "--open-timeout", 10, "--settle", 0, "--reopen-ms", 600000],
            timeout=30, label="ttft probe")
    r = bench_then(args, dur + 90, "requests", probe_under_load)
    doc["rows"].append(summary("request streams (POST)", r, streams, a.rate, dur, "llm"))
    doc["rows"][-1]["report"] = r
    pr = probe.get("report") or {}
    doc["rows"][-1]["ttft_under_load_ms"] = {k: (pr.get("ttfe_ms") or {}).get(k)
                                             for k in ("n", "p50", "p99", "max")}
    doc["rows"][-1]["probe_report"] = pr
    llm.stop()

    # 2. The same load through plain subscriptions, one subject per stream:
    # sluice-llm answers requests the script sends with those subjects as replies.
    gw = fleet.start("sluice", fresh=True)
    llm = start_llm(fleet.nats, streams, a.rate, tokens)
    args = ["--connect", "%s:%d" % (b.HOST, gw.port)] + ca + common + [
        "--path", "/events/bench.{s}", "--subjects", streams, "--pub", "none",
        "--stamp-after", '"content":"'] + gw.pid_args() + fleet.nats.pid_args() + \
        llm.pid_args()
    b.log("run: %d subscriptions answered at %g tokens/s for %g s" % (streams, a.rate, dur))
    r = bench_then(args, dur + 90, "subscriptions", lambda: nats_requests(
        fleet.nats.url, SUBJECT, ["bench.%d" % i for i in range(streams)], body))
    doc["rows"].append(summary("plain subscriptions (GET)", r, streams, a.rate, dur, "llm"))
    doc["rows"][-1]["report"] = r
    llm.stop()
    fleet.stop_all()
    print_table(doc)
    b.save("requests-quick" if a.quick else "requests", doc)


def print_table(doc):
    rows = []
    for r in doc["rows"]:
        load = r.get("ttft_under_load_ms") or {}
        rows.append([r["case"], "%s/%s" % (r["streams_open"], r["streams"]), r["asked_tokens_per_s"],
                     r["tokens_per_s"], r["delivered_ratio"], r["ttft_ms"].get("p50"),
                     r["ttft_ms"].get("p99"), load.get("p50"), load.get("p99"),
                     r["latency_ms"].get("p50"),
                     r["latency_ms"].get("p99"), r["lost"], r["doubled"],
                     r["gateway_us_per_token"], r["nats_us_per_token"],
                     r["service_us_per_token"], r["client_limited"]])
    print(b.table(["case", "open", "asked tok/s", "tok/s", "delivered", "ttft p50 ms",
                   "ttft p99 ms", "ttft@load p50", "ttft@load p99", "lat p50 ms", "lat p99 ms", "lost", "doubled",
                   "gw µs/tok", "nats µs/tok", "svc µs/tok", "client-bound"], rows))


if __name__ == "__main__":
    main()
