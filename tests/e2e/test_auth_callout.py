#!/usr/bin/env python3
"""Issue 17: auth = callout, server-chosen subscriptions, revocation.

A small real auth service runs in this process (http.server on a free
loopback port): the session cookie `sid` picks the answer, and the service
counts what it was asked and records the headers it saw. The gateway runs
with two workers, --auth callout, a 700 ms callout timeout.

Checked, over h2 (curl --http2) and HTTP/1.1 (curl --http1.1):
  - a granted stream starts and delivers; the service saw X-Original-URI,
    X-Original-Method, X-Sluice-Subjects, X-Real-IP and the allow-listed
    Cookie, never a header outside the list; from a trusted proxy, X-Real-IP
    is the client its X-Forwarded-For names;
  - server-chosen subscriptions: GET /events (no subject) streams the
    grant's "default" user.{sub}.> for alice and not bob's subject; the
    client cannot widen it (403 for a subject outside the grant);
  - 401 and 403 from the service reach the client as 401 and 403;
  - a failing service (500, bad JSON, a misspelt member, slower than the
    timeout, stopped): an EventSource GET gets 200 with retry: and a clean
    end; POST /publish and GET /poll get 503; all counted;
  - bounded concurrency: with one callout slot and a queue of one, a third
    question is refused at once (200 + retry:, counted `refused`) while the
    queued one waits for the slot;
  - storm: 24 concurrent streams and then 24 publishes with one cookie
    cost at most one callout per worker (coalescing and the cache);
  - revocation by principal through the admin listener (POST /revoke) ends
    alice's h2 and HTTP/1.1 streams with `event: revoked` and the reason,
    leaves bob's running, and the next alice stream is asked afresh;
    revocation by subject through the NATS control subject ends the
    streams on that subject; /revoke refuses a browser's Origin (403), GET
    (405) and bad input (400);
  - a grant with "expires" is re-asked at expiry instead of cut (the
    stream stays open), and ends with `event: revoked` once the service
    says 403;
  - clients that go away while their callout is in flight (h2 and
    HTTP/1.1, 20 of them) leave the gateway serving (run under ASan by
    scripts/test, where a use-after-free would abort it);
  - the service restarting on its port: unavailable while it is down,
    granted again after;
  - with --auth jwt, a token's "default" claim chooses the subjects of
    GET /events the same way, and POST /revoke ends its stream;
  - the callout as a NATS request (auth-callout-subject): no responders
    and no reply in time are unavailable (200 + retry: / 503), a grant
    and a Sluice-Status 403 reply work as over HTTP, and the question is
    the same JSON as the HTTP POST body;
  - start-up refuses auth = callout without a service, a non-HTTP URL, a
    callout subject or a revoke subject that clients could reach.
"""
import http.server
import json
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
import sec_util as u  # noqa: E402
from harness import TestFailure, expect  # noqa: E402

TIMEOUT_MS = 1500


