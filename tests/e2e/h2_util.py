"""The one raw HTTP/2 client of the e2e tests: frames and HPACK built by hand.

Standard library only, like harness.py, whose rules it keeps: every wait is
bounded, every socket is on 127.0.0.x.

Why by hand: sluice-client and curl report per-stream detail for a few
streams and no end times, and cannot misbehave. The tests need, per stream,
the exact bytes, when END_STREAM or RST_STREAM arrived and every GOAWAY
with its last-stream-id (drain, reload, caps), and they need to send what
no library would: floods, resets, CONTINUATION storms, stream ids out of
order, a client that never reads (floods, smuggling, stuck reader).

One connection class, H2Conn, in one of two modes:

- background=True (the default): a reader thread owns the socket, answers
  SETTINGS and PING, and records streams; every write goes through that
  thread too (OpenSSL objects are not safe for a read in one thread and a
  write in another), via a queue it flushes between short reads. Windows
  are opened to 2^31-1 at the start (window=), so it never has to send
  WINDOW_UPDATE. paused stops its reads (a client that stops reading).
- background=False: no thread and no answers of its own; the test writes
  with send() (which reports a failed or stalled write instead of raising)
  and reads with pump()/wait(). This is the adversarial client.

Both record every frame received (frames) and what it means for the
streams this client opened with request()/open_many()/post().

HPACK: one encoder. A field whose name and value are in the static table
is indexed; one whose name is, is a literal without indexing with the
indexed name; any other a literal without indexing with a new name. No
Huffman and no dynamic table, so the server's decoder state stays trivial.
Response headers are not decoded, except the :status of a first answer
(first_status).

Rejected alternative: nghttp -v. It prints frames but interleaves hundreds
of streams without timestamps we can trust, cannot hold a connection open
while the test opens further streams on it, and cannot misbehave.
"""

import hashlib
import select
import socket
import ssl
import struct
import threading
import time

import harness as h
from harness import HOST, TestFailure, expect

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM = range(12)
ERROR_NAMES = {v: k for k, v in list(globals().items())
               if k in ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
                        "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR",
                        "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR",
                        "ENHANCE_YOUR_CALM")}

SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE = 0x2, 0x4
MAX_WINDOW = 2 ** 31 - 1


def err_name(code):
    return ERROR_NAMES.get(code, "0x%x" % code)


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def settings_payload(pairs):
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


# ---------------------------------------------------------------------------
# HPACK (RFC 7541), encoding only

# Appendix A: the static table entries a request can use.
_STATIC = {(":authority", ""): 1, (":method", "GET"): 2, (":method", "POST"): 3,
           (":path", "/"): 4, (":path", "/index.html"): 5, (":scheme", "http"): 6,
           (":scheme", "https"): 7}
_STATIC_NAMES = {":authority": 1, ":method": 2, ":path": 4, ":scheme": 6}
# ... and the :status entries of an answer.
_STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_str(s):
    b = s if isinstance(s, bytes) else s.encode()
    return hpack_int(len(b), 7) + b


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    return b"\x00" + _hpack_str(name) + _hpack_str(value)


def hpack_field(name, value):
    """One field: indexed, literal with an indexed name, or literal with a new name."""
    # latin-1: any byte decodes; the table's names and values are ASCII.
    n = name.decode("latin-1") if isinstance(name, bytes) else name
    v = value.decode("latin-1") if isinstance(value, bytes) else value
    if (n, v) in _STATIC:
        return hpack_int(_STATIC[(n, v)], 7, 0x80)
    if n in _STATIC_NAMES:
        return hpack_int(_STATIC_NAMES[n], 4) + _hpack_str(value)
    return hpack_literal(name, value)


def header_block(headers):
    return b"".join(hpack_field(n, v) for n, v in headers)


def request_headers(gw, path, method="GET", extra=()):
    """A request's fields, pseudo-headers first; extra as given (the adversary may
    send upper case)."""
    return [(":method", method), (":scheme", "https"), (":path", path),
            (":authority", "localhost:%d" % gw.port)] + list(extra)


def first_status(block):
    """The :status of a response header block when it is the first field (enough for a
    server's first answer: static index, or a literal with :status's name index and a
    plain value); None when it cannot be told without a dynamic table or Huffman."""
    if not block:
        return None
    b = block[0]
    if b & 0x80:
        return _STATIC_STATUS.get(b & 0x7F)
    if (b & 0xC0) == 0x40:
        idx = b & 0x3F
    elif (b & 0xF0) in (0x00, 0x10):
        idx = b & 0x0F
    else:
        return None
    if idx != 8 or len(block) < 2 or block[1] & 0x80:
        return None
    n = block[1] & 0x7F
    v = block[2:2 + n]
    return int(v) if v.isdigit() else None


