#!/usr/bin/env python3
"""Issue 3 (c): Last-Event-ID resume loses nothing and repeats nothing.

1. curl receives events 1-50 (payloads carry the number) and disconnects;
   51-100 are published while nobody is connected (the subject's
   subscription and history outlive its last stream by history-keep-ms).
   A reconnect with Last-Event-ID = the id of event 50 starts with that
   id and receives exactly 51-100 in order, then the live event 101. A
   first connect with ?last_event_id= gets the same replay with the same
   ids, and a Last-Event-ID header wins over the query.
2. sluice-pub publishes at 1 kHz (--seq) while a curl client connects,
   disconnects after ~0.8 s, waits a moment and reconnects with the last
   id it saw (header or query), three times, then stays until the end.
   All connections together received a gapless, duplicate-free run of
   sequence numbers from the first one on, with ids increasing across
   the seams.
3. A sluice-client that saw no event (only the start item's id) is
   disconnected; events published meanwhile reach it when it reconnects
   with that start id.
"""
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

RATE = 1000
CYCLES = 3


def events_of(body, what):
    """(position, data) for each event block of a body after its start item; rest ignored."""
    blocks, _ = h.parse_blocks(body)
    out = []
    for b in blocks:
        expect(not b.comments or not b.is_event, "%s: comment inside an event %r" % (what, b))
        if not b.is_event:
            expect(b.id is None and b.event is None, "%s: unexpected block %r" % (what, b))
            continue  # a heartbeat
        expect(b.event is None and b.id is not None and len(b.data) == 1,
               "%s: event block %r is not one id and one data line" % (what, b))
        out.append((h.parse_id(b.id)[0], b.data[0]))
    return out


def check_seq(evs, first, last, what):
    got = [d for _, d in evs]
    want = [str(n) for n in range(first, last + 1)]
    expect(got == want, "%s: got %d events %s...%s, expected exactly %d..%d in order"
           % (what, len(got), got[:3], got[-3:], first, last))
    ids = [p for p, _ in evs]
    expect(all(a < b for a, b in zip(ids, ids[1:])), "%s: ids do not increase: %r" % (what, ids))


def test_basic(nats, gw, pub):
    subj = "resume.basic"
    s = h.CurlStream(gw, "/events/" + subj, max_time=30)
    _, (start,), off = s.wait_start(timeout=10)
    gw.check_start_id([start])
    for n in range(1, 51):
        pub.pub(subj, str(n))
    pub.flush()
    end = s.wait_bytes(b"data: 50\n\n", 10, off)
    first = events_of(s.data()[off:end], "first connection")
    check_seq(first, 1, 50, "first connection")
    expect(first[0][0] > start, "first event id %d is not above the start id %d"
           % (first[0][0], start))
    s.close()
    id50 = first[-1][0]
    h.log("received 1-50 (id of 50: %d), disconnected" % id50)

    for n in range(51, 101):
        pub.pub(subj, str(n))
    pub.flush()

    # The header form, as a reconnecting EventSource sends it.
    s = h.CurlStream(gw, "/events/" + subj, max_time=30, extra=["-H", "Last-Event-ID: %d" % id50])
    _, (rstart,), off = s.wait_start(timeout=10)
    expect(rstart == id50, "a resumed stream starts at id %d, expected the id it resumed "
           "from (%d)" % (rstart, id50))
    end = s.wait_bytes(b"data: 100\n\n", 10, off)
    replay = events_of(s.data()[off:end], "header resume")
    check_seq(replay, 51, 100, "resume with Last-Event-ID of event 50")
    expect(replay[0][0] > id50, "replayed ids %d... are not above %d" % (replay[0][0], id50))
    pub.pub(subj, "101")
    pub.flush()
    end2 = s.wait_bytes(b"data: 101\n\n", 10, end)
    live = events_of(s.data()[end:end2], "live after replay")
    check_seq(live, 101, 101, "live event after the replay")
    expect(live[0][0] > replay[-1][0], "live id %d is not above the last replayed %d"
           % (live[0][0], replay[-1][0]))
    # Fence: a marker published after 101 is the next block; a late repeat
    # of the replay (or anything else) would come before it.
    extra, _, _ = h.read_until_marker(s, lambda m: (pub.pub(subj, m), pub.flush()),
                                      start=end2, what="after event 101")
    expect(not extra, "blocks after event 101: %r" % [b.raw for b in extra])
    s.close()
    h.log("Last-Event-ID resume: exactly 51-100, then live 101")

    # The query form for a first connect: the same events with the same ids.
    s = h.CurlStream(gw, "/events/%s?last_event_id=%d" % (subj, id50), max_time=30)
    _, (qstart,), off = s.wait_start(timeout=10)
    end = s.wait_bytes(b"data: 101\n\n", 10, off)
    q = events_of(s.data()[off:end], "query resume")
    expect(qstart == id50 and q == replay + live,
           "?last_event_id=%d gave start %d and %d events %r..., expected the same 51-101 with "
           "the same ids as the header resume" % (id50, qstart, len(q), q[:2]))
    s.close()

    # The header wins over the query (README, Endpoints).
    s = h.CurlStream(gw, "/events/%s?last_event_id=garbage" % subj, max_time=30,
                     extra=["-H", "Last-Event-ID: %d" % replay[-1][0]])
    _, (bstart,), off = s.wait_start(timeout=10)
    end = s.wait_bytes(b"data: 101\n\n", 10, off)
    both = events_of(s.data()[off:end], "header and query")
    expect(bstart == replay[-1][0] and both == live,
           "Last-Event-ID (event 100) with ?last_event_id=garbage: start %d, events %r, "
           "expected only event 101" % (bstart, both))
    s.close()


