"""Shared parts of the bench/ scenarios: servers, the client, tables, results.

Every scenario is a python3 script (standard library only) that starts its
own nats-server, sluice and peers (nginx + nchan, Pushpin with a tiny GRIP
origin) on free loopback ports, runs sluice-bench against each with the same
parameters, prints a table and writes JSON under bench/results/.

Rules kept here, as in tests/e2e: every process is started by this module,
remembered by PID, and killed by PID at exit (never by name); every wait is
bounded; all traffic stays on 127.0.0.1; temp dirs are removed. Peers that
are not installed are installed from Debian's archive when we are root
(`apt-get install`), and skipped with a note otherwise.

Binaries: SLUICE_BIN and SLUICE_BENCH, or BUILD (default: the repository's
build/ directory) holding sluice and bench/sluice-bench.

Rejected alternative: importing tests/e2e/harness.py. The benchmarks must
not break when the test harness changes, and need peers it does not know.
"""

import atexit
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SLUICE_SRC") or os.path.dirname(HERE)
HOST = "127.0.0.1"
RESULTS = os.path.join(HERE, "results")
HIST_SUB_BITS = 4

_procs = []
_dirs = []
_lock = threading.Lock()
_t0 = time.monotonic()


class BenchError(RuntimeError):
    pass


def log(msg):
    print("[%6.1f] %s" % (time.monotonic() - _t0, msg), file=sys.stderr, flush=True)


def build_dir():
    return os.environ.get("BUILD") or os.path.join(SRC, "build")


def binary(env, rel):
    path = os.environ.get(env) or os.path.join(build_dir(), rel)
    if not os.access(path, os.X_OK):
        raise BenchError("%s not found (set %s or BUILD; build with cmake first)" % (path, env))
    return path


def tempdir(prefix="sluice-bench-"):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    with _lock:
        _dirs.append(d)
    return d


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


_SETPRIV = shutil.which("setpriv")


def spawn(cmd, **kw):
    """Popen that remembers the child; setpriv --pdeathsig kills it with us."""
    if _SETPRIV:
        cmd = [_SETPRIV, "--pdeathsig", "KILL", "--"] + list(cmd)
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(cmd, **kw)
    with _lock:
        _procs.append(p)
    return p


