"""A Durable Streams call on a stalled JetStream must not stall its worker.

Regression: every JetStream call of the DS route (src/proto/ds.c) ran on
the worker's event loop, bounded by ds-timeout-ms; while nats-server did
not answer, every other request and stream on that worker waited too.

A real nats-server with JetStream and the real gateway with --workers 1,
--ds-timeout-ms 6000 and --ds-max-inflight 2. A stream is created; then
nats-server is SIGSTOPped and two appends are sent, the client of the
second going away at once (its operation must then complete without
touching the freed request: run it under ASan). While they are in flight,
ordinary requests on the same worker (a 404 on the plain listener, a fresh
connection each time) must each be answered well within 600 ms, for 2 s,
and a second DS operation is refused at once: 503 with Retry-After,
counted as unavailable (the two jobs allowed are taken). A long poll
waiting at the tail since before the stop (--ds-long-poll-ms 2500) wakes
at the end of its wait with no job slot free: it is answered the same
503 at once (it polls again from its offset), neither held nor read on
the worker. The append itself
ends as before: 503 once ds-timeout-ms has passed. After SIGCONT the next
append succeeds and the stream reads back whole. Last, nats-server is
stopped again with an append in flight and the gateway SIGTERMed: it
exits 0 (no sanitizer report) within ds-timeout-ms and a little, its
drain (--drain-ms 2000) not waiting on the job longer than its call.
"""

import http.client
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import js_util  # noqa: E402
from harness import expect  # noqa: E402
from test_ds_route import call  # noqa: E402 (its 10 s timeout outlasts ds-timeout-ms)

TIMEOUT_MS = 6000
LONG_POLL_MS = 2500
BOUND_S = 0.6


