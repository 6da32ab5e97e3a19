#!/usr/bin/env python3
"""Issue 6 (6): sluice-probe certifies good paths and flags broken ones.

Good (exit 0, every check pass):
- straight to sluice over TLS h2, publishing through NATS: protocol h2 and
  the gateway's --max-streams as SETTINGS_MAX_CONCURRENT_STREAMS, headers,
  first event under 100 ms, no bursts, heartbeats across 1 s idle; the
  readable report says the same;
- the same publishing through POST /publish (--publish-url);
- as an HTTP/1.1 client (ALPN http/1.1), when the gateway speaks it: a
  warning, not a failure, unless --require-h2.

Broken (exit 1, the right check failed):
- a gateway whose heartbeat (3 s) is longer than the idle period: no
  comment arrives, the heartbeat check fails;
- HAProxy from conf/edge/haproxy.cfg with its client/server timeouts cut to
  1 s in front of that gateway: the stream dies in the idle period ("streams
  die every 60 s", in miniature), the heartbeat check fails;
- HAProxy from conf/edge/haproxy.cfg with gzip on text/event-stream added:
  compression and buffering fail (runs whatever the gateway's HTTP/1.1);
- nginx from conf/edge/nginx.conf turned into the classic mistake (buffering
  on, X-Accel-Buffering ignored, big buffers, gzip on text/event-stream):
  compression and buffering fail; and the same without gzip seen by an
  HTTP/1.1 client: events held and released in bursts, buffering fails.
  (These need nginx to reach sluice over HTTP/1.1; when the gateway does
  not speak it yet, this part is skipped with the evidence.)
- a path that is not a stream (404), a port nobody listens on, usage errors
  (exit 2).
"""
import re
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import edge_util as eu  # noqa: E402
import harness as h  # noqa: E402
from harness import expect  # noqa: E402

MAX_STREAMS = 512


def result(rep, name):
    return eu.check_result(rep, name)["result"]


