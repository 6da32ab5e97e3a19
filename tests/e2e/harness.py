"""Shared harness for sluice's end-to-end tests.

Every test is a standalone python3 script (standard library only) that runs
a real nats-server and the real gateway on free loopback ports, drives them
with real clients (sluice-client, curl --http2, python ssl sockets), exits 0
on pass and non-zero on failure, and prints one summary line.

Binaries come from the environment that ctest sets (and that a developer
sets by hand):

    SLUICE_BIN      the gateway            SLUICE_CLIENT  the nghttp2 test client
    SLUICE_PUB      the NATS publisher     SLUICE_SRC     the repository root

Rules this module keeps so that tests stay honest and leave nothing behind:
every wait is bounded; every process is started here, remembered by its
Popen handle and killed by PID at exit (never by name); every temp dir is
removed; all traffic stays on 127.0.0.1. A whole-test watchdog (SIGALRM)
turns a hang into a failure that still runs the cleanup. On failure the
tail of each gateway's stderr is printed.

Rejected alternative: pytest fixtures. The tests must run from ctest and by
hand with nothing but the standard library.
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SLUICE_SRC") or os.path.dirname(os.path.dirname(HERE))
HOST = "127.0.0.1"

_procs = []  # every Popen this module started, for the final kill
_dirs = []  # temp dirs to remove at exit
_gateways = []  # for the stderr tails printed on failure
_lock = threading.Lock()
_t0 = time.monotonic()


class TestFailure(AssertionError):
    pass


class Watchdog(BaseException):
    """Raised by SIGALRM/SIGTERM so that cleanup runs; not an Exception."""


def expect(cond, msg):
    """Asserts without depending on python -O."""
    if not cond:
        raise TestFailure(msg)


def log(msg):
    print("[%6.2f] %s" % (time.monotonic() - _t0, msg), flush=True)


def tool(env, name):
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        raise TestFailure("%s is not set and %s is not on PATH" % (env, name))
    if not os.access(path, os.X_OK):
        raise TestFailure("%s=%s is not executable" % (env, path))
    return path


def tempdir(prefix="sluice-e2e-"):
    d = tempfile.mkdtemp(prefix=prefix)
    with _lock:
        _dirs.append(d)
    return d


def free_port():
    """A port that was free a moment ago (for nats-server, which has no port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


_SETPRIV = shutil.which("setpriv")
# Loopback only: never through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def spawn(cmd, **kw):
    """Popen that remembers the child for the final kill.

    setpriv --pdeathsig makes the child die with the test even when the
    test itself is SIGKILLed (a ctest timeout), where no cleanup can run.
    It execs the command, so the PID stays the child's. (A preexec_fn
    would do the same but is unsafe once reader threads exist.)
    """
    if _SETPRIV:
        cmd = [_SETPRIV, "--pdeathsig", "KILL", "--"] + list(cmd)
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(cmd, **kw)
    with _lock:
        _procs.append(p)
    return p


def kill_proc(p, timeout=5):
    """SIGKILL by PID if still running, then reap (bounded)."""
    if p is None:
        return
    if p.poll() is None:
        try:
            p.kill()
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def wait_until(pred, timeout, what, interval=0.05):
    """Polls pred() until truthy; returns its value or raises after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TestFailure("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def tcp_open(port, timeout=0.5):
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(text, lines=40):
    return "\n".join((text or "").splitlines()[-lines:])


def sanitized(path=None):
    """Whether a binary (default: the gateway) is built with AddressSanitizer.

    Its allocator keeps freed memory in a quarantine and pads every block,
    so RSS figures say nothing about the program's own bounds.
    """
    path = path or tool("SLUICE_BIN", "sluice")
    with open(path, "rb") as f:
        image = f.read()
    return b"__asan_init" in image or b"libasan.so" in image


def bucket_most(tokens, span, rate):
    """
    The most a token bucket holding tokens, refilled at rate a second, can
    grant in span seconds (the client's view of a batch the gateway took;
    a loaded machine stretches it).
    """
    return tokens + int(math.ceil(span * rate)) + 1


def exit_slack_s():
    """
    Seconds more a gateway may take to exit in a sanitizer build: its exit()
    runs LeakSanitizer's check, after the gateway's own teardown and beyond
    the reach of its forced-exit deadline (a loaded CI machine once took over
    2 s there, the main thread running). A normal build holds the bound.
    """
    return 4 if sanitized() else 0


def rss_bytes(pid):
    """VmRSS of a live process, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) * 1024
    raise TestFailure("no VmRSS for pid %d" % pid)


