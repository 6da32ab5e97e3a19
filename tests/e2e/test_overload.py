#!/usr/bin/env python3
"""Overload: streams past the process's capacity get what an EventSource respects.

What broke: nothing bounded the streams one process admits, so a reconnect
storm after a restart could take the gateway down, and a refusal as a 5xx
or 429 would have stopped every EventSource for good.

streams_total: --max-streams-total 50 (refusal retry 5000-9000 ms). 50
streams on one h2 connection start normally; /readyz turns 503 (above the
90 % high-water mark). 30 more: 20 on a second h2 connection (opened in
one write, with /metrics scraped while they are answered), 5 with curl
--http2 and 5 over HTTP/1.1 on the plain listener. Each of the 30 is a 200
`text/event-stream` whose whole body is `retry: N` (5000 <= N <= 9000, not
all the same) and one comment, then END_STREAM: no `id:` (the client keeps
its Last-Event-ID), no reset, no 5xx/429. sluice_limit_hits_total
{limit="streams_total"} is 30, one log line says so. The 50 streams are
untouched (an event published now reaches all of them). Once they close,
/readyz is 200 again and a new stream starts normally.

admission_rate: --stream-admission-rate 10: 30 streams sent in one write;
about 10 start (the bucket holds 10; a token more may refill meanwhile),
the rest get the same refusal, counted under limit="stream_admission_rate".
"""
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import h1_util as h1u  # noqa: E402
import h2_util as h2  # noqa: E402
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
import nats_util as nu  # noqa: E402
from harness import expect  # noqa: E402

CAP = 50
RETRY_MIN, RETRY_MAX = 5000, 9000
REFUSAL_RE = re.compile(rb"retry: (\d+)\n\n: over capacity, reconnect later\n\n\Z")


def check_refusal(body, what):
    """The retry of a refused stream's body (bytes)."""
    m = REFUSAL_RE.match(bytes(body))
    expect(m, "%s: not a capacity refusal: %r" % (what, bytes(body)[:200]))
    n = int(m.group(1))
    expect(RETRY_MIN <= n <= RETRY_MAX, "%s: retry %d outside [%d, %d]"
           % (what, n, RETRY_MIN, RETRY_MAX))
    return n


def readyz(gw):
    return mu.admin_get(gw, "/readyz")


