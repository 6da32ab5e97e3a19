"""Live Durable Streams reads on a stalled JetStream must not stall their worker.

Regression: a live read (long poll, SSE) made its JetStream calls on the
worker's loop, when it started and when it woke, each bounded by
ds-timeout-ms: with nats-server stopped, every reader that started or
woke stalled every other client on that worker for that long, one after
the other.

A real nats-server with JetStream and the real gateway with --workers 1,
--ds-timeout-ms 2000 and --ds-long-poll-ms 1500. A text and a binary
stream get one append each; an SSE reader of each (the text one on the
shared subscription, the binary one on a notifier with pumps) reads it,
and a long poll waits at the text stream's tail. nats-server is
SIGSTOPped; three readers start (a long poll, a text and a binary SSE
reader) and the waiting long poll's wait ends (its read after the
timeout). While their calls hang, ordinary requests on the same worker (a
404 on the plain listener, a fresh connection each) must each be answered
within 600 ms for 2.5 s. Every one of those reads is then answered (503,
JetStream unavailable; the long poll may also have its 204). Two readers
leave while their jobs run (a binary SSE reader starting, a long poll
reading after its wait): the jobs must free what they hold (run it under
ASan). After SIGCONT a second append reaches both SSE readers opened
before the stop, with control events that go on from the first with no
gap, and the gateway exits 0 on SIGTERM.
"""

import base64
import http.client
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import expect  # noqa: E402
from test_ds_route import call  # noqa: E402
from test_ds_stalled_jetstream import StalledDs, append_when_back, probe  # noqa: E402

TIMEOUT_MS = 2000
LONG_POLL_MS = 1500
BASE = "/v1/stream/"


class Sse(threading.Thread):
    """An SSE reader of a stream over HTTP/1.1: its events, as (event, data) pairs."""

    def __init__(self, port, path):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.status, self.events, self.error = None, [], None
        self.lock = threading.Lock()
        self.start()

    def run(self):
        try:
            c = http.client.HTTPConnection(h.HOST, self.port, timeout=30)
            c.request("GET", self.path)
            r = c.getresponse()
            self.status = r.status
            pending = b""
            while True:
                chunk = r.read1(65536)
                if not chunk:
                    break
                pending += chunk
                while b"\n\n" in pending:
                    block, pending = pending.split(b"\n\n", 1)
                    ev, data = None, []
                    for line in block.decode().split("\n"):
                        if line.startswith("event:"):
                            ev = line[6:].strip()
                        elif line.startswith("data:"):
                            v = line[5:]
                            data.append(v[1:] if v.startswith(" ") else v)
                    with self.lock:
                        self.events.append((ev, "\n".join(data)))
        except Exception as e:  # noqa: B902 (reported by the test's checks)
            self.error = repr(e)

    def controls(self):
        with self.lock:
            return [json.loads(d) for e, d in self.events if e == "control"]

    def data(self, binary):
        with self.lock:
            parts = [d for e, d in self.events if e == "data"]
        return b"".join(base64.b64decode(p) if binary else p.encode() for p in parts)


class Get(threading.Thread):
    """One request on its own connection, its answer kept."""

    def __init__(self, port, path):
        super().__init__(daemon=True)
        self.port, self.path, self.status, self.headers, self.error = port, path, None, {}, None
        self.start()

    def run(self):
        try:
            self.status, self.headers, _ = call(self.port, "GET", self.path)
        except Exception as e:  # noqa: B902
            self.error = repr(e)


