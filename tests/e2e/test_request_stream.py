#!/usr/bin/env python3
"""Issue 15 (2): request streams — a POST starts a stream answered by a NATS service.

A test service (the project's NATS client, tests/e2e/nats_util.py) listens
on svc.chat and answers each request it is told to on the request's reply
subject; svc.slow listens and never answers; nobody listens on svc.none.
Gateway A (auth none, plain listener): request-route
'/v1/chat/completions svc.chat', request-forward-headers x-user-lang,
request-first-event-ms 800, max-request-body-bytes 1000.

 1. h2 POST /v1/chat/completions with x-user-lang, Authorization, Cookie
    and traceparent: the service gets the body and exactly the Sse-Stream-Id
    (32 hex), no Sse-Principal (no auth: an empty value is never sent), Sse-Cancel, traceparent and x-user-lang
    headers (never Authorization or Cookie); no response head before the
    first reply; then 200 text/event-stream with Content-Location
    /streams/r/<tag>.<id>, the tokens and [DONE] (Sse-End), END_STREAM.
    GET Content-Location with the first token's id replays the rest and
    ends; with the last id, 204.
 2. The client goes away mid-answer: the service is not told (no cancel
    notice), the answer goes on, and a GET of Content-Location from
    earliest has every token exactly once and ends. DELETE mid-answer: the
    service gets the notice on Sse-Cancel (Sse-Stream-Id, Sse-Principal)
    and ends the answer; the stream ends with it.
 3. HTTP/1.1 (TLS) POST /streams/svc.chat and h2c (curl
    --http2-prior-knowledge): the same answer, last chunk / END_STREAM.
 4. svc.none: 503 JSON no_responders; svc.slow: 504 JSON timeout after
    request-first-event-ms; a 1001-byte body: 413 JSON; a forwarded header
    with a NUL byte (HTTP/1.1): 400, and the service gets nothing.
 5. Reply subjects: GET /events/$SLUICE.reply.<tag>.<id> and
    /events/$SLUICE.> are 403; a /events/> stream never sees a reply
    (fenced); a malformed /streams/r/ token is 404.
 6. Auth (gateway B, --auth jwt): alice may publish on svc.>, bob too and
    subscribe to everything. alice's POST streams; bob's GET and DELETE of
    alice's stream are 403; a token without publish on the service subject
    gets 403, one without sub 403. alice's DELETE is 202 and the service
    gets the cancel notice on Sse-Cancel (Sse-Stream-Id, Sse-Principal
    alice); bob cannot read the reply subject through /events or /poll
    (403) though his grant is `>`; the service stays silent, so after request-cancel-wait-ms the
    gateway ends the stream with `event: error` {"reason":"cancelled"}.
 7. Metrics (started, finished, cancelled, cancel_forced, no_responders,
    timeout, time to first reply per route) and the access log's stream_id.
"""
import json
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h1_util as u  # noqa: E402
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
import sec_util as sec  # noqa: E402
from harness import expect  # noqa: E402

END = {"Sse-End": "1"}
SECRET = b"request-stream-test-secret-0123456789"
LOC_RE = re.compile(r"/streams/r/([0-9a-f]{16})\.([0-9a-f]{32})")


def events(body):
    blocks, _ = h.parse_blocks(bytes(body), strict=False)
    return [(b.id, b.event, "\n".join(b.data)) for b in blocks if b.data is not None]


def answer(svc, req, tokens, end=True):
    for t in tokens:
        svc.pub(req.reply_to, t, event="token")
    if end:
        svc.pub(req.reply_to, "[DONE]", headers=END)
    svc.flush()


def take_request(svc, subject, timeout=10):
    return svc.wait_full(lambda m: m.subject == subject, timeout, "a request on " + subject)


def h2_post(c, path, body, headers=()):
    return c.post(path, body.encode() if isinstance(body, str) else body,
                  headers=[("content-type", "application/json")] + list(headers))