def test_cycles(nats, gw):
    subj = "resume.rate"
    count = int(RATE * (CYCLES * 0.9 + 1.5))
    # The first stream subscribes; the publisher starts once it is live.
    s = h.CurlStream(gw, "/events/" + subj, max_time=30)
    _, (start,), off = s.wait_start(timeout=10)
    cmd = [h.tool("SLUICE_PUB", "sluice-pub"), "--nats", nats.url, "--subject", subj,
           "--count", str(count), "--rate", str(RATE), "--seq"]
    pubp = h.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    got = []  # (position, seq) over all connections
    seams = []
    last_id = start
    try:
        for cycle in range(CYCLES + 1):
            final = cycle == CYCLES
            if final:
                # A fence: on a loaded machine the publisher may be done before this last
                # connection opens (its last events then came on an earlier one). Once it
                # is, one more event marks the end of what this connection must hold.
                rc = pubp.wait(timeout=60)
                expect(rc == 0, "sluice-pub exited %d: %s"
                       % (rc, pubp.stderr.read().decode()[-300:]))
                with nu.NatsClient(nats.port) as fence:
                    fence.pub(subj, str(count + 1))
                    fence.flush()
                end = s.wait_bytes(b"data: %d\n\n" % (count + 1), 15, off)
            else:
                time.sleep(0.8)  # the connection's lifetime: part of the test
                end = len(s.data())
            evs = events_of(s.data()[off:end], "connection %d" % cycle)
            s.close()
            seams.append(len(got))
            got += [(p, int(d)) for p, d in evs]
            if evs:
                last_id = evs[-1][0]
            if final:
                break
            time.sleep(0.15)  # events published meanwhile must come from history
            if cycle % 2 == 0:
                s = h.CurlStream(gw, "/events/" + subj, max_time=30,
                                 extra=["-H", "Last-Event-ID: %d" % last_id])
            else:
                s = h.CurlStream(gw, "/events/%s?last_event_id=%d" % (subj, last_id),
                                 max_time=30)
            _, (rstart,), off = s.wait_start(timeout=10)
            expect(rstart == last_id, "reconnect %d starts at %d, expected %d"
                   % (cycle + 1, rstart, last_id))
    finally:
        h.kill_proc(pubp)
        s.close()

    seqs = [q for _, q in got]
    expect(seqs, "no events received")
    first = seqs[0]
    want = list(range(first, count + 2))  # the publisher's, then the fence
    if seqs != want:
        dup = len(seqs) - len(set(seqs))
        missing = sorted(set(want) - set(seqs))
        bad = next((i for i, (a, b) in enumerate(zip(seqs, want)) if a != b),
                   min(len(seqs), len(want)))
        raise h.TestFailure("sequence over %d connections is not gapless and duplicate-free "
                            "from %d to %d: %d received, %d duplicates, %d missing (first %r); "
                            "first difference at index %d (seams at %r): %r"
                            % (CYCLES + 1, first, count + 1, len(seqs), dup, len(missing),
                               missing[:5], bad, seams, seqs[max(0, bad - 3):bad + 3]))
    ids = [p for p, _ in got]
    expect(all(a < b for a, b in zip(ids, ids[1:])), "ids do not increase across the seams")
    per_conn = [seams[i + 1] - seams[i] for i in range(len(seams) - 1)] + [len(got) - seams[-1]]
    h.log("1 kHz: %d events %d..%d over %d connections (%r each), gapless, no duplicates"
          % (len(seqs), first, count + 1, CYCLES + 1, per_conn))
    expect(first < RATE, "the first connection only saw event %d" % first)


def test_no_event(nats, gw, pub):
    subj = "resume.quiet"
    # No expectation: the run ends at its timeout, with the stream still open.
    c = h.Client(gw, ["--path", "/events/" + subj], timeout_ms=4000)
    c.wait_ready(timeout=10)
    rc, rep = c.result()
    st = (rep.get("per_stream") or [{}])[0]
    start = st.get("last_id")
    expect(rep.get("events") == 0 and start and h.ID_RE.fullmatch(start),
           "a stream with no event should still record its start id: report %r" % rep)
    gw.check_start_id(h.parse_id(start))
    for n in range(1, 4):
        pub.pub(subj, "quiet-%d" % n)
    pub.flush()
    c = h.Client(gw, ["--path", "/events/" + subj, "--header", "last-event-id: " + start,
                      "--expect-total", "3"], timeout_ms=10000)
    rc, rep = c.result()
    evs = c.events()
    expect(rc == 0 and [e["data"] for e in evs] == ["quiet-1", "quiet-2", "quiet-3"],
           "reconnecting with the start id %s: exit %d, events %r" % (start, rc, evs))
    ids = [h.parse_id(e["id"])[0] for e in evs]
    expect(int(start) < ids[0] < ids[1] < ids[2], "ids %r do not increase from %s"
           % (ids, start))
    h.log("a client that saw no event resumed from its start id %s: got the 3 events" % start)


def test():
    # 1 kHz for several seconds: the default 1,000 events of history are one second, and
    # a loaded machine can take longer than that to reconnect (a reset, rightly, not a
    # resume). 60,000 keep a minute, so every reconnect here must be exact.
    with h.Nats() as nats, h.Gateway(nats.url, ["--history-events", "60000"]) as gw, \
            nu.NatsClient(nats.port) as pub:
        test_basic(nats, gw, pub)
        test_cycles(nats, gw)
        test_no_event(nats, gw, pub)
        gw.check_alive()
        expect(not re.search(r"slow consumer", gw.log()), "a stream was cut as a slow consumer")
        gw.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=90)