# ---------------------------------------------------------------------------
# the SSE the gateway sends (README "Event format")

# Every stream begins with the retry hint and its starting id, without data.
START_RE = re.compile(rb"retry: (\d+)\nid: (\d+(?:-\d+)*)\n\n")
ID_RE = re.compile(r"\d{1,20}(?:-\d{1,20})*")


def parse_id(text, nsubjects=1):
    """Splits an id into its per-subject positions (ints); fails unless it has nsubjects."""
    expect(isinstance(text, str) and ID_RE.fullmatch(text),
           "id %r is not decimal positions joined by '-'" % (text,))
    parts = [int(x) for x in text.split("-")]
    expect(len(parts) == nsubjects, "id %r has %d positions, expected one per subject (%d)"
           % (text, len(parts), nsubjects))
    return parts


class Block:
    """One blank-line-terminated block of an SSE body."""

    def __init__(self, id=None, event=None, data=None, comments=(), raw=b""):
        self.id = id  # str or None
        self.event = event  # str or None
        self.data = data  # list of str lines, or None if no data field
        self.comments = list(comments)
        self.retry = None  # str: the retry field's value, or None
        self.unknown = []  # lines a strict parse would have failed on (strict=False only)
        self.raw = raw

    @property
    def is_event(self):
        return self.data is not None

    def __repr__(self):
        return "Block(%r)" % self.raw[:160]


def parse_blocks(body, strict=True):
    """Parses an SSE body as the gateway writes it: LF line ends, fields in order.

    Returns (blocks, rest): rest is an unterminated tail. With strict, a
    field other than id/event/data, a repeated id or event, an id after
    data, or 'retry' after the start fails the test: the gateway never
    writes them. Without strict, such lines are kept in the block's
    unknown list (a retry in a later block, as a drain writes it, is
    recorded as its retry), for the caller to judge.
    """
    blocks = []
    pos = 0
    while True:
        end = body.find(b"\n\n", pos)
        if end < 0:
            break
        raw = body[pos:end + 2]
        b = Block(raw=raw)
        for ln in body[pos:end].decode("utf-8", "replace").split("\n"):
            if ln.startswith(":"):
                b.comments.append(ln[1:].lstrip(" "))
                continue
            name, _, value = ln.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                b.data = (b.data or []) + [value]
            elif name == "id" and b.id is None and b.data is None:
                b.id = value
            elif name == "event" and b.event is None:
                b.event = value
            elif name == "retry" and b.retry is None and (not blocks or not strict):
                b.retry = value
            elif strict:
                raise TestFailure("unexpected line %r in block %r" % (ln, raw[:200]))
            else:
                b.unknown.append(ln)
        blocks.append(b)
        pos = end + 2
    return blocks, body[pos:]


def events_of(body):
    """The events (blocks with data) of an SSE body, strictly parsed."""
    blocks, _ = parse_blocks(body)
    return [b for b in blocks if b.is_event]


