"""HTTP/1.1 helpers for sluice's end-to-end tests (issue 7).

A gateway with the cleartext listener, raw HTTP/1.1 connections over a
plain socket or python ssl, and a strict response reader: the head must be
exactly "HTTP/1.1 NNN Phrase" plus CRLF-terminated fields, and a chunked
body must be framed exactly (hex size, CRLF, data, CRLF, a last chunk
"0\\r\\n\\r\\n" without trailers), so that a framing bug in the gateway
fails the test instead of being papered over by a lenient client.

Everything here is bounded by a timeout and stays on 127.0.0.1, as in
harness.py. Rejected alternative: http.client, which hides the wire (it
accepts bare LF, merges headers, decodes chunks leniently) and cannot
pipeline.
"""

import json
import re
import socket
import ssl
import subprocess
import threading
import time

import harness as h
import metrics_util as mu
from harness import expect

HOST = h.HOST
_STATUS_RE = re.compile(rb"HTTP/1\.1 (\d{3}) ([^\r\n]*)")
_CHUNK_SIZE_RE = re.compile(rb"([0-9a-fA-F]+)\r\n")


def gateway(nats_url, **flags):
    """A Gateway with --listen-plain 127.0.0.1:0; its port is gw.plain_port."""
    flags.setdefault("listen_plain", HOST + ":0")
    gw = h.Gateway(nats_url, **flags)
    expect(gw.plain_port, "the gateway did not name its plain listener: %r" % h.tail(gw.log(), 3))
    h.log("gateway plain listener on port %d" % gw.plain_port)
    return gw


def wait_nats_messages(gw, at_least, timeout=10):
    """Waits until the gateway has received at least that many NATS messages in total."""
    return h.wait_until(lambda: mu.metric(gw, "sluice_nats_messages_total") >= at_least,
                        timeout, "%d NATS messages received by the gateway" % at_least,
                        interval=0.02)


def plain_url(gw, path):
    return "http://%s:%d%s" % (HOST, gw.plain_port, path)


def connect_plain(gw, timeout=10, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Before connect, so that the window the peer sees is small from the start.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((HOST, gw.plain_port))
    return s


def connect_tls(gw, alpn=("http/1.1",), timeout=10, rcvbuf=None):
    """A TLS socket to the gateway's TLS listener; alpn=None offers no ALPN at all."""
    ctx = ssl.create_default_context(cafile=gw.ca)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.connect((HOST, gw.port))
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    return s


class Head:
    def __init__(self, status, reason, headers, raw):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(lowercase name, value)] in order
        self.raw = raw

    def get(self, name):
        vals = [v for n, v in self.headers if n == name]
        expect(len(vals) <= 1, "header %s repeated: %r" % (name, self.raw))
        return vals[0] if vals else None

    def names(self):
        return [n for n, _ in self.headers]

    def __repr__(self):
        return "<Head %r>" % self.raw


class Resp:
    def __init__(self, head, body, chunks=None):
        self.head = head
        self.status = head.status
        self.body = body
        self.chunks = chunks  # decoded chunk sizes when chunked

    def header(self, name):
        return self.head.get(name)

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            raise h.TestFailure("body is not JSON (%s): %r" % (e, self.body[:300]))

    def __repr__(self):
        return "<Resp %d %r %r>" % (self.status, self.head.headers, self.body[:200])


