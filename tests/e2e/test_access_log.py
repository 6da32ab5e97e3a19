#!/usr/bin/env python3
"""Issue 6 (2): the access log: one JSON line per request, and rotation on SIGUSR1.

Every request this test makes is known by its x-request-id (its own, or
the one the gateway generated and returned in the response header), so
the log must hold exactly one line for each and nothing else:

  - 404s with and without x-request-id (a 128-byte id is echoed, a
    129-byte one is replaced by a generated one), one with a traceparent
  - POST /publish -> 202, and a bad subject -> 400 (reason "complete")
  - an access_token in the query is redacted; an id with '"', '\\' and a
    byte that is not UTF-8 is escaped (U+FFFD), so the line stays JSON
  - an SSE stream that gets 3 events and a fence marker and is closed by
    the client (reason "client"; events 4; bytes equal to what curl
    received; its duration)
  - a two-subject stream (both subjects listed), its id generated
  - a stream stalled by its client and cut (reason "slow_consumer")
  - a stream still open at SIGTERM (reason "drain"; bytes equal to what
    curl received, final comment included)

Rotation: request batches go out before the file is renamed, between the
rename and SIGUSR1, and after, while a second connection sends requests
without pause across the whole rotation and a stream stays open over it.
Lines before SIGUSR1 land in the renamed file, lines after it in a fresh
file at the original path, and no request's line is lost or doubled.
"""
import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import ops_util as u  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEX16 = re.compile(r"[0-9a-f]{16}\Z")
REQUIRED = {"time": str, "request_id": str, "client": str, "protocol": str, "method": str,
            "path": str, "status": int, "duration_s": (int, float), "events": int,
            "bytes": int, "reason": str}
REASONS = {"complete", "client", "slow_consumer", "unavailable", "drain", "token_expired",
           "limit"}


def check_fields(e):
    for k, t in REQUIRED.items():
        expect(k in e, "access log line lacks %r: %r" % (k, e))
        expect(isinstance(e[k], t) and not isinstance(e[k], bool),
               "access log field %s=%r has the wrong type: %r" % (k, e[k], e))
    u.log_epoch(e)
    expect(abs(u.log_epoch(e) - time.time()) < 120, "time %r is not now" % e["time"])
    expect(re.fullmatch(r"127\.0\.0\.1:\d+", e["client"]), "client %r" % e["client"])
    expect(e["protocol"] == "h2", "protocol %r, expected h2" % e["protocol"])
    expect(e["reason"] in REASONS, "reason %r is not one of %r" % (e["reason"], REASONS))
    expect(e["duration_s"] >= 0 and e["events"] >= 0 and e["bytes"] >= 0,
           "negative numbers: %r" % e)
    if "subjects" in e:
        expect(isinstance(e["subjects"], list) and all(isinstance(s, str) for s in e["subjects"]),
               "subjects %r" % e["subjects"])


def by_id(entries):
    out = {}
    for e in entries:
        out.setdefault(e["request_id"], []).append(e)
    return out


def one(index, rid, what):
    got = index.get(rid, [])
    expect(len(got) == 1, "%s (x-request-id %r): %d access log lines, expected exactly one"
           % (what, rid[:40], len(got)))
    return got[0]


def curl_req(gw, path, rid=None, method="GET", data=None, extra=()):
    args = list(extra)
    if rid is not None:
        args += ["-H", "x-request-id: " + rid]
    r = h.curl(gw, path, method=method, data=data, extra=args)
    got = r.header("x-request-id")
    expect(got, "%s %s: no x-request-id in the response" % (method, path))
    if rid is not None and len(rid) <= 128:
        expect(got == rid, "%s %s: x-request-id %r was not echoed (got %r)"
               % (method, path, rid[:40], got))
    else:
        expect(HEX16.match(got), "%s %s: generated x-request-id %r is not 16 hex digits"
               % (method, path, got))
    return r, got


