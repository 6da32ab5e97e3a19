#!/usr/bin/env python3
"""Regression: resuming on a subject whose subscription lapsed must not hide a gap.

README, "Resume contract": a subject's subscription and history stay for
history-keep-ms after its last stream closes; "after that its ids read as
expired". Messages published while nobody is subscribed never reach the
gateway, so a client that comes back with the id of the last event it saw
must get `event: reset` (history-expired), never a quiet resume.

A stream receives three events and closes; once the gateway has dropped
the subscription (--history-keep-ms 200, nats-server's /connz no longer
shows it), one message is published (and lost: nobody subscribed). Then
the client reconnects with the id of its last event.
  1. busy process: messages on another subject moved the process-wide
     sequence on meanwhile;
  2. quiet process: nothing else happened in the gateway meanwhile, so
     the new subscription's first position equals the client's id. This is
     the case that broke: the id read as "nothing new since" and the lost
     message left a silent gap.
Both must start with one reset naming the subject, then the live event.
"""
import json
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402


def last_id_after_events(gw, pub, subj, n=3):
    s = h.CurlStream(gw, "/events/" + subj, max_time=30)
    _, _, off = s.wait_start(timeout=10)
    for i in range(1, n + 1):
        pub.pub(subj, "before-%d" % i)
    pub.flush()
    end = s.wait_bytes(b"data: before-%d\n\n" % n, 10, off)
    blocks, _ = h.parse_blocks(s.data()[off:end])
    expect([b.data for b in blocks] == [["before-%d" % i] for i in range(1, n + 1)],
           "%s: got %r" % (subj, blocks))
    s.close()
    return h.parse_id(blocks[-1].id)[0]


def wait_lapsed(nats, subj):
    h.wait_until(lambda: all(subj not in subs for subs in nats.subscriptions()), 10,
                 "the gateway to drop its subscription to %s after history-keep-ms" % subj,
                 interval=0.1)


def expect_reset_then_live(gw, pub, subj, last_id, what):
    s = h.CurlStream(gw, "/events/" + subj, max_time=30,
                     extra=["-H", "Last-Event-ID: %d" % last_id])
    _, (start,), off = s.wait_start(timeout=10)
    # The reset is queued with the start item: a bounded wait for the first
    # block (a 0.2 s sleep stood here). Without one (the bug) the checks
    # below say what came instead.
    try:
        s.wait_for(lambda b: b.find(b"\n\n", off) >= 0, 5, "the first block")
    except h.TestFailure:
        pass
    pub.pub(subj, "live")
    pub.flush()
    s.wait_bytes(b"data: live\n\n", 10, off)
    # Fence: a marker after the live event; the reset and the live event,
    # nothing else, come before it.
    blocks, _, _ = h.read_until_marker(s, lambda m: (pub.pub(subj, m), pub.flush()),
                                       start=off, what=what)
    s.close()
    first = blocks[0]
    expect(first.event == "reset",
           "%s: resuming %s with the id of the last event seen before its subscription lapsed "
           "(%d, new start position %d) gave %r, expected `event: reset` first; the message "
           "published while nobody was subscribed is silently lost"
           % (what, subj, last_id, start, [b.raw for b in blocks]))
    payload = json.loads(first.data[0])
    expect(payload == {"reason": "history-expired", "subjects": [subj]},
           "%s: reset data %r" % (what, payload))
    expect(len(blocks) == 2 and blocks[1].data == ["live"], "%s: after the reset: %r"
           % (what, [b.raw for b in blocks[1:]]))
    h.log("%s: reset %r, then live" % (what, payload))


def test():
    with h.Nats() as nats, nu.NatsClient(nats.port) as pub:
        with h.Gateway(nats.url, history_keep_ms=200) as gw:
            other = h.CurlStream(gw, "/events/lapse.other", max_time=30)
            other.wait_start(timeout=10)
            last = last_id_after_events(gw, pub, "lapse.busy")
            wait_lapsed(nats, "lapse.busy")
            pub.pub("lapse.busy", "lost while nobody subscribed")
            pub.pub("lapse.other", "moves the sequence on")
            pub.flush()
            other.wait_bytes(b"data: moves the sequence on\n\n", 10)
            expect_reset_then_live(gw, pub, "lapse.busy", last, "busy process")
            other.close()
            gw.stop()

        with h.Gateway(nats.url, history_keep_ms=200) as gw:
            last = last_id_after_events(gw, pub, "lapse.quiet")
            wait_lapsed(nats, "lapse.quiet")
            pub.pub("lapse.quiet", "lost while nobody subscribed")
            pub.flush()
            expect_reset_then_live(gw, pub, "lapse.quiet", last, "quiet process")
            gw.check_alive()
            gw.stop()


if __name__ == "__main__":
    h.main(test)
