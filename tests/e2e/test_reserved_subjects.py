#!/usr/bin/env python3
"""Reserved NATS subjects, foreign Host names (DNS rebinding): what broke and stays shut.

What broke: any client could POST to $JS.API.STREAM.CREATE.X (202, and the
stream existed) or $JS.API.STREAM.DELETE.X, watch /events?subject=$JS.API.>
for other people's API requests, and subscribe or publish on _INBOX.>
(where the gateway's own JetStream replies travel); a JWT granting ">"
covered all of it. And with --auth none (and on the admin listener) any
Host was served, so a page that rebinds its DNS name to 127.0.0.1 could
publish, subscribe and read /metrics.

One JetStream nats-server; gateways:
  open  --auth none, --allow-subjects '$KV.cfg.>', --allowed-hosts
        gw.example.test, --jetstream-streams ORDERS (orders.>);
  jwt   --auth jwt (HS256), the same allow-list.

Checked, over h2 (curl --http2) and HTTP/1.1 (curl --http1.1, same TLS
listener):
  - POST /publish/$JS.API.STREAM.CREATE.EVIL with a valid stream config:
    403, one text/plain line, and JetStream has no stream EVIL; POST to
    $JS.API.STREAM.DELETE.KEEP: 403 and KEEP still exists; _INBOX.x and
    $SYS.x: 403.
  - /events/$JS.API.>, /events/_INBOX.>, /events?subject=$SYS.>, a stream
    that mixes a.b with _INBOX.x, /poll?subject=_INBOX.x: 403.
  - Streams on >, *.y and * receive nothing published on _INBOX.foo,
    $X.y, _INBOX, $ or $KV.cfg.a, but do receive a.y / a (the fences,
    published after the reserved ones); sluice_nats_reserved_dropped_total
    counts the drops.
  - With --auth jwt and a token granting > for subscribe and publish:
    every reserved subject above is still 403 (no stream EVIL2), a.b is
    202; the allow-listed $KV.cfg.> needs a grant that names $KV itself
    (the > token gets 403, a $KV.cfg.> token 200), and $KV.other.x is 403
    even for a token granting $KV.>.
  - The allow-list lets $KV.cfg.> through on the open gateway: a stream on
    $KV.cfg.> receives $KV.cfg.a, and POST /publish/$KV.cfg.b is 202 and
    arrives; $KV.other is 403.
  - A JetStream stream the operator configured (orders.>) still streams.
  - Host: evil.example -> 421 (one text/plain line) on h2 and HTTP/1.1 with
    auth none, and nothing is published; localhost:PORT, 127.0.0.1 and the
    allowed gw.example.test are served; with auth jwt the Host rule does
    not apply (the token is the defence). The admin listener answers 421
    to /metrics with a foreign Host on both gateways, 200 with 127.0.0.1,
    the allowed name, or no Host at all (HTTP/1.0 probes).
  - sluice_limit_hits_total{limit="reserved_subject"} and {limit="host"}
    count the refusals.

IPv6: on a plain listener at [::1] (skipped when the machine has no ::1),
a request with Host [::1]:PORT is served, and with
--max-connections-per-address 2 a third connection from ::1 is closed at
accept (limit connections_per_address): the per-prefix count works on a
real IPv6 peer. That two different addresses of one /64 share the limit is
covered by unit tests only (tests/unit/test_guard.c): this machine's
loopback has ::1 alone, and traffic stays on loopback.
"""
import json
import re
import socket
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import h1_util as h1  # noqa: E402
import js_util as js  # noqa: E402
import sec_util as u  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import HOST, expect  # noqa: E402

SECRET = b"e2e-reserved-secret-0123456789abcdefghijklmnopqrstuvwxyz"
ALLOW = "$KV.cfg.>"
ALLOWED_HOST = "gw.example.test"


def one_line(r, what):
    ctype = r.header("content-type") or ""
    expect(ctype.startswith("text/plain"), "%s: content-type %r" % (what, ctype))
    body = r.body.decode("utf-8", "replace")
    expect(body.endswith("\n") and "\n" not in body[:-1] and body.strip(),
           "%s: the reason is not one line: %r" % (what, body))


