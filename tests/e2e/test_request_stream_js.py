#!/usr/bin/env python3
"""Issue 15 (2): request streams backed by JetStream, resumed on another gateway.

One JetStream node with the stream REPLIES on `$SLUICE.reply.>` (the
default request-reply-prefix); gateways A and B with --jetstream-streams
REPLIES; a test service on svc.chat (the project's NATS client).

 1. h2 POST /streams/svc.chat on A; the service answers t1, t2; A is
    killed (SIGKILL) mid-answer; the service goes on with t3, t4 and
    [DONE] (Sse-End). GET Content-Location on B with Last-Event-ID = t2's
    id (a JetStream sequence) gets exactly t3, t4, [DONE] and ends; the
    same with [DONE]'s id is 204; earliest replays the whole answer.
 2. No responders on a JetStream-backed reply subject: 503 JSON (the
    gateway's core probe hears nats-server's 503, which JetStream never
    stores), not a 504.
"""
import json
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402


def events(body):
    blocks, _ = h.parse_blocks(bytes(body), strict=False)
    return [(b.id, b.event, "\n".join(b.data)) for b in blocks if b.data is not None]


def test():
    with j.single_node() as node:
        j.create_stream(node.port, "REPLIES", ["$SLUICE.reply.>"])
        svc = nu.NatsClient(node.port)
        svc.sub("svc.chat")
        gwa = h.Gateway(node.url, jetstream_streams="REPLIES", request_first_event_ms=5000)
        gwb = h.Gateway(node.url, jetstream_streams="REPLIES", request_first_event_ms=5000)
        c = h2.H2Conn(gwa)
        s = c.post("/streams/svc.chat", b"tell me")
        req = svc.wait_full(lambda m: m.subject == "svc.chat", 15, "the request")
        expect(req.data == b"tell me", "service got %r" % req.data)
        for t in ("t1", "t2"):
            svc.pub(req.reply_to, t, event="token")
        svc.flush()
        c.wait_body(s, b"data: t2\n\n", 15)
        got = events(s.body)
        expect([d for _, _, d in got] == ["t1", "t2"], "from A: %r" % got)
        expect(c.status(s.id) == 200, "A's status %r" % c.status(s.id))
        gwa.proc.kill()
        gwa.proc.wait(timeout=10)
        c.close()
        for t in ("t3", "t4"):
            svc.pub(req.reply_to, t, event="token")
        svc.pub(req.reply_to, "[DONE]", headers={"Sse-End": "1"})
        svc.flush()
        loc = "/streams/r/" + req.reply_to[len("$SLUICE.reply."):]
        expect(re.fullmatch(r"/streams/r/[0-9a-f]{16}\.[0-9a-f]{32}", loc), "loc %r" % loc)
        r = h.curl(gwb, loc, extra=["-H", "Last-Event-ID: " + got[-1][0]], max_time=15)
        rest = events(r.body)
        expect(r.status == 200 and [d for _, _, d in rest] == ["t3", "t4", "[DONE]"],
               "resume on B: %r" % r)
        ids = [int(i) for i, _, _ in got + rest]
        expect(ids == sorted(ids) and len(set(ids)) == 5, "ids are not increasing: %r" % ids)
        r = h.curl(gwb, loc, extra=["-H", "Last-Event-ID: " + rest[-1][0]], max_time=15)
        expect(r.status == 204, "after the end on B: %r" % r)
        r = h.curl(gwb, loc + "?last_event_id=earliest", max_time=15)
        expect([d for _, _, d in events(r.body)] == ["t1", "t2", "t3", "t4", "[DONE]"],
               "earliest on B: %r" % r)
        h.log("JetStream: POST on A, A killed, resumed on B exactly, 204 after the end")
        r = h.curl(gwb, "/streams/svc.none", method="POST", data="x", max_time=15)
        expect(r.status == 503 and json.loads(r.body)["error"]["type"] == "no_responders",
               "no responders with a JetStream-backed reply subject: %r" % r)
        h.log("JetStream-backed reply subject: no responders is a 503")
        gwb.stop()  # exit 0: under ASan, a leak or a bad access fails it
        svc.close()


if __name__ == "__main__":
    h.main(test, deadline_s=120)
