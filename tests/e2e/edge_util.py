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

Also here: a skip-aware test runner (exit 77, which tests/CMakeLists.txt
reports as a skip) for tests that cannot run until the gateway grows a
feature, and the detection of that feature (HTTP/1.1 on the TLS listener
when the client sends no ALPN, as nginx does; the cleartext listener).
"""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback

import harness as h
from harness import HOST, TestFailure, expect

SKIP_EXIT = 77

EDGE_DIR = os.path.join(h.SRC, "conf", "edge")
NGINX_CONF = os.path.join(EDGE_DIR, "nginx.conf")
HAPROXY_CFG = os.path.join(EDGE_DIR, "haproxy.cfg")

# The placeholders conf/edge/nginx.conf documents, and nothing else: nginx's
# own $variables must survive the substitution.
NGINX_VARS = ("EDGE_LISTEN", "EDGE_SERVER_NAME", "EDGE_CERT", "EDGE_KEY", "SLUICE_ADDR",
              "SLUICE_SCHEME", "SLUICE_TLS_NAME", "SLUICE_CA")


class Skip(Exception):
    """The test cannot run yet; the message says why and what would fix it."""


def main(test, deadline_s=60):
    """harness.main, plus: a Skip raised by test() exits 77 with a SKIP line."""
    skipped = []

    def wrapped():
        try:
            test()
        except Skip as e:
            skipped.append(str(e))

    real_exit = sys.exit

    def exit_hook(code=0):
        if code == 0 and skipped:
            name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
            print("SKIP %s: %s" % (name, skipped[0]), flush=True)
            real_exit(SKIP_EXIT)
        real_exit(code)

    # harness.main prints "PASS" before exiting 0; a skip is reported after it
    # with its own line and status, so a log reader sees both facts.
    sys.exit = exit_hook
    try:
        h.main(wrapped, deadline_s=deadline_s)
    finally:
        sys.exit = real_exit


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


def expect_streamed_unbuffered(report, where, events, limit_ms=100.0):
    """The issue's bar: first event under limit_ms, one at a time, none late."""
    ev = report["events"]
    first = report["timings_ms"]["first_event"]
    expect(first is not None and first < limit_ms,
           "%s: time to first event %s ms, must be under %.0f ms" % (where, first, limit_ms))
    expect(ev["published"] == events + 1 and ev["received"] == events + 1,
           "%s: %d of %d events received" % (where, ev["received"], ev["published"]))
    expect(ev["batched"] == 0, "%s: %d events arrived in a burst with the one before"
           % (where, ev["batched"]))
    expect(ev["max_delay_ms"] < limit_ms, "%s: an event took %.1f ms (limit %.0f)"
           % (where, ev["max_delay_ms"], limit_ms))
    # One at a time: consecutive arrivals are about an interval apart, as published.
    t = [x for x in ev["received_at_ms"][:events]]
    gaps = [b - a for a, b in zip(t, t[1:])]
    expect(all(g > 50 for g in gaps), "%s: events not one at a time; gaps %r ms" % (where, gaps))


# ---------------------------------------------------------------------------
# what the gateway speaks


def gateway_flags(gw_log_or_help):
    return gw_log_or_help


