#!/usr/bin/env python3
"""A live JetStream consumer that disappears is remade from its last sequence.

The gateway follows a JetStream-backed subject with a push consumer of its
own (no longer cnats's ordered consumer). When nats-server loses it — here
an operator deletes every consumer of the stream — its idle heartbeats
stop; within a few seconds the gateway makes a new one after the last
sequence it recorded. Events published meanwhile (acknowledged, so stored)
reach the open stream exactly once and in order, and
sluice_jetstream_consumer_resets_total counts the reset.
"""
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402


def consumer_names(c, stream):
    r = j.js_api(c, "CONSUMER.NAMES." + stream, {})
    return r.get("consumers") or []


def test():
    node = j.single_node()
    ports = [node.port]
    j.create_stream(ports, "LOST", ["lost.>"])
    with nu.NatsClient(ports) as c, \
            h.Gateway(node.url, jetstream_streams="LOST", heartbeat_ms=1000) as gw:
        s = h.CurlStream(gw, "/events/lost.a", max_time=60)
        _, (start,), off = s.wait_start(timeout=10)
        first = j.js_publish(c, "lost.a", "e0")
        s.wait_bytes(b"id: %d\ndata: e0\n\n" % first, 5, off)
        names = consumer_names(c, "LOST")
        expect(len(names) == 1, "one consumer expected on the stream, found %r" % names)
        for n in names:
            j.js_api(c, "CONSUMER.DELETE.LOST." + n)
        h.log("deleted consumer %s" % names[0])
        sent = [(j.js_publish(c, "lost.a", "e%d" % i), "e%d" % i) for i in range(1, 4)]
        s.wait_bytes(b"data: e3\n\n", 15, off)
        time.sleep(0.3)
        got = re.findall(rb"id: (\d+)\ndata: (e\d)\n\n", s.data()[off:])
        want = [(str(first).encode(), b"e0")] + [(str(q).encode(), d.encode()) for q, d in sent]
        expect(got == want, "after the consumer was deleted: got %r, expected %r" % (got, want))
        resets = mu.value(mu.scrape(gw), "sluice_jetstream_consumer_resets_total")
        expect(resets >= 1, "no consumer reset counted: %r" % resets)
        now = consumer_names(c, "LOST")
        expect(len(now) == 1 and now[0] != names[0],
               "expected one new consumer, found %r (old %s)" % (now, names[0]))
        h.log("the stream got e1-e3 exactly after the consumer was remade (%s); resets %d"
              % (now[0], resets))
        s.close()
        gw.stop()
    node.kill()


if __name__ == "__main__":
    h.main(test)
