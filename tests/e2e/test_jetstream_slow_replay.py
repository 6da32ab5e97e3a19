#!/usr/bin/env python3
"""A replay on a slow JetStream once returned only live events, without a reset.

What broke: `since=…: got 1 events, expected 6` — a since= replay while the
disk was busy delivered only the live event. The replay read cnats's
ordered consumer, which on a missed heartbeat remade itself after the
last message it had taken in, dropping the ones still queued; the replay
took what came next as complete. And a since= or earliest start that
JetStream did not answer ended the stream with an id of "now", so the
reconnect skipped everything asked for.

Contract: a replay that is slow, fails or times out either completes
exactly or begins with `event: reset` with a reason; a resume from an id
may instead end cleanly with the client's id intact. Never live only.

1. Short stall: a gateway follows slow.a (a live stream open, so the
   resumes below need a JetStream replay: the gateway has nothing from
   before it started). nats-server is SIGSTOPped; a Last-Event-ID resume,
   a since= start and an earliest start are opened; 4 s later SIGCONT;
   then one live event. Each stream holds exactly what it asked for, then
   the live event (or begins with a reset).
2. Long stall (past the replay's 30 s budget): the same three starts on a
   fresh gateway while nats-server is stopped for 34 s. The id resume
   either is exact or ends cleanly carrying the id it resumed from; since=
   and earliest either are exact or begin with `event: reset`
   (`replay-failed`) — never live events alone.
"""
import re
import signal
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import metrics_util as m  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

SUBJ = "slow.a"


def rfc3339(t):
    sec, frac = divmod(int(t * 1e6), 10 ** 6)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%06dZ" % frac


def events(data):
    """[(id, event, data)] of every event block in data (heartbeats skipped)."""
    blocks, _ = h.parse_blocks(data, strict=False)
    return [(b.id, b.event, "\n".join(b.data) if b.data else None)
            for b in blocks if b.is_event or b.event is not None]


def check(what, s, want, live, by_id=None, timeout=15):
    """s holds exactly want + live, or begins with a reset then live (or, by id, ends with it)."""
    last_live = live[-1][1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (
            b"data: %s\n\n" % last_live.encode()) not in s.data() and s.alive():
        time.sleep(0.05)
    time.sleep(0.3)
    got = events(s.data())
    plain = [(i, d) for i, e, d in got if e is None]
    resets = [d for _, e, d in got if e == "reset"]
    exp = [(str(q), d) for q, d in want + live]
    if plain == exp and not resets:
        h.log("%s: exact (%d events)" % (what, len(plain)))
        return "exact"
    if resets:
        expect(got[0][1] == "reset" and re.search(r'"reason":"[a-z-]+"', resets[0] or ""),
               "%s: a reset that is not first or has no reason: %r" % (what, got))
        expect(plain == [(str(q), d) for q, d in live],
               "%s: after the reset expected only the live events %r, got %r"
               % (what, live, plain))
        h.log("%s: reset %s, then live" % (what, resets[0]))
        return "reset"
    if by_id is not None and not s.alive() and not plain:
        ids = re.findall(rb"^id: ([^\n]*)$", s.data(), re.M)
        expect(ids and ids[-1].decode() == str(by_id),
               "%s: ended without events and without its id %d intact: %r"
               % (what, by_id, s.data()))
        h.log("%s: ended cleanly with its id %d intact" % (what, by_id))
        return "ended"
    raise h.TestFailure("%s: neither exact nor a reset: got %r, expected %r (or a reset, then "
                        "%r)" % (what, got, exp, live))


def open_three(gw, after_id, t_since):
    q = urllib.parse.quote(rfc3339(t_since), safe=":")
    return {
        "Last-Event-ID": h.CurlStream(gw, "/events/" + SUBJ, max_time=90,
                                      extra=["-H", "Last-Event-ID: %d" % after_id]),
        "since=": h.CurlStream(gw, "/events/%s?since=%s" % (SUBJ, q), max_time=90),
        "earliest": h.CurlStream(gw, "/events/%s?last_event_id=earliest" % SUBJ, max_time=90),
    }


def stall(node, seconds, gw, streams_opener):
    node.proc.send_signal(signal.SIGSTOP)
    h.log("SIGSTOP nats-server (pid %d) for %d s" % (node.proc.pid, seconds))
    try:
        streams = streams_opener()
        time.sleep(seconds)
    finally:
        node.proc.send_signal(signal.SIGCONT)
        h.log("SIGCONT nats-server")
    return streams


def run_case(node, c, hist, t_since, stop_s, tag):
    with h.Gateway(node.url, jetstream_streams="SLOW", heartbeat_ms=1000) as gw:
        follow = h.CurlStream(gw, "/events/" + SUBJ, max_time=90)
        follow.wait_start(timeout=10)
        streams = stall(node, stop_s, gw, lambda: open_three(gw, hist[0][0], t_since))
        # Fence: the gateway's live consumer is back (a fresh event reaches the follower).
        live = []
        deadline = time.monotonic() + 30
        while True:
            name = "%s-live%d" % (tag, len(live) + 1)
            seq = j.js_publish(c, SUBJ, name, timeout=20)
            live.append((seq, name))
            try:
                follow.wait_bytes(b"data: %s\n\n" % name.encode(), 2)
                break
            except h.TestFailure:
                expect(time.monotonic() < deadline, "%s: the follower got nothing 30 s after "
                       "SIGCONT" % tag)
        want = {"Last-Event-ID": hist[1:], "since=": [e for e in hist if e[2] >= t_since],
                "earliest": hist}
        outcomes = {}
        for what, s in streams.items():
            wanted = [(q, d) for q, d, _ in want[what]]
            outcomes[what] = check("%s %s" % (tag, what), s, wanted, live,
                                   by_id=hist[0][0] if what == "Last-Event-ID" else None)
            s.close()
        # sluice_jetstream_replay_failures_total (the SluiceJetStreamReplayFailures
        # alert): 0 when every replay was exact, else at least one.
        failures = m.metric(gw, "sluice_jetstream_replay_failures_total")
        if all(v == "exact" for v in outcomes.values()):
            expect(failures == 0, "%s: every replay exact, yet %d counted failed"
                   % (tag, failures))
        else:
            expect(failures >= 1, "%s: outcomes %r, yet no replay counted failed"
                   % (tag, outcomes))
        h.log("%s: sluice_jetstream_replay_failures_total %d" % (tag, failures))
        follow.close()
        gw.check_alive()
        gw.stop()
    return outcomes


def test():
    node = j.single_node()
    ports = [node.port]
    j.create_stream(ports, "SLOW", ["slow.>"])
    with nu.NatsClient(ports) as c:
        hist = []
        for i in range(1, 4):
            hist.append((j.js_publish(c, SUBJ, "h%d" % i), "h%d" % i, time.time()))
        time.sleep(0.3)
        t_since = time.time()
        time.sleep(0.3)
        for i in range(4, 7):
            hist.append((j.js_publish(c, SUBJ, "h%d" % i), "h%d" % i, time.time()))
        # Stored times are the server's, bracketed by ours with 0.3 s margins (same clock).
        short = run_case(node, c, hist, t_since, 4, "short stall")
        expect(all(v == "exact" for v in short.values()),
               "a 4 s stall should still replay exactly: %r" % short)
    with nu.NatsClient(ports) as c:
        long_ = run_case(node, c, hist, t_since, 34, "long stall")
        h.log("long stall outcomes: %r" % long_)
    node.kill()


if __name__ == "__main__":
    h.main(test)
