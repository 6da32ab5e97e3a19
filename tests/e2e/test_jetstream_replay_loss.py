#!/usr/bin/env python3
"""A JetStream replay never shortens a resume silently.

What could break: a resume older than a gateway's memory history is
answered by a replay job that reads a push consumer *filtered* on the
subject, and nats-server 2.9.10 was seen skipping messages on filtered
push consumers under a burst while it reported consecutive consumer
sequences and nothing pending (see test_jetstream_burst_gap.py): a skip
in a replay would shorten the resume with nothing to show for it. The
replay now takes every event above history's floor (or its newest
eviction) from history, which the unfiltered, gap-checked live feed
filled, and counts what its consumer delivers against the matches stored
when it was made.

Stream RL on `rl.>`; every event of a subject under test is followed by
one on rl.noise, so a subject's sequences have gaps.

1. loss_is_a_reset: a gateway started with SLUICE_TEST_REPLAY_DROP=3 (a
   SLUICE_TEST_HOOKS hook: every replay consumer loses its third message,
   consumer sequence intact, as the server's skip does) resumed from an id
   older than its history: `event: reset` history-expired, then live —
   never the events with one missing. Its log says the consumer was made
   twice and the replay lost messages (one warning);
   sluice_jetstream_replay_losses_total grows by 1. A gateway without the
   hook resumes from the same id exactly.
2. burst_during_replay: while 1,500 events are published on rl.b (and as
   many on rl.noise between them), two fresh gateways, one with
   --history-events 5 and one with the default, resume from an id 990
   events back. Each gets every event after it, in order, exactly once,
   then a fence.
3. deleted_is_not_lost: messages deleted from the stream before the resume
   (every 7th of rl.c's, and noise) are not counted as stored, so the
   replay is exact without them, not a reset.
4. position_above_history: an id newer than the subject's newest event in
   a gateway's history but older than the stream's end (a noise message's
   sequence) is answered by a replay whose events come from history; the
   stream gets nothing from before that id, then the live event.
5. position_past_the_end: an id a few sequences past the stream's end (a
   client that another gateway served from a stream leader this one's
   does not match yet; test_chaos once met it in a failover) is waited
   for: the messages that reach it are published 0.5 s after the resume,
   and the stream starts at the id with no reset, then exactly what
   follows it. An id 10^6 past the end is still `unknown-id`.

Needs SLUICE_TEST_HOOKS (the default for development trees) for case 1;
the gateway's log says whether the hook is on, and case 1 is skipped
without it.
"""
import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import nats_util as nu  # noqa: E402
import test_jetstream as tj  # noqa: E402
from harness import expect  # noqa: E402

PRELOAD = 1000   # events stored on a subject before it is resumed
BURST = 1500     # events published on rl.b while its replays run
CHUNK = 50       # burst events per flushed write
HOOK_LINE = "test hook: every JetStream replay consumer loses its message 3"


def preload(c, ports, subj, n, tag):
    """n events on subj, each followed by one on rl.noise, at full speed; [(seq, data)]."""
    base = j.stream_info(ports, "RL")["state"]["last_seq"]
    out = []
    for k in range(1, n + 1):
        c.pub(subj, "%s%d" % (tag, k))
        c.pub("rl.noise", "n")
        out.append((base + 2 * k - 1, "%s%d" % (tag, k)))
    c.flush(30)
    last = j.stream_info(ports, "RL")["state"]["last_seq"]
    expect(last == base + 2 * n, "RL's last sequence is %d, expected %d" % (last, base + 2 * n))
    return out


def hooked_gateway(url):
    os.environ["SLUICE_TEST_REPLAY_DROP"] = "3"
    try:
        return h.Gateway(url, jetstream_streams="RL")
    finally:
        del os.environ["SLUICE_TEST_REPLAY_DROP"]