class AuthService:
    """The operator's auth service: session cookie -> answer. Thread-safe counters."""

    def __init__(self, port=0):
        self.lock = threading.Lock()
        self.asked = {}    # sid -> count
        self.seen = []     # (sid, headers dict) of every question
        self.answers = {}  # sid -> (status, body) or a callable
        self.conns = set()  # open connections, closed by stop() like a dying process would
        self.opened = 0     # connections ever accepted: the gateway reuses them
        self.port = port
        self.server = None
        self.start()

    def start(self):
        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the gateway reuses connections

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                with svc.lock:
                    svc.conns.add(self.connection)
                    svc.opened += 1

            def do_GET(self):
                cookie = self.headers.get("Cookie", "")
                sid = ""
                for part in cookie.split(";"):
                    k, _, v = part.strip().partition("=")
                    if k == "sid":
                        sid = v
                with svc.lock:
                    svc.asked[sid] = svc.asked.get(sid, 0) + 1
                    svc.seen.append((sid, {k.lower(): v for k, v in self.headers.items()}))
                    ans = svc.answers.get(sid, (401, ""))
                if callable(ans):
                    ans = ans()
                status, body = ans
                if status == "sleep":
                    delay, grant = body if isinstance(body, tuple) else (body, "late")
                    time.sleep(delay)
                    status, body = 200, json.dumps({"principal": grant,
                                                    "subscribe": ["storm.>"]})
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass  # the gateway gave up on this answer (its timeout): expected

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer((h.HOST, self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            conns, self.conns = self.conns, set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def count(self, sid):
        with self.lock:
            return self.asked.get(sid, 0)

    def grant(self, sid, principal, subscribe=(), publish=(), default=(), **extra):
        body = {"principal": principal, "subscribe": list(subscribe), "publish": list(publish)}
        if default:
            body["default"] = list(default)
        body.update(extra)
        with self.lock:
            self.answers[sid] = (200, json.dumps(body))

    def answer(self, sid, status, body=""):
        with self.lock:
            self.answers[sid] = (status, body)


def cookie(sid):
    return ["-H", "Cookie: theme=dark; sid=%s" % sid]


def stream(gw, path, sid, http1=False, max_time=30):
    extra = cookie(sid) + (["--http1.1"] if http1 else [])
    return h.CurlStream(gw, path, max_time=max_time, extra=extra)


def wait_end(s, timeout=10):
    """Waits for curl to see the end of the response (a clean end: exit 0)."""
    h.wait_until(lambda: not s.alive(), timeout, "the end of %s" % s.path)
    expect(s.proc.returncode == 0, "%s did not end cleanly: curl exit %s, %r"
           % (s.path, s.proc.returncode, s.data()[-300:]))


def fence(nats_url, s, subject, start=0, timeout=10):
    """Publishes a marker on subject until s shows it; returns the offset after it."""
    marker = "fence-%d" % int(time.monotonic() * 1e6)
    deadline = time.monotonic() + timeout
    while True:
        h.publish(nats_url, subject, marker)
        try:
            return s.wait_bytes(marker.encode(), 1.0, start)
        except TestFailure:
            if time.monotonic() > deadline:
                raise


def check_unavailable_sse(gw, sid, what):
    r = h.curl(gw, "/events/chat.x", extra=cookie(sid), max_time=10)
    expect(r.status == 200, "%s: an EventSource GET got %d, not 200 + retry:" % (what, r.status))
    expect(r.header("content-type") == "text/event-stream", "%s: %r" % (what, r))
    expect(r.body.startswith(b"retry: ") and b": authorization unavailable" in r.body,
           "%s: body %r has no retry: and reason" % (what, r.body))


def check_unavailable_other(gw, sid, what):
    r = h.curl(gw, "/publish/chat.%s" % sid, method="POST", data="x", extra=cookie(sid))
    expect(r.status == 503, "%s: POST /publish got %d, not 503: %r" % (what, r.status, r.body))
    r = h.curl(gw, "/poll?subject=chat.x&timeout=1", extra=cookie(sid))
    expect(r.status == 503, "%s: GET /poll got %d, not 503: %r" % (what, r.status, r.body))


def refused(args, want, what):
    """The gateway must not start: a usage error (exit 2), one line naming want."""
    p = h.spawn([h.tool("SLUICE_BIN", "sluice")] + args, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise TestFailure("%s: the gateway started" % what)
    lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
    expect(p.returncode == 2 and len(lines) == 1 and want in lines[0],
           "%s: exit %d, stderr %r" % (what, p.returncode, lines))


def test():
    svc = AuthService()
    svc.grant("alice", "alice", subscribe=["chat.>"], publish=["chat.alice"],
              default=["user.{sub}.>"])
    svc.grant("bob", "bob", subscribe=["chat.>"], default=["user.{sub}.>"])
    svc.grant("carol", "carol", subscribe=["storm.>"], publish=["storm.>"])
    svc.answer("nobody", 401, "")
    svc.answer("forbidden", 403, "")
    svc.answer("broken", 500, "oops")
    svc.answer("badjson", 200, "{not json")
    svc.answer("typo", 200, json.dumps({"principal": "t", "subscribes": ["chat.>"]}))
    svc.answer("slow", "sleep", 3.0)
    svc.answer("frank", "sleep", (1.0, "frank"))
    svc.grant("inject", "a.b", subscribe=["chat.>"], default=["user.{sub}.>"])

    with h.Nats() as nats:
        gw = h.Gateway(nats.url, workers=2, auth="callout",
                       auth_callout_url="http://%s:%d/auth" % (h.HOST, svc.port),
                       auth_callout_timeout_ms=TIMEOUT_MS,
                       auth_callout_connect_timeout_ms=300,
                       auth_callout_headers="Cookie, Authorization",
                       overload_retry_min_ms=1000, overload_retry_max_ms=2000,
                       trusted_proxies="127.0.0.1/32")

        # A granted stream, and what the service was shown.
        s = stream(gw, "/events/chat.room", "alice", max_time=60)
        s.wait_retry()
        fence(nats.url, s, "chat.room")
        with svc.lock:
            sid, hd = [x for x in svc.seen if x[0] == "alice"][0]
        expect(hd.get("x-original-uri") == "/events/chat.room", "X-Original-URI: %r" % hd)
        expect(hd.get("x-original-method") == "GET", "X-Original-Method: %r" % hd)
        expect(hd.get("x-sluice-subjects") == "chat.room", "X-Sluice-Subjects: %r" % hd)
        expect(hd.get("x-sluice-action") == "subscribe", "X-Sluice-Action: %r" % hd)
        expect(hd.get("x-real-ip") == "127.0.0.1", "X-Real-IP: %r" % hd)
        expect("sid=alice" in hd.get("cookie", ""), "Cookie not passed: %r" % hd)
        r = h.curl(gw, "/poll?subject=chat.room&timeout=1",
                   extra=cookie("alice") + ["-H", "X-Secret: s3cret"])
        expect(r.status == 200, "poll with alice: %r" % r)
        with svc.lock:
            leaked = [x for x in svc.seen if "x-secret" in x[1]]
        expect(not leaked, "a header outside auth-callout-headers reached the service")
        # Behind a trusted proxy the service is shown the forwarded client.
        r = h.curl(gw, "/poll?subject=chat.room&timeout=1",
                   extra=cookie("alice") + ["-H", "X-Forwarded-For: 203.0.113.7"])
        expect(r.status == 200, "poll with alice through a trusted proxy: %r" % r)
        with svc.lock:
            ips = [x[1].get("x-real-ip") for x in svc.seen if x[0] == "alice"]
        expect("203.0.113.7" in ips, "X-Real-IP behind a trusted proxy: %r" % ips)
        h.log("granted stream ok; the service saw the request's facets")

        # Server-chosen subscriptions, and no widening.
        mine = stream(gw, "/events", "alice", max_time=60)
        mine.wait_retry()
        h.publish(nats.url, "user.bob.inbox", "for-bob")
        fence(nats.url, mine, "user.alice.inbox")
        expect(b"for-bob" not in mine.data(), "alice's default stream got bob's event")
        r = h.curl(gw, "/events/user.bob.inbox", extra=cookie("alice"))
        expect(r.status == 403, "alice widening to user.bob.inbox got %d" % r.status)
        r = h.curl(gw, "/events", extra=cookie("inject"))
        expect(r.status == 200 and b"authorization unavailable" in r.body,
               "a principal with a dot in a {sub} default must not be granted: %r" % r)
        h.log("server-chosen subscriptions ok")

        # Publish with a grant.
        r = h.curl(gw, "/publish/chat.alice", method="POST", data="hi", extra=cookie("alice"))
        expect(r.status == 202, "alice publishing on chat.alice: %r" % r)
        r = h.curl(gw, "/publish/chat.bob", method="POST", data="hi", extra=cookie("alice"))
        expect(r.status == 403, "alice publishing on chat.bob: %r" % r)

        # 401 and 403 pass through, on both protocols.
        for http1 in (False, True):
            extra = ["--http1.1"] if http1 else []
            r = h.curl(gw, "/events/chat.x", extra=cookie("nobody") + extra)
            expect(r.status == 401, "401 from the service became %d" % r.status)
            r = h.curl(gw, "/events/chat.x", extra=cookie("forbidden") + extra)
            expect(r.status == 403, "403 from the service became %d" % r.status)
        r = h.curl(gw, "/publish/chat.x", method="POST", data="x", extra=cookie("nobody"))
        expect(r.status == 401, "publish: 401 from the service became %d" % r.status)
        h.log("401/403 passthrough ok")

        # A failing service: never a 5xx for an EventSource.
        t0 = time.monotonic()
        for sid in ("broken", "badjson", "typo", "slow"):
            check_unavailable_sse(gw, sid, sid)
            check_unavailable_other(gw, sid, sid)
        took = time.monotonic() - t0
        fam = mu.scrape(gw)
        res = mu.labelled(fam, "sluice_auth_callout_requests_total", "result")
        expect(res.get("error", 0) >= 1 and res.get("bad_answer", 0) >= 2 and
               res.get("timeout", 0) >= 1, "callout results not counted: %r" % res)
        expect(mu.value(fam, "sluice_auth_unavailable_total") >= 12,
               "auth_unavailable not counted: %r" % mu.value(fam, "sluice_auth_unavailable_total"))
        h.log("failing service -> 200+retry / 503 ok (%.1f s)" % took)

        # Storm: one cookie, many streams, a bounded number of callouts.
        before = svc.count("carol")
        c0 = mu.labelled(mu.scrape(gw), "sluice_auth_callout_cache_total", "result")
        storm = [stream(gw, "/events/storm.x", "carol", max_time=30) for _ in range(24)]
        for c in storm:
            c.wait_retry(timeout=15)
        for c in storm:
            c.close()
        for _ in range(24):
            r = h.curl(gw, "/publish/storm.x", method="POST", data="x", extra=cookie("carol"))
            expect(r.status == 202, "carol publish: %r" % r)
        asked = svc.count("carol") - before
        # One question per worker and action: the streams', then the publishes' (another key).
        expect(asked <= 4, "48 requests with one cookie made %d callouts (at most 4)" % asked)
        fam = mu.scrape(gw)
        cache = mu.labelled(fam, "sluice_auth_callout_cache_total", "result")
        # Each of the 48 not asked about is a cache hit, or joined a callout in flight
        # (coalesced: more of those when the machine is slow, e.g. under ASan).
        saved = sum(cache.get(k, 0) - c0.get(k, 0) for k in ("hit", "coalesced"))
        expect(saved >= 48 - asked, "cache: %d of 48 answered without a callout of their own, "
               "%d asked: %r" % (saved, asked, cache))
        h.log("storm: 48 requests, %d callouts, cache %r" % (asked, cache))
        with svc.lock:
            callouts, opened = sum(svc.asked.values()), svc.opened
        # Keep-alive: most callouts so far went over a connection already open.
        expect(opened * 2 <= callouts, "%d callouts opened %d connections to the service"
               % (callouts, opened))
        h.log("connection reuse: %d callouts over %d connections" % (callouts, opened))
        # Concurrent questions while the first is in flight (the service takes 1 s) join it.
        herd = [stream(gw, "/events/storm.y", "frank", max_time=30) for _ in range(10)]
        for c in herd:
            c.wait_retry(timeout=15)
            c.close()
        cache = mu.labelled(mu.scrape(gw), "sluice_auth_callout_cache_total", "result")
        expect(svc.count("frank") <= 2 and cache.get("coalesced", 0) >= 1,
               "10 concurrent streams with one cookie: %d callouts, cache %r"
               % (svc.count("frank"), cache))
        h.log("herd: 10 concurrent streams, %d callouts, %d coalesced"
              % (svc.count("frank"), cache.get("coalesced", 0)))

        # Revocation by principal (admin), on h2 and HTTP/1.1.
        a2 = stream(gw, "/events/chat.rev", "alice", max_time=60)
        a1 = stream(gw, "/events/chat.rev", "alice", http1=True, max_time=60)
        b2 = stream(gw, "/events/chat.rev", "bob", max_time=60)
        for c in (a2, a1, b2):
            c.wait_retry()
        fence(nats.url, a1, "chat.rev")
        at_b = fence(nats.url, b2, "chat.rev")
        asked_alice = svc.count("alice")
        st, body, _ = mu.admin_get(gw, "/revoke?principal=alice&reason=logout", method="POST")
        expect(st == 202, "POST /revoke: %d %r" % (st, body))
        for c in (a2, a1, mine, s):
            c.wait_bytes(b"event: revoked\ndata: logout\n\n", 10)
            wait_end(c)
        fence(nats.url, b2, "chat.rev", start=at_b)
        expect(b"revoked" not in b2.data(), "bob's stream was revoked with alice's")
        r = h.curl(gw, "/poll?subject=chat.rev&timeout=1", extra=cookie("alice"))
        expect(r.status == 200 and svc.count("alice") > asked_alice,
               "alice's next request was not asked afresh after the revocation")
        h.log("revocation by principal ok (h2 and HTTP/1.1)")

        # Revocation by subject (NATS control subject).
        h.publish(nats.url, "$SLUICE.revoke", json.dumps({"subject": "chat.>",
                                                            "reason": "moved"}))
        b2.wait_bytes(b"event: revoked\ndata: moved\n\n", 10)
        wait_end(b2)
        h.log("revocation by subject ok")

        # The admin endpoint's refusals.
        conn = socket.create_connection((h.HOST, gw.admin_port), timeout=5)
        conn.sendall(b"POST /revoke?principal=bob HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Origin: https://evil.example\r\nContent-Length: 0\r\n\r\n")
        head = conn.recv(4096)
        conn.close()
        expect(head.startswith(b"HTTP/1.1 403"), "/revoke with an Origin: %r" % head[:60])
        st, _, _ = mu.admin_get(gw, "/revoke?principal=bob")
        expect(st == 405, "GET /revoke: %d" % st)
        st, body, _ = mu.admin_get(gw, "/revoke?principal=a%20b", method="POST")
        expect(st == 400, "a principal with a space: %d %r" % (st, body))
        st, body, _ = mu.admin_get(gw, "/revoke?subject=a..b", method="POST")
        expect(st == 400, "a bad subject: %d %r" % (st, body))
        st, body, _ = mu.admin_get(gw, "/revoke", method="POST")
        expect(st == 400, "/revoke naming nothing: %d %r" % (st, body))

        # Expiry re-asks instead of cutting; a refusal then ends the stream.
        svc.answer("eve", 200, "")  # replaced per call below

        def eve_answer():
            return 200, json.dumps({"principal": "eve", "subscribe": ["chat.>"],
                                    "expires": int(time.time()) + 2})
        with svc.lock:
            svc.answers["eve"] = eve_answer
        e = stream(gw, "/events/chat.eve", "eve", max_time=60)
        e.wait_retry()
        h.wait_until(lambda: svc.count("eve") >= 2, 12, "a renewal of eve's grant")
        expect(e.alive() and b"revoked" not in e.data(), "eve's stream ended at expiry: %r"
               % e.data()[-200:])
        fence(nats.url, e, "chat.eve")
        expect(mu.value(mu.scrape(gw), "sluice_auth_renewed_total") >= 1, "renewal not counted")
        svc.answer("eve", 403, "")
        e.wait_bytes(b"event: revoked\n", 10)
        wait_end(e)
        h.log("renewal at expiry ok")

        # Clients that leave while their callout is in flight.
        # Ten on questions of their own, ten joined on one question (coalesced): of
        # those, six leave and four stay for the answer (a timeout: 200 + retry:).
        leavers, stayers = [], []
        for i in range(20):
            path = "/events/chat.slow%d" % i if i < 10 else "/events/chat.slowshared"
            c = stream(gw, path, "slow", http1=(i % 2 == 1), max_time=10)
            (stayers if i >= 16 else leavers).append(c)
        time.sleep(0.3)  # the questions are in flight (the service takes 3 s)
        for c in leavers:
            c.close()
        for c in stayers:
            c.wait_bytes(b": authorization unavailable", TIMEOUT_MS / 1000.0 + 5)
            wait_end(c)
        time.sleep(0.3)
        gw.check_alive("after clients left during their callouts")
        r = h.curl(gw, "/poll?subject=chat.y&timeout=1", extra=cookie("bob"))
        expect(r.status == 200, "serving after the leavers: %r" % r)
        h.log("clients leaving mid-callout ok")

        # The service restarts on its port.
        port = svc.port
        svc.stop()
        svc.grant("dave", "dave", subscribe=["chat.>"])
        check_unavailable_sse(gw, "dave", "service stopped")
        check_unavailable_other(gw, "dave", "service stopped")
        svc.port = port
        svc.start()
        r = h.curl(gw, "/poll?subject=chat.y&timeout=1", extra=cookie("dave"))
        expect(r.status == 200, "after the service restarted: %r" % r)
        res = mu.labelled(mu.scrape(gw), "sluice_auth_callout_requests_total", "result")
        expect(res.get("unreachable", 0) >= 1, "unreachable not counted: %r" % res)
        h.log("service restart ok")

        gw.check_alive("at the end")
        gw.stop()

        # Bounded concurrency: one callout at a time, one waiting, the next refused at once.
        qg = h.Gateway(nats.url, workers=1, auth="callout",
                       auth_callout_url="http://%s:%d/auth" % (h.HOST, svc.port),
                       auth_callout_timeout_ms=TIMEOUT_MS, auth_callout_max_inflight=1,
                       auth_callout_max_queue=1, overload_retry_min_ms=1000,
                       overload_retry_max_ms=2000)
        first = stream(qg, "/events/chat.q1", "slow", max_time=10)
        h.wait_until(lambda: any(x[1].get("x-original-uri") == "/events/chat.q1"
                                 for x in list(svc.seen)), 10, "the first question in flight")
        second = stream(qg, "/events/chat.q2", "slow", max_time=10)
        h.wait_until(lambda: mu.value(mu.scrape(qg), "sluice_auth_callout_queued") == 1, 10,
                     "the second question queued")
        t0 = time.monotonic()
        check_unavailable_sse(qg, "slow", "refused past auth-callout-max-queue")
        expect(time.monotonic() - t0 < TIMEOUT_MS / 1000.0,
               "the refusal waited for a callout slot")
        res = mu.labelled(mu.scrape(qg), "sluice_auth_callout_requests_total", "result")
        expect(res.get("refused", 0) == 1, "refusals counted: %r" % res)
        for c in (first, second):
            c.wait_bytes(b": authorization unavailable", 2 * TIMEOUT_MS / 1000.0 + 5)
            wait_end(c)
        qg.stop()
        h.log("bounded concurrency ok: one in flight, one queued, one refused")

        # The same server-chosen subscriptions from a JWT's "default" claim, and revocation.
        d = h.tempdir()
        secret = d + "/hs.secret"
        with open(secret, "wb") as f:
            f.write(b"e2e-secret-0123456789abcdefghijklmnopqrstuvwxyz")
        jg = h.Gateway(nats.url, auth="jwt", jwt_secret_file=secret)
        c = u.claims(sub="zoe")
        c["sluice"]["default"] = ["user.{sub}.>"]
        tok = u.jwt_hs(c, open(secret, "rb").read())
        z = h.CurlStream(jg, "/events?access_token=" + tok, max_time=30)
        z.wait_retry()
        h.publish(nats.url, "user.ann.inbox", "for-ann")
        fence(nats.url, z, "user.zoe.inbox")
        expect(b"for-ann" not in z.data(), "zoe's default stream got ann's event")
        st, body, _ = mu.admin_get(jg, "/revoke?principal=zoe&reason=banned", method="POST")
        expect(st == 202, "POST /revoke on the JWT gateway: %d %r" % (st, body))
        z.wait_bytes(b"event: revoked\ndata: banned\n\n", 10)
        wait_end(z)
        c["sub"] = "a.b"
        r = h.curl(jg, "/events?access_token=" + u.jwt_hs(c, open(secret, "rb").read()))
        expect(r.status == 401, "a JWT whose sub cannot fill {sub}: %r" % r)
        jg.stop()
        h.log("JWT default subjects and revocation ok")

        # The same callout as a NATS request (auth-callout-subject).
        ng = h.Gateway(nats.url, workers=2, auth="callout", auth_callout_subject="$SLUICE.auth",
                       auth_callout_timeout_ms=1000, overload_retry_min_ms=1000,
                       overload_retry_max_ms=2000)
        check_unavailable_sse(ng, "alice", "no responders")
        check_unavailable_other(ng, "alice", "no responders")
        res = mu.labelled(mu.scrape(ng), "sluice_auth_callout_requests_total", "result")
        expect(res.get("unreachable", 0) >= 1, "no responders not counted unreachable: %r" % res)
        asked = []
        service = nu.NatsClient(nats.port)
        service.sub("$SLUICE.auth")
        stop = threading.Event()

        def respond():
            while not stop.is_set():
                try:
                    m = service.wait_full(lambda m: True, timeout=0.5)
                except TestFailure:
                    continue
                q = json.loads(m.data)
                asked.append(q)
                sid = q["headers"].get("cookie", "").split("sid=")[-1].split(";")[0]
                if sid == "alice":
                    service.send_raw(service.pub_bytes(m.reply_to, json.dumps(
                        {"principal": "alice", "subscribe": ["chat.>"],
                         "default": ["user.{sub}.>"]})))
                elif sid == "mute":
                    pass  # no reply: the gateway's deadline decides
                else:
                    service.send_raw(service.pub_bytes(m.reply_to, b"",
                                                       headers={"Sluice-Status": "403"}))
        t = threading.Thread(target=respond, daemon=True)
        t.start()
        try:
            ns = h.CurlStream(ng, "/events", max_time=30, extra=cookie("alice"))
            ns.wait_retry()
            fence(nats.url, ns, "user.alice.nats")
            expect(asked[-1]["subjects"] == [] and asked[-1]["action"] == "subscribe" and
                   asked[-1]["path"] == "/events" and asked[-1]["client"] == "127.0.0.1",
                   "the NATS question: %r" % asked[-1])
            r = h.curl(ng, "/events/chat.x", extra=cookie("eve"))
            expect(r.status == 403, "a 403 reply over NATS became %d" % r.status)
            check_unavailable_sse(ng, "mute", "no NATS reply in time")
            ns.close()
        finally:
            stop.set()
            t.join(timeout=5)
            service.close()
        ng.stop()
        h.log("callout over NATS ok")

        # Refusals at start-up: one error line each.
        base = ["--cert", ng.cert, "--key", ng.key, "--nats", nats.url, "--admin", "off",
                "--access-log", "off", "--listen", "127.0.0.1:0"]
        refused(base + ["--auth", "callout"], "auth-callout-url",
                "auth = callout without a service")
        refused(base + ["--auth", "callout", "--auth-callout-url", "ftp://x/"], "http://",
                "a callout URL that is not HTTP")
        refused(base + ["--auth", "callout", "--auth-callout-subject", "auth.x"], "reserved",
                "a callout subject clients could subscribe to")
        refused(base + ["--revoke-subject", "revoke.all"], "$SLUICE.",
                "a revoke subject clients could publish to")


if __name__ == "__main__":
    h.main(test, deadline_s=150)
