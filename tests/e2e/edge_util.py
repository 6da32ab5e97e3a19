"""Helpers for the edge tests: the real nginx and the real HAProxy in front of
a real sluice, run from the certified files in conf/edge/, and sluice-probe.

The certified files are used as shipped: conf/edge/haproxy.cfg unchanged
(its site values are environment variables HAProxy expands itself), and
conf/edge/nginx.conf with its ${...} placeholders filled in exactly as the
README's envsubst line does, then included from a minimal test nginx.conf
(pid, logs and temp paths in a temp dir; one process, so killing its PID
leaves nothing behind).

Each proxy listens on a free loopback port; a port lost to a race between
picking and binding is retried. Everything started here goes through
harness.spawn, so the harness kills it by PID at exit.

Also here: the check that a listener answers HTTP/1.1 the way nginx asks
(on TLS without ALPN, and in cleartext); a refusal fails the edge tests.
"""

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import harness as h
import nats_util as nu
from harness import HOST, TestFailure, expect

EDGE_DIR = os.path.join(h.SRC, "conf", "edge")
NGINX_CONF = os.path.join(EDGE_DIR, "nginx.conf")
HAPROXY_CFG = os.path.join(EDGE_DIR, "haproxy.cfg")

# The placeholders conf/edge/nginx.conf documents, and nothing else: nginx's
# own $variables must survive the substitution.
NGINX_VARS = ("EDGE_LISTEN", "EDGE_SERVER_NAME", "EDGE_CERT", "EDGE_KEY", "SLUICE_ADDR",
              "SLUICE_SCHEME", "SLUICE_TLS_NAME", "SLUICE_CA")


# ---------------------------------------------------------------------------
# tools


def need(prog):
    path = shutil.which(prog) or shutil.which(prog, path="/usr/sbin:/sbin")
    if not path:
        raise TestFailure("%s is not installed (scripts/deps.sh installs it)" % prog)
    return path


def probe_bin():
    """sluice-probe: $SLUICE_PROBE, else next to the gateway in the build dir."""
    path = os.environ.get("SLUICE_PROBE")
    if not path:
        path = os.path.join(os.path.dirname(h.tool("SLUICE_BIN", "sluice")), "sluice-probe")
    expect(os.access(path, os.X_OK), "sluice-probe not found at %s (build the sluice-probe "
           "target, or set SLUICE_PROBE)" % path)
    return path


def run_probe(url, args=(), ca=None, connect=None, timeout=30):
    """Runs sluice-probe --json to completion; returns (exit code, report dict, stderr)."""
    cmd = [probe_bin(), url, "--json"]
    if ca:
        cmd += ["--cacert", ca]
    if connect:
        cmd += ["--connect", connect]
    cmd += list(args)
    h.log("probe: %s" % " ".join(cmd[1:]))
    p = h.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise TestFailure("sluice-probe ran over %d s: %s" % (timeout, " ".join(cmd)))
    out = out.decode("utf-8", "replace")
    err = err.decode("utf-8", "replace")
    report = None
    for ln in reversed(out.splitlines()):
        if ln.startswith("{"):
            report = json.loads(ln)
            break
    expect(report is not None or p.returncode == 2,
           "sluice-probe exited %d without a JSON report: %r %r" % (p.returncode, out[-500:],
                                                                    err[-500:]))
    if report is not None:
        h.log("probe: exit %d, %s" % (p.returncode, summary(report)))
    return p.returncode, report, err


def summary(report):
    return "; ".join("%s %s" % (c["name"], c["result"]) for c in report["checks"])


def check_result(report, name):
    for c in report["checks"]:
        if c["name"] == name:
            return c
    raise TestFailure("probe report has no %r check: %s" % (name, summary(report)))


def expect_probe_pass(rc, report, where):
    """A clean certification: exit 0, every check pass (or a documented warn)."""
    bad = [c for c in report["checks"] if c["result"] == "fail"]
    expect(rc == 0 and report["ok"] and not bad,
           "%s: sluice-probe exited %d; failed checks: %s" % (where, rc, json.dumps(bad)))


