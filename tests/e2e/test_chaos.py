#!/usr/bin/env python3
"""Chaos: 10,000 events at 1 kHz reach one resuming client exactly once, in
order, across a killed gateway, a killed NATS node and a rolling restart.

Set-up: a 3-node nats-server cluster with JetStream and an R3 stream CHAOS
on `chaos.>`; gateways A and B, each with --jetstream-streams CHAOS and
--nats naming all three nodes. One client (curl --http2 -N, js_util's
ResumingClient) streams chaos.feed from A; whenever its response ends it
reconnects to the next live gateway with Last-Event-ID: <last id seen>.

An acknowledged publisher (JetStream publishes with Nats-Msg-Id, resent
until acked, reconnecting to another node if its own dies) sends "1" ..
"10000" at 1 kHz. Meanwhile, at fixed times after the first publish:
  (a) 1.5 s: SIGKILL the gateway the client is on (A); it resumes on B;
  (b) 3.5 s: SIGKILL the NATS node B is connected to (found from B's own
      sockets), so B's NATS connection and its JetStream consumer move;
  (c) 5.5 s: start A again; 7.0 s: SIGTERM B (drain, exit 0), the client
      moves to the new A; then start B again;
  (d) 8.5 s: restart the killed NATS node (same ports and store).
Then a marker is published after the last acknowledged event (a fence)
and the client reads until it: whatever a duplicate or gap would leave is
on the stream before it.

Pass: every acked number received exactly once, each with the id its
PubAck gave (the stream sequence), ids strictly increasing, no `event:
reset`, no other block, the marker exactly once, the stream holding
exactly 10,000 messages and the marker. One summary line: published,
received, lost, duplicated, out of order, the longest time between
consecutive events, reconnects.
"""
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

COUNT = 10000
RATE = 1000
STREAM = "CHAOS"
SUBJECT = "chaos.feed"
# seconds after the first publish
T_KILL_GATEWAY = 1.5
T_KILL_NODE = 3.5
T_START_A = 5.5
T_DRAIN_B = 7.0
T_RESTART_NODE = 8.5


def analyse(client, pub, fence):
    """The summary figures and a list of defects.

    fence is (data, sequence) of the marker published after the last acked
    event: it must have arrived exactly once with its sequence as id, and
    is then left out of the figures.
    """
    events, resets, others, conns = client.snapshot()
    acked = dict(pub.acked)
    defects = []
    marks = [(eid, ci) for eid, data, _, ci in events if data == fence[0]]
    if [eid for eid, _ in marks] != [str(fence[1])]:
        defects.append("the fence marker (sequence %d) arrived as %r, expected once"
                       % (fence[1], marks))
    events = [e for e in events if e[1] != fence[0]]
    counts = {}
    wrong_id = []
    not_acked = []
    for eid, data, _, ci in events:
        try:
            n = int(data)
        except ValueError:
            not_acked.append((eid, data, ci))
            continue
        counts[n] = counts.get(n, 0) + 1
        if n not in acked:
            not_acked.append((eid, data, ci))
        elif eid != str(acked[n]):
            wrong_id.append((n, eid, acked[n], ci))
    lost = sorted(n for n in acked if n not in counts)
    dups = sorted(n for n, k in counts.items() if k > 1)
    ids = []
    for eid, _, _, ci in events:
        try:
            ids.append((int(eid), ci))
        except (TypeError, ValueError):
            ids.append((-1, ci))
    ooo = [(i, ids[i - 1], ids[i]) for i in range(1, len(ids)) if ids[i][0] <= ids[i - 1][0]]
    times = [t for _, _, t, _ in events]
    gaps = [(times[i] - times[i - 1], i) for i in range(1, len(times))]
    gap, gap_at = max(gaps) if gaps else (0.0, 0)
    if lost:
        defects.append("%d lost, first %r" % (len(lost), lost[:10]))
    if dups:
        defects.append("%d duplicated, first %r" % (len(dups), dups[:10]))
    if ooo:
        defects.append("%d out of order, first (index, (id, conn) before, after) %r"
                       % (len(ooo), ooo[:5]))
    if wrong_id:
        defects.append("%d events whose id is not their PubAck sequence, first "
                       "(n, id, seq, conn) %r" % (len(wrong_id), wrong_id[:5]))
    if not_acked:
        defects.append("%d events never published/acked, first %r"
                       % (len(not_acked), not_acked[:5]))
    if resets:
        defects.append("%d resets: %r" % (len(resets), [(b.raw, ci) for b, ci in resets[:3]]))
    if others:
        defects.append("%d unexpected blocks: %r" % (len(others),
                                                    [(b.raw, ci) for b, ci in others[:3]]))
    fig = {"published": len(acked), "received": len(events), "lost": len(lost),
           "duplicated": len(dups), "out_of_order": len(ooo), "gap": gap,
           "gap_at": gap_at, "reconnects": max(0, len(conns) - 1)}
    if 0 < gap_at < len(events):
        fig["gap_around"] = (events[gap_at - 1][1], events[gap_at][1],
                             events[gap_at - 1][3], events[gap_at][3])
    return fig, defects