class Conn:
    """One HTTP/1.1 client connection (plain or TLS) read strictly and incrementally."""

    def __init__(self, sock, what="conn"):
        self.sock = sock
        self.what = what
        self.buf = b""
        self.eof = False
        # The chunked response being read by stream_* calls.
        self.stream_head = None
        self.stream_body = b""
        self.stream_done = False

    @classmethod
    def plain(cls, gw, **kw):
        return cls(connect_plain(gw, **kw), "plain")

    @classmethod
    def tls(cls, gw, alpn=("http/1.1",), **kw):
        s = connect_tls(gw, alpn, **kw)
        c = cls(s, "tls alpn=%s" % (s.selected_alpn_protocol(),))
        return c

    def alpn(self):
        return self.sock.selected_alpn_protocol() if isinstance(self.sock, ssl.SSLSocket) else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- reading -----------------------------------------------------------

    def _fill(self, deadline):
        """Reads more bytes; False on EOF or when the deadline passed."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            b = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return False
        except ssl.SSLWantReadError:
            return True
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            b = b""
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def _need(self, n, deadline, what):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise h.TestFailure("%s: %s waiting for %s; have %r"
                                    % (self.what, "connection closed" if self.eof else "timed out",
                                       what, self.buf[-300:]))

    def _until(self, needle, deadline, what, limit=1 << 20):
        while True:
            i = self.buf.find(needle)
            if i >= 0:
                return i
            expect(len(self.buf) < limit, "%s: no %r in %d bytes" % (self.what, needle, limit))
            if not self._fill(deadline):
                raise h.TestFailure("%s: %s waiting for %s; have %r"
                                    % (self.what, "connection closed" if self.eof else "timed out",
                                       what, self.buf[-300:]))

    def read_head(self, timeout=10):
        """Reads one response head (skipping nothing); checks its shape strictly."""
        deadline = time.monotonic() + timeout
        i = self._until(b"\r\n\r\n", deadline, "a response head")
        raw, self.buf = self.buf[:i + 4], self.buf[i + 4:]
        lines = raw[:-4].split(b"\r\n")
        m = _STATUS_RE.fullmatch(lines[0])
        expect(m, "%s: bad status line %r (whole head %r)" % (self.what, lines[0], raw))
        headers = []
        for ln in lines[1:]:
            expect(b"\n" not in ln and b"\r" not in ln, "bare CR/LF in head %r" % raw)
            m2 = re.fullmatch(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ?([^\r\n]*)", ln)
            expect(m2, "%s: malformed header line %r in %r" % (self.what, ln, raw))
            headers.append((m2.group(1).decode().lower(), m2.group(2).decode("latin-1").strip()))
        return Head(int(m.group(1)), m.group(2).decode("latin-1"), headers, raw)

    def read_response(self, timeout=10, head=None, interim=False):
        """Reads a whole response (content-length or chunked); skips a 100 unless interim."""
        deadline = time.monotonic() + timeout
        while True:
            hd = head or self.read_head(max(0.01, deadline - time.monotonic()))
            head = None
            if 100 <= hd.status < 200 and not interim:
                continue
            break
        if 100 <= hd.status < 200 or hd.status in (204, 304):
            return Resp(hd, b"")
        te, cl = hd.get("transfer-encoding"), hd.get("content-length")
        expect(not (te and cl), "response has both transfer-encoding and content-length: %r"
               % hd.raw)
        if te is not None:
            expect(te.lower() == "chunked", "transfer-encoding %r" % te)
            body, sizes = b"", []
            while True:
                data, last = self._read_chunk(deadline)
                if last:
                    return Resp(hd, body, sizes)
                sizes.append(len(data))
                body += data
        if cl is not None:
            expect(re.fullmatch(r"\d+", cl), "content-length %r" % cl)
            n = int(cl)
            self._need(n, deadline, "%d body bytes" % n)
            body, self.buf = self.buf[:n], self.buf[n:]
            return Resp(hd, body)
        # Neither: the body runs to the close.
        while self._fill(deadline):
            pass
        expect(self.eof, "%s: a response without length did not end with a close" % self.what)
        body, self.buf = self.buf, b""
        return Resp(hd, body)

    def _read_chunk(self, deadline):
        """One chunk, strictly framed; (data, is_last)."""
        i = self._until(b"\r\n", deadline, "a chunk-size line", limit=4096)
        m = _CHUNK_SIZE_RE.fullmatch(self.buf[:i + 2])
        expect(m, "%s: bad chunk-size line %r (then %r)" % (self.what, self.buf[:i + 2],
                                                            self.buf[i + 2:i + 80]))
        n = int(m.group(1), 16)
        start = i + 2
        if n == 0:
            self._need(start + 2, deadline, "the CRLF after the last chunk")
            expect(self.buf[start:start + 2] == b"\r\n",
                   "%s: trailers or junk after the last chunk: %r" % (self.what,
                                                                     self.buf[start:start + 80]))
            self.buf = self.buf[start + 2:]
            return b"", True
        expect(m.group(1)[:1] != b"0", "chunk size with a leading zero: %r" % m.group(1))
        self._need(start + n + 2, deadline, "a %d-byte chunk" % n)
        data = self.buf[start:start + n]
        expect(self.buf[start + n:start + n + 2] == b"\r\n",
               "%s: chunk of %d bytes not followed by CRLF: %r"
               % (self.what, n, self.buf[start + n:start + n + 20]))
        self.buf = self.buf[start + n + 2:]
        return data, False

    # -- an SSE response read incrementally ----------------------------------

    def stream_open(self, timeout=10):
        """Reads the head of a streaming response and checks the SSE head exactly."""
        hd = self.read_head(timeout)
        check_sse_head(hd)
        self.stream_head = hd
        self.stream_body = b""
        self.stream_done = False
        return hd

    def stream_wait(self, pred, timeout, what):
        """Decodes chunks until pred(decoded body) is truthy or the response ends."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred(self.stream_body)
            if v:
                return v
            if self.stream_done:
                raise h.TestFailure("%s: the response ended while waiting for %s; body %r"
                                    % (self.what, what, self.stream_body[-400:]))
            # Decode whatever whole chunks are buffered before reading more.
            try:
                data, last = self._read_chunk(deadline)
            except h.TestFailure as e:
                raise h.TestFailure("%s: waiting for %s: %s; body so far %r"
                                    % (self.what, what, e, self.stream_body[-400:]))
            if last:
                self.stream_done = True
            else:
                self.stream_body += data

    def stream_bytes(self, needle, timeout, start=0):
        def f(b):
            i = b.find(needle, start)
            return i + len(needle) if i >= 0 else None
        return self.stream_wait(f, timeout, repr(needle[:80]))

    def stream_start(self, timeout=10):
        """Waits for the start item; returns (retry, position, offset after it)."""
        m = self.stream_wait(lambda b: h.START_RE.match(b) or (b"\n\n" in b and ("bad", b)),
                             timeout, "the start item")
        expect(not isinstance(m, tuple), "%s: stream does not begin with the start item: %r"
               % (self.what, self.stream_body[:200]))
        return int(m.group(1)), h.parse_id(m.group(2).decode())[0], m.end()

    def stream_end(self, timeout):
        """Reads until the last chunk; returns the whole decoded body."""
        self.stream_wait(lambda b: False if not self.stream_done else True, timeout,
                         "the last chunk")
        return self.stream_body

    def wait_closed(self, timeout):
        """True when the peer closes within timeout (bytes that arrive are kept)."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        return self.eof


def check_sse_head(hd):
    """The exact HTTP/1.1 SSE response head (README + issue 7)."""
    expect(hd.status == 200 and hd.reason == "OK", "SSE status line %r" % hd.raw[:40])
    want = {"content-type": "text/event-stream", "cache-control": "no-cache",
            "x-accel-buffering": "no", "connection": "keep-alive",
            "transfer-encoding": "chunked"}
    for k, v in want.items():
        expect(hd.get(k) == v, "SSE head: %s is %r, expected %r; head %r"
               % (k, hd.get(k), v, hd.raw))
    expect(hd.get("content-length") is None, "SSE head has content-length: %r" % hd.raw)
    expect(hd.get("x-request-id"), "SSE head has no x-request-id: %r" % hd.raw)
    extra = set(hd.names()) - set(want) - {"x-request-id"}
    expect(not extra, "SSE head has unexpected fields %r: %r" % (sorted(extra), hd.raw))


def get(path, host="localhost", extra=""):
    """A GET request as bytes."""
    return ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host, extra)).encode()


def post(path, body, host="localhost", extra=""):
    if isinstance(body, str):
        body = body.encode()
    return (("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n"
             % (path, host, len(body), extra)).encode() + body)


def one(gw, raw, timeout=10, tls=False):
    """Sends raw bytes on a new connection; returns (response, closed after it?)."""
    with (Conn.tls(gw) if tls else Conn.plain(gw)) as c:
        c.send(raw)
        r = c.read_response(timeout)
        closed = c.wait_closed(2) if r.header("connection") == "close" else None
        return r, closed


def curl_plain(gw, path, method="GET", data=None, max_time=10, extra=(), http="--http1.1"):
    """One request with curl over the plain listener; returns a harness Response."""
    d = h.tempdir("sluice-curl-")
    hdr, body = d + "/headers", d + "/body"
    cmd = ["curl", http, "-sS", "--noproxy", "*", "-D", hdr, "-o", body,
           "--max-time", str(max_time)]
    if method != "GET":
        cmd += ["-X", method]
    if data is not None:
        cmd += ["--data-binary", data]
    cmd += list(extra) + [plain_url(gw, path)]
    p = h.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(timeout=max_time + 5)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise h.TestFailure("curl %s %s hung" % (method, path))
    expect(p.returncode == 0, "curl %s %s exited %d: %s"
           % (method, path, p.returncode, err.decode(errors="replace").strip()))
    with open(hdr, "rb") as f:
        version, status, headers = h.parse_header_dump(f.read())
    with open(body, "rb") as f:
        b = f.read()
    return h.Response(status, version, headers, b)


class PlainCurlStream(h.CurlStream):
    """harness.CurlStream against the plain listener (any curl protocol flag)."""

    def __init__(self, gw, path, proto="--http1.1", max_time=60, extra=()):
        self.dir = h.tempdir("sluice-curl-")
        self.hdr_path = self.dir + "/headers"
        self.path = path
        cmd = ["curl", proto, "-sS", "--noproxy", "*", "-N", "-D", self.hdr_path,
               "--max-time", str(max_time)] + list(extra) + [plain_url(gw, path)]
        self.proc = h.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""
        self.eof = False
        self.cond = threading.Condition()
        self.chunks = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
