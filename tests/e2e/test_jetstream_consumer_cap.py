#!/usr/bin/env python3
"""One client could create unbounded JetStream consumers.

What broke: 60 requests made 962 ordered consumers (1,929 API calls), and
a legitimate stream's time to first byte went from 6 ms to 880 ms, because
consumers were made one after another on one thread with retries of up to
8 s each, and nothing capped them.

The gateway now holds one live consumer per JetStream stream (not per
pattern), so the cap counts streams followed. --jetstream-max-consumers 5
with 2 replay threads leaves 3 live consumers; ten streams CAP0..CAP9 on
cap0.> .. cap9.>. A legitimate stream follows cap0.legit (one consumer).
One client then opens 40 streams on 40 fresh subjects of CAP1..CAP8 (5
each, round robin) on one h2 connection: the subjects of the first two
streams asked for (CAP1, CAP2: 10) start, as their later subjects need no
new consumer; the 30 on CAP3..CAP8 are refused cleanly (a 200 stream that
ends at once with a `retry:`, never a reset),
sluice_limit_hits_total{limit="jetstream_consumers"} grows by exactly 30
and the refusal is logged at most once a second. nats-server never holds
more consumers than the cap, and the gauge says 3. Meanwhile a second
legitimate stream on cap0.legit starts and gets the next event like the
first. Once the client goes away, its subjects linger (--history-keep-ms
60000, for a reconnect), but a subject of a new stream takes the slot of
a stream whose subjects are all unwatched: it is served at once, and the
limit is not hit again.
"""
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

MAX = 5
REPLAYS = 2
LIVE = MAX - REPLAYS
CHURN = 40
STREAMS = 10
ROUND = 8  # churn subjects go round robin over CAP1..CAP8
ADMITTED = (LIVE - 1) * CHURN // ROUND  # the subjects of the first LIVE - 1 streams


def metric(gw, name, **labels):
    return mu.value(mu.scrape(gw), name, **labels)


def hits(gw):
    return metric(gw, "sluice_limit_hits_total", limit="jetstream_consumers")


def consumers_on_server(ports):
    return sum(j.stream_info(ports, "CAP%d" % k)["state"]["consumer_count"]
               for k in range(STREAMS))


def churn_path(i):
    return "/events/cap%d.c%d" % (1 + i % ROUND, i)


def test():
    node = j.single_node()
    ports = [node.port]
    for k in range(STREAMS):
        j.create_stream(ports, "CAP%d" % k, ["cap%d.>" % k])
    with nu.NatsClient(ports) as c, \
            h.Gateway(node.url, jetstream_streams="*", jetstream_replays=REPLAYS,
                      jetstream_max_consumers=MAX, history_keep_ms=60000) as gw:
        legit = h.CurlStream(gw, "/events/cap0.legit", max_time=60)
        legit.wait_start(timeout=10)
        expect(hits(gw) == 0, "limit hits before the churn: %r" % hits(gw))

        mark = len(gw.log())
        t0 = time.monotonic()
        conn = h2.H2Conn(gw, timeout=10)
        churn = conn.open_many([churn_path(i) for i in range(CHURN)])
        conn.wait(lambda _: all(b"\n\n" in s.body or s.closed for s in churn), 30,
                  "every churning stream started or ended")
        # The refused ones end at once; give the admitted ones a moment to prove they stay.
        conn.wait(lambda _: sum(s.closed for s in churn) >= CHURN - ADMITTED, 10,
                  "the streams past the cap to end")
        took = time.monotonic() - t0
        refused = [s for s in churn if s.closed]
        opened = [s for s in churn if not s.closed]
        expect(len(opened) == ADMITTED and len(refused) == CHURN - ADMITTED,
               "%d churning streams open, %d refused; expected %d and %d"
               % (len(opened), len(refused), ADMITTED, CHURN - ADMITTED))
        late = [s for i, s in enumerate(churn) if s.closed != (i % ROUND >= LIVE - 1)]
        expect(not late, "the refused streams should be those of CAP%d..CAP%d: %r"
               % (LIVE, ROUND, late[:3]))
        bad = [s for s in refused if s.reset_code not in (None, 0) or s.ended_at is None
               or not re.match(rb"retry: \d+\n", bytes(s.body)) or b"data:" in s.body]
        expect(not bad, "refused streams should end cleanly with a retry hint only: %r"
               % bad[:3])
        n = hits(gw)
        expect(n == CHURN - ADMITTED, "limit hits %r, expected %d" % (n, CHURN - ADMITTED))
        logged = len(re.findall(r"jetstream: .*refusing cap\d\.c", gw.log()[mark:]))
        expect(1 <= logged <= took + 2, "%d refusal log lines in %.1f s (at most one a second)"
               % (logged, took))
        gauge = metric(gw, "sluice_jetstream_consumers")
        expect(gauge == LIVE, "sluice_jetstream_consumers %r, expected %d" % (gauge, LIVE))
        on_server = consumers_on_server(ports)
        expect(on_server <= MAX, "nats-server holds %d consumers on the streams, cap %d"
               % (on_server, MAX))
        h.log("churn: %d started, %d refused in %.2f s; hits %d, %d log lines, gauge %d, "
              "%d consumers on the server" % (len(opened), len(refused), took, n, logged,
                                              gauge, on_server))

        # A legitimate stream on a followed pattern needs no consumer: it starts and gets events.
        legit2 = h.CurlStream(gw, "/events/cap0.legit", max_time=60)
        legit2.wait_start(timeout=5)
        seq = j.js_publish(c, "cap0.legit", "hello")
        for s in (legit, legit2):
            s.wait_bytes(b"id: %d\ndata: hello\n\n" % seq, 5)
        h.log("both legitimate streams got event %d" % seq)
        # ...and the admitted churning streams are served too.
        seq2 = j.js_publish(c, "cap1.c0", "c0")
        conn.wait_body(churn[0], b"id: %d\ndata: c0\n\n" % seq2, 5)

        conn.close()
        h.wait_until(lambda: metric(gw, "sluice_streams_open") == 2, 10,
                     "the churning streams to close")
        fresh = h.CurlStream(gw, "/events/cap9.fresh", max_time=30)
        fresh.wait_start(timeout=10)
        seq3 = j.js_publish(c, "cap9.fresh", "fresh")
        fresh.wait_bytes(b"id: %d\ndata: fresh\n\n" % seq3, 5)
        expect(hits(gw) == n, "limit hits grew after the churn ended: %r" % hits(gw))
        gauge = metric(gw, "sluice_jetstream_consumers")
        expect(gauge == LIVE, "sluice_jetstream_consumers %r after an eviction, expected %d"
               % (gauge, LIVE))
        h.log("after the churn: a new subject is served again")
        for s in (legit, legit2, fresh):
            s.close()
        gw.stop()
    node.kill()


if __name__ == "__main__":
    h.main(test)
