#!/usr/bin/env python3
"""Issue 6 (1): the admin listener, and metrics that match a known workload exactly.

/healthz and /readyz first: 200 "ok" and 200 "ready"; once nats-server is
killed, /readyz is 503 "not ready: NATS disconnected" (and
sluice_nats_connected 0), and 200 again after it restarts on the same port
(sluice_nats_reconnects_total 1).

Every scrape is parsed strictly (metrics_util.parse_prometheus: HELP/TYPE,
sample syntax, contiguous families, histograms cumulative and ending in
+Inf == _count), and every metric the README lists must be there with its
type. A second restart makes sluice_nats_reconnects_total 2.

The workload, on two workers, with every count known in advance:

  A  20 streams (2 connections x 10) on m.a; 10 events published; the
     client closes once each stream has all 10           -> 200 delivered
  B  1 stream on m.a with Last-Event-ID = event 5's id    -> replays 6..10
  C  1 stream on m.a with Last-Event-ID 1 (older than history) -> event: reset
  D  1 stream on m.slow whose window (100 bytes) is never reopened, with
     --stream-queue-bytes 1024 and 4 events of 600 bytes: cut by the
     slow-consumer policy before any event is written in full

so: 23 streams opened, 205 events delivered, ended 22 by "client" and 1
by "slow_consumer", resumes 1 replayed and 1 reset, 2 streams with a
Last-Event-ID, 5 replayed events, 1 slow-consumer cut, 5 connections
accepted and 0 open at the end, 21 first-event observations (A and B;
C's reset event is the gateway's own, D never completes one), 23 stream
durations, 5 connection ages, 14 NATS messages.
"""
import math
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import ops_util as u  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

# Every metric in the README's table, with its type.
README_METRICS = {
    "sluice_connections_open": "gauge",
    "sluice_connections_accepted_total": "counter",
    "sluice_tls_handshake_failures_total": "counter",
    "sluice_bytes_written_total": "counter",
    "sluice_connection_age_seconds": "histogram",
    "sluice_limit_hits_total": "counter",
    "sluice_streams_open": "gauge",
    "sluice_streams_opened_total": "counter",
    "sluice_streams_last_event_id_total": "counter",
    "sluice_streams_ended_total": "counter",
    "sluice_resumes_total": "counter",
    "sluice_replayed_events_total": "counter",
    "sluice_slow_consumer_cuts_total": "counter",
    "sluice_events_queued_total": "counter",
    "sluice_events_delivered_total": "counter",
    "sluice_stream_bytes_written_total": "counter",
    "sluice_queued_bytes": "gauge",
    "sluice_stream_duration_seconds": "histogram",
    "sluice_time_to_first_event_seconds": "histogram",
    "sluice_nats_connected": "gauge",
    "sluice_nats_reconnects_total": "counter",
    "sluice_nats_subscriptions": "gauge",
    "sluice_nats_messages_total": "counter",
    "sluice_history_bytes": "gauge",
    "sluice_event_loop_lag_seconds": "gauge",
    "sluice_draining": "gauge",
}
END_REASONS = {"client", "slow_consumer", "unavailable", "drain", "token_expired", "limit"}
LIMITS = {"connections", "connections_per_address", "handshake_timeout", "idle_timeout",
          "stream_rate", "max_requests", "header_bytes", "flood"}
WORKERS = 2
STREAM_CAP = 1024
SLOW_PAYLOAD = 600


