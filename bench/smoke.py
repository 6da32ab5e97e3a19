"""bench_smoke: sluice-bench still measures (ctest label e2e).

A real nats-server and the real gateway on free loopback ports; sluice-bench
opens 2 TLS h2 connections x 20 streams, publishes 20 messages/s for 1.5 s
through NATS (about 600 events), and the report must account for every one
of them: all streams open, every expected event delivered with a latency,
no gaps or duplicates, CPU sampled for the gateway. When the build has the
cleartext HTTP/1.1 listener, the same over HTTP/1.1. Never a timing check:
benchmarks on a shared machine are noisy. Bounded to about 20 s.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def check(r, what):
    problems = []
    if r["exit"] != 0 or not r["ok"]:
        problems.append("not every stream opened (%d of %d)" % (r["streams_open"], r["streams"]))
    if r["expected"] < 100 or r["events"] != r["expected"]:
        problems.append("%d events of %d expected" % (r["events"], r["expected"]))
    if r["latency_ms"]["n"] != r["events"]:
        problems.append("latency for %d of %d events" % (r["latency_ms"]["n"], r["events"]))
    if r["gaps"] or r["dups"]:
        problems.append("%d gaps, %d duplicates" % (r["gaps"], r["dups"]))
    if not r["servers"].get("sluice", {}).get("ok"):
        problems.append("no CPU sample of the gateway")
    if problems:
        raise b.BenchError("%s: %s\n%s" % (what, "; ".join(problems), r))
    b.log("%s: %d events, p50 %.3f ms, p99 %.3f ms" % (what, r["events"], r["latency_ms"]["p50"],
                                                      r["latency_ms"]["p99"]))


def main():
    crt = b.certs()
    nats = b.start_nats()
    gw = b.start_sluice(nats, crt)
    common = ["--pub", "nats", "--pub-url", nats.url, "--rate", 20, "--duration", 1.5,
              "--open-timeout", 5, "--drain", 2] + gw.pid_args()
    r = b.bench(["--connect", "127.0.0.1:%d" % gw.port, "--cacert", crt["ca"],
                 "--connections", 2, "--streams", 20] + common, timeout=15)
    check(r, "h2")
    if gw.plain_port:
        r = b.bench(["--connect", "127.0.0.1:%d" % gw.plain_port, "--proto", "h1", "--plain",
                     "--connections", 10] + common, timeout=15)
        check(r, "http/1.1")
    else:
        b.log("this build has no --listen-plain: HTTP/1.1 part skipped")
    print("bench_smoke: ok")


if __name__ == "__main__":
    try:
        main()
    except b.BenchError as e:
        print("bench_smoke: FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)