def unbuffered_problems(rc, report, events, limit_ms=100.0):
    """What keeps a probe run from meeting the issue's bar: exit 0, the first event
    under limit_ms, every event received, one at a time, none later than limit_ms.

    Events the probe read as it woke from a stall of its own (a busy machine
    descheduled it) say nothing about the path and are not judged; too many
    of them is itself a problem.
    """
    out = ["check %s failed: %s" % (c["name"], c["detail"])
           for c in report["checks"] if c["result"] == "fail"]
    if rc != 0 and not out:
        out.append("exit status %d" % rc)
    ev = report["events"]
    stalled = set(ev["stalled"])
    first = report["timings_ms"]["first_event"]
    if 0 not in stalled and not (first is not None and first < limit_ms):
        out.append("time to first event %s ms, must be under %.0f ms" % (first, limit_ms))
    if not (ev["published"] >= events and ev["received"] == ev["published"]):
        out.append("%d of %d events received" % (ev["received"], ev["published"]))
    if len(stalled) > events // 2:
        out.append("%d of %d events read after stalls of the probe itself (up to %.0f ms)"
                   % (len(stalled), events, ev["probe_stall_max_ms"]))
    late = [(i, d) for i, d in enumerate(ev["delays_ms"])
            if d is not None and d >= limit_ms and i not in stalled]
    if late:
        out.append("late events (index, ms): %r, limit %.0f" % (late, limit_ms))
    # One at a time: consecutive events arrive about as far apart as they were
    # published (the probe's own schedule can slip on a loaded machine).
    pub, recv = ev["published_at_ms"], ev["received_at_ms"]
    for i in range(1, events):
        if i in stalled or i - 1 in stalled or recv[i] is None or recv[i - 1] is None:
            continue
        pg, rg = pub[i] - pub[i - 1], recv[i] - recv[i - 1]
        if rg <= pg / 2:
            out.append("events %d and %d were published %.0f ms apart but arrived %.1f ms "
                       "apart (batched)" % (i - 1, i, pg, rg))
    return out


def _marginal(report):
    """A timing miss a busy machine can cause, as opposed to a hop that holds events:
    every event arrived, in order, none a second late, and only timing checks failed."""
    ev = report["events"]
    delays = [d for d in ev["delays_ms"] if d is not None]
    failed = {c["name"] for c in report["checks"] if c["result"] == "fail"}
    return (ev["received"] == ev["published"] and ev["publish_errors"] == 0 and
            ev["out_of_order"] == 0 and bool(delays) and max(delays) < 1000 and
            failed <= {"first event", "buffering", "after idle"})


def certify(url, args, ca, connect, events, where, limit_ms=100.0):
    """Runs sluice-probe on url and fails unless it certifies the path unbuffered.

    On a shared machine a scheduler hiccup in any process on the path can
    push one event past 100 ms (and the next one with it); a hop that
    buffers misses every time. So a run that misses the bar only marginally
    (see _marginal) is repeated, up to twice, and the last run decides.
    Returns the passing report.
    """
    for attempt in (1, 2, 3):
        rc, report, _ = run_probe(url, ca=ca, connect=connect, args=args)
        problems = unbuffered_problems(rc, report, events, limit_ms)
        if not problems:
            return report
        if attempt < 3 and _marginal(report):
            h.log("%s: marginal timing miss, running the probe once more: %s"
                  % (where, "; ".join(problems)))
            continue
        raise TestFailure("%s: not certified: %s" % (where, "; ".join(problems)))


# ---------------------------------------------------------------------------
# what the gateway speaks


def admin_port(gw):
    m = h.wait_until(lambda: re.search(r"admin on http://127\.0\.0\.1:(\d+)", gw.log()), 5,
                     "the admin port in the gateway's start-up line")
    return int(m.group(1))


def plain_port(gw):
    m = re.search(r"plain on http://127\.0\.0\.1:(\d+)", gw.log())
    return int(m.group(1)) if m else None


def http1_refusal(port, tls, alpn=None, ca=None, timeout=5):
    """Whether the listener on port answers GET over HTTP/1.1; returns None when it
    does, else the evidence of the refusal (a string).

    tls with alpn=None sends no ALPN extension at all: nginx's proxy_ssl does
    exactly that, so this is the handshake nginx will make.
    """
    req = (b"GET /events/edge.detect HTTP/1.1\r\nHost: localhost\r\n"
           b"Accept: text/event-stream\r\n\r\n")
    try:
        raw = socket.create_connection((HOST, port), timeout=timeout)
    except OSError as e:
        return "connect: %s" % e
    try:
        s = raw
        if tls:
            ctx = ssl.create_default_context(cafile=ca)
            if alpn:
                ctx.set_alpn_protocols(list(alpn))
            try:
                s = ctx.wrap_socket(raw, server_hostname="localhost")
            except (ssl.SSLError, OSError) as e:
                return "TLS handshake with %s refused: %s" % (
                    "ALPN %s" % ",".join(alpn) if alpn else "no ALPN", e)
            if alpn and s.selected_alpn_protocol() not in (None, "http/1.1"):
                return "ALPN selected %r, not http/1.1" % s.selected_alpn_protocol()
        s.settimeout(timeout)
        s.sendall(req)
        got = b""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in got and time.monotonic() < deadline:
            try:
                b = s.recv(4096)
            except (ssl.SSLError, OSError) as e:
                return "closed after the request: %s (read %r)" % (e, got[:80])
            if not b:
                return "closed after the request without an answer (read %r)" % got[:80]
            got += b
        if not re.match(rb"HTTP/1\.1 \d{3} ", got):
            return "answered %r, not an HTTP/1.1 status line" % got[:80]
        return None
    finally:
        raw.close()