def request(gw, path, status, method="GET", data=None, token=None, http1=False, host=None,
            max_time=3):
    """One request; the status must be status. A 200 SSE stream is cut by max_time."""
    extra = ["--http1.1"] if http1 else []
    if token:
        extra += ["-H", "Authorization: Bearer " + token]
    if host:
        extra += ["-H", "Host: " + host]
    what = "%s %s (%s%s%s)" % (method, path, "HTTP/1.1" if http1 else "h2",
                               ", Host " + host if host else "", ", token" if token else "")
    if status == 200 and method == "GET":
        # An SSE stream does not end: read its head, then let curl's --max-time cut it.
        s = h.CurlStream(gw, path, max_time=max_time, extra=extra)
        try:
            s.wait_start(timeout=10)
            version, got, _ = s.headers()
        finally:
            s.close()
        expect(got == 200, "%s: status %d, expected 200" % (what, got))
        return None
    r = h.curl(gw, path, method=method, data=data, extra=extra)
    expect(r.version == ("1.1" if http1 else "2"), "%s answered over HTTP/%s" % (what, r.version))
    expect(r.status == status, "%s: status %d, expected %d (body %r)"
           % (what, r.status, status, r.body[:200]))
    if status in (403, 421):
        one_line(r, what)
    return r


def stream_exists(node, name):
    with nu.NatsClient(node.port) as c:
        try:
            js.js_api(c, "STREAM.INFO." + name)
            return True
        except js.JsApiError as e:
            expect(e.code == 404, "STREAM.INFO.%s: unexpected error %s" % (name, e))
            return False


EVIL_CONFIG = json.dumps({"name": "EVIL", "subjects": ["evil.>"], "storage": "memory"})


def publishes_refused(gw, node, token=None, evil="EVIL"):
    cfg = EVIL_CONFIG.replace("EVIL", evil)
    for http1 in (False, True):
        request(gw, "/publish/$JS.API.STREAM.CREATE." + evil, 403, "POST", cfg, token, http1)
        request(gw, "/publish/%24JS.API.STREAM.CREATE." + evil, 403, "POST", cfg, token, http1)
        request(gw, "/publish/$JS.API.STREAM.DELETE.KEEP", 403, "POST", "", token, http1)
        request(gw, "/publish/_INBOX.x", 403, "POST", "hi", token, http1)
        request(gw, "/publish/$SYS.x", 403, "POST", "hi", token, http1)
    expect(not stream_exists(node, evil), "stream %s was created through the gateway" % evil)
    expect(stream_exists(node, "KEEP"), "stream KEEP was deleted through the gateway")


SUBSCRIBE_REFUSED = [
    "/events/%24JS.API.%3E",
    "/events/$JS.API.%3E",
    "/events/_INBOX.%3E",
    "/events?subject=%24SYS.%3E",
    "/events?subject=a.b&subject=_INBOX.x",
    "/poll?subject=_INBOX.x",
    "/poll?subject=%24JS.API.%3E",
]


def subscribes_refused(gw, token=None):
    for http1 in (False, True):
        for path in SUBSCRIBE_REFUSED:
            request(gw, path, 403, token=token, http1=http1)


def wildcards_see_no_reserved(gw, node):
    """>, *.y and * match reserved subjects in NATS itself: the bus must drop them."""
    before = mu.metric(gw, "sluice_nats_reserved_dropped_total")
    streams = {p: h.CurlStream(gw, "/events/" + q, max_time=60)
               for p, q in ((">", "%3E"), ("*.y", "*.y"), ("*", "*"))}
    try:
        for s in streams.values():
            s.wait_start(timeout=10)  # the 200 comes once nats-server has the subscription
        with nu.NatsClient(node.port) as c:
            for subj in ("_INBOX.foo", "$X.y", "_INBOX", "$", "$KV.cfg.a", "_INBOX.a.y"):
                c.pub(subj, "leak " + subj)
            c.pub("a.y", "fence-a.y")
            c.pub("a", "fence-a")
            c.flush()
        fences = {">": [b"data: fence-a.y\n", b"data: fence-a\n"], "*.y": [b"data: fence-a.y\n"],
                  "*": [b"data: fence-a\n"]}
        for p, s in streams.items():
            for f in fences[p]:
                s.wait_bytes(f, 10)
            body = s.data()
            expect(b"leak" not in body, "the %s stream received a reserved subject's message: %r"
                   % (p, body[-600:]))
    finally:
        for s in streams.values():
            s.close()
    # > drops all six, *.y drops $X.y, * drops _INBOX and $; the gateway's own replies may add.
    after = mu.metric(gw, "sluice_nats_reserved_dropped_total")
    expect(after - before >= 9, "sluice_nats_reserved_dropped_total grew by %g, expected >= 9"
           % (after - before))
    h.log("streams on >, *.y and * got their fences and none of the reserved messages")


