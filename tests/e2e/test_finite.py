#!/usr/bin/env python3
"""Issue 15 (1): finite streams — a publisher ends a subject with Sse-End.

Core NATS (one gateway with a plain listener):
 1. h2 (the project's raw client): a stream on job.h2 gets two progress
    events, then the end message (body "done", Sse-Event "done") as its
    last event, then END_STREAM with nothing after it. A reconnect with
    Last-Event-ID = the end's id, one past the end and a plain GET with no
    id all get 204 (no body); malformed ids (not a number, two parts for one
    subject) still get event: reset (unknown-id); a reconnect from the first event replays the second and the
    end, then ends; ?last_event_id=earliest replays all three and ends.
 2. curl --http2 -N: an empty end (no body) adds no event but an id-only
    block ("id: N\\n\\n") and the stream ends; curl exits 0. curl with
    Last-Event-ID = N gets 204.
 3. HTTP/1.1 (TLS, raw client) and h2c (curl --http2-prior-knowledge):
    the end comes as the last chunk / END_STREAM; the connection stays
    open for the next request, which (same subject, no id) is a 204.
 4. Two subjects: ending one does not end the stream; events of the other
    still arrive; ending the second ends it; a reconnect with the final
    composite id is 204 (also with parts past the ends), one with the position before the second end gets
    that end and ends. A message on an ended subject makes it live again.
 5. A wildcard stream (w.*) gets an end message's body as an ordinary
    event and does not end; an empty end adds nothing to it.
 6. Long-poll on a finished subject: 204 (at and past the end). POST /publish/<subject>?end=1
    ends a subject from HTTP.
 7. Metrics: sluice_streams_ended_total{reason="finished"} counts.
JetStream (a second NATS node with -js, stream JS on js.>):
 8. A stream open on gateway A sees the end live and ends. A fresh gateway
    B (never subscribed to the subject) answers a plain GET with 204 (it
    asks JetStream for the subject's last message), Last-Event-ID = the
    end and past it with 204 (also as a fresh gateway's first request), Last-Event-ID = the first event with the rest + end,
    earliest with all of it + end.
"""
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h1_util as u  # noqa: E402
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

END = {"Sse-End": "1"}


def ids_and_data(body):
    """(id, event, data) of each block with data, and the ids of id-only blocks."""
    out = []
    blocks, _ = h.parse_blocks(bytes(body), strict=False)
    for b in blocks:
        if b.retry is not None:
            continue  # the start item
        if b.data is not None:
            out.append((b.id, b.event, "\n".join(b.data)))
        elif b.id is not None:
            out.append((b.id, None, None))
    return out


def h2_get(conn, path, headers=(), timeout=10):
    s = conn.request(path, headers=headers)
    conn.wait(lambda c: s.closed, timeout, "stream %s to end" % path)
    return conn.status(s.id), bytes(s.body), s