def descendants(pid):
    """PIDs of pid's descendants (from /proc/*/stat ppid)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def stop(p, sig=signal.SIGTERM, timeout=5):
    """Signals our process p by PID, waits (bounded), then SIGKILLs it and
    any descendant it left behind (peers fork workers)."""
    if p is None:
        return
    kids = descendants(p.pid) if p.poll() is None else []
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    if p.poll() is None:
        p.kill()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cleanup():
    with _lock:
        procs = list(reversed(_procs))
        _procs.clear()
        dirs = list(_dirs)
        _dirs.clear()
    for p in procs:
        stop(p, timeout=3)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(cleanup)


def _on_signal(signum, frame):
    cleanup()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise BenchError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def tcp_open(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def proc_sample(pid):
    """(cpu seconds, rss KiB) of a live process."""
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                rss = int(ln.split()[1])
    return cpu, rss


class Output:
    """Collects a process's stderr lines in a thread (bounded memory)."""

    def __init__(self, stream, keep=400):
        self.lines = []
        self.keep = keep
        self.t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.t.start()

    def _run(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with _lock:
                self.lines.append(line)
                if len(self.lines) > self.keep:
                    del self.lines[: len(self.lines) - self.keep]

    def find(self, rx):
        with _lock:
            for ln in self.lines:
                m = re.search(rx, ln)
                if m:
                    return m
        return None

    def tail(self, n=20):
        with _lock:
            return "\n".join(self.lines[-n:])


# ---------------------------------------------------------------- servers

def certs():
    d = tempdir("sluice-bench-certs-")
    subprocess.run(["sh", os.path.join(SRC, "certs", "make-dev-cert.sh"), d], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    return {"ca": os.path.join(d, "ca.pem"), "cert": os.path.join(d, "server.pem"),
            "key": os.path.join(d, "server.key"), "dir": d}


class Server:
    """A server under test: its name, the PIDs whose CPU and RSS count,
    and the ports and URLs the client needs."""

    def __init__(self, name, proc):
        self.name = name
        self.proc = proc
        self.helpers = []  # processes that are part of the deployment (Pushpin's zurl)

    def pids(self):
        out = []
        for p in [self.proc] + self.helpers:
            out += [p.pid] + descendants(p.pid)
        return out

    def rss_kb(self):
        total = 0
        for pid in self.pids():
            try:
                total += proc_sample(pid)[1]
            except (OSError, ValueError):
                pass
        return total

    def pid_args(self, name=None):
        return ["--server-pid=%s=%d" % (name or self.name, p) for p in self.pids()]

    def stop(self):
        stop(self.proc)
        for p in self.helpers:
            stop(p)


def start_nats():
    port = free_port()
    exe = shutil.which("nats-server")
    if not exe:
        raise BenchError("nats-server is not installed (apt-get install nats-server)")
    p = spawn([exe, "-a", HOST, "-p", str(port)], stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL)
    wait_until(lambda: tcp_open(port), 10, "nats-server on %d" % port)
    s = Server("nats", p)
    s.port = port
    s.url = "nats://%s:%d" % (HOST, port)
    return s


def sluice_supports(flag):
    out = subprocess.run([binary("SLUICE_BIN", "sluice"), "--help"], capture_output=True,
                         timeout=10)
    return flag in (out.stdout + out.stderr).decode()


def start_sluice(nats, crt, extra=(), plain=True, wrap=()):
    """The gateway on free ports; with plain, also its cleartext HTTP/1.1
    listener when this build has one (s.plain_port, else None)."""
    args = list(wrap) + [binary("SLUICE_BIN", "sluice"), "--listen", "%s:0" % HOST,
                         "--admin", "%s:0" % HOST,
            "--cert", crt["cert"], "--key", crt["key"], "--nats", nats.url,
            "--access-log", "off", "--log-level", "info",
            # One client address opens thousands of connections here.
            "--max-connections-per-address", "100000"]
    has_plain = plain and sluice_supports("--listen-plain")
    if has_plain:
        args += ["--listen-plain", "%s:0" % HOST]
    args += list(extra)
    p = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = Output(p.stderr)
    s = Server("sluice", p)
    s.out = out

    def started():
        if p.poll() is not None:
            raise BenchError("sluice exited %s:\n%s" % (p.returncode, out.tail()))
        return out.find(r"listening on https://[^ ]*:(\d+)")

    m = wait_until(started, 60 if wrap else 15, "sluice to listen")
    s.port = int(m.group(1))
    a = out.find(r"admin on http://[^ ,]*:(\d+)")
    s.admin_port = int(a.group(1)) if a else None
    pl = out.find(r"plain on http://[^ ,]*:(\d+)")
    s.plain_port = int(pl.group(1)) if pl else None
    return s


def installed(pkgs):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}\n"] + pkgs, capture_output=True,
                         text=True, timeout=30)
    return out.returncode == 0 and out.stdout.count("install ok installed") == len(pkgs)


def ensure_packages(pkgs):
    """Installs Debian packages when missing (root only). Returns None when
    they are there, else why not."""
    if installed(pkgs):
        return None
    if os.geteuid() != 0:
        return "not installed and not root: apt-get install %s" % " ".join(pkgs)
    pol = subprocess.run(["apt-cache", "policy"] + pkgs, capture_output=True, text=True,
                         timeout=60).stdout
    if "Candidate: (none)" in pol or not pol.strip():
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        pol = subprocess.run(["apt-cache", "policy"] + pkgs, capture_output=True, text=True,
                             timeout=60).stdout
    if "Candidate: (none)" in pol or pol.count("Candidate:") < len(pkgs):
        return "not available from this machine's Debian archive (apt-cache policy %s)" % " ".join(pkgs)
    log("installing %s from Debian" % " ".join(pkgs))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-qq"] + pkgs, capture_output=True, text=True,
                       timeout=900, env=env)
    if r.returncode != 0:
        return "apt-get install failed: %s" % r.stderr.strip()[-300:]
    return None


