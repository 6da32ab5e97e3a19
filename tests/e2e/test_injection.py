#!/usr/bin/env python3
"""Issue 2 (c): payloads cannot inject SSE fields or end an event early.

Three payloads are published on one subject:
    "a\\n\\nevent: evil\\ndata: x"   (LF, an empty line, field look-alikes)
    "a\\rb"                        (a lone CR)
    "a\\r\\nb"                      (CRLF)
Each must arrive as ONE event whose data lines are the payload's lines:
checked as parsed events with sluice-client (--events-out) and as raw
bytes with curl. Exactly three events; none is named "evil"; their ids
increase from the stream's start id and are the same on both clients.
"""
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
from harness import expect  # noqa: E402

SUBJECT = "inject.test"
PAYLOADS = ["a\n\nevent: evil\ndata: x", "a\rb", "a\r\nb"]
WANT_DATA = ["a\n\nevent: evil\ndata: x", "a\nb", "a\nb"]
# The exact bytes after the start item; ids are checked separately.
WANT_RAW = re.compile(rb"id: (\d+)\ndata: a\ndata: \ndata: event: evil\ndata: data: x\n\n"
                      rb"id: (\d+)\ndata: a\ndata: b\n\n"
                      rb"id: (\d+)\ndata: a\ndata: b\n\n")


def test():
    with h.Nats() as nats, h.Gateway(nats.url) as gw:
        client = h.Client(gw, ["--path", "/events/" + SUBJECT, "--expect-total", "3"],
                          timeout_ms=20000)
        with h.CurlStream(gw, "/events/" + SUBJECT, max_time=30) as s:
            _, (start,), off = s.wait_start(timeout=10)
            client.wait_ready(timeout=10)
            nats.wait_subscriptions([SUBJECT])
            for p in PAYLOADS:
                h.publish(nats.url, SUBJECT, p)

            rc, rep = client.result()
            expect(rc == 0 and rep.get("ok") is True,
                   "sluice-client: exit %d, report %r" % (rc, rep))
            events = client.events()
            h.log("client events: %r" % events)
            expect(len(events) == 3, "expected exactly 3 events, got %d: %r"
                   % (len(events), events))
            for i, (e, want) in enumerate(zip(events, WANT_DATA)):
                expect(e["data"] == want, "event %d data %r, expected %r" % (i + 1, e["data"], want))
                expect(e.get("event") is None, "event %d has a name %r; the payload injected a "
                       "field" % (i + 1, e.get("event")))
            client_ids = [h.parse_id(e["id"])[0] for e in events]

            s.wait_for(lambda b: WANT_RAW.match(b, off), 10, "three events over curl")
            # Fence: anything split off a payload is on the stream before a
            # marker published after the three payloads.
            _, marker, end = h.read_until_marker(
                s, lambda mk: h.publish(nats.url, SUBJECT, mk), start=off,
                what="after the three payloads")
            got = s.data()[off:end - len(marker.raw)]
            m = WANT_RAW.fullmatch(got)
            expect(m, "raw bytes after the start item:\n%r\nexpected\n%r" % (got, WANT_RAW.pattern))
            expect(b"event: evil\n" not in s.data().replace(b"data: event: evil\n", b""),
                   "an event named evil appeared")
            ids = [int(x) for x in m.groups()]
            expect(start < ids[0] < ids[1] < ids[2],
                   "curl stream ids %r do not increase from its start id %d" % (ids, start))
            # Both streams are on one subject: one sequence number per message.
            expect(client_ids == ids, "sluice-client saw ids %r, curl %r; a message has one id"
                   % (client_ids, ids))

        # The client's events were counted as they arrived; make sure no
        # fourth event was split off a payload after the expectation was met.
        expect(rep.get("events") == 3, "client counted %r events" % rep.get("events"))
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test)
