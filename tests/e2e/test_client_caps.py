#!/usr/bin/env python3
"""What one client can make the gateway hold: subscriptions and private bodies.

An audit found that one h2 connection churning fresh subjects made 8,051
NATS subscriptions in under 4 s (each lingering history-keep-ms), and that
20 zero-window polls over an escaped history reached 731 MB. Each part here
is named after what broke:

  subscriptions_lru   --max-subscriptions 4: a fifth pattern while four are
                      watched is refused with a clean stream end (`: limit
                      reached`, counted as limit="subscriptions"); once
                      streams close, their lingering subscriptions are
                      evicted least recently used first (nats-server shows
                      which went) and new streams open.
  connection_caps     one connection may hold 40 distinct patterns (403
                      beyond, exactly the excess) and subscribe 20 patterns
                      new to the process per second (429 beyond); joining
                      patterns the process already holds costs no token.
                      One connection churning fresh subjects meets both,
                      and cancelling streams gives their patterns back.
  churn               connections churning fresh subjects keep the process
                      at its cap (sluice_nats_subscriptions and nats-server
                      agree) by evicting lingering ones, while a legitimate
                      client's stream on a new subject still opens quickly
                      and gets its event.
  poll_memory         20 zero-window polls after=earliest over 1,000 events
                      of 4,000 control characters (24 MB of JSON each
                      before): VmHWM stays within a bound from the caps,
                      the excess is refused (503, limit="queue_bytes") and
                      answers are cut (limit="poll_bytes").
  poll_next           polling from `next` over that history collects every
                      event exactly once, each answer within max-poll-bytes.
  file_memory         30 zero-window GETs of a 3 MB file share one copy; a
                      second file that the cache cannot take while the first
                      is being sent is refused (503, limit="file_cache").
  publish_memory      40 publish bodies of 900 KB on a zero-window
                      connection: finished bodies are freed once published,
                      unfinished ones beyond conn-queue-bytes are refused
                      (503, limit="queue_bytes"); VmHWM stays bounded.
"""
import json
import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

MiB = 1 << 20
REFUSED_CONN = b"too many subjects open on this connection"
REFUSED_RATE = b"too many new subjects per second"