def stop_nats(pid):
    """SIGSTOP, then a fence: every thread of nats-server is stopped (kill() returns before)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped():
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                    return False
        return True
    h.wait_until(stopped, 5, "nats-server %d stopped" % pid)


class StalledDs:
    """A JetStream nats-server and a one-worker gateway serving the Durable
    Streams route at base on a plain listener (self.plain), with args;
    stop_nats() / cont_nats() SIGSTOP and SIGCONT the server, which is
    continued and killed at exit."""

    def __init__(self, base, args):
        self.base, self.args, self.stopped = base, args, False

    def __enter__(self):
        self.node = js_util.JsNode()
        self.node.start()
        try:
            self.gw = h.Gateway(self.node.url, workers=1,
                                extra_args=["--listen-plain", h.HOST + ":0",
                                            "--ds-base-path", self.base] + self.args)
            self.gw.__enter__()
            self.plain = self.gw.plain_port
        except BaseException:
            self.node.kill()
            raise
        return self

    def stop_nats(self):
        stop_nats(self.node.proc.pid)
        self.stopped = True

    def cont_nats(self):
        os.kill(self.node.proc.pid, signal.SIGCONT)
        self.stopped = False

    def __exit__(self, *exc):
        try:
            self.gw.__exit__(*exc)
        finally:
            if self.stopped:
                self.cont_nats()
            self.node.kill()


def probe(port, seconds, what, after_first=None):
    """
    Ordinary requests on the gateway's one worker (a 404, a fresh connection
    each) for seconds, each answered within BOUND_S; after_first() runs after
    the first. Returns how many, and the slowest in seconds.
    """
    worst, probes, end = 0.0, 0, time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            st, _, _ = call(port, "GET", "/no-such-thing")
        except Exception as e:  # noqa: B902
            raise h.TestFailure("a request on the same worker failed after %.0f ms while %s: %r"
                                % ((time.monotonic() - t0) * 1000, what, e))
        took = time.monotonic() - t0
        worst = max(worst, took)
        probes += 1
        expect(took < BOUND_S, "a request on the same worker took %.0f ms while %s (status %d)"
               % (took * 1000, what, st))
        time.sleep(0.1)
        if after_first:
            after_first()
            after_first = None
    return probes, worst


def append_when_back(port, path, body, headers):
    """An append, retried for up to 10 s while nats-server comes back; its headers."""
    st, hd, deadline = None, {}, time.monotonic() + 10
    while time.monotonic() < deadline:
        st, hd, _ = call(port, "POST", path, body, headers)
        if st == 204:
            break
        time.sleep(0.2)
    expect(st == 204, "append to %s after SIGCONT: %s" % (path, st))
    return hd


def appended_once(rest):
    """
    Whether rest holds "three" and otherwise only "two" and "gone", each at
    most once, in any order: an append that got its 503 may still have
    landed (JetStream answered too late), and the append whose client went
    may still be running at SIGCONT, then retried past "three" on the new tail.
    """
    seen = []
    while rest:
        word = next((w for w in (b"two", b"gone", b"three") if rest.startswith(w)), None)
        if word is None or word in seen:
            return False
        seen.append(word)
        rest = rest[len(word):]
    return b"three" in seen


def test():
    with StalledDs("/v1/stream/", ["--ds-timeout-ms", str(TIMEOUT_MS), "--ds-max-inflight", "2",
                                   "--drain-ms", "2000", "--log-level", "debug",
                                   "--ds-long-poll-ms", str(LONG_POLL_MS)]) as ds:
        gw, plain = ds.gw, ds.plain
        tp = {"Content-Type": "text/plain"}
        path = "/v1/stream/stall"
        st, _, _ = call(plain, "PUT", path, b"", tp)
        expect(st == 201, "PUT: %d" % st)
        st, hd, _ = call(plain, "POST", path, b"one", tp)
        expect(st == 204, "first append: %d" % st)
        at_tail = "%s?offset=%s&live=long-poll" % (path, hd["stream-next-offset"])
        poll = {}

        def long_poll():
            t0 = time.monotonic()
            poll["status"], got, _ = call(plain, "GET", at_tail)
            poll["retry"], poll["took"] = got.get("retry-after"), time.monotonic() - t0

        pt = threading.Thread(target=long_poll, daemon=True)
        pt.start()
        # Its read once its subscription is ready (the second of its start) found nothing.
        gw.wait_log(r"ds: long poll waits at offset")

        ds.stop_nats()
        h.log("nats-server %d stopped" % ds.node.proc.pid)
        result = {}

        def append():
            t0 = time.monotonic()
            try:
                result["status"], _, _ = call(plain, "POST", path, b"two", tp)
            except Exception as e:  # noqa: B902 (reported below)
                result["error"] = repr(e)
            result["took"] = time.monotonic() - t0

        th = threading.Thread(target=append, daemon=True)
        th.start()
        # The second append's client leaves before its answer (a fresh HTTP/1.1 connection).
        gone = http.client.HTTPConnection(h.HOST, plain, timeout=5)
        gone.request("POST", path, b"gone", dict(tp, **{"Content-Length": "4"}))
        probes, worst = probe(plain, 2.0, "a DS append waited on a stalled JetStream",
                              gone.close)
        h.log("%d probes while the append waited, the slowest %.0f ms" % (probes, worst * 1000))
        expect(th.is_alive(), "the append ended before the probes did: %r" % (result,))
        t0 = time.monotonic()
        c = http.client.HTTPConnection(h.HOST, plain, timeout=5)
        c.request("HEAD", path)
        rs = c.getresponse()
        took = time.monotonic() - t0
        retry = rs.getheader("retry-after")
        c.close()
        expect(rs.status == 503 and retry == "1" and took < BOUND_S,
               "a DS operation past ds-max-inflight: %d, Retry-After %r, %.0f ms"
               % (rs.status, retry, took * 1000))
        h.log("past ds-max-inflight: 503 with Retry-After in %.0f ms" % (took * 1000))
        # Its wait ended with both job slots taken by the appends: answered at once, not held.
        pt.join(5)
        # Had its wake read on a DS thread, it would have taken ds-timeout-ms longer.
        expect(poll.get("status") == 503 and poll.get("retry") == "1"
               and poll["took"] < (LONG_POLL_MS + TIMEOUT_MS / 2) / 1000.0,
               "a long poll woken past ds-max-inflight: %r" % (poll,))
        h.log("a long poll woken past ds-max-inflight: 503 with Retry-After after %.2f s"
              % poll["took"])
        th.join(TIMEOUT_MS / 1000.0 + 12)
        expect(not th.is_alive(), "the append never ended")
        expect(result.get("status") == 503,
               "the append on a stalled JetStream: %r" % (result,))
        expect(result["took"] >= TIMEOUT_MS / 1000.0 * 0.9,
               "503 before ds-timeout-ms: %.2f s" % result["took"])

        ds.cont_nats()
        append_when_back(plain, path, b"three", tp)
        st, _, body = call(plain, "GET", path + "?offset=-1")
        expect(st == 200 and body.startswith(b"one") and appended_once(body[3:]),
               "read after SIGCONT: %d %r" % (st, body))
        h.log("after SIGCONT: appends and reads go on")
        body = http.client.HTTPConnection(h.HOST, gw.admin_port, timeout=5)
        body.request("GET", "/metrics")
        text = body.getresponse().read().decode()
        body.close()
        line = [x for x in text.splitlines()
                if x.startswith('sluice_ds_answers_total{result="unavailable"}')]
        expect(line and int(float(line[0].split()[-1])) >= 2,
               "the two 503s counted as unavailable: %r" % (line,))

        ds.stop_nats()
        late = http.client.HTTPConnection(h.HOST, plain, timeout=TIMEOUT_MS / 1000.0 + 10)
        late.request("POST", path, b"late", dict(tp, **{"Content-Length": "4"}))
        # Sent after the append: the worker has most likely taken the append by its answer
        # (other connection, so not certain; either way the gateway must exit 0 in time).
        st, _, _ = call(plain, "GET", "/no-such-thing")
        t0 = time.monotonic()
        gw.stop(timeout=TIMEOUT_MS / 1000.0 + 6 + h.exit_slack_s())
        took = time.monotonic() - t0
        late.close()
        h.log("SIGTERM with a DS job in flight: exited 0 in %.2f s" % took)


if __name__ == "__main__":
    h.main(test, deadline_s=60)
