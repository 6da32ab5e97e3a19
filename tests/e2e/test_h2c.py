#!/usr/bin/env python3
"""Issue 7 (1): cleartext HTTP/2 with prior knowledge on --listen-plain.

The plain listener tells h2 from HTTP/1.1 by the connection preface.

  - curl --http2-prior-knowledge -N streams: HTTP/2 200, the SSE headers,
    the start item, a named event and heartbeats.
  - nghttp -v (prior knowledge, nghttp's default for http:// URIs) gets the
    server's SETTINGS (MAX_CONCURRENT_STREAMS stated) and a 404.
  - h2c Upgrade (RFC 7540 3.2) is not supported: `nghttp -u`, `curl --http2`
    and a raw request with Upgrade: h2c all get a plain HTTP/1.1 answer (no
    101), and an SSE request sent that way streams as HTTP/1.1.
  - The preface split over three writes is still detected; "PRI * HTTP/2.0"
    followed by anything but the exact preface is an HTTP/2 client with a
    bad preface: GOAWAY PROTOCOL_ERROR and a close (test_smuggling checks
    the frames); "PRI * HTTP/1.1" is HTTP/1.1's, a 400.
  - Many streams on one connection: `nghttp --no-dep -m 50` sends 50
    concurrent long-polls on one h2c connection; once the gateway counts 50
    open streams, one published event answers all 50.
"""
import json
import re
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import h1_util as u  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

NSTREAMS = 50


def run(cmd, timeout=20):
    p = h.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise h.TestFailure("%s did not finish within %d s" % (cmd[0], timeout))
    return p.returncode, out.decode("utf-8", "replace")


def curl_prior_knowledge(gw, nats, pub):
    subject = "h2c.curl"
    with u.PlainCurlStream(gw, "/events/" + subject, proto="--http2-prior-knowledge",
                           max_time=20) as s:
        _, (start,), off = s.wait_start(timeout=10)
        gw.check_start_id([start])
        nats.wait_subscriptions([subject])
        version, status, headers = s.headers()
        expect(version == "2" and status == 200, "curl h2c: HTTP/%s %d" % (version, status))
        hd = dict(headers)
        for k, v in (("content-type", "text/event-stream"), ("cache-control", "no-cache"),
                     ("x-accel-buffering", "no")):
            expect(hd.get(k) == v, "h2c %s: %r (headers %r)" % (k, hd.get(k), headers))
        for k in ("connection", "transfer-encoding", "keep-alive"):
            expect(k not in hd, "h2c response carries the HTTP/1.1 field %s" % k)
        pub.pub(subject, "one\ntwo", event="greet")
        pub.flush()
        end = s.wait_bytes(b"data: two\n\n", 10, off)
        m = re.fullmatch(rb"(?::\n\n)*id: (\d+)\nevent: greet\ndata: one\ndata: two\n\n",
                         s.data()[off:end])
        expect(m and int(m.group(1)) > start, "h2c stream got %r" % s.data()[off:end])
        s.wait_for(lambda b: b.count(b":\n\n", end) >= 2, 5, "two heartbeats")
        expect(s.alive(), "curl's h2c stream ended")
    h.log("curl --http2-prior-knowledge -N streams: event and heartbeats")


def nghttp_prior_knowledge(gw):
    rc, out = run(["nghttp", "-v", "--no-dep", u.plain_url(gw, "/nope")])
    expect(rc == 0, "nghttp exited %d:\n%s" % (rc, out[-2000:]))
    expect(re.search(r"recv SETTINGS frame <length=\d+, flags=0x00, stream_id=0>", out) and
           re.search(r"SETTINGS_MAX_CONCURRENT_STREAMS\(0x03\):4096", out),
           "nghttp saw no server SETTINGS with MAX_CONCURRENT_STREAMS:\n%s" % out[-2000:])
    expect(re.search(r"recv \(stream_id=1\) :status: 404", out),
           "nghttp prior knowledge: no 404 on stream 1:\n%s" % out[-2000:])
    expect("HTTP/1.1" not in out, "nghttp prior knowledge saw HTTP/1.1:\n%s" % out[-2000:])
    h.log("nghttp -v prior knowledge: server SETTINGS, :status 404")