def hwm_bytes(pid):
    """VmHWM (peak resident set) of a live process, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1]) * 1024
    raise h.TestFailure("no VmHWM for pid %d" % pid)


def within(grown, bound, what):
    """RSS growth under bound; an AddressSanitizer build keeps freed memory, so only logs."""
    if h.sanitized():
        h.log("%s: VmHWM %.1f MiB above RSS before; not checked under a sanitizer"
              % (what, grown / MiB))
        return
    expect(grown < bound, "%s took VmHWM %.1f MiB above RSS before (bound %.0f MiB)"
           % (what, grown / MiB, bound / MiB))


def hits(gw, limit):
    return mu.value(mu.scrape(gw), "sluice_limit_hits_total", limit=limit)


def started(s):
    return h.START_RE.search(bytes(s.body)) is not None


def answered(s):
    """A stream has started, or was refused with a text body, or ended."""
    return started(s) or s.closed


def watch(gw, subject, timeout=10):
    """A new connection with one stream on subject; waits for its start or end."""
    c = h2.H2Conn(gw)
    s = c.request("/events/" + subject)
    c.wait(lambda _: answered(s), timeout, "stream on %s to start or end" % subject)
    return c, s


def gateway_subs(nats):
    """The subjects nats-server shows for the (one) gateway connection."""
    lists = nats.subscriptions()
    return set(lists[0]) if lists else set()


def subscriptions_lru(nats):
    with h.Gateway(nats.url, workers=1, drain_ms=1000, max_subscriptions=4, history_keep_ms=60000) as gw:
        conns = [watch(gw, "lru.w%d" % i) for i in range(4)]
        expect(all(started(s) for _, s in conns), "4 streams under max-subscriptions 4: %r"
               % [s for _, s in conns])
        # All four watched: nothing to evict, so a fifth pattern is refused.
        c5, s5 = watch(gw, "lru.w4")
        c5.wait(lambda _: s5.closed and b"limit reached" in s5.body, 10,
                "the fifth pattern's stream to end with 'limit reached'")
        expect(not started(s5), "a refused stream must not start: %r" % s5)
        c5.close()
        expect(hits(gw, "subscriptions") == 1, "limit=subscriptions not counted once")
        expect(mu.value(mu.scrape(gw), "sluice_nats_subscriptions") == 4,
               "the refused pattern was subscribed")
        expect("lru.w4" not in gateway_subs(nats), "nats-server has the refused pattern")

        # w1 lapses first, then w2: both linger (history-keep-ms 60 s).
        conns[1][0].close()
        mu.wait_metric(gw, "sluice_streams_open", 3)
        conns[2][0].close()
        mu.wait_metric(gw, "sluice_streams_open", 2)
        c6, s6 = watch(gw, "lru.w5")
        expect(started(s6), "a new pattern at the cap with two lingering did not start: %r" % s6)
        h.wait_until(lambda: gateway_subs(nats) == {"lru.w0", "lru.w2", "lru.w3", "lru.w5"}, 10,
                     "nats-server to drop lru.w1 (lapsed first) and keep lru.w2; has %r"
                     % gateway_subs(nats))
        c7, s7 = watch(gw, "lru.w6")
        expect(started(s7), "the second eviction did not let a stream start: %r" % s7)
        h.wait_until(lambda: gateway_subs(nats) == {"lru.w0", "lru.w3", "lru.w5", "lru.w6"}, 10,
                     "nats-server to drop lru.w2 next; has %r" % gateway_subs(nats))
        fams = mu.scrape(gw)
        expect(mu.value(fams, "sluice_nats_subscriptions_evicted_total") == 2,
               "evictions: %r" % mu.value(fams, "sluice_nats_subscriptions_evicted_total"))
        # Nothing lingers now: refused again.
        c8, s8 = watch(gw, "lru.w7")
        c8.wait(lambda _: s8.closed, 10, "lru.w7 to be refused")
        expect(b"limit reached" in s8.body and hits(gw, "subscriptions") == 2,
               "a pattern with every subscription watched was not refused: %r" % s8)
        # The streams that got in are live.
        with nu.NatsClient(nats.port) as pub:
            pub.pub("lru.w5", "after-eviction")
            pub.flush()
        c6.wait_body(s6, b"data: after-eviction\n\n", 10)
        for c in (conns[0][0], conns[3][0], c6, c7, c8):
            c.close()
        gw.stop()  # exit 0: a sanitizer build also checks for leaks here
        h.log("subscriptions_lru: refused at the cap, LRU evictions w1 then w2")


def open_all(c, subjects, timeout=15):
    streams = c.open_many(["/events/" + x for x in subjects])
    c.wait(lambda _: all(answered(s) for s in streams), timeout,
           "all %d streams answered" % len(streams))
    return streams


def connection_caps(nats, gw):
    # 50 patterns the process holds (lingering): three connections, each within its burst.
    pre = ["pre.%d" % i for i in range(50)]
    for part in (pre[:17], pre[17:34], pre[34:]):
        c = h2.H2Conn(gw)
        ss = open_all(c, part)
        expect(all(started(s) for s in ss), "priming %d patterns: %r" % (len(part), ss[:2]))
        c.close()
    mu.wait_metric(gw, "sluice_streams_open", 0)

    # Joining held patterns costs no token; the 41st distinct one is refused.
    before = hits(gw, "subjects_per_connection")
    c = h2.H2Conn(gw)
    ss = open_all(c, pre)
    ok = [s for s in ss if started(s)]
    refused = [s for s in ss if REFUSED_CONN in s.body]
    expect(len(ok) == 40 and len(refused) == 10,
           "50 held patterns on one connection at max 40: %d started, %d refused (403): %r"
           % (len(ok), len(refused), [s for s in ss if s not in ok and s not in refused][:3]))
    expect(hits(gw, "subjects_per_connection") - before == 10,
           "limit=subjects_per_connection did not count the 10 refusals")
    # A stream on a pattern the connection holds is free.
    more = open_all(c, pre[:5])
    expect(all(started(s) for s in more), "more streams on held patterns were refused")

    # Fresh patterns cost a token each: 20 a second, burst 20.
    before = hits(gw, "subscribe_rate")
    c2 = h2.H2Conn(gw)
    t0 = time.monotonic()
    ss = open_all(c2, ["rate.%d" % i for i in range(50)])
    most = h.bucket_most(20, time.monotonic() - t0, 20)
    ok = [s for s in ss if started(s)]
    refused = [s for s in ss if REFUSED_RATE in s.body]
    h.log("connection_caps: 50 fresh patterns at subscribe-rate 20: %d started, %d refused"
          % (len(ok), len(refused)))
    expect(len(ok) + len(refused) == 50 and 20 <= len(ok) <= most,
           "50 fresh patterns at --subscribe-rate 20: %d started (at most %d), %d refused (429)"
           % (len(ok), most, len(refused)))
    expect(hits(gw, "subscribe_rate") - before == len(refused),
           "limit=subscribe_rate counted %d, refused %d"
           % (hits(gw, "subscribe_rate") - before, len(refused)))
    c2.close()
    return [c, one_connection_churn(gw)]


def one_connection_churn(gw):
    """One connection churning fresh subjects meets both caps, and closing streams gives back."""
    c = h2.H2Conn(gw)
    k = [0]

    def fresh(n):
        k[0] += n
        return open_all(c, ["one.%d" % i for i in range(k[0] - n, k[0])])

    rate0, conn0 = hits(gw, "subscribe_rate"), hits(gw, "subjects_per_connection")
    t0 = time.monotonic()
    first = fresh(30)  # burst 20: the rest are 429
    most = h.bucket_most(20, time.monotonic() - t0, 20)
    held = [s for s in first if started(s)]
    expect(20 <= len(held) <= most and all(REFUSED_RATE in s.body for s in first
                                         if not started(s)), "30 fresh at once: %r" % first[:3])
    # The bucket refills at 20/s; the connection fills up to 40 patterns.
    while len(held) < 40:
        time.sleep(0.3)
        held += [s for s in fresh(40 - len(held)) if started(s)]
    rate_hits = hits(gw, "subscribe_rate") - rate0
    time.sleep(1.1)  # a full bucket again: what follows is the pattern cap alone
    over = fresh(5)
    expect(all(REFUSED_CONN in s.body for s in over),
           "fresh patterns past 40 held on one connection: %r" % over)
    expect(hits(gw, "subjects_per_connection") - conn0 == 5
           and hits(gw, "subscribe_rate") - rate0 == rate_hits,
           "the pattern cap's refusals were not counted as such")
    # Streams that end give their patterns back.
    for s in held[:5]:
        c.cancel(s)
    h.wait_until(lambda: all(started(s) for s in fresh(1)), 10,
                 "a fresh pattern to be admitted once 5 streams were cancelled")
    h.log("one_connection_churn: 429 x%d, then 403 x5 at 40 patterns, admitted again after "
          "cancels" % rate_hits)
    return c


def churn(nats, gw, cap):
    # Unloaded: how long a stream on a new subject takes to start.
    t0 = time.monotonic()
    base_c, base_s = watch(gw, "legit.base")
    base = time.monotonic() - t0
    expect(started(base_s), "baseline stream did not start")

    stop = threading.Event()
    refusals = [0]
    errors = []

    def churner():
        k = 0
        try:
            while not stop.is_set():
                with h2.H2Conn(gw) as c:
                    ss = open_all(c, ["churn.%d" % (k + i) for i in range(20)])
                    refusals[0] += sum(1 for s in ss if not started(s))
                k += 20
        except BaseException as e:  # noqa: B902 (reported by the test thread)
            errors.append(e)

    t = threading.Thread(target=churner, daemon=True)
    t.start()
    try:
        # Let the churn fill the process to its cap first.
        h.wait_until(lambda: mu.value(mu.scrape(gw), "sluice_nats_subscriptions") >= cap, 20,
                     "churn to fill the process to max-subscriptions")
        t0 = time.monotonic()
        live_c, live_s = watch(gw, "legit.live")
        loaded = time.monotonic() - t0
        expect(started(live_s), "a legitimate stream during churn did not start: %r" % live_s)
        with nu.NatsClient(nats.port) as pub:
            pub.pub("legit.live", "still-served")
            pub.flush()
        live_c.wait_body(live_s, b"data: still-served\n\n", 10)
        h.log("churn: a new legitimate stream started in %.1f ms during churn (%.1f ms unloaded)"
              % (loaded * 1000, base * 1000))
        expect(loaded < max(1.0, 20 * base), "a legitimate stream took %.3f s to start during "
               "churn, %.3f s unloaded" % (loaded, base))
        time.sleep(0.5)  # more churn past the cap
    finally:
        stop.set()
        t.join(timeout=30)
    expect(not errors, "churner failed: %r" % errors)
    fams = mu.scrape(gw)
    n = mu.value(fams, "sluice_nats_subscriptions")
    evicted = mu.value(fams, "sluice_nats_subscriptions_evicted_total")
    expect(n <= cap and evicted > 0, "after churn: %d subscriptions (cap %d), %d evicted"
           % (n, cap, evicted))
    h.wait_until(lambda: len(gateway_subs(nats)) <= cap, 10,
                 "nats-server to show at most %d subscriptions (has %d)"
                 % (cap, len(gateway_subs(nats))))
    h.log("churn: %d subscriptions at cap %d, %d evicted, %d churn streams refused"
          % (n, cap, evicted, refusals[0]))
    live_c.close()
    base_c.close()


def subscriber_caps(nats):
    cap = 150
    with h.Gateway(nats.url, workers=1, drain_ms=1000, max_subjects_per_connection=40, subscribe_rate=20,
                   max_subscriptions=cap, history_keep_ms=60000, stream_rate=100000) as gw:
        held = connection_caps(nats, gw)
        churn(nats, gw, cap)
        for c in held:
            c.close()
        gw.stop()  # exit 0: a sanitizer build also checks for leaks here


PAYLOAD = bytes(range(1, 9)) * 500  # 4,000 control characters: 24,000 bytes of JSON
NEVENTS = 1000


def fill_history(nats, gw, subject):
    """1,000 events of PAYLOAD and a fence in subject's history; returns when stored."""
    c, s = watch(gw, subject)  # the subscription, then it lingers with its history
    c.close()
    with nu.NatsClient(nats.port) as pub:
        for _ in range(NEVENTS):
            pub.pub(subject, PAYLOAD)
        pub.pub(subject, "fence")
        pub.flush()


