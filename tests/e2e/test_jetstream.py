#!/usr/bin/env python3
"""JetStream-backed subjects on one JetStream node and two gateways.

Streams: JS on `js.>` and SMALL on `small.>` with max_msgs 10; gateways A
and B both with --jetstream-streams JS,SMALL. Publishes are JetStream
publishes with acknowledgements, so every expected id is the stream
sequence the PubAck named. Other subjects of the same stream are
published in between, so that stream sequences have gaps on a subject and
a gateway that counted instead would fail.

1. Resume on the other gateway: curl reads r1-r20 from A (ids = the
   sequences), disconnects; r21-r40 are published; B with Last-Event-ID =
   the id of r20 starts at that id and sends exactly r21-r40, then the
   live r41, nothing else. B needed one JetStream replay for it (metrics).
   A resumes from r30 (?last_event_id= form) with r31-r41 too.
2. History on a first connect: ?last_event_id=earliest gets every stored
   event of its subject and only those (also for a `*` pattern: js.w.a
   and js.w.b, not js.w.a.deep nor js.wx); ?since=T between two batches
   gets only the later batch (T written with Z and milliseconds, and with
   a +01:00 offset and microseconds, percent-encoded); a since before
   everything gets all of them, one in the future nothing but live events;
   a malformed since is 400.
3. Resets (SMALL keeps the newest 10): after 50, Last-Event-ID 1 gets
   `event: reset` history-expired, then the live 51; 39 the same, then
   52; the id just before the oldest held replays exactly the ten held,
   no reset; an id far above the last gets unknown-id.

Every "exactly" is bounded by a fence, not a sleep: a marker published on
the subject after the events under test, read until; it must come right
after them. Markers are stored like any event, so later history reads
expect them in their place.
4. Replay sharing: 200 streams (sluice-client, 4 connections x 50) on a
   fresh gateway C (--jetstream-replays 4) resume on one subject from ten
   nearby ids at once. Every stream gets exactly its replay then 5 live
   events; sluice_jetstream_replay_requests_total grows by 200 and
   sluice_jetstream_replays_total by at most 20.
   --jetstream-replay-max 50 on another gateway: 40 behind is replayed
   exactly, 90 behind gets `event: reset` replay-limit, then live.
5. A subject outside every stream (core.x) keeps core NATS: gateway
   counter ids; a two-subject stream js.m + core.m carries the stream
   sequence and the counter joined by '-'.
6. Start-up: --jetstream-streams NOPE (alone, or after a stream that
   exists), and a nats-server without JetStream, each stop the gateway
   with a non-zero exit and one reason line, the last on stderr; '*'
   serves every stream.
"""
import json
import os
import subprocess
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import js_util as j  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

STREAMS = "JS,SMALL"
SMALL_MAX = 10


def open_stream(gw, path, last_id=None, nsubjects=1, max_time=60):
    extra = ["-H", "Last-Event-ID: %s" % last_id] if last_id is not None else []
    s = h.CurlStream(gw, path, max_time=max_time, extra=extra)
    _, start, off = s.wait_start(timeout=15, nsubjects=nsubjects)
    return s, start, off


def not_heartbeats(blocks):
    return [b for b in blocks if b.is_event or b.id is not None or b.event is not None]


def blocks_of(s, off, end=None):
    """The blocks after the start item that are not heartbeats."""
    blocks, _ = h.parse_blocks(s.data()[off:end])
    return not_heartbeats(blocks)


def plain_events(blocks, what=""):
    """[(id, data)] of plain events (no event: name); fails on anything else."""
    out = []
    for b in not_heartbeats(blocks):
        expect(b.is_event and b.event is None and b.id is not None and len(b.data) == 1,
               "%s: unexpected block %r" % (what, b.raw))
        out.append((b.id, b.data[0]))
    return out


def events_of(s, off, end=None, what=""):
    """[(id, data)] of plain events (no event: name) after off; fails on anything else."""
    return plain_events(h.parse_blocks(s.data()[off:end])[0], what)


