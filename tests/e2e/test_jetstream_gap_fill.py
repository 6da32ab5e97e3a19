#!/usr/bin/env python3
"""A jump in a live JetStream feed's stream sequence is filled from the stream, never skipped.

The gateway reads each JetStream stream with one unfiltered push consumer,
so every stream sequence should arrive in turn. When one does not, the
missing sequences are fetched one by one (STREAM.MSG.GET) and routed in
order before a new consumer goes on after them; a sequence the stream no
longer holds (deleted) is passed over without a reset. nats-server does
not skip on demand, so both paths are driven deterministically:

1. Filled: the feed's consumer is deleted (so it delivers nothing more),
   three events are stored, and an idle heartbeat saying the consumer has
   passed them (what nats-server sends after a skip) is published on the
   feed's inbox. The open stream gets the three events at once (well
   before the 3.5 s silence would remake the consumer), in order and
   exactly once; sluice_jetstream_gaps_total counts one gap and
   sluice_jetstream_gap_events_total three fetched events.
2. Deleted: the consumer is deleted again, five events are stored and the
   2nd and 4th deleted (STREAM.MSG.DELETE). The consumer remade after the
   silence jumps over each deleted sequence: the stream gets the 1st, 3rd
   and 5th exactly once, in order, no `event: reset`, nothing more is
   fetched (gap events unchanged), and the consumer is not remade for
   them: what follows a jump is held while it is filled (the debug log
   shows one remake, the one after the silence).
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

EVENT = re.compile(rb"id: (\d+)\ndata: ([^\n]*)\n\n")


def the_consumer(c):
    names = j.js_api(c, "CONSUMER.NAMES.GAP", {}).get("consumers") or []
    expect(len(names) == 1, "one consumer expected on the stream, found %r" % names)
    return j.js_api(c, "CONSUMER.INFO.GAP." + names[0])


def metric(gw, name):
    return mu.value(mu.scrape(gw), name)


def events(s, off):
    return [(int(q), d.decode()) for q, d in EVENT.findall(s.data()[off:])]


def test():
    node = j.single_node()
    ports = [node.port]
    j.create_stream(ports, "GAP", ["gap.>"])
    with nu.NatsClient(ports) as c, \
            h.Gateway(node.url, jetstream_streams="GAP", heartbeat_ms=1000,
                      log_level="debug") as gw:
        s = h.CurlStream(gw, "/events/gap.a", max_time=60)
        _, _, off = s.wait_start(timeout=10)
        first = j.js_publish(c, "gap.a", "e0")
        s.wait_bytes(b"id: %d\ndata: e0\n\n" % first, 5, off)

        # 1. Filled from the stream.
        info = the_consumer(c)
        inbox, cseq = info["config"]["deliver_subject"], info["delivered"]["consumer_seq"]
        j.js_api(c, "CONSUMER.DELETE.GAP." + info["name"])
        sent = [(j.js_publish(c, "gap.a", "f%d" % i), "f%d" % i) for i in range(1, 4)]
        hb = b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: %d\r\n" \
             b"Nats-Last-Stream: %d\r\n\r\n" % (cseq, sent[-1][0])
        mark = len(gw.log())
        t0 = time.monotonic()
        c.send_raw(b"HPUB %s %d %d\r\n%s\r\n" % (inbox.encode(), len(hb), len(hb), hb))
        s.wait_bytes(b"data: f3\n\n", 5, off)
        took = time.monotonic() - t0
        expect(took < 3, "the gap took %.1f s to fill: the consumer was remade instead" % took)
        expect(events(s, off) == [(first, "e0")] + sent,
               "after the filled gap: %r, expected %r" % (events(s, off), [(first, "e0")] + sent))
        gaps, filled = metric(gw, "sluice_jetstream_gaps_total"), \
            metric(gw, "sluice_jetstream_gap_events_total")
        expect(gaps == 1 and filled == 3, "gaps %r and gap events %r, expected 1 and 3"
               % (gaps, filled))
        h.log("the gap up to %d was filled from the stream in %.2f s" % (sent[-1][0], took))

        # 2. Deleted messages are passed over, without a reset.
        # The fill is routed before the consumer is remade after it: wait for that remake.
        done = gw.wait_log(r"jetstream: stream GAP: consumer \S+ remade", 10, start=mark)
        h.wait_until(lambda: len(j.js_api(c, "CONSUMER.NAMES.GAP", {}).get("consumers") or []) == 1,
                     10, "the consumer remade after the fill, alone on the stream")
        info = the_consumer(c)
        mark = done.end()
        j.js_api(c, "CONSUMER.DELETE.GAP." + info["name"])
        more = [(j.js_publish(c, "gap.a", "d%d" % i), "d%d" % i) for i in range(1, 6)]
        for q, _ in (more[1], more[3]):
            j.js_api(c, "STREAM.MSG.DELETE.GAP", {"seq": q})
        s.wait_bytes(b"data: d5\n\n", 15, off)
        time.sleep(0.3)
        want = [(first, "e0")] + sent + [more[0], more[2], more[4]]
        expect(events(s, off) == want, "after the deletes: %r, expected %r"
               % (events(s, off), want))
        expect(b"event: reset" not in s.data()[off:], "a reset was sent for deleted messages")
        filled2 = metric(gw, "sluice_jetstream_gap_events_total")
        expect(filled2 == filled, "gap events %r after the deletes, expected %r"
               % (filled2, filled))
        gaps2 = metric(gw, "sluice_jetstream_gaps_total")
        expect(gaps2 >= gaps + 2, "gaps %r after two deleted sequences, expected >= %d"
               % (gaps2, gaps + 2))
        remade = re.findall(r"jetstream: stream GAP: consumer \S+ remade", gw.log()[mark:])
        expect(len(remade) == 1, "the consumer was remade %d times after the deletes, "
                                 "expected once (after the silence): %r" % (len(remade), remade))
        h.log("deleted sequences passed over (gaps %d), no reset, d1 d3 d5 delivered" % gaps2)
        s.close()
        gw.stop()
    node.kill()


if __name__ == "__main__":
    h.main(test)
