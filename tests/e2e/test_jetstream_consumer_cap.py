#!/usr/bin/env python3
"""One client could create unbounded JetStream consumers.

What broke: 60 requests made 962 ordered consumers (1,929 API calls), and
a legitimate stream's time to first byte went from 6 ms to 880 ms, because
consumers were made one after another on one thread with retries of up to
8 s each, and nothing capped them.

--jetstream-max-consumers 12 with 2 replay threads leaves 10 live
consumers. A legitimate stream follows js subject cap.legit (one). One
client then opens 40 streams on 40 fresh subjects on one h2 connection: 9
start, 31 are refused cleanly (a 200 stream that ends at once with a
`retry:`, never a reset), sluice_limit_hits_total{limit="jetstream_consumers"}
grows by exactly 31 and the refusal is logged at most once a second.
nats-server never holds more consumers on the stream than the cap, and
the gauge says 10. Meanwhile a second legitimate stream on cap.legit (a
pattern already followed: no consumer to make) starts and gets the next
event like the first. Once the client goes away, its subjects linger
(--history-keep-ms 60000, for a reconnect) but a new subject takes the
slot of the one unwatched longest: it is served at once, and the limit is
not hit again.
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

MAX = 12
REPLAYS = 2
LIVE = MAX - REPLAYS
CHURN = 40


def metric(gw, name, **labels):
    return mu.value(mu.scrape(gw), name, **labels)


def hits(gw):
    return metric(gw, "sluice_limit_hits_total", limit="jetstream_consumers")


def consumers_on_server(ports):
    return j.stream_info(ports, "CAP")["state"]["consumer_count"]


def test():
    node = j.single_node()
    ports = [node.port]
    j.create_stream(ports, "CAP", ["cap.>"])
    with nu.NatsClient(ports) as c, \
            h.Gateway(node.url, jetstream_streams="CAP", jetstream_replays=REPLAYS,
                      jetstream_max_consumers=MAX, history_keep_ms=60000) as gw:
        legit = h.CurlStream(gw, "/events/cap.legit", max_time=60)
        legit.wait_start(timeout=10)
        expect(hits(gw) == 0, "limit hits before the churn: %r" % hits(gw))

        mark = len(gw.log())
        t0 = time.monotonic()
        conn = h2.H2Conn(gw, timeout=10)
        churn = conn.open_many(["/events/cap.c%d" % i for i in range(CHURN)])
        conn.wait(lambda _: all(b"\n\n" in s.body or s.closed for s in churn), 30,
                  "every churning stream started or ended")
        # The refused ones end at once; give the admitted ones a moment to prove they stay.
        conn.wait(lambda _: sum(s.closed for s in churn) >= CHURN - (LIVE - 1), 10,
                  "the streams past the cap to end")
        took = time.monotonic() - t0
        refused = [s for s in churn if s.closed]
        opened = [s for s in churn if not s.closed]
        expect(len(opened) == LIVE - 1 and len(refused) == CHURN - (LIVE - 1),
               "%d churning streams open, %d refused; expected %d and %d"
               % (len(opened), len(refused), LIVE - 1, CHURN - LIVE + 1))
        bad = [s for s in refused if s.reset_code not in (None, 0) or s.ended_at is None
               or not re.match(rb"retry: \d+\n", bytes(s.body)) or b"data:" in s.body]
        expect(not bad, "refused streams should end cleanly with a retry hint only: %r"
               % bad[:3])
        n = hits(gw)
        expect(n == CHURN - (LIVE - 1), "limit hits %r, expected %d" % (n, CHURN - LIVE + 1))
        logged = len(re.findall(r"jetstream: .*refusing cap\.c", gw.log()[mark:]))
        expect(1 <= logged <= took + 2, "%d refusal log lines in %.1f s (at most one a second)"
               % (logged, took))
        gauge = metric(gw, "sluice_jetstream_consumers")
        expect(gauge == LIVE, "sluice_jetstream_consumers %r, expected %d" % (gauge, LIVE))
        on_server = consumers_on_server(ports)
        expect(on_server <= MAX, "nats-server holds %d consumers on the stream, cap %d"
               % (on_server, MAX))
        h.log("churn: %d started, %d refused in %.2f s; hits %d, %d log lines, gauge %d, "
              "%d consumers on the server" % (len(opened), len(refused), took, n, logged,
                                              gauge, on_server))

        # A legitimate stream on a followed pattern needs no consumer: it starts and gets events.
        legit2 = h.CurlStream(gw, "/events/cap.legit", max_time=60)
        legit2.wait_start(timeout=5)
        seq = j.js_publish(c, "cap.legit", "hello")
        for s in (legit, legit2):
            s.wait_bytes(b"id: %d\ndata: hello\n\n" % seq, 5)
        h.log("both legitimate streams got event %d" % seq)
        # ...and the admitted churning streams are served too.
        seq2 = j.js_publish(c, "cap.c0", "c0")
        conn.wait_body(churn[0], b"id: %d\ndata: c0\n\n" % seq2, 5)

        conn.close()
        h.wait_until(lambda: metric(gw, "sluice_streams_open") == 2, 10,
                     "the churning streams to close")
        fresh = h.CurlStream(gw, "/events/cap.fresh", max_time=30)
        fresh.wait_start(timeout=10)
        seq3 = j.js_publish(c, "cap.fresh", "fresh")
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
