#!/usr/bin/env python3
"""Issue 5 (2): CORS for cross-origin EventSource, with exact status codes.

Gateways:
  open  --auth none, --cors-origins 'https://app.example.com,https://*.example.org,
        http://localhost:3000', --cors-credentials 1;
  jwt   --auth jwt (HS secret), --cors-origins https://app.example.com,
        credentials off;
  bare  no --cors-origins at all.

Cases, over h2 (curl --http2) and some over HTTP/1.1:
  - an allowed exact origin, and wildcard subdomains one and two labels
    deep, get the SSE 200 with access-control-allow-origin echoing the
    Origin and vary: origin; access-control-allow-credentials: true only
    where --cors-credentials 1; an origin differing only in letter case
    or spelling the default port (:443) is the same origin;
  - disallowed origins -> 403, text/plain, no allow-origin: the bare
    wildcard domain, a look-alike (evil-example.org, example.org.evil.test),
    another scheme, another port, a trailing dot, "null", two Origin
    fields, and any Origin at all on a gateway with none configured;
  - POST /publish from a disallowed origin -> 403 and nothing is published
    (a "simple" cross-origin POST needs no preflight);
  - preflight: OPTIONS with Origin and Access-Control-Request-Method ->
    204, allow-methods with GET (and POST), allow-headers with
    last-event-id, max-age, allow-origin, vary; no token needed even
    where auth is on (browsers never send credentials on a preflight);
    from a disallowed origin -> 403;
  - a 401 of auth carries the CORS headers, so the page can read it;
  - same origin: Origin https://localhost:PORT to the TLS listener at
    localhost:PORT is not cross-origin (200 / 202 where no origin of that
    name is configured), while the same host on another port or over
    http:// is;
  - the patterns "*" with credentials, "https://*.com" and "null" are
    refused at start with one error line.
"""
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import sec_util as u  # noqa: E402
from harness import expect  # noqa: E402

SECRET = b"cors-e2e-secret-0123456789abcdefghijklmnopqrstu"
ORIGINS = "https://app.example.com,https://*.example.org,http://localhost:3000"


def req(gw, path, origin=None, http1=False, method="GET", data=None, extra=()):
    args = list(extra)
    if origin is not None:
        for o in (origin if isinstance(origin, (list, tuple)) else [origin]):
            args += ["-H", "Origin: " + o]
    return u.Probe(gw, path, args, http1, method, data,
                   what="%s %s Origin %r (%s)" % (method, path[:50], origin,
                                                  "HTTP/1.1" if http1 else "h2"))


def vary_has_origin(p):
    return any("origin" in [t.strip().lower() for t in v.split(",")] for v in p.all("vary"))


def allowed(gw, path, origin, credentials, http1=False, token=None):
    extra = ["-H", "Authorization: Bearer " + token] if token else []
    p = req(gw, path, origin, http1, extra=extra)
    expect(p.status == 200, "%s: status %d, expected 200 (body %r)" % (p.what, p.status, p.body))
    acao = p.all("access-control-allow-origin")
    expect(acao == [origin], "%s: access-control-allow-origin %r, expected exactly [%r]"
           % (p.what, acao, origin))
    expect(vary_has_origin(p), "%s: no vary: origin (vary %r)" % (p.what, p.all("vary")))
    acac = p.header("access-control-allow-credentials")
    if credentials:
        expect(acac == "true", "%s: access-control-allow-credentials %r, expected true"
               % (p.what, acac))
    else:
        expect(acac is None, "%s: access-control-allow-credentials %r without "
               "--cors-credentials" % (p.what, acac))
    return p


def denied(gw, path, origin, http1=False, method="GET", data=None):
    p = req(gw, path, origin, http1, method, data)
    expect(p.status == 403, "%s: status %d, expected 403 (body %r)" % (p.what, p.status, p.body))
    ct = (p.header("content-type") or "").split(";")[0].strip()
    expect(ct == "text/plain", "%s: 403 with content-type %r" % (p.what, ct))
    p.one_line_body()
    expect(p.header("access-control-allow-origin") is None,
           "%s: a refused origin got access-control-allow-origin %r"
           % (p.what, p.header("access-control-allow-origin")))
    return p


def preflight(gw, path, origin, method="GET", req_headers="last-event-id", http1=False):
    extra = ["-H", "Access-Control-Request-Method: " + method]
    if req_headers:
        extra += ["-H", "Access-Control-Request-Headers: " + req_headers]
    return req(gw, path, origin, http1, method="OPTIONS", extra=extra)