def core_h2(gw, pub):
    subj = "job.h2"
    with h2.H2Conn(gw) as c:
        s = c.request("/events/" + subj)
        off = c.wait_body(s, b"\n\n", 10)
        m = h.START_RE.match(bytes(s.body))
        expect(m, "no start item: %r" % bytes(s.body[:200]))
        pub.pub(subj, "10%", event="progress")
        pub.pub(subj, "60%", event="progress")
        pub.pub(subj, "done", headers=dict(END, **{"Sse-Event": "done"}))
        pub.flush()
        c.wait(lambda _: s.closed, 10, "END_STREAM after the end event")
        expect(s.reset_code is None, "stream reset (%r), not ended" % s.reset_code)
        got = ids_and_data(bytes(s.body)[off:])
        expect([(e, d) for _, e, d in got] == [("progress", "10%"), ("progress", "60%"),
                                               ("done", "done")],
               "h2 stream got %r" % got)
        expect(bytes(s.body).endswith(b"data: done\n\n"),
               "bytes after the end event: %r" % bytes(s.body)[-80:])
        first, end_id = got[0][0], got[2][0]

        st, body, _ = h2_get(c, "/events/" + subj, [("last-event-id", end_id)])
        expect(st == 204 and body == b"", "reconnect at the end: %r %r" % (st, body))
        st, body, _ = h2_get(c, "/events/" + subj)
        expect(st == 204 and body == b"", "plain GET on a finished subject: %r %r" % (st, body))
        # An id past the end (made up, or from a gateway that numbered further) is finished
        # too: it once got 200 + event: reset (unknown-id) + the end, and the EventSource
        # reconnected after it.
        past = str(int(end_id) + 1000)
        st, body, _ = h2_get(c, "/events/" + subj, [("last-event-id", past)])
        expect(st == 204 and body == b"", "reconnect past the end: %r %r" % (st, body))
        # Malformed ids are not positions: a reset as before, then the end.
        for bad in ("x" + end_id, end_id + "-" + end_id):
            st, body, _ = h2_get(c, "/events/" + subj, [("last-event-id", bad)])
            expect(st == 200 and b"event: reset\n" in body and b'"unknown-id"' in body,
                   "malformed id %r: %r %r" % (bad, st, body))
        st, body, _ = h2_get(c, "/events/" + subj, [("last-event-id", first)])
        got2 = ids_and_data(body)
        expect(st == 200 and [d for _, _, d in got2] == ["60%", "done"] and
               got2[-1][0] == end_id, "reconnect from the first: %r %r" % (st, body))
        st, body, _ = h2_get(c, "/events/%s?last_event_id=earliest" % subj)
        expect(st == 200 and [d for _, _, d in ids_and_data(body)] == ["10%", "60%", "done"],
               "earliest: %r %r" % (st, body))
    h.log("h2: end event, END_STREAM, 204 at/after the end, replay to the end, earliest")
    return end_id


def core_curl_empty_end(gw, pub):
    subj = "job.curl"
    with h.CurlStream(gw, "/events/" + subj, max_time=20) as s:
        _, _, off = s.wait_start()
        pub.pub(subj, "half", event="progress")
        pub.flush()
        s.wait_bytes(b"data: half\n\n", 10, off)
        pub.pub(subj, "", headers=END)
        pub.flush()
        s.wait_for(lambda b: s.eof, 10, "curl to see the end")
        expect(s.proc.wait(timeout=5) == 0, "curl exited %r" % s.proc.returncode)
        tail = s.data()[off:]
        m = re.fullmatch(rb"id: (\d+)\nevent: progress\ndata: half\n\nid: (\d+)\n\n", tail)
        expect(m and int(m.group(2)) > int(m.group(1)), "empty end: stream tail %r" % tail)
        end_id = m.group(2).decode()
    r = h.curl(gw, "/events/" + subj, extra=["-H", "Last-Event-ID: " + end_id])
    expect(r.status == 204 and r.body == b"", "curl reconnect after an empty end: %r" % r)
    h.log("curl --http2: an empty end adds only its id, curl exits 0, reconnect 204")


def core_http1_h2c(gw, pub):
    subj = "job.h1"
    with u.Conn.tls(gw) as c:
        c.send(u.get("/events/" + subj))
        c.stream_open()
        c.stream_start()
        pub.pub(subj, "a")
        pub.pub(subj, "last", headers=END)
        pub.flush()
        body = c.stream_end(10)
        expect([d for _, _, d in ids_and_data(body)] == ["a", "last"], "h1 body %r" % body)
        # The connection is still open: the next request on it is a 204.
        c.send(u.get("/events/" + subj))
        r = c.read_response(10)
        expect(r.head.status == 204 and r.body == b"", "h1 GET after the end: %r" % r)
    with u.PlainCurlStream(gw, "/events/job.h2c", proto="--http2-prior-knowledge",
                           max_time=20) as s:
        _, _, off = s.wait_start()
        pub.pub("job.h2c", "fin", headers=END)
        pub.flush()
        s.wait_for(lambda b: s.eof, 10, "h2c curl to see the end")
        expect(s.proc.wait(timeout=5) == 0, "h2c curl exited %r" % s.proc.returncode)
        expect(re.fullmatch(rb"id: \d+\ndata: fin\n\n", s.data()[off:]),
               "h2c tail %r" % s.data()[off:])
    r = u.curl_plain(gw, "/events/job.h2c", http="--http2-prior-knowledge")
    expect(r.status == 204, "h2c GET after the end: %r" % r)
    h.log("HTTP/1.1: last chunk, keep-alive, then 204; h2c the same")


