#!/usr/bin/env python3
"""Issue 7 (1): SSE over HTTP/1.1 and the strict HTTP/1.1 request parser.

One gateway with the cleartext listener (--listen-plain 127.0.0.1:0),
--heartbeat-ms 300 and a 64 KiB --stream-queue-bytes.

  - SSE over HTTP/1.1 three ways: TLS with ALPN http/1.1, TLS without ALPN
    (python ssl), and a raw socket on the plain listener. Each response
    head is exactly the SSE head (200 OK, text/event-stream, no-cache,
    x-accel-buffering no, keep-alive, chunked, x-request-id and nothing
    else), every chunk is framed exactly, the stream begins with the start
    item, carries a named multi-line event and then ':' heartbeats.
  - ALPN offering only other protocols gets the TLS alert
    no_application_protocol.
  - Resume over HTTP/1.1: a client that saw event 3 of 5 and reconnects
    with Last-Event-ID gets 4..8 (6..8 published while it was away), then
    live events, each once and in order.
  - Slow consumer: a client with a 4 KiB receive buffer that stops reading
    while 8 KB events are published at ~6 MB/s until the gateway logs the
    cut (at most 24 MB; kernel buffers absorb a few MB first). Once the client
    drains, the response ended with the final ': slow consumer' comment and
    the last chunk, what arrived is an in-order prefix, and a new request on
    the SAME connection with Last-Event-ID replays everything after it.
  - Every strictness rule of include/sluice/h1_parse.h with its exact status, the
    connection closed after the answer.
  - Pipelining: a 404, a publish and a 404 sent in one write are answered in
    order, and the publish reaches a stream.
  - Request smuggling: CL+TE, TE hidden by obs-fold, duplicate
    Content-Length with different values and other disguises are refused
    and nothing they smuggle is published or answered.
  - curl --http1.1 -N streams (plain listener and TLS).
  - An HTTP/1.0 SSE request gets no chunked encoding (RFC 9112 6.1), and
    an SSE request with Connection: close is not answered keep-alive.
"""
import re
import socket
import ssl
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import h1_util as u  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

HEARTBEAT_MS = 300
STREAM_QUEUE = 64 * 1024
SLOW_EVENTS_MAX = 3000
SLOW_EVENT_BYTES = 8000


def sse_basics(gw, nats, pub, conn, subject):
    """Exact head, framing, start item, a named multi-line event, heartbeats."""
    with conn:
        conn.send(u.get("/events/" + subject, extra="Accept: text/event-stream\r\n"))
        conn.stream_open(timeout=10)
        _, start, off = conn.stream_start(timeout=10)
        gw.check_start_id([start])
        nats.wait_subscriptions([subject])
        pub.pub(subject, "hello\nworld", event="greet")
        pub.flush()
        end = conn.stream_bytes(b"data: world\n\n", 10, off)
        body = conn.stream_body[off:end]
        m = re.fullmatch(rb"(?::\n\n)*id: (\d+)\nevent: greet\ndata: hello\ndata: world\n\n", body)
        expect(m, "%s: expected one named two-line event, got %r" % (conn.what, body))
        expect(int(m.group(1)) > start, "%s: event id %s not above the start id %d"
               % (conn.what, m.group(1), start))
        t0 = time.monotonic()
        conn.stream_wait(lambda b: b[end:].count(b":\n\n") >= 2, 3, "two heartbeats")
        took = time.monotonic() - t0
        expect(re.fullmatch(rb"(:\n\n)+", conn.stream_body[end:]),
               "%s: idle stream carried more than heartbeats: %r" % (conn.what,
                                                                     conn.stream_body[end:]))
        h.log("%s: head, start item, event and heartbeats (2 in %.2f s) ok"
              % (conn.what, took))
        expect(not conn.stream_done, "%s: the response ended" % conn.what)


def alpn_refused(gw):
    """ALPN offering neither h2 nor http/1.1 gets the no_application_protocol alert."""
    try:
        c = u.Conn.tls(gw, alpn=("spdy/3.1", "h3"))
    except ssl.SSLError as e:
        expect("NO APPLICATION PROTOCOL" in str(e).upper().replace("_", " "),
               "ALPN without h2 or http/1.1: %s, expected no_application_protocol" % e)
        h.log("ALPN offering only other protocols: TLS alert no_application_protocol")
        return
    with c:
        raise h.TestFailure("ALPN without h2 or http/1.1 was accepted (selected %r)" % c.alpn())


