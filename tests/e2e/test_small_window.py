#!/usr/bin/env python3
"""Issue 3 (b): a client with a 1 KiB SETTINGS_INITIAL_WINDOW_SIZE still receives everything.

sluice-client (--window-size 1024) opens 3 streams on one subject; 500
events of ~100 bytes (sluice-pub --seq, so each payload starts with its
number) are published at full speed, far faster than 1 KiB windows let
them out, so the gateway must hold them in the streams' queues (well
under the 256 KiB cap) and send as the client's WINDOW_UPDATEs arrive.
Every stream receives exactly the 500 payloads in order with increasing
ids, the same ids on all three (one id per message), and ends neither
reset nor cut. A flow-control violation by the gateway would make
nghttp2 in the client fail the connection.
"""
import collections
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
from harness import expect  # noqa: E402

SUBJECT = "small.window"
COUNT = 500
STREAMS = 3
PAD = "-" + "w" * 96  # ~100-byte payloads


def test():
    with h.Nats() as nats, h.Gateway(nats.url) as gw:
        client = h.Client(gw, ["--window-size", "1024",
                               "--repeat-path", "/events/%s:%d" % (SUBJECT, STREAMS),
                               "--expect-events", str(COUNT)], timeout_ms=30000)
        client.wait_ready(timeout=10)
        h.publish(nats.url, SUBJECT, PAD, count=COUNT, seq=True)
        h.log("published %d events of %d bytes" % (COUNT, len(str(COUNT) + PAD)))
        rc, rep = client.result()
        h.log("client: exit %d, %s events, elapsed %s ms" % (rc, rep.get("events"),
                                                             rep.get("elapsed_ms")))
        expect(rep.get("connections_lost") == 0, "the connection was lost: %r" % rep)
        expect(rep.get("streams_reset") == 0 and rep.get("streams_ended") == 0,
               "streams were reset or ended: %r" % rep)
        expect(rc == 0 and rep.get("ok") is True and rep.get("events") == STREAMS * COUNT,
               "with 1 KiB windows the client got %r of %d events (min %r per stream): %r"
               % (rep.get("events"), STREAMS * COUNT, rep.get("min_events"), rep))
        per_stream = collections.defaultdict(list)
        for e in client.events():
            per_stream[e["stream"]].append((e["id"], e["data"]))
        want = ["%d%s" % (n, PAD) for n in range(1, COUNT + 1)]
        ids0 = None
        for i in range(STREAMS):
            got = per_stream.get(i, [])
            data = [d for _, d in got]
            if data != want:
                bad = next((k for k, (a, b) in enumerate(zip(data, want)) if a != b),
                           min(len(data), len(want)))
                raise h.TestFailure("stream %d: %d events, first difference at %d: got %r, "
                                    "expected %r" % (i, len(data), bad, data[bad:bad + 1],
                                                     want[bad:bad + 1]))
            ids = [h.parse_id(x)[0] for x, _ in got]
            expect(all(a < b for a, b in zip(ids, ids[1:])), "stream %d: ids do not increase"
                   % i)
            if ids0 is None:
                ids0 = ids
                gw.check_start_id(ids, published=COUNT)
            expect(ids == ids0, "stream %d carries other ids than stream 0 for the same messages"
                   % i)
        for st in rep.get("per_stream", []):
            expect(st.get("status") == 200 and st.get("reset_code") is None
                   and st.get("comments") == 0,
                   "stream %r: status, reset or comments unexpected" % st)
        gw.check_alive()
        expect("slow consumer" not in gw.log(), "a stream was cut as a slow consumer")
        gw.stop()


if __name__ == "__main__":
    h.main(test)