NGINX_CONF = """
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
user root;
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams {max_streams};
    nchan_shared_memory_size 512m;
    # The same resume depth as sluice's history-events default.
    nchan_message_buffer_length 1000;
    nchan_message_timeout 60s;
    server {{
        listen {host}:{tls_port} ssl http2 reuseport;
        listen {host}:{plain_port} reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location ~ ^/sub/(\\w+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            # Live from the moment of subscribing, as sluice without an id.
            nchan_subscriber_first_message newest;
        }}
        location ~ ^/pub/(\\w+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
        }}
    }}
}}
"""


def start_nchan(crt, workers, max_streams=10000, wrap=()):
    """nginx + nchan; workers=0 runs one process without a master (for
    valgrind)."""
    why = ensure_packages(["nginx", "libnginx-mod-nchan"])
    if why:
        raise BenchError("nchan skipped: " + why)
    d = tempdir("sluice-bench-nginx-")
    tls_port, plain_port = free_port(), free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        text = NGINX_CONF
        if workers == 0:
            text = text.replace("master_process on;", "master_process off;")
        f.write(text.format(workers=max(1, workers), dir=d, max_streams=max_streams, host=HOST,
                                  tls_port=tls_port, plain_port=plain_port, cert=crt["cert"],
                                  key=crt["key"]))
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    p = spawn(list(wrap) + [exe, "-c", conf, "-p", d], stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE)
    out = Output(p.stderr)

    def up():
        if p.poll() is not None:
            log_tail = open(os.path.join(d, "error.log")).read()[-2000:] \
                if os.path.exists(os.path.join(d, "error.log")) else ""
            raise BenchError("nginx exited %s:\n%s\n%s" % (p.returncode, out.tail(), log_tail))
        return tcp_open(tls_port) and tcp_open(plain_port) and len(descendants(p.pid)) >= workers

    wait_until(up, 60 if wrap else 20, "nginx to listen")
    s = Server("nchan", p)
    s.port, s.plain_port, s.dir = tls_port, plain_port, d
    return s