class SseFeed:
    """parse_blocks for a body that arrives in pieces: feed() returns the blocks
    completed so far, parsed with strict=False (the caller judges each block)."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        blocks, self.buf = parse_blocks(self.buf + data, strict=False)
        return blocks


_fences = [0]


def read_until_marker(stream, publish, start=0, timeout=15, what="the fence", marker=None):
    """A fence instead of a settle sleep: everything the stream got before a marker.

    publish(marker) must publish one event whose data is the text marker on
    the subject (or one of the subjects) under test, AFTER the thing under
    test: a message and the marker published in that order on one NATS
    connection (or on two, the first flushed before the second is sent:
    sluice-pub and nats_util.NatsClient.flush wait for the server) reach the gateway
    in that order, so anything the thing under
    test caused (a late duplicate, a split-off event, a replayed one) is on
    the stream before the marker, and an event that never arrives is a gap
    before it. No sleep can promise that on a busy machine; the marker can.

    stream is anything with data() and wait_bytes(needle, timeout, start)
    (a CurlStream). Returns (blocks, marker_block, end): every block from
    offset start up to the marker's block (heartbeats included; the caller
    asserts on them), the marker's own block, and the offset after it. The
    marker is unique in this process and must arrive as one plain event.

    Several streams on one subject share one marker: the first call makes
    it (its marker_block.data[0]); the others pass it as marker with
    publish=None and only read.
    """
    if marker is None:
        with _lock:
            _fences[0] += 1
            marker = "fence-%d" % _fences[0]
    if publish is not None:
        publish(marker)
    end = stream.wait_bytes(b"data: %s\n\n" % marker.encode(), timeout, start)
    blocks, rest = parse_blocks(stream.data()[start:end])
    expect(rest == b"" and blocks and blocks[-1].data == [marker]
           and blocks[-1].event is None,
           "%s: the marker %s did not arrive as one plain event: %r"
           % (what, marker, blocks[-1].raw if blocks else rest))
    return blocks[:-1], blocks[-1], end


# ---------------------------------------------------------------------------
# nats-server


class Nats:
    """A nats-server on a free loopback port with HTTP monitoring.

    stop() and start() again reuse the SAME ports, so a gateway's reconnect
    finds it where it was.
    """

    def __init__(self, port=None, monitor_port=None, start=True):
        self.port = port
        self.monitor_port = monitor_port
        self._fixed = port is not None
        self.dir = tempdir("sluice-nats-")
        self.proc = None
        self.runs = 0
        if start:
            self.start()

    @property
    def url(self):
        return "nats://%s:%d" % (HOST, self.port)

    def start(self, timeout=10):
        expect(self.proc is None or self.proc.poll() is not None, "nats-server already running")
        fixed = self._fixed or self.runs > 0
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not fixed:
                self.port = free_port()
                self.monitor_port = free_port()
                while self.monitor_port == self.port:
                    self.monitor_port = free_port()
            elif self.monitor_port is None:
                self.monitor_port = free_port()
            self.runs += 1
            logpath = os.path.join(self.dir, "nats-%d.log" % self.runs)
            with open(logpath, "wb") as lf:
                self.proc = spawn(
                    ["nats-server", "-a", HOST, "-p", str(self.port), "-m", str(self.monitor_port)],
                    stdout=lf, stderr=subprocess.STDOUT)
            self.log_path = logpath
            # Ready means OUR process logged readiness: a bare TCP connect
            # could reach some other server that already holds the port.
            while time.monotonic() < deadline and self.proc.poll() is None:
                with open(logpath, "rb") as f:
                    text = f.read()
                if b"Server is ready" in text and tcp_open(self.port):
                    return self
                time.sleep(0.05)
            with open(logpath, "rb") as f:
                last = f.read().decode("utf-8", "replace")
            kill_proc(self.proc)
            if fixed:
                time.sleep(0.2)  # the old socket may linger for a moment
        raise TestFailure("nats-server did not start on port %s within %.0f s:\n%s"
                          % (self.port, timeout, tail(last, 10)))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if not self.alive():
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_proc(self.proc)

    def kill(self):
        self.stop(signal.SIGKILL)

    def monitor(self, path, timeout=5):
        url = "http://%s:%d%s" % (HOST, self.monitor_port, path)
        with _NO_PROXY.open(url, timeout=timeout) as r:
            return json.loads(r.read().decode())

    def connz(self):
        return self.monitor("/connz?subs=1&limit=10000")

    def subscriptions(self):
        """The subject list of every client connection that holds a subscription.

        Connections are not picked by name: publishers never subscribe, so
        in these tests every subscribing connection is a gateway's. The
        gateway's own control subscription (revoke-subject, by default
        $SLUICE.revoke) is left out: these lists are the clients' subjects.
        """
        out = []
        for c in self.connz().get("connections", []):
            subs = [x for x in c.get("subscriptions_list") or [] if x != "$SLUICE.revoke"]
            if subs:
                out.append(subs)
        return out

    def wait_subscriptions(self, subjects, timeout=10):
        """Waits until one connection subscribes to every subject in subjects.

        The gateway answers 200 only once nats-server has its SUB (see
        test_publish_after_headers); waiting here as well keeps a test's
        failure about its own subject rather than about that guarantee.
        """
        want = set(subjects)

        def ready():
            for subs in self.subscriptions():
                if want <= set(subs):
                    return subs
            return None
        return wait_until(ready, timeout, "nats-server to show one connection subscribed to "
                          "%d subjects" % len(want), interval=0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        kill_proc(self.proc)
        return False


def _escape_for_pub(data):
    # sluice-pub decodes \n, \r and \\ in --data; anything else is literal.
    return data.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def publish(nats_url, subject, data="", event=None, count=1, seq=False, rate=None, timeout=30):
    """Publishes with the project's sluice-pub; data is the real payload text."""
    cmd = [tool("SLUICE_PUB", "sluice-pub"), "--nats", nats_url, "--subject", subject,
           "--count", str(count)]
    if data:
        cmd += ["--data", _escape_for_pub(data)]
    if event is not None:
        cmd += ["--event", event]
    if seq:
        cmd.append("--seq")
    if rate is not None:
        cmd += ["--rate", str(rate)]
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_proc(p)
        raise TestFailure("sluice-pub to %s timed out after %d s" % (subject, timeout))
    expect(p.returncode == 0, "sluice-pub to %s exited %d: %s"
           % (subject, p.returncode, err.decode(errors="replace").strip()))


