#!/usr/bin/env python3
"""Issue 3 (e): clients that stop reading cannot grow the gateway's memory.

Three clients on the same 10 subjects:
  - a raw one (h2_util.H2Conn, HTTP/2 frames by hand) that opens 20
    streams with the largest windows HTTP/2 allows, a small receive buffer,
    and then never reads its socket at all: the gateway's TLS writes block
    on the socket itself (the soft limit: it stops reading that connection);
  - a sluice-client with 20 streams frozen with SIGSTOP: its flow-control
    windows fill and stay shut;
  - a well-behaved sluice-client, 10 streams, one per subject.
Then ~50 MB of distinct 10 KB events are published across the 10 subjects.

The gateway runs with --conn-queue-bytes 4 MiB and --history-bytes 256 KiB
per subject. Its RSS (sampled every 20 ms from /proc) may grow by at most
the two stuck connections' caps plus the 10 histories plus a margin for
allocator, TLS and NATS buffers: far below the ~50 MB each stuck client
would pin without caps. The well-behaved client receives every event, in
order; the publisher stays at most AHEAD events ahead of it (keeping up
at full rate would need spare CPU, not just a sound gateway), so it must
make progress while the others are stuck. The gateway logs a slow-consumer cut for each of the 40 stuck
streams.

Then the stuck clients read again (SIGCONT; the raw one reads until every
stream has closed). Every stuck stream was ended by the gateway: with
END_STREAM after the final ": slow consumer, reconnect to resume" comment,
or with RST_STREAM(CANCEL) where its window was shut; what each received is
an in-order prefix of its subject's events. The gateway is still alive.
"""
import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

SUBJECTS = ["stuck.%d" % i for i in range(10)]
PER_SUBJECT = 500            # events per subject after the warm-up
WARM = 5                     # events per subject before the stuck client freezes
EVENT_BYTES = 10000
RATE_BYTES = 25 << 20        # published per second
CONN_CAP = 4 << 20
HISTORY_BYTES = 256 << 10
MARGIN = 16 << 20            # allocator arenas, TLS and NATS buffers
STUCK_STREAMS = 2 * len(SUBJECTS)
AHEAD = 12                   # events per subject the publisher may be ahead of the good client
GOOD_WAIT_S = 30             # how long the good client may make no progress


def payload(subject_no, n):
    return ("%d %d " % (subject_no, n)).ljust(EVENT_BYTES, "s")


class RssSampler(threading.Thread):
    def __init__(self, gw):
        super().__init__(daemon=True)
        self.gw = gw
        self.max = 0
        self.samples = 0
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                self.max = max(self.max, self.gw.rss_bytes())
                self.samples += 1
            except (OSError, h.TestFailure):
                return
            self.stop_flag.wait(0.02)

    def stop(self):
        self.stop_flag.set()
        self.join(timeout=5)


def stuck_h2(gw, paths):
    """An h2 client that opens paths with the largest windows HTTP/2 allows and a small
    receive buffer (the socket, not a window, stops the gateway), then reads nothing
    at all until drain(). Returns (connection, its streams)."""
    c = h2.H2Conn(gw, rcvbuf=16384, paused=True)
    return c, c.open_many(paths)


def drain(c, streams, timeout):
    """Reads again until every stream has closed; returns {id: (body, end)} where end is
    "ended" or "reset <code>", or None if the stream did not close in time."""
    c.paused.clear()
    c.wait(lambda x: all(s.closed for s in streams), timeout)
    with c.cond:
        return {s.id: (bytes(s.body), "ended" if s.ended_at is not None else
                       "reset %d" % s.reset_code if s.reset_code is not None else None)
                for s in streams}


def good_events(raw_path):
    """About how many events the good client's stream 0 has written to its raw dump.

    Slightly over (the start item and id lines count as event bytes), and
    behind by at most its stdio buffer: AHEAD allows for both.
    """
    try:
        return os.path.getsize(raw_path) // EVENT_BYTES
    except OSError:
        return 0


def check_prefix(body, subject_no, what, complete):
    blocks, rest = h.parse_blocks(body)
    expect(blocks and h.START_RE.fullmatch(blocks[0].raw), "%s: no start item: %r"
           % (what, body[:80]))
    evs = [b for b in blocks[1:] if b.is_event]
    want = [[payload(subject_no, n)] for n in range(1, len(evs) + 1)]
    got = [b.data for b in evs]
    if got != want:
        k = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
        raise h.TestFailure("%s: event %d of %d is not the next one in order: data %r..., "
                            "expected %r... (a stream must carry an in-order prefix of its "
                            "subject's events, byte for byte)"
                            % (what, k + 1, len(got), str(got[k])[:60], str(want[k])[:60]))
    ids = [h.parse_id(b.id)[0] for b in evs]
    expect(all(a < b for a, b in zip(ids, ids[1:])), "%s: ids do not increase" % what)
    if complete:
        expect(len(evs) == WARM + PER_SUBJECT, "%s: %d events, expected %d"
               % (what, len(evs), WARM + PER_SUBJECT))
    return blocks, rest


