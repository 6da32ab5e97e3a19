#!/usr/bin/env python3
"""Issue 5 (3): hostile HTTP/2 clients are cut off; a well-behaved one never notices.

Two gateways, one worker each (so abusive connections share the event
loop with the well-behaved stream):
  A  --stream-rate 100000 (out of the way of nghttp2's own limits),
     --max-header-bytes 4096;
  B  --stream-rate 20, --max-connections-per-address 3,
     --handshake-timeout-ms 1000, --idle-timeout-ms 1500.

Throughout, a NATS publisher sends "1", "2", ... at 40/s on steady.s and a
curl --http2 -N stream on each gateway must receive every one, in order,
with no gap; both gateways stay up and exit 0 on SIGTERM.

Raw clients (TLS, ALPN h2, hand-built frames) against A:
  - rapid reset: HEADERS + RST_STREAM(CANCEL) thousands of times -> GOAWAY
    with an error code, then close;
  - SETTINGS flood: 10000 empty SETTINGS frames -> closed;
  - one SETTINGS frame with 40 entries (limit 32) -> GOAWAY, closed;
  - PING flood, never reading -> closed (or held back by TCP: bounded);
  - CONTINUATION flood: HEADERS without END_HEADERS and 100 CONTINUATION
    frames -> closed;
  - headers over --max-header-bytes (one big field, or many small ones)
    -> 431 on that stream, the connection stays usable, a list just under
    the limit is served; curl over h2 and HTTP/1.1 -> 431.
against B:
  - 30 streams at once -> the first ~20 answered, the rest
    RST_STREAM(REFUSED_STREAM); 1100 more -> GOAWAY(ENHANCE_YOUR_CALM),
    closed; a new connection is served again;
  - a 4th connection from one source address (127.0.0.12) -> refused at
    accept, while another address is served; a slot freed is reusable;
  - a TCP connection that never starts TLS, and one that trickles its
    ClientHello a byte per 100 ms -> closed after ~1 s;
  - a connection with no stream (fresh, or after its only request) ->
    GOAWAY(NO_ERROR) after 1.5-3 s, then closed;
  - a PING stream that never reads, slower than the flood detector: the
    gateway stops reading it (TCP holds the client back) and, since it has
    no stream, the idle timeout must still close it;
  - a connection that makes a short request every 0.2 s is not idle.
sluice_limit_hits_total counts each breach: flood, stream_rate,
connections_per_address, handshake_timeout, idle_timeout, header_bytes;
each flood that closes a connection leaves an info line naming it.

Checks that fail without stopping the rest (counters, the stuck reader)
are collected and reported together at the end.
"""
import re
import socket
import ssl
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import sec_util as u  # noqa: E402
from harness import HOST, expect  # noqa: E402
import h2_util as h2  # noqa: E402
from h2_util import (ACK, CANCEL, CONTINUATION, END_STREAM,  # noqa: E402
                     ENHANCE_YOUR_CALM, HEADERS, NO_ERROR, PING, REFUSED_STREAM, RST_STREAM,
                     SETTINGS, err_name, frame, raw_conn)

problems = []


def soft(cond, msg):
    if not cond:
        h.log("FAILED CHECK: " + msg)
        problems.append(msg)
    return cond


class Hits:
    """sluice_limit_hits_total (and the log) before an action, and what it grew by after."""

    def __init__(self, gw):
        self.gw = gw
        self.before = mu.limit_hits(gw)
        self.log_at = len(gw.log())

    def logged(self, what, timeout=1.0):
        """README: protocol errors that close a connection are logged at info. Soft check."""
        rx = re.compile(r"^\S+ (info|warn) .*conn \d+", re.M)
        deadline = time.monotonic() + timeout
        while not rx.search(self.gw.log(), self.log_at) and time.monotonic() < deadline:
            time.sleep(0.1)
        return soft(rx.search(self.gw.log(), self.log_at),
                    "%s: no log line names the connection it closed" % what)

    def grew(self, label, what, at_least=1, timeout=1.5, exactly=None):
        """Waits (bounded) for the counter to grow; a soft check. Returns the growth."""
        def delta():
            return mu.limit_hits(self.gw).get(label, 0) - self.before.get(label, 0)
        want = exactly if exactly is not None else at_least
        deadline = time.monotonic() + timeout
        d = delta()
        while d < want and time.monotonic() < deadline:
            time.sleep(0.1)
            d = delta()
        if exactly is not None:
            soft(d == exactly, '%s: sluice_limit_hits_total{limit="%s"} grew by %d, expected %d'
                 % (what, label, d, exactly))
        else:
            soft(d >= at_least, '%s: sluice_limit_hits_total{limit="%s"} grew by %d, expected '
                 'at least %d' % (what, label, d, at_least))
        return d


