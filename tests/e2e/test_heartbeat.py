#!/usr/bin/env python3
"""Issue 2 (d): idle streams get ':' comment heartbeats at the configured interval.

With --heartbeat-ms 300, an idle stream watched with curl for 1.6 s gets
only the retry line and then at least 3 (and not a flood of) ":\\n\\n"
comments, and no events. A stream that receives an event every 50 ms is not
idle: it gets all 40 events in order, whole, and at most a couple of
heartbeats in between (plus one per heartbeat interval in any pause the
client saw: on a busy machine the publisher itself can stall).
"""
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
from harness import expect  # noqa: E402

HEARTBEAT_MS = 300
IDLE_S = 1.6


def arrival_times(stream, offsets):
    """When each byte offset (ascending) had arrived: the time of the chunk completing it."""
    with stream.cond:
        chunks = list(stream.chunks)
    out, pos = [], 0
    for t, b in chunks:
        pos += len(b)
        while len(out) < len(offsets) and offsets[len(out)] <= pos:
            out.append(t)
    expect(len(out) == len(offsets), "arrival times for %d of %d offsets"
           % (len(out), len(offsets)))
    return out


def test():
    with h.Nats() as nats, h.Gateway(nats.url, heartbeat_ms=HEARTBEAT_MS) as gw:
        t0 = time.monotonic()  # the stream's heartbeats cannot start before this
        with h.CurlStream(gw, "/events/hb.idle", max_time=30) as idle:
            _, _, off = idle.wait_start(timeout=10)
            time.sleep(IDLE_S)  # the idle time is the test
            body = idle.data()[off:]
            span = time.monotonic() - t0
            n = body.count(b":\n\n")
            h.log("idle stream: %d heartbeats in %.1f s: %r" % (n, IDLE_S, body))
            expect(re.fullmatch(rb"(:\n\n)*", body), "idle stream carried more than heartbeats: %r"
                   % body)
            expect(n >= 3, "only %d heartbeats in %.1f s at %d ms" % (n, IDLE_S, HEARTBEAT_MS))
            expect(n <= int(span * 1000 / HEARTBEAT_MS) + 2,
                   "%d heartbeats in %.1f s at %d ms is too many" % (n, span, HEARTBEAT_MS))

        with h.CurlStream(gw, "/events/hb.busy", max_time=30) as busy:
            _, (start,), off = busy.wait_start(timeout=10)
            nats.wait_subscriptions(["hb.busy"])
            h.publish(nats.url, "hb.busy", "", count=40, rate=20, seq=True)
            end = busy.wait_bytes(b"data: 40\n\n", 10, off)
            body = busy.data()[off:end].decode()
            blocks = body.split("\n\n")
            expect(blocks[-1] == "", "busy stream ends mid-event: %r" % body[-100:])
            seen, ids, pending, beats_between = [], [start], 0, 0
            pos, ends = off, []  # byte offset after each event, for its arrival time
            for b in blocks[:-1]:
                pos += len(b) + 2
                if b == ":":
                    pending += 1
                    continue
                ends.append(pos)
                m = re.fullmatch(r"id: (\d+)\ndata: (\d+)", b)
                expect(m, "busy stream block %r is neither an event nor a heartbeat" % b)
                if seen:  # only beats between two events count
                    beats_between += pending
                pending = 0
                seen.append(int(m.group(2)))
                ids.append(int(m.group(1)))
            # The premise "an event every 50 ms" needs a publisher on time. On
            # a busy machine it can stall, and then a heartbeat in the pause
            # is right: measure the pauses the client saw and allow one beat
            # per full heartbeat interval in them (none on an idle machine).
            times = arrival_times(busy, ends)
            gaps = [b - a for a, b in zip(times, times[1:])]
            allowed = 2 + sum(int(g * 1000 // HEARTBEAT_MS) for g in gaps)
            h.log("busy stream: 40 events over ~2 s, %d heartbeats among them; longest pause "
                  "%.0f ms, %d allowed" % (beats_between, max(gaps) * 1000, allowed))
            expect(seen == list(range(1, 41)), "busy stream events %r, expected 1..40" % seen)
            expect(all(a < b for a, b in zip(ids, ids[1:])),
                   "busy stream ids do not increase from the start id: %r" % ids)
            expect(beats_between <= allowed, "a stream with an event every 50 ms got %d "
                   "heartbeats at %d ms (%d allowed for the pauses it saw, longest %.0f ms); "
                   "heartbeats are for idle streams"
                   % (beats_between, HEARTBEAT_MS, allowed, max(gaps) * 1000))

        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test)