def upgrade_not_supported(gw, nats, pub):
    # nghttp -u: the gateway answers the HTTP/1.1 request itself, no 101.
    rc, out = run(["nghttp", "-u", "-v", u.plain_url(gw, "/nope")])
    expect("upgrade: h2c" in out.lower(), "nghttp -u did not offer h2c:\n%s" % out[-2000:])
    expect(re.search(r"HTTP Upgrade response\s+HTTP/1\.1 404 Not Found", out),
           "nghttp -u: expected a plain HTTP/1.1 404 answer to the upgrade request:\n%s"
           % out[-2000:])
    expect("101" not in out.split("HTTP Upgrade response", 1)[1].split("\n", 2)[1],
           "the gateway switched protocols")
    # curl --http2 on http:// asks for the upgrade and gets HTTP/1.1.
    r = u.curl_plain(gw, "/nope", http="--http2")
    expect(r.version == "1.1" and r.status == 404, "curl --http2 (upgrade) got HTTP/%s %d"
           % (r.version, r.status))
    # Raw: an upgrade request is answered as HTTP/1.1, and the connection stays HTTP/1.1.
    with u.Conn.plain(gw) as c:
        c.send(u.get("/nope", extra="Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                                    "HTTP2-Settings: AAMAAABkAAQAAP__\r\n"))
        r = c.read_response(interim=True)
        expect(r.status == 404 and r.header("upgrade") is None,
               "raw h2c upgrade: %r" % r)
        c.send(u.get("/nope"))
        expect(c.read_response().status == 404, "the connection did not stay HTTP/1.1")
    # An SSE request with an upgrade offer streams as HTTP/1.1.
    subject = "h2c.upgrade"
    with u.Conn.plain(gw) as c:
        c.send(u.get("/events/" + subject,
                     extra="Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                           "HTTP2-Settings: AAMAAABkAAQAAP__\r\n"))
        c.stream_open()
        _, _, off = c.stream_start()
        nats.wait_subscriptions([subject])
        pub.pub(subject, "up")
        pub.flush()
        c.stream_bytes(b"data: up\n\n", 10, off)
    h.log("h2c Upgrade is declined: nghttp -u, curl --http2 and raw requests get HTTP/1.1")


def preface_detection(gw):
    # Split preface: the listener must wait for all 24 bytes.
    c = h2.raw_conn(gw, plain=True, preface=False)
    try:
        # The pauses are the test: three separate segments (no Nagle
        # coalescing), so the listener reads the preface in parts.
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(h2.PREFACE[:7])
        time.sleep(0.2)
        c.send(h2.PREFACE[7:16])
        time.sleep(0.2)
        c.send(h2.PREFACE[16:] + h2.frame(h2.SETTINGS, 0, 0))
        c.wait(lambda x: x.frames, 5)
        expect(c.frames and c.frames[0].type == h2.SETTINGS and c.frames[0].sid == 0,
               "a preface split over three writes got %r, not a SETTINGS frame" % c.frames[:3])
    finally:
        c.close()
    # Almost the preface: "PRI * HTTP/2.0" is HTTP/2's line, so the rest is judged as
    # HTTP/2 (a connection error), while "PRI * HTTP/1.1" is HTTP/1.1's (400).
    s = u.connect_plain(gw)
    with s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        got, closed = h.read_until_closed(s, 5)
    expect(closed and not got.startswith(b"HTTP/") and b"\x00\x00\x08\x07\x00" in got,
           "a near-preface got %r (closed %s), expected SETTINGS, GOAWAY and a close"
           % (got[:80], closed))
    # h2spec http2/3.5/2: a first line that is no HTTP/1.x request line is not an
    # HTTP/1.1 client either; the listener's other protocol answers it (a 400 it
    # could not read did not count as terminating the connection).
    s = u.connect_plain(gw)
    with s:
        s.sendall(b"INVALID CONNECTION PREFACE\r\n\r\n")
        got, closed = h.read_until_closed(s, 5)
    expect(closed and not got.startswith(b"HTTP/") and b"\x00\x00\x08\x07\x00" in got,
           "h2spec's invalid preface got %r (closed %s), expected SETTINGS, GOAWAY and a close"
           % (got[:80], closed))
    r, closed = u.one(gw, b"PRI * HTTP/1.1\r\nHost: localhost\r\n\r\n")
    expect(r.status == 400 and closed, "PRI * HTTP/1.1: %d (closed %s), expected 400"
           % (r.status, closed))
    h.log("preface split over writes detected; a near-preface is an HTTP/2 connection error")


def many_streams(gw, nats, pub):
    subject = "h2c.many"
    first = u.curl_plain(gw, "/poll?subject=%s&timeout=1" % subject,
                         http="--http2-prior-knowledge")
    expect(first.status == 200 and first.version == "2", "first poll: %r" % first)
    after = json.loads(first.body)["next"]
    nats.wait_subscriptions([subject])
    opened_before = mu.metric(gw, "sluice_streams_open")
    url = u.plain_url(gw, "/poll?subject=%s&after=%s&timeout=15" % (subject, after))
    p = h.spawn(["nghttp", "-v", "--no-dep", "-m", str(NSTREAMS), url],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        h.wait_until(lambda: mu.metric(gw, "sluice_streams_open") >= opened_before + NSTREAMS,
                     10, "%d streams open on the gateway" % NSTREAMS, interval=0.1)
        expect(p.poll() is None, "nghttp ended before the event was published")
        t0 = time.monotonic()
        pub.pub(subject, "to all fifty", event="many")
        pub.flush()
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            raise h.TestFailure("nghttp -m %d: not every poll was answered within 10 s "
                                "of the event" % NSTREAMS)
        took = time.monotonic() - t0
    finally:
        h.kill_proc(p)
    out = out.decode("utf-8", "replace")
    expect(p.returncode == 0, "nghttp -m %d exited %d:\n%s" % (NSTREAMS, p.returncode, out[-2000:]))
    ok_streams = set(re.findall(r"recv \(stream_id=(\d+)\) :status: 200", out))
    expect(len(ok_streams) == NSTREAMS, "%d streams answered 200, expected %d"
           % (len(ok_streams), NSTREAMS))
    expect(len(re.findall(r"recv SETTINGS frame <length=\d+, flags=0x00", out)) == 1,
           "more than one connection (server SETTINGS seen more than once)")
    bodies = re.findall(r'\{"events":\[\{"id":"\d+","event":"many","data":"to all fifty"\}\],'
                        r'"next":"\d+"\}', out)
    expect(len(bodies) == NSTREAMS, "%d poll answers carried the event, expected %d:\n%s"
           % (len(bodies), NSTREAMS, out[-1500:]))
    h.log("%d concurrent long-polls on one h2c connection all answered %.2f s after one "
          "event" % (NSTREAMS, took))


def test():
    with h.Nats() as nats, u.gateway(nats.url, heartbeat_ms=300) as gw, \
            nu.NatsClient(nats.port) as pub:
        curl_prior_knowledge(gw, nats, pub)
        nghttp_prior_knowledge(gw)
        upgrade_not_supported(gw, nats, pub)
        preface_detection(gw)
        many_streams(gw, nats, pub)
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=90)