def core_multi(gw, pub):
    path = "/events?subject=m.a&subject=m.b"
    with h2.H2Conn(gw) as c:
        s = c.request(path)
        off = c.wait_body(s, b"\n\n", 10)
        pub.pub("m.a", "a-end", headers=END)
        pub.pub("m.b", "b1")
        pub.flush()
        c.wait_body(s, b"data: b1\n\n", 10, off)
        expect(not s.closed, "ending one of two subjects ended the stream")
        pub.pub("m.b", "b-end", headers=END)
        pub.flush()
        c.wait(lambda _: s.closed, 10, "the stream to end with its second subject")
        got = ids_and_data(bytes(s.body)[off:])
        expect([d for _, _, d in got] == ["a-end", "b1", "b-end"], "two subjects: %r" % got)
        before_b_end, final = got[1][0], got[2][0]
        st, body, _ = h2_get(c, path, [("last-event-id", final)])
        expect(st == 204, "two ended subjects, final id: %r %r" % (st, body))
        a_end, b_end = (int(x) for x in final.split("-"))
        for past in ("%d-%d" % (a_end + 50, b_end), "%d-%d" % (a_end + 50, b_end + 50)):
            st, body, _ = h2_get(c, path, [("last-event-id", past)])
            expect(st == 204, "two ended subjects, id %s past the ends: %r %r" % (past, st, body))
        st, body, _ = h2_get(c, path, [("last-event-id", before_b_end)])
        expect(st == 200 and [d for _, _, d in ids_and_data(body)] == ["b-end"],
               "from before the second end: %r %r" % (st, body))
        # A publisher that reuses an ended subject makes it live again.
        pub.pub("m.a", "a-again")
        pub.flush()
        s2 = c.request(path, headers=[("last-event-id", final)])
        c.wait_body(s2, b"data: a-again\n\n", 10)
        expect(not s2.closed, "a reused subject's stream ended")
    h.log("two subjects: one end keeps the stream, both end it; 204 after both")


def core_wildcard(gw, pub):
    with h2.H2Conn(gw) as c:
        s = c.request("/events/w.*")
        off = c.wait_body(s, b"\n\n", 10)
        pub.pub("w.x", "x-end", headers=END)
        pub.pub("w.y", "", headers=END)
        pub.pub("w.z", "fence")
        pub.flush()
        c.wait_body(s, b"data: fence\n\n", 10, off)
        expect(not s.closed, "a wildcard stream ended on a subject's end")
        got = ids_and_data(bytes(s.body)[off:])
        expect([d for _, _, d in got] == ["x-end", "fence"], "wildcard got %r" % got)
    h.log("wildcard: an end's body is an ordinary event; the stream goes on")


def publish_end_over_http(gw):
    subj = "job.http"
    with h.CurlStream(gw, "/events/" + subj, max_time=20) as s:
        _, _, off = s.wait_start()
        r = h.curl(gw, "/publish/%s?event=done&end=1" % subj, method="POST", data="ok")
        expect(r.status == 202, "POST /publish ?end: %r" % r)
        s.wait_for(lambda b: s.eof, 10, "the end published over HTTP")
        expect(re.fullmatch(rb"id: \d+\nevent: done\ndata: ok\n\n", s.data()[off:]),
               "tail %r" % s.data()[off:])
    r = h.curl(gw, "/events/" + subj)
    expect(r.status == 204, "GET after an HTTP-published end: %r" % r)
    h.log("POST /publish/<subject>?end=1 ends the subject")