def good_paths(nats, gw):
    url = gw.url("/events/probe.direct")
    rep = eu.certify(url, ca=gw.ca, connect=gw.authority,
                     args=["--nats", nats.url, "--subject", "probe.direct", "--idle-ms", "1000",
                           "--max-delay-ms", "100"], events=10, where="direct")
    expect(rep["protocol"] == "h2" and rep["max_concurrent_streams"] == MAX_STREAMS,
           "direct: protocol %r, max streams %r; the gateway runs --max-streams %d"
           % (rep["protocol"], rep["max_concurrent_streams"], MAX_STREAMS))
    expect(rep["headers"]["content-type"] == "text/event-stream" and
           rep["headers"]["cache-control"] == "no-cache" and
           rep["headers"].get("x-accel-buffering") == "no",
           "direct: headers %r" % rep["headers"])
    expect(rep["heartbeat"]["idle_comments"] >= 2, "direct: %d heartbeats in 1 s at 300 ms"
           % rep["heartbeat"]["idle_comments"])
    for name in ("connect", "protocol", "status", "content-type", "cache-control",
                 "compression", "first byte", "first event", "buffering", "heartbeat",
                 "after idle", "stream"):
        # warn only when the probe itself stalled on a busy machine
        expect(result(rep, name) in ("pass", "warn"),
               "direct: check %s is %s" % (name, result(rep, name)))

    # The readable report says the same.
    p = h.spawn([eu.probe_bin(), gw.url("/events/probe.text"), "--cacert", gw.ca, "--connect", gw.authority, "--nats",
                 nats.url, "--subject", "probe.text", "--events", "3"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = p.communicate(timeout=30)
    text = out.decode()
    # Its format, not its timing (certified above): every check on a line, the
    # advertised limit, and a result line that agrees with the exit status.
    expect(p.returncode in (0, 1) and
           ("result: PASS" in text) == (p.returncode == 0) and
           all(re.search(r"^  (PASS|WARN|FAIL|SKIP)  %s " % n, text, re.M)
               for n in ("connect", "protocol", "status", "buffering", "stream")) and
           "SETTINGS_MAX_CONCURRENT_STREAMS %d" % MAX_STREAMS in text,
           "text report (exit %d):\n%s" % (p.returncode, text))
    h.log("text report:\n" + text.rstrip())

    # Publishing through the gateway's own POST /publish.
    rep = eu.certify(gw.url("/events/probe.post"), ca=gw.ca, connect=gw.authority,
                     args=["--publish-url", gw.url("/publish/probe.post"), "--max-delay-ms", "100"],
                     events=10, where="publish-url")
    expect(rep["events"]["received"] == 10 and rep["events"]["publish_errors"] == 0,
           "publish-url: %r" % rep["events"])

    # As an HTTP/1.1 client.
    why = eu.http1_refusal(gw.port, tls=True, alpn=("http/1.1",), ca=gw.ca)
    if why is not None:
        h.log("HTTP/1.1 client run skipped, the gateway refuses it: %s" % why)
        return
    rep = eu.certify(gw.url("/events/probe.h1"), ca=gw.ca, connect=gw.authority,
                     args=["--http1.1", "--nats", nats.url, "--subject", "probe.h1",
                           "--max-delay-ms", "100"], events=10, where="direct http/1.1")
    expect(rep["protocol"] == "http/1.1" and result(rep, "protocol") == "warn",
           "http/1.1: protocol %r, check %s" % (rep["protocol"], result(rep, "protocol")))
    rc, rep, _ = eu.run_probe(url, ca=gw.ca, connect=gw.authority,
                              args=["--http1.1", "--require-h2"])
    expect(rc == 1 and result(rep, "protocol") == "fail",
           "--require-h2 over HTTP/1.1: exit %d, protocol %s" % (rc, result(rep, "protocol")))


def without_proxy_header(text):
    """conf/edge/haproxy.cfg without send-proxy-v2: these gateways are probed
    directly too, so their listeners take no PROXY header; these hops are
    about timeouts and compression, not client addresses."""
    expect(text.count(" proto h2 send-proxy-v2 ") == 1, "conf/edge/haproxy.cfg no longer sends PROXY v2")
    return text.replace(" proto h2 send-proxy-v2 ", " proto h2 ")


def dying_streams(nats, slow_gw):
    # Heartbeat interval above the idle period: no comment arrives.
    rc, rep, _ = eu.run_probe(slow_gw.url("/events/probe.quiet"), ca=slow_gw.ca,
                              connect=slow_gw.authority,
                              args=["--nats", nats.url, "--subject", "probe.quiet",
                                    "--events", "3", "--idle-ms", "800"])
    expect(rc == 1 and result(rep, "heartbeat") == "fail" and not rep["stream_closed"],
           "heartbeat 3 s, idle 0.8 s: exit %d, %s" % (rc, eu.summary(rep)))

    # A hop whose idle timeouts are below the heartbeat interval cuts the stream.
    text = open(eu.HAPROXY_CFG).read()
    for k in ("client", "server"):
        old = "    timeout %s 60s\n" % k
        expect(text.count(old) == 1, "conf/edge/haproxy.cfg no longer has %r" % old)
        text = text.replace(old, "    timeout %s 1s\n" % k)
    text = without_proxy_header(text)
    with eu.HAProxy(slow_gw, eu.admin_port(slow_gw), text=text) as hap:
        edge = hap.edge(slow_gw.ca)
        eu.wait_through(edge)
        rc, rep, _ = eu.run_probe(edge.url("/events/probe.cut"), ca=slow_gw.ca,
                                  connect=edge.authority,
                                  args=["--nats", nats.url, "--subject", "probe.cut",
                                        "--events", "3", "--idle-ms", "2000"])
        hb = eu.check_result(rep, "heartbeat")
        expect(rc == 1 and hb["result"] == "fail" and rep["stream_closed"] and
               "stream closed" in hb["detail"],
               "HAProxy with 1 s timeouts, heartbeat 3 s: exit %d, %s" % (rc, hb))
        h.log("flagged: %s" % hb["detail"])


def compressing_haproxy(nats, gw):
    """HAProxy from conf/edge/haproxy.cfg plus gzip on text/event-stream: h2 on both
    sides, so this runs whatever the gateway's HTTP/1.1 support."""
    text = open(eu.HAPROXY_CFG).read()
    old = "    option http-no-delay\n"
    expect(text.count(old) == 1, "conf/edge/haproxy.cfg no longer has %r" % old)
    text = text.replace(old, old + "    compression algo gzip\n"
                                   "    compression type text/event-stream\n")
    text = without_proxy_header(text)
    with eu.HAProxy(gw, eu.admin_port(gw), text=text) as hap:
        edge = hap.edge(gw.ca)
        eu.wait_through(edge)
        rc, rep, _ = eu.run_probe(edge.url("/events/probe.hapgz"), ca=gw.ca,
                                  connect=edge.authority,
                                  args=["--nats", nats.url, "--subject", "probe.hapgz",
                                        "--events", "5", "--head-wait-ms", "1000"])
        expect(rc == 1 and result(rep, "compression") == "fail" and
               result(rep, "buffering") == "fail" and
               rep["headers"].get("content-encoding") == "gzip",
               "compressing HAProxy: exit %d, %s, headers %r" % (rc, eu.summary(rep),
                                                                 rep["headers"]))
        h.log("compressing HAProxy flagged: %s" % eu.check_result(rep, "compression")["detail"])


def buffering_nginx(nats, gw):
    why = eu.http1_refusal(gw.port, tls=True, alpn=None, ca=gw.ca)
    expect(why is None, "nginx can only proxy HTTP/1.1 to sluice, and sluice refuses it: %s"
           % why)
    scheme, port = "https", gw.port
    base = open(eu.NGINX_CONF).read()

    # gzip on text/event-stream, buffering on: flagged over h2.
    with eu.Nginx(gw, port, scheme, text=eu.buffering_variant(base, gzip=True)) as ngx:
        edge = ngx.edge(gw.ca)
        rc, rep, _ = eu.run_probe(edge.url("/events/probe.gzip"), ca=gw.ca,
                                  connect=edge.authority,
                                  args=["--nats", nats.url, "--subject", "probe.gzip",
                                        "--head-wait-ms", "1000"])
        expect(rc == 1 and result(rep, "buffering") == "fail",
               "gzip + buffering nginx: exit %d, %s" % (rc, eu.summary(rep)))
        # The compressor holds even the response head until its block fills;
        # if it ever comes, it says gzip.
        if rep["status"]:
            expect(result(rep, "compression") == "fail", "gzip not flagged: %s"
                   % eu.summary(rep))
        else:
            expect(result(rep, "response") == "fail", "held head not flagged: %s"
                   % eu.summary(rep))
        h.log("gzip nginx flagged: %s" % eu.check_result(rep, "buffering")["detail"])

    # Buffering on, 4 KiB buffers, an HTTP/1.1 client: events held, released in bursts.
    with eu.Nginx(gw, port, scheme, text=eu.buffering_variant(base, gzip=False,
                                                              buffers="4k")) as ngx:
        edge = ngx.edge(gw.ca)
        rc, rep, _ = eu.run_probe(edge.url("/events/probe.buf"), ca=gw.ca,
                                  connect=edge.authority,
                                  args=["--http1.1", "--nats", nats.url, "--subject", "probe.buf",
                                        "--events", "20", "--event-bytes", "1500",
                                        "--head-wait-ms", "500"])
        ev = rep["events"]
        expect(rc == 1 and result(rep, "buffering") == "fail" and
               (ev["batched"] > 0 or ev["received"] < ev["published"]),
               "buffering nginx, HTTP/1.1 client: exit %d, %s, events %r"
               % (rc, eu.summary(rep), ev))
        h.log("buffering nginx flagged: %s" % eu.check_result(rep, "buffering")["detail"])


def errors(gw):
    rc, rep, _ = eu.run_probe(gw.url("/nothing-here"), ca=gw.ca, connect=gw.authority)
    expect(rc == 1 and result(rep, "status") == "fail" and result(rep, "content-type") == "fail",
           "404: exit %d, %s" % (rc, eu.summary(rep)))
    rc, rep, _ = eu.run_probe("https://localhost:%d/events/x" % h.free_port(), ca=gw.ca)
    expect(rc == 1 and result(rep, "connect") == "fail", "closed port: exit %d, %s"
           % (rc, eu.summary(rep)))
    rc, rep, _ = eu.run_probe(gw.url("/events/x"), connect=gw.authority)  # no --cacert
    expect(rc == 1 and "certificate" in eu.check_result(rep, "connect")["detail"],
           "untrusted certificate: exit %d, %s" % (rc, eu.check_result(rep, "connect")))
    for args in ([], ["https://x/", "--nats", "nats://127.0.0.1:1"], ["ftp://x/"]):
        p = h.spawn([eu.probe_bin()] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.communicate(timeout=10)
        expect(p.returncode == 2, "usage %r: exit %d, expected 2" % (args, p.returncode))


def test():
    eu.need("haproxy")
    eu.need("nginx")
    flags = dict(heartbeat_ms=300, admin="127.0.0.1:0", max_streams=MAX_STREAMS,
                 listen_plain="127.0.0.1:0")
    with h.Nats() as nats, h.Gateway(nats.url, **flags) as gw, \
            h.Gateway(nats.url, heartbeat_ms=3000, admin="127.0.0.1:0") as slow_gw:
        good_paths(nats, gw)
        errors(gw)
        dying_streams(nats, slow_gw)
        compressing_haproxy(nats, gw)
        buffering_nginx(nats, gw)
        gw.check_alive()
        slow_gw.check_alive()


if __name__ == "__main__":
    h.main(test, deadline_s=60)