def fence(s, off, c, subj, what):
    """harness.read_until_marker with an acked marker on subj.

    Returns (the non-heartbeat blocks before the marker, (its sequence,
    its data), the offset after it). The marker is stored in the stream
    like any event: a later history read of subj includes it.
    """
    acked = []

    def pub(m):
        acked.append((j.js_publish(c, subj, m), m))
    blocks, mb, end = h.read_until_marker(s, pub, start=off, what=what)
    expect(mb.id == str(acked[0][0]), "%s: the marker's id %r is not its sequence %d"
           % (what, mb.id, acked[0][0]))
    return not_heartbeats(blocks), acked[0], end


def expect_events(s, off, want, what, c, subj):
    """Waits for the last wanted event, then fences on subj: the stream holds exactly
    want [(seq, data)] before the marker. Returns (offset after it, (its seq, data)).

    A settle sleep stood here: a duplicate or stray event later than it passed.
    """
    if want:
        s.wait_bytes(b"data: %s\n\n" % want[-1][1].encode(), 15, off)
    blocks, mk, end = fence(s, off, c, subj, what)
    j.check_exact(plain_events(blocks, what), want, what)
    return end, mk


def pub_pairs(c, subj, noise, names):
    """Acked publishes of each name on subj, each followed by one on noise; [(seq, name)]."""
    out = []
    for name in names:
        out.append((j.js_publish(c, subj, name), name))
        j.js_publish(c, noise, "noise-" + name)
    return out


def metric(gw, name):
    return mu.value(mu.scrape(gw), name)


def rfc3339(t, offset_h=0, digits=3):
    """t (epoch s) as RFC 3339 with the given UTC offset and fractional digits (truncated)."""
    us = int(t * 1e6) + offset_h * 3600 * 10 ** 6
    sec, frac_us = divmod(us, 10 ** 6)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    frac = ("." + ("%06d" % frac_us)[:digits]) if digits else ""
    if offset_h == 0:
        return base + frac + "Z"
    return base + frac + "%s%02d:00" % ("+" if offset_h > 0 else "-", abs(offset_h))


# ---------------------------------------------------------------------------


def case_resume_other_gateway(c, ga, gb, ports):
    subj, noise = "js.resume", "js.noise"
    last = j.stream_info(ports, "JS")["state"]["last_seq"]
    s, (start,), off = open_stream(ga, "/events/" + subj)
    expect(start <= last, "A's start id %d is above the stream's last sequence %d"
           % (start, last))
    first = pub_pairs(c, subj, noise, ["r%d" % i for i in range(1, 21)])
    _, f1 = expect_events(s, off, first, "A, live r1-r20", c, subj)
    s.close()
    h.log("A: r1-r20 with ids %d..%d (start id %d)" % (first[0][0], first[-1][0], start))

    second = pub_pairs(c, subj, noise, ["r%d" % i for i in range(21, 41)])
    before = {n: metric(gb, n) for n in ("sluice_jetstream_replays_total",
                                         "sluice_jetstream_replay_requests_total",
                                         "sluice_jetstream_replayed_events_total")}
    id20 = first[-1][0]
    s, (rstart,), off = open_stream(gb, "/events/" + subj, last_id=id20)
    expect(rstart == id20, "B resumed from %d starts at id %d, expected the id it resumed from"
           % (id20, rstart))
    # A's fence marker f1 follows r20 in the stream: it is replayed too.
    end, f2 = expect_events(s, off, [f1] + second, "B, resumed after r20", c, subj)
    live = pub_pairs(c, subj, noise, ["r41"])
    _, f3 = expect_events(s, end, live, "B, live after the replay", c, subj)
    s.close()
    after = {n: metric(gb, n) for n in before}
    d = {n: after[n] - before[n] for n in before}
    h.log("B: resumed from %d: exactly r21-r40 (ids %d..%d) and A's marker then live r41 "
          "(%d); metrics %r"
          % (id20, second[0][0], second[-1][0], live[0][0], d))
    expect(d["sluice_jetstream_replay_requests_total"] == 1
           and d["sluice_jetstream_replays_total"] == 1,
           "B's resume should have needed exactly one JetStream replay: %r" % d)
    expect(d["sluice_jetstream_replayed_events_total"] >= 21,
           "B's replay fetched %r events, expected at least the 21 missing"
           % d["sluice_jetstream_replayed_events_total"])

    # A again, by query, from r30: its subscription and memory may still serve part of it.
    id30 = second[9][0]
    s, (qstart,), off = open_stream(ga, "/events/%s?last_event_id=%d" % (subj, id30))
    expect(qstart == id30, "?last_event_id=%d on A starts at %d" % (id30, qstart))
    expect_events(s, off, second[10:] + [f2] + live + [f3], "A, resumed after r30 (query form)",
                  c, subj)
    s.close()
    h.log("A: ?last_event_id=%d gave exactly r31-r41 (and B's markers)" % id30)


