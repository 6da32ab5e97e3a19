#!/usr/bin/env python3
"""HTTP/1.1 request smuggling through unread request bodies, output that was
not bounded for pipelined requests, and two HTTP/2 conformance points.

What broke: a request body was read only for POST /publish. On every other
route (static files, /events, /poll, preflight, 4xx) it stayed in the input
and was parsed as the next request, so a GET whose body is
"POST /publish/... Content-Length: 200" turned the next request on the
connection (behind nginx: the next user's, with their Authorization) into
that publish's body. Now a body is read through its framing and dropped
(up to 64 KiB), or the answer says connection: close and the connection
ends; it never becomes a request.

Every smuggled request here is a publish with a valid token to smug.loot,
carrying a payload that names its case. A core NATS subscriber on
smug.loot must see nothing before a marker published through the gateway
itself (the same NATS connection, so ordered after anything the gateway
published before); and every real request gets exactly one response, told
apart by its x-request-id.

  - directly, on the TLS listener (ALPN http/1.1) and on --listen-plain,
    Content-Length and chunked bodies on: a static file, a 404, a 405, a 401,
    a 403, /poll, a refused publish (401, 403), an h2c Upgrade request
    (declined), and /events (while the stream is open, and after it ends
    when the token expires);
  - a body over 64 KiB, or one announced with Expect: 100-continue: the
    answer says connection: close and the connection ends; a 900 kB body
    sent whole before reading can still be sent, and its answer read (the
    close lingers);
  - through the certified conf/edge/nginx.conf (keep-alive upstream), the
    attack "the next user's request becomes the body of a publish": the
    victim gets its own answer, and their token never reaches NATS;
  - pipelining: 48 GETs of a 1 MiB file to a client that does not read: the
    gateway's memory stays bounded, and every answer is right once it reads;
  - h2 (raw frames): HEADERS on a lower, never-opened stream id is a
    connection error (GOAWAY PROTOCOL_ERROR), over TLS and h2c, while
    trailers on an open stream and PRIORITY on idle lower ids are not; an
    invalid preface that starts like HTTP/2 on the plain listener gets
    GOAWAY PROTOCOL_ERROR, not an HTTP/1.1 400.
"""
import os
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import edge_util as eu  # noqa: E402
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import h1_util as u  # noqa: E402
import h2_util as h2  # noqa: E402
import sec_util as s  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

SECRET = b"smuggling-e2e-secret-0123456789abcdefghijklmn"
LOOT = "smug.loot"
BIG = 1 << 20  # bytes of the file the pipelining test asks for
PIPELINED = 48


def token(exp_in=300, subscribe=("smug.>",), publish=("smug.>",)):
    return s.jwt_hs(s.claims(list(subscribe), list(publish), exp_in=exp_in), SECRET)


