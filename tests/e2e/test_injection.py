#!/usr/bin/env python3
"""Issue 2 (c): payloads cannot inject SSE fields or end an event early.

Three payloads are published on one subject:
    "a\\n\\nevent: evil\\ndata: x"   (LF, an empty line, field look-alikes)
    "a\\rb"                        (a lone CR)
    "a\\r\\nb"                      (CRLF)
Each must arrive as ONE event whose data lines are the payload's lines:
checked as parsed events with sluice-client (--events-out) and as raw
bytes with curl. Exactly three events; none is named "evil".
"""
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
from harness import expect  # noqa: E402

SUBJECT = "inject.test"
PAYLOADS = ["a\n\nevent: evil\ndata: x", "a\rb", "a\r\nb"]
WANT_DATA = ["a\n\nevent: evil\ndata: x", "a\nb", "a\nb"]
WANT_RAW = (b"id: 1\ndata: a\ndata: \ndata: event: evil\ndata: data: x\n\n"
            b"id: 2\ndata: a\ndata: b\n\n"
            b"id: 3\ndata: a\ndata: b\n\n")


def test():
    with h.Nats() as nats, h.Gateway(nats.url) as gw:
        client = h.Client(gw, ["--path", "/events/" + SUBJECT, "--expect-total", "3"],
                          timeout_ms=20000)
        with h.CurlStream(gw, "/events/" + SUBJECT, max_time=30) as s:
            _, off = s.wait_retry(timeout=10)
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
                expect(e["id"] == str(i + 1), "event %d id %r" % (i + 1, e["id"]))
                expect(e.get("event") is None, "event %d has a name %r; the payload injected a "
                       "field" % (i + 1, e.get("event")))

            s.wait_for(lambda b: len(b) >= off + len(WANT_RAW), 10, "three events over curl")
            time.sleep(0.3)  # anything split off a payload would follow now
            got = s.data()[off:]
            expect(got == WANT_RAW, "raw bytes after retry:\n%r\nexpected\n%r" % (got, WANT_RAW))
            expect(b"event: evil\n" not in s.data().replace(b"data: event: evil\n", b""),
                   "an event named evil appeared")

        # The client's events were counted as they arrived; make sure no
        # fourth event was split off a payload after the expectation was met.
        expect(rep.get("events") == 3, "client counted %r events" % rep.get("events"))
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test)