def case_history(c, ga, gb, ports):
    subj, noise = "js.hist", "js.noise"
    batch1 = pub_pairs(c, subj, noise, ["h%d" % i for i in range(1, 6)])
    # Part of what is tested, not a settle: t_mid lies at least 0.6 s from
    # either batch's store times (a busy machine only widens the gap).
    time.sleep(0.6)
    t_mid = time.time()
    time.sleep(0.6)
    batch2 = pub_pairs(c, subj, noise, ["h%d" % i for i in range(6, 11)])
    stored = batch1 + batch2  # every event on subj in stream order, fence markers included

    s, (start,), off = open_stream(ga, "/events/%s?last_event_id=earliest" % subj)
    end, mk = expect_events(s, off, batch1 + batch2, "earliest on %s" % subj, c, subj)
    stored.append(mk)
    live = pub_pairs(c, subj, noise, ["h11"])
    _, mk = expect_events(s, end, live, "earliest, then live", c, subj)
    stored += live + [mk]
    s.close()
    h.log("earliest: exactly h1-h10 (start id %d) then live h11" % start)

    for t_text in (rfc3339(t_mid, 0, 3), rfc3339(t_mid, 1, 6)):
        q = urllib.parse.quote(t_text, safe=":")
        s, _, off = open_stream(gb, "/events/%s?since=%s" % (subj, q))
        _, mk = expect_events(s, off, stored[len(batch1):], "since=%s" % t_text, c, subj)
        stored.append(mk)
        s.close()
        h.log("since=%s: exactly h6-h11 and the markers" % t_text)

    s, _, off = open_stream(gb, "/events/%s?since=2000-01-01T00:00:00Z" % subj)
    _, mk = expect_events(s, off, list(stored), "since 2000", c, subj)
    stored.append(mk)
    s.close()
    future = rfc3339(time.time() + 3600)
    s, _, off = open_stream(ga, "/events/%s?since=%s" % (subj, future))
    # No sleep before publishing: the start item means the stream is live
    # (a sleep here hid an event lost right after it).
    live2 = pub_pairs(c, subj, noise, ["h12"])
    expect_events(s, off, live2, "since=%s (the future)" % future, c, subj)
    s.close()
    h.log("since 2000: h1-h11; since an hour ahead: only the live h12")

    r = h.curl(gb, "/events/%s?since=yesterday" % subj)
    expect(r.status == 400, "?since=yesterday answered %d, expected 400" % r.status)

    # A pattern: only what it matches, in stream order.
    got = []
    for sj, data in (("js.w.a", "wa1"), ("js.w.b", "wb1"), ("js.w.a.deep", "deep"),
                     ("js.wx", "wx"), ("js.w.a", "wa2")):
        seq = j.js_publish(c, sj, data)
        if sj in ("js.w.a", "js.w.b"):
            got.append((seq, data))
    s, _, off = open_stream(gb, "/events/js.w.*?last_event_id=earliest")
    expect_events(s, off, got, "earliest on js.w.*", c, "js.w.a")
    s.close()
    h.log("earliest on js.w.*: exactly wa1, wb1, wa2")


def expect_reset(gw, subj, last_id, reason, c, live_data):
    """Resumes from last_id: a reset, then one live event, then the fence marker.

    Returns [(seq, data)] of what it published on subj: the live event, the marker.
    """
    what = "%s resumed from %s" % (subj, last_id)
    s, (start,), off = open_stream(gw, "/events/" + subj, last_id=last_id)
    # A bounded wait for the reset (a sleep stood here), then the live event after it.
    s.wait_bytes(b"event: reset\n", 15, off)
    seq = j.js_publish(c, subj, live_data)
    s.wait_bytes(b"data: %s\n\n" % live_data.encode(), 15, off)
    # Fence: the reset and the live event, and nothing else, before the marker.
    bl, mk, _ = fence(s, off, c, subj, what)
    expect(len(bl) == 2, "%s: expected one reset and one live event, got %r"
           % (what, [b.raw for b in bl]))
    r, live = bl
    want = {"reason": reason, "subjects": [subj]}
    expect(r.event == "reset" and r.data and len(r.data) == 1,
           "%s: first block is not an `event: reset`: %r" % (what, r.raw))
    expect(r.data[0] == json.dumps(want, separators=(",", ":")),
           "%s: reset data %r, expected %r" % (what, r.data[0], want))
    expect(live.event is None and live.data == [live_data] and live.id == str(seq),
           "%s: after the reset %r, expected id %d data %s" % (what, live.raw, seq, live_data))
    s.close()
    h.log("%s: reset %s (reset id %s, start id %d), then live %s id %d"
          % (what, reason, r.id, start, live_data, seq))
    return [(seq, live_data), mk]