def allow_list_open(gw, node):
    s = h.CurlStream(gw, "/events/%24KV.cfg.%3E", max_time=60)
    try:
        s.wait_start(timeout=10)
        with nu.NatsClient(node.port) as c:
            c.pub("$KV.cfg.a", "allowed-from-nats")
            c.flush()
        s.wait_bytes(b"data: allowed-from-nats\n", 10)
        request(gw, "/publish/$KV.cfg.b", 202, "POST", "allowed-from-http")
        s.wait_bytes(b"data: allowed-from-http\n", 10)
    finally:
        s.close()
    request(gw, "/publish/$KV.other", 403, "POST", "x")
    request(gw, "/events/%24KV.other.%3E", 403)
    h.log("the allow-list lets $KV.cfg.> through, and nothing else")


def jetstream_still_streams(gw, node):
    s = h.CurlStream(gw, "/events/orders.%3E", max_time=60)
    try:
        s.wait_start(timeout=10)
        with nu.NatsClient(node.port) as c:
            js.js_publish(c, "orders.eu", "order-1")
        s.wait_bytes(b"data: order-1\n", 10)
    finally:
        s.close()
    h.log("a configured JetStream stream (orders.>) still streams")


def jwt_checks(gw, node):
    everything = u.jwt_hs(u.claims(subscribe=[">"], publish=[">"]), SECRET)
    publishes_refused(gw, node, everything, evil="EVIL2")
    subscribes_refused(gw, everything)
    request(gw, "/publish/a.b", 202, "POST", "x", everything)
    request(gw, "/publish/a.b", 202, "POST", "x", everything, http1=True)
    # Allow-listed, but a wildcard grant does not name it.
    request(gw, "/events/%24KV.cfg.%3E", 403, token=everything)
    request(gw, "/publish/$KV.cfg.a", 403, "POST", "x", everything)
    kv = u.jwt_hs(u.claims(subscribe=["$KV.>"], publish=["$KV.cfg.>"]), SECRET)
    request(gw, "/events/%24KV.cfg.%3E", 200, token=kv)
    request(gw, "/publish/$KV.cfg.a", 202, "POST", "x", kv)
    # Granted, but not allow-listed by the operator.
    request(gw, "/events/%24KV.other.x", 403, token=kv)
    # The Host rule is for auth none: a token is the defence here.
    request(gw, "/publish/a.b", 202, "POST", "x", everything, host="evil.example")
    h.log("auth jwt: a > grant covers no reserved subject; $KV.cfg.> needs grant and allow-list")


def admin_get(gw, host, path="/metrics"):
    """GET on the admin listener with exactly this Host (None: no Host, HTTP/1.0)."""
    with socket.create_connection((HOST, gw.admin_port), timeout=5) as sock:
        if host is None:
            req = "GET %s HTTP/1.0\r\n\r\n" % path
        else:
            req = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)
        sock.sendall(req.encode())
        got, _ = h.read_until_closed(sock, 5)
    head, _, body = got.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def hosts(gw, gwj):
    for http1 in (False, True):
        request(gw, "/publish/host.evil", 421, "POST", "evil", http1=http1,
                    host="evil.example")
        request(gw, "/events/host.x", 421, http1=http1, host="evil.example:%d" % gw.port)
        request(gw, "/events/host.x", 421, http1=http1, host="localhost.evil.example")
        request(gw, "/publish/host.ok", 202, "POST", "ok", http1=http1,
                host="localhost:%d" % gw.port)
        request(gw, "/publish/host.ok", 202, "POST", "ok", http1=http1,
                host="127.0.0.1:%d" % gw.port)
        request(gw, "/publish/host.ok", 202, "POST", "ok", http1=http1,
                host="GW.example.test:%d" % gw.port)
    # An absolute-form target's authority replaces Host (RFC 9112 3.2.2): it is the name checked.
    for target, want in (("http://evil.example/publish/host.abs", 421),
                         ("http://localhost/publish/host.abs", 202)):
        r, _ = h1.one(gw, b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nx"
                      % target.encode(), tls=True)
        expect(r.status == want, "absolute-form %s: %d, expected %d" % (target, r.status, want))
    for g in (gw, gwj):
        status, body = admin_get(g, "evil.example:%d" % g.admin_port)
        expect(status == 421, "admin /metrics with Host evil.example: %d %r" % (status, body[:200]))
        expect(body.count(b"\n") == 1, "admin 421 reason is not one line: %r" % body)
        expect(b"sluice_" not in body, "admin 421 carried metrics")
        for ok_host in ("127.0.0.1:%d" % g.admin_port, "localhost", ALLOWED_HOST, None):
            status, body = admin_get(g, ok_host)
            expect(status == 200 and b"sluice_" in body,
                   "admin /metrics with Host %r: %d" % (ok_host, status))
        status, _ = admin_get(g, "evil.example", "/healthz")
        expect(status == 421, "admin /healthz with Host evil.example: %d" % status)
    h.log("Host: foreign names 421 (h2, HTTP/1.1, admin), loopback and allowed names served")


