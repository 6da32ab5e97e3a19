#!/usr/bin/env python3
"""Issue 17 (1, 5): the real client address behind trusted proxies, and
per-principal limits, against the real gateway with raw clients on extra
loopback addresses (127.0.0.2, 127.0.0.3 are other hosts to the gateway).

PROXY protocol (--proxy-protocol listen,listen-plain, --trusted-proxies
127.0.0.1, --max-connections-per-address 2):
  - v1 and v2 headers name clients: 2 connections for 192.0.2.1 pass, its
    3rd is closed, while 192.0.2.2 still gets in (3 connections from the
    one proxy address, past the cap of 2); the access log shows the named
    client and "via" the proxy; a v2 header before TLS works too;
  - a LOCAL header keeps the proxy's own address;
  - a missing, garbled, oversized or slow header, and a header from a
    peer outside trusted-proxies, each close the connection without an
    answer and count in sluice_proxy_protocol_total{result}.
Forwarded / X-Forwarded-For (--trusted-proxies 127.0.0.1, cap 2):
  - from the trusted proxy, streams are charged to the forwarded client:
    3 streams from one proxy connection pool, the client's 3rd refused the
    EventSource way (200, retry:, end), counted as connections_per_address;
  - one keep-alive connection carries two clients one after the other,
    each logged as itself;
  - a spoofed header from an untrusted peer (127.0.0.2) is ignored: the
    peer is logged and capped at accept as itself (counted "untrusted");
  - a malformed one from the trusted proxy leaves the proxy's address.
Per-principal limits (auth jwt), on h2 (curl) and HTTP/1.1:
  - max-streams-per-principal 2: alice's 3rd stream is refused with 200,
    retry: and ": too many streams for this principal", on both
    protocols, while bob is served;
  - principal-stream-rate 1: carol's second stream within the second is
    refused the same way.
"""
import json
import os
import socket
import ssl
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h1_util as h1u  # noqa: E402
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import sec_util as sec  # noqa: E402
from harness import HOST, expect  # noqa: E402

SECRET = b"e2e-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def connect(port, src=HOST, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(timeout)
    s.connect((HOST, port))
    return s


def v1(client, port=40000):
    return ("PROXY TCP4 %s 127.0.0.1 %d 80\r\n" % (client, port)).encode()


def v2(client, port=40000, command=1):
    addrs = socket.inet_aton(client) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 80)
    tlv = b"\x01\x00\x02h2"  # ALPN: skipped
    body = addrs + tlv
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | command, 0x11]) +
            struct.pack("!H", len(body)) + body)


def access_lines(gw):
    with open(gw.access_log_path) as f:
        return [json.loads(ln) for ln in f if ln.startswith("{")]


def wait_access(gw, pred, what, timeout=10):
    return h.wait_until(lambda: next((e for e in access_lines(gw) if pred(e)), None), timeout,
                        "the access log line of %s" % what)


def closed_unanswered(c, what):
    expect(c.wait_closed(5) and c.buf == b"", "%s: not closed without an answer (read %r)"
           % (what, c.buf[:120]))


def open_stream(port, head, path, src=HOST, extra=""):
    c = h1u.Conn(connect(port, src), "%s %s" % (src, path))
    c.send(head + h1u.get(path, extra=extra))
    c.stream_open()
    c.stream_start()
    return c


def refused_stream(c, why, what):
    """A stream refused the EventSource way: 200, retry:, the comment why, and the end."""
    r = c.read_response(10)
    expect(r.status == 200 and r.header("content-type") == "text/event-stream",
           "%s: refusal answered %d %r" % (what, r.status, r.head.raw[:200]))
    expect(r.body.startswith(b"retry: ") and (b": %s" % why) in r.body and b"id:" not in r.body,
           "%s: refusal body %r" % (what, r.body))