def case_resets(c, ga, gb, ports):
    subj = "small.x"
    seqs = j.publish_batch(c, subj, [str(i) for i in range(1, 51)])
    expect(seqs == list(range(1, 51)), "SMALL's sequences %r... are not 1-50" % seqs[:5])
    st = j.stream_info(ports, "SMALL")["state"]
    expect(st["first_seq"] == 41 and st["messages"] == SMALL_MAX,
           "SMALL should hold 41-50: %r" % st)
    stored = list(zip(seqs, [str(i) for i in range(1, 51)]))
    stored += expect_reset(gb, subj, 1, "history-expired", c, "51")
    stored += expect_reset(ga, subj, 39, "history-expired", c, "52")
    # Each reset published a live event and a fence marker: 51-54 pushed 41-44
    # out. From the one before the oldest held: all ten, no reset.
    held = stored[-SMALL_MAX:]
    expect(held[0][0] == 45, "SMALL should hold 45-54 now: %r" % held)
    bound = held[0][0] - 1
    s, (start,), off = open_stream(gb, "/events/" + subj, last_id=bound)
    expect(start == bound, "resumed from %d starts at %d" % (bound, start))
    _, mk = expect_events(s, off, held, "small.x resumed from %d (the boundary)" % bound,
                          c, subj)
    s.close()
    h.log("small.x from %d (oldest stored %d): exactly %d-%d, no reset"
          % (bound, held[0][0], held[0][0], held[-1][0]))
    expect_reset(ga, subj, mk[0] + 1000000, "unknown-id", c, "53")


def case_sharing(c, nats_url, ports):
    subj = "js.share"
    seqs = j.publish_batch(c, subj, ["s%d" % i for i in range(1, 301)])
    gc = h.Gateway(nats_url, jetstream_streams=STREAMS, jetstream_replays=4)
    try:
        names = ("sluice_jetstream_replays_total", "sluice_jetstream_replay_requests_total",
                 "sluice_jetstream_replayed_events_total")
        before = {n: metric(gc, n) for n in names}
        d = h.tempdir()
        paths_file = os.path.join(d, "paths")
        froms = [seqs[40 + k % 10] for k in range(50)]  # ten nearby ids
        with open(paths_file, "w") as f:
            for x in froms:
                f.write("/events/%s?last_event_id=%d\n" % (subj, x))
        conns = 4
        nlive = 5
        all_froms = froms * conns
        want = {}
        for i, x in enumerate(all_froms):
            want[i] = [(q, "s%d" % (k + 1)) for k, q in enumerate(seqs) if q > x]
        total = sum(len(w) + nlive for w in want.values())
        t0 = time.monotonic()
        cl = h.Client(gc, ["--paths-file", paths_file, "--connections", str(conns),
                           "--expect-total", str(total)], timeout_ms=40000)
        cl.wait_ready(timeout=30)
        t_ready = time.monotonic() - t0
        live = j.publish_batch(c, subj, ["live%d" % i for i in range(1, nlive + 1)])
        live_w = list(zip(live, ["live%d" % i for i in range(1, nlive + 1)]))
        rc, rep = cl.result()
        t_all = time.monotonic() - t0
        expect(rc == 0 and rep.get("streams") == conns * 50,
               "sluice-client: exit %d, report %r" % (rc, {k: v for k, v in rep.items()
                                                          if k != "per_stream"}))
        per = {}
        for e in cl.events():
            per.setdefault(e["stream"], []).append((e["id"], e["data"]))
        bad = []
        for i in range(conns * 50):
            exp = [(str(q), dd) for q, dd in want[i] + live_w]
            if per.get(i, []) != exp:
                bad.append((i, all_froms[i], len(per.get(i, [])), len(exp),
                            per.get(i, [])[:2]))
        expect(not bad, "%d of %d streams did not get exactly their replay then the live "
               "events; first: %r" % (len(bad), conns * 50, bad[:3]))
        after = {n: metric(gc, n) for n in names}
        dd_ = {n: after[n] - before[n] for n in names}
        # A replay job counts itself done after it has answered its streams.
        h.wait_until(lambda: metric(gc, "sluice_jetstream_replays_active") == 0, 10,
                     "sluice_jetstream_replays_active back to 0 after the storm")
        active = metric(gc, "sluice_jetstream_replays_active")
        h.log("sharing: %d streams from ids %d..%d all exact (%d events); ready in %.2f s, "
              "done in %.2f s; metrics %r, replays active now %r"
              % (conns * 50, min(froms), max(froms), total, t_ready, t_all, dd_, active))
        expect(dd_["sluice_jetstream_replay_requests_total"] == conns * 50,
               "replay requests grew by %r, expected %d (every stream needed JetStream)"
               % (dd_["sluice_jetstream_replay_requests_total"], conns * 50))
        expect(1 <= dd_["sluice_jetstream_replays_total"] <= 20,
               "replays grew by %r for %d requests from ten nearby ids: not shared"
               % (dd_["sluice_jetstream_replays_total"], conns * 50))
        expect(active == 0, "sluice_jetstream_replays_active is %r after the storm" % active)
        gc.check_alive()
        gc.stop()
    finally:
        h.kill_proc(gc.proc)