# ---------------------------------------------------------------------------
# the gateway


_LISTEN_RE = re.compile(r"listening on https://127\.0\.0\.1:(\d+) \(h2\)")
_ADMIN_RE = re.compile(r"admin on http://127\.0\.0\.1:(\d+)")
_PLAIN_RE = re.compile(r"plain on http://127\.0\.0\.1:(\d+)")


def make_certs(d):
    script = os.path.join(SRC, "certs", "make-dev-cert.sh")
    r = subprocess.run(["sh", script, d], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    expect(r.returncode == 0, "make-dev-cert.sh failed: %s" % r.stdout.decode(errors="replace"))
    return os.path.join(d, "ca.pem"), os.path.join(d, "server.pem"), os.path.join(d, "server.key")


class Gateway:
    """The real sluice binary on 127.0.0.1:0 with a fresh development cert.

    Flags are keyword arguments with underscores for dashes
    (Gateway(url, heartbeat_ms=300, workers=2)). Unless a test sets them,
    where the gateway has them: --admin 127.0.0.1:0 (never the fixed
    default port, so that tests can run in parallel; admin_port is where it
    listens) and --access-log to a file (access_log_path), so that stderr
    keeps only the diagnostic log the tests read.
    """

    def __init__(self, nats_url, extra_args=(), ready_timeout=10, **flags):
        self.dir = tempdir("sluice-gw-")
        self.ca, self.cert, self.key = make_certs(self.dir)
        self.log_path = os.path.join(self.dir, "sluice.stderr")
        self._log_cache = None
        self._killed = False
        self.port = None
        self.returncode = None
        self.proc = None
        cmd = [tool("SLUICE_BIN", "sluice"), "--listen", HOST + ":0", "--cert", self.cert,
               "--key", self.key, "--nats", nats_url]
        self.admin_port = None
        self.access_log_path = None
        given = set(k.replace("_", "-") for k in flags) | set(
            a[2:].split("=")[0] for a in extra_args if a.startswith("--"))
        if "admin" not in given:
            flags["admin"] = HOST + ":0"
        if "access-log" not in given:
            self.access_log_path = os.path.join(self.dir, "access.log")
            flags["access_log"] = self.access_log_path
        for k, v in flags.items():
            cmd += ["--" + k.replace("_", "-"), str(v)]
        cmd += list(extra_args)
        self.cmd = cmd
        with _lock:
            _gateways.append(self)
        # Ids start at the gateway's wall clock in microseconds (see the README).
        self.started_us = int(time.time() * 1e6)
        with open(self.log_path, "wb") as lf:
            self.proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=lf)
        m = wait_until(lambda: self.proc.poll() is not None or _LISTEN_RE.search(self.log()),
                       ready_timeout, "the gateway's 'listening on' line")
        if m is True:
            raise TestFailure("gateway exited %s at start-up:\n%s"
                              % (self.proc.returncode, tail(self.log(), 10)))
        self.port = int(m.group(1))
        a = _ADMIN_RE.search(self.log())
        self.admin_port = int(a.group(1)) if a else None
        # With --listen-plain HOST:0 (a port picked beforehand may be taken meanwhile).
        pl = _PLAIN_RE.search(self.log())
        self.plain_port = int(pl.group(1)) if pl else None
        log("gateway pid %d on port %d" % (self.proc.pid, self.port))

    def log(self):
        if self._log_cache is not None:
            return self._log_cache
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=10, start=0):
        """Waits for regex pattern in stderr after offset start; returns the match."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log(), start), timeout,
                          "gateway log line /%s/" % pattern)

    def alive(self):
        return self.proc.poll() is None

    def rss_bytes(self):
        """The gateway's resident set size now (VmRSS), in bytes."""
        return rss_bytes(self.proc.pid)

    def check_start_id(self, positions, published=0):
        """Checks that a stream's starting positions are plausible sequence numbers.

        Sequence numbers come from one process-wide counter that starts at
        the gateway's wall clock in microseconds and grows by one per NATS
        message, so a position lies between the gateway's start (less a
        clock-step allowance) and now plus the messages published so far.
        """
        hi = int(time.time() * 1e6) + published + 10 * 1000000
        for p in positions:
            expect(self.started_us - 10 * 1000000 <= p <= hi,
                   "position %d is not a sequence number of this gateway (started at %d us, "
                   "now %d us)" % (p, self.started_us, int(time.time() * 1e6)))

    def check_alive(self, when=""):
        expect(self.alive(), "gateway is not running%s: %s" % (when and " " + when, self.state()))

    def report(self):
        """The stderr lines worth printing on failure: a sanitizer report whole, else the tail."""
        text = self.log()
        m = re.search(r"^.*(==\d+==ERROR: \w+Sanitizer|runtime error:|WARNING: ThreadSanitizer)",
                      text, re.M)
        if m:
            return "\n".join(text[:m.start()].splitlines()[-10:] +
                             text[m.start():].splitlines()[:120])
        return tail(text, 40)

    @property
    def authority(self):
        return "%s:%d" % (HOST, self.port)

    def url(self, path):
        return "https://localhost:%d%s" % (self.port, path)

    def stop(self, timeout=10):
        """SIGTERM; the gateway must exit 0 within timeout seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_proc(self.proc)
                raise TestFailure("gateway did not exit within %d s of SIGTERM" % timeout)
        self.returncode = self.proc.returncode
        expect(self.returncode == 0, "after SIGTERM the gateway's status is '%s', expected "
               "exit code 0" % self.state())

    def __enter__(self):
        return self

    def threads(self):
        """Each thread of the live gateway: name, state and kernel wait channel."""
        out = []
        task = "/proc/%d/task" % self.proc.pid
        try:
            for tid in sorted(os.listdir(task), key=int):
                try:
                    with open("%s/%s/stat" % (task, tid)) as f:
                        stat = f.read()
                    with open("%s/%s/wchan" % (task, tid)) as f:
                        wchan = f.read().strip() or "-"
                except OSError:
                    continue
                name = stat[stat.index("(") + 1:stat.rindex(")")]
                out.append("%s %s %s" % (name, stat[stat.rindex(")") + 2], wchan))
        except OSError:
            pass
        return out

    def state(self):
        rc = self.proc.poll()
        if rc is None:
            return "running; threads: %s" % ", ".join(self.threads())
        if self._killed:
            return "killed at test cleanup"
        if rc < 0:
            return "killed by %s" % signal.Signals(-rc).name
        return "exit code %d" % rc

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self._killed = True
            kill_proc(self.proc)
        self._log_cache = self.log()
        return False


# ---------------------------------------------------------------------------
# clients


def curl_base(gw):
    # --resolve keeps curl on 127.0.0.1 (localhost may mean ::1 first) while
    # the URL still says localhost, the name the dev certificate carries.
    return ["curl", "--http2", "-sS", "--noproxy", "*", "--cacert", gw.ca,
            "--resolve", "localhost:%d:%s" % (gw.port, HOST)]


class Response:
    def __init__(self, status, version, headers, body):
        self.status = status
        self.version = version
        self.headers = headers  # list of (lowercase name, value)
        self.body = body

    def header(self, name):
        vals = [v for n, v in self.headers if n == name]
        return vals[-1] if vals else None

    def __repr__(self):
        return "<HTTP/%s %s %r %r>" % (self.version, self.status, self.headers, self.body[:200])


def parse_header_dump(raw):
    """Parses curl -D output; returns (version, status, headers) of the last response."""
    text = raw.decode("iso-8859-1")
    blocks = [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
    expect(blocks, "no response headers from curl")
    lines = blocks[-1].splitlines()
    m = re.match(r"HTTP/(\S+) (\d{3})", lines[0])
    expect(m, "bad status line %r" % lines[0])
    headers = []
    for ln in lines[1:]:
        if ":" in ln:
            n, v = ln.split(":", 1)
            headers.append((n.strip().lower(), v.strip()))
    return m.group(1), int(m.group(2)), headers


def curl(gw, path, method="GET", data=None, max_time=10, extra=()):
    """One request with curl --http2; returns a Response."""
    d = tempdir("sluice-curl-")
    hdr, body = os.path.join(d, "headers"), os.path.join(d, "body")
    cmd = curl_base(gw) + ["-D", hdr, "-o", body, "--max-time", str(max_time)]
    if method != "GET":
        cmd += ["-X", method]
    if data is not None:
        cmd += ["--data-binary", data]
    cmd += list(extra) + [gw.url(path)]
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(timeout=max_time + 5)
    except subprocess.TimeoutExpired:
        kill_proc(p)
        raise TestFailure("curl %s %s hung" % (method, path))
    expect(p.returncode == 0, "curl %s %s exited %d: %s"
           % (method, path, p.returncode, err.decode(errors="replace").strip()))
    with open(hdr, "rb") as f:
        version, status, headers = parse_header_dump(f.read())
    with open(body, "rb") as f:
        b = f.read()
    shutil.rmtree(d, ignore_errors=True)
    return Response(status, version, headers, b)


class CurlStream:
    """curl --http2 -N on an SSE path, read incrementally by a thread."""

    def __init__(self, gw, path, max_time=60, extra=()):
        self.dir = tempdir("sluice-curl-")
        self.hdr_path = os.path.join(self.dir, "headers")
        self.path = path
        cmd = curl_base(gw) + ["-N", "-D", self.hdr_path, "--max-time", str(max_time)]
        cmd += list(extra) + [gw.url(path)]
        self.proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""
        self.eof = False
        self.cond = threading.Condition()
        self.chunks = []  # (monotonic time, bytes)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                b = os.read(fd, 65536)
            except OSError:
                b = b""
            with self.cond:
                if not b:
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.buf += b
                self.chunks.append((time.monotonic(), b))
                self.cond.notify_all()

    def data(self):
        with self.cond:
            return self.buf

    def wait_for(self, pred, timeout, what):
        """Waits until pred(bytes so far) is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self.buf)
                if v:
                    return v
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    break
                self.cond.wait(min(left, 0.1))
        err = b""
        if self.eof:
            self.proc.wait(timeout=5)
            err = self.proc.stderr.read() or b""
        raise TestFailure("curl %s: %s waiting for %s; received %r%s"
                          % (self.path, "stream ended" if self.eof else "timed out", what,
                             self.buf[-400:],
                             (" (curl: %s)" % err.decode(errors="replace").strip()) if err else ""))

    def wait_bytes(self, needle, timeout, start=0):
        """Waits until needle occurs at or after offset start; returns its end offset."""
        def f(b):
            i = b.find(needle, start)
            return i + len(needle) if i >= 0 else None
        return self.wait_for(f, timeout, repr(needle))

    def wait_retry(self, timeout=10):
        """Waits for the leading retry: field; returns (value, offset after its item).

        The item may carry the stream's starting id (wait_start checks it).
        """
        m = self.wait_for(lambda b: re.match(rb"retry: (\d+)\n(?:id: [^\n]*\n)?\n", b), timeout,
                          "retry: line")
        return int(m.group(1)), m.end()

    def wait_start(self, timeout=10, nsubjects=1):
        """Waits for the start item "retry: N\\nid: P\\n\\n" the stream must begin with.

        Returns (retry, [position per subject], offset after the item). Fails
        if the stream begins with anything else.
        """
        def f(b):
            m = START_RE.match(b)
            if m:
                return m
            # The first block is complete and is not the start item: fail now.
            return ("bad", b) if b"\n\n" in b else None
        m = self.wait_for(f, timeout, "the start item retry: + id:")
        expect(not isinstance(m, tuple), "%s: the stream does not begin with "
               "'retry: N\\nid: P\\n\\n': %r" % (self.path, m[1][:200]))
        positions = parse_id(m.group(2).decode(), nsubjects)
        return int(m.group(1)), positions, m.end()

    def alive(self):
        return self.proc.poll() is None

    def headers(self):
        with open(self.hdr_path, "rb") as f:
            return parse_header_dump(f.read())

    def close(self):
        kill_proc(self.proc)
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Client:
    """sluice-client in the background; result() parses its JSON report."""

    def __init__(self, gw, args, timeout_ms=30000, events_out=True):
        """events_out=False for runs too large to log every event (events() then fails)."""
        self.dir = tempdir("sluice-client-")
        self.ready_file = os.path.join(self.dir, "ready")
        self.events_file = os.path.join(self.dir, "events.jsonl") if events_out else None
        self.out_path = os.path.join(self.dir, "stdout")
        self.err_path = os.path.join(self.dir, "stderr")
        self.timeout_s = timeout_ms / 1000.0
        self.cmd = [tool("SLUICE_CLIENT", "sluice-client"), "--connect", gw.authority,
                    "--servername", "localhost", "--cacert", gw.ca,
                    "--ready-file", self.ready_file, "--timeout-ms", str(timeout_ms)]
        if events_out:
            self.cmd += ["--events-out", self.events_file]
        self.cmd += list(args)
        self.report = None
        with open(self.out_path, "wb") as o, open(self.err_path, "wb") as e:
            self.proc = spawn(self.cmd, stdout=o, stderr=e)

    def _stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=20):
        def ready():
            if os.path.exists(self.ready_file):
                return True
            if self.proc.poll() is not None:
                raise TestFailure("sluice-client exited %d before ready: %s %s"
                                  % (self.proc.returncode, self._stdout().strip()[:2000],
                                     self._stderr().strip()[-2000:]))
            return False
        wait_until(ready, timeout, "sluice-client's ready file")

    def _stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def result(self):
        """Waits (bounded by the client's own --timeout-ms) and returns (rc, report)."""
        try:
            self.proc.wait(timeout=self.timeout_s + 15)
        except subprocess.TimeoutExpired:
            kill_proc(self.proc)
            raise TestFailure("sluice-client ignored its own --timeout-ms")
        self.report = parse_report(self._stdout(), self.proc.returncode, self._stderr())
        return self.proc.returncode, self.report

    def stderr(self):
        return self._stderr()

    def events(self):
        expect(self.events_file, "this client was started with events_out=False")
        out = []
        with open(self.events_file, "rb") as f:
            for ln in f:
                if ln.strip():
                    out.append(json.loads(ln))
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        kill_proc(self.proc)
        return False