def basic_h2(gw, svc):
    with h2.H2Conn(gw) as c:
        s = h2_post(c, "/v1/chat/completions", '{"q":"hi"}',
                    [("x-user-lang", "de"), ("authorization", "Bearer nope"),
                     ("cookie", "session=1"), ("x-other", "no"),
                     ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])
        req = take_request(svc, "svc.chat")
        expect(req.data == b'{"q":"hi"}', "service got body %r" % req.data)
        hd = req.headers
        expect(re.fullmatch(r"[0-9a-f]{32}", hd.get("sse-stream-id", "")), "headers %r" % hd)
        expect("sse-principal" not in hd, "Sse-Principal without auth must be absent: %r" % hd)
        expect(hd.get("sse-cancel", "").startswith("$SLUICE.cancel."), "Sse-Cancel %r" % hd)
        expect(hd.get("x-user-lang") == "de", "allow-listed header missing: %r" % hd)
        expect(hd.get("traceparent", "").startswith("00-0af7"), "traceparent: %r" % hd)
        for k in ("authorization", "cookie", "x-other"):
            expect(k not in hd, "%s forwarded to the service: %r" % (k, hd))
        expect(req.reply_to.startswith("$SLUICE.reply.") and
               req.reply_to.endswith(hd["sse-stream-id"]), "reply subject %r" % req.reply_to)
        expect(c.status(s.id) is None, "a response head before the first reply")
        answer(svc, req, ["Hel", "lo"])
        c.wait(lambda _: s.closed, 10, "the POST stream to end")
        expect(c.status(s.id) == 200, "POST status %r" % c.status(s.id))
        got = events(s.body)
        expect([(e, d) for _, e, d in got] == [("token", "Hel"), ("token", "lo"),
                                               (None, "[DONE]")], "POST stream %r" % got)
    tag_id = req.reply_to[len("$SLUICE.reply."):]
    loc = "/streams/r/" + tag_id
    # The resumable URL, read by curl (h2) with Last-Event-ID.
    r = h.curl(gw, loc, extra=["-H", "Last-Event-ID: " + got[0][0]])
    expect(r.status == 200 and [d for _, _, d in events(r.body)] == ["lo", "[DONE]"],
           "GET %s from the first token: %r" % (loc, r))
    r = h.curl(gw, loc, extra=["-H", "Last-Event-ID: " + got[-1][0]])
    expect(r.status == 204, "GET %s after the end: %r" % (loc, r))
    h.log("h2 POST: headers to the service, 200 after the first reply, resume, 204")
    return loc


def disconnect_goes_on(gw, svc):
    c = h2.H2Conn(gw)
    s = h2_post(c, "/v1/chat/completions", "go on")
    req = take_request(svc, "svc.chat")
    answer(svc, req, ["a"], end=False)
    c.wait_body(s, b"data: a\n\n", 10)
    m = LOC_RE.search(req.headers.get("sse-cancel", "") + " /streams/r/" +
                      req.reply_to[len("$SLUICE.reply."):])
    c.close()  # the client goes away mid-answer
    answer(svc, req, ["b", "c"])
    expect(not [x for x in svc.full if x.subject.startswith("$SLUICE.cancel.")],
           "a disconnect sent a cancel notice")
    loc = m.group(0)
    r = h.curl(gw, loc + "?last_event_id=earliest")
    expect(r.status == 200 and [d for _, _, d in events(r.body)] == ["a", "b", "c", "[DONE]"],
           "resume after a disconnect: %r" % r)
    h.log("a disconnect does not stop the answer; earliest has every token once")


def cancel_honoured(gw, svc):
    with h2.H2Conn(gw) as c:
        s = h2_post(c, "/streams/svc.chat", "long answer")
        req = take_request(svc, "svc.chat")
        svc.sub(req.headers["sse-cancel"])
        answer(svc, req, ["first"], end=False)
        c.wait_body(s, b"data: first\n\n", 10)
        loc = "/streams/r/" + req.reply_to[len("$SLUICE.reply."):]
        r = h.curl(gw, loc, method="DELETE")
        expect(r.status == 202, "DELETE: %r" % r)
        note = svc.wait_full(lambda m: m.subject == req.headers["sse-cancel"], 10, "the notice")
        expect(note.headers.get("sse-stream-id") == req.headers["sse-stream-id"] and
               "sse-principal" not in note.headers, "cancel notice %r" % note.headers)
        # The service stops and ends the answer itself.
        svc.pub(req.reply_to, "[DONE]", headers=END)
        svc.flush()
        c.wait(lambda _: s.closed, 10, "the cancelled stream to end")
        got = events(s.body)
        expect([d for _, _, d in got] == ["first", "[DONE]"], "cancelled answer %r" % got)
    h.log("DELETE: the cancel notice reaches the service, which ends the stream")