def goaway_text(c):
    g = c.goaway()
    return "GOAWAY(%s, last stream %d)" % (err_name(g[1]), g[0]) if g else "no GOAWAY"


# ---------------------------------------------------------------------------
# gateway A: nghttp2's limits and the header cap


def rapid_reset(gw):
    hits = Hits(gw)
    c = raw_conn(gw)
    c.pump(0.3)
    sid, sent = 1, 0
    t0 = time.monotonic()
    while sent < 5000 and not c.closed and not c.send_failed and not c.goaway():
        batch = []
        for _ in range(100):
            batch.append(c.request_frame(sid, "/events/flood.rr%d" % (sid % 4)))
            batch.append(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
            sid += 2
            sent += 1
        if not c.send(b"".join(batch)):
            break
        c.pump(0)
    closed = c.wait_closed(5)
    g = c.goaway()
    h.log("rapid reset: %d streams opened and reset in %.2f s; %s; closed %s"
          % (sent, time.monotonic() - t0, goaway_text(c), closed))
    expect(g is not None and g[1] != NO_ERROR,
           "rapid reset: expected a GOAWAY with an error code, got %s" % goaway_text(c))
    expect(closed, "rapid reset: the connection is still open 5 s after its GOAWAY")
    expect(g[0] < 2 * 1500, "rapid reset: GOAWAY's last stream %d: more than 1500 streams "
           "were processed" % g[0])
    c.close()
    hits.grew("flood", "rapid reset")
    hits.logged("rapid reset")


def settings_flood(gw):
    hits = Hits(gw)
    c = raw_conn(gw)
    c.pump(0.3)
    # 1,800 empty SETTINGS (16,200 bytes) per send: one TLS record, so one read
    # hands nghttp2 more ACKs to queue than its limit of 1,000 at once. With
    # 1,000 per record, a busy gateway flushed between records and the
    # queue never passed the limit (the client was reading the ACKs).
    for _ in range(6):
        if not c.send(frame(SETTINGS, 0, 0) * 1800):
            break
    closed = c.wait_closed(5)
    h.log("SETTINGS flood: closed %s, %s, %d SETTINGS ACKs read"
          % (closed, goaway_text(c), sum(1 for f in c.of_type(SETTINGS) if f.flags & ACK)))
    expect(closed, "SETTINGS flood: the connection is still open after 5 s")
    c.close()
    hits.grew("flood", "SETTINGS flood")
    hits.logged("SETTINGS flood")


def settings_entries(gw):
    hits = Hits(gw)
    c = raw_conn(gw)
    c.pump(0.3)
    c.send(frame(SETTINGS, 0, 0, h2.settings_payload([(0x4, 65535)] * 40)))
    closed = c.wait_closed(5)
    h.log("SETTINGS with 40 entries: closed %s, %s" % (closed, goaway_text(c)))
    expect(c.goaway() and c.goaway()[1] == ENHANCE_YOUR_CALM,
           "SETTINGS with 40 entries: expected GOAWAY(ENHANCE_YOUR_CALM), got %s"
           % goaway_text(c))
    expect(closed, "SETTINGS with 40 entries: the connection is still open after 5 s")
    c.close()
    hits.grew("flood", "SETTINGS with 40 entries")
    hits.logged("SETTINGS with 40 entries")


def ping_flood(gw):
    hits = Hits(gw)
    c = raw_conn(gw)
    c.pump(0.3)
    n = 0
    c.timeout = 2
    while n < 40000 and not c.closed and not c.send_failed and not c.send_blocked:
        if c.send(frame(PING, 0, 0, b"floodfld") * 1000):
            n += 1000
    closed = c.wait_closed(5)
    h.log("PING flood without reading: %d PINGs sent; closed %s, send held back %s, %s"
          % (n, closed, c.send_blocked, goaway_text(c)))
    expect(closed or c.send_blocked,
           "PING flood: the gateway took %d PINGs without reading and without closing" % n)
    c.close()
    hits.grew("flood", "PING flood")
    hits.logged("PING flood")


def continuation_flood(gw):
    hits = Hits(gw)
    c = raw_conn(gw)
    c.pump(0.3)
    first = h2.header_block(h2.request_headers(gw, "/events/flood.cont"))
    data = frame(HEADERS, END_STREAM, 1, first)
    data += b"".join(frame(CONTINUATION, 0, 1, h2.hpack_literal("x-c%d" % i, "v"))
                     for i in range(100))
    c.send(data)
    closed = c.wait_closed(5)
    h.log("CONTINUATION flood: closed %s, %s, response on stream 1: %s"
          % (closed, goaway_text(c), c.headers_on(1)))
    expect(closed, "CONTINUATION flood: the connection is still open after 5 s")
    expect(not c.headers_on(1), "CONTINUATION flood: the request was answered")
    c.close()
    hits.grew("flood", "CONTINUATION flood")
    hits.logged("CONTINUATION flood")


def oversized_headers(gw):
    hits = Hits(gw)
    c = raw_conn(gw)
    c.pump(0.3)
    c.send(c.request_frame(1, "/events/flood.big", extra=[("x-big", "a" * 5000)]))
    c.send(c.request_frame(3, "/nope"))
    c.send(c.request_frame(5, "/nope", extra=[("x-fits", "a" * 3000)]))
    c.wait(lambda x: all(x.headers_on(s) or s in x.resets() for s in (1, 3, 5)), 5)
    st = {s: c.status(s) for s in (1, 3, 5)}
    h.log("oversized headers (max 4096): statuses %r, resets %r, %s"
          % (st, c.resets(), goaway_text(c)))
    expect(st[1] == 431, "a 5000-byte header: stream 1 got %r, expected 431" % st[1])
    expect(st[3] == 404, "after a 431 the connection still serves: stream 3 got %r" % st[3])
    expect(st[5] == 404, "a 3000-byte header (under the limit) got %r, expected 404" % st[5])
    expect(not c.closed, "the connection was closed after a 431")
    c.close()
    # Many small fields: the list size counts 32 bytes per field (a fresh connection, so
    # that the :status is the first one HPACK encodes and needs no dynamic table).
    c = raw_conn(gw)
    c.send(c.request_frame(1, "/events/flood.many", extra=[("x-h%03d" % i, "v" * 20)
                                                      for i in range(120)]))
    c.wait(lambda x: x.headers_on(1) or 1 in x.resets(), 5)
    h.log("120 fields of ~60 bytes: status %r, resets %r" % (c.status(1), c.resets()))
    expect(c.status(1) == 431, "120 fields of ~60 bytes: got %r, expected 431" % c.status(1))
    c.close()
    for http1 in (False, True):
        p = u.Probe(gw, "/events/flood.big", ["-H", "x-big: " + "b" * 6000], http1)
        expect(p.status == 431, "%s with a 6000-byte header: status %d, expected 431"
               % (p.what, p.status))
    hits.grew("header_bytes", "oversized headers", exactly=4)


# ---------------------------------------------------------------------------
# gateway B: the gateway's own limits


def stream_rate(gw):
    hits = Hits(gw)
    c = raw_conn(gw, source="127.0.0.11")
    c.pump(0.3)
    # Stream 1 stays open (an SSE stream), so that the idle timeout keeps out of this.
    c.send(c.request_frame(1, "/events/flood.keep"))
    c.wait(lambda x: x.headers_on(1), 5)
    expect(c.status(1) == 200, "the SSE stream kept open got %r" % c.status(1))
    sids = list(range(3, 63, 2))
    t0 = time.monotonic()
    c.send(b"".join(c.request_frame(s, "/nope") for s in sids))
    c.wait(lambda x: all(x.headers_on(s) or s in x.resets() for s in sids), 5)
    # 19 tokens left, and at most one more each 50 ms the gateway took to read them.
    most = h.bucket_most(19, time.monotonic() - t0, 20)
    rs = c.resets()
    served = [s for s in sids if c.headers_on(s)]
    refused = [s for s in sids if rs.get(s) == REFUSED_STREAM]
    h.log("1 + 30 streams at --stream-rate 20: %d of 30 served, %d refused (%r)"
          % (len(served), len(refused), sorted(set(err_name(v) for v in rs.values()))))
    expect(17 <= len(served) <= most, "%d of 30 streams served at --stream-rate 20 (one token "
           "spent on the SSE stream; at most %d)" % (len(served), most))
    expect(len(served) + len(refused) == 30 and not set(served) & set(refused),
           "each stream must be served or refused with REFUSED_STREAM: resets %r"
           % {k: err_name(v) for k, v in rs.items()})
    expect(all(c.status(s) == 404 for s in served), "served streams: statuses %r"
           % [c.status(s) for s in served])
    hits.grew("stream_rate", "stream rate", exactly=len(refused))

    hits = Hits(gw)
    sid = sids[-1] + 2
    for _ in range(11):
        if not c.send(b"".join(c.request_frame(sid + 2 * i, "/nope") for i in range(100))):
            break
        sid += 200
        c.pump(0)
    closed = c.wait_closed(5)
    h.log("1100 more streams: %s, closed %s, %d refused in all"
          % (goaway_text(c), closed, sum(1 for v in c.resets().values() if v == REFUSED_STREAM)))
    expect(c.goaway() and c.goaway()[1] == ENHANCE_YOUR_CALM,
           "persistent stream creation: expected GOAWAY(ENHANCE_YOUR_CALM), got %s"
           % goaway_text(c))
    expect(closed, "persistent stream creation: still open 5 s after GOAWAY")
    c.close()
    hits.grew("flood", "stream rate")
    # The burst that trips the cut began with the refusals above (no quiet second since).
    hits.grew("stream_rate", "stream rate", at_least=1001 - len(refused))

    c = raw_conn(gw, source="127.0.0.11")
    c.send(c.request_frame(1, "/nope"))
    c.wait(lambda x: x.headers_on(1) or 1 in x.resets(), 5)
    expect(c.status(1) == 404, "a new connection after the flood: stream 1 got %r, resets %r"
           % (c.status(1), c.resets()))
    c.close()


def try_connect(gw, source):
    """An adversarial h2 connection that completed TLS and got the server's SETTINGS, or None if refused."""
    try:
        c = raw_conn(gw, source=source, timeout=3)
    except (OSError, ssl.SSLError) as e:
        return None, repr(e)
    c.wait(lambda x: x.of_type(SETTINGS), 3)
    if not c.of_type(SETTINGS):
        c.close()
        return None, "closed before SETTINGS"
    return c, None


def per_address(gw):
    hits = Hits(gw)
    conns = []
    for i in range(3):
        c, why = try_connect(gw, "127.0.0.12")
        expect(c, "connection %d of 3 from 127.0.0.12 refused: %s" % (i + 1, why))
        conns.append(c)
    c, why = try_connect(gw, "127.0.0.12")
    h.log("4th connection from 127.0.0.12 (limit 3): %s" % ("accepted" if c else why))
    expect(c is None, "a 4th connection from one address was accepted (limit 3)")
    other, why = try_connect(gw, "127.0.0.13")
    expect(other, "a connection from another address was refused: %s" % why)
    other.close()
    hits.grew("connections_per_address", "per-address limit", exactly=1)
    conns.pop().close()
    again = h.wait_until(lambda: try_connect(gw, "127.0.0.12")[0], 5,
                         "a freed per-address slot to be reusable", interval=0.2)
    conns.append(again)
    for c in conns:
        c.close()


def client_hello(gw):
    """The bytes of a real ClientHello (ALPN h2) for the gateway, via a memory BIO."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = h.tls_context(gw).wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def slowloris(gw):
    hits = Hits(gw)
    hello = client_hello(gw)
    for what in ("silent", "trickle"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.14", 0))
        s.settimeout(5)
        s.connect((HOST, gw.port))
        t0 = time.monotonic()
        closed = False
        if what == "trickle":
            for i in range(min(len(hello) - 1, 60)):
                try:
                    s.sendall(hello[i:i + 1])
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)  # the trickle itself: one byte every 0.1 s
        if not closed:
            _, closed = h.read_until_closed(s, 5 - (time.monotonic() - t0))
        took = time.monotonic() - t0
        s.close()
        h.log("slowloris (%s): closed %s after %.2f s (--handshake-timeout-ms 1000)"
              % (what, closed, took))
        expect(closed and 0.8 <= took <= 3.0, "slowloris (%s): closed %s after %.2f s, expected "
               "about 1 s" % (what, closed, took))
    hits.grew("handshake_timeout", "slowloris", exactly=2)


def idle(gw):
    hits = Hits(gw)
    fresh = raw_conn(gw, source="127.0.0.15")
    used = raw_conn(gw, source="127.0.0.15")
    used.send(used.request_frame(1, "/nope"))
    t0 = time.monotonic()
    deadline = t0 + 6
    while time.monotonic() < deadline and not (fresh.closed and used.closed):
        for c in (fresh, used):
            c.pump(0.05)
    took = time.monotonic() - t0
    for name, c in (("fresh", fresh), ("after one request", used)):
        h.log("idle connection (%s): %s, closed %s within %.2f s"
              % (name, goaway_text(c), c.closed, took))
        expect(c.goaway() and c.goaway()[1] == NO_ERROR,
               "idle connection (%s): expected GOAWAY(NO_ERROR), got %s" % (name, goaway_text(c)))
        expect(c.closed, "idle connection (%s): still open after 6 s (--idle-timeout-ms 1500)"
               % name)
        t = c.of_type(h2.GOAWAY)[0].t - c.opened
        expect(1.3 <= t <= 4.0, "idle connection (%s): GOAWAY after %.2f s, expected 1.5 to 3 s"
               % (name, t))
        c.close()
    expect(used.status(1) == 404, "the idle test's request got %r" % used.status(1))
    hits.grew("idle_timeout", "idle connections", exactly=2)


def open_h2(gw):
    return mu.metric(gw, "sluice_connections_open", protocol="h2")


def ping_no_read(gw, idle_s):
    """PINGs slower than the flood detector from a client that never reads.

    The gateway's ACKs fill its socket buffer (the client reads nothing;
    its buffers are 4 KiB) until the gateway stops reading this
    connection, and TCP then holds the client back: bounded. The
    connection has no stream, so the idle timeout must still end it
    (README: "GOAWAY, then close"), even though the GOAWAY cannot be
    written. Allowed: two timeouts (the lazy check) plus the 5 s backstop
    the gateway's idle path sets itself, plus a second of slack.

    If the flood detector closes the connection first (it can: the
    client's pace is only roughly below it), that is a pass too.
    """
    baseline = h.wait_until(lambda: open_h2(gw) == 1 and 1, 5,
                            "only the well-behaved connection to be open on gateway %d"
                            % gw.port)
    hits = Hits(gw)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    raw.bind(("127.0.0.16", 0))
    raw.settimeout(5)
    raw.connect((HOST, gw.port))
    s = h.tls_context(gw).wrap_socket(raw, server_hostname="localhost")
    t0 = time.monotonic()
    s.sendall(h2.PREFACE + frame(SETTINGS, 0, 0))
    s.settimeout(1)
    n, state = 0, "still sending"
    try:
        while time.monotonic() - t0 < 8:
            s.sendall(frame(PING, 0, 0, b"slowping") * 200)
            n += 200
            time.sleep(0.001)
    except socket.timeout:
        state = "held back"
    except (OSError, ssl.SSLError):
        state = "closed"
    h.log("PINGs without reading: %d sent in %.1f s; %s" % (n, time.monotonic() - t0, state))
    if state == "held back":
        deadline = t0 + 2 * idle_s + 7
        gone = False
        while time.monotonic() < deadline and not gone:
            gone = open_h2(gw) <= baseline
            time.sleep(0.2)
        h.log("the held-back connection %s %.1f s after it opened (open h2 connections %d, "
              "baseline %d); idle_timeout hits +%d"
              % ("was closed" if gone else "is STILL OPEN", time.monotonic() - t0, open_h2(gw),
                 baseline, mu.limit_hits(gw)["idle_timeout"] - hits.before["idle_timeout"]))
        soft(gone, "a connection that never reads and has no stream was not closed: still open "
             "%.1f s after it opened (--idle-timeout-ms %d; GOAWAY, then close)"
             % (time.monotonic() - t0, idle_s * 1000))
    elif state == "closed":
        h.log("(closed before it was held back: %s)" % (
            "flood detected" if mu.limit_hits(gw)["flood"] > hits.before["flood"] else
            "idle timeout" if mu.limit_hits(gw)["idle_timeout"] > hits.before["idle_timeout"]
            else "by the gateway"))
    else:
        soft(False, "PINGs without reading: after %.0f s the gateway neither closed the "
             "connection nor stopped reading it" % (time.monotonic() - t0))
    try:
        s.close()
    except OSError:
        pass
    h.wait_until(lambda: open_h2(gw) <= baseline, 10, "the PING client's connection to close "
                 "once the client went away")


def busy_not_idle(gw, idle_s):
    """A connection whose streams are short but never stop is not idle.

    README: "a connection with no open stream gets GOAWAY after this"; this
    one is never without a stream for more than 0.2 s.
    """
    c = raw_conn(gw, source="127.0.0.17")
    sid, t0 = 1, time.monotonic()
    while time.monotonic() - t0 < 2 * idle_s + 1 and not c.closed and not c.goaway():
        c.send(c.request_frame(sid, "/nope"))
        sid += 2
        c.pump(0.2)
    h.log("a connection with a request every 0.2 s for %.1f s: %d requests, %s"
          % (time.monotonic() - t0, sid // 2, goaway_text(c)))
    soft(not c.goaway() and not c.closed, "a connection making a request every 0.2 s was told "
         "%s after %.1f s as if idle (--idle-timeout-ms %d)"
         % (goaway_text(c), time.monotonic() - t0, idle_s * 1000))
    c.close()


def test():
    nats = h.Nats()
    a = h.Gateway(nats.url, workers=1, stream_rate=100000, max_header_bytes=4096, drain_ms=2000)
    b = h.Gateway(nats.url, workers=1, stream_rate=20, max_connections_per_address=3,
                  handshake_timeout_ms=1000, idle_timeout_ms=1500, drain_ms=2000)
    steady = u.Steady(nats, [a, b], rate=40)
    # A bounded wait for the publisher's first events (a 0.5 s sleep stood here).
    h.wait_until(lambda: steady.seq >= 5 or steady.error, 10, "the steady publisher's first "
                 "events")
    steady.check_live("start")

    for gw, step in ((a, rapid_reset), (a, settings_flood), (a, settings_entries),
                     (a, ping_flood), (a, continuation_flood), (a, oversized_headers),
                     (b, stream_rate), (b, per_address), (b, slowloris), (b, idle)):
        t0 = time.monotonic()
        step(gw)
        gw.check_alive("after " + step.__name__)
        steady.check_live(step.__name__)
        h.log("-- %s done in %.1f s; steady events so far %r"
              % (step.__name__, time.monotonic() - t0, steady.progress()))

    for step in (ping_no_read, busy_not_idle):
        t0 = time.monotonic()
        step(b, 1.5)
        b.check_alive("after " + step.__name__)
        steady.check_live(step.__name__)
        h.log("-- %s done in %.1f s" % (step.__name__, time.monotonic() - t0))

    n = steady.finish()
    h.log("the well-behaved clients received all %d events in order on both gateways" % n)
    for gw in (a, b):
        hits = {k: int(v) for k, v in mu.limit_hits(gw).items() if v}
        h.log("gateway %d limit hits: %r" % (gw.port, hits))
        gw.stop(timeout=15)
    expect(not problems, "%d check(s) failed: %s" % (len(problems), " | ".join(problems)))


if __name__ == "__main__":
    h.main(test, deadline_s=120)