def check_preflight(p, origin, credentials):
    expect(p.status == 204, "%s: status %d, expected 204 (body %r)" % (p.what, p.status, p.body))
    expect(p.body == b"", "%s: 204 with a body %r" % (p.what, p.body[:100]))
    expect(p.all("access-control-allow-origin") == [origin],
           "%s: access-control-allow-origin %r" % (p.what, p.all("access-control-allow-origin")))
    methods = [m.strip().upper() for v in p.all("access-control-allow-methods")
               for m in v.split(",")]
    expect("GET" in methods and "POST" in methods,
           "%s: access-control-allow-methods %r lacks GET or POST" % (p.what, methods))
    hdrs = [x.strip().lower() for v in p.all("access-control-allow-headers") for x in v.split(",")]
    expect("last-event-id" in hdrs, "%s: access-control-allow-headers %r lacks last-event-id"
           % (p.what, hdrs))
    age = p.header("access-control-max-age")
    expect(age is not None and age.isdigit() and 0 < int(age) <= 86400,
           "%s: access-control-max-age %r" % (p.what, age))
    expect(vary_has_origin(p), "%s: no vary: origin" % p.what)
    acac = p.header("access-control-allow-credentials")
    expect(acac == ("true" if credentials else None),
           "%s: access-control-allow-credentials %r" % (p.what, acac))
    return hdrs


CONNECTION_SPECIFIC = ("connection", "keep-alive", "transfer-encoding")


def preflight_same_over_h2_and_http1(gw, path, origin):
    """Regression: the preflight answer drifted between the front ends (HTTP/1.1
    added content-type, content-length and cache-control to its 204). The same
    preflight must get the same status and headers over both, minus HTTP/1.1's
    connection-specific ones."""
    # The same request id on both, so that every header value can be compared.
    extra = ["-H", "X-Request-Id: preflight-drift", "-H", "Access-Control-Request-Method: GET",
             "-H", "Access-Control-Request-Headers: last-event-id"]
    heads = []
    for http1 in (False, True):
        p = req(gw, path, origin, http1, method="OPTIONS", extra=extra)
        heads.append((p.status, sorted((n, v) for n, v in p.headers
                                       if n not in CONNECTION_SPECIFIC)))
    expect(heads[0] == heads[1], "preflight %s Origin %s: h2 answered %r, HTTP/1.1 %r"
           % (path, origin, heads[0], heads[1]))
    if heads[0][0] == 204:
        names = [n for n, _ in heads[0][1]]
        for banned in ("content-length", "content-type"):
            expect(banned not in names, "preflight 204 carries %s: %r" % (banned, heads[0][1]))
    return heads[0]


