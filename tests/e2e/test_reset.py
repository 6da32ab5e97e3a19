#!/usr/bin/env python3
"""Issue 3 (d): an id that cannot be resumed gives `event: reset` first, never a silent gap.

The gateway keeps 10 events per subject (--history-events 10). README,
"Resume contract": the stream starts with its start item, then one

    id: <positions>
    event: reset
    data: {"reason":"history-expired"|"unknown-id","subjects":[...]}

then live events only for the subjects named; subjects that can be
resumed are replayed after it. Cases, with the reason the contract and
the implementation give:
  - the id of event 5 of 50 (history holds 41-50): history-expired; the
    id of event 39: history-expired; the id of the event just before the
    oldest one held: no reset, a replay of exactly the ten held (the
    boundary); a small number such as "5": history-expired;
  - malformed ids: "abc", "1-2-3" and "N-N" on a one-subject stream, a
    21-digit number, a leading or trailing "-": unknown-id;
  - an id above anything handed out (from the future): unknown-id;
  - an id from a previous gateway process (restarted on the same NATS):
    the new process numbers from its own start time, above every id of
    its predecessor, so the id is older than its history: history-expired;
  - a two-subject stream where one subject's position is too old and the
    other's is resumable: one reset naming only the first, then the
    replay of the second (both ways round, with either reason); with a
    malformed id or a single position: one reset naming both.
  - a replay the worker's queue cap cannot take (a gateway with one
    worker and --process-queue-bytes 65536; a replay costs each stream
    its queue slot and id line, about 40 bytes an event): replay-limit,
    while a short replay from the same history goes through.
After each reset, a newly published event is the next thing on the stream.
"""
import json
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

HISTORY = 10


class Observer:
    """A curl stream that stays on one subject and records every event's position."""

    def __init__(self, gw, subj):
        self.subj = subj
        self.s = h.CurlStream(gw, "/events/" + subj, max_time=80)
        _, _, self.off = self.s.wait_start(timeout=10)

    def publish(self, pub, payloads):
        for p in payloads:
            pub.pub(self.subj, p)
        pub.flush()
        self.s.wait_bytes(b"data: %s\n\n" % payloads[-1].encode(), 10, self.off)

    def fence(self, pub):
        """Publishes a marker on the subject and reads until it (see harness.read_until_marker).

        Afterwards events() holds everything published on the subject before it.
        """
        h.read_until_marker(self.s, lambda m: (pub.pub(self.subj, m), pub.flush()),
                            start=self.off, what="observer of %s" % self.subj)

    def events(self):
        """[(position, data)] of every event so far."""
        blocks, _ = h.parse_blocks(self.s.data()[self.off:])
        return [(h.parse_id(b.id)[0], b.data[0]) for b in blocks if b.is_event]

    def close(self):
        self.s.close()


def collect(gw, subj, n, pub):
    """Publishes "1".."n" on subj; returns the observer and the events' positions."""
    obs = Observer(gw, subj)
    obs.publish(pub, [str(i) for i in range(1, n + 1)])
    evs = obs.events()
    expect([d for _, d in evs] == [str(i) for i in range(1, n + 1)],
           "observer of %s got %r" % (subj, evs[:3]))
    return obs, [p for p, _ in evs]


def open_resumed(gw, path, last_id, nsubjects=1):
    s = h.CurlStream(gw, path, max_time=30, extra=["-H", "Last-Event-ID: %s" % last_id])
    _, start, off = s.wait_start(timeout=10, nsubjects=nsubjects)
    return s, start, off