def poll_all(gw, subject, max_poll):
    """Polls from earliest following next until the fence; returns the events in order."""
    got = []
    after = "earliest"
    deadline = time.monotonic() + 30
    with h2.H2Conn(gw) as c:
        while time.monotonic() < deadline:
            s = c.request("/poll?subject=%s&after=%s&timeout=1" % (subject, after))
            c.wait(lambda _: s.closed, 10, "a poll answer")
            expect(len(s.body) <= max_poll + 25000, "a poll answer of %d bytes at "
                   "--max-poll-bytes %d" % (len(s.body), max_poll))
            j = json.loads(bytes(s.body).decode())
            got += j["events"]
            if got and got[-1]["data"] == "fence":
                return got
            after = j["next"]
    raise h.TestFailure("polling never reached the fence (%d events)" % len(got))


def poll_memory(nats):
    max_poll = 256 * 1024
    with h.Gateway(nats.url, workers=1, drain_ms=1000, conn_queue_bytes=4 * MiB, max_poll_bytes=max_poll,
                   history_bytes=16 * MiB, history_events=2000,
                   history_keep_ms=60000) as gw:
        fill_history(nats, gw, "mem.poll")
        # poll_next: every event exactly once, in small answers.
        events = poll_all(gw, "mem.poll", max_poll)
        ids = [int(e["id"]) for e in events]
        expect(len(events) == NEVENTS + 1 and ids == sorted(set(ids)),
               "polling from next: %d events (want %d), ids increasing and unique: %s"
               % (len(events), NEVENTS + 1, ids == sorted(set(ids))))
        expect(all(e["data"] == PAYLOAD.decode() for e in events[:-1]), "payload mangled")
        expect(hits(gw, "poll_bytes") > 0, "cut answers not counted as limit=poll_bytes")
        h.log("poll_next: %d events exactly once" % len(events))

        # poll_memory: 20 answers held by a client that never opens its window.
        rss0 = gw.rss_bytes()
        q0 = hits(gw, "queue_bytes")
        with h.Client(gw, ["--window-size", "0", "--repeat-path",
                           "/poll?subject=mem.poll&after=earliest:20"],
                      timeout_ms=4000, events_out=False) as cl:
            cl.wait_ready(timeout=20)
            peak = hwm_bytes(gw.proc.pid)
            _, rep = cl.result()
        counts = rep.get("status_counts", {})
        h.log("poll_memory: statuses %r; VmHWM %.1f MiB over RSS %.1f MiB before"
              % (counts, (peak - rss0) / MiB, rss0 / MiB))
        expect(counts.get("200", 0) + counts.get("503", 0) == 20 and counts.get("503", 0) > 0,
               "20 zero-window polls over 4 MiB conn-queue-bytes: %r" % counts)
        expect(hits(gw, "queue_bytes") - q0 == counts.get("503", 0),
               "limit=queue_bytes did not count the refused polls")
        # Held: at most conn-queue-bytes of answers; an answer is built once at a time.
        within(peak - rss0, 40 * MiB, "20 zero-window polls")
        gw.stop()  # exit 0: a sanitizer build also checks for leaks here


