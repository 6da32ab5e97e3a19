#!/usr/bin/env python3
"""Issue 6 (5): conf/edge/haproxy.cfg, run unchanged by the real HAProxy in front
of a real sluice, streams SSE unbuffered with HTTP/2 on both sides.

- sluice-probe through HAProxy: ALPN h2 to the browser side, the
  advertised SETTINGS_MAX_CONCURRENT_STREAMS is the config's 1000, headers
  intact and uncompressed, time to first event under 100 ms, ten events
  100 ms apart each arriving on its own and under 100 ms, heartbeats
  (heartbeat-ms 300) carry the stream across a 1.2 s idle period, and an
  event after it still arrives at once.
- sluice's access log shows the stream arrived over h2: HAProxy spoke h2 to
  sluice too, not HTTP/1.1.
- curl --http2 -N through HAProxy, a client that is not ours: heartbeats
  arrive, each event in its own read, under 100 ms after publication.
- 150 streams on ONE browser connection (HAProxy's default would refuse
  past 100) each receive an event.
- The /readyz check is wired: SIGTERM on sluice makes HAProxy mark the
  gateway DOWN within a few seconds while the open stream is left to the
  gateway's own drain.

Issue 17, the client's address: the certified file sends a PROXY v2 header
(send-proxy-v2), so the gateway runs with --proxy-protocol listen and
--trusted-proxies 127.0.0.1. With --max-connections-per-address 3, 3 streams
from each of two clients (127.0.0.2, 127.0.0.3, each stream its own browser
connection) pass through HAProxy's one address; client 127.0.0.2's 4th
connection is refused by the gateway at its PROXY header, so HAProxy cannot
give it a 200; the access log shows the clients, via HAProxy, never a
client's own spoofed X-Forwarded-For; and a PROXY header sent straight to
the gateway by a peer outside trusted-proxies (127.0.0.4) is refused.
"""
import json
import os
import re
import signal
import socket
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import edge_util as eu  # noqa: E402
import harness as h  # noqa: E402
import metrics_util as mu  # noqa: E402
from harness import expect  # noqa: E402

HEARTBEAT_MS = 300
EVENTS = 10


# What the certified file needs of the gateway: its send-proxy-v2 header is believed.
PROXIED = dict(proxy_protocol="listen", trusted_proxies="127.0.0.1")


def client_addresses(nats):
    cap = 3
    where = "haproxy, client addresses"
    # Heartbeats make HAProxy notice a closed client at once (its next write fails), so
    # the streams end and are logged within the test's time.
    with h.Gateway(nats.url, max_connections_per_address=cap, heartbeat_ms=HEARTBEAT_MS,
                   **PROXIED) as gw, \
            eu.HAProxy(gw, eu.admin_port(gw)) as hap:
        edge = hap.edge(gw.ca)
        eu.wait_through(edge)
        streams = eu.open_client_streams(edge, cap, where)
        try:
            # HAProxy retries the refused connection (3 times, a second apart), then says 503.
            status = eu.curl_status(edge, "/events/edge.clients", max_time=8,
                                    extra=["--interface", eu.CLIENTS[0]])
            expect(status != 200, "%s: %s's connection past its cap got a 200"
                   % (where, eu.CLIENTS[0]))
            expect(mu.metric(gw, "sluice_limit_hits_total", limit="connections_per_address") >= 1,
                   "%s: the refusal was not counted" % where)
            h.log("%s: %s's 4th connection refused (HAProxy answered %s)"
                  % (where, eu.CLIENTS[0], status))
        finally:
            for s in streams:
                s.close()
        eu.check_logged_clients(gw, cap, where)
        # A PROXY header straight from a peer outside trusted-proxies: refused unanswered.
        raw = socket.socket()
        raw.bind(("127.0.0.4", 0))
        raw.settimeout(5)
        raw.connect((h.HOST, gw.port))
        try:
            raw.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n")
            got = raw.recv(100)
        except ConnectionResetError:
            got = b""  # closed at accept, the header unread: a reset
        expect(got == b"", "%s: a PROXY header from 127.0.0.4 was answered: %r" % (where, got))
        raw.close()
        mu.wait_metric(gw, "sluice_proxy_protocol_total", 1, result="untrusted")
        gw.check_alive()