def expect_reset(gw, path, last_id, reason, subjects, pub, live_subject, live_data,
                 nsubjects=1, replay=()):
    """Connects with last_id; checks start item, one reset, the replay, then one live event.

    replay: the (subject index, position, data) the stream must replay after the reset.
    Returns the stream's positions after the live event.
    """
    what = "%s with Last-Event-ID %r" % (path, last_id)
    s, start, off = open_resumed(gw, path, last_id, nsubjects)
    want_reset = {"reason": reason, "subjects": subjects}
    # The reset is queued with the start item: a bounded wait for it (not a
    # sleep), then the live event after it.
    s.wait_bytes(b"event: reset\n", 10, off)
    pub.pub(live_subject, live_data)
    pub.flush()
    s.wait_bytes(b"data: %s\n\n" % live_data.encode(), 10, off)
    # Fence: a marker after the live event; the blocks before it must be
    # exactly the reset, the replay and the live event (a sleep stood here).
    blocks, _, _ = h.read_until_marker(
        s, lambda m: (pub.pub(live_subject, m), pub.flush()), start=off, what=what)
    expect(len(blocks) == 2 + len(replay),
           "%s: expected the reset, %d replayed and one live event, got %r"
           % (what, len(replay), blocks))
    r = blocks[0]
    expect(r.event == "reset" and r.data is not None and len(r.data) == 1,
           "%s: first block after the start item is not one `event: reset` with one data "
           "line: %r" % (what, r.raw))
    try:
        payload = json.loads(r.data[0])
    except ValueError:
        raise h.TestFailure("%s: reset data is not JSON: %r" % (what, r.data[0]))
    expect(payload == want_reset, "%s: reset data %r, expected %r" % (what, payload, want_reset))
    expect(r.data[0] == json.dumps(want_reset, separators=(",", ":")),
           "%s: reset data %r is not the documented compact form" % (what, r.data[0]))
    rpos = h.parse_id(r.id, nsubjects)
    expect(rpos == start, "%s: the reset's id %r is not the stream's start position %r"
           % (what, r.id, start))
    pos = rpos
    for b, (idx, p, data) in zip(blocks[1:], replay):
        got = h.parse_id(b.id, nsubjects)
        want = list(pos)
        want[idx] = p
        expect(b.event is None and b.data == [data] and got == want,
               "%s: replayed %r (id %r), expected data %r with positions %r"
               % (what, b.data, b.id, data, want))
        pos = got
    live = blocks[-1]
    lpos = h.parse_id(live.id, nsubjects)
    expect(live.data == [live_data] and live.event is None,
           "%s: after the reset came %r, expected the live event %r" % (what, live.raw, live_data))
    expect(all(b >= a for a, b in zip(pos, lpos)) and lpos != pos,
           "%s: live id %r does not move on from %r" % (what, live.id, pos))
    s.close()
    h.log("%s -> reset %s, %d replayed, then live" % (what, payload, len(replay)))
    return lpos


def expect_replay(gw, pub, subj, last_id, want_data):
    path = "/events/" + subj
    s, start, off = open_resumed(gw, path, last_id)
    expect(start == [int(last_id)], "%s resumed from %s starts at %r, expected the id it "
           "resumed from" % (path, last_id, start))
    s.wait_bytes(b"data: %s\n\n" % want_data[-1].encode(), 10, off)
    # Fence: exactly the replay before a marker published after it.
    blocks, _, _ = h.read_until_marker(s, lambda m: (pub.pub(subj, m), pub.flush()),
                                       start=off, what="%s from %s" % (path, last_id))
    expect([b.data for b in blocks] == [[d] for d in want_data]
           and all(b.event is None for b in blocks),
           "%s with Last-Event-ID %s: got %r, expected a replay of %r only"
           % (path, last_id, [b.raw for b in blocks][:4], want_data))
    s.close()
    h.log("%s with Last-Event-ID %s -> no reset, exactly the %d events held"
          % (path, last_id, len(want_data)))


