#!/usr/bin/env python3
"""Issue 2 (b): 4,000 streams on ONE HTTP/2 connection, one NATS subscription per subject.

sluice-client opens, on one connection, 2,000 streams to 2,000 different
subjects (load.s0 ... load.s1999) and 2,000 more to the shared subject
load.shared. Each distinct subject gets one message (its own name as the
payload), load.shared gets five (event "tick"). Every distinct stream must
receive exactly its one event and every shared stream exactly the five, in
order, with the same increasing ids on every shared stream; one
process-wide counter numbers messages, so all 2,005 ids differ.
nats-server's /connz?subs=1 must show the gateway's connection with
exactly 2,001 subscriptions, one per distinct subject, and none once
every stream has closed and history-keep-ms (500 ms here) has passed.

The gateway runs two workers. A second client with eight connections to
load.shared and load.s7 makes it very likely that both workers hold
streams on the same subjects, which must still share one subscription.
"""
import collections
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

N = 2000
SHARED = 5


def test():
    subjects = ["load.s%d" % i for i in range(N)]
    # A subject's subscription outlives its last stream by history-keep-ms (for
    # resume); 500 ms keeps the check at the end short. 4,000 streams open at
    # once: above the default new-stream rate limit, which is not under test.
    rate = {"stream_rate": 1000000}
    # Thousands of distinct subjects on one connection at once: above the
    # per-connection subject and subscribe-rate caps, which are not under test.
    rate.update(max_subjects_per_connection=1000000, subscribe_rate=1000000)
    with h.Nats() as nats, h.Gateway(nats.url, workers=2, max_streams=5000,
                                     history_keep_ms=500, **rate) as gw:
        paths = os.path.join(h.tempdir(), "paths")
        with open(paths, "w") as f:
            f.write("# one stream per subject\n")
            f.writelines("/events/%s\n" % s for s in subjects)

        big = h.Client(gw, ["--paths-file", paths, "--repeat-path", "/events/load.shared:%d" % N,
                            "--expect-events", "1", "--expect-total", str(N + N * SHARED)],
                       timeout_ms=60000)
        side = h.Client(gw, ["--connections", "8", "--path", "/events/load.shared",
                             "--path", "/events/load.s7", "--expect-events", "1",
                             "--expect-total", str(8 * (SHARED + 1))], timeout_ms=60000)
        big.wait_ready(timeout=30)
        side.wait_ready(timeout=30)
        h.log("all %d + 16 streams have their response headers" % (2 * N))

        # The SUBs reach nats-server a moment after the 200s; publishing
        # before would lose messages in NATS, not in the gateway.
        subs = nats.wait_subscriptions(subjects + ["load.shared"], timeout=20)
        h.log("nats-server shows %d subscriptions for the gateway" % len(subs))

        # While all streams are open: exactly one subscription per distinct
        # subject, on one connection.
        conns = nats.subscriptions()
        expect(len(conns) == 1, "expected one subscribing NATS connection (the gateway's), "
               "connz shows %d" % len(conns))
        subs = conns[0]
        dup = [s for s, c in collections.Counter(subs).items() if c > 1]
        expect(not dup, "duplicate subscriptions: %r" % dup[:10])
        expect(len(subs) == N + 1, "gateway holds %d subscriptions, expected %d"
               % (len(subs), N + 1))
        expect(set(subs) == set(subjects) | {"load.shared"}, "unexpected subjects: %r"
               % sorted(set(subs) - set(subjects))[:10])

        with nu.NatsClient(nats.port) as pub:
            for s in subjects:
                pub.pub(s, s)
            for n in range(1, SHARED + 1):
                pub.pub("load.shared", "shared-%d" % n, event="tick")
            pub.flush()
        h.log("published %d + %d messages" % (N, SHARED))

        rc, rep = big.result()
        h.log("big client: exit %d ok=%s streams=%s events=%s min=%s max=%s status=%s elapsed=%s ms"
              % (rc, rep.get("ok"), rep.get("streams"), rep.get("events"), rep.get("min_events"),
                 rep.get("max_events"), rep.get("status_counts"), rep.get("elapsed_ms")))
        expect(rep.get("connections") == 1, "expected one connection, report says %r"
               % rep.get("connections"))
        expect(rep.get("streams") == 2 * N, "expected %d streams, got %r" % (2 * N,
                                                                             rep.get("streams")))
        expect(rep.get("status_counts") == {"200": 2 * N},
               "status counts %r, expected all 200" % rep.get("status_counts"))
        expect(rep.get("connections_lost", 0) == 0, "the connection was lost")
        expect(rep.get("streams_reset", 0) == 0, "%r streams were reset" % rep.get("streams_reset"))
        expect(rc == 0 and rep.get("ok") is True and not rep.get("timed_out"),
               "client did not get every event: exit %d, %r events, min %r max %r"
               % (rc, rep.get("events"), rep.get("min_events"), rep.get("max_events")))

        per_stream = collections.defaultdict(list)
        for e in big.events():
            per_stream[e["stream"]].append((e["id"], e.get("event"), e["data"]))
        # Streams are numbered in opening order: the paths file, then the repeats.
        one_ids = []
        for i, s in enumerate(subjects):
            got = per_stream.get(i) or []
            expect(len(got) == 1 and got[0][1:] == (None, s) and h.ID_RE.fullmatch(got[0][0]),
                   "stream %d (%s) got %r, expected one event, data %r, with a numeric id"
                   % (i, s, got, s))
            one_ids.append(int(got[0][0]))
        # The shared streams all carry the same five messages, so the same ids.
        first = per_stream.get(N) or []
        expect([(ev, d) for _, ev, d in first] == [("tick", "shared-%d" % n)
                                                  for n in range(1, SHARED + 1)],
               "shared stream %d got %r, expected the five ticks in order" % (N, first))
        shared_ids = [h.parse_id(i)[0] for i, _, _ in first]
        expect(all(a < b for a, b in zip(shared_ids, shared_ids[1:])),
               "shared ids do not increase: %r" % shared_ids)
        bad = [i for i in range(N, 2 * N) if per_stream.get(i) != first]
        expect(not bad, "%d shared streams did not get exactly the same five events (ids "
               "included) as stream %d; stream %d got %r"
               % (len(bad), N, bad[0], per_stream.get(bad[0])) if bad else "")
        expect(len(per_stream) == 2 * N, "events on unexpected streams")
        # One process-wide counter numbers every message: no two share an id.
        all_ids = one_ids + shared_ids
        expect(len(set(all_ids)) == len(all_ids), "%d messages got only %d distinct ids"
               % (len(all_ids), len(set(all_ids))))
        gw.check_start_id(all_ids, published=len(all_ids))

        rc, rep = side.result()
        expect(rc == 0 and rep.get("ok") is True,
               "8-connection client: exit %d report %r" % (rc, rep))
        expect(rep.get("events") == 8 * (SHARED + 1),
               "8-connection client got %r events, expected %d" % (rep.get("events"),
                                                                   8 * (SHARED + 1)))
        side_ids = collections.defaultdict(list)
        for e in side.events():
            side_ids[e["stream"]].append(e["id"])
        want_side = {}
        for c in range(8):  # each connection: load.shared, then load.s7
            want_side[2 * c] = [i for i, _, _ in first]
            want_side[2 * c + 1] = [str(one_ids[7])]
        expect(dict(side_ids) == want_side, "8-connection client ids %r, expected %r"
               % (dict(side_ids), want_side))

        # Every stream has closed: once history-keep-ms has passed, the last
        # one on each subject has unsubscribed.
        h.wait_until(lambda: nats.subscriptions() == [], 10,
                     "the gateway to drop its subscriptions after all streams closed")

        gw.check_alive()
        gw.stop(timeout=15)


if __name__ == "__main__":
    h.main(test)
