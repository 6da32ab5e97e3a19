#!/usr/bin/env python3
"""Issue 2 (f): bad input is refused or dropped while a good client keeps streaming.

A curl stream on good.s receives events published before, between and
after the bad clients:
  - invalid subjects (/events/a..b, /events/a%20b, /events/a.%3E.b) -> 400,
    text/plain, a one-line reason; /nope -> 404; POST /events/a -> 405;
  - a GET with a request body is served normally (the body is ignored);
  - raw TCP clients sending 4 KiB of garbage instead of a ClientHello are
    dropped within a bounded time;
  - TLS clients with ALPN h2 sending the HTTP/2 preface then garbage are
    dropped (a GOAWAY first is allowed);
  - TLS clients offering only protocols sluice does not speak get the TLS
    alert no_application_protocol; http/1.1 or no ALPN get HTTP/1.1 (a 400 here).
The gateway is alive at the end and exits 0 on SIGTERM.
"""
import re
import socket
import ssl
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
from harness import expect  # noqa: E402

GARBAGE = bytes((i * 37 + 11) % 256 for i in range(4096))
ROUNDS = 5


def check_status(gw, path, status, method="GET"):
    r = h.curl(gw, path, method=method, data=b"x" if method == "POST" else None)
    h.log("%s %s -> %s %r %r" % (method, path, r.status, r.header("content-type"), r.body))
    expect(r.version == "2", "%s %s answered over HTTP/%s" % (method, path, r.version))
    expect(r.status == status, "%s %s: status %d, expected %d (body %r)"
           % (method, path, r.status, status, r.body))
    ct = r.header("content-type") or ""
    expect(ct.split(";")[0].strip() == "text/plain", "%s %s: content-type %r, expected text/plain"
           % (method, path, ct))
    text = r.body.decode("utf-8", "replace")
    expect(text.strip() and "\n" not in text.rstrip("\n") and len(text) < 300,
           "%s %s: body is not one short line: %r" % (method, path, r.body))
    return text


def garbage_tcp(gw):
    with socket.create_connection((h.HOST, gw.port), timeout=5) as s:
        try:
            s.sendall(GARBAGE)
        except (ConnectionResetError, BrokenPipeError):
            return  # dropped while we were still sending: fine
        got, closed = h.read_until_closed(s, 5)
        expect(closed, "garbage-instead-of-ClientHello connection still open after 5 s")
        expect(b"HTTP" not in got, "the gateway answered garbage with HTTP: %r" % got[:100])


def preface_then_garbage(gw):
    c = h2.raw_conn(gw, preface=False)
    try:
        if not c.send(h2.PREFACE + GARBAGE):
            expect(not c.send_blocked, "preface+garbage: the send stalled for 5 s")
            return None  # dropped while we were still sending: fine
        closed = c.wait_closed(5)
    finally:
        c.close()
    expect(closed, "preface+garbage connection still open after 5 s")
    ga = c.goaway()
    if ga:
        expect(ga[1] != 0, "GOAWAY with NO_ERROR for a protocol violation")
        return ga[1]
    return None


def http1_status(gw, alpn):
    """The status an HTTP/1.1 request for an invalid subject gets over TLS with this ALPN."""
    ctx = h.tls_context(gw, alpn=alpn)
    with socket.create_connection((h.HOST, gw.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.settimeout(5)
            expect(s.selected_alpn_protocol() in (None, "http/1.1"),
                   "ALPN %r selected %r" % (alpn, s.selected_alpn_protocol()))
            s.sendall(b"GET /events/a..b HTTP/1.1\r\nHost: localhost\r\n\r\n")
            got = s.recv(1024)
            m = re.match(rb"HTTP/1\.1 (\d{3}) ", got)
            return int(m.group(1)) if m else None


def refused_alpn(gw, alpn):
    ctx = h.tls_context(gw, alpn=alpn)
    with socket.create_connection((h.HOST, gw.port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                # TLS 1.3: a server alert may only surface on the first read.
                s.settimeout(5)
                s.sendall(b"GET /events/good.s HTTP/1.1\r\nHost: localhost\r\n\r\n")
                got = s.recv(1024)
                raise h.TestFailure("ALPN %r was not refused; got %r (selected %r)"
                                    % (alpn, got[:100], s.selected_alpn_protocol()))
        except ssl.SSLError as e:
            msg = str(e)
            expect("NO_APPLICATION_PROTOCOL" in msg.upper().replace(" ", "_"),
                   "ALPN %r: expected alert no_application_protocol, got %s" % (alpn, msg))
            return msg


def test():
    with h.Nats() as nats, h.Gateway(nats.url) as gw:
        with h.CurlStream(gw, "/events/good.s", max_time=60) as good:
            _, (start,), off = good.wait_start(timeout=10)
            gw.check_start_id([start])
            nats.wait_subscriptions(["good.s"])
            h.publish(nats.url, "good.s", "before")
            good.wait_bytes(b"data: before\n\n", 10, off)

            for path in ("/events/a..b", "/events/a%20b", "/events/a.%3E.b"):
                check_status(gw, path, 400)
            check_status(gw, "/nope", 404)
            # max-subjects (default 16): one more than allowed is refused.
            check_status(gw, "/events?" + "&".join("subject=many.s%d" % i for i in range(17)), 400)
            check_status(gw, "/events/a", 405, method="POST")

            with h.CurlStream(gw, "/events/good.body", max_time=20,
                              extra=["-X", "GET", "--data-binary", "ignored body"]) as body:
                body.wait_start(timeout=10)
                _, status, _ = body.headers()
                expect(status == 200, "GET with a body: status %d" % status)

            for _ in range(ROUNDS):
                garbage_tcp(gw)
            h.log("%d garbage-instead-of-TLS clients dropped" % ROUNDS)

            h.publish(nats.url, "good.s", "between")
            good.wait_bytes(b"data: between\n\n", 10, off)

            codes = [preface_then_garbage(gw) for _ in range(ROUNDS)]
            h.log("%d preface+garbage clients dropped (GOAWAY codes %r)" % (ROUNDS, codes))

            # Only protocols sluice does not speak are refused: h2 and http/1.1 are served.
            for alpn in (["spdy/3"], ["h3", "imap"]):
                msg = refused_alpn(gw, alpn)
                h.log("ALPN %r refused: %s" % (alpn, msg))
            for alpn in (["http/1.1"], None):
                status = http1_status(gw, alpn)
                expect(status == 400, "ALPN %r: invalid subject over HTTP/1.1 answered %r"
                       % (alpn, status))

            h.publish(nats.url, "good.s", "after")
            good.wait_bytes(b"data: after\n\n", 10, off)
            got = good.data()[off:]
            m = re.fullmatch(rb"id: (\d+)\ndata: before\n\nid: (\d+)\ndata: between\n\n"
                             rb"id: (\d+)\ndata: after\n\n", got)
            expect(m, "good stream got %r, expected exactly the events before, between and "
                   "after" % got)
            ids = [int(x) for x in m.groups()]
            expect(start < ids[0] < ids[1] < ids[2],
                   "good stream ids %r do not increase from its start id %d" % (ids, start))
            expect(good.alive(), "the good stream ended")

        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test)
