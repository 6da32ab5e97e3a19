"""Helpers for the operations tests (issue 6: admin, metrics, access log, drain, reload).

Standard library only, like harness.py, whose rules these keep: every wait
is bounded, every process is started through harness.spawn, every socket
is on 127.0.0.1.

- H2Conn: a small HTTP/2 client on a raw TLS socket. sluice-client reports
  per-stream detail only for up to 50 streams and no end times; the drain
  and reload tests need, per stream, the exact bytes, when END_STREAM or
  RST_STREAM arrived, and every GOAWAY with its last-stream-id. It encodes
  request headers as HPACK literals (never indexed, so the server's
  decoder state stays trivial) and does not decode response headers at
  all: an SSE stream is recognised by its body. Windows are opened to
  2^31-1 at the start, so it never has to send WINDOW_UPDATE.
- certificates: a second server certificate signed by the harness's CA,
  and the SHA-256 fingerprint a new TLS connection is served.
- access log reading.

Rejected alternative: nghttp -v for the per-stream detail. It prints
frames but interleaves 300 streams without timestamps we can trust, and it
cannot hold a connection open while the test opens further streams on it.
"""

import calendar
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
import time

import harness as h
from harness import HOST, TestFailure, expect


# ---------------------------------------------------------------------------
# a small HTTP/2 client

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = \
    0, 1, 3, 4, 6, 7, 8, 9
FLAG_END_STREAM, FLAG_ACK, FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 1, 1, 4, 8, 0x20
MAX_WINDOW = 2 ** 31 - 1


def _frame(ftype, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id) + payload


def _hpack_int(v, prefix, first=0):
    top = (1 << prefix) - 1
    if v < top:
        return bytes([first | v])
    out = [first | top]
    v -= top
    while v >= 128:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _hpack_str(s):
    b = s if isinstance(s, bytes) else s.encode()
    return _hpack_int(len(b), 7) + b


def hpack_request(method, path, authority, headers=()):
    """A request header block: static-table indexes and never-indexed literals."""
    out = {"GET": b"\x82", "POST": b"\x83"}[method] + b"\x87"  # :method, :scheme https
    out += _hpack_int(4, 4) + _hpack_str(path)  # :path, literal, name index 4
    out += _hpack_int(1, 4) + _hpack_str(authority)  # :authority, name index 1
    for name, val in headers:
        out += b"\x00" + _hpack_str(name.lower()) + _hpack_str(val)
    return out


class H2Stream:
    def __init__(self, sid, path):
        self.id = sid
        self.path = path
        self.opened_at = time.monotonic()
        self.headers_at = None  # monotonic time of the response HEADERS
        self.body = bytearray()
        self.chunks = []  # (monotonic time, bytes)
        self.ended_at = None  # END_STREAM
        self.reset_code = None
        self.reset_at = None

    @property
    def closed(self):
        return self.ended_at is not None or self.reset_code is not None

    @property
    def closed_at(self):
        return self.ended_at if self.ended_at is not None else self.reset_at

    def __repr__(self):
        return "<stream %d %s: %d bytes, ended %s, reset %s, tail %r>" % (
            self.id, self.path, len(self.body), self.ended_at is not None, self.reset_code,
            bytes(self.body[-120:]))