def check_ended(body, end, subject_no, what):
    """A stuck stream's fate: an in-order prefix, then the final comment or a CANCEL."""
    blocks, rest = check_prefix(body, subject_no, what, complete=False)
    if end == "ended":
        expect(rest == b"" and blocks[-1].comments == ["slow consumer, reconnect to resume"]
               and not blocks[-1].is_event,
               "%s ended without the final slow-consumer comment: %r" % (what, body[-80:]))
    else:
        expect(end == "reset %d" % h2.CANCEL, "%s: %s, expected END_STREAM after the final "
               "comment or RST_STREAM(CANCEL)" % (what, end or "still open"))
    return len([b for b in blocks if b.is_event])


def test():
    with h.Nats() as nats, h.Gateway(nats.url, conn_queue_bytes=CONN_CAP,
                                     history_bytes=HISTORY_BYTES) as gw:
        d = h.tempdir()
        stuck_raw = os.path.join(d, "stuck0.raw")
        good_raw = os.path.join(d, "good0.raw")
        stuck_paths = ["/events/" + s for s in SUBJECTS for _ in range(2)]
        stuck = h.Client(gw, sum((["--path", p] for p in stuck_paths), [])
                         + ["--dump-raw", "0", "--raw-out", stuck_raw, "--verbose"],
                         timeout_ms=60000, events_out=False)
        good = h.Client(gw, sum((["--path", "/events/" + s] for s in SUBJECTS), [])
                        + ["--expect-events", str(WARM + PER_SUBJECT),
                           "--dump-raw", "0", "--raw-out", good_raw],
                        timeout_ms=60000, events_out=False)
        stuck.wait_ready(timeout=15)
        good.wait_ready(timeout=15)
        rawc, raw_streams = stuck_h2(gw, stuck_paths)
        nats.wait_subscriptions(SUBJECTS)
        # The raw client cannot tell us its streams are answered; the gateway
        # can: a bounded wait until it counts every stream open (a 0.3 s
        # sleep stood here).
        mu.wait_metric(gw, "sluice_streams_open", 2 * STUCK_STREAMS + len(SUBJECTS))
        delivered = mu.value(mu.scrape(gw), "sluice_events_delivered_total")

        with nu.NatsClient(nats.port) as pub:
            # Warm-up: every connection has carried data before the freeze.
            for n in range(1, WARM + 1):
                for i, s in enumerate(SUBJECTS):
                    pub.pub(s, payload(i, n))
            pub.flush()
            # Every stream's warm-up written out before the freeze: a bounded
            # wait on the gateway's count (a 0.5 s sleep stood here).
            warm = WARM * (2 * STUCK_STREAMS + len(SUBJECTS))
            h.wait_until(lambda: mu.value(mu.scrape(gw), "sluice_events_delivered_total")
                         >= delivered + warm, 15, "the %d warm-up events written" % warm)
            os.kill(stuck.proc.pid, signal.SIGSTOP)
            h.log("sluice-client pid %d stopped with SIGSTOP; the raw client never reads"
                  % stuck.proc.pid)
            try:
                base = gw.rss_bytes()
                sampler = RssSampler(gw)
                sampler.start()
                mark = len(gw.log())
                t0 = time.monotonic()
                sent = waits = 0
                for n in range(WARM + 1, WARM + PER_SUBJECT + 1):
                    for i, s in enumerate(SUBJECTS):
                        pub.pub(s, payload(i, n))
                        sent += EVENT_BYTES
                    if n % 10 == 0:
                        pub.flush()
                        due = t0 + sent / RATE_BYTES
                        if due > time.monotonic():
                            time.sleep(due - time.monotonic())  # pacing at RATE_BYTES
                        # The good client must keep up, which at RATE_BYTES needs
                        # spare CPU: on a busy machine it is itself a slow consumer
                        # and rightly cut. So the publisher stays at most AHEAD
                        # events (well under its stream cap) ahead of it, and the
                        # assertion is structural: while the others are stuck, it
                        # still makes progress.
                        if good_events(good_raw) < n - AHEAD:
                            waits += 1
                            h.wait_until(lambda: good_events(good_raw) >= n - AHEAD
                                         or good.proc.poll() is not None, GOOD_WAIT_S,
                                         "the well-behaved client to get event %d while the "
                                         "others are stuck" % (n - AHEAD))
                pub.flush()
                h.log("published %.1f MB in %.1f s (%d waits for the good client)"
                      % (sent / 1e6, time.monotonic() - t0, waits))

                rc, rep = good.result()
                h.log("good client: exit %d, events %s, min %s, max %s, elapsed %s ms"
                      % (rc, rep.get("events"), rep.get("min_events"), rep.get("max_events"),
                         rep.get("elapsed_ms")))
                # A bounded wait for the cuts the checks below count (a 0.3 s
                # sleep stood here); the sampler runs on meanwhile.
                cut_re = re.compile(r"conn \d+ stream \d+: slow consumer: [a-z ]+ full")
                try:
                    h.wait_until(lambda: len(cut_re.findall(gw.log()[mark:]))
                                 >= 2 * STUCK_STREAMS, 10, "a cut for every stuck stream")
                except h.TestFailure as e:
                    h.log(str(e))  # the check below names what the log has
                sampler.stop()
                log = gw.log()[mark:]
                gw.check_alive("while clients were stuck")
                grew = sampler.max - base
                bound = 2 * CONN_CAP + len(SUBJECTS) * HISTORY_BYTES + MARGIN
                h.log("gateway RSS %.1f MiB before, peak %.1f MiB (%d samples): grew %.1f MiB, "
                      "bound %.1f MiB" % (base / 2**20, sampler.max / 2**20, sampler.samples,
                                          grew / 2**20, bound / 2**20))
                print("stuck_reader_rss_growth_bytes=%d" % grew, flush=True)

                expect(rc == 0 and rep.get("ok") is True
                       and rep.get("events") == len(SUBJECTS) * (WARM + PER_SUBJECT)
                       and rep.get("streams_reset") == 0 and rep.get("streams_ended") == 0,
                       "the well-behaved client on another connection did not get every event "
                       "while clients were stuck: %r" % rep)
                with open(good_raw, "rb") as f:
                    check_prefix(f.read(), 0, "well-behaved client, stream 0", complete=True)

                cuts = re.findall(r"conn (\d+) stream (\d+): slow consumer: ([a-z ]+) full", log)
                per_conn = {}
                for c, sid, _ in cuts:
                    per_conn.setdefault(c, set()).add(sid)
                h.log("slow-consumer cuts: %r, caps %s"
                      % ({c: len(v) for c, v in per_conn.items()},
                         sorted({cap for _, _, cap in cuts})))
                expect(len(cuts) == 2 * STUCK_STREAMS and len(per_conn) == 2
                       and all(len(v) == STUCK_STREAMS for v in per_conn.values()),
                       "expected one cut for each of the %d streams of each stuck client; the "
                       "log has %r" % (STUCK_STREAMS, cuts))
                if h.sanitized():
                    h.log("RSS bound not checked: the gateway is built with AddressSanitizer, "
                          "whose quarantine holds freed memory")
                else:
                    expect(grew <= bound, "the gateway's RSS grew by %.1f MiB while clients "
                           "were stuck, more than the caps allow (%.1f MiB)"
                           % (grew / 2**20, bound / 2**20))
            finally:
                if stuck.proc.poll() is None:
                    os.kill(stuck.proc.pid, signal.SIGCONT)

        h.log("the stuck clients read again")
        got = drain(rawc, raw_streams, timeout=15)
        gw.check_alive("after the raw client read again")
        counts = []
        for k, sid in enumerate(s.id for s in raw_streams):
            body, end = got[sid]
            counts.append(check_ended(body, end, k // 2, "raw client stream %d" % sid))
        h.log("raw client: every stream ended by the gateway (%s) after %d..%d events"
              % (", ".join(sorted({e for _, e in got.values()})), min(counts), max(counts)))
        rawc.close()

        rc, rep = stuck.result()
        h.log("sluice-client: exit %d, events %s, ended %s, reset %s, lost %s"
              % (rc, rep.get("events"), rep.get("streams_ended"), rep.get("streams_reset"),
                 rep.get("connections_lost")))
        gw.check_alive("after the stopped client read again")
        expect(rep.get("connections_lost") == 0, "the stopped client's connection was lost: %r"
               % rep)
        per = rep.get("per_stream") or []
        expect(len(per) == STUCK_STREAMS, "report lacks per_stream: %r" % rep)
        bad = [p for p in per if not (p.get("ended") or p.get("reset_code") == h2.CANCEL)]
        expect(not bad, "stopped client's streams not ended by the gateway (END_STREAM or "
               "h2.CANCEL): %r" % bad[:3])
        expect(max(p.get("events", 0) for p in per) < WARM + PER_SUBJECT,
               "a stopped stream got every event although it never read")
        with open(stuck_raw, "rb") as f:
            check_ended(f.read(), "ended" if per[0].get("ended") else
                        "reset %s" % per[0].get("reset_code"), 0, "stopped client stream 0")
        gw.stop(timeout=15)


if __name__ == "__main__":
    h.main(test)
