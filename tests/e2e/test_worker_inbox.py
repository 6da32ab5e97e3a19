#!/usr/bin/env python3
"""A worker that falls behind NATS holds at most worker-inbox-bytes, and no stream gets a gap.

Regression: the NATS events waiting for a worker's loop (its inbox) had no
bound: a loop that could not keep up with a subject's publishers, or that
stalled, kept every event handed to it, so memory grew with the backlog.

A real nats-server and the real gateway with --workers 1 and
--worker-inbox-bytes 65536. Two streams follow inbox.a, one inbox.b. The
test hook (SIGUSR2) stalls the worker's loop; 40 events of 4 KiB are
published on inbox.a (about 160 KiB: well past the cap) and the gateway
says it drops them; a second SIGUSR2 lets the loop go on. Then:
- both inbox.a streams end as slow consumers ("reconnect to resume"),
  each with the events it got in order and none after a gap;
- a reconnect from each one's last id gets exactly the rest of the 40
  (history has them), then live events;
- the inbox.b stream, whose subject dropped nothing, is still open and
  gets its next event;
- sluice_worker_inbox_bytes stayed within the cap while the loop was
  stalled and went back to 0; sluice_limit_hits_total{limit="worker_inbox"}
  counted the drops.
"""
import signal
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

CAP = 65536
COUNT = 40
PAD = "x" * 4096


def numbered(evs):
    """The numbers of events whose data is 'n:' + PAD, in order."""
    return [int(e.data[0].split(":", 1)[0]) for e in evs if e.data[0].endswith(PAD)]


def test():
    with h.Nats() as nats, \
            h.Gateway(nats.url, workers=1, worker_inbox_bytes=CAP) as gw, \
            nu.NatsClient(nats.port) as pub:
        a = [h.CurlStream(gw, "/events/inbox.a", max_time=60) for _ in range(2)]
        b = h.CurlStream(gw, "/events/inbox.b", max_time=60)
        for s in a + [b]:
            s.wait_start(timeout=10)
        nats.wait_subscriptions(["inbox.a", "inbox.b"])
        pub.pub("inbox.a", "before")
        pub.flush()
        for s in a:
            s.wait_bytes(b"data: before\n\n", 10)

        mark = len(gw.log())
        gw.proc.send_signal(signal.SIGUSR2)
        gw.wait_log(r"stalled by the test hook", start=mark)
        for i in range(1, COUNT + 1):
            pub.pub("inbox.a", "%d:%s" % (i, PAD))
        pub.flush()
        gw.wait_log(r"bytes of NATS events wait for its loop \(worker-inbox-bytes\): dropping",
                    start=mark)
        held = mu.value(mu.scrape(gw), "sluice_worker_inbox_bytes", worker="0")
        expect(0 < held <= CAP, "the stalled worker's inbox holds %r bytes (cap %d)" % (held, CAP))
        gw.proc.send_signal(signal.SIGUSR2)
        gw.wait_log(r"the test hook's stall ends", start=mark)

        got = []
        for s in a:
            h.wait_until(lambda: not s.alive(), 15, "the inbox.a stream to end")
            body = s.data()
            expect(body.endswith(b": slow consumer, reconnect to resume\n\n"),
                   "an inbox.a stream did not end as a slow consumer: %r" % body[-200:])
            evs = h.events_of(body)
            nums = numbered(evs)
            expect(nums == list(range(1, len(nums) + 1)),
                   "an inbox.a stream got events out of order or after a gap: %r" % nums)
            expect(len(nums) < COUNT, "an inbox.a stream got all %d events: nothing was dropped"
                   % COUNT)
            got.append((evs[-1].id, nums))
        h.log("the inbox.a streams ended after %s of %d events"
              % ([len(n) for _, n in got], COUNT))

        # Each resumes from its last id: exactly the rest, from history, then live.
        again = [h.CurlStream(gw, "/events/inbox.a", max_time=60,
                              extra=["-H", "Last-Event-ID: %s" % last]) for last, _ in got]
        for s in again:
            s.wait_start(timeout=10)
        pub.pub("inbox.a", "after")
        pub.flush()
        for s, (_, nums) in zip(again, got):
            s.wait_bytes(b"data: after\n\n", 10)
            rest = numbered(h.events_of(s.data()))
            expect(rest == list(range(len(nums) + 1, COUNT + 1)),
                   "resumed after event %d: got %r" % (len(nums), rest))
        h.log("each resume got exactly the rest from history")

        expect(b.alive(), "the inbox.b stream ended, though its subject dropped nothing")
        pub.pub("inbox.b", "still here")
        pub.flush()
        b.wait_bytes(b"data: still here\n\n", 10)

        fams = mu.scrape(gw)
        hits = mu.value(fams, "sluice_limit_hits_total", limit="worker_inbox")
        # At least one: how many of the 40 reached the inbox before the loop went on varies.
        expect(hits >= 1, "sluice_limit_hits_total{limit=\"worker_inbox\"} is %r" % hits)
        mu.wait_metric(gw, "sluice_worker_inbox_bytes", 0, worker="0")
        h.log("%d events dropped and counted (%d bytes held at most); the inbox is empty again"
              % (hits, held))
        for s in again + [b]:
            s.close()
        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test)
