#!/usr/bin/env python3
"""Issue 2 (a): curl --http2 -N receives a published event; exact bytes and headers.

Also: the retry: hint is the default 3000 ms within +-20 %; a multi-subject
stream (/events?subject=A&subject=B) gets events of both subjects with
composite ids; nghttp -v sees SETTINGS_MAX_CONCURRENT_STREAMS in the
server's first SETTINGS frame.
"""
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
from harness import expect  # noqa: E402


def check_single_stream(nats, gw):
    with h.CurlStream(gw, "/events/orders.eu", max_time=30) as s:
        retry, off = s.wait_retry(timeout=10)
        h.log("retry: %d" % retry)
        expect(2400 <= retry <= 3600, "retry %d is not 3000 +- 20 %%" % retry)
        expect(s.data()[:off] == b"retry: %d\n\n" % retry, "stream must start with the retry line")

        version, status, headers = s.headers()
        hd = dict(headers)
        expect(version == "2", "protocol is HTTP/%s, expected HTTP/2" % version)
        expect(status == 200, "status %d, expected 200" % status)
        expect(hd.get("content-type") == "text/event-stream",
               "content-type %r" % hd.get("content-type"))
        expect(hd.get("cache-control") == "no-cache", "cache-control %r" % hd.get("cache-control"))
        expect(hd.get("x-accel-buffering") == "no",
               "x-accel-buffering %r" % hd.get("x-accel-buffering"))
        expect("connection" not in hd, "connection-specific header sent over HTTP/2")

        nats.wait_subscriptions(["orders.eu"])
        h.publish(nats.url, "orders.eu", "hello\nworld", event="price")
        want = b"id: 1\nevent: price\ndata: hello\ndata: world\n\n"
        s.wait_for(lambda b: len(b) >= off + len(want), 10, "the published event")
        got = s.data()[off:]
        expect(got == want, "event bytes %r, expected %r" % (got, want))

        # A second message on the same subscription: the next id, no event line.
        h.publish(nats.url, "orders.eu", "second")
        want2 = b"id: 2\ndata: second\n\n"
        s.wait_for(lambda b: len(b) >= off + len(want) + len(want2), 10, "the second event")
        got = s.data()[off + len(want):]
        expect(got == want2, "second event bytes %r, expected %r" % (got, want2))
        expect(s.alive(), "curl ended the stream early")


def check_multi_subject(nats, gw):
    with h.CurlStream(gw, "/events?subject=multi.a&subject=multi.b", max_time=30) as s:
        _, off = s.wait_retry(timeout=10)
        nats.wait_subscriptions(["multi.a", "multi.b"])
        h.publish(nats.url, "multi.b", "from b")
        end = s.wait_bytes(b"data: from b\n\n", 10, off)
        h.publish(nats.url, "multi.a", "from a", event="x")
        s.wait_bytes(b"data: from a\n\n", 10, end)
        body = s.data()[off:].decode()
        one = r"id: ([^\n]*)\n(?:event: ([^\n]*)\n)?data: ([^\n]*)\n\n"
        m = re.fullmatch(one * 2, body)
        expect(m, "multi-subject body is not exactly two events: %r" % body)
        id1, ev1, data1, id2, ev2, data2 = m.groups()
        expect((ev1, data1, ev2, data2) == (None, "from b", "x", "from a"),
               "multi-subject events out of order or altered: %r" % body)
        ids = []
        for eid in (id1, id2):
            c = re.fullmatch(r"(\d+)-(\d+)", eid)
            expect(c, "multi-subject id %r is not composite a-b" % eid)
            ids.append((int(c.group(1)), int(c.group(2))))
        (a1, b1), (a2, b2) = ids
        expect(b1 >= 1 and a2 > a1 and b2 == b1,
               "composite ids %s, %s do not keep one sequence per subject in request order"
               % (id1, id2))


def check_nghttp(gw):
    expect(shutil.which("nghttp"), "nghttp (Debian package nghttp2-client) is not installed")
    # nghttp never ends an SSE response by itself: -t bounds the run.
    r = subprocess.run(["nghttp", "-v", "-t", "2", "https://%s/events/orders.eu" % gw.authority],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    out = r.stdout.decode(errors="replace")
    first = re.search(r"recv SETTINGS frame <[^\n]*\n((?:[ \t]+[(\[][^\n]*\n)*)", out)
    expect(first, "nghttp saw no SETTINGS frame:\n%s" % out[-2000:])
    expect("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):4096" in first.group(1),
           "first SETTINGS lacks MAX_CONCURRENT_STREAMS 4096:\n%s" % first.group(0))
    expect(re.search(r"recv \(stream_id=\d+\) :status: 200", out), "nghttp saw no 200:\n%s"
           % out[-2000:])


def test():
    with h.Nats() as nats, h.Gateway(nats.url) as gw:
        check_single_stream(nats, gw)
        time.sleep(0.2)
        gw.check_alive("after its first stream closed")
        check_multi_subject(nats, gw)
        check_nghttp(gw)
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test)