class Pacer(threading.Thread):
    """Sends GET /nope/<n> requests one after another on one connection until stopped."""

    def __init__(self, gw, prefix):
        super().__init__(daemon=True)
        self.conn = h2.H2Conn(gw)
        self.prefix = prefix
        self.done = []  # (request id, monotonic time answered)
        self.halt = threading.Event()
        self.error = None

    def run(self):
        try:
            n = 0
            while not self.halt.is_set():
                rid = "%s-%d" % (self.prefix, n)
                s = self.conn.request("/nope/%d" % n, [("x-request-id", rid)])
                self.conn.wait(lambda c: s.closed, 10, "answer to %s" % rid)
                self.done.append((rid, time.monotonic()))
                n += 1
                time.sleep(0.005)  # pacing: a steady trickle, not a flood
        except BaseException as e:  # noqa: B902 (reported by the test thread)
            self.error = e

    def wait_progress(self, n, what):
        """Waits (bounded) until n more requests have been answered: a phase saw some."""
        k = len(self.done)
        h.wait_until(lambda: self.error is not None or len(self.done) >= k + n, 15,
                     "%d paced requests %s" % (n, what))
        expect(self.error is None, "pacer %s failed: %r" % (self.prefix, self.error))

    def finish(self):
        self.halt.set()
        self.join(timeout=15)
        self.conn.close()
        expect(self.error is None, "pacer %s failed: %r" % (self.prefix, self.error))
        return self.done


def batch(conn, prefix, n):
    ids = []
    for i in range(n):
        rid = "%s-%d" % (prefix, i)
        s = conn.request("/nope/%s" % rid, [("x-request-id", rid)])
        conn.wait(lambda c: s.closed, 10, "answer to %s" % rid)
        ids.append(rid)
    return ids