def parse_report(stdout, rc, stderr=""):
    for ln in reversed(stdout.splitlines()):
        ln = ln.strip()
        if ln.startswith("{"):
            try:
                return json.loads(ln)
            except ValueError:
                break
    raise TestFailure("sluice-client (exit %s) printed no JSON report; stdout %r stderr %r"
                      % (rc, stdout[-500:], stderr[-1000:]))


def run_client(gw, args, timeout=30, events_out=True):
    """Runs sluice-client to completion; returns (exit code, parsed JSON report)."""
    c = Client(gw, args, timeout_ms=int(timeout * 1000), events_out=events_out)
    try:
        return c.result()
    finally:
        kill_proc(c.proc)


def tls_context(gw, alpn=("h2",)):
    ctx = ssl.create_default_context(cafile=gw.ca)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def read_until_closed(sock, timeout):
    """Reads until the peer closes; returns (bytes, closed?) within timeout s."""
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return got, False
        sock.settimeout(left)
        try:
            b = sock.recv(65536)
        except socket.timeout:
            return got, False
        except (ConnectionResetError, BrokenPipeError):
            return got, True
        except ssl.SSLError:
            return got, True
        if not b:
            return got, True
        got += b


# ---------------------------------------------------------------------------
# the test runner


def _on_signal(signum, frame):
    raise Watchdog("%s after %.0f s" % (signal.Signals(signum).name, time.monotonic() - _t0))