def case_loss_is_a_reset(c, node, ports):
    subj = "rl.a"
    stored = preload(c, ports, subj, PRELOAD, "a")
    pos = stored[9][0]  # after a10: 990 events to replay, none in memory yet
    with hooked_gateway(node.url) as gl:
        if HOOK_LINE not in gl.log():
            h.log("SKIP loss_is_a_reset: built without SLUICE_TEST_HOOKS (no %r in the log)"
                  % HOOK_LINE)
            gl.stop()
            return stored
        names = ("sluice_jetstream_replay_losses_total", "sluice_jetstream_replay_failures_total",
                 "sluice_jetstream_replay_requests_total")
        before = {n: tj.metric(gl, n) for n in names}
        stored += tj.expect_reset(gl, subj, pos, "history-expired", c, "after-loss")
        d = {n: tj.metric(gl, n) - before[n] for n in names}
        log = gl.log()
        h.log("hooked gateway: reset, then live; metrics %r" % d)
        expect(d == {n: 1 for n in names},
               "one replay, failed for a loss, expected each metric +1: %r" % d)
        expect(log.count("trying once more") == 1 and log.count("lost messages") == 1,
               "the log should show one retry and one loss warning:\n%s" % h.tail(log, 10))
        gl.stop()
    with h.Gateway(node.url, jetstream_streams="RL") as gn:
        s, (start,), off = tj.open_stream(gn, "/events/" + subj, last_id=pos)
        expect(start == pos, "resumed from %d starts at %d" % (pos, start))
        _, mk = tj.expect_events(s, off, stored[10:], "without the hook, from a10", c, subj)
        stored.append(mk)
        s.close()
        expect(tj.metric(gn, "sluice_jetstream_replay_losses_total") == 0,
               "a gateway without the hook counted a loss")
        gn.stop()
    h.log("without the hook: exactly a11-a%d and the markers, no loss counted" % PRELOAD)
    return stored


def case_burst_during_replay(c, node, ports):
    subj = "rl.b"
    stored = preload(c, ports, subj, PRELOAD, "b")
    pos = stored[9][0]
    burst = []
    started = threading.Event()
    state = {"done_at": None, "error": None}

    def publish():
        try:
            with nu.NatsClient(ports, name="sluice-e2e-burst") as bc:
                base = j.stream_info(ports, "RL")["state"]["last_seq"]
                for k in range(1, BURST + 1):
                    bc.pub(subj, "b%d" % (PRELOAD + k))
                    bc.pub("rl.noise", "n")
                    burst.append((base + 2 * k - 1, "b%d" % (PRELOAD + k)))
                    if k % CHUNK == 0:
                        bc.flush(30)
                        started.set()
                        time.sleep(0.02)  # pacing: the burst outlasts the replays
                bc.flush(30)
        except Exception as e:  # judged below, on the test's thread
            state["error"] = e
        finally:
            started.set()
            state["done_at"] = time.monotonic()

    with h.Gateway(node.url, jetstream_streams="RL", history_events=5) as g5, \
            h.Gateway(node.url, jetstream_streams="RL") as g1k:
        pub = threading.Thread(target=publish, daemon=True)
        pub.start()
        started.wait(15)
        streams = [(g, h.CurlStream(g, "/events/" + subj, max_time=60,
                                    extra=["-H", "Last-Event-ID: %d" % pos]))
                   for g in (g5, g1k)]
        offs = []
        for g, s in streams:
            _, (start,), off = s.wait_start(timeout=15)
            expect(start == pos, "resumed from %d starts at %d" % (pos, start))
            offs.append(off)
        answered = time.monotonic()
        pub.join(30)
        expect(not pub.is_alive() and state["error"] is None,
               "the burst publisher failed: %r" % state["error"])
        h.log("both replays answered %s the burst ended"
              % ("before" if answered < state["done_at"] else "after"))
        last = j.stream_info(ports, "RL")["state"]["last_seq"]
        expect(last == burst[-1][0] + 1, "RL's last sequence is %d after the burst, expected %d"
               % (last, burst[-1][0] + 1))
        want = stored[10:] + burst
        for (g, s), off, tag in zip(streams, offs, ("--history-events 5", "default history")):
            _, mk = tj.expect_events(s, off, want, "%s, resumed during a burst" % tag, c, subj)
            want = want + [mk]
            s.close()
            h.log("%s: exactly b11-b%d (%d events) then the fence; replays %d, events "
                  "fetched %d" % (tag, PRELOAD + BURST, len(stored) - 10 + BURST,
                                  tj.metric(g, "sluice_jetstream_replays_total"),
                                  tj.metric(g, "sluice_jetstream_replayed_events_total")))
        for g in (g5, g1k):
            g.check_alive()
            g.stop()


