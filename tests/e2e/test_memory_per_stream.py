#!/usr/bin/env python3
"""Issue 3 (f): the gateway's memory per open stream, for the README.

One sluice-client process opens 10 connections with the same 2,000 paths
each (2,000 distinct subjects, mem.s0 ... mem.s1999): 20,000 concurrent
streams, 10 per subject. The gateway's RSS is read from /proc before the
client connects and again once every stream has its 200; the difference
over 20,000 is printed as

    rss_per_stream_bytes=N

It includes each stream's share of its subject's NATS subscription and
history ring (one subject per 10 streams) and of the connections' TLS and
HTTP/2 state (2,000 streams per connection). Asserted only against a
generous bound (16 KiB per stream). Then one event on every subject must
reach all 20,000 streams, so the streams measured are real, and the RSS
with one event queued through every stream and held in every history is
printed too.
"""
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

CONNECTIONS = 10
SUBJECTS = 2000
STREAMS = CONNECTIONS * SUBJECTS
BOUND = 16 << 10


def settled_rss(gw, what):
    """RSS once it has stopped moving (two equal readings 0.2 s apart, at most 5 s)."""
    last = gw.rss_bytes()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = gw.rss_bytes()
        if now == last:
            break
        last = now
    h.log("gateway RSS %s: %.1f MiB" % (what, last / 2**20))
    return last


def test():
    subjects = ["mem.s%d" % i for i in range(SUBJECTS)]
    # 2,000 streams at once per connection: above the default new-stream rate.
    rate = {"stream_rate": 1000000}
    # Thousands of distinct subjects on one connection at once: above the
    # per-connection subject and subscribe-rate caps, which are not under test.
    rate.update(max_subjects_per_connection=1000000, subscribe_rate=1000000)
    with h.Nats() as nats, h.Gateway(nats.url, max_streams=SUBJECTS + 100, **rate) as gw:
        paths = os.path.join(h.tempdir(), "paths")
        with open(paths, "w") as f:
            f.writelines("/events/%s\n" % s for s in subjects)
        # A first connection and stream, so that per-process start-up costs
        # (TLS and NATS buffers, the first worker allocations) are not
        # counted per stream.
        with h.CurlStream(gw, "/events/mem.warmup", max_time=60) as warm:
            warm.wait_start(timeout=10)
            before = settled_rss(gw, "with one stream open")

            t0 = time.monotonic()
            c = h.Client(gw, ["--connections", str(CONNECTIONS), "--paths-file", paths,
                              "--expect-events", "1"], timeout_ms=90000, events_out=False)
            c.wait_ready(timeout=60)
            h.log("%d streams on %d connections open in %.1f s"
                  % (STREAMS, CONNECTIONS, time.monotonic() - t0))
            gw.check_alive("with %d streams open" % STREAMS)
            after = settled_rss(gw, "with %d streams open" % STREAMS)
            per_stream = (after - before) / STREAMS
            print("rss_per_stream_bytes=%d" % per_stream, flush=True)

            nats.wait_subscriptions(subjects, timeout=30)
            with nu.NatsClient(nats.port) as pub:
                for s in subjects:
                    pub.pub(s, s)
                pub.flush()
            rc, rep = c.result()
            h.log("client: exit %d, %s events, min %s, max %s, status %s"
                  % (rc, rep.get("events"), rep.get("min_events"), rep.get("max_events"),
                     rep.get("status_counts")))
            expect(rep.get("streams") == STREAMS and rep.get("status_counts") == {"200": STREAMS},
                   "not every stream was answered 200: %r" % rep.get("status_counts"))
            expect(rc == 0 and rep.get("ok") is True and rep.get("events") == STREAMS
                   and rep.get("max_events") == 1 and rep.get("connections_lost") == 0,
                   "one event per subject did not reach each of the %d streams exactly once: %r"
                   % (STREAMS, rep))
            expect(rep.get("streams_reset") == 0, "streams were reset: %r" % rep)
            h.log("RSS after one event on every stream: %.1f MiB" % (gw.rss_bytes() / 2**20))

            if h.sanitized():
                h.log("per-stream bound not checked: the gateway is built with "
                      "AddressSanitizer, which pads and quarantines every allocation")
            else:
                expect(0 < per_stream < BOUND, "the gateway holds %.0f bytes per open stream, "
                       "over the %d-byte bound" % (per_stream, BOUND))
            expect(warm.alive(), "the warm-up stream ended")
        gw.check_alive()
        gw.stop(timeout=20)


if __name__ == "__main__":
    h.main(test)
