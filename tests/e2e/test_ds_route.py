"""The Durable Streams route under auth, CORS and hostile input.

A real nats-server with JetStream and the real gateway with --ds-base-path
/v1/stream/ and auth jwt. A token that may subscribe to ds.d.room reads
that stream (GET, HEAD) but may not write it (PUT, POST, DELETE: 403); one
that may publish there writes it; no token is 401; a token for another
stream is 403. Hostile requests get clean refusals and the gateway keeps
serving: paths with '..', '.', empty segments, NUL and bad escapes (400),
over 256 bytes (414), wildcard and '$' bytes (escaped into their own
stream, never a subject wildcard), malformed offsets and live modes (400),
producer headers out of range (400), a protocol header over 256 bytes
(400), a body past ds-max-body-bytes (413), deep JSON nesting (400). A
CORS preflight under the base path allows the protocol's methods and
headers; an answer exposes Stream-Next-Offset.
"""

import http.client
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import js_util  # noqa: E402
import sec_util as u  # noqa: E402
from harness import expect  # noqa: E402

SECRET = b"ds-route-e2e-secret-0123456789abcdefghijklmnopq"
ORIGIN = "https://app.example.com"


def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection(h.HOST, port, timeout=10)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        hd = dict(headers or {})
        if body is not None:
            hd["Content-Length"] = str(len(body))
        for k, v in hd.items():
            c.putheader(k, v)
        c.endheaders(body)
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def test():
    n = js_util.JsNode()
    n.start()
    keys = u.Keys()
    secret = keys.secret("hs.secret", SECRET)
    try:
        with h.Gateway(n.url, auth="jwt", jwt_secret_file=secret, cors_origins=ORIGIN,
                       extra_args=["--listen-plain", h.HOST + ":0",
                                   "--ds-base-path", "/v1/stream/",
                                   "--ds-max-body-bytes", "65536"]) as gw:
            plain = gw.plain_port
            reader = u.jwt_hs(u.claims(("ds.d.room",), ()), SECRET)
            writer = u.jwt_hs(u.claims(("ds.d.room",), ("ds.d.room",)), SECRET)
            other = u.jwt_hs(u.claims(("ds.d.other",), ("ds.d.other",)), SECRET)
            auth = lambda t: {"Authorization": "Bearer " + t}  # noqa: E731
            tp = {"Content-Type": "text/plain"}
            path = "/v1/stream/room"

            st, _, _ = call(plain, "PUT", path, b"", tp)
            expect(st == 401, "PUT without a token: %d" % st)
            st, _, _ = call(plain, "PUT", path, b"", dict(tp, **auth(reader)))
            expect(st == 403, "PUT with a read-only token: %d" % st)
            st, hd, _ = call(plain, "PUT", path, b"hello", dict(tp, **auth(writer)))
            expect(st == 201, "PUT with a writer's token: %d" % st)
            st, _, body = call(plain, "GET", path + "?offset=-1", headers=auth(reader))
            expect(st == 200 and body == b"hello", "GET with a reader's token: %d %r" % (st, body))
            st, _, _ = call(plain, "HEAD", path, headers=auth(reader))
            expect(st == 200, "HEAD with a reader's token: %d" % st)
            for m, b in (("POST", b"x"), ("DELETE", None)):
                st, _, _ = call(plain, m, path, b, dict(tp, **auth(reader)))
                expect(st == 403, "%s with a read-only token: %d" % (m, st))
            st, _, _ = call(plain, "GET", path + "?offset=-1", headers=auth(other))
            expect(st == 403, "GET with another stream's token: %d" % st)
            h.log("auth: 401 without a token, 403 for reading-only writers and other streams")

            # Hostile input, with a token that may do anything under ds.d.>.
            root = u.jwt_hs(u.claims(("ds.d.>",), ("ds.d.>",)), SECRET)
            a = auth(root)
            for p in ("/v1/stream/a/../b", "/v1/stream/./x", "/v1/stream/a//b", "/v1/stream/",
                      "/v1/stream/a%00b", "/v1/stream/%zz", "/v1/stream/a%2"):
                st, hd, _ = call(plain, "PUT", p, b"", dict(tp, **a))
                expect(st == 400, "PUT %s: %d, want 400" % (p, st))
            st, _, _ = call(plain, "PUT", "/v1/stream/" + "x" * 257, b"", dict(tp, **a))
            expect(st == 414, "a 257-byte stream path: %d" % st)
            st, _, _ = call(plain, "PUT", "/v1/stream/%2A%3E%24w", b"w", dict(tp, **a))
            expect(st == 201, "a path of '*>$w': %d" % st)
            st, _, body = call(plain, "GET", "/v1/stream/%2A%3E%24w?offset=-1", headers=a)
            expect(st == 200 and body == b"w", "reading '*>$w' back: %d %r" % (st, body))
            for q in ("offset=abc", "offset=1", "offset=-2", "offset=-1&live=poll",
                      "live=sse", "offset=00000000000000000"):
                st, hd, _ = call(plain, "GET", path + "?" + q, headers=a)
                expect(st == 400 and hd.get("x-content-type-options") == "nosniff",
                       "GET ?%s: %d %r" % (q, st, hd))
            prod = {"Producer-Id": "p", "Producer-Epoch": "9007199254740992", "Producer-Seq": "0"}
            st, _, _ = call(plain, "POST", path, b"x", dict(tp, **dict(a, **prod)))
            expect(st == 400, "Producer-Epoch past 2^53-1: %d" % st)
            st, _, _ = call(plain, "POST", path, b"x", dict(tp, **dict(a, **{"Stream-Seq": "s" * 300})))
            expect(st == 400, "a 300-byte Stream-Seq: %d" % st)
            st, _, _ = call(plain, "POST", path, b"y" * 70000, dict(tp, **a))
            expect(st == 413, "a body past ds-max-body-bytes: %d" % st)
            st, _, _ = call(plain, "PUT", "/v1/stream/j", b"[]",
                            dict(a, **{"Content-Type": "application/json"}))
            expect(st == 201, "PUT of a JSON stream: %d" % st)
            st, _, _ = call(plain, "POST", "/v1/stream/j", b"[" * 20000,
                            dict(a, **{"Content-Type": "application/json"}))
            expect(st == 400, "20,000 nested arrays: %d" % st)
            h.log("hostile paths, offsets, producer headers, sizes and JSON refused cleanly")

            # CORS: the preflight allows the protocol; an answer exposes its headers.
            st, hd, _ = call(plain, "OPTIONS", path, headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "producer-id, stream-closed"})
            expect(st == 204 and "PUT" in hd.get("access-control-allow-methods", "") and
                   "producer-id" in hd.get("access-control-allow-headers", ""),
                   "the DS preflight: %d %r" % (st, hd))
            st, hd, _ = call(plain, "GET", path + "?offset=-1", headers=dict(a, Origin=ORIGIN))
            expect(st == 200 and "stream-next-offset" in
                   hd.get("access-control-expose-headers", ""),
                   "a cross-origin read does not expose Stream-Next-Offset: %r" % hd)
            st, _, body = call(plain, "GET", path + "?offset=-1", headers=auth(reader))
            expect(st == 200 and body == b"hello", "after all that: %d %r" % (st, body))
            gw.check_alive()
            gw.stop()
    finally:
        n.kill()


if __name__ == "__main__":
    h.main(test, deadline_s=120)