def test():
    cluster = j.JsCluster().start()
    j.create_stream(cluster.ports, STREAM, ["chaos.>"], replicas=3)
    flags = dict(jetstream_streams=STREAM, drain_ms=1500)
    gws = [h.Gateway(cluster.url, **flags), h.Gateway(cluster.url, **flags)]
    client = j.ResumingClient(lambda: list(gws), "/events/" + SUBJECT, deadline_s=150,
                              delay=0.2)
    pub = j.AckPublisher(cluster.ports, SUBJECT, COUNT, rate=RATE, give_up_s=90)
    timeline = []

    def note(what):
        t = time.monotonic() - pub.t_start
        sending = pub.t_all_sent is None
        timeline.append("%.1f s %s%s" % (t, what, "" if sending else " (after the last publish)"))
        h.log("chaos at %.2f s: %s (%d acked so far, %d events received)"
              % (t, what, len(pub.acked), len(client.events)))

    def at(t):
        left = pub.t_start + t - time.monotonic()
        if left > 0:
            time.sleep(left)

    try:
        client.start()
        client.wait_connected(gws[0], timeout=15)
        pub.start()
        h.wait_until(lambda: pub.t_start is not None, 10, "the publisher's first connect")

        # (a) the client's gateway dies; it resumes on the other.
        at(T_KILL_GATEWAY)
        victim = client.connected_to()
        expect(victim is gws[0], "the client is not on gateway A before the kill")
        h.kill_proc(victim.proc)
        note("SIGKILL gateway A (port %d)" % victim.port)
        client.wait_connected(gws[1], timeout=10)
        note("client resumed on gateway B (port %d)" % gws[1].port)

        # (b) the NATS node B uses dies.
        at(T_KILL_NODE)
        node = j.gateway_nats_node(gws[1], cluster)
        mark = len(gws[1].log())
        node.kill()
        note("SIGKILL nats-server %s, gateway B's node (publisher on port %s)"
             % (node.name, pub.conn.port if pub.conn else "?"))

        # (c) rolling restart: A comes back, B drains, the client moves, B comes back.
        at(T_START_A)
        gws[0] = h.Gateway(cluster.url, **flags)
        note("gateway A started again (port %d)" % gws[0].port)
        at(T_DRAIN_B)
        b = gws[1]
        note("SIGTERM gateway B (drain)")
        b.stop(timeout=15)
        b_log = b.log()
        note("gateway B drained and exited 0")
        client.wait_connected(gws[0], timeout=10)
        note("client resumed on the new gateway A")
        gws[1] = h.Gateway(cluster.url, **flags)
        note("gateway B started again (port %d)" % gws[1].port)

        # (d) the node comes back with its store.
        at(T_RESTART_NODE)
        node.start()
        note("nats-server %s restarted" % node.name)

        expect(pub.done.wait(90), "the publisher did not finish within 90 s: " + pub.summary())
        h.log(pub.summary())
        expect(pub.error is None, "publisher failed: %s" % pub.error)
        expect(len(pub.acked) == COUNT, "only %d of %d publishes were acknowledged"
               % (len(pub.acked), COUNT))
        seqs = set(pub.acked.values())
        expect(len(seqs) == COUNT, "%d acked numbers share %d sequences"
               % (COUNT, len(seqs)))
        last_seq = max(seqs)

        # Fence: a marker published after the last acknowledged event. The
        # stream orders it after every event, so a late duplicate or a late
        # gap-filler arrives before it; once it is in, nothing more may come.
        # (A sleep here let a duplicate later than the sleep pass.)
        marker = "fence"
        with nu.NatsClient(cluster.ports, name="sluice-e2e-fence") as fc:
            marker_seq = j.js_publish(fc, SUBJECT, marker, timeout=30)
        expect(marker_seq > last_seq, "the marker's sequence %d is not above the last "
               "event's %d" % (marker_seq, last_seq))
        try:
            client.wait(lambda c: any(e[1] == marker for e in reversed(c.events)), 30,
                        "the fence marker (sequence %d)" % marker_seq)
        except h.TestFailure as e:
            h.log(str(e))  # analyse() reports the marker missing, with the figures
        client.stop()

        info = j.stream_info(cluster.ports, STREAM)["state"]
        fig, defects = analyse(client, pub, (marker, marker_seq))
        print("chaos: published %d (acked), received %d, lost %d, duplicated %d, "
              "out-of-order %d, longest gap %.2f s (at event %d%s), reconnects %d; "
              "stream holds %d messages (seq %d..%d)"
              % (fig["published"], fig["received"], fig["lost"], fig["duplicated"],
                 fig["out_of_order"], fig["gap"], fig["gap_at"],
                 (", between %r and %r on connections %d/%d" % fig["gap_around"])
                 if "gap_around" in fig else "", fig["reconnects"], info["messages"],
                 info["first_seq"], info["last_seq"]), flush=True)
        for ln in timeline:
            h.log("timeline: " + ln)
        for c in client.conns:
            h.log("connection " + c.describe())
        h.log("gateway B's log after its NATS node died:\n" + h.tail(b_log[mark:], 15))
        expect(info["messages"] == COUNT + 1, "the stream holds %d messages, expected %d and "
               "the marker (a publish stored twice?)" % (info["messages"], COUNT))
        expect(not defects, "; ".join(defects))
        expect(len(client.conns) >= 3, "the client connected %d times, expected at least 3 "
               "(A, B after the kill, A after the drain)" % len(client.conns))
        for g in gws:
            g.check_alive()
            g.stop()
    finally:
        client.stop()
        pub.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=240)