def smuggled(tok, what):
    """The request hidden in a body: a publish that would put `what` on LOOT."""
    data = ("smuggled %s" % what).encode()
    return (b"POST /publish/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (LOOT.encode(), tok.encode(), len(data), data))


def with_body(method, path, body, chunked, extra="", rid="real-1"):
    """A request whose body is body, framed by Content-Length or chunked."""
    if chunked:
        framing = "Transfer-Encoding: chunked\r\n"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        framing = "Content-Length: %d\r\n" % len(body)
    return ("%s %s HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n%s%s\r\n"
            % (method, path, rid, extra, framing)).encode() + body


def auth(tok):
    return "Authorization: Bearer %s\r\n" % tok


def follow_up(rid="real-2"):
    return u.get("/after-the-body", extra="X-Request-Id: %s\r\n%s" % (rid, auth(token())))


def check_one(r, status, rid, where):
    expect(r.status == status, "%s: status %d, expected %d: %r" % (where, r.status, status, r))
    expect(r.header("x-request-id") == rid,
           "%s: the answer is for request %r, expected %r (a smuggled request was answered): %r"
           % (where, r.header("x-request-id"), rid, r))


def fence(gw, nats_sub, where, tok):
    """Publishes a marker through the gateway; nothing may reach LOOT before it."""
    marker = "marker %s %f" % (where, time.monotonic())
    r, _ = u.one(gw, u.post("/publish/" + LOOT, marker, extra="Authorization: Bearer %s\r\n" % tok))
    expect(r.status == 202, "%s: the marker publish got %r" % (where, r))
    before = nats_sub.wait_msg(marker, timeout=10)
    expect(not before, "%s: smuggled requests were published: %r" % (where, before))


def simple_cases(gw, conn, where, tok):
    """Body-carrying requests on routes that do not want a body; each followed by a real
    request that must get the second (and last) answer."""
    cases = [
        ("GET", "/index.html", auth(tok), 200),
        ("GET", "/no-such-file", auth(tok), 404),
        ("POST", "/events/smug.x", auth(tok), 405),
        ("GET", "/events/smug.x", "", 401),
        ("GET", "/events/other.x", auth(tok), 403),
        ("GET", "/poll?subject=smug.poll&timeout=1", auth(tok), 200),
        ("POST", "/publish/smug.x", "", 401),  # a refused publish's body is dropped too
        ("POST", "/publish/other.x", auth(tok), 403),
        ("GET", "/no-such-file", auth(tok) + "Connection: Upgrade, HTTP2-Settings\r\n"
         "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n", 404),
    ]
    for chunked in (False, True):
        for method, path, extra, status in cases:
            w = "%s: %s %s with a %s body" % (where, method, path.split("?")[0],
                                              "chunked" if chunked else "Content-Length")
            with conn() as c:
                c.send(with_body(method, path, smuggled(tok, w), chunked, extra) + follow_up())
                r1 = c.read_response(timeout=10)
                check_one(r1, status, "real-1", w)
                expect(r1.header("connection") == "keep-alive",
                       "%s: a small body should be read and dropped, the connection kept: %r"
                       % (w, r1))
                check_one(c.read_response(timeout=10), 404, "real-2", w + ", then a GET")
                expect(c.buf == b"", "%s: bytes after the last answer: %r" % (w, c.buf[:200]))
    h.log("%s: %d body-carrying requests each answered once" % (where, 2 * len(cases)))


def events_case(gw, conn, where, nats_sub, pub, tok_for_fence):
    """/events with a body: nothing is parsed from it while the stream is open, nor
    after it ends (the token expires; leeway 0)."""
    for chunked in (False, True):
        w = "%s: /events with a %s body" % (where, "chunked" if chunked else "Content-Length")
        short = token(exp_in=3)
        subject = "smug.ev.%d" % chunked
        with conn() as c:
            c.send(with_body("GET", "/events/" + subject, smuggled(tok_for_fence, w), chunked,
                             "Authorization: Bearer %s\r\n" % short) + follow_up())
            hd = c.stream_open()
            check_one(u.Resp(hd, b""), 200, "real-1", w)
            _, _, off = c.stream_start()
            fence(gw, nats_sub, w + " (stream open)", tok_for_fence)
            pub.pub(subject, "live")
            pub.flush()
            c.stream_bytes(b"data: live\n\n", 10, off)
            c.stream_end(timeout=15)  # the token expires
            check_one(c.read_response(timeout=10), 404, "real-2", w + ", after the stream ended")
            expect(c.buf == b"", "%s: bytes after the last answer: %r" % (w, c.buf[:200]))
        fence(gw, nats_sub, w + " (stream ended)", tok_for_fence)
    h.log("%s: /events bodies dropped while open and after the end" % where)


def closing_cases(gw, conn, where, tok):
    """Bodies that are not read: the answer says close and the connection ends, and
    each is counted in sluice_limit_hits_total{limit="unread_body"}."""
    hits = mu.limit_hits(gw).get("unread_body", 0)
    cases = [
        ("a declared body over 64 KiB", 100000, ""),
        ("Expect: 100-continue on a route without a body", None, "Expect: 100-continue\r\n"),
    ]
    for what, length, extra in cases:
        w = "%s: %s" % (where, what)
        body = smuggled(tok, w)
        head = ("GET /index.html HTTP/1.1\r\nHost: x\r\nX-Request-Id: real-1\r\n%s%s"
                "Content-Length: %d\r\n\r\n" % (auth(tok), extra, length or len(body))).encode()
        with conn() as c:
            c.send(head + body + follow_up())
            r = c.read_response(timeout=10)
            check_one(r, 200, "real-1", w)
            expect(r.header("connection") == "close", "%s: connection %r, expected close"
                   % (w, r.header("connection")))
            expect(c.wait_closed(5), "%s: the connection was not closed" % w)
            expect(c.buf == b"", "%s: bytes after the answer: %r" % (w, c.buf[:200]))
    # A client that sends a large body whole before it reads (as a proxy may): the
    # gateway answers, shuts its side, and reads and drops the rest, so that the
    # client's writes do not fail and the answer survives (a lingering close).
    w = "%s: a 900 kB body sent whole before reading" % where
    with conn() as c:
        c.send(("GET /index.html HTTP/1.1\r\nHost: x\r\nX-Request-Id: real-1\r\n%s"
                "Content-Length: 900000\r\n\r\n" % auth(tok)).encode())
        try:
            c.send(smuggled(tok, w) + b"x" * (900000 - len(smuggled(tok, w))))
        except OSError as e:
            raise h.TestFailure("%s: sending the body failed (the gateway reset the "
                                "connection instead of lingering): %s" % (w, e))
        r = c.read_response(timeout=10)
        check_one(r, 200, "real-1", w)
        expect(r.header("connection") == "close", "%s: connection %r" % (w, r.header("connection")))
        expect(c.wait_closed(5), "%s: the connection was not closed" % w)
    now = mu.limit_hits(gw).get("unread_body", 0)
    expect(now == hits + 3, "%s: unread_body counted %d bodies, expected 3" % (where, now - hits))
    h.log("%s: bodies not read end the connection after the answer" % where)


def direct(gw, nats_sub, pub, tok):
    for where, conn in (("TLS http/1.1", lambda: u.Conn.tls(gw)),
                        ("plain", lambda: u.Conn.plain(gw))):
        with conn() as c:
            expect(where == "plain" or c.alpn() == "http/1.1", "ALPN picked %r" % c.alpn())
        simple_cases(gw, conn, where, tok)
        closing_cases(gw, conn, where, tok)
        fence(gw, nats_sub, where, tok)
        events_case(gw, conn, where, nats_sub, pub, tok)


def through_nginx(gw, nats_sub, tok):
    """The next user's request must never become the body of the attacker's publish."""
    victim_tok = token(subscribe=("victim.>",), publish=())
    for scheme, port in (("http", gw.plain_port), ("https", gw.port)):
        where = "nginx (%s upstream)" % scheme
        with eu.Nginx(gw, port, scheme) as ngx:
            edge = ngx.edge(gw.ca)
            eu.wait_through(edge, "/events/smug.ready?access_token=" + tok)
            # The attacker's GET carries a publish whose body is still to come.
            hidden = (b"POST /publish/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                      b"Content-Length: 120\r\n\r\n" % (LOOT.encode(), tok.encode()))
            for chunked in (False, True):
                w = "%s, %s" % (where, "chunked" if chunked else "Content-Length")
                with u.Conn(u.connect_tls(edge_gw(edge, gw)), "attacker") as a:
                    a.send(with_body("GET", "/index.html", hidden, chunked, auth(tok)))
                    r = a.read_response(timeout=10)
                    expect(r.status == 200, "%s: the attacker's GET got %r" % (w, r))
                # The victim, on a connection of their own, over the same upstream pool.
                with u.Conn(u.connect_tls(edge_gw(edge, gw)), "victim") as v:
                    v.send(u.get("/index.html", extra="Authorization: Bearer %s\r\n"
                                 "Cookie: session=victim-cookie\r\nX-Request-Id: victim-1\r\n"
                                 % victim_tok))
                    r = v.read_response(timeout=10)
                    check_one(r, 200, "victim-1", w + ": the victim")
                fence(gw, nats_sub, w, tok)
            errors = [ln for ln in ngx.extra_log().splitlines() if "[error]" in ln]
            h.log("%s: the victim got its own answer; nothing published (nginx errors: %d)"
                  % (where, len(errors)))


def edge_gw(edge, gw):
    """What connect_tls needs to reach the proxy: its port and the CA."""
    class E:
        port = edge.port
        ca = gw.ca
    return E


def pipelining(gw):
    """A client that pipelines many GETs of a large file and does not read."""
    base = gw.rss_bytes()
    c = u.Conn.plain(gw, rcvbuf=16384)
    with c:
        tok = auth(token())
        c.send(b"".join(u.get("/big.bin", extra="X-Request-Id: p%d\r\n%s" % (i, tok))
                        for i in range(PIPELINED)))
        # Wait until the gateway stops writing (the socket is full), then look at its memory.
        last, since = None, time.monotonic()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = mu.metric(gw, "sluice_bytes_written_total")
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= 0.5:
                break
            time.sleep(0.05)
        grown = gw.rss_bytes() - base
        h.log("pipelining: %d GETs of %d KiB unread; gateway RSS grew %.1f MiB"
              % (PIPELINED, BIG >> 10, grown / 1048576))
        if not h.sanitized():
            expect(grown < 12 * BIG, "gateway RSS grew by %.1f MiB for %d pipelined answers "
                   "nobody reads (bounded output would hold about one)"
                   % (grown / 1048576, PIPELINED))
        with open(gw.big_path, "rb") as f:
            want = f.read()
        for i in range(PIPELINED):
            r = c.read_response(timeout=30)
            check_one(r, 200, "p%d" % i, "pipelined GET %d" % i)
            expect(r.body == want, "pipelined GET %d: body of %d bytes differs" % (i, len(r.body)))
    h.log("pipelining: all %d answers right once the client read" % PIPELINED)


# -- HTTP/2 ------------------------------------------------------------------


def h2_lower_stream(gw, plain):
    where = "h2c" if plain else "h2 over TLS"

    def req(c, sid, path, end_stream=True):
        hdrs = h2.request_headers(gw, path)
        if plain:
            hdrs = [(n, v) if n != ":scheme" else (n, "http") for n, v in hdrs]
        flags = h2.END_HEADERS | (h2.END_STREAM if end_stream else 0)
        return h2.frame(h2.HEADERS, flags, sid, h2.header_block(hdrs))

    # h2spec http2/5.1.1/2: stream 5, then HEADERS on stream 3 (never opened).
    c = h2.raw_conn(gw, plain=plain)
    c.send(req(c, 5, "/no-such-file"))
    c.wait(lambda x: x.headers_on(5), 5)
    c.send(req(c, 3, "/no-such-file"))
    expect(c.wait(lambda x: x.goaway(), 5), "%s: no GOAWAY after HEADERS on a lower, never "
           "opened stream id (frames %r)" % (where, c.frames))
    last, code = c.goaway()
    expect(code == h2.PROTOCOL_ERROR, "%s: GOAWAY %s, expected PROTOCOL_ERROR"
           % (where, h2.err_name(code)))
    expect(c.wait_closed(5), "%s: the connection stayed open after the GOAWAY" % where)
    expect(not c.headers_on(3), "%s: stream 3 was answered" % where)
    c.close()

    # Legal: PRIORITY on idle lower ids, trailers (HEADERS) on an open stream, and
    # consecutive ids.
    c = h2.raw_conn(gw, plain=plain)
    prio = struct.pack(">IB", 0, 15)
    c.send(h2.frame(h2.PRIORITY, 0, 9, prio) + req(c, 11, "/no-such-file") +
           h2.frame(h2.PRIORITY, 0, 7, prio) + h2.frame(h2.PRIORITY, 0, 3, prio))
    c.send(req(c, 13, "/no-such-file", end_stream=False))
    c.send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 13,
                    h2.header_block([("x-trailer", "1")])))
    c.send(req(c, 15, "/no-such-file"))
    ok = c.wait(lambda x: all(x.headers_on(i) for i in (11, 13, 15)), 5)
    expect(ok and not c.goaway() and not c.resets(), "%s: legal frames were refused: GOAWAY %r, "
           "resets %r, frames %r" % (where, c.goaway(), c.resets(), c.frames))
    c.close()
    h.log("%s: HEADERS on a skipped lower id is GOAWAY PROTOCOL_ERROR; PRIORITY on idle ids "
          "and trailers are fine" % where)