def test():
    with h.Nats() as nats, nu.NatsClient(nats.port) as pub:
        gw0 = h.Gateway(nats.url, history_events=HISTORY)
        with gw0:
            obs, ids = collect(gw0, "reset.old", 3, pub)
            obs.close()
            gw0.stop()
        old_id = ids[-1]
        h.log("previous gateway process handed out id %d; stopped" % old_id)

        with h.Gateway(nats.url, history_events=HISTORY) as gw:
            a = "reset.a"
            path = "/events/" + a
            obs, ids = collect(gw, a, 50, pub)
            # Older than history, which holds 41-50.
            expect_reset(gw, path, ids[4], "history-expired", [a], pub, a, "live-1")
            expect_reset(gw, path, ids[38], "history-expired", [a], pub, a, "live-2")
            # The boundary: a client that has seen the event just before the
            # oldest one held is replayed all ten; one older is reset. Each
            # reset above was fenced by a marker, held like any event.
            obs.fence(pub)
            evs = obs.events()
            tail = [d for _, d in evs[50:]]
            expect(len(tail) == 5 and tail[0] == "live-1" and tail[2] == "live-2"
                   and all(d.startswith("fence-") for d in tail[1::2]),
                   "observer after the 50: %r, expected live-1, a marker, live-2, a marker, "
                   "its own marker" % tail)
            ids = [p for p, _ in evs]
            expect_replay(gw, pub, a, ids[-HISTORY - 1], [d for _, d in evs[-HISTORY:]])
            expect_reset(gw, path, ids[-HISTORY - 2], "history-expired", [a], pub, a, "live-3")
            # A well-formed number below this process's first sequence number.
            expect_reset(gw, path, "5", "history-expired", [a], pub, a, "live-4")

            for i, bad in enumerate(("abc", "1-2-3", "1" * 21, "%d-" % ids[-1],
                                     "-%d" % ids[-1], "%d-%d" % (ids[-1], ids[-1]))):
                expect_reset(gw, path, bad, "unknown-id", [a], pub, a, "live-bad-%d" % i)
            # Above anything handed out: not from this process.
            expect_reset(gw, path, ids[-1] + 10 ** 9, "unknown-id", [a], pub, a, "live-future")
            # From the previous process: below this one's first number.
            expect(old_id < ids[0], "the restarted gateway's ids (%d...) are not above its "
                   "predecessor's (%d)" % (ids[0], old_id))
            expect_reset(gw, path, old_id, "history-expired", [a], pub, a, "live-old-process")
            obs.close()

            # Two subjects: reset.x's position too old, reset.y's resumable.
            x, y = "reset.x", "reset.y"
            ox, xids = collect(gw, x, 30, pub)
            oy, yids = collect(gw, y, 3, pub)
            multi = "/events?subject=%s&subject=%s" % (x, y)
            expect_reset(gw, multi, "%d-%d" % (xids[4], yids[0]), "history-expired", [x], pub,
                         y, "live-y", nsubjects=2, replay=[(1, yids[1], "2"), (1, yids[2], "3")])
            # The other way round: x resumable (event 25 of 30 is held), y unknown.
            expect_reset(gw, multi, "%d-%d" % (xids[24], yids[-1] + 10 ** 9), "unknown-id", [y],
                         pub, x, "live-x", nsubjects=2,
                         replay=[(0, xids[k], str(k + 1)) for k in range(25, 30)])
            # Both unresumable: one reset naming both, in request order.
            expect_reset(gw, multi, "abc", "unknown-id", [x, y], pub, x, "live-x2", nsubjects=2)
            # One position for two subjects is malformed too.
            expect_reset(gw, multi, str(yids[0]), "unknown-id", [x, y], pub, x, "live-x3",
                         nsubjects=2)
            ox.close()
            oy.close()
            gw.check_alive()
            expect(not re.search(r"slow consumer", gw.log()), "a stream was cut as a slow "
                   "consumer")
            gw.stop()

        with h.Gateway(nats.url, history_events=5000, workers=1,
                       process_queue_bytes=65536) as gw:
            b = "reset.budget"
            path = "/events/" + b
            # In batches the observer reads before the next: a burst of 3,000 would
            # pass the 64 KiB cap as live bytes and cut the observer itself.
            obs = Observer(gw, b)
            for first in range(1, 3001, 100):
                obs.publish(pub, [str(i) for i in range(first, first + 100)])
            ids = [p for p, _ in obs.events()]
            expect(len(ids) == 3000, "observer of %s got %d events" % (b, len(ids)))
            # 2,999 events behind: ~120 KB of queue slots and ids, over the 64 KiB cap.
            expect_reset(gw, path, ids[0], "replay-limit", [b], pub, b, "live-budget")
            expect(re.search(r"replay of 2999 events refused: worker queue full", gw.log()),
                   "the refused replay was not logged")
            obs.fence(pub)  # the live event and the reset's marker are in evs
            evs = obs.events()
            expect_replay(gw, pub, b, evs[-101][0], [d for _, d in evs[-100:]])
            obs.close()
            gw.check_alive()
            gw.stop()

if __name__ == "__main__":
    h.main(test, deadline_s=90)
