#!/usr/bin/env python3
"""A NATS outage in JetStream mode grew the gateway's threads without bound.

What broke: 200 streams on 200 JetStream-backed subjects over one h2
connection, nats-server killed for 15 s: the gateway went from 16 to 215
threads (cnats's ordered consumer remade itself on a new thread per reset,
each waiting in its own js_AddConsumer), and shutdown blocked while NATS
was down (one synchronous consumer delete per subscription).

1. JetStream mode: 200 streams on 200 subjects of one stream (one h2
   connection), one event each. nats-server is SIGKILLed for ~10 s; the
   gateway's thread count (/proc/PID/status), sampled every 0.5 s, stays
   within a constant (workers + replay threads + 14, and no more than a
   few above what it was before). Every stream stays open with heartbeats;
   a stream opened during the outage on a subject nobody follows yet, of
   the same JetStream stream, starts at once (the stream's one consumer
   has a position to start it from) and gets the first event published on
   its subject after the outage.
   nats-server comes back on the same port and store: an event published
   on each subject afterwards reaches every stream exactly once, with an
   id above the one before; a stream resuming from the id before the
   outage gets exactly what followed, and one resuming from before the
   outage on a second gateway (JetStream replay) as well.
2. nats-server killed again: SIGTERM makes the gateway exit 0 within
   drain-ms + 5 s, its streams ended cleanly.
3. Core NATS mode: the same 200 streams and outage keep the thread count
   bounded the same way.
"""
import re
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

N = 200
WORKERS = 2
REPLAYS = 2
OUTAGE_S = 10
DRAIN_MS = 1000
# main, workers, admin, the bus's flusher, JetStream and replay threads,
# cnats's reader, flusher, timers, delivery pool and reconnect threads, and
# some slack (transient reconnect threads): a constant, whatever the number of subjects.
BOUND = WORKERS + REPLAYS + 14