def h2c_bad_preface(gw):
    for what, data in (("PRI line, wrong rest", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
                       ("PRI line, then SETTINGS", b"PRI * HTTP/2.0\r\n\r\n" + h2.frame(
                           h2.SETTINGS, 0, 0))):
        c = h2.raw_conn(gw, plain=True, preface=False)
        c.send(data)
        closed = c.wait_closed(5)
        expect(not c.rbuf.startswith(b"HTTP/"), "%s: answered as HTTP/1.1: %r"
               % (what, c.rbuf[:80]))
        ga = c.goaway()
        expect(ga and ga[1] == h2.PROTOCOL_ERROR and closed,
               "%s: expected GOAWAY PROTOCOL_ERROR and a close; got frames %r, closed %s"
               % (what, c.frames, closed))
        c.close()
    # Not HTTP/2 at all: still HTTP/1.1's to answer.
    r, closed = u.one(gw, b"PRI * HTTP/1.1\r\nHost: x\r\n\r\n")
    expect(r.status == 400 and closed, "PRI * HTTP/1.1: %r" % r)
    h.log("plain listener: an invalid HTTP/2 preface gets GOAWAY PROTOCOL_ERROR")


def test():
    keys = s.Keys()
    secret = keys.secret("hs.secret", SECRET)
    www = h.tempdir("sluice-www-")
    with open(os.path.join(www, "index.html"), "wb") as f:
        f.write(b"<!doctype html><title>smuggling</title>\n")
    big = os.path.join(www, "big.bin")
    with open(big, "wb") as f:
        f.write(bytes(range(256)) * (BIG // 256))
    tok = token()
    with h.Nats() as nats, nu.NatsClient(nats.port) as pub, nu.NatsClient(nats.port) as nats_sub, \
            u.gateway(nats.url, www=www, auth="jwt", jwt_secret_file=secret,
                      jwt_leeway_s=0) as gw:
        gw.big_path = big
        nats_sub.sub(LOOT)
        h2c_bad_preface(gw)
        h2_lower_stream(gw, plain=False)
        h2_lower_stream(gw, plain=True)
        direct(gw, nats_sub, pub, tok)
        pipelining(gw)
        eu.need("nginx")
        through_nginx(gw, nats_sub, tok)
        gw.check_alive()
        gw.stop()  # exit 0: under ASan, also no leak from held bodies or lingering closes


if __name__ == "__main__":
    h.main(test, deadline_s=240)