def resume(gw, nats, pub):
    subject = "h1.resume"
    c = u.Conn.tls(gw, alpn=None)
    with c:
        c.send(u.get("/events/" + subject))
        c.stream_open()
        _, start, off = c.stream_start()
        nats.wait_subscriptions([subject])
        for i in range(1, 6):
            pub.pub(subject, "r%d" % i)
        pub.flush()
        end = c.stream_bytes(b"data: r5\n\n", 10, off)
        evs = h.events_of(c.stream_body[off:end])
        expect([e.data for e in evs] == [["r%d" % i] for i in range(1, 6)],
               "before the reconnect: %r" % evs)
        ids = [int(e.id) for e in evs]
        expect(ids == sorted(ids) and ids[0] > start, "ids not increasing: %r" % ids)
        last_seen = evs[2].id  # pretend events 4 and 5 were lost with the connection
    for i in range(6, 9):
        pub.pub(subject, "r%d" % i)
    pub.flush()
    with u.Conn.plain(gw) as c2:
        c2.send(u.get("/events/" + subject, extra="Last-Event-ID: %s\r\n" % last_seen))
        c2.stream_open()
        c2.stream_bytes(b"data: r8\n\n", 10)
        pub.pub(subject, "r9")
        pub.flush()
        end = c2.stream_bytes(b"data: r9\n\n", 10)
        blocks, _ = h.parse_blocks(c2.stream_body[:end])
        expect(not blocks[0].is_event and blocks[0].id == last_seen,
               "a resumed stream should begin with retry + id %s, got %r" % (last_seen, blocks[0]))
        evs = [b for b in blocks if b.is_event]
        expect([e.data for e in evs] == [["r%d" % i] for i in range(4, 10)],
               "resume after r3 gave %r" % [e.data for e in evs])
        expect([e.id for e in evs[:2]] == [str(i) for i in ids[3:5]],
               "replayed events keep their ids: %r vs %r" % ([e.id for e in evs[:2]], ids[3:5]))
        rids = [int(e.id) for e in evs]
        expect(rids == sorted(set(rids)), "resumed ids not strictly increasing: %r" % rids)
    h.log("resume over HTTP/1.1 with Last-Event-ID: r4..r9 once each, in order")


def slow_consumer(gw, nats, pub):
    subject = "h1.slow"
    c = u.Conn.plain(gw, rcvbuf=4096)
    with c:
        c.send(u.get("/events/" + subject))
        c.stream_open()
        _, start, off = c.stream_start()
        nats.wait_subscriptions([subject])
        mark = len(gw.log())
        pad = "s" * SLOW_EVENT_BYTES
        cut = re.compile(r"slow consumer: .*ending stream")
        # Paced (about 6 MB/s) so that a reading client would keep up: the cut
        # must come from this client not reading, not from one burst. Kernel
        # buffers absorb a few MB first, so go on until the cut is logged.
        n = 0
        while n < SLOW_EVENTS_MAX and not cut.search(gw.log(), mark):
            for _ in range(4):
                n += 1
                pub.pub(subject, "%d %s" % (n, pad))
            pub.flush()
            time.sleep(0.005)
        gw.wait_log(cut.pattern, timeout=5, start=mark)
        for _ in range(40):  # a few more after the cut: the resume must replay them too
            n += 1
            pub.pub(subject, "%d %s" % (n, pad))
        pub.flush()
        h.log("published %d x %d bytes to a client that does not read; the gateway cut it"
              % (n, SLOW_EVENT_BYTES))
        # Now drain: the response must end cleanly, and the connection stay open.
        body = c.stream_end(timeout=20)
        expect(body.endswith(b": slow consumer, reconnect to resume\n\n"),
               "the cut response does not end with the slow-consumer comment: %r" % body[-200:])
        evs = h.events_of(body[off:])
        got = [int(e.data[0].split()[0]) for e in evs]
        expect(got == list(range(1, len(got) + 1)),
               "what arrived before the cut is not an in-order prefix: %r..." % got[:20])
        expect(len(got) < n, "no event was dropped: the stream was not cut")
        h.log("cut after %d of %d events; the response ended with the last chunk"
              % (len(got), n))
        last_id = evs[-1].id if evs else str(start)
        expect(not c.eof, "the gateway closed the keep-alive connection after the cut")
        # The same connection carries the resumed stream.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        c.send(u.get("/events/" + subject, extra="Last-Event-ID: %s\r\n" % last_id))
        c.stream_open(timeout=10)
        c.stream_wait(lambda b: b.endswith(b"\ndata: %d %s\n\n" % (n, pad.encode())),
                      20, "event %d" % n)
        evs2 = h.events_of(c.stream_body)
        got2 = [int(e.data[0].split()[0]) for e in evs2]
        expect(got2 == list(range(len(got) + 1, n + 1)),
               "resume on the same connection replayed %d events %r..., expected %d..%d"
               % (len(got2), got2[:10], len(got) + 1, n))
        h.log("same connection resumed with Last-Event-ID: events %d..%d replayed"
              % (len(got) + 1, n))