def test():
    with h.Nats() as nats, h.Gateway(nats.url, workers=2, drain_ms=1000, heartbeat_ms=60000,
                                     stream_queue_bytes=1024) as gw:
        path = gw.access_log_path
        expect(path, "the gateway has no --access-log")
        expected = {}  # request id -> what it was (every line must be one of these)

        # -- plain requests
        r, rid = curl_req(gw, "/nope", "al-404", extra=["-H", "traceparent: " + TRACEPARENT])
        expect(r.status == 404, "/nope answered %d" % r.status)
        expected[rid] = "404 with id"
        r, gen404 = curl_req(gw, "/nope")
        expected[gen404] = "404 without id"
        long_ok = "L" * 128
        r, rid = curl_req(gw, "/nope", long_ok)
        expected[rid] = "404 with a 128-byte id"
        r, gen129 = curl_req(gw, "/nope", "M" * 129)
        expected[gen129] = "404 with a 129-byte id"
        r, rid = curl_req(gw, "/publish/al.pub", "al-pub", method="POST", data="hello")
        expect(r.status == 202, "POST /publish answered %d: %r" % (r.status, r.body))
        expected[rid] = "publish"
        r, rid = curl_req(gw, "/events/al..bad", "al-400")
        expect(r.status == 400, "a bad subject answered %d" % r.status)
        expected[rid] = "bad subject"
        r, rid = curl_req(gw, "/nope?access_token=SECRETTOKEN123456&x=1", "al-token")
        expected[rid] = "a token in the query"
        # An id with a quote, a backslash and a byte that is not UTF-8: the line stays JSON.
        with h2.H2Conn(gw) as c:
            s = c.request("/nope", [("x-request-id", b'al-odd"\\\xff')])
            c.wait(lambda _: s.closed, 10, "the answer to the odd id")
        odd_id = 'al-odd"\\\ufffd'
        expected[odd_id] = "an id that needs escaping"

        # -- a stream the client closes after 3 events
        s = h.CurlStream(gw, "/events/al.a", extra=["-H", "x-request-id: al-client",
                                                    "-H", "traceparent: " + TRACEPARENT])
        _, _, off = s.wait_start()
        t_open = time.monotonic()
        _, _, hdrs = s.headers()
        expect(dict(hdrs).get("x-request-id") == "al-client",
               "the stream's response has x-request-id %r" % dict(hdrs).get("x-request-id"))
        nats.wait_subscriptions(["al.a"])
        for i in range(3):
            h.publish(nats.url, "al.a", "event %d" % i)
        s.wait_for(lambda b: b.count(b"data: event ") == 3, 10, "3 events")
        # Fence (a 0.3 s sleep stood here): a marker after the 3 events is the
        # next block, so the body up to it is all the gateway wrote.
        extra, _, _ = h.read_until_marker(s, lambda m: h.publish(nats.url, "al.a", m),
                                          start=off, what="the client-closed stream")
        expect(len(extra) == 3 and all(b.data and b.data[0].startswith("event ") for b in extra),
               "before the marker: %r, expected the 3 events" % [b.raw for b in extra])
        client_body = s.data()
        s.close()
        t_close = time.monotonic()
        expected["al-client"] = "stream closed by the client"

        # -- a two-subject stream with a generated id
        m = h.CurlStream(gw, "/events?subject=al.a&subject=al.b")
        m.wait_start(nsubjects=2)
        _, _, hdrs = m.headers()
        gen_multi = dict(hdrs).get("x-request-id", "")
        expect(HEX16.match(gen_multi), "two-subject stream: generated x-request-id %r" % gen_multi)
        m.close()
        expected[gen_multi] = "two-subject stream"

        # -- a stalled stream, cut
        mark = len(gw.log())
        slow = h.Client(gw, ["--path", "/events/al.slow", "--window-size", "100",
                             "--stall-stream", "0", "--header", "x-request-id: al-slow"],
                        timeout_ms=15000)
        slow.wait_ready(timeout=10)
        nats.wait_subscriptions(["al.slow"])
        with nu.NatsClient(nats.port) as pub:
            for i in range(4):
                pub.pub("al.slow", ("s%d " % i).ljust(600, "x"))
            pub.flush()
        gw.wait_log(r"slow consumer", timeout=10, start=mark)
        slow.result()
        expected["al-slow"] = "stalled stream"

        # -- rotation
        h.wait_until(lambda: all(i in by_id(u.read_jsonl(path)) for i in expected), 10,
                     "every request so far to be logged")
        across = h.CurlStream(gw, "/events/al.x", extra=["-H", "x-request-id: al-across"])
        across.wait_start()
        pacer = Pacer(gw, "pace")
        pacer.start()
        conn = h2.H2Conn(gw)
        # Each phase waits for the pacer to get requests answered in it (a
        # 0.2 s sleep stood here: on a busy machine the pacer could miss one).
        before = batch(conn, "before", 20)
        pacer.wait_progress(3, "before the rename")
        rotated = path + ".1"
        os.rename(path, rotated)
        h.log("access log renamed")
        between = batch(conn, "between", 20)
        pacer.wait_progress(3, "between the rename and SIGUSR1")
        gw.proc.send_signal(signal.SIGUSR1)
        h.wait_until(lambda: os.path.exists(path), 5, "SIGUSR1 to create a new %s" % path)
        h.log("new access log file created")
        pacer.wait_progress(3, "after the new file appeared")
        after = batch(conn, "after", 20)
        pacer.wait_progress(3, "after the last batch")
        across.close()
        paced = [rid for rid, _ in pacer.finish()]
        conn.close()
        for rid in before + between + after + paced:
            expected[rid] = "rotation request"
        expected["al-across"] = "stream open across the rotation"

        # -- a stream open at SIGTERM
        d = h.CurlStream(gw, "/events/al.d", extra=["-H", "x-request-id: al-drain"])
        d.wait_start()
        nats.wait_subscriptions(["al.d"])
        h.publish(nats.url, "al.d", "last")
        d.wait_bytes(b"data: last\n\n", 10)
        gw.stop(timeout=10)
        d.wait_for(lambda b: b.endswith(b": server shutting down, reconnect\n\n"), 5,
                   "the drain's final comment")
        expected["al-drain"] = "stream ended by the drain"

        old, new = u.read_jsonl(rotated), u.read_jsonl(path)
        h.log("renamed file: %d lines; new file: %d lines; requests made: %d"
              % (len(old), len(new), len(expected)))
        for e in old + new:
            check_fields(e)
        idx_old, idx_new = by_id(old), by_id(new)
        idx = by_id(old + new)
        unknown = [e for e in old + new if e["request_id"] not in expected]
        expect(not unknown, "access log lines for requests this test did not make: %r"
               % unknown[:3])
        missing = [rid[:40] for rid in expected if rid not in idx]
        expect(not missing, "%d requests have no access log line (lost): %r"
               % (len(missing), missing[:10]))
        doubled = [rid[:40] for rid, es in idx.items() if len(es) > 1]
        expect(not doubled, "requests logged more than once: %r" % doubled[:10])
        expect(len(old) + len(new) == len(expected), "%d lines for %d requests"
               % (len(old) + len(new), len(expected)))

        # Rotation: which file each line went to.
        for rid in before + between:
            expect(rid in idx_old, "%s was answered before SIGUSR1 but is not in the renamed "
                   "file" % rid)
        for rid in after:
            expect(rid in idx_new, "%s was answered after the new file appeared but is not in "
                   "it" % rid)
        expect("al-across" in idx_new, "the stream that ended after SIGUSR1 is not in the new "
               "file")
        expect(any(rid in idx_new for rid in paced) and any(rid in idx_old for rid in paced),
               "the paced requests did not straddle the rotation")

        # The lines' contents.
        e = one(idx, "al-404", "404 with id")
        expect((e["method"], e["path"], e["status"], e["reason"], e.get("traceparent"))
               == ("GET", "/nope", 404, "complete", TRACEPARENT), "404 line: %r" % e)
        e = one(idx, gen404, "404 without id")
        expect(e["status"] == 404 and "traceparent" not in e,
               "404 without traceparent: %r" % e)
        one(idx, long_ok, "the 128-byte id")
        expect(not any(e["request_id"].startswith("MMMM") for e in old + new),
               "a 129-byte x-request-id was logged instead of being replaced")
        e = one(idx, "al-pub", "publish")
        expect((e["method"], e["path"], e["status"], e["reason"])
               == ("POST", "/publish/al.pub", 202, "complete"), "publish line: %r" % e)
        e = one(idx, "al-token", "a token in the query")
        expect("SECRETTOKEN" not in e["path"] and e["path"].startswith("/nope?access_token="),
               "the access token reached the access log: path %r" % e["path"])
        one(idx, odd_id, "an id that needs escaping")
        e = one(idx, "al-400", "bad subject")
        expect(e["status"] == 400 and e["reason"] == "complete", "400 line: %r" % e)

        e = one(idx, "al-client", "stream closed by the client")
        expect((e["method"], e["path"], e["status"], e.get("subjects"), e["reason"],
                e["events"], e.get("traceparent"))
               == ("GET", "/events/al.a", 200, ["al.a"], "client", 4, TRACEPARENT),
               "client-closed stream line: %r" % e)
        expect(e["bytes"] == len(client_body), "client-closed stream: bytes %d, curl received %d"
               % (e["bytes"], len(client_body)))
        lived = t_close - t_open
        expect(lived - 0.5 <= e["duration_s"] <= lived + 1.0,
               "client-closed stream: duration_s %.3f, but it was open about %.2f s"
               % (e["duration_s"], lived))
        e = one(idx, gen_multi, "two-subject stream")
        expect(e.get("subjects") == ["al.a", "al.b"] and e["reason"] == "client",
               "two-subject stream line: %r" % e)
        e = one(idx, "al-slow", "stalled stream")
        expect(e["reason"] == "slow_consumer" and e.get("subjects") == ["al.slow"]
               and e["status"] == 200, "stalled stream line: %r" % e)
        e = one(idx, "al-drain", "stream ended by the drain")
        expect(e["reason"] == "drain" and e["events"] == 1 and e["status"] == 200,
               "drained stream line: %r" % e)
        expect(e["bytes"] == len(d.data()), "drained stream: bytes %d, curl received %d"
               % (e["bytes"], len(d.data())))
        d.close()
        for rid in before + between + after + paced:
            e = idx[rid][0]
            want_path = "/nope/" + (rid.rsplit("-", 1)[1] if rid.startswith("pace-") else rid)
            expect(e["status"] == 404 and e["reason"] == "complete" and e["path"] == want_path,
                   "rotation request line: %r" % e)


if __name__ == "__main__":
    h.main(test, deadline_s=90)