def streams_total(nats):
    with h1u.gateway(nats.url, workers=2, max_streams_total=CAP,
                     overload_retry_min_ms=RETRY_MIN, overload_retry_max_ms=RETRY_MAX,
                     heartbeat_ms=60000) as gw:
        st, body, _ = readyz(gw)
        expect(st == 200, "/readyz before any stream: %d %s" % (st, body))
        main = h2.H2Conn(gw)
        ok = main.open_many(["/events/ov.a"] * CAP)
        main.wait(lambda _: all(h.START_RE.match(bytes(s.body)) for s in ok), 15,
                  "the %d admitted streams' start items" % CAP)
        st, body, _ = readyz(gw)
        h.log("%d streams open (cap %d): /readyz %d %s" % (CAP, CAP, st, body.strip()))
        expect(st == 503 and "capacity" in body,
               "/readyz with %d of %d streams open: %d %r" % (CAP, CAP, st, body))

        mark, began = len(gw.log()), time.monotonic()
        burst = h2.H2Conn(gw)
        over = burst.open_many(["/events/ov.a"] * 20, headers=[("last-event-id", "123")])
        t0 = time.monotonic()
        fams = mu.scrape(gw)  # the admin listener answers while the burst is served
        h.log("/metrics answered in %.3f s during the burst" % (time.monotonic() - t0))
        expect(fams, "no /metrics during the burst")
        burst.wait(lambda _: all(s.closed for s in over), 10, "the 20 refused h2 streams to end")
        retries = []
        for s in over:
            expect(s.reset_code is None, "refused stream %d was reset (%s), not ended"
                   % (s.id, s.reset_code))
            retries.append(check_refusal(s.body, "h2 stream %d" % s.id))
        for i in range(5):
            r = h.curl(gw, "/events/ov.a")
            expect(r.status == 200, "curl --http2 past the cap: status %d" % r.status)
            expect(dict(r.headers).get("content-type", "").startswith("text/event-stream"),
                   "curl past the cap: content-type %r" % dict(r.headers).get("content-type"))
            retries.append(check_refusal(r.body, "curl %d" % i))
        for i in range(5):
            r, _ = h1u.one(gw, h1u.get("/events/ov.a", extra="Last-Event-ID: 7\r\n"))
            expect(r.status == 200, "HTTP/1.1 past the cap: status %d" % r.status)
            expect((r.header("content-type") or "").startswith("text/event-stream"),
                   "HTTP/1.1 past the cap: content-type %r" % r.header("content-type"))
            retries.append(check_refusal(r.body, "HTTP/1.1 %d" % i))
        span = time.monotonic() - began
        h.log("30 refusals in %.1f s, retry: %d..%d ms" % (span, min(retries), max(retries)))
        expect(len(set(retries)) > 5, "refusal retries are not jittered: %r" % retries)

        fams = mu.scrape(gw)
        hits = mu.value(fams, "sluice_limit_hits_total", limit="streams_total")
        expect(hits == 30, "sluice_limit_hits_total{limit=\"streams_total\"} is %r, expected 30"
               % hits)
        expect(mu.value(fams, "sluice_streams_admitted") == CAP,
               "sluice_streams_admitted is %r" % mu.value(fams, "sluice_streams_admitted"))
        lines = re.findall(r"overload: refusing new streams.*", gw.log()[mark:])
        expect(1 <= len(lines) <= span + 2, "expected at most one overload log line a second, "
               "got %d in %.1f s:\n%s" % (len(lines), span, "\n".join(lines)))
        st, _, _ = readyz(gw)
        expect(st == 503, "/readyz turned %d while still at capacity" % st)

        # The admitted streams are untouched.
        with nu.NatsClient(nats.port) as pub:
            pub.pub("ov.a", "after the burst")
            pub.flush()
        main.wait(lambda _: all(b"data: after the burst\n" in bytes(s.body) for s in ok), 10,
                  "the event on every admitted stream")
        expect(not any(s.closed for s in ok), "an admitted stream ended during the burst")

        main.close()
        burst.close()
        h.wait_until(lambda: readyz(gw)[0] == 200, 10, "/readyz 200 after the streams closed")
        expect(mu.value(mu.scrape(gw), "sluice_streams_admitted") == 0, "slots not given back")
        again = h2.H2Conn(gw)
        s = again.open_many(["/events/ov.a"])[0]
        again.wait(lambda _: h.START_RE.match(bytes(s.body)), 10, "a stream after the storm")
        again.close()


def admission_rate(nats):
    with h.Gateway(nats.url, workers=2, stream_admission_rate=10,
                   overload_retry_min_ms=RETRY_MIN, overload_retry_max_ms=RETRY_MAX,
                   heartbeat_ms=60000) as gw:
        c = h2.H2Conn(gw)
        ss = c.open_many(["/events/ov.r"] * 30)
        c.wait(lambda _: all(h.START_RE.match(bytes(s.body)) or s.closed for s in ss), 10,
               "every stream to start or be refused")
        started = [s for s in ss if h.START_RE.match(bytes(s.body))]
        refused = [s for s in ss if s not in started]
        for s in refused:
            expect(s.reset_code is None, "stream %d reset" % s.id)
            check_refusal(s.body, "stream %d" % s.id)
        hits = mu.value(mu.scrape(gw), "sluice_limit_hits_total", limit="stream_admission_rate")
        h.log("stream-admission-rate 10: %d started, %d refused, counted %r"
              % (len(started), len(refused), hits))
        expect(10 <= len(started) <= 12, "%d of 30 streams started at 10/s" % len(started))
        expect(hits == len(refused), "counted %r refusals, saw %d" % (hits, len(refused)))
        c.close()


def test():
    with h.Nats() as nats:
        for case in (streams_total, admission_rate):
            h.log("== %s" % case.__name__)
            case(nats)


if __name__ == "__main__":
    h.main(test)