def check_catalogue(fams):
    for name, typ in README_METRICS.items():
        expect(name in fams, "README metric %s is missing from /metrics" % name)
        expect(fams[name]["type"] == typ, "%s is a %s, the README says %s"
               % (name, fams[name]["type"], typ))
    for name in fams:
        expect(name.startswith("sluice_"), "metric %s lacks the sluice_ prefix" % name)
    reasons = set(mu.labelled(fams, "sluice_streams_ended_total", "reason"))
    expect(END_REASONS <= reasons, "sluice_streams_ended_total reasons %r lack %r"
           % (sorted(reasons), sorted(END_REASONS - reasons)))
    limits = set(mu.labelled(fams, "sluice_limit_hits_total", "limit"))
    expect(LIMITS <= limits, "sluice_limit_hits_total limits %r lack %r"
           % (sorted(limits), sorted(LIMITS - limits)))
    results = set(mu.labelled(fams, "sluice_resumes_total", "result"))
    expect({"replayed", "reset"} <= results, "sluice_resumes_total results are %r" % results)
    mu.value(fams, "sluice_connections_open", protocol="h2")
    lag = mu.labelled(fams, "sluice_event_loop_lag_seconds", "worker")
    expect(set(lag) == {str(i) for i in range(WORKERS)},
           "sluice_event_loop_lag_seconds has workers %r, expected 0..%d"
           % (sorted(lag), WORKERS - 1))
    for w, v in lag.items():
        expect(0 <= v < 1.0 and not math.isnan(v), "worker %s's loop lag is %r s" % (w, v))


def hist_count(fams, name):
    return mu.value(fams, name + "_count")


def check_readyz(gw, status, body):
    st, text, _ = mu.admin_get(gw, "/readyz")
    expect((st, text.strip()) == (status, body), "/readyz answered %d %r, expected %d %r"
           % (st, text.strip(), status, body))


def wait_readyz(gw, status, body, timeout):
    last = [None]

    def ok():
        st, text, _ = mu.admin_get(gw, "/readyz")
        last[0] = (st, text.strip())
        return last[0] == (status, body)
    try:
        h.wait_until(ok, timeout, "/readyz %d %r" % (status, body), 0.1)
    except h.TestFailure:
        raise h.TestFailure("/readyz stayed %r, expected %d %r within %.0f s"
                            % (last[0], status, body, timeout))


def wait_quiet(gw, timeout=10):
    """Waits until no stream and no connection is open; returns that scrape."""
    def ok():
        fams = mu.scrape(gw)
        if (mu.value(fams, "sluice_streams_open") == 0
                and mu.value(fams, "sluice_connections_open", protocol="h2") == 0):
            return fams
        return None
    return h.wait_until(ok, timeout, "streams_open and connections_open{h2} back to 0", 0.1)


