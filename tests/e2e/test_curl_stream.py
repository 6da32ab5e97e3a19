#!/usr/bin/env python3
"""Issue 2 (a): curl --http2 -N receives a published event; exact bytes and headers.

The stream begins with "retry: N\nid: START\n\n" (the retry hint, the default
3000 ms within +-20 %, and the starting id with no data); START is a
sequence number of this gateway (its wall clock in microseconds at start
plus messages since), and each event's id is above the one before.
A multi-subject stream (/events?subject=A&subject=B) gets events of both
subjects with composite ids A-B, one position per subject in request
order, of which only the subject that carried the event moves. nghttp -v
sees SETTINGS_MAX_CONCURRENT_STREAMS in the server's first SETTINGS frame.
"""
import re
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
from harness import expect  # noqa: E402


def check_single_stream(nats, gw):
    with h.CurlStream(gw, "/events/orders.eu", max_time=30) as s:
        retry, (start,), off = s.wait_start(timeout=10)
        h.log("retry: %d, start id %d" % (retry, start))
        expect(2400 <= retry <= 3600, "retry %d is not 3000 +- 20 %%" % retry)
        expect(s.data()[:off] == b"retry: %d\nid: %d\n\n" % (retry, start),
               "stream must start with the retry line and its starting id, no data: %r"
               % s.data()[:off])
        gw.check_start_id([start])

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
        one = rb"id: (\d+)\nevent: price\ndata: hello\ndata: world\n\n"
        end = s.wait_bytes(b"data: world\n\n", 10, off)
        m = re.fullmatch(one, s.data()[off:end])
        expect(m, "event bytes %r, expected id + event: price + two data lines"
               % s.data()[off:end])
        id1 = int(m.group(1))
        expect(id1 > start, "first event id %d is not above the start id %d" % (id1, start))

        # A second message on the same subscription: a higher id, no event line.
        h.publish(nats.url, "orders.eu", "second")
        end2 = s.wait_bytes(b"data: second\n\n", 10, end)
        m = re.fullmatch(rb"id: (\d+)\ndata: second\n\n", s.data()[end:end2])
        expect(m, "second event bytes %r, expected id + one data line" % s.data()[end:end2])
        id2 = int(m.group(1))
        expect(id2 > id1, "second event id %d is not above the first %d" % (id2, id1))
        # Fence: a marker published after "second" is the next thing on the
        # stream; anything between (a repeat, a stray block) is a failure.
        extra, marker, _ = h.read_until_marker(
            s, lambda m: h.publish(nats.url, "orders.eu", m), start=end2,
            what="after the second event")
        expect(not extra, "unexpected blocks after the second event: %r"
               % [b.raw for b in extra])
        expect(h.parse_id(marker.id)[0] > id2, "the marker's id %s is not above %d"
               % (marker.id, id2))
        expect(s.alive(), "curl ended the stream early")


def check_multi_subject(nats, gw):
    with h.CurlStream(gw, "/events?subject=multi.a&subject=multi.b", max_time=30) as s:
        _, (a0, b0), off = s.wait_start(timeout=10, nsubjects=2)
        gw.check_start_id([a0, b0])
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
        (a1, b1), (a2, b2) = h.parse_id(id1, 2), h.parse_id(id2, 2)
        # One position per subject in request order (a, then b); only the
        # subject that carried the event moves.
        expect(a1 == a0 and b1 > b0, "after an event on b the id is %s, expected %d-(>%d)"
               % (id1, a0, b0))
        expect(a2 > a0 and b2 == b1, "after an event on a the id is %s, expected (>%d)-%d"
               % (id2, a0, b1))


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
        # Bounded poll, not a sleep: the gateway has handled the close once
        # it counts no open stream; it must still be running then.
        mu.wait_metric(gw, "sluice_streams_open", 0)
        gw.check_alive("after its first stream closed")
        check_multi_subject(nats, gw)
        check_nghttp(gw)
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test)