def case_replay_limit(c, nats_url):
    subj = "js.limit"
    seqs = j.publish_batch(c, subj, ["l%d" % i for i in range(1, 101)])
    with h.Gateway(nats_url, jetstream_streams=STREAMS, jetstream_replay_max=50) as gd:
        # 40 behind: within the limit, replayed exactly.
        s, _, off = open_stream(gd, "/events/" + subj, last_id=seqs[59])
        expect_events(s, off, [(q, "l%d" % (k + 61)) for k, q in enumerate(seqs[60:])],
                      "40 behind with --jetstream-replay-max 50", c, subj)
        s.close()
        # 90 behind (91 with the marker): a reset, then live.
        s, (start,), off = open_stream(gd, "/events/" + subj, last_id=seqs[9])
        s.wait_bytes(b"event: reset\n", 15, off)
        live = j.js_publish(c, subj, "l101")
        s.wait_bytes(b"data: l101\n\n", 15, off)
        bl, _, _ = fence(s, off, c, subj, "90 behind with --jetstream-replay-max 50")
        want = json.dumps({"reason": "replay-limit", "subjects": [subj]}, separators=(",", ":"))
        expect(len(bl) == 2 and bl[0].event == "reset" and bl[0].data == [want]
               and bl[1].event is None and bl[1].data == ["l101"] and bl[1].id == str(live),
               "90 behind with --jetstream-replay-max 50: expected the reset %s then l101 "
               "(id %d), got %r" % (want, live, [b.raw for b in bl]))
        s.close()
        gd.stop()
    h.log("--jetstream-replay-max 50: 40 behind replayed exactly; 90 behind: reset "
          "replay-limit, then live l101 (id %d)" % live)