def cleanup():
    with _lock:
        procs = list(_procs)
        dirs = list(_dirs)
        _procs.clear()
        _dirs.clear()
    for p in procs:
        kill_proc(p)
    for g in _gateways:
        if g._log_cache is None:
            g._log_cache = g.log()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def main(test, deadline_s=150):
    """Runs test() with a watchdog, cleans up, prints one summary line, exits."""
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    signal.signal(signal.SIGALRM, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.alarm(deadline_s)
    ok, why = False, ""
    try:
        for env, prog in (("SLUICE_BIN", "sluice"), ("SLUICE_PUB", "sluice-pub")):
            tool(env, prog)
        test()
        ok = True
    except BaseException as e:  # noqa: B902 (the watchdog is a BaseException)
        traceback.print_exc(file=sys.stdout)
        why = "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
        for g in [g for g in _gateways if g.proc is not None]:
            print("---- gateway pid %d (port %s, %s) stderr:\n%s\n----"
                  % (g.proc.pid, g.port, g.state(), g.report()), flush=True)
    finally:
        signal.alarm(0)
        cleanup()
    elapsed = time.monotonic() - _t0
    if ok:
        print("PASS %s (%.1f s)" % (name, elapsed), flush=True)
        sys.exit(0)
    print("FAIL %s (%.1f s): %s" % (name, elapsed, why), flush=True)
    sys.exit(1)
