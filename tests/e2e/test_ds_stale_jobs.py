"""Durable Streams jobs queued behind a stalled JetStream answer within ds-timeout-ms.

Regression: a job waited in the DS threads' queue for as long as the
calls ahead of it took, then made its own calls, each bounded by
ds-timeout-ms: with nats-server stalled and more operations than the 4 DS
threads, the fifth client waited two timeouts, the ninth three, and so on
(ds-max-inflight is 1024 by default).

A real nats-server with JetStream and the real gateway with
--ds-timeout-ms 5000 and --ds-max-inflight 8. A stream is created; then
nats-server is SIGSTOPped and 8 HEADs are sent at once: 4 run on the DS
threads and wait out their calls, 4 wait in the queue for as long (past
nine tenths of ds-timeout-ms, the gateway's limit for a queued job). Every one
is answered 503 within 1.5 x ds-timeout-ms (the queued ones run with
their calls failing at once; before, they took 2 x). After SIGCONT a
HEAD succeeds again.
"""

import http.client
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import expect  # noqa: E402
from test_ds_route import call  # noqa: E402
from test_ds_stalled_jetstream import StalledDs  # noqa: E402

TIMEOUT_MS = 5000
JOBS = 8  # twice the DS threads


def test():
    with StalledDs("/v1/stream/", ["--ds-timeout-ms", str(TIMEOUT_MS),
                                   "--ds-max-inflight", str(JOBS)]) as ds:
        plain = ds.plain
        path = "/v1/stream/queued"
        st, _, _ = call(plain, "PUT", path, b"", {"Content-Type": "text/plain"})
        expect(st == 201, "PUT: %d" % st)
        st, _, _ = call(plain, "HEAD", path)
        expect(st == 200, "HEAD before the stall: %d" % st)

        ds.stop_nats()
        # Connected first and sent back to back: the premise is that the queued HEADs
        # arrive together with the running ones (one that came 0.2 s later would not
        # have waited nine tenths of ds-timeout-ms when a thread frees).
        conns = [http.client.HTTPConnection(h.HOST, plain, timeout=TIMEOUT_MS / 1000.0 * JOBS)
                 for _ in range(JOBS)]
        for c in conns:
            c.connect()
        results = [None] * JOBS

        def head(i, t0):
            try:
                rs = conns[i].getresponse()
                rs.read()
                st = rs.status
            except Exception as e:  # noqa: B902 (reported below)
                st = repr(e)
            results[i] = (st, time.monotonic() - t0)

        threads = []
        for i, c in enumerate(conns):
            t0 = time.monotonic()
            c.request("HEAD", path)
            threads.append(threading.Thread(target=head, args=(i, t0), daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT_MS / 1000.0 * JOBS + 5)
        for c in conns:
            c.close()
        took = sorted(r[1] for r in results if r)
        h.log("%d HEADs on a stalled JetStream: %s; answered after %s s"
              % (JOBS, sorted(set(str(r[0]) for r in results if r)),
                 ", ".join("%.2f" % t for t in took)))
        expect(all(r and r[0] == 503 for r in results),
               "not every HEAD on a stalled JetStream got 503: %r" % (results,))
        expect(took[-1] < TIMEOUT_MS / 1000.0 * 1.5,
               "a HEAD queued behind stalled calls took %.2f s (ds-timeout-ms %d)"
               % (took[-1], TIMEOUT_MS))

        ds.cont_nats()
        deadline, st = time.monotonic() + 10, None
        while time.monotonic() < deadline:
            st, _, _ = call(plain, "HEAD", path)
            if st == 200:
                break
            time.sleep(0.2)
        expect(st == 200, "HEAD after SIGCONT: %s" % st)


if __name__ == "__main__":
    h.main(test, deadline_s=60)