class H2Conn:
    """One TLS h2 connection; a reader thread owns the socket and records frames.

    Every write goes through the reader thread too (OpenSSL objects are not
    safe for a read in one thread and a write in another), via a queue that
    the thread flushes between short reads.
    """

    def __init__(self, gw, timeout=10, servername="localhost", close_on_final_goaway=False,
                 rcvbuf=None, window=MAX_WINDOW):
        """rcvbuf: SO_RCVBUF before connecting, so that a paused reader blocks the server sooner.

        window: the stream and connection windows offered to the server; 0
        keeps every response body (not its HEADERS) waiting in the server.
        """
        self.gw = gw
        self.authority = "localhost:%d" % gw.port
        self.close_on_final_goaway = close_on_final_goaway
        self.paused = threading.Event()  # set: the reader thread stops reading
        ctx = h.tls_context(gw)
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        try:
            raw.connect((HOST, gw.port))
        except BaseException:
            raw.close()
            raise
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=servername)
        except BaseException:
            raw.close()
            raise
        expect(self.sock.selected_alpn_protocol() == "h2",
               "ALPN chose %r, not h2" % self.sock.selected_alpn_protocol())
        self.peer_der = self.sock.getpeercert(binary_form=True)
        self.sock.settimeout(0.05)
        self.cond = threading.Condition()
        self.streams = {}
        self.goaways = []  # (monotonic time, last_stream_id, error code)
        self.eof_at = None  # the server closed the connection
        self.error = None
        self.next_id = 1
        self._out = []
        self._stop = False
        self._posting = 0
        # What the server lets us send (request bodies): its SETTINGS and WINDOW_UPDATEs.
        self.send_window = 65535
        self.peer_initial_window = 65535
        settings = struct.pack(">HI", 2, 0) + struct.pack(">HI", 4, window)  # no push; window
        grow = (_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", window - 65535))
                if window > 65535 else b"")
        self._out.append(H2_PREFACE + _frame(SETTINGS, 0, 0, settings) + grow)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def fingerprint(self):
        return hashlib.sha256(self.peer_der).hexdigest()

    def request(self, path, headers=(), method="GET"):
        """Submits one request (no body); returns its H2Stream at once."""
        with self.cond:
            sid = self.next_id
            self.next_id += 2
            s = H2Stream(sid, path)
            self.streams[sid] = s
            block = hpack_request(method, path, self.authority, headers)
            self._out.append(_frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, sid, block))
        return s

    def open_many(self, paths, headers=()):
        """Submits several requests in one write; returns their H2Streams in order."""
        with self.cond:
            out = []
            frames = []
            for path in paths:
                sid = self.next_id
                self.next_id += 2
                s = H2Stream(sid, path)
                self.streams[sid] = s
                frames.append(_frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, sid,
                                     hpack_request("GET", path, self.authority, headers)))
                out.append(s)
            self._out.append(b"".join(frames))
        return out

    def cancel(self, s):
        """Sends RST_STREAM (CANCEL) for stream s, as a client that stops watching."""
        with self.cond:
            self._out.append(_frame(RST_STREAM, 0, s.id, struct.pack(">I", 8)))

    def post(self, path, body, end=True, timeout=20, headers=()):
        """Opens a POST and sends body within the server's flow-control windows.

        end=False leaves the request body open (no END_STREAM), so the
        server holds what it has received. Returns the H2Stream.
        """
        with self.cond:
            sid = self.next_id
            self.next_id += 2
            s = H2Stream(sid, path)
            s.send_window = self.peer_initial_window
            self.streams[sid] = s
            block = hpack_request("POST", path, self.authority, headers)
            self._out.append(_frame(HEADERS, FLAG_END_HEADERS, sid, block))
        view = memoryview(body)
        self._posting += 1  # the reader thread then polls fast, to send as windows open
        try:
            return self._post_body(s, view, end, timeout)
        finally:
            self._posting -= 1

    def _post_body(self, s, view, end, timeout):
        sid = s.id
        while True:
            with self.cond:
                n = min(len(view), 16384, self.send_window, s.send_window)
                if (n > 0 or not view) and not s.closed:
                    last = end and n == len(view)
                    self._out.append(_frame(DATA, FLAG_END_STREAM if last else 0, sid,
                                            bytes(view[:n])))
                    self.send_window -= n
                    s.send_window -= n
                    view = view[n:]
                    if not view:
                        return s
                    continue
                if s.closed:
                    return s
            self.wait(lambda c: min(c.send_window, s.send_window) > 0 or s.closed, timeout,
                      "flow-control window for the body of stream %d" % sid)

    def _send_now(self, data):
        view = memoryview(data)
        deadline = time.monotonic() + 10
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
            except (socket.timeout, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                if time.monotonic() > deadline:
                    raise TestFailure("h2: could not write for 10 s")

    def _run(self):
        buf = b""
        try:
            while True:
                with self.cond:
                    out, self._out = self._out, []
                    stop = self._stop
                if out:
                    self._send_now(b"".join(out))
                if stop:
                    return
                if self.paused.is_set():
                    time.sleep(0.02)
                    continue
                self.sock.settimeout(0.002 if self._posting else 0.05)
                try:
                    chunk = self.sock.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
                    chunk = b""
                if not chunk:
                    with self.cond:
                        self.eof_at = time.monotonic()
                        self.cond.notify_all()
                    return
                buf += chunk
                while len(buf) >= 9:
                    ln = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + ln:
                        break
                    ftype, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload = buf[9:9 + ln]
                    buf = buf[9 + ln:]
                    self._on_frame(ftype, flags, sid, payload)
        except BaseException as e:  # noqa: B902 (recorded for the test thread)
            with self.cond:
                self.error = e
                self.eof_at = self.eof_at or time.monotonic()
                self.cond.notify_all()

    def _on_frame(self, ftype, flags, sid, payload):
        now = time.monotonic()
        reply = None
        with self.cond:
            s = self.streams.get(sid)
            if ftype == DATA and s is not None:
                if flags & FLAG_PADDED:
                    pad = payload[0]
                    payload = payload[1:len(payload) - pad]
                if payload:
                    s.body += payload
                    s.chunks.append((now, payload))
                if flags & FLAG_END_STREAM:
                    s.ended_at = now
            elif ftype == HEADERS and s is not None:
                s.headers_at = s.headers_at or now
                if flags & FLAG_END_STREAM:
                    s.ended_at = now
            elif ftype == RST_STREAM and s is not None:
                s.reset_code = int.from_bytes(payload[:4], "big")
                s.reset_at = now
            elif ftype == SETTINGS and not flags & FLAG_ACK:
                for i in range(0, len(payload) - 5, 6):
                    ident, val = struct.unpack(">HI", payload[i:i + 6])
                    if ident == 4:  # INITIAL_WINDOW_SIZE: applies to open streams too
                        for x in self.streams.values():
                            if hasattr(x, "send_window"):
                                x.send_window += val - self.peer_initial_window
                        self.peer_initial_window = val
                reply = _frame(SETTINGS, FLAG_ACK, 0)
            elif ftype == WINDOW_UPDATE:
                inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                if sid == 0:
                    self.send_window += inc
                elif s is not None and hasattr(s, "send_window"):
                    s.send_window += inc
            elif ftype == PING and not flags & FLAG_ACK:
                reply = _frame(PING, FLAG_ACK, 0, payload)
            elif ftype == GOAWAY:
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                code = int.from_bytes(payload[4:8], "big")
                self.goaways.append((now, last, code))
                if (self.close_on_final_goaway and last != MAX_WINDOW
                        and all(x.closed for x in self.streams.values())):
                    self._stop = True
            self.cond.notify_all()
        if reply:
            self._send_now(reply)

    def wait(self, pred, timeout, what):
        """Waits (bounded) until pred(self) is truthy under the lock; returns it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0 or (self.eof_at is not None and not v):
                    break
                self.cond.wait(min(left, 0.1))
            v = pred(self)
            if v:
                return v
            state = "connection closed" if self.eof_at is not None else "timed out"
            raise TestFailure("h2 conn: %s after %.1f s waiting for %s (error %r; goaways %r; "
                              "streams %r)" % (state, timeout, what, self.error, self.goaways,
                                               list(self.streams.values())[:3]))

    def wait_body(self, s, needle, timeout, start=0):
        """Waits until needle occurs in stream s's body at or after start; returns end offset."""
        def f(_):
            i = s.body.find(needle, start)
            return i + len(needle) if i >= 0 else None
        return self.wait(f, timeout, "%r on stream %d (%s)" % (needle, s.id, s.path))

    def close(self):
        with self.cond:
            if not self._stop and self.eof_at is None:
                # A client's GOAWAY names the last stream the SERVER opened (none:
                # 0); one of the client's own ids is a PROTOCOL_ERROR to nghttp2.
                self._out.append(_frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
            self._stop = True
        self.thread.join(timeout=5)
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---------------------------------------------------------------------------
# certificates


def pem_fingerprint(pem_path):
    """SHA-256 of the first certificate in a PEM file (hex, lower case)."""
    with open(pem_path) as f:
        text = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    expect(m, "%s holds no certificate" % pem_path)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest()


def served_fingerprint(gw, timeout=5):
    """The SHA-256 fingerprint of the certificate a NEW connection is served (verified)."""
    ctx = h.tls_context(gw)
    with socket.create_connection((HOST, gw.port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def openssl_fingerprint(gw, timeout=10):
    """The same through openssl s_client | openssl x509 -fingerprint (SHA-256, hex)."""
    p = h.spawn(["openssl", "s_client", "-connect", "%s:%d" % (HOST, gw.port), "-alpn", "h2",
                 "-servername", "localhost"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        h.kill_proc(p)
        raise TestFailure("openssl s_client hung")
    x = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=out,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    m = re.search(rb"Fingerprint=([0-9A-F:]+)", x.stdout)
    expect(m, "openssl x509 found no certificate in s_client's output: %r %r"
           % (out[-300:], x.stderr[-300:]))
    return m.group(1).decode().replace(":", "").lower()


def make_server_cert(ca_dir, out_dir, cn="localhost"):
    """A new EC key and server certificate for localhost/127.0.0.1, signed by ca_dir's CA.

    Returns (cert path, key path). The harness's make-dev-cert.sh leaves
    ca.pem and ca.key in the gateway's directory, so curl --cacert and
    python's verification keep working with the new certificate.
    """
    os.makedirs(out_dir, exist_ok=True)
    key = os.path.join(out_dir, "server.key")
    csr = os.path.join(out_dir, "server.csr")
    ext = os.path.join(out_dir, "server.ext")
    pem = os.path.join(out_dir, "server.pem")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n")
    for cmd in (["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-subj", "/CN=%s" % cn, "-keyout", key, "-out", csr],
                ["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(ca_dir, "ca.pem"),
                 "-CAkey", os.path.join(ca_dir, "ca.key"), "-CAcreateserial",
                 "-CAserial", os.path.join(out_dir, "ca.srl"), "-days", "30",
                 "-extfile", ext, "-out", pem]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        expect(r.returncode == 0, "%s failed: %s" % (" ".join(cmd[:3]),
                                                      r.stdout.decode(errors="replace")))
    return pem, key


def replace_file(path, data):
    """Replaces path's contents in one rename, so a reader never sees half a file."""
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# access log

TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def read_jsonl(path):
    """Every line of an access log file, parsed; fails on a line that is not one JSON object."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    expect(not data or data.endswith(b"\n"), "%s ends in a partial line: %r" % (path, data[-200:]))
    out = []
    for n, ln in enumerate(data.split(b"\n")[:-1], 1):
        try:
            obj = json.loads(ln.decode("utf-8"))
        except ValueError as e:
            raise TestFailure("%s line %d is not JSON (%s): %r" % (path, n, e, ln[:300]))
        expect(isinstance(obj, dict), "%s line %d is not a JSON object: %r" % (path, n, ln[:200]))
        out.append(obj)
    return out


def log_epoch(entry):
    """An access log line's "time" as UTC seconds since the epoch (millisecond precision)."""
    t = entry["time"]
    expect(TIME_RE.match(t), "access log time %r is not YYYY-MM-DDTHH:MM:SS.mmmZ" % t)
    secs = calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S"))
    return secs + int(t[20:23]) / 1000.0
