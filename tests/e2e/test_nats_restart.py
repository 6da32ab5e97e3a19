#!/usr/bin/env python3
"""Issue 2 (e): nats-server killed and restarted on the same port.

Open streams (one curl, 20 on one sluice-client connection over two
subjects) get an event, then nats-server is SIGKILLed. The gateway must
stay up, say so in its log, and keep the streams open with heartbeats
(--heartbeat-ms 500). nats-server comes back on the same port; once the
gateway logs "nats: reconnected", events published after the restart reach
every stream that was open all along, with ids that keep increasing.
"""
import collections
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
from harness import expect  # noqa: E402

SUBJECTS = ["restart.a", "restart.b"]


def test():
    with h.Nats() as nats, h.Gateway(nats.url, heartbeat_ms=500) as gw:
        client = h.Client(gw, ["--repeat-path", "/events/restart.a:10",
                               "--repeat-path", "/events/restart.b:10",
                               "--expect-events", "2"], timeout_ms=45000)
        with h.CurlStream(gw, "/events/restart.a", max_time=60) as s:
            _, (start,), off = s.wait_start(timeout=10)
            client.wait_ready(timeout=10)
            nats.wait_subscriptions(SUBJECTS)
            for subj in SUBJECTS:
                h.publish(nats.url, subj, "before")
            end = s.wait_bytes(b"data: before\n\n", 10, off)
            # A heartbeat may come first (500 ms pass before the publish on a busy
            # machine), then exactly the one event.
            m = re.fullmatch(rb"(?::\n\n)*id: (\d+)\ndata: before\n\n", s.data()[off:end])
            expect(m, "curl stream: expected one event 'before', got %r" % s.data()[off:end])
            before_id = int(m.group(1))
            expect(before_id > start, "event id %d is not above the start id %d"
                   % (before_id, start))

            mark = len(gw.log())
            nats.kill()
            h.log("nats-server killed")
            gw.wait_log(r"nats: disconnected", timeout=10, start=mark)
            # Streams stay open and heartbeats go on while NATS is away.
            beats_from = len(s.data())
            s.wait_for(lambda b: b.count(b":\n\n", beats_from) >= 3, 6,
                       "three heartbeats while NATS is down")
            gw.check_alive("after NATS went away")
            expect(s.alive(), "curl's stream ended when NATS went away")
            expect(client.proc.poll() is None, "sluice-client ended when NATS went away")
            tail = s.data()[end:]
            expect(re.fullmatch(rb"(:\n\n)*", tail), "unexpected bytes during the outage: %r"
                   % tail)

            mark = len(gw.log())
            nats.start()
            h.log("nats-server restarted on port %d" % nats.port)
            gw.wait_log(r"nats: reconnected", timeout=15, start=mark)
            h.log("gateway reconnected")
            nats.wait_subscriptions(SUBJECTS, timeout=10)
            for subj in SUBJECTS:
                h.publish(nats.url, subj, "after")
            after_end = s.wait_bytes(b"data: after\n\n", 10, end)
            # Heartbeats while NATS was away, then exactly the one new event.
            m = re.fullmatch(rb"(?::\n\n)*id: (\d+)\ndata: after\n\n", s.data()[end:after_end])
            expect(m, "curl stream after the restart: %r" % s.data()[end:after_end])
            after_id = int(m.group(1))
            expect(after_id > before_id, "the id after the NATS restart (%d) is not above the "
                   "one before (%d)" % (after_id, before_id))
            expect(s.alive(), "curl's stream ended")

        rc, rep = client.result()
        expect(rc == 0 and rep.get("ok") is True and rep.get("streams") == 20,
               "sluice-client: exit %d, report %r" % (rc, rep))
        expect(rep.get("connections_lost", 0) == 0 and rep.get("streams_reset", 0) == 0,
               "client lost its connection or streams: %r" % rep)
        per_stream = collections.defaultdict(list)
        for e in client.events():
            per_stream[e["stream"]].append((e["data"], h.parse_id(e["id"])[0]))
        bad = {i: d for i, d in per_stream.items() if [x for x, _ in d] != ["before", "after"]
               or not d[0][1] < d[1][1]}
        expect(len(per_stream) == 20 and not bad,
               "streams did not get exactly before+after with increasing ids: %r"
               % (bad or dict(per_stream)))
        # Streams 0-9 are on restart.a, as curl's was: one id per message.
        a_ids = {tuple(i for _, i in per_stream[k]) for k in range(10)}
        expect(a_ids == {(before_id, after_id)}, "restart.a streams saw ids %r, curl saw %r"
               % (a_ids, (before_id, after_id)))

        gw.check_alive()
        gw.stop()


if __name__ == "__main__":
    h.main(test)