def supports_listen_plain():
    r = subprocess.run([h.tool("SLUICE_BIN", "sluice"), "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=10)
    return b"--listen-plain" in r.stdout


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

    def _start(self, make_cmd, env=None, attempts=5, timeout=10):
        last = ""
        for _ in range(attempts):
            self.port = h.free_port()
            cmd = make_cmd(self.port)
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
                    "-e", os.path.join(d, "error.log")]
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
            self.env = dict(os.environ, EDGE_BIND="%s:%d" % (HOST, port), EDGE_PEM=pem,
                            SLUICE_ADDR="%s:%d" % (HOST, gw.port), SLUICE_TLS_NAME="localhost",
                            SLUICE_CA=gw.ca, SLUICE_ADMIN_ADDR=HOST,
                            SLUICE_ADMIN_PORT=str(admin))
            return [haproxy, "-db", "-f", cfg]
        self._start(lambda port: make(port), env=None)

    def _start(self, make_cmd, env=None, attempts=5, timeout=10):
        # The environment is built per port, so pass it through the command maker.
        def cmd_and_env(port):
            return make_cmd(port)
        last = ""
        for _ in range(attempts):
            self.port = h.free_port()
            cmd = cmd_and_env(self.port)
            with open(self.log_path, "wb") as lf:
                self.proc = h.spawn(cmd, stdout=lf, stderr=subprocess.STDOUT, env=self.env)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if h.tcp_open(self.port):
                    h.log("haproxy pid %d on port %d" % (self.proc.pid, self.port))
                    return self
                time.sleep(0.05)
            last = self.log()
            h.kill_proc(self.proc)
            if "cannot bind" not in last and "ddress already in use" not in last:
                break
        raise TestFailure("haproxy did not start:\n%s" % h.tail(last, 20))

    def wait_server(self, state, timeout=15, start=0):
        """Waits for HAProxy's log line saying the gateway went UP or DOWN."""
        rx = re.compile(r"Server sluice_gateways/gw1 is %s" % state)
        return h.wait_until(lambda: rx.search(self.log(), start), timeout,
                            "haproxy to mark the gateway %s" % state)


def wait_through(edge, path="/events/edge.ready", timeout=15):
    """Waits until a request through the proxy gets the gateway's 200 (bounded)."""
    def ok():
        try:
            r = h.curl(edge, path, max_time=2, extra=("--max-filesize", "1"))
        except TestFailure:
            return False
        return r.status == 200
    return h.wait_until(ok, timeout, "a 200 through the proxy", interval=0.2)


def curl_status(edge, path, max_time=3):
    """The status line of one streaming request through the proxy (body ignored)."""
    d = h.tempdir("sluice-curl-")
    hdr = os.path.join(d, "headers")
    cmd = h.curl_base(edge) + ["-N", "-D", hdr, "-o", "/dev/null", "--max-time", str(max_time),
                               edge.url(path)]
    p = h.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        p.communicate(timeout=max_time + 5)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
    try:
        with open(hdr, "rb") as f:
            return h.parse_header_dump(f.read())
    except (OSError, TestFailure):
        return None


def check_curl_stream(nats, edge, subject, count=5, interval=0.1, limit_ms=100.0,
                      heartbeats=2, where=""):
    """curl --http2 -N through a proxy: each published event arrives on its own, in
    under limit_ms, and idle heartbeats pass through.

    Publishes with the harness's raw NATS connection (flush = the server has
    it), then timestamps curl's reads of the stream.
    """
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
        with h.NatsConn(nats.port) as nc:
            for i in range(1, count + 1):
                start = len(s.data())
                nc.pub(subject, "edge-%d" % i)
                nc.flush()
                t_pub = time.monotonic()
                needle = b"data: edge-%d\n\n" % i
                s.wait_bytes(needle, 5, start)
                with s.cond:
                    t_recv = next(t for t, chunk in _chunk_ends(s.chunks, s.buf, needle))
                arrivals.append((t_pub, t_recv))
                time.sleep(interval)
        lat = [(r - p) * 1000 for p, r in arrivals]
        h.log("%s: curl saw events %s ms after publish" % (where, ["%.1f" % x for x in lat]))
        expect(max(lat) < limit_ms, "%s: an event took %.1f ms through the proxy (limit %.0f)"
               % (where, max(lat), limit_ms))
        # One at a time: no read carried two events.
        with s.cond:
            for t, chunk in s.chunks:
                expect(chunk.count(b"data: edge-") <= 1,
                       "%s: one read carried several events (batched): %r" % (where, chunk))


def _chunk_ends(chunks, buf, needle):
    """(time, chunk) of the read that completed needle's first occurrence."""
    end = buf.find(needle) + len(needle)
    pos = 0
    for t, chunk in chunks:
        pos += len(chunk)
        if pos >= end:
            yield t, chunk
            return
