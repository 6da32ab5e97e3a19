#!/usr/bin/env python3
"""Issue 6 (5): conf/edge/nginx.conf, rendered as its README says and run by the
real nginx in front of a real sluice, streams SSE unbuffered.

nginx speaks HTTP/2 to browsers and HTTP/1.1 to sluice (it cannot proxy h2
to an upstream), in one of two ways the config offers:

  https  TLS to sluice's --listen; nginx's proxy_ssl sends NO ALPN, so
         sluice must answer HTTP/1.1 on a TLS connection without ALPN
  http   cleartext to sluice's --listen-plain

Both ways are certified; a listener that refuses HTTP/1.1 fails the test
with the refusal as evidence (a skip here once hid exactly that regression).

Per way:
- sluice-probe through nginx over h2: headers intact and uncompressed,
  time to first event under 100 ms, ten events 100 ms apart each on its own
  and under 100 ms, heartbeats (heartbeat-ms 300) across 1.2 s of idle, an
  event after it; nginx advertises its http2_max_concurrent_streams 1000.
- the same probe as an HTTP/1.1 client of nginx (--http1.1): unbuffered too.
- curl --http2 -N through nginx: heartbeats arrive, each event in its own
  read, under 100 ms after publication.
- 150 streams on one browser connection each receive an event (past
  nginx's default limit of 128).

Issue 17, the client's address (a gateway with --trusted-proxies 127.0.0.1,
nginx's address, and --max-connections-per-address 3): nginx's
X-Forwarded-For names each browser, so 3 streams from each of two clients
(127.0.0.2, 127.0.0.3) pass through nginx, 6 from nginx's one address;
client 127.0.0.2's 4th is refused the EventSource way (200, retry:, end);
the access log shows the clients, via nginx, never a client's own spoofed
X-Forwarded-For; and a spoofed header sent straight to sluice from an
untrusted peer (127.0.0.4) is ignored.
"""
import json
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import edge_util as eu  # noqa: E402
import harness as h  # noqa: E402
from harness import expect  # noqa: E402

HEARTBEAT_MS = 300
EVENTS = 10


def certify_way(nats, gw, upstream_port, scheme):
    where = "nginx (%s upstream)" % scheme
    with eu.Nginx(gw, upstream_port, scheme) as ngx:
        edge = ngx.edge(gw.ca)
        eu.wait_through(edge)
        for proto_args, proto in (([], "h2"), (["--http1.1"], "http/1.1")):
            subject = "edge.probe.%s.%s" % (scheme, proto.replace("/", "").replace(".", ""))
            w = "%s, client %s" % (where, proto)
            rep = eu.certify(edge.url("/events/" + subject), ca=gw.ca, connect=edge.authority,
                             args=proto_args + [
                                 "--nats", nats.url, "--subject", subject,
                                 "--events", str(EVENTS), "--interval-ms", "100",
                                 "--idle-ms", "1200", "--max-delay-ms", "100"],
                             events=EVENTS, where=w)
            expect(rep["protocol"] == proto, "%s: the probe spoke %r" % (w, rep["protocol"]))
            if proto == "h2":
                expect(rep["max_concurrent_streams"] == 1000,
                       "%s: nginx advertises %r concurrent streams; the config sets 1000"
                       % (w, rep["max_concurrent_streams"]))
            ce = rep["headers"].get("content-encoding")
            expect(ce is None, "%s: compressed (%r)" % (w, ce))
            expect(rep["heartbeat"]["idle_comments"] >= 2, "%s: only %d heartbeats in 1.2 s idle"
                   % (w, rep["heartbeat"]["idle_comments"]))

        eu.check_curl_stream(nats, edge, "edge.curl." + scheme, where=where)

        n = 150
        with h.Client(edge, ["--repeat-path", "/events/edge.many.%s:%d" % (scheme, n),
                             "--expect-events", "1"], timeout_ms=20000, events_out=False) as c:
            c.wait_ready(timeout=15)
            nats.wait_subscriptions(["edge.many." + scheme])
            h.publish(nats.url, "edge.many." + scheme, "to all")
            rc, report = c.result()
        expect(rc == 0 and report["status_counts"] == {"200": n} and report["min_events"] >= 1,
               "%s: %d streams on one connection: %s" % (where, n, json.dumps(report)))
        h.log("%s: %d streams on one h2 connection each got the event" % (where, n))
        errors = [ln for ln in ngx.extra_log().splitlines() if "[error]" in ln or "[crit]" in ln]
        expect(not errors, "%s: nginx logged errors:\n%s" % (where, "\n".join(errors[-10:])))


def client_addresses(nats):
    cap = 3
    flags = dict(listen_plain="127.0.0.1:0", trusted_proxies="127.0.0.1",
                 max_connections_per_address=cap)
    where = "nginx, client addresses"
    with h.Gateway(nats.url, **flags) as gw, eu.Nginx(gw, eu.plain_port(gw), "http") as ngx:
        edge = ngx.edge(gw.ca)
        eu.wait_through(edge)
        streams = eu.open_client_streams(edge, cap, where)
        try:
            with eu.client_stream(edge, eu.CLIENTS[0], "edge-over") as over:
                over.wait_for(lambda b: over.eof, 10, "the end of the refused stream")
                version, status, _ = over.headers()
                expect(status == 200 and over.data().startswith(b"retry: ") and
                       b": too many streams from this address" in over.data(),
                       "%s: %s's stream past its cap: HTTP/%s %d %r"
                       % (where, eu.CLIENTS[0], version, status, over.data()))
        finally:
            for s in streams:
                s.close()
        eu.check_logged_clients(gw, cap, where)
        # Straight to sluice from a peer that is no trusted proxy: the header is ignored.
        r = h.curl(gw, "/nowhere", extra=["--interface", "127.0.0.4", "-H",
                                          "X-Forwarded-For: 192.0.2.99", "-H",
                                          "X-Request-Id: edge-direct-spoof"])
        expect(r.status == 404, "direct request: %r" % r.status)
        e = eu.access_entry(gw, "edge-direct-spoof")
        expect(e["client"].startswith("127.0.0.4:") and "via" not in e,
               "a spoofed X-Forwarded-For from an untrusted peer was believed: %r" % e)
        gw.check_alive()


def test():
    eu.need("nginx")
    flags = dict(heartbeat_ms=HEARTBEAT_MS, admin="127.0.0.1:0", listen_plain="127.0.0.1:0")
    with h.Nats() as nats, h.Gateway(nats.url, **flags) as gw:
        plain = eu.plain_port(gw)
        expect(plain is not None, "no cleartext listener port in the start-up line")
        ways = [("https", gw.port), ("http", plain)]
        for scheme, port in ways:
            why = eu.http1_refusal(port, tls=scheme == "https", alpn=None, ca=gw.ca)
            expect(why is None, "sluice refuses HTTP/1.1 on its %s listener, which nginx needs: %s"
                   % (scheme, why))
        for scheme, port in ways:
            certify_way(nats, gw, port, scheme)
            h.log("certified: nginx -> sluice over %s" % scheme)
        gw.check_alive()
        client_addresses(nats)


if __name__ == "__main__":
    h.main(test, deadline_s=60)