def test():
    nats = h.Nats()
    keys = u.Keys()
    secret = keys.secret("hs.secret", SECRET)
    open_gw = h.Gateway(nats.url, cors_origins=ORIGINS, cors_credentials=1)
    jwt_gw = h.Gateway(nats.url, auth="jwt", jwt_secret_file=secret,
                       cors_origins="https://app.example.com", cors_credentials=0)
    bare = h.Gateway(nats.url)
    token = u.jwt_hs(u.claims(("cors.>",), ("cors.>",)), SECRET)
    path = "/events/cors.a"

    # Allowed origins on the SSE 200.
    for origin in ("https://app.example.com", "https://a.example.org",
                   "https://deep.er.example.org", "https://APP.Example.COM",
                   "https://app.example.com:443", "http://localhost:3000"):
        allowed(open_gw, path, origin, credentials=True)
    allowed(open_gw, path, "https://app.example.com", credentials=True, http1=True)
    allowed(open_gw, "/events?subject=cors.a&subject=cors.b", "https://x.example.org", True)
    allowed(jwt_gw, path, "https://app.example.com", credentials=False, token=token)
    allowed(jwt_gw, path, "https://app.example.com", credentials=False, token=token, http1=True)
    h.log("allowed origins ok")

    # Disallowed ones.
    for origin in ("https://example.org", "https://evil-example.org",
                   "https://example.org.evil.test", "https://app.example.com.evil.test",
                   "http://app.example.com", "https://app.example.com:8443",
                   "https://app.example.com.", "null", "https://evil.test",
                   "http://localhost:3001", "https://localhost:3000",
                   ["https://app.example.com", "https://app.example.com"],
                   ["https://app.example.com", "https://evil.test"]):
        denied(open_gw, path, origin)
    denied(open_gw, path, "https://evil.test", http1=True)
    denied(jwt_gw, path, "https://a.example.org")
    denied(bare, path, "https://app.example.com")
    p = req(bare, path)
    expect(p.status == 200, "%s without Origin: status %d" % (p.what, p.status))
    h.log("disallowed origins ok")

    # A cross-origin POST /publish from a refused origin publishes nothing.
    watcher = h.CurlStream(open_gw, "/events/cors.pub", max_time=30)
    _, _, off = watcher.wait_start()
    denied(open_gw, "/publish/cors.pub", "https://evil.test", method="POST", data="forged-1")
    denied(open_gw, "/publish/cors.pub", "https://evil.test", http1=True, method="POST",
           data="forged-2")
    denied(open_gw, "/publish/cors.pub", "null", method="POST", data="forged-3")
    p = req(open_gw, "/publish/cors.pub", "https://app.example.com", method="POST", data="ok-1")
    expect(p.status == 202, "%s: status %d, expected 202" % (p.what, p.status))
    expect(p.all("access-control-allow-origin") == ["https://app.example.com"],
           "%s: the 202 lacks access-control-allow-origin" % p.what)
    watcher.wait_bytes(b"data: ok-1\n\n", 10, off)
    blocks, _ = h.parse_blocks(watcher.data()[off:])
    got = [b.data[0] for b in blocks if b.is_event]
    expect(got == ["ok-1"], "a subscriber got %r: a refused origin's POST was published" % got)
    watcher.close()
    h.log("refused cross-origin publish publishes nothing")

    # Preflight.
    for gw, origin, creds in ((open_gw, "https://app.example.com", True),
                              (open_gw, "https://a.b.example.org", True),
                              (jwt_gw, "https://app.example.com", False)):
        hdrs = check_preflight(preflight(gw, path, origin), origin, creds)
        check_preflight(preflight(gw, "/publish/cors.a", origin, "POST", "content-type"), origin,
                        creds)
        check_preflight(preflight(gw, path, origin, http1=True), origin, creds)
    h.log("preflight ok (allow-headers %r)" % hdrs)
    for gw, origin in ((open_gw, "https://evil.test"), (open_gw, "https://example.org"),
                       (jwt_gw, "https://a.example.org"), (bare, "https://app.example.com")):
        p = preflight(gw, path, origin)
        expect(p.status == 403, "%s: status %d, expected 403" % (p.what, p.status))
        expect(p.header("access-control-allow-origin") is None,
               "%s: a refused preflight got access-control-allow-origin" % p.what)
    p = preflight(open_gw, path, "https://evil.test", http1=True)
    expect(p.status == 403, "%s: status %d, expected 403" % (p.what, p.status))
    h.log("refused preflights ok")
    for gw, origin, status in ((open_gw, "https://app.example.com", 204),
                               (jwt_gw, "https://app.example.com", 204),
                               (open_gw, "https://evil.test", 403)):
        got = preflight_same_over_h2_and_http1(gw, path, origin)
        expect(got[0] == status, "preflight Origin %s: status %d, expected %d"
               % (origin, got[0], status))
    h.log("preflight answers are the same over h2 and HTTP/1.1")

    # A 401 is readable cross-origin.
    p = req(jwt_gw, path, "https://app.example.com")
    expect(p.status == 401, "%s: status %d, expected 401" % (p.what, p.status))
    expect(p.all("access-control-allow-origin") == ["https://app.example.com"] and
           vary_has_origin(p), "%s: the 401 lacks the CORS headers: %r" % (p.what, p.headers))
    expect(p.header("www-authenticate"), "%s: 401 without www-authenticate" % p.what)

    # Same origin: the page served by the gateway itself.
    for gw in (jwt_gw, bare, open_gw):
        same = "https://localhost:%d" % gw.port
        extra = ["-H", "Authorization: Bearer " + token] if gw is jwt_gw else []
        for http1 in (False, True):
            p = req(gw, path, same, http1, extra=extra)
            expect(p.status == 200, "%s: status %d, expected 200: same origin treated as "
                   "cross-origin (body %r)" % (p.what, p.status, p.body))
        p = req(gw, "/publish/cors.same", same, method="POST", data="same", extra=extra)
        expect(p.status == 202, "%s: status %d, expected 202" % (p.what, p.status))
        for other in ("https://localhost:%d" % (gw.port + 1 if gw.port < 65535 else 1),
                      "http://localhost:%d" % gw.port):
            if gw is not open_gw or other != "http://localhost:3000":
                denied(gw, path, other)
    h.log("same origin ok")

    # Patterns refused at start.
    base = ["--listen", "127.0.0.1:0", "--cert", bare.cert, "--key", bare.key, "--nats", nats.url,
            "--admin", "off", "--access-log", "off"]
    u.refuses_to_start(base + ["--cors-origins", "*", "--cors-credentials", "1"], "*",
                       "--cors-origins '*' with credentials")
    u.refuses_to_start(base + ["--cors-origins", "https://*.com"], "*.com",
                       "--cors-origins 'https://*.com'")
    u.refuses_to_start(base + ["--cors-origins", "https://app.example.com,null"], "null",
                       "--cors-origins with null")

    for g in (open_gw, jwt_gw, bare):
        g.check_alive("at the end")
        g.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=90)