def threads(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("Threads:"):
                return int(ln.split()[1])
    raise AssertionError("no Threads line")


class Sampler(threading.Thread):
    """Samples a process's thread count every 0.5 s until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.samples.append(threads(self.pid))
            except OSError:
                return
            self.done.wait(0.5)

    def stop(self):
        self.done.set()
        self.join(5)
        return self.samples


def open_all(gw, subjects):
    conn = h2.H2Conn(gw, timeout=10)
    streams = conn.open_many(["/events/%s" % s for s in subjects])
    conn.wait(lambda c: all(b"\n\n" in s.body for s in streams), 30,
              "every stream's start (retry and id)")
    return conn, streams


def body_after(s, off):
    return bytes(s.body[off:])


def check_outage(gw, conn, streams, kill, restart, what, fresh_path=None):
    """Kills NATS for OUTAGE_S, sampling threads, and restarts it; checks the streams.

    Returns the body offsets before the outage and the sampler, still running
    (the recovery is sampled too; check_threads() stops it)."""
    before = threads(gw.proc.pid)
    sampler = Sampler(gw.proc.pid)
    sampler.before = before
    sampler.start()
    mark = len(gw.log())
    offs = [len(s.body) for s in streams]
    kill()
    gw.wait_log(r"nats: disconnected", timeout=10, start=mark)
    # A stream on a subject nobody follows yet, opened during the outage.
    fresh = h.CurlStream(gw, fresh_path, max_time=30) if fresh_path else None
    time.sleep(OUTAGE_S)
    gw.check_alive("during the NATS outage (%s)" % what)
    if fresh:
        # Its stream's feed has a position: it starts at once and stays, without an event.
        fresh.wait_start(timeout=5)
        expect(fresh.alive(), "%s: the stream opened during the outage ended: %r"
               % (what, fresh.data()))
        expect(b"data:" not in fresh.data() and b"event:" not in fresh.data(),
               "%s: the stream opened during the outage got %r" % (what, fresh.data()))
        h.log("%s: a stream on a new subject opened during the outage started (%r)"
              % (what, fresh.data()[:60]))
        sampler.fresh = fresh
    # Heartbeats went on, and no stream ended or was reset.
    closed = [s for s in streams if s.closed]
    expect(not closed, "%s: %d streams ended during the outage: %r" % (what, len(closed),
                                                                      closed[:3]))
    quiet = [s for s, o in zip(streams, offs) if b":\n\n" not in body_after(s, o)]
    expect(not quiet, "%s: %d streams got no heartbeat during the outage: %r"
           % (what, len(quiet), quiet[:3]))
    mark = len(gw.log())
    restart()
    gw.wait_log(r"nats: reconnected", timeout=20, start=mark)
    return offs, sampler


def check_threads(sampler, what):
    samples = sampler.stop()
    before = sampler.before
    peak = max(samples)
    h.log("%s: threads %d before the outage, peak %d over %d samples (bound %d)"
          % (what, before, peak, len(samples), BOUND))
    expect(peak <= BOUND, "%s: the gateway reached %d threads during a NATS outage (bound %d; "
           "before %d; samples %r)" % (what, peak, BOUND, before, samples))
    expect(peak <= before + 4, "%s: threads grew from %d to %d during a NATS outage"
           % (what, before, peak))


def publish_each(c, subjects, tag):
    for s in subjects:
        c.pub(s, ("%s-%s" % (tag, s)).encode())
    c.flush()


def wait_each(conn, streams, subjects, tag, offs, timeout):
    """Every stream gets its tag event after offs; returns {index: id}."""
    ids = {}
    for i, (s, subj) in enumerate(zip(streams, subjects)):
        needle = ("data: %s-%s\n\n" % (tag, subj)).encode()
        conn.wait_body(s, needle, timeout, offs[i])
        body = bytes(s.body[offs[i]:])
        events = re.findall(rb"id: (\d+)\ndata: ([^\n]*)\n\n", body)
        got = [d.decode() for _, d in events]
        expect(got == ["%s-%s" % (tag, subj)], "stream %d (%s): after the outage got %r, "
               "expected exactly %s-%s" % (i, subj, got, tag, subj))
        ids[i] = int(events[0][0])
    return ids


def case_jetstream():
    node = j.single_node()
    ports = [node.port]
    j.create_stream(ports, "OUT", ["out.>"])
    subjects = ["out.s%d" % i for i in range(N)]
    with nu.NatsClient(ports) as c, \
            h.Gateway(node.url, jetstream_streams="OUT", jetstream_replays=REPLAYS,
                      workers=WORKERS, heartbeat_ms=500, drain_ms=DRAIN_MS) as gw:
        conn, streams = open_all(gw, subjects)
        offs = [len(s.body) for s in streams]
        publish_each(c, subjects, "before")
        before = wait_each(conn, streams, subjects, "before", offs, 15)
        h.log("JetStream: %d streams each got their event; %d threads"
              % (N, threads(gw.proc.pid)))

        c.close()
        offs, sampler = check_outage(gw, conn, streams, node.kill, node.start, "JetStream",
                                     fresh_path="/events/out.fresh")

        # Every subject is served again: an event on each reaches its stream.
        with nu.NatsClient(ports) as c2:
            deadline = time.monotonic() + 30
            # JetStream is back once an acknowledged publish reaches subject 0's stream.
            probe = 0
            while True:
                probe += 1
                tag = "probe%d" % probe
                j.js_publish(c2, subjects[0], ("%s-%s" % (tag, subjects[0])).encode())
                needle = ("data: %s-%s\n\n" % (tag, subjects[0])).encode()
                try:
                    conn.wait_body(streams[0], needle, 1, offs[0])
                    break
                except h.TestFailure:
                    expect(time.monotonic() < deadline, "subject %s is not served 30 s after "
                           "NATS came back" % subjects[0])
            # Three more on one subject: a resume from before the outage must get them all.
            k = 7
            for i in range(1, 4):
                j.js_publish(c2, subjects[k], "mid%d-%s" % (i, subjects[k]))
            conn.wait_body(streams[k], ("data: mid3-%s\n\n" % subjects[k]).encode(), 20,
                           offs[k])
            # Published while other consumers may still be silent after the restart: a
            # lost one is remade from its last sequence, so the stored events reach it.
            offs = [len(s.body) for s in streams]
            publish_each(c2, subjects, "after")
            after = wait_each(conn, streams, subjects, "after", offs, 20)
            check_threads(sampler, "JetStream")
            bad = [i for i in range(N) if not after[i] > before[i]]
            expect(not bad, "ids after the outage not above those before: %r"
                   % [(before[i], after[i]) for i in bad[:5]])
            h.log("JetStream: every stream got its event after the outage")
            seq = j.js_publish(c2, "out.fresh", "fresh")
            sampler.fresh.wait_bytes(b"id: %d\ndata: fresh\n\n" % seq, 10)
            sampler.fresh.close()
            h.log("JetStream: the stream opened during the outage got its event")

            # Resume across the outage: from the id before it, on this gateway and another.
            subj = subjects[k]
            want = [m.decode() for m in re.findall(
                rb"data: ([^\n]*)\n\n", bytes(streams[k].body[streams[k].body.find(
                    ("data: before-%s" % subj).encode()):]))][1:]
            for g in (gw,):
                s = h.CurlStream(g, "/events/" + subj, max_time=20,
                                 extra=["-H", "Last-Event-ID: %d" % before[k]])
                s.wait_bytes(("data: after-%s\n\n" % subj).encode(), 15, 0)
                time.sleep(0.3)
                got = [m.decode() for m in re.findall(rb"data: ([^\n]*)\n\n", s.data())]
                expect(got == want and b"event: reset" not in s.data(),
                       "resume from %d across the outage: got %r, expected %r"
                       % (before[k], got, want))
                s.close()
            with h.Gateway(node.url, jetstream_streams="OUT", workers=1) as g2:
                s = h.CurlStream(g2, "/events/" + subj, max_time=20,
                                 extra=["-H", "Last-Event-ID: %d" % before[k]])
                s.wait_bytes(("data: after-%s\n\n" % subj).encode(), 15, 0)
                time.sleep(0.3)
                got = [m.decode() for m in re.findall(rb"data: ([^\n]*)\n\n", s.data())]
                expect(got == want and b"event: reset" not in s.data(),
                       "resume from %d on another gateway (replay): got %r, expected %r"
                       % (before[k], got, want))
                s.close()
            h.log("JetStream: resumes from before the outage got exactly %r" % want)

        # SIGTERM while NATS is down: bounded, clean.
        mark = len(gw.log())
        node.kill()
        gw.wait_log(r"nats: disconnected", timeout=10, start=mark)
        t0 = time.monotonic()
        gw.stop(timeout=DRAIN_MS / 1000 + 5 + h.exit_slack_s())
        took = time.monotonic() - t0
        h.log("JetStream: SIGTERM with NATS down: exit 0 after %.1f s" % took)
        conn.wait(lambda _: all(s.closed for s in streams), 5, "every stream closed")
        reset = [s for s in streams if s.reset_code not in (None, 0)]
        expect(not reset, "%d streams were reset at shutdown: %r" % (len(reset), reset[:3]))
        conn.close()
    node.kill()


def case_core():
    subjects = ["core.s%d" % i for i in range(N)]
    with h.Nats() as nats, h.Gateway(nats.url, workers=WORKERS, heartbeat_ms=500) as gw:
        conn, streams = open_all(gw, subjects)
        nats.wait_subscriptions(subjects[:1] + subjects[-1:])
        offs = [len(s.body) for s in streams]
        h.publish(nats.url, subjects[0], "before-%s" % subjects[0])
        conn.wait_body(streams[0], ("data: before-%s\n\n" % subjects[0]).encode(), 10,
                       offs[0])
        offs, sampler = check_outage(gw, conn, streams, nats.kill, nats.start, "core NATS")
        nats.wait_subscriptions(subjects[:1] + subjects[-1:], timeout=10)
        h.publish(nats.url, subjects[-1], "after-%s" % subjects[-1])
        conn.wait_body(streams[-1], ("data: after-%s\n\n" % subjects[-1]).encode(), 10,
                       offs[-1])
        check_threads(sampler, "core NATS")
        conn.close()
        gw.stop()


def test():
    case_jetstream()
    case_core()


if __name__ == "__main__":
    h.main(test)