def test():
    with h.Nats() as nats, h.Gateway(nats.url, workers=WORKERS, stream_queue_bytes=STREAM_CAP,
                                     heartbeat_ms=60000, retry_jitter_pct=0) as gw:
        # -- health and readiness, then a clean baseline
        st, text, hdrs = mu.admin_get(gw, "/healthz")
        expect((st, text.strip()) == (200, "ok"), "/healthz answered %d %r" % (st, text))
        check_readyz(gw, 200, "ready")
        st, _, _ = mu.admin_get(gw, "/nope")
        expect(st == 404, "admin /nope answered %d, expected 404" % st)
        st, _, _ = mu.admin_get(gw, "/metrics", method="POST")
        expect(st == 405, "admin POST /metrics answered %d, expected 405" % st)
        fams = mu.scrape(gw)
        check_catalogue(fams)
        for name in ("sluice_streams_opened_total", "sluice_events_delivered_total",
                     "sluice_connections_accepted_total", "sluice_nats_reconnects_total",
                     "sluice_slow_consumer_cuts_total"):
            expect(mu.value(fams, name) == 0, "%s is %r before any traffic"
                   % (name, mu.value(fams, name)))
        expect(mu.value(fams, "sluice_nats_connected") == 1, "sluice_nats_connected is not 1")
        expect(mu.value(fams, "sluice_draining") == 0, "sluice_draining is not 0")

        # -- A: 20 streams, 10 events each
        a = h.Client(gw, ["--connections", "2", "--repeat-path", "/events/m.a:10",
                          "--expect-events", "10"], timeout_ms=20000)
        a.wait_ready(timeout=15)
        nats.wait_subscriptions(["m.a"])
        fams = mu.scrape(gw)
        expect(mu.value(fams, "sluice_streams_open") == 20, "sluice_streams_open is %r with 20 "
               "streams open" % mu.value(fams, "sluice_streams_open"))
        expect(mu.value(fams, "sluice_connections_open", protocol="h2") == 2,
               "sluice_connections_open{protocol=\"h2\"} is %r with 2 connections open"
               % mu.value(fams, "sluice_connections_open", protocol="h2"))
        with nu.NatsClient(nats.port) as pub:
            for i in range(1, 11):
                pub.pub("m.a", "e%d" % i)
            pub.flush()
        rc, rep = a.result()
        expect(rc == 0 and rep.get("events") == 200 and rep.get("min_events") == 10,
               "client A did not get 10 events on each of its 20 streams: %r" % rep)
        ids = [e["id"] for e in a.events() if e["stream"] == 0]
        expect(len(ids) == 10, "client A stream 0 logged %d events" % len(ids))
        wait_quiet(gw)

        # -- B: resume after event 5 -> 6..10 replayed
        rc, rep = h.run_client(gw, ["--path", "/events/m.a", "--header", "last-event-id: " + ids[4],
                                    "--expect-events", "5"], timeout=15)
        expect(rc == 0 and rep.get("events") == 5, "client B (resume) did not get 5 events: %r"
               % rep)
        # -- C: an id older than the history -> one reset event
        c = h.Client(gw, ["--path", "/events/m.a", "--header", "last-event-id: 1",
                          "--expect-events", "1"], timeout_ms=15000)
        rc, rep = c.result()
        evs = c.events()
        expect(rc == 0 and len(evs) == 1 and evs[0].get("event") == "reset",
               "client C (stale id) did not get exactly one reset event: %r %r" % (rep, evs))
        wait_quiet(gw)

        # -- D: one stalled stream cut by the slow-consumer policy
        mark = len(gw.log())
        d = h.Client(gw, ["--path", "/events/m.slow", "--window-size", "100",
                          "--stall-stream", "0"], timeout_ms=20000)
        d.wait_ready(timeout=10)
        nats.wait_subscriptions(["m.slow"])
        with nu.NatsClient(nats.port) as pub:
            for i in range(4):
                pub.pub("m.slow", ("s%d " % i).ljust(SLOW_PAYLOAD, "x"))
            pub.flush()
        gw.wait_log(r"slow consumer", timeout=10, start=mark)
        rc, rep = d.result()
        expect(rep.get("streams_reset", 0) + rep.get("streams_ended", 0) == 1,
               "client D's stalled stream did not end: %r" % rep)
        fams = wait_quiet(gw)

        # -- NATS down: not ready; back: ready, one reconnect
        nats.kill()
        h.log("nats-server killed")
        wait_readyz(gw, 503, "not ready: NATS disconnected", 10)
        fams = mu.scrape(gw)
        expect(mu.value(fams, "sluice_nats_connected") == 0, "sluice_nats_connected is %r while "
               "NATS is down" % mu.value(fams, "sluice_nats_connected"))
        st, text, _ = mu.admin_get(gw, "/healthz")
        expect(st == 200, "/healthz answered %d while NATS is down (the process is alive)" % st)
        nats.start()
        h.log("nats-server restarted on port %d" % nats.port)
        wait_readyz(gw, 200, "ready", 15)
        fams = mu.wait_metric(gw, "sluice_nats_reconnects_total", 1, timeout=5)
        expect(mu.value(fams, "sluice_nats_connected") == 1, "sluice_nats_connected is not 1 "
               "after the reconnect")
        # Twice: one reconnect counts one.
        nats.kill()
        wait_readyz(gw, 503, "not ready: NATS disconnected", 10)
        nats.start()
        wait_readyz(gw, 200, "ready", 15)
        fams = mu.wait_metric(gw, "sluice_nats_reconnects_total", 2, timeout=5)

        # -- the totals
        check_catalogue(fams)
        want = [
            ("sluice_streams_opened_total", {}, 23),
            ("sluice_streams_open", {}, 0),
            ("sluice_events_delivered_total", {}, 205),
            ("sluice_streams_ended_total", {"reason": "client"}, 22),
            ("sluice_streams_ended_total", {"reason": "slow_consumer"}, 1),
            ("sluice_streams_ended_total", {"reason": "drain"}, 0),
            ("sluice_streams_ended_total", {"reason": "unavailable"}, 0),
            ("sluice_streams_ended_total", {"reason": "token_expired"}, 0),
            ("sluice_streams_ended_total", {"reason": "limit"}, 0),
            ("sluice_resumes_total", {"result": "replayed"}, 1),
            ("sluice_resumes_total", {"result": "reset"}, 1),
            ("sluice_replayed_events_total", {}, 5),
            ("sluice_streams_last_event_id_total", {}, 2),
            ("sluice_slow_consumer_cuts_total", {}, 1),
            ("sluice_connections_open", {"protocol": "h2"}, 0),
            ("sluice_connections_accepted_total", {}, 5),
            ("sluice_tls_handshake_failures_total", {}, 0),
            ("sluice_nats_connected", {}, 1),
            ("sluice_nats_reconnects_total", {}, 2),
            ("sluice_nats_messages_total", {}, 14),
            ("sluice_queued_bytes", {}, 0),
            ("sluice_draining", {}, 0),
            ("sluice_time_to_first_event_seconds_count", {}, 21),
            ("sluice_stream_duration_seconds_count", {}, 23),
            ("sluice_connection_age_seconds_count", {}, 5),
        ]
        bad = []
        for name, labels, expected in want:
            got = mu.value(fams, name, **labels)
            if got != expected:
                bad.append("%s%s = %r, expected %r" % (name, labels or "", got, expected))
        for reason, v in mu.labelled(fams, "sluice_streams_ended_total", "reason").items():
            if reason not in ("client", "slow_consumer") and v != 0:
                bad.append("sluice_streams_ended_total{reason=%r} = %r, expected 0" % (reason, v))
        for limit, v in mu.labelled(fams, "sluice_limit_hits_total", "limit").items():
            if v != 0:
                bad.append("sluice_limit_hits_total{limit=%r} = %r, expected 0" % (limit, v))
        # Events queued: A's 200 live, B's 5 replayed, and D's at least one (it was cut
        # on a later one); the reset event is the gateway's own, not an event.
        queued = mu.value(fams, "sluice_events_queued_total")
        if not 206 <= queued <= 208:
            bad.append("sluice_events_queued_total = %r, expected 206..208" % queued)
        expect(mu.value(fams, "sluice_bytes_written_total")
               >= mu.value(fams, "sluice_stream_bytes_written_total") > 0,
               "bytes written to clients (%r) < SSE bytes (%r)"
               % (mu.value(fams, "sluice_bytes_written_total"),
                  mu.value(fams, "sluice_stream_bytes_written_total")))
        expect(mu.value(fams, "sluice_nats_subscriptions") >= 1,
               "no NATS subscription while m.a and m.slow linger (history-keep-ms)")
        expect(mu.value(fams, "sluice_history_bytes") > 0, "sluice_history_bytes is 0")
        # Cross-check with the access log: its per-stream events and bytes add up to
        # the counters (the log is written when a stream ends, and all have).
        streams = [e for e in u.read_jsonl(gw.access_log_path) if "subjects" in e]
        if len(streams) != 23:
            bad.append("the access log has %d stream lines, expected 23" % len(streams))
        else:
            for field, name in (("events", "sluice_events_delivered_total"),
                                ("bytes", "sluice_stream_bytes_written_total")):
                total = sum(e[field] for e in streams)
                if total != mu.value(fams, name):
                    bad.append("access log streams' %s add up to %d, %s is %r"
                               % (field, total, name, mu.value(fams, name)))
        expect(not bad, "metrics after the workload:\n  " + "\n  ".join(bad))
        h.log("all %d expected values match; e.g. delivered %r, ttfe count %r"
              % (len(want), mu.value(fams, "sluice_events_delivered_total"),
                 hist_count(fams, "sluice_time_to_first_event_seconds")))
        gw.stop()


if __name__ == "__main__":
    h.main(test, deadline_s=90)