def test():
    eu.need("haproxy")
    access_log = os.path.join(h.tempdir(), "access.log")
    with h.Nats() as nats, h.Gateway(nats.url, heartbeat_ms=HEARTBEAT_MS, admin="127.0.0.1:0",
                                     access_log=access_log, drain_ms=3000, **PROXIED) as gw:
        admin = eu.admin_port(gw)
        with eu.HAProxy(gw, admin) as hap:
            edge = hap.edge(gw.ca)
            eu.wait_through(edge)

            # 1. sluice-probe certifies the path.
            rep = eu.certify(edge.url("/events/edge.probe"), ca=gw.ca, connect=edge.authority,
                             args=["--nats", nats.url, "--subject", "edge.probe",
                                   "--events", str(EVENTS), "--interval-ms", "100",
                                   "--idle-ms", "1200", "--max-delay-ms", "100"],
                             events=EVENTS, where="haproxy")
            expect(rep["protocol"] == "h2" and rep["alpn"] == "h2",
                   "browser side is not h2: %r" % rep["protocol"])
            expect(rep["max_concurrent_streams"] == 1000,
                   "HAProxy advertises %r concurrent streams; conf/edge/haproxy.cfg sets 1000"
                   % rep["max_concurrent_streams"])
            expect(rep["headers"].get("content-type", "").startswith("text/event-stream") and
                   rep["headers"].get("cache-control") == "no-cache",
                   "headers changed on the way: %r" % rep["headers"])
            hb = rep["heartbeat"]
            expect(hb["idle_comments"] >= 2, "only %d heartbeats crossed HAProxy in 1.2 s at %d ms"
                   % (hb["idle_comments"], HEARTBEAT_MS))

            # 2. HAProxy spoke h2 to sluice: the gateway's access log line for that stream.
            line = h.wait_until(lambda: _access_line(access_log, "/events/edge.probe"), 5,
                                "the access log line of the probe's stream")
            expect(line["protocol"] == "h2",
                   "HAProxy reached sluice over %r, not h2" % line["protocol"])
            h.log("sluice saw the probe's stream over %s, %d events"
                  % (line["protocol"], line["events"]))

            # 3. curl --http2 -N, a real client that is not ours.
            eu.check_curl_stream(nats, edge, "edge.curl", where="haproxy")

            # 3b. The client's address, on a gateway of its own with a small per-address cap.
            client_addresses(nats)

            # 4. Many streams on one browser connection.
            n = 150
            with h.Client(edge, ["--repeat-path", "/events/edge.many:%d" % n,
                                 "--expect-events", "1"], timeout_ms=20000,
                          events_out=False) as c:
                c.wait_ready(timeout=15)
                nats.wait_subscriptions(["edge.many"])
                h.publish(nats.url, "edge.many", "to all")
                rc, report = c.result()
            expect(rc == 0 and report["status_counts"] == {"200": n} and
                   report["min_events"] >= 1,
                   "%d streams on one connection through HAProxy: %s" % (n, json.dumps(report)))
            h.log("%d streams on one h2 connection through HAProxy each got the event" % n)

            # 5. Readiness drives HAProxy; open streams are left to the gateway's drain.
            with h.CurlStream(edge, "/events/edge.drain", max_time=20) as s:
                _, _, off = s.wait_start(timeout=10)
                mark = len(hap.log())
                gw.proc.send_signal(signal.SIGTERM)
                hap.wait_server("DOWN", timeout=10, start=mark)
                h.log("HAProxy marked the draining gateway DOWN")
                # The gateway, not HAProxy, ends the stream, with a final retry: hint.
                s.wait_for(lambda b: s.eof or re.search(rb"retry: \d+\n", b[off:]), 10,
                           "the drain's final retry: or the end of the stream")
            gw.proc.wait(timeout=15)
            expect(gw.proc.returncode == 0, "gateway exit status %r after SIGTERM"
                   % gw.proc.returncode)


def _access_line(access_log, path):
    """The gateway's access log entry (one JSON line per ended stream) for path."""
    try:
        with open(access_log) as f:
            for ln in f:
                if ln.startswith("{") and '"path":"%s"' % path in ln:
                    return json.loads(ln)
    except OSError:
        pass
    return None


if __name__ == "__main__":
    h.main(test, deadline_s=60)