GRIP_ORIGIN = r'''
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        ch = self.path.rstrip("/").rsplit("/", 1)[-1]
        body = b":ok\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Grip-Hold", "stream")
        self.send_header("Grip-Channel", ch)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 4096
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


ZURL_CONF = """[General]
in_spec=ipc://{run}/zurl-in
in_stream_spec=ipc://{run}/zurl-in-stream
out_spec=ipc://{run}/zurl-out
defpolicy=allow
allow=
deny=
max_open_requests=100000
buffer_size=200000
timeout=600
in_hwm=100000
out_hwm=100000
"""


def start_pushpin():
    """Pushpin (HTTP/1.1 only) in front of a minimal GRIP origin: every GET
    /stream/<ch> is held as a stream on channel <ch>."""
    why = ensure_packages(["pushpin"])
    if why:
        raise BenchError("pushpin skipped: " + why)
    d = tempdir("sluice-bench-pushpin-")
    for sub in ("run", "log"):
        os.makedirs(os.path.join(d, sub))
    origin_port, http_port, pub_port = free_port(), free_port(), free_port()
    with open(os.path.join(d, "origin.py"), "w") as f:
        f.write(GRIP_ORIGIN)
    origin = spawn([sys.executable, os.path.join(d, "origin.py"), str(origin_port)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: tcp_open(origin_port), 10, "GRIP origin")
    with open(os.path.join(d, "routes"), "w") as f:
        f.write("* %s:%d\n" % (HOST, origin_port))
    # pushpin-proxy reaches the origin through zurl; Debian runs zurl as a
    # system service on fixed sockets, so run our own on ours.
    run = os.path.join(d, "run")
    with open(os.path.join(d, "zurl.conf"), "w") as f:
        f.write(ZURL_CONF.format(run=run))
    zurl = spawn(["zurl", "--config=%s" % os.path.join(d, "zurl.conf")],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: os.path.exists(os.path.join(run, "zurl-in")), 10, "zurl")
    conf = open("/etc/pushpin/pushpin.conf").read()
    sets = {
        "rundir": os.path.join(d, "run"), "ipc_prefix": "bench-",
        "logdir": os.path.join(d, "log"),
        "client_maxconn": "60000", "routesfile": os.path.join(d, "routes"),
        "push_in_http_port": str(pub_port),
        "push_in_spec": "ipc://{rundir}/{ipc_prefix}push-in",
        "push_in_sub_specs": "ipc://{rundir}/{ipc_prefix}push-in-sub",
        "command_spec": "ipc://{rundir}/{ipc_prefix}handler-command",
        "log_level": "1",  # no line per request, as the others run
        # The default shaper (message_rate=2500) starves delivery under a
        # steady publish stream: every queued item calls
        # QTimer::setInterval, which restarts the batch timer before it
        # fires (handler/publishshaper.cpp), so nothing goes out until
        # publishing pauses. 0 turns shaping off.
        "message_rate": "0", "message_hwm": "100000000",
        "stats_report_interval": "3600",
        "http_port": "%s:%d" % (HOST, http_port),
    }
    for k, v in sets.items():
        conf, n = re.subn(r"(?m)^%s=.*$" % re.escape(k), "%s=%s" % (k, v), conf)
        if n == 0:
            raise BenchError("pushpin.conf has no %s" % k)
    conf = conf.replace("[proxy]\n", "[proxy]\n"
                        "zurl_out_specs=ipc://{run}/zurl-in\n"
                        "zurl_out_stream_specs=ipc://{run}/zurl-in-stream\n"
                        "zurl_in_specs=ipc://{run}/zurl-out\n".format(run=run), 1)
    cpath = os.path.join(d, "pushpin.conf")
    with open(cpath, "w") as f:
        f.write(conf)
    p = spawn(["pushpin", "--config", cpath], stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE, cwd=d)
    out = Output(p.stderr)

    def up():
        if p.poll() is not None:
            raise BenchError("pushpin exited %s:\n%s" % (p.returncode, out.tail()))
        return tcp_open(http_port) and tcp_open(pub_port)

    wait_until(up, 30, "pushpin to listen")
    s = Server("pushpin", p)
    s.plain_port, s.pub_port, s.dir = http_port, pub_port, d
    s.helpers = [zurl]
    s.origin = origin  # our stand-in for an application: not counted
    return s


# ---------------------------------------------------------------- client

def bench(args, timeout, label=None):
    """Runs sluice-bench; returns its JSON report (with the exit code)."""
    cmd = [binary("SLUICE_BENCH", "bench/sluice-bench")] + [str(a) for a in args]
    if label:
        cmd.append("--label=" + label)
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p)
        raise BenchError("sluice-bench did not finish within %.0f s: %s" % (timeout, " ".join(cmd)))
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError("sluice-bench exited %d without a report:\n%s\n%s"
                         % (p.returncode, " ".join(cmd), err.decode()[-2000:]))
    r = json.loads(lines[-1])
    r["exit"] = p.returncode
    if err.strip():
        r["stderr_tail"] = err.decode("utf-8", "replace")[-500:]
    return r


def hist_upper(idx):
    sub = 1 << HIST_SUB_BITS
    if idx < sub:
        return idx
    shift = (idx >> HIST_SUB_BITS) - 1
    lower = (sub + (idx & (sub - 1))) << shift
    return lower + (1 << shift) - 1


def merge_reports(reports):
    """One report from several sluice-bench processes run side by side
    (each with --hist): counts add, histograms merge exactly."""
    if len(reports) == 1:
        return reports[0]
    m = dict(reports[0])
    for k in ("streams", "connections", "streams_open", "streams_failed", "expected", "events",
              "bytes", "gaps", "dups", "churned", "reopened", "server_ended", "connections_lost",
              "connect_errors", "events_per_s", "bytes_per_s"):
        m[k] = sum(r.get(k, 0) for r in reports)
    m["open_s"] = max(r["open_s"] for r in reports)
    m["delivered_ratio"] = m["events"] / m["expected"] if m["expected"] else 0.0
    for k in ("latency_ms", "ttfe_ms"):
        b = {}
        n = 0
        mx = 0
        tot = 0.0
        for r in reports:
            h = r.get(k, {})
            for i, c in h.get("buckets", []):
                b[i] = b.get(i, 0) + c
            n += h.get("n", 0)
            mx = max(mx, h.get("max_ns", 0))
            tot += h.get("sum_ns", 0.0)
        m[k] = summarize_hist(b, n, mx, tot)
    cl = {}
    for key in ("cpu_s", "user_s", "sys_s", "main_thread_cpu_s", "pub_cpu_s"):
        cl[key] = sum(r["client"][key] for r in reports)
    cl["main_thread_share"] = max(r["client"]["main_thread_share"] for r in reports)
    cl["limited"] = any(r["client"]["limited"] for r in reports)
    m["client"] = cl
    m["processes"] = len(reports)
    return m


def summarize_hist(buckets, n, mx, tot):
    out = {"n": n}
    if not n:
        return out
    items = sorted(buckets.items())

    def q(p):
        want = max(1, int(-(-p * n // 1)))
        seen = 0
        for i, c in items:
            seen += c
            if seen >= want:
                return min(hist_upper(i), mx) / 1e6
        return mx / 1e6

    out.update({"mean": tot / n / 1e6, "p50": q(0.5), "p90": q(0.9), "p99": q(0.99),
                "p999": q(0.999), "max": mx / 1e6})
    return out


# ---------------------------------------------------------------- reports

def meta():
    def git(*a):
        try:
            return subprocess.run(["git", "-C", SRC] + list(a), capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except OSError:
            return ""
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "src", "include"))
    # HEAD may move while a long run goes on, and the binary may be older
    # than HEAD: the binary's own hash and time say what was measured.
    import hashlib
    try:
        exe = binary("SLUICE_BIN", "sluice")
        with open(exe, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()[:12]
        built = datetime.datetime.fromtimestamp(os.path.getmtime(exe), datetime.timezone.utc)
        built = built.strftime("%Y-%m-%dT%H:%M:%SZ")
    except (BenchError, OSError):
        sha, built = None, None
    return {"commit": os.environ.get("SLUICE_COMMIT") or
            git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else ""),
            "sluice_sha256": sha, "sluice_built": built,
            "cores": os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "loadavg_at_start": os.getloadavg()[0],
            "kernel": os.uname().release}


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and abs(v) < 0.01:
            return "%.4f" % v
        return ("%%.%df" % nd) % v
    return str(v)


def table(headers, rows):
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in cells:
        out.append("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    return "\n".join(out)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def save(scenario, doc):
    """Writes results/<scenario>.json (the latest run) and prints where."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "%s.json" % scenario)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    log("wrote %s" % os.path.relpath(path, SRC))
    return path


def flags(argv, extra=None):
    """--quick, --peers LIST (sluice,nchan,pushpin), --skip-install."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small and short: well under a minute")
    ap.add_argument("--peers", default="nchan,pushpin",
                    help="comma list of peers to compare with (nchan, pushpin) or none")
    if extra:
        extra(ap)
    a = ap.parse_args(argv)
    a.peers = [p for p in a.peers.split(",") if p and p != "none"]
    return a


def workers():
    """Gateway workers and nginx workers: one per core, as both default to."""
    return os.cpu_count() or 1


# ---------------------------------------------------------------- targets

class Fleet:
    """The servers of one scenario: nats-server and sluice always, and the
    peers asked for. A peer that cannot be installed or started is recorded
    in skipped with the reason, and the scenario goes on without it."""

    def __init__(self, peers, sluice_extra=()):
        self.crt = certs()
        self.nats = start_nats()
        self.sluice_extra = list(sluice_extra)
        self.peers = list(peers)
        self.servers = {}
        self.skipped = {}

    def names(self):
        return ["sluice"] + [p for p in self.peers if p not in self.skipped]

    def start(self, name, fresh=False):
        """The running server called name (started now if needed, or anew
        with fresh); None when it is skipped."""
        if name in self.skipped:
            return None
        s = self.servers.get(name)
        if s and not fresh and s.proc.poll() is None:
            return s
        if s:
            s.stop()
        try:
            if name == "sluice":
                s = start_sluice(self.nats, self.crt, self.sluice_extra)
            elif name == "nchan":
                s = start_nchan(self.crt, workers())
            elif name == "pushpin":
                s = start_pushpin()
            else:
                raise BenchError("unknown server %s" % name)
        except BenchError as e:
            if name == "sluice":
                raise
            self.skipped[name] = str(e)
            log("%s skipped: %s" % (name, e))
            return None
        self.servers[name] = s
        return s

    def stop_all(self):
        for s in self.servers.values():
            s.stop()
        self.servers.clear()

    def client_args(self, s, proto):
        """sluice-bench arguments that reach server s over proto ("h2": TLS
        h2; "h1": cleartext HTTP/1.1), with its publisher and the PIDs to
        sample; None when s does not speak proto."""
        ca = ["--cacert", self.crt["ca"]]
        if s.name == "sluice":
            pub = ["--pub", "nats", "--pub-url", self.nats.url, "--subject", "bench.{s}",
                   "--path", "/events/bench.{s}"]
            pids = s.pid_args() + self.nats.pid_args()
        elif s.name == "nchan":
            pub = ["--pub", "http", "--pub-url", "http://%s:%d" % (HOST, s.plain_port),
                   "--subject", "/pub/{s}", "--path", "/sub/{s}"]
            pids = s.pid_args()
        else:
            pub = ["--pub", "pushpin", "--pub-url", "http://%s:%d" % (HOST, s.pub_port),
                   "--subject", "c{s}", "--path", "/stream/c{s}"]
            pids = s.pid_args()
        if proto == "h2":
            if s.name == "pushpin":
                return None
            conn = ["--connect", "%s:%d" % (HOST, s.port)] + ca
        else:
            if not getattr(s, "plain_port", None):
                return None
            conn = ["--connect", "%s:%d" % (HOST, s.plain_port), "--proto", "h1", "--plain"]
        return conn + pub + pids


def run_case(fleet, name, proto, params, timeout, fresh=False):
    """One sluice-bench run against one server; returns a row dict, or None
    when the server is skipped or does not speak proto."""
    s = fleet.start(name, fresh=fresh)
    if s is None:
        return None
    args = fleet.client_args(s, proto)
    if args is None:
        return None
    row = {"server": name, "proto": proto, "params": params,
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    row["rss_kb_before"] = s.rss_kb()
    flat = []
    for k, v in params.items():
        flat += ["--" + k, v] if v is not True else ["--" + k]
    label = "%s %s %s" % (name, proto, " ".join("%s=%s" % kv for kv in params.items()))
    log("run: " + label)
    try:
        r = bench(args + flat, timeout=timeout, label=label)
    except BenchError as e:
        row["error"] = str(e)
        log("  failed: %s" % e)
        return row
    row["report"] = r
    if s.proc.poll() is not None:
        row["server_died"] = s.proc.returncode
        tail = s.out.tail(5) if hasattr(s, "out") else ""
        row["server_stderr_tail"] = tail
        log("  %s DIED during the run (exit %s):\n%s" % (name, s.proc.returncode, tail))
    srv = r["servers"].get(name, {})
    lat = r["latency_ms"]
    log("  %d/%d open in %.2f s, %d/%d events, p50 %s p99 %s ms, server cpu %.2f s, client share %.2f"
        % (r["streams_open"], r["streams"], r["open_s"], r["events"], r["expected"],
           fmt(lat.get("p50")), fmt(lat.get("p99")), srv.get("cpu_s", 0),
           r["client"]["main_thread_share"]))
    return row


def rget(row, *path):
    """A value deep in a row's report, or None."""
    v = row.get("report") if row else None
    for k in path:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    return v