def proxy_protocol(nats):
    flags = dict(proxy_protocol="listen,listen-plain", trusted_proxies="127.0.0.1",
                 max_connections_per_address=2, handshake_timeout_ms=600)
    with h1u.gateway(nats.url, **flags) as gw:
        port = gw.plain_port
        a1 = open_stream(port, v1("192.0.2.1", 40001), "/events/ca.pp")
        a2 = open_stream(port, v2("192.0.2.1", 40002), "/events/ca.pp")
        third = h1u.Conn(connect(port), "192.0.2.1's third")
        third.send(v2("192.0.2.1", 40003) + h1u.get("/events/ca.pp"))
        closed_unanswered(third, "a third connection for 192.0.2.1 (cap 2)")
        b1 = open_stream(port, v1("192.0.2.2", 40004), "/events/ca.pp")
        h.log("3 connections from the one proxy address, 2 for 192.0.2.1, 1 for 192.0.2.2")
        mu.wait_metric(gw, "sluice_limit_hits_total", 1, limit="connections_per_address")
        for c in (a1, a2, b1, third):
            c.close()
        e = wait_access(gw, lambda e: e["client"] == "192.0.2.1:40001", "192.0.2.1's stream")
        expect(e.get("via", "").startswith("127.0.0.1:"), "no via in %r" % e)

        # TLS after a v2 header (the HAProxy send-proxy-v2 shape).
        raw = connect(gw.port)
        raw.sendall(v2("192.0.2.9", 40009))
        ctx = ssl.create_default_context(cafile=gw.ca)
        ctx.set_alpn_protocols(["http/1.1"])
        with h1u.Conn(ctx.wrap_socket(raw, server_hostname="localhost"), "tls") as t:
            t.send(h1u.get("/nowhere", extra="X-Request-Id: pp-tls\r\n"))
            r = t.read_response(10)
            expect(r.status == 404, "over TLS after a PROXY header: %r" % r)
        e = wait_access(gw, lambda e: e["request_id"] == "pp-tls", "the TLS request")
        expect(e["client"] == "192.0.2.9:40009", "TLS client logged as %r" % e["client"])

        # LOCAL: the proxy speaks for itself; its own address is the client.
        with h1u.Conn(connect(port), "local") as c:
            c.send(v2("192.0.2.77", command=0) + h1u.get("/nowhere", extra="X-Request-Id: pp-l\r\n"))
            expect(c.read_response(10).status == 404, "LOCAL: not served")
        e = wait_access(gw, lambda e: e["request_id"] == "pp-l", "the LOCAL request")
        expect(e["client"].startswith("127.0.0.1:") and "via" not in e, "LOCAL logged as %r" % e)

        bad = [("missing", h1u.get("/events/ca.pp")),
               ("malformed", b"PROXY TCP4 192.0.2.1 nonsense\r\n" + h1u.get("/")),
               ("oversized", b"PROXY TCP4 " + b"1" * 200)]
        for result, data in bad:
            with h1u.Conn(connect(port), result) as c:
                c.send(data)
                closed_unanswered(c, "a %s PROXY header" % result)
            mu.wait_metric(gw, "sluice_proxy_protocol_total", 1, result=result)
        t0 = time.monotonic()
        with h1u.Conn(connect(port), "slow") as c:
            c.send(b"PROXY TCP4 192.0.2.")
            closed_unanswered(c, "a header not finished within handshake-timeout-ms")
        h.log("the slow header was cut after %.2f s" % (time.monotonic() - t0))
        mu.wait_metric(gw, "sluice_proxy_protocol_total", 1, result="timeout")
        with h1u.Conn(connect(port, "127.0.0.2"), "untrusted") as c:
            c.send(v1("192.0.2.3") + h1u.get("/events/ca.pp"))
            closed_unanswered(c, "a PROXY header from a peer outside trusted-proxies")
        mu.wait_metric(gw, "sluice_proxy_protocol_total", 1, result="untrusted")
        gw.check_alive()