def core_poll(gw, end_id):
    r = h.curl(gw, "/poll?subject=job.h2&after=" + end_id)
    expect(r.status == 204, "poll after the end: %r" % r)
    r = h.curl(gw, "/poll?subject=job.h2&after=%d" % (int(end_id) + 1000))
    expect(r.status == 204, "poll past the end: %r" % r)
    h.log("long-poll on a finished subject: 204")


def jetstream():
    with j.single_node() as node:
        j.create_stream(node.port, "JS", ["js.>"])
        pubc = nu.NatsClient(node.port)
        gwa = h.Gateway(node.url, jetstream_streams="JS")
        subj = "js.job"
        seqs = []
        with h2.H2Conn(gwa) as c:
            s = c.request("/events/" + subj)
            off = c.wait_body(s, b"\n\n", 15)
            for data, hdrs in (("one", None), ("two", None), ("end", END)):
                r = pubc.request(subj, data, headers=hdrs, timeout=5).json()
                seqs.append(r["seq"])
            c.wait(lambda _: s.closed, 10, "the JetStream stream to end")
            got = ids_and_data(bytes(s.body)[off:])
            expect([(int(i), d) for i, _, d in got] == list(zip(seqs, ["one", "two", "end"])),
                   "JetStream live: %r (seqs %r)" % (got, seqs))
        gwb = h.Gateway(node.url, jetstream_streams="JS")
        with h2.H2Conn(gwb) as c:
            st, body, _ = h2_get(c, "/events/" + subj, timeout=15)
            expect(st == 204, "fresh gateway, plain GET on a finished subject: %r %r"
                   % (st, body))
            st, body, _ = h2_get(c, "/events/" + subj, [("last-event-id", str(seqs[2]))])
            expect(st == 204, "fresh gateway, id at the end: %r %r" % (st, body))
            st, body, _ = h2_get(c, "/events/" + subj, [("last-event-id", str(seqs[2] + 1000))],
                                 timeout=15)
            expect(st == 204, "fresh gateway, id past the end: %r %r" % (st, body))
            st, body, _ = h2_get(c, "/events/" + subj, [("last-event-id", str(seqs[0]))],
                                 timeout=15)
            got = ids_and_data(body)
            expect(st == 200 and [(int(i), d) for i, _, d in got] ==
                   list(zip(seqs[1:], ["two", "end"])), "JetStream resume: %r %r" % (st, body))
            st, body, _ = h2_get(c, "/events/%s?last_event_id=earliest" % subj, timeout=15)
            expect(st == 200 and [d for _, _, d in ids_and_data(body)] == ["one", "two", "end"],
                   "JetStream earliest: %r %r" % (st, body))
        # A gateway whose first request on the subject is an id past the end: the
        # answer comes from JetStream (the subject's last message is the end).
        gwc = h.Gateway(node.url, jetstream_streams="JS")
        with h2.H2Conn(gwc) as c:
            st, body, _ = h2_get(c, "/events/" + subj, [("last-event-id", str(seqs[2] + 7))],
                                 timeout=15)
            expect(st == 204, "fresh gateway, first request past the end: %r %r" % (st, body))
        pubc.close()
    h.log("JetStream: live end, 204 on a fresh gateway, resume and earliest to the end")


def test():
    with h.Nats() as nats:
        gw = u.gateway(nats.url)
        pub = nu.NatsClient(nats.port)
        end_id = core_h2(gw, pub)
        core_curl_empty_end(gw, pub)
        core_http1_h2c(gw, pub)
        core_multi(gw, pub)
        core_wildcard(gw, pub)
        core_poll(gw, end_id)
        publish_end_over_http(gw)
        n = mu.metric(gw, "sluice_streams_ended_total", reason="finished")
        expect(n >= 9, "finished streams counted: %r" % n)
        gw.stop()  # exit 0: under ASan, a leak or a bad access fails it
        pub.close()
    jetstream()


if __name__ == "__main__":
    h.main(test, deadline_s=150)