def case_deleted_is_not_lost(c, node, ports):
    subj = "rl.c"
    stored = preload(c, ports, subj, 200, "c")
    pos = stored[9][0]
    gone = set(seq for k, (seq, _) in enumerate(stored) if k > 10 and k % 7 == 0)
    for seq in sorted(gone) + [stored[-1][0] + 1]:  # the last is rl.noise
        j.js_api(c, "STREAM.MSG.DELETE.RL", {"seq": seq})
    with h.Gateway(node.url, jetstream_streams="RL") as g:
        s, _, off = tj.open_stream(g, "/events/" + subj, last_id=pos)
        want = [e for e in stored[10:] if e[0] not in gone]
        tj.expect_events(s, off, want, "after deletes, from c10", c, subj)
        s.close()
        expect(tj.metric(g, "sluice_jetstream_replay_losses_total") == 0,
               "deleted messages were counted as a loss")
        g.stop()
    h.log("%d deleted of rl.c's 190 after c10: the other %d exactly, no loss"
          % (len(gone), len(want)))


def case_position_above_history(c, node, ports):
    subj = "rl.d"
    with h.Gateway(node.url, jetstream_streams="RL") as g:
        live, _, off = tj.open_stream(g, "/events/" + subj)
        held = tj.pub_pairs(c, subj, "rl.noise", ["d%d" % k for k in range(1, 6)])
        end, mk = tj.expect_events(live, off, held, "live on rl.d", c, subj)
        x = j.js_publish(c, "rl.noise", "n")  # newer than rl.d's newest, not the stream's end
        j.js_publish(c, "rl.noise", "n")
        before = tj.metric(g, "sluice_jetstream_replay_requests_total")
        s, (start,), off2 = tj.open_stream(g, "/events/" + subj, last_id=x)
        expect(start == x, "resumed from %d starts at %d" % (x, start))
        expect(tj.metric(g, "sluice_jetstream_replay_requests_total") == before + 1,
               "the resume from %d was not a replay" % x)
        after = tj.pub_pairs(c, subj, "rl.noise", ["d6"])
        tj.expect_events(s, off2, after, "resumed from %d, above rl.d's newest %d" % (x, mk[0]),
                         c, subj)
        for st in (s, live):
            st.close()
        g.stop()
    h.log("from %d (rl.d's newest %d): nothing older, then live d6" % (x, mk[0]))


def case_position_past_the_end(c, node, ports):
    subj = "rl.e"
    with h.Gateway(node.url, jetstream_streams="RL") as g:
        end = j.stream_info(ports, "RL")["state"]["last_seq"]
        ahead = end + 3  # e2's sequence below: e1, noise, e2
        t0 = time.monotonic()
        s = h.CurlStream(g, "/events/" + subj, max_time=30,
                         extra=["-H", "Last-Event-ID: %d" % ahead])
        time.sleep(0.5)  # the resume is under way (waiting for the end), not a fence
        sent = tj.pub_pairs(c, subj, "rl.noise", ["e1", "e2", "e3"])
        expect(sent[1][0] == ahead, "e2 got sequence %d, expected %d" % (sent[1][0], ahead))
        _, (start,), off = s.wait_start(timeout=15)
        waited = time.monotonic() - t0
        expect(start == ahead, "resumed from %d (past the end %d) starts at %d"
               % (ahead, end, start))
        tj.expect_events(s, off, sent[2:], "resumed from %d, the end being %d" % (ahead, end),
                         c, subj)
        s.close()
        h.log("from %d, %d past the end: started after %.2f s with no reset, then e3"
              % (ahead, ahead - end, waited))
        last = j.stream_info(ports, "RL")["state"]["last_seq"]
        t1 = time.monotonic()
        tj.expect_reset(g, subj, last + 10 ** 6, "unknown-id", c, "far-past-the-end")
        took = time.monotonic() - t1
        g.stop()
    h.log("10^6 past the end: unknown-id, reset and fence in %.2f s" % took)


def test():
    node = j.single_node()
    ports = [node.port]
    j.create_stream(ports, "RL", ["rl.>"])
    with nu.NatsClient(ports, name="sluice-e2e-rl") as c:
        for name, fn in (("loss is a reset", lambda: case_loss_is_a_reset(c, node, ports)),
                         ("burst during a replay",
                          lambda: case_burst_during_replay(c, node, ports)),
                         ("deleted is not lost",
                          lambda: case_deleted_is_not_lost(c, node, ports)),
                         ("position above history",
                          lambda: case_position_above_history(c, node, ports)),
                         ("position past the end",
                          lambda: case_position_past_the_end(c, node, ports))):
            h.log("---- %s" % name)
            fn()
    node.kill()


if __name__ == "__main__":
    h.main(test, deadline_s=120)