def forwarded_headers(nats):
    flags = dict(trusted_proxies="127.0.0.1", max_connections_per_address=2)
    with h1u.gateway(nats.url, **flags) as gw:
        port = gw.plain_port
        xff = "X-Forwarded-For: 6.6.6.6, %s\r\n"
        s1 = open_stream(port, b"", "/events/ca.fw", extra=xff % "192.0.2.1")
        s2 = open_stream(port, b"", "/events/ca.fw", extra=xff % "192.0.2.1")
        s3 = open_stream(port, b"", "/events/ca.fw", extra="Forwarded: for=192.0.2.2\r\n")
        h.log("3 streams from the trusted proxy address, past the cap of 2")
        with h1u.Conn(connect(port), "192.0.2.1's third") as c:
            c.send(h1u.get("/events/ca.fw", extra=xff % "192.0.2.1"))
            refused_stream(c, b"too many streams from this address", "192.0.2.1's third stream")
        mu.wait_metric(gw, "sluice_limit_hits_total", 1, limit="connections_per_address")
        # The client's slot comes back when its stream ends.
        s1.close()
        h.wait_until(lambda: next((e for e in access_lines(gw) if e["client"] == "192.0.2.1"
                                   and e["status"] == 200 and e["reason"] == "client"), None),
                     10, "192.0.2.1's first stream to end")
        s4 = open_stream(port, b"", "/events/ca.fw", extra=xff % "192.0.2.1")
        for c in (s2, s3, s4):
            c.close()

        # One keep-alive connection, two clients one after the other.
        with h1u.Conn(connect(port), "keep-alive") as c:
            for client, rid in (("192.0.2.7", "fw-a"), ("192.0.2.8", "fw-b")):
                c.send(h1u.get("/nowhere", extra=(xff % client) + "X-Request-Id: %s\r\n" % rid))
                expect(c.read_response(10).status == 404, "keep-alive request %s" % rid)
        for client, rid in (("192.0.2.7", "fw-a"), ("192.0.2.8", "fw-b")):
            e = wait_access(gw, lambda e, rid=rid: e["request_id"] == rid, rid)
            expect(e["client"] == client and e.get("via", "").startswith("127.0.0.1:"),
                   "%s logged as %r" % (rid, e))

        # A spoofed header from an untrusted peer: ignored, and that peer is capped as itself.
        spoof = "X-Forwarded-For: 192.0.2.50\r\nForwarded: for=192.0.2.51\r\n"
        u1 = open_stream(port, b"", "/events/ca.fw", src="127.0.0.2",
                         extra=spoof + "X-Request-Id: spoof\r\n")
        u2 = open_stream(port, b"", "/events/ca.fw", src="127.0.0.2", extra=spoof)
        with h1u.Conn(connect(port, "127.0.0.2"), "127.0.0.2's third") as c:
            c.send(h1u.get("/events/ca.fw", extra="X-Forwarded-For: 192.0.2.52\r\n"))
            closed_unanswered(c, "a third connection from 127.0.0.2 whatever its header says")
        u1.close()
        u2.close()
        e = wait_access(gw, lambda e: e["request_id"] == "spoof", "the spoofed stream")
        expect(e["client"].startswith("127.0.0.2:") and "via" not in e,
               "a spoofed header was believed: %r" % e)
        expect(mu.metric(gw, "sluice_forwarded_headers_total", result="untrusted") >= 2,
               "spoofed headers not counted as untrusted")

        # Malformed from the trusted proxy: the proxy's own address, counted.
        with h1u.Conn(connect(port), "malformed") as c:
            c.send(h1u.get("/nowhere", extra="X-Forwarded-For: bogus\r\nX-Request-Id: fw-m\r\n"))
            expect(c.read_response(10).status == 404, "malformed header: not served")
        e = wait_access(gw, lambda e: e["request_id"] == "fw-m", "the malformed one")
        expect(e["client"].startswith("127.0.0.1:"), "malformed header logged as %r" % e)
        expect(mu.metric(gw, "sluice_forwarded_headers_total", result="malformed") == 1,
               "malformed header not counted")
        gw.check_alive()


def principal_limits(nats):
    d = h.tempdir()
    secret = os.path.join(d, "secret")
    with open(secret, "wb") as f:
        f.write(SECRET)

    def token(sub):
        return sec.jwt_hs(sec.claims(subscribe=["ca.>"], sub=sub), SECRET)

    def bearer(sub):
        return "Authorization: Bearer %s\r\n" % token(sub)

    auth = dict(auth="jwt", jwt_secret_file=secret)
    with h1u.gateway(nats.url, max_streams_per_principal=2, **auth) as gw:
        port = gw.plain_port
        hdr = ["-H", "Authorization: Bearer %s" % token("alice")]
        with h.CurlStream(gw, "/events/ca.p", extra=hdr, max_time=20) as a1, \
                h.CurlStream(gw, "/events/ca.p", extra=hdr, max_time=20) as a2:
            a1.wait_start()
            a2.wait_start()
            with h1u.Conn(connect(port), "alice's third over HTTP/1.1") as c:
                c.send(h1u.get("/events/ca.p", extra=bearer("alice")))
                refused_stream(c, b"too many streams for this principal", "HTTP/1.1")
            with h.CurlStream(gw, "/events/ca.p", extra=hdr, max_time=10) as a3:
                a3.wait_for(lambda b: a3.eof, 10, "the end of alice's third h2 stream")
                version, status, _ = a3.headers()
                expect(version == "2" and status == 200 and a3.data().startswith(b"retry: ") and
                       b": too many streams for this principal" in a3.data(),
                       "h2 refusal: HTTP/%s %d %r" % (version, status, a3.data()))
            b = open_stream(port, b"", "/events/ca.p", extra=bearer("bob"))
            b.close()
        mu.wait_metric(gw, "sluice_limit_hits_total", 2, limit="streams_per_principal")
        h.wait_until(lambda: "max-streams-per-principal reached" in gw.log(), 5,
                     "the refusal's log line")
    with h1u.gateway(nats.url, principal_stream_rate=1, **auth) as gw:
        c1 = open_stream(gw.plain_port, b"", "/events/ca.r", extra=bearer("carol"))
        with h.CurlStream(gw, "/events/ca.r", max_time=10,
                          extra=["-H", "Authorization: Bearer %s" % token("carol")]) as c2:
            c2.wait_for(lambda b: c2.eof, 10, "the end of carol's second stream")
            expect(b": too many new streams for this principal" in c2.data(),
                   "second stream within the second: %r" % c2.data())
        c1.close()
        mu.wait_metric(gw, "sluice_limit_hits_total", 1, limit="principal_stream_rate")


def test():
    with h.Nats() as nats:
        proxy_protocol(nats)
        forwarded_headers(nats)
        principal_limits(nats)


if __name__ == "__main__":
    h.main(test, deadline_s=60)