def ipv6_loopback(node):
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as e:
        h.log("SKIP ipv6 part: no ::1 here (%s)" % e)
        return
    gw = h.Gateway(node.url, listen_plain="[::1]:0", max_connections_per_address=2)
    m = h.wait_until(lambda: re.search(r"plain on http://\[::1\]:(\d+)", gw.log()),
                     10, "the [::1] plain listener line")
    port = int(m.group(1))

    def conn():
        s6 = socket.create_connection(("::1", port), timeout=5)
        return h1.Conn(s6, "plain [::1]")
    held = []
    try:
        for i in range(2):
            c = conn()
            held.append(c)
            c.send(b"POST /publish/v6.ok HTTP/1.1\r\nHost: [::1]:%d\r\nContent-Length: 2\r\n\r\nok"
                   % port)
            r = c.read_response(5)
            expect(r.status == 202, "publish over [::1] with Host [::1]:%d: %d %r"
                   % (port, r.status, r.body))
        before = mu.limit_hits(gw).get("connections_per_address", 0)
        third = conn()
        held.append(third)
        try:
            third.send(b"GET /nope HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        except OSError:
            pass
        expect(third.wait_closed(5) and b"HTTP/1.1" not in third.buf,
               "a third connection from ::1 was served past max-connections-per-address 2: %r"
               % third.buf[:200])
        after = mu.limit_hits(gw).get("connections_per_address", 0)
        expect(after == before + 1, "connections_per_address went %g -> %g" % (before, after))
    finally:
        for c in held:
            c.close()
    gw.stop()
    h.log("[::1]: Host [::1]:PORT served; the third connection from ::1 closed at accept")


def test():
    node = js.single_node()
    js.create_stream([node.port], "KEEP", ["keep.>"], storage="memory")
    js.create_stream([node.port], "ORDERS", ["orders.>"], storage="memory")
    secret = u.Keys().secret("hs.secret", SECRET)
    gw = h.Gateway(node.url, allow_subjects=ALLOW, allowed_hosts=ALLOWED_HOST,
                   jetstream_streams="ORDERS")
    gwj = h.Gateway(node.url, auth="jwt", jwt_secret_file=secret, allow_subjects=ALLOW,
                    allowed_hosts=ALLOWED_HOST)

    publishes_refused(gw, node)
    h.log("auth none: publishes to $JS.API, _INBOX and $SYS refused; no stream made or deleted")
    subscribes_refused(gw)
    h.log("auth none: /events and /poll on reserved subjects refused")
    wildcards_see_no_reserved(gw, node)
    allow_list_open(gw, node)
    jetstream_still_streams(gw, node)
    jwt_checks(gwj, node)
    hosts(gw, gwj)
    ipv6_loopback(node)

    hits = mu.limit_hits(gw)
    expect(hits.get("reserved_subject", 0) >= 2 * 5 + 2 * len(SUBSCRIBE_REFUSED) + 2,
           "limit_hits reserved_subject = %r" % hits.get("reserved_subject"))
    expect(hits.get("host", 0) >= 7, "limit_hits host = %r" % hits.get("host"))
    for g in (gw, gwj):
        g.check_alive("after the reserved-subject and Host checks")
        g.stop()

if __name__ == "__main__":
    h.main(test, deadline_s=240)