# ---------------------------------------------------------------------------
# the connection


class Frame:
    def __init__(self, ftype, flags, sid, payload, t):
        self.type, self.flags, self.sid, self.payload, self.t = ftype, flags, sid, payload, t

    def __repr__(self):
        return "Frame(type=%d flags=0x%x sid=%d len=%d)" % (self.type, self.flags, self.sid,
                                                            len(self.payload))


class H2Stream:
    def __init__(self, sid, path):
        self.id = sid
        self.path = path
        self.opened_at = time.monotonic()
        self.headers_at = None  # monotonic time of the response HEADERS
        self.status = None  # its :status, when first_status can tell
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
    """One h2 connection (TLS with ALPN h2, or plain=True: cleartext h2 with prior
    knowledge to the gateway's --listen-plain port); see the module note."""

    def __init__(self, gw, timeout=10, servername="localhost", close_on_final_goaway=False,
                 rcvbuf=None, window=MAX_WINDOW, background=True, paused=False, source=HOST,
                 preface=True, settings=None, plain=False):
        """rcvbuf: SO_RCVBUF before connecting, so that a paused reader blocks the server sooner.

        window: the stream and connection windows offered to the server; 0
        keeps every response body (not its HEADERS) waiting in the server.
        settings: the SETTINGS pairs sent after the preface (default: no
        push and window; background=False: none). preface=False sends
        nothing at all. source: the local address to connect from.
        paused: the reader thread starts without reading (background only).
        """
        self.gw = gw
        self.authority = "localhost:%d" % gw.port
        self.background = background
        self.close_on_final_goaway = close_on_final_goaway
        self.timeout = timeout
        self.paused = threading.Event()  # set: the reader thread stops reading
        if paused:
            self.paused.set()
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            raw.settimeout(timeout)
            if source != HOST:
                raw.bind((source, 0))
            raw.connect((HOST, gw.plain_port if plain else gw.port))
            self.sock = raw if plain else h.tls_context(gw).wrap_socket(
                raw, server_hostname=servername)
        except BaseException:
            raw.close()
            raise
        if not plain:
            expect(self.sock.selected_alpn_protocol() == "h2",
                   "ALPN chose %r, not h2" % self.sock.selected_alpn_protocol())
            self.peer_der = self.sock.getpeercert(binary_form=True)
        self.cond = threading.Condition()
        self.streams = {}
        self.frames = []  # every Frame received, in order
        self.goaways = []  # (monotonic time, last_stream_id, error code)
        self.rbuf = b""
        self.bytes_in = 0
        self.opened = time.monotonic()
        self.eof_at = None  # reading saw the end: EOF, reset, TLS alert
        self.error = None
        self.send_failed = False  # a send failed: the peer is going away (reading may go on)
        self.send_blocked = False  # a send could not complete within the timeout
        self.next_id = 1
        self._out = []
        self._stop = False
        self._posting = 0
        # What the server lets us send (request bodies): its SETTINGS and WINDOW_UPDATEs.
        self.send_window = 65535
        self.peer_initial_window = 65535
        if settings is None:
            settings = ([(SETTINGS_ENABLE_PUSH, 0), (SETTINGS_INITIAL_WINDOW_SIZE, window)]
                        if background else [])
        first = b""
        if preface:
            first = PREFACE + frame(SETTINGS, 0, 0, settings_payload(settings))
            if background and window > 65535:
                first += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", window - 65535))
        if not background:
            if first:
                self.send(first)
            return
        self.sock.settimeout(0.05)
        if first:
            self._out.append(first)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def fingerprint(self):
        return hashlib.sha256(self.peer_der).hexdigest()

    @property
    def closed(self):
        return self.eof_at is not None

    # -- writing

    def send(self, data):
        """Sends all of data; False when the peer is gone or the send stalled (both noted).

        In the background mode it only queues data for the reader thread.
        Otherwise a failed send does not end reading: what the peer sent
        before it closed (a GOAWAY) is usually still there to read.
        """
        if self.background:
            with self.cond:
                self._out.append(data)
            return True
        if self.closed or self.send_failed:
            return False
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
            return True
        except socket.timeout:
            self.send_blocked = True
            return False
        except (OSError, ssl.SSLError):
            self.send_failed = True
            return False

    def request_frame(self, sid, path, method="GET", extra=(), end_stream=True):
        """The HEADERS frame of a request on stream sid (to send() as it is, or with more)."""
        block = header_block(request_headers(self.gw, path, method, extra))
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, block)

    def _open(self, path, headers, method, end_stream):
        """A new stream's H2Stream and its HEADERS frame; call with the lock held."""
        sid = self.next_id
        self.next_id += 2
        s = H2Stream(sid, path)
        self.streams[sid] = s
        return s, self.request_frame(sid, path, method, [(n.lower(), v) for n, v in headers],
                                     end_stream)

    def request(self, path, headers=(), method="GET"):
        """Submits one request (no body); returns its H2Stream at once."""
        with self.cond:
            s, f = self._open(path, headers, method, True)
        self.send(f)
        return s

    def open_many(self, paths, headers=()):
        """Submits several requests in one write; returns their H2Streams in order."""
        with self.cond:
            opened = [self._open(path, headers, "GET", True) for path in paths]
        self.send(b"".join(f for _, f in opened))
        return [s for s, _ in opened]

    def cancel(self, s):
        """Sends RST_STREAM (CANCEL) for stream s, as a client that stops watching."""
        self.send(frame(RST_STREAM, 0, s.id, struct.pack(">I", CANCEL)))

    def post(self, path, body, end=True, timeout=20, headers=()):
        """Opens a POST and sends body within the server's flow-control windows.

        end=False leaves the request body open (no END_STREAM), so the
        server holds what it has received. Returns the H2Stream.
        """
        expect(self.background, "post() needs the background mode (it follows the windows)")
        with self.cond:
            s, f = self._open(path, headers, "POST", False)
            s.send_window = self.peer_initial_window
            self._out.append(f)
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
                    self._out.append(frame(DATA, END_STREAM if last else 0, sid,
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
        """The reader thread's write."""
        view = memoryview(data)
        deadline = time.monotonic() + 10
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
            except (socket.timeout, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                if time.monotonic() > deadline:
                    raise TestFailure("h2: could not write for 10 s")

    # -- reading

    def _run(self):
        try:
            while True:
                with self.cond:
                    out, self._out = self._out, []
                    stop = self._stop
                if self.closed:
                    return
                if out:
                    self._send_now(b"".join(out))
                if stop:
                    return
                if self.paused.is_set():
                    time.sleep(0.02)
                    continue
                self._read_once(0.002 if self._posting else 0.05)
        except BaseException as e:  # noqa: B902 (recorded for the test thread)
            with self.cond:
                self.error = e
                self.eof_at = self.eof_at or time.monotonic()
                self.cond.notify_all()

    def _read_once(self, timeout):
        """One bounded read; parses what came. False once the connection has ended."""
        if getattr(self.sock, "pending", lambda: 0)() == 0:
            try:
                r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
            except (OSError, ValueError):
                r = None
            if r is None:
                with self.cond:
                    self.eof_at = self.eof_at or time.monotonic()
                    self.cond.notify_all()
                return False
            if not r:
                return True
        try:
            self.sock.settimeout(max(timeout, 0.05))
            b = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return True
        except (OSError, ssl.SSLError):
            b = b""
        if not b:
            with self.cond:
                self.eof_at = self.eof_at or time.monotonic()
                self.cond.notify_all()
            return False
        self.bytes_in += len(b)
        self.rbuf += b
        while len(self.rbuf) >= 9:
            n = int.from_bytes(self.rbuf[:3], "big")
            if len(self.rbuf) < 9 + n:
                break
            ftype, flags = self.rbuf[3], self.rbuf[4]
            sid = int.from_bytes(self.rbuf[5:9], "big") & 0x7FFFFFFF
            payload = self.rbuf[9:9 + n]
            self.rbuf = self.rbuf[9 + n:]
            self._on_frame(ftype, flags, sid, payload)
        return True

    def pump(self, timeout=0.0):
        """Reads what arrives within timeout s (0: only what is there); parses frames.

        Without the reader thread only. Returns True while the connection is open.
        """
        expect(not self.background, "pump() is for background=False")
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            before = self.bytes_in
            if not self._read_once(left):
                break
            if self.bytes_in == before and time.monotonic() >= deadline:
                break
        return not self.closed

    def _on_frame(self, ftype, flags, sid, payload):
        now = time.monotonic()
        reply = None
        with self.cond:
            self.frames.append(Frame(ftype, flags, sid, payload, now))
            s = self.streams.get(sid)
            if ftype == DATA and s is not None:
                if flags & PADDED:
                    pad = payload[0]
                    payload = payload[1:len(payload) - pad]
                if payload:
                    s.body += payload
                    s.chunks.append((now, payload))
                if flags & END_STREAM:
                    s.ended_at = now
            elif ftype == HEADERS and s is not None:
                if s.headers_at is None:
                    s.headers_at = now
                    s.status = first_status(payload)
                if flags & END_STREAM:
                    s.ended_at = now
            elif ftype == RST_STREAM and s is not None:
                s.reset_code = int.from_bytes(payload[:4], "big")
                s.reset_at = now
            elif ftype == SETTINGS and not flags & ACK:
                for i in range(0, len(payload) - 5, 6):
                    ident, val = struct.unpack(">HI", payload[i:i + 6])
                    if ident == SETTINGS_INITIAL_WINDOW_SIZE:  # applies to open streams too
                        for x in self.streams.values():
                            if hasattr(x, "send_window"):
                                x.send_window += val - self.peer_initial_window
                        self.peer_initial_window = val
                reply = frame(SETTINGS, ACK, 0)
            elif ftype == WINDOW_UPDATE:
                inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                if sid == 0:
                    self.send_window += inc
                elif s is not None and hasattr(s, "send_window"):
                    s.send_window += inc
            elif ftype == PING and not flags & ACK:
                reply = frame(PING, ACK, 0, payload)
            elif ftype == GOAWAY:
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                code = int.from_bytes(payload[4:8], "big")
                self.goaways.append((now, last, code))
                if (self.close_on_final_goaway and last != MAX_WINDOW
                        and all(x.closed for x in self.streams.values())):
                    self._stop = True
            self.cond.notify_all()
        if reply and self.background:  # the adversarial mode answers nothing by itself
            self._send_now(reply)

    def wait(self, pred, timeout, what=None):
        """Reads (bounded) until pred(self) is truthy or the connection ends; returns it.

        With what, a falsy end fails the test (naming what); without, the
        falsy value is returned for the test to judge.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self.cond:
                v = pred(self)
                if v or self.closed:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self.background:
                    self.cond.wait(min(left, 0.1))
                    continue
            self.pump(min(left, 0.2))
        if v or what is None:
            return v
        state = "connection closed" if self.closed else "timed out"
        raise TestFailure("h2 conn: %s after %.1f s waiting for %s (error %r; goaways %r; "
                          "streams %r)" % (state, timeout, what, self.error, self.goaways,
                                           list(self.streams.values())[:3]))

    def wait_body(self, s, needle, timeout, start=0):
        """Waits until needle occurs in stream s's body at or after start; returns end offset."""
        def f(_):
            i = s.body.find(needle, start)
            return i + len(needle) if i >= 0 else None
        return self.wait(f, timeout, "%r on stream %d (%s)" % (needle, s.id, s.path))

    def wait_closed(self, timeout):
        """Reads until the peer closes; True if it did within timeout s."""
        return bool(self.wait(lambda c: c.closed, timeout))

    # -- what arrived

    def of_type(self, ftype):
        return [f for f in self.frames if f.type == ftype]

    def goaway(self):
        """(last stream id, error code) of the first GOAWAY, or None."""
        return self.goaways[0][1:] if self.goaways else None

    def resets(self):
        """{stream id: error code} of every RST_STREAM received."""
        return {f.sid: struct.unpack(">I", f.payload[:4])[0] for f in self.of_type(RST_STREAM)}

    def status(self, sid):
        for f in self.frames:
            if f.type == HEADERS and f.sid == sid:
                return first_status(f.payload)
        return None

    def headers_on(self, sid):
        return any(f.type == HEADERS and f.sid == sid for f in self.frames)

    def close(self):
        if self.background:
            with self.cond:
                if not self._stop and self.eof_at is None:
                    # A client's GOAWAY names the last stream the SERVER opened (none:
                    # 0); one of the client's own ids is a PROTOCOL_ERROR to nghttp2.
                    self._out.append(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
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


def raw_conn(gw, timeout=5, **kw):
    """An H2Conn in the adversarial mode (background=False): no thread, no answers."""
    return H2Conn(gw, timeout=timeout, background=False, **kw)