def case_core(c, ga, nats_port):
    with nu.NatsClient(nats_port) as pub:
        s, (start,), off = open_stream(ga, "/events/core.x")
        ga.check_start_id([start])
        for i in range(1, 4):
            pub.pub("core.x", "c%d" % i)
        pub.flush()
        s.wait_bytes(b"data: c3\n\n", 10, off)
        evs = events_of(s, off, what="core.x")
        expect([dd for _, dd in evs] == ["c1", "c2", "c3"], "core.x got %r" % evs)
        ids = [int(i) for i, _ in evs]
        expect(start < ids[0] < ids[1] < ids[2], "core.x ids %r do not increase from %d"
               % (ids, start))
        ga.check_start_id(ids, published=10000)
        s.close()
        h.log("core.x: gateway counter ids %r (start %d)" % (ids, start))

        s, (p_js, p_core), off = open_stream(ga, "/events?subject=js.m&subject=core.m",
                                             nsubjects=2)
        ga.check_start_id([p_core])
        seq = j.js_publish(c, "js.m", "m1")
        s.wait_bytes(b"data: m1\n\n", 10, off)
        pub.pub("core.m", "m2")
        pub.flush()
        s.wait_bytes(b"data: m2\n\n", 10, off)
        evs = events_of(s, off, what="js.m + core.m")
        expect(len(evs) == 2, "js.m + core.m: %r" % evs)
        a = h.parse_id(evs[0][0], 2)
        b = h.parse_id(evs[1][0], 2)
        expect(a == [seq, p_core] and b[0] == seq and b[1] > p_core,
               "js.m + core.m ids %r, %r: expected [%d, %d] then [%d, > %d]"
               % (a, b, seq, p_core, seq, p_core))
        s.close()
        h.log("js.m + core.m: ids %s then %s (stream sequence, gateway counter)"
              % (evs[0][0], evs[1][0]))


def run_gateway(args, timeout=15):
    p = h.spawn([h.tool("SLUICE_BIN", "sluice")] + args, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise h.TestFailure("sluice %s still running after %d s" % (" ".join(args), timeout))
    return p.returncode, [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]


def expect_start_error(args, must, what):
    """The gateway exits > 0 and its last stderr line, its only error line, names must.

    Info lines before it (streams already found) are allowed; the reason is
    one line, the last.
    """
    rc, lines = run_gateway(args)
    h.log("%s: exit %d, %r" % (what, rc, lines))
    errors = [ln for ln in lines if " info " not in ln]
    expect(rc > 0, "%s: exit code %d, expected > 0" % (what, rc))
    expect(len(errors) == 1 and lines and errors[0] == lines[-1]
           and must.lower() in errors[0].lower(),
           "%s: expected one reason line naming %r, last; stderr %r" % (what, must, lines))


def case_startup(nats_url):
    d = h.tempdir()
    _, cert, key = h.make_certs(d)
    base = ["--listen", "127.0.0.1:0", "--cert", cert, "--key", key, "--admin", "127.0.0.1:0"]
    expect_start_error(base + ["--nats", nats_url, "--jetstream-streams", "NOPE"], "NOPE",
                       "--jetstream-streams NOPE")
    expect_start_error(base + ["--nats", nats_url, "--jetstream-streams", "JS,NOPE"], "NOPE",
                       "--jetstream-streams JS,NOPE")
    with h.Nats() as plain:
        expect_start_error(base + ["--nats", plain.url, "--jetstream-streams", "JS"],
                           "jetstream", "a nats-server without JetStream")
    with h.Gateway(nats_url, jetstream_streams="*") as g:
        for name in ("JS", "SMALL"):
            expect("from stream %s " % name in g.log(),
                   "--jetstream-streams '*' does not serve stream %s: %r" % (name, g.log()))
        g.stop()
    h.log("'*': both streams served")


def test():
    node = j.single_node()
    ports = [node.port]
    j.create_stream(ports, "JS", ["js.>"])
    j.create_stream(ports, "SMALL", ["small.>"], max_msgs=SMALL_MAX)
    timings = []
    with nu.NatsClient(ports, name="sluice-e2e-js") as c, \
            h.Gateway(node.url, jetstream_streams=STREAMS) as ga, \
            h.Gateway(node.url, jetstream_streams=STREAMS) as gb:
        for name, fn in (("resume on the other gateway",
                          lambda: case_resume_other_gateway(c, ga, gb, ports)),
                         ("earliest and since", lambda: case_history(c, ga, gb, ports)),
                         ("resets", lambda: case_resets(c, ga, gb, ports)),
                         ("replay sharing", lambda: case_sharing(c, node.url, ports)),
                         ("replay limit", lambda: case_replay_limit(c, node.url)),
                         ("core NATS subjects", lambda: case_core(c, ga, node.port)),
                         ("start-up", lambda: case_startup(node.url))):
            t = time.monotonic()
            h.log("---- %s" % name)
            fn()
            timings.append("%s %.1f s" % (name, time.monotonic() - t))
        for g in (ga, gb):
            g.check_alive()
            g.stop()
    h.log("cases: " + ", ".join(timings))


if __name__ == "__main__":
    h.main(test, deadline_s=240)