# ---------------------------------------------------------------------------
# the proxies


class Edge:
    """What the harness's clients need to reach a proxy (CurlStream, Client)."""

    def __init__(self, port, ca):
        self.port = port
        self.ca = ca

    @property
    def authority(self):
        return "%s:%d" % (HOST, self.port)

    def url(self, path):
        return "https://localhost:%d%s" % (self.port, path)


def render_nginx(values, text=None):
    """conf/edge/nginx.conf with the documented placeholders filled in."""
    text = text if text is not None else open(NGINX_CONF).read()
    missing = [v for v in NGINX_VARS if v not in values]
    expect(not missing, "no value for %s" % missing)

    def sub(m):
        return values[m.group(1)] if m.group(1) in NGINX_VARS else m.group(0)
    out = re.sub(r"\$\{(\w+)\}", sub, text)
    left = re.findall(r"\$\{\w+\}", out)
    expect(not left, "conf/edge/nginx.conf has placeholders the README does not list: %s" % left)
    return out


def buffering_variant(text, gzip=True, buffers="64k"):
    """The certified nginx file turned into the classic mistakes, and nothing else:
    buffering on (ignoring sluice's X-Accel-Buffering: no), large buffers, and
    optionally gzip on text/event-stream."""
    def swap(old, new):
        nonlocal text
        expect(text.count(old) == 1, "conf/edge/nginx.conf no longer has %r once" % old)
        text = text.replace(old, new)
    swap("proxy_buffering off;",
         "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering; "
         "proxy_buffer_size %s; proxy_buffers 4 %s; proxy_busy_buffers_size %s;"
         % (buffers, buffers, buffers))
    if gzip:
        swap("gzip off;", "gzip on; gzip_types text/event-stream; gzip_min_length 0; "
                          "gzip_proxied any;")
    return text