def http1_and_h2c(gw, svc):
    with u.Conn.tls(gw) as c:
        c.send(u.post("/streams/svc.chat", "h1 body"))
        req = take_request(svc, "svc.chat")
        expect(req.data == b"h1 body", "h1 body at the service: %r" % req.data)
        answer(svc, req, ["x", "y"])
        hd = c.read_head(10)
        expect(hd.status == 200 and LOC_RE.fullmatch(hd.get("content-location") or ""),
               "h1 head %r" % hd.raw)
        c.stream_head = hd
        c.stream_body = b""
        c.stream_done = False
        body = c.stream_end(10)
        expect([d for _, _, d in events(body)] == ["x", "y", "[DONE]"], "h1 body %r" % body)
    d = h.tempdir("sluice-curl-")
    p = h.spawn(["curl", "--http2-prior-knowledge", "-sS", "-N", "--noproxy", "*",
                 "--max-time", "15", "-D", d + "/hd", "--data-binary", "h2c body",
                 u.plain_url(gw, "/streams/svc.chat")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    req = take_request(svc, "svc.chat")
    expect(req.data == b"h2c body", "h2c body at the service %r" % req.data)
    answer(svc, req, ["z"])
    out, err = p.communicate(timeout=20)
    expect(p.returncode == 0 and [d for _, _, d in events(out)] == ["z", "[DONE]"],
           "h2c curl: rc %r out %r err %r" % (p.returncode, out, err))
    h.log("HTTP/1.1 and h2c: the same answer through the one pipeline")


def refusals(gw, svc):
    r = h.curl(gw, "/streams/svc.none", method="POST", data="x")
    expect(r.status == 503 and json.loads(r.body)["error"]["type"] == "no_responders",
           "no responders: %r" % r)
    t0 = time.monotonic()
    r = h.curl(gw, "/streams/svc.slow", method="POST", data="x")
    took = time.monotonic() - t0
    expect(r.status == 504 and json.loads(r.body)["error"]["type"] == "timeout",
           "timeout: %r" % r)
    expect(0.7 <= took < 5, "504 after %.2f s (request-first-event-ms 800)" % took)
    take_request(svc, "svc.slow")
    r = h.curl(gw, "/v1/chat/completions", method="POST", data="x" * 1001)
    expect(r.status == 413, "1001-byte body: %r" % r)
    resp, _ = u.one(gw, u.post("/v1/chat/completions", "y" * 2000), tls=True)
    expect(resp.head.status == 413 and resp.json()["error"]["type"] == "request_too_large",
           "HTTP/1.1 Content-Length past the limit: %r" % resp)
    r = h.curl(gw, "/v1/chat/completions", method="POST", data="x" * 1000, max_time=5)
    expect(r.status in (504,), "1000-byte body goes through (then times out): %r" % r)
    take_request(svc, "svc.chat")
    raw = (b"POST /streams/svc.chat HTTP/1.1\r\nHost: localhost\r\nx-user-lang: a\x00b\r\n"
           b"Content-Length: 1\r\n\r\nx")
    with u.Conn.tls(gw) as c:
        c.send(raw)
        resp = c.read_response(10)
    expect(resp.head.status == 400, "NUL in a forwarded header: %r" % resp)
    svc.flush()
    expect(not [m for m in svc.full if m.subject == "svc.chat"],
           "the service got a request with a NUL header")
    h.log("503 no responders, 504 timeout, 413, 400 on a NUL in a forwarded header")


def reply_space(gw, svc, loc):
    m = LOC_RE.search(loc)
    for path in ("/events/$SLUICE.reply.%s.%s" % (m.group(1), m.group(2)), "/events/$SLUICE.>",
                 "/events/%24SLUICE.reply.*.*"):
        r = h.curl(gw, path)
        expect(r.status == 403, "%s: %r" % (path, r))
    r = h.curl(gw, "/streams/r/not-a-token")
    expect(r.status == 404, "malformed token: %r" % r)
    pub = nu.NatsClient(svc.port)
    with h.CurlStream(gw, "/events/%3E") as all_:
        all_.wait_start()
        with h2.H2Conn(gw) as c:
            s = h2_post(c, "/streams/svc.chat", "secret question")
            req = take_request(svc, "svc.chat")
            answer(svc, req, ["secret-token"])
            c.wait(lambda _: s.closed, 10, "the answer")
        pub.pub("x.fence", "fence")
        pub.flush()
        all_.wait_bytes(b"data: fence\n\n", 10)
        expect(b"secret-token" not in all_.data() and b"[DONE]" not in all_.data(),
               "a > stream saw a reply: %r" % all_.data()[-300:])
    pub.close()
    h.log("reply subjects: 403 directly, invisible to >, 404 for a bad token")


def auth_case(nats, svc):
    keys = sec.Keys()
    secret = keys.secret("hs.secret", SECRET)
    gw = h.Gateway(nats.url, auth="jwt", jwt_secret_file=secret,
                   request_cancel_wait_ms=500, request_first_event_ms=3000)

    def tok(sub, pub, subscribe=(">",)):
        extra = {"sub": sub} if sub else {}
        return sec.jwt_hs(sec.claims(list(subscribe), list(pub), **extra), SECRET)

    alice, bob = tok("alice", ["svc.>"]), tok("bob", ["svc.>"])
    nopub, nosub = tok("carol", ["other.>"]), tok(None, ["svc.>"])

    def auth(t):
        return ["-H", "Authorization: Bearer " + t]

    r = h.curl(gw, "/streams/svc.chat", method="POST", data="x", extra=auth(nopub))
    expect(r.status == 403, "POST without publish permission: %r" % r)
    r = h.curl(gw, "/streams/svc.chat", method="POST", data="x", extra=auth(nosub))
    expect(r.status == 403, "POST with a token without sub: %r" % r)
    with h2.H2Conn(gw) as c:
        s = h2_post(c, "/streams/svc.chat", "alice asks",
                    [("authorization", "Bearer " + alice)])
        req = take_request(svc, "svc.chat")
        expect(req.headers.get("sse-principal") == "alice", "principal %r" % req.headers)
        answer(svc, req, ["one"], end=False)
        c.wait_body(s, b"data: one\n\n", 10)
        loc = "/streams/r/" + req.reply_to[len("$SLUICE.reply."):]
        r = h.curl(gw, loc, extra=auth(bob))
        expect(r.status == 403, "bob reads alice's stream: %r" % r)
        r = h.curl(gw, loc, method="DELETE", extra=auth(bob))
        expect(r.status == 403, "bob cancels alice's stream: %r" % r)
        for path in ("/events/%24SLUICE.reply." + loc[len("/streams/r/"):],
                     "/events/%24SLUICE.%3E", "/poll?subject=%24SLUICE.reply.*.*"):
            r = h.curl(gw, path, extra=auth(bob))
            expect(r.status == 403, "bob (subscribe >) reads %s: %r" % (path, r))
        cancel_subject = req.headers["sse-cancel"]
        svc.sub(cancel_subject)
        r = h.curl(gw, loc, method="DELETE", extra=auth(alice))
        expect(r.status == 202, "alice cancels: %r" % r)
        note = svc.wait_full(lambda m: m.subject == cancel_subject, 10, "the cancel notice")
        expect(note.headers.get("sse-stream-id") == req.headers["sse-stream-id"] and
               note.headers.get("sse-principal") == "alice", "cancel notice %r" % note.headers)
        c.wait(lambda _: s.closed, 10, "the gateway to end the cancelled stream")
        got = events(s.body)
        expect(got[-1][1] == "error" and json.loads(got[-1][2]) == {"reason": "cancelled"},
               "cancelled stream ends with %r" % got[-3:])
    h.log("auth: 403 for others and without permission, cancel notice, forced end")
    return gw


def check_metrics(gw):
    m = lambda res: mu.metric(gw, "sluice_request_streams_total", result=res)  # noqa: E731
    for res, least in (("started", 6), ("finished", 4), ("no_responders", 1),
                       ("timeout", 2)):
        expect(m(res) >= least, "sluice_request_streams_total{result=%s} = %r" % (res, m(res)))
    fam = mu.scrape(gw)
    n = mu.value(fam, "sluice_request_first_event_seconds_count", route="/v1/chat/completions")
    expect(n >= 2, "time to first reply on /v1/chat/completions counted %r" % n)
    n = mu.value(fam, "sluice_request_first_event_seconds_count", route="/streams")
    expect(n >= 3, "time to first reply on /streams counted %r" % n)
    with open(gw.access_log_path) as f:
        lines = [json.loads(ln) for ln in f if ln.strip()]
    expect(any(re.fullmatch(r"[0-9a-f]{16}\.[0-9a-f]{32}", ln.get("stream_id", ""))
               for ln in lines), "no access log line with a stream_id")
    h.log("metrics and access log")


def test():
    with h.Nats() as nats:
        svc = nu.NatsClient(nats.port)
        svc.sub("svc.chat")
        svc.sub("svc.slow")
        gw = u.gateway(nats.url, request_route="/v1/chat/completions svc.chat",
                       request_forward_headers="x-user-lang", request_first_event_ms=800,
                       max_request_body_bytes=1000)
        loc = basic_h2(gw, svc)
        disconnect_goes_on(gw, svc)
        cancel_honoured(gw, svc)
        http1_and_h2c(gw, svc)
        refusals(gw, svc)
        reply_space(gw, svc, loc)
        check_metrics(gw)
        gwb = auth_case(nats, svc)
        expect(mu.metric(gwb, "sluice_request_streams_total", result="cancel_forced") == 1,
               "forced cancel not counted")
        # SIGTERM and exit 0: under ASan, a leak or a bad access fails the exit code.
        gw.stop()
        gwb.stop()
        svc.close()


if __name__ == "__main__":
    h.main(test, deadline_s=150)