def file_memory(nats):
    www = h.tempdir("sluice-www-")
    for name in ("big1.bin", "big2.bin"):
        with open(os.path.join(www, name), "wb") as f:
            f.write(os.urandom(3 * MiB))
    with h.Gateway(nats.url, workers=1, drain_ms=1000, www=www, file_cache_bytes=4 * MiB) as gw:
        rss0 = gw.rss_bytes()
        with h.Client(gw, ["--window-size", "0", "--repeat-path", "/big1.bin:30"],
                      timeout_ms=15000, events_out=False) as cl:
            cl.wait_ready(timeout=20)
            peak = hwm_bytes(gw.proc.pid)
            # The cache holds big1 for 30 responses: big2 cannot be taken in.
            r = h2.H2Conn(gw)
            s = r.request("/big2.bin")
            r.wait(lambda _: s.closed, 10, "big2.bin answered")
            expect(bytes(s.body) == b"busy, retry\n", "big2 while the cache is in use: %r" % s)
            r.close()
        expect(hits(gw, "file_cache") == 1, "limit=file_cache not counted")
        h.log("file_memory: 30 zero-window GETs of 3 MiB: VmHWM %.1f MiB over RSS before"
              % ((peak - rss0) / MiB))
        within(peak - rss0, 24 * MiB, "30 zero-window GETs of a 3 MiB file")
        # Once those responses are gone, big2 replaces big1 and is served whole.
        with h2.H2Conn(gw) as c:
            s = c.request("/big2.bin")
            c.wait(lambda _: s.closed, 20, "big2.bin served")
            with open(os.path.join(www, "big2.bin"), "rb") as f:
                expect(bytes(s.body) == f.read(), "big2.bin served wrong bytes")
        gw.stop()  # exit 0: a sanitizer build also checks for leaks here