class Proxy:
    """A proxy process on a free loopback port; subclasses say how to start it."""

    name = "proxy"

    def __init__(self):
        self.dir = h.tempdir("sluice-edge-")
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.dir, "stderr")

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        return text + self.extra_log()

    def extra_log(self):
        return ""

    def _start(self, make_cmd, attempts=5, timeout=10):
        """make_cmd(port) -> (argv, env or None); retried when the port was taken."""
        last = ""
        for _ in range(attempts):
            self.port = h.free_port()
            cmd, env = make_cmd(self.port)
            with open(self.log_path, "wb") as lf:
                self.proc = h.spawn(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if h.tcp_open(self.port):
                    h.log("%s pid %d on port %d" % (self.name, self.proc.pid, self.port))
                    return self
                time.sleep(0.05)
            last = self.log()
            h.kill_proc(self.proc)
            if "ddress already in use" not in last and "cannot bind" not in last:
                break
        raise TestFailure("%s did not start:\n%s" % (self.name, h.tail(last, 20)))

    def edge(self, ca):
        return Edge(self.port, ca)

    def stop(self):
        h.kill_proc(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            print("---- %s log:\n%s\n----" % (self.name, h.tail(self.log(), 30)), flush=True)
        self.stop()
        return False


class Nginx(Proxy):
    """Debian's nginx with an include rendered from conf/edge/nginx.conf (or a variant)."""

    name = "nginx"

    def __init__(self, gw, upstream_port, scheme, text=None):
        super().__init__()
        self.text = text
        nginx = need("nginx")
        d = self.dir
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(d, sub))

        def make(port):
            values = {"EDGE_LISTEN": "%s:%d" % (HOST, port), "EDGE_SERVER_NAME": "localhost",
                      "EDGE_CERT": gw.cert, "EDGE_KEY": gw.key,
                      "SLUICE_ADDR": "%s:%d" % (HOST, upstream_port), "SLUICE_SCHEME": scheme,
                      "SLUICE_TLS_NAME": "localhost", "SLUICE_CA": gw.ca}
            with open(os.path.join(d, "sluice.conf"), "w") as f:
                f.write(render_nginx(values, self.text))
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(_NGINX_MAIN % {"d": d})
            return [nginx, "-p", d, "-c", os.path.join(d, "nginx.conf"),
                    "-e", os.path.join(d, "error.log")], None
        self._start(make)

    def extra_log(self):
        try:
            with open(os.path.join(self.dir, "error.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


# Test scaffolding only, not part of the certified include: one process
# (master_process off) so that the PID the harness kills is all of nginx,
# and every path inside the temp dir.
_NGINX_MAIN = """daemon off;
master_process off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log info;
events { worker_connections 4096; }
http {
    access_log %(d)s/access.log;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    include %(d)s/sluice.conf;
}
"""


class HAProxy(Proxy):
    """Debian's haproxy running conf/edge/haproxy.cfg unchanged (or a variant)."""

    name = "haproxy"

    def __init__(self, gw, admin, text=None):
        super().__init__()
        haproxy = need("haproxy")
        pem = os.path.join(self.dir, "edge.pem")
        with open(pem, "w") as out:
            for part in (gw.cert, gw.key):
                with open(part) as f:
                    out.write(f.read())
        cfg = HAPROXY_CFG
        if text is not None:
            cfg = os.path.join(self.dir, "haproxy.cfg")
            with open(cfg, "w") as f:
                f.write(text)

        def make(port):
            env = dict(os.environ, EDGE_BIND="%s:%d" % (HOST, port), EDGE_PEM=pem,
                       SLUICE_ADDR="%s:%d" % (HOST, gw.port), SLUICE_TLS_NAME="localhost",
                       SLUICE_CA=gw.ca, SLUICE_ADMIN_ADDR=HOST, SLUICE_ADMIN_PORT=str(admin))
            return [haproxy, "-db", "-f", cfg], env
        self._start(make)

    def wait_server(self, state, timeout=15, start=0):
        """Waits for HAProxy's log line saying the gateway went UP or DOWN."""
        rx = re.compile(r"Server sluice_gateways/gw1 is %s" % state)
        return h.wait_until(lambda: rx.search(self.log(), start), timeout,
                            "haproxy to mark the gateway %s" % state)


def curl_status(edge, path, max_time=1.0, extra=()):
    """The status of one streaming request through the proxy, or None.

    curl keeps reading a stream until --max-time, so its exit status says
    nothing; the header dump it wrote says what came back.
    """
    d = h.tempdir("sluice-curl-")
    hdr = os.path.join(d, "headers")
    cmd = h.curl_base(edge) + ["-N", "-D", hdr, "-o", "/dev/null", "--max-time", str(max_time)]
    cmd += list(extra) + [edge.url(path)]
    p = h.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait(timeout=max_time + 5)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
    try:
        with open(hdr, "rb") as f:
            raw = f.read()
        return h.parse_header_dump(raw)[1] if raw.strip() else None
    except (OSError, TestFailure):
        return None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def wait_through(edge, path="/events/edge.ready", timeout=15):
    """Waits until a stream through the proxy gets the gateway's 200 (bounded)."""
    return h.wait_until(lambda: curl_status(edge, path) == 200, timeout,
                        "a 200 through the proxy", interval=0.2)


def check_curl_stream(nats, edge, subject, count=5, interval=0.1, limit_ms=100.0,
                      heartbeats=2, where=""):
    """curl --http2 -N through a proxy: each published event arrives on its own, in
    under limit_ms, and idle heartbeats pass through.

    Publishes with the harness's raw NATS connection, then timestamps curl's
    reads of the stream. As in certify(), a marginal timing miss (every event
    arrived, within a second) is repeated, up to twice, on a fresh stream.
    """
    for attempt in (1, 2, 3):
        problems, marginal = _curl_stream_once(nats, edge, "%s.%d" % (subject, attempt), count,
                                               interval, limit_ms, heartbeats, where)
        if not problems:
            return
        if attempt < 3 and marginal:
            h.log("%s: marginal timing miss with curl, once more: %s"
                  % (where, "; ".join(problems)))
            continue
        raise TestFailure("%s: curl: %s" % (where, "; ".join(problems)))


def _curl_stream_once(nats, edge, subject, count, interval, limit_ms, heartbeats, where):
    with h.CurlStream(edge, "/events/" + subject, max_time=30) as s:
        _, _, off = s.wait_start(timeout=10)
        version, status, headers = s.headers()
        expect(status == 200 and version == "2", "%s: curl got HTTP/%s %d" % (where, version,
                                                                            status))
        ct = dict(headers).get("content-type", "")
        expect(ct.startswith("text/event-stream"), "%s: content-type %r" % (where, ct))
        expect("content-encoding" not in dict(headers), "%s: compressed: %r" % (where, headers))
        nats.wait_subscriptions([subject])
        # Heartbeats: an idle stream gets ':' comments through the proxy.
        s.wait_for(lambda b: b[off:].count(b":\n\n") >= heartbeats, 5,
                   "%d heartbeats through %s" % (heartbeats, where))
        arrivals = []
        with nu.NatsClient(nats.port) as nc:
            for i in range(1, count + 1):
                start = len(s.data())
                t_pub = time.monotonic()
                nc.pub(subject, "edge-%d" % i)
                nc.flush()
                needle = b"data: edge-%d\n\n" % i
                s.wait_bytes(needle, 5, start)
                with s.cond:
                    t_recv = next(t for t, chunk in _chunk_ends(s.chunks, s.buf, needle))
                arrivals.append((t_pub, t_recv))
                time.sleep(interval)
        lat = [(r - p) * 1000 for p, r in arrivals]
        h.log("%s: curl saw events %s ms after publish" % (where, ["%.1f" % x for x in lat]))
        problems = []
        if max(lat) >= limit_ms:
            problems.append("an event took %.1f ms through the proxy (limit %.0f)"
                            % (max(lat), limit_ms))
        # One at a time: no read carried two events.
        with s.cond:
            for t, chunk in s.chunks:
                if chunk.count(b"data: edge-") > 1:
                    problems.append("one read carried several events (batched): %r" % chunk)
        return problems, max(lat) < 1000


def _chunk_ends(chunks, buf, needle):
    """(time, chunk) of the read that completed needle's first occurrence."""
    end = buf.find(needle) + len(needle)
    pos = 0
    for t, chunk in chunks:
        pos += len(chunk)
        if pos >= end:
            yield t, chunk
            return


# ---------------------------------------------------------------------------
# the client's address through a proxy (issue 17)

# Other hosts, as far as the proxy and the gateway can tell: loopback is a /8.
CLIENTS = ("127.0.0.2", "127.0.0.3")


def client_stream(edge, src, rid, extra=()):
    """curl --http2 -N through the proxy from source address src, tagged X-Request-Id rid."""
    return h.CurlStream(edge, "/events/edge.clients", max_time=30,
                        extra=["--interface", src, "-H", "X-Request-Id: %s" % rid] + list(extra))


def open_client_streams(edge, cap, where):
    """cap streams from each of CLIENTS through one proxy: all must start (2 x cap in
    total, past a per-address cap of cap for the proxy's own address). The first of
    each client carries a spoofed X-Forwarded-For of its own. Returns the streams."""
    streams = []
    for src in CLIENTS:
        for i in range(cap):
            spoof = ["-H", "X-Forwarded-For: 192.0.2.66"] if i == 0 else []
            streams.append(client_stream(edge, src, "edge-%s-%d" % (src, i), spoof))
    for s in streams:
        s.wait_start(timeout=15)
    h.log("%s: %d streams from %d clients through one proxy, each client at its cap of %d"
          % (where, len(streams), len(CLIENTS), cap))
    return streams


def access_entry(gw, rid, timeout=10):
    """The gateway's access log line for the request with X-Request-Id rid."""
    def find():
        try:
            with open(gw.access_log_path) as f:
                for ln in f:
                    if ln.startswith("{") and '"request_id":"%s"' % rid in ln:
                        return json.loads(ln)
        except OSError:
            pass
        return None
    return h.wait_until(find, timeout, "the access log line of %s" % rid)


def check_logged_clients(gw, cap, where):
    """Each client stream's access log line names its client (never the proxy, never the
    client's own spoofed X-Forwarded-For) and, as via, the proxy's address."""
    for src in CLIENTS:
        for i in range(cap):
            e = access_entry(gw, "edge-%s-%d" % (src, i))
            client = e["client"]
            expect(client == src or client.startswith(src + ":"),
                   "%s: stream from %s logged as client %r" % (where, src, client))
            expect(e.get("via", "").startswith(HOST + ":"),
                   "%s: no proxy address as via: %r" % (where, e))
    h.log("%s: the access log names each client, via the proxy" % where)