def test():
    with StalledDs(BASE, ["--ds-timeout-ms", str(TIMEOUT_MS),
                          "--ds-long-poll-ms", str(LONG_POLL_MS), "--drain-ms", "1000",
                          "--log-level", "debug"]) as ds:
        gw, plain = ds.gw, ds.plain
        tail = {}
        for name, ct in (("t", "text/plain"), ("b", "application/octet-stream")):
            st, _, _ = call(plain, "PUT", BASE + name, b"", {"Content-Type": ct})
            expect(st == 201, "PUT %s: %d" % (name, st))
            st, hd, _ = call(plain, "POST", BASE + name, b"one", {"Content-Type": ct})
            expect(st == 204, "append to %s: %d" % (name, st))
            tail[name] = hd["stream-next-offset"]
        text = Sse(plain, BASE + "t?offset=-1&live=sse")
        binary = Sse(plain, BASE + "b?offset=-1&live=sse")
        for r in (text, binary):
            h.wait_until(lambda: r.controls() and r.controls()[-1].get("upToDate"), 10,
                         "%s caught up" % r.path)
        expect(text.data(False) == b"one" and binary.data(True) == b"one",
               "catch-up: %r %r" % (text.events, binary.events))
        # Waiting at the tail: its wait ends (and it reads) while nats-server is stopped.
        waiting = Get(plain, BASE + "t?offset=%s&live=long-poll" % tail["t"])
        leaving = http.client.HTTPConnection(h.HOST, plain, timeout=5)
        leaving.request("GET", BASE + "b?offset=%s&live=long-poll" % tail["b"])
        h.wait_until(lambda: len(re.findall(r"ds: long poll waits at offset", gw.log())) == 2,
                     10, "both long polls wait (each read once its subscription was ready)")

        ds.stop_nats()
        stalled_at = time.monotonic()
        starts = [Get(plain, BASE + "t?offset=-1&live=long-poll"),
                  Get(plain, BASE + "t?offset=-1&live=sse"),
                  Get(plain, BASE + "b?offset=-1&live=sse")]
        # A reader that goes while its start's job runs: the job must free what it holds.
        gone = http.client.HTTPConnection(h.HOST, plain, timeout=5)
        gone.request("GET", BASE + "b?offset=-1&live=sse")
        probes, worst = probe(plain, 2.5, "live DS reads waited on a stalled JetStream",
                              gone.close)
        # Its wait ended 1.5 s in: its read's job hangs on nats-server until 3.5 s at least.
        leaving.close()
        h.log("%d probes while live reads waited, the slowest %.0f ms" % (probes, worst * 1000))
        for g in starts + [waiting]:
            g.join(TIMEOUT_MS / 1000.0 * 3 + 5)
            expect(not g.is_alive(), "%s never answered" % g.path)
            ok = g.status == 503 or (g is waiting and g.status == 204)
            expect(ok, "%s on a stalled JetStream: %r %r" % (g.path, g.status, g.error))
        h.log("the reads ended %.1f s into the stall: %s" % (
            time.monotonic() - stalled_at, [g.status for g in starts + [waiting]]))

        ds.cont_nats()
        for name, ct in (("t", "text/plain"), ("b", "application/octet-stream")):
            hd = append_when_back(plain, BASE + name, b"two", {"Content-Type": ct})
            tail[name] = hd["stream-next-offset"]
        for r, binary_ in ((text, False), (binary, True)):
            name = r.path[len(BASE)]
            h.wait_until(lambda: r.controls()[-1].get("streamNextOffset") == tail[name], 10,
                         "%s read the append after SIGCONT (%r)" % (r.path, r.events))
            expect(r.status == 200 and r.error is None and r.data(binary_) == b"onetwo",
                   "%s after SIGCONT: %r %r %r" % (r.path, r.status, r.error, r.events))
            offs = [c["streamNextOffset"] for c in r.controls()]
            expect(offs == sorted(offs), "%s: offsets went back: %r" % (r.path, offs))
        h.log("after SIGCONT both SSE readers read on with no gap")
        # Exits 0: no sanitizer report, nothing of the readers that went left behind.
        gw.stop(timeout=TIMEOUT_MS / 1000.0 + 8 + h.exit_slack_s())


if __name__ == "__main__":
    h.main(test, deadline_s=60)