# (name, raw request, status). Each on its own plain connection.
def rejections():
    hdrs = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 400) for i in range(42))
    many = b"".join(b"X-F%d: v\r\n" % i for i in range(70))
    return [
        ("CL and TE", b"POST /publish/h1.rej HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("obs-fold", b"GET /events/h1.rej HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n", 400),
        ("obs-fold tab", b"GET /events/h1.rej HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n\tb\r\n\r\n", 400),
        ("space after request line", b"GET /x HTTP/1.1\r\n Host: localhost\r\n\r\n", 400),
        ("bare CR in a field", b"GET /x HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400),
        ("bare CR in request line", b"GET /x\r HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        ("bare LF ends request line", b"GET /x HTTP/1.1\nHost: localhost\r\n\r\n", 400),
        ("bare LF ends head", b"GET /x HTTP/1.1\r\nHost: x\n\n", 400),
        ("invalid char in field name", b"GET /x HTTP/1.1\r\nHost: localhost\r\nX(A): b\r\n\r\n", 400),
        ("empty field name", b"GET /x HTTP/1.1\r\nHost: localhost\r\n: b\r\n\r\n", 400),
        ("space before colon", b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-A : b\r\n\r\n", 400),
        ("control char in value", b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\x01b\r\n\r\n", 400),
        ("NUL in value", b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n", 400),
        ("invalid method char", b"G@T /x HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        ("two spaces", b"GET  /x HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        ("NUL in target", b"GET /x\x00y HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        ("'#' in target", b"GET /x#y HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        ("lowercase version", b"GET /x http/1.1\r\nHost: localhost\r\n\r\n", 400),
        ("missing Host", b"GET /x HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", b"GET /x HTTP/1.1\r\nHost: localhost\r\nHost: y\r\n\r\n", 400),
        ("invalid Host", b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
         414),
        ("head over 16 KiB", b"GET /x HTTP/1.1\r\nHost: localhost\r\n" + hdrs + b"\r\n", 431),
        ("over 64 header lines", b"GET /x HTTP/1.1\r\nHost: localhost\r\n" + many + b"\r\n", 431),
        ("HTTP/2.0 request line", b"GET /x HTTP/2.0\r\nHost: localhost\r\n\r\n", 505),
        ("HTTP/1.2", b"GET /x HTTP/1.2\r\nHost: localhost\r\n\r\n", 505),
        ("HTTP/3.0", b"GET /x HTTP/3.0\r\nHost: localhost\r\n\r\n", 505),
        ("CONNECT", b"CONNECT x:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n", 501),
        ("'*' not for OPTIONS", b"GET * HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        ("user info in absolute-form", b"GET http://u@x/ HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        ("Content-Length list", b"POST /publish/h1.rej HTTP/1.1\r\nHost: localhost\r\n"
                                b"Content-Length: 3, 3\r\n\r\nabc", 400),
        ("negative Content-Length", b"POST /publish/h1.rej HTTP/1.1\r\nHost: localhost\r\n"
                                    b"Content-Length: -1\r\n\r\n", 400),
        ("overflowing Content-Length", b"POST /publish/h1.rej HTTP/1.1\r\nHost: localhost\r\n"
                                       b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
        ("TE on HTTP/1.0", b"POST /publish/h1.rej HTTP/1.0\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE chunked twice", b"POST /publish/h1.rej HTTP/1.1\r\nHost: localhost\r\n"
                             b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE chunked not last", b"POST /publish/h1.rej HTTP/1.1\r\nHost: localhost\r\n"
                                b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ]


def strictness(gw):
    bad = []
    for name, raw, status in rejections():
        with u.Conn.plain(gw) as c:
            c.send(raw)
            try:
                r = c.read_response(5)
            except h.TestFailure as e:
                bad.append("%s: no answer (%s)" % (name, e))
                continue
            closed = c.wait_closed(3)
            if r.status != status:
                bad.append("%s: %d %r, expected %d" % (name, r.status, r.body[:60], status))
            elif r.header("connection") != "close" or not closed:
                bad.append("%s: %d but the connection was not closed (connection: %s, closed %s)"
                           % (name, status, r.header("connection"), closed))
            elif not r.body.strip() or b"\n" in r.body.rstrip(b"\n"):
                bad.append("%s: the reason is not one line: %r" % (name, r.body))
    # The same parser guards the TLS listener.
    for name, raw, status in rejections()[:3]:
        with u.Conn.tls(gw) as c:
            c.send(raw)
            r = c.read_response(5)
            if r.status != status or not c.wait_closed(3):
                bad.append("TLS %s: %d, expected %d and a close" % (name, r.status, status))
    expect(not bad, "strictness rejections wrong:\n  " + "\n  ".join(bad))
    h.log("%d malformed requests rejected with the exact status, each connection closed"
          % len(rejections()))


def pipelining(gw, nats):
    subject = "h1.pipe"
    with u.Conn.plain(gw) as s, u.Conn.plain(gw) as c:
        s.send(u.get("/events/" + subject))
        s.stream_open()
        _, _, off = s.stream_start()
        nats.wait_subscriptions([subject])
        c.send(u.get("/nope", extra="X-Request-Id: first\r\n") +
               u.post("/publish/%s?event=piped" % subject, "in order",
                      extra="X-Request-Id: second\r\n") +
               u.get("/also-nope", extra="X-Request-Id: third\r\n"))
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
        got = [(r.status, r.header("x-request-id")) for r in (r1, r2, r3)]
        expect(got == [(404, "first"), (202, "second"), (404, "third")],
               "pipelined answers out of order or wrong: %r" % got)
        expect(r1.body == b"not found\n" and r1.header("content-type").startswith("text/plain"),
               "404 body %r" % r1.body)
        end = s.stream_bytes(b"data: in order\n\n", 10, off)
        m = re.fullmatch(rb"(?::\n\n)*id: \d+\nevent: piped\ndata: in order\n\n",
                         s.stream_body[off:end])
        expect(m, "the pipelined publish arrived as %r" % s.stream_body[off:end])
        # The connection is still usable afterwards.
        c.send(u.get("/nope"))
        expect(c.read_response().status == 404, "keep-alive after pipelining failed")
    h.log("pipelined 404, publish, 404 answered in order; the publish reached the stream")


def smuggling(gw, nats, pub):
    subject = "h1.smug"
    target = "/publish/%s?event=smuggled" % subject
    inner = (b"POST " + target.encode() + b" HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\n"
             b"evil")
    attempts = [
        ("CL+TE", b"POST /publish/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s"
         % (subject.encode(), 5 + len(inner), inner)),
        ("TE+CL", b"POST /publish/%s HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 4\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
         % (subject.encode(), len(inner), inner)),
        ("TE hidden by obs-fold", b"POST /publish/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
                                  b"X-Pad: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s"
         % (subject.encode(), 5 + len(inner), inner)),
        ("TE value folded", b"POST /publish/%s HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\r\n"
                            b" chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n%s"
         % (subject.encode(), inner)),
        ("duplicate CL", b"POST /publish/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (subject.encode(), len(inner), inner)),
        ("TE with space before colon", b"POST /publish/%s HTTP/1.1\r\nHost: localhost\r\n"
                                       b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n\r\n"
                                       b"0\r\n\r\n%s" % (subject.encode(), 5 + len(inner), inner)),
        ("TE xchunked", b"POST /publish/%s HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n"
                        b"\r\n0\r\n\r\n%s" % (subject.encode(), inner)),
        ("TE via bare LF", b"POST /publish/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
                           b"X-Pad: a\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s"
         % (subject.encode(), 5 + len(inner), inner)),
    ]
    with u.Conn.plain(gw) as s:
        s.send(u.get("/events/" + subject))
        s.stream_open()
        _, _, off = s.stream_start()
        nats.wait_subscriptions([subject])
        bad = []
        for name, raw in attempts:
            with u.Conn.plain(gw) as c:
                c.send(raw)
                r = c.read_response(5)
                closed = c.wait_closed(3)
                extra = c.buf
                if r.status not in (400, 501) or not closed or extra:
                    bad.append("%s: %d, closed %s, then %r" % (name, r.status, closed, extra[:100]))
        # A sentinel: the stream must see it and nothing before it.
        pub.pub(subject, "sentinel")
        pub.flush()
        end = s.stream_bytes(b"data: sentinel\n\n", 10, off)
        evs = h.events_of(s.stream_body[off:end])
        if len(evs) != 1:
            bad.append("smuggled events reached the stream: %r" % evs)
        expect(not bad, "smuggling attempts not refused:\n  " + "\n  ".join(bad))
    h.log("%d smuggling attempts refused; nothing smuggled was published" % len(attempts))


def curl_streams(gw, nats, pub):
    for name, mk in (("plain", lambda p: u.PlainCurlStream(gw, p, max_time=20)),
                     ("tls", lambda p: h.CurlStream(gw, p, max_time=20, extra=["--http1.1"]))):
        subject = "h1.curl." + name
        with mk("/events/" + subject) as s:
            _, _, off = s.wait_start(timeout=10)
            nats.wait_subscriptions([subject])
            version, status, headers = s.headers()
            expect(version == "1.1" and status == 200, "curl %s: HTTP/%s %d" % (name, version,
                                                                                status))
            hd = dict(headers)
            expect(hd.get("transfer-encoding") == "chunked" and
                   hd.get("content-type") == "text/event-stream", "curl %s headers %r"
                   % (name, headers))
            pub.pub(subject, "via curl", event="greet")
            pub.flush()
            end = s.wait_bytes(b"data: via curl\n\n", 10, off)
            expect(re.fullmatch(rb"(?::\n\n)*id: \d+\nevent: greet\ndata: via curl\n\n",
                                s.data()[off:end]), "curl %s got %r" % (name, s.data()[off:end]))
            s.wait_for(lambda b: b.count(b":\n\n", end) >= 1, 3, "a heartbeat")
            expect(s.alive(), "curl %s ended" % name)
    h.log("curl --http1.1 -N streams over the plain listener and TLS")


def http10_and_close(gw, nats, pub):
    """An HTTP/1.0 client cannot take chunked; Connection: close is honoured in the head.

    RFC 9112 6.1: a server MUST NOT send Transfer-Encoding in a response to
    an HTTP/1.0 request, so the stream is the raw SSE body delimited by the
    close. RFC 9112 9.6: the answer to a request with Connection: close
    should say close, never keep-alive.
    """
    bad = []
    subject = "h1.v10"
    with u.Conn.plain(gw) as c:
        c.send(b"GET /events/%s HTTP/1.0\r\n\r\n" % subject.encode())
        hd = c.read_head()
        if hd.status != 200:
            bad.append("HTTP/1.0 SSE request: %d" % hd.status)
        elif hd.get("transfer-encoding") is not None:
            bad.append("HTTP/1.0 SSE request answered with transfer-encoding: %s (head %r)"
                       % (hd.get("transfer-encoding"), hd.raw))
        else:
            if hd.get("connection") == "keep-alive":
                bad.append("HTTP/1.0 SSE response without a length says keep-alive")
            nats.wait_subscriptions([subject])
            pub.pub(subject, "old client")
            pub.flush()
            deadline = time.monotonic() + 10
            while b"data: old client\n\n" not in c.buf and c._fill(deadline):
                pass
            if not h.START_RE.match(c.buf) or b"data: old client\n\n" not in c.buf:
                bad.append("HTTP/1.0 raw SSE body: %r" % c.buf[:300])
    with u.Conn.plain(gw) as c:
        c.send(u.get("/events/h1.close", extra="Connection: close\r\n"))
        hd = c.read_head()
        if hd.get("connection") != "close":
            bad.append("SSE request with Connection: close answered with connection: %s"
                       % hd.get("connection"))
    expect(not bad, "; ".join(bad))
    h.log("HTTP/1.0 stream without chunked; Connection: close honoured in the SSE head")


def test():
    with h.Nats() as nats, u.gateway(nats.url, heartbeat_ms=HEARTBEAT_MS,
                                     stream_queue_bytes=STREAM_QUEUE,
                                     history_events=4000, history_bytes=32 << 20) as gw, \
            nu.NatsClient(nats.port) as pub:
        c = u.Conn.tls(gw, alpn=("http/1.1",))
        expect(c.alpn() == "http/1.1", "ALPN http/1.1 selected %r" % c.alpn())
        sse_basics(gw, nats, pub, c, "h1.tls.alpn")
        c = u.Conn.tls(gw, alpn=None)
        expect(c.alpn() is None, "no ALPN offered but %r selected" % c.alpn())
        sse_basics(gw, nats, pub, c, "h1.tls.none")
        sse_basics(gw, nats, pub, u.Conn.plain(gw), "h1.plain")
        alpn_refused(gw)
        resume(gw, nats, pub)
        slow_consumer(gw, nats, pub)
        strictness(gw)
        pipelining(gw, nats)
        smuggling(gw, nats, pub)
        curl_streams(gw, nats, pub)
        gw.check_alive()
        # Last: it found gateway bugs (chunked sent to HTTP/1.0, keep-alive despite close).
        http10_and_close(gw, nats, pub)
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=90)