def publish_memory(nats):
    with h.Gateway(nats.url, workers=1, drain_ms=1000, conn_queue_bytes=4 * MiB) as gw:
        rss0 = gw.rss_bytes()
        q0 = hits(gw, "queue_bytes")
        body = b"x" * (900 * 1024)
        # The body waits on the server's 64 KiB windows: hand the GIL over quickly.
        sys.setswitchinterval(0.0002)
        with h2.H2Conn(gw, window=0) as c:
            for i in range(20):
                c.post("/publish/mem.pub", body, end=True)
            for i in range(20):
                c.post("/publish/mem.pub", body, end=False)
            # A fence on the same connection: answered once every body before it was read.
            f = c.post("/publish/mem.pub", b"fence", end=True)
            c.wait(lambda _: f.headers_at is not None, 20, "the fence publish answered")
            peak = hwm_bytes(gw.proc.pid)
            refused = hits(gw, "queue_bytes") - q0
        h.log("publish_memory: 40 bodies of 900 KiB, %d refused; VmHWM %.1f MiB over RSS before"
              % (refused, (peak - rss0) / MiB))
        # Four unfinished bodies fit in 4 MiB; the finished ones are freed once published.
        expect(refused >= 15, "unfinished bodies past 4 MiB conn-queue-bytes: %d refused"
               % refused)
        # Without the caps the 40 bodies (36 MiB) stay until the window opens.
        within(peak - rss0, 16 * MiB, "40 publish bodies of 900 KiB")
        gw.stop()  # exit 0: a sanitizer build also checks for leaks here


def test():
    with h.Nats() as nats:
        subscriptions_lru(nats)
    with h.Nats() as nats:
        subscriber_caps(nats)
    with h.Nats() as nats:
        poll_memory(nats)
        file_memory(nats)
        publish_memory(nats)


if __name__ == "__main__":
    h.main(test, deadline_s=240)
